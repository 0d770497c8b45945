//! The closed-form single-Gaussian PF-ODE map against a fine RK4 integration of the exact drift.

use ndarray::Array2;
use pfode::schedule::{self, Schedule};
use pfode::{problems, GaussianFlow, GaussianMixture, Oracle, Prediction};

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Classical RK4 on dx/dt = velocity over the given times.
fn rk4(m: &GaussianMixture, s: &dyn Schedule, ts: &[f64], x: &Array2<f64>) -> Array2<f64> {
    let f = |t: f64, x: &Array2<f64>| {
        let mut v = Array2::zeros(x.dim());
        m.predict(Prediction::Velocity, x.view(), &s.level(t), v.view_mut())
            .unwrap();
        v
    };
    let mut x = x.clone();
    for w in ts.windows(2) {
        let (t, h) = (w[0], w[1] - w[0]);
        let k1 = f(t, &x);
        let k2 = f(t + h / 2.0, &(&x + &(&k1 * (h / 2.0))));
        let k3 = f(t + h / 2.0, &(&x + &(&k2 * (h / 2.0))));
        let k4 = f(t + h, &(&x + &(&k3 * h)));
        x = &x + &((&k1 + &(&k2 * 2.0) + &(&k3 * 2.0) + &k4) * (h / 6.0));
    }
    x
}

#[test]
fn closed_form_flow_matches_fine_rk4() {
    let m = problems::load("gauss4").unwrap();
    let flow = GaussianFlow::new(&m).unwrap();
    let steps = 2000;
    // (schedule, t_start, t_end, grid uniform in lambda?)
    for (spec, t0, t1, in_lambda) in [
        ("vp-linear", 1.0, 1e-3, true),
        ("vp-cosine", 0.9946, 1e-3, true),
        ("ve", 1.0, 0.0, false),
        ("edm", 80.0, 0.002, true),
        ("flow", 1.0, 0.0, false),
    ] {
        let s = schedule::parse(spec).unwrap();
        let ts: Vec<f64> = if in_lambda {
            let (l0, l1) = (s.lambda(t0), s.lambda(t1));
            (0..=steps)
                .map(|i| s.t_of_lambda(l0 + (l1 - l0) * i as f64 / steps as f64))
                .collect()
        } else {
            (0..=steps)
                .map(|i| t0 + (t1 - t0) * i as f64 / steps as f64)
                .collect()
        };
        let (from, to) = (s.level(t0), s.level(t1));
        let x = m.sample_pt(64, &from, 21);
        let mut exact = Array2::zeros(x.dim());
        flow.map(&from, &to, x.view(), exact.view_mut()).unwrap();
        let err = max_abs(&(&rk4(&m, s.as_ref(), &ts, &x) - &exact)) / max_abs(&exact);
        println!("{spec}: {steps} RK4 steps vs closed form, relative max error {err:.2e}");
        assert!(err < 1e-10, "{spec}: {err:e}");
    }
}

#[test]
fn flow_maps_compose_and_invert() {
    let m = problems::load("gauss4").unwrap();
    let flow = GaussianFlow::new(&m).unwrap();
    let s = schedule::parse("vp-linear").unwrap();
    let (a, b, c) = (s.level(0.9), s.level(0.4), s.level(0.01));
    let x = m.sample_pt(32, &a, 22);
    let map = |from, to, x: &Array2<f64>| {
        let mut out = Array2::zeros(x.dim());
        flow.map(from, to, x.view(), out.view_mut()).unwrap();
        out
    };
    let direct = map(&a, &c, &x);
    let two_legs = map(&b, &c, &map(&a, &b, &x));
    assert!(max_abs(&(&direct - &two_legs)) < 1e-13 * max_abs(&direct));
    let back = map(&c, &a, &direct);
    assert!(max_abs(&(&back - &x)) < 1e-12 * max_abs(&x));
    // No closed form for a mixture.
    assert!(GaussianFlow::new(&problems::load("ring2d").unwrap())
        .unwrap_err()
        .to_string()
        .contains("single Gaussian; this problem has 8 components"));
}
