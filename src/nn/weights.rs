//! The safetensors file of an [`Mlp`].
//!
//! Tensors (PyTorch `nn.Linear` layout, F32 or F64, little-endian; pfode writes F64):
//!
//! | name | shape |
//! |---|---|
//! | `layers.0.weight` | (width, dim + time_features) |
//! | `layers.{l}.weight`, l = 1..depth-1 | (width, width) |
//! | `layers.{depth}.weight` | (dim, width) |
//! | `layers.{l}.bias` | (fan_out of layer l) |
//!
//! so a PyTorch module holding `self.layers = nn.ModuleList([nn.Linear(...), ...])` saves with
//! `safetensors.torch.save_file(model.state_dict(), path, metadata)`. The metadata (string to
//! string, the header's `__metadata__`) must hold `dim`, `width`, `depth`, `time_input`
//! (`t` | `log-sigma`), `time_features`, `omega_max` and `prediction` (`eps` | `x0` | `v` |
//! `velocity` | `score`), and `times` = 2 for a two-time network (a flow map; absent means 1,
//! and `layers.0` then has dim + 2 time_features columns); `schedule` (the spec the network was trained under, checked on load),
//! `problem` and any other key are kept and passed back. A missing key or tensor, a shape that
//! disagrees with the metadata, an unknown dtype, an extra tensor, a non-finite value, or an
//! architecture over the [`crate::limits`] or larger than the file can hold is one error naming
//! the file and the field, found before the parameters are allocated.

use super::{Mlp, MlpConfig};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The keys that define the architecture.
pub const CONFIG_KEYS: [&str; 7] = [
    "dim",
    "width",
    "depth",
    "time_input",
    "time_features",
    "omega_max",
    "prediction",
];

/// A network and the metadata it was stored with.
pub struct Loaded {
    pub net: Mlp,
    /// Every metadata entry, the architecture keys included.
    pub metadata: BTreeMap<String, String>,
}

impl Loaded {
    /// The schedule spec the network was trained under, if recorded.
    pub fn schedule(&self) -> Option<&str> {
        self.metadata.get("schedule").map(String::as_str)
    }

    /// The problem (a built-in name or a mixture file) the network was trained on, if recorded.
    pub fn problem(&self) -> Option<&str> {
        self.metadata.get("problem").map(String::as_str)
    }
}

/// The architecture as metadata entries.
pub fn config_metadata(c: &MlpConfig) -> BTreeMap<String, String> {
    [
        ("dim", c.dim.to_string()),
        ("width", c.width.to_string()),
        ("depth", c.depth.to_string()),
        ("time_input", c.time_input.to_string()),
        ("time_features", c.time_features.to_string()),
        ("omega_max", format!("{:?}", c.omega_max)),
        ("prediction", c.prediction.to_string()),
    ]
    .into_iter()
    .chain((c.times != 1).then(|| ("times", c.times.to_string())))
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The safetensors bytes of `net` (F64) with the architecture and `extra` as metadata.
pub fn to_bytes(net: &Mlp, extra: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut metadata: HashMap<String, String> = extra.clone().into_iter().collect();
    metadata.extend(config_metadata(&net.config));
    metadata.insert("format".into(), "pfode-mlp".into());
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = (0..net.layers.len())
        .flat_map(|l| {
            let layer = net.layers[l];
            let w = &net.params[layer.w..layer.b];
            let b = &net.params[layer.b..layer.b + layer.fan_out];
            [
                (
                    format!("layers.{l}.weight"),
                    vec![layer.fan_out, layer.fan_in],
                    w,
                ),
                (format!("layers.{l}.bias"), vec![layer.fan_out], b),
            ]
        })
        .map(|(name, shape, v)| {
            (
                name,
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F64, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Domain(format!("safetensors: {e}")))?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Domain(format!("safetensors: {e}")))
}

/// Writes `net` atomically.
pub fn save(net: &Mlp, path: impl AsRef<Path>, extra: &BTreeMap<String, String>) -> Result<()> {
    crate::io::write_atomic(path, &to_bytes(net, extra)?)
}

/// Reads a network file.
pub fn load(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, &path.display().to_string())
}

/// Parses safetensors bytes; `source` names them in errors.
pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Loaded> {
    let invalid = |field: Option<String>, reason: String| Error::invalid(source, field, reason);
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(None, format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| invalid(None, format!("not a safetensors file: {e}")))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let field = |key: &str| format!("__metadata__.{key}");
    let get = |key: &str| {
        metadata.get(key).ok_or_else(|| {
            invalid(
                Some(field(key)),
                "missing (needed for the architecture)".into(),
            )
        })
    };
    let int = |key: &str| -> Result<usize> {
        get(key)?
            .parse()
            .map_err(|e| invalid(Some(field(key)), format!("not a non-negative integer: {e}")))
    };
    let config = MlpConfig {
        dim: int("dim")?,
        width: int("width")?,
        depth: int("depth")?,
        time_input: get("time_input")?
            .parse()
            .map_err(|e: Error| invalid(Some(field("time_input")), e.to_string()))?,
        time_features: int("time_features")?,
        omega_max: get("omega_max")?
            .parse()
            .map_err(|e| invalid(Some(field("omega_max")), format!("not a number: {e}")))?,
        prediction: get("prediction")?
            .parse()
            .map_err(|e: Error| invalid(Some(field("prediction")), e.to_string()))?,
        times: match metadata.get("times") {
            None => 1,
            Some(_) => int("times")?,
        },
    };
    config.validate(source)?;
    let n_params = config.n_params();
    if n_params.saturating_mul(4) > bytes.len() {
        return Err(invalid(
            None,
            format!(
                "the metadata describes {n_params} parameters, more than the file's {} bytes can hold",
                bytes.len()
            ),
        ));
    }
    if let Some(spec) = metadata.get("schedule") {
        crate::schedule::parse(spec)
            .map_err(|e| invalid(Some(field("schedule")), e.to_string()))?;
    }
    let mut net = Mlp::zeros(config)?;
    let mut expected = Vec::new();
    for l in 0..net.layers.len() {
        let layer = net.layers[l];
        for (name, shape, start) in [
            (
                format!("layers.{l}.weight"),
                vec![layer.fan_out, layer.fan_in],
                layer.w,
            ),
            (format!("layers.{l}.bias"), vec![layer.fan_out], layer.b),
        ] {
            let view = tensors.tensor(&name).map_err(|_| {
                invalid(
                    Some(name.clone()),
                    format!("missing tensor (expected shape {shape:?})"),
                )
            })?;
            if view.shape() != shape.as_slice() {
                return Err(invalid(
                    Some(name),
                    format!(
                        "shape {:?} does not match the metadata (expected {shape:?})",
                        view.shape()
                    ),
                ));
            }
            let values = decode(&view).map_err(|r| invalid(Some(name.clone()), r))?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(invalid(Some(name), format!("entry {i} is {}", values[i])));
            }
            net.params[start..start + values.len()].copy_from_slice(&values);
            expected.push(name);
        }
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !expected.iter().any(|e| e == n))
    {
        return Err(invalid(
            Some(extra.to_string()),
            format!(
                "unexpected tensor (a depth-{} network has layers.0 .. layers.{})",
                net.config.depth, net.config.depth
            ),
        ));
    }
    Ok(Loaded { net, metadata })
}

fn decode(view: &TensorView) -> std::result::Result<Vec<f64>, String> {
    let data = view.data();
    match view.dtype() {
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
            .collect()),
        other => Err(format!("dtype {other:?} is not supported (F32 or F64)")),
    }
}
