//! Distances between a set of samples and a law known exactly (a Gaussian mixture) or through
//! its own samples.
//!
//! - `nll`: the average -ln p(x_i) under the exact density, i.e. the cross-entropy H(q, p)
//!   estimated on q's samples; it exceeds the entropy H(p) by KL(q | p) (a Monte Carlo estimate
//!   of H(p) is `entropy`).
//! - `entropy_knn`: the Kozachenko–Leonenko estimate of a sample's own entropy H(q); with `nll`
//!   it estimates KL(q | p) = H(q, p) - H(q).
//! - `sliced_w2`: sqrt of the mean over random unit directions theta of the 1-D squared W2 between
//!   the projections (sorted matching; equal sample sizes).
//! - `mmd2`: the unbiased U-statistic of the squared maximum mean discrepancy with the RBF kernel
//!   k(x, y) = exp(-|x - y|^2 / (2 l^2)); `median_bandwidth` is the median pairwise distance of
//!   the pooled samples (the median heuristic).
//! - `empirical_w2`: the exact W2 between two equal-size empirical measures, by optimal
//!   assignment of the squared Euclidean costs (`assignment`).
//!
//! Sums run in a fixed order (per-row partial sums collected, then added in sequence), so
//! results are bit-identical at any thread count.

use super::assignment::assign;
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::rng::standard_normal;
use crate::schedule::NoiseLevel;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Largest sample size `empirical_w2` accepts (an O(N^3) assignment).
pub const MAX_ASSIGNMENT: usize = 2000;

/// A Monte Carlo estimate and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub se: f64,
}

/// The mean of `v` and its standard error (sample standard deviation over sqrt(n)).
pub fn mean_se(v: &[f64]) -> Estimate {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Estimate {
        value: mean,
        se: (var / n).sqrt(),
    }
}

fn same_shape(x: &ArrayView2<f64>, y: &ArrayView2<f64>, what: &str) -> Result<()> {
    if x.dim() != y.dim() || x.nrows() < 2 {
        return Err(Error::Dimension(format!(
            "{what} needs two sample sets of equal shape with at least 2 rows, got {:?} and {:?}",
            x.dim(),
            y.dim()
        )));
    }
    Ok(())
}

/// -1/N sum_i ln p_t(x_i) under the mixture's exact marginal at `at`.
pub fn nll(mixture: &GaussianMixture, x: ArrayView2<f64>, at: &NoiseLevel) -> Result<Estimate> {
    let lp = mixture.log_density(x, at)?;
    let v: Vec<f64> = lp.iter().map(|l| -l).collect();
    Ok(mean_se(&v))
}

/// H(p_t) estimated on `n` seeded samples of p_t.
pub fn entropy(
    mixture: &GaussianMixture,
    at: &NoiseLevel,
    n: usize,
    seed: u64,
) -> Result<Estimate> {
    let x = mixture.sample(n, at.alpha, at.sigma, seed);
    nll(mixture, x.view(), at)
}

/// Sliced W2 over `n_proj` seeded random directions.
pub fn sliced_w2(x: ArrayView2<f64>, y: ArrayView2<f64>, n_proj: usize, seed: u64) -> Result<f64> {
    same_shape(&x, &y, "sliced W2")?;
    let mut theta = standard_normal(n_proj, x.ncols(), seed, 0x5157);
    for mut row in theta.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
    let (px, py) = (x.dot(&theta.t()), y.dot(&theta.t()));
    let per: Vec<f64> = (0..n_proj)
        .into_par_iter()
        .map(|k| {
            let mut a = px.column(k).to_vec();
            let mut b = py.column(k).to_vec();
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            a.iter()
                .zip(&b)
                .map(|(u, v)| (u - v) * (u - v))
                .sum::<f64>()
                / a.len() as f64
        })
        .collect();
    Ok((per.iter().sum::<f64>() / n_proj as f64).sqrt())
}

fn sq_dist(a: ndarray::ArrayView1<f64>, b: ndarray::ArrayView1<f64>) -> f64 {
    a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum()
}

/// The median pairwise distance of the pooled samples.
pub fn median_bandwidth(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    if x.ncols() != y.ncols() {
        return Err(Error::Dimension("median bandwidth: widths differ".into()));
    }
    let z = ndarray::concatenate(Axis(0), &[x, y]).expect("same width");
    let n = z.nrows();
    let mut d: Vec<f64> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let z = &z;
            (i + 1..n).map(move |j| sq_dist(z.row(i), z.row(j)))
        })
        .collect();
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
    Ok(m.sqrt())
}

/// Unbiased MMD^2 with the RBF kernel of bandwidth `l`.
pub fn mmd2(x: ArrayView2<f64>, y: ArrayView2<f64>, l: f64) -> Result<f64> {
    if x.ncols() != y.ncols() || x.nrows() < 2 || y.nrows() < 2 {
        return Err(Error::Dimension(format!(
            "MMD needs two sample sets of equal width with at least 2 rows, got {:?} and {:?}",
            x.dim(),
            y.dim()
        )));
    }
    let g = -0.5 / (l * l);
    let within = |a: &ArrayView2<f64>| -> f64 {
        let n = a.nrows();
        let rows: Vec<f64> = (0..n)
            .into_par_iter()
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i)
                    .map(|j| (g * sq_dist(a.row(i), a.row(j))).exp())
                    .sum()
            })
            .collect();
        rows.iter().sum::<f64>() / (n * (n - 1)) as f64
    };
    let rows: Vec<f64> = (0..x.nrows())
        .into_par_iter()
        .map(|i| {
            y.rows()
                .into_iter()
                .map(|r| (g * sq_dist(x.row(i), r)).exp())
                .sum()
        })
        .collect();
    let cross = rows.iter().sum::<f64>() / (x.nrows() * y.nrows()) as f64;
    Ok(within(&x) + within(&y) - 2.0 * cross)
}

/// The squared-Euclidean cost matrix C[i, j] = |x_i - y_j|^2.
pub fn cost_matrix(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Array2<f64> {
    let mut c = Array2::zeros((x.nrows(), y.nrows()));
    c.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut row)| {
            for (j, o) in row.iter_mut().enumerate() {
                *o = sq_dist(x.row(i), y.row(j));
            }
        });
    c
}

/// The mean cost (1/N) min_pi sum_i |x_i - y_pi(i)|^2 = W2^2 between the empirical measures.
pub fn assignment_cost(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    same_shape(&x, &y, "empirical W2")?;
    if x.nrows() > MAX_ASSIGNMENT {
        return Err(Error::Domain(format!(
            "empirical W2 by assignment is limited to N <= {MAX_ASSIGNMENT} samples, got {}",
            x.nrows()
        )));
    }
    let (_, total) = assign(&cost_matrix(x, y))?;
    Ok(total / x.nrows() as f64)
}

/// The exact W2 between two equal-size empirical measures.
pub fn empirical_w2(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<f64> {
    Ok(assignment_cost(x, y)?.max(0.0).sqrt())
}

/// The Kozachenko–Leonenko k-nearest-neighbour estimate of the differential entropy of the law
/// of the rows of `x` (Kozachenko & Leonenko 1987; Kraskov et al. 2004, eq. 20):
/// H = psi(N) - psi(k) + ln V_d + (d/N) sum_i ln rho_i, rho_i the Euclidean distance from row i
/// to its k-th nearest other row, V_d = pi^{d/2} / Gamma(d/2 + 1). Exact O(N^2 d) search; each
/// row's distances are its own, so the sum is the same at any thread count.
pub fn entropy_knn(x: ArrayView2<f64>, k: usize) -> Result<f64> {
    use statrs::function::gamma::{digamma, ln_gamma};
    let (n, d) = x.dim();
    if k == 0 || n <= k || x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Domain(format!(
            "entropy: need finite samples and more than k = {k} of them, got {n}"
        )));
    }
    let log_rho: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = x.row(i);
            let mut best = vec![f64::INFINITY; k];
            for (j, xj) in x.rows().into_iter().enumerate() {
                if j == i {
                    continue;
                }
                let r2: f64 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
                if r2 < best[k - 1] {
                    let at = best.partition_point(|&b| b <= r2);
                    best.insert(at, r2);
                    best.pop();
                }
            }
            0.5 * best[k - 1].max(f64::MIN_POSITIVE).ln()
        })
        .collect();
    let half_d = d as f64 / 2.0;
    let ln_vd = half_d * std::f64::consts::PI.ln() - ln_gamma(half_d + 1.0);
    let nf = n as f64;
    Ok(digamma(nf) - digamma(k as f64) + ln_vd + d as f64 / nf * log_rho.iter().sum::<f64>())
}
