//! Tables from a results file: `table RESULTS.json [--out-dir results/tables]` writes
//! KIND.md (Markdown) and KIND.tex (LaTeX, booktabs). See `pfode::study::table`.

use clap::Parser;
use pfode::study::{self, table};
use pfode::Result;
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
    let kind = study::kind(&args.results)?;
    let (tables, provenance) = (kind.tables)(&args.results)?;
    for path in table::write(&tables, &provenance, &args.out_dir, kind.name)? {
        println!("{}", path.display());
    }
    Ok(())
}

fn main() {
    let args: Args = pfode::study::cli_args();
    pfode::study::exit_on_error(run(&args));
}
