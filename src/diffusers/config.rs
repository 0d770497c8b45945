//! A diffusers `scheduler_config.json`, read and checked: the class, every option the class takes
//! with its value (the file's, or diffusers' default), and the keys the class does not take
//! (diffusers ignores those, and so does pfode; `sample --explain` lists them).
//!
//! Every option a class takes is either implemented, or an error naming it; a value diffusers
//! itself rejects is an error too. Nothing falls back silently to a default. Defaults and names
//! are those of diffusers 0.42.1 (`inspect.signature` of each class, recorded in the fixtures and
//! checked by `tests/diffusers.rs`).

use crate::error::{Error, Result};
use crate::prediction::Prediction;
use crate::schedule::{Betas, DiscreteOptions, Interp, ZeroSnr};
use serde_json::{Map, Value};

/// The scheduler classes pfode replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ddim,
    Ddpm,
    DpmMultistep,
    DpmSinglestep,
    Deis,
    UniPc,
    Heun,
    Euler,
    EulerAncestral,
    Lms,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Ddim,
        Class::Ddpm,
        Class::DpmMultistep,
        Class::DpmSinglestep,
        Class::Deis,
        Class::UniPc,
        Class::Heun,
        Class::Euler,
        Class::EulerAncestral,
        Class::Lms,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Ddim => "DDIMScheduler",
            Class::Ddpm => "DDPMScheduler",
            Class::DpmMultistep => "DPMSolverMultistepScheduler",
            Class::DpmSinglestep => "DPMSolverSinglestepScheduler",
            Class::Deis => "DEISMultistepScheduler",
            Class::UniPc => "UniPCMultistepScheduler",
            Class::Heun => "HeunDiscreteScheduler",
            Class::Euler => "EulerDiscreteScheduler",
            Class::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Class::Lms => "LMSDiscreteScheduler",
        }
    }

    pub fn parse(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the sample lives in VE coordinates x/alpha (`scale_model_input` divides by
    /// sqrt(sigma^2 + 1), `init_noise_sigma` is sigma_max).
    pub fn ve(self) -> bool {
        matches!(
            self,
            Class::Heun | Class::Euler | Class::EulerAncestral | Class::Lms
        )
    }

    /// Every option of the class with diffusers' default, as JSON, in `__init__` order.
    pub fn options(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Class::Ddim => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("clip_sample", "true"),
                ("set_alpha_to_one", "true"),
                ("steps_offset", "0"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                ("clip_sample_range", "1.0"),
                THRESH[2],
                ("timestep_spacing", "\"leading\""),
                ("rescale_betas_zero_snr", "false"),
            ],
            Class::Ddpm => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("variance_type", "\"fixed_small\""),
                ("clip_sample", "true"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                ("clip_sample_range", "1.0"),
                THRESH[2],
                ("timestep_spacing", "\"leading\""),
                ("steps_offset", "0"),
                ("rescale_betas_zero_snr", "false"),
            ],
            Class::DpmMultistep => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("solver_order", "2"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                THRESH[2],
                ("algorithm_type", "\"dpmsolver++\""),
                ("solver_type", "\"midpoint\""),
                ("lower_order_final", "true"),
                ("euler_at_final", "false"),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                ("use_lu_lambdas", "false"),
                FLOW[0],
                FLOW[1],
                ("final_sigmas_type", "\"zero\""),
                ("lambda_min_clipped", "-Infinity"),
                ("variance_type", "null"),
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
                ("rescale_betas_zero_snr", "false"),
                FLOW[2],
                FLOW[3],
            ],
            Class::DpmSinglestep => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("solver_order", "2"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                THRESH[2],
                ("algorithm_type", "\"dpmsolver++\""),
                ("solver_type", "\"midpoint\""),
                ("lower_order_final", "false"),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                FLOW[0],
                FLOW[1],
                ("final_sigmas_type", "\"zero\""),
                ("lambda_min_clipped", "-Infinity"),
                ("variance_type", "null"),
                FLOW[2],
                FLOW[3],
            ],
            Class::Deis => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("solver_order", "2"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                THRESH[2],
                ("algorithm_type", "\"deis\""),
                ("solver_type", "\"logrho\""),
                ("lower_order_final", "true"),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                FLOW[0],
                FLOW[1],
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
                FLOW[2],
                FLOW[3],
            ],
            Class::UniPc => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("solver_order", "2"),
                ("prediction_type", "\"epsilon\""),
                THRESH[0],
                THRESH[1],
                THRESH[2],
                ("predict_x0", "true"),
                ("solver_type", "\"bh2\""),
                ("lower_order_final", "true"),
                ("disable_corrector", "[]"),
                ("solver_p", "null"),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                FLOW[0],
                FLOW[1],
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
                ("final_sigmas_type", "\"zero\""),
                ("rescale_betas_zero_snr", "false"),
                FLOW[2],
                FLOW[3],
                ("sigma_min", "null"),
                ("sigma_max", "null"),
                ("shift_terminal", "null"),
            ],
            Class::Heun => &[
                BETA[0],
                ("beta_start", "0.00085"),
                ("beta_end", "0.012"),
                BETA[3],
                BETA[4],
                ("prediction_type", "\"epsilon\""),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                ("clip_sample", "false"),
                ("clip_sample_range", "1.0"),
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
            ],
            Class::Euler => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("prediction_type", "\"epsilon\""),
                ("interpolation_type", "\"linear\""),
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                ("sigma_min", "null"),
                ("sigma_max", "null"),
                ("timestep_spacing", "\"linspace\""),
                ("timestep_type", "\"discrete\""),
                ("steps_offset", "0"),
                ("rescale_betas_zero_snr", "false"),
                ("final_sigmas_type", "\"zero\""),
            ],
            Class::EulerAncestral => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                ("prediction_type", "\"epsilon\""),
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
                ("rescale_betas_zero_snr", "false"),
            ],
            Class::Lms => &[
                BETA[0],
                BETA[1],
                BETA[2],
                BETA[3],
                BETA[4],
                SIGMAS[0],
                SIGMAS[1],
                SIGMAS[2],
                ("prediction_type", "\"epsilon\""),
                ("timestep_spacing", "\"linspace\""),
                ("steps_offset", "0"),
            ],
        }
    }
}

const BETA: [(&str, &str); 5] = [
    ("num_train_timesteps", "1000"),
    ("beta_start", "0.0001"),
    ("beta_end", "0.02"),
    ("beta_schedule", "\"linear\""),
    ("trained_betas", "null"),
];
const THRESH: [(&str, &str); 3] = [
    ("thresholding", "false"),
    ("dynamic_thresholding_ratio", "0.995"),
    ("sample_max_value", "1.0"),
];
const SIGMAS: [(&str, &str); 3] = [
    ("use_karras_sigmas", "false"),
    ("use_exponential_sigmas", "false"),
    ("use_beta_sigmas", "false"),
];
const FLOW: [(&str, &str); 4] = [
    ("use_flow_sigmas", "false"),
    ("flow_shift", "1.0"),
    ("use_dynamic_shifting", "false"),
    ("time_shift_type", "\"exponential\""),
];

/// How the inference timesteps are spaced over the training ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

/// The sigma sequence replacing the spaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sigmas {
    Spaced,
    Karras,
    Exponential,
    Beta,
    /// Lu et al.'s uniform log-SNR (`use_lu_lambdas`).
    Lu,
}

/// The DPM-Solver algorithm (`algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    DpmSolver,
    DpmSolverPp,
    SdeDpmSolver,
    SdeDpmSolverPp,
}

impl Algorithm {
    /// Data (x0) prediction.
    pub fn data(self) -> bool {
        matches!(self, Algorithm::DpmSolverPp | Algorithm::SdeDpmSolverPp)
    }
    pub fn sde(self) -> bool {
        matches!(self, Algorithm::SdeDpmSolver | Algorithm::SdeDpmSolverPp)
    }
}

/// DDPM's posterior variance (`variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variance {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

/// Imagen's dynamic thresholding of x0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub ratio: f64,
    pub max: f64,
}

/// A checked scheduler config.
#[derive(Debug, Clone)]
pub struct Config {
    pub class: Class,
    /// The file (or label) the config came from, for messages.
    pub source: String,
    /// Every option of the class with its value, in `__init__` order.
    pub options: Vec<(&'static str, Value)>,
    /// Keys of the file that the class does not take (ignored, as diffusers ignores them).
    pub ignored: Vec<String>,
    /// Changes diffusers makes to the given values at construction (`register_to_config`).
    pub remapped: Vec<String>,
    pub schedule: DiscreteOptions,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub steps_offset: i64,
    pub sigmas: Sigmas,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_zero: bool,
    pub lambda_min_clipped: f64,
    pub order: usize,
    pub algorithm: Algorithm,
    /// `solver_type="heun"` (DPM-Solver's Taylor form), else midpoint.
    pub taylor: bool,
    /// UniPC `solver_type="bh2"`, else bh1.
    pub bh2: bool,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub predict_x0: bool,
    pub disable_corrector: Vec<i64>,
    /// `clip_sample` with its range.
    pub clip: Option<f64>,
    pub threshold: Option<Threshold>,
    pub set_alpha_to_one: bool,
    pub variance: Variance,
    /// Euler's `interpolation_type="log_linear"`.
    pub log_linear: bool,
    /// Euler's `timestep_type="continuous"` with v prediction: timesteps 0.25 ln sigma.
    pub continuous: bool,
}

/// Python's `json.dumps` writes float('-inf') as the bare token `-Infinity` (diffusers saves
/// `lambda_min_clipped` so); it is read as null, which that option takes as -inf.
fn python_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string && rest.starts_with("-Infinity") {
            out.push_str("null");
            rest = &rest["-Infinity".len()..];
            continue;
        }
        match (in_string, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') | (false, _, '"') => in_string = !in_string,
            _ => escaped = false,
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Reads a config file; `class` overrides its `_class_name` (diffusers' `Class.from_config`).
pub fn read(path: &std::path::Path, class: Option<&str>) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Config::parse(&text, &path.display().to_string(), class)
}

struct Reader<'a> {
    source: &'a str,
    class: Class,
    values: Map<String, Value>,
}

impl Reader<'_> {
    fn bad(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::invalid(self.source, Some(key.to_string()), reason)
    }
    fn value(&self, key: &str) -> &Value {
        &self.values[key]
    }
    fn bool(&self, key: &str) -> Result<bool> {
        self.value(key).as_bool().ok_or_else(|| {
            self.bad(
                key,
                format!("expected true or false, found {}", self.value(key)),
            )
        })
    }
    fn f64(&self, key: &str) -> Result<f64> {
        match self.value(key) {
            Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
            _ => None,
        }
        .ok_or_else(|| {
            self.bad(
                key,
                format!("expected a finite number, found {}", self.value(key)),
            )
        })
    }
    fn int(&self, key: &str) -> Result<i64> {
        self.value(key).as_i64().ok_or_else(|| {
            self.bad(
                key,
                format!("expected an integer, found {}", self.value(key)),
            )
        })
    }
    fn str(&self, key: &str) -> Result<&str> {
        self.value(key)
            .as_str()
            .ok_or_else(|| self.bad(key, format!("expected a string, found {}", self.value(key))))
    }
    /// A string option: one of `implemented`, or an error (naming `unimplemented` values diffusers
    /// knows as not implemented by pfode).
    fn choice<'c>(
        &self,
        key: &str,
        implemented: &[&'c str],
        unimplemented: &[&str],
    ) -> Result<&'c str> {
        let v = self.str(key)?;
        if let Some(c) = implemented.iter().find(|c| **c == v) {
            return Ok(c);
        }
        if unimplemented.contains(&v) {
            return Err(self.bad(
                key,
                format!(
                    "'{v}' is not implemented by pfode (implemented: {})",
                    implemented.join(", ")
                ),
            ));
        }
        let mut all: Vec<&str> = implemented.to_vec();
        all.extend(unimplemented);
        Err(self.bad(
            key,
            format!(
                "'{v}' is not a value {} accepts (valid: {})",
                self.class.name(),
                all.join(", ")
            ),
        ))
    }
    /// An option pfode implements only at `value` (diffusers' default).
    fn only(&self, key: &str, value: &Value, what: &str) -> Result<()> {
        if self.value(key) != value {
            return Err(self.bad(
                key,
                format!("{} is not implemented by pfode ({what})", self.value(key)),
            ));
        }
        Ok(())
    }
    fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

impl Config {
    /// Parses the text of a config; `source` names it in errors; `class` overrides `_class_name`.
    pub fn parse(text: &str, source: &str, class: Option<&str>) -> Result<Config> {
        let root: Value = serde_json::from_str(&python_json(text))
            .map_err(|e| Error::invalid(source, None, format!("not valid JSON: {e}")))?;
        let Value::Object(file) = root else {
            return Err(Error::invalid(source, None, "expected a JSON object"));
        };
        let name = match class {
            Some(c) => c.to_string(),
            None => match file.get("_class_name") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => {
                    return Err(Error::invalid(
                        source,
                        Some("_class_name".into()),
                        format!("expected a string, found {v}"),
                    ))
                }
                None => {
                    return Err(Error::invalid(
                        source,
                        Some("_class_name".into()),
                        "missing (or give the class with --scheduler-class)",
                    ))
                }
            },
        };
        let class = Class::parse(&name).ok_or_else(|| {
            let names: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
            Error::invalid(
                source,
                Some("_class_name".into()),
                format!(
                    "scheduler class '{name}' is not replayed by pfode (replayed: {}; --scheduler-class loads the file into one of them, as diffusers' from_config)",
                    names.join(", ")
                ),
            )
        })?;
        let table = class.options();
        let mut values = Map::new();
        for (k, default) in table {
            let v = match file.get(*k) {
                Some(v) => v.clone(),
                None => serde_json::from_str(&python_json(default)).unwrap_or(Value::Null),
            };
            values.insert(k.to_string(), v);
        }
        // Every class with Karras, exponential or beta sigmas reads `config.sigma_min` and
        // `config.sigma_max` through hasattr, so a file's keys count even where `__init__` does
        // not take them.
        let hidden = |k: &str| {
            matches!(k, "sigma_min" | "sigma_max")
                && !matches!(class, Class::Ddim | Class::Ddpm | Class::EulerAncestral)
        };
        let ignored: Vec<String> = file
            .keys()
            .filter(|k| !k.starts_with('_') && !table.iter().any(|(t, _)| t == k) && !hidden(k))
            .cloned()
            .collect();
        let r = Reader {
            source,
            class,
            values,
        };
        let mut remapped: Vec<String> = file
            .keys()
            .filter(|k| hidden(k) && !table.iter().any(|(t, _)| t == k))
            .map(|k| format!("{k} is read from the file although {} does not take it (diffusers reads config.{k} through hasattr)", class.name()))
            .collect();
        let schedule = betas(&r, class)?;
        let prediction = match r.choice(
            "prediction_type",
            &["epsilon", "sample", "v_prediction", "original_sample"],
            &["flow_prediction"],
        )? {
            "epsilon" => Prediction::Eps,
            "v_prediction" => Prediction::V,
            "original_sample" if class != Class::Euler => {
                return Err(r.bad(
                    "prediction_type",
                    format!("'original_sample' is accepted only by EulerDiscreteScheduler, not {}", class.name()),
                ))
            }
            _ if class == Class::EulerAncestral => {
                return Err(r.bad(
                    "prediction_type",
                    "'sample' is not implemented by EulerAncestralDiscreteScheduler (diffusers raises NotImplementedError)",
                ))
            }
            _ => Prediction::X0,
        };
        let spacing = if r.has("timestep_spacing") {
            match r.choice(
                "timestep_spacing",
                &["linspace", "leading", "trailing"],
                &[],
            )? {
                "leading" => Spacing::Leading,
                "trailing" => Spacing::Trailing,
                _ => Spacing::Linspace,
            }
        } else {
            Spacing::Linspace
        };
        let steps_offset = if r.has("steps_offset") {
            r.int("steps_offset")?
        } else {
            0
        };
        let flag = |k: &str| -> Result<bool> {
            if r.has(k) {
                r.bool(k)
            } else {
                Ok(false)
            }
        };
        let picked: Vec<(&str, Sigmas)> = [
            ("use_karras_sigmas", Sigmas::Karras),
            ("use_lu_lambdas", Sigmas::Lu),
            ("use_exponential_sigmas", Sigmas::Exponential),
            ("use_beta_sigmas", Sigmas::Beta),
        ]
        .into_iter()
        .filter_map(|(k, s)| flag(k).map(|on| on.then_some((k, s))).transpose())
        .collect::<Result<_>>()?;
        let exclusive: Vec<&str> = picked
            .iter()
            .map(|p| p.0)
            .filter(|k| *k != "use_lu_lambdas")
            .collect();
        if exclusive.len() > 1 {
            return Err(r.bad(
                exclusive[1],
                "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be true",
            ));
        }
        // DPMSolverMultistep tests Karras, then Lu's lambdas, then the others.
        let sigmas = picked.first().map(|p| p.1).unwrap_or(Sigmas::Spaced);
        for (key, what) in [
            ("use_flow_sigmas", "flow-matching sigmas"),
            ("use_dynamic_shifting", "resolution-dependent shifting"),
        ] {
            if r.has(key) {
                r.only(key, &Value::Bool(false), what)?;
            }
        }
        if r.has("solver_p") {
            r.only("solver_p", &Value::Null, "a separate predictor scheduler")?;
        }
        if r.has("shift_terminal") && r.value("shift_terminal") != &Value::Null {
            return Err(r.bad(
                "shift_terminal",
                "diffusers accepts it only with use_flow_sigmas=true",
            ));
        }
        if r.has("variance_type") && class != Class::Ddpm {
            r.only(
                "variance_type",
                &Value::Null,
                "learned variances need a model with 2d outputs",
            )?;
        }
        let mut sigma_range = [None, None];
        for (slot, k) in sigma_range.iter_mut().zip(["sigma_min", "sigma_max"]) {
            let v = match (r.has(k), file.get(k)) {
                (true, _) => r.value(k),
                (false, Some(v))
                    if !matches!(class, Class::Ddim | Class::Ddpm | Class::EulerAncestral) =>
                {
                    v
                }
                _ => continue,
            };
            *slot = match v {
                Value::Null => None,
                Value::Number(n) if n.as_f64().is_some_and(|v| v.is_finite() && v > 0.0) => {
                    n.as_f64()
                }
                _ => return Err(r.bad(k, format!("expected null or a positive number, found {v}"))),
            };
        }
        let [sigma_min, sigma_max] = sigma_range;
        let final_zero = if r.has("final_sigmas_type") {
            r.choice("final_sigmas_type", &["zero", "sigma_min"], &[])? == "zero"
        } else {
            false
        };
        let lambda_min_clipped = if r.has("lambda_min_clipped") {
            match r.value("lambda_min_clipped") {
                Value::Null => f64::NEG_INFINITY,
                _ => r.f64("lambda_min_clipped")?,
            }
        } else {
            f64::NEG_INFINITY
        };
        let order = if r.has("solver_order") {
            let k = r.int("solver_order")?;
            if !(1..=3).contains(&k) {
                return Err(r.bad("solver_order", format!("{k} is not in 1..=3")));
            }
            k as usize
        } else {
            1
        };
        let mut algorithm = Algorithm::DpmSolverPp;
        if matches!(class, Class::DpmMultistep | Class::DpmSinglestep) {
            let given = r.str("algorithm_type")?;
            let valid: &[&str] = if class == Class::DpmMultistep {
                &[
                    "dpmsolver",
                    "dpmsolver++",
                    "sde-dpmsolver",
                    "sde-dpmsolver++",
                    "deis",
                ]
            } else {
                &["dpmsolver", "dpmsolver++", "sde-dpmsolver++", "deis"]
            };
            algorithm = match r.choice("algorithm_type", valid, &[])? {
                "dpmsolver" => Algorithm::DpmSolver,
                "sde-dpmsolver" => Algorithm::SdeDpmSolver,
                "sde-dpmsolver++" => Algorithm::SdeDpmSolverPp,
                _ => Algorithm::DpmSolverPp,
            };
            if given == "deis" {
                remapped.push("algorithm_type 'deis' -> 'dpmsolver++'".into());
            }
            if !["dpmsolver++", "sde-dpmsolver++"].contains(&given) && final_zero {
                return Err(r.bad(
                    "final_sigmas_type",
                    format!("'zero' is not supported for algorithm_type '{given}' (diffusers raises ValueError; use 'sigma_min')"),
                ));
            }
            if algorithm == Algorithm::SdeDpmSolver && order == 3 {
                return Err(r.bad(
                    "solver_order",
                    "3 with algorithm_type 'sde-dpmsolver': diffusers 0.42.1 has no third-order update for it (UnboundLocalError at the third step)",
                ));
            }
        }
        if class == Class::Deis {
            let given = r.choice("algorithm_type", &["deis", "dpmsolver", "dpmsolver++"], &[])?;
            if given != "deis" {
                remapped.push(format!("algorithm_type '{given}' -> 'deis'"));
            }
        }
        let mut taylor = false;
        let mut bh2 = true;
        if r.has("solver_type") {
            let given = r.str("solver_type")?;
            let (kind, native): (&str, &[&str]) = match class {
                Class::UniPc => ("bh2", &["bh1", "bh2"]),
                Class::Deis => ("logrho", &["logrho"]),
                _ => ("midpoint", &["midpoint", "heun"]),
            };
            let all = ["midpoint", "heun", "logrho", "bh1", "bh2"];
            if !all.contains(&given) {
                return Err(r.bad(
                    "solver_type",
                    format!(
                        "'{given}' is not a value {} accepts (valid: {})",
                        class.name(),
                        all.join(", ")
                    ),
                ));
            }
            let used = if native.contains(&given) { given } else { kind };
            if used != given {
                remapped.push(format!("solver_type '{given}' -> '{used}'"));
            }
            taylor = used == "heun";
            bh2 = used == "bh2";
        }
        let lower_order_final = flag("lower_order_final")?;
        let euler_at_final = flag("euler_at_final")?;
        let predict_x0 = if r.has("predict_x0") {
            r.bool("predict_x0")?
        } else {
            true
        };
        let disable_corrector = if r.has("disable_corrector") {
            let v = r.value("disable_corrector");
            v.as_array()
                .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<i64>>>())
                .ok_or_else(|| {
                    r.bad(
                        "disable_corrector",
                        format!("expected a list of step indices, found {v}"),
                    )
                })?
        } else {
            Vec::new()
        };
        let clip = if r.has("clip_sample") && r.bool("clip_sample")? {
            let range = r.f64("clip_sample_range")?;
            if range <= 0.0 {
                return Err(r.bad("clip_sample_range", "must be positive"));
            }
            Some(range)
        } else {
            None
        };
        let threshold = if r.has("thresholding") && r.bool("thresholding")? {
            let ratio = r.f64("dynamic_thresholding_ratio")?;
            let max = r.f64("sample_max_value")?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(r.bad(
                    "dynamic_thresholding_ratio",
                    format!("{ratio} is not in [0, 1]"),
                ));
            }
            Some(Threshold { ratio, max })
        } else {
            None
        };
        let set_alpha_to_one = if r.has("set_alpha_to_one") {
            r.bool("set_alpha_to_one")?
        } else {
            true
        };
        let variance = if class == Class::Ddpm {
            match r.choice(
                "variance_type",
                &["fixed_small", "fixed_small_log", "fixed_large"],
                &["fixed_large_log", "learned", "learned_range"],
            )? {
                "fixed_small_log" => Variance::FixedSmallLog,
                "fixed_large" => Variance::FixedLarge,
                _ => Variance::FixedSmall,
            }
        } else {
            Variance::FixedSmall
        };
        let log_linear = r.has("interpolation_type")
            && r.choice("interpolation_type", &["linear", "log_linear"], &[])? == "log_linear";
        let continuous = r.has("timestep_type")
            && r.choice("timestep_type", &["discrete", "continuous"], &[])? == "continuous"
            && prediction == Prediction::V;
        let options = table
            .iter()
            .map(|(k, _)| (*k, r.values[*k].clone()))
            .collect();
        Ok(Config {
            class,
            source: source.to_string(),
            options,
            ignored,
            remapped,
            schedule,
            prediction,
            spacing,
            steps_offset,
            sigmas,
            sigma_min,
            sigma_max,
            final_zero,
            lambda_min_clipped,
            order,
            algorithm,
            taylor,
            bh2,
            lower_order_final,
            euler_at_final,
            predict_x0,
            disable_corrector,
            clip,
            threshold,
            set_alpha_to_one,
            variance,
            log_linear,
            continuous,
        })
    }

    /// The value of option `key` as the class sees it.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.options.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The training schedule of the config: betas, their zero-SNR rescaling, and the diffusers
/// interpolation (ln sigma linear between timesteps, a knot at sigma = 0).
fn betas(r: &Reader, class: Class) -> Result<DiscreteOptions> {
    let n = r.int("num_train_timesteps")?;
    if !(2..=crate::limits::MAX_STEPS as i64).contains(&n) {
        return Err(r.bad(
            "num_train_timesteps",
            format!("{n} is not in 2..={}", crate::limits::MAX_STEPS),
        ));
    }
    let n = n as usize;
    let zero_snr = if r.has("rescale_betas_zero_snr") && r.bool("rescale_betas_zero_snr")? {
        match class {
            Class::Ddim | Class::Ddpm => ZeroSnr::Exact,
            _ => ZeroSnr::Clamped,
        }
    } else {
        ZeroSnr::Off
    };
    let mut options = match r.value("trained_betas") {
        Value::Null => {
            let unimplemented: &[&str] = match class {
                Class::Ddpm => &["sigmoid", "laplace"],
                Class::Heun => &["exp"],
                _ => &[],
            };
            let kind = match r.choice(
                "beta_schedule",
                &["linear", "scaled_linear", "squaredcos_cap_v2"],
                unimplemented,
            )? {
                "linear" => Betas::Linear,
                "scaled_linear" => Betas::ScaledLinear,
                _ => Betas::SquaredCos,
            };
            let (start, end) = (r.f64("beta_start")?, r.f64("beta_end")?);
            if kind != Betas::SquaredCos && !(start > 0.0 && end > start && end < 1.0) {
                return Err(r.bad(
                    "beta_end",
                    format!("need 0 < beta_start < beta_end < 1, found {start} and {end}"),
                ));
            }
            DiscreteOptions::official(kind, start, end, n)
        }
        Value::Array(list) => {
            let betas: Option<Vec<f64>> = list.iter().map(|v| v.as_f64()).collect();
            let betas =
                betas.ok_or_else(|| r.bad("trained_betas", "expected a list of numbers"))?;
            if let Some((i, b)) = betas
                .iter()
                .enumerate()
                .find(|(_, b)| !(**b > 0.0 && **b < 1.0))
            {
                return Err(r.bad("trained_betas", format!("beta {i} = {b} is not in (0, 1)")));
            }
            if betas.len() != n {
                return Err(r.bad(
                    "trained_betas",
                    format!("{} betas for num_train_timesteps = {n}", betas.len()),
                ));
            }
            DiscreteOptions::trained(betas)
        }
        v => {
            return Err(r.bad(
                "trained_betas",
                format!("expected null or a list, found {v}"),
            ))
        }
    };
    options.interp = Interp::LogSigma;
    options.clip = false;
    options.zero = true;
    options.zero_snr = zero_snr;
    Ok(options)
}
