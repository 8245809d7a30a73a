//! [`Postgres`]: files, process control, queries and the replica tools of one
//! local PostgreSQL instance.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_postgres::Client;

use crate::controldata::{ControlData, DataDirState};
use crate::error::PgError;
use crate::process::{
    children_of, describe, filtered_env, kill_all, looks_like_postmaster, pid_alive, read_pid_file,
    signal, tail, tool_path, wait_gone,
};
use crate::render::{
    build_archiver_command, parse_lsn, pgpass_content, primary_conninfo, python_timestamp,
    quote_ident, quote_literal, render_lines_file, render_postgresql_conf, service_file_content,
    tool_conninfo, ConninfoParams, SERVICE_NAME,
};
use crate::settings::{
    effective_parameters, Credentials, PgSettings, StopMode, Upstream, CMDLINE_GUCS, RECOVERY_GUCS,
};
use crate::status::{PgStatus, RawSlot, ReplicationRow, WalPositions, STATUS_SQL, WAL_SQL};
use crate::tls::TlsPlan;

/// Config files copied to `<data_dir>/<name>.backup` after each successful start.
const CONFIG_FILES_TO_SAVE: [&str; 4] = [
    "postgresql.conf",
    "postgresql.base.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// How many characters of a tool's output go into error messages.
const TAIL: usize = 2000;

/// Result of `pg_isready` against the local server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyState {
    /// exit 0: accepting connections
    Accepting,
    /// exit 1: rejecting connections (starting up, shutting down, recovering)
    Rejecting,
    /// exit 2: no response
    NoResponse,
    /// exit 3 or pg_isready could not run
    Unknown,
}

/// Where connections go.
#[derive(Clone, Debug)]
pub(crate) enum LocalTarget {
    Tcp(String),
    Socket(PathBuf),
}

/// One local PostgreSQL instance managed by the agent.
///
/// The library never switches users itself except through [`PgSettings::run_as`].
/// Cloning is cheap-ish (copies the settings); clones manage the same instance and share
/// its monitoring connection.
#[derive(Clone, Debug)]
pub struct Postgres {
    s: PgSettings,
    binary_version: OnceLock<Option<u32>>,
    monitor: MonitorConn,
    /// The last `pg_controldata` output and the pg_control modification time it was
    /// read at ([`Postgres::controldata_cached`]).
    control_cache: Arc<Mutex<Option<(std::time::SystemTime, ControlData)>>>,
    /// `pg_rewind --help` has worked ([`Postgres::can_rewind`]).
    rewind_runs: Arc<std::sync::atomic::AtomicBool>,
}

/// The persistent superuser connection of the HA loop's monitoring queries
/// ([`Postgres::query_status`], [`Postgres::monitor_rows`]), shared by the clones of one
/// [`Postgres`] (new settings make a new `Postgres` and so a new connection).
///
/// A fresh connection per query cost PostgreSQL a backend fork, authentication and a
/// cold catalog cache each time: with three such queries per HA cycle that was most of
/// an idle node's CPU. Patroni keeps one connection too.
#[derive(Clone, Default)]
struct MonitorConn(Arc<tokio::sync::Mutex<Option<Client>>>);

impl std::fmt::Debug for MonitorConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MonitorConn")
    }
}

/// How long a monitoring query may take before the instance counts as not answering.
const MONITOR_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl Postgres {
    /// Wraps the settings. Nothing is touched on disk.
    pub fn new(s: PgSettings) -> Postgres {
        Postgres {
            s,
            binary_version: OnceLock::new(),
            monitor: MonitorConn::default(),
            control_cache: Arc::default(),
            rewind_runs: Arc::default(),
        }
    }

    /// The settings this instance was created with.
    pub fn settings(&self) -> &PgSettings {
        &self.s
    }

    // ------------------------------------------------------------------ helpers

    fn tool(&self, name: &str) -> PathBuf {
        tool_path(&self.s.bin_dir, name)
    }

    pub(crate) fn config_file(&self) -> PathBuf {
        self.s.config_dir.join("postgresql.conf")
    }

    /// Applies environment filtering and `run_as` to a std command.
    pub(crate) fn prepare_std(&self, cmd: &mut std::process::Command) {
        cmd.env_clear();
        cmd.envs(filtered_env());
        if let Some((uid, gid)) = self.s.run_as {
            cmd.gid(gid);
            cmd.uid(uid);
            // The caller's cwd (e.g. /root) may not be accessible to that user.
            cmd.current_dir("/");
        }
    }

    fn std_cmd(&self, name: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.tool(name));
        self.prepare_std(&mut cmd);
        cmd
    }

    fn tokio_cmd(&self, name: &str) -> tokio::process::Command {
        let mut cmd = self.std_cmd(name);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs a tool to completion; Err when it cannot start, times out or exits non-zero.
    async fn run(
        &self,
        mut cmd: tokio::process::Command,
        timeout: Option<Duration>,
    ) -> Result<std::process::Output, PgError> {
        let std = cmd.as_std();
        let args: Vec<OsString> = std.get_args().map(|a| a.to_os_string()).collect();
        let desc = describe(Path::new(std.get_program()), &args);
        tracing::debug!("running {desc}");
        let child = cmd.spawn().map_err(|e| PgError::Spawn {
            cmd: desc.clone(),
            source: e,
        })?;
        let out = match timeout {
            Some(t) => match tokio::time::timeout(t, child.wait_with_output()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(PgError::CommandTimeout {
                        cmd: desc,
                        timeout: t,
                    })
                }
            },
            None => child.wait_with_output().await,
        }
        .map_err(|e| PgError::Spawn {
            cmd: desc.clone(),
            source: e,
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            let output = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
                tail(&out.stderr, TAIL)
            } else {
                tail(&out.stdout, TAIL)
            };
            Err(PgError::Command {
                cmd: desc,
                status: out.status.to_string(),
                output,
            })
        }
    }

    pub(crate) fn chown(&self, p: &Path) -> Result<(), PgError> {
        if let Some((uid, gid)) = self.s.run_as {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| PgError::io("chown", p, e))?;
        }
        Ok(())
    }

    /// Mode for files we create: 0640 when the data directory allows group access, else 0600.
    pub(crate) fn file_mode(&self) -> u32 {
        match std::fs::metadata(&self.s.data_dir) {
            Ok(m) if m.permissions().mode() & 0o050 != 0 => 0o640,
            _ => 0o600,
        }
    }

    /// Writes a file atomically (temp file + rename) with `mode`, owned by `run_as`.
    pub(crate) fn write_file(&self, path: &Path, content: &str, mode: u32) -> Result<(), PgError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".warden-tmp.{}.{n}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| PgError::io("create", &tmp, e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| PgError::io("write", &tmp, e))?;
        drop(f);
        let res = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| PgError::io("chmod", &tmp, e))
            .and_then(|_| self.chown(&tmp))
            .and_then(|_| {
                std::fs::rename(&tmp, path).map_err(|e| PgError::io("rename to", path, e))
            });
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Where the postmaster's stdout/stderr go: `<data_dir>.postmaster.log`, a sibling of
    /// the data directory (never inside it, so pg_basebackup/pg_rewind do not copy it).
    /// When that file cannot be opened the output goes to /dev/null.
    pub fn postmaster_log_path(&self) -> PathBuf {
        let mut p = self.s.data_dir.as_os_str().to_owned();
        p.push(".postmaster.log");
        PathBuf::from(p)
    }

    /// PostgreSQL major version: `<data_dir>/PG_VERSION`, else `postgres --version`.
    pub fn major_version(&self) -> Option<u32> {
        if let Ok(s) = std::fs::read_to_string(self.s.data_dir.join("PG_VERSION")) {
            if let Ok(v) = s.trim().parse() {
                return Some(v);
            }
        }
        *self.binary_version.get_or_init(|| {
            let out = self.std_cmd("postgres").arg("--version").output().ok()?;
            parse_version_output(&String::from_utf8_lossy(&out.stdout))
        })
    }

    pub(crate) fn local_target(&self) -> LocalTarget {
        if self.s.use_unix_socket {
            let dir = self
                .s
                .parameters
                .get("unix_socket_directories")
                .and_then(|v| {
                    v.split(',')
                        .map(|d| d.trim().trim_matches('"').trim())
                        .find(|d| d.starts_with('/'))
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| {
                    if Path::new("/var/run/postgresql").is_dir() {
                        PathBuf::from("/var/run/postgresql")
                    } else {
                        PathBuf::from("/tmp")
                    }
                });
            return LocalTarget::Socket(dir);
        }
        self.tcp_target()
    }

    /// The local server over TCP (what [`Self::local_target`] uses without the socket).
    pub(crate) fn tcp_target(&self) -> LocalTarget {
        let addrs: Vec<&str> = self.s.listen_addresses.split(',').map(str::trim).collect();
        if addrs
            .iter()
            .any(|a| matches!(*a, "*" | "0.0.0.0" | "127.0.0.1" | ""))
        {
            LocalTarget::Tcp("127.0.0.1".to_string())
        } else if addrs.contains(&"localhost") {
            LocalTarget::Tcp("localhost".to_string())
        } else {
            LocalTarget::Tcp(addrs.first().copied().unwrap_or("127.0.0.1").to_string())
        }
    }

    /// A connection to `target` as `creds` in the configured database.
    pub(crate) async fn connect_to(
        &self,
        target: LocalTarget,
        port: u16,
        creds: &Credentials,
        app: &str,
        statement_timeout_ms: Option<u64>,
    ) -> Result<Client, PgError> {
        self.connect_db(
            target,
            port,
            creds,
            &self.s.database,
            app,
            statement_timeout_ms,
        )
        .await
    }

    /// A connection to `target` as `creds` in `dbname`.
    pub(crate) async fn connect_db(
        &self,
        target: LocalTarget,
        port: u16,
        creds: &Credentials,
        dbname: &str,
        app: &str,
        statement_timeout_ms: Option<u64>,
    ) -> Result<Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&creds.username)
            .dbname(dbname)
            .application_name(app)
            .port(port)
            .connect_timeout(Duration::from_secs(3));
        if let Some(pw) = &creds.password {
            cfg.password(pw.as_bytes());
        }
        if let Some(ms) = statement_timeout_ms {
            cfg.options(format!(
                "-c statement_timeout={ms} -c pg_stat_statements.track=none"
            ));
        }
        let where_ = match &target {
            LocalTarget::Tcp(h) => {
                cfg.host(h);
                format!("{h}:{port}")
            }
            LocalTarget::Socket(d) => {
                cfg.host_path(d);
                format!("{}/.s.PGSQL.{port}", d.display())
            }
        };
        let desc = format!("{where_} as {} db {dbname}", creds.username);
        let plan = match &target {
            // libpq never uses TLS on a unix socket either.
            LocalTarget::Socket(_) => TlsPlan::unix_socket(),
            LocalTarget::Tcp(_) => TlsPlan::new(&creds.ssl, &creds.username)?,
        };
        plan.connect(&cfg, &desc).await
    }

    /// Superuser connection to the local server.
    async fn connect_local(
        &self,
        app: &str,
        statement_timeout_ms: Option<u64>,
    ) -> Result<Client, PgError> {
        self.connect_to(
            self.local_target(),
            self.s.port,
            &self.s.superuser,
            app,
            statement_timeout_ms,
        )
        .await
    }

    pub(crate) fn write_pgpass(
        &self,
        host: &str,
        port: u16,
        creds: &Credentials,
    ) -> Result<(), PgError> {
        let content = pgpass_content(
            Some(host),
            Some(&port.to_string()),
            Some(&creds.username),
            creds.password.as_deref(),
        );
        self.write_file(&self.s.pgpass, &content, 0o600)
    }

    /// The connection string for a tool connecting to `host:port` as `creds`
    /// ([`tool_conninfo`]: the user's TLS options, never a password — the tool reads it
    /// from `PGPASSFILE`). When the user has an `sslpassword`, it goes to a private libpq
    /// service file instead of the command line: point `PGSERVICEFILE` at the returned
    /// file, which is removed when dropped.
    pub(crate) fn tool_conn(
        &self,
        host: &str,
        port: u16,
        creds: &Credentials,
    ) -> Result<(String, Option<TempFile>), PgError> {
        let service = match &creds.ssl.sslpassword {
            None => None,
            Some(pw) => {
                let content = service_file_content(pw).ok_or_else(|| {
                    PgError::Tls(format!(
                        "TLS settings of user {}: sslpassword cannot be handed to the PostgreSQL \
                         tools (it contains a line break or ends with white space)",
                        creds.username
                    ))
                })?;
                let p = temp_path("warden-pgservice");
                self.write_file(&p, &content, 0o600)?;
                Some(TempFile(p))
            }
        };
        let dsn = tool_conninfo(
            &self.s.database,
            &creds.username,
            host,
            port,
            &creds.ssl,
            service.as_ref().map(|_| SERVICE_NAME),
        );
        Ok((dsn, service))
    }

    // ------------------------------------------------------------------ state

    /// Data directory state: `Empty` when missing or empty; `Invalid` when non-empty
    /// without `global/pg_control` or when pg_controldata fails; else `Initialized`.
    pub fn data_dir_state(&self) -> DataDirState {
        let dd = &self.s.data_dir;
        match std::fs::read_dir(dd) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DataDirState::Empty,
            Err(e) => return DataDirState::Invalid(format!("cannot read {}: {e}", dd.display())),
            Ok(mut rd) => {
                if rd.next().is_none() {
                    return DataDirState::Empty;
                }
            }
        }
        if !dd.join("global").join("pg_control").exists() {
            return DataDirState::Invalid(format!(
                "{} is not empty but has no global/pg_control",
                dd.display()
            ));
        }
        match self.controldata_sync_cached() {
            Ok(cd) => match cd.sysid() {
                Some(s) => DataDirState::Initialized {
                    sysid: s.to_string(),
                },
                None => DataDirState::Invalid(format!(
                    "pg_controldata {} printed no system identifier",
                    dd.display()
                )),
            },
            Err(e) => DataDirState::Invalid(e.to_string()),
        }
    }

    fn controldata_cmd_std(&self) -> std::process::Command {
        let mut cmd = self.std_cmd("pg_controldata");
        cmd.arg(&self.s.data_dir)
            .env("LANG", "C")
            .env("LC_ALL", "C");
        cmd
    }

    /// `pg_controldata`, run again only when `global/pg_control` was written since the
    /// last run (its modification time changed): for the HA loop's per-cycle questions,
    /// which would otherwise start a process every cycle of an idle node.
    pub async fn controldata_cached(&self) -> Result<ControlData, PgError> {
        // Taken before the run: a write during it makes the next call run it again.
        let stamp = self.control_stamp();
        if let Some(cd) = self.cached_control(stamp) {
            return Ok(cd);
        }
        let cd = self.controldata().await?;
        self.store_control(stamp, &cd);
        Ok(cd)
    }

    /// [`Postgres::controldata_cached`] for synchronous callers.
    pub fn controldata_sync_cached(&self) -> Result<ControlData, PgError> {
        let stamp = self.control_stamp();
        if let Some(cd) = self.cached_control(stamp) {
            return Ok(cd);
        }
        let cd = self.controldata_sync()?;
        self.store_control(stamp, &cd);
        Ok(cd)
    }

    /// When `global/pg_control` was last written (None: cannot tell, never cached).
    fn control_stamp(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.s.data_dir.join("global/pg_control"))
            .and_then(|m| m.modified())
            .ok()
    }

    fn cached_control(&self, stamp: Option<std::time::SystemTime>) -> Option<ControlData> {
        let cache = self.control_cache.lock().ok()?;
        let (at, cd) = cache.as_ref()?;
        (Some(*at) == stamp).then(|| cd.clone())
    }

    fn store_control(&self, stamp: Option<std::time::SystemTime>, cd: &ControlData) {
        if let (Some(stamp), Ok(mut cache)) = (stamp, self.control_cache.lock()) {
            *cache = Some((stamp, cd.clone()));
        }
    }

    /// Synchronous `pg_controldata` (used by sync helpers).
    pub fn controldata_sync(&self) -> Result<ControlData, PgError> {
        let mut cmd = self.controldata_cmd_std();
        let desc = format!("pg_controldata {}", self.s.data_dir.display());
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PgError::Spawn {
                cmd: desc.clone(),
                source: e,
            })?;
        if !out.status.success() {
            return Err(PgError::Command {
                cmd: desc,
                status: out.status.to_string(),
                output: tail(&out.stderr, TAIL),
            });
        }
        Ok(ControlData::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// `pg_controldata <data_dir>` (with `LANG=C`), parsed.
    pub async fn controldata(&self) -> Result<ControlData, PgError> {
        let mut cmd = self.tokio_cmd("pg_controldata");
        cmd.arg(&self.s.data_dir)
            .env("LANG", "C")
            .env("LC_ALL", "C");
        let out = self.run(cmd, Some(Duration::from_secs(30))).await?;
        Ok(ControlData::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// PID of the running postmaster: `postmaster.pid` exists, the PID is alive and the
    /// process looks like postgres running in this data directory (else the file is stale).
    pub fn postmaster_pid(&self) -> Option<i32> {
        let pid = read_pid_file(&self.s.data_dir)?;
        (pid_alive(pid) && looks_like_postmaster(pid, &self.s.data_dir)).then_some(pid)
    }

    /// Kills the instance for good (SIGKILL to the postmaster and all its processes),
    /// for a PostgreSQL that stopped answering: it must not resume and acknowledge a
    /// write after another node was promoted. `Ok(false)` when nothing was running.
    pub async fn kill_instance(&self) -> Result<bool, PgError> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(false);
        };
        let gone = tokio::task::spawn_blocking(move || {
            crate::process::kill_instance(pid, Duration::from_secs(10))
        })
        .await
        .unwrap_or(false);
        if gone {
            Ok(true)
        } else {
            Err(PgError::StopFailed(format!(
                "postmaster {pid} or one of its processes is still there after SIGKILL"
            )))
        }
    }

    /// True when [`Postgres::postmaster_pid`] finds a live postmaster.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// `pg_isready` against the local server.
    pub async fn ready_state(&self) -> ReadyState {
        let mut cmd = self.tokio_cmd("pg_isready");
        cmd.arg("-p").arg(self.s.port.to_string());
        cmd.arg("-d").arg(&self.s.database);
        cmd.arg("-U").arg(&self.s.superuser.username);
        cmd.arg("-t").arg("2");
        match self.local_target() {
            LocalTarget::Tcp(h) => cmd.arg("-h").arg(h),
            LocalTarget::Socket(d) => cmd.arg("-h").arg(d),
        };
        let out = match tokio::time::timeout(Duration::from_secs(5), cmd.output()).await {
            Ok(Ok(o)) => o,
            _ => return ReadyState::Unknown,
        };
        match out.status.code() {
            Some(0) => ReadyState::Accepting,
            Some(1) => ReadyState::Rejecting,
            Some(2) => ReadyState::NoResponse,
            _ => ReadyState::Unknown,
        }
    }

    // ------------------------------------------------------------------ bootstrap

    fn ensure_data_dir(&self) -> Result<(), PgError> {
        create_private_dir_all(&self.s.data_dir, self.s.run_as)
    }

    /// `initdb <options> --username=<superuser> [--pwfile=<tmp>] --pgdata=<data_dir>`.
    ///
    /// The temporary password file lives in the system temp dir and is removed afterwards.
    /// postgresql.conf → postgresql.base.conf happens in [`Postgres::write_config`].
    pub async fn initdb(&self, options: &[String]) -> Result<(), PgError> {
        self.ensure_data_dir()?;
        let mut cmd = self.tokio_cmd("initdb");
        cmd.args(options);
        cmd.arg(format!("--username={}", self.s.superuser.username));
        let mut pwfile = None;
        if let Some(pw) = &self.s.superuser.password {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir()
                .join(format!("warden-initdb-pw.{}.{nanos}", std::process::id()));
            self.write_file(&p, &format!("{pw}\n"), 0o600)?;
            cmd.arg(format!("--pwfile={}", p.display()));
            pwfile = Some(p);
        }
        cmd.arg(format!("--pgdata={}", self.s.data_dir.display()));
        let res = self.run(cmd, Some(Duration::from_secs(600))).await;
        if let Some(p) = pwfile {
            let _ = std::fs::remove_file(p);
        }
        res.map(|_| ())
    }

    /// Appends `bootstrap.pg_hba` lines to the pg_hba.conf created by initdb.
    pub fn append_pg_hba(&self, lines: &[String]) -> Result<(), PgError> {
        let p = self.s.config_dir.join("pg_hba.conf");
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(self.file_mode())
            .open(&p)
            .map_err(|e| PgError::io("open", &p, e))?;
        let text = format!("\n{}\n", lines.join("\n"));
        f.write_all(text.as_bytes())
            .map_err(|e| PgError::io("append to", &p, e))?;
        drop(f);
        self.chown(&p)
    }

    // ------------------------------------------------------------------ config files

    /// Renames the original postgresql.conf to postgresql.base.conf if the base file does
    /// not exist yet (an empty base file is created when neither exists).
    fn ensure_base_conf(&self) -> Result<(), PgError> {
        let base = self.s.config_dir.join("postgresql.base.conf");
        if base.exists() {
            return Ok(());
        }
        let conf = self.config_file();
        if conf.exists() {
            std::fs::rename(&conf, &base)
                .map_err(|e| PgError::io("rename postgresql.conf to", &base, e))
        } else {
            self.write_file(&base, "", self.file_mode())
        }
    }

    /// The recovery parameters (`# recovery.conf` block) for following `upstream`
    /// (spec §4); writes the pgpass file when the replication user has a password.
    fn recovery_params(
        &self,
        upstream: Option<&Upstream>,
    ) -> Result<BTreeMap<String, String>, PgError> {
        let mut r = BTreeMap::new();
        for k in [
            "recovery_target",
            "recovery_target_lsn",
            "recovery_target_name",
            "recovery_target_time",
            "recovery_target_xid",
        ] {
            r.insert(k.to_string(), String::new());
        }
        r.insert("recovery_target_timeline".to_string(), "latest".to_string());
        if let Some(up) = upstream {
            let passfile = if self.s.replication.password.is_some() {
                self.write_pgpass(&up.host, up.port, &self.s.replication)?;
                Some(self.s.pgpass.display().to_string())
            } else {
                None
            };
            let ci = primary_conninfo(&ConninfoParams {
                host: &up.host,
                port: up.port,
                dbname: &self.s.database,
                user: &self.s.replication.username,
                passfile: passfile.as_deref(),
                application_name: &self.s.name,
                major_version: self.major_version().unwrap_or(13),
                ssl: &self.s.replication.ssl,
            });
            r.insert("primary_conninfo".to_string(), ci);
            if let Some(slot) = &up.slot {
                r.insert("primary_slot_name".to_string(), slot.clone());
            }
        }
        Ok(r)
    }

    /// Effective GUCs; on a standby raised to pg_controldata's values where needed.
    /// During a custom bootstrap the recovery parameters are the method's only (Patroni
    /// keeps recovery settings out of the server parameters) and `hot_standby` may be
    /// off ([`crate::CustomBootstrapMode::disables_hot_standby`]).
    fn parameters_for(&self, standby: bool) -> BTreeMap<String, String> {
        let cd = if standby {
            self.controldata_sync().ok()
        } else {
            None
        };
        let mut p = effective_parameters(&self.s, cd.as_ref());
        if let Some(cb) = &self.s.custom_bootstrap {
            p.retain(|k, _| !RECOVERY_GUCS.contains(&k.as_str()));
            if cb.disables_hot_standby() {
                p.insert("hot_standby".into(), "off".into());
            }
        }
        p
    }

    /// Writes postgresql.conf (spec §2), creates/removes `standby.signal`, writes the pgpass
    /// file when `primary_conninfo` needs it, and rewrites pg_hba.conf when
    /// [`PgSettings::pg_hba`] is set. The first call renames the initdb postgresql.conf to
    /// postgresql.base.conf. `upstream` is only used when `standby`.
    ///
    /// During a custom bootstrap ([`PgSettings::custom_bootstrap`]) the recovery block
    /// holds the method's `recovery_conf`, `hba_file` always names the trusting
    /// pg_hba.conf of the config directory, and the signal files are left to
    /// [`Postgres::write_custom_bootstrap_recovery`].
    pub fn write_config(&self, upstream: Option<&Upstream>, standby: bool) -> Result<(), PgError> {
        self.write_config_with(upstream, standby, &BTreeMap::new())
    }

    /// [`Postgres::write_config`] with recovery parameters that override the configured
    /// ones on a standby (a standby cluster's `restore_command`,
    /// `archive_cleanup_command`, `recovery_min_apply_delay`): they go into the
    /// `# recovery.conf` block and out of the general parameters, so that each is set
    /// once.
    pub fn write_config_with(
        &self,
        upstream: Option<&Upstream>,
        standby: bool,
        recovery_overrides: &BTreeMap<String, String>,
    ) -> Result<(), PgError> {
        self.ensure_base_conf()?;
        let custom = self.s.custom_bootstrap.as_ref();
        let mut params = self.parameters_for(standby && custom.is_none());
        if custom.is_some() {
            params.remove("hba_file");
        }
        let cfg = &self.s.config_dir;
        let mut extra = Vec::new();
        for (guc, file) in [("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")] {
            match params.get_mut(guc) {
                Some(v) => {
                    if !Path::new(v.as_str()).is_absolute() {
                        *v = cfg.join(v.as_str()).display().to_string();
                    }
                    extra.push(None);
                }
                None => extra.push(Some(cfg.join(file).display().to_string())),
            }
        }
        let recovery = match custom {
            Some(cb) => Some(cb.recovery_params()).filter(|r| !r.is_empty()),
            None if standby => {
                let mut r = self.recovery_params(upstream)?;
                for (k, v) in recovery_overrides {
                    params.remove(k);
                    r.insert(k.clone(), v.clone());
                }
                Some(r)
            }
            None => None,
        };
        let text = render_postgresql_conf(
            "postgresql.base.conf",
            &params,
            extra[0].as_deref(),
            extra[1].as_deref(),
            recovery.as_ref(),
        );
        let mode = self.file_mode();
        self.write_file(&self.config_file(), &text, mode)?;
        if custom.is_some() {
            return self.write_pg_hba();
        }
        let signal_file = self.s.data_dir.join("standby.signal");
        if standby {
            if !signal_file.exists() {
                self.write_file(&signal_file, "", mode)?;
            }
        } else if signal_file.exists() {
            std::fs::remove_file(&signal_file)
                .map_err(|e| PgError::io("remove", &signal_file, e))?;
        }
        self.write_pg_hba()
    }

    fn write_pg_hba(&self) -> Result<(), PgError> {
        if self.s.custom_bootstrap.is_some() {
            let p = self.s.config_dir.join("pg_hba.conf");
            let lines = self.custom_bootstrap_hba();
            return self.write_file(&p, &render_lines_file(&lines), self.file_mode());
        }
        if let Some(lines) = &self.s.pg_hba {
            if !self.s.parameters.contains_key("hba_file") {
                let p = self.s.config_dir.join("pg_hba.conf");
                self.write_file(&p, &render_lines_file(lines), self.file_mode())?;
            }
        }
        Ok(())
    }

    /// Removes recovery parameters from postgresql.auto.conf (PG 12+ would otherwise let
    /// them override ours).
    fn sanitize_auto_conf(&self) -> Result<(), PgError> {
        let p = self.s.data_dir.join("postgresql.auto.conf");
        let Ok(text) = std::fs::read_to_string(&p) else {
            return Ok(());
        };
        let mut changed = false;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                let key = l
                    .split(['=', ' ', '\t'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                let drop = RECOVERY_GUCS.contains(&key.as_str());
                changed |= drop;
                !drop
            })
            .collect();
        if changed {
            let mut out = kept.join("\n");
            out.push('\n');
            self.write_file(&p, &out, self.file_mode())?;
        }
        Ok(())
    }

    /// Copies postgresql.conf, postgresql.base.conf, pg_hba.conf and pg_ident.conf from
    /// config_dir to `<data_dir>/<name>.backup` (done after every successful start).
    pub fn save_configuration_files(&self) -> Result<(), PgError> {
        for f in CONFIG_FILES_TO_SAVE {
            let src = self.s.config_dir.join(f);
            if src.is_file() {
                let dst = self.s.data_dir.join(format!("{f}.backup"));
                let text = std::fs::read(&src).map_err(|e| PgError::io("read", &src, e))?;
                self.write_file(&dst, &String::from_utf8_lossy(&text), self.file_mode())?;
            }
        }
        Ok(())
    }

    /// Restores config files missing from config_dir from their `.backup` copies (after a
    /// basebackup/restore); a missing pg_ident.conf without backup is created empty.
    pub fn restore_configuration_files(&self) -> Result<(), PgError> {
        for f in CONFIG_FILES_TO_SAVE {
            let dst = self.s.config_dir.join(f);
            if dst.is_file() {
                continue;
            }
            let src = self.s.data_dir.join(format!("{f}.backup"));
            if src.is_file() {
                let text = std::fs::read(&src).map_err(|e| PgError::io("read", &src, e))?;
                self.write_file(&dst, &String::from_utf8_lossy(&text), self.file_mode())?;
            } else if f == "pg_ident.conf" {
                self.write_file(&dst, "", self.file_mode())?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ process control

    /// The postmaster command line (spec §3): `-D`, `--config-file`, protected GUCs.
    fn postmaster_args(&self, params: &BTreeMap<String, String>) -> Vec<String> {
        let mut args = vec![
            "-D".to_string(),
            self.s.data_dir.display().to_string(),
            format!("--config-file={}", self.config_file().display()),
        ];
        for g in CMDLINE_GUCS {
            if let Some(v) = params.get(g) {
                args.push(format!("--{g}={v}"));
            }
        }
        args
    }

    /// Starts the postmaster directly (not via pg_ctl) in a new session, detached: it
    /// outlives the caller. pg_hba.conf is rewritten first when configured, recovery
    /// settings are removed from postgresql.auto.conf, and protected GUCs go on the command
    /// line (raised to pg_controldata's on a standby). stdout/stderr are appended to
    /// [`Postgres::postmaster_log_path`]. Waits (up to `pg_ctl_timeout`) until
    /// `pg_isready` reports accepting connections; `StartFailed` when the postmaster
    /// exits, `StillStarting` when it is alive but not ready in time. Already running → Ok.
    pub async fn start(&self) -> Result<(), PgError> {
        if self.is_running() {
            tracing::info!("postgres is already running");
            return Ok(());
        }
        if !self.s.data_dir.join("PG_VERSION").exists() {
            return Err(PgError::Invalid(format!(
                "cannot start postgres: {} is not a data directory",
                self.s.data_dir.display()
            )));
        }
        self.write_pg_hba()?;
        let keep_recovery = self
            .s
            .custom_bootstrap
            .as_ref()
            .is_some_and(|c| c.keep_existing_recovery_conf);
        if !keep_recovery {
            self.sanitize_auto_conf()?;
        }
        let standby = self.s.data_dir.join("standby.signal").exists();
        let params = self.parameters_for(standby);
        let args = self.postmaster_args(&params);

        let mut cmd = self.std_cmd("postgres");
        cmd.args(&args);
        if let Some(stale) = read_pid_file(&self.s.data_dir) {
            if pid_alive(stale) && !looks_like_postmaster(stale, &self.s.data_dir) {
                cmd.env("PG_GRANDPARENT_PID", stale.to_string());
            }
        }
        cmd.stdin(Stdio::null());
        let log = self.postmaster_log_path();
        let logf = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log);
        match logf.and_then(|f| f.try_clone().map(|g| (f, g))) {
            Ok((out, err)) => {
                let _ = self.chown(&log);
                cmd.stdout(out).stderr(err);
            }
            Err(e) => {
                tracing::warn!(
                    "cannot open {}: {e}; postmaster output discarded",
                    log.display()
                );
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        // SAFETY: setsid() is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let desc = describe(
            &self.tool("postgres"),
            &args.iter().map(OsString::from).collect::<Vec<_>>(),
        );
        tracing::info!("starting {desc}");
        let mut child = cmd.spawn().map_err(|e| PgError::Spawn {
            cmd: desc.clone(),
            source: e,
        })?;
        let child_pid = child.id() as i32;
        let exited: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let exited2 = exited.clone();
        // Reap the postmaster when it exits (no zombie) without tying its life to ours.
        let spawned = std::thread::Builder::new()
            .name(format!("postmaster-{child_pid}"))
            .spawn(move || {
                let st = match child.wait() {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                if let Ok(mut g) = exited2.lock() {
                    *g = Some(st);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot spawn postmaster reaper thread: {e}");
        }

        let timeout = self.s.pg_ctl_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let gone = exited.lock().map(|g| g.clone()).unwrap_or(None);
            if let Some(st) = gone {
                return Err(PgError::StartFailed(format!(
                    "postmaster exited ({st}); {}: {}",
                    log.display(),
                    log_tail(&log)
                )));
            }
            if !pid_alive(child_pid) {
                return Err(PgError::StartFailed(format!(
                    "postmaster {child_pid} is gone; {}: {}",
                    log.display(),
                    log_tail(&log)
                )));
            }
            if self.ready_state().await == ReadyState::Accepting {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PgError::StillStarting(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The trusting pg_hba.conf of a custom bootstrap must not become the backup that
        // post_bootstrap restores.
        if self.s.custom_bootstrap.is_none() {
            if let Err(e) = self.save_configuration_files() {
                tracing::warn!("cannot back up configuration files: {e}");
            }
        }
        Ok(())
    }

    /// Stops the postmaster: `Smart`→SIGTERM, `Fast`→SIGINT, `Immediate`→SIGQUIT; waits up
    /// to `timeout`, then SIGQUIT (5 s), then SIGKILL of the postmaster and its children.
    /// Ok when it is not running. No CHECKPOINT is issued here (call
    /// [`Postgres::checkpoint`] first if wanted).
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        // Our own monitoring connection must not hold up a smart shutdown. Not waited
        // for when a query is using it: a fencing stop must never queue behind a hung
        // query (and a fast or immediate stop ends that session anyway).
        if let Ok(mut conn) = self.monitor.0.try_lock() {
            conn.take();
        }
        let sig = match mode {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        tracing::info!("stopping postmaster {pid} with {sig}");
        if !signal(pid, sig)? || wait_gone(pid, timeout).await {
            return Ok(());
        }
        if mode != StopMode::Immediate {
            tracing::warn!("postmaster {pid} did not stop within {timeout:?}; sending SIGQUIT");
            if !signal(pid, Signal::SIGQUIT)? || wait_gone(pid, Duration::from_secs(5)).await {
                return Ok(());
            }
        }
        tracing::warn!("postmaster {pid} still alive; sending SIGKILL to it and its children");
        kill_all(pid);
        if wait_gone(pid, Duration::from_secs(10)).await {
            // children may linger for a moment
            for c in children_of(pid) {
                let _ = signal(c, Signal::SIGKILL);
            }
            Ok(())
        } else {
            Err(PgError::StopFailed(format!(
                "postmaster {pid} survived SIGKILL"
            )))
        }
    }

    /// Fast stop (bounded by `pg_ctl_timeout`) followed by [`Postgres::start`].
    pub async fn restart(&self) -> Result<(), PgError> {
        self.stop(StopMode::Fast, self.s.pg_ctl_timeout).await?;
        self.start().await
    }

    /// `pg_ctl reload -D <data_dir>`.
    pub async fn reload(&self) -> Result<(), PgError> {
        let mut cmd = self.tokio_cmd("pg_ctl");
        cmd.arg("reload").arg("-D").arg(&self.s.data_dir);
        self.run(cmd, Some(Duration::from_secs(30)))
            .await
            .map(|_| ())
    }

    /// `pg_ctl promote -w -t <pg_ctl_timeout> -D <data_dir>`: returns when PostgreSQL left
    /// recovery (pg_ctl waits), so the node is primary afterwards.
    pub async fn promote(&self) -> Result<(), PgError> {
        let mut cmd = self.tokio_cmd("pg_ctl");
        cmd.arg("promote")
            .arg("-w")
            .arg("-t")
            .arg(self.s.pg_ctl_timeout.as_secs().max(1).to_string())
            .arg("-D")
            .arg(&self.s.data_dir);
        self.run(cmd, Some(self.s.pg_ctl_timeout + Duration::from_secs(10)))
            .await
            .map(|_| ())
    }

    // ------------------------------------------------------------------ queries

    /// Runs `run` on the persistent monitoring connection (`application_name = 'Patroni
    /// heartbeat'`, connect_timeout 3 s, statement_timeout 2 s), opening it when there is
    /// none or it was closed, bounded by [`MONITOR_QUERY_TIMEOUT`]. Any error drops the
    /// connection. A reused connection that fails other than by a timeout (e.g. it was
    /// cut by a restart of PostgreSQL that the client had not noticed yet) is replaced
    /// and the query tried once more, so the answer is what a fresh connection gets.
    async fn on_monitor<T, F, Fut>(&self, what: &str, run: F) -> Result<T, PgError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Client), tokio_postgres::Error>>,
    {
        let mut slot = self.monitor.0.lock().await;
        for attempt in 0..2 {
            let (client, reused) = match slot.take().filter(|c| !c.is_closed()) {
                Some(c) => (c, true),
                None => (
                    self.connect_local("Patroni heartbeat", Some(2000)).await?,
                    false,
                ),
            };
            match tokio::time::timeout(MONITOR_QUERY_TIMEOUT, run(client)).await {
                Ok(Ok((v, client))) => {
                    *slot = Some(client);
                    return Ok(v);
                }
                Ok(Err(e)) if reused && attempt == 0 => {
                    tracing::debug!("monitoring connection failed ({e}); reconnecting");
                }
                Ok(Err(e)) => return Err(PgError::query(what, e)),
                Err(_) => return Err(PgError::Timeout(format!("{what} query"))),
            }
        }
        Err(PgError::Timeout(format!("{what} query")))
    }

    /// The monitoring query over the persistent monitoring connection (see
    /// [`MonitorConn`]; connect_timeout 3 s, statement_timeout 2 s, 5 s in all).
    pub async fn query_status(&self) -> Result<PgStatus, PgError> {
        let row = self
            .on_monitor("status", |c| async move {
                let row = c.query_one(STATUS_SQL, &[]).await?;
                Ok((row, c))
            })
            .await?;
        let get_err = |e: tokio_postgres::Error| PgError::query("status (decode)", e);
        let in_recovery: bool = row.try_get(0).map_err(get_err)?;
        let primary_tli: Option<i64> = row.try_get(1).map_err(get_err)?;
        let flush: Option<String> = row.try_get(2).map_err(get_err)?;
        let receive: Option<String> = row.try_get(3).map_err(get_err)?;
        let replay: Option<String> = row.try_get(4).map_err(get_err)?;
        let paused: bool = row.try_get(5).map_err(get_err)?;
        let replay_ts: Option<String> = row.try_get(6).map_err(get_err)?;
        let version: i32 = row.try_get(7).map_err(get_err)?;
        let start_time: Option<String> = row.try_get(8).map_err(get_err)?;
        let restore_command: Option<String> = row.try_get(9).map_err(get_err)?;
        let checkpoint_tli: Option<i64> = row.try_get(10).map_err(get_err)?;
        let wr_status: Option<String> = row.try_get(11).map_err(get_err)?;
        let received_tli: Option<i64> = row.try_get(12).map_err(get_err)?;
        let sender_host: Option<String> = row.try_get(13).map_err(get_err)?;
        let sender_port: Option<i32> = row.try_get(14).map_err(get_err)?;
        let repl_json: Option<String> = row.try_get(15).map_err(get_err)?;
        let slots_json: Option<String> = row.try_get(16).map_err(get_err)?;
        let ssn: Option<String> = row.try_get(17).map_err(get_err)?;
        let synchronous_commit: Option<String> = row.try_get(18).map_err(get_err)?;
        let conf_load_time: Option<String> = row.try_get(19).map_err(get_err)?;

        let receive_lsn = receive.as_deref().and_then(parse_lsn);
        let replay_lsn = replay.as_deref().and_then(parse_lsn);
        let (timeline, wal_position, replication_state) = if in_recovery {
            let tl = received_tli
                .or(checkpoint_tli)
                .and_then(|t| u32::try_from(t).ok());
            let pos = receive_lsn.unwrap_or(0).max(replay_lsn.unwrap_or(0));
            let state = replication_state(true, wr_status.as_deref(), restore_command.as_deref());
            (tl, pos, state)
        } else {
            (
                primary_tli.and_then(|t| u32::try_from(t).ok()),
                flush.as_deref().and_then(parse_lsn).unwrap_or(0),
                None,
            )
        };
        let replication: Vec<ReplicationRow> = match repl_json {
            Some(j) => serde_json::from_str(&j).map_err(|e| PgError::Parse {
                what: "pg_stat_replication json".into(),
                detail: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let raw_slots: Vec<RawSlot> = match slots_json {
            Some(j) => serde_json::from_str(&j).map_err(|e| PgError::Parse {
                what: "pg_replication_slots json".into(),
                detail: e.to_string(),
            })?,
            None => Vec::new(),
        };
        let slots = raw_slots.into_iter().map(RawSlot::into_info).collect();
        let primary_conninfo_host_port = match (sender_host, sender_port) {
            (Some(h), Some(p)) => u16::try_from(p).ok().map(|p| (h, p)),
            _ => None,
        };
        Ok(PgStatus {
            in_recovery,
            timeline,
            wal_position,
            receive_lsn,
            replay_lsn,
            replication_state,
            server_version: u32::try_from(version).unwrap_or(0),
            postmaster_start_time: start_time.map(python_timestamp).unwrap_or_default(),
            replication,
            replayed_timestamp: replay_ts.map(python_timestamp),
            replay_paused: in_recovery && paused,
            primary_conninfo_host_port,
            slots,
            synchronous_standby_names: ssn.unwrap_or_default(),
            synchronous_commit: synchronous_commit.unwrap_or_default(),
            conf_load_time,
        })
    }

    /// A persistent connection for reading WAL positions between HA cycles
    /// (`application_name = 'Patroni restapi'`, statement_timeout 1 s).
    pub async fn wal_monitor(&self) -> Result<WalMonitor, PgError> {
        let client = self.connect_local("Patroni restapi", Some(1000)).await?;
        Ok(WalMonitor { client })
    }

    /// Runs one short query (statement_timeout 2 s) over the persistent monitoring
    /// connection and returns every row as text columns (`None` = SQL NULL): for the
    /// questions the HA loop asks every cycle.
    pub async fn monitor_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let msgs = self
            .on_monitor(&first_words(sql), |c| async move {
                let msgs = c.simple_query(sql).await?;
                Ok((msgs, c))
            })
            .await?;
        Ok(text_rows(msgs))
    }

    /// Runs `sql` (may contain several statements) as the superuser via the simple query
    /// protocol; no statement timeout.
    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        let client = self.connect_local("Patroni", None).await?;
        client
            .simple_query(sql)
            .await
            .map(|_| ())
            .map_err(|e| PgError::query(&first_words(sql), e))
    }

    /// Runs one query as the superuser (simple protocol) and returns every row as text
    /// columns (`None` = SQL NULL).
    pub async fn query_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let client = self.connect_local("Patroni", None).await?;
        let msgs = client
            .simple_query(sql)
            .await
            .map_err(|e| PgError::query(&first_words(sql), e))?;
        Ok(text_rows(msgs))
    }

    /// `CHECKPOINT` (no statement timeout).
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        self.execute("CHECKPOINT").await
    }

    /// Creates or updates the bootstrap roles (spec §5, ha-loop.md B4): superuser password,
    /// replication user `WITH LOGIN REPLICATION PASSWORD …`, and a distinct rewind user with
    /// EXECUTE on the four pg_rewind functions. Each statement runs in a `DO` block with
    /// `synchronous_commit = local`; statement logging is disabled for the session.
    pub async fn post_bootstrap(&self) -> Result<(), PgError> {
        let client = self.connect_local("Patroni", None).await?;
        client
            .batch_execute(
                "SET log_statement TO none; SET log_min_duration_statement TO -1; \
                 SET log_min_error_statement TO 'log'",
            )
            .await
            .map_err(|e| PgError::query("SET log_statement", e))?;
        if let Err(e) = client
            .batch_execute("SET pg_stat_statements.track_utility TO off")
            .await
        {
            tracing::debug!("cannot disable pg_stat_statements.track_utility: {e}");
        }
        let su = &self.s.superuser;
        if su.password.is_some() {
            create_or_update_role(&client, su, &["SUPERUSER"]).await?;
        }
        create_or_update_role(&client, &self.s.replication, &["REPLICATION"]).await?;
        if let Some(rw) = &self.s.rewind {
            if rw.username != su.username {
                create_or_update_role(&client, rw, &[]).await?;
                for f in [
                    "pg_ls_dir(text, boolean, boolean)",
                    "pg_stat_file(text, boolean)",
                    "pg_read_binary_file(text)",
                    "pg_read_binary_file(text, bigint, bigint, boolean)",
                ] {
                    let body = format!(
                        "\nBEGIN\n    SET local synchronous_commit = 'local';\n    GRANT EXECUTE ON function pg_catalog.{f} TO {};\nEND;",
                        quote_ident(&rw.username)
                    );
                    client
                        .batch_execute(&do_block(&body))
                        .await
                        .map_err(|e| PgError::query(&format!("GRANT EXECUTE ON {f}"), e))?;
                }
            }
        }
        Ok(())
    }

    /// Runs the `bootstrap.post_bootstrap` script (config.md, postgres-management.md §9):
    /// `argv` plus, as its last argument, the local superuser's connection string
    /// ([`tool_conninfo`]: host, port, dbname, user and the superuser's TLS options, never
    /// the password). With a superuser password the pgpass file is written for the local
    /// address and `PGPASSFILE` points at it, as Patroni does;
    /// `PGOPTIONS=-c synchronous_commit=local -c statement_timeout=0`. The script's
    /// stdout/stderr are the agent's. Err when it cannot start or exits non-zero.
    pub async fn run_post_bootstrap_script(&self, argv: &[String]) -> Result<(), PgError> {
        let Some((prog, args)) = argv.split_first() else {
            return Ok(());
        };
        let host = match self.local_target() {
            LocalTarget::Tcp(h) => h,
            LocalTarget::Socket(d) => d.display().to_string(),
        };
        let su = &self.s.superuser;
        let (dsn, service) = self.tool_conn(&host, self.s.port, su)?;
        let mut cmd = std::process::Command::new(prog);
        self.prepare_std(&mut cmd);
        cmd.args(args)
            .arg(&dsn)
            .env(
                "PGOPTIONS",
                "-c synchronous_commit=local -c statement_timeout=0",
            )
            .stdin(Stdio::null());
        if su.password.is_some() {
            self.write_pgpass(&host, self.s.port, su)?;
            cmd.env("PGPASSFILE", &self.s.pgpass);
        }
        if let Some(f) = &service {
            cmd.env("PGSERVICEFILE", &f.0);
        }
        let mut shown: Vec<OsString> = args.iter().map(OsString::from).collect();
        shown.push(OsString::from(&dsn));
        let desc = describe(Path::new(prog), &shown);
        tracing::debug!("running {desc}");
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let status = cmd.status().await.map_err(|e| PgError::Spawn {
            cmd: desc.clone(),
            source: e,
        })?;
        drop(service);
        if status.success() {
            Ok(())
        } else {
            Err(PgError::Command {
                cmd: desc,
                status: status.to_string(),
                output: "see its output above".to_string(),
            })
        }
    }

    /// Superuser connection to another member (`application_name = 'Patroni'`).
    async fn connect_superuser_to(
        &self,
        from: &Upstream,
        statement_timeout_ms: u64,
    ) -> Result<Client, PgError> {
        self.connect_to(
            LocalTarget::Tcp(from.host.clone()),
            from.port,
            &self.s.superuser,
            "Patroni",
            Some(statement_timeout_ms),
        )
        .await
    }

    /// Reads `pg_wal/<TL>.history` of `from` with `pg_read_binary_file` over a normal
    /// superuser connection and returns `(parent timeline, switch LSN)` per line.
    pub async fn timeline_history(
        &self,
        from: &Upstream,
        timeline: u32,
    ) -> Result<Vec<(u32, u64)>, PgError> {
        let client = self.connect_superuser_to(from, 10_000).await?;
        let path = format!("pg_wal/{timeline:08X}.history");
        let row = client
            .query_one(
                "SELECT pg_catalog.convert_from(pg_catalog.pg_read_binary_file($1), 'UTF8')",
                &[&path],
            )
            .await
            .map_err(|e| PgError::query(&format!("read {path}"), e))?;
        let text: String = row
            .try_get(0)
            .map_err(|e| PgError::query(&format!("read {path}"), e))?;
        parse_timeline_history(&text)
    }

    // ------------------------------------------------------------------ replica tools

    /// Removes everything inside the data directory, keeping the directory itself (mode
    /// 0700, owned by `run_as`); a symlinked pg_wal's target is emptied too. A missing data
    /// directory is created.
    pub async fn remove_data_dir(&self) -> Result<(), PgError> {
        let dd = self.s.data_dir.clone();
        let run_as = self.s.run_as;
        tokio::task::spawn_blocking(move || wipe_dir(&dd, run_as))
            .await
            .map_err(|e| PgError::Invalid(format!("wipe task failed: {e}")))?
    }

    /// Clones the data directory from `from` (spec §5): pgpass with the replication
    /// credentials, `PGPASSFILE`, `pg_basebackup --pgdata=<data_dir> -X stream
    /// --dbname=<dsn without password, with the replication user's TLS options>
    /// <basebackup_options>`; 2 attempts 5 s apart, the data directory wiped before each
    /// attempt and after the final failure.
    pub async fn basebackup(&self, from: &Upstream) -> Result<(), PgError> {
        let (dsn, service) = self.tool_conn(&from.host, from.port, &self.s.replication)?;
        let mut last = None;
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            self.remove_data_dir().await?;
            self.write_pgpass(&from.host, from.port, &self.s.replication)?;
            let mut cmd = self.tokio_cmd("pg_basebackup");
            cmd.arg(format!("--pgdata={}", self.s.data_dir.display()))
                .arg("-X")
                .arg("stream")
                .arg(format!("--dbname={dsn}"))
                .args(&self.s.basebackup_options)
                .env("PGPASSFILE", &self.s.pgpass);
            if let Some(f) = &service {
                cmd.env("PGSERVICEFILE", &f.0);
            }
            match self.run(cmd, None).await {
                Ok(_) => {
                    let dd = &self.s.data_dir;
                    std::fs::set_permissions(dd, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| PgError::io("chmod", dd, e))?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!("pg_basebackup attempt {} failed: {e}", attempt + 1);
                    last = Some(e);
                }
            }
        }
        if let Err(e) = self.remove_data_dir().await {
            tracing::warn!("cannot clean data directory after failed basebackup: {e}");
        }
        Err(last.unwrap_or_else(|| PgError::Invalid("pg_basebackup failed".into())))
    }

    /// `archive_command`, when archiving is on (`archive_mode` on or always) and the
    /// command is set in the parameters this library writes.
    pub fn archive_command(&self) -> Option<String> {
        let mode = self
            .s
            .parameters
            .get("archive_mode")?
            .trim()
            .to_ascii_lowercase();
        let on = mode == "always" || crate::settings::parse_pg_bool(&mode) == Some(true);
        let cmd = self.s.parameters.get("archive_command")?;
        (on && !cmd.trim().is_empty()).then(|| cmd.clone())
    }

    /// After a clean shutdown, runs `archive_command` (through `/bin/sh -c`, as
    /// PostgreSQL runs it) for the WAL file holding the shutdown checkpoint
    /// (pg_control's `Latest checkpoint's REDO WAL file`): PostgreSQL archives only
    /// completed files, and a standby cluster that promotes from the archive needs that
    /// record to continue this timeline without a rewind. Returns the file archived.
    pub async fn archive_shutdown_checkpoint_wal(
        &self,
        archive_command: &str,
    ) -> Result<String, PgError> {
        let cd = self.controldata().await?;
        let wal_file = cd
            .get("Latest checkpoint's REDO WAL file")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                PgError::Invalid("cannot extract latest checkpoint's WAL file name".into())
            })?
            .to_string();
        let wal_dir = self.s.data_dir.join("pg_wal");
        let line =
            build_archiver_command(archive_command, &wal_dir.display().to_string(), &wal_file);
        let mut cmd = std::process::Command::new("/bin/sh");
        self.prepare_std(&mut cmd);
        cmd.arg("-c")
            .arg(&line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        self.run(cmd, Some(self.s.pg_ctl_timeout)).await?;
        Ok(wal_file)
    }

    /// Single-user crash recovery: `postgres --single -D <data_dir> -c archive_mode=on -c
    /// archive_command=false template1 < /dev/null`, after removing standby.signal and
    /// recovery.signal (standby mode is impossible in single-user mode). Skipped when
    /// backup_label exists (PG ≥ 15).
    pub async fn crash_recovery(&self) -> Result<(), PgError> {
        let dd = &self.s.data_dir;
        if self.major_version().unwrap_or(15) >= 15 && dd.join("backup_label").exists() {
            return Ok(());
        }
        for f in ["standby.signal", "recovery.signal"] {
            let p = dd.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
            }
        }
        let mut cmd = self.tokio_cmd("postgres");
        cmd.arg("--single").arg("-D").arg(dd);
        if self.s.config_dir != self.s.data_dir {
            cmd.arg(format!("--config-file={}", self.config_file().display()));
        }
        cmd.args([
            "-c",
            "archive_mode=on",
            "-c",
            "archive_command=false",
            "template1",
        ]);
        self.run(
            cmd,
            Some(self.s.pg_ctl_timeout.max(Duration::from_secs(600))),
        )
        .await
        .map(|_| ())
    }

    /// Rewinds the (stopped) data directory to `from` (spec §6 step 4). A running
    /// postmaster is stopped (fast) first; when pg_controldata's state is not `shut down`
    /// / `shut down in recovery`, single-user crash recovery runs first. Then
    /// `pg_rewind [--config-file=…] -D <data_dir> --source-server '<dsn>'` (name and TLS
    /// options of the rewind user, else the superuser) with that user's password in
    /// pgpass, `PGPASSFILE`, `LANG=C`, `LC_ALL=C`, `PGOPTIONS=-c statement_timeout=0`.
    pub async fn rewind(&self, from: &Upstream) -> Result<(), PgError> {
        // Before touching anything local: the source must be a primary whose pg_control
        // already carries its new timeline, or pg_rewind computes the divergence from
        // the old one and leaves a data directory that cannot start.
        self.ensure_rewind_source(from).await?;
        if self.is_running() {
            self.stop(StopMode::Fast, self.s.pg_ctl_timeout).await?;
        }
        let cd = self.controldata().await?;
        if !matches!(
            cd.state(),
            Some("shut down") | Some("shut down in recovery")
        ) {
            tracing::info!(
                "data directory state is {:?}: running crash recovery in single-user mode",
                cd.state()
            );
            self.crash_recovery().await?;
        }
        // pg_rewind runs its own single-user crash recovery when the target was not
        // shut down cleanly, which refuses to run in standby mode; the signal files are
        // written again when PostgreSQL starts as a replica.
        for f in ["standby.signal", "recovery.signal"] {
            let p = self.s.data_dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
            }
        }
        let creds = self
            .s
            .rewind
            .clone()
            .unwrap_or_else(|| self.s.superuser.clone());
        self.write_pgpass(&from.host, from.port, &creds)?;
        let (dsn, service) = self.tool_conn(&from.host, from.port, &creds)?;
        let mut cmd = self.tokio_cmd("pg_rewind");
        if self.s.config_dir != self.s.data_dir && self.major_version().unwrap_or(15) >= 15 {
            cmd.arg(format!("--config-file={}", self.config_file().display()));
        }
        cmd.arg("-D")
            .arg(&self.s.data_dir)
            .arg("--source-server")
            .arg(dsn)
            .env("PGPASSFILE", &self.s.pgpass)
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .env("PGOPTIONS", "-c statement_timeout=0");
        if let Some(f) = &service {
            cmd.env("PGSERVICEFILE", &f.0);
        }
        self.run(cmd, None).await.map(|_| ())
    }

    /// Checks that `from` can be rewound from (postgres-management.md §6 step 3): it is
    /// not in recovery, and its last checkpoint is on its current timeline. A freshly
    /// promoted primary's pg_control still names the old timeline until its first
    /// checkpoint; then one `CHECKPOINT` is requested there (superuser) and the check
    /// repeated. Err names what is missing ("Waiting for checkpoint on … before rewind").
    pub async fn ensure_rewind_source(&self, from: &Upstream) -> Result<(), PgError> {
        let client = self.connect_superuser_to(from, 60_000).await?;
        let timelines = || async {
            let row = client
                .query_one(
                    "SELECT pg_catalog.pg_is_in_recovery(), \
                     (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::int8, \
                     CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE ('x' || \
                       pg_catalog.left(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 8))::bit(32)::int8 END",
                    &[],
                )
                .await
                .map_err(|e| PgError::query("rewind source timelines", e))?;
            let get_err = |e: tokio_postgres::Error| PgError::query("rewind source timelines", e);
            let in_recovery: bool = row.try_get(0).map_err(get_err)?;
            let checkpoint_tl: Option<i64> = row.try_get(1).map_err(get_err)?;
            let current_tl: Option<i64> = row.try_get(2).map_err(get_err)?;
            Ok::<_, PgError>((in_recovery, checkpoint_tl, current_tl))
        };
        let where_ = format!("{}:{}", from.host, from.port);
        let (in_recovery, checkpoint_tl, current_tl) = timelines().await?;
        if in_recovery {
            return Err(PgError::Invalid(format!(
                "the rewind source {where_} is still in recovery"
            )));
        }
        if checkpoint_tl == current_tl {
            return Ok(());
        }
        tracing::info!(
            "rewind source {where_}: last checkpoint on timeline {checkpoint_tl:?}, current \
             timeline {current_tl:?}; requesting a CHECKPOINT there"
        );
        client
            .simple_query("CHECKPOINT")
            .await
            .map_err(|e| PgError::query("CHECKPOINT on the rewind source", e))?;
        let (_, checkpoint_tl, current_tl) = timelines().await?;
        if checkpoint_tl == current_tl {
            Ok(())
        } else {
            Err(PgError::Invalid(format!(
                "Waiting for checkpoint on {where_} before rewind"
            )))
        }
    }

    /// `use_pg_rewind` and `pg_rewind --help` works and pg_controldata shows
    /// `wal_log_hints` on or data checksums enabled.
    pub fn can_rewind(&self, use_pg_rewind: bool) -> bool {
        if !use_pg_rewind {
            return false;
        }
        // The HA loop asks every cycle: once `pg_rewind --help` has worked, it is not run
        // again (new settings, e.g. another bin_dir, make a new `Postgres`).
        if !self.rewind_runs.load(std::sync::atomic::Ordering::Relaxed) {
            let ok = self
                .std_cmd("pg_rewind")
                .arg("--help")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return false;
            }
            self.rewind_runs
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match self.controldata_sync_cached() {
            Ok(cd) => cd.wal_log_hints_on() || cd.data_checksums_on(),
            Err(_) => false,
        }
    }
}

/// Creates `dir` and every missing parent with mode 0700, owned by `run_as` (None = the
/// current user), as Patroni creates a data directory whose parent does not exist yet.
/// Existing directories are left alone.
pub fn create_private_dir_all(dir: &Path, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(p) {
            Ok(()) => {}
            // created concurrently: someone else's, leave it as it is
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(PgError::io("create directory", p, e)),
        }
        // DirBuilder's mode is filtered by the umask; 0700 is what we mean.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::io("chmod", p, e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| PgError::io("chown", p, e))?;
        }
    }
    Ok(())
}

/// A private file in the system temp dir, removed when dropped.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh path `<tmp>/<prefix>.<pid>.<n>` (not created).
pub(crate) fn temp_path(prefix: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("{prefix}.{}.{n}.{nanos}", std::process::id()))
}

/// Parses a timeline history file: `parentTLI<TAB>switchpoint<TAB>reason` lines.
pub fn parse_timeline_history(text: &str) -> Result<Vec<(u32, u64)>, PgError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (it.next(), it.next()) else {
            return Err(PgError::Parse {
                what: "timeline history".into(),
                detail: format!("bad line {line:?}"),
            });
        };
        match (tli.parse::<u32>().ok(), parse_lsn(lsn)) {
            (Some(t), Some(l)) => out.push((t, l)),
            _ => {
                return Err(PgError::Parse {
                    what: "timeline history".into(),
                    detail: format!("bad line {line:?}"),
                })
            }
        }
    }
    Ok(out)
}

fn parse_version_output(s: &str) -> Option<u32> {
    let rest = s.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn log_tail(p: &Path) -> String {
    match std::fs::read(p) {
        Ok(b) => tail(&b, TAIL),
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// `DO <tag>…<tag>` with a dollar-quote tag not present in the body.
fn do_block(body: &str) -> String {
    let mut tag = "$$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$warden{n}$");
    }
    format!("DO {tag}{body}{tag}")
}

async fn create_or_update_role(
    client: &Client,
    creds: &Credentials,
    options: &[&str],
) -> Result<(), PgError> {
    let mut opts: Vec<String> = options.iter().map(|o| o.to_uppercase()).collect();
    if !opts.iter().any(|o| o == "LOGIN" || o == "NOLOGIN") {
        opts.push("LOGIN".to_string());
    }
    if let Some(pw) = &creds.password {
        opts.push("PASSWORD".to_string());
        opts.push(quote_literal(pw));
    }
    let opts = opts.join(" ");
    let ident = quote_ident(&creds.username);
    let body = format!(
        "\nBEGIN\n    SET local synchronous_commit = 'local';\n    PERFORM * FROM pg_catalog.pg_authid WHERE rolname = {};\n    IF FOUND THEN\n        ALTER ROLE {ident} WITH {opts};\n    ELSE\n        CREATE ROLE {ident} WITH {opts};\n    END IF;\nEND;",
        quote_literal(&creds.username)
    );
    client
        .batch_execute(&do_block(&body))
        .await
        .map_err(|e| PgError::query(&format!("create or update role {}", creds.username), e))
}

fn wipe_dir(dd: &Path, run_as: Option<(u32, u32)>) -> Result<(), PgError> {
    match std::fs::read_dir(dd) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir_all(dd, run_as)?;
        }
        Err(e) => return Err(PgError::io("read directory", dd, e)),
        Ok(rd) => {
            for entry in rd {
                let entry = entry.map_err(|e| PgError::io("read directory", dd, e))?;
                let p = entry.path();
                let ft = entry.file_type().map_err(|e| PgError::io("stat", &p, e))?;
                if ft.is_symlink() {
                    if entry.file_name() == "pg_wal" {
                        if let Ok(target) = std::fs::read_link(&p) {
                            let target = if target.is_absolute() {
                                target
                            } else {
                                dd.join(target)
                            };
                            if target.is_dir() {
                                wipe_contents(&target)?;
                            }
                        }
                    }
                    std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
                } else if ft.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(|e| PgError::io("remove", &p, e))?;
                } else {
                    std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
                }
            }
        }
    }
    std::fs::set_permissions(dd, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io("chmod", dd, e))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dd, Some(uid), Some(gid))
            .map_err(|e| PgError::io("chown", dd, e))?;
    }
    Ok(())
}

fn wipe_contents(dir: &Path) -> Result<(), PgError> {
    let rd = std::fs::read_dir(dir).map_err(|e| PgError::io("read directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| PgError::io("read directory", dir, e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| PgError::io("stat", &p, e))?;
        if ft.is_dir() {
            std::fs::remove_dir_all(&p).map_err(|e| PgError::io("remove", &p, e))?;
        } else {
            std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
        }
    }
    Ok(())
}

/// A replica's `replication_state` (Patroni's): `streaming` when the WAL receiver
/// streams, else `in archive recovery` when a `restore_command` is set, else None.
fn replication_state(
    in_recovery: bool,
    wal_receiver_status: Option<&str>,
    restore_command: Option<&str>,
) -> Option<String> {
    if !in_recovery {
        None
    } else if wal_receiver_status == Some("streaming") {
        Some("streaming".to_string())
    } else if restore_command.is_some_and(|c| !c.is_empty()) {
        Some("in archive recovery".to_string())
    } else {
        None
    }
}

/// The rows of a simple-protocol answer as text columns (`None` = SQL NULL).
fn text_rows(msgs: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A persistent superuser connection that reads [`WalPositions`]; see
/// [`Postgres::wal_monitor`]. Dropping it closes the connection.
pub struct WalMonitor {
    client: Client,
}

impl WalMonitor {
    /// Reads the current positions (bounded: 2 s, statement_timeout 1 s). After an
    /// error the connection may be dead: open a new monitor.
    pub async fn read(&self) -> Result<WalPositions, PgError> {
        let row =
            match tokio::time::timeout(Duration::from_secs(2), self.client.query_one(WAL_SQL, &[]))
                .await
            {
                Ok(r) => r.map_err(|e| PgError::query("wal positions", e))?,
                Err(_) => return Err(PgError::Timeout("wal positions query".into())),
            };
        let get_err = |e: tokio_postgres::Error| PgError::query("wal positions (decode)", e);
        let in_recovery: bool = row.try_get(0).map_err(get_err)?;
        let flush: Option<String> = row.try_get(1).map_err(get_err)?;
        let receive: Option<String> = row.try_get(2).map_err(get_err)?;
        let replay: Option<String> = row.try_get(3).map_err(get_err)?;
        let paused: bool = row.try_get(4).map_err(get_err)?;
        let replay_ts: Option<String> = row.try_get(5).map_err(get_err)?;
        let restore_command: Option<String> = row.try_get(6).map_err(get_err)?;
        let wr_status: Option<String> = row.try_get(7).map_err(get_err)?;
        Ok(WalPositions {
            replication_state: replication_state(
                in_recovery,
                wr_status.as_deref(),
                restore_command.as_deref(),
            ),
            in_recovery,
            flush_lsn: flush.as_deref().and_then(parse_lsn),
            receive_lsn: receive.as_deref().and_then(parse_lsn),
            replay_lsn: replay.as_deref().and_then(parse_lsn),
            replay_paused: in_recovery && paused,
            replayed_timestamp: replay_ts.map(python_timestamp),
        })
    }

    /// The server closed the connection (restart, crash, terminate).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg_controldata runs again only after pg_control was written; `pg_rewind --help`
    /// only until it has worked once. Counted with stand-in tools that log each run.
    #[test]
    fn controldata_and_rewind_probe_are_not_rerun_while_nothing_changed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("global")).expect("mkdir");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let control = data.join("global/pg_control");
        std::fs::write(&control, "x").expect("pg_control");
        let runs = dir.path().join("runs");
        for (tool, out) in [
            (
                "pg_controldata",
                "Database system identifier:           7\nData page checksum version:           1\n",
            ),
            ("pg_rewind", ""),
        ] {
            let script = format!(
                "#!/bin/sh\necho {tool} >> '{}'\nprintf '{out}'\n",
                runs.display()
            );
            let path = bin.join(tool);
            std::fs::write(&path, script).expect("script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let count = |tool: &str| {
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .filter(|l| *l == tool)
                .count()
        };
        let pg = Postgres::new(PgSettings {
            bin_dir: bin.clone(),
            data_dir: data.clone(),
            ..PgSettings::default()
        });
        assert!(matches!(pg.data_dir_state(), DataDirState::Initialized { sysid } if sysid == "7"));
        assert!(pg.can_rewind(true));
        assert!(pg.can_rewind(true));
        assert!(matches!(
            pg.data_dir_state(),
            DataDirState::Initialized { .. }
        ));
        assert_eq!(count("pg_controldata"), 1, "pg_control unchanged: cached");
        assert_eq!(count("pg_rewind"), 1, "pg_rewind ran once");
        // A write of pg_control (a checkpoint, a promotion) is seen at the next call.
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&control)
            .and_then(|f| f.set_modified(later))
            .expect("touch");
        assert!(pg.can_rewind(true));
        assert_eq!(count("pg_controldata"), 2);
        // Clones share the cache; a new `Postgres` (new settings) starts afresh.
        assert!(pg.clone().can_rewind(true));
        assert_eq!(count("pg_controldata"), 2);
        assert!(Postgres::new(pg.settings().clone()).can_rewind(true));
        assert_eq!(count("pg_controldata"), 3);
        assert_eq!(count("pg_rewind"), 2);
    }

    /// The agent spawns these futures on a multi-threaded runtime.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(
        pg: &Postgres,
        up: &Upstream,
        names: &[String],
        session: &crate::SlotSession,
    ) {
        fn send<T: Send>(_: T) {}
        send(pg.start());
        send(pg.stop(StopMode::Fast, Duration::from_secs(1)));
        send(pg.restart());
        send(pg.query_status());
        send(pg.basebackup(up));
        send(pg.rewind(up));
        send(pg.slot_session(None));
        send(pg.read_slot_states(up, names));
        send(session.drop_slot("x"));
        send(session.advance_slot("x", 1));
        send(pg.post_bootstrap());
        send(pg.run_post_bootstrap_script(&[]));
        send(pg.timeline_history(up, 2));
        send(pg.initdb(&[]));
        send(pg.promote());
        send(pg.remove_data_dir());
    }

    #[test]
    fn history_parse() {
        let text = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n";
        assert_eq!(
            parse_timeline_history(text).unwrap(),
            vec![(1, 0x300_0148), (2, 0x500_0000)]
        );
        assert!(parse_timeline_history("x y").is_err());
    }

    #[test]
    fn version_parse() {
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 15.4 (Debian 15.4-1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(parse_version_output("nope"), None);
    }

    #[test]
    fn recovery_overrides_replace_the_configured_values() {
        let dir = std::env::temp_dir().join(format!("warden-pg-recovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = PgSettings {
            data_dir: dir.clone(),
            config_dir: dir.clone(),
            pgpass: dir.join("pgpass"),
            ..PgSettings::default()
        };
        s.parameters
            .insert("restore_command".into(), "cp /main/%f %p".into());
        let pg = Postgres::new(s);
        let up = Upstream {
            host: "10.0.0.9".into(),
            port: 5433,
            slot: Some("pm_1".into()),
        };
        let overrides: BTreeMap<String, String> = [
            ("restore_command", "cp /remote/%f %p"),
            ("recovery_min_apply_delay", "1min"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        pg.write_config_with(Some(&up), true, &overrides)
            .expect("write");
        let text = std::fs::read_to_string(dir.join("postgresql.conf")).expect("read");
        let (general, recovery) = text.split_once("# recovery.conf").expect("recovery block");
        assert!(!text.contains("/main/"), "{text}");
        assert!(!general.contains("restore_command"), "{text}");
        for line in [
            "restore_command = 'cp /remote/%f %p'",
            "recovery_min_apply_delay = '1min'",
            "primary_slot_name = 'pm_1'",
        ] {
            assert!(recovery.contains(line), "{line} missing:\n{text}");
        }
        assert!(recovery.contains("host=10.0.0.9 port=5433"), "{text}");
        assert!(dir.join("standby.signal").exists());
        // Without overrides the configured value stays where the configuration put it.
        pg.write_config(None, true).expect("write");
        let text = std::fs::read_to_string(dir.join("postgresql.conf")).expect("read");
        assert!(
            text.contains("restore_command = 'cp /main/%f %p'"),
            "{text}"
        );
        assert!(!text.contains("primary_conninfo"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn do_blocks() {
        assert_eq!(do_block("x"), "DO $$x$$");
        assert_eq!(do_block("a$$b"), "DO $warden1$a$$b$warden1$");
    }

    #[test]
    fn local_target_rules() {
        let mk = |l: &str| {
            Postgres::new(PgSettings {
                listen_addresses: l.to_string(),
                ..PgSettings::default()
            })
        };
        assert!(matches!(mk("0.0.0.0").local_target(), LocalTarget::Tcp(h) if h == "127.0.0.1"));
        assert!(matches!(mk("10.0.0.1,*").local_target(), LocalTarget::Tcp(h) if h == "127.0.0.1"));
        assert!(matches!(mk("localhost").local_target(), LocalTarget::Tcp(h) if h == "localhost"));
        assert!(
            matches!(mk("10.0.0.1, 10.0.0.2").local_target(), LocalTarget::Tcp(h) if h == "10.0.0.1")
        );
        let mut s = PgSettings {
            use_unix_socket: true,
            ..PgSettings::default()
        };
        s.parameters
            .insert("unix_socket_directories".into(), "@abstract, /run/x".into());
        assert!(
            matches!(Postgres::new(s).local_target(), LocalTarget::Socket(d) if d == Path::new("/run/x"))
        );
    }
}
