//! The `guidance` study: what guided samplers produce, measured against exact laws.
//!
//! Gaussian part: class `class` and guide class `guide` of `gaussian` are single Gaussians, so
//! the CFG-guided prediction is affine in x and every deterministic solver is an affine map;
//! its output law from x_T ~ p_T(x | c) is exact by d + 1 probe runs ([`GaussianLaw`]), and so is
//! a stochastic sampler's, with probe noise ([`output_law`]). Each
//! (schedule, method, scale, solver, steps) point gives W2 and KL of that law against (a) the
//! class law p(x | c), (b) the tilted law p(x | c)^s p_guide(x)^(1 - s) (Gaussian with precision
//! s P_c + (1 - s) P_g when that is positive definite; absent otherwise), both at the grid's last
//! time, and (c) the law of the guided ODE itself (the reference solver on the same oracle).
//! CFG++ runs at its own scales (`cfgpp_scales`, lambda in [0, 1]) with the solvers that
//! implement it.
//!
//! Mixture part: on each labelled mixture, N samples of each guidance method at each scale
//! (from p_T(x | c), one solver at a fixed step count): class precision (mean exact
//! p_t(c | x)), NLL under p_t(x | c), the fraction off the class support (ln p_t(x | c) below
//! the 0.1% quantile of exact samples), MMD^2 (median-heuristic Gaussian kernel) and sliced W2
//! against N exact samples of p_t(x | c), at the grid's last time t. Autoguidance's guide is a
//! degraded copy of the class: every covariance times `degrade`. The entropy of the samples'
//! law, by the Kozachenko–Leonenko estimator ([`entropy_knn`], k = [`KNN`]), is reported beside
//! the same estimate on the exact samples and the exact class entropy (Monte Carlo -E ln p), so
//! that H(samples) - H(p(x | c)) is read with the estimator's own bias cancelled. For 2-D
//! problems the first [`PANEL_POINTS`] samples are kept for the sample panels.
//!
//! Corrector part: on `corrector_problem` (a single Gaussian, unguided) the exact output law of
//! each of `corrector_solvers` (predictors alone, predictor-corrector samplers, annealed Langevin)
//! on `corrector_steps` logsnr steps, W2 and KL to the exact p_t at the grid's last time, against
//! the NFE each spends.

use super::convergence::range;
use super::{require_nonempty, Keyed, Study, Unit};
use crate::error::{Error, Result};
use crate::gmm::{GaussianMixture, MixtureSpec};
use crate::grid::Grid;
use crate::guidance::{Classifier, Guidance, Guide, Guided};
use crate::metrics::distribution::{entropy_knn, median_bandwidth, mmd2, nll, sliced_w2};
use crate::metrics::law::GaussianLaw;
use crate::metrics::sde::output_law;
use crate::rng::seed_for;
use crate::solver::{self, Env, Model};
use crate::{problems, schedule, Counted, Oracle};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Samples kept per 2-D mixture point for the panels.
pub const PANEL_POINTS: usize = 400;

/// The neighbour of the entropy estimate.
pub const KNN: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub gaussian: String,
    pub class: String,
    pub guide: String,
    pub schedules: Vec<String>,
    /// Guidance specs without the scale, for the Gaussian part (affine rules: cfg, interval).
    pub gaussian_methods: Vec<String>,
    pub solvers: Vec<String>,
    pub steps: Vec<usize>,
    pub scales: Vec<f64>,
    pub mixtures: Vec<String>,
    /// Guidance specs without the scale, for the mixture part.
    pub mixture_methods: Vec<String>,
    pub mixture_solver: String,
    pub mixture_steps: usize,
    pub samples: usize,
    pub degrade: f64,
    pub reference: String,
    /// The scales (lambda) of CFG++, in both parts.
    pub cfgpp_scales: Vec<f64>,
    pub corrector_problem: String,
    pub corrector_solvers: Vec<String>,
    pub corrector_steps: Vec<usize>,
    pub seed: u64,
}

impl Config {
    pub fn main() -> Self {
        Config {
            gaussian: "gauss2c".into(),
            class: "A".into(),
            guide: "B".into(),
            schedules: vec!["vp-linear".into(), "flow".into()],
            gaussian_methods: vec![
                "cfg".into(),
                "interval:sigma_lo=0.28,sigma_hi=5.42".into(),
                "cfg++".into(),
            ],
            solvers: vec![
                "ddim".into(),
                "dpm-solver++:order=2".into(),
                "unipc".into(),
                "heun".into(),
                "ddpm".into(),
                "euler-maruyama".into(),
                "pc:predictor=ddim,step=sde".into(),
            ],
            steps: vec![5, 10, 20, 50],
            scales: vec![1.0, 1.5, 2.0, 3.0, 4.0, 8.0],
            mixtures: vec!["ring2d".into(), "edm2_tree2d".into()],
            mixture_methods: vec![
                "cfg".into(),
                "interval:sigma_lo=0.28,sigma_hi=5.42".into(),
                "autoguidance".into(),
                "apg:eta=0,momentum=-0.5,threshold=4".into(),
                "cfg-zero:zero_init=1".into(),
                "classifier".into(),
                "cfg++".into(),
            ],
            mixture_solver: "dpm-solver++:order=2".into(),
            mixture_steps: 32,
            samples: 2000,
            degrade: 2.0,
            reference: "reference".into(),
            cfgpp_scales: vec![0.2, 0.4, 0.6, 0.8, 1.0],
            corrector_problem: "gauss4".into(),
            corrector_solvers: [
                "ddim",
                "ddpm",
                "euler-maruyama",
                "pc:predictor=ddim,step=sde",
                "pc:predictor=ddim,step=sde,n=2",
                "pc:predictor=euler-maruyama,step=sde",
                "pc:predictor=ddpm,step=sigma,snr=0.16",
                "ald:eps=2e-5,n=4",
            ]
            .map(String::from)
            .to_vec(),
            corrector_steps: vec![5, 10, 20, 50, 100, 200],
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub guidance: String,
}

impl Keyed for Group {
    fn key(&self) -> &str {
        &self.key
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Point {
    pub key: String,
    pub part: String,
    pub problem: String,
    pub schedule: String,
    pub method: String,
    pub scale: f64,
    pub solver: String,
    pub steps: usize,
    pub nfe: usize,
    pub oracle_calls: usize,
    pub w2_class: Option<f64>,
    pub kl_class: Option<f64>,
    pub w2_tilted: Option<f64>,
    pub kl_tilted: Option<f64>,
    pub w2_limit: Option<f64>,
    pub kl_limit: Option<f64>,
    pub precision: Option<f64>,
    pub nll: Option<f64>,
    pub nll_se: Option<f64>,
    pub off_support: Option<f64>,
    pub mmd2: Option<f64>,
    pub sliced_w2: Option<f64>,
    /// Kozachenko–Leonenko entropy of the samples, of the exact class samples, and the exact
    /// class entropy -E ln p(x | c) (Monte Carlo on the exact samples).
    pub entropy: Option<f64>,
    pub entropy_exact_knn: Option<f64>,
    pub entropy_class: Option<f64>,
    /// Corrector part: W2 and KL to the exact p_t.
    pub w2_target: Option<f64>,
    pub kl_target: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub panel: Vec<[f64; 2]>,
}

impl Keyed for Point {
    fn key(&self) -> &str {
        &self.key
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub gaussian_points: usize,
    pub mixture_points: usize,
    pub corrector_points: usize,
}

pub struct GuidanceStudy;

/// `method` with `scale=s` added.
fn with_scale(method: &str, s: f64) -> String {
    match method.split_once(':') {
        Some((name, rest)) => format!("{name}:scale={s},{rest}"),
        None => format!("{method}:scale={s}"),
    }
}

/// Whether `method` is CFG++, which runs at [`Config::cfgpp_scales`].
fn is_cfgpp(method: &str) -> bool {
    method.split(':').next() == Some("cfg++")
}

fn scales_of<'a>(config: &'a Config, method: &str) -> &'a [f64] {
    match is_cfgpp(method) {
        true => &config.cfgpp_scales,
        false => &config.scales,
    }
}

/// The tilted law N(m, C) with C^-1 = s P_c + (1 - s) P_g, m = C (s P_c m_c + (1 - s) P_g m_g),
/// or `None` when s P_c + (1 - s) P_g is not positive definite.
pub fn tilted(c: &GaussianLaw, g: &GaussianLaw, s: f64) -> Result<Option<GaussianLaw>> {
    use faer::linalg::solvers::Solve;
    let d = c.dim();
    let to_faer = |a: &Array2<f64>| faer::Mat::from_fn(d, d, |i, j| a[(i, j)]);
    let eye = faer::Mat::<f64>::identity(d, d);
    let inv = |a: &Array2<f64>| -> Option<Array2<f64>> {
        let chol = to_faer(a).llt(faer::Side::Lower).ok()?;
        let x = chol.solve(&eye);
        Some(Array2::from_shape_fn((d, d), |(i, j)| {
            0.5 * (x[(i, j)] + x[(j, i)])
        }))
    };
    let (Some(pc), Some(pg)) = (inv(&c.cov()), inv(&g.cov())) else {
        return Err(Error::Domain(
            "tilted law: a covariance is not positive definite".into(),
        ));
    };
    let p = &pc * s + &pg * (1.0 - s);
    let rhs: Array1<f64> = pc.dot(&c.mean) * s + pg.dot(&g.mean) * (1.0 - s);
    let Some(cov) = inv(&p) else {
        return Ok(None);
    };
    let mean = cov.dot(&rhs);
    GaussianLaw::new(mean, &cov, "tilted law").map(Some)
}

/// The class law with every covariance times `factor` (a deliberately weaker model).
pub fn degraded(m: &GaussianMixture, factor: f64) -> Result<GaussianMixture> {
    let spec = m.spec();
    let spec = MixtureSpec {
        covs: spec
            .covs
            .iter()
            .map(|c| {
                c.iter()
                    .map(|r| r.iter().map(|v| v * factor).collect())
                    .collect()
            })
            .collect(),
        ..spec.clone()
    };
    GaussianMixture::new(spec, &format!("degraded x{factor}"))
}

impl Study for GuidanceStudy {
    const KIND: &'static str = "guidance";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        require_nonempty(
            Self::KIND,
            &[
                ("scales", config.scales.len()),
                ("schedules", config.schedules.len()),
                ("solvers", config.solvers.len()),
                ("steps", config.steps.len()),
            ],
        )?;
        if config.samples < 2 || config.samples > 20_000 || config.mixture_steps == 0 {
            return Err(Error::Domain(format!(
                "guidance needs 2 <= samples <= 20000 and mixture_steps >= 1; got {} and {}",
                config.samples, config.mixture_steps
            )));
        }
        if config.degrade.is_nan() || config.degrade <= 0.0 {
            return Err(Error::Domain(format!(
                "guidance: degrade must be > 0, got {}",
                config.degrade
            )));
        }
        let gauss = problems::load(&config.gaussian)?;
        for label in [&config.class, &config.guide] {
            if gauss.conditional(label)?.n_components() != 1 {
                return Err(Error::Domain(format!(
                    "guidance: class '{label}' of {} is not a single Gaussian",
                    config.gaussian
                )));
            }
        }
        let mut units = Vec::new();
        let unit = |key: String| Unit {
            key: key.clone(),
            group: key,
        };
        for m in &config.gaussian_methods {
            for &s in scales_of(config, m) {
                Guidance::parse(&with_scale(m, s))?;
                for sched in &config.schedules {
                    schedule::parse(sched)?;
                    units.push(unit(format!("gaussian|{sched}|{m}|{s}")));
                }
            }
        }
        for p in &config.mixtures {
            problems::load(p)?.conditional(&config.class)?;
            for m in &config.mixture_methods {
                for &s in scales_of(config, m) {
                    let spec = if m.starts_with("autoguidance") && !m.contains("guide=") {
                        with_scale(m, s) + ",guide=degraded.json"
                    } else {
                        with_scale(m, s)
                    };
                    Guidance::parse(&spec)?;
                    units.push(unit(format!("mixture|{p}|{m}|{s}")));
                }
            }
        }
        if !config.corrector_solvers.is_empty() {
            let c = problems::load(&config.corrector_problem)?;
            if c.n_components() != 1 {
                return Err(Error::Domain(format!(
                    "guidance: the corrector problem {} is not a single Gaussian",
                    config.corrector_problem
                )));
            }
            require_nonempty(
                Self::KIND,
                &[("corrector_steps", config.corrector_steps.len())],
            )?;
        }
        for spec in &config.corrector_solvers {
            units.push(unit(format!(
                "corrector|{}|{spec}|0",
                config.corrector_problem
            )));
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let bad = || Error::Domain(format!("guidance: malformed unit key '{}'", unit.key));
        let parts: Vec<&str> = unit.key.splitn(4, '|').collect();
        let [part, what, method, s] = parts[..] else {
            return Err(bad());
        };
        let s: f64 = s.parse().map_err(|_| bad())?;
        let spec = with_scale(method, s);
        let group = Group {
            key: unit.key.clone(),
            guidance: match part {
                "corrector" => "none".into(),
                _ => spec.clone(),
            },
        };
        let points = if part == "gaussian" {
            gaussian_points(config, what, method, &spec, s)?
        } else if part == "corrector" {
            corrector_points(config, what, method)?
        } else {
            vec![mixture_point(
                config,
                what,
                method,
                &spec,
                s,
                seed_for(config.seed, &unit.key),
            )?]
        };
        Ok((group, points))
    }

    fn summarize(_: &Config, _: &[Group], points: &[Point]) -> Summary {
        Summary {
            gaussian_points: points.iter().filter(|p| p.part == "gaussian").count(),
            mixture_points: points.iter().filter(|p| p.part == "mixture").count(),
            corrector_points: points.iter().filter(|p| p.part == "corrector").count(),
        }
    }
}

fn gaussian_points(
    config: &Config,
    sched: &str,
    method: &str,
    spec: &str,
    s: f64,
) -> Result<Vec<Point>> {
    let mixture = problems::load(&config.gaussian)?;
    let schedule = schedule::parse(sched)?;
    let sc = schedule.as_ref();
    let (t0, t_end) = range(sc);
    let (at0, at_end) = (sc.level(t0), sc.level(t_end));
    let law = |label: &str, alpha: f64, sigma: f64| -> Result<GaussianLaw> {
        Ok(GaussianLaw::marginal(
            mixture.conditional(label)?.component(0),
            alpha,
            sigma,
        ))
    };
    let start = law(&config.class, at0.alpha, at0.sigma)?;
    let class_law = law(&config.class, at_end.alpha, at_end.sigma)?;
    let guide_law = law(&config.guide, at_end.alpha, at_end.sigma)?;
    let tilt = tilted(&class_law, &guide_law, s)?;
    let g = Guidance::parse(&format!("{spec},guide={}", config.guide))?;
    let env = Env {
        schedule: sc,
        mixture: None,
        noise_seed: 0,
    };
    let law_of = |solver_spec: &str, grid: &Grid| -> Result<Option<(GaussianLaw, usize, usize)>> {
        let guided = g.build(&mixture, &config.class, Some(&grid.times))?;
        let counted = Counted::new(&guided);
        let model = Model::new(&counted, sc);
        let mut built = solver::build(solver_spec, &env)?;
        if guided.renoises_with_guide() && !built.solver.renoises_with_guide() {
            return Ok(None);
        }
        let law = output_law(built.solver.as_mut(), &model, grid, &start)?;
        Ok(Some((law, counted.nfe(), guided.counts().oracle_calls)))
    };
    let grid_of =
        |steps: usize| Grid::parse(&super::convergence::grid_spec("logsnr", steps, sc), sc);
    let reference = Guidance::parse(&format!("{spec},guide={}", config.guide))?;
    let limit = {
        let guided = reference.build(&mixture, &config.class, None)?;
        let model = Model::new(&guided, sc);
        // CFG++ is not the ODE of a guided score: its limit is DPM-Solver++(2M) CFG++ on a fine grid.
        let (reference, grid) = match guided.renoises_with_guide() {
            true => ("dpm-solver++:order=2", grid_of(1024)?),
            false => (config.reference.as_str(), grid_of(64)?),
        };
        let mut built = solver::build(reference, &env)?;
        output_law(built.solver.as_mut(), &model, &grid, &start)?
    };
    let mut points = Vec::new();
    for solver_spec in &config.solvers {
        for &steps in &config.steps {
            let Some((out, nfe, calls)) = law_of(solver_spec, &grid_of(steps)?)? else {
                continue;
            };
            let (w2_t, kl_t) = match &tilt {
                Some(t) => (Some(out.w2(t)?), Some(out.kl(t)?)),
                None => (None, None),
            };
            points.push(Point {
                key: format!("gaussian|{sched}|{method}|{s}|{solver_spec}|{steps}"),
                part: "gaussian".into(),
                problem: config.gaussian.clone(),
                schedule: sched.into(),
                method: g.canonical.clone(),
                scale: s,
                solver: solver_spec.clone(),
                steps,
                nfe,
                oracle_calls: calls,
                w2_class: Some(out.w2(&class_law)?),
                kl_class: Some(out.kl(&class_law)?),
                w2_tilted: w2_t,
                kl_tilted: kl_t,
                w2_limit: Some(out.w2(&limit)?),
                kl_limit: Some(out.kl(&limit)?),
                ..Default::default()
            });
        }
    }
    Ok(points)
}

fn mixture_point(
    config: &Config,
    problem: &str,
    method: &str,
    spec: &str,
    s: f64,
    seed: u64,
) -> Result<Point> {
    let mixture = problems::load(problem)?;
    let cond = mixture.conditional(&config.class)?;
    let sc = schedule::parse("vp-linear")?;
    let sc = sc.as_ref();
    let grid = Grid::parse(
        &super::convergence::grid_spec("logsnr", config.mixture_steps, sc),
        sc,
    )?;
    let (at0, at_end) = (
        sc.level(grid.times[0]),
        sc.level(*grid.times.last().expect("grid")),
    );
    let guided = if method.starts_with("autoguidance") && !method.contains("guide=") {
        let g = Guidance::parse(&format!("{spec},guide=degraded.json"))?;
        Guided::new(
            Box::new(cond.clone()),
            Guide::Oracle(Box::new(degraded(&cond, config.degrade)?)),
            &g,
            Some(&grid.times),
        )?
    } else {
        Guidance::parse(spec)?.build(&mixture, &config.class, Some(&grid.times))?
    };
    let x_t = cond.sample_pt(config.samples, &at0, seed);
    let env = Env {
        schedule: sc,
        mixture: None,
        noise_seed: 0,
    };
    let counted = Counted::new(&guided);
    let model = Model::new(&counted, sc);
    let mut built = solver::build(&config.mixture_solver, &env)?;
    let x = solver::integrate(built.solver.as_mut(), &model, &grid, x_t.view())?;
    let classifier = Classifier::new(&mixture, &config.class)?;
    let precision = classifier
        .log_prob(x.view(), &at_end)?
        .mapv(f64::exp)
        .mean()
        .unwrap_or(0.0);
    let nl = nll(&cond, x.view(), &at_end)?;
    let exact = cond.sample_pt(config.samples, &at_end, seed ^ 0x9e37_79b9);
    let mut lp_exact = cond.log_density(exact.view(), &at_end)?.to_vec();
    lp_exact.sort_by(f64::total_cmp);
    let q = lp_exact[(lp_exact.len() as f64 * 0.001) as usize];
    let lp = cond.log_density(x.view(), &at_end)?;
    let off = lp.iter().filter(|&&l| l < q).count() as f64 / lp.len() as f64;
    let bw = median_bandwidth(x.view(), exact.view())?;
    let panel = if mixture.dim() == 2 && !is_cfgpp(method) && [1.0, 2.0, 4.0, 8.0].contains(&s) {
        x.rows()
            .into_iter()
            .take(PANEL_POINTS)
            .map(|r| [r[0], r[1]])
            .collect()
    } else {
        Vec::new()
    };
    Ok(Point {
        key: format!("mixture|{problem}|{method}|{s}"),
        part: "mixture".into(),
        problem: problem.into(),
        schedule: "vp-linear".into(),
        method: spec.into(),
        scale: s,
        solver: config.mixture_solver.clone(),
        steps: config.mixture_steps,
        nfe: counted.nfe(),
        oracle_calls: guided.counts().oracle_calls,
        precision: Some(precision),
        nll: Some(nl.value),
        nll_se: Some(nl.se),
        off_support: Some(off),
        mmd2: Some(mmd2(x.view(), exact.view(), bw)?),
        sliced_w2: Some(sliced_w2(x.view(), exact.view(), 64, seed)?),
        entropy: Some(entropy_knn(x.view(), KNN)?),
        entropy_exact_knn: Some(entropy_knn(exact.view(), KNN)?),
        entropy_class: Some(nll(&cond, exact.view(), &at_end)?.value),
        panel,
        ..Default::default()
    })
}

fn corrector_points(config: &Config, problem: &str, spec: &str) -> Result<Vec<Point>> {
    let mixture = problems::load(problem)?;
    let sc = schedule::parse("vp-linear")?;
    let sc = sc.as_ref();
    let (t0, t_end) = range(sc);
    let (at0, at_end) = (sc.level(t0), sc.level(t_end));
    let start = GaussianLaw::marginal(mixture.component(0), at0.alpha, at0.sigma);
    let target = GaussianLaw::marginal(mixture.component(0), at_end.alpha, at_end.sigma);
    let env = Env {
        schedule: sc,
        mixture: Some(&mixture),
        noise_seed: 0,
    };
    let mut points = Vec::new();
    for &steps in &config.corrector_steps {
        let grid = Grid::parse(&super::convergence::grid_spec("logsnr", steps, sc), sc)?;
        let counted = Counted::new(&mixture);
        let model = Model::new(&counted, sc);
        let mut built = solver::build(spec, &env)?;
        let law = output_law(built.solver.as_mut(), &model, &grid, &start)?;
        points.push(Point {
            key: format!("corrector|{problem}|{spec}|{steps}"),
            part: "corrector".into(),
            problem: problem.into(),
            schedule: "vp-linear".into(),
            method: "none".into(),
            solver: spec.into(),
            steps,
            nfe: counted.nfe(),
            oracle_calls: counted.nfe(),
            w2_target: Some(law.w2(&target)?),
            kl_target: Some(law.kl(&target)?),
            ..Default::default()
        });
    }
    Ok(points)
}
