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

use super::{lincomb, Model};
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
        let (ls, lt) = (model.schedule.lambda(s), model.schedule.lambda(t));
        let (a, b) = (model.level(s), model.level(t));
        let h = lt - ls;
        match p {
            Param::Data => Step {
                h,
                hh: -h,
                c_x: b.sigma / a.sigma,
                c_m: b.alpha,
            },
            Param::Noise => Step {
                h,
                hh: h,
                c_x: b.alpha / a.alpha,
                c_m: -b.sigma,
            },
        }
    }

    /// E_k = c_m h phi_k(hh).
    pub fn e(&self, k: usize) -> f64 {
        self.c_m * self.h * phi(k, self.hh)
    }

    /// The first-order (DDIM) step c_x x + E_1 m.
    pub fn first(&self, x: &Array2<f64>, m: &Array2<f64>) -> Array2<f64> {
        lincomb(&[(self.c_x, x), (self.e(1), m)])
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

/// The step to sigma = 0: x_t = alpha_t x0_hat(x_s, s), from a model value m_s of type `p`.
pub fn denoise(
    model: &Model,
    p: Param,
    s: f64,
    t: f64,
    x: &Array2<f64>,
    m: &Array2<f64>,
) -> Array2<f64> {
    let (a, b) = (model.level(s), model.level(t));
    match p {
        Param::Data => m * b.alpha,
        Param::Noise => lincomb(&[(b.alpha / a.alpha, x), (-b.alpha * a.sigma / a.alpha, m)]),
    }
}

/// Singlestep DPM-Solver-k (k = 1, 2, 3) from s to t with inner points at lambda_s + r_j h
/// (Lu et al. 2022, Algorithms 4-5; Lu et al. 2022b, Algorithm 1). `cache` holds the model values
/// at s, s1, s2 already computed (reused by the adaptive solver); missing ones are evaluated and
/// appended.
#[allow(clippy::too_many_arguments)]
pub fn singlestep(
    model: &Model,
    p: Param,
    ty: Type,
    k: usize,
    s: f64,
    t: f64,
    r: &[f64],
    x: &Array2<f64>,
    cache: &mut Vec<Array2<f64>>,
) -> Result<Array2<f64>> {
    let kind = p.prediction();
    if cache.is_empty() {
        cache.push(model.eval(kind, x, s)?);
    }
    let st = Step::new(model, p, s, t);
    if k == 1 {
        return Ok(st.first(x, &cache[0]));
    }
    let ls = model.lambda(s);
    let time = |rj: f64| model.schedule.t_of_lambda(ls + rj * st.h);
    let r1 = r[0];
    if cache.len() < 2 {
        let s1 = time(r1);
        let x1 = Step::new(model, p, s, s1).first(x, &cache[0]);
        cache.push(model.eval(kind, &x1, s1)?);
    }
    let d1 = &cache[1] - &cache[0];
    if k == 2 {
        let c = match ty {
            Type::DpmSolver => 0.5 / r1 * st.e(1),
            Type::Taylor => st.e(2) / r1,
        };
        return Ok(lincomb(&[(st.c_x, x), (st.e(1), &cache[0]), (c, &d1)]));
    }
    let r2 = r[1];
    if cache.len() < 3 {
        let s2 = time(r2);
        let st2 = Step::new(model, p, s, s2);
        let x2 = lincomb(&[
            (st2.c_x, x),
            (st2.e(1), &cache[0]),
            (r2 / r1 * st2.e(2), &d1),
        ]);
        cache.push(model.eval(kind, &x2, s2)?);
    }
    let d2 = &cache[2] - &cache[0];
    Ok(match ty {
        Type::DpmSolver => lincomb(&[(st.c_x, x), (st.e(1), &cache[0]), (st.e(2) / r2, &d2)]),
        Type::Taylor => {
            // D1 = (r2 D1_0 - r1 D1_1)/(r2 - r1), D2 = 2 (D1_1 - D1_0)/(r2 - r1), D1_j = d_j / r_j.
            let (a0, a1) = (1.0 / r1, 1.0 / r2);
            let w = r2 - r1;
            let c1 = st.e(2) / w;
            let c2 = 2.0 * st.e(3) / w;
            lincomb(&[
                (st.c_x, x),
                (st.e(1), &cache[0]),
                (c1 * r2 * a0 - c2 * a0, &d1),
                (-c1 * r1 * a1 + c2 * a1, &d2),
            ])
        }
    })
}

/// A singlestep warm-up step for a multistep method of order k: singlestep DPM-Solver-min(k, 3)
/// (`dpmsolver` type, inner points uniform in lambda) from the model value `m_s` at s.
pub fn warmup(
    model: &Model,
    p: Param,
    k: usize,
    s: f64,
    t: f64,
    x: &Array2<f64>,
    m_s: &Array2<f64>,
) -> Result<Array2<f64>> {
    let k = k.min(3);
    let r: Vec<f64> = (1..k).map(|j| j as f64 / k as f64).collect();
    singlestep(
        model,
        p,
        Type::DpmSolver,
        k,
        s,
        t,
        &r,
        x,
        &mut vec![m_s.clone()],
    )
}

/// The model history of a multistep method: (t, lambda, model value), newest last.
#[derive(Debug, Default)]
pub struct History {
    pub entries: VecDeque<(f64, f64, Array2<f64>)>,
    pub capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            entries: VecDeque::new(),
            capacity,
        }
    }

    pub fn push(&mut self, t: f64, lambda: f64, m: Array2<f64>) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((t, lambda, m));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The j-th newest entry (0 = newest).
    pub fn back(&self, j: usize) -> &(f64, f64, Array2<f64>) {
        &self.entries[self.entries.len() - 1 - j]
    }
}

/// Multistep DPM-Solver-k from the newest history time to t (Lu et al. 2022b, Algorithm 2 and the
/// official third-order update). With r_j = h_j/h for the previous step sizes:
/// k = 2: D1 = (m_0 - m_1)/r_0, `dpmsolver` adds E_1 D1/2, `taylor` E_2 D1;
/// k = 3: D1_0, D1_1 as above, D1 = D1_0 + r_0/(r_0+r_1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r_0+r_1),
/// adds E_2 D1 + c E_3 D2 for both types. D2 ~ h^2 m''/2, while the Taylor term is E_3 h^2 m'':
/// the official code (and k-diffusion's `dpmpp_3m_sde`, diffusers' third-order update) takes
/// c = 1, which leaves an O(h^3) local error, so the update is second order; c = 2
/// (`d2_scale = 2.0`) is the Taylor-consistent, third-order update.
#[allow(clippy::too_many_arguments)]
pub fn multistep(
    model: &Model,
    p: Param,
    ty: Type,
    k: usize,
    d2_scale: f64,
    hist: &History,
    t: f64,
    x: &Array2<f64>,
) -> Array2<f64> {
    let (s, l0, m0) = hist.back(0);
    let st = Step::new(model, p, *s, t);
    if k == 1 {
        return st.first(x, m0);
    }
    let (_, l1, m1) = hist.back(1);
    let r0 = (l0 - l1) / st.h;
    let d1_0 = (m0 - m1) / r0;
    if k == 2 {
        let c = match ty {
            Type::DpmSolver => 0.5 * st.e(1),
            Type::Taylor => st.e(2),
        };
        return lincomb(&[(st.c_x, x), (st.e(1), m0), (c, &d1_0)]);
    }
    let (_, l2, m2) = hist.back(2);
    let r1 = (l1 - l2) / st.h;
    let d1_1 = (m1 - m2) / r1;
    let diff = &d1_0 - &d1_1;
    lincomb(&[
        (st.c_x, x),
        (st.e(1), m0),
        (st.e(2), &d1_0),
        (
            st.e(2) * r0 / (r0 + r1) + d2_scale * st.e(3) / (r0 + r1),
            &diff,
        ),
    ])
}

/// UniPC's B(h): `bh1` is B(h) = hh, `bh2` is B(h) = e^hh - 1 (Zhao et al. 2023, Sec. 3.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Bh1,
    Bh2,
}

/// Solves the small dense system a y = b (k <= 4) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c].clone();
            for (arj, pj) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *arj -= f * pj;
            }
            b[r] -= f * b[c];
        }
    }
    let mut y = vec![0.0; n];
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
/// Both return x_t = c_x x + E_1 m_0 + c_m (hh/h) B(h) sum_j rho_j D_j.
pub struct UniPc<'h> {
    st: Step,
    bh: f64,
    rks: Vec<f64>,
    b: Vec<f64>,
    d: Vec<Array2<f64>>,
    m0: &'h Array2<f64>,
}

impl<'h> UniPc<'h> {
    pub fn new(
        model: &Model,
        p: Param,
        variant: Variant,
        k: usize,
        hist: &'h History,
        t: f64,
    ) -> Self {
        let (s, l0, m0) = hist.back(0);
        let st = Step::new(model, p, *s, t);
        let mut rks = Vec::new();
        let mut d = Vec::new();
        for j in 1..k {
            let (_, lj, mj) = hist.back(j);
            let rk = (lj - l0) / st.h;
            rks.push(rk);
            d.push((mj - m0) / rk);
        }
        rks.push(1.0);
        let bh = match variant {
            Variant::Bh1 => st.hh,
            Variant::Bh2 => st.hh.exp_m1(),
        };
        let mut fact = 1.0;
        let b = (1..=k)
            .map(|i| {
                fact *= i as f64;
                fact * st.hh * phi(i + 1, st.hh) / bh
            })
            .collect();
        UniPc {
            st,
            bh,
            rks,
            b,
            d,
            m0,
        }
    }

    fn matrix(&self, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| (0..n).map(|j| self.rks[j].powi(i as i32)).collect())
            .collect()
    }

    fn combine(&self, x: &Array2<f64>, rhos: &[f64], extra: Option<&Array2<f64>>) -> Array2<f64> {
        let scale = self.st.c_m * (self.st.hh / self.st.h) * self.bh;
        let mut terms = vec![(self.st.c_x, x), (self.st.e(1), self.m0)];
        for (rho, dj) in rhos.iter().zip(self.d.iter().chain(extra)) {
            terms.push((scale * rho, dj));
        }
        lincomb(&terms)
    }

    /// UniP-k: x_t from the history alone.
    pub fn predict(&self, x: &Array2<f64>) -> Array2<f64> {
        let k = self.d.len();
        let rhos = match k {
            0 => vec![],
            1 => vec![0.5],
            _ => solve(self.matrix(k), self.b[..k].to_vec()),
        };
        self.combine(x, &rhos, None)
    }

    /// UniC-k: the corrected x_t from the model value m_t at the predicted x_t.
    pub fn correct(&self, x: &Array2<f64>, m_t: &Array2<f64>) -> Array2<f64> {
        let k = self.d.len() + 1;
        let rhos = if k == 1 {
            vec![0.5]
        } else {
            solve(self.matrix(k), self.b.clone())
        };
        let dt = m_t - self.m0;
        self.combine(x, &rhos, Some(&dt))
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
            vec![
                vec![1.0, 1.0, 1.0],
                vec![-1.0, 0.5, 1.0],
                vec![1.0, 0.25, 1.0],
            ],
            vec![3.0, 0.5, 2.25],
        );
        for (a, b) in y.iter().zip([1.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-15);
        }
    }
}
