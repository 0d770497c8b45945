//! The `guidance` study: what guided samplers produce, measured against exact laws.
//!
//! Gaussian part: class `class` and guide class `guide` of `gaussian` are single Gaussians, so
//! the CFG-guided prediction is affine in x and every deterministic solver is an affine map;
//! its output law from x_T ~ p_T(x | c) is exact by d + 1 probe runs ([`GaussianLaw`]). Each
//! (schedule, method, scale, solver, steps) point gives W2 and KL of that law against (a) the
//! class law p(x | c), (b) the tilted law p(x | c)^s p_guide(x)^(1 - s) (Gaussian with precision
//! s P_c + (1 - s) P_g when that is positive definite; absent otherwise), both at the grid's last
//! time, and (c) the law of the guided ODE itself (the reference solver on the same oracle).
//!
//! Mixture part: on each labelled mixture, N samples of each guidance method at each scale
//! (from p_T(x | c), one solver at a fixed step count): class precision (mean exact
//! p_t(c | x)), NLL under p_t(x | c), the fraction off the class support (ln p_t(x | c) below
//! the 0.1% quantile of exact samples), MMD^2 (median-heuristic Gaussian kernel) and sliced W2
//! against N exact samples of p_t(x | c), at the grid's last time t. Autoguidance's guide is a
//! degraded copy of the class: every covariance times `degrade`. For 2-D problems the first
//! [`PANEL_POINTS`] samples are kept for the sample panels.

use super::convergence::range;
use super::{require_nonempty, Keyed, Study, Unit};
use crate::error::{Error, Result};
use crate::gmm::{GaussianMixture, MixtureSpec};
use crate::grid::Grid;
use crate::guidance::{Classifier, Guidance, Guide, Guided};
use crate::metrics::distribution::{median_bandwidth, mmd2, nll, sliced_w2};
use crate::metrics::law::GaussianLaw;
use crate::rng::seed_for;
use crate::solver::{self, Env, Model};
use crate::{problems, schedule, Counted, Oracle};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Samples kept per 2-D mixture point for the panels.
pub const PANEL_POINTS: usize = 400;

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
    pub seed: u64,
}

impl Config {
    pub fn main() -> Self {
        Config {
            gaussian: "gauss2c".into(),
            class: "A".into(),
            guide: "B".into(),
            schedules: vec!["vp-linear".into(), "flow".into()],
            gaussian_methods: vec!["cfg".into(), "interval:sigma_lo=0.28,sigma_hi=5.42".into()],
            solvers: vec![
                "ddim".into(),
                "dpm-solver++:order=2".into(),
                "unipc".into(),
                "heun".into(),
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
            ],
            mixture_solver: "dpm-solver++:order=2".into(),
            mixture_steps: 32,
            samples: 2000,
            degrade: 2.0,
            reference: "reference".into(),
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
}

pub struct GuidanceStudy;

/// `method` with `scale=s` added.
fn with_scale(method: &str, s: f64) -> String {
    match method.split_once(':') {
        Some((name, rest)) => format!("{name}:scale={s},{rest}"),
        None => format!("{method}:scale={s}"),
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
        for &s in &config.scales {
            for m in &config.gaussian_methods {
                Guidance::parse(&with_scale(m, s))?;
                for sched in &config.schedules {
                    schedule::parse(sched)?;
                    let key = format!("gaussian|{sched}|{m}|{s}");
                    units.push(Unit {
                        key: key.clone(),
                        group: key,
                    });
                }
            }
            for p in &config.mixtures {
                problems::load(p)?.conditional(&config.class)?;
                for m in &config.mixture_methods {
                    let spec = if m.starts_with("autoguidance") && !m.contains("guide=") {
                        with_scale(m, s) + ",guide=degraded.json"
                    } else {
                        with_scale(m, s)
                    };
                    Guidance::parse(&spec)?;
                    let key = format!("mixture|{p}|{m}|{s}");
                    units.push(Unit {
                        key: key.clone(),
                        group: key,
                    });
                }
            }
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
            guidance: spec.clone(),
        };
        let points = if part == "gaussian" {
            gaussian_points(config, what, method, &spec, s)?
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
    let probes = start.probes();
    let law_of = |solver_spec: &str, grid: &Grid| -> Result<(GaussianLaw, usize, usize)> {
        let guided = g.build(&mixture, &config.class, Some(&grid.times))?;
        let counted = Counted::new(&guided);
        let model = Model::new(&counted, sc);
        let mut built = solver::build(solver_spec, &env)?;
        let img = solver::integrate(built.solver.as_mut(), &model, grid, probes.view())?;
        Ok((
            start.pushed(img.view())?,
            counted.nfe(),
            guided.counts().oracle_calls,
        ))
    };
    let grid_of =
        |steps: usize| Grid::parse(&super::convergence::grid_spec("logsnr", steps, sc), sc);
    let (limit, _, _) = law_of(&config.reference, &grid_of(64)?)?;
    let mut points = Vec::new();
    for solver_spec in &config.solvers {
        for &steps in &config.steps {
            let (out, nfe, calls) = law_of(solver_spec, &grid_of(steps)?)?;
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
    let panel = if mixture.dim() == 2 && [1.0, 2.0, 4.0, 8.0].contains(&s) {
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
        panel,
        ..Default::default()
    })
}
