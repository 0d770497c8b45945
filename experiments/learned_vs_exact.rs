//! Network error vs discretization error: `learned_vs_exact [--nets A.safetensors,B.safetensors]
//! [--solvers ..] [--nfe ..] [--samples N] [--seed S] [--out FILE] [--shard i/n] [--resume]`.
//! Defaults are `Config::main`. See `learned_vs_exact --help` and `pfode::study::learned`.

use clap::Parser;
use pfode::study::learned::{Config, Learned};
use pfode::study::{self, SweepArgs};

const AFTER: &str = "\
Defaults: --nets results/models/ring2d.safetensors,results/models/aniso16.safetensors (each
network's metadata names its problem and schedule), --solvers euler heun ddim dpm-solver++
dpm-solver++:order=3 unipc, --nfe 4,5,6,8,10,12,15,20,25,35,50,75,100,200,400, --samples 2000,
--trajectory-steps 24, --reference-tol 1e-10, --seed 1; logsnr grids over the schedule's range.

Writes one JSON document (kind \"learned_vs_exact\"): per network the network error of the
sampling map (reference solutions with the network and with the exact oracle); the prediction
errors (x0, eps, velocity) along exact PF-ODE trajectories vs t; per solver and NFE the
discretization error with the exact oracle, with the network, and the network's total error;
and per solver the NFE from which discretization error stays below network error. `plot` and
`table` read it. Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "learned_vs_exact", about = "Split sampling error into network error and discretization error", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    nets: Option<Vec<String>>,
    #[arg(long, value_delimiter = ' ')]
    solvers: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    nfe: Option<Vec<usize>>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    trajectory_steps: Option<usize>,
    #[arg(long)]
    reference_tol: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn main() {
    let args: Args = study::cli_args();
    let mut config = Config::main();
    if let Some(v) = args.nets {
        config.nets = v;
    }
    if let Some(v) = args.solvers {
        config.solvers = v;
    }
    if let Some(v) = args.nfe {
        config.nfe = v;
    }
    if let Some(v) = args.samples {
        config.samples = v;
    }
    if let Some(v) = args.trajectory_steps {
        config.trajectory_steps = v;
    }
    if let Some(v) = args.reference_tol {
        config.reference_tol = v;
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    study::exit_on_error(
        args.sweep
            .run(&Learned::default(), &config, config.seed)
            .map(|_| ()),
    );
}
