//! DPM-Solver (noise prediction; Lu et al., NeurIPS 2022, arXiv:2206.00927, Algorithms 1-2 and
//! eqs. 3.7-3.9) and DPM-Solver++ (data prediction; Lu et al. 2022b, arXiv:2211.01095,
//! Algorithms 1-2): one family, as in the official `dpm_solver_pytorch.py`.
//!
//! Options: `order` 1-3 (default 2), `method`, `type` = `dpmsolver` | `taylor` (diffusers'
//! `midpoint` | `heun`), `lower_order_final` (default true), `warmup` = `lower` | `singlestep`,
//! `corrector` = `none` | `unic` (multistep only; UniC-bh2 of the same order after every step but
//! the last, the evaluation at the predicted point reused as the next model value, as UniPC does).
//!
//! - `multistep`: one evaluation per step. The official warm-up takes steps 1..order-1 at orders
//!   1..order-1 (`warmup=lower`), which caps the global order at 2 for `order=3` (the first step is
//!   first order, local error O(h^2)). `warmup=singlestep` takes those steps with singlestep
//!   DPM-Solver-`order` instead ((order-1)^2 extra evaluations). `lower_order_final` lowers the
//!   order of the last steps to min(order, steps - i) only when steps < 10, as the official code
//!   (`lower_order_final_below=15` is diffusers' rule; `euler_at_final=true` makes the last step
//!   first order at any number of steps, as diffusers' option).
//!   DPM-Solver++(2M) is `order=2`; (3M) `order=3`. With `third_order=official` (default) the
//!   third-order update is the official one (also k-diffusion's and diffusers'), whose
//!   second-difference term carries half the Taylor coefficient (see
//!   [`super::expint::multistep`]): it is a second-order method, measured at 2.00 in
//!   `tests/solvers.rs`, and pfode declares order 2 for it. `third_order=taylor` doubles that
//!   term, which makes the update third order. The lower-order warm-up caps the global order at 2
//!   in the limit h -> 0, but its first step, at the largest noise level, has a tiny error
//!   constant, so the cap shows only when sampling starts where the trajectory bends
//!   (`tests/solvers.rs` starts at t = 0.3 to show it); the declared order is the steady-state
//!   order.
//! - `singlestep` (DPM-Solver-fast, the official default for singlestep): the grid's steps are
//!   the NFE budget. order 3: K = NFE/3 + 1 steps, orders [3,..,3,2,1] (NFE = 0 mod 3),
//!   [3,..,3,1] (1 mod 3), [3,..,3,2] (2 mod 3); order 2: [2,..,2] or [2,..,2,1]. The outer points are
//!   a new `logsnr` grid of K steps for a `logsnr` grid, else the grid's points at the cumulative
//!   orders. A final lower-order step bounds the global order: 3 only when NFE = 2 mod 3.
//! - `singlestep-fixed`: every grid step is one singlestep DPM-Solver-`order` step. DPM-Solver++(2S)
//!   is `order=2` (= k-diffusion `sample_dpmpp_2s_ancestral` with eta = 0 on a lambda-midpoint).
//!
//! Inner points of singlestep steps follow the grid (official `get_time_steps(skip_type, s, t,
//! order)`): uniform in t on `time-uniform`, in sqrt(t) on `time-quadratic`, else in lambda
//! (r = 1/2; 1/3, 2/3). A step that ends at sigma = 0 is the first-order denoising step
//! x = alpha_t x0_hat(x_s) (one evaluation; none for multistep, which reuses m_s).
//!
//! Under CFG++ guidance ([`crate::guidance`]) DPM-Solver++ of order 1 or 2, multistep with the
//! `dpmsolver` type, renoises with the guide's prediction ([`expint::cfgpp_step`]); every step
//! evaluates the guided and the guide's x0 at its start (one guided evaluation), the order and
//! `lower_order_final` rules are those above.

use super::expint::{self, Buffers, History, Param, Type, UniPc, Variant};
use super::{Entry, Env, Model, Multistep, Solver};
use crate::error::Result;
use crate::grid::{logsnr_times, Grid, Kind};
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::Array2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Singlestep,
    SinglestepFixed,
    Multistep,
}

pub struct DpmSolver {
    p: Param,
    ty: Type,
    method: Method,
    ms: Multistep,
    unic: bool,
    d2_scale: f64,
    orders: Vec<usize>,
    grid: Option<Grid>,
    hist: History,
    buf: Buffers,
    /// CFG++: the guided x0 at the start of the step (the history holds the guide's).
    guided: Array2<f64>,
}

/// The DPM-Solver-fast orders for an NFE budget.
fn fast_orders(nfe: usize, order: usize) -> Vec<usize> {
    match order {
        3 => {
            let k = nfe / 3 + 1;
            match nfe % 3 {
                0 => [vec![3; k.saturating_sub(2)], vec![2, 1]].concat(),
                1 => [vec![3; k - 1], vec![1]].concat(),
                _ => [vec![3; k - 1], vec![2]].concat(),
            }
        }
        2 => [vec![2; nfe / 2], vec![1; nfe % 2]].concat(),
        _ => vec![1; nfe],
    }
}

fn build(spec: &mut Spec, p: Param) -> Result<Box<dyn Solver>> {
    let order = spec.take_range("order", 2, 1, 3)?;
    let method = match spec.take_choice(
        "method",
        "multistep",
        &["singlestep", "singlestep-fixed", "multistep"],
    )? {
        "singlestep" => Method::Singlestep,
        "singlestep-fixed" => Method::SinglestepFixed,
        _ => Method::Multistep,
    };
    let ty = match spec.take_choice("type", "dpmsolver", &["dpmsolver", "taylor"])? {
        "taylor" => Type::Taylor,
        _ => Type::DpmSolver,
    };
    let multistep = method == Method::Multistep;
    let ms = if multistep {
        Multistep::parse_below(spec, order, true, Some(10))?
    } else {
        Multistep {
            order,
            lower_order_final: false,
            singlestep_warmup: false,
            final_below: None,
            euler_at_final: false,
        }
    };
    let unic = multistep && spec.take_choice("corrector", "none", &["none", "unic"])? == "unic";
    let taylor3 = multistep
        && order == 3
        && spec.take_choice("third_order", "official", &["official", "taylor"])? == "taylor";
    let d2_scale = if taylor3 { 2.0 } else { 1.0 };
    Ok(Box::new(DpmSolver {
        p,
        ty,
        method,
        ms,
        unic,
        d2_scale,
        orders: vec![],
        grid: None,
        hist: History::new(order),
        buf: Buffers::default(),
        guided: Array2::zeros((0, 0)),
    }))
}

pub const DPM_SOLVER: Entry = Entry {
    name: "dpm-solver",
    summary: "DPM-Solver-1,2,3 (noise prediction): singlestep | singlestep-fixed | multistep",
    build: |s, _| build(s, Param::Noise),
    variants: VARIANTS,
};

pub const DPM_SOLVER_PP: Entry = Entry {
    name: "dpm-solver++",
    summary: "DPM-Solver++ (data prediction): 2S, 2M, 3M and the singlestep family",
    build: |s, _: &Env| build(s, Param::Data),
    variants: VARIANTS,
};

const VARIANTS: &[(&str, &str)] = &[
    ("order=1", "logsnr"),
    ("order=2,method=multistep", "logsnr"),
    ("order=2,method=multistep,type=taylor", "karras"),
    ("order=3,method=multistep", "logsnr"),
    (
        "order=3,method=multistep,third_order=taylor,warmup=singlestep",
        "karras",
    ),
    (
        "order=3,method=multistep,third_order=taylor,type=taylor",
        "karras",
    ),
    (
        "order=3,method=multistep,third_order=taylor,warmup=singlestep,corrector=unic",
        "logsnr",
    ),
    ("order=2,method=multistep,corrector=unic", "logsnr"),
    ("order=2,method=singlestep-fixed", "logsnr"),
    ("order=3,method=singlestep-fixed", "logsnr"),
    ("order=3,method=singlestep-fixed,type=taylor", "logsnr"),
    ("order=2,method=singlestep,type=taylor", "logsnr"),
    ("order=3,method=singlestep", "logsnr"),
    ("order=3,method=singlestep,type=taylor", "karras"),
];

impl Solver for DpmSolver {
    fn order(&self) -> usize {
        match self.method {
            Method::Multistep => {
                let k = if self.ms.order == 3 && self.d2_scale == 1.0 {
                    2
                } else {
                    self.ms.order
                };
                k + usize::from(self.unic)
            }
            _ => self.ms.order,
        }
    }

    fn nfe_per_step(&self) -> usize {
        match self.method {
            Method::Multistep => 1,
            _ => self.ms.order,
        }
    }

    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        let n = grid.steps();
        let to_zero = grid.ends_at_zero(schedule);
        let k = self.ms.order;
        Some(match self.method {
            Method::Multistep => self.ms.nfe(grid, schedule, k),
            Method::SinglestepFixed => k * n - if to_zero { k - 1 } else { 0 },
            Method::Singlestep => {
                let o = fast_orders(n, k);
                o.iter().sum::<usize>() - if to_zero { o.last().unwrap() - 1 } else { 0 }
            }
        })
    }

    fn plan(&mut self, grid: &Grid, schedule: &dyn Schedule) -> Result<Vec<f64>> {
        self.grid = Some(grid.clone());
        let times = &grid.times;
        let n = grid.steps();
        Ok(match self.method {
            Method::Multistep => times.clone(),
            Method::SinglestepFixed => {
                self.orders = vec![self.ms.order; n];
                times.clone()
            }
            Method::Singlestep => {
                self.orders = fast_orders(n, self.ms.order);
                let k = self.orders.len();
                if grid.kind == Kind::LogSnr {
                    logsnr_times(schedule, times[0], times[n], k)
                } else {
                    let mut at = 0;
                    let mut v = vec![times[0]];
                    for o in &self.orders {
                        at += o;
                        v.push(times[at]);
                    }
                    v
                }
            }
        })
    }

    fn renoises_with_guide(&self) -> bool {
        self.p == Param::Data
            && self.method == Method::Multistep
            && self.ms.order <= 2
            && self.ty == Type::DpmSolver
            && !self.unic
            && !self.ms.singlestep_warmup
    }

    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        if model.oracle.renoises_with_guide() {
            return self.cfgpp(model, times, i, x);
        }
        let (s, t) = (times[i], times[i + 1]);
        let kind = self.p.prediction();
        let grid = self.grid.as_ref().expect("plan before step");
        let to_zero = model.level(t).sigma == 0.0;
        let Buffers { m, pred, stages } = &mut self.buf;
        if self.method != Method::Multistep {
            let k = self.orders[i];
            model.eval_into(kind, x, s, m)?;
            if to_zero {
                expint::denoise(model, self.p, s, t, x, m);
            } else {
                let r = grid.inner(model.schedule, s, t, k);
                stages.len = 0;
                expint::singlestep(model, self.p, self.ty, k, s, t, &r, x, m, stages)?;
            }
            return Ok(());
        }
        if self.hist.is_empty() {
            model.eval_into(kind, x, s, m)?;
            self.hist.push(s, model.lambda(s), m);
        }
        let n = times.len() - 1;
        let ms = self.ms.for_steps(n);
        let k = ms.step_order(i, n, self.hist.len());
        let last = i + 1 == n;
        let m0 = &self.hist.back(0).2;
        if to_zero {
            expint::denoise(model, self.p, s, t, x, m0);
        } else if ms.singlestep_at(i, false) {
            let r = grid.inner(model.schedule, s, t, ms.order);
            stages.len = 0;
            expint::singlestep(model, self.p, self.ty, ms.order, s, t, &r, x, m0, stages)?;
        } else {
            let u = expint::multistep(model, self.p, self.ty, k, self.d2_scale, 0.0, &self.hist, t);
            if self.unic && !last {
                self.hist.apply_into(&u, x, pred);
                model.eval_into(kind, pred, t, m)?;
                let c = UniPc::new(model, self.p, Variant::Bh2, k, &self.hist, t).correct();
                self.hist.apply(&c, x, Some(m));
                self.hist.push(t, model.lambda(t), m);
                return Ok(());
            }
            self.hist.apply(&u, x, None);
        }
        if !last {
            model.eval_into(kind, x, t, m)?;
            self.hist.push(t, model.lambda(t), m);
        }
        Ok(())
    }
}

impl DpmSolver {
    /// A CFG++ step ([`expint::cfgpp_step`]) of the order [`Multistep::step_order`] gives.
    fn cfgpp(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        let (s, t) = (times[i], times[i + 1]);
        let m = &mut self.buf.m;
        model.eval_with_guide(Param::Data.prediction(), x, s, &mut self.guided, m)?;
        self.hist.push(s, model.lambda(s), m);
        let n = times.len() - 1;
        let ms = self.ms.for_steps(n);
        let k = ms.step_order(i, n, self.hist.len());
        let prev = (k == 2).then(|| (self.hist.back(1).1, &self.hist.back(1).2));
        expint::cfgpp_step(model, s, t, x, &self.guided, &self.hist.back(0).2, prev);
        Ok(())
    }
}
