//! Error and problem types returned by the loader and the validator.

use std::fmt;

/// Why the local configuration could not be loaded.
///
/// `Display` always names the key path (or the file) and the problem, e.g.
/// `postgresql.data_dir: missing required key` or
/// `config file /x.yml: YAML syntax error at line 3 column 5: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file or directory could not be read.
    #[error("{what}: cannot read: {message}")]
    Io {
        /// What was being read, e.g. `config file /etc/patroni.yml`.
        what: String,
        /// The operating system's error text.
        message: String,
    },
    /// The YAML text could not be parsed.
    #[error("{what}: YAML syntax error{}: {message}", loc_suffix(*.line, *.column))]
    Yaml {
        /// What was being parsed, e.g. `config file /etc/patroni.yml` or `PATRONI_CONFIGURATION`.
        what: String,
        /// 1-based line of the problem, when the parser reports one.
        line: Option<u64>,
        /// 1-based column of the problem, when the parser reports one.
        column: Option<u64>,
        /// The parser's message.
        message: String,
    },
    /// A YAML document parsed, but its top level is not a mapping.
    #[error("{what}: expected a mapping at the top level, got {got}")]
    NotAMapping {
        /// What was being parsed.
        what: String,
        /// Short description of what was found instead.
        got: String,
    },
    /// The merged configuration is empty (Patroni refuses to start with an empty config).
    #[error("configuration is empty: give a config file or directory, PATRONI_CONFIGURATION or PATRONI_* variables")]
    Empty,
    /// A required key is missing (or empty).
    #[error("{key}: missing required key")]
    Missing {
        /// Dotted key path, e.g. `postgresql.data_dir`.
        key: String,
    },
    /// A key has a value of the wrong type.
    #[error("{key}: expected {expected}, got {got}")]
    WrongType {
        /// Dotted key path.
        key: String,
        /// What was expected, e.g. `an integer`.
        expected: String,
        /// Short description of the value found, e.g. `'abc'`.
        got: String,
    },
    /// A key has a value of the right type that is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// The problem, e.g. `expected host:port, got 'abc'`.
        message: String,
    },
    /// A DCS section other than `etcd3` is configured.
    #[error("unsupported DCS section '{section}': Warden supports etcd3 only")]
    UnsupportedDcs {
        /// The section name, e.g. `consul`.
        section: String,
    },
    /// Patroni's `etcd:` section (or `PATRONI_ETCD_*` variables): the etcd v2 API, which
    /// Warden does not speak. `etcd3:` takes the same keys, so the advice names them.
    #[error("etcd: the etcd v2 API is not supported; {advice}")]
    EtcdV2 {
        /// What to write instead, e.g. ``use an `etcd3:` section with the same hosts
        /// (etcd3: {host: 127.0.0.1:2379})``.
        advice: String,
    },
    /// There is no `etcd3` section.
    #[error("etcd3: missing required section (Warden supports etcd3 only)")]
    MissingDcs,
}

fn loc_suffix(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l} column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// The dotted key path (or section name / source) this error is about, when there is one.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            ConfigError::Io { what, .. }
            | ConfigError::Yaml { what, .. }
            | ConfigError::NotAMapping { what, .. } => Some(what),
            ConfigError::Missing { key }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::UnsupportedDcs { section } => Some(section),
            ConfigError::EtcdV2 { .. } => Some("etcd"),
            ConfigError::MissingDcs => Some("etcd3"),
            ConfigError::Empty => None,
        }
    }

    /// Turn this error into a [`ConfigProblem`] (key path + message).
    pub fn to_problem(&self) -> ConfigProblem {
        let path = self.key_path().unwrap_or("").to_string();
        let full = self.to_string();
        let prefix = format!("{path}: ");
        let message = match full.strip_prefix(&prefix) {
            Some(rest) if !path.is_empty() => rest.to_string(),
            _ => full,
        };
        ConfigProblem { path, message }
    }
}

/// One problem found by [`crate::validate_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path the problem is about (e.g. `postgresql.listen`), or the file / section
    /// name for file-level problems; empty when the problem concerns the whole configuration.
    pub path: String,
    /// Human-readable description of the problem.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
