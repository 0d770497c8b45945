//! Runs one solver on one problem or network: `sample --problem NAME|FILE.json | --net
//! FILE.safetensors [--schedule SPEC] --grid SPEC --solver SPEC --init XT.npy|prior|standard
//! [--n N --seed S] [--class LABEL [--guidance SPEC]] --out X.npy [--record RUN.json]
//! [--device cpu|cuda-f32|cuda-f64]`, or replays a diffusers scheduler: `sample
//! --scheduler-config scheduler_config.json --steps N [--scheduler-class NAME] [--eta E]
//! [--explain] ...`. See `sample --help`.

use clap::{CommandFactory, Parser, ValueEnum};
use pfode::diffusers::{self, Scheduler};
use pfode::flow_map::{self, net::FlowNet, FlowMap};
use pfode::gmm::GaussianMixture;
use pfode::grid::Grid;
use pfode::guidance::Guidance;
use pfode::io::Outputs;
use pfode::ndarray::Array2;
use pfode::nn::{weights, Mlp};
use pfode::solver::sde::Brownian;
use pfode::solver::{self, Env, Model, SOLVERS};
use pfode::{io, limits, problems, schedule, Counted, Error, NoiseLevel, Oracle, Result};
use serde_json::{json, Map, Value};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

const GRAMMAR: &str = "\
Specs are NAME or NAME:key=value,key=value (every option has a default; an unknown option is an error).

--flow-map  a flow map's safetensors file (`distill`): x <- Psi(x, t_i, t_(i+1)) along --grid, one
            call per step (no --solver); --grid levels[:steps=K] is every N/K-th of the map's
            training levels; --gamma G is CTM's gamma-sampling (1 = consistency multistep, fresh
            noise seeded by --noise-seed)
--net       a network's safetensors file (pfode's MLP layout, see the README); --schedule then
            defaults to the schedule in its metadata
--device    cpu (default) | cuda-f32 | cuda-f64: the oracle on the GPU (binaries built with
            --features cuda; without a usable GPU, one line on stderr says why and the CPU runs)
--schedule  default vp-linear for --problem, the metadata's schedule for --net:
            vp-linear[:beta0=0.1,beta1=20] | vp-cosine[:s=0.008,t_max=0.9946]
            | vp-discrete[:betas=linear|scaled_linear,beta_start,beta_end,steps=1000]
            | ve[:sigma_min=0.01,sigma_max=50] | edm | flow
--grid      logsnr:steps=N,t_start=T,t_end=e | time-uniform:... | time-quadratic:...
            | karras:steps=N,sigma_min=0.002,sigma_max=80,rho=7[,zero=true]
            | exponential:steps=N,sigma_min=..,sigma_max=..[,zero=true] | file:TIMES.json
            Defaults: steps=20, t_start = the schedule's end (80 for edm), t_end = 1e-3 (0.002 for
            edm, 1/N for vp-discrete). Sigma grids use sigma/alpha on VP schedules.
--class     a class of the problem's labels: sample p(x | LABEL), the sub-mixture of that class
--guidance  (needs --class) steer toward the class with a guide (pfode::guidance):
            cfg:scale=2,guide=uncond|LABEL|FILE[,space=eps|x0|score|v|velocity]
            | interval:scale=2,sigma_lo=0.28,sigma_hi=5.42 (EDM sigma, CFG for lo < sigma <= hi)
            | autoguidance:scale=2,guide=FILE (a weaker model of the same class)
            | apg:scale=2,eta=0,momentum=0,threshold=0 (x0 space)
            | cfg-zero:scale=2,zero_init=1 (velocity space)
            | classifier:scale=2 (the exact grad ln p_t(c | x) added to the unconditional model)
            scale = 1 is no guidance (s = 1 + w of Ho & Salimans); every CFG-family rule takes a
            window sigma_lo/sigma_hi or diffusers' start/stop fractions of the steps.
--solver    NAME[:key=value,...], e.g. dpm-solver++:order=3,method=multistep,type=dpmsolver,lower_order_final=false
--init      x at the grid's first time T: an (N, d) float64 .npy file; or `prior`, N = --n
            draws (seed --seed) of the exact marginal p_T of the problem (of a network: of the
            problem in its metadata); or `standard`, N draws of N(0, sigma_T^2 I) (the usual
            prior of a diffusion sampler). A file literally named prior is ./prior.
--out       the (N, d) float64 .npy at the grid's last time (on a terminal, one line on stderr
            gives the NFE, the wall time and this path)
--record    JSON with the command line, problem or net, schedule, grid times, solver and every
            option (defaults included), nfe, model_calls: [{t, alpha, sigma}] in evaluation order, the init (a file,
            or prior/standard with n and seed), and the device used (cpu after a fall-back)
            beside the one requested; with --class/--guidance the class, the guidance spec with
            every option and its counts (evaluations, guided ones, oracle calls: two per guided
            evaluation); --out and --record must be distinct files

--scheduler-config  a diffusers scheduler_config.json (with --steps N instead of --schedule, --grid,
            --solver): the pipeline loop of that scheduler, replayed in float64 (pfode::diffusers).
            --init is the pipeline's unit-normal latents (a file, `standard`: seeded N(0, I), or
            `prior`: exact draws of p_T at the first sigma, divided by init_noise_sigma); the
            output is the scheduler's final sample; --record adds the timesteps, sigmas and
            model_calls [{timestep, t, alpha, sigma}]. --scheduler-class NAME loads the file into
            another class (diffusers' from_config); --eta is DDIMScheduler's; --noise-seed seeds
            the stochastic classes' Brownian paths. --explain prints the pfode equivalent
            (schedule, grid, solver) when one exists, the model calls whose level is not the
            scheduler's own, and the differences from the official implementation, and exits.
            Classes: DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
            DPMSolverSinglestepScheduler, DEISMultistepScheduler, UniPCMultistepScheduler,
            HeunDiscreteScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
            LMSDiscreteScheduler.

Errors are one line on stderr, exit status 2, and no output file is written or changed.";

#[derive(Parser)]
#[command(name = "sample", about = "Run one sampler on one problem or network")]
#[command(group(clap::ArgGroup::new("oracle").args(["problem", "net", "flow_map"])))]
struct Args {
    /// A built-in problem (ring2d, aniso16, gauss4, mix64, gauss2c, edm2_tree2d) or a mixture
    /// JSON file.
    #[arg(long)]
    problem: Option<String>,
    /// A network's safetensors file.
    #[arg(long)]
    net: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// The schedule (default: vp-linear with --problem, the network's own with --net).
    #[arg(long)]
    schedule: Option<String>,
    /// A flow map's safetensors file (`distill`): sample with one call per grid step.
    #[arg(long)]
    flow_map: Option<PathBuf>,
    /// CTM's gamma of flow-map sampling: 0 deterministic, 1 consistency multistep.
    #[arg(long, default_value_t = 0.0)]
    gamma: f64,
    #[arg(long)]
    grid: Option<String>,
    #[arg(long)]
    solver: Option<String>,
    /// A diffusers scheduler_config.json: replay that scheduler (with --steps, instead of
    /// --schedule, --grid and --solver).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// The number of inference steps of --scheduler-config.
    #[arg(long)]
    steps: Option<usize>,
    /// The scheduler class, replacing the file's _class_name (diffusers' Class.from_config).
    #[arg(long)]
    scheduler_class: Option<String>,
    /// DDIMScheduler's eta (a pipeline argument).
    #[arg(long)]
    eta: Option<f64>,
    /// With --scheduler-config: print the scheduler in pfode's terms (equivalent schedule, grid
    /// and solver; differences from the official implementation) and exit.
    #[arg(long)]
    explain: bool,
    /// An (N, d) .npy file, `prior` (exact p_T) or `standard` (N(0, sigma_T^2 I)).
    #[arg(long)]
    init: Option<String>,
    /// Rows drawn by --init prior|standard.
    #[arg(long)]
    n: Option<usize>,
    /// Seed of the --init prior|standard draws.
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    record: Option<PathBuf>,
    /// The seed of the Brownian paths of stochastic samplers (one path per row of --init).
    #[arg(long, default_value_t = 0)]
    noise_seed: u64,
    /// Sample the class LABEL of the problem's labels.
    #[arg(long)]
    class: Option<String>,
    /// A guidance spec (needs --class).
    #[arg(long)]
    guidance: Option<String>,
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

/// How x_T is made.
enum Init {
    File(PathBuf),
    Prior { n: usize, seed: u64 },
    Standard { n: usize, seed: u64 },
}

impl Init {
    fn parse(args: &Args) -> Result<Init> {
        let n = args.n.unwrap_or(1000);
        let seed = args.seed.unwrap_or(0);
        let Some(text) = args.init.as_deref() else {
            return Err(Error::invalid(
                "--init",
                None,
                "required: an (N, d) .npy file, prior or standard",
            ));
        };
        match text {
            "prior" => Ok(Init::Prior { n, seed }),
            "standard" => Ok(Init::Standard { n, seed }),
            path if args.n.is_none() && args.seed.is_none() => Ok(Init::File(path.into())),
            _ => Err(Error::Domain(
                "--n and --seed apply to --init prior|standard, not to an --init file".into(),
            )),
        }
    }

    fn record(&self) -> Value {
        match self {
            Init::File(p) => json!(p.display().to_string()),
            Init::Prior { n, seed } => json!({"kind": "prior", "n": n, "seed": seed}),
            Init::Standard { n, seed } => json!({"kind": "standard", "n": n, "seed": seed}),
        }
    }
}

/// x at time `t`: the --init file, or draws of p_t or of N(0, sigma_t^2 I).
fn initial(
    init: &Init,
    problem: Option<&GaussianMixture>,
    name: &str,
    dim: usize,
    at: &NoiseLevel,
) -> Result<Array2<f64>> {
    let x = match init {
        Init::File(path) => io::read_npy(path)?,
        Init::Prior { n, seed } => {
            let mixture = problem.ok_or_else(|| {
                Error::invalid(
                    "--init",
                    None,
                    format!("prior: {name} records no problem whose p_T to draw; use --init standard or a file"),
                )
            })?;
            limits::elements("--n", "rows", *n, dim)?;
            mixture.sample_pt(*n, at, *seed)
        }
        Init::Standard { n, seed } => {
            limits::elements("--n", "rows", *n, dim)?;
            pfode::rng::standard_normal(*n, dim, *seed, 0) * at.sigma
        }
    };
    if x.ncols() != dim || x.nrows() == 0 {
        let source = match init {
            Init::File(path) => format!("--init {}", path.display()),
            _ => "--init".into(),
        };
        return Err(Error::invalid(
            source,
            None,
            format!(
                "expected shape (N, {dim}) with N >= 1 for {name}, found {:?} (dimension mismatch)",
                x.dim()
            ),
        ));
    }
    Ok(x)
}

fn run(args: &Args) -> Result<()> {
    if let Some(path) = &args.scheduler_config {
        return run_scheduler(args, path);
    }
    for (flag, given) in [
        ("--steps", args.steps.is_some()),
        ("--scheduler-class", args.scheduler_class.is_some()),
        ("--eta", args.eta.is_some()),
        ("--explain", args.explain),
    ] {
        if given {
            return Err(Error::invalid(flag, None, "applies to --scheduler-config"));
        }
    }
    let (out, mut outputs, out_slot, record_slot) = declare(args)?;
    let init = Init::parse(args)?;
    if let Some(path) = &args.flow_map {
        return run_flow_map(args, path, &init, outputs, out_slot, record_slot);
    }
    let Some(solver_spec) = &args.solver else {
        return Err(Error::invalid(
            "--solver",
            None,
            "required with --problem or --net (or --scheduler-config)",
        ));
    };
    let (source, name, trained_under, problem) = match (&args.problem, &args.net) {
        (Some(problem), _) => (
            Source::Mixture(problems::load(problem)?),
            format!("problem '{problem}'"),
            None,
            None,
        ),
        (None, Some(path)) => {
            let loaded = weights::load(path)?;
            let trained_under = loaded.schedule().map(String::from);
            let problem = match (&init, loaded.problem()) {
                (Init::Prior { .. }, Some(p)) => Some(problems::load(p).map_err(|e| {
                    Error::invalid(
                        path.display().to_string(),
                        Some("__metadata__.problem".into()),
                        e.to_string(),
                    )
                })?),
                _ => None,
            };
            (
                Source::Net(loaded.net),
                format!("network '{}'", path.display()),
                trained_under,
                problem,
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
    if args.class.is_some() && args.net.is_some() {
        return Err(Error::invalid(
            "--class",
            None,
            "needs --problem (a network has no class input)",
        ));
    }
    if args.guidance.is_some() && args.class.is_none() {
        return Err(Error::invalid(
            "--guidance",
            None,
            "needs --class LABEL, the class to guide toward",
        ));
    }
    let guidance = args.guidance.as_deref().map(Guidance::parse).transpose()?;
    let (source, full) = match (source, &args.class) {
        (Source::Mixture(m), Some(c)) => {
            let cond = m
                .conditional(c)
                .map_err(|e| Error::invalid("--class", None, e.to_string()))?;
            (Source::Mixture(cond), Some(m))
        }
        (s, _) => (s, None),
    };
    let spec = match (&args.schedule, &trained_under) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) if args.problem.is_some() => "vp-linear".into(),
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
    let grid = Grid::parse(grid_arg(args)?, schedule.as_ref())?;
    let mixture = match &source {
        Source::Mixture(m) => Some(m),
        Source::Net(_) => problem.as_ref(),
    };
    let env = Env {
        schedule: schedule.as_ref(),
        mixture: match &source {
            Source::Mixture(m) if guidance.is_none() => Some(m),
            _ => None,
        },
        noise_seed: args.noise_seed,
    };
    let mut built = solver::build(solver_spec, &env)?;
    let guided = match (&guidance, &full, &args.class) {
        (Some(g), Some(m), Some(c)) => Some(g.build(m, c, Some(&grid.times))?),
        _ => None,
    };
    let (device_oracle, device) = match &guided {
        Some(g) if args.device == Device::Cpu => (Box::new(g) as Box<dyn Oracle>, Device::Cpu),
        Some(_) => {
            return Err(Error::invalid(
                "--device",
                None,
                "guided sampling runs on the CPU (--device cpu)",
            ))
        }
        None => on_device(&source, args.device)?,
    };
    let dim = device_oracle.dim();
    let x0 = initial(&init, mixture, &name, dim, &schedule.level(grid.times[0]))?;
    let oracle = Counted::new(device_oracle.as_ref());
    let model = Model::new(&oracle, schedule.as_ref());
    let clock = Instant::now();
    let x = solver::integrate(built.solver.as_mut(), &model, &grid, x0.view())?;
    let wall = clock.elapsed().as_secs_f64();
    if let Some(slot) = record_slot {
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
        let record = json!({
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
            "init": init.record(),
            "class": args.class,
            "guidance": guidance.as_ref().map(|g| g.canonical.clone()),
            "guidance_options": guidance.as_ref().map(|g| {
                g.options
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect::<Map<String, Value>>()
            }),
            "guidance_counts": guided.as_ref().map(|g| g.counts()),
            "out": out.display().to_string(),
            "n": x.nrows(),
            "pfode_version": env!("CARGO_PKG_VERSION"),
            "git_revision": io::git_revision(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        outputs.set(slot, serde_json::to_vec_pretty(&record).expect("json"));
    }
    outputs.set(out_slot, io::npy_bytes(&x)?);
    outputs.commit()?;
    report(&x, out, oracle.nfe(), wall);
    Ok(())
}

/// The output files, declared together: `--out` (required) and `--record`.
fn declare(args: &Args) -> Result<(&PathBuf, Outputs, io::Slot, Option<io::Slot>)> {
    let Some(out) = &args.out else {
        return Err(Error::invalid("--out", None, "required"));
    };
    let mut outputs = Outputs::new();
    let out_slot = outputs.declare("--out", out)?;
    let record_slot = args
        .record
        .as_ref()
        .map(|p| outputs.declare("--record", p))
        .transpose()?;
    Ok((out, outputs, out_slot, record_slot))
}

/// On a terminal, one line on stderr: the shape, the output, the NFE and the wall time.
fn report(x: &Array2<f64>, out: &std::path::Path, nfe: usize, wall: f64) {
    if std::io::stderr().is_terminal() {
        eprintln!(
            "sample: {} x {} -> {} (NFE {nfe}, {wall:.3} s)",
            x.nrows(),
            x.ncols(),
            out.display()
        );
    }
}

fn grid_arg(args: &Args) -> Result<&str> {
    args.grid
        .as_deref()
        .ok_or_else(|| Error::invalid("--grid", None, "required (or --scheduler-config)"))
}

/// `--scheduler-config`: the diffusers scheduler replayed on the problem or network.
fn run_scheduler(args: &Args, path: &std::path::Path) -> Result<()> {
    for (flag, given) in [
        ("--solver", args.solver.is_some()),
        ("--grid", args.grid.is_some()),
        ("--schedule", args.schedule.is_some()),
        ("--flow-map", args.flow_map.is_some()),
        ("--class", args.class.is_some()),
        ("--guidance", args.guidance.is_some()),
    ] {
        if given {
            return Err(Error::invalid(
                flag,
                None,
                "does not apply with --scheduler-config (the config defines the schedule, timesteps and steps)",
            ));
        }
    }
    let steps = args
        .steps
        .ok_or_else(|| Error::invalid("--steps", None, "required with --scheduler-config"))?;
    let config = diffusers::config::read(path, args.scheduler_class.as_deref())?;
    let scheduler = Scheduler::new(config, steps, args.eta.unwrap_or(0.0))?;
    if args.explain {
        print!("{}", scheduler.explain().text(&scheduler));
        return Ok(());
    }
    let (out, mut outputs, out_slot, record_slot) = declare(args)?;
    let init = Init::parse(args)?;
    let spec = scheduler.schedule().spec();
    let (source, name, problem) = match (&args.problem, &args.net) {
        (Some(p), _) => (
            Source::Mixture(problems::load(p)?),
            format!("problem '{p}'"),
            None,
        ),
        (None, Some(p)) => {
            let loaded = weights::load(p)?;
            let file = p.display().to_string();
            match loaded
                .schedule()
                .map(|s| schedule::parse(s).map(|s| s.spec()))
            {
                Some(Ok(s)) if s == spec => {}
                other => {
                    let had = match other {
                        Some(Ok(s)) => s,
                        _ => "none".into(),
                    };
                    return Err(Error::invalid(
                        &file,
                        Some("__metadata__.schedule".into()),
                        format!("the network was trained under '{had}', not the config's '{spec}'"),
                    ));
                }
            }
            let problem = match (&init, loaded.problem()) {
                (Init::Prior { .. }, Some(q)) => Some(problems::load(q)?),
                _ => None,
            };
            (
                Source::Net(loaded.net),
                format!("network '{file}'"),
                problem,
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
    let (device_oracle, device) = on_device(&source, args.device)?;
    let dim = device_oracle.dim();
    let mixture = match &source {
        Source::Mixture(m) => Some(m),
        Source::Net(_) => problem.as_ref(),
    };
    let latents = scheduler_latents(&scheduler, &init, mixture, &name, dim)?;
    let oracle = Counted::new(device_oracle.as_ref());
    let clock = Instant::now();
    let mut noise = Brownian::new(args.noise_seed);
    let replay = scheduler.replay(&oracle, latents.view(), &mut noise)?;
    let wall = clock.elapsed().as_secs_f64();
    if let Some(slot) = record_slot {
        let explanation = scheduler.explain();
        let c = &scheduler.config;
        let calls: Vec<Value> = replay
            .calls
            .iter()
            .map(|k| json!({"timestep": k.timestep, "t": k.level.t, "alpha": k.level.alpha, "sigma": k.level.sigma}))
            .collect();
        let record = json!({
            "scheduler_config": path.display().to_string(),
            "class": c.class.name(),
            "options": c.options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Map<String, Value>>(),
            "ignored": c.ignored,
            "steps": steps,
            "eta": scheduler.eta,
            "schedule": spec,
            "timesteps": scheduler.plan.timesteps,
            "sigmas": scheduler.plan.sigmas,
            "init_noise_sigma": scheduler.plan.init_noise_sigma,
            "nfe": oracle.nfe(),
            "model_calls": calls,
            "equivalent": explanation.equivalent.as_ref().map(|e| json!({
                "schedule": e.schedule, "grid": e.grid, "solver": e.solver,
                "init_scale": e.init_scale, "output_scale": e.output_scale, "note": e.note,
            })),
            "problem": args.problem,
            "net": args.net.as_ref().map(|p| p.display().to_string()),
            "device": device.to_possible_value().map(|v| v.get_name().to_string()),
            "init": init.record(),
            "noise_seed": args.noise_seed,
            "out": out.display().to_string(),
            "n": replay.x.nrows(),
            "pfode_version": env!("CARGO_PKG_VERSION"),
            "git_revision": io::git_revision(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        outputs.set(slot, serde_json::to_vec_pretty(&record).expect("json"));
    }
    outputs.set(out_slot, io::npy_bytes(&replay.x)?);
    outputs.commit()?;
    report(&replay.x, out, oracle.nfe(), wall);
    Ok(())
}

/// The pipeline's unit-normal latents: a file, seeded N(0, I) (`standard`), or (`prior`) exact
/// draws of p_T at the scheduler's first level, in its coordinates, divided by
/// `init_noise_sigma`.
fn scheduler_latents(
    s: &Scheduler,
    init: &Init,
    problem: Option<&GaussianMixture>,
    name: &str,
    dim: usize,
) -> Result<Array2<f64>> {
    let s0 = s.plan.sigmas[0];
    let alpha = 1.0 / (s0 * s0 + 1.0).sqrt();
    let at = NoiseLevel::of(alpha, s0 * alpha);
    let x = match init {
        Init::Standard { n, seed } => {
            limits::elements("--n", "rows", *n, dim)?;
            pfode::rng::standard_normal(*n, dim, *seed, 0)
        }
        Init::Prior { .. } => {
            let coordinates = if s.config.class.ve() {
                1.0 / alpha
            } else {
                1.0
            };
            initial(init, problem, name, dim, &at)? * (coordinates / s.plan.init_noise_sigma)
        }
        Init::File(_) => initial(init, problem, name, dim, &at)?,
    };
    Ok(x)
}

/// `--flow-map`: the map applied along the grid (`levels[:steps=K]` is every N/K-th of the map's
/// own training levels), K calls.
fn run_flow_map(
    args: &Args,
    path: &std::path::Path,
    init: &Init,
    mut outputs: Outputs,
    out_slot: io::Slot,
    record_slot: Option<io::Slot>,
) -> Result<()> {
    if args.solver.is_some() || args.class.is_some() || args.guidance.is_some() {
        return Err(Error::invalid(
            "--flow-map",
            None,
            "samples with the map alone; --solver, --class and --guidance do not apply",
        ));
    }
    if args.device != Device::Cpu {
        return Err(Error::invalid(
            "--device",
            None,
            "a flow map runs on the CPU",
        ));
    }
    let map = FlowNet::load(path)?;
    let file = path.display().to_string();
    if let Some(s) = &args.schedule {
        if schedule::parse(s)?.spec() != map.schedule.spec() {
            return Err(Error::invalid(
                "--schedule",
                None,
                format!("{file} was trained under '{}'", map.schedule.spec()),
            ));
        }
    }
    let schedule = map.schedule.as_ref();
    let grid = grid_arg(args)?;
    let times = if grid == "levels" || grid.starts_with("levels:") {
        let mut spec = pfode::spec::Spec::parse("grid", grid)?;
        let levels = map.levels.clone().ok_or_else(|| {
            Error::invalid(
                &file,
                Some("__metadata__.levels".into()),
                "missing; give --grid a spec",
            )
        })?;
        let n = levels.len() - 1;
        let k = spec.take("steps", n)?;
        spec.finish()?;
        flow_map::every(&levels, k).ok_or_else(|| {
            spec.error(format!(
                "steps must divide the map's {n} level steps, got {k}"
            ))
        })?
    } else {
        Grid::parse(grid, schedule)?.times
    };
    let problem = match (init, map.metadata.get("problem")) {
        (Init::Prior { .. }, Some(p)) => Some(problems::load(p).map_err(|e| {
            Error::invalid(&file, Some("__metadata__.problem".into()), e.to_string())
        })?),
        _ => None,
    };
    let name = format!("flow map '{file}'");
    let x0 = initial(
        init,
        problem.as_ref(),
        &name,
        map.dim(),
        &schedule.level(times[0]),
    )?;
    let x = flow_map::sample(
        &map,
        schedule,
        &times,
        x0.view(),
        args.gamma,
        args.noise_seed,
    )?;
    if let Some(slot) = record_slot {
        let record = json!({
            "flow_map": file,
            "param": map.param.name(),
            "schedule": schedule.spec(),
            "grid": grid,
            "times": times,
            "gamma": args.gamma,
            "noise_seed": args.noise_seed,
            "calls": map.calls(),
            "init": init.record(),
            "out": args.out.as_ref().map(|p| p.display().to_string()),
            "n": x.nrows(),
            "pfode_version": env!("CARGO_PKG_VERSION"),
            "git_revision": io::git_revision(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
        });
        outputs.set(slot, serde_json::to_vec_pretty(&record).expect("json"));
    }
    outputs.set(out_slot, io::npy_bytes(&x)?);
    outputs.commit()
}

fn main() {
    let command = Args::command().after_help(format!("{GRAMMAR}\n\nSolvers:\n{}", solver_list()));
    let args: Args = pfode::study::cli_args_from(command);
    pfode::study::exit_on_error(run(&args));
}
