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

pub mod discrete;
pub use discrete::{Betas, Discrete, DiscreteOptions, Interp, ZeroSnr};

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
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// ln alpha(t) of a variance-preserving schedule; sigma = sqrt(1 - alpha^2) follows.
pub(crate) trait LogAlpha: Send + Sync + std::fmt::Debug {
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
pub(crate) struct Vp<L>(pub(crate) L);

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
        "vp-discrete" => Box::new(Vp(discrete::Discrete::parse(&mut spec)?)),
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

    const SPECS: [&str; 9] = [
        "vp-linear",
        "vp-cosine",
        "vp-discrete:betas=linear",
        "vp-discrete:betas=scaled_linear",
        "vp-discrete:betas=scaled_linear,interp=log_sigma,clip=false,zero=true",
        "vp-discrete:betas=squaredcos_cap_v2,interp=log_sigma,clip=false,zero=true,zero_snr=clamped",
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
                    // ln alpha is piecewise smooth: stay inside one segment, off the knots.
                    let frac = (t * 1000.0).fract();
                    if frac.min(1.0 - frac) < 1e-6 {
                        continue;
                    }
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
        for spec in &SPECS[..6] {
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
