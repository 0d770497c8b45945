//! Files in and out: output sets committed together (never a partial or lost file), `.npy`
//! arrays checked against the file's real length, and provenance.

use crate::error::{Error, Result};
use crate::limits;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Output files committed together. Each is declared first (so that two outputs that are the
/// same file, by name, through a symbolic link or as hard links, are refused before any work),
/// then given its bytes; [`Outputs::commit`] writes every one to a temporary file beside its
/// target and renames them into place only when all are written. A failure removes the
/// temporary files and leaves every existing file as it was.
#[derive(Default)]
pub struct Outputs {
    files: Vec<Output>,
}

struct Output {
    label: String,
    path: PathBuf,
    identity: PathBuf,
    bytes: Option<Vec<u8>>,
}

/// The slot of one declared output.
#[derive(Debug, Clone, Copy)]
pub struct Slot(usize);

fn describe(label: &str, path: &Path) -> String {
    if label.is_empty() {
        path.display().to_string()
    } else {
        format!("{label} {}", path.display())
    }
}

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares output `path`, named `label` (the option that gave it, e.g. `--out`) in errors.
    pub fn declare(&mut self, label: &str, path: &Path) -> Result<Slot> {
        let identity = identity(path);
        if path.file_name().is_none() || path.is_dir() {
            return Err(Error::io(
                describe(label, path),
                "not a file name (a directory or ends in `..`)",
            ));
        }
        for other in &self.files {
            if other.identity == identity || same_inode(&other.path, path) {
                return Err(Error::io(
                    describe(label, path),
                    format!(
                        "is the same file as {}; choose distinct output paths",
                        describe(&other.label, &other.path)
                    ),
                ));
            }
        }
        self.files.push(Output {
            label: label.to_string(),
            path: path.to_path_buf(),
            identity,
            bytes: None,
        });
        Ok(Slot(self.files.len() - 1))
    }

    /// The contents of a declared output.
    pub fn set(&mut self, slot: Slot, bytes: Vec<u8>) {
        self.files[slot.0].bytes = Some(bytes);
    }

    /// Writes every output that was given contents (temporary files first, then renames).
    pub fn commit(self) -> Result<()> {
        let files: Vec<&Output> = self.files.iter().filter(|f| f.bytes.is_some()).collect();
        let mut staged: Vec<PathBuf> = Vec::new();
        let cleanup = |staged: &[PathBuf]| {
            for tmp in staged {
                let _ = std::fs::remove_file(tmp);
            }
        };
        for f in &files {
            let fail = |e: &dyn std::fmt::Display| {
                Error::io(describe(&f.label, &f.path), format!("cannot write: {e}"))
            };
            if let Some(dir) = f.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    cleanup(&staged);
                    return Err(fail(&e));
                }
            }
            let name = f.path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = f
                .path
                .with_file_name(format!(".{name}.{}.tmp", std::process::id()));
            let bytes = f.bytes.as_deref().unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, bytes) {
                let _ = std::fs::remove_file(&tmp);
                cleanup(&staged);
                return Err(fail(&e));
            }
            staged.push(tmp);
        }
        for (i, (f, tmp)) in files.iter().zip(&staged).enumerate() {
            if let Err(e) = std::fs::rename(tmp, &f.path) {
                cleanup(&staged[i..]);
                return Err(Error::io(
                    describe(&f.label, &f.path),
                    format!("cannot write: {e}"),
                ));
            }
        }
        Ok(())
    }
}

/// The absolute path `path` names once symbolic links are followed, for paths that need not
/// exist yet: the longest existing ancestor is canonicalized and the rest appended, `.` and `..`
/// resolved.
fn identity(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut existing = absolute.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            existing = c;
            break;
        }
        let mut parts = existing.components();
        match parts.next_back() {
            Some(last @ (Component::Normal(_) | Component::CurDir | Component::ParentDir)) => {
                rest.push(last.as_os_str().to_os_string());
                existing = parts.as_path().to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) => {}
            _ => out.push(part),
        }
    }
    out
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// Writes `contents` to `path` through a temporary file beside it (never a partial file).
pub fn write_atomic(path: impl AsRef<Path>, contents: &[u8]) -> Result<()> {
    let mut outputs = Outputs::new();
    let slot = outputs.declare("", path.as_ref())?;
    outputs.set(slot, contents.to_vec());
    outputs.commit()
}

/// The git revision of the code: `PFODE_GIT_REVISION` when set (for binaries built from a
/// commit and run on another machine); else HEAD of the checkout the binary was built from,
/// suffixed `-dirty` when tracked files other than results outputs have uncommitted changes
/// (a rewritten `results/` file does not change the code; a changed network weight file under
/// `results/` does); else the HEAD recorded at build time; else `unknown`. Read once per process,
/// so that a run which rewrites tracked files records the state it started from.
pub fn git_revision() -> String {
    static REVISION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REVISION.get_or_init(read_git_revision).clone()
}

/// Whether a tracked path's change leaves the code as committed: results outputs, not the
/// network weights under `results/` that studies read.
fn is_output(path: &str) -> bool {
    path.starts_with("results/") && !path.ends_with(".safetensors")
}

fn read_git_revision() -> String {
    if let Ok(rev) = std::env::var("PFODE_GIT_REVISION") {
        return rev;
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            let rev = rev.trim().to_string();
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| {
                    s.lines().any(|l| {
                        let path = l.get(3..).unwrap_or("");
                        let path = path.rsplit(" -> ").next().unwrap_or(path);
                        !is_output(path.trim_matches('"'))
                    })
                })
                .unwrap_or(false);
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => option_env!("PFODE_BUILD_REVISION")
            .filter(|r| !r.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    }
}

/// The machine a figure came from: the CPU's model (with vendor, family, model and stepping
/// where the OS reports them, since a virtual machine's model name may be generic), the vector
/// features detected at run time, and the logical cores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub features: Vec<String>,
    pub cores: usize,
    pub arch: String,
}

impl std::fmt::Display for Machine {
    /// One line: `CPU, N cores, arch, features: f1 f2 ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} cores, {}, features: {}",
            self.cpu,
            self.cores,
            self.arch,
            self.features.join(" ")
        )
    }
}

/// This machine ([`Machine`]).
pub fn machine() -> Machine {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut cpu = field("model name")
        .or_else(|| field("Model"))
        .unwrap_or_else(|| "unknown".into());
    if let (Some(vendor), Some(family), Some(model)) =
        (field("vendor_id"), field("cpu family"), field("model"))
    {
        let stepping = field("stepping").unwrap_or_default();
        cpu = format!("{cpu} ({vendor} family {family} model {model} stepping {stepping})");
    }
    let mut features: Vec<String> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        for (name, on) in [
            ("sse4.2", has!("sse4.2")),
            ("avx", has!("avx")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512dq", has!("avx512dq")),
            ("avx512vl", has!("avx512vl")),
        ] {
            if on {
                features.push(name.into());
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        features.push("neon".into());
    }
    Machine {
        cpu,
        features,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        arch: std::env::consts::ARCH.into(),
    }
}

/// Reads an (N, d) float64 `.npy` file; a one-line error names the file and what is wrong.
pub fn read_npy(path: impl AsRef<Path>) -> Result<ndarray::Array2<f64>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    npy_from_bytes(&bytes, &path.display().to_string())
}

/// Parses `.npy` bytes holding an (N, d) float64 array with finite entries; `source` names them
/// in errors. The header is checked against the real length before anything is allocated.
pub fn npy_from_bytes(bytes: &[u8], source: &str) -> Result<ndarray::Array2<f64>> {
    use ndarray_npy::npy::header::Header;
    let bad = |reason: String| Error::invalid(source, None, reason);
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic string)".into()));
    }
    let (prefix, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let data_start = prefix + header_len;
    if data_start > bytes.len() {
        return Err(bad(format!(
            "the header claims {header_len} bytes but the file has {} after the prefix",
            bytes.len() - prefix
        )));
    }
    let header = Header::from_reader(&mut &bytes[..data_start]).map_err(|e| {
        let e = e.to_string();
        let first = e.lines().next().unwrap_or("").trim_end_matches([':', ' ']);
        bad(format!("malformed .npy header: {first}"))
    })?;
    let shape = &header.shape;
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if shape.len() != 2 {
        return Err(bad(format!(
            "expected a 2-D array (N, d), got a {}-D array of shape {shape_text}",
            shape.len()
        )));
    }
    let descr = header.type_descriptor.to_string();
    if descr != "'<f8'" && descr != "'>f8'" {
        return Err(bad(format!(
            "expected float64 entries (dtype '<f8'), got dtype {descr}"
        )));
    }
    let data = bytes.len() - data_start;
    let need = shape[0]
        .checked_mul(shape[1])
        .and_then(|n| n.checked_mul(8))
        .filter(|&n| n == data)
        .ok_or_else(|| {
            bad(format!(
                "the header claims shape {shape_text} ({} bytes of float64), but the file holds {data} bytes of data",
                match shape[0].checked_mul(shape[1]).and_then(|n| n.checked_mul(8)) {
                    Some(n) => n.to_string(),
                    None => "more than 2^64".into(),
                }
            ))
        })?;
    limits::check_elements(source, "shape", need / 8)?;
    let x: ndarray::Array2<f64> = ndarray_npy::ReadNpyExt::read_npy(bytes)
        .map_err(|e| bad(format!("malformed .npy: {e}")))?;
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(format!(
            "entry {i} (row {}) is {v}",
            i / x.ncols().max(1)
        )));
    }
    Ok(x)
}

/// The `.npy` bytes of an array.
pub fn npy_bytes(x: &ndarray::Array2<f64>) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(x, &mut bytes)
        .map_err(|e| Error::Domain(format!("npy: {e}")))?;
    Ok(bytes)
}

/// Writes an array as `.npy`, atomically.
pub fn write_npy(path: impl AsRef<Path>, x: &ndarray::Array2<f64>) -> Result<()> {
    write_atomic(path, &npy_bytes(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resolves_dots_and_missing_parts() {
        let dir = std::env::temp_dir().join(format!("pfode-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = identity(&dir.join("new/../x.npy"));
        let b = identity(&dir.join("./x.npy"));
        assert_eq!(a, b);
        assert_ne!(identity(&dir.join("y.npy")), b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn outputs_only_paths_count_as_unchanged_code() {
        assert!(is_output("results/convergence.json"));
        assert!(is_output("results/plots/a.png"));
        assert!(!is_output("results/models/ring2d.safetensors"));
        assert!(!is_output("src/io.rs"));
    }
}
