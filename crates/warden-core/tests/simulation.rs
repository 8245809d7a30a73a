//! Deterministic simulation of a 3-node cluster driven by the pure HA decision.
//!
//! A virtual clock, an in-memory DCS with leases, simulated PostgreSQL instances and a
//! seeded fault injector (agent crashes, frozen agents, DCS partitions of one node,
//! PostgreSQL crashes) run thousands of HA cycles. Executing actions mirrors what the
//! agent does, including the fence guards (a primary whose lock was not renewed is
//! stopped `FENCE_MARGIN` before the lease can expire). Invariants checked at every
//! step:
//! * never two writable primaries at the same time;
//! * a writable primary always holds an unexpired lease in the DCS;
//! * after faults heal, the cluster converges to exactly one leader with a running
//!   primary, within a bounded time.

use std::collections::BTreeMap;
use warden_core::cluster::{Cluster, KeyValue};
use warden_core::ha::{
    decide, Action, Answers, DataDir, DemoteMode, Divergence, HaInput, HaSettings, LocalPg,
    LockUpdate, NodeMemory, PeerStatus, Question, Step,
};

/// Patroni's floor, and the Warden-only `warden.min_ttl` floor.
const TTL_MS: u64 = 20_000;
const SHORT_TTL_MS: u64 = 8_000;
const LOOP_MS: u64 = 2_000;
const FENCE_MARGIN: u64 = 2_000;
const SYSID: &str = "7000000000000000001";

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
    wal: u64,
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
    next_cycle: u64,
}

#[derive(Default)]
struct Dcs {
    leader: Option<(String, u64)>, // name, lease expiry
    initialize: Option<String>,
    optime: u64,
    members: BTreeMap<String, (u64, String)>, // name -> (lease expiry, json)
}

struct World {
    now: u64,
    dcs: Dcs,
    nodes: Vec<Node>,
    rng: Rng,
    /// highest timeline ever promoted (timelines only grow)
    max_tl: u32,
    /// leader lock / member key lifetime
    ttl_ms: u64,
}

impl World {
    fn new(seed: u64, ttl_ms: u64) -> World {
        let nodes = (0..3)
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
                next_cycle: i as u64 * 300,
            })
            .collect();
        World {
            now: 0,
            dcs: Dcs::default(),
            nodes,
            rng: Rng(seed.max(1)),
            max_tl: 1,
            ttl_ms,
        }
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

    fn lease_valid_for(&self, name: &str) -> bool {
        matches!(&self.dcs.leader, Some((l, exp)) if l == name && *exp > self.now)
    }

    fn probe(&self, name: &str) -> PeerStatus {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap_or(0);
        let n = &self.nodes[i];
        PeerStatus {
            name: name.to_string(),
            reachable: self.reachable(i) && n.pg.running,
            is_primary: n.pg.running && n.pg.primary,
            wal_position: if n.pg.primary { 0 } else { n.pg.wal },
            nofailover: false,
            failover_priority: 1,
            watchdog_failed: false,
        }
    }

    /// One HA cycle of node i.
    fn cycle(&mut self, i: usize) {
        let partitioned = self.nodes[i].partitioned_until > self.now;
        let cluster = (!partitioned).then(|| self.cluster());
        if let Some(c) = &cluster {
            if c.leader_name() != Some(self.nodes[i].name.as_str()) {
                self.nodes[i].memory.leader_until_ms = None;
            }
        }
        let n = &self.nodes[i];
        let local = LocalPg {
            data_dir: if n.pg.initialized {
                DataDir::Valid {
                    sysid: SYSID.into(),
                }
            } else {
                DataDir::Empty
            },
            running: n.pg.running,
            is_primary: n.pg.running && n.pg.primary,
            timeline: Some(n.pg.timeline),
            wal_position: n.pg.wal,
            was_primary: !n.pg.running && n.pg.primary,
            following: n.following.clone(),
            streaming: n.pg.running && !n.pg.primary && n.following.is_some(),
            ..LocalPg::default()
        };
        let settings = HaSettings {
            ttl: self.ttl_ms / 1000,
            loop_wait: LOOP_MS / 1000,
            can_rewind: true,
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
                            answers.probes = Some(names.iter().map(|n| self.probe(n)).collect());
                        }
                        Question::CheckDivergence { leader } => {
                            let l = self
                                .nodes
                                .iter()
                                .find(|n| n.name == leader)
                                .map(|n| n.pg.timeline);
                            let mine = self.nodes[i].pg.timeline;
                            answers.divergence = Some(match l {
                                Some(t) if t == mine => Divergence::NotDiverged,
                                Some(_) => Divergence::Diverged,
                                None => Divergence::Unknown,
                            });
                        }
                    }
                }
            }
        };
        for a in decision.actions {
            if let Action::Exit { message } = &a {
                panic!("node {me} exited: {message} (reason: {})", decision.reason);
            }
            self.execute(i, a, partitioned);
        }
        let n = &mut self.nodes[i];
        n.guard_deadline = n.memory.leader_until_ms.unwrap_or(0);
        n.memory.first_cycle = false;
        n.memory.was_running = n.pg.running;
        if !partitioned {
            let role = if n.pg.running && n.pg.primary {
                "primary"
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
        self.nodes.iter().position(|n| &n.name == l)
    }

    fn execute(&mut self, i: usize, a: Action, partitioned: bool) {
        let me = self.nodes[i].name.clone();
        match a {
            Action::Bootstrap => {
                let n = &mut self.nodes[i];
                n.pg = Pg {
                    initialized: true,
                    running: true,
                    primary: true,
                    timeline: 1,
                    wal: 1,
                };
                self.dcs.initialize = Some(SYSID.into());
                self.dcs.leader = Some((me, self.now + self.ttl_ms));
                self.nodes[i].memory.leader_until_ms = Some(self.now + self.ttl_ms);
            }
            Action::CloneFrom { source, follow } => {
                let src = self
                    .nodes
                    .iter()
                    .find(|n| n.name == source)
                    .map(|n| n.pg.clone());
                if let Some(src) = src.filter(|p| p.running) {
                    let n = &mut self.nodes[i];
                    n.pg = Pg {
                        initialized: true,
                        running: true,
                        primary: false,
                        timeline: src.timeline,
                        wal: src.wal,
                    };
                    n.following = Some(follow);
                }
            }
            Action::StartPrimary => {
                let n = &mut self.nodes[i];
                n.pg.running = true;
                n.pg.primary = true;
            }
            Action::StartReplica { upstream } => {
                let n = &mut self.nodes[i];
                n.pg.running = true;
                n.pg.primary = false;
                n.following = upstream;
            }
            Action::Follow { upstream } => self.nodes[i].following = Some(upstream),
            Action::Promote => {
                self.max_tl += 1;
                let tl = self.max_tl;
                let n = &mut self.nodes[i];
                n.pg.primary = true;
                n.pg.timeline = tl;
                n.following = None;
            }
            Action::Demote { mode } => {
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
                    let n = &mut self.nodes[i];
                    n.pg.running = true;
                    n.pg.primary = false;
                }
            }
            Action::Rewind { source } => {
                let tl = self
                    .nodes
                    .iter()
                    .find(|n| n.name == source)
                    .map(|n| n.pg.timeline);
                let n = &mut self.nodes[i];
                n.pg.running = false;
                n.pg.primary = false;
                if let Some(tl) = tl {
                    n.pg.timeline = tl;
                }
            }
            Action::RemoveDataDir => self.nodes[i].pg = Pg::default(),
            // The simulation replicates asynchronously: no synchronous standby to manage.
            Action::WriteSync { .. }
            | Action::DeleteSync { .. }
            | Action::SetStandbyNames { .. }
            | Action::Warn { .. }
            | Action::RecheckSoon => {}
            Action::ReleaseLeader | Action::AbandonLeader => {
                if !partitioned && matches!(&self.dcs.leader, Some((l, _)) if *l == me) {
                    self.dcs.leader = None;
                }
                self.nodes[i].memory.leader_until_ms = None;
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
            Action::ClearFailover { .. } | Action::WaitUntil { .. } | Action::Exit { .. } => {}
        }
    }

    /// Replication, writes and the fence guards, every 100 ms of virtual time.
    fn tick(&mut self) {
        // The external fence guard: a primary whose published lock deadline is within
        // the margin stops. It runs even for frozen or crashed agents.
        for n in &mut self.nodes {
            if n.pg.running
                && n.pg.primary
                && n.guard_deadline > 0
                && self.now + FENCE_MARGIN >= n.guard_deadline
            {
                n.pg.running = false;
            }
        }
        // Clients write to every running primary.
        for n in &mut self.nodes {
            if n.pg.running && n.pg.primary {
                n.pg.wal += 1;
            }
        }
        // Streaming: a running replica following a running primary on its timeline
        // history catches up.
        let snapshot: Vec<(String, Pg)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.pg.clone()))
            .collect();
        for n in &mut self.nodes {
            if n.pg.running && !n.pg.primary {
                if let Some(up) = &n.following {
                    if let Some((_, p)) = snapshot.iter().find(|(name, p)| name == up && p.running)
                    {
                        n.pg.wal = n.pg.wal.max(p.wal);
                        n.pg.timeline = n.pg.timeline.max(p.timeline);
                    }
                }
            }
        }
    }

    fn check_invariants(&self) {
        let writable: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.pg.running && n.pg.primary)
            .collect();
        assert!(
            writable.len() <= 1,
            "t={}ms: two writable primaries: {:?}",
            self.now,
            writable.iter().map(|n| &n.name).collect::<Vec<_>>()
        );
        for n in writable {
            assert!(
                self.lease_valid_for(&n.name),
                "t={}ms: {} accepts writes without a valid lease (dcs leader {:?})",
                self.now,
                n.name,
                self.dcs.leader
            );
        }
    }

    fn inject_fault(&mut self) {
        let i = self.rng.below(3) as usize;
        match self.rng.below(5) {
            0 => {
                // agent + PostgreSQL crash; restarted 5–30 s later
                let n = &mut self.nodes[i];
                n.alive = false;
                n.pg.running = false;
                n.next_cycle = self.now + 5_000 + self.rng.below(25_000);
            }
            1 => {
                // agent only killed: PostgreSQL keeps running, the external guard stays
                let n = &mut self.nodes[i];
                n.alive = false;
                n.next_cycle = self.now + 3_000 + self.rng.below(30_000);
            }
            2 => self.nodes[i].frozen_until = self.now + 5_000 + self.rng.below(40_000),
            3 => self.nodes[i].partitioned_until = self.now + 5_000 + self.rng.below(40_000),
            _ => self.nodes[i].pg.running = false, // PostgreSQL crash alone
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
                }
                if self.nodes[i].frozen_until > self.now {
                    continue;
                }
                self.cycle(i);
                let jitter = self.rng.below(600);
                self.nodes[i].next_cycle = self.now + LOOP_MS + jitter;
            }
        }
        self.check_invariants();
    }

    fn healthy(&self) -> bool {
        let Some(l) = self.leader_node() else {
            return false;
        };
        let leader = &self.nodes[l];
        leader.pg.running
            && leader.pg.primary
            && self
                .nodes
                .iter()
                .filter(|n| n.name != leader.name)
                .all(|n| {
                    n.pg.running
                        && !n.pg.primary
                        && n.following.as_deref() == Some(leader.name.as_str())
                })
    }
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
/// Returns how many promotions happened (so the test knows failovers were exercised).
fn scenario(seed: u64, ttl_ms: u64) -> u32 {
    let mut w = World::new(seed, ttl_ms);
    // Bootstrap converges.
    for _ in 0..600 {
        w.step();
        if w.healthy() {
            break;
        }
    }
    assert!(w.healthy(), "seed {seed}: cluster did not bootstrap");
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
    for n in &mut w.nodes {
        n.frozen_until = 0;
        n.partitioned_until = 0;
    }
    while w.now < heal + 3 * w.ttl_ms + 30_000 && !w.healthy() {
        w.step();
    }
    assert!(
        w.healthy(),
        "seed {seed}: no healthy cluster {} s after healing: leader {:?}, nodes {:?}",
        (w.now - heal) / 1000,
        w.dcs.leader,
        w.nodes
            .iter()
            .map(|n| (&n.name, &n.pg, &n.following, n.alive))
            .collect::<Vec<_>>()
    );
    w.max_tl - 1
}

#[test]
fn random_faults_never_make_two_primaries_and_the_cluster_converges() {
    let promotions: u32 = (1..=40u64).map(|seed| scenario(seed * 7919, TTL_MS)).sum();
    // The faults must actually have forced failovers, or the test proves nothing.
    assert!(
        promotions >= 40,
        "only {promotions} promotions in 40 scenarios"
    );
    eprintln!("{promotions} promotions in 40 simulated scenarios");
}

/// `warden.min_ttl`: the same faults with an 8 s lock (loop_wait 2 s, fence margin 2 s).
#[test]
fn a_short_ttl_with_the_fence_guard_is_as_safe() {
    let promotions: u32 = (1..=40u64)
        .map(|seed| scenario(seed * 104_729, SHORT_TTL_MS))
        .sum();
    assert!(
        promotions >= 40,
        "only {promotions} promotions in 40 scenarios"
    );
    eprintln!("{promotions} promotions in 40 simulated scenarios at ttl 8 s");
}
