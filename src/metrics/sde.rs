//! Strong and weak errors of stochastic samplers, and the exact output law of a sampler on
//! Gaussian data.
//!
//! - Strong error: E|x_h - x_ref| over paths, x_ref the same sampler on a refined grid driven by
//!   the same Brownian path (the mean of the per-path Euclidean norms, with its standard error).
//! - Weak error for the test functions f(x) = x and f(x) = x x^T:
//!   |E x_h - E x| and |E x_h x_h^T - E x x^T|_F. The exact moments of a mixture's p_t are
//!   alpha_t sum_k w_k mu_k and sum_k w_k alpha_t^2 (Sigma_k + mu_k mu_k^T) + sigma_t^2 I. From
//!   samples, the error's noise floor is sqrt(tr Cov(f)/N), reported with it.
//! - On Gaussian data a linear sampler's output is affine in (x_T, z_0, ..., z_{n-1}): with
//!   [`crate::solver::sde::Probe`] noise, 1 + d + n d rows give that map, and the output law is
//!   N(F(m), (A P)(A P)^T + sum_i B_i B_i^T) exactly ([`GaussianLaw::pushed_with_noise`]);
//!   [`output_law`] runs that for any solver, deterministic or stochastic, with the solver's
//!   own count of noise slots ([`crate::solver::Solver::noise_slots`]).

use super::law::GaussianLaw;
use super::Estimate;
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::oracle::Oracle;
use crate::schedule::NoiseLevel;
use crate::solver::{self, sde::Probe, Model, Solver};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// The exact output law of `solver` on `grid` from x ~ `prior`, for a model affine in x (Gaussian
/// data, or guidance between Gaussians): by d + 1 probe rows for a deterministic solver, and with
/// [`Probe`] noise in every noise slot for a stochastic one. The solver must be fresh.
pub fn output_law(
    solver: &mut dyn Solver,
    model: &Model,
    grid: &Grid,
    prior: &GaussianLaw,
) -> Result<GaussianLaw> {
    let d = prior.dim();
    let slots = solver.noise_slots(grid.steps());
    match solver.noise() {
        Some(noise) => {
            *noise = Box::new(Probe::new(d));
            let probes = prior.probes_with_noise(slots);
            let img = solver::integrate(solver, model, grid, probes.view())?;
            prior.pushed_with_noise(img.view())
        }
        None => {
            let img = solver::integrate(solver, model, grid, prior.probes().view())?;
            prior.pushed(img.view())
        }
    }
}

/// The mean and second moment E x x^T of the mixture's exact marginal p_t.
pub fn moments(mixture: &GaussianMixture, at: &NoiseLevel) -> (Array1<f64>, Array2<f64>) {
    let d = mixture.dim();
    let mut mean = Array1::zeros(d);
    let mut second = Array2::eye(d) * (at.sigma * at.sigma);
    for (k, &w) in mixture.weights().iter().enumerate() {
        let c = mixture.component(k);
        let cov = (&c.u * &c.l).dot(&c.u.t());
        let mu = c.mean.view().insert_axis(Axis(1));
        mean.scaled_add(w * at.alpha, &c.mean);
        second.scaled_add(w * at.alpha * at.alpha, &(cov + mu.dot(&mu.t())));
    }
    (mean, second)
}

/// The weak errors of a law with mean m and second moment S against (mean, second).
pub fn weak(
    m: &Array1<f64>,
    s: &Array2<f64>,
    mean: &Array1<f64>,
    second: &Array2<f64>,
) -> [f64; 2] {
    let dm = (m - mean).mapv(|v| v * v).sum().sqrt();
    let ds = (s - second).mapv(|v| v * v).sum().sqrt();
    [dm, ds]
}

/// The weak errors of samples `x` against exact moments, each with its Monte Carlo noise floor.
pub fn weak_mc(x: ArrayView2<f64>, mean: &Array1<f64>, second: &Array2<f64>) -> [Estimate; 2] {
    let n = x.nrows() as f64;
    let m = x.mean_axis(Axis(0)).expect("rows");
    let s = x.t().dot(&x) / n;
    let [dm, ds] = weak(&m, &s, mean, second);
    let c = &x - &m.view().insert_axis(Axis(0));
    let var_mean: f64 = c.mapv(|v| v * v).sum() / (n - 1.0);
    // tr Cov(x x^T) = E|x|^4 - |E x x^T|_F^2.
    let q: f64 = x.rows().into_iter().map(|r| r.dot(&r).powi(2)).sum::<f64>() / n;
    let var_second = (q - s.mapv(|v| v * v).sum()).max(0.0);
    [
        Estimate {
            value: dm,
            se: (var_mean / n).sqrt(),
        },
        Estimate {
            value: ds,
            se: (var_second / n).sqrt(),
        },
    ]
}

/// The mean over rows of |x_i - x_ref,i| with its standard error.
pub fn strong(x: ArrayView2<f64>, reference: ArrayView2<f64>) -> Result<Estimate> {
    if x.dim() != reference.dim() || x.nrows() < 2 {
        return Err(Error::Dimension(format!(
            "a strong error needs two equal batches of at least 2 rows, got {:?} and {:?}",
            x.dim(),
            reference.dim()
        )));
    }
    let v: Vec<f64> = x
        .rows()
        .into_iter()
        .zip(reference.rows())
        .map(|(a, b)| (&a - &b).mapv(|e| e * e).sum().sqrt())
        .collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(Estimate {
        value: mean,
        se: (var / n).sqrt(),
    })
}

impl GaussianLaw {
    /// The probe rows of a stochastic sampler over `steps` steps: [`GaussianLaw::probes`], then
    /// `steps * d` copies of the mean (which carry the unit noise).
    pub fn probes_with_noise(&self, steps: usize) -> Array2<f64> {
        let d = self.dim();
        let mut x = Array2::zeros((1 + d + steps * d, d));
        x.slice_mut(ndarray::s![..d + 1, ..]).assign(&self.probes());
        for mut row in x.rows_mut().into_iter().skip(d + 1) {
            row.assign(&self.mean);
        }
        x
    }

    /// The output law from the images of [`GaussianLaw::probes_with_noise`].
    pub fn pushed_with_noise(&self, images: ArrayView2<f64>) -> Result<Self> {
        let d = self.dim();
        if images.ncols() != d || images.nrows() < d + 1 || !(images.nrows() - 1).is_multiple_of(d)
        {
            return Err(Error::Dimension(format!(
                "expected 1 + d + n d probe images of dimension {d}, got {:?}",
                images.dim()
            )));
        }
        let mean = images.row(0).to_owned();
        let diff = &images.slice(ndarray::s![1.., ..]) - &mean.view().insert_axis(Axis(0));
        let cov = diff.t().dot(&diff);
        GaussianLaw::new(mean, &cov, "the sampler's output law")
    }

    /// E x x^T = Sigma + m m^T.
    pub fn second_moment(&self) -> Array2<f64> {
        let m = self.mean.view().insert_axis(Axis(1));
        self.cov() + m.dot(&m.t())
    }
}
