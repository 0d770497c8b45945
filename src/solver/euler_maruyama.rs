//! Euler-Maruyama on the reverse-time SDE family of Song et al. (ICLR 2021, eq. 6 and the
//! probability-flow ODE, eq. 13), with the noise level eta of Karras et al. (2022, eq. 6):
//!
//!   dx = [f(t) x - (1 + eta^2)/2 g(t)^2 grad log p_t(x)] dt + eta g(t) dW_t,   t decreasing,
//!
//! which has the marginals p_t for every eta >= 0: eta = 0 is the PF-ODE, eta = 1 the reverse
//! SDE of Anderson (1982). With grad log p_t = -eps_hat/sigma_t and the PF-ODE velocity
//! v = f x - g^2/2 grad log p_t, one step from s to t (dt = t - s < 0, Kloeden & Platen 1992,
//! eq. 9.1.1) is
//!
//!   x_t = x_s + [v(x_s, s) + (eta^2/2) g_s^2 eps_hat/sigma_s] dt + eta g_s sqrt|dt| z,
//!
//! one evaluation per step, z from the sampler's [`Noise`] source. The noise is additive, so the
//! method has strong and weak order 1. Option: `eta` (default 1), `s_noise` (default 1, scales z).

use super::sde::{parse_eta, Brownian, Noise};
use super::{update, Entry, Model, Solver};
use crate::error::Result;
use crate::grid::Grid;
use crate::prediction::{conversion, Prediction};
use crate::schedule::Schedule;
use ndarray::Array2;

pub struct EulerMaruyama {
    eta: f64,
    s_noise: f64,
    eps: Array2<f64>,
    z: Array2<f64>,
    noise: Box<dyn Noise>,
}

pub const ENTRY: Entry = Entry {
    name: "euler-maruyama",
    summary: "Euler-Maruyama on the reverse SDE; eta interpolates PF-ODE (0) to reverse SDE (1)",
    build: |spec, env| {
        let (eta, s_noise) = parse_eta(spec, 1.0, f64::INFINITY)?;
        Ok(Box::new(EulerMaruyama {
            eta,
            s_noise,
            eps: Array2::zeros((0, 0)),
            z: Array2::zeros((0, 0)),
            noise: Brownian::boxed(env.noise_seed),
        }))
    },
    variants: &[("", "time-uniform"), ("eta=0.5", "logsnr")],
};

impl Solver for EulerMaruyama {
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
        Some(&mut self.noise)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let dt = t - s;
        let a = model.level(s);
        model.eval_into(Prediction::Eps, x, s, &mut self.eps)?;
        let (p, q) = conversion(Prediction::Eps, Prediction::Velocity, &a)?;
        let g2 = model.schedule.g2(s);
        let c_eps = dt * (q + 0.5 * self.eta * self.eta * g2 / a.sigma);
        if self.eta == 0.0 {
            update(x, 1.0 + dt * p, &[(c_eps, &self.eps)]);
            return Ok(());
        }
        self.noise.normal(times, i, x.dim(), &mut self.z)?;
        let c_z = self.eta * (g2 * dt.abs()).sqrt() * self.s_noise;
        update(x, 1.0 + dt * p, &[(c_eps, &self.eps), (c_z, &self.z)]);
        Ok(())
    }
}
