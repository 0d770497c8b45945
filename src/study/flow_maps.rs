//! The `flow_maps` study: distilled and teacher-free few-step flow maps
//! ([`crate::flow_map::distill`], [`crate::flow_map::free`]; the models committed under `models`) measured against the exact map and against solvers, per
//! problem, on the vp-linear schedule and the distillation levels t_0 > ... > t_N
//! (`karras:steps=16,zero=true`: EDM's rho = 7 placement from sigma/alpha = 80, then sigma = 0).
//!
//! Per problem (a group), computed once: `heat_rows` exact trajectories from p_{t_0} through
//! every level (DOP853 at `reference_rtol`; the closed form for a Gaussian), `samples` points
//! x_{t_0} ~ p_{t_0} (the initial noise every sampler shares) and `samples` exact draws of p_0.
//!
//! Per map (a unit):
//! - the few-step frontier: samples from the shared x_{t_0} with k = `calls` network calls (a
//!   learned map along every N/k-th level, gamma = 0, or gamma = 1 for maps trained only onto
//!   t = 0; a pd student on its own k-step grid; a solver with NFE <= k, the largest step count
//!   n that fits, on the same every N/n-th level when n divides N, else on
//!   `karras:steps=n,zero=true` from the same t_0), each measured by
//!   [`crate::metrics::flow_map::quality`] against the exact p_0 (NLL, kNN entropy gap, MMD^2,
//!   sliced W2, the KL estimate NLL - H_kNN; the fitted-Gaussian W2 on gauss4), and the
//!   group's `floor` is the same
//!   measure of a second exact sample of the same size (the sampling error);
//! - the flow-map error heat map E|Psi^_{s->t}(x_s) - Psi_{s->t}(x_s)| on every pair of levels the
//!   map was made for (all pairs for anytime maps and one-step solver maps, the pairs onto
//!   t = 0 for cd, each pd student's adjacent pairs), and its boundary part (t = 0);
//! - the semigroup defect against the map's own composition on the triples of every other level
//!   (anytime maps and one-step solver maps; cd and pd have no two-leg composition);
//! - training cost from the model's log: wall time (and its CPU), optimizer steps, samples seen.
//!
//! On a two-dimensional problem the first [`PANEL`] samples at 1 and 2 calls (and of the exact
//! draws) are kept for the sample panels.

use super::{GroupCache, Keyed, Study, Unit};
use crate::error::{Error, Result};
use crate::flow_map::net::FlowNet;
use crate::flow_map::{self, grid_between, FlowMap, SolverMap};
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::metrics::distribution;
use crate::metrics::flow_map::{self as fm, Defect, PairError, Quality};
use crate::oracle::Oracle;
use crate::rng::seed_for;
use crate::schedule::{self, Schedule};
use crate::solver::{self, Env, Model};
use crate::{flow_map::distill, problems, Counted};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub problems: Vec<String>,
    pub schedule: String,
    pub levels: String,
    /// The directory of `{problem}_{method}.safetensors` (pd: `{problem}_pd_{k}.safetensors`)
    /// with the `distill` logs `{problem}_{method}.json`; a method may carry a variant label,
    /// `method-variant` (ablations).
    pub models: String,
    pub methods: Vec<String>,
    pub solvers: Vec<String>,
    pub calls: Vec<usize>,
    pub samples: usize,
    pub heat_rows: usize,
    pub reference_rtol: f64,
    pub seed: u64,
}

impl Config {
    /// The committed study.
    pub fn main() -> Self {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Config {
            problems: v(&["gauss4", "ring2d", "aniso16"]),
            schedule: "vp-linear".into(),
            levels: "karras:steps=16,zero=true".into(),
            models: "results/models/flow_maps".into(),
            methods: v(&[
                "direct", "cd", "ctm", "pd", "ct", "scm", "meanflow", "shortcut", "lsd", "esd",
                "psd",
            ]),
            solvers: v(&["dpm-solver++", "unipc", "heun", "ddim"]),
            calls: vec![1, 2, 4, 8],
            samples: 4000,
            heat_rows: 500,
            reference_rtol: 1e-12,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub levels: Vec<f64>,
    /// The quality measure of a second exact sample: the sampling error of every quality number.
    pub floor: Quality,
    pub bandwidth: f64,
    /// The first [`PANEL`] exact draws of p_0 of a two-dimensional problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panel: Option<Vec<[f64; 2]>>,
}

/// Samples kept per sample panel.
pub const PANEL: usize = 400;

/// The first [`PANEL`] rows of `x` when it is two-dimensional and `calls` <= 2.
fn panel(x: &Array2<f64>, calls: usize) -> Option<Vec<[f64; 2]>> {
    (x.ncols() == 2 && calls <= 2)
        .then(|| x.outer_iter().take(PANEL).map(|r| [r[0], r[1]]).collect())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frontier {
    pub calls: usize,
    /// Network calls (learned maps) or model evaluations (solvers) actually made.
    pub nfe: usize,
    /// Solver steps or flow-map steps.
    pub steps: usize,
    pub gamma: Option<f64>,
    pub quality: Quality,
    /// The first [`PANEL`] samples, for a two-dimensional problem at 1 and 2 calls (the
    /// sample panels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panel: Option<Vec<[f64; 2]>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semigroup {
    pub mean: f64,
    pub max: f64,
    pub triples: usize,
    pub defects: Vec<Defect>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub wall_seconds: f64,
    pub optimizer_steps: usize,
    pub samples_seen: usize,
    pub n_params: usize,
    /// The last logged validation MSE against the exact map (of the last stage, for pd).
    pub final_val_mse: Option<f64>,
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub unit: String,
    pub problem: String,
    /// The method (learned) or the solver spec.
    pub map: String,
    pub learned: bool,
    pub param: Option<String>,
    pub frontier: Vec<Frontier>,
    pub heat: Vec<PairError>,
    /// The mean of `heat` over its pairs onto t = 0.
    pub boundary: f64,
    pub semigroup: Option<Semigroup>,
    pub training: Option<Training>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub problem: String,
    pub calls: usize,
    pub learned: String,
    pub learned_kl: f64,
    pub solver: String,
    pub solver_kl: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Yardstick {
    pub problem: String,
    pub method: String,
    /// Mean heat-map error over the method's pairs, divided by direct's on the same pairs.
    pub heat_ratio: f64,
    /// Sliced W2 at each of `calls`, divided by direct's.
    pub sliced_w2_ratio: Vec<Option<f64>>,
    /// The KL estimate at each of `calls` minus direct's.
    pub kl_excess: Vec<Option<f64>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Per problem and call count: the best learned map and the best solver by the KL estimate.
    pub best: Vec<Best>,
    pub yardstick: Vec<Yardstick>,
}

impl Keyed for Group {
    fn key(&self) -> &str {
        &self.key
    }
}
impl Keyed for Point {
    fn key(&self) -> &str {
        &self.unit
    }
}

/// The data a problem's units share.
struct Data {
    mixture: GaussianMixture,
    schedule: Box<dyn Schedule>,
    pool: Vec<Array2<f64>>,
    prior: Array2<f64>,
    exact: Array2<f64>,
    exact_entropy: f64,
    group: Group,
}

#[derive(Default)]
pub struct FlowMaps {
    cache: GroupCache<Data>,
}

fn data(config: &Config, problem: &str) -> Result<Data> {
    let mixture = problems::load(problem)?;
    let schedule = schedule::parse(&config.schedule)?;
    let levels = Grid::parse(&config.levels, schedule.as_ref())?.times;
    crate::limits::elements("flow_maps config", "samples", config.samples, mixture.dim())?;
    crate::limits::elements(
        "flow_maps config",
        "heat_rows",
        config.heat_rows.saturating_mul(levels.len()),
        mixture.dim(),
    )?;
    let teacher = distill::Teacher {
        mixture: &mixture,
        schedule: schedule.as_ref(),
        levels: levels.clone(),
    };
    let seed = seed_for(config.seed, problem);
    let pool = distill::pool(&teacher, config.heat_rows, config.reference_rtol, seed)?;
    let prior = mixture.sample_pt(
        config.samples,
        &schedule.level(levels[0]),
        seed_for(seed, "prior"),
    );
    let exact = mixture.sample_p0(config.samples, seed_for(seed, "exact"));
    let second = mixture.sample_p0(config.samples, seed_for(seed, "second exact"));
    let bandwidth = distribution::median_bandwidth(exact.view(), second.view())?;
    let exact_entropy = distribution::entropy_knn(exact.view(), fm::KNN)?;
    let floor = fm::quality(
        &mixture,
        second.view(),
        exact.view(),
        exact_entropy,
        bandwidth,
        seed_for(seed, "sliced"),
    )?;
    Ok(Data {
        group: Group {
            key: problem.into(),
            levels,
            floor,
            bandwidth,
            panel: panel(&exact, 0),
        },
        mixture,
        schedule,
        pool,
        prior,
        exact,
        exact_entropy,
    })
}

fn model_path(config: &Config, problem: &str, method: &str, k: Option<usize>) -> String {
    match k {
        Some(k) => format!("{}/{problem}_{method}_{k}.safetensors", config.models),
        None => format!("{}/{problem}_{method}.safetensors", config.models),
    }
}

fn training(config: &Config, problem: &str, method: &str) -> Result<Training> {
    let path = format!("{}/{problem}_{method}.json", config.models);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(Path::new(&path), e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(&path, None, format!("not JSON: {e}")))?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| Error::invalid(&path, Some(k.into()), "missing or not a number"))
    };
    Ok(Training {
        wall_seconds: num("wall_seconds")?,
        optimizer_steps: num("optimizer_steps")? as usize,
        samples_seen: num("samples_seen")? as usize,
        n_params: num("n_params")? as usize,
        final_val_mse: v["stages"]
            .as_array()
            .and_then(|s| s.last())
            .and_then(|s| s["final_val_loss"].as_f64()),
        cpu: v["provenance"]["machine"]["cpu"].as_str().map(String::from),
    })
}

/// The method of a model label `method[-variant]` (e.g. `meanflow-uniform`, an ablation's
/// model `{problem}_meanflow-uniform.safetensors`).
fn method_of(label: &str) -> Result<distill::Method> {
    label.split('-').next().unwrap_or(label).parse()
}

/// Every other level's triples (i < m < j), as indices into the levels.
fn coarse_triples(n: usize) -> Vec<(usize, usize, usize)> {
    fm::triples(n / 2)
        .into_iter()
        .map(|(i, m, j)| (2 * i, 2 * m, 2 * j))
        .collect()
}

fn semigroup(map: &dyn FlowMap, d: &Data) -> Result<Semigroup> {
    let levels = &d.group.levels;
    let defects = fm::semigroup_defect(map, levels, &d.pool, &coarse_triples(levels.len() - 1))?;
    Ok(Semigroup {
        mean: defects.iter().map(|x| x.mean_norm).sum::<f64>() / defects.len() as f64,
        max: defects.iter().fold(0.0, |m, x| m.max(x.mean_norm)),
        triples: defects.len(),
        defects,
    })
}

fn boundary(heat: &[PairError], n: usize) -> f64 {
    let b: Vec<f64> = heat
        .iter()
        .filter(|p| p.j == n)
        .map(|p| p.mean_norm)
        .collect();
    b.iter().sum::<f64>() / b.len().max(1) as f64
}

impl FlowMaps {
    fn quality(&self, config: &Config, d: &Data, x: &Array2<f64>) -> Result<Quality> {
        fm::quality(
            &d.mixture,
            x.view(),
            d.exact.view(),
            d.exact_entropy,
            d.group.bandwidth,
            seed_for(seed_for(config.seed, &d.group.key), "sliced"),
        )
    }

    fn learned(&self, config: &Config, d: &Data, problem: &str, method: &str) -> Result<Point> {
        let levels = &d.group.levels;
        let n = levels.len() - 1;
        let m = method_of(method)?;
        let load = |k: Option<usize>| -> Result<FlowNet> {
            let map = FlowNet::load(model_path(config, problem, method, k))?;
            if map.schedule.spec() != d.schedule.spec() || map.dim() != d.mixture.dim() {
                return Err(Error::Domain(format!(
                    "{}: trained under '{}' in dimension {}, the study runs '{}' in {}",
                    model_path(config, problem, method, k),
                    map.schedule.spec(),
                    map.dim(),
                    d.schedule.spec(),
                    d.mixture.dim()
                )));
            }
            Ok(map)
        };
        let mut frontier = Vec::new();
        let mut heat = Vec::new();
        let mut param = None;
        let mut semi = None;
        if m == distill::Method::Pd {
            for &k in &config.calls {
                if k > n || !n.is_multiple_of(k) {
                    continue;
                }
                let map = load(Some(k))?;
                param = Some(map.param.name().to_string());
                let times = FlowMap::levels(&map).map(<[f64]>::to_vec).ok_or_else(|| {
                    Error::Domain(format!(
                        "{}: not a progressive-distillation student (no grid_only levels)",
                        model_path(config, problem, method, Some(k))
                    ))
                })?;
                let x =
                    flow_map::sample(&map, d.schedule.as_ref(), &times, d.prior.view(), 0.0, 0)?;
                frontier.push(Frontier {
                    calls: k,
                    nfe: map.calls(),
                    steps: k,
                    gamma: Some(0.0),
                    quality: self.quality(config, d, &x)?,
                    panel: panel(&x, k),
                });
                let stride = n / k;
                let pairs: Vec<(usize, usize)> =
                    (0..k).map(|i| (i * stride, (i + 1) * stride)).collect();
                heat.extend(fm::map_error(&map, levels, &d.pool, &pairs)?);
            }
        } else {
            let map = load(None)?;
            param = Some(map.param.name().to_string());
            let gamma = if map.anytime() { 0.0 } else { 1.0 };
            for &k in &config.calls {
                let Some(times) = flow_map::every(levels, k) else {
                    continue;
                };
                let before = map.calls();
                let x = flow_map::sample(
                    &map,
                    d.schedule.as_ref(),
                    &times,
                    d.prior.view(),
                    gamma,
                    seed_for(config.seed, "gamma"),
                )?;
                frontier.push(Frontier {
                    calls: k,
                    nfe: map.calls() - before,
                    steps: k,
                    gamma: Some(gamma),
                    quality: self.quality(config, d, &x)?,
                    panel: panel(&x, k),
                });
            }
            heat = fm::map_error(&map, levels, &d.pool, &fm::pairs(n, !map.anytime()))?;
            if map.anytime() {
                semi = Some(semigroup(&map, d)?);
            }
        }
        Ok(Point {
            unit: format!("{problem}|{method}"),
            problem: problem.into(),
            map: method.into(),
            learned: true,
            param,
            frontier,
            boundary: boundary(&heat, n),
            heat,
            semigroup: semi,
            training: Some(training(config, problem, method)?),
        })
    }

    fn solver(&self, config: &Config, d: &Data, problem: &str, spec: &str) -> Result<Point> {
        let levels = &d.group.levels;
        let n = levels.len() - 1;
        let env = Env {
            schedule: d.schedule.as_ref(),
            mixture: Some(&d.mixture),
            noise_seed: 0,
        };
        let (t0, t_end) = (levels[0], levels[n]);
        let grid = |steps: usize| match flow_map::every(levels, steps) {
            Some(times) => Grid::explicit(times, "levels", d.schedule.as_ref()),
            None => grid_between("karras", d.schedule.as_ref(), t0, t_end, steps),
        };
        let nfe = |steps: usize| -> Result<usize> {
            if steps == 0 {
                return Ok(0);
            }
            let built = solver::build(spec, &env)?;
            built
                .solver
                .nfe(&grid(steps)?, d.schedule.as_ref())
                .ok_or_else(|| Error::Domain(format!("solver '{spec}' has no fixed NFE")))
        };
        let mut frontier = Vec::new();
        for (target, steps) in super::step_counts(&config.calls, nfe)? {
            let mut built = solver::build(spec, &env)?;
            let oracle = Counted::new(&d.mixture as &dyn Oracle);
            let model = Model::new(&oracle, d.schedule.as_ref());
            let x =
                solver::integrate(built.solver.as_mut(), &model, &grid(steps)?, d.prior.view())?;
            frontier.push(Frontier {
                calls: target,
                nfe: oracle.nfe(),
                steps,
                gamma: None,
                quality: self.quality(config, d, &x)?,
                panel: panel(&x, target),
            });
        }
        let map = SolverMap::new(
            &d.mixture,
            d.schedule.as_ref(),
            Some(&d.mixture),
            spec,
            "karras",
            1,
        )?;
        let heat = fm::map_error(&map, levels, &d.pool, &fm::pairs(n, false))?;
        Ok(Point {
            unit: format!("{problem}|solver:{spec}"),
            problem: problem.into(),
            map: spec.into(),
            learned: false,
            param: None,
            frontier,
            boundary: boundary(&heat, n),
            heat,
            semigroup: Some(semigroup(&map, d)?),
            training: None,
        })
    }
}

impl Study for FlowMaps {
    const KIND: &'static str = "flow_maps";
    const VERSION: u32 = 1;
    type Config = Config;
    type Group = Group;
    type Point = Point;
    type Summary = Summary;

    fn units(config: &Config) -> Result<Vec<Unit>> {
        super::require_nonempty(
            Self::KIND,
            &[
                ("problems", config.problems.len()),
                ("calls", config.calls.len()),
            ],
        )?;
        for m in &config.methods {
            method_of(m)?;
        }
        if config.samples <= fm::KNN || config.heat_rows == 0 {
            return Err(super::bad_option(
                Self::KIND,
                "samples",
                format!(
                    "need samples > {} (the kNN entropy) and heat_rows >= 1",
                    fm::KNN
                ),
            ));
        }
        let mut units = Vec::new();
        for p in &config.problems {
            for m in &config.methods {
                units.push(Unit {
                    key: format!("{p}|{m}"),
                    group: p.clone(),
                });
            }
            for s in &config.solvers {
                units.push(Unit {
                    key: format!("{p}|solver:{s}"),
                    group: p.clone(),
                });
            }
        }
        Ok(units)
    }

    fn run(&self, config: &Config, unit: &Unit) -> Result<(Group, Vec<Point>)> {
        let d = self.cache.get(&unit.group, || data(config, &unit.group))?;
        let (_, map) = unit.key.split_once('|').expect("unit key");
        let point = match map.strip_prefix("solver:") {
            Some(spec) => self.solver(config, &d, &unit.group, spec)?,
            None => self.learned(config, &d, &unit.group, map)?,
        };
        Ok((d.group.clone(), vec![point]))
    }

    fn summarize(config: &Config, _: &[Group], points: &[Point]) -> Summary {
        let mut summary = Summary::default();
        let at = |p: &Point, k: usize| p.frontier.iter().find(|f| f.calls == k).map(|f| f.quality);
        let sw2 = |p: &Point, k: usize| at(p, k).map(|q| q.sliced_w2);
        let kl = |p: &Point, k: usize| at(p, k).map(|q| q.kl);
        for problem in &config.problems {
            let of: Vec<&Point> = points.iter().filter(|p| &p.problem == problem).collect();
            for &k in &config.calls {
                let best = |learned: bool| {
                    of.iter()
                        .filter(|p| p.learned == learned)
                        .filter_map(|p| kl(p, k).map(|v| (p.map.clone(), v)))
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                };
                if let (Some(l), Some(s)) = (best(true), best(false)) {
                    summary.best.push(Best {
                        problem: problem.clone(),
                        calls: k,
                        learned: l.0,
                        learned_kl: l.1,
                        solver: s.0,
                        solver_kl: s.1,
                    });
                }
            }
            let Some(direct) = of.iter().find(|p| p.learned && p.map == "direct") else {
                continue;
            };
            for p in of.iter().filter(|p| p.learned && p.map != "direct") {
                let (mut mine, mut theirs) = (0.0, 0.0);
                for e in &p.heat {
                    if let Some(o) = direct.heat.iter().find(|o| o.i == e.i && o.j == e.j) {
                        mine += e.mean_norm;
                        theirs += o.mean_norm;
                    }
                }
                summary.yardstick.push(Yardstick {
                    problem: problem.clone(),
                    method: p.map.clone(),
                    heat_ratio: mine / theirs,
                    sliced_w2_ratio: config
                        .calls
                        .iter()
                        .map(|&k| match (sw2(p, k), sw2(direct, k)) {
                            (Some(a), Some(b)) => Some(a / b),
                            _ => None,
                        })
                        .collect(),
                    kl_excess: config
                        .calls
                        .iter()
                        .map(|&k| Some(kl(p, k)? - kl(direct, k)?))
                        .collect(),
                });
            }
        }
        summary
    }
}
