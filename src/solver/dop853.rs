//! placeholder until the integrator lands
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub evaluations: usize,
    pub accepted: usize,
    pub rejected: usize,
}
pub fn integrate<F>(
    _f: F,
    _s0: f64,
    _s1: f64,
    _y0: ArrayView2<f64>,
    _rtol: f64,
    _atol: f64,
    _max_steps: usize,
) -> Result<(Array2<f64>, Stats)>
where
    F: FnMut(f64, ArrayView2<f64>, ArrayViewMut2<f64>) -> Result<()>,
{
    Err(Error::Domain("todo".into()))
}
