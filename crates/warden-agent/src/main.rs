//! `warden`: the HA agent. Reads a Patroni-style `patroni.yml`, keeps the local
//! PostgreSQL in the right role using etcd, and serves Patroni's REST API.

mod dynamic_cache;
mod logging;
mod management;
mod node;
mod probe;
mod sample;
mod sd_notify;
mod settings;
mod supervisor;
mod wal_sampler;
mod watchdog;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{error, info, warn};
use warden_api::StatusHandle;
use warden_config::{Config, DynamicConfig};
use warden_core::status::NodeStatus;
use warden_dcs::{Dcs, DcsSettings, EtcdDcs};

#[derive(Parser, Debug)]
#[command(
    name = "warden",
    version,
    about = "High availability for PostgreSQL: a drop-in replacement for Patroni"
)]
struct Cli {
    /// Patroni-style YAML configuration file (or a directory of *.yml files).
    config: Option<PathBuf>,
    /// Check the configuration file, print every problem and exit.
    #[arg(long)]
    validate_config: bool,
    /// Print a commented sample configuration and exit.
    #[arg(long)]
    generate_sample_config: bool,
}

fn main() {
    // The fence guard is its own small binary (`warden-guard`, beside this one); where
    // it is missing the agent starts itself as `warden --fence-guard DIR --parent-pid
    // PID` instead (see supervisor::spawn_external_guard): taken apart here, before
    // clap, so that the guard process never runs the argument parser's code.
    if let Some((dir, parent)) = warden_guard::guard::parse_args(std::env::args_os().skip(1)) {
        std::process::exit(warden_guard::guard::run(&dir, parent, || {
            let _ = warden_guard::memory::release_mapped_code();
        }));
    }
    // Before any thread starts: it edits the environment children inherit.
    let systemd = sd_notify::SystemdEnv::take();
    let cli = Cli::parse();
    if cli.generate_sample_config {
        print!("{}", sample::SAMPLE_CONFIG);
        return;
    }
    if cli.validate_config {
        std::process::exit(validate(cli.config.as_deref()));
    }
    // PATRONI_* values are captured once; reloads re-read the files, not the environment.
    let env = warden_config::env_snapshot();
    let cfg = match warden_config::load_with_env(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "{} CRITICAL: invalid configuration: {e}",
                logging::asctime()
            );
            std::process::exit(1);
        }
    };
    logging::init(&cfg.log.level);
    for w in &cfg.warnings {
        warn!("{w}");
    }
    // One thread for the HA loop, the DCS client and the in-process guard: they wait on
    // I/O almost always, and the REST API has a thread of its own (spawn_api_thread).
    // A stalled loop is fenced by the external guard, a process of its own. (The
    // multi-thread scheduler also kept two more threads and libm resident, for `pow`.)
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::critical(&format!("cannot start the runtime: {e}"));
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cfg, cli.config.clone(), env, systemd)) {
        Ok(code) => code,
        Err(e) => {
            logging::critical(&format!("{e:#}"));
            1
        }
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

fn validate(path: Option<&std::path::Path>) -> i32 {
    let Some(path) = path else {
        eprintln!("--validate-config needs a configuration file");
        return 2;
    };
    let problems = warden_config::validate_file(path);
    if problems.is_empty() {
        println!("{}: configuration is valid", path.display());
        0
    } else {
        for p in &problems {
            println!("{p}");
        }
        1
    }
}

async fn run(
    cfg: Config,
    config_path: Option<PathBuf>,
    env: std::collections::BTreeMap<String, String>,
    systemd: sd_notify::SystemdEnv,
) -> Result<i32> {
    if cfg.bootstrap.as_ref().is_some_and(|b| b.users_present) {
        error!("bootstrap.users is not supported since Patroni 4.0 and is ignored");
    }
    settings::check_data_dir(&cfg)?;
    if let Some(rule) = cfg
        .bootstrap
        .as_ref()
        .and_then(|b| sample::unsafe_timing(&b.dcs, cfg.warden.min_ttl))
    {
        anyhow::bail!("refusing to start: {rule}");
    }
    // Dynamic config until the DCS has one (S5): the copy the last run saved in the data
    // directory (patroni.dynamic.json), else bootstrap.dcs, else defaults.
    let cached = dynamic_cache::load(&cfg.postgresql.data_dir);
    let initial = cached.clone().unwrap_or_else(|| {
        cfg.bootstrap
            .as_ref()
            .map(|b| b.dcs.clone())
            .unwrap_or_else(|| serde_json::json!({}))
    });
    let (dynamic, warnings) = DynamicConfig::from_value_with_min_ttl(&initial, cfg.warden.min_ttl);
    for w in warnings {
        warn!("{w}");
    }
    // S4: `required` with a driver Warden does not have exits, as Patroni does.
    let watchdog = watchdog::Watchdog::new(&cfg.watchdog, dynamic.ttl, dynamic.loop_wait)?;

    // One REST client for every call to other members, certificates read once.
    let rest = settings::rest_client(&cfg)?;

    let mut dcs_settings = DcsSettings::new(cfg.etcd3.hosts.clone(), &cfg.namespace, &cfg.scope);
    dcs_settings.ttl = dynamic.ttl;
    dcs_settings.retry_timeout = Duration::from_secs(dynamic.retry_timeout);
    dcs_settings.username = cfg.etcd3.username.clone();
    dcs_settings.password = cfg.etcd3.password.clone();
    let dcs = EtcdDcs::connect(dcs_settings)
        .await
        .context("etcd3: cannot set up the etcd client")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(16);
    spawn_signal_handlers(stop_tx, cmd_tx.clone());

    // S2: wait for the DCS (every 5 s), logging why it is not usable.
    let first = loop {
        match dcs.get_cluster().await {
            Ok(c) => break c,
            Err(e) => {
                // The error names the endpoint(s) and why each failed.
                error!("waiting for etcd: {e}");
                if let Some(n) = &systemd.notifier {
                    n.status(&format!("waiting for etcd: {e}"));
                }
                let mut rx = stop_rx.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = rx.changed() => { return Ok(0); }
                }
            }
        }
    };
    // S3: refuse to run twice under one name (any HTTP answer on our api_url is one).
    if let Some(m) = first.member(&cfg.name) {
        if let Some(base) = m.data.api_base() {
            let url = format!("{base}/liveness");
            if rest
                .request("GET", &url, None, Duration::from_secs(3))
                .await
                .is_ok()
            {
                anyhow::bail!(
                    "Can't start; there is already a node named '{}' running",
                    cfg.name
                );
            }
        }
    }

    let api = StatusHandle::new(NodeStatus {
        name: cfg.name.clone(),
        scope: cfg.scope.clone(),
        state: "starting".into(),
        role: "uninitialized".into(),
        version: warden_core::PATRONI_COMPAT_VERSION.into(),
        ttl: dynamic.ttl,
        ..NodeStatus::default()
    });
    let listener = std::net::TcpListener::bind(listen_addr(&cfg.restapi.listen)?)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("restapi.listen: cannot listen on {}", cfg.restapi.listen))?;
    let opts = api_options(
        &cfg,
        management::OnRuntime::new(
            management::AgentManagement::new(
                dcs.clone(),
                cmd_tx.clone(),
                api.clone(),
                rest.clone(),
            ),
            tokio::runtime::Handle::current(),
        ),
    )?;
    spawn_api_thread(listener, api.clone(), opts, stop_rx.clone())?;

    let pg_settings = settings::pg_settings(&cfg, &dynamic)?;
    // The state file first (the guard exits when it finds none), then the guard.
    let (state_file, _) = supervisor::fence_files(&cfg.postgresql.data_dir);
    let fence =
        supervisor::Fence::with_state_file(warden_pg::Postgres::new(pg_settings), Some(state_file));
    supervisor::spawn_external_guard(&cfg.postgresql.data_dir)
        .context("cannot start the external fence guard")?;
    tokio::spawn(fence.clone().guard());
    let watchdog = watchdog.with_fence(fence.clone());
    api.watch_postmaster(cfg.postgresql.data_dir.join("postmaster.pid"));
    tokio::spawn(wal_sampler::run(
        fence.clone(),
        api.clone(),
        stop_rx.clone(),
    ));

    info!(
        "Warden {} (Patroni-compatible {}) starting: node {} of cluster {}",
        env!("CARGO_PKG_VERSION"),
        warden_core::PATRONI_COMPAT_VERSION,
        cfg.name,
        cfg.scope
    );
    if let Some(n) = systemd.notifier {
        tokio::spawn(sd_notify::run(
            n,
            systemd.watchdog,
            api.clone(),
            stop_rx.clone(),
        ));
    }
    let io = node::NodeIo {
        dcs,
        api,
        fence,
        watchdog,
        commands: cmd_rx,
        config_path,
        env,
        rest,
    };
    let data_dir = cfg.postgresql.data_dir.clone();
    let mut node = node::Node::new(cfg, dynamic, io)?;
    node.dynamic_saved(cached);
    match node.run(stop_rx).await {
        node::Exit::Shutdown => {
            info!("shutting down");
            node.shutdown().await;
            Ok(0)
        }
        node::Exit::Fatal => {
            supervisor::stop_external_guard_if_idle(&data_dir);
            Ok(1)
        }
    }
}

/// Patroni's `restapi.listen` forms (`host:port`, `*:port`, `:port`) as a bind address.
fn listen_addr(listen: &str) -> Result<String> {
    let (host, port) = settings::split_listen(listen, "restapi.listen")?;
    let host = host.split(',').next().unwrap_or("0.0.0.0");
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// REST API options from `restapi.*`.
/// Serves the REST API on a thread of its own with a single-threaded runtime: health
/// checks never compete with the HA loop for a worker, and the HA loop's DCS and
/// PostgreSQL calls never queue behind a burst of requests.
fn spawn_api_thread(
    listener: std::net::TcpListener,
    api: StatusHandle,
    opts: warden_api::ApiOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the REST API runtime")?;
    std::thread::Builder::new()
        .name("warden-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        error!("REST API stopped: {e}");
                        return;
                    }
                };
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = warden_api::serve_with(listener, api, opts, shutdown).await {
                    error!("REST API stopped: {e}");
                }
            })
        })
        .context("cannot start the REST API thread")?;
    Ok(())
}

fn api_options(
    cfg: &Config,
    management: std::sync::Arc<dyn warden_api::management::Management>,
) -> Result<warden_api::ApiOptions> {
    let r = &cfg.restapi;
    let tls = match &r.certfile {
        Some(cert) => Some(warden_api::TlsOptions {
            certfile: cert.into(),
            keyfile: r.keyfile.as_ref().map(PathBuf::from),
            keyfile_password: r.keyfile_password.clone(),
            cafile: r.cafile.as_ref().map(PathBuf::from),
            verify_client: r
                .verify_client
                .as_deref()
                .unwrap_or("none")
                .parse()
                .map_err(|_| {
                    anyhow::anyhow!("restapi.verify_client: expected none, optional or required")
                })?,
        }),
        None => None,
    };
    let mut extra: Vec<(String, String)> = r.http_extra_headers.clone().into_iter().collect();
    if tls.is_some() {
        extra.extend(r.https_extra_headers.clone());
    }
    Ok(warden_api::ApiOptions {
        server_header: warden_api::server_header_for_tokens(
            Some(r.server_tokens.as_str()).filter(|t| !t.is_empty()),
            warden_core::PATRONI_COMPAT_VERSION,
        ),
        extra_headers: extra,
        auth: r
            .authentication
            .as_ref()
            .map(|a| (a.username.clone(), a.password.clone())),
        allowlist: r.allowlist.clone(),
        allowlist_include_members: r.allowlist_include_members,
        tls,
        management,
        ..warden_api::ApiOptions::default()
    })
}

fn spawn_signal_handlers(
    stop: tokio::sync::watch::Sender<bool>,
    commands: tokio::sync::mpsc::Sender<management::Command>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = stop.send(true); }
                _ = int.recv() => { let _ = stop.send(true); }
                _ = hup.recv() => {
                    info!("SIGHUP received: reloading the configuration");
                    let _ = commands.try_send(management::Command::Reload);
                }
            }
        }
    });
}
