//! Every patronictl command except `list`/`topology` (spec/ctl.md §3), with
//! patronictl's prompts, messages and output (Patroni 4.1.5 `ctl.py`).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::{Map, Value};
use warden_core::cluster::{Cluster, Member};
use warden_ctl::difflib::show_diff_lines;
use warden_ctl::editcfg::{apply_config_changes, apply_yaml, format_config};
use warden_ctl::members::{
    all_members, any_member, check_pg_version, conn_dbname, conn_host_port, failover_body,
    failover_candidates, format_pg_version, history_rows, is_standby_cluster, is_synchronous_mode,
    leader_first, leader_member, loop_wait, manual_failover_value, pause_body, py_list_repr,
    reinit_body, restart_body, Role,
};
use warden_ctl::pyfmt::{json_dumps, py_str, yaml_dump};
use warden_ctl::render::{pretty_table, render_list, Format, ListOptions};
use warden_ctl::sched::{next_hour_example, parse_scheduled, timestamp, Scheduled};
use warden_dcs::{Dcs, EtcdDcs};
use warden_http::{endpoint_url, HttpError, Response, RestClient};

use crate::{
    config_path, connect_dcs, log_warning, resolve_config, Cli, Command, CtlConfig, OutputFormat,
};

/// The user closed stdin at a prompt (click's `Abort`: `Aborted!`, exit 1).
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aborted!")
    }
}

impl std::error::Error for Aborted {}

// ---------------------------------------------------------------------------
// Arguments

/// `[CLUSTER_NAME] [--group G]`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Cluster name (default: `scope` from the configuration)
    pub cluster_name: Option<String>,
    /// Citus group (accepted for compatibility; Citus is not supported)
    #[arg(long)]
    pub group: Option<i64>,
}

#[derive(Args, Debug)]
pub struct DsnArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// Give a dsn of any member with this role
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<Role>,
    /// Generate a dsn for this member
    #[arg(short = 'm', long)]
    pub member: Option<String>,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// Output format (pretty, tsv, json, yaml)
    #[arg(long = "format", default_value = "tsv")]
    pub fmt: String,
    /// Execute the SQL commands from this file
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// force password prompt
    #[arg(long)]
    pub password: bool,
    /// database user name
    #[arg(short = 'U', long)]
    pub username: Option<String>,
    /// Auto update the screen every 2 seconds
    #[arg(short = 'W')]
    pub w: bool,
    /// Auto update the screen every X seconds
    #[arg(short = 'w', long = "watch")]
    pub watch: Option<f64>,
    /// The role of the query
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<Role>,
    /// Query a specific member
    #[arg(short = 'm', long)]
    pub member: Option<String>,
    /// The column delimiter
    #[arg(long, default_value = "\t")]
    pub delimiter: String,
    /// The SQL commands to execute
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// database name to connect to
    #[arg(short = 'd', long)]
    pub dbname: Option<String>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    pub cluster_name: String,
    #[arg(long)]
    pub group: Option<i64>,
    /// Output format
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: OutputFormat,
}

/// `CLUSTER_NAME [MEMBER_NAMES…] [--group] [-r ROLE] [--force]`.
#[derive(Args, Debug)]
pub struct MembersArgs {
    pub cluster_name: String,
    pub member_names: Vec<String>,
    #[arg(long)]
    pub group: Option<i64>,
    /// Only members with this role
    #[arg(short = 'r', long, value_enum, default_value = "any")]
    pub role: Role,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub m: MembersArgs,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub m: MembersArgs,
    /// Restart a single member only
    #[arg(long = "any")]
    pub any: bool,
    /// Timestamp of a scheduled restart in unambiguous format (e.g. ISO 8601)
    #[arg(long)]
    pub scheduled: Option<String>,
    /// Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)
    #[arg(long = "pg-version")]
    pub pg_version: Option<String>,
    /// Restart if pending
    #[arg(long)]
    pub pending: bool,
    /// Return error and fail over if necessary when restarting takes longer than this.
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReinitArgs {
    pub cluster_name: String,
    pub member_names: Vec<String>,
    #[arg(long)]
    pub group: Option<i64>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
    /// Get basebackup from leader
    #[arg(long = "from-leader")]
    pub from_leader: bool,
    /// Wait until reinitialization completes
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// The name of the candidate
    #[arg(long)]
    pub candidate: Option<String>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// The name of the current leader
    #[arg(long = "leader", visible_alias = "primary")]
    pub leader: Option<String>,
    /// The name of the candidate
    #[arg(long)]
    pub candidate: Option<String>,
    /// Timestamp of a scheduled switchover in unambiguous format (e.g. ISO 8601)
    #[arg(long)]
    pub scheduled: Option<String>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// CLUSTER_NAME [MEMBER_NAMES]... {restart|switchover}
    #[arg(required = true, num_args = 2.., value_name = "CLUSTER_NAME [MEMBER_NAMES]... {restart|switchover}")]
    pub args: Vec<String>,
    #[arg(long)]
    pub group: Option<i64>,
    /// Flush only members with this role
    #[arg(short = 'r', long, value_enum, default_value = "any")]
    pub role: Role,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// Wait until the change is applied on all nodes
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct EditConfigArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// Do not show changes
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Set specific configuration value. Can be specified multiple times
    #[arg(short = 's', long = "set")]
    pub kvpairs: Vec<String>,
    /// Set specific PostgreSQL parameter value. Shorthand for -s postgresql.parameters. Can be specified multiple times
    #[arg(short = 'p', long = "pg")]
    pub pgkvpairs: Vec<String>,
    /// Apply configuration from file. Use - for stdin.
    #[arg(long = "apply")]
    pub apply_filename: Option<String>,
    /// Apply configuration from file, replacing existing configuration. Use - for stdin.
    #[arg(long = "replace")]
    pub replace_filename: Option<String>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    pub cluster_name: Option<String>,
    pub member_names: Vec<String>,
    #[arg(long)]
    pub group: Option<i64>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub c: ClusterArgs,
    /// Output format
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct DemoteArgs {
    pub cluster_name: Option<String>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
    /// Address of the remote node
    #[arg(long)]
    pub host: Option<String>,
    /// Port of the remote node
    #[arg(long)]
    pub port: Option<u16>,
    /// Command to restore WAL records from the remote primary
    #[arg(long = "restore-command")]
    pub restore_command: Option<String>,
    /// Name of the slot on the remote node to use for replication
    #[arg(long = "primary-slot-name")]
    pub primary_slot_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    pub cluster_name: Option<String>,
    /// Do not ask for confirmation at any point
    #[arg(long)]
    pub force: bool,
}

// ---------------------------------------------------------------------------
// Terminal I/O (click.echo / click.prompt / click.confirm)

fn echo(s: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_ref().as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn echo_raw(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn read_line() -> anyhow::Result<String> {
    let mut s = String::new();
    let n = std::io::stdin().lock().read_line(&mut s)?;
    if n == 0 {
        return Err(Aborted.into());
    }
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    Ok(s)
}

/// `click.prompt(text, default=…)`.
fn prompt(text: &str, default: Option<&str>) -> anyhow::Result<String> {
    loop {
        match default {
            Some(d) => echo_raw(&format!("{text} [{d}]: ")),
            None => echo_raw(&format!("{text}: ")),
        }
        let v = read_line()?;
        if !v.is_empty() {
            return Ok(v);
        }
        if let Some(d) = default {
            return Ok(d.to_string());
        }
    }
}

/// `click.confirm(text)` (default No).
fn confirm(text: &str) -> anyhow::Result<bool> {
    loop {
        echo_raw(&format!("{text} [y/N]: "));
        match read_line()?.trim().to_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" | "" => return Ok(false),
            _ => echo("Error: invalid input"),
        }
    }
}

// ---------------------------------------------------------------------------
// Context

struct Ctx {
    cfg: CtlConfig,
    /// The REST client, or why the certificate settings cannot be used: reported by
    /// each REST call (as urllib3 fails when it connects), so commands that only read
    /// the DCS still work.
    rest: Result<RestClient, HttpError>,
}

/// How long one REST call may take (a restart or switchover is answered when done).
const REST_TIMEOUT: Duration = Duration::from_secs(300);

/// patronictl's User-Agent (`Patroni/<version> Python/<version> <system>`).
fn user_agent() -> String {
    format!(
        "Patroni/{} Rust wardenctl/{} Linux",
        warden_core::PATRONI_COMPAT_VERSION,
        env!("CARGO_PKG_VERSION")
    )
}

impl Ctx {
    fn new(cli: &Cli) -> anyhow::Result<Ctx> {
        let path = config_path(cli.config_file.as_deref());
        let mut cfg = resolve_config(&path, cli.dcs_url.as_deref())?;
        cfg.rest.tls.insecure |= cli.insecure;
        let rest = RestClient::new(&cfg.rest, user_agent());
        Ok(Ctx { cfg, rest })
    }

    fn cluster_name(&self, name: Option<&str>) -> anyhow::Result<String> {
        name.map(str::to_string)
            .or_else(|| self.cfg.scope.clone())
            .ok_or_else(|| {
                anyhow!("Missing argument 'CLUSTER_NAME' and no 'scope' in the configuration")
            })
    }

    async fn dcs(&self, name: &str) -> anyhow::Result<EtcdDcs> {
        connect_dcs(&self.cfg, name).await
    }

    async fn request(
        &self,
        m: &Member,
        method: &str,
        endpoint: Option<&str>,
        body: Option<&str>,
    ) -> Result<Response, HttpError> {
        let api = m.data.api_url.as_deref().unwrap_or("");
        let url = endpoint_url(api, endpoint);
        let rest = self.rest.as_ref().map_err(Clone::clone)?;
        rest.request(method, &url, body, REST_TIMEOUT).await
    }
}

fn output_members(name: &str, c: &Cluster, format: Format) {
    echo_raw(&render_list(
        name,
        c,
        &ListOptions {
            extended: false,
            format,
        },
    ));
}

fn names_of(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Python's `str.title()` for ASCII words.
fn title(s: &str) -> String {
    let mut out = String::new();
    let mut prev_alpha = false;
    for c in s.chars() {
        if c.is_alphabetic() {
            if prev_alpha {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_alpha = true;
        } else {
            out.push(c);
            prev_alpha = false;
        }
    }
    out
}

fn scheduled_restart(m: &Member) -> bool {
    m.data
        .extra
        .get("scheduled_restart")
        .is_some_and(warden_ctl::pyfmt::py_truthy)
}

/// `check_response`: prints `Failed: …` for status ≥ 400, else `Success: …` unless
/// silent.
fn check_response(r: &Response, member: &str, action: &str, silent: bool) -> bool {
    if r.status >= 400 {
        echo(format!(
            "Failed: {action} for member {member}, status code={}, ({})",
            r.status,
            r.text()
        ));
        return false;
    }
    if !silent {
        echo(format!("Success: {action} for member {member}"));
    }
    true
}

/// `get_members`: filters, prints the list, maybe prompts for a member and confirms.
#[allow(clippy::too_many_arguments)]
fn get_members(
    cluster: &Cluster,
    name: &str,
    member_names: &[String],
    role: Role,
    role_repr: &str,
    force: bool,
    action: &str,
    ask_confirmation: bool,
) -> anyhow::Result<Vec<Member>> {
    let members = all_members(cluster, role);
    let candidates: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    // patronictl's `if not force or role:` is always true (the role always has a value)
    if member_names.is_empty() && candidates.is_empty() {
        bail!("{name} cluster doesn't have any members");
    }
    output_members(name, cluster, Format::Pretty);
    let mut names: Vec<String> = if !member_names.is_empty() {
        let n: Vec<String> = candidates
            .iter()
            .filter(|c| member_names.contains(c))
            .cloned()
            .collect();
        if n.is_empty() {
            bail!("No {role_repr} among provided members");
        }
        n
    } else if action != "reinitialize" {
        candidates.clone()
    } else {
        Vec::new()
    };
    if names.is_empty() && !force {
        names = vec![prompt(
            &format!(
                "Which member do you want to {action} [{}]?",
                candidates.join(", ")
            ),
            Some(""),
        )?];
    }
    for n in &names {
        if !candidates.contains(n) {
            bail!("{n} is not a member of cluster");
        }
    }
    let members: Vec<Member> = members
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .collect();
    if ask_confirmation {
        confirm_members_action(&members, force, action, None, false)?;
    }
    Ok(members)
}

fn confirm_members_action(
    members: &[Member],
    force: bool,
    action: &str,
    scheduled_at: Option<&Scheduled>,
    pending: bool,
) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    match scheduled_at {
        Some(s) => {
            let ok = if pending {
                confirm("The nodes needing a restart will be identified at the scheduled time, and might be different from the ones showing pending restart right now. Is this fine?")?
            } else {
                confirm(&format!(
                    "Are you sure you want to schedule {action} of members {} at {}?",
                    names_of(members),
                    s.to_py_str()
                ))?
            };
            if !ok {
                bail!("Aborted scheduled {action}");
            }
        }
        None => {
            if !confirm(&format!(
                "Are you sure you want to {action} members {}?",
                names_of(members)
            ))? {
                bail!("Aborted {action}");
            }
        }
    }
    Ok(())
}

/// A pseudo-random index (for `restart --any`), without a rand dependency.
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() % n.max(1) as u64) as usize
}

// ---------------------------------------------------------------------------
// Dispatch

pub async fn run(cli: &Cli, cmd: &Command) -> anyhow::Result<()> {
    let ctx = Ctx::new(cli)?;
    match cmd {
        Command::List(_) | Command::Topology(_) | Command::Completion(_) => {
            unreachable!("handled in main")
        }
        Command::Dsn(a) => dsn(&ctx, a).await,
        Command::Query(a) => query(&ctx, a).await,
        Command::Remove(a) => remove(&ctx, a).await,
        Command::Reload(a) => reload(&ctx, a).await,
        Command::Restart(a) => restart(&ctx, a).await,
        Command::Reinit(a) => reinit(&ctx, a).await,
        Command::Failover(a) => {
            do_failover(
                &ctx,
                "failover",
                a.c.cluster_name.as_deref(),
                a.candidate.clone(),
                a.force,
                None,
                None,
            )
            .await
        }
        Command::Switchover(a) => {
            do_failover(
                &ctx,
                "switchover",
                a.c.cluster_name.as_deref(),
                a.candidate.clone(),
                a.force,
                a.leader.clone(),
                a.scheduled.clone(),
            )
            .await
        }
        Command::Flush(a) => flush(&ctx, a).await,
        Command::Pause(a) => toggle_pause(&ctx, a, true).await,
        Command::Resume(a) => toggle_pause(&ctx, a, false).await,
        Command::EditConfig(a) => edit_config(&ctx, a).await,
        Command::ShowConfig(a) => show_config(&ctx, a).await,
        Command::Version(a) => version(&ctx, a).await,
        Command::History(a) => history(&ctx, a).await,
        Command::DemoteCluster(a) => {
            // Python truthiness, as patronictl's `any((host, port, restore_command))`:
            // an empty string or port 0 counts as not given.
            let given = |s: &Option<String>| s.as_ref().is_some_and(|s| !s.is_empty());
            if !given(&a.host) && a.port.unwrap_or(0) == 0 && !given(&a.restore_command) {
                bail!("At least --host, --port or --restore-command should be specified");
            }
            let mut data = Map::new();
            if let Some(h) = a.host.as_ref().filter(|s| !s.is_empty()) {
                data.insert("host".into(), Value::String(h.clone()));
            }
            if let Some(p) = a.port.filter(|p| *p != 0) {
                data.insert("port".into(), Value::from(p));
            }
            if let Some(s) = a.primary_slot_name.as_ref().filter(|s| !s.is_empty()) {
                data.insert("primary_slot_name".into(), Value::String(s.clone()));
            }
            if let Some(r) = a.restore_command.as_ref().filter(|s| !s.is_empty()) {
                data.insert("restore_command".into(), Value::String(r.clone()));
            }
            change_cluster_role(&ctx, a.cluster_name.as_deref(), a.force, Some(data)).await
        }
        Command::PromoteCluster(a) => {
            change_cluster_role(&ctx, a.cluster_name.as_deref(), a.force, None).await
        }
    }
}

// ---------------------------------------------------------------------------
// dsn / query

async fn dsn(ctx: &Ctx, a: &DsnArgs) -> anyhow::Result<()> {
    let name = ctx.cluster_name(a.c.cluster_name.as_deref())?;
    let cluster = ctx.dcs(&name).await?.get_cluster().await?;
    let m = any_member(&cluster, a.role, a.member.as_deref()).map_err(|e| anyhow!(e))?;
    let Some((host, port)) = m.as_ref().and_then(conn_host_port) else {
        bail!("Can not find a suitable member");
    };
    echo(format!("host={host} port={port}"));
    Ok(())
}

/// A query result: rows of Python-like values and the column names (None on errors).
type QueryResult = (Vec<Vec<Value>>, Option<Vec<String>>);

fn pgpass_lookup(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    warden_pg::pgpass_find(&text, host, port, db, user)
}

async fn query_member(
    cluster: &Cluster,
    a: &QueryArgs,
    sql: &str,
    password: Option<&str>,
) -> anyhow::Result<QueryResult> {
    let member = any_member(cluster, a.role, a.member.as_deref()).map_err(|e| anyhow!(e))?;
    let no_conn = || -> QueryResult {
        let msg = if let Some(m) = &a.member {
            format!("No connection to member {m} is available")
        } else if let Some(r) = a.role {
            format!("No connection to role '{}' is available", r.as_str())
        } else {
            "No connection is available".to_string()
        };
        (
            vec![vec![Value::String(timestamp(0)), Value::String(msg)]],
            None,
        )
    };
    let Some(member) = member else {
        return Ok(no_conn());
    };
    let Some((host, port)) = conn_host_port(&member) else {
        return Ok(no_conn());
    };
    let error_row = |msg: String| -> QueryResult {
        (
            vec![vec![
                Value::String(timestamp(0)),
                Value::String(format!("ERROR, SQLSTATE: {}", msg.replace('\n', " "))),
            ]],
            None,
        )
    };
    let user = a
        .username
        .clone()
        .or_else(|| std::env::var("PGUSER").ok())
        // libpq's default: the OS user we run as (not $USER, which may be unset or stale).
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "postgres".into());
    let dbname = a
        .dbname
        .clone()
        .or_else(|| std::env::var("PGDATABASE").ok())
        .unwrap_or_else(|| user.clone());
    let _ = conn_dbname(&member); // patronictl drops the member's dbname
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&user)
        .dbname(&dbname)
        .application_name("Patroni ctl")
        .connect_timeout(Duration::from_secs(5));
    let pw = password
        .map(str::to_string)
        .or_else(|| std::env::var("PGPASSWORD").ok())
        .or_else(|| pgpass_lookup(&host, port, &dbname, &user));
    if let Some(pw) = pw {
        cfg.password(pw);
    }
    let sqlstate = |e: &tokio_postgres::Error| -> String {
        e.as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string())
    };
    let (client, conn) = match cfg.connect(tokio_postgres::NoTls).await {
        Ok(x) => x,
        Err(e) => return Ok(error_row(sqlstate(&e))),
    };
    let conn_task = tokio::spawn(conn);
    let result = async {
        if let Some(role) = a.role.filter(|r| !matches!(r, Role::Any | Role::Leader)) {
            let in_recovery = match client
                .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
                .await
            {
                Ok(msgs) => msgs
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
                        _ => None,
                    })
                    .unwrap_or(true),
                Err(e) => return error_row(sqlstate(&e)),
            };
            let ok = (in_recovery
                && matches!(role, Role::Replica | Role::Standby | Role::StandbyLeader))
                || (!in_recovery && role == Role::Primary);
            if !ok {
                return no_conn();
            }
        }
        match client.simple_query(sql).await {
            Err(e) => error_row(sqlstate(&e)),
            Ok(msgs) => {
                let mut columns: Option<Vec<String>> = None;
                let mut rows: Vec<Vec<Value>> = Vec::new();
                for m in msgs {
                    match m {
                        tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                            columns = Some(cols.iter().map(|c| c.name().to_string()).collect());
                            rows.clear();
                        }
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            rows.push(
                                (0..r.len())
                                    .map(|i| {
                                        r.get(i)
                                            .map(|s| Value::String(s.to_string()))
                                            .unwrap_or(Value::Null)
                                    })
                                    .collect(),
                            );
                        }
                        tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                        _ => {}
                    }
                }
                match columns {
                    Some(c) => (rows, Some(c)),
                    None => error_row("no results to fetch".into()),
                }
            }
        }
    }
    .await;
    drop(client);
    conn_task.abort();
    Ok(result)
}

/// `print_output` without a header (query, history).
fn print_output(
    columns: Option<&[String]>,
    rows: &[Vec<Value>],
    right: &[&str],
    fmt: &str,
    delimiter: &str,
) {
    match fmt {
        "json" | "yaml" | "yml" => {
            let elements: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        columns
                            .unwrap_or_default()
                            .iter()
                            .cloned()
                            .zip(r.iter().cloned())
                            .collect(),
                    )
                })
                .collect();
            let v = Value::Array(elements);
            if fmt == "json" {
                echo(json_dumps(&v));
            } else {
                echo(yaml_dump(&v, false));
            }
        }
        "tsv" => {
            if let Some(c) = columns {
                echo(c.join(delimiter));
            }
            for r in rows {
                echo(r.iter().map(py_str).collect::<Vec<_>>().join(delimiter));
            }
        }
        "pretty" | "topology" => {
            let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
            let cols: Vec<String> = match columns {
                Some(c) => c.to_vec(),
                None => (1..=ncols).map(|i| format!("Field {i}")).collect(),
            };
            let right: Vec<bool> = cols.iter().map(|c| right.contains(&c.as_str())).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut v: Vec<String> = r.iter().map(py_str).collect();
                    v.resize(cols.len(), String::new());
                    v
                })
                .collect();
            let hrule_all = cells.iter().any(|r| r.iter().any(|c| c.contains('\n')));
            echo(pretty_table("", &cols, &right, &cells, hrule_all));
        }
        _ => {}
    }
}

async fn query(ctx: &Ctx, a: &QueryArgs) -> anyhow::Result<()> {
    let sql = match (&a.file, &a.command) {
        (Some(_), Some(_)) => bail!("--file and --command are mutually exclusive options"),
        (Some(f), None) => {
            if f.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(f).map_err(|e| {
                    anyhow!("Invalid value for '--file' / '-f': '{}': {e}", f.display())
                })?
            }
        }
        (None, Some(c)) => c.clone(),
        (None, None) => bail!("You need to specify either --command or --file"),
    };
    let password = if a.password {
        Some(prompt("Password", None)?)
    } else {
        None
    };
    let name = ctx.cluster_name(a.c.cluster_name.as_deref())?;
    let dcs = ctx.dcs(&name).await?;
    let cluster = dcs.get_cluster().await?;
    let period = crate::watch_period(a.w, a.watch);
    loop {
        let started = Instant::now();
        let (rows, header) = query_member(&cluster, a, &sql, password.as_deref()).await?;
        print_output(header.as_deref(), &rows, &[], &a.fmt, &a.delimiter);
        let Some(p) = period else { return Ok(()) };
        tokio::time::sleep(p.saturating_sub(started.elapsed())).await;
    }
}

// ---------------------------------------------------------------------------
// remove / reload / restart / reinit / flush

async fn remove(ctx: &Ctx, a: &RemoveArgs) -> anyhow::Result<()> {
    let name = &a.cluster_name;
    let dcs = ctx.dcs(name).await?;
    let cluster = dcs.get_cluster().await?;
    output_members(name, &cluster, a.format.into());
    if &prompt("Please confirm the cluster name to remove", None)? != name {
        bail!("Cluster names specified do not match");
    }
    let message = "Yes I am aware";
    let answer = prompt(
        &format!(
            "You are about to remove all information in DCS for {name}, please type: \"{message}\""
        ),
        None,
    )?;
    if answer != message {
        bail!("You did not exactly type \"{message}\"");
    }
    if let Some(leader) = cluster.leader_name() {
        let answer = prompt(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if answer != leader {
            bail!("You did not specify the current leader of the cluster");
        }
    }
    dcs.delete_cluster().await?;
    Ok(())
}

async fn reload(ctx: &Ctx, a: &ReloadArgs) -> anyhow::Result<()> {
    let m = &a.m;
    let cluster = ctx.dcs(&m.cluster_name).await?.get_cluster().await?;
    let members = get_members(
        &cluster,
        &m.cluster_name,
        &m.member_names,
        m.role,
        &format!("'{}'", m.role.as_str()),
        m.force,
        "reload",
        true,
    )?;
    for member in members {
        let r = ctx.request(&member, "post", Some("reload"), None).await?;
        match r.status {
            200 => echo(format!("No changes to apply on member {}", member.name)),
            202 => echo(format!(
                "Reload request received for member {} and will be processed within {} seconds",
                member.name,
                loop_wait(&cluster)
            )),
            s => echo(format!(
                "Failed: reload for member {}, status code={s}, ({})",
                member.name,
                r.text()
            )),
        }
    }
    Ok(())
}

async fn restart(ctx: &Ctx, a: &RestartArgs) -> anyhow::Result<()> {
    let m = &a.m;
    let cluster = ctx.dcs(&m.cluster_name).await?.get_cluster().await?;
    let mut members = get_members(
        &cluster,
        &m.cluster_name,
        &m.member_names,
        m.role,
        &format!("'{}'", m.role.as_str()),
        m.force,
        "restart",
        false,
    )?;
    let mut scheduled = a.scheduled.clone();
    if scheduled.is_none() && !m.force {
        scheduled = Some(prompt(
            &format!(
                "When should the restart take place (e.g. {}) ",
                next_hour_example()
            ),
            Some("now"),
        )?);
    }
    let scheduled_at = parse_scheduled(scheduled.as_deref()).map_err(|e| anyhow!(e))?;
    if a.pending && scheduled_at.is_none() {
        members.retain(|m| m.data.pending_restart);
    }
    if a.any && !members.is_empty() {
        let i = random_index(members.len());
        members = vec![members.swap_remove(i)];
    }
    confirm_members_action(
        &members,
        m.force,
        "restart",
        scheduled_at.as_ref(),
        a.pending,
    )?;
    let mut version = a.pg_version.clone();
    if version.is_none() && !m.force {
        version = Some(prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            Some(""),
        )?);
    }
    let version = version.filter(|v| !v.is_empty());
    if let Some(v) = &version {
        check_pg_version(v).map_err(|e| anyhow!(e))?;
    }
    let schedule = match &scheduled_at {
        Some(s) => {
            if cluster.is_paused() {
                bail!("Can't schedule restart in the paused state");
            }
            Some(s.isoformat())
        }
        None => None,
    };
    let body = restart_body(
        a.pending,
        version.as_deref(),
        schedule.as_deref(),
        a.timeout.as_deref(),
    );
    for member in members {
        if schedule.is_some() && m.force && scheduled_restart(&member) {
            let r = ctx
                .request(&member, "delete", Some("restart"), None)
                .await?;
            check_response(&r, &member.name, "flush scheduled restart", true);
        }
        let r = ctx
            .request(&member, "post", Some("restart"), Some(&body))
            .await?;
        match r.status {
            200 => echo(format!("Success: restart on member {}", member.name)),
            202 => echo(format!(
                "Success: restart scheduled on member {}",
                member.name
            )),
            409 => echo(format!(
                "Failed: another restart is already scheduled on member {}",
                member.name
            )),
            s => echo(format!(
                "Failed: restart for member {}, status code={s}, ({})",
                member.name,
                r.text()
            )),
        }
    }
    Ok(())
}

async fn reinit(ctx: &Ctx, a: &ReinitArgs) -> anyhow::Result<()> {
    let cluster = ctx.dcs(&a.cluster_name).await?.get_cluster().await?;
    let members = get_members(
        &cluster,
        &a.cluster_name,
        &a.member_names,
        Role::Replica,
        "replica",
        a.force,
        "reinitialize",
        true,
    )?;
    let mut wait_on: Vec<Member> = Vec::new();
    for member in members {
        let mut force = a.force;
        loop {
            let body = reinit_body(force, a.from_leader);
            let r = ctx
                .request(&member, "post", Some("reinitialize"), Some(&body))
                .await?;
            let started = check_response(&r, &member.name, "reinitialize", false);
            if !started
                && r.body.ends_with(b" already in progress")
                && !a.force
                && confirm("Do you want to cancel it and reinitialize anyway?")?
            {
                force = true;
                continue;
            }
            if started && a.wait {
                wait_on.push(member.clone());
            }
            break;
        }
    }
    let mut last_display: Vec<String> = Vec::new();
    while !wait_on.is_empty() {
        let names: Vec<String> = wait_on.iter().map(|m| m.name.clone()).collect();
        if names != last_display {
            echo(format!(
                "Waiting for reinitialize to complete on: {}",
                names.join(", ")
            ));
            last_display = names;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for member in wait_on {
            let r = ctx.request(&member, "get", Some("patroni"), None).await?;
            let data: Value = serde_json::from_slice(&r.body)?;
            if data.get("state").and_then(Value::as_str) != Some("creating replica") {
                echo(format!("Reinitialize is completed on: {}", member.name));
            } else {
                still.push(member);
            }
        }
        wait_on = still;
    }
    Ok(())
}

async fn flush(ctx: &Ctx, a: &FlushArgs) -> anyhow::Result<()> {
    let (name, rest) = a
        .args
        .split_first()
        .ok_or_else(|| anyhow!("Missing argument 'CLUSTER_NAME'"))?;
    let (target, member_names) = rest
        .split_last()
        .ok_or_else(|| anyhow!("Missing argument '{{restart|switchover}}'"))?;
    if target != "restart" && target != "switchover" {
        bail!("Invalid value for '{{restart|switchover}}': '{target}' is not one of 'restart', 'switchover'.");
    }
    let dcs = ctx.dcs(name).await?;
    let cluster = dcs.get_cluster().await?;
    if target == "restart" {
        let members = get_members(
            &cluster,
            name,
            member_names,
            a.role,
            &format!("'{}'", a.role.as_str()),
            a.force,
            "flush",
            true,
        )?;
        for member in members {
            if scheduled_restart(&member) {
                let r = ctx
                    .request(&member, "delete", Some("restart"), None)
                    .await?;
                check_response(&r, &member.name, "flush scheduled restart", false);
            } else {
                echo(format!("No scheduled restart for member {}", member.name));
            }
        }
        return Ok(());
    }
    let Some(failover) = cluster
        .failover
        .as_ref()
        .filter(|f| f.scheduled_at.as_deref().is_some_and(|s| !s.is_empty()))
    else {
        echo("No pending scheduled switchover");
        return Ok(());
    };
    for member in leader_first(&cluster) {
        match ctx
            .request(&member, "delete", Some("switchover"), None)
            .await
        {
            Ok(r) if r.status == 200 || r.status == 404 => {
                let prefix = if r.status == 200 { "Success" } else { "Failed" };
                echo(format!("{prefix}: {}", r.text()));
                return Ok(());
            }
            Ok(r) => echo(format!(
                "Failed: member={}, status_code={}, ({})",
                member.name,
                r.status,
                r.text()
            )),
            Err(e) => {
                log_warning(&e.to_string());
                log_warning(&format!("Member {} is not accessible", member.name));
            }
        }
    }
    log_warning("Failing over to DCS");
    echo(format!(
        "{} Could not find any accessible member of cluster {name}",
        timestamp(6)
    ));
    dcs.set_failover(
        &manual_failover_value(None, None, None),
        Some(failover.version),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// switchover / failover

#[allow(clippy::too_many_arguments)]
async fn do_failover(
    ctx: &Ctx,
    action: &str,
    cluster_name: Option<&str>,
    mut candidate: Option<String>,
    force: bool,
    mut switchover_leader: Option<String>,
    mut scheduled: Option<String>,
) -> anyhow::Result<()> {
    let name = ctx.cluster_name(cluster_name)?;
    let dcs = ctx.dcs(&name).await?;
    let mut cluster = dcs.get_cluster().await?;
    echo("Current cluster topology");
    output_members(&name, &cluster, Format::Pretty);
    let cluster_leader = cluster.leader_name().map(str::to_string);
    let is_switchover = action == "switchover";
    if is_switchover {
        let Some(cl) = &cluster_leader else {
            bail!("This cluster has no leader");
        };
        if switchover_leader.is_none() {
            switchover_leader = Some(if force {
                cl.clone()
            } else {
                let p = if is_standby_cluster(&cluster) {
                    "Standby Leader"
                } else {
                    "Primary"
                };
                prompt(p, Some(cl))?
            });
        }
        if let Some(sl) = switchover_leader.as_deref().filter(|sl| sl != cl) {
            bail!("Member {sl} is not the leader of cluster {name}");
        }
    }
    let candidates = failover_candidates(&cluster);
    if candidates.is_empty() {
        bail!("No candidates found to {action} to");
    }
    if candidate.is_none() && !force {
        candidate = Some(prompt(
            &format!("Candidate {}", py_list_repr(&candidates)),
            Some(""),
        )?);
    }
    let cand = candidate.as_deref().filter(|c| !c.is_empty());
    if action == "failover" && cand.is_none() {
        bail!("Failover could be performed only to a specific candidate");
    }
    if let Some(c) = cand {
        if !candidates.iter().any(|n| n == c) {
            if Some(c) == cluster_leader.as_deref() {
                bail!("Member {c} is already the leader of cluster {name}");
            }
            bail!("Member {c} does not exist in cluster {name} or is tagged as nofailover");
        }
    }
    if !force && action == "failover" && is_synchronous_mode(&cluster) {
        if let (Some(sync), Some(c)) = (&cluster.sync, cand) {
            if !sync.matches(c)
                && !confirm(&format!(
                    "Are you sure you want to failover to the asynchronous node {c}?"
                ))?
            {
                bail!("Aborting {action}");
            }
        }
    }
    let mut scheduled_at = None;
    if is_switchover {
        if scheduled.is_none() && !force {
            scheduled = Some(prompt(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    next_hour_example()
                ),
                Some("now"),
            )?);
        }
        scheduled_at = parse_scheduled(scheduled.as_deref()).map_err(|e| anyhow!(e))?;
        if scheduled_at.is_some() && cluster.is_paused() {
            bail!("Can't schedule switchover in the paused state");
        }
    }
    let scheduled_iso = scheduled_at.map(|s| s.isoformat());
    let body = failover_body(
        is_switchover,
        candidate.as_deref(),
        switchover_leader.as_deref(),
        scheduled_iso.as_deref(),
    );
    if !force {
        let demote_msg = cluster_leader
            .as_deref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        if let Some(iso) = &scheduled_iso {
            if !confirm(&format!(
                "Are you sure you want to schedule switchover of cluster {name} at {iso}{demote_msg}?"
            ))? {
                bail!("Aborting scheduled {action}");
            }
        } else if !confirm(&format!(
            "Are you sure you want to {action} cluster {name}{demote_msg}?"
        ))? {
            bail!("Aborting {action}");
        }
    }
    let member = match leader_member(&cluster) {
        Some(l) => Some(l),
        None => cand.and_then(|c| cluster.member(c).cloned()),
    };
    let result = match &member {
        Some(m) => {
            let mut r = ctx.request(m, "post", Some(action), Some(&body)).await;
            if let Ok(resp) = &r {
                if resp.status == 501
                    && is_switchover
                    && resp
                        .text()
                        .contains("Server does not support this operation")
                {
                    r = ctx.request(m, "post", Some("failover"), Some(&body)).await;
                }
            }
            r.map_err(|e| e.to_string())
        }
        None => Err("no member to send the request to".to_string()),
    };
    match result {
        Ok(r) if r.status == 200 || r.status == 202 => {
            cluster = dcs.get_cluster().await?;
            echo(format!("{} {}", timestamp(6), r.text()));
        }
        Ok(r) => {
            echo(format!(
                "{} failed, details: {}, {}",
                title(action),
                r.status,
                r.text()
            ));
            return Ok(());
        }
        Err(e) => {
            log_warning(&e.to_string());
            log_warning("Failing over to DCS");
            echo(format!(
                "{} Could not {action} using Patroni api, falling back to DCS",
                timestamp(6)
            ));
            dcs.set_failover(
                &manual_failover_value(
                    switchover_leader.as_deref(),
                    cand,
                    scheduled_iso.as_deref(),
                ),
                None,
            )
            .await?;
        }
    }
    output_members(&name, &cluster, Format::Pretty);
    Ok(())
}

// ---------------------------------------------------------------------------
// pause / resume

async fn toggle_pause(ctx: &Ctx, a: &PauseArgs, paused: bool) -> anyhow::Result<()> {
    let name = ctx.cluster_name(a.c.cluster_name.as_deref())?;
    let dcs = ctx.dcs(&name).await?;
    let cluster = dcs.get_cluster().await?;
    if cluster.is_paused() == paused {
        bail!(
            "Cluster is {} paused",
            if paused { "already" } else { "not" }
        );
    }
    let word = if paused { "pause" } else { "resume" };
    for member in leader_first(&cluster) {
        let r = match ctx
            .request(&member, "patch", Some("config"), Some(&pause_body(paused)))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                log_warning(&e.to_string());
                log_warning(&format!("Member {} is not accessible", member.name));
                continue;
            }
        };
        if r.status == 200 {
            if a.wait {
                wait_until_pause_is_applied(&dcs, paused, &cluster).await?;
            } else {
                echo(format!(
                    "Success: cluster management is {}",
                    if paused { "paused" } else { "resumed" }
                ));
            }
        } else {
            echo(format!(
                "Failed: {word} cluster management status code={}, ({})",
                r.status,
                r.text()
            ));
        }
        return Ok(());
    }
    bail!("Can not find accessible cluster member")
}

async fn wait_until_pause_is_applied(
    dcs: &EtcdDcs,
    paused: bool,
    old_cluster: &Cluster,
) -> anyhow::Result<()> {
    echo(format!(
        "'{}' request sent, waiting until it is recognized by all nodes",
        if paused { "pause" } else { "resume" }
    ));
    let old: HashMap<&str, i64> = old_cluster
        .members
        .iter()
        .filter(|m| m.data.api_url.is_some())
        .map(|m| (m.name.as_str(), m.version))
        .collect();
    let lw = loop_wait(old_cluster);
    let deadline = Instant::now() + Duration::from_secs(lw + 1);
    let mut last = None;
    let mut done = false;
    while Instant::now() < deadline {
        let c = dcs.get_cluster().await?;
        let all = c
            .members
            .iter()
            .filter(|m| old.contains_key(m.name.as_str()))
            .all(|m| m.data.pause == paused);
        last = Some(c);
        if all {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !done {
        if let Some(c) = last {
            let remaining: Vec<&str> = c
                .members
                .iter()
                .filter(|m| {
                    m.data.pause != paused
                        && old.get(m.name.as_str()).is_some_and(|v| *v != m.version)
                })
                .map(|m| m.name.as_str())
                .collect();
            if !remaining.is_empty() {
                echo(format!(
                    "{} members didn't recognized pause state after {lw} seconds",
                    remaining.join(", ")
                ));
                return Ok(());
            }
        }
    }
    echo(format!(
        "Success: cluster management is {}",
        if paused { "paused" } else { "resumed" }
    ));
    Ok(())
}

// ---------------------------------------------------------------------------
// edit-config / show-config

fn read_yaml_source(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(name)
            .map_err(|e| anyhow!("[Errno {}] {e}: '{name}'", e.raw_os_error().unwrap_or(0)))
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn invoke_editor(before: &str, cluster_name: &str) -> anyhow::Result<(String, Value)> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.is_empty())
        .map(PathBuf::from)
        .or_else(|| which("editor"))
        .or_else(|| which("vi"))
        .ok_or_else(|| {
            anyhow!("EDITOR environment variable is not set. editor or vi are not available")
        })?;
    let safe = cluster_name.replace('/', "_");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{safe}-config-"))
        .suffix(".yaml")
        .tempfile()?;
    tmp.write_all(before.as_bytes())?;
    tmp.flush()?;
    let path = tmp.into_temp_path();
    let status = std::process::Command::new(&editor)
        .arg(&path as &std::path::Path)
        .status()
        .map_err(|e| anyhow!("{}: {e}", editor.display()))?;
    if !status.success() {
        bail!(
            "Editor exited with return code {}",
            status.code().unwrap_or(-1)
        );
    }
    let after = std::fs::read_to_string(&path)?;
    let parsed = warden_config::parse_yaml_str(&after, &path.display().to_string())?;
    Ok((after, parsed))
}

async fn edit_config(ctx: &Ctx, a: &EditConfigArgs) -> anyhow::Result<()> {
    let name = ctx.cluster_name(a.c.cluster_name.as_deref())?;
    let dcs = ctx.dcs(&name).await?;
    let cluster = dcs.get_cluster().await?;
    let Some(config) = &cluster.config else {
        bail!("The config key does not exist in the cluster {name}");
    };
    let before = format_config(&config.value);
    let mut after: Option<String> = None;
    let mut changed = config.value.clone();
    if let Some(f) = &a.replace_filename {
        changed = apply_yaml(&Value::Object(Map::new()), &read_yaml_source(f)?, f)
            .map_err(|e| anyhow!(e))?;
        after = Some(format_config(&changed));
    }
    if let Some(f) = &a.apply_filename {
        changed = apply_yaml(&changed, &read_yaml_source(f)?, f).map_err(|e| anyhow!(e))?;
        after = Some(format_config(&changed));
    }
    if !a.kvpairs.is_empty() || !a.pgkvpairs.is_empty() {
        let mut all = a.kvpairs.clone();
        all.extend(
            a.pgkvpairs
                .iter()
                .map(|v| format!("postgresql.parameters.{}", v.trim_start())),
        );
        changed = apply_config_changes(&changed, &all).map_err(|e| anyhow!(e))?;
        after = Some(format_config(&changed));
    }
    let after = match after {
        Some(a) => a,
        None => {
            let (text, parsed) = invoke_editor(&before, &name)?;
            changed = parsed;
            text
        }
    };
    if config.value == changed {
        if !a.quiet {
            echo("Not changed");
        }
        return Ok(());
    }
    if !a.quiet {
        for line in show_diff_lines(&before, &after) {
            echo(line);
        }
    }
    if (a.apply_filename.as_deref() == Some("-") || a.replace_filename.as_deref() == Some("-"))
        && !a.force
    {
        echo("Use --force option to apply changes");
        return Ok(());
    }
    if a.force || confirm("Apply these changes?")? {
        if !dcs
            .set_config(&serde_json::to_string(&changed)?, Some(config.version))
            .await?
        {
            bail!("Config modification aborted due to concurrent changes");
        }
        echo("Configuration changed");
    }
    Ok(())
}

async fn show_config(ctx: &Ctx, a: &ClusterArgs) -> anyhow::Result<()> {
    let name = ctx.cluster_name(a.cluster_name.as_deref())?;
    let cluster = ctx.dcs(&name).await?.get_cluster().await?;
    if let Some(c) = &cluster.config {
        echo(format_config(&c.value));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// version / history

async fn version(ctx: &Ctx, a: &VersionArgs) -> anyhow::Result<()> {
    echo(format!(
        "patronictl version {}",
        warden_core::PATRONI_COMPAT_VERSION
    ));
    let Some(name) = a.cluster_name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    echo("");
    let cluster = ctx.dcs(name).await?.get_cluster().await?;
    for m in all_members(&cluster, Role::Any) {
        if m.data.api_url.is_none()
            || !(a.member_names.is_empty() || a.member_names.contains(&m.name))
        {
            continue;
        }
        let res = match ctx.request(&m, "GET", None, None).await {
            Ok(r) => serde_json::from_slice::<Value>(&r.body).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(data) => {
                let v = data
                    .get("patroni")
                    .and_then(|p| p.get("version"))
                    .map(py_str)
                    .unwrap_or_else(|| "None".into());
                let pg = match data.get("server_version").and_then(Value::as_i64) {
                    Some(n) if n != 0 => format!(" PostgreSQL {}", format_pg_version(n)),
                    _ => String::new(),
                };
                echo(format!("{}: Patroni {v}{pg}", m.name));
            }
            Err(e) => echo(format!("{}: failed to get version: {e}", m.name)),
        }
    }
    Ok(())
}

async fn history(ctx: &Ctx, a: &HistoryArgs) -> anyhow::Result<()> {
    let name = ctx.cluster_name(a.c.cluster_name.as_deref())?;
    let cluster = ctx.dcs(&name).await?.get_cluster().await?;
    let rows = history_rows(&cluster);
    let columns: Vec<String> = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let fmt = match a.format {
        OutputFormat::Pretty => "pretty",
        OutputFormat::Tsv => "tsv",
        OutputFormat::Json => "json",
        OutputFormat::Yaml | OutputFormat::Yml => "yaml",
    };
    print_output(Some(&columns), &rows, &["TL", "LSN"], fmt, "\t");
    Ok(())
}

// ---------------------------------------------------------------------------
// demote-cluster / promote-cluster

async fn change_cluster_role(
    ctx: &Ctx,
    cluster_name: Option<&str>,
    force: bool,
    standby_config: Option<Map<String, Value>>,
) -> anyhow::Result<()> {
    let name = ctx.cluster_name(cluster_name)?;
    let demote = standby_config.as_ref().is_some_and(|c| !c.is_empty());
    let action = if demote { "demot" } else { "promot" };
    let target_role = if demote { "standby_leader" } else { "primary" };
    let dcs = ctx.dcs(&name).await?;
    let cluster = dcs.get_cluster().await?;
    let Some(leader) = leader_member(&cluster) else {
        bail!("Cluster has no leader, {action}ion is not possible");
    };
    if leader.data.role.as_deref() == Some(target_role) {
        bail!("Cluster is already in the required state");
    }
    echo("Current cluster topology");
    output_members(&name, &cluster, Format::Pretty);
    if !force
        && !confirm(&format!(
            "Are you sure you want to {action}e {name} cluster?"
        ))?
    {
        bail!("Aborted cluster {action}ion");
    }
    let mut body = Map::new();
    body.insert(
        "standby_cluster".into(),
        standby_config.map(Value::Object).unwrap_or(Value::Null),
    );
    match ctx
        .request(&leader, "patch", Some("config"), Some(&json_dumps(&Value::Object(body))))
        .await
    {
        Err(e) => bail!("Failed to {action}e {name} cluster: {e}"),
        Ok(r) if r.status != 200 => bail!(
            "Failed to {action}e {name} cluster: Failed to {action}e {name} cluster: /config PATCH status code={}, ({})",
            r.status,
            r.text()
        ),
        Ok(_) => {}
    }
    let now = || chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let py_opt = |v: Option<&str>| v.map(str::to_string).unwrap_or_else(|| "None".into());
    let mut first = true;
    let cluster = loop {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        first = false;
        let c = dcs.get_cluster().await?;
        let unlocked = c.is_unlocked();
        let lm = leader_member(&c);
        let leader_role = lm.as_ref().and_then(|m| m.data.role.clone());
        let leader_state = lm.as_ref().and_then(|m| m.data.state.clone());
        let old_state = c.member(&leader.name).and_then(|m| m.data.state.clone());
        if !unlocked
            && leader_role.as_deref() == Some(target_role)
            && leader_state.as_deref() == Some("running")
            && (!demote || old_state.as_deref() == Some("running"))
        {
            echo(format!("{} cluster is successfully {action}ed", now()));
            break c;
        }
        let mut parts = vec![
            format!(
                "{} cluster is unlocked: {}",
                now(),
                if unlocked { "True" } else { "False" }
            ),
            format!("leader role: {}", py_opt(leader_role.as_deref())),
            format!("leader state: {}", py_opt(leader_state.as_deref())),
        ];
        if demote && c.leader_name().is_some_and(|n| n != leader.name) {
            if let Some(s) = old_state.as_deref().filter(|s| !s.is_empty()) {
                parts.push(format!("previous leader state: '{s}'"));
            }
        }
        echo(parts.join(", "));
    };
    output_members(&name, &cluster, Format::Pretty);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(title("switchover"), "Switchover");
        assert_eq!(title("failover"), "Failover");
    }
}
