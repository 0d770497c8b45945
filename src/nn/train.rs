//! Denoising training of an [`Mlp`] with the unified loss (Lai et al., "The Principles of
//! Diffusion Models", Sec. 6; Kingma & Gao 2023 for the weighting view):
//!
//! L(theta) = E_{t, x_0, eps} w(t) |F_theta(x_t, t) - (A_t x_0 + B_t eps)|^2 / d,
//! x_t = alpha_t x_0 + sigma_t eps,
//!
//! with (A_t, B_t) the target of the network's prediction type
//! ([`crate::prediction::Prediction::target`]) and
//! w(t) = 1: the plain mean squared error in the prediction's own units. For `eps` this is the
//! DDPM "simple" loss (Ho et al. 2020, eq. 14), for `v` that of Salimans & Ho (2022), for
//! `velocity` on the `flow` schedule the conditional flow-matching loss (Lipman et al. 2023); in
//! terms of the x_0 error every type is a weighting of one loss, e.g. `eps` weighs it by
//! (alpha/sigma)^2 = e^{2 lambda}.
//!
//! Time sampling (`time_sampling`): `uniform`, t ~ U[t_min, t_max] (Song et al. 2021), or
//! `logsnr`, lambda ~ U[lambda(t_max), lambda(t_min)] and t = t(lambda), which spends more of the
//! batch at low noise. x_0 are fresh draws of the mixture at every step, eps ~ N(0, I).
//!
//! Optimizer: Adam (Kingma & Ba 2015; beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8) with linear
//! warm-up over `warmup` steps, then cosine decay from `lr` to `lr * lr_final`. Gradients are
//! exact back-propagation, summed over fixed blocks of [`GRAD_ROWS`] rows in block order, so a
//! run is bit-identical at any thread count. Step k draws its batch from seed
//! `seed_for(seed, "step k")`; the validation set (fixed, `val_size` rows) from
//! `seed_for(seed, "validation")`.
//!
//! A run has diverged when its batch loss or gradient is not finite, the batch loss grows past
//! [`DIVERGED`] = 10^3 times the loss of step 0, or the validation loss is not finite or grows
//! past 10^3 times its first value. [`fit`] stops there and says so in [`Fitted::diverged`] (the
//! log ends at that step); [`Fitted::or_diverged`] turns it into an error, so a command that
//! trains one model writes nothing (the usual remedy is a lower learning rate).

use super::{silu_prime, silu_second, Mlp};
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::oracle::Oracle;
use crate::rng::{seed_for, RowRng};
use crate::schedule::Schedule;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;
use serde::Serialize;

/// Rows per gradient block.
pub const GRAD_ROWS: usize = 64;

/// How training times are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSampling {
    Uniform,
    Logsnr,
}

impl std::str::FromStr for TimeSampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(TimeSampling::Uniform),
            "logsnr" => Ok(TimeSampling::Logsnr),
            _ => Err(Error::Domain(format!(
                "unknown time sampling '{s}' (valid: uniform, logsnr)"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// The final learning rate as a fraction of `lr`.
    pub lr_final: f64,
    pub warmup: usize,
    pub t_min: f64,
    pub t_max: f64,
    pub time_sampling: TimeSampling,
    pub seed: u64,
    /// Steps per loss-log entry.
    pub log_every: usize,
    pub val_size: usize,
}

/// A training batch: clean data, noise and times, row by row.
pub struct Batch {
    pub x0: Array2<f64>,
    pub eps: Array2<f64>,
    pub t: Vec<f64>,
}

impl Batch {
    /// `n` rows drawn from `seed` (see the module doc).
    pub fn draw(
        mixture: &GaussianMixture,
        schedule: &dyn Schedule,
        config: &TrainConfig,
        n: usize,
        seed: u64,
    ) -> Batch {
        let d = mixture.dim();
        let x0 = mixture.sample_p0(n, seed);
        let mut eps = Array2::zeros((n, d));
        let (l_hi, l_lo) = (schedule.lambda(config.t_min), schedule.lambda(config.t_max));
        let t = eps
            .outer_iter_mut()
            .enumerate()
            .map(|(i, mut row)| {
                let mut rng = RowRng::new(seed, 8, i as u64);
                let u = rng.uniform();
                row.iter_mut().for_each(|e| *e = rng.normal());
                match config.time_sampling {
                    TimeSampling::Uniform => config.t_min + (config.t_max - config.t_min) * u,
                    TimeSampling::Logsnr => schedule
                        .t_of_lambda(l_lo + (l_hi - l_lo) * u)
                        .clamp(config.t_min, config.t_max),
                }
            })
            .collect();
        Batch { x0, eps, t }
    }
}

/// The fixed validation set of a training run.
pub fn validation(
    mixture: &GaussianMixture,
    schedule: &dyn Schedule,
    config: &TrainConfig,
) -> Batch {
    Batch::draw(
        mixture,
        schedule,
        config,
        config.val_size,
        seed_for(config.seed, "validation"),
    )
}

/// The loss of `net` on rows `range` of a batch and, with `grad`, its gradient added into `grad`
/// (scaled by 1/`total` rows so that block sums give the batch mean).
fn block_loss(
    net: &Mlp,
    schedule: &dyn Schedule,
    batch: &Batch,
    range: std::ops::Range<usize>,
    total: usize,
    grad: Option<&mut [f64]>,
) -> f64 {
    let d = net.config.dim;
    let x0 = batch.x0.slice(ndarray::s![range.clone(), ..]);
    let eps = batch.eps.slice(ndarray::s![range.clone(), ..]);
    let levels: Vec<_> = batch.t[range.clone()]
        .iter()
        .map(|&t| schedule.level(t))
        .collect();
    let mut xt = Array2::zeros(x0.dim());
    let mut target = Array2::zeros(x0.dim());
    for (i, at) in levels.iter().enumerate() {
        let (a, b) = net.config.prediction.target(at);
        Zip::from(xt.row_mut(i))
            .and(target.row_mut(i))
            .and(x0.row(i))
            .and(eps.row(i))
            .for_each(|x, y, &x0, &e| {
                *x = at.alpha * x0 + at.sigma * e;
                *y = a * x0 + b * e;
            });
    }
    let s: Vec<f64> = levels
        .iter()
        .map(|at| net.config.time_input.of(at))
        .collect();
    let h0 = net.input(xt.view(), &s);
    let mut cache = Vec::new();
    let y = net.forward(h0, grad.is_some().then_some(&mut cache));
    let scale = 1.0 / (total * d) as f64;
    let residual = &y - &target;
    let loss = residual.iter().map(|r| r * r).sum::<f64>() * scale;
    if let Some(grad) = grad {
        backward(net, &cache, residual * (2.0 * scale), grad);
    }
    loss
}

/// Back-propagates dL/dF through the cached forward pass, adding dL/dtheta into `grad`.
pub fn backward(net: &Mlp, cache: &[Array2<f64>], dy: Array2<f64>, grad: &mut [f64]) {
    let last = net.layers.len() - 1;
    let mut delta = dy;
    for l in (0..=last).rev() {
        let layer = net.layers[l];
        let h = &cache[2 * l];
        let mut dw =
            ArrayViewMut2::from_shape((layer.fan_out, layer.fan_in), &mut grad[layer.w..layer.b])
                .expect("layer shape");
        general_mat_mul(1.0, &delta.t(), h, 1.0, &mut dw);
        let db = delta.sum_axis(Axis(0));
        Zip::from(&mut grad[layer.b..layer.b + layer.fan_out])
            .and(&db)
            .for_each(|g, &d| *g += d);
        if l == 0 {
            break;
        }
        let mut dh = Array2::zeros((delta.nrows(), layer.fan_in));
        general_mat_mul(1.0, &delta, &net.weight(l), 0.0, &mut dh);
        Zip::from(&mut dh)
            .and(&cache[2 * l - 1])
            .for_each(|g, &z| *g *= silu_prime(z));
        delta = dh;
    }
}

/// Reverse mode through [`Mlp::forward_tangent_keep`]: given dL/dF (`dy`) and dL/d(dF)
/// (`ddy`), adds dL/dtheta into `grad`. With z_l = W h + b, dz_l = W dh, h_l = SiLU(z_l),
/// dh_l = SiLU'(z_l) dz_l, the adjoints run
/// z-bar_l = SiLU'(z_l) h-bar_l + SiLU''(z_l) dz_l dh-bar_l, dz-bar_l = SiLU'(z_l) dh-bar_l,
/// W-bar_l += z-bar_l^T h_{l-1} + dz-bar_l^T dh_{l-1}.
pub fn backward_tangent(
    net: &Mlp,
    cache: &[Array2<f64>],
    dy: Array2<f64>,
    ddy: Array2<f64>,
    grad: &mut [f64],
) {
    let last = net.layers.len() - 1;
    let (mut a, mut ad) = (dy, ddy);
    for l in (0..=last).rev() {
        let layer = net.layers[l];
        let (h, dh) = (&cache[4 * l], &cache[4 * l + 1]);
        let mut dw =
            ArrayViewMut2::from_shape((layer.fan_out, layer.fan_in), &mut grad[layer.w..layer.b])
                .expect("layer shape");
        general_mat_mul(1.0, &a.t(), h, 1.0, &mut dw);
        general_mat_mul(1.0, &ad.t(), dh, 1.0, &mut dw);
        let db = a.sum_axis(Axis(0));
        Zip::from(&mut grad[layer.b..layer.b + layer.fan_out])
            .and(&db)
            .for_each(|g, &d| *g += d);
        if l == 0 {
            break;
        }
        let mut ah = Array2::zeros((a.nrows(), layer.fan_in));
        general_mat_mul(1.0, &a, &net.weight(l), 0.0, &mut ah);
        let mut adh = Array2::zeros((a.nrows(), layer.fan_in));
        general_mat_mul(1.0, &ad, &net.weight(l), 0.0, &mut adh);
        let (z, dz) = (&cache[4 * l - 2], &cache[4 * l - 1]);
        Zip::from(&mut ah)
            .and(&mut adh)
            .and(z)
            .and(dz)
            .for_each(|ah, adh, &z, &dz| {
                let p = silu_prime(z);
                *ah = p * *ah + silu_second(z) * dz * *adh;
                *adh *= p;
            });
        a = ah;
        ad = adh;
    }
}

/// The mean loss over a batch and (with `want_grad`) its gradient, block-summed in order.
pub fn loss_and_grad(
    net: &Mlp,
    schedule: &dyn Schedule,
    batch: &Batch,
    want_grad: bool,
) -> (f64, Vec<f64>) {
    let n = batch.t.len();
    block_sum(n, net.params.len(), want_grad, |range, grad| {
        block_loss(net, schedule, batch, range, n, grad)
    })
}

/// sum_b f(block b) over the fixed blocks of [`GRAD_ROWS`] of n rows, in parallel, with the
/// per-block gradients (`f` adds into the slice it is given when `want_grad`) summed in block
/// order: the same bits at any thread count.
pub fn block_sum(
    n: usize,
    n_params: usize,
    want_grad: bool,
    f: impl Fn(std::ops::Range<usize>, Option<&mut [f64]>) -> f64 + Sync,
) -> (f64, Vec<f64>) {
    let parts: Vec<(f64, Vec<f64>)> = blocks(n, GRAD_ROWS)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|range| {
            let mut g = vec![0.0; if want_grad { n_params } else { 0 }];
            let loss = f(range, want_grad.then_some(&mut g[..]));
            (loss, g)
        })
        .collect();
    let mut grad = vec![0.0; if want_grad { n_params } else { 0 }];
    let mut loss = 0.0;
    for (l, g) in parts {
        loss += l;
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
    (loss, grad)
}

/// One entry of the training log.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub step: usize,
    /// Mean training loss over the steps since the previous entry.
    pub loss: f64,
    /// Loss on the fixed validation set.
    pub val_loss: f64,
    pub lr: f64,
    /// Mean L2 norm of the gradient over the steps since the previous entry.
    pub grad_norm: f64,
    /// Mean RMS of the objective's JVP (the tangent dF) over those steps, for the methods with
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jvp_norm: Option<f64>,
}

/// Adam's moment estimates.
pub struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    k: i32,
}

impl Adam {
    pub const BETA1: f64 = 0.9;
    pub const BETA2: f64 = 0.999;
    pub const EPSILON: f64 = 1e-8;

    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            k: 0,
        }
    }

    pub fn step(&mut self, params: &mut [f64], grad: &[f64], lr: f64) {
        self.k += 1;
        let (c1, c2) = (
            1.0 - Self::BETA1.powi(self.k),
            1.0 - Self::BETA2.powi(self.k),
        );
        for ((p, g), (m, v)) in params
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + Self::EPSILON);
        }
    }
}

/// The optimizer's settings: Adam with linear warm-up over `warmup` steps, then cosine decay
/// from `lr` to `lr * lr_final`; an entry in the log every `log_every` steps; and, with
/// `ema` = mu > 0, an exponential moving average theta^- <- mu theta^- + (1 - mu) theta after
/// every step (the target network of the consistency methods).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Optim {
    pub steps: usize,
    pub lr: f64,
    pub lr_final: f64,
    pub warmup: usize,
    pub log_every: usize,
    pub ema: f64,
}

impl From<&TrainConfig> for Optim {
    fn from(c: &TrainConfig) -> Self {
        Optim {
            steps: c.steps,
            lr: c.lr,
            lr_final: c.lr_final,
            warmup: c.warmup,
            log_every: c.log_every,
            ema: 0.0,
        }
    }
}

impl Optim {
    /// The learning rate at step k (0-based).
    pub fn learning_rate(&self, k: usize) -> f64 {
        if k < self.warmup {
            return self.lr * (k + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let progress = (k - self.warmup) as f64 / span;
        let floor = self.lr * self.lr_final;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.log_every == 0 {
            return Err(Error::Domain("steps and log_every must be >= 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && (0.0..=1.0).contains(&self.lr_final)) {
            return Err(Error::Domain(format!(
                "need a finite lr > 0 and 0 <= lr_final <= 1, got lr = {} and lr_final = {}",
                self.lr, self.lr_final
            )));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return Err(Error::Domain(format!(
                "need 0 <= ema < 1, got {}",
                self.ema
            )));
        }
        Ok(())
    }
}

/// What a run minimises.
pub trait Objective: Sync {
    /// The loss on the batch of step k (drawn from the step's own seed) and, with `want_grad`,
    /// its gradient in `net.params`; `ema` is the moving-average copy (equal to `net` when the
    /// run has no EMA), the stop-gradient target of the methods that use one.
    fn batch(&self, net: &Mlp, ema: &Mlp, k: usize, want_grad: bool) -> Result<(f64, Vec<f64>)>;
    /// The loss on the run's fixed validation set.
    fn validation(&self, net: &Mlp, ema: &Mlp) -> Result<f64>;
    /// The RMS of the JVP of the last batch, for objectives that take one.
    fn jvp_norm(&self) -> Option<f64> {
        None
    }
}

/// A run has diverged when its batch loss, gradient or validation loss is not finite, or when
/// the batch loss (validation loss) exceeds this many times that of the first step (first log).
pub const DIVERGED: f64 = 1e3;

/// The outcome of [`fit`].
pub struct Fitted {
    pub log: Vec<LogEntry>,
    /// The EMA copy (a clone of the result without EMA).
    pub ema: Mlp,
    /// Why and where the run stopped early, if it diverged (the log ends there).
    pub diverged: Option<String>,
}

impl Fitted {
    /// The run, or its divergence as an error.
    pub fn or_diverged(self) -> Result<Self> {
        match &self.diverged {
            Some(why) => Err(Error::Domain(format!(
                "training diverged: {why} (lower --lr)"
            ))),
            None => Ok(self),
        }
    }
}

/// Minimises `objective` over `net.params` in place; `on_step` is called after every step (for a
/// progress bar). A run that diverges (see [`DIVERGED`]) stops there and says so.
pub fn fit(
    net: &mut Mlp,
    objective: &dyn Objective,
    optim: &Optim,
    mut on_step: impl FnMut(usize),
) -> Result<Fitted> {
    optim.validate()?;
    let mut ema = net.clone();
    let mut adam = Adam::new(net.params.len());
    let mut log = Vec::new();
    let (mut window, mut grad_window, mut jvp_window) = (0.0, 0.0, None::<f64>);
    let mut first_loss: Option<f64> = None;
    let mut first_val: Option<f64> = None;
    let stop = |log: Vec<LogEntry>, ema: Mlp, why: String| Fitted {
        log,
        ema,
        diverged: Some(why),
    };
    for k in 0..optim.steps {
        let (loss, grad) = objective.batch(net, &ema, k, true)?;
        let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        let initial = *first_loss.get_or_insert(loss);
        if !loss.is_finite() || loss > DIVERGED * initial || !grad_norm.is_finite() {
            let why = format!(
                "the loss is {loss:.4e} (gradient norm {grad_norm:.3e}) at step {k}, against {initial:.4e} at step 0 (the limit is {DIVERGED:e} times that)"
            );
            return Ok(stop(log, ema, why));
        }
        let lr = optim.learning_rate(k);
        adam.step(&mut net.params, &grad, lr);
        if optim.ema > 0.0 {
            let mu = optim.ema;
            ema.params
                .iter_mut()
                .zip(&net.params)
                .for_each(|(e, &p)| *e = mu * *e + (1.0 - mu) * p);
        } else {
            ema.params.copy_from_slice(&net.params);
        }
        window += loss;
        grad_window += grad_norm;
        if let Some(j) = objective.jvp_norm() {
            *jvp_window.get_or_insert(0.0) += j;
        }
        if (k + 1) % optim.log_every == 0 || k + 1 == optim.steps {
            let n = (k % optim.log_every + 1) as f64;
            let val_loss = objective.validation(net, &ema)?;
            log.push(LogEntry {
                step: k + 1,
                loss: window / n,
                val_loss,
                lr,
                grad_norm: grad_window / n,
                jvp_norm: jvp_window.map(|j| j / n),
            });
            (window, grad_window, jvp_window) = (0.0, 0.0, None);
            let first = *first_val.get_or_insert(val_loss);
            if !val_loss.is_finite() || val_loss > DIVERGED * first {
                let why = format!(
                    "the validation loss is {val_loss:.4e} at step {}, against {first:.4e} at the first log",
                    k + 1
                );
                return Ok(stop(log, ema, why));
            }
        }
        on_step(k);
    }
    Ok(Fitted {
        log,
        ema,
        diverged: None,
    })
}

/// The denoising loss of the module doc as an [`Objective`].
struct Denoising<'a> {
    mixture: &'a GaussianMixture,
    schedule: &'a dyn Schedule,
    config: &'a TrainConfig,
    val: Batch,
}

impl Objective for Denoising<'_> {
    fn batch(&self, net: &Mlp, _: &Mlp, k: usize, want_grad: bool) -> Result<(f64, Vec<f64>)> {
        let batch = Batch::draw(
            self.mixture,
            self.schedule,
            self.config,
            self.config.batch,
            seed_for(self.config.seed, &format!("step {k}")),
        );
        Ok(loss_and_grad(net, self.schedule, &batch, want_grad))
    }
    fn validation(&self, net: &Mlp, _: &Mlp) -> Result<f64> {
        Ok(loss_and_grad(net, self.schedule, &self.val, false).0)
    }
}

/// Trains `net` in place; `on_step` is called after every step (for a progress bar). Returns the
/// loss log.
pub fn train(
    net: &mut Mlp,
    mixture: &GaussianMixture,
    schedule: &dyn Schedule,
    config: &TrainConfig,
    on_step: impl FnMut(usize),
) -> Result<Vec<LogEntry>> {
    if mixture.dim() != net.config.dim {
        return Err(Error::Dimension(format!(
            "the network has dimension {} and the problem {}",
            net.config.dim,
            mixture.dim()
        )));
    }
    if config.steps == 0 || config.batch == 0 || config.log_every == 0 || config.val_size == 0 {
        return Err(Error::Domain(
            "steps, batch, log_every and val_size must be >= 1".into(),
        ));
    }
    Optim::from(config).validate()?;
    let width = net.config.width.max(net.config.input_width());
    for (field, rows) in [("batch", config.batch), ("val_size", config.val_size)] {
        crate::limits::elements("training config", field, rows, width)?;
    }
    schedule.check_t(config.t_min)?;
    schedule.check_t(config.t_max)?;
    if config.t_min >= config.t_max || config.t_min.is_nan() || config.t_max.is_nan() {
        return Err(Error::Domain(format!(
            "need t_min < t_max, got {} and {}",
            config.t_min, config.t_max
        )));
    }
    let objective = Denoising {
        mixture,
        schedule,
        config,
        val: validation(mixture, schedule, config),
    };
    Ok(fit(net, &objective, &Optim::from(config), on_step)?
        .or_diverged()?
        .log)
}

/// The loss any oracle (e.g. the exact mixture: the Bayes-optimal value, the floor of the
/// training loss) attains on a batch, for the prediction type `kind`.
pub fn oracle_loss(
    oracle: &dyn Oracle,
    kind: crate::prediction::Prediction,
    schedule: &dyn Schedule,
    batch: &Batch,
) -> Result<f64> {
    let (n, d) = batch.x0.dim();
    let mut total = 0.0;
    let mut out = Array2::zeros((1, d));
    for i in 0..n {
        let at = schedule.level(batch.t[i]);
        let (a, b) = kind.target(&at);
        let xt = (&batch.x0.row(i) * at.alpha + &batch.eps.row(i) * at.sigma).insert_axis(Axis(0));
        oracle.predict(kind, xt.view(), &at, out.view_mut())?;
        let target = &batch.x0.row(i) * a + &batch.eps.row(i) * b;
        total += (&out.row(0) - &target).mapv(|r| r * r).sum();
    }
    Ok(total / (n * d) as f64)
}

/// Splits n rows into fixed blocks of `rows` (never thread-dependent).
fn blocks(n: usize, rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(rows)).map(move |b| b * rows..((b + 1) * rows).min(n))
}
