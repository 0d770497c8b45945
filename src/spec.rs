//! The `name[:key=value,...]` grammar shared by every command-line spec (schedules, grids,
//! solvers, guidance). Options are consumed by the code that builds the object; any option left
//! unconsumed is an error that lists the valid ones. A value that is itself a spec is written in
//! brackets, `pc:predictor=[ddim:eta=1],n=2`; commas inside brackets do not split options.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct Spec {
    what: &'static str,
    text: String,
    pub name: String,
    options: BTreeMap<String, String>,
    known: Vec<&'static str>,
    taken: Vec<(&'static str, String)>,
}

impl Spec {
    /// Parses `name` or `name:key=value,key=value`. `what` names the kind of spec in errors
    /// ("schedule", "grid", "solver").
    pub fn parse(what: &'static str, text: &str) -> Result<Self> {
        let err = |reason: String| Error::Spec {
            what,
            spec: text.to_string(),
            reason,
        };
        let (name, rest) = match text.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (text.trim(), None),
        };
        if name.is_empty() {
            return Err(err("empty name".into()));
        }
        let mut options = BTreeMap::new();
        if let Some(rest) = rest {
            for item in split_top(rest).map_err(err)? {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| err(format!("option '{item}' is not of the form key=value")))?;
                let (k, v) = (k.trim(), v.trim());
                let v = match v.strip_prefix('[') {
                    Some(inner) => inner.strip_suffix(']').ok_or_else(|| {
                        err(format!("option '{k}': '{v}' has an unclosed bracket"))
                    })?,
                    None => v,
                };
                if k.is_empty() || v.is_empty() {
                    return Err(err(format!("option '{item}' has an empty key or value")));
                }
                if options.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(err(format!("option '{k}' given twice")));
                }
            }
        }
        Ok(Spec {
            what,
            text: text.to_string(),
            name: name.to_string(),
            options,
            known: Vec::new(),
            taken: Vec::new(),
        })
    }

    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Spec {
            what: self.what,
            spec: self.text.clone(),
            reason: reason.into(),
        }
    }

    /// Takes option `key` parsed as `T`, or `default` when absent. The value is recorded for
    /// [`Spec::canonical`].
    pub fn take<T: FromStr + std::fmt::Display>(
        &mut self,
        key: &'static str,
        default: T,
    ) -> Result<T> {
        self.known.push(key);
        let value = match self.options.remove(key) {
            None => default,
            Some(v) => v.parse().map_err(|_| {
                self.error(format!(
                    "option '{key}': cannot parse '{v}' as {}",
                    std::any::type_name::<T>()
                ))
            })?,
        };
        self.taken.push((key, value.to_string()));
        Ok(value)
    }

    /// Takes option `key` parsed as `T` if it is given (recorded for [`Spec::canonical`] only
    /// then).
    pub fn take_optional<T: FromStr + std::fmt::Display>(
        &mut self,
        key: &'static str,
    ) -> Result<Option<T>> {
        self.known.push(key);
        let Some(v) = self.options.remove(key) else {
            return Ok(None);
        };
        let value: T = v.parse().map_err(|_| {
            self.error(format!(
                "option '{key}': cannot parse '{v}' as {}",
                std::any::type_name::<T>()
            ))
        })?;
        self.taken.push((key, value.to_string()));
        Ok(Some(value))
    }

    /// Takes option `key`, which must be one of `choices`.
    pub fn take_choice(
        &mut self,
        key: &'static str,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str> {
        let v: String = self.take(key, default.to_string())?;
        choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
            self.error(format!(
                "option '{key}': '{v}' is not one of {}",
                choices.join(", ")
            ))
        })
    }

    /// Takes an integer option that must lie in `lo..=hi`.
    pub fn take_range(
        &mut self,
        key: &'static str,
        default: usize,
        lo: usize,
        hi: usize,
    ) -> Result<usize> {
        let v: usize = self.take(key, default)?;
        if v < lo || v > hi {
            return Err(self.error(format!("option '{key}': {v} is not in {lo}..={hi}")));
        }
        Ok(v)
    }

    /// Replaces the recorded value of a taken option (a nested spec by its canonical form).
    pub fn retake(&mut self, key: &'static str, value: String) {
        if let Some(t) = self.taken.iter_mut().find(|(k, _)| *k == key) {
            t.1 = value;
        }
    }

    /// `name:key=value,...` with every option taken so far, defaults included, in the order taken.
    pub fn canonical(&self) -> String {
        if self.taken.is_empty() {
            return self.name.clone();
        }
        let opts: Vec<String> = self
            .taken
            .iter()
            .map(|(k, v)| match v.contains([',', ':', '=']) {
                true => format!("{k}=[{v}]"),
                false => format!("{k}={v}"),
            })
            .collect();
        format!("{}:{}", self.name, opts.join(","))
    }

    /// Every option taken so far with its value, defaults included.
    pub fn options(&self) -> &[(&'static str, String)] {
        &self.taken
    }

    /// Takes a finite floating-point option.
    pub fn take_f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        let v: f64 = self.take(key, default)?;
        if !v.is_finite() {
            return Err(self.error(format!("option '{key}': {v} is not finite")));
        }
        Ok(v)
    }

    /// Ends parsing: an option nobody took is an error naming the valid ones.
    pub fn finish(&self) -> Result<()> {
        if let Some(k) = self.options.keys().next() {
            let valid = if self.known.is_empty() {
                "none".to_string()
            } else {
                self.known.join(", ")
            };
            return Err(self.error(format!(
                "unknown option '{k}' for '{}' (valid: {valid})",
                self.name
            )));
        }
        Ok(())
    }
}

/// `rest` split at the commas outside brackets.
fn split_top(rest: &str) -> std::result::Result<Vec<&str>, String> {
    let (mut depth, mut start, mut items) = (0usize, 0, Vec::new());
    for (i, c) in rest.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unmatched ']' in '{rest}'"))?
            }
            ',' if depth == 0 => {
                items.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed '[' in '{rest}'"));
    }
    items.push(&rest[start..]);
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut s = Spec::parse("schedule", "vp-linear:beta0=0.2,beta1=10").unwrap();
        assert_eq!(s.name, "vp-linear");
        assert_eq!(s.take_f64("beta0", 0.1).unwrap(), 0.2);
        assert_eq!(s.take_f64("beta1", 20.0).unwrap(), 10.0);
        s.finish().unwrap();

        let mut s = Spec::parse("schedule", "vp-linear:beta2=3").unwrap();
        s.take_f64("beta0", 0.1).unwrap();
        let e = s.finish().unwrap_err().to_string();
        assert_eq!(
            e,
            "schedule 'vp-linear:beta2=3': unknown option 'beta2' for 'vp-linear' (valid: beta0)"
        );
        assert!(Spec::parse("grid", "x:a").is_err());
        assert!(Spec::parse("grid", "x:a=1,a=2").is_err());
        let mut s = Spec::parse("grid", "x:a=zz").unwrap();
        assert!(s
            .take_f64("a", 1.0)
            .unwrap_err()
            .to_string()
            .contains("cannot parse 'zz'"));
        let mut s = Spec::parse("solver", "pc:predictor=[ddim:eta=1,s_noise=2],n=2").unwrap();
        assert_eq!(
            s.take("predictor", String::new()).unwrap(),
            "ddim:eta=1,s_noise=2"
        );
        assert_eq!(s.take("n", 1usize).unwrap(), 2);
        assert_eq!(s.canonical(), "pc:predictor=[ddim:eta=1,s_noise=2],n=2");
        for bad in [
            "pc:predictor=[ddim:eta=1",
            "pc:predictor=ddim]",
            "pc:p=[a]b",
        ] {
            assert!(Spec::parse("solver", bad).is_err(), "{bad}");
        }
        let mut s = Spec::parse("grid", "x:a=nan").unwrap();
        assert!(s
            .take_f64("a", 1.0)
            .unwrap_err()
            .to_string()
            .contains("not finite"));
    }
}
