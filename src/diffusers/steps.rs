//! `scheduler.step(out, t, x)` of each class, on pfode's shared machinery: the exponential
//! integrator steps, multistep and singlestep weights and UniPC of [`crate::solver::expint`] on
//! the sigma/alpha schedule [`Rho`] (times are the scheduler's sigmas), the Adams weights of
//! [`crate::solver::adams`] (DEIS's log-rho, LMS's rho), and k-diffusion's ancestral split.
//! Where diffusers' arithmetic differs from those methods it is written out here and said:
//!
//! - DPM-Solver (multistep and singlestep) with `algorithm_type="sde-dpmsolver++"` at third order
//!   gives its second difference the coefficient alpha_t (-phi_2(-2h) - 1/2) where the Taylor form
//!   (k-diffusion's `dpmpp_3m_sde`) has alpha_t (1/2 - phi_2(-2h)): E_3 less alpha_t.
//! - UniPC's predictor to sigma = 0 is finite only at order 1 with bh2 and x0 prediction (B(h) and
//!   phi_1 are infinite there otherwise); diffusers returns NaN, pfode an error.
//! - DDIM keeps the model's own eps for the direction term when x0 is clipped.

use super::config::{Class, Threshold, Variance};
use super::{threshold, to_x0, Rho, Scheduler};
use crate::error::{Error, Result};
use crate::prediction::{self, Prediction};
use crate::schedule::{NoiseLevel, Schedule};
use crate::solver::adams::{self, Rule};
use crate::solver::expint::{self, History, Param, Step, Type, UniPc, Variant, Weights};
use crate::solver::sde::{ancestral, Noise};
use crate::solver::{combine, update, Model, MAX_TERMS};
use ndarray::{Array2, Zip};

/// The state a scheduler keeps between steps.
pub(super) struct Stepper<'s> {
    s: &'s Scheduler,
    /// Model values (DPM family) or derivatives (LMS), newest last, at times = sigmas.
    hist: History,
    lower_order_nums: usize,
    /// UniPC: the sample before the last predictor; DPM singlestep: the sample at the start of a
    /// singlestep step.
    last: Array2<f64>,
    this_order: usize,
    /// Heun's first-order half: its dt (its start sample is `last`, its derivative `buf`).
    heun: Option<f64>,
    z: Array2<f64>,
    buf: Array2<f64>,
}

impl<'s> Stepper<'s> {
    pub(super) fn new(s: &'s Scheduler) -> Self {
        let capacity = match s.config.class {
            Class::Lms => 4,
            _ => s.config.order.max(1),
        };
        let empty = || Array2::zeros((0, 0));
        Stepper {
            s,
            hist: History::new(capacity),
            lower_order_nums: 0,
            last: empty(),
            this_order: 1,
            heun: None,
            z: empty(),
            buf: empty(),
        }
    }

    fn sigma(&self, i: usize) -> f64 {
        self.s.plan.sigmas[i]
    }

    /// Step i with the model output `out` (overwritten), on the sample `x`.
    pub(super) fn step(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        noise: &mut dyn Noise,
        times: &[f64],
        model: &Model,
    ) -> Result<()> {
        match self.s.config.class {
            Class::Ddim | Class::Ddpm => self.ddim(i, out, x, noise, times),
            Class::DpmMultistep => self.dpm_multistep(i, out, x, noise, times, model),
            Class::DpmSinglestep => self.dpm_singlestep(i, out, x, noise, times, model),
            Class::Deis => self.deis(i, out, x),
            Class::UniPc => self.unipc(i, out, x, model),
            Class::Euler | Class::EulerAncestral => self.euler(i, out, x, noise, times),
            Class::Heun => self.heun(i, out, x),
            Class::Lms => self.lms(i, out, x),
        }
    }

    /// `convert_model_output`: the model output as `target` (x0 or eps) at the scheduler's level
    /// of step i, thresholded where the class does; `roundtrip` goes through x0 as DEIS does.
    fn convert(
        &self,
        target: Prediction,
        out: &mut Array2<f64>,
        x: &Array2<f64>,
        level: &NoiseLevel,
        thr: Option<Threshold>,
        roundtrip: bool,
    ) -> Result<()> {
        let p = self.s.config.prediction;
        if target == Prediction::X0 || thr.is_some() || roundtrip {
            to_x0(p, out, x, level, 1.0)?;
            if let Some(t) = thr {
                threshold(out, t.ratio, t.max);
            }
            if target == Prediction::Eps {
                prediction::convert(
                    Prediction::X0,
                    Prediction::Eps,
                    level,
                    x.view(),
                    out.view_mut(),
                )?;
            }
            Ok(())
        } else {
            prediction::convert(p, target, level, x.view(), out.view_mut())
        }
    }

    /// The model value of step i as `target` ([`Self::convert`]), pushed on the history.
    fn push_model(
        &mut self,
        i: usize,
        target: Prediction,
        out: &mut Array2<f64>,
        x: &Array2<f64>,
        thr: Option<Threshold>,
        roundtrip: bool,
    ) -> Result<()> {
        let s = self.sigma(i);
        self.convert(target, out, x, &Rho.level(s), thr, roundtrip)?;
        self.hist.push(s, Rho.lambda(s), out);
        Ok(())
    }

    /// The multistep order of step i (DPM-Solver and DEIS): the warm-up, `lower_order_final`
    /// below 15 steps, and (DPM-Solver) `euler_at_final` and a final step to sigma = 0.
    fn multistep_order(&self, i: usize, final_first: bool) -> usize {
        let c = &self.s.config;
        let n = self.s.nfe();
        let lof = c.lower_order_final && n < 15;
        let last = i + 1 == n && (lof || final_first);
        let second = i + 2 == n && lof;
        if c.order == 1 || self.lower_order_nums < 1 || last {
            1
        } else if c.order == 2 || self.lower_order_nums < 2 || second {
            2
        } else {
            3
        }
    }

    fn draw(
        &mut self,
        noise: &mut dyn Noise,
        times: &[f64],
        i: usize,
        dim: (usize, usize),
    ) -> Result<()> {
        noise.normal(times, i, dim, &mut self.z)
    }

    fn dpm_multistep(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        noise: &mut dyn Noise,
        times: &[f64],
        model: &Model,
    ) -> Result<()> {
        let c = &self.s.config;
        let (s, t) = (self.sigma(i), self.sigma(i + 1));
        let p = if c.algorithm.data() {
            Param::Data
        } else {
            Param::Noise
        };
        self.push_model(i, p.prediction(), out, x, c.threshold, false)?;
        let k = self.multistep_order(i, c.euler_at_final || c.final_zero);
        if t == 0.0 {
            expint::denoise(model, p, s, t, x, &self.hist.back(0).2);
        } else {
            let eta = if c.algorithm.sde() { 1.0 } else { 0.0 };
            let st = Step::with_eta(model, p, s, t, eta);
            let mut e = st.es();
            if c.algorithm.sde() && k == 3 {
                e[2] -= Rho.alpha(t);
            }
            let ty = if c.taylor {
                Type::Taylor
            } else {
                Type::DpmSolver
            };
            let u = expint::multistep_with(&st, e, ty, k, 1.0, &self.hist);
            self.hist.apply(&u, x, None);
        }
        self.sde_noise(noise, times, i, p, s, t, x)?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.order);
        Ok(())
    }

    /// The SDE algorithms' noise: a draw every step, sigma_t sqrt(1 - e^{-2h}) z (data) or
    /// sigma_t sqrt(e^{2h} - 1) z (noise) added, h the log-SNR step from `start`.
    #[allow(clippy::too_many_arguments)]
    fn sde_noise(
        &mut self,
        noise: &mut dyn Noise,
        times: &[f64],
        i: usize,
        p: Param,
        start: f64,
        t: f64,
        x: &mut Array2<f64>,
    ) -> Result<()> {
        if !self.s.config.algorithm.sde() {
            return Ok(());
        }
        self.draw(noise, times, i, x.dim())?;
        if t > 0.0 {
            let h = Rho.lambda(t) - Rho.lambda(start);
            let c_z = Rho.sigma(t)
                * match p {
                    Param::Data => (-(-2.0 * h).exp_m1()).sqrt(),
                    Param::Noise => (2.0 * h).exp_m1().sqrt(),
                };
            update(x, 1.0, &[(c_z, &self.z)]);
        }
        Ok(())
    }

    fn dpm_singlestep(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        noise: &mut dyn Noise,
        times: &[f64],
        model: &Model,
    ) -> Result<()> {
        let c = &self.s.config;
        let t = self.sigma(i + 1);
        let p = if c.algorithm.data() {
            Param::Data
        } else {
            Param::Noise
        };
        self.push_model(i, p.prediction(), out, x, c.threshold, false)?;
        let mut k = self.s.plan.orders[i];
        while self.hist.len() < k {
            k -= 1;
        }
        if k == 1 {
            self.last.clone_from(x);
        }
        let start = self.sigma(i + 1 - k);
        if t == 0.0 {
            expint::denoise(model, p, start, t, x, &self.hist.back(0).2);
        } else {
            let sde = c.algorithm.sde();
            let st = Step::with_eta(model, p, start, t, if sde { 1.0 } else { 0.0 });
            let mut e = st.es();
            let ty = if c.taylor {
                Type::Taylor
            } else {
                Type::DpmSolver
            };
            if sde && k == 3 && ty == Type::Taylor {
                e[2] -= Rho.alpha(t);
            }
            let ls = Rho.lambda(start);
            let mut r = [0.0; 2];
            for (j, rj) in r.iter_mut().enumerate().take(k - 1) {
                *rj = (Rho.lambda(self.sigma(i + 2 + j - k)) - ls) / st.h;
            }
            let w = expint::singlestep_weights(e, ty, k, &r);
            let mut terms = [(st.c_x, &self.last); MAX_TERMS];
            for (j, term) in terms[1..=k].iter_mut().enumerate() {
                *term = (w[j], &self.hist.back(k - 1 - j).2);
            }
            combine(x, &terms[..=k]);
        }
        self.sde_noise(noise, times, i, p, start, t, x)
    }

    fn deis(&mut self, i: usize, out: &mut Array2<f64>, x: &mut Array2<f64>) -> Result<()> {
        let c = &self.s.config;
        let (s, t) = (self.sigma(i), self.sigma(i + 1));
        self.push_model(i, Prediction::Eps, out, x, c.threshold, true)?;
        let k = self.multistep_order(i, false);
        let cs = adams::weights(Rule::LogRho, &Rho, &self.hist.times(k)[..k], t);
        let a_t = Rho.alpha(t);
        let mut u = Weights::new(a_t / Rho.alpha(s), 0.0);
        for (w, cj) in u.w.iter_mut().zip(cs) {
            *w = a_t * cj;
        }
        self.hist.apply(&u, x, None);
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.order);
        Ok(())
    }

    fn unipc(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        model: &Model,
    ) -> Result<()> {
        let c = &self.s.config;
        let s = self.sigma(i);
        let (p, thr) = match c.predict_x0 {
            true => (Param::Data, c.threshold),
            false => (Param::Noise, None),
        };
        self.convert(p.prediction(), out, x, &Rho.level(s), thr, false)?;
        let variant = if c.bh2 { Variant::Bh2 } else { Variant::Bh1 };
        if i > 0 && !c.disable_corrector.contains(&(i as i64 - 1)) {
            let corrector = UniPc::new(model, p, variant, self.this_order, &self.hist, s).correct();
            x.clone_from(&self.last);
            self.hist.apply(&corrector, x, Some(out));
        }
        self.hist.push(s, Rho.lambda(s), out);
        let n = self.s.nfe();
        let order = if c.lower_order_final {
            c.order.min(n - i)
        } else {
            c.order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last.clone_from(x);
        let t = self.sigma(i + 1);
        if t == 0.0 {
            if self.this_order == 1 && p == Param::Data && c.bh2 {
                expint::denoise(model, p, s, t, x, &self.hist.back(0).2);
            } else {
                return Err(Error::Domain(format!(
                    "UniPCMultistepScheduler: the predictor of step {i} to sigma = 0 (order {}, {}, {}) is NaN in diffusers (B(h) and phi_1 are infinite there); use solver_type=\"bh2\" with predict_x0=true and lower_order_final=true, or final_sigmas_type=\"sigma_min\"",
                    self.this_order,
                    if c.bh2 { "bh2" } else { "bh1" },
                    if c.predict_x0 { "x0 prediction" } else { "noise prediction" }
                )));
            }
        } else {
            let u = UniPc::new(model, p, variant, self.this_order, &self.hist, t).predict();
            self.hist.apply(&u, x, None);
        }
        self.lower_order_nums = (self.lower_order_nums + 1).min(c.order);
        Ok(())
    }

    /// x0 of a VE-coordinate class at level sigma (x is x/alpha), clipped where the class does;
    /// then `out` holds the derivative d = (x - x0)/sigma.
    fn derivative(&self, out: &mut Array2<f64>, x: &Array2<f64>, sigma: f64) -> Result<()> {
        let level = Rho.level(sigma);
        to_x0(self.s.config.prediction, out, x, &level, level.alpha)?;
        if let Some(r) = self.s.config.clip {
            out.mapv_inplace(|v| v.clamp(-r, r));
        }
        Zip::from(out)
            .and(x)
            .for_each(|o, &x| *o = (x - *o) / sigma);
        Ok(())
    }

    fn euler(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        noise: &mut dyn Noise,
        times: &[f64],
    ) -> Result<()> {
        let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
        self.derivative(out, x, sigma)?;
        if self.s.config.class == Class::Euler {
            update(x, 1.0, &[(next - sigma, out)]);
            return Ok(());
        }
        let (down, up) = ancestral(sigma, next, 1.0);
        update(x, 1.0, &[(down - sigma, out)]);
        self.draw(noise, times, i, x.dim())?;
        update(x, 1.0, &[(up, &self.z)]);
        Ok(())
    }

    fn heun(&mut self, i: usize, out: &mut Array2<f64>, x: &mut Array2<f64>) -> Result<()> {
        match self.heun.take() {
            None => {
                let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
                self.derivative(out, x, sigma)?;
                let dt = next - sigma;
                self.last.clone_from(x);
                self.buf.clone_from(out);
                update(x, 1.0, &[(dt, out)]);
                self.heun = Some(dt);
            }
            Some(dt) => {
                self.derivative(out, x, self.sigma(i))?;
                combine(
                    x,
                    &[(1.0, &self.last), (0.5 * dt, &self.buf), (0.5 * dt, out)],
                );
            }
        }
        Ok(())
    }

    fn lms(&mut self, i: usize, out: &mut Array2<f64>, x: &mut Array2<f64>) -> Result<()> {
        let (sigma, next) = (self.sigma(i), self.sigma(i + 1));
        self.derivative(out, x, sigma)?;
        self.hist.push(sigma, Rho.lambda(sigma), out);
        let k = self.hist.len();
        let mut u = Weights::new(1.0, 0.0);
        u.w = adams::weights(Rule::RhoAb, &Rho, &self.hist.times(k)[..k], next);
        self.hist.apply(&u, x, None);
        Ok(())
    }

    /// DDIM (eq. 12 of Song et al., diffusers' arithmetic in alphas_cumprod) and DDPM's posterior
    /// step (Ho et al., eqs. 6-7, with diffusers' variance types).
    fn ddim(
        &mut self,
        i: usize,
        out: &mut Array2<f64>,
        x: &mut Array2<f64>,
        noise: &mut dyn Noise,
        times: &[f64],
    ) -> Result<()> {
        let s = self.s;
        let c = &s.config;
        let (t, prev) = (s.plan.timesteps[i], s.plan.prev[i]);
        let ac = &s.alphas_cumprod;
        let a_t = ac[t as usize];
        let a_prev = match prev {
            p if p >= 0.0 => ac[p as usize],
            _ => s.plan.final_alphas_cumprod,
        };
        let level = NoiseLevel::of(a_t.sqrt(), (1.0 - a_t).sqrt());
        if c.class == Class::Ddim {
            crate::solver::ensure(&mut self.buf, x.dim());
            self.buf.assign(out);
            prediction::convert(
                c.prediction,
                Prediction::Eps,
                &level,
                x.view(),
                self.buf.view_mut(),
            )?;
        }
        to_x0(c.prediction, out, x, &level, 1.0)?;
        match (c.threshold, c.clip) {
            (Some(t), _) => threshold(out, t.ratio, t.max),
            (None, Some(r)) => out.mapv_inplace(|v| v.clamp(-r, r)),
            _ => {}
        }
        if c.class == Class::Ddim {
            let var = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
            let std = s.eta * var.sqrt();
            let dir = (1.0 - a_prev - std * std).sqrt();
            combine(x, &[(a_prev.sqrt(), out), (dir, &self.buf)]);
            if s.eta > 0.0 {
                self.draw(noise, times, i, x.dim())?;
                update(x, 1.0, &[(std, &self.z)]);
            }
            return Ok(());
        }
        let alpha_t = a_t / a_prev;
        let beta_t = 1.0 - alpha_t;
        let c0 = a_prev.sqrt() * beta_t / (1.0 - a_t);
        let cx = alpha_t.sqrt() * (1.0 - a_prev) / (1.0 - a_t);
        update(x, cx, &[(c0, out)]);
        if t > 0.0 {
            let var = ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20);
            let std = match c.variance {
                Variance::FixedSmall => var.sqrt(),
                Variance::FixedSmallLog => (0.5 * var.ln()).exp(),
                Variance::FixedLarge => beta_t.sqrt(),
            };
            self.draw(noise, times, i, x.dim())?;
            update(x, 1.0, &[(std, &self.z)]);
        }
        Ok(())
    }
}
