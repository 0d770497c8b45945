//! The work-precision study: every solver of the main study on aniso16 (vp-linear, logSNR grid,
//! 20000 samples), error against the reference solver vs NFE and vs wall time. Writes
//! `results/nfe_error.json` (a convergence document with `wall_s` per point; draw it with
//! `cargo run --release --bin plot -- results/nfe_error.json`), then times each solver at
//! 20 steps with criterion. `cargo bench --bench nfe_error`.

use criterion::Criterion;
use pfode::grid::Grid;
use pfode::solver::{self, Env, Model};
use pfode::study::convergence::{self, Config, Convergence, MAIN_SOLVERS};
use pfode::{problems, schedule, Counted};
use std::path::Path;

fn main() {
    println!("machine: {}", pfode::io::machine());
    let config = Config {
        problems: vec!["aniso16".into()],
        schedules: vec!["vp-linear".into()],
        grids: vec!["logsnr".into()],
        samples: 20_000,
        timing: true,
        distribution: false,
        ..Config::main()
    };
    let out = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/results/nfe_error.json"
    ));
    let doc = pfode::study::run(
        &Convergence::default(),
        &config,
        config.seed,
        out,
        None,
        false,
    )
    .expect("work-precision study");
    for fit in &doc.summary.fits {
        let pts: Vec<_> = doc
            .points
            .iter()
            .filter(|p| p.solver == fit.solver)
            .collect();
        let at = |n: usize| {
            pts.iter()
                .find(|p| p.nfe_target == n)
                .map(|p| (p.err_rms, p.wall_s.unwrap_or(0.0)))
        };
        println!(
            "{:42} NFE 10: {:?}  NFE 50: {:?}",
            fit.solver,
            at(10),
            at(50)
        );
    }
    println!("wrote {}", out.display());

    let mixture = problems::load("aniso16").unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse(
        &convergence::grid_spec("logsnr", 20, s.as_ref()),
        s.as_ref(),
    )
    .unwrap();
    let at = s.level(grid.times[0]);
    let x = mixture.sample(20_000, at.alpha, at.sigma, 1);
    let env = Env {
        schedule: s.as_ref(),
        mixture: Some(&mixture),
        noise_seed: 0,
    };
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut group = c.benchmark_group("aniso16_20_steps");
    for spec in MAIN_SOLVERS {
        group.bench_function(spec, |b| {
            b.iter(|| {
                let mut built = solver::build(spec, &env).unwrap();
                let oracle = Counted::new(&mixture);
                let model = Model::new(&oracle, s.as_ref());
                solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap()
            })
        });
    }
    group.finish();
    c.final_summary();
}
