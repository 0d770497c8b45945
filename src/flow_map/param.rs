//! Parameterisations of a two-time network F(x, s, t) as a flow map, each of the form
//!
//! Psi(x, s, t) = A(s, t) x + B(s, t) F(C(s) x, s, t),
//!
//! with rho = sigma/alpha (the EDM noise level of x/alpha) and sigma_d the data scale:
//!
//! - `consistency` (Song et al. 2023, "Consistency Models", eq. 3 and App. C, with the
//!   boundary sigma_min replaced by the target level so that it maps to any t):
//!   in x/alpha, c_skip = sigma_d^2 / ((rho_s - rho_t)^2 + sigma_d^2),
//!   c_out = sigma_d (rho_s - rho_t) / sqrt(sigma_d^2 + rho_s^2); A = (alpha_t/alpha_s) c_skip,
//!   B = alpha_t c_out.
//! - `ctm` (Kim et al. 2024, "Consistency Trajectory Models", eq. 5): G(x, s, t) =
//!   (rho_t/rho_s) x + (1 - rho_t/rho_s) g(x, s, t) in x/alpha, g the EDM-preconditioned
//!   denoiser c_skip(rho_s) x + c_out(rho_s) F with c_skip = sigma_d^2/(rho_s^2 + sigma_d^2),
//!   c_out = rho_s sigma_d / sqrt(rho_s^2 + sigma_d^2) (Karras et al. 2022, Table 1).
//! - `mean-velocity` (MeanFlow, Geng et al. 2025, eq. 1-3; flow-map matching, Boffi et al.
//!   2024): Psi = x - (s - t) u(x, s, t), u the average velocity over [t, s]; A = 1,
//!   B = -(s - t), C = 1.
//! - `ddim` (the progressive-distillation student, Salimans & Ho 2022, eq. 2 and Alg. 2): F is
//!   an x0-prediction taken through one DDIM step, A = sigma_t/sigma_s,
//!   B = alpha_t - alpha_s sigma_t/sigma_s, C = 1.
//!
//! - `trigflow` (sCM, Lu & Song 2024, eq. 1 and the DDIM step of Sec. 2): in the TrigFlow
//!   coordinates tau = arctan(rho/sigma_d), x~ = cos(tau) x/alpha (so that
//!   x~ = cos(tau) x0 + sin(tau) sigma_d z), Psi = (alpha_t / cos tau_t)
//!   [cos(tau_s - tau_t) x~_s - sin(tau_s - tau_t) sigma_d F(x~_s / sigma_d, s, t)]: F is the
//!   TrigFlow velocity network on any schedule, and at t = 0 this is sCM's
//!   f = cos(tau) x~ - sin(tau) sigma_d F.
//!
//! For `consistency`, `ctm` and `trigflow` the input is scaled by C = 1/sqrt(alpha_s^2 sigma_d^2 + sigma_s^2),
//! EDM's c_in of x/alpha. At s = t every form gives A = 1 and B = 0 exactly (in floating point
//! too), so Psi_{t->t} is the identity by construction; at s = t with sigma = 0 (where rho_t/rho_s
//! and sigma_t/sigma_s are 0/0) the identity is returned directly.
//!
//! The coefficients are computed on dual numbers, so their derivatives in s and in t (for the
//! JVP of the map) are exact.

use crate::error::{Error, Result};
use crate::schedule::Schedule;
use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    Consistency { sigma_data: f64 },
    Ctm { sigma_data: f64 },
    MeanVelocity,
    Ddim,
    TrigFlow { sigma_data: f64 },
}

pub const NAMES: [&str; 5] = ["consistency", "ctm", "mean-velocity", "ddim", "trigflow"];

impl Param {
    /// `name` with `sigma_data` (used by `consistency` and `ctm`).
    pub fn parse(name: &str, sigma_data: f64) -> Result<Self> {
        if !(sigma_data.is_finite() && sigma_data > 0.0) {
            return Err(Error::Domain(format!(
                "sigma_data must be finite and > 0, got {sigma_data}"
            )));
        }
        Ok(match name {
            "consistency" => Param::Consistency { sigma_data },
            "ctm" => Param::Ctm { sigma_data },
            "mean-velocity" => Param::MeanVelocity,
            "ddim" => Param::Ddim,
            "trigflow" => Param::TrigFlow { sigma_data },
            _ => {
                return Err(Error::Domain(format!(
                    "unknown parameterisation '{name}' (valid: {})",
                    NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Param::Consistency { .. } => "consistency",
            Param::Ctm { .. } => "ctm",
            Param::MeanVelocity => "mean-velocity",
            Param::Ddim => "ddim",
            Param::TrigFlow { .. } => "trigflow",
        }
    }

    pub fn sigma_data(&self) -> Option<f64> {
        match *self {
            Param::Consistency { sigma_data }
            | Param::Ctm { sigma_data }
            | Param::TrigFlow { sigma_data } => Some(sigma_data),
            _ => None,
        }
    }

    /// (A, B, C) at (s, t), each a dual number carrying its derivative along (ds, dt).
    pub fn coefficients_along(
        &self,
        schedule: &dyn Schedule,
        s: f64,
        t: f64,
        ds: f64,
        dt: f64,
    ) -> [Dual; 3] {
        let level = |u: f64, du: f64| {
            let at = schedule.level(u);
            let dsigma = if du == 0.0 { 0.0 } else { at.dsigma * du };
            (
                u,
                Dual::new(at.alpha, at.dalpha * du),
                Dual::new(at.sigma, dsigma),
            )
        };
        let ((s, alpha_s, sigma_s), (t, alpha_t, sigma_t)) = (level(s, ds), level(t, dt));
        let one = Dual::constant(1.0);
        if sigma_s.v == 0.0 {
            return [one, Dual::constant(0.0), one];
        }
        let (rho_s, rho_t) = (sigma_s / alpha_s, sigma_t / alpha_t);
        let c_in = |sd: f64| one / (alpha_s * alpha_s * (sd * sd) + sigma_s * sigma_s).sqrt();
        match *self {
            Param::Consistency { sigma_data: sd } => {
                let gap = rho_s - rho_t;
                let c_skip = Dual::constant(sd * sd) / (gap * gap + sd * sd);
                let c_out = gap * sd / (rho_s * rho_s + sd * sd).sqrt();
                [alpha_t / alpha_s * c_skip, alpha_t * c_out, c_in(sd)]
            }
            Param::Ctm { sigma_data: sd } => {
                let r = rho_t / rho_s;
                let c_skip = Dual::constant(sd * sd) / (rho_s * rho_s + sd * sd);
                let c_out = rho_s * sd / (rho_s * rho_s + sd * sd).sqrt();
                [
                    alpha_t / alpha_s * (r + (one - r) * c_skip),
                    alpha_t * (one - r) * c_out,
                    c_in(sd),
                ]
            }
            Param::MeanVelocity => [one, -(Dual::new(s, ds) - Dual::new(t, dt)), one],
            Param::Ddim => {
                let r = sigma_t / sigma_s;
                [r, alpha_t - alpha_s * r, one]
            }
            Param::TrigFlow { sigma_data: sd } => {
                let tau = |rho: Dual| (rho * (1.0 / sd)).atan();
                let gap = tau(rho_s) - tau(rho_t);
                let scale_t =
                    (alpha_t * alpha_t * (sd * sd) + sigma_t * sigma_t).sqrt() * (1.0 / sd);
                let (c, mut a) = (c_in(sd), scale_t * gap.cos() * c_in(sd) * sd);
                if s == t {
                    a.v = 1.0;
                }
                [a, -(scale_t * gap.sin() * sd), c]
            }
        }
    }

    /// (A, B, C) at (s, t).
    pub fn coefficients(&self, schedule: &dyn Schedule, s: f64, t: f64) -> [f64; 3] {
        self.coefficients_along(schedule, s, t, 0.0, 0.0)
            .map(|c| c.v)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dual number v + d epsilon (epsilon^2 = 0): forward-mode derivatives of the coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
}

impl Dual {
    pub fn new(v: f64, d: f64) -> Self {
        Dual { v, d }
    }
    pub fn constant(v: f64) -> Self {
        Dual { v, d: 0.0 }
    }
    pub fn atan(self) -> Self {
        Dual::new(self.v.atan(), self.d / (1.0 + self.v * self.v))
    }
    pub fn sin(self) -> Self {
        Dual::new(self.v.sin(), self.d * self.v.cos())
    }
    pub fn cos(self) -> Self {
        Dual::new(self.v.cos(), -self.d * self.v.sin())
    }
    pub fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        Dual::new(
            r,
            if self.d == 0.0 {
                0.0
            } else {
                self.d / (2.0 * r)
            },
        )
    }
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual::new(self.v + o.v, self.d + o.d)
    }
}
impl Add<f64> for Dual {
    type Output = Dual;
    fn add(self, o: f64) -> Dual {
        Dual::new(self.v + o, self.d)
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual::new(self.v - o.v, self.d - o.d)
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual::new(-self.v, -self.d)
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual::new(self.v * o.v, self.d * o.v + self.v * o.d)
    }
}
impl Mul<f64> for Dual {
    type Output = Dual;
    fn mul(self, o: f64) -> Dual {
        Dual::new(self.v * o, self.d * o)
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual::new(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
    }
}
