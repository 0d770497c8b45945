//! Figures from a results file: `plot RESULTS.json [--out-dir results/plots]`, PNG and SVG.
//! See `pfode::study::plot` for what each kind of file gives.

use clap::Parser;
use pfode::study::convergence::{Convergence, METRICS};
use pfode::study::{self, kind_of, learned::Learned, ot_gap::OtGap, plot, sde::Sde};
use pfode::{Error, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "plot",
    about = "Plot a results file (convergence: error vs NFE per solver with fitted orders, order bars; ot_gap: straightness and OT gap, trajectories over p_t; sde; learned_vs_exact; train: a training log's loss curve)"
)]
struct Args {
    results: PathBuf,
    #[arg(long, default_value = "results/plots")]
    out_dir: PathBuf,
    /// Convergence files: the metric plotted against NFE (err_rms, err_median, err_max, w2, kl,
    /// w2_std_prior, kl_std_prior, nll, sliced_w2, mmd2, w2_emp).
    #[arg(long, default_value = "err_rms")]
    metric: String,
}

fn run(args: &Args) -> Result<()> {
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
        "ot_gap" => {
            let doc = study::read::<OtGap>(&args.results)?;
            mkdir()?;
            plot::ot_gap(&doc, &args.out_dir)?
        }
        "sde" => {
            let doc = study::read::<Sde>(&args.results)?;
            mkdir()?;
            plot::sde(&doc, &args.out_dir)?
        }
        "learned_vs_exact" => {
            let doc = study::read::<Learned>(&args.results)?;
            mkdir()?;
            plot::learned(&doc, &args.out_dir)?
        }
        "train" => {
            let text = std::fs::read_to_string(&args.results).map_err(|e| Error::io(&args.results, e))?;
            let log: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::invalid(args.results.display().to_string(), None, format!("not JSON: {e}"))
            })?;
            mkdir()?;
            plot::train_log(&log, &args.results, &args.out_dir)?
        }
        other => {
            return Err(Error::invalid(
                args.results.display().to_string(),
                Some("kind".into()),
                format!("no plots for results of kind '{other}' (valid: convergence, ot_gap, sde, learned_vs_exact, train)"),
            ))
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
