//! Convergence orders, identities and exact NFE for every registered solver, against the
//! closed-form flow of the 4-D Gaussian (`gauss4`).

use pfode::grid::Grid;
use pfode::ndarray::Array2;
use pfode::solver::{self, Env, Model, SOLVERS};
use pfode::{problems, schedule, Counted, GaussianFlow, GaussianMixture, Schedule};

const SCHEDULES: [(&str, f64, f64); 3] = [
    ("vp-linear", 1.0, 1e-3),
    ("edm", 80.0, 0.002),
    ("flow", 0.99, 0.002),
];

fn grid_spec(kind: &str, steps: usize, s: &dyn Schedule, t0: f64, t1: f64) -> String {
    let rho = |t: f64| s.sigma(t) / s.alpha(t);
    let (name, extra) = kind.split_once(':').unwrap_or((kind, ""));
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    match name {
        "karras" | "exponential" => format!(
            "{name}:steps={steps},sigma_min={},sigma_max={}{extra}",
            rho(t1),
            rho(t0)
        ),
        _ => format!("{name}:steps={steps},t_start={t0},t_end={t1}{extra}"),
    }
}

struct Run {
    x: Array2<f64>,
    nfe: usize,
    expected_nfe: Option<usize>,
    declared: usize,
}

fn run(
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    solver: &str,
    grid: &str,
    x0: &Array2<f64>,
) -> Run {
    let grid = Grid::parse(grid, s).unwrap();
    let env = Env {
        schedule: s,
        mixture: Some(mixture),
        noise_seed: 0,
    };
    let mut built = solver::build(solver, &env).unwrap();
    let oracle = Counted::new(mixture);
    let model = Model::new(&oracle, s);
    let x = solver::integrate(built.solver.as_mut(), &model, &grid, x0.view()).unwrap();
    Run {
        x,
        nfe: oracle.nfe(),
        expected_nfe: built.solver.nfe(&grid, s),
        declared: built.solver.order(),
    }
}

fn exact(
    mixture: &GaussianMixture,
    s: &dyn Schedule,
    t0: f64,
    t1: f64,
    x0: &Array2<f64>,
) -> Array2<f64> {
    let mut out = Array2::zeros(x0.dim());
    GaussianFlow::new(mixture)
        .unwrap()
        .map(&s.level(t0), &s.level(t1), x0.view(), out.view_mut())
        .unwrap();
    out
}

fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Least-squares slope of -ln(err) against ln(n) over the last three points above the floor.
fn order_of(ns: &[usize], errs: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = ns
        .iter()
        .zip(errs)
        .filter(|(_, &e)| e > 1e-11)
        .map(|(&n, &e)| ((n as f64).ln(), -e.ln()))
        .collect();
    let pts = &pts[pts.len().saturating_sub(3)..];
    assert!(
        pts.len() >= 2,
        "too few points above the rounding floor: {errs:?}"
    );
    let m = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / m, sy / m);
    let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    num / den
}

/// Whether `spec` injects noise (the stochastic samplers).
fn stochastic(spec: &str) -> bool {
    let s = schedule::parse("vp-linear").unwrap();
    let gauss4 = problems::load("gauss4").unwrap();
    pfode::study::sde::is_stochastic(spec, s.as_ref(), &gauss4).unwrap()
}

#[test]
fn every_registered_solver_converges_at_its_declared_order_with_exact_nfe() {
    let mixture = problems::load("gauss4").unwrap();
    let ns: Vec<usize> = (0..7).map(|k| 12 * (1 << k) - 1).collect();
    let mut failures = Vec::new();
    for entry in SOLVERS {
        for &(opts, kind) in entry.variants {
            let spec = if opts.is_empty() {
                entry.name.to_string()
            } else {
                format!("{}:{opts}", entry.name)
            };
            if stochastic(&spec) {
                continue; // strong and weak orders: tests/sde.rs
            }
            let mut line = format!("{spec:<70} {kind:<16}");
            for &(sname, t0, t1) in &SCHEDULES {
                let s = schedule::parse(sname).unwrap();
                let x0 = mixture.sample_pt(32, &s.level(t0), 7);
                let truth = exact(&mixture, s.as_ref(), t0, t1, &x0);
                let mut errs = Vec::new();
                let mut declared = 0;
                for &n in &ns {
                    let g = grid_spec(kind, n, s.as_ref(), t0, t1);
                    let r = run(&mixture, s.as_ref(), &spec, &g, &x0);
                    assert_eq!(Some(r.nfe), r.expected_nfe, "{spec} on {g}");
                    errs.push(max_abs(&r.x, &truth));
                    declared = r.declared;
                }
                let p = order_of(&ns, &errs);
                line += &format!(
                    " {sname}: {p:.2} (declared {declared}, err {:.1e}..{:.1e})",
                    errs[0],
                    errs[ns.len() - 1]
                );
                if (p - declared as f64).abs() > 0.2 {
                    failures.push(format!("{spec} on {kind}/{sname}: measured {p:.2}, declared {declared}; errors {errs:?}"));
                }
            }
            println!("{line}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn first_order_methods_are_one_method() {
    // DDIM = DPM-Solver-1 = DPM-Solver++-1 = UniP-1 = DEIS-1 (each variant) = LMS-1 = iPNDM-1
    // (exponential Euler).
    let same = [
        "dpm-solver:order=1",
        "dpm-solver++:order=1",
        "unipc:order=1,corrector=none",
        "unipc:order=1,corrector=none,prediction=noise",
        "deis:order=1",
        "deis:order=1,variant=rhoab",
        "deis:order=1,variant=logrho",
        "lms:order=1",
        "ipndm:order=1",
        "dpm-solver:order=1,method=singlestep",
        "dpm-solver++:order=1,method=singlestep-fixed",
    ];
    let mut worst = 0.0f64;
    for problem in ["ring2d", "gauss4"] {
        let mixture = problems::load(problem).unwrap();
        for (sname, t0, t1) in SCHEDULES {
            let s = schedule::parse(sname).unwrap();
            let x0 = mixture.sample_pt(16, &s.level(t0), 3);
            for kind in ["logsnr", "karras", "time-uniform"] {
                let g = grid_spec(kind, 10, s.as_ref(), t0, t1);
                let ddim = run(&mixture, s.as_ref(), "ddim", &g, &x0);
                assert_eq!(ddim.nfe, 10);
                let scale = ddim.x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for spec in same {
                    let r = run(&mixture, s.as_ref(), spec, &g, &x0);
                    let d = max_abs(&r.x, &ddim.x) / scale;
                    worst = worst.max(d);
                    assert!(
                        d < 1e-12,
                        "{spec} vs ddim on {problem}/{sname}/{kind}: {d:e}"
                    );
                    assert_eq!(r.nfe, 10, "{spec}");
                }
            }
        }
    }
    println!("first-order identities: max relative difference {worst:.1e}");
}

#[test]
fn official_warmup_caps_multistep_order_three_at_two() {
    // Started at t = 0.3 on vp-linear, where the trajectory bends, the first-order first step of
    // the official warm-up shows: third-order multistep converges at order 2 with `warmup=lower`
    // and at order 3 with `warmup=singlestep`. The official third-order update itself is second
    // order (`third_order=official`).
    let mixture = problems::load("gauss4").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let (t0, t1) = (0.3, 1e-3);
    let x0 = mixture.sample_pt(32, &s.level(t0), 11);
    let truth = exact(&mixture, s.as_ref(), t0, t1, &x0);
    let ns: Vec<usize> = (0..7).map(|k| 12 * (1 << k) - 1).collect();
    let order = |spec: &str| {
        let errs: Vec<f64> = ns
            .iter()
            .map(|&n| {
                max_abs(
                    &run(
                        &mixture,
                        s.as_ref(),
                        spec,
                        &grid_spec("logsnr", n, s.as_ref(), t0, t1),
                        &x0,
                    )
                    .x,
                    &truth,
                )
            })
            .collect();
        order_of(&ns, &errs)
    };
    let lower = order("dpm-solver++:order=3,method=multistep,third_order=taylor,warmup=lower");
    let single =
        order("dpm-solver++:order=3,method=multistep,third_order=taylor,warmup=singlestep");
    let official = order("dpm-solver++:order=3,method=multistep,warmup=singlestep");
    println!("order 3 multistep from t = 0.3: warmup=lower {lower:.2}, warmup=singlestep {single:.2}, official update {official:.2}");
    assert!((lower - 2.0).abs() < 0.2, "{lower}");
    assert!((single - 3.0).abs() < 0.2, "{single}");
    assert!((official - 2.0).abs() < 0.2, "{official}");
}

#[test]
fn nfe_is_exact() {
    let mixture = problems::load("gauss4").unwrap();
    let s = schedule::parse("edm").unwrap();
    let x0 = mixture.sample_pt(4, &s.level(80.0), 1);
    let zero = "karras:steps=12,sigma_min=0.002,sigma_max=80,rho=7,zero=true";
    let plain = "logsnr:steps=12,t_start=80,t_end=0.002";
    for (spec, grid, nfe) in [
        ("euler", zero, 12),
        ("heun", zero, 23),
        ("heun", plain, 24),
        ("rk4", plain, 48),
        ("dpm2", zero, 23),
        ("dpm-solver++:order=2,method=multistep", zero, 12),
        (
            "dpm-solver++:order=3,method=multistep,warmup=singlestep",
            plain,
            16,
        ),
        ("dpm-solver++:order=2,method=singlestep-fixed", zero, 23),
        ("dpm-solver:order=3,method=singlestep-fixed", plain, 36),
        ("dpm-solver:order=3,method=singlestep", plain, 12),
        (
            "dpm-solver:order=3,method=singlestep",
            "logsnr:steps=13,t_start=80,t_end=0.002",
            13,
        ),
        ("unipc:order=3", zero, 12),
        ("lms:order=4", zero, 12),
        ("exact", plain, 0),
        ("euler-maruyama", plain, 12),
        ("ddpm", zero, 12),
        ("sde-dpm-solver++", zero, 12),
        ("dpmpp-3m-sde", zero, 12),
        ("euler-ancestral", zero, 12),
        ("dpmpp-2s-ancestral", zero, 23),
        ("dpmpp-2s-ancestral", plain, 24),
        ("edm:s_churn=40", zero, 23),
        ("edm:s_churn=40", plain, 24),
    ] {
        let r = run(&mixture, s.as_ref(), spec, grid, &x0);
        assert_eq!(
            (r.nfe, r.expected_nfe),
            (nfe, Some(nfe)),
            "{spec} on {grid}"
        );
    }
}

#[test]
fn every_solver_takes_the_final_step_to_sigma_zero() {
    // A karras grid with zero=true ends at sigma = 0 (lambda = +inf) on edm, vp-linear and flow.
    // Every solver returns finite values there, and doubling the steps (24 -> 48) shrinks the error
    // against the exact flow by at least 1.8x.
    let mixture = problems::load("gauss4").unwrap();
    for (sname, t0, _) in SCHEDULES {
        let s = schedule::parse(sname).unwrap();
        let rho0 = s.sigma(t0) / s.alpha(t0);
        let spec =
            |n: usize| format!("karras:steps={n},sigma_min=0.002,sigma_max={rho0},zero=true");
        let grid = Grid::parse(&spec(24), s.as_ref()).unwrap();
        let (ts, te) = (grid.times[0], *grid.times.last().unwrap());
        assert_eq!(s.sigma(te), 0.0);
        let x0 = mixture.sample_pt(16, &s.level(ts), 5);
        let truth = exact(&mixture, s.as_ref(), ts, te, &x0);
        // Stochastic samplers end at sigma = 0 too, but are compared with the flow in law
        // (tests/sde.rs).
        for entry in SOLVERS
            .iter()
            .filter(|e| e.name != "dpm-adaptive" && !stochastic(e.name))
        {
            let e: Vec<f64> = [24, 48]
                .iter()
                .map(|&n| {
                    max_abs(
                        &run(&mixture, s.as_ref(), entry.name, &spec(n), &x0).x,
                        &truth,
                    )
                })
                .collect();
            assert!(
                e[1].is_finite() && (e[1] < e[0] / 1.8 || e[1] < 1e-11),
                "{} on {sname}: {e:?}",
                entry.name
            );
        }
    }
}

#[test]
fn dpm_adaptive_meets_tighter_tolerances_with_more_evaluations() {
    let mixture = problems::load("gauss4").unwrap();
    for (sname, t0, t1) in SCHEDULES {
        let s = schedule::parse(sname).unwrap();
        let x0 = mixture.sample_pt(16, &s.level(t0), 9);
        let truth = exact(&mixture, s.as_ref(), t0, t1, &x0);
        let g = grid_spec("logsnr", 1, s.as_ref(), t0, t1);
        for ctl in ["official", "pid"] {
            for order in [2, 3] {
                let mut last = (f64::INFINITY, 0);
                for tol in [1e-3, 1e-5, 1e-7] {
                    let spec = format!(
                        "dpm-adaptive:order={order},controller={ctl},rtol={tol},atol={tol}"
                    );
                    let r = run(&mixture, s.as_ref(), &spec, &g, &x0);
                    let e = max_abs(&r.x, &truth);
                    println!("{spec} on {sname}: error {e:.2e}, nfe {}", r.nfe);
                    assert_eq!(r.nfe % order, 0);
                    assert!(
                        e < last.0 && r.nfe > last.1,
                        "{spec} on {sname}: {e:e} after {last:?}"
                    );
                    assert!(e < 20.0 * tol, "{spec} on {sname}: {e:e}");
                    last = (e, r.nfe);
                }
            }
        }
    }
}

#[test]
fn reference_matches_the_closed_form() {
    let mixture = problems::load("gauss4").unwrap();
    for (sname, t0, t1) in SCHEDULES {
        let s = schedule::parse(sname).unwrap();
        let x0 = mixture.sample_pt(32, &s.level(t0), 13);
        let truth = exact(&mixture, s.as_ref(), t0, t1, &x0);
        let g = grid_spec("logsnr", 4, s.as_ref(), t0, t1);
        let r = run(&mixture, s.as_ref(), "reference", &g, &x0);
        let e = max_abs(&r.x, &truth);
        println!("reference on {sname}: max error {e:.1e}, nfe {}", r.nfe);
        assert!(e < 1e-11, "{sname}: {e:e}");
        // Down to sigma = 0 (the last step in sigma/alpha).
        let rho0 = s.sigma(t0) / s.alpha(t0);
        let g = format!("karras:steps=4,sigma_min=0.01,sigma_max={rho0},zero=true");
        let grid = Grid::parse(&g, s.as_ref()).unwrap();
        let te = *grid.times.last().unwrap();
        let truth = exact(&mixture, s.as_ref(), grid.times[0], te, &x0);
        let e = max_abs(&run(&mixture, s.as_ref(), "reference", &g, &x0).x, &truth);
        println!("reference to sigma = 0 on {sname}: max error {e:.1e}");
        assert!(e < 1e-11, "{sname} to sigma = 0: {e:e}");
    }
}

#[test]
fn a_file_grid_is_the_grid_it_lists() {
    let s = schedule::parse("vp-linear").unwrap();
    let g = Grid::parse("logsnr:steps=7", s.as_ref()).unwrap();
    let path = std::env::temp_dir().join(format!("pfode-grid-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&g.times).unwrap()).unwrap();
    let f = Grid::parse(&format!("file:{}", path.display()), s.as_ref()).unwrap();
    assert_eq!(f.times, g.times);
    assert_eq!(f.kind, pfode::grid::Kind::File);
    // Singlestep inner points on a file grid are uniform in lambda, as on a logsnr grid.
    let mixture = problems::load("ring2d").unwrap();
    let x0 = mixture.sample_pt(8, &s.level(1.0), 2);
    let spec = "dpm-solver++:order=3,method=singlestep-fixed";
    let a = run(&mixture, s.as_ref(), spec, "logsnr:steps=7", &x0);
    let b = run(
        &mixture,
        s.as_ref(),
        spec,
        &format!("file:{}", path.display()),
        &x0,
    );
    assert!(max_abs(&a.x, &b.x) < 1e-13);
    for bad in [
        "[1.0]",
        "[1.0, 0.5, 0.5]",
        "[2.0, 0.5]",
        "{\"times\": 1}",
        "[1.0, NaN]",
    ] {
        std::fs::write(&path, bad).unwrap();
        let e = Grid::parse(&format!("file:{}", path.display()), s.as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
    let _ = std::fs::remove_file(&path);
}
