//! Noise schedules: the forward process x_t = alpha_t x_0 + sigma_t eps, eps ~ N(0, I).
//!
//! Every schedule gives alpha(t), sigma(t), their t-derivatives, the half log-SNR
//! lambda(t) = ln(alpha_t / sigma_t) and its inverse t(lambda) on a closed interval
//! [`Schedule::t_min`, `Schedule::t_max`]. Spec names (the `--schedule` grammar):
//!
//! | spec | alpha_t | sigma_t | t range |
//! |---|---|---|---|
//! | `vp-linear:beta0=0.1,beta1=20` | exp(-t^2 (beta1 - beta0)/4 - t beta0/2) | sqrt(1 - alpha^2) | [0, 1] |
//! | `vp-cosine:s=0.008,t_max=0.9946` | cos((t+s)/(1+s) pi/2) / cos(s/(1+s) pi/2) | sqrt(1 - alpha^2) | [0, t_max] |
//! | `vp-discrete:betas=linear` (or `scaled_linear`) | piecewise-linear ln alpha through the DDPM knots | sqrt(1 - alpha^2) | [1/N, 1] |
//! | `ve:sigma_min=0.01,sigma_max=50` | 1 | sigma_min (sigma_max/sigma_min)^t | [0, 1] |
//! | `edm` | 1 | t | [0, inf) |
//! | `flow` | 1 - t | t | [0, 1] |
//!
//! The VP schedules follow `NoiseScheduleVP` of the official DPM-Solver code
//! (`marginal_log_mean_coeff`, `marginal_std`, `marginal_lambda`, `inverse_lambda`), evaluated in
//! float64 with `expm1`/`log1p` forms so that `t(lambda(t))` round-trips to ~1e-15 relative down
//! to t -> 0. Where pfode differs from that code it says so on the type.

use crate::error::{Error, Result};
use crate::spec::Spec;
use std::f64::consts::FRAC_PI_2;

/// A forward noising process x_t = alpha_t x_0 + sigma_t eps.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// The canonical spec with every option written out, e.g. `vp-linear:beta0=0.1,beta1=20`.
    fn spec(&self) -> String;
    fn t_min(&self) -> f64;
    fn t_max(&self) -> f64;
    fn alpha(&self, t: f64) -> f64;
    fn sigma(&self, t: f64) -> f64;
    /// d alpha / dt.
    fn dalpha(&self, t: f64) -> f64;
    /// d sigma / dt (infinite for VP schedules at sigma = 0).
    fn dsigma(&self, t: f64) -> f64;
    /// lambda_t = ln(alpha_t / sigma_t), the half log-SNR; decreasing in t.
    fn lambda(&self, t: f64) -> f64;
    /// The inverse of [`Schedule::lambda`].
    fn t_of_lambda(&self, lambda: f64) -> f64;

    /// sigma_t dsigma/dt = (1/2) d(sigma^2)/dt, finite also where dsigma is not.
    fn sigma_dsigma(&self, t: f64) -> f64 {
        self.sigma(t) * self.dsigma(t)
    }

    /// Drift coefficient f(t) = alpha'/alpha of the forward SDE dx = f x dt + g dW.
    fn f(&self, t: f64) -> f64 {
        self.dalpha(t) / self.alpha(t)
    }

    /// Squared diffusion g^2(t) = d(sigma^2)/dt - 2 f sigma^2 of the forward SDE.
    fn g2(&self, t: f64) -> f64 {
        let s = self.sigma(t);
        2.0 * (self.sigma_dsigma(t) - self.f(t) * s * s)
    }

    /// An error unless t lies in [t_min, t_max].
    fn check_t(&self, t: f64) -> Result<()> {
        if !(t >= self.t_min() && t <= self.t_max()) {
            return Err(Error::Domain(format!(
                "t = {t} is outside the range [{}, {}] of schedule '{}'",
                self.t_min(),
                self.t_max(),
                self.spec()
            )));
        }
        Ok(())
    }

    /// Everything an oracle or a conversion needs about time t.
    fn level(&self, t: f64) -> NoiseLevel {
        NoiseLevel {
            t,
            alpha: self.alpha(t),
            sigma: self.sigma(t),
            dalpha: self.dalpha(t),
            dsigma: self.dsigma(t),
            sigma_dsigma: self.sigma_dsigma(t),
        }
    }
}

/// A schedule evaluated at one time: what an oracle sees. The Gaussian mixture needs only
/// `alpha` and `sigma` (plus the derivatives for the PF-ODE velocity); a network needs `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    pub t: f64,
    pub alpha: f64,
    pub sigma: f64,
    pub dalpha: f64,
    pub dsigma: f64,
    /// sigma * dsigma/dt, kept separately because it stays finite at sigma = 0 on VP schedules.
    pub sigma_dsigma: f64,
}

impl NoiseLevel {
    /// A level known only by (alpha, sigma), with t and the derivatives 0: enough for the
    /// mixture's density and denoiser.
    pub fn of(alpha: f64, sigma: f64) -> Self {
        NoiseLevel {
            t: 0.0,
            alpha,
            sigma,
            dalpha: 0.0,
            dsigma: 0.0,
            sigma_dsigma: 0.0,
        }
    }
}

/// ln(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// ln alpha(t) of a variance-preserving schedule; sigma = sqrt(1 - alpha^2) follows.
trait LogAlpha: Send + Sync + std::fmt::Debug {
    fn spec(&self) -> String;
    fn t_min(&self) -> f64;
    fn t_max(&self) -> f64;
    fn log_alpha(&self, t: f64) -> f64;
    fn dlog_alpha(&self, t: f64) -> f64;
    fn t_of_log_alpha(&self, log_alpha: f64) -> f64;
}

/// Variance preserving: alpha^2 + sigma^2 = 1, so lambda = ln alpha - ln(1 - alpha^2)/2 and
/// ln alpha = -softplus(-2 lambda)/2.
#[derive(Debug)]
struct Vp<L>(L);

impl<L: LogAlpha> Schedule for Vp<L> {
    fn spec(&self) -> String {
        self.0.spec()
    }
    fn t_min(&self) -> f64 {
        self.0.t_min()
    }
    fn t_max(&self) -> f64 {
        self.0.t_max()
    }
    fn alpha(&self, t: f64) -> f64 {
        self.0.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.0.log_alpha(t)).exp_m1()).sqrt()
    }
    fn dalpha(&self, t: f64) -> f64 {
        self.alpha(t) * self.0.dlog_alpha(t)
    }
    fn dsigma(&self, t: f64) -> f64 {
        self.sigma_dsigma(t) / self.sigma(t)
    }
    fn sigma_dsigma(&self, t: f64) -> f64 {
        let a = self.alpha(t);
        -a * a * self.0.dlog_alpha(t)
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.0.log_alpha(t);
        la - 0.5 * (-(2.0 * la).exp_m1()).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        self.0.t_of_log_alpha(-0.5 * softplus(-2.0 * lambda))
    }
}

/// Continuous VP schedule of Score SDE with linear beta(t) = beta0 + t (beta1 - beta0):
/// ln alpha = -t^2 (beta1 - beta0)/4 - t beta0/2 on [0, 1]. The inverse solves the quadratic in
/// the cancellation-free form of the official DPM-Solver `inverse_lambda`.
#[derive(Debug)]
struct VpLinear {
    beta0: f64,
    beta1: f64,
}

impl LogAlpha for VpLinear {
    fn spec(&self) -> String {
        format!("vp-linear:beta0={},beta1={}", self.beta0, self.beta1)
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn log_alpha(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta1 - self.beta0) - 0.5 * t * self.beta0
    }
    fn dlog_alpha(&self, t: f64) -> f64 {
        -0.5 * t * (self.beta1 - self.beta0) - 0.5 * self.beta0
    }
    fn t_of_log_alpha(&self, log_alpha: f64) -> f64 {
        let d = self.beta1 - self.beta0;
        let m = -4.0 * log_alpha;
        m / (self.beta0 + (self.beta0 * self.beta0 + d * m).sqrt())
    }
}

/// Cosine schedule of improved DDPM (Nichol & Dhariwal 2021) in the continuous form of the
/// official DPM-Solver code: ln alpha(t) = ln cos(u_t) - ln cos(u_0), u_t = (t+s)/(1+s) pi/2.
/// alpha reaches 0 at t = 1 (lambda = -inf), so the end point is clipped to
/// t_max = 0.9946 as in that code (alpha = 0.0084, lambda(t_max) = -4.7776); it is an option. Both directions are
/// written in the angle difference delta = u_t - u_0 near t = 0, and in pi/2 - u_t near t = 1,
/// to avoid cancellation at either end.
#[derive(Debug)]
struct VpCosine {
    s: f64,
    t_max: f64,
}

impl VpCosine {
    fn scale(&self) -> f64 {
        FRAC_PI_2 / (1.0 + self.s)
    }
}

impl LogAlpha for VpCosine {
    fn spec(&self) -> String {
        format!("vp-cosine:s={},t_max={}", self.s, self.t_max)
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn log_alpha(&self, t: f64) -> f64 {
        let u0 = self.s * self.scale();
        if t > 0.5 {
            // cos u_t = sin(pi/2 - u_t) = sin((1 - t) pi/2 / (1 + s)), exact near t = 1.
            ((1.0 - t) * self.scale()).sin().ln() - u0.cos().ln()
        } else {
            // cos(u0 + d)/cos(u0) = cos d - tan(u0) sin d = 1 - 2 sin^2(d/2) - tan(u0) sin d
            let d = t * self.scale();
            let h = (0.5 * d).sin();
            (-2.0 * h * h - u0.tan() * d.sin()).ln_1p()
        }
    }
    fn dlog_alpha(&self, t: f64) -> f64 {
        // -tan(u_t) pi/2/(1+s), with tan u_t = 1 / tan(pi/2 - u_t) near t = 1
        if t > 0.5 {
            -self.scale() / ((1.0 - t) * self.scale()).tan()
        } else {
            -((t + self.s) * self.scale()).tan() * self.scale()
        }
    }
    fn t_of_log_alpha(&self, log_alpha: f64) -> f64 {
        // cos u = cos(u0) e^la; sin(u - u0) = -cos^2(u0) expm1(2 la) / (sin u cos u0 + cos u sin u0)
        let u0 = self.s * self.scale();
        let (s0, c0) = u0.sin_cos();
        let em = (2.0 * log_alpha).exp_m1();
        let c = c0 * log_alpha.exp();
        let sn = (s0 * s0 - c0 * c0 * em).max(0.0).sqrt();
        let sin_d = -c0 * c0 * em / (sn * c0 + c * s0);
        let cos_d = c * c0 + sn * s0;
        sin_d.atan2(cos_d) / self.scale()
    }
}

/// Which DDPM beta sequence a discrete schedule uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Betas {
    /// beta_i = linspace(beta_start, beta_end, N), defaults 1e-4 .. 0.02 (DDPM).
    Linear,
    /// beta_i = linspace(sqrt(beta_start), sqrt(beta_end), N)^2, defaults 0.00085 .. 0.012
    /// (Stable Diffusion).
    ScaledLinear,
}

/// Discrete-time DDPM schedule made continuous as the official DPM-Solver 'discrete' schedule
/// does: alphas_cumprod = cumprod(1 - beta) in float64, knots t_i = (i+1)/N, i = 0..N-1, with
/// ln alpha(t_i) = ln(alphas_cumprod_i)/2, and ln alpha piecewise linear in t between knots;
/// `t(lambda)` interpolates t piecewise linearly in ln alpha, which is the exact inverse.
/// The valid range is [1/N, 1]; the official `interpolate_fn` extrapolates linearly outside it,
/// pfode rejects such t. Trailing knots with lambda < -5.1 are dropped before the knots are
/// placed, as the official `numerical_clip_alpha` does (so N can be less than `steps`); neither
/// default beta set reaches it (lambda(1) = -5.06 for `linear`, -2.68 for `scaled_linear`).
/// linspace follows NumPy (start + i step, last point exactly the end).
#[derive(Debug)]
struct VpDiscrete {
    betas: Betas,
    beta_start: f64,
    beta_end: f64,
    steps: usize,
    log_alpha: Vec<f64>,
}

/// The official DPM-Solver `numerical_clip_alpha` threshold on lambda.
const CLIPPED_LAMBDA: f64 = -5.1;

impl VpDiscrete {
    fn new(betas: Betas, beta_start: f64, beta_end: f64, n: usize) -> Self {
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
            v[n - 1] = b;
            v
        };
        let beta: Vec<f64> = match betas {
            Betas::Linear => linspace(beta_start, beta_end),
            Betas::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
        };
        let mut cumprod = 1.0;
        let mut log_alpha: Vec<f64> = beta
            .iter()
            .map(|b| {
                cumprod *= 1.0 - b;
                0.5 * cumprod.ln()
            })
            .collect();
        let lambda = |la: f64| la - 0.5 * (-(2.0 * la).exp_m1()).ln();
        while log_alpha.len() > 2 && lambda(log_alpha[log_alpha.len() - 1]) < CLIPPED_LAMBDA {
            log_alpha.pop();
        }
        VpDiscrete {
            betas,
            beta_start,
            beta_end,
            steps: n,
            log_alpha,
        }
    }

    fn n(&self) -> usize {
        self.log_alpha.len()
    }

    fn knot(&self, i: usize) -> f64 {
        (i + 1) as f64 / self.n() as f64
    }

    /// The segment [t_i, t_{i+1}] holding t (end segments extended).
    fn segment(&self, t: f64) -> usize {
        let n = self.n();
        let mut i = ((t * n as f64).floor() as isize - 1).clamp(0, n as isize - 2) as usize;
        while i > 0 && t < self.knot(i) {
            i -= 1;
        }
        while i + 2 < n && t > self.knot(i + 1) {
            i += 1;
        }
        i
    }

    /// Alphas_cumprod as the DDPM code has them.
    #[cfg(test)]
    fn alphas_cumprod(&self) -> Vec<f64> {
        self.log_alpha.iter().map(|la| (2.0 * la).exp()).collect()
    }
}

impl LogAlpha for VpDiscrete {
    fn spec(&self) -> String {
        let name = match self.betas {
            Betas::Linear => "linear",
            Betas::ScaledLinear => "scaled_linear",
        };
        format!(
            "vp-discrete:betas={name},beta_start={},beta_end={},steps={}",
            self.beta_start, self.beta_end, self.steps
        )
    }
    fn t_min(&self) -> f64 {
        self.knot(0)
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn log_alpha(&self, t: f64) -> f64 {
        let i = self.segment(t);
        let (x0, x1) = (self.knot(i), self.knot(i + 1));
        let (y0, y1) = (self.log_alpha[i], self.log_alpha[i + 1]);
        y0 + (t - x0) * (y1 - y0) / (x1 - x0)
    }
    fn dlog_alpha(&self, t: f64) -> f64 {
        let i = self.segment(t);
        (self.log_alpha[i + 1] - self.log_alpha[i]) / (self.knot(i + 1) - self.knot(i))
    }
    fn t_of_log_alpha(&self, la: f64) -> f64 {
        // log_alpha is strictly decreasing: find i with y_{i+1} <= la <= y_i.
        let y = &self.log_alpha;
        let i = y
            .partition_point(|&v| v > la)
            .saturating_sub(1)
            .min(y.len() - 2);
        let (x0, x1) = (self.knot(i), self.knot(i + 1));
        x0 + (la - y[i]) * (x1 - x0) / (y[i + 1] - y[i])
    }
}

/// Variance exploding (Score SDE, NCSN++): alpha = 1, sigma = sigma_min (sigma_max/sigma_min)^t
/// on [0, 1]. Defaults are those of Song et al. (2021) for CIFAR-10.
#[derive(Debug)]
struct Ve {
    sigma_min: f64,
    sigma_max: f64,
}

impl Ve {
    fn log_ratio(&self) -> f64 {
        (self.sigma_max / self.sigma_min).ln()
    }
}

impl Schedule for Ve {
    fn spec(&self) -> String {
        format!(
            "ve:sigma_min={},sigma_max={}",
            self.sigma_min, self.sigma_max
        )
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (t * self.log_ratio()).exp()
    }
    fn dalpha(&self, _t: f64) -> f64 {
        0.0
    }
    fn dsigma(&self, t: f64) -> f64 {
        self.sigma(t) * self.log_ratio()
    }
    fn lambda(&self, t: f64) -> f64 {
        -self.sigma_min.ln() - t * self.log_ratio()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (-lambda - self.sigma_min.ln()) / self.log_ratio()
    }
}

/// EDM (Karras et al. 2022): alpha = 1, sigma = t on [0, inf); grids choose sigma_max.
#[derive(Debug)]
struct Edm;

impl Schedule for Edm {
    fn spec(&self) -> String {
        "edm".into()
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        f64::INFINITY
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn dalpha(&self, _t: f64) -> f64 {
        0.0
    }
    fn dsigma(&self, _t: f64) -> f64 {
        1.0
    }
    fn lambda(&self, t: f64) -> f64 {
        -t.ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

/// Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022): alpha = 1 - t,
/// sigma = t on [0, 1]; lambda = ln((1-t)/t), t(lambda) = 1/(1 + e^lambda).
#[derive(Debug)]
struct Flow;

impl Schedule for Flow {
    fn spec(&self) -> String {
        "flow".into()
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn dalpha(&self, _t: f64) -> f64 {
        -1.0
    }
    fn dsigma(&self, _t: f64) -> f64 {
        1.0
    }
    fn lambda(&self, t: f64) -> f64 {
        (-t).ln_1p() - t.ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        if lambda >= 0.0 {
            let e = (-lambda).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + lambda.exp())
        }
    }
}

/// The schedule names `parse` accepts.
pub const SCHEDULES: [&str; 6] = ["vp-linear", "vp-cosine", "vp-discrete", "ve", "edm", "flow"];

/// Builds a schedule from its spec, e.g. `vp-linear`, `vp-linear:beta0=0.1,beta1=20`,
/// `vp-discrete:betas=scaled_linear`, `ve:sigma_min=0.01,sigma_max=50`, `edm`, `flow`.
pub fn parse(text: &str) -> Result<Box<dyn Schedule>> {
    let mut spec = Spec::parse("schedule", text)?;
    let schedule: Box<dyn Schedule> = match spec.name.as_str() {
        "vp-linear" => {
            let beta0 = spec.take_f64("beta0", 0.1)?;
            let beta1 = spec.take_f64("beta1", 20.0)?;
            if !(beta0 >= 0.0 && beta1 > beta0) {
                return Err(spec.error("need 0 <= beta0 < beta1"));
            }
            Box::new(Vp(VpLinear { beta0, beta1 }))
        }
        "vp-cosine" => {
            let s = spec.take_f64("s", 0.008)?;
            let t_max = spec.take_f64("t_max", 0.9946)?;
            if !(s > 0.0 && t_max > 0.0 && t_max < 1.0) {
                return Err(spec.error("need s > 0 and 0 < t_max < 1"));
            }
            Box::new(Vp(VpCosine { s, t_max }))
        }
        "vp-discrete" => {
            let kind: String = spec.take("betas", "linear".to_string())?;
            let (betas, start, end) = match kind.as_str() {
                "linear" => (Betas::Linear, 1e-4, 0.02),
                "scaled_linear" => (Betas::ScaledLinear, 0.00085, 0.012),
                other => {
                    return Err(spec.error(format!(
                        "option 'betas': unknown '{other}' (valid: linear, scaled_linear)"
                    )))
                }
            };
            let start = spec.take_f64("beta_start", start)?;
            let end = spec.take_f64("beta_end", end)?;
            let steps: usize = spec.take("steps", 1000)?;
            if !(start > 0.0 && end > start && end < 1.0 && steps >= 2) {
                return Err(spec.error("need 0 < beta_start < beta_end < 1 and steps >= 2"));
            }
            if steps > crate::limits::MAX_STEPS {
                return Err(spec.error(format!(
                    "option 'steps': {steps} exceeds the limit of {} steps",
                    crate::limits::MAX_STEPS
                )));
            }
            Box::new(Vp(VpDiscrete::new(betas, start, end, steps)))
        }
        "ve" => {
            let sigma_min = spec.take_f64("sigma_min", 0.01)?;
            let sigma_max = spec.take_f64("sigma_max", 50.0)?;
            if !(sigma_min > 0.0 && sigma_max > sigma_min) {
                return Err(spec.error("need 0 < sigma_min < sigma_max"));
            }
            Box::new(Ve {
                sigma_min,
                sigma_max,
            })
        }
        "edm" => Box::new(Edm),
        "flow" => Box::new(Flow),
        other => {
            return Err(spec.error(format!(
                "unknown schedule '{other}' (valid: {})",
                SCHEDULES.join(", ")
            )))
        }
    };
    spec.finish()?;
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [&str; 7] = [
        "vp-linear",
        "vp-cosine",
        "vp-discrete:betas=linear",
        "vp-discrete:betas=scaled_linear",
        "ve",
        "edm",
        "flow",
    ];

    /// Interior test times: log-spaced down to 1e-6 of the range and linear across it,
    /// away from the discrete knots.
    fn times(s: &dyn Schedule) -> Vec<f64> {
        let (a, b) = (s.t_min(), s.t_max().min(80.0));
        let mut ts: Vec<f64> = (0..=60)
            .map(|i| a + (b - a) * 10f64.powf(-6.0 + 6.0 * i as f64 / 60.0))
            .collect();
        ts.extend((1..40).map(|i| a + (b - a) * (i as f64 + 0.37) / 40.5));
        ts.retain(|&t| t > a && t < b);
        ts
    }

    /// Fourth-order central difference with h a fixed fraction of the distance to the range's
    /// ends, and the rounding error eps |f| / h it cannot beat.
    fn check_derivative(name: &str, t: f64, h: f64, f: &dyn Fn(f64) -> f64, d: f64) {
        let fd = (f(t - 2.0 * h) - 8.0 * f(t - h) + 8.0 * f(t + h) - f(t + 2.0 * h)) / (12.0 * h);
        let tol = 1e-8 * d.abs() + 1e-14 * f(t).abs() / h;
        assert!((fd - d).abs() <= tol, "{name} at t={t}: fd {fd} vs {d}");
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for spec in SPECS {
            let s = parse(spec).unwrap();
            for t in times(s.as_ref()) {
                let mut h = 1e-3 * (t - s.t_min()).min(s.t_max() - t).min(1.0);
                if spec.starts_with("vp-discrete") {
                    // ln alpha is piecewise linear: stay inside one segment.
                    let frac = (t * 1000.0).fract();
                    h = h.min(0.2e-3 * frac.min(1.0 - frac));
                }
                check_derivative(spec, t, h, &|t| s.alpha(t), s.dalpha(t));
                check_derivative(spec, t, h, &|t| s.sigma(t), s.dsigma(t));
                let sds = s.sigma(t) * s.dsigma(t);
                assert!((s.sigma_dsigma(t) - sds).abs() <= 1e-13 * sds.abs().max(1e-300));
            }
        }
    }

    #[test]
    fn lambda_round_trips() {
        for spec in SPECS {
            let s = parse(spec).unwrap();
            let mut ts = times(s.as_ref());
            if s.t_max().is_finite() {
                ts.push(s.t_max());
            }
            if s.t_min() > 0.0 {
                ts.push(s.t_min());
            }
            for t in ts {
                // 1e-12 relative, plus the rounding of lambda itself carried through dt/dlambda
                // (it matters only where lambda(t_min) is finite, as for VE near t = 0).
                let back = s.t_of_lambda(s.lambda(t));
                let dlambda = s.dalpha(t) / s.alpha(t) - s.dsigma(t) / s.sigma(t);
                let floor = 4.0 * f64::EPSILON * s.lambda(t).abs() / dlambda.abs();
                assert!(
                    back == t || (back - t).abs() <= 1e-12 * t + floor,
                    "{spec}: t = {t} -> lambda = {} -> {back}",
                    s.lambda(t)
                );
                let l = s.lambda(t);
                let direct = (s.alpha(t) / s.sigma(t)).ln();
                assert!(l == direct || (l - direct).abs() <= 1e-12 * l.abs().max(1.0));
            }
        }
    }

    #[test]
    fn vp_schedules_preserve_variance() {
        for spec in &SPECS[..4] {
            let s = parse(spec).unwrap();
            for t in times(s.as_ref()) {
                let (a, sg) = (s.alpha(t), s.sigma(t));
                assert!((a * a + sg * sg - 1.0).abs() < 4e-16, "{spec} at {t}");
            }
        }
    }

    #[test]
    fn vp_linear_closed_forms() {
        let s = parse("vp-linear:beta0=0.1,beta1=20").unwrap();
        // g^2 = beta(t) for the VP SDE dx = -beta x/2 dt + sqrt(beta) dW.
        for t in [1e-3, 0.1, 0.5, 1.0] {
            let beta = 0.1 + t * 19.9;
            assert!((s.g2(t) - beta).abs() < 1e-13 * beta);
            assert!((s.f(t) + 0.5 * beta).abs() < 1e-13 * beta);
        }
        assert_eq!(s.alpha(1.0), (-0.25 * 19.9 - 0.05f64).exp());
        assert_eq!(s.alpha(0.0), 1.0);
        assert_eq!(s.sigma(0.0), 0.0);
        assert_eq!(s.lambda(0.0), f64::INFINITY);
        assert_eq!(s.t_of_lambda(f64::INFINITY), 0.0);
        // VP at t = 0: dsigma is infinite but sigma * dsigma = -alpha alpha' = beta0 / 2.
        assert!((s.sigma_dsigma(0.0) - 0.05).abs() < 1e-16);
    }

    #[test]
    fn vp_cosine_end_point() {
        let s = parse("vp-cosine").unwrap();
        assert_eq!(s.t_max(), 0.9946);
        let u = |t: f64| (t + 0.008) / 1.008 * FRAC_PI_2;
        for t in [0.01, 0.3, 0.9, 0.9946] {
            let direct = u(t).cos() / u(0.0).cos();
            assert!((s.alpha(t) - direct).abs() < 1e-14, "t = {t}");
        }
        assert!(
            (s.lambda(0.9946) + 4.77764).abs() < 1e-5,
            "{}",
            s.lambda(0.9946)
        );
    }

    #[test]
    fn vp_discrete_knots() {
        let s = parse("vp-discrete:betas=scaled_linear").unwrap();
        assert_eq!(s.t_min(), 1e-3);
        let ref_ = VpDiscrete::new(Betas::ScaledLinear, 0.00085, 0.012, 1000);
        let ac = ref_.alphas_cumprod();
        for i in [0usize, 1, 10, 500, 998, 999] {
            let t = (i + 1) as f64 / 1000.0;
            let a2 = s.alpha(t).powi(2);
            assert!((a2 - ac[i]).abs() < 1e-14 * ac[i], "knot {i}");
        }
        // Stable Diffusion's final alphas_cumprod and the first beta.
        assert!((ac[999] - 0.0046_8).abs() < 1e-4, "{}", ac[999]);
        assert!((1.0 - ac[0] - 0.00085).abs() < 1e-15);
        assert!(s.check_t(5e-4).is_err());
        assert!(s.check_t(1e-3).is_ok());
        // No knot is clipped for the default beta sets ...
        let lin = parse("vp-discrete:betas=linear").unwrap();
        assert!(
            (lin.lambda(1.0) + 5.0588).abs() < 1e-3,
            "{}",
            lin.lambda(1.0)
        );
        assert!((s.lambda(1.0) + 2.68202).abs() < 1e-4, "{}", s.lambda(1.0));
        // ... but a larger beta_end has its knots below lambda = -5.1 dropped and the rest
        // spread over (0, 1].
        let c = VpDiscrete::new(Betas::Linear, 1e-4, 0.03, 1000);
        let kept = c.log_alpha.len();
        let full: Vec<f64> = (0..1000)
            .scan(1.0, |ac, i| {
                *ac *= 1.0 - (1e-4 + i as f64 * (0.03 - 1e-4) / 999.0);
                Some(*ac)
            })
            .collect();
        assert!(kept < 1000 && kept > 700, "{kept}");
        let clipped = Vp(c);
        assert!(clipped.lambda(1.0) >= -5.1 && clipped.lambda(1.0) < -5.09);
        assert!((clipped.alpha(1.0).powi(2) / full[kept - 1] - 1.0).abs() < 1e-13);
        let next = full[kept].sqrt().ln();
        assert!(next - 0.5 * (-(2.0 * next).exp_m1()).ln() < -5.1);
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(
            e("vp-quadratic"),
            "schedule 'vp-quadratic': unknown schedule 'vp-quadratic' (valid: vp-linear, vp-cosine, vp-discrete, ve, edm, flow)"
        );
        assert!(e("vp-linear:beta0=30").contains("need 0 <= beta0 < beta1"));
        assert!(e("ve:sigma_min=-1").contains("need 0 < sigma_min"));
        assert!(e("vp-discrete:betas=cosine").contains("unknown 'cosine'"));
        assert!(e("edm:rho=7").contains("unknown option 'rho'"));
        assert_eq!(
            parse("vp-linear").unwrap().spec(),
            "vp-linear:beta0=0.1,beta1=20"
        );
    }
}
