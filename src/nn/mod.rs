//! A neural-network oracle: a multilayer perceptron F(x, t) that predicts any prediction type,
//! trained in pfode ([`train`]) or loaded from a safetensors file written elsewhere ([`weights`]).
//!
//! The network, with L = `depth` hidden layers of `width` units:
//!
//! h_0 = [x, e(s)],  h_l = SiLU(W_l h_{l-1} + b_l) (l = 1..L),  F = W_{L+1} h_L + b_{L+1},
//!
//! SiLU(z) = z sigmoid(z). The time embedding e(s) has `time_features` = 2m sinusoidal features
//! of s = t (`time_input = t`) or s = ln sigma_t (`time_input = log-sigma`, sigma floored at
//! 1e-6 so that sigma = 0 stays finite) or s = ln(sigma_t/alpha_t)/4 (`time_input = c-noise`,
//! EDM's c_noise, same floor):
//!
//! e(s) = [sin(omega_0 s), ..., sin(omega_{m-1} s), cos(omega_0 s), ..., cos(omega_{m-1} s)],
//! omega_k = omega_max^(k / (m - 1))  (geometric from 1 to `omega_max`; omega_0 = 1 when m = 1).
//!
//! The output is the configured [`Prediction`] (eps, x0, v, velocity or score); x enters as it
//! is, without preconditioning, which suits VP and flow schedules where x_t stays at the data's
//! scale. CPU inference is batched: each block of [`crate::oracle::CHUNK_ROWS`] rows is a chain
//! of matrix products (`matrixmultiply` through ndarray), the blocks run in parallel under
//! rayon, and which rows are computed together never depends on the thread count (bit-identical
//! results).

pub mod train;
pub mod weights;

use crate::error::{Error, Result};
use crate::limits::{MAX_DEPTH, MAX_PARAMS, MAX_WIDTH};
use crate::oracle::{check_batch, par_rows, Oracle};
use crate::prediction::Prediction;
use crate::schedule::NoiseLevel;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use std::fmt;
use std::str::FromStr;

/// What the time embedding is a function of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInput {
    /// The schedule time t.
    T,
    /// ln sigma_t (sigma floored at [`SIGMA_FLOOR`]).
    LogSigma,
    /// EDM's c_noise = ln(rho_t)/4 with rho = sigma/alpha (Karras et al. 2022, Table 1; rho
    /// floored at [`SIGMA_FLOOR`]).
    CNoise,
}

/// The floor on sigma in the `log-sigma` embedding.
pub const SIGMA_FLOOR: f64 = 1e-6;

impl TimeInput {
    pub fn name(self) -> &'static str {
        match self {
            TimeInput::T => "t",
            TimeInput::LogSigma => "log-sigma",
            TimeInput::CNoise => "c-noise",
        }
    }

    /// The scalar s the embedding is taken of.
    pub fn of(self, at: &NoiseLevel) -> f64 {
        match self {
            TimeInput::T => at.t,
            TimeInput::LogSigma => at.sigma.max(SIGMA_FLOOR).ln(),
            TimeInput::CNoise => (at.sigma / at.alpha).max(SIGMA_FLOOR).ln() / 4.0,
        }
    }

    /// ds/dt of [`TimeInput::of`] (0 where the floor holds).
    pub fn rate(self, at: &NoiseLevel) -> f64 {
        match self {
            TimeInput::T => 1.0,
            TimeInput::LogSigma if at.sigma > SIGMA_FLOOR => at.dsigma / at.sigma,
            TimeInput::CNoise if at.sigma / at.alpha > SIGMA_FLOOR => {
                (at.dsigma / at.sigma - at.dalpha / at.alpha) / 4.0
            }
            _ => 0.0,
        }
    }
}

impl fmt::Display for TimeInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeInput {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "t" => Ok(TimeInput::T),
            "log-sigma" => Ok(TimeInput::LogSigma),
            "c-noise" => Ok(TimeInput::CNoise),
            _ => Err(Error::Domain(format!(
                "unknown time input '{s}' (valid: t, log-sigma, c-noise)"
            ))),
        }
    }
}

/// The architecture of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// The data dimension d (input and output width).
    pub dim: usize,
    pub width: usize,
    /// The number of hidden layers L (>= 1).
    pub depth: usize,
    pub time_input: TimeInput,
    /// 2m, the number of embedding features (even, >= 2).
    pub time_features: usize,
    pub omega_max: f64,
    /// What the network outputs.
    pub prediction: Prediction,
    /// The number of time inputs: 1 for an oracle F(x, t), 2 for a two-time network F(x, s, t)
    /// (a flow map, [`crate::flow_map`]), whose h_0 = [x, e(s), e(t)].
    pub times: usize,
}

impl MlpConfig {
    /// Checks the numbers; `source` names where they came from in the error.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad =
            |field: &str, reason: String| Err(Error::invalid(source, Some(field.into()), reason));
        if self.dim == 0 {
            return bad("dim", "must be >= 1".into());
        }
        for (field, v) in [
            ("dim", self.dim),
            ("width", self.width),
            ("time_features", self.time_features),
        ] {
            if v > MAX_WIDTH {
                return bad(field, format!("{v} exceeds the limit of {MAX_WIDTH}"));
            }
        }
        if self.width == 0 {
            return bad("width", "must be >= 1".into());
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return bad(
                "depth",
                format!("must be in 1..={MAX_DEPTH}, got {}", self.depth),
            );
        }
        if !(1..=2).contains(&self.times) {
            return bad("times", format!("must be 1 or 2, got {}", self.times));
        }
        if self.time_features < 2 || !self.time_features.is_multiple_of(2) {
            return bad(
                "time_features",
                format!("must be even and >= 2, got {}", self.time_features),
            );
        }
        if self.n_params() > MAX_PARAMS {
            return bad(
                "width",
                format!(
                    "{} parameters (width {}, depth {}) exceed the limit of {MAX_PARAMS} (2^26)",
                    self.n_params(),
                    self.width,
                    self.depth
                ),
            );
        }
        if !(self.omega_max.is_finite() && self.omega_max >= 1.0) {
            return bad(
                "omega_max",
                format!("must be finite and >= 1, got {}", self.omega_max),
            );
        }
        Ok(())
    }

    /// The width of h_0.
    pub fn input_width(&self) -> usize {
        self.dim
            .saturating_add(self.time_features.saturating_mul(self.times))
    }

    /// (fan_out, fan_in) of each linear layer, input to output.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        let mut shapes = vec![(self.width, self.input_width())];
        shapes.extend((1..self.depth).map(|_| (self.width, self.width)));
        shapes.push((self.dim, self.width));
        shapes
    }

    /// The total number of parameters (saturating, so that any size from input can be checked).
    pub fn n_params(&self) -> usize {
        let layer = |o: usize, i: usize| o.saturating_mul(i).saturating_add(o);
        layer(self.width, self.input_width())
            .saturating_add(
                layer(self.width, self.width).saturating_mul(self.depth.saturating_sub(1)),
            )
            .saturating_add(layer(self.dim, self.width))
    }

    /// omega_k, k = 0..m-1.
    pub fn omegas(&self) -> Vec<f64> {
        let m = self.time_features / 2;
        (0..m)
            .map(|k| {
                if m == 1 {
                    1.0
                } else {
                    self.omega_max.powf(k as f64 / (m - 1) as f64)
                }
            })
            .collect()
    }
}

/// Where each layer's weight and bias sit in the flat parameter vector.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub fan_out: usize,
    pub fan_in: usize,
    pub w: usize,
    pub b: usize,
}

/// The multilayer perceptron. Parameters live in one flat vector (layer by layer: W_l row-major
/// (fan_out x fan_in), then b_l), which the optimizer updates in one loop.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub config: MlpConfig,
    pub params: Vec<f64>,
    pub layers: Vec<Layer>,
    omegas: Vec<f64>,
}

impl Mlp {
    /// A network with all parameters zero.
    pub fn zeros(config: MlpConfig) -> Result<Self> {
        config.validate("network config")?;
        let mut layers = Vec::new();
        let mut offset = 0;
        for (fan_out, fan_in) in config.shapes() {
            layers.push(Layer {
                fan_out,
                fan_in,
                w: offset,
                b: offset + fan_out * fan_in,
            });
            offset += fan_out * fan_in + fan_out;
        }
        let omegas = config.omegas();
        Ok(Mlp {
            params: vec![0.0; offset],
            config,
            layers,
            omegas,
        })
    }

    /// PyTorch's default `nn.Linear` initialization, seeded: every W_l and b_l entry uniform on
    /// [-1/sqrt(fan_in), 1/sqrt(fan_in)]; entry j of layer l from stream (seed, l) of
    /// [`crate::rng::RowRng`].
    pub fn init(config: MlpConfig, seed: u64) -> Result<Self> {
        let mut net = Mlp::zeros(config)?;
        for (l, layer) in net.layers.clone().iter().enumerate() {
            let bound = 1.0 / (layer.fan_in as f64).sqrt();
            let mut rng = crate::rng::RowRng::new(seed, 7, l as u64);
            let n = layer.fan_out * layer.fan_in + layer.fan_out;
            for p in &mut net.params[layer.w..layer.w + n] {
                *p = bound * (2.0 * rng.uniform() - 1.0);
            }
        }
        Ok(net)
    }

    pub fn weight(&self, l: usize) -> ArrayView2<'_, f64> {
        let layer = self.layers[l];
        ArrayView2::from_shape(
            (layer.fan_out, layer.fan_in),
            &self.params[layer.w..layer.b],
        )
        .expect("layer shape")
    }

    pub fn bias(&self, l: usize) -> ArrayView1<'_, f64> {
        let layer = self.layers[l];
        ArrayView1::from(&self.params[layer.b..layer.b + layer.fan_out])
    }

    /// Writes e(s) into `out` (length `time_features`).
    pub fn embed(&self, s: f64, out: &mut [f64]) {
        let m = self.omegas.len();
        for (k, &omega) in self.omegas.iter().enumerate() {
            let (sin, cos) = (omega * s).sin_cos();
            out[k] = sin;
            out[m + k] = cos;
        }
    }

    /// h_0 = [x, e(s_i)] for rows with their own embedding scalars `s`.
    pub fn input(&self, x: ArrayView2<f64>, s: &[f64]) -> Array2<f64> {
        self.input_times(x, &[s])
    }

    /// h_0 = [x, e(s_i), e(t_i), ...]: one embedding per entry of `times` (as many as
    /// `config.times`), each a scalar per row.
    pub fn input_times(&self, x: ArrayView2<f64>, times: &[&[f64]]) -> Array2<f64> {
        let (d, f) = (self.config.dim, self.config.time_features);
        let mut h = Array2::zeros((x.nrows(), self.config.input_width()));
        h.slice_mut(s![.., ..d]).assign(&x);
        for (i, mut row) in h.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("row");
            for (j, s) in times.iter().enumerate() {
                self.embed(s[i], &mut row[d + j * f..d + (j + 1) * f]);
            }
        }
        h
    }

    /// The tangent of h_0 along (dx, ds_j): [dx, e'(s_1) ds_1, e'(s_2) ds_2, ...], with
    /// d/ds sin(omega s) = omega cos(omega s) and d/ds cos(omega s) = -omega sin(omega s).
    pub fn input_tangent(
        &self,
        dx: ArrayView2<f64>,
        times: &[&[f64]],
        dtimes: &[&[f64]],
    ) -> Array2<f64> {
        let (d, f, m) = (
            self.config.dim,
            self.config.time_features,
            self.omegas.len(),
        );
        let mut h = Array2::zeros((dx.nrows(), self.config.input_width()));
        h.slice_mut(s![.., ..d]).assign(&dx);
        for (i, mut row) in h.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("row");
            for (j, (s, ds)) in times.iter().zip(dtimes).enumerate() {
                let out = &mut row[d + j * f..d + (j + 1) * f];
                for (k, &omega) in self.omegas.iter().enumerate() {
                    let (sin, cos) = (omega * s[i]).sin_cos();
                    out[k] = omega * cos * ds[i];
                    out[m + k] = -omega * sin * ds[i];
                }
            }
        }
        h
    }

    /// Forward-mode differentiation: the output F and its tangent dF along the input tangent
    /// `dh0`, by dz_l = W_l dh_{l-1}, dh_l = SiLU'(z_l) dz_l (one pass, no cache).
    pub fn forward_tangent(&self, h0: Array2<f64>, dh0: Array2<f64>) -> (Array2<f64>, Array2<f64>) {
        self.forward_tangent_keep(h0, dh0, None)
    }

    /// [`Mlp::forward_tangent`], keeping (with `keep`) what
    /// [`crate::nn::train::backward_tangent`] needs: per layer l its input h_{l-1} and tangent
    /// dh_{l-1}, then (hidden layers) z_l and dz_l.
    pub fn forward_tangent_keep(
        &self,
        h0: Array2<f64>,
        dh0: Array2<f64>,
        mut keep: Option<&mut Vec<Array2<f64>>>,
    ) -> (Array2<f64>, Array2<f64>) {
        let (mut h, mut dh) = (h0, dh0);
        let last = self.layers.len() - 1;
        for l in 0..=last {
            let z = self.affine(l, &h);
            let mut dz = Array2::zeros(z.dim());
            general_mat_mul(1.0, &dh, &self.weight(l).t(), 0.0, &mut dz);
            if let Some(cache) = keep.as_deref_mut() {
                cache.push(h);
                cache.push(dh);
            }
            if l == last {
                return (z, dz);
            }
            let mut dhn = dz.clone();
            ndarray::Zip::from(&mut dhn)
                .and(&z)
                .for_each(|d, &z| *d *= silu_prime(z));
            h = z.mapv(silu);
            if let Some(cache) = keep.as_deref_mut() {
                cache.push(z);
                cache.push(dz);
            }
            dh = dhn;
        }
        unreachable!()
    }

    /// z = h W_l^T + b_l, layer l on the rows of `h`.
    fn affine(&self, l: usize, h: &Array2<f64>) -> Array2<f64> {
        let fan_out = self.layers[l].fan_out;
        let dim = (h.nrows(), fan_out);
        let mut z = Array2::zeros(dim);
        z.assign(&self.bias(l).broadcast(dim).expect("bias shape"));
        general_mat_mul(1.0, h, &self.weight(l).t(), 1.0, &mut z);
        z
    }

    /// Forward pass of one block. With `keep`, every pre-activation z_l and activation h_l is
    /// kept for back-propagation (`cache[0]` = h_0, then (z_l, h_l) pairs); the output is returned.
    pub fn forward(&self, h0: Array2<f64>, mut keep: Option<&mut Vec<Array2<f64>>>) -> Array2<f64> {
        let mut h = h0;
        let last = self.layers.len() - 1;
        for l in 0..=last {
            let z = self.affine(l, &h);
            if l == last {
                if let Some(cache) = keep.as_deref_mut() {
                    cache.push(h);
                }
                return z;
            }
            let a = z.mapv(silu);
            if let Some(cache) = keep.as_deref_mut() {
                cache.push(h);
                cache.push(z);
            }
            h = a;
        }
        unreachable!()
    }

    /// F(x, s) for one noise level, into `out`, in parallel blocks of
    /// [`crate::oracle::CHUNK_ROWS`] rows.
    pub fn predict_into(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) {
        assert_eq!(self.config.times, 1, "a two-time network is not an oracle");
        let s = self.config.time_input.of(at);
        par_rows(x, out, |x, mut out| {
            let s = vec![s; x.nrows()];
            out.assign(&self.forward(self.input(x, &s), None));
        });
    }
}

/// SiLU(z) = z / (1 + e^-z).
pub fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
}

/// SiLU''(z) = sigmoid(z) (1 - sigmoid(z)) (2 + z (1 - 2 sigmoid(z))).
pub fn silu_second(z: f64) -> f64 {
    let sig = 1.0 / (1.0 + (-z).exp());
    sig * (1.0 - sig) * (2.0 + z * (1.0 - 2.0 * sig))
}

/// SiLU'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))).
pub fn silu_prime(z: f64) -> f64 {
    let sig = 1.0 / (1.0 + (-z).exp());
    sig * (1.0 + z * (1.0 - sig))
}

impl Mlp {
    /// The native prediction F and its forward-mode tangent J_F v along x (the time held fixed)
    /// for rows of `x` and `v`, in parallel blocks of [`crate::oracle::CHUNK_ROWS`] rows.
    pub fn tangent_into(
        &self,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) {
        use ndarray::Axis;
        use rayon::prelude::*;
        let s = self.config.time_input.of(at);
        let chunk = crate::oracle::CHUNK_ROWS;
        x.axis_chunks_iter(Axis(0), chunk)
            .into_par_iter()
            .zip(v.axis_chunks_iter(Axis(0), chunk).into_par_iter())
            .zip(out.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter())
            .for_each(|((x, v), mut out)| {
                let s = vec![s; x.nrows()];
                let zero = vec![0.0; x.nrows()];
                let h0 = self.input(x, &s);
                let dh0 = self.input_tangent(v, &[&s], &[&zero]);
                out.assign(&self.forward_tangent(h0, dh0).1);
            });
    }
}

impl Oracle for Mlp {
    fn dim(&self) -> usize {
        self.config.dim
    }

    /// Forward mode (one tangent pass per call): J_kind v = p v + q J_F v for the conversion
    /// kind = p x + q F of the native prediction F.
    fn jvp(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.config.dim, &x, &out)?;
        if v.dim() != x.dim() || self.config.times != 1 {
            return Err(Error::Dimension(format!(
                "points {:?} but tangents {:?} (or a two-time network)",
                x.dim(),
                v.dim()
            )));
        }
        let (p, q) = crate::prediction::conversion(self.config.prediction, kind, at)?;
        self.tangent_into(x, at, v, out.view_mut());
        ndarray::Zip::from(&mut out)
            .and(&v)
            .for_each(|o, &v| *o = p * v + q * *o);
        Ok(())
    }
    fn native(&self) -> Prediction {
        self.config.prediction
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        check_batch(self.config.dim, &x, &out)?;
        if self.config.times != 1 {
            return Err(Error::Domain(
                "a two-time network (a flow map) is not an oracle; load it with --flow-map".into(),
            ));
        }
        self.predict_into(x, at, out);
        Ok(())
    }
}
