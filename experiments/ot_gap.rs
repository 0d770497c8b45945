//! The optimal-transport gap and straightness of the PF-ODE map:
//! `ot_gap [--problems ..] [--schedules ..] [--samples N] [--seed S] [--out FILE] [--shard i/n]`.
//! Defaults are the main study (`Config::main`). See `ot_gap --help` and `pfode::study::ot_gap`.

use clap::Parser;
use pfode::study::ot_gap::{Config, OtGap};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults (the main study): --problems gauss4,ring2d,aniso16,cross2d
--schedules vp-linear,vp-cosine,edm,flow --samples 1000 --seed 1 --segments 8 --paths 48
--jacobians 200 --replicates 4 --map-only edm2_tree2d (`--map-only ''` for none).

Writes one JSON document (kind \"ot_gap\"): per (problem, schedule) the cost of the flow's coupling
(x_T, x_0), the optimal assignment cost of the same point sets, their gap, the closed-form W2^2 for
single Gaussians, straightness and path-length excess, for 2-D problems a few trajectories, and the
OT certificate: the asymmetry of the map's Jacobian (Brenier) and a lower bound on the cost gap.
--resume, --shard and `merge` work as for `convergence`. Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "ot_gap", about = "Optimal-transport gap and straightness of the PF-ODE map", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    schedules: Option<Vec<String>>,
    /// Samples per (problem, schedule); at most 2000 (exact assignment).
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    reference: Option<String>,
    /// Quadrature segments (16 Gauss-Legendre nodes each) for the straightness integrals.
    #[arg(long)]
    segments: Option<usize>,
    /// Trajectories stored for 2-D problems (for the plots).
    #[arg(long)]
    paths: Option<usize>,
    /// Samples whose map Jacobian is computed (the OT certificate; 0 for none).
    #[arg(long)]
    jacobians: Option<usize>,
    /// Independent assignment replicates of the cost-gap lower bound.
    #[arg(long)]
    replicates: Option<usize>,
    /// Problems whose map is only certified (first schedule, --jacobians samples).
    #[arg(long, value_delimiter = ',')]
    map_only: Option<Vec<String>>,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn main() {
    let args: Args = pfode::study::cli_args();
    let main = Config::main();
    let config = Config {
        problems: args.problems.unwrap_or(main.problems),
        schedules: args.schedules.unwrap_or(main.schedules),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        reference: args.reference.unwrap_or(main.reference),
        segments: args.segments.unwrap_or(main.segments),
        paths: args.paths.unwrap_or(main.paths),
        jacobians: args.jacobians.unwrap_or(main.jacobians),
        replicates: args.replicates.unwrap_or(main.replicates),
        map_only: args
            .map_only
            .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect())
            .unwrap_or(main.map_only),
    };
    pfode::study::exit_on_error(args.sweep.run(&OtGap, &config, config.seed).map(|_| ()));
}
