//! The `sample` binary: grammar in --help, the record, and one-line errors with no output file.

use pfode::io;
use pfode::ndarray::Array2;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-sample-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sample"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_init(dir: &Path, rows: usize, cols: usize) -> String {
    let x = Array2::from_shape_fn((rows, cols), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0
    });
    let path = dir.join(format!("init{cols}.npy"));
    io::write_npy(&path, &x).unwrap();
    path.display().to_string()
}

#[test]
fn help_documents_the_grammar_and_the_solvers() {
    let (code, stdout, _) = sample(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--problem",
        "--schedule",
        "vp-discrete",
        "karras:steps=N",
        "file:TIMES.json",
        "--record",
        "model_calls",
        "dpm-solver++",
        "unipc",
        "reference",
    ] {
        assert!(stdout.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn record_lists_every_option_and_every_call() {
    let dir = scratch_dir("record");
    let init = write_init(&dir, 6, 2);
    let out = dir.join("x.npy");
    let rec = dir.join("run.json");
    let (code, _, err) = sample(&[
        "--problem",
        "ring2d",
        "--schedule",
        "vp-linear",
        "--grid",
        "logsnr:steps=8",
        "--solver",
        "dpm-solver++:order=3",
        "--init",
        &init,
        "--out",
        out.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let x = io::read_npy(&out).unwrap();
    assert_eq!(x.dim(), (6, 2));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    assert_eq!(r["solver"], "dpm-solver++:order=3,method=multistep,type=dpmsolver,lower_order_final=true,warmup=lower,corrector=none,third_order=official");
    assert_eq!(r["grid"], "logsnr:steps=8,t_start=1,t_end=0.001");
    assert_eq!(r["schedule"], "vp-linear:beta0=0.1,beta1=20");
    assert_eq!(r["nfe"], 8);
    let calls = r["model_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 8);
    let times = r["times"].as_array().unwrap();
    assert_eq!(times.len(), 9);
    // Multistep evaluates at every grid time but the last, in order.
    for (c, t) in calls.iter().zip(times) {
        assert_eq!(c["t"], *t);
    }
    assert_eq!(r["options"]["lower_order_final"], "true");
}

#[test]
fn bad_input_is_one_line_exit_2_and_no_output() {
    let dir = scratch_dir("errors");
    let init2 = write_init(&dir, 4, 2);
    let init4 = write_init(&dir, 4, 4);
    let bad = dir.join("bad.npy");
    std::fs::write(&bad, b"not an npy file").unwrap();
    let times = dir.join("times.json");
    std::fs::write(&times, "[1.0, 0.5, 0.7]").unwrap();
    let out = dir.join("x.npy");
    let o = out.to_str().unwrap();
    let base = |problem: &'static str, grid: String, solver: &'static str, init: String| {
        vec![
            "--problem".to_string(),
            problem.into(),
            "--schedule".into(),
            "vp-linear".into(),
            "--grid".into(),
            grid,
            "--solver".into(),
            solver.into(),
            "--init".into(),
            init,
            "--out".into(),
            o.into(),
        ]
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            base(
                "ring2d",
                "logsnr:steps=8".into(),
                "dpm-solver++:order=4",
                init2.clone(),
            ),
            "'order': 4 is not in 1..=3",
        ),
        (
            base(
                "ring2d",
                "logsnr:steps=8".into(),
                "dpm-solver++:ordr=2",
                init2.clone(),
            ),
            "unknown option 'ordr'",
        ),
        (
            base(
                "ring2d",
                "logsnr:steps=8".into(),
                "dpm-solver++:method=fast",
                init2.clone(),
            ),
            "'fast' is not one of",
        ),
        (
            base("ring2d", "logsnr:steps=8".into(), "heunn", init2.clone()),
            "unknown solver 'heunn'",
        ),
        (
            base(
                "ring2d",
                "logsnr:steps=8,t_start=0.5,t_end=0.6".into(),
                "ddim",
                init2.clone(),
            ),
            "must be smaller than t_start",
        ),
        (
            base("ring2d", "logsnr:steps=0".into(), "ddim", init2.clone()),
            "at least 1 step",
        ),
        (
            base("ring2d", "grid9:steps=3".into(), "ddim", init2.clone()),
            "unknown grid 'grid9'",
        ),
        (
            base(
                "ring2d",
                format!("file:{}", times.display()),
                "ddim",
                init2.clone(),
            ),
            "strictly decrease",
        ),
        (
            base("ring2d", "logsnr:steps=8".into(), "ddim", init4.clone()),
            "dimension mismatch",
        ),
        (
            base(
                "ring2d",
                "logsnr:steps=8".into(),
                "ddim",
                bad.display().to_string(),
            ),
            "bad.npy",
        ),
        (
            base("ring2d", "logsnr:steps=8".into(), "exact", init2.clone()),
            "single Gaussian",
        ),
        (
            base("nope", "logsnr:steps=8".into(), "ddim", init2.clone()),
            "nope",
        ),
        (
            base(
                "ring2d",
                "karras:steps=8,sigma_max=1000".into(),
                "ddim",
                init2.clone(),
            ),
            "outside",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _, err) = sample(&refs);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists(), "{args:?} wrote an output file");
    }
    // The exact flow on the Gaussian problem needs no evaluations.
    let (code, _, err) = sample(&[
        "--problem",
        "gauss4",
        "--schedule",
        "edm",
        "--grid",
        "karras:steps=5",
        "--solver",
        "exact",
        "--init",
        &init4,
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{err}");
}

/// `--net`: the committed ring2d network under the schedule in its metadata gives exactly what
/// the library gives with the same network; a schedule other than the network's, or a device
/// the binary was not built for, is one error line.
#[test]
fn a_network_samples_like_the_library() {
    use pfode::grid::Grid;
    use pfode::nn::weights;
    use pfode::solver::{self, Env, Model};
    let dir = scratch_dir("net");
    let init = write_init(&dir, 6, 2);
    let out = dir.join("x.npy");
    let net = "results/models/ring2d.safetensors";
    let args = |extra: &[&str]| {
        let base = [
            "--net",
            net,
            "--grid",
            "logsnr:steps=6",
            "--solver",
            "dpm-solver++:order=3",
            "--init",
            &init,
            "--out",
            out.to_str().unwrap(),
        ];
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| sample(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, _, err) = run(args(&[]));
    assert_eq!(code, 0, "{err}");
    let got = io::read_npy(&out).unwrap();

    let loaded = weights::load(net).unwrap();
    let schedule = pfode::schedule::parse(loaded.schedule().unwrap()).unwrap();
    let env = Env {
        schedule: schedule.as_ref(),
        mixture: None,
        noise_seed: 0,
    };
    let mut built = solver::build("dpm-solver++:order=3", &env).unwrap();
    let grid = Grid::parse("logsnr:steps=6", schedule.as_ref()).unwrap();
    let x0 = io::read_npy(&init).unwrap();
    let model = Model::new(&loaded.net, schedule.as_ref());
    let want = solver::integrate(built.solver.as_mut(), &model, &grid, x0.view()).unwrap();
    assert_eq!(got, want);
    std::fs::remove_file(&out).unwrap();
    let record = dir.join("run.json");
    let (code, _, err) = run(args(&["--record", record.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(r["net"], net);
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["schedule"], "vp-linear:beta0=0.1,beta1=20");
    assert_eq!(r["nfe"], 6);
    std::fs::remove_file(&out).unwrap();

    let mut cases = vec![(
        args(&["--schedule", "vp-cosine"]),
        "was trained under 'vp-linear:beta0=0.1,beta1=20'",
    )];
    if !cfg!(feature = "cuda") {
        cases.push((
            args(&["--device", "cuda-f64"]),
            "without the `cuda` feature",
        ));
    }
    for (a, needle) in cases {
        let (code, _, err) = run(a);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists());
    }
}
