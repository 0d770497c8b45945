//! Built-in problems, the mixture file format and its error messages, and the `problems` binary.

use pfode::gmm::MixtureSpec;
use pfode::{problems, GaussianMixture, Oracle};
use std::path::PathBuf;
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn builtins_have_their_documented_shape() {
    let expect = [
        ("ring2d", 2, 8, 1.0),
        ("aniso16", 16, 5, 100.0),
        ("gauss4", 4, 1, 20.0),
        ("mix64", 64, 16, 10.0),
    ];
    for (name, d, k, cond) in expect {
        let m = problems::load(name).unwrap();
        assert_eq!((m.dim(), m.n_components()), (d, k), "{name}");
        for c in 0..k {
            let (_, l) = m.eigen(c);
            let measured = l[d - 1] / l[0];
            assert!(
                (measured - cond).abs() < 1e-10 * cond,
                "{name} component {c}: cond {measured}"
            );
        }
    }
    let ring = problems::load("ring2d").unwrap();
    for k in 0..8 {
        let r = ring.mean(k).dot(&ring.mean(k)).sqrt();
        assert!((r - 4.0).abs() < 1e-15);
    }
    let aniso = problems::load("aniso16").unwrap();
    assert_eq!(aniso.weights(), [0.35, 0.25, 0.2, 0.12, 0.08]);
    let gauss = problems::load("gauss4").unwrap();
    assert_eq!(gauss.mean(0).to_vec(), [1.0, -2.0, 0.5, 1.5]);
    let (_, l) = gauss.eigen(0);
    for (got, want) in l.iter().zip([0.1, 0.3, 0.8, 2.0]) {
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }
}

#[test]
fn committed_problem_files_equal_the_builtins() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for name in problems::PROBLEMS {
        let path = root.join("results/problems").join(format!("{name}.json"));
        let file = MixtureSpec::from_file(&path).unwrap();
        assert!(
            file == problems::builtin(name).unwrap(),
            "{} differs from the built-in {name}: run `cargo run --release --bin problems`",
            path.display()
        );
    }
}

#[test]
fn json_round_trip_is_bit_exact() {
    let spec = problems::builtin("aniso16").unwrap();
    let back = MixtureSpec::from_json(&spec.to_json(&[]), "mem").unwrap();
    assert!(back == spec);
    // Class labels (the EDM2 tree toy's A and B) survive the round trip; none are written
    // when there are none.
    let labelled = problems::builtin("ring2d").unwrap();
    let text = labelled.to_json(&[]);
    assert!(
        text.contains(r#""labels": ["A","B","A","B","A","B","A","B"]"#),
        "{text}"
    );
    assert!(MixtureSpec::from_json(&text, "mem").unwrap() == labelled);
    let gauss = problems::builtin("gauss4").unwrap();
    assert!(gauss.labels.is_empty() && !gauss.to_json(&[]).contains("labels"));
}

/// (file content, expected error message).
fn malformed() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]"#,
            "invalid JSON: EOF while parsing a list at line 1 column 63",
        ),
        (
            r#"{"weights": [0.5, 0.5], "means": [[0, 0], [1, 1, 1]], "covs": [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]}"#,
            "field `means[1]`: expected 2 entries, found 3 (dimension mismatch)",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0]]]}"#,
            "field `covs[0]`: expected 2 entries, found 1 (dimension mismatch)",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}"#,
            "field `covs[0]`: not positive definite: smallest eigenvalue -1e0 (largest 3e0)",
        ),
        (
            r#"{"weights": [1.2, -0.2], "means": [[0], [1]], "covs": [[[1]], [[1]]]}"#,
            "field `weights[1]`: weight -0.2 is not a non-negative finite number",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, NaN]]]}"#,
            "field `covs[0][1][1]`: NaN is not a finite number",
        ),
        (
            r#"{"weights": [1.0], "means": [[-Infinity, 0]], "covs": [[[1, 0], [0, 1]]]}"#,
            "field `means[0][0]`: -Infinity is not a finite number",
        ),
        (
            r#"{"weights": [0.5, 0.4], "means": [[0], [1]], "covs": [[[1]], [[1]]]}"#,
            "field `weights`: weights sum to 0.9, not 1 (tolerance 1e-9)",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0.5], [0.4, 1]]]}"#,
            "field `covs[0][0][1]`: not symmetric: 0.5 but covs[0][1][0] = 0.4",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]]}"#,
            "field `covs`: missing",
        ),
        (
            r#"{"weight": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1]]]}"#,
            "field `weight`: unknown field (valid: weights, means, covs, labels, name, provenance)",
        ),
        (
            r#"{"weights": [1.0], "means": [["0", 0]], "covs": [[[1, 0], [0, 1]]]}"#,
            "field `means[0][0]`: expected a number, found a string",
        ),
        (
            r#"{"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 0], [0, 1e-13]]]}"#,
            "field `covs[0]`: numerically singular: condition number 1.00e13 exceeds 1e12",
        ),
        ("[1, 2]", "expected an object, found an array"),
        (
            r#"{"weights": [0.5, 0.5], "means": [[0], [1]], "covs": [[[1]], [[1]]], "labels": ["A"]}"#,
            "field `labels`: expected 2 entries, found 1 (dimension mismatch)",
        ),
        (
            r#"{"weights": [0.5, 0.5], "means": [[0], [1]], "covs": [[[1]], [[1]]], "labels": ["A", 3]}"#,
            "field `labels[1]`: expected a string",
        ),
    ]
}

#[test]
fn malformed_files_name_the_field() {
    let dir = scratch_dir("malformed");
    for (i, (content, reason)) in malformed().into_iter().enumerate() {
        let path = dir.join(format!("bad{i}.json"));
        std::fs::write(&path, content).unwrap();
        let err = GaussianMixture::from_file(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}: {reason}", path.display()));
    }
    let missing = dir.join("nope.json");
    let err = GaussianMixture::from_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );
    let err = problems::load("ring3d").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown problem 'ring3d' (valid: ring2d, aniso16, gauss4, mix64, gauss2c, cross2d, edm2_tree2d, or a .json file)"
    );
}

#[test]
fn cli_check_reports_one_line_and_exits_2() {
    let dir = scratch_dir("cli-check");
    let bin = env!("CARGO_BIN_EXE_problems");
    for (i, (content, reason)) in malformed().into_iter().enumerate() {
        let path = dir.join(format!("bad{i}.json"));
        std::fs::write(&path, content).unwrap();
        let out = Command::new(bin)
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr, format!("error: {}: {reason}\n", path.display()));
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(bin)
        .args(["--check", "gauss4"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "gauss4: d = 4, K = 1, smallest weight 1.0000, covariance condition numbers 20.0000 .. 20.0000\n"
    );
}

#[test]
fn cli_writes_the_builtins_atomically() {
    let dir = scratch_dir("cli-write");
    let out = Command::new(env!("CARGO_BIN_EXE_problems"))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aniso16.json",
            "cross2d.json",
            "gauss2c.json",
            "gauss4.json",
            "mix64.json",
            "ring2d.json"
        ]
    );
    for name in problems::PROBLEMS {
        let spec = MixtureSpec::from_file(dir.join(format!("{name}.json"))).unwrap();
        assert!(spec == problems::builtin(name).unwrap());
    }
    // An unwritable destination is one error line and exit 2.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_problems"))
        .arg("--out")
        .arg(blocker.join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}
