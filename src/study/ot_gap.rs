//! The optimal-transport gap and the straightness of the PF-ODE map, per problem and schedule.
//!
//! `samples` points x_T ~ p_T at the schedule's start ([`super::convergence::range`]) are carried
//! to the schedule's end t_min (sigma = 0 on vp-linear, vp-cosine, edm and flow) by the
//! `reference` solver (DOP853 to 1e-12; the last step integrated in sigma/alpha down to 0).
//!
//! - `flow_cost` = (1/N) sum |x_0 - x_T|^2 of the coupling the flow produces; `ot_cost` = the
//!   optimal assignment cost of the same two point sets (the empirical W2^2, exact);
//!   `gap` = flow_cost - ot_cost >= 0 and `rel_gap` = gap / ot_cost. Even an optimal map has a
//!   positive empirical gap at finite N (the assignment also fits the sampling noise); the
//!   single-Gaussian rows measure that baseline.
//! - Single Gaussian: `bures` = W2^2(p_T, p_0) in closed form, `flow_cost_exact` = the cost of the
//!   exact flow's coupling (an affine map, pushed exactly) and `flow_cost_reference` the same for
//!   the reference solver's map. For a Gaussian the PF-ODE map is the OT map (a symmetric
//!   positive-definite linear map), so both equal `bures` to rounding: the gap vanishes.
//! - Straightness, in the schedule's time normalized to s = (T - t)/(T - t_end):
//!   `straightness` = (E int_0^1 |dx/ds|^2 ds - E|x_0 - x_T|^2) / E|x_0 - x_T|^2, the excess kinetic
//!   energy over straight constant-speed paths (0 iff every path is a straight line run at
//!   constant speed), and `path_excess` = E[length / |x_0 - x_T|] - 1, which ignores the speed.
//!   The integrals use 16-point Gauss-Legendre on `segments` intervals uniform in lambda from
//!   lambda(T) to sigma/alpha = 1e-4, plus the remaining interval to t_end by the rectangle rule.
//! - For 2-D problems the first `paths` trajectories are stored at every node for the plots.

use super::convergence::range;
use super::{seed_for, Keyed, Study, Unit};
use crate::error::{Error, Result};
use crate::gaussian_flow::GaussianFlow;
use crate::grid::Grid;
use crate::metrics::distribution::{assignment_cost, MAX_ASSIGNMENT};
use crate::metrics::GaussianLaw;
use crate::prediction::Prediction;
use crate::problems;
use crate::schedule;
use crate::solver::{self, quadrature::gauss_legendre_nodes, Env, Model};
use crate::Counted;
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    pub schedules: Vec<String>,
    pub samples: usize,
    pub seed: u64,
    pub reference: String,
    pub segments: usize,
    pub paths: usize,
}

impl Config {
    /// The main study: gauss4, ring2d, aniso16 x vp-linear, vp-cosine, edm, flow, 1000 samples,
    /// seed 1, 8 quadrature segments, 48 stored paths.
    pub fn main() -> Self {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Config {
            problems: v(&["gauss4", "ring2d", "aniso16"]),
            schedules: v(&["vp-linear", "vp-cosine", "edm", "flow"]),
            samples: 1000,
            seed: 1,
            reference: "reference".into(),
            segments: 8,
            paths: 48,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectories {
    pub times: Vec<f64>,
    /// `paths[i][k]` = the i-th path at `times[k]`.
    pub paths: Vec<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub unit: String,
    pub problem: String,
    pub schedule: String,
    pub t_start: f64,
    pub t_end: f64,
    pub samples: usize,
    pub reference_nfe: usize,
    pub flow_cost: f64,
    pub ot_cost: f64,
    pub gap: f64,
    pub rel_gap: f64,
    pub bures: Option<f64>,
    pub flow_cost_exact: Option<f64>,
    pub flow_cost_reference: Option<f64>,
    pub straightness: f64,
    pub path_excess: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<Trajectories>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {}

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

pub struct OtGap;

/// Grid times from T down to sigma/alpha = 1e-4 (segment ends and 16 Gauss-Legendre nodes each,
/// uniform in lambda), then t_end; and the quadrature (index into times, weight in t).
fn nodes(
    s: &dyn schedule::Schedule,
    t0: f64,
    t_end: f64,
    segments: usize,
) -> (Vec<f64>, Vec<(usize, f64)>, usize) {
    let l0 = s.lambda(t0);
    let l1 = s.lambda(t_end).min(1e-4f64.recip().ln());
    let h = (l1 - l0) / segments as f64;
    let gl = gauss_legendre_nodes();
    let mut times = vec![t0];
    let mut quad = Vec::new();
    for k in 0..segments {
        let a = l0 + k as f64 * h;
        for &(x, w) in &gl {
            let lam = a + h * (0.5 + 0.5 * x);
            let t = s.t_of_lambda(lam);
            let at = s.level(t);
            let dlambda_dt = at.dalpha / at.alpha - at.dsigma / at.sigma;
            quad.push((times.len(), 0.5 * h * w / dlambda_dt.abs()));
            times.push(t);
        }
        times.push(if k + 1 == segments {
            s.t_of_lambda(l1)
        } else {
            s.t_of_lambda(a + h)
        });
    }
    let tail = times.len() - 1;
    if t_end < times[tail] {
        times.push(t_end);
    }
    (times, quad, tail)
}

impl Study for OtGap {
    const KIND: &'static str = "ot_gap";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        let mut units = Vec::new();
        for p in &config.problems {
            problems::load(p)?;
            for sched in &config.schedules {
                schedule::parse(sched)?;
                let key = format!("{p}|{sched}");
                units.push(Unit {
                    key: key.clone(),
                    group: key,
                });
            }
        }
        if config.samples < 2 || config.samples > MAX_ASSIGNMENT || config.segments == 0 {
            return Err(Error::Domain(format!(
                "ot_gap needs 2 <= samples <= {MAX_ASSIGNMENT} (exact assignment) and segments >= 1; got samples = {}, segments = {}",
                config.samples, config.segments
            )));
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let (problem, sched) = unit.key.split_once('|').unwrap_or_default();
        let mixture = problems::load(problem)?;
        let schedule = schedule::parse(sched)?;
        let s = schedule.as_ref();
        let (t0, _) = range(s);
        let t_end = s.t_min();
        let (times, quad, tail) = nodes(s, t0, t_end, config.segments);
        let grid = Grid::explicit(times.clone(), "ot_gap nodes", s)?;
        let (at0, at_end) = (s.level(t0), s.level(t_end));
        let x_t = mixture.sample(
            config.samples,
            at0.alpha,
            at0.sigma,
            seed_for(config.seed, &unit.key),
        );
        let env = Env {
            schedule: s,
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let oracle = Counted::new(&mixture);
        let model = Model::new(&oracle, s);
        let mut reference = solver::build(&config.reference, &env)?;
        let (_, states) = solver::trajectory(reference.solver.as_mut(), &model, &grid, x_t.view())?;
        let reference_nfe = oracle.nfe();
        let x0 = states.last().expect("states");
        let dx = x0 - &x_t;
        let chord2: Vec<f64> = dx.rows().into_iter().map(|r| r.dot(&r)).collect();
        let flow_cost = chord2.iter().sum::<f64>() / chord2.len() as f64;
        let ot_cost = assignment_cost(x_t.view(), x0.view())?;
        let n = x_t.nrows();
        let (mut kinetic, mut length) = (vec![0.0; n], vec![0.0; n]);
        let mut add = |idx: usize, w: f64| -> Result<()> {
            let v = model.eval(Prediction::Velocity, &states[idx], times[idx])?;
            for (i, row) in v.axis_iter(Axis(0)).enumerate() {
                let sq = row.dot(&row);
                kinetic[i] += w * sq;
                length[i] += w * sq.sqrt();
            }
            Ok(())
        };
        for &(idx, w) in &quad {
            add(idx, w)?;
        }
        if times.len() > tail + 1 {
            add(tail, times[tail] - times[tail + 1])?;
        }
        let span = t0 - t_end;
        let straightness = (kinetic.iter().sum::<f64>() * span / n as f64 - flow_cost) / flow_cost;
        let path_excess = length
            .iter()
            .zip(&chord2)
            .map(|(l, c)| l / c.sqrt() - 1.0)
            .sum::<f64>()
            / n as f64;
        let (mut bures, mut exact, mut by_reference) = (None, None, None);
        if mixture.n_components() == 1 {
            let c = mixture.component(0);
            let (p_t, p_end) = (
                GaussianLaw::marginal(c, at0.alpha, at0.sigma),
                GaussianLaw::marginal(c, at_end.alpha, at_end.sigma),
            );
            let probes = p_t.probes();
            let mut img = Array2::zeros(probes.dim());
            GaussianFlow::new(&mixture)?.map(&at0, &at_end, probes.view(), img.view_mut())?;
            bures = Some(p_t.w2(&p_end)?.powi(2));
            exact = Some(p_t.coupling_cost(&p_t.pushed(img.view())?));
            let mut r = solver::build(&config.reference, &env)?;
            let img = solver::integrate(r.solver.as_mut(), &model, &grid, probes.view())?;
            by_reference = Some(p_t.coupling_cost(&p_t.pushed(img.view())?));
        }
        let trajectories = (crate::Oracle::dim(&mixture) == 2).then(|| Trajectories {
            times: times.clone(),
            paths: (0..config.paths.min(n))
                .map(|i| states.iter().map(|x| [x[(i, 0)], x[(i, 1)]]).collect())
                .collect(),
        });
        let point = Point {
            unit: unit.key.clone(),
            problem: problem.into(),
            schedule: sched.into(),
            t_start: t0,
            t_end,
            samples: n,
            reference_nfe,
            flow_cost,
            ot_cost,
            gap: flow_cost - ot_cost,
            rel_gap: (flow_cost - ot_cost) / ot_cost,
            bures,
            flow_cost_exact: exact,
            flow_cost_reference: by_reference,
            straightness,
            path_excess,
            trajectories,
        };
        Ok((
            Group {
                key: unit.key.clone(),
            },
            vec![point],
        ))
    }

    fn summarize(_: &Config, _: &[Group], _: &[Point]) -> Summary {
        Summary {}
    }
}
