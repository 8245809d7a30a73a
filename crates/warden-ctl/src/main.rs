//! `wardenctl`: the patronictl-compatible command line (spec/ctl.md).
//!
//! Only `list` and `topology` exist so far. [`load_cluster`] reads the cluster from etcd
//! through warden-config and warden-dcs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use warden_core::cluster::Cluster;
use warden_ctl::render::{render_list, Format, ListOptions};
use warden_http::{ClientTls, RestSettings};

mod commands;

/// Global options, as patronictl's `ctl` group.
#[derive(Parser, Debug)]
#[command(
    name = "wardenctl",
    version,
    about = "Command-line interface to a Warden/Patroni cluster"
)]
pub(crate) struct Cli {
    /// Configuration file
    #[arg(
        short = 'c',
        long = "config-file",
        env = "PATRONICTL_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub(crate) config_file: Option<PathBuf>,
    /// The DCS connect url
    #[arg(
        short = 'd',
        long = "dcs-url",
        visible_alias = "dcs",
        env = "DCS_URL",
        value_name = "URL"
    )]
    pub(crate) dcs_url: Option<String>,
    /// Allow connections to SSL sites without certs
    #[arg(short = 'k', long = "insecure")]
    pub(crate) insecure: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// List the Patroni members for a given Patroni
    List(ListArgs),
    /// Prints ASCII topology for given cluster
    Topology(TopologyArgs),
    /// Generate a dsn for the provided member, defaults to a dsn of the leader
    Dsn(commands::DsnArgs),
    /// Query a Patroni PostgreSQL member
    Query(commands::QueryArgs),
    /// Remove cluster from DCS
    Remove(commands::RemoveArgs),
    /// Reload cluster member configuration
    Reload(commands::ReloadArgs),
    /// Restart cluster member
    Restart(commands::RestartArgs),
    /// Reinitialize cluster member
    Reinit(commands::ReinitArgs),
    /// Failover to a replica
    Failover(commands::FailoverArgs),
    /// Switchover to a replica
    Switchover(commands::SwitchoverArgs),
    /// Discard scheduled events
    Flush(commands::FlushArgs),
    /// Disable auto failover
    Pause(commands::PauseArgs),
    /// Resume auto failover
    Resume(commands::PauseArgs),
    /// Edit cluster configuration
    EditConfig(commands::EditConfigArgs),
    /// Show cluster configuration
    ShowConfig(commands::ClusterArgs),
    /// Output version of patronictl command or a running Patroni instance
    Version(commands::VersionArgs),
    /// Show the history of failovers/switchovers
    History(commands::HistoryArgs),
    /// Demote cluster to a standby cluster
    DemoteCluster(commands::DemoteArgs),
    /// Promote cluster, make it run standalone
    PromoteCluster(commands::PromoteArgs),
    /// Print a shell completion script (Warden only; patronictl has none)
    Completion(CompletionArgs),
}

/// `wardenctl completion SHELL`.
#[derive(Args, Debug)]
pub(crate) struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: CompletionShell,
}

/// Shells `completion` writes scripts for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` (bash: source it, or install it as
/// /usr/share/bash-completion/completions/wardenctl, as the Debian package does).
fn write_completion(shell: CompletionShell, out: &mut dyn Write) {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "wardenctl", out);
}

/// `-f/--format` choices of `list`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Pretty,
    Tsv,
    Json,
    Yaml,
    Yml,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Pretty => Format::Pretty,
            OutputFormat::Tsv => Format::Tsv,
            OutputFormat::Json => Format::Json,
            OutputFormat::Yaml | OutputFormat::Yml => Format::Yaml,
        }
    }
}

/// Options shared by `list` and `topology`.
#[derive(Args, Debug)]
struct ClusterWatchArgs {
    /// Cluster names (default: `scope` from the configuration)
    #[arg(value_name = "CLUSTER_NAMES")]
    cluster_names: Vec<String>,
    /// Citus group (accepted for compatibility; Citus is not supported)
    #[arg(long)]
    group: Option<i64>,
    /// Auto update the screen every 2 seconds
    #[arg(short = 'W')]
    watch_refresh: bool,
    /// Auto update the screen every X seconds
    #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
    watch: Option<f64>,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    common: ClusterWatchArgs,
    /// Show some extra information
    #[arg(short = 'e', long = "extended")]
    extended: bool,
    /// Print timestamp
    #[arg(short = 't', long = "timestamp")]
    timestamp: bool,
    /// Output format
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    format: OutputFormat,
}

#[derive(Args, Debug)]
struct TopologyArgs {
    #[command(flatten)]
    common: ClusterWatchArgs,
}

/// Where the configuration comes from: the path and whether it was given explicitly
/// (a missing default file is fine; a missing explicit one is an error, spec §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    /// The file to read.
    pub path: PathBuf,
    /// `-c` / `PATRONICTL_CONFIG_FILE` was used.
    pub explicit: bool,
}

/// `click.get_app_dir('patroni')/patronictl.yaml` on Linux.
fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("patroni").join("patronictl.yaml")
}

pub(crate) fn config_path(opt: Option<&Path>) -> ConfigPath {
    match opt {
        Some(p) => ConfigPath {
            path: p.to_path_buf(),
            explicit: p != default_config_path(),
        },
        None => ConfigPath {
            path: default_config_path(),
            explicit: false,
        },
    }
}

/// What `wardenctl` needs from the configuration: where the DCS is and the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CtlConfig {
    /// `scope`, the default cluster name.
    pub scope: Option<String>,
    /// `namespace` (default `/service`).
    pub namespace: String,
    /// etcd endpoints (`host:port`).
    pub endpoints: Vec<String>,
    /// How to call the members' REST APIs.
    pub rest: RestSettings,
}

/// Reads the configuration leniently, as patronictl does: a `patronictl.yaml` holding
/// only a DCS section is fine, and PATRONI_* variables apply on top.
fn read_ctl_config(cfg: &ConfigPath) -> anyhow::Result<CtlConfig> {
    let env = warden_config::env_snapshot();
    let exists = cfg.path.exists();
    if cfg.explicit && !exists {
        anyhow::bail!(
            "Provided config file {} not existing or no read rights. Check the -c/--config-file parameter",
            cfg.path.display()
        );
    }
    // A complete agent configuration: use the real loader (env overrides included).
    let path = exists.then_some(cfg.path.as_path());
    if let Ok(full) = warden_config::load_with_env(path, &env) {
        let rest = RestSettings {
            auth: full.ctl_auth().map(|a| a.user_pass()),
            tls: ClientTls {
                insecure: full.ctl.insecure,
                cacert: full.ctl_cacert().map(PathBuf::from),
                certfile: full.ctl.certfile.as_ref().map(PathBuf::from),
                keyfile: full.ctl.keyfile.as_ref().map(PathBuf::from),
                keyfile_password: full.ctl.keyfile_password.clone(),
            },
        };
        return Ok(CtlConfig {
            scope: Some(full.scope.clone()).filter(|s| !s.is_empty()),
            namespace: full.namespace.clone(),
            endpoints: full.etcd3.hosts.clone(),
            rest,
        });
    }
    let raw = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            warden_config::parse_yaml_str(&text, &p.display().to_string())?
        }
        None => serde_json::Value::Object(Default::default()),
    };
    let get = |k: &str| raw.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let scope = env.get("PATRONI_SCOPE").cloned().or_else(|| get("scope"));
    let namespace = env
        .get("PATRONI_NAMESPACE")
        .cloned()
        .or_else(|| get("namespace"))
        .unwrap_or_else(|| "/service".to_string());
    let mut endpoints = Vec::new();
    if let Some(v) = env
        .get("PATRONI_ETCD3_HOSTS")
        .or(env.get("PATRONI_ETCD3_HOST"))
    {
        endpoints.extend(split_hosts(v));
    } else if let Some(e) = raw.get("etcd3") {
        for k in ["hosts", "host"] {
            match e.get(k) {
                Some(serde_json::Value::String(s)) => endpoints.extend(split_hosts(s)),
                Some(serde_json::Value::Array(a)) => {
                    endpoints.extend(a.iter().filter_map(|h| h.as_str().map(str::to_string)))
                }
                _ => {}
            }
        }
    }
    let rest = lenient_rest_settings(&raw, &env);
    Ok(CtlConfig {
        scope,
        namespace,
        endpoints,
        rest,
    })
}

/// REST settings from a raw configuration document plus `PATRONI_CTL_*` /
/// `PATRONI_RESTAPI_*` variables (which replace the file's values, as in Patroni).
fn lenient_rest_settings(
    raw: &serde_json::Value,
    env: &std::collections::BTreeMap<String, String>,
) -> RestSettings {
    let sget = |section: &str, key: &str| -> Option<String> {
        let env_key = format!(
            "PATRONI_{}_{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        );
        env.get(&env_key)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| match raw.get(section).and_then(|s| s.get(key)) {
                Some(serde_json::Value::String(v)) => Some(v.clone()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
    };
    let auth_of = |section: &str| -> Option<String> {
        let up = section.to_ascii_uppercase();
        let user = env
            .get(&format!("PATRONI_{up}_USERNAME"))
            .filter(|v| !v.is_empty());
        let pass = env
            .get(&format!("PATRONI_{up}_PASSWORD"))
            .filter(|v| !v.is_empty());
        if user.is_some() || pass.is_some() {
            return Some(format!(
                "{}:{}",
                user.map(String::as_str).unwrap_or(""),
                pass.map(String::as_str).unwrap_or("")
            ));
        }
        let a = raw.get(section)?.get("authentication")?;
        let field = |k: &str| match a.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ serde_json::Value::Number(_)) => v.to_string(),
            _ => String::new(),
        };
        Some(format!("{}:{}", field("username"), field("password")))
    };
    RestSettings {
        auth: auth_of("ctl").or_else(|| auth_of("restapi")),
        tls: ClientTls {
            insecure: sget("ctl", "insecure")
                .and_then(|v| warden_config::parse_bool(&v))
                .unwrap_or(false),
            cacert: sget("ctl", "cacert")
                .or_else(|| sget("restapi", "cafile"))
                .map(PathBuf::from),
            certfile: sget("ctl", "certfile").map(PathBuf::from),
            keyfile: sget("ctl", "keyfile").map(PathBuf::from),
            keyfile_password: sget("ctl", "keyfile_password"),
        },
    }
}

fn split_hosts(s: &str) -> Vec<String> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|h| h.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|h| !h.is_empty())
        .collect()
}

/// Parses `--dcs-url` (`etcd3://host:port/namespace`): endpoints and namespace.
pub fn parse_dcs_url(url: &str) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_string(), r),
        None => {
            let port = url
                .split('/')
                .next()
                .and_then(|h| h.rsplit_once(':'))
                .map(|(_, p)| p);
            let guessed = match port {
                Some("8500") => "consul",
                Some("2181") => "zookeeper",
                Some("8181") => "exhibitor",
                _ => "etcd",
            };
            (guessed.to_string(), url)
        }
    };
    match scheme.as_str() {
        "etcd" | "etcd3" => {}
        "consul" | "zookeeper" | "exhibitor" => {
            anyhow::bail!("Unsupported dcs scheme: {scheme}: Warden supports etcd3 only")
        }
        other => anyhow::bail!("Unknown dcs scheme: {other}"),
    }
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h, Some(format!("/{p}"))),
        None => (rest, None),
    };
    let hostport = if hostport.is_empty() {
        "localhost:2379".to_string()
    } else if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:2379")
    };
    Ok((vec![hostport], path.filter(|p| p != "/")))
}

/// The configuration with `--dcs-url` applied.
pub(crate) fn resolve_config(cfg: &ConfigPath, dcs_url: Option<&str>) -> anyhow::Result<CtlConfig> {
    let mut ctl = read_ctl_config(cfg)?;
    if let Some(url) = dcs_url {
        let (endpoints, ns) = parse_dcs_url(url)?;
        ctl.endpoints = endpoints;
        if let Some(ns) = ns {
            ctl.namespace = ns;
        }
    }
    Ok(ctl)
}

/// Connects to etcd for the cluster `cluster_name` (no lease is ever taken).
pub(crate) async fn connect_dcs(
    ctl: &CtlConfig,
    cluster_name: &str,
) -> anyhow::Result<warden_dcs::EtcdDcs> {
    if ctl.endpoints.is_empty() {
        anyhow::bail!("Can not find suitable configuration of distributed configuration store\nAvailable implementations: etcd3");
    }
    let settings =
        warden_dcs::DcsSettings::new(ctl.endpoints.clone(), &ctl.namespace, cluster_name);
    Ok(warden_dcs::EtcdDcs::connect(settings).await?)
}

/// Reads the cluster `cluster_name` from etcd (fresh read, no lease).
async fn load_cluster(
    cfg: &ConfigPath,
    dcs_url: Option<&str>,
    cluster_name: &str,
) -> anyhow::Result<Cluster> {
    let ctl = resolve_config(cfg, dcs_url)?;
    let dcs = connect_dcs(&ctl, cluster_name).await?;
    use warden_dcs::Dcs;
    Ok(dcs.get_cluster().await?)
}

/// The `scope` of the configuration, used when no cluster name is given.
fn config_scope(cfg: &ConfigPath) -> anyhow::Result<Option<String>> {
    Ok(read_ctl_config(cfg)?.scope)
}

/// Python logging's default `asctime` (`YYYY-MM-DD HH:MM:SS,mmm`).
pub(crate) fn log_warning(msg: &str) {
    let now = chrono::Local::now();
    eprintln!("{} - WARNING - {msg}", now.format("%Y-%m-%d %H:%M:%S,%3f"));
}

/// `click.clear()`: only when stdout is a terminal.
fn clear_screen(out: &mut impl Write) -> std::io::Result<()> {
    if std::io::stdout().is_terminal() {
        out.write_all(b"\x1b[2J\x1b[1;1H")?;
    }
    Ok(())
}

/// `watching()`: the refresh period, if any (`-W` = 2 s unless `-w` is given).
pub(crate) fn watch_period(w: bool, watch: Option<f64>) -> Option<Duration> {
    let secs = match watch {
        Some(s) if s != 0.0 => s,
        _ if w => 2.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

async fn cmd_list(
    cli: &Cli,
    common: &ClusterWatchArgs,
    opts: ListOptions,
    ts: bool,
) -> anyhow::Result<()> {
    let cfg = config_path(cli.config_file.as_deref());
    let mut names = common.cluster_names.clone();
    if names.is_empty() {
        if let Some(scope) = config_scope(&cfg)? {
            names.push(scope);
        }
        if names.is_empty() {
            log_warning("Listing members: No cluster names were provided");
            return Ok(());
        }
    }
    let period = watch_period(common.watch_refresh, common.watch);
    let mut stdout = std::io::stdout();
    if period.is_some() {
        clear_screen(&mut stdout)?;
    }
    loop {
        let started = Instant::now();
        if ts {
            writeln!(
                stdout,
                "{}",
                chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
            )?;
        }
        for name in &names {
            let cluster = load_cluster(&cfg, cli.dcs_url.as_deref(), name).await?;
            stdout.write_all(render_list(name, &cluster, &opts).as_bytes())?;
        }
        stdout.flush()?;
        let Some(period) = period else { return Ok(()) };
        tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
        clear_screen(&mut stdout)?;
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::List(a) => {
            let opts = ListOptions {
                extended: a.extended,
                format: a.format.into(),
            };
            cmd_list(&cli, &a.common, opts, a.timestamp).await
        }
        Command::Topology(a) => {
            let opts = ListOptions {
                extended: false,
                format: Format::Topology,
            };
            cmd_list(&cli, &a.common, opts, false).await
        }
        Command::Completion(a) => {
            let mut out = std::io::stdout().lock();
            write_completion(a.shell, &mut out);
            out.flush()?;
            Ok(())
        }
        other => commands::run(&cli, other).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        let _ = std::io::stdout().flush();
        if e.downcast_ref::<commands::Aborted>().is_some() {
            eprintln!("Aborted!");
        } else {
            eprintln!("Error: {e:#}");
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wardenctl").chain(args.iter().copied()))
    }

    fn completion(shell: CompletionShell) -> String {
        let mut out = Vec::new();
        write_completion(shell, &mut out);
        String::from_utf8(out).expect("utf-8 script")
    }

    #[test]
    fn completion_scripts_name_the_subcommands_and_options() {
        let bash = completion(CompletionShell::Bash);
        assert!(bash.contains("complete -F _wardenctl"), "{bash}");
        for word in [
            "list",
            "switchover",
            "failover",
            "edit-config",
            "demote-cluster",
            "completion",
            "--config-file",
            "--dcs-url",
        ] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        // Options of a subcommand and its value choices.
        assert!(bash.contains("--candidate") && bash.contains("--scheduled"));
        assert!(bash.contains("pretty") && bash.contains("tsv"));
        let zsh = completion(CompletionShell::Zsh);
        assert!(zsh.starts_with("#compdef wardenctl") && zsh.contains("switchover"));
        let fish = completion(CompletionShell::Fish);
        assert!(fish.contains("complete -c wardenctl") && fish.contains("switchover"));
        assert!(parse(&["completion", "tcsh"]).is_err());
    }

    #[test]
    fn global_options() {
        let cli = parse(&[
            "-c",
            "/etc/patroni.yml",
            "--dcs",
            "etcd3://h:2379/ns",
            "-k",
            "list",
        ])
        .unwrap();
        assert_eq!(
            cli.config_file.as_deref(),
            Some(Path::new("/etc/patroni.yml"))
        );
        assert_eq!(cli.dcs_url.as_deref(), Some("etcd3://h:2379/ns"));
        assert!(cli.insecure);
        let cli = parse(&["--config-file", "x.yml", "--dcs-url", "h:2379", "topology"]).unwrap();
        assert_eq!(cli.dcs_url.as_deref(), Some("h:2379"));
        assert!(!cli.insecure);
    }

    #[test]
    fn list_options() {
        let cli = parse(&[
            "list", "batman", "demo", "-e", "-t", "-f", "json", "-w", "1.5",
        ])
        .unwrap();
        let Command::List(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.common.cluster_names, ["batman", "demo"]);
        assert!(a.extended && a.timestamp && !a.common.watch_refresh);
        assert_eq!(a.format, OutputFormat::Json);
        assert_eq!(a.common.watch, Some(1.5));
        assert_eq!(
            watch_period(false, Some(1.5)),
            Some(Duration::from_millis(1500))
        );

        let cli = parse(&[
            "list",
            "--extended",
            "--timestamp",
            "--format",
            "yml",
            "-W",
            "--group",
            "1",
        ])
        .unwrap();
        let Command::List(a) = cli.command else {
            panic!()
        };
        assert!(a.common.cluster_names.is_empty());
        assert_eq!(Format::from(a.format), Format::Yaml);
        assert!(a.common.watch_refresh);
        assert_eq!(a.common.group, Some(1));
        assert_eq!(watch_period(true, None), Some(Duration::from_secs(2)));

        let cli = parse(&["list"]).unwrap();
        let Command::List(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.format, OutputFormat::Pretty);
        assert_eq!(watch_period(false, None), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["list", "-f", "xml"]).is_err());
        assert!(parse(&["list", "-w", "soon"]).is_err());
        assert!(parse(&["topology", "-e"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn topology_options() {
        let cli = parse(&["topology", "batman", "-W"]).unwrap();
        let Command::Topology(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.common.cluster_names, ["batman"]);
        assert!(a.common.watch_refresh);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn action_commands() {
        let cli = parse(&[
            "switchover",
            "batman",
            "--primary",
            "a",
            "--candidate",
            "b",
            "--scheduled",
            "now",
            "--force",
        ])
        .unwrap();
        let Command::Switchover(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.c.cluster_name.as_deref(), Some("batman"));
        assert_eq!(a.leader.as_deref(), Some("a"));
        assert_eq!(a.candidate.as_deref(), Some("b"));
        assert_eq!(a.scheduled.as_deref(), Some("now"));
        assert!(a.force);
        let cli = parse(&["switchover", "--leader", "x"]).unwrap();
        let Command::Switchover(a) = cli.command else {
            panic!()
        };
        assert!(a.c.cluster_name.is_none() && !a.force && a.leader.as_deref() == Some("x"));

        let cli = parse(&[
            "restart",
            "c",
            "m1",
            "m2",
            "-r",
            "replica",
            "--any",
            "--pending",
            "--pg-version",
            "16.1",
            "--timeout",
            "30",
            "--scheduled",
            "2030-01-01T00:00+00:00",
        ])
        .unwrap();
        let Command::Restart(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.m.member_names, ["m1", "m2"]);
        assert_eq!(a.m.role, warden_ctl::members::Role::Replica);
        assert!(a.any && a.pending && !a.m.force);
        assert_eq!(a.pg_version.as_deref(), Some("16.1"));
        assert_eq!(a.timeout.as_deref(), Some("30"));
        let cli = parse(&["reload", "c"]).unwrap();
        let Command::Reload(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.m.role, warden_ctl::members::Role::Any);
        assert!(parse(&["reload"]).is_err());
        assert!(parse(&["restart", "c", "-r", "master"]).is_err());
        assert!(parse(&["dsn", "-r", "standby-leader"]).is_ok());

        let cli = parse(&["flush", "c", "m1", "restart", "--force"]).unwrap();
        let Command::Flush(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.args, ["c", "m1", "restart"]);
        assert!(parse(&["flush", "c"]).is_err());

        let cli = parse(&[
            "edit-config",
            "-s",
            "ttl=20",
            "--set",
            "loop_wait=5",
            "-p",
            "max_connections=101",
            "--pg",
            "work_mem=4MB",
            "-q",
            "--apply",
            "-",
            "--replace",
            "f.yml",
            "--force",
        ])
        .unwrap();
        let Command::EditConfig(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.kvpairs, ["ttl=20", "loop_wait=5"]);
        assert_eq!(a.pgkvpairs, ["max_connections=101", "work_mem=4MB"]);
        assert!(a.quiet && a.force);
        assert_eq!(a.apply_filename.as_deref(), Some("-"));
        assert_eq!(a.replace_filename.as_deref(), Some("f.yml"));

        let cli = parse(&[
            "query",
            "c",
            "-c",
            "SELECT 1",
            "-U",
            "u",
            "-d",
            "db",
            "--format",
            "json",
            "-m",
            "pg1",
            "--delimiter",
            ",",
            "--password",
        ])
        .unwrap();
        let Command::Query(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.command.as_deref(), Some("SELECT 1"));
        assert_eq!(
            (a.username.as_deref(), a.dbname.as_deref()),
            (Some("u"), Some("db"))
        );
        assert_eq!((a.fmt.as_str(), a.delimiter.as_str()), ("json", ","));
        assert!(a.password && a.member.as_deref() == Some("pg1"));
        let cli = parse(&["query", "-f", "x.sql"]).unwrap();
        let Command::Query(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.fmt, "tsv");
        assert_eq!(a.delimiter, "\t");

        let cli = parse(&["reinit", "c", "m", "--from-leader", "--wait", "--force"]).unwrap();
        let Command::Reinit(a) = cli.command else {
            panic!()
        };
        assert!(a.from_leader && a.wait && a.force);
        let cli = parse(&["pause", "--wait"]).unwrap();
        assert!(matches!(cli.command, Command::Pause(ref p) if p.wait));
        let cli = parse(&["version", "c", "m1"]).unwrap();
        let Command::Version(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.member_names, ["m1"]);
        assert!(parse(&["history", "-f", "tsv"]).is_ok());
        assert!(parse(&["remove"]).is_err());
        assert!(parse(&["demote-cluster", "--host", "h", "--port", "5432"]).is_ok());
    }

    #[test]
    fn rest_settings_from_yaml_and_env() {
        let raw = serde_json::json!({
            "restapi": {"authentication": {"username": "r", "password": "rp"}, "cafile": "/ca"},
            "ctl": {"insecure": true}
        });
        let mut env = std::collections::BTreeMap::new();
        let s = lenient_rest_settings(&raw, &env);
        assert_eq!(s.auth.as_deref(), Some("r:rp"));
        assert!(s.tls.insecure);
        assert_eq!(s.tls.cacert.as_deref(), Some(Path::new("/ca")));
        env.insert("PATRONI_CTL_USERNAME".to_string(), "c".to_string());
        env.insert("PATRONI_CTL_PASSWORD".to_string(), "cp".to_string());
        assert_eq!(
            lenient_rest_settings(&raw, &env).auth.as_deref(),
            Some("c:cp")
        );
        let s = lenient_rest_settings(&serde_json::json!({}), &Default::default());
        assert_eq!(s, RestSettings::default());
    }

    #[test]
    fn config_path_default_vs_explicit() {
        assert!(!config_path(None).explicit);
        assert!(config_path(Some(Path::new("/nonexistent/x.yml"))).explicit);
    }

    #[test]
    fn dcs_urls() {
        let (e, ns) = parse_dcs_url("etcd3://10.0.0.1:2379/service").unwrap();
        assert_eq!(e, vec!["10.0.0.1:2379".to_string()]);
        assert_eq!(ns.as_deref(), Some("/service"));
        let (e, ns) = parse_dcs_url("localhost:2379").unwrap();
        assert_eq!((e[0].as_str(), ns), ("localhost:2379", None));
        assert!(parse_dcs_url("consul://x:8500").is_err());
        assert_eq!(
            parse_dcs_url("foo://x").unwrap_err().to_string(),
            "Unknown dcs scheme: foo"
        );
        assert_eq!(
            split_hosts("'h1:2379','h2:2379'"),
            vec!["h1:2379", "h2:2379"]
        );
    }

    #[test]
    fn missing_explicit_config_is_an_error() {
        let err = read_ctl_config(&ConfigPath {
            path: "/nonexistent/x.yml".into(),
            explicit: true,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("not existing or no read rights"),
            "{err}"
        );
    }
}
