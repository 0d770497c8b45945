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
