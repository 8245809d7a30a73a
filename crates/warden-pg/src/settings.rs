//! Settings the agent hands to [`crate::Postgres`] and the effective-parameter rules
//! (protected GUCs, config.md §6.2).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::controldata::ControlData;

/// A user name, optional password and libpq TLS/GSS options (from
/// `postgresql.authentication.*`). `Debug` never prints the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// role name
    pub username: String,
    /// password (None = no password: trust/peer/cert auth)
    pub password: Option<String>,
    /// libpq options used on every connection as this user (conninfo strings for the
    /// tools and `primary_conninfo`, and the agent's own TCP connections)
    pub ssl: SslOptions,
}

impl Credentials {
    /// Credentials without TLS/GSS options.
    pub fn new(username: &str, password: Option<&str>) -> Credentials {
        Credentials {
            username: username.to_string(),
            password: password.map(str::to_string),
            ssl: SslOptions::default(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl", &self.ssl)
            .finish()
    }
}

/// libpq connection options of a user besides name and password (config.md
/// `authentication.<user>`): `None` = not set (libpq's default applies). `Debug` never
/// prints `sslpassword`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SslOptions {
    /// `sslmode`: disable, allow, prefer (libpq's default), require, verify-ca, verify-full
    pub sslmode: Option<String>,
    /// `sslcert`: client certificate (PEM)
    pub sslcert: Option<String>,
    /// `sslkey`: client private key (PEM)
    pub sslkey: Option<String>,
    /// `sslpassword`: passphrase of an encrypted `sslkey` (a secret)
    pub sslpassword: Option<String>,
    /// `sslrootcert`: CA certificates the server certificate is verified against, or
    /// `system`
    pub sslrootcert: Option<String>,
    /// `sslcrl`: certificate revocation list file
    pub sslcrl: Option<String>,
    /// `sslcrldir`: directory of certificate revocation lists
    pub sslcrldir: Option<String>,
    /// `gssencmode`: disable, prefer, require
    pub gssencmode: Option<String>,
    /// `channel_binding`: disable, prefer, require
    pub channel_binding: Option<String>,
    /// `sslnegotiation`: postgres, direct (PostgreSQL 17+)
    pub sslnegotiation: Option<String>,
}

impl SslOptions {
    /// The option names, in the order of a rendered conninfo string.
    pub const NAMES: [&'static str; 10] = [
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

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "sslmode" => &mut self.sslmode,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslpassword" => &mut self.sslpassword,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcrl" => &mut self.sslcrl,
            "sslcrldir" => &mut self.sslcrldir,
            "gssencmode" => &mut self.gssencmode,
            "channel_binding" => &mut self.channel_binding,
            "sslnegotiation" => &mut self.sslnegotiation,
            _ => return None,
        })
    }

    /// Builds the options from `(name, value)` pairs (warden-config's
    /// `PgUser::ssl_options()`); Err names the first unknown option.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SslOptions, String> {
        let mut o = SslOptions::default();
        for (k, v) in pairs {
            *o.slot(k).ok_or_else(|| k.to_string())? = Some(v.to_string());
        }
        Ok(o)
    }

    /// The value of option `name` (one of [`SslOptions::NAMES`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        let v = match name {
            "sslmode" => &self.sslmode,
            "sslcert" => &self.sslcert,
            "sslkey" => &self.sslkey,
            "sslpassword" => &self.sslpassword,
            "sslrootcert" => &self.sslrootcert,
            "sslcrl" => &self.sslcrl,
            "sslcrldir" => &self.sslcrldir,
            "gssencmode" => &self.gssencmode,
            "channel_binding" => &self.channel_binding,
            "sslnegotiation" => &self.sslnegotiation,
            _ => return None,
        };
        v.as_deref()
    }

    /// The options that are set, as `(name, value)` in [`SslOptions::NAMES`] order
    /// (`sslpassword` included: callers decide where it may go).
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        Self::NAMES
            .iter()
            .filter_map(|k| self.get(k).map(|v| (*k, v)))
            .collect()
    }
}

impl fmt::Debug for SslOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_map();
        for (k, v) in self.pairs() {
            d.entry(&k, &if k == "sslpassword" { "<redacted>" } else { v });
        }
        d.finish()
    }
}

/// Everything the library needs to know about the local PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// Member name: `application_name` of the standby and basis of its slot name.
    pub name: String,
    /// Cluster scope, used as `cluster_name`.
    pub scope: String,
    /// PGDATA.
    pub data_dir: PathBuf,
    /// Where postgresql.conf, pg_hba.conf and pg_ident.conf live (usually = data_dir).
    pub config_dir: PathBuf,
    /// Directory of the PostgreSQL binaries; empty = look them up in `PATH`.
    pub bin_dir: PathBuf,
    /// `listen_addresses` (comma separated).
    pub listen_addresses: String,
    /// `port`.
    pub port: u16,
    /// Host other nodes use to reach this one (from `connect_address`).
    pub connect_host: String,
    /// The pgpass file the library writes (mode 0600).
    pub pgpass: PathBuf,
    /// Superuser credentials (local connections, initdb, post_bootstrap).
    pub superuser: Credentials,
    /// Replication credentials (standbys, pg_basebackup).
    pub replication: Credentials,
    /// Dedicated pg_rewind user; None = superuser.
    pub rewind: Option<Credentials>,
    /// Database for local connections and conninfo (`postgres`).
    pub database: String,
    /// Effective GUCs from the configuration (already merged). Protected parameters
    /// missing here get their defaults (see [`effective_parameters`]).
    pub parameters: BTreeMap<String, String>,
    /// When `Some`, pg_hba.conf is rewritten (header + lines) by `write_config` and
    /// before each start.
    pub pg_hba: Option<Vec<String>>,
    /// Local superuser connections go through the unix socket (first absolute dir of
    /// `unix_socket_directories`) instead of TCP.
    pub use_unix_socket: bool,
    /// How long to wait for start/stop/promote (default 60 s).
    pub pg_ctl_timeout: Duration,
    /// Extra pg_basebackup options, already rendered (`--checkpoint=fast`).
    pub basebackup_options: Vec<String>,
    /// `(uid, gid)` every spawned command switches to (tests running as root); None =
    /// run as the current user.
    pub run_as: Option<(u32, u32)>,
    /// A custom bootstrap is running (from the method's command until post_bootstrap
    /// restored the configuration): the configuration files are written for it.
    pub custom_bootstrap: Option<CustomBootstrapMode>,
}

/// How PostgreSQL is configured while a custom bootstrap runs (Patroni's
/// `running_custom_bootstrap`, postgres-management.md §5): pg_hba.conf trusts the
/// superuser and the replication user on the local socket and the local address (the
/// restored roles carry the source's passwords until post_bootstrap sets ours), the
/// recovery block of postgresql.conf holds `bootstrap.<method>.recovery_conf` only,
/// `hot_standby` is off when recovery ends with a promotion, and the configuration is
/// not backed up at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomBootstrapMode {
    /// `recovery_conf` of the method, values as text (`None`: not configured).
    pub recovery_conf: Option<BTreeMap<String, String>>,
    /// `keep_existing_recovery_conf`: the recovery settings the command left (e.g. in
    /// postgresql.auto.conf) stay.
    pub keep_existing_recovery_conf: bool,
}

impl CustomBootstrapMode {
    /// The recovery parameters written to postgresql.conf: `recovery_conf` without
    /// `standby_mode` (it chooses the signal file), `pause_at_recovery_target` turned
    /// into `recovery_target_action` as Patroni does on PostgreSQL 9.5+.
    pub fn recovery_params(&self) -> BTreeMap<String, String> {
        let mut r = self.recovery_conf.clone().unwrap_or_default();
        r.remove("standby_mode");
        if let Some(pause) = r.remove("pause_at_recovery_target") {
            if let Some(b) = parse_pg_bool(&pause) {
                r.entry("recovery_target_action".into())
                    .or_insert_with(|| if b { "pause" } else { "promote" }.into());
            }
        }
        r
    }

    /// `hot_standby` must be off: a recovery that ends in a promotion could fail with
    /// `max_connections` and friends raised above the backup's (Patroni trusts tools
    /// such as pgBackRest that keep their own recovery configuration to want it off too).
    pub fn disables_hot_standby(&self) -> bool {
        if self.keep_existing_recovery_conf {
            return true;
        }
        let Some(rc) = self.recovery_conf.as_ref().filter(|r| !r.is_empty()) else {
            return false;
        };
        let pause = rc
            .get("pause_at_recovery_target")
            .and_then(|v| parse_pg_bool(v));
        let action = rc
            .get("recovery_target_action")
            .map(String::as_str)
            .unwrap_or(if pause == Some(false) {
                "promote"
            } else {
                "pause"
            });
        action == "promote"
    }

    /// `standby_mode` in `recovery_conf` asks for `standby.signal` instead of
    /// `recovery.signal`.
    pub fn standby_mode(&self) -> bool {
        self.recovery_conf
            .as_ref()
            .and_then(|r| r.get("standby_mode"))
            .and_then(|v| parse_pg_bool(v))
            .unwrap_or(false)
    }
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            name: String::new(),
            scope: String::new(),
            data_dir: PathBuf::new(),
            config_dir: PathBuf::new(),
            bin_dir: PathBuf::new(),
            listen_addresses: "127.0.0.1".to_string(),
            port: 5432,
            connect_host: "127.0.0.1".to_string(),
            pgpass: PathBuf::new(),
            superuser: Credentials::new("postgres", None),
            replication: Credentials::new("replicator", None),
            rewind: None,
            database: "postgres".to_string(),
            parameters: BTreeMap::new(),
            pg_hba: None,
            use_unix_socket: false,
            pg_ctl_timeout: Duration::from_secs(60),
            basebackup_options: Vec::new(),
            run_as: None,
            custom_bootstrap: None,
        }
    }
}

/// How to stop the postmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: abort transactions, checkpoint, exit (the default).
    Fast,
    /// SIGQUIT: exit without checkpoint (crash recovery on next start).
    Immediate,
}

/// The member a replica streams from (or a rewind/basebackup source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// host (from its conn_url)
    pub host: String,
    /// port
    pub port: u16,
    /// `primary_slot_name` to use (already converted by [`crate::slot_name_for_member`]).
    pub slot: Option<String>,
}

/// GUCs passed on the postmaster command line, in this order (spec §3).
pub const CMDLINE_GUCS: [&str; 13] = [
    "listen_addresses",
    "port",
    "cluster_name",
    "wal_level",
    "hot_standby",
    "max_connections",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "track_commit_timestamp",
    "max_replication_slots",
    "max_worker_processes",
    "wal_log_hints",
];

/// Recovery parameters (PG 12+ GUCs) that must not live in postgresql.auto.conf and
/// that the `# recovery.conf` block owns.
pub const RECOVERY_GUCS: [&str; 17] = [
    "archive_cleanup_command",
    "pause_at_recovery_target",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "standby_mode",
];

/// Parses a PostgreSQL boolean (`on`, `off`, `true`, `yes`, `1`, unambiguous prefixes).
pub fn parse_pg_bool(v: &str) -> Option<bool> {
    let v = v.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    match v.as_str() {
        "on" | "1" => return Some(true),
        "off" | "0" => return Some(false),
        "of" | "o" => return None,
        _ => {}
    }
    if "true".starts_with(&v) || "yes".starts_with(&v) {
        Some(true)
    } else if "false".starts_with(&v) || "no".starts_with(&v) {
        Some(false)
    } else {
        None
    }
}

/// Parses a size GUC given in MB by default (`128MB`, `1GB`, `2048kB`, `256`) into MB.
fn parse_size_mb(v: &str) -> Option<f64> {
    let v = v.trim();
    let idx = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "MB" => 1.0,
        "kB" => 1.0 / 1024.0,
        "GB" => 1024.0,
        "TB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * factor)
}

fn int_at_least(v: Option<&String>, min: i64) -> Option<String> {
    let n: i64 = v?.trim().parse().ok()?;
    (n >= min).then(|| n.to_string())
}

/// Computes the effective GUCs written to postgresql.conf and passed on the command line.
///
/// * `listen_addresses`, `port`, `cluster_name` always come from the settings;
/// * protected parameters get their defaults when missing or invalid (config.md §6.2;
///   an invalid value is replaced by the default with a warning);
/// * `wal_level = hot_standby` is written as `replica`;
/// * `wal_keep_segments` is translated to `wal_keep_size` (×16MB) and removed — the
///   crate targets PostgreSQL 13+;
/// * on a standby (`controldata` given) `max_connections`, `max_prepared_transactions`,
///   `max_locks_per_transaction`, `max_worker_processes` and `max_wal_senders` are raised
///   to the values recorded in pg_control when those are higher.
pub fn effective_parameters(
    s: &PgSettings,
    controldata: Option<&ControlData>,
) -> BTreeMap<String, String> {
    let mut p = s.parameters.clone();

    if let Some(segs) = p.remove("wal_keep_segments") {
        if !p.contains_key("wal_keep_size") {
            if let Ok(n) = segs.trim().parse::<u64>() {
                p.insert("wal_keep_size".to_string(), format!("{}MB", n * 16));
            }
        }
    }

    let set =
        |p: &mut BTreeMap<String, String>, name: &str, valid: Option<String>, default: &str| {
            let v = match valid {
                Some(v) => v,
                None => {
                    if let Some(bad) = p.get(name) {
                        tracing::warn!(
                            "invalid value {bad:?} for parameter {name}; using default {default}"
                        );
                    }
                    default.to_string()
                }
            };
            p.insert(name.to_string(), v);
        };

    let wal_level = p
        .get("wal_level")
        .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
            "hot_standby" | "replica" => Some("replica".to_string()),
            "logical" => Some("logical".to_string()),
            _ => None,
        });
    set(&mut p, "wal_level", wal_level, "replica");
    let hs = p
        .get("hot_standby")
        .and_then(|v| parse_pg_bool(v))
        .and_then(|b| b.then(|| "on".to_string()));
    set(&mut p, "hot_standby", hs, "on");
    for (name, min, default) in [
        ("max_connections", 25, "100"),
        ("max_wal_senders", 3, "10"),
        ("max_prepared_transactions", 0, "0"),
        ("max_locks_per_transaction", 32, "64"),
        ("max_replication_slots", 4, "10"),
        ("max_worker_processes", 2, "8"),
    ] {
        let v = int_at_least(p.get(name), min);
        set(&mut p, name, v, default);
    }
    for (name, default) in [("track_commit_timestamp", "off"), ("wal_log_hints", "on")] {
        let v = p
            .get(name)
            .and_then(|v| parse_pg_bool(v))
            .map(|b| if b { "on" } else { "off" }.to_string());
        set(&mut p, name, v, default);
    }
    let wks = p
        .get("wal_keep_size")
        .and_then(|v| parse_size_mb(v).and_then(|mb| (mb >= 16.0).then(|| v.trim().to_string())));
    set(&mut p, "wal_keep_size", wks, "128MB");

    p.insert("listen_addresses".to_string(), s.listen_addresses.clone());
    p.insert("port".to_string(), s.port.to_string());
    p.insert("cluster_name".to_string(), s.scope.clone());

    if let Some(cd) = controldata {
        for (guc, key) in [
            ("max_connections", "max_connections setting"),
            ("max_prepared_transactions", "max_prepared_xacts setting"),
            ("max_locks_per_transaction", "max_locks_per_xact setting"),
            ("max_worker_processes", "max_worker_processes setting"),
            ("max_wal_senders", "max_wal_senders setting"),
        ] {
            let Some(cv) = cd.get(key).and_then(|v| v.trim().parse::<i64>().ok()) else {
                continue;
            };
            let cur = p
                .get(guc)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            if cv > cur {
                p.insert(guc.to_string(), cv.to_string());
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_defaults_and_translation() {
        let mut s = PgSettings {
            scope: "batman".into(),
            port: 5433,
            ..PgSettings::default()
        };
        s.parameters
            .insert("wal_level".into(), "hot_standby".into());
        s.parameters.insert("wal_keep_segments".into(), "10".into());
        s.parameters.insert("max_connections".into(), "5".into());
        s.parameters.insert("port".into(), "1".into());
        s.parameters
            .insert("track_commit_timestamp".into(), "true".into());
        s.parameters.insert("work_mem".into(), "8MB".into());
        let p = effective_parameters(&s, None);
        assert_eq!(p["wal_level"], "replica");
        assert_eq!(p["wal_keep_size"], "160MB");
        assert!(!p.contains_key("wal_keep_segments"));
        assert_eq!(p["max_connections"], "100");
        assert_eq!(p["port"], "5433");
        assert_eq!(p["cluster_name"], "batman");
        assert_eq!(p["track_commit_timestamp"], "on");
        assert_eq!(p["wal_log_hints"], "on");
        assert_eq!(p["hot_standby"], "on");
        assert_eq!(p["max_wal_senders"], "10");
        assert_eq!(p["max_replication_slots"], "10");
        assert_eq!(p["max_worker_processes"], "8");
        assert_eq!(p["max_locks_per_transaction"], "64");
        assert_eq!(p["max_prepared_transactions"], "0");
        assert_eq!(p["work_mem"], "8MB");

        let mut cd = BTreeMap::new();
        cd.insert("max_connections setting".to_string(), "200".to_string());
        cd.insert("max_wal_senders setting".to_string(), "5".to_string());
        let p = effective_parameters(&s, Some(&ControlData(cd)));
        assert_eq!(p["max_connections"], "200");
        assert_eq!(p["max_wal_senders"], "10");
    }

    #[test]
    fn wal_keep_size_validation() {
        let mut s = PgSettings::default();
        s.parameters.insert("wal_keep_size".into(), "8MB".into());
        assert_eq!(effective_parameters(&s, None)["wal_keep_size"], "128MB");
        s.parameters.insert("wal_keep_size".into(), "1GB".into());
        assert_eq!(effective_parameters(&s, None)["wal_keep_size"], "1GB");
        s.parameters.insert("wal_keep_size".into(), "64".into());
        assert_eq!(effective_parameters(&s, None)["wal_keep_size"], "64");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let mut c = Credentials::new("rep", Some("pw-secret"));
        c.ssl = SslOptions::from_pairs([
            ("sslmode", "verify-ca"),
            ("sslpassword", "key-secret"),
            ("sslcert", "/c.crt"),
        ])
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("verify-ca") && d.contains("/c.crt"), "{d}");
        assert_eq!(
            c.ssl.pairs(),
            [
                ("sslmode", "verify-ca"),
                ("sslcert", "/c.crt"),
                ("sslpassword", "key-secret")
            ]
        );
        assert_eq!(
            SslOptions::from_pairs([("sslfoo", "x")]).unwrap_err(),
            "sslfoo"
        );
    }

    #[test]
    fn bools() {
        assert_eq!(parse_pg_bool("on"), Some(true));
        assert_eq!(parse_pg_bool("Off"), Some(false));
        assert_eq!(parse_pg_bool("t"), Some(true));
        assert_eq!(parse_pg_bool("n"), Some(false));
        assert_eq!(parse_pg_bool("o"), None);
        assert_eq!(parse_pg_bool("maybe"), None);
    }
}
