//! The learned-vs-exact study: a trained network against the exact oracle of the mixture it was
//! trained on, which splits a sampler's error into network error and discretization error.
//!
//! For each network (a safetensors file whose metadata names its `problem` and `schedule`),
//! `samples` points x_T ~ p_T (t_start = the schedule's end, as in `convergence`) are drawn and
//! carried to t_end on `logsnr` grids:
//! - **Network error** of the sampling map: x_ref^E and x_ref^N are the `reference` solutions
//!   (DOP853 in lambda, rtol = atol = `reference_tol`) of the PF-ODE with the exact oracle and
//!   with the network; `net_error` = RMS_i |x_ref^N - x_ref^E|.
//! - **(a) Prediction error along PF-ODE trajectories**: at the times of a `trajectory_steps`-step
//!   grid, on the exact trajectories (each step a `reference` integration), the RMS over samples
//!   of net minus exact for the x0 and eps predictions and the velocity dx/dt, and the velocity
//!   error relative to the RMS exact velocity.
//! - **(b) Sampling error vs NFE**: for each solver and NFE target (the largest step count whose
//!   exact NFE fits, as in `convergence`) from the same x_T: `disc_exact` = RMS |x_h^E - x_ref^E|
//!   (the discretization error with the exact oracle), `disc_net` = RMS |x_h^N - x_ref^N| (the
//!   discretization error of the network's own ODE), `total_net` = RMS |x_h^N - x_ref^E| (what a
//!   user of the network gets), and the mean NLL of x_h^E and x_h^N under the exact p_{t_end}.
//! - **(c) Crossover**: per solver, the smallest NFE from which on `disc_exact` (and `disc_net`)
//!   stays below `net_error`: beyond it, more steps buy nothing the network can deliver.

use super::convergence::{grid_spec, range};
use super::{
    bad_option, check_nfe_targets, require_nonempty, seed_for, step_counts, GroupCache, Keyed,
    Study, Unit,
};
use crate::error::{Error, Result};
use crate::grid::Grid;
use crate::metrics::distribution::{entropy, nll};
use crate::metrics::{sample_error, Estimate};
use crate::nn::{weights, Mlp};
use crate::prediction::Prediction;
use crate::schedule::{self, Schedule};
use crate::solver::{self, Env, Model};
use crate::{problems, Counted, GaussianMixture, Oracle};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub nets: Vec<String>,
    pub solvers: Vec<String>,
    pub nfe: Vec<usize>,
    pub samples: usize,
    pub trajectory_steps: usize,
    pub reference_tol: f64,
    pub seed: u64,
}

impl Config {
    /// The committed study: the ring2d and aniso16 networks of `results/models/`.
    pub fn main() -> Self {
        Config {
            nets: vec![
                "results/models/ring2d.safetensors".into(),
                "results/models/aniso16.safetensors".into(),
            ],
            solvers: [
                "euler",
                "heun",
                "ddim",
                "dpm-solver++",
                "dpm-solver++:order=3",
                "unipc",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            nfe: vec![4, 5, 6, 8, 10, 12, 15, 20, 25, 35, 50, 75, 100, 200, 400],
            samples: 2000,
            trajectory_steps: 24,
            reference_tol: 1e-10,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The network file.
    pub key: String,
    pub problem: String,
    pub schedule: String,
    pub network: std::collections::BTreeMap<String, String>,
    pub t_start: f64,
    pub t_end: f64,
    pub net_error: f64,
    pub net_error_median: f64,
    pub reference_nfe_exact: usize,
    pub reference_nfe_net: usize,
    /// Mean NLL under p_{t_end} of x_ref^E, of x_ref^N, and the entropy of p_{t_end}.
    pub nll_ref_exact: Estimate,
    pub nll_ref_net: Estimate,
    pub entropy: Estimate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub key: String,
    pub net: String,
    /// A solver spec, or `trajectory` for prediction-error points.
    pub solver: String,
    pub steps: usize,
    pub nfe: usize,
    pub t: Option<f64>,
    pub sigma: Option<f64>,
    pub x0_error: Option<f64>,
    pub eps_error: Option<f64>,
    pub velocity_error: Option<f64>,
    pub velocity_rel_error: Option<f64>,
    pub disc_exact: Option<f64>,
    pub disc_net: Option<f64>,
    pub total_net: Option<f64>,
    pub nll_exact: Option<Estimate>,
    pub nll_net: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossover {
    pub net: String,
    pub solver: String,
    pub net_error: f64,
    /// The smallest NFE from which disc_exact (disc_net) stays below net_error; None if never.
    pub nfe_exact: Option<usize>,
    pub nfe_net: Option<usize>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub crossovers: Vec<Crossover>,
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

struct GroupData {
    info: Group,
    mixture: GaussianMixture,
    net: Mlp,
    x_t: Array2<f64>,
    ref_exact: Array2<f64>,
    ref_net: Array2<f64>,
}

#[derive(Default)]
pub struct Learned {
    cache: GroupCache<GroupData>,
}

/// The network of a file with the mixture and schedule its metadata names.
pub fn load_net(path: &str) -> Result<(weights::Loaded, GaussianMixture, Box<dyn Schedule>)> {
    let loaded = weights::load(path)?;
    let need = |key: &str| {
        loaded.metadata.get(key).cloned().ok_or_else(|| {
            Error::invalid(
                path,
                Some(format!("__metadata__.{key}")),
                "missing (the study needs the problem and schedule the network was trained on)",
            )
        })
    };
    let mixture = problems::load(&need("problem")?)?;
    let schedule = schedule::parse(&need("schedule")?)?;
    if mixture.dim() != loaded.net.config.dim {
        return Err(Error::invalid(
            path,
            Some("__metadata__.dim".into()),
            format!(
                "{} does not match the problem's dimension {}",
                loaded.net.config.dim,
                mixture.dim()
            ),
        ));
    }
    Ok((loaded, mixture, schedule))
}

/// The `reference` solver (DOP853) at the study's tolerance.
fn reference_solver(config: &Config, env: &Env) -> Result<solver::Built> {
    let tol = config.reference_tol;
    solver::build(&format!("reference:rtol={tol},atol={tol}"), env)
}

fn reference(
    config: &Config,
    oracle: &dyn Oracle,
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    grid: &Grid,
    x: &Array2<f64>,
) -> Result<(Array2<f64>, usize)> {
    let env = Env {
        schedule: s,
        mixture: Some(mixture),
        noise_seed: 0,
    };
    let mut built = reference_solver(config, &env)?;
    let counted = Counted::new(oracle);
    let x = solver::integrate(
        built.solver.as_mut(),
        &Model::new(&counted, s),
        grid,
        x.view(),
    )?;
    Ok((x, counted.nfe()))
}

fn build_group(config: &Config, key: &str) -> Result<GroupData> {
    let (loaded, mixture, schedule) = load_net(key)?;
    let weights::Loaded { net, metadata } = loaded;
    let s = schedule.as_ref();
    let (t_start, t_end) = range(s);
    let grid = Grid::parse(&grid_spec("logsnr", 1, s), s)?;
    let seed = seed_for(config.seed, key);
    let x_t = mixture.sample_pt(config.samples, &s.level(t_start), seed);
    let (ref_exact, reference_nfe_exact) = reference(config, &mixture, &mixture, s, &grid, &x_t)?;
    let (ref_net, reference_nfe_net) = reference(config, &net, &mixture, s, &grid, &x_t)?;
    let split = sample_error(ref_net.view(), ref_exact.view())?;
    let at1 = s.level(t_end);
    let info = Group {
        key: key.to_string(),
        problem: metadata.get("problem").cloned().unwrap_or_default(),
        schedule: s.spec(),
        network: weights::config_metadata(&net.config),
        t_start,
        t_end,
        net_error: split.rms,
        net_error_median: split.median,
        reference_nfe_exact,
        reference_nfe_net,
        nll_ref_exact: nll(&mixture, ref_exact.view(), &at1)?,
        nll_ref_net: nll(&mixture, ref_net.view(), &at1)?,
        entropy: entropy(&mixture, &at1, 20000, seed ^ 0xe7)?,
    };
    Ok(GroupData {
        info,
        mixture,
        net,
        x_t,
        ref_exact,
        ref_net,
    })
}

impl Learned {
    fn group(&self, config: &Config, key: &str) -> Result<Arc<GroupData>> {
        self.cache.get(key, || build_group(config, key))
    }
}

fn rms(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    crate::metrics::order::rms_norm((a - b).view())
}

fn empty(key: &str, net: &str, solver: &str) -> Point {
    Point {
        key: key.into(),
        net: net.into(),
        solver: solver.into(),
        steps: 0,
        nfe: 0,
        t: None,
        sigma: None,
        x0_error: None,
        eps_error: None,
        velocity_error: None,
        velocity_rel_error: None,
        disc_exact: None,
        disc_net: None,
        total_net: None,
        nll_exact: None,
        nll_net: None,
    }
}

/// (a): prediction errors at the times of the exact trajectories.
fn trajectory_points(config: &Config, g: &GroupData, key: &str) -> Result<Vec<Point>> {
    let schedule = schedule::parse(&g.info.schedule)?;
    let s = schedule.as_ref();
    let grid = Grid::parse(&grid_spec("logsnr", config.trajectory_steps, s), s)?;
    let env = Env {
        schedule: s,
        mixture: Some(&g.mixture),
        noise_seed: 0,
    };
    let mut built = reference_solver(config, &env)?;
    let model = Model::new(&g.mixture, s);
    let (times, states) = solver::trajectory(built.solver.as_mut(), &model, &grid, g.x_t.view())?;
    let mut points = Vec::new();
    for (&t, x) in times.iter().zip(&states) {
        let at = s.level(t);
        let mut p = empty(key, &g.info.key, "trajectory");
        p.t = Some(t);
        p.sigma = Some(at.sigma);
        let mut errs = Vec::new();
        for kind in [Prediction::X0, Prediction::Eps, Prediction::Velocity] {
            let mut exact = Array2::zeros(x.dim());
            let mut learned = Array2::zeros(x.dim());
            g.mixture.predict(kind, x.view(), &at, exact.view_mut())?;
            g.net.predict(kind, x.view(), &at, learned.view_mut())?;
            errs.push((
                rms(&learned, &exact),
                crate::metrics::order::rms_norm(exact.view()),
            ));
        }
        p.x0_error = Some(errs[0].0);
        p.eps_error = Some(errs[1].0);
        p.velocity_error = Some(errs[2].0);
        p.velocity_rel_error = Some(errs[2].0 / errs[2].1);
        points.push(p);
    }
    Ok(points)
}

impl Study for Learned {
    const KIND: &'static str = "learned_vs_exact";
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
                ("nets", config.nets.len()),
                ("solvers", config.solvers.len()),
            ],
        )?;
        check_nfe_targets(kind, &config.nfe)?;
        if config.samples < 2 {
            return Err(bad_option(
                kind,
                "samples",
                format!("{} is too few: need at least 2", config.samples),
            ));
        }
        if config.trajectory_steps == 0 || config.trajectory_steps > crate::limits::MAX_STEPS {
            return Err(bad_option(
                kind,
                "trajectory_steps",
                format!(
                    "{} is not in 1..={}",
                    config.trajectory_steps,
                    crate::limits::MAX_STEPS
                ),
            ));
        }
        if !(config.reference_tol > 0.0 && config.reference_tol < 1.0) {
            return Err(bad_option(
                kind,
                "reference_tol",
                format!("{} is not in (0, 1)", config.reference_tol),
            ));
        }
        let mut units = Vec::new();
        for net in &config.nets {
            for solver in
                std::iter::once("trajectory").chain(config.solvers.iter().map(String::as_str))
            {
                units.push(Unit {
                    key: format!("{net}|{solver}"),
                    group: net.clone(),
                });
            }
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let g = self.group(config, &unit.group)?;
        let solver_text = &unit.key[unit.group.len() + 1..];
        if solver_text == "trajectory" {
            return Ok((g.info.clone(), trajectory_points(config, &g, &unit.key)?));
        }
        let schedule = schedule::parse(&g.info.schedule)?;
        let s = schedule.as_ref();
        let env = Env {
            schedule: s,
            mixture: Some(&g.mixture),
            noise_seed: 0,
        };
        let probe = solver::build(solver_text, &env)?;
        let grid_of = |steps: usize| Grid::parse(&grid_spec("logsnr", steps, s), s);
        let nfe_of = |grid: &Grid| {
            probe.solver.nfe(grid, s).ok_or_else(|| {
                Error::Domain(format!(
                    "solver '{solver_text}' has no fixed NFE (adaptive)"
                ))
            })
        };
        let at1 = s.level(g.info.t_end);
        let mut points = Vec::new();
        for (_, steps) in step_counts(&config.nfe, |n| nfe_of(&grid_of(n)?))? {
            let grid = grid_of(steps)?;
            let run = |oracle: &dyn Oracle| -> Result<Array2<f64>> {
                let mut built = solver::build(solver_text, &env)?;
                solver::integrate(
                    built.solver.as_mut(),
                    &Model::new(oracle, s),
                    &grid,
                    g.x_t.view(),
                )
            };
            let (x_exact, x_net) = (run(&g.mixture)?, run(&g.net)?);
            let mut p = empty(&unit.key, &g.info.key, solver_text);
            p.steps = steps;
            p.nfe = nfe_of(&grid)?;
            p.disc_exact = Some(rms(&x_exact, &g.ref_exact));
            p.disc_net = Some(rms(&x_net, &g.ref_net));
            p.total_net = Some(rms(&x_net, &g.ref_exact));
            p.nll_exact = Some(nll(&g.mixture, x_exact.view(), &at1)?);
            p.nll_net = Some(nll(&g.mixture, x_net.view(), &at1)?);
            points.push(p);
        }
        Ok((g.info.clone(), points))
    }

    fn summarize(_config: &Config, groups: &[Group], points: &[Point]) -> Summary {
        let mut crossovers = Vec::new();
        for g in groups {
            let mut solvers: Vec<&str> = Vec::new();
            for p in points.iter().filter(|p| p.net == g.key && p.t.is_none()) {
                if !solvers.contains(&p.solver.as_str()) {
                    solvers.push(&p.solver);
                }
            }
            for solver in solvers {
                let mine: Vec<&Point> = points
                    .iter()
                    .filter(|p| p.net == g.key && p.solver == solver)
                    .collect();
                let from = |value: fn(&Point) -> Option<f64>| {
                    let mut nfe = None;
                    for p in mine.iter().rev() {
                        match value(p) {
                            Some(v) if v < g.net_error => nfe = Some(p.nfe),
                            _ => break,
                        }
                    }
                    nfe
                };
                crossovers.push(Crossover {
                    net: g.key.clone(),
                    solver: solver.to_string(),
                    net_error: g.net_error,
                    nfe_exact: from(|p| p.disc_exact),
                    nfe_net: from(|p| p.disc_net),
                });
            }
        }
        Summary { crossovers }
    }
}
