//! The exponential-integrator machinery shared by DDIM, DPM-Solver, DPM-Solver++, UniPC and
//! DPM-Solver-12/23: the phi-functions, the step coefficients, the singlestep and multistep
//! DPM-Solver updates and the UniP/UniC combinations.
//!
//! Written in the half log-SNR lambda, with h = lambda_t - lambda_s, the PF-ODE has the exact
//! variation-of-constants forms (Lu et al. 2022, eq. 3.4; Lu et al. 2022b, eq. 8)
//!
//! - data prediction m = x0_hat:  x_t = (sigma_t/sigma_s) x_s + alpha_t int_0^h e^{-(h-u)} m du,
//! - noise prediction m = eps_hat: x_t = (alpha_t/alpha_s) x_s - sigma_t int_0^h e^{h-u} m du.
//!
//! Both are x_t = c_x x_s + c_m int_0^h e^{hh (1 - u/h)} m du with hh = -h (data) or h (noise),
//! and a Taylor expansion m = sum_k m^(k) u^k / k! integrates to sum_k c_m h^{k+1} phi_{k+1}(hh) m^(k),
//! phi_0(z) = e^z, phi_{k+1}(z) = (phi_k(z) - 1/k!)/z. We write E_k = c_m h phi_k(hh); every update
//! below is c_x x_s + E_1 m_s + (E_1, E_2, E_3 times differences of model values).

use super::{combine, update, Model};
use crate::error::Result;
use crate::prediction::Prediction;
use ndarray::Array2;
use std::collections::VecDeque;

/// phi_k(z) for k >= 1, by its series near 0 and by the recurrence elsewhere.
pub fn phi(k: usize, z: f64) -> f64 {
    if z.abs() < 2.0 {
        // sum_j z^j / (j + k)!
        let mut fact = (1..=k).map(|i| i as f64).product::<f64>();
        let mut term = 1.0 / fact;
        let mut sum = term;
        for j in 1..40 {
            fact = (j + k) as f64;
            term *= z / fact;
            sum += term;
            if term.abs() < 1e-18 * sum.abs() {
                break;
            }
        }
        return sum;
    }
    let mut p = z.exp_m1() / z;
    let mut inv_fact = 1.0;
    for j in 1..k {
        inv_fact /= j as f64;
        p = (p - inv_fact) / z;
    }
    p
}

/// Which prediction the integral is written in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    /// x0 (DPM-Solver++, UniPC with `prediction=data`).
    Data,
    /// eps (DPM-Solver, UniPC with `prediction=noise`).
    Noise,
}

impl Param {
    pub fn prediction(self) -> Prediction {
        match self {
            Param::Data => Prediction::X0,
            Param::Noise => Prediction::Eps,
        }
    }

    pub fn parse(name: &str) -> Option<Param> {
        match name {
            "data" => Some(Param::Data),
            "noise" => Some(Param::Noise),
            _ => None,
        }
    }
}

/// The coefficients of one step s -> t.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub h: f64,
    /// -h for data, h for noise.
    pub hh: f64,
    pub c_x: f64,
    pub c_m: f64,
}

impl Step {
    pub fn new(model: &Model, p: Param, s: f64, t: f64) -> Step {
        Step::with_eta(model, p, s, t, 0.0)
    }

    /// The step of the data-prediction SDE family with noise parameter eta (Lu et al. 2022b,
    /// Sec. 5; k-diffusion `sample_dpmpp_2m_sde`): with h' = (1 + eta) h,
    /// x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t int_0^h' e^{-(h'-u)} m du + noise,
    /// i.e. hh = -h' and E_k = alpha_t h' phi_k(-h'); `h` stays the log-SNR step, which sets
    /// the ratios r of the multistep updates. In noise prediction only eta = 1 is defined
    /// (SDE-DPM-Solver): x_t = (alpha_t/alpha_s) x_s - 2 sigma_t int_0^h e^{h-u} m du + noise.
    pub fn with_eta(model: &Model, p: Param, s: f64, t: f64, eta: f64) -> Step {
        let (ls, lt) = (model.schedule.lambda(s), model.schedule.lambda(t));
        let (a, b) = (model.level(s), model.level(t));
        let h = lt - ls;
        assert!(
            eta == 0.0 || p == Param::Data || eta == 1.0,
            "the noise-prediction SDE step has eta = 1"
        );
        match p {
            Param::Data if eta != 0.0 => Step {
                h,
                hh: -(1.0 + eta) * h,
                c_x: b.sigma / a.sigma * (-eta * h).exp(),
                c_m: b.alpha,
            },
            Param::Data => Step {
                h,
                hh: -h,
                c_x: b.sigma / a.sigma,
                c_m: b.alpha,
            },
            // SDE-DPM-Solver-1 (Lu et al. 2022b, eq. 18): the integral term doubles.
            Param::Noise => Step {
                h,
                hh: h,
                c_x: b.alpha / a.alpha,
                c_m: -(1.0 + eta) * b.sigma,
            },
        }
    }

    /// [E_1, E_2, E_3].
    pub fn es(&self) -> [f64; 3] {
        [self.e(1), self.e(2), self.e(3)]
    }

    /// E_k = c_m |hh| phi_k(hh) (|hh| = h for the ODE).
    pub fn e(&self, k: usize) -> f64 {
        self.c_m * self.hh.abs() * phi(k, self.hh)
    }

    /// The first-order (DDIM) step x <- c_x x + E_1 m.
    pub fn first(&self, x: &mut Array2<f64>, m: &Array2<f64>) {
        update(x, self.c_x, &[(self.e(1), m)]);
    }
}

/// The second-and-third-order variants of the official code (`solver_type`); diffusers calls them
/// `midpoint` and `heun`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Type {
    /// DPM-Solver's own: the derivative term folded into E_1 (or E_2 at order 3).
    DpmSolver,
    /// The Taylor form: E_2 times the first divided difference, E_3 times the second.
    Taylor,
}

/// One CFG++ step of DPM-Solver++(2M) from s to t, in place (Chung et al. 2024, Algorithm 2, as
/// the official `dpm++_2m_cfg++`): with h = lambda_t - lambda_s, E_1 = alpha_t (1 - e^{-h}),
///
/// x_t = (sigma_t/sigma_s) x_s + alpha_t x0_g - alpha_t e^{-h} x0_u + (E_1/(2r)) (x0_g - x0_u'),
///
/// x0_g the guided and x0_u the guide's prediction at s, x0_u' the guide's at the time s' of
/// `prev` = (lambda_s', x0_u'), r = (lambda_s - lambda_s')/h. The official code's difference pairs
/// the guided value now with the guide's before. Without `prev` it is DDIM CFG++,
/// alpha_t x0_g + sigma_t (x_s - alpha_s x0_u)/sigma_s; with x0_g = x0_u, DPM-Solver++(2M). A step
/// to sigma_t = 0 gives alpha_t x0_g.
pub fn cfgpp_step(
    model: &Model,
    s: f64,
    t: f64,
    x: &mut Array2<f64>,
    x0_g: &Array2<f64>,
    x0_u: &Array2<f64>,
    prev: Option<(f64, &Array2<f64>)>,
) {
    let b = model.level(t);
    if b.sigma == 0.0 {
        combine(x, &[(b.alpha, x0_g)]);
        return;
    }
    let st = Step::new(model, Param::Data, s, t);
    let e1 = st.e(1);
    let mut terms = [(b.alpha, x0_g), (e1 - b.alpha, x0_u), (0.0, x0_u)];
    if let Some((lambda_prev, x0_prev)) = prev {
        let r = (model.lambda(s) - lambda_prev) / st.h;
        terms[0].0 += e1 / (2.0 * r);
        terms[2] = (-e1 / (2.0 * r), x0_prev);
    }
    update(x, st.c_x, &terms);
}

/// The step to sigma = 0, in place: x_t = alpha_t x0_hat(x_s, s), from a model value m_s of type
/// `p`.
pub fn denoise(model: &Model, p: Param, s: f64, t: f64, x: &mut Array2<f64>, m: &Array2<f64>) {
    let (a, b) = (model.level(s), model.level(t));
    match p {
        Param::Data => combine(x, &[(b.alpha, m)]),
        Param::Noise => update(x, b.alpha / a.alpha, &[(-b.alpha * a.sigma / a.alpha, m)]),
    }
}

/// The model values at the inner points s_1, s_2 of one singlestep step (the first `len` are
/// current) and a buffer for the inner points themselves; reused from step to step.
#[derive(Debug, Default)]
pub struct Stages {
    pub m: [Array2<f64>; 2],
    pub len: usize,
    point: Array2<f64>,
}

/// Singlestep DPM-Solver-k (k = 1, 2, 3) from s to t, in place, with inner points at
/// lambda_s + r_j h (Lu et al. 2022, Algorithms 4-5; Lu et al. 2022b, Algorithm 1), from the model
/// value `m0` at s. The first `stages.len` inner values are taken as computed (the adaptive solver
/// shares them between its two orders); the others are evaluated and recorded. With
/// d_j = m(s_j) - m0: k = 2 adds c d_1 (c = E_1/(2 r_1) for `dpmsolver`, E_2/r_1 for `taylor`);
/// k = 3 evaluates s_2 at c_x' x + E_1' m0 + (r_2/r_1) E_2' d_1 and adds (E_2/r_2) d_2
/// (`dpmsolver`), or the Taylor form with D1 = (r_2 d_1/r_1 - r_1 d_2/r_2)/(r_2 - r_1) and
/// D2 = 2 (d_2/r_2 - d_1/r_1)/(r_2 - r_1) times E_2 and E_3.
#[allow(clippy::too_many_arguments)]
pub fn singlestep(
    model: &Model,
    p: Param,
    ty: Type,
    k: usize,
    s: f64,
    t: f64,
    r: &[f64],
    x: &mut Array2<f64>,
    m0: &Array2<f64>,
    stages: &mut Stages,
) -> Result<()> {
    let kind = p.prediction();
    let st = Step::new(model, p, s, t);
    if k == 1 {
        st.first(x, m0);
        return Ok(());
    }
    let ls = model.lambda(s);
    let time = |rj: f64| model.schedule.t_of_lambda(ls + rj * st.h);
    let r1 = r[0];
    let Stages { m, len, point } = stages;
    if *len < 1 {
        let s1 = time(r1);
        let st1 = Step::new(model, p, s, s1);
        combine(point, &[(st1.c_x, x), (st1.e(1), m0)]);
        model.eval_into(kind, point, s1, &mut m[0])?;
        *len = 1;
    }
    if k == 2 {
        let w = singlestep_weights(st.es(), ty, 2, r);
        update(x, st.c_x, &[(w[0], m0), (w[1], &m[0])]);
        return Ok(());
    }
    let r2 = r[1];
    let [m1, m2] = m;
    if *len < 2 {
        let s2 = time(r2);
        let st2 = Step::new(model, p, s, s2);
        let c = r2 / r1 * st2.e(2);
        combine(point, &[(st2.c_x, x), (st2.e(1) - c, m0), (c, m1)]);
        model.eval_into(kind, point, s2, m2)?;
        *len = 2;
    }
    let w = singlestep_weights(st.es(), ty, 3, r);
    update(x, st.c_x, &[(w[0], m0), (w[1], m1), (w[2], m2)]);
    Ok(())
}

/// The weights of (m_s, m(s_1), m(s_2)) in the final combination x_t = c_x x_s + ... of a
/// singlestep DPM-Solver-k step with inner fractions `r` and E = [E_1, E_2, E_3]
/// ([`singlestep`] has the formulas).
pub fn singlestep_weights(e: [f64; 3], ty: Type, k: usize, r: &[f64]) -> [f64; 3] {
    match k {
        1 => [e[0], 0.0, 0.0],
        2 => {
            let c = match ty {
                Type::DpmSolver => 0.5 / r[0] * e[0],
                Type::Taylor => e[1] / r[0],
            };
            [e[0] - c, c, 0.0]
        }
        _ => {
            let (r1, r2) = (r[0], r[1]);
            let (w1, w2) = match ty {
                Type::DpmSolver => (0.0, e[1] / r2),
                Type::Taylor => {
                    let (c1, c2) = (e[1] / (r2 - r1), 2.0 * e[2] / (r2 - r1));
                    ((c1 * r2 - c2) / r1, (c2 - c1 * r1) / r2)
                }
            };
            [e[0] - w1 - w2, w1, w2]
        }
    }
}

/// A singlestep warm-up step for a multistep method of order k, in place: singlestep
/// DPM-Solver-min(k, 3) (`dpmsolver` type, inner points uniform in lambda) from the model value
/// `m_s` at s.
#[allow(clippy::too_many_arguments)]
pub fn warmup(
    model: &Model,
    p: Param,
    k: usize,
    s: f64,
    t: f64,
    x: &mut Array2<f64>,
    m_s: &Array2<f64>,
    stages: &mut Stages,
) -> Result<()> {
    let k = k.min(3);
    let r = [1.0 / k as f64, 2.0 / k as f64];
    stages.len = 0;
    singlestep(model, p, Type::DpmSolver, k, s, t, &r, x, m_s, stages)
}

/// The largest history a multistep method keeps.
pub const MAX_HISTORY: usize = 4;

/// An update x_t = c_x x_s + sum_j w_j m_j + w_new m_new as weights of the model history (m_0
/// newest) and of a new model value: every multistep, Adams and UniPC update is one of these,
/// applied in one pass by [`History::apply`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Weights {
    pub c_x: f64,
    pub w: [f64; MAX_HISTORY],
    pub w_new: f64,
}

impl Weights {
    /// x_t = c_x x_s + e1 m_0.
    pub fn new(c_x: f64, e1: f64) -> Self {
        let mut w = [0.0; MAX_HISTORY];
        w[0] = e1;
        Weights { c_x, w, w_new: 0.0 }
    }

    /// Adds c (m_i - m_j).
    pub fn diff(&mut self, i: usize, j: usize, c: f64) {
        self.w[i] += c;
        self.w[j] -= c;
    }
}

/// The model history of a multistep method: (t, lambda, model value), newest last. Its arrays are
/// recycled: [`History::push`] swaps the new value in and hands the evicted array back.
#[derive(Debug, Default)]
pub struct History {
    pub entries: VecDeque<(f64, f64, Array2<f64>)>,
    pub capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity <= MAX_HISTORY);
        History {
            entries: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `m` (taken; `m` receives the evicted array once the history is full, so that the
    /// caller's buffer is reused).
    pub fn push(&mut self, t: f64, lambda: f64, m: &mut Array2<f64>) {
        let old = if self.entries.len() == self.capacity {
            self.entries.pop_front().map(|e| e.2)
        } else {
            None
        };
        self.entries
            .push_back((t, lambda, std::mem::replace(m, old.unwrap_or_default())));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The times of the k newest entries, newest first.
    pub fn times(&self, k: usize) -> [f64; MAX_HISTORY] {
        let mut ts = [0.0; MAX_HISTORY];
        for (j, tj) in ts.iter_mut().enumerate().take(k) {
            *tj = self.back(j).0;
        }
        ts
    }

    /// The j-th newest entry (0 = newest).
    pub fn back(&self, j: usize) -> &(f64, f64, Array2<f64>) {
        &self.entries[self.entries.len() - 1 - j]
    }

    fn terms<'a>(
        &'a self,
        u: &Weights,
        m_new: Option<&'a Array2<f64>>,
    ) -> [(f64, &'a Array2<f64>); MAX_HISTORY + 1] {
        let m0 = &self.back(0).2;
        let mut terms = [(0.0, m0); MAX_HISTORY + 1];
        for (j, term) in terms.iter_mut().enumerate().take(self.len()) {
            *term = (u.w[j], &self.back(j).2);
        }
        if let Some(m) = m_new {
            terms[MAX_HISTORY] = (u.w_new, m);
        }
        terms
    }

    /// x <- c_x x + sum_j w_j m_j + w_new m_new, in place.
    pub fn apply(&self, u: &Weights, x: &mut Array2<f64>, m_new: Option<&Array2<f64>>) {
        update(x, u.c_x, &self.terms(u, m_new));
    }

    /// out = c_x x + sum_j w_j m_j.
    pub fn apply_into(&self, u: &Weights, x: &Array2<f64>, out: &mut Array2<f64>) {
        let h = self.terms(u, None);
        combine(out, &[(u.c_x, x), h[0], h[1], h[2], h[3]]);
    }
}

/// The per-step buffers of a multistep method: the new model value, the predicted point and the
/// singlestep warm-up stages.
#[derive(Debug, Default)]
pub struct Buffers {
    pub m: Array2<f64>,
    pub pred: Array2<f64>,
    pub stages: Stages,
}

/// Multistep DPM-Solver-k from the newest history time to t (Lu et al. 2022b, Algorithm 2 and the
/// official third-order update). With r_j = h_j/h for the previous step sizes:
/// k = 2: D1 = (m_0 - m_1)/r_0, `dpmsolver` adds E_1 D1/2, `taylor` E_2 D1;
/// k = 3: D1_0, D1_1 as above, D1 = D1_0 + r_0/(r_0+r_1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r_0+r_1),
/// adds E_2 D1 + c E_3 D2 for both types. D2 ~ h^2 m''/2, while the Taylor term is E_3 h^2 m'':
/// the official code (and k-diffusion's `dpmpp_3m_sde`, diffusers' third-order update) takes
/// c = 1, which leaves an O(h^3) local error, so the update is second order; c = 2
/// (`d2_scale = 2.0`) is the Taylor-consistent, third-order update. With eta > 0 the E_k are those
/// of [`Step::with_eta`] (the SDE updates of k-diffusion's `dpmpp_2m_sde` and `dpmpp_3m_sde`).
#[allow(clippy::too_many_arguments)]
pub fn multistep(
    model: &Model,
    p: Param,
    ty: Type,
    k: usize,
    d2_scale: f64,
    eta: f64,
    hist: &History,
    t: f64,
) -> Weights {
    let st = Step::with_eta(model, p, hist.back(0).0, t, eta);
    multistep_with(&st, st.es(), ty, k, d2_scale, hist)
}

/// [`multistep`] from a step's c_x and given E = [E_1, E_2, E_3] (a caller may replace E_3, as
/// diffusers' third-order SDE update does).
pub fn multistep_with(
    st: &Step,
    e: [f64; 3],
    ty: Type,
    k: usize,
    d2_scale: f64,
    hist: &History,
) -> Weights {
    let mut u = Weights::new(st.c_x, e[0]);
    if k == 1 {
        return u;
    }
    let l0 = hist.back(0).1;
    let l1 = hist.back(1).1;
    let r0 = (l0 - l1) / st.h;
    if k == 2 {
        let c = match ty {
            Type::DpmSolver => 0.5 * e[0],
            Type::Taylor => e[1],
        };
        u.diff(0, 1, c / r0);
        return u;
    }
    let l2 = hist.back(2).1;
    let r1 = (l1 - l2) / st.h;
    let c = e[1] * r0 / (r0 + r1) + d2_scale * e[2] / (r0 + r1);
    // E_2 D1_0 + c (D1_0 - D1_1)
    u.diff(0, 1, (e[1] + c) / r0);
    u.diff(1, 2, -c / r1);
    u
}

/// UniPC's B(h): `bh1` is B(h) = hh, `bh2` is B(h) = e^hh - 1 (Zhao et al. 2023, Sec. 3.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Bh1,
    Bh2,
}

/// Solves the leading n x n block of a y = b (n <= 4) by Gaussian elimination with partial
/// pivoting.
fn solve(
    mut a: [[f64; MAX_HISTORY]; MAX_HISTORY],
    mut b: [f64; MAX_HISTORY],
    n: usize,
) -> [f64; MAX_HISTORY] {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c];
            for (arj, pj) in a[r][c..n].iter_mut().zip(&pivot[c..n]) {
                *arj -= f * pj;
            }
            b[r] -= f * b[c];
        }
    }
    let mut y = [0.0; MAX_HISTORY];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|j| a[c][j] * y[j]).sum();
        y[c] = (b[c] - s) / a[c][c];
    }
    y
}

/// The UniP-k predictor and the UniC-k corrector (Zhao et al. 2023, Algorithms 2-3, the `bh`
/// update of the official `uni_pc.py`). With r_j = (lambda_j - lambda_0)/h for the k - 1 previous
/// points, D_j = (m_j - m_0)/r_j, R_ij = r_j^(i-1) (r_k = 1), and
/// b_i = i! hh phi_{i+1}(hh) / B(h), the predictor solves the leading (k-1)-block (rho = 1/2 at
/// k = 2) and the corrector the full k x k system with D_k = m_t - m_0 (rho = 1/2 at k = 1).
/// Both are x_t = c_x x + E_1 m_0 + c_m (hh/h) B(h) sum_j rho_j D_j.
pub struct UniPc {
    st: Step,
    bh: f64,
    /// r_1..r_{k-1}, then 1.
    rks: [f64; MAX_HISTORY],
    b: [f64; MAX_HISTORY],
    k: usize,
}

impl UniPc {
    pub fn new(
        model: &Model,
        p: Param,
        variant: Variant,
        k: usize,
        hist: &History,
        t: f64,
    ) -> Self {
        let (s, l0, _) = hist.back(0);
        let st = Step::new(model, p, *s, t);
        let mut rks = [0.0; MAX_HISTORY];
        for (j, rk) in rks.iter_mut().enumerate().take(k - 1) {
            *rk = (hist.back(j + 1).1 - l0) / st.h;
        }
        rks[k - 1] = 1.0;
        let bh = match variant {
            Variant::Bh1 => st.hh,
            Variant::Bh2 => st.hh.exp_m1(),
        };
        let mut b = [0.0; MAX_HISTORY];
        let mut fact = 1.0;
        for (i, bi) in b.iter_mut().enumerate().take(k) {
            fact *= (i + 1) as f64;
            *bi = fact * st.hh * phi(i + 2, st.hh) / bh;
        }
        UniPc { st, bh, rks, b, k }
    }

    /// rho from the leading n x n block of R rho = b (rho = 1/2 when n = 1).
    fn rhos(&self, n: usize) -> [f64; MAX_HISTORY] {
        let mut rho = [0.0; MAX_HISTORY];
        if n == 1 {
            rho[0] = 0.5;
        } else if n > 1 {
            let mut a = [[0.0; MAX_HISTORY]; MAX_HISTORY];
            for (i, row) in a.iter_mut().enumerate().take(n) {
                for (j, aij) in row.iter_mut().enumerate().take(n) {
                    *aij = self.rks[j].powi(i as i32);
                }
            }
            rho = solve(a, self.b, n);
        }
        rho
    }

    fn weights(&self, n: usize, corrector: bool) -> Weights {
        let scale = self.st.c_m * (self.st.hh / self.st.h) * self.bh;
        let rho = self.rhos(n);
        let mut u = Weights::new(self.st.c_x, self.st.e(1));
        for (j, (rho, rk)) in rho.iter().zip(&self.rks).enumerate().take(self.k - 1) {
            u.diff(j + 1, 0, scale * rho / rk);
        }
        if corrector {
            u.w_new = scale * rho[self.k - 1];
            u.w[0] -= u.w_new;
        }
        u
    }

    /// UniP-k: x_t from the history alone.
    pub fn predict(&self) -> Weights {
        self.weights(self.k - 1, false)
    }

    /// UniC-k: the corrected x_t, with the model value m_t at the predicted x_t as `m_new`.
    pub fn correct(&self) -> Weights {
        self.weights(self.k, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_series_and_recurrence_agree() {
        for k in 1..=4 {
            for &z in &[-1.99999, 1.99999, -2.0, 2.0, 0.3, -1e-3] {
                // Both branches near the switch, against a 60-term series in f64 of e^z terms.
                let direct: f64 = (0..60)
                    .scan(1.0 / (1..=k).map(|i| i as f64).product::<f64>(), |t, j| {
                        let v = *t;
                        *t *= z / (j + k + 1) as f64;
                        Some(v)
                    })
                    .sum();
                assert!(
                    (phi(k, z) - direct).abs() < 2e-15 * direct.abs(),
                    "k={k} z={z}"
                );
            }
            assert!((phi(k, 0.0) - 1.0 / (1..=k).map(|i| i as f64).product::<f64>()).abs() < 1e-17);
        }
        // phi_1(z) = (e^z - 1)/z, phi_2(-h) = (e^{-h} - 1 + h)/h^2.
        assert!((phi(1, -3.0) - (1.0 - (-3.0f64).exp()) / 3.0).abs() < 1e-16);
        assert!((phi(2, -3.0) - ((-3.0f64).exp() - 1.0 + 3.0) / 9.0).abs() < 1e-16);
        assert!((phi(3, 2.0) - (2.0f64.exp() - 1.0 - 2.0 - 2.0) / 8.0).abs() < 1e-15);
    }

    #[test]
    fn solve_small_systems() {
        let y = solve(
            [
                [1.0, 1.0, 1.0, 0.0],
                [-1.0, 0.5, 1.0, 0.0],
                [1.0, 0.25, 1.0, 0.0],
                [0.0; 4],
            ],
            [3.0, 0.5, 2.25, 0.0],
            3,
        );
        for (a, b) in y.iter().zip([1.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-15);
        }
    }
}
