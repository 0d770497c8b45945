//! Training throughput of the flow-map MLP, side by side with PyTorch (CPU, float64) running the
//! same network, loss and optimizer: `bench_train [--python PY] [--out FILE]`. Writes
//! `results/bench_train.json`. See `bench_train --help`.

use clap::Parser;
use pfode::flow_map::distill::{regression, Targets};
use pfode::flow_map::param::Param;
use pfode::nn::train::Adam;
use pfode::nn::{Mlp, MlpConfig, TimeInput};
use pfode::rng::standard_normal;
use pfode::study::{exit_on_error, Provenance};
use pfode::{io, schedule, Error, Prediction, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "bench_train",
    about = "Flow-map training throughput (samples/s) against PyTorch float64 CPU",
    after_help = "One Adam step of the weighted regression loss of pfode::flow_map::distill (the\n\
                  mean-velocity parameterisation: forward, back-propagation, update) on a fixed batch,\n\
                  for the two-time MLP of the flow_maps study (width 128, depth 3, 16 time features) at\n\
                  d = 2 and d = 16. With --python PY, PY runs benches/train_reference.py (the same MLP,\n\
                  loss and Adam in PyTorch, float64, the same batch and thread count). Samples/s =\n\
                  batch / median seconds per step of 5 timed blocks. Errors: one line, exit status 2."
)]
struct Args {
    #[arg(long)]
    python: Option<String>,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value = "results/bench_train.json")]
    out: PathBuf,
}

fn run(args: &Args) -> Result<()> {
    let threads = rayon::current_num_threads();
    let vp = schedule::parse("vp-linear")?;
    let mut cases = Vec::new();
    for dim in [2usize, 16] {
        let config = MlpConfig {
            dim,
            width: 128,
            depth: 3,
            time_input: TimeInput::T,
            time_features: 16,
            omega_max: 8.0,
            prediction: Prediction::X0,
            times: 2,
        };
        let mut net = Mlp::init(config.clone(), 0)?;
        let n = args.batch;
        let s: Vec<f64> = (0..n)
            .map(|i| 0.05 + 0.9 * (i as f64 + 0.5) / n as f64)
            .collect();
        let rows = Targets {
            x: standard_normal(n, dim, 1, 0),
            t: s.iter()
                .enumerate()
                .map(|(i, s)| s * ((i * 7 % 11) as f64 / 11.0))
                .collect(),
            s,
            y: standard_normal(n, dim, 2, 0),
            w: vec![1.0; n],
        };
        let mut adam = Adam::new(net.params.len());
        let mut step = |net: &mut Mlp| {
            let (_, grad) = regression(&Param::MeanVelocity, net, vp.as_ref(), &rows, true);
            adam.step(&mut net.params, &grad, 1e-3);
        };
        for _ in 0..20 {
            step(&mut net);
        }
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..args.steps {
                    step(&mut net);
                }
                start.elapsed().as_secs_f64() / args.steps as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let secs = times[2];
        let mut case = json!({
            "dim": dim, "width": 128, "depth": 3, "time_features": 16, "batch": n,
            "n_params": config.n_params(),
            "seconds_per_step": secs,
            "samples_per_second": n as f64 / secs,
        });
        if let Some(py) = &args.python {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_reference.py");
            let output = Command::new(py)
                .arg(script)
                .args([dim, 128, 3, 16].map(|v| v.to_string()))
                .arg("8.0")
                .args([n, args.steps, threads].map(|v| v.to_string()))
                .env("OMP_NUM_THREADS", threads.to_string())
                .env("MKL_NUM_THREADS", threads.to_string())
                .output()
                .map_err(|e| Error::io(py, e))?;
            if !output.status.success() {
                return Err(Error::Domain(format!(
                    "{py} benches/train_reference.py failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )));
            }
            let v: Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| Error::Domain(format!("train_reference.py printed no JSON: {e}")))?;
            let torch = v["seconds_per_step"].as_f64().unwrap_or(f64::NAN);
            case["torch"] = v.clone();
            case["torch_samples_per_second"] = json!(n as f64 / torch);
            case["speedup_vs_torch"] = json!(torch / secs);
        }
        println!("{case}");
        cases.push(case);
    }
    let doc = json!({
        "kind": "bench_train",
        "provenance": Provenance::now(0),
        "threads": threads,
        "cases": cases,
    });
    io::write_atomic(&args.out, &serde_json::to_vec_pretty(&doc).expect("json"))
}

fn main() {
    exit_on_error(run(&pfode::study::cli_args()));
}
