//! Conditional mixtures, the exact classifier and the guided oracles: every rule against values
//! computed by hand from its formula, the cross-space equivalence of CFG, s = 1 and outside the
//! window bit for bit equal to conditional sampling, exact counts, and one-line errors.

use pfode::grid::Grid;
use pfode::guidance::{Classifier, Guidance};
use pfode::ndarray::{array, Array2};
use pfode::solver::{self, Env, Model};
use pfode::{problems, schedule, Counted, GaussianMixture, NoiseLevel, Oracle, Prediction};
use std::process::Command;

fn points() -> Array2<f64> {
    array![[0.3, -0.2], [1.1, 0.9], [-1.4, 0.2], [2.0, -1.5]]
}

fn predict(o: &dyn Oracle, kind: Prediction, x: &Array2<f64>, at: &NoiseLevel) -> Array2<f64> {
    let mut out = Array2::zeros(x.dim());
    o.predict(kind, x.view(), at, out.view_mut()).unwrap();
    out
}

fn level(t: f64) -> NoiseLevel {
    schedule::parse("vp-linear").unwrap().level(t)
}

#[test]
fn conditional_mixtures_and_their_errors() {
    let ring = problems::load("ring2d").unwrap();
    assert_eq!(ring.classes(), ["A", "B"]);
    let a = ring.conditional("A").unwrap();
    assert_eq!(a.weights(), [0.25; 4]);
    assert_eq!(a.mean(1).to_vec(), ring.mean(2).to_vec());
    assert_eq!(ring.class_weight("B").unwrap(), 0.5);
    let e = ring.conditional("C").unwrap_err().to_string();
    assert_eq!(e, "unknown class 'C' (valid: A, B)");
    let e = problems::load("gauss4")
        .unwrap()
        .conditional("A")
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no labels"), "{e}");
    let mut spec = problems::builtin("gauss2c").unwrap();
    spec.weights = vec![1.0, 0.0];
    let m = GaussianMixture::new(spec, "mem").unwrap();
    let e = m.conditional("B").unwrap_err().to_string();
    assert!(e.contains("total weight 0"), "{e}");
    let tree = problems::load("edm2_tree2d").unwrap();
    assert_eq!(
        (tree.n_components(), tree.classes()),
        (2032, vec!["A".to_string(), "B".into()])
    );
    // Labels of the wrong length are a one-line error naming the field.
    let mut bad = problems::builtin("ring2d").unwrap();
    bad.labels.pop();
    let e = GaussianMixture::new(bad, "f.json").unwrap_err().to_string();
    assert!(
        e.contains("labels") && e.contains("expected 8 entries"),
        "{e}"
    );
}

#[test]
fn the_classifier_is_bayes_and_its_gradient_matches_finite_differences() {
    let m = problems::load("gauss2c").unwrap();
    let x = points();
    for t in [0.05, 0.4, 0.9] {
        let at = level(t);
        let (ca, cb) = (
            Classifier::new(&m, "A").unwrap(),
            Classifier::new(&m, "B").unwrap(),
        );
        let (la, lb) = (
            ca.log_prob(x.view(), &at).unwrap(),
            cb.log_prob(x.view(), &at).unwrap(),
        );
        for (a, b) in la.iter().zip(&lb) {
            assert!((a.exp() + b.exp() - 1.0).abs() < 1e-13, "{a} {b}");
        }
        let mut g = Array2::zeros(x.dim());
        ca.grad(x.view(), &at, g.view_mut()).unwrap();
        let h = 1e-5;
        for i in 0..x.nrows() {
            for j in 0..2 {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[[i, j]] += h;
                xm[[i, j]] -= h;
                let fd = (ca.log_prob(xp.view(), &at).unwrap()[i]
                    - ca.log_prob(xm.view(), &at).unwrap()[i])
                    / (2.0 * h);
                assert!(
                    (fd - g[[i, j]]).abs() < 1e-7 * (1.0 + fd.abs()),
                    "t {t}: {fd} vs {}",
                    g[[i, j]]
                );
            }
        }
    }
}

/// E[x0 | x_t] for one Gaussian N(mu, C): mu + alpha C (alpha^2 C + sigma^2 I)^-1 (x - alpha mu),
/// by hand for d = 2.
fn gaussian_x0(mu: [f64; 2], c: [[f64; 2]; 2], at: &NoiseLevel, x: [f64; 2]) -> [f64; 2] {
    let (a, s2) = (at.alpha, at.sigma * at.sigma);
    let m = [
        [a * a * c[0][0] + s2, a * a * c[0][1]],
        [a * a * c[1][0], a * a * c[1][1] + s2],
    ];
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let inv = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let r = [x[0] - a * mu[0], x[1] - a * mu[1]];
    let y = [
        inv[0][0] * r[0] + inv[0][1] * r[1],
        inv[1][0] * r[0] + inv[1][1] * r[1],
    ];
    [
        mu[0] + a * (c[0][0] * y[0] + c[0][1] * y[1]),
        mu[1] + a * (c[1][0] * y[0] + c[1][1] * y[1]),
    ]
}

#[test]
fn cfg_apg_cfg_zero_and_classifier_against_their_formulas() {
    let m = problems::load("gauss2c").unwrap();
    let x = points();
    let at = level(0.3);
    let (mu_b, c_b) = ([-1.0, -1.0], [[0.3, -0.1], [-0.1, 0.6]]);
    let (mu_a, c_a) = ([1.5, 0.5], [[0.5, 0.2], [0.2, 0.3]]);
    // cfg with the other class as the guide: x0 = g + s (c - g), each a closed-form Gaussian mean.
    let g = Guidance::parse("cfg:scale=3,guide=B,space=x0").unwrap();
    let guided = g.build(&m, "A", None).unwrap();
    let got = predict(&guided, Prediction::X0, &x, &at);
    for i in 0..x.nrows() {
        let xi = [x[[i, 0]], x[[i, 1]]];
        let (c, gd) = (
            gaussian_x0(mu_a, c_a, &at, xi),
            gaussian_x0(mu_b, c_b, &at, xi),
        );
        for j in 0..2 {
            let want = gd[j] + 3.0 * (c[j] - gd[j]);
            assert!(
                (got[[i, j]] - want).abs() < 1e-12,
                "{} vs {want}",
                got[[i, j]]
            );
        }
    }
    assert_eq!(guided.counts().oracle_calls, 2);

    let (cond, full) = (m.conditional("A").unwrap(), &m);
    let c0 = predict(&cond, Prediction::X0, &x, &at);
    let u0 = predict(full, Prediction::X0, &x, &at);
    // APG in x0 space: D = c - u, clipped to norm r, split along c; c + (s - 1)(D_orth + eta D_par).
    let apg = Guidance::parse("apg:scale=4,eta=0.25,threshold=0.5").unwrap();
    let got = predict(&apg.build(&m, "A", None).unwrap(), Prediction::X0, &x, &at);
    for i in 0..x.nrows() {
        let mut dv = [c0[[i, 0]] - u0[[i, 0]], c0[[i, 1]] - u0[[i, 1]]];
        let n = dv[0].hypot(dv[1]);
        let f = (0.5 / n).min(1.0);
        dv = [dv[0] * f, dv[1] * f];
        let cn = c0[[i, 0]].hypot(c0[[i, 1]]);
        let v1 = [c0[[i, 0]] / cn, c0[[i, 1]] / cn];
        let p = dv[0] * v1[0] + dv[1] * v1[1];
        for j in 0..2 {
            let want = c0[[i, j]] + 3.0 * ((dv[j] - p * v1[j]) + 0.25 * p * v1[j]);
            assert!(
                (got[[i, j]] - want).abs() < 1e-13,
                "apg {} vs {want}",
                got[[i, j]]
            );
        }
    }
    // CFG-Zero* in velocity space, after its zero-init evaluation.
    let cz = Guidance::parse("cfg-zero:scale=2.5,zero_init=1").unwrap();
    let cz = cz.build(&m, "A", None).unwrap();
    let first = predict(&cz, Prediction::Velocity, &x, &at);
    assert!(first.iter().all(|&v| v == 0.0));
    let got = predict(&cz, Prediction::Velocity, &x, &at);
    let cv = predict(&cond, Prediction::Velocity, &x, &at);
    let uv = predict(full, Prediction::Velocity, &x, &at);
    for i in 0..x.nrows() {
        let dot = cv[[i, 0]] * uv[[i, 0]] + cv[[i, 1]] * uv[[i, 1]];
        let a = dot / (uv[[i, 0]].powi(2) + uv[[i, 1]].powi(2) + 1e-8);
        for j in 0..2 {
            let want = a * uv[[i, j]] + 2.5 * (cv[[i, j]] - a * uv[[i, j]]);
            assert!(
                (got[[i, j]] - want).abs() < 1e-12,
                "cfg-zero {} vs {want}",
                got[[i, j]]
            );
        }
    }
    assert_eq!(cz.counts().evaluations, 2);
    assert_eq!(cz.counts().oracle_calls, 2);
    // Classifier guidance at s = 1 is the conditional model: eps_u - sigma grad ln p(c|x) = eps_c.
    let cl = Guidance::parse("classifier:scale=1")
        .unwrap()
        .build(&m, "A", None)
        .unwrap();
    let got = predict(&cl, Prediction::Eps, &x, &at);
    let want = predict(&cond, Prediction::Eps, &x, &at);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }
    let cl3 = Guidance::parse("classifier:scale=3")
        .unwrap()
        .build(&m, "A", None)
        .unwrap();
    let got = predict(&cl3, Prediction::Eps, &x, &at);
    let eu = predict(full, Prediction::Eps, &x, &at);
    let mut grad = Array2::zeros(x.dim());
    Classifier::new(&m, "A")
        .unwrap()
        .grad(x.view(), &at, grad.view_mut())
        .unwrap();
    for ((g, u), d) in got.iter().zip(&eu).zip(&grad) {
        assert!((g - (u - 3.0 * at.sigma * d)).abs() < 1e-13);
    }
}

/// `solver` with oracle `o` on `schedule` over `grid` from `x`: the output and the NFE.
fn run_on(
    o: &dyn Oracle,
    schedule: &str,
    grid: &str,
    solver: &str,
    x: &Array2<f64>,
) -> (Array2<f64>, usize) {
    let s = schedule::parse(schedule).unwrap();
    let grid = Grid::parse(grid, s.as_ref()).unwrap();
    let env = Env {
        schedule: s.as_ref(),
        mixture: None,
        noise_seed: 0,
    };
    let counted = Counted::new(o);
    let model = Model::new(&counted, s.as_ref());
    let mut built = solver::build(solver, &env).unwrap();
    (
        solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap(),
        counted.nfe(),
    )
}

/// `solver` on vp-linear over `steps` logSNR steps from 16 draws of gauss2c's p_1.
fn run_solver(o: &dyn Oracle, solver: &str, steps: usize) -> (Array2<f64>, usize) {
    let at = level(1.0);
    let x = problems::load("gauss2c")
        .unwrap()
        .sample(16, at.alpha, at.sigma, 3);
    let grid = format!("logsnr:steps={steps},t_start=1,t_end=0.001");
    run_on(o, "vp-linear", &grid, solver, &x)
}

#[test]
fn cfg_gives_the_same_sampler_in_every_prediction_space() {
    let m = problems::load("gauss2c").unwrap();
    for solver in ["ddim", "dpm-solver++:order=2", "heun"] {
        let mut outs = Vec::new();
        for space in ["eps", "x0", "score", "v", "velocity"] {
            let g = Guidance::parse(&format!("cfg:scale=2.5,space={space}")).unwrap();
            let guided = g.build(&m, "A", None).unwrap();
            let (x, nfe) = run_solver(&guided, solver, 12);
            let counts = guided.counts();
            assert_eq!(counts.evaluations, nfe);
            assert_eq!((counts.guided, counts.oracle_calls), (nfe, 2 * nfe));
            outs.push(x);
        }
        for o in &outs[1..] {
            let diff = (o - &outs[0])
                .mapv(f64::abs)
                .fold(0.0_f64, |a, &b| a.max(b));
            assert!(diff < 1e-11, "{solver}: {diff}");
        }
    }
}

#[test]
fn no_guidance_is_conditional_sampling_bit_for_bit() {
    let m = problems::load("gauss2c").unwrap();
    let cond = m.conditional("A").unwrap();
    for solver in ["ddim", "dpm-solver++:order=3", "unipc", "rk4"] {
        let (want, nfe) = run_solver(&cond, solver, 10);
        for spec in [
            "cfg:scale=1",
            "apg:scale=1,eta=0.5",
            "interval:scale=4,sigma_lo=1000,sigma_hi=2000",
            "cfg:scale=3,start=0,stop=0",
        ] {
            let g = Guidance::parse(spec).unwrap();
            let s = schedule::parse("vp-linear").unwrap();
            let grid = Grid::parse("logsnr:steps=10,t_start=1,t_end=0.001", s.as_ref()).unwrap();
            let guided = g.build(&m, "A", Some(&grid.times)).unwrap();
            let (got, n) = run_solver(&guided, solver, 10);
            assert_eq!(n, nfe);
            assert!(
                got == want,
                "{spec} with {solver} differs from conditional sampling"
            );
            assert_eq!(guided.counts().guided, 0);
            assert_eq!(guided.counts().oracle_calls, nfe);
        }
    }
}

#[test]
fn windows_guide_exactly_where_they_say() {
    let m = problems::load("gauss2c").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse("logsnr:steps=10,t_start=1,t_end=0.001", s.as_ref()).unwrap();
    // diffusers' fractions: steps floor(0.2 n) = 2 <= i < floor(0.7 n) = 7 are guided (DDIM: one
    // evaluation per step at t_i).
    let g = Guidance::parse("cfg:scale=3,start=0.2,stop=0.7").unwrap();
    let guided = g.build(&m, "A", Some(&grid.times)).unwrap();
    let (_, nfe) = run_solver(&guided, "ddim", 10);
    assert_eq!(nfe, 10);
    assert_eq!(guided.counts().guided, 5);
    assert_eq!(guided.counts().oracle_calls, 15);
    // In EDM sigma: the steps with lo < sigma_t / alpha_t <= hi.
    let (lo, hi) = (0.3, 2.0);
    let want = grid.times[..10]
        .iter()
        .filter(|&&t| {
            let l = s.level(t);
            lo < l.sigma / l.alpha && l.sigma / l.alpha <= hi
        })
        .count();
    assert!(want > 0 && want < 10);
    let g = Guidance::parse(&format!("interval:scale=3,sigma_lo={lo},sigma_hi={hi}")).unwrap();
    let guided = g.build(&m, "A", None).unwrap();
    run_solver(&guided, "ddim", 10);
    assert_eq!(guided.counts().guided, want);
}

#[test]
fn bad_guidance_specs_are_one_line_errors() {
    for (spec, needle) in [
        ("nope:scale=2", "unknown guidance method 'nope'"),
        ("cfg:scale=2,sigma_lo=0.1,start=0.2", "not both"),
        ("autoguidance:scale=2", "needs guide=FILE"),
        ("cfg:scale=2,bogus=1", "unknown option 'bogus'"),
        ("cfg:scale=2,space=noise", "unknown prediction type 'noise'"),
        ("cfg:scale=2,start=0.8,stop=0.2", "start <= stop"),
        (
            "interval:scale=2,sigma_lo=3,sigma_hi=1",
            "sigma_lo < sigma_hi",
        ),
        ("apg:threshold=-1", "negative"),
    ] {
        let e = Guidance::parse(spec).unwrap_err().to_string();
        assert!(e.contains(needle), "{spec}: {e}");
        assert_eq!(e.lines().count(), 1);
    }
    let m = problems::load("gauss2c").unwrap();
    let e = Guidance::parse("cfg:guide=C")
        .unwrap()
        .build(&m, "A", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown class 'C'"), "{e}");
    let e = Guidance::parse("cfg:start=0.1")
        .unwrap()
        .build(&m, "A", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the sampler's grid"), "{e}");
}

#[test]
fn sample_cli_takes_a_class_and_a_guidance() {
    let dir = std::env::temp_dir().join(format!("pfode-guid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("x.npy");
    let rec = dir.join("r.json");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sample"))
            .args([
                "--problem",
                "gauss2c",
                "--grid",
                "logsnr:steps=8",
                "--solver",
                "ddim",
            ])
            .args(["--init", "prior", "--n", "50", "--seed", "1"])
            .arg("--out")
            .arg(&out)
            .arg("--record")
            .arg(&rec)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--class",
        "A",
        "--guidance",
        "interval:scale=2,sigma_lo=0.5,sigma_hi=3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(r["class"], "A");
    assert_eq!(
        r["guidance"],
        "interval:scale=2,guide=uncond,sigma_lo=0.5,sigma_hi=3"
    );
    assert_eq!(r["nfe"], 8);
    let c = &r["guidance_counts"];
    assert_eq!(c["evaluations"], 8);
    assert_eq!(
        c["oracle_calls"].as_u64().unwrap(),
        8 + c["guided"].as_u64().unwrap()
    );
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&rec).unwrap();
    for (extra, needle) in [
        (vec!["--class", "Z"], "unknown class 'Z' (valid: A, B)"),
        (vec!["--guidance", "cfg:scale=2"], "needs --class"),
        (
            vec!["--class", "A", "--guidance", "cfg:scale=2,guide=Q"],
            "unknown class 'Q'",
        ),
        (
            vec!["--class", "A", "--guidance", "cfgg"],
            "unknown guidance method",
        ),
    ] {
        let o = run(&extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists() && !rec.exists());
    }
}

#[test]
fn the_tilted_law_and_the_guided_gaussian_law() {
    use pfode::metrics::law::GaussianLaw;
    use pfode::study::guidance::tilted;
    let m = problems::load("gauss2c").unwrap();
    let (a, b) = (m.conditional("A").unwrap(), m.conditional("B").unwrap());
    let la = GaussianLaw::marginal(a.component(0), 1.0, 0.0);
    let lb = GaussianLaw::marginal(b.component(0), 1.0, 0.0);
    // s = 1 is the class law, s = 0 the guide's; s = 3 is not normalizable here.
    assert!(tilted(&la, &lb, 1.0).unwrap().unwrap().w2(&la).unwrap() < 1e-12);
    assert!(tilted(&la, &lb, 0.0).unwrap().unwrap().w2(&lb).unwrap() < 1e-12);
    assert!(tilted(&la, &lb, 3.0).unwrap().is_none());
    // The tilted law at s = 1.5 by hand in 2-D: precision 1.5 P_A - 0.5 P_B.
    let inv = |c: [[f64; 2]; 2]| {
        let det = c[0][0] * c[1][1] - c[0][1] * c[1][0];
        [
            [c[1][1] / det, -c[0][1] / det],
            [-c[1][0] / det, c[0][0] / det],
        ]
    };
    let (pa, pb) = (
        inv([[0.5, 0.2], [0.2, 0.3]]),
        inv([[0.3, -0.1], [-0.1, 0.6]]),
    );
    let p = [
        [
            1.5 * pa[0][0] - 0.5 * pb[0][0],
            1.5 * pa[0][1] - 0.5 * pb[0][1],
        ],
        [
            1.5 * pa[1][0] - 0.5 * pb[1][0],
            1.5 * pa[1][1] - 0.5 * pb[1][1],
        ],
    ];
    let c = inv(p);
    let r = [
        1.5 * (pa[0][0] * 1.5 + pa[0][1] * 0.5) - 0.5 * (-pb[0][0] - pb[0][1]),
        1.5 * (pa[1][0] * 1.5 + pa[1][1] * 0.5) - 0.5 * (-pb[1][0] - pb[1][1]),
    ];
    let mean = [
        c[0][0] * r[0] + c[0][1] * r[1],
        c[1][0] * r[0] + c[1][1] * r[1],
    ];
    let t = tilted(&la, &lb, 1.5).unwrap().unwrap();
    for j in 0..2 {
        assert!(
            (t.mean[j] - mean[j]).abs() < 1e-12,
            "{} vs {}",
            t.mean[j],
            mean[j]
        );
        for (k, &ck) in c[j].iter().enumerate() {
            assert!((t.cov()[[j, k]] - ck).abs() < 1e-12);
        }
    }
}

#[test]
fn guided_gaussian_laws_converge_to_the_guided_ode_and_unguided_to_the_class() {
    use pfode::study::guidance::{Config, GuidanceStudy};
    use pfode::study::{Study, Unit};
    let config = Config {
        steps: vec![5, 10, 20, 40],
        solvers: vec!["dpm-solver++:order=2".into()],
        ..Config::main()
    };
    let unit = |key: &str| Unit {
        key: key.into(),
        group: key.into(),
    };
    let (_, pts) = GuidanceStudy
        .run(&config, &unit("gaussian|vp-linear|cfg|3"))
        .unwrap();
    let w2: Vec<f64> = pts.iter().map(|p| p.w2_limit.unwrap()).collect();
    // Second order: each halving of the step cuts the error to the guided ODE's law by > 2.5.
    for w in w2.windows(2) {
        assert!(w[1] < w[0] / 2.5, "{w2:?}");
    }
    assert!(pts
        .iter()
        .all(|p| p.oracle_calls == 2 * p.nfe && p.w2_tilted.is_none()));
    let (_, pts) = GuidanceStudy
        .run(&config, &unit("gaussian|vp-linear|cfg|1"))
        .unwrap();
    for p in &pts {
        // Unguided, the guided ODE is the class's own PF-ODE: its law is the class law.
        assert!(
            (p.w2_limit.unwrap() - p.w2_class.unwrap()).abs() < 1e-6,
            "{p:?}"
        );
        assert!((p.w2_class.unwrap() - p.w2_tilted.unwrap()).abs() < 1e-12);
        assert_eq!(p.oracle_calls, p.nfe);
    }
    assert!(pts.last().unwrap().w2_class.unwrap() < 0.01);
}

#[test]
fn exact_classifier_guidance_is_cfg_with_the_unconditional_guide() {
    // eps_u - s sigma (score_c - score_u) = eps_u + s (eps_c - eps_u): Bayes, with exact models.
    let m = problems::load("ring2d").unwrap();
    let x = points();
    for t in [0.1, 0.5] {
        let at = level(t);
        let cl = Guidance::parse("classifier:scale=3")
            .unwrap()
            .build(&m, "A", None)
            .unwrap();
        let cfg = Guidance::parse("cfg:scale=3")
            .unwrap()
            .build(&m, "A", None)
            .unwrap();
        let (a, b) = (
            predict(&cl, Prediction::Eps, &x, &at),
            predict(&cfg, Prediction::Eps, &x, &at),
        );
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-11 * (1.0 + b.abs()), "t {t}: {a} vs {b}");
        }
    }
}

/// CFG++ (Chung et al. 2024): with cond = guide it is DDIM / DPM-Solver++(2M) itself, scale 0 is
/// unconditional sampling, one step matches its formula by hand (DDIM form; the official 2M
/// update in k-diffusion's VE variables), every evaluation costs two oracle calls, and a solver
/// that does not implement it refuses it.
#[test]
fn cfgpp_reduces_to_its_solvers_and_matches_its_formulas() {
    let m = problems::load("gauss2c").unwrap();
    let cond = m.conditional("A").unwrap();
    let rel = |a: &Array2<f64>, b: &Array2<f64>| {
        let scale = b.iter().fold(1.0f64, |s, v| s.max(v.abs()));
        (a - b).mapv(f64::abs).fold(0.0f64, |x, &y| x.max(y)) / scale
    };
    for solver in [
        "ddim",
        "ddim:eta=1",
        "dpm-solver++:order=2",
        "dpm-solver++:order=1",
    ] {
        for steps in [6, 12] {
            let (want, nfe) = run_solver(&cond, solver, steps);
            let same = Guidance::parse("cfg++:scale=0.6,guide=A").unwrap();
            let guided = same.build(&m, "A", None).unwrap();
            let (got, n) = run_solver(&guided, solver, steps);
            assert_eq!(n, nfe);
            assert_eq!(guided.counts().oracle_calls, 2 * nfe);
            assert!(
                rel(&got, &want) < 1e-12,
                "{solver} {steps}: {}",
                rel(&got, &want)
            );
            let (uncond, _) = run_solver(&m, solver, steps);
            let zero = Guidance::parse("cfg++:scale=0").unwrap();
            let (got, _) = run_solver(&zero.build(&m, "A", None).unwrap(), solver, steps);
            assert!(rel(&got, &uncond) < 1e-12, "{solver} {steps} scale 0");
        }
    }
    // Two steps by hand from x at t = 1 -> 0.6 -> 0.2, scale 0.7 (class A, unconditional guide).
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse("time-uniform:steps=2,t_start=1,t_end=0.2", s.as_ref()).unwrap();
    let ts = grid.times.clone();
    let x = points();
    let x0 = |o: &dyn Oracle, x: &Array2<f64>, t: f64| predict(o, Prediction::X0, x, &s.level(t));
    let lam = |t: f64| s.lambda(t);
    let l = 0.7;
    let pair = |x: &Array2<f64>, t: f64| {
        let (c, u) = (x0(&cond, x, t), x0(&m, x, t));
        (&u + &((&c - &u) * l), u)
    };
    let env = Env {
        schedule: s.as_ref(),
        mixture: None,
        noise_seed: 0,
    };
    let g = Guidance::parse("cfg++:scale=0.7").unwrap();
    for solver in ["ddim", "dpm-solver++:order=2,lower_order_final=false"] {
        let guided = g.build(&m, "A", None).unwrap();
        let model = Model::new(&guided, s.as_ref());
        let mut built = solver::build(solver, &env).unwrap();
        let got = solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap();
        // Step 1 (both): DDIM CFG++, x1 = alpha_t x0_g + sigma_t (x - alpha_s x0_u) / sigma_s.
        let (a0, a1, a2) = (s.level(ts[0]), s.level(ts[1]), s.level(ts[2]));
        let (g0, u0) = pair(&x, ts[0]);
        let x1 = &g0 * a1.alpha + &((&x - &(&u0 * a0.alpha)) * (a1.sigma / a0.sigma));
        let (g1, u1) = pair(&x1, ts[1]);
        let want = if solver == "ddim" {
            &g1 * a2.alpha + &((&x1 - &(&u1 * a1.alpha)) * (a2.sigma / a1.sigma))
        } else {
            // Official dpm++_2m_cfg++ in VE variables x/alpha, sigma/alpha, t = -ln(sigma/alpha):
            // x = D_g - e^{-h} D_u - expm1(-h) (D_g - D_u_prev) / (2r) + e^{-h} x.
            let (h, h_last) = (lam(ts[2]) - lam(ts[1]), lam(ts[1]) - lam(ts[0]));
            let r = h_last / h;
            let xve = &x1 / a1.alpha;
            let e = (-h).exp();
            let out = &g1 - &(&u1 * e) - &((&g1 - &u0) * ((-h).exp_m1() / (2.0 * r))) + &(&xve * e);
            out * a2.alpha
        };
        assert!(rel(&got, &want) < 1e-13, "{solver}: {}", rel(&got, &want));
    }
    for bad in [
        "heun",
        "ddpm",
        "dpm-solver++:order=3",
        "unipc",
        "dpm-solver++:order=2,type=taylor",
    ] {
        let guided = g.build(&m, "A", None).unwrap();
        let model = Model::new(&guided, s.as_ref());
        let mut built = solver::build(bad, &env).unwrap();
        let e = solver::integrate(built.solver.as_mut(), &model, &grid, x.view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cfg++") && e.contains("only ddim"), "{bad}: {e}");
    }
}

/// Fidelity to EDM2's `toy_example.py` `do_sample` (Karras et al. 2024), recorded in float64 on
/// the tree's exact class model (`tests/fixtures/edm2_toy.json`): CFG at s = 1, 2.5, 4 with the
/// unconditional guide and autoguidance at s = 3 with class A's covariances doubled, by `heun` on
/// `edm` with 32 Karras steps ending at sigma = 0, to 1e-10 max-abs with 63 guided evaluations.
#[test]
fn guided_heun_reproduces_the_edm2_toy_sampler() {
    use pfode::guidance::{Guide, Guided};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/edm2_toy.json"
    ))
    .unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let matrix = |v: &serde_json::Value| {
        let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
        Array2::from_shape_fn((rows.len(), 2), |(i, j)| rows[i][j])
    };
    let x0 = matrix(&fx["init"]);
    let tree = problems::load("edm2_tree2d").unwrap();
    let class = tree.conditional("A").unwrap();
    let weak = pfode::study::guidance::degraded(&class, 2.0).unwrap();
    let grid = "karras:steps=32,sigma_min=0.002,sigma_max=5,rho=7,zero=true";
    let mut worst = 0.0f64;
    for c in fx["cases"].as_array().unwrap() {
        let scale = c["scale"].as_f64().unwrap();
        let guided = if c["guidance"] == "cfg" {
            Guidance::parse(&format!("cfg:scale={scale}"))
                .unwrap()
                .build(&tree, "A", None)
                .unwrap()
        } else {
            let g =
                Guidance::parse(&format!("autoguidance:scale={scale},guide=weak.json")).unwrap();
            Guided::new(
                Box::new(class.clone()),
                Guide::Oracle(Box::new(weak.clone())),
                &g,
                None,
            )
            .unwrap()
        };
        let (x, nfe) = run_on(&guided, "edm", grid, "heun", &x0);
        let d = (&x - &matrix(&c["out"]))
            .mapv(f64::abs)
            .fold(0.0f64, |m, &v| m.max(v));
        worst = worst.max(d);
        assert!(d < 1e-10, "{} s = {scale}: {d:e}", c["guidance"]);
        assert_eq!(nfe, 63);
        let calls = if scale == 1.0 { 63 } else { 126 };
        assert_eq!(guided.counts().oracle_calls, calls);
    }
    println!("EDM2 toy do_sample: max-abs difference {worst:.1e}");
}
