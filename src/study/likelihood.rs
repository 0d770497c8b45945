//! The likelihood study: how wrong each way of computing log p is, against the exact log p of the
//! mixture ([`crate::likelihood`] has the math).
//!
//! A unit is a problem with a model: the exact mixture (`exact`) or a committed network
//! (`net:FILE`). `samples` points x ~ p_0 (seed per unit) are evaluated at t_min = the
//! schedule's t_min for the mixture (sigma = 0) and t_net (1e-3) for a network, whose truth is
//! the exact log p_{t_net}. Points (`view`):
//!
//! - `ode`: the change of variables by `integrator` (reference, euler, heun, rk4) at `steps`
//!   (time-uniform), with the exact divergence or Hutchinson's at 1, 4, 16 Rademacher probes, and
//!   a prior (exact, standard, kdiffusion): mean and RMS of log p - exact, its standard error.
//!   For Hutchinson the RMS error is the estimator's standard deviation (it is unbiased).
//! - `map`: a sampler's discrete map x_T -> x_end on `logsnr:steps=N` (to t = 1e-3) from the
//!   exact p_T: the density it implies, log q(x_end) = log p_T(x_T) - log |det J| by forward mode
//!   through its steps ([`crate::tangent::map_jacobian`]), against the exact log p at x_end. The
//!   mean of log q - log p over x_T ~ p_T is KL(q || p_{t_end}): the sampler's KL, exactly up to
//!   Monte Carlo, without density estimation.
//! - `elbo`: the continuous-time bound and the DDPM bound at T steps, with the exact and the
//!   standard prior, on clean draws x0 ~ p_0 (for a network the lambda integral stops at t_net):
//!   the mean bound, and its gap below the exact log p_0; for the exact mixture also on the
//!   `elbo_schedules` (exact prior; DDPM only where the schedule is variance-preserving).

use super::{seed_for, Keyed, Study, Unit};
use crate::error::{Error, Result};
use crate::grid::Grid;
use crate::likelihood::{self, Divergence, Integrator, Method, Prior};
use crate::oracle::Oracle;
use crate::problems;
use crate::schedule::{self, Schedule};
use crate::solver::{self, Env};
use crate::tangent::{self, JacobianStats};
use ndarray::{Array1, Axis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    /// Networks (safetensors with `problem` and `schedule` metadata), each a unit beside the exact
    /// mixture of its problem.
    pub nets: Vec<String>,
    pub schedule: String,
    pub samples: usize,
    pub seed: u64,
    pub reference: String,
    pub integrators: Vec<String>,
    pub steps: Vec<usize>,
    pub probes: Vec<usize>,
    pub samplers: Vec<String>,
    pub sampler_steps: Vec<usize>,
    pub ddpm_steps: Vec<usize>,
    /// Further schedules on which the exact-mixture units compute the bounds (the DDPM bound only
    /// on variance-preserving ones).
    #[serde(default)]
    pub elbo_schedules: Vec<String>,
    pub replicates: usize,
    pub panels: usize,
}

impl Config {
    /// gauss4, ring2d, aniso16 on vp-linear and the ring2d, aniso16 networks; 500 points, seed 1.
    pub fn main() -> Self {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Config {
            problems: v(&["gauss4", "ring2d", "aniso16"]),
            nets: v(&[
                "results/models/ring2d.safetensors",
                "results/models/aniso16.safetensors",
            ]),
            schedule: "vp-linear".into(),
            samples: 500,
            seed: 1,
            reference: "reference:rtol=1e-10,atol=1e-10".into(),
            integrators: v(&["euler", "heun", "rk4"]),
            steps: vec![4, 8, 16, 32, 64, 128],
            probes: vec![1, 4, 16],
            samplers: v(&["ddim", "dpm-solver++:order=2", "unipc:order=2", "heun"]),
            sampler_steps: vec![4, 8, 16, 32],
            ddpm_steps: vec![10, 100, 1000],
            elbo_schedules: v(&["vp-cosine", "edm", "flow"]),
            replicates: 8,
            panels: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub problem: String,
    pub model: String,
    pub t_min: f64,
    pub t_max: f64,
    /// Mean exact log p of the points at t_min.
    pub exact_log_p: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub unit: String,
    pub key: String,
    pub view: String,
    /// The integrator, the sampler or the bound.
    pub method: String,
    pub steps: usize,
    pub nfe: usize,
    pub divergence: String,
    pub prior: String,
    /// Mean log p (or bound, or log q) over the points.
    pub mean: f64,
    /// Mean of the value minus the exact log p (for `map`: the KL estimate).
    pub error: f64,
    /// Standard error of `error` over the points (Monte Carlo SE for the bounds).
    pub error_se: f64,
    /// RMS of the value minus the exact log p.
    pub rms_error: f64,
    /// The schedule of an `elbo` point from `elbo_schedules` (empty: the study's schedule).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
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

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {}

pub struct LikelihoodStudy;

/// The network's t_min.
pub const T_NET: f64 = 1e-3;

fn stats(err: &Array1<f64>) -> (f64, f64, f64) {
    let n = err.len() as f64;
    let m = err.sum() / n;
    let var = err.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let rms = (err.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
    (m, (var / n).sqrt(), rms)
}

struct Ctx<'a> {
    unit: &'a str,
    schedule: String,
    points: Vec<Point>,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        view: &str,
        method: &str,
        steps: usize,
        nfe: usize,
        divergence: &str,
        prior: &str,
        value: &Array1<f64>,
        exact: &Array1<f64>,
        se: Option<f64>,
    ) {
        let err = value - exact;
        let (e, e_se, rms) = stats(&err);
        self.points.push(Point {
            unit: self.unit.into(),
            key: if self.schedule.is_empty() {
                format!("{}|{view}|{method}|{steps}|{divergence}|{prior}", self.unit)
            } else {
                format!(
                    "{}|{view}|{method}|{steps}|{divergence}|{prior}|{}",
                    self.unit, self.schedule
                )
            },
            view: view.into(),
            method: method.into(),
            steps,
            nfe,
            divergence: divergence.into(),
            prior: prior.into(),
            mean: value.mean().unwrap_or(f64::NAN),
            error: e,
            error_se: se.unwrap_or(e_se),
            rms_error: rms,
            schedule: self.schedule.clone(),
        });
    }
}

fn load_model(model: &str) -> Result<(Box<dyn Oracle>, String, Option<String>)> {
    let path = model.strip_prefix("net:").unwrap_or(model);
    let loaded = crate::nn::weights::load(path)?;
    let problem = loaded.problem().map(String::from).ok_or_else(|| {
        Error::invalid(
            path,
            Some("metadata.problem".into()),
            "the network records no problem",
        )
    })?;
    let sched = loaded.schedule().map(String::from);
    Ok((Box::new(loaded.net), problem, sched))
}

impl Study for LikelihoodStudy {
    const KIND: &'static str = "likelihood";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        schedule::parse(&config.schedule)?;
        Integrator::parse(&config.reference)?;
        for i in &config.integrators {
            Integrator::parse(i)?;
        }
        if config.samples < 2 || config.replicates == 0 || config.panels == 0 {
            return Err(Error::Domain(
                "likelihood needs samples >= 2, replicates >= 1 and panels >= 1".into(),
            ));
        }
        let mut units = Vec::new();
        for p in &config.problems {
            problems::load(p)?;
            units.push(Unit {
                key: format!("{p}|exact"),
                group: format!("{p}|exact"),
            });
        }
        for n in &config.nets {
            let (_, problem, _) = load_model(n)?;
            let key = format!("{problem}|net:{n}");
            units.push(Unit {
                key: key.clone(),
                group: key,
            });
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let (problem, model) = unit.key.split_once('|').unwrap_or_default();
        let mixture = problems::load(problem)?;
        let sched = schedule::parse(&config.schedule)?;
        let s: &dyn Schedule = sched.as_ref();
        let net = match model.strip_prefix("net:") {
            Some(path) => Some(load_model(path)?.0),
            None => None,
        };
        let oracle: &dyn Oracle = net.as_deref().unwrap_or(&mixture);
        let t_min = if net.is_some() { T_NET } else { s.t_min() };
        let t_max = super::convergence::range(s).0;
        let x0 = mixture.sample_p0(config.samples, seed_for(config.seed, &unit.key));
        let exact0 = mixture.log_density(x0.view(), &s.level(s.t_min()))?;
        let x = if t_min > s.t_min() {
            // Points of p_{t_net}: noised draws, as the network's truth is log p_{t_net}.
            let at = s.level(t_min);
            let z = crate::rng::standard_normal(
                x0.nrows(),
                x0.ncols(),
                seed_for(config.seed, &unit.key) ^ 1,
                3,
            );
            &x0 * at.alpha + &z * at.sigma
        } else {
            x0.clone()
        };
        let exact = mixture.log_density(x.view(), &s.level(t_min))?;
        let mut ctx = Ctx {
            unit: &unit.key,
            schedule: String::new(),
            points: Vec::new(),
        };
        let ll = |integrator: &str, steps: usize, div: &Divergence, prior: Prior| {
            let integrator = Integrator::parse(integrator)?;
            let times: Vec<f64> = match integrator {
                Integrator::Reference { .. } => vec![t_min, t_max],
                _ => (0..=steps)
                    .map(|i| t_min + (t_max - t_min) * i as f64 / steps as f64)
                    .collect(),
            };
            let method = Method {
                integrator,
                divergence: div.clone(),
                prior,
            };
            likelihood::log_likelihood(oracle, s, x.view(), &times, &method, Some(&mixture))
        };
        for prior in [Prior::Exact, Prior::Standard, Prior::KDiffusion] {
            let l = ll(&config.reference, 1, &Divergence::Exact, prior)?;
            ctx.push(
                "ode",
                "reference",
                1,
                l.nfe,
                "exact",
                &prior.to_string(),
                &l.log_p,
                &exact,
                None,
            );
        }
        for i in &config.integrators {
            for &n in &config.steps {
                let l = ll(i, n, &Divergence::Exact, Prior::Exact)?;
                ctx.push("ode", i, n, l.nfe, "exact", "exact", &l.log_p, &exact, None);
            }
        }
        for &k in &config.probes {
            let div = Divergence::Hutchinson {
                probes: k,
                probe: tangent::Probe::Rademacher,
                seed: seed_for(config.seed, &unit.key),
            };
            for (i, n) in [(config.reference.as_str(), 1), ("rk4", 32)] {
                let l = ll(i, n, &div, Prior::Exact)?;
                let name = if n == 1 { "reference" } else { i };
                ctx.push(
                    "ode",
                    name,
                    n,
                    l.nfe,
                    &format!("hutchinson:{k}"),
                    "exact",
                    &l.log_p,
                    &exact,
                    None,
                );
            }
        }
        let env = Env {
            schedule: s,
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let at_t = s.level(t_max);
        let x_t = mixture.sample_pt(
            config.samples,
            &at_t,
            seed_for(config.seed, &format!("{}/map", unit.key)),
        );
        let log_pt = mixture.log_density(x_t.view(), &at_t)?;
        for spec in &config.samplers {
            for &n in &config.sampler_steps {
                let grid = Grid::parse(
                    &format!("logsnr:steps={n},t_start={t_max},t_end={T_NET}"),
                    s,
                )?;
                let mut b = solver::build(spec, &env)?;
                let counted = crate::Counted::new(oracle);
                let (x_end, j) =
                    tangent::map_jacobian(b.solver.as_mut(), &counted, s, &grid, x_t.view())?;
                let log_det: Array1<f64> = j
                    .axis_iter(Axis(0))
                    .map(|j| JacobianStats::of(j).map(|st| st.log_det))
                    .collect::<Result<_>>()?;
                let log_q = &log_pt - &log_det;
                let truth = mixture.log_density(x_end.view(), &s.level(T_NET))?;
                ctx.push(
                    "map",
                    spec,
                    n,
                    counted.nfe(),
                    "exact",
                    "exact",
                    &log_q,
                    &truth,
                    None,
                );
            }
        }
        let bounds =
            |ctx: &mut Ctx, so: &dyn Schedule, t_lo: f64, priors: &[Prior]| -> Result<()> {
                let t_hi = super::convergence::range(so).0;
                let seed = seed_for(config.seed, &unit.key);
                let bound_se =
                    |se: &Array1<f64>| (se.mapv(|v| v * v).sum()).sqrt() / se.len() as f64;
                for &prior in priors {
                    let p = prior.to_string();
                    let b = likelihood::elbo_continuous(
                        oracle,
                        so,
                        x0.view(),
                        (t_lo, t_hi),
                        prior,
                        Some(&mixture),
                        (config.panels, config.replicates),
                        seed,
                    )?;
                    let (steps, se) = (config.panels * 16, bound_se(&b.se));
                    ctx.push(
                        "elbo",
                        "continuous",
                        steps,
                        b.nfe,
                        "",
                        &p,
                        &b.elbo,
                        &exact0,
                        Some(se),
                    );
                    if !likelihood::variance_preserving(so) {
                        continue;
                    }
                    for &n in &config.ddpm_steps {
                        let b = likelihood::elbo_ddpm(
                            oracle,
                            so,
                            x0.view(),
                            (so.t_min(), t_hi),
                            prior,
                            Some(&mixture),
                            (n, config.replicates),
                            seed,
                        )?;
                        let se = bound_se(&b.se);
                        ctx.push("elbo", "ddpm", n, b.nfe, "", &p, &b.elbo, &exact0, Some(se));
                    }
                }
                Ok(())
            };
        bounds(&mut ctx, s, t_min, &[Prior::Exact, Prior::Standard])?;
        if net.is_none() {
            for spec in &config.elbo_schedules {
                let other = schedule::parse(spec)?;
                ctx.schedule = other.spec();
                bounds(&mut ctx, other.as_ref(), other.t_min(), &[Prior::Exact])?;
            }
        }
        let group = Group {
            key: unit.key.clone(),
            problem: problem.into(),
            model: model.into(),
            t_min,
            t_max,
            exact_log_p: exact.mean().unwrap_or(f64::NAN),
        };
        Ok((group, ctx.points))
    }

    fn summarize(_: &Config, _: &[Group], _: &[Point]) -> Summary {
        Summary {}
    }
}
