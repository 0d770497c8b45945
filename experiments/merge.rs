//! Joins results files of one study and config (shards or partial runs):
//! `merge --out FILE PART.json...`. The merged document equals what one run would write, apart
//! from its provenance, which lists the parts' provenance under `merged_from`.

use clap::Parser;
use pfode::study::convergence::Convergence;
use pfode::study::learned::Learned;
use pfode::study::ot_gap::OtGap;
use pfode::study::sde::Sde;
use pfode::study::{self, kind_of};
use pfode::{Error, Result};
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
    let kind = kind_of(&args.parts[0])?;
    let parts: Vec<&Path> = args.parts.iter().map(|p| p.as_path()).collect();
    match kind.as_str() {
        "convergence" => study::merge::<Convergence>(&parts, &args.out).map(|_| ()),
        "ot_gap" => study::merge::<OtGap>(&parts, &args.out).map(|_| ()),
        "flow_maps" => study::merge::<pfode::study::flow_maps::FlowMaps>(&parts, &args.out)
            .map(|_| ()),
        "likelihood" => {
            study::merge::<pfode::study::likelihood::LikelihoodStudy>(&parts, &args.out).map(|_| ())
        }
        "sde" => study::merge::<Sde>(&parts, &args.out).map(|_| ()),
        "learned_vs_exact" => study::merge::<Learned>(&parts, &args.out).map(|_| ()),
        other => Err(Error::invalid(
            args.parts[0].display().to_string(),
            Some("kind".into()),
            format!("cannot merge results of kind '{other}' (valid: convergence, ot_gap, sde, learned_vs_exact, flow_maps, likelihood)"),
        )),
    }
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
