//! The HA decision: one pure function per HA cycle.
//!
//! [`decide`] maps (cluster read from the DCS, local PostgreSQL, settings, node memory,
//! time) to a [`Step`]. Some decisions hinge on the outcome of a single DCS write or
//! probe (did I win the leader race? are other members ahead of me?). Instead of doing
//! that I/O, `decide` returns [`Step::Ask`] with the [`Question`]; the executor answers
//! it, records the answer in [`Answers`] and calls `decide` again (a sans-I/O loop,
//! bounded by the number of questions). The final [`Step::Act`] carries the actions to
//! perform, in order, and a one-line reason that the agent logs — worded as Patroni
//! words it, because operators grep for those sentences.
//!
//! Rule numbers (L9, U2, H3, …) refer to spec/ha-loop.md.

use crate::cluster::Cluster;

/// Settings the decisions read (dynamic config merged with the local file).
#[derive(Clone, Debug, PartialEq)]
pub struct HaSettings {
    /// Leader lock TTL (s).
    pub ttl: u64,
    /// Sleep between cycles (s).
    pub loop_wait: u64,
    /// `retry_timeout` (s): how long one DCS call may take before it counts as failed,
    /// so how much later than `loop_wait` the next decision can come while the DCS
    /// does not answer.
    pub retry_timeout: u64,
    /// `maximum_lag_on_failover` (bytes).
    pub maximum_lag_on_failover: u64,
    /// `check_timeline`.
    pub check_timeline: bool,
    /// Cluster paused (maintenance mode).
    pub paused: bool,
    /// The local config has a `bootstrap` section.
    pub can_bootstrap: bool,
    /// `nofailover` tag (or `failover_priority: 0`).
    pub nofailover: bool,
    /// `failover_priority` tag (default 1).
    pub failover_priority: i64,
    /// `use_pg_rewind` and pg_rewind is usable on this data dir.
    pub can_rewind: bool,
    /// `remove_data_directory_on_diverged_timelines`.
    pub reinit_on_divergence: bool,
    /// `remove_data_directory_on_rewind_failure`: a failed pg_rewind wipes the data
    /// directory so that the node is built again.
    pub remove_data_on_rewind_failure: bool,
    /// `create_replica_methods` with their sections (empty: `[basebackup]`).
    pub replica_methods: Vec<crate::replica::ReplicaMethod>,
    /// Every replica method section of the local configuration (`postgresql.<name>`),
    /// listed or not: another list of names (a standby cluster's
    /// `create_replica_methods`) takes its options from here, as Patroni's
    /// `replica_method_options` does.
    pub replica_method_sections: Vec<crate::replica::ReplicaMethod>,
    /// `replicatefrom` tag.
    pub replicatefrom: Option<String>,
    /// `nostream` tag.
    pub nostream: bool,
    /// `primary_start_timeout` (s; legacy `master_start_timeout`). 0: a crashed primary
    /// holding the lock fails over at once when another member can take over.
    pub primary_start_timeout: u64,
    /// Synchronous replication settings.
    pub sync: crate::sync::SyncSettings,
    /// `primary_race_backoff` (s; 0 = off): how long a replica postpones the leader race
    /// while the old primary still seems to write (U1).
    pub primary_race_backoff: u64,
    /// `watchdog.mode: required` and the watchdog is not usable or could not be
    /// activated: this node must not lead (C1.7, P1; REST `watchdog_failed`).
    pub watchdog_failed: bool,
    /// `failsafe_mode`: a primary that loses the DCS keeps running while every member
    /// of the `failsafe` key acknowledges it.
    pub failsafe_mode: bool,
    /// A valid `standby_cluster` section: this is a standby cluster following that
    /// remote site (synchronous mode is then ignored).
    pub standby_cluster: Option<crate::standby::StandbyCluster>,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings {
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1_048_576,
            check_timeline: false,
            paused: false,
            can_bootstrap: true,
            nofailover: false,
            failover_priority: 1,
            can_rewind: false,
            reinit_on_divergence: false,
            remove_data_on_rewind_failure: false,
            replica_methods: Vec::new(),
            replica_method_sections: Vec::new(),
            replicatefrom: None,
            nostream: false,
            primary_start_timeout: 300,
            sync: crate::sync::SyncSettings::default(),
            primary_race_backoff: 0,
            watchdog_failed: false,
            failsafe_mode: false,
            standby_cluster: None,
        }
    }
}

/// The data directory as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty.
    Empty,
    /// Initialised, with this system identifier.
    Valid {
        /// `Database system identifier` from pg_controldata.
        sysid: String,
    },
    /// Not empty but no usable pg_control.
    Invalid(String),
}

/// Local PostgreSQL as the executor found it this cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPg {
    /// Data directory state.
    pub data_dir: DataDir,
    /// A postmaster for this data dir is alive.
    pub running: bool,
    /// Running and answered `pg_is_in_recovery() = false`.
    pub is_primary: bool,
    /// Current timeline (running), else pg_control's.
    pub timeline: Option<u32>,
    /// Primary: flush LSN; replica: max(receive, replay); stopped: pg_control's.
    pub wal_position: u64,
    /// Stopped data dir was last a primary (pg_control state `in production`,
    /// `shut down`, `in crash recovery`, `shutting down`), i.e. it may hold WAL that a
    /// promoted replica does not have.
    pub was_primary: bool,
    /// The member this replica is configured to stream from (None = no upstream).
    pub following: Option<String>,
    /// Replica's WAL receiver is streaming.
    pub streaming: bool,
    /// Primary: its walsenders (`pg_stat_replication`).
    pub standbys: Vec<crate::sync::StandbyConn>,
    /// `synchronous_standby_names` in effect.
    pub synchronous_standby_names: String,
    /// `synchronous_commit` in effect.
    pub synchronous_commit: String,
    /// How long (ms) the running postmaster has not answered queries (0: it answered
    /// this cycle). The other fields then hold what it last said.
    pub unresponsive_ms: u64,
    /// Standby cluster: the remote source PostgreSQL's recovery configuration follows,
    /// as last written (None: it follows a member, nothing, or the agent does not know).
    pub remote: Option<crate::standby::RemoteSource>,
    /// The node runs as the standby leader (role `standby_leader`).
    pub standby_leader: bool,
}

impl Default for LocalPg {
    fn default() -> Self {
        LocalPg {
            data_dir: DataDir::Empty,
            running: false,
            is_primary: false,
            timeline: None,
            wal_position: 0,
            was_primary: false,
            following: None,
            streaming: false,
            standbys: Vec::new(),
            synchronous_standby_names: String::new(),
            synchronous_commit: String::new(),
            unresponsive_ms: 0,
            remote: None,
            standby_leader: false,
        }
    }
}

/// What the agent remembers across cycles (owned by the executor, read here).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMemory {
    /// No cycle has completed yet since the agent started.
    pub first_cycle: bool,
    /// I believe I hold the leader lock until this monotonic time (ms).
    pub leader_until_ms: Option<u64>,
    /// PostgreSQL was running at the end of the previous cycle (so a stop now is a crash).
    pub was_running: bool,
    /// My last attempt to start PostgreSQL failed (the postmaster exited): a lock holder
    /// gives the lock up instead of trying again for ever (Patroni's `post_recover`).
    pub start_failed: bool,
    /// `synchronous_standby_names` currently holds a value this agent set.
    pub standby_names_are_mine: bool,
    /// My WAL position when I last changed `synchronous_standby_names` (a standby counts
    /// as synchronous only once it has confirmed WAL past it).
    pub standby_names_changed_at_lsn: Option<u64>,
    /// Monotonic time (ms) the `primary_race_backoff` timer started (U1); cleared by the
    /// executor whenever the cluster has a leader.
    pub race_backoff_started_ms: Option<u64>,
    /// My WAL position at the end of the previous cycle (None: PostgreSQL was not
    /// running), to tell whether the old primary still sends WAL (U1).
    pub prev_wal_position: Option<u64>,
    /// The `failsafe` key (member name → REST `api_url`) as last read from the DCS, kept
    /// while the DCS is unreachable.
    pub failsafe_topology: Option<std::collections::BTreeMap<String, String>>,
    /// A primary that announced itself over `POST /failsafe` within the last ttl (a
    /// replica treats it as the leader while the leader key is missing).
    pub failsafe_leader: Option<String>,
    /// When I killed my frozen primary and gave the lock up (F1): for a ttl I leave the
    /// race to the others.
    pub primary_given_up_at_ms: Option<u64>,
    /// A long action runs in the background (creating a replica, bootstrapping, running
    /// post_bootstrap), named as Patroni names it (e.g. `bootstrap from leader 'pg1'`):
    /// the loop keeps my member key (and a lock I hold) fresh meanwhile.
    pub task: Option<String>,
    /// I won the bootstrap race and the new cluster is not published yet (B4).
    pub bootstrap: Option<Bootstrapping>,
    /// pg_rewind failed for good (Patroni's rewind state FAILED): it is not tried
    /// again; the data directory is removed when allowed.
    pub rewind_failed: bool,
    /// Consecutive pg_rewind failures against a leader that still answered afterwards.
    /// A failure right after a failover can be transient (the leader's promotion or a
    /// concurrent change of leader), so the rewind counts as failed for good only after
    /// [`REWIND_ATTEMPTS`] of them (Patroni gives up after the first).
    pub rewind_failures: u32,
}

/// How many consecutive pg_rewind failures against a healthy leader make the rewind
/// failed for good (see [`NodeMemory::rewind_failures`]).
pub const REWIND_ATTEMPTS: u32 = 3;

/// Progress of a bootstrap this node runs (B4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bootstrapping {
    /// The background bootstrap (initdb or the custom method, then the first start)
    /// failed.
    pub failed: bool,
    /// Outcome of post_bootstrap (roles, the `post_bootstrap` script): `None` until it
    /// has run.
    pub post_bootstrap: Option<bool>,
}

/// What the executor found when probing another member's REST API (`GET /patroni`).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    /// Member name.
    pub name: String,
    /// Answered with a valid status containing `xlog`.
    pub reachable: bool,
    /// It reports being a running primary.
    pub is_primary: bool,
    /// Its WAL position (max(received, replayed) for a replica; 0 for a primary).
    pub wal_position: u64,
    /// Its own `nofailover` tag as it reports it.
    pub nofailover: bool,
    /// Its `failover_priority` tag.
    pub failover_priority: i64,
    /// Reports `watchdog_failed`.
    pub watchdog_failed: bool,
}

/// Outcome of a divergence check against the leader (postgres-management.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// My WAL history is a prefix of the leader's: I can just follow it.
    NotDiverged,
    /// My WAL went past the point where the leader's timeline forked: rewind or re-clone.
    Diverged,
    /// Could not tell (leader unreachable, …).
    Unknown,
}

/// Where my WAL ends, as the executor read it (running status or pg_control).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalWalEnd {
    /// My timeline.
    pub timeline: u32,
    /// A replica (running, or shut down in recovery): its replayed position. A stopped
    /// former primary: its last checkpoint's location.
    pub lsn: u64,
    /// The position is a replica's replay position (PostgreSQL was in recovery).
    pub in_recovery: bool,
    /// A former primary that was shut down cleanly (its last record is the shutdown
    /// checkpoint at `lsn`); false after a crash, when the end of its WAL is unknown.
    pub clean_shutdown: bool,
}

/// Judges divergence from the leader's timeline history (postgres-management.md §6,
/// Patroni's `_check_timeline_and_lsn`). `history` is the leader's `<tl>.history` as
/// (parent timeline, switch point) pairs, or `None` when my timeline equals or exceeds
/// the leader's and no history is needed.
///
/// A replica has not diverged while its replay position is not past the switch point. A
/// cleanly shut-down former primary has not diverged when its shutdown checkpoint starts
/// before the switch point: nothing follows a shutdown checkpoint, and after a clean
/// switchover the new timeline forks exactly at that record's end. After a crash the end
/// of the WAL is unknown, so only a rewind (or re-clone) is safe.
pub fn judge_divergence(
    me: LocalWalEnd,
    leader_timeline: u32,
    history: Option<&[(u32, u64)]>,
) -> Divergence {
    if me.timeline == leader_timeline {
        return Divergence::NotDiverged;
    }
    if me.timeline > leader_timeline {
        return Divergence::Diverged;
    }
    let Some(history) = history else {
        return Divergence::Unknown;
    };
    for &(parent, switch) in history {
        if parent > me.timeline {
            return Divergence::Diverged;
        }
        if parent == me.timeline {
            let fits = if me.in_recovery {
                me.lsn <= switch
            } else {
                me.clean_shutdown && me.lsn < switch
            };
            return if fits {
                Divergence::NotDiverged
            } else {
                Divergence::Diverged
            };
        }
    }
    Divergence::Diverged
}

/// Outcome of a leader lock update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockUpdate {
    /// Renewed.
    Renewed,
    /// The compare failed: someone else owns the key.
    Lost,
    /// The DCS did not answer within retry_timeout.
    DcsError,
}

/// A question the decision needs answered by I/O before it can finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// Create-only write of `initialize` (bootstrap race). Answer: won?
    RaceInitialize,
    /// Create-only write of `leader` with my lease. Answer: won?
    AcquireLeader,
    /// Renew my leader lock. Answer: [`LockUpdate`].
    UpdateLeader,
    /// `GET /patroni` of these members (2 s timeout, in parallel).
    ProbeMembers(Vec<String>),
    /// Compare my timeline/WAL with the leader's history.
    CheckDivergence {
        /// The leader to compare against.
        leader: String,
    },
    /// `POST /failsafe` to every other member of the failsafe topology (name, api_url),
    /// in parallel. Answer: did every one accept?
    FailsafeAcks(Vec<(String, String)>),
}

/// Answers gathered so far in this cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    /// [`Question::RaceInitialize`]
    pub initialize_race: Option<bool>,
    /// [`Question::AcquireLeader`]
    pub acquire: Option<bool>,
    /// [`Question::UpdateLeader`]
    pub update: Option<LockUpdate>,
    /// [`Question::ProbeMembers`]
    pub probes: Option<Vec<PeerStatus>>,
    /// [`Question::CheckDivergence`]
    pub divergence: Option<Divergence>,
    /// [`Question::FailsafeAcks`]
    pub failsafe_acks: Option<bool>,
}

impl Answers {
    /// Has `q` been answered already in this cycle?
    pub fn is_answered(&self, q: &Question) -> bool {
        match q {
            Question::RaceInitialize => self.initialize_race.is_some(),
            Question::AcquireLeader => self.acquire.is_some(),
            Question::UpdateLeader => self.update.is_some(),
            Question::ProbeMembers(_) => self.probes.is_some(),
            Question::CheckDivergence { .. } => self.divergence.is_some(),
            Question::FailsafeAcks(_) => self.failsafe_acks.is_some(),
        }
    }
}

/// How to stop PostgreSQL when giving up the primary role (ha-loop.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoteMode {
    /// DCS unreachable: fast stop, restart read-only with no upstream; lock untouched.
    Offline,
    /// Not suitable as primary: immediate stop, release the lock.
    Immediate,
    /// Lost the lock: immediate stop, nothing to release.
    ImmediateNoLock,
    /// Switchover / manual failover: CHECKPOINT, fast stop (walsenders ship the shutdown
    /// checkpoint to the replicas), release the lock, restart read-only.
    Graceful,
}

/// One effect for the executor. Actions run in order; a failed action stops the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `initialize` = sysid (adopting an existing primary, or after bootstrap).
    WriteInitialize {
        /// system identifier
        sysid: String,
    },
    /// B1 won: in the background, initdb or the custom bootstrap method
    /// (`bootstrap.method`), configure and start PostgreSQL. The next cycles go through
    /// [`Action::PostBootstrap`] and [`Action::FinishBootstrap`] (B4).
    Bootstrap,
    /// B4: in the background, create the roles of the configuration and run the
    /// `post_bootstrap` script (after a custom bootstrap also restore pg_hba.conf).
    PostBootstrap,
    /// B4 done: arm the watchdog, publish `initialize` = sysid and `config`, take the
    /// leader key ("initialized a new cluster").
    FinishBootstrap,
    /// B4 failed: delete `initialize`, stop PostgreSQL, move the data directory aside
    /// and exit (Patroni's `cancel_initialization`).
    CancelBootstrap,
    /// In the background, build the data directory with the replica creation methods
    /// (B2, B3, a re-clone), then start as a replica of `follow`.
    CloneFrom {
        /// member to copy from (`None`: only methods that need no replication
        /// connection run)
        source: Option<String>,
        /// whom to stream from afterwards (`None`: no upstream)
        follow: Option<String>,
        /// methods to try, in order ([`crate::replica::methods_to_try`])
        methods: Vec<String>,
        /// Patroni's words for it: `from leader 'pg1'`, `(without leader)`
        what: String,
    },
    /// Start PostgreSQL as a primary after a crash while holding the lock (R2).
    StartPrimary,
    /// Write recovery config and start PostgreSQL as a standby of `upstream` (None =
    /// read-only with no upstream).
    StartReplica {
        /// member to stream from
        upstream: Option<String>,
    },
    /// Running replica: point `primary_conninfo` at `upstream` (reload, or restart if needed).
    Follow {
        /// member to stream from
        upstream: String,
    },
    /// `pg_ctl promote` (P5).
    Promote,
    /// Stop PostgreSQL to give up the primary role.
    Demote {
        /// stop mode and lock handling
        mode: DemoteMode,
    },
    /// Stop PostgreSQL (clean) and pg_rewind from `source`.
    Rewind {
        /// the leader to rewind from
        source: String,
    },
    /// Stop PostgreSQL, wipe the data directory (a re-clone follows next cycle).
    RemoveDataDir,
    /// Delete the leader key (compare on my name).
    ReleaseLeader,
    /// SIGKILL the postmaster and all its processes (a frozen PostgreSQL: it must never
    /// resume and acknowledge a write).
    KillPostgres,
    /// PostgreSQL failed to start while I hold the lock: report the role `demoted`
    /// (on_role_change) and delete the leader key.
    AbandonLeader,
    /// Write the `sync` key (compare-and-set); a failed compare stops the actions after
    /// it ("Synchronous replication key updated by someone else").
    WriteSync {
        /// the value and the version it replaces
        write: crate::sync::SyncKeyWrite,
        /// logged once written
        message: String,
    },
    /// Delete the `sync` key (compare-and-set on this version).
    DeleteSync {
        /// mod_revision read this cycle
        version: i64,
    },
    /// Set `synchronous_standby_names` (rewrite postgresql.conf, reload) and remember
    /// the WAL position; `None` gives the parameter back to the configuration.
    SetStandbyNames {
        /// the new value
        value: Option<String>,
        /// logged
        message: String,
    },
    /// Run the next cycle within a second instead of after `loop_wait` (standbys just
    /// added to `synchronous_standby_names` have to confirm before the key names them).
    RecheckSoon,
    /// Log a warning (a condition the operator must see, not an effect).
    Warn {
        /// the text
        message: String,
    },
    /// Write the `failsafe` key (the leader, while failsafe mode is on): compact JSON of
    /// member name → REST `api_url`, as Patroni writes it.
    WriteFailsafe {
        /// the value
        value: String,
    },
    /// Failsafe: every member acknowledged me while the DCS is unreachable; keep the
    /// primary running and feed the fence deadline from the moment the acknowledgements
    /// were asked for (not from a lock renewal).
    FailsafeContinue,
    /// Leader housekeeping: publish `status`, keep member slots, update `history`.
    LeaderHousekeeping,
    /// Open and arm the watchdog if it is not running (P1). Fails only when
    /// `watchdog.mode: required` and no safe watchdog could be activated; that stops the
    /// actions after it (no promotion), and the next cycle gives the lock up.
    ActivateWatchdog,
    /// Postpone the leader race (U1): remember when the backoff started and look again
    /// within `retry_in_ms`.
    PostponeRace {
        /// monotonic ms the backoff timer started
        started_ms: u64,
        /// the backoff ends in this many ms
        retry_in_ms: u64,
    },
    /// Clear the `failover` key (`{}`, compare-and-set on its version).
    ClearFailover {
        /// mod_revision the request was read with
        version: i64,
    },
    /// Sleep until this wall-clock time (a switchover scheduled within one loop).
    WaitUntil {
        /// ms since the epoch
        epoch_ms: i64,
    },
    /// L4: the lock holder writes its dynamic configuration to the missing (or empty)
    /// `config` key (a node that adopted an existing data directory, a standby leader of
    /// a new scope).
    WriteConfig,
    /// Standby cluster: point PostgreSQL's recovery configuration at the remote site
    /// (reload, restart where the version needs it; start it when stopped) and run as the
    /// standby leader (`standby_leader`: role `standby_leader`, `on_role_change`) or as a
    /// replica following the remote while the standby cluster has no leader.
    FollowRemote {
        /// the remote site
        source: crate::standby::RemoteSource,
        /// run as the standby leader
        standby_leader: bool,
    },
    /// Standby cluster configured on a running primary holding the lock
    /// (`demote-cluster`): fast stop (archiving the WAL file with the shutdown
    /// checkpoint when archiving is on), keep the lock with the shutdown checkpoint as
    /// `optime`, start as the standby leader following `source`.
    DemoteToStandby {
        /// the remote site
        source: crate::standby::RemoteSource,
    },
    /// B1 won in a standby cluster: build the data directory from the remote site, start
    /// following it, then publish `initialize`, `config` and take the leader key as the
    /// standby leader. Failure cancels the initialisation (as [`Action::Bootstrap`]).
    BootstrapStandbyLeader {
        /// the remote site
        source: crate::standby::RemoteSource,
        /// `standby_cluster.create_replica_methods` (empty: the member's own)
        create_replica_methods: Vec<String>,
    },
    /// Fatal: stop the agent with this message and exit code (PostgreSQL left as is).
    Exit {
        /// message logged at CRITICAL
        message: String,
    },
}

/// A finished decision: what to do and why, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Actions in execution order.
    pub actions: Vec<Action>,
    /// One-line human reason, logged once per cycle.
    pub reason: String,
}

/// The result of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer this and call [`decide`] again.
    Ask(Question),
    /// Perform these actions.
    Act(Decision),
}

/// Everything a decision depends on.
#[derive(Clone, Debug)]
pub struct HaInput<'a> {
    /// My member name.
    pub me: &'a str,
    /// The cluster read from the DCS this cycle; `None` = the DCS was unreachable.
    pub cluster: Option<&'a Cluster>,
    /// Local PostgreSQL.
    pub pg: &'a LocalPg,
    /// Settings.
    pub settings: &'a HaSettings,
    /// Memory from earlier cycles.
    pub memory: &'a NodeMemory,
    /// Answers to questions asked earlier in this cycle.
    pub answers: &'a Answers,
    /// Monotonic now (ms).
    pub now_ms: u64,
    /// Wall-clock now (ms since the epoch), for scheduled switchovers.
    pub now_epoch_ms: i64,
}

fn act(actions: Vec<Action>, reason: impl Into<String>) -> Step {
    Step::Act(Decision {
        actions,
        reason: reason.into(),
    })
}

/// The HA decision for one cycle. Pure: same input, same output.
pub fn decide(input: &HaInput<'_>) -> Step {
    let step = decide_inner(input);
    match step {
        Step::Act(mut d) if input.settings.paused => {
            d.reason = format!("PAUSE: {}", d.reason);
            Step::Act(d)
        }
        s => s,
    }
}

fn decide_inner(i: &HaInput<'_>) -> Step {
    // Synchronous replication is ignored in a standby cluster (Patroni's
    // `is_synchronous_mode`): nothing there commits, and its members must race as equals.
    if i.settings.standby_cluster.is_some() && i.settings.sync.mode != crate::sync::SyncMode::Off {
        let settings = HaSettings {
            sync: crate::sync::SyncSettings {
                mode: crate::sync::SyncMode::Off,
                ..i.settings.sync.clone()
            },
            ..i.settings.clone()
        };
        return decide_inner(&HaInput {
            settings: &settings,
            ..i.clone()
        });
    }
    let Some(cluster) = i.cluster else {
        return dcs_unreachable(i);
    };
    let me = i.me;
    let i_hold_lock = cluster.leader_name() == Some(me);

    // A long action runs in the background: nothing else is decided until it ends.
    if let Some(task) = i.memory.task.as_deref() {
        return long_action_in_progress(i, task, i_hold_lock);
    }
    // B4: the cluster this node bootstraps is not published yet.
    if let Some(b) = i.memory.bootstrap {
        return post_bootstrap(i, b);
    }

    // L9: the data directory.
    let sysid = match &i.pg.data_dir {
        DataDir::Empty => return empty_data_dir(i, cluster, i_hold_lock),
        DataDir::Invalid(why) => {
            return act(
                vec![],
                format!("data dir for the cluster is not empty, but system ID is invalid; consider doing reinitialize ({why})"),
            )
        }
        DataDir::Valid { sysid } => sysid,
    };
    let mut pre = Vec::new();
    match cluster.initialized_sysid() {
        Some(theirs) if theirs != sysid => {
            if i.settings.paused {
                // Paused: only warn; a lock holder steps aside.
                let mut a = vec![];
                if i_hold_lock {
                    a.push(Action::ReleaseLeader);
                }
                return act(a, format!("system ID mismatch, node {me} belongs to a different cluster: {theirs} != {sysid}"));
            }
            return act(
                vec![Action::Exit {
                    message: format!(
                        "system ID mismatch, node {me} belongs to a different cluster: {theirs} != {sysid}"
                    ),
                }],
                "system ID mismatch",
            );
        }
        Some(_) => {}
        None => {
            if cluster.is_unlocked() && !i.settings.paused && i.memory.first_cycle {
                if i.pg.running && !i.pg.is_primary {
                    return act(
                        vec![Action::Exit {
                            message: "No initialize key in DCS and PostgreSQL is running as replica, aborting start".into(),
                        }],
                        "No initialize key in DCS and PostgreSQL is running as replica, aborting start",
                    );
                }
                pre.push(Action::WriteInitialize {
                    sysid: sysid.clone(),
                });
            } else if i_hold_lock {
                // L4: the lock holder repairs a missing/invalid initialize key.
                pre.push(Action::WriteInitialize {
                    sysid: sysid.clone(),
                });
            }
        }
    }
    // L4: the lock holder publishes its dynamic configuration when the DCS has none.
    if i_hold_lock
        && cluster
            .config
            .as_ref()
            .is_none_or(|c| c.value.as_object().is_none_or(|o| o.is_empty()))
    {
        pre.push(Action::WriteConfig);
    }

    // Failsafe: while the leader key is missing, a primary that pinged me over
    // `POST /failsafe` within the last ttl is the leader (it may be running without the
    // DCS); nobody races against it.
    let with_failsafe_leader;
    let cluster = match i.memory.failsafe_leader.as_deref() {
        Some(l) if i.settings.failsafe_mode && cluster.is_unlocked() && l != me => {
            let mut c = cluster.clone();
            c.leader = Some(crate::cluster::Leader {
                name: l.to_string(),
                version: 0,
                session: 0,
            });
            with_failsafe_leader = c;
            &with_failsafe_leader
        }
        _ => cluster,
    };
    // F1: the primary under my lock stopped answering (frozen, hung storage): kill it for
    // good and give the lock up, so that a replica takes over well within ttl + loop_wait
    // and the old instance can never resume and acknowledge a write after that.
    if i_hold_lock
        && i.pg.running
        && i.pg.is_primary
        && !i.settings.paused
        && i.pg.unresponsive_ms >= frozen_primary_after_ms(i.settings)
    {
        return act(
            vec![Action::KillPostgres, Action::ReleaseLeader],
            format!(
                "PostgreSQL has not answered for {} s: killed it and released the leader lock",
                i.pg.unresponsive_ms / 1000
            ),
        );
    }
    let step = if let Some(sc) = &i.settings.standby_cluster {
        standby::decide(i, cluster, sc, i_hold_lock)
    } else if !i.pg.running {
        pg_not_running(i, cluster, i_hold_lock)
    } else if cluster.is_unlocked() {
        unlocked(i, cluster)
    } else if i_hold_lock {
        locked_by_me(i, cluster)
    } else {
        locked_by_other(i, cluster)
    };
    match step {
        Step::Act(mut d) if !pre.is_empty() => {
            pre.append(&mut d.actions);
            d.actions = pre;
            Step::Act(d)
        }
        s => s,
    }
}

/// How long before the leader lock's expiry the fence guards stop a primary whose lock
/// was not renewed, for a `ttl` of 8 s or more (the most [`fence_margin_ms`] gives).
pub const FENCE_MARGIN_MS: u64 = 2_000;

/// The least fence margin, for the shortest leases (`ttl` 4 s).
///
/// The margin is measured from the moment the agent *sent* its last successful renewal,
/// and etcd can only expire the lease later than that moment + `ttl` (it renews at the
/// moment it processes the keepalive, raises short TTLs to its own minimum, and checks
/// expiries every 500 ms). So the margin only has to cover how late the guards act and
/// how long PostgreSQL takes to stop: the external guard polls every 100 ms and the
/// in-process one every 200 ms, and an immediate shutdown (SIGQUIT) ends every backend
/// within milliseconds. One second leaves more than half of it for scheduling delays on
/// a loaded host.
pub const MIN_FENCE_MARGIN_MS: u64 = 1_000;

/// Time a leader's cycle needs besides its two DCS calls (PostgreSQL queries, the
/// decision, publishing the new deadline to the guards) for the renewal to land before
/// the fence deadline: see [`timing_fits_fence`].
pub const RENEWAL_SLACK_MS: u64 = 1_000;

/// The fence margin for a leader lock of `ttl_s` seconds: a quarter of the ttl, at least
/// [`MIN_FENCE_MARGIN_MS`] and at most [`FENCE_MARGIN_MS`] (2 s from `ttl` 8 s up, as
/// before shorter leases existed).
///
/// A fixed 2 s would eat half of a 4 s lease and leave no room for a renewal cycle
/// (see [`timing_fits_fence`]); scaling below 8 s keeps what the margin must cover
/// (guard poll and PostgreSQL's stop, well under a second) covered at every ttl.
pub fn fence_margin_ms(ttl_s: u64) -> u64 {
    ttl_s
        .saturating_mul(250)
        .clamp(MIN_FENCE_MARGIN_MS, FENCE_MARGIN_MS)
}

/// Warden's own timing rule beside Patroni's `loop_wait + 2*retry_timeout <= ttl`: a
/// leader whose DCS answers (slowly, but within `retry_timeout`) must send its next
/// renewal with [`RENEWAL_SLACK_MS`] to spare before the fence deadline, which is
/// `ttl - fence_margin_ms(ttl)` after the previous renewal was sent. The next cycle
/// starts at most `loop_wait` after that renewal, and its cluster read takes at most
/// `retry_timeout`:
///
/// `loop_wait + retry_timeout + RENEWAL_SLACK_MS <= ttl - fence_margin_ms(ttl)`.
///
/// With `retry_timeout` at Patroni's minimum of 3 s Patroni's rule implies this one; it
/// only binds for shorter leases. `ttl` 4 s, `loop_wait` 1, `retry_timeout` 1 (margin
/// 1 s) is the shortest integer timing that satisfies it.
pub fn timing_fits_fence(ttl_s: u64, loop_wait_s: u64, retry_timeout_s: u64) -> bool {
    let budget = ttl_s
        .saturating_mul(1000)
        .saturating_sub(fence_margin_ms(ttl_s));
    loop_wait_s
        .saturating_add(retry_timeout_s)
        .saturating_mul(1000)
        .saturating_add(RENEWAL_SLACK_MS)
        <= budget
}

/// How long a primary may not answer before it counts as frozen: half the lock's ttl,
/// so that detection (at a cycle boundary), the release and a replica's promotion fit in
/// ttl + loop_wait, while a primary that is only slow for a few queries is left alone.
pub fn frozen_primary_after_ms(s: &HaSettings) -> u64 {
    s.ttl * 1000 / 2
}

/// D1: the DCS is unreachable.
fn dcs_unreachable(i: &HaInput<'_>) -> Step {
    if !i.settings.paused && i.pg.running && i.pg.is_primary && !i.settings.failsafe_mode {
        // D1: the lock stays mine until it could expire, and the fence guard stops this
        // primary fence_margin_ms(ttl) before that. Until then keep taking writes: a DCS blip
        // costs nothing, and a real outage only the margin plus a promotion elsewhere.
        // Demote cleanly when the next decision might come too late: it comes after
        // the sleep (at most loop_wait) and the next cluster read, which against a DCS
        // that does not answer takes the whole retry_timeout (otherwise the fence
        // guard stops PostgreSQL first, with an immediate shutdown).
        if let Some(until) = i.memory.leader_until_ms {
            let next_decision_ms = (i.settings.loop_wait + i.settings.retry_timeout) * 1000;
            if i.now_ms + fence_margin_ms(i.settings.ttl) + next_decision_ms < until {
                return act(
                    vec![],
                    format!(
                        "DCS is not accessible; keeping the primary while the leader lock is still mine ({} s left)",
                        (until - i.now_ms) / 1000
                    ),
                );
            }
        }
    }
    if !i.settings.paused && i.pg.running && i.pg.is_primary {
        // D2: failsafe mode keeps the primary while every member of the failsafe
        // topology acknowledges it (none of them can then be racing for the lock).
        if i.settings.failsafe_mode {
            if let Some(others) = failsafe_peers(i) {
                match i.answers.failsafe_acks {
                    None if !others.is_empty() => {
                        return Step::Ask(Question::FailsafeAcks(others));
                    }
                    // A single-node topology has nobody to ask.
                    None | Some(true) => {
                        return act(
                            vec![Action::FailsafeContinue],
                            "continue to run as a leader because failsafe mode is enabled and all members are accessible",
                        )
                    }
                    Some(false) => {}
                }
            }
        }
        return act(
            vec![Action::Demote {
                mode: DemoteMode::Offline,
            }],
            "demoted self because DCS is not accessible and I was a leader",
        );
    }
    act(vec![], "DCS is not accessible")
}

/// The other members of the failsafe topology as last read, or `None` when I am not in
/// it (or it is unknown): then failsafe cannot keep me as primary.
fn failsafe_peers(i: &HaInput<'_>) -> Option<Vec<(String, String)>> {
    let topology = i.memory.failsafe_topology.as_ref()?;
    if !topology.contains_key(i.me) {
        return None;
    }
    Some(
        topology
            .iter()
            .filter(|(name, _)| name.as_str() != i.me)
            .map(|(name, url)| (name.clone(), url.clone()))
            .collect(),
    )
}

/// The `failsafe` key the leader should write (Patroni's `_failsafe_config`): every
/// member with an `api_url`, and me; `None` when it already says that.
fn failsafe_key_update(i: &HaInput<'_>, cluster: &Cluster) -> Option<Action> {
    if !i.settings.failsafe_mode {
        return None;
    }
    let mut entries: Vec<(String, String)> = cluster
        .members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.data.api_url.clone()?)))
        .collect();
    if !entries.iter().any(|(n, _)| n == i.me) {
        let mine = cluster.member(i.me)?.data.api_url.clone()?;
        entries.push((i.me.to_string(), mine));
    }
    let same = cluster.failsafe.as_ref().is_some_and(|f| {
        f.len() == entries.len()
            && entries
                .iter()
                .all(|(n, u)| f.get(n).and_then(|v| v.as_str()) == Some(u.as_str()))
    });
    if same {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = entries
        .into_iter()
        .map(|(n, u)| (n, serde_json::Value::String(u)))
        .collect();
    Some(Action::WriteFailsafe {
        value: serde_json::Value::Object(map).to_string(),
    })
}

/// While a background action runs (Patroni's `handle_long_action_in_progress`): a lock
/// holder keeps its lock; everyone else just reports the action.
fn long_action_in_progress(i: &HaInput<'_>, task: &str, i_hold_lock: bool) -> Step {
    if i_hold_lock {
        match i.answers.update {
            None => return Step::Ask(Question::UpdateLeader),
            Some(LockUpdate::Renewed) => {
                return act(vec![], format!("updated leader lock during {task}"))
            }
            Some(_) => {}
        }
    }
    act(vec![], format!("{task} in progress"))
}

/// B4 (Patroni's `post_bootstrap`): after the background bootstrap, wait until
/// PostgreSQL is a primary (a custom bootstrap may first replay WAL to its recovery
/// target), run post_bootstrap, then publish the cluster. A failed step, or PostgreSQL
/// not running, cancels the initialisation.
fn post_bootstrap(i: &HaInput<'_>, b: Bootstrapping) -> Step {
    if b.failed || !i.pg.running || b.post_bootstrap == Some(false) {
        return act(
            vec![Action::CancelBootstrap],
            "removing initialize key after failed attempt to bootstrap the cluster",
        );
    }
    match b.post_bootstrap {
        None if !i.pg.is_primary => act(vec![], "waiting for end of recovery after bootstrap"),
        None => act(vec![Action::PostBootstrap], "running post_bootstrap"),
        Some(_) => act(vec![Action::FinishBootstrap], "initialized a new cluster"),
    }
}

/// L9 (empty data dir) and B1–B3.
fn empty_data_dir(i: &HaInput<'_>, cluster: &Cluster, i_hold_lock: bool) -> Step {
    if i_hold_lock {
        return act(
            vec![Action::ReleaseLeader],
            "released leader key voluntarily as data dir empty and currently leader",
        );
    }
    if i.settings.paused {
        return act(vec![], "running with empty data directory");
    }
    if cluster.is_unlocked() {
        if cluster.initialize.is_none() && !i.settings.nofailover && i.settings.can_bootstrap {
            return match i.answers.initialize_race {
                None => Step::Ask(Question::RaceInitialize),
                Some(true) => match &i.settings.standby_cluster {
                    Some(sc) => standby::bootstrap(sc),
                    None => act(vec![Action::Bootstrap], "trying to bootstrap a new cluster"),
                },
                Some(false) => act(vec![], "failed to acquire initialize lock"),
            };
        }
        // B3: no leader, but a method may build this node without one (from a backup),
        // unless someone is bootstrapping the cluster right now. In a standby cluster the
        // candidates are the standby_cluster's own `create_replica_methods`.
        let configured = match &i.settings.standby_cluster {
            Some(sc) => standby_replica_methods(i, sc),
            None => i.settings.replica_methods.clone(),
        };
        let methods = crate::replica::methods_to_try(&configured, false, false);
        if !methods.is_empty() && cluster.initialize.as_deref() != Some("") {
            return act(
                vec![Action::CloneFrom {
                    source: None,
                    follow: None,
                    methods: methods.into_iter().map(|m| m.name).collect(),
                    what: "(without leader)".into(),
                }],
                "trying to bootstrap (without leader)",
            );
        }
        if i.settings.standby_cluster.is_some() {
            return act(vec![], "waiting for standby_leader to bootstrap");
        }
        return act(vec![], "waiting for leader to bootstrap");
    }
    let leader = cluster.leader_name().unwrap_or_default().to_string();
    // B2: prefer a running member tagged clonefrom (not me, not the leader).
    let source = cluster
        .members
        .iter()
        .find(|m| {
            m.name != i.me
                && m.name != leader
                && m.data.clonefrom()
                && m.data.state.as_deref() == Some("running")
                && m.data.conn_url.is_some()
        })
        .map(|m| m.name.clone());
    let follow = node_to_follow(i, cluster).unwrap_or_else(|| leader.clone());
    let (source, what) = match source {
        Some(src) => (src.clone(), format!("from replica '{src}'")),
        None => (leader.clone(), format!("from leader '{leader}'")),
    };
    let methods = crate::replica::methods_to_try(&i.settings.replica_methods, true, false);
    act(
        vec![Action::CloneFrom {
            source: Some(source),
            follow: Some(follow),
            methods: methods.into_iter().map(|m| m.name).collect(),
            what: what.clone(),
        }],
        format!("trying to bootstrap {what}"),
    )
}

/// A standby cluster's `create_replica_methods` with each method's local section (no
/// section: the name is the command); an empty list means the member's own methods.
fn standby_replica_methods(
    i: &HaInput<'_>,
    sc: &crate::standby::StandbyCluster,
) -> Vec<crate::replica::ReplicaMethod> {
    if sc.create_replica_methods.is_empty() {
        return i.settings.replica_methods.clone();
    }
    sc.create_replica_methods
        .iter()
        .map(|name| {
            i.settings
                .replica_method_sections
                .iter()
                .chain(&i.settings.replica_methods)
                .find(|m| &m.name == name)
                .cloned()
                .unwrap_or_else(|| crate::replica::ReplicaMethod::new(name, serde_json::Map::new()))
        })
        .collect()
}

/// FW1.1: whom a replica streams from.
fn node_to_follow(i: &HaInput<'_>, cluster: &Cluster) -> Option<String> {
    if i.settings.nostream {
        return None;
    }
    let leader = cluster.leader_name()?;
    if leader == i.me {
        return None;
    }
    if let Some(up) = &i.settings.replicatefrom {
        if up != i.me && cluster.member(up).is_some() {
            return Some(up.clone());
        }
    }
    Some(leader.to_string())
}

/// L10 + R1–R6: PostgreSQL is not running.
fn pg_not_running(i: &HaInput<'_>, cluster: &Cluster, i_hold_lock: bool) -> Step {
    if i.settings.paused {
        if i_hold_lock {
            return act(
                vec![Action::ReleaseLeader],
                "removed leader lock because postgres is not running",
            );
        }
        return act(vec![], "postgres is not running");
    }
    if i_hold_lock {
        match i.answers.update {
            None => return Step::Ask(Question::UpdateLeader),
            Some(LockUpdate::DcsError) => return dcs_unreachable(i),
            Some(LockUpdate::Lost) => {}
            Some(LockUpdate::Renewed) => {
                if i.memory.start_failed {
                    // R3: PostgreSQL cannot start here; let a replica take over.
                    return act(
                        vec![Action::AbandonLeader],
                        "removed leader key after trying and failing to start postgres",
                    );
                }
                if i.pg.was_primary && i.settings.primary_start_timeout == 0 {
                    // R2 with primary_start_timeout 0: prefer a failover to a restart, if
                    // anyone can take over.
                    let peers = match probes(i, cluster) {
                        Ok(p) => p,
                        Err(step) => return step,
                    };
                    let max_lag = i.settings.maximum_lag_on_failover;
                    if peers.iter().any(|p| {
                        counts(p)
                            && !p.is_primary
                            && i.pg.wal_position.saturating_sub(p.wal_position) <= max_lag
                    }) {
                        return act(
                            vec![Action::Demote {
                                mode: DemoteMode::Immediate,
                            }],
                            "stopped PostgreSQL to fail over after a crash",
                        );
                    }
                }
                if i.pg.was_primary {
                    let mut actions = Vec::new();
                    // Strict synchronous mode: an agent that does not know which standby
                    // names it set (it restarted) starts the primary waiting for the
                    // placeholder, as Patroni does, so that no commit is acknowledged
                    // before the synchronous standbys are named again.
                    let sync = &i.settings.sync;
                    if sync.mode != crate::sync::SyncMode::Off
                        && sync.strict
                        && !i.memory.standby_names_are_mine
                    {
                        actions.push(Action::SetStandbyNames {
                            value: Some(crate::sync::STRICT_PLACEHOLDER.to_string()),
                            message: "synchronous_mode_strict: the primary starts waiting for a synchronous standby".into(),
                        });
                    }
                    actions.push(Action::StartPrimary);
                    return act(actions, "starting primary after failure");
                }
                // R5: a replica holding the lock starts read-only; next cycle promotes (H2).
                return act(
                    vec![Action::StartReplica { upstream: None }],
                    "starting as readonly because i had the session lock",
                );
            }
        }
    }
    let Some(leader) = cluster.leader_name().filter(|l| *l != i.me) else {
        // No one to follow: start read-only; the next cycle races for the lock.
        return act(
            vec![Action::StartReplica { upstream: None }],
            "starting as a secondary",
        );
    };
    let follow = node_to_follow(i, cluster);
    // R6: a node that may hold WAL the leader never saw must be checked first.
    let leader_tl = cluster
        .member(leader)
        .and_then(|m| m.data.timeline)
        .unwrap_or(0);
    let may_diverge = i.pg.was_primary || i.pg.timeline.is_some_and(|t| t < leader_tl);
    if may_diverge {
        match i.answers.divergence {
            None => {
                return Step::Ask(Question::CheckDivergence {
                    leader: leader.to_string(),
                })
            }
            Some(Divergence::Diverged) => return rewind_or_reinit(i, leader, follow),
            Some(_) => {}
        }
    }
    act(
        vec![Action::StartReplica { upstream: follow }],
        if i.memory.was_running {
            "restarting after failure"
        } else {
            "starting as a secondary"
        },
    )
}

/// RW1: rewind when possible, else re-clone when allowed, else start anyway. After a
/// failed rewind (postgres-management.md §6 step 5) the data directory is removed when
/// `remove_data_directory_on_rewind_failure` or `…_on_diverged_timelines` allows it,
/// otherwise the node starts as it is and rewind is not tried again.
fn rewind_or_reinit(i: &HaInput<'_>, leader: &str, follow: Option<String>) -> Step {
    if i.memory.rewind_failed || i.memory.rewind_failures >= REWIND_ATTEMPTS {
        let setting = if i.settings.remove_data_on_rewind_failure {
            Some("remove_data_directory_on_rewind_failure")
        } else if i.settings.reinit_on_divergence {
            Some("remove_data_directory_on_diverged_timelines")
        } else {
            None
        };
        return match setting {
            Some(name) => act(
                vec![
                    Action::Warn {
                        message: format!("{name} is set. removing..."),
                    },
                    Action::RemoveDataDir,
                ],
                format!("reinitializing after a failed pg_rewind from {leader}"),
            ),
            None => act(
                vec![Action::StartReplica { upstream: follow }],
                format!("pg_rewind from {leader} failed; starting as a secondary anyway"),
            ),
        };
    }
    if i.settings.can_rewind {
        // §6 step 3: a just-promoted leader's pg_control names its old timeline until its
        // first checkpoint; pg_rewind against it would compute the wrong fork point.
        let checkpoint_pending = i
            .cluster
            .and_then(|c| c.member(leader))
            .and_then(|m| m.data.extra.get("checkpoint_after_promote"))
            .is_some_and(|v| v.as_bool() == Some(false));
        if checkpoint_pending {
            return act(
                vec![],
                format!("Waiting for checkpoint on {leader} before rewind"),
            );
        }
        act(
            vec![
                Action::Rewind {
                    source: leader.to_string(),
                },
                Action::StartReplica { upstream: follow },
            ],
            format!("running pg_rewind from {leader}"),
        )
    } else if i.settings.reinit_on_divergence {
        act(
            vec![Action::RemoveDataDir],
            "reinitializing due to diverged timelines",
        )
    } else {
        act(
            vec![Action::StartReplica { upstream: follow }],
            format!("my timeline diverged from {leader}'s and pg_rewind is not possible; starting as a secondary anyway"),
        )
    }
}

/// U1–U3: nobody holds the lock.
fn unlocked(i: &HaInput<'_>, cluster: &Cluster) -> Step {
    if let Some(step) = leading::race_backoff(i, cluster) {
        return step;
    }
    let healthy = match healthiest(i, cluster) {
        Ok(h) => h,
        Err(step) => return step,
    };
    if let Err(why) = healthy {
        let nofailover = i.settings.nofailover && !i.settings.paused;
        if i.pg.is_primary && !i.settings.paused {
            return act(
                vec![Action::Demote {
                    mode: DemoteMode::ImmediateNoLock,
                }],
                if nofailover {
                    "demoting self because I am not allowed to become primary".to_string()
                } else {
                    format!("demoting self because i am not the healthiest node ({why})")
                },
            );
        }
        return act(
            vec![],
            if nofailover {
                "following a different leader because I am not allowed to promote".to_string()
            } else if i.settings.paused {
                format!("no action. I am ({}), cluster is unlocked", i.me)
            } else {
                format!("following a different leader because i am not the healthiest node ({why})")
            },
        );
    }
    // Whoever takes the lock consumes a pending switchover/failover request.
    let clear: Vec<Action> = cluster
        .failover
        .as_ref()
        .map(|f| Action::ClearFailover { version: f.version })
        .into_iter()
        .collect();
    if i.answers.acquire == Some(true) {
        if let Some(step) = leading::watchdog_forbids_leading(i) {
            return step;
        }
    }
    match i.answers.acquire {
        None => Step::Ask(Question::AcquireLeader),
        Some(true) if i.pg.is_primary => act(
            [
                clear,
                leading::arm_watchdog(i),
                vec![Action::LeaderHousekeeping],
            ]
            .concat(),
            "acquired session lock as a leader",
        ),
        Some(true) => {
            let n = cluster.members.iter().filter(|m| m.name != i.me).count() + 1;
            let why = match cluster.failover.as_ref().and_then(|f| f.member.as_deref()) {
                Some(c) if c == i.me => "I am the requested candidate".to_string(),
                _ => format!("I am the healthiest of {n} members"),
            };
            act(
                [
                    clear,
                    leading::arm_watchdog(i),
                    pre_promote_actions(i, cluster),
                    vec![Action::Promote, Action::LeaderHousekeeping],
                ]
                .concat(),
                format!("promoted self to leader by acquiring session lock ({why})"),
            )
        }
        Some(false) if i.pg.is_primary => act(
            vec![Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
            }],
            "demoted self after trying and failing to obtain lock",
        ),
        Some(false) => act(
            vec![],
            "following new leader after trying and failing to obtain lock",
        ),
    }
}

/// Probe answers, or the question that asks for them (every other member with an API).
fn probes<'a>(i: &'a HaInput<'_>, cluster: &Cluster) -> Result<&'a [PeerStatus], Step> {
    let others: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.name != i.me && m.data.api_url.is_some())
        .map(|m| m.name.clone())
        .collect();
    if others.is_empty() {
        return Ok(&[]);
    }
    match &i.answers.probes {
        Some(p) => Ok(p),
        None => Err(Step::Ask(Question::ProbeMembers(others))),
    }
}

/// A probed peer that counts as a failover candidate (C2.6).
fn counts(p: &PeerStatus) -> bool {
    p.reachable && !p.nofailover && !p.watchdog_failed
}

/// C1: am I the healthiest node? `Err(step)` when a probe is needed first; the inner
/// result says yes or why not.
#[allow(clippy::result_large_err)]
fn healthiest(i: &HaInput<'_>, cluster: &Cluster) -> Result<Result<(), String>, Step> {
    let s = i.settings;
    // C1.2: in pause only an explicit, unscheduled request makes anyone race.
    if s.paused && !s.nofailover {
        if let Some(req) = cluster
            .failover
            .as_ref()
            .filter(|f| f.scheduled_at.is_none())
        {
            if !i.pg.is_primary {
                return manual_failover_candidate(i, cluster, req);
            }
        }
    }
    if i.pg.is_primary {
        // C1.4
        if s.paused {
            // A sysid mismatch was refused earlier (L9), so a paused primary may lock.
            return Ok(Ok(()));
        }
        let cluster_tl = cluster.timeline();
        if i.pg.timeline.is_some_and(|t| t < cluster_tl) {
            return Ok(Err(format!(
                "my timeline {} is behind the cluster timeline {cluster_tl}",
                i.pg.timeline.unwrap_or(0)
            )));
        }
        return Ok(Ok(()));
    }
    if s.paused {
        return Ok(Err("paused".into()));
    }
    if s.nofailover {
        return Ok(Err("nofailover".into()));
    }
    // F1: I just killed my frozen primary; the others take over (my storage may be
    // what froze). Alone, I race again after a ttl.
    if i.memory
        .primary_given_up_at_ms
        .is_some_and(|at| i.now_ms < at + s.ttl * 1000)
    {
        return Ok(Err(
            "I gave up the primary role because PostgreSQL stopped answering".into(),
        ));
    }
    // Failsafe: a node missing from a known, non-empty failsafe topology never takes
    // over (the primary may be running on, acknowledged by the members it knows).
    if s.failsafe_mode {
        let topology = cluster
            .failsafe
            .as_ref()
            .map(|f| f.contains_key(i.me) || f.is_empty());
        if topology == Some(false) {
            return Ok(Err("I am not in the failsafe topology".into()));
        }
    }
    // C1.6: a pending switchover/failover request decides who races (C3); a switchover
    // in synchronous mode only to a synchronous standby.
    if let Some(req) = &cluster.failover {
        if req.leader.is_some() && !crate::sync::switchover_allowed(i.me, cluster, &s.sync) {
            return Ok(Err("I am not a synchronous standby".into()));
        }
        return manual_failover_candidate(i, cluster, req);
    }
    // C1.7
    if s.watchdog_failed {
        return Ok(Err("Watchdog device is not usable".into()));
    }
    // C1.9: in synchronous mode only the sync key's members may take over.
    if !crate::sync::may_promote(i.me, cluster, &s.sync) {
        return Ok(Err("I am not a synchronous standby".into()));
    }
    compare_with_others(i, cluster, None, true)
}

/// C3: the cluster is unlocked and a switchover/failover request names what to do.
#[allow(clippy::result_large_err)]
fn manual_failover_candidate(
    i: &HaInput<'_>,
    cluster: &Cluster,
    req: &crate::cluster::FailoverRequest,
) -> Result<Result<(), String>, Step> {
    // Quorum commit (a deviation from Patroni, which promotes a named candidate
    // unconditionally): no member holds every acknowledged commit, so a candidate named
    // by a request the leader did not carry out (it died first) must win the votes like
    // anyone else, and a node that is ahead of the candidate does not defer to it.
    let quorum = i.settings.sync.mode == crate::sync::SyncMode::Quorum && cluster.sync.is_some();
    if let Some(c) = &req.member {
        if c == i.me {
            if quorum && !i.settings.paused {
                return compare_with_others(i, cluster, req.leader.as_deref(), false);
            }
            return Ok(Ok(()));
        }
        if cluster.member(c).is_some() {
            let peers = probes(i, cluster)?;
            let mine = i.pg.wal_position;
            if peers
                .iter()
                .any(|p| &p.name == c && counts(p) && !(quorum && p.wal_position < mine))
            {
                return Ok(Err(format!("{c} is the requested failover candidate")));
            }
            // The candidate is not healthy (or, with quorum commit, behind me): continue
            // as if none was named.
        }
    }
    if i.settings.paused {
        return Ok(Err("paused: only the named candidate may take over".into()));
    }
    if req.leader.as_deref() == Some(i.me) {
        return Ok(Ok(()));
    }
    // C3.4: the former leader does not compete, and lag is not checked.
    compare_with_others(i, cluster, req.leader.as_deref(), false)
}

/// C2: compare my WAL position with every reachable member's.
#[allow(clippy::result_large_err)]
fn compare_with_others(
    i: &HaInput<'_>,
    cluster: &Cluster,
    exclude: Option<&str>,
    check_lag: bool,
) -> Result<Result<(), String>, Step> {
    let s = i.settings;
    // C2.2: lag against the last known leader position.
    if check_lag {
        if let Some(optime) = cluster.status.optime {
            let lag = optime.saturating_sub(i.pg.wal_position);
            if lag > s.maximum_lag_on_failover {
                return Ok(Err(format!(
                    "My wal position exceeds maximum replication lag: {lag} bytes > {}",
                    s.maximum_lag_on_failover
                )));
            }
        }
    }
    // C2.3
    if s.check_timeline {
        match i.pg.timeline {
            None => return Ok(Err("my timeline is unknown".into())),
            Some(t) if t < cluster.timeline() => {
                return Ok(Err(format!(
                    "my timeline {t} is behind the cluster timeline"
                )))
            }
            _ => {}
        }
    }
    let mine = i.pg.wal_position;
    // C1.9: in synchronous mode only the sync set competes; an asynchronous replica may
    // hold more (unacknowledged) WAL, and the former sync leader is not a rival.
    let sync_set = (s.sync.mode != crate::sync::SyncMode::Off)
        .then_some(cluster.sync.as_ref())
        .flatten();
    // Quorum commit: every acknowledged commit is on at least one of any `quorum + 1`
    // members of the sync set, so I need that many of them (me included) not ahead of me.
    let voting = sync_set.filter(|_| s.sync.mode == crate::sync::SyncMode::Quorum);
    let mut votes: i64 = if voting.is_some_and(|v| v.matches(i.me)) {
        0
    } else {
        -1
    };
    let mut nodes_ahead = 0;
    for p in probes(i, cluster)? {
        if p.name == i.me || Some(p.name.as_str()) == exclude || !counts(p) {
            continue;
        }
        let mut is_old_leader = false;
        if let Some(sync) = sync_set {
            if !sync.matches(&p.name) {
                continue;
            }
            is_old_leader = sync
                .leader
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&p.name));
        }
        if p.is_primary {
            return Ok(Err(format!("Primary ({}) is still alive", p.name)));
        }
        if p.wal_position > mine {
            nodes_ahead += 1;
            if is_old_leader {
                // It may hold commits nobody acknowledged; it is not a rival.
                continue;
            }
            return Ok(Err(format!(
                "Wal position of {} is ahead of my wal position",
                p.name
            )));
        }
        if p.wal_position == 0 {
            continue;
        }
        let vote = voting.is_some_and(|v| v.matches(&p.name));
        if p.wal_position == mine
            && p.failover_priority > s.failover_priority
            && !is_old_leader
            && (voting.is_none() || vote)
        {
            return Ok(Err(format!(
                "{} has equally tolerable WAL position and priority {}, while this node has priority {}",
                p.name, p.failover_priority, s.failover_priority
            )));
        }
        if vote {
            votes += 1;
        }
    }
    if let Some(v) = voting {
        let former_leader_alone = nodes_ahead == 0
            && v.leader
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(i.me));
        if votes < i64::from(v.quorum) && !former_leader_alone {
            return Ok(Err(format!(
                "quorum {} not reached: {} vote(s) from the synchronous set",
                v.quorum,
                votes.max(0)
            )));
        }
    }
    Ok(Ok(()))
}

/// REST API step 7 (rest-api.md §4.2, Patroni's `is_failover_possible`): the members
/// whose health decides whether a switchover (`is_switchover`) or failover to
/// `candidate` can succeed, or the 412 text saying why it cannot. A switchover in
/// `synchronous_mode: on` goes only to a synchronous standby; without a candidate a
/// synchronous standby must exist. (Quorum mode leaves the choice to the race.)
pub fn switchover_targets<'a>(
    c: &'a Cluster,
    is_switchover: bool,
    leader: Option<&str>,
    candidate: Option<&str>,
) -> Result<Vec<&'a crate::cluster::Member>, String> {
    let action = if is_switchover {
        "switchover"
    } else {
        "failover"
    };
    if is_switchover && c.leader_name() != leader {
        return Err("leader name does not match".into());
    }
    let flags = crate::cluster::GlobalFlags::from_cluster(Some(c));
    let classic_sync = flags.synchronous_mode && !flags.quorum_commit_mode;
    // The sync key's standbys (not its leader).
    let in_sync = |name: &str| {
        c.sync
            .as_ref()
            .is_some_and(|s| s.sync_standby.iter().any(|n| n.eq_ignore_ascii_case(name)))
    };
    match candidate {
        Some(cand) => {
            if is_switchover && classic_sync && !in_sync(cand) {
                return Err("candidate name does not match with sync_standby".into());
            }
            c.member(cand)
                .map(|m| vec![m])
                .ok_or_else(|| "candidate does not exists".into())
        }
        None if classic_sync => {
            let sync: Vec<_> = c.members.iter().filter(|m| in_sync(&m.name)).collect();
            if sync.is_empty() {
                return Err(format!(
                    "{action} is not possible: can not find sync_standby"
                ));
            }
            Ok(sync)
        }
        None => {
            let current = c.leader_name();
            let others: Vec<_> = c
                .members
                .iter()
                .filter(|m| Some(m.name.as_str()) != current)
                .collect();
            if others.is_empty() {
                return Err(format!(
                    "{action} is not possible: cluster does not have members except leader"
                ));
            }
            Ok(others)
        }
    }
}

/// Parses an ISO 8601 timestamp with an offset (`scheduled_at`, a restart `schedule`)
/// into ms since the epoch.
pub fn parse_iso8601_ms(at: &str) -> Option<i64> {
    let at = at.trim();
    chrono::DateTime::parse_from_rfc3339(at)
        .or_else(|_| chrono::DateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.f%:z"))
        .or_else(|_| chrono::DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| chrono::DateTime::parse_from_str(at, "%Y-%m-%dT%H:%M%:z"))
        .ok()
        .map(|d| d.timestamp_millis())
}

/// L15: the leader handles a pending switchover / manual failover request.
fn leader_handles_request(i: &HaInput<'_>, cluster: &Cluster) -> Option<Step> {
    let req = cluster.failover.as_ref()?;
    let keep = Action::LeaderHousekeeping;
    let clear = Action::ClearFailover {
        version: req.version,
    };
    let what = if req.leader.is_some() {
        "switchover"
    } else {
        "manual failover"
    };
    let mut wait = Vec::new();
    if let Some(at) = &req.scheduled_at {
        if i.settings.paused {
            return Some(act(
                vec![keep, clear],
                format!(
                    "{what}: scheduled switchovers are not allowed in pause; removing the request"
                ),
            ));
        }
        let Some(t) = parse_iso8601_ms(at) else {
            return Some(act(
                vec![keep, clear],
                format!("{what}: unable to parse scheduled_at '{at}'; removing the request"),
            ));
        };
        let delta = t - i.now_epoch_ms;
        let loop_ms = (i.settings.loop_wait * 1000) as i64;
        if delta > loop_ms {
            return Some(act(
                vec![keep],
                format!(
                    "no action. I am ({}), the leader with the lock; Awaiting {what} at {at} (in {} seconds)",
                    i.me,
                    delta / 1000
                ),
            ));
        }
        if delta < -(loop_ms * 3 / 2) {
            return Some(act(
                vec![keep, clear],
                format!("Found a stale {what} request scheduled at {at}; removing it"),
            ));
        }
        if delta > 0 {
            wait.push(Action::WaitUntil { epoch_ms: t });
        }
    }
    if let Some(l) = req.leader.as_deref().filter(|l| *l != i.me) {
        return Some(act(
            vec![keep, clear],
            format!("{what}: leader name does not match: {l} != {}", i.me),
        ));
    }
    if req.member.as_deref() == Some(i.me) {
        return Some(act(
            vec![keep, clear],
            format!("{what}: I am already the leader, no need to {what}"),
        ));
    }
    if i.settings.paused && req.member.is_none() {
        return Some(act(
            vec![keep, clear],
            format!("{what}: the candidate must be named in a paused state; removing the request"),
        ));
    }
    // F2: is anyone able to take over?
    let candidates: Vec<&str> = cluster
        .members
        .iter()
        .filter(|m| m.name != i.me && m.data.api_url.is_some() && !m.data.nofailover())
        .filter(|m| req.member.as_deref().is_none_or(|c| c == m.name))
        // A switchover in synchronous mode goes to a synchronous standby only.
        .filter(|m| {
            req.leader.is_none()
                || crate::sync::switchover_allowed(&m.name, cluster, &i.settings.sync)
        })
        .map(|m| m.name.as_str())
        .collect();
    let peers = match probes(i, cluster) {
        Ok(p) => p,
        Err(step) => return Some(step),
    };
    let max_lag = i.settings.maximum_lag_on_failover;
    let healthy = peers
        .iter()
        .filter(|p| {
            candidates.contains(&p.name.as_str())
                && counts(p)
                && i.pg.wal_position.saturating_sub(p.wal_position) <= max_lag
        })
        .count();
    // Quorum commit without a named candidate: enough healthy voters must remain for
    // the race to reach the quorum.
    let quorum = cluster
        .sync
        .as_ref()
        .filter(|_| i.settings.sync.mode == crate::sync::SyncMode::Quorum && req.member.is_none())
        .map_or(0, |s| s.quorum as usize);
    if healthy > 0 && healthy - 1 < quorum {
        return Some(act(
            vec![keep, clear],
            format!("{what}: Quorum requirement {quorum} can not be reached"),
        ));
    }
    if healthy == 0 {
        return Some(act(
            vec![keep, clear],
            format!("{what}: no healthy members found, {what} is not possible"),
        ));
    }
    // A candidate that replicates from me but is not connected right now (e.g. it is
    // reconnecting after my restart) would miss my shutdown checkpoint and fork from a
    // point I never reached: wait for it instead of demoting (the request stays).
    let connected = |name: &str| {
        i.pg.standbys
            .iter()
            .any(|c| c.application_name.eq_ignore_ascii_case(name))
            || cluster.member(name).is_some_and(|m| {
                m.data
                    .tags
                    .get("replicatefrom")
                    .and_then(|v| v.as_str())
                    .is_some_and(|up| !up.eq_ignore_ascii_case(i.me))
            })
    };
    if !candidates.iter().any(|c| connected(c)) {
        return Some(act(
            vec![keep],
            format!("{what}: waiting for a candidate to stream from me"),
        ));
    }
    wait.push(Action::Demote {
        mode: DemoteMode::Graceful,
    });
    Some(act(wait, format!("{what}: demoting myself")))
}

/// Y4/Y6/Y10: the primary's next synchronous-replication step (at most one effect a
/// cycle; see [`crate::sync`]).
fn primary_sync_actions(i: &HaInput<'_>, cluster: &Cluster) -> Vec<Action> {
    let current = crate::sync::StandbyNames::parse(&i.pg.synchronous_standby_names);
    let (step, warning) = crate::sync::primary_step(&crate::sync::PrimarySync {
        me: i.me,
        cluster,
        settings: &i.settings.sync,
        standbys: &i.pg.standbys,
        synchronous_commit: &i.pg.synchronous_commit,
        current: &current,
        names_are_mine: i.memory.standby_names_are_mine,
        primary_lsn: i.pg.wal_position,
        names_changed_at_lsn: i.memory.standby_names_changed_at_lsn,
    });
    let mut out = Vec::new();
    if let Some(w) = warning {
        out.push(Action::Warn { message: w });
    }
    for step in step {
        out.push(match step {
            crate::sync::SyncStep::WriteKey(write, message) => Action::WriteSync { write, message },
            crate::sync::SyncStep::DeleteKey(version) => Action::DeleteSync { version },
            crate::sync::SyncStep::SetNames(value, message) => {
                Action::SetStandbyNames { value, message }
            }
            crate::sync::SyncStep::Recheck => Action::RecheckSoon,
        });
    }
    out
}

/// Y5: before promoting in synchronous mode, claim the `sync` key (a failed compare
/// stops the promotion) and start with the standby names it implies.
fn pre_promote_actions(i: &HaInput<'_>, cluster: &Cluster) -> Vec<Action> {
    let Some(pre) = crate::sync::pre_promote(i.me, cluster, &i.settings.sync) else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(write) = pre.write {
        out.push(Action::WriteSync {
            write,
            message: "Synchronous replication key claimed before promote".into(),
        });
    }
    out.push(Action::SetStandbyNames {
        value: Some(pre.names),
        message: "Standby names set before promote".into(),
    });
    out
}

/// H1/H2: I hold the lock.
fn locked_by_me(i: &HaInput<'_>, cluster: &Cluster) -> Step {
    if i.settings.paused && !i.pg.is_primary {
        return act(
            vec![Action::ReleaseLeader],
            "removed leader lock because postgres is not running as primary",
        );
    }
    if i.answers.update == Some(LockUpdate::Renewed) {
        if let Some(step) = leading::watchdog_forbids_leading(i) {
            return step;
        }
    }
    match i.answers.update {
        None => Step::Ask(Question::UpdateLeader),
        Some(LockUpdate::DcsError) => dcs_unreachable(i),
        Some(LockUpdate::Renewed) if i.pg.is_primary => leader_handles_request(i, cluster)
            .unwrap_or_else(|| {
                let mut actions = leading::arm_watchdog(i);
                actions.push(Action::LeaderHousekeeping);
                actions.extend(failsafe_key_update(i, cluster));
                actions.extend(primary_sync_actions(i, cluster));
                act(
                    actions,
                    format!("no action. I am ({}), the leader with the lock", i.me),
                )
            }),
        Some(LockUpdate::Renewed) => act(
            [
                leading::arm_watchdog(i),
                pre_promote_actions(i, cluster),
                vec![Action::Promote, Action::LeaderHousekeeping],
            ]
            .concat(),
            "promoted self to leader because I had the session lock",
        ),
        Some(LockUpdate::Lost) if i.pg.is_primary => {
            if i.settings.paused {
                act(
                    vec![],
                    "continue to run as primary after failing to update leader lock in DCS",
                )
            } else {
                act(
                    vec![Action::Demote {
                        mode: DemoteMode::ImmediateNoLock,
                    }],
                    "demoted self because failed to update leader lock in DCS",
                )
            }
        }
        Some(LockUpdate::Lost) => act(
            vec![],
            "not promoting because failed to update leader lock in DCS",
        ),
    }
}

/// H3 + FW1: someone else holds the lock.
fn locked_by_other(i: &HaInput<'_>, cluster: &Cluster) -> Step {
    let leader = cluster.leader_name().unwrap_or_default();
    if i.pg.is_primary {
        if i.settings.paused {
            return act(vec![], "continue to run as primary without lock");
        }
        return act(
            vec![Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
            }],
            "demoting self because I do not have the lock and I was a leader",
        );
    }
    let msg = format!(
        "no action. I am ({}), a secondary, and following a leader ({leader})",
        i.me
    );
    follow_leader(i, cluster, leader, msg)
}

/// FW1 for a replica of a locked cluster: check divergence from the leader when it may
/// have diverged, then stream from the node to follow (the leader or `replicatefrom`).
fn follow_leader(i: &HaInput<'_>, cluster: &Cluster, leader: &str, msg: String) -> Step {
    let follow = node_to_follow(i, cluster);
    // FW1.8: a replica left behind on an older timeline that does not stream may have
    // diverged (e.g. it replayed WAL past the fork point): check and rewind.
    let leader_tl = cluster
        .leader_member()
        .and_then(|m| m.data.timeline)
        .unwrap_or(0);
    if !i.settings.paused && !i.pg.streaming && i.pg.timeline.is_some_and(|t| t < leader_tl) {
        match i.answers.divergence {
            None => {
                return Step::Ask(Question::CheckDivergence {
                    leader: leader.to_string(),
                })
            }
            Some(Divergence::Diverged) => return rewind_or_reinit(i, leader, follow),
            Some(_) => {}
        }
    }
    match follow {
        Some(up) if i.pg.following.as_deref() != Some(up.as_str()) => {
            act(vec![Action::Follow { upstream: up }], msg)
        }
        _ => act(vec![], msg),
    }
}

mod leading;
mod standby;

#[cfg(test)]
mod tests;
