//! Replica creation methods and custom bootstrap (postgres-management.md §5): which
//! methods a node tries, in which order, and the exact command lines Patroni 4.1 builds
//! for them (`create_replica`, `replica_method_options`, `_custom_bootstrap` in
//! `postgresql/bootstrap.py`). Pure: the executor runs the commands.
//!
//! Values of a method's section are passed as `--key=value` with Python's `str()` of
//! the value (`True`, `None`, `1`), because that is what the scripts written for Patroni
//! parse.

use serde_json::{Map, Value};

/// The built-in method (`pg_basebackup`).
pub const BASEBACKUP: &str = "basebackup";

/// One replica creation method as configured: its name (an entry of
/// `create_replica_methods`) and its section `postgresql.<name>` (keys in file order;
/// empty when the section is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaMethod {
    /// Method name.
    pub name: String,
    /// The method's section (`command`, `keep_data`, `no_leader`, `no_params`, and any
    /// other key, each passed to the command as `--key=value`).
    pub options: Map<String, Value>,
}

impl ReplicaMethod {
    /// A method with its section.
    pub fn new(name: impl Into<String>, options: Map<String, Value>) -> ReplicaMethod {
        ReplicaMethod {
            name: name.into(),
            options,
        }
    }

    /// `basebackup`, run by the agent itself.
    pub fn is_basebackup(&self) -> bool {
        self.name == BASEBACKUP
    }

    fn flag(&self, key: &str) -> bool {
        self.options.get(key).is_some_and(crate::cluster::py_truthy)
    }

    /// The method may run without a replication connection (Patroni's
    /// `replica_method_can_work_without_replication_connection`: not `basebackup`, and
    /// `no_leader` is truthy in Python's sense, so `'0'` counts as set). Warden also
    /// honours the pre-4.0 spelling `no_master`, which Patroni 4 dropped.
    pub fn works_without_leader(&self) -> bool {
        !self.is_basebackup() && (self.flag("no_leader") || self.flag("no_master"))
    }

    /// `keep_data`: a non-empty data directory is not removed before the method runs.
    pub fn keep_data(&self) -> bool {
        self.flag("keep_data")
    }

    /// After a failure the data directory is kept only with `keep_data` and without
    /// `no_params`: Patroni drops `keep_data` from the section together with the other
    /// special keys when `no_params` is set, and then cleans up regardless.
    pub fn keep_data_after_failure(&self) -> bool {
        self.keep_data() && !self.flag("no_params")
    }

    /// The command (`command`, else the method name), unsplit.
    pub fn command(&self) -> Result<String, ReplicaError> {
        match self.options.get("command") {
            None => Ok(self.name.clone()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(ReplicaError::NotAString {
                key: format!("postgresql.{}.command", self.name),
                got: py_str(other),
            }),
        }
    }
}

/// A command and its arguments; the executor splits `command` like `shlex.split` and
/// appends `args`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// The configured command, unsplit.
    pub command: String,
    /// `--key=value` arguments, in Patroni's order.
    pub args: Vec<String>,
}

/// A method section that cannot be turned into a command line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// `command` is not a string.
    #[error("{key}: expected a command line string, got {got}")]
    NotAString {
        /// the key
        key: String,
        /// what it was (Python's `str()`)
        got: String,
    },
}

/// Patroni's `create_replica`: the methods to try, in order. No configured method means
/// `[basebackup]`; a reinitialisation `--from-leader` uses only `basebackup`; without a
/// source to copy from only the methods that work without one remain (possibly none).
pub fn methods_to_try(
    configured: &[ReplicaMethod],
    have_source: bool,
    from_leader: bool,
) -> Vec<ReplicaMethod> {
    let basebackup = || ReplicaMethod::new(BASEBACKUP, Map::new());
    // `basebackup` takes its options from `postgresql.basebackup` (the executor's
    // pg_basebackup settings), so it needs no section here.
    let mut methods: Vec<ReplicaMethod> = if from_leader || configured.is_empty() {
        vec![basebackup()]
    } else {
        configured.to_vec()
    };
    if !have_source {
        methods.retain(ReplicaMethod::works_without_leader);
    }
    methods
}

/// Patroni's `can_create_replica_without_replication_connection`: some configured
/// method may build this node while the cluster has no leader (B3).
pub fn can_create_without_leader(configured: &[ReplicaMethod]) -> bool {
    configured.iter().any(ReplicaMethod::works_without_leader)
}

/// The command line of a custom replica creation method, exactly as Patroni builds it:
/// every key of the section but `command` as `--key=value` in file order, with `scope`,
/// `role=replica`, `datadir` and `connstring` set (overwriting same-named keys in place,
/// appended otherwise); with a truthy `no_params` those four are not added and
/// `no_params`, `no_leader` and `keep_data` are dropped instead.
pub fn replica_method_command(
    m: &ReplicaMethod,
    scope: &str,
    data_dir: &str,
    connstring: &str,
) -> Result<CommandLine, ReplicaError> {
    let command = m.command()?;
    let mut opts = m.options.clone();
    opts.shift_remove("command");
    if m.flag("no_params") {
        for k in ["no_params", "no_leader", "keep_data"] {
            opts.shift_remove(k);
        }
    } else {
        for (k, v) in [
            ("scope", scope),
            ("role", "replica"),
            ("datadir", data_dir),
            ("connstring", connstring),
        ] {
            // Python's dict.update keeps the position of an existing key.
            opts.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    Ok(CommandLine {
        command,
        args: opts
            .iter()
            .map(|(k, v)| format!("--{k}={}", py_str(v)))
            .collect(),
    })
}

/// Keys of a custom bootstrap section that are not passed to its command.
pub const CUSTOM_BOOTSTRAP_RESERVED: [&str; 6] = [
    "command",
    "no_params",
    "keep_existing_recovery_conf",
    "recovery_conf",
    "scope",
    "datadir",
];

/// The command line of a custom bootstrap (`bootstrap.<method>`), as Patroni's
/// `_custom_bootstrap`: `--scope=<scope> --datadir=<data_dir>` unless `no_params`, then
/// every other key but the reserved ones as `--key=value`. `name` is the method name
/// (for the error message only).
pub fn custom_bootstrap_command(
    name: &str,
    options: &Map<String, Value>,
    scope: &str,
    data_dir: &str,
) -> Result<CommandLine, ReplicaError> {
    let command = match options.get("command") {
        Some(Value::String(s)) => s.clone(),
        other => {
            return Err(ReplicaError::NotAString {
                key: format!("bootstrap.{name}.command"),
                got: other.map(py_str).unwrap_or_else(|| "nothing".into()),
            })
        }
    };
    let mut args = Vec::new();
    if !options
        .get("no_params")
        .is_some_and(crate::cluster::py_truthy)
    {
        args.push(format!("--scope={scope}"));
        args.push(format!("--datadir={data_dir}"));
    }
    args.extend(
        options
            .iter()
            .filter(|(k, _)| !CUSTOM_BOOTSTRAP_RESERVED.contains(&k.as_str()))
            .map(|(k, v)| format!("--{k}={}", py_str(v))),
    );
    Ok(CommandLine { command, args })
}

/// Python's `str()` of a YAML value: strings as they are, `True`/`False`/`None`,
/// numbers in decimal, lists and mappings in Python's repr.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Value::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
