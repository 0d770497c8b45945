//! The MLP oracle: forward pass against hand computation and against a PyTorch export, the
//! safetensors format and its errors, back-propagation against finite differences, training.

use ndarray::{array, Array2};
use pfode::nn::train::{self, Batch, TimeSampling, TrainConfig};
use pfode::nn::{silu, weights, Mlp, MlpConfig, TimeInput};
use pfode::{problems, schedule, Oracle, Prediction};
use std::collections::BTreeMap;

fn config(dim: usize, width: usize, depth: usize, prediction: Prediction) -> MlpConfig {
    MlpConfig {
        dim,
        width,
        depth,
        time_input: TimeInput::T,
        time_features: 4,
        omega_max: 10.0,
        prediction,
        times: 1,
    }
}

fn train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 96,
        lr: 3e-3,
        lr_final: 0.05,
        warmup: 10,
        t_min: 1e-3,
        t_max: 1.0,
        time_sampling: TimeSampling::Uniform,
        seed: 5,
        log_every: 10,
        val_size: 512,
    }
}

#[test]
fn forward_matches_hand_computation() {
    // d = 1, one hidden unit: F = w2 silu(w1 . [x, sin(t), sin(10 t), cos(t), cos(10 t)] + b1) + b2.
    let mut net = Mlp::zeros(config(1, 1, 1, Prediction::Eps)).unwrap();
    net.params
        .copy_from_slice(&[0.5, -1.0, 2.0, 0.25, -0.75, 0.1, 1.5, -0.3]);
    let (x, t) = (0.7_f64, 0.4_f64);
    let z = 0.5 * x - (t).sin() + 2.0 * (10.0 * t).sin() + 0.25 * t.cos() - 0.75 * (10.0 * t).cos()
        + 0.1;
    let expected = 1.5 * silu(z) - 0.3;
    let vp = schedule::parse("vp-linear").unwrap();
    let mut out = Array2::zeros((1, 1));
    net.eval(array![[x]].view(), &vp.level(t), out.view_mut())
        .unwrap();
    assert!(
        (out[[0, 0]] - expected).abs() < 1e-15,
        "{} vs {expected}",
        out[[0, 0]]
    );
    assert_eq!(net.config.omegas(), vec![1.0, 10.0]);
}

#[test]
fn loads_a_pytorch_export() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let loaded = weights::load(format!("{dir}torch_mlp.safetensors")).unwrap();
    let expect: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}torch_mlp.json")).unwrap())
            .unwrap();
    let rows = |v: &serde_json::Value| -> Array2<f64> {
        let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
        Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j])
    };
    assert_eq!(loaded.net.config.time_input, TimeInput::LogSigma);
    assert_eq!(loaded.net.config.prediction, Prediction::Eps);
    let vp = schedule::parse(loaded.schedule().unwrap()).unwrap();
    let x = rows(&expect["x"]);
    let mut worst: f64 = 0.0;
    for case in expect["cases"].as_array().unwrap() {
        let at = vp.level(case["t"].as_f64().unwrap());
        let mut out = Array2::zeros(x.dim());
        loaded.net.eval(x.view(), &at, out.view_mut()).unwrap();
        worst = worst.max(
            (&out - &rows(&case["out"]))
                .mapv(f64::abs)
                .fold(0.0, |a: f64, &b| a.max(b)),
        );
    }
    assert!(worst < 1e-12, "max |pfode - torch| = {worst:e}");
}

#[test]
fn safetensors_round_trip_is_exact() {
    let net = Mlp::init(config(3, 8, 2, Prediction::V), 11).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("schedule".to_string(), "flow".to_string());
    let loaded = weights::from_bytes(&weights::to_bytes(&net, &extra).unwrap(), "mem").unwrap();
    assert_eq!(loaded.net.params, net.params);
    assert_eq!(loaded.net.config, net.config);
    assert_eq!(loaded.schedule(), Some("flow"));
}

fn error_of(bytes: &[u8]) -> String {
    match weights::from_bytes(bytes, "net.safetensors") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_one_clear_error() {
    let net = Mlp::init(config(2, 4, 2, Prediction::X0), 1).unwrap();
    let good = weights::to_bytes(&net, &BTreeMap::new()).unwrap();
    assert!(error_of(b"not a file").starts_with("net.safetensors: not a safetensors file"));

    // Shape mismatch: metadata says width 5, tensors are width 4.
    let mut wide = net.clone();
    wide.config.width = 5;
    let mut meta = weights::config_metadata(&wide.config);
    meta.insert("format".into(), "pfode-mlp".into());
    let relabel = |meta: BTreeMap<String, String>| {
        let text = String::from_utf8_lossy(&good).to_string();
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_str(&text[8..8 + n]).unwrap();
        header["__metadata__"] = serde_json::to_value(meta).unwrap();
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(&good[8 + n..]);
        out
    };
    assert_eq!(
        error_of(&relabel(meta.clone())),
        "net.safetensors: field `layers.0.weight`: shape [4, 6] does not match the metadata (expected [5, 6])"
    );
    // A missing metadata key.
    let mut no_pred = weights::config_metadata(&net.config);
    no_pred.remove("prediction");
    assert_eq!(
        error_of(&relabel(no_pred)),
        "net.safetensors: field `__metadata__.prediction`: missing (needed for the architecture)"
    );
    // Depth 3 in the metadata: a missing tensor; depth 1: an unexpected one.
    let mut deep = weights::config_metadata(&net.config);
    deep.insert("depth".into(), "3".into());
    assert_eq!(
        error_of(&relabel(deep)),
        "net.safetensors: field `layers.2.weight`: shape [2, 4] does not match the metadata (expected [4, 4])"
    );
    let mut shallow = weights::config_metadata(&net.config);
    shallow.insert("depth".into(), "1".into());
    assert!(error_of(&relabel(shallow))
        .contains("field `layers.1.weight`: shape [4, 4] does not match"));
    let mut bad_pred = weights::config_metadata(&net.config);
    bad_pred.insert("prediction".into(), "noise".into());
    assert_eq!(
        error_of(&relabel(bad_pred)),
        "net.safetensors: field `__metadata__.prediction`: unknown prediction type 'noise' (valid: eps, x0, score, v, velocity)"
    );
}

/// Central differences of the batch loss against back-propagation, for every prediction type.
#[test]
fn gradient_matches_finite_differences() {
    let mixture = problems::load("ring2d").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    for prediction in [
        Prediction::Eps,
        Prediction::X0,
        Prediction::V,
        Prediction::Velocity,
    ] {
        let net = Mlp::init(config(2, 6, 2, prediction), 3).unwrap();
        let batch = Batch::draw(&mixture, vp.as_ref(), &train_config(1), 150, 9);
        let (_, grad) = train::loss_and_grad(&net, vp.as_ref(), &batch, true);
        let mut worst: f64 = 0.0;
        for (j, &g) in grad.iter().enumerate() {
            let h = 1e-5 * (1.0 + net.params[j].abs());
            let loss_at = |delta: f64| {
                let mut p = net.clone();
                p.params[j] += delta;
                train::loss_and_grad(&p, vp.as_ref(), &batch, false).0
            };
            let fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
            worst = worst.max((fd - g).abs() / (g.abs() + 1e-3));
        }
        println!("{prediction}: worst relative gradient error {worst:e}");
        assert!(
            worst < 1e-6,
            "{prediction}: worst relative gradient error {worst:e}"
        );
    }
}

fn train_small(threads: usize) -> (Mlp, Vec<train::LogEntry>) {
    let mixture = problems::load("ring2d").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut net = Mlp::init(config(2, 16, 2, Prediction::V), 2).unwrap();
        let log =
            train::train(&mut net, &mixture, vp.as_ref(), &train_config(200), |_| {}).unwrap();
        (net, log)
    })
}

/// Training is seeded and thread-count independent, and it learns: the validation loss falls
/// more than half the way from its initial value to the exact oracle's (the Bayes floor).
#[test]
fn training_is_deterministic_and_learns() {
    let (a, log) = train_small(1);
    let (b, _) = train_small(3);
    assert_eq!(a.params, b.params);
    let mixture = problems::load("ring2d").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let config = train_config(200);
    let val = train::validation(&mixture, vp.as_ref(), &config);
    let floor = train::oracle_loss(&mixture, Prediction::V, vp.as_ref(), &val).unwrap();
    let start = Mlp::init(a.config.clone(), 2).unwrap();
    let initial = train::loss_and_grad(&start, vp.as_ref(), &val, false).0;
    let last = log.last().unwrap().val_loss;
    assert_eq!(log.len(), 20);
    assert!(
        floor < last,
        "the exact oracle is optimal: {floor} vs {last}"
    );
    let closed = (initial - last) / (initial - floor);
    assert!(
        closed > 0.5,
        "excess loss closed by {closed}: {initial} -> {last} (floor {floor})"
    );
}
