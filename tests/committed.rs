//! The committed results are what the code writes now: each file's config is its study's
//! default config (what the README's commands run), every solver spec in it is the canonical
//! spec the registry gives today, and a few units recomputed here equal the committed points
//! bit for bit. A change that moves any committed number fails here until the results are
//! regenerated.

use pfode::study::convergence::{self, Convergence};
use pfode::study::flow_maps::{self as fmaps, FlowMaps};
use pfode::study::guidance::{self as guid, GuidanceStudy};
use pfode::study::learned::{self, Learned};
use pfode::study::ot_gap::{self, OtGap};
use pfode::study::sde::{self, Sde};
use pfode::study::{self as st, Doc, Keyed, Study};
use pfode::{schedule, solver};
use std::path::Path;

fn committed<S: Study>(path: &str) -> Doc<S> {
    st::read::<S>(Path::new(path)).unwrap()
}

fn same_config<S: Study>(doc: &Doc<S>, main: &S::Config) {
    assert_eq!(
        serde_json::to_value(&doc.config).unwrap(),
        serde_json::to_value(main).unwrap(),
        "the committed {} file was not written with the default config",
        S::KIND
    );
}

/// Recomputes unit `key` and compares its points with the committed ones.
fn recompute<S: Study>(study: &S, doc: &Doc<S>, key: &str) {
    let units = S::units(&doc.config).unwrap();
    let unit = units.iter().find(|u| u.key == key).expect("unit in config");
    let (_, points) = study.run(&doc.config, unit).unwrap();
    let keys: Vec<&str> = points.iter().map(|p| p.key()).collect();
    let stored: Vec<&S::Point> = doc
        .points
        .iter()
        .filter(|p| keys.contains(&p.key()))
        .collect();
    assert!(!stored.is_empty(), "no committed points for {key}");
    assert_eq!(points.len(), stored.len(), "{key}");
    for (a, b) in points.iter().zip(stored) {
        assert!(
            a == b,
            "{key}: a recomputed point differs from the committed one; regenerate the results"
        );
    }
}

#[test]
fn convergence_results_match_the_code() {
    let doc = committed::<Convergence>("results/convergence.json");
    same_config(&doc, &convergence::Config::main());
    for p in &doc.points {
        let s = schedule::parse(&p.schedule).unwrap();
        let mixture = pfode::problems::load(&p.problem).unwrap();
        let env = solver::Env {
            schedule: s.as_ref(),
            mixture: Some(&mixture),
            noise_seed: 0,
        };
        assert_eq!(
            p.spec,
            solver::build(&p.solver, &env).unwrap().spec,
            "{}",
            p.unit
        );
    }
    let study = Convergence::default();
    recompute(&study, &doc, "gauss4|edm|karras|dpm-solver++:order=2");
    recompute(&study, &doc, "ring2d|vp-linear|logsnr|unipc");
}

#[test]
fn ot_gap_results_match_the_code() {
    let doc = committed::<OtGap>("results/ot_gap.json");
    same_config(&doc, &ot_gap::Config::main());
    recompute(&OtGap, &doc, "gauss4|flow");
}

#[test]
fn guidance_results_match_the_code() {
    let doc = committed::<GuidanceStudy>("results/guidance.json");
    same_config(&doc, &guid::Config::main());
    recompute(&GuidanceStudy, &doc, "gaussian|flow|cfg|3");
    recompute(
        &GuidanceStudy,
        &doc,
        "mixture|ring2d|apg:eta=0,momentum=-0.5,threshold=4|2",
    );
    recompute(
        &GuidanceStudy,
        &doc,
        "corrector|gauss4|pc:predictor=ddim,step=sde|0",
    );
}

#[test]
fn sde_results_match_the_code() {
    let doc = committed::<Sde>("results/sde.json");
    same_config(&doc, &sde::Config::main());
    recompute(&Sde, &doc, "gauss4|ddpm");
}

#[test]
fn learned_results_match_the_code() {
    let doc = committed::<Learned>("results/learned_vs_exact.json");
    same_config(&doc, &learned::Config::main());
    recompute(
        &Learned::default(),
        &doc,
        "results/models/ring2d.safetensors|ddim",
    );
}

#[test]
fn flow_maps_results_match_the_code() {
    let doc = committed::<FlowMaps>("results/flow_maps.json");
    same_config(&doc, &fmaps::Config::main());
    recompute(&FlowMaps::default(), &doc, "ring2d|ctm");
    recompute(&FlowMaps::default(), &doc, "gauss4|solver:ddim");
    for p in &doc.points {
        for f in &p.frontier {
            let want = (p.problem == "ring2d" && f.calls <= 2).then_some(fmaps::PANEL);
            assert_eq!(
                f.panel.as_ref().map(Vec::len),
                want,
                "{} at {}",
                p.unit,
                f.calls
            );
        }
    }
    for g in &doc.groups {
        let want = (g.key == "ring2d").then_some(fmaps::PANEL);
        assert_eq!(g.panel.as_ref().map(Vec::len), want, "{}", g.key);
    }
}

#[test]
fn likelihood_results_match_the_code() {
    use pfode::study::likelihood::{self as lik, LikelihoodStudy};
    let doc = committed::<LikelihoodStudy>("results/likelihood.json");
    same_config(&doc, &lik::Config::main());
    recompute(&LikelihoodStudy, &doc, "gauss4|exact");
    // The reference change of variables is exact to 1e-9 on every exact-mixture unit.
    for p in doc.points.iter().filter(|p| {
        p.unit.ends_with("|exact")
            && p.method == "reference"
            && p.divergence == "exact"
            && p.prior == "exact"
    }) {
        assert!(p.rms_error < 1e-8, "{}: {}", p.key, p.rms_error);
    }
}

#[test]
fn conventions_results_match_the_code() {
    use pfode::study::conventions::{self as conv, Conventions};
    let doc = committed::<Conventions>("results/conventions.json");
    same_config(&doc, &conv::Config::main());
    let study = Conventions::default();
    for key in [
        "ring2d|scaled_linear|sigmas|karras",
        "gauss4|linear|implementation (DPM-Solver++ 2M)|official",
        "gauss4|scaled_linear|timestep_spacing (DDIM)|leading",
    ] {
        recompute(&study, &doc, key);
    }
}
