//! Tables from results files, in Markdown and LaTeX (booktabs).
//!
//! - `convergence`: per problem, schedule and grid, the RMS error at NFE 5, 10, 20 and 50 and the
//!   empirical order vs NFE with its 95% interval (of the RMS and of the median error), per
//!   solver. The smallest error of each NFE column is in bold; orders are not ranked (a high
//!   order with a wide interval is no better). A cell is empty where the solver cannot spend that
//!   NFE exactly and a smaller target already ran the same step count; otherwise the NFE actually
//!   used, when it differs, is given in brackets. A last table says which solver wins most
//!   groups at each NFE budget (the most refined run within the budget, RMS and median error).
//! - `ot_gap`: per problem and schedule, the flow's coupling cost, the optimal assignment cost,
//!   their relative gap, the closed-form W2^2 and the exact flow's coupling cost (single
//!   Gaussians), straightness and path-length excess.
//! - `sde`: per problem, strong and weak orders and errors of stochastic samplers and ODE solvers.
//!
//! Each table starts with a comment naming the command, seed and git revision that made the data.

use super::convergence::Convergence;
use super::ot_gap::OtGap;
use super::sde::{Point as SdePoint, Sde};
use super::{group_by, Doc, Provenance};

/// The table columns: target NFEs.
pub const NFE_COLUMNS: [usize; 4] = [5, 10, 20, 50];

/// A table as cells plus which cells are bold.
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub bold: Vec<Vec<bool>>,
}

fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.2e}")
    }
}

/// The index of the smallest value.
fn argbest(values: &[Option<f64>]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The convergence tables.
pub fn convergence(doc: &Doc<Convergence>) -> Vec<Table> {
    let mut tables = Vec::new();
    for (key, pts) in group_by(&doc.points, |p| {
        (p.problem.clone(), p.schedule.clone(), p.grid.clone())
    }) {
        let mut header = vec!["solver".to_string()];
        header.extend(NFE_COLUMNS.iter().map(|n| format!("NFE {n}")));
        header.push("order (95% CI)".into());
        header.push("order, median error".into());
        header.push("declared".into());
        let mut rows = Vec::new();
        let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); NFE_COLUMNS.len() + 2];
        for (solver, spts) in group_by(&pts, |p| p.solver.clone()) {
            let mut row = vec![solver.clone()];
            for (c, &n) in NFE_COLUMNS.iter().enumerate() {
                let p = spts.iter().find(|p| p.nfe_target == n);
                values[c].push(p.map(|p| p.err_rms));
                row.push(match p {
                    Some(p) if p.nfe == n => sci(p.err_rms),
                    Some(p) => format!("{} [{}]", sci(p.err_rms), p.nfe),
                    None => String::new(),
                });
            }
            let fit = doc.summary.fits.iter().find(|f| {
                (&f.problem, &f.schedule, &f.grid, &f.solver) == (&key.0, &key.1, &key.2, &solver)
            });
            for (c, order) in [
                fit.and_then(|f| f.order_nfe),
                fit.and_then(|f| f.order_nfe_median),
            ]
            .into_iter()
            .enumerate()
            {
                values[NFE_COLUMNS.len() + c].push(order.map(|o| o.order));
                row.push(match order {
                    Some(o) => format!("{:.2} ± {:.2} [{}-{}]", o.order, o.ci95, o.lo, o.hi),
                    None => "n/a".into(),
                });
            }
            row.push(spts[0].declared_order.to_string());
            rows.push(row);
        }
        let mut bold = vec![vec![false; header.len()]; rows.len()];
        for (c, col) in values.iter().take(NFE_COLUMNS.len()).enumerate() {
            if let Some(i) = argbest(col) {
                bold[i][c + 1] = true;
            }
        }
        tables.push(Table {
            title: format!(
                "{}, {}, {} grid: RMS error vs NFE and empirical order",
                key.0, key.1, key.2
            ),
            header,
            rows,
            bold,
        });
    }
    tables.push(budget(doc));
    tables
}

/// Which solver for which NFE budget: for each target n, over every (problem, schedule, grid)
/// group, the solver whose most refined run with NFE <= n has the smallest RMS (and median)
/// error; each cell names the two solvers that win most groups, with their counts.
fn budget(doc: &Doc<Convergence>) -> Table {
    let groups = group_by(&doc.points, |p| {
        (p.problem.clone(), p.schedule.clone(), p.grid.clone())
    });
    let mut targets = doc.config.nfe.clone();
    targets.sort_unstable();
    targets.dedup();
    type Metric = fn(&super::convergence::Point) -> f64;
    let metrics: [Metric; 2] = [|p| p.err_rms, |p| p.err_median];
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|&n| {
            let mut row = vec![n.to_string()];
            for metric in metrics {
                let mut wins: Vec<(String, usize)> = Vec::new();
                for (_, pts) in &groups {
                    let best = group_by(pts, |p| p.solver.clone())
                        .into_iter()
                        .filter_map(|(solver, spts)| {
                            spts.iter()
                                .filter(|p| p.nfe <= n)
                                .max_by_key(|p| p.nfe)
                                .map(|p| (solver, metric(p)))
                        })
                        .min_by(|a, b| a.1.total_cmp(&b.1));
                    if let Some((solver, _)) = best {
                        match wins.iter_mut().find(|(s, _)| *s == solver) {
                            Some(w) => w.1 += 1,
                            None => wins.push((solver, 1)),
                        }
                    }
                }
                wins.sort_by_key(|w| std::cmp::Reverse(w.1));
                for k in 0..2 {
                    row.push(
                        wins.get(k)
                            .map(|(s, c)| format!("{s} ({c})"))
                            .unwrap_or_default(),
                    );
                }
            }
            row
        })
        .collect();
    let header: Vec<String> = [
        "NFE budget",
        "most wins, RMS error",
        "second",
        "most wins, median error",
        "second",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Table {
        title: format!(
            "Which solver for which NFE budget: groups won of {} (problem x schedule x grid), by the most refined run within the budget",
            groups.len()
        ),
        bold: vec![vec![false; header.len()]; rows.len()],
        header,
        rows,
    }
}

/// The OT-gap table.
pub fn ot_gap(doc: &Doc<OtGap>) -> Vec<Table> {
    let header: Vec<String> = [
        "problem",
        "schedule",
        "flow coupling cost",
        "OT cost (assignment)",
        "relative gap",
        "W2^2 (closed form)",
        "exact flow cost",
        "straightness",
        "path excess",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let rows: Vec<Vec<String>> = doc
        .points
        .iter()
        .map(|p| {
            vec![
                p.problem.clone(),
                p.schedule.clone(),
                format!("{:.6}", p.flow_cost),
                format!("{:.6}", p.ot_cost),
                sci(p.rel_gap),
                opt(p.bures),
                opt(p.flow_cost_exact),
                format!("{:.4}", p.straightness),
                format!("{:.4}", p.path_excess),
            ]
        })
        .collect();
    let bold = vec![vec![false; header.len()]; rows.len()];
    let mut tables = vec![Table {
        title: format!(
            "Optimal-transport gap and straightness of the PF-ODE map ({} samples)",
            doc.config.samples
        ),
        header,
        rows,
        bold,
    }];
    let header: Vec<String> = [
        "problem",
        "schedule",
        "asymmetry median",
        "p90",
        "max",
        "min eig (J + J^T)/2",
        "indefinite",
        "flow cost",
        "independent OT cost (>= W2^2)",
        "gap lower bound",
        "95% lower bound",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = doc
        .points
        .iter()
        .filter_map(|p| {
            let c = p.certificate.as_ref()?;
            Some(vec![
                p.problem.clone(),
                p.schedule.clone(),
                sci(c.asymmetry_median),
                sci(c.asymmetry_p90),
                sci(c.asymmetry_max),
                format!("{:.3e}", c.min_sym_eig),
                format!("{:.1}%", 100.0 * c.indefinite_fraction),
                format!("{:.4} ± {:.4}", p.flow_cost, c.flow_cost_se),
                c.ot_independent
                    .map(|o| format!("{o:.4} ± {:.4}", c.ot_independent_se.unwrap_or(f64::NAN)))
                    .unwrap_or_default(),
                c.gap_lower.map(|g| format!("{g:.4}")).unwrap_or_default(),
                c.gap_lower_95
                    .map(|g| format!("{g:.4}"))
                    .unwrap_or_default(),
            ])
        })
        .collect();
    if !rows.is_empty() {
        let bold = vec![vec![false; header.len()]; rows.len()];
        tables.push(Table {
            title: format!(
                "OT certificate: asymmetry ||J - J^T||_F / ||J||_F of the PF-ODE map's Jacobian at {} samples (0 for an OT map, by Brenier), and a lower bound on E|T(x) - x|^2 - W2^2 from {} independent assignments",
                doc.config.jacobians, doc.config.replicates
            ),
            header,
            rows,
            bold,
        });
    }
    tables
}

fn origin(p: &Provenance) -> String {
    format!(
        "made by `{}` (seed {}, pfode {} @ {})",
        p.command, p.seed, p.pfode_version, p.git_revision
    )
}

pub fn markdown(tables: &[Table], p: &Provenance) -> String {
    let mut s = format!("<!-- {} -->\n", origin(p));
    for t in tables {
        s += &format!(
            "\n### {}\n\n| {} |\n|{}\n",
            t.title,
            t.header.join(" | "),
            "---|".repeat(t.header.len())
        );
        for (row, bold) in t.rows.iter().zip(&t.bold) {
            let cells: Vec<String> = row
                .iter()
                .zip(bold)
                .map(|(c, &b)| {
                    if b && !c.is_empty() {
                        format!("**{c}**")
                    } else {
                        c.clone()
                    }
                })
                .collect();
            s += &format!("| {} |\n", cells.join(" | "));
        }
    }
    s
}

fn tex_escape(s: &str) -> String {
    s.replace('\\', "\\textbackslash{}")
        .replace('_', "\\_")
        .replace('%', "\\%")
        .replace('&', "\\&")
        .replace('#', "\\#")
        .replace('^', "\\^{}")
        .replace('±', "$\\pm$")
        .replace('|', "$|$")
}

pub fn latex(tables: &[Table], p: &Provenance) -> String {
    let mut s = format!("% {}\n% needs \\usepackage{{booktabs}}\n", origin(p));
    for t in tables {
        s += &format!(
            "\n\\begin{{table}}[ht]\n\\centering\n\\caption{{{}}}\n\\begin{{tabular}}{{l{}}}\n\\toprule\n{} \\\\\n\\midrule\n",
            tex_escape(&t.title),
            "r".repeat(t.header.len() - 1),
            t.header.iter().map(|h| tex_escape(h)).collect::<Vec<_>>().join(" & ")
        );
        for (row, bold) in t.rows.iter().zip(&t.bold) {
            let cells: Vec<String> = row
                .iter()
                .zip(bold)
                .map(|(c, &b)| {
                    let c = tex_escape(c);
                    if b && !c.is_empty() {
                        format!("\\textbf{{{c}}}")
                    } else {
                        c
                    }
                })
                .collect();
            s += &format!("{} \\\\\n", cells.join(" & "));
        }
        s += "\\bottomrule\n\\end{tabular}\n\\end{table}\n";
    }
    s
}

/// The NFE columns of the `sde` tables.
pub const SDE_NFE: [usize; 3] = [16, 64, 256];

/// The `sde` tables: per problem, the strong and weak orders (vs NFE, 95% intervals) of every
/// solver, and the strong and weak (second-moment) errors at NFE 16, 64 and 256, stochastic
/// samplers and ODE solvers side by side; the smallest error of each column in bold.
pub fn sde(doc: &Doc<Sde>) -> Vec<Table> {
    let mut tables = Vec::new();
    let order = |o: Option<crate::metrics::OrderFit>| {
        o.map(|o| format!("{:.2} ± {:.2}", o.order, o.ci95))
            .unwrap_or_default()
    };
    let errors: Vec<&SdePoint> = doc.points.iter().filter(|p| p.t.is_none()).collect();
    for (problem, pts) in group_by(&errors, |p| p.problem.clone()) {
        let mut header = vec!["solver".to_string(), "kind".into()];
        header
            .extend(["strong order", "weak order (mean)", "weak order (x x^T)"].map(String::from));
        header.extend(SDE_NFE.iter().map(|n| format!("strong, NFE {n}")));
        header.extend(SDE_NFE.iter().map(|n| format!("weak, NFE {n}")));
        let mut rows = Vec::new();
        let mut values: Vec<Vec<Option<f64>>> = Vec::new();
        for (solver, rows_s) in group_by(&pts, |p| p.solver.clone()) {
            let fit = doc
                .summary
                .fits
                .iter()
                .find(|f| f.problem == problem && f.solver == solver);
            let at = |n: usize, f: fn(&SdePoint) -> Option<f64>| {
                rows_s.iter().find(|p| p.nfe == n).and_then(|p| f(p))
            };
            let mut v: Vec<Option<f64>> = SDE_NFE
                .iter()
                .map(|&n| at(n, |p| p.strong.map(|e| e.value)))
                .collect();
            v.extend(
                SDE_NFE
                    .iter()
                    .map(|&n| at(n, |p| p.weak_second.map(|e| e.value))),
            );
            let mut row = vec![
                solver.clone(),
                if rows_s[0].stochastic { "SDE" } else { "ODE" }.into(),
                order(fit.and_then(|f| f.strong)),
                order(fit.and_then(|f| f.weak_mean)),
                order(fit.and_then(|f| f.weak_second)),
            ];
            row.extend(v.iter().map(|x| x.map(sci).unwrap_or_default()));
            rows.push(row);
            values.push(v);
        }
        let mut bold = vec![vec![false; header.len()]; rows.len()];
        for c in 0..2 * SDE_NFE.len() {
            let col: Vec<Option<f64>> = values.iter().map(|v| v[c]).collect();
            if let Some(i) = argbest(&col) {
                bold[i][5 + c] = true;
            }
        }
        tables.push(Table {
            title: format!("{problem}: stochastic samplers and ODE solvers (strong error vs a 16x finer grid on the same Brownian path; weak error of E x x^T)"),
            header,
            rows,
            bold,
        });
    }
    tables
}

/// The `learned_vs_exact` study: per network its error split, and per solver the crossover NFE
/// and the errors at a few NFE.
pub fn learned(doc: &Doc<super::learned::Learned>) -> Vec<Table> {
    let mut tables = Vec::new();
    let rows: Vec<Vec<String>> = doc
        .groups
        .iter()
        .map(|g| {
            let n = &g.network;
            let get = |k: &str| n.get(k).cloned().unwrap_or_default();
            vec![
                g.problem.clone(),
                format!(
                    "{} x {} {}, {}",
                    get("depth"),
                    get("width"),
                    get("prediction"),
                    get("time_input")
                ),
                sci(g.net_error),
                sci(g.net_error_median),
                format!("{:.3} ± {:.3}", g.nll_ref_exact.value, g.nll_ref_exact.se),
                format!("{:.3} ± {:.3}", g.nll_ref_net.value, g.nll_ref_net.se),
                format!("{:.3} ± {:.3}", g.entropy.value, g.entropy.se),
            ]
        })
        .collect();
    tables.push(Table {
        title: "Network error of the PF-ODE map (reference solutions, network vs exact oracle)"
            .into(),
        header: [
            "problem",
            "network (depth x width, prediction, time input)",
            "RMS dist(x_N, x_E)",
            "median dist(x_N, x_E)",
            "NLL of x_E",
            "NLL of x_N",
            "entropy of p_t_end",
        ]
        .map(String::from)
        .to_vec(),
        bold: vec![vec![false; 7]; rows.len()],
        rows,
    });
    const AT: [usize; 3] = [10, 20, 50];
    for g in &doc.groups {
        let mut header = vec![
            "solver".to_string(),
            "crossover NFE (exact oracle)".into(),
            "crossover NFE (network)".into(),
        ];
        header.extend(AT.iter().map(|n| format!("disc. error (exact), NFE {n}")));
        header.extend(AT.iter().map(|n| format!("total error (network), NFE {n}")));
        let mut rows = Vec::new();
        for c in doc.summary.crossovers.iter().filter(|c| c.net == g.key) {
            let at = |n: usize, f: fn(&super::learned::Point) -> Option<f64>| {
                doc.points
                    .iter()
                    .find(|p| p.net == g.key && p.solver == c.solver && p.nfe == n)
                    .and_then(f)
                    .map(sci)
                    .unwrap_or_default()
            };
            let nfe = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_else(|| "never".into());
            let mut row = vec![c.solver.clone(), nfe(c.nfe_exact), nfe(c.nfe_net)];
            row.extend(AT.iter().map(|&n| at(n, |p| p.disc_exact)));
            row.extend(AT.iter().map(|&n| at(n, |p| p.total_net)));
            rows.push(row);
        }
        tables.push(Table {
            title: format!(
                "{}: from which NFE discretization error stays below the network error {}",
                g.problem,
                sci(g.net_error)
            ),
            bold: vec![vec![false; header.len()]; rows.len()],
            header,
            rows,
        });
    }
    tables
}

/// The `guidance` study: per schedule, W2 of each solver's guided output law (at the largest step
/// count) to the class law, the tilted law and the guided ODE's own law, by scale; per mixture,
/// precision / NLL / off-support fraction / MMD^2 of every method at every scale.
pub fn guidance(doc: &Doc<super::guidance::GuidanceStudy>) -> Vec<Table> {
    let cfg = &doc.config;
    let max_steps = cfg.steps.iter().copied().max().unwrap_or(0);
    let opt = |v: Option<f64>| v.map_or("-".to_string(), sci);
    let mut tables = Vec::new();
    for sched in &cfg.schedules {
        let rows: Vec<Vec<String>> = doc
            .points
            .iter()
            .filter(|p| p.part == "gaussian" && &p.schedule == sched && p.steps == max_steps)
            .map(|p| {
                vec![
                    p.method.clone(),
                    p.solver.clone(),
                    p.nfe.to_string(),
                    opt(p.w2_class),
                    opt(p.w2_tilted),
                    opt(p.w2_limit),
                    opt(p.kl_class),
                ]
            })
            .collect();
        tables.push(Table {
            title: format!(
                "{}: class {} guided against {} on {sched}, {max_steps} steps: W2 of the exact output law",
                cfg.gaussian, cfg.class, cfg.guide
            ),
            header: ["guidance", "solver", "NFE", "W2 to p(x|c)", "W2 to tilted", "W2 to guided ODE", "KL to p(x|c)"]
                .map(String::from)
                .to_vec(),
            bold: vec![vec![false; 7]; rows.len()],
            rows,
        });
    }
    for problem in &cfg.mixtures {
        let rows: Vec<Vec<String>> = doc
            .points
            .iter()
            .filter(|p| p.part == "mixture" && &p.problem == problem)
            .map(|p| {
                vec![
                    p.method.clone(),
                    format!("{}", p.scale),
                    p.oracle_calls.to_string(),
                    p.precision.map_or("-".into(), |v| format!("{v:.4}")),
                    match (p.nll, p.nll_se) {
                        (Some(v), Some(se)) => format!("{v:.3} ± {se:.3}"),
                        _ => "-".into(),
                    },
                    p.off_support.map_or("-".into(), |v| format!("{v:.4}")),
                    opt(p.mmd2),
                    opt(p.sliced_w2),
                    match (p.entropy, p.entropy_exact_knn) {
                        (Some(h), Some(e)) => format!("{:.3}", h - e),
                        _ => "-".into(),
                    },
                ]
            })
            .collect();
        tables.push(Table {
            title: format!(
                "{problem}, class {}: {} with {} steps, {} samples",
                cfg.class, cfg.mixture_solver, cfg.mixture_steps, cfg.samples
            ),
            header: [
                "guidance",
                "s",
                "oracle calls",
                "precision",
                "NLL under p(x|c)",
                "off support",
                "MMD^2",
                "sliced W2",
                "H(q) - H(p), kNN",
            ]
            .map(String::from)
            .to_vec(),
            bold: vec![vec![false; 9]; rows.len()],
            rows,
        });
    }
    let rows: Vec<Vec<String>> = doc
        .points
        .iter()
        .filter(|p| p.part == "corrector")
        .map(|p| {
            vec![
                p.solver.clone(),
                p.steps.to_string(),
                p.nfe.to_string(),
                opt(p.w2_target),
                opt(p.kl_target),
            ]
        })
        .collect();
    if !rows.is_empty() {
        tables.push(Table {
            title: format!(
                "{}, unguided: predictors and Langevin correctors, the exact output law against p_t",
                cfg.corrector_problem
            ),
            header: ["sampler", "steps", "NFE", "W2 to p_t", "KL to p_t"]
                .map(String::from)
                .to_vec(),
            bold: vec![vec![false; 5]; rows.len()],
            rows,
        });
    }
    tables
}

/// The `flow_maps` study: per problem the few-step frontier (sliced W2 and NLL at each call
/// count; the best per column in bold, the exact-sample floor last), on gauss4 also the W2 of
/// the fitted Gaussian (and KL estimate, MMD^2); the flow-map errors (boundary, all pairs, semigroup defect, ratio to
/// direct regression); and the training cost.
pub fn flow_maps(doc: &Doc<super::flow_maps::FlowMaps>) -> Vec<Table> {
    use super::flow_maps::Point;
    let cfg = &doc.config;
    let mut tables = Vec::new();
    type Metric = fn(&crate::metrics::flow_map::Quality) -> Option<f64>;
    let metrics: [(&str, Metric); 5] = [
        ("KL(q | p_0) estimate (NLL - kNN entropy)", |q| Some(q.kl)),
        ("NLL under p_0", |q| Some(q.nll.value)),
        ("sliced W2 to p_0", |q| Some(q.sliced_w2)),
        ("MMD^2 to p_0", |q| Some(q.mmd2)),
        ("W2 of the fitted Gaussian to p_0", |q| q.gaussian_w2),
    ];
    for problem in &cfg.problems {
        let pts: Vec<&Point> = doc
            .points
            .iter()
            .filter(|p| &p.problem == problem)
            .collect();
        if pts.is_empty() {
            continue;
        }
        let floor = doc
            .groups
            .iter()
            .find(|g| &g.key == problem)
            .map(|g| g.floor);
        for (what, metric) in metrics {
            if floor.and_then(|f| metric(&f)).is_none() {
                continue;
            }
            let mut header = vec!["map".to_string()];
            header.extend(
                cfg.calls
                    .iter()
                    .map(|k| format!("{k} call{}", if *k == 1 { "" } else { "s" })),
            );
            let values: Vec<Vec<Option<f64>>> = pts
                .iter()
                .map(|p| {
                    cfg.calls
                        .iter()
                        .map(|&k| {
                            p.frontier
                                .iter()
                                .find(|f| f.calls == k)
                                .and_then(|f| metric(&f.quality))
                        })
                        .collect()
                })
                .collect();
            let best: Vec<Option<usize>> = (0..cfg.calls.len())
                .map(|c| argbest(&values.iter().map(|v| v[c]).collect::<Vec<_>>()))
                .collect();
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut bold = Vec::new();
            for (r, (p, v)) in pts.iter().zip(&values).enumerate() {
                let kind = if p.learned { "learned" } else { "solver" };
                let mut row = vec![format!("{} ({kind})", p.map)];
                row.extend(v.iter().map(|x| x.map_or("-".into(), sci)));
                rows.push(row);
                let mut b = vec![false];
                b.extend(best.iter().map(|&i| i == Some(r)));
                bold.push(b);
            }
            if let Some(f) = floor.and_then(|f| metric(&f)) {
                let mut row = vec!["exact samples (floor)".to_string()];
                row.extend(cfg.calls.iter().map(|_| sci(f)));
                rows.push(row);
                bold.push(vec![false; cfg.calls.len() + 1]);
            }
            tables.push(Table {
                title: format!("{problem}: {what} of {}-sample runs from the same x_T, by network calls (NFE for solvers)", cfg.samples),
                header,
                rows,
                bold,
            });
        }
        let ratio = |p: &Point| {
            doc.summary
                .yardstick
                .iter()
                .find(|y| &y.problem == problem && y.method == p.map)
                .map(|y| format!("{:.2}", y.heat_ratio))
                .unwrap_or_else(|| {
                    if p.map == "direct" {
                        "1".into()
                    } else {
                        "-".into()
                    }
                })
        };
        let rows: Vec<Vec<String>> = pts
            .iter()
            .map(|p| {
                let all =
                    p.heat.iter().map(|e| e.mean_norm).sum::<f64>() / p.heat.len().max(1) as f64;
                vec![
                    p.map.clone(),
                    p.heat.len().to_string(),
                    sci(p.boundary),
                    sci(all),
                    if p.learned { ratio(p) } else { "-".into() },
                    p.semigroup.as_ref().map_or("-".into(), |s| sci(s.mean)),
                    p.semigroup.as_ref().map_or("-".into(), |s| sci(s.max)),
                ]
            })
            .collect();
        tables.push(Table {
            title: format!("{problem}: flow-map error E|Psi^ - Psi| (one call per pair; solvers one step) and semigroup defect"),
            header: ["map", "pairs", "boundary (t = 0)", "mean over pairs", "ratio to direct", "semigroup mean", "semigroup max"]
                .map(String::from)
                .to_vec(),
            bold: vec![vec![false; 7]; rows.len()],
            rows,
        });
    }
    let rows: Vec<Vec<String>> = doc
        .points
        .iter()
        .filter_map(|p| {
            let t = p.training.as_ref()?;
            Some(vec![
                p.problem.clone(),
                p.map.clone(),
                p.param.clone().unwrap_or_default(),
                t.n_params.to_string(),
                t.optimizer_steps.to_string(),
                t.samples_seen.to_string(),
                format!("{:.1}", t.wall_seconds),
                t.final_val_mse.map_or("-".into(), sci),
                t.cpu.clone().unwrap_or_default(),
            ])
        })
        .collect();
    tables.push(Table {
        title: "Training cost of the distilled maps".into(),
        header: [
            "problem",
            "method",
            "parameterisation",
            "parameters",
            "optimizer steps",
            "samples seen",
            "wall s",
            "final validation MSE",
            "CPU",
        ]
        .map(String::from)
        .to_vec(),
        bold: vec![vec![false; 9]; rows.len()],
        rows,
    });
    tables
}

/// The likelihood tables: per unit, the ODE change-of-variables error (RMS of log p - exact, nats)
/// per integrator and steps; Hutchinson's mean error and spread; the KL a sampler's discrete
/// map implies per steps; the bounds' gaps below the exact log p_0.
pub fn likelihood(doc: &Doc<super::likelihood::LikelihoodStudy>) -> Vec<Table> {
    let mut tables = Vec::new();
    let pm = |v: f64, se: f64| format!("{} ± {}", sci(v), sci(se));
    for g in &doc.groups {
        let pts: Vec<_> = doc.points.iter().filter(|p| p.unit == g.key).collect();
        let model = if g.model == "exact" {
            "exact mixture".to_string()
        } else {
            g.model.clone()
        };
        let steps: Vec<usize> = doc.config.steps.clone();
        let mut header = vec!["integrator".to_string()];
        header.extend(steps.iter().map(|n| format!("{n} steps")));
        let mut rows = Vec::new();
        for i in &doc.config.integrators {
            let mut row = vec![i.clone()];
            for &n in &steps {
                row.push(
                    pts.iter()
                        .find(|p| {
                            p.view == "ode"
                                && &p.method == i
                                && p.steps == n
                                && p.divergence == "exact"
                        })
                        .map(|p| format!("{} ({})", sci(p.rms_error), p.nfe))
                        .unwrap_or_default(),
                );
            }
            rows.push(row);
        }
        for p in pts
            .iter()
            .filter(|p| p.view == "ode" && p.method == "reference" && p.divergence == "exact")
        {
            let mut row = vec![format!("reference, {} prior", p.prior)];
            row.push(format!("{} ({})", sci(p.rms_error), p.nfe));
            row.push(format!("mean {}", pm(p.error, p.error_se)));
            row.resize(header.len(), String::new());
            rows.push(row);
        }
        let bold = vec![vec![false; header.len()]; rows.len()];
        tables.push(Table {
            title: format!(
                "{}, {model}: RMS error of log p_{{t_min}} (nats) by the change of variables, exact divergence (NFE in brackets), t_min = {}",
                g.problem, g.t_min
            ),
            header,
            rows,
            bold,
        });
        let header: Vec<String> = [
            "divergence",
            "integrator",
            "NFE",
            "mean error",
            "RMS error (spread)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows: Vec<Vec<String>> = pts
            .iter()
            .filter(|p| p.view == "ode" && p.divergence.starts_with("hutchinson"))
            .map(|p| {
                vec![
                    p.divergence.replace("hutchinson:", "Hutchinson, probes "),
                    format!(
                        "{} {}",
                        p.method,
                        if p.method == "reference" {
                            String::new()
                        } else {
                            format!("{} steps", p.steps)
                        }
                    ),
                    p.nfe.to_string(),
                    pm(p.error, p.error_se),
                    sci(p.rms_error),
                ]
            })
            .collect();
        let bold = vec![vec![false; header.len()]; rows.len()];
        tables.push(Table {
            title: format!(
                "{}, {model}: Hutchinson's estimator (Rademacher probes fixed along each path)",
                g.problem
            ),
            header,
            rows,
            bold,
        });
        let ss = doc.config.sampler_steps.clone();
        let mut header = vec!["sampler".to_string()];
        header.extend(ss.iter().map(|n| format!("{n} steps")));
        let rows: Vec<Vec<String>> = doc
            .config
            .samplers
            .iter()
            .map(|s| {
                let mut row = vec![s.clone()];
                for &n in &ss {
                    row.push(
                        pts.iter()
                            .find(|p| p.view == "map" && &p.method == s && p.steps == n)
                            .map(|p| pm(p.error, p.error_se))
                            .unwrap_or_default(),
                    );
                }
                row
            })
            .collect();
        let bold = vec![vec![false; header.len()]; rows.len()];
        tables.push(Table {
            title: format!(
                "{}, {model}: KL(q || p) of the sampler's law, from the density its discrete map implies (log p_T(x_T) - log|det J|), logsnr grid to t = 1e-3",
                g.problem
            ),
            header,
            rows,
            bold,
        });
        let header: Vec<String> = ["bound", "prior", "NFE", "mean ELBO", "log p_0 - ELBO"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows: Vec<Vec<String>> = pts
            .iter()
            .filter(|p| p.view == "elbo")
            .map(|p| {
                vec![
                    format!(
                        "{}{}",
                        if p.method == "ddpm" {
                            format!("DDPM, T = {}", p.steps)
                        } else {
                            "continuous (g^2 weighting)".into()
                        },
                        if p.schedule.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", p.schedule)
                        }
                    ),
                    p.prior.clone(),
                    p.nfe.to_string(),
                    format!("{:.4}", p.mean),
                    pm(-p.error, p.error_se),
                ]
            })
            .collect();
        let bold = vec![vec![false; header.len()]; rows.len()];
        tables.push(Table {
            title: format!(
                "{}, {model}: variational bounds on log p_0 (exact mean log p_0 of the same points beside: see the ODE table's reference row)",
                g.problem
            ),
            header,
            rows,
            bold,
        });
    }
    tables
}

/// Writes `tables` as DIR/STEM.md and DIR/STEM.tex; returns the paths.
pub fn write(
    tables: &[Table],
    provenance: &Provenance,
    dir: &std::path::Path,
    stem: &str,
) -> crate::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for (ext, text) in [
        ("md", markdown(tables, provenance)),
        ("tex", latex(tables, provenance)),
    ] {
        let path = dir.join(format!("{stem}.{ext}"));
        crate::io::write_atomic(&path, text.as_bytes())?;
        out.push(path);
    }
    Ok(out)
}

/// The `conventions` study: the headline table (each flip's error ratio to its base at NFE 5, 10,
/// 20, 50, median and range over problems and training schedules; the W2 ratio on gauss4; the
/// largest NFE at which the median ratio is outside [0.9, 1.11]) and per convention the RMS errors
/// (and W2 on gauss4).
pub fn conventions(doc: &Doc<super::conventions::Conventions>) -> Vec<Table> {
    let mut tables = Vec::new();
    let ratio = |m: Option<f64>, lo: Option<f64>, hi: Option<f64>| match (m, lo, hi) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.2} ({lo:.2}-{hi:.2})"),
        _ => String::new(),
    };
    let mut header: Vec<String> = vec!["convention".into(), "base -> flip".into()];
    header.extend(NFE_COLUMNS.iter().map(|n| format!("NFE {n}")));
    header.extend([
        "W2 ratio (gauss4) at 10 / 20".into(),
        "matters up to NFE".into(),
    ]);
    let mut rows = Vec::new();
    for f in &doc.summary.flips {
        let at = |n: usize| f.nfe.iter().position(|&m| m == n);
        let mut row = vec![f.group.clone(), format!("{} -> {}", f.base, f.label)];
        for &n in &NFE_COLUMNS {
            row.push(
                at(n)
                    .map(|i| ratio(f.ratio[i], f.ratio_min[i], f.ratio_max[i]))
                    .unwrap_or_default(),
            );
        }
        let w2 = |n: usize| {
            at(n)
                .and_then(|i| f.w2_ratio[i])
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        row.push(format!("{} / {}", w2(10), w2(20)));
        row.push(match f.matters_up_to {
            Some(n) if Some(&n) == f.nfe.last() => format!("all ({n})"),
            Some(n) => n.to_string(),
            None => "none".into(),
        });
        rows.push(row);
    }
    let bold = vec![vec![false; header.len()]; rows.len()];
    tables.push(Table {
        title: "What each diffusers convention costs: RMS error against the exact PF-ODE solution of the flip over its base, median (min-max) over problems and training schedules".into(),
        header,
        rows,
        bold,
    });
    let groups: Vec<String> = {
        let mut g: Vec<String> = Vec::new();
        for v in &doc.config.variants {
            if !g.contains(&v.group) {
                g.push(v.group.clone());
            }
        }
        g
    };
    for g in groups {
        let mut header: Vec<String> = vec![
            "problem".into(),
            "betas".into(),
            "choice".into(),
            "sigma start".into(),
        ];
        header.extend(NFE_COLUMNS.iter().map(|n| format!("NFE {n}")));
        header.push("W2 at 10 / 50".into());
        let mut rows = Vec::new();
        let mut bold = Vec::new();
        for b in &doc.config.betas {
            for p in &doc.config.problems {
                let variants: Vec<_> = doc
                    .config
                    .variants
                    .iter()
                    .filter(|v| v.group == g)
                    .collect();
                let find = |l: &str, n: usize| {
                    doc.points.iter().find(|q| {
                        q.group == g
                            && q.label == l
                            && &q.problem == p
                            && &q.betas == b
                            && q.nfe == n
                    })
                };
                let best: Vec<Option<f64>> = NFE_COLUMNS
                    .iter()
                    .map(|&n| {
                        variants
                            .iter()
                            .filter_map(|v| find(&v.label, n).map(|q| q.err_rms))
                            .reduce(f64::min)
                    })
                    .collect();
                for v in &variants {
                    let first = doc.points.iter().find(|q| {
                        q.group == g && q.label == v.label && &q.problem == p && &q.betas == b
                    });
                    let mut row = vec![
                        p.clone(),
                        b.clone(),
                        v.label.clone(),
                        first
                            .map(|q| format!("{:.3}", q.sigma_start))
                            .unwrap_or_default(),
                    ];
                    let mut marks = vec![false; 4];
                    for (k, &n) in NFE_COLUMNS.iter().enumerate() {
                        let e = find(&v.label, n).map(|q| q.err_rms);
                        row.push(e.map(sci).unwrap_or_default());
                        marks.push(e.is_some() && e == best[k]);
                    }
                    let w2 = |n: usize| find(&v.label, n).and_then(|q| q.w2).map(sci);
                    row.push(match (w2(10), w2(50)) {
                        (Some(a), Some(c)) => format!("{a} / {c}"),
                        _ => String::new(),
                    });
                    marks.push(false);
                    rows.push(row);
                    bold.push(marks);
                }
            }
        }
        tables.push(Table {
            title: format!("{g}: RMS error against the exact PF-ODE solution (smallest in bold); W2 of the output law to p_0 on gauss4"),
            header,
            rows,
            bold,
        });
    }
    tables
}
