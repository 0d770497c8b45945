//! DDIM (Song, Meng & Ermon, ICLR 2021, eq. 12) and DDPM ancestral sampling (Ho, Jain & Abbeel,
//! NeurIPS 2020, eqs. 6-7 and Algorithm 2).
//!
//! - `ddim`: from one x0 prediction at s, eps_hat = (x_s - alpha_s x0_hat)/sigma_s and
//!   x_t = alpha_t x0_hat + sqrt(sigma_t^2 - sigma_eta^2) eps_hat + sigma_eta z with
//!   sigma_eta = eta sigma_t sqrt(1 - e^{-2h}) (h = lambda_t - lambda_s), which on VP schedules is
//!   eq. 16's eta sqrt((1 - abar_t)/(1 - abar_s)) sqrt(1 - abar_s/abar_t) (diffusers'
//!   `DDIMScheduler.step(eta)`, `variance_noise` = z). Option `eta` in [0, 1] (default 0).
//!   With eta = 0 it is the exponential Euler method of the PF-ODE, equal to DPM-Solver-1,
//!   DPM-Solver++-1 and UniPC-1 without corrector (Lu et al. 2022, Sec. 4.1); pfode writes it in
//!   DDIM's own form, which makes that identity a test. Order 1, one evaluation per step.
//! - `ddpm`: x_t drawn from the forward posterior q(x_t | x_s, x0_hat) = N(mu, sigma_post^2 I),
//!   mu = (alpha_s/alpha_t) (sigma_t^2/sigma_s^2) x_s + alpha_t (sigma_ts^2/sigma_s^2) x0_hat,
//!   sigma_post = sigma_t sigma_ts / sigma_s, with sigma_ts^2 = sigma_s^2 - (alpha_s/alpha_t)^2
//!   sigma_t^2 the transition variance (diffusers' `DDPMScheduler`, `variance_type="fixed_small"`,
//!   without clipping x0_hat). It equals `ddim:eta=1` and `sde-dpm-solver++:order=1`.
//!
//! The step to sigma = 0 gives x_t = alpha_t x0_hat with no noise, as every other solver.
//!
//! Under CFG++ guidance (Chung et al. 2024, Algorithm 1; [`crate::guidance`]) `ddim` takes x0_hat
//! from the guided prediction and eps_hat = (x_s - alpha_s x0_g)/sigma_s from the guide's: the
//! official `ddim_cfg++`; eta > 0 adds the same noise as without guidance. `ddpm` does not
//! implement it.

use super::sde::{parse_eta, parse_s_noise, Brownian, Noise};
use super::{update, Entry, Env, Model, Solver};
use crate::error::Result;
use crate::grid::Grid;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::{Array2, Zip};

pub struct Ddim {
    eta: f64,
    s_noise: f64,
    posterior: bool,
    x0: Array2<f64>,
    x0_guide: Array2<f64>,
    z: Array2<f64>,
    noise: Option<Box<dyn Noise>>,
}

fn build(spec: &mut Spec, env: &Env, posterior: bool) -> Result<Box<dyn Solver>> {
    let (eta, s_noise) = if posterior {
        (1.0, parse_s_noise(spec)?)
    } else {
        parse_eta(spec, 0.0, 1.0)?
    };
    Ok(Box::new(Ddim {
        eta,
        s_noise,
        posterior,
        x0: Array2::zeros((0, 0)),
        x0_guide: Array2::zeros((0, 0)),
        z: Array2::zeros((0, 0)),
        noise: (eta > 0.0).then(|| Brownian::boxed(env.noise_seed)),
    }))
}

pub const ENTRY: Entry = Entry {
    name: "ddim",
    summary: "DDIM: the exponential Euler method (eta = 0), stochastic for eta > 0",
    build: |spec, env| build(spec, env, false),
    variants: &[("", "logsnr"), ("", "time-uniform"), ("eta=1", "logsnr")],
};

pub const DDPM: Entry = Entry {
    name: "ddpm",
    summary: "DDPM ancestral sampling (posterior mean and variance)",
    build: |spec, env| build(spec, env, true),
    variants: &[("", "time-uniform")],
};

impl Solver for Ddim {
    fn order(&self) -> usize {
        1
    }
    fn nfe_per_step(&self) -> usize {
        1
    }
    fn nfe(&self, grid: &Grid, _: &dyn Schedule) -> Option<usize> {
        Some(grid.steps())
    }
    fn noise(&mut self) -> Option<&mut Box<dyn Noise>> {
        self.noise.as_mut()
    }
    fn renoises_with_guide(&self) -> bool {
        !self.posterior
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (a, b) = (model.level(times[i]), model.level(times[i + 1]));
        let cfgpp = model.oracle.renoises_with_guide();
        if cfgpp {
            model.eval_with_guide(
                Prediction::X0,
                x,
                times[i],
                &mut self.x0,
                &mut self.x0_guide,
            )?;
        } else {
            model.eval_into(Prediction::X0, x, times[i], &mut self.x0)?;
        }
        let h = model.lambda(times[i + 1]) - model.lambda(times[i]);
        let noise = self.eta * b.sigma * (-(-2.0 * h).exp_m1()).sqrt();
        let c_z = noise * self.s_noise;
        if self.posterior {
            let ratio = a.alpha / b.alpha;
            let var_ts = a.sigma * a.sigma - ratio * ratio * b.sigma * b.sigma;
            let c_x = ratio * b.sigma * b.sigma / (a.sigma * a.sigma);
            let c_0 = b.alpha * var_ts / (a.sigma * a.sigma);
            let c_z = b.sigma * var_ts.max(0.0).sqrt() / a.sigma * self.s_noise;
            if c_z == 0.0 {
                update(x, c_x, &[(c_0, &self.x0)]);
            } else {
                let noise = self.noise.as_mut().expect("ddpm is stochastic");
                noise.normal(times, i, x.dim(), &mut self.z)?;
                update(x, c_x, &[(c_0, &self.x0), (c_z, &self.z)]);
            }
            return Ok(());
        }
        let (c_x, c_0) = (1.0 / a.sigma, -a.alpha / a.sigma);
        let direction = if noise == 0.0 {
            b.sigma
        } else {
            (b.sigma * b.sigma - noise * noise).max(0.0).sqrt()
        };
        let renoise = if cfgpp { &self.x0_guide } else { &self.x0 };
        Zip::from(&mut *x)
            .and(&self.x0)
            .and(renoise)
            .par_for_each(|x, &x0, &x0_renoise| {
                let eps = *x * c_x + c_0 * x0_renoise;
                *x = x0 * b.alpha + direction * eps;
            });
        if c_z > 0.0 {
            let source = self
                .noise
                .as_mut()
                .expect("ddim with eta > 0 is stochastic");
            source.normal(times, i, x.dim(), &mut self.z)?;
            update(x, 1.0, &[(c_z, &self.z)]);
        }
        Ok(())
    }
}
