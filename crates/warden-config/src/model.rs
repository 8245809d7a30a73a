//! Typed local configuration and its construction from the merged YAML/JSON document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::env::AUTH_ALLOWED_PARAMETERS;
use crate::util::{
    parse_duration_secs, scalar_text, split_host_port, truthy, unquote, value_as_bool, value_as_int,
};
use crate::yaml::describe;
use crate::{ConfigError, ConfigProblem, Loader, RESERVED_MEMBER_NAME, UNSUPPORTED_DCS_SECTIONS};

mod pgbouncer;
pub use pgbouncer::{
    conninfo_pairs, mask_password, PgBouncerSettings, DEFAULT_PAUSE_TIMEOUT_MS,
    DEFAULT_RESUME_TIMEOUT_MS,
};

type Obj = Map<String, Value>;

/// The local configuration (file/directory + environment), typed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Cluster name (`scope`), required.
    pub scope: String,
    /// DCS key prefix (`namespace`), default `/service`.
    pub namespace: String,
    /// Member name (`name`), required.
    pub name: String,
    /// `restapi` section.
    pub restapi: RestApi,
    /// `ctl` section.
    pub ctl: Ctl,
    /// `etcd3` section (the only supported DCS).
    pub etcd3: Etcd3,
    /// `bootstrap` section, when present.
    pub bootstrap: Option<Bootstrap>,
    /// `postgresql` section.
    pub postgresql: Postgresql,
    /// `tags` section.
    pub tags: Tags,
    /// `watchdog` section.
    pub watchdog: Watchdog,
    /// `log` section.
    pub log: Log,
    /// `warden` section: settings only Warden reads.
    pub warden: WardenSection,
    /// Non-fatal findings: ignored sections/keys, unparseable env values, deprecated keys…
    pub warnings: Vec<String>,
    /// Environment variable names that were recognised (remove them from the agent's
    /// environment so that callbacks do not see them, §13).
    pub consumed_env: Vec<String>,
    /// The merged local document (after env overlay and legacy-shape normalisation).
    pub raw: Value,
}

impl Config {
    /// Environment variable names that were recognised (see [`Config::consumed_env`]).
    pub fn consumed_env_vars(&self) -> &[String] {
        &self.consumed_env
    }

    /// DCS key prefix of this cluster: `/<namespace>/<scope>` with repeated `/` collapsed,
    /// e.g. `/service/batman` (Patroni's `_base_path`).
    pub fn dcs_base_path(&self) -> String {
        let joined = format!("/{}/{}", self.namespace, self.scope);
        let mut out = String::with_capacity(joined.len());
        for c in joined.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    /// Credentials for calling other members' REST APIs: `ctl.authentication`, falling back to
    /// `restapi.authentication` (§5).
    pub fn ctl_auth(&self) -> Option<&Auth> {
        self.ctl
            .authentication
            .as_ref()
            .or(self.restapi.authentication.as_ref())
    }

    /// CA bundle for calling REST APIs: `ctl.cacert`, falling back to `restapi.cafile` (§5).
    pub fn ctl_cacert(&self) -> Option<&str> {
        self.ctl
            .cacert
            .as_deref()
            .or(self.restapi.cafile.as_deref())
    }
}

/// Basic-auth credentials (`authentication: {username, password}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl Auth {
    /// Patroni's internal `auth` form: `"user:password"`.
    pub fn user_pass(&self) -> String {
        format!("{}:{}", self.username, self.password)
    }
}

/// `restapi` section (§4).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestApi {
    /// `host:port` to bind (`0.0.0.0:8008`, `*:8008`, `:8008`), required.
    pub listen: String,
    /// `host:port` published as `api_url`, required.
    pub connect_address: String,
    /// Basic auth for unsafe endpoints.
    pub authentication: Option<Auth>,
    /// TLS certificate (TLS is on when set).
    pub certfile: Option<String>,
    /// TLS key.
    pub keyfile: Option<String>,
    /// Password of the TLS key.
    pub keyfile_password: Option<String>,
    /// CA file for client certificates.
    pub cafile: Option<String>,
    /// TLS cipher list.
    pub ciphers: Option<String>,
    /// `none`, `optional` or `required`.
    pub verify_client: Option<String>,
    /// Hosts/IPs/CIDRs allowed to call unsafe endpoints.
    pub allowlist: Vec<String>,
    /// Also allow member API hosts.
    pub allowlist_include_members: bool,
    /// Extra headers on HTTP responses.
    pub http_extra_headers: BTreeMap<String, String>,
    /// Extra headers on HTTPS responses.
    pub https_extra_headers: BTreeMap<String, String>,
    /// Listen backlog (default 5).
    pub request_queue_size: u64,
    /// `original`, `productonly` or `minimal` (lower-cased; default `original`).
    pub server_tokens: String,
}

impl RestApi {
    /// `listen` split into (host, port); host may be empty or `*`.
    pub fn listen_host_port(&self) -> Option<(String, u16)> {
        split_host_port(&self.listen, None)
    }
}

/// `ctl` section (§5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ctl {
    /// Basic auth used when calling REST APIs (see [`Config::ctl_auth`] for the fallback).
    pub authentication: Option<Auth>,
    /// Skip server certificate verification.
    pub insecure: bool,
    /// CA bundle (see [`Config::ctl_cacert`] for the fallback).
    pub cacert: Option<String>,
    /// Client certificate.
    pub certfile: Option<String>,
    /// Client key.
    pub keyfile: Option<String>,
    /// Password of the client key.
    pub keyfile_password: Option<String>,
}

/// `etcd3` section (§9).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Etcd3 {
    /// Endpoints as `host:port` (IPv6 hosts in brackets), from `url`/`proxy`, `hosts` (list or
    /// comma string) or `host`, in Patroni's precedence; default port 2379 (or `port`).
    /// Empty when only `srv` is given.
    pub hosts: Vec<String>,
    /// `http` (default) or `https` (from the URL scheme when `url`/`proxy` is used).
    pub protocol: String,
    /// etcd user (also from `url`).
    pub username: Option<String>,
    /// etcd password (also from `url`).
    pub password: Option<String>,
    /// CA file.
    pub cacert: Option<String>,
    /// Client certificate.
    pub cert: Option<String>,
    /// Client key.
    pub key: Option<String>,
    /// Password of the client key.
    pub key_password: Option<String>,
    /// Treat `hosts` as proxies (no member discovery); true when `proxy` is set.
    pub use_proxies: bool,
    /// DNS SRV domain (`srv`, aliases `discovery_srv`, `srv_domain`).
    pub srv: Option<String>,
    /// SRV name suffix.
    pub srv_suffix: Option<String>,
    /// The section as given.
    pub raw: Value,
}

/// `bootstrap` section (§8).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bootstrap {
    /// Initial dynamic configuration (a JSON object; `{}` when absent).
    pub dcs: Value,
    /// `initdb` (default) or the name of a custom bootstrap method section.
    pub method: String,
    /// Rendered initdb options (`--data-checksums`, `--encoding=UTF8`).
    pub initdb: Vec<String>,
    /// Lines appended to the initdb-generated pg_hba.conf.
    pub pg_hba: Vec<String>,
    /// Command run after the first start (`post_bootstrap`, alias `post_init`).
    pub post_bootstrap: Option<String>,
    /// The custom bootstrap method's section when `method` is not `initdb`.
    pub custom: Option<CustomBootstrap>,
    /// `bootstrap.users` is present (removed in Patroni 4.0: the caller should log an error).
    pub users_present: bool,
    /// The section as given.
    pub raw: Value,
}

/// A custom bootstrap method (`bootstrap.method: <name>` with `bootstrap.<name>`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomBootstrap {
    /// The method name.
    pub name: String,
    /// The section verbatim, keys in file order (`command`, `no_params`,
    /// `keep_existing_recovery_conf`, `recovery_conf`, and extra keys passed to the
    /// command as `--key=value`).
    pub options: Map<String, Value>,
    /// `recovery_conf`: recovery settings written after the command ran.
    pub recovery_conf: Option<Map<String, Value>>,
    /// `keep_existing_recovery_conf` (Python truthiness): leave the recovery
    /// configuration the command wrote (pgBackRest, Barman) in place.
    pub keep_existing_recovery_conf: bool,
}

/// Connection settings of a PostgreSQL user (`postgresql.authentication.<user>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgUser {
    /// Role name.
    pub username: String,
    /// Password (none ⇒ rely on other auth).
    pub password: Option<String>,
    /// libpq `sslmode`.
    pub sslmode: Option<String>,
    /// libpq `sslcert`.
    pub sslcert: Option<String>,
    /// libpq `sslkey`.
    pub sslkey: Option<String>,
    /// libpq `sslpassword`.
    pub sslpassword: Option<String>,
    /// libpq `sslrootcert`.
    pub sslrootcert: Option<String>,
    /// libpq `sslcrl`.
    pub sslcrl: Option<String>,
    /// libpq `sslcrldir`.
    pub sslcrldir: Option<String>,
    /// libpq `gssencmode`.
    pub gssencmode: Option<String>,
    /// libpq `channel_binding`.
    pub channel_binding: Option<String>,
    /// libpq `sslnegotiation`.
    pub sslnegotiation: Option<String>,
}

impl PgUser {
    /// The libpq SSL/GSS options that are set, as (name, value) pairs in the canonical order.
    pub fn ssl_options(&self) -> Vec<(&'static str, &str)> {
        [
            ("sslmode", &self.sslmode),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
            ("sslpassword", &self.sslpassword),
            ("sslrootcert", &self.sslrootcert),
            ("sslcrl", &self.sslcrl),
            ("sslcrldir", &self.sslcrldir),
            ("gssencmode", &self.gssencmode),
            ("channel_binding", &self.channel_binding),
            ("sslnegotiation", &self.sslnegotiation),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// `postgresql.authentication`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authentication {
    /// Superuser (required).
    pub superuser: PgUser,
    /// Replication user (required).
    pub replication: PgUser,
    /// Dedicated pg_rewind user (PG ≥ 11); `None` ⇒ the superuser is used.
    pub rewind: Option<PgUser>,
}

impl Authentication {
    /// The user pg_rewind connects as: `rewind`, else the superuser.
    pub fn rewind_user(&self) -> &PgUser {
        self.rewind.as_ref().unwrap_or(&self.superuser)
    }
}

/// `postgresql` section (§6.1), local layer only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Postgresql {
    /// `host[,host2…]:port` (port defaults to 5432 when omitted).
    pub listen: String,
    /// `host:port` published in `conn_url`.
    pub connect_address: String,
    /// Published as `proxy_url`.
    pub proxy_address: Option<String>,
    /// Data directory (required).
    pub data_dir: PathBuf,
    /// Where the configuration files live (`None` ⇒ `data_dir`).
    pub config_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL binaries (empty ⇒ use `PATH`).
    pub bin_dir: PathBuf,
    /// Custom binary names (`bin_name.pg_ctl` …).
    pub bin_name: BTreeMap<String, String>,
    /// pgpass file Warden writes (default `$HOME/pgpass`, no dot).
    pub pgpass: PathBuf,
    /// Database used in `conn_url` and local connections (default `postgres`).
    pub database: String,
    /// Users.
    pub authentication: Authentication,
    /// Local GUCs (protected ones are ignored when merging, see
    /// [`crate::effective_postgresql_parameters`]).
    pub parameters: Map<String, Value>,
    /// Full pg_hba.conf content, when set locally.
    pub pg_hba: Option<Vec<String>>,
    /// Full pg_ident.conf content, when set locally.
    pub pg_ident: Option<Vec<String>>,
    /// Superuser local connections via unix socket.
    pub use_unix_socket: bool,
    /// Replication local connections via unix socket.
    pub use_unix_socket_repl: bool,
    /// Local `use_pg_rewind` (overrides the dynamic value when set).
    pub use_pg_rewind: Option<bool>,
    /// `callbacks.{on_start,on_stop,on_restart,on_reload,on_role_change}` command lines.
    pub callbacks: BTreeMap<String, String>,
    /// Replica creation methods in order (default `[basebackup]`; legacy `create_replica_method`).
    pub create_replica_methods: Vec<String>,
    /// The section `postgresql.<method>` of each custom method named in
    /// `create_replica_methods` that has one (`command`, `keep_data`, `no_leader`,
    /// `no_params` and any other key), kept verbatim with its keys in file order.
    pub replica_method_sections: BTreeMap<String, Map<String, Value>>,
    /// Rendered pg_basebackup options (`--opt` / `--opt=val`); forbidden options are dropped
    /// with a warning, as Patroni does.
    pub basebackup: Vec<String>,
    /// Rendered extra pg_rewind options (`postgresql.rewind`); forbidden ones dropped with a warning.
    pub rewind: Vec<String>,
    /// Seconds to wait for pg_ctl start/stop (default 60).
    pub pg_ctl_timeout: u64,
    /// Remove the data directory when pg_rewind fails.
    pub remove_data_directory_on_rewind_failure: bool,
    /// Remove the data directory when timelines diverged and rewind is impossible.
    pub remove_data_directory_on_diverged_timelines: bool,
    /// Fencing command run before promote.
    pub pre_promote: Option<String>,
    /// Command run before stopping PostgreSQL.
    pub before_stop: Option<String>,
    /// Extra recovery settings.
    pub recovery_conf: Map<String, Value>,
    /// `krbsrvname` for `primary_conninfo`.
    pub krbsrvname: Option<String>,
    /// The whole section (after legacy normalisation), for merging with dynamic config.
    pub raw: Value,
}

impl Postgresql {
    /// `listen` split into (`listen_addresses`, port); port defaults to 5432.
    pub fn listen_addresses_port(&self) -> Option<(String, u16)> {
        split_host_port(&self.listen, Some(5432))
    }

    /// `connect_address` split into (host, port).
    pub fn connect_host_port(&self) -> Option<(String, u16)> {
        split_host_port(&self.connect_address, None)
    }

    /// The directory holding postgresql.conf & co: `config_dir`, else `data_dir`.
    pub fn effective_config_dir(&self) -> &Path {
        self.config_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Path of a PostgreSQL binary: `bin_dir` joined with `bin_name.<name>` or `name`.
    pub fn binary(&self, name: &str) -> PathBuf {
        let file = self.bin_name.get(name).map(String::as_str).unwrap_or(name);
        self.bin_dir.join(file)
    }
}

/// `tags` section (§11).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags {
    /// Never take the leader lock.
    pub nofailover: bool,
    /// Failover priority (≥ 0; 0 ⇒ like nofailover).
    pub failover_priority: Option<i64>,
    /// Preferred basebackup source.
    pub clonefrom: bool,
    /// `/replica` health check returns 503.
    pub noloadbalance: bool,
    /// Cascade from this member.
    pub replicatefrom: Option<String>,
    /// Never a synchronous standby.
    pub nosync: bool,
    /// Sync standby priority (≥ 0; 0 ⇒ like nosync).
    pub sync_priority: Option<i64>,
    /// No streaming replication.
    pub nostream: bool,
    /// All other tags, in file order.
    pub custom: Map<String, Value>,
    /// All tags as configured, in file order.
    pub raw_order: Map<String, Value>,
}

const BOOL_TAGS: &[&str] = &[
    "clonefrom",
    "nofailover",
    "noloadbalance",
    "nosync",
    "nostream",
];

impl Tags {
    /// Tags published in the member key (dcs.md §3.2): the boolean built-ins are included only
    /// when truthy, except `nofailover` is kept (even false) when `failover_priority` is set and
    /// `nosync` kept when `sync_priority` is set; every other tag always; file order; values as
    /// configured.
    pub fn to_member_tags(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in &self.raw_order {
            let keep = if BOOL_TAGS.contains(&k.as_str()) {
                let on = match k.as_str() {
                    "clonefrom" => self.clonefrom,
                    "nofailover" => self.nofailover,
                    "noloadbalance" => self.noloadbalance,
                    "nosync" => self.nosync,
                    _ => self.nostream,
                };
                on || (k == "nofailover" && self.raw_order.contains_key("failover_priority"))
                    || (k == "nosync" && self.raw_order.contains_key("sync_priority"))
            } else {
                true
            };
            if keep {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    fn explicitly_set(&self, key: &str) -> bool {
        self.raw_order
            .get(key)
            .map(|v| !v.is_null())
            .unwrap_or(false)
    }

    /// Whether this node must never take the lock: `nofailover` when it is set (it wins over
    /// `failover_priority`), otherwise `failover_priority == 0`.
    pub fn effective_nofailover(&self) -> bool {
        if self.explicitly_set("nofailover") {
            self.nofailover
        } else {
            matches!(self.failover_priority, Some(p) if p <= 0)
        }
    }

    /// Whether this node must never be a sync standby: `nosync` when set, else `sync_priority == 0`.
    pub fn effective_nosync(&self) -> bool {
        if self.explicitly_set("nosync") {
            self.nosync
        } else {
            matches!(self.sync_priority, Some(p) if p <= 0)
        }
    }

    /// Effective failover priority: 0 when [`Tags::effective_nofailover`], else the configured
    /// value (default 1).
    pub fn effective_failover_priority(&self) -> i64 {
        if self.effective_nofailover() {
            0
        } else {
            self.failover_priority.unwrap_or(1).max(1)
        }
    }
}

/// Watchdog mode (§10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogMode {
    /// No watchdog.
    Off,
    /// Use the watchdog if available (default).
    #[default]
    Automatic,
    /// Refuse to become leader without a working watchdog.
    Required,
}

/// Watchdog driver (`watchdog.driver`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WatchdogDriver {
    /// The Linux watchdog device API (`default`).
    #[default]
    Linux,
    /// Patroni's test harness driver (`testing`): the device is a FIFO and the timeout
    /// ioctls become writes (`Ctimeout=<n>\n`).
    Testing,
    /// Any other name: no watchdog implementation (Patroni's `NullWatchdog`).
    Unsupported(String),
}

/// `watchdog` section (§10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// Mode (default automatic).
    pub mode: WatchdogMode,
    /// Device (default `/dev/watchdog`).
    pub device: PathBuf,
    /// Seconds before lease expiry (default 5; -1 ⇒ timeout = ttl/2).
    pub safety_margin: i64,
    /// Driver (default `default`, the Linux device API).
    pub driver: WatchdogDriver,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin: 5,
            driver: WatchdogDriver::Linux,
        }
    }
}

/// Patroni's lowest `ttl` (seconds), the default of [`WardenSection::min_ttl`].
pub const PATRONI_MIN_TTL: u64 = 20;

/// The lowest `warden.min_ttl` accepted: `ttl` 4 with `loop_wait` 1 and `retry_timeout`
/// 1, the shortest integer timing for which a leader's next renewal (a `loop_wait` and
/// a slow cluster read) still lands a second before the fence guard's deadline, `ttl`
/// minus the 1 s fence margin (`warden_core::ha::timing_fits_fence`). etcd can only
/// expire the lease later than the agent counts, never earlier, so the margin only has
/// to cover the guard's poll and PostgreSQL's stop.
pub const MIN_TTL_FLOOR: u64 = 4;

/// The `warden.min_ttl` from which Patroni's `retry_timeout` minimum of 3 s applies.
/// Below it (a lease of 4–7 s, which needs shorter DCS timeouts to fit) the minimum is
/// 1 s: see [`retry_timeout_floor`].
pub const PATRONI_RETRY_FLOOR_FROM_TTL: u64 = 8;

/// The lowest `retry_timeout` an agent with `warden.min_ttl` = `min_ttl` accepts:
/// Patroni's 3 s, or 1 s for the leases shorter than 8 s that only Warden allows (a
/// 4 s lease leaves room for a 1 s DCS timeout only).
pub fn retry_timeout_floor(min_ttl: u64) -> u64 {
    if min_ttl < PATRONI_RETRY_FLOOR_FROM_TTL {
        1
    } else {
        3
    }
}

/// `warden` section: settings only Warden reads (Patroni ignores unknown sections, so a
/// shared `patroni.yml` keeps working for both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WardenSection {
    /// Lowest dynamic `ttl` this agent uses (default [`PATRONI_MIN_TTL`], down to
    /// [`MIN_TTL_FLOOR`]; below 8 `retry_timeout` may go down to 1 s, see
    /// [`retry_timeout_floor`]). Patroni raises any `ttl` below 20 to 20, because without a
    /// watchdog a stuck primary could keep writing after its lock expired. Every Warden
    /// primary has an external fence guard that stops PostgreSQL before its lock can
    /// expire, so a shorter lock (and a faster failover) is safe when the operator opts
    /// in. Patroni members of the same cluster still raise it to 20 for themselves.
    pub min_ttl: u64,
    /// `warden.pgbouncer`: the PgBouncers a planned switchover pauses and resumes.
    pub pgbouncer: Option<PgBouncerSettings>,
}

impl Default for WardenSection {
    fn default() -> Self {
        WardenSection {
            min_ttl: PATRONI_MIN_TTL,
            pgbouncer: None,
        }
    }
}

/// `log` section (§3).
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// `plain` (default) or `json`.
    pub type_: String,
    /// Level, upper-cased (default `INFO`).
    pub level: String,
    /// `DEBUG` or `ERROR` (default `ERROR`).
    pub traceback_level: String,
    /// Python logging format string (a list/map format for json stays in `raw`).
    pub format: Option<String>,
    /// strftime date format.
    pub dateformat: Option<String>,
    /// Log directory (`None` ⇒ stderr).
    pub dir: Option<PathBuf>,
    /// File permissions (e.g. `0644` → 420).
    pub mode: Option<u32>,
    /// Rotated files kept (default 4).
    pub file_num: u64,
    /// Bytes before rotation (default 25000000).
    pub file_size: u64,
    /// In-memory queue size (default 1000).
    pub max_queue_size: u64,
    /// Per-module levels.
    pub loggers: BTreeMap<String, String>,
    /// Suppress identical consecutive per-loop messages.
    pub deduplicate_heartbeat_logs: bool,
    /// The section as given.
    pub raw: Value,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            type_: "plain".to_string(),
            level: "INFO".to_string(),
            traceback_level: "ERROR".to_string(),
            format: None,
            dateformat: None,
            dir: None,
            mode: None,
            file_num: 4,
            file_size: 25_000_000,
            max_queue_size: 1000,
            loggers: BTreeMap::new(),
            deduplicate_heartbeat_logs: false,
            raw: Value::Null,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// extraction helpers

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The object under `key`, if it is one (no type error: used only to build hints).
fn obj_at<'a>(m: &'a Obj, key: &str) -> Option<&'a Obj> {
    match present(m, key) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// Keys of Patroni's `etcd:` section that say where etcd is, in the order they are quoted
/// in the hint; `etcd3:` accepts every one of them with the same meaning.
const ETCD_ENDPOINT_KEYS: &[&str] = &["host", "hosts", "url", "proxy", "srv", "port"];

/// What to do instead of an etcd v2 `etcd:` section (`section`, when it is a mapping),
/// quoting the user's own endpoint keys so the fix can be copied. `from_env`: the section
/// came from `PATRONI_ETCD_*` variables; `has_etcd3`: an `etcd3:` section exists too
/// (Patroni would pick `etcd:` then, so it is refused rather than ignored).
fn etcd_v2_advice(section: Option<&Obj>, from_env: bool, has_etcd3: bool) -> String {
    if has_etcd3 {
        return "remove the `etcd:` section and keep the `etcd3:` one".to_string();
    }
    let endpoints: Vec<(&str, String)> = ETCD_ENDPOINT_KEYS
        .iter()
        .filter_map(|k| Some((*k, hint_value(section?.get(*k)?)?)))
        .collect();
    if from_env {
        let example: Vec<String> = endpoints
            .iter()
            .map(|(k, v)| format!("PATRONI_ETCD3_{}={v}", k.to_ascii_uppercase()))
            .collect();
        let mut advice = "use PATRONI_ETCD3_* variables with the same values".to_string();
        if !example.is_empty() {
            advice.push_str(&format!(" ({})", example.join(" ")));
        }
        return advice;
    }
    if endpoints.is_empty() {
        return "use an `etcd3:` section with the same keys".to_string();
    }
    let example: Vec<String> = endpoints
        .iter()
        .map(|(k, v)| format!("{k}: {}", yaml_flow_scalar(v)))
        .collect();
    format!(
        "use an `etcd3:` section with the same hosts (etcd3: {{{}}})",
        example.join(", ")
    )
}

/// A section value as text for a hint: lists comma-joined, and a password in a URL masked
/// because configuration errors end up in logs.
fn hint_value(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    Some(mask_url_password(&text))
}

/// `http://user:secret@h:2379` → `http://user:***@h:2379`; anything else unchanged.
fn mask_url_password(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return s.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => s.to_string(),
    }
}

/// `s` as a scalar inside a YAML flow mapping: quoted when a flow indicator (`,` `[` `{`
/// ...) or `: ` would otherwise split it, e.g. a comma-separated `hosts` string.
fn yaml_flow_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| ",[]{}".contains(c))
        && !s.starts_with(|c: char| "!&*?|>'\"%@`#-".contains(c) || c.is_whitespace())
        && !s.ends_with(|c: char| c == ':' || c.is_whitespace());
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn present<'a>(m: &'a Obj, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

impl Loader {
    fn wrong(&mut self, key: String, expected: &str, v: &Value) {
        self.errors.push(ConfigError::WrongType {
            key,
            expected: expected.to_string(),
            got: describe(v),
        });
    }

    fn invalid(&mut self, key: String, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            key,
            message: message.into(),
        });
    }

    fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            path,
            message: message.into(),
        });
    }

    fn obj<'a>(&mut self, m: &'a Obj, key: &str, prefix: &str) -> Option<&'a Obj> {
        match present(m, key)? {
            Value::Object(o) => Some(o),
            other => {
                self.wrong(join(prefix, key), "a mapping", other);
                None
            }
        }
    }

    fn str_(&mut self, m: &Obj, key: &str, prefix: &str) -> Option<String> {
        match present(m, key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.wrong(join(prefix, key), "a string", other);
                None
            }
        }
    }

    fn req_str(&mut self, m: &Obj, key: &str, prefix: &str) -> String {
        match present(m, key) {
            None => {
                self.errors.push(ConfigError::Missing {
                    key: join(prefix, key),
                });
                String::new()
            }
            Some(_) => match self.str_(m, key, prefix) {
                Some(s) if s.trim().is_empty() => {
                    self.errors.push(ConfigError::Missing {
                        key: join(prefix, key),
                    });
                    String::new()
                }
                Some(s) => s,
                None => String::new(),
            },
        }
    }

    fn bool_(&mut self, m: &Obj, key: &str, prefix: &str) -> Option<bool> {
        let v = present(m, key)?;
        let b = value_as_bool(v);
        if b.is_none() {
            self.wrong(join(prefix, key), "a boolean", v);
        }
        b
    }

    fn int(&mut self, m: &Obj, key: &str, prefix: &str) -> Option<i64> {
        let v = present(m, key)?;
        let i = match v {
            Value::Bool(_) => None,
            _ => value_as_int(v),
        };
        if i.is_none() {
            self.wrong(join(prefix, key), "an integer", v);
        }
        i
    }

    fn uint(&mut self, m: &Obj, key: &str, prefix: &str) -> Option<u64> {
        let i = self.int(m, key, prefix)?;
        if i < 0 {
            self.invalid(join(prefix, key), format!("must not be negative, got {i}"));
            return None;
        }
        Some(i as u64)
    }

    fn str_list(&mut self, m: &Obj, key: &str, prefix: &str) -> Option<Vec<String>> {
        let v = present(m, key)?;
        let path = join(prefix, key);
        match v {
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, item) in a.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(n) => out.push(n.to_string()),
                        other => {
                            self.wrong(format!("{path}[{i}]"), "a string", other);
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong(path, "a list of strings", other);
                None
            }
        }
    }

    fn str_map(&mut self, m: &Obj, key: &str, prefix: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(o) = self.obj(m, key, prefix) else {
            return out;
        };
        let path = join(prefix, key);
        for (k, v) in o {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Number(_) | Value::Bool(_) => {
                    out.insert(k.clone(), scalar_text(v).unwrap_or_default());
                }
                other => self.wrong(join(&path, k), "a string", other),
            }
        }
        out
    }

    fn map_clone(&mut self, m: &Obj, key: &str, prefix: &str) -> Map<String, Value> {
        self.obj(m, key, prefix).cloned().unwrap_or_default()
    }

    fn auth(&mut self, m: &Obj, prefix: &str) -> Option<Auth> {
        let a = self.obj(m, "authentication", prefix)?;
        let p = join(prefix, "authentication");
        let username = self.req_str(a, "username", &p);
        let password = self.req_str(a, "password", &p);
        Some(Auth { username, password })
    }
}

// ---------------------------------------------------------------------------------------------
// sections

const KNOWN_TOP: &[&str] = &[
    "name",
    "scope",
    "namespace",
    "restapi",
    "ctl",
    "etcd3",
    "bootstrap",
    "postgresql",
    "tags",
    "watchdog",
    "log",
    "citus",
    "thread_pool_size",
    "thread_stack_size",
    "warden",
];

const DYNAMIC_ONLY_TOP: &[&str] = &[
    "ttl",
    "loop_wait",
    "retry_timeout",
    "standby_cluster",
    "maximum_lag_on_failover",
    "maximum_lag_on_syncnode",
    "max_timelines_history",
    "primary_start_timeout",
    "master_start_timeout",
    "primary_stop_timeout",
    "master_stop_timeout",
    "primary_race_backoff",
    "check_timeline",
    "synchronous_mode",
    "synchronous_mode_strict",
    "synchronous_node_count",
    "failsafe_mode",
    "pause",
    "member_slots_ttl",
    "slots",
    "permanent_slots",
    "permanent_replication_slots",
    "ignore_slots",
];

fn normalise_legacy(doc: &mut Obj, ld: &mut Loader) {
    let name_missing = present(doc, "name").is_none();
    let Some(Value::Object(pg)) = doc.get_mut("postgresql") else {
        return;
    };
    let pg_name = if name_missing {
        present(pg, "name").cloned()
    } else {
        None
    };
    let has_auth = present(pg, "authentication").is_some();
    if !has_auth {
        let mut auth = Map::new();
        for u in ["replication", "superuser"] {
            if let Some(v) = present(pg, u) {
                auth.insert(u.to_string(), v.clone());
            }
        }
        if let Some(v) = present(pg, "pg_rewind").cloned() {
            pg.insert("use_pg_rewind".into(), Value::Bool(true));
            if !auth.contains_key("superuser") {
                auth.insert("superuser".into(), v);
            }
        }
        if !auth.is_empty() {
            ld.warnings.push(
                "postgresql: legacy replication/superuser keys moved into postgresql.authentication"
                    .to_string(),
            );
            pg.insert("authentication".into(), Value::Object(auth));
        }
    } else if let Some(Value::Object(auth)) = pg.get("authentication").cloned() {
        // authentication present (e.g. created by PATRONI_* variables) but incomplete:
        // fill the missing users from the legacy keys
        let mut auth = auth;
        let mut changed = false;
        for u in ["replication", "superuser"] {
            if present(&auth, u).is_none() {
                if let Some(v) = present(pg, u) {
                    auth.insert(u.to_string(), v.clone());
                    changed = true;
                }
            }
        }
        if present(&auth, "superuser").is_none() {
            if let Some(v) = present(pg, "pg_rewind") {
                auth.insert("superuser".into(), v.clone());
                changed = true;
            }
        }
        if changed {
            pg.insert("authentication".into(), Value::Object(auth));
        }
    }
    if let Some(n) = pg_name {
        doc.insert("name".into(), n);
    }
}

pub(crate) fn build_config(
    mut doc: Obj,
    ld: &mut Loader,
    home: Option<&str>,
    env_sections: &BTreeSet<String>,
) -> Result<Config, ConfigError> {
    normalise_legacy(&mut doc, ld);

    // DCS sections first: the most useful error for a Patroni config using another DCS
    let has_etcd3 = present(&doc, "etcd3").is_some();
    for s in UNSUPPORTED_DCS_SECTIONS {
        if present(&doc, s).is_some() {
            if env_sections.contains(*s) && has_etcd3 {
                ld.warnings.push(format!(
                    "section '{s}' created by PATRONI_{}_* variables ignored: Warden supports etcd3 only",
                    s.to_ascii_uppercase()
                ));
            } else if *s == "etcd" {
                let from_env = env_sections.contains(*s);
                ld.errors.push(ConfigError::EtcdV2 {
                    advice: etcd_v2_advice(obj_at(&doc, s), from_env, has_etcd3),
                });
            } else {
                ld.errors.push(ConfigError::UnsupportedDcs {
                    section: s.to_string(),
                });
            }
        }
    }
    // The etcd v2 advice already says to write an etcd3 section: a second problem saying it
    // is missing would only repeat it.
    if !has_etcd3 && present(&doc, "etcd").is_none() {
        ld.errors.push(ConfigError::MissingDcs);
    }

    for k in doc.keys() {
        if KNOWN_TOP.contains(&k.as_str()) || UNSUPPORTED_DCS_SECTIONS.contains(&k.as_str()) {
            continue;
        }
        if DYNAMIC_ONLY_TOP.contains(&k.as_str()) {
            ld.warnings.push(format!(
                "{k}: dynamic-only setting ignored in the local configuration (set it in bootstrap.dcs or with patronictl edit-config)"
            ));
        } else {
            ld.warnings.push(format!("unknown section '{k}' ignored"));
        }
    }
    if present(&doc, "citus").is_some() {
        ld.warnings
            .push("citus: Citus support is not implemented by Warden, section ignored".to_string());
    }

    let name = ld.req_str(&doc, "name", "");
    if name == RESERVED_MEMBER_NAME {
        ld.invalid("name".into(), format!("'{name}' is reserved"));
    }
    let scope = ld.req_str(&doc, "scope", "");
    let namespace = ld
        .str_(&doc, "namespace", "")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/service".to_string());

    let empty = Map::new();
    let restapi = {
        let m = match present(&doc, "restapi") {
            None => {
                ld.errors.push(ConfigError::Missing {
                    key: "restapi".into(),
                });
                None
            }
            Some(_) => ld.obj(&doc, "restapi", ""),
        };
        parse_restapi(ld, m.unwrap_or(&empty))
    };
    let ctl = {
        let m = ld.obj(&doc, "ctl", "").unwrap_or(&empty);
        Ctl {
            authentication: ld.auth(m, "ctl"),
            insecure: ld.bool_(m, "insecure", "ctl").unwrap_or(false),
            cacert: ld.str_(m, "cacert", "ctl"),
            certfile: ld.str_(m, "certfile", "ctl"),
            keyfile: ld.str_(m, "keyfile", "ctl"),
            keyfile_password: ld.str_(m, "keyfile_password", "ctl"),
        }
    };
    let etcd3 = match ld.obj(&doc, "etcd3", "") {
        Some(m) => parse_etcd3(ld, m),
        None => Etcd3::default(),
    };
    // Before `bootstrap`: its `ttl` is checked against `warden.min_ttl`.
    let m = ld.obj(&doc, "warden", "").unwrap_or(&empty);
    let warden = parse_warden(ld, m);
    ld.min_ttl = Some(warden.min_ttl);
    let bootstrap = ld
        .obj(&doc, "bootstrap", "")
        .map(|m| parse_bootstrap(ld, m));
    let postgresql = {
        let m = match present(&doc, "postgresql") {
            None => {
                ld.errors.push(ConfigError::Missing {
                    key: "postgresql".into(),
                });
                None
            }
            Some(_) => ld.obj(&doc, "postgresql", ""),
        };
        parse_postgresql(ld, m.unwrap_or(&empty), home)
    };
    let m = ld.obj(&doc, "tags", "").unwrap_or(&empty);
    let tags = parse_tags(ld, m);
    let m = ld.obj(&doc, "watchdog", "").unwrap_or(&empty);
    let watchdog = parse_watchdog(ld, m);
    let m = ld.obj(&doc, "log", "").unwrap_or(&empty);
    let log = parse_log(ld, m);

    if ld.validate {
        if watchdog.mode == WatchdogMode::Required {
            if let WatchdogDriver::Unsupported(d) = &watchdog.driver {
                ld.problem(
                    "watchdog.driver".to_string(),
                    format!("'{d}' is not a watchdog driver (default or testing), and watchdog.mode is 'required'"),
                );
            }
        }
        if let Some((h, _)) = split_host_port(&restapi.connect_address, None) {
            check_not_loopback(ld, "restapi.connect_address", &h);
        }
        if let Some((h, _)) = postgresql.connect_host_port() {
            check_not_loopback(ld, "postgresql.connect_address", &h);
        }
        validate_filesystem(ld, &postgresql);
    }

    Ok(Config {
        scope,
        namespace,
        name,
        restapi,
        ctl,
        etcd3,
        bootstrap,
        postgresql,
        tags,
        watchdog,
        log,
        warden,
        warnings: Vec::new(),
        consumed_env: Vec::new(),
        raw: Value::Object(doc),
    })
}

fn check_not_loopback(ld: &mut Loader, key: &str, host: &str) {
    if ["127.0.0.1", "0.0.0.0", "*", "::1", "localhost"].contains(&host) {
        ld.problem(
            key.to_string(),
            "must not contain \"127.0.0.1\", \"0.0.0.0\", \"*\", \"::1\", \"localhost\"",
        );
    }
}

fn validate_filesystem(ld: &mut Loader, pg: &Postgresql) {
    let dd = &pg.data_dir;
    if !dd.as_os_str().is_empty() && dd.exists() {
        if !dd.is_dir() {
            ld.problem(
                "postgresql.data_dir".into(),
                format!("{} is not a directory", dd.display()),
            );
        } else {
            let empty = std::fs::read_dir(dd)
                .map(|mut r| r.next().is_none())
                .unwrap_or(false);
            if !empty && !dd.join("PG_VERSION").is_file() {
                ld.problem(
                    "postgresql.data_dir".into(),
                    format!("{} doesn't look like a valid data directory", dd.display()),
                );
            }
        }
    }
    let mut bins = vec![
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
        "postgres",
        "pg_isready",
    ];
    if pg.use_pg_rewind == Some(true) {
        bins.push("pg_rewind");
    }
    let path_dirs: Vec<PathBuf> = if pg.bin_dir.as_os_str().is_empty() {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default()
    } else {
        if !pg.bin_dir.is_dir() {
            ld.problem(
                "postgresql.bin_dir".into(),
                format!("directory {} does not exist", pg.bin_dir.display()),
            );
            return;
        }
        vec![pg.bin_dir.clone()]
    };
    let missing: Vec<&str> = bins
        .into_iter()
        .filter(|b| {
            let file = pg.bin_name.get(*b).map(String::as_str).unwrap_or(b);
            !path_dirs.iter().any(|d| d.join(file).is_file())
        })
        .collect();
    if !missing.is_empty() {
        let place = if pg.bin_dir.as_os_str().is_empty() {
            "PATH".to_string()
        } else {
            pg.bin_dir.display().to_string()
        };
        ld.problem(
            "postgresql.bin_dir".into(),
            format!("binaries not found in {place}: {}", missing.join(", ")),
        );
    }
}

fn host_port_checked(
    ld: &mut Loader,
    m: &Obj,
    key: &str,
    prefix: &str,
    default_port: Option<u16>,
) -> String {
    let v = ld.req_str(m, key, prefix);
    if !v.is_empty() && split_host_port(&v, default_port).is_none() {
        ld.invalid(join(prefix, key), format!("expected host:port, got '{v}'"));
    }
    v
}

fn parse_restapi(ld: &mut Loader, m: &Obj) -> RestApi {
    let p = "restapi";
    let listen = host_port_checked(ld, m, "listen", p, None);
    let connect_address = host_port_checked(ld, m, "connect_address", p, None);
    let verify_client = ld.str_(m, "verify_client", p);
    if let Some(vc) = &verify_client {
        if !["none", "optional", "required"].contains(&vc.as_str()) {
            ld.invalid(
                "restapi.verify_client".into(),
                format!("expected one of none, optional, required, got '{vc}'"),
            );
        }
    }
    let server_tokens = ld
        .str_(m, "server_tokens", p)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "original".into());
    if !["original", "productonly", "minimal"].contains(&server_tokens.as_str()) {
        ld.invalid(
            "restapi.server_tokens".into(),
            format!("expected one of original, productonly, minimal, got '{server_tokens}'"),
        );
    }
    let request_queue_size = ld.uint(m, "request_queue_size", p).unwrap_or(5);
    if request_queue_size > 4096 {
        ld.invalid(
            "restapi.request_queue_size".into(),
            format!("must be between 0 and 4096, got {request_queue_size}"),
        );
    }
    RestApi {
        listen,
        connect_address,
        authentication: ld.auth(m, p),
        certfile: ld.str_(m, "certfile", p),
        keyfile: ld.str_(m, "keyfile", p),
        keyfile_password: ld.str_(m, "keyfile_password", p),
        cafile: ld.str_(m, "cafile", p),
        ciphers: ld.str_(m, "ciphers", p),
        verify_client,
        allowlist: ld.str_list(m, "allowlist", p).unwrap_or_default(),
        allowlist_include_members: ld.bool_(m, "allowlist_include_members", p).unwrap_or(false),
        http_extra_headers: ld.str_map(m, "http_extra_headers", p),
        https_extra_headers: ld.str_map(m, "https_extra_headers", p),
        request_queue_size,
        server_tokens,
    }
}

fn fmt_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parse `scheme://[user:pass@]host[:port][/...]` → (scheme, user, pass, endpoint).
fn parse_url(url: &str) -> Option<(String, Option<String>, Option<String>, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, pass) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    // IPv6 literal: [::1]:2379
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, after) = stripped.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
            None if after.is_empty() => 2379,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        split_host_port(hostport, Some(2379))?
    };
    if host.is_empty() {
        return None;
    }
    Some((
        scheme.to_ascii_lowercase(),
        user,
        pass,
        fmt_endpoint(&host, port),
    ))
}

fn parse_etcd3(ld: &mut Loader, m: &Obj) -> Etcd3 {
    let p = "etcd3";
    let mut e = Etcd3 {
        protocol: ld.str_(m, "protocol", p).unwrap_or_else(|| "http".into()),
        username: ld.str_(m, "username", p),
        password: ld.str_(m, "password", p),
        cacert: ld.str_(m, "cacert", p),
        cert: ld.str_(m, "cert", p),
        key: ld.str_(m, "key", p),
        key_password: ld.str_(m, "key_password", p),
        use_proxies: ld.bool_(m, "use_proxies", p).unwrap_or(false),
        srv: None,
        srv_suffix: ld.str_(m, "srv_suffix", p),
        hosts: Vec::new(),
        raw: Value::Object(m.clone()),
    };
    for k in ["srv", "discovery_srv", "srv_domain"] {
        if let Some(s) = ld.str_(m, k, p) {
            e.srv.get_or_insert(s);
        }
    }
    let default_port = match ld.int(m, "port", p) {
        Some(i) if (1..=65535).contains(&i) => i as u16,
        Some(i) => {
            ld.invalid("etcd3.port".into(), format!("expected a TCP port, got {i}"));
            2379
        }
        None => 2379,
    };
    let url_key = if present(m, "proxy").is_some() {
        e.use_proxies = true;
        Some("proxy")
    } else if present(m, "url").is_some() {
        Some("url")
    } else {
        None
    };
    if let Some(k) = url_key {
        if let Some(u) = ld.str_(m, k, p) {
            match parse_url(&u) {
                Some((scheme, user, pass, ep)) => {
                    e.protocol = scheme;
                    if user.is_some() {
                        e.username = user;
                    }
                    if pass.is_some() {
                        e.password = pass;
                    }
                    e.hosts.push(ep);
                }
                None => ld.invalid(
                    join(p, k),
                    format!("expected http(s)://[user:password@]host:port, got '{u}'"),
                ),
            }
        }
    } else if let Some(v) = present(m, "hosts") {
        let items: Vec<String> = match v {
            Value::String(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
            Value::Array(a) => {
                let mut out = Vec::new();
                for (i, item) in a.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.trim().to_string()),
                        other => ld.wrong(format!("etcd3.hosts[{i}]"), "a string", other),
                    }
                }
                out
            }
            other => {
                ld.wrong(
                    "etcd3.hosts".into(),
                    "a list or a comma-separated string",
                    other,
                );
                Vec::new()
            }
        };
        for h in items.into_iter().filter(|h| !h.is_empty()) {
            match split_host_port(&h, Some(default_port)) {
                Some((host, port)) if !host.is_empty() => e.hosts.push(fmt_endpoint(&host, port)),
                _ => ld.invalid(
                    "etcd3.hosts".into(),
                    format!("expected host:port, got '{h}'"),
                ),
            }
        }
        if e.hosts.is_empty() && e.srv.is_none() {
            ld.invalid("etcd3.hosts".into(), "no endpoints given");
        }
    } else if let Some(h) = ld.str_(m, "host", p) {
        let port = present(m, "port").map(|_| default_port);
        match split_host_port(&h, Some(2379)) {
            Some((host, hp)) if !host.is_empty() => {
                e.hosts.push(fmt_endpoint(&host, port.unwrap_or(hp)))
            }
            _ => ld.invalid(
                "etcd3.host".into(),
                format!("expected host:port, got '{h}'"),
            ),
        }
    } else if e.srv.is_none() {
        ld.invalid(
            "etcd3".into(),
            "no endpoints: set one of host, hosts, url, proxy or srv",
        );
    }
    if !["http", "https"].contains(&e.protocol.as_str()) {
        ld.invalid(
            "etcd3.protocol".into(),
            format!("expected http or https, got '{}'", e.protocol),
        );
    }
    e
}

/// Patroni's `process_user_options`: render tool options given as a map or a list of
/// strings / single-key maps into `--opt` / `--opt=value`.
/// `allowed(name, value)` decides whether an option is allowed; disallowed options are
/// reported as errors when `fatal`, else as warnings (and dropped).
fn render_options(
    ld: &mut Loader,
    v: &Value,
    key: &str,
    tool: &str,
    allowed: &dyn Fn(&str, Option<&Value>) -> bool,
    fatal: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let report = |ld: &mut Loader, msg: String| {
        if fatal {
            ld.invalid(key.to_string(), msg);
        } else {
            ld.warnings.push(format!("{key}: {msg}, ignored"));
        }
    };
    let render_val = |val: &Value| scalar_text(val).map(|s| unquote(&s));
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                if k.is_empty() || !truthy(val) {
                    continue;
                }
                if !allowed(k, Some(val)) {
                    report(ld, format!("{k} option for {tool} is not allowed"));
                    continue;
                }
                match render_val(val) {
                    Some(s) => out.push(format!("--{k}={s}")),
                    None => report(
                        ld,
                        format!("value of option {k} for {tool} should be a string"),
                    ),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => {
                        if allowed(s, None) {
                            out.push(format!("--{s}"));
                        } else {
                            report(ld, format!("{s} option for {tool} is not allowed"));
                        }
                    }
                    Value::Object(o) if o.len() == 1 => {
                        let Some((k, val)) = o.iter().next() else {
                            continue;
                        };
                        if !allowed(k, Some(val)) {
                            report(ld, format!("{k} option for {tool} is not allowed"));
                            continue;
                        }
                        match render_val(val) {
                            Some(s) => out.push(format!("--{k}={s}")),
                            None => report(
                                ld,
                                format!(
                                    "Error when parsing {tool} key-value option {k}: only one key-value is allowed and value should be a string"
                                ),
                            ),
                        }
                    }
                    Value::Object(_) => report(
                        ld,
                        format!(
                            "Error when parsing {tool} key-value option {}: only one key-value is allowed and value should be a string",
                            describe(item)
                        ),
                    ),
                    other => report(
                        ld,
                        format!(
                            "Error when parsing {tool} option {}: value should be string value or a single key-value pair",
                            describe(other)
                        ),
                    ),
                }
            }
        }
        Value::Null => {}
        other => {
            if fatal {
                ld.wrong(key.to_string(), "a list or a mapping", other);
            } else {
                ld.warnings.push(format!(
                    "{key}: {tool} options must be list or dict, got {}, ignored",
                    describe(other)
                ));
            }
        }
    }
    out
}

const INITDB_FORBIDDEN: &[&str] = &["pgdata", "nosync", "pwfile", "sync-only", "version"];
const BASEBACKUP_FORBIDDEN: &[&str] = &[
    "pgdata",
    "format",
    "wal-method",
    "xlog-method",
    "gzip",
    "version",
    "dbname",
    "host",
    "port",
    "username",
    "password",
];
const REWIND_FORBIDDEN: &[&str] = &[
    "target-pgdata",
    "source-pgdata",
    "source-server",
    "write-recovery-conf",
    "dry-run",
    "restore-target-wal",
    "config-file",
    "no-ensure-shutdown",
    "version",
    "help",
];

const DCS_INT_KEYS: &[&str] = &[
    "ttl",
    "loop_wait",
    "retry_timeout",
    "maximum_lag_on_failover",
    "maximum_lag_on_syncnode",
    "max_timelines_history",
    "primary_start_timeout",
    "master_start_timeout",
    "primary_stop_timeout",
    "master_stop_timeout",
    "primary_race_backoff",
    "synchronous_node_count",
];
const DCS_BOOL_KEYS: &[&str] = &[
    "check_timeline",
    "synchronous_mode_strict",
    "failsafe_mode",
    "pause",
];

/// Strict type check of `bootstrap.dcs` (load errors), plus minimums (validate problems).
fn check_dcs(ld: &mut Loader, dcs: &Obj) {
    let p = "bootstrap.dcs";
    for k in DCS_INT_KEYS {
        if let Some(i) = ld.int(dcs, k, p) {
            if ld.validate {
                let min_key = match *k {
                    "master_start_timeout" => "primary_start_timeout",
                    "master_stop_timeout" => "primary_stop_timeout",
                    other => other,
                };
                let min = match min_key {
                    "ttl" => ld.min_ttl.map(|t| t as i64),
                    "retry_timeout" => ld.min_ttl.map(|t| retry_timeout_floor(t) as i64),
                    _ => None,
                }
                .or_else(|| {
                    crate::TIMING_MINIMUMS
                        .iter()
                        .find(|(n, _)| *n == min_key)
                        .map(|(_, m)| *m)
                });
                if let Some(min) = min {
                    if i < min {
                        ld.problem(join(p, k), format!("{i} is below the minimum {min}"));
                    }
                }
            }
        }
    }
    for k in DCS_BOOL_KEYS {
        ld.bool_(dcs, k, p);
    }
    if let Some(v) = present(dcs, "synchronous_mode") {
        let ok = value_as_bool(v).is_some()
            || matches!(v, Value::String(s) if s.eq_ignore_ascii_case("quorum"));
        if !ok {
            ld.invalid(
                "bootstrap.dcs.synchronous_mode".into(),
                format!("expected on, off or quorum, got {}", describe(v)),
            );
        }
    }
    if let Some(v) = present(dcs, "member_slots_ttl") {
        match parse_duration_secs(v) {
            Some(i) if i >= 0 => {}
            _ => ld.invalid(
                "bootstrap.dcs.member_slots_ttl".into(),
                format!(
                    "expected seconds or a duration like 30min, got {}",
                    describe(v)
                ),
            ),
        }
    }
    for k in ["slots", "permanent_slots", "permanent_replication_slots"] {
        ld.obj(dcs, k, p);
    }
    if let Some(sc) = ld.obj(dcs, "standby_cluster", p) {
        // Patroni's schema for the section (validator.py).
        let sp = "bootstrap.dcs.standby_cluster";
        for k in [
            "host",
            "primary_slot_name",
            "restore_command",
            "archive_cleanup_command",
            "recovery_min_apply_delay",
        ] {
            ld.str_(sc, k, sp);
        }
        if let Some(port) = ld.int(sc, "port", sp) {
            if !(0..=65535).contains(&port) {
                ld.invalid(
                    join(sp, "port"),
                    format!("must be at most 65535, got {port}"),
                );
            }
        }
        ld.str_list(sc, "create_replica_methods", sp);
    }
    if let Some(pg) = ld.obj(dcs, "postgresql", p) {
        let pp = "bootstrap.dcs.postgresql";
        ld.obj(pg, "parameters", pp);
        ld.obj(pg, "recovery_conf", pp);
        ld.str_list(pg, "pg_hba", pp);
        ld.str_list(pg, "pg_ident", pp);
        for k in [
            "use_pg_rewind",
            "use_slots",
            "use_unix_socket",
            "use_unix_socket_repl",
        ] {
            ld.bool_(pg, k, pp);
        }
    }
}

fn parse_bootstrap(ld: &mut Loader, m: &Obj) -> Bootstrap {
    let p = "bootstrap";
    let dcs = match ld.obj(m, "dcs", p) {
        Some(d) => {
            check_dcs(ld, d);
            Value::Object(d.clone())
        }
        None => Value::Object(Map::new()),
    };
    let method = ld
        .str_(m, "method", p)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "initdb".into());
    let mut custom = None;
    if method != "initdb" {
        let key = format!("bootstrap.{method}");
        match present(m, &method) {
            Some(Value::Object(sec)) => {
                if present(sec, "command").is_none() {
                    ld.errors.push(ConfigError::Missing {
                        key: format!("{key}.command"),
                    });
                } else {
                    command_line(ld, sec, &key);
                }
                let recovery_conf = ld.obj(sec, "recovery_conf", &key).cloned();
                custom = Some(CustomBootstrap {
                    name: method.clone(),
                    options: sec.clone(),
                    recovery_conf,
                    keep_existing_recovery_conf: sec
                        .get("keep_existing_recovery_conf")
                        .is_some_and(crate::util::truthy),
                });
            }
            Some(other) => ld.wrong(key, "a mapping", other),
            None => ld.errors.push(ConfigError::Missing { key }),
        }
    }
    let initdb = match present(m, "initdb") {
        Some(v) => render_options(
            ld,
            v,
            "bootstrap.initdb",
            "initdb",
            &|name, _| !INITDB_FORBIDDEN.contains(&name),
            true,
        ),
        None => Vec::new(),
    };
    let post_bootstrap = ld
        .str_(m, "post_bootstrap", p)
        .or_else(|| ld.str_(m, "post_init", p));
    let users_present = present(m, "users").is_some();
    if users_present {
        ld.warnings.push(
            "bootstrap.users: this section was removed in Patroni 4.0 and is ignored; create users in post_bootstrap"
                .into(),
        );
    }
    Bootstrap {
        dcs,
        method,
        custom,
        initdb,
        pg_hba: ld.str_list(m, "pg_hba", p).unwrap_or_default(),
        post_bootstrap,
        users_present,
        raw: Value::Object(m.clone()),
    }
}

/// Checks `<section>.command`: a string that splits into words like a shell command
/// line (Patroni runs `shlex.split(command)`); an error names the key.
fn command_line(ld: &mut Loader, section: &Obj, prefix: &str) {
    let key = join(prefix, "command");
    match present(section, "command") {
        None => {}
        Some(Value::String(c)) => match crate::util::shell_split(c) {
            Some(words) if !words.is_empty() => {}
            Some(_) => ld.invalid(key, "the command is empty"),
            None => ld.invalid(key, "unbalanced quotes in the command"),
        },
        Some(other) => ld.wrong(key, "a command line string", other),
    }
}

/// The sections of the custom replica methods named in `create_replica_methods`
/// (`basebackup` is built in; its options are `postgresql.basebackup`), and every other
/// `postgresql.<name>` mapping with a `command` (a method another list may name).
fn replica_method_sections(
    ld: &mut Loader,
    m: &Obj,
    methods: &[String],
) -> BTreeMap<String, Map<String, Value>> {
    let mut out = BTreeMap::new();
    for name in methods {
        if name == "basebackup" || out.contains_key(name) {
            continue;
        }
        let key = join("postgresql", name);
        match present(m, name) {
            None => {
                // Patroni runs the method name itself as the command.
                if crate::util::shell_split(name).is_none_or(|w| w.is_empty()) {
                    ld.invalid(key, "a method without a section must be a command line");
                }
            }
            Some(Value::Object(sec)) => {
                command_line(ld, sec, &key);
                out.insert(name.clone(), sec.clone());
            }
            Some(other) => ld.wrong(key, "a mapping", other),
        }
    }
    // Patroni takes a method's options from `postgresql.<name>` whatever list names it:
    // a standby cluster's `create_replica_methods` (dynamic, so not known here) may name
    // a section the local list does not. Keep every other mapping with a `command`.
    for (name, v) in m {
        if out.contains_key(name) || name == "basebackup" {
            continue;
        }
        if let Value::Object(sec) = v {
            if matches!(sec.get("command"), Some(Value::String(_))) {
                out.insert(name.clone(), sec.clone());
            }
        }
    }
    out
}

fn parse_pg_user(ld: &mut Loader, a: &Obj, user: &str, required: bool) -> Option<PgUser> {
    let prefix = "postgresql.authentication";
    let path = join(prefix, user);
    if present(a, user).is_none() {
        if required {
            ld.errors.push(ConfigError::Missing {
                key: join(&path, "username"),
            });
        }
        return None;
    }
    let m = ld.obj(a, user, prefix)?;
    for k in m.keys() {
        if !AUTH_ALLOWED_PARAMETERS.contains(&k.as_str()) {
            ld.warnings
                .push(format!("{path}.{k}: unknown connection parameter ignored"));
        }
    }
    Some(PgUser {
        username: ld.req_str(m, "username", &path),
        password: ld.str_(m, "password", &path),
        sslmode: ld.str_(m, "sslmode", &path),
        sslcert: ld.str_(m, "sslcert", &path),
        sslkey: ld.str_(m, "sslkey", &path),
        sslpassword: ld.str_(m, "sslpassword", &path),
        sslrootcert: ld.str_(m, "sslrootcert", &path),
        sslcrl: ld.str_(m, "sslcrl", &path),
        sslcrldir: ld.str_(m, "sslcrldir", &path),
        gssencmode: ld.str_(m, "gssencmode", &path),
        channel_binding: ld.str_(m, "channel_binding", &path),
        sslnegotiation: ld.str_(m, "sslnegotiation", &path),
    })
}

fn parse_postgresql(ld: &mut Loader, m: &Obj, home: Option<&str>) -> Postgresql {
    let p = "postgresql";
    let listen = host_port_checked(ld, m, "listen", p, Some(5432));
    let connect_address = host_port_checked(ld, m, "connect_address", p, None);
    let data_dir = PathBuf::from(ld.req_str(m, "data_dir", p));

    let authentication = match present(m, "authentication") {
        None => {
            ld.errors.push(ConfigError::Missing {
                key: "postgresql.authentication.superuser.username".into(),
            });
            Authentication::default()
        }
        Some(_) => match ld.obj(m, "authentication", p) {
            Some(a) => Authentication {
                superuser: parse_pg_user(ld, a, "superuser", true).unwrap_or_default(),
                replication: parse_pg_user(ld, a, "replication", true).unwrap_or_default(),
                rewind: parse_pg_user(ld, a, "rewind", false),
            },
            None => Authentication::default(),
        },
    };

    let pgpass = ld
        .str_(m, "pgpass", p)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| match home {
            Some(h) if !h.is_empty() => Path::new(h).join("pgpass"),
            _ => PathBuf::from("pgpass"),
        });

    let mut callbacks = BTreeMap::new();
    if let Some(cb) = ld.obj(m, "callbacks", p) {
        for (k, v) in cb {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    callbacks.insert(k.clone(), s.clone());
                }
                other => ld.wrong(format!("postgresql.callbacks.{k}"), "a string", other),
            }
        }
    }

    let create_replica_methods = {
        let key = if present(m, "create_replica_methods").is_some() {
            "create_replica_methods"
        } else {
            "create_replica_method"
        };
        let v = match present(m, key) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(_) => ld.str_list(m, key, p).unwrap_or_default(),
            None => Vec::new(),
        };
        if v.is_empty() {
            vec!["basebackup".to_string()]
        } else {
            v
        }
    };
    let replica_method_sections = replica_method_sections(ld, m, &create_replica_methods);

    let basebackup = match present(m, "basebackup") {
        Some(v) => render_options(
            ld,
            v,
            "postgresql.basebackup",
            "basebackup",
            &|name, val| {
                if name == "compress" {
                    // only server-side compression (the PG >= 15 check is the caller's)
                    return val
                        .and_then(|v| v.as_str())
                        .map(|s| unquote(s).starts_with("server"))
                        .unwrap_or(false);
                }
                !BASEBACKUP_FORBIDDEN.contains(&name)
            },
            false,
        ),
        None => Vec::new(),
    };
    let rewind = match present(m, "rewind") {
        Some(v) => render_options(
            ld,
            v,
            "postgresql.rewind",
            "pg_rewind",
            &|name, _| !REWIND_FORBIDDEN.contains(&name),
            false,
        ),
        None => Vec::new(),
    };

    let parameters = ld.map_clone(m, "parameters", p);
    if present(m, "use_slots").is_some() {
        ld.warnings.push(
            "postgresql.use_slots: dynamic-only setting ignored in the local configuration".into(),
        );
    }
    for k in ["listen_addresses", "port", "cluster_name"] {
        if parameters.contains_key(k) {
            ld.warnings.push(format!(
                "postgresql.parameters.{k}: cannot be set via parameters, ignored"
            ));
        }
    }
    for k in crate::PROTECTED_PARAMETERS.iter().skip(3) {
        if parameters.contains_key(*k) {
            ld.warnings.push(format!(
                "postgresql.parameters.{k}: protected parameter, only the dynamic configuration may set it; local value ignored"
            ));
        }
    }
    let pg_ctl_timeout = ld.uint(m, "pg_ctl_timeout", p).unwrap_or(60);

    Postgresql {
        listen,
        connect_address,
        proxy_address: ld.str_(m, "proxy_address", p),
        data_dir,
        config_dir: ld
            .str_(m, "config_dir", p)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        bin_dir: PathBuf::from(ld.str_(m, "bin_dir", p).unwrap_or_default()),
        bin_name: ld.str_map(m, "bin_name", p),
        pgpass,
        database: ld
            .str_(m, "database", p)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres".into()),
        authentication,
        parameters,
        pg_hba: ld.str_list(m, "pg_hba", p),
        pg_ident: ld.str_list(m, "pg_ident", p),
        use_unix_socket: ld.bool_(m, "use_unix_socket", p).unwrap_or(false),
        use_unix_socket_repl: ld.bool_(m, "use_unix_socket_repl", p).unwrap_or(false),
        use_pg_rewind: ld.bool_(m, "use_pg_rewind", p),
        callbacks,
        create_replica_methods,
        replica_method_sections,
        basebackup,
        rewind,
        pg_ctl_timeout,
        remove_data_directory_on_rewind_failure: ld
            .bool_(m, "remove_data_directory_on_rewind_failure", p)
            .unwrap_or(false),
        remove_data_directory_on_diverged_timelines: ld
            .bool_(m, "remove_data_directory_on_diverged_timelines", p)
            .unwrap_or(false),
        pre_promote: ld.str_(m, "pre_promote", p),
        before_stop: ld.str_(m, "before_stop", p),
        recovery_conf: ld.map_clone(m, "recovery_conf", p),
        krbsrvname: ld.str_(m, "krbsrvname", p),
        raw: Value::Object(m.clone()),
    }
}

fn parse_tags(ld: &mut Loader, m: &Obj) -> Tags {
    let p = "tags";
    let mut t = Tags {
        raw_order: m.clone(),
        ..Tags::default()
    };
    for (k, v) in m {
        match k.as_str() {
            "nofailover" | "clonefrom" | "noloadbalance" | "nosync" | "nostream" => {
                let b = match v {
                    Value::Null => false,
                    Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
                    _ => match value_as_bool(v) {
                        Some(b) => b,
                        None => {
                            ld.wrong(join(p, k), "a boolean", v);
                            false
                        }
                    },
                };
                match k.as_str() {
                    "nofailover" => t.nofailover = b,
                    "clonefrom" => t.clonefrom = b,
                    "noloadbalance" => t.noloadbalance = b,
                    "nosync" => t.nosync = b,
                    _ => t.nostream = b,
                }
            }
            "failover_priority" | "sync_priority" => {
                let i = match v {
                    Value::Null => None,
                    _ => ld.int(m, k, p),
                };
                if let Some(i) = i {
                    if i < 0 {
                        ld.invalid(join(p, k), format!("must be >= 0, got {i}"));
                    }
                }
                if k == "failover_priority" {
                    t.failover_priority = i;
                } else {
                    t.sync_priority = i;
                }
            }
            "replicatefrom" => t.replicatefrom = ld.str_(m, k, p),
            _ => {
                t.custom.insert(k.clone(), v.clone());
            }
        }
    }
    // Patroni's warning, word for word (operators and its acceptance suite grep it).
    let py_bool = |b: bool| if b { "True" } else { "False" };
    for (flag, set, prio_name, prio) in [
        (
            "nofailover",
            t.nofailover,
            "failover_priority",
            t.failover_priority,
        ),
        ("nosync", t.nosync, "sync_priority", t.sync_priority),
    ] {
        if present(m, flag).is_none() {
            continue;
        }
        if let Some(prio) = prio {
            if (prio > 0) == set {
                ld.warnings.push(format!(
                    "Conflicting configuration between {flag}: {b} and {prio_name}: {prio}. Defaulting to {flag}: {b}",
                    b = py_bool(set)
                ));
            }
        }
    }
    t
}

fn parse_watchdog(ld: &mut Loader, m: &Obj) -> Watchdog {
    let p = "watchdog";
    let mode = match present(m, "mode") {
        None => WatchdogMode::Automatic,
        Some(Value::Bool(false)) => WatchdogMode::Off,
        Some(v) => {
            let s = scalar_text(v).unwrap_or_default().to_ascii_lowercase();
            match s.as_str() {
                "require" | "required" => WatchdogMode::Required,
                "auto" | "automatic" => WatchdogMode::Automatic,
                "off" | "disable" | "disabled" => WatchdogMode::Off,
                _ => {
                    ld.warnings.push(format!(
                        "watchdog.mode: mode {} not recognized, disabling watchdog",
                        describe(v)
                    ));
                    WatchdogMode::Off
                }
            }
        }
    };
    Watchdog {
        mode,
        device: ld
            .str_(m, "device", p)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/watchdog")),
        safety_margin: ld.int(m, "safety_margin", p).unwrap_or(5),
        driver: match ld.str_(m, "driver", p).as_deref() {
            None | Some("default") => WatchdogDriver::Linux,
            Some("testing") => WatchdogDriver::Testing,
            Some(other) => WatchdogDriver::Unsupported(other.to_string()),
        },
    }
}

fn parse_warden(ld: &mut Loader, m: &Obj) -> WardenSection {
    let mut w = WardenSection::default();
    if let Some(t) = ld.int(m, "min_ttl", "warden") {
        if (MIN_TTL_FLOOR as i64..=PATRONI_MIN_TTL as i64).contains(&t) {
            w.min_ttl = t as u64;
        } else {
            ld.invalid(
                "warden.min_ttl".into(),
                format!("must be between {MIN_TTL_FLOOR} and {PATRONI_MIN_TTL} seconds, got {t}"),
            );
        }
    }
    if let Some(pb) = ld.obj(m, "pgbouncer", "warden") {
        w.pgbouncer = pgbouncer::parse(ld, pb);
    }
    for k in m
        .keys()
        .filter(|k| !["min_ttl", "pgbouncer"].contains(&k.as_str()))
    {
        ld.warnings
            .push(format!("unknown key 'warden.{k}' ignored"));
    }
    w
}

fn parse_log(ld: &mut Loader, m: &Obj) -> Log {
    let p = "log";
    let d = Log::default();
    let type_ = ld
        .str_(m, "type", p)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or(d.type_);
    if type_ != "plain" && type_ != "json" {
        ld.invalid(
            "log.type".into(),
            format!("expected plain or json, got '{type_}'"),
        );
    }
    let level = ld
        .str_(m, "level", p)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or(d.level);
    if ![
        "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL",
    ]
    .contains(&level.as_str())
    {
        ld.invalid(
            "log.level".into(),
            format!("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got '{level}'"),
        );
    }
    let traceback_level = ld
        .str_(m, "traceback_level", p)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or(d.traceback_level);
    let format = match present(m, "format") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mode = match ld.int(m, "mode", p) {
        Some(i) if (0..=0o7777).contains(&i) => Some(i as u32),
        Some(i) => {
            ld.invalid(
                "log.mode".into(),
                format!("expected file permissions like 0644, got {i}"),
            );
            None
        }
        None => None,
    };
    Log {
        type_,
        level,
        traceback_level,
        format,
        dateformat: ld.str_(m, "dateformat", p),
        dir: ld
            .str_(m, "dir", p)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        mode,
        file_num: ld.uint(m, "file_num", p).unwrap_or(d.file_num),
        file_size: ld.uint(m, "file_size", p).unwrap_or(d.file_size),
        max_queue_size: ld.uint(m, "max_queue_size", p).unwrap_or(d.max_queue_size),
        loggers: ld.str_map(m, "loggers", p),
        deduplicate_heartbeat_logs: ld
            .bool_(m, "deduplicate_heartbeat_logs", p)
            .unwrap_or(false),
        raw: Value::Object(m.clone()),
    }
}
