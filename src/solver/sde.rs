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
//! ([`crate::metrics::law`]). A sampler that draws several normals per step (the Langevin
//! correctors) splits its source into independent parts ([`Noise::split`]): part 0 of a Brownian
//! source is the same path, the others are [`Iid`] normals; a probe's parts are interleaved slots.

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

    /// Part `part` of `parts` independent sources, each drawn once per step.
    fn split(&self, parts: usize, part: usize) -> Box<dyn Noise>;

    /// Whether this is [`Probe`] noise, which only a sampler affine in its normals may use.
    fn is_probe(&self) -> bool {
        false
    }
}

/// Independent standard normals per step, row r of step i from its own counter-based stream
/// ([`crate::rng::RowRng`]) under a seed: the same at any thread count and batch split.
pub struct Iid {
    seed: u64,
}

impl Iid {
    pub fn boxed(seed: u64) -> Box<dyn Noise> {
        Box::new(Iid { seed })
    }
}

impl Noise for Iid {
    fn normal(
        &mut self,
        _: &[f64],
        i: usize,
        shape: (usize, usize),
        z: &mut Array2<f64>,
    ) -> Result<()> {
        use rayon::prelude::*;
        ensure(z, shape);
        let (seed, d) = (self.seed, shape.1.max(1));
        let domain = u32::try_from(i).unwrap_or(u32::MAX);
        let fill = |(r, row): (usize, &mut [f64])| {
            let mut rng = crate::rng::RowRng::new(seed, domain, r as u64);
            row.iter_mut().for_each(|v| *v = rng.normal());
        };
        let z = z.as_slice_mut().expect("standard layout");
        if z.len() > 8192 {
            z.par_chunks_mut(d).enumerate().for_each(fill);
        } else {
            z.chunks_mut(d).enumerate().for_each(fill);
        }
        Ok(())
    }

    fn split(&self, _: usize, part: usize) -> Box<dyn Noise> {
        Iid::boxed(crate::rng::seed_for(self.seed, &format!("part {part}")))
    }
}

/// Normalized increments of one Brownian path per row.
pub struct Brownian {
    seed: u64,
    path: BrownianPath,
    walk: Option<Walk>,
}

impl Brownian {
    pub fn new(seed: u64) -> Self {
        Brownian {
            seed,
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

    fn split(&self, _: usize, part: usize) -> Box<dyn Noise> {
        match part {
            0 => Brownian::boxed(self.seed),
            p => Iid::boxed(crate::rng::seed_for(self.seed, &format!("part {p}"))),
        }
    }
}

/// Given normals, one array per draw, consumed in order: the noise another implementation drew
/// (diffusers' `randn_tensor`), replayed.
pub struct Given {
    draws: std::collections::VecDeque<Array2<f64>>,
}

impl Given {
    pub fn new(draws: Vec<Array2<f64>>) -> Self {
        Given {
            draws: draws.into(),
        }
    }

    /// The draws not yet used.
    pub fn left(&self) -> usize {
        self.draws.len()
    }
}

impl Noise for Given {
    fn normal(
        &mut self,
        _: &[f64],
        i: usize,
        shape: (usize, usize),
        z: &mut Array2<f64>,
    ) -> Result<()> {
        let next = self.draws.pop_front().ok_or_else(|| {
            crate::Error::Domain(format!("the given noise has no draw left for step {i}"))
        })?;
        if next.dim() != shape {
            return Err(crate::Error::Dimension(format!(
                "the given noise for step {i} is {:?}, the sample {shape:?}",
                next.dim()
            )));
        }
        *z = next;
        Ok(())
    }

    fn split(&self, _: usize, _: usize) -> Box<dyn Noise> {
        Box::new(Given::new(Vec::new()))
    }
}

/// Probe noise for the exact output law: rows 0..=d carry no noise (they probe x_T); row
/// 1 + d + k d + j carries e_j in noise slot k = i parts + part (step i, part `part` of `parts`)
/// and nothing in the other slots.
pub struct Probe {
    pub d: usize,
    pub parts: usize,
    pub part: usize,
}

impl Probe {
    /// One part: slot k = step i.
    pub fn new(d: usize) -> Self {
        Probe {
            d,
            parts: 1,
            part: 0,
        }
    }

    /// The number of rows for `slots` noise slots ([`super::Solver::noise_slots`]).
    pub fn rows(d: usize, slots: usize) -> usize {
        1 + d + slots * d
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
        let slot = i * self.parts + self.part;
        for j in 0..d {
            let row = 1 + d + slot * d + j;
            if row < shape.0 {
                z[(row, j)] = 1.0;
            }
        }
        Ok(())
    }

    fn split(&self, parts: usize, part: usize) -> Box<dyn Noise> {
        Box::new(Probe {
            d: self.d,
            parts: self.parts * parts,
            part: self.part * parts + part,
        })
    }

    fn is_probe(&self) -> bool {
        true
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
