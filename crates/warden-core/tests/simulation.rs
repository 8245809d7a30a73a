//! Deterministic simulation of a 3- or 4-node cluster driven by the pure HA decision.
//!
//! A virtual clock, an in-memory DCS with leases, simulated PostgreSQL instances and a
//! seeded fault injector (agent crashes, frozen agents, DCS partitions of one node,
//! PostgreSQL crashes) run thousands of HA cycles. Executing actions mirrors what the
//! agent does, including the fence guards (a primary whose lock was not renewed is
//! stopped `fence_margin_ms(ttl)` before the lease can expire). Invariants checked at every
//! step:
//! * never two writable primaries at the same time;
//! * a writable primary always holds an unexpired lease in the DCS;
//! * after faults heal, the cluster converges to exactly one leader with a running
//!   primary that every other node streams from, within a bounded time.
//!
//! Synchronous replication runs (`synchronous_mode: on`, strict or not, one or two
//! synchronous standbys) add PostgreSQL's synchronous commit: WAL is modelled as a
//! timeline tree, replicas stream with seeded lag and dropped connections, the primary
//! reports `pg_stat_replication` as PostgreSQL would for its `synchronous_standby_names`,
//! and a commit is acknowledged only once the standbys those names require have flushed
//! it. The `sync` key lives in the DCS with compare-and-set versions. Two more
//! invariants:
//! * every writable primary (so every promoted node) holds every commit that was
//!   acknowledged synchronously, on any timeline;
//! * a node named `sync_standby` in the `sync` key holds every commit acknowledged
//!   synchronously since it was named.
//!
//! Quorum commit runs (`synchronous_mode: quorum`, 3 or 4 nodes) list the standbys as
//! `ANY N (…)`: a commit is acknowledged once any N of the listed standbys streaming
//! from the primary have flushed it (the strict placeholder is a name that never
//! does). The `sync` key's `sync_standby` are then voters, none of which needs to hold
//! every commit, so the second invariant becomes the one the leader race relies on:
//! * at most `quorum` members of the `sync` key's set (leader and voters) lack a commit
//!   acknowledged synchronously, so any `quorum + 1` of them include one that holds it.
//!
//! Failsafe and frozen-PostgreSQL runs (`failsafe_mode` on or off) add the faults those
//! features answer: whole-DCS outages, a node isolated from the DCS and every member,
//! the REST link between two members cut (so `POST /failsafe` succeeds or fails per
//! pair, and a node may reach the DCS but not a member, or a member but not the DCS),
//! and PostgreSQL frozen (SIGSTOP, hung storage) for a while: it answers no query,
//! commits and streams nothing, and resumes with all its state when it thaws unless it
//! was killed. The leader writes the `failsafe` key; members accept `POST /failsafe`
//! unless their published status says they run a primary. A writable primary is then
//! any running primary without a pending kill (a frozen one counts: it may thaw), and
//! the lease invariant becomes:
//! * a writable primary holds an unexpired lease, or is within a failsafe window (see
//!   [`World::failsafe_covers`]).
//!
//! Standby-cluster runs (`standby_cluster` configured) replicate from a remote site: a
//! primary outside the cluster whose WAL grows every tick. The cluster bootstraps its
//! standby leader from it; the standby leader streams from it and the others from the
//! standby leader. Besides the usual faults (switchovers of the standby leader
//! included), the operator turns the cluster into a primary cluster (`promote-cluster`:
//! the remote site stops first) and back (`demote-cluster`: the remote site is rebuilt
//! from the primary, and promotes once nothing in the cluster can write). Invariants:
//! * while the cluster is a standby cluster nothing in it promotes or bootstraps a new
//!   primary (a decision taken with `standby_cluster` never does);
//! * after faults heal, a standby cluster converges to one standby leader streaming
//!   from the remote site that every other node streams from.

use std::collections::{BTreeMap, VecDeque};
use warden_core::cluster::{Cluster, KeyValue};
use warden_core::ha::{
    decide, fence_margin_ms, Action, Answers, DataDir, DemoteMode, Divergence, HaInput, HaSettings,
    LocalPg, LockUpdate, NodeMemory, PeerStatus, Question, Step,
};
use warden_core::standby::{RemoteSource, StandbyCluster};
use warden_core::sync::{StandbyConn, StandbyNames, SyncMode, SyncSettings};

/// Patroni's floor, the Warden-only `warden.min_ttl` of 8 s, and the shortest lease
/// (`MIN_TTL_FLOOR`: ttl 4, loop_wait 1, fence margin 1 s).
const TTL_MS: u64 = 20_000;
const SHORT_TTL_MS: u64 = 8_000;
const SHORTEST_TTL_MS: u64 = 4_000;
const LOOP_MS: u64 = 2_000;
const SHORTEST_LOOP_MS: u64 = 1_000;
const SYSID: &str = "7000000000000000001";
/// What `following` holds while a node streams from the remote site.
const REMOTE: &str = "remote site";
/// Lines of history printed with a failed invariant.
const TRACE_LINES: usize = 400;

/// xorshift64*: small, seeded, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug, Default)]
struct Pg {
    initialized: bool,
    running: bool,
    primary: bool,
    timeline: u32,
    /// End of the flushed WAL. Its content is the history of `timeline` up to here
    /// (see [`Timelines`]).
    wal: u64,
    /// `synchronous_standby_names` in effect. The agent writes it to postgresql.conf
    /// and reloads, or writes it at the next start; it outlives agent restarts.
    ssn: String,
    /// Commits (their end LSNs, oldest first) whose clients wait for the synchronous
    /// standbys. They are lost to their clients (never acknowledged) if PostgreSQL stops.
    waiting: VecDeque<u64>,
}

/// Which timeline forked from which, where: WAL content is a path in this tree, so a
/// node at (timeline, wal) holds a record iff the record lies on that path.
#[derive(Default)]
struct Timelines {
    /// timeline → (parent timeline, LSN where it forked); timeline 1 is the root.
    parent: BTreeMap<u32, (u32, u64)>,
}

impl Timelines {
    /// Does WAL ending at `wal` on `tl` hold the record ending at `lsn` on `on`?
    fn holds(&self, tl: u32, wal: u64, on: u32, lsn: u64) -> bool {
        let (mut t, mut upto) = (tl, wal);
        loop {
            if t == on {
                return lsn <= upto;
            }
            match self.parent.get(&t) {
                Some(&(p, fork)) => {
                    upto = upto.min(fork);
                    t = p;
                }
                None => return false,
            }
        }
    }

    /// Is `a`'s WAL a prefix of `b`'s (so `a` can stream from `b`)?
    fn is_prefix(&self, a: &Pg, b: &Pg) -> bool {
        a.initialized && b.initialized && self.holds(b.timeline, b.wal, a.timeline, a.wal)
    }

    /// The first of `acked` (max acknowledged LSN per timeline) that `pg` does not hold.
    fn missing(&self, pg: &Pg, acked: &BTreeMap<u32, u64>) -> Option<(u32, u64)> {
        acked
            .iter()
            .map(|(&tl, &lsn)| (tl, lsn))
            .find(|&(tl, lsn)| !pg.initialized || !self.holds(pg.timeline, pg.wal, tl, lsn))
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    pg: Pg,
    memory: NodeMemory,
    following: Option<String>,
    /// agent process state
    alive: bool,
    /// The external fence guard's deadline (0 = nothing to guard). It is published by the
    /// agent whenever its lock deadline changes and, being a file read by a separate
    /// process, survives agent crashes and freezes.
    guard_deadline: u64,
    frozen_until: u64,
    partitioned_until: u64,
    /// The replication connection to the upstream is down until then.
    link_down_until: u64,
    /// The agent's `managed_standby_names` (in memory: lost when the agent restarts).
    managed_ssn: Option<String>,
    next_cycle: u64,
    /// PostgreSQL is frozen until then (only while it runs: starting it clears this).
    pg_frozen_until: u64,
    /// The fence guard's SIGQUIT is pending on the frozen instance: it is gone when it
    /// thaws or at this time (the guard's SIGKILL), whichever comes first, and commits
    /// nothing meanwhile.
    pg_doomed_at: Option<u64>,
    /// Agent memory (lost when it restarts): since when PostgreSQL has not answered, and
    /// what it said last (`LocalPg` then reports that, as node.rs's `last_pg`).
    pg_unanswered_since: Option<u64>,
    last_answer: Option<LocalPg>,
    /// The REST API's last accepted `POST /failsafe`: (primary, when). In the agent's
    /// memory, so lost when it restarts.
    failsafe_ping: Option<(String, u64)>,
    /// When this agent last asked the members for failsafe acknowledgements.
    failsafe_asked_at: u64,
    /// The status the agent last published says "running primary, PostgreSQL answered":
    /// what makes its `POST /failsafe` handler refuse.
    status_primary: bool,
    /// Checker bookkeeping, not agent state: the last round of `POST /failsafe` this node
    /// sent that every member asked accepted (when it was asked, who accepted).
    failsafe_acked: Option<(u64, Vec<String>)>,
    /// No DCS and no REST to or from this node until then.
    isolated_until: u64,
    /// Agent memory: the remote site PostgreSQL was configured to follow, and whether
    /// it runs as the standby leader (node.rs's `remote` and `role`).
    remote: Option<RemoteSource>,
    standby_leader: bool,
}

#[derive(Default)]
struct Dcs {
    leader: Option<(String, u64)>, // name, lease expiry
    initialize: Option<String>,
    optime: u64,
    members: BTreeMap<String, (u64, String)>, // name -> (lease expiry, json)
    /// `sync` key: value and mod_revision.
    sync: Option<(String, i64)>,
    /// `failover` key (a switchover request): value and mod_revision.
    failover: Option<(String, i64)>,
    /// `failsafe` key (member → api_url JSON), written by the leader in failsafe mode.
    failsafe: Option<String>,
    /// `config` key, written by the bootstrap or a lock holder that found it missing.
    config: Option<String>,
    /// Last mod_revision handed out.
    revision: i64,
}

/// What a scenario exercised, so the tests can require that it exercised something.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    promotions: u32,
    /// Graceful demotions (switchovers).
    switchovers: u32,
    sync_acks: u64,
    /// Commits acknowledged without a standby in strict mode on a timeline where strict
    /// synchronous replication was already in force (Patroni's strict mode promises
    /// this does not happen; not part of the durability invariant, whose commits are
    /// the synchronously acknowledged ones).
    strict_async_acks: u64,
    /// Primary cycles kept by failsafe after the primary's lease had expired.
    failsafe_beyond_lease: u32,
    /// Frozen primaries killed by their agent (F1).
    frozen_kills: u32,
    /// Standby clusters: a node took the standby leader role.
    standby_leaders: u32,
    /// Standby clusters: `promote-cluster` / `demote-cluster` carried out.
    cluster_promotions: u32,
    cluster_demotions: u32,
}

impl std::ops::Add for Stats {
    type Output = Stats;
    fn add(self, o: Stats) -> Stats {
        Stats {
            promotions: self.promotions + o.promotions,
            switchovers: self.switchovers + o.switchovers,
            sync_acks: self.sync_acks + o.sync_acks,
            strict_async_acks: self.strict_async_acks + o.strict_async_acks,
            failsafe_beyond_lease: self.failsafe_beyond_lease + o.failsafe_beyond_lease,
            frozen_kills: self.frozen_kills + o.frozen_kills,
            standby_leaders: self.standby_leaders + o.standby_leaders,
            cluster_promotions: self.cluster_promotions + o.cluster_promotions,
            cluster_demotions: self.cluster_demotions + o.cluster_demotions,
        }
    }
}

/// The remote site of a standby-cluster run.
struct Remote {
    /// The cluster's dynamic configuration has `standby_cluster` (pointing here).
    configured: bool,
    /// The remote site's PostgreSQL: a running primary writes every tick.
    pg: Pg,
    /// After `demote-cluster`: the remote site replicates from the cluster's primary
    /// until nothing in the cluster can write, then promotes.
    tracking: bool,
}

struct World {
    seed: u64,
    /// A standby-cluster run.
    remote: Option<Remote>,
    now: u64,
    dcs: Dcs,
    nodes: Vec<Node>,
    rng: Rng,
    /// Replication lag and disconnects draw from their own stream, so the fault
    /// sequence of a seed does not depend on how replication went.
    net: Rng,
    /// highest timeline ever promoted (timelines only grow)
    max_tl: u32,
    timelines: Timelines,
    /// leader lock / member key lifetime
    ttl_ms: u64,
    /// loop_wait
    loop_ms: u64,
    /// How long before the lock's expiry the guards stop a primary (the agent's rule).
    fence_margin: u64,
    sync: SyncSettings,
    /// Highest commit acknowledged synchronously, per timeline.
    acked: BTreeMap<u32, u64>,
    /// Each node named `sync_standby` in the `sync` key → the highest commit per
    /// timeline acknowledged synchronously since it was named.
    acked_since_named: BTreeMap<String, BTreeMap<u32, u64>>,
    stats: Stats,
    /// Check [`World::check_quorum_overlap`] (quorum runs; see the ignored test that
    /// turns it on).
    check_overlap: bool,
    /// `failsafe_mode` of every node.
    failsafe: bool,
    /// Draw from the failsafe and frozen-PostgreSQL faults too (see [`World::inject_fault`]).
    more_faults: bool,
    /// The whole DCS is unreachable until then.
    dcs_down_until: u64,
    /// Model the executor before it took the `failsafe` key it wrote as its topology
    /// (see the ignored test that turns this on).
    stale_topology_after_write: bool,
    /// REST between two members (lower index first) is cut until then.
    rest_cut: BTreeMap<(usize, usize), u64>,
    trace: VecDeque<String>,
}

impl World {
    fn new(seed: u64, ttl_ms: u64, sync: SyncSettings, nodes: usize) -> World {
        let nodes = (0..nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                pg: Pg::default(),
                memory: NodeMemory {
                    first_cycle: true,
                    ..NodeMemory::default()
                },
                following: None,
                alive: true,
                guard_deadline: 0,
                frozen_until: 0,
                partitioned_until: 0,
                link_down_until: 0,
                managed_ssn: None,
                next_cycle: i as u64 * 300,
                pg_frozen_until: 0,
                pg_doomed_at: None,
                pg_unanswered_since: None,
                last_answer: None,
                failsafe_ping: None,
                failsafe_asked_at: 0,
                status_primary: false,
                failsafe_acked: None,
                isolated_until: 0,
                remote: None,
                standby_leader: false,
            })
            .collect();
        World {
            seed,
            remote: None,
            now: 0,
            dcs: Dcs::default(),
            nodes,
            rng: Rng(seed.max(1)),
            net: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1)),
            max_tl: 1,
            timelines: Timelines::default(),
            ttl_ms,
            loop_ms: LOOP_MS,
            fence_margin: fence_margin_ms(ttl_ms / 1000),
            sync,
            acked: BTreeMap::new(),
            acked_since_named: BTreeMap::new(),
            stats: Stats::default(),
            check_overlap: false,
            failsafe: false,
            more_faults: false,
            dcs_down_until: 0,
            stale_topology_after_write: false,
            rest_cut: BTreeMap::new(),
            trace: VecDeque::new(),
        }
    }

    fn sync_on(&self) -> bool {
        self.sync.mode != SyncMode::Off
    }

    /// A standby-cluster run: the remote site writes on timeline 1 from the start.
    /// Another `loop_wait` (the shortest lease runs with 1 s).
    fn loop_ms(mut self, ms: u64) -> World {
        self.loop_ms = ms;
        self
    }

    fn standby(mut self) -> World {
        self.remote = Some(Remote {
            configured: true,
            pg: Pg {
                initialized: true,
                running: true,
                primary: true,
                timeline: 1,
                wal: 1,
                ..Pg::default()
            },
            tracking: false,
        });
        self
    }

    /// The `standby_cluster` section every node reads now (None: a primary cluster).
    fn standby_config(&self) -> Option<StandbyCluster> {
        self.remote
            .as_ref()
            .filter(|r| r.configured)
            .map(|_| StandbyCluster {
                source: RemoteSource {
                    host: Some("remote.site".into()),
                    port: Some(5432),
                    ..RemoteSource::default()
                },
                create_replica_methods: vec![],
            })
    }

    /// Node `j` streams from the remote site right now (as [`World::upstream`] for a
    /// member).
    fn streams_from_remote(&self, j: usize) -> bool {
        let n = &self.nodes[j];
        let Some(r) = &self.remote else {
            return false;
        };
        n.pg.running
            && !n.pg.primary
            && n.following.as_deref() == Some(REMOTE)
            && n.link_down_until <= self.now
            && n.isolated_until <= self.now
            && !self.pg_frozen(j)
            && r.pg.running
            && self.timelines.is_prefix(&n.pg, &r.pg)
    }

    fn quorum(&self) -> bool {
        self.sync.mode == SyncMode::Quorum
    }

    fn log(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:>7} {line}", self.now));
    }

    /// Fails the run with the seed, the state and the recent history.
    fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "seed {} ({:?}): t={}ms: {what}\nsync key: {:?}\nacked: {:?}\ntimelines: {:?}\nnodes:\n{}\ntrace (last {} lines):\n{}",
            self.seed,
            self.sync,
            self.now,
            self.dcs.sync,
            self.acked,
            self.timelines.parent,
            self.nodes
                .iter()
                .map(|n| format!("  {} {:?} following {:?}", n.name, n.pg, n.following))
                .collect::<Vec<_>>()
                .join("\n"),
            trace.len(),
            trace.join("\n")
        )
    }

    fn cluster(&self) -> Cluster {
        let mut kvs = Vec::new();
        if let Some((l, exp)) = &self.dcs.leader {
            if *exp > self.now {
                kvs.push(kv("leader", l));
            }
        }
        if let Some(i) = &self.dcs.initialize {
            kvs.push(kv("initialize", i));
        }
        kvs.push(kv(
            "status",
            &format!(r#"{{"optime":{}}}"#, self.dcs.optime),
        ));
        if let Some(f) = &self.dcs.failsafe {
            kvs.push(kv("failsafe", f));
        }
        if let Some(c) = &self.dcs.config {
            kvs.push(kv("config", c));
        }
        for (key, slot) in [("sync", &self.dcs.sync), ("failover", &self.dcs.failover)] {
            if let Some((value, version)) = slot {
                kvs.push(KeyValue {
                    mod_revision: *version,
                    ..kv(key, value)
                });
            }
        }
        for (name, (exp, json)) in &self.dcs.members {
            if *exp > self.now {
                kvs.push(kv(&format!("members/{name}"), json));
            }
        }
        Cluster::from_kvs(&kvs)
    }

    fn reachable(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.alive && n.frozen_until <= self.now
    }

    /// Node `i` reaches the DCS.
    fn dcs_ok(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.partitioned_until <= self.now
            && n.isolated_until <= self.now
            && self.dcs_down_until <= self.now
    }

    /// REST calls from node `from` reach node `to`'s host (its agent may still not
    /// answer: see [`World::reachable`]).
    fn rest_ok(&self, from: usize, to: usize) -> bool {
        let cut = self.rest_cut.get(&(from.min(to), from.max(to)));
        self.nodes[from].isolated_until <= self.now
            && self.nodes[to].isolated_until <= self.now
            && cut.is_none_or(|&until| until <= self.now)
    }

    /// PostgreSQL on node `i` runs but is frozen: it answers, commits and streams nothing.
    fn pg_frozen(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.pg.running && n.pg_frozen_until > self.now
    }

    /// A running primary that can commit now or once it thaws: everything but an
    /// instance the fence guard is already killing.
    fn writable(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.pg.running && n.pg.primary && n.pg_doomed_at.is_none()
    }

    fn lease_valid_for(&self, name: &str) -> bool {
        matches!(&self.dcs.leader, Some((l, exp)) if l == name && *exp > self.now)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `GET /patroni` of `name` from node `from`: an agent whose PostgreSQL does not
    /// answer reports no WAL position, so it does not count (the adversarial choice: a
    /// frozen primary is then no "Primary still alive" to the racers).
    fn probe(&self, from: usize, name: &str) -> PeerStatus {
        let i = self.index(name).unwrap_or(0);
        let n = &self.nodes[i];
        PeerStatus {
            name: name.to_string(),
            reachable: self.reachable(i)
                && self.rest_ok(from, i)
                && n.pg.running
                && !self.pg_frozen(i),
            is_primary: n.pg.running && n.pg.primary,
            wal_position: if n.pg.primary { 0 } else { n.pg.wal },
            nofailover: false,
            failover_priority: 1,
            watchdog_failed: false,
        }
    }

    /// The node replica `j` streams from right now: both running, the connection up,
    /// and `j`'s WAL a prefix of the upstream's (else PostgreSQL refuses to stream).
    fn upstream(&self, j: usize) -> Option<usize> {
        let n = &self.nodes[j];
        if !n.pg.running || n.pg.primary || n.link_down_until > self.now || self.pg_frozen(j) {
            return None;
        }
        let u = self.index(n.following.as_deref()?)?;
        let up = &self.nodes[u].pg;
        // An isolated host streams nothing either.
        let isolated = n.isolated_until > self.now || self.nodes[u].isolated_until > self.now;
        (u != j
            && up.running
            && !self.pg_frozen(u)
            && !isolated
            && self.timelines.is_prefix(&n.pg, up))
        .then_some(u)
    }

    /// `pg_stat_replication` of node `p` as PostgreSQL reports it for its
    /// `synchronous_standby_names`: listed standbys by list position, the first `num`
    /// of them `sync`, the others `potential` (`quorum` for `ANY`), unlisted `async`.
    fn walsenders(&self, p: usize) -> Vec<StandbyConn> {
        let names = StandbyNames::parse(&self.nodes[p].pg.ssn);
        let priority = |name: &str| {
            names
                .names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
        };
        let mut rows: Vec<(Option<usize>, StandbyConn)> = (0..self.nodes.len())
            .filter(|&j| self.upstream(j) == Some(p))
            .map(|j| {
                let n = &self.nodes[j];
                let lsn = Some(n.pg.wal);
                (
                    priority(&n.name),
                    StandbyConn {
                        application_name: n.name.clone(),
                        sync_state: "async".into(),
                        write_lsn: lsn,
                        flush_lsn: lsn,
                        replay_lsn: lsn,
                    },
                )
            })
            .collect();
        rows.sort_by_key(|(prio, _)| prio.unwrap_or(usize::MAX));
        let mut chosen = 0;
        for (prio, row) in &mut rows {
            if prio.is_none() {
                continue;
            }
            row.sync_state = if names.quorum {
                "quorum"
            } else if chosen < names.num {
                chosen += 1;
                "sync"
            } else {
                "potential"
            }
            .into();
        }
        rows.into_iter().map(|(_, row)| row).collect()
    }

    /// Up to where PostgreSQL on `p` releases waiting commits, and whether that is a
    /// synchronous acknowledgement (`false`: nobody is required, commits are async).
    fn releasable(&self, p: usize) -> Option<(u64, bool)> {
        let names = StandbyNames::parse(&self.nodes[p].pg.ssn);
        if names.names.is_empty() || names.num == 0 {
            return Some((u64::MAX, false));
        }
        let mut flushed: Vec<u64> = self
            .walsenders(p)
            .iter()
            .filter(|r| r.sync_state == "sync" || r.sync_state == "quorum")
            .filter_map(|r| r.flush_lsn)
            .collect();
        if flushed.len() < names.num {
            return None;
        }
        // FIRST: every chosen standby; ANY: the num-th best of the listed ones.
        flushed.sort_unstable_by(|a, b| b.cmp(a));
        Some((flushed[names.num - 1], true))
    }

    /// What the agent sees of its PostgreSQL, as node.rs's `observe`: a frozen instance
    /// answers no query, so the agent reports what it last said (nothing after a
    /// restart) and for how long it has not answered, counted from the first question
    /// that got no answer.
    fn observe(&mut self, i: usize) -> LocalPg {
        let frozen = self.pg_frozen(i);
        let n = &self.nodes[i];
        let data_dir = if n.pg.initialized {
            DataDir::Valid {
                sysid: SYSID.into(),
            }
        } else {
            DataDir::Empty
        };
        if frozen {
            let since = *self.nodes[i].pg_unanswered_since.get_or_insert(self.now);
            let n = &self.nodes[i];
            // Silent since the agent started: as node.rs, pg_control tells whether it
            // runs as a primary ("in production").
            let last = n.last_answer.clone().unwrap_or_else(|| LocalPg {
                is_primary: n.pg.primary,
                ..LocalPg::default()
            });
            return LocalPg {
                data_dir,
                running: true,
                following: n.following.clone(),
                unresponsive_ms: self.now - since,
                remote: n.remote.clone(),
                standby_leader: n.standby_leader,
                ..last
            };
        }
        let is_primary = n.pg.running && n.pg.primary;
        let local = LocalPg {
            data_dir,
            running: n.pg.running,
            is_primary,
            timeline: Some(n.pg.timeline),
            wal_position: n.pg.wal,
            was_primary: !n.pg.running && n.pg.primary,
            following: n.following.clone(),
            streaming: self.upstream(i).is_some(),
            standbys: if is_primary {
                self.walsenders(i)
            } else {
                vec![]
            },
            synchronous_standby_names: if n.pg.running {
                n.pg.ssn.clone()
            } else {
                String::new()
            },
            synchronous_commit: "on".into(),
            unresponsive_ms: 0,
            remote: n.remote.clone(),
            standby_leader: n.standby_leader,
        };
        let n = &mut self.nodes[i];
        n.pg_unanswered_since = None;
        n.last_answer = n.pg.running.then(|| local.clone());
        local
    }

    /// `POST /failsafe` from node `i` to `peers` (in parallel, as node.rs's
    /// `ask_failsafe_members`): did every one accept? A member accepts when its agent
    /// answers over REST from `i` and its published status is not a running primary
    /// (management.rs); it then remembers `i` as the failsafe leader.
    fn ask_failsafe_members(&mut self, i: usize, peers: &[(String, String)]) -> bool {
        let me = self.nodes[i].name.clone();
        self.nodes[i].failsafe_asked_at = self.now;
        let mut acked = Vec::new();
        for (name, _) in peers {
            let Some(j) = self.index(name) else { continue };
            if self.reachable(j) && self.rest_ok(i, j) && !self.nodes[j].status_primary {
                self.nodes[j].failsafe_ping = Some((me.clone(), self.now));
                acked.push(name.clone());
            }
        }
        let all = acked.len() == peers.len();
        if all {
            self.nodes[i].failsafe_acked = Some((self.now, acked));
        }
        self.log(format!(
            "{me}: POST /failsafe to {peers:?}: all accepted: {all}"
        ));
        all
    }

    /// One HA cycle of node i.
    fn cycle(&mut self, i: usize) {
        let partitioned = !self.dcs_ok(i);
        let cluster = (!partitioned).then(|| self.cluster());
        let (now, ttl) = (self.now, self.ttl_ms);
        let n = &mut self.nodes[i];
        if let Some(c) = &cluster {
            if c.leader_name() != Some(n.name.as_str()) {
                n.memory.leader_until_ms = None;
            }
            // As node.rs: the failsafe topology as last read, kept across outages.
            n.memory.failsafe_topology = c.failsafe.as_ref().map(|f| {
                f.iter()
                    .filter_map(|(name, url)| Some((name.clone(), url.as_str()?.to_string())))
                    .collect()
            });
        }
        n.memory.failsafe_leader = n
            .failsafe_ping
            .as_ref()
            .filter(|(_, at)| now < at + ttl)
            .map(|(name, _)| name.clone());
        let local = self.observe(i);
        let is_primary = local.is_primary;
        let n = &self.nodes[i];
        let settings = HaSettings {
            ttl: self.ttl_ms / 1000,
            loop_wait: self.loop_ms / 1000,
            // The simulated DCS answers or fails at once: the next decision comes a
            // loop (plus jitter) later, never a retry_timeout.
            retry_timeout: 0,
            can_rewind: true,
            sync: self.sync.clone(),
            failsafe_mode: self.failsafe,
            standby_cluster: self.standby_config(),
            ..HaSettings::default()
        };
        let mut answers = Answers::default();
        let me = n.name.clone();
        let memory = n.memory.clone();
        let decision = loop {
            let input = HaInput {
                me: &me,
                cluster: cluster.as_ref(),
                pg: &local,
                settings: &settings,
                memory: &memory,
                answers: &answers,
                now_ms: self.now,
                now_epoch_ms: self.now as i64,
            };
            match decide(&input) {
                Step::Act(d) => break d,
                Step::Ask(q) => {
                    assert!(!answers.is_answered(&q), "asked twice: {q:?}");
                    match q {
                        Question::RaceInitialize => {
                            let won = !partitioned && self.dcs.initialize.is_none();
                            if won {
                                self.dcs.initialize = Some(String::new());
                            }
                            answers.initialize_race = Some(won);
                        }
                        Question::AcquireLeader => {
                            let free = match &self.dcs.leader {
                                None => true,
                                Some((_, exp)) => *exp <= self.now,
                            };
                            let won = !partitioned && free;
                            if won {
                                self.dcs.leader = Some((me.clone(), self.now + self.ttl_ms));
                                self.nodes[i].memory.leader_until_ms = Some(self.now + self.ttl_ms);
                            }
                            answers.acquire = Some(won);
                        }
                        Question::UpdateLeader => {
                            answers.update = Some(if partitioned {
                                LockUpdate::DcsError
                            } else if self.lease_valid_for(&me) {
                                self.dcs.leader = Some((me.clone(), self.now + self.ttl_ms));
                                self.nodes[i].memory.leader_until_ms = Some(self.now + self.ttl_ms);
                                LockUpdate::Renewed
                            } else {
                                self.nodes[i].memory.leader_until_ms = None;
                                LockUpdate::Lost
                            });
                        }
                        Question::ProbeMembers(names) => {
                            answers.probes = Some(names.iter().map(|n| self.probe(i, n)).collect());
                        }
                        Question::FailsafeAcks(peers) => {
                            answers.failsafe_acks = Some(self.ask_failsafe_members(i, &peers));
                        }
                        Question::CheckDivergence { leader } => {
                            // The truth, from the WAL histories (the agent's check is a
                            // conservative approximation of it).
                            let mine = &self.nodes[i].pg;
                            answers.divergence =
                                Some(match self.index(&leader).map(|l| &self.nodes[l].pg) {
                                    Some(l) if l.initialized => {
                                        if self.timelines.is_prefix(mine, l) {
                                            Divergence::NotDiverged
                                        } else {
                                            Divergence::Diverged
                                        }
                                    }
                                    _ => Divergence::Unknown,
                                });
                        }
                    }
                }
            }
        };
        let busy = decision
            .actions
            .iter()
            .any(|a| !matches!(a, Action::LeaderHousekeeping | Action::ActivateWatchdog));
        if busy {
            self.log(format!(
                "{me} [{}]: {} {:?}",
                if partitioned { "partitioned" } else { "" },
                decision.reason,
                decision.actions
            ));
        }
        if settings.standby_cluster.is_some()
            && decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::Promote | Action::Bootstrap))
        {
            self.fail(format!(
                "{me} promotes or bootstraps a primary in a standby cluster: {}",
                decision.reason
            ));
        }
        for a in decision.actions {
            if let Action::Exit { message } = &a {
                self.fail(format!(
                    "node {me} exited: {message} (reason: {})",
                    decision.reason
                ));
            }
            // A failed action stops the ones after it, as in the agent.
            if !self.execute(i, a, partitioned, is_primary) {
                self.log(format!("{me}: action failed, the rest skipped"));
                break;
            }
        }
        let n = &mut self.nodes[i];
        n.guard_deadline = n.memory.leader_until_ms.unwrap_or(0);
        n.memory.first_cycle = false;
        n.memory.was_running = n.pg.running;
        n.status_primary = n.pg.running && n.pg.primary && n.pg_unanswered_since.is_none();
        if !partitioned {
            let role = if n.pg.running && n.pg.primary {
                "primary"
            } else if n.pg.running && n.standby_leader {
                "standby_leader"
            } else {
                "replica"
            };
            let json = format!(
                r#"{{"conn_url":"postgres://{me}:5432/postgres","api_url":"http://{me}:8008/patroni","state":"{}","role":"{role}","version":"4.1.5","xlog_location":{},"timeline":{}}}"#,
                if n.pg.running { "running" } else { "stopped" },
                n.pg.wal,
                n.pg.timeline
            );
            self.dcs.members.insert(me, (self.now + self.ttl_ms, json));
        }
    }

    fn leader_node(&self) -> Option<usize> {
        let (l, _) = self.dcs.leader.as_ref().filter(|(_, e)| *e > self.now)?;
        self.index(l)
    }

    /// PostgreSQL starts with the postgresql.conf the agent writes at every start:
    /// `synchronous_standby_names` as synchronous mode last set it in this agent's life,
    /// else the configuration's own (empty).
    fn start_pg(&mut self, i: usize, primary: bool) {
        let n = &mut self.nodes[i];
        n.pg.running = true;
        n.pg.primary = primary;
        n.pg_frozen_until = 0;
        n.pg_doomed_at = None;
        n.pg.ssn = n.managed_ssn.clone().unwrap_or_default();
    }

    /// A compare-and-set of the `sync` key; `value` None deletes it.
    fn cas_sync(&mut self, value: Option<String>, version: Option<i64>) -> bool {
        if !cas(&mut self.dcs.sync, &mut self.dcs.revision, value, version) {
            return false;
        }
        // Track who is named from now on; a name that stays keeps its history. Quorum
        // voters promise no such thing (see `check_quorum_overlap`).
        let named: Vec<String> = self
            .cluster()
            .sync
            .filter(|_| !self.quorum())
            .map(|s| s.sync_standby)
            .unwrap_or_default();
        self.acked_since_named.retain(|n, _| named.contains(n));
        for n in named {
            self.acked_since_named.entry(n).or_default();
        }
        true
    }

    /// SIGKILL of every process of node i's PostgreSQL: a frozen instance is gone for
    /// good and the agent has nothing left to remember of it.
    fn kill_instance(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.pg.running = false;
        n.pg_frozen_until = 0;
        n.pg_doomed_at = None;
        n.pg_unanswered_since = None;
        n.last_answer = None;
    }

    /// Executes one action like the agent; false when it failed.
    fn execute(&mut self, i: usize, a: Action, partitioned: bool, was_primary: bool) -> bool {
        let me = self.nodes[i].name.clone();
        // A frozen PostgreSQL ignores every command but SIGKILL: stopping, promoting,
        // reloading or querying it times out, and the action fails.
        let needs_pg = matches!(
            a,
            Action::Demote { .. }
                | Action::Promote
                | Action::Rewind { .. }
                | Action::RemoveDataDir
                | Action::Follow { .. }
                | Action::SetStandbyNames { .. }
                | Action::StartPrimary
                | Action::StartReplica { .. }
                | Action::CloneFrom { .. }
                | Action::FollowRemote { .. }
                | Action::DemoteToStandby { .. }
        );
        if needs_pg && self.pg_frozen(i) {
            if !matches!(a, Action::Demote { .. } | Action::DemoteToStandby { .. }) {
                return false;
            }
            // As node.rs: a demotion of a PostgreSQL that does not answer kills it for
            // good instead of asking it to shut down.
            self.kill_instance(i);
        }
        // As node.rs: PostgreSQL no longer follows the remote site (or runs as the
        // standby leader) once it follows a member, promotes, stops or is rebuilt.
        let was_standby_leader = self.nodes[i].standby_leader;
        if matches!(
            a,
            Action::Bootstrap
                | Action::CloneFrom { .. }
                | Action::StartPrimary
                | Action::StartReplica { .. }
                | Action::Follow { .. }
                | Action::Promote
                | Action::Demote { .. }
                | Action::Rewind { .. }
                | Action::RemoveDataDir
                | Action::KillPostgres
                | Action::AbandonLeader
        ) {
            let n = &mut self.nodes[i];
            n.remote = None;
            n.standby_leader = false;
        }
        match a {
            Action::Bootstrap => {
                self.nodes[i].pg = Pg {
                    initialized: true,
                    timeline: 1,
                    wal: 1,
                    ..Pg::default()
                };
                self.start_pg(i, true);
                self.dcs.initialize = Some(SYSID.into());
                self.dcs.config = Some(r#"{"ttl":30}"#.into());
                self.dcs.leader = Some((me, self.now + self.ttl_ms));
                self.nodes[i].memory.leader_until_ms = Some(self.now + self.ttl_ms);
            }
            Action::BootstrapStandbyLeader { source, .. } => {
                // A base backup of the remote site, then the cluster is published with
                // this node as its standby leader (node.rs: failing exits the agent).
                let Some(src) = self.remote.as_ref().map(|r| r.pg.clone()) else {
                    self.fail(format!("{me}: standby bootstrap without a remote site"));
                };
                if !src.running {
                    return false;
                }
                self.nodes[i].pg = Pg {
                    initialized: true,
                    timeline: src.timeline,
                    wal: src.wal,
                    ..Pg::default()
                };
                self.start_pg(i, false);
                self.dcs.initialize = Some(SYSID.into());
                self.dcs.config = Some(r#"{"ttl":30}"#.into());
                self.dcs.leader = Some((me, self.now + self.ttl_ms));
                self.stats.standby_leaders += 1;
                let n = &mut self.nodes[i];
                n.memory.leader_until_ms = Some(self.now + self.ttl_ms);
                n.following = Some(REMOTE.into());
                n.remote = Some(source);
                n.standby_leader = true;
            }
            Action::FollowRemote {
                source,
                standby_leader,
            } => {
                if !self.nodes[i].pg.running {
                    self.start_pg(i, false);
                }
                if standby_leader && !was_standby_leader {
                    self.stats.standby_leaders += 1;
                }
                let n = &mut self.nodes[i];
                n.following = Some(REMOTE.into());
                n.remote = Some(source);
                n.standby_leader = standby_leader;
            }
            Action::DemoteToStandby { source } => {
                // Fast stop (the connected standbys, the remote site too, get the
                // shutdown checkpoint), keep the lock, start following the remote site.
                self.fast_shutdown(i);
                self.nodes[i].pg.running = false;
                self.stats.cluster_demotions += 1;
                if !partitioned {
                    if self.lease_valid_for(&me) {
                        self.dcs.leader = Some((me, self.now + self.ttl_ms));
                        self.nodes[i].memory.leader_until_ms = Some(self.now + self.ttl_ms);
                    } else {
                        self.nodes[i].memory.leader_until_ms = None;
                    }
                }
                self.start_pg(i, false);
                let n = &mut self.nodes[i];
                n.following = Some(REMOTE.into());
                n.remote = Some(source);
                n.standby_leader = true;
            }
            Action::WriteConfig => {
                if partitioned {
                    return false;
                }
                self.dcs
                    .config
                    .get_or_insert_with(|| r#"{"ttl":30}"#.into());
            }
            // The simulated nodes configure no replica methods, so every clone has a
            // source (the decision offers a source-less one only to `no_leader`
            // methods), and it completes within the step.
            Action::CloneFrom { source, follow, .. } => {
                let src = source
                    .and_then(|s| self.index(&s))
                    .map(|s| self.nodes[s].pg.clone());
                if let Some(src) = src.filter(|p| p.running) {
                    self.nodes[i].pg = Pg {
                        initialized: true,
                        timeline: src.timeline,
                        wal: src.wal,
                        ..Pg::default()
                    };
                    self.start_pg(i, false);
                    self.nodes[i].following = follow;
                }
            }
            // Bootstrap above completes within the step and never leaves a bootstrap
            // in progress, so the later phases are not reached here.
            Action::PostBootstrap | Action::FinishBootstrap | Action::CancelBootstrap => self.fail(
                format!("{me}: unexpected {a:?}: bootstrap is modelled as one step"),
            ),
            Action::StartPrimary => self.start_pg(i, true),
            Action::StartReplica { upstream } => {
                self.start_pg(i, false);
                self.nodes[i].following = upstream;
            }
            Action::Follow { upstream } => self.nodes[i].following = Some(upstream),
            Action::Promote => {
                self.stats.cluster_promotions += u32::from(was_standby_leader);
                self.max_tl += 1;
                let tl = self.max_tl;
                let n = &mut self.nodes[i];
                self.timelines.parent.insert(tl, (n.pg.timeline, n.pg.wal));
                n.pg.primary = true;
                n.pg.timeline = tl;
                n.following = None;
                self.stats.promotions += 1;
                // Checked here too (not only at the end of the step) so the failure
                // names the promotion itself.
                if let Some((tl, lsn)) = self.timelines.missing(&self.nodes[i].pg, &self.acked) {
                    self.fail(format!(
                        "{me} promoted without the commit acknowledged synchronously at {lsn} on timeline {tl}"
                    ));
                }
            }
            Action::Demote { mode } => {
                if matches!(mode, DemoteMode::Offline | DemoteMode::Graceful) {
                    self.fast_shutdown(i);
                }
                self.stats.switchovers += u32::from(mode == DemoteMode::Graceful);
                let n = &mut self.nodes[i];
                n.pg.running = false;
                n.memory.leader_until_ms = None;
                n.following = None;
                if matches!(mode, DemoteMode::Immediate | DemoteMode::Graceful)
                    && !partitioned
                    && matches!(&self.dcs.leader, Some((l, _)) if *l == me)
                {
                    self.dcs.leader = None;
                }
                if matches!(mode, DemoteMode::Offline | DemoteMode::Graceful) {
                    self.start_pg(i, false);
                }
            }
            Action::Rewind { source } => {
                // pg_rewind copies what differs from a running source: afterwards this
                // node's WAL is the source's.
                let src = self.index(&source).map(|s| self.nodes[s].pg.clone());
                let Some(src) = src.filter(|p| p.running) else {
                    return false;
                };
                let n = &mut self.nodes[i];
                n.pg.running = false;
                n.pg.primary = false;
                n.pg.timeline = src.timeline;
                n.pg.wal = src.wal;
            }
            Action::RemoveDataDir => self.nodes[i].pg = Pg::default(),
            Action::WriteSync { write, .. } => {
                // A chained write compares against the write just before it in this
                // batch (a failed write ends the batch, and nobody else acts meanwhile,
                // so that is the key's current version).
                let version = if write.chained {
                    self.dcs.sync.as_ref().map(|(_, v)| *v)
                } else {
                    write.version
                };
                if partitioned || !self.cas_sync(Some(write.to_json()), version) {
                    return false;
                }
                self.log(format!("{me}: sync key = {}", write.to_json()));
            }
            Action::DeleteSync { version } => {
                if partitioned || !self.cas_sync(None, Some(version)) {
                    return false;
                }
                self.log(format!("{me}: sync key deleted"));
            }
            Action::SetStandbyNames { value, .. } => {
                let n = &mut self.nodes[i];
                n.managed_ssn = value.clone();
                if n.pg.running {
                    n.pg.ssn = value.unwrap_or_default();
                    if was_primary {
                        // A standby confirms the change only with WAL written after it:
                        // the agent notes where it starts and writes a little (an async
                        // commit, nobody waits for it).
                        n.memory.standby_names_changed_at_lsn = Some(n.pg.wal);
                        n.pg.wal += 1;
                    }
                }
                n.memory.standby_names_are_mine = n.managed_ssn.is_some();
            }
            // The simulated nodes have no watchdog (mode off).
            Action::Warn { .. } | Action::RecheckSoon | Action::ActivateWatchdog => {}
            Action::PostponeRace { started_ms, .. } => {
                self.nodes[i].memory.race_backoff_started_ms = Some(started_ms);
            }
            Action::ReleaseLeader | Action::AbandonLeader => {
                if !partitioned && matches!(&self.dcs.leader, Some((l, _)) if *l == me) {
                    self.dcs.leader = None;
                }
                self.nodes[i].memory.leader_until_ms = None;
            }
            Action::KillPostgres => {
                // SIGKILL of every process: a frozen instance is gone for good.
                self.stats.frozen_kills += 1;
                self.kill_instance(i);
                let n = &mut self.nodes[i];
                n.following = None;
                n.memory.primary_given_up_at_ms = Some(self.now);
            }
            Action::WriteFailsafe { value } => {
                if partitioned {
                    return false;
                }
                // As node.rs: what the leader wrote is its topology from now on.
                if !self.stale_topology_after_write {
                    self.nodes[i].memory.failsafe_topology = serde_json::from_str(&value).ok();
                }
                self.dcs.failsafe = Some(value);
            }
            Action::FailsafeContinue => {
                // As node.rs: the members acknowledged me after I asked, so none of them
                // races for the lock within ttl of that moment; the fence deadline runs
                // from there.
                if !self.lease_valid_for(&me) {
                    self.stats.failsafe_beyond_lease += 1;
                }
                let n = &mut self.nodes[i];
                n.memory.leader_until_ms = Some(n.failsafe_asked_at + self.ttl_ms);
            }
            Action::LeaderHousekeeping => {
                if !partitioned {
                    self.dcs.optime = self.nodes[i].pg.wal;
                }
            }
            Action::WriteInitialize { sysid } => {
                if !partitioned {
                    self.dcs.initialize = Some(sysid);
                }
            }
            Action::ClearFailover { version } => {
                let dcs = &mut self.dcs;
                if partitioned
                    || !cas(
                        &mut dcs.failover,
                        &mut dcs.revision,
                        Some("{}".into()),
                        Some(version),
                    )
                {
                    return false;
                }
            }
            Action::WaitUntil { .. } | Action::Exit { .. } => {}
        }
        true
    }

    /// A fast shutdown of primary `i`: it writes the shutdown checkpoint and its
    /// walsenders send everything to the standbys connected to it before they exit.
    fn fast_shutdown(&mut self, i: usize) {
        if !(self.nodes[i].pg.running && self.nodes[i].pg.primary) {
            return;
        }
        self.nodes[i].pg.wal += 1;
        let (tl, wal) = (self.nodes[i].pg.timeline, self.nodes[i].pg.wal);
        for j in 0..self.nodes.len() {
            if self.upstream(j) == Some(i) {
                self.nodes[j].pg.timeline = tl;
                self.nodes[j].pg.wal = wal;
            }
        }
        self.track_remote(i);
    }

    /// Replication, writes, commit acknowledgements and the fence guards, every 100 ms
    /// of virtual time.
    fn tick(&mut self) {
        // The external fence guard: a primary whose published lock deadline is within
        // the margin stops. It runs even for frozen or crashed agents. A frozen
        // PostgreSQL does not act on the SIGQUIT until it thaws, so the guard SIGKILLs
        // it 2 s later (supervisor.rs); meanwhile it is doomed and commits nothing.
        let now = self.now;
        for n in &mut self.nodes {
            let frozen = n.pg.running && n.pg_frozen_until > now;
            if n.pg.running
                && n.pg.primary
                && n.guard_deadline > 0
                && now + self.fence_margin >= n.guard_deadline
            {
                if frozen {
                    n.pg_doomed_at.get_or_insert(now + 2_000);
                } else {
                    n.pg.running = false;
                }
            }
            if n.pg_doomed_at.is_some_and(|at| at <= now || !frozen) {
                n.pg.running = false;
                n.pg_doomed_at = None;
            }
        }
        // Clients commit on every running primary that is not frozen (a frozen one keeps
        // its waiting clients); a stopped or demoted one dropped the connections of
        // those still waiting.
        for n in &mut self.nodes {
            if n.pg.running && n.pg.primary && n.pg_frozen_until > now {
                continue;
            }
            if n.pg.running && n.pg.primary {
                n.pg.wal += 1;
                n.pg.waiting.push_back(n.pg.wal);
            } else {
                n.pg.waiting.clear();
            }
        }
        self.remote_site();
        self.stream();
        for p in 0..self.nodes.len() {
            self.acknowledge(p);
        }
    }

    /// A remote site rebuilt from this cluster (`demote-cluster`) receives the WAL of
    /// primary `p`.
    fn track_remote(&mut self, p: usize) {
        let pg = self.nodes[p].pg.clone();
        let Some(r) = self.remote.as_mut().filter(|r| r.tracking) else {
            return;
        };
        if self.timelines.is_prefix(&r.pg, &pg) {
            r.pg.timeline = pg.timeline;
            r.pg.wal = pg.wal;
        }
    }

    /// The remote site: a primary writes; after `demote-cluster` it replicates from the
    /// cluster's primary and promotes once nothing in the cluster can write any more.
    fn remote_site(&mut self) {
        let writable = (0..self.nodes.len()).find(|&i| self.writable(i));
        let Some(r) = &mut self.remote else {
            return;
        };
        if r.pg.running && r.pg.primary {
            r.pg.wal += 1;
        }
        if !r.tracking {
            return;
        }
        if let Some(p) = writable {
            return self.track_remote(p);
        }
        self.max_tl += 1;
        let tl = self.max_tl;
        self.timelines.parent.insert(tl, (r.pg.timeline, r.pg.wal));
        r.pg.timeline = tl;
        r.pg.primary = true;
        r.tracking = false;
        self.log(format!("the remote site promotes (timeline {tl})"));
    }

    /// `promote-cluster` (the remote site stops first, then the cluster loses its
    /// `standby_cluster` section) or `demote-cluster` (the section comes back; the remote
    /// site is rebuilt from the primary and follows it until it can take over).
    fn flip_cluster(&mut self) {
        let writable = (0..self.nodes.len()).find(|&i| self.writable(i));
        let primary = writable.map(|p| self.nodes[p].pg.clone());
        let Some(r) = &mut self.remote else {
            return;
        };
        if r.configured {
            r.configured = false;
            r.pg.running = false;
            self.log("promote-cluster: the remote site stopped".into());
        } else if let Some(pg) = primary {
            r.configured = true;
            r.tracking = true;
            r.pg = Pg {
                primary: false,
                waiting: VecDeque::new(),
                ..pg
            };
            self.log("demote-cluster".into());
        }
    }

    /// Streaming: a replica whose WAL is a prefix of its running upstream's receives
    /// (and flushes) the rest, at once in asynchronous runs, else with seeded lag.
    fn stream(&mut self) {
        let moves: Vec<(usize, u32, u64)> = (0..self.nodes.len())
            .filter_map(|j| {
                let u = self.upstream(j)?;
                Some((j, self.nodes[u].pg.timeline, self.nodes[u].pg.wal))
            })
            .collect();
        let remote_moves: Vec<(usize, u32, u64)> = (0..self.nodes.len())
            .filter(|&j| self.streams_from_remote(j))
            .filter_map(|j| {
                let r = &self.remote.as_ref()?.pg;
                Some((j, r.timeline, r.wal))
            })
            .collect();
        for (j, tl, end) in moves.into_iter().chain(remote_moves) {
            let from = self.nodes[j].pg.wal;
            let to = if self.sync_on() && self.net.below(4) == 0 {
                from + self.net.below(end.saturating_sub(from) + 1)
            } else {
                end
            };
            let n = &mut self.nodes[j];
            n.pg.wal = n.pg.wal.max(to);
            n.pg.timeline = tl;
        }
    }

    /// PostgreSQL on `p` acknowledges the waiting commits its synchronous standbys
    /// (if any are required) have flushed.
    fn acknowledge(&mut self, p: usize) {
        if self.nodes[p].pg.waiting.is_empty() || self.pg_frozen(p) {
            return;
        }
        let Some((upto, synchronous)) = self.releasable(p) else {
            return;
        };
        let tl = self.nodes[p].pg.timeline;
        let waiting = &mut self.nodes[p].pg.waiting;
        let mut released = 0;
        let mut last = 0;
        while waiting.front().is_some_and(|&l| l <= upto) {
            last = waiting.pop_front().unwrap_or(0);
            released += 1;
        }
        if released == 0 {
            return;
        }
        if !synchronous {
            // Strict mode was in force on this timeline once a commit was acknowledged
            // synchronously on it; before that, enabling synchronous mode legitimately
            // writes the key a cycle before the standby names.
            if self.sync.strict && self.acked.contains_key(&tl) {
                self.stats.strict_async_acks += released;
            }
            return;
        }
        self.stats.sync_acks += released;
        let max = self.acked.entry(tl).or_default();
        *max = (*max).max(last);
        for since in self.acked_since_named.values_mut() {
            let max = since.entry(tl).or_default();
            *max = (*max).max(last);
        }
    }

    fn check_invariants(&self) {
        let writable: Vec<&Node> = (0..self.nodes.len())
            .filter(|&i| self.writable(i))
            .map(|i| &self.nodes[i])
            .collect();
        if writable.len() > 1 {
            self.fail(format!(
                "two writable primaries: {:?}",
                writable.iter().map(|n| &n.name).collect::<Vec<_>>()
            ));
        }
        for n in writable {
            if !self.lease_valid_for(&n.name) && !self.failsafe_covers(n) {
                self.fail(format!(
                    "{} accepts writes without a valid lease (dcs leader {:?}) or failsafe window (acks {:?})",
                    n.name, self.dcs.leader, n.failsafe_acked
                ));
            }
            if let Some((tl, lsn)) = self.timelines.missing(&n.pg, &self.acked) {
                self.fail(format!(
                    "writable primary {} lacks the commit acknowledged synchronously at {lsn} on timeline {tl}",
                    n.name
                ));
            }
        }
        self.check_quorum_overlap();
        for (name, since) in &self.acked_since_named {
            let Some(i) = self.index(name) else { continue };
            if let Some((tl, lsn)) = self.timelines.missing(&self.nodes[i].pg, since) {
                self.fail(format!(
                    "{name} is named sync_standby but lacks the commit acknowledged synchronously at {lsn} on timeline {tl} since it was named"
                ));
            }
        }
    }

    /// Is primary `p` within a failsafe window? Exactly: its last round of
    /// `POST /failsafe` in which every member it asked accepted was asked at `t` with
    /// now < t + ttl, and every other node that may take over accepted in that round —
    /// every node when the DCS `failsafe` key is absent or empty, else every node named
    /// in it. Why that keeps `p` the only primary: each node that accepted did so at or
    /// after `t` and treats `p` as the leader (does not race) until its acceptance +
    /// ttl, and a node missing from a non-empty `failsafe` key never takes over; so
    /// nobody can take the lock and promote before t + ttl, when `p`'s fence deadline
    /// stops it. (A node that restarts forgets its acceptance: then the two-primaries
    /// invariant is the one that fails.)
    fn failsafe_covers(&self, p: &Node) -> bool {
        let Some((asked, acked)) = &p.failsafe_acked else {
            return false;
        };
        if self.now >= asked + self.ttl_ms {
            return false;
        }
        let key = self.cluster().failsafe.filter(|k| !k.is_empty());
        self.nodes.iter().all(|n| {
            n.name == p.name
                || acked.contains(&n.name)
                || key.as_ref().is_some_and(|k| !k.contains_key(&n.name))
        })
    }

    /// Quorum commit: the leader race lets a node promote once `quorum` members of the
    /// `sync` key's set (leader and voters; one more if it is not in the set) are not
    /// ahead of it, which is safe only if at most `quorum` of them lack an acknowledged
    /// commit. Checked whatever the key's leader is doing, as the race may start at any
    /// moment.
    fn check_quorum_overlap(&self) {
        let Some(sync) = self.cluster().sync.filter(|_| self.check_overlap) else {
            return;
        };
        let lacking: Vec<String> = sync
            .leader
            .iter()
            .chain(sync.sync_standby.iter())
            .filter(|name| {
                let pg = self.index(name).map(|i| &self.nodes[i].pg);
                pg.is_none_or(|pg| self.timelines.missing(pg, &self.acked).is_some())
            })
            .cloned()
            .collect();
        if lacking.len() > sync.quorum as usize {
            self.fail(format!(
                "{lacking:?} of the sync set lack a commit acknowledged synchronously, more than quorum {}",
                sync.quorum
            ));
        }
    }

    /// The agent and PostgreSQL of node `i` crash; the agent restarts 5–30 s later.
    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.alive = false;
        n.pg.running = false;
        n.next_cycle = self.now + 5_000 + self.rng.below(25_000);
    }

    fn inject_fault(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        // Asynchronous runs draw from the original five faults, and classic synchronous
        // runs from seven, so their seeds replay the same fault sequences as before the
        // later kinds existed.
        let base = match self.sync.mode {
            _ if self.remote.is_some() => 8,
            SyncMode::Off => 5,
            SyncMode::On => 7,
            SyncMode::Quorum => 8,
        };
        let kind = self.rng.below(base + if self.more_faults { 4 } else { 0 });
        self.log(format!("fault {kind} on {}", self.nodes[i].name));
        if kind >= base {
            return self.inject_network_or_freeze_fault(i, kind - base);
        }
        match kind {
            0 => self.crash(i),
            1 => {
                // agent only killed: PostgreSQL keeps running, the external guard stays
                let n = &mut self.nodes[i];
                n.alive = false;
                n.next_cycle = self.now + 3_000 + self.rng.below(30_000);
            }
            2 => self.nodes[i].frozen_until = self.now + 5_000 + self.rng.below(40_000),
            3 => self.nodes[i].partitioned_until = self.now + 5_000 + self.rng.below(40_000),
            4 => self.nodes[i].pg.running = false, // PostgreSQL crash alone
            5 => self.nodes[i].link_down_until = self.now + 1_000 + self.rng.below(20_000),
            6 => {
                // An operator asks the leader for a switchover, to node i or to anyone
                // (the API leaves it to the decision to refuse unfit candidates).
                let Some(leader) = self.dcs.leader.as_ref().map(|(l, _)| l.clone()) else {
                    return;
                };
                let member = if self.nodes[i].name == leader {
                    String::new()
                } else {
                    format!(r#","member":"{}""#, self.nodes[i].name)
                };
                let value = format!(r#"{{"leader":"{leader}"{member}}}"#);
                cas(
                    &mut self.dcs.failover,
                    &mut self.dcs.revision,
                    Some(value),
                    None,
                );
            }
            7 if self.remote.is_some() => self.flip_cluster(),
            _ => {
                // The primary dies together with a replica (node i, or the next one when
                // i is the primary): with quorum commit, possibly the only replica that
                // holds the last acknowledged commits.
                let primary = self.nodes.iter().position(|n| n.pg.running && n.pg.primary);
                let Some(p) = primary else {
                    return self.crash(i);
                };
                let other = if i == p {
                    (i + 1) % self.nodes.len()
                } else {
                    i
                };
                self.log(format!(
                    "the primary {} crashes with {}",
                    self.nodes[p].name, self.nodes[other].name
                ));
                self.crash(p);
                self.crash(other);
            }
        }
    }

    /// The failsafe and frozen-PostgreSQL faults (runs with `more_faults`), on node `i`.
    fn inject_network_or_freeze_fault(&mut self, i: usize, kind: u64) {
        let until = self.now + 5_000 + self.rng.below(40_000);
        match kind {
            0 => {
                // PostgreSQL freezes (primary or replica), 2–40 s; it thaws by itself.
                self.nodes[i].pg_frozen_until = self.now + 2_000 + self.rng.below(38_000);
            }
            1 => {
                // The whole DCS is down; half the time a member crashes in the outage
                // (with its PostgreSQL, or the agent alone).
                self.dcs_down_until = until;
                if self.rng.below(2) == 0 {
                    let j = self.rng.below(self.nodes.len() as u64) as usize;
                    self.log(format!("DCS outage; {} crashes", self.nodes[j].name));
                    if self.rng.below(2) == 0 {
                        self.crash(j);
                    } else {
                        self.nodes[j].alive = false;
                        self.nodes[j].next_cycle = self.now + 3_000 + self.rng.below(30_000);
                    }
                }
            }
            2 => self.nodes[i].isolated_until = until,
            _ => {
                // REST between i and another member is cut (DCS and replication are not).
                let others = self.nodes.len() as u64 - 1;
                let j = (i + 1 + self.rng.below(others) as usize) % self.nodes.len();
                self.log(format!(
                    "REST cut between {} and {}",
                    self.nodes[i].name, self.nodes[j].name
                ));
                self.rest_cut.insert((i.min(j), i.max(j)), until);
            }
        }
    }

    fn step(&mut self) {
        self.now += 100;
        self.tick();
        for i in 0..self.nodes.len() {
            if self.nodes[i].next_cycle <= self.now {
                let n = &mut self.nodes[i];
                if !n.alive {
                    // Agent restarts: PostgreSQL state on disk survives.
                    n.alive = true;
                    n.memory = NodeMemory {
                        first_cycle: true,
                        ..NodeMemory::default()
                    };
                    n.following = None;
                    n.remote = None;
                    n.standby_leader = false;
                    n.managed_ssn = None;
                    n.pg_unanswered_since = None;
                    n.last_answer = None;
                    n.failsafe_ping = None;
                }
                if self.nodes[i].frozen_until > self.now {
                    continue;
                }
                self.cycle(i);
                let jitter = self.rng.below(600);
                self.nodes[i].next_cycle = self.now + self.loop_ms + jitter;
            }
        }
        self.check_invariants();
    }

    fn healthy(&self) -> bool {
        let Some(l) = self.leader_node() else {
            return false;
        };
        let leader = &self.nodes[l];
        if self.standby_config().is_some() {
            // One standby leader streaming from the remote site (which leads again),
            // every other node from it.
            let remote_leads = self
                .remote
                .as_ref()
                .is_some_and(|r| r.pg.running && r.pg.primary);
            return remote_leads
                && leader.standby_leader
                && self.streams_from_remote(l)
                && (0..self.nodes.len()).all(|j| j == l || self.upstream(j) == Some(l));
        }
        leader.pg.running
            && leader.pg.primary
            && (0..self.nodes.len()).all(|j| j == l || self.upstream(j) == Some(l))
    }
}

/// A compare-and-set of a DCS key (`version` None: unconditional, as the DCS trait's
/// writes with no version are); `value` None deletes it.
fn cas(
    slot: &mut Option<(String, i64)>,
    revision: &mut i64,
    value: Option<String>,
    version: Option<i64>,
) -> bool {
    if version.is_some() && version != slot.as_ref().map(|(_, v)| *v) {
        return false;
    }
    *revision += 1;
    *slot = value.map(|v| (v, *revision));
    true
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        mod_revision: 1,
        lease: 0,
    }
}

/// Runs one seeded scenario: bootstrap, 5 minutes of faults, then heal and converge.
fn scenario(mut w: World) -> Stats {
    // Bootstrap converges.
    for _ in 0..600 {
        w.step();
        if w.healthy() {
            break;
        }
    }
    if !w.healthy() {
        w.fail("cluster did not bootstrap".into());
    }
    // Faults every 5–20 s for 5 minutes of virtual time.
    let until = w.now + 300_000;
    let mut next_fault = w.now + 5_000;
    while w.now < until {
        if w.now >= next_fault {
            w.inject_fault();
            next_fault = w.now + 5_000 + w.rng.below(15_000);
        }
        w.step();
    }
    // Heal everything and require convergence within 3 × ttl.
    let heal = w.now;
    w.dcs.failover = None;
    w.dcs_down_until = 0;
    w.rest_cut.clear();
    for n in &mut w.nodes {
        n.frozen_until = 0;
        n.partitioned_until = 0;
        n.link_down_until = 0;
        n.isolated_until = 0;
        // Thawed, not killed: it resumes with all its state.
        n.pg_frozen_until = 0;
    }
    while w.now < heal + 3 * w.ttl_ms + 30_000 && !w.healthy() {
        w.step();
    }
    if !w.healthy() {
        w.fail(format!(
            "no healthy cluster {} s after healing: leader {:?}",
            (w.now - heal) / 1000,
            w.dcs.leader
        ));
    }
    w.stats
}

#[test]
fn random_faults_never_make_two_primaries_and_the_cluster_converges() {
    let promotions: u32 = (1..=40u64)
        .map(|seed| {
            scenario(World::new(seed * 7919, TTL_MS, SyncSettings::default(), 3)).promotions
        })
        .sum();
    // The faults must actually have forced failovers, or the test proves nothing.
    assert!(
        promotions >= 40,
        "only {promotions} promotions in 40 scenarios"
    );
    eprintln!("{promotions} promotions in 40 simulated scenarios");
}

/// Standby clusters: bootstrapped from the remote site, through crashes, freezes,
/// partitions, switchovers of the standby leader, `promote-cluster` and
/// `demote-cluster`; lock lengths alternate.
#[test]
fn a_standby_cluster_never_promotes_and_converges() {
    let seeds = 30 * seed_factor();
    let stats = (1..=seeds)
        .map(|i| {
            let ttl = if i.is_multiple_of(2) {
                TTL_MS
            } else {
                SHORT_TTL_MS
            };
            scenario(World::new(i * 2_750_159, ttl, SyncSettings::default(), 3).standby())
        })
        .fold(Stats::default(), |a, b| a + b);
    // Standby leaders must have changed hands, and the cluster must have been promoted
    // and demoted, or the runs prove little.
    assert!(
        stats.standby_leaders >= 2 * seeds as u32
            && stats.switchovers >= seeds as u32 / 4
            && stats.cluster_promotions >= seeds as u32 / 4
            && stats.cluster_demotions >= seeds as u32 / 4,
        "too little exercised: {stats:?}"
    );
    eprintln!("standby clusters, {seeds} scenarios: {stats:?}");
}

/// `warden.min_ttl`: the same faults with an 8 s lock (loop_wait 2 s, fence margin 2 s).
#[test]
fn a_short_ttl_with_the_fence_guard_is_as_safe() {
    let promotions: u32 = (1..=40u64)
        .map(|seed| {
            scenario(World::new(
                seed * 104_729,
                SHORT_TTL_MS,
                SyncSettings::default(),
                3,
            ))
            .promotions
        })
        .sum();
    assert!(
        promotions >= 40,
        "only {promotions} promotions in 40 scenarios"
    );
    eprintln!("{promotions} promotions in 40 simulated scenarios at ttl 8 s");
}

/// The shortest lease (`MIN_TTL_FLOOR`): the same faults with a 4 s lock, loop_wait 1 s
/// and the 1 s fence margin the agent uses there.
#[test]
fn the_shortest_lease_with_the_fence_guard_is_as_safe() {
    let promotions: u32 = (1..=40u64)
        .map(|seed| {
            scenario(
                World::new(
                    seed * 15_485_863,
                    SHORTEST_TTL_MS,
                    SyncSettings::default(),
                    3,
                )
                .loop_ms(SHORTEST_LOOP_MS),
            )
            .promotions
        })
        .sum();
    assert!(
        promotions >= 40,
        "only {promotions} promotions in 40 scenarios"
    );
    eprintln!("{promotions} promotions in 40 simulated scenarios at ttl 4 s");
}

/// The failsafe and frozen-PostgreSQL faults on top of the others, with failsafe mode
/// on in two scenarios out of three (`i` counts them): without it the same outages and
/// freezes must be as safe.
fn failsafe_faults(mut w: World, i: u64) -> World {
    w.more_faults = true;
    w.failsafe = !i.is_multiple_of(3);
    w
}

/// Requires that failsafe and frozen-PostgreSQL runs exercised both features.
fn require_failsafe_exercised(stats: Stats, seeds: u64) {
    assert!(
        stats.failsafe_beyond_lease >= seeds as u32 && stats.frozen_kills >= seeds as u32 / 4,
        "too little failsafe or frozen PostgreSQL exercised: {stats:?}"
    );
}

/// The `i`-th asynchronous failsafe scenario (from 1); lock lengths alternate.
fn failsafe_world(i: u64) -> World {
    failsafe_seeded(i * 1_299_721, i)
}

/// An asynchronous failsafe scenario with this seed, configured as the `i`-th.
fn failsafe_seeded(seed: u64, i: u64) -> World {
    let ttl = if i.is_multiple_of(2) {
        TTL_MS
    } else {
        SHORT_TTL_MS
    };
    failsafe_faults(World::new(seed, ttl, SyncSettings::default(), 3), i)
}

#[test]
fn failsafe_and_frozen_postgres_never_make_two_primaries() {
    let seeds = 30 * seed_factor();
    let stats = (1..=seeds)
        .map(|i| scenario(failsafe_world(i)))
        .fold(Stats::default(), |a, b| a + b);
    require_failsafe_exercised(stats, seeds);
    assert!(
        stats.promotions >= seeds as u32,
        "too few failovers: {stats:?}"
    );
    eprintln!("failsafe and frozen PostgreSQL, {seeds} scenarios: {stats:?}");
}

/// Seed 24694471 with the executor as it was: the leader n1 wrote `failsafe` =
/// {n0, n1, n2} (n2 back after its member key had expired) but kept the topology it had
/// read before the write, {n0, n1}; the whole DCS went down in the next cycle, n2
/// crashed, and n1 ran on with n0's acknowledgement alone while n2, named in the key,
/// may take over once it reaches the DCS. node.rs now takes the key it wrote as its
/// topology, as Patroni's `write_failsafe` does.
#[test]
#[should_panic(expected = "or failsafe window")]
fn failsafe_acknowledgements_from_a_stale_topology_are_not_enough() {
    let mut w = failsafe_seeded(24_694_471, 19);
    w.stale_topology_after_write = true;
    scenario(w);
}

/// Seed 6498545: n0 and n1 lost the DCS together for longer than the ttl, so their
/// member keys expired, and the leader n2 wrote `failsafe` = {n2}. n2 later crashed, came
/// back diverged and behind n0 and n1; they are missing from a non-empty failsafe key,
/// so they never take over, and n2 is not the healthiest: nobody leads, for good (only
/// a new leader rewrites the key). Patroni has the same rule and the same trap
/// (`is_healthiest_node` disqualifies a node missing from `/failsafe`).
#[test]
#[ignore = "finding: a failsafe key that names only a leader which then falls behind excludes every other member from the race for good; seed 6498545"]
fn failsafe_a_key_naming_only_a_fallen_leader_does_not_block_failover() {
    scenario(failsafe_seeded(6_498_545, 5));
}

/// Seed 650413278 (`SIM_SEEDS=10`; `synchronous_mode` strict, failsafe off): the whole
/// DCS goes down and the agent of the primary n2 dies (PostgreSQL keeps running); its
/// PostgreSQL freezes before the agent restarts. The new agent never got an answer; it
/// learns from pg_control that the silent instance runs as a primary, so without the
/// DCS (or without the lock) it demotes it, and a demotion of a silent instance kills
/// it for good: it never thaws as a primary without a lease. (Found by this simulator;
/// fixed in node.rs's `observe` and `Demote`.)
#[test]
fn a_primary_frozen_across_an_agent_restart_is_fenced() {
    let run = SyncRun {
        faults: true,
        ..SyncRun::classic(true, 1)
    };
    run.scenario(42);
}

/// A synchronous-replication run: settings, cluster size, optional invariant.
#[derive(Clone, Copy, Debug)]
struct SyncRun {
    mode: SyncMode,
    strict: bool,
    node_count: usize,
    nodes: usize,
    /// Check the quorum overlap invariant too.
    overlap: bool,
    /// Failsafe and frozen-PostgreSQL faults too (see [`failsafe_faults`]).
    faults: bool,
}

impl SyncRun {
    /// `synchronous_mode: on` on 3 nodes.
    fn classic(strict: bool, node_count: usize) -> SyncRun {
        SyncRun {
            mode: SyncMode::On,
            strict,
            node_count,
            nodes: 3,
            overlap: false,
            faults: false,
        }
    }

    fn quorum(strict: bool, node_count: usize, nodes: usize) -> SyncRun {
        SyncRun {
            mode: SyncMode::Quorum,
            strict,
            node_count,
            nodes,
            overlap: false,
            faults: false,
        }
    }

    /// The `i`-th scenario (from 1): its seed and what it exercised. Lock lengths
    /// alternate; classic 3-node runs keep the seeds they had before quorum runs existed.
    fn scenario(self, i: u64) -> (u64, Stats) {
        let quorum_salt = if self.mode == SyncMode::Quorum {
            1_000 * self.nodes as u64
        } else {
            0
        };
        let faults_salt = if self.faults { 7_000 } else { 0 };
        let salt = 31 * self.node_count as u64 + u64::from(self.strict) + quorum_salt + faults_salt;
        let seed = i * 15_485_863 + salt;
        let ttl = if i.is_multiple_of(2) {
            TTL_MS
        } else {
            SHORT_TTL_MS
        };
        let sync = SyncSettings {
            mode: self.mode,
            strict: self.strict,
            node_count: self.node_count,
            maximum_lag_on_syncnode: -1,
        };
        let mut w = World::new(seed, ttl, sync, self.nodes);
        w.check_overlap = self.overlap;
        if self.faults {
            w = failsafe_faults(w, i);
        }
        (seed, scenario(w))
    }
}

/// `SIM_SEEDS=N` runs N times as many synchronous scenarios (a deeper, still
/// deterministic search, e.g. `SIM_SEEDS=50 cargo test --release --test simulation`).
fn seed_factor() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs the scenarios and requires that they exercised failovers, switchovers and
/// synchronous commits, and, in strict mode, that no commit was acknowledged without a
/// standby: also when an agent that restarted (and so does not know the names it set)
/// restarts its crashed primary, which starts waiting for the placeholder, as in
/// Patroni.
fn sync_runs(run: SyncRun, seeds: u64) {
    let seeds = seeds * seed_factor();
    let mut stats = Stats::default();
    for (seed, s) in (1..=seeds).map(|i| run.scenario(i)) {
        assert_eq!(
            s.strict_async_acks, 0,
            "seed {seed} ({run:?}): commits acknowledged without a standby"
        );
        stats = stats + s;
    }
    // Failovers and synchronous commits must both have happened, or the runs prove
    // nothing about losing acknowledged commits in a failover.
    assert!(
        stats.promotions >= seeds as u32
            && stats.switchovers >= seeds as u32 / 4
            && stats.sync_acks >= 1_000 * seeds,
        "too little exercised: {stats:?}"
    );
    if run.faults {
        require_failsafe_exercised(stats, seeds);
    }
    eprintln!("{run:?}, {seeds} scenarios: {stats:?}");
}

/// The synchronous invariants through DCS outages kept by failsafe, REST cuts and frozen
/// PostgreSQL (primary or standby), classic and quorum.
#[test]
fn failsafe_and_frozen_postgres_keep_synchronous_commits() {
    for run in [
        SyncRun::classic(false, 1),
        SyncRun::classic(true, 1),
        SyncRun::quorum(false, 1, 3),
        SyncRun::quorum(true, 2, 4),
    ] {
        sync_runs(
            SyncRun {
                faults: true,
                ..run
            },
            8,
        );
    }
}

#[test]
fn synchronous_mode_never_promotes_a_node_missing_an_acknowledged_commit() {
    sync_runs(SyncRun::classic(false, 1), 40);
}

#[test]
fn synchronous_mode_strict_never_promotes_a_node_missing_an_acknowledged_commit() {
    sync_runs(SyncRun::classic(true, 1), 40);
}

#[test]
fn two_synchronous_standbys_never_promote_a_node_missing_an_acknowledged_commit() {
    sync_runs(SyncRun::classic(false, 2), 30);
    sync_runs(SyncRun::classic(true, 2), 40);
}

/// Quorum commit with one and two standbys to wait for, on 3 nodes (two replicas) and 4
/// (three: the voters outnumber the standbys waited for, so a quorum decides the race).
fn quorum_runs(strict: bool, overlap: bool, seeds: u64) {
    for nodes in [3, 4] {
        for node_count in [1, 2] {
            let run = SyncRun {
                overlap,
                ..SyncRun::quorum(strict, node_count, nodes)
            };
            sync_runs(run, seeds);
        }
    }
}

#[test]
fn quorum_commit_never_promotes_a_node_missing_an_acknowledged_commit() {
    quorum_runs(false, false, 10);
}

#[test]
fn quorum_commit_strict_never_promotes_a_node_missing_an_acknowledged_commit() {
    quorum_runs(true, false, 10);
}

/// The invariant the leader race relies on, at every step rather than only when
/// someone promotes. Seed 30974757 (non-strict, `synchronous_node_count` 1, 3 nodes):
/// leader n0, voters n1 and n2, quorum 1, `ANY 1 (n1,n2)`; n2's agent dies (its
/// PostgreSQL keeps streaming and acknowledging) while n1 lags one commit behind; in
/// one cycle n0 sets `ANY 1 (n1)` and writes quorum 0 of (n1), trusting n1's
/// confirmation of the previous names. Until n1 catches up, n1 alone may promote
/// without the commit only n2 acknowledged. Patroni's QuorumStateResolver plans the same
/// two steps (its confirmations also outlive a change of the names).
#[test]
#[ignore = "finding: the quorum plan lowers the quorum in the cycle it drops a voter, trusting confirmations made under the previous names (as Patroni does); seed 30974757"]
fn quorum_commit_sync_set_overlaps_every_acknowledged_commit() {
    quorum_runs(false, true, 10);
    quorum_runs(true, true, 10);
}

/// Seed 1254358934 (`SIM_SEEDS=10`; non-strict, `synchronous_node_count` 1, 4 nodes):
/// the key says leader n2, quorum 2 of (n0, n1, n3); n3 promotes (a switchover it won
/// the votes for) and n1 acknowledges its first commits; n3 and n1 die within a second,
/// before n3's first primary cycle rewrites the key. n2, still the key's leader, counts
/// as the former leader with nobody ahead and promotes without those commits. Patroni
/// has the same window (its quorum pre-promote leaves the key to the first cycle as
/// primary, and `check_timeline` is off by default).
#[test]
#[ignore = "finding: a node promoted in quorum mode that dies before its first primary cycle leaves the key naming the old leader, which may race as the former leader; seed 1254358934"]
fn quorum_commit_a_stale_former_leader_does_not_promote() {
    SyncRun::quorum(false, 1, 4).scenario(81);
}

/// Seed 263262734 (`SIM_SEEDS=10`; strict, `synchronous_node_count` 2, 3 nodes): n1, a
/// former primary whose unacknowledged WAL on timeline 4 runs past the fork of timeline
/// 5, is outside the key's set (leader n2, quorum 0 of (n0)); n0's vote compares LSNs
/// across timelines (n0 on timeline 5 is "not ahead"), so n1 reaches its quorum and
/// promotes without n0's acknowledged commits. As in Patroni, votes are LSNs without
/// timelines (`check_timeline` off by default).
#[test]
#[ignore = "finding: quorum votes compare LSNs across timelines, so a diverged former primary outside the sync set can win them; seed 263262734"]
fn quorum_commit_a_diverged_node_does_not_win_the_votes() {
    SyncRun::quorum(true, 2, 3).scenario(17);
}
