//! What guided samplers produce, against exact laws: `guidance [--scales ..] [--samples N]
//! [--seed S] [--out FILE] [--shard i/n] [--resume]`. Defaults are the main study
//! (`Config::main`). See `guidance --help` and `pfode::study::guidance`.

use clap::Parser;
use pfode::study::guidance::{Config, GuidanceStudy};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults: Gaussian part on gauss2c (class A guided against class B, both single Gaussians):
schedules vp-linear,flow; methods cfg, interval (sigma in (0.28, 5.42]) and cfg++ (its lambda in
0.2..1); solvers ddim, dpm-solver++:order=2, unipc, heun, ddpm, euler-maruyama and
pc:predictor=ddim,step=sde at 5, 10, 20, 50 steps (cfg++: the solvers that implement it); the
exact output law (probe runs, probe noise for the stochastic samplers) against p(x | A), the
tilted law p(x | A)^s p(x | B)^(1 - s) and the guided ODE's own law (the reference solver).
Mixture part on ring2d and edm2_tree2d (class A): cfg, interval, autoguidance (guide: class A
with covariances x2), apg (eta 0, momentum -0.5, threshold 4), cfg-zero, classifier, cfg++;
dpm-solver++:order=2 with 32 logSNR steps, 2000 samples; class precision, NLL, off-support
fraction, MMD^2, sliced W2, entropy (Kozachenko-Leonenko, k = 4). Corrector part on gauss4:
predictors, predictor-corrector samplers and ald at 5..200 steps, W2 and KL of the exact law to
p_t against NFE. Scales 1, 1.5, 2, 3, 4, 8; seed 1. --resume, --shard and `merge` work as for
`convergence`. Errors: one line on stderr, exit 2.";

#[derive(Parser)]
#[command(name = "guidance", about = "What guided samplers produce, against exact laws", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    scales: Option<Vec<f64>>,
    #[arg(long, value_delimiter = ',')]
    mixtures: Option<Vec<String>>,
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
        scales: args.scales.unwrap_or(main.scales.clone()),
        mixtures: args.mixtures.unwrap_or(main.mixtures.clone()),
        samples: args.samples.unwrap_or(main.samples),
        seed: args.seed.unwrap_or(main.seed),
        ..main
    };
    pfode::study::exit_on_error(
        args.sweep
            .run(&GuidanceStudy, &config, config.seed)
            .map(|_| ()),
    );
}
