//! Likelihood by the change of variables along the probability-flow ODE.
//!
//! Along dx/dt = v(x, t), d log p_t(x_t)/dt = -div v(x_t, t) (Chen et al. 2018, Thm. 1; Song et
//! al. 2021, Sec. 4.3), so integrating the augmented system
//!
//! dx/dt = v(x, t),   d ell/dt = div v(x, t),   x(t_min) = x, ell(t_min) = 0
//!
//! from t_min up to T gives log p_{t_min}(x) = log pi(x_T) + ell(T) for a prior pi at T. The
//! velocity's divergence comes from [`Oracle::divergence`] (exact: the mixture in closed form, an
//! MLP by d forward-mode passes) or from Hutchinson's estimator with probes drawn once per point
//! and held fixed along the path ([`crate::tangent::hutchinson`]; FFJORD's convention).
//!
//! Integrators ([`Integrator`]): `reference` = adaptive DOP853 on the augmented system in t (the
//! mixture's velocity f x - g^2/2 score is smooth in t down to sigma = 0 on every pfode schedule,
//! so t itself can be the variable); `euler`, `heun`, `rk4` = the fixed-step tableaux of
//! [`crate::solver::runge_kutta`] on the given ascending times.
//!
//! Priors ([`Prior`]):
//! - `exact`: the true p_T of the mixture, so that what is left is solver (and divergence) error;
//! - `standard`: N(0, sigma_T^2 I), what Score SDE (`sde.prior_logp`, N(0, I) for VP; sigma_T^2 =
//!   1 - alpha_T^2 here) and FFJORD-style evaluations assume;
//! - `kdiffusion`: k-diffusion `log_likelihood`: the variables are y = x/alpha and rho =
//!   sigma/alpha, the prior N(0, rho_T^2 I) on y_T and the result log p of y at rho(t_min). In x
//!   that prior is N(0, sigma_T^2 I) again; the reported value differs from `standard` by
//!   d ln alpha(t_min) (the Jacobian of y = x/alpha), which is 0 on VE, EDM and at sigma = 0.
//!
//! Variational bounds (the third view), per point with a Monte Carlo standard error:
//! - [`elbo_continuous`]: the continuous-time bound of Song et al. 2021 ("Maximum likelihood
//!   training of score-based diffusion models", Thm. 1 in its denoising form; the likelihood
//!   weighting lambda = g^2, equal to the VDM diffusion loss of Kingma et al. 2021 up to terms
//!   free of the model): with x_t = alpha_t x + sigma_t eps and eps_hat the model's noise
//!   prediction,
//!
//!   -log p_0(x) <= -E log pi(x_T) + int_{lambda_T}^{lambda_max} E[|eps_hat|^2 - 2 eps . eps_hat] dlambda - d ln(alpha_T / alpha_{t_min}),
//!
//!   using (g^2 / 2 sigma^2) dt = -dlambda and |eps - eps_hat|^2 - |eps|^2 as the integrand (the
//!   |eps|^2 control variate keeps its variance finite as sigma -> 0, where it decays like
//!   sigma^2). With the exact score and the exact prior the reverse SDE's path law equals the
//!   forward one, so the bound is tight for every x: the Monte Carlo mean equals log p_0(x).
//!   The lambda integral is 16-point Gauss-Legendre on `panels` panels, cut at
//!   lambda_max = min(lambda(t_min), ln 1e6) (the integrand there is O(1e-12)).
//! - [`elbo_ddpm`]: the discrete bound of Ho et al. 2020 (eq. 5) with T steps at t_i = t_min + i
//!   (t_max - t_min)/T, abar_i = alpha(t_i)^2: L_T = KL(q(x_T | x) || pi) (closed form for the
//!   Gaussian priors, Monte Carlo for the exact one), L_{i-1} = E |mu_tilde(x_i, x) -
//!   mu_theta(x_i)|^2 / (2 beta_tilde_i) with the model mean mu_theta = mu_tilde(x_i, x0_hat(x_i))
//!   and the posterior variance beta_tilde_i = (1 - abar_{i-1}) beta_i / (1 - abar_i), and the
//!   Gaussian decoder L_0 = -log N(x; x0_hat(x_1), beta_1 I) (continuous data; Ho et al. use a
//!   discrete decoder for 8-bit images). The bound loosens as T falls: the true reverse kernel
//!   is not Gaussian.
//!
//! Bits per dimension: bpd = -log p / (d ln 2), without any dequantization offset (pfode's data
//! are continuous; Score SDE adds 8 bits minus the log-scale of its [-1, 1] rescaling for 8-bit
//! images, FFJORD a uniform dequantization term).

use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::oracle::Oracle;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::solver::dop853;
use crate::solver::runge_kutta::{Tableau, EULER_TABLEAU, HEUN_TABLEAU, RK4_TABLEAU};
use crate::spec::Spec;
use crate::tangent::{self, Probe};
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2};
use std::cell::Cell;

/// The log density at T that the integral is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    Exact,
    Standard,
    KDiffusion,
}

impl std::str::FromStr for Prior {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Prior::Exact),
            "standard" => Ok(Prior::Standard),
            "kdiffusion" => Ok(Prior::KDiffusion),
            _ => Err(Error::Domain(format!(
                "unknown prior '{s}' (valid: exact, standard, kdiffusion)"
            ))),
        }
    }
}

impl std::fmt::Display for Prior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prior::Exact => "exact",
            Prior::Standard => "standard",
            Prior::KDiffusion => "kdiffusion",
        })
    }
}

/// How div v is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum Divergence {
    Exact,
    Hutchinson {
        probes: usize,
        probe: Probe,
        seed: u64,
    },
}

impl Divergence {
    /// `exact` or `hutchinson:probes=1,probe=rademacher,seed=0`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = Spec::parse("divergence", text)?;
        let d = match spec.name.as_str() {
            "exact" => Divergence::Exact,
            "hutchinson" => {
                let probes = spec.take("probes", 1usize)?;
                let probe: Probe = spec
                    .take_choice("probe", "rademacher", &["rademacher", "gaussian"])?
                    .parse()?;
                let seed = spec.take("seed", 0u64)?;
                if probes == 0 {
                    return Err(spec.error("option 'probes': need at least 1"));
                }
                Divergence::Hutchinson {
                    probes,
                    probe,
                    seed,
                }
            }
            other => {
                return Err(spec.error(format!(
                    "unknown divergence '{other}' (valid: exact, hutchinson)"
                )))
            }
        };
        spec.finish()?;
        Ok(d)
    }

    pub fn canonical(&self) -> String {
        match self {
            Divergence::Exact => "exact".into(),
            Divergence::Hutchinson {
                probes,
                probe,
                seed,
            } => format!("hutchinson:probes={probes},probe={probe},seed={seed}"),
        }
    }
}

/// How the augmented system is integrated.
#[derive(Debug, Clone, PartialEq)]
pub enum Integrator {
    Reference { rtol: f64, atol: f64 },
    Euler,
    Heun,
    Rk4,
}

impl Integrator {
    /// `reference[:rtol=1e-12,atol=1e-12]`, `euler`, `heun` or `rk4`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = Spec::parse("integrator", text)?;
        let i = match spec.name.as_str() {
            "reference" => {
                let rtol = spec.take_f64("rtol", 1e-12)?;
                let atol = spec.take_f64("atol", 1e-12)?;
                if !(rtol > 0.0 && atol > 0.0) {
                    return Err(spec.error("need rtol > 0 and atol > 0"));
                }
                Integrator::Reference { rtol, atol }
            }
            "euler" => Integrator::Euler,
            "heun" => Integrator::Heun,
            "rk4" => Integrator::Rk4,
            other => {
                return Err(spec.error(format!(
                    "unknown integrator '{other}' (valid: reference, euler, heun, rk4)"
                )))
            }
        };
        spec.finish()?;
        Ok(i)
    }
}

/// What a likelihood evaluation is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    pub integrator: Integrator,
    pub divergence: Divergence,
    pub prior: Prior,
}

/// The result per point.
#[derive(Debug, Clone)]
pub struct Likelihood {
    /// log p at t_min, nats (of y = x/alpha for the k-diffusion prior).
    pub log_p: Array1<f64>,
    /// The points carried to T.
    pub latent: Array2<f64>,
    /// ell(T) = int div v dt.
    pub delta: Array1<f64>,
    /// log pi(x_T).
    pub log_prior: Array1<f64>,
    /// Evaluations of the augmented field (each is one prediction and one divergence).
    pub nfe: usize,
}

impl Likelihood {
    /// -log p / (d ln 2).
    pub fn bits_per_dim(&self) -> Array1<f64> {
        let d = self.latent.ncols() as f64;
        self.log_p.mapv(|l| -l / (d * std::f64::consts::LN_2))
    }
}

/// log N(x; 0, s2 I) per row.
fn isotropic_log_density(x: ArrayView2<f64>, s2: f64) -> Array1<f64> {
    let d = x.ncols() as f64;
    x.rows()
        .into_iter()
        .map(|r| -0.5 * (d * (2.0 * std::f64::consts::PI * s2).ln() + r.dot(&r) / s2))
        .collect()
}

/// log p_{t_min}(x) for the rows of `x` (see the module doc). `times` (ascending from t_min to T)
/// are the steps of a fixed-step integrator; the reference uses only their ends. `mixture` is
/// needed by the `exact` prior.
pub fn log_likelihood(
    oracle: &dyn Oracle,
    schedule: &dyn Schedule,
    x: ArrayView2<f64>,
    times: &[f64],
    method: &Method,
    mixture: Option<&GaussianMixture>,
) -> Result<Likelihood> {
    let (integrator, divergence, prior) = (&method.integrator, &method.divergence, method.prior);
    let (n, d) = x.dim();
    if d != oracle.dim() {
        return Err(Error::Dimension(format!(
            "the model has dimension {}; got points {:?}",
            oracle.dim(),
            x.dim()
        )));
    }
    if let Some((i, j)) = x
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(ij, _)| ij)
    {
        return Err(Error::Domain(format!(
            "point {i}, coordinate {j} is not finite"
        )));
    }
    if times.len() < 2
        || times
            .windows(2)
            .any(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
    {
        return Err(Error::Domain(
            "the likelihood needs at least 2 strictly increasing times from t_min to T".into(),
        ));
    }
    for &t in times {
        schedule.check_t(t)?;
    }
    if prior == Prior::Exact && mixture.is_none() {
        return Err(Error::Domain(
            "the exact prior needs the mixture the points came from".into(),
        ));
    }
    let probes = match divergence {
        Divergence::Exact => Vec::new(),
        Divergence::Hutchinson {
            probes,
            probe,
            seed,
        } => tangent::probes(n, d, *probes, *probe, *seed),
    };
    let nfe = Cell::new(0usize);
    let field = |t: f64, y: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>| -> Result<()> {
        let at = schedule.level(t);
        let pts = y.slice(s![.., ..d]);
        oracle.predict(Prediction::Velocity, pts, &at, dy.slice_mut(s![.., ..d]))?;
        let div = match divergence {
            Divergence::Exact => {
                let mut div = Array1::zeros(n);
                oracle.divergence(Prediction::Velocity, pts, &at, div.view_mut())?;
                div
            }
            Divergence::Hutchinson { .. } => {
                tangent::hutchinson(oracle, Prediction::Velocity, pts, &at, &probes)?.0
            }
        };
        dy.column_mut(d).assign(&div);
        nfe.set(nfe.get() + 1);
        Ok(())
    };
    let mut y0 = Array2::zeros((n, d + 1));
    y0.slice_mut(s![.., ..d]).assign(&x);
    let (t0, t1) = (times[0], times[times.len() - 1]);
    let y = match integrator {
        Integrator::Reference { rtol, atol } => {
            dop853::integrate(field, t0, t1, y0.view(), *rtol, *atol, 1_000_000)?.0
        }
        Integrator::Euler => fixed_steps(&EULER_TABLEAU, field, times, y0)?,
        Integrator::Heun => fixed_steps(&HEUN_TABLEAU, field, times, y0)?,
        Integrator::Rk4 => fixed_steps(&RK4_TABLEAU, field, times, y0)?,
    };
    let latent = y.slice(s![.., ..d]).to_owned();
    let delta = y.column(d).to_owned();
    let at_t = schedule.level(t1);
    let at_min = schedule.level(t0);
    let (log_prior, shift) = match prior {
        Prior::Exact | Prior::Standard => (
            prior_log_density(prior, mixture, latent.view(), &at_t)?,
            0.0,
        ),
        Prior::KDiffusion => {
            let rho = at_t.sigma / at_t.alpha;
            let y_t = &latent / at_t.alpha;
            (
                isotropic_log_density(y_t.view(), rho * rho) - d as f64 * at_t.alpha.ln(),
                d as f64 * at_min.alpha.ln(),
            )
        }
    };
    // For k-diffusion: log p_y(y_T) = log p_x(x_T) + d ln alpha_T; the reported log p_y(y) at
    // t_min is log p_x(x) + d ln alpha(t_min).
    let log_p = &log_prior + &delta + shift;
    Ok(Likelihood {
        log_p,
        latent,
        delta,
        log_prior,
        nfe: nfe.get(),
    })
}

/// Explicit Runge-Kutta steps of `tab` on the augmented field over ascending `times`.
fn fixed_steps<F>(
    tab: &Tableau,
    mut field: F,
    times: &[f64],
    mut y: Array2<f64>,
) -> Result<Array2<f64>>
where
    F: FnMut(f64, ArrayView2<f64>, ArrayViewMut2<f64>) -> Result<()>,
{
    let stages = tab.b.len();
    let mut k: Vec<Array2<f64>> = vec![Array2::zeros(y.dim()); stages];
    let mut point = Array2::zeros(y.dim());
    for w in times.windows(2) {
        let (t, h) = (w[0], w[1] - w[0]);
        for i in 0..stages {
            point.assign(&y);
            if i > 0 {
                for (j, &a) in tab.a[i - 1].iter().enumerate() {
                    if a != 0.0 {
                        point.scaled_add(h * a, &k[j]);
                    }
                }
            }
            field(t + tab.c[i] * h, point.view(), k[i].view_mut())?;
        }
        for (kb, &b) in k.iter().zip(tab.b) {
            y.scaled_add(h * b, kb);
        }
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Domain(
            "the likelihood integration produced a non-finite value".into(),
        ));
    }
    Ok(y)
}

/// A bound per point: the estimate of the ELBO on log p (nats) and its Monte Carlo standard
/// error, and the oracle evaluations spent.
#[derive(Debug, Clone)]
pub struct Bound {
    pub elbo: Array1<f64>,
    pub se: Array1<f64>,
    pub nfe: usize,
}

const ELBO_DOMAIN: u32 = 0x454c;

/// Mean and standard error over replicate rows (replicates x n).
fn over_replicates(r: &Array2<f64>) -> (Array1<f64>, Array1<f64>) {
    let m = r.nrows() as f64;
    let mean = r
        .mean_axis(ndarray::Axis(0))
        .unwrap_or_else(|| Array1::from_elem(r.ncols(), f64::NAN));
    let se = if r.nrows() > 1 {
        let var = r.var_axis(ndarray::Axis(0), 1.0);
        var.mapv(|v| (v / m).sqrt())
    } else {
        Array1::zeros(r.ncols())
    };
    (mean, se)
}

fn prior_log_density(
    prior: Prior,
    mixture: Option<&GaussianMixture>,
    x_t: ArrayView2<f64>,
    at: &crate::schedule::NoiseLevel,
) -> Result<Array1<f64>> {
    match prior {
        Prior::Exact => mixture
            .ok_or_else(|| Error::Domain("the exact prior needs the mixture".into()))?
            .log_density(x_t, at),
        Prior::Standard | Prior::KDiffusion => Ok(isotropic_log_density(x_t, at.sigma * at.sigma)),
    }
}

fn check_points(oracle: &dyn Oracle, x: ArrayView2<f64>, replicates: usize) -> Result<()> {
    if x.ncols() != oracle.dim() {
        return Err(Error::Dimension(format!(
            "the model has dimension {}; got points {:?}",
            oracle.dim(),
            x.dim()
        )));
    }
    if replicates == 0 {
        return Err(Error::Domain(
            "a Monte Carlo bound needs >= 1 replicate".into(),
        ));
    }
    Ok(())
}

/// The continuous-time ELBO on log p_0(x) of clean data x at the schedule's t_min (where sigma =
/// 0; see the module doc), `replicates` independent noise draws per quadrature node. The lambda
/// integral stops at lambda(t_lo) for `(t_lo, t_max)` (a network needs sigma > 0; the part
/// dropped, int -E|eps_hat|^2 dlambda beyond, is O(sigma(t_lo)^2 E|score|^2)).
#[allow(clippy::too_many_arguments)]
pub fn elbo_continuous(
    oracle: &dyn Oracle,
    schedule: &dyn Schedule,
    x: ArrayView2<f64>,
    (t_min, t_max): (f64, f64),
    prior: Prior,
    mixture: Option<&GaussianMixture>,
    (panels, replicates): (usize, usize),
    seed: u64,
) -> Result<Bound> {
    check_points(oracle, x, replicates)?;
    let (n, d) = x.dim();
    let t0 = schedule.t_min();
    if schedule.sigma(t0) > 0.0 || t_min < t0 {
        return Err(Error::Domain(format!(
            "the continuous bound starts from clean data: the schedule needs sigma(t_min) = 0 (got {}) and the cut t_lo = {t_min} >= t_min",
            schedule.sigma(t0)
        )));
    }
    let (lo, hi) = (
        schedule.lambda(t_max),
        schedule.lambda(t_min).min(1e6f64.ln()),
    );
    let w = (hi - lo) / panels as f64;
    let gl = crate::solver::quadrature::gauss_legendre_nodes();
    let mut nodes = Vec::new();
    for p in 0..panels {
        for &(u, wt) in &gl {
            nodes.push((lo + w * (p as f64 + 0.5 + 0.5 * u), 0.5 * w * wt));
        }
    }
    let at_t = schedule.level(t_max);
    let constant = -(d as f64) * (at_t.alpha / schedule.alpha(t0)).ln();
    let mut per = Array2::zeros((replicates, n));
    let mut nfe = 0;
    let mut eps_hat = Array2::zeros((n, d));
    for r in 0..replicates {
        let rs = crate::rng::seed_for(seed, &format!("elbo-continuous/{r}"));
        let eps = crate::rng::standard_normal(n, d, rs, ELBO_DOMAIN);
        let x_t = &x * at_t.alpha + &eps * at_t.sigma;
        let mut total = -prior_log_density(prior, mixture, x_t.view(), &at_t)? + constant;
        for (k, &(lambda, wt)) in nodes.iter().enumerate() {
            let t = schedule.t_of_lambda(lambda);
            let at = schedule.level(t);
            let eps = crate::rng::standard_normal(n, d, rs, k as u32);
            let x_l = &x * at.alpha + &eps * at.sigma;
            oracle.predict(Prediction::Eps, x_l.view(), &at, eps_hat.view_mut())?;
            nfe += 1;
            let h = (&eps_hat * &eps_hat - &(&eps * &eps_hat * 2.0)).sum_axis(ndarray::Axis(1));
            total.scaled_add(wt, &h);
        }
        per.row_mut(r).assign(&(-total));
    }
    let (elbo, se) = over_replicates(&per);
    Ok(Bound { elbo, se, nfe })
}

/// KL(N(m, s2 I) || N(0, p2 I)) per row of means `m`.
fn kl_isotropic(m: ArrayView2<f64>, s2: f64, p2: f64) -> Array1<f64> {
    let d = m.ncols() as f64;
    m.rows()
        .into_iter()
        .map(|r| 0.5 * (d * (s2 / p2 - 1.0 - (s2 / p2).ln()) + r.dot(&r) / p2))
        .collect()
}

/// Whether alpha^2 + sigma^2 = 1 (to 1e-12) at 65 times across the schedule's range: the DDPM
/// bound's posterior q(x_{i-1} | x_i, x_0) assumes it.
pub fn variance_preserving(schedule: &dyn Schedule) -> bool {
    let (a, b) = (
        schedule.t_min(),
        crate::study::convergence::range(schedule).0,
    );
    (0..=64).all(|k| {
        let t = a + (b - a) * k as f64 / 64.0;
        (schedule.alpha(t).powi(2) + schedule.sigma(t).powi(2) - 1.0).abs() < 1e-12
    })
}

/// The DDPM ELBO on log p_{t_min}(x) with `steps` = T discrete steps (see the module doc); an
/// error on a schedule that is not variance-preserving.
#[allow(clippy::too_many_arguments)]
pub fn elbo_ddpm(
    oracle: &dyn Oracle,
    schedule: &dyn Schedule,
    x: ArrayView2<f64>,
    (t_min, t_max): (f64, f64),
    prior: Prior,
    mixture: Option<&GaussianMixture>,
    (steps, replicates): (usize, usize),
    seed: u64,
) -> Result<Bound> {
    check_points(oracle, x, replicates)?;
    if steps == 0 {
        return Err(Error::Domain("the DDPM bound needs >= 1 step".into()));
    }
    if !variance_preserving(schedule) {
        return Err(Error::Domain(format!(
            "the DDPM bound needs a variance-preserving schedule (alpha^2 + sigma^2 = 1); '{}' is not",
            schedule.spec()
        )));
    }
    let (n, d) = x.dim();
    let times: Vec<f64> = (0..=steps)
        .map(|i| t_min + (t_max - t_min) * i as f64 / steps as f64)
        .collect();
    let levels: Vec<_> = times.iter().map(|&t| schedule.level(t)).collect();
    // alpha(t_min) is the data's scale: abar is relative to it.
    let a0 = levels[0].alpha;
    let abar: Vec<f64> = levels.iter().map(|l| (l.alpha / a0).powi(2)).collect();
    let s0 = levels[0].sigma / a0;
    if s0 > 0.0 {
        return Err(Error::Domain(format!(
            "the DDPM bound starts from clean data: sigma(t_min) must be 0, got {}",
            levels[0].sigma
        )));
    }
    let at_t = &levels[steps];
    let mut per = Array2::zeros((replicates, n));
    let mut nfe = 0;
    let mut x0_hat = Array2::zeros((n, d));
    for r in 0..replicates {
        let rs = crate::rng::seed_for(seed, &format!("elbo-ddpm/{r}"));
        let mut total = match prior {
            Prior::Exact => {
                let eps = crate::rng::standard_normal(n, d, rs, ELBO_DOMAIN);
                let x_t = &x * at_t.alpha + &eps * at_t.sigma;
                let lq: Array1<f64> =
                    isotropic_log_density(eps.view(), 1.0) - d as f64 * at_t.sigma.ln();
                lq - prior_log_density(prior, mixture, x_t.view(), at_t)?
            }
            _ => kl_isotropic(
                (&x * at_t.alpha).view(),
                at_t.sigma * at_t.sigma,
                at_t.sigma * at_t.sigma,
            ),
        };
        for i in 1..=steps {
            let at = &levels[i];
            let eps = crate::rng::standard_normal(n, d, rs, i as u32);
            let x_i = &x * at.alpha + &eps * at.sigma;
            oracle.predict(Prediction::X0, x_i.view(), at, x0_hat.view_mut())?;
            nfe += 1;
            let beta = 1.0 - abar[i] / abar[i - 1];
            let sq = (&x0_hat - &x).mapv(|e| e * e).sum_axis(ndarray::Axis(1));
            if i == 1 {
                let var = beta;
                total += &(sq.mapv(|s| s / (2.0 * var))
                    + 0.5 * d as f64 * (2.0 * std::f64::consts::PI * var).ln());
            } else {
                let beta_tilde = (1.0 - abar[i - 1]) * beta / (1.0 - abar[i]);
                let c1 = abar[i - 1].sqrt() * beta / (1.0 - abar[i]);
                total += &sq.mapv(|s| c1 * c1 * s / (2.0 * beta_tilde));
            }
        }
        per.row_mut(r).assign(&(-total));
    }
    let (elbo, se) = over_replicates(&per);
    Ok(Bound { elbo, se, nfe })
}
