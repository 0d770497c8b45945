//! Trains an MLP oracle on a built-in mixture with the unified denoising loss:
//! `train [--problem ring2d] [--schedule vp-linear] [--prediction v] [--width 64] [--depth 3] ...
//! --out NET.safetensors [--log LOG.json]`. See `train --help` and `pfode::nn::train`.

use clap::Parser;
use pfode::io::Outputs;
use pfode::nn::train::{self, TimeSampling, TrainConfig};
use pfode::nn::{weights, Mlp, MlpConfig, TimeInput};
use pfode::study::{exit_on_error, progress, Provenance};
use pfode::{problems, schedule, Error, Oracle, Prediction, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const AFTER: &str = "\
Loss: mean over the batch of |F(x_t, t) - (A_t x0 + B_t eps)|^2 / d with x_t = alpha_t x0 + sigma_t eps,
(A_t, B_t) the target of --prediction, weight 1; t uniform in [t_min, t_max] (or uniform in
log-SNR with --time-sampling logsnr); fresh mixture draws every step; Adam with linear warm-up
and cosine decay to lr * lr_final. Seeded: the same seed gives the same weights at any thread
count.

Writes --out (safetensors, F64, tensors layers.{l}.weight / layers.{l}.bias, the architecture,
schedule, problem and provenance in the metadata) and --log (JSON: provenance, configs, the loss
curve with a fixed validation set, and the RMS error of the net against the exact oracle at a
few times). `plot LOG` draws the loss curve. Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "train", about = "Train an MLP oracle with the denoising loss", after_help = AFTER)]
struct Args {
    /// A built-in problem or a mixture JSON file.
    #[arg(long, default_value = "ring2d")]
    problem: String,
    #[arg(long, default_value = "vp-linear")]
    schedule: String,
    /// eps, x0, v, velocity or score.
    #[arg(long, default_value = "v")]
    prediction: String,
    #[arg(long, default_value_t = 64)]
    width: usize,
    #[arg(long, default_value_t = 3)]
    depth: usize,
    /// t or log-sigma.
    #[arg(long, default_value = "t")]
    time_input: String,
    #[arg(long, default_value_t = 16)]
    time_features: usize,
    #[arg(long, default_value_t = 30.0)]
    omega_max: f64,
    #[arg(long, default_value_t = 20000)]
    steps: usize,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.02)]
    lr_final: f64,
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    #[arg(long, default_value_t = 1e-3)]
    t_min: f64,
    /// Default: the schedule's end.
    #[arg(long)]
    t_max: Option<f64>,
    /// uniform or logsnr.
    #[arg(long, default_value = "uniform")]
    time_sampling: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    log_every: usize,
    #[arg(long, default_value_t = 4096)]
    val_size: usize,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    log: Option<PathBuf>,
}

fn run(args: Args) -> Result<()> {
    let mut outputs = Outputs::new();
    let net_slot = outputs.declare("--out", &args.out)?;
    let log_slot = args
        .log
        .as_ref()
        .map(|p| outputs.declare("--log", p))
        .transpose()?;
    let mixture = problems::load(&args.problem)?;
    let schedule = schedule::parse(&args.schedule)?;
    let option =
        |field: &str, e: Error| Error::invalid("command line", Some(field.into()), e.to_string());
    let config = MlpConfig {
        dim: mixture.dim(),
        width: args.width,
        depth: args.depth,
        time_input: args
            .time_input
            .parse::<TimeInput>()
            .map_err(|e| option("--time-input", e))?,
        time_features: args.time_features,
        omega_max: args.omega_max,
        prediction: args
            .prediction
            .parse::<Prediction>()
            .map_err(|e| option("--prediction", e))?,
        times: 1,
    };
    config.validate("command line")?;
    let train_config = TrainConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        lr_final: args.lr_final,
        warmup: args.warmup.min(args.steps),
        t_min: args.t_min,
        t_max: args.t_max.unwrap_or(schedule.t_max()),
        time_sampling: args
            .time_sampling
            .parse::<TimeSampling>()
            .map_err(|e| option("--time-sampling", e))?,
        seed: args.seed,
        log_every: args.log_every,
        val_size: args.val_size,
    };
    let provenance = Provenance::now(args.seed);
    let mut net = Mlp::init(config.clone(), args.seed)?;
    let bar = progress(args.steps as u64, "train");
    let start = Instant::now();
    let log = train::train(&mut net, &mixture, schedule.as_ref(), &train_config, |_| {
        bar.inc(1)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let accuracy: Vec<_> = [0.9, 0.5, 0.2, 0.05, 0.01]
        .iter()
        .filter(|&&t| t <= schedule.t_max() && t >= schedule.t_min())
        .map(|&t| {
            let at = schedule.level(t);
            let x = mixture.sample_pt(4096, &at, pfode::rng::seed_for(args.seed, "accuracy"));
            let mut exact = x.clone();
            let mut learned = x.clone();
            mixture.predict(Prediction::X0, x.view(), &at, exact.view_mut())?;
            net.predict(Prediction::X0, x.view(), &at, learned.view_mut())?;
            Ok(json!({"t": t, "sigma": at.sigma, "rms_x0_error": pfode::metrics::order::rms_norm((&learned - &exact).view())}))
        })
        .collect::<Result<_>>()?;
    let val = train::validation(&mixture, schedule.as_ref(), &train_config);
    let exact_val_loss = train::oracle_loss(&mixture, config.prediction, schedule.as_ref(), &val)?;
    let mut extra = BTreeMap::new();
    extra.insert("schedule".to_string(), schedule.spec());
    extra.insert("problem".to_string(), args.problem.clone());
    extra.insert("git_revision".to_string(), provenance.git_revision.clone());
    extra.insert("command".to_string(), provenance.command.clone());
    extra.insert("seed".to_string(), args.seed.to_string());
    let doc = json!({
        "kind": "train",
        "version": 1,
        "provenance": provenance,
        "problem": args.problem,
        "schedule": schedule.spec(),
        "network": weights::config_metadata(&config),
        "n_params": config.n_params(),
        "train": train_config,
        "wall_seconds": seconds,
        "final_val_loss": log.last().map(|e| e.val_loss),
        "exact_val_loss": exact_val_loss,
        "accuracy": accuracy,
        "log": log,
        "out": args.out.display().to_string(),
    });
    outputs.set(net_slot, weights::to_bytes(&net, &extra)?);
    if let Some(slot) = log_slot {
        outputs.set(slot, serde_json::to_vec_pretty(&doc).expect("json"));
    }
    outputs.commit()?;
    eprintln!(
        "trained {} parameters in {seconds:.1} s; validation loss {:.4e} (exact oracle: {exact_val_loss:.4e})",
        config.n_params(),
        log.last().map_or(f64::NAN, |e| e.val_loss)
    );
    Ok(())
}

fn main() {
    exit_on_error(run(pfode::study::cli_args()));
}
