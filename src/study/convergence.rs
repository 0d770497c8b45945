//! The convergence study: solvers x schedules x grids x NFE x problems, each point measured
//! against ground truth.
//!
//! For each (problem, schedule, grid) group, `samples` points x_T are drawn from the exact
//! marginal p_T at the grid's first time, and the reference x_ref at its last time is the closed
//! form for a single Gaussian ([`GaussianFlow`]) and the `reference` solver (DOP853, rtol = atol
//! = 1e-12) otherwise. Every schedule spans its conventional range ([`range`]); karras and
//! exponential grids span the same range in sigma/alpha. For a target NFE the solver runs the
//! largest step count whose exact NFE does not exceed it (targets that give the same step count
//! are recorded once).
//!
//! Each point records:
//! - `err_rms`, `err_median`, `err_max`: per-sample Euclidean error against x_ref (RMS, median and
//!   max over samples);
//! - single Gaussian: the exact output law (d + 1 probe runs, [`GaussianLaw`]) compared with the
//!   exact marginal at the grid's last time: `w2`, `kl` for x_T ~ p_T, and `w2_std_prior`,
//!   `kl_std_prior` for x_T ~ N(0, sigma_T^2 I) (prior plus discretization error);
//! - every problem (unless `distribution` is off): `nll` (mean -ln p_{t_end} of the samples; the group's `entropy` is its value
//!   for exact samples), `sliced_w2` (128 directions), `mmd2` (RBF, the group's median
//!   bandwidth) and `w2_emp` (exact assignment) against `samples` fresh draws of p_{t_end}.
//!   The group's `*_ref` fields are the same metrics for x_ref: the Monte Carlo floor.
//!
//! The summary fits the empirical order of `err_rms` against NFE and against h (the largest
//! lambda step of the grid) per solver, and of `err_median` against NFE, above the group's `floor` (1e-12 x scale for the closed
//! form, 1e-10 x scale for the reference solver).

use super::{
    bad_option, check_nfe_targets, require_nonempty, seed_for, step_counts, GroupCache, Keyed,
    Study, Unit,
};
use crate::error::{Error, Result};
use crate::gaussian_flow::GaussianFlow;
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::metrics::distribution::{self, Estimate, MAX_ASSIGNMENT};
use crate::metrics::{empirical_order, sample_error, GaussianLaw, OrderFit};
use crate::problems;
use crate::schedule::{self, Schedule};
use crate::solver::{self, Env, Model};
use crate::Counted;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub const DEFAULT_NFE: [usize; 13] = [5, 6, 8, 10, 12, 15, 20, 25, 35, 50, 75, 100, 200];

/// The solvers of the main study.
pub const MAIN_SOLVERS: [&str; 13] = [
    "euler",
    "heun",
    "rk4",
    "ddim",
    "dpm-solver:order=2,method=singlestep",
    "dpm-solver:order=3,method=singlestep",
    "dpm-solver++:order=2",
    "dpm-solver++:order=3",
    "dpm-solver++:order=3,third_order=taylor",
    "deis",
    "ipndm",
    "unipc",
    "unipc:variant=bh2",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    pub schedules: Vec<String>,
    pub grids: Vec<String>,
    pub solvers: Vec<String>,
    pub nfe: Vec<usize>,
    pub samples: usize,
    pub seed: u64,
    pub reference: String,
    /// Record each point's wall time (makes the file differ between runs).
    pub timing: bool,
    /// Compute the distributional metrics (NLL, sliced W2, MMD, empirical W2; needs
    /// samples <= 2000 for the exact assignment).
    #[serde(default = "yes")]
    pub distribution: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    /// The main study: gauss4, ring2d, aniso16 x vp-linear, vp-cosine, edm, flow x logsnr,
    /// time-uniform, karras x [`MAIN_SOLVERS`] x [`DEFAULT_NFE`], 256 samples, seed 1.
    pub fn main() -> Self {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Config {
            problems: v(&["gauss4", "ring2d", "aniso16"]),
            schedules: v(&["vp-linear", "vp-cosine", "edm", "flow"]),
            grids: v(&["logsnr", "time-uniform", "karras"]),
            solvers: v(&MAIN_SOLVERS),
            nfe: DEFAULT_NFE.to_vec(),
            samples: 256,
            seed: 1,
            reference: "reference".into(),
            timing: false,
            distribution: true,
        }
    }
}

/// Per-group ground truth and Monte Carlo floors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub problem: String,
    pub schedule: String,
    pub grid: String,
    pub t_start: f64,
    pub t_end: f64,
    pub reference: String,
    pub reference_nfe: usize,
    pub scale: f64,
    pub floor: f64,
    pub entropy: Estimate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nll_ref: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliced_w2_ref: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmd2_ref: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w2_emp_ref: Option<f64>,
    /// Single Gaussian: the exact flow of N(0, sigma_T^2 I) against p_{t_end} (prior term only).
    pub prior_w2: Option<f64>,
    pub prior_kl: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub unit: String,
    pub problem: String,
    pub schedule: String,
    pub grid: String,
    pub solver: String,
    pub spec: String,
    pub declared_order: usize,
    pub nfe_target: usize,
    pub nfe: usize,
    pub steps: usize,
    pub h: f64,
    pub err_rms: f64,
    pub err_median: f64,
    pub err_max: f64,
    pub w2: Option<f64>,
    pub kl: Option<f64>,
    pub w2_std_prior: Option<f64>,
    pub kl_std_prior: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nll: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliced_w2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmd2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w2_emp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
}

/// The per-point metrics a plot can show against NFE.
pub const METRICS: [&str; 11] = [
    "err_rms",
    "err_median",
    "err_max",
    "w2",
    "kl",
    "w2_std_prior",
    "kl_std_prior",
    "nll",
    "sliced_w2",
    "mmd2",
    "w2_emp",
];

impl Point {
    /// The value of metric `name` (one of [`METRICS`]); `None` where the point has none (the
    /// exact-law metrics on mixtures) or for an unknown name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "err_rms" => Some(self.err_rms),
            "err_median" => Some(self.err_median),
            "err_max" => Some(self.err_max),
            "w2" => self.w2,
            "kl" => self.kl,
            "w2_std_prior" => self.w2_std_prior,
            "kl_std_prior" => self.kl_std_prior,
            "nll" => self.nll,
            "sliced_w2" => self.sliced_w2,
            "mmd2" => self.mmd2,
            "w2_emp" => self.w2_emp,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub problem: String,
    pub schedule: String,
    pub grid: String,
    pub solver: String,
    pub declared_order: usize,
    pub order_nfe: Option<OrderFit>,
    pub order_h: Option<OrderFit>,
    /// The order of the median per-sample error vs NFE.
    pub order_nfe_median: Option<OrderFit>,
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
        &self.unit
    }
}

/// The conventional time range of a schedule: its full range where lambda is finite at the
/// end (vp-linear [1, 1e-3], vp-cosine [0.9946, 1e-3], ve [1, 1e-3], vp-discrete [1, 1/N]),
/// [80, 0.002] on edm, and [0.999, 1e-3] on flow (alpha = 0 at t = 1).
pub fn range(s: &dyn Schedule) -> (f64, f64) {
    if !s.t_max().is_finite() {
        return (80.0, 0.002);
    }
    let start = if s.alpha(s.t_max()) == 0.0 {
        s.t_max() - 1e-3
    } else {
        s.t_max()
    };
    (start, s.t_min().max(1e-3))
}

/// The grids a sweep refines by step count over a schedule's [`range`] (not `file`).
pub const SWEEP_GRIDS: [&str; 5] = [
    "time-uniform",
    "time-quadratic",
    "logsnr",
    "karras",
    "exponential",
];

/// The spec of grid `name` with `steps` steps over the schedule's [`range`].
pub fn grid_spec(name: &str, steps: usize, s: &dyn Schedule) -> String {
    let (a, b) = range(s);
    match name {
        "karras" | "exponential" => {
            let rho = |t: f64| s.sigma(t) / s.alpha(t);
            format!(
                "{name}:steps={steps},sigma_max={},sigma_min={}",
                rho(a),
                rho(b)
            )
        }
        _ => format!("{name}:steps={steps},t_start={a},t_end={b}"),
    }
}

struct GroupData {
    info: Group,
    mixture: GaussianMixture,
    x_t: Array2<f64>,
    x_ref: Array2<f64>,
    data: Array2<f64>,
    /// (true p_T, N(0, sigma_T^2 I), exact p_{t_end}) for a single Gaussian.
    laws: Option<(GaussianLaw, GaussianLaw, GaussianLaw)>,
}

#[derive(Default)]
pub struct Convergence {
    cache: GroupCache<GroupData>,
}

fn split(key: &str) -> (&str, &str, &str, &str) {
    let mut it = key.split('|');
    let mut next = || it.next().unwrap_or("");
    (next(), next(), next(), next())
}

fn max_lambda_step(grid: &Grid, s: &dyn Schedule) -> f64 {
    grid.times
        .windows(2)
        .map(|w| (s.lambda(w[1]) - s.lambda(w[0])).abs())
        .filter(|h| h.is_finite())
        .fold(0.0, f64::max)
}

impl Convergence {
    fn group(&self, config: &Config, key: &str) -> Result<Arc<GroupData>> {
        self.cache.get(key, || build_group(config, key))
    }
}

fn build_group(config: &Config, key: &str) -> Result<GroupData> {
    let (problem, sched, grid_name, _) = split(key);
    let mixture = problems::load(problem)?;
    let schedule = schedule::parse(sched)?;
    let s = schedule.as_ref();
    let grid = Grid::parse(&grid_spec(grid_name, 1, s), s)?;
    let (t0, t1) = (grid.times[0], grid.times[1]);
    let (at0, at1) = (s.level(t0), s.level(t1));
    let seed = seed_for(config.seed, key);
    let n = config.samples;
    let x_t = mixture.sample(n, at0.alpha, at0.sigma, seed);
    let data = mixture.sample(n, at1.alpha, at1.sigma, seed ^ 0xda7a);
    let (x_ref, reference, reference_nfe, floor_rel, laws) = if mixture.n_components() == 1 {
        let flow = GaussianFlow::new(&mixture)?;
        let mut x_ref = Array2::zeros(x_t.dim());
        flow.map(&at0, &at1, x_t.view(), x_ref.view_mut())?;
        let c = mixture.component(0);
        let laws = (
            GaussianLaw::marginal(c, at0.alpha, at0.sigma),
            GaussianLaw::isotropic(crate::Oracle::dim(&mixture), at0.sigma),
            GaussianLaw::marginal(c, at1.alpha, at1.sigma),
        );
        (x_ref, "closed-form".to_string(), 0, 1e-12, Some(laws))
    } else {
        let env = Env {
            schedule: s,
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let mut built = solver::build(&config.reference, &env)?;
        let oracle = Counted::new(&mixture);
        let model = Model::new(&oracle, s);
        let x_ref = solver::integrate(built.solver.as_mut(), &model, &grid, x_t.view())?;
        (x_ref, built.spec, oracle.nfe(), 1e-10, None)
    };
    let scale = crate::metrics::order::rms_norm(x_ref.view());
    let (entropy, prior_w2, prior_kl) = match &laws {
        Some((_, std_prior, target)) => {
            let flow = GaussianFlow::new(&mixture)?;
            let probes = std_prior.probes();
            let mut img = Array2::zeros(probes.dim());
            flow.map(&at0, &at1, probes.view(), img.view_mut())?;
            let pushed = std_prior.pushed(img.view())?;
            (
                Estimate {
                    value: target.entropy()?,
                    se: 0.0,
                },
                Some(pushed.w2(target)?),
                Some(pushed.kl(target)?),
            )
        }
        None => (
            distribution::entropy(&mixture, &at1, 20000, seed ^ 0xe7)?,
            None,
            None,
        ),
    };
    let dist = config.distribution;
    let bandwidth = match dist {
        true => Some(distribution::median_bandwidth(x_ref.view(), data.view())?),
        false => None,
    };
    let info = Group {
        key: key.to_string(),
        problem: problem.into(),
        schedule: sched.into(),
        grid: grid_name.into(),
        t_start: t0,
        t_end: t1,
        reference,
        reference_nfe,
        scale,
        floor: floor_rel * scale,
        entropy,
        bandwidth,
        nll_ref: Some(distribution::nll(&mixture, x_ref.view(), &at1)?.value),
        sliced_w2_ref: dist
            .then(|| distribution::sliced_w2(x_ref.view(), data.view(), 128, seed))
            .transpose()?,
        mmd2_ref: bandwidth
            .map(|l| distribution::mmd2(x_ref.view(), data.view(), l))
            .transpose()?,
        w2_emp_ref: dist
            .then(|| distribution::empirical_w2(x_ref.view(), data.view()))
            .transpose()?,
        prior_w2,
        prior_kl,
    };
    Ok(GroupData {
        info,
        mixture,
        x_t,
        x_ref,
        data,
        laws,
    })
}

impl Study for Convergence {
    const KIND: &'static str = "convergence";
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
                ("problems", config.problems.len()),
                ("schedules", config.schedules.len()),
                ("grids", config.grids.len()),
                ("solver", config.solvers.len()),
            ],
        )?;
        check_nfe_targets(kind, &config.nfe)?;
        let min_samples = if config.distribution { 2 } else { 1 };
        if config.samples < min_samples {
            return Err(bad_option(
                kind,
                "samples",
                format!("{} is too few: need at least {min_samples} (2 for the distribution metrics, 1 with --no-distribution)", config.samples),
            ));
        }
        if config.distribution && config.samples > MAX_ASSIGNMENT {
            return Err(bad_option(
                kind,
                "samples",
                format!("{} exceeds {MAX_ASSIGNMENT}, the limit of the exact assignment behind w2_emp; add --no-distribution", config.samples),
            ));
        }
        if let Some(g) = config
            .grids
            .iter()
            .find(|g| !SWEEP_GRIDS.contains(&g.as_str()))
        {
            return Err(bad_option(
                kind,
                "grids",
                format!(
                    "'{g}' is not a grid that a sweep can refine (valid: {})",
                    SWEEP_GRIDS.join(", ")
                ),
            ));
        }
        let mut units = Vec::new();
        for p in &config.problems {
            let mixture = problems::load(p)?;
            crate::limits::elements(
                kind,
                "samples",
                config.samples,
                crate::Oracle::dim(&mixture),
            )?;
            for sched in &config.schedules {
                let schedule = schedule::parse(sched)?;
                for g in &config.grids {
                    Grid::parse(&grid_spec(g, 1, schedule.as_ref()), schedule.as_ref())?;
                    for solver in &config.solvers {
                        let group = format!("{p}|{sched}|{g}");
                        units.push(Unit {
                            key: format!("{group}|{solver}"),
                            group,
                        });
                    }
                }
            }
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let g = self.group(config, &unit.group)?;
        let (problem, sched, grid_name, solver_text) = split(&unit.key);
        let schedule = schedule::parse(sched)?;
        let s = schedule.as_ref();
        let env = Env {
            schedule: s,
            mixture: Some(&g.mixture),
            noise_seed: 0,
        };
        let probe = solver::build(solver_text, &env)?;
        let grid_of = |steps: usize| Grid::parse(&grid_spec(grid_name, steps, s), s);
        let nfe_of = |grid: &Grid| {
            probe.solver.nfe(grid, s).ok_or_else(|| {
                Error::Domain(format!(
                    "solver '{solver_text}' has no fixed NFE on a grid (adaptive); the convergence study needs fixed-grid solvers"
                ))
            })
        };
        let at1 = s.level(g.info.t_end);
        let mut points = Vec::new();
        for (target, steps) in step_counts(&config.nfe, |n| nfe_of(&grid_of(n)?))? {
            let grid = grid_of(steps)?;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
            if !close(grid.times[0], g.info.t_start)
                || !close(*grid.times.last().unwrap(), g.info.t_end)
            {
                return Err(Error::Domain(format!(
                    "grid '{}' does not span the group's range",
                    grid.spec()
                )));
            }
            let run = |x: ndarray::ArrayView2<f64>| -> Result<(Array2<f64>, usize)> {
                let mut built = solver::build(solver_text, &env)?;
                let oracle = Counted::new(&g.mixture);
                let model = Model::new(&oracle, s);
                let y = solver::integrate(built.solver.as_mut(), &model, &grid, x)?;
                Ok((y, oracle.nfe()))
            };
            let clock = Instant::now();
            let (x, nfe) = run(g.x_t.view())?;
            let wall = clock.elapsed().as_secs_f64();
            let err = sample_error(x.view(), g.x_ref.view())?;
            let (mut w2, mut kl, mut w2s, mut kls) = (None, None, None, None);
            if let Some((true_prior, std_prior, target_law)) = &g.laws {
                let law = |prior: &GaussianLaw| -> Result<GaussianLaw> {
                    let (img, _) = run(prior.probes().view())?;
                    prior.pushed(img.view())
                };
                let (a, b) = (law(true_prior)?, law(std_prior)?);
                w2 = Some(a.w2(target_law)?);
                kl = Some(a.kl(target_law)?);
                w2s = Some(b.w2(target_law)?);
                kls = Some(b.kl(target_law)?);
            }
            let seed = seed_for(config.seed, &unit.group);
            points.push(Point {
                unit: unit.key.clone(),
                problem: problem.into(),
                schedule: sched.into(),
                grid: grid_name.into(),
                solver: solver_text.into(),
                spec: probe.spec.clone(),
                declared_order: probe.solver.order(),
                nfe_target: target,
                nfe,
                steps,
                h: max_lambda_step(&grid, s),
                err_rms: err.rms,
                err_median: err.median,
                err_max: err.max,
                w2,
                kl,
                w2_std_prior: w2s,
                kl_std_prior: kls,
                nll: Some(distribution::nll(&g.mixture, x.view(), &at1)?.value),
                sliced_w2: config
                    .distribution
                    .then(|| distribution::sliced_w2(x.view(), g.data.view(), 128, seed))
                    .transpose()?,
                mmd2: g
                    .info
                    .bandwidth
                    .map(|l| distribution::mmd2(x.view(), g.data.view(), l))
                    .transpose()?,
                w2_emp: config
                    .distribution
                    .then(|| distribution::empirical_w2(x.view(), g.data.view()))
                    .transpose()?,
                wall_s: config.timing.then_some(wall),
            });
        }
        Ok((g.info.clone(), points))
    }

    /// Timed sweeps run one unit at a time, so that wall times are not shared between units.
    fn sequential(config: &Config) -> bool {
        config.timing
    }

    fn summarize(_config: &Config, groups: &[Group], points: &[Point]) -> Summary {
        let floors: HashMap<&str, f64> = groups.iter().map(|g| (g.key.as_str(), g.floor)).collect();
        let fits = super::group_by(points, |p| p.unit.clone())
            .into_iter()
            .map(|(_, pts)| {
                let p0 = pts[0];
                let group = format!("{}|{}|{}", p0.problem, p0.schedule, p0.grid);
                let floor = floors.get(group.as_str()).cloned().unwrap_or(0.0);
                let by_nfe: Vec<(f64, f64)> =
                    pts.iter().map(|p| (p.nfe as f64, p.err_rms)).collect();
                let by_h: Vec<(f64, f64)> = pts.iter().map(|p| (p.h, p.err_rms)).collect();
                let median: Vec<(f64, f64)> =
                    pts.iter().map(|p| (p.nfe as f64, p.err_median)).collect();
                Fit {
                    problem: p0.problem.clone(),
                    schedule: p0.schedule.clone(),
                    grid: p0.grid.clone(),
                    solver: p0.solver.clone(),
                    declared_order: p0.declared_order,
                    order_nfe: empirical_order(&by_nfe, floor, true),
                    order_h: empirical_order(&by_h, floor, false),
                    order_nfe_median: empirical_order(&median, floor, true),
                }
            })
            .collect();
        Summary { fits }
    }
}
