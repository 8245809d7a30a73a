//! `warden.pgbouncer`: the PgBouncers in front of the cluster that a planned switchover
//! pauses and resumes (a Warden-only setting; Patroni ignores the whole `warden:`
//! section).

use super::{join, present, Obj};
use crate::Loader;
use serde_json::Value;
use std::path::PathBuf;

/// Default bound on waiting for `PAUSE` to complete (seconds).
pub const DEFAULT_PAUSE_TIMEOUT_MS: u64 = 10_000;
/// Default bound on waiting, after the demotion, for a new primary that accepts writes
/// (and HAProxy routing to it) before the PgBouncers are resumed anyway.
pub const DEFAULT_RESUME_TIMEOUT_MS: u64 = 30_000;

/// `warden.pgbouncer` (see the README "PgBouncer and HAProxy in front").
#[derive(Clone, PartialEq, Eq)]
pub struct PgBouncerSettings {
    /// libpq connection strings (`key=value` conninfo or `postgres://` URL) of each
    /// PgBouncer's admin console (database `pgbouncer`). A password may be part of the
    /// string; it is never logged ([`PgBouncerSettings::describe_admin`]).
    pub admin: Vec<String>,
    /// A pgpass-format file with the admin password when the connection string has none
    /// (else `PGPASSFILE`, else `~/.pgpass` of the agent's user).
    pub passfile: Option<PathBuf>,
    /// How long to wait for `PAUSE` to complete (running transactions to finish).
    pub pause_timeout_ms: u64,
    /// How long, after the demotion, to wait for the new primary (and HAProxy) before
    /// resuming anyway.
    pub resume_timeout_ms: u64,
    /// HAProxy CSV stats URL (`http://127.0.0.1:7000/stats;csv`): when set, `RESUME`
    /// waits until HAProxy routes the backend to the new primary only.
    pub haproxy_stats: Option<String>,
    /// The HAProxy backend (`listen` section) whose servers are named like the members.
    pub haproxy_backend: Option<String>,
}

impl std::fmt::Debug for PgBouncerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBouncerSettings")
            .field("admin", &self.describe_admin())
            .field("passfile", &self.passfile)
            .field("pause_timeout_ms", &self.pause_timeout_ms)
            .field("resume_timeout_ms", &self.resume_timeout_ms)
            .field("haproxy_stats", &self.haproxy_stats)
            .field("haproxy_backend", &self.haproxy_backend)
            .finish()
    }
}

impl PgBouncerSettings {
    /// The admin connection strings with any password masked (for logs and `Debug`).
    pub fn describe_admin(&self) -> Vec<String> {
        self.admin.iter().map(|s| mask_password(s)).collect()
    }
}

/// `conninfo` with the value of a `password=` pair, or the password of a URL, replaced by
/// `***`.
pub fn mask_password(conninfo: &str) -> String {
    if let Some(rest) = conninfo
        .strip_prefix("postgresql://")
        .or_else(|| conninfo.strip_prefix("postgres://"))
    {
        let scheme = &conninfo[..conninfo.len() - rest.len()];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let mut out = match rest[..end].rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _)) => format!("{scheme}{user}:***{}", &rest[at..]),
                None => conninfo.to_string(),
            },
            None => conninfo.to_string(),
        };
        // `?password=` in the query string
        if let Some(q) = out.find("password=") {
            let tail = out[q..]
                .find('&')
                .map_or(String::new(), |a| out[q + a..].to_string());
            out = format!("{}password=***{tail}", &out[..q]);
        }
        return out;
    }
    let mut out = Vec::new();
    for (k, v) in conninfo_pairs(conninfo).unwrap_or_default() {
        if k == "password" {
            out.push("password=***".to_string());
        } else if v.is_empty() || v.contains([' ', '\'', '\\']) {
            out.push(format!(
                "{k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        } else {
            out.push(format!("{k}={v}"));
        }
    }
    out.join(" ")
}

/// The `key=value` pairs of a libpq conninfo string (values may be single-quoted with
/// backslash escapes); an error text when it is malformed.
pub fn conninfo_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing '=' after '{key}'"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of '{key}'")),
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value of '{key}'")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// Why `conninfo` cannot be a PgBouncer admin console connection string (None = fine).
fn admin_problem(conninfo: &str) -> Option<String> {
    let masked = mask_password(conninfo);
    if let Some(rest) = conninfo
        .strip_prefix("postgresql://")
        .or_else(|| conninfo.strip_prefix("postgres://"))
    {
        let path = rest
            .find('/')
            .map(|i| &rest[i + 1..])
            .map(|p| p.split('?').next().unwrap_or(""));
        let query_db = rest
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("dbname=")));
        let db = query_db.or(path.filter(|p| !p.is_empty()));
        return match db {
            Some("pgbouncer") => None,
            Some(other) => Some(format!(
                "'{masked}' names database '{other}', the admin console is database 'pgbouncer'"
            )),
            None => Some(format!(
                "'{masked}' names no database; the admin console is database 'pgbouncer'"
            )),
        };
    }
    if conninfo.contains("://") {
        return Some(format!(
            "'{masked}' is not a libpq conninfo or postgresql:// URL"
        ));
    }
    let pairs = match conninfo_pairs(conninfo) {
        Ok(p) => p,
        Err(e) => return Some(format!("not a libpq conninfo string: {e}")),
    };
    match pairs.iter().rev().find(|(k, _)| k == "dbname") {
        Some((_, db)) if db == "pgbouncer" => None,
        Some((_, db)) => Some(format!(
            "'{masked}' names database '{db}', the admin console is database 'pgbouncer'"
        )),
        None => Some(format!(
            "'{masked}' has no dbname=pgbouncer (the admin console's database)"
        )),
    }
}

/// Seconds (integer or decimal, > 0 and at most a day) as milliseconds.
fn seconds_ms(ld: &mut Loader, m: &Obj, key: &str, prefix: &str) -> Option<u64> {
    let v = present(m, key)?;
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Some((s * 1000.0).round() as u64),
        Some(s) => {
            ld.invalid(
                join(prefix, key),
                format!("must be a number of seconds above 0 and at most 86400, got {s}"),
            );
            None
        }
        None => {
            ld.wrong(join(prefix, key), "a number of seconds", v);
            None
        }
    }
}

/// Parses `warden.pgbouncer` (None when absent or invalid; errors go to `ld`).
pub(super) fn parse(ld: &mut Loader, m: &Obj) -> Option<PgBouncerSettings> {
    let p = "warden.pgbouncer";
    let errors_before = ld.errors.len();
    let admin = match present(m, "admin") {
        // one string is a list of one
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(_) => ld.str_list(m, "admin", p),
        None => {
            ld.invalid(
                join(p, "admin"),
                "missing: list the admin connection strings of the PgBouncers (dbname=pgbouncer)",
            );
            None
        }
    }
    .unwrap_or_default();
    if admin.is_empty() && ld.errors.len() == errors_before {
        ld.invalid(join(p, "admin"), "must list at least one connection string");
    }
    for (i, a) in admin.iter().enumerate() {
        if let Some(problem) = admin_problem(a) {
            ld.invalid(format!("{p}.admin[{i}]"), problem);
        }
    }
    let passfile = ld
        .str_(m, "passfile", p)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let pause_timeout_ms =
        seconds_ms(ld, m, "pause_timeout", p).unwrap_or(DEFAULT_PAUSE_TIMEOUT_MS);
    let resume_timeout_ms =
        seconds_ms(ld, m, "resume_timeout", p).unwrap_or(DEFAULT_RESUME_TIMEOUT_MS);
    let haproxy_stats = ld.str_(m, "haproxy_stats", p).filter(|s| !s.is_empty());
    let haproxy_backend = ld.str_(m, "haproxy_backend", p).filter(|s| !s.is_empty());
    if let Some(url) = &haproxy_stats {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            ld.invalid(
                join(p, "haproxy_stats"),
                format!(
                    "expected an http:// URL of HAProxy's CSV stats (…/stats;csv), got '{url}'"
                ),
            );
        }
        if haproxy_backend.is_none() {
            ld.invalid(
                join(p, "haproxy_backend"),
                "missing: name the HAProxy backend whose servers are named like the members",
            );
        }
    } else if haproxy_backend.is_some() {
        ld.invalid(
            join(p, "haproxy_stats"),
            "missing: haproxy_backend needs the HAProxy stats URL",
        );
    }
    const KNOWN: &[&str] = &[
        "admin",
        "passfile",
        "pause_timeout",
        "resume_timeout",
        "haproxy_stats",
        "haproxy_backend",
    ];
    for k in m.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        ld.warnings.push(format!("unknown key '{p}.{k}' ignored"));
    }
    if ld.errors.len() != errors_before {
        return None;
    }
    Some(PgBouncerSettings {
        admin,
        passfile,
        pause_timeout_ms,
        resume_timeout_ms,
        haproxy_stats,
        haproxy_backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        for (input, want) in [
            (
                "host=127.0.0.1 port=6432 user=a password=s3cret dbname=pgbouncer",
                "host=127.0.0.1 port=6432 user=a password=*** dbname=pgbouncer",
            ),
            (
                "host=h password='a b\\'c' dbname=pgbouncer",
                "host=h password=*** dbname=pgbouncer",
            ),
            (
                "postgresql://adm:s3cret@127.0.0.1:6432/pgbouncer",
                "postgresql://adm:***@127.0.0.1:6432/pgbouncer",
            ),
            (
                "postgres://adm@h/pgbouncer?password=x&sslmode=disable",
                "postgres://adm@h/pgbouncer?password=***&sslmode=disable",
            ),
        ] {
            assert_eq!(mask_password(input), want, "{input}");
        }
    }

    #[test]
    fn admin_strings_must_name_the_admin_console() {
        let ok = [
            "host=127.0.0.1 port=6432 dbname=pgbouncer",
            "host=127.0.0.1 dbname = 'pgbouncer' user=x",
            "postgresql://x@127.0.0.1:6432/pgbouncer",
            "postgres://127.0.0.1:6432/?dbname=pgbouncer",
        ];
        for s in ok {
            assert_eq!(admin_problem(s), None, "{s}");
        }
        for (s, needle) in [
            (
                "host=127.0.0.1 dbname=postgres",
                "names database 'postgres'",
            ),
            ("host=127.0.0.1 password=zz", "has no dbname=pgbouncer"),
            ("host=127.0.0.1 port", "missing '='"),
            ("host='x dbname=pgbouncer", "unterminated"),
            ("postgresql://a:pw@h/app", "names database 'app'"),
            ("http://h/pgbouncer", "not a libpq conninfo"),
        ] {
            let p = admin_problem(s).expect(s);
            assert!(p.contains(needle), "{s}: {p}");
            assert!(
                !p.contains("pw@") && !p.contains("zz"),
                "password leaked: {p}"
            );
        }
    }
}
