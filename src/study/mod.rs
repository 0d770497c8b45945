//! Sweeps: the machinery every experiment binary shares.
//!
//! A study is a list of independent *units* (one solver on one problem, schedule and grid, say),
//! each producing a few *points*, plus per-*group* information shared by units (the reference
//! solution of a problem and schedule). Its results file is one JSON document
//! ([`Doc`]): `kind`, `version`, `provenance` (pfode version, git revision, command line, seed,
//! rustc, threads, date, the machine's CPU and vector features), `config`, `shard`, `groups`,
//! `points` and a `summary` recomputed from the points on every write.
//!
//! - **Atomic**: every write is a temporary file renamed over the output.
//! - **Resumable**: every sweep starts afresh unless `--resume`; with it, a unit whose points are
//!   already in the output is skipped. The output is rewritten at least every 10 seconds while a
//!   sweep runs, so an interrupted sweep loses at most the units in flight. Resuming from a file
//!   made with a different config is an error, and the file is not overwritten.
//! - **Shardable**: `--shard i/n` runs the units whose index j in the canonical order has
//!   j mod n = i - 1; [`merge`] joins shard files into the document a single run would write.
//! - **Deterministic**: each unit's numbers depend only on the config and seed, and points are
//!   stored in the canonical unit order, so the document (less its provenance) is the same at any
//!   thread count, with or without sharding and resuming.

pub mod conventions;
pub mod convergence;
pub mod flow_maps;
pub mod guidance;
pub mod learned;
pub mod likelihood;
pub mod ot_gap;
pub mod plot;
pub mod sde;
pub mod table;

use crate::error::{Error, Result};
use crate::io;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a results file came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub pfode_version: String,
    pub git_revision: String,
    pub command: String,
    pub seed: u64,
    pub rustc: String,
    pub threads: usize,
    pub date: String,
    /// The CPU the file was made on (absent in files made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<io::Machine>,
}

impl Provenance {
    pub fn now(seed: u64) -> Self {
        Provenance {
            pfode_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: io::git_revision(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seed,
            rustc: env!("PFODE_RUSTC_VERSION").into(),
            threads: rayon::current_num_threads(),
            date: utc_now(),
            machine: Some(io::machine()),
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `--shard i/n` with 1 <= i <= n.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard '{s}': expected i/n with 1 <= i <= n, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One unit of work: its key (unique within a study) and the group it shares information with.
#[derive(Debug, Clone)]
pub struct Unit {
    pub key: String,
    pub group: String,
}

/// Something stored under a unit or a group key.
pub trait Keyed {
    fn key(&self) -> &str;
}

/// A study: its config, units, the computation of one unit, and the summary of its points.
pub trait Study: Sync {
    const KIND: &'static str;
    const VERSION: u32;
    type Config: Serialize + DeserializeOwned + PartialEq + Clone + Sync;
    type Group: Serialize + DeserializeOwned + Clone + PartialEq + Send + Keyed;
    type Point: Serialize + DeserializeOwned + Clone + PartialEq + Send + Keyed;
    type Summary: Serialize + DeserializeOwned + Default;

    fn units(config: &Self::Config) -> Result<Vec<Unit>>;
    /// The points of unit `units[i]` and the information of its group.
    fn run(&self, config: &Self::Config, unit: &Unit) -> Result<(Self::Group, Vec<Self::Point>)>;
    fn summarize(
        config: &Self::Config,
        groups: &[Self::Group],
        points: &[Self::Point],
    ) -> Self::Summary;
    /// Whether units must run one at a time (when they are timed).
    fn sequential(_config: &Self::Config) -> bool {
        false
    }
}

/// A results file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Doc<S: Study> {
    pub kind: String,
    pub version: u32,
    pub provenance: Provenance,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<Provenance>,
    pub shard: Option<String>,
    pub config: S::Config,
    pub groups: Vec<S::Group>,
    pub points: Vec<S::Point>,
    pub summary: S::Summary,
}

fn read_value(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            None,
            format!("not valid JSON: {e}"),
        )
    })
}

/// Reads a results file of study `S`; errors name the file and what is wrong.
pub fn read<S: Study>(path: &Path) -> Result<Doc<S>> {
    let value = read_value(path)?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    if kind != S::KIND {
        return Err(Error::invalid(
            path.display().to_string(),
            Some("kind".into()),
            format!("expected a '{}' results file, found '{kind}'", S::KIND),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            None,
            format!("malformed '{kind}' results: {e}"),
        )
    })
}

/// The `kind` of a results file.
pub fn kind_of(path: &Path) -> Result<String> {
    read_value(path)?
        .get("kind")
        .and_then(|k| k.as_str())
        .map(String::from)
        .ok_or_else(|| {
            Error::invalid(
                path.display().to_string(),
                Some("kind".into()),
                "missing or not a string",
            )
        })
}

fn write<S: Study>(path: &Path, doc: &Doc<S>) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).expect("results serialize");
    io::write_atomic(path, text.as_bytes())
}

/// Orders groups and points by the canonical unit order and recomputes the summary.
fn assemble<S: Study>(
    config: &S::Config,
    units: &[Unit],
    done: &Finished<S>,
    provenance: Provenance,
    shard: Option<String>,
    merged_from: Vec<Provenance>,
) -> Doc<S> {
    let mut groups: Vec<S::Group> = Vec::new();
    let mut points = Vec::new();
    for unit in units {
        if let Some((g, p)) = done.get(&unit.key) {
            if !groups.iter().any(|h| h.key() == g.key()) {
                groups.push(g.clone());
            }
            points.extend(p.iter().cloned());
        }
    }
    let summary = S::summarize(config, &groups, &points);
    Doc {
        kind: S::KIND.into(),
        version: S::VERSION,
        provenance,
        merged_from,
        shard,
        config: config.clone(),
        groups,
        points,
        summary,
    }
}

/// Finished units: key -> (group information, points).
type Finished<S> = HashMap<String, (<S as Study>::Group, Vec<<S as Study>::Point>)>;

/// Splits a document back into finished units.
fn finished<S: Study>(doc: Doc<S>, units: &[Unit], source: &str) -> Result<Finished<S>> {
    let group_of: HashMap<&str, &str> = units
        .iter()
        .map(|u| (u.key.as_str(), u.group.as_str()))
        .collect();
    let groups: HashMap<String, S::Group> = doc
        .groups
        .into_iter()
        .map(|g| (g.key().to_string(), g))
        .collect();
    let mut out: HashMap<String, (S::Group, Vec<S::Point>)> = HashMap::new();
    for p in doc.points {
        let gkey = group_of.get(p.key()).ok_or_else(|| {
            Error::invalid(
                source,
                Some("points".into()),
                format!("unit '{}' is not in the config", p.key()),
            )
        })?;
        let g = groups.get(*gkey).ok_or_else(|| {
            Error::invalid(
                source,
                Some("groups".into()),
                format!("group '{gkey}' is missing"),
            )
        })?;
        out.entry(p.key().to_string())
            .or_insert_with(|| (g.clone(), Vec::new()))
            .1
            .push(p);
    }
    Ok(out)
}

/// A progress bar on a terminal's stderr; hidden otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The options every sweep binary shares (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The results file [default: results/KIND.json].
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Run only shard i of n (1 <= i <= n); `merge` joins the shard files.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Keep the units already in --out (written with the same config) and run only the rest;
    /// without it a run starts afresh and replaces --out.
    #[arg(long)]
    pub resume: bool,
}

impl SweepArgs {
    /// The results file: --out, or `results/KIND.json`.
    pub fn out<S: Study>(&self) -> std::path::PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| format!("results/{}.json", S::KIND).into())
    }

    /// Runs `study` with these options ([`run`]).
    pub fn run<S: Study>(&self, study: &S, config: &S::Config, seed: u64) -> Result<Doc<S>> {
        run(
            study,
            config,
            seed,
            &self.out::<S>(),
            self.shard,
            self.resume,
        )
    }
}

/// Runs the units of `shard` and writes the document to `out`; with `resume`, the units already
/// in `out` are kept and skipped (their provenance is listed under `merged_from`), and one line
/// on stderr says how many; without it the run starts afresh. The document is checkpointed into
/// `out` every 10 s, so that an interrupted run can be resumed. A run that produces no point at
/// all is an error and writes nothing.
pub fn run<S: Study>(
    study: &S,
    config: &S::Config,
    seed: u64,
    out: &Path,
    shard: Option<Shard>,
    resume: bool,
) -> Result<Doc<S>> {
    let units = S::units(config)?;
    let mine: Vec<&Unit> = units
        .iter()
        .enumerate()
        .filter(|(j, _)| shard.is_none_or(|s| j % s.count == s.index - 1))
        .map(|(_, u)| u)
        .collect();
    let source = out.display().to_string();
    let mut done = HashMap::new();
    let mut earlier = Vec::new();
    if resume && out.exists() {
        let old = read::<S>(out)?;
        if old.config != *config {
            return Err(Error::invalid(
                source,
                Some("config".into()),
                "was written with a different configuration; choose another --out, or run without --resume to start afresh",
            ));
        }
        earlier.push(old.provenance.clone());
        earlier.extend(old.merged_from.iter().cloned());
        done = finished::<S>(old, &units, &source)?;
    }
    let pending: Vec<&Unit> = mine
        .iter()
        .filter(|u| !done.contains_key(&u.key))
        .cloned()
        .collect();
    if resume {
        match out.exists() {
            true => eprintln!(
                "resuming {} of {} units from {source}",
                mine.len() - pending.len(),
                mine.len()
            ),
            false => eprintln!(
                "--resume: {source} does not exist; running all {} units",
                mine.len()
            ),
        }
    }
    let provenance = Provenance::now(seed);
    let shard_text = shard.map(|s| s.to_string());
    let bar = progress(mine.len() as u64, S::KIND);
    bar.inc((mine.len() - pending.len()) as u64);
    let state = Mutex::new((done, Instant::now()));
    let one = |unit: &&Unit| -> Result<()> {
        let result = study.run(config, unit)?;
        let mut guard = state.lock().expect("lock");
        guard.0.insert(unit.key.clone(), result);
        bar.inc(1);
        if guard.1.elapsed() > Duration::from_secs(10) {
            let doc = assemble::<S>(
                config,
                &units,
                &guard.0,
                provenance.clone(),
                shard_text.clone(),
                earlier.clone(),
            );
            if !doc.points.is_empty() {
                write(out, &doc)?;
            }
            guard.1 = Instant::now();
        }
        Ok(())
    };
    if S::sequential(config) {
        pending.iter().try_for_each(one)?;
    } else {
        pending.par_iter().try_for_each(one)?;
    }
    bar.finish_and_clear();
    let (done, _) = state.into_inner().expect("lock");
    let doc = assemble::<S>(config, &units, &done, provenance, shard_text, earlier);
    if doc.points.is_empty() {
        return Err(Error::Domain(format!(
            "{}: no unit produced a point (is every NFE target below the NFE of one step?); {source} not written",
            S::KIND
        )));
    }
    write(out, &doc)?;
    Ok(doc)
}

/// Joins results files of one study and config (shards, or partial runs) into one document,
/// written to `out`. Units present in several files must agree exactly.
pub fn merge<S: Study>(inputs: &[&Path], out: &Path) -> Result<Doc<S>> {
    let mut config: Option<S::Config> = None;
    let mut all: Finished<S> = HashMap::new();
    let mut sources = Vec::new();
    let mut units = Vec::new();
    for path in inputs {
        let source = path.display().to_string();
        let doc = read::<S>(path)?;
        match &config {
            None => {
                units = S::units(&doc.config)?;
                config = Some(doc.config.clone());
            }
            Some(c) if *c != doc.config => {
                return Err(Error::invalid(
                    source,
                    Some("config".into()),
                    "differs from the first file's config; only runs of one config merge",
                ))
            }
            _ => {}
        }
        sources.push(doc.provenance.clone());
        sources.extend(doc.merged_from.iter().cloned());
        for (key, (g, p)) in finished::<S>(doc, &units, &source)? {
            if let Some((g0, p0)) = all.get(&key) {
                if *g0 != g || *p0 != p {
                    return Err(Error::invalid(
                        source,
                        Some("points".into()),
                        format!("unit '{key}' differs from an earlier file"),
                    ));
                }
            }
            all.insert(key, (g, p));
        }
    }
    let config = config.ok_or_else(|| Error::Domain("merge: no input files".into()))?;
    let seed = sources.first().map(|p| p.seed).unwrap_or(0);
    let doc = assemble::<S>(&config, &units, &all, Provenance::now(seed), None, sources);
    write(out, &doc)?;
    Ok(doc)
}

/// A study kind as the `merge`, `plot` and `table` binaries see it: how to merge its files, plot
/// one and tabulate one.
pub struct Kind {
    pub name: &'static str,
    pub merge: fn(&[&Path], &Path) -> Result<()>,
    pub plot: fn(&Path, &Path) -> Result<Vec<std::path::PathBuf>>,
    pub tables: fn(&Path) -> Result<Tables>,
}

/// A results file's tables and its provenance.
pub type Tables = (Vec<table::Table>, Provenance);

macro_rules! kind {
    ($name:literal, $study:ty, $plot:path, $table:path) => {
        Kind {
            name: $name,
            merge: |parts, out| merge::<$study>(parts, out).map(|_| ()),
            plot: |path, dir| $plot(&read::<$study>(path)?, dir),
            tables: |path| {
                let doc = read::<$study>(path)?;
                Ok(($table(&doc), doc.provenance))
            },
        }
    };
}

fn plot_convergence(
    doc: &Doc<convergence::Convergence>,
    dir: &Path,
) -> Result<Vec<std::path::PathBuf>> {
    plot::convergence(doc, dir, "err_rms")
}

/// Every study kind.
pub const KINDS: &[Kind] = &[
    kind!(
        "convergence",
        convergence::Convergence,
        plot_convergence,
        table::convergence
    ),
    kind!("ot_gap", ot_gap::OtGap, plot::ot_gap, table::ot_gap),
    kind!("sde", sde::Sde, plot::sde, table::sde),
    kind!(
        "learned_vs_exact",
        learned::Learned,
        plot::learned,
        table::learned
    ),
    kind!(
        "guidance",
        guidance::GuidanceStudy,
        plot::guidance,
        table::guidance
    ),
    kind!(
        "flow_maps",
        flow_maps::FlowMaps,
        plot::flow_maps,
        table::flow_maps
    ),
    kind!(
        "likelihood",
        likelihood::LikelihoodStudy,
        plot::likelihood,
        table::likelihood
    ),
    kind!(
        "conventions",
        conventions::Conventions,
        plot::conventions,
        table::conventions
    ),
];

/// The kind of the results file at `path`, or an error naming the file and the valid kinds.
pub fn kind(path: &Path) -> Result<&'static Kind> {
    let name = kind_of(path)?;
    KINDS.iter().find(|k| k.name == name).ok_or_else(|| {
        let valid: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        Error::invalid(
            path.display().to_string(),
            Some("kind".into()),
            format!(
                "unknown results kind '{name}' (valid: {})",
                valid.join(", ")
            ),
        )
    })
}

/// An error in option `option` of a study's config (named as on the command line).
pub fn bad_option(kind: &str, option: &str, reason: impl std::fmt::Display) -> Error {
    Error::Domain(format!("{kind}: --{}: {reason}", option.replace('_', "-")))
}

/// Checks the lists of a study's config: each must be non-empty.
pub fn require_nonempty(kind: &str, lists: &[(&str, usize)]) -> Result<()> {
    match lists.iter().find(|(_, n)| *n == 0) {
        Some((option, _)) => Err(bad_option(kind, option, "the list is empty")),
        None => Ok(()),
    }
}

/// Checks a sweep's NFE targets: each in 1..=[`crate::limits::MAX_NFE`].
pub fn check_nfe_targets(kind: &str, targets: &[usize]) -> Result<()> {
    require_nonempty(kind, &[("nfe", targets.len())])?;
    match targets
        .iter()
        .find(|&&n| n == 0 || n > crate::limits::MAX_NFE)
    {
        Some(n) => Err(bad_option(
            kind,
            "nfe",
            format!("target {n} is not in 1..={}", crate::limits::MAX_NFE),
        )),
        None => Ok(()),
    }
}

/// Groups values by a key, keeping first-appearance order.
pub fn group_by<T, K: Ord + Clone>(items: &[T], key: impl Fn(&T) -> K) -> Vec<(K, Vec<&T>)> {
    let mut order: Vec<K> = Vec::new();
    let mut map: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for it in items {
        let k = key(it);
        if !map.contains_key(&k) {
            order.push(k.clone());
        }
        map.entry(k).or_default().push(it);
    }
    order
        .into_iter()
        .map(|k| {
            let v = map.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

/// Parses the command line; a usage error is one line on stderr and exit status 2 (help and
/// version print in full and exit 0).
pub fn cli_args<T: clap::Parser>() -> T {
    cli_args_from(T::command())
}

/// [`cli_args`] with a command built at run time (e.g. help text listing the registry).
pub fn cli_args_from<T: clap::Parser>(command: clap::Command) -> T {
    command
        .try_get_matches()
        .and_then(|m| T::from_arg_matches(&m))
        .unwrap_or_else(|e| {
            if e.use_stderr() {
                let text = e.render().to_string();
                eprintln!(
                    "{}",
                    text.lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("error: bad arguments")
                );
                std::process::exit(2);
            }
            let _ = e.print();
            std::process::exit(0)
        })
}

/// Ends a binary: on error, one line `error: ...` on stderr and exit status 2.
pub fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

pub use crate::rng::seed_for;

/// One group's slot: filled once, with the data or the message of the error that stopped it.
type GroupCell<T> = OnceLock<std::result::Result<Arc<T>, String>>;

/// Per-group data of a study, computed once by the first unit that needs it; a failure is kept
/// as its message, so that every unit of the group reports it.
pub struct GroupCache<T>(Mutex<HashMap<String, Arc<GroupCell<T>>>>);

impl<T> Default for GroupCache<T> {
    fn default() -> Self {
        GroupCache(Mutex::default())
    }
}

impl<T> GroupCache<T> {
    /// The data of group `key`, built by `build` if no unit has asked for it yet.
    pub fn get(&self, key: &str, build: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let cell = self
            .0
            .lock()
            .expect("lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| build().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::Domain)
    }
}

/// The step counts of a fixed-NFE sweep as (target, steps): for each NFE target in order, the
/// largest step count (at most the target) whose exact NFE `nfe(steps)` fits (found by
/// bisection: `nfe` must not decrease with the step count); a count is run
/// once, under the first target that reaches it, and a target below the NFE of one step is
/// skipped.
pub fn step_counts(
    targets: &[usize],
    nfe: impl Fn(usize) -> Result<usize>,
) -> Result<Vec<(usize, usize)>> {
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for &target in targets {
        // nfe(steps) does not decrease with steps, so bisect for the last count that fits.
        let (mut lo, mut hi) = (0, target);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if nfe(mid)? <= target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let steps = lo;
        if steps > 0 && counts.last().is_none_or(|&(_, last)| last != steps) {
            counts.push((target, steps));
        }
    }
    Ok(counts)
}
