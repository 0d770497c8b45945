//! The one regression every flow-map method minimises. Row i has a residual linear in the
//! network's output F_i = F(C_i x_i, s_i, t_i) and (optionally) its tangent dF_i along
//! (dx_i, ds_i, dt_i):
//!
//! r_i = p_i F_i + q_i dF_i + c_i,
//!
//! with p_i, q_i scalars and c_i a stop-gradient vector. That covers every target:
//!
//! - a map-space target y (distillation, consistency, PSD): r = Psi - y = B F + (A x - y);
//! - a network-space target y (flow matching, MeanFlow, sCM, shortcut): r = F - y;
//! - a tangent (LSD, ESD): r = dPsi - y = dB F + B dF + (dA x + A dx - y), the gradient flowing
//!   through the JVP (reverse mode over forward mode, [`crate::nn::train::backward_tangent`]).
//!
//! The loss over a batch of N rows in d dimensions, with per-row weights w_i:
//!
//! - `l2`: 1/(N d) sum_i w_i |r_i|^2;
//! - `pseudo-huber:c=C` (improved CT, Song & Dhariwal 2023, eq. 6): 1/N sum_i w_i
//!   (sqrt(|r_i|^2 + C^2) - C);
//! - `adaptive:p=P,eps=E` (MeanFlow, Geng et al. 2025, Sec. 4.3, their `norm_p`, `norm_eps`):
//!   1/N sum_i w_i |r_i|^2 / sg((|r_i|^2 + E)^P) (P = 0.5 is pseudo-Huber-like, P = 0 is l2
//!   summed over dimensions).

use super::net::{Rows, TangentInput};
use super::param::Param;
use crate::error::Result;
use crate::nn::train::{backward, backward_tangent, block_sum};
use crate::nn::Mlp;
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::{s, Array2, ArrayView1};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Loss {
    L2,
    PseudoHuber { c: f64 },
    Adaptive { p: f64, eps: f64 },
}

pub const LOSSES: [&str; 3] = ["l2", "pseudo-huber", "adaptive"];

impl Loss {
    /// From the options `loss`, `c`, `p` and `eps` of a method spec, with the method's default.
    pub fn take(spec: &mut Spec, default: Loss) -> Result<Loss> {
        let name = match default {
            Loss::L2 => "l2",
            Loss::PseudoHuber { .. } => "pseudo-huber",
            Loss::Adaptive { .. } => "adaptive",
        };
        let (c0, p0, eps0) = match default {
            Loss::PseudoHuber { c } => (c, 1.0, 0.01),
            Loss::Adaptive { p, eps } => (0.0, p, eps),
            Loss::L2 => (0.0, 1.0, 0.01),
        };
        let loss = match spec.take_choice("loss", name, &LOSSES)? {
            "l2" => Loss::L2,
            "pseudo-huber" => Loss::PseudoHuber {
                c: spec.take_f64("c", c0)?,
            },
            _ => Loss::Adaptive {
                p: spec.take_f64("p", p0)?,
                eps: spec.take_f64("eps", eps0)?,
            },
        };
        let positive = match loss {
            Loss::L2 => true,
            Loss::PseudoHuber { c } => c > 0.0,
            Loss::Adaptive { p, eps } => p >= 0.0 && eps > 0.0,
        };
        if !positive {
            return Err(spec.error("need c > 0 (pseudo-huber), or p >= 0 and eps > 0 (adaptive)"));
        }
        Ok(loss)
    }

    /// The row's loss for |r|^2 = `r2` and the factor g with dloss/dr = g r, each before the
    /// weight and the 1/N (1/(N d) for l2) normalisation.
    fn value_and_slope(self, r2: f64) -> (f64, f64) {
        match self {
            Loss::L2 => (r2, 2.0),
            Loss::PseudoHuber { c } => {
                let root = (r2 + c * c).sqrt();
                (root - c, 1.0 / root)
            }
            Loss::Adaptive { p, eps } => {
                let scale = (r2 + eps).powf(-p);
                (r2 * scale, 2.0 * scale)
            }
        }
    }
}

/// The rows of one batch: r_i = p_i F_i + q_i dF_i + c_i.
pub struct Linear {
    pub x: Array2<f64>,
    pub s: Vec<f64>,
    pub t: Vec<f64>,
    /// (dx, ds, dt): the direction of dF, when some q_i is non-zero.
    pub tangent: Option<(Array2<f64>, Vec<f64>, Vec<f64>)>,
    pub p: Vec<f64>,
    pub q: Vec<f64>,
    pub c: Array2<f64>,
    pub w: Vec<f64>,
}

impl Linear {
    /// Network-space rows: r = F - y.
    pub fn net_space(
        x: Array2<f64>,
        s: Vec<f64>,
        t: Vec<f64>,
        y: Array2<f64>,
        w: Vec<f64>,
    ) -> Self {
        let n = x.nrows();
        Linear {
            x,
            s,
            t,
            tangent: None,
            p: vec![1.0; n],
            q: vec![0.0; n],
            c: -y,
            w,
        }
    }

    /// Map-space rows: r = Psi - y = B F + (A x - y).
    pub fn map_space(
        param: &Param,
        schedule: &dyn Schedule,
        x: Array2<f64>,
        s: Vec<f64>,
        t: Vec<f64>,
        y: Array2<f64>,
        w: Vec<f64>,
    ) -> Self {
        let n = x.nrows();
        let mut c = -y;
        let mut p = Vec::with_capacity(n);
        for i in 0..n {
            let [a, b, _] = param.coefficients(schedule, s[i], t[i]);
            c.row_mut(i).scaled_add(a, &x.row(i));
            p.push(b);
        }
        Linear {
            x,
            s,
            t,
            tangent: None,
            p,
            q: vec![0.0; n],
            c,
            w,
        }
    }

    /// Tangent rows: r = dPsi - y along (dx, ds, dt) = dB F + B dF + (dA x + A dx - y).
    #[allow(clippy::too_many_arguments)]
    pub fn tangent_space(
        param: &Param,
        schedule: &dyn Schedule,
        x: Array2<f64>,
        s: Vec<f64>,
        t: Vec<f64>,
        tangent: (Array2<f64>, Vec<f64>, Vec<f64>),
        y: Array2<f64>,
        w: Vec<f64>,
    ) -> Self {
        let n = x.nrows();
        let (dx, ds, dt) = &tangent;
        let mut c = -y;
        let (mut p, mut q) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let [a, b, _] = param.coefficients_along(schedule, s[i], t[i], ds[i], dt[i]);
            c.row_mut(i).scaled_add(a.d, &x.row(i));
            c.row_mut(i).scaled_add(a.v, &dx.row(i));
            p.push(b.d);
            q.push(b.v);
        }
        Linear {
            x,
            s,
            t,
            tangent: Some(tangent),
            p,
            q,
            c,
            w,
        }
    }
}

impl Linear {
    /// Makes row i the network-space row r_i = F_i - y (flow matching on the diagonal).
    pub fn set_net_row(&mut self, i: usize, y: ArrayView1<f64>) {
        self.p[i] = 1.0;
        self.q[i] = 0.0;
        self.c.row_mut(i).assign(&y.mapv(|v| -v));
    }
}

/// The loss of the module doc over `rows` and (with `want_grad`) its gradient in
/// `net.params`, summed over fixed blocks (bit-identical at any thread count).
pub fn regression(
    param: &Param,
    net: &Mlp,
    schedule: &dyn Schedule,
    loss: Loss,
    rows: &Linear,
    want_grad: bool,
) -> (f64, Vec<f64>) {
    let (n, d) = rows.x.dim();
    let scale = match loss {
        Loss::L2 => 1.0 / (n * d) as f64,
        _ => 1.0 / n as f64,
    };
    block_sum(n, net.params.len(), want_grad, |range, grad| {
        let x = rows.x.slice(s![range.clone(), ..]);
        let (s, t) = (&rows.s[range.clone()], &rows.t[range.clone()]);
        let mut cache = Vec::new();
        let keep = grad.is_some().then_some(&mut cache);
        let (f, df) = match &rows.tangent {
            None => {
                let r = Rows::new(param, net, schedule, s, t);
                (net.forward(r.input(net, x), keep), None)
            }
            Some((dx, ds, dt)) => {
                let tangent = (
                    dx.slice(s![range.clone(), ..]),
                    &ds[range.clone()],
                    &dt[range.clone()],
                );
                let input = TangentInput::new(param, net, schedule, x, s, t, tangent);
                let (f, df) = net.forward_tangent_keep(input.h0, input.dh0, keep);
                (f, Some(df))
            }
        };
        let mut residual = rows.c.slice(s![range.clone(), ..]).to_owned();
        let mut total = 0.0;
        let mut slopes = Vec::with_capacity(residual.nrows());
        for (k, mut r) in residual.outer_iter_mut().enumerate() {
            let i = range.start + k;
            r.scaled_add(rows.p[i], &f.row(k));
            if let Some(df) = &df {
                r.scaled_add(rows.q[i], &df.row(k));
            }
            let (value, slope) = loss.value_and_slope(norm2(r.view()));
            total += rows.w[i] * value;
            slopes.push(rows.w[i] * slope * scale);
        }
        if let Some(grad) = grad {
            let adjoint = |coef: &[f64]| {
                let mut a = residual.clone();
                for (k, mut row) in a.outer_iter_mut().enumerate() {
                    row *= slopes[k] * coef[range.start + k];
                }
                a
            };
            match df {
                None => backward(net, &cache, adjoint(&rows.p), grad),
                Some(_) => backward_tangent(net, &cache, adjoint(&rows.p), adjoint(&rows.q), grad),
            }
        }
        total * scale
    })
}

fn norm2(r: ArrayView1<f64>) -> f64 {
    r.iter().map(|v| v * v).sum()
}
