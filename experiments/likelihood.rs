//! log p_{t_min}(x) by the change of variables along the PF-ODE:
//! `likelihood --problem NAME|FILE.json | --net FILE.safetensors [--schedule SPEC]
//! (--points X.npy | --n N --seed S) [--integrator SPEC --steps N --spacing KIND]
//! [--divergence SPEC] [--prior exact|standard|kdiffusion] --out RESULT.json`.
//! See `likelihood --help` and `pfode::likelihood`.

use clap::Parser;
use pfode::grid::Grid;
use pfode::io::Outputs;
use pfode::likelihood::{log_likelihood, Divergence, Integrator, Method, Prior};
use pfode::metrics::mean_se;
use pfode::nn::weights;
use pfode::{io, limits, problems, schedule, Error, GaussianMixture, Oracle, Result};
use serde_json::json;
use std::path::PathBuf;

const AFTER: &str = "\
--problem     a built-in problem or mixture JSON: the exact oracle, and the truth log p_{t_min}
              that every point's error is measured against
--net         a network's safetensors file as the model (--schedule and --problem then default
              to its metadata; the problem supplies the exact prior and the truth)
--points      the (N, d) float64 .npy of points at t_min; or --n N [--seed S]: exact draws of
              p_{t_min} of the problem
--t-min       default: the schedule's t_min for a problem (sigma = 0 on vp-linear, vp-cosine,
              edm, flow); for a network 1e-3 (0.002 on edm), as networks need sigma > 0
--t-max       default: the schedule's end (80 on edm; 1 - 1e-3 on flow, where alpha_1 = 0)
--integrator  reference[:rtol=1e-12,atol=1e-12] (adaptive DOP853, the default) | euler | heun | rk4
--steps       steps of a fixed-step integrator (default 32), spaced by --spacing
              time-uniform (default) | time-quadratic | logsnr (needs sigma > 0 at t_min)
--divergence  exact (default) | hutchinson:probes=1,probe=rademacher|gaussian,seed=0
--prior       exact (the problem's p_T; default with a problem) | standard (N(0, sigma_T^2 I))
              | kdiffusion (k-diffusion log_likelihood: N(0, rho_T^2 I) on x/alpha, log p of
              x/alpha at t_min)

Writes one JSON: the settings, nfe, per point log_p (nats), bits/dim, the exact log p and the
error where a problem is known, and their means with standard errors.
Errors are one line on stderr, exit status 2, and no output file.";

#[derive(Parser)]
#[command(name = "likelihood", about = "log p by the PF-ODE change of variables", after_help = AFTER)]
struct Args {
    #[arg(long)]
    problem: Option<String>,
    #[arg(long)]
    net: Option<PathBuf>,
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long)]
    points: Option<PathBuf>,
    #[arg(long)]
    n: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    t_min: Option<f64>,
    #[arg(long)]
    t_max: Option<f64>,
    #[arg(long, default_value = "reference")]
    integrator: String,
    #[arg(long, default_value_t = 32)]
    steps: usize,
    #[arg(long, default_value = "time-uniform")]
    spacing: String,
    #[arg(long, default_value = "exact")]
    divergence: String,
    #[arg(long)]
    prior: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

fn run(args: &Args) -> Result<()> {
    let mut outputs = Outputs::new();
    let slot = outputs.declare("--out", &args.out)?;
    let loaded = args.net.as_ref().map(weights::load).transpose()?;
    let problem_name = args
        .problem
        .clone()
        .or_else(|| loaded.as_ref().and_then(|l| l.problem().map(String::from)));
    let mixture: Option<GaussianMixture> =
        problem_name.as_deref().map(problems::load).transpose()?;
    let oracle: &dyn Oracle = match (&loaded, &mixture) {
        (Some(l), _) => &l.net,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(Error::invalid("--problem", None, "give --problem or --net"));
        }
    };
    let sched_spec = args
        .schedule
        .clone()
        .or_else(|| loaded.as_ref().and_then(|l| l.schedule().map(String::from)))
        .unwrap_or_else(|| "vp-linear".into());
    let sched = schedule::parse(&sched_spec)?;
    let s = sched.as_ref();
    let t_min = args.t_min.unwrap_or(if loaded.is_some() {
        pfode::study::convergence::range(s).1
    } else {
        s.t_min()
    });
    let t_max = args.t_max.unwrap_or(pfode::study::convergence::range(s).0);
    for (k, t) in [("--t-min", t_min), ("--t-max", t_max)] {
        s.check_t(t)
            .map_err(|e| Error::invalid(k, None, e.to_string()))?;
    }
    if t_min >= t_max {
        return Err(Error::invalid(
            "--t-min",
            None,
            format!("t_min = {t_min} must be below t_max = {t_max}"),
        ));
    }
    let d = oracle.dim();
    let x = match (&args.points, args.n) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--n",
                None,
                "give --points or --n, not both",
            ));
        }
        (Some(path), None) => {
            let x = io::read_npy(path)?;
            if x.ncols() != d || x.nrows() == 0 {
                return Err(Error::invalid(
                    format!("--points {}", path.display()),
                    None,
                    format!(
                        "expected shape (N, {d}) with N >= 1, found {:?} (dimension mismatch)",
                        x.dim()
                    ),
                ));
            }
            x
        }
        (None, n) => {
            let m = mixture.as_ref().ok_or_else(|| {
                Error::invalid(
                    "--n",
                    None,
                    "drawing points needs a problem (--problem or the net's metadata)",
                )
            })?;
            let n = n.unwrap_or(1000);
            limits::elements("--n", "rows", n, d)?;
            m.sample_pt(n, &s.level(t_min), args.seed.unwrap_or(0))
        }
    };
    let integrator = Integrator::parse(&args.integrator)?;
    let times = match integrator {
        Integrator::Reference { .. } => vec![t_min, t_max],
        _ => {
            let g = Grid::parse(
                &format!(
                    "{}:steps={},t_start={t_max},t_end={t_min}",
                    args.spacing, args.steps
                ),
                s,
            )?;
            g.times.iter().rev().cloned().collect()
        }
    };
    let prior: Prior = match &args.prior {
        Some(p) => p.parse()?,
        None if mixture.is_some() => Prior::Exact,
        None => Prior::Standard,
    };
    let method = Method {
        integrator,
        divergence: Divergence::parse(&args.divergence)?,
        prior,
    };
    let l = log_likelihood(oracle, s, x.view(), &times, &method, mixture.as_ref())?;
    let bpd = l.bits_per_dim();
    let exact = mixture
        .as_ref()
        .map(|m| m.log_density(x.view(), &s.level(t_min)))
        .transpose()?;
    let lp = mean_se(&l.log_p.to_vec());
    let mut doc = json!({
        "kind": "likelihood",
        "provenance": pfode::study::Provenance::now(args.seed.unwrap_or(0)),
        "problem": problem_name,
        "net": args.net.as_ref().map(|p| p.display().to_string()),
        "schedule": s.spec(),
        "t_min": t_min,
        "t_max": t_max,
        "integrator": args.integrator,
        "steps": times.len() - 1,
        "times": times,
        "divergence": method.divergence.canonical(),
        "prior": method.prior.to_string(),
        "nfe": l.nfe,
        "n": x.nrows(),
        "mean_log_p": lp.value,
        "mean_log_p_se": lp.se,
        "mean_bits_per_dim": bpd.mean(),
        "log_p": l.log_p.to_vec(),
        "bits_per_dim": bpd.to_vec(),
    });
    if let Some(exact) = exact {
        let err = &l.log_p - &exact;
        let e = mean_se(&err.to_vec());
        doc["exact_log_p"] = json!(exact.to_vec());
        doc["mean_error"] = json!(e.value);
        doc["mean_error_se"] = json!(e.se);
        doc["max_abs_error"] = json!(err.iter().fold(0.0f64, |a, b| a.max(b.abs())));
    }
    outputs.set(slot, serde_json::to_vec_pretty(&doc).expect("json"));
    outputs.commit()
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
