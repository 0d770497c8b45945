//! Exact Gaussian laws, pushed through affine maps, and the distances between them.
//!
//! On Gaussian data p_0 = N(mu, Sigma) the score is affine in x, so every deterministic solver
//! is an affine map F(x) = A x + b from x_T to its output. A law N(m, P P^T) pushed through F is
//! N(F(m), (A P)(A P)^T), and A P e_i = F(m + P e_i) - F(m): d + 1 solver runs (the probe
//! vectors m and m + P e_i) give the output law exactly, with no Monte Carlo noise.
//!
//! A law is kept as a mean and a square factor P (Sigma = P P^T) so that distances between two
//! nearly equal laws are computed without cancellation:
//! - W2^2 = |m1 - m2|^2 + min_Q |P1 - P2 Q|_F^2 over orthogonal Q (the Bures metric): Q = U V^T
//!   from the SVD P2^T P1 = U S V^T (orthogonal Procrustes), and the difference is formed
//!   explicitly, so W2 is accurate to rounding relative to itself, not to tr Sigma.
//! - KL(N1 | N2) = 1/2 sum_i (s_i^2 - 1 - ln s_i^2) + 1/2 |P2^{-1}(m1 - m2)|^2, with s_i the
//!   singular values of B = P2^{-1} P1 (tr(Sigma2^{-1} Sigma1) = |B|_F^2 and
//!   ln det Sigma1 - ln det Sigma2 = sum ln s_i^2); u - ln(1 + u) is summed by its series near
//!   u = 0.

use crate::error::{Error, Result};
use crate::gmm::Component;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

/// N(mean, factor factor^T).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianLaw {
    pub mean: Array1<f64>,
    pub factor: Array2<f64>,
}

fn to_faer(a: &Array2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)])
}

/// u - ln(1 + u), accurate for small u.
fn u_minus_log1p(u: f64) -> f64 {
    if u.abs() < 1e-3 {
        let mut term = u * u;
        let mut sum = 0.0;
        for k in 2..12 {
            sum += term / k as f64 * if k % 2 == 0 { 1.0 } else { -1.0 };
            term *= u;
        }
        sum
    } else {
        u - u.ln_1p()
    }
}

impl GaussianLaw {
    /// N(mean, cov); the factor is U diag(sqrt(l)) from the eigen-decomposition. An error names
    /// `what` when cov is not symmetric positive semi-definite or the shapes disagree.
    pub fn new(mean: Array1<f64>, cov: &Array2<f64>, what: &str) -> Result<Self> {
        let d = mean.len();
        if cov.dim() != (d, d) {
            return Err(Error::Dimension(format!(
                "{what}: mean has {d} entries but covariance is {:?}",
                cov.dim()
            )));
        }
        let eig = to_faer(cov)
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Domain(format!("{what}: eigen-decomposition failed: {e:?}")))?;
        let (u, l) = (eig.U(), eig.S());
        let scale = (0..d).map(|i| l[i].abs()).fold(0.0, f64::max);
        if (0..d).any(|i| l[i] < -1e-12 * scale) {
            return Err(Error::Domain(format!(
                "{what}: covariance is not positive semi-definite"
            )));
        }
        let factor = Array2::from_shape_fn((d, d), |(i, j)| u[(i, j)] * l[j].max(0.0).sqrt());
        Ok(GaussianLaw { mean, factor })
    }

    /// N(0, sigma^2 I).
    pub fn isotropic(d: usize, sigma: f64) -> Self {
        GaussianLaw {
            mean: Array1::zeros(d),
            factor: Array2::eye(d) * sigma,
        }
    }

    /// The exact marginal p_t = N(alpha mu, U diag(alpha^2 l + sigma^2) U^T) of one Gaussian
    /// component.
    pub fn marginal(c: &Component, alpha: f64, sigma: f64) -> Self {
        let scale = c.l.mapv(|l| (alpha * alpha * l + sigma * sigma).sqrt());
        GaussianLaw {
            mean: &c.mean * alpha,
            factor: &c.u * &scale,
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn cov(&self) -> Array2<f64> {
        self.factor.dot(&self.factor.t())
    }

    /// The d + 1 probe points (rows): m, then m + P e_i.
    pub fn probes(&self) -> Array2<f64> {
        let d = self.dim();
        let mut x = Array2::zeros((d + 1, d));
        for mut row in x.rows_mut() {
            row.assign(&self.mean);
        }
        x.slice_mut(s![1.., ..]).scaled_add(1.0, &self.factor.t());
        x
    }

    /// The law of F(x), x ~ self, for an affine map F given its values at [`Self::probes`]
    /// (row 0 = F(m), row i = F(m + P e_i)). The factor columns stay matched to this law's,
    /// so [`Self::coupling_cost`] between the two is the cost of the coupling (x, F(x)).
    pub fn pushed(&self, images: ArrayView2<f64>) -> Result<Self> {
        let d = self.dim();
        if images.dim() != (d + 1, d) {
            return Err(Error::Dimension(format!(
                "expected {} probe images of dimension {d}, got {:?}",
                d + 1,
                images.dim()
            )));
        }
        let mean = images.row(0).to_owned();
        let factor = (&images.slice(s![1.., ..]) - &mean.view().insert_axis(Axis(0)))
            .t()
            .to_owned();
        Ok(GaussianLaw { mean, factor })
    }

    /// E|F(x) - x|^2 for x ~ self and `image` = [`Self::pushed`] by F:
    /// |F(m) - m|^2 + |A P - P|_F^2.
    pub fn coupling_cost(&self, image: &GaussianLaw) -> f64 {
        let dm = &image.mean - &self.mean;
        let dp = &image.factor - &self.factor;
        dm.dot(&dm) + dp.iter().map(|v| v * v).sum::<f64>()
    }

    /// The 2-Wasserstein distance to `other` (Bures; see the module doc).
    pub fn w2(&self, other: &GaussianLaw) -> Result<f64> {
        self.check(other)?;
        let (p1, p2) = (&self.factor, &other.factor);
        let svd = to_faer(&p2.t().dot(p1))
            .svd()
            .map_err(|e| Error::Domain(format!("W2: SVD failed: {e:?}")))?;
        let (u, v) = (svd.U(), svd.V());
        let d = self.dim();
        let q = Array2::from_shape_fn((d, d), |(i, j)| {
            (0..d).map(|k| u[(i, k)] * v[(j, k)]).sum::<f64>()
        });
        let diff = p1 - &p2.dot(&q);
        let dm = &self.mean - &other.mean;
        Ok((dm.dot(&dm) + diff.iter().map(|v| v * v).sum::<f64>()).sqrt())
    }

    /// KL(self | other); an error when `other` is singular.
    pub fn kl(&self, other: &GaussianLaw) -> Result<f64> {
        self.check(other)?;
        let lu = to_faer(&other.factor).partial_piv_lu();
        let d = self.dim();
        let mut rhs = Mat::<f64>::zeros(d, d + 1);
        for i in 0..d {
            for j in 0..d {
                rhs[(i, j)] = self.factor[(i, j)];
            }
            rhs[(i, d)] = self.mean[i] - other.mean[i];
        }
        let sol = lu.solve(&rhs);
        if (0..d).any(|i| !sol[(i, d)].is_finite()) {
            return Err(Error::Domain("KL: the second law is singular".into()));
        }
        let b = Mat::from_fn(d, d, |i, j| sol[(i, j)]);
        let s = b
            .singular_values()
            .map_err(|e| Error::Domain(format!("KL: SVD failed: {e:?}")))?;
        let shift: f64 = (0..d).map(|i| sol[(i, d)] * sol[(i, d)]).sum();
        if s.contains(&0.0) {
            return Ok(f64::INFINITY);
        }
        let trace: f64 = s.iter().map(|&v| u_minus_log1p(v * v - 1.0)).sum();
        Ok(0.5 * (trace + shift))
    }

    /// The differential entropy 1/2 d ln(2 pi e) + ln |det P|.
    pub fn entropy(&self) -> Result<f64> {
        let s = to_faer(&self.factor)
            .singular_values()
            .map_err(|e| Error::Domain(format!("entropy: SVD failed: {e:?}")))?;
        let d = self.dim() as f64;
        Ok(
            0.5 * d * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln()
                + s.iter().map(|v| v.ln()).sum::<f64>(),
        )
    }

    fn check(&self, other: &GaussianLaw) -> Result<()> {
        if self.dim() != other.dim() {
            return Err(Error::Dimension(format!(
                "laws of dimension {} and {}",
                self.dim(),
                other.dim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn w2_and_kl_closed_forms() {
        let a = GaussianLaw::new(array![1.0, 0.0], &array![[2.0, 0.0], [0.0, 0.5]], "a").unwrap();
        let b = GaussianLaw::new(array![0.0, 0.0], &array![[1.0, 0.0], [0.0, 2.0]], "b").unwrap();
        // Diagonal covariances: W2^2 = |dm|^2 + sum (sqrt(s1) - sqrt(s2))^2.
        let w2 = (1.0 + (2f64.sqrt() - 1.0).powi(2) + (0.5f64.sqrt() - 2f64.sqrt()).powi(2)).sqrt();
        assert!((a.w2(&b).unwrap() - w2).abs() < 1e-14);
        // KL = 1/2 (tr(S2^-1 S1) + dm S2^-1 dm - d + ln det S2/det S1).
        let kl = 0.5 * (2.0 + 0.25 + 1.0 - 2.0 + (2.0f64 / 1.0).ln());
        assert!((a.kl(&b).unwrap() - kl).abs() < 1e-14);
        assert_eq!(a.kl(&a).unwrap(), 0.0);
        let h = 0.5 * 2.0 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln();
        assert!((a.entropy().unwrap() - h).abs() < 1e-14);
    }

    #[test]
    fn w2_of_a_tiny_perturbation_is_accurate() {
        let cov = array![[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]];
        let a = GaussianLaw::new(array![0.0, 0.0, 0.0], &cov, "a").unwrap();
        let mut b = a.clone();
        b.factor *= 1.0 + 1e-9;
        // W2 between N(0, S) and N(0, c^2 S) is |c - 1| sqrt(tr S).
        let exact = 1e-9 * 3.5f64.sqrt();
        assert!((a.w2(&b).unwrap() / exact - 1.0).abs() < 1e-6);
        // KL(N(0, S) | N(0, c^2 S)) = d/2 (1/c^2 - 1 + 2 ln c) ~ d (c - 1)^2.
        let kl = a.kl(&b).unwrap();
        assert!((kl / (3.0 * 1e-18) - 1.0).abs() < 1e-5, "{kl}");
    }
}
