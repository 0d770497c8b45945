//! `set_timesteps` of each class: the model-call timesteps and the sequence of sigma = sigma/alpha
//! (VE) levels its arithmetic walks, computed as diffusers 0.42.1 computes them, with NumPy's
//! conventions: `round` is half to even, `linspace` is i step + start with the last point exact,
//! a float `arange` has ceil((stop - start)/step) points start + i ((start + step) - start),
//! `interp` is exact at the knots, `astype(int64)` truncates. `torch.linspace` (Euler's
//! `log_linear`) counts from both ends. Beta sigmas use the Beta(0.6, 0.6) quantile.

use super::config::{Class, Config, Sigmas, Spacing};
use crate::error::{Error, Result};

/// What `set_timesteps(n)` leaves in a scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `scheduler.timesteps`: the timestep of each model call (Heun: 2n - 1 of them).
    pub timesteps: Vec<f64>,
    /// `scheduler.sigmas` (sigma/alpha): the level of each step's start and, last, the end. For
    /// DDIM and DDPM, the levels of the timesteps and of the final landing point.
    pub sigmas: Vec<f64>,
    /// DDIM and DDPM: the timestep each step lands on (negative: `final_alphas_cumprod`).
    pub prev: Vec<f64>,
    /// DDIM and DDPM: alphas_cumprod of a landing before timestep 0 (1, or DDIM's
    /// alphas_cumprod[0] with `set_alpha_to_one=false`).
    pub final_alphas_cumprod: f64,
    /// The pipelines multiply the unit-normal latents by this.
    pub init_noise_sigma: f64,
    /// DPM-Solver singlestep: the order of each step.
    pub orders: Vec<usize>,
}

/// `np.linspace(a, b, num)`.
pub fn np_linspace(a: f64, b: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + a).collect();
            v[num - 1] = b;
            v
        }
    }
}

/// `torch.linspace(a, b, num)` in float64: the first half from a, the second from b.
fn torch_linspace(a: f64, b: f64, num: usize) -> Vec<f64> {
    if num < 2 {
        return vec![a; num];
    }
    let step = (b - a) / (num - 1) as f64;
    (0..num)
        .map(|i| {
            if i < num / 2 {
                a + step * i as f64
            } else {
                b - step * (num - i - 1) as f64
            }
        })
        .collect()
}

/// `np.arange(start, stop, step)` for floats.
fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| start + i as f64 * delta)
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
fn np_interp(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    (fp[j + 1] - fp[j]) * (x - j as f64) + fp[j]
}

/// diffusers' `_sigma_to_t`: the fractional timestep of sigma, with ln sigma linear between
/// timesteps, clamped to [0, N-1].
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let ls = sigma.max(1e-10).ln();
    let count = log_sigmas.iter().filter(|&&v| ls - v >= 0.0).count();
    let low = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - ls) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al. (2022), eq. 5 with rho = 7.
fn karras(min: f64, max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (lo, hi) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (hi + r * (lo - hi)).powf(rho))
        .collect()
}

fn exponential(min: f64, max: f64, n: usize) -> Vec<f64> {
    np_linspace(max.ln(), min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Lee et al. (2024)'s beta sigmas: min + F^-1(1 - u) (max - min), F the Beta(0.6, 0.6) CDF.
fn beta_sigmas(min: f64, max: f64, n: usize) -> Vec<f64> {
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|u| min + beta_ppf(1.0 - u, 0.6, 0.6) * (max - min))
        .collect()
}

/// The Beta(a, b) quantile by bisection of the regularized incomplete beta function.
fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if statrs::function::beta::beta_reg(a, b, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The spacing of the classes that take n training timesteps (DDIM, DDPM and the VE classes):
/// `linspace(0, N-1, n)`, `arange(0, n) * (N // n) + steps_offset`, or
/// `round(arange(N, 0, -N/n)) - 1`; rounded (integer classes) or not.
fn spaced(config: &Config, n_train: usize, n: usize, round: bool) -> Vec<f64> {
    let nt = n_train as f64;
    let r = |v: f64| if round { v.round_ties_even() } else { v };
    match config.spacing {
        Spacing::Linspace => np_linspace(0.0, nt - 1.0, n)
            .into_iter()
            .rev()
            .map(r)
            .collect(),
        Spacing::Leading => {
            let ratio = (n_train / n) as f64;
            (0..n)
                .rev()
                .map(|i| i as f64 * ratio + config.steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => np_arange(nt, 0.0, -nt / n as f64)
            .into_iter()
            .map(|v| v.round_ties_even() - 1.0)
            .collect(),
    }
}

/// The spacing of the multistep DPM family (n + 1 points, the last dropped), up to `last`
/// timesteps (DPM-Solver's `lambda_min_clipped`).
fn spaced_dpm(config: &Config, n_train: usize, last: usize, n: usize) -> Vec<f64> {
    let nt = n_train as f64;
    match config.spacing {
        Spacing::Linspace => np_linspace(0.0, last as f64 - 1.0, n + 1)[1..]
            .iter()
            .rev()
            .map(|v| v.round_ties_even())
            .collect(),
        Spacing::Leading => {
            let ratio = (last / (n + 1)) as f64;
            (0..n)
                .rev()
                .map(|i| (i + 1) as f64 * ratio + config.steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => np_arange(last as f64, 0.0, -nt / n as f64)
            .into_iter()
            .map(|v| v.round_ties_even() - 1.0)
            .collect(),
    }
}

/// The singlestep order list (`get_order_list`).
fn singlestep_orders(
    n: usize,
    order: usize,
    lower_order_final: bool,
    final_zero: bool,
) -> Vec<usize> {
    let cycle = |k: usize, times: usize| -> Vec<usize> { (0..times).flat_map(|_| 1..=k).collect() };
    let mut orders = match (lower_order_final, order) {
        (true, 3) => match n % 3 {
            0 => [cycle(3, n / 3 - 1), vec![1, 2, 1]].concat(),
            1 => [cycle(3, n / 3), vec![1]].concat(),
            _ => [cycle(3, n / 3), vec![1, 2]].concat(),
        },
        (true, 2) => match n % 2 {
            0 => [cycle(2, n / 2 - 1), vec![1, 1]].concat(),
            _ => [cycle(2, n / 2), vec![1]].concat(),
        },
        (false, k) if k > 1 => cycle(k, n / k),
        _ => vec![1; n],
    };
    if final_zero {
        if let Some(last) = orders.last_mut() {
            *last = 1;
        }
    }
    orders
}

/// Runs `set_timesteps(n)` of the config's class on its training schedule `ac`
/// (alphas_cumprod).
pub fn plan(config: &Config, ac: &[f64], n: usize) -> Result<Plan> {
    let n_train = ac.len();
    let bad = |reason: String| {
        Error::invalid(
            &config.source,
            None,
            format!("{} with {n} steps: {reason}", config.class.name()),
        )
    };
    if n == 0 || n > n_train {
        return Err(bad(format!(
            "the number of steps must be in 1..={n_train} (num_train_timesteps)"
        )));
    }
    let full: Vec<f64> = ac.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
    let log_sigmas: Vec<f64> = full.iter().map(|s| s.ln()).collect();
    let sigma_last_min = full[0];
    let (cfg_min, cfg_max) = (config.sigma_min, config.sigma_max);
    let t_of = |s: &[f64]| -> Vec<f64> { s.iter().map(|&v| sigma_to_t(v, &log_sigmas)).collect() };
    let mut plan = Plan {
        timesteps: vec![],
        sigmas: vec![],
        prev: vec![],
        final_alphas_cumprod: 1.0,
        init_noise_sigma: 1.0,
        orders: vec![],
    };
    let class = config.class;
    match class {
        Class::Ddim | Class::Ddpm => {
            let ts = spaced(config, n_train, n, true);
            let ratio = (n_train / n) as f64;
            plan.prev = match class {
                Class::Ddim => ts.iter().map(|t| t - ratio).collect(),
                _ => ts.iter().skip(1).copied().chain([-1.0]).collect(),
            };
            if class == Class::Ddim && !config.set_alpha_to_one {
                plan.final_alphas_cumprod = ac[0];
            }
            let final_ac = plan.final_alphas_cumprod;
            let rho = |t: f64| -> f64 {
                let a = match t {
                    t if t < 0.0 => final_ac,
                    t => ac.get(t as usize).copied().unwrap_or(f64::NAN),
                };
                ((1.0 - a) / a).sqrt()
            };
            plan.sigmas = ts.iter().map(|&t| rho(t)).collect();
            if let Some(&p) = plan.prev.last() {
                plan.sigmas.push(rho(p));
            }
            plan.timesteps = ts;
        }
        Class::Euler | Class::EulerAncestral | Class::Heun | Class::Lms => {
            let mut ts = spaced(config, n_train, n, false);
            let mut s: Vec<f64> = ts.iter().map(|&t| np_interp(t, &full)).collect();
            if config.log_linear {
                s = torch_linspace(full[n_train - 1].ln(), full[0].ln(), n + 1)
                    .into_iter()
                    .map(f64::exp)
                    .collect();
            }
            let (lo, hi) = (s[s.len() - 1], s[0]);
            let converted = match config.sigmas {
                Sigmas::Karras if class == Class::Lms => Some(karras(lo, hi, n)),
                Sigmas::Karras => Some(karras(cfg_min.unwrap_or(lo), cfg_max.unwrap_or(hi), n)),
                Sigmas::Exponential => {
                    Some(exponential(cfg_min.unwrap_or(lo), cfg_max.unwrap_or(hi), n))
                }
                Sigmas::Beta => Some(beta_sigmas(cfg_min.unwrap_or(lo), cfg_max.unwrap_or(hi), n)),
                _ => None,
            };
            if let Some(c) = converted {
                s = c;
                ts = t_of(&s);
            }
            let last = match class {
                Class::Euler if !config.final_zero => sigma_last_min,
                _ => 0.0,
            };
            s.push(last);
            if config.continuous {
                ts = s[..s.len() - 1].iter().map(|v| 0.25 * v.ln()).collect();
            }
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            plan.init_noise_sigma = match config.spacing {
                Spacing::Leading => (max * max + 1.0).sqrt(),
                _ => max,
            };
            if class == Class::Heun {
                let k = s.len();
                let mut sd = vec![s[0]];
                for &v in &s[1..k - 1] {
                    sd.extend([v, v]);
                }
                sd.push(s[k - 1]);
                let mut td = vec![ts[0]];
                for &t in &ts[1..] {
                    td.extend([t, t]);
                }
                s = sd;
                ts = td;
            }
            plan.timesteps = ts;
            plan.sigmas = s;
        }
        Class::DpmMultistep | Class::DpmSinglestep | Class::Deis | Class::UniPc => {
            let dpm = matches!(class, Class::DpmMultistep | Class::DpmSinglestep);
            let last = if dpm {
                // searchsorted(flip(lambda_t), lambda_min_clipped)
                let lambda: Vec<f64> = ac
                    .iter()
                    .map(|a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
                    .collect();
                let clipped = lambda
                    .iter()
                    .rev()
                    .take_while(|&&l| l < config.lambda_min_clipped)
                    .count();
                n_train - clipped
            } else {
                n_train
            };
            let mut ts = spaced_dpm(config, n_train, last, n);
            let round = config.schedule.betas != crate::schedule::Betas::SquaredCos;
            let (lo, hi) = (
                cfg_min.unwrap_or(full[0]),
                cfg_max.unwrap_or(full[n_train - 1]),
            );
            let (mut s, converted) = match config.sigmas {
                Sigmas::Karras => (karras(lo, hi, n), true),
                Sigmas::Lu => {
                    let (lmin, lmax) = (log_sigmas[0], log_sigmas[n_train - 1]);
                    let lam = np_linspace(0.0, 1.0, n)
                        .into_iter()
                        .map(|r| (lmax + r * (lmin - lmax)).exp())
                        .collect();
                    (lam, true)
                }
                Sigmas::Exponential => (exponential(lo, hi, n), true),
                Sigmas::Beta => (beta_sigmas(lo, hi, n), true),
                Sigmas::Spaced => (ts.iter().map(|&t| np_interp(t, &full)).collect(), false),
            };
            if converted {
                ts = t_of(&s);
                let rounds = match class {
                    Class::DpmMultistep => {
                        matches!(config.sigmas, Sigmas::Karras | Sigmas::Lu) && round
                    }
                    _ => config.sigmas == Sigmas::Karras,
                };
                if rounds {
                    ts = ts.into_iter().map(f64::round_ties_even).collect();
                }
            }
            let end = match class {
                Class::Deis if converted => s[s.len() - 1],
                Class::Deis => sigma_last_min,
                Class::UniPc if converted && !config.final_zero => s[s.len() - 1],
                _ if config.final_zero => 0.0,
                _ => sigma_last_min,
            };
            s.push(end);
            plan.timesteps = ts.into_iter().map(f64::trunc).collect();
            plan.sigmas = s;
            if class == Class::DpmSinglestep {
                let lof = config.lower_order_final
                    || !n.is_multiple_of(config.order)
                    || config.final_zero;
                plan.orders = singlestep_orders(n, config.order, lof, config.final_zero);
            }
        }
    }
    let calls = if class == Class::Heun { 2 * n - 1 } else { n };
    if plan.timesteps.len() != calls {
        return Err(bad(format!(
            "diffusers' {:?} spacing gives {} timesteps (NumPy's arange rounding: {:?} ...); pfode does not replay that",
            config.spacing,
            plan.timesteps.len(),
            &plan.timesteps[plan.timesteps.len().saturating_sub(2)..]
        )));
    }
    if !config.continuous {
        if let Some(t) = plan
            .timesteps
            .iter()
            .find(|&&t| !(t >= 0.0 && t <= (n_train - 1) as f64))
        {
            return Err(bad(format!(
                "timestep {t} is outside 0..={} (steps_offset = {})",
                n_train - 1,
                config.steps_offset
            )));
        }
    }
    if plan.sigmas.iter().any(|s| s.is_nan() || *s < 0.0) {
        return Err(bad(format!("a sigma is not finite: {:?}", plan.sigmas)));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_conventions() {
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        // round half to even, as np.round
        assert_eq!(2.5f64.round_ties_even(), 2.0);
        // np.arange(1000, 0, -1000/61) has 62 points (the last ~1e-13).
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 60.0).len(), 60);
        assert_eq!(np_interp(2.0, &[1.0, 2.0, 4.0]), 4.0);
        assert_eq!(np_interp(1.5, &[1.0, 2.0, 4.0]), 3.0);
        let ls = [0.0f64.ln().max(-5.0), 0.0, 1.0];
        assert_eq!(sigma_to_t(1.0f64.exp(), &ls), 2.0);
        assert!((sigma_to_t(0.5f64.exp(), &ls) - 1.5).abs() < 1e-15);
        assert_eq!(sigma_to_t(1e-30, &ls), 0.0);
        assert_eq!(torch_linspace(0.0, 1.0, 5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        // The Beta(0.6, 0.6) quantile is symmetric about 1/2.
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-14);
        assert!((beta_ppf(0.2, 0.6, 0.6) + beta_ppf(0.8, 0.6, 0.6) - 1.0).abs() < 1e-14);
    }

    #[test]
    fn singlestep_order_lists() {
        assert_eq!(singlestep_orders(6, 3, true, true), vec![1, 2, 3, 1, 2, 1]);
        assert_eq!(
            singlestep_orders(7, 3, true, true),
            vec![1, 2, 3, 1, 2, 3, 1]
        );
        assert_eq!(
            singlestep_orders(8, 3, true, true),
            vec![1, 2, 3, 1, 2, 3, 1, 1]
        );
        assert_eq!(singlestep_orders(6, 2, true, false), vec![1, 2, 1, 2, 1, 1]);
        assert_eq!(
            singlestep_orders(6, 2, false, false),
            vec![1, 2, 1, 2, 1, 2]
        );
    }
}
