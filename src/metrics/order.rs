//! Per-sample error against a reference and the empirical convergence order.
//!
//! The order is the least-squares slope of ln(error) against ln(NFE) (negated) or against
//! ln(h), fitted on an asymptotic range chosen automatically: points whose error is above the
//! reference's accuracy `floor`, starting from the three most refined ones and extending to
//! coarser points while the fit stays straight (the secant slope to the new point within 15% of
//! the slope fitted so far, and R^2 >= 0.99 with it). The fit reports the range, R^2 and a 95% Student-t interval
//! slope +- t_{0.975, n-2} SE(slope).

use crate::error::{Error, Result};
use ndarray::{ArrayView2, Zip};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Per-sample Euclidean errors |x_i - ref_i|: root mean square, median and maximum over
/// samples. On multimodal data a few samples near a boundary between modes can land in another
/// mode and dominate the RMS; the median shows the typical sample's discretization error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleError {
    pub rms: f64,
    pub median: f64,
    pub max: f64,
}

pub fn sample_error(x: ArrayView2<f64>, reference: ArrayView2<f64>) -> Result<SampleError> {
    if x.dim() != reference.dim() || x.nrows() == 0 {
        return Err(Error::Dimension(format!(
            "error of {:?} samples against a {:?} reference",
            x.dim(),
            reference.dim()
        )));
    }
    let mut sq = vec![0.0; x.nrows()];
    Zip::from(&mut sq)
        .and(x.rows())
        .and(reference.rows())
        .for_each(|s, a, b| *s = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum());
    let rms = (sq.iter().sum::<f64>() / sq.len() as f64).sqrt();
    let max = sq.iter().cloned().fold(0.0, f64::max).sqrt();
    let mut sorted = sq.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2].sqrt()
    } else {
        0.5 * (sorted[n / 2 - 1].sqrt() + sorted[n / 2].sqrt())
    };
    Ok(SampleError { rms, median, max })
}

/// The root-mean-square norm of the rows, the scale errors are relative to.
pub fn rms_norm(x: ArrayView2<f64>) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.nrows().max(1) as f64).sqrt()
}

/// A least-squares line y = intercept + slope x.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LineFit {
    pub slope: f64,
    pub intercept: f64,
    pub r2: f64,
    /// Half-width of the 95% Student-t interval of the slope (infinite for 2 points).
    pub ci95: f64,
    pub n: usize,
}

pub fn fit_line(x: &[f64], y: &[f64]) -> Option<LineFit> {
    let n = x.len();
    if n < 2 || y.len() != n {
        return None;
    }
    let nf = n as f64;
    let (mx, my) = (x.iter().sum::<f64>() / nf, y.iter().sum::<f64>() / nf);
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let syy: f64 = y.iter().map(|v| (v - my) * (v - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (b - intercept - slope * a).powi(2))
        .sum();
    let r2 = if syy > 0.0 { 1.0 - sse / syy } else { 1.0 };
    let ci95 = if n > 2 {
        let t = StudentsT::new(0.0, 1.0, (n - 2) as f64)
            .expect("dof > 0")
            .inverse_cdf(0.975);
        t * (sse / (nf - 2.0) / sxx).sqrt()
    } else {
        f64::INFINITY
    };
    Some(LineFit {
        slope,
        intercept,
        r2,
        ci95,
        n,
    })
}

/// An empirical order p (error ~ NFE^-p or ~ h^p) on the range [lo, hi] of the abscissa.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderFit {
    pub order: f64,
    pub ci95: f64,
    pub r2: f64,
    pub n: usize,
    pub lo: f64,
    pub hi: f64,
}

/// Fits the order on `(abscissa, error)` points. `refine_up` says whether a larger abscissa is
/// more refined (NFE: true, order = -slope; h: false, order = slope). Points at or below
/// `floor` are excluded. `None` when fewer than three points remain.
pub fn empirical_order(points: &[(f64, f64)], floor: f64, refine_up: bool) -> Option<OrderFit> {
    let mut raw: Vec<(f64, f64)> = points
        .iter()
        .filter(|(a, e)| a.is_finite() && *a > 0.0 && e.is_finite() && *e > floor)
        .cloned()
        .collect();
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !refine_up {
        raw.reverse();
    }
    let pts: Vec<(f64, f64)> = raw.iter().map(|&(a, e)| (a.ln(), e.ln())).collect();
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len();
    let fit = |from: usize| {
        let (x, y): (Vec<f64>, Vec<f64>) = pts[from..].iter().cloned().unzip();
        fit_line(&x, &y)
    };
    let mut from = n - 3;
    let mut best = fit(from)?;
    while from > 0 {
        let cand = fit(from - 1)?;
        let (a, b) = (pts[from - 1], pts[from]);
        let secant = (b.1 - a.1) / (b.0 - a.0);
        if cand.r2 < 0.99 || (secant - best.slope).abs() > 0.15 * best.slope.abs() {
            break;
        }
        from -= 1;
        best = cand;
    }
    let (lo, hi) = (raw[from].0, raw[n - 1].0);
    Some(OrderFit {
        order: if refine_up { -best.slope } else { best.slope },
        ci95: best.ci95,
        r2: best.r2,
        n: best.n,
        lo: lo.min(hi),
        hi: lo.max(hi),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_error_statistics() {
        let r = ndarray::Array2::<f64>::zeros((4, 2));
        let x = ndarray::array![[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [0.0, 0.0]];
        let e = sample_error(x.view(), r.view()).unwrap();
        assert_eq!((e.median, e.max), (1.5, 5.0));
        assert!((e.rms - (30.0f64 / 4.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn line_fit_matches_hand_computation() {
        // y = 1 + 2x + e with e = (+0.1, -0.1, -0.1, +0.1): slope 2, sse 0.04, sxx 5.
        let f = fit_line(&[0.0, 1.0, 2.0, 3.0], &[1.1, 2.9, 4.9, 7.1]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-14 && (f.intercept - 1.0).abs() < 1e-14);
        // t_{0.975, 2} = 4.302652729911275.
        let ci = 4.302652729911275 * (0.04f64 / 2.0 / 5.0).sqrt();
        assert!((f.ci95 - ci).abs() < 1e-10, "{}", f.ci95);
        assert!((f.r2 - (1.0 - 0.04 / 20.04)).abs() < 1e-14);
    }

    #[test]
    fn asymptotic_range_drops_the_preasymptotic_points_and_the_floor() {
        // error = 3 NFE^-2 for NFE >= 10; coarser points are off the line; a floor at 1e-9.
        let mut pts: Vec<(f64, f64)> = [10.0, 20.0, 40.0, 80.0, 160.0]
            .iter()
            .map(|&n: &f64| (n, 3.0 * n.powi(-2)))
            .collect();
        pts.push((5.0, 3.0));
        pts.push((1e6, 1e-12));
        let f = empirical_order(&pts, 1e-9, true).unwrap();
        assert!((f.order - 2.0).abs() < 1e-12 && f.n == 5);
        assert_eq!((f.lo, f.hi), (10.0, 160.0));
        let h: Vec<(f64, f64)> = pts.iter().map(|&(n, e)| (1.0 / n, e)).collect();
        let g = empirical_order(&h, 1e-9, false).unwrap();
        assert!((g.order - 2.0).abs() < 1e-12 && g.n == 5);
        assert!(empirical_order(&pts[..2], 0.0, true).is_none());
    }
}
