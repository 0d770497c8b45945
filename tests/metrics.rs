//! Every metric against an independent computation: closed forms, brute force, quadrature, or
//! Monte Carlo within its error bar.

use pfode::grid::Grid;
use pfode::metrics::distribution::{
    assignment_cost, empirical_w2, entropy, median_bandwidth, mmd2, nll, sliced_w2,
};
use pfode::metrics::GaussianLaw;
use pfode::ndarray::{Array1, Array2, Axis};
use pfode::rng::standard_normal;
use pfode::schedule::NoiseLevel;
use pfode::solver::{self, quadrature, Env, Model};
use pfode::study::ot_gap::{self, OtGap};
use pfode::study::{seed_for, Study};
use pfode::{problems, schedule, Counted, GaussianFlow, Schedule};

fn solve(spec: &str, sched: &dyn Schedule, grid: &Grid, x: &Array2<f64>) -> Array2<f64> {
    let mixture = problems::load("gauss4").unwrap();
    let env = Env {
        schedule: sched,
        mixture: Some(&mixture),
        noise_seed: 0,
    };
    let mut built = solver::build(spec, &env).unwrap();
    let oracle = Counted::new(&mixture);
    let model = Model::new(&oracle, sched);
    solver::integrate(built.solver.as_mut(), &model, grid, x.view()).unwrap()
}

/// The output law of a solver on Gaussian data, pushed exactly through d + 1 probes, agrees with
/// the mean and covariance of 20000 samples run through the same solver (within 5 standard
/// errors), while its covariance differs from the exact law's by many standard errors (the mean
/// path x_t = alpha_t mu is reproduced exactly by the solver).
#[test]
fn exact_output_law_matches_monte_carlo() {
    let mixture = problems::load("gauss4").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse("logsnr:steps=4,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    let (a0, a1) = (s.level(1.0), s.level(0.001));
    let c = mixture.component(0);
    let prior = GaussianLaw::marginal(c, a0.alpha, a0.sigma);
    let spec = "dpm-solver++:order=2";
    let law = prior
        .pushed(solve(spec, s.as_ref(), &grid, &prior.probes()).view())
        .unwrap();
    let n = 20000;
    let x = solve(
        spec,
        s.as_ref(),
        &grid,
        &mixture.sample(n, a0.alpha, a0.sigma, 11),
    );
    let mean = x.mean_axis(Axis(0)).unwrap();
    let centered = &x - &mean.view().insert_axis(Axis(0));
    let cov = centered.t().dot(&centered) / (n as f64 - 1.0);
    let exact_cov = law.cov();
    let target = GaussianLaw::marginal(c, a1.alpha, a1.sigma);
    let mut far = 0.0f64;
    for i in 0..4 {
        let se = (exact_cov[(i, i)] / n as f64).sqrt();
        assert!((mean[i] - law.mean[i]).abs() < 5.0 * se, "mean {i}");
        for j in 0..4 {
            let se = ((exact_cov[(i, i)] * exact_cov[(j, j)] + exact_cov[(i, j)].powi(2))
                / n as f64)
                .sqrt();
            assert!(
                (cov[(i, j)] - exact_cov[(i, j)]).abs() < 5.0 * se,
                "cov {i} {j}"
            );
            far = far.max((exact_cov[(i, j)] - target.cov()[(i, j)]).abs() / se);
        }
    }
    assert!(
        far > 20.0,
        "the solver's bias is resolved: {far} standard errors"
    );
    let (w2, kl) = (law.w2(&target).unwrap(), law.kl(&target).unwrap());
    assert!(w2 > 1e-3 && kl > 1e-6, "{w2} {kl}");

    // The exact flow pushes p_T to p_t exactly; KL is invariant under it, so the prior term
    // KL(flow(N(0, sigma_T^2 I)) | p_t) equals KL(N(0, sigma_T^2 I) | p_T).
    let flow = GaussianFlow::new(&mixture).unwrap();
    let push = |law: &GaussianLaw| {
        let probes = law.probes();
        let mut img = Array2::zeros(probes.dim());
        flow.map(&a0, &a1, probes.view(), img.view_mut()).unwrap();
        law.pushed(img.view()).unwrap()
    };
    assert!(push(&prior).w2(&target).unwrap() < 1e-12);
    let std_prior = GaussianLaw::isotropic(4, a0.sigma);
    let (k0, k1) = (
        std_prior.kl(&prior).unwrap(),
        push(&std_prior).kl(&target).unwrap(),
    );
    assert!((k0 / k1 - 1.0).abs() < 1e-9, "{k0} {k1}");
}

/// For a Gaussian the PF-ODE map is the OT map: the exact flow's coupling cost equals the
/// closed-form W2^2, the reference solver's to 1e-10, and on the sample the identity coupling is
/// the optimal assignment. The straightness integrals agree with closed-form per-path
/// quadrature.
#[test]
fn ot_gap_vanishes_for_a_gaussian_and_straightness_matches_closed_form() {
    let mixture = problems::load("gauss4").unwrap();
    let c = mixture.component(0);
    let config = ot_gap::Config {
        problems: vec!["gauss4".into()],
        schedules: vec![
            "vp-linear".into(),
            "vp-cosine".into(),
            "edm".into(),
            "flow".into(),
        ],
        samples: 64,
        seed: 3,
        reference: "reference".into(),
        segments: 8,
        paths: 0,
        jacobians: 16,
        replicates: 2,
        map_only: vec![],
    };
    for unit in OtGap::units(&config).unwrap() {
        let (_, pts) = OtGap.run(&config, &unit).unwrap();
        let p = &pts[0];
        // Brenier: the Gaussian's PF-ODE map is OT, its Jacobian symmetric positive definite.
        let cert = p.certificate.as_ref().unwrap();
        assert_eq!(cert.jacobians, 16);
        assert!(
            cert.asymmetry_max < 1e-10,
            "{}: asymmetry {:e}",
            unit.key,
            cert.asymmetry_max
        );
        assert!(cert.min_sym_eig > 0.0 && cert.indefinite_fraction == 0.0);
        let bures = p.bures.unwrap();
        assert!(
            (p.flow_cost_exact.unwrap() / bures - 1.0).abs() < 1e-12,
            "{}",
            unit.key
        );
        assert!(
            (p.flow_cost_reference.unwrap() / bures - 1.0).abs() < 1e-10,
            "{}",
            unit.key
        );
        assert!(p.rel_gap.abs() < 1e-13, "{} gap {}", unit.key, p.rel_gap);

        let s = schedule::parse(&p.schedule).unwrap();
        let (t0, t1) = (p.t_start, p.t_end);
        let at0 = s.level(t0);
        let x_t = mixture.sample(64, at0.alpha, at0.sigma, seed_for(3, &unit.key));
        let mu = c.u.t().dot(&c.mean);
        let (mut kinetic, mut excess, mut chord) = (0.0, 0.0, 0.0);
        for row in x_t.rows() {
            let w = c.u.t().dot(&(&row - &(&c.mean * at0.alpha)));
            let c0: Array1<f64> =
                c.l.mapv(|l| at0.alpha * at0.alpha * l + at0.sigma * at0.sigma);
            // x_t in the eigenbasis: alpha_t mu + g_t w, g_t = sqrt((alpha_t^2 l + sigma_t^2) / c0).
            let velocity = |t: f64| -> Array1<f64> {
                let at = s.level(t);
                Array1::from_shape_fn(4, |i| {
                    let v = at.alpha * at.alpha * c.l[i] + at.sigma * at.sigma;
                    let dg = (at.alpha * at.dalpha * c.l[i] + at.sigma_dsigma) / (v * c0[i]).sqrt();
                    at.dalpha * mu[i] + dg * w[i]
                })
            };
            let k = quadrature::adaptive(t1, t0, 1e-13, &|t| velocity(t).mapv(|v| v * v).sum());
            let l =
                quadrature::adaptive(t1, t0, 1e-13, &|t| velocity(t).mapv(|v| v * v).sum().sqrt());
            let end = s.level(t1);
            let d = Array1::from_shape_fn(4, |i| {
                let g = ((end.alpha * end.alpha * c.l[i] + end.sigma * end.sigma) / c0[i]).sqrt();
                end.alpha * mu[i] + g * w[i] - row.dot(&c.u.column(i))
            });
            let d2 = d.dot(&d);
            kinetic += k * (t0 - t1);
            chord += d2;
            excess += l / d2.sqrt() - 1.0;
        }
        let straightness = (kinetic - chord) / chord;
        assert!(
            (p.flow_cost / (chord / 64.0) - 1.0).abs() < 1e-10,
            "{}",
            unit.key
        );
        assert!(
            (p.straightness - straightness).abs() < 1e-6 * straightness.max(1e-3),
            "{} {} {}",
            unit.key,
            p.straightness,
            straightness
        );
        assert!(
            (p.path_excess - excess / 64.0).abs() < 1e-6 * p.path_excess.max(1e-3),
            "{}",
            unit.key
        );
    }
}

/// In one dimension the sorted matching is optimal, so sliced W2 (every direction is +-1) equals
/// the exact empirical W2 by assignment; shuffling a set does not change the assignment cost.
#[test]
fn sliced_and_assignment_w2_agree_in_one_dimension() {
    let x = standard_normal(300, 1, 1, 0);
    let y = standard_normal(300, 1, 2, 0).mapv(|v| 0.5 + 2.0 * v);
    let a = empirical_w2(x.view(), y.view()).unwrap();
    let b = sliced_w2(x.view(), y.view(), 7, 9).unwrap();
    assert!((a - b).abs() < 1e-12 * a, "{a} {b}");
    let x2 = standard_normal(200, 3, 5, 0);
    let perm: Vec<usize> = (0..200).map(|i| (i * 37 + 11) % 200).collect();
    let shuffled = x2.select(Axis(0), &perm);
    assert_eq!(assignment_cost(x2.view(), shuffled.view()).unwrap(), 0.0);
    assert!(assignment_cost(x2.view(), x.view()).is_err());
    assert!(empirical_w2(
        standard_normal(2001, 1, 1, 0).view(),
        standard_normal(2001, 1, 2, 0).view()
    )
    .is_err());
}

/// Unbiased MMD^2 with a fixed bandwidth against its closed form for two Gaussians, over 8
/// independent replicates (within 4 standard errors of their mean); the median bandwidth
/// against a brute-force sort.
#[test]
fn mmd_matches_closed_form_and_median_bandwidth_brute_force() {
    let (l, d, shift) = (1.5f64, 2, 1.0f64);
    // E k(a, b) for a - b ~ N(m, 2 I): (l^2/(l^2+2))^(d/2) exp(-|m|^2 / (2 (l^2+2))).
    let e = |m2: f64| {
        (l * l / (l * l + 2.0)).powf(d as f64 / 2.0) * (-m2 / (2.0 * (l * l + 2.0))).exp()
    };
    let exact = 2.0 * e(0.0) - 2.0 * e(shift * shift);
    let reps: Vec<f64> = (0..8)
        .map(|r| {
            let x = standard_normal(400, d, 100 + r, 0);
            let mut y = standard_normal(400, d, 200 + r, 0);
            y.column_mut(0).mapv_inplace(|v| v + shift);
            mmd2(x.view(), y.view(), l).unwrap()
        })
        .collect();
    let mean = reps.iter().sum::<f64>() / 8.0;
    let se = (reps.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0 / 8.0).sqrt();
    assert!(
        (mean - exact).abs() < 4.0 * se,
        "{mean} vs {exact} (se {se})"
    );
    assert!(se < 0.1 * exact);

    let x = standard_normal(15, 3, 1, 0);
    let y = standard_normal(10, 3, 2, 0);
    let z = pfode::ndarray::concatenate(Axis(0), &[x.view(), y.view()]).unwrap();
    let mut dist = Vec::new();
    for i in 0..25 {
        for j in i + 1..25 {
            dist.push((&z.row(i) - &z.row(j)).mapv(|v| v * v).sum().sqrt());
        }
    }
    dist.sort_by(f64::total_cmp);
    assert_eq!(
        median_bandwidth(x.view(), y.view()).unwrap(),
        dist[dist.len() / 2]
    );
}

/// The NLL of exact samples estimates the entropy: for a Gaussian against 1/2 ln det(2 pi e
/// Sigma); for ring2d against -int p ln p on a 1601^2 grid.
#[test]
fn nll_of_exact_samples_is_the_entropy() {
    let at0 = NoiseLevel {
        t: 0.0,
        alpha: 1.0,
        sigma: 0.0,
        dalpha: 0.0,
        dsigma: 0.0,
        sigma_dsigma: 0.0,
    };
    let g = problems::load("gauss4").unwrap();
    let h = GaussianLaw::marginal(g.component(0), 1.0, 0.0)
        .entropy()
        .unwrap();
    let est = entropy(&g, &at0, 20000, 4).unwrap();
    assert!((est.value - h).abs() < 4.0 * est.se, "{:?} vs {h}", est);

    let ring = problems::load("ring2d").unwrap();
    let at = NoiseLevel {
        sigma: 0.3,
        alpha: 0.9,
        ..at0
    };
    let (n, r) = (1601usize, 6.5f64);
    let step = 2.0 * r / (n - 1) as f64;
    let pts = Array2::from_shape_fn((n * n, 2), |(k, j)| {
        -r + step * if j == 0 { k % n } else { k / n } as f64
    });
    let lp = ring.log_density(pts.view(), &at).unwrap();
    let integral: f64 = lp.iter().map(|l| -l * l.exp()).sum::<f64>() * step * step;
    let est = entropy(&ring, &at, 20000, 5).unwrap();
    assert!(
        (est.value - integral).abs() < 4.0 * est.se,
        "{:?} vs {integral}",
        est
    );
    let x = ring.sample(1000, at.alpha, at.sigma, 6);
    let shifted = x.mapv(|v| v + 0.5);
    assert!(
        nll(&ring, shifted.view(), &at).unwrap().value
            > nll(&ring, x.view(), &at).unwrap().value + 0.1
    );
}

/// The Kozachenko–Leonenko entropy estimate against closed forms: N(0, diag(1, 4)) in 2-D has
/// H = 1 + ln(2 pi) + ln 2 = 3.531, and a uniform square of side 3 has H = ln 9 = 2.197; 4000
/// samples, k = 4, within 0.05 (the estimator's spread at this size is about 0.02).
#[test]
fn knn_entropy_matches_closed_forms() {
    use pfode::metrics::distribution::entropy_knn;
    let mut z = standard_normal(4000, 2, 11, 0);
    z.column_mut(1).mapv_inplace(|v| 2.0 * v);
    let want = 1.0 + (2.0 * std::f64::consts::PI).ln() + 2f64.ln();
    let h = entropy_knn(z.view(), 4).unwrap();
    assert!((h - want).abs() < 0.05, "{h} vs {want}");
    let u = Array2::from_shape_fn((4000, 2), |(i, j)| {
        let mut r = pfode::rng::RowRng::new(3, j as u32, i as u64);
        3.0 * r.uniform()
    });
    let h = entropy_knn(u.view(), 4).unwrap();
    assert!((h - 9f64.ln()).abs() < 0.05, "{h} vs {}", 9f64.ln());
    assert!(entropy_knn(z.slice(pfode::ndarray::s![..4, ..]), 4).is_err());
}

/// Crossing stripes: the PF-ODE map of `cross2d` is not the OT map, and its Jacobian says so.
#[test]
fn ot_certificate_detects_the_non_ot_map_of_crossing_stripes() {
    let config = ot_gap::Config {
        problems: vec!["cross2d".into(), "ring2d".into()],
        schedules: vec!["vp-linear".into()],
        samples: 200,
        seed: 3,
        reference: "reference".into(),
        segments: 2,
        paths: 0,
        jacobians: 100,
        replicates: 2,
        map_only: vec!["gauss2c".into()],
    };
    let mut p90 = Vec::new();
    for unit in OtGap::units(&config).unwrap() {
        let (_, pts) = OtGap.run(&config, &unit).unwrap();
        let cert = pts[0].certificate.clone().unwrap();
        assert_eq!(cert.map.len(), 100);
        println!("{}: {cert:?}", unit.key);
        p90.push(cert.asymmetry_p90);
    }
    assert_eq!(p90.len(), 3);
    assert!(p90[0] > 0.05, "cross2d asymmetry p90 {}", p90[0]);
    assert!(p90[1] > 0.01, "ring2d asymmetry p90 {}", p90[1]);
}
