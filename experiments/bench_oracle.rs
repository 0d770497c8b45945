//! Oracle throughput, side by side with the machine's matrix-product peak and (optionally)
//! NumPy and PyTorch running the same formulas: `bench_oracle [--python PY] [--out FILE]`.
//! Writes `results/bench_oracle.json`. See `bench_oracle --help`.

use clap::Parser;
use pfode::grid::Grid;
use pfode::ndarray::Array2;
use pfode::oracle::{Free, Oracle};
use pfode::solver::{self, Env, Model};
use pfode::study::convergence::MAIN_SOLVERS;
use pfode::study::{exit_on_error, Provenance};
use pfode::{io, problems, schedule, Error, Prediction, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const CASES: [(&str, usize); 5] = [
    ("ring2d", 100_000),
    ("aniso16", 20_000),
    ("mix64", 10_000),
    ("k256d8", 10_000),
    ("edm2_tree2d", 10_000),
];

/// The EDM2 tree toy (d = 2, K = 2032), from the shared data folder beside the checkout.
const EDM2_TREE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/edm2_tree2d.json"
);

/// A case's mixture: a built-in problem, `k256d8` (`problems::random_mix(256, 8, 256)`) or the
/// EDM2 tree.
fn case_mixture(name: &str) -> Result<pfode::GaussianMixture> {
    match name {
        "k256d8" => pfode::GaussianMixture::new(problems::random_mix(256, 8, 256), name),
        "edm2_tree2d" => problems::load(EDM2_TREE),
        _ => problems::load(name),
    }
}

#[derive(Parser)]
#[command(
    name = "bench_oracle",
    about = "Gaussian-mixture oracle throughput vs the faer matrix-product peak, NumPy and PyTorch",
    after_help = "Cases (d, K, N): ring2d (2, 8, 1e5), aniso16 (16, 5, 2e4), mix64 (64, 16, 1e4),\n\
                  k256d8 (8, 256, 1e4; problems::random_mix(256, 8, 256)) and edm2_tree2d (2, 2032, 1e4;\n\
                  ../shared/data/edm2_tree2d.json beside the checkout), at\n\
                  vp-linear t = 0.5, data prediction. Times are medians over --repeats (50) calls after one\n\
                  warm-up call, on all rayon threads. FLOPs are counted as 4 N K d^2 (two products per\n\
                  component). The peak is the best of 3 faer products of two 2048^2 float64 matrices.\n\
                  With --python PY, PY runs benches/oracle_reference.py (NumPy, PyTorch CPU) on the same\n\
                  problems, points and thread count, and the ratios are recorded side by side with the\n\
                  largest difference from pfode's output.\n\
                  With the aniso16 case, each main solver runs on a free oracle (every prediction 0) over\n\
                  logSNR grids of 20 and 40 steps; its overhead per evaluation, (T_40 - T_20)/(NFE_40 -\n\
                  NFE_20), is recorded as a percentage of the oracle's time per call in the same run, and\n\
                  in passes (multiples of one in-place x += c y over the same array, timed in the run)."
)]
struct Args {
    #[arg(long, default_value_t = 50)]
    repeats: usize,
    /// A Python interpreter with numpy (and torch) for the side-by-side comparison.
    #[arg(long)]
    python: Option<String>,
    #[arg(long, default_value = "results/bench_oracle.json")]
    out: PathBuf,
    /// Skip the solver-overhead measurement (done with the aniso16 case).
    #[arg(long)]
    no_solvers: bool,
    /// Comma-separated subset of the cases (ring2d, aniso16, mix64, k256d8, edm2_tree2d).
    #[arg(long, value_delimiter = ',')]
    cases: Option<Vec<String>>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let c = Instant::now();
        f()?;
        t.push(c.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// GFLOP/s of faer's parallel float64 matrix product at n = 2048 (best of 3).
fn peak() -> f64 {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, Mat, Par};
    let n = 2048;
    let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 13) as f64 / 13.0);
    let b = Mat::<f64>::from_fn(n, n, |i, j| ((i * 5 + j * 11) % 17) as f64 / 17.0);
    let mut c = Mat::<f64>::zeros(n, n);
    let par = Par::rayon(rayon::current_num_threads());
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Each main solver on the free oracle ([`Free`]) from the points `x` over logSNR grids of 20 and
/// 40 steps (vp-linear, t = 1 to 1e-3): the steady-state cost of the solver's own arithmetic per
/// evaluation, (T_40 - T_20)/(NFE_40 - NFE_20), and the whole-run cost T_20/NFE_20 (buffer set-up
/// included), each as a fraction of the oracle's time per call `oracle_s` measured in this run,
/// and the former also in passes: multiples of one in-place `x += c y` over an array of x's size
/// (two arrays read, one written), the memory-traffic unit every solver's arithmetic is made of.
fn solver_overhead(repeats: usize, x: &Array2<f64>, oracle_s: f64) -> Result<Value> {
    let s = schedule::parse("vp-linear")?;
    let free = Free(x.ncols());
    let model = Model::new(&free, s.as_ref());
    let env = Env {
        schedule: s.as_ref(),
        mixture: None,
        noise_seed: 0,
    };
    let (mut y, z) = (x.clone(), x.clone());
    let pass_s = time(repeats, || {
        solver::update(&mut y, 1.0, &[(1e-300, &z)]);
        Ok(())
    })?;
    let mut rows = Vec::new();
    for spec in MAIN_SOLVERS {
        let run = |steps: usize| -> Result<(f64, usize)> {
            let grid = Grid::parse(
                &format!("logsnr:steps={steps},t_start=1,t_end=0.001"),
                s.as_ref(),
            )?;
            let nfe = solver::build(spec, &env)?
                .solver
                .nfe(&grid, s.as_ref())
                .expect("fixed grid");
            let secs = time(repeats.min(20), || {
                let mut built = solver::build(spec, &env)?;
                solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).map(|_| ())
            })?;
            Ok((secs, nfe))
        };
        let (t20, n20) = run(20)?;
        let (t40, n40) = run(40)?;
        let per_eval = (t40 - t20) / (n40 - n20) as f64;
        rows.push(json!({
            "solver": spec,
            "nfe_20_steps": n20,
            "seconds_20_steps": t20,
            "seconds_40_steps": t40,
            "overhead_per_eval_s": per_eval,
            "overhead_percent": 100.0 * per_eval / oracle_s,
            "overhead_passes": per_eval / pass_s,
            "whole_run_percent": 100.0 * t20 / n20 as f64 / oracle_s,
        }));
    }
    Ok(json!({
        "axpy_pass_s": pass_s,
        "oracle_s": oracle_s,
        "solvers": rows,
    }))
}

fn run(args: &Args) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peak_gflops = peak();
    let s = schedule::parse("vp-linear")?;
    let at = s.level(0.5);
    let mut cases = Vec::new();
    for (name, n) in CASES {
        if args
            .cases
            .as_ref()
            .is_some_and(|c| !c.iter().any(|c| c == name))
        {
            continue;
        }
        let m = case_mixture(name)?;
        let (d, k) = (m.dim(), m.n_components());
        let x = m.sample_pt(n, &at, 1);
        let mut out = pfode::ndarray::Array2::zeros(x.dim());
        let secs = time(args.repeats, || {
            m.predict(Prediction::X0, x.view(), &at, out.view_mut())
        })?;
        let x1 = x.slice(pfode::ndarray::s![0..1, ..]).to_owned();
        let mut o1 = pfode::ndarray::Array2::zeros((1, d));
        let latency = time(200, || {
            m.predict(Prediction::X0, x1.view(), &at, o1.view_mut())
        })?;
        let flops = 4.0 * (n * k * d * d) as f64;
        let gflops = flops / secs / 1e9;
        let mut case = json!({
            "problem": name, "d": d, "K": k, "N": n,
            "seconds": secs,
            "samples_per_second": n as f64 / secs,
            "gflops": gflops,
            "percent_of_peak": 100.0 * gflops / peak_gflops,
            "single_sample_latency_s": latency,
        });
        if let Some(py) = &args.python {
            let tmp = |what: &str, ext: &str| {
                std::env::temp_dir().join(format!(
                    "pfode-bench-{name}-{what}-{}.{ext}",
                    std::process::id()
                ))
            };
            let (file, x_file, out_file) =
                (tmp("mixture", "json"), tmp("x", "npy"), tmp("x0", "npy"));
            io::write_atomic(&file, m.spec().to_json(&[]).as_bytes())?;
            io::write_npy(&x_file, &x)?;
            io::write_npy(&out_file, &out)?;
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/oracle_reference.py");
            let output = Command::new(py)
                .arg(script)
                .args([&file, &x_file, &out_file])
                .args([
                    args.repeats.to_string(),
                    at.alpha.to_string(),
                    at.sigma.to_string(),
                    threads.to_string(),
                ])
                .env("OMP_NUM_THREADS", threads.to_string())
                .env("OPENBLAS_NUM_THREADS", threads.to_string())
                .env("MKL_NUM_THREADS", threads.to_string())
                .output()
                .map_err(|e| Error::io(py, e))?;
            for f in [&file, &x_file, &out_file] {
                let _ = std::fs::remove_file(f);
            }
            if !output.status.success() {
                return Err(Error::Domain(format!(
                    "{py} benches/oracle_reference.py failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )));
            }
            let v: Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| Error::Domain(format!("oracle_reference.py printed no JSON: {e}")))?;
            let ratio = |key: &str| v[key].as_f64().map(|t| t / secs);
            case["python"] = v.clone();
            case["speedup_vs_numpy"] = json!(ratio("numpy_s"));
            case["speedup_vs_torch"] = json!(ratio("torch_s"));
        }
        if name == "aniso16" && !args.no_solvers {
            case["solver_overhead"] = solver_overhead(args.repeats, &x, secs)?;
        }
        println!("{case}");
        cases.push(case);
    }
    let doc = json!({
        "kind": "bench_oracle",
        "provenance": Provenance::now(0),
        "threads": threads,
        "peak_gflops": peak_gflops,
        "prediction": "x0 at vp-linear t = 0.5",
        "cases": cases,
    });
    let text = serde_json::to_string_pretty(&doc).expect("json");
    io::write_atomic(&args.out, text.as_bytes())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    exit_on_error(run(&args));
}
