//! The executor: runs HA cycles. Each cycle reads the cluster from the DCS, observes
//! local PostgreSQL, asks the pure core ([`warden_core::ha::decide`]) what to do
//! (answering its questions with real I/O), performs the actions, then publishes the
//! member key and the REST status.

use crate::management::Command;
use crate::probe;
use crate::settings::{self, api_url, conn_url};
use crate::supervisor::{Callbacks, Fence};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use warden_api::management::{MgmtResponse, RestartRequest};
use warden_api::{monotonic_ms, StatusHandle};
use warden_config::{Config, DynamicConfig};
use warden_core::cluster::{Cluster, HistoryLine, MemberData};
use warden_core::ha::{
    self, Action, Answers, DataDir, DemoteMode, Divergence, HaInput, LocalPg, LocalWalEnd,
    LockUpdate, NodeMemory, Question, Step,
};
use warden_core::status::{NodeStatus, Xlog};
use warden_dcs::Dcs;
use warden_pg::{DataDirState, PgStatus, Postgres, StopMode, Upstream};

mod pgbouncer;
mod replica;
mod slots;
mod standby;

/// A bootstrap that failed and was cleaned up: the agent exits ("Failed to bootstrap
/// cluster"), as Patroni does, instead of retrying on a half-initialised directory.
#[derive(Debug)]
struct BootstrapFailed(String);

impl std::fmt::Display for BootstrapFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Failed to bootstrap cluster: {}", self.0)
    }
}

impl std::error::Error for BootstrapFailed {}

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
    watchdog: crate::watchdog::Watchdog,
    /// The leader race was postponed (U1): run the next cycle when the backoff ends.
    race_retry_ms: Option<u64>,
    memory: NodeMemory,
    /// Member we configured PostgreSQL to stream from.
    following: Option<String>,
    /// Standby cluster: the remote site PostgreSQL's recovery configuration follows
    /// (None: a member, nothing, or not known since the agent started).
    remote: Option<warden_core::standby::RemoteSource>,
    /// The dynamic configuration as last saved to `patroni.dynamic.json`.
    saved_dynamic: Option<Value>,
    /// Set after a promotion until the background CHECKPOINT that puts the new timeline
    /// into pg_control has finished: until then the member key says
    /// `checkpoint_after_promote: false` and nobody may pg_rewind from us.
    checkpoint_after_promote: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// PostgreSQL state as Patroni names it.
    state: String,
    /// Role as published when PostgreSQL does not answer.
    role: String,
    last_pg: Option<PgStatus>,
    /// The status this cycle read, while nothing since can have changed PostgreSQL
    /// (see [`leaves_postgres_alone`]): the cycle's later questions (slots, the leader's
    /// status key, the state published at its end) reuse it instead of asking again, as
    /// Patroni reuses its one status query per cycle.
    cycle_status: Option<PgStatus>,
    /// When [`Node::check_pending_restart`] last asked PostgreSQL, and what it
    /// ran with then (configuration load time, postmaster start time).
    pending_checked: Option<(PendingKey, u64)>,
    sysid: Option<String>,
    cluster: Option<Arc<Cluster>>,
    cluster_valid_until_ms: Option<u64>,
    dcs_last_seen: u64,
    last_decision: String,
    next_cycle_due_ms: u64,
    /// Y11: about to stop or restart as a synchronous standby; the member key says
    /// `nosync` so that the leader takes me out of the synchronous set first.
    leaving_sync: bool,
    /// Failsafe: when this cycle started asking the members for acknowledgements (the
    /// fence deadline is fed from it), and until when my primary role is kept by them.
    failsafe_asked_at_ms: u64,
    failsafe_active_until_ms: Option<u64>,
    /// The WAL positions the members reported (`lsn` header) in their last failsafe
    /// acknowledgements: slots of cascading members keep moving with them.
    failsafe_member_lsns: std::collections::BTreeMap<String, u64>,
    /// Since when the running postmaster has not answered (timeouts only: a server
    /// that says it is starting up or recovering is answering).
    pg_unanswered_since_ms: Option<u64>,
    /// The decision asked to look again within a second (`RecheckSoon`).
    recheck_soon: bool,
    /// The `sync` key's mod_revision after this cycle's last write (chained writes
    /// compare against it).
    sync_written_version: Option<i64>,
    /// Warnings logged last cycle: a condition that persists is logged once, not every
    /// cycle (Patroni logs the strict-mode warning once, too).
    warned: Vec<String>,
    warned_now: Vec<String>,
    commands: mpsc::Receiver<Command>,
    /// Where the local config came from and the PATRONI_* values captured at start, for
    /// reloads (the environment itself is not re-read, as in Patroni).
    config_path: Option<PathBuf>,
    env: BTreeMap<String, String>,
    callbacks: Callbacks,
    /// Role at the last callback (None = on_start not fired yet for this PostgreSQL run).
    callback_role: Option<String>,
    /// `synchronous_standby_names` as synchronous mode set it (None: the config's own).
    managed_standby_names: Option<String>,
    scheduled_restart: Option<ScheduledRestart>,
    pending_restart_reason: Map<String, Value>,
    /// Dynamic config changed PostgreSQL settings: rewrite the files and reload.
    pg_config_changed: bool,
    cycles: u64,
    /// One-off work ran (start-up, a reload, a role change, a build): release the mapped
    /// code it paged in after the next steady cycle (see [`Node::release_one_off_code`]).
    release_code_pending: bool,
    /// The last cycle decided as the one before it and nothing was being built.
    steady_cycle: bool,
    last_cycle_ms: u64,
    /// Epoch ms at which the last cycle completed (`warden_ha_last_cycle_timestamp_seconds`).
    last_cycle_epoch_ms: u64,
    dcs_round_trip_ms: u64,
    /// Client for other members' REST APIs (http or https).
    rest: warden_http::RestClient,
    /// Replication slot state kept between cycles.
    slots: slots::SlotKeeper,
    /// The long action running in the background (clone, bootstrap, post_bootstrap).
    background: Option<replica::Background>,
    /// Notified when a background action ends, so the loop decides at once.
    task_done: Arc<tokio::sync::Notify>,
    /// A custom bootstrap runs: PostgreSQL is configured for it until post_bootstrap.
    custom_bootstrap: Option<warden_pg::CustomBootstrapMode>,
    /// `warden.pgbouncer`: paused around a planned switchover.
    pgbouncer: Option<pgbouncer::PgBouncers>,
}

/// A restart waiting for its time (M2).
struct ScheduledRestart {
    req: RestartRequest,
    at_epoch_ms: i64,
    /// Postmaster start time when it was scheduled: a restart in between cancels it.
    postmaster_start_time: Option<String>,
}

/// Where the wiring of a node comes from (everything but the config itself).
pub struct NodeIo<D> {
    /// the DCS
    pub dcs: D,
    /// REST status snapshot
    pub api: StatusHandle,
    /// fence guard
    pub fence: Arc<Fence>,
    /// the watchdog (closed until this node leads)
    pub watchdog: crate::watchdog::Watchdog,
    /// management commands from the REST API
    pub commands: mpsc::Receiver<Command>,
    /// config file (for reloads)
    pub config_path: Option<PathBuf>,
    /// PATRONI_* values captured at start
    pub env: BTreeMap<String, String>,
    /// client for other members' REST APIs (peer probes)
    pub rest: warden_http::RestClient,
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<D: Dcs> Node<D> {
    /// Creates the node; nothing is started.
    pub fn new(cfg: Config, dynamic: DynamicConfig, io: NodeIo<D>) -> Result<Self> {
        let pg = Postgres::new(settings::pg_settings(&cfg, &dynamic)?);
        let callbacks = Callbacks::new(cfg.postgresql.callbacks.clone(), &cfg.scope);
        let pgbouncer = pgbouncer::PgBouncers::from_config(&cfg, &io.rest);
        Ok(Node {
            cfg,
            dynamic,
            dcs: io.dcs,
            pg,
            api: io.api,
            fence: io.fence,
            watchdog: io.watchdog,
            race_retry_ms: None,
            memory: NodeMemory {
                first_cycle: true,
                ..NodeMemory::default()
            },
            following: None,
            remote: None,
            saved_dynamic: None,
            state: "stopped".into(),
            role: "uninitialized".into(),
            last_pg: None,
            cycle_status: None,
            pending_checked: None,
            sysid: None,
            cluster: None,
            cluster_valid_until_ms: None,
            dcs_last_seen: 0,
            last_decision: String::new(),
            next_cycle_due_ms: 0,
            recheck_soon: false,
            pg_unanswered_since_ms: None,
            failsafe_asked_at_ms: 0,
            failsafe_active_until_ms: None,
            failsafe_member_lsns: Default::default(),
            leaving_sync: false,
            sync_written_version: None,
            warned: Vec::new(),
            warned_now: Vec::new(),
            commands: io.commands,
            config_path: io.config_path,
            env: io.env,
            callbacks,
            callback_role: None,
            managed_standby_names: None,
            scheduled_restart: None,
            pending_restart_reason: Map::new(),
            pg_config_changed: false,
            checkpoint_after_promote: None,
            cycles: 0,
            release_code_pending: true,
            steady_cycle: false,
            last_cycle_ms: 0,
            last_cycle_epoch_ms: 0,
            dcs_round_trip_ms: 0,
            rest: io.rest,
            slots: slots::SlotKeeper::default(),
            background: None,
            task_done: Arc::new(tokio::sync::Notify::new()),
            custom_bootstrap: None,
            pgbouncer,
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
            // Mark DCS events seen *before* this cycle reads the cluster: one that lands
            // while the cycle runs (e.g. the new leader's key appearing right after we
            // read) must wake the next cycle at once, not wait for loop_wait.
            wake.borrow_and_update();
            if let Some(exit) = self.cycle().await {
                return exit;
            }
            self.cycles += 1;
            self.release_one_off_code();
            self.last_cycle_ms = monotonic_ms().saturating_sub(started);
            self.last_cycle_epoch_ms = u64::try_from(epoch_ms()).unwrap_or(0);
            let leader = self.i_am_leader();
            // Non-leaders sleep half a second longer so the leader runs first (§5).
            let mut sleep_ms = self.dynamic.loop_wait * 1000 + if leader { 0 } else { 500 };
            if std::mem::take(&mut self.recheck_soon) {
                sleep_ms = sleep_ms.min(1000);
            }
            if let Some(ms) = self.race_retry_ms.take() {
                sleep_ms = sleep_ms.min(ms.max(100));
            }
            let due = started + sleep_ms;
            self.next_cycle_due_ms = due;
            self.publish();
            let now = monotonic_ms();
            if due <= now {
                info!("Loop time exceeded, rescheduling immediately.");
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(due - now)) => {}
                _ = wake.changed() => {}
                _ = shutdown.changed() => {}
                _ = self.task_done.notified() => {}
                cmd = self.commands.recv() => {
                    if let Some(cmd) = cmd {
                        self.handle_command(cmd).await;
                    }
                }
            }
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
        }
    }

    /// Releases the mapped code one-off work paged in (argument and YAML parsing,
    /// start-up, a bootstrap, a clone, a promotion), once the cycle after it is steady:
    /// clean pages of the binary and libc that stay resident otherwise (each with its
    /// 64 KiB fault-around neighbours). Code the steady loop still runs comes back at
    /// its next use as a minor fault from the page cache; nothing is read from disk and
    /// no data is touched (`warden_guard::memory`). At most once per piece of one-off
    /// work, never per cycle: a periodic release would only hide the working set.
    fn release_one_off_code(&mut self) {
        if !self.steady_cycle {
            self.release_code_pending = true;
            return;
        }
        if !std::mem::take(&mut self.release_code_pending) {
            return;
        }
        let before = warden_guard::memory::resident_kib();
        match warden_guard::memory::release_mapped_code() {
            Ok(_) => debug!(
                "released one-off code: resident {} KiB before, {} KiB after",
                before.unwrap_or(0),
                warden_guard::memory::resident_kib().unwrap_or(0)
            ),
            Err(e) => debug!("cannot release one-off code: {e}"),
        }
    }

    fn i_am_leader(&self) -> bool {
        self.memory
            .leader_until_ms
            .is_some_and(|t| monotonic_ms() < t)
    }

    /// One HA cycle; `Some(exit)` ends the loop.
    async fn cycle(&mut self) -> Option<Exit> {
        self.steady_cycle = false;
        // Every cycle asks PostgreSQL afresh.
        self.cycle_status = None;
        // A background action that ended since the last cycle: its outcome is input
        // to this decision.
        self.poll_background().await;
        let t0 = monotonic_ms();
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
        self.dcs_round_trip_ms = monotonic_ms().saturating_sub(t0);
        // The failsafe topology as last read (kept across outages), and whether a
        // primary announced itself over POST /failsafe lately.
        self.memory.failsafe_leader = self.api.failsafe_leader(self.dynamic.ttl * 1000);
        if let Some(c) = &cluster {
            self.memory.failsafe_topology = c.failsafe.as_ref().map(|f| {
                f.iter()
                    .filter_map(|(name, url)| Some((name.clone(), url.as_str()?.to_string())))
                    .collect()
            });
            // The DCS answers: failsafe no longer keeps me primary.
            self.failsafe_active_until_ms = None;
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
            if !c.is_unlocked() {
                // U1: the primary_race_backoff timer runs only while nobody leads.
                self.memory.race_backoff_started_ms = None;
            }
            self.dcs_last_seen = epoch_secs();
            self.cluster_valid_until_ms = Some(monotonic_ms() + self.dynamic.ttl * 1000);
            self.cluster = Some(Arc::new(self.published_view(c)));
        }
        let local = self.observe(cluster.as_ref()).await;
        // While bootstrapping or running a background action the configuration files
        // belong to that action (Patroni skips configuration updates in a custom
        // bootstrap, too).
        let busy = self.background.is_some() || self.memory.bootstrap.is_some();
        self.steady_cycle &= !busy;
        if self.pg_config_changed && local.running && !busy {
            self.pg_config_changed = false;
            self.rewrite_config_and_reload(cluster.as_ref(), "dynamic configuration changed")
                .await;
        }
        let can_rewind =
            settings::use_pg_rewind(&self.cfg, &self.dynamic) && self.pg.can_rewind(true);
        let mut ha_settings = settings::ha_settings(&self.cfg, &self.dynamic, can_rewind);
        self.fence.set_paused(ha_settings.paused);
        ha_settings.watchdog_failed = self.watchdog_before_decision(ha_settings.paused);

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
                now_epoch_ms: epoch_ms(),
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
        // The same decision twice in a row, nothing being built: the node is in its
        // steady state (what one-off work paged in can go, see release_one_off_code).
        self.steady_cycle = decision.reason == self.last_decision;
        self.last_decision = decision.reason.clone();

        let cluster_ref = cluster.clone().unwrap_or_default();
        self.sync_written_version = None;
        for action in decision.actions {
            if let Action::Exit { message } = &action {
                crate::logging::critical(message);
                return Some(Exit::Fatal);
            }
            if !leaves_postgres_alone(&action) {
                self.cycle_status = None;
            }
            let what = format!("{action:?}");
            if let Err(e) = self.execute(action, &cluster_ref, &local).await {
                if e.downcast_ref::<BootstrapFailed>().is_some() {
                    // B4: never run (let alone promote) a half-initialised cluster.
                    crate::logging::critical(&format!("{e:#}"));
                    return Some(Exit::Fatal);
                }
                error!("{what} failed: {e:#}");
                break;
            }
        }

        self.warned = std::mem::take(&mut self.warned_now);
        let busy = self.background.is_some() || self.memory.bootstrap.is_some();

        if busy {
            // Nothing to keep in step while PostgreSQL is being built or bootstrapped.
        } else if let Some(c) = &cluster {
            self.update_hot_standby_feedback(c);
            self.sync_replication_slots(c).await;
        } else if let Some(known) = self.failsafe_view() {
            // Failsafe: slots keep moving without the DCS, from the last known cluster
            // and the primary's announced slot positions.
            self.sync_replication_slots(&known).await;
        }

        // M5: a scheduled restart whose time has come (locked cluster, not paused).
        if !busy && !ha_settings.paused && cluster.as_ref().is_some_and(|c| !c.is_unlocked()) {
            self.run_scheduled_restart().await;
        }

        // Publish what we are now (without asking a PostgreSQL again that did not answer
        // this cycle: each question would wait for its timeout).
        let unanswered = self.pg_unanswered_since_ms.is_some();
        let after = if unanswered {
            LocalPg {
                running: self.pg.is_running(),
                ..local.clone()
            }
        } else {
            self.observe(cluster.as_ref()).await
        };
        if after.running && !unanswered && !busy {
            self.check_pending_restart().await;
        }
        // Callbacks are not fired while bootstrapping (the new primary's on_start
        // comes once the cluster is published).
        if self.memory.bootstrap.is_none() {
            self.fire_state_callbacks(after.running);
        }
        self.memory.was_running = after.running;
        self.memory.first_cycle = false;
        if after.running {
            self.memory.prev_wal_position = Some(after.wal_position);
        }
        self.watchdog_after_cycle(ha_settings.paused, after.running);
        self.save_dynamic_cache();
        if cluster.is_some() {
            self.touch_member().await;
        }
        None
    }

    /// on_start the first time PostgreSQL is seen running, on_role_change when the role
    /// it runs in differs from the one at the previous callback.
    fn fire_state_callbacks(&mut self, running: bool) {
        if !running {
            return;
        }
        let Some(st) = &self.last_pg else {
            return;
        };
        let role = self.running_role(st.in_recovery).to_string();
        match self.callback_role.as_deref() {
            None => self.callbacks.fire("on_start", &role),
            Some(prev) if prev != role => self.callbacks.fire("on_role_change", &role),
            _ => return,
        }
        self.callback_role = Some(role);
    }

    /// Rewrites postgresql.conf/pg_hba.conf for the current role and reloads PostgreSQL.
    async fn rewrite_config_and_reload(&mut self, cluster: Option<&Cluster>, why: &str) {
        let standby = match &self.last_pg {
            Some(st) => st.in_recovery,
            None => return,
        };
        if let Err(e) = self.write_current_config(cluster, standby) {
            error!("cannot rewrite the PostgreSQL configuration: {e:#}");
            return;
        }
        match self.pg.reload().await {
            Ok(()) => {
                info!("reloaded PostgreSQL: {why}");
                let role = self.running_role(standby);
                self.callbacks.fire("on_reload", role);
            }
            Err(e) => error!("pg_ctl reload failed: {e}"),
        }
    }

    /// Which settings wait for a restart (`pending_restart` and its reason).
    async fn check_pending_restart(&mut self) {
        // `pending_restart` only changes when PostgreSQL reloads or restarts, both of
        // which the status query sees; the settings Warden wants change with a reload
        // too. Between them, ask once a minute (e.g. for pg_control values a replica
        // inherits from its primary), not every cycle.
        let key: PendingKey = self
            .last_pg
            .as_ref()
            .map(|s| (s.conf_load_time.clone(), s.postmaster_start_time.clone()));
        let now = monotonic_ms();
        if let Some((k, at)) = &self.pending_checked {
            if *k == key && now.saturating_sub(*at) < PENDING_RESTART_RECHECK_MS {
                return;
            }
        }
        let sql = "SELECT name, setting, COALESCE(unit, ''), pending_restart::text FROM pg_catalog.pg_settings \
                   WHERE pending_restart OR context = 'postmaster'";
        let rows = match self.pg.monitor_rows(sql).await {
            Ok(r) => r,
            Err(_) => return,
        };
        self.pending_checked = Some((key, now));
        let cd = self.pg.controldata_cached().await.ok();
        let desired = warden_pg::effective_parameters(self.pg.settings(), cd.as_ref());
        let mut reason = Map::new();
        for r in rows {
            let (Some(name), Some(setting)) =
                (r.first().cloned().flatten(), r.get(1).cloned().flatten())
            else {
                continue;
            };
            // As Patroni: recovery parameters and hot_standby follow the role, not the
            // config (PostgreSQL marks a postmaster-level GUC pending restart whenever it
            // disappears from postgresql.conf, e.g. the recovery block after a promote).
            if name == "hot_standby" || warden_pg::RECOVERY_GUCS.contains(&name.as_str()) {
                continue;
            }
            let pending = r.get(3).cloned().flatten().as_deref() == Some("true");
            // Protected parameters are on the command line, so PostgreSQL never marks
            // them pending: compare with what we would start it with.
            let want = warden_pg::CMDLINE_GUCS
                .contains(&name.as_str())
                .then(|| desired.get(&name))
                .flatten();
            let differs = want.is_some_and(|w| !same_guc_value(w, &setting));
            if pending || differs {
                let new_value = want
                    .cloned()
                    .or_else(|| desired.get(&name).cloned())
                    .unwrap_or_default();
                reason.insert(
                    name,
                    serde_json::json!({"old_value": setting, "new_value": new_value}),
                );
            }
        }
        if reason != self.pending_restart_reason {
            if reason.is_empty() {
                info!("no restart is pending any more");
            } else {
                info!(
                    "pending restart: {}",
                    reason.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            self.pending_restart_reason = reason;
        }
    }

    /// Dynamic config from the DCS (or, while the cluster has none, the one in effect).
    fn apply_dynamic_config(&mut self, c: &Cluster) {
        // Without a config key the one in effect stays (from the DCS earlier, else
        // patroni.dynamic.json or bootstrap.dcs at start, S5), as Patroni keeps it.
        let source = match &c.config {
            Some(k) if k.value.as_object().is_some_and(|o| !o.is_empty()) => k.value.clone(),
            _ => self.dynamic.raw.clone(),
        };
        let min_ttl = self.cfg.warden.min_ttl;
        if source == self.dynamic.raw && min_ttl == self.dynamic.min_ttl {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_value_with_min_ttl(&source, min_ttl);
        for w in warnings {
            warn!("{w}");
        }
        if dynamic.ttl != self.dynamic.ttl {
            self.dcs.set_ttl(dynamic.ttl);
        }
        let standby_before = self.standby_config();
        let pause_changed = dynamic.pause != self.dynamic.pause;
        self.dynamic = dynamic;
        self.rebuild_pg_settings();
        // A standby cluster's archive commands go into every member's recovery
        // configuration: rewrite it when they change (the standby leader's source is
        // the decision's to change).
        if self.standby_config() != standby_before {
            self.pg_config_changed = true;
        }
        if pause_changed {
            // The REST API refuses scheduled switchovers and restarts while paused. Patroni
            // answers from the configuration read at the start of its cycle; publishing at
            // the end of ours would refuse a request that follows a `resume` closely.
            self.publish();
        }
    }

    /// New PostgreSQL settings from the current local + dynamic config; a change in
    /// parameters or pg_hba is applied at the next cycle (rewrite + reload).
    fn rebuild_pg_settings(&mut self) {
        match settings::pg_settings(&self.cfg, &self.dynamic) {
            Ok(mut s) => {
                s.custom_bootstrap = self.custom_bootstrap.clone();
                // Synchronous mode owns synchronous_standby_names while it is on.
                if let Some(v) = &self.managed_standby_names {
                    s.parameters
                        .insert("synchronous_standby_names".into(), v.clone());
                }
                // Permanent logical slots here or downstream need the feedback.
                if self.slots.hot_standby_feedback {
                    s.parameters
                        .insert("hot_standby_feedback".into(), "on".into());
                }
                let old = self.pg.settings();
                if old.parameters != s.parameters || old.pg_hba != s.pg_hba {
                    self.pg_config_changed = true;
                }
                let run_as = old.run_as;
                self.pg = Postgres::new(warden_pg::PgSettings { run_as, ..s });
                self.fence.set_postgres(self.pg.clone());
            }
            Err(e) => error!("{e:#}"),
        }
    }

    /// Handles a management command between cycles.
    async fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Wake => {}
            Command::Reload => self.reload_local_config().await,
            Command::Restart { req, reply } => {
                let r = self.restart_command(req).await;
                let _ = reply.send(r);
            }
            Command::DeleteRestart { reply } => {
                let r = if self.scheduled_restart.take().is_some() {
                    MgmtResponse::text(200, "scheduled restart deleted")
                } else {
                    MgmtResponse::text(404, "no restarts are scheduled")
                };
                self.publish();
                let _ = reply.send(r);
            }
            Command::Reinit {
                force,
                from_leader,
                reply,
            } => {
                info!("reinitialize requested (force={force}, from_leader={from_leader})");
                let cluster = match self.dcs.get_cluster().await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(MgmtResponse::text(
                            503,
                            format!("DCS is not accessible: {e}"),
                        ));
                        return;
                    }
                };
                let Some(leader) = cluster.leader_name().map(str::to_string) else {
                    let _ = reply.send(MgmtResponse::text(
                        503,
                        "Cluster has no leader, can not reinitialize",
                    ));
                    return;
                };
                if leader == self.cfg.name {
                    let _ = reply.send(MgmtResponse::text(
                        503,
                        "I am the leader, can not reinitialize",
                    ));
                    return;
                }
                if let Some(bg) = &self.background {
                    if !force {
                        let text = format!("{} already in progress", bg.what);
                        let _ = reply.send(MgmtResponse::text(503, text));
                        return;
                    }
                    self.cancel_background().await;
                }
                match self.reinitialize(&cluster, &leader, from_leader).await {
                    Ok(()) => {
                        let _ = reply.send(MgmtResponse::text(200, "reinitialize started"));
                    }
                    Err(e) => {
                        error!("reinitialize failed: {e:#}");
                        let _ = reply.send(MgmtResponse::text(503, format!("{e:#}")));
                    }
                }
                self.publish();
                self.touch_member().await;
            }
        }
    }

    /// `POST /restart`: schedule it, or check the filters and restart now (M1, M2).
    async fn restart_command(&mut self, req: RestartRequest) -> MgmtResponse {
        if let Some(bg) = &self.background {
            return MgmtResponse::text(503, format!("{} already in progress", bg.what));
        }
        if let Some(at) = &req.schedule {
            if self.scheduled_restart.is_some() {
                return MgmtResponse::text(409, "Another restart is already scheduled");
            }
            let Some(at_ms) = ha::parse_iso8601_ms(at) else {
                return MgmtResponse::text(400, "Unable to parse scheduled timestamp");
            };
            self.scheduled_restart = Some(ScheduledRestart {
                req: req.clone(),
                at_epoch_ms: at_ms,
                postmaster_start_time: self
                    .last_pg
                    .as_ref()
                    .map(|s| s.postmaster_start_time.clone()),
            });
            info!("restart scheduled at {at}");
            self.publish();
            self.touch_member().await;
            return MgmtResponse::text(202, "Restart scheduled");
        }
        if let Some(why) = self.restart_refusal(&req) {
            return MgmtResponse::text(503, why);
        }
        match self.restart_postgres().await {
            Ok(()) => MgmtResponse::text(200, "restarted successfully"),
            Err(e) => {
                error!("restart failed: {e:#}");
                MgmtResponse::text(503, "restart failed")
            }
        }
    }

    /// M1 filters: None when the restart may go ahead.
    fn restart_refusal(&self, req: &RestartRequest) -> Option<String> {
        let st = self.last_pg.as_ref();
        let my_role = st
            .map(|s| self.running_role(s.in_recovery))
            .unwrap_or(self.role.as_str());
        let ok = restart_conditions_met(
            req,
            my_role,
            st.map(|s| s.server_version),
            !self.pending_restart_reason.is_empty(),
        );
        (!ok).then(|| "restart conditions are not satisfied".to_string())
    }

    /// Restarts PostgreSQL in its current role (fast stop, start), firing on_restart.
    async fn restart_postgres(&mut self) -> Result<()> {
        let cluster = self
            .cluster
            .clone()
            .map(|c| (*c).clone())
            .unwrap_or_default();
        let standby = self.last_pg.as_ref().map(|s| s.in_recovery).unwrap_or(true);
        let role = self.running_role(standby);
        if standby {
            self.leave_sync_set().await;
        }
        self.state = "restarting".into();
        self.publish();
        let timeout = self.pg.settings().pg_ctl_timeout;
        let stopped = self.pg.stop(StopMode::Fast, timeout).await;
        // Back in the synchronous set once PostgreSQL runs again (next member update).
        self.leaving_sync = false;
        stopped?;
        self.write_current_config(Some(&cluster), standby)?;
        if let Err(e) = self.pg.start().await {
            self.state = "restart failed".into();
            return Err(e.into());
        }
        self.state = "running".into();
        self.cycle_status = None;
        let _ = self.observe(Some(&cluster)).await;
        self.check_pending_restart().await;
        self.callbacks.fire("on_restart", role);
        info!("restarted PostgreSQL");
        self.touch_member().await;
        Ok(())
    }

    /// M5: run a scheduled restart whose time has come.
    async fn run_scheduled_restart(&mut self) {
        let Some(sr) = &self.scheduled_restart else {
            return;
        };
        if epoch_ms() < sr.at_epoch_ms {
            return;
        }
        let Some(sr) = self.scheduled_restart.take() else {
            return;
        };
        let now_start = self
            .last_pg
            .as_ref()
            .map(|s| s.postmaster_start_time.clone());
        if sr.postmaster_start_time.is_some() && now_start != sr.postmaster_start_time {
            info!("Cancelling scheduled restart: postgres restart has already happened");
            return;
        }
        if let Some(why) = self.restart_refusal(&sr.req) {
            info!("Skipping the scheduled restart: {why}");
            return;
        }
        info!(
            "running the restart scheduled at {}",
            sr.req.schedule.as_deref().unwrap_or("?")
        );
        if let Err(e) = self.restart_postgres().await {
            error!("scheduled restart failed: {e:#}");
        }
    }

    /// M3 (Patroni's `_do_reinitialize`): stop PostgreSQL, then build the data directory
    /// again in the background (from a `clonefrom` member or the leader; with
    /// `from_leader` from the leader with `basebackup` only) and follow the leader.
    async fn reinitialize(
        &mut self,
        cluster: &Cluster,
        leader: &str,
        from_leader: bool,
    ) -> Result<()> {
        let source = if from_leader {
            leader.to_string()
        } else {
            cluster
                .members
                .iter()
                .find(|m| {
                    m.name != self.cfg.name
                        && m.name != leader
                        && m.data.clonefrom()
                        && m.data.state.as_deref() == Some("running")
                })
                .map(|m| m.name.clone())
                .unwrap_or_else(|| leader.to_string())
        };
        let msg = if source == leader {
            format!("from leader '{source}'")
        } else {
            format!("from replica '{source}'")
        };
        if self.pg.is_running() {
            let role_before = self.role.clone();
            self.pg
                .stop(StopMode::Immediate, self.pg.settings().pg_ctl_timeout)
                .await?;
            self.callbacks.fire("on_stop", &role_before);
        }
        self.memory.rewind_failed = false;
        self.memory.rewind_failures = 0;
        let follow = self
            .cfg
            .tags
            .replicatefrom
            .clone()
            .filter(|r| cluster.member(r).is_some())
            .unwrap_or_else(|| leader.to_string());
        let configured = settings::replica_methods(&self.cfg);
        let methods: Vec<String> =
            warden_core::replica::methods_to_try(&configured, true, from_leader)
                .into_iter()
                .map(|m| m.name)
                .collect();
        self.start_clone(
            cluster,
            Some(&source),
            Some(&follow),
            &methods,
            "reinitialize".into(),
            msg,
        )
    }

    /// `POST /reload` / SIGHUP: re-read the local config; rewrite PostgreSQL's files and
    /// always run `pg_ctl reload` (as Patroni).
    async fn reload_local_config(&mut self) {
        // Parsing YAML again pages in code the steady loop does not run.
        self.release_code_pending = true;
        match warden_config::load_with_env(self.config_path.as_deref(), &self.env) {
            Ok(new) => {
                if new.name != self.cfg.name || new.scope != self.cfg.scope {
                    warn!(
                        "reload: name and scope cannot change at run time; keeping {}/{}",
                        self.cfg.scope, self.cfg.name
                    );
                }
                let (name, scope) = (self.cfg.name.clone(), self.cfg.scope.clone());
                self.cfg = new;
                self.cfg.name = name;
                self.cfg.scope = scope;
                self.pgbouncer = pgbouncer::PgBouncers::reconfigure(
                    self.pgbouncer.take(),
                    &self.cfg,
                    &self.rest,
                );
                for w in &self.cfg.warnings {
                    warn!("{w}");
                }
                self.callbacks
                    .set_commands(self.cfg.postgresql.callbacks.clone());
                self.rebuild_pg_settings();
                self.pg_config_changed = false;
                let cluster = self.cluster.clone();
                self.rewrite_config_and_reload(cluster.as_deref(), "configuration file reloaded")
                    .await;
                info!("reloaded the configuration file");
                self.touch_member().await;
                self.publish();
            }
            Err(e) => error!("reload failed, keeping the previous configuration: {e}"),
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
            remote: self.remote.clone(),
            standby_leader: self.role == standby::STANDBY_LEADER,
            ..LocalPg::default()
        };
        if running {
            let asked_at = monotonic_ms();
            let status = match self.cycle_status.take() {
                Some(st) => Ok(st),
                None => self.pg.query_status().await,
            };
            match status {
                Ok(st) => {
                    self.state = "running".into();
                    self.role = self.running_role(st.in_recovery).into();
                    self.cycle_status = Some(st.clone());
                    self.last_pg = Some(st);
                    self.pg_unanswered_since_ms = None;
                }
                Err(e) => {
                    warn!("Error communicating with PostgreSQL: {e}");
                    if matches!(e, warden_pg::PgError::Timeout(_)) {
                        // Unanswered since the first question that got no answer.
                        let since = *self.pg_unanswered_since_ms.get_or_insert(asked_at);
                        local.unresponsive_ms = monotonic_ms().saturating_sub(since);
                        if self.last_pg.is_none() {
                            // Silent since this agent started: pg_control still says
                            // whether it runs as a primary ("in production"), which must
                            // be known for it to be fenced.
                            local.is_primary = self
                                .pg
                                .controldata()
                                .await
                                .is_ok_and(|cd| cd.state() == Some("in production"));
                        }
                    } else {
                        self.pg_unanswered_since_ms = None;
                    }
                }
            }
            if let Some(st) = &self.last_pg {
                local.is_primary = !st.in_recovery;
                local.timeline = st.timeline;
                local.wal_position = st.wal_position;
                local.streaming = st.replication_state.as_deref() == Some("streaming");
                local.synchronous_standby_names = st.synchronous_standby_names.clone();
                local.synchronous_commit = st.synchronous_commit.clone();
                local.standbys = st
                    .replication
                    .iter()
                    .filter(|r| r.state.as_deref() == Some("streaming"))
                    .map(|r| warden_core::sync::StandbyConn {
                        application_name: r.application_name.clone().unwrap_or_default(),
                        sync_state: r.sync_state.clone().unwrap_or_default(),
                        write_lsn: r.write_lsn,
                        flush_lsn: r.flush_lsn,
                        replay_lsn: r.replay_lsn,
                    })
                    .collect();
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
                // In pause nobody restarts it: it is "stopped" (L10), not "crashed".
                if self.state == "running" && !self.dynamic.pause {
                    self.state = "crashed".into();
                } else if self.state != "crashed" || self.dynamic.pause {
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
        // The deadline was computed with the current ttl: fence by that ttl's margin.
        self.fence
            .set_margin(warden_core::ha::fence_margin_ms(self.dynamic.ttl));
        self.fence.set_leader_until(until.unwrap_or(0));
    }

    /// While the DCS is unreachable in failsafe mode: the last known cluster as the
    /// primary keeping its role sees it, or as a replica sees it with the primary that
    /// announced itself (and its slot positions) as the leader. None otherwise.
    fn failsafe_view(&self) -> Option<Cluster> {
        if !self.dynamic.failsafe_mode {
            return None;
        }
        let mut known = (**self.cluster.as_ref()?).clone();
        if self
            .failsafe_active_until_ms
            .is_some_and(|t| monotonic_ms() < t)
        {
            // Cascading members' slots on the primary follow what they reported.
            for m in &mut known.members {
                if let Some(lsn) = self.failsafe_member_lsns.get(&m.name) {
                    if m.data.tags.contains_key("replicatefrom") {
                        m.data.xlog_location = Some(*lsn);
                    }
                }
            }
            return Some(known);
        }
        let (leader, slots) = self.api.failsafe_ping(self.dynamic.ttl * 1000)?;
        known.leader = Some(warden_core::cluster::Leader {
            name: leader,
            version: 0,
            session: 0,
        });
        if let Some(slots) = slots {
            known.status.slots = slots;
        }
        Some(known)
    }

    /// Failsafe: `POST /failsafe` to every other member of the topology at once (2 s
    /// each, one retry): (member, answered 200 `Accepted`, its `lsn` header).
    async fn ask_failsafe_members(
        &self,
        peers: Vec<(String, String)>,
        slots: Option<serde_json::Map<String, Value>>,
    ) -> Vec<(String, bool, Option<u64>)> {
        let mut body = serde_json::json!({
            "name": self.cfg.name,
            "conn_url": conn_url(&self.cfg),
            "api_url": api_url(&self.cfg),
        });
        if let Some(slots) = slots {
            body["slots"] = Value::Object(slots);
        }
        let body = body.to_string();
        let calls = peers.into_iter().map(|(name, url)| {
            let body = body.clone();
            async move {
                let Some(base) = warden_core::cluster::api_base_of(&url) else {
                    warn!("failsafe: {name} has no usable api_url ({url})");
                    return (name, false, None);
                };
                let endpoint = format!("{base}/failsafe");
                for attempt in 0..2 {
                    match self
                        .rest
                        .request("POST", &endpoint, Some(&body), Duration::from_secs(2))
                        .await
                    {
                        Ok(r) => {
                            let text = r.text();
                            info!("Got response from {name} {endpoint}: {text}");
                            let lsn = r
                                .headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("lsn"))
                                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
                            let accepted = r.status == 200 && text == "Accepted";
                            return (name, accepted, lsn);
                        }
                        Err(e) if attempt == 1 => {
                            warn!("Request failed to {name}: POST {endpoint} ({e})");
                        }
                        Err(_) => {}
                    }
                }
                (name, false, None)
            }
        });
        futures::future::join_all(calls).await
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
                        // Only here, from the HA loop: a stalled agent stops kicking.
                        self.watchdog.keepalive();
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
            Question::FailsafeAcks(peers) => {
                self.failsafe_asked_at_ms = monotonic_ms();
                let slots = self.failsafe_slots();
                let acks = self.ask_failsafe_members(peers, slots).await;
                let all = acks.iter().all(|(_, accepted, _)| *accepted);
                if all {
                    self.failsafe_member_lsns = acks
                        .into_iter()
                        .filter_map(|(name, _, lsn)| Some((name, lsn?)))
                        .collect();
                }
                answers.failsafe_acks = Some(all);
            }
            Question::ProbeMembers(names) => {
                let targets = names
                    .iter()
                    .filter_map(|n| {
                        let m = cluster?.member(n)?;
                        Some((n.clone(), m.data.api_base()?))
                    })
                    .collect();
                answers.probes = Some(probe::probe_members(&self.rest, targets).await);
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
        let me = if local.running {
            let st = self
                .last_pg
                .as_ref()
                .ok_or_else(|| anyhow!("no local status"))?;
            LocalWalEnd {
                timeline: st.timeline.unwrap_or(0),
                lsn: st.replay_lsn.unwrap_or(st.wal_position),
                in_recovery: !local.is_primary,
                clean_shutdown: true,
            }
        } else {
            let cd = self.pg.controldata().await?;
            let st = cd.state().unwrap_or("").to_string();
            if st == "shut down in recovery" || st == "in archive recovery" {
                LocalWalEnd {
                    timeline: cd
                        .min_recovery_timeline()
                        .filter(|t| *t > 0)
                        .or(cd.timeline())
                        .unwrap_or(0),
                    lsn: cd
                        .min_recovery_lsn()
                        .filter(|l| *l > 0)
                        .or(cd.checkpoint_lsn())
                        .unwrap_or(0),
                    in_recovery: true,
                    clean_shutdown: true,
                }
            } else {
                LocalWalEnd {
                    timeline: cd.timeline().unwrap_or(0),
                    lsn: cd.checkpoint_lsn().unwrap_or(0),
                    in_recovery: false,
                    clean_shutdown: st == "shut down",
                }
            }
        };
        // The leader's history is only needed when I am on an older timeline.
        let history = if me.timeline < leader_tl {
            Some(self.pg.timeline_history(&up, leader_tl).await?)
        } else {
            None
        };
        Ok(ha::judge_divergence(me, leader_tl, history.as_deref()))
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
            Action::ClearFailover { version } => {
                if !self.dcs.set_failover("{}", Some(version)).await? {
                    warn!("the failover key changed meanwhile; not clearing it");
                }
                Ok(())
            }
            Action::WaitUntil { epoch_ms: at } => {
                let wait = (at - epoch_ms()).clamp(0, (self.dynamic.loop_wait as i64 + 1) * 1000);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                Ok(())
            }
            Action::WriteInitialize { sysid } => {
                self.dcs.set_initialize(&sysid).await?;
                Ok(())
            }
            Action::Bootstrap => self.start_bootstrap(),
            Action::PostBootstrap => self.start_post_bootstrap(),
            Action::FinishBootstrap => self.finish_bootstrap().await,
            Action::CancelBootstrap => Err(self.cancel_bootstrap("bootstrap failed").await),
            Action::WriteConfig => self.write_config_key(cluster).await,
            Action::FollowRemote {
                source,
                standby_leader,
            } => self.follow_remote(source, standby_leader).await,
            Action::DemoteToStandby { source } => self.demote_to_standby(source).await,
            Action::BootstrapStandbyLeader {
                source,
                create_replica_methods,
            } => {
                self.bootstrap_standby_leader(source, create_replica_methods)
                    .await
            }
            Action::CloneFrom {
                source,
                follow,
                methods,
                what,
            } => {
                self.start_clone(
                    cluster,
                    source.as_deref(),
                    follow.as_deref(),
                    &methods,
                    format!("bootstrap {what}"),
                    what,
                )?;
                self.publish();
                self.touch_member().await;
                Ok(())
            }
            Action::StartPrimary => {
                self.state = "starting".into();
                self.pg.write_config(None, false)?;
                let started = self.pg.start().await;
                self.note_start_result(&started);
                started?;
                self.state = "running".into();
                Ok(())
            }
            Action::StartReplica { upstream } => {
                self.start_replica(cluster, upstream.as_deref()).await
            }
            Action::Follow { upstream } => {
                let up = self.upstream_of(cluster, &upstream, true)?;
                // Not following the remote site any more (a standby cluster's member).
                self.remote = None;
                self.write_standby_config(Some(&up))?;
                self.pg.reload().await?;
                info!("primary_conninfo now points at {upstream}");
                self.following = Some(upstream);
                if self.role == standby::STANDBY_LEADER {
                    self.role = "replica".into();
                }
                Ok(())
            }
            Action::Promote => {
                self.pg.promote().await?;
                self.memory.rewind_failed = false;
                self.memory.rewind_failures = 0;
                self.start_checkpoint_after_promote();
                self.following = None;
                self.remote = None;
                self.role = "primary".into();
                self.callback_role = Some("primary".into());
                self.callbacks.fire("on_role_change", "primary");
                self.resume_pgbouncers_left_paused();
                Ok(())
            }
            Action::Demote { mode } => {
                // Planned: PAUSE the PgBouncers; they resume after the drop (any exit).
                let _pgbouncer = self.pause_pgbouncers(mode, cluster).await;
                let stop = match mode {
                    DemoteMode::Offline | DemoteMode::Graceful => StopMode::Fast,
                    DemoteMode::Immediate | DemoteMode::ImmediateNoLock => StopMode::Immediate,
                };
                if mode == DemoteMode::Graceful {
                    // A checkpoint now makes the shutdown checkpoint (and the write gap) short.
                    if let Err(e) = self.pg.checkpoint().await {
                        warn!("CHECKPOINT before demotion failed: {e}");
                    }
                }
                self.fence.set_primary_running(false);
                self.watchdog.disable();
                self.checkpoint_after_promote = None;
                self.state = "stopping".into();
                self.publish();
                let role_before = self.role.clone();
                if self.pg_unanswered_since_ms.is_some() {
                    // A PostgreSQL that does not answer would not act on a shutdown
                    // request either (and could resume later): kill it for good.
                    warn!("PostgreSQL does not answer: killing it instead of a shutdown");
                    self.pg.kill_instance().await?;
                    self.pg_unanswered_since_ms = None;
                } else {
                    self.pg.stop(stop, timeout).await?;
                }
                self.callbacks.fire("on_stop", &role_before);
                self.state = "stopped".into();
                self.role = "demoted".into();
                self.following = None;
                self.remote = None;
                self.last_pg = None;
                if mode == DemoteMode::Graceful {
                    // The replicas have the shutdown checkpoint now: publish where the WAL
                    // ends and hand the lock over at once.
                    if let Ok(cd) = self.pg.controldata().await {
                        if let Some(lsn) = cd.checkpoint_lsn() {
                            let st = self.status_with_optime(lsn);
                            let _ = self.dcs.set_status(&st.to_json()).await;
                        }
                    }
                }
                if matches!(mode, DemoteMode::Immediate | DemoteMode::Graceful) {
                    self.dcs.delete_leader(&self.cfg.name).await?;
                    info!("released the leader key");
                }
                // Without the DCS the lock cannot be renewed: it is gone for fencing too.
                self.set_leader_until(None);
                if matches!(mode, DemoteMode::Offline | DemoteMode::Graceful) {
                    // Read-only with no upstream; the next cycle follows the new leader.
                    self.start_replica(cluster, None).await?;
                }
                Ok(())
            }
            Action::Rewind { source } => {
                let up = self.upstream_of(cluster, &source, false)?;
                // A running replica stays up until the source is usable (a leader still
                // finishing its promotion is not): no outage for a rewind that cannot run.
                self.pg
                    .ensure_rewind_source(&up)
                    .await
                    .context(format!("pg_rewind from {source}"))?;
                if self.pg.is_running() {
                    self.pg.stop(StopMode::Fast, timeout).await?;
                }
                self.state = "stopped".into();
                if let Err(e) = self.pg.rewind(&up).await {
                    // Patroni's rewind state FAILED: against a healthy leader (or when
                    // pg_control may be damaged) it is not tried again; the decision
                    // then removes the data directory if allowed.
                    if self.pg.ensure_rewind_source(&up).await.is_ok() {
                        self.memory.rewind_failures += 1;
                        error!(
                            "Failed to rewind from healthy primary: {source} (attempt {} of {})",
                            self.memory.rewind_failures,
                            warden_core::ha::REWIND_ATTEMPTS
                        );
                    } else {
                        warn!("Failed to rewind because primary {source} become unreachable");
                        let use_rewind = settings::use_pg_rewind(&self.cfg, &self.dynamic);
                        if !self.pg.can_rewind(use_rewind) {
                            self.memory.rewind_failed = true;
                        }
                    }
                    return Err(e).context(format!("pg_rewind from {source}"));
                }
                self.memory.rewind_failed = false;
                self.memory.rewind_failures = 0;
                info!("pg_rewind from {source} finished");
                Ok(())
            }
            Action::RemoveDataDir => {
                if self.pg.is_running() {
                    self.pg.stop(StopMode::Immediate, timeout).await?;
                }
                info!(
                    "Removing data directory: {}",
                    self.pg.settings().data_dir.display()
                );
                self.pg.remove_data_dir().await?;
                self.role = "uninitialized".into();
                self.remote = None;
                self.memory.rewind_failed = false;
                self.memory.rewind_failures = 0;
                self.last_pg = None;
                self.following = None;
                Ok(())
            }
            Action::ReleaseLeader => {
                self.dcs.delete_leader(&self.cfg.name).await?;
                self.set_leader_until(None);
                Ok(())
            }
            Action::WriteSync { write, message } => {
                let version = if write.chained {
                    self.sync_written_version.or(write.version)
                } else {
                    write.version
                };
                let Some(written) = self.dcs.set_sync(&write.to_json(), version).await? else {
                    return Err(anyhow!(
                        "Synchronous replication key updated by someone else"
                    ));
                };
                self.sync_written_version = Some(written);
                info!("{message}");
                Ok(())
            }
            Action::WriteFailsafe { value } => {
                self.dcs.set_failsafe(&value).await?;
                // As Patroni's write_failsafe: what I wrote is the topology from now on.
                // The last read may lack a member I just added, and an outage in the next
                // cycle must ask that member too (it may take over otherwise).
                self.memory.failsafe_topology = serde_json::from_str(&value).ok();
                Ok(())
            }
            Action::FailsafeContinue => {
                // The members acknowledged me after this moment: none of them races for
                // the lock within ttl, so the fence deadline runs from here.
                let until = self.failsafe_asked_at_ms + self.dynamic.ttl * 1000;
                self.set_leader_until(Some(until));
                self.failsafe_active_until_ms = Some(until);
                Ok(())
            }
            Action::KillPostgres => {
                self.fence.set_primary_running(false);
                if self.pg.kill_instance().await? {
                    error!(
                        "killed PostgreSQL (postmaster and all its processes): it did not answer"
                    );
                }
                self.pg_unanswered_since_ms = None;
                self.memory.primary_given_up_at_ms = Some(monotonic_ms());
                self.state = "stopped".into();
                self.role = "demoted".into();
                self.last_pg = None;
                self.following = None;
                self.remote = None;
                Ok(())
            }
            Action::RecheckSoon => {
                self.recheck_soon = true;
                Ok(())
            }
            Action::DeleteSync { version } => {
                if !self.dcs.delete_sync(version).await? {
                    return Err(anyhow!(
                        "Synchronous replication key updated by someone else"
                    ));
                }
                info!("synchronous replication is off: removed the sync key");
                Ok(())
            }
            Action::SetStandbyNames { value, message } => {
                info!("{message}");
                self.managed_standby_names = value.clone();
                self.rebuild_pg_settings();
                self.pg_config_changed = false;
                if self.pg.is_running() {
                    let standby = !local.is_primary;
                    self.write_current_config(Some(cluster), standby)?;
                    self.pg.reload().await?;
                    if !standby {
                        // A standby confirms a change only with WAL written after it: note
                        // where it starts and write a little (Patroni's txid_current()).
                        self.memory.standby_names_changed_at_lsn =
                            self.pg.query_status().await.ok().map(|st| st.wal_position);
                        if let Err(e) = self
                            .pg
                            .execute(
                                "SET synchronous_commit TO off; SELECT pg_catalog.txid_current()",
                            )
                            .await
                        {
                            warn!(
                                "could not write WAL after changing synchronous_standby_names: {e}"
                            );
                        }
                    }
                }
                self.memory.standby_names_are_mine = value.is_some();
                Ok(())
            }
            Action::Warn { message } => {
                if !self.warned.contains(&message) {
                    warn!("{message}");
                }
                self.warned_now.push(message);
                Ok(())
            }
            Action::AbandonLeader => {
                self.fence.set_primary_running(false);
                self.watchdog.disable();
                self.role = "demoted".into();
                self.callback_role = Some("demoted".into());
                self.callbacks.fire("on_role_change", "demoted");
                self.dcs.delete_leader(&self.cfg.name).await?;
                self.set_leader_until(None);
                self.memory.start_failed = false;
                Ok(())
            }
            Action::LeaderHousekeeping => self.leader_housekeeping(cluster, local).await,
            Action::ActivateWatchdog => Ok(self.watchdog.activate()?),
            Action::PostponeRace {
                started_ms,
                retry_in_ms,
            } => {
                self.memory.race_backoff_started_ms = Some(started_ms);
                self.race_retry_ms = Some(retry_in_ms);
                Ok(())
            }
        }
    }

    /// Watchdog duties before the decision: apply the current timings, disarm it in
    /// pause (L2); returns `watchdog_failed` for the decision (C1.7, P1).
    fn watchdog_before_decision(&mut self, paused: bool) -> bool {
        self.watchdog
            .update(&self.cfg.watchdog, self.dynamic.ttl, self.dynamic.loop_wait);
        if paused {
            self.watchdog.disable();
        }
        !self.watchdog.is_healthy()
    }

    /// The watchdog stays armed only while this node leads with PostgreSQL running and
    /// the cluster not paused (R3, L2; demotion disarms it on its own).
    fn watchdog_after_cycle(&mut self, paused: bool, running: bool) {
        if paused || !running || !self.i_am_leader() {
            self.watchdog.disable();
        }
    }

    async fn start_replica(&mut self, cluster: &Cluster, upstream: Option<&str>) -> Result<()> {
        let up = match upstream {
            Some(name) => Some(self.upstream_of(cluster, name, true)?),
            None => None,
        };
        self.state = "starting".into();
        self.remote = None;
        self.write_standby_config(up.as_ref())?;
        let started = self.pg.start().await;
        self.note_start_result(&started);
        if let Err(e) = started {
            self.state = "start failed".into();
            return Err(e.into());
        }
        self.state = "running".into();
        self.role = "replica".into();
        self.following = upstream.map(str::to_string);
        Ok(())
    }

    /// Remembers whether the postmaster died while starting, for the next decision.
    fn note_start_result(&mut self, r: &std::result::Result<(), warden_pg::PgError>) {
        self.memory.start_failed = matches!(r, Err(warden_pg::PgError::StartFailed(_)));
    }

    /// B4 done (Patroni's end of `post_bootstrap`): arm the watchdog, publish
    /// `initialize` = sysid and `config`, take the leader key.
    async fn finish_bootstrap(&mut self) -> Result<()> {
        let Some(b) = self.cfg.bootstrap.clone() else {
            return Err(anyhow!("no bootstrap section"));
        };
        if let Err(e) = self.watchdog.activate() {
            error!("Cancelling bootstrap because watchdog activation failed: {e:#}");
            return Err(self.cancel_bootstrap("watchdog activation failed").await);
        }
        let r: Result<()> = async {
            let sysid = match self.pg.data_dir_state() {
                DataDirState::Initialized { sysid } => sysid,
                other => bail!("after the bootstrap the data dir is {other:?}"),
            };
            if b.custom.is_some() {
                // The recovery ended in a promotion: nobody may rewind from us before
                // pg_control names the new timeline.
                self.start_checkpoint_after_promote();
            }
            self.dcs.set_initialize(&sysid).await?;
            self.dcs.set_config(&b.dcs.to_string(), None).await?;
            let t0 = monotonic_ms();
            self.dcs.take_leader(&self.cfg.name).await?;
            self.set_leader_until(Some(t0 + self.dynamic.ttl * 1000));
            self.sysid = Some(sysid);
            Ok(())
        }
        .await;
        if let Err(e) = r {
            error!("could not publish the new cluster: {e:#}");
            return Err(self.cancel_bootstrap("publishing the cluster failed").await);
        }
        self.memory.bootstrap = None;
        // The leader key is visible now: the REST API must say "running primary" at
        // once, not only at the end of the cycle (a client that saw the key asks).
        self.state = "running".into();
        self.role = "primary".into();
        if let Ok(st) = self.pg.query_status().await {
            self.last_pg = Some(st);
        }
        self.publish();
        Ok(())
    }

    /// B4 failed (Patroni's `cancel_initialization`): give the initialize key back so
    /// another node can try, stop what was started, move the data directory aside (kept
    /// for inspection) and exit: the half-initialised directory must never be started
    /// again. Returns the error that ends the agent.
    async fn cancel_bootstrap(&mut self, why: &str) -> anyhow::Error {
        self.cancel_background().await;
        self.watchdog.disable();
        let custom = self.custom_bootstrap.take().is_some()
            || self
                .cfg
                .bootstrap
                .as_ref()
                .is_some_and(|b| b.custom.is_some());
        self.state = if custom {
            "custom bootstrap failed"
        } else {
            "initdb failed"
        }
        .into();
        self.publish();
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
        let dir = self.pg.settings().data_dir.clone();
        if dir.exists() {
            let mut aside = dir.as_os_str().to_owned();
            aside.push(
                chrono::Local::now()
                    .format("_%Y-%m-%d-%H-%M-%S")
                    .to_string(),
            );
            let aside = std::path::PathBuf::from(aside);
            match std::fs::rename(&dir, &aside) {
                Ok(()) => info!("renamed data directory to {}", aside.display()),
                Err(re) => error!(
                    "could not rename data directory {} to {}: {re}",
                    dir.display(),
                    aside.display()
                ),
            }
        }
        self.memory.bootstrap = None;
        anyhow::Error::new(BootstrapFailed(why.to_string()))
    }

    /// Leader duties after a successful lock update: `status` and `history` (the slots
    /// themselves are kept by [`Self::sync_replication_slots`] after the actions).
    async fn leader_housekeeping(&mut self, cluster: &Cluster, local: &LocalPg) -> Result<()> {
        if self.pg_unanswered_since_ms.is_some() {
            // PostgreSQL did not answer this cycle: each question would only wait for
            // its timeout and delay the next decision about it.
            return Ok(());
        }
        let st = match self.cycle_status.clone() {
            Some(st) => Some(st),
            None => self.pg.query_status().await.ok(),
        };
        let wal = st
            .as_ref()
            .map(|s| s.wal_position)
            .unwrap_or(local.wal_position);
        let status = self.leader_status(cluster, wal, st.as_ref());
        self.dcs.set_status(&status.to_json()).await?;
        if self.role == standby::STANDBY_LEADER {
            // The history of a standby cluster is the remote site's; Patroni writes the
            // key only as a primary.
            return Ok(());
        }
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

    /// `scheduled_restart` as published: schedule, filters and postmaster start time.
    fn scheduled_restart_json(&self) -> Option<Value> {
        let sr = self.scheduled_restart.as_ref()?;
        let mut m = Map::new();
        if let Some(at) = &sr.req.schedule {
            m.insert("schedule".into(), Value::String(at.clone()));
        }
        if let Some(pst) = &sr.postmaster_start_time {
            m.insert("postmaster_start_time".into(), Value::String(pst.clone()));
        }
        if let Some(r) = &sr.req.role {
            m.insert("role".into(), Value::String(r.clone()));
        }
        if let Some(v) = &sr.req.postgres_version {
            m.insert("postgres_version".into(), Value::String(v.clone()));
        }
        if let Some(t) = sr.req.timeout {
            m.insert("timeout".into(), Value::from(t));
        }
        if let Some(p) = sr.req.restart_pending {
            m.insert("restart_pending".into(), Value::Bool(p));
        }
        Some(Value::Object(m))
    }

    /// Tags as published: the configured ones, plus `nosync` while leaving the
    /// synchronous set before a stop (Y11).
    fn member_tags(&self) -> serde_json::Map<String, Value> {
        let mut tags = self.cfg.tags.to_member_tags();
        if self.leaving_sync {
            tags.insert("nosync".into(), Value::Bool(true));
            tags.insert("sync_priority".into(), Value::from(0));
        }
        tags
    }

    /// Y11: a synchronous standby about to stop or restart PostgreSQL publishes `nosync`
    /// and waits (up to 2 × loop_wait) until the leader no longer names it in the `sync`
    /// key, so that commits do not stall while it is away. A DCS error ends the wait.
    async fn leave_sync_set(&mut self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let can_rewind = settings::use_pg_rewind(&self.cfg, &self.dynamic);
        let sync = settings::ha_settings(&self.cfg, &self.dynamic, can_rewind).sync;
        if !warden_core::sync::must_leave_before_stop(
            self.me(),
            &cluster,
            &sync,
            self.cfg.tags.nosync,
        ) {
            return;
        }
        info!("leaving the synchronous standbys before stopping PostgreSQL");
        self.leaving_sync = true;
        self.touch_member().await;
        let deadline = monotonic_ms() + 2 * self.dynamic.loop_wait * 1000;
        while monotonic_ms() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let named = match tokio::time::timeout(self.retry_timeout(), self.dcs.get_cluster())
                .await
            {
                Ok(Ok(c)) => warden_core::sync::must_leave_before_stop(self.me(), &c, &sync, false),
                _ => false,
            };
            if !named {
                info!("no longer a synchronous standby");
                return;
            }
        }
        warn!(
            "still named a synchronous standby after {} s; stopping anyway",
            2 * self.dynamic.loop_wait
        );
    }

    /// The member key content.
    fn member_data(&self) -> MemberData {
        let mut d = MemberData {
            conn_url: Some(conn_url(&self.cfg)),
            api_url: Some(api_url(&self.cfg)),
            state: Some(self.current_state()),
            role: Some(self.role.clone()),
            version: Some(warden_core::PATRONI_COMPAT_VERSION.into()),
            tags: self.member_tags(),
            pause: self.dynamic.pause,
            ..MemberData::default()
        };
        if !self.pending_restart_reason.is_empty() {
            d.pending_restart = true;
            d.extra.insert(
                "pending_restart_reason".into(),
                Value::Object(self.pending_restart_reason.clone()),
            );
        }
        if let Some(sr) = self.scheduled_restart_json() {
            d.extra.insert("scheduled_restart".into(), sr);
        }
        if self
            .checkpoint_after_promote
            .as_ref()
            .is_some_and(|done| !done.load(std::sync::atomic::Ordering::SeqCst))
        {
            d.extra
                .insert("checkpoint_after_promote".into(), Value::Bool(false));
        }
        if let Some(st) = &self.last_pg {
            d.role = Some(self.running_role(st.in_recovery).into());
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

    /// Runs CHECKPOINT in the background after a promotion (retrying a few times), so
    /// that pg_control names the new timeline before anyone rewinds from us; the member
    /// key shows `checkpoint_after_promote: false` meanwhile (postgres-management.md §4).
    fn start_checkpoint_after_promote(&mut self) {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.checkpoint_after_promote = Some(done.clone());
        let pg = self.pg.clone();
        tokio::spawn(async move {
            for attempt in 1..=5u64 {
                match pg.checkpoint().await {
                    Ok(()) => {
                        info!("CHECKPOINT after promote done");
                        break;
                    }
                    Err(e) => {
                        warn!("CHECKPOINT after promote failed (attempt {attempt}): {e}");
                        tokio::time::sleep(Duration::from_secs(attempt)).await;
                    }
                }
            }
            // After the attempts, rewinding replicas check (and request) the checkpoint
            // themselves: never block them forever on this flag.
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
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
            state: self.current_state(),
            role: st
                .map(|s| self.running_role(s.in_recovery).to_string())
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
            tags: self.member_tags(),
            sysid: self.sysid.clone(),
            pending_restart: !self.pending_restart_reason.is_empty(),
            pending_restart_reason: self.pending_restart_reason.clone(),
            scheduled_restart: self.scheduled_restart_json(),
            loop_wait: self.dynamic.loop_wait,
            last_cycle_ms: self.last_cycle_ms,
            dcs_round_trip_ms: self.dcs_round_trip_ms,
            cycles: self.cycles,
            last_cycle_epoch_ms: self.last_cycle_epoch_ms,
            latest_end_lsn: None,
            failsafe_active: self
                .failsafe_active_until_ms
                .is_some_and(|t| monotonic_ms() < t)
                || self.memory.failsafe_leader.is_some(),
            watchdog_failed: !self.watchdog.is_healthy(),
            watchdog_active: self.watchdog.is_running(),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            ttl: self.dynamic.ttl,
            next_cycle_due_ms: self.next_cycle_due_ms,
            last_decision: self.last_decision.clone(),
            version: warden_core::PATRONI_COMPAT_VERSION.into(),
        });
    }

    /// Graceful shutdown (ha-loop.md §13): stop PostgreSQL fast, then hand the lock over
    /// at once instead of letting it expire.
    pub async fn shutdown(&mut self) {
        self.cancel_background().await;
        self.resume_pgbouncers().await;
        if self.dynamic.pause {
            info!("Leaving PostgreSQL running and the leader lock in place: the cluster is paused");
            self.fence.set_leader_until(0);
            self.watchdog.disable();
            return;
        }
        let was_leader = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.leader_name() == Some(self.me()))
            || self.i_am_leader();
        if !was_leader && self.pg.is_running() {
            self.leave_sync_set().await;
        }
        self.fence.set_primary_running(false);
        self.fence.set_leader_until(0);
        if self.pg.is_running() {
            self.state = "stopping".into();
            self.publish();
            let timeout = self.pg.settings().pg_ctl_timeout;
            if let Err(e) = self.pg.stop(StopMode::Fast, timeout).await {
                let wd = if self.watchdog.is_running() {
                    " Leaving watchdog running."
                } else {
                    ""
                };
                error!("could not stop PostgreSQL: {e}; keeping the leader lock.{wd}");
                return;
            }
            let role = self.role.clone();
            self.callbacks.fire("on_stop", &role);
        }
        self.watchdog.disable();
        self.state = "stopped".into();
        self.last_pg = None;
        if was_leader {
            if let Ok(cd) = self.pg.controldata().await {
                if let Some(lsn) = cd.checkpoint_lsn() {
                    let s = self.status_with_optime(lsn);
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

/// Compares a configured GUC value with what `pg_settings.setting` shows (booleans as
/// on/off, numbers numerically, `hot_standby` wal_level as `replica`).
fn same_guc_value(want: &str, setting: &str) -> bool {
    let norm = |v: &str| -> String {
        let v = v.trim().trim_matches('\'').to_ascii_lowercase();
        match v.as_str() {
            "on" | "true" | "yes" | "1" => "on".into(),
            "off" | "false" | "no" | "0" => "off".into(),
            "hot_standby" => "replica".into(),
            _ => v,
        }
    };
    let (w, s) = (norm(want), norm(setting));
    match (w.parse::<i64>(), s.parse::<i64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => w == s,
    }
}

/// M1: do the restart filters allow a restart of this node?
pub fn restart_conditions_met(
    req: &RestartRequest,
    my_role: &str,
    server_version: Option<u32>,
    pending: bool,
) -> bool {
    if let Some(role) = &req.role {
        let want = if role == "master" {
            "primary"
        } else {
            role.as_str()
        };
        if want != my_role {
            return false;
        }
    }
    if let Some(v) = &req.postgres_version {
        // Restart only if running an older version than the one given.
        let parts: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
        let wanted = match parts.as_slice() {
            [major, minor] if *major >= 10 => major * 10000 + minor,
            [major, minor, patch] if *major < 10 => major * 10000 + minor * 100 + patch,
            [major, minor, patch] => major * 10000 + minor.max(patch),
            _ => return false,
        };
        if server_version.is_none_or(|sv| sv >= wanted) {
            return false;
        }
    }
    if req.restart_pending == Some(true) && !pending {
        return false;
    }
    true
}

/// What [`Node::check_pending_restart`] last saw PostgreSQL run with: its configuration
/// load time and postmaster start time.
type PendingKey = Option<(Option<String>, String)>;

/// The longest [`Node::check_pending_restart`] trusts its last answer while PostgreSQL
/// neither reloaded nor restarted.
const PENDING_RESTART_RECHECK_MS: u64 = 60_000;

/// Actions after which the status read at the start of the cycle still describes
/// PostgreSQL: they only talk to the DCS, the watchdog or other members. Any other
/// action (start, stop, promote, rewind, config, a wait) makes the next question ask
/// PostgreSQL again.
fn leaves_postgres_alone(action: &Action) -> bool {
    matches!(
        action,
        Action::LeaderHousekeeping
            | Action::WriteSync { .. }
            | Action::DeleteSync { .. }
            | Action::RecheckSoon
            | Action::Warn { .. }
            | Action::WriteFailsafe { .. }
            | Action::ActivateWatchdog
            | Action::PostponeRace { .. }
            | Action::ClearFailover { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_actions_that_leave_postgres_alone_keep_the_cycle_status() {
        assert!(leaves_postgres_alone(&Action::LeaderHousekeeping));
        assert!(leaves_postgres_alone(&Action::RecheckSoon));
        for a in [
            Action::Promote,
            Action::StartPrimary,
            Action::KillPostgres,
            Action::ReleaseLeader,
            Action::RemoveDataDir,
        ] {
            assert!(!leaves_postgres_alone(&a), "{a:?}");
        }
    }

    #[test]
    fn restart_filters() {
        let r = |role: Option<&str>, ver: Option<&str>, pending: Option<bool>| RestartRequest {
            role: role.map(str::to_string),
            postgres_version: ver.map(str::to_string),
            restart_pending: pending,
            ..RestartRequest::default()
        };
        assert!(restart_conditions_met(
            &r(None, None, None),
            "replica",
            Some(150004),
            false
        ));
        assert!(restart_conditions_met(
            &r(Some("replica"), None, None),
            "replica",
            None,
            false
        ));
        assert!(!restart_conditions_met(
            &r(Some("replica"), None, None),
            "primary",
            None,
            false
        ));
        assert!(restart_conditions_met(
            &r(Some("master"), None, None),
            "primary",
            None,
            false
        ));
        assert!(restart_conditions_met(
            &r(None, Some("15.5"), None),
            "primary",
            Some(150004),
            false
        ));
        assert!(!restart_conditions_met(
            &r(None, Some("15.4"), None),
            "primary",
            Some(150004),
            false
        ));
        assert!(!restart_conditions_met(
            &r(None, None, Some(true)),
            "primary",
            None,
            false
        ));
        assert!(restart_conditions_met(
            &r(None, None, Some(true)),
            "primary",
            None,
            true
        ));
        assert!(same_guc_value("100", "100"));
        assert!(!same_guc_value("101", "100"));
        assert!(same_guc_value("on", "on") && same_guc_value("true", "on"));
        assert!(same_guc_value("hot_standby", "replica"));
    }
}
