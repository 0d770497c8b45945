//! Distilled few-step flow maps against the exact map and against solvers:
//! `flow_maps [--problems ..] [--models DIR] [--samples N] [--seed S] [--out FILE] [--shard i/n]`.
//! Defaults are the committed study (`Config::main`). See `flow_maps --help` and
//! `pfode::study::flow_maps`.

use clap::Parser;
use pfode::study::flow_maps::{Config, FlowMaps};
use pfode::study::SweepArgs;

const AFTER: &str = "\
Defaults (the committed study): --problems gauss4,ring2d,aniso16 --schedule vp-linear
--levels karras:steps=16,zero=true --models results/models/flow_maps --methods direct,cd,ctm,pd,ct,scm,meanflow,shortcut,lsd,esd,psd
--solvers dpm-solver++,unipc,heun,ddim --calls 1,2,4,8 --samples 4000 --heat-rows 500 --seed 1.
The models are made by `distill` (the commands are in the README); a method may carry a variant
label, method-variant, naming the model {problem}_method-variant.safetensors (ablations).

Writes one JSON document (kind \"flow_maps\"): per problem the levels and the sampling floor of
every quality number; per map the few-step frontier (NLL, entropy gap, MMD^2, sliced W2, the
fitted-Gaussian W2 on gauss4, at each call count), the (s, t) error heat map, the boundary error,
the semigroup defect and the training cost; a summary with the best learned map and solver per
call count and each method's ratio to the direct-regression yardstick. --resume, --shard and
`merge` work as for `convergence`; `plot` and `table` read it. Errors: one line on stderr, exit
status 2.";

#[derive(Parser)]
#[command(name = "flow_maps", about = "Few-step flow maps against the exact map and solvers", after_help = AFTER)]
struct Args {
    #[arg(long, value_delimiter = ',')]
    problems: Option<Vec<String>>,
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long)]
    levels: Option<String>,
    #[arg(long)]
    models: Option<String>,
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    solvers: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    calls: Option<Vec<usize>>,
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    heat_rows: Option<usize>,
    #[arg(long)]
    reference_rtol: Option<f64>,
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
        schedule: args.schedule.unwrap_or(main.schedule),
        levels: args.levels.unwrap_or(main.levels),
        models: args.models.unwrap_or(main.models),
        methods: args.methods.unwrap_or(main.methods),
        solvers: args.solvers.unwrap_or(main.solvers),
        calls: args.calls.unwrap_or(main.calls),
        samples: args.samples.unwrap_or(main.samples),
        heat_rows: args.heat_rows.unwrap_or(main.heat_rows),
        reference_rtol: args.reference_rtol.unwrap_or(main.reference_rtol),
        seed: args.seed.unwrap_or(main.seed),
    };
    pfode::study::exit_on_error(
        args.sweep
            .run(&FlowMaps::default(), &config, config.seed)
            .map(|_| ()),
    );
}
