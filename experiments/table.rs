//! Tables from a results file: `table RESULTS.json [--out-dir results/tables]` writes
//! KIND.md (Markdown) and KIND.tex (LaTeX, booktabs). See `pfode::study::table`.

use clap::Parser;
use pfode::study::{self, convergence::Convergence, kind_of, ot_gap::OtGap, sde::Sde, table};
use pfode::{io, Error, Result};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "table",
    about = "Markdown and LaTeX (booktabs) tables from a results file"
)]
struct Args {
    results: PathBuf,
    #[arg(long, default_value = "results/tables")]
    out_dir: PathBuf,
}

fn run(args: &Args) -> Result<()> {
    let kind = kind_of(&args.results)?;
    let (tables, provenance) = match kind.as_str() {
        "convergence" => {
            let doc = study::read::<Convergence>(&args.results)?;
            (table::convergence(&doc), doc.provenance)
        }
        "ot_gap" => {
            let doc = study::read::<OtGap>(&args.results)?;
            (table::ot_gap(&doc), doc.provenance)
        }
        "sde" => {
            let doc = study::read::<Sde>(&args.results)?;
            (table::sde(&doc), doc.provenance)
        }
        "learned_vs_exact" => {
            let doc = study::read::<pfode::study::learned::Learned>(&args.results)?;
            (table::learned(&doc), doc.provenance)
        }
        "guidance" => {
            let doc = study::read::<pfode::study::guidance::GuidanceStudy>(&args.results)?;
            (table::guidance(&doc), doc.provenance)
        }
        "flow_maps" => {
            let doc = study::read::<pfode::study::flow_maps::FlowMaps>(&args.results)?;
            (table::flow_maps(&doc), doc.provenance)
        }
        "likelihood" => {
            let doc = study::read::<pfode::study::likelihood::LikelihoodStudy>(&args.results)?;
            (table::likelihood(&doc), doc.provenance)
        }
        other => {
            return Err(Error::invalid(
                args.results.display().to_string(),
                Some("kind".into()),
                format!(
                    "no tables for results of kind '{other}' (valid: convergence, ot_gap, sde, learned_vs_exact, guidance, flow_maps, likelihood)"
                ),
            ))
        }
    };
    for (ext, text) in [
        ("md", table::markdown(&tables, &provenance)),
        ("tex", table::latex(&tables, &provenance)),
    ] {
        let path = args.out_dir.join(format!("{kind}.{ext}"));
        io::write_atomic(&path, text.as_bytes())?;
        println!("{}", path.display());
    }
    Ok(())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
