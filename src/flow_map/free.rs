//! Teacher-free flow maps: methods that learn the solution map from data x0 ~ p_0 and noise
//! z ~ N(0, I) alone, by the flow's own identities. Every method builds the rows of one
//! [`super::loss`] regression per step (stop-gradient quantities come from the target copy
//! theta^-: the EMA of the trainer when `--ema` > 0, else the current weights). Times live in a
//! normalised tau in [0, 1] over the training levels, u(tau) = t_N + tau (t_0 - t_N) (tau = 1 the
//! noisiest level); x_u = alpha_u x0 + sigma_u z and its conditional velocity
//! v_u = alpha'_u x0 + sigma'_u z (d/du in the schedule's time). sigma_d is the problem's data
//! scale; constants quoted "at sigma_d = 0.5" are the papers' (CIFAR-10) values, scaled by
//! sigma_d/0.5 here.
//!
//! - `ct`, improved consistency training (Song & Dhariwal 2023, "Improved techniques for
//!   training consistency models", Sec. 3-5; the original CT of Song et al. 2023, Alg. 3, as
//!   options): a Karras grid (rho = 7) of N(k) + 1 noise levels (N(k) intervals) on [sigma_min, sigma_max] =
//!   [0.002, 80] (at sigma_d = 0.5, clipped to the schedule), N(k) = min(s0 2^floor(k/K'), s1),
//!   K' = floor(K/(log2(s1/s0) + 1)), s0 = 10, s1 = 1280 (`curriculum=exp`; `sqrt`: the original
//!   N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1), s0 = 2, s1 = 150); n drawn with
//!   p(n) proportional to erf((ln sigma_{n+1} - P_mean)/(sqrt 2 P_std)) - erf((ln sigma_n -
//!   P_mean)/(sqrt 2 P_std)), P_mean = -1.1, P_std = 2 (`n=lognormal`; `uniform`: the original);
//!   one x0 and one z give both x_{sigma_{n+1}} and x_{sigma_n}; the row is
//!   Psi_theta(x_{sigma_{n+1}}, t_N) - sg Psi_{theta^-}(x_{sigma_n}, t_N) with weight
//!   lambda = 1/(sigma_{n+1} - sigma_n) (`weight=gap`; `one`: the original) and the
//!   pseudo-Huber loss c = 0.00054 sqrt(d) (at sigma_d = 0.5). iCT uses no EMA (theta^- = sg
//!   theta; `--ema` gives the original CT's EMA target). `consistency` parameterisation.
//! - `scm`, continuous-time consistency training (Lu & Song 2024, "Simplifying, stabilizing and
//!   scaling continuous-time consistency models", Alg. 1, eq. 8 with the tangent normalisation
//!   of Sec. 4.2 and the tangent warm-up): TrigFlow, tau = arctan(rho/sigma_d) with rho =
//!   e^{P_mean + P_std N}, (P_mean, P_std) = (-1.0, 1.4) (at sigma_d = 0.5),
//!   x~ = cos(tau) x0 + sin(tau) sigma_d z, dF^-/dtau the JVP of F_{theta^-} along
//!   (dx~/dtau, 1), g = -cos^2(tau) (sigma_d F^- - dx~/dtau) - r cos(tau) sin(tau)
//!   (x~ + sigma_d dF^-/dtau), g <- g/(|g| + c) with c = 0.1, r rising linearly from 0 to 1
//!   over the first `warmup` (fraction, 0.25) of the steps, and the row F_theta - sg(F^- + g)
//!   (l2). The learned adaptive weight e^{w_phi(tau)} of their eq. 8 is not implemented: every
//!   row has weight 1. `trigflow` parameterisation, onto t_N.
//! - `meanflow` (Geng et al. 2025, "Mean flows for one-step generative modeling", eq. 6-10 and
//!   Alg. 1; official code Gsunshine/meanflow): (tau_s, tau_t) the max and min of two
//!   logit-normal(-0.4, 1.0) draws, and the first `diagonal` = 0.75 of the batch set to
//!   tau_t = tau_s (the official code's data_proportion; the paper's text reports the
//!   complement, 25 % with r != t); u_tgt = sg(v - (s - t) du/ds) with du/ds the JVP of
//!   u_{theta^-} along (v, 1, 0); the row u_theta(x_s, s, t) - u_tgt with the adaptive loss
//!   |r|^2 / sg((|r|^2 + 0.01)^1) (norm_p = 1, norm_eps = 0.01). No EMA for the target.
//!   `mean-velocity` parameterisation (u = F).
//! - `shortcut` (Frans et al. 2024, "One step diffusion via shortcut models", eq. 5 and Sec. 4;
//!   official code kvfrans/shortcut-models): M = 128 steps, step sizes d = 2^-k; the first
//!   `bootstrap` = 1/8 of the batch are self-consistency rows: k uniform on 0..log2(M) - 1, full
//!   step D = 2^-k and half step D/2, tau_s = 1 - j D with j uniform on 0..2^k - 1, target
//!   sg((u_1 + u_2)/2) with u_1 = u_{theta^-}(x_s, s, s - D/2), u_2 = u_{theta^-}(x', s - D/2,
//!   s - D) at the half-step point x', clipped to +-`clip` = 4 in units of dx/dtau (as the
//!   official code); the rest are flow-matching rows u_theta(x_s, s, s - d) - v_s on tau_s =
//!   1 - j/M, with d = 1/M as the official code (`flow_d=zero`: d = 0, the paper's eq. 5).
//!   theta^- is the EMA (0.999, the official bootstrap_ema). `mean-velocity` parameterisation.
//! - `lsd`, `esd`, `psd`, flow-map self-distillation (Boffi et al. 2025, "How to build a
//!   consistency model: learning flow maps via self-distillation", the Lagrangian, Eulerian and
//!   progressive losses; their code is not available here, so the pair distribution and the
//!   diagonal fraction are pfode's choices, ablated in the study): the first `diagonal` = 0.5 of
//!   the batch are flow-matching rows u_theta(x_s, s, s) - v_s, the rest (tau_s, tau_t) uniform
//!   pairs; LSD: d/dt Psi_theta(x_s, s, t) - sg u_{theta^-}(Psi^-, t, t) (tangent (0, 0, 1),
//!   the gradient through the JVP); ESD: the derivative of Psi_theta(x_s, s, t) along
//!   (sg u_{theta^-}(x_s, s, s), 1, 0), which is 0 for the exact map (gradient through the JVP);
//!   PSD: Psi_theta(x_s, s, t) - sg Psi^-(Psi^-(x_s, s, m), m, t) with tau_m uniform on
//!   (tau_t, tau_s). l2 loss, `mean-velocity` parameterisation.
//!
//! Pair distributions (`pairs=` for meanflow and the self-distillation losses): `uniform`,
//! `logit-normal` (`mean`, `std`) and `levels` (two distinct levels of the Karras grid).

use super::loss::{Linear, Loss};
use super::net::{eval_rows, Rows, TangentInput};
use super::param::Param;
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::grid::t_of_rho;
use crate::nn::Mlp;
use crate::oracle::Oracle;
use crate::rng::{standard_normal, RowRng};
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::Array2;
use serde::Serialize;
use statrs::function::erf::erf;

/// The time-pair distribution of the anytime methods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Pairs {
    Uniform,
    LogitNormal { mean: f64, std: f64 },
    Levels,
}

/// The options of a teacher-free method (`--method name:key=value,...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Options {
    Ct {
        curriculum: String,
        s0: f64,
        s1: f64,
        n: String,
        mean: f64,
        std: f64,
        weight: String,
        loss: Loss,
    },
    Scm {
        mean: f64,
        std: f64,
        c: f64,
        warmup: f64,
    },
    MeanFlow {
        pairs: Pairs,
        diagonal: f64,
        loss: Loss,
    },
    Shortcut {
        m: usize,
        bootstrap: f64,
        clip: f64,
        flow_d: String,
    },
    SelfDistill {
        /// lsd, esd or psd.
        form: String,
        pairs: Pairs,
        diagonal: f64,
        loss: Loss,
    },
}

fn fraction(spec: &mut Spec, key: &'static str, default: f64) -> Result<f64> {
    let v = spec.take_f64(key, default)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(spec.error(format!("{key} must be in [0, 1], got {v}")));
    }
    Ok(v)
}

fn pairs(spec: &mut Spec, default: &'static str, mean: f64, std: f64) -> Result<Pairs> {
    Ok(
        match spec.take_choice("pairs", default, &["uniform", "logit-normal", "levels"])? {
            "uniform" => Pairs::Uniform,
            "levels" => Pairs::Levels,
            _ => Pairs::LogitNormal {
                mean: spec.take_f64("mean", mean)?,
                std: spec.take_f64("std", std)?,
            },
        },
    )
}

impl Options {
    /// The options of `method` (ct, scm, meanflow, shortcut, lsd, esd, psd) from `spec`, at a
    /// data scale `sigma_data` and dimension `d` (the scaled defaults of the module doc).
    pub fn take(method: &str, spec: &mut Spec, sigma_data: f64, d: usize) -> Result<Options> {
        let scale = sigma_data / 0.5;
        Ok(match method {
            "ct" => {
                let curriculum = spec.take_choice("curriculum", "exp", &["exp", "sqrt"])?;
                let (s0, s1) = if curriculum == "exp" {
                    (10.0, 1280.0)
                } else {
                    (2.0, 150.0)
                };
                Options::Ct {
                    curriculum: curriculum.into(),
                    s0: spec.take_f64("s0", s0)?,
                    s1: spec.take_f64("s1", s1)?,
                    n: spec
                        .take_choice("n", "lognormal", &["lognormal", "uniform"])?
                        .into(),
                    mean: spec.take_f64("mean", -1.1)?,
                    std: spec.take_f64("std", 2.0)?,
                    weight: spec.take_choice("weight", "gap", &["gap", "one"])?.into(),
                    loss: Loss::take(
                        spec,
                        Loss::PseudoHuber {
                            c: 0.00054 * (d as f64).sqrt() * scale,
                        },
                    )?,
                }
            }
            "scm" => Options::Scm {
                mean: spec.take_f64("mean", -1.0)?,
                std: spec.take_f64("std", 1.4)?,
                c: spec.take_f64("c", 0.1)?,
                warmup: fraction(spec, "warmup", 0.25)?,
            },
            "meanflow" => Options::MeanFlow {
                pairs: pairs(spec, "logit-normal", -0.4, 1.0)?,
                diagonal: fraction(spec, "diagonal", 0.75)?,
                loss: Loss::take(spec, Loss::Adaptive { p: 1.0, eps: 0.01 })?,
            },
            "shortcut" => Options::Shortcut {
                m: spec.take("m", 128usize)?,
                bootstrap: fraction(spec, "bootstrap", 0.125)?,
                clip: spec.take_f64("clip", 4.0)?,
                flow_d: spec
                    .take_choice("flow_d", "official", &["official", "zero"])?
                    .into(),
            },
            _ => Options::SelfDistill {
                form: method.into(),
                pairs: pairs(spec, "uniform", 0.0, 1.0)?,
                diagonal: fraction(spec, "diagonal", 0.5)?,
                loss: Loss::take(spec, Loss::L2)?,
            },
        })
    }

    /// The parameterisation a method needs.
    pub fn check_param(&self, method: &str, param: &Param) -> Result<()> {
        let need = match self {
            Options::Ct { .. } => None,
            Options::Scm { .. } => Some("trigflow"),
            _ => Some("mean-velocity"),
        };
        match need {
            Some(p) if p != param.name() => Err(Error::Domain(format!(
                "{method} trains the '{p}' parameterisation, not '{}'",
                param.name()
            ))),
            _ => Ok(()),
        }
    }
}

/// sqrt(tr Cov(p_0) / d) of a mixture: sum_k w_k (|mu_k - mu|^2 + tr Sigma_k) / d.
pub fn data_scale(mixture: &GaussianMixture) -> f64 {
    let d = mixture.dim();
    let w = mixture.weights();
    let mean = (0..w.len()).fold(ndarray::Array1::<f64>::zeros(d), |m, k| {
        m + &mixture.mean(k) * w[k]
    });
    let total: f64 = (0..w.len())
        .map(|k| {
            let c = mixture.component(k);
            w[k] * ((&c.mean - &mean).mapv(|v| v * v).sum() + c.l.sum())
        })
        .sum();
    (total / d as f64).sqrt()
}

/// What a method's rows are built from.
pub struct Context<'a> {
    pub options: &'a Options,
    pub param: Param,
    pub mixture: &'a GaussianMixture,
    pub schedule: &'a dyn Schedule,
    pub levels: &'a [f64],
    pub sigma_data: f64,
    /// The step and the number of steps (curricula and warm-ups).
    pub k: usize,
    pub steps: usize,
}

/// One step's rows, the loss, and the RMS of the JVP taken (if any).
pub struct Batch {
    pub rows: Linear,
    pub loss: Loss,
    pub jvp_rms: Option<f64>,
}

/// The network output F at per-row (s, t).
fn net_out(ctx: &Context, net: &Mlp, x: &Array2<f64>, s: &[f64], t: &[f64]) -> Array2<f64> {
    let rows = Rows::new(&ctx.param, net, ctx.schedule, s, t);
    net.forward(rows.input(net, x.view()), None)
}

fn rms(a: &Array2<f64>) -> f64 {
    (a.iter().map(|v| v * v).sum::<f64>() / a.len().max(1) as f64).sqrt()
}

/// Data and noise of a batch: x0 ~ p_0 (the step's seed), z (stream 13), and per-row
/// generators (stream 12) for the times.
struct Draw {
    x0: Array2<f64>,
    z: Array2<f64>,
    rng: Vec<RowRng>,
}

impl Context<'_> {
    fn time(&self, tau: f64) -> f64 {
        let (hi, lo) = (self.levels[0], self.levels[self.levels.len() - 1]);
        (lo + tau * (hi - lo)).clamp(lo, hi)
    }

    fn draw(&self, n: usize, seed: u64) -> Draw {
        Draw {
            x0: self.mixture.sample_p0(n, seed),
            z: standard_normal(n, self.mixture.dim(), seed, 13),
            rng: (0..n).map(|r| RowRng::new(seed, 12, r as u64)).collect(),
        }
    }

    /// x_u and v_u of every row at its own time.
    fn point(&self, draw: &Draw, s: &[f64]) -> (Array2<f64>, Array2<f64>) {
        let (mut x, mut v) = (draw.x0.clone(), draw.x0.clone());
        for (r, &u) in s.iter().enumerate() {
            let at = self.schedule.level(u);
            let (x0, z) = (draw.x0.row(r), draw.z.row(r));
            x.row_mut(r).assign(&(&x0 * at.alpha + &z * at.sigma));
            v.row_mut(r).assign(&(&x0 * at.dalpha + &z * at.dsigma));
        }
        (x, v)
    }

    fn pair(&self, pairs: Pairs, rng: &mut RowRng) -> (f64, f64) {
        let (a, b) = match pairs {
            Pairs::Uniform => (rng.uniform(), rng.uniform()),
            Pairs::LogitNormal { mean, std } => {
                let mut l = || 1.0 / (1.0 + (-(mean + std * rng.normal())).exp());
                (l(), l())
            }
            Pairs::Levels => {
                let n = self.levels.len();
                let i = ((rng.uniform() * n as f64) as usize).min(n - 1);
                let mut j = ((rng.uniform() * (n - 1) as f64) as usize).min(n - 2);
                j += (j >= i) as usize;
                let tau = |i: usize| 1.0 - i as f64 / (n - 1) as f64;
                (tau(i), tau(j))
            }
        };
        (a.max(b), a.min(b))
    }

    fn t_end(&self, n: usize) -> Vec<f64> {
        vec![self.levels[self.levels.len() - 1]; n]
    }

    /// The rows of step `k` from the step's seed.
    pub fn batch(&self, net: &Mlp, target: &Mlp, n: usize, seed: u64) -> Result<Batch> {
        let draw = self.draw(n, seed);
        match self.options {
            Options::Ct { .. } => self.ct(target, draw),
            Options::Scm { .. } => self.scm(target, draw),
            Options::MeanFlow { .. } => self.meanflow(target, draw),
            Options::Shortcut { .. } => self.shortcut(target, draw),
            Options::SelfDistill { .. } => self.self_distill(net, target, draw),
        }
    }

    /// iCT's N(k) (intervals) and the Karras noise levels sigma_0 < ... < sigma_N.
    pub fn ct_grid(&self) -> Vec<f64> {
        let Options::Ct {
            curriculum, s0, s1, ..
        } = self.options
        else {
            unreachable!()
        };
        let (k, big_k) = (self.k as f64, self.steps.max(1) as f64);
        let n = if curriculum == "exp" {
            let k_prime = (big_k / ((s1 / s0).log2() + 1.0)).floor().max(1.0);
            (s0 * 2f64.powf((k / k_prime).floor())).min(*s1)
        } else {
            ((k / big_k * ((s1 + 1.0).powi(2) - s0 * s0) + s0 * s0).sqrt() - 1.0).ceil()
        }
        .max(1.0) as usize;
        let scale = self.sigma_data / 0.5;
        let at = self.schedule.level(self.levels[0]);
        let sigma_max = (80.0 * scale).min(at.sigma / at.alpha);
        let sigma_min = (0.002 * scale).min(sigma_max / 2.0);
        let (lo, hi) = (sigma_min.powf(1.0 / 7.0), sigma_max.powf(1.0 / 7.0));
        (0..=n)
            .map(|i| (lo + i as f64 / n as f64 * (hi - lo)).powi(7))
            .collect()
    }

    fn ct(&self, target: &Mlp, mut draw: Draw) -> Result<Batch> {
        let Options::Ct {
            n: dist,
            mean,
            std,
            weight,
            loss,
            ..
        } = self.options
        else {
            unreachable!()
        };
        let sigma = self.ct_grid();
        let cdf: Vec<f64> = sigma
            .iter()
            .map(|s| erf((s.ln() - mean) / (std::f64::consts::SQRT_2 * std)))
            .collect();
        let p: Vec<f64> = (0..sigma.len() - 1)
            .map(|i| match dist.as_str() {
                "uniform" => 1.0,
                _ => cdf[i + 1] - cdf[i],
            })
            .collect();
        let total: f64 = p.iter().sum();
        let rows = draw.x0.nrows();
        let (mut s_lo, mut s_hi, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for rng in &mut draw.rng {
            let mut u = rng.uniform() * total;
            let mut i = 0;
            while i + 1 < p.len() && u >= p[i] {
                u -= p[i];
                i += 1;
            }
            s_lo.push(t_of_rho(self.schedule, sigma[i])?);
            s_hi.push(t_of_rho(self.schedule, sigma[i + 1])?);
            w.push(match weight.as_str() {
                "gap" => 1.0 / (sigma[i + 1] - sigma[i]),
                _ => 1.0,
            });
        }
        let t = self.t_end(rows);
        let (x_lo, _) = self.point(&draw, &s_lo);
        let (x_hi, _) = self.point(&draw, &s_hi);
        let y = eval_rows(&self.param, target, self.schedule, x_lo.view(), &s_lo, &t);
        let rows = Linear::map_space(&self.param, self.schedule, x_hi, s_hi, t, y, w);
        Ok(Batch {
            rows,
            loss: *loss,
            jvp_rms: None,
        })
    }

    fn scm(&self, target: &Mlp, mut draw: Draw) -> Result<Batch> {
        let Options::Scm {
            mean,
            std,
            c,
            warmup,
        } = *self.options
        else {
            unreachable!()
        };
        let sd = self.sigma_data;
        let n = draw.x0.nrows();
        let (hi, lo) = (self.levels[0], self.levels[self.levels.len() - 1]);
        let mut s = Vec::with_capacity(n);
        for rng in &mut draw.rng {
            let rho = (mean + std * rng.normal()).exp() * sd / 0.5;
            s.push(t_of_rho(self.schedule, rho)?.clamp(lo, hi));
        }
        let (x, v) = self.point(&draw, &s);
        let (mut dx, mut ds, mut tau) = (v, Vec::with_capacity(n), Vec::with_capacity(n));
        for (r, &u) in s.iter().enumerate() {
            let at = self.schedule.level(u);
            let rho = at.sigma / at.alpha;
            let drho = (at.dsigma * at.alpha - at.sigma * at.dalpha) / (at.alpha * at.alpha);
            let angle = (rho / sd).atan();
            let dsdtau = sd / (angle.cos().powi(2) * drho);
            dx.row_mut(r).mapv_inplace(|v| v * dsdtau);
            ds.push(dsdtau);
            tau.push(angle);
        }
        let t = self.t_end(n);
        let dt = vec![0.0; n];
        let input = TangentInput::new(
            &self.param,
            target,
            self.schedule,
            x.view(),
            &s,
            &t,
            (dx.view(), &ds, &dt),
        );
        let (f, df) = target.forward_tangent(input.h0, input.dh0);
        let ramp = if warmup > 0.0 {
            (self.k as f64 / (warmup * self.steps as f64)).min(1.0)
        } else {
            1.0
        };
        let mut y = f.clone();
        for (r, angle) in tau.iter().enumerate() {
            let (cos, sin) = (angle.cos(), angle.sin());
            let (x0, z) = (draw.x0.row(r), draw.z.row(r));
            let xt = &x0 * cos + &z * (sin * sd);
            let dxt = &z * (cos * sd) - &x0 * sin;
            let g = (&dxt - &(&f.row(r) * sd)) * (cos * cos)
                - (&xt + &(&df.row(r) * sd)) * (ramp * cos * sin);
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            y.row_mut(r).scaled_add(1.0 / (norm + c), &g);
        }
        Ok(Batch {
            rows: Linear::net_space(x, s, t, y, vec![1.0; n]),
            loss: Loss::L2,
            jvp_rms: Some(rms(&df)),
        })
    }

    /// (s, t) of each row: the first round(`diagonal` n) rows on the diagonal.
    fn pairs_of(&self, pairs: Pairs, diagonal: f64, draw: &mut Draw) -> (Vec<f64>, Vec<f64>) {
        let n = draw.rng.len();
        let on = (diagonal * n as f64).round() as usize;
        let (mut s, mut t) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (r, rng) in draw.rng.iter_mut().enumerate() {
            let (a, b) = self.pair(pairs, rng);
            s.push(self.time(a));
            t.push(if r < on { self.time(a) } else { self.time(b) });
        }
        (s, t)
    }

    fn meanflow(&self, target: &Mlp, mut draw: Draw) -> Result<Batch> {
        let Options::MeanFlow {
            pairs,
            diagonal,
            loss,
        } = *self.options
        else {
            unreachable!()
        };
        let (s, t) = self.pairs_of(pairs, diagonal, &mut draw);
        let n = s.len();
        let (x, v) = self.point(&draw, &s);
        let (ones, zeros) = (vec![1.0; n], vec![0.0; n]);
        let input = TangentInput::new(
            &self.param,
            target,
            self.schedule,
            x.view(),
            &s,
            &t,
            (v.view(), &ones, &zeros),
        );
        let (_, du) = target.forward_tangent(input.h0, input.dh0);
        let mut y = v;
        for r in 0..n {
            y.row_mut(r).scaled_add(-(s[r] - t[r]), &du.row(r));
        }
        Ok(Batch {
            rows: Linear::net_space(x, s, t, y, ones),
            loss,
            jvp_rms: Some(rms(&du)),
        })
    }

    fn shortcut(&self, target: &Mlp, mut draw: Draw) -> Result<Batch> {
        let Options::Shortcut {
            m,
            bootstrap,
            clip,
            ref flow_d,
        } = *self.options
        else {
            unreachable!()
        };
        let n = draw.rng.len();
        let n_boot = (bootstrap * n as f64).round() as usize;
        let log_m = (m as f64).log2().floor().max(1.0) as usize;
        let (mut s, mut mid, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for (r, rng) in draw.rng.iter_mut().enumerate() {
            if r < n_boot {
                let k = ((rng.uniform() * log_m as f64) as usize).min(log_m - 1);
                let sections = 1usize << k;
                let j = ((rng.uniform() * sections as f64) as usize).min(sections - 1);
                let full = 1.0 / sections as f64;
                let tau = 1.0 - j as f64 * full;
                s.push(self.time(tau));
                mid.push(self.time(tau - full / 2.0));
                t.push(self.time(tau - full));
            } else {
                let j = ((rng.uniform() * m as f64) as usize).min(m - 1);
                let tau = 1.0 - j as f64 / m as f64;
                let d = if flow_d == "zero" {
                    0.0
                } else {
                    1.0 / m as f64
                };
                s.push(self.time(tau));
                mid.push(self.time(tau));
                t.push(self.time(tau - d));
            }
        }
        let (x, v) = self.point(&draw, &s);
        let mut y = v;
        if n_boot > 0 {
            let b = 0..n_boot;
            let xb = x.slice(ndarray::s![b.clone(), ..]).to_owned();
            let u1 = net_out(self, target, &xb, &s[b.clone()], &mid[b.clone()]);
            let mut xm = xb.clone();
            for r in b.clone() {
                xm.row_mut(r).scaled_add(-(s[r] - mid[r]), &u1.row(r));
            }
            let u2 = net_out(self, target, &xm, &mid[b.clone()], &t[b]);
            let range = self.levels[0] - self.levels[self.levels.len() - 1];
            let bound = clip / range;
            let avg = ((u1 + u2) * 0.5).mapv(|u| u.clamp(-bound, bound));
            y.slice_mut(ndarray::s![0..n_boot, ..]).assign(&avg);
        }
        Ok(Batch {
            rows: Linear::net_space(x, s, t, y, vec![1.0; n]),
            loss: Loss::L2,
            jvp_rms: None,
        })
    }

    fn self_distill(&self, net: &Mlp, target: &Mlp, mut draw: Draw) -> Result<Batch> {
        let Options::SelfDistill {
            ref form,
            pairs,
            diagonal,
            loss,
        } = *self.options
        else {
            unreachable!()
        };
        let method = form.as_str();
        let (s, t) = self.pairs_of(pairs, diagonal, &mut draw);
        let n = s.len();
        let on = (diagonal * n as f64).round() as usize;
        let (x, v) = self.point(&draw, &s);
        let w = vec![1.0; n];
        let (mut rows, jvp) = match method {
            "psd" => {
                let m: Vec<f64> = (0..n)
                    .map(|r| t[r] + draw.rng[r].uniform() * (s[r] - t[r]))
                    .collect();
                let half = eval_rows(&self.param, target, self.schedule, x.view(), &s, &m);
                let y = eval_rows(&self.param, target, self.schedule, half.view(), &m, &t);
                let rows = Linear::map_space(
                    &self.param,
                    self.schedule,
                    x.clone(),
                    s.clone(),
                    t.clone(),
                    y,
                    w,
                );
                (rows, None)
            }
            _ => {
                let (dx, ds, dt, y) = if method == "lsd" {
                    let psi = eval_rows(&self.param, target, self.schedule, x.view(), &s, &t);
                    let y = net_out(self, target, &psi, &t, &t);
                    (Array2::zeros(x.dim()), vec![0.0; n], vec![1.0; n], y)
                } else {
                    let b = net_out(self, target, &x, &s, &s);
                    (b, vec![1.0; n], vec![0.0; n], Array2::zeros(x.dim()))
                };
                // The JVP norm over the last (off-diagonal) 64 rows of the batch.
                let probe = n - n.min(64);
                let sub = |a: &Array2<f64>| a.slice(ndarray::s![probe.., ..]).to_owned();
                let jvp = super::net::jvp_rows(
                    &self.param,
                    net,
                    self.schedule,
                    sub(&x).view(),
                    &s[probe..],
                    &t[probe..],
                    sub(&dx).view(),
                    &ds[probe..],
                    &dt[probe..],
                );
                let rows = Linear::tangent_space(
                    &self.param,
                    self.schedule,
                    x.clone(),
                    s.clone(),
                    t.clone(),
                    (dx, ds, dt),
                    y,
                    w,
                );
                (rows, Some(rms(&jvp.dpsi)))
            }
        };
        for r in 0..on {
            rows.set_net_row(r, v.row(r));
        }
        Ok(Batch {
            rows,
            loss,
            jvp_rms: jvp,
        })
    }
}
