//! The executor: runs HA cycles. Each cycle reads the cluster from the DCS, observes
//! local PostgreSQL, asks the pure core ([`warden_core::ha::decide`]) what to do
//! (answering its questions with real I/O), performs the actions, then publishes the
//! member key and the REST status.

use crate::probe;
use crate::settings::{self, api_url, conn_url};
use crate::supervisor::Fence;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};
use warden_api::{monotonic_ms, StatusHandle};
use warden_config::{Config, DynamicConfig};
use warden_core::cluster::{Cluster, HistoryLine, MemberData, Status};
use warden_core::ha::{
    self, Action, Answers, DataDir, DemoteMode, Divergence, HaInput, LocalPg, LockUpdate,
    NodeMemory, Question, Step,
};
use warden_core::status::{NodeStatus, Xlog};
use warden_dcs::Dcs;
use warden_pg::{DataDirState, PgStatus, Postgres, StopMode, Upstream};

/// Why the loop ended.
pub enum Exit {
    /// SIGTERM/SIGINT: shut down cleanly.
    Shutdown,
    /// A fatal condition (message already logged): exit 1, PostgreSQL left as is.
    Fatal,
}

/// One node's agent state.
pub struct Node<D: Dcs> {
    cfg: Config,
    dynamic: DynamicConfig,
    dcs: D,
    pg: Postgres,
    api: StatusHandle,
    fence: Arc<Fence>,
    memory: NodeMemory,
    /// Member we configured PostgreSQL to stream from.
    following: Option<String>,
    /// PostgreSQL state as Patroni names it.
    state: String,
    /// Role as published when PostgreSQL does not answer.
    role: String,
    last_pg: Option<PgStatus>,
    sysid: Option<String>,
    cluster: Option<Arc<Cluster>>,
    cluster_valid_until_ms: Option<u64>,
    dcs_last_seen: u64,
    last_decision: String,
    next_cycle_due_ms: u64,
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<D: Dcs> Node<D> {
    /// Creates the node; nothing is started.
    pub fn new(
        cfg: Config,
        dynamic: DynamicConfig,
        dcs: D,
        api: StatusHandle,
        fence: Arc<Fence>,
    ) -> Result<Self> {
        let pg = Postgres::new(settings::pg_settings(&cfg, &dynamic)?);
        Ok(Node {
            cfg,
            dynamic,
            dcs,
            pg,
            api,
            fence,
            memory: NodeMemory {
                first_cycle: true,
                ..NodeMemory::default()
            },
            following: None,
            state: "stopped".into(),
            role: "uninitialized".into(),
            last_pg: None,
            sysid: None,
            cluster: None,
            cluster_valid_until_ms: None,
            dcs_last_seen: 0,
            last_decision: String::new(),
            next_cycle_due_ms: 0,
        })
    }

    fn me(&self) -> &str {
        &self.cfg.name
    }

    fn retry_timeout(&self) -> Duration {
        Duration::from_secs(self.dynamic.retry_timeout)
    }

    /// Runs HA cycles until `shutdown` resolves or a fatal decision.
    pub async fn run(&mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Exit {
        let mut wake = self.dcs.subscribe();
        loop {
            let started = monotonic_ms();
            if let Some(exit) = self.cycle().await {
                return exit;
            }
            let leader = self.i_am_leader();
            // Non-leaders sleep half a second longer so the leader runs first (§5).
            let sleep_ms = self.dynamic.loop_wait * 1000 + if leader { 0 } else { 500 };
            let due = started + sleep_ms;
            self.next_cycle_due_ms = due;
            self.publish();
            let now = monotonic_ms();
            if due <= now {
                info!("Loop time exceeded, rescheduling immediately.");
                continue;
            }
            wake.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(due - now)) => {}
                _ = wake.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
        }
    }

    fn i_am_leader(&self) -> bool {
        self.memory
            .leader_until_ms
            .is_some_and(|t| monotonic_ms() < t)
    }

    /// One HA cycle; `Some(exit)` ends the loop.
    async fn cycle(&mut self) -> Option<Exit> {
        let cluster = match tokio::time::timeout(self.retry_timeout(), self.dcs.get_cluster()).await
        {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                error!("Error communicating with DCS: {e}");
                None
            }
            Err(_) => {
                error!("Error communicating with DCS: no answer within retry_timeout");
                None
            }
        };
        if let Some(c) = &cluster {
            for w in &c.warnings {
                warn!("{w}");
            }
            self.apply_dynamic_config(c);
            if c.member(self.me()).is_none() {
                // L3: make our member key visible at once (the leader creates our slot).
                self.touch_member().await;
            }
            if c.leader_name() != Some(self.me()) {
                self.set_leader_until(None);
            }
            self.dcs_last_seen = epoch_secs();
            self.cluster_valid_until_ms = Some(monotonic_ms() + self.dynamic.ttl * 1000);
            self.cluster = Some(Arc::new(c.clone()));
        }
        let local = self.observe(cluster.as_ref()).await;
        let can_rewind =
            settings::use_pg_rewind(&self.cfg, &self.dynamic) && self.pg.can_rewind(true);
        let ha_settings = settings::ha_settings(&self.cfg, &self.dynamic, can_rewind);
        self.fence.set_paused(ha_settings.paused);

        let mut answers = Answers::default();
        let decision = loop {
            let input = HaInput {
                me: &self.cfg.name,
                cluster: cluster.as_ref(),
                pg: &local,
                settings: &ha_settings,
                memory: &self.memory,
                answers: &answers,
                now_ms: monotonic_ms(),
            };
            match ha::decide(&input) {
                Step::Act(d) => break d,
                Step::Ask(q) => {
                    if answers.is_answered(&q) {
                        // A decision that asks the same question twice would loop.
                        error!("HA decision asked {q:?} twice; skipping this cycle (please report it as a BUG)");
                        return None;
                    }
                    self.answer(q, cluster.as_ref(), &local, &mut answers).await;
                }
            }
        };
        info!("{}", decision.reason);
        self.last_decision = decision.reason.clone();

        let cluster_ref = cluster.clone().unwrap_or_default();
        for action in decision.actions {
            if let Action::Exit { message } = &action {
                crate::logging::critical(message);
                return Some(Exit::Fatal);
            }
            let what = format!("{action:?}");
            if let Err(e) = self.execute(action, &cluster_ref, &local).await {
                error!("{what} failed: {e:#}");
                break;
            }
        }

        // Publish what we are now.
        let after = self.observe(cluster.as_ref()).await;
        self.memory.was_running = after.running;
        self.memory.first_cycle = false;
        if cluster.is_some() {
            self.touch_member().await;
        }
        None
    }

    /// Dynamic config from the DCS (or, before the cluster has one, `bootstrap.dcs`).
    fn apply_dynamic_config(&mut self, c: &Cluster) {
        let source = match &c.config {
            Some(k) if k.value.as_object().is_some_and(|o| !o.is_empty()) => k.value.clone(),
            _ => self
                .cfg
                .bootstrap
                .as_ref()
                .map(|b| b.dcs.clone())
                .unwrap_or(Value::Object(Default::default())),
        };
        if source == self.dynamic.raw {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_value(&source);
        for w in warnings {
            warn!("{w}");
        }
        if dynamic.ttl != self.dynamic.ttl {
            self.dcs.set_ttl(dynamic.ttl);
        }
        self.dynamic = dynamic;
        match settings::pg_settings(&self.cfg, &self.dynamic) {
            Ok(s) => {
                let run_as = self.pg.settings().run_as;
                self.pg = Postgres::new(warden_pg::PgSettings { run_as, ..s });
                self.fence.set_postgres(self.pg.clone());
            }
            Err(e) => error!("{e:#}"),
        }
    }

    /// Observes local PostgreSQL for the decision.
    async fn observe(&mut self, cluster: Option<&Cluster>) -> LocalPg {
        let data_dir = match self.pg.data_dir_state() {
            DataDirState::Empty => DataDir::Empty,
            DataDirState::Initialized { sysid } => DataDir::Valid { sysid },
            DataDirState::Invalid(why) => DataDir::Invalid(why),
        };
        if let DataDir::Valid { sysid } = &data_dir {
            self.sysid = Some(sysid.clone());
        }
        let running = self.pg.is_running();
        let mut local = LocalPg {
            data_dir,
            running,
            following: self.following.clone(),
            ..LocalPg::default()
        };
        if running {
            match self.pg.query_status().await {
                Ok(st) => {
                    self.state = "running".into();
                    self.role = if st.in_recovery { "replica" } else { "primary" }.into();
                    self.last_pg = Some(st);
                }
                Err(e) => {
                    warn!("Error communicating with PostgreSQL: {e}");
                }
            }
            if let Some(st) = &self.last_pg {
                local.is_primary = !st.in_recovery;
                local.timeline = st.timeline;
                local.wal_position = st.wal_position;
                local.streaming = st.replication_state.as_deref() == Some("streaming");
                if local.following.is_none() && st.in_recovery {
                    // After an agent restart: recover whom PostgreSQL streams from.
                    local.following = st.primary_conninfo_host_port.as_ref().and_then(|(h, p)| {
                        cluster?.members.iter().find_map(|m| {
                            (m.data.conn_host_port() == Some((h.clone(), *p)))
                                .then(|| m.name.clone())
                        })
                    });
                    self.following = local.following.clone();
                }
            }
        } else {
            self.last_pg = None;
            if matches!(local.data_dir, DataDir::Valid { .. }) {
                if self.state == "running" {
                    self.state = "crashed".into();
                } else if self.state != "crashed" {
                    self.state = "stopped".into();
                }
                if let Ok(cd) = self.pg.controldata().await {
                    let st = cd.state().unwrap_or("");
                    local.was_primary = matches!(
                        st,
                        "in production" | "shut down" | "in crash recovery" | "shutting down"
                    );
                    local.timeline = cd.timeline();
                    local.wal_position = cd.checkpoint_lsn().unwrap_or(0);
                }
            } else {
                self.state = "stopped".into();
                self.role = "uninitialized".into();
            }
        }
        self.fence.set_primary_running(running && local.is_primary);
        local
    }

    fn set_leader_until(&mut self, until: Option<u64>) {
        self.memory.leader_until_ms = until;
        self.fence.set_leader_until(until.unwrap_or(0));
    }

    /// Answers one question of the decision with real I/O.
    async fn answer(
        &mut self,
        q: Question,
        cluster: Option<&Cluster>,
        local: &LocalPg,
        answers: &mut Answers,
    ) {
        let rt = self.retry_timeout();
        match q {
            Question::RaceInitialize => {
                answers.initialize_race = Some(match self.dcs.race_initialize().await {
                    Ok(won) => won,
                    Err(e) => {
                        error!("bootstrap race failed: {e}");
                        false
                    }
                })
            }
            Question::AcquireLeader => {
                let t0 = monotonic_ms();
                let won = matches!(
                    tokio::time::timeout(rt, self.dcs.attempt_to_acquire_leader(&self.cfg.name))
                        .await,
                    Ok(Ok(true))
                );
                if won {
                    self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000));
                }
                answers.acquire = Some(won);
            }
            Question::UpdateLeader => {
                let t0 = monotonic_ms();
                let r = tokio::time::timeout(rt, self.dcs.update_leader(&self.cfg.name)).await;
                answers.update = Some(match r {
                    Ok(Ok(true)) => {
                        self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000));
                        LockUpdate::Renewed
                    }
                    Ok(Ok(false)) => {
                        self.set_leader_until(None);
                        LockUpdate::Lost
                    }
                    Ok(Err(e)) => {
                        error!("failed to update leader lock: {e}");
                        LockUpdate::DcsError
                    }
                    Err(_) => {
                        error!("failed to update leader lock: no answer within retry_timeout");
                        LockUpdate::DcsError
                    }
                });
            }
            Question::ProbeMembers(names) => {
                let targets = names
                    .iter()
                    .filter_map(|n| {
                        let m = cluster?.member(n)?;
                        Some((n.clone(), m.data.api_base()?))
                    })
                    .collect();
                answers.probes = Some(probe::probe_members(targets).await);
            }
            Question::CheckDivergence { leader } => {
                let d = match self.check_divergence(cluster, &leader, local).await {
                    Ok(d) => d,
                    Err(e) => {
                        warn!("could not check timeline divergence against {leader}: {e:#}");
                        Divergence::Unknown
                    }
                };
                info!("timeline divergence check against {leader}: {d:?}");
                answers.divergence = Some(d);
            }
        }
    }

    /// Is my WAL history a prefix of the leader's? (postgres-management.md §6)
    async fn check_divergence(
        &self,
        cluster: Option<&Cluster>,
        leader: &str,
        local: &LocalPg,
    ) -> Result<Divergence> {
        let cluster = cluster.ok_or_else(|| anyhow!("no cluster view"))?;
        let m = cluster
            .member(leader)
            .ok_or_else(|| anyhow!("leader {leader} has no member key"))?;
        let leader_tl = m
            .data
            .timeline
            .ok_or_else(|| anyhow!("leader {leader} did not publish its timeline"))?;
        let up = self.upstream_of(cluster, leader, false)?;
        let (my_tl, my_lsn, clean) = if local.running {
            let st = self
                .last_pg
                .as_ref()
                .ok_or_else(|| anyhow!("no local status"))?;
            (
                st.timeline.unwrap_or(0),
                st.replay_lsn.unwrap_or(st.wal_position),
                true,
            )
        } else {
            let cd = self.pg.controldata().await?;
            let st = cd.state().unwrap_or("").to_string();
            let in_recovery = st == "shut down in recovery" || st == "in archive recovery";
            if in_recovery {
                (
                    cd.min_recovery_timeline()
                        .filter(|t| *t > 0)
                        .or(cd.timeline())
                        .unwrap_or(0),
                    cd.min_recovery_lsn()
                        .filter(|l| *l > 0)
                        .or(cd.checkpoint_lsn())
                        .unwrap_or(0),
                    true,
                )
            } else {
                (
                    cd.timeline().unwrap_or(0),
                    cd.checkpoint_lsn().unwrap_or(0),
                    st == "shut down",
                )
            }
        };
        if my_tl == leader_tl {
            return Ok(Divergence::NotDiverged);
        }
        if my_tl > leader_tl {
            return Ok(Divergence::Diverged);
        }
        let history = self.pg.timeline_history(&up, leader_tl).await?;
        // The first line whose parent is my timeline tells where the leader forked off.
        for (parent, switch) in history {
            if parent > my_tl {
                return Ok(Divergence::Diverged);
            }
            if parent == my_tl {
                // A clean shutdown checkpoint before the fork point is contained in the
                // leader's history; anything written at or past it (or an unclean
                // stop, whose end of WAL we do not know) is not.
                return Ok(if clean && my_lsn < switch {
                    Divergence::NotDiverged
                } else {
                    Divergence::Diverged
                });
            }
        }
        Ok(Divergence::Diverged)
    }

    /// Connection target for a member, with my slot on it when slots are used.
    fn upstream_of(&self, cluster: &Cluster, name: &str, with_slot: bool) -> Result<Upstream> {
        let m = cluster
            .member(name)
            .ok_or_else(|| anyhow!("member {name} has no member key"))?;
        let (host, port) = m
            .data
            .conn_host_port()
            .ok_or_else(|| anyhow!("member {name} has no usable conn_url"))?;
        Ok(Upstream {
            host,
            port,
            slot: (with_slot && self.dynamic.use_slots)
                .then(|| warden_pg::slot_name_for_member(self.me())),
        })
    }

    /// Performs one action.
    async fn execute(&mut self, action: Action, cluster: &Cluster, local: &LocalPg) -> Result<()> {
        let timeout = self.pg.settings().pg_ctl_timeout;
        match action {
            Action::Exit { .. } => Ok(()),
            Action::WriteInitialize { sysid } => {
                self.dcs.set_initialize(&sysid).await?;
                Ok(())
            }
            Action::Bootstrap => self.bootstrap().await,
            Action::CloneFrom { source, follow } => {
                let src = self.upstream_of(cluster, &source, false)?;
                self.state = "creating replica".into();
                self.role = "uninitialized".into();
                self.publish();
                self.touch_member().await;
                if let Err(e) = self.pg.basebackup(&src).await {
                    self.state = "stopped".into();
                    return Err(e).context(format!("clone from {source}"));
                }
                self.start_replica(cluster, Some(&follow)).await
            }
            Action::StartPrimary => {
                self.state = "starting".into();
                self.pg.write_config(None, false)?;
                self.pg.start().await?;
                self.state = "running".into();
                Ok(())
            }
            Action::StartReplica { upstream } => {
                self.start_replica(cluster, upstream.as_deref()).await
            }
            Action::Follow { upstream } => {
                let up = self.upstream_of(cluster, &upstream, true)?;
                self.pg.write_config(Some(&up), true)?;
                self.pg.reload().await?;
                info!("primary_conninfo now points at {upstream}");
                self.following = Some(upstream);
                Ok(())
            }
            Action::Promote => {
                self.pg.promote().await?;
                self.following = None;
                self.role = "primary".into();
                info!("cleared rewind state after becoming the leader");
                Ok(())
            }
            Action::Demote { mode } => {
                let stop = match mode {
                    DemoteMode::Offline => StopMode::Fast,
                    DemoteMode::Immediate | DemoteMode::ImmediateNoLock => StopMode::Immediate,
                };
                self.fence.set_primary_running(false);
                self.state = "stopping".into();
                self.pg.stop(stop, timeout).await?;
                self.state = "stopped".into();
                self.role = "demoted".into();
                self.following = None;
                if mode == DemoteMode::Immediate {
                    self.dcs.delete_leader(&self.cfg.name).await?;
                }
                if mode != DemoteMode::Offline {
                    self.set_leader_until(None);
                }
                if mode == DemoteMode::Offline {
                    // Read-only with no upstream until the DCS is back.
                    self.start_replica(cluster, None).await?;
                }
                Ok(())
            }
            Action::Rewind { source } => {
                let up = self.upstream_of(cluster, &source, false)?;
                if self.pg.is_running() {
                    self.pg.stop(StopMode::Fast, timeout).await?;
                }
                self.state = "stopped".into();
                self.pg
                    .rewind(&up)
                    .await
                    .context(format!("pg_rewind from {source}"))?;
                info!("pg_rewind from {source} finished");
                Ok(())
            }
            Action::RemoveDataDir => {
                if self.pg.is_running() {
                    self.pg.stop(StopMode::Immediate, timeout).await?;
                }
                self.pg.remove_data_dir().await?;
                self.role = "uninitialized".into();
                Ok(())
            }
            Action::ReleaseLeader => {
                self.dcs.delete_leader(&self.cfg.name).await?;
                self.set_leader_until(None);
                Ok(())
            }
            Action::LeaderHousekeeping => self.leader_housekeeping(cluster, local).await,
        }
    }

    async fn start_replica(&mut self, cluster: &Cluster, upstream: Option<&str>) -> Result<()> {
        let up = match upstream {
            Some(name) => Some(self.upstream_of(cluster, name, true)?),
            None => None,
        };
        self.state = "starting".into();
        self.pg.write_config(up.as_ref(), true)?;
        if let Err(e) = self.pg.start().await {
            self.state = "start failed".into();
            return Err(e.into());
        }
        self.state = "running".into();
        self.role = "replica".into();
        self.following = upstream.map(str::to_string);
        Ok(())
    }

    /// B1 won → B4: initdb, start, users, then publish the cluster in the DCS.
    async fn bootstrap(&mut self) -> Result<()> {
        let Some(b) = self.cfg.bootstrap.clone() else {
            return Err(anyhow!("no bootstrap section"));
        };
        self.state = "initializing new cluster".into();
        self.publish();
        let r: Result<()> = async {
            if b.method != "initdb" {
                return Err(anyhow!(
                    "bootstrap.method '{}': custom bootstrap methods are not supported yet",
                    b.method
                ));
            }
            self.pg.initdb(&b.initdb).await.context("initdb")?;
            if self.pg.settings().pg_hba.is_none() && !b.pg_hba.is_empty() {
                self.pg.append_pg_hba(&b.pg_hba)?;
            }
            self.pg.write_config(None, false)?;
            self.state = "starting".into();
            self.pg.start().await.context("start after initdb")?;
            self.pg
                .post_bootstrap()
                .await
                .context("post_bootstrap (creating users)")?;
            if let Some(cmd) = &b.post_bootstrap {
                crate::supervisor::run_post_bootstrap(cmd, &self.pg).await?;
            }
            let sysid = match self.pg.data_dir_state() {
                DataDirState::Initialized { sysid } => sysid,
                other => return Err(anyhow!("after initdb the data dir is {other:?}")),
            };
            self.dcs.set_initialize(&sysid).await?;
            self.dcs.set_config(&b.dcs.to_string(), None).await?;
            let t0 = monotonic_ms();
            self.dcs.take_leader(&self.cfg.name).await?;
            self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000));
            self.sysid = Some(sysid);
            Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                self.state = "running".into();
                self.role = "primary".into();
                info!("initialized a new cluster");
                Ok(())
            }
            Err(e) => {
                // B4: cancel the initialisation so another node can try; keep the data.
                self.state = "initdb failed".into();
                error!("bootstrap failed: {e:#}; cancelling initialization");
                let _ = self.dcs.cancel_initialization().await;
                let _ = self
                    .pg
                    .stop(StopMode::Immediate, Duration::from_secs(10))
                    .await;
                let dir = self.pg.settings().data_dir.clone();
                let failed = dir.with_extension("failed");
                if dir.exists() {
                    if let Err(re) = std::fs::rename(&dir, &failed) {
                        error!(
                            "could not rename {} to {}: {re}",
                            dir.display(),
                            failed.display()
                        );
                    } else {
                        error!("moved the failed data directory to {}", failed.display());
                    }
                }
                Err(e)
            }
        }
    }

    /// Leader duties after a successful lock update: `status`, member slots, `history`.
    async fn leader_housekeeping(&mut self, cluster: &Cluster, local: &LocalPg) -> Result<()> {
        // Slots first: a replica that just appeared should find its slot at once.
        let slot_names: std::collections::BTreeSet<String> = if self.dynamic.use_slots {
            cluster
                .members
                .iter()
                .filter(|m| m.name != self.cfg.name)
                .filter(|m| {
                    !m.data
                        .tags
                        .get("nostream")
                        .is_some_and(warden_core::cluster::truthy)
                })
                .map(|m| warden_pg::slot_name_for_member(&m.name))
                .collect()
        } else {
            Default::default()
        };
        if let Err(e) = self.pg.ensure_slots(&slot_names).await {
            warn!("could not maintain replication slots: {e}");
        }
        let st = self.pg.query_status().await.ok();
        let wal = st
            .as_ref()
            .map(|s| s.wal_position)
            .unwrap_or(local.wal_position);
        let mut status = Status {
            optime: Some(wal),
            ..Status::default()
        };
        if let Some(st) = &st {
            for s in st.slots.iter().filter(|s| s.slot_type == "physical") {
                if let Some(l) = s.restart_lsn {
                    status.slots.insert(s.name.clone(), Value::from(l));
                }
            }
            status.slots.insert(
                warden_pg::slot_name_for_member(&self.cfg.name),
                Value::from(wal),
            );
        }
        self.dcs.set_status(&status.to_json()).await?;
        let tl = st
            .as_ref()
            .and_then(|s| s.timeline)
            .or(local.timeline)
            .unwrap_or(1);
        self.update_history(cluster, tl).await
    }

    /// Keeps the `history` key in step with the timeline (H-rule of ha-loop.md §4.5).
    async fn update_history(&self, cluster: &Cluster, tl: u32) -> Result<()> {
        let current = cluster.history.clone();
        if tl <= 1 {
            if current.as_ref().is_none_or(|h| !h.is_empty()) {
                self.dcs.set_history("[]").await?;
            }
            return Ok(());
        }
        let up_to_date = current.as_ref().is_some_and(|h| {
            h.last()
                .is_some_and(|l| l.timeline == tl - 1 && l.new_leader.is_some())
        });
        if up_to_date {
            return Ok(());
        }
        let path = self
            .pg
            .settings()
            .data_dir
            .join("pg_wal")
            .join(format!("{tl:08X}.history"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                warn!("cannot read {}: {e}", path.display());
                return Ok(());
            }
        };
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(|t| {
                chrono::DateTime::<chrono::Local>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
            })
            .ok();
        let mut lines: Vec<HistoryLine> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                let parent = f.next()?.trim().parse().ok()?;
                let lsn = warden_core::lsn::parse_lsn(f.next()?.trim())?;
                let reason = f.next().unwrap_or("").trim().to_string();
                Some(HistoryLine {
                    timeline: parent,
                    lsn,
                    reason,
                    timestamp: None,
                    new_leader: None,
                })
            })
            .collect();
        // Keep what the DCS already knew about earlier switches.
        if let Some(old) = &current {
            for l in lines.iter_mut() {
                if let Some(o) = old.iter().find(|o| o.timeline == l.timeline) {
                    l.timestamp = o.timestamp.clone();
                    l.new_leader = o.new_leader.clone();
                }
            }
        }
        if let Some(last) = lines.last_mut() {
            last.timestamp = mtime;
            last.new_leader = Some(self.cfg.name.clone());
        }
        let json = Value::Array(lines.iter().map(HistoryLine::to_value).collect()).to_string();
        self.dcs.set_history(&json).await?;
        Ok(())
    }

    /// The member key content.
    fn member_data(&self) -> MemberData {
        let mut d = MemberData {
            conn_url: Some(conn_url(&self.cfg)),
            api_url: Some(api_url(&self.cfg)),
            state: Some(self.state.clone()),
            role: Some(self.role.clone()),
            version: Some(warden_core::PATRONI_COMPAT_VERSION.into()),
            tags: self.cfg.tags.to_member_tags(),
            pause: self.dynamic.pause,
            ..MemberData::default()
        };
        if let Some(st) = &self.last_pg {
            d.role = Some(if st.in_recovery { "replica" } else { "primary" }.into());
            d.xlog_location = Some(st.wal_position);
            d.timeline = st.timeline;
            if st.in_recovery {
                d.replay_lsn = st.replay_lsn;
                d.receive_lsn = st.receive_lsn;
                d.replication_state = st.replication_state.clone();
            }
        }
        d
    }

    async fn touch_member(&mut self) {
        let json = self.member_data().to_json();
        match tokio::time::timeout(
            self.retry_timeout(),
            self.dcs.touch_member(&self.cfg.name, &json),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("failed to update member key: {e}"),
            Err(_) => warn!("failed to update member key: no answer within retry_timeout"),
        }
    }

    /// Publishes the REST status snapshot.
    fn publish(&self) {
        let xlog = self.last_pg.as_ref().map(|st| {
            if st.in_recovery {
                Xlog::Replica {
                    received_location: st.receive_lsn,
                    replayed_location: st.replay_lsn,
                    replayed_timestamp: st.replayed_timestamp.clone(),
                    paused: st.replay_paused,
                }
            } else {
                Xlog::Primary {
                    location: st.wal_position,
                }
            }
        });
        let st = self.last_pg.as_ref();
        self.api.publish(NodeStatus {
            name: self.cfg.name.clone(),
            scope: self.cfg.scope.clone(),
            state: self.state.clone(),
            role: st
                .map(|s| if s.in_recovery { "replica" } else { "primary" }.to_string())
                .unwrap_or_else(|| self.role.clone()),
            pg_answered: st.is_some(),
            postmaster_start_time: st.map(|s| s.postmaster_start_time.clone()),
            server_version: st.map(|s| s.server_version),
            xlog,
            timeline: st.and_then(|s| s.timeline),
            replication_state: st
                .filter(|s| s.in_recovery)
                .and_then(|s| s.replication_state.clone()),
            replication: st
                .map(|s| {
                    s.replication
                        .iter()
                        .filter_map(|r| serde_json::to_value(r).ok())
                        .collect()
                })
                .unwrap_or_default(),
            paused: self.dynamic.pause,
            leader_until_ms: self.memory.leader_until_ms,
            dcs_last_seen: self.dcs_last_seen,
            cluster_valid_until_ms: self.cluster_valid_until_ms,
            cluster: self.cluster.clone(),
            tags: self.cfg.tags.to_member_tags(),
            sysid: self.sysid.clone(),
            pending_restart: false,
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            ttl: self.dynamic.ttl,
            next_cycle_due_ms: self.next_cycle_due_ms,
            last_decision: self.last_decision.clone(),
            version: warden_core::PATRONI_COMPAT_VERSION.into(),
            ..NodeStatus::default()
        });
    }

    /// Graceful shutdown (ha-loop.md §13): stop PostgreSQL fast, then hand the lock over
    /// at once instead of letting it expire.
    pub async fn shutdown(&mut self) {
        if self.dynamic.pause {
            info!("Leaving PostgreSQL running and the leader lock in place: the cluster is paused");
            self.fence.set_leader_until(0);
            return;
        }
        let was_leader = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.leader_name() == Some(self.me()))
            || self.i_am_leader();
        self.fence.set_primary_running(false);
        self.fence.set_leader_until(0);
        if self.pg.is_running() {
            self.state = "stopping".into();
            self.publish();
            let timeout = self.pg.settings().pg_ctl_timeout;
            if let Err(e) = self.pg.stop(StopMode::Fast, timeout).await {
                error!("could not stop PostgreSQL: {e}; keeping the leader lock");
                return;
            }
        }
        self.state = "stopped".into();
        self.last_pg = None;
        if was_leader {
            if let Ok(cd) = self.pg.controldata().await {
                if let Some(lsn) = cd.checkpoint_lsn() {
                    let s = Status {
                        optime: Some(lsn),
                        ..Status::default()
                    };
                    let _ = self.dcs.set_status(&s.to_json()).await;
                }
            }
            match self.dcs.delete_leader(&self.cfg.name).await {
                Ok(true) => info!("Leader key released"),
                Ok(false) => {}
                Err(e) => error!("could not release the leader key: {e}"),
            }
        }
        self.touch_member().await;
        self.publish();
    }
}
