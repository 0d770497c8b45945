//! The closed-form probability-flow ODE map for Gaussian data p_0 = N(mu, Sigma), between any two
//! noise levels of any schedule: the ground truth of every convergence test.
//!
//! With Sigma = U diag(l) U^T the PF-ODE is linear and diagonal in the eigenbasis, and
//!
//! x_t = alpha_t mu + U diag(sqrt((alpha_t^2 l + sigma_t^2) / (alpha_s^2 l + sigma_s^2))) U^T (x_s - alpha_s mu).
//!
//! It is also the optimal-transport map between the Gaussians p_s and p_t.

use crate::error::{Error, Result};
use crate::gmm::{Component, GaussianMixture};
use crate::oracle::{check_batch, par_rows};
use crate::schedule::NoiseLevel;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

#[derive(Debug, Clone)]
pub struct GaussianFlow {
    gaussian: Component,
}

impl GaussianFlow {
    /// The flow of a one-component mixture; an error for K > 1, where no closed form exists.
    pub fn new(mixture: &GaussianMixture) -> Result<Self> {
        let k = mixture.n_components();
        if k != 1 {
            return Err(Error::Domain(format!(
                "the closed-form flow needs a single Gaussian; this problem has {k} components"
            )));
        }
        Ok(GaussianFlow {
            gaussian: mixture.component(0).clone(),
        })
    }

    /// Maps the rows of `x` at level `from` to level `to` along the exact PF-ODE.
    pub fn map(
        &self,
        from: &NoiseLevel,
        to: &NoiseLevel,
        x: ArrayView2<f64>,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        let g = &self.gaussian;
        check_batch(g.mean.len(), &x, &out)?;
        let gain: Array1<f64> = g.l.mapv(|l| {
            ((to.alpha * to.alpha * l + to.sigma * to.sigma)
                / (from.alpha * from.alpha * l + from.sigma * from.sigma))
                .sqrt()
        });
        if gain.iter().any(|g| !g.is_finite()) {
            return Err(Error::Domain(format!(
                "no flow from alpha = {}, sigma = {} (t = {})",
                from.alpha, from.sigma, from.t
            )));
        }
        par_rows(x, out, |x, out| {
            let mut r = Array2::zeros(x.dim());
            let mut z = Array2::zeros(x.dim());
            g.to_eigenbasis(x, from.alpha, &mut r, &mut z);
            z *= &gain;
            g.from_eigenbasis(&z, to.alpha, out);
        });
        Ok(())
    }
}
