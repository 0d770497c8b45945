//! Per-step overhead of every solver's own arithmetic: the solvers on an oracle that costs nothing
//! ([`pfode::oracle::Free`]), N = 2e4 points in d = 16 on a 20-step logSNR grid, vp-linear; each
//! iteration builds the solver and runs `integrate`, buffer set-up included. Compare with the
//! oracle bench at (16, 5, 2e4); `bench_oracle` records the steady-state ratio per evaluation.
//! `cargo bench --bench solvers`.

use criterion::{criterion_group, Criterion};
use pfode::grid::Grid;
use pfode::ndarray::Array2;
use pfode::oracle::Free;
use pfode::schedule;
use pfode::solver::{self, Env, Model};

pub const SPECS: [&str; 12] = [
    "euler",
    "heun",
    "rk4",
    "ddim",
    "dpm-solver:order=2,method=singlestep",
    "dpm-solver:order=3,method=singlestep",
    "dpm-solver++:order=2",
    "dpm-solver++:order=3",
    "deis",
    "ipndm",
    "unipc",
    "lms",
];

fn solvers(c: &mut Criterion) {
    let s = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse("logsnr:steps=20", s.as_ref()).unwrap();
    let oracle = Free(16);
    let model = Model::new(&oracle, s.as_ref());
    let x = Array2::from_shape_fn((20_000, 16), |(i, j)| {
        ((i * 31 + j * 7) % 97) as f64 / 97.0 - 0.5
    });
    let env = Env {
        schedule: s.as_ref(),
        mixture: None,
        noise_seed: 0,
    };
    let mut group = c.benchmark_group("solver_step_overhead");
    group.sample_size(10);
    for spec in SPECS {
        group.bench_function(spec, |b| {
            b.iter(|| {
                let mut built = solver::build(spec, &env).unwrap();
                solver::integrate(built.solver.as_mut(), &model, &grid, x.view()).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, solvers);

/// criterion's main, after a line naming the machine the figures come from.
fn main() {
    println!("machine: {}", pfode::io::machine());
    benches();
    Criterion::default().configure_from_args().final_summary();
}
