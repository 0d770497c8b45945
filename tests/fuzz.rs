//! A seeded property test of every parser that reads user input: spec strings (schedule, grid,
//! solver), `.npy` files, mixture JSON and safetensors headers, with random and mutated inputs.
//! Each outcome must be `Ok` or an error of one line; a panic fails the test and prints the
//! input. `PFODE_FUZZ_CASES=N` runs N cases per parser instead of the default (a longer run).

use pfode::grid::Grid;
use pfode::nn::{weights, Mlp, MlpConfig, TimeInput};
use pfode::rng::RowRng;
use pfode::solver::{self, Env};
use pfode::{io, problems, schedule, GaussianMixture, MixtureSpec, Prediction};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn cases(default: usize) -> usize {
    std::env::var("PFODE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Gen(RowRng);

impl Gen {
    fn new(domain: u32, case: usize) -> Self {
        Gen(RowRng::new(0xf022, domain, case as u64))
    }
    fn below(&mut self, n: usize) -> usize {
        (self.0.uniform() * n as f64) as usize % n.max(1)
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.uniform() < p
    }
    /// A value: an edge-case number, a word, or random characters.
    fn value(&mut self) -> String {
        const V: [&str; 32] = [
            "0",
            "1",
            "2",
            "3",
            "4",
            "-1",
            "0.5",
            "1e-3",
            "1e308",
            "-1e308",
            "1e-320",
            "nan",
            "inf",
            "-inf",
            "NaN",
            "true",
            "false",
            "20",
            "1000000",
            "1000001",
            "10000000000",
            "18446744073709551615",
            "99999999999999999999",
            "0.9946",
            "80",
            "0.002",
            "7",
            "taylor",
            "unic",
            "data",
            "linear",
            "",
        ];
        match self.below(3) {
            0 | 1 => V[self.below(V.len())].to_string(),
            _ => {
                let n = 1 + self.below(6);
                self.chars(n)
            }
        }
    }
    fn chars(&mut self, n: usize) -> String {
        const C: &[u8] = b"az09.-+e:,=_/ \\\"'[]{}()\x00\xff";
        (0..n)
            .map(|_| C[self.below(C.len())] as char)
            .collect::<String>()
    }
    /// Random edits of a byte string: flips, insertions, deletions, truncation, digit swaps.
    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            if bytes.is_empty() {
                bytes.push(b'0');
            }
            let i = self.below(bytes.len());
            match self.below(6) {
                0 => bytes[i] ^= 1 << self.below(8),
                1 => bytes.insert(i, self.below(256) as u8),
                2 => {
                    bytes.remove(i);
                }
                3 => bytes.truncate(i),
                4 => {
                    if bytes[i].is_ascii_digit() {
                        let v = self.value().into_bytes();
                        bytes.splice(i..i + 1, v);
                    }
                }
                _ => {
                    let j = self.below(bytes.len());
                    bytes.swap(i, j);
                }
            }
        }
    }
}

/// Runs `f` and requires no panic and, on error, a one-line message.
fn check<T>(what: &str, input: &dyn std::fmt::Debug, f: impl FnOnce() -> pfode::Result<T>) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{what} panicked on input {input:?}"),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                !msg.contains('\n') && !msg.is_empty(),
                "{what}: error is not one line on input {input:?}: {msg:?}"
            );
        }
        Ok(Ok(_)) => {}
    }
}

const SCHEDULES: [&str; 6] = ["vp-linear", "vp-cosine", "vp-discrete", "ve", "edm", "flow"];
const KEYS: [&str; 34] = [
    "a",
    "atol",
    "beta0",
    "beta1",
    "beta_end",
    "beta_start",
    "betas",
    "controller",
    "corrector",
    "eta",
    "h_init",
    "lower_order_final",
    "order",
    "prediction",
    "rho",
    "rtol",
    "s",
    "s_churn",
    "s_max",
    "s_min",
    "s_noise",
    "sigma_max",
    "sigma_min",
    "steps",
    "t_end",
    "t_err",
    "t_max",
    "t_start",
    "theta",
    "third_order",
    "type",
    "variant",
    "warmup",
    "zero",
];

fn spec(g: &mut Gen, names: &[&str]) -> String {
    let mut text = g.pick(names).to_string();
    let n = g.below(4);
    if n > 0 || g.chance(0.1) {
        text.push(':');
        let opts: Vec<String> = (0..n)
            .map(|_| {
                let key = g.pick(&KEYS);
                format!("{key}={}", g.value())
            })
            .collect();
        text.push_str(&opts.join(","));
    }
    if g.chance(0.3) {
        let mut b = text.into_bytes();
        g.mutate(&mut b);
        text = String::from_utf8_lossy(&b).into_owned();
    }
    text
}

#[test]
fn spec_strings_never_panic() {
    let mixture = problems::load("ring2d").unwrap();
    let grid_names: Vec<&str> = pfode::grid::GRIDS.to_vec();
    let solver_names: Vec<&str> = solver::SOLVERS.iter().map(|e| e.name).collect();
    let schedules: Vec<Box<dyn pfode::Schedule>> = SCHEDULES
        .iter()
        .map(|s| schedule::parse(s).unwrap())
        .collect();
    for case in 0..cases(20000) {
        let mut g = Gen::new(1, case);
        let text = spec(&mut g, &SCHEDULES);
        check("schedule::parse", &text, || schedule::parse(&text));
        let s = schedules[g.below(schedules.len())].as_ref();
        let text = spec(&mut g, &grid_names);
        check("Grid::parse", &text, || Grid::parse(&text, s));
        let env = Env {
            schedule: s,
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let text = spec(&mut g, &solver_names);
        check("solver::build", &text, || solver::build(&text, &env));
    }
}

#[test]
fn npy_headers_never_panic() {
    let valid: Vec<Vec<u8>> = [(3, 2), (1, 16), (0, 4), (5, 1)]
        .iter()
        .map(|&(n, d)| {
            io::npy_bytes(&pfode::ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
                (i * d + j) as f64 * 0.25
            }))
            .unwrap()
        })
        .collect();
    for case in 0..cases(20000) {
        let mut g = Gen::new(2, case);
        let mut bytes = valid[g.below(valid.len())].clone();
        if g.chance(0.5) {
            // Rewrite the header's shape or dtype text, keeping its length field consistent.
            let text = String::from_utf8_lossy(&bytes[10..]).into_owned();
            let replaced = match g.below(4) {
                0 => {
                    let (a, b) = (g.value(), g.value());
                    text.replacen("(3, 2)", &format!("({a}, {b})"), 1)
                }
                1 => text.replacen(
                    "<f8",
                    g.pick(&["<f4", ">f8", "|u1", "<i8", "f8", "<c16"]),
                    1,
                ),
                2 => text.replacen("False", g.pick(&["True", "1", "None"]), 1),
                _ => text.replacen("(3, 2)", g.pick(&["(6,)", "(1, 3, 2)", "()", "(3, -2)"]), 1),
            };
            bytes.truncate(10);
            bytes.extend(replaced.bytes());
        }
        g.mutate(&mut bytes);
        check("io::npy_from_bytes", &bytes, || {
            io::npy_from_bytes(&bytes, "fuzz.npy")
        });
    }
}

#[test]
fn mixture_json_never_panics() {
    let valid: Vec<String> = ["ring2d", "gauss4", "aniso16"]
        .iter()
        .map(|p| problems::load(p).unwrap().spec().to_json(&[]))
        .chain([
            r#"{"weights": [0.5, 0.5], "means": [[0, 0], [3, 1]], "covs": [[[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.3]]]}"#.to_string(),
        ])
        .collect();
    for case in 0..cases(5000) {
        let mut g = Gen::new(3, case);
        let mut bytes = valid[g.below(valid.len())].clone().into_bytes();
        if g.chance(0.5) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let key = g.pick(&["weights", "means", "covs"]);
            let text = match g.below(3) {
                0 => text.replacen(&format!("\"{key}\""), "\"other\"", 1),
                1 => text.replacen("0.5", &g.value(), 1),
                _ => text.replacen("[", g.pick(&["[[", "[1e400, ", "[-1, ", "[\"x\", "]), 1),
            };
            bytes = text.into_bytes();
        }
        g.mutate(&mut bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check("GaussianMixture from JSON", &text, || {
            GaussianMixture::new(MixtureSpec::from_json(&text, "fuzz.json")?, "fuzz.json")
        });
    }
}

#[test]
fn safetensors_headers_never_panic() {
    let config = MlpConfig {
        dim: 2,
        width: 4,
        depth: 2,
        time_input: TimeInput::T,
        time_features: 4,
        omega_max: 10.0,
        prediction: Prediction::V,
        times: 1,
    };
    let net = Mlp::init(config, 1).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("schedule".to_string(), "vp-linear".to_string());
    extra.insert("problem".to_string(), "ring2d".to_string());
    let valid = weights::to_bytes(&net, &extra).unwrap();
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(valid[8..8 + header_len].to_vec()).unwrap();
    for case in 0..cases(20000) {
        let mut g = Gen::new(4, case);
        let mut h = header.clone();
        if g.chance(0.7) {
            let key = g.pick(&[
                "\"depth\":\"2\"",
                "\"width\":\"4\"",
                "\"dim\":\"2\"",
                "\"time_features\":\"4\"",
                "\"omega_max\":\"10.0\"",
                "\"prediction\":\"v\"",
                "\"schedule\":\"vp-linear\"",
                "\"shape\":[4,6]",
                "\"data_offsets\":[0,",
                "\"dtype\":\"F64\"",
            ]);
            let (name, _) = key.split_once(':').unwrap();
            let value = match g.below(3) {
                0 => format!("\"{}\"", g.value()),
                1 => {
                    let (a, b) = (g.value(), g.value());
                    format!("[{a},{b}]")
                }
                _ => g.value(),
            };
            h = h.replacen(key, &format!("{name}:{value}"), 1);
        }
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h.bytes());
        bytes.extend(&valid[8 + header_len..]);
        if g.chance(0.5) {
            g.mutate(&mut bytes);
        }
        check("weights::from_bytes", &h, || {
            weights::from_bytes(&bytes, "fuzz.safetensors")
        });
    }
}

#[test]
fn scheduler_configs_never_panic() {
    use pfode::diffusers::{Class, Config, Scheduler};
    let text = std::fs::read_to_string("tests/fixtures/diffusers.json").unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let valid: Vec<String> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["config"].to_string())
        .collect();
    let mixture = problems::load("gauss4").unwrap();
    let latents = pfode::rng::standard_normal(2, 4, 1, 0);
    for case in 0..cases(3000) {
        let mut g = Gen::new(5, case);
        let mut value: serde_json::Value =
            serde_json::from_str(&valid[g.below(valid.len())]).unwrap();
        let class = Class::ALL[g.below(Class::ALL.len())];
        for _ in 0..1 + g.below(3) {
            let keys = class.options();
            let key = keys[g.below(keys.len())].0;
            let raw = g.value();
            let v = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
            value[key] = v;
        }
        let mut bytes = value.to_string().into_bytes();
        if g.chance(0.2) {
            g.mutate(&mut bytes);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let steps = *g.pick(&[&0usize, &1, &2, &3, &5, &7, &12, &25, &61, &1000, &1001]);
        let class_name = g.chance(0.5).then(|| class.name());
        check("diffusers config", &(&text, steps), || {
            let config = Config::parse(&text, "fuzz.json", class_name)?;
            let s = Scheduler::new(config, steps, 0.0)?;
            s.explain();
            if steps <= 25 {
                s.replay(
                    &mixture,
                    latents.view(),
                    &mut pfode::solver::sde::Brownian::new(0),
                )?;
            }
            Ok(())
        });
    }
}
