//! The convention study: what each diffusers convention choice costs, one at a time, at equal NFE.
//!
//! A unit is one variant of one convention (a diffusers `scheduler_config.json`, replayed by
//! [`crate::diffusers`], or `official:SOLVER`, the official implementation of the same solver as
//! pfode runs it: `vp-discrete` with the official DPM-Solver interpolation, a `time-uniform` grid
//! from t = 1 to t = 1/N, the official `lower_order_final`) on one problem and training schedule
//! (`scaled_linear` as Stable Diffusion, or DDPM's `linear`). The latents are the same seeded unit
//! normals for every variant of a problem (common random numbers). Each NFE target runs the
//! scheduler with that many model calls and measures:
//!
//! - the per-sample error against the exact PF-ODE solution from the run's own start (the
//!   latents times `init_noise_sigma` at the level of its first sigma) to sigma = 0, the clean
//!   sample the pipeline should deliver (closed form on gauss4; DOP853 at rtol = atol = 1e-10
//!   otherwise): RMS, median and max of |x - x_exact|;
//! - on gauss4, where every run here is an affine map of the latents, the exact law of the
//!   output (d + 1 probe runs) and its W2 and KL to p_0: the whole pipeline's error, including a
//!   start below sigma_max and the unit-normal latents that are not exactly p_T.
//!
//! A convention group has one base variant; the summary gives, for every other variant, the ratio
//! of its RMS error to the base's at each NFE (median and range over problems and schedules), the
//! ratio of W2 on gauss4, and the largest NFE at which the median ratio is outside [0.9, 1.11].

use super::{
    bad_option, check_nfe_targets, require_nonempty, seed_for, GroupCache, Keyed, Study, Unit,
};
use crate::diffusers::{Config as SchedulerConfig, Rho, Scheduler};
use crate::error::{Error, Result};
use crate::gaussian_flow::GaussianFlow;
use crate::grid::Grid;
use crate::metrics::GaussianLaw;
use crate::problems;
use crate::schedule::{self, NoiseLevel};
use crate::solver::{self, sde::Brownian, Env, Model};
use crate::{Counted, GaussianMixture, Oracle};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One variant of a convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// The convention, e.g. `timestep_spacing`.
    pub group: String,
    /// The choice, e.g. `leading`.
    pub label: String,
    /// A diffusers config (JSON, without the betas) or `official:SOLVER`.
    pub config: String,
    /// The group's reference choice.
    pub base: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    /// Training betas: `scaled_linear` (0.00085..0.012) or `linear` (1e-4..0.02).
    pub betas: Vec<String>,
    pub nfe: Vec<usize>,
    pub samples: usize,
    pub seed: u64,
    pub reference: String,
    pub variants: Vec<Variant>,
}

fn variant(group: &str, label: &str, config: &str, base: bool) -> Variant {
    Variant {
        group: group.into(),
        label: label.into(),
        config: config.into(),
        base,
    }
}

impl Config {
    /// The committed study: gauss4, ring2d, aniso16 on both training schedules, NFE 5-50, 2000
    /// samples, seed 1, and the conventions of [`Config::variants`].
    pub fn main() -> Self {
        Config {
            problems: vec!["gauss4".into(), "ring2d".into(), "aniso16".into()],
            betas: vec!["scaled_linear".into(), "linear".into()],
            nfe: vec![5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50],
            samples: 2000,
            seed: 1,
            reference: "reference:rtol=1e-10,atol=1e-10".into(),
            variants: Config::variants(),
        }
    }

    /// One convention at a time, each against its base (the class's default where it has one).
    pub fn variants() -> Vec<Variant> {
        let dpm = r#""_class_name": "DPMSolverMultistepScheduler""#;
        let ddim =
            r#""_class_name": "DDIMScheduler", "clip_sample": false, "set_alpha_to_one": false"#;
        let euler = r#""_class_name": "EulerDiscreteScheduler""#;
        let unipc = r#""_class_name": "UniPCMultistepScheduler""#;
        let j = |body: &str| format!("{{{body}}}");
        vec![
            variant("timestep_spacing", "linspace", &j(dpm), true),
            variant(
                "timestep_spacing",
                "leading",
                &j(&format!(
                    r#"{dpm}, "timestep_spacing": "leading", "steps_offset": 1"#
                )),
                false,
            ),
            variant(
                "timestep_spacing",
                "trailing",
                &j(&format!(r#"{dpm}, "timestep_spacing": "trailing""#)),
                false,
            ),
            variant(
                "timestep_spacing (DDIM)",
                "leading",
                &j(&format!(r#"{ddim}, "steps_offset": 1"#)),
                true,
            ),
            variant(
                "timestep_spacing (DDIM)",
                "trailing",
                &j(&format!(r#"{ddim}, "timestep_spacing": "trailing""#)),
                false,
            ),
            variant(
                "timestep_spacing (DDIM)",
                "linspace",
                &j(&format!(r#"{ddim}, "timestep_spacing": "linspace""#)),
                false,
            ),
            variant(
                "set_alpha_to_one (DDIM)",
                "false",
                &j(&format!(r#"{ddim}, "steps_offset": 1"#)),
                true,
            ),
            variant(
                "set_alpha_to_one (DDIM)",
                "true",
                &j(&format!(
                    r#"{ddim}, "steps_offset": 1, "set_alpha_to_one": true"#
                )),
                false,
            ),
            variant("final_sigmas_type", "zero", &j(dpm), true),
            variant(
                "final_sigmas_type",
                "sigma_min",
                &j(&format!(r#"{dpm}, "final_sigmas_type": "sigma_min""#)),
                false,
            ),
            variant(
                "lower_order_final (3M)",
                "true",
                &j(&format!(r#"{dpm}, "solver_order": 3"#)),
                true,
            ),
            variant(
                "lower_order_final (3M)",
                "false",
                &j(&format!(
                    r#"{dpm}, "solver_order": 3, "lower_order_final": false"#
                )),
                false,
            ),
            variant("sigmas", "default", &j(dpm), true),
            variant(
                "sigmas",
                "karras",
                &j(&format!(r#"{dpm}, "use_karras_sigmas": true"#)),
                false,
            ),
            variant(
                "sigmas",
                "exponential",
                &j(&format!(r#"{dpm}, "use_exponential_sigmas": true"#)),
                false,
            ),
            variant(
                "sigmas",
                "beta",
                &j(&format!(r#"{dpm}, "use_beta_sigmas": true"#)),
                false,
            ),
            variant(
                "sigmas",
                "lu_lambdas",
                &j(&format!(r#"{dpm}, "use_lu_lambdas": true"#)),
                false,
            ),
            variant("sigmas (Euler)", "default", &j(euler), true),
            variant(
                "sigmas (Euler)",
                "karras",
                &j(&format!(r#"{euler}, "use_karras_sigmas": true"#)),
                false,
            ),
            variant(
                "euler_at_final (sigma_min)",
                "false",
                &j(&format!(
                    r#"{dpm}, "final_sigmas_type": "sigma_min", "lower_order_final": false"#
                )),
                true,
            ),
            variant(
                "euler_at_final (sigma_min)",
                "true",
                &j(&format!(
                    r#"{dpm}, "final_sigmas_type": "sigma_min", "lower_order_final": false, "euler_at_final": true"#
                )),
                false,
            ),
            variant(
                "implementation (DPM-Solver++ 2M)",
                "diffusers",
                &j(dpm),
                true,
            ),
            variant(
                "implementation (DPM-Solver++ 2M)",
                "official",
                "official:dpm-solver++:order=2",
                false,
            ),
            variant(
                "implementation (UniPC-2 bh2)",
                "diffusers",
                &j(&format!(r#"{unipc}, "solver_order": 2"#)),
                true,
            ),
            variant(
                "implementation (UniPC-2 bh2)",
                "official",
                "official:unipc:order=2,variant=bh2",
                false,
            ),
            variant(
                "rescale_betas_zero_snr (v, trailing)",
                "false",
                &j(&format!(
                    r#"{dpm}, "prediction_type": "v_prediction", "timestep_spacing": "trailing""#
                )),
                true,
            ),
            variant(
                "rescale_betas_zero_snr (v, trailing)",
                "true",
                &j(&format!(
                    r#"{dpm}, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": true"#
                )),
                false,
            ),
        ]
    }
}

/// `(beta_schedule, beta_start, beta_end)` of a `betas` entry.
fn betas(name: &str) -> Result<(&'static str, f64, f64)> {
    match name {
        "scaled_linear" => Ok(("scaled_linear", 0.00085, 0.012)),
        "linear" => Ok(("linear", 1e-4, 0.02)),
        other => Err(bad_option(
            "conventions",
            "betas",
            format!("unknown '{other}' (valid: scaled_linear, linear)"),
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub problem: String,
    pub betas: String,
}

impl Keyed for Group {
    fn key(&self) -> &str {
        &self.key
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The unit: problem|betas|convention|choice.
    pub unit: String,
    pub problem: String,
    pub betas: String,
    pub group: String,
    pub label: String,
    pub steps: usize,
    pub nfe: usize,
    /// The first sigma/alpha of the run (where sampling starts).
    pub sigma_start: f64,
    /// The last sigma/alpha (0: denoised to the clean sample).
    pub sigma_end: f64,
    pub err_rms: f64,
    pub err_median: f64,
    pub err_max: f64,
    /// gauss4: W2 and KL of the output law to p_0.
    pub w2: Option<f64>,
    pub kl: Option<f64>,
}

impl Keyed for Point {
    fn key(&self) -> &str {
        &self.unit
    }
}

/// One convention flip against its base.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flip {
    pub group: String,
    pub base: String,
    pub label: String,
    pub nfe: Vec<usize>,
    /// Median over problems and schedules of err_rms(variant) / err_rms(base) at each NFE.
    pub ratio: Vec<Option<f64>>,
    pub ratio_min: Vec<Option<f64>>,
    pub ratio_max: Vec<Option<f64>>,
    /// gauss4: median over schedules of W2(variant) / W2(base).
    pub w2_ratio: Vec<Option<f64>>,
    /// The largest NFE at which the median ratio is outside [0.9, 1.11] (None: at none).
    pub matters_up_to: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub flips: Vec<Flip>,
}

#[derive(Default)]
pub struct Conventions {
    truth: GroupCache<Array2<f64>>,
}

fn unit_key(problem: &str, betas: &str, v: &Variant) -> String {
    format!("{problem}|{betas}|{}|{}", v.group, v.label)
}

/// A run: its output, first and last sigma/alpha, and the factor from the latents to its start
/// in VP coordinates.
struct Run {
    x: Array2<f64>,
    sigma_start: f64,
    sigma_end: f64,
    start_scale: f64,
    nfe: usize,
}

impl Conventions {
    fn run_variant(
        &self,
        v: &Variant,
        betas_name: &str,
        steps: usize,
        mixture: &GaussianMixture,
        latents: ArrayView2<f64>,
    ) -> Result<Run> {
        let (kind, start, end) = betas(betas_name)?;
        if let Some(spec) = v.config.strip_prefix("official:") {
            let sched = schedule::parse(&format!(
                "vp-discrete:betas={kind},beta_start={start},beta_end={end}"
            ))?;
            let s = sched.as_ref();
            let grid = Grid::parse(
                &format!("time-uniform:steps={steps},t_start=1,t_end={}", s.t_min()),
                s,
            )?;
            let env = Env {
                schedule: s,
                mixture: Some(mixture),
                noise_seed: 0,
            };
            let mut built = solver::build(spec, &env)?;
            let oracle = Counted::new(mixture);
            let x = solver::integrate(
                built.solver.as_mut(),
                &Model::new(&oracle, s),
                &grid,
                latents,
            )?;
            let rho = |t: f64| s.sigma(t) / s.alpha(t);
            return Ok(Run {
                x,
                sigma_start: rho(grid.times[0]),
                sigma_end: rho(grid.times[steps]),
                start_scale: 1.0,
                nfe: oracle.nfe(),
            });
        }
        let mut value: serde_json::Value = serde_json::from_str(&v.config)
            .map_err(|e| bad_option("conventions", "variants", format!("{}: {e}", v.label)))?;
        value["beta_schedule"] = kind.into();
        value["beta_start"] = start.into();
        value["beta_end"] = end.into();
        let sc = SchedulerConfig::parse(
            &value.to_string(),
            &format!("{}={}", v.group, v.label),
            None,
        )?;
        let ve = sc.class.ve();
        let s = Scheduler::new(sc, steps, 0.0)?;
        let oracle = Counted::new(mixture);
        let replay = s.replay(&oracle, latents, &mut Brownian::new(0))?;
        let (s0, s_end) = (s.plan.sigmas[0], s.plan.sigmas[s.plan.sigmas.len() - 1]);
        let alpha0 = 1.0 / (s0 * s0 + 1.0).sqrt();
        let alpha_end = 1.0 / (s_end * s_end + 1.0).sqrt();
        let (start_scale, mut x) = (
            s.plan.init_noise_sigma * if ve { alpha0 } else { 1.0 },
            replay.x,
        );
        if ve {
            // The sample in x/alpha: back to x, the pipeline's latent.
            x.mapv_inplace(|v| v * alpha_end);
        }
        Ok(Run {
            x,
            sigma_start: s0,
            sigma_end: s_end,
            start_scale,
            nfe: oracle.nfe(),
        })
    }

    /// The exact PF-ODE solution from `x` (VP coordinates) at sigma/alpha = `rho0` to sigma = 0.
    fn exact(
        &self,
        config: &Config,
        problem: &str,
        mixture: &GaussianMixture,
        rho0: f64,
        x: ArrayView2<f64>,
        key: &str,
    ) -> Result<Arc<Array2<f64>>> {
        self.truth.get(key, || {
            let alpha = 1.0 / (rho0 * rho0 + 1.0).sqrt();
            let from = NoiseLevel::of(alpha, rho0 * alpha);
            if mixture.n_components() == 1 {
                let mut out = Array2::zeros(x.dim());
                GaussianFlow::new(mixture)?.map(
                    &from,
                    &NoiseLevel::of(1.0, 0.0),
                    x,
                    out.view_mut(),
                )?;
                return Ok(out);
            }
            let times = if rho0 > 1e-3 {
                vec![rho0, 1e-3, 0.0]
            } else {
                vec![rho0, 0.0]
            };
            let grid = Grid::explicit(times, &format!("{problem} exact"), &Rho)?;
            let env = Env {
                schedule: &Rho,
                mixture: Some(mixture),
                noise_seed: 0,
            };
            let mut built = solver::build(&config.reference, &env)?;
            solver::integrate(built.solver.as_mut(), &Model::new(&mixture, &Rho), &grid, x)
        })
    }
}

impl Study for Conventions {
    const KIND: &'static str = "conventions";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        require_nonempty(
            Self::KIND,
            &[
                ("problems", config.problems.len()),
                ("betas", config.betas.len()),
                ("variants", config.variants.len()),
            ],
        )?;
        check_nfe_targets(Self::KIND, &config.nfe)?;
        if config.samples == 0 {
            return Err(bad_option(Self::KIND, "samples", "need at least 1"));
        }
        crate::limits::check_elements("conventions", "samples", config.samples)?;
        for b in &config.betas {
            betas(b)?;
        }
        let mut units = Vec::new();
        for p in &config.problems {
            problems::load(p)?;
            for b in &config.betas {
                for v in &config.variants {
                    units.push(Unit {
                        key: unit_key(p, b, v),
                        group: format!("{p}|{b}"),
                    });
                }
            }
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let (problem, betas_name) = unit
            .group
            .split_once('|')
            .ok_or_else(|| Error::Domain(format!("conventions: bad group '{}'", unit.group)))?;
        let v = config
            .variants
            .iter()
            .find(|v| unit_key(problem, betas_name, v) == unit.key)
            .ok_or_else(|| {
                Error::Domain(format!(
                    "conventions: unit '{}' is not in the config",
                    unit.key
                ))
            })?;
        let mixture = problems::load(problem)?;
        let d = mixture.dim();
        let latents =
            crate::rng::standard_normal(config.samples, d, seed_for(config.seed, problem), 0);
        let law = (mixture.n_components() == 1).then(|| {
            let c = mixture.component(0);
            (
                GaussianLaw::isotropic(d, 1.0),
                GaussianLaw::marginal(c, 1.0, 0.0),
            )
        });
        let steps = super::step_counts(&config.nfe, Ok)?;
        let mut points = Vec::new();
        for (_, n) in steps {
            let run = self.run_variant(v, betas_name, n, &mixture, latents.view())?;
            let key = format!("{problem}|{:e}|{:e}", run.sigma_start, run.start_scale);
            let start = latents.mapv(|x| x * run.start_scale);
            let exact = self.exact(
                config,
                problem,
                &mixture,
                run.sigma_start,
                start.view(),
                &key,
            )?;
            let mut errs: Vec<f64> = run
                .x
                .rows()
                .into_iter()
                .zip(exact.rows())
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(u, w)| (u - w) * (u - w))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let rms = (errs.iter().map(|e| e * e).sum::<f64>() / errs.len() as f64).sqrt();
            errs.sort_by(f64::total_cmp);
            let (w2, kl) = match &law {
                Some((prior, target)) => {
                    let probes = prior.probes();
                    let r = self.run_variant(v, betas_name, n, &mixture, probes.view())?;
                    let out = prior.pushed(r.x.view())?;
                    (Some(out.w2(target)?), Some(out.kl(target)?))
                }
                None => (None, None),
            };
            points.push(Point {
                unit: unit.key.clone(),
                problem: problem.into(),
                betas: betas_name.into(),
                group: v.group.clone(),
                label: v.label.clone(),
                steps: n,
                nfe: run.nfe,
                sigma_start: run.sigma_start,
                sigma_end: run.sigma_end,
                err_rms: rms,
                err_median: errs[errs.len() / 2],
                err_max: errs[errs.len() - 1],
                w2,
                kl,
            });
        }
        let group = Group {
            key: unit.group.clone(),
            problem: problem.into(),
            betas: betas_name.into(),
        };
        Ok((group, points))
    }

    fn summarize(config: &Config, _groups: &[Group], points: &[Point]) -> Summary {
        let median = |mut v: Vec<f64>| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let m = v.len();
            Some(if m % 2 == 1 {
                v[m / 2]
            } else {
                0.5 * (v[m / 2 - 1] + v[m / 2])
            })
        };
        let mut flips = Vec::new();
        for v in config.variants.iter().filter(|v| !v.base) {
            let Some(base) = config
                .variants
                .iter()
                .find(|b| b.base && b.group == v.group)
            else {
                continue;
            };
            let find = |w: &Variant, p: &str, b: &str, nfe: usize| {
                points.iter().find(|q| {
                    q.group == w.group
                        && q.label == w.label
                        && q.problem == p
                        && q.betas == b
                        && q.nfe == nfe
                })
            };
            let mut flip = Flip {
                group: v.group.clone(),
                base: base.label.clone(),
                label: v.label.clone(),
                ..Flip::default()
            };
            for &nfe in &config.nfe {
                let mut ratios = Vec::new();
                let mut w2 = Vec::new();
                for p in &config.problems {
                    for b in &config.betas {
                        if let (Some(x), Some(y)) = (find(v, p, b, nfe), find(base, p, b, nfe)) {
                            if y.err_rms > 0.0 {
                                ratios.push(x.err_rms / y.err_rms);
                            }
                            if let (Some(a), Some(c)) = (x.w2, y.w2) {
                                if c > 0.0 {
                                    w2.push(a / c);
                                }
                            }
                        }
                    }
                }
                if ratios.is_empty() {
                    continue;
                }
                flip.nfe.push(nfe);
                flip.ratio_min.push(ratios.iter().cloned().reduce(f64::min));
                flip.ratio_max.push(ratios.iter().cloned().reduce(f64::max));
                let m = median(ratios);
                if m.is_some_and(|r| !(0.9..=1.0 / 0.9).contains(&r)) {
                    flip.matters_up_to = Some(nfe);
                }
                flip.ratio.push(m);
                flip.w2_ratio.push(median(w2));
            }
            flips.push(flip);
        }
        Summary { flips }
    }
}
