//! GPU throughput: `gpu_bench [--out results/gpu_bench.json] [--reps 5]`. The exact mixture
//! oracle (ring2d, aniso16, mix64) and MLPs (the 2-D ring2d architecture and larger ones) at
//! batch sizes 1e3 .. 1e6, on the CPU (f64, all threads) and on the GPU (f32 and f64, host
//! arrays in and out, as a solver sees it), median of --reps timed calls after one warm-up; the
//! GPU's agreement with the CPU (max |gpu - cpu| / RMS cpu) at each size. Needs the `cuda`
//! feature and a GPU; otherwise it says why on stderr, measures the CPU only and writes nothing
//! unless --cpu-only is given.

use clap::Parser;
use ndarray::Array2;
use pfode::nn::{Mlp, MlpConfig, TimeInput};
use pfode::study::{exit_on_error, Provenance};
use pfode::{io, problems, schedule, Oracle, Prediction, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "gpu_bench",
    about = "GMM oracle and MLP throughput on the GPU vs the CPU"
)]
struct Args {
    #[arg(long, default_value = "results/gpu_bench.json")]
    out: PathBuf,
    #[arg(long, default_value_t = 5)]
    reps: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000"
    )]
    batches: Vec<usize>,
    /// Write the CPU figures even without a GPU.
    #[arg(long)]
    cpu_only: bool,
}

fn time(reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut v = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        v.push(start.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

fn measure(
    name: &str,
    cpu: &dyn Oracle,
    gpus: &[(&str, Box<dyn Oracle + '_>)],
    args: &Args,
) -> Result<Vec<Value>> {
    let vp = schedule::parse("vp-linear")?;
    let at = vp.level(0.3);
    let mut rows = Vec::new();
    for &n in &args.batches {
        let x = pfode::rng::standard_normal(n, cpu.dim(), 1, 0) * 3.0;
        let mut out = Array2::zeros(x.dim());
        let cpu_s = time(args.reps, &mut || {
            cpu.predict(Prediction::X0, x.view(), &at, out.view_mut())
        })?;
        let reference = out.clone();
        let scale = (reference.iter().map(|v| v * v).sum::<f64>() / reference.len() as f64).sqrt();
        let mut row = json!({"case": name, "batch": n, "cpu_f64_s": cpu_s, "cpu_rows_per_s": n as f64 / cpu_s});
        for (label, gpu) in gpus {
            let mut y = Array2::zeros(x.dim());
            let s = time(args.reps, &mut || {
                gpu.predict(Prediction::X0, x.view(), &at, y.view_mut())
            })?;
            let err = (&y - &reference).iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale;
            row[format!("gpu_{label}_s")] = json!(s);
            row[format!("gpu_{label}_speedup")] = json!(cpu_s / s);
            row[format!("gpu_{label}_rel_error")] = json!(err);
        }
        eprintln!("{row}");
        rows.push(row);
    }
    Ok(rows)
}

/// One benchmarked oracle: its CPU version and, with the `cuda` feature, what builds its GPU one.
struct Case<'a> {
    name: String,
    cpu: &'a dyn Oracle,
    #[cfg(feature = "cuda")]
    host: pfode::cuda::Host<'a>,
}

fn nets() -> Result<Vec<(String, Mlp)>> {
    [(2, 64, 3), (16, 128, 3), (64, 512, 4)]
        .iter()
        .map(|&(dim, width, depth)| {
            let config = MlpConfig {
                dim,
                width,
                depth,
                time_input: TimeInput::T,
                time_features: 16,
                omega_max: 30.0,
                prediction: Prediction::V,
                times: 1,
            };
            Ok((
                format!("mlp d={dim} width={width} depth={depth}"),
                Mlp::init(config, 1)?,
            ))
        })
        .collect()
}

fn run(args: Args) -> Result<()> {
    let provenance = Provenance::now(1);
    let mixtures: Vec<_> = ["ring2d", "aniso16", "mix64"]
        .iter()
        .map(|n| Ok((n.to_string(), problems::load(n)?)))
        .collect::<Result<_>>()?;
    let nets = nets()?;
    let mut rows = Vec::new();
    #[cfg(feature = "cuda")]
    let gpu = pfode::cuda::Gpu::detect();
    #[cfg(not(feature = "cuda"))]
    let gpu: Option<()> = {
        eprintln!("built without the `cuda` feature (cargo run --release --features cuda --bin gpu_bench); using the CPU");
        None
    };
    if gpu.is_none() && !args.cpu_only {
        return Err(pfode::Error::Domain(
            "no GPU: nothing written (--cpu-only writes the CPU figures)".into(),
        ));
    }
    let cases = mixtures
        .iter()
        .map(|(name, m)| Case {
            name: format!("gmm {name}"),
            cpu: m,
            #[cfg(feature = "cuda")]
            host: pfode::cuda::Host::Mixture(m),
        })
        .chain(nets.iter().map(|(name, net)| Case {
            name: name.clone(),
            cpu: net,
            #[cfg(feature = "cuda")]
            host: pfode::cuda::Host::Mlp(net),
        }));
    for case in cases {
        #[allow(unused_mut)]
        let mut gpus: Vec<(&str, Box<dyn Oracle>)> = Vec::new();
        #[cfg(feature = "cuda")]
        if let Some(g) = &gpu {
            gpus.push(("f32", case.host.to_gpu::<f32>(g.clone())?));
            gpus.push(("f64", case.host.to_gpu::<f64>(g.clone())?));
        }
        rows.extend(measure(&case.name, case.cpu, &gpus, &args)?);
    }
    #[cfg(feature = "cuda")]
    let device = gpu.as_ref().map(|g| g.name.clone());
    #[cfg(not(feature = "cuda"))]
    let device: Option<String> = None;
    let doc = json!({
        "kind": "gpu_bench",
        "version": 1,
        "provenance": provenance,
        "device": device,
        "cpu_threads": rayon::current_num_threads(),
        "note": "times per oracle call (median of reps after a warm-up), host f64 arrays in and out; prediction x0 at t = 0.3 on vp-linear; rel_error = max |gpu - cpu| / RMS(cpu)",
        "rows": rows,
    });
    io::write_atomic(
        &args.out,
        serde_json::to_string_pretty(&doc).expect("json").as_bytes(),
    )
}

fn main() {
    exit_on_error(run(pfode::study::cli_args()));
}
