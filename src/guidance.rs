//! Guidance: oracles that steer a conditional model with a guide, built from any two oracles, so
//! that every registered solver runs guided unchanged; and the exact classifier p_t(c | x) of a
//! labelled mixture.
//!
//! Conventions. A guidance `scale` s is the diffusers / k-diffusion / EDM2 / official DPM-Solver
//! convention: pred = guide + s (cond - guide), s = 1 is no guidance. Ho & Salimans (2021) write
//! (1 + w) cond - w uncond, so s = 1 + w. The rule is affine with weights summing to one, and the
//! conversions between eps, x0, score, v and velocity are affine maps of the prediction at fixed
//! (x, t), so CFG gives the same guided sampler in every prediction space (up to rounding). The
//! rules that are not affine (APG, CFG-Zero*) act in the space of their papers, `space=` changes
//! it. EDM sigma (the VE noise level sigma_t / alpha_t) is what the guidance interval is stated in.
//!
//! | spec | rule | paper |
//! |---|---|---|
//! | `cfg:scale=s,guide=G` | g + s (c - g) | Ho & Salimans 2021 |
//! | `interval:scale=s,sigma_lo,sigma_hi` | CFG for sigma_lo < sigma <= sigma_hi, else c | Kynkäänniemi et al. 2024, Sec. 3 |
//! | `autoguidance:scale=s,guide=FILE` | CFG with a weaker model of the same class as g | Karras et al. 2024, Eq. 3 |
//! | `apg:scale=s,eta,momentum,threshold` | c + (s - 1)(D_orth + eta D_par) | Sadat et al. 2024, Alg. 1 |
//! | `cfg-zero:scale=s,zero_init=n` | a* g + s (c - a* g), a* = <c, g>/(\|g\|^2 + 1e-8) | Fan et al. 2025, Eq. 7-8 |
//! | `classifier:scale=s` | eps_u - s sigma_t grad ln p_t(c \| x) | Dhariwal & Nichol 2021; DPM-Solver `guidance_type="classifier"` |
//! | `cfg++:scale=l,guide=G` | x0 = g + l (c - g), renoised with the guide's eps | Chung et al. 2024, Alg. 1-2 |
//!
//! CFG++ (Chung et al., "CFG++: manifold-constrained classifier free guidance", 2024) is not a
//! rule on the prediction alone: DDIM's x_t = alpha_t x0_hat + sigma_t eps_hat takes the guided
//! x0_hat^l = x0_g + l (x0_c - x0_g) but the guide's (unconditional) eps_g (their Algorithm 1,
//! eq. 8), so the oracle hands the solver both ([`Oracle::predict_with_guide`]) and only the
//! solvers that implement the renoising accept it: `ddim` (any eta) and `dpm-solver++` order 2
//! multistep (their Algorithm 2 as the official `dpm++_2m_cfg++`, see
//! [`crate::solver::expint::cfgpp_step`]). l is in [0, 1] in the paper (0.6 is its default,
//! comparable to CFG's s = 7.5); l = 0 is unconditional sampling, and with c = g every l gives
//! the unguided sampler. Its prediction alone, as a plain oracle would return it, is CFG's.
//!
//! Every CFG-family rule takes a window: `sigma_lo`/`sigma_hi` (EDM sigma, half-open
//! (lo, hi] as in the guidance-interval code; `interval` defaults to EDM2-S's (0.28, 5.42]) or
//! diffusers' `start`/`stop` fractions of the steps (guidance at steps i with
//! floor(start n) <= i < floor(stop n), resolved against the sampler's grid as the times
//! t_{i_stop} < t <= t_{i_start}). Outside the window, and everywhere at s = 1, the guided oracle
//! returns the conditional prediction itself, bit for bit, at the cost of one oracle call; a
//! guided evaluation costs two. [`Guided::counts`] reports both.

use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::oracle::{check_batch, Oracle};
use crate::prediction::{self, Prediction};
use crate::schedule::NoiseLevel;
use crate::spec::Spec;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Zip};
use std::path::Path;
use std::sync::Mutex;

/// The exact classifier of a labelled mixture at every noise level:
/// ln p_t(c | x) = ln pi_c + ln p_t(x | c) - ln p_t(x).
#[derive(Debug, Clone)]
pub struct Classifier {
    full: GaussianMixture,
    cond: GaussianMixture,
    log_pi: f64,
}

impl Classifier {
    pub fn new(mixture: &GaussianMixture, label: &str) -> Result<Self> {
        Ok(Classifier {
            cond: mixture.conditional(label)?,
            log_pi: mixture.class_weight(label)?.ln(),
            full: mixture.clone(),
        })
    }

    /// ln p_t(c | x) for each row of `x`.
    pub fn log_prob(&self, x: ArrayView2<f64>, at: &NoiseLevel) -> Result<Array1<f64>> {
        let lc = self.cond.log_density(x, at)?;
        let lf = self.full.log_density(x, at)?;
        Ok(Zip::from(&lc)
            .and(&lf)
            .map_collect(|&c, &f| self.log_pi + c - f))
    }

    /// grad_x ln p_t(c | x) = score_t(x | c) - score_t(x), into `out`.
    pub fn grad(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        let mut work = Array2::zeros(x.dim());
        self.grad_into(x, at, out, &mut work)
    }

    /// [`Classifier::grad`] with `work` (reshaped if needed) holding score_t(x).
    fn grad_into(
        &self,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
        work: &mut Array2<f64>,
    ) -> Result<()> {
        if work.dim() != x.dim() {
            *work = Array2::zeros(x.dim());
        }
        self.cond
            .predict(Prediction::Score, x, at, out.view_mut())?;
        self.full
            .predict(Prediction::Score, x, at, work.view_mut())?;
        out -= &*work;
        Ok(())
    }

    /// p(x | c), the conditional mixture.
    pub fn conditional(&self) -> &GaussianMixture {
        &self.cond
    }
}

/// A guidance rule (see the module table).
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Cfg,
    Apg {
        eta: f64,
        momentum: f64,
        threshold: f64,
    },
    CfgZero {
        zero_init: usize,
    },
    Classifier,
    CfgPp,
}

/// What the guide is: the unconditional mixture, another class, or a file (a mixture `.json` or
/// a network `.safetensors`), used as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum GuideSpec {
    Uncond,
    Class(String),
    File(String),
}

/// Where guidance acts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    All,
    /// EDM sigma in (lo, hi].
    Sigma {
        lo: f64,
        hi: f64,
    },
    /// diffusers' fractions of the steps.
    Steps {
        start: f64,
        stop: f64,
    },
}

/// A parsed `--guidance` spec.
#[derive(Debug, Clone)]
pub struct Guidance {
    pub name: String,
    pub method: Method,
    pub scale: f64,
    pub guide: GuideSpec,
    pub window: Window,
    /// The space the rule acts in (`None`: the solver's requested prediction, for CFG).
    pub space: Option<Prediction>,
    /// The spec with every option, defaults included.
    pub canonical: String,
    pub options: Vec<(&'static str, String)>,
}

/// The guidance methods, for errors and help.
pub const METHODS: &str = "cfg, interval, autoguidance, apg, cfg-zero, classifier, cfg++";

impl Guidance {
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = Spec::parse("guidance", text)?;
        let name = spec.name.clone();
        let scale = spec.take_f64("scale", if name == "cfg++" { 0.6 } else { 2.0 })?;
        let method = match name.as_str() {
            "cfg++" => Method::CfgPp,
            "cfg" | "interval" | "autoguidance" => Method::Cfg,
            "apg" => Method::Apg {
                eta: spec.take_f64("eta", 0.0)?,
                momentum: spec.take_f64("momentum", 0.0)?,
                threshold: spec.take_f64("threshold", 0.0)?,
            },
            "cfg-zero" => Method::CfgZero {
                zero_init: spec.take_range("zero_init", 1, 0, crate::limits::MAX_STEPS)?,
            },
            "classifier" => Method::Classifier,
            other => {
                return Err(spec.error(format!(
                    "unknown guidance method '{other}' (valid: {METHODS})"
                )))
            }
        };
        if let Method::Apg { threshold, .. } = method {
            if threshold < 0.0 {
                return Err(spec.error(format!(
                    "option 'threshold': {threshold} is negative (0 turns it off)"
                )));
            }
        }
        let guide = match name.as_str() {
            "classifier" => GuideSpec::Uncond,
            "autoguidance" => match spec.take_optional::<String>("guide")? {
                Some(g) => guide_spec(&g),
                None => {
                    return Err(spec.error(
                        "autoguidance needs guide=FILE: a weaker model of the same class (a mixture .json or a network .safetensors)",
                    ))
                }
            },
            _ => guide_spec(&spec.take("guide", "uncond".to_string())?),
        };
        let window = if name == "classifier" {
            Window::All
        } else {
            let (lo_default, hi_default) = if name == "interval" {
                (Some(0.28), Some(5.42))
            } else {
                (None, None)
            };
            let lo = spec.take_optional::<f64>("sigma_lo")?.or(lo_default);
            let hi = spec.take_optional::<f64>("sigma_hi")?.or(hi_default);
            let start = spec.take_optional::<f64>("start")?;
            let stop = spec.take_optional::<f64>("stop")?;
            match (lo, hi, start, stop) {
                (None, None, None, None) => Window::All,
                (lo, hi, None, None) => {
                    let (lo, hi) = (lo.unwrap_or(0.0), hi.unwrap_or(f64::INFINITY));
                    if !(lo >= 0.0 && hi > lo) || lo.is_nan() {
                        return Err(spec.error(format!(
                            "the window needs 0 <= sigma_lo < sigma_hi; got ({lo}, {hi}]"
                        )));
                    }
                    Window::Sigma { lo, hi }
                }
                (None, None, start, stop) => {
                    let (start, stop) = (start.unwrap_or(0.0), stop.unwrap_or(1.0));
                    if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&stop) || start > stop {
                        return Err(spec.error(format!(
                            "the window needs 0 <= start <= stop <= 1 (fractions of the steps); got start = {start}, stop = {stop}"
                        )));
                    }
                    Window::Steps { start, stop }
                }
                _ => {
                    return Err(spec.error(
                        "give the window either in sigma (sigma_lo, sigma_hi) or in steps (start, stop), not both",
                    ))
                }
            }
        };
        let default_space = match method {
            Method::Apg { .. } => Some(Prediction::X0),
            Method::CfgZero { .. } => Some(Prediction::Velocity),
            Method::Classifier => Some(Prediction::Eps),
            Method::Cfg | Method::CfgPp => None,
        };
        let space = match spec.take_optional::<String>("space")? {
            Some(s) if method == Method::Classifier => {
                return Err(spec.error(format!(
                    "option 'space': classifier guidance acts on eps (got '{s}')"
                )))
            }
            Some(s) => Some(
                s.parse::<Prediction>()
                    .map_err(|e| spec.error(e.to_string()))?,
            ),
            None => default_space,
        };
        spec.finish()?;
        if name == "interval" && window == Window::All {
            return Err(spec.error("interval needs a window"));
        }
        Ok(Guidance {
            name,
            method,
            scale,
            guide,
            window,
            space,
            canonical: spec.canonical(),
            options: spec.options().to_vec(),
        })
    }

    /// The guided oracle for class `label` of `mixture`, the guide resolved from the spec (a
    /// file is loaded as given). `times` (the sampler's grid) resolves a window in steps.
    pub fn build<'a>(
        &self,
        mixture: &'a GaussianMixture,
        label: &str,
        times: Option<&[f64]>,
    ) -> Result<Guided<'a>> {
        let cond: Box<dyn Oracle + 'a> = if self.method == Method::Classifier {
            Box::new(mixture)
        } else {
            Box::new(mixture.conditional(label)?)
        };
        let guide = match (&self.method, &self.guide) {
            (Method::Classifier, _) => {
                Guide::Classifier(Box::new(Classifier::new(mixture, label)?))
            }
            (_, GuideSpec::Uncond) => Guide::Oracle(Box::new(mixture)),
            (_, GuideSpec::Class(c)) => Guide::Oracle(Box::new(mixture.conditional(c)?)),
            (_, GuideSpec::File(path)) => Guide::Oracle(load_oracle(path)?),
        };
        Guided::new(cond, guide, self, times)
    }
}

fn guide_spec(g: &str) -> GuideSpec {
    if g == "uncond" {
        GuideSpec::Uncond
    } else if g.ends_with(".json") || g.ends_with(".safetensors") || Path::new(g).exists() {
        GuideSpec::File(g.to_string())
    } else {
        GuideSpec::Class(g.to_string())
    }
}

/// A mixture `.json` or a network `.safetensors` as an oracle.
fn load_oracle(path: &str) -> Result<Box<dyn Oracle>> {
    if path.ends_with(".safetensors") {
        return Ok(Box::new(crate::nn::weights::load(path)?.net));
    }
    Ok(Box::new(GaussianMixture::from_file(path)?))
}

/// The guide of a [`Guided`] oracle.
pub enum Guide<'a> {
    Oracle(Box<dyn Oracle + 'a>),
    Classifier(Box<Classifier>),
}

/// How many evaluations a guided oracle answered, how many of them were guided, and the calls of
/// the underlying oracles they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub evaluations: usize,
    pub guided: usize,
    pub oracle_calls: usize,
}

#[derive(Default)]
struct State {
    counts: Counts,
    /// APG's running average of the guidance update.
    running: Option<Array2<f64>>,
    /// Buffers for the guide's prediction (and the classifier's unconditional score), reused by
    /// every evaluation.
    scratch: [Array2<f64>; 2],
}

/// Where guidance acts, resolved against the grid.
#[derive(Debug, Clone, Copy)]
enum Active {
    Always,
    /// EDM sigma in (lo, hi].
    Sigma {
        lo: f64,
        hi: f64,
    },
    /// t in (lo, hi].
    Times {
        lo: f64,
        hi: f64,
    },
}

/// An [`Oracle`] that applies a guidance rule to a conditional oracle and a guide.
pub struct Guided<'a> {
    cond: Box<dyn Oracle + 'a>,
    guide: Guide<'a>,
    method: Method,
    scale: f64,
    active: Active,
    space: Option<Prediction>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Guided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided")
            .field("method", &self.method)
            .field("scale", &self.scale)
            .field("active", &self.active)
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

impl<'a> Guided<'a> {
    pub fn new(
        cond: Box<dyn Oracle + 'a>,
        guide: Guide<'a>,
        g: &Guidance,
        times: Option<&[f64]>,
    ) -> Result<Self> {
        if let Guide::Oracle(o) = &guide {
            if o.dim() != cond.dim() {
                return Err(Error::Dimension(format!(
                    "guidance '{}': the guide has dimension {}, the conditional model {}",
                    g.canonical,
                    o.dim(),
                    cond.dim()
                )));
            }
        }
        let active = match g.window {
            Window::All => Active::Always,
            Window::Sigma { lo, hi } => Active::Sigma { lo, hi },
            Window::Steps { start, stop } => {
                let times = times.filter(|t| t.len() >= 2).ok_or_else(|| {
                    Error::Domain(format!(
                        "guidance '{}': a window in steps needs the sampler's grid",
                        g.canonical
                    ))
                })?;
                let n = times.len() - 1;
                let (i0, i1) = (
                    ((start * n as f64).floor() as usize).min(n),
                    ((stop * n as f64).floor() as usize).min(n),
                );
                let hi = if i0 < i1 {
                    times[i0]
                } else {
                    f64::NEG_INFINITY
                };
                Active::Times { lo: times[i1], hi }
            }
        };
        Ok(Guided {
            cond,
            guide,
            method: g.method.clone(),
            scale: g.scale,
            active,
            space: g.space,
            state: Mutex::new(State::default()),
        })
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.state.lock().unwrap().counts
    }

    /// Clears the counts and APG's running average, for a new run.
    pub fn reset(&self) {
        *self.state.lock().unwrap() = State::default();
    }

    /// Whether guidance acts at this level (before the scale is looked at).
    fn in_window(&self, at: &NoiseLevel) -> bool {
        match self.active {
            Active::Always => true,
            Active::Sigma { lo, hi } => {
                let s = at.sigma / at.alpha;
                lo < s && s <= hi
            }
            Active::Times { lo, hi } => lo < at.t && at.t <= hi,
        }
    }

    fn guided(
        &self,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        space: Prediction,
        out: &mut ArrayViewMut2<f64>,
    ) -> Result<()> {
        let [mut g, mut work] = std::mem::take(&mut self.state.lock().unwrap().scratch);
        if g.dim() != x.dim() {
            g = Array2::zeros(x.dim());
        }
        let result = self.combine(x, at, space, out, &mut g, &mut work);
        self.state.lock().unwrap().scratch = [g, work];
        result
    }

    /// The guided prediction into `out`, with `g` (shaped like x) and `work` as buffers.
    fn combine(
        &self,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        space: Prediction,
        out: &mut ArrayViewMut2<f64>,
        g: &mut Array2<f64>,
        work: &mut Array2<f64>,
    ) -> Result<()> {
        let s = self.scale;
        let guide = match &self.guide {
            Guide::Classifier(c) => {
                self.cond.predict(Prediction::Eps, x, at, out.view_mut())?;
                c.grad_into(x, at, g.view_mut(), work)?;
                let k = s * at.sigma;
                Zip::from(out.view_mut())
                    .and(&*g)
                    .for_each(|o, &g| *o -= k * g);
                return Ok(());
            }
            Guide::Oracle(guide) => guide,
        };
        self.cond.predict(space, x, at, out.view_mut())?;
        guide.predict(space, x, at, g.view_mut())?;
        match &self.method {
            Method::Apg {
                eta,
                momentum,
                threshold,
            } => {
                // g <- D = c - g, then (with momentum) the running average D + momentum * previous.
                Zip::from(&mut *g)
                    .and(out.view())
                    .for_each(|g, &c| *g = c - *g);
                if *momentum != 0.0 {
                    let mut st = self.state.lock().unwrap();
                    match st.running.as_mut() {
                        Some(r) if r.dim() == g.dim() => {
                            Zip::from(&mut *r)
                                .and(&*g)
                                .for_each(|r, &d| *r = d + momentum * *r);
                            g.assign(r);
                        }
                        _ => st.running = Some(g.clone()),
                    }
                }
                for (mut dr, mut c) in g.rows_mut().into_iter().zip(out.rows_mut()) {
                    if *threshold > 0.0 {
                        let norm = dr.iter().map(|v| v * v).sum::<f64>().sqrt();
                        let f = (threshold / norm).min(1.0);
                        dr.mapv_inplace(|v| v * f);
                    }
                    let cn = c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                    let par: f64 = dr.iter().zip(c.iter()).map(|(d, c)| d * c / cn).sum();
                    for (cj, &dj) in c.iter_mut().zip(dr.iter()) {
                        let vpar = par * (*cj / cn);
                        *cj += (s - 1.0) * ((dj - vpar) + eta * vpar);
                    }
                }
            }
            Method::CfgZero { .. } => {
                for (mut c, g) in out.rows_mut().into_iter().zip(g.rows()) {
                    let dot: f64 = c.iter().zip(g).map(|(c, g)| c * g).sum();
                    let norm2: f64 = g.iter().map(|g| g * g).sum::<f64>() + 1e-8;
                    let a = dot / norm2;
                    Zip::from(&mut c)
                        .and(g)
                        .for_each(|c, &g| *c = a * g + s * (*c - a * g));
                }
            }
            Method::Cfg | Method::Classifier | Method::CfgPp => {
                Zip::from(out.view_mut())
                    .and(&*g)
                    .for_each(|c, &g| *c = g + s * (*c - g));
            }
        }
        Ok(())
    }
}

impl Oracle for Guided<'_> {
    fn dim(&self) -> usize {
        self.cond.dim()
    }

    fn native(&self) -> Prediction {
        self.space.unwrap_or(Prediction::Eps)
    }

    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.predict(self.native(), x, at, out)
    }

    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.dim(), &x, &out)?;
        let zero = {
            let mut st = self.state.lock().unwrap();
            let n = st.counts.evaluations;
            st.counts.evaluations += 1;
            matches!(self.method, Method::CfgZero { zero_init } if n < zero_init)
        };
        if zero {
            let space = self.native();
            out.fill(0.0);
            return prediction::convert(space, kind, at, x, out);
        }
        let unguided =
            self.method != Method::Classifier && (self.scale == 1.0 || !self.in_window(at));
        if unguided {
            self.state.lock().unwrap().counts.oracle_calls += 1;
            return self.cond.predict(kind, x, at, out);
        }
        {
            let mut st = self.state.lock().unwrap();
            st.counts.guided += 1;
            st.counts.oracle_calls += 2;
        }
        let space = self.space.unwrap_or(kind);
        self.guided(x, at, space, &mut out)?;
        prediction::convert(space, kind, at, x, out)
    }

    fn renoises_with_guide(&self) -> bool {
        self.method == Method::CfgPp
    }

    /// CFG++: the guided prediction g + l (c - g) and the guide's g, both of type `kind` (the
    /// rule is affine, so the space does not matter); outside the window both are c.
    fn predict_with_guide(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut2<f64>,
        mut guide: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.dim(), &x, &out)?;
        check_batch(self.dim(), &x, &guide)?;
        let (Method::CfgPp, Guide::Oracle(g)) = (&self.method, &self.guide) else {
            return Err(Error::Domain(
                "only cfg++ guidance hands the solver its guide's prediction".into(),
            ));
        };
        let inside = self.in_window(at);
        {
            let mut st = self.state.lock().unwrap();
            st.counts.evaluations += 1;
            st.counts.guided += usize::from(inside);
            st.counts.oracle_calls += 1 + usize::from(inside);
        }
        self.cond.predict(kind, x, at, out.view_mut())?;
        if !inside {
            guide.assign(&out);
            return Ok(());
        }
        g.predict(kind, x, at, guide.view_mut())?;
        let s = self.scale;
        Zip::from(out)
            .and(guide.view())
            .for_each(|c, &g| *c = g + s * (*c - g));
        Ok(())
    }
}
