//! Deterministic samplers for the probability-flow ODE, generic over the oracle.
//!
//! One driver, [`integrate`], walks the time grid; a [`Solver`] performs one step at a time and
//! keeps its own multistep history. Every model evaluation goes through the oracle, so wrapping
//! it in [`crate::Counted`] gives the exact NFE and the ordered list of noise levels.
//!
//! The registry [`SOLVERS`] maps CLI names to builders; adding a solver is one file plus one
//! line there, and the line enrolls it in the convergence tests (`tests/solvers.rs`) through
//! its `variants`.
//!
//! Conventions shared by the exponential-integrator family (ddim, dpm-solver, dpm-solver++,
//! dpm-adaptive, unipc): h = lambda_t - lambda_s > 0; "data" prediction is x0, "noise" is eps;
//! a step that ends at sigma = 0 (lambda = +inf) is the first-order limit x_t = alpha_t x0_hat(x_s),
//! one evaluation (k-diffusion's "denoise" on the final step, diffusers' `final_sigmas_type="zero"`).

use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::oracle::Oracle;
use crate::prediction::Prediction;
use crate::schedule::{NoiseLevel, Schedule};
use crate::spec::Spec;
use ndarray::{Array2, ArrayView2, Zip};
use rayon::prelude::*;

pub mod adams;
pub mod ald;
pub mod ancestral;
pub mod ddim;
pub mod dop853;
pub mod dpm_adaptive;
pub mod dpm_solver;
pub mod edm;
pub mod euler_maruyama;
pub mod exact;
pub mod expint;
pub mod langevin;
pub mod pc;
pub mod quadrature;
pub mod reference;
pub mod runge_kutta;
pub mod sde;
pub mod sde_dpm;
pub mod unipc;

/// The model a solver sees: an oracle under a schedule.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    pub oracle: &'a dyn Oracle,
    pub schedule: &'a dyn Schedule,
}

impl<'a> Model<'a> {
    pub fn new(oracle: &'a dyn Oracle, schedule: &'a dyn Schedule) -> Self {
        Model { oracle, schedule }
    }

    pub fn level(&self, t: f64) -> NoiseLevel {
        self.schedule.level(t)
    }

    pub fn lambda(&self, t: f64) -> f64 {
        self.schedule.lambda(t)
    }

    /// One evaluation: the prediction `kind` at the rows of `x` at time t, into `out` (which must
    /// have the shape of `x`; [`ensure`] makes it so without allocating after the first call).
    pub fn eval_into(
        &self,
        kind: Prediction,
        x: &Array2<f64>,
        t: f64,
        out: &mut Array2<f64>,
    ) -> Result<()> {
        ensure(out, x.dim());
        self.oracle
            .predict(kind, x.view(), &self.level(t), out.view_mut())?;
        if !all_finite(out) {
            return Err(Error::Domain(format!(
                "the model returned a non-finite {kind} prediction at t = {t}"
            )));
        }
        Ok(())
    }

    /// For a CFG++-guided oracle ([`Oracle::renoises_with_guide`]): the guided prediction into
    /// `out` and the guide's into `guide`, one evaluation.
    pub fn eval_with_guide(
        &self,
        kind: Prediction,
        x: &Array2<f64>,
        t: f64,
        out: &mut Array2<f64>,
        guide: &mut Array2<f64>,
    ) -> Result<()> {
        ensure(out, x.dim());
        ensure(guide, x.dim());
        self.oracle.predict_with_guide(
            kind,
            x.view(),
            &self.level(t),
            out.view_mut(),
            guide.view_mut(),
        )?;
        if !all_finite(out) || !all_finite(guide) {
            return Err(Error::Domain(format!(
                "the model returned a non-finite {kind} prediction at t = {t}"
            )));
        }
        Ok(())
    }

    /// [`Model::eval_into`] into a new array.
    pub fn eval(&self, kind: Prediction, x: &Array2<f64>, t: f64) -> Result<Array2<f64>> {
        let mut out = Array2::zeros(x.dim());
        self.eval_into(kind, x, t, &mut out)?;
        Ok(out)
    }
}

/// A one-step or multistep method. A solver is built for one run: [`Solver::plan`] is called once,
/// then [`Solver::step`] for i = 0..times.len()-1 in order.
pub trait Solver: Send {
    /// The theoretical order of convergence (global error O(h^order)).
    fn order(&self) -> usize;
    /// Evaluations per step in the steady state.
    fn nfe_per_step(&self) -> usize;
    /// The exact number of evaluations on this grid; `None` for adaptive methods.
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize>;
    /// The times the driver walks. The default is the grid itself; singlestep DPM-Solver-fast
    /// reads the grid as an NFE budget, adaptive methods walk only the end points.
    fn plan(&mut self, grid: &Grid, _schedule: &dyn Schedule) -> Result<Vec<f64>> {
        Ok(grid.times.clone())
    }
    /// Advances `x` from `times[i]` to `times[i + 1]`.
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()>;
    /// The noise source of a stochastic sampler (`None` for a deterministic one), which a caller
    /// may replace (e.g. by [`sde::Probe`]) before the run.
    fn noise(&mut self) -> Option<&mut Box<dyn sde::Noise>> {
        None
    }
    /// The number of standard normals per row the sampler draws over `steps` steps, in units of
    /// d (one per step for every stochastic sampler but the predictor-corrector ones); probe
    /// noise needs this many slots ([`sde::Probe`]).
    fn noise_slots(&self, steps: usize) -> usize {
        steps
    }
    /// Whether the solver implements CFG++'s renoising with the guide's prediction
    /// ([`Oracle::renoises_with_guide`]); [`integrate`] refuses a CFG++ oracle otherwise.
    fn renoises_with_guide(&self) -> bool {
        false
    }
}

/// The error for a CFG++ oracle given to a solver that does not implement it.
fn check_guide_renoise(solver: &dyn Solver, model: &Model) -> Result<()> {
    if model.oracle.renoises_with_guide() && !solver.renoises_with_guide() {
        return Err(Error::Domain(
            "cfg++ guidance renoises with the guide's prediction inside the solver; only ddim and dpm-solver++ (order 1 or 2, method=multistep, type=dpmsolver, no corrector, warmup=lower) implement it".into(),
        ));
    }
    Ok(())
}

/// Runs `solver` over `grid` from `x` (the points at `grid.times[0]`); returns the points at the
/// grid's last time.
pub fn integrate(
    solver: &mut dyn Solver,
    model: &Model,
    grid: &Grid,
    x: ArrayView2<f64>,
) -> Result<Array2<f64>> {
    if x.ncols() != model.oracle.dim() {
        return Err(Error::Dimension(format!(
            "the problem has dimension {} but the initial points have {} columns",
            model.oracle.dim(),
            x.ncols()
        )));
    }
    check_guide_renoise(solver, model)?;
    let times = solver.plan(grid, model.schedule)?;
    let mut x = x.as_standard_layout().into_owned();
    // The loop runs on a worker of the thread pool, so that the parallel kernels inside a step
    // are queued on the worker's own deque rather than the pool's global queue, which allocates.
    rayon::scope(|_| {
        for i in 0..times.len() - 1 {
            solver.step(model, &times, i, &mut x)?;
        }
        Ok(x)
    })
}

/// Like [`integrate`], but returns the points at every time of the solver's plan (for fixed-grid
/// solvers, the grid) together with those times.
pub fn trajectory(
    solver: &mut dyn Solver,
    model: &Model,
    grid: &Grid,
    x: ArrayView2<f64>,
) -> Result<(Vec<f64>, Vec<Array2<f64>>)> {
    check_guide_renoise(solver, model)?;
    let times = solver.plan(grid, model.schedule)?;
    let mut states = vec![x.to_owned()];
    for i in 0..times.len() - 1 {
        let mut next = states[i].clone();
        solver.step(model, &times, i, &mut next)?;
        states.push(next);
    }
    Ok((times, states))
}

/// Elements per parallel task of the element-wise kernels; every element's arithmetic is the
/// same whichever thread does it, so results are bit-identical at any thread count.
const CHUNK: usize = 8192;

/// Makes `a` an (N, d) array in standard layout, reallocating only when its shape differs.
pub fn ensure(a: &mut Array2<f64>, dim: (usize, usize)) {
    if a.dim() != dim || !a.is_standard_layout() {
        *a = Array2::zeros(dim);
    }
}

/// Whether every value is finite, by counting all-ones exponents (an integer sum, which
/// vectorizes).
pub(crate) fn all_finite(a: &Array2<f64>) -> bool {
    const EXP: u64 = 0x7ff0_0000_0000_0000;
    let bad = |c: &[f64]| {
        c.iter()
            .map(|v| u64::from(v.to_bits() & EXP == EXP))
            .sum::<u64>()
    };
    match a.as_slice() {
        Some(v) if v.len() > CHUNK => v.par_chunks(CHUNK).map(bad).sum::<u64>() == 0,
        Some(v) => bad(v) == 0,
        None => a.iter().all(|v| v.is_finite()),
    }
}

/// `out = c_out out + sum_j c_j a_j` (with `c_out = None`, `out = sum_j c_j a_j`), element by
/// element and in the order of `terms`; terms after the first with c_j = 0 are skipped. One
/// parallel pass over the memory; nothing is allocated.
fn kernel(out: &mut Array2<f64>, c_out: Option<f64>, terms: &[(f64, &Array2<f64>)]) {
    let dim = out.dim();
    assert!(terms.iter().all(|(_, a)| a.dim() == dim), "shape mismatch");
    // Blocks of BLOCK elements stay in L1 while every term is added.
    const BLOCK: usize = 512;
    let one = |o: &mut [f64], off: usize, slices: &[(f64, &[f64])]| {
        for (b, o) in o.chunks_mut(BLOCK).enumerate() {
            let (off, n) = (off + b * BLOCK, o.len());
            let mut rest = slices;
            match c_out {
                Some(c) => o.iter_mut().for_each(|v| *v *= c),
                None => {
                    let (c, a) = slices[0];
                    o.iter_mut()
                        .zip(&a[off..off + n])
                        .for_each(|(v, &a)| *v = a * c);
                    rest = &slices[1..];
                }
            }
            for &(c, a) in rest {
                if c != 0.0 {
                    o.iter_mut()
                        .zip(&a[off..off + n])
                        .for_each(|(v, &a)| *v += c * a);
                }
            }
        }
    };
    let mut slices = [(0.0, &[][..]); MAX_TERMS];
    let contiguous = terms.len() <= MAX_TERMS
        && terms
            .iter()
            .zip(slices.iter_mut())
            .all(|(&(c, a), s)| a.as_slice().map(|v| *s = (c, v)).is_some());
    match (out.as_slice_mut(), contiguous) {
        (Some(o), true) => {
            let slices = &slices[..terms.len()];
            if o.len() <= CHUNK {
                one(o, 0, slices);
            } else {
                o.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(i, c)| one(c, i * CHUNK, slices));
            }
        }
        _ => {
            let mut rest = terms;
            match c_out {
                Some(c) => out.mapv_inplace(|v| v * c),
                None => {
                    Zip::from(&mut *out)
                        .and(terms[0].1)
                        .for_each(|o, &a| *o = a * terms[0].0);
                    rest = &terms[1..];
                }
            }
            for &(c, a) in rest {
                if c != 0.0 {
                    Zip::from(&mut *out).and(a).for_each(|o, &v| *o += c * v);
                }
            }
        }
    }
}

/// The most terms a [`combine`] or [`update`] takes.
pub const MAX_TERMS: usize = 8;

/// `out = sum_j c_j a_j` (`out` is reshaped if needed, then written without allocating).
pub fn combine(out: &mut Array2<f64>, terms: &[(f64, &Array2<f64>)]) {
    ensure(out, terms[0].1.dim());
    kernel(out, None, terms);
}

/// `x = c_x x + sum_j c_j a_j`, in place.
pub fn update(x: &mut Array2<f64>, c_x: f64, terms: &[(f64, &Array2<f64>)]) {
    kernel(x, Some(c_x), terms);
}

/// sum_k c_k a_k into a new array.
pub fn lincomb(terms: &[(f64, &Array2<f64>)]) -> Array2<f64> {
    let mut out = Array2::zeros(terms[0].1.dim());
    kernel(&mut out, None, terms);
    out
}

/// What a builder may use besides its options: the schedule, and the problem when it is a
/// Gaussian mixture (only `exact` needs it).
pub struct Env<'a> {
    pub schedule: &'a dyn Schedule,
    pub mixture: Option<&'a GaussianMixture>,
    /// The seed of the Brownian paths of stochastic samplers ([`sde::Brownian`]).
    pub noise_seed: u64,
}

/// A registered solver.
pub struct Entry {
    pub name: &'static str,
    pub summary: &'static str,
    pub build: fn(&mut Spec, &Env) -> Result<Box<dyn Solver>>,
    /// (options, grid kind) pairs enrolled in the convergence tests; the test checks the measured
    /// order against [`Solver::order`] of each.
    pub variants: &'static [(&'static str, &'static str)],
}

/// Every solver, by CLI name.
pub const SOLVERS: &[Entry] = &[
    runge_kutta::EULER,
    runge_kutta::HEUN,
    runge_kutta::RK4,
    runge_kutta::DPM2,
    ddim::ENTRY,
    dpm_solver::DPM_SOLVER,
    dpm_solver::DPM_SOLVER_PP,
    dpm_adaptive::ENTRY,
    adams::DEIS,
    adams::LMS,
    adams::IPNDM,
    unipc::ENTRY,
    euler_maruyama::ENTRY,
    ddim::DDPM,
    sde_dpm::SDE_DPM_SOLVER_PP,
    sde_dpm::DPMPP_3M_SDE,
    ancestral::EULER_ANCESTRAL,
    ancestral::DPMPP_2S_ANCESTRAL,
    edm::ENTRY,
    pc::ENTRY,
    ald::ENTRY,
    reference::ENTRY,
    exact::ENTRY,
];

/// A solver built from its spec, with the canonical spec (every option, defaults included).
pub struct Built {
    pub solver: Box<dyn Solver>,
    pub spec: String,
    pub options: Vec<(&'static str, String)>,
}

/// Builds a solver from `name[:key=value,...]`.
pub fn build(text: &str, env: &Env) -> Result<Built> {
    let mut spec = Spec::parse("solver", text)?;
    let entry = SOLVERS
        .iter()
        .find(|e| e.name == spec.name)
        .ok_or_else(|| {
            let names: Vec<&str> = SOLVERS.iter().map(|e| e.name).collect();
            spec.error(format!(
                "unknown solver '{}' (valid: {})",
                spec.name,
                names.join(", ")
            ))
        })?;
    let solver = (entry.build)(&mut spec, env)?;
    spec.finish()?;
    Ok(Built {
        solver,
        spec: spec.canonical(),
        options: spec.options().to_vec(),
    })
}

/// `lower_order_final` and the multistep warm-up, shared by the multistep solvers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Multistep {
    pub order: usize,
    pub lower_order_final: bool,
    /// Warm-up by singlestep steps of full order instead of lower-order multistep steps.
    pub singlestep_warmup: bool,
    /// `lower_order_final` applies only to runs of fewer steps than this (the official DPM-Solver
    /// code: 10; diffusers' DPM-Solver and DEIS schedulers: 15); `None`: to every run.
    pub final_below: Option<usize>,
    /// The last step is first order whatever the number of steps (diffusers' `euler_at_final`).
    pub euler_at_final: bool,
}

impl Multistep {
    /// Options `lower_order_final`, `warmup` and, recorded only when given,
    /// `lower_order_final_below` (default `final_below`) and `euler_at_final` (default false).
    pub fn parse(spec: &mut Spec, order: usize, lower_order_final: bool) -> Result<Self> {
        Self::parse_below(spec, order, lower_order_final, None)
    }

    /// [`Multistep::parse`] with a default threshold for `lower_order_final`.
    pub fn parse_below(
        spec: &mut Spec,
        order: usize,
        lower_order_final: bool,
        final_below: Option<usize>,
    ) -> Result<Self> {
        let lower_order_final = spec.take("lower_order_final", lower_order_final)?;
        let singlestep_warmup =
            spec.take_choice("warmup", "lower", &["lower", "singlestep"])? == "singlestep";
        let final_below = spec
            .take_optional::<usize>("lower_order_final_below")?
            .or(final_below);
        let euler_at_final = spec
            .take_optional::<bool>("euler_at_final")?
            .unwrap_or(false);
        Ok(Multistep {
            order,
            lower_order_final,
            singlestep_warmup,
            final_below,
            euler_at_final,
        })
    }

    /// The rules for a run of n steps: `lower_order_final` off when n reaches `final_below`.
    pub fn for_steps(&self, n: usize) -> Multistep {
        let mut ms = *self;
        ms.lower_order_final &= self.final_below.is_none_or(|b| n < b);
        ms
    }

    /// Whether step i is a singlestep warm-up step (`warmup=singlestep`, i < order - 1, not a step
    /// to sigma = 0).
    pub fn singlestep_at(&self, i: usize, to_zero: bool) -> bool {
        self.singlestep_warmup && i + 1 < self.order && !to_zero
    }

    /// The evaluations of a one-evaluation-per-step method on `grid` whose singlestep warm-up
    /// steps take `stages` evaluations.
    pub fn nfe(&self, grid: &Grid, schedule: &dyn Schedule, stages: usize) -> usize {
        let n = grid.steps();
        if !self.singlestep_warmup {
            return n;
        }
        let warm = (self.order - 1).min(n - usize::from(grid.ends_at_zero(schedule)));
        n + (stages - 1) * warm
    }

    /// The order of step i of n when the history holds `available` values: the warm-up uses what
    /// is available; with `lower_order_final` the last steps use min(order, n - i).
    pub fn step_order(&self, i: usize, n: usize, available: usize) -> usize {
        let mut k = self.order.min(available);
        if self.lower_order_final {
            k = k.min(n - i);
        }
        if self.euler_at_final && i + 1 == n {
            k = 1;
        }
        k.max(1)
    }
}
