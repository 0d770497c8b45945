//! The experiment binaries: the same numbers at any thread count, with shards merged and after a
//! resume; fitted orders; plots and tables; one-line errors with exit status 2 and no output.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-study-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bin(name: &str) -> &'static str {
    match name {
        "convergence" => env!("CARGO_BIN_EXE_convergence"),
        "ot_gap" => env!("CARGO_BIN_EXE_ot_gap"),
        "merge" => env!("CARGO_BIN_EXE_merge"),
        "plot" => env!("CARGO_BIN_EXE_plot"),
        "table" => env!("CARGO_BIN_EXE_table"),
        "study" => env!("CARGO_BIN_EXE_study"),
        _ => unreachable!(),
    }
}

fn run(name: &str, args: &[&str], threads: usize) -> (i32, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const MINI: [&str; 14] = [
    "--problems",
    "gauss4,ring2d",
    "--schedules",
    "vp-linear,edm",
    "--grids",
    "logsnr",
    "--solver",
    "ddim",
    "--solver",
    "dpm-solver++:order=2",
    "--nfe",
    "5,10,20,40,80,160",
    "--samples",
    "24",
];

fn convergence(out: &Path, extra: &[&str], threads: usize) -> Value {
    let mut args: Vec<&str> = MINI.to_vec();
    let o = out.display().to_string();
    args.extend(["--out", &o]);
    args.extend(extra);
    let (code, _, err) = run("convergence", &args, threads);
    assert_eq!(code, 0, "{err}");
    load(out)
}

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn without_provenance(mut v: Value) -> Value {
    let m = v.as_object_mut().unwrap();
    m.remove("provenance");
    m.remove("merged_from");
    m.remove("shard");
    v
}

#[test]
fn same_numbers_at_any_thread_count_with_shards_and_resume() {
    let dir = scratch_dir("determinism");
    let one = convergence(&dir.join("one.json"), &[], 1);
    let three = convergence(&dir.join("three.json"), &[], 3);
    assert_eq!(
        without_provenance(one.clone()),
        without_provenance(three.clone())
    );
    let prov = &three["provenance"];
    assert_eq!(prov["threads"], 3);
    assert_eq!(prov["seed"], 1);
    for key in ["pfode_version", "git_revision", "command", "rustc", "date"] {
        assert!(prov[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert_eq!(one["points"].as_array().unwrap().len(), 2 * 2 * 2 * 6);

    // Shards 1/3..3/3 merged give the single run's document.
    let mut parts = Vec::new();
    for i in 1..=3 {
        let p = dir.join(format!("s{i}.json"));
        let shard = format!("{i}/3");
        let doc = convergence(&p, &["--shard", &shard], 2);
        assert_eq!(doc["shard"], Value::String(shard));
        assert!(doc["points"].as_array().unwrap().len() < 48);
        parts.push(p.display().to_string());
    }
    let merged = dir.join("merged.json");
    let m = merged.display().to_string();
    let mut args = vec!["--out", &m];
    args.extend(parts.iter().map(|s| s.as_str()));
    let (code, _, err) = run("merge", &args, 2);
    assert_eq!(code, 0, "{err}");
    let merged_doc = load(&merged);
    assert_eq!(merged_doc["merged_from"].as_array().unwrap().len(), 3);
    assert_eq!(
        without_provenance(merged_doc),
        without_provenance(one.clone())
    );

    // Resume: drop the last unit's points; the rerun recomputes exactly those.
    let partial = dir.join("partial.json");
    let mut doc = one.clone();
    let points = doc["points"].as_array_mut().unwrap();
    let last = points.last().unwrap()["unit"].clone();
    points.retain(|p| p["unit"] != last);
    std::fs::write(&partial, serde_json::to_string(&doc).unwrap()).unwrap();
    let resumed = convergence(&partial, &["--resume"], 2);
    let mut args: Vec<&str> = MINI.to_vec();
    let pp = partial.display().to_string();
    args.extend(["--out", &pp, "--resume"]);
    let (code, _, err) = run("convergence", &args, 2);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.trim(),
        format!("resuming 8 of 8 units from {pp}"),
        "the resumed file is complete"
    );
    assert_eq!(
        load(&partial)["merged_from"].as_array().unwrap().len(),
        2,
        "a resumed document lists the runs it was made from"
    );
    assert_eq!(without_provenance(resumed), without_provenance(one.clone()));

    // Resuming from a file written with another config is an error, and the file stays.
    let before = std::fs::read_to_string(&partial).unwrap();
    let mut args: Vec<&str> = MINI.to_vec();
    let p = partial.display().to_string();
    args.extend(["--out", &p, "--seed", "2", "--resume"]);
    let (code, _, err) = run("convergence", &args, 2);
    assert_eq!(code, 2);
    assert!(err.contains("different configuration"), "{err}");
    assert_eq!(std::fs::read_to_string(&partial).unwrap(), before);

    // --timing records each point's wall time (work-precision data); off by default.
    assert!(one["points"][0].get("wall_s").is_none());
    let timed = convergence(&dir.join("timed.json"), &["--nfe", "5", "--timing"], 2);
    assert!(timed["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["wall_s"].as_f64().is_some()));

    // Fitted orders: DDIM first order; DPM-Solver++(2M) second order on the Gaussian.
    let fits = one["summary"]["fits"].as_array().unwrap();
    let order = |problem: &str, sched: &str, solver: &str| {
        let f = fits
            .iter()
            .find(|f| f["problem"] == problem && f["schedule"] == sched && f["solver"] == solver)
            .unwrap();
        f["order_nfe"]["order"].as_f64().unwrap()
    };
    for sched in ["vp-linear", "edm"] {
        let o = order("gauss4", sched, "ddim");
        assert!((o - 1.0).abs() < 0.1, "{sched} ddim {o}");
        let o = order("gauss4", sched, "dpm-solver++:order=2");
        assert!((o - 2.0).abs() < 0.15, "{sched} 2M {o}");
    }
    // The exact law on gauss4 converges: W2 and KL fall with NFE.
    let w2: Vec<f64> = one["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["problem"] == "gauss4" && p["schedule"] == "vp-linear" && p["solver"] == "ddim"
        })
        .map(|p| p["w2"].as_f64().unwrap())
        .collect();
    assert!(w2.windows(2).all(|w| w[1] < w[0]), "{w2:?}");
}

#[test]
fn plots_and_tables_from_both_studies() {
    let dir = scratch_dir("plots");
    let conv = dir.join("conv.json");
    convergence(&conv, &[], 2);
    let ot = dir.join("ot.json");
    let o = ot.display().to_string();
    let (code, _, err) = run(
        "ot_gap",
        &[
            "--problems",
            "ring2d",
            "--schedules",
            "flow",
            "--samples",
            "40",
            "--segments",
            "2",
            "--paths",
            "5",
            "--jacobians",
            "8",
            "--map-only",
            "",
            "--out",
            &o,
        ],
        2,
    );
    assert_eq!(code, 0, "{err}");
    let doc = load(&ot);
    let p = &doc["points"][0];
    assert!(p["gap"].as_f64().unwrap() >= -1e-12 * p["flow_cost"].as_f64().unwrap());
    assert_eq!(p["trajectories"]["paths"].as_array().unwrap().len(), 5);
    assert_eq!(doc["points"].as_array().unwrap().len(), 1);
    assert_eq!(p["certificate"]["jacobians"], 8);
    let plots = dir.join("plots");
    let tables = dir.join("tables");
    let (pd, td) = (plots.display().to_string(), tables.display().to_string());
    for results in [&conv, &ot] {
        let r = results.display().to_string();
        let (code, out, err) = run("plot", &[&r, "--out-dir", &pd], 2);
        assert_eq!(code, 0, "{err}");
        for f in out.lines() {
            let bytes = std::fs::read(f).unwrap();
            if f.ends_with(".png") {
                assert_eq!(&bytes[..4], b"\x89PNG");
            } else {
                assert!(String::from_utf8(bytes).unwrap().starts_with("<svg"));
            }
        }
        let (code, _, err) = run("table", &[&r, "--out-dir", &td], 2);
        assert_eq!(code, 0, "{err}");
    }
    let c = conv.display().to_string();
    let (code, _, err) = run("plot", &[&c, "--metric", "w2", "--out-dir", &pd], 2);
    assert_eq!(code, 0, "{err}");
    assert!(plots.join("convergence_w2_gauss4_logsnr.svg").exists());
    assert!(
        !plots.join("convergence_w2_ring2d_logsnr.svg").exists(),
        "no exact law on a mixture"
    );
    for f in [
        "convergence_gauss4_logsnr.png",
        "convergence_ring2d_logsnr.svg",
        "orders.png",
        "ot_gap.svg",
        "trajectories_ring2d.png",
    ] {
        assert!(plots.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(tables.join("convergence.md")).unwrap();
    assert!(md.starts_with("<!-- made by `"));
    assert!(
        md.contains("| solver | NFE 5 | NFE 10 | NFE 20 | NFE 50 | order (95% CI) | order, median error | declared |")
    );
    assert!(md.contains("**"));
    let tex = std::fs::read_to_string(tables.join("ot_gap.tex")).unwrap();
    assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
}

#[test]
fn bad_input_is_one_line_exit_2_and_no_output() {
    let dir = scratch_dir("errors");
    let out = dir.join("out.json");
    let o = out.display().to_string();
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "{\"kind\": \"convergence\", \"points\": [").unwrap();
    let wrong_kind = dir.join("kind.json");
    std::fs::write(&wrong_kind, "{\"kind\": \"problem\"}").unwrap();
    let (bj, wk) = (
        bad_json.display().to_string(),
        wrong_kind.display().to_string(),
    );
    let missing = dir.join("missing.json").display().to_string();
    let conv_path = dir.join("conv.json");
    convergence(&conv_path, &["--nfe", "5,10"], 2);
    let conv = conv_path.display().to_string();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "convergence",
            vec!["--problems", "nope", "--out", &o],
            "nope",
        ),
        (
            "convergence",
            vec!["--solver", "rk5", "--out", &o],
            "unknown solver",
        ),
        (
            "convergence",
            vec![
                "--solver",
                "dpm-adaptive",
                "--problems",
                "gauss4",
                "--schedules",
                "edm",
                "--grids",
                "logsnr",
                "--out",
                &o,
            ],
            "adaptive",
        ),
        (
            "convergence",
            vec!["--schedules", "vp-quadratic", "--out", &o],
            "vp-quadratic",
        ),
        (
            "convergence",
            vec!["--grids", "uniform", "--out", &o],
            "not a grid that a sweep can refine",
        ),
        (
            "convergence",
            vec!["--shard", "3/2", "--out", &o],
            "shard '3/2'",
        ),
        ("ot_gap", vec!["--shard", "0/2", "--out", &o], "shard '0/2'"),
        (
            "ot_gap",
            vec!["--problems", "ring3d", "--out", &o],
            "ring3d",
        ),
        (
            "ot_gap",
            vec![
                "--samples",
                "2001",
                "--problems",
                "ring2d",
                "--schedules",
                "flow",
                "--segments",
                "1",
                "--out",
                &o,
            ],
            "2000",
        ),
        ("plot", vec![&missing, "--out-dir", &o], "missing.json"),
        ("plot", vec![&bj, "--out-dir", &o], "not valid JSON"),
        (
            "plot",
            vec![&conv, "--metric", "fid", "--out-dir", &o],
            "unknown metric 'fid'",
        ),
        ("table", vec![&wk, "--out-dir", &o], "kind 'problem'"),
        ("merge", vec!["--out", &o, &bj], "not valid JSON"),
    ];
    for (name, args, needle) in cases {
        let (code, _, err) = run(name, &args, 2);
        assert_eq!(code, 2, "{name} {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name} {args:?}: {err}");
        assert!(err.contains(needle), "{name} {args:?}: {err}");
        assert!(!out.exists(), "{name} {args:?} left an output");
    }
}

fn conventions_bin(args: &[&str], threads: usize) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conventions"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The convention study: the same document at 1 and 2 threads and from two merged shards; its
/// plots and tables; the flips of the summary; bad options are one line, exit 2, no output.
#[test]
fn conventions_study_is_deterministic_and_merges() {
    let dir = scratch_dir("conventions");
    let mini = [
        "--problems",
        "gauss4,ring2d",
        "--betas",
        "scaled_linear",
        "--nfe",
        "5,10",
        "--samples",
        "16",
    ];
    let mut docs = Vec::new();
    for (threads, name) in [(1, "a"), (2, "b")] {
        let out = dir.join(name).join("conventions.json");
        let o = out.display().to_string();
        let mut args = mini.to_vec();
        args.extend(["--out", &o]);
        let (code, stdout, err) = conventions_bin(&args, threads);
        assert_eq!(code, 0, "{err}");
        assert!(stdout.contains("figure and table files"), "{stdout}");
        assert!(dir.join(name).join("tables/conventions.md").exists());
        assert!(dir.join(name).join("plots/conventions_sigmas.png").exists());
        assert!(dir.join(name).join("plots/conventions_ratios.svg").exists());
        docs.push(without_provenance(load(&out)));
    }
    assert_eq!(docs[0], docs[1], "1 and 2 threads");
    let mut parts = Vec::new();
    for i in 1..=2 {
        let out = dir.join(format!("shard{i}.json"));
        let (o, s) = (out.display().to_string(), format!("{i}/2"));
        let mut args = mini.to_vec();
        args.extend(["--out", &o, "--shard", &s]);
        let (code, _, err) = conventions_bin(&args, 2);
        assert_eq!(code, 0, "{err}");
        parts.push(o);
    }
    let merged = dir.join("merged.json");
    let m = merged.display().to_string();
    let (code, _, err) = run("merge", &["--out", &m, &parts[0], &parts[1]], 2);
    assert_eq!(code, 0, "{err}");
    assert_eq!(without_provenance(load(&merged)), docs[0], "merged shards");
    let doc = &docs[0];
    let points = doc["points"].as_array().unwrap();
    let variants = doc["config"]["variants"].as_array().unwrap().len();
    assert_eq!(
        points.len(),
        2 * variants * 2,
        "2 problems x variants x 2 NFE"
    );
    let flips = doc["summary"]["flips"].as_array().unwrap();
    let bases = doc["config"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["base"] == true)
        .count();
    assert_eq!(flips.len(), variants - bases);
    for p in points {
        assert_eq!(
            p["nfe"], p["steps"],
            "every variant calls the model once a step"
        );
        assert!(p["err_rms"].as_f64().unwrap() > 0.0);
        assert_eq!(p["w2"].is_null(), p["problem"] != "gauss4");
    }
    let (t, tp) = (dir.join("t"), dir.join("a/conventions.json"));
    let (code, _, err) = run(
        "table",
        &[tp.to_str().unwrap(), "--out-dir", t.to_str().unwrap()],
        2,
    );
    assert_eq!(code, 0, "{err}");
    let md = std::fs::read_to_string(t.join("conventions.md")).unwrap();
    assert!(md.contains("| sigmas | default -> karras |"), "{md}");
    for (args, needle) in [
        (vec!["--betas", "cosine"], "--betas: unknown 'cosine'"),
        (vec!["--nfe", "0"], "--nfe: target 0"),
        (vec!["--problems", "nope"], "nope"),
    ] {
        let out = dir.join("bad.json");
        let o = out.display().to_string();
        let mut a = args.clone();
        a.extend(["--out", &o]);
        let (code, _, err) = conventions_bin(&a, 2);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!out.exists());
    }
}
