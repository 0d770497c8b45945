//! Flow maps: the solution map Psi_{s->t} of the probability-flow ODE between any two noise
//! levels s > t (s the noisier), applied to a batch, and what approximates it.
//!
//! - [`Exact`]: the closed form of a Gaussian ([`crate::GaussianFlow`]), no evaluations; it is
//!   also defined for s < t (its inverse).
//! - [`Reference`]: DOP853 in lambda at rtol = atol = 1e-12 (`solver::reference`), for mixtures.
//! - [`SolverMap`]: any registered deterministic solver with n steps between s and t, its grid
//!   placed by a grid spec (`time-uniform`, `logsnr`, `karras`, ...) with the end points s and t.
//!   DDIM with one step is a flow map, so solvers and learned maps meet on the same footing.
//! - [`net::FlowNet`]: a two-time network in one of the parameterisations of [`param`].
//!
//! Every map counts its network calls: one per [`FlowMap::apply`] for a learned map, the oracle's
//! evaluations for a solver, none for the exact map. [`sample`] applies a map along a grid with
//! CTM's gamma-sampling (gamma = 0 deterministic, gamma = 1 the multistep sampling of
//! consistency models).

pub mod distill;
pub mod free;
pub mod loss;
pub mod net;
pub mod param;
pub mod sample;

use crate::error::{Error, Result};
use crate::gaussian_flow::GaussianFlow;
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::oracle::{check_batch, Counted, Oracle};
use crate::schedule::Schedule;
use crate::solver::{self, Env, Model};
use ndarray::{ArrayView2, ArrayViewMut2};

pub use sample::sample;

/// An approximation of (or the exact) Psi_{s->t}.
pub trait FlowMap: Sync {
    fn dim(&self) -> usize;
    /// Psi_{s->t} of the rows of `x` into `out` (same shape), for s >= t on the map's schedule.
    fn apply(&self, x: ArrayView2<f64>, s: f64, t: f64, out: ArrayViewMut2<f64>) -> Result<()>;
    /// Network calls made so far.
    fn calls(&self) -> usize;
    /// Whether the map was made for every pair s > t; `false` for maps trained only onto t = 0
    /// (consistency distillation) or onto their own grid (progressive distillation).
    fn anytime(&self) -> bool {
        true
    }
    /// The levels of a map valid only on its own grid (noisiest first; progressive distillation).
    fn levels(&self) -> Option<&[f64]> {
        None
    }
}

/// The checks every map makes: s >= t, both on the schedule, and the batch shape.
pub fn check_pair(
    schedule: &dyn Schedule,
    dim: usize,
    x: &ArrayView2<f64>,
    s: f64,
    t: f64,
    out: &ArrayViewMut2<f64>,
) -> Result<()> {
    schedule.check_t(s)?;
    schedule.check_t(t)?;
    if s < t {
        return Err(Error::Domain(format!(
            "a flow map runs from s to t <= s, got s = {s} and t = {t}"
        )));
    }
    check_batch(dim, x, out)
}

/// The closed-form map of a single Gaussian.
pub struct Exact<'a> {
    pub flow: GaussianFlow,
    pub schedule: &'a dyn Schedule,
    dim: usize,
}

impl<'a> Exact<'a> {
    pub fn new(mixture: &GaussianMixture, schedule: &'a dyn Schedule) -> Result<Self> {
        Ok(Exact {
            flow: GaussianFlow::new(mixture)?,
            schedule,
            dim: mixture.dim(),
        })
    }

    /// Psi_{s->t} for any s and t (s < t is the inverse map).
    pub fn map(&self, x: ArrayView2<f64>, s: f64, t: f64, out: ArrayViewMut2<f64>) -> Result<()> {
        self.schedule.check_t(s)?;
        self.schedule.check_t(t)?;
        self.flow
            .map(&self.schedule.level(s), &self.schedule.level(t), x, out)
    }
}

impl FlowMap for Exact<'_> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn apply(&self, x: ArrayView2<f64>, s: f64, t: f64, out: ArrayViewMut2<f64>) -> Result<()> {
        check_pair(self.schedule, self.dim, &x, s, t, &out)?;
        self.map(x, s, t, out)
    }
    fn calls(&self) -> usize {
        0
    }
}

/// A registered solver between s and t, on an oracle.
pub struct SolverMap<'a> {
    pub oracle: Counted<&'a dyn Oracle>,
    pub schedule: &'a dyn Schedule,
    pub mixture: Option<&'a GaussianMixture>,
    /// The solver spec (`ddim`, `dpm-solver++:order=2`, ...).
    pub solver: String,
    /// The grid kind and its options, without end points or step count (`logsnr`, `karras:rho=7`).
    pub grid: String,
    pub steps: usize,
}

impl<'a> SolverMap<'a> {
    pub fn new(
        oracle: &'a dyn Oracle,
        schedule: &'a dyn Schedule,
        mixture: Option<&'a GaussianMixture>,
        solver: &str,
        grid: &str,
        steps: usize,
    ) -> Result<Self> {
        let map = SolverMap {
            oracle: Counted::new(oracle),
            schedule,
            mixture,
            solver: solver.into(),
            grid: grid.into(),
            steps,
        };
        if map.build()?.solver.as_mut().noise().is_some() {
            return Err(Error::Domain(format!(
                "solver '{solver}' is stochastic; a flow map needs a deterministic solver"
            )));
        }
        Ok(map)
    }

    fn build(&self) -> Result<solver::Built> {
        let env = Env {
            schedule: self.schedule,
            mixture: self.mixture,
            noise_seed: 0,
        };
        solver::build(&self.solver, &env)
    }
}

/// Every N/k-th of the levels t_0 > ... > t_N (k steps, from t_0 to t_N); `None` unless
/// 1 <= k and k divides N.
pub fn every(levels: &[f64], k: usize) -> Option<Vec<f64>> {
    let n = levels.len().checked_sub(1)?;
    (k >= 1 && k <= n && n.is_multiple_of(k))
        .then(|| levels.iter().step_by(n / k).copied().collect())
}

/// `kind[:options]` with the end points s > t and `steps` steps filled in: `t_start`/`t_end` for
/// the time and log-SNR grids, `sigma_max`/`sigma_min` = sigma/alpha at s and t for `karras` and
/// `exponential` (with `zero=true` when t has sigma = 0; the last positive level is then the
/// spec's `sigma_min`).
pub fn grid_between(
    spec: &str,
    schedule: &dyn Schedule,
    s: f64,
    t: f64,
    steps: usize,
) -> Result<Grid> {
    if steps == 1 {
        return Grid::explicit(vec![s, t], &format!("{s},{t}"), schedule);
    }
    let kind = spec.split(':').next().unwrap_or("");
    let rho = |u: f64| {
        let at = schedule.level(u);
        at.sigma / at.alpha
    };
    let ends = match kind {
        "karras" | "exponential" if rho(t) == 0.0 => format!("sigma_max={},zero=true", rho(s)),
        "karras" | "exponential" => format!("sigma_max={},sigma_min={}", rho(s), rho(t)),
        _ => format!("t_start={s},t_end={t}"),
    };
    let sep = if spec.contains(':') { ',' } else { ':' };
    Grid::parse(&format!("{spec}{sep}{ends},steps={steps}"), schedule)
}

impl FlowMap for SolverMap<'_> {
    fn dim(&self) -> usize {
        self.oracle.dim()
    }
    fn apply(&self, x: ArrayView2<f64>, s: f64, t: f64, mut out: ArrayViewMut2<f64>) -> Result<()> {
        check_pair(self.schedule, self.dim(), &x, s, t, &out)?;
        if s == t {
            out.assign(&x);
            return Ok(());
        }
        let grid = grid_between(&self.grid, self.schedule, s, t, self.steps)?;
        let mut built = self.build()?;
        let model = Model::new(&self.oracle, self.schedule);
        out.assign(&solver::integrate(built.solver.as_mut(), &model, &grid, x)?);
        Ok(())
    }
    fn calls(&self) -> usize {
        self.oracle.nfe()
    }
}

/// The reference map: [`SolverMap`] with `reference:rtol=1e-12,atol=1e-12`, one adaptive step.
pub struct Reference;

impl Reference {
    pub fn map<'a>(
        oracle: &'a dyn Oracle,
        schedule: &'a dyn Schedule,
        rtol: f64,
    ) -> Result<SolverMap<'a>> {
        SolverMap::new(
            oracle,
            schedule,
            None,
            &format!("reference:rtol={rtol:e},atol={rtol:e}"),
            "time-uniform",
            1,
        )
    }
}
