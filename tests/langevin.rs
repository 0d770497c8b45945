//! Langevin correctors, predictor-corrector sampling and annealed Langevin dynamics against exact
//! laws on Gaussian problems: the unadjusted Langevin law after n steps at a fixed level against
//! its closed-form recursion, its O(eps) bias against p_t, exact NFE, the predictor bit for bit
//! with no corrector, and Bradley & Nakkiran's CFG-DDPM = DDIM + Langevin on the powered law.

use pfode::grid::Grid;
use pfode::guidance::Guidance;
use pfode::metrics::law::GaussianLaw;
use pfode::metrics::sde::output_law;
use pfode::ndarray::{Array1, Array2};
use pfode::solver::sde::{Noise, Probe};
use pfode::solver::{self, langevin, Env, Model};
use pfode::{problems, schedule, Counted, GaussianMixture, Oracle, Schedule};

fn inverse(a: &Array2<f64>) -> Array2<f64> {
    use faer::linalg::solvers::Solve;
    let d = a.nrows();
    let m = faer::Mat::from_fn(d, d, |i, j| a[(i, j)]);
    let x = m
        .llt(faer::Side::Lower)
        .unwrap()
        .solve(faer::Mat::<f64>::identity(d, d));
    Array2::from_shape_fn((d, d), |(i, j)| 0.5 * (x[(i, j)] + x[(j, i)]))
}

/// The law after `n` ULA steps x <- x + eps P (m - x) + sqrt(2 eps) z from N(m0, c0), P = S^-1.
fn ula(
    m0: &Array1<f64>,
    c0: &Array2<f64>,
    target: &GaussianLaw,
    eps: f64,
    n: usize,
) -> GaussianLaw {
    let d = m0.len();
    let p = inverse(&target.cov());
    let a = Array2::<f64>::eye(d) - &p * eps;
    let (mut m, mut c) = (m0.clone(), c0.clone());
    for _ in 0..n {
        m = a.dot(&m) + p.dot(&target.mean) * eps;
        c = a.dot(&c).dot(&a.t()) + Array2::<f64>::eye(d) * (2.0 * eps);
    }
    GaussianLaw::new(m, &c, "ula").unwrap()
}

/// The exact law of `n` Langevin steps of size eps at time t from x ~ `start`, by probe noise.
fn langevin_law(
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    t: f64,
    eps: f64,
    n: usize,
    start: &GaussianLaw,
) -> GaussianLaw {
    let counted = Counted::new(mixture);
    let model = Model::new(&counted, s);
    let d = start.dim();
    let mut x = start.probes_with_noise(n);
    let (mut g, mut z) = (Array2::zeros((0, 0)), Array2::zeros((0, 0)));
    let mut probe = Probe::new(d);
    for k in 0..n {
        probe.normal(&[t, t], k, x.dim(), &mut z).unwrap();
        langevin::step(&model, t, eps, &mut x, &mut g, &z).unwrap();
    }
    assert_eq!(counted.nfe(), n);
    start.pushed_with_noise(x.view()).unwrap()
}

#[test]
fn langevin_steps_follow_the_ula_recursion_and_their_bias_is_first_order_in_eps() {
    let gauss4 = problems::load("gauss4").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let at = s.level(0.3);
    let p_t = GaussianLaw::marginal(gauss4.component(0), at.alpha, at.sigma);
    let mut bias = Vec::new();
    for eps in [0.02, 0.01, 0.005] {
        let mut w2 = Vec::new();
        for n in [1, 4, 16, 64, 256] {
            let law = langevin_law(&gauss4, s.as_ref(), 0.3, eps, n, &p_t);
            let want = ula(&p_t.mean, &p_t.cov(), &p_t, eps, n);
            assert!(law.w2(&want).unwrap() < 1e-10, "eps {eps} n {n}");
            w2.push(law.w2(&p_t).unwrap());
        }
        // Started at p_t, the law drifts monotonically towards the stationary law of ULA,
        // N(m, S (I - eps S^-1 / 2)^-1) = N(m, (P - eps P^2 / 2)^-1).
        assert!(w2.windows(2).all(|w| w[1] > w[0]), "{w2:?}");
        let p = inverse(&p_t.cov());
        let q = &p - &(p.dot(&p) * (eps / 2.0));
        let stationary = GaussianLaw::new(p_t.mean.clone(), &inverse(&q), "ula").unwrap();
        let w_inf = stationary.w2(&p_t).unwrap();
        let long = ula(&p_t.mean, &p_t.cov(), &p_t, eps, 40_000);
        assert!(long.w2(&stationary).unwrap() < 1e-9 * w_inf.max(1.0));
        assert!(w2[4] < w_inf, "{w2:?} vs {w_inf}");
        println!("eps {eps}: W2 to p_t after 1..256 steps {w2:.3?}, stationary {w_inf:.3e}");
        bias.push(w_inf);
    }
    // The invariant law's distance to p_t halves with eps: p_t is invariant as eps -> 0.
    for w in bias.windows(2) {
        assert!((w[0] / w[1] - 2.0).abs() < 0.1, "{bias:?}");
    }
    // From a wrong start N(0, I), the law follows the same recursion.
    let far = GaussianLaw::isotropic(4, 1.0);
    let law = langevin_law(&gauss4, s.as_ref(), 0.3, 0.01, 300, &far);
    let want = ula(&far.mean, &far.cov(), &p_t, 0.01, 300);
    assert!(law.w2(&want).unwrap() < 1e-10);
    assert!(law.w2(&p_t).unwrap() < 0.5 * far.w2(&p_t).unwrap());
}

fn env(s: &dyn Schedule) -> Env<'_> {
    Env {
        schedule: s,
        mixture: None,
        noise_seed: 5,
    }
}

fn run(
    spec: &str,
    s: &dyn Schedule,
    grid: &Grid,
    mixture: &GaussianMixture,
) -> (Array2<f64>, usize, Option<usize>) {
    let counted = Counted::new(mixture);
    let model = Model::new(&counted, s);
    let x = mixture.sample_pt(64, &s.level(grid.times[0]), 2);
    let mut built = solver::build(spec, &env(s)).unwrap();
    let expected = built.solver.nfe(grid, s);
    let out = solver::integrate(built.solver.as_mut(), &model, grid, x.view()).unwrap();
    (out, counted.nfe(), expected)
}

#[test]
fn predictor_corrector_and_ald_count_evaluations_exactly_and_pc_without_corrector_is_the_predictor()
{
    let gauss4 = problems::load("gauss4").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let logsnr = Grid::parse("logsnr:steps=12,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    let zero = Grid::parse("time-uniform:steps=12,t_start=1,t_end=0", s.as_ref()).unwrap();
    for (grid, ends_at_zero) in [(&logsnr, false), (&zero, true)] {
        for pred in ["ddim", "ddpm", "dpm-solver++:order=2", "euler-maruyama"] {
            let (alone, nfe, _) = run(pred, s.as_ref(), grid, &gauss4);
            for none in [
                format!("pc:predictor=[{pred}],n=0"),
                format!("pc:predictor=[{pred}],corrector=none"),
            ] {
                let (x, n, expected) = run(&none, s.as_ref(), grid, &gauss4);
                assert!(x == alone, "{none} differs from {pred}");
                assert_eq!((n, expected), (nfe, Some(nfe)));
            }
            for k in 1..=3 {
                for step in ["snr", "sigma", "sde"] {
                    let spec = format!("pc:predictor=[{pred}],n={k},step={step}");
                    let (x, n, expected) = run(&spec, s.as_ref(), grid, &gauss4);
                    assert!(x.iter().all(|v| v.is_finite()), "{spec}");
                    assert_eq!((n, expected), (nfe + 12 * k, Some(nfe + 12 * k)), "{spec}");
                }
            }
        }
        for t in [1, 7] {
            let spec = format!("ald:eps=1e-5,n={t}");
            let (_, n, expected) = run(&spec, s.as_ref(), grid, &gauss4);
            let want = if ends_at_zero { 11 * t + 1 } else { 12 * t };
            assert_eq!((n, expected), (want, Some(want)), "{spec}");
        }
    }
}

/// The snr rule by hand: eps = 2 alpha_i (r mean|z| / mean|s|)^2 with alpha_i = (alpha_s/alpha_t)^2.
#[test]
fn the_snr_rule_uses_batch_mean_norms() {
    let gauss4 = problems::load("gauss4").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse("time-uniform:steps=2,t_start=0.6,t_end=0.4", s.as_ref()).unwrap();
    let x0 = gauss4.sample_pt(8, &s.level(0.6), 4);
    let mut x = x0.clone();
    let counted = Counted::new(&gauss4);
    let model = Model::new(&counted, s.as_ref());
    let mut spec = pfode::spec::Spec::parse("solver", "pc:snr=0.2,n=1").unwrap();
    let mut c = langevin::Corrector::parse(&mut spec).unwrap();
    let mut sources: Vec<Box<dyn Noise>> = vec![pfode::solver::sde::Iid::boxed(9)];
    c.correct(&model, &grid.times, 0, &mut x, &mut sources)
        .unwrap();
    let mut z = Array2::zeros((0, 0));
    pfode::solver::sde::Iid::boxed(9)
        .normal(&grid.times, 0, x0.dim(), &mut z)
        .unwrap();
    let mut g = Array2::zeros(x0.dim());
    gauss4
        .predict(
            pfode::Prediction::Score,
            x0.view(),
            &s.level(0.6),
            g.view_mut(),
        )
        .unwrap();
    let norm = |a: &Array2<f64>| a.rows().into_iter().map(|r| r.dot(&r).sqrt()).sum::<f64>() / 8.0;
    let alpha_i = (s.alpha(0.6) / s.alpha(0.5)).powi(2);
    let eps = 2.0 * alpha_i * (0.2 * norm(&z) / norm(&g)).powi(2);
    let want = &x0 + &(&g * eps) + &(&z * (2.0 * eps).sqrt());
    let diff = (&x - &want).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    assert!(diff < 1e-14, "{diff}");
}

/// Bradley & Nakkiran (2024): with DDPM, CFG samples the reverse SDE of the guided score, which
/// is the guided PF-ODE (DDIM) plus Langevin dynamics on the powered law p_c^s p_g^(1-s) with
/// step g^2 dt / 2 = sigma^2 h. On gauss2c (class A guided against class B, s = 2) all three
/// laws are exact: PC(DDIM + one `step=sde` Langevin step) converges to CFG-DDPM at first order,
/// while CFG-DDIM stays a fixed distance away.
#[test]
fn cfg_ddpm_is_ddim_plus_langevin_on_the_powered_law() {
    let m = problems::load("gauss2c").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let a = m.conditional("A").unwrap();
    let at0 = s.level(1.0);
    let prior = GaussianLaw::marginal(a.component(0), at0.alpha, at0.sigma);
    let g = Guidance::parse("cfg:scale=2,guide=B").unwrap();
    let law = |spec: &str, steps: usize| {
        let grid = Grid::parse(
            &format!("logsnr:steps={steps},t_start=1,t_end=0.001"),
            s.as_ref(),
        )
        .unwrap();
        let guided = g.build(&m, "A", None).unwrap();
        let model = Model::new(&guided, s.as_ref());
        let mut built = solver::build(spec, &env(s.as_ref())).unwrap();
        output_law(built.solver.as_mut(), &model, &grid, &prior).unwrap()
    };
    let (mut pc_gap, mut ddim_gap) = (Vec::new(), Vec::new());
    for steps in [25, 50, 100, 200, 400] {
        let ddpm = law("ddpm", steps);
        pc_gap.push(
            law("pc:predictor=ddim,step=sde,n=1", steps)
                .w2(&ddpm)
                .unwrap(),
        );
        ddim_gap.push(law("ddim", steps).w2(&ddpm).unwrap());
    }
    println!("W2(PC, CFG-DDPM) {pc_gap:.3?}\nW2(CFG-DDIM, CFG-DDPM) {ddim_gap:.3?}");
    for w in pc_gap.windows(2) {
        assert!(w[0] / w[1] > 1.7 && w[0] / w[1] < 2.3, "{pc_gap:?}");
    }
    assert!(pc_gap[4] < 0.05 * ddim_gap[4], "{pc_gap:?} {ddim_gap:?}");
    assert!(
        (ddim_gap[4] / ddim_gap[3] - 1.0).abs() < 0.05,
        "{ddim_gap:?}"
    );
}

/// ALD's exact law (probe noise through every level) equals NCSN's update applied level by
/// level in closed form, and more Langevin steps per level bring it closer to p_{t_end}.
#[test]
fn ald_law_is_the_annealed_ula_recursion() {
    let gauss4 = problems::load("gauss4").unwrap();
    let s = schedule::parse("ve:sigma_min=0.01,sigma_max=3").unwrap();
    let grid = Grid::parse("logsnr:steps=8,t_start=1,t_end=0", s.as_ref()).unwrap();
    let at0 = s.level(grid.times[0]);
    let prior = GaussianLaw::marginal(gauss4.component(0), at0.alpha, at0.sigma);
    let sigma_l = s.sigma(*grid.times.last().unwrap());
    let mut kl = Vec::new();
    for n in [2, 20, 200] {
        let eps = 0.1 * sigma_l * sigma_l;
        let model = Model::new(&gauss4, s.as_ref());
        let mut built = solver::build(&format!("ald:eps={eps},n={n}"), &env(s.as_ref())).unwrap();
        let got = output_law(built.solver.as_mut(), &model, &grid, &prior).unwrap();
        let (mut mean, mut cov) = (prior.mean.clone(), prior.cov());
        for &t in &grid.times[1..] {
            let at = s.level(t);
            let target = GaussianLaw::marginal(gauss4.component(0), at.alpha, at.sigma);
            let alpha_i = eps * (at.sigma / sigma_l).powi(2);
            let next = ula(&mean, &cov, &target, alpha_i / 2.0, n);
            (mean, cov) = (next.mean.clone(), next.cov());
        }
        let want = GaussianLaw::new(mean, &cov, "ald").unwrap();
        assert!(
            got.w2(&want).unwrap() < 1e-9,
            "n {n}: {}",
            got.w2(&want).unwrap()
        );
        let at = s.level(*grid.times.last().unwrap());
        kl.push(
            got.kl(&GaussianLaw::marginal(
                gauss4.component(0),
                at.alpha,
                at.sigma,
            ))
            .unwrap(),
        );
    }
    println!("ALD KL to p_t_end at n = 2, 20, 200: {kl:.3?}");
    assert!(kl.windows(2).all(|w| w[1] < w[0] / 2.0), "{kl:?}");
}
