//! The tangent flow: divergence estimators, forward mode through any solver, and what the
//! Jacobian of a map says about optimal transport.
//!
//! - [`hutchinson`]: tr J ~ (1/M) sum_m e_m^T J e_m with M probes e_m, Rademacher (+-1) or
//!   Gaussian (Hutchinson 1989; FFJORD, Grathwohl et al. 2019, Sec. 3.1), seeded per row; its
//!   standard error is the sample standard deviation of the M terms over sqrt(M). Each probe is
//!   one [`Oracle::jvp`].
//! - [`Tangent`]: the oracle of the variational system. Its state row is [x, v_1, ..., v_m] (each
//!   of width d) and its prediction is [y(x), J(x) v_1, ..., J(x) v_m]. Every deterministic solver
//!   in pfode is linear in its states and predictions with coefficients that depend on the grid
//!   alone (prediction conversions p x + q y included), so running it on this oracle from
//!   [x_T, I] carries J along: the result is the exact Jacobian of the solver's discrete map
//!   (forward mode through every step), and with the `reference` solver it integrates the
//!   variational equation dJ/dt = (grad v) J of the PF-ODE. (An adaptive solver's step control
//!   then also sees the tangents.)
//! - [`JacobianStats`]: log |det J|, the asymmetry ||J - J^T||_F / ||J||_F and the smallest
//!   eigenvalue of the symmetric part (J + J^T)/2. By Brenier's theorem an optimal-transport map
//!   is the gradient of a convex function, so its Jacobian is symmetric positive semi-definite
//!   wherever it exists: a non-zero asymmetry certifies that a map is not the OT map.

use crate::error::{Error, Result};
use crate::grid::Grid;
use crate::oracle::{check_batch, Oracle};
use crate::prediction::Prediction;
use crate::rng::RowRng;
use crate::schedule::NoiseLevel;
use crate::solver::{self, Model, Solver};
use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayViewMut2, Axis, Zip};
use std::fmt;
use std::str::FromStr;

/// The distribution of Hutchinson's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Entries +-1 with probability 1/2 (the smallest variance among i.i.d. probes).
    Rademacher,
    /// Standard normal entries.
    Gaussian,
}

impl FromStr for Probe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rademacher" => Ok(Probe::Rademacher),
            "gaussian" => Ok(Probe::Gaussian),
            _ => Err(Error::Domain(format!(
                "unknown probe '{s}' (valid: rademacher, gaussian)"
            ))),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Probe::Rademacher => "rademacher",
            Probe::Gaussian => "gaussian",
        })
    }
}

/// The rng domain of the probes.
const PROBE_DOMAIN: u32 = 0x4875;

/// `m` probe matrices (n, d); row i of every probe from `RowRng::new(seed, PROBE_DOMAIN, i)`, so a
/// row's probes do not depend on the other rows or on threads.
pub fn probes(n: usize, d: usize, m: usize, probe: Probe, seed: u64) -> Vec<Array2<f64>> {
    let mut out = vec![Array2::zeros((n, d)); m];
    for i in 0..n {
        let mut rng = RowRng::new(seed, PROBE_DOMAIN, i as u64);
        for e in out.iter_mut() {
            for j in 0..d {
                e[(i, j)] = match probe {
                    Probe::Rademacher => {
                        if rng.uniform() < 0.5 {
                            -1.0
                        } else {
                            1.0
                        }
                    }
                    Probe::Gaussian => rng.normal(),
                };
            }
        }
    }
    out
}

/// Hutchinson's estimate of tr J of the `kind` prediction per row, with its standard error
/// (zero for one probe: there is no spread to measure).
pub fn hutchinson(
    oracle: &dyn Oracle,
    kind: Prediction,
    x: ArrayView2<f64>,
    at: &NoiseLevel,
    probes: &[Array2<f64>],
) -> Result<(Array1<f64>, Array1<f64>)> {
    let n = x.nrows();
    if probes.is_empty() {
        return Err(Error::Domain(
            "Hutchinson's estimator needs >= 1 probe".into(),
        ));
    }
    let m = probes.len() as f64;
    let (mut sum, mut sum2) = (Array1::zeros(n), Array1::zeros(n));
    let mut jv = Array2::zeros(x.dim());
    for e in probes {
        oracle.jvp(kind, x, at, e.view(), jv.view_mut())?;
        let term = (e * &jv).sum_axis(Axis(1));
        sum += &term;
        sum2 += &(&term * &term);
    }
    let mean = &sum / m;
    let se = if probes.len() > 1 {
        Zip::from(&sum2)
            .and(&mean)
            .map_collect(|&s2, &mu| ((s2 / m - mu * mu).max(0.0) * m / (m - 1.0) / m).sqrt())
    } else {
        Array1::zeros(n)
    };
    Ok((mean, se))
}

/// The variational system of an oracle: state rows [x, v_1, ..., v_m], predictions
/// [y(x), J v_1, ..., J v_m] (see the module doc).
pub struct Tangent<O> {
    inner: O,
    m: usize,
}

impl<O: Oracle> Tangent<O> {
    /// `m` tangent columns carried beside each point.
    pub fn new(inner: O, m: usize) -> Self {
        Tangent { inner, m }
    }

    /// The augmented state [x, I] (each row carries the d unit vectors).
    pub fn identity_state(x: ArrayView2<f64>) -> Array2<f64> {
        let (n, d) = x.dim();
        let mut y = Array2::zeros((n, d * (d + 1)));
        y.slice_mut(s![.., ..d]).assign(&x);
        for i in 0..n {
            for j in 0..d {
                y[(i, d + j * d + j)] = 1.0;
            }
        }
        y
    }

    /// Splits an augmented state with m = d into the points (n, d) and their Jacobians (n, d, d),
    /// `J[[i, p, q]]` = d x_p / d x0_q (the tangent v_q is column q).
    pub fn split(y: &Array2<f64>, d: usize) -> (Array2<f64>, Array3<f64>) {
        let n = y.nrows();
        let x = y.slice(s![.., ..d]).to_owned();
        let j = Array3::from_shape_fn((n, d, d), |(i, p, q)| y[(i, d + q * d + p)]);
        (x, j)
    }
}

impl<O: Oracle> Oracle for Tangent<O> {
    fn dim(&self) -> usize {
        self.inner.dim() * (self.m + 1)
    }
    fn native(&self) -> Prediction {
        self.inner.native()
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.predict(self.inner.native(), x, at, out)
    }
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.dim(), &x, &out)?;
        let d = self.inner.dim();
        let n = x.nrows();
        let pts = x.slice(s![.., ..d]);
        self.inner
            .predict(kind, pts, at, out.slice_mut(s![.., ..d]))?;
        let mut j = Array3::zeros((n, d, d));
        self.inner.jacobian(kind, pts, at, j.view_mut())?;
        for i in 0..n {
            let ji = j.index_axis(Axis(0), i);
            for c in 0..self.m {
                let v = x.slice(s![i, d + c * d..d + (c + 1) * d]);
                out.slice_mut(s![i, d + c * d..d + (c + 1) * d])
                    .assign(&ji.dot(&v));
            }
        }
        Ok(())
    }
}

/// The image of `x` under a solver's map on `grid` and the map's Jacobian at each point, by
/// forward mode through the solver (the [`Tangent`] system from [x, I]).
pub fn map_jacobian(
    solver: &mut dyn Solver,
    oracle: &dyn Oracle,
    schedule: &dyn crate::schedule::Schedule,
    grid: &Grid,
    x: ArrayView2<f64>,
) -> Result<(Array2<f64>, Array3<f64>)> {
    let d = oracle.dim();
    if x.ncols() != d {
        return Err(Error::Dimension(format!(
            "the oracle has dimension {d}; got points {:?}",
            x.dim()
        )));
    }
    let tangent = Tangent::new(oracle, d);
    let model = Model::new(&tangent, schedule);
    let y0 = Tangent::<&dyn Oracle>::identity_state(x);
    let y = solver::integrate(solver, &model, grid, y0.view())?;
    Ok(Tangent::<&dyn Oracle>::split(&y, d))
}

/// What one Jacobian says: log |det J|, ||J - J^T||_F / ||J||_F, and the smallest eigenvalue of
/// (J + J^T)/2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JacobianStats {
    pub log_det: f64,
    pub asymmetry: f64,
    pub min_sym_eig: f64,
}

impl JacobianStats {
    pub fn of(j: ndarray::ArrayView2<f64>) -> Result<Self> {
        let d = j.nrows();
        let lu = faer::Mat::<f64>::from_fn(d, d, |p, q| j[(p, q)]);
        let det = lu.determinant();
        let (mut anti, mut norm) = (0.0, 0.0);
        for p in 0..d {
            for q in 0..d {
                anti += (j[(p, q)] - j[(q, p)]).powi(2);
                norm += j[(p, q)].powi(2);
            }
        }
        let sym = faer::Mat::<f64>::from_fn(d, d, |p, q| 0.5 * (j[(p, q)] + j[(q, p)]));
        let (_, l) = crate::gmm::self_adjoint_eigen(&sym).map_err(Error::Domain)?;
        Ok(JacobianStats {
            log_det: det.abs().ln(),
            asymmetry: (anti / norm).sqrt(),
            min_sym_eig: l[0],
        })
    }
}
