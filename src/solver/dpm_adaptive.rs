//! DPM-Solver-12 and DPM-Solver-23 with adaptive step size (Lu et al. 2022, Sec. 3.3 and
//! Algorithm 5; official `dpm_solver_adaptive`): each attempt from s to t = t(lambda_s + h) pairs
//! a lower and a higher singlestep update that share evaluations (order 2: DPM-Solver-1 and -2
//! with r1 = 1/2; order 3: DPM-Solver-2 with r1 = 1/3 and DPM-Solver-3 with r = 1/3, 2/3), costing
//! `order` evaluations whether accepted or not. delta = max(atol, rtol max(|x_low|, |x_prev|)).
//!
//! - `controller=official`: E = max over samples of the RMS of (x_high - x_low)/delta; accept if
//!   E <= 1; h <- min(theta h E^(-1/order), lambda_end - lambda_s); stop when |s - t_end| <= t_err
//!   (in t). The official code rounds E^(-1/order) to float32 (`.float()`); pfode does the same,
//!   so that the step sequence is the official one.
//! - `controller=pid`: k-diffusion `dpm_solver_adaptive`: the error is the RMS over the whole
//!   batch; the PID controller with (p, i, d) = (0, 1, 0), factor 1 + atan(f - 1) of
//!   f = (1/(E + 1e-8))^(1/order); accept if factor >= accept_safety = 0.81; stop within 1e-5 in
//!   lambda; t = min(lambda_end, lambda_s + h).
//!
//! Options: `order` 2|3 (default 3), `prediction` noise|data (default noise), `type`,
//! `rtol` 0.05, `atol` 0.0078, `h_init` 0.05, `theta` 0.9 (in (0, 1)), `t_err` 1e-5. The grid supplies only
//! its end points, which must have sigma > 0. Order: the tolerance, not a step count, sets the
//! error, so it takes no part in the order tests.

use super::expint::{self, Param, Type};
use super::{Entry, Model, Solver};
use crate::error::{Error, Result};
use crate::grid::Grid;
use crate::schedule::Schedule;
use ndarray::{Array2, Axis, Zip};

pub struct DpmAdaptive {
    order: usize,
    p: Param,
    ty: Type,
    rtol: f64,
    atol: f64,
    h_init: f64,
    theta: f64,
    t_err: f64,
    pid: bool,
}

pub const ENTRY: Entry = Entry {
    name: "dpm-adaptive",
    summary: "DPM-Solver-12/23 with adaptive step size (official or k-diffusion PID control)",
    build: |spec, _| {
        let order = spec.take_range("order", 3, 2, 3)?;
        let p = Param::parse(spec.take_choice("prediction", "noise", &["noise", "data"])?).unwrap();
        let ty = if spec.take_choice("type", "dpmsolver", &["dpmsolver", "taylor"])? == "taylor" {
            Type::Taylor
        } else {
            Type::DpmSolver
        };
        let rtol = spec.take_f64("rtol", 0.05)?;
        let atol = spec.take_f64("atol", 0.0078)?;
        let h_init = spec.take_f64("h_init", 0.05)?;
        let theta = spec.take_f64("theta", 0.9)?;
        let t_err = spec.take_f64("t_err", 1e-5)?;
        let pid = spec.take_choice("controller", "official", &["official", "pid"])? == "pid";
        if !(rtol >= 0.0
            && atol >= 0.0
            && rtol + atol > 0.0
            && h_init > 0.0
            && theta > 0.0
            && theta < 1.0
            && t_err > 0.0)
        {
            return Err(spec.error(format!(
                "need rtol, atol >= 0 (not both 0), h_init, t_err > 0 and 0 < theta < 1 (the step safety factor), got rtol = {rtol}, atol = {atol}, h_init = {h_init}, theta = {theta}, t_err = {t_err}"
            )));
        }
        Ok(Box::new(DpmAdaptive {
            order,
            p,
            ty,
            rtol,
            atol,
            h_init,
            theta,
            t_err,
            pid,
        }))
    },
    variants: &[],
};

impl Solver for DpmAdaptive {
    fn order(&self) -> usize {
        self.order
    }
    fn nfe_per_step(&self) -> usize {
        self.order
    }
    fn nfe(&self, _: &Grid, _: &dyn Schedule) -> Option<usize> {
        None
    }
    fn plan(&mut self, grid: &Grid, _: &dyn Schedule) -> Result<Vec<f64>> {
        Ok(vec![grid.times[0], *grid.times.last().unwrap()])
    }
    fn step(&mut self, model: &Model, times: &[f64], _: usize, x: &mut Array2<f64>) -> Result<()> {
        let (t_start, t_end) = (times[0], times[1]);
        let lambda_end = model.lambda(t_end);
        if !lambda_end.is_finite() || !model.lambda(t_start).is_finite() {
            return Err(Error::Domain(
                "dpm-adaptive needs a grid whose end points have 0 < sigma and 0 < alpha".into(),
            ));
        }
        let (k, r) = (
            self.order,
            if self.order == 2 {
                [0.5, 0.0]
            } else {
                [1.0 / 3.0, 2.0 / 3.0]
            },
        );
        let (mut s, mut lambda_s, mut h) = (t_start, model.lambda(t_start), self.h_init);
        let mut x_prev = x.clone();
        let (mut low, mut high, mut q) = (x.clone(), x.clone(), x.clone());
        let (mut m0, mut stages) = (x.clone(), expint::Stages::default());
        let mut errs = [0.0f64; 3];
        let done = |s: f64, l: f64| {
            if self.pid {
                l >= lambda_end - 1e-5
            } else {
                (s - t_end).abs() <= self.t_err
            }
        };
        let mut attempts = 0usize;
        while !done(s, lambda_s) {
            attempts += 1;
            if attempts > 100_000 {
                return Err(Error::Domain(
                    "dpm-adaptive: more than 100000 attempts".into(),
                ));
            }
            let lambda_t = if self.pid {
                lambda_end.min(lambda_s + h)
            } else {
                lambda_s + h
            };
            let t = model.schedule.t_of_lambda(lambda_t);
            model.eval_into(self.p.prediction(), x, s, &mut m0)?;
            stages.len = 0;
            low.assign(x);
            high.assign(x);
            expint::singlestep(
                model,
                self.p,
                self.ty,
                k - 1,
                s,
                t,
                &r[..1],
                &mut low,
                &m0,
                &mut stages,
            )?;
            expint::singlestep(
                model,
                self.p,
                self.ty,
                k,
                s,
                t,
                &r,
                &mut high,
                &m0,
                &mut stages,
            )?;
            Zip::from(&mut q)
                .and(&high)
                .and(&low)
                .and(&x_prev)
                .for_each(|q, &hi, &lo, &pr| {
                    let delta = self.atol.max(self.rtol * lo.abs().max(pr.abs()));
                    *q = ((hi - lo) / delta).powi(2);
                });
            let accept = if self.pid {
                let e = (q.sum() / q.len() as f64).sqrt();
                let inv = 1.0 / (e + 1e-8);
                if errs[0] == 0.0 {
                    errs = [inv; 3];
                }
                errs[0] = inv;
                let f = errs[0].powf(1.0 / k as f64);
                let factor = 1.0 + (f - 1.0).atan();
                let ok = factor >= 0.81;
                if ok {
                    errs[2] = errs[1];
                    errs[1] = errs[0];
                }
                h *= factor;
                ok
            } else {
                let e = q
                    .mean_axis(Axis(1))
                    .unwrap()
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.sqrt()));
                let ok = e <= 1.0;
                let lambda_next = if ok { model.lambda(t) } else { lambda_s };
                let factor = e.powf(-1.0 / k as f64) as f32 as f64;
                h = (self.theta * h * factor).min(lambda_end - lambda_next);
                ok
            };
            if accept {
                std::mem::swap(x, &mut high);
                std::mem::swap(&mut x_prev, &mut low);
                s = t;
                lambda_s = if self.pid { lambda_t } else { model.lambda(t) };
            }
        }
        Ok(())
    }
}
