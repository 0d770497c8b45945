//! Built-in problems: Gaussian mixtures defined in code from fixed seeds (scalar arithmetic only,
//! so the same bits on every machine), also written to `results/problems/*.json` by
//! `cargo run --release --bin problems`.
//!
//! | name | d | K | what |
//! |---|---|---|---|
//! | `ring2d` | 2 | 8 | equal weights, means on a circle of radius 4, covariance 0.05 I; classes A, B alternate |
//! | `aniso16` | 16 | 5 | unequal weights, means ~ N(0, 4 I), random-rotation covariances with eigenvalues log-spaced in [0.01, 1] (condition number 100); classes A, B, A, B, A |
//! | `gauss4` | 4 | 1 | one full-covariance Gaussian, mean (1, -2, 0.5, 1.5), eigenvalues (2, 0.8, 0.3, 0.1) |
//! | `mix64` | 64 | 16 | random weights, means ~ N(0, 4 I), eigenvalues log-spaced in [0.1, 1]; for performance work |
//! | `gauss2c` | 2 | 2 | two classes of one Gaussian each, for closed forms: A (weight 0.6) mean (1.5, 0.5), covariance [[0.5, 0.2], [0.2, 0.3]]; B (0.4) mean (-1, -1), covariance [[0.3, -0.1], [-0.1, 0.6]] |
//! | `cross2d` | 2 | 2 | two crossing stripes (non-commuting covariances, for the OT certificate): weights 1/2, means (-1, 0) and (1, 0), covariances R(+-pi/4) diag(1.5, 0.02) R(+-pi/4)^T = [[0.76, +-0.74], [+-0.74, 0.76]] |
//! | `edm2_tree2d` | 2 | 2032 | the two-class (A, B) tree of the EDM2 toy example (Karras et al. 2024, `toy_example.py` `gt('AB')`), embedded from `results/problems/edm2_tree2d.json`, a copy of `../shared/data/edm2_tree2d.json` with its provenance |

use crate::error::{Error, Result};
use crate::gmm::{GaussianMixture, MixtureSpec};
use crate::rng::RowRng;
use std::f64::consts::PI;
use std::path::Path;

/// The problems generated in code (and written by [`write_builtins`]).
pub const PROBLEMS: [&str; 6] = ["ring2d", "aniso16", "gauss4", "mix64", "gauss2c", "cross2d"];

/// Problems embedded from committed files (name, text); their files carry their own provenance.
pub const EMBEDDED: [(&str, &str); 1] = [(
    "edm2_tree2d",
    include_str!("../results/problems/edm2_tree2d.json"),
)];

/// The seed a built-in problem is generated from (`None`: no randomness).
pub fn seed(name: &str) -> Option<u64> {
    match name {
        "aniso16" => Some(16),
        "gauss4" => Some(4),
        "mix64" => Some(64),
        _ => None,
    }
}

/// A random orthonormal basis of R^d (rows), by modified Gram-Schmidt applied twice to seeded
/// Gaussian vectors.
fn random_basis(d: usize, seed: u64, domain: u32) -> Vec<Vec<f64>> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    for i in 0..d {
        let mut rng = RowRng::new(seed, domain, i as u64);
        let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        for _ in 0..2 {
            for b in &q {
                let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        q.push(v);
    }
    q
}

/// Sigma = sum_m l_m q_m q_m^T, computed on the upper triangle and mirrored (exactly symmetric).
fn covariance(q: &[Vec<f64>], l: &[f64]) -> Vec<Vec<f64>> {
    let d = l.len();
    let mut c = vec![vec![0.0; d]; d];
    for i in 0..d {
        for j in i..d {
            let v: f64 = (0..d).map(|m| q[m][i] * l[m] * q[m][j]).sum();
            c[i][j] = v;
            c[j][i] = v;
        }
    }
    c
}

/// d eigenvalues log-spaced from lo to hi.
fn log_spaced(d: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..d)
        .map(|m| lo * (hi / lo).powf(m as f64 / (d - 1) as f64))
        .collect()
}

/// K random components: means ~ N(0, mean_scale^2 I), covariances with eigenvalues l.
fn random_mixture(
    weights: Vec<f64>,
    d: usize,
    mean_scale: f64,
    l: &[f64],
    seed: u64,
) -> MixtureSpec {
    let k = weights.len();
    let means = (0..k)
        .map(|c| {
            let mut rng = RowRng::new(seed, 1, c as u64);
            (0..d).map(|_| mean_scale * rng.normal()).collect()
        })
        .collect();
    let covs = (0..k)
        .map(|c| covariance(&random_basis(d, seed, 2 + c as u32), l))
        .collect();
    MixtureSpec {
        weights,
        means,
        covs,
        ..Default::default()
    }
}

/// The definition of a built-in problem.
pub fn builtin(name: &str) -> Result<MixtureSpec> {
    Ok(match name {
        "ring2d" => MixtureSpec {
            weights: vec![0.125; 8],
            means: (0..8)
                .map(|k| {
                    let a = 2.0 * PI * k as f64 / 8.0;
                    vec![4.0 * a.cos(), 4.0 * a.sin()]
                })
                .collect(),
            covs: vec![vec![vec![0.05, 0.0], vec![0.0, 0.05]]; 8],
            labels: alternating(8),
        },
        "aniso16" => MixtureSpec {
            labels: alternating(5),
            ..random_mixture(
                vec![0.35, 0.25, 0.2, 0.12, 0.08],
                16,
                2.0,
                &log_spaced(16, 0.01, 1.0),
                16,
            )
        },
        "gauss2c" => MixtureSpec {
            weights: vec![0.6, 0.4],
            means: vec![vec![1.5, 0.5], vec![-1.0, -1.0]],
            covs: vec![
                vec![vec![0.5, 0.2], vec![0.2, 0.3]],
                vec![vec![0.3, -0.1], vec![-0.1, 0.6]],
            ],
            labels: vec!["A".into(), "B".into()],
        },
        "gauss4" => {
            let q = random_basis(4, 4, 2);
            MixtureSpec {
                weights: vec![1.0],
                means: vec![vec![1.0, -2.0, 0.5, 1.5]],
                covs: vec![covariance(&q, &[2.0, 0.8, 0.3, 0.1])],
                ..Default::default()
            }
        }
        "mix64" => random_mix(16, 64, 64),
        "cross2d" => MixtureSpec {
            weights: vec![0.5, 0.5],
            means: vec![vec![-1.0, 0.0], vec![1.0, 0.0]],
            covs: vec![
                vec![vec![0.76, 0.74], vec![0.74, 0.76]],
                vec![vec![0.76, -0.74], vec![-0.74, 0.76]],
            ],
            labels: vec!["A".into(), "B".into()],
        },
        other => match EMBEDDED.iter().find(|(n, _)| *n == other) {
            Some((n, text)) => MixtureSpec::from_json(text, &format!("<built-in {n}>"))?,
            None => return Err(unknown(other)),
        },
    })
}

/// K components in d >= 2 dimensions made as `mix64` is (`mix64` = `random_mix(16, 64, 64)`):
/// weights 0.5 + U[0, 1) normalized, means ~ N(0, 4 I), random rotations, eigenvalues
/// log-spaced in [0.1, 1]; for performance cases of other sizes.
pub fn random_mix(k: usize, d: usize, seed: u64) -> MixtureSpec {
    let raw: Vec<f64> = (0..k as u64)
        .map(|i| 0.5 + RowRng::new(seed, 0, i).uniform())
        .collect();
    let total: f64 = raw.iter().sum();
    let weights = raw.iter().map(|w| w / total).collect();
    random_mixture(weights, d, 2.0, &log_spaced(d, 0.1, 1.0), seed)
}

/// Labels A, B, A, B, ... for k components.
fn alternating(k: usize) -> Vec<String> {
    (0..k).map(|i| ["A", "B"][i % 2].to_string()).collect()
}

fn unknown(name: &str) -> Error {
    Error::Domain(format!(
        "unknown problem '{name}' (valid: {}, {}, or a .json file)",
        PROBLEMS.join(", "),
        EMBEDDED.map(|(n, _)| n).join(", ")
    ))
}

/// A built-in problem by name, or a mixture file by path.
pub fn load(name_or_path: &str) -> Result<GaussianMixture> {
    if PROBLEMS.contains(&name_or_path) || EMBEDDED.iter().any(|(n, _)| *n == name_or_path) {
        return GaussianMixture::new(
            builtin(name_or_path)?,
            &format!("<built-in {name_or_path}>"),
        );
    }
    if name_or_path.ends_with(".json") || Path::new(name_or_path).exists() {
        return GaussianMixture::from_file(name_or_path);
    }
    Err(unknown(name_or_path))
}

/// Writes every built-in problem to `dir/NAME.json` (atomically), each with a provenance block
/// naming `command`, its generator, seed and the git revision; returns (name, mixture, path).
pub fn write_builtins(
    dir: &Path,
    command: &str,
) -> Result<Vec<(&'static str, GaussianMixture, std::path::PathBuf)>> {
    let revision = crate::io::git_revision();
    let mut out = Vec::new();
    for name in PROBLEMS {
        let spec: MixtureSpec = builtin(name)?;
        let mixture = GaussianMixture::new(spec.clone(), name)?;
        let provenance = serde_json::json!({
            "command": command,
            "generator": format!("pfode::problems::builtin(\"{name}\")"),
            "seed": seed(name),
            "pfode_version": env!("CARGO_PKG_VERSION"),
            "git_revision": revision,
        });
        let text = spec.to_json(&[
            ("name", serde_json::json!(name)),
            ("provenance", provenance),
        ]);
        let path = dir.join(format!("{name}.json"));
        crate::io::write_atomic(&path, text.as_bytes())?;
        out.push((name, mixture, path));
    }
    Ok(out)
}
