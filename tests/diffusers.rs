//! Fidelity to diffusers: `tests/fixtures/diffusers.json` holds 99 runs of diffusers 0.42.1's
//! schedulers (DDIM, DDPM, DPM-Solver multistep and singlestep, DEIS, UniPC, Heun, Euler, Euler
//! ancestral, LMS; many configs and step counts), in float64 with its float32 casts patched, on
//! the exact mixture oracle, with the normals they drew (`tests/fixtures/diffusers_record.py`).
//! pfode's replay must reproduce every final sample to 1e-10 max-abs, with the same model calls
//! (timestep, alpha, sigma) and NFE; where diffusers' sample became NaN, pfode must refuse with
//! an error.

use pfode::diffusers::{Class, Config, Scheduler};
use pfode::ndarray::Array2;
use pfode::solver::sde::Given;
use pfode::{problems, Counted};
use serde_json::Value;

fn matrix(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j])
}

fn fixtures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/diffusers.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn pfode_replays_diffusers_schedulers() {
    let fx = fixtures();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 99);
    let (mut worst, mut worst_level) = (0.0f64, 0.0f64);
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let text = serde_json::to_string(&c["config"]).unwrap();
        let config = Config::parse(&text, name, None).unwrap();
        seen.insert(config.class.name());
        let eta = c["eta"].as_f64().unwrap_or(0.0);
        let steps = c["steps"].as_u64().unwrap() as usize;
        let scheduler = Scheduler::new(config, steps, eta).unwrap();
        let mixture = problems::load(c["problem"].as_str().unwrap()).unwrap();
        let oracle = Counted::new(&mixture);
        let draws: Vec<Array2<f64>> = c["noise"]
            .as_array()
            .map(|d| d.iter().map(matrix).collect())
            .unwrap_or_default();
        let n_draws = draws.len();
        let mut noise = Given::new(draws);
        let latents = matrix(&fx["inits"][c["init"].as_str().unwrap()]);
        let result = scheduler.replay(&oracle, latents.view(), &mut noise);
        let calls: Vec<Vec<f64>> = serde_json::from_value(c["calls"].clone()).unwrap();
        if !c["finite"].as_bool().unwrap() {
            if result.is_ok() {
                failures.push(format!(
                    "{name}: diffusers' sample is not finite, pfode's is"
                ));
            }
            continue;
        }
        let replay = match result {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let d = replay
            .x
            .iter()
            .zip(matrix(&c["out"]).iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let mut dl = 0.0f64;
        for (call, want) in replay.calls.iter().zip(&calls) {
            dl = dl
                .max((call.timestep - want[0]).abs())
                .max((call.level.alpha - want[1]).abs())
                .max((call.level.sigma - want[2]).abs());
        }
        worst = worst.max(d);
        worst_level = worst_level.max(dl);
        let nfe = c["nfe"].as_u64().unwrap() as usize;
        if d > 1e-10
            || dl > 1e-12
            || oracle.nfe() != nfe
            || replay.calls.len() != calls.len()
            || noise.left() != 0
        {
            failures.push(format!(
                "{name}: max-abs {d:e}, call levels {dl:e}, nfe {}/{nfe}, noise draws left {} of {n_draws}",
                oracle.nfe(),
                noise.left()
            ));
        }
    }
    println!(
        "{} diffusers runs: worst max-abs {worst:.1e}, worst call-level difference {worst_level:.1e}",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(seen.len(), Class::ALL.len(), "every class has fixtures");
}

/// pfode's tables of options and defaults are diffusers' `__init__` signatures.
#[test]
fn option_tables_are_diffusers_signatures() {
    let fx = fixtures();
    for class in Class::ALL {
        let want = fx["defaults"][class.name()].as_object().unwrap();
        let ours = class.options();
        let keys: Vec<&str> = ours.iter().map(|(k, _)| *k).collect();
        let theirs: Vec<&str> = want.keys().map(|k| k.as_str()).collect();
        let mut a = keys.clone();
        let mut b = theirs.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{}", class.name());
        let config = Config::parse(
            &format!("{{\"_class_name\": \"{}\"}}", class.name()),
            "t",
            None,
        )
        .unwrap();
        for (k, v) in &config.options {
            let w = &want[*k];
            let same = match (v, w) {
                (Value::Null, Value::String(s)) => s == "-inf",
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => v == w,
            };
            assert!(same, "{} {k}: pfode {v}, diffusers {w}", class.name());
        }
    }
}

/// Every equivalent `--explain` prints is exact: pfode's own solver on the printed schedule and
/// grid, from the latents times the printed scale, gives the replay's sample (same NFE; the same
/// Brownian noise for the stochastic classes).
#[test]
fn explained_equivalents_reproduce_the_replay() {
    use pfode::grid::Grid;
    use pfode::schedule;
    use pfode::solver::sde::Brownian;
    use pfode::solver::{self, Env, Model};
    let fx = fixtures();
    let mut per_class: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for c in fx["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let text = serde_json::to_string(&c["config"]).unwrap();
        let config = Config::parse(&text, name, None).unwrap();
        let class = config.class.name();
        let eta = c["eta"].as_f64().unwrap_or(0.0);
        let s = Scheduler::new(config, c["steps"].as_u64().unwrap() as usize, eta).unwrap();
        let explanation = s.explain();
        let entry = per_class.entry(class).or_default();
        entry.1 += 1;
        let Some(eq) = explanation.equivalent else {
            assert!(
                !explanation.blockers.is_empty(),
                "{name}: no equivalent and no reason"
            );
            continue;
        };
        entry.0 += 1;
        let mixture = problems::load(c["problem"].as_str().unwrap()).unwrap();
        let latents = matrix(&fx["inits"][c["init"].as_str().unwrap()]);
        let replay = s
            .replay(&mixture, latents.view(), &mut Brownian::new(5))
            .unwrap();
        let sched = schedule::parse(&eq.schedule).unwrap();
        let grid = Grid::parse(&eq.grid, sched.as_ref()).unwrap();
        let env = Env {
            schedule: sched.as_ref(),
            mixture: Some(&mixture),
            noise_seed: 5,
        };
        let mut built = solver::build(&eq.solver, &env).unwrap();
        let oracle = Counted::new(&mixture);
        let x = solver::integrate(
            built.solver.as_mut(),
            &Model::new(&oracle, sched.as_ref()),
            &grid,
            latents.mapv(|v| v * eq.init_scale).view(),
        )
        .unwrap();
        let scale = replay.x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let d = replay
            .x
            .iter()
            .zip(x.iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - eq.output_scale * b).abs()))
            / scale;
        worst = worst.max(d);
        let tol = if eq.note.as_deref().is_some_and(|n| n.contains("1e-10")) {
            2e-9
        } else {
            1e-10
        };
        if d > tol || oracle.nfe() != replay.calls.len() {
            failures.push(format!(
                "{name}: {} on {}: relative max-abs {d:e}, nfe {} vs {}",
                eq.solver,
                eq.grid,
                oracle.nfe(),
                replay.calls.len()
            ));
        }
    }
    println!("explained equivalents (class: exact / cases): {per_class:?}; worst relative difference {worst:.1e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for class in Class::ALL {
        let (exact, _) = per_class[class.name()];
        let expected = class != Class::DpmSinglestep;
        assert_eq!(exact > 0, expected, "{}: {exact} equivalents", class.name());
    }
}

fn sample_bin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sample"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-diffusers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Bad or unsupported configs: one line on stderr naming the file, field and reason, exit 2, no
/// output file.
#[test]
fn bad_configs_are_one_line_errors() {
    let dir = scratch("bad");
    let out = dir.join("x.npy");
    let cases: &[(&str, &str, &str)] = &[
        ("{\"_class_name\": ", "5", "not valid JSON"),
        ("[1, 2]", "5", "expected a JSON object"),
        ("{}", "5", "field `_class_name`: missing"),
        ("{\"_class_name\": \"PNDMScheduler\"}", "5", "'PNDMScheduler' is not replayed by pfode"),
        ("{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\": \"cosine\"}", "5", "field `beta_schedule`: 'cosine' is not a value DDIMScheduler accepts"),
        ("{\"_class_name\": \"DDPMScheduler\", \"beta_schedule\": \"sigmoid\"}", "5", "field `beta_schedule`: 'sigmoid' is not implemented by pfode"),
        ("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_flow_sigmas\": true}", "5", "field `use_flow_sigmas`: true is not implemented by pfode"),
        ("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 4}", "5", "field `solver_order`: 4 is not in 1..=3"),
        ("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"dpmsolver\"}", "5", "field `final_sigmas_type`: 'zero' is not supported for algorithm_type 'dpmsolver'"),
        ("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"sde-dpmsolver\", \"final_sigmas_type\": \"sigma_min\", \"solver_order\": 3}", "5", "no third-order update"),
        ("{\"_class_name\": \"EulerDiscreteScheduler\", \"use_karras_sigmas\": true, \"use_beta_sigmas\": true}", "5", "only one of use_karras_sigmas"),
        ("{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_end\": \"0.012\"}", "5", "field `beta_end`: expected a finite number"),
        ("{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_start\": 0.02, \"beta_end\": 0.01}", "5", "need 0 < beta_start < beta_end < 1"),
        ("{\"_class_name\": \"EulerAncestralDiscreteScheduler\", \"prediction_type\": \"sample\"}", "5", "NotImplementedError"),
        ("{\"_class_name\": \"UniPCMultistepScheduler\", \"solver_p\": {}}", "5", "field `solver_p`"),
        ("{\"_class_name\": \"UniPCMultistepScheduler\", \"disable_corrector\": [\"a\"]}", "5", "field `disable_corrector`"),
        ("{\"_class_name\": \"DDPMScheduler\", \"variance_type\": \"learned\"}", "5", "'learned' is not implemented by pfode"),
        ("{\"_class_name\": \"DDIMScheduler\", \"trained_betas\": [0.1, 2.0]}", "5", "beta 1 = 2 is not in (0, 1)"),
        ("{\"_class_name\": \"DDIMScheduler\"}", "1001", "must be in 1..=1000"),
        ("{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"trailing\"}", "61", "gives 62 timesteps"),
        ("{\"_class_name\": \"DDIMScheduler\", \"steps_offset\": 5}", "1000", "timestep 1004 is outside 0..=999"),
        ("{\"_class_name\": \"UniPCMultistepScheduler\", \"solver_type\": \"bh1\"}", "8", "NaN in diffusers"),
        ("{\"_class_name\": \"DDIMScheduler\", \"rescale_betas_zero_snr\": true, \"timestep_spacing\": \"trailing\", \"clip_sample\": false}", "8", "cannot convert a eps prediction to x0"),
    ];
    for (i, (text, steps, needle)) in cases.iter().enumerate() {
        let file = dir.join(format!("c{i}.json"));
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap();
        let (code, _, err) = sample_bin(&[
            "--scheduler-config",
            f,
            "--steps",
            steps,
            "--problem",
            "ring2d",
            "--init",
            "standard",
            "--n",
            "4",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{text}: {err}");
        assert!(err.contains(needle), "{text}: expected '{needle}' in {err}");
        if !needle.contains("NaN") && !needle.contains("cannot convert") {
            assert!(
                err.contains(f) || err.contains("--steps"),
                "{text}: the file is not named: {err}"
            );
        }
        assert!(!out.exists(), "{text}: an output was written");
    }
    let good = dir.join("good.json");
    std::fs::write(&good, "{\"_class_name\": \"DDIMScheduler\"}").unwrap();
    let g = good.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--scheduler-config", g, "--problem", "ring2d"],
            "--steps",
        ),
        (
            vec![
                "--scheduler-config",
                g,
                "--steps",
                "5",
                "--solver",
                "ddim",
                "--problem",
                "ring2d",
            ],
            "--solver",
        ),
        (
            vec![
                "--scheduler-config",
                g,
                "--steps",
                "5",
                "--grid",
                "logsnr",
                "--problem",
                "ring2d",
            ],
            "--grid",
        ),
        (
            vec![
                "--scheduler-config",
                g,
                "--steps",
                "5",
                "--eta",
                "2",
                "--problem",
                "ring2d",
                "--init",
                "standard",
                "--out",
                out.to_str().unwrap(),
            ],
            "--eta",
        ),
        (
            vec![
                "--steps",
                "5",
                "--problem",
                "ring2d",
                "--grid",
                "logsnr",
                "--solver",
                "ddim",
                "--init",
                "standard",
                "--out",
                out.to_str().unwrap(),
            ],
            "applies to --scheduler-config",
        ),
    ] {
        let (code, _, err) = sample_bin(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in {err}"
        );
        assert!(!out.exists());
    }
}

/// `sample --scheduler-config` writes the sample and a record with the model calls; `--explain`
/// prints the mapping; Python's `-Infinity` (diffusers' lambda_min_clipped) is read; keys of other
/// classes are ignored, and `sigma_min` counts where diffusers reads it through hasattr.
#[test]
fn sample_replays_a_config_file() {
    let dir = scratch("cli");
    let file = dir.join("scheduler_config.json");
    std::fs::write(
        &file,
        "{\"_class_name\": \"PNDMScheduler\", \"beta_schedule\": \"scaled_linear\", \"beta_start\": 0.00085, \"beta_end\": 0.012, \"lambda_min_clipped\": -Infinity, \"skip_prk_steps\": true, \"set_alpha_to_one\": false, \"steps_offset\": 1}",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (out, rec) = (dir.join("x.npy"), dir.join("r.json"));
    let (code, stdout, err) = sample_bin(&[
        "--scheduler-config",
        f,
        "--scheduler-class",
        "DPMSolverMultistepScheduler",
        "--steps",
        "10",
        "--explain",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("--solver dpm-solver++:order=2,type=dpmsolver,lower_order_final=true,lower_order_final_below=15"), "{stdout}");
    assert!(stdout.contains("ignored (not options of DPMSolverMultistepScheduler; diffusers ignores them too): set_alpha_to_one, skip_prk_steps"), "{stdout}");
    assert!(stdout.contains("lambda_min_clipped = -inf"), "{stdout}");
    let (code, _, err) = sample_bin(&[
        "--scheduler-config",
        f,
        "--scheduler-class",
        "DPMSolverMultistepScheduler",
        "--steps",
        "10",
        "--problem",
        "gauss4",
        "--init",
        "standard",
        "--n",
        "64",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let x = pfode::io::read_npy(&out).unwrap();
    assert_eq!(x.dim(), (64, 4));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    assert_eq!(r["nfe"], 10);
    assert_eq!(r["model_calls"].as_array().unwrap().len(), 10);
    assert_eq!(r["model_calls"][0]["timestep"], 999.0);
    assert_eq!(r["timesteps"][9], 100.0); // round(99.9)
    assert_eq!(r["class"], "DPMSolverMultistepScheduler");
    assert!(r["equivalent"]["solver"]
        .as_str()
        .unwrap()
        .starts_with("dpm-solver++"));
    // The same run through the library, from the same seeded latents.
    let config =
        pfode::diffusers::config::read(&file, Some("DPMSolverMultistepScheduler")).unwrap();
    let s = Scheduler::new(config, 10, 0.0).unwrap();
    let latents = pfode::rng::standard_normal(64, 4, 3, 0);
    let mixture = problems::load("gauss4").unwrap();
    let replay = s
        .replay(
            &mixture,
            latents.view(),
            &mut pfode::solver::sde::Brownian::new(0),
        )
        .unwrap();
    assert_eq!(replay.x, x);
    // sigma_min in the file counts for Euler's Karras sigmas (and for DPM-Solver's, through
    // hasattr, although it is not one of its options).
    let karras = |class: &str| {
        let text = "{\"use_karras_sigmas\": true, \"sigma_min\": 0.1, \"beta_schedule\": \"scaled_linear\", \"beta_start\": 0.00085, \"beta_end\": 0.012}";
        let c = Config::parse(text, "k", Some(class)).unwrap();
        let s = Scheduler::new(c, 6, 0.0).unwrap();
        s.plan.sigmas[5]
    };
    assert!((karras("EulerDiscreteScheduler") - 0.1).abs() < 1e-12);
    assert!((karras("DPMSolverMultistepScheduler") - 0.1).abs() < 1e-12);
}
