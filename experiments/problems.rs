//! Writes the built-in problems to JSON files, or checks mixture files.
//!
//! `problems [--out DIR]` writes ring2d, aniso16, gauss4 and mix64 to DIR (default
//! `results/problems`), each with a provenance block (command, seed, git revision).
//! `problems --check FILE...` validates mixture files and prints one summary line per file.

use clap::Parser;
use pfode::gmm::GaussianMixture;
use pfode::{problems, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "problems",
    about = "Write the built-in Gaussian-mixture problems to JSON, or validate mixture files",
    after_help = "File format: {\"weights\": [K], \"means\": [[d], ...], \"covs\": [[[d x d]], ...]}\n\
                  Errors name the file and field and exit with status 2."
)]
struct Args {
    /// Directory the built-in problems are written to.
    #[arg(long, default_value = "results/problems")]
    out: PathBuf,
    /// Validate these mixture files (or built-in names) instead of writing.
    #[arg(long, num_args = 1..)]
    check: Vec<String>,
}

fn summary(name: &str, m: &GaussianMixture) -> String {
    let conds: Vec<f64> = (0..m.n_components())
        .map(|k| {
            let (_, l) = m.eigen(k);
            l[l.len() - 1] / l[0]
        })
        .collect();
    let (lo, hi) = conds
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &c| (a.min(c), b.max(c)));
    let wmin = m.weights().iter().cloned().fold(f64::INFINITY, f64::min);
    format!(
        "{name}: d = {}, K = {}, smallest weight {wmin:.4}, covariance condition numbers {lo:.4} .. {hi:.4}",
        pfode::Oracle::dim(m),
        m.n_components()
    )
}

fn run(args: Args) -> Result<()> {
    if !args.check.is_empty() {
        for f in &args.check {
            println!("{}", summary(f, &problems::load(f)?));
        }
        return Ok(());
    }
    for (name, mixture, path) in
        problems::write_builtins(&args.out, "cargo run --release --bin problems")?
    {
        println!("{}  ->  {}", summary(name, &mixture), path.display());
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
