//! Writes the built-in problems to JSON files, or checks mixture files.
//!
//! `problems [--out DIR]` writes ring2d, aniso16, gauss4, mix64 and gauss2c to DIR (default
//! `results/problems`), each with a provenance block (command, seed, git revision).
//! `problems --check FILE...` validates mixture files and prints one summary line per file.
//! `problems sample --problem P --n N [--seed S] [--t T --schedule SPEC] --out X.npy` writes
//! seeded draws of p_0 (or of p_t) as an (N, d) float64 `.npy`.

use clap::{Parser, Subcommand};
use pfode::gmm::GaussianMixture;
use pfode::{io, limits, problems, schedule, Oracle, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "problems",
    about = "Write the built-in Gaussian-mixture problems to JSON, or validate mixture files",
    after_help = "File format: {\"weights\": [K], \"means\": [[d], ...], \"covs\": [[[d x d]], ...]}\n\
                  Errors name the file and field and exit with status 2."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory the built-in problems are written to.
    #[arg(long, default_value = "results/problems")]
    out: PathBuf,
    /// Validate these mixture files (or built-in names) instead of writing.
    #[arg(long, num_args = 1..)]
    check: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Write seeded draws of p_0, or of p_t with --t, as an (N, d) float64 .npy.
    Sample {
        /// A built-in problem or a mixture JSON file.
        #[arg(long)]
        problem: String,
        /// The number of draws.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Draw from p_t = the data noised to time t of --schedule (default: p_0, the data).
        #[arg(long)]
        t: Option<f64>,
        #[arg(long, default_value = "vp-linear")]
        schedule: String,
        #[arg(long)]
        out: PathBuf,
    },
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
        m.dim(),
        m.n_components()
    )
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Sample {
        problem,
        n,
        seed,
        t,
        schedule,
        out,
    }) = &args.command
    {
        let mixture = problems::load(problem)?;
        limits::elements("--n", "rows", *n, mixture.dim())?;
        let x = match t {
            None => mixture.sample_p0(*n, *seed),
            Some(t) => {
                let s = schedule::parse(schedule)?;
                s.check_t(*t)
                    .map_err(|e| pfode::Error::Domain(format!("--t: {e}")))?;
                mixture.sample_pt(*n, &s.level(*t), *seed)
            }
        };
        io::write_npy(out, &x)?;
        let law = match t {
            None => "p_0".to_string(),
            Some(t) => format!("p_t at t = {t} of {schedule}"),
        };
        println!(
            "{n} draws of {law} ({problem}, d = {}, seed {seed}) -> {}",
            mixture.dim(),
            out.display()
        );
        return Ok(());
    }
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
    pfode::study::exit_on_error(run(pfode::study::cli_args()));
}
