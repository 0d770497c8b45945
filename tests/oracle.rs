//! The exact Gaussian-mixture oracle against independent computations.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use pfode::prediction::{convert, Prediction};
use pfode::schedule::{self, NoiseLevel};
use pfode::{problems, Counted, GaussianMixture, Oracle, Result};

fn mixture(name: &str) -> GaussianMixture {
    problems::load(name).unwrap()
}

fn predict(m: &impl Oracle, kind: Prediction, x: &Array2<f64>, at: &NoiseLevel) -> Array2<f64> {
    let mut out = Array2::zeros(x.dim());
    m.predict(kind, x.view(), at, out.view_mut()).unwrap();
    out
}

fn max_abs(a: ArrayView2<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Levels across schedules, including the ends where alpha or sigma is 0.
fn levels() -> Vec<(String, NoiseLevel)> {
    let mut v = Vec::new();
    for (spec, ts) in [
        ("vp-linear", vec![0.0, 1e-3, 0.2, 0.6, 1.0]),
        ("vp-cosine", vec![0.05, 0.9946]),
        ("ve", vec![0.0, 0.5, 1.0]),
        ("edm", vec![0.002, 1.0, 80.0]),
        ("flow", vec![0.0, 0.3, 0.999, 1.0]),
    ] {
        let s = schedule::parse(spec).unwrap();
        for t in ts {
            v.push((format!("{spec} t={t}"), s.level(t)));
        }
    }
    v
}

#[test]
fn x_is_alpha_x0_plus_sigma_eps() {
    for name in ["ring2d", "aniso16", "gauss4"] {
        let m = mixture(name);
        for (label, at) in levels() {
            let x = m.sample_pt(300, &at, 1);
            let x0 = predict(&m, Prediction::X0, &x, &at);
            let eps = predict(&m, Prediction::Eps, &x, &at);
            let recon = &x0 * at.alpha + &eps * at.sigma;
            let err = max_abs((&recon - &x).view()) / max_abs(x.view()).max(1.0);
            assert!(err < 1e-13, "{name} {label}: {err:e}");
        }
    }
}

#[test]
fn score_is_the_gradient_of_log_density() {
    let h = 1e-5;
    for name in ["ring2d", "aniso16", "gauss4"] {
        let m = mixture(name);
        let d = m.dim();
        for (label, at) in levels() {
            if at.sigma > 10.0 {
                continue; // log p is nearly flat: FD noise dominates
            }
            let x = m.sample_pt(5, &at, 2);
            let score = predict(&m, Prediction::Score, &x, &at);
            for j in 0..d {
                let mut xp = x.clone();
                let mut xm = x.clone();
                xp.column_mut(j).mapv_inplace(|v| v + h);
                xm.column_mut(j).mapv_inplace(|v| v - h);
                let fd = (m.log_density(xp.view(), &at).unwrap()
                    - m.log_density(xm.view(), &at).unwrap())
                    / (2.0 * h);
                for i in 0..x.nrows() {
                    let s = score[[i, j]];
                    assert!(
                        (fd[i] - s).abs() < 1e-6 * (1.0 + s.abs()),
                        "{name} {label} row {i} coord {j}: fd {} vs score {s}",
                        fd[i]
                    );
                }
            }
        }
    }
}

/// Cholesky factor of a small SPD matrix, written out: an independent route to the Gaussian.
fn cholesky(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            l[[i, j]] = if i == j {
                (a[[i, i]] - s).sqrt()
            } else {
                (a[[i, j]] - s) / l[[j, j]]
            };
        }
    }
    l
}

/// Solves (L L^T) y = b.
fn cho_solve(l: &Array2<f64>, b: ArrayView1<f64>) -> Array1<f64> {
    let n = b.len();
    let mut y = b.to_owned();
    for i in 0..n {
        y[i] = (y[i] - (0..i).map(|k| l[[i, k]] * y[k]).sum::<f64>()) / l[[i, i]];
    }
    for i in (0..n).rev() {
        y[i] = (y[i] - (i + 1..n).map(|k| l[[k, i]] * y[k]).sum::<f64>()) / l[[i, i]];
    }
    y
}

#[test]
fn one_component_mixture_is_the_gaussian_closed_form() {
    let m = mixture("gauss4");
    let spec = m.spec();
    let mu = Array1::from(spec.means[0].clone());
    let sigma0 = Array2::from_shape_fn((4, 4), |(i, j)| spec.covs[0][i][j]);
    for (label, at) in levels() {
        let c = &sigma0 * (at.alpha * at.alpha) + Array2::<f64>::eye(4) * (at.sigma * at.sigma);
        let l = cholesky(&c);
        let logdet: f64 = 2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>();
        let x = m.sample_pt(20, &at, 3);
        let score = predict(&m, Prediction::Score, &x, &at);
        let x0 = predict(&m, Prediction::X0, &x, &at);
        let logp = m.log_density(x.view(), &at).unwrap();
        for i in 0..x.nrows() {
            let r = &x.row(i) - &(&mu * at.alpha);
            let cinv_r = cho_solve(&l, r.view());
            let exact_score = -&cinv_r;
            let exact_x0 = &mu + &(sigma0.dot(&cinv_r) * at.alpha);
            let exact_logp =
                -0.5 * (4.0 * (2.0 * std::f64::consts::PI).ln() + logdet + r.dot(&cinv_r));
            let scale = exact_score.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            let e_score = (&score.row(i) - &exact_score)
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            let e_x0 = (&x0.row(i) - &exact_x0)
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(e_score < 1e-12 * scale, "{label}: score {e_score:e}");
            assert!(
                e_x0 < 1e-12 * (1.0 + at.alpha.recip().min(1e3)),
                "{label}: x0 {e_x0:e}"
            );
            assert!(
                (logp[i] - exact_logp).abs() < 1e-12 * exact_logp.abs().max(1.0),
                "{label}: log p"
            );
        }
    }
}

#[test]
fn log_density_integrates_to_one_on_a_grid() {
    let m = mixture("ring2d");
    let s = schedule::parse("vp-linear").unwrap();
    let (half, h) = (8.0, 0.02);
    let n = (2.0 * half / h) as usize + 1;
    let grid = Array2::from_shape_fn((n * n, 2), |(i, j)| {
        let k = if j == 0 { i / n } else { i % n };
        -half + h * k as f64
    });
    for t in [0.0, 0.3, 1.0] {
        let logp = m.log_density(grid.view(), &s.level(t)).unwrap();
        let mass: f64 = logp.iter().map(|l| l.exp()).sum::<f64>() * h * h;
        assert!((mass - 1.0).abs() < 1e-9, "t = {t}: mass {mass}");
    }
}

#[test]
fn limits_alpha_to_zero_and_sigma_to_zero() {
    let m = mixture("aniso16");
    let x = m.sample_p0(200, 4);
    // alpha = 0: p_t = N(0, sigma^2 I) whatever the data, x0_hat = E[x_0] = sum_k w_k mu_k.
    let pure_noise = schedule::parse("flow").unwrap().level(1.0);
    let x0 = predict(&m, Prediction::X0, &x, &pure_noise);
    let mut mean = Array1::<f64>::zeros(16);
    for (k, w) in m.weights().iter().enumerate() {
        mean = mean + &m.mean(k) * *w;
    }
    for row in x0.rows() {
        let err = (&row - &mean).iter().fold(0.0f64, |a, e| a.max(e.abs()));
        // the K quadratic forms |U_k^T x|^2 ~ 80 agree only to rounding (~eps * 80), which
        // perturbs the responsibilities w_k by ~2e-14 relative: 4e-14 measured.
        assert!(err < 1e-12, "alpha = 0: x0_hat - E[x0] = {err:e}");
    }
    let score = predict(&m, Prediction::Score, &x, &pure_noise);
    assert!(max_abs((&score + &x).view()) < 1e-14);
    // sigma = 0: the denoiser is the identity and the noise prediction vanishes.
    let clean = schedule::parse("vp-linear").unwrap().level(0.0);
    let x0 = predict(&m, Prediction::X0, &x, &clean);
    let e = max_abs((&x0 - &x).view()) / max_abs(x.view());
    assert!(e < 1e-13, "sigma = 0: x0_hat - x = {e:e}");
    let eps = predict(&m, Prediction::Eps, &x, &clean);
    assert!(eps.iter().all(|&e| e == 0.0));
    // ... and the VP velocity there is finite although dsigma/dt is not:
    // alpha' x - sigma sigma' grad log p_0 = -beta0/2 (x + grad log p_0).
    assert!(clean.dsigma.is_infinite());
    let v = predict(&m, Prediction::Velocity, &x, &clean);
    let score = predict(&m, Prediction::Score, &x, &clean);
    let expected = (&x + &score) * -0.05;
    assert!(max_abs((&v - &expected).view()) < 1e-13 * max_abs(expected.view()));
    // alpha = sigma = 0 is no noise level at all.
    let bad = NoiseLevel {
        alpha: 0.0,
        sigma: 0.0,
        ..clean
    };
    let e = m.predict(
        Prediction::X0,
        x.view(),
        &bad,
        Array2::zeros(x.dim()).view_mut(),
    );
    assert!(e.unwrap_err().to_string().contains("not both 0"));
}

#[test]
fn five_routes_to_the_drift_agree() {
    let m = mixture("aniso16");
    for (label, at) in levels() {
        let x = m.sample_pt(100, &at, 5);
        let direct = predict(&m, Prediction::Velocity, &x, &at);
        let scale = max_abs(direct.view()).max(1.0);
        for from in Prediction::ALL {
            let mut y = predict(&m, from, &x, &at);
            match convert(from, Prediction::Velocity, &at, x.view(), y.view_mut()) {
                Ok(()) => {
                    let err = max_abs((&y - &direct).view()) / scale;
                    assert!(
                        err < 1e-11,
                        "{label}: {from} -> velocity differs by {err:e}"
                    );
                }
                // Only where the input says nothing about the drift (eps and x0 at the ends).
                Err(_) => assert!(at.alpha == 0.0 || at.sigma == 0.0, "{label} {from}"),
            }
        }
        if at.alpha > 0.0 {
            // f x - g^2/2 score, with the schedule's own f and g^2.
            let spec = label.split(' ').next().unwrap();
            let s = schedule::parse(spec).unwrap();
            let score = predict(&m, Prediction::Score, &x, &at);
            let ode = &x * s.f(at.t) - &score * (0.5 * s.g2(at.t));
            let err = max_abs((&ode - &direct).view()) / scale;
            assert!(err < 1e-10, "{label}: f x - g^2/2 score differs by {err:e}");
        }
    }
}

/// An oracle that only knows eps, as a noise-prediction network would.
struct EpsOnly(GaussianMixture);

impl Oracle for EpsOnly {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn native(&self) -> Prediction {
        Prediction::Eps
    }
    fn eval(&self, x: ArrayView2<f64>, at: &NoiseLevel, out: ArrayViewMut2<f64>) -> Result<()> {
        self.0.predict(Prediction::Eps, x, at, out)
    }
}

#[test]
fn default_predict_converts_the_native_type() {
    let m = mixture("gauss4");
    let eps_only = EpsOnly(m.clone());
    let at = schedule::parse("vp-cosine").unwrap().level(0.5);
    let x = m.sample_pt(50, &at, 6);
    for kind in Prediction::ALL {
        let a = predict(&m, kind, &x, &at);
        let b = predict(&eps_only, kind, &x, &at);
        let err = max_abs((&a - &b).view()) / max_abs(a.view()).max(1.0);
        assert!(err < 1e-12, "{kind}: {err:e}");
    }
}

#[test]
fn counted_oracle_gives_exact_nfe_and_call_order() {
    let s = schedule::parse("edm").unwrap();
    let counted = Counted::new(mixture("ring2d"));
    let x = Array2::from_elem((1000, 2), 0.5);
    let mut out = Array2::zeros(x.dim());
    let ts = [80.0, 40.0, 10.0, 1.0, 0.1, 0.002, 0.0];
    for (i, &t) in ts.iter().enumerate() {
        let kind = Prediction::ALL[i % 5];
        counted
            .predict(kind, x.view(), &s.level(t), out.view_mut())
            .unwrap();
    }
    counted
        .eval(x.view(), &s.level(3.0), out.view_mut())
        .unwrap();
    assert_eq!(counted.nfe(), 8);
    let seen: Vec<f64> = counted.calls().iter().map(|l| l.t).collect();
    assert_eq!(seen, [80.0, 40.0, 10.0, 1.0, 0.1, 0.002, 0.0, 3.0]);
    counted.reset();
    assert_eq!(counted.nfe(), 0);
}

#[test]
fn batch_shape_errors() {
    let m = mixture("aniso16");
    let at = schedule::parse("flow").unwrap().level(0.5);
    let x = Array2::zeros((10, 15));
    let mut out = Array2::zeros((10, 15));
    let e = m
        .predict(Prediction::Eps, x.view(), &at, out.view_mut())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "dimension mismatch: the oracle has dimension 16; got points (10, 15) and an output buffer (10, 15)"
    );
    assert!(m.log_density(x.view(), &at).is_err());
}

#[test]
fn bit_identical_at_any_thread_count() {
    let m = mixture("mix64");
    let at = schedule::parse("vp-linear").unwrap().level(0.4);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let x = m.sample_pt(1000, &at, 9);
                let y = predict(&m, Prediction::Score, &x, &at);
                let l = m.log_density(x.view(), &at).unwrap();
                (x, y, l)
            })
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        let other = run(threads);
        assert!(one
            .0
            .iter()
            .zip(other.0.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .1
            .iter()
            .zip(other.1.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .2
            .iter()
            .zip(other.2.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn samples_have_the_mixture_moments() {
    let m = mixture("gauss4");
    let spec = m.spec();
    let s = schedule::parse("vp-linear").unwrap();
    let n = 40000;
    for t in [0.0, 0.5] {
        let at = s.level(t);
        let x = m.sample_pt(n, &at, 11);
        let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
        let centered = &x - &mean;
        let cov = centered.t().dot(&centered) / (n as f64 - 1.0);
        for i in 0..4 {
            let expected_mean = at.alpha * spec.means[0][i];
            // standard error of the mean sqrt(var/n) < 0.0075; of a covariance entry < 0.015
            assert!((mean[i] - expected_mean).abs() < 0.03, "t={t} mean[{i}]");
            for j in 0..4 {
                let c = at.alpha * at.alpha * spec.covs[0][i][j]
                    + if i == j { at.sigma * at.sigma } else { 0.0 };
                assert!(
                    (cov[[i, j]] - c).abs() < 0.06,
                    "t={t} cov[{i}][{j}] {} vs {c}",
                    cov[[i, j]]
                );
            }
        }
    }
}

/// Many components in few dimensions (K d = 384 > 256, so the chunk takes the matrix-product
/// path) against the mixture assembled from its single components (each on the loop path):
/// x0_hat = sum_k r_k x0_hat_k with r_k = w_k p_k / p from each component's own density.
#[test]
fn many_components_match_their_single_component_parts() {
    let spec = problems::random_mix(64, 6, 3);
    let m = GaussianMixture::new(spec.clone(), "k64d6").unwrap();
    let at = schedule::parse("vp-linear").unwrap().level(0.4);
    let x = m.sample_pt(300, &at, 5);
    let full = predict(&m, Prediction::X0, &x, &at);
    let mut logits = Array2::<f64>::zeros((x.nrows(), 64));
    let mut parts = Vec::new();
    for k in 0..64 {
        let one = pfode::MixtureSpec {
            weights: vec![1.0],
            means: vec![spec.means[k].clone()],
            covs: vec![spec.covs[k].clone()],
            ..Default::default()
        };
        let g = GaussianMixture::new(one, "one").unwrap();
        let lp = g.log_density(x.view(), &at).unwrap();
        logits.column_mut(k).assign(&(lp + spec.weights[k].ln()));
        parts.push(predict(&g, Prediction::X0, &x, &at));
    }
    for i in 0..x.nrows() {
        let row = logits.row(i);
        let max = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let r: Vec<f64> = row.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = r.iter().sum();
        for j in 0..6 {
            let want: f64 = (0..64).map(|k| r[k] / sum * parts[k][[i, j]]).sum();
            assert!(
                (full[[i, j]] - want).abs() < 1e-10 * (1.0 + want.abs()),
                "row {i} coord {j}: {} vs {want}",
                full[[i, j]]
            );
        }
    }
}
