//! DDIM (Song, Meng & Ermon, ICLR 2021, eq. 12 with eta = 0): from one x0 prediction at s,
//! eps_hat = (x_s - alpha_s x0_hat)/sigma_s and x_t = alpha_t x0_hat + sigma_t eps_hat.
//!
//! Order 1, one evaluation per step. It is the exponential Euler method of the PF-ODE, so it equals
//! DPM-Solver-1, DPM-Solver++-1 and UniPC-1 without corrector (Lu et al. 2022, Sec. 4.1); pfode
//! writes it in DDIM's own form, which makes that identity a test. The step to sigma = 0 gives
//! x_t = alpha_t x0_hat, as every other solver in the family.

use super::{Entry, Model, Solver};
use crate::error::Result;
use crate::grid::Grid;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use ndarray::{Array2, Zip};

#[derive(Default)]
pub struct Ddim {
    x0: Array2<f64>,
}

pub const ENTRY: Entry = Entry {
    name: "ddim",
    summary: "DDIM (eta = 0), the exponential Euler method",
    build: |_, _| Ok(Box::<Ddim>::default()),
    variants: &[("", "logsnr"), ("", "time-uniform")],
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
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (a, b) = (model.level(times[i]), model.level(times[i + 1]));
        model.eval_into(Prediction::X0, x, times[i], &mut self.x0)?;
        let (c_x, c_0) = (1.0 / a.sigma, -a.alpha / a.sigma);
        Zip::from(x).and(&self.x0).par_for_each(|x, &x0| {
            let eps = *x * c_x + c_0 * x0;
            *x = x0 * b.alpha + b.sigma * eps;
        });
        Ok(())
    }
}
