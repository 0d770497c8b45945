//! The stochastic-sampler study: strong and weak errors vs NFE, ODE vs SDE at equal NFE, and the
//! Fokker-Planck consistency of the reverse SDE and the PF-ODE.
//!
//! Every run starts from exact samples of p_T (t = `t_start`) and samples to `t_end` on `logsnr`
//! grids of `steps` steps, so that the target law is the exact p_{t_end} and the weak error is the
//! sampler's own.
//! - Strong error ([`crate::metrics::sde::strong`]): `paths` paths against the same solver on a
//!   grid `refine` times finer than the finest, on the same Brownian path (seed `seed`).
//! - Weak errors for f(x) = x and f(x) = x x^T: on single-Gaussian problems exactly, from the
//!   sampler's output law pushed with probe noise (with its KL and W2 to p_{t_end}); otherwise
//!   from `samples` samples with the Monte Carlo noise floor.
//! - Fokker-Planck: at each of `fp_times`, `fp_samples` samples of the reverse SDE
//!   (Euler-Maruyama, eta = 1, `fp_steps` steps) and of the PF-ODE (third-order DPM-Solver++,
//!   `fp_steps` steps) from p_T, and exact samples of p_t: their mean NLL under the exact p_t and
//!   the largest standardized deviation of their means and second moments from the exact ones.
//!
//! Orders are fitted vs NFE ([`crate::metrics::empirical_order`]) on points above 3 standard
//! errors and above [`FLOOR`].

use super::{bad_option, require_nonempty, seed_for, Keyed, Study, Unit};
use crate::error::Result;
use crate::grid::Grid;
use crate::limits::MAX_STEPS;
use crate::metrics::distribution::nll;
use crate::metrics::sde::{moments, output_law, strong, weak, weak_mc};
use crate::metrics::{empirical_order, Estimate, GaussianLaw, OrderFit};
use crate::problems;
use crate::schedule::{self, Schedule};
use crate::solver::{self, sde::Probe, Env, Model};
use crate::{Counted, GaussianMixture, Oracle};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    pub schedule: String,
    pub t_start: f64,
    pub t_end: f64,
    pub samplers: Vec<String>,
    pub odes: Vec<String>,
    pub steps: Vec<usize>,
    pub refine: usize,
    pub paths: usize,
    pub samples: usize,
    pub fp_problems: Vec<String>,
    pub fp_times: Vec<f64>,
    pub fp_steps: usize,
    pub fp_samples: usize,
    pub seed: u64,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The stochastic samplers of the study (the registry's, with their defaults).
pub const SAMPLERS: [&str; 10] = [
    "euler-maruyama",
    "euler-maruyama:eta=0.5",
    "ddpm",
    "ddim:eta=0.5",
    "sde-dpm-solver++",
    "sde-dpm-solver++:type=heun",
    "dpmpp-3m-sde",
    "euler-ancestral",
    "dpmpp-2s-ancestral",
    "edm:s_churn=10",
];

impl Config {
    /// The full study: gauss4, ring2d, aniso16 on vp-linear from t = 1 to 1e-3.
    pub fn main() -> Self {
        Config {
            problems: strings(&["gauss4", "ring2d", "aniso16"]),
            schedule: "vp-linear".into(),
            t_start: 1.0,
            t_end: 1e-3,
            samplers: strings(&SAMPLERS),
            odes: strings(&["euler", "heun", "dpm-solver++", "unipc"]),
            steps: vec![8, 16, 32, 64, 128, 256],
            refine: 16,
            paths: 400,
            samples: 20000,
            fp_problems: strings(&["gauss4", "ring2d"]),
            fp_times: vec![0.5, 0.2, 0.05],
            fp_steps: 512,
            fp_samples: 20000,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub key: String,
    pub problem: String,
    /// A solver spec, or for Fokker-Planck points `exact`, `sde` or `ode`.
    pub solver: String,
    pub stochastic: bool,
    pub steps: usize,
    pub nfe: usize,
    pub strong: Option<Estimate>,
    pub weak_mean: Option<Estimate>,
    pub weak_second: Option<Estimate>,
    pub kl: Option<f64>,
    pub w2: Option<f64>,
    /// Fokker-Planck points: the time, the mean NLL under the exact p_t, and the largest
    /// standardized deviation (|z|) of the mean and of the second moments.
    pub t: Option<f64>,
    pub nll: Option<Estimate>,
    pub max_z: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub problem: String,
    pub solver: String,
    pub stochastic: bool,
    pub strong: Option<OrderFit>,
    pub weak_mean: Option<OrderFit>,
    pub weak_second: Option<OrderFit>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub fits: Vec<Fit>,
}

impl Keyed for Group {
    fn key(&self) -> &str {
        &self.key
    }
}
impl Keyed for Point {
    fn key(&self) -> &str {
        &self.key
    }
}

/// Runs `spec` on `grid` from `x`; with `probe`, the noise is [`Probe`] noise. Returns the output
/// and the NFE.
pub fn sample(
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    spec: &str,
    grid: &Grid,
    x: &Array2<f64>,
    noise_seed: u64,
    probe: bool,
) -> Result<(Array2<f64>, usize)> {
    let env = Env {
        schedule: s,
        mixture: Some(mixture),
        noise_seed,
    };
    let mut built = solver::build(spec, &env)?;
    if let (true, Some(noise)) = (probe, built.solver.noise()) {
        *noise = Box::new(Probe::new(mixture.dim()));
    }
    let oracle = Counted::new(mixture);
    let model = Model::new(&oracle, s);
    let out = solver::integrate(built.solver.as_mut(), &model, grid, x.view())?;
    Ok((out, oracle.nfe()))
}

fn logsnr(s: &dyn Schedule, steps: usize, t0: f64, t1: f64) -> Result<Grid> {
    Grid::parse(&format!("logsnr:steps={steps},t_start={t0},t_end={t1}"), s)
}

/// Whether `spec` builds a stochastic sampler.
pub fn is_stochastic(spec: &str, s: &dyn Schedule, mixture: &GaussianMixture) -> Result<bool> {
    let env = Env {
        schedule: s,
        mixture: Some(mixture),
        noise_seed: 0,
    };
    Ok(solver::build(spec, &env)?.solver.noise().is_some())
}

/// The error points of one solver on one problem.
pub fn errors(config: &Config, problem: &str, spec: &str) -> Result<Vec<Point>> {
    let mixture = problems::load(problem)?;
    let sched = schedule::parse(&config.schedule)?;
    let s = sched.as_ref();
    let (a0, a1) = (s.level(config.t_start), s.level(config.t_end));
    let stochastic = is_stochastic(spec, s, &mixture)?;
    let key = format!("{problem}|{spec}");
    let noise_seed = seed_for(config.seed, &format!("{key}|noise"));
    let x_paths = mixture.sample_pt(config.paths, &a0, seed_for(config.seed, problem));
    let finest = config.steps.iter().max().copied().unwrap_or(1) * config.refine;
    let fine = logsnr(s, finest, config.t_start, config.t_end)?;
    let (x_ref, _) = sample(&mixture, s, spec, &fine, &x_paths, noise_seed, false)?;
    let (mean, second) = moments(&mixture, &a1);
    let gaussian = mixture.n_components() == 1;
    let x_mc = (!gaussian).then(|| {
        mixture.sample_pt(
            config.samples,
            &a0,
            seed_for(config.seed, &format!("{problem}|mc")),
        )
    });
    let mut points = Vec::new();
    for &n in &config.steps {
        let grid = logsnr(s, n, config.t_start, config.t_end)?;
        let (x, nfe) = sample(&mixture, s, spec, &grid, &x_paths, noise_seed, false)?;
        let mut p = Point {
            key: format!("{key}|{n}"),
            problem: problem.into(),
            solver: spec.into(),
            stochastic,
            steps: n,
            nfe,
            strong: Some(strong(x.view(), x_ref.view())?),
            weak_mean: None,
            weak_second: None,
            kl: None,
            w2: None,
            t: None,
            nll: None,
            max_z: None,
        };
        if gaussian {
            let c = mixture.component(0);
            let prior = GaussianLaw::marginal(c, a0.alpha, a0.sigma);
            let target = GaussianLaw::marginal(c, a1.alpha, a1.sigma);
            let env = Env {
                schedule: s,
                mixture: Some(&mixture),
                noise_seed,
            };
            let mut built = solver::build(spec, &env)?;
            let model = Model::new(&mixture, s);
            let law = output_law(built.solver.as_mut(), &model, &grid, &prior)?;
            let [dm, ds] = weak(&law.mean, &law.second_moment(), &mean, &second);
            let exact = |value| Some(Estimate { value, se: 0.0 });
            (p.weak_mean, p.weak_second) = (exact(dm), exact(ds));
            (p.kl, p.w2) = (Some(law.kl(&target)?), Some(law.w2(&target)?));
        } else if let Some(x0) = &x_mc {
            let (x, _) = sample(&mixture, s, spec, &grid, x0, noise_seed ^ 1, false)?;
            let [dm, ds] = weak_mc(x.view(), &mean, &second);
            (p.weak_mean, p.weak_second) = (Some(dm), Some(ds));
        }
        points.push(p);
    }
    Ok(points)
}

/// The Fokker-Planck points of one problem.
pub fn fokker_planck(config: &Config, problem: &str) -> Result<Vec<Point>> {
    let mixture = problems::load(problem)?;
    let sched = schedule::parse(&config.schedule)?;
    let s = sched.as_ref();
    let a0 = s.level(config.t_start);
    let n = config.fp_samples;
    let x_t = mixture.sample_pt(n, &a0, seed_for(config.seed, &format!("{problem}|fp")));
    let mut points = Vec::new();
    for &t in &config.fp_times {
        let at = s.level(t);
        let (mean, second) = moments(&mixture, &at);
        let grid = logsnr(s, config.fp_steps, config.t_start, t)?;
        let exact = mixture.sample_pt(n, &at, seed_for(config.seed, &format!("{problem}|{t}")));
        let seed = seed_for(config.seed, &format!("{problem}|fp-noise"));
        let (sde, nfe_sde) = sample(&mixture, s, "euler-maruyama", &grid, &x_t, seed, false)?;
        let ode_spec = "dpm-solver++:order=3,third_order=taylor";
        let (ode, nfe_ode) = sample(&mixture, s, ode_spec, &grid, &x_t, seed, false)?;
        for (name, x, nfe) in [
            ("exact", &exact, 0),
            ("sde", &sde, nfe_sde),
            ("ode", &ode, nfe_ode),
        ] {
            points.push(Point {
                key: format!("{problem}|fokker-planck|{t}|{name}"),
                problem: problem.into(),
                solver: name.into(),
                stochastic: name == "sde",
                steps: config.fp_steps,
                nfe,
                strong: None,
                weak_mean: None,
                weak_second: None,
                kl: None,
                w2: None,
                t: Some(t),
                nll: Some(nll(&mixture, x.view(), &at)?),
                max_z: Some(max_z(x, &mean, &second)),
            });
        }
    }
    Ok(points)
}

/// The largest |z| of the sample mean and second moments against exact values.
pub fn max_z(x: &Array2<f64>, mean: &ndarray::Array1<f64>, second: &Array2<f64>) -> f64 {
    let n = x.nrows() as f64;
    let d = x.ncols();
    let mut worst = 0.0f64;
    for i in 0..d {
        let xi = x.column(i);
        let (m, v) = (xi.mean().unwrap(), xi.var(1.0));
        worst = worst.max((m - mean[i]).abs() / (v / n).sqrt());
        for j in i..d {
            let p = &xi * &x.column(j);
            let (m, v) = (p.mean().unwrap(), p.var(1.0));
            worst = worst.max((m - second[(i, j)]).abs() / (v / n).sqrt());
        }
    }
    worst
}

pub struct Sde;

/// Errors at or below this are rounding (e.g. the exact mean path of the exponential integrators
/// on Gaussian data) and are left out of the order fits.
pub const FLOOR: f64 = 1e-11;

impl Study for Sde {
    const KIND: &'static str = "sde";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        let kind = Self::KIND;
        require_nonempty(
            kind,
            &[
                ("problems", config.problems.len() + config.fp_problems.len()),
                ("steps", config.steps.len()),
            ],
        )?;
        let finest = config.steps.iter().max().copied().unwrap_or(0);
        if config.steps.contains(&0) || config.refine < 2 {
            return Err(bad_option(
                kind,
                "steps",
                "need every step count >= 1 and --refine >= 2",
            ));
        }
        if finest.saturating_mul(config.refine) > MAX_STEPS || config.fp_steps > MAX_STEPS {
            return Err(bad_option(
                kind,
                "steps",
                format!("the largest step count times --refine ({finest} x {}) or the Fokker-Planck steps exceed the limit of {MAX_STEPS} steps", config.refine),
            ));
        }
        for (option, n) in [
            ("paths", config.paths),
            ("samples", config.samples),
            ("fp_samples", config.fp_samples),
        ] {
            if n < 2 {
                return Err(bad_option(
                    kind,
                    option,
                    format!("{n} is too few: need at least 2"),
                ));
            }
        }
        for p in config.problems.iter().chain(&config.fp_problems) {
            let d = problems::load(p)?.dim();
            for (option, n) in [
                ("paths", config.paths),
                ("samples", config.samples),
                ("fp_samples", config.fp_samples),
            ] {
                crate::limits::elements(kind, option, n, d)?;
            }
        }
        let mut units = Vec::new();
        for p in &config.problems {
            for spec in config.samplers.iter().chain(&config.odes) {
                let key = format!("{p}|{spec}");
                units.push(Unit {
                    key: key.clone(),
                    group: key,
                });
            }
        }
        for p in &config.fp_problems {
            let key = format!("{p}|fokker-planck");
            units.push(Unit {
                key: key.clone(),
                group: key,
            });
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let (problem, spec) = unit.key.split_once('|').unwrap_or_default();
        let points = if spec == "fokker-planck" {
            fokker_planck(config, problem)?
        } else {
            errors(config, problem, spec)?
        };
        Ok((
            Group {
                key: unit.key.clone(),
            },
            points,
        ))
    }

    fn summarize(_: &Config, _: &[Group], points: &[Point]) -> Summary {
        let fit = |pts: &[&Point], f: fn(&Point) -> Option<Estimate>| {
            let v: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| {
                    f(p).filter(|e| e.value > 3.0 * e.se)
                        .map(|e| (p.nfe as f64, e.value))
                })
                .collect();
            empirical_order(&v, FLOOR, true)
        };
        let errors: Vec<&Point> = points.iter().filter(|p| p.t.is_none()).collect();
        let mut fits = Vec::new();
        for (problem, rows) in super::group_by(&errors, |p| p.problem.clone()) {
            for (solver, rows) in super::group_by(&rows, |p| p.solver.clone()) {
                let rows: Vec<&Point> = rows.iter().map(|p| ***p).collect();
                fits.push(Fit {
                    problem: problem.clone(),
                    stochastic: rows[0].stochastic,
                    solver,
                    strong: fit(&rows, |p| p.strong),
                    weak_mean: fit(&rows, |p| p.weak_mean),
                    weak_second: fit(&rows, |p| p.weak_second),
                });
            }
        }
        Summary { fits }
    }
}
