//! Gaussian-mixture oracle throughput (data prediction at vp-linear t = 0.5) for
//! (d, K, N) in {(2, 8, 1e5), (16, 5, 2e4), (64, 16, 1e4)}, in sample-evaluations per second,
//! and single-sample latency. `cargo bench --bench oracle`.

use criterion::{criterion_group, Criterion, Throughput};
use pfode::ndarray::{s, Array2};
use pfode::{problems, schedule, Oracle, Prediction};

fn oracle(c: &mut Criterion) {
    let at = schedule::parse("vp-linear").unwrap().level(0.5);
    let mut group = c.benchmark_group("oracle");
    group.sample_size(20);
    for (name, n) in [("ring2d", 100_000), ("aniso16", 20_000), ("mix64", 10_000)] {
        let m = problems::load(name).unwrap();
        let x = m.sample_pt(n, &at, 1);
        let mut out = Array2::zeros(x.dim());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(
            format!("{name}/d{}/K{}/N{n}", m.dim(), m.n_components()),
            |b| {
                b.iter(|| {
                    m.predict(Prediction::X0, x.view(), &at, out.view_mut())
                        .unwrap()
                })
            },
        );
        let x1 = x.slice(s![0..1, ..]).to_owned();
        let mut o1 = Array2::zeros((1, m.dim()));
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/latency"), |b| {
            b.iter(|| {
                m.predict(Prediction::X0, x1.view(), &at, o1.view_mut())
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, oracle);

/// criterion's main, after a line naming the machine the figures come from.
fn main() {
    println!("machine: {}", pfode::io::machine());
    benches();
    Criterion::default().configure_from_args().final_summary();
}
