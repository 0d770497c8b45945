//! The likelihood study: `likelihood_study [--problems ..] [--nets ..] [--samples N] [--seed S]
//! [--out FILE] [--shard i/n] [--resume]`. Defaults are the committed study (`Config::main`).
//! See `likelihood_study --help` and `pfode::study::likelihood`.

use clap::Parser;
use pfode::study::likelihood::{Config, LikelihoodStudy};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults (the committed study): --problems gauss4,ring2d,aniso16 and the nets
results/models/{ring2d,aniso16}.safetensors on vp-linear, 500 points, seed 1.

Writes one JSON document (kind \"likelihood\", default results/likelihood.json): per (problem,
model) the error of log p by the change of variables per integrator, steps and divergence
estimator (exact; Hutchinson at 1, 4, 16 probes) and prior; the density a sampler's discrete map
implies (its KL to the exact law); the continuous-time and DDPM ELBOs and their gaps.
--resume, --shard and `merge` work as for `convergence`. Errors: one line on stderr, exit status 2.";

#[derive(Parser)]
#[command(name = "likelihood_study", about = "Likelihood error per solver, divergence estimator and bound", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    /// Networks (safetensors); `--nets ''` for none.
    #[arg(long, value_delimiter = ',')]
    nets: Option<Vec<String>>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Monte Carlo replicates of the bounds.
    #[arg(long)]
    replicates: Option<usize>,
    #[command(flatten)]
    sweep: SweepArgs,
}

fn main() {
    let args: Args = pfode::study::cli_args();
    let main = Config::main();
    let config = Config {
        problems: args.problems.unwrap_or(main.problems.clone()),
        nets: args
            .nets
            .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect())
            .unwrap_or(main.nets.clone()),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        replicates: args.replicates.unwrap_or(main.replicates),
        ..main
    };
    pfode::study::exit_on_error(
        args.sweep
            .run(&LikelihoodStudy, &config, config.seed)
            .map(|_| ()),
    );
}
