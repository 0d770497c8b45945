//! Figures from results files, as PNG and SVG (plotters; text in DejaVu Sans, embedded).
//!
//! - `convergence`: per problem and grid, RMS error vs NFE (log-log), one panel per schedule, one
//!   line per solver, the fitted order in the legend; and the empirical orders as bars with their
//!   95% intervals (declared orders as ticks), one panel per problem.
//! - `ot_gap`: straightness and path-length excess per problem and schedule, with the OT gap
//!   written on each bar; and for 2-D problems the trajectories over the density of p_t at four
//!   noise levels, one row per schedule.
//!
//! - `sde`: per problem, strong error and weak error vs NFE for the stochastic samplers (solid)
//!   and the ODE solvers (dashed), and the Fokker-Planck panel.
//!
//! - `learned_vs_exact`: per network, the prediction errors (x0, eps, relative velocity) along
//!   exact PF-ODE trajectories vs t; and per solver the discretization error with the exact
//!   oracle (dashed) and the network's total error (solid) vs NFE, with the network error of the
//!   sampling map as a black line.
//! - `train` (a training log): training and validation loss vs step, minus the exact oracle's
//!   validation loss (the Bayes floor), on log-log axes; a `distill` log likewise (its floor is 0,
//!   the exact map).
//! - `flow_maps`: the few-step frontier and the (s, t) error heat maps ([`flow_maps`]).
//!
//! Every figure carries a footer with the git revision, command and seed of the results file.

use super::convergence::{Convergence, Point as ConvPoint, METRICS};
use super::learned::Learned;
use super::ot_gap::OtGap;
use super::sde::{Fit as SdeFit, Point as SdePoint, Sde};
use super::{group_by, Doc, Provenance};
use crate::error::{Error, Result};
use crate::gmm::GaussianMixture;
use crate::problems;
use crate::schedule;
use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

type Area<DB> = DrawingArea<DB, Shift>;

fn err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Domain(format!("plot: {e:?}"))
}

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Renders `draw` to `stem.png` and `stem.svg`, each written to a temporary file and renamed.
macro_rules! render {
    ($stem:expr, $size:expr, $out:expr, |$area:ident| $body:expr) => {{
        let stem: &Path = $stem;
        let png = stem.with_extension("png");
        let tmp = png.with_file_name(format!(
            ".{}.{}.tmp.png",
            png.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        {
            let $area = BitMapBackend::new(&tmp, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(err)?;
            $body;
            $area.present().map_err(err)?;
        }
        std::fs::rename(&tmp, &png).map_err(|e| Error::io(&png, e))?;
        let mut svg = String::new();
        {
            let $area = SVGBackend::with_string(&mut svg, $size).into_drawing_area();
            $area.fill(&WHITE).map_err(err)?;
            $body;
            $area.present().map_err(err)?;
        }
        let path = stem.with_extension("svg");
        crate::io::write_atomic(&path, svg.as_bytes())?;
        $out.push(png);
        $out.push(path);
    }};
}

fn footer<DB: DrawingBackend>(area: &Area<DB>, p: &Provenance) -> Result<Area<DB>> {
    let rev: String = p.git_revision.chars().take(12).collect();
    let text = format!(
        "pfode {} @ {rev} | {} | seed {}",
        p.pfode_version, p.command, p.seed
    );
    footer_text(area, text)
}

/// The provenance footer with `caption` above it; returns the rest of `area`.
fn footer_captioned<DB: DrawingBackend>(
    area: &Area<DB>,
    p: &Provenance,
    caption: String,
) -> Result<Area<DB>> {
    footer_text(&footer(area, p)?, caption)
}

/// Draws `text` (one or more lines) at the bottom of `area`, 18 px a line; returns the rest.
fn footer_text<DB: DrawingBackend>(area: &Area<DB>, text: String) -> Result<Area<DB>> {
    let (_, h) = area.dim_in_pixel();
    let lines: Vec<&str> = text.lines().collect();
    let (main, foot) = area.split_vertically(h - 18 * lines.len() as u32);
    for (i, line) in lines.iter().enumerate() {
        foot.draw(&Text::new(
            line.to_string(),
            (6, 2 + 18 * i as i32),
            ("sans-serif", 11).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(err)?;
    }
    Ok(main)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 10))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)
}

/// The series palette; black is left for the reference series (exact samples, floors).
fn color(i: usize) -> RGBColor {
    const C: [(u8, u8, u8); 13] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (0, 110, 90),
        (120, 160, 255),
        (255, 190, 90),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

fn log_range(v: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = v
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    if lo > hi {
        return 1e-3..1.0;
    }
    lo / 2.0..hi * 2.0
}

/// The abscissa of an error plot: its label and value (NFE, or wall time for work-precision).
type Abscissa = (&'static str, fn(&ConvPoint) -> Option<f64>);

const BY_NFE: Abscissa = ("NFE", |p| Some(p.nfe as f64));
const BY_WALL: Abscissa = ("wall time (s)", |p| p.wall_s);

fn convergence_panel<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    metric: &str,
    (x_desc, x_of): Abscissa,
    points: &[&ConvPoint],
    fits: &[(String, Option<f64>)],
) -> Result<()> {
    let xr = log_range(points.iter().filter_map(|p| x_of(p)));
    let yr = log_range(points.iter().filter_map(|p| p.metric(metric)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(xr.log_scale(), yr.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(metric)
        .label_style(("sans-serif", 11))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(err)?;
    for (i, (solver, order)) in fits.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| &p.solver == solver)
            .filter_map(|p| Some((x_of(p)?, p.metric(metric)?)))
            .filter(|&(_, v)| v > 0.0)
            .collect();
        let label = match order {
            _ if x_desc != "NFE" => solver.clone(),
            Some(o) => format!("{solver} (p = {o:.2})"),
            None if matches!(metric, "err_rms" | "err_median") => format!("{solver} (p: n/a)"),
            None => solver.clone(),
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    Ok(())
}

/// (order, 95% half-width, declared order) of a (solver, schedule).
type OrderOf<'a> = dyn Fn(&str, &str) -> Option<(f64, f64, usize)> + 'a;

/// Horizontal bars: one row per solver, one bar per schedule, 95% whiskers, declared-order ticks.
fn order_panel<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    solvers: &[String],
    schedules: &[String],
    value: &OrderOf,
) -> Result<()> {
    let n = solvers.len();
    let right = solvers
        .iter()
        .flat_map(|s| schedules.iter().filter_map(move |c| value(s, c)))
        .map(|(o, _, d)| o.max(d as f64))
        .fold(1.0f64, f64::max)
        + 1.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(250)
        .build_cartesian_2d(0f64..right, 0f64..n as f64)
        .map_err(err)?;
    let names = solvers.to_vec();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (n as f64 - y).floor() as usize;
            if (n as f64 - y - i as f64 - 0.5).abs() < 0.01 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .x_desc("empirical order vs NFE (95% interval; black tick = declared order)")
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    let k = schedules.len().max(1) as f64;
    let w = 0.8 / k;
    for (j, sched) in schedules.iter().enumerate() {
        let c = color(j);
        let (mut bars, mut whiskers, mut ticks) = (Vec::new(), Vec::new(), Vec::new());
        for (i, s) in solvers.iter().enumerate() {
            if let Some((o, ci, d)) = value(s, sched) {
                let y1 = n as f64 - i as f64 - 0.1 - j as f64 * w;
                let y0 = y1 - 0.9 * w;
                bars.push(Rectangle::new(
                    [(0.0, y0), (o.clamp(0.0, right), y1)],
                    c.mix(0.8).filled(),
                ));
                let ym = 0.5 * (y0 + y1);
                whiskers.push(PathElement::new(
                    vec![
                        ((o - ci).clamp(0.0, right), ym),
                        ((o + ci).clamp(0.0, right), ym),
                    ],
                    BLACK.stroke_width(1),
                ));
                ticks.push(PathElement::new(
                    vec![(d as f64, y0), (d as f64, y1)],
                    BLACK.stroke_width(2),
                ));
            }
        }
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(sched.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart.draw_series(whiskers).map_err(err)?;
        chart.draw_series(ticks).map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn unique(v: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The figures of a convergence results file; the error-vs-NFE panels show `metric` (one of
/// [`METRICS`]; files are named `convergence_{problem}_{grid}` for `err_rms`, and
/// `convergence_{metric}_{problem}_{grid}` otherwise). Values <= 0 (an unbiased MMD^2 can be
/// negative) are left out of the log axes.
pub fn convergence(doc: &Doc<Convergence>, dir: &Path, metric: &str) -> Result<Vec<PathBuf>> {
    if !METRICS.contains(&metric) {
        return Err(Error::Domain(format!(
            "unknown metric '{metric}' (valid: {})",
            METRICS.join(", ")
        )));
    }
    fonts();
    let mut out = Vec::new();
    let fits = &doc.summary.fits;
    for (problem, rows) in group_by(&doc.points, |p| p.problem.clone()) {
        for (grid, rows) in group_by(&rows, |p| p.grid.clone()) {
            for (abscissa, prefix) in [(BY_NFE, "convergence"), (BY_WALL, "work_precision")] {
                if !rows
                    .iter()
                    .any(|p| p.metric(metric).is_some() && (abscissa.1)(p).is_some())
                {
                    continue;
                }
                let stem = match metric {
                    "err_rms" => dir.join(format!("{prefix}_{problem}_{grid}")),
                    _ => dir.join(format!("{prefix}_{metric}_{problem}_{grid}")),
                };
                let schedules = unique(rows.iter().map(|p| p.schedule.clone()));
                let cols = schedules.len().clamp(1, 2);
                let nrows = schedules.len().div_ceil(cols);
                let size = (620 * cols as u32, 470 * nrows as u32 + 18);
                render!(&stem, size, out, |root| {
                    let main = footer(&root, &doc.provenance)?;
                    let panels = main.split_evenly((nrows, cols));
                    for (sched, panel) in schedules.iter().zip(panels.iter()) {
                        let pts: Vec<&ConvPoint> = rows
                            .iter()
                            .filter(|p| &p.schedule == sched)
                            .map(|p| **p)
                            .collect();
                        let solvers = unique(pts.iter().map(|p| p.solver.clone()));
                        let orders: Vec<(String, Option<f64>)> = solvers
                            .into_iter()
                            .map(|s| {
                                let o = fits
                                    .iter()
                                    .find(|f| {
                                        f.problem == problem
                                            && f.grid == grid
                                            && &f.schedule == sched
                                            && f.solver == s
                                    })
                                    .and_then(|f| match metric {
                                        "err_rms" => f.order_nfe,
                                        "err_median" => f.order_nfe_median,
                                        _ => None,
                                    })
                                    .map(|o| o.order);
                                (s, o)
                            })
                            .collect();
                        convergence_panel(
                            panel,
                            &format!("{problem}, {sched}, {grid} grid"),
                            metric,
                            abscissa,
                            &pts,
                            &orders,
                        )?;
                    }
                });
            }
        }
    }
    let problems = unique(fits.iter().map(|f| f.problem.clone()));
    if let Some(grid) = fits
        .first()
        .map(|f| f.grid.clone())
        .filter(|_| metric == "err_rms")
    {
        let stem = dir.join("orders");
        let cols = problems.len().clamp(1, 3);
        let size = (560 * cols as u32, 900 + 18);
        render!(&stem, size, out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, cols));
            for (problem, panel) in problems.iter().zip(panels.iter()) {
                let rows: Vec<_> = fits
                    .iter()
                    .filter(|f| &f.problem == problem && f.grid == grid)
                    .collect();
                let solvers = unique(rows.iter().map(|f| f.solver.clone()));
                let schedules = unique(rows.iter().map(|f| f.schedule.clone()));
                let value = |s: &str, c: &str| {
                    rows.iter()
                        .find(|f| f.solver == s && f.schedule == c)
                        .and_then(|f| f.order_nfe.map(|o| (o.order, o.ci95, f.declared_order)))
                };
                order_panel(
                    panel,
                    &format!("{problem} ({grid} grid)"),
                    &solvers,
                    &schedules,
                    &value,
                )?;
            }
        });
    }
    Ok(out)
}

/// The density of a 2-D mixture at (alpha, sigma) at the centres of an n x n grid of cells over
/// `xr` x `yr` (entry (j, i): row j in y, column i in x).
fn density(
    mixture: &GaussianMixture,
    alpha: f64,
    sigma: f64,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    n: usize,
) -> Result<Array2<f64>> {
    let at = crate::schedule::NoiseLevel::of(alpha, sigma);
    let c = |r: &std::ops::Range<f64>, i: usize| {
        r.start + (r.end - r.start) * (i as f64 + 0.5) / n as f64
    };
    let x = Array2::from_shape_fn((n * n, 2), |(k, j)| {
        if j == 0 {
            c(&xr, k % n)
        } else {
            c(&yr, k / n)
        }
    });
    let lp = mixture.log_density(x.view(), &at)?;
    Ok(lp
        .into_shape_with_order((n, n))
        .map_err(err)?
        .mapv(f64::exp))
}

/// A density on the cells of `xr` x `yr` as six shaded bands of sqrt(density / max), one
/// rectangle per run of equal band in a row (filled contours).
fn density_bands(
    dens: &Array2<f64>,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
) -> Vec<Rectangle<(f64, f64)>> {
    let (ny, nx) = dens.dim();
    let dmax = dens.iter().cloned().fold(0.0, f64::max);
    let (cx, cy) = (
        (xr.end - xr.start) / nx as f64,
        (yr.end - yr.start) / ny as f64,
    );
    let band = |i: usize, j: usize| ((dens[(j, i)] / dmax).sqrt() * 6.0).floor() as u32;
    let mut rects = Vec::new();
    for j in 0..ny {
        let mut i = 0;
        while i < nx {
            let (b, start) = (band(i, j), i);
            while i < nx && band(i, j) == b {
                i += 1;
            }
            if b > 0 {
                let shade = (255.0 * (1.0 - 0.55 * b.min(6) as f64 / 6.0)) as u8;
                let (x, y) = (xr.start + start as f64 * cx, yr.start + j as f64 * cy);
                rects.push(Rectangle::new(
                    [(x, y), (x + (i - start) as f64 * cx, y + cy)],
                    RGBColor(shade, shade, 255).filled(),
                ));
            }
        }
    }
    rects
}

/// The figures of an ot_gap results file.
pub fn ot_gap(doc: &Doc<OtGap>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    let pts = &doc.points;
    let schedules = unique(pts.iter().map(|p| p.schedule.clone()));
    let problems = unique(pts.iter().map(|p| p.problem.clone()));
    let stem = dir.join("ot_gap");
    render!(&stem, (1200u32, 520u32), out, |root| {
        let main = footer(&root, &doc.provenance)?;
        let panels = main.split_evenly((1, 2));
        type Metric = fn(&super::ot_gap::Point) -> f64;
        let metrics: [(&str, Metric); 2] = [
            ("straightness (excess kinetic energy)", |p| p.straightness),
            ("path length / chord - 1", |p| p.path_excess),
        ];
        for ((title, f), panel) in metrics.iter().zip(panels.iter()) {
            let top = pts.iter().map(f).fold(0.0, f64::max) * 1.25 + 1e-12;
            let n = problems.len();
            let mut chart = ChartBuilder::on(panel)
                .caption(*title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..n as f64, 0f64..top)
                .map_err(err)?;
            let names = problems.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.01 && i < names.len() {
                        names[i].clone()
                    } else {
                        String::new()
                    }
                })
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(err)?;
            let w = 0.8 / schedules.len() as f64;
            for (j, sched) in schedules.iter().enumerate() {
                let c = color(j);
                let mut bars = Vec::new();
                let mut labels = Vec::new();
                for (i, prob) in problems.iter().enumerate() {
                    if let Some(p) = pts
                        .iter()
                        .find(|p| &p.problem == prob && &p.schedule == sched)
                    {
                        let x0 = i as f64 + 0.1 + j as f64 * w;
                        bars.push(Rectangle::new(
                            [(x0, 0.0), (x0 + 0.9 * w, f(p))],
                            c.mix(0.8).filled(),
                        ));
                        labels.push(Text::new(
                            format!("gap {:.0e}", p.rel_gap.abs()),
                            (x0, f(p) + top * 0.02),
                            ("sans-serif", 9).into_font(),
                        ));
                    }
                }
                chart
                    .draw_series(bars)
                    .map_err(err)?
                    .label(sched.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                    });
                chart.draw_series(labels).map_err(err)?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
    });
    for problem in &problems {
        let rows: Vec<_> = pts
            .iter()
            .filter(|p| &p.problem == problem && p.trajectories.is_some())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mixture = problems::load(problem)?;
        let levels = [f64::INFINITY, 2.0, 0.5, 0.0];
        let stem = dir.join(format!("trajectories_{problem}"));
        let size = (1200u32, 300 * rows.len() as u32 + 18);
        render!(&stem, size, out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((rows.len(), levels.len()));
            for (r, p) in rows.iter().enumerate() {
                let s = schedule::parse(&p.schedule)?;
                let tr = p.trajectories.as_ref().expect("filtered");
                let rho: Vec<f64> = tr.times.iter().map(|&t| s.sigma(t) / s.alpha(t)).collect();
                for (c, &level) in levels.iter().enumerate() {
                    let k = if level.is_infinite() {
                        0
                    } else {
                        (0..rho.len())
                            .min_by(|&a, &b| {
                                (rho[a] - level).abs().total_cmp(&(rho[b] - level).abs())
                            })
                            .unwrap_or(0)
                    };
                    let t = tr.times[k];
                    let (alpha, sigma) = (s.alpha(t), s.sigma(t));
                    let radius = tr
                        .paths
                        .iter()
                        .map(|path| path[k][0].abs().max(path[k][1].abs()))
                        .fold(0.0, f64::max)
                        .max(4.5 * alpha + 2.0 * sigma)
                        * 1.15;
                    let dens =
                        density(&mixture, alpha, sigma, -radius..radius, -radius..radius, 90)?;
                    let title = format!("{}: t = {t:.3}, sigma/alpha = {:.2}", p.schedule, rho[k]);
                    let mut chart = ChartBuilder::on(&panels[r * levels.len() + c])
                        .caption(title, ("sans-serif", 12))
                        .margin(4)
                        .build_cartesian_2d(-radius..radius, -radius..radius)
                        .map_err(err)?;
                    chart
                        .draw_series(density_bands(&dens, -radius..radius, -radius..radius))
                        .map_err(err)?;
                    for path in &tr.paths {
                        let inside = |q: &[f64; 2]| q[0].abs().max(q[1].abs()) < radius;
                        let first = (0..=k)
                            .rev()
                            .take_while(|&i| inside(&path[i]))
                            .last()
                            .unwrap_or(k);
                        let seg: Vec<(f64, f64)> =
                            path[first..=k].iter().map(|q| (q[0], q[1])).collect();
                        chart
                            .draw_series(LineSeries::new(seg, RGBColor(200, 60, 40).mix(0.6)))
                            .map_err(err)?;
                        chart
                            .draw_series(std::iter::once(Circle::new(
                                (path[k][0], path[k][1]),
                                2,
                                BLACK.filled(),
                            )))
                            .map_err(err)?;
                    }
                }
            }
        });
    }
    for problem in &problems {
        let rows: Vec<_> = pts
            .iter()
            .filter(|p| &p.problem == problem)
            .filter_map(|p| Some((p, p.certificate.as_ref().filter(|c| !c.map.is_empty())?)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let logs = rows
            .iter()
            .flat_map(|(_, c)| c.map.iter().map(|q| q[2].max(1e-16).log10()));
        let (lo, hi) = logs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let span = (hi - lo).max(1e-9);
        let stem = dir.join(format!("ot_asymmetry_{problem}"));
        let size = (300 * rows.len() as u32 + 40, 360u32 + 36);
        render!(&stem, size, out, |root| {
            let main = footer_captioned(
                &root,
                &doc.provenance,
                format!(
                    "colour: log10 ||J - J^T||_F / ||J||_F of the PF-ODE map x_T -> x_end at x_end, viridis from {lo:.2} (dark) to {hi:.2} (yellow); 0 for an OT map (Brenier)"
                ),
            )?;
            let panels = main.split_evenly((1, rows.len()));
            for ((p, c), panel) in rows.iter().zip(panels.iter()) {
                let r = c
                    .map
                    .iter()
                    .map(|q| q[0].abs().max(q[1].abs()))
                    .fold(0.0, f64::max)
                    * 1.1;
                let title = format!(
                    "{problem}, {}: median {:.1e}, p90 {:.1e}",
                    p.schedule, c.asymmetry_median, c.asymmetry_p90
                );
                let mut chart = ChartBuilder::on(panel)
                    .caption(title, ("sans-serif", 12))
                    .margin(6)
                    .x_label_area_size(24)
                    .y_label_area_size(30)
                    .build_cartesian_2d(-r..r, -r..r)
                    .map_err(err)?;
                chart
                    .configure_mesh()
                    .label_style(("sans-serif", 10))
                    .draw()
                    .map_err(err)?;
                chart
                    .draw_series(c.map.iter().map(|q| {
                        let u = (q[2].max(1e-16).log10() - lo) / span;
                        Circle::new((q[0], q[1]), 3, gradient(u).filled())
                    }))
                    .map_err(err)?;
            }
        });
    }
    Ok(out)
}

/// A labelled line and whether it is dashed.
type Series = (String, Vec<(f64, f64)>, bool);

/// One line per series on log-log axes; `dashed` series (the ODE solvers) are drawn dashed.
fn series_panel<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
) -> Result<()> {
    let colors: Vec<RGBColor> = (0..series.len()).map(color).collect();
    colored_panel(area, title, (x_desc, y_desc), series, &colors)
}

/// [`series_panel`] with a given color per series.
fn colored_panel<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    colors: &[RGBColor],
) -> Result<()> {
    let xr = log_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let yr = log_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(xr.log_scale(), yr.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 11))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(err)?;
    for (i, (label, pts, dashed)) in series.iter().enumerate() {
        let c = colors[i];
        let style = c.stroke_width(2);
        let drawn = if *dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))
        };
        drawn
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// The `sde` study: per problem, strong error and weak error of the second moments vs NFE (SDE
/// samplers solid, ODE solvers dashed, fitted orders in the legend); and the Fokker-Planck panel,
/// mean NLL under the exact p_t minus that of exact samples vs t, with 2-standard-error bars.
pub fn sde(doc: &Doc<Sde>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    let fits = &doc.summary.fits;
    let errors: Vec<&SdePoint> = doc.points.iter().filter(|p| p.t.is_none()).collect();
    for (problem, rows) in group_by(&errors, |p| p.problem.clone()) {
        let stem = dir.join(format!("sde_{problem}"));
        let solvers = unique(rows.iter().map(|p| p.solver.clone()));
        type Metric = (
            &'static str,
            fn(&SdePoint) -> Option<f64>,
            fn(&SdeFit) -> Option<f64>,
        );
        let metrics: [Metric; 2] = [
            (
                "strong error E|x_h - x_ref|",
                |p| p.strong.map(|e| e.value),
                |f| f.strong.map(|o| o.order),
            ),
            (
                "weak error |E xx^T - E_p xx^T|",
                |p| p.weak_second.map(|e| e.value),
                |f| f.weak_second.map(|o| o.order),
            ),
        ];
        render!(&stem, (1240, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, 2));
            for ((y_desc, value, order), panel) in metrics.iter().zip(panels.iter()) {
                let series: Vec<Series> = solvers
                    .iter()
                    .map(|s| {
                        let pts: Vec<(f64, f64)> = rows
                            .iter()
                            .filter(|p| &p.solver == s)
                            .filter_map(|p| Some((p.nfe as f64, value(p)?)))
                            .filter(|&(_, v)| v > super::sde::FLOOR)
                            .collect();
                        let fit = fits.iter().find(|f| f.problem == problem && &f.solver == s);
                        let stochastic = fit.is_some_and(|f| f.stochastic);
                        let label = match fit.and_then(order) {
                            Some(o) => format!("{s} (p = {o:.2})"),
                            None => s.clone(),
                        };
                        (label, pts, !stochastic)
                    })
                    .collect();
                series_panel(
                    panel,
                    &format!("{problem}: {y_desc}"),
                    ("NFE", y_desc),
                    &series,
                )?;
            }
        });
    }
    let fp: Vec<&SdePoint> = doc.points.iter().filter(|p| p.t.is_some()).collect();
    let problems = unique(fp.iter().map(|p| p.problem.clone()));
    if !problems.is_empty() {
        let stem = dir.join("sde_fokker_planck");
        let cols = problems.len() as u32;
        render!(&stem, (560 * cols, 440 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, problems.len()));
            for (problem, panel) in problems.iter().zip(panels.iter()) {
                let rows: Vec<&&SdePoint> = fp.iter().filter(|p| &p.problem == problem).collect();
                let exact = |t: f64| {
                    rows.iter()
                        .find(|p| p.t == Some(t) && p.solver == "exact")
                        .and_then(|p| p.nll)
                };
                let mut bars = Vec::new();
                for (i, name) in ["sde", "ode"].iter().enumerate() {
                    for p in rows.iter().filter(|p| &p.solver == name) {
                        if let (Some(t), Some(e), Some(x)) = (p.t, p.nll, exact(p.t.unwrap_or(0.0)))
                        {
                            let se = (e.se * e.se + x.se * x.se).sqrt();
                            bars.push((i, t, e.value - x.value, 2.0 * se));
                        }
                    }
                }
                let yr = bars.iter().fold(0.01f64, |m, b| m.max(b.2.abs() + b.3)) * 1.2;
                let ts: Vec<f64> = bars.iter().map(|b| b.1).collect();
                let xr = 0.0..ts.iter().fold(0.0f64, |m, &t| m.max(t)) * 1.15;
                let mut chart = ChartBuilder::on(panel)
                    .caption(format!("{problem}: Fokker-Planck"), ("sans-serif", 16))
                    .margin(8)
                    .x_label_area_size(32)
                    .y_label_area_size(56)
                    .build_cartesian_2d(xr.clone(), -yr..yr)
                    .map_err(err)?;
                chart
                    .configure_mesh()
                    .x_desc("t")
                    .y_desc("NLL under p_t - NLL of exact samples")
                    .x_label_formatter(&|v| format!("{v:.2}"))
                    .label_style(("sans-serif", 11))
                    .draw()
                    .map_err(err)?;
                for (i, name) in ["reverse SDE (Euler-Maruyama)", "PF-ODE (DPM-Solver++ 3)"]
                    .iter()
                    .enumerate()
                {
                    let c = color(i);
                    let shift = if i == 0 { -0.006 } else { 0.006 };
                    let mine: Vec<_> = bars.iter().filter(|b| b.0 == i).collect();
                    chart
                        .draw_series(mine.iter().map(|b| {
                            ErrorBar::new_vertical(
                                b.1 + shift,
                                b.2 - b.3,
                                b.2,
                                b.2 + b.3,
                                c.filled(),
                                6,
                            )
                        }))
                        .map_err(err)?
                        .label(*name)
                        .legend(move |(x, y)| Circle::new((x + 8, y), 3, c.filled()));
                }
                chart
                    .draw_series(LineSeries::new(
                        vec![(xr.start, 0.0), (xr.end, 0.0)],
                        BLACK.mix(0.4),
                    ))
                    .map_err(err)?;
                legend(&mut chart, SeriesLabelPosition::UpperRight)?;
            }
        });
    }
    Ok(out)
}

/// The `learned_vs_exact` study (see the module doc).
pub fn learned(doc: &Doc<Learned>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    for g in &doc.groups {
        let rows: Vec<_> = doc.points.iter().filter(|p| p.net == g.key).collect();
        let traj: Vec<_> = rows.iter().filter(|p| p.t.is_some()).collect();
        type Pred = (&'static str, fn(&super::learned::Point) -> Option<f64>);
        let preds: [Pred; 3] = [
            ("x0 prediction", |p| p.x0_error),
            ("eps prediction", |p| p.eps_error),
            ("velocity (relative)", |p| p.velocity_rel_error),
        ];
        let a: Vec<Series> = preds
            .iter()
            .map(|(name, f)| {
                let pts = traj
                    .iter()
                    .filter_map(|p| Some((p.t?, f(p)?)))
                    .filter(|&(t, v)| t > 0.0 && v > 0.0)
                    .collect();
                (name.to_string(), pts, false)
            })
            .collect();
        let solvers = unique(
            rows.iter()
                .filter(|p| p.t.is_none())
                .map(|p| p.solver.clone()),
        );
        let mut b: Vec<Series> = Vec::new();
        let mut nfe_range = (f64::INFINITY, 0.0f64);
        for s in &solvers {
            let mine: Vec<_> = rows.iter().filter(|p| &p.solver == s).collect();
            for p in &mine {
                nfe_range = (nfe_range.0.min(p.nfe as f64), nfe_range.1.max(p.nfe as f64));
            }
            let line = |f: fn(&super::learned::Point) -> Option<f64>| -> Vec<(f64, f64)> {
                mine.iter()
                    .filter_map(|p| Some((p.nfe as f64, f(p)?)))
                    .filter(|&(_, v)| v > 0.0)
                    .collect()
            };
            b.push((format!("{s}: network"), line(|p| p.total_net), false));
            b.push((format!("{s}: exact oracle"), line(|p| p.disc_exact), true));
        }
        let name = g
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&g.key)
            .trim_end_matches(".safetensors");
        let stem = dir.join(format!("learned_vs_exact_{name}"));
        render!(&stem, (1240, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, 2));
            series_panel(
                &panels[0],
                &format!("{}: network minus exact along PF-ODE paths", g.problem),
                ("t", "RMS prediction error"),
                &a,
            )?;
            let mut paired = b.clone();
            let mut colors: Vec<RGBColor> = (0..b.len()).map(|i| color(i / 2)).collect();
            colors.push(BLACK);
            paired.push((
                format!("network error {:.2e}", g.net_error),
                vec![(nfe_range.0, g.net_error), (nfe_range.1, g.net_error)],
                false,
            ));
            colored_panel(
                &panels[1],
                &format!(
                    "{}: sampling error vs NFE (solid: network, dashed: exact oracle)",
                    g.problem
                ),
                ("NFE", "RMS |x - x_ref(exact oracle)|"),
                &paired,
                &colors,
            )?;
        });
    }
    Ok(out)
}

/// A training log written by the `train` binary (see the module doc).
pub fn train_log(log: &serde_json::Value, source: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let bad = |field: &str| {
        Error::invalid(
            source.display().to_string(),
            Some(field.into()),
            "missing or malformed",
        )
    };
    let provenance: Provenance =
        serde_json::from_value(log["provenance"].clone()).map_err(|_| bad("provenance"))?;
    let entries = log["log"].as_array().ok_or_else(|| bad("log"))?;
    let series_of = |key: &str| -> Result<Vec<(f64, f64)>> {
        entries
            .iter()
            .map(|e| Some((e["step"].as_f64()?, e[key].as_f64()?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(&format!("log[].{key}")))
    };
    let floor = log["exact_val_loss"]
        .as_f64()
        .ok_or_else(|| bad("exact_val_loss"))?;
    let excess = |key: &str| -> Result<Vec<(f64, f64)>> {
        Ok(series_of(key)?
            .into_iter()
            .map(|(step, v)| (step, v - floor))
            .filter(|&(_, v)| v > 0.0)
            .collect())
    };
    let series: Vec<Series> = vec![
        ("training loss (window mean)".into(), excess("loss")?, false),
        ("validation loss".into(), excess("val_loss")?, false),
    ];
    let problem = log["problem"].as_str().unwrap_or("network");
    let (stem, what) = match log["method"].as_str() {
        Some(method) => (
            dir.join(format!("distill_{problem}_{method}")),
            format!("{method} validation MSE to the exact map; training"),
        ),
        None => (
            dir.join(format!("train_{problem}")),
            log["network"]["prediction"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        ),
    };
    let mut out = Vec::new();
    render!(&stem, (720, 480 + 18), out, |root| {
        let main = footer(&root, &provenance)?;
        series_panel(
            &main,
            &format!("{problem}: {what} loss minus the floor {floor:.4}"),
            ("step", "excess loss"),
            &series,
        )?;
    });
    // The instability users report: the gradient norm and (methods with a JVP) the JVP's RMS.
    let norms: Vec<Series> = [("gradient norm", "grad_norm"), ("JVP RMS", "jvp_norm")]
        .into_iter()
        .filter_map(|(label, key)| {
            let s = series_of(key).ok()?;
            (!s.is_empty()).then(|| (label.to_string(), s, false))
        })
        .collect();
    if !norms.is_empty() && log["method"].is_string() {
        let stem = PathBuf::from(format!("{}_norms", stem.display()));
        render!(&stem, (720, 480 + 18), out, |root| {
            let main = footer(&root, &provenance)?;
            series_panel(
                &main,
                &format!("{problem}: {what} gradient norm and JVP RMS (window means)"),
                ("step", "norm"),
                &norms,
            )?;
        });
    }
    Ok(out)
}

/// The law drawn beneath a samples plot: a mixture at (alpha, sigma), described by `label`.
pub struct Backdrop<'a> {
    pub mixture: &'a GaussianMixture,
    pub alpha: f64,
    pub sigma: f64,
    pub label: String,
}

/// The rows of a samples plot: at most this many points are drawn (the first ones).
pub const MAX_SCATTER: usize = 20_000;

/// Scatter plots of an (N, d) array of samples, `stem.png` and `stem.svg`: the plane for d = 2,
/// else one panel per pair (i, j), i < j, of the coordinates `dims`. With a backdrop, each
/// panel shades the exact density of that pair's marginal (filled contours, as the ot_gap
/// trajectories). Axes span the 0.1% to 99.9% quantiles of the samples (and of the backdrop's
/// draws), widened by 10%.
pub fn samples(
    x: ndarray::ArrayView2<f64>,
    source: &str,
    backdrop: Option<&Backdrop>,
    dims: &[usize],
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    fonts();
    let d = x.ncols();
    if x.nrows() == 0 || dims.len() < 2 || dims.iter().any(|&i| i >= d) {
        return Err(Error::Domain(format!(
            "plot: need at least one sample and two coordinates below d = {d}, got {} rows and coordinates {dims:?}",
            x.nrows()
        )));
    }
    let shown = x.nrows().min(MAX_SCATTER);
    let reference = backdrop.map(|b| b.mixture.sample(4000, b.alpha, b.sigma, 7));
    let span = |i: usize| -> std::ops::Range<f64> {
        let mut v: Vec<f64> = x.column(i).iter().copied().collect();
        if let Some(r) = &reference {
            v.extend(r.column(i).iter().copied());
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let (lo, hi) = (q(0.001), q(0.999));
        let pad = ((hi - lo) * 0.1).max(1e-9);
        lo - pad..hi + pad
    };
    let pairs: Vec<(usize, usize)> = dims
        .iter()
        .enumerate()
        .flat_map(|(a, &i)| dims[a + 1..].iter().map(move |&j| (i, j)))
        .collect();
    let cols = pairs.len().min(3);
    let rows = pairs.len().div_ceil(cols);
    let panel = if pairs.len() == 1 { 640 } else { 400 };
    let size = (panel * cols as u32, panel * rows as u32 + 36);
    let caption = match backdrop {
        Some(b) => format!(" over {}", b.label),
        None => String::new(),
    };
    let foot = format!(
        "pfode {} @ {} | {}\n{shown} of {} samples of {source}{caption}",
        env!("CARGO_PKG_VERSION"),
        crate::io::git_revision()
            .chars()
            .take(12)
            .collect::<String>(),
        std::env::args().collect::<Vec<_>>().join(" "),
        x.nrows()
    );
    let mut out = Vec::new();
    render!(stem, size, out, |root| {
        let main = footer_text(&root, foot.clone())?;
        let panels = main.split_evenly((rows, cols));
        for (&(i, j), panel) in pairs.iter().zip(panels.iter()) {
            let (xr, yr) = (span(i), span(j));
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("x[{j}] vs x[{i}]"), ("sans-serif", 13))
                .margin(6)
                .x_label_area_size(24)
                .y_label_area_size(40)
                .build_cartesian_2d(xr.clone(), yr.clone())
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .label_style(("sans-serif", 10))
                .draw()
                .map_err(err)?;
            if let Some(b) = backdrop {
                let m = b.mixture.marginal(&[i, j])?;
                let dens = density(&m, b.alpha, b.sigma, xr.clone(), yr.clone(), 160)?;
                chart
                    .draw_series(density_bands(&dens, xr.clone(), yr.clone()))
                    .map_err(err)?;
            }
            let inside = |p: &(f64, f64)| xr.contains(&p.0) && yr.contains(&p.1);
            let points: Vec<(f64, f64)> = (0..shown)
                .map(|r| (x[(r, i)], x[(r, j)]))
                .filter(inside)
                .collect();
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 1, RGBColor(200, 60, 40).mix(0.5).filled())),
                )
                .map_err(err)?;
        }
    });
    Ok(out)
}

/// The `guidance` study. Per schedule of the Gaussian part: W2 of each solver's output law to the
/// class law against the scale (at the largest step count; the tilted law's W2 dashed where it
/// exists), and W2 to the guided ODE's own law against NFE at the largest scale below 4. Per
/// mixture: class precision against NLL under p(x | c), one curve per method over the scales;
/// for 2-D mixtures a panel of samples (rows: methods, columns: scales 1, 2, 4, 8) over the
/// class density.
pub fn guidance(doc: &Doc<super::guidance::GuidanceStudy>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    let cfg = &doc.config;
    let name = |m: &str| m.split(':').next().unwrap_or(m).to_string();
    let max_steps = cfg.steps.iter().copied().max().unwrap_or(0);
    let s_nfe = cfg
        .scales
        .iter()
        .copied()
        .filter(|&s| s < 4.0)
        .fold(1.0, f64::max);
    for sched in &cfg.schedules {
        let g: Vec<_> = doc
            .points
            .iter()
            .filter(|p| p.part == "gaussian" && &p.schedule == sched)
            .collect();
        let mut a: Vec<Series> = Vec::new();
        let mut b: Vec<Series> = Vec::new();
        for m in unique(g.iter().map(|p| name(&p.method))) {
            for solver in &cfg.solvers {
                let mine: Vec<_> = g
                    .iter()
                    .filter(|p| name(&p.method) == m && &p.solver == solver)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let at_max = mine.iter().filter(|p| p.steps == max_steps);
                if m == "cfg" || (m != "cfg++" && solver == &cfg.solvers[0]) {
                    b.push((
                        format!("{m}, {solver}"),
                        mine.iter()
                            .filter(|p| p.scale == s_nfe)
                            .filter_map(|p| Some((p.nfe as f64, p.w2_limit?)))
                            .collect(),
                        m != "cfg",
                    ));
                }
                if !(solver == &cfg.solvers[0] || solver == "ddpm") {
                    continue;
                }
                a.push((
                    format!("{m}, {solver}"),
                    at_max
                        .clone()
                        .filter_map(|p| Some((p.scale, p.w2_class?)))
                        .collect(),
                    false,
                ));
                if solver == &cfg.solvers[0] {
                    a.push((
                        format!("{m}, {solver}: to the tilted law"),
                        at_max
                            .filter_map(|p| Some((p.scale, p.w2_tilted?)))
                            .collect(),
                        true,
                    ));
                }
            }
        }
        let stem = dir.join(format!(
            "guidance_gaussian_{}",
            sched.replace([':', ','], "_")
        ));
        render!(&stem, (1240, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, 2));
            series_panel(
                &panels[0],
                &format!(
                    "{}: guided output law vs p(x | {}), {sched}, {max_steps} steps",
                    cfg.gaussian, cfg.class
                ),
                ("guidance scale s (lambda for cfg++)", "W2"),
                &a,
            )?;
            series_panel(
                &panels[1],
                &format!(
                    "W2 to the limit (guided ODE; cfg++: 1024 steps) at s = {s_nfe}, cfg++ 0.2"
                ),
                ("NFE", "W2"),
                &b,
            )?;
        });
    }
    let corr: Vec<_> = doc
        .points
        .iter()
        .filter(|p| p.part == "corrector")
        .collect();
    if !corr.is_empty() {
        let series: Vec<Series> = cfg
            .corrector_solvers
            .iter()
            .map(|spec| {
                let pts = corr
                    .iter()
                    .filter(|p| &p.solver == spec)
                    .filter_map(|p| Some((p.nfe as f64, p.w2_target?)))
                    .collect();
                (
                    spec.clone(),
                    pts,
                    spec.starts_with("pc") || spec.starts_with("ald"),
                )
            })
            .collect();
        let stem = dir.join("guidance_corrector");
        render!(&stem, (760, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            series_panel(
                &main,
                &format!(
                    "{}: predictors and Langevin correctors, W2 of the exact law to p_t",
                    cfg.corrector_problem
                ),
                ("NFE", "W2"),
                &series,
            )?;
        });
    }
    for problem in &cfg.mixtures {
        let mix: Vec<_> = doc
            .points
            .iter()
            .filter(|p| p.part == "mixture" && &p.problem == problem)
            .collect();
        let methods = unique(mix.iter().map(|p| name(&p.method)));
        let curves: Vec<(String, Vec<(f64, f64)>)> = methods
            .iter()
            .map(|m| {
                let pts = mix
                    .iter()
                    .filter(|p| &name(&p.method) == m)
                    .filter_map(|p| Some((p.precision?, p.nll?)))
                    .collect();
                (m.clone(), pts)
            })
            .collect();
        let span = |f: fn(&(f64, f64)) -> f64| {
            let v: Vec<f64> = curves.iter().flat_map(|c| c.1.iter().map(f)).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let pad = ((hi - lo) * 0.05).max(1e-6);
            lo - pad..hi + pad
        };
        let (xr, yr) = (span(|p| p.0), span(|p| p.1));
        let stem = dir.join(format!("guidance_precision_nll_{problem}"));
        render!(&stem, (760, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let mut chart = ChartBuilder::on(&main)
                .caption(
                    format!(
                        "{problem}, class {}: precision vs NLL over s = {:?}",
                        cfg.class, cfg.scales
                    ),
                    ("sans-serif", 15),
                )
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(xr.clone(), yr.clone())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("class precision: mean exact p(c | x)")
                .y_desc("NLL under p(x | c) (nats)")
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(err)?;
            for (i, (label, pts)) in curves.iter().enumerate() {
                let style = color(i).stroke_width(2);
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(err)?
                    .label(label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color(i).filled())))
                    .map_err(err)?;
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        });
        let with_panel: Vec<_> = mix.iter().filter(|p| !p.panel.is_empty()).collect();
        if with_panel.is_empty() {
            continue;
        }
        let scales = unique(with_panel.iter().map(|p| p.scale.to_string()));
        let m = problems::load(problem)?.conditional(&cfg.class)?;
        let all: Vec<f64> = with_panel
            .iter()
            .flat_map(|p| p.panel.iter().flat_map(|q| [q[0], q[1]]))
            .collect();
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let r = lo - 0.05 * (hi - lo)..hi + 0.05 * (hi - lo);
        let dens = density(&m, 1.0, 1e-3, r.clone(), r.clone(), 120)?;
        let (rows, cols) = (methods.len(), scales.len());
        let stem = dir.join(format!("guidance_samples_{problem}"));
        render!(
            &stem,
            (220 * cols as u32, 220 * rows as u32 + 36),
            out,
            |root| {
                let main = footer(&root, &doc.provenance)?;
                let cells = main.split_evenly((rows, cols));
                for (ri, meth) in methods.iter().enumerate() {
                    for (ci, s) in scales.iter().enumerate() {
                        let cell = &cells[ri * cols + ci];
                        let mut chart = ChartBuilder::on(cell)
                            .caption(format!("{meth} s = {s}"), ("sans-serif", 11))
                            .margin(3)
                            .build_cartesian_2d(r.clone(), r.clone())
                            .map_err(err)?;
                        chart
                            .draw_series(density_bands(&dens, r.clone(), r.clone()))
                            .map_err(err)?;
                        if let Some(p) = with_panel
                            .iter()
                            .find(|p| &name(&p.method) == meth && &p.scale.to_string() == s)
                        {
                            chart
                                .draw_series(p.panel.iter().map(|q| {
                                    Circle::new(
                                        (q[0], q[1]),
                                        1,
                                        RGBColor(200, 60, 40).mix(0.6).filled(),
                                    )
                                }))
                                .map_err(err)?;
                        }
                    }
                }
            }
        );
    }
    Ok(out)
}

/// A blue-to-yellow gradient (five stops of viridis) at u in [0, 1].
fn gradient(u: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = u.clamp(0.0, 1.0) * 4.0;
    let k = (x.floor() as usize).min(3);
    let f = x - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |p: f64, q: f64| (p + f * (q - p)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The `flow_maps` study: the few-step frontier (sliced W2 to p_0 vs network calls; learned
/// maps solid, solvers dashed, the exact-sample floor in grey), one panel per problem; and per
/// problem the (s, t) heat maps of log10 E|Psi^ - Psi|, one panel per map, source level i down
/// the rows and target level j across (blank where a map has no such pair); and for a
/// two-dimensional problem the sample panels at 1 and 2 calls.
pub fn flow_maps(doc: &Doc<super::flow_maps::FlowMaps>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    let cfg = &doc.config;
    let problems: Vec<&String> = cfg
        .problems
        .iter()
        .filter(|p| doc.points.iter().any(|q| &q.problem == *p))
        .collect();
    let stem = dir.join("flow_maps_frontier");
    let width = 460 * problems.len().max(1) as u32;
    render!(&stem, (width, 440 + 18), out, |root| {
        let main = footer(&root, &doc.provenance)?;
        let panels = main.split_evenly((1, problems.len().max(1)));
        for (panel, problem) in panels.iter().zip(&problems) {
            let mut series: Vec<Series> = doc
                .points
                .iter()
                .filter(|p| &p.problem == *problem)
                .map(|p| {
                    let pts = p
                        .frontier
                        .iter()
                        .map(|f| (f.nfe.max(1) as f64, f.quality.sliced_w2))
                        .collect();
                    (p.map.clone(), pts, !p.learned)
                })
                .collect();
            let mut colors: Vec<RGBColor> = (0..series.len()).map(color).collect();
            if let Some(g) = doc.groups.iter().find(|g| &g.key == *problem) {
                let (lo, hi) = (
                    *cfg.calls.iter().min().unwrap_or(&1) as f64,
                    *cfg.calls.iter().max().unwrap_or(&8) as f64,
                );
                series.push((
                    "exact samples".into(),
                    vec![(lo, g.floor.sliced_w2), (hi, g.floor.sliced_w2)],
                    true,
                ));
                colors.push(BLACK);
            }
            colored_panel(
                panel,
                &format!("{problem}: sliced W2 to p_0"),
                ("network calls (NFE)", "sliced W2"),
                &series,
                &colors,
            )?;
        }
    });
    for problem in &problems {
        let maps: Vec<_> = doc
            .points
            .iter()
            .filter(|p| &p.problem == *problem && !p.heat.is_empty())
            .collect();
        let n = doc
            .groups
            .iter()
            .find(|g| &g.key == *problem)
            .map_or(0, |g| g.levels.len() - 1);
        let logs: Vec<f64> = maps
            .iter()
            .flat_map(|p| p.heat.iter().map(|e| e.mean_norm.max(1e-16).log10()))
            .collect();
        let (lo, hi) = logs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let stem = dir.join(format!("flow_maps_heat_{problem}"));
        let cols = maps.len().clamp(1, 4);
        let rows = maps.len().div_ceil(cols).max(1);
        render!(
            &stem,
            (300 * cols as u32, 300 * rows as u32 + 36),
            out,
            |root| {
                let main = footer_captioned(
                    &root,
                    &doc.provenance,
                    format!(
                        "{problem}: log10 E|Psi^ - Psi| from {lo:.2} (dark) to {hi:.2} (yellow); rows: source level i, columns: target level j"
                    ),
                )?;
                let panels = main.split_evenly((rows, cols));
                for (panel, p) in panels.iter().zip(&maps) {
                    let mut chart = ChartBuilder::on(panel)
                        .caption(&p.map, ("sans-serif", 13))
                        .margin(6)
                        .x_label_area_size(22)
                        .y_label_area_size(26)
                        .build_cartesian_2d(0.0..(n + 1) as f64, (n + 1) as f64..0.0)
                        .map_err(err)?;
                    chart
                        .configure_mesh()
                        .disable_mesh()
                        .label_style(("sans-serif", 9))
                        .draw()
                        .map_err(err)?;
                    chart
                        .draw_series(p.heat.iter().map(|e| {
                            let u = (e.mean_norm.max(1e-16).log10() - lo) / (hi - lo).max(1e-9);
                            Rectangle::new(
                                [
                                    (e.j as f64, e.i as f64),
                                    (e.j as f64 + 1.0, e.i as f64 + 1.0),
                                ],
                                gradient(u).filled(),
                            )
                        }))
                        .map_err(err)?;
                }
            }
        );
    }
    for problem in &problems {
        out.extend(flow_map_panels(doc, problem, dir)?);
    }
    Ok(out)
}

/// The sample panels of a two-dimensional problem: one column per map (the exact draws first),
/// one row per call count (1 and 2), [`super::flow_maps::PANEL`] samples each, on the exact
/// draws' square.
fn flow_map_panels(
    doc: &Doc<super::flow_maps::FlowMaps>,
    problem: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Some(exact) = doc
        .groups
        .iter()
        .find(|g| g.key == problem)
        .and_then(|g| g.panel.as_ref())
    else {
        return Ok(out);
    };
    let calls: Vec<usize> = doc
        .config
        .calls
        .iter()
        .copied()
        .filter(|&k| k <= 2)
        .collect();
    let maps: Vec<_> = doc
        .points
        .iter()
        .filter(|p| p.problem == problem && p.frontier.iter().any(|f| f.panel.is_some()))
        .collect();
    let radius = exact
        .iter()
        .fold(0.0f64, |m, q| m.max(q[0].abs()).max(q[1].abs()))
        * 1.25;
    let cols = maps.len() + 1;
    let rows = calls.len().max(1);
    let stem = dir.join(format!("flow_maps_panels_{problem}"));
    render!(
        &stem,
        (170 * cols as u32, 170 * rows as u32 + 36),
        out,
        |root| {
            let main = footer_captioned(
                &root,
                &doc.provenance,
                format!("{problem}: the first {} samples at 1 and 2 network calls (rows); points outside the square are not drawn", exact.len()),
            )?;
            let panels = main.split_evenly((rows, cols));
            for (r, &k) in calls.iter().enumerate() {
                let mut cells: Vec<(String, Option<&Vec<[f64; 2]>>)> =
                    vec![("exact p_0".into(), Some(exact))];
                for p in &maps {
                    let f = p.frontier.iter().find(|f| f.calls == k);
                    let label = match f {
                        Some(f) => format!("{} ({} NFE)", p.map, f.nfe),
                        None => p.map.clone(),
                    };
                    cells.push((label, f.and_then(|f| f.panel.as_ref())));
                }
                for (c, (label, pts)) in cells.iter().enumerate() {
                    let mut chart = ChartBuilder::on(&panels[r * cols + c])
                        .caption(label, ("sans-serif", 11))
                        .margin(4)
                        .build_cartesian_2d(-radius..radius, -radius..radius)
                        .map_err(err)?;
                    chart
                        .configure_mesh()
                        .disable_mesh()
                        .disable_axes()
                        .draw()
                        .map_err(err)?;
                    let inside = |q: &&[f64; 2]| q[0].abs().max(q[1].abs()) < radius;
                    if let Some(pts) = pts {
                        let c = if c == 0 { BLACK } else { color(c - 1) };
                        chart
                            .draw_series(
                                pts.iter()
                                    .filter(inside)
                                    .map(|q| Circle::new((q[0], q[1]), 1, c.mix(0.6).filled())),
                            )
                            .map_err(err)?;
                    }
                }
            }
        }
    );
    Ok(out)
}

/// The `likelihood` study: per unit, the RMS error of log p vs NFE per integrator (exact
/// divergence; Hutchinson at rk4 32 steps dashed as one point per probe count), and the KL of
/// each sampler's law vs NFE (estimates at or below 0 are left out of the log axis).
pub fn likelihood(
    doc: &Doc<super::likelihood::LikelihoodStudy>,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    for g in &doc.groups {
        let pts: Vec<_> = doc.points.iter().filter(|p| p.unit == g.key).collect();
        let mut a: Vec<Series> = doc
            .config
            .integrators
            .iter()
            .map(|i| {
                let line = pts
                    .iter()
                    .filter(|p| {
                        p.view == "ode"
                            && &p.method == i
                            && p.divergence == "exact"
                            && p.rms_error > 0.0
                    })
                    .map(|p| (p.nfe as f64, p.rms_error))
                    .collect();
                (i.clone(), line, false)
            })
            .collect();
        let hutch: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| {
                p.view == "ode" && p.method == "rk4" && p.divergence.starts_with("hutchinson")
            })
            .map(|p| (p.nfe as f64, p.rms_error))
            .collect();
        for (k, &(nfe, v)) in hutch.iter().enumerate() {
            let probes = doc.config.probes.get(k).copied().unwrap_or(0);
            a.push((
                format!("rk4 32 steps, Hutchinson {probes} probes"),
                vec![(nfe * 0.9, v), (nfe * 1.1, v)],
                true,
            ));
        }
        let b: Vec<Series> = doc
            .config
            .samplers
            .iter()
            .map(|s| {
                let line = pts
                    .iter()
                    .filter(|p| p.view == "map" && &p.method == s && p.error > 0.0)
                    .map(|p| (p.nfe as f64, p.error))
                    .collect();
                (s.clone(), line, false)
            })
            .collect();
        let name = if g.model == "exact" {
            "exact".to_string()
        } else {
            g.model
                .rsplit('/')
                .next()
                .unwrap_or(&g.model)
                .trim_end_matches(".safetensors")
                .to_string()
        };
        let stem = dir.join(format!("likelihood_{}_{name}", g.problem));
        render!(&stem, (1240, 560 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, 2));
            series_panel(
                &panels[0],
                &format!("{} ({name}): log p by the change of variables", g.problem),
                ("NFE", "RMS error of log p (nats)"),
                &a,
            )?;
            series_panel(
                &panels[1],
                &format!(
                    "{} ({name}): KL of the sampler's law (its map's density)",
                    g.problem
                ),
                ("NFE", "KL(q || p) (nats)"),
                &b,
            )?;
        });
    }
    Ok(out)
}

/// A file-name stem from a convention group's name.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => out.push(c.to_ascii_lowercase()),
            _ if !out.ends_with('_') => out.push('_'),
            _ => {}
        }
    }
    out.trim_matches('_').to_string()
}

/// The `conventions` study: per convention, RMS error against the exact PF-ODE solution vs NFE,
/// one panel per problem and training schedule, one line per choice (the base solid first); and
/// the median error ratio of every flip vs NFE.
pub fn conventions(doc: &Doc<super::conventions::Conventions>, dir: &Path) -> Result<Vec<PathBuf>> {
    fonts();
    let mut out = Vec::new();
    let groups = unique(doc.config.variants.iter().map(|v| v.group.clone()));
    let combos: Vec<(String, String)> = doc
        .config
        .betas
        .iter()
        .flat_map(|b| {
            doc.config
                .problems
                .iter()
                .map(move |p| (p.clone(), b.clone()))
        })
        .collect();
    let (rows, cols) = (doc.config.betas.len(), doc.config.problems.len());
    for g in &groups {
        let labels: Vec<&str> = doc
            .config
            .variants
            .iter()
            .filter(|v| &v.group == g)
            .map(|v| v.label.as_str())
            .collect();
        let stem = dir.join(format!("conventions_{}", slug(g)));
        render!(
            &stem,
            (420 * cols as u32, 360 * rows as u32 + 18),
            out,
            |root| {
                let main = footer(&root, &doc.provenance)?;
                let panels = main.split_evenly((rows, cols));
                for ((p, b), panel) in combos.iter().zip(panels.iter()) {
                    let series: Vec<Series> = labels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            let pts = doc
                                .points
                                .iter()
                                .filter(|q| {
                                    &q.group == g
                                        && q.label == *l
                                        && &q.problem == p
                                        && &q.betas == b
                                })
                                .filter(|q| q.err_rms > 0.0)
                                .map(|q| (q.nfe as f64, q.err_rms))
                                .collect();
                            (l.to_string(), pts, i > 0)
                        })
                        .collect();
                    series_panel(
                        panel,
                        &format!("{p}, {b}: {g}"),
                        ("NFE", "RMS error vs exact"),
                        &series,
                    )?;
                }
            }
        );
    }
    let flips = &doc.summary.flips;
    if !flips.is_empty() {
        let stem = dir.join("conventions_ratios");
        let series = |sigmas: bool| -> Vec<Series> {
            flips
                .iter()
                .filter(|f| f.group.starts_with("sigmas") == sigmas)
                .map(|f| {
                    let pts = f
                        .nfe
                        .iter()
                        .zip(&f.ratio)
                        .filter_map(|(&n, r)| Some((n as f64, (*r)?)))
                        .collect();
                    (
                        format!("{}: {} -> {}", f.group, f.base, f.label),
                        pts,
                        false,
                    )
                })
                .collect()
        };
        render!(&stem, (1480, 640 + 18), out, |root| {
            let main = footer(&root, &doc.provenance)?;
            let panels = main.split_evenly((1, 2));
            for (panel, (sigmas, title)) in panels.iter().zip([
                (false, "spacing, final step, order, implementation"),
                (true, "sigma sequences"),
            ]) {
                series_panel(
                    panel,
                    &format!("flip / base, median over problems and schedules: {title}"),
                    ("NFE", "RMS error ratio"),
                    &series(sigmas),
                )?;
            }
        });
    }
    Ok(out)
}
