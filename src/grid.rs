//! Time grids t_0 > t_1 > ... > t_N that a sampler walks (diffusion time decreasing).
//!
//! | spec | points |
//! |---|---|
//! | `time-uniform:steps=N,t_start=T,t_end=e` | linspace(T, e, N+1) (official `skip_type='time_uniform'`) |
//! | `time-quadratic:steps=N,t_start=T,t_end=e` | linspace(sqrt T, sqrt e, N+1)^2 (`'time_quadratic'`) |
//! | `logsnr:steps=N,t_start=T,t_end=e` | t(lambda) for lambda = linspace(lambda(T), lambda(e), N+1) (`'logSNR'`) |
//! | `karras:steps=N,sigma_min=0.002,sigma_max=80,rho=7,zero=false` | rho-spaced sigmas of Karras et al. (2022), eq. 5 |
//! | `exponential:steps=N,sigma_min=0.002,sigma_max=80,zero=false` | sigmas uniform in ln sigma |
//! | `file:TIMES.json` | an explicit, strictly decreasing JSON array of times |
//! | `times:t0,t1,...,tN` | the same, inline (what `sample --scheduler-config F --explain` prints) |
//!
//! Sigma-based grids (`karras`, `exponential`) are in the EDM noise level rho = sigma/alpha =
//! e^(-lambda), so on a VP schedule they select t(lambda = -ln rho). With `zero=true` the grid is
//! k-diffusion's `append_zero`: N - 1 steps over [sigma_min, sigma_max] (N points, as
//! `get_sigmas_karras(N, ...)`) and a final step to sigma = 0 (lambda = +inf), available where
//! the schedule reaches sigma = 0 at its t_min (VP-linear, VP-cosine, EDM, flow). Without it the
//! grid has N steps from sigma_max to sigma_min.
//!
//! Defaults: `steps=20` (at most [`MAX_STEPS`] = 10^6); `t_start` = the schedule's t_max (80 for EDM); `t_end` = 1e-3
//! (0.002 for EDM, t_min = 1/N for `vp-discrete`).

use crate::error::{Error, Result};
use crate::limits::MAX_STEPS;
use crate::schedule::Schedule;
use crate::spec::Spec;
use std::path::Path;

/// How a grid spaces its points; singlestep solvers place their inner points the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    TimeUniform,
    TimeQuadratic,
    LogSnr,
    Karras,
    Exponential,
    File,
}

#[derive(Debug, Clone)]
pub struct Grid {
    pub kind: Kind,
    /// The times, strictly decreasing.
    pub times: Vec<f64>,
    spec: String,
}

/// The grid names `parse` accepts.
pub const GRIDS: [&str; 6] = [
    "time-uniform",
    "time-quadratic",
    "logsnr",
    "karras",
    "exponential",
    "file",
];

fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
    (0..=n).map(move |i| {
        if i == n {
            b
        } else {
            a + (b - a) * (i as f64 / n as f64)
        }
    })
}

/// The time of EDM noise level rho = sigma/alpha; rho = 0 maps to t_min where sigma(t_min) = 0.
pub fn t_of_rho(schedule: &dyn Schedule, rho: f64) -> Result<f64> {
    if rho == 0.0 {
        let t = schedule.t_min();
        if schedule.sigma(t) != 0.0 {
            return Err(Error::Domain(format!(
                "schedule '{}' never reaches sigma = 0 (sigma(t_min) = {}), so the grid cannot end at zero",
                schedule.spec(),
                schedule.sigma(t)
            )));
        }
        return Ok(t);
    }
    Ok(schedule.t_of_lambda(-rho.ln()))
}

/// Times uniform in lambda from t_start to t_end, `n` steps (the official `logSNR` skip type).
pub fn logsnr_times(schedule: &dyn Schedule, t_start: f64, t_end: f64, n: usize) -> Vec<f64> {
    let (a, b) = (schedule.lambda(t_start), schedule.lambda(t_end));
    let mut v: Vec<f64> = linspace(a, b, n).map(|l| schedule.t_of_lambda(l)).collect();
    v[0] = t_start;
    v[n] = t_end;
    v
}

impl Grid {
    /// Parses a grid spec against the schedule it will be used with.
    pub fn parse(text: &str, schedule: &dyn Schedule) -> Result<Grid> {
        if let Some(path) = text.strip_prefix("file:") {
            return Grid::from_file(path, schedule);
        }
        if let Some(list) = text.strip_prefix("times:") {
            let times = list
                .split(',')
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|_| Error::Spec {
                        what: "grid",
                        spec: text.to_string(),
                        reason: format!("'{}' is not a number", v.trim()),
                    })
                })
                .collect::<Result<Vec<f64>>>()?;
            let grid = Grid {
                kind: Kind::File,
                times,
                spec: text.to_string(),
            };
            grid.check(schedule, text)?;
            return Ok(grid);
        }
        let mut spec = Spec::parse("grid", text)?;
        let steps = spec.take("steps", 20usize)?;
        if steps == 0 {
            return Err(spec.error("option 'steps': need at least 1 step"));
        }
        if steps > MAX_STEPS {
            return Err(spec.error(format!(
                "option 'steps': {steps} exceeds the limit of {MAX_STEPS} steps"
            )));
        }
        let t_max = if schedule.t_max().is_finite() {
            schedule.t_max()
        } else {
            80.0
        };
        let t_end_default = if schedule.t_max().is_finite() {
            schedule.t_min().max(1e-3)
        } else {
            0.002
        };
        let (kind, times) = match spec.name.as_str() {
            "time-uniform" | "time-quadratic" | "logsnr" => {
                let t_start = spec.take_f64("t_start", t_max)?;
                let t_end = spec.take_f64("t_end", t_end_default)?;
                if t_end >= t_start {
                    return Err(spec.error(format!(
                        "t_end = {t_end} must be smaller than t_start = {t_start}"
                    )));
                }
                for (k, t) in [("t_start", t_start), ("t_end", t_end)] {
                    schedule
                        .check_t(t)
                        .map_err(|e| spec.error(format!("option '{k}': {e}")))?;
                }
                match spec.name.as_str() {
                    "time-uniform" => {
                        (Kind::TimeUniform, linspace(t_start, t_end, steps).collect())
                    }
                    "time-quadratic" => (
                        Kind::TimeQuadratic,
                        linspace(t_start.sqrt(), t_end.sqrt(), steps)
                            .map(|u| u * u)
                            .collect(),
                    ),
                    _ => {
                        let (a, b) = (schedule.lambda(t_start), schedule.lambda(t_end));
                        if !a.is_finite() || !b.is_finite() {
                            return Err(spec.error(format!(
                                "lambda is infinite at an end point (lambda(t_start) = {a}, lambda(t_end) = {b}); a logsnr grid needs 0 < sigma and 0 < alpha at both ends"
                            )));
                        }
                        (Kind::LogSnr, logsnr_times(schedule, t_start, t_end, steps))
                    }
                }
            }
            "karras" | "exponential" => {
                let sigma_min = spec.take_f64("sigma_min", 0.002)?;
                let sigma_max = spec.take_f64("sigma_max", 80.0)?;
                let rho = if spec.name == "karras" {
                    spec.take_f64("rho", 7.0)?
                } else {
                    1.0
                };
                let zero: bool = spec.take("zero", false)?;
                if !(sigma_min > 0.0 && sigma_max > sigma_min) {
                    return Err(spec.error("need 0 < sigma_min < sigma_max"));
                }
                if rho.is_nan() || rho <= 0.0 {
                    return Err(spec.error("option 'rho' must be positive"));
                }
                let n = if zero { steps - 1 } else { steps };
                if n == 0 {
                    return Err(spec.error("with zero=true, need steps >= 2"));
                }
                let mut sigmas: Vec<f64> = if spec.name == "karras" {
                    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
                    linspace(0.0, 1.0, n)
                        .map(|r| (hi + r * (lo - hi)).powf(rho))
                        .collect()
                } else {
                    linspace(sigma_max.ln(), sigma_min.ln(), n)
                        .map(f64::exp)
                        .collect()
                };
                if zero {
                    sigmas.push(0.0);
                }
                let mut times = Vec::with_capacity(sigmas.len());
                for s in sigmas {
                    let t = t_of_rho(schedule, s).map_err(|e| spec.error(e.to_string()))?;
                    schedule.check_t(t).map_err(|e| {
                        spec.error(format!("sigma/alpha = {s} is outside the schedule: {e}"))
                    })?;
                    times.push(t);
                }
                let kind = if spec.name == "karras" {
                    Kind::Karras
                } else {
                    Kind::Exponential
                };
                (kind, times)
            }
            other => {
                return Err(spec.error(format!(
                    "unknown grid '{other}' (valid: {})",
                    GRIDS.join(", ")
                )))
            }
        };
        spec.finish()?;
        let grid = Grid {
            kind,
            times,
            spec: spec.canonical(),
        };
        grid.check(schedule, text)?;
        Ok(grid)
    }

    /// Reads `file:TIMES.json`: a JSON array of strictly decreasing times inside the schedule.
    pub fn from_file(path: &str, schedule: &dyn Schedule) -> Result<Grid> {
        let text = std::fs::read_to_string(Path::new(path)).map_err(|e| Error::io(path, e))?;
        let times: Vec<f64> = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(path, None, format!("expected a JSON array of numbers: {e}"))
        })?;
        let grid = Grid {
            kind: Kind::File,
            times,
            spec: format!("file:{path}"),
        };
        grid.check(schedule, path)?;
        Ok(grid)
    }

    /// A grid through the given strictly decreasing times (checked against the schedule);
    /// `label` names it in error messages and in its spec.
    pub fn explicit(times: Vec<f64>, label: &str, schedule: &dyn Schedule) -> Result<Grid> {
        let grid = Grid {
            kind: Kind::File,
            times,
            spec: format!("explicit:{label}"),
        };
        grid.check(schedule, label)?;
        Ok(grid)
    }

    fn check(&self, schedule: &dyn Schedule, source: &str) -> Result<()> {
        let bad = |reason: String| Error::invalid(source, Some("times".to_string()), reason);
        if self.times.len() < 2 {
            return Err(bad(format!(
                "need at least 2 times, found {}",
                self.times.len()
            )));
        }
        for (i, &t) in self.times.iter().enumerate() {
            if !t.is_finite() {
                return Err(bad(format!("time {i} is {t}")));
            }
            schedule
                .check_t(t)
                .map_err(|e| bad(format!("time {i}: {e}")))?;
            if i > 0 && t >= self.times[i - 1] {
                return Err(bad(format!(
                    "times must strictly decrease; time {i} = {t} follows {}",
                    self.times[i - 1]
                )));
            }
        }
        Ok(())
    }

    /// Whether the last point has sigma = 0 (lambda = +inf).
    pub fn ends_at_zero(&self, schedule: &dyn Schedule) -> bool {
        schedule.sigma(*self.times.last().unwrap()) == 0.0
    }

    /// The number of steps (points - 1).
    pub fn steps(&self) -> usize {
        self.times.len() - 1
    }

    /// The canonical spec with every option written out.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The inner fractions r_j = (lambda_j - lambda_s)/h, j = 1..n-1, of `n` sub-steps between s
    /// and t placed as this grid places its points (official `get_time_steps(skip_type, s, t, n)`):
    /// uniform in t for `time-uniform`, in sqrt(t) for `time-quadratic`, otherwise uniform in
    /// lambda (as k-diffusion's DPM-Solver and DPM-Solver++(2S)).
    pub fn inner(&self, schedule: &dyn Schedule, s: f64, t: f64, n: usize) -> [f64; 2] {
        assert!((1..=3).contains(&n), "singlestep orders are 1 to 3");
        let mut r = [0.0; 2];
        let map: &dyn Fn(f64) -> f64 = match self.kind {
            Kind::TimeUniform => &|u| u,
            Kind::TimeQuadratic => &|u| u * u,
            _ => {
                for (j, rj) in r.iter_mut().enumerate().take(n - 1) {
                    *rj = (j + 1) as f64 / n as f64;
                }
                return r;
            }
        };
        let (a, b) = match self.kind {
            Kind::TimeQuadratic => (s.sqrt(), t.sqrt()),
            _ => (s, t),
        };
        let (ls, lt) = (schedule.lambda(s), schedule.lambda(t));
        for (rj, u) in r.iter_mut().zip(linspace(a, b, n).skip(1).take(n - 1)) {
            *rj = (schedule.lambda(map(u)) - ls) / (lt - ls);
        }
        r
    }
}
