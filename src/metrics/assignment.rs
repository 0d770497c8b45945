//! The linear assignment problem: a permutation pi minimizing sum_i C[i, pi(i)] for a square
//! cost matrix, by shortest augmenting paths with dual potentials (the Hungarian method in the
//! O(n^3) form of Jonker & Volgenant, 1987: one Dijkstra search over reduced costs
//! C[i, j] - u_i - v_j per added row). Exact for real costs; ties are broken by the lowest index,
//! so the result is deterministic.

use crate::error::{Error, Result};
use ndarray::Array2;

/// The optimal assignment (row i -> column `perm[i]`) and its total cost.
pub fn assign(cost: &Array2<f64>) -> Result<(Vec<usize>, f64)> {
    let n = cost.nrows();
    if cost.ncols() != n {
        return Err(Error::Dimension(format!(
            "assignment needs a square cost matrix, got {:?}",
            cost.dim()
        )));
    }
    if let Some(v) = cost.iter().find(|v| !v.is_finite()) {
        return Err(Error::Domain(format!("assignment: a cost is {v}")));
    }
    // Columns 1..=n; column 0 is the virtual start of each search. owner[j] = row of column j.
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let (mut owner, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    let (mut minv, mut used) = (vec![0.0; n + 1], vec![false; n + 1]);
    for row in 1..=n {
        owner[0] = row;
        let mut j0 = 0;
        minv.fill(f64::INFINITY);
        used.fill(false);
        loop {
            used[j0] = true;
            let i0 = owner[j0];
            let c = cost.row(i0 - 1);
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=n {
                if !used[j] {
                    let reduced = c[j - 1] - u[i0] - v[j];
                    if reduced < minv[j] {
                        minv[j] = reduced;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[owner[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if owner[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
        }
    }
    let mut perm = vec![0; n];
    for j in 1..=n {
        perm[owner[j] - 1] = j - 1;
    }
    let total = perm.iter().enumerate().map(|(i, &j)| cost[(i, j)]).sum();
    Ok((perm, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::RowRng;

    fn brute_force(cost: &Array2<f64>) -> f64 {
        fn go(cost: &Array2<f64>, row: usize, used: &mut Vec<bool>, acc: f64, best: &mut f64) {
            let n = cost.nrows();
            if row == n {
                *best = best.min(acc);
                return;
            }
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    go(cost, row + 1, used, acc + cost[(row, j)], best);
                    used[j] = false;
                }
            }
        }
        let mut best = f64::INFINITY;
        go(cost, 0, &mut vec![false; cost.nrows()], 0.0, &mut best);
        best
    }

    #[test]
    fn matches_brute_force_on_small_problems() {
        for n in 1..=7 {
            for trial in 0..30 {
                let mut rng = RowRng::new(n as u64, 9, trial);
                let cost = Array2::from_shape_fn((n, n), |_| rng.normal());
                let (perm, total) = assign(&cost).unwrap();
                let mut seen = perm.clone();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
                assert!(
                    (total - brute_force(&cost)).abs() < 1e-12,
                    "n {n} trial {trial}"
                );
            }
        }
        assert!(assign(&Array2::from_elem((2, 3), 1.0)).is_err());
        assert!(assign(&Array2::from_elem((2, 2), f64::NAN)).is_err());
    }
}
