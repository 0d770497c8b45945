//! Joins results files of one study and config (shards or partial runs):
//! `merge --out FILE PART.json...`. The merged document equals what one run would write, apart
//! from its provenance, which lists the parts' provenance under `merged_from`.

use clap::Parser;
use pfode::study;
use pfode::Result;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "merge",
    about = "Merge shard or partial results files of one study and config"
)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(required = true)]
    parts: Vec<PathBuf>,
}

fn run(args: &Args) -> Result<()> {
    let kind = study::kind(&args.parts[0])?;
    let parts: Vec<&Path> = args.parts.iter().map(|p| p.as_path()).collect();
    (kind.merge)(&parts, &args.out)
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
