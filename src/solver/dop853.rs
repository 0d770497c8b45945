//! DOP853: the explicit Runge-Kutta pair of Dormand and Prince of order 8 with an embedded 5th-
//! and 3rd-order error estimate, "8(5,3)" (Hairer, Norsett & Wanner, Solving Ordinary
//! Differential Equations I, 2nd ed., Sec. II.10; the method of Hairer's `dop853.f` and of
//! `scipy.integrate.DOP853`). The tableau below is the published one (12 stages, FSAL: the
//! derivative at the accepted point starts the next step).
//!
//! Error norm, as in DOP853: with sc = atol + rtol max(|y_old|, |y_new|) and the RMS norms
//! e5 = ||h K E5 / sc||, e3 = ||h K E3 / sc|| over all entries, err = e5^2 / sqrt(e5^2 + 0.01 e3^2).
//! Step control as scipy's: accept when err < 1; new h = h min(10, 0.9 err^(-1/8)) after an
//! acceptance (at most h right after a rejection), h max(0.2, 0.9 err^(-1/8)) after a rejection.
//! The first step is chosen by Hairer's algorithm (Sec. II.4; scipy `select_initial_step`), one
//! extra evaluation. Evaluations: 2 + 12 per attempted step.

use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

const C: [f64; 12] = [
    0.0,
    0.05260015195876773,
    0.0789002279381516,
    0.1183503419072274,
    0.2816496580927726,
    0.3333333333333333,
    0.25,
    0.3076923076923077,
    0.6512820512820513,
    0.6,
    0.8571428571428571,
    1.0,
];
/// Row i holds a_{i,0..i}.
const A: [&[f64]; 12] = [
    &[],
    &[0.05260015195876773],
    &[0.0197250569845379, 0.0591751709536137],
    &[0.02958758547680685, 0.0, 0.08876275643042054],
    &[
        0.2413651341592667,
        0.0,
        -0.8845494793282861,
        0.924834003261792,
    ],
    &[
        0.037037037037037035,
        0.0,
        0.0,
        0.17082860872947386,
        0.12546768756682242,
    ],
    &[
        0.037109375,
        0.0,
        0.0,
        0.17025221101954405,
        0.06021653898045596,
        -0.017578125,
    ],
    &[
        0.03709200011850479,
        0.0,
        0.0,
        0.17038392571223998,
        0.10726203044637328,
        -0.015319437748624402,
        0.008273789163814023,
    ],
    &[
        0.6241109587160757,
        0.0,
        0.0,
        -3.3608926294469414,
        -0.868219346841726,
        27.59209969944671,
        20.154067550477894,
        -43.48988418106996,
    ],
    &[
        0.47766253643826434,
        0.0,
        0.0,
        -2.4881146199716677,
        -0.590290826836843,
        21.230051448181193,
        15.279233632882423,
        -33.28821096898486,
        -0.020331201708508627,
    ],
    &[
        -0.9371424300859873,
        0.0,
        0.0,
        5.186372428844064,
        1.0914373489967295,
        -8.149787010746927,
        -18.52006565999696,
        22.739487099350505,
        2.4936055526796523,
        -3.0467644718982196,
    ],
    &[
        2.273310147516538,
        0.0,
        0.0,
        -10.53449546673725,
        -2.0008720582248625,
        -17.9589318631188,
        27.94888452941996,
        -2.8589982771350235,
        -8.87285693353063,
        12.360567175794303,
        0.6433927460157636,
    ],
];
const B: [f64; 12] = [
    0.054293734116568765,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    0.3111643669578199,
    -0.1521609496625161,
    0.20136540080403034,
    0.04471061572777259,
];
const E5: [f64; 12] = [
    0.01312004499419488,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.2251564463762044,
    -0.4957589496572502,
    1.6643771824549864,
    -0.35032884874997366,
    0.3341791187130175,
    0.08192320648511571,
    -0.022355307863886294,
];
/// The third-order embedded weights, as differences from B: E3 = B - bhat3 (bhat3 has three
/// non-zero entries, Hairer's `bhh1..3`).
const BHAT3: [(usize, f64); 3] = [
    (0, 0.2440944881889764),
    (8, 0.7338466882816118),
    (11, 0.022058823529411766),
];

fn e3() -> [f64; 12] {
    let mut e = B;
    for (i, b) in BHAT3 {
        e[i] -= b;
    }
    e
}

/// Statistics of one integration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub evaluations: usize,
    pub accepted: usize,
    pub rejected: usize,
}

const SAFETY: f64 = 0.9;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;

fn rms(v: &Array2<f64>) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

/// Integrates dy/ds = f(s, y) from s0 to s1 (either direction) for a batch state y, all rows
/// with one step size. Fails if f fails or returns a non-finite value, if the step underflows,
/// or after `max_steps` attempted steps.
pub fn integrate<F>(
    mut f: F,
    s0: f64,
    s1: f64,
    y0: ArrayView2<f64>,
    rtol: f64,
    atol: f64,
    max_steps: usize,
) -> Result<(Array2<f64>, Stats)>
where
    F: FnMut(f64, ArrayView2<f64>, ArrayViewMut2<f64>) -> Result<()>,
{
    let mut stats = Stats::default();
    let mut eval = |s: f64, y: &Array2<f64>, stats: &mut Stats| -> Result<Array2<f64>> {
        let mut dy = Array2::zeros(y.dim());
        f(s, y.view(), dy.view_mut())?;
        stats.evaluations += 1;
        if dy.iter().any(|v| !v.is_finite()) {
            return Err(Error::Domain(format!(
                "DOP853: non-finite derivative at s = {s}"
            )));
        }
        Ok(dy)
    };
    let mut y = y0.to_owned();
    if s1 == s0 {
        return Ok((y, stats));
    }
    let dir = (s1 - s0).signum();
    let length = (s1 - s0).abs();
    let mut k0 = eval(s0, &y, &mut stats)?;
    // Initial step (Hairer, Sec. II.4).
    let scale = y.mapv(|v| atol + rtol * v.abs());
    let (d0, d1) = (rms(&(&y / &scale)), rms(&(&k0 / &scale)));
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
    .min(length);
    let y1 = &y + &(&k0 * (h0 * dir));
    let k1 = eval(s0 + h0 * dir, &y1, &mut stats)?;
    let d2 = rms(&((&k1 - &k0) / &scale)) / h0;
    let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(1.0 / 8.0)
    };
    let mut h_abs = (100.0 * h0).min(h1).min(length);
    let mut s = s0;
    let mut k: Vec<Array2<f64>> = Vec::with_capacity(12);
    while s != s1 {
        let mut rejected = false;
        loop {
            if stats.accepted + stats.rejected >= max_steps {
                return Err(Error::Domain(format!(
                    "DOP853: more than {max_steps} steps from {s0} to {s1}"
                )));
            }
            let min_step = 10.0 * (s.next_up() - s).abs().max((s.next_down() - s).abs());
            if h_abs < min_step {
                return Err(Error::Domain(format!(
                    "DOP853: step size underflow at s = {s}"
                )));
            }
            let s_new = if (s + h_abs * dir - s1) * dir > 0.0 {
                s1
            } else {
                s + h_abs * dir
            };
            let h = s_new - s;
            k.clear();
            k.push(k0.clone());
            for i in 1..12 {
                let mut yi = y.clone();
                for (j, &a) in A[i].iter().enumerate() {
                    if a != 0.0 {
                        Zip::from(&mut yi)
                            .and(&k[j])
                            .for_each(|v, &kj| *v += h * a * kj);
                    }
                }
                k.push(eval(s + C[i] * h, &yi, &mut stats)?);
            }
            let mut y_new = y.clone();
            let e3w = e3();
            let (mut e5, mut e3) = (Array2::<f64>::zeros(y.dim()), Array2::<f64>::zeros(y.dim()));
            for i in 0..12 {
                Zip::from(&mut y_new)
                    .and(&mut e5)
                    .and(&mut e3)
                    .and(&k[i])
                    .for_each(|v, a, b, &ki| {
                        *v += h * B[i] * ki;
                        *a += E5[i] * ki;
                        *b += e3w[i] * ki;
                    });
            }
            let k_new = eval(s_new, &y_new, &mut stats)?;
            let (mut n5, mut n3) = (0.0, 0.0);
            Zip::from(&e5)
                .and(&e3)
                .and(&y)
                .and(&y_new)
                .for_each(|&a, &b, &yo, &yn| {
                    let sc = atol + rtol * yo.abs().max(yn.abs());
                    n5 += (a / sc).powi(2);
                    n3 += (b / sc).powi(2);
                });
            let err = if n5 == 0.0 && n3 == 0.0 {
                0.0
            } else {
                h.abs() * n5 / ((n5 + 0.01 * n3) * y.len() as f64).sqrt()
            };
            if err < 1.0 {
                let mut factor = if err == 0.0 {
                    MAX_FACTOR
                } else {
                    MAX_FACTOR.min(SAFETY * err.powf(-1.0 / 8.0))
                };
                if rejected {
                    factor = factor.min(1.0);
                }
                h_abs *= factor;
                stats.accepted += 1;
                s = s_new;
                y = y_new;
                k0 = k_new;
                break;
            }
            h_abs *= MIN_FACTOR.max(SAFETY * err.powf(-1.0 / 8.0));
            stats.rejected += 1;
            rejected = true;
        }
    }
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn tableau_conditions() {
        for i in 1..12 {
            let row: f64 = A[i].iter().sum();
            assert!((row - C[i]).abs() < 1e-14, "row {i}: {row} vs {}", C[i]);
        }
        // Quadrature conditions sum_i b_i c_i^(q-1) = 1/q, q = 1..8.
        for q in 1..=8 {
            let s: f64 = B.iter().zip(&C).map(|(b, c)| b * c.powi(q - 1)).sum();
            assert!((s - 1.0 / q as f64).abs() < 1e-14, "q = {q}: {s}");
        }
        // The error weights annihilate constants: sum E5 = sum E3 = 0.
        assert!(E5.iter().sum::<f64>().abs() < 1e-14);
        assert!(e3().iter().sum::<f64>().abs() < 1e-14);
    }

    #[test]
    fn exponential_decay_forwards_and_backwards() {
        let y0 = array![[1.0, -2.0], [0.5, 3.0], [1e-3, 7.0]];
        let f = |_: f64, y: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>| {
            dy.assign(&(-&y));
            Ok(())
        };
        let (y, st) = integrate(f, 0.0, 10.0, y0.view(), 1e-12, 1e-12, 100_000).unwrap();
        let exact = &y0 * (-10.0f64).exp();
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-12 * b.abs().max(0.1), "{a} {b}");
        }
        assert_eq!(st.evaluations, 2 + 12 * (st.accepted + st.rejected));
        let (back, _) = integrate(f, 10.0, 0.0, y.view(), 1e-12, 1e-12, 100_000).unwrap();
        for (a, b) in back.iter().zip(&y0) {
            assert!((a - b).abs() < 1e-8 * b.abs(), "{a} {b}");
        }
    }

    #[test]
    fn harmonic_oscillator_and_tolerance_proportionality() {
        let y0 = array![[1.0, 0.0]];
        let f = |_: f64, y: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>| {
            dy[[0, 0]] = y[[0, 1]];
            dy[[0, 1]] = -y[[0, 0]];
            Ok(())
        };
        let mut last = f64::INFINITY;
        for tol in [1e-6, 1e-9, 1e-12] {
            let mut calls = 0;
            let g = |s: f64, y: ArrayView2<f64>, dy: ArrayViewMut2<f64>| {
                calls += 1;
                f(s, y, dy)
            };
            let (y, st) = integrate(g, 0.0, 20.0, y0.view(), tol, tol, 100_000).unwrap();
            assert_eq!(st.evaluations, calls);
            let e = (y[[0, 0]] - 20.0f64.cos())
                .abs()
                .max((y[[0, 1]] + 20.0f64.sin()).abs());
            assert!(e < last, "{tol}: {e}");
            last = e;
        }
        assert!(last < 1e-10, "{last}");
    }

    #[test]
    fn failures_are_errors() {
        let y0 = array![[1.0]];
        let nan = |_: f64, _: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>| {
            dy.fill(f64::NAN);
            Ok(())
        };
        assert!(integrate(nan, 0.0, 1.0, y0.view(), 1e-8, 1e-8, 100).is_err());
        let fast = |s: f64, _: ArrayView2<f64>, mut dy: ArrayViewMut2<f64>| {
            dy.fill((50.0 * s).cos() * 50.0);
            Ok(())
        };
        let e = integrate(fast, 0.0, 100.0, y0.view(), 1e-12, 1e-12, 3).unwrap_err();
        assert!(e.to_string().contains("more than 3 steps"), "{e}");
    }
}
