//! Langevin dynamics at a fixed noise level: the corrector of predictor-corrector sampling (Song
//! et al., ICLR 2021, Sec. 4.2 and Algorithms 2, 4, 5; the official `LangevinCorrector`), used by
//! [`super::pc`] and by NCSN's annealed Langevin dynamics [`super::ald`].
//!
//! One step at level t is x <- x + eps s_t(x) + sqrt(2 eps) z with s_t = grad ln p_t (one
//! evaluation): the unadjusted Langevin algorithm. On a Gaussian p_t = N(m, S) it leaves
//! N(m, S (I - eps S^{-1}/2)^{-1}) invariant rather than p_t, a bias O(eps) (tests/langevin.rs).
//!
//! Corrector step sizes (`step=`), r = `snr`, alpha_i = (alpha_{t_i} / alpha_{t_{i+1}})^2 (the
//! official VP code's `sde.alphas[timestep]` = 1 - beta_i of the sampler's own discretization;
//! 1 on VE schedules):
//! - `snr` (default): eps = 2 alpha_i (r |z| / |s|)^2 with the per-sample norms averaged over the
//!   batch, as the official code does (`grad_norm`, `noise_norm`); the paper's algorithm writes
//!   one sample's norms. The step then depends on the batch, so no exact law is computed for it.
//! - `sigma`: eps = 2 alpha_i (r sigma_t)^2, the snr rule at the pure-noise ratio |z|/|s| = sigma_t
//!   (s = -z/sigma_t): the same for every batch.
//! - `sde`: eps = sigma_t^2 (1 - e^{-2h}) / 2 = sigma_t^2 h + O(h^2), h = lambda_{t_{i+1}} -
//!   lambda_{t_i}: the Langevin half of the reverse SDE over the step (g^2 dt / 2 =
//!   sigma^2 d lambda), finite on a step to sigma = 0, so that a DDIM predictor with one such
//!   corrector step is a splitting of the reverse SDE (Bradley & Nakkiran 2024, Sec. 5).

use super::sde::Noise;
use super::{update, Model};
use crate::error::Result;
use crate::prediction::Prediction;
use crate::spec::Spec;
use ndarray::Array2;

/// One Langevin step of size `eps` at time t: x <- x + eps s_t(x) + sqrt(2 eps) z, with `g`
/// receiving the score.
pub fn step(
    model: &Model,
    t: f64,
    eps: f64,
    x: &mut Array2<f64>,
    g: &mut Array2<f64>,
    z: &Array2<f64>,
) -> Result<()> {
    model.eval_into(Prediction::Score, x, t, g)?;
    update(x, 1.0, &[(eps, g), ((2.0 * eps).sqrt(), z)]);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Snr,
    Sigma,
    Sde,
}

/// The Langevin corrector: `n` steps at a level, step sizes by `rule`.
pub struct Corrector {
    pub rule: Rule,
    pub snr: f64,
    pub n: usize,
    g: Array2<f64>,
    z: Array2<f64>,
}

/// The mean over rows of the rows' Euclidean norms, summed in row order.
fn mean_norm(a: &Array2<f64>) -> f64 {
    let sum: f64 = a.rows().into_iter().map(|r| r.dot(&r).sqrt()).sum();
    sum / a.nrows().max(1) as f64
}

impl Corrector {
    /// Options `snr` (default 0.16, the official VE setting), `n` (default 1), `step`.
    pub fn parse(spec: &mut Spec) -> Result<Self> {
        let snr = spec.take_f64("snr", 0.16)?;
        if snr <= 0.0 {
            return Err(spec.error(format!("option 'snr': {snr} is not positive")));
        }
        let n = spec.take_range("n", 1, 0, 1000)?;
        let rule = match spec.take_choice("step", "snr", &["snr", "sigma", "sde"])? {
            "sigma" => Rule::Sigma,
            "sde" => Rule::Sde,
            _ => Rule::Snr,
        };
        Ok(Corrector {
            rule,
            snr,
            n,
            g: Array2::zeros((0, 0)),
            z: Array2::zeros((0, 0)),
        })
    }

    /// The `n` corrector steps at `times[i]`, step j's normals from `sources[j]`.
    pub fn correct(
        &mut self,
        model: &Model,
        times: &[f64],
        i: usize,
        x: &mut Array2<f64>,
        sources: &mut [Box<dyn Noise>],
    ) -> Result<()> {
        let (a, b) = (model.level(times[i]), model.level(times[i + 1]));
        let alpha_i = (a.alpha / b.alpha).powi(2);
        let h = model.lambda(times[i + 1]) - model.lambda(times[i]);
        for source in sources.iter_mut().take(self.n) {
            source.normal(times, i, x.dim(), &mut self.z)?;
            let eps = match self.rule {
                Rule::Sigma => 2.0 * alpha_i * (self.snr * a.sigma).powi(2),
                Rule::Sde => -0.5 * a.sigma * a.sigma * (-2.0 * h).exp_m1(),
                Rule::Snr => {
                    model.eval_into(Prediction::Score, x, times[i], &mut self.g)?;
                    let ratio = self.snr * mean_norm(&self.z) / mean_norm(&self.g);
                    let eps = 2.0 * alpha_i * ratio * ratio;
                    update(x, 1.0, &[(eps, &self.g), ((2.0 * eps).sqrt(), &self.z)]);
                    continue;
                }
            };
            step(model, times[i], eps, x, &mut self.g, &self.z)?;
        }
        Ok(())
    }
}
