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
//! - The OT certificate (Brenier): the Jacobian J of the reference map x_T -> x_end at the first
//!   `jacobians` samples, by the variational equation ([`crate::tangent::map_jacobian`] with the
//!   reference solver on the one step T -> t_end). An OT map is the gradient of a convex
//!   function, so its J is symmetric PSD; `asymmetry` = ||J - J^T||_F / ||J||_F (median, 90th
//!   percentile, max over samples) and the smallest eigenvalue of (J + J^T)/2 certify how far
//!   the PF-ODE map is from OT pointwise. A single Gaussian gives asymmetry 0 to rounding. For
//!   2-D problems the (x_end, asymmetry) pairs are stored for the map plot.
//! - A lower bound on the cost gap E|T(x) - x|^2 - W2^2: the assignment cost between
//!   *independent* draws of p_T and p_end (N each, `replicates` times) has expectation at least
//!   W2^2 (W2^2 is jointly convex and the empirical measures average to the true ones), so
//!   `gap_lower` = flow_cost - mean assignment cost underestimates the gap, and
//!   `gap_lower_95` = gap_lower - 1.645 sqrt(se_flow^2 + se_ot^2) is a one-sided 95% lower
//!   confidence bound. A positive `gap_lower_95` certifies a cost gap; the estimator's upward
//!   bias in W2^2 (O(N^{-2/d}) and larger in high d) makes it inconclusive where it is negative.

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
    /// Samples whose map Jacobian is computed (the OT certificate).
    #[serde(default)]
    pub jacobians: usize,
    /// Independent assignment replicates of the cost-gap lower bound.
    #[serde(default)]
    pub replicates: usize,
    /// Problems whose map is only certified: on the first schedule, with `jacobians` samples and
    /// no assignment bound (for mixtures too costly for the full study, e.g. the EDM2 tree).
    #[serde(default)]
    pub map_only: Vec<String>,
}

impl Config {
    /// The main study: gauss4, ring2d, aniso16, cross2d x vp-linear, vp-cosine, edm, flow, 1000
    /// samples, seed 1, 8 quadrature segments, 48 stored paths, 200 Jacobians, 4 independent
    /// assignment replicates; the EDM2 tree's map certified on vp-linear.
    pub fn main() -> Self {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Config {
            problems: v(&["gauss4", "ring2d", "aniso16", "cross2d"]),
            schedules: v(&["vp-linear", "vp-cosine", "edm", "flow"]),
            samples: 1000,
            seed: 1,
            reference: "reference".into(),
            segments: 8,
            paths: 48,
            jacobians: 200,
            replicates: 4,
            map_only: v(&["edm2_tree2d"]),
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

/// The OT certificate of one (problem, schedule): see the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub jacobians: usize,
    pub asymmetry_median: f64,
    pub asymmetry_p90: f64,
    pub asymmetry_max: f64,
    /// The smallest eigenvalue of (J + J^T)/2 over the samples.
    pub min_sym_eig: f64,
    /// The fraction of samples whose symmetric part is not positive definite.
    pub indefinite_fraction: f64,
    pub flow_cost_se: f64,
    /// Mean assignment cost of independent draws (an over-estimate of W2^2) and its SE.
    pub ot_independent: Option<f64>,
    pub ot_independent_se: Option<f64>,
    pub gap_lower: Option<f64>,
    pub gap_lower_95: Option<f64>,
    /// For 2-D problems: (x_end_1, x_end_2, asymmetry) per Jacobian sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map: Vec<[f64; 3]>,
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
        if let Some(sched) = config.schedules.first() {
            for p in &config.map_only {
                problems::load(p)?;
                units.push(Unit {
                    key: format!("{p}|{sched}|map"),
                    group: format!("{p}|{sched}|map"),
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
        let mut parts = unit.key.split('|');
        let (problem, sched) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let map_only = parts.next() == Some("map");
        let samples = if map_only {
            config.jacobians.max(2)
        } else {
            config.samples
        };
        let mixture = problems::load(problem)?;
        let schedule = schedule::parse(sched)?;
        let s = schedule.as_ref();
        let (t0, _) = range(s);
        let t_end = s.t_min();
        let (times, quad, tail) = nodes(s, t0, t_end, config.segments);
        let grid = Grid::explicit(times.clone(), "ot_gap nodes", s)?;
        let (at0, at_end) = (s.level(t0), s.level(t_end));
        let x_t = mixture.sample(
            samples,
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
        let certificate = if config.jacobians > 0 {
            let m = config.jacobians.min(n);
            let two = Grid::explicit(vec![t0, t_end], "ot_gap map", s)?;
            let mut r = solver::build(&config.reference, &env)?;
            let (x_end, jac) = crate::tangent::map_jacobian(
                r.solver.as_mut(),
                &mixture,
                s,
                &two,
                x_t.slice(ndarray::s![..m, ..]),
            )?;
            let stats: Vec<crate::tangent::JacobianStats> = jac
                .axis_iter(Axis(0))
                .map(crate::tangent::JacobianStats::of)
                .collect::<Result<_>>()?;
            let mut asym: Vec<f64> = stats.iter().map(|st| st.asymmetry).collect();
            let map = if crate::Oracle::dim(&mixture) == 2 {
                (0..m)
                    .map(|i| [x_end[(i, 0)], x_end[(i, 1)], asym[i]])
                    .collect()
            } else {
                Vec::new()
            };
            asym.sort_by(f64::total_cmp);
            let q = |p: f64| asym[((p * (m - 1) as f64).round() as usize).min(m - 1)];
            let se_f = crate::metrics::mean_se(&chord2).se;
            let costs: Vec<f64> = (0..if map_only { 0 } else { config.replicates })
                .map(|r| {
                    let key = format!("{}/independent/{r}", unit.key);
                    let a = mixture.sample(
                        n,
                        at0.alpha,
                        at0.sigma,
                        seed_for(config.seed, &format!("{key}/T")),
                    );
                    let b = mixture.sample(
                        n,
                        at_end.alpha,
                        at_end.sigma,
                        seed_for(config.seed, &format!("{key}/end")),
                    );
                    assignment_cost(a.view(), b.view())
                })
                .collect::<Result<_>>()?;
            let rr = costs.len() as f64;
            let ot = (!costs.is_empty()).then(|| costs.iter().sum::<f64>() / rr);
            let se_ot = ot.filter(|_| costs.len() > 1).map(|ot| {
                (costs.iter().map(|c| (c - ot).powi(2)).sum::<f64>() / (rr - 1.0) / rr).sqrt()
            });
            let gap_lower = ot.map(|ot| flow_cost - ot);
            Some(Certificate {
                jacobians: m,
                asymmetry_median: q(0.5),
                asymmetry_p90: q(0.9),
                asymmetry_max: asym[m - 1],
                min_sym_eig: stats
                    .iter()
                    .map(|st| st.min_sym_eig)
                    .fold(f64::INFINITY, f64::min),
                indefinite_fraction: stats.iter().filter(|st| st.min_sym_eig <= 0.0).count() as f64
                    / m as f64,
                flow_cost_se: se_f,
                ot_independent: ot,
                ot_independent_se: se_ot,
                gap_lower,
                gap_lower_95: gap_lower
                    .zip(se_ot)
                    .map(|(g, se)| g - 1.645 * (se_f * se_f + se * se).sqrt()),
                map,
            })
        } else {
            None
        };
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
            certificate,
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
