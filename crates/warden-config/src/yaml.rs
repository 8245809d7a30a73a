//! YAML 1.1 (PyYAML-compatible as far as serde-saphyr allows) parsing into `serde_json::Value`.

use serde_json::{Map, Value};

use crate::ConfigError;

/// Parse a YAML document into a JSON value with YAML 1.1 scalar semantics.
///
/// * unquoted `yes`/`no`/`on`/`off`/`true`/`false`, in lower, Title or UPPER case, become
///   JSON booleans, exactly PyYAML's set: a bare `y`/`n` or `yEs` stays a string (see
///   [`pyyaml_booleans`]);
/// * `0644` is octal (420), `0x1F` hexadecimal, `1_000` is 1000;
/// * `~`, `null` and empty values become `null`;
/// * duplicate keys: the last one wins (as in PyYAML);
/// * `.inf`/`.nan` become the strings `".inf"`/`".nan"` (JSON cannot hold them).
///
/// An empty document yields `Value::Null`. `what` names the source in error messages
/// (e.g. `config file /etc/patroni.yml`); errors carry the line and column the parser gives.
pub fn parse_yaml_str(s: &str, what: &str) -> Result<Value, ConfigError> {
    let options = |strict_booleans: bool| {
        let mut opts = serde_saphyr::Options::default();
        opts.legacy_octal_numbers = true;
        opts.strict_booleans = strict_booleans;
        opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
        opts.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
        opts
    };
    match serde_saphyr::from_str_with_options::<Value>(s, options(false)) {
        // serde-saphyr's YAML 1.1 booleans are a superset of PyYAML's; a second parse
        // with only `true`/`false` as booleans keeps the text of the others.
        Ok(yaml11) => match serde_saphyr::from_str_with_options::<Value>(s, options(true)) {
            Ok(yaml12) => Ok(pyyaml_booleans(yaml11, yaml12)),
            Err(_) => Ok(yaml11),
        },
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

/// PyYAML's booleans (YAML 1.1 as PyYAML resolves them: these spellings only).
fn pyyaml_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Merges two parses of one document: `yaml11` (serde-saphyr's YAML 1.1 booleans, which
/// include `y`, `n` and any case) and `yaml12` (only `true`/`false` are booleans, other
/// plain scalars keep their text). A boolean of the first whose text in the second is not
/// one of PyYAML's spellings goes back to that text, so `name: n` is the member `"n"`, as
/// in Patroni. Mapping keys keep their text (PyYAML would make `on:` the key `True`,
/// which a JSON object cannot hold). Where the shapes differ
/// (only possible when keys like `y` and `true` collide), `yaml11` is kept as it is.
fn pyyaml_booleans(yaml11: Value, yaml12: Value) -> Value {
    match (yaml11, yaml12) {
        (Value::Bool(b), Value::String(text)) => match pyyaml_bool(&text) {
            Some(_) => Value::Bool(b),
            None => Value::String(text),
        },
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => Value::Object(
            a.into_iter()
                .zip(b)
                .map(|((_, va), (key, vb))| (key, pyyaml_booleans(va, vb)))
                .collect(),
        ),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => Value::Array(
            a.into_iter()
                .zip(b)
                .map(|(va, vb)| pyyaml_booleans(va, vb))
                .collect(),
        ),
        (a, _) => a,
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
