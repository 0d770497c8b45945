//! The oracle: whatever answers "what is the prediction at (x, t)?" — the exact Gaussian mixture,
//! a closed form, a network. Batched over the rows of an (N, d) array, written into a buffer the
//! caller provides.

use crate::error::{Error, Result};
use crate::prediction::{self, Prediction};
use crate::schedule::NoiseLevel;
use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;
use std::sync::Mutex;

/// A model of the denoising posterior. One call of [`Oracle::eval`] or [`Oracle::predict`] on a
/// batch is one function evaluation (NFE), whatever the batch size.
pub trait Oracle: Sync {
    /// The dimension d of a point.
    fn dim(&self) -> usize;

    /// The prediction type the oracle computes natively.
    fn native(&self) -> Prediction;

    /// The native prediction at the rows of `x` (N x d) into `out` (N x d).
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()>;

    /// A prediction of any type. The default evaluates the native type and converts it;
    /// oracles that can compute every type directly override this.
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        self.eval(x, at, out.view_mut())?;
        prediction::convert(self.native(), kind, at, x, out)
    }

    /// Jacobian-vector products: row i of `out` is J(x_i) v_i, where J = d y / d x is the Jacobian
    /// in x of the `kind` prediction y at the row's point (the noise level held fixed). Oracles
    /// that can differentiate themselves override this (the mixture exactly, the MLP by forward
    /// mode); the default says the oracle cannot.
    fn jvp(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        let _ = (kind, x, at, v, out);
        Err(Error::Domain(
            "this oracle has no Jacobian (the Gaussian mixture and the MLP have)".into(),
        ))
    }

    /// The Jacobians themselves: `out` is (N, d, d) with `out[[i, j, l]]` = d y_j / d x_l at row
    /// i. The default makes d [`Oracle::jvp`] passes with the unit vectors e_l.
    fn jacobian(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut3<f64>,
    ) -> Result<()> {
        let (n, d) = x.dim();
        check_jacobian(self.dim(), &x, out.dim())?;
        let mut v = Array2::zeros((n, d));
        let mut jv = Array2::zeros((n, d));
        for l in 0..d {
            v.fill(0.0);
            v.column_mut(l).fill(1.0);
            self.jvp(kind, x, at, v.view(), jv.view_mut())?;
            out.slice_mut(ndarray::s![.., .., l]).assign(&jv);
        }
        Ok(())
    }

    /// The divergences tr J (one per row) into `out` (length N). The default takes the trace of
    /// [`Oracle::jacobian`].
    fn divergence(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        let (n, d) = x.dim();
        if out.len() != n {
            return Err(Error::Dimension(format!(
                "{n} points but a divergence buffer of length {}",
                out.len()
            )));
        }
        let mut j = ndarray::Array3::zeros((n, d, d));
        self.jacobian(kind, x, at, j.view_mut())?;
        for (o, j) in out.iter_mut().zip(j.outer_iter()) {
            *o = j.diag().sum();
        }
        Ok(())
    }

    /// Whether the oracle is guided by a rule that renoises with the guide's prediction inside
    /// the solver (CFG++, [`crate::guidance`]); only solvers that implement it may run it
    /// ([`crate::solver::Solver::renoises_with_guide`]).
    fn renoises_with_guide(&self) -> bool {
        false
    }

    /// For an oracle with [`Oracle::renoises_with_guide`]: the guided prediction into `out` and
    /// the guide's own into `guide`, as one evaluation. Other oracles have no guide.
    fn predict_with_guide(
        &self,
        _kind: Prediction,
        _x: ArrayView2<f64>,
        _at: &NoiseLevel,
        _out: ArrayViewMut2<f64>,
        _guide: ArrayViewMut2<f64>,
    ) -> Result<()> {
        Err(Error::Domain(
            "this oracle has no guide to renoise with (only cfg++ guidance has)".into(),
        ))
    }
}

impl<O: Oracle + ?Sized> Oracle for &O {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn native(&self) -> Prediction {
        (**self).native()
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        (**self).eval(x, at, out)
    }
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        (**self).predict(kind, x, at, out)
    }
    fn jvp(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        (**self).jvp(kind, x, at, v, out)
    }
    fn jacobian(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut3<f64>,
    ) -> Result<()> {
        (**self).jacobian(kind, x, at, out)
    }
    fn divergence(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        (**self).divergence(kind, x, at, out)
    }
    fn renoises_with_guide(&self) -> bool {
        (**self).renoises_with_guide()
    }
    fn predict_with_guide(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
        guide: ArrayViewMut2<f64>,
    ) -> Result<()> {
        (**self).predict_with_guide(kind, x, at, out, guide)
    }
}

/// Checks that `x` and `out` are both (N, d) for the oracle's d.
pub fn check_batch(dim: usize, x: &ArrayView2<f64>, out: &ArrayViewMut2<f64>) -> Result<()> {
    if x.ncols() != dim || out.dim() != x.dim() {
        return Err(Error::Dimension(format!(
            "the oracle has dimension {dim}; got points {:?} and an output buffer {:?}",
            x.dim(),
            out.dim()
        )));
    }
    Ok(())
}

/// Checks that `x` is (N, d) and a Jacobian buffer (N, d, d) for the oracle's d.
pub fn check_jacobian(dim: usize, x: &ArrayView2<f64>, out: (usize, usize, usize)) -> Result<()> {
    let (n, d) = x.dim();
    if d != dim || out != (n, d, d) {
        return Err(Error::Dimension(format!(
            "the oracle has dimension {dim}; got points {:?} and a Jacobian buffer {out:?}",
            x.dim()
        )));
    }
    Ok(())
}

/// Rows per parallel task. Fixed, so that which rows are computed together never depends on
/// the number of threads: results are bit-identical at any thread count.
pub const CHUNK_ROWS: usize = 256;

/// Applies `f` to matching chunks of [`CHUNK_ROWS`] rows of `x` and `out`, in parallel.
pub fn par_rows<F>(x: ArrayView2<f64>, mut out: ArrayViewMut2<f64>, f: F)
where
    F: Fn(ArrayView2<f64>, ArrayViewMut2<f64>) + Sync,
{
    if x.nrows() <= CHUNK_ROWS {
        f(x, out);
        return;
    }
    x.axis_chunks_iter(Axis(0), CHUNK_ROWS)
        .into_par_iter()
        .zip(
            out.axis_chunks_iter_mut(Axis(0), CHUNK_ROWS)
                .into_par_iter(),
        )
        .for_each(|(x, out)| f(x, out));
}

/// Counts evaluations (exact NFE) and records the noise levels they were made at, in order.
pub struct Counted<O> {
    inner: O,
    calls: Mutex<Vec<NoiseLevel>>,
}

impl<O: Oracle> Counted<O> {
    pub fn new(inner: O) -> Self {
        Counted {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The number of evaluations so far.
    pub fn nfe(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// The noise levels of the evaluations so far, in evaluation order.
    pub fn calls(&self) -> Vec<NoiseLevel> {
        self.calls.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }

    pub fn inner(&self) -> &O {
        &self.inner
    }

    fn record(&self, at: &NoiseLevel) {
        self.calls.lock().unwrap().push(*at);
    }
}

impl<O: Oracle> Oracle for Counted<O> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn native(&self) -> Prediction {
        self.inner.native()
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.record(at);
        self.inner.eval(x, at, out)
    }
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        self.record(at);
        self.inner.predict(kind, x, at, out)
    }
    fn jvp(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        self.inner.jvp(kind, x, at, v, out)
    }
    fn jacobian(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut3<f64>,
    ) -> Result<()> {
        self.inner.jacobian(kind, x, at, out)
    }
    fn divergence(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        self.inner.divergence(kind, x, at, out)
    }
    fn renoises_with_guide(&self) -> bool {
        self.inner.renoises_with_guide()
    }
    fn predict_with_guide(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
        guide: ArrayViewMut2<f64>,
    ) -> Result<()> {
        self.record(at);
        self.inner.predict_with_guide(kind, x, at, out, guide)
    }
}

/// An oracle that costs nothing, not even writing its output: it leaves `out` as it is. Solvers
/// write their model buffers only through the oracle and create them as zeros, so to a solver
/// every prediction is 0. Timing a solver on it isolates the solver's own arithmetic
/// (`cargo bench --bench solvers`, `bench_oracle`); the real oracle's output write is part of the
/// oracle's time.
pub struct Free(pub usize);

impl Oracle for Free {
    fn dim(&self) -> usize {
        self.0
    }
    fn native(&self) -> Prediction {
        Prediction::X0
    }
    fn eval(&self, x: ArrayView2<f64>, _: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        check_batch(self.0, &x, &out)
    }
    fn predict(
        &self,
        _: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        self.eval(x, at, out)
    }
}
