//! `PATRONI_*` environment variables → configuration overlay (config.md §13).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::util::{parse_bool, parse_int};
use crate::yaml::parse_yaml_str;

/// Prefix of every variable Patroni reads.
pub const ENV_PREFIX: &str = "PATRONI_";

/// Libpq connection parameters allowed in `postgresql.authentication.<user>`.
pub const AUTH_ALLOWED_PARAMETERS: &[&str] = &[
    "username",
    "password",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "gssencmode",
    "channel_binding",
    "sslnegotiation",
];

/// Suffixes recognised in `PATRONI_<SECTION>_<SUFFIX>` (DCS-style sections).
const SECTION_SUFFIXES: &[&str] = &[
    "HOST",
    "HOSTS",
    "PORT",
    "USE_PROXIES",
    "PROTOCOL",
    "SRV",
    "SRV_SUFFIX",
    "URL",
    "PROXY",
    "CACERT",
    "CERT",
    "KEY",
    "VERIFY",
    "TOKEN",
    "CHECKS",
    "DC",
    "CONSISTENCY",
    "REGISTER_SERVICE",
    "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME",
    "SERVICE_TAGS",
    "NAMESPACE",
    "CONTEXT",
    "USE_ENDPOINTS",
    "SCOPE_LABEL",
    "ROLE_LABEL",
    "POD_IP",
    "PORTS",
    "LABELS",
    "BYPASS_API_SERVICE",
    "RETRIABLE_HTTP_CODES",
    "KEY_PASSWORD",
    "USE_SSL",
    "SET_ACLS",
    "GROUP",
    "DATABASE",
    "LEADER_LABEL_VALUE",
    "FOLLOWER_LABEL_VALUE",
    "STANDBY_LEADER_LABEL_VALUE",
    "TMP_ROLE_LABEL",
    "AUTH_DATA",
    "BOOTSTRAP_LABELS",
];

/// Result of reading the environment.
pub(crate) struct EnvConfig {
    /// The overlay document (patched on top of the file configuration).
    pub doc: Map<String, Value>,
    /// Names of every variable that was recognised (to be removed from the agent's environment).
    pub consumed: Vec<String>,
    /// Non-fatal parse problems (unparseable typed values are ignored, as Patroni does).
    pub warnings: Vec<String>,
}

struct Env {
    vars: BTreeMap<String, String>,
    consumed: Vec<String>,
    warnings: Vec<String>,
}

impl Env {
    /// Remove `PATRONI_<NAME>` and return its value when non-empty.
    fn pop(&mut self, name: &str) -> Option<String> {
        let full = format!("{ENV_PREFIX}{}", name.to_ascii_uppercase());
        let v = self.vars.remove(&full)?;
        self.consumed.push(full);
        if v.is_empty() {
            None
        } else {
            Some(v)
        }
    }
}

fn section<'m>(doc: &'m mut Map<String, Value>, name: &str) -> &'m mut Map<String, Value> {
    let entry = doc
        .entry(name.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("entry was just made an object"),
    }
}

/// Patroni's `_parse_list`: wrap in `[...]` unless the value starts with `-` or contains `[`.
pub(crate) fn parse_env_list(value: &str) -> Option<Value> {
    let t = value.trim();
    let text = if t.starts_with('-') || value.contains('[') {
        value.to_string()
    } else {
        format!("[{value}]")
    };
    match parse_yaml_str(&text, "environment list") {
        Ok(v @ Value::Array(_)) => Some(v),
        Ok(Value::Null) | Err(_) => None,
        Ok(other) => Some(other),
    }
}

/// Patroni's `_parse_dict`: wrap in `{...}` unless the value starts with `{`.
pub(crate) fn parse_env_dict(value: &str) -> Option<Value> {
    let text = if value.trim().starts_with('{') {
        value.to_string()
    } else {
        format!("{{{value}}}")
    };
    match parse_yaml_str(&text, "environment mapping") {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// Build the environment overlay exactly in Patroni's order (`_build_environment_configuration`).
pub(crate) fn build_env_config(env: &BTreeMap<String, String>) -> EnvConfig {
    let mut e = Env {
        vars: env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        consumed: Vec::new(),
        warnings: Vec::new(),
    };
    let mut doc = Map::new();

    for param in ["name", "namespace", "scope"] {
        if let Some(v) = e.pop(param) {
            doc.insert(param.to_string(), Value::String(v));
        }
    }
    for param in ["thread_pool_size", "thread_stack_size"] {
        if let Some(v) = e.pop(param) {
            let val = match (param, parse_int(&v)) {
                ("thread_pool_size", Some(i)) => Value::from(i),
                _ => Value::String(v),
            };
            doc.insert(param.to_string(), val);
        }
    }

    // legacy log variable names
    for (name, old) in [
        ("level", "loglevel"),
        ("format", "logformat"),
        ("dateformat", "log_datefmt"),
    ] {
        if let Some(v) = e.pop(old) {
            let new = format!("{ENV_PREFIX}LOG_{}", name.to_ascii_uppercase());
            // used by the `log` section pass below unless the new name is set
            e.vars.entry(new).or_insert(v);
        }
    }

    let plain: &[(&str, &[&str])] = &[
        (
            "restapi",
            &[
                "listen",
                "connect_address",
                "certfile",
                "keyfile",
                "keyfile_password",
                "cafile",
                "ciphers",
                "verify_client",
                "http_extra_headers",
                "https_extra_headers",
                "allowlist",
                "allowlist_include_members",
                "request_queue_size",
                "server_tokens",
            ],
        ),
        (
            "ctl",
            &[
                "insecure",
                "cacert",
                "certfile",
                "keyfile",
                "keyfile_password",
            ],
        ),
        (
            "postgresql",
            &[
                "listen",
                "connect_address",
                "proxy_address",
                "config_dir",
                "data_dir",
                "pgpass",
                "bin_dir",
            ],
        ),
        (
            "log",
            &[
                "type",
                "level",
                "traceback_level",
                "format",
                "dateformat",
                "static_fields",
                "max_queue_size",
                "dir",
                "mode",
                "file_size",
                "file_num",
                "loggers",
                "deduplicate_heartbeat_logs",
            ],
        ),
    ];
    for (sec, params) in plain {
        for p in *params {
            if let Some(v) = e.pop(&format!("{sec}_{p}")) {
                let typed = match (*sec, *p) {
                    ("restapi", "allowlist_include_members")
                    | ("ctl", "insecure")
                    | ("log", "deduplicate_heartbeat_logs") => parse_bool(&v).map(Value::Bool),
                    ("restapi", "request_queue_size")
                    | ("log", "max_queue_size")
                    | ("log", "file_size")
                    | ("log", "file_num")
                    | ("log", "mode") => parse_int(&v).map(Value::from),
                    ("restapi", "allowlist") => parse_env_list(&v),
                    ("restapi", "http_extra_headers")
                    | ("restapi", "https_extra_headers")
                    | ("log", "static_fields")
                    | ("log", "loggers") => parse_env_dict(&v),
                    _ => Some(Value::String(v.clone())),
                };
                match typed {
                    Some(val) => {
                        section(&mut doc, sec).insert(p.to_string(), val);
                    }
                    None => e.warnings.push(format!(
                        "{ENV_PREFIX}{}_{}: cannot parse value '{v}', ignored",
                        sec.to_ascii_uppercase(),
                        p.to_ascii_uppercase()
                    )),
                }
            }
        }
    }
    // deprecated Raft DCS: consumed and ignored
    for p in [
        "data_dir",
        "self_addr",
        "partner_addrs",
        "password",
        "bind_addr",
    ] {
        if e.pop(&format!("raft_{p}")).is_some() {
            e.warnings.push(format!(
                "{ENV_PREFIX}RAFT_{}: Raft DCS is not supported, ignored",
                p.to_ascii_uppercase()
            ));
        }
    }
    for binary in [
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
        "postgres",
        "pg_isready",
        "pg_rewind",
    ] {
        if let Some(v) = e.pop(&format!("postgresql_bin_{binary}")) {
            let pg = section(&mut doc, "postgresql");
            let bn = section(pg, "bin_name");
            bn.insert(binary.to_string(), Value::String(v));
        }
    }

    for sec in ["ctl", "restapi"] {
        let auth = get_auth(&mut e, sec, &AUTH_ALLOWED_PARAMETERS[..2]);
        if !auth.is_empty() {
            section(&mut doc, sec).insert("authentication".into(), Value::Object(auth));
        }
    }
    let mut authentication = Map::new();
    for user in ["replication", "superuser", "rewind"] {
        let entry = get_auth(&mut e, user, AUTH_ALLOWED_PARAMETERS);
        if !entry.is_empty() {
            authentication.insert(user.to_string(), Value::Object(entry));
        }
    }
    if !authentication.is_empty() {
        section(&mut doc, "postgresql")
            .insert("authentication".into(), Value::Object(authentication));
    }

    // PATRONI_<SECTION>_<SUFFIX>
    let remaining: Vec<(String, String)> =
        e.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (param, value) in remaining {
        let rest = &param[ENV_PREFIX.len()..];
        let (name, suffix) = match rest.split_once('_') {
            Some((n, s)) => (n, s),
            None => continue,
        };
        if name.is_empty() || !SECTION_SUFFIXES.contains(&suffix) {
            continue;
        }
        e.vars.remove(&param);
        e.consumed.push(param.clone());
        if value.is_empty() {
            continue;
        }
        let typed = if name == "CITUS" {
            match suffix {
                "GROUP" => parse_int(&value).map(Value::from),
                "DATABASE" => Some(Value::String(value.clone())),
                _ => continue,
            }
        } else {
            match suffix {
                "PORT" => parse_int(&value).map(Value::from),
                "HOSTS" | "PORTS" | "CHECKS" | "SERVICE_TAGS" | "RETRIABLE_HTTP_CODES" => {
                    parse_env_list(&value)
                }
                "LABELS" | "SET_ACLS" | "AUTH_DATA" | "BOOTSTRAP_LABELS" => parse_env_dict(&value),
                "USE_PROXIES" | "REGISTER_SERVICE" | "USE_ENDPOINTS" | "BYPASS_API_SERVICE"
                | "VERIFY" => parse_bool(&value).map(Value::Bool),
                _ => Some(Value::String(value.clone())),
            }
        };
        match typed {
            Some(v) => {
                section(&mut doc, &name.to_ascii_lowercase())
                    .insert(suffix.to_ascii_lowercase(), v);
            }
            None => e
                .warnings
                .push(format!("{param}: cannot parse value '{value}', ignored")),
        }
    }
    for dcs in ["etcd", "etcd3"] {
        let auth = get_auth(&mut e, dcs, &AUTH_ALLOWED_PARAMETERS[..2]);
        if !auth.is_empty() {
            for (k, v) in auth {
                section(&mut doc, dcs).insert(k, v);
            }
        }
    }

    let mut consumed = e.consumed;
    consumed.sort();
    consumed.dedup();
    EnvConfig {
        doc,
        consumed,
        warnings: e.warnings,
    }
}

fn get_auth(e: &mut Env, name: &str, params: &[&str]) -> Map<String, Value> {
    let mut ret = Map::new();
    for p in params {
        if let Some(v) = e.pop(&format!("{name}_{p}")) {
            ret.insert(p.to_string(), Value::String(v));
        }
    }
    ret
}
