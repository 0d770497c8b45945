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
