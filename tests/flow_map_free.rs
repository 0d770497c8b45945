//! Teacher-free flow maps: every loss's gradient against finite differences (through the JVP for
//! the tangent rows), the reverse-over-forward gradient, the stop-gradient placement of every
//! method, the TrigFlow boundary, the iCT curriculum, and the option errors.

use pfode::flow_map::distill::{parse_method, Method, METHODS};
use pfode::flow_map::free::{Context, Options};
use pfode::flow_map::loss::{regression, Linear, Loss};
use pfode::flow_map::param::Param;
use pfode::ndarray::Array2;
use pfode::nn::{Mlp, MlpConfig, TimeInput};
use pfode::rng::standard_normal;
use pfode::schedule::Schedule;
use pfode::{problems, schedule, Prediction};

fn two_time(dim: usize, seed: u64) -> Mlp {
    Mlp::init(
        MlpConfig {
            dim,
            width: 16,
            depth: 2,
            time_input: TimeInput::CNoise,
            time_features: 4,
            omega_max: 4.0,
            prediction: Prediction::X0,
            times: 2,
        },
        seed,
    )
    .unwrap()
}

const LOSSES: [Loss; 4] = [
    Loss::L2,
    Loss::PseudoHuber { c: 0.3 },
    Loss::Adaptive { p: 1.0, eps: 0.01 },
    Loss::Adaptive { p: 0.5, eps: 0.1 },
];

/// Central differences of `loss(net)` in four parameters against `grad`.
fn check_gradient(net: &Mlp, grad: &[f64], what: &str, loss: impl Fn(&Mlp) -> f64) {
    for k in [0, 9, 100, net.params.len() - 1] {
        let h = 1e-6;
        let mut p = net.clone();
        p.params[k] += h;
        let up = loss(&p);
        p.params[k] -= 2.0 * h;
        let down = loss(&p);
        let fd = (up - down) / (2.0 * h);
        assert!(
            (fd - grad[k]).abs() < 2e-7 * (1.0 + grad[k].abs()),
            "{what}, parameter {k}: finite difference {fd} vs gradient {}",
            grad[k]
        );
    }
}

fn rows_of(kind: &str, param: &Param, vp: &dyn Schedule, n: usize) -> Linear {
    let x = standard_normal(n, 2, 1, 0);
    let s: Vec<f64> = (0..n).map(|i| 0.2 + 0.01 * i as f64).collect();
    // A tangent along t at t = 0 is singular on vp-linear (dsigma/dt is infinite there).
    let t0 = if kind == "tangent" { 0.02 } else { 0.0 };
    let t: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { t0 } else { 0.1 }).collect();
    let y = standard_normal(n, 2, 2, 0);
    let w: Vec<f64> = (0..n).map(|i| 0.5 + (i % 4) as f64).collect();
    match kind {
        "net" => Linear::net_space(x, s, t, y, w),
        "map" => Linear::map_space(param, vp, x, s, t, y, w),
        _ => {
            let dx = standard_normal(n, 2, 3, 0);
            let ds: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
            let dt: Vec<f64> = (0..n).map(|i| 0.5 - (i % 3) as f64 * 0.4).collect();
            let mut rows = Linear::tangent_space(param, vp, x, s, t, (dx, ds, dt), y, w);
            rows.set_net_row(4, standard_normal(1, 2, 4, 0).row(0));
            rows
        }
    }
}

/// The rows with weights w_i d / (|r_i|^2 + eps)^p at the current network (so that l2 over them
/// has the adaptive loss's gradient).
fn frozen_weights(
    param: &Param,
    net: &Mlp,
    vp: &dyn Schedule,
    rows: &Linear,
    p: f64,
    eps: f64,
) -> Linear {
    let d = rows.x.ncols() as f64;
    let one = |i: usize| Linear {
        x: rows.x.slice(pfode::ndarray::s![i..i + 1, ..]).to_owned(),
        s: vec![rows.s[i]],
        t: vec![rows.t[i]],
        tangent: rows.tangent.as_ref().map(|(dx, ds, dt)| {
            (
                dx.slice(pfode::ndarray::s![i..i + 1, ..]).to_owned(),
                vec![ds[i]],
                vec![dt[i]],
            )
        }),
        p: vec![rows.p[i]],
        q: vec![rows.q[i]],
        c: rows.c.slice(pfode::ndarray::s![i..i + 1, ..]).to_owned(),
        w: vec![1.0],
    };
    let mut w = Vec::new();
    for i in 0..rows.x.nrows() {
        let r2 = regression(param, net, vp, Loss::L2, &one(i), false).0 * d;
        w.push(rows.w[i] * d * (r2 + eps).powf(-p));
    }
    let mut out = one(0);
    out.x = rows.x.clone();
    out.s = rows.s.clone();
    out.t = rows.t.clone();
    out.tangent = rows.tangent.clone();
    out.p = rows.p.clone();
    out.q = rows.q.clone();
    out.c = rows.c.clone();
    out.w = w;
    out
}

#[test]
fn every_loss_gradient_matches_finite_differences_through_the_jvp() {
    let vp = schedule::parse("vp-linear").unwrap();
    for param in ["mean-velocity", "trigflow", "consistency"] {
        let param = Param::parse(param, 0.5).unwrap();
        for kind in ["net", "map", "tangent"] {
            let rows = rows_of(kind, &param, vp.as_ref(), 70);
            for loss in LOSSES {
                let net = two_time(2, 3);
                let (value, grad) = regression(&param, &net, vp.as_ref(), loss, &rows, true);
                assert!(value > 0.0 && value.is_finite());
                // The adaptive weight 1/(|r|^2 + eps)^p is a stop-gradient: its gradient is that
                // of l2 with the weights frozen at the current residuals.
                let (surrogate, frozen) = match loss {
                    Loss::Adaptive { p, eps } => (
                        Loss::L2,
                        frozen_weights(&param, &net, vp.as_ref(), &rows, p, eps),
                    ),
                    _ => (loss, rows_of(kind, &param, vp.as_ref(), 70)),
                };
                check_gradient(&net, &grad, &format!("{param} {kind} {loss:?}"), |p| {
                    regression(&param, p, vp.as_ref(), surrogate, &frozen, false).0
                });
            }
        }
    }
}

#[test]
fn losses_have_their_closed_forms() {
    let vp = schedule::parse("vp-linear").unwrap();
    let param = Param::MeanVelocity;
    let net = two_time(2, 3);
    // F = 0 on a zero network: the residual is -y, so each loss is a function of |y|^2 alone.
    let mut zero = net.clone();
    zero.params.iter_mut().for_each(|p| *p = 0.0);
    let y = Array2::from_shape_vec((2, 2), vec![3.0, 4.0, 0.0, 1.0]).unwrap();
    let rows = Linear::net_space(
        Array2::zeros((2, 2)),
        vec![0.5; 2],
        vec![0.2; 2],
        y,
        vec![1.0, 2.0],
    );
    let value = |loss| regression(&param, &zero, vp.as_ref(), loss, &rows, false).0;
    assert!((value(Loss::L2) - (25.0 + 2.0 * 1.0) / 4.0).abs() < 1e-14);
    let c: f64 = 0.5;
    let huber = ((25.0 + c * c).sqrt() - c + 2.0 * ((1.0 + c * c).sqrt() - c)) / 2.0;
    assert!((value(Loss::PseudoHuber { c }) - huber).abs() < 1e-14);
    let adaptive = (25.0 / 25.01 + 2.0 * 1.0 / 1.01) / 2.0;
    assert!((value(Loss::Adaptive { p: 1.0, eps: 0.01 }) - adaptive).abs() < 1e-14);
}

fn context<'a>(
    options: &'a Options,
    param: Param,
    mixture: &'a pfode::GaussianMixture,
    vp: &'a dyn Schedule,
    levels: &'a [f64],
) -> Context<'a> {
    Context {
        options,
        param,
        mixture,
        schedule: vp,
        levels,
        sigma_data: 0.5,
        k: 30,
        steps: 60,
    }
}

/// The target copy theta^- enters every method's rows as a constant: the gradient equals the
/// derivative with theta^- held fixed, and differs from the derivative with theta^- = theta.
#[test]
fn every_method_stops_the_gradient_at_its_target() {
    let mixture = problems::load("ring2d").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let levels = pfode::grid::Grid::parse("karras:steps=8,zero=true", vp.as_ref())
        .unwrap()
        .times;
    for name in &METHODS[4..] {
        // The adaptive weight is itself a stop-gradient quantity; l2 isolates the target's.
        let spec = if *name == "meanflow" {
            "meanflow:loss=l2"
        } else {
            name
        };
        let (method, options) = parse_method(spec, 0.5, 2).unwrap();
        let options = options.unwrap();
        let param = Param::parse(method.default_param(), 0.5).unwrap();
        let ctx = context(&options, param, &mixture, vp.as_ref(), &levels);
        let net = two_time(2, 5);
        let batch = ctx.batch(&net, &net, 64, 11).unwrap();
        let (_, grad) = regression(&param, &net, vp.as_ref(), batch.loss, &batch.rows, true);
        check_gradient(&net, &grad, name, |p| {
            let b = ctx.batch(p, &net, 64, 11).unwrap();
            regression(&param, p, vp.as_ref(), b.loss, &b.rows, false).0
        });
        // Through theta^- too, the derivative is another number.
        let (k, h) = (9, 1e-6);
        let full = |e: f64| {
            let mut p = net.clone();
            p.params[k] += e;
            let b = ctx.batch(&p, &p, 64, 11).unwrap();
            regression(&param, &p, vp.as_ref(), b.loss, &b.rows, false).0
        };
        let through = (full(h) - full(-h)) / (2.0 * h);
        assert!(
            (through - grad[k]).abs() > 1e-3 * grad[k].abs().max(1e-6),
            "{name}: the target does not depend on theta^- ({through} vs {})",
            grad[k]
        );
    }
}

#[test]
fn trigflow_is_scms_consistency_function_at_t_zero() {
    let vp = schedule::parse("vp-linear").unwrap();
    let sd = 0.5;
    let param = Param::parse("trigflow", sd).unwrap();
    for s in [0.05, 0.3, 0.9] {
        let at = vp.level(s);
        let tau = (at.sigma / at.alpha / sd).atan();
        let [a, b, c] = param.coefficients(vp.as_ref(), s, 0.0);
        // f = cos(tau) x~ - sin(tau) sigma_d F with x~ = cos(tau) x/alpha, input x~/sigma_d.
        assert!((a - tau.cos().powi(2) / at.alpha).abs() < 1e-14);
        assert!((b + tau.sin() * sd).abs() < 1e-14);
        let want = tau.cos() / (at.alpha * sd);
        assert!((c - want).abs() < 1e-13 * want, "{c} vs {want}");
        let [a, b, _] = param.coefficients(vp.as_ref(), s, s);
        assert_eq!((a, b), (1.0, 0.0));
    }
}

#[test]
fn ict_curriculum_doubles_from_10_to_1280() {
    let mixture = problems::load("ring2d").unwrap();
    let vp = schedule::parse("edm").unwrap();
    let levels = pfode::grid::Grid::parse("karras:steps=8,zero=true", vp.as_ref())
        .unwrap()
        .times;
    let (_, options) = parse_method("ct", 0.5, 2).unwrap();
    let options = options.unwrap();
    let mut ctx = context(
        &options,
        Param::MeanVelocity,
        &mixture,
        vp.as_ref(),
        &levels,
    );
    ctx.steps = 800;
    // K' = floor(800 / (log2(128) + 1)) = 100: N = 10, 20, ..., 1280, then 1280.
    for (k, n) in [
        (0, 10),
        (99, 10),
        (100, 20),
        (350, 80),
        (700, 1280),
        (799, 1280),
    ] {
        ctx.k = k;
        let sigma = ctx.ct_grid();
        assert_eq!(
            sigma.len(),
            n + 1,
            "k = {k}: {} {:?}",
            sigma.len(),
            &sigma[..3]
        );
        assert!((sigma[0] - 0.002).abs() < 1e-15 && (sigma[n] - 80.0).abs() < 1e-12);
    }
    let (_, options) = parse_method("ct:curriculum=sqrt", 0.5, 2).unwrap();
    let options = options.unwrap();
    let mut ctx = context(
        &options,
        Param::MeanVelocity,
        &mixture,
        vp.as_ref(),
        &levels,
    );
    ctx.steps = 800;
    // ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) intervals: 1 at k = 0, s1 = 150 at K.
    for (k, n) in [(0, 1), (400, 106), (800, 150)] {
        ctx.k = k;
        assert_eq!(ctx.ct_grid().len(), n + 1);
    }
}

#[test]
fn method_options_are_checked() {
    for (spec, want) in [
        ("meanflow:diagonal=2", "diagonal must be in [0, 1]"),
        ("meanflow:color=red", "color"),
        ("ct:loss=huber", "huber"),
        ("cd:diagonal=0.5", "diagonal"),
        ("scm:warmup=-1", "warmup"),
        ("magic", "unknown flow-map method"),
    ] {
        let err = parse_method(spec, 0.5, 2).unwrap_err().to_string();
        assert!(err.contains(want), "{spec}: {err}");
        assert!(!err.contains('\n'));
    }
    let (method, options) = parse_method("psd:pairs=logit-normal,mean=0.2", 0.5, 2).unwrap();
    assert_eq!(method, Method::Psd);
    assert!(format!("{options:?}").contains("mean: 0.2"));
}
