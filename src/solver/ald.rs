//! NCSN's annealed Langevin dynamics (Song & Ermon, NeurIPS 2019, Algorithm 1), `ald:eps=E,n=T`.
//!
//! At each level t_{i+1} of the grid after the first, T Langevin steps
//! x <- x + (alpha_i/2) s + sqrt(alpha_i) z with NCSN's alpha_i = E sigma_i^2 / sigma_L^2 (sigma_i
//! the schedule's sigma at the level, sigma_L the smallest positive one of the grid), starting
//! from x ~ p_{t_0}. The defaults E = 2e-5 and T = 100 are the paper's, with its sigma_L = 0.01;
//! the relative step alpha_i / sigma_i^2 = E / sigma_L^2 must stay below 2 for stability on any
//! grid. A grid that ends at sigma = 0 ends with the denoising step x = alpha_t x0_hat (Song &
//! Ermon 2020's final step). NFE = T per level, plus 1 for that step. NCSN is a VE method; on a
//! VP schedule the Langevin steps also absorb the change of scale alpha_t.

use super::langevin::step;
use super::sde::{Iid, Noise};
use super::{combine, Entry, Model, Solver};
use crate::error::Result;
use crate::grid::Grid;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use ndarray::Array2;

pub struct Ald {
    eps: f64,
    n: usize,
    sigma_min: f64,
    noise: Box<dyn Noise>,
    sources: Vec<Box<dyn Noise>>,
    g: Array2<f64>,
    z: Array2<f64>,
}

pub const ENTRY: Entry = Entry {
    name: "ald",
    summary: "NCSN annealed Langevin dynamics: n Langevin steps at each level",
    build: |spec, env| {
        let eps = spec.take_f64("eps", 2e-5)?;
        if eps <= 0.0 {
            return Err(spec.error(format!("option 'eps': {eps} is not positive")));
        }
        let n = spec.take_range("n", 100, 1, 10_000)?;
        Ok(Box::new(Ald {
            eps,
            n,
            sigma_min: 0.0,
            noise: Iid::boxed(env.noise_seed),
            sources: vec![],
            g: Array2::zeros((0, 0)),
            z: Array2::zeros((0, 0)),
        }))
    },
    variants: &[],
};

impl Solver for Ald {
    fn order(&self) -> usize {
        0
    }
    fn nfe_per_step(&self) -> usize {
        self.n
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        let zero = usize::from(grid.ends_at_zero(schedule));
        Some(self.n * (grid.steps() - zero) + zero)
    }
    fn noise(&mut self) -> Option<&mut Box<dyn Noise>> {
        Some(&mut self.noise)
    }
    fn noise_slots(&self, steps: usize) -> usize {
        steps * self.n
    }
    fn plan(&mut self, grid: &Grid, schedule: &dyn Schedule) -> Result<Vec<f64>> {
        self.sigma_min = grid.times[1..]
            .iter()
            .map(|&t| schedule.sigma(t))
            .filter(|&s| s > 0.0)
            .fold(f64::INFINITY, f64::min);
        self.sources = (0..self.n).map(|j| self.noise.split(self.n, j)).collect();
        Ok(grid.times.clone())
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let b = model.level(times[i + 1]);
        if b.sigma == 0.0 {
            model.eval_into(Prediction::X0, x, times[i], &mut self.g)?;
            combine(x, &[(b.alpha, &self.g)]);
            return Ok(());
        }
        let alpha_i = self.eps * (b.sigma / self.sigma_min).powi(2);
        for source in &mut self.sources {
            source.normal(times, i, x.dim(), &mut self.z)?;
            step(model, times[i + 1], alpha_i / 2.0, x, &mut self.g, &self.z)?;
        }
        Ok(())
    }
}
