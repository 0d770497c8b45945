//! Measurements of a flow map against the exact one, on a grid of levels t_0 > ... > t_N with
//! points x^(i) ~ p_{t_i} on one exact trajectory per row (x^(j) = Psi_{t_i -> t_j}(x^(i))):
//!
//! - `map_error`: E |Psi^_{s->t}(x_s) - Psi_{s->t}(x_s)| (the mean Euclidean norm, and the RMS
//!   per coordinate) for pairs (i, j), i < j; the pairs with t_j = t_N form the boundary error.
//! - `semigroup_defect`: E |Psi^_{u->t}(Psi^_{s->u}(x_s)) - Psi^_{s->t}(x_s)| for triples
//!   i < m < j, the map against its own composition (zero for the exact map).
//! - `quality`: the samples of k-step sampling against p_0: the NLL under the exact density, the
//!   kNN entropy H(q), the gap H(q) - H_kNN(exact samples) (the estimator's bias cancels) and
//!   the estimate NLL - H_kNN(q) of KL(q | p_0),
//!   MMD^2 (RBF at the median bandwidth) and sliced W2 against exact samples, and on a Gaussian
//!   problem the exact W2 between p_0 and the Gaussian fitted to the samples (whose sampling
//!   error is the same number for exact samples of the same size, [`gaussian_fit_w2`]).

use super::distribution::{self, Estimate};
use super::law::GaussianLaw;
use crate::error::Result;
use crate::flow_map::FlowMap;
use crate::gmm::GaussianMixture;
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// The error of one (s, t) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairError {
    pub i: usize,
    pub j: usize,
    pub s: f64,
    pub t: f64,
    /// E |Psi^ - Psi|.
    pub mean_norm: f64,
    /// sqrt(E |Psi^ - Psi|^2 / d).
    pub rms: f64,
}

fn norms(a: &Array2<f64>, b: ArrayView2<f64>) -> (f64, f64) {
    let d = a.ncols() as f64;
    let sq: Vec<f64> = (a - &b)
        .outer_iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>())
        .collect();
    let n = sq.len() as f64;
    (
        sq.iter().map(|v| v.sqrt()).sum::<f64>() / n,
        (sq.iter().sum::<f64>() / (n * d)).sqrt(),
    )
}

/// The error of `map` on each pair; `states[i]` are the exact points at `levels[i]`.
pub fn map_error(
    map: &dyn FlowMap,
    levels: &[f64],
    states: &[Array2<f64>],
    pairs: &[(usize, usize)],
) -> Result<Vec<PairError>> {
    pairs
        .iter()
        .map(|&(i, j)| {
            let mut out = Array2::zeros(states[i].dim());
            map.apply(states[i].view(), levels[i], levels[j], out.view_mut())?;
            let (mean_norm, rms) = norms(&out, states[j].view());
            Ok(PairError {
                i,
                j,
                s: levels[i],
                t: levels[j],
                mean_norm,
                rms,
            })
        })
        .collect()
}

/// Every pair i < j of n + 1 levels (the heat map), or only those ending at the last level.
pub fn pairs(n: usize, boundary_only: bool) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|i| (i + 1..=n).map(move |j| (i, j)))
        .filter(|&(_, j)| !boundary_only || j == n)
        .collect()
}

/// The semigroup defect of one triple.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Defect {
    pub i: usize,
    pub m: usize,
    pub j: usize,
    /// E |Psi^_{u->t} o Psi^_{s->u} - Psi^_{s->t}|.
    pub mean_norm: f64,
}

pub fn semigroup_defect(
    map: &dyn FlowMap,
    levels: &[f64],
    states: &[Array2<f64>],
    triples: &[(usize, usize, usize)],
) -> Result<Vec<Defect>> {
    triples
        .iter()
        .map(|&(i, m, j)| {
            let x = &states[i];
            let (mut direct, mut half, mut two) = (
                Array2::zeros(x.dim()),
                Array2::zeros(x.dim()),
                Array2::zeros(x.dim()),
            );
            map.apply(x.view(), levels[i], levels[j], direct.view_mut())?;
            map.apply(x.view(), levels[i], levels[m], half.view_mut())?;
            map.apply(half.view(), levels[m], levels[j], two.view_mut())?;
            Ok(Defect {
                i,
                m,
                j,
                mean_norm: norms(&two, direct.view()).0,
            })
        })
        .collect()
}

/// Every triple i < m < j of n + 1 levels.
pub fn triples(n: usize) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for i in 0..n {
        for m in i + 1..n {
            for j in m + 1..=n {
                v.push((i, m, j));
            }
        }
    }
    v
}

/// The quality of samples of p_0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub nll: Estimate,
    pub entropy_knn: f64,
    pub entropy_gap: f64,
    /// NLL - H_kNN(q): the estimate of KL(q | p_0).
    pub kl: f64,
    pub mmd2: f64,
    pub sliced_w2: f64,
    /// The exact W2 from the fitted Gaussian to p_0 (a one-component problem only).
    pub gaussian_w2: Option<f64>,
}

/// Neighbours of the kNN entropy estimate.
pub const KNN: usize = 5;
/// Directions of the sliced W2.
pub const PROJECTIONS: usize = 128;

/// The quality of `x` against the mixture's p_0 and its exact samples `exact` (same shape), whose
/// kNN entropy is `exact_entropy` (computed once per sample, [`distribution::entropy_knn`] with
/// [`KNN`]); `bandwidth` of the MMD (the median heuristic of a reference pair, fixed per problem).
pub fn quality(
    mixture: &GaussianMixture,
    x: ArrayView2<f64>,
    exact: ArrayView2<f64>,
    exact_entropy: f64,
    bandwidth: f64,
    seed: u64,
) -> Result<Quality> {
    let at0 = crate::schedule::NoiseLevel::of(1.0, 0.0);
    let entropy_knn = distribution::entropy_knn(x, KNN)?;
    let nll = distribution::nll(mixture, x, &at0)?;
    Ok(Quality {
        kl: nll.value - entropy_knn,
        nll,
        entropy_knn,
        entropy_gap: entropy_knn - exact_entropy,
        mmd2: distribution::mmd2(x, exact, bandwidth)?,
        sliced_w2: distribution::sliced_w2(x, exact, PROJECTIONS, seed)?,
        gaussian_w2: match mixture.n_components() {
            1 => Some(gaussian_fit_w2(mixture, x)?),
            _ => None,
        },
    })
}

/// W2(N(mean(x), cov(x)), p_0) for a single-Gaussian p_0.
pub fn gaussian_fit_w2(mixture: &GaussianMixture, x: ArrayView2<f64>) -> Result<f64> {
    let n = x.nrows() as f64;
    let mean = x.mean_axis(Axis(0)).expect("rows");
    let centered = &x - &mean;
    let cov = centered.t().dot(&centered) / (n - 1.0);
    let fitted = GaussianLaw::new(mean, &cov, "the fitted Gaussian")?;
    fitted.w2(&GaussianLaw::marginal(mixture.component(0), 1.0, 0.0))
}
