//! The convergence study: `convergence [--problems ..] [--schedules ..] [--grids ..]
//! [--solver SPEC]... [--nfe ..] [--samples N] [--seed S] [--out FILE] [--shard i/n]`.
//! Defaults are the main study (`Config::main`). See `convergence --help` and
//! `pfode::study::convergence`.

use clap::Parser;
use pfode::study::convergence::{Config, Convergence};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults (the main study): --problems gauss4,ring2d,aniso16 --schedules vp-linear,vp-cosine,edm,flow
--grids logsnr,time-uniform,karras --nfe 5,6,8,10,12,15,20,25,35,50,75,100,200 --samples 256 --seed 1
and 13 solvers: euler, heun, rk4, ddim, dpm-solver:order=2|3,method=singlestep, dpm-solver++:order=2|3,
dpm-solver++:order=3,third_order=taylor, deis, ipndm, unipc, unipc:variant=bh2.

Writes one JSON document (kind \"convergence\"): provenance, config, per-group ground truth
(\"groups\"), one point per (problem, schedule, grid, solver, NFE) and the fitted orders
(\"summary\".\"fits\"). A run starts afresh and replaces --out (default results/convergence.json);
--resume keeps the points already there (same config only) and runs the rest. --shard i/n runs
every n-th unit; join the shard files with `merge`. Errors are one line on stderr and exit status 2.";

#[derive(Parser)]
#[command(name = "convergence", about = "Error against ground truth vs NFE for solvers x schedules x grids x problems", after_help = AFTER)]
struct Args {
    /// Comma-separated problems (built-in names or mixture JSON files).
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    /// Comma-separated schedules.
    #[arg(long, value_delimiter = ',')]
    schedules: Option<Vec<String>>,
    /// Comma-separated grid names (time-uniform, time-quadratic, logsnr, karras, exponential).
    #[arg(long, value_delimiter = ',')]
    grids: Option<Vec<String>>,
    /// A solver spec; repeat the flag for several.
    #[arg(long = "solver")]
    solvers: Vec<String>,
    /// Comma-separated target NFEs.
    #[arg(long, value_delimiter = ',')]
    nfe: Option<Vec<usize>>,
    /// Samples per (problem, schedule, grid).
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// The reference solver for mixtures (single Gaussians use the closed form).
    #[arg(long)]
    reference: Option<String>,
    /// Record wall times (the output then differs between runs).
    #[arg(long)]
    timing: bool,
    /// Skip the distributional metrics (sliced W2, MMD, empirical W2), e.g. for more than 2000
    /// samples.
    #[arg(long)]
    no_distribution: bool,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn main() {
    let args: Args = pfode::study::cli_args();
    let main = Config::main();
    let config = Config {
        problems: args.problems.unwrap_or(main.problems),
        schedules: args.schedules.unwrap_or(main.schedules),
        grids: args.grids.unwrap_or(main.grids),
        solvers: if args.solvers.is_empty() {
            main.solvers
        } else {
            args.solvers
        },
        nfe: args.nfe.unwrap_or(main.nfe),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        reference: args.reference.unwrap_or(main.reference),
        timing: args.timing,
        distribution: !args.no_distribution,
    };
    pfode::study::exit_on_error(
        args.sweep
            .run(&Convergence::default(), &config, config.seed)
            .map(|_| ()),
    );
}
