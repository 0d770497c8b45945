//! Prediction types and the one conversion layer between them.
//!
//! With x_t = alpha_t x_0 + sigma_t eps, every training target of a diffusion model is
//! A_t x_0 + B_t eps, and what a network learns is its posterior mean
//! A_t x0_hat + B_t eps_hat, with x0_hat = E[x_0 | x_t], eps_hat = E[eps | x_t]
//! (cf. Table 6.1 of Lai et al., "The Principles of Diffusion Models"):
//!
//! | type | target | A_t | B_t | (a, b) in the (x0_hat, score) basis |
//! |---|---|---|---|---|
//! | `eps` | noise eps | 0 | 1 | (0, -sigma) |
//! | `x0` | clean data x_0 (denoiser) | 1 | 0 | (1, 0) |
//! | `score` | grad log p_t(x_t) = -eps_hat / sigma | 0 | -1/sigma | (0, 1) |
//! | `v` | alpha eps - sigma x_0 | -sigma | alpha | (-sigma, -alpha sigma) |
//! | `velocity` | PF-ODE drift dx/dt = alpha' x0_hat + sigma' eps_hat | alpha' | sigma' | (alpha', -sigma sigma') |
//!
//! and x_t itself is (alpha, -sigma^2) in that basis. pfode works in the (x0_hat, score) basis
//! because its coefficients stay finite everywhere (B_t = -1/sigma does not, nor does sigma' on
//! VP schedules at sigma = 0, while sigma sigma' = -alpha alpha' does). Given x and one
//! prediction y = a_f x0_hat + b_f score, the pair (x0_hat, score) solves a 2x2 system, so any
//! other prediction is y' = p x + q y with
//!
//! p = (a_t b_f - b_t a_f) / det,  q = (b_t alpha + a_t sigma^2) / det,
//! det = alpha b_f + sigma^2 a_f.
//!
//! Conversions are exact algebra but not always well conditioned: near sigma = 0, score -> x0 ->
//! score recovers the score from x0_hat - x = sigma^2 score and loses ~eps/sigma^2 relative
//! accuracy (likewise eps/x0 near alpha = 0). Oracles that can compute every type directly (the
//! Gaussian mixture) therefore do so instead of converting.
//!
//! `velocity` is the probability-flow ODE drift, f x - g^2/2 score with f = alpha'/alpha,
//! g^2 = d(sigma^2)/dt - 2 f sigma^2; converting to it is how any prediction gives dx/dt.

use crate::error::{Error, Result};
use crate::schedule::NoiseLevel;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prediction {
    Eps,
    X0,
    Score,
    V,
    Velocity,
}

impl Prediction {
    pub const ALL: [Prediction; 5] = [
        Prediction::Eps,
        Prediction::X0,
        Prediction::Score,
        Prediction::V,
        Prediction::Velocity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Prediction::Eps => "eps",
            Prediction::X0 => "x0",
            Prediction::Score => "score",
            Prediction::V => "v",
            Prediction::Velocity => "velocity",
        }
    }

    /// (A_t, B_t): the target is A_t x_0 + B_t eps.
    pub fn target(self, at: &NoiseLevel) -> (f64, f64) {
        match self {
            Prediction::Eps => (0.0, 1.0),
            Prediction::X0 => (1.0, 0.0),
            Prediction::Score => (0.0, -1.0 / at.sigma),
            Prediction::V => (-at.sigma, at.alpha),
            Prediction::Velocity => (at.dalpha, at.dsigma),
        }
    }

    /// (a, b): the prediction is a x0_hat + b score (see the module doc).
    pub fn coefficients(self, at: &NoiseLevel) -> (f64, f64) {
        match self {
            Prediction::Eps => (0.0, -at.sigma),
            Prediction::X0 => (1.0, 0.0),
            Prediction::Score => (0.0, 1.0),
            Prediction::V => (-at.sigma, -at.alpha * at.sigma),
            Prediction::Velocity => (at.dalpha, -at.sigma_dsigma),
        }
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Prediction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Prediction::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::Domain(format!(
                    "unknown prediction type '{s}' (valid: eps, x0, score, v, velocity)"
                ))
            })
    }
}

/// (p, q) with `to = p x + q from` at this noise level; an error where `from` does not determine
/// `to` (e.g. eps -> x0 at alpha = 0, x0 -> eps at sigma = 0).
pub fn conversion(from: Prediction, to: Prediction, at: &NoiseLevel) -> Result<(f64, f64)> {
    if from == to {
        return Ok((0.0, 1.0));
    }
    let (af, bf) = from.coefficients(at);
    let (at_, bt) = to.coefficients(at);
    let det = at.alpha * bf + at.sigma * at.sigma * af;
    let p = (at_ * bf - bt * af) / det;
    let q = (bt * at.alpha + at_ * at.sigma * at.sigma) / det;
    if det == 0.0 || !p.is_finite() || !q.is_finite() {
        return Err(Error::Domain(format!(
            "cannot convert a {from} prediction to {to} at t = {} (alpha = {}, sigma = {}): \
             {from} does not determine {to} there",
            at.t, at.alpha, at.sigma
        )));
    }
    Ok((p, q))
}

/// Converts predictions `y` (N x d) of type `from` at points `x` into type `to`, in place.
pub fn convert(
    from: Prediction,
    to: Prediction,
    at: &NoiseLevel,
    x: ArrayView2<f64>,
    y: ArrayViewMut2<f64>,
) -> Result<()> {
    if x.dim() != y.dim() {
        return Err(Error::Dimension(format!(
            "points are {:?} but predictions are {:?}",
            x.dim(),
            y.dim()
        )));
    }
    if from == to {
        return Ok(());
    }
    let (p, q) = conversion(from, to, at)?;
    Zip::from(y).and(x).for_each(|y, &x| *y = p * x + q * *y);
    Ok(())
}

/// The PF-ODE drift dx/dt from a prediction of any type, in place.
pub fn drift(
    from: Prediction,
    at: &NoiseLevel,
    x: ArrayView2<f64>,
    y: ArrayViewMut2<f64>,
) -> Result<()> {
    convert(from, Prediction::Velocity, at, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule;
    use ndarray::Array2;

    fn levels() -> Vec<NoiseLevel> {
        let mut v = Vec::new();
        for (spec, ts) in [
            ("vp-linear", vec![0.02, 0.3, 0.9]),
            ("vp-cosine", vec![0.05, 0.5, 0.95]),
            ("ve", vec![0.3, 0.7]),
            ("edm", vec![0.05, 1.0, 40.0]),
            ("flow", vec![0.05, 0.5, 0.9]),
        ] {
            let s = schedule::parse(spec).unwrap();
            v.extend(ts.into_iter().map(|t| s.level(t)));
        }
        v
    }

    #[test]
    fn coefficients_are_the_table_in_the_score_basis() {
        // a x0 + b score = A x0 + B eps with score = -eps/sigma: a = A, b = -B sigma.
        for at in levels() {
            for p in Prediction::ALL {
                let (a, b) = p.coefficients(&at);
                let (big_a, big_b) = p.target(&at);
                assert_eq!(a, big_a);
                assert!(
                    (b + big_b * at.sigma).abs() < 1e-15 * b.abs().max(1.0),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn all_twenty_conversions_round_trip() {
        let x = Array2::from_shape_fn((3, 4), |(i, j)| (i as f64 - 1.3) * (j as f64 + 0.7));
        let y = Array2::from_shape_fn((3, 4), |(i, j)| ((i * 4 + j) as f64).sin());
        let mut pairs = 0;
        for at in levels() {
            for from in Prediction::ALL {
                for to in Prediction::ALL {
                    if from == to {
                        continue;
                    }
                    let mut z = y.clone();
                    convert(from, to, &at, x.view(), z.view_mut()).unwrap();
                    convert(to, from, &at, x.view(), z.view_mut()).unwrap();
                    let err = (&z - &y).iter().fold(0.0f64, |m, e| m.max(e.abs()));
                    assert!(err < 1e-12, "{from}->{to}->{from} at {at:?}: {err:e}");
                    pairs += 1;
                }
            }
        }
        assert_eq!(pairs, 20 * levels().len());
    }

    #[test]
    fn identity_and_singular_conversions() {
        let s = schedule::parse("flow").unwrap();
        assert_eq!(
            conversion(Prediction::V, Prediction::V, &s.level(0.3)).unwrap(),
            (0.0, 1.0)
        );
        // At alpha = 0 (flow, t = 1) eps is x/sigma and says nothing about x0.
        let e = conversion(Prediction::Eps, Prediction::X0, &s.level(1.0)).unwrap_err();
        assert!(e.to_string().contains("eps does not determine x0"), "{e}");
        // At sigma = 0 the denoiser is x/alpha: x0 says nothing about eps.
        assert!(conversion(Prediction::X0, Prediction::Eps, &s.level(0.0)).is_err());
        // ... but the score and the velocity still determine each other.
        let (p, q) = conversion(Prediction::Score, Prediction::Velocity, &s.level(0.0)).unwrap();
        assert!(p.is_finite() && q.is_finite());
    }

    #[test]
    fn drift_from_eps_is_f_x_minus_half_g2_score() {
        let s = schedule::parse("vp-linear").unwrap();
        let t = 0.4;
        let at = s.level(t);
        let (p, q) = conversion(Prediction::Eps, Prediction::Velocity, &at).unwrap();
        // dx/dt = f x - g^2/2 score = f x + g^2/(2 sigma) eps
        assert!((p - s.f(t)).abs() < 1e-14);
        assert!((q - s.g2(t) / (2.0 * at.sigma)).abs() < 1e-13);
    }
}
