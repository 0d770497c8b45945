//! Discrete-time DDPM schedules made continuous: `vp-discrete`.
//!
//! A DDPM model is trained on N timesteps tau = 0..N-1 with alphas_cumprod_tau =
//! prod_{i <= tau} (1 - beta_i), alpha_tau = sqrt(alphas_cumprod_tau). pfode places timestep tau at
//! t = (tau + 1)/N, as the official DPM-Solver `NoiseScheduleVP('discrete')` does, and makes the
//! schedule continuous between the knots in one of two ways:
//!
//! - `interp=log_alpha` (default; the official DPM-Solver `interpolate_fn`): ln alpha piecewise
//!   linear in t;
//! - `interp=log_sigma` (diffusers' `_sigma_to_t`, which gives the fractional timesteps of the
//!   Karras, exponential and beta sigmas of `EulerDiscreteScheduler`, `HeunDiscreteScheduler` and
//!   `LMSDiscreteScheduler`): ln(sigma/alpha) piecewise linear in t.
//!
//! Options (defaults first):
//! - `betas=linear|scaled_linear|squaredcos_cap_v2`: linspace(beta_start, beta_end, N);
//!   linspace(sqrt beta_start, sqrt beta_end, N)^2 (Stable Diffusion); and improved DDPM's
//!   cosine, beta_i = min(1 - abar((i+1)/N)/abar(i/N), 0.999) with
//!   abar(u) = cos((u + 0.008)/1.008 pi/2)^2 (diffusers' `betas_for_alpha_bar`). `beta_start`,
//!   `beta_end` default to 1e-4, 0.02 (`linear`) and 0.00085, 0.012 (`scaled_linear`); `steps` = N
//!   (1000). Trained betas (a config's `trained_betas`) come only through the library
//!   ([`DiscreteOptions::trained`]).
//! - `clip=true`: drop trailing knots with lambda < -5.1 before placing them, as the official
//!   `numerical_clip_alpha` (then N is the number kept); `clip=false` keeps every knot.
//! - `zero=false`: with `zero=true` a knot at t = 0 with alpha = 1, sigma = 0 (tau = -1: the end
//!   point of diffusers' `final_sigmas_type="zero"` and of DDIM's `set_alpha_to_one`), joined to
//!   the first timestep with ln alpha linear in t. Without it the range is [1/N, 1]; the official
//!   code extrapolates below 1/N, pfode rejects such t.
//! - `zero_snr=false|true|clamped`: Lin et al. (2024)'s rescaling of the betas to zero terminal SNR
//!   (diffusers' `rescale_betas_zero_snr`): sqrt(alphas_cumprod) is shifted and scaled to end at 0,
//!   then turned back into betas; `true` keeps alphas_cumprod_{N-1} = 0 (alpha = 0, lambda = -inf,
//!   as diffusers' DDIM and DDPM schedulers), `clamped` sets it to 2^-24 (as their Euler, Euler
//!   ancestral, DPM-Solver multistep and UniPC schedulers do). A segment with an infinite end
//!   interpolates alpha itself linearly. With `linear` betas the clamp raises the last
//!   alphas_cumprod above the one before (4.2e-9, then 2^-24); pfode keeps it, as diffusers does,
//!   and t(lambda) is then not unique near t = 1.
//!
//! Everything is float64 (diffusers computes its betas and alphas_cumprod in float32). linspace
//! follows NumPy (start + i step, the last point exactly the end).

use super::{softplus, LogAlpha};
use crate::error::{Error, Result};
use crate::spec::Spec;

/// Which beta sequence a discrete schedule uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Betas {
    Linear,
    ScaledLinear,
    SquaredCos,
    /// Explicit betas (diffusers' `trained_betas`).
    Trained(Vec<f64>),
}

/// How ln alpha is made continuous between knots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    LogAlpha,
    LogSigma,
}

/// Zero terminal SNR (`rescale_betas_zero_snr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroSnr {
    Off,
    Exact,
    Clamped,
}

/// The options of a discrete schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteOptions {
    pub betas: Betas,
    pub beta_start: f64,
    pub beta_end: f64,
    pub steps: usize,
    pub interp: Interp,
    pub clip: bool,
    pub zero: bool,
    pub zero_snr: ZeroSnr,
}

impl DiscreteOptions {
    /// The official DPM-Solver discrete schedule of these betas (log-alpha interpolation, the
    /// lambda clip, no knot at sigma = 0).
    pub fn official(betas: Betas, beta_start: f64, beta_end: f64, steps: usize) -> Self {
        DiscreteOptions {
            betas,
            beta_start,
            beta_end,
            steps,
            interp: Interp::LogAlpha,
            clip: true,
            zero: false,
            zero_snr: ZeroSnr::Off,
        }
    }

    /// Explicit betas.
    pub fn trained(betas: Vec<f64>) -> Self {
        let steps = betas.len();
        DiscreteOptions::official(Betas::Trained(betas), 0.0, 0.0, steps)
    }

    /// The betas, N of them.
    pub fn betas(&self) -> Vec<f64> {
        let n = self.steps;
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
            v[n - 1] = b;
            v
        };
        match &self.betas {
            Betas::Linear => linspace(self.beta_start, self.beta_end),
            Betas::ScaledLinear => linspace(self.beta_start.sqrt(), self.beta_end.sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
            Betas::SquaredCos => {
                let abar = |u: f64| {
                    ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (u1, u2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - abar(u2) / abar(u1)).min(0.999)
                    })
                    .collect()
            }
            Betas::Trained(b) => b.clone(),
        }
    }

    /// alphas_cumprod = cumprod(1 - beta), after the zero-SNR rescaling.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let mut betas = self.betas();
        if self.zero_snr != ZeroSnr::Off {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut cumprod = 1.0;
        let mut ac: Vec<f64> = betas
            .iter()
            .map(|b| {
                cumprod *= 1.0 - b;
                cumprod
            })
            .collect();
        if self.zero_snr == ZeroSnr::Clamped {
            if let Some(last) = ac.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        ac
    }

    fn betas_name(&self) -> String {
        match &self.betas {
            Betas::Linear => "linear".into(),
            Betas::ScaledLinear => "scaled_linear".into(),
            Betas::SquaredCos => "squaredcos_cap_v2".into(),
            Betas::Trained(b) => format!("trained({} values)", b.len()),
        }
    }
}

/// Lin et al. (2024), Algorithm 1 (diffusers' `rescale_zero_terminal_snr`): sqrt(alphas_cumprod)
/// shifted to end at 0 and scaled to keep its first value, then turned back into betas.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut cumprod = 1.0;
    let mut s: Vec<f64> = betas
        .iter()
        .map(|b| {
            cumprod *= 1.0 - b;
            cumprod.sqrt()
        })
        .collect();
    let (s0, st) = (s[0], s[s.len() - 1]);
    for v in &mut s {
        *v -= st;
        *v *= s0 / (s0 - st);
    }
    let abar: Vec<f64> = s.iter().map(|v| v * v).collect();
    let mut out = vec![1.0 - abar[0]];
    out.extend(abar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// The official DPM-Solver `numerical_clip_alpha` threshold on lambda.
const CLIPPED_LAMBDA: f64 = -5.1;

/// A discrete schedule: ln alpha at the knots and how it is interpolated (see the module doc).
#[derive(Debug)]
pub struct Discrete {
    options: DiscreteOptions,
    /// The knot times, increasing: [0,] 1/N, 2/N, ..., 1.
    knots: Vec<f64>,
    /// ln alpha at the knots.
    log_alpha: Vec<f64>,
    /// The number of timestep knots N (after clipping).
    n: usize,
}

/// ln(sigma/alpha) from ln alpha: (1/2) ln(e^(-2 ln alpha) - 1).
fn log_rho(la: f64) -> f64 {
    0.5 * (-2.0 * la).exp_m1().ln()
}

/// How one segment is interpolated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Segment {
    LogAlpha,
    LogSigma,
    Alpha,
}

impl Discrete {
    pub fn new(options: DiscreteOptions) -> Result<Self> {
        let bad = |reason: String| Error::Domain(format!("discrete schedule: {reason}"));
        if options.steps < 2 {
            return Err(bad(format!(
                "need at least 2 timesteps, got {}",
                options.steps
            )));
        }
        if options.steps > crate::limits::MAX_STEPS {
            return Err(bad(format!(
                "{} timesteps exceed the limit of {}",
                options.steps,
                crate::limits::MAX_STEPS
            )));
        }
        let betas = options.betas();
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
        {
            return Err(bad(format!("beta {i} = {b} is not in (0, 1)")));
        }
        let mut log_alpha: Vec<f64> = options
            .alphas_cumprod()
            .iter()
            .map(|ac| 0.5 * ac.ln())
            .collect();
        // diffusers' clamp to 2^-24 can raise the last value above the one before (linear betas:
        // 4.2e-9, then 2^-24); it is kept, as there.
        let checked = match options.zero_snr {
            ZeroSnr::Clamped => log_alpha.len() - 1,
            _ => log_alpha.len(),
        };
        if let Some(i) = log_alpha[..checked]
            .windows(2)
            .position(|w| w[1] >= w[0] || w[1].is_nan())
        {
            return Err(bad(format!(
                "alphas_cumprod must strictly decrease (timestep {}: {:e}, {}: {:e})",
                i,
                (2.0 * log_alpha[i]).exp(),
                i + 1,
                (2.0 * log_alpha[i + 1]).exp()
            )));
        }
        let lambda = |la: f64| la - 0.5 * (-(2.0 * la).exp_m1()).ln();
        if options.clip {
            while log_alpha.len() > 2 && lambda(log_alpha[log_alpha.len() - 1]) < CLIPPED_LAMBDA {
                log_alpha.pop();
            }
        }
        let n = log_alpha.len();
        let mut knots: Vec<f64> = (0..n).map(|i| (i + 1) as f64 / n as f64).collect();
        if options.zero {
            knots.insert(0, 0.0);
            log_alpha.insert(0, 0.0);
        }
        Ok(Discrete {
            options,
            knots,
            log_alpha,
            n,
        })
    }

    /// Builds from a `vp-discrete` spec (options as in the module doc).
    pub(crate) fn parse(spec: &mut Spec) -> Result<Self> {
        let kind: String = spec.take("betas", "linear".to_string())?;
        let (betas, start, end) = match kind.as_str() {
            "linear" => (Betas::Linear, 1e-4, 0.02),
            "scaled_linear" => (Betas::ScaledLinear, 0.00085, 0.012),
            "squaredcos_cap_v2" => (Betas::SquaredCos, 0.0, 0.0),
            other => {
                return Err(spec.error(format!(
                    "option 'betas': unknown '{other}' (valid: linear, scaled_linear, squaredcos_cap_v2)"
                )))
            }
        };
        let (start, end) = if betas == Betas::SquaredCos {
            (start, end)
        } else {
            (
                spec.take_f64("beta_start", start)?,
                spec.take_f64("beta_end", end)?,
            )
        };
        let steps: usize = spec.take("steps", 1000)?;
        let ranged = betas == Betas::SquaredCos || (start > 0.0 && end > start && end < 1.0);
        if !(ranged && steps >= 2) {
            return Err(spec.error("need 0 < beta_start < beta_end < 1 and steps >= 2"));
        }
        if steps > crate::limits::MAX_STEPS {
            return Err(spec.error(format!(
                "option 'steps': {steps} exceeds the limit of {} steps",
                crate::limits::MAX_STEPS
            )));
        }
        let interp = match spec.take_choice("interp", "log_alpha", &["log_alpha", "log_sigma"])? {
            "log_sigma" => Interp::LogSigma,
            _ => Interp::LogAlpha,
        };
        let clip = spec.take("clip", true)?;
        let zero = spec.take("zero", false)?;
        let zero_snr = match spec.take_choice("zero_snr", "false", &["false", "true", "clamped"])? {
            "true" => ZeroSnr::Exact,
            "clamped" => ZeroSnr::Clamped,
            _ => ZeroSnr::Off,
        };
        let options = DiscreteOptions {
            betas,
            beta_start: start,
            beta_end: end,
            steps,
            interp,
            clip,
            zero,
            zero_snr,
        };
        Discrete::new(options).map_err(|e| spec.error(e.to_string()))
    }

    pub fn options(&self) -> &DiscreteOptions {
        &self.options
    }

    /// The number of timestep knots N (`steps` less the clipped ones).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The time t = (tau + 1)/N of diffusers timestep tau (tau = -1 is t = 0).
    pub fn time_of_timestep(&self, tau: f64) -> f64 {
        (tau + 1.0) / self.n as f64
    }

    fn kind(&self, i: usize) -> Segment {
        let (y0, y1) = (self.log_alpha[i], self.log_alpha[i + 1]);
        if !y0.is_finite() || !y1.is_finite() {
            Segment::Alpha
        } else if self.options.zero && i == 0 {
            Segment::LogAlpha
        } else if self.options.interp == Interp::LogSigma {
            Segment::LogSigma
        } else {
            Segment::LogAlpha
        }
    }

    /// The segment [t_i, t_{i+1}] holding t (end segments extended).
    fn segment(&self, t: f64) -> usize {
        let len = self.knots.len();
        let skip = usize::from(self.options.zero) as isize;
        let guess = (t * self.n as f64).floor() as isize - 1 + skip;
        let mut i = guess.clamp(0, len as isize - 2) as usize;
        while i > 0 && t < self.knots[i] {
            i -= 1;
        }
        while i + 2 < len && t > self.knots[i + 1] {
            i += 1;
        }
        i
    }
}

impl LogAlpha for Discrete {
    fn spec(&self) -> String {
        let o = &self.options;
        let mut s = format!("vp-discrete:betas={}", o.betas_name());
        if !matches!(o.betas, Betas::SquaredCos | Betas::Trained(_)) {
            s += &format!(",beta_start={},beta_end={}", o.beta_start, o.beta_end);
        }
        s += &format!(",steps={}", o.steps);
        if o.interp == Interp::LogSigma {
            s += ",interp=log_sigma";
        }
        if !o.clip {
            s += ",clip=false";
        }
        if o.zero {
            s += ",zero=true";
        }
        match o.zero_snr {
            ZeroSnr::Off => {}
            ZeroSnr::Exact => s += ",zero_snr=true",
            ZeroSnr::Clamped => s += ",zero_snr=clamped",
        }
        s
    }
    fn t_min(&self) -> f64 {
        self.knots[0]
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn log_alpha(&self, t: f64) -> f64 {
        let i = self.segment(t);
        let (x0, x1) = (self.knots[i], self.knots[i + 1]);
        let (y0, y1) = (self.log_alpha[i], self.log_alpha[i + 1]);
        match self.kind(i) {
            Segment::LogAlpha => y0 + (t - x0) * (y1 - y0) / (x1 - x0),
            Segment::LogSigma => {
                let (u0, u1) = (log_rho(y0), log_rho(y1));
                -0.5 * softplus(2.0 * (u0 + (t - x0) * (u1 - u0) / (x1 - x0)))
            }
            Segment::Alpha => {
                let (a0, a1) = (y0.exp(), y1.exp());
                (a0 + (t - x0) * (a1 - a0) / (x1 - x0)).ln()
            }
        }
    }
    fn dlog_alpha(&self, t: f64) -> f64 {
        let i = self.segment(t);
        let (x0, x1) = (self.knots[i], self.knots[i + 1]);
        let (y0, y1) = (self.log_alpha[i], self.log_alpha[i + 1]);
        match self.kind(i) {
            Segment::LogAlpha => (y1 - y0) / (x1 - x0),
            // d ln alpha / d u = -sigma^2 for u = ln(sigma/alpha) on a VP schedule
            Segment::LogSigma => {
                let sigma2 = -(2.0 * self.log_alpha(t)).exp_m1();
                -sigma2 * (log_rho(y1) - log_rho(y0)) / (x1 - x0)
            }
            Segment::Alpha => (y1.exp() - y0.exp()) / (x1 - x0) / self.log_alpha(t).exp(),
        }
    }
    fn t_of_log_alpha(&self, la: f64) -> f64 {
        // log_alpha is strictly decreasing: find i with y_{i+1} <= la <= y_i.
        let y = &self.log_alpha;
        let i = y
            .partition_point(|&v| v > la)
            .saturating_sub(1)
            .min(y.len() - 2);
        let (x0, x1) = (self.knots[i], self.knots[i + 1]);
        match self.kind(i) {
            Segment::LogAlpha => x0 + (la - y[i]) * (x1 - x0) / (y[i + 1] - y[i]),
            Segment::LogSigma => {
                let (u0, u1) = (log_rho(y[i]), log_rho(y[i + 1]));
                x0 + (log_rho(la) - u0) * (x1 - x0) / (u1 - u0)
            }
            Segment::Alpha => {
                let (a0, a1) = (y[i].exp(), y[i + 1].exp());
                x0 + (la.exp() - a0) * (x1 - x0) / (a1 - a0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Schedule, Vp};
    use super::*;

    #[test]
    fn vp_discrete_knots() {
        let s = parse("vp-discrete:betas=scaled_linear").unwrap();
        assert_eq!(s.t_min(), 1e-3);
        let ref_ = DiscreteOptions::official(Betas::ScaledLinear, 0.00085, 0.012, 1000);
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
        let c = Discrete::new(DiscreteOptions::official(Betas::Linear, 1e-4, 0.03, 1000)).unwrap();
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
        // clip=false keeps all 1000 knots.
        let all = parse("vp-discrete:betas=linear,beta_end=0.03,clip=false").unwrap();
        assert!((all.alpha(1.0).powi(2) / full[999] - 1.0).abs() < 1e-13);
    }

    #[test]
    fn log_sigma_interpolation_is_diffusers_sigma_to_t() {
        // Between knots tau and tau + 1, ln(sigma/alpha) is linear in tau; at t = 0 the zero knot.
        let s =
            parse("vp-discrete:betas=scaled_linear,interp=log_sigma,clip=false,zero=true").unwrap();
        let ac =
            DiscreteOptions::official(Betas::ScaledLinear, 0.00085, 0.012, 1000).alphas_cumprod();
        let log_rho_at = |i: usize| 0.5 * ((1.0 - ac[i]) / ac[i]).ln();
        for (tau, w) in [(10usize, 0.25), (500, 0.5), (998, 0.9)] {
            let t = (tau as f64 + w + 1.0) / 1000.0;
            let want = (1.0 - w) * log_rho_at(tau) + w * log_rho_at(tau + 1);
            let got = (s.sigma(t) / s.alpha(t)).ln();
            assert!((got - want).abs() < 1e-12, "tau {tau}: {got} vs {want}");
            assert!((s.t_of_lambda(-want) - t).abs() < 1e-13);
        }
        assert_eq!((s.t_min(), s.alpha(0.0), s.sigma(0.0)), (0.0, 1.0, 0.0));
        assert_eq!(s.lambda(0.0), f64::INFINITY);
        assert_eq!(s.t_of_lambda(f64::INFINITY), 0.0);
        // The knot at t = 1/N is the first timestep exactly.
        assert!((s.alpha(1e-3).powi(2) - ac[0]).abs() < 1e-16);
    }

    #[test]
    fn betas_for_alpha_bar_and_zero_snr() {
        // Improved DDPM's cosine: alphas_cumprod follows abar(t)/abar(0) until beta is capped.
        let o = DiscreteOptions {
            betas: Betas::SquaredCos,
            ..DiscreteOptions::official(Betas::Linear, 0.0, 0.0, 1000)
        };
        let ac = o.alphas_cumprod();
        let abar = |u: f64| {
            ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        for i in [0usize, 100, 500, 900] {
            let want = abar((i + 1) as f64 / 1000.0) / abar(0.0);
            assert!((ac[i] / want - 1.0).abs() < 1e-12, "{i}");
        }
        assert_eq!(o.betas()[999], 0.999);
        // Zero terminal SNR: the last alphas_cumprod is 0 (or 2^-24), the first is kept.
        let mut z = DiscreteOptions::official(Betas::ScaledLinear, 0.00085, 0.012, 1000);
        let plain = z.alphas_cumprod();
        z.zero_snr = ZeroSnr::Exact;
        let exact = z.alphas_cumprod();
        assert_eq!(exact[999], 0.0);
        assert!((exact[0] - plain[0]).abs() < 1e-15);
        z.zero_snr = ZeroSnr::Clamped;
        assert_eq!(z.alphas_cumprod()[999], 2f64.powi(-24));
        let s = parse("vp-discrete:betas=scaled_linear,zero_snr=true,clip=false").unwrap();
        assert_eq!((s.alpha(1.0), s.sigma(1.0)), (0.0, 1.0));
        assert_eq!(s.lambda(1.0), f64::NEG_INFINITY);
        // The last segment interpolates alpha linearly to 0.
        let mid = 0.9995;
        let a = (0.5 * exact[998].sqrt()).ln().exp();
        assert!((s.alpha(mid) - a).abs() < 1e-12, "{} {a}", s.alpha(mid));
        assert!((s.t_of_lambda(s.lambda(mid)) - mid).abs() < 1e-12);
    }
}
