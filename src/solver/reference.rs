//! `reference`: the PF-ODE integrated by adaptive DOP853 (Dormand-Prince 8(5,3), Hairer, Norsett &
//! Wanner, Solving ODEs I, Sec. II.10; [`super::dop853`]) to `rtol`, `atol` (default 1e-12).
//!
//! The integration variable is lambda, with the data prediction:
//! dx/dlambda = (dln sigma/dlambda) x + alpha x0_hat(x, t(lambda)). In t, the VP drift carries
//! sigma'(t) ~ 1/sqrt(t) and EDM's is (x - D)/sigma: both blow up as sigma -> 0, so steps must
//! shrink like sigma and the error control works on a singular right-hand side. In lambda the
//! linear coefficient is -alpha^2 on VP (|.| <= 1) and -1 on EDM and the forcing alpha x0_hat is
//! bounded: the problem is non-stiff and uniformly smooth over the whole range, which is what an
//! explicit high-order method needs. A step that ends at sigma = 0 (lambda = +inf) is integrated
//! instead in rho = sigma/alpha, dy/drho = eps_hat with y = x/alpha, which is smooth down to rho = 0.
//! Each grid step is one adaptive integration; NFE is whatever the error control needs.

use super::dop853;
use super::{Entry, Model, Solver};
use crate::error::Result;
use crate::grid::{t_of_rho, Grid};
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use ndarray::{Array2, Zip};

pub struct Reference {
    rtol: f64,
    atol: f64,
}

pub const ENTRY: Entry = Entry {
    name: "reference",
    summary: "adaptive DOP853 in lambda (rtol = atol = 1e-12 by default)",
    build: |spec, _| {
        let rtol = spec.take_f64("rtol", 1e-12)?;
        let atol = spec.take_f64("atol", 1e-12)?;
        if !(rtol > 0.0 && atol > 0.0) {
            return Err(spec.error("need rtol > 0 and atol > 0"));
        }
        Ok(Box::new(Reference { rtol, atol }))
    },
    variants: &[],
};

const MAX_STEPS: usize = 1_000_000;

impl Solver for Reference {
    fn order(&self) -> usize {
        8
    }
    fn nfe_per_step(&self) -> usize {
        12
    }
    fn nfe(&self, _: &Grid, _: &dyn Schedule) -> Option<usize> {
        None
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let (a, b) = (model.level(s), model.level(t));
        if b.sigma > 0.0 {
            let f =
                |lambda: f64, x: ndarray::ArrayView2<f64>, mut dx: ndarray::ArrayViewMut2<f64>| {
                    let tau = model.schedule.t_of_lambda(lambda);
                    let l = model.level(tau);
                    let dln_sigma = l.sigma_dsigma / (l.sigma * l.sigma);
                    let c = dln_sigma / (l.dalpha / l.alpha - dln_sigma);
                    let x0 = model.eval(Prediction::X0, &x.to_owned(), tau)?;
                    Zip::from(&mut dx)
                        .and(&x)
                        .and(&x0)
                        .for_each(|d, &x, &m| *d = c * x + l.alpha * m);
                    Ok(())
                };
            let (y, _) = dop853::integrate(
                f,
                model.lambda(s),
                model.lambda(t),
                x.view(),
                self.rtol,
                self.atol,
                MAX_STEPS,
            )?;
            *x = y;
        } else {
            let f = |rho: f64, y: ndarray::ArrayView2<f64>, mut dy: ndarray::ArrayViewMut2<f64>| {
                let tau = t_of_rho(model.schedule, rho)?;
                let xt = &y * model.level(tau).alpha;
                dy.assign(&model.eval(Prediction::Eps, &xt, tau)?);
                Ok(())
            };
            let y0 = &*x / a.alpha;
            let (y, _) = dop853::integrate(
                f,
                a.sigma / a.alpha,
                0.0,
                y0.view(),
                self.rtol,
                self.atol,
                MAX_STEPS,
            )?;
            *x = y * b.alpha;
        }
        Ok(())
    }
}
