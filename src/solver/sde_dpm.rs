//! SDE-DPM-Solver++ (Lu et al. 2022b, arXiv:2211.01095, Sec. 5 and Appendix; k-diffusion
//! `sample_dpmpp_2m_sde` and `sample_dpmpp_3m_sde`, diffusers `algorithm_type="sde-dpmsolver++"`):
//! the multistep DPM-Solver++ updates of [`super::expint::multistep`] with the step of
//! [`super::expint::Step::with_eta`], plus the noise sigma_t sqrt(1 - e^{-2 eta h}) s_noise z. With h' = (1 + eta) h:
//!
//!   x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-h'}) m_0 + (2M, 3M terms) + noise,
//!
//! 2M adds (1/r) (m_0 - m_1) times alpha_t (1 - e^{-h'})/2 (`type=midpoint`, k-diffusion's
//! default) or alpha_t h' phi_2(-h') (`heun`); 3M is k-diffusion's third-order update with h'
//! (second-order warm-up in the `heun` form), which, like the deterministic official 3M, keeps
//! half the Taylor coefficient of its second difference. eta = 1 (default) is the SDE of the
//! paper (diffusers has no eta); eta = 0 is DPM-Solver++ itself. The step to sigma = 0 is
//! x = alpha_t x0_hat with no noise, and no order is lowered at the end unless
//! `lower_order_final=true` (k-diffusion). `sde-dpm-solver++:order=1` is `ddpm`.

use super::expint::{self, Buffers, History, Param, Type};
use super::sde::{parse_eta, Brownian, Noise};
use super::{update, Entry, Env, Model, Multistep, Solver};
use crate::error::Result;
use crate::grid::Grid;
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::Array2;

pub struct SdeDpmSolverPp {
    ty: Type,
    ms: Multistep,
    eta: f64,
    s_noise: f64,
    hist: History,
    buf: Buffers,
    z: Array2<f64>,
    noise: Box<dyn Noise>,
}

fn build(spec: &mut Spec, env: &Env, order: Option<usize>) -> Result<Box<dyn Solver>> {
    let order = match order {
        Some(k) => k,
        None => spec.take_range("order", 2, 1, 2)?,
    };
    let ty = if order == 3 || spec.take_choice("type", "midpoint", &["midpoint", "heun"])? == "heun"
    {
        Type::Taylor
    } else {
        Type::DpmSolver
    };
    let ms = Multistep {
        order,
        lower_order_final: spec.take("lower_order_final", false)?,
        singlestep_warmup: false,
        final_below: spec.take_optional::<usize>("lower_order_final_below")?,
        euler_at_final: false,
    };
    let (eta, s_noise) = parse_eta(spec, 1.0, f64::INFINITY)?;
    Ok(Box::new(SdeDpmSolverPp {
        ty,
        ms,
        eta,
        s_noise,
        hist: History::new(order),
        buf: Buffers::default(),
        z: Array2::zeros((0, 0)),
        noise: Brownian::boxed(env.noise_seed),
    }))
}

pub const SDE_DPM_SOLVER_PP: Entry = Entry {
    name: "sde-dpm-solver++",
    summary: "SDE-DPM-Solver++ 1 and 2M (k-diffusion dpmpp_2m_sde: midpoint | heun, eta)",
    build: |spec, env| build(spec, env, None),
    variants: &[
        ("order=1", "logsnr"),
        ("order=2", "logsnr"),
        ("order=2,type=heun", "logsnr"),
    ],
};

pub const DPMPP_3M_SDE: Entry = Entry {
    name: "dpmpp-3m-sde",
    summary: "DPM-Solver++(3M) SDE (k-diffusion dpmpp_3m_sde, eta)",
    build: |spec, env| build(spec, env, Some(3)),
    variants: &[("", "logsnr")],
};

impl Solver for SdeDpmSolverPp {
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
        let kind = Param::Data.prediction();
        let m = &mut self.buf.m;
        if i == 0 {
            self.hist.entries.clear();
        }
        model.eval_into(kind, x, s, m)?;
        self.hist.push(s, model.lambda(s), m);
        let b = model.level(t);
        if b.sigma == 0.0 {
            expint::denoise(model, Param::Data, s, t, x, &self.hist.back(0).2);
            return Ok(());
        }
        let n = times.len() - 1;
        let k = self.ms.for_steps(n).step_order(i, n, self.hist.len());
        let d2_scale = 1.0;
        let u = expint::multistep(
            model,
            Param::Data,
            self.ty,
            k,
            d2_scale,
            self.eta,
            &self.hist,
            t,
        );
        self.hist.apply(&u, x, None);
        let h = model.lambda(t) - model.lambda(s);
        let c_z = b.sigma * (-(-2.0 * self.eta * h).exp_m1()).sqrt() * self.s_noise;
        if c_z > 0.0 {
            self.noise.normal(times, i, x.dim(), &mut self.z)?;
            update(x, 1.0, &[(c_z, &self.z)]);
        }
        Ok(())
    }
}
