//! The main study (the README's first command): the convergence study and the OT-gap study on
//! the built-in problems with their default configs, then every plot and table, all under
//! `results/` (or --out-dir). Starts afresh unless --resume. See `study --help`.

use clap::Parser;
use pfode::study::convergence::{self, Convergence};
use pfode::study::ot_gap::{self, OtGap};
use pfode::study::{plot, run, table};
use pfode::{io, problems, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "study",
    about = "The main study: convergence + ot_gap on the built-in problems, then plots and tables",
    after_help = "Writes DIR/problems/*.json (the built-in problems), DIR/convergence.json, DIR/ot_gap.json, DIR/plots/*.png|svg and DIR/tables/*.md|tex.\n\
                  The configs are those of `convergence` and `ot_gap` without options (seed 1).\n\
                  Errors: one line on stderr, exit status 2."
)]
struct Args {
    #[arg(long, default_value = "results")]
    out_dir: PathBuf,
    /// Keep the units already in the results files instead of starting afresh.
    #[arg(long)]
    resume: bool,
}

fn main_study(args: &Args) -> Result<()> {
    let dir = &args.out_dir;
    io::git_revision();
    problems::write_builtins(&dir.join("problems"), "cargo run --release --bin study")?;
    let conv_config = convergence::Config::main();
    let conv = run(
        &Convergence::default(),
        &conv_config,
        conv_config.seed,
        &dir.join("convergence.json"),
        None,
        args.resume,
    )?;
    let ot_config = ot_gap::Config::main();
    let ot = run(
        &OtGap,
        &ot_config,
        ot_config.seed,
        &dir.join("ot_gap.json"),
        None,
        args.resume,
    )?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| pfode::Error::io(&plots, e))?;
    let mut files = plot::convergence(&conv, &plots, "err_rms")?;
    files.extend(plot::ot_gap(&ot, &plots)?);
    let tables = dir.join("tables");
    for (kind, t, p) in [
        ("convergence", table::convergence(&conv), &conv.provenance),
        ("ot_gap", table::ot_gap(&ot), &ot.provenance),
    ] {
        files.extend(table::write(&t, p, &tables, kind)?);
    }
    println!(
        "wrote {} and {} ({} points, {} fits), {} figure and table files",
        dir.join("convergence.json").display(),
        dir.join("ot_gap.json").display(),
        conv.points.len(),
        conv.summary.fits.len(),
        files.len()
    );
    Ok(())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(main_study(&args));
}
