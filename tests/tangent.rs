//! The tangent flow: exact Jacobians and divergences against finite differences, Hutchinson's
//! estimator against the exact trace, forward mode through solvers against closed forms.

use ndarray::{Array1, Array2, Array3};
use pfode::grid::Grid;
use pfode::nn::{Mlp, MlpConfig, TimeInput};
use pfode::solver::{self, Env};
use pfode::tangent::{self, JacobianStats, Probe};
use pfode::{problems, schedule, GaussianFlow, NoiseLevel, Oracle, Prediction};

fn points(n: usize, d: usize, scale: f64) -> Array2<f64> {
    Array2::from_shape_fn((n, d), |(i, j)| {
        scale * ((1.7 * i as f64 + 0.9 * j as f64 + 0.3).sin() * 2.0 + 0.3 * j as f64)
    })
}

/// Central differences of the `kind` prediction, (n, d, d).
fn fd_jacobian(
    o: &dyn Oracle,
    kind: Prediction,
    x: &Array2<f64>,
    at: &NoiseLevel,
    h: f64,
) -> Array3<f64> {
    let (n, d) = x.dim();
    let mut j = Array3::zeros((n, d, d));
    for q in 0..d {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.column_mut(q).mapv_inplace(|v| v + h);
        xm.column_mut(q).mapv_inplace(|v| v - h);
        let (mut yp, mut ym) = (Array2::zeros((n, d)), Array2::zeros((n, d)));
        o.predict(kind, xp.view(), at, yp.view_mut()).unwrap();
        o.predict(kind, xm.view(), at, ym.view_mut()).unwrap();
        for i in 0..n {
            for p in 0..d {
                j[(i, p, q)] = (yp[(i, p)] - ym[(i, p)]) / (2.0 * h);
            }
        }
    }
    j
}

fn rel_err(a: &Array3<f64>, b: &Array3<f64>) -> f64 {
    let num = (a - b).iter().map(|e| e * e).sum::<f64>().sqrt();
    num / b.iter().map(|e| e * e).sum::<f64>().sqrt().max(1e-300)
}

#[test]
fn mixture_jacobian_and_divergence_match_finite_differences() {
    let vp = schedule::parse("vp-linear").unwrap();
    let edm = schedule::parse("edm").unwrap();
    let mut checked = 0;
    for name in ["gauss4", "ring2d", "aniso16", "gauss2c"] {
        let m = problems::load(name).unwrap();
        let d = m.dim();
        let x = points(7, d, 1.0);
        for at in [vp.level(0.05), vp.level(0.4), edm.level(2.0)] {
            for kind in Prediction::ALL {
                let mut j = Array3::zeros((7, d, d));
                m.jacobian(kind, x.view(), &at, j.view_mut()).unwrap();
                let fd = fd_jacobian(&m, kind, &x, &at, 1e-5);
                let e = rel_err(&j, &fd);
                assert!(
                    e < 1e-6,
                    "{name} {kind} at t = {}: relative error {e:e}",
                    at.t
                );
                let mut div = Array1::zeros(7);
                m.divergence(kind, x.view(), &at, div.view_mut()).unwrap();
                for i in 0..7 {
                    let tr: f64 = (0..d).map(|p| j[(i, p, p)]).sum();
                    assert!(
                        (div[i] - tr).abs() < 1e-10 * tr.abs().max(1.0),
                        "{name} {kind}: {} vs {tr}",
                        div[i]
                    );
                }
                // J v is the Jacobian applied.
                let v = points(7, d, 0.3).mapv(|v| v.cos());
                let mut jv = Array2::zeros((7, d));
                m.jvp(kind, x.view(), &at, v.view(), jv.view_mut()).unwrap();
                for i in 0..7 {
                    let want = j.index_axis(ndarray::Axis(0), i).dot(&v.row(i));
                    let e = (&jv.row(i) - &want)
                        .iter()
                        .fold(0.0f64, |a, b| a.max(b.abs()));
                    assert!(e < 1e-12 * want.iter().fold(1.0f64, |a, b| a.max(b.abs())));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 5);
}

#[test]
fn score_hessian_of_one_gaussian_is_minus_the_inverse_covariance() {
    let m = problems::load("gauss4").unwrap();
    let at = NoiseLevel::of(0.8, 0.6);
    let x = points(3, 4, 1.0);
    let mut j = Array3::zeros((3, 4, 4));
    m.jacobian(Prediction::Score, x.view(), &at, j.view_mut())
        .unwrap();
    let (u, l) = m.eigen(0);
    let c_inv = u
        .dot(&Array2::from_diag(&l.mapv(|l| 1.0 / (0.64 * l + 0.36))))
        .dot(&u.t());
    for i in 0..3 {
        let e = (&j.index_axis(ndarray::Axis(0), i) + &c_inv)
            .iter()
            .fold(0.0f64, |a, b| a.max(b.abs()));
        assert!(e < 1e-13, "{e:e}");
    }
}

fn small_mlp(prediction: Prediction) -> Mlp {
    Mlp::init(
        MlpConfig {
            dim: 3,
            width: 16,
            depth: 2,
            time_input: TimeInput::T,
            time_features: 4,
            omega_max: 10.0,
            prediction,
            times: 1,
        },
        5,
    )
    .unwrap()
}

#[test]
fn mlp_jacobian_by_forward_mode_matches_finite_differences() {
    let vp = schedule::parse("vp-linear").unwrap();
    let at = vp.level(0.3);
    for native in [Prediction::Eps, Prediction::X0, Prediction::V] {
        let net = small_mlp(native);
        let x = points(300, 3, 0.7);
        for kind in Prediction::ALL {
            let mut j = Array3::zeros((300, 3, 3));
            net.jacobian(kind, x.view(), &at, j.view_mut()).unwrap();
            let fd = fd_jacobian(&net, kind, &x, &at, 1e-5);
            let e = rel_err(&j, &fd);
            assert!(e < 1e-8, "{native} -> {kind}: {e:e}");
            let mut div = Array1::zeros(300);
            net.divergence(kind, x.view(), &at, div.view_mut()).unwrap();
            let tr = (0..300).map(|i| (0..3).map(|p| fd[(i, p, p)]).sum::<f64>());
            for (a, b) in div.iter().zip(tr) {
                assert!((a - b).abs() < 1e-7 * b.abs().max(1.0));
            }
        }
    }
}

#[test]
fn hutchinson_is_unbiased_within_four_standard_errors() {
    let m = problems::load("aniso16").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let at = vp.level(0.2);
    let x = m.sample_pt(40, &at, 3);
    let mut exact = Array1::zeros(40);
    m.divergence(Prediction::Velocity, x.view(), &at, exact.view_mut())
        .unwrap();
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let e = tangent::probes(40, 16, 64, probe, 9);
        let (mean, se) = tangent::hutchinson(&m, Prediction::Velocity, x.view(), &at, &e).unwrap();
        let mut worst = 0.0f64;
        for i in 0..40 {
            assert!(se[i] > 0.0);
            worst = worst.max((mean[i] - exact[i]).abs() / se[i]);
        }
        assert!(worst < 4.0, "{probe}: worst |mean - exact| / se = {worst}");
        // Same seed, same probes; another seed, other probes.
        assert_eq!(tangent::probes(40, 16, 2, probe, 9)[1], e[1]);
        assert_ne!(tangent::probes(40, 16, 1, probe, 10)[0], e[0]);
    }
    // Rademacher probes are exact on a diagonal Jacobian: a single probe gives the trace.
    let e = tangent::probes(5, 2, 1, Probe::Rademacher, 1);
    let flow = schedule::parse("flow").unwrap();
    let iso = pfode::GaussianMixture::new(
        pfode::MixtureSpec {
            weights: vec![1.0],
            means: vec![vec![0.5, -1.0]],
            covs: vec![vec![vec![2.0, 0.0], vec![0.0, 0.5]]],
            ..Default::default()
        },
        "diag",
    )
    .unwrap();
    let at = flow.level(0.4);
    let x = points(5, 2, 1.0);
    let (mean, _) = tangent::hutchinson(&iso, Prediction::Velocity, x.view(), &at, &e).unwrap();
    let mut exact = Array1::zeros(5);
    iso.divergence(Prediction::Velocity, x.view(), &at, exact.view_mut())
        .unwrap();
    for (a, b) in mean.iter().zip(&exact) {
        assert!((a - b).abs() < 1e-13);
    }
}

#[test]
fn reference_jacobian_of_a_gaussian_is_the_closed_form_and_symmetric_psd() {
    let m = problems::load("gauss4").unwrap();
    for sched in ["vp-linear", "edm", "flow"] {
        let s = schedule::parse(sched).unwrap();
        let (t0, t1) = (pfode::study::convergence::range(s.as_ref()).0, s.t_min());
        let grid = Grid::explicit(vec![t0, t1], "two", s.as_ref()).unwrap();
        let env = Env {
            schedule: s.as_ref(),
            mixture: Some(&m),
            noise_seed: 0,
        };
        let x = m.sample_pt(5, &s.level(t0), 2);
        for spec in ["reference", "ddim", "dpm-solver++:order=2"] {
            let g = if spec == "reference" {
                grid.clone()
            } else {
                Grid::parse(&format!("logsnr:steps=6,t_start={t0}"), s.as_ref()).unwrap()
            };
            let mut b = solver::build(spec, &env).unwrap();
            let (y, j) =
                tangent::map_jacobian(b.solver.as_mut(), &m, s.as_ref(), &g, x.view()).unwrap();
            let plain = solver::integrate(
                solver::build(spec, &env).unwrap().solver.as_mut(),
                &pfode::solver::Model::new(&m, s.as_ref()),
                &g,
                x.view(),
            )
            .unwrap();
            assert!(
                (&y - &plain).iter().fold(0.0f64, |a, b| a.max(b.abs())) < 1e-9,
                "{sched} {spec}"
            );
            for i in 0..5 {
                let st = JacobianStats::of(j.index_axis(ndarray::Axis(0), i)).unwrap();
                assert!(
                    st.asymmetry < 1e-10,
                    "{sched} {spec}: asymmetry {:e}",
                    st.asymmetry
                );
                assert!(st.min_sym_eig > 0.0, "{sched} {spec}");
            }
            if spec == "reference" {
                // The closed form: U diag(sqrt(D_1 / D_0)) U^T.
                let (a0, a1) = (s.level(t0), s.level(t1));
                let (u, l) = m.eigen(0);
                let gain = l.mapv(|l| {
                    ((a1.alpha.powi(2) * l + a1.sigma.powi(2))
                        / (a0.alpha.powi(2) * l + a0.sigma.powi(2)))
                    .sqrt()
                });
                let want = u.dot(&Array2::from_diag(&gain)).dot(&u.t());
                for i in 0..5 {
                    let e = (&j.index_axis(ndarray::Axis(0), i) - &want)
                        .iter()
                        .fold(0.0f64, |a, b| a.max(b.abs()));
                    assert!(e < 1e-9, "{sched}: {e:e}");
                }
                let mut img = Array2::zeros(x.dim());
                GaussianFlow::new(&m)
                    .unwrap()
                    .map(&a0, &a1, x.view(), img.view_mut())
                    .unwrap();
                assert!((&y - &img).iter().fold(0.0f64, |a, b| a.max(b.abs())) < 1e-9);
            }
        }
    }
}

mod likelihood {
    use super::*;
    use pfode::likelihood::{log_likelihood, Divergence, Integrator, Method, Prior};

    fn method(integrator: &str, divergence: &str, prior: Prior) -> Method {
        Method {
            integrator: Integrator::parse(integrator).unwrap(),
            divergence: Divergence::parse(divergence).unwrap(),
            prior,
        }
    }

    fn ends(s: &dyn pfode::Schedule) -> Vec<f64> {
        vec![s.t_min(), pfode::study::convergence::range(s).0]
    }

    #[test]
    fn reference_likelihood_is_exact_on_gauss4_and_ring2d() {
        for (name, tol) in [("gauss4", 1e-9), ("ring2d", 1e-8)] {
            let m = problems::load(name).unwrap();
            for sched in ["vp-linear", "vp-cosine", "edm", "flow"] {
                let s = schedule::parse(sched).unwrap();
                let times = ends(s.as_ref());
                let x = m.sample_p0(50, 4);
                let want = m.log_density(x.view(), &s.level(times[0])).unwrap();
                let got = log_likelihood(
                    &m,
                    s.as_ref(),
                    x.view(),
                    &times,
                    &method("reference", "exact", Prior::Exact),
                    Some(&m),
                )
                .unwrap();
                let err = (&got.log_p - &want)
                    .iter()
                    .fold(0.0f64, |a, b| a.max(b.abs()));
                assert!(err < tol, "{name} {sched}: max error {err:e}");
                assert!(got.nfe > 12);
                let bpd = got.bits_per_dim();
                let d = m.dim() as f64;
                assert!((bpd[0] + got.log_p[0] / (d * std::f64::consts::LN_2)).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn log_det_of_the_tangent_map_is_the_likelihood_integral() {
        let m = problems::load("ring2d").unwrap();
        let s = schedule::parse("vp-linear").unwrap();
        let times = ends(s.as_ref());
        let x = m.sample_p0(20, 8);
        let l = log_likelihood(
            &m,
            s.as_ref(),
            x.view(),
            &times,
            &method("reference", "exact", Prior::Exact),
            Some(&m),
        )
        .unwrap();
        let grid = Grid::explicit(vec![times[1], times[0]], "back", s.as_ref()).unwrap();
        let env = Env {
            schedule: s.as_ref(),
            mixture: Some(&m),
            noise_seed: 0,
        };
        let mut r = solver::build("reference", &env).unwrap();
        let (x0, j) =
            tangent::map_jacobian(r.solver.as_mut(), &m, s.as_ref(), &grid, l.latent.view())
                .unwrap();
        assert!((&x0 - &x).iter().fold(0.0f64, |a, b| a.max(b.abs())) < 1e-8);
        for i in 0..20 {
            let st = JacobianStats::of(j.index_axis(ndarray::Axis(0), i)).unwrap();
            assert!(
                (st.log_det + l.delta[i]).abs() < 1e-8,
                "{} vs {}",
                st.log_det,
                -l.delta[i]
            );
        }
    }

    #[test]
    fn fixed_step_likelihood_converges_at_the_integrators_order() {
        let m = problems::load("gauss4").unwrap();
        let s = schedule::parse("vp-linear").unwrap();
        let x = m.sample_p0(20, 5);
        let want = m.log_density(x.view(), &s.level(0.0)).unwrap();
        for (name, order) in [("euler", 1.0), ("heun", 2.0), ("rk4", 4.0)] {
            let err = |n: usize| {
                let times: Vec<f64> = (0..=n).map(|i| i as f64 / n as f64).collect();
                let l = log_likelihood(
                    &m,
                    s.as_ref(),
                    x.view(),
                    &times,
                    &method(name, "exact", Prior::Exact),
                    Some(&m),
                )
                .unwrap();
                assert_eq!(
                    l.nfe,
                    n * if order == 1.0 {
                        1
                    } else if order == 2.0 {
                        2
                    } else {
                        4
                    }
                );
                (&l.log_p - &want).iter().map(|e| e.abs()).sum::<f64>() / 20.0
            };
            let (e1, e2) = (err(64), err(128));
            let p = (e1 / e2).log2();
            assert!(
                (p - order).abs() < 0.3,
                "{name}: observed order {p} ({e1:e} -> {e2:e})"
            );
        }
    }

    #[test]
    fn priors_and_bad_points() {
        let m = problems::load("gauss4").unwrap();
        let s = schedule::parse("vp-linear").unwrap();
        let times = ends(s.as_ref());
        let x = m.sample_p0(10, 5);
        let ex = log_likelihood(
            &m,
            s.as_ref(),
            x.view(),
            &times,
            &method("reference", "exact", Prior::Exact),
            Some(&m),
        )
        .unwrap();
        let st = log_likelihood(
            &m,
            s.as_ref(),
            x.view(),
            &times,
            &method("reference", "exact", Prior::Standard),
            None,
        )
        .unwrap();
        let kd = log_likelihood(
            &m,
            s.as_ref(),
            x.view(),
            &times,
            &method("reference", "exact", Prior::KDiffusion),
            None,
        )
        .unwrap();
        // The same integral; only the prior differs. At sigma = 0 (alpha = 1) k-diffusion's
        // convention is the standard prior.
        assert_eq!(ex.delta, st.delta);
        for i in 0..10 {
            assert!((kd.log_p[i] - st.log_p[i]).abs() < 1e-9);
            let gap = (ex.log_p[i] - st.log_p[i]).abs();
            assert!(gap > 0.0 && gap < 0.1, "{} {}", ex.log_p[i], st.log_p[i]);
        }
        let mut bad = x.clone();
        bad[(3, 1)] = f64::NAN;
        let e = log_likelihood(
            &m,
            s.as_ref(),
            bad.view(),
            &times,
            &method("reference", "exact", Prior::Exact),
            Some(&m),
        )
        .unwrap_err();
        assert!(e.to_string().contains("point 3, coordinate 1"), "{e}");
        let e = log_likelihood(
            &m,
            s.as_ref(),
            x.slice(ndarray::s![.., ..3]),
            &times,
            &method("reference", "exact", Prior::Exact),
            Some(&m),
        )
        .unwrap_err();
        assert!(e.to_string().contains("dimension 4"), "{e}");
        assert!(log_likelihood(
            &m,
            s.as_ref(),
            x.view(),
            &times,
            &method("reference", "exact", Prior::Exact),
            None
        )
        .is_err());
        assert!(Divergence::parse("hutchinson:probes=0").is_err());
        assert!(Integrator::parse("rk5").is_err());
        let edm = schedule::parse("edm").unwrap();
        let e = pfode::likelihood::elbo_ddpm(
            &m,
            edm.as_ref(),
            x.view(),
            (0.0, 80.0),
            Prior::Exact,
            Some(&m),
            (10, 1),
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("variance-preserving"), "{e}");
    }
}

fn npy(rows: usize, cols: usize, vals: &[f64]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    for v in vals {
        b.extend(v.to_le_bytes());
    }
    b
}

#[test]
fn likelihood_cli_rejects_bad_points_with_one_line_and_no_output() {
    let dir = std::env::temp_dir().join(format!("pfode-lik-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.json");
    for (name, bytes, want) in [
        (
            "nan.npy",
            npy(3, 2, &[0.0, 0.0, 0.0, f64::NAN, 0.0, 0.0]),
            "NaN",
        ),
        ("wide.npy", npy(2, 3, &[0.0; 6]), "dimension mismatch"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_likelihood"))
            .args(["--problem", "ring2d", "--points"])
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want) && err.contains(name), "{err}");
        assert!(!out.exists());
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_likelihood"))
        .args([
            "--problem",
            "gauss4",
            "--n",
            "5",
            "--prior",
            "uniform",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown prior 'uniform'"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_likelihood"))
        .args(["--problem", "gauss4", "--n", "5", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(doc["max_abs_error"].as_f64().unwrap() < 1e-9);
    std::fs::remove_dir_all(&dir).unwrap();
}

mod elbo {
    use super::*;
    use pfode::likelihood::{elbo_continuous, elbo_ddpm, Prior};

    #[test]
    fn continuous_elbo_is_tight_with_the_exact_score_and_prior() {
        for name in ["gauss4", "ring2d"] {
            let m = problems::load(name).unwrap();
            let s = schedule::parse("vp-linear").unwrap();
            let x = m.sample_p0(30, 11);
            let exact = m.log_density(x.view(), &s.level(0.0)).unwrap();
            let b = elbo_continuous(
                &m,
                s.as_ref(),
                x.view(),
                (0.0, 1.0),
                Prior::Exact,
                Some(&m),
                (16, 32),
                3,
            )
            .unwrap();
            let mut z2 = 0.0;
            for i in 0..30 {
                let z = (b.elbo[i] - exact[i]) / b.se[i];
                assert!(
                    z.abs() < 4.5,
                    "{name} point {i}: {} vs {} (se {})",
                    b.elbo[i],
                    exact[i],
                    b.se[i]
                );
                z2 += z * z;
            }
            // The z-scores have unit variance: their mean square lies in a 99.9% chi^2_30 band.
            assert!(
                z2 / 30.0 > 0.3 && z2 / 30.0 < 2.3,
                "{name}: mean z^2 = {}",
                z2 / 30.0
            );
            assert_eq!(b.nfe, 16 * 16 * 32);
        }
    }

    #[test]
    fn ddpm_elbo_is_a_bound_that_tightens_with_steps() {
        let m = problems::load("ring2d").unwrap();
        let s = schedule::parse("vp-linear").unwrap();
        let x = m.sample_p0(200, 12);
        let exact = m
            .log_density(x.view(), &s.level(0.0))
            .unwrap()
            .mean()
            .unwrap();
        let mut last = f64::NEG_INFINITY;
        for steps in [10, 100, 1000] {
            let b = elbo_ddpm(
                &m,
                s.as_ref(),
                x.view(),
                (0.0, 1.0),
                Prior::Exact,
                Some(&m),
                (steps, 2),
                4,
            )
            .unwrap();
            let (mean, se) = (
                b.elbo.mean().unwrap(),
                (b.se.mapv(|v| v * v).sum()).sqrt() / 200.0,
            );
            assert!(
                mean < exact + 4.0 * se,
                "T = {steps}: {mean} above log p = {exact}"
            );
            assert!(mean > last, "T = {steps}: {mean} not above {last}");
            last = mean;
        }
        // Uniform steps from t = 0 keep an O(1) gap however large T is: the first steps span
        // SNR ratios 2, 3/2, ... for every T, and the Gaussian reverse kernel with the posterior
        // variance beta_tilde is too narrow there (Ho et al. 2020, Sec. 3.2).
        assert!(
            exact - last > 0.1 && exact - last < 2.0,
            "T = 1000 leaves a gap {}",
            exact - last
        );
    }
}

#[test]
fn forward_mode_through_solvers_matches_finite_differences_of_the_map() {
    let m = problems::load("ring2d").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let env = Env {
        schedule: s.as_ref(),
        mixture: Some(&m),
        noise_seed: 0,
    };
    let grid = Grid::parse("logsnr:steps=8,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    let x = m.sample_pt(6, &s.level(1.0), 5);
    for spec in [
        "ddim",
        "dpm-solver++:order=2",
        "unipc:order=2",
        "heun",
        "dpm-solver:order=3,method=singlestep",
    ] {
        let mut b = solver::build(spec, &env).unwrap();
        let (_, j) =
            tangent::map_jacobian(b.solver.as_mut(), &m, s.as_ref(), &grid, x.view()).unwrap();
        let map = |x: &Array2<f64>| {
            let mut b = solver::build(spec, &env).unwrap();
            solver::integrate(
                b.solver.as_mut(),
                &pfode::solver::Model::new(&m, s.as_ref()),
                &grid,
                x.view(),
            )
            .unwrap()
        };
        let h = 1e-6;
        let mut worst = 0.0f64;
        for q in 0..2 {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp.column_mut(q).mapv_inplace(|v| v + h);
            xm.column_mut(q).mapv_inplace(|v| v - h);
            let (yp, ym) = (map(&xp), map(&xm));
            for i in 0..6 {
                for p in 0..2 {
                    let fd = (yp[(i, p)] - ym[(i, p)]) / (2.0 * h);
                    worst = worst.max((fd - j[(i, p, q)]).abs() / fd.abs().max(1.0));
                }
            }
        }
        assert!(worst < 1e-6, "{spec}: {worst:e}");
    }
}

#[test]
fn likelihood_study_unit_on_gauss4() {
    use pfode::study::likelihood::{Config, LikelihoodStudy};
    use pfode::study::Study;
    let mut c = Config::main();
    c.problems = vec!["gauss4".into()];
    c.nets.clear();
    c.samples = 20;
    c.steps = vec![8, 16];
    c.probes = vec![4];
    c.samplers = vec!["ddim".into()];
    c.sampler_steps = vec![8];
    c.ddpm_steps = vec![10];
    c.replicates = 2;
    c.panels = 4;
    let units = LikelihoodStudy::units(&c).unwrap();
    assert_eq!(units.len(), 1);
    let (g, pts) = LikelihoodStudy.run(&c, &units[0]).unwrap();
    assert_eq!(g.t_min, 0.0);
    // 3 priors + 3 integrators x 2 steps + 1 probe count x 2 + 1 sampler + 2 x (1 + 1) bounds,
    // then the continuous bound on vp-cosine, edm and flow and DDPM on vp-cosine.
    assert_eq!(pts.len(), 3 + 6 + 2 + 1 + 4 + 4);
    let extra: Vec<&str> = pts
        .iter()
        .map(|p| p.schedule.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(extra.len(), 4);
    for p in pts
        .iter()
        .filter(|p| !p.schedule.is_empty() && p.method == "continuous")
    {
        // Tight on every schedule with the exact score and prior (20 points, 2 replicates).
        assert!(
            p.error.abs() < 5.0 * p.error_se + 0.05,
            "{}: {} +- {}",
            p.schedule,
            p.error,
            p.error_se
        );
    }
    let reference = &pts[0];
    assert!(reference.rms_error < 1e-9, "{}", reference.rms_error);
    let rk4 = pts
        .iter()
        .find(|p| p.method == "rk4" && p.steps == 16)
        .unwrap();
    assert_eq!(rk4.nfe, 64);
    let map = pts.iter().find(|p| p.view == "map").unwrap();
    assert_eq!(map.nfe, 8);
    assert!(
        map.error > 0.0,
        "DDIM at 8 steps has a positive KL: {}",
        map.error
    );
    let (_, again) = LikelihoodStudy.run(&c, &units[0]).unwrap();
    assert_eq!(pts, again);
}
