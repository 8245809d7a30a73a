//! Maps the configuration (local file + dynamic config from the DCS) to the settings
//! each part of the agent takes.

use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use warden_config::{Config, DynamicConfig};
use warden_core::ha::HaSettings;
use warden_core::replica::ReplicaMethod;
use warden_http::{ClientTls, RestClient, RestSettings};
use warden_pg::{Credentials, PgSettings, SslOptions};

/// Splits Patroni's `host[,host2]:port` into (hosts, port).
pub fn split_listen(listen: &str, key: &str) -> Result<(String, u16)> {
    let (hosts, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{key}: expected host:port, got '{listen}'"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("{key}: invalid port in '{listen}'"))?;
    let hosts = hosts.trim_matches(|c| c == '[' || c == ']');
    let hosts = if hosts.is_empty() || hosts == "*" {
        "0.0.0.0"
    } else {
        hosts
    };
    Ok((hosts.to_string(), port))
}

/// The member's `conn_url` (`postgres://<connect_address>/<database>`).
pub fn conn_url(cfg: &Config) -> String {
    format!(
        "postgres://{}/{}",
        cfg.postgresql.connect_address, cfg.postgresql.database
    )
}

/// The member's `api_url` (`http://<restapi.connect_address>/patroni`).
pub fn api_url(cfg: &Config) -> String {
    let scheme = if cfg.restapi.certfile.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}/patroni", cfg.restapi.connect_address)
}

/// How the agent calls other members' REST APIs, as Patroni's agent does
/// (`PatroniRequest(config, insecure=True)`): Basic auth from `ctl.authentication` else
/// `restapi.authentication`, client certificate `ctl.certfile`/`keyfile`/`keyfile_password`,
/// CA `ctl.cacert` else `restapi.cafile`, and always insecure — with a client certificate
/// that still verifies the peer's chain (not its host name), without one nothing.
pub fn rest_settings(cfg: &Config) -> RestSettings {
    RestSettings {
        auth: cfg.ctl_auth().map(|a| a.user_pass()),
        tls: ClientTls {
            certfile: cfg.ctl.certfile.as_ref().map(PathBuf::from),
            keyfile: cfg.ctl.keyfile.as_ref().map(PathBuf::from),
            keyfile_password: cfg.ctl.keyfile_password.clone(),
            cacert: cfg.ctl_cacert().map(PathBuf::from),
            insecure: true,
        },
    }
}

/// Largest answer a peer probe reads (a member's status is a few KiB).
const PROBE_MAX_RESPONSE: usize = 1 << 20;

/// The one REST client of the agent (peer probes, the start-time name check); the
/// certificate files are read now, so a bad `ctl.certfile`/`keyfile`/`cacert` stops the
/// start with an error naming it instead of making every peer look unreachable.
pub fn rest_client(cfg: &Config) -> Result<RestClient> {
    let ua = format!("Patroni/{} Warden", warden_core::PATRONI_COMPAT_VERSION);
    let client = RestClient::new(&rest_settings(cfg), ua)
        .context("cannot set up the REST client for calling other members")?;
    Ok(client.with_max_response(PROBE_MAX_RESPONSE))
}

/// Settings for PostgreSQL control from the local config and the dynamic config.
pub fn pg_settings(cfg: &Config, dynamic: &DynamicConfig) -> Result<PgSettings> {
    let pg = &cfg.postgresql;
    let (listen_addresses, port) = split_listen(&pg.listen, "postgresql.listen")?;
    let (connect_host, _) = split_listen(&pg.connect_address, "postgresql.connect_address")?;
    let cred = |u: &warden_config::PgUser| -> Result<Credentials> {
        Ok(Credentials {
            username: u.username.clone(),
            password: u.password.clone(),
            ssl: SslOptions::from_pairs(u.ssl_options())
                .map_err(|k| anyhow!("postgresql.authentication: unknown libpq option {k}"))?,
        })
    };
    let parameters = warden_config::effective_postgresql_parameters(dynamic, pg);
    let pg_hba = pg.pg_hba.clone().or_else(|| dynamic.pg_hba.clone());
    Ok(PgSettings {
        name: cfg.name.clone(),
        scope: cfg.scope.clone(),
        data_dir: pg.data_dir.clone(),
        config_dir: pg.config_dir.clone().unwrap_or_else(|| pg.data_dir.clone()),
        bin_dir: pg.bin_dir.clone(),
        listen_addresses,
        port,
        connect_host,
        pgpass: pg.pgpass.clone(),
        superuser: cred(&pg.authentication.superuser)?,
        replication: cred(&pg.authentication.replication)?,
        rewind: pg.authentication.rewind.as_ref().map(cred).transpose()?,
        database: pg.database.clone(),
        parameters,
        pg_hba,
        use_unix_socket: pg.use_unix_socket,
        pg_ctl_timeout: Duration::from_secs(pg.pg_ctl_timeout.max(1)),
        basebackup_options: pg.basebackup.clone(),
        run_as: None,
        custom_bootstrap: None,
    })
}

/// A replica creation method by name with its section `postgresql.<name>` (an empty
/// section when there is none: the name is then the command).
pub fn replica_method(cfg: &Config, name: &str) -> ReplicaMethod {
    ReplicaMethod::new(
        name,
        cfg.postgresql
            .replica_method_sections
            .get(name)
            .cloned()
            .unwrap_or_default(),
    )
}

/// `postgresql.create_replica_methods` with their sections, in order.
pub fn replica_methods(cfg: &Config) -> Vec<ReplicaMethod> {
    replica_methods_named(cfg, &cfg.postgresql.create_replica_methods)
}

/// The methods of another list (e.g. a standby cluster's `create_replica_methods`),
/// each with its section `postgresql.<name>`.
pub fn replica_methods_named(cfg: &Config, names: &[String]) -> Vec<ReplicaMethod> {
    names.iter().map(|n| replica_method(cfg, n)).collect()
}

/// Settings for the HA decisions.
pub fn ha_settings(cfg: &Config, dynamic: &DynamicConfig, can_rewind: bool) -> HaSettings {
    HaSettings {
        ttl: dynamic.ttl,
        loop_wait: dynamic.loop_wait,
        retry_timeout: dynamic.retry_timeout,
        maximum_lag_on_failover: dynamic.maximum_lag_on_failover,
        check_timeline: dynamic.check_timeline,
        paused: dynamic.pause,
        can_bootstrap: cfg.bootstrap.is_some(),
        nofailover: cfg.tags.effective_nofailover(),
        failover_priority: if cfg.tags.effective_nofailover() {
            0
        } else {
            cfg.tags.failover_priority.unwrap_or(1)
        },
        can_rewind,
        reinit_on_divergence: cfg.postgresql.remove_data_directory_on_diverged_timelines,
        remove_data_on_rewind_failure: cfg.postgresql.remove_data_directory_on_rewind_failure,
        replica_methods: replica_methods(cfg),
        replica_method_sections: cfg
            .postgresql
            .replica_method_sections
            .keys()
            .map(|name| replica_method(cfg, name))
            .collect(),
        replicatefrom: cfg.tags.replicatefrom.clone(),
        nostream: cfg.tags.nostream,
        primary_start_timeout: dynamic.primary_start_timeout,
        sync: warden_core::sync::SyncSettings {
            mode: warden_core::sync::SyncMode::parse(&dynamic.synchronous_mode),
            strict: dynamic.synchronous_mode_strict,
            node_count: usize::try_from(dynamic.synchronous_node_count.max(1)).unwrap_or(1),
            maximum_lag_on_syncnode: dynamic.maximum_lag_on_syncnode,
        },
        primary_race_backoff: dynamic.primary_race_backoff,
        // Runtime state, filled in by the executor each cycle.
        watchdog_failed: false,
        failsafe_mode: dynamic.failsafe_mode,
        standby_cluster: warden_core::standby::StandbyCluster::from_config(
            &dynamic.raw,
            dynamic.use_slots,
        ),
    }
}

/// `use_pg_rewind`: local value wins over the dynamic one.
pub fn use_pg_rewind(cfg: &Config, dynamic: &DynamicConfig) -> bool {
    cfg.postgresql
        .use_pg_rewind
        .unwrap_or(dynamic.use_pg_rewind)
}

/// Checks the things that make a node unusable before anything is started: the data
/// directory (if present) must be ours. A missing parent directory is created (mode
/// 0700), as Patroni does.
pub fn check_data_dir(cfg: &Config) -> Result<()> {
    let dir: &PathBuf = &cfg.postgresql.data_dir;
    if dir.as_os_str().is_empty() {
        bail!("postgresql.data_dir: must not be empty");
    }
    match std::fs::metadata(dir) {
        Ok(md) => {
            use std::os::unix::fs::MetadataExt;
            let me = nix::unistd::geteuid().as_raw();
            if md.uid() != me {
                bail!(
                    "postgresql.data_dir: {} is owned by uid {} but warden runs as uid {me}; PostgreSQL would refuse it — fix the ownership (nothing was changed)",
                    dir.display(),
                    md.uid()
                );
            }
            if !md.is_dir() {
                bail!("postgresql.data_dir: {} is not a directory", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(dir);
            match std::fs::metadata(parent) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    warden_pg::create_private_dir_all(parent, None).with_context(|| {
                        format!(
                            "postgresql.data_dir: cannot create parent directory {}",
                            parent.display()
                        )
                    })?;
                    tracing::info!("created directory {}", parent.display());
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "postgresql.data_dir: parent directory {} is not accessible",
                            parent.display()
                        )
                    })
                }
            }
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("postgresql.data_dir: cannot access {}", dir.display()))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_dir_parent_is_created() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("a/b");
        let mut cfg = Config::default();
        cfg.postgresql.data_dir = parent.join("data");
        check_data_dir(&cfg).unwrap();
        for p in [tmp.path().join("a"), parent.clone()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        assert!(!cfg.postgresql.data_dir.exists());
        check_data_dir(&cfg).unwrap();
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            split_listen("127.0.0.1:5432", "k").unwrap(),
            ("127.0.0.1".into(), 5432)
        );
        assert_eq!(
            split_listen("*:8008", "k").unwrap(),
            ("0.0.0.0".into(), 8008)
        );
        assert_eq!(
            split_listen(":8008", "k").unwrap(),
            ("0.0.0.0".into(), 8008)
        );
        assert_eq!(
            split_listen("127.0.0.1,10.0.0.1:5433", "k").unwrap(),
            ("127.0.0.1,10.0.0.1".into(), 5433)
        );
        let e = split_listen("nope", "postgresql.listen")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgresql.listen"), "{e}");
        assert!(split_listen("h:99999", "k").is_err());
    }
}
