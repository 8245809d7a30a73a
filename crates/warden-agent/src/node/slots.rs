//! Replication slots, executor side: reads `pg_replication_slots`, asks the core
//! ([`warden_core::slots`]) what to do and applies it through warden-pg. Runs on every
//! node each cycle (Patroni's `sync_replication_slots`), and builds the `status` key the
//! leader publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use warden_api::monotonic_ms;
use warden_core::cluster::{Cluster, Status};
use warden_core::slots::{
    self as core, LogicalSlotOp, RetainedSlots, SlotPlan, SlotRole, SlotTags, SlotsConfig,
    SlotsInput,
};
use warden_dcs::Dcs;
use warden_pg::{PgStatus, SlotSession, SlotState, StopMode, SLOT_NEEDS_COPY_CODES};

use super::Node;

/// What the slot executor remembers between cycles.
#[derive(Default)]
pub(super) struct SlotKeeper {
    /// Slot settings and the dynamic config they were read from.
    config: SlotsConfig,
    config_source: Option<(Value, bool, u64)>,
    /// Leader: member slots to keep listing in `retain_slots`.
    retained: RetainedSlots,
    /// Cycle of the last `status` built as leader (a gap means a new leadership).
    leader_cycle: Option<u64>,
    /// Last `slots` published, reused when the slot query fails and for optime-only writes.
    published: serde_json::Map<String, Value>,
    /// Last `retain_slots` published.
    retain: Vec<String>,
    /// Logical slots to copy again: their advance failed for lack of WAL.
    recopy: BTreeSet<String>,
    /// The background advance of logical slots (it decodes WAL: may take long); yields
    /// the slots that must be copied again.
    advancing: Option<JoinHandle<BTreeSet<String>>>,
    /// `hot_standby_feedback` is forced on (a logical slot here or downstream).
    pub(super) hot_standby_feedback: bool,
    /// Problems logged while they persist (logged once, not every cycle).
    logged: BTreeSet<String>,
}

impl<D: Dcs> Node<D> {
    /// This node's tags as the slot decisions read them (local configuration).
    fn slot_tags(&self) -> SlotTags {
        SlotTags {
            nofailover: self.cfg.tags.effective_nofailover(),
            nostream: self.cfg.tags.nostream,
            replicatefrom: self.cfg.tags.replicatefrom.clone(),
        }
    }

    /// The slot settings for the current dynamic config (re-read when it changed).
    fn slot_config(&mut self) -> SlotsConfig {
        let source = (
            self.dynamic.raw.clone(),
            self.dynamic.use_slots,
            self.dynamic.member_slots_ttl,
        );
        if self.slots.config_source.as_ref() != Some(&source) {
            let cfg = SlotsConfig::from_dynamic(&source.0, source.1, source.2);
            for p in &cfg.problems {
                error!("{p}");
            }
            self.slots.config = cfg;
            self.slots.config_source = Some(source);
        }
        self.slots.config.clone()
    }

    /// The `status` value the leader writes: its WAL position, the positions of the
    /// slots it keeps and the member slots to retain.
    pub(super) fn leader_status(
        &mut self,
        cluster: &Cluster,
        wal_position: u64,
        pg: Option<&PgStatus>,
    ) -> Status {
        let cfg = self.slot_config();
        let now = monotonic_ms();
        if self
            .slots
            .leader_cycle
            .is_none_or(|c| c.saturating_add(1) < self.cycles)
        {
            // Just became leader: the names in the status key count as seen now.
            self.slots.retained = RetainedSlots::taken_over(&cluster.status.retain_slots, now);
        }
        self.slots.leader_cycle = Some(self.cycles);
        if let Some(st) = pg {
            let existing: Vec<_> = st.slots.iter().map(|s| s.to_core()).collect();
            let published = core::published_slots(
                cluster,
                &cfg,
                &self.cfg.name,
                &self.slot_tags(),
                &existing,
                wal_position,
            );
            let (retain, expired) =
                self.slots
                    .retained
                    .update(cluster, &cfg, &self.cfg.name, &published, now);
            for line in expired {
                info!("{line}");
            }
            self.slots.published = core::slots_json(&published);
            self.slots.retain = retain;
        }
        self.status_with_optime(wal_position)
    }

    /// The slots a primary announces in `POST /failsafe` (name → LSN, as in the
    /// `status` key), from its current slots: replicas keep their copies moving with
    /// them while the DCS is unreachable.
    pub(super) fn failsafe_slots(&mut self) -> Option<serde_json::Map<String, Value>> {
        let cluster = self.cluster.clone()?;
        let st = self.last_pg.clone()?;
        let cfg = self.slot_config();
        let existing: Vec<_> = st.slots.iter().map(|s| s.to_core()).collect();
        let published = core::published_slots(
            &cluster,
            &cfg,
            &self.cfg.name,
            &self.slot_tags(),
            &existing,
            st.wal_position,
        );
        Some(core::slots_json(&published))
    }

    /// A `status` with a new optime and the slot data last published (as Patroni's
    /// `write_status` keeps them when only the optime is given).
    pub(super) fn status_with_optime(&self, optime: u64) -> Status {
        Status {
            optime: Some(optime),
            slots: self.slots.published.clone(),
            retain_slots: self.slots.retain.clone(),
        }
    }

    /// Forces `hot_standby_feedback` on while this node (or a node cascading from it)
    /// keeps permanent logical slots; a change rewrites the configuration next cycle.
    pub(super) fn update_hot_standby_feedback(&mut self, cluster: &Cluster) {
        if cluster.config.is_none() {
            return;
        }
        let cfg = self.slot_config();
        let enforce = core::should_enforce_hot_standby_feedback(
            cluster,
            &cfg,
            &self.cfg.name,
            &self.slot_tags(),
        );
        if enforce != self.slots.hot_standby_feedback {
            self.slots.hot_standby_feedback = enforce;
            self.rebuild_pg_settings();
        }
    }

    /// Patroni's `sync_replication_slots`: make the slots on this node what the cluster
    /// needs. Skipped unless PostgreSQL answers.
    pub(super) async fn sync_replication_slots(&mut self, cluster: &Cluster) {
        // Not while PostgreSQL does not answer: the query would only wait for its timeout.
        if !self.pg.is_running() || self.pg_unanswered_since_ms.is_some() {
            return;
        }
        let status = match self.cycle_status.clone() {
            Some(st) => Ok(st),
            None => self.pg.query_status().await,
        };
        let st = match status {
            Ok(st) => st,
            Err(e) => {
                warn!("replication slots not checked: {e}");
                return;
            }
        };
        self.collect_advance_results().await;
        let cfg = self.slot_config();
        let tags = self.slot_tags();
        // A standby leader keeps slots as a leader does: its replicas stream from it.
        let role = if st.in_recovery && self.role != super::standby::STANDBY_LEADER {
            SlotRole::Replica
        } else {
            SlotRole::Primary
        };
        let existing: Vec<_> = st.slots.iter().map(|s| s.to_core()).collect();
        let plan = core::plan(&SlotsInput {
            me: &self.cfg.name,
            tags: &tags,
            role,
            cluster,
            config: &cfg,
            existing: &existing,
            replay_lsn: st.replay_lsn,
            paused: self.dynamic.pause,
            server_version: st.server_version,
            recopy: &self.slots.recopy,
        });
        self.log_slot_problems(&plan.warnings);
        if !(plan.drop.is_empty()
            && plan.create_physical.is_empty()
            && plan.advance_physical.is_empty()
            && plan.create_logical.is_empty()
            && plan.copy_logical.is_empty())
        {
            // The slots change: the state published at the end of the cycle reads them.
            self.cycle_status = None;
        }
        if let Err(e) = self.apply_physical(&plan).await {
            error!("Exception when changing replication slots: {e}");
        }
        for op in &plan.create_logical {
            self.create_logical_slot(op).await;
        }
        if role == SlotRole::Replica {
            self.start_logical_advance(plan.advance_logical);
            if !plan.copy_logical.is_empty() && cluster.leader_name() != Some(self.me()) {
                self.copy_logical_slots(cluster, &plan.copy_logical).await;
            }
        }
        self.slots.recopy.clear();
    }

    /// Logs each slot problem once while it persists.
    fn log_slot_problems(&mut self, warnings: &[String]) {
        let now: BTreeSet<String> = warnings.iter().cloned().collect();
        for w in now.difference(&self.slots.logged) {
            error!("{w}");
        }
        self.slots.logged = now;
    }

    /// Drops, creates and advances (physical slots) in the configured database.
    async fn apply_physical(&self, plan: &SlotPlan) -> Result<(), warden_pg::PgError> {
        if plan.drop.is_empty()
            && plan.create_physical.is_empty()
            && plan.advance_physical.is_empty()
        {
            return Ok(());
        }
        let s = self.pg.slot_session(None).await?;
        for d in &plan.drop {
            info!("{}", d.message());
            match s.drop_slot(&d.name).await {
                Ok((_, true)) => info!("Dropped replication slot '{}'", d.name),
                Ok((true, false)) => {
                    warn!(
                        "Unable to drop replication slot '{}', slot is active",
                        d.name
                    )
                }
                Ok((false, false)) => error!("Failed to drop replication slot '{}'", d.name),
                Err(e) => error!("Failed to drop replication slot '{}': {e}", d.name),
            }
        }
        for name in &plan.create_physical {
            match s.create_physical_slot(name).await {
                Ok(()) => info!("Created physical replication slot '{name}'"),
                Err(e) => error!("Failed to create physical replication slot '{name}': {e}"),
            }
        }
        for (name, lsn) in &plan.advance_physical {
            if let Err(e) = s.advance_slot(name, *lsn).await {
                error!(
                    "Error while advancing replication slot {name} to position '{}': {e}",
                    warden_pg::format_lsn(*lsn)
                );
            }
        }
        Ok(())
    }

    /// Creates a permanent logical slot on the primary, in its database.
    async fn create_logical_slot(&self, op: &LogicalSlotOp) {
        let r = async {
            let s = self.pg.slot_session(Some(&op.database)).await?;
            // Creation waits for running transactions; do not hang the HA loop on one.
            match tokio::time::timeout(
                Duration::from_secs(self.dynamic.loop_wait.max(1) * 3),
                s.create_logical_slot(&op.name, &op.plugin),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(warden_pg::PgError::Timeout(format!(
                    "creating logical slot {}",
                    op.name
                ))),
            }
        }
        .await;
        match r {
            Ok(()) => info!(
                "Created logical replication slot '{}' plugin='{}' in database '{}'",
                op.name, op.plugin, op.database
            ),
            Err(e) => error!(
                "Failed to create logical replication slot '{}' plugin='{}': {e}",
                op.name, op.plugin
            ),
        }
    }

    /// Takes the slots a finished background advance found without WAL.
    async fn collect_advance_results(&mut self) {
        let finished = self
            .slots
            .advancing
            .as_ref()
            .is_some_and(|h| h.is_finished());
        if !finished {
            return;
        }
        if let Some(h) = self.slots.advancing.take() {
            // The task is done: this does not wait.
            if let Ok(names) = h.await {
                self.slots.recopy.extend(names);
            }
        }
    }

    /// Advances logical slots in the background, one session per database (Patroni's
    /// `SlotsAdvanceThread`); a previous round still running is left to finish.
    fn start_logical_advance(&mut self, ops: Vec<LogicalSlotOp>) {
        if ops.is_empty() || self.slots.advancing.is_some() {
            return;
        }
        let pg = self.pg.clone();
        self.slots.advancing = Some(tokio::spawn(async move {
            let mut by_db: BTreeMap<String, Vec<LogicalSlotOp>> = BTreeMap::new();
            for op in ops {
                by_db.entry(op.database.clone()).or_default().push(op);
            }
            let mut recopy = BTreeSet::new();
            for (db, ops) in by_db {
                let s: SlotSession = match pg.slot_session(Some(&db)).await {
                    Ok(s) => s,
                    Err(e) => {
                        error!("Failed to advance replication slots in database {db}: {e}");
                        continue;
                    }
                };
                for op in ops {
                    if let Err(e) = s.advance_slot(&op.name, op.lsn).await {
                        error!(
                            "Failed to advance logical replication slot '{}': {e}",
                            op.name
                        );
                        if e.sqlstate()
                            .is_some_and(|c| SLOT_NEEDS_COPY_CODES.contains(&c))
                        {
                            recopy.insert(op.name);
                        }
                    }
                }
            }
            recopy
        }));
    }

    /// Copies logical slots from the primary: reads their state files there, stops
    /// PostgreSQL, installs them, starts it again (Patroni's `copy_logical_slots`).
    async fn copy_logical_slots(&mut self, cluster: &Cluster, names: &[String]) {
        let Some(leader) = cluster.leader_name().map(str::to_string) else {
            return;
        };
        let up = match self.upstream_of(cluster, &leader, false) {
            Ok(up) => up,
            Err(e) => {
                error!("Failed to copy logical slots from the {leader}: {e:#}");
                return;
            }
        };
        info!("Copying logical slots {names:?} from the primary");
        let states = match self.pg.read_slot_states(&up, names).await {
            Ok(s) => s,
            Err(e) => {
                error!(
                    "Failed to copy logical slots from the {leader} via postgresql connection: {e}"
                );
                return;
            }
        };
        let cfg = self.slot_config();
        let wanted = core::desired_slots(
            cluster,
            &cfg,
            &self.cfg.name,
            &self.slot_tags(),
            SlotRole::Replica,
        )
        .slots;
        let on_primary: Vec<_> = states.iter().map(|s| s.info.to_core()).collect();
        let (copy, warnings) = core::slots_to_copy(&wanted, &on_primary);
        for w in warnings {
            warn!("{w}");
        }
        let chosen: Vec<SlotState> = states
            .into_iter()
            .filter(|s| copy.contains(&s.info.name))
            .collect();
        if chosen.is_empty() {
            return;
        }
        if let Some(h) = self.slots.advancing.take() {
            // Its sessions would keep PostgreSQL from stopping fast; its work is moot.
            h.abort();
        }
        let timeout = self.pg.settings().pg_ctl_timeout;
        self.state = "stopping".into();
        self.publish();
        if let Err(e) = self.pg.stop(StopMode::Fast, timeout).await {
            error!("Failed to stop PostgreSQL to copy logical slots: {e}");
            self.state = "running".into();
            return;
        }
        self.callbacks.fire("on_stop", "replica");
        if let Err(e) = self.pg.install_slot_states(&chosen) {
            error!("Failed to install logical slots copied from {leader}: {e}");
        }
        self.state = "starting".into();
        self.publish();
        let started = self.pg.start().await;
        self.note_start_result(&started);
        match started {
            Ok(()) => {
                self.state = "running".into();
                // on_start fires again, as after Patroni's restart here.
                self.callback_role = None;
            }
            Err(e) => {
                error!("Failed to start PostgreSQL after copying logical slots: {e}");
                self.state = "start failed".into();
            }
        }
    }
}
