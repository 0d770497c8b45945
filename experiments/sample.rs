//! Runs one solver on one problem or network: `sample --problem NAME|FILE.json | --net
//! FILE.safetensors --schedule SPEC --grid SPEC --solver SPEC --init XT.npy --out X.npy
//! [--record RUN.json] [--device cpu|cuda-f32|cuda-f64]`. See `sample --help`.

use clap::{Parser, ValueEnum};
use pfode::gmm::GaussianMixture;
use pfode::grid::Grid;
use pfode::nn::{weights, Mlp};
use pfode::solver::{self, Env, Model, SOLVERS};
use pfode::{io, problems, schedule, Counted, Error, Oracle, Result};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

const GRAMMAR: &str = "\
Specs are NAME or NAME:key=value,key=value (every option has a default; an unknown option is an error).

--net       a network's safetensors file (pfode's MLP layout, see the README); --schedule then
            defaults to the schedule in its metadata
--device    cpu (default) | cuda-f32 | cuda-f64: the oracle on the GPU (binaries built with
            --features cuda; without a usable GPU, one line on stderr says why and the CPU runs)
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
--record    JSON with problem or net, schedule, grid times, solver and every option (defaults
            included), nfe, model_calls: [{t, alpha, sigma}] in evaluation order, and the device
            used (cpu after a fall-back) beside the one requested

Errors are one line on stderr, exit status 2, and no output file.";

#[derive(Parser)]
#[command(name = "sample", about = "Run one sampler on one problem or network", after_help = GRAMMAR)]
#[command(group(clap::ArgGroup::new("oracle").required(true).args(["problem", "net"])))]
struct Args {
    /// A built-in problem (ring2d, aniso16, gauss4, mix64) or a mixture JSON file.
    #[arg(long)]
    problem: Option<String>,
    /// A network's safetensors file.
    #[arg(long)]
    net: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[arg(long)]
    schedule: Option<String>,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    Cpu,
    CudaF32,
    CudaF64,
}

enum Source {
    Mixture(GaussianMixture),
    Net(Mlp),
}

/// The oracle on the requested device, or on the CPU when no GPU is usable; and the device used.
fn on_device(source: &Source, device: Device) -> Result<(Box<dyn Oracle + '_>, Device)> {
    let cpu = || -> Box<dyn Oracle + '_> {
        match source {
            Source::Mixture(m) => Box::new(m),
            Source::Net(n) => Box::new(n),
        }
    };
    if device == Device::Cpu {
        return Ok((cpu(), Device::Cpu));
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::invalid(
            "--device",
            None,
            "this binary was built without the `cuda` feature (cargo run --release --features cuda --bin sample -- ...)",
        ))
    }
    #[cfg(feature = "cuda")]
    {
        use pfode::cuda::{Gpu, Host};
        let Some(gpu) = Gpu::detect() else {
            return Ok((cpu(), Device::Cpu));
        };
        let host = match source {
            Source::Mixture(m) => Host::Mixture(m),
            Source::Net(n) => Host::Mlp(n),
        };
        let oracle = match device {
            Device::CudaF32 => host.to_gpu::<f32>(gpu)?,
            _ => host.to_gpu::<f64>(gpu)?,
        };
        Ok((oracle, device))
    }
}

fn run(args: &Args) -> Result<()> {
    let (source, name, trained_under) = match (&args.problem, &args.net) {
        (Some(problem), _) => (
            Source::Mixture(problems::load(problem)?),
            format!("problem '{problem}'"),
            None,
        ),
        (None, Some(path)) => {
            let loaded = weights::load(path)?;
            let trained_under = loaded.schedule().map(String::from);
            (
                Source::Net(loaded.net),
                format!("network '{}'", path.display()),
                trained_under,
            )
        }
        (None, None) => {
            return Err(Error::invalid(
                "--problem",
                None,
                "--problem or --net is required",
            ))
        }
    };
    let spec = match (&args.schedule, &trained_under) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(Error::invalid(
                "--schedule",
                None,
                format!("required: {name} records no schedule"),
            ))
        }
    };
    let schedule = schedule::parse(&spec)?;
    if let Some(trained) = &trained_under {
        let trained = schedule::parse(trained)?.spec();
        if trained != schedule.spec() {
            return Err(Error::invalid(
                "--schedule",
                None,
                format!(
                    "{name} was trained under '{trained}', not '{}'",
                    schedule.spec()
                ),
            ));
        }
    }
    let grid = Grid::parse(&args.grid, schedule.as_ref())?;
    let env = Env {
        schedule: schedule.as_ref(),
        mixture: match &source {
            Source::Mixture(m) => Some(m),
            Source::Net(_) => None,
        },
        noise_seed: args.noise_seed,
    };
    let mut built = solver::build(&args.solver, &env)?;
    let x0 = io::read_npy(&args.init)?;
    let (device_oracle, device) = on_device(&source, args.device)?;
    let dim = device_oracle.dim();
    if x0.ncols() != dim || x0.nrows() == 0 {
        return Err(Error::invalid(
            args.init.display().to_string(),
            None,
            format!(
                "expected shape (N, {dim}) with N >= 1 for {name}, found {:?} (dimension mismatch)",
                x0.dim()
            ),
        ));
    }
    let oracle = Counted::new(device_oracle.as_ref());
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
            "net": args.net.as_ref().map(|p| p.display().to_string()),
            "device": device.to_possible_value().map(|v| v.get_name().to_string()),
            "device_requested": args.device.to_possible_value().map(|v| v.get_name().to_string()),
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
