//! Your pipeline's scheduler, exactly: a diffusers `scheduler_config.json` replayed in float64.
//!
//! A diffusers pipeline samples with
//!
//! ```text
//! scheduler.set_timesteps(n); x = latents * scheduler.init_noise_sigma
//! for t in scheduler.timesteps:
//!     out = model(scheduler.scale_model_input(x, t), t)
//!     x = scheduler.step(out, t, x).prev_sample
//! ```
//!
//! [`Scheduler`] is that loop for the classes of [`Class`]: [`config`] reads and checks the file,
//! [`timesteps`] computes `set_timesteps` as diffusers does (spacing, `steps_offset`, Karras /
//! exponential / beta sigmas, Lu's lambdas, `final_sigmas_type`, `lambda_min_clipped`, Heun's
//! doubled timesteps), and each class steps as it does in diffusers 0.42.1 ([`steps`]), on
//! pfode's shared machinery (the phi-functions, the multistep and UniPC weights, the Adams
//! quadratures). Diffusers computes in float32 in places: its betas and alphas_cumprod
//! (`dtype=torch.float32`), `sigmas.astype(np.float32)` in every `set_timesteps`, the float32
//! timesteps of the Euler, Heun and LMS schedulers, and `sample.to(torch.float32)` inside
//! `step()` of the DPM-Solver and Euler schedulers; pfode computes all of it in float64 (its
//! fixtures are diffusers with those casts patched to float64).
//!
//! The model is called at timestep tau with the noise level of the training schedule there: the
//! config's betas as a [`crate::schedule::Discrete`] schedule (`vp-discrete` with diffusers'
//! interpolation, `interp=log_sigma,clip=false,zero=true`), at t = (tau + 1)/N; a fractional tau
//! (Euler, Heun, LMS) has ln(sigma/alpha) linear between timesteps, the inverse of diffusers'
//! `_sigma_to_t`. The arithmetic of a step uses the scheduler's own sigma array, which need not
//! be the level of the model's timestep: DPM-Solver's Karras sigmas call the model at the rounded
//! timestep, DDIM lands on t - N/n while the next call is at the next timestep, and the linear
//! interpolation of sigma at a fractional timestep differs from its log-linear level. pfode
//! reproduces each mismatch; `sample --explain` lists them.

pub mod config;
mod explain;
mod steps;
pub mod timesteps;

pub use config::{Class, Config};
pub use explain::{Equivalent, Explanation};
pub use timesteps::Plan;

use crate::error::{Error, Result};
use crate::oracle::Oracle;
use crate::prediction::{self, Prediction};
use crate::schedule::{Discrete, NoiseLevel, Schedule, Vp};
use crate::solver::sde::Noise;
use crate::solver::{all_finite, ensure, Model};
use ndarray::{Array2, ArrayView2, Zip};

/// A config with its training schedule and the plan of one run of n steps.
pub struct Scheduler {
    pub config: Config,
    /// The training schedule (model-call levels).
    schedule: Vp<Discrete>,
    /// alphas_cumprod of the N training timesteps.
    pub alphas_cumprod: Vec<f64>,
    pub plan: Plan,
    pub steps: usize,
    /// DDIM's `eta` (a pipeline argument, not a config key).
    pub eta: f64,
}

/// One model call: the diffusers timestep, and the noise level the model sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub timestep: f64,
    pub level: NoiseLevel,
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The scheduler's final sample (VE coordinates x/alpha for the VE classes).
    pub x: Array2<f64>,
    pub calls: Vec<Call>,
}

/// sigma/alpha as the schedule's time, alpha = 1/sqrt(1 + t^2), sigma = t alpha: the levels of a
/// scheduler's `sigmas`, as diffusers' `_sigma_to_alpha_sigma_t` makes them.
#[derive(Debug)]
pub(crate) struct Rho;

impl Schedule for Rho {
    fn spec(&self) -> String {
        "sigma/alpha".into()
    }
    fn t_min(&self) -> f64 {
        0.0
    }
    fn t_max(&self) -> f64 {
        f64::INFINITY
    }
    fn alpha(&self, t: f64) -> f64 {
        1.0 / (t * t + 1.0).sqrt()
    }
    fn sigma(&self, t: f64) -> f64 {
        t * self.alpha(t)
    }
    fn dalpha(&self, t: f64) -> f64 {
        -t * self.alpha(t).powi(3)
    }
    fn dsigma(&self, t: f64) -> f64 {
        self.alpha(t).powi(3)
    }
    fn lambda(&self, t: f64) -> f64 {
        self.alpha(t).ln() - self.sigma(t).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

impl Scheduler {
    /// The scheduler of `config` set to `steps` inference steps; `eta` is DDIM's (0 elsewhere).
    pub fn new(config: Config, steps: usize, eta: f64) -> Result<Self> {
        if eta != 0.0 && config.class != Class::Ddim {
            return Err(Error::invalid(
                &config.source,
                None,
                format!("eta applies to DDIMScheduler, not {}", config.class.name()),
            ));
        }
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::invalid(
                "--eta",
                None,
                format!("{eta} is not in [0, 1]"),
            ));
        }
        let discrete = Discrete::new(config.schedule.clone())
            .map_err(|e| Error::invalid(&config.source, None, e.to_string()))?;
        let alphas_cumprod = config.schedule.alphas_cumprod();
        let plan = timesteps::plan(&config, &alphas_cumprod, steps)?;
        Ok(Scheduler {
            config,
            schedule: Vp(discrete),
            alphas_cumprod,
            plan,
            steps,
            eta,
        })
    }

    /// The training schedule: the config's betas as a `vp-discrete` schedule.
    pub fn schedule(&self) -> &dyn Schedule {
        &self.schedule
    }

    /// The training schedule's knots (alphas_cumprod, the time of a timestep).
    pub fn discrete(&self) -> &Discrete {
        &self.schedule.0
    }

    /// The pfode time t of diffusers timestep tau (for `timestep_type="continuous"`, tau is
    /// 0.25 ln sigma).
    pub fn time_of(&self, tau: f64) -> f64 {
        if self.config.continuous {
            self.schedule.t_of_lambda(-4.0 * tau)
        } else {
            self.schedule.0.time_of_timestep(tau)
        }
    }

    /// The noise level the model sees at timestep tau.
    pub fn call_level(&self, tau: f64) -> NoiseLevel {
        let mut level = self.schedule.level(self.time_of(tau));
        if self.config.continuous {
            let s = (4.0 * tau).exp();
            level.alpha = 1.0 / (s * s + 1.0).sqrt();
            level.sigma = s * level.alpha;
        }
        level
    }

    /// pfode times of the scheduler's sigmas (the steps' levels), for noise sources.
    pub fn times(&self) -> Vec<f64> {
        self.plan
            .sigmas
            .iter()
            .map(|&s| match s {
                0.0 => 0.0,
                s => self.schedule.t_of_lambda(-s.ln()),
            })
            .collect()
    }

    /// The number of model calls (NFE).
    pub fn nfe(&self) -> usize {
        self.plan.timesteps.len()
    }

    /// Runs the pipeline loop from unit-normal latents `latents` (multiplied by
    /// `init_noise_sigma`) with `oracle` as the model; stochastic classes draw from `noise`.
    pub fn replay(
        &self,
        oracle: &dyn Oracle,
        latents: ArrayView2<f64>,
        noise: &mut dyn Noise,
    ) -> Result<Replay> {
        if latents.ncols() != oracle.dim() {
            return Err(Error::Dimension(format!(
                "the model has dimension {} but the latents have {} columns",
                oracle.dim(),
                latents.ncols()
            )));
        }
        let mut x = latents.mapv(|v| v * self.plan.init_noise_sigma);
        let mut stepper = steps::Stepper::new(self);
        let (mut x_in, mut out) = (Array2::zeros(x.dim()), Array2::zeros(x.dim()));
        let mut calls = Vec::with_capacity(self.nfe());
        let times = self.times();
        let model = Model::new(oracle, &Rho);
        for (i, &tau) in self.plan.timesteps.iter().enumerate() {
            let level = self.call_level(tau);
            let scale = if self.config.class.ve() {
                let s = self.plan.sigmas[i];
                1.0 / (s * s + 1.0).sqrt()
            } else {
                1.0
            };
            Zip::from(&mut x_in)
                .and(&x)
                .for_each(|a, &b| *a = b * scale);
            ensure(&mut out, x.dim());
            oracle.predict(self.config.prediction, x_in.view(), &level, out.view_mut())?;
            calls.push(Call {
                timestep: tau,
                level,
            });
            if !all_finite(&out) {
                return Err(Error::Domain(format!(
                    "the model returned a non-finite {} prediction at timestep {tau}",
                    self.config.prediction
                )));
            }
            stepper.step(i, &mut out, &mut x, noise, &times, &model)?;
            if !all_finite(&x) {
                return Err(Error::Domain(format!(
                    "{}: step {i} of {} (timestep {tau}) made the sample non-finite",
                    self.config.class.name(),
                    self.nfe()
                )));
            }
        }
        Ok(Replay { x, calls })
    }
}

/// The x0 a model output `out` of type `p` implies at VP level `level` for the sample `x` in VP
/// coordinates scaled by `scale` (1; alpha for a VE sample x/alpha), in place.
pub(crate) fn to_x0(
    p: Prediction,
    out: &mut Array2<f64>,
    x: &Array2<f64>,
    level: &NoiseLevel,
    scale: f64,
) -> Result<()> {
    let (a, b) = prediction::conversion(p, Prediction::X0, level)?;
    let a = a * scale;
    Zip::from(out).and(x).for_each(|o, &x| *o = a * x + b * *o);
    Ok(())
}

/// Imagen's dynamic thresholding (diffusers' `_threshold_sample`): per row, s = the `ratio`
/// quantile of |x0| (torch.quantile's linear interpolation) clamped to [1, max], then x0
/// clamped to [-s, s] and divided by s.
pub(crate) fn threshold(x0: &mut Array2<f64>, ratio: f64, max: f64) {
    let d = x0.ncols();
    for mut row in x0.rows_mut() {
        let mut v: Vec<f64> = row.iter().map(|a| a.abs()).collect();
        v.sort_by(f64::total_cmp);
        let rank = ratio * (d - 1) as f64;
        let below = rank.floor();
        let (lo, hi) = (v[below as usize], v[(rank.ceil() as usize).min(d - 1)]);
        let w = rank - below;
        let q = if w < 0.5 {
            lo + w * (hi - lo)
        } else {
            hi - (hi - lo) * (1.0 - w)
        };
        let s = q.max(1.0).min(max);
        row.mapv_inplace(|a| a.clamp(-s, s) / s);
    }
}
