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

/// Global options, as patronictl's `ctl` group.
#[derive(Parser, Debug)]
#[command(
    name = "wardenctl",
    version,
    about = "Command-line interface to a Warden/Patroni cluster"
)]
struct Cli {
    /// Configuration file
    #[arg(
        short = 'c',
        long = "config-file",
        env = "PATRONICTL_CONFIG_FILE",
        value_name = "FILE"
    )]
    config_file: Option<PathBuf>,
    /// The DCS connect url
    #[arg(
        short = 'd',
        long = "dcs-url",
        visible_alias = "dcs",
        env = "DCS_URL",
        value_name = "URL"
    )]
    dcs_url: Option<String>,
    /// Allow connections to SSL sites without certs
    #[arg(short = 'k', long = "insecure")]
    insecure: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the Patroni members for a given Patroni
    List(ListArgs),
    /// Prints ASCII topology for given cluster
    Topology(TopologyArgs),
}

/// `-f/--format` choices of `list`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
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

fn config_path(opt: Option<&Path>) -> ConfigPath {
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
        return Ok(CtlConfig {
            scope: Some(full.scope.clone()).filter(|s| !s.is_empty()),
            namespace: full.namespace.clone(),
            endpoints: full.etcd3.hosts.clone(),
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
    Ok(CtlConfig {
        scope,
        namespace,
        endpoints,
    })
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

/// Reads the cluster `cluster_name` from etcd (fresh read, no lease).
async fn load_cluster(
    cfg: &ConfigPath,
    dcs_url: Option<&str>,
    cluster_name: &str,
) -> anyhow::Result<Cluster> {
    let mut ctl = read_ctl_config(cfg)?;
    if let Some(url) = dcs_url {
        let (endpoints, ns) = parse_dcs_url(url)?;
        ctl.endpoints = endpoints;
        if let Some(ns) = ns {
            ctl.namespace = ns;
        }
    }
    if ctl.endpoints.is_empty() {
        anyhow::bail!("Can not find suitable configuration of distributed configuration store\nAvailable implementations: etcd3");
    }
    let settings =
        warden_dcs::DcsSettings::new(ctl.endpoints.clone(), &ctl.namespace, cluster_name);
    let dcs = warden_dcs::EtcdDcs::connect(settings).await?;
    use warden_dcs::Dcs;
    Ok(dcs.get_cluster().await?)
}

/// The `scope` of the configuration, used when no cluster name is given.
fn config_scope(cfg: &ConfigPath) -> anyhow::Result<Option<String>> {
    Ok(read_ctl_config(cfg)?.scope)
}

/// Python logging's default `asctime` (`YYYY-MM-DD HH:MM:SS,mmm`).
fn log_warning(msg: &str) {
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
fn watch_period(w: bool, watch: Option<f64>) -> Option<Duration> {
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
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wardenctl").chain(args.iter().copied()))
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
