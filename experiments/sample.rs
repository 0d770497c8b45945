//! Runs one solver on one problem: `sample --problem NAME|FILE.json --schedule SPEC --grid SPEC
//! --solver SPEC --init XT.npy --out X.npy [--record RUN.json]`. See `sample --help`.

use clap::Parser;
use pfode::grid::Grid;
use pfode::solver::{self, Env, Model, SOLVERS};
use pfode::{io, problems, schedule, Counted, Error, Oracle, Result};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

const GRAMMAR: &str = "\
Specs are NAME or NAME:key=value,key=value (every option has a default; an unknown option is an error).

--schedule  vp-linear[:beta0=0.1,beta1=20] | vp-cosine[:s=0.008,t_max=0.9946]
            | vp-discrete[:betas=linear|scaled_linear,beta_start,beta_end,steps=1000]
            | ve[:sigma_min=0.01,sigma_max=50] | edm | flow
--grid      logsnr:steps=N,t_start=T,t_end=e | time-uniform:... | time-quadratic:...
            | karras:steps=N,sigma_min=0.002,sigma_max=80,rho=7[,zero=true]
            | exponential:steps=N,sigma_min=..,sigma_max=..[,zero=true] | file:TIMES.json
            Defaults: steps=20, t_start = the schedule's end (80 for edm), t_end = 1e-3 (0.002 for
            edm, 1/N for vp-discrete). Sigma grids use sigma/alpha on VP schedules.
--solver    NAME[:key=value,...], e.g. dpm-solver++:order=3,method=multistep,type=dpmsolver,lower_order_final=false
--init      an (N, d) float64 .npy: x at the grid's first time
--out       the (N, d) float64 .npy at the grid's last time
--record    JSON with problem, schedule, grid times, solver and every option (defaults included),
            nfe, and model_calls: [{t, alpha, sigma}] in evaluation order

Errors are one line on stderr, exit status 2, and no output file.";

#[derive(Parser)]
#[command(name = "sample", about = "Run one deterministic sampler on one problem", after_help = GRAMMAR)]
struct Args {
    /// A built-in problem (ring2d, aniso16, gauss4, mix64) or a mixture JSON file.
    #[arg(long)]
    problem: String,
    #[arg(long)]
    schedule: String,
    #[arg(long)]
    grid: String,
    #[arg(long)]
    solver: String,
    #[arg(long)]
    init: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    record: Option<PathBuf>,
    /// The seed of the Brownian paths of stochastic samplers (one path per row of --init).
    #[arg(long, default_value_t = 0)]
    noise_seed: u64,
}

fn solver_list() -> String {
    SOLVERS
        .iter()
        .map(|e| format!("  {:<14} {}", e.name, e.summary))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(args: &Args) -> Result<()> {
    let mixture = problems::load(&args.problem)?;
    let schedule = schedule::parse(&args.schedule)?;
    let grid = Grid::parse(&args.grid, schedule.as_ref())?;
    let env = Env {
        schedule: schedule.as_ref(),
        mixture: Some(&mixture),
        noise_seed: args.noise_seed,
    };
    let mut built = solver::build(&args.solver, &env)?;
    let x0 = io::read_npy(&args.init)?;
    if x0.ncols() != mixture.dim() || x0.nrows() == 0 {
        return Err(Error::invalid(
            args.init.display().to_string(),
            None,
            format!("expected shape (N, {}) with N >= 1 for problem '{}', found {:?} (dimension mismatch)", mixture.dim(), args.problem, x0.dim()),
        ));
    }
    let oracle = Counted::new(&mixture);
    let model = Model::new(&oracle, schedule.as_ref());
    let x = solver::integrate(built.solver.as_mut(), &model, &grid, x0.view())?;
    let record = args.record.as_ref().map(|_| {
        let options: Map<String, Value> = built
            .options
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let calls: Vec<Value> = oracle
            .calls()
            .iter()
            .map(|l| json!({"t": l.t, "alpha": l.alpha, "sigma": l.sigma}))
            .collect();
        json!({
            "problem": args.problem,
            "schedule": schedule.spec(),
            "grid": grid.spec(),
            "times": grid.times,
            "solver": built.spec,
            "noise_seed": args.noise_seed,
            "solver_name": built.spec.split(':').next().unwrap_or(""),
            "options": options,
            "order": built.solver.order(),
            "nfe": oracle.nfe(),
            "model_calls": calls,
            "init": args.init.display().to_string(),
            "out": args.out.display().to_string(),
            "n": x.nrows(),
            "pfode_version": env!("CARGO_PKG_VERSION"),
            "git_revision": io::git_revision(),
        })
    });
    io::write_npy(&args.out, &x)?;
    if let (Some(path), Some(rec)) = (&args.record, record) {
        let text = serde_json::to_string_pretty(&rec).expect("json");
        if let Err(e) = io::write_atomic(path, text.as_bytes()) {
            let _ = std::fs::remove_file(&args.out);
            return Err(e);
        }
    }
    Ok(())
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(2);
        }
        Err(e) => {
            let _ = e.print();
            if std::env::args().any(|a| a == "--help") {
                println!("\nSolvers:\n{}", solver_list());
            }
            return;
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
