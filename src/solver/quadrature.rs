//! Quadrature for the Adams-type coefficients: 16-point Gauss-Legendre (fixed panels or adaptive
//! bisection) and the Lagrange basis polynomials.

/// Gauss-Legendre nodes and weights on [-1, 1], 16 points.
const GL16: [(f64, f64); 8] = [
    (0.09501250983763744, 0.18945061045506864),
    (0.2816035507792589, 0.18260341504492364),
    (0.45801677765722737, 0.16915651939500265),
    (0.6178762444026438, 0.1495959888165767),
    (0.755404408355003, 0.12462897125553407),
    (0.8656312023878318, 0.0951585116824926),
    (0.9445750230732326, 0.062253523938647456),
    (0.9894009349916499, 0.027152459411754176),
];

/// int_a^b f by adaptive bisection of 16-point Gauss-Legendre: a panel is accepted when it
/// agrees with the sum of its halves to `tol` (absolute) or to rounding, at most 12 levels deep.
pub fn adaptive(a: f64, b: f64, tol: f64, f: &impl Fn(f64) -> f64) -> f64 {
    fn go(a: f64, b: f64, whole: f64, tol: f64, depth: u32, f: &impl Fn(f64) -> f64) -> f64 {
        let m = 0.5 * (a + b);
        let (l, r) = (gauss_legendre(a, m, 1, f), gauss_legendre(m, b, 1, f));
        let noise = 64.0 * f64::EPSILON * (l.abs() + r.abs());
        if (l + r - whole).abs() <= tol.max(noise) || depth == 12 {
            l + r
        } else {
            go(a, m, l, 0.5 * tol, depth + 1, f) + go(m, b, r, 0.5 * tol, depth + 1, f)
        }
    }
    go(a, b, gauss_legendre(a, b, 1, f), tol, 0, f)
}

/// int_a^b f by `panels` x 16-point Gauss-Legendre.
pub fn gauss_legendre(a: f64, b: f64, panels: usize, f: impl Fn(f64) -> f64) -> f64 {
    let w = (b - a) / panels as f64;
    (0..panels)
        .map(|p| {
            let mid = a + (p as f64 + 0.5) * w;
            GL16.iter()
                .map(|&(x, wt)| wt * (f(mid - 0.5 * w * x) + f(mid + 0.5 * w * x)))
                .sum::<f64>()
                * 0.5
                * w
        })
        .sum()
}

/// The 16 Gauss-Legendre (node, weight) pairs on [-1, 1], nodes increasing.
pub fn gauss_legendre_nodes() -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = GL16.iter().rev().map(|&(x, w)| (-x, w)).collect();
    v.extend(GL16.iter().cloned());
    v
}

/// The Lagrange basis polynomial l_j over `nodes` at u.
pub fn lagrange(nodes: &[f64], j: usize, u: f64) -> f64 {
    nodes
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != j)
        .map(|(_, &nk)| (u - nk) / (nodes[j] - nk))
        .product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_polynomials_and_adaptive_on_peaks() {
        // int_0^2 u^31 = 2^32/32 with one panel (16 points are exact to degree 31).
        let exact = 2f64.powi(32) / 32.0;
        assert!((gauss_legendre(0.0, 2.0, 1, |u| u.powi(31)) - exact).abs() < 1e-13 * exact);
        // A peak: int_0^1 1/(1 - 0.99 u)^2 = 1/0.01 = 100.
        let v = adaptive(0.0, 1.0, 1e-12, &|u: f64| 1.0 / (1.0 - 0.99 * u).powi(2));
        assert!((v - 100.0).abs() < 1e-10, "{v}");
        // Lagrange basis: l_j(node_k) = delta_jk and sum_j l_j = 1.
        let nodes = [0.3, 0.1, -0.2];
        for j in 0..3 {
            for (k, &n) in nodes.iter().enumerate() {
                assert_eq!(lagrange(&nodes, j, n), if j == k { 1.0 } else { 0.0 });
            }
        }
        let s: f64 = (0..3).map(|j| lagrange(&nodes, j, 0.77)).sum();
        assert!((s - 1.0).abs() < 1e-15);
    }
}
