//! Reads Patroni's `patroni.yml` (file or directory) and `PATRONI_*` environment variables into
//! Warden's typed configuration, following `spec/config.md`.
//!
//! * [`load`] / [`load_with_env`] build the local [`Config`] (file/dir ← env overlay, §1, §13).
//! * [`DynamicConfig::from_value`] types the dynamic (DCS) configuration and applies the
//!   timing rules of ha-loop.md §1.
//! * [`effective_postgresql_parameters`] merges dynamic and local GUCs (§1.4, §6.2).
//! * [`validate_file`] lists every problem for `warden --validate-config`.
//!
//! YAML is parsed with YAML 1.1 scalar rules (see [`parse_yaml_str`]) so that `on`/`off`/
//! `yes`/`no` become booleans and `0644` is octal, as with Patroni's PyYAML.

#![warn(missing_docs)]

mod dynamic;
mod env;
mod error;
mod model;
mod util;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use dynamic::{
    effective_postgresql_parameters, render_guc_value, DynamicConfig, NEVER_SETTABLE_PARAMETERS,
    PROTECTED_PARAMETERS, TIMING_MINIMUMS,
};
pub use env::{AUTH_ALLOWED_PARAMETERS, ENV_PREFIX};
pub use error::{ConfigError, ConfigProblem};
pub use model::*;
pub use util::{
    parse_bool, parse_duration_secs, parse_int, shell_split, split_host_port, unquote,
    value_as_bool, value_as_int,
};
pub use yaml::{parse_yaml_str, patch_config};

/// Name of the variable holding a whole YAML configuration (exclusive source, §1).
pub const CONFIGURATION_ENV: &str = "PATRONI_CONFIGURATION";

/// Member name Patroni reserves internally; refused as `name`.
pub const RESERVED_MEMBER_NAME: &str = "__patroni_strict_sync_replica_placeholder__";

/// DCS sections Patroni knows but Warden does not support.
pub const UNSUPPORTED_DCS_SECTIONS: &[&str] = &[
    "etcd",
    "consul",
    "zookeeper",
    "exhibitor",
    "kubernetes",
    "raft",
];

/// Snapshot of the process environment variables relevant to configuration (`PATRONI_*` and
/// `HOME`). Capture it once at startup and pass it to [`load_with_env`] on reload: Patroni's
/// environment values keep overriding the files after a reload (§1.6).
pub fn env_snapshot() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == "HOME")
        .collect()
}

/// Load the local configuration from `path` (file or directory) or, without a path, from
/// `PATRONI_CONFIGURATION` / `PATRONI_*` variables of the real process environment.
///
/// Does not modify the environment: remove [`Config::consumed_env_vars`] yourself.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_with_env(path, &env_snapshot())
}

/// Like [`load`], with an explicit environment (only `PATRONI_*` and `HOME` are looked at).
///
/// Source (§1): `path` (a file, or a directory whose `*.yml`/`*.yaml` regular files are merged
/// in name order with the PATCH rule, `null` deleting keys), then the `PATRONI_*` overlay (§13);
/// without `path`, `PATRONI_CONFIGURATION` (then no other variable is applied, though all are
/// still reported as consumed), else the variables alone. `HOME` gives the default `pgpass`.
/// Returns the first problem found; [`validate_file`] lists them all.
pub fn load_with_env(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut ld = Loader::default();
    let cfg = load_inner(path, env, &mut ld);
    match (cfg, ld.errors.into_iter().next()) {
        (Ok(_), Some(e)) | (Err(e), _) => Err(e),
        (Ok(mut c), None) => {
            c.warnings = ld.warnings;
            Ok(c)
        }
    }
}

/// Validate a configuration file or directory (with the real process environment applied)
/// and return every problem found: type errors, missing keys, bad addresses, `bootstrap.dcs`
/// timings below their minimums, loopback `connect_address`es, a `data_dir` that is not a
/// (PostgreSQL) directory, and PostgreSQL binaries missing from `bin_dir` (or `PATH`).
/// Listen-port availability is not checked. Empty result = valid.
pub fn validate_file(path: &Path) -> Vec<ConfigProblem> {
    validate_file_with_env(path, &env_snapshot())
}

/// [`validate_file`] with an explicit environment.
pub fn validate_file_with_env(path: &Path, env: &BTreeMap<String, String>) -> Vec<ConfigProblem> {
    let mut ld = Loader {
        validate: true,
        ..Loader::default()
    };
    let cfg = load_inner(Some(path), env, &mut ld);
    let mut problems: Vec<ConfigProblem> = ld.errors.iter().map(ConfigError::to_problem).collect();
    match cfg {
        Err(e) => {
            let p = e.to_problem();
            if !problems.contains(&p) {
                problems.insert(0, p);
            }
        }
        Ok(_) => problems.extend(ld.problems),
    }
    problems
}

/// Error / warning accumulator used while building a [`Config`].
#[derive(Default)]
pub(crate) struct Loader {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
    /// Extra `--validate-config` checks (filesystem, minimums) are run when set.
    pub validate: bool,
    /// Problems found only by the extra validation checks.
    pub problems: Vec<ConfigProblem>,
    /// `warden.min_ttl`, once parsed (the `ttl` minimum the validation applies).
    pub min_ttl: Option<u64>,
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        what: format!("config file {}", path.display()),
        message: e.to_string(),
    })
}

fn parse_doc(text: &str, what: &str) -> Result<Map<String, Value>, ConfigError> {
    match parse_yaml_str(text, what)? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(ConfigError::NotAMapping {
            what: what.to_string(),
            got: yaml::describe(&other),
        }),
    }
}

fn load_path(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| ConfigError::Io {
            what: format!("config directory {}", path.display()),
            message: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .map(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
                        .unwrap_or(false)
            })
            .collect();
        files.sort();
        let mut doc = Map::new();
        for f in files {
            let what = format!("config file {}", f.display());
            let part = parse_doc(&read_file(&f)?, &what)?;
            patch_config(&mut doc, &part);
        }
        Ok(doc)
    } else {
        let what = format!("config file {}", path.display());
        parse_doc(&read_file(path)?, &what)
    }
}

fn load_inner(
    path: Option<&Path>,
    envmap: &BTreeMap<String, String>,
    ld: &mut Loader,
) -> Result<Config, ConfigError> {
    let envcfg = env::build_env_config(envmap);
    let mut consumed = envcfg.consumed.clone();
    let mut env_sections: BTreeSet<String> = BTreeSet::new();
    let doc = match path {
        Some(p) => {
            let mut doc = load_path(p)?;
            for k in envcfg.doc.keys() {
                if !doc.contains_key(k) {
                    env_sections.insert(k.clone());
                }
            }
            patch_config(&mut doc, &envcfg.doc);
            ld.warnings.extend(envcfg.warnings);
            doc
        }
        None => match envmap.get(CONFIGURATION_ENV) {
            Some(text) => {
                consumed.push(CONFIGURATION_ENV.to_string());
                consumed.sort();
                parse_doc(text, CONFIGURATION_ENV)?
            }
            None => {
                env_sections.extend(envcfg.doc.keys().cloned());
                ld.warnings.extend(envcfg.warnings);
                envcfg.doc
            }
        },
    };
    if doc.is_empty() {
        return Err(ConfigError::Empty);
    }
    let home = envmap
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok());
    let mut cfg = model::build_config(doc, ld, home.as_deref(), &env_sections)?;
    cfg.consumed_env = consumed;
    Ok(cfg)
}
