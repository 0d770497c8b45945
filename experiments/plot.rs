//! Figures from a results file: `plot RESULTS.json [--out-dir results/plots]`, PNG and SVG;
//! or scatter plots of samples: `plot X.npy [--problem P [--t T --schedule S]] [--dims 0,1,..]`.
//! See `pfode::study::plot` for what each kind of file gives.

use clap::Parser;
use pfode::study::convergence::{Convergence, METRICS};
use pfode::study::plot::Backdrop;
use pfode::study::{self, kind_of, plot};
use pfode::{problems, schedule, Error, Oracle, Result};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "plot",
    about = "Plot a results file (convergence: error vs NFE per solver with fitted orders, order bars; ot_gap: straightness and OT gap, trajectories over p_t; sde; learned_vs_exact; train: a training log's loss curve), or samples in an (N, d) .npy as scatter plots",
    after_help = "A .npy of samples gives OUT_DIR/samples_STEM.png|svg: the plane for d = 2, pairs of the\n\
                  --dims coordinates above (default the first 4). With --problem, each panel shades the\n\
                  exact density of that pair's marginal: of p_0, or of p_t at --t under --schedule.\n\
                  Errors: one line on stderr, exit status 2."
)]
struct Args {
    /// A results JSON file, or an (N, d) float64 .npy of samples.
    results: PathBuf,
    #[arg(long, default_value = "results/plots")]
    out_dir: PathBuf,
    /// Convergence files: the metric plotted against NFE (err_rms, err_median, err_max, w2, kl,
    /// w2_std_prior, kl_std_prior, nll, sliced_w2, mmd2, w2_emp).
    #[arg(long, default_value = "err_rms")]
    metric: String,
    /// Samples: shade the exact density of this problem (a built-in name or a mixture file).
    #[arg(long)]
    problem: Option<String>,
    /// Samples: the density of p_t at this time (default: p_0).
    #[arg(long)]
    t: Option<f64>,
    /// Samples: the schedule of --t.
    #[arg(long, default_value = "vp-linear")]
    schedule: String,
    /// Samples: the coordinates whose pairs are plotted (default: the first min(d, 4)).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<usize>>,
}

fn is_npy(path: &Path) -> bool {
    let mut magic = [0u8; 6];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x93NUMPY"
}

fn samples(args: &Args) -> Result<Vec<PathBuf>> {
    let x = pfode::io::read_npy(&args.results)?;
    let mixture = args.problem.as_deref().map(problems::load).transpose()?;
    let backdrop = match &mixture {
        None => None,
        Some(m) => {
            if m.dim() != x.ncols() {
                return Err(Error::invalid(
                    args.results.display().to_string(),
                    None,
                    format!(
                        "has d = {} but --problem has d = {} (dimension mismatch)",
                        x.ncols(),
                        m.dim()
                    ),
                ));
            }
            let (alpha, sigma, label) = match args.t {
                None => (
                    1.0,
                    0.0,
                    format!("{} p_0", args.problem.as_deref().unwrap_or("")),
                ),
                Some(t) => {
                    let s = schedule::parse(&args.schedule)?;
                    s.check_t(t)
                        .map_err(|e| Error::Domain(format!("--t: {e}")))?;
                    let at = s.level(t);
                    (
                        at.alpha,
                        at.sigma,
                        format!(
                            "{} p_t, t = {t} ({})",
                            args.problem.as_deref().unwrap_or(""),
                            s.spec()
                        ),
                    )
                }
            };
            Some(Backdrop {
                mixture: m,
                alpha,
                sigma,
                label,
            })
        }
    };
    let dims = args
        .dims
        .clone()
        .unwrap_or_else(|| (0..x.ncols().min(4)).collect());
    if x.ncols() < 2 {
        return Err(Error::invalid(
            args.results.display().to_string(),
            None,
            "a scatter plot needs d >= 2 columns",
        ));
    }
    if let Some(&i) = dims.iter().find(|&&i| i >= x.ncols()) {
        return Err(Error::Domain(format!(
            "--dims: coordinate {i} is not below d = {}",
            x.ncols()
        )));
    }
    if dims.len() < 2 {
        return Err(Error::Domain(
            "--dims: need at least two coordinates".into(),
        ));
    }
    std::fs::create_dir_all(&args.out_dir).map_err(|e| Error::io(&args.out_dir, e))?;
    let name = args
        .results
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = args.out_dir.join(format!("samples_{name}"));
    plot::samples(
        x.view(),
        &args.results.display().to_string(),
        backdrop.as_ref(),
        &dims,
        &stem,
    )
}

fn run(args: &Args) -> Result<()> {
    if is_npy(&args.results) {
        for f in samples(args)? {
            println!("{}", f.display());
        }
        return Ok(());
    }
    if args.problem.is_some() || args.t.is_some() || args.dims.is_some() {
        return Err(Error::Domain(
            "--problem, --t and --dims apply to a samples .npy, not to a results file".into(),
        ));
    }
    let mkdir = || std::fs::create_dir_all(&args.out_dir).map_err(|e| Error::io(&args.out_dir, e));
    let files = match kind_of(&args.results)?.as_str() {
        "convergence" => {
            let doc = study::read::<Convergence>(&args.results)?;
            if !METRICS.contains(&args.metric.as_str()) {
                return Err(Error::Domain(format!(
                    "--metric: unknown metric '{}' (valid: {})",
                    args.metric,
                    METRICS.join(", ")
                )));
            }
            mkdir()?;
            plot::convergence(&doc, &args.out_dir, &args.metric)?
        }
        "train" | "distill" => {
            let text =
                std::fs::read_to_string(&args.results).map_err(|e| Error::io(&args.results, e))?;
            let log: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::invalid(
                    args.results.display().to_string(),
                    None,
                    format!("not JSON: {e}"),
                )
            })?;
            mkdir()?;
            plot::train_log(&log, &args.results, &args.out_dir)?
        }
        _ => {
            let kind = study::kind(&args.results)?;
            mkdir()?;
            (kind.plot)(&args.results, &args.out_dir)?
        }
    };
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
