//! Error type of the crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while managing PostgreSQL.
///
/// Messages name the file, command or query that failed and, for external tools, carry
/// the tail of the tool's output.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// what was being done ("write", "rename", "read", ...)
        what: String,
        /// the file or directory
        path: PathBuf,
        /// the OS error
        #[source]
        source: std::io::Error,
    },
    /// An external tool could not be started at all.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// the command line (program and arguments)
        cmd: String,
        /// the OS error
        #[source]
        source: std::io::Error,
    },
    /// An external tool exited unsuccessfully.
    #[error("{cmd} failed ({status}): {output}")]
    Command {
        /// the command line (program and arguments, passwords never included)
        cmd: String,
        /// exit status description
        status: String,
        /// tail of stderr (or stdout when stderr was empty)
        output: String,
    },
    /// An external tool did not finish in time (it was killed).
    #[error("{cmd} did not finish within {timeout:?}")]
    CommandTimeout {
        /// the command line
        cmd: String,
        /// the time limit
        timeout: Duration,
    },
    /// The postmaster exited while starting up.
    #[error("postgres failed to start: {0}")]
    StartFailed(String),
    /// The postmaster is alive but still not accepting connections after the timeout
    /// (spec: "still starting"; the caller keeps watching).
    #[error("postgres is still starting after {0:?}")]
    StillStarting(Duration),
    /// The postmaster did not exit, even after SIGKILL.
    #[error("failed to stop postgres: {0}")]
    StopFailed(String),
    /// PostgreSQL is not running but the operation needs it.
    #[error("postgres is not running")]
    NotRunning,
    /// Could not connect to a PostgreSQL server.
    #[error("connect to {target} failed: {message}")]
    Connect {
        /// host:port or socket dir, user and database
        target: String,
        /// server or driver message
        message: String,
    },
    /// A query failed.
    #[error("query {what} failed: {message}")]
    Query {
        /// short name of the query
        what: String,
        /// server message (with SQLSTATE) or driver message
        message: String,
        /// SQLSTATE when the server reported one
        code: Option<String>,
    },
    /// A connection or query did not complete in time.
    #[error("{0} timed out")]
    Timeout(String),
    /// Output of a tool or query could not be understood.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// what was parsed
        what: String,
        /// what was wrong
        detail: String,
    },
    /// A user's TLS settings cannot be used (bad value, missing root certificate,
    /// unreadable or encrypted key); the message names the user and the option.
    #[error("{0}")]
    Tls(String),
    /// The request is invalid for the current state (e.g. no data directory).
    #[error("{0}")]
    Invalid(String),
}

impl PgError {
    pub(crate) fn io(what: &str, path: impl Into<PathBuf>, source: std::io::Error) -> PgError {
        PgError::Io {
            what: what.to_string(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn query(what: &str, e: tokio_postgres::Error) -> PgError {
        let (message, code) = describe_pg_error(&e);
        PgError::Query {
            what: what.to_string(),
            message,
            code,
        }
    }

    pub(crate) fn connect(target: String, e: tokio_postgres::Error) -> PgError {
        let (message, _) = describe_pg_error(&e);
        PgError::Connect { target, message }
    }

    /// The SQLSTATE code when this is a server-reported query error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Query { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// tokio-postgres' Display is just "db error": dig out the server message.
fn describe_pg_error(e: &tokio_postgres::Error) -> (String, Option<String>) {
    if let Some(db) = e.as_db_error() {
        let mut m = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(d) = db.detail() {
            m.push_str(&format!("; detail: {d}"));
        }
        return (m, Some(db.code().code().to_string()));
    }
    let mut m = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        m.push_str(&format!(": {s}"));
        src = s.source();
    }
    (m, e.code().map(|c| c.code().to_string()))
}
