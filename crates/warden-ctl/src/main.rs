//! `wardenctl`: the patronictl-compatible command line (spec/ctl.md).
//!
//! Only `list` and `topology` exist so far. Reading the cluster from the DCS is left to
//! [`load_cluster`], to be wired to warden-config + warden-dcs.

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

/// Reads the cluster `cluster_name` from the DCS described by the configuration file
/// and/or `--dcs-url`.
///
/// TODO(lead): wire to warden-config (load + PATRONI_* env, `-d` override of the DCS
/// section) and warden-dcs (linearizable read of the cluster prefix, no lease).
async fn load_cluster(
    cfg: &ConfigPath,
    dcs_url: Option<&str>,
    cluster_name: &str,
) -> anyhow::Result<Cluster> {
    let _ = (cfg, dcs_url, cluster_name);
    anyhow::bail!("not wired yet")
}

/// The `scope` of the configuration, used when no cluster name is given.
///
/// TODO(lead): wire to warden-config.
fn config_scope(cfg: &ConfigPath) -> anyhow::Result<Option<String>> {
    let _ = cfg;
    Ok(None)
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
    fn load_cluster_is_not_wired() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(load_cluster(&config_path(None), None, "batman"))
            .unwrap_err();
        assert_eq!(err.to_string(), "not wired yet");
    }
}
