//! The exact Gaussian-mixture oracle: p_0 = sum_k w_k N(mu_k, Sigma_k), full covariances.
//!
//! Under x_t = alpha x_0 + sigma eps each component stays Gaussian,
//! p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I), so score, denoiser and density are
//! exact at every noise level. Each Sigma_k = U_k diag(l_k) U_k^T is factored once (faer), so
//! alpha^2 Sigma_k + sigma^2 I = U_k diag(D_k) U_k^T with D_k = alpha^2 l_k + sigma^2 needs no
//! factorization per time. With r = x - alpha mu_k and z = U_k^T r, per component
//!
//! - E[x_0 | x, k] = mu_k + U_k diag(alpha l_k / D_k) z,
//! - grad log N = -U_k diag(1 / D_k) z,
//! - log N = -(d ln 2 pi + sum ln D_k + sum z^2 / D_k) / 2,
//!
//! and every prediction a x0_hat + b score (see [`crate::prediction`]) is the
//! responsibility-weighted sum of a mu_k + U_k diag((a alpha l_k - b) / D_k) z: no division by
//! alpha or sigma, so alpha -> 0 and sigma -> 0 are exact (only alpha = sigma = 0 is excluded).
//! Responsibilities come from a one-pass (online) log-sum-exp over components.
//!
//! The Jacobian in x of a prediction y = sum_k r_k y_k, y_k = a mu_k + U_k diag(g_k) z_k with
//! g_k = (a alpha l_k - b)/D_k, follows from grad r_k = r_k (s_k - s) (s_k the component score,
//! s = sum_k r_k s_k the score):
//!
//! J = sum_k r_k M_k + sum_k r_k (y_k - y)(s_k - s)^T,   M_k = U_k diag(g_k) U_k^T,
//!
//! which for the score (a = 0, b = 1) is grad^2 log p_t = sum_k r_k (-C_k^-1 + s_k s_k^T) - s s^T,
//! C_k = alpha^2 Sigma_k + sigma^2 I. Its trace needs no d x d product: with c_k = U_k^T mu_k,
//! y_k . s_k = -a c_k . (z_k / D_k) - sum_j g_kj z_kj^2 / D_kj, so
//!
//! tr J = sum_k r_k (sum_j g_kj + y_k . s_k) - y . s,
//!
//! O(K d) per point beyond the rotations into and out of each eigenbasis (z_k, and y, s) that
//! the prediction itself needs.
//!
//! File format (JSON): `{"weights": [K], "means": [[d], ...], "covs": [[[d x d]], ...]}`,
//! plus optional `"name"` (string) and `"provenance"` (object), which are ignored.

use crate::error::{Error, Result};
use crate::oracle::{check_batch, par_rows, Oracle};
use crate::prediction::Prediction;
use crate::rng::RowRng;
use crate::schedule::NoiseLevel;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, Par};
use ndarray::linalg::general_mat_mul;
use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis, Zip,
};
use rayon::prelude::*;
use serde_json::Value;
use std::cell::RefCell;
use std::path::Path;

/// Tolerance on |sum of weights - 1|.
pub const WEIGHT_SUM_TOL: f64 = 1e-9;
/// Relative tolerance on |Sigma_ij - Sigma_ji| / max |Sigma|.
pub const SYMMETRY_TOL: f64 = 1e-12;
/// Largest accepted condition number of a covariance.
pub const MAX_CONDITION: f64 = 1e12;

/// The raw content of a mixture file, before validation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MixtureSpec {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub covs: Vec<Vec<Vec<f64>>>,
    /// A class label per component (optional in the file: empty when absent), e.g. the two
    /// classes of the EDM2 tree toy; kept for conditional mixtures.
    pub labels: Vec<String>,
}

/// Bare `NaN`, `Infinity`, `-Infinity` (as Python's json writes them) are not JSON; they are
/// quoted here so that the reader can name the field that holds them.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(tok) = ["NaN", "Infinity", "-Infinity"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

struct Reader<'a> {
    source: &'a str,
}

impl Reader<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::invalid(self.source, Some(field.to_string()), reason)
    }

    fn array<'v>(&self, v: &'v Value, field: &str) -> Result<&'v [Value]> {
        v.as_array()
            .map(|a| a.as_slice())
            .ok_or_else(|| self.err(field, format!("expected an array, found {}", kind(v))))
    }

    fn number(&self, v: &Value, field: &str) -> Result<f64> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(field, "number out of range")),
            Value::String(s) if ["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) => {
                Err(self.err(field, format!("{s} is not a finite number")))
            }
            _ => Err(self.err(field, format!("expected a number, found {}", kind(v)))),
        }
    }

    fn vector(&self, v: &Value, field: &str) -> Result<Vec<f64>> {
        self.array(v, field)?
            .iter()
            .enumerate()
            .map(|(i, x)| self.number(x, &format!("{field}[{i}]")))
            .collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl MixtureSpec {
    /// Parses the JSON file format; `source` names the file in errors. Checks types and
    /// finiteness; [`GaussianMixture::new`] checks shapes and the mathematics.
    pub fn from_json(text: &str, source: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(&quote_non_finite(text))
            .map_err(|e| Error::invalid(source, None, format!("invalid JSON: {e}")))?;
        let rd = Reader { source };
        let obj = value.as_object().ok_or_else(|| {
            Error::invalid(
                source,
                None,
                format!("expected an object, found {}", kind(&value)),
            )
        })?;
        for key in obj.keys() {
            if !["weights", "means", "covs", "labels", "name", "provenance"].contains(&key.as_str())
            {
                return Err(rd.err(
                    key,
                    "unknown field (valid: weights, means, covs, labels, name, provenance)",
                ));
            }
        }
        let get = |key: &str| obj.get(key).ok_or_else(|| rd.err(key, "missing"));
        let weights = rd.vector(get("weights")?, "weights")?;
        let means = rd
            .array(get("means")?, "means")?
            .iter()
            .enumerate()
            .map(|(i, m)| rd.vector(m, &format!("means[{i}]")))
            .collect::<Result<_>>()?;
        let covs = rd
            .array(get("covs")?, "covs")?
            .iter()
            .enumerate()
            .map(|(c, cov)| {
                rd.array(cov, &format!("covs[{c}]"))?
                    .iter()
                    .enumerate()
                    .map(|(i, row)| rd.vector(row, &format!("covs[{c}][{i}]")))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let labels = match obj.get("labels") {
            None => Vec::new(),
            Some(v) => rd
                .array(v, "labels")?
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    l.as_str()
                        .map(String::from)
                        .ok_or_else(|| rd.err(&format!("labels[{i}]"), "expected a string"))
                })
                .collect::<Result<_>>()?,
        };
        Ok(MixtureSpec {
            weights,
            means,
            covs,
            labels,
        })
    }

    /// Reads and parses a mixture file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// The file format, one matrix row per line; `extra` fields (e.g. name, provenance) first.
    /// Numbers are written in shortest round-trip form, so reading gives back the same bits.
    pub fn to_json(&self, extra: &[(&str, Value)]) -> String {
        let num = |x: f64| Value::from(x).to_string();
        let row = |r: &[f64]| {
            format!(
                "[{}]",
                r.iter().map(|&x| num(x)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut s = String::from("{\n");
        for (k, v) in extra {
            s += &format!("  {}: {},\n", Value::from(*k), v);
        }
        s += &format!("  \"weights\": {},\n", row(&self.weights));
        let means: Vec<String> = self
            .means
            .iter()
            .map(|m| format!("    {}", row(m)))
            .collect();
        s += &format!("  \"means\": [\n{}\n  ],\n", means.join(",\n"));
        let covs: Vec<String> = self
            .covs
            .iter()
            .map(|c| {
                let rows: Vec<String> = c.iter().map(|r| format!("      {}", row(r))).collect();
                format!("    [\n{}\n    ]", rows.join(",\n"))
            })
            .collect();
        s += &format!("  \"covs\": [\n{}\n  ]", covs.join(",\n"));
        if !self.labels.is_empty() {
            s += &format!(",\n  \"labels\": {}", Value::from(self.labels.clone()));
        }
        s += "\n}\n";
        s
    }
}

/// One Gaussian N(mean, U diag(l) U^T), eigenvalues ascending, eigenvectors as columns of U.
#[derive(Debug, Clone)]
pub struct Component {
    pub mean: Array1<f64>,
    pub u: Array2<f64>,
    pub l: Array1<f64>,
}

impl Component {
    /// z = (x - shift mean) U: the rows of x - shift mean in the eigenbasis (`r` is scratch).
    pub fn to_eigenbasis(
        &self,
        x: ArrayView2<f64>,
        shift: f64,
        r: &mut Array2<f64>,
        z: &mut Array2<f64>,
    ) {
        Zip::from(&mut *r)
            .and(&x)
            .and_broadcast(&self.mean)
            .for_each(|r, &x, &mu| *r = x - shift * mu);
        product(r, &self.u, false, z);
    }

    /// out = z U^T + shift mean: back from the eigenbasis.
    pub fn from_eigenbasis(&self, z: &Array2<f64>, shift: f64, mut out: ArrayViewMut2<f64>) {
        match out.as_slice_mut() {
            Some(o) => {
                let (m, d) = z.dim();
                let dst = faer::MatMut::from_row_major_slice_mut(o, m, d);
                product_into(z, &self.u, true, dst);
            }
            None => general_mat_mul(1.0, z, &self.u.t(), 0.0, &mut out),
        }
        Zip::from(&mut out)
            .and_broadcast(&self.mean)
            .for_each(|o, &mu| *o += shift * mu);
    }
}

/// out = a b (or a b^T) for standard-layout arrays, by faer's sequential product (runtime SIMD
/// dispatch; small sizes use its fixed-size kernels).
fn product(a: &Array2<f64>, b: &Array2<f64>, transpose_b: bool, out: &mut Array2<f64>) {
    let (m, n) = out.dim();
    let dst =
        faer::MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("standard layout"), m, n);
    product_into(a, b, transpose_b, dst);
}

fn product_into(a: &Array2<f64>, b: &Array2<f64>, transpose_b: bool, dst: faer::MatMut<'_, f64>) {
    let lhs = faer::MatRef::from_row_major_slice(
        a.as_slice().expect("standard layout"),
        a.nrows(),
        a.ncols(),
    );
    let rhs = faer::MatRef::from_row_major_slice(
        b.as_slice().expect("standard layout"),
        b.nrows(),
        b.ncols(),
    );
    let rhs = if transpose_b { rhs.transpose() } else { rhs };
    faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0, Par::Seq);
}

/// Up to this dimension the two transforms are plain loops (matrix-product kernels do not pay
/// for themselves on such thin matrices).
const SMALL_D: usize = 8;
/// ... and while K d stays at most this (with many components the products pay again).
const SMALL_KD: usize = 256;

/// Z (rows x K d) is built for at most this many values at a time (512 KiB, so that the passes
/// over it stay in a core's L2 cache), and for at least [`Z_MIN_ROWS`] rows.
const Z_BLOCK: usize = 64 * 1024;
const Z_MIN_ROWS: usize = 16;

/// A chunk's responsibilities live on the stack up to this many values ([`CHUNK_ROWS`] rows of 16
/// components); beyond, in a per-thread buffer. (A stack array, which the compiler knows aliases
/// nothing, measured 1.4x faster at (16, 5) than a reused heap buffer.)
const STACK_R: usize = 4096;
/// z <- z - c, and sum_j z_j^2 g_j in four interleaved partial sums (lanes j mod 4, added
/// pairwise at the end), so that the loop vectorizes; the order is fixed, so the result is too.
#[inline]
fn centered_quad(z: &mut [f64], c: &[f64], g: &[f64]) -> f64 {
    let n = z.len();
    let (z4, z_tail) = z.as_chunks_mut::<4>();
    let (c4, c_tail) = c[..n].as_chunks::<4>();
    let (g4, g_tail) = g[..n].as_chunks::<4>();
    let mut acc = [0.0; 4];
    for ((z, c), g) in z4.iter_mut().zip(c4).zip(g4) {
        let mut t = *z;
        for l in 0..4 {
            t[l] -= c[l];
            acc[l] += t[l] * t[l] * g[l];
        }
        *z = t;
    }
    for (l, ((z, c), g)) in z_tail.iter_mut().zip(c_tail).zip(g_tail).enumerate() {
        *z -= c;
        acc[l] += *z * *z * g;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The SIMD targets the mixture's element-wise passes are compiled for, chosen at run time. Each
/// pass is a fixed sequence of IEEE operations (no reassociation, no contraction), so every target
/// gives the same bits.
macro_rules! simd {
    ($item:item) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512dq+avx512vl+fma",
            "x86_64+avx2+fma",
            "aarch64+neon"
        ))]
        $item
    };
}

simd! {
/// Logits r_ik = ln w_k - (sum ln D_k)/2 - |z_ik - c_k|^2_{D_k^-1} / 2 for rows of z (K blocks of
/// d), centring z in place.
fn logits(z: &mut [f64], r: &mut [f64], lv: &Level, d: usize) {
    let k = lv.log_norm.len();
    for (row, ri) in z.chunks_exact_mut(k * d).zip(r.chunks_exact_mut(k)) {
        for (b, (block, rb)) in row.chunks_exact_mut(d).zip(ri.iter_mut()).enumerate() {
            let quad = centered_quad(block, &lv.c[b * d..(b + 1) * d], &lv.inv_d[b * d..(b + 1) * d]);
            *rb = lv.log_norm[b] - 0.5 * quad;
        }
    }
}
}

simd! {
/// [`GaussianMixture::chunk`] for a dimension known at compile time (D <= 4): the same arithmetic, row by
/// row in registers, z_k recomputed for the prediction instead of stored, and skipped where
/// r_k = 0 exactly (below exp(-745) of the row's largest: its terms are zeros).
fn small_rows<const D: usize>(
    u: &[f64],
    lv: &Level,
    xs: &[f64],
    out: Option<&mut [f64]>,
    log_p: &mut [f64],
) {
    let k = lv.log_norm.len();
    let kd = k * D;
    let z_of = |x: &[f64; D], b: usize| {
        let mut z = [0.0; D];
        for (l, &xl) in x.iter().enumerate() {
            for (j, zj) in z.iter_mut().enumerate() {
                *zj += xl * u[l * kd + b * D + j];
            }
        }
        for (j, zj) in z.iter_mut().enumerate() {
            *zj -= lv.c[b * D + j];
        }
        z
    };
    let m = xs.len() / D;
    let row = |i: usize| -> [f64; D] {
        let mut x = [0.0; D];
        x.copy_from_slice(&xs[i * D..(i + 1) * D]);
        x
    };
    with_responsibilities(m * k, |r| {
        for i in 0..m {
            let x = row(i);
            for (b, rb) in r[i * k..(i + 1) * k].iter_mut().enumerate() {
                let z = z_of(&x, b);
                let quad: f64 = z
                    .iter()
                    .zip(&lv.inv_d[b * D..(b + 1) * D])
                    .map(|(z, g)| z * z * g)
                    .sum();
                *rb = lv.log_norm[b] - 0.5 * quad;
            }
        }
        let Some(out) = out else {
            return normalize_rows(r, k, Some(log_p));
        };
        normalize_rows(r, k, None);
        for i in 0..m {
            let x = row(i);
            let mut o = [0.0; D];
            for (b, &w) in r[i * k..(i + 1) * k].iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let mut y = z_of(&x, b);
                for (yj, &g) in y.iter_mut().zip(&lv.gain[b * D..(b + 1) * D]) {
                    *yj *= w * g;
                }
                for (l, ol) in o.iter_mut().enumerate() {
                    let row = &u[l * kd + b * D..l * kd + (b + 1) * D];
                    *ol += y.iter().zip(row).map(|(a, b)| a * b).sum::<f64>();
                }
                for (l, ol) in o.iter_mut().enumerate() {
                    *ol += w * lv.mean[b * D + l];
                }
            }
            out[i * D..(i + 1) * D].copy_from_slice(&o);
        }
    })
}
}

simd! {
/// z_ikj <- z_ikj (r_ik g_kj).
fn scale_by_gains(z: &mut [f64], r: &[f64], gain: &[f64], d: usize) {
    let k = gain.len() / d;
    for (row, ri) in z.chunks_exact_mut(k * d).zip(r.chunks_exact(k)) {
        for ((block, &v), g) in row.chunks_exact_mut(d).zip(ri).zip(gain.chunks_exact(d)) {
            for (zj, &gj) in block.iter_mut().zip(g) {
                *zj *= v * gj;
            }
        }
    }
}
}

simd! {
/// out_i += sum_k r_ik m_k, over k in order, four rows at a time (four independent chains of
/// additions; each row's sum is the same sequence as alone).
fn add_means(out: &mut [f64], r: &[f64], mean: &[f64], d: usize) {
    let k = mean.len() / d;
    let mut rows = out.chunks_exact_mut(4 * d).zip(r.chunks_exact(4 * k));
    for (o, ri) in rows.by_ref() {
        let (o01, o23) = o.split_at_mut(2 * d);
        let (o0, o1) = o01.split_at_mut(d);
        let (o2, o3) = o23.split_at_mut(d);
        for (b, m) in mean.chunks_exact(d).enumerate() {
            let w = [ri[b], ri[k + b], ri[2 * k + b], ri[3 * k + b]];
            for j in 0..d {
                o0[j] += w[0] * m[j];
                o1[j] += w[1] * m[j];
                o2[j] += w[2] * m[j];
                o3[j] += w[3] * m[j];
            }
        }
    }
    let n4 = out.len() / (4 * d) * 4;
    for (o, ri) in out[n4 * d..].chunks_exact_mut(d).zip(r[n4 * k..].chunks_exact(k)) {
        for (&w, m) in ri.iter().zip(mean.chunks_exact(d)) {
            for (oj, &mj) in o.iter_mut().zip(m) {
                *oj += w * mj;
            }
        }
    }
}
}

thread_local! {
    /// Each thread's buffer for Z in [`GaussianMixture::chunk`], taken and put back by every call,
    /// so that it is allocated once per thread.
    static ZS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
    /// Each thread's buffer for the responsibilities of a chunk beyond [`STACK_R`] values.
    static RS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Clears the upper halves of the vector registers after a wide matrix-product kernel: on Intel
/// CPUs, legacy-SSE code (the scalar code here, libm) that runs while that state is dirty waits
/// on every instruction (reported on a 2-core AVX-512 Xeon: aniso16 27.8 ms without a clear after
/// the products, 5.0-8.0 ms with).
#[inline]
fn clear_upper() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present, which is all `vzeroupper` needs.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}

/// Rows of k logits to responsibilities: each row becomes exp(r - max) / sum, or, with `log_p`,
/// log_p_i = max + ln sum (the row then holds exp(r - max)). The exponentials of the whole
/// block are one vectorized pass ([`crate::exp::exp_in_place`]), with no libm call.
fn normalize_rows(r: &mut [f64], k: usize, mut log_p: Option<&mut [f64]>) {
    for (i, row) in r.chunks_exact_mut(k).enumerate() {
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.iter_mut().for_each(|v| *v -= max);
        if let Some(lp) = log_p.as_deref_mut() {
            lp[i] = max;
        }
    }
    crate::exp::exp_in_place(r);
    for (i, row) in r.chunks_exact_mut(k).enumerate() {
        let sum: f64 = row.iter().fold(0.0, |a, &b| a + b);
        match log_p.as_deref_mut() {
            Some(lp) => lp[i] += sum.ln(),
            None => row.iter_mut().for_each(|v| *v /= sum),
        }
    }
}

/// Runs `f` on a zeroed-or-stale scratch slice of `n` values for responsibilities: on the stack
/// up to [`STACK_R`], else this thread's reused buffer.
fn with_responsibilities<T>(n: usize, f: impl FnOnce(&mut [f64]) -> T) -> T {
    if n <= STACK_R {
        let mut stack = [0.0; STACK_R];
        return f(&mut stack[..n]);
    }
    let mut v = RS.take();
    if v.len() < n {
        v.resize(n, 0.0);
    }
    let t = f(&mut v[..n]);
    RS.set(v);
    t
}

/// The active components' constants at one noise level, flat over (component, axis).
#[derive(Default)]
struct Level {
    c: Vec<f64>,
    inv_d: Vec<f64>,
    log_norm: Vec<f64>,
    gain: Vec<f64>,
    /// a mu_k, the constant part of the prediction.
    mean: Vec<f64>,
}

/// A validated mixture with each covariance factored as U diag(l) U^T.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    spec: MixtureSpec,
    components: Vec<Component>,
    log_w: Vec<f64>,
    /// Components with positive weight, the only ones evaluated.
    active: Vec<usize>,
    /// [U_k1 | U_k2 | ...] over the active components: d x (K d), row-major.
    u_all: Vec<f64>,
}

impl GaussianMixture {
    /// Validates (K >= 1 and consistent dimensions; weights non-negative and summing to 1
    /// within [`WEIGHT_SUM_TOL`]; covariances symmetric and positive definite with condition
    /// number below [`MAX_CONDITION`]; all numbers finite) and factors each covariance once.
    pub fn new(spec: MixtureSpec, source: &str) -> Result<Self> {
        let err = |field: String, reason: String| Error::invalid(source, Some(field), reason);
        let count = |field: String, n: usize, want: usize| {
            if n == want {
                Ok(())
            } else {
                Err(err(
                    field,
                    format!("expected {want} entries, found {n} (dimension mismatch)"),
                ))
            }
        };
        let k = spec.weights.len();
        if k == 0 {
            return Err(err("weights".into(), "no components".into()));
        }
        count("means".into(), spec.means.len(), k)?;
        count("covs".into(), spec.covs.len(), k)?;
        if !spec.labels.is_empty() {
            count("labels".into(), spec.labels.len(), k)?;
        }
        let d = spec.means[0].len();
        if d == 0 {
            return Err(err("means[0]".into(), "dimension 0".into()));
        }
        for (i, &w) in spec.weights.iter().enumerate() {
            if !w.is_finite() || w < 0.0 {
                return Err(err(
                    format!("weights[{i}]"),
                    format!("weight {w} is not a non-negative finite number"),
                ));
            }
        }
        let total: f64 = spec.weights.iter().sum();
        if (total - 1.0).abs() > WEIGHT_SUM_TOL {
            return Err(err(
                "weights".into(),
                format!("weights sum to {total}, not 1 (tolerance {WEIGHT_SUM_TOL:e})"),
            ));
        }
        let mut components = Vec::with_capacity(k);
        for c in 0..k {
            let m = &spec.means[c];
            count(format!("means[{c}]"), m.len(), d)?;
            if let Some(j) = m.iter().position(|x| !x.is_finite()) {
                return Err(err(
                    format!("means[{c}][{j}]"),
                    format!("{} is not a finite number", m[j]),
                ));
            }
            let cov = &spec.covs[c];
            count(format!("covs[{c}]"), cov.len(), d)?;
            for (i, row) in cov.iter().enumerate() {
                count(format!("covs[{c}][{i}]"), row.len(), d)?;
            }
            let scale = cov.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
            for (i, row) in cov.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    let b = cov[j][i];
                    if !a.is_finite() {
                        return Err(err(
                            format!("covs[{c}][{i}][{j}]"),
                            format!("{a} is not a finite number"),
                        ));
                    }
                    if (a - b).abs() > SYMMETRY_TOL * scale {
                        return Err(err(
                            format!("covs[{c}][{i}][{j}]"),
                            format!("not symmetric: {a} but covs[{c}][{j}][{i}] = {b}"),
                        ));
                    }
                }
            }
            let sym = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (cov[i][j] + cov[j][i]));
            let (u, l) = self_adjoint_eigen(&sym).map_err(|r| err(format!("covs[{c}]"), r))?;
            let (lo, hi) = (l[0], l[d - 1]);
            if lo <= 0.0 {
                return Err(err(
                    format!("covs[{c}]"),
                    format!("not positive definite: smallest eigenvalue {lo:e} (largest {hi:e})"),
                ));
            }
            if hi / lo > MAX_CONDITION {
                return Err(err(
                    format!("covs[{c}]"),
                    format!(
                        "numerically singular: condition number {:.2e} exceeds {MAX_CONDITION:e}",
                        hi / lo
                    ),
                ));
            }
            components.push(Component {
                mean: Array1::from(m.clone()),
                u,
                l,
            });
        }
        let log_w = spec.weights.iter().map(|w| w.ln()).collect();
        let active: Vec<usize> = (0..k).filter(|&c| spec.weights[c] > 0.0).collect();
        let ka = active.len();
        let mut u_all = vec![0.0; d * ka * d];
        for (b, &c) in active.iter().enumerate() {
            for i in 0..d {
                for j in 0..d {
                    u_all[i * ka * d + b * d + j] = components[c].u[(i, j)];
                }
            }
        }
        Ok(GaussianMixture {
            spec,
            components,
            log_w,
            active,
            u_all,
        })
    }

    /// Reads, validates and factors a mixture file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::new(MixtureSpec::from_file(path)?, &path.display().to_string())
    }

    pub fn spec(&self) -> &MixtureSpec {
        &self.spec
    }

    /// The marginal law of coordinates `coords` (in that order): the mixture of the
    /// sub-vectors of the means and the sub-blocks of the covariances, exact.
    pub fn marginal(&self, coords: &[usize]) -> Result<Self> {
        let d = self.dim();
        if coords.is_empty() || coords.iter().any(|&c| c >= d) {
            return Err(Error::Dimension(format!(
                "marginal coordinates {coords:?} of a {d}-dimensional mixture"
            )));
        }
        let spec = MixtureSpec {
            weights: self.spec.weights.clone(),
            means: self
                .spec
                .means
                .iter()
                .map(|m| coords.iter().map(|&i| m[i]).collect())
                .collect(),
            covs: self
                .spec
                .covs
                .iter()
                .map(|c| {
                    coords
                        .iter()
                        .map(|&i| coords.iter().map(|&j| c[i][j]).collect())
                        .collect()
                })
                .collect(),
            labels: self.spec.labels.clone(),
        };
        Self::new(spec, &format!("marginal {coords:?}"))
    }
    /// The class labels in order of first appearance (empty for a mixture without labels).
    pub fn classes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in &self.spec.labels {
            if !out.contains(l) {
                out.push(l.clone());
            }
        }
        out
    }

    /// The components of class `label`, or a one-line error naming the valid classes.
    fn class_members(&self, label: &str) -> Result<Vec<usize>> {
        if self.spec.labels.is_empty() {
            return Err(Error::Domain(format!(
                "class '{label}': the mixture has no labels (add \"labels\": [one string per component])"
            )));
        }
        let members: Vec<usize> = (0..self.n_components())
            .filter(|&k| self.spec.labels[k] == label)
            .collect();
        if members.is_empty() {
            return Err(Error::Domain(format!(
                "unknown class '{label}' (valid: {})",
                self.classes().join(", ")
            )));
        }
        Ok(members)
    }

    /// pi_c, the total weight of class `label`.
    pub fn class_weight(&self, label: &str) -> Result<f64> {
        Ok(self
            .class_members(label)?
            .iter()
            .map(|&k| self.spec.weights[k])
            .sum())
    }

    /// p(x | c): the components of class `label` with their weights divided by pi_c (labels
    /// kept). A class of zero total weight is an error.
    pub fn conditional(&self, label: &str) -> Result<Self> {
        let members = self.class_members(label)?;
        let pi: f64 = members.iter().map(|&k| self.spec.weights[k]).sum();
        if pi <= 0.0 {
            return Err(Error::Domain(format!(
                "class '{label}' has total weight 0, so p(x | {label}) is undefined"
            )));
        }
        let spec = MixtureSpec {
            weights: members.iter().map(|&k| self.spec.weights[k] / pi).collect(),
            means: members
                .iter()
                .map(|&k| self.spec.means[k].clone())
                .collect(),
            covs: members.iter().map(|&k| self.spec.covs[k].clone()).collect(),
            labels: vec![label.to_string(); members.len()],
        };
        Self::new(spec, &format!("class '{label}'"))
    }

    pub fn n_components(&self) -> usize {
        self.spec.weights.len()
    }
    pub fn weights(&self) -> &[f64] {
        &self.spec.weights
    }
    pub fn component(&self, k: usize) -> &Component {
        &self.components[k]
    }
    pub fn mean(&self, k: usize) -> ArrayView1<'_, f64> {
        self.components[k].mean.view()
    }
    /// (U_k, l_k) with Sigma_k = U_k diag(l_k) U_k^T, eigenvalues ascending.
    pub fn eigen(&self, k: usize) -> (ArrayView2<'_, f64>, ArrayView1<'_, f64>) {
        (self.components[k].u.view(), self.components[k].l.view())
    }

    fn check_level(at: &NoiseLevel) -> Result<()> {
        if !(at.alpha >= 0.0 && at.sigma >= 0.0 && at.alpha.is_finite() && at.sigma.is_finite())
            || (at.alpha == 0.0 && at.sigma == 0.0)
        {
            return Err(Error::Domain(format!(
                "the mixture needs finite alpha, sigma >= 0, not both 0; got alpha = {}, sigma = {} at t = {}",
                at.alpha, at.sigma, at.t
            )));
        }
        Ok(())
    }

    /// The constants of the active components at this level, flat over (component, axis):
    /// D = alpha^2 l + sigma^2, c = alpha mu_k^T U_k, ln w_k - (sum ln D)/2, and with `ab` =
    /// (a, b) of the wanted prediction a x0_hat + b score the gains (a alpha l - b)/D.
    /// Fills `lv` (its vectors are cleared, so their memory is reused).
    fn level_into(&self, at: &NoiseLevel, ab: Option<(f64, f64)>, lv: &mut Level) {
        let (a2, s2) = (at.alpha * at.alpha, at.sigma * at.sigma);
        lv.log_norm.clear();
        lv.c.clear();
        lv.inv_d.clear();
        lv.gain.clear();
        lv.mean.clear();
        for &k in &self.active {
            let comp = &self.components[k];
            let mut log_det = 0.0;
            for (j, &l) in comp.l.iter().enumerate() {
                let dj = a2 * l + s2;
                log_det += dj.ln();
                lv.c.push(comp.mean.dot(&comp.u.column(j)) * at.alpha);
                lv.inv_d.push(dj.recip());
                if let Some((a, b)) = ab {
                    lv.gain.push((a * at.alpha * l - b) / dj);
                }
            }
            lv.log_norm.push(self.log_w[k] - 0.5 * log_det);
            if let Some((a, _)) = ab {
                lv.mean.extend(comp.mean.iter().map(|m| a * m));
            }
        }
    }

    /// Runs `f` with the level at `at`, built in this thread's reusable buffer (a fresh one when
    /// that buffer is in use by an enclosing call on the same thread).
    fn with_level<R>(
        &self,
        at: &NoiseLevel,
        ab: Option<(f64, f64)>,
        f: impl FnOnce(&Level) -> R,
    ) -> R {
        thread_local! {
            static LEVEL: RefCell<Level> = RefCell::new(Level::default());
        }
        LEVEL.with(|cell| match cell.try_borrow_mut() {
            Ok(mut lv) => {
                self.level_into(at, ab, &mut lv);
                f(&lv)
            }
            Err(_) => {
                let mut lv = Level::default();
                self.level_into(at, ab, &mut lv);
                f(&lv)
            }
        })
    }

    /// One chunk of rows `x` (m x d): ln p (without -d/2 ln 2 pi) into `log_p` (for a level without
    /// gains), and with a level
    /// that has gains, the prediction sum_k r_k (a mu_k + U_k diag(gain_k) z_k) into `out`
    /// (m x d, row-major), where z_k = U_k^T (x - alpha mu_k) and r_k are the responsibilities.
    /// Two products per chunk cover all components: Z = X [U_1 | ... | U_K] and
    /// out = (Z scaled by r_k gain_k) [U_1 | ... | U_K]^T.
    fn chunk(&self, lv: &Level, x: ArrayView2<f64>, out: Option<&mut [f64]>, log_p: &mut [f64]) {
        let (m, d) = x.dim();
        let k = self.active.len();
        let kd = k * d;
        let owned;
        let xs = match x.as_slice() {
            Some(s) => s,
            None => {
                owned = x.iter().cloned().collect::<Vec<f64>>();
                &owned
            }
        };
        match d {
            1 => return small_rows::<1>(&self.u_all, lv, xs, out, log_p),
            2 => return small_rows::<2>(&self.u_all, lv, xs, out, log_p),
            3 => return small_rows::<3>(&self.u_all, lv, xs, out, log_p),
            4 => return small_rows::<4>(&self.u_all, lv, xs, out, log_p),
            _ => {}
        }
        let rows = (Z_BLOCK / kd).max(Z_MIN_ROWS);
        if m > rows {
            let mut out = out;
            for start in (0..m).step_by(rows) {
                let end = (start + rows).min(m);
                let lp = if log_p.is_empty() {
                    &mut []
                } else {
                    &mut log_p[start..end]
                };
                let o = out.as_deref_mut().map(|o| &mut o[start * d..end * d]);
                self.chunk(lv, x.slice(ndarray::s![start..end, ..]), o, lp);
            }
            return;
        }
        let u_all = faer::MatRef::from_row_major_slice(&self.u_all, d, kd);
        let mut zv = ZS.take();
        if zv.len() < m * kd {
            zv.resize(m * kd, 0.0);
        }
        let z = &mut zv[..m * kd];
        let loops = d <= SMALL_D && kd <= SMALL_KD;
        if loops {
            z.fill(0.0);
        }
        if loops {
            for (zi, xi) in z.chunks_exact_mut(kd).zip(xs.chunks_exact(d)) {
                for (&xl, ul) in xi.iter().zip(self.u_all.chunks_exact(kd)) {
                    for (zj, &u) in zi.iter_mut().zip(ul) {
                        *zj += xl * u;
                    }
                }
            }
        } else {
            faer::linalg::matmul::matmul(
                faer::MatMut::from_row_major_slice_mut(z, m, kd),
                faer::Accum::Replace,
                faer::MatRef::from_row_major_slice(xs, m, d),
                u_all,
                1.0,
                Par::Seq,
            );
            clear_upper();
        }
        with_responsibilities(m * k, |r| {
            logits(z, r, lv, d);
            if lv.gain.is_empty() {
                return normalize_rows(r, k, Some(log_p));
            }
            normalize_rows(r, k, None);
            scale_by_gains(z, r, &lv.gain, d);
            if let Some(out) = out {
                if loops {
                    for (oi, zi) in out.chunks_exact_mut(d).zip(z.chunks_exact(kd)) {
                        for (ol, ul) in oi.iter_mut().zip(self.u_all.chunks_exact(kd)) {
                            *ol = zi.iter().zip(ul).map(|(a, b)| a * b).sum();
                        }
                    }
                } else {
                    faer::linalg::matmul::matmul(
                        faer::MatMut::from_row_major_slice_mut(out, m, d),
                        faer::Accum::Replace,
                        faer::MatRef::from_row_major_slice(z, m, kd),
                        u_all.transpose(),
                        1.0,
                        Par::Seq,
                    );
                    clear_upper();
                }
                add_means(out, r, &lv.mean, d);
            }
        });
        ZS.set(zv);
    }

    /// ln p_t(x) for each row of `x`, exact.
    pub fn log_density(&self, x: ArrayView2<f64>, at: &NoiseLevel) -> Result<Array1<f64>> {
        Self::check_level(at)?;
        let d = self.dim();
        if x.ncols() != d {
            return Err(Error::Dimension(format!(
                "the mixture has dimension {d}; got points {:?}",
                x.dim()
            )));
        }
        let mut out = Array1::zeros(x.nrows());
        let c = -0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
        let mut lv = Level::default();
        self.level_into(at, None, &mut lv);
        par_rows(x, out.view_mut().insert_axis(Axis(1)), |x, mut out| {
            let mut log_p = vec![0.0; x.nrows()];
            self.chunk(&lv, x, None, &mut log_p);
            for (o, l) in out.iter_mut().zip(&log_p) {
                *o = l + c;
            }
        });
        Ok(out)
    }

    /// n seeded draws from p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)
    /// (p_0 for alpha = 1, sigma = 0). Row i depends only on (seed, i).
    pub fn sample(&self, n: usize, alpha: f64, sigma: f64, seed: u64) -> Array2<f64> {
        let d = self.dim();
        let mut x = Array2::zeros((n, d));
        let mut cum = self.spec.weights.clone();
        for i in 1..cum.len() {
            cum[i] += cum[i - 1];
        }
        x.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut row)| {
                let mut rng = RowRng::new(seed, 0, i as u64);
                let u = rng.uniform() * cum[cum.len() - 1];
                let k = cum.iter().position(|&c| u < c).unwrap_or(cum.len() - 1);
                let comp = &self.components[k];
                let z: Array1<f64> = comp
                    .l
                    .iter()
                    .map(|&l| (alpha * alpha * l + sigma * sigma).sqrt() * rng.normal())
                    .collect();
                let y = comp.u.dot(&z);
                Zip::from(&mut row)
                    .and(&y)
                    .and(&comp.mean)
                    .for_each(|x, &y, &mu| *x = alpha * mu + y);
            });
        x
    }

    /// n seeded draws from the data distribution p_0.
    pub fn sample_p0(&self, n: usize, seed: u64) -> Array2<f64> {
        self.sample(n, 1.0, 0.0, seed)
    }

    /// n seeded draws from the noised marginal p_t at this level.
    pub fn sample_pt(&self, n: usize, at: &NoiseLevel, seed: u64) -> Array2<f64> {
        self.sample(n, at.alpha, at.sigma, seed)
    }
}

/// One component at a level, for the Jacobian: the component (mu, U), 1/D, g, c = U^T mu and
/// M = U diag(g) U^T.
struct TangentLevel<'a> {
    comp: &'a Component,
    log_norm: f64,
    inv_d: Array1<f64>,
    gain: Array1<f64>,
    c: Array1<f64>,
    m: Array2<f64>,
}

/// Per point, what the Jacobian and the divergence need: responsibilities and z_k.
struct PointTerms {
    r: Vec<f64>,
    z: Vec<Array1<f64>>,
}

impl GaussianMixture {
    fn tangent_levels(
        &self,
        kind: Prediction,
        at: &NoiseLevel,
    ) -> Result<(Vec<TangentLevel<'_>>, f64)> {
        Self::check_level(at)?;
        let (a, b) = kind.coefficients(at);
        if !(a.is_finite() && b.is_finite()) {
            return Err(Error::Domain(format!(
                "{kind} is not defined at t = {}: {at:?}",
                at.t
            )));
        }
        let (a2, s2) = (at.alpha * at.alpha, at.sigma * at.sigma);
        let levels = self
            .active
            .iter()
            .map(|&k| {
                let comp = &self.components[k];
                let dd = comp.l.mapv(|l| a2 * l + s2);
                let gain = Zip::from(&comp.l)
                    .and(&dd)
                    .map_collect(|&l, &dj| (a * at.alpha * l - b) / dj);
                let ug = &comp.u * &gain.view().insert_axis(Axis(0));
                TangentLevel {
                    comp,
                    log_norm: self.log_w[k] - 0.5 * dd.mapv(f64::ln).sum(),
                    c: comp.u.t().dot(&comp.mean),
                    inv_d: dd.mapv(f64::recip),
                    m: ug.dot(&comp.u.t()),
                    gain,
                }
            })
            .collect();
        Ok((levels, a))
    }

    fn point_terms(levels: &[TangentLevel], x: ArrayView1<f64>, alpha: f64) -> PointTerms {
        let mut z = Vec::with_capacity(levels.len());
        let mut logit = Vec::with_capacity(levels.len());
        for lv in levels {
            let r = Zip::from(&x)
                .and(&lv.comp.mean)
                .map_collect(|&x, &mu| x - alpha * mu);
            let zk = lv.comp.u.t().dot(&r);
            let quad: f64 = zk.iter().zip(&lv.inv_d).map(|(z, i)| z * z * i).sum();
            logit.push(lv.log_norm - 0.5 * quad);
            z.push(zk);
        }
        let top = logit.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut r: Vec<f64> = logit.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = r.iter().sum();
        r.iter_mut().for_each(|r| *r /= total);
        PointTerms { r, z }
    }

    /// (y_k, s_k) of one component at a point, back in the original basis.
    fn component_pair(lv: &TangentLevel, z: &Array1<f64>, a: f64) -> (Array1<f64>, Array1<f64>) {
        let s = -lv.comp.u.dot(&(z * &lv.inv_d));
        let y = lv.comp.u.dot(&(z * &lv.gain)) + &lv.comp.mean * a;
        (y, s)
    }

    /// y = sum_k r_k y_k and s = sum_k r_k s_k with the per-component pairs.
    fn mixed(
        pt: &PointTerms,
        pairs: &[(Array1<f64>, Array1<f64>)],
        d: usize,
    ) -> (Array1<f64>, Array1<f64>) {
        let (mut y, mut s) = (Array1::<f64>::zeros(d), Array1::<f64>::zeros(d));
        for (r, (yk, sk)) in pt.r.iter().zip(pairs) {
            y.scaled_add(*r, yk);
            s.scaled_add(*r, sk);
        }
        (y, s)
    }

    /// The exact Jacobians of the `kind` prediction (see the module doc), (N, d, d).
    pub fn jacobian_exact(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut3<f64>,
    ) -> Result<()> {
        crate::oracle::check_jacobian(self.dim(), &x, out.dim())?;
        let (levels, a) = self.tangent_levels(kind, at)?;
        let d = self.dim();
        Zip::from(x.rows())
            .and(out.outer_iter_mut())
            .into_par_iter()
            .with_min_len(64)
            .for_each(|(x, mut j)| {
                let pt = Self::point_terms(&levels, x, at.alpha);
                let pairs: Vec<_> = levels
                    .iter()
                    .zip(&pt.z)
                    .map(|(lv, z)| Self::component_pair(lv, z, a))
                    .collect();
                let (y, s) = Self::mixed(&pt, &pairs, d);
                j.fill(0.0);
                for ((r, (yk, sk)), lv) in pt.r.iter().zip(&pairs).zip(&levels) {
                    j.scaled_add(*r, &lv.m);
                    let (dy, ds) = (yk - &y, sk - &s);
                    for p in 0..d {
                        for q in 0..d {
                            j[(p, q)] += r * dy[p] * ds[q];
                        }
                    }
                }
            });
        Ok(())
    }

    /// The exact divergences tr J of the `kind` prediction (see the module doc).
    pub fn divergence_exact(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        mut out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        if x.ncols() != self.dim() || out.len() != x.nrows() {
            return Err(Error::Dimension(format!(
                "the mixture has dimension {}; got points {:?} and a divergence buffer of length {}",
                self.dim(),
                x.dim(),
                out.len()
            )));
        }
        let (levels, a) = self.tangent_levels(kind, at)?;
        let d = self.dim();
        Zip::from(x.rows())
            .and(&mut out)
            .into_par_iter()
            .with_min_len(64)
            .for_each(|(x, o)| {
                let pt = Self::point_terms(&levels, x, at.alpha);
                let mut tr = 0.0;
                for ((r, z), lv) in pt.r.iter().zip(&pt.z).zip(&levels) {
                    let zd = z * &lv.inv_d;
                    let ys = -a * lv.c.dot(&zd)
                        - z.iter()
                            .zip(&zd)
                            .zip(&lv.gain)
                            .map(|((z, zd), g)| g * z * zd)
                            .sum::<f64>();
                    tr += r * (lv.gain.sum() + ys);
                }
                let pairs: Vec<_> = levels
                    .iter()
                    .zip(&pt.z)
                    .map(|(lv, z)| Self::component_pair(lv, z, a))
                    .collect();
                let (y, s) = Self::mixed(&pt, &pairs, d);
                *o = tr - y.dot(&s);
            });
        Ok(())
    }
}

/// Eigen-decomposition of a symmetric matrix, sequential so that it never depends on threads.
pub(crate) fn self_adjoint_eigen(
    a: &Mat<f64>,
) -> std::result::Result<(Array2<f64>, Array1<f64>), String> {
    let d = a.nrows();
    let mut u = Mat::<f64>::zeros(d, d);
    let mut s = faer::diag::Diag::<f64>::zeros(d);
    let par = Par::Seq;
    let mut buf = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        d,
        ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        a.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| format!("eigen-decomposition failed: {e:?}"))?;
    let uu = Array2::from_shape_fn((d, d), |(i, j)| u[(i, j)]);
    let l = Array1::from_shape_fn(d, |i| s[i]);
    Ok((uu, l))
}

impl Oracle for GaussianMixture {
    fn dim(&self) -> usize {
        self.components[0].mean.len()
    }

    fn native(&self) -> Prediction {
        Prediction::X0
    }

    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.predict(Prediction::X0, x, at, out)
    }

    fn jvp(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        v: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.dim(), &x, &out)?;
        if v.dim() != x.dim() {
            return Err(Error::Dimension(format!(
                "points {:?} but tangents {:?}",
                x.dim(),
                v.dim()
            )));
        }
        let d = self.dim();
        let mut j = ndarray::Array3::zeros((x.nrows(), d, d));
        self.jacobian_exact(kind, x, at, j.view_mut())?;
        Zip::from(out.rows_mut())
            .and(j.outer_iter())
            .and(v.rows())
            .for_each(|mut o, j, v| o.assign(&j.dot(&v)));
        Ok(())
    }

    fn jacobian(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut3<f64>,
    ) -> Result<()> {
        self.jacobian_exact(kind, x, at, out)
    }

    fn divergence(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        self.divergence_exact(kind, x, at, out)
    }

    /// Every prediction type computed directly from the mixture (no conversion).
    fn predict(
        &self,
        kind: Prediction,
        x: ArrayView2<f64>,
        at: &NoiseLevel,
        out: ArrayViewMut2<f64>,
    ) -> Result<()> {
        check_batch(self.dim(), &x, &out)?;
        Self::check_level(at)?;
        let ab = kind.coefficients(at);
        if !(ab.0.is_finite() && ab.1.is_finite()) {
            return Err(Error::Domain(format!(
                "{kind} is not defined at t = {}: {at:?}",
                at.t
            )));
        }
        self.with_level(at, Some(ab), |lv| {
            par_rows(x, out, |x, mut out| match out.as_slice_mut() {
                Some(o) => self.chunk(lv, x, Some(o), &mut []),
                None => {
                    let mut o = vec![0.0; x.len()];
                    self.chunk(lv, x, Some(&mut o), &mut []);
                    out.assign(&ArrayView2::from_shape(x.dim(), &o).expect("shape"));
                }
            })
        });
        Ok(())
    }
}
