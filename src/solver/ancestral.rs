//! Ancestral samplers of k-diffusion (`sample_euler_ancestral`, `sample_dpmpp_2s_ancestral`),
//! written in the EDM noise level rho = sigma/alpha of any schedule.
//!
//! Each step from rho_s to rho_t takes a deterministic step to rho_down and adds noise of level
//! rho_up ([`ancestral`]: rho_up = min(rho_t, eta sqrt(rho_t^2 (rho_s^2 - rho_t^2)/rho_s^2)),
//! rho_down = sqrt(rho_t^2 - rho_up^2)): in x = alpha y,
//!
//!   x_t = (alpha_t/alpha_down) x_down + alpha_t rho_up s_noise z,
//!
//! where x_down is the step's result at the time t_down of rho_down:
//! - `euler-ancestral`: Euler in (y, rho) with D = x0_hat, y_down = y + (rho_down - rho)(y - D)/rho,
//!   which is the exponential Euler (DDIM) step [`Step::first`] to t_down; one evaluation.
//! - `dpmpp-2s-ancestral`: DPM-Solver++(2S) to t_down with its stage at the lambda midpoint
//!   (r = 1/2, the update uses only the stage value: [`expint::singlestep`] of order 2); two
//!   evaluations.
//!
//! Options `eta` (default 1) and `s_noise` (default 1). eta = 0 gives DDIM and DPM-Solver++(2S)
//! (`dpm-solver++:order=2,method=singlestep-fixed` on a logSNR grid). The step to sigma = 0 is
//! the denoising step x = alpha_t x0_hat with no noise (k-diffusion: rho_down = 0, Euler).

use super::expint::{self, Param, Stages, Step, Type};
use super::sde::{ancestral, parse_eta, Brownian, Noise};
use super::{update, Entry, Env, Model, Solver};
use crate::error::Result;
use crate::grid::{t_of_rho, Grid};
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::Array2;

pub struct Ancestral {
    order: usize,
    eta: f64,
    s_noise: f64,
    m: Array2<f64>,
    stages: Stages,
    z: Array2<f64>,
    noise: Box<dyn Noise>,
}

fn build(spec: &mut Spec, env: &Env, order: usize) -> Result<Box<dyn Solver>> {
    let (eta, s_noise) = parse_eta(spec, 1.0, f64::INFINITY)?;
    Ok(Box::new(Ancestral {
        order,
        eta,
        s_noise,
        m: Array2::zeros((0, 0)),
        stages: Stages::default(),
        z: Array2::zeros((0, 0)),
        noise: Brownian::boxed(env.noise_seed),
    }))
}

pub const EULER_ANCESTRAL: Entry = Entry {
    name: "euler-ancestral",
    summary: "Euler ancestral sampling (k-diffusion sample_euler_ancestral, eta)",
    build: |spec, env| build(spec, env, 1),
    variants: &[("", "logsnr")],
};

pub const DPMPP_2S_ANCESTRAL: Entry = Entry {
    name: "dpmpp-2s-ancestral",
    summary: "DPM-Solver++(2S) ancestral sampling (k-diffusion sample_dpmpp_2s_ancestral, eta)",
    build: |spec, env| build(spec, env, 2),
    variants: &[("", "logsnr")],
};

impl Solver for Ancestral {
    fn order(&self) -> usize {
        1
    }
    fn nfe_per_step(&self) -> usize {
        self.order
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        let zero = usize::from(grid.ends_at_zero(schedule));
        Some(self.order * grid.steps() - (self.order - 1) * zero)
    }
    fn noise(&mut self) -> Option<&mut Box<dyn Noise>> {
        Some(&mut self.noise)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let (a, b) = (model.level(s), model.level(t));
        model.eval_into(Param::Data.prediction(), x, s, &mut self.m)?;
        if b.sigma == 0.0 {
            expint::denoise(model, Param::Data, s, t, x, &self.m);
            return Ok(());
        }
        let (down, up) = ancestral(a.sigma / a.alpha, b.sigma / b.alpha, self.eta);
        let t_down = if up == 0.0 {
            t
        } else {
            t_of_rho(model.schedule, down)?
        };
        if self.order == 1 {
            Step::new(model, Param::Data, s, t_down).first(x, &self.m);
        } else {
            self.stages.len = 0;
            let (r, m) = ([0.5, 0.0], &self.m);
            let (dpm, st) = (Type::DpmSolver, &mut self.stages);
            expint::singlestep(model, Param::Data, dpm, 2, s, t_down, &r, x, m, st)?;
        }
        if up > 0.0 {
            self.noise.normal(times, i, x.dim(), &mut self.z)?;
            let c_x = b.alpha / model.level(t_down).alpha;
            update(x, c_x, &[(b.alpha * up * self.s_noise, &self.z)]);
        }
        Ok(())
    }
}
