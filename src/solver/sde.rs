//! What the stochastic samplers share: their noise source, k-diffusion's ancestral step and the
//! noise level parameter.
//!
//! A stochastic sampler injects, on step i from t_i to t_{i+1}, a multiple of a standard normal
//! z_i drawn by a [`Noise`] source. The default source, [`Brownian`], takes
//! z_i = (W(t_{i+1}) - W(t_i)) / sqrt|t_{i+1} - t_i| from one refinement-consistent Brownian
//! path per row ([`crate::brownian`]) in the schedule's time t, keyed by the run's noise seed: a
//! run at 2n steps sees the same path as one at n steps (k-diffusion's `BrownianTreeNoiseSampler`
//! does the same in sigma). [`Probe`] instead sets one unit entry per probe row and step, which
//! reads off the affine map from (x_T, z_0, ..., z_{n-1}) to the output on Gaussian data
//! ([`crate::metrics::law`]).

use super::ensure;
use crate::brownian::{BrownianPath, Walk};
use crate::error::Result;
use crate::spec::Spec;
use ndarray::Array2;

/// A source of the standard normals a stochastic sampler injects.
pub trait Noise: Send {
    /// Fills `z` (reshaped to `shape`) with the normals of step i of `times`; steps come in order.
    fn normal(
        &mut self,
        times: &[f64],
        i: usize,
        shape: (usize, usize),
        z: &mut Array2<f64>,
    ) -> Result<()>;
}

/// Normalized increments of one Brownian path per row.
pub struct Brownian {
    path: BrownianPath,
    walk: Option<Walk>,
}

impl Brownian {
    pub fn new(seed: u64) -> Self {
        Brownian {
            path: BrownianPath::new(seed),
            walk: None,
        }
    }

    /// A boxed source, as a sampler holds it.
    pub fn boxed(seed: u64) -> Box<dyn Noise> {
        Box::new(Brownian::new(seed))
    }
}

impl Noise for Brownian {
    fn normal(
        &mut self,
        times: &[f64],
        i: usize,
        shape: (usize, usize),
        z: &mut Array2<f64>,
    ) -> Result<()> {
        if i == 0 || self.walk.is_none() {
            self.walk = Some(self.path.walk(times, shape.0, shape.1)?);
        }
        let walk = self.walk.as_mut().unwrap();
        ensure(z, shape);
        walk.increment(i, z)?;
        let scale = 1.0 / (times[i + 1] - times[i]).abs().sqrt();
        z.mapv_inplace(|v| v * scale);
        Ok(())
    }
}

/// Probe noise for the exact output law: rows 0..=d carry no noise (they probe x_T); row
/// 1 + d + i d + j carries e_j at step i and nothing at the other steps.
pub struct Probe {
    pub d: usize,
}

impl Probe {
    /// The number of rows for `steps` steps.
    pub fn rows(d: usize, steps: usize) -> usize {
        1 + d + steps * d
    }
}

impl Noise for Probe {
    fn normal(
        &mut self,
        _: &[f64],
        i: usize,
        shape: (usize, usize),
        z: &mut Array2<f64>,
    ) -> Result<()> {
        ensure(z, shape);
        z.fill(0.0);
        let d = self.d;
        for j in 0..d {
            let row = 1 + d + i * d + j;
            if row < shape.0 {
                z[(row, j)] = 1.0;
            }
        }
        Ok(())
    }
}

/// k-diffusion's `get_ancestral_step` in the EDM noise level rho = sigma/alpha: from rho_s to
/// rho_t, the deterministic step goes to rho_down and noise of level rho_up is added, with
/// rho_up = min(rho_t, eta sqrt(rho_t^2 (rho_s^2 - rho_t^2) / rho_s^2)) and
/// rho_down = sqrt(rho_t^2 - rho_up^2).
pub fn ancestral(rho_s: f64, rho_t: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (rho_t, 0.0);
    }
    let up =
        rho_t.min(eta * (rho_t * rho_t * (rho_s * rho_s - rho_t * rho_t) / (rho_s * rho_s)).sqrt());
    ((rho_t * rho_t - up * up).sqrt(), up)
}

/// The `eta` option, in [0, max] (`max` may be infinite), and k-diffusion's `s_noise` (default 1).
pub fn parse_eta(spec: &mut Spec, default: f64, max: f64) -> Result<(f64, f64)> {
    let eta = spec.take_f64("eta", default)?;
    if !(0.0..=max).contains(&eta) {
        let range = match max.is_finite() {
            true => format!("[0, {max}]"),
            false => "[0, inf)".into(),
        };
        return Err(spec.error(format!("option 'eta': {eta} is not in {range}")));
    }
    Ok((eta, parse_s_noise(spec)?))
}

/// k-diffusion's `s_noise` (>= 0, default 1), which scales the injected normals.
pub fn parse_s_noise(spec: &mut Spec) -> Result<f64> {
    let s_noise = spec.take_f64("s_noise", 1.0)?;
    if s_noise < 0.0 {
        return Err(spec.error(format!("option 's_noise': {s_noise} is negative")));
    }
    Ok(s_noise)
}
