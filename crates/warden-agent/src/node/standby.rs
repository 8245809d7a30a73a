//! Standby clusters, executor side: following the remote site, turning a primary into
//! the standby leader (`demote-cluster`), building a standby leader from the remote
//! site, and the recovery parameters a standby cluster's `standby_cluster` section
//! overrides. The decisions are [`warden_core::ha`]'s (`ha::standby`); this only acts.
//!
//! Also here: the dynamic configuration cache (`patroni.dynamic.json`) and the L4 write
//! of the `config` key, which a standby leader of a new scope needs first.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tracing::{error, info, warn};
use warden_api::monotonic_ms;
use warden_core::cluster::Cluster;
use warden_core::standby::{RemoteSource, StandbyCluster};
use warden_dcs::Dcs;
use warden_pg::{DataDirState, StopMode, Upstream};

use super::{BootstrapFailed, Node};

/// Role names as Patroni publishes them.
pub(super) const STANDBY_LEADER: &str = "standby_leader";

/// The connection target of the remote site; None when it names no host (archive
/// recovery only). A missing port is libpq's default.
fn remote_upstream(src: &RemoteSource) -> Option<Upstream> {
    Some(Upstream {
        host: src.host.clone()?,
        port: src.port.unwrap_or(5432),
        slot: src.slot.clone(),
    })
}

/// `source`'s recovery parameters as postgresql.conf takes them.
fn overrides_of(src: &RemoteSource, following_remote: bool) -> BTreeMap<String, String> {
    src.recovery_overrides(following_remote)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// How the remote site is named in log lines.
fn describe(src: &RemoteSource) -> String {
    match (&src.host, src.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        _ => "the WAL archive (restore_command)".into(),
    }
}

impl<D: Dcs> Node<D> {
    /// The `standby_cluster` section of the dynamic configuration in effect, when this is
    /// a standby cluster.
    pub(super) fn standby_config(&self) -> Option<StandbyCluster> {
        StandbyCluster::from_config(&self.dynamic.raw, self.dynamic.use_slots)
    }

    /// Recovery parameters that override the configured ones on this standby: those of
    /// the remote site when PostgreSQL follows it, else (a replica of a standby cluster)
    /// the archive commands of the `standby_cluster` section.
    pub(super) fn recovery_overrides(&self) -> BTreeMap<String, String> {
        match (&self.remote, self.standby_config()) {
            (Some(src), _) => overrides_of(src, true),
            (None, Some(sc)) => overrides_of(&sc.source, false),
            (None, None) => BTreeMap::new(),
        }
    }

    /// Where PostgreSQL streams from now: the remote site, or the member it follows
    /// (with my slot there), or nothing.
    pub(super) fn current_upstream(&self, cluster: Option<&Cluster>) -> Option<Upstream> {
        if let Some(src) = &self.remote {
            return remote_upstream(src);
        }
        let f = self.following.clone()?;
        self.upstream_of(cluster?, &f, true).ok()
    }

    /// Writes postgresql.conf (and standby.signal) for a standby streaming from `up`,
    /// with the standby cluster's recovery overrides.
    pub(super) fn write_standby_config(&self, up: Option<&Upstream>) -> Result<()> {
        self.pg
            .write_config_with(up, true, &self.recovery_overrides())?;
        Ok(())
    }

    /// Rewrites postgresql.conf for the role PostgreSQL runs in (`standby`) and whom it
    /// follows now.
    pub(super) fn write_current_config(
        &self,
        cluster: Option<&Cluster>,
        standby: bool,
    ) -> Result<()> {
        if standby {
            self.write_standby_config(self.current_upstream(cluster).as_ref())
        } else {
            Ok(self.pg.write_config(None, false)?)
        }
    }

    /// `Action::FollowRemote`: point the recovery configuration at `source` (reload;
    /// restart on versions where a reload cannot change it; start a stopped PostgreSQL)
    /// and take the role. Nothing is rewritten when PostgreSQL already follows it.
    pub(super) async fn follow_remote(
        &mut self,
        source: RemoteSource,
        standby_leader: bool,
    ) -> Result<()> {
        let running = self.pg.is_running();
        if !running || self.remote.as_ref() != Some(&source) {
            let up = remote_upstream(&source);
            self.pg
                .write_config_with(up.as_ref(), true, &overrides_of(&source, true))?;
            if running {
                // primary_conninfo/primary_slot_name are reloadable from 13 on,
                // restore_command from 14 on.
                let version = self.last_pg.as_ref().map_or(0, |s| s.server_version);
                if version >= 140000 {
                    self.pg.reload().await?;
                } else {
                    let timeout = self.pg.settings().pg_ctl_timeout;
                    self.state = "restarting".into();
                    self.pg.stop(StopMode::Fast, timeout).await?;
                    self.start_configured().await?;
                }
            } else {
                self.start_configured().await?;
            }
            info!(
                "recovery configuration follows the remote site {}",
                describe(&source)
            );
            self.following = None;
            self.remote = Some(source);
        }
        let role = if standby_leader {
            STANDBY_LEADER
        } else {
            "replica"
        };
        if self.role != role {
            info!("running as {role}");
        }
        self.role = role.into();
        Ok(())
    }

    /// Starts PostgreSQL with the configuration already written.
    async fn start_configured(&mut self) -> Result<()> {
        self.state = "starting".into();
        let started = self.pg.start().await;
        self.note_start_result(&started);
        if let Err(e) = started {
            self.state = "start failed".into();
            return Err(e.into());
        }
        self.state = "running".into();
        Ok(())
    }

    /// `Action::DemoteToStandby` (Patroni's `demote('demote-cluster')` when the lock is
    /// kept): fast stop, the shutdown checkpoint as `optime`, archive the WAL file holding
    /// it when archiving is on, then start as the standby leader following `source`.
    pub(super) async fn demote_to_standby(&mut self, source: RemoteSource) -> Result<()> {
        info!("Demoting self (demote-cluster)");
        self.fence.set_primary_running(false);
        self.watchdog.disable();
        self.checkpoint_after_promote = None;
        self.state = "stopping".into();
        self.publish();
        let role_before = self.role.clone();
        if self.pg_unanswered_since_ms.is_some() {
            warn!("PostgreSQL does not answer: killing it instead of a shutdown");
            self.pg.kill_instance().await?;
            self.pg_unanswered_since_ms = None;
        } else {
            let timeout = self.pg.settings().pg_ctl_timeout;
            self.pg.stop(StopMode::Fast, timeout).await?;
        }
        self.callbacks.fire("on_stop", &role_before);
        self.state = "stopped".into();
        self.role = "demoted".into();
        self.following = None;
        self.remote = None;
        self.last_pg = None;
        // Synchronous replication is off in a standby cluster: the names go back to the
        // configuration's own, so that a later promotion does not wait for them.
        if self.managed_standby_names.take().is_some() {
            self.memory.standby_names_are_mine = false;
            self.rebuild_pg_settings();
            self.pg_config_changed = false;
        }
        // Keep the lock (renewed now: the stop may have taken a while) and publish where
        // this timeline ends, as Patroni's update_leader with the checkpoint LSN does.
        let t0 = monotonic_ms();
        match tokio::time::timeout(self.retry_timeout(), self.dcs.update_leader(self.me())).await
        {
            Ok(Ok(true)) => self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000)),
            Ok(Ok(false)) => {
                self.set_leader_until(None);
                warn!("lost the leader lock while demoting to a standby cluster");
            }
            Ok(Err(e)) => warn!("could not renew the leader lock after the demotion: {e}"),
            Err(_) => warn!("could not renew the leader lock after the demotion: no answer within retry_timeout"),
        }
        if let Ok(cd) = self.pg.controldata().await {
            if let Some(lsn) = cd.checkpoint_lsn() {
                let st = self.status_with_optime(lsn);
                if let Err(e) = self.dcs.set_status(&st.to_json()).await {
                    warn!("could not publish the shutdown checkpoint: {e}");
                }
            }
        }
        match self.pg.archive_command() {
            Some(cmd) => match self.pg.archive_shutdown_checkpoint_wal(&cmd).await {
                Ok(file) => info!("archived {file}, the WAL file with the shutdown checkpoint"),
                Err(e) => error!("Failed to archive WAL file with the shutdown checkpoint: {e}"),
            },
            None => info!("Not archiving latest checkpoint WAL file. Archiving is not configured."),
        }
        self.follow_remote(source, true).await
    }

    /// `Action::BootstrapStandbyLeader` (Patroni's `bootstrap_standby_leader`): build the
    /// data directory from the remote site, start following it, then publish the
    /// cluster (`initialize`, `config`, the leader key) with this node as its standby
    /// leader. A failure cancels the initialisation and stops the agent, as a failed
    /// bootstrap does.
    pub(super) async fn bootstrap_standby_leader(
        &mut self,
        source: RemoteSource,
        create_replica_methods: Vec<String>,
    ) -> Result<()> {
        self.state = "creating replica".into();
        self.role = "uninitialized".into();
        self.publish();
        self.touch_member().await;
        let r: Result<()> = async {
            let up = remote_upstream(&source)
                .ok_or_else(|| anyhow!("standby_cluster has no host to take a base backup from"))?;
            info!(
                "clone from remote member {} (create_replica_methods: {:?})",
                describe(&source),
                create_replica_methods
            );
            // Patroni's create_replica with the remote member: the standby cluster's
            // `create_replica_methods` (none: pg_basebackup), each with its local section.
            let methods: Vec<_> = if create_replica_methods.is_empty() {
                vec![warden_core::replica::ReplicaMethod::new(
                    warden_core::replica::BASEBACKUP,
                    serde_json::Map::new(),
                )]
            } else {
                crate::settings::replica_methods_named(&self.cfg, &create_replica_methods)
            };
            super::replica::create_replica(
                &self.pg,
                &self.cfg.scope,
                Some(&Upstream { slot: None, ..up }),
                &methods,
            )
            .await
            .context("clone from the remote site")?;
            if let Err(e) = self.pg.restore_configuration_files() {
                warn!("could not restore configuration files: {e}");
            }
            self.follow_remote(source.clone(), true).await?;
            let sysid = match self.pg.data_dir_state() {
                DataDirState::Initialized { sysid } => sysid,
                other => return Err(anyhow!("after the clone the data dir is {other:?}")),
            };
            self.dcs.set_initialize(&sysid).await?;
            self.dcs
                .set_config(&self.dynamic.raw.to_string(), None)
                .await?;
            let t0 = monotonic_ms();
            self.dcs.take_leader(self.me()).await?;
            self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000));
            self.sysid = Some(sysid);
            if let Ok(st) = self.pg.query_status().await {
                self.last_pg = Some(st);
            }
            self.publish();
            Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                info!("initialized a new cluster");
                Ok(())
            }
            Err(e) => {
                self.state = "stopped".into();
                error!("failed to bootstrap clone from remote member: {e:#}");
                info!("removing initialize key after failed attempt to bootstrap the cluster");
                if let Err(ce) = self.dcs.cancel_initialization().await {
                    error!("could not remove the initialize key: {ce}");
                }
                if let Err(se) = self
                    .pg
                    .stop(StopMode::Immediate, Duration::from_secs(10))
                    .await
                {
                    error!("could not stop PostgreSQL after the failed bootstrap: {se}");
                }
                self.remote = None;
                if let Err(re) = self.pg.remove_data_dir().await {
                    error!("could not remove the data directory: {re}");
                }
                Err(anyhow::Error::new(BootstrapFailed(format!("{e:#}"))))
            }
        }
    }

    /// `Action::WriteConfig` (L4): publish the dynamic configuration in effect, compared
    /// with the (missing or empty) key read this cycle: if someone wrote it meanwhile,
    /// theirs stays.
    pub(super) async fn write_config_key(&mut self, cluster: &Cluster) -> Result<()> {
        let value = self.dynamic.raw.to_string();
        // A key whose value is not JSON has no usable version: overwrite it, as Patroni.
        let version = match &cluster.config {
            None => Some(0),
            Some(c) => Some(c.version).filter(|v| *v > 0),
        };
        if self.dcs.set_config(&value, version).await? {
            info!("published the dynamic configuration (the config key was missing)");
        }
        Ok(())
    }

    /// The copy of the dynamic configuration loaded at start (`None`: none), so that an
    /// unchanged configuration is not written again.
    pub fn dynamic_saved(&mut self, saved: Option<Value>) {
        self.saved_dynamic = saved;
    }

    /// End of cycle: keep `patroni.dynamic.json` in step with the dynamic configuration
    /// in effect (not while the data directory is not initialised).
    pub(super) fn save_dynamic_cache(&mut self) {
        if self.role == "uninitialized" || self.saved_dynamic.as_ref() == Some(&self.dynamic.raw) {
            return;
        }
        let dir = &self.cfg.postgresql.data_dir;
        if !dir.join("PG_VERSION").exists() {
            return;
        }
        match crate::dynamic_cache::save(dir, &self.dynamic.raw) {
            Ok(()) => self.saved_dynamic = Some(self.dynamic.raw.clone()),
            Err(e) => error!(
                "Exception when saving file: {}: {e}",
                dir.join(crate::dynamic_cache::FILE_NAME).display()
            ),
        }
    }
}

impl<D: Dcs> Node<D> {
    /// The cluster view the REST API answers from: without a `config` key in the DCS it
    /// carries the dynamic configuration in effect (version 0, so `GET /config` still
    /// says there is none), as Patroni's API falls back to its global config. Otherwise a
    /// new standby leader whose scope has no config yet would answer `/primary` with 200.
    pub(super) fn published_view(&self, c: &Cluster) -> Cluster {
        let mut view = c.clone();
        if c.config
            .as_ref()
            .is_none_or(|k| k.value.as_object().is_none_or(|o| o.is_empty()))
        {
            view.config = Some(warden_core::cluster::ConfigKey {
                value: self.dynamic.raw.clone(),
                version: 0,
            });
        }
        view
    }

    /// The role of a running PostgreSQL as Patroni names it: `primary`, or for a
    /// standby `standby_leader` while this node leads a standby cluster, else `replica`.
    pub(super) fn running_role(&self, in_recovery: bool) -> &'static str {
        if !in_recovery {
            "primary"
        } else if self.role == STANDBY_LEADER {
            STANDBY_LEADER
        } else {
            "replica"
        }
    }
}
