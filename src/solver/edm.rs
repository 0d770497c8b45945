//! The EDM stochastic sampler (Karras et al., NeurIPS 2022, Algorithm 2; NVlabs/edm
//! `edm_sampler`, k-diffusion `sample_heun` with `s_churn`), in the EDM noise level
//! rho = sigma/alpha and y = x/alpha of any schedule.
//!
//! Step i of N: gamma = min(S_churn/N, sqrt 2 - 1) if S_min <= rho_i <= S_max, else 0;
//! rho_hat = (1 + gamma) rho_i; y_hat = y_i + sqrt(rho_hat^2 - rho_i^2) S_noise z; then Heun's
//! method in rho from rho_hat to rho_{i+1} with dy/drho = (y - D(y, rho))/rho (an Euler step
//! when rho_{i+1} = 0). On a schedule with a finite t_max, rho_hat is capped at rho(t_max).
//! Options: `s_churn` (default 0: deterministic, which on the EDM schedule is `heun`), `s_min`
//! (0), `s_max` (inf), `s_noise` (1). Two evaluations per step, one on the step to sigma = 0.

use super::sde::{parse_s_noise, Brownian, Noise};
use super::{combine, Entry, Model, Solver};
use crate::error::Result;
use crate::grid::{t_of_rho, Grid};
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use ndarray::Array2;

#[derive(Default)]
struct Buffers {
    x_hat: Array2<f64>,
    d0: Array2<f64>,
    x_euler: Array2<f64>,
    d1: Array2<f64>,
    z: Array2<f64>,
}

pub struct EdmSampler {
    s_churn: f64,
    s_min: f64,
    s_max: f64,
    s_noise: f64,
    buf: Buffers,
    noise: Option<Box<dyn Noise>>,
}

pub const ENTRY: Entry = Entry {
    name: "edm",
    summary:
        "EDM stochastic sampler (Karras et al. 2022, Algorithm 2: s_churn, s_min, s_max, s_noise)",
    build: |spec, env| {
        let s_churn = spec.take_f64("s_churn", 0.0)?;
        let s_min = spec.take_f64("s_min", 0.0)?;
        let s_max: f64 = spec.take("s_max", f64::INFINITY)?;
        let s_noise = parse_s_noise(spec)?;
        if s_churn < 0.0 || s_min < 0.0 || s_max.is_nan() || s_max < s_min {
            return Err(spec.error("need s_churn >= 0 and 0 <= s_min <= s_max"));
        }
        Ok(Box::new(EdmSampler {
            s_churn,
            s_min,
            s_max,
            s_noise,
            buf: Buffers::default(),
            noise: (s_churn > 0.0).then(|| Brownian::boxed(env.noise_seed)),
        }))
    },
    variants: &[("", "karras"), ("s_churn=20", "logsnr")],
};

impl Solver for EdmSampler {
    fn order(&self) -> usize {
        if self.noise.is_some() {
            1
        } else {
            2
        }
    }
    fn nfe_per_step(&self) -> usize {
        2
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        Some(2 * grid.steps() - usize::from(grid.ends_at_zero(schedule)))
    }
    fn noise(&mut self) -> Option<&mut Box<dyn Noise>> {
        self.noise.as_mut()
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let (a, b) = (model.level(s), model.level(t));
        let (rho_i, rho_next) = (a.sigma / a.alpha, b.sigma / b.alpha);
        let n = (times.len() - 1) as f64;
        let in_range = self.s_min <= rho_i && rho_i <= self.s_max;
        let gamma = match &self.noise {
            Some(_) if in_range => (self.s_churn / n).min(2f64.sqrt() - 1.0),
            _ => 0.0,
        };
        let Buffers {
            x_hat,
            d0,
            x_euler,
            d1,
            z,
        } = &mut self.buf;
        let t_hat = if gamma > 0.0 {
            let t_max = model.schedule.t_max();
            let rho_max = model.level(t_max).sigma / model.level(t_max).alpha;
            let rho_hat = (rho_i * (1.0 + gamma)).min(rho_max);
            let t_hat = if rho_hat == rho_max {
                t_max
            } else {
                t_of_rho(model.schedule, rho_hat)?
            };
            let alpha_hat = model.level(t_hat).alpha;
            let noise = self.noise.as_mut().unwrap();
            noise.normal(times, i, x.dim(), z)?;
            let c_z = alpha_hat * (rho_hat * rho_hat - rho_i * rho_i).sqrt() * self.s_noise;
            combine(x_hat, &[(alpha_hat / a.alpha, x), (c_z, z)]);
            t_hat
        } else {
            std::mem::swap(x, x_hat);
            s
        };
        let h = model.level(t_hat);
        let rho_hat = h.sigma / h.alpha;
        model.eval_into(Prediction::X0, x_hat, t_hat, d0)?;
        let delta = rho_next - rho_hat;
        let c_x = b.alpha / h.alpha * (1.0 + delta / rho_hat);
        let c_d = -b.alpha * delta / rho_hat;
        if rho_next == 0.0 {
            combine(x, &[(c_x, x_hat), (c_d, d0)]);
            return Ok(());
        }
        combine(x_euler, &[(c_x, x_hat), (c_d, d0)]);
        model.eval_into(Prediction::X0, x_euler, t, d1)?;
        let half = 0.5 * delta;
        combine(
            x,
            &[
                (b.alpha / h.alpha * (1.0 + half / rho_hat), x_hat),
                (-b.alpha * half / rho_hat, d0),
                (half / rho_next, x_euler),
                (-b.alpha * half / rho_next, d1),
            ],
        );
        Ok(())
    }
}
