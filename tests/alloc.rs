//! No allocation in the step loop: a counting global allocator checks that, after the warm-up
//! steps (which size the solver's buffers and fill its history), the remaining steps of every
//! registered fixed-grid solver allocate nothing, oracle included; and that the memory a whole
//! run holds at its peak is a few batch arrays. Like [`solver::integrate`], the loop runs on a
//! worker of the thread pool (a call from outside the pool goes through rayon's global queue,
//! which allocates a block every 63 parallel jobs).
//!
//! One test function: the counters are process-wide, so nothing else may run beside it.

use pfode::grid::Grid;
use pfode::ndarray::Array2;
use pfode::solver::{self, Env, Model, SOLVERS};
use pfode::{problems, schedule};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, SeqCst) + bytes;
    PEAK.fetch_max(live, SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, SeqCst);
        grow(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), SeqCst);
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, SeqCst);
        grow(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, SeqCst);
        LIVE.fetch_sub(layout.size(), SeqCst);
        grow(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Steps before the count starts: enough for the longest history (order 4) and warm-up.
const WARM: usize = 5;
const STEPS: usize = 14;

#[test]
fn the_step_loop_allocates_nothing() {
    let s = schedule::parse("vp-linear").unwrap();
    let grids = [
        format!("logsnr:steps={STEPS},t_start=1,t_end=0.001"),
        format!("time-uniform:steps={STEPS},t_start=1,t_end=0"),
    ];
    let mut report = Vec::new();
    for problem in ["aniso16", "gauss4"] {
        let mixture = problems::load(problem).unwrap();
        let n = 4096;
        let x0 = mixture.sample(n, s.alpha(1.0), s.sigma(1.0), 7);
        let array = n * x0.ncols() * 8;
        let env = Env {
            schedule: s.as_ref(),
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let model = Model::new(&mixture, s.as_ref());
        // Start the thread pool and the threads' scratch before measuring.
        let mut euler = solver::build("euler", &env).unwrap().solver;
        let grid = Grid::parse(&grids[0], s.as_ref()).unwrap();
        solver::integrate(euler.as_mut(), &model, &grid, x0.view()).unwrap();
        // `exact` is the closed-form map the others are measured against, not a sampler.
        for entry in SOLVERS.iter().filter(|e| e.name != "exact") {
            let mut specs = vec![entry.name.to_string()];
            specs.extend(
                entry
                    .variants
                    .iter()
                    .filter(|(opts, _)| !opts.is_empty())
                    .map(|(opts, _)| format!("{}:{opts}", entry.name)),
            );
            for spec in &specs {
                for grid in &grids {
                    let grid = Grid::parse(grid, s.as_ref()).unwrap();
                    let mut built = solver::build(spec, &env).unwrap();
                    if built.solver.nfe(&grid, s.as_ref()).is_none() {
                        continue; // adaptive: no step loop on a grid
                    }
                    let times = built.solver.plan(&grid, s.as_ref()).unwrap();
                    let mut x: Array2<f64> = x0.clone();
                    let base = LIVE.load(SeqCst);
                    PEAK.store(base, SeqCst);
                    let warm = WARM.min(times.len() - 2);
                    // As `integrate` does: the loop on a worker of the pool.
                    let solver = built.solver.as_mut();
                    let before = rayon::scope(|_| {
                        for i in 0..warm {
                            solver.step(&model, &times, i, &mut x).unwrap();
                        }
                        let before = ALLOCATIONS.load(SeqCst);
                        for i in warm..times.len() - 1 {
                            solver.step(&model, &times, i, &mut x).unwrap();
                        }
                        before
                    });
                    let allocations = ALLOCATIONS.load(SeqCst) - before;
                    let peak = (PEAK.load(SeqCst) - base) as f64 / array as f64;
                    assert!(x.iter().all(|v| v.is_finite()), "{spec}");
                    assert_eq!(
                        allocations,
                        0,
                        "{spec} on {problem}, {}: {allocations} allocations in steps {warm}..{}",
                        grid.spec(),
                        times.len() - 1
                    );
                    // At most 9 batch arrays besides x (lms order 4 with the singlestep
                    // warm-up: a history of 4, the new value, the prediction, 2 stage values and
                    // a stage point), plus the oracle's per-thread scratch.
                    // A stochastic sampler also holds its Brownian walk: W at the current
                    // point and one value per tree level, ceil(log2 b) + k + 3 arrays for
                    // b 2^k steps (6 for 14 steps).
                    let walk = if built.solver.noise().is_some() {
                        let n = times.len() - 1;
                        let k = n.trailing_zeros() as usize;
                        let b = n >> k;
                        (usize::BITS - (b - 1).leading_zeros()) as usize + k + 3
                    } else {
                        0
                    };
                    assert!(
                        peak <= 9.5 + walk as f64,
                        "{spec} on {problem}: peak {peak:.2} arrays (walk {walk})"
                    );
                    report.push((problem, spec.clone(), peak));
                }
            }
        }
    }
    let worst = report.iter().max_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
    println!(
        "{} runs; largest peak {:.2} batch arrays ({} on {})",
        report.len(),
        worst.2,
        worst.1,
        worst.0
    );
}
