//! Output helpers: atomic writes (never a partial file) and provenance.

use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// Writes `contents` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: impl AsRef<Path>, contents: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, "not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The git revision of the working tree (suffixed `-dirty` when tracked files have uncommitted
/// changes), or `unknown` outside a repository; `PFODE_GIT_REVISION`, when set, takes its place
/// (for binaries built from a commit and run on another machine). Read once per process, so
/// that a run which rewrites tracked result files records the revision it started from.
pub fn git_revision() -> String {
    static REVISION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REVISION.get_or_init(read_git_revision).clone()
}

fn read_git_revision() -> String {
    if let Ok(rev) = std::env::var("PFODE_GIT_REVISION") {
        return rev;
    }
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(rev) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".into(),
    }
}

/// Reads an (N, d) float64 `.npy` file; a one-line error names the file and what is wrong.
pub fn read_npy(path: impl AsRef<Path>) -> Result<ndarray::Array2<f64>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let x: ndarray::Array2<f64> = ndarray_npy::ReadNpyExt::read_npy(file).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            None,
            format!("expected a 2-D float64 .npy array: {e}"),
        )
    })?;
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            path.display().to_string(),
            None,
            format!("entry {i} (row {}) is {v}", i / x.ncols().max(1)),
        ));
    }
    Ok(x)
}

/// Writes an array as `.npy`, atomically.
pub fn write_npy(path: impl AsRef<Path>, x: &ndarray::Array2<f64>) -> Result<()> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(x, &mut bytes).map_err(|e| Error::io(path.as_ref(), e))?;
    write_atomic(path, &bytes)
}
