//! What a replayed config is in pfode's terms (`sample --scheduler-config F --explain`): the
//! equivalent pfode schedule, grid and solver when one exists (`tests/diffusers.rs` runs each one
//! against the replay), the calls whose model level is not the scheduler's own, and how the class
//! differs from the official implementation of its method.

use super::config::{Class, Sigmas, Spacing, Variance};
use super::Scheduler;

/// A pfode run that computes what the replay computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Equivalent {
    pub schedule: String,
    pub grid: String,
    pub solver: String,
    /// pfode starts from the latents times this (`init_noise_sigma` in pfode's coordinates).
    pub init_scale: f64,
    /// The replay's sample is pfode's times this (1/alpha at the end for a VE sample that ends
    /// above sigma = 0).
    pub output_scale: f64,
    /// A qualification of the equivalence, if any.
    pub note: Option<String>,
}

/// The explanation of one config at one number of steps.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub equivalent: Option<Equivalent>,
    /// Why there is no exact equivalent.
    pub blockers: Vec<String>,
    /// The closest pfode run when there is none.
    pub closest: Option<String>,
    /// Model calls at a level other than the scheduler's own (count, largest relative
    /// difference in sigma/alpha, the first one).
    pub level_mismatch: Option<(usize, f64, String)>,
    /// How the class differs from the official implementation of its method.
    pub differences: Vec<String>,
}

fn join(v: &[f64]) -> String {
    v.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Scheduler {
    /// The explanation of this config at its number of steps.
    pub fn explain(&self) -> Explanation {
        let c = &self.config;
        let plan = &self.plan;
        let n = self.nfe();
        let mut blockers = Vec::new();
        let mut differences = Vec::new();
        // Levels: the model's at each call against the scheduler's sigma of that step.
        let mut count = 0;
        let (mut worst, mut first) = (0.0f64, String::new());
        for (i, &tau) in plan.timesteps.iter().enumerate() {
            let level = self.call_level(tau);
            let rho = level.sigma / level.alpha;
            let own = plan.sigmas[i];
            let rel = ((rho - own) / own).abs();
            if rel > 1e-12 {
                if count == 0 {
                    first = format!(
                        "call {i} at timestep {tau}: the model sees sigma/alpha = {rho:.6}, the step uses {own:.6}"
                    );
                }
                count += 1;
                worst = worst.max(rel);
            }
        }
        let level_mismatch = (count > 0).then_some((count, worst, first));
        if level_mismatch.is_some() {
            blockers.push("the model is called at levels other than the scheduler's own".into());
        }
        let (ts, ss) = (&plan.timesteps, &plan.sigmas);
        if matches!(c.class, Class::Ddim) {
            if let Some(i) = (0..n - 1).find(|&i| plan.prev[i] != ts[i + 1]) {
                blockers.push(format!(
                    "DDIM's step {i} lands on timestep {} (t - {}/{n}) but the next call is at {}",
                    plan.prev[i],
                    self.alphas_cumprod.len(),
                    ts[i + 1]
                ));
            }
        }
        if ss.windows(2).any(|w| w[1] >= w[0]) && c.class != Class::Heun {
            blockers.push(format!(
                "the sigmas do not decrease strictly (the last step goes from {} to {}: an evaluation without effect)",
                ss[ss.len() - 2],
                ss[ss.len() - 1]
            ));
        }
        if self.alphas_cumprod.windows(2).any(|w| w[1] >= w[0]) {
            blockers.push("alphas_cumprod is not monotone (the zero-SNR clamp to 2^-24 exceeds the value before it)".into());
        }
        if c.clip.is_some() || c.threshold.is_some() {
            blockers.push("x0 is clipped or thresholded; no pfode solver does that".into());
        }
        if let crate::schedule::Betas::Trained(_) = c.schedule.betas {
            blockers
                .push("trained_betas have no pfode schedule spec (the library takes them)".into());
        }
        let lof = c.lower_order_final;
        let mut closest = None;
        let mut note = None;
        let solver = match c.class {
            Class::Ddim if self.eta > 0.0 => Some(format!("ddim:eta={}", self.eta)),
            Class::Ddim | Class::Euler => Some("ddim".to_string()),
            Class::Ddpm => match c.variance {
                Variance::FixedLarge => {
                    blockers.push("variance_type=\"fixed_large\" (beta_t) is not pfode's ddpm (posterior variance)".into());
                    None
                }
                _ => {
                    if ts[n - 1] > 0.0 {
                        note = Some("up to diffusers' floor of 1e-20 on the last step's variance (a 1e-10 normal)".into());
                    }
                    Some("ddpm".into())
                }
            },
            Class::DpmMultistep => {
                let ty = if c.taylor { "taylor" } else { "dpmsolver" };
                if c.algorithm.sde() && !c.algorithm.data() {
                    blockers.push("sde-dpmsolver (noise prediction) has no pfode solver".into());
                    None
                } else if c.algorithm.sde() && (c.order == 3 || c.euler_at_final) {
                    blockers.push("third-order sde-dpmsolver++ (diffusers' coefficient) or euler_at_final with the SDE has no pfode solver".into());
                    None
                } else if c.algorithm.sde() {
                    let ty = if c.taylor { "heun" } else { "midpoint" };
                    Some(format!("sde-dpm-solver++:order={},type={ty},lower_order_final={lof},lower_order_final_below=15", c.order))
                } else {
                    let name = if c.algorithm.data() {
                        "dpm-solver++"
                    } else {
                        "dpm-solver"
                    };
                    let euler = if c.euler_at_final {
                        ",euler_at_final=true"
                    } else {
                        ""
                    };
                    Some(format!("{name}:order={},type={ty},lower_order_final={lof},lower_order_final_below=15{euler}", c.order))
                }
            }
            Class::DpmSinglestep => {
                blockers.push("its inner points are the grid's timesteps; pfode's singlestep places them uniformly in lambda (the official code's logSNR rule)".into());
                let name = if c.algorithm.data() {
                    "dpm-solver++"
                } else {
                    "dpm-solver"
                };
                closest = Some(format!(
                    "--grid logsnr:steps={n} --solver {name}:order={},method=singlestep,type={}",
                    c.order,
                    if c.taylor { "taylor" } else { "dpmsolver" }
                ));
                None
            }
            Class::Deis => Some(format!(
                "deis:variant=logrho,order={},lower_order_final={lof},lower_order_final_below=15",
                c.order
            )),
            Class::UniPc => {
                if !c.disable_corrector.is_empty() {
                    blockers.push(format!(
                        "disable_corrector = {:?} has no pfode option",
                        c.disable_corrector
                    ));
                }
                if c.final_zero && !(c.bh2 && c.predict_x0 && lof) {
                    blockers.push("the predictor to sigma = 0 is NaN in diffusers (bh1, noise prediction, or order > 1 there)".into());
                }
                Some(format!(
                    "unipc:order={},variant={},prediction={},lower_order_final={lof}",
                    c.order,
                    if c.bh2 { "bh2" } else { "bh1" },
                    if c.predict_x0 { "data" } else { "noise" }
                ))
            }
            Class::EulerAncestral => Some("euler-ancestral".into()),
            Class::Heun => Some("heun".into()),
            Class::Lms => Some("lms:order=4".into()),
        };
        let equivalent = match (solver, blockers.is_empty()) {
            (Some(solver), true) => Some(self.equivalent(solver, note)),
            _ => None,
        };
        self.differences(&mut differences);
        Explanation {
            equivalent,
            blockers,
            closest,
            level_mismatch,
            differences,
        }
    }

    fn equivalent(&self, solver: String, note: Option<String>) -> Equivalent {
        let plan = &self.plan;
        let c = &self.config;
        if c.class == Class::Heun {
            // Heun in x/alpha and sigma/alpha: pfode's heun on the edm schedule.
            let sigmas: Vec<f64> = plan
                .sigmas
                .iter()
                .enumerate()
                .filter(|(i, _)| *i == 0 || i % 2 == 1)
                .map(|(_, &s)| s)
                .collect();
            return Equivalent {
                schedule: "edm".into(),
                grid: format!("times:{}", join(&sigmas)),
                solver,
                init_scale: plan.init_noise_sigma,
                output_scale: 1.0,
                note: Some("on the edm schedule (x/alpha, sigma/alpha), for an oracle of the noise level only, as the exact mixtures".into()),
            };
        }
        let alpha = |s: f64| 1.0 / (s * s + 1.0).sqrt();
        let (first, last) = (plan.sigmas[0], plan.sigmas[plan.sigmas.len() - 1]);
        let (init_scale, output_scale) = match c.class.ve() {
            true => (plan.init_noise_sigma * alpha(first), 1.0 / alpha(last)),
            false => (plan.init_noise_sigma, 1.0),
        };
        Equivalent {
            schedule: self.schedule().spec(),
            grid: format!("times:{}", join(&self.times())),
            solver,
            init_scale,
            output_scale,
            note,
        }
    }

    fn differences(&self, out: &mut Vec<String>) {
        let c = &self.config;
        let plan = &self.plan;
        let n = self.nfe();
        let n_train = self.alphas_cumprod.len();
        let sigma_min = ((1.0 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]).sqrt();
        let official = match c.class {
            Class::DpmMultistep | Class::DpmSinglestep => "the official DPM-Solver code",
            Class::UniPc => "the official UniPC code",
            Class::Deis => "the DEIS paper's tAB (pfode's deis default)",
            Class::Ddim => "DDIM (Song et al.)",
            Class::Ddpm => "DDPM (Ho et al.)",
            _ => "k-diffusion",
        };
        out.push(format!("(compared with {official})"));
        let spacing = match c.spacing {
            Spacing::Linspace => "linspace",
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
        };
        if plan.timesteps[0] < (n_train - 1) as f64 {
            out.push(format!(
                "the first call is at timestep {} (spacing '{spacing}', steps_offset {}), not {}: sampling starts at sigma/alpha = {:.4}, below the schedule's {:.4}",
                plan.timesteps[0],
                c.steps_offset,
                n_train - 1,
                plan.sigmas[0],
                ((1.0 - self.alphas_cumprod[n_train - 1]) / self.alphas_cumprod[n_train - 1]).sqrt()
            ));
        }
        if matches!(c.class, Class::DpmMultistep | Class::Deis) && c.lower_order_final {
            out.push(format!(
                "lower_order_final lowers the order of the last steps below 15 steps (the official code: below 10){}",
                if (10..15).contains(&n) { " - it applies to this run" } else { "" }
            ));
        }
        if matches!(
            c.class,
            Class::DpmMultistep | Class::DpmSinglestep | Class::UniPc
        ) {
            out.push(format!(
                "timesteps are integers spaced by '{spacing}' (the official code walks continuous times, time_uniform, logSNR or time_quadratic, from t = 1 to 1/N)"
            ));
            if c.final_zero {
                out.push(format!(
                    "final_sigmas_type=\"zero\": the last step is a first-order step to sigma = 0 (the official code stops at t = 1/N, sigma/alpha = {sigma_min:.4})"
                ));
            }
        }
        if c.euler_at_final {
            out.push("euler_at_final: the last step is first order at any number of steps".into());
        }
        if c.sigmas != Sigmas::Spaced {
            let rounded = matches!(
                c.class,
                Class::DpmMultistep | Class::DpmSinglestep | Class::Deis | Class::UniPc
            );
            out.push(format!(
                "{:?} sigmas on the discrete schedule: {}",
                c.sigmas,
                if rounded {
                    "the model is called at the timestep of each sigma rounded or truncated to an integer, not at the sigma itself"
                } else {
                    "the model is called at the fractional timestep of each sigma (ln sigma interpolated)"
                }
            ));
        }
        if c.lambda_min_clipped > f64::NEG_INFINITY {
            out.push(format!(
                "lambda_min_clipped = {}: timesteps with a smaller log-SNR are dropped",
                c.lambda_min_clipped
            ));
        }
        if c.class == Class::DpmMultistep && c.algorithm.sde() && c.order == 3 {
            out.push("third-order sde-dpmsolver++ gives its second difference the coefficient alpha_t (-phi_2(-2h) - 1/2); the Taylor form (k-diffusion's dpmpp_3m_sde) has alpha_t (1/2 - phi_2(-2h))".into());
        }
        if c.class == Class::DpmSinglestep {
            out.push("the singlestep orders cycle 1, 2, 3 over the grid, whose points are the inner stages; the official DPM-Solver-fast places inner points by its skip type".into());
            if c.order == 3 && !c.taylor {
                out.push("solver_type=\"midpoint\" computes the second stage of a third-order step by the midpoint rule; the official DPM-Solver-3 by the E_2 form".into());
            }
        }
        if c.class == Class::UniPc && c.bh2 {
            out.push(
                "solver_type=\"bh2\" (diffusers' default; the official UniPC defaults to bh1)"
                    .into(),
            );
        }
        if c.class == Class::Deis {
            out.push(
                "eps is extrapolated in ln(sigma/alpha) (diffusers' 'logrho'), not in t".into(),
            );
        }
        if c.class == Class::Ddim {
            let ratio = n_train / n;
            if !n_train.is_multiple_of(n) || c.spacing != Spacing::Leading {
                out.push(format!("each step lands on t - {ratio} (num_train_timesteps // n), whatever the next timestep"));
            }
            if !c.set_alpha_to_one {
                out.push(format!("set_alpha_to_one=false: the last step ends at alphas_cumprod[0] (sigma/alpha = {sigma_min:.4}), not at sigma = 0"));
            }
        }
        if let Some(r) = c.clip {
            out.push(format!("clip_sample clips x0 to [-{r}, {r}]"));
        }
        if c.threshold.is_some() {
            out.push("thresholding: Imagen's dynamic thresholding of x0".into());
        }
        if c.class == Class::Ddpm && c.variance == Variance::FixedLarge {
            out.push(
                "variance_type=\"fixed_large\": the step's variance is beta_t, not the posterior's"
                    .into(),
            );
        }
        if c.class.ve() {
            out.push(format!(
                "init_noise_sigma = {:.4} ({}): the latents are scaled to the sample x/alpha",
                plan.init_noise_sigma,
                match c.spacing {
                    Spacing::Leading => "sqrt(sigma_max^2 + 1), the std of x_T/alpha for a unit-normal x_T",
                    _ => "sigma_max, k-diffusion's choice; x_T/alpha of a unit-normal x_T has std sqrt(sigma_max^2 + 1)",
                }
            ));
            if c.class == Class::Euler && !c.final_zero {
                out.push(format!("final_sigmas_type=\"sigma_min\": the sample ends at sigma/alpha = {sigma_min:.4}, in x/alpha"));
            }
            let fractional = plan.timesteps.iter().any(|t| t.fract() != 0.0);
            if fractional && c.sigmas == Sigmas::Spaced && !c.log_linear && !c.continuous {
                out.push("fractional timesteps: the step's sigma is interpolated linearly in sigma (np.interp), while the timestep's noise level is log-linear (the inverse of _sigma_to_t)".into());
            }
            if c.log_linear {
                out.push("interpolation_type=\"log_linear\": n + 1 sigmas log-linear in sigma, the model still called at the linspace timesteps".into());
            }
        }
        out.push("diffusers computes betas, alphas_cumprod and sigmas in float32 (and casts the sample to float32 inside DPM-Solver's and Euler's step); pfode computes in float64".into());
    }
}

impl Explanation {
    /// The explanation as text, one item a line.
    pub fn text(&self, s: &Scheduler) -> String {
        let c = &s.config;
        let mut t = format!(
            "{} from {}, {} steps: {} model calls\n",
            c.class.name(),
            c.source,
            s.steps,
            s.nfe()
        );
        t += &format!("timesteps: {}\n", join(&s.plan.timesteps));
        t += &format!("sigmas (sigma/alpha): {}\n", join(&s.plan.sigmas));
        t += &format!("init_noise_sigma: {}\n", s.plan.init_noise_sigma);
        t += &format!("training schedule: --schedule {}\n", s.schedule().spec());
        match &self.equivalent {
            Some(e) => {
                t += "pfode equivalent (tests/diffusers.rs runs it against the replay):\n";
                t += &format!(
                    "  --schedule {}\n  --grid {}\n  --solver {}\n",
                    e.schedule, e.grid, e.solver
                );
                t += &format!("  --init: the latents times {}", e.init_scale);
                if e.output_scale != 1.0 {
                    t += &format!(
                        "; diffusers' sample is pfode's times {} (x/alpha)",
                        e.output_scale
                    );
                }
                t += "\n";
                if let Some(n) = &e.note {
                    t += &format!("  ({n})\n");
                }
            }
            None => {
                t += "no exact pfode equivalent:\n";
                for b in &self.blockers {
                    t += &format!("  - {b}\n");
                }
                if let Some(cl) = &self.closest {
                    t += &format!("  closest: {cl}\n");
                }
            }
        }
        match &self.level_mismatch {
            Some((k, w, first)) => {
                t += &format!(
                    "model levels: {k} of {} calls differ from the scheduler's own level (up to {w:.2e} relative); first: {first}\n",
                    s.nfe()
                )
            }
            None => t += "model levels: every call is at the scheduler's own level\n",
        }
        t += "differences from the official implementation:\n";
        for d in &self.differences {
            t += &format!("  - {d}\n");
        }
        t += "options:\n";
        for (k, v) in &c.options {
            match (*k, v) {
                ("lambda_min_clipped", serde_json::Value::Null) => {
                    t += "  lambda_min_clipped = -inf\n"
                }
                _ => t += &format!("  {k} = {v}\n"),
            }
        }
        if !c.ignored.is_empty() {
            t += &format!(
                "ignored (not options of {}; diffusers ignores them too): {}\n",
                c.class.name(),
                c.ignored.join(", ")
            );
        }
        for r in &c.remapped {
            t += &format!("changed by diffusers at construction: {r}\n");
        }
        t
    }
}
