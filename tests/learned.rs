//! The `learned_vs_exact` binary on a small configuration: the error split obeys the triangle
//! inequality of RMS norms, the crossovers follow from the points, the numbers do not depend on
//! the thread count, and a network without a `problem` is one error line.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-learned-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], threads: usize) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_learned_vs_exact"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn small(net: &str, out: &str) -> Vec<String> {
    [
        "--nets",
        net,
        "--solvers",
        "euler dpm-solver++",
        "--nfe",
        "3,6,12,24,48",
        "--samples",
        "48",
        "--trajectory-steps",
        "4",
        "--reference-tol",
        "1e-9",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn error_split_is_consistent_and_thread_independent() {
    let dir = scratch_dir("split");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let net = "results/models/ring2d.safetensors";
    for (path, threads) in [(&a, 1), (&b, 3)] {
        let args = small(net, path.to_str().unwrap());
        let (code, err) = run(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            threads,
        );
        assert_eq!(code, 0, "{err}");
    }
    let read = |p: &PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (da, db) = (read(&a), read(&b));
    for key in ["groups", "points", "summary"] {
        assert_eq!(da[key], db[key], "{key} differs between 1 and 3 threads");
    }
    let group = &da["groups"][0];
    let net_error = f(&group["net_error"]);
    assert!(net_error > 0.0 && net_error.is_finite());
    assert_eq!(group["problem"], "ring2d");
    let points = da["points"].as_array().unwrap();
    let trajectory: Vec<&Value> = points.iter().filter(|p| !p["t"].is_null()).collect();
    assert!(
        trajectory.len() >= 4,
        "{} trajectory points",
        trajectory.len()
    );
    for p in &trajectory {
        for k in ["x0_error", "eps_error", "velocity_error"] {
            assert!(f(&p[k]) > 0.0 && f(&p[k]).is_finite(), "{k}: {p}");
        }
    }
    for solver in ["euler", "dpm-solver++"] {
        let mine: Vec<&Value> = points
            .iter()
            .filter(|p| p["t"].is_null() && p["solver"] == solver)
            .collect();
        assert_eq!(mine.len(), 5, "{solver}");
        for p in &mine {
            let (exact, disc, total) = (f(&p["disc_exact"]), f(&p["disc_net"]), f(&p["total_net"]));
            // RMS |x_h^N - x_ref^E| <= RMS |x_h^N - x_ref^N| + RMS |x_ref^N - x_ref^E| and back.
            assert!(total <= disc + net_error + 1e-12, "{p}");
            assert!(net_error <= total + disc + 1e-12, "{p}");
            assert!(exact > 0.0, "{p}");
        }
        let from = |k: &str| {
            let mut nfe = None;
            for p in mine.iter().rev() {
                if f(&p[k]) < net_error {
                    nfe = Some(p["nfe"].as_u64().unwrap());
                } else {
                    break;
                }
            }
            nfe
        };
        let c = da["summary"]["crossovers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["solver"] == solver)
            .unwrap();
        assert_eq!(c["nfe_exact"].as_u64(), from("disc_exact"), "{solver}");
        assert_eq!(c["nfe_net"].as_u64(), from("disc_net"), "{solver}");
        // Discretization error with the exact oracle falls with NFE for the first-order solver.
        if solver == "euler" {
            let e: Vec<f64> = mine.iter().map(|p| f(&p["disc_exact"])).collect();
            assert!(e.windows(2).all(|w| w[1] < w[0]), "{e:?}");
        }
    }
}

#[test]
fn a_network_without_a_problem_is_one_error_line() {
    let dir = scratch_dir("bad");
    let out = dir.join("x.json");
    let args = small(
        "tests/fixtures/torch_mlp.safetensors",
        out.to_str().unwrap(),
    );
    let (code, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("torch_mlp.safetensors"), "{err}");
    assert!(err.contains("problem"), "{err}");
    assert!(!out.exists());
}
