//! Brownian paths that refine consistently: a virtual Brownian tree (Gaines & Lyons 1997; Li et
//! al. 2020, "Scalable gradients for SDEs", Sec. 3.3) over a counter-based generator.
//!
//! A path is W(t) in the schedule's time t, W(t_0) = 0 at the sampler's first time, one
//! independent d-dimensional path per batch row. It is queried on a grid t_0, ..., t_n with
//! n = b 2^k steps (b odd): the tree's nodes are the grid indices. The root holds W(t_n) =
//! sqrt|t_n - t_0| z; a node [a, c] whose length is more than 2^k (several of the b base
//! intervals) splits at a + floor((c - a) / 2^(k+1)) 2^k, a shorter one at its midpoint, and the
//! value at the split index m is the Brownian bridge
//!
//!   W_m = W_a + (s_m - s_a)/(s_c - s_a) (W_c - W_a) + sqrt((s_m - s_a)(s_c - s_m)/(s_c - s_a)) z_m,
//!
//! with s = |t - t_0|. Every index is the split point of one node only, and z_m is drawn from a
//! ChaCha12 stream keyed by the seed, the row and the index's position on a lattice of
//! b 2^40 points (m 2^(40-k)), which does not depend on k. So grids of n, 2n, 4n, ... steps
//! over the same times see the same path: each fine increment is the bridge between the coarse
//! points, and the fine increments sum to the coarse one up to rounding. Rows and nodes have
//! their own streams, so a path is bit-identical at any thread count and any batch split.
//!
//! [`Walk`] visits the grid in order, computing each node once (one normal per value and step,
//! O(log n) arrays held); [`Walk::value`] descends from the root for any index.

use crate::error::{Error, Result};
use ndarray::{Array2, ArrayViewMut1, Axis, Zip};
use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Lattice refinement below the base intervals: grids of up to b 2^40 steps.
const DEPTH: u32 = 40;
/// Separates Brownian streams from the other uses of a seed ([`crate::rng`] uses 0..2^16).
const DOMAIN: u64 = 0xB0B0_0000_0000_0000;
/// Rows per parallel task; every row's values depend only on its own stream.
const ROWS: usize = 64;

/// The seed of a family of Brownian paths, one per batch row.
#[derive(Debug, Clone)]
pub struct BrownianPath {
    rng: ChaCha12Rng,
}

fn mix(mut v: u64) -> u64 {
    v = (v ^ (v >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    v = (v ^ (v >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    v ^ (v >> 31)
}

impl BrownianPath {
    pub fn new(seed: u64) -> Self {
        BrownianPath {
            rng: ChaCha12Rng::seed_from_u64(seed ^ DOMAIN),
        }
    }

    /// d standard normals (Box-Muller, a fixed two uniforms per pair) for `row` at lattice
    /// point `node`.
    fn normals(&self, row: u64, node: u64, mut out: ArrayViewMut1<f64>) {
        let mut rng = self.rng.clone();
        rng.set_stream(mix(mix(row) ^ node.rotate_left(17)));
        rng.set_word_pos(0);
        let mut uniform = || (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let d = out.len();
        let mut j = 0;
        while j < d {
            let (u, v) = (1.0 - uniform(), uniform());
            let r = (-2.0 * u.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * v).sin_cos();
            out[j] = r * c;
            if j + 1 < d {
                out[j + 1] = r * s;
            }
            j += 2;
        }
    }

    /// A walk along `times` (strictly monotone, n >= 1 steps) for `rows` rows of dimension d.
    pub fn walk(&self, times: &[f64], rows: usize, d: usize) -> Result<Walk> {
        let n = times.len().saturating_sub(1);
        if n == 0
            || times
                .windows(2)
                .any(|w| !(w[1] - w[0]).is_finite() || w[1] == w[0])
        {
            return Err(Error::Domain(
                "a Brownian path needs a grid of at least one step with distinct finite times"
                    .into(),
            ));
        }
        let k = n.trailing_zeros();
        if k > DEPTH || (n >> k) >= 1 << 23 {
            return Err(Error::Domain(format!(
                "a Brownian path supports grids of b 2^k steps with b < 2^23 and k <= {DEPTH}; got {n}"
            )));
        }
        // The stack holds at most one value per tree level: ceil(log2 b) + k + 1, plus W(t_pos).
        let b = n >> k;
        let depth = (usize::BITS - (b - 1).leading_zeros()) as usize + k as usize + 2;
        let mut walk = Walk {
            path: self.clone(),
            times: times.to_vec(),
            k,
            rows,
            d,
            pos: 0,
            w: Array2::zeros((rows, d)),
            stack: Vec::with_capacity(depth),
            spare: (0..depth).map(|_| Array2::zeros((rows, d))).collect(),
        };
        let mut end = walk.take();
        walk.fill_normals(n, &mut end);
        let scale = walk.s(n).sqrt();
        end.mapv_inplace(|v| v * scale);
        walk.stack.push((n, end));
        Ok(walk)
    }
}

/// A Brownian path on one grid, visited in order.
#[derive(Debug)]
pub struct Walk {
    path: BrownianPath,
    times: Vec<f64>,
    k: u32,
    rows: usize,
    d: usize,
    pos: usize,
    /// W at times[pos].
    w: Array2<f64>,
    /// Known values to the right of pos, nearest last.
    stack: Vec<(usize, Array2<f64>)>,
    spare: Vec<Array2<f64>>,
}

impl Walk {
    fn s(&self, j: usize) -> f64 {
        (self.times[j] - self.times[0]).abs()
    }

    fn take(&mut self) -> Array2<f64> {
        self.spare
            .pop()
            .unwrap_or_else(|| Array2::zeros((self.rows, self.d)))
    }

    /// The split index of node [a, c] (c - a >= 2).
    fn split(&self, a: usize, c: usize) -> usize {
        let unit = 1usize << self.k;
        if c - a > unit {
            a + (c - a) / (2 * unit) * unit
        } else {
            (a + c) / 2
        }
    }

    fn fill_normals(&self, m: usize, out: &mut Array2<f64>) {
        let node = (m as u64) << (DEPTH - self.k);
        out.axis_chunks_iter_mut(Axis(0), ROWS)
            .into_par_iter()
            .enumerate()
            .for_each(|(c, mut chunk)| {
                for (r, row) in chunk.outer_iter_mut().enumerate() {
                    self.path.normals((c * ROWS + r) as u64, node, row);
                }
            });
    }

    /// out = the bridge value at the split m of [a, c] given W_a and W_c.
    fn bridge_into(
        &self,
        a: usize,
        m: usize,
        c: usize,
        wa: &Array2<f64>,
        wc: &Array2<f64>,
        out: &mut Array2<f64>,
    ) {
        let (sa, sm, sc) = (self.s(a), self.s(m), self.s(c));
        let mean = (sm - sa) / (sc - sa);
        let sd = ((sm - sa) * (sc - sm) / (sc - sa)).sqrt();
        self.fill_normals(m, out);
        Zip::from(out)
            .and(wa)
            .and(wc)
            .par_for_each(|o, &a, &c| *o = a + mean * (c - a) + sd * *o);
    }

    /// The index of the next step's start.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// dw = W(t_{i+1}) - W(t_i) for step i, which must be the next step ([`Walk::position`]).
    pub fn increment(&mut self, i: usize, dw: &mut Array2<f64>) -> Result<()> {
        if i != self.pos || i + 1 >= self.times.len() {
            return Err(Error::Domain(format!(
                "Brownian increments are taken in order: step {i} was asked for at position {} of {}",
                self.pos,
                self.times.len() - 1
            )));
        }
        let target = i + 1;
        loop {
            let &(p, _) = self
                .stack
                .last()
                .expect("the walk's stack holds the end point");
            if p == target {
                break;
            }
            let m = self.split(self.pos, p);
            let mut wm = self.take();
            let wp = &self.stack.last().unwrap().1;
            self.bridge_into(self.pos, m, p, &self.w, wp, &mut wm);
            self.stack.push((m, wm));
        }
        let (_, next) = self.stack.pop().unwrap();
        crate::solver::ensure(dw, (self.rows, self.d));
        Zip::from(&mut *dw)
            .and(&next)
            .and(&self.w)
            .par_for_each(|o, &b, &a| *o = b - a);
        let old = std::mem::replace(&mut self.w, next);
        self.spare.push(old);
        self.pos = target;
        Ok(())
    }

    /// W(t_j) for every row, by descent from the root (independent of the walk's position).
    pub fn value(&self, j: usize) -> Array2<f64> {
        let n = self.times.len() - 1;
        let (mut a, mut c) = (0, n);
        let mut wa = Array2::zeros((self.rows, self.d));
        let mut wc = Array2::zeros((self.rows, self.d));
        self.fill_normals(n, &mut wc);
        wc.mapv_inplace(|v| v * self.s(n).sqrt());
        loop {
            if j == a {
                return wa;
            }
            if j == c {
                return wc;
            }
            let m = self.split(a, c);
            let mut wm = Array2::zeros((self.rows, self.d));
            self.bridge_into(a, m, c, &wa, &wc, &mut wm);
            if j < m {
                (c, wc) = (m, wm);
            } else {
                (a, wa) = (m, wm);
            }
        }
    }
}
