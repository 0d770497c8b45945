//! The convention study: `conventions [--problems ..] [--betas ..] [--nfe ..] [--samples N]
//! [--seed S] [--out FILE] [--shard i/n] [--resume]`. Defaults are the committed study
//! (`Config::main`). Writes the results file, then its plots and tables beside it (DIR/plots,
//! DIR/tables for --out DIR/conventions.json). See `conventions --help` and
//! `pfode::study::conventions`.

use clap::Parser;
use pfode::study::conventions::{Config, Conventions};
use pfode::study::{plot, table, Study, SweepArgs};
use pfode::{Error, Result};

const AFTER: &str = "\
Defaults (the committed study): --problems gauss4,ring2d,aniso16 --betas scaled_linear,linear
--nfe 5,6,8,10,12,15,20,25,30,40,50 --samples 2000 --seed 1, and every convention of
pfode::study::conventions::Config::variants (timestep spacing for DPM-Solver++ 2M and DDIM,
final_sigmas_type, lower_order_final, Karras/exponential/beta sigmas and Lu's lambdas, Euler's
Karras sigmas, euler_at_final, diffusers vs the official DPM-Solver++ and UniPC,
rescale_betas_zero_snr), each replayed from its diffusers config on the exact mixture.

Writes one JSON document (kind \"conventions\", default results/conventions.json): per problem,
training schedule, convention choice and NFE the error against the exact PF-ODE solution (RMS,
median, max) and on gauss4 the W2 and KL of the output law to p_0; its summary holds each flip's
error ratio to its base. Then DIR/plots/conventions_*.png|svg and DIR/tables/conventions.md|tex.
--resume, --shard and `merge` work as for `convergence` (a shard writes no plots or tables).
Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "conventions", about = "What each diffusers convention choice costs, at equal NFE", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    betas: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    nfe: Option<Vec<usize>>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn run(args: &Args) -> Result<()> {
    let main = Config::main();
    let config = Config {
        problems: args.problems.clone().unwrap_or(main.problems.clone()),
        betas: args.betas.clone().unwrap_or(main.betas.clone()),
        nfe: args.nfe.clone().unwrap_or(main.nfe.clone()),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        ..main
    };
    let doc = args
        .sweep
        .run(&Conventions::default(), &config, config.seed)?;
    if args.sweep.shard.is_some() {
        return Ok(());
    }
    let out = args.sweep.out::<Conventions>();
    let dir = out.parent().unwrap_or(std::path::Path::new("."));
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    let mut files = plot::conventions(&doc, &plots)?;
    files.extend(table::write(
        &table::conventions(&doc),
        &doc.provenance,
        &dir.join("tables"),
        Conventions::KIND,
    )?);
    println!(
        "wrote {} ({} points), {} figure and table files",
        out.display(),
        doc.points.len(),
        files.len()
    );
    Ok(())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
