//! Every binary the way a new user meets it: bad input is one line on stderr, exit status 2, no
//! panic or abort, and no output file written or changed; and the first ten minutes (sampling
//! from the prior, drawing problem samples, plotting them) need no other tool.

use pfode::grid::Grid;
use pfode::ndarray::Array2;
use pfode::solver::{self, Env, Model};
use pfode::{io, problems, schedule, Oracle};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pfode-hard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bin(name: &str) -> &'static str {
    match name {
        "sample" => env!("CARGO_BIN_EXE_sample"),
        "train" => env!("CARGO_BIN_EXE_train"),
        "convergence" => env!("CARGO_BIN_EXE_convergence"),
        "problems" => env!("CARGO_BIN_EXE_problems"),
        "plot" => env!("CARGO_BIN_EXE_plot"),
        "sde" => env!("CARGO_BIN_EXE_sde"),
        "learned_vs_exact" => env!("CARGO_BIN_EXE_learned_vs_exact"),
        _ => unreachable!("{name}"),
    }
}

fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a case that must fail cleanly: exit 2, one line naming `needle`, no panic.
fn fails(name: &str, args: &[&str], needle: &str) -> String {
    let (code, _, err) = run(name, args);
    assert_eq!(code, 2, "{name} {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{name} {args:?}: {err}");
    assert!(!err.contains("panicked"), "{name} {args:?}: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    err
}

fn write_init(dir: &Path, rows: usize, cols: usize) -> String {
    let x = Array2::from_shape_fn((rows, cols), |(i, j)| (i * 3 + j) as f64 / 7.0 - 0.5);
    let path = dir.join(format!("init{cols}.npy"));
    io::write_npy(&path, &x).unwrap();
    path.display().to_string()
}

/// An .npy file with `header` (a Python dict literal) and `data` after it.
fn raw_npy(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((h.len() as u16).to_le_bytes());
    bytes.extend(h.bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// The ring2d network with metadata entry `key` set to `value`.
fn patched_net(dir: &Path, key: &str, value: &str) -> String {
    let bytes = std::fs::read("results/models/ring2d.safetensors").unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"][key] = serde_json::Value::String(value.into());
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.bytes());
    out.extend(&bytes[8 + n..]);
    let path = dir.join(format!("net_{key}.safetensors"));
    std::fs::write(&path, out).unwrap();
    path.display().to_string()
}

const RING: [&str; 6] = [
    "--problem",
    "ring2d",
    "--grid",
    "logsnr:steps=5",
    "--solver",
    "ddim",
];

const NET: [&str; 4] = ["--grid", "logsnr:steps=4", "--solver", "ddim"];

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn outputs_that_coincide_are_refused_and_nothing_is_lost() {
    let dir = scratch_dir("outputs");
    let init = write_init(&dir, 4, 2);
    let same = dir.join("same.npy");
    let target = dir.join("target.json");
    std::fs::write(&target, "keep").unwrap();
    let (link, hard) = (dir.join("link.npy"), dir.join("hard.npy"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::hard_link(&target, &hard).unwrap();
    // By name, through a symbolic link, and through a hard link.
    for (out, record) in [(&same, &same), (&link, &target), (&hard, &target)] {
        let (o, r) = (out.to_str().unwrap(), record.to_str().unwrap());
        fails(
            "sample",
            &with(&RING, &["--init", &init, "--out", o, "--record", r]),
            "is the same file as --out",
        );
    }
    assert!(!same.exists());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");

    // A failed --record leaves an existing --out as it was, and names the option, not a temp file.
    let keep = dir.join("keep.npy");
    let k = keep.to_str().unwrap();
    let (code, _, err) = run("sample", &with(&RING, &["--init", &init, "--out", k]));
    assert_eq!(code, 0, "{err}");
    let before = std::fs::read(&keep).unwrap();
    let blocker = dir.join("a_file");
    std::fs::write(&blocker, "x").unwrap();
    let unwritable = blocker.join("r.json");
    let err = fails(
        "sample",
        &with(
            &RING,
            &[
                "--init",
                &init,
                "--out",
                k,
                "--record",
                unwritable.to_str().unwrap(),
            ],
        ),
        "--record",
    );
    assert!(!err.contains(".tmp"), "{err}");
    assert_eq!(std::fs::read(&keep).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // train: --out and --log are one set, as well.
    let net = dir.join("n.safetensors");
    fails(
        "train",
        &[
            "--steps",
            "2",
            "--out",
            net.to_str().unwrap(),
            "--log",
            net.to_str().unwrap(),
        ],
        "is the same file as --out",
    );
}

#[test]
fn sizes_from_input_are_checked_before_allocating() {
    let dir = scratch_dir("sizes");
    let init = write_init(&dir, 4, 2);
    let huge = dir.join("huge.npy");
    raw_npy(
        &huge,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 2), }",
        &[],
    );
    assert_eq!(std::fs::metadata(&huge).unwrap().len(), 128);
    let out = dir.join("x.npy");
    let o = out.to_str().unwrap();
    fails(
        "sample",
        &with(&RING, &["--init", huge.to_str().unwrap(), "--out", o]),
        "header claims shape (1000000000000, 2)",
    );
    let deep = patched_net(&dir, "depth", "1000000000000");
    fails(
        "sample",
        &with(&NET, &["--net", &deep, "--init", &init, "--out", o]),
        "net_depth.safetensors: field `depth`",
    );
    for (grid, needle) in [
        (
            "logsnr:steps=10000000000",
            "exceeds the limit of 1000000 steps",
        ),
        (
            "time-uniform:steps=18446744073709551615",
            "exceeds the limit of 1000000 steps",
        ),
    ] {
        fails(
            "sample",
            &[
                "--problem",
                "ring2d",
                "--grid",
                grid,
                "--solver",
                "ddim",
                "--init",
                &init,
                "--out",
                o,
            ],
            needle,
        );
    }
    let net = dir.join("n.safetensors");
    let n = net.to_str().unwrap();
    fails(
        "train",
        &["--depth", "1000000000", "--out", n],
        "must be in 1..=1024",
    );
    fails(
        "train",
        &["--width", "10000000000", "--out", n],
        "exceeds the limit of 65536",
    );
    fails(
        "train",
        &["--batch", "100000000000", "--out", n],
        "entries exceed the limit",
    );
    fails(
        "sample",
        &with(
            &RING,
            &["--init", "prior", "--n", "1000000000000", "--out", o],
        ),
        "exceed the limit",
    );
    assert!(!out.exists() && !net.exists());
}

#[test]
fn bad_values_are_refused_up_front() {
    let dir = scratch_dir("values");
    let init = write_init(&dir, 4, 2);
    let out = dir.join("c.json");
    let o = out.to_str().unwrap();
    let gauss = [
        "--problems",
        "gauss4",
        "--schedules",
        "edm",
        "--grids",
        "karras",
        "--solver",
        "heun",
        "--out",
        o,
    ];
    fails(
        "convergence",
        &with(&gauss, &["--samples", "0"]),
        "--samples: 0 is too few",
    );
    fails(
        "convergence",
        &with(&gauss, &["--nfe", "0"]),
        "--nfe: target 0 is not in 1..=1000000",
    );
    fails(
        "convergence",
        &with(&gauss, &["--nfe", "1"]),
        "no unit produced a point",
    );
    fails(
        "convergence",
        &[
            "--grids",
            "file",
            "--problems",
            "gauss4",
            "--schedules",
            "edm",
            "--out",
            o,
        ],
        "'file' is not a grid that a sweep can refine",
    );
    fails(
        "sde",
        &["--problems", "gauss4", "--paths", "0", "--out", o],
        "--paths: 0 is too few",
    );
    fails(
        "learned_vs_exact",
        &["--samples", "1", "--out", o],
        "--samples: 1 is too few",
    );
    assert!(!out.exists());

    let x = dir.join("x.npy");
    let xs = x.to_str().unwrap();
    let ring = |solver: &'static str| -> Vec<String> {
        [
            "--problem",
            "ring2d",
            "--grid",
            "logsnr:steps=5",
            "--solver",
            solver,
            "--init",
            &init,
            "--out",
            xs,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = ring("dpm-adaptive:theta=5");
    fails(
        "sample",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "0 < theta < 1",
    );
    let args = ring("euler-ancestral:eta=-1");
    let err = fails(
        "sample",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "is not in [0, inf)",
    );
    assert!(err.len() < 200, "{err}");
    let net = dir.join("n.safetensors");
    let log = dir.join("n.json");
    fails(
        "train",
        &[
            "--lr",
            "1e6",
            "--steps",
            "300",
            "--out",
            net.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
        "training diverged",
    );
    assert!(!net.exists() && !log.exists() && !x.exists());
}

#[test]
fn messages_name_the_input() {
    let dir = scratch_dir("messages");
    let init = write_init(&dir, 4, 2);
    let cube = dir.join("cube.npy");
    raw_npy(
        &cube,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }",
        &[0u8; 64],
    );
    let single = dir.join("single.npy");
    raw_npy(
        &single,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }",
        &[0u8; 32],
    );
    let out = dir.join("x.npy");
    let o = out.to_str().unwrap();
    fails(
        "sample",
        &with(&RING, &["--init", cube.to_str().unwrap(), "--out", o]),
        "cube.npy: expected a 2-D array (N, d), got a 3-D array of shape (2, 2, 2)",
    );
    fails(
        "sample",
        &with(&RING, &["--init", single.to_str().unwrap(), "--out", o]),
        "expected float64 entries (dtype '<f8'), got dtype '<f4'",
    );
    let bad = patched_net(&dir, "schedule", "vp-linear:beta9=1");
    fails(
        "sample",
        &with(&NET, &["--net", &bad, "--init", &init, "--out", o]),
        "net_schedule.safetensors: field `__metadata__.schedule`: schedule 'vp-linear:beta9=1'",
    );
    fails(
        "sample",
        &with(&RING, &["--init", &init, "--n", "5", "--out", o]),
        "--n and --seed apply to --init prior|standard",
    );
    assert!(!out.exists());
}

/// The prior draws of `sample --init prior|standard` are the library's draws at the grid's
/// first time, and the run equals the library's run on them; on success, stderr is quiet when it
/// is not a terminal.
#[test]
fn sample_from_the_prior_without_an_init_file() {
    let dir = scratch_dir("prior");
    let out = dir.join("x.npy");
    let o = out.to_str().unwrap();
    let grid_spec = "logsnr:steps=6";
    let mixture = problems::load("aniso16").unwrap();
    let vp = schedule::parse("vp-linear").unwrap();
    let grid = Grid::parse(grid_spec, vp.as_ref()).unwrap();
    let at = vp.level(grid.times[0]);
    let solve = |x0: &Array2<f64>| {
        let env = Env {
            schedule: vp.as_ref(),
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        let mut built = solver::build("dpm-solver++", &env).unwrap();
        let model = Model::new(&mixture, vp.as_ref());
        solver::integrate(built.solver.as_mut(), &model, &grid, x0.view()).unwrap()
    };
    let base = [
        "--problem",
        "aniso16",
        "--grid",
        grid_spec,
        "--solver",
        "dpm-solver++",
        "--n",
        "50",
        "--seed",
        "9",
        "--out",
        o,
    ];
    let (code, _, err) = run("sample", &with(&base, &["--init", "prior"]));
    assert_eq!((code, err.as_str()), (0, ""));
    let want = solve(&mixture.sample_pt(50, &at, 9));
    assert_eq!(io::read_npy(&out).unwrap(), want);
    let (code, _, err) = run("sample", &with(&base, &["--init", "standard"]));
    assert_eq!(code, 0, "{err}");
    let z = pfode::rng::standard_normal(50, 16, 9, 0) * at.sigma;
    assert_eq!(io::read_npy(&out).unwrap(), solve(&z));
    // The network's metadata names its problem, whose p_T `prior` draws.
    let (code, _, err) = run(
        "sample",
        &[
            "--net",
            "results/models/ring2d.safetensors",
            "--grid",
            "logsnr:steps=4",
            "--solver",
            "ddim",
            "--init",
            "prior",
            "--n",
            "7",
            "--out",
            o,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(io::read_npy(&out).unwrap().dim(), (7, 2));
    // --schedule defaults to vp-linear for a problem.
    let rec = dir.join("r.json");
    let (code, _, err) = run(
        "sample",
        &with(
            &base,
            &["--init", "prior", "--record", rec.to_str().unwrap()],
        ),
    );
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    assert_eq!(r["schedule"], "vp-linear:beta0=0.1,beta1=20");
    assert_eq!(r["init"]["kind"], "prior");
    assert_eq!(r["init"]["n"], 50);
    assert_eq!(r["nfe"], 6);
}

#[test]
fn problem_samples_and_their_plots() {
    let dir = scratch_dir("plots");
    let p0 = dir.join("p0.npy");
    let (code, stdout, err) = run(
        "problems",
        &[
            "sample",
            "--problem",
            "ring2d",
            "--n",
            "300",
            "--seed",
            "4",
            "--out",
            p0.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("300 draws of p_0"), "{stdout}");
    let ring = problems::load("ring2d").unwrap();
    assert_eq!(io::read_npy(&p0).unwrap(), ring.sample_p0(300, 4));
    let pt = dir.join("pt.npy");
    let (code, _, err) = run(
        "problems",
        &[
            "sample",
            "--problem",
            "aniso16",
            "--n",
            "200",
            "--t",
            "0.3",
            "--out",
            pt.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let aniso = problems::load("aniso16").unwrap();
    let at = schedule::parse("vp-linear").unwrap().level(0.3);
    assert_eq!(io::read_npy(&pt).unwrap(), aniso.sample_pt(200, &at, 0));
    assert_eq!(aniso.dim(), 16);

    let plots = dir.join("plots");
    let pd = plots.to_str().unwrap();
    let (code, stdout, err) = run(
        "plot",
        &[p0.to_str().unwrap(), "--problem", "ring2d", "--out-dir", pd],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for ext in ["png", "svg"] {
        let f = plots.join(format!("samples_p0.{ext}"));
        assert!(std::fs::metadata(&f).unwrap().len() > 1000, "{f:?}");
    }
    let (code, _, err) = run(
        "plot",
        &[
            pt.to_str().unwrap(),
            "--problem",
            "aniso16",
            "--t",
            "0.3",
            "--dims",
            "0,3,7",
            "--out-dir",
            pd,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(plots.join("samples_pt.svg")).unwrap();
    for pair in ["x[3] vs x[0]", "x[7] vs x[0]", "x[7] vs x[3]"] {
        assert!(svg.contains(pair), "{pair}");
    }
    fails(
        "plot",
        &[
            p0.to_str().unwrap(),
            "--problem",
            "aniso16",
            "--out-dir",
            pd,
        ],
        "dimension mismatch",
    );
    fails(
        "plot",
        &[p0.to_str().unwrap(), "--dims", "0,2", "--out-dir", pd],
        "--dims: coordinate 2 is not below d = 2",
    );
}

/// The marginal of a mixture on two coordinates (what a pairs panel shades) keeps the weights
/// and takes the sub-vectors of the means and the sub-blocks of the covariances.
#[test]
fn marginal_of_a_mixture_is_its_sub_block() {
    let m = problems::load("aniso16").unwrap();
    let sub = m.marginal(&[5, 2]).unwrap();
    assert_eq!(sub.dim(), 2);
    for k in 0..m.n_components() {
        let (full, part) = (&m.spec().covs[k], &sub.spec().covs[k]);
        assert_eq!(part[0][0], full[5][5]);
        assert_eq!(part[0][1], full[5][2]);
        assert_eq!(part[1][1], full[2][2]);
        assert_eq!(
            sub.spec().means[k],
            vec![m.spec().means[k][5], m.spec().means[k][2]]
        );
    }
    assert!(m.marginal(&[16]).is_err());
}
