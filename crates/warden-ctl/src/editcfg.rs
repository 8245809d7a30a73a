//! `edit-config` helpers: `--set`/`--pg` dotted-path changes, `--apply`/`--replace`
//! YAML merging, and the YAML text the diff is computed on.

use serde_json::{Map, Value};

use crate::pyfmt::yaml_dump;

/// `format_config_for_editing`: `yaml.safe_dump(data, default_flow_style=False,
/// allow_unicode=True, width=200)` (keys sorted, block style).
pub fn format_config(v: &Value) -> String {
    yaml_dump(v, false)
}

fn set_path_value(config: &mut Map<String, Value>, path: &[&str], value: &Value, prefix: &[&str]) {
    // PostgreSQL GUCs can't be nested but may contain dots: re-flatten the rest.
    let joined;
    let path: Vec<&str> = if prefix == ["postgresql", "parameters"] {
        joined = path.join(".");
        vec![joined.as_str()]
    } else {
        path.to_vec()
    };
    let key = path[0];
    if path.len() == 1 {
        if value.is_null() {
            config.shift_remove(key);
        } else {
            config.insert(key.to_string(), value.clone());
        }
        return;
    }
    if !matches!(config.get(key), Some(Value::Object(_))) {
        config.insert(key.to_string(), Value::Object(Map::new()));
    }
    let mut new_prefix = prefix.to_vec();
    new_prefix.push(key);
    if let Some(Value::Object(child)) = config.get_mut(key) {
        set_path_value(child, &path[1..], value, &new_prefix);
    }
    if matches!(config.get(key), Some(Value::Object(m)) if m.is_empty()) {
        config.shift_remove(key);
    }
}

/// `apply_config_changes`: applies `key.path=yaml value` pairs (a `null`/empty value
/// removes the key; below `postgresql.parameters` the rest of the path is one GUC name).
pub fn apply_config_changes(data: &Value, kvpairs: &[String]) -> Result<Value, String> {
    let mut changed = match data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for pair in kvpairs {
        let Some((key_path, value)) = pair.split_once('=') else {
            return Err(format!("Invalid parameter setting {pair}"));
        };
        let value = warden_config::parse_yaml_str(value, "value")
            .map_err(|e| format!("Invalid value in {pair}: {e}"))?;
        let path: Vec<&str> = key_path.trim().split('.').collect();
        set_path_value(&mut changed, &path, &value, &[]);
    }
    Ok(Value::Object(changed))
}

/// `apply_yaml_file`: merges a YAML document into `data` with Patroni's `patch_config`
/// (`null` deletes, mappings merge recursively).
pub fn apply_yaml(data: &Value, yaml_text: &str, what: &str) -> Result<Value, String> {
    let mut changed = match data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let new = warden_config::parse_yaml_str(yaml_text, what).map_err(|e| e.to_string())?;
    match new {
        Value::Object(p) => warden_config::patch_config(&mut changed, &p),
        Value::Null => {}
        _ => return Err(format!("{what} does not hold a YAML mapping")),
    }
    Ok(Value::Object(changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_values() {
        let base = json!({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}});
        let v = apply_config_changes(&base, &pairs(&["ttl=20", "a.b.c=on", "x='5'"])).unwrap();
        assert_eq!(v["ttl"], json!(20));
        assert_eq!(v["a"], json!({"b": {"c": true}}));
        assert_eq!(v["x"], json!("5"));
        let v = apply_config_changes(
            &base,
            &pairs(&[
                "postgresql.parameters.max_connections=101",
                "postgresql.parameters.pg_stat_statements.track=all",
            ]),
        )
        .unwrap();
        assert_eq!(
            v["postgresql"]["parameters"],
            json!({"max_connections": 101, "pg_stat_statements.track": "all"})
        );
        // null / empty deletes, empty parents vanish
        let v = apply_config_changes(
            &base,
            &pairs(&["ttl=null", "postgresql.parameters.max_connections="]),
        )
        .unwrap();
        assert_eq!(v, json!({"loop_wait": 10}));
        assert_eq!(
            apply_config_changes(&base, &pairs(&["nonsense"])).unwrap_err(),
            "Invalid parameter setting nonsense"
        );
    }

    #[test]
    fn yaml_apply_and_format() {
        let base = json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": 2}}});
        let v = apply_yaml(
            &base,
            "ttl: 20\npostgresql:\n  parameters:\n    a: null\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"ttl": 20, "postgresql": {"parameters": {"b": 2}}})
        );
        assert_eq!(
            format_config(&v),
            "postgresql:\n  parameters:\n    b: 2\nttl: 20\n"
        );
    }
}
