//! Sampling with a flow map: k network calls along a grid t_0 > t_1 > ... > t_k.
//!
//! CTM's gamma-sampling (Kim et al. 2024, Alg. 2; in rho = sigma/alpha): at each step jump from
//! t_i to the level rho~ = sqrt(1 - gamma^2) rho_{i+1}, then re-noise to t_{i+1},
//!
//! x~ = Psi_{t_i -> t~}(x),  x = alpha_{i+1} (x~/alpha_t~ + sqrt(rho_{i+1}^2 - rho~^2) z),
//!
//! z ~ N(0, I) fresh at every step (none on a step to sigma = 0). gamma = 0 is deterministic
//! (x = Psi_{t_i -> t_{i+1}}(x)); gamma = 1 jumps to t = 0 and re-noises: the multistep
//! sampling of consistency models (Song et al. 2023, Alg. 1). A map trained only onto t = 0
//! needs gamma = 1; a map trained on its own levels (progressive distillation) needs exactly its
//! grid. The noise of step i, row r is stream (seed_for(seed, "gamma step i"), 11, r)
//! of [`crate::rng::RowRng`]: the same at any thread count.

use super::FlowMap;
use crate::error::{Error, Result};
use crate::grid::t_of_rho;
use crate::rng::{seed_for, standard_normal};
use crate::schedule::Schedule;
use ndarray::{Array2, ArrayView2, Zip};

/// Samples from the points `x` at `times[0]`; exactly `times.len() - 1` calls of `map`.
pub fn sample(
    map: &dyn FlowMap,
    schedule: &dyn Schedule,
    times: &[f64],
    x: ArrayView2<f64>,
    gamma: f64,
    seed: u64,
) -> Result<Array2<f64>> {
    if !(0.0..=1.0).contains(&gamma) {
        return Err(Error::Domain(format!(
            "gamma must be in [0, 1], got {gamma}"
        )));
    }
    if times.len() < 2 {
        return Err(Error::Domain(
            "a sampling grid needs at least 2 times".into(),
        ));
    }
    if let Some(levels) = map.levels() {
        if times != levels {
            return Err(Error::Domain(format!(
                "this map was trained on its own grid of {} steps; sample on those levels",
                levels.len() - 1
            )));
        }
    } else if !map.anytime() && gamma != 1.0 {
        return Err(Error::Domain(
            "this map was trained only onto t = 0; sample it with gamma = 1 (multistep consistency sampling)".into(),
        ));
    }
    let mut x = x.to_owned();
    let mut out = Array2::zeros(x.dim());
    for i in 0..times.len() - 1 {
        let (s, next) = (times[i], schedule.level(times[i + 1]));
        let rho_next = next.sigma / next.alpha;
        if gamma == 0.0 || rho_next == 0.0 {
            map.apply(x.view(), s, next.t, out.view_mut())?;
            std::mem::swap(&mut x, &mut out);
            continue;
        }
        let rho_tilde = (1.0 - gamma * gamma).sqrt() * rho_next;
        let t_tilde = t_of_rho(schedule, rho_tilde)?;
        let alpha_tilde = schedule.alpha(t_tilde);
        map.apply(x.view(), s, t_tilde, out.view_mut())?;
        let z = standard_normal(
            x.nrows(),
            x.ncols(),
            seed_for(seed, &format!("gamma step {i}")),
            11,
        );
        let scale = (rho_next * rho_next - rho_tilde * rho_tilde).sqrt();
        Zip::from(&mut x)
            .and(&out)
            .and(&z)
            .for_each(|x, &m, &z| *x = next.alpha * (m / alpha_tilde + scale * z));
    }
    Ok(x)
}
