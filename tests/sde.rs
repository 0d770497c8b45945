//! Stochastic samplers: the Brownian path, identities with the deterministic solvers, strong and
//! weak orders, convergence of the output law, and Fokker-Planck consistency.

use pfode::brownian::BrownianPath;
use pfode::grid::Grid;
use pfode::ndarray::{s, Array2};
use pfode::solver::{self, Env, Model};
use pfode::{problems, schedule, Counted, GaussianMixture, Schedule};

fn run(
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    spec: &str,
    grid: &str,
    x: &Array2<f64>,
    seed: u64,
) -> (Array2<f64>, usize) {
    let grid = Grid::parse(grid, s).unwrap();
    let env = Env {
        schedule: s,
        mixture: Some(mixture),
        noise_seed: seed,
    };
    let mut built = solver::build(spec, &env).unwrap();
    let oracle = Counted::new(mixture);
    let model = Model::new(&oracle, s);
    let out = solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap();
    assert_eq!(Some(oracle.nfe()), built.solver.nfe(&grid, s), "{spec}");
    (out, oracle.nfe())
}

fn max_rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn brownian_increments_refine_consistently() {
    let path = BrownianPath::new(5);
    let s = schedule::parse("vp-linear").unwrap();
    let (rows, d) = (4000, 3);
    let coarse = Grid::parse("logsnr:steps=10,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    let fine = Grid::parse("logsnr:steps=40,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    for (i, t) in coarse.times.iter().enumerate() {
        assert_eq!(*t, fine.times[4 * i]);
    }
    let mut wc = path.walk(&coarse.times, rows, d).unwrap();
    let mut wf = path.walk(&fine.times, rows, d).unwrap();
    let mut dc = Array2::zeros((0, 0));
    let mut df = Array2::zeros((0, 0));
    let mut worst = 0.0f64;
    let mut fine_incs = Vec::new();
    for i in 0..10 {
        wc.increment(i, &mut dc).unwrap();
        let mut sum = Array2::<f64>::zeros((rows, d));
        for j in 0..4 {
            wf.increment(4 * i + j, &mut df).unwrap();
            sum += &df;
            fine_incs.push((4 * i + j, df.clone()));
        }
        worst = worst.max(max_rel(&sum, &dc));
        // The walk's values are the tree's values at any index.
        let v = wc.value(i + 1) - wc.value(i);
        assert!(max_rel(&v, &dc) < 1e-14);
    }
    assert!(
        worst < 1e-14,
        "fine increments sum to the coarse one: {worst:e}"
    );
    // Each fine increment has variance |dt| (4000 x 3 draws: relative SE 1.3%), and
    // increments of different steps are uncorrelated (SE of the correlation 0.009).
    for (j, inc) in &fine_incs {
        let dt = (fine.times[j + 1] - fine.times[*j]).abs();
        let var = inc.mapv(|v| v * v).mean().unwrap() / dt;
        assert!((var - 1.0).abs() < 0.06, "step {j}: variance ratio {var}");
    }
    for w in fine_incs.windows(2) {
        let (a, b) = (&w[0].1, &w[1].1);
        let na = a.mapv(|v| v * v).sum().sqrt();
        let nb = b.mapv(|v| v * v).sum().sqrt();
        let corr = (a * b).sum() / (na * nb);
        assert!(
            corr.abs() < 0.05,
            "steps {} {}: correlation {corr}",
            w[0].0,
            w[1].0
        );
    }
    // Same seed, same path at any thread count; the first rows of a larger batch are a
    // smaller batch.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let value = |pool: &rayon::ThreadPool, rows: usize| {
        pool.install(|| path.walk(&fine.times, rows, d).unwrap().value(17))
    };
    let a = value(&one, 300);
    assert_eq!(a, value(&four, 300));
    assert_eq!(value(&four, 100), a.slice(s![..100, ..]));
    assert_ne!(
        BrownianPath::new(6)
            .walk(&fine.times, 100, d)
            .unwrap()
            .value(17),
        a.slice(s![..100, ..])
    );
    // Out-of-order steps are an error, not a silent new path.
    let mut w = path.walk(&coarse.times, 2, 1).unwrap();
    assert!(w.increment(1, &mut dc).is_err());
}

#[test]
fn stochastic_samplers_reduce_to_their_deterministic_parts_and_to_each_other() {
    let mixture = problems::load("gauss4").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let edm = schedule::parse("edm").unwrap();
    let x_vp = mixture.sample_pt(64, &vp.level(1.0), 3);
    let x_edm = mixture.sample_pt(64, &edm.level(80.0), 3);
    let logsnr = "logsnr:steps=12,t_start=1,t_end=0.001";
    let uniform = "time-uniform:steps=12,t_start=1,t_end=0.001";
    let karras = "karras:steps=12,sigma_min=0.002,sigma_max=80,zero=true";
    type Case<'a> = (&'a str, &'a str, &'a str, &'a dyn Schedule, &'a Array2<f64>);
    let cases: &[Case] = &[
        ("euler-maruyama:eta=0", "euler", uniform, vp.as_ref(), &x_vp),
        ("ddim:eta=0", "ddim", logsnr, vp.as_ref(), &x_vp),
        ("euler-ancestral:eta=0", "ddim", logsnr, vp.as_ref(), &x_vp),
        (
            "dpmpp-2s-ancestral:eta=0",
            "dpm-solver++:order=2,method=singlestep-fixed",
            logsnr,
            vp.as_ref(),
            &x_vp,
        ),
        (
            "sde-dpm-solver++:order=2,eta=0",
            "dpm-solver++:order=2,lower_order_final=false",
            logsnr,
            vp.as_ref(),
            &x_vp,
        ),
        (
            "sde-dpm-solver++:order=2,type=heun,eta=0",
            "dpm-solver++:order=2,type=taylor,lower_order_final=false",
            logsnr,
            vp.as_ref(),
            &x_vp,
        ),
        (
            "dpmpp-3m-sde:eta=0",
            "dpm-solver++:order=3,type=taylor,lower_order_final=false",
            logsnr,
            vp.as_ref(),
            &x_vp,
        ),
        ("edm", "heun", karras, edm.as_ref(), &x_edm),
        // DDPM's posterior = DDIM with eta = 1 = SDE-DPM-Solver++1, on one Brownian path.
        ("ddpm", "ddim:eta=1", uniform, vp.as_ref(), &x_vp),
        (
            "ddpm",
            "sde-dpm-solver++:order=1",
            uniform,
            vp.as_ref(),
            &x_vp,
        ),
        ("ddpm", "ddim:eta=1", karras, edm.as_ref(), &x_edm),
    ];
    for &(a, b, grid, s, x) in cases {
        let (ya, na) = run(&mixture, s, a, grid, x, 9);
        let (yb, nb) = run(&mixture, s, b, grid, x, 9);
        let d = max_rel(&ya, &yb);
        println!("{a} vs {b} on {grid}: {d:.1e}");
        assert!(d < 1e-11, "{a} vs {b} on {grid}: {d:e}");
        assert_eq!(na, nb, "{a} vs {b}");
    }
    // With noise the samplers differ from their deterministic parts, and one seed is one path.
    let (y1, _) = run(&mixture, vp.as_ref(), "euler-ancestral", logsnr, &x_vp, 9);
    let (y2, _) = run(&mixture, vp.as_ref(), "euler-ancestral", logsnr, &x_vp, 9);
    let (y3, _) = run(&mixture, vp.as_ref(), "euler-ancestral", logsnr, &x_vp, 10);
    let (yd, _) = run(&mixture, vp.as_ref(), "ddim", logsnr, &x_vp, 9);
    assert_eq!(y1, y2);
    assert!(max_rel(&y1, &y3) > 1e-2 && max_rel(&y1, &yd) > 1e-2);
}

fn small() -> pfode::study::sde::Config {
    let mut c = pfode::study::sde::Config::main();
    c.problems = vec!["gauss4".into()];
    c.steps = vec![16, 32, 64, 128];
    c.refine = 8;
    c.paths = 300;
    c.fp_samples = 4000;
    c.fp_steps = 256;
    c
}

fn slope(points: &[(f64, f64)]) -> f64 {
    let x: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
    let y: Vec<f64> = points.iter().map(|p| p.1.ln()).collect();
    -pfode::metrics::fit_line(&x, &y).unwrap().slope
}

/// Euler-Maruyama on the reverse SDE (additive noise): strong order 1 on one Brownian path
/// against a grid 8x finer, weak order 1 for the mean and the second moments (exact, from the
/// output law on Gaussian data), each within 0.3.
#[test]
fn euler_maruyama_has_strong_and_weak_order_one() {
    let c = small();
    let pts = pfode::study::sde::errors(&c, "gauss4", "euler-maruyama").unwrap();
    let get = |f: fn(&pfode::study::sde::Point) -> f64| -> Vec<(f64, f64)> {
        pts.iter().map(|p| (p.nfe as f64, f(p))).collect()
    };
    let strong = get(|p| p.strong.unwrap().value);
    let weak_mean = get(|p| p.weak_mean.unwrap().value);
    let weak_second = get(|p| p.weak_second.unwrap().value);
    println!("strong {strong:?}\nweak mean {weak_mean:?}\nweak second {weak_second:?}");
    for (what, v) in [
        ("strong", &strong),
        ("weak mean", &weak_mean),
        ("weak second", &weak_second),
    ] {
        let p = slope(v);
        println!("{what}: order {p:.3}");
        assert!((p - 1.0).abs() < 0.3, "{what}: order {p}");
    }
}

/// Every registered stochastic sampler (each variant of the registry that injects noise): its
/// exact output law on gauss4 converges to p_{t_end}: KL and W2 fall with the steps and reach
/// small values at 256 steps (KL < 2e-3, W2 < 0.05; the first-order samplers measure 1.4e-3 and
/// 0.033).
#[test]
fn every_stochastic_sampler_converges_in_law_on_gauss4() {
    let mut c = small();
    c.steps = vec![16, 64, 256];
    c.paths = 8;
    c.refine = 1;
    let s = schedule::parse(&c.schedule).unwrap();
    let gauss4 = problems::load("gauss4").unwrap();
    let mut failures = Vec::new();
    for entry in solver::SOLVERS {
        for &(opts, _) in entry.variants {
            let spec = if opts.is_empty() {
                entry.name.to_string()
            } else {
                format!("{}:{opts}", entry.name)
            };
            if !pfode::study::sde::is_stochastic(&spec, s.as_ref(), &gauss4).unwrap() {
                continue;
            }
            let pts = pfode::study::sde::errors(&c, "gauss4", &spec).unwrap();
            let kl: Vec<f64> = pts.iter().map(|p| p.kl.unwrap()).collect();
            let w2: Vec<f64> = pts.iter().map(|p| p.w2.unwrap()).collect();
            println!(
                "{spec:<40} KL {kl:?}  W2 {w2:?}",
                kl = kl.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>(),
                w2 = w2.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>()
            );
            // 4x the steps: KL ~ h^2 falls 16x and W2 ~ h 4x for a first-order sampler.
            let falls = kl.windows(2).all(|w| w[1] < w[0] / 4.0)
                && w2.windows(2).all(|w| w[1] < w[0] / 2.5);
            if !falls || kl[2] > 2e-3 || w2[2] > 0.05 {
                failures.push(format!("{spec}: KL {kl:?} W2 {w2:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fokker-Planck: at t = 0.5, 0.2 and 0.05, reverse-SDE samples and PF-ODE samples started from
/// p_T have the marginal p_t: their mean NLL under the exact p_t agrees with that of exact samples
/// within 4 combined standard errors, and their means and second moments lie within 4.5 standard
/// errors of the exact ones.
#[test]
fn reverse_sde_and_pf_ode_share_their_marginals() {
    let c = small();
    for problem in ["gauss4", "ring2d"] {
        let pts = pfode::study::sde::fokker_planck(&c, problem).unwrap();
        for t in &c.fp_times {
            let at: Vec<_> = pts.iter().filter(|p| p.t == Some(*t)).collect();
            let exact = at
                .iter()
                .find(|p| p.solver == "exact")
                .unwrap()
                .nll
                .unwrap();
            for p in &at {
                let nll = p.nll.unwrap();
                let z = (nll.value - exact.value) / (nll.se.powi(2) + exact.se.powi(2)).sqrt();
                println!(
                    "{problem} t={t} {:<5} NLL {:.4} +- {:.4} (z = {z:+.2}), moments max |z| {:.2}",
                    p.solver,
                    nll.value,
                    nll.se,
                    p.max_z.unwrap()
                );
                assert!(z.abs() < 4.0, "{problem} {t} {}: z = {z}", p.solver);
                assert!(p.max_z.unwrap() < 4.5, "{problem} {t} {}", p.solver);
            }
        }
    }
}
