//! Distils a flow map from the exact model of a built-in mixture:
//! `distill --problem ring2d --method direct|cd|ctm|pd [--param ...] --out MAP.safetensors
//! [--log LOG.json]`. See `distill --help` and `pfode::flow_map::distill`.

use clap::Parser;
use pfode::flow_map::distill::{self, DistillConfig, Method, Teacher};
use pfode::flow_map::free::data_scale;
use pfode::flow_map::param::Param;
use pfode::grid::Grid;
use pfode::io::Outputs;
use pfode::nn::train::Optim;
use pfode::nn::{weights, Mlp, MlpConfig, TimeInput};
use pfode::study::{exit_on_error, progress, Provenance};
use pfode::{problems, schedule, Error, Oracle, Prediction, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

const AFTER: &str = "\
Methods (pfode::flow_map::distill): direct (regression onto the exact map, the yardstick), cd
(consistency distillation), ctm (consistency trajectory models), pd (progressive distillation:
one student per halving of the grid); the teacher is the exact mixture, so teacher error is zero.
Teacher-free (pfode::flow_map::free, from data alone): ct (improved consistency training), scm
(continuous-time consistency, TrigFlow), meanflow, shortcut, lsd, esd and psd (flow-map
self-distillation). A teacher-free method takes options, e.g. meanflow:diagonal=0.5,pairs=uniform
or ct:curriculum=sqrt,n=uniform,weight=one,loss=l2 (see the module docs for each).

Writes --out (safetensors, F64: the two-time MLP with flow_map, sigma_data, schedule, anytime,
levels, problem, method and provenance in the metadata; for pd, --out must contain {steps}, and
each stage's student is written with its step count there) and --log (JSON: provenance, configs,
the loss curve of every stage, wall time, optimizer steps and samples seen). `plot LOG` draws the
loss curve. Seeded: the same seed gives the same weights at any thread count. Errors: one line on
stderr, exit status 2, nothing written.";

#[derive(Parser)]
#[command(name = "distill", about = "Distil a few-step flow map from the exact model", after_help = AFTER)]
struct Args {
    #[arg(long, default_value = "ring2d")]
    problem: String,
    #[arg(long, default_value = "vp-linear")]
    schedule: String,
    /// A method spec: direct, cd, ctm, pd, ct, scm, meanflow, shortcut, lsd, esd or psd, with
    /// options for the teacher-free ones (name:key=value,...).
    #[arg(long)]
    method: String,
    /// consistency, ctm, mean-velocity, ddim or trigflow (default: the method's own).
    #[arg(long)]
    param: Option<String>,
    /// The data scale of the consistency and CTM parameterisations (default: the problem's
    /// per-coordinate RMS standard deviation, sqrt(tr Cov(p_0) / d)).
    #[arg(long)]
    sigma_data: Option<f64>,
    /// The grid spec of the training levels.
    #[arg(long, default_value = "karras:steps=16,zero=true")]
    levels: String,
    #[arg(long, default_value_t = 128)]
    width: usize,
    #[arg(long, default_value_t = 3)]
    depth: usize,
    #[arg(long, default_value = "c-noise")]
    time_input: String,
    #[arg(long, default_value_t = 16)]
    time_features: usize,
    #[arg(long, default_value_t = 8.0)]
    omega_max: f64,
    /// Optimizer steps (per stage for pd).
    #[arg(long, default_value_t = 4000)]
    steps: usize,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.02)]
    lr_final: f64,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// The EMA decay of the target network (default 0.95 for cd and ctm, 0.999 for shortcut,
    /// none otherwise).
    #[arg(long)]
    ema: Option<f64>,
    #[arg(long, default_value_t = 0.5)]
    zero_fraction: f64,
    /// The teacher's solver (cd, ctm).
    #[arg(long, default_value = "heun")]
    teacher: String,
    #[arg(long, default_value_t = 8192)]
    pool: usize,
    #[arg(long, default_value_t = 1e-12)]
    reference_rtol: f64,
    #[arg(long, default_value_t = 1024)]
    val_size: usize,
    #[arg(long, default_value_t = 50)]
    log_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    log: Option<PathBuf>,
}

fn run(args: Args) -> Result<()> {
    let option =
        |field: &str, e: Error| Error::invalid("command line", Some(field.into()), e.to_string());
    let mixture = problems::load(&args.problem)?;
    let sigma_data = args.sigma_data.unwrap_or_else(|| data_scale(&mixture));
    let (method, options) = distill::parse_method(&args.method, sigma_data, mixture.dim())
        .map_err(|e| option("--method", e))?;
    let param_name = args.param.as_deref().unwrap_or(method.default_param());
    let param = Param::parse(param_name, sigma_data).map_err(|e| option("--param", e))?;
    let out_text = args.out.display().to_string();
    if (method == Method::Pd) != out_text.contains("{steps}") {
        return Err(option(
            "--out",
            Error::Domain("pd writes one file per stage and needs {steps} in --out; the other methods write one file without it".into()),
        ));
    }
    let schedule = schedule::parse(&args.schedule)?;
    let levels = Grid::parse(&args.levels, schedule.as_ref())
        .map_err(|e| option("--levels", e))?
        .times;
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
        prediction: Prediction::X0,
        times: 2,
    };
    config.validate("command line")?;
    let n_steps = levels.len() - 1;
    let stages: Vec<usize> = if method == Method::Pd {
        (1..)
            .map(|b| n_steps >> b)
            .take_while(|&k| k >= 1)
            .collect()
    } else {
        vec![n_steps]
    };
    let mut outputs = Outputs::new();
    let slots = stages
        .iter()
        .map(|k| {
            let path = PathBuf::from(out_text.replace("{steps}", &k.to_string()));
            outputs.declare("--out", &path).map(|s| (s, path))
        })
        .collect::<Result<Vec<_>>>()?;
    let log_slot = args
        .log
        .as_ref()
        .map(|p| outputs.declare("--log", p))
        .transpose()?;
    let distill_config = DistillConfig {
        method,
        levels: args.levels.clone(),
        batch: args.batch,
        optim: Optim {
            steps: args.steps,
            lr: args.lr,
            lr_final: args.lr_final,
            warmup: args.warmup.min(args.steps),
            log_every: args.log_every,
            ema: args.ema.unwrap_or(method.default_ema()),
        },
        zero_fraction: args.zero_fraction,
        teacher: args.teacher.clone(),
        pool: args.pool,
        reference_rtol: args.reference_rtol,
        val_size: args.val_size,
        seed: args.seed,
        options,
        sigma_data,
    };
    let provenance = Provenance::now(args.seed);
    let teacher = Teacher {
        mixture: &mixture,
        schedule: schedule.as_ref(),
        levels,
    };
    let bar = progress((args.steps * stages.len()) as u64, "distill");
    let start = Instant::now();
    let trained = distill::distill(
        Mlp::init(config.clone(), args.seed)?,
        param,
        &teacher,
        &distill_config,
        |_| bar.inc(1),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut stage_logs = Vec::new();
    for (t, (slot, path)) in trained.into_iter().zip(slots) {
        let mut map = t.map;
        for (k, v) in [
            ("problem", args.problem.clone()),
            ("method", method.name().to_string()),
            ("git_revision", provenance.git_revision.clone()),
            ("command", provenance.command.clone()),
            ("seed", args.seed.to_string()),
        ] {
            map.metadata.insert(k.into(), v);
        }
        stage_logs.push(json!({
            "steps": t.steps,
            "out": path.display().to_string(),
            "final_val_loss": t.log.last().map(|e| e.val_loss),
            "log": t.log,
        }));
        outputs.set(slot, map.to_bytes()?);
    }
    let doc = json!({
        "kind": "distill",
        "version": 1,
        "provenance": provenance,
        "problem": args.problem,
        "schedule": schedule.spec(),
        "method": method.name(),
        "method_spec": args.method,
        "param": param.name(),
        "sigma_data": param.sigma_data(),
        "network": weights::config_metadata(&config),
        "n_params": config.n_params(),
        "distill": distill_config,
        "wall_seconds": seconds,
        "exact_val_loss": 0.0,
        "optimizer_steps": args.steps * stages.len(),
        "samples_seen": args.steps * stages.len() * args.batch,
        "stages": stage_logs,
        "log": stage_logs.last().map(|s| s["log"].clone()),
    });
    if let Some(slot) = log_slot {
        outputs.set(slot, serde_json::to_vec_pretty(&doc).expect("json"));
    }
    outputs.commit()?;
    eprintln!(
        "distilled {} ({}) in {seconds:.1} s",
        method.name(),
        param.name()
    );
    Ok(())
}

fn main() {
    exit_on_error(run(pfode::study::cli_args()));
}
