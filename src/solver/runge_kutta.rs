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

use super::{combine, update, Entry, Model, Solver, MAX_TERMS};
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

/// A Runge-Kutta method with its stage buffers: the stage values k_j and the stage point.
pub struct RungeKutta {
    tab: &'static Tableau,
    k: Vec<Array2<f64>>,
    point: Array2<f64>,
}

impl RungeKutta {
    pub fn new(tab: &'static Tableau) -> Self {
        RungeKutta {
            tab,
            k: (0..tab.b.len()).map(|_| Array2::zeros((0, 0))).collect(),
            point: Array2::zeros((0, 0)),
        }
    }
}

impl Solver for RungeKutta {
    fn order(&self) -> usize {
        self.tab.order
    }
    fn nfe_per_step(&self) -> usize {
        self.tab.b.len()
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        let k = self.tab.b.len();
        let saved = if self.tab.euler_to_zero && grid.ends_at_zero(schedule) {
            k - 1
        } else {
            0
        };
        Some(k * grid.steps() - saved)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let dt = t - s;
        let tab = if self.tab.euler_to_zero && model.level(t).sigma == 0.0 {
            &EULER_TABLEAU
        } else {
            self.tab
        };
        let (k, point) = (&mut self.k, &mut self.point);
        for (j, &c) in tab.c.iter().enumerate() {
            let (done, rest) = k.split_at_mut(j);
            if j == 0 {
                model.eval_into(Prediction::Velocity, x, s, &mut rest[0])?;
                continue;
            }
            let mut terms = [(0.0, &*x); MAX_TERMS];
            terms[0].0 = 1.0;
            for (term, (&a, kj)) in terms[1..].iter_mut().zip(tab.a[j - 1].iter().zip(&*done)) {
                *term = (a * dt, kj);
            }
            combine(point, &terms[..j + 1]);
            model.eval_into(Prediction::Velocity, point, s + c * dt, &mut rest[0])?;
        }
        let mut terms = [(0.0, &k[0]); MAX_TERMS];
        for (term, (&b, kj)) in terms.iter_mut().zip(tab.b.iter().zip(&*k)) {
            *term = (b * dt, kj);
        }
        update(x, 1.0, &terms[..tab.b.len()]);
        Ok(())
    }
}

pub const EULER: Entry = Entry {
    name: "euler",
    summary: "Euler's method on dx/dt",
    build: |_, _| Ok(Box::new(RungeKutta::new(&EULER_TABLEAU))),
    variants: &[("", "logsnr")],
};
pub const HEUN: Entry = Entry {
    name: "heun",
    summary: "Heun's method on dx/dt (EDM Algorithm 1; Euler on the step to sigma = 0)",
    build: |_, _| Ok(Box::new(RungeKutta::new(&HEUN_TABLEAU))),
    variants: &[("", "logsnr")],
};
pub const RK4: Entry = Entry {
    name: "rk4",
    summary: "classical fourth-order Runge-Kutta on dx/dt",
    build: |_, _| Ok(Box::new(RungeKutta::new(&RK4_TABLEAU))),
    variants: &[("", "logsnr")],
};

#[derive(Default)]
pub struct Dpm2 {
    eps: Array2<f64>,
    eps_mid: Array2<f64>,
    x_mid: Array2<f64>,
}

pub const DPM2: Entry = Entry {
    name: "dpm2",
    summary: "k-diffusion sample_dpm_2: midpoint in sigma/alpha at the geometric mean",
    build: |_, _| Ok(Box::<Dpm2>::default()),
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
        model.eval_into(Prediction::Eps, x, times[i], &mut self.eps)?;
        let slope = if rho_t == 0.0 {
            &self.eps
        } else {
            let rho_mid = (rho_s.ln() + 0.5 * (rho_t.ln() - rho_s.ln())).exp();
            let t_mid = t_of_rho(model.schedule, rho_mid)?;
            let alpha_mid = model.level(t_mid).alpha;
            combine(
                &mut self.x_mid,
                &[
                    (alpha_mid / a.alpha, x),
                    (alpha_mid * (rho_mid - rho_s), &self.eps),
                ],
            );
            model.eval_into(Prediction::Eps, &self.x_mid, t_mid, &mut self.eps_mid)?;
            &self.eps_mid
        };
        update(x, b.alpha / a.alpha, &[(b.alpha * (rho_t - rho_s), slope)]);
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
