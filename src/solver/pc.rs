//! Predictor-corrector sampling (Song et al., ICLR 2021, Sec. 4.2, Algorithm 2):
//! `pc:predictor=SPEC,corrector=langevin,snr=r,n=M,step=snr|sigma|sde` composes any registered
//! predictor that walks the grid with M Langevin corrector steps per level
//! ([`super::langevin::Corrector`]).
//!
//! Order of operations: the official `pc_sampler` corrects at t_i and then predicts from t_i to
//! t_{i+1}, for every level but the last, and returns the last predictor's mean; the paper's
//! Algorithm 2 writes the corrector after the predictor, at every level including the last.
//! pfode follows the code (the last level may be sigma = 0, where no score exists).
//! NFE = the predictor's + M per step. The predictor's own normals (if it is stochastic) are
//! part 0 of the noise source, corrector step j's are part j + 1 ([`super::sde::Noise::split`]);
//! with M = 0 (or `corrector=none`) the sampler is the predictor, bit for bit. The defaults are
//! the official VE CIFAR-10 setting (reverse-diffusion-type predictor `euler-maruyama`, snr
//! 0.16, one corrector step).

use super::langevin::Corrector;
use super::sde::{Brownian, Noise};
use super::{Entry, Env, Model, Solver};
use crate::error::{Error, Result};
use crate::grid::Grid;
use crate::schedule::Schedule;
use crate::spec::Spec;
use ndarray::Array2;

pub struct Pc {
    predictor: Box<dyn Solver>,
    stochastic: bool,
    corrector: Corrector,
    noise: Box<dyn Noise>,
    sources: Vec<Box<dyn Noise>>,
}

fn build(spec: &mut Spec, env: &Env) -> Result<Box<dyn Solver>> {
    let text: String = spec.take("predictor", "euler-maruyama".to_string())?;
    if Spec::parse("solver", &text)?.name == "pc" {
        return Err(spec.error("the predictor of pc cannot be pc"));
    }
    let mut predictor = super::build(&text, env)?;
    spec.retake("predictor", predictor.spec.clone());
    let none = spec.take_choice("corrector", "langevin", &["langevin", "none"])? == "none";
    let mut corrector = Corrector::parse(spec)?;
    if none {
        corrector.n = 0;
    }
    let stochastic = predictor.solver.noise().is_some();
    Ok(Box::new(Pc {
        predictor: predictor.solver,
        stochastic,
        corrector,
        noise: Brownian::boxed(env.noise_seed),
        sources: vec![],
    }))
}

pub const ENTRY: Entry = Entry {
    name: "pc",
    summary: "predictor-corrector: any predictor with n Langevin corrector steps per level",
    build,
    variants: &[
        ("predictor=ddim,step=sde", "logsnr"),
        ("predictor=euler-maruyama,step=sde", "logsnr"),
        ("predictor=ddpm,step=sigma,snr=0.05", "logsnr"),
    ],
};

impl Pc {
    fn parts(&self) -> usize {
        self.corrector.n + usize::from(self.stochastic)
    }
}

impl Solver for Pc {
    fn order(&self) -> usize {
        1
    }
    fn nfe_per_step(&self) -> usize {
        self.predictor.nfe_per_step() + self.corrector.n
    }
    fn nfe(&self, grid: &Grid, schedule: &dyn Schedule) -> Option<usize> {
        Some(self.predictor.nfe(grid, schedule)? + self.corrector.n * grid.steps())
    }
    fn noise(&mut self) -> Option<&mut Box<dyn Noise>> {
        Some(&mut self.noise)
    }
    fn noise_slots(&self, steps: usize) -> usize {
        steps * self.parts()
    }
    fn plan(&mut self, grid: &Grid, schedule: &dyn Schedule) -> Result<Vec<f64>> {
        let times = self.predictor.plan(grid, schedule)?;
        if times != grid.times {
            return Err(Error::Domain(
                "pc needs a predictor that steps on the grid (not method=singlestep or an adaptive solver)".into(),
            ));
        }
        if self.noise.is_probe()
            && self.corrector.rule == super::langevin::Rule::Snr
            && self.corrector.n > 0
        {
            return Err(Error::Domain(
                "pc: step=snr depends on the batch, so its exact law cannot be probed; use step=sigma or step=sde".into(),
            ));
        }
        let (parts, first) = (self.parts(), usize::from(self.stochastic));
        if let Some(noise) = self.predictor.noise() {
            *noise = self.noise.split(parts, 0);
        }
        self.sources = (first..parts).map(|j| self.noise.split(parts, j)).collect();
        Ok(times)
    }
    fn step(&mut self, model: &Model, times: &[f64], i: usize, x: &mut Array2<f64>) -> Result<()> {
        if self.corrector.n > 0 && model.level(times[i]).sigma > 0.0 {
            self.corrector
                .correct(model, times, i, x, &mut self.sources)?;
        }
        self.predictor.step(model, times, i, x)
    }
}
