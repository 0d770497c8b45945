//! Distillation of a flow map from a teacher that is the exact model, so that the teacher error
//! is zero (or, for progressive distillation, the exact model's own DDIM error) and what remains
//! is learning error. Every method is a regression of the student Psi_theta(x_s, s, t) onto a
//! stop-gradient target y with a weight w,
//!
//! L(theta) = 1/(N d) sum_i w_i |Psi_theta(x_i, s_i, t_i) - y_i|^2,
//!
//! minimised by the trainer of [`crate::nn::train`] (Adam, warm-up and cosine decay, seeded
//! batches, the EMA, a loss log; bit-identical at any thread count). All methods work on one
//! grid of levels t_0 > ... > t_N (a grid spec, `karras:steps=16,zero=true` by default: EDM's
//! rho = 7 placement with a final level at sigma = 0). Row r of the batch of step k draws its
//! indices and noise from stream (seed_for(seed, "step k"), 12, r), x0 from the mixture with the
//! step's seed.
//!
//! - [`Method::Direct`], the yardstick: regression onto the exact map. A pool of `pool`
//!   trajectories x_{t_0} ~ p_{t_0} pushed through every level by the reference solver
//!   (DOP853, rtol 1e-12; the closed form for a Gaussian), so x_{t_i} ~ p_{t_i} exactly; pairs
//!   i < j as below, y = the pool's point at t_j, w = 1. No anchor in the literature has it: it
//!   is the best the architecture does for the compute.
//! - [`Method::Cd`], consistency distillation (Song et al. 2023, Alg. 2 and eq. 7): n uniform
//!   on 0..N-1, x_{t_n} = alpha x0 + sigma z, one teacher step (`teacher`, Heun by default)
//!   of the exact model to x^_{t_{n+1}}, y = Psi_{theta^-}(x^_{t_{n+1}}, t_{n+1}, 0) through the
//!   EMA copy theta^- (decay `ema`, 0.95 as Song et al. for CD; y = x^ itself when t_{n+1} is the
//!   last level), t = 0 (the final level) always, w = 1 (their lambda = 1 with the L2 metric).
//!   N is fixed (the paper's CD uses N = 18 on CIFAR-10).
//! - [`Method::Ctm`], consistency trajectory models (Kim et al. 2024, eq. 8, soft consistency):
//!   a pair i < j, u = t_k with k uniform on i+1..=j, teacher steps of the exact model from
//!   t_i to t_k, y = G_{theta^-}(x^_{t_k}, t_k, t_j) (x^ itself when k = j). The official CTM
//!   compares both sides after a further map to t = 0 in a feature space (LPIPS) and adds a DSM
//!   and a GAN loss; here the L2 distance at t_j, and no auxiliary loss.
//! - [`Method::Pd`], progressive distillation (Salimans & Ho 2022, Alg. 2): stages b = 1, 2, ...
//!   with grids of N/2^b steps (every 2^b-th level). In stage b the student with the `ddim`
//!   parameterisation learns two DDIM steps of the teacher (stage 1: the exact model's x0 on the
//!   N-level grid; later: the previous student) from t_i through the middle level to t_{i+1}:
//!   x~ = (z'' - (sigma''/sigma) z)/(alpha'' - (sigma''/sigma) alpha), loss
//!   max(SNR(t_i), 1) |x^_theta - x~|^2 (truncated-SNR weighting). With Psi = A z + B x^_theta,
//!   that is w = max(SNR, 1)/B^2 on Psi - z''. Each stage starts from the previous student and
//!   trains `steps` steps; every stage's student is returned.
//!
//! Time pairs (direct, ctm): i uniform on 0..N-1, then j = N with probability `zero_fraction`,
//! else uniform on i+1..=N.
//!
//! The logged validation loss is the same measure for every method: the unweighted mean squared
//! error against the exact map, 1/(N d) sum |Psi_theta(x_s, s, t) - Psi(x_s)|^2, on `val_size`
//! fixed exact trajectories (seed_for(seed, "validation")) at the method's own pairs (cd: onto
//! t = 0; pd: the stage's adjacent levels). The training loss of cd and ctm chases a moving EMA
//! target and need not fall; this one must.

use super::free::{Context, Options};
use super::loss::{Linear, Loss};
use super::net::{eval_rows, FlowNet};
use super::param::Param;
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::grid::Grid;
use crate::nn::train::{fit, LogEntry, Objective, Optim};
use crate::nn::Mlp;
use crate::oracle::Oracle;
use crate::rng::{seed_for, RowRng};
use crate::schedule::Schedule;
use crate::solver::{self, Env, Model};
use crate::spec::Spec;
use ndarray::{s, Array2, Axis};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Direct,
    Cd,
    Ctm,
    Pd,
    Ct,
    Scm,
    MeanFlow,
    Shortcut,
    Lsd,
    Esd,
    Psd,
}

/// The distillation methods, then the teacher-free ones of [`super::free`].
pub const METHODS: [&str; 11] = [
    "direct", "cd", "ctm", "pd", "ct", "scm", "meanflow", "shortcut", "lsd", "esd", "psd",
];

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        const ALL: [Method; 11] = [
            Method::Direct,
            Method::Cd,
            Method::Ctm,
            Method::Pd,
            Method::Ct,
            Method::Scm,
            Method::MeanFlow,
            Method::Shortcut,
            Method::Lsd,
            Method::Esd,
            Method::Psd,
        ];
        match METHODS.iter().position(|&m| m == s) {
            Some(i) => Ok(ALL[i]),
            None => Err(Error::Domain(format!(
                "unknown flow-map method '{s}' (valid: {})",
                METHODS.join(", ")
            ))),
        }
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        METHODS[self as usize]
    }
    /// The parameterisation each method trains by default.
    pub fn default_param(self) -> &'static str {
        match self {
            Method::Direct => "mean-velocity",
            Method::Cd => "consistency",
            Method::Ctm => "ctm",
            Method::Pd => "ddim",
            Method::Ct => "consistency",
            Method::Scm => "trigflow",
            _ => "mean-velocity",
        }
    }
    /// Whether the map is trained for every pair of levels.
    pub fn anytime(self) -> bool {
        !matches!(self, Method::Cd | Method::Pd | Method::Ct | Method::Scm)
    }
    /// Whether the method learns from data alone ([`super::free`]).
    pub fn teacher_free(self) -> bool {
        self as usize >= Method::Ct as usize
    }
    /// The target EMA decay a method uses unless told otherwise: 0.95 for cd and ctm (Song et al.
    /// 2023), 0.999 for shortcut's bootstrap target (the official code), none otherwise.
    pub fn default_ema(self) -> f64 {
        match self {
            Method::Cd | Method::Ctm => 0.95,
            Method::Shortcut => 0.999,
            _ => 0.0,
        }
    }
}

/// A method spec `name[:key=value,...]`: the method and, for a teacher-free one, its options
/// (defaults at data scale `sigma_data` and dimension `d`, see [`super::free`]).
pub fn parse_method(text: &str, sigma_data: f64, d: usize) -> Result<(Method, Option<Options>)> {
    let mut spec = Spec::parse("method", text)?;
    let method: Method = spec.name.parse()?;
    let options = match method.teacher_free() {
        true => Some(Options::take(method.name(), &mut spec, sigma_data, d)?),
        false => None,
    };
    spec.finish()?;
    Ok((method, options))
}

#[derive(Debug, Clone, Serialize)]
pub struct DistillConfig {
    pub method: Method,
    /// The grid spec of the levels.
    pub levels: String,
    pub batch: usize,
    pub optim: Optim,
    pub zero_fraction: f64,
    /// The teacher's solver spec (cd, ctm).
    pub teacher: String,
    /// Reference trajectories in the pool (direct).
    pub pool: usize,
    pub reference_rtol: f64,
    pub val_size: usize,
    pub seed: u64,
    /// The options of a teacher-free method.
    pub options: Option<Options>,
    /// The data scale sigma_d (teacher-free methods).
    pub sigma_data: f64,
}

/// The rows of one regression batch.
pub struct Targets {
    pub x: Array2<f64>,
    pub s: Vec<f64>,
    pub t: Vec<f64>,
    pub y: Array2<f64>,
    pub w: Vec<f64>,
}

/// The weighted regression loss of the module doc and its gradient (the map-space case of
/// [`super::loss::regression`] with the `l2` loss).
pub fn regression(
    param: &Param,
    net: &Mlp,
    schedule: &dyn Schedule,
    rows: &Targets,
    want_grad: bool,
) -> (f64, Vec<f64>) {
    let linear = Linear::map_space(
        param,
        schedule,
        rows.x.clone(),
        rows.s.clone(),
        rows.t.clone(),
        rows.y.clone(),
        rows.w.clone(),
    );
    super::loss::regression(param, net, schedule, Loss::L2, &linear, want_grad)
}

/// The exact teacher: the mixture's oracle under the schedule, on the grid of levels.
pub struct Teacher<'a> {
    pub mixture: &'a GaussianMixture,
    pub schedule: &'a dyn Schedule,
    pub levels: Vec<f64>,
}

impl Teacher<'_> {
    /// The points at every time of `times` of the registered solver `spec` run on the exact model
    /// from `x` at `times[0]`.
    fn trajectory(&self, spec: &str, times: &[f64], x: &Array2<f64>) -> Result<Vec<Array2<f64>>> {
        let grid = Grid::explicit(times.to_vec(), "levels", self.schedule)?;
        let env = Env {
            schedule: self.schedule,
            mixture: Some(self.mixture),
            noise_seed: 0,
        };
        let mut built = solver::build(spec, &env)?;
        let model = Model::new(self.mixture as &dyn Oracle, self.schedule);
        Ok(solver::trajectory(built.solver.as_mut(), &model, &grid, x.view())?.1)
    }

    /// For rows `x` at level i each with its own end level k_r > i: the `solver` run along the
    /// levels from t_i, each row taken at its t_{k_r}.
    fn solve_from(
        &self,
        solver: &str,
        i: usize,
        x: Array2<f64>,
        k: &[usize],
    ) -> Result<Array2<f64>> {
        let k_max = k.iter().copied().max().unwrap_or(i);
        let states = self.trajectory(solver, &self.levels[i..=k_max], &x)?;
        let mut out = Array2::zeros(x.dim());
        for (r, &kr) in k.iter().enumerate() {
            out.row_mut(r).assign(&states[kr - i].row(r));
        }
        Ok(out)
    }

    /// Each row r of `x` (at level `from[r]`) taken by `solver` to level `to[r]`, grouped by the
    /// source level (one run per group, in order of the level).
    pub fn solve(
        &self,
        solver: &str,
        x: &Array2<f64>,
        from: &[usize],
        to: &[usize],
    ) -> Result<Array2<f64>> {
        let mut out = x.clone();
        for i in 0..self.levels.len() {
            let rows: Vec<usize> = (0..from.len())
                .filter(|&r| from[r] == i && to[r] > i)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let xs = x.select(Axis(0), &rows);
            let k: Vec<usize> = rows.iter().map(|&r| to[r]).collect();
            let y = self.solve_from(solver, i, xs, &k)?;
            for (j, &r) in rows.iter().enumerate() {
                out.row_mut(r).assign(&y.row(j));
            }
        }
        Ok(out)
    }
}

/// x_{t_i} = alpha x0 + sigma z for each row at its own level.
fn noised(teacher: &Teacher, x0: &Array2<f64>, z: &Array2<f64>, level: &[usize]) -> Array2<f64> {
    let mut x = x0.clone();
    for (r, mut row) in x.outer_iter_mut().enumerate() {
        let at = teacher.schedule.level(teacher.levels[level[r]]);
        row.zip_mut_with(&z.row(r), |x, &z| *x = at.alpha * *x + at.sigma * z);
    }
    x
}

/// A pair i < j of the module doc.
fn pair(rng: &mut RowRng, n: usize, zero_fraction: f64) -> (usize, usize) {
    let i = ((rng.uniform() * n as f64) as usize).min(n - 1);
    let j = if rng.uniform() < zero_fraction {
        n
    } else {
        i + 1 + ((rng.uniform() * (n - i) as f64) as usize).min(n - i - 1)
    };
    (i, j)
}

fn index(rng: &mut RowRng, lo: usize, hi: usize) -> usize {
    lo + ((rng.uniform() * (hi - lo + 1) as f64) as usize).min(hi - lo)
}

/// Psi of `net` at per-row levels (indices into `levels`), in one parallel pass of blocks.
fn map_rows(
    param: &Param,
    net: &Mlp,
    schedule: &dyn Schedule,
    levels: &[f64],
    x: &Array2<f64>,
    from: &[usize],
    to: &[usize],
) -> Array2<f64> {
    let s: Vec<f64> = from.iter().map(|&i| levels[i]).collect();
    let t: Vec<f64> = to.iter().map(|&i| levels[i]).collect();
    let mut out = Array2::zeros(x.dim());
    let rows = crate::oracle::CHUNK_ROWS;
    out.axis_chunks_iter_mut(Axis(0), rows)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut o)| {
            let r = b * rows..(b * rows + o.nrows());
            o.assign(&eval_rows(
                param,
                net,
                schedule,
                x.slice(s![r.clone(), ..]),
                &s[r.clone()],
                &t[r],
            ));
        });
    out
}

/// The objective of one method (one stage, for pd).
struct Distill<'a> {
    config: &'a DistillConfig,
    param: Param,
    teacher: &'a Teacher<'a>,
    /// The reference trajectories at every level (direct).
    pool: Option<&'a [Array2<f64>]>,
    /// The validation trajectories.
    val_pool: &'a [Array2<f64>],
    /// pd: the stage's grid (indices into the levels, every 2^b-th) and the previous student.
    stage: Option<(Vec<usize>, Option<&'a Mlp>)>,
    seed: u64,
    /// The RMS of the last batch's JVP (teacher-free methods that take one).
    jvp: Mutex<Option<f64>>,
}

impl Distill<'_> {
    /// The pair (i, j) of levels a row of this method trains on.
    fn pair_of(&self, rng: &mut RowRng) -> (usize, usize) {
        let n = self.teacher.levels.len() - 1;
        match (&self.config.method, &self.stage) {
            (Method::Cd | Method::Ct | Method::Scm, _) => (index(rng, 0, n - 1), n),
            (Method::Pd, Some((grid, _))) => {
                let i = index(rng, 0, grid.len() - 2);
                (grid[i], grid[i + 1])
            }
            _ => pair(rng, n, self.config.zero_fraction),
        }
    }

    /// Rows from exact trajectories: x = the pool's point at t_i, y = at t_j, w = 1.
    fn pool_rows(&self, pool: &[Array2<f64>], n_rows: usize, seed: u64) -> Targets {
        let levels = &self.teacher.levels;
        let d = pool[0].ncols();
        let mut x = Array2::zeros((n_rows, d));
        let mut y = Array2::zeros((n_rows, d));
        let (mut s, mut t) = (Vec::new(), Vec::new());
        for r in 0..n_rows {
            let mut rng = RowRng::new(seed, 12, r as u64);
            let m = index(&mut rng, 0, pool[0].nrows() - 1);
            let (i, j) = self.pair_of(&mut rng);
            x.row_mut(r).assign(&pool[i].row(m));
            y.row_mut(r).assign(&pool[j].row(m));
            s.push(levels[i]);
            t.push(levels[j]);
        }
        Targets {
            x,
            s,
            t,
            y,
            w: vec![1.0; n_rows],
        }
    }

    fn targets(&self, ema: &Mlp, n_rows: usize, seed: u64) -> Result<Targets> {
        let levels = &self.teacher.levels;
        let d = self.teacher.mixture.dim();
        let schedule = self.teacher.schedule;
        if let (Method::Direct, Some(pool)) = (self.config.method, self.pool) {
            return Ok(self.pool_rows(pool, n_rows, seed));
        }
        let x0 = self.teacher.mixture.sample_p0(n_rows, seed);
        let z = crate::rng::standard_normal(n_rows, d, seed, 13);
        // The pair (i, j) of each row and, for ctm, its intermediate level u = t_k; for cd
        // k = i + 1, for pd the middle level of the stage step.
        let (mut from, mut mid, mut to) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..n_rows {
            let mut rng = RowRng::new(seed, 12, r as u64);
            let (i, j) = self.pair_of(&mut rng);
            from.push(i);
            to.push(j);
            mid.push(match self.config.method {
                Method::Ctm => index(&mut rng, i + 1, j),
                Method::Pd => (i + j) / 2,
                _ => i + 1,
            });
        }
        let s: Vec<f64> = from.iter().map(|&i| levels[i]).collect();
        let t: Vec<f64> = to.iter().map(|&i| levels[i]).collect();
        match &self.stage {
            None => {
                let x = noised(self.teacher, &x0, &z, &from);
                let xu = self.teacher.solve(&self.config.teacher, &x, &from, &mid)?;
                let mut y = map_rows(&self.param, ema, schedule, levels, &xu, &mid, &to);
                for r in 0..n_rows {
                    if mid[r] == to[r] {
                        y.row_mut(r).assign(&xu.row(r));
                    }
                }
                Ok(Targets {
                    x,
                    s,
                    t,
                    y,
                    w: vec![1.0; n_rows],
                })
            }
            Some((_, previous)) => {
                let x = noised(self.teacher, &x0, &z, &from);
                let y = match previous {
                    None => {
                        let half = self.teacher.solve("ddim", &x, &from, &mid)?;
                        self.teacher.solve("ddim", &half, &mid, &to)?
                    }
                    Some(prev) => {
                        let half = map_rows(&self.param, prev, schedule, levels, &x, &from, &mid);
                        map_rows(&self.param, prev, schedule, levels, &half, &mid, &to)
                    }
                };
                let w = s
                    .iter()
                    .zip(&t)
                    .map(|(&s, &t)| {
                        let at = schedule.level(s);
                        let snr = (at.alpha / at.sigma).powi(2);
                        let bcoef = self.param.coefficients(schedule, s, t)[1];
                        snr.max(1.0) / (bcoef * bcoef)
                    })
                    .collect();
                Ok(Targets { x, s, t, y, w })
            }
        }
    }
}

impl Objective for Distill<'_> {
    fn batch(&self, net: &Mlp, ema: &Mlp, k: usize, want_grad: bool) -> Result<(f64, Vec<f64>)> {
        let seed = seed_for(self.seed, &format!("step {k}"));
        if let Some(options) = &self.config.options {
            let context = Context {
                options,
                param: self.param,
                mixture: self.teacher.mixture,
                schedule: self.teacher.schedule,
                levels: &self.teacher.levels,
                sigma_data: self.config.sigma_data,
                k,
                steps: self.config.optim.steps,
            };
            let batch = context.batch(net, ema, self.config.batch, seed)?;
            *self.jvp.lock().expect("jvp") = batch.jvp_rms;
            return Ok(super::loss::regression(
                &self.param,
                net,
                self.teacher.schedule,
                batch.loss,
                &batch.rows,
                want_grad,
            ));
        }
        let rows = self.targets(ema, self.config.batch, seed)?;
        Ok(regression(
            &self.param,
            net,
            self.teacher.schedule,
            &rows,
            want_grad,
        ))
    }
    /// The mean squared error against the exact map on the method's own pairs (unweighted, the
    /// same measure for every method), on the fixed validation trajectories.
    fn validation(&self, net: &Mlp, _: &Mlp) -> Result<f64> {
        let rows = self.pool_rows(
            self.val_pool,
            self.config.val_size,
            seed_for(self.seed, "validation"),
        );
        Ok(regression(&self.param, net, self.teacher.schedule, &rows, false).0)
    }
    fn jvp_norm(&self) -> Option<f64> {
        *self.jvp.lock().expect("jvp")
    }
}

/// One trained student.
pub struct Trained {
    pub map: FlowNet,
    pub log: Vec<LogEntry>,
    /// The number of steps of the grid the student was trained for (pd), or of the levels.
    pub steps: usize,
}

/// The reference trajectories of the pool: `n` points x_{t_0} ~ p_{t_0} (seed_for(seed,
/// "pool")) at every level, by the closed form for a Gaussian and DOP853 at `rtol` otherwise.
pub fn pool(teacher: &Teacher, n: usize, rtol: f64, seed: u64) -> Result<Vec<Array2<f64>>> {
    let at = teacher.schedule.level(teacher.levels[0]);
    let x = teacher.mixture.sample_pt(n, &at, seed_for(seed, "pool"));
    let spec = if teacher.mixture.n_components() == 1 {
        "exact".to_string()
    } else {
        format!("reference:rtol={rtol:e},atol={rtol:e}")
    };
    teacher.trajectory(&spec, &teacher.levels, &x)
}

/// Trains a student of `init`'s architecture (two-time, `param`) by `config.method`;
/// `on_step` after every optimizer step. One result, or one per stage for pd.
pub fn distill(
    init: Mlp,
    param: Param,
    teacher: &Teacher,
    config: &DistillConfig,
    mut on_step: impl FnMut(usize),
) -> Result<Vec<Trained>> {
    if init.config.times != 2 || init.config.dim != teacher.mixture.dim() {
        return Err(Error::Dimension(format!(
            "the student must be a two-time network of the problem's dimension {}",
            teacher.mixture.dim()
        )));
    }
    if config.batch == 0 || config.val_size == 0 || config.pool == 0 {
        return Err(Error::Domain(
            "batch, val_size and pool must be >= 1".into(),
        ));
    }
    let width = init.config.width.max(init.config.input_width());
    for (field, rows) in [
        ("batch", config.batch),
        ("val_size", config.val_size),
        ("pool", config.pool.saturating_mul(teacher.levels.len())),
    ] {
        crate::limits::elements("distill config", field, rows, width)?;
    }
    if !(0.0..=1.0).contains(&config.zero_fraction) {
        return Err(Error::Domain(format!(
            "zero_fraction must be in [0, 1], got {}",
            config.zero_fraction
        )));
    }
    match (&config.options, config.method.teacher_free()) {
        (Some(options), true) => options.check_param(config.method.name(), &param)?,
        (None, false) => {}
        _ => {
            return Err(Error::Domain(format!(
                "method {}: options are given exactly for the teacher-free methods",
                config.method.name()
            )))
        }
    }
    let n = teacher.levels.len() - 1;
    let pool_points = match config.method {
        Method::Direct => Some(pool(
            teacher,
            config.pool,
            config.reference_rtol,
            config.seed,
        )?),
        _ => None,
    };
    let val_pool = pool(
        teacher,
        config.val_size,
        config.reference_rtol,
        seed_for(config.seed, "validation"),
    )?;
    // One stage (stride 1, no stage grid) for every method but pd, whose stages have the
    // strides 2, 4, ..., n.
    let strides: Vec<usize> = if config.method == Method::Pd {
        if !n.is_power_of_two() || n < 2 {
            return Err(Error::Domain(format!(
                "progressive distillation halves the grid: need 2^m levels steps, got {n}"
            )));
        }
        (1..=n.trailing_zeros()).map(|b| 1 << b).collect()
    } else {
        vec![1]
    };
    let mut net = init;
    let mut out: Vec<Trained> = Vec::new();
    for stride in strides {
        let pd = config.method == Method::Pd;
        let grid: Vec<usize> = (0..=n).step_by(stride).collect();
        let previous = out.last().map(|t| t.map.net.clone());
        let objective = Distill {
            config,
            param,
            teacher,
            pool: pool_points.as_deref(),
            val_pool: &val_pool,
            stage: pd.then(|| (grid.clone(), previous.as_ref())),
            seed: match pd {
                true => seed_for(config.seed, &format!("stage {stride}")),
                false => config.seed,
            },
            jvp: Mutex::new(None),
        };
        let fitted = fit(&mut net, &objective, &config.optim, &mut on_step)?.or_diverged()?;
        let log = fitted.log;
        let mut map = FlowNet::new(
            net.clone(),
            param,
            crate::schedule::parse(&teacher.schedule.spec())?,
        )?;
        map.anytime = config.method.anytime();
        map.grid_only = pd;
        map.levels = Some(grid.iter().map(|&i| teacher.levels[i]).collect());
        out.push(Trained {
            map,
            log,
            steps: n / stride,
        });
    }
    Ok(out)
}
