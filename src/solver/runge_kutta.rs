//! Explicit Runge-Kutta methods on the PF-ODE dx/dt = v(x, t) in the schedule's own time t, with
//! v the velocity prediction (for EDM, t = sigma and v = (x - D(x, sigma))/sigma, Karras et al.
//! 2022, eq. 1), and k-diffusion's DPM-2 in the EDM variables.
//!
//! - `euler`: order 1, one evaluation per step.
//! - `heun`: Heun's second-order method (Karras et al. 2022, Algorithm 1 with S_churn = 0), two
//!   evaluations per step; on a step that ends at sigma = 0 it takes an Euler step (one
//!   evaluation), as EDM and k-diffusion `sample_heun` do.
//! - `rk4`: the classical fourth-order method, four evaluations per step; on a step to sigma = 0
//!   its last stage evaluates v at sigma = 0, which the exact oracles define by continuity.
//! - `dpm2`: k-diffusion `sample_dpm_2` ("inspired by DPM-Solver-2 and Algorithm 2 of Karras et
//!   al."): in y = x/alpha and rho = sigma/alpha, where dy/drho = eps_hat, the explicit midpoint
//!   rule with the stage at the geometric mean rho_mid = sqrt(rho_s rho_t) (the lambda midpoint);
//!   order 2, two evaluations per step; Euler on the step to sigma = 0.
//!
//! A Butcher tableau is data: `a` (strictly lower triangular), `b`, `c`; a unit test checks
//! sum_j a_ij = c_i and sum_i b_i = 1.

use super::{lincomb, Entry, Model, Solver};
use crate::error::Result;
use crate::grid::{t_of_rho, Grid};
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use ndarray::Array2;

pub struct Tableau {
    pub order: usize,
    pub a: &'static [&'static [f64]],
    pub b: &'static [f64],
    pub c: &'static [f64],
    /// Take an Euler step on a step to sigma = 0.
    pub euler_to_zero: bool,
}

pub const EULER_TABLEAU: Tableau = Tableau {
    order: 1,
    a: &[],
    b: &[1.0],
    c: &[0.0],
    euler_to_zero: true,
};
pub const HEUN_TABLEAU: Tableau = Tableau {
    order: 2,
    a: &[&[1.0]],
    b: &[0.5, 0.5],
    c: &[0.0, 1.0],
    euler_to_zero: true,
};
pub const RK4_TABLEAU: Tableau = Tableau {
    order: 4,
    a: &[&[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    c: &[0.0, 0.5, 0.5, 1.0],
    euler_to_zero: false,
};

pub struct RungeKutta(&'static Tableau);

impl Solver for RungeKutta {
    fn order(&self) -> usize {
        self.0.order
    }
    fn nfe_per_step(&self) -> usize {
        self.0.b.len()
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        let k = self.0.b.len();
        let saved = if self.0.euler_to_zero && grid.ends_at_zero(schedule) {
            k - 1
        } else {
            0
        };
        Some(k * grid.steps() - saved)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let dt = t - s;
        let tab = if self.0.euler_to_zero && model.level(t).sigma == 0.0 {
            &EULER_TABLEAU
        } else {
            self.0
        };
        let mut k: Vec<Array2<f64>> = Vec::with_capacity(tab.b.len());
        for (j, &c) in tab.c.iter().enumerate() {
            let xj = if j == 0 {
                x.clone()
            } else {
                let mut terms = vec![(1.0, &*x)];
                terms.extend(tab.a[j - 1].iter().zip(&k).map(|(&a, kj)| (a * dt, kj)));
                lincomb(&terms)
            };
            k.push(model.eval(Prediction::Velocity, &xj, s + c * dt)?);
        }
        let mut terms = vec![(1.0, &*x)];
        terms.extend(tab.b.iter().zip(&k).map(|(&b, kj)| (b * dt, kj)));
        *x = lincomb(&terms);
        Ok(())
    }
}

pub const EULER: Entry = Entry {
    name: "euler",
    summary: "Euler's method on dx/dt",
    build: |_, _| Ok(Box::new(RungeKutta(&EULER_TABLEAU))),
    variants: &[("", "logsnr")],
};
pub const HEUN: Entry = Entry {
    name: "heun",
    summary: "Heun's method on dx/dt (EDM Algorithm 1; Euler on the step to sigma = 0)",
    build: |_, _| Ok(Box::new(RungeKutta(&HEUN_TABLEAU))),
    variants: &[("", "logsnr")],
};
pub const RK4: Entry = Entry {
    name: "rk4",
    summary: "classical fourth-order Runge-Kutta on dx/dt",
    build: |_, _| Ok(Box::new(RungeKutta(&RK4_TABLEAU))),
    variants: &[("", "logsnr")],
};

pub struct Dpm2;

pub const DPM2: Entry = Entry {
    name: "dpm2",
    summary: "k-diffusion sample_dpm_2: midpoint in sigma/alpha at the geometric mean",
    build: |_, _| Ok(Box::new(Dpm2)),
    variants: &[("", "karras")],
};

impl Solver for Dpm2 {
    fn order(&self) -> usize {
        2
    }
    fn nfe_per_step(&self) -> usize {
        2
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        Some(2 * grid.steps() - usize::from(grid.ends_at_zero(schedule)))
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (a, b) = (model.level(times[i]), model.level(times[i + 1]));
        let (rho_s, rho_t) = (a.sigma / a.alpha, b.sigma / b.alpha);
        let eps = model.eval(Prediction::Eps, x, times[i])?;
        let d_rho = if rho_t == 0.0 {
            lincomb(&[(-rho_s, &eps)])
        } else {
            let rho_mid = (rho_s.ln() + 0.5 * (rho_t.ln() - rho_s.ln())).exp();
            let t_mid = t_of_rho(model.schedule, rho_mid)?;
            let alpha_mid = model.level(t_mid).alpha;
            let x_mid = lincomb(&[
                (alpha_mid / a.alpha, x),
                (alpha_mid * (rho_mid - rho_s), &eps),
            ]);
            let eps_mid = model.eval(Prediction::Eps, &x_mid, t_mid)?;
            lincomb(&[(rho_t - rho_s, &eps_mid)])
        };
        *x = lincomb(&[(b.alpha / a.alpha, x), (b.alpha, &d_rho)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tableaus_are_consistent() {
        for tab in [&EULER_TABLEAU, &HEUN_TABLEAU, &RK4_TABLEAU] {
            assert!((tab.b.iter().sum::<f64>() - 1.0).abs() < 1e-15);
            assert_eq!(tab.c[0], 0.0);
            for (row, &c) in tab.a.iter().zip(&tab.c[1..]) {
                assert!((row.iter().sum::<f64>() - c).abs() < 1e-15);
            }
            // Quadrature conditions sum b_i c_i^(q-1) = 1/q up to the order.
            for q in 1..=tab.order {
                let s: f64 = tab
                    .b
                    .iter()
                    .zip(tab.c)
                    .map(|(b, c)| b * c.powi(q as i32 - 1))
                    .sum();
                assert!((s - 1.0 / q as f64).abs() < 1e-15);
            }
        }
    }
}
