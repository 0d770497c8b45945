//! The stochastic-sampler study: `sde [--problems ..] [--samplers ..] [--odes ..] [--steps ..]
//! [--paths N] [--samples N] [--seed S] [--out FILE] [--shard i/n] [--resume]`.
//! Defaults are `Config::main`. See `sde --help` and `pfode::study::sde`.

use clap::Parser;
use pfode::study::sde::{Config, Sde};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults: --problems gauss4,ring2d,aniso16 on vp-linear from t = 1 to 1e-3 (logsnr grids),
--samplers: the ten of pfode::study::sde::SAMPLERS, --odes euler,heun,dpm-solver++,unipc,
--steps 8,16,32,64,128,256 --refine 16 --paths 400 --samples 20000 --seed 1; Fokker-Planck on
gauss4 and ring2d at t = 0.5, 0.2, 0.05 with 20000 samples and 512 steps.

Writes one JSON document (kind \"sde\"): per (problem, solver, steps) the NFE, the strong error
against the same solver on a 16x finer grid and the same Brownian path, the weak errors of the
mean and the second moments (exact on gauss4, with KL and W2 of the output law; Monte Carlo with
its noise floor otherwise), the Fokker-Planck points, and the fitted orders. `plot` and `table`
read it. --resume, --shard and `merge` work as for `convergence`.
Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "sde", about = "Strong and weak errors of stochastic samplers, ODE vs SDE, Fokker-Planck consistency", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    /// Solver specs; a `,` inside a spec's options is not supported here (use `;`-free specs).
    #[arg(long, value_delimiter = ' ')]
    samplers: Option<Vec<String>>,
    #[arg(long, value_delimiter = ' ')]
    odes: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<usize>>,
    #[arg(long)]
    refine: Option<usize>,
    #[arg(long)]
    paths: Option<usize>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn main() {
    let args: Args = pfode::study::cli_args();
    let main = Config::main();
    let config = Config {
        problems: args.problems.unwrap_or(main.problems),
        samplers: args.samplers.unwrap_or(main.samplers),
        odes: args.odes.unwrap_or(main.odes),
        steps: args.steps.unwrap_or(main.steps),
        refine: args.refine.unwrap_or(main.refine),
        paths: args.paths.unwrap_or(main.paths),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        ..main
    };
    pfode::study::exit_on_error(args.sweep.run(&Sde, &config, config.seed).map(|_| ()));
}
