//! YAML 1.1 (PyYAML-compatible as far as serde-saphyr allows) parsing into `serde_json::Value`.

use serde_json::{Map, Value};

use crate::ConfigError;

/// Parse a YAML document into a JSON value with YAML 1.1 scalar semantics.
///
/// * unquoted `on`/`off`/`yes`/`no`/`true`/`false` (any case) become JSON booleans;
///   serde-saphyr additionally treats a bare `y`/`n` as booleans (PyYAML does not);
/// * `0644` is octal (420), `0x1F` hexadecimal, `1_000` is 1000;
/// * `~`, `null` and empty values become `null`;
/// * duplicate keys: the last one wins (as in PyYAML);
/// * `.inf`/`.nan` become the strings `".inf"`/`".nan"` (JSON cannot hold them).
///
/// An empty document yields `Value::Null`. `what` names the source in error messages
/// (e.g. `config file /etc/patroni.yml`); errors carry the line and column the parser gives.
pub fn parse_yaml_str(s: &str, what: &str) -> Result<Value, ConfigError> {
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    opts.strict_booleans = false;
    opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    opts.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    match serde_saphyr::from_str_with_options::<Value>(s, opts) {
        Ok(v) => Ok(v),
        Err(e) => {
            let loc = e.location();
            let (line, column) = match loc {
                Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column())),
                _ => (None, None),
            };
            let text = e.without_snippet().to_string();
            let first = text.lines().next().unwrap_or("").trim();
            let mut msg = first.strip_prefix("error: ").unwrap_or(first).to_string();
            if let (Some(l), Some(c)) = (line, column) {
                let p = format!("line {l} column {c}: ");
                if let Some(rest) = msg.strip_prefix(&p) {
                    msg = rest.to_string();
                }
                let suffix = format!(" at line {l}, column {c}");
                if let Some(rest) = msg.strip_suffix(&suffix) {
                    msg = rest.to_string();
                }
            }
            if msg.is_empty() {
                msg = "invalid YAML".to_string();
            }
            Err(ConfigError::Yaml {
                what: what.to_string(),
                line,
                column,
                message: msg,
            })
        }
    }
}

/// Patroni's `patch_config`: merge `patch` into `base` recursively; `null` deletes a key,
/// mappings merge key by key, anything else replaces.
pub fn patch_config(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            base.shift_remove(k);
            continue;
        }
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(p)) => patch_config(b, p),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Short description of a value for error messages (`'abc'`, `5`, `a list`, `a mapping`).
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut t: String = s.chars().take(80).collect();
            if t.len() < s.len() {
                t.push('…');
            }
            format!("'{t}'")
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}
