//! `exact`: the closed-form PF-ODE map of a single Gaussian ([`crate::GaussianFlow`]), grid point
//! to grid point. No evaluations; order "infinite" (it is the truth the order tests measure
//! against). On any other problem building it is an error.

use super::{Entry, Model, Solver};
use crate::error::{Error, Result};
use crate::gaussian_flow::GaussianFlow;
use crate::grid::Grid;
use crate::schedule::Schedule;
use ndarray::Array2;

pub struct Exact(GaussianFlow, Array2<f64>);

pub const ENTRY: Entry = Entry {
    name: "exact",
    summary: "the closed-form flow of a single Gaussian (no evaluations)",
    build: |_, env| {
        let mixture = env
            .mixture
            .ok_or_else(|| Error::Domain("solver 'exact' needs a Gaussian problem".into()))?;
        Ok(Box::new(Exact(
            GaussianFlow::new(mixture)
                .map_err(|e| Error::Domain(format!("solver 'exact': {e}")))?,
            Array2::zeros((0, 0)),
        )))
    },
    variants: &[],
};

impl Solver for Exact {
    fn order(&self) -> usize {
        usize::MAX
    }
    fn nfe_per_step(&self) -> usize {
        0
    }
    fn nfe(&self, _: &Grid, _: &dyn Schedule) -> Option<usize> {
        Some(0)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        super::ensure(&mut self.1, x.dim());
        self.0.map(
            &model.level(times[i]),
            &model.level(times[i + 1]),
            x.view(),
            self.1.view_mut(),
        )?;
        std::mem::swap(x, &mut self.1);
        Ok(())
    }
}
