//! A learned flow map: a two-time [`Mlp`] (`times = 2`, h_0 = [C x, e(s), e(t)], the embeddings
//! of the two levels by the network's `time_input`) in a parameterisation of [`super::param`],
//! with its forward-mode JVP and its safetensors file.
//!
//! The file is the network's ([`crate::nn::weights`]) with, in the metadata, `flow_map` (the
//! parameterisation), `sigma_data` (for `consistency` and `ctm`), `schedule` (required),
//! `anytime` (`true` when trained for every pair s > t), `levels` (the comma-separated training
//! levels, noisiest first) and `grid_only` (`true` when valid only between those levels).

use super::param::{Dual, Param};
use super::{check_pair, FlowMap};
use crate::error::{Error, Result};
use crate::nn::{weights, Mlp};
use crate::oracle::par_rows;
use crate::schedule::{self, Schedule};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The per-row coefficients and network input of a batch with its own (s_i, t_i).
pub struct Rows {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub c: Vec<f64>,
    /// The embedding scalars of s and t.
    pub es: Vec<f64>,
    pub et: Vec<f64>,
}

impl Rows {
    pub fn new(param: &Param, net: &Mlp, schedule: &dyn Schedule, s: &[f64], t: &[f64]) -> Self {
        let abc: Vec<[f64; 3]> = s
            .iter()
            .zip(t)
            .map(|(&s, &t)| param.coefficients(schedule, s, t))
            .collect();
        Rows::with(&abc, net, schedule, s, t)
    }

    /// The rows with given coefficients (A_i, B_i, C_i).
    fn with(abc: &[[f64; 3]], net: &Mlp, schedule: &dyn Schedule, s: &[f64], t: &[f64]) -> Self {
        let mut r = Rows {
            a: Vec::with_capacity(s.len()),
            b: Vec::with_capacity(s.len()),
            c: Vec::with_capacity(s.len()),
            es: Vec::with_capacity(s.len()),
            et: Vec::with_capacity(s.len()),
        };
        for ((&s, &t), &[a, b, c]) in s.iter().zip(t).zip(abc) {
            r.a.push(a);
            r.b.push(b);
            r.c.push(c);
            r.es.push(net.config.time_input.of(&schedule.level(s)));
            r.et.push(net.config.time_input.of(&schedule.level(t)));
        }
        r
    }

    /// h_0 = [C_i x_i, e(s_i), e(t_i)].
    pub fn input(&self, net: &Mlp, x: ArrayView2<f64>) -> Array2<f64> {
        let mut cx = x.to_owned();
        for (mut row, &c) in cx.outer_iter_mut().zip(&self.c) {
            row *= c;
        }
        net.input_times(cx.view(), &[&self.es, &self.et])
    }

    /// Psi_i = A_i x_i + B_i F_i.
    pub fn combine(&self, x: ArrayView2<f64>, f: &Array2<f64>) -> Array2<f64> {
        let mut psi = Array2::zeros(x.dim());
        for (i, mut row) in psi.outer_iter_mut().enumerate() {
            Zip::from(&mut row)
                .and(x.row(i))
                .and(f.row(i))
                .for_each(|p, &x, &f| *p = self.a[i] * x + self.b[i] * f);
        }
        psi
    }
}

/// Psi(x_i, s_i, t_i) of a network `net` (its parameters; the architecture must have
/// `times = 2`) in `param` on `schedule`, row by row, in one block.
pub fn eval_rows(
    param: &Param,
    net: &Mlp,
    schedule: &dyn Schedule,
    x: ArrayView2<f64>,
    s: &[f64],
    t: &[f64],
) -> Array2<f64> {
    let rows = Rows::new(param, net, schedule, s, t);
    let f = net.forward(rows.input(net, x), None);
    rows.combine(x, &f)
}

/// The network input of a batch along a tangent: the rows, each row's coefficients as dual
/// numbers along (ds, dt), h_0 and its tangent dh_0 (along (dC x + C dx, de(s) ds, de(t) dt)).
pub struct TangentInput {
    pub rows: Rows,
    pub coef: Vec<[Dual; 3]>,
    pub h0: Array2<f64>,
    pub dh0: Array2<f64>,
}

impl TangentInput {
    pub fn new(
        param: &Param,
        net: &Mlp,
        schedule: &dyn Schedule,
        x: ArrayView2<f64>,
        s: &[f64],
        t: &[f64],
        tangent: (ArrayView2<f64>, &[f64], &[f64]),
    ) -> Self {
        let (dx, ds, dt) = tangent;
        let n = x.nrows();
        let mut coef = Vec::with_capacity(n);
        let (mut des, mut det) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let scalar_rate = |u: f64| net.config.time_input.rate(&schedule.level(u));
        for i in 0..n {
            coef.push(param.coefficients_along(schedule, s[i], t[i], ds[i], dt[i]));
            des.push(scalar_rate(s[i]) * ds[i]);
            det.push(scalar_rate(t[i]) * dt[i]);
        }
        let abc: Vec<[f64; 3]> = coef.iter().map(|c| c.map(|c| c.v)).collect();
        let rows = Rows::with(&abc, net, schedule, s, t);
        let mut dcx = dx.to_owned();
        for (i, mut row) in dcx.outer_iter_mut().enumerate() {
            let [_, _, c] = coef[i];
            Zip::from(&mut row)
                .and(x.row(i))
                .for_each(|d, &x| *d = c.d * x + c.v * *d);
        }
        let dh0 = net.input_tangent(dcx.view(), &[&rows.es, &rows.et], &[&des, &det]);
        let h0 = rows.input(net, x);
        TangentInput {
            rows,
            coef,
            h0,
            dh0,
        }
    }

    /// dPsi_i = dA x + A dx + dB F + B dF.
    pub fn dpsi(
        &self,
        x: ArrayView2<f64>,
        dx: ArrayView2<f64>,
        f: &Array2<f64>,
        df: &Array2<f64>,
    ) -> Array2<f64> {
        let mut dpsi = Array2::zeros(x.dim());
        for (i, mut row) in dpsi.outer_iter_mut().enumerate() {
            let [a, b, _] = self.coef[i];
            Zip::from(&mut row)
                .and(x.row(i))
                .and(dx.row(i))
                .and(f.row(i))
                .and(df.row(i))
                .for_each(|p, &x, &dx, &f, &df| *p = a.d * x + a.v * dx + b.d * f + b.v * df);
        }
        dpsi
    }
}

/// Psi, its tangent dPsi along (dx, ds, dt), and the network's F and dF.
pub struct Jvp {
    pub psi: Array2<f64>,
    pub dpsi: Array2<f64>,
    pub f: Array2<f64>,
    pub df: Array2<f64>,
}

/// Psi and its tangent dPsi along (dx, ds, dt) (forward mode, one pass):
/// dPsi = dA x + A dx + dB F + B dF, with dF the network's tangent along
/// (dC x + C dx, de(s) ds, de(t) dt).
#[allow(clippy::too_many_arguments)]
pub fn jvp_rows(
    param: &Param,
    net: &Mlp,
    schedule: &dyn Schedule,
    x: ArrayView2<f64>,
    s: &[f64],
    t: &[f64],
    dx: ArrayView2<f64>,
    ds: &[f64],
    dt: &[f64],
) -> Jvp {
    let input = TangentInput::new(param, net, schedule, x, s, t, (dx, ds, dt));
    let (f, df) = net.forward_tangent(input.h0.clone(), input.dh0.clone());
    let psi = input.rows.combine(x, &f);
    let dpsi = input.dpsi(x, dx, &f, &df);
    Jvp { psi, dpsi, f, df }
}

/// A learned flow map.
pub struct FlowNet {
    pub net: Mlp,
    pub param: Param,
    pub schedule: Box<dyn Schedule>,
    pub anytime: bool,
    /// The levels the map was trained on (noisiest first), if recorded.
    pub levels: Option<Vec<f64>>,
    /// Whether the map is valid only between its levels (progressive distillation).
    pub grid_only: bool,
    /// Every metadata entry of the file it came from (or will be written with).
    pub metadata: BTreeMap<String, String>,
    calls: AtomicUsize,
}

impl FlowNet {
    pub fn new(net: Mlp, param: Param, schedule: Box<dyn Schedule>) -> Result<Self> {
        if net.config.times != 2 {
            return Err(Error::Domain(format!(
                "a flow map needs a two-time network (times = 2), got times = {}",
                net.config.times
            )));
        }
        Ok(FlowNet {
            net,
            param,
            schedule,
            anytime: true,
            levels: None,
            grid_only: false,
            metadata: BTreeMap::new(),
            calls: AtomicUsize::new(0),
        })
    }

    /// The metadata the file is written with: the architecture's, `extra`, and the map's keys.
    pub fn file_metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.metadata.clone();
        m.insert("flow_map".into(), self.param.name().into());
        if let Some(sd) = self.param.sigma_data() {
            m.insert("sigma_data".into(), format!("{sd:?}"));
        }
        m.insert("schedule".into(), self.schedule.spec());
        m.insert("anytime".into(), self.anytime.to_string());
        m.insert("grid_only".into(), self.grid_only.to_string());
        if let Some(levels) = &self.levels {
            let text: Vec<String> = levels.iter().map(|t| format!("{t:?}")).collect();
            m.insert("levels".into(), text.join(","));
        }
        m
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        weights::to_bytes(&self.net, &self.file_metadata())
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses a flow-map file; every error names `source` and the metadata field.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let loaded = weights::from_bytes(bytes, source)?;
        let m = loaded.metadata;
        let bad = |key: &str, reason: String| {
            Error::invalid(source, Some(format!("__metadata__.{key}")), reason)
        };
        if loaded.net.config.times != 2 {
            return Err(bad(
                "times",
                "a flow map is a two-time network (times = 2); this file is a one-time oracle"
                    .into(),
            ));
        }
        let name = m
            .get("flow_map")
            .ok_or_else(|| bad("flow_map", "missing (the parameterisation)".into()))?;
        let sigma_data = match m.get("sigma_data") {
            Some(v) => v
                .parse::<f64>()
                .map_err(|e| bad("sigma_data", format!("not a number: {e}")))?,
            None => 1.0,
        };
        let param = Param::parse(name, sigma_data).map_err(|e| bad("flow_map", e.to_string()))?;
        let spec = m
            .get("schedule")
            .ok_or_else(|| bad("schedule", "missing (needed to place the levels)".into()))?;
        let schedule = schedule::parse(spec).map_err(|e| bad("schedule", e.to_string()))?;
        let flag = |key: &str, default: bool| match m.get(key).map(String::as_str) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(bad(key, format!("'{v}' is not true or false"))),
        };
        let (anytime, grid_only) = (flag("anytime", true)?, flag("grid_only", false)?);
        let levels = match m.get("levels") {
            None => None,
            Some(text) => {
                let v = text
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad("levels", format!("not a list of numbers: {e}")))?;
                crate::grid::Grid::explicit(v.clone(), source, schedule.as_ref())
                    .map_err(|e| bad("levels", e.to_string()))?;
                Some(v)
            }
        };
        let mut map = FlowNet::new(loaded.net, param, schedule)?;
        if grid_only && levels.is_none() {
            return Err(bad(
                "levels",
                "missing (a grid_only map needs its levels)".into(),
            ));
        }
        map.anytime = anytime;
        map.grid_only = grid_only;
        map.levels = levels;
        map.metadata = m;
        Ok(map)
    }

    /// Psi and its JVP along (dx, ds, dt) at per-row times (see [`jvp_rows`]).
    #[allow(clippy::too_many_arguments)]
    pub fn jvp(
        &self,
        x: ArrayView2<f64>,
        s: &[f64],
        t: &[f64],
        dx: ArrayView2<f64>,
        ds: &[f64],
        dt: &[f64],
    ) -> Jvp {
        jvp_rows(
            &self.param,
            &self.net,
            self.schedule.as_ref(),
            x,
            s,
            t,
            dx,
            ds,
            dt,
        )
    }
}

impl FlowMap for FlowNet {
    fn dim(&self) -> usize {
        self.net.config.dim
    }
    fn apply(&self, x: ArrayView2<f64>, s: f64, t: f64, out: ArrayViewMut2<f64>) -> Result<()> {
        check_pair(self.schedule.as_ref(), self.dim(), &x, s, t, &out)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        par_rows(x, out, |x, mut out| {
            let (s, t) = (vec![s; x.nrows()], vec![t; x.nrows()]);
            out.assign(&eval_rows(
                &self.param,
                &self.net,
                self.schedule.as_ref(),
                x,
                &s,
                &t,
            ));
        });
        Ok(())
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
    fn anytime(&self) -> bool {
        self.anytime
    }
    fn levels(&self) -> Option<&[f64]> {
        self.levels.as_deref().filter(|_| self.grid_only)
    }
}
