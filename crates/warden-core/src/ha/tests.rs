//! Table-driven tests of the HA decisions. Each case is a cluster, a local PostgreSQL
//! state and canned answers; the expected result is the questions asked, the actions and
//! (a distinctive part of) the reason.

use super::*;
use crate::cluster::{Cluster, KeyValue};

const SYSID: &str = "7268616322854375442";
/// 2024-01-01T00:00:00Z
const NOW_EPOCH_MS: i64 = 1_704_067_200_000;

/// `cluster` plus a `failover` key.
fn with_failover(
    mut c: Cluster,
    leader: Option<&str>,
    member: Option<&str>,
    at: Option<&str>,
) -> Cluster {
    c.failover = Some(crate::cluster::FailoverRequest {
        leader: leader.map(str::to_string),
        member: member.map(str::to_string),
        scheduled_at: at.map(str::to_string),
        version: 42,
    });
    c
}

fn member_json(role: &str, port: u16, xlog: u64, tl: u32, extra: &str) -> String {
    format!(
        r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:{}/patroni","state":"running","role":"{role}","version":"4.1.5","xlog_location":{xlog},"timeline":{tl}{extra}}}"#,
        port + 1000
    )
}

/// `cluster` plus a `sync` key (mod_revision 5).
fn with_sync(mut c: Cluster, value: &str) -> Cluster {
    c.sync = crate::cluster::SyncState::parse(value, 5);
    c
}

/// A quorum-commit `sync` key: leader pg1, one of the voters pg2 and pg3 needed.
const QUORUM_KEY: &str = r#"{"leader":"pg1","quorum":1,"sync_standby":"pg2,pg3"}"#;

/// The standby names a replica sets right before it promotes.
fn names_before_promote(value: &str) -> Action {
    Action::SetStandbyNames {
        value: Some(value.into()),
        message: "Standby names set before promote".into(),
    }
}

/// pg1's member key says its post-promote CHECKPOINT has not finished.
fn checkpoint_pending(mut c: Cluster) -> Cluster {
    for m in &mut c.members {
        if m.name == "pg1" {
            m.data.extra.insert(
                "checkpoint_after_promote".into(),
                serde_json::Value::Bool(false),
            );
        }
    }
    c
}

/// Builds a cluster: `leader` (if any), members pg1..pg3 where pg1 is the primary.
fn cluster(leader: Option<&str>, initialize: Option<&str>, optime: Option<u64>) -> Cluster {
    let mut kvs = vec![
        KeyValue {
            key: "members/pg1".into(),
            value: member_json("primary", 5001, 100, 1, ""),
            mod_revision: 1,
            lease: 1,
        },
        KeyValue {
            key: "members/pg2".into(),
            value: member_json("replica", 5002, 100, 1, ""),
            mod_revision: 1,
            lease: 2,
        },
        KeyValue {
            key: "members/pg3".into(),
            value: member_json("replica", 5003, 90, 1, ""),
            mod_revision: 1,
            lease: 3,
        },
    ];
    if let Some(l) = leader {
        kvs.push(KeyValue {
            key: "leader".into(),
            value: l.into(),
            mod_revision: 2,
            lease: 1,
        });
    }
    if let Some(i) = initialize {
        kvs.push(KeyValue {
            key: "initialize".into(),
            value: i.into(),
            mod_revision: 1,
            lease: 0,
        });
    }
    // The dynamic configuration is published (a lock holder writes it otherwise, L4).
    kvs.push(KeyValue {
        key: "config".into(),
        value: r#"{"ttl":30}"#.into(),
        mod_revision: 1,
        lease: 0,
    });
    if let Some(o) = optime {
        kvs.push(KeyValue {
            key: "status".into(),
            value: format!(r#"{{"optime":{o}}}"#),
            mod_revision: 3,
            lease: 0,
        });
    }
    Cluster::from_kvs(&kvs)
}

fn empty_cluster() -> Cluster {
    Cluster::default()
}

fn replica(wal: u64) -> LocalPg {
    LocalPg {
        data_dir: DataDir::Valid {
            sysid: SYSID.into(),
        },
        running: true,
        is_primary: false,
        timeline: Some(1),
        wal_position: wal,
        was_primary: false,
        following: Some("pg1".into()),
        streaming: true,
        ..LocalPg::default()
    }
}

fn primary() -> LocalPg {
    LocalPg {
        is_primary: true,
        following: None,
        streaming: false,
        standbys: ["pg2", "pg3"]
            .iter()
            .map(|n| crate::sync::StandbyConn {
                application_name: n.to_string(),
                sync_state: "async".into(),
                ..Default::default()
            })
            .collect(),
        ..replica(100)
    }
}

fn stopped(was_primary: bool, tl: u32) -> LocalPg {
    LocalPg {
        running: false,
        is_primary: false,
        timeline: Some(tl),
        was_primary,
        following: None,
        streaming: false,
        ..replica(100)
    }
}

fn peer(name: &str, wal: u64) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        reachable: true,
        is_primary: false,
        wal_position: wal,
        nofailover: false,
        failover_priority: 1,
        watchdog_failed: false,
    }
}

/// Canned answers an executor would give.
#[derive(Clone, Default)]
struct World {
    initialize_race: bool,
    acquire: bool,
    update: Option<LockUpdate>,
    probes: Vec<PeerStatus>,
    divergence: Option<Divergence>,
    failsafe_acks: Option<bool>,
}

/// Runs the sans-I/O loop like the executor does; returns (questions asked, decision).
fn run(
    me: &str,
    cluster: Option<&Cluster>,
    pg: &LocalPg,
    settings: &HaSettings,
    memory: &NodeMemory,
    world: &World,
) -> (Vec<Question>, Decision) {
    let mut answers = Answers::default();
    let mut asked = Vec::new();
    for _ in 0..8 {
        let input = HaInput {
            me,
            cluster,
            pg,
            settings,
            memory,
            answers: &answers,
            now_ms: 1_000,
            now_epoch_ms: NOW_EPOCH_MS,
        };
        match decide(&input) {
            Step::Act(d) => return (asked, d),
            Step::Ask(q) => {
                assert!(!answers.is_answered(&q), "asked twice: {q:?}");
                match &q {
                    Question::RaceInitialize => {
                        answers.initialize_race = Some(world.initialize_race)
                    }
                    Question::AcquireLeader => answers.acquire = Some(world.acquire),
                    Question::UpdateLeader => {
                        answers.update = Some(world.update.unwrap_or(LockUpdate::Renewed))
                    }
                    Question::ProbeMembers(_) => answers.probes = Some(world.probes.clone()),
                    Question::CheckDivergence { .. } => {
                        answers.divergence =
                            Some(world.divergence.unwrap_or(Divergence::NotDiverged))
                    }
                    Question::FailsafeAcks(_) => {
                        answers.failsafe_acks = Some(world.failsafe_acks.unwrap_or(true))
                    }
                }
                asked.push(q);
            }
        }
    }
    panic!("decide did not finish in 8 steps");
}

struct Case {
    name: &'static str,
    me: &'static str,
    cluster: Option<Cluster>,
    pg: LocalPg,
    settings: HaSettings,
    memory: NodeMemory,
    world: World,
    want_actions: Vec<Action>,
    want_reason: &'static str,
}

fn case(name: &'static str, me: &'static str, cluster: Option<Cluster>, pg: LocalPg) -> Case {
    Case {
        name,
        me,
        cluster,
        pg,
        settings: HaSettings::default(),
        memory: NodeMemory::default(),
        world: World::default(),
        want_actions: vec![],
        want_reason: "",
    }
}

impl Case {
    fn expect(mut self, actions: Vec<Action>, reason: &'static str) -> Case {
        self.want_actions = actions;
        self.want_reason = reason;
        self
    }
    fn world(mut self, w: World) -> Case {
        self.world = w;
        self
    }
    fn settings(mut self, f: impl FnOnce(&mut HaSettings)) -> Case {
        f(&mut self.settings);
        self
    }
    fn memory(mut self, m: NodeMemory) -> Case {
        self.memory = m;
        self
    }
}

/// Memory holding a failsafe topology of `names` (api_url as the test members have it)
/// and optionally a primary that pinged me.
fn failsafe_memory(names: &[&str], leader: Option<&str>) -> NodeMemory {
    NodeMemory {
        failsafe_topology: Some(
            names
                .iter()
                .map(|n| (n.to_string(), api_url_of(n)))
                .collect(),
        ),
        failsafe_leader: leader.map(str::to_string),
        ..NodeMemory::default()
    }
}

fn api_url_of(name: &str) -> String {
    let port = 6000 + name.trim_start_matches("pg").parse::<u16>().unwrap_or(0);
    format!("http://127.0.0.1:{port}/patroni")
}

/// `cluster` with a `failsafe` key listing `names`.
fn with_failsafe(mut c: Cluster, names: &[&str]) -> Cluster {
    c.failsafe = Some(
        names
            .iter()
            .map(|n| (n.to_string(), serde_json::Value::String(api_url_of(n))))
            .collect(),
    );
    c
}

fn clone_from(source: Option<&str>, follow: Option<&str>, methods: &[&str], what: &str) -> Action {
    Action::CloneFrom {
        source: source.map(str::to_string),
        follow: follow.map(str::to_string),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        what: what.into(),
    }
}

/// A replica creation method with a command and, when `no_leader`, `no_leader: '1'`.
fn method(name: &str, no_leader: bool) -> crate::replica::ReplicaMethod {
    let mut options = serde_json::Map::new();
    if name != "basebackup" {
        options.insert("command".into(), format!("/usr/local/bin/{name}").into());
    }
    if no_leader {
        options.insert("no_leader".into(), "1".into());
    }
    crate::replica::ReplicaMethod::new(name, options)
}

/// An initialized cluster (`initialize` as given) whose leader is gone: pg1 and pg2
/// left, pg3 (me) is new.
fn no_leader_cluster(initialize: Option<&str>) -> Cluster {
    let mut c = cluster(None, initialize, Some(100));
    c.members.retain(|m| m.name == "pg3");
    c
}

/// pg1 leads; pg2 is a running replica tagged `clonefrom`.
fn clonefrom_pg2() -> Cluster {
    let mut c = cluster(Some("pg1"), Some(SYSID), Some(100));
    for m in &mut c.members {
        if m.name == "pg2" {
            m.data
                .tags
                .insert("clonefrom".into(), serde_json::Value::Bool(true));
        }
    }
    c
}

fn demote(mode: DemoteMode) -> Action {
    Action::Demote { mode }
}

fn start_replica(up: Option<&str>) -> Action {
    Action::StartReplica {
        upstream: up.map(str::to_string),
    }
}

fn cases() -> Vec<Case> {
    let locked_pg1 = || Some(cluster(Some("pg1"), Some(SYSID), Some(100)));
    let unlocked = || Some(cluster(None, Some(SYSID), Some(100)));
    let empty_dir = LocalPg::default();
    vec![
        // --- bootstrap (B1–B3)
        case("fresh cluster: race won bootstraps", "pg1", Some(empty_cluster()), empty_dir.clone())
            .world(World { initialize_race: true, ..World::default() })
            .expect(vec![Action::Bootstrap], "trying to bootstrap a new cluster"),
        case("fresh cluster: race lost waits", "pg2", Some(empty_cluster()), empty_dir.clone())
            .expect(vec![], "failed to acquire initialize lock"),
        case("nofailover node never bootstraps", "pg2", Some(empty_cluster()), empty_dir.clone())
            .settings(|s| s.nofailover = true)
            .expect(vec![], "waiting for leader to bootstrap"),
        case("no bootstrap section: wait", "pg2", Some(empty_cluster()), empty_dir.clone())
            .settings(|s| s.can_bootstrap = false)
            .expect(vec![], "waiting for leader to bootstrap"),
        case("bootstrap in progress elsewhere: wait", "pg2", Some(cluster(None, Some(""), None)), empty_dir.clone())
            .expect(vec![], "waiting for leader to bootstrap"),
        case("empty data dir with a leader: clone from it", "pg3", locked_pg1(), empty_dir.clone())
            .expect(
                vec![clone_from(Some("pg1"), Some("pg1"), &["basebackup"], "from leader 'pg1'")],
                "trying to bootstrap from leader 'pg1'",
            ),
        case("empty data dir with a leader: the configured methods, in order", "pg3", locked_pg1(), empty_dir.clone())
            .settings(|s| s.replica_methods = vec![method("wal_g", true), method("basebackup", false)])
            .expect(
                vec![clone_from(Some("pg1"), Some("pg1"), &["wal_g", "basebackup"], "from leader 'pg1'")],
                "trying to bootstrap from leader 'pg1'",
            ),
        case("clonefrom replica is the source, the leader is followed", "pg3", Some(clonefrom_pg2()), empty_dir.clone())
            .expect(
                vec![clone_from(Some("pg2"), Some("pg1"), &["basebackup"], "from replica 'pg2'")],
                "trying to bootstrap from replica 'pg2'",
            ),
        // --- B3: no leader, but a method works without one
        case("no leader, a no_leader method: bootstrap (without leader)", "pg3", Some(no_leader_cluster(Some(SYSID))), empty_dir.clone())
            .settings(|s| s.replica_methods = vec![method("custom", false), method("backup", true), method("basebackup", false)])
            .expect(
                vec![clone_from(None, None, &["backup"], "(without leader)")],
                "trying to bootstrap (without leader)",
            ),
        case("no leader, no initialize key either: bootstrap (without leader) too", "pg3", Some(no_leader_cluster(None)), empty_dir.clone())
            .settings(|s| { s.can_bootstrap = false; s.replica_methods = vec![method("backup", true)] })
            .expect(
                vec![clone_from(None, None, &["backup"], "(without leader)")],
                "trying to bootstrap (without leader)",
            ),
        case("no leader, nofailover node may still build itself without one", "pg3", Some(no_leader_cluster(Some(SYSID))), empty_dir.clone())
            .settings(|s| { s.nofailover = true; s.replica_methods = vec![method("backup", true)] })
            .expect(
                vec![clone_from(None, None, &["backup"], "(without leader)")],
                "trying to bootstrap (without leader)",
            ),
        case("no leader, someone is bootstrapping right now: wait", "pg3", Some(no_leader_cluster(Some(""))), empty_dir.clone())
            .settings(|s| s.replica_methods = vec![method("backup", true)])
            .expect(vec![], "waiting for leader to bootstrap"),
        case("no leader, no method works without one: wait", "pg3", Some(no_leader_cluster(Some(SYSID))), empty_dir.clone())
            .settings(|s| s.replica_methods = vec![method("custom", false), method("basebackup", false)])
            .expect(vec![], "waiting for leader to bootstrap"),
        case("no leader, default methods: wait", "pg3", Some(no_leader_cluster(Some(SYSID))), empty_dir.clone())
            .expect(vec![], "waiting for leader to bootstrap"),
        case("no leader, paused: nothing is built", "pg3", Some(no_leader_cluster(Some(SYSID))), empty_dir.clone())
            .settings(|s| { s.paused = true; s.replica_methods = vec![method("backup", true)] })
            .expect(vec![], "PAUSE: running with empty data directory"),
        case("uninitialized cluster, bootstrap race comes first", "pg1", Some(empty_cluster()), empty_dir.clone())
            .settings(|s| s.replica_methods = vec![method("backup", true)])
            .world(World { initialize_race: true, ..World::default() })
            .expect(vec![Action::Bootstrap], "trying to bootstrap a new cluster"),
        case("a replica built without a leader, not in the failsafe topology, never races", "pg3",
                Some(with_failsafe(no_leader_cluster(Some(SYSID)), &["pg1"])), LocalPg { following: None, streaming: false, ..replica(100) })
            .settings(|s| { s.failsafe_mode = true; s.replica_methods = vec![method("backup", true)] })
            .expect(vec![], "following a different leader because i am not the healthiest node (I am not in the failsafe topology)"),
        // --- background actions and B4
        case("clone in progress: nothing else is decided", "pg3", locked_pg1(), empty_dir.clone())
            .memory(NodeMemory { task: Some("bootstrap from leader 'pg1'".into()), ..NodeMemory::default() })
            .expect(vec![], "bootstrap from leader 'pg1' in progress"),
        case("background action while holding the lock: the lock is renewed", "pg1", locked_pg1(), stopped(false, 1))
            .memory(NodeMemory { task: Some("reinitialize".into()), ..NodeMemory::default() })
            .expect(vec![], "updated leader lock during reinitialize"),
        case("background action, lock lost: reported in progress", "pg1", locked_pg1(), stopped(false, 1))
            .memory(NodeMemory { task: Some("reinitialize".into()), ..NodeMemory::default() })
            .world(World { update: Some(LockUpdate::Lost), ..World::default() })
            .expect(vec![], "reinitialize in progress"),
        case("bootstrap in progress in the background", "pg1", Some(cluster(None, Some(""), None)), empty_dir.clone())
            .memory(NodeMemory { task: Some("bootstrap".into()), bootstrap: Some(Bootstrapping::default()), ..NodeMemory::default() })
            .expect(vec![], "bootstrap in progress"),
        case("custom bootstrap still replaying WAL: wait", "pg1", Some(cluster(None, Some(""), None)), LocalPg { is_primary: false, ..replica(0) })
            .memory(NodeMemory { bootstrap: Some(Bootstrapping::default()), ..NodeMemory::default() })
            .expect(vec![], "waiting for end of recovery after bootstrap"),
        case("bootstrapped primary: run post_bootstrap", "pg1", Some(cluster(None, Some(""), None)), primary())
            .memory(NodeMemory { bootstrap: Some(Bootstrapping::default()), ..NodeMemory::default() })
            .expect(vec![Action::PostBootstrap], "running post_bootstrap"),
        case("post_bootstrap done: publish the cluster", "pg1", Some(cluster(None, Some(""), None)), primary())
            .memory(NodeMemory { bootstrap: Some(Bootstrapping { post_bootstrap: Some(true), ..Bootstrapping::default() }), ..NodeMemory::default() })
            .expect(vec![Action::FinishBootstrap], "initialized a new cluster"),
        case("post_bootstrap failed: cancel", "pg1", Some(cluster(None, Some(""), None)), primary())
            .memory(NodeMemory { bootstrap: Some(Bootstrapping { post_bootstrap: Some(false), ..Bootstrapping::default() }), ..NodeMemory::default() })
            .expect(vec![Action::CancelBootstrap], "removing initialize key after failed attempt to bootstrap the cluster"),
        case("bootstrap failed (script or start): cancel", "pg1", Some(cluster(None, Some(""), None)), empty_dir.clone())
            .memory(NodeMemory { bootstrap: Some(Bootstrapping { failed: true, ..Bootstrapping::default() }), ..NodeMemory::default() })
            .expect(vec![Action::CancelBootstrap], "removing initialize key after failed attempt to bootstrap the cluster"),
        case("bootstrapped PostgreSQL died: cancel", "pg1", Some(cluster(None, Some(""), None)), stopped(false, 1))
            .memory(NodeMemory { bootstrap: Some(Bootstrapping::default()), ..NodeMemory::default() })
            .expect(vec![Action::CancelBootstrap], "removing initialize key after failed attempt to bootstrap the cluster"),
        case("empty data dir while holding the lock: release", "pg1", locked_pg1(), empty_dir.clone())
            .expect(vec![Action::ReleaseLeader], "released leader key voluntarily as data dir empty"),
        case("invalid data dir: refuse to touch it", "pg2", locked_pg1(), LocalPg { data_dir: DataDir::Invalid("no pg_control".into()), ..LocalPg::default() })
            .expect(vec![], "system ID is invalid"),
        // --- standby clusters
        // (see standby_cases)
        // --- L9 sysid checks
        case("sysid mismatch is fatal", "pg2", Some(cluster(Some("pg1"), Some("1111111111111111111"), None)), replica(100))
            .expect(
                vec![Action::Exit { message: format!("system ID mismatch, node pg2 belongs to a different cluster: 1111111111111111111 != {SYSID}") }],
                "system ID mismatch",
            ),
        case("no initialize and running replica: abort start", "pg2", Some(cluster(None, None, None)), replica(100))
            .memory(NodeMemory { first_cycle: true, ..NodeMemory::default() })
            .expect(
                vec![Action::Exit { message: "No initialize key in DCS and PostgreSQL is running as replica, aborting start".into() }],
                "aborting start",
            ),
        case("no initialize and running primary: adopt it", "pg1", Some(cluster(None, None, None)), primary())
            .memory(NodeMemory { first_cycle: true, ..NodeMemory::default() })
            .world(World { acquire: true, probes: vec![peer("pg2", 50)], ..World::default() })
            .expect(
                vec![Action::WriteInitialize { sysid: SYSID.into() }, Action::ActivateWatchdog, Action::LeaderHousekeeping],
                "acquired session lock as a leader",
            ),
        // --- cluster locked (H2, H3)
        case("leader keeps the lock", "pg1", locked_pg1(), primary())
            .expect(vec![Action::ActivateWatchdog, Action::LeaderHousekeeping], "no action. I am (pg1), the leader with the lock"),
        case("leader lost the lock (CAS failed): demote", "pg1", locked_pg1(), primary())
            .world(World { update: Some(LockUpdate::Lost), ..World::default() })
            .expect(vec![demote(DemoteMode::ImmediateNoLock)], "demoted self because failed to update leader lock in DCS"),
        case("leader cannot reach the DCS during update: demote offline", "pg1", locked_pg1(), primary())
            .world(World { update: Some(LockUpdate::DcsError), ..World::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("lock holder running as replica promotes", "pg1", locked_pg1(), replica(100))
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self to leader because I had the session lock"),
        case("replica follows the leader", "pg2", locked_pg1(), replica(100))
            .expect(vec![], "no action. I am (pg2), a secondary, and following a leader (pg1)"),
        case("replica re-points to a new leader", "pg2", Some(cluster(Some("pg3"), Some(SYSID), None)), replica(100))
            .expect(vec![Action::Follow { upstream: "pg3".into() }], "following a leader (pg3)"),
        case("replicatefrom cascades from the named member", "pg3", locked_pg1(), replica(90))
            .settings(|s| s.replicatefrom = Some("pg2".into()))
            .expect(vec![Action::Follow { upstream: "pg2".into() }], "following a leader (pg1)"),
        case("primary without the lock demotes", "pg2", locked_pg1(), primary())
            .expect(vec![demote(DemoteMode::ImmediateNoLock)], "demoting self because I do not have the lock and I was a leader"),
        // --- DCS unreachable (D1)
        case("DCS down: primary demotes", "pg1", None, primary())
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("DCS down, lock still valid for a while: primary keeps taking writes", "pg1", None, primary())
            .settings(|s| { s.loop_wait = 2; s.retry_timeout = 5 })
            .memory(NodeMemory { leader_until_ms: Some(15_000), ..NodeMemory::default() })
            .expect(vec![], "DCS is not accessible; keeping the primary while the leader lock is still mine (14 s left)"),
        case("DCS down, lock about to expire: primary demotes", "pg1", None, primary())
            .memory(NodeMemory { leader_until_ms: Some(1_000 + FENCE_MARGIN_MS + 5_000), ..NodeMemory::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        // The next decision may come a loop_wait and a whole retry_timeout (a cluster
        // read against a DCS that does not answer) later: past the fence deadline here.
        case("DCS down, lock expires before a slow next cycle: primary demotes", "pg1", None, primary())
            .settings(|s| { s.loop_wait = 2; s.retry_timeout = 5 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + FENCE_MARGIN_MS + 6_000), ..NodeMemory::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("DCS down, lock outlasts a slow next cycle: primary keeps taking writes", "pg1", None, primary())
            .settings(|s| { s.loop_wait = 2; s.retry_timeout = 5 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + FENCE_MARGIN_MS + 7_001), ..NodeMemory::default() })
            .expect(vec![], "DCS is not accessible; keeping the primary while the leader lock is still mine (9 s left)"),
        // The shortest lease (ttl 4, loop_wait 1, retry_timeout 1: margin 1 s). Right
        // after a renewal the next decision (1 s + 1 s) still comes 1 s before the fence
        // deadline: keep; one cycle later it could not: demote before the guard acts.
        case("ttl 4, DCS down right after a renewal: primary keeps taking writes", "pg1", None, primary())
            .settings(|s| { s.ttl = 4; s.loop_wait = 1; s.retry_timeout = 1 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + 4_000), ..NodeMemory::default() })
            .expect(vec![], "DCS is not accessible; keeping the primary while the leader lock is still mine (4 s left)"),
        case("ttl 4, DCS down a cycle after the renewal: primary demotes", "pg1", None, primary())
            .settings(|s| { s.ttl = 4; s.loop_wait = 1; s.retry_timeout = 1 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + 4_000 - 1_000), ..NodeMemory::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("ttl 4: the margin is 1 s, not 2 (1 ms past the boundary keeps)", "pg1", None, primary())
            .settings(|s| { s.ttl = 4; s.loop_wait = 1; s.retry_timeout = 1 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + MIN_FENCE_MARGIN_MS + 2_000 + 1), ..NodeMemory::default() })
            .expect(vec![], "DCS is not accessible; keeping the primary while the leader lock is still mine (3 s left)"),
        case("ttl 4: at the boundary the primary demotes", "pg1", None, primary())
            .settings(|s| { s.ttl = 4; s.loop_wait = 1; s.retry_timeout = 1 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + MIN_FENCE_MARGIN_MS + 2_000), ..NodeMemory::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("ttl 8 keeps the 2 s margin", "pg1", None, primary())
            .settings(|s| { s.ttl = 8; s.loop_wait = 2; s.retry_timeout = 3 })
            .memory(NodeMemory { leader_until_ms: Some(1_000 + FENCE_MARGIN_MS + 5_000), ..NodeMemory::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("DCS down: replica waits", "pg2", None, replica(100))
            .expect(vec![], "DCS is not accessible"),
        case("DCS down while paused: primary keeps running", "pg1", None, primary())
            .settings(|s| s.paused = true)
            .expect(vec![], "PAUSE: DCS is not accessible"),
        // --- frozen primary (F1)
        case("frozen primary under my lock: killed, lock released", "pg1", locked_pg1(),
            LocalPg { unresponsive_ms: 15_000, ..primary() })
            .expect(vec![Action::KillPostgres, Action::ReleaseLeader], "PostgreSQL has not answered for 15 s: killed it and released the leader lock"),
        case("primary slow for a moment: kept", "pg1", locked_pg1(),
            LocalPg { unresponsive_ms: 5_000, ..primary() })
            .expect(vec![Action::ActivateWatchdog, Action::LeaderHousekeeping], "no action. I am (pg1), the leader with the lock"),
        case("frozen primary while paused: left alone", "pg1", locked_pg1(),
            LocalPg { unresponsive_ms: 60_000, ..primary() })
            .settings(|s| s.paused = true)
            .expect(vec![Action::LeaderHousekeeping], "PAUSE: no action. I am (pg1), the leader with the lock"),
        case("after killing its frozen primary a node leaves the race to others", "pg1", unlocked(), replica(100))
            .memory(NodeMemory { primary_given_up_at_ms: Some(500), ..NodeMemory::default() })
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following a different leader because i am not the healthiest node (I gave up the primary role because PostgreSQL stopped answering)"),
        // --- failsafe mode (D2)
        case("failsafe: DCS down, every member acknowledges: primary keeps running", "pg1", None, primary())
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg1", "pg2", "pg3"], None))
            .expect(vec![Action::FailsafeContinue], "continue to run as a leader because failsafe mode is enabled and all members are accessible"),
        case("failsafe: lock update fails, every member acknowledges", "pg1", locked_pg1(), primary())
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg1", "pg2", "pg3"], None))
            .world(World { update: Some(LockUpdate::DcsError), ..World::default() })
            .expect(vec![Action::FailsafeContinue], "continue to run as a leader because failsafe mode is enabled and all members are accessible"),
        case("failsafe: a member does not acknowledge: demote", "pg1", None, primary())
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg1", "pg2", "pg3"], None))
            .world(World { failsafe_acks: Some(false), ..World::default() })
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("failsafe: single-node topology needs nobody", "pg1", None, primary())
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg1"], None))
            .expect(vec![Action::FailsafeContinue], "continue to run as a leader because failsafe mode is enabled and all members are accessible"),
        case("failsafe: not in the topology: demote", "pg1", None, primary())
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg2", "pg3"], None))
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("failsafe: topology unknown: demote", "pg1", None, primary())
            .settings(|s| s.failsafe_mode = true)
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("failsafe off: the topology is not used", "pg1", None, primary())
            .memory(failsafe_memory(&["pg1", "pg2"], None))
            .expect(vec![demote(DemoteMode::Offline)], "demoted self because DCS is not accessible and I was a leader"),
        case("failsafe: the leader writes the topology", "pg1", locked_pg1(), primary())
            .settings(|s| s.failsafe_mode = true)
            .expect(
                vec![
                    Action::ActivateWatchdog,
                    Action::LeaderHousekeeping,
                    Action::WriteFailsafe {
                        value: r#"{"pg1":"http://127.0.0.1:6001/patroni","pg2":"http://127.0.0.1:6002/patroni","pg3":"http://127.0.0.1:6003/patroni"}"#.into(),
                    },
                ],
                "no action. I am (pg1), the leader with the lock",
            ),
        case("failsafe: an unchanged topology is not rewritten", "pg1",
            Some(with_failsafe(cluster(Some("pg1"), Some(SYSID), Some(100)), &["pg1", "pg2", "pg3"])), primary())
            .settings(|s| s.failsafe_mode = true)
            .expect(vec![Action::ActivateWatchdog, Action::LeaderHousekeeping], "no action. I am (pg1), the leader with the lock"),
        case("failsafe: a replica pinged by the primary follows it and does not race", "pg2", unlocked(), replica(100))
            .settings(|s| s.failsafe_mode = true)
            .memory(failsafe_memory(&["pg1", "pg2", "pg3"], Some("pg1")))
            .expect(vec![], "no action. I am (pg2), a secondary, and following a leader (pg1)"),
        case("failsafe: a replica missing from the topology never takes over", "pg2",
            Some(with_failsafe(cluster(None, Some(SYSID), Some(100)), &["pg1", "pg3"])), replica(100))
            .settings(|s| s.failsafe_mode = true)
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following a different leader because i am not the healthiest node (I am not in the failsafe topology)"),
        // --- leader race (U2, U3, C1, C2)
        case("unlocked: healthiest replica promotes", "pg2", unlocked(), replica(100))
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self to leader by acquiring session lock (I am the healthiest of 3 members)"),
        case("unlocked: lost the race follows", "pg2", unlocked(), replica(100))
            .world(World { acquire: false, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following new leader after trying and failing to obtain lock"),
        case("unlocked: a member ahead wins", "pg3", unlocked(), replica(90))
            .world(World { probes: vec![peer("pg2", 100)], ..World::default() })
            .expect(vec![], "Wal position of pg2 is ahead of my wal position"),
        case("unlocked: unreachable members do not count", "pg3", unlocked(), replica(90))
            .world(World { acquire: true, probes: vec![PeerStatus { reachable: false, ..peer("pg2", 100) }], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self to leader by acquiring session lock"),
        case("unlocked: nofailover peers ahead do not count", "pg3", unlocked(), replica(90))
            .world(World { acquire: true, probes: vec![PeerStatus { nofailover: true, ..peer("pg2", 100) }], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        case("unlocked: old primary still alive", "pg2", unlocked(), replica(100))
            .world(World { probes: vec![PeerStatus { is_primary: true, ..peer("pg1", 0) }], ..World::default() })
            .expect(vec![], "Primary (pg1) is still alive"),
        case("unlocked: higher failover_priority at equal WAL wins", "pg2", unlocked(), replica(100))
            .world(World { probes: vec![PeerStatus { failover_priority: 2, ..peer("pg3", 100) }], ..World::default() })
            .expect(vec![], "pg3 has equally tolerable WAL position and priority 2, while this node has priority 1"),
        case("unlocked: nofailover never races", "pg2", unlocked(), replica(100))
            .settings(|s| s.nofailover = true)
            .expect(vec![], "following a different leader because I am not allowed to promote"),
        case("unlocked: lag beyond maximum_lag_on_failover does not race", "pg3", Some(cluster(None, Some(SYSID), Some(10_000_000))), replica(90))
            .expect(vec![], "My wal position exceeds maximum replication lag"),
        case("unlocked: check_timeline refuses an old timeline", "pg3", {
                let mut c = cluster(None, Some(SYSID), Some(100));
                c.history = Some(vec![crate::cluster::HistoryLine { timeline: 1, lsn: 50, reason: String::new(), timestamp: None, new_leader: None }]);
                Some(c)
            }, replica(90))
            .settings(|s| s.check_timeline = true)
            .expect(vec![], "behind the cluster timeline"),
        case("unlocked: primary re-acquires without promoting", "pg1", unlocked(), primary())
            .world(World { acquire: true, ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::LeaderHousekeeping], "acquired session lock as a leader"),
        case("unlocked: primary losing the race demotes", "pg1", unlocked(), primary())
            .world(World { acquire: false, ..World::default() })
            .expect(vec![demote(DemoteMode::ImmediateNoLock)], "demoted self after trying and failing to obtain lock"),
        case("unlocked and paused: replicas do not race", "pg2", unlocked(), replica(100))
            .settings(|s| s.paused = true)
            .expect(vec![], "PAUSE: no action. I am (pg2), cluster is unlocked"),
        // --- switchover / manual failover (L15, C3)
        case("leader: switchover to a healthy candidate demotes gracefully", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None)), primary())
            .world(World { probes: vec![peer("pg2", 100), peer("pg3", 90)], ..World::default() })
            .expect(vec![demote(DemoteMode::Graceful)], "switchover: demoting myself"),
        case("leader: switchover waits for a candidate that is not connected to it", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None)),
                LocalPg { standbys: vec![], ..primary() })
            .world(World { probes: vec![peer("pg2", 100), peer("pg3", 90)], ..World::default() })
            .expect(vec![Action::LeaderHousekeeping], "switchover: waiting for a candidate to stream from me"),
        case("sync mode: an asynchronous replica does not race", "pg3",
                Some(with_sync(cluster(None, Some(SYSID), Some(100)), r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#)), replica(100))
            .settings(|s| s.sync.mode = crate::sync::SyncMode::On)
            .world(World { acquire: true, probes: vec![peer("pg2", 90)], ..World::default() })
            .expect(vec![], "following a different leader because i am not the healthiest node (I am not a synchronous standby)"),
        case("sync mode: the sync standby promotes although an async replica is ahead", "pg2",
                Some(with_sync(cluster(None, Some(SYSID), Some(100)), r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#)), replica(100))
            .settings(|s| s.sync.mode = crate::sync::SyncMode::On)
            .world(World { acquire: true, probes: vec![peer("pg3", 120)], ..World::default() })
            .expect(vec![
                Action::ActivateWatchdog, Action::WriteSync { write: crate::sync::SyncKeyWrite { leader: "pg2".into(), standbys: vec![], quorum: 0, version: Some(5), chained: false }, message: "Synchronous replication key claimed before promote".into() },
                Action::SetStandbyNames { value: Some(String::new()), message: "Standby names set before promote".into() },
                Action::Promote, Action::LeaderHousekeeping,
            ], "promoted self to leader by acquiring session lock"),
        case("leader: manual failover without leader demotes gracefully", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), None, Some("pg3"), None)), primary())
            .world(World { probes: vec![peer("pg2", 100), peer("pg3", 100)], ..World::default() })
            .expect(vec![demote(DemoteMode::Graceful)], "manual failover: demoting myself"),
        case("leader: unreachable candidate clears the request", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None)), primary())
            .world(World { probes: vec![PeerStatus { reachable: false, ..peer("pg2", 100) }, peer("pg3", 100)], ..World::default() })
            .expect(vec![Action::LeaderHousekeeping, Action::ClearFailover { version: 42 }], "no healthy members found"),
        case("leader: lagging candidate clears the request", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg3"), None)), LocalPg { wal_position: 50_000_000, ..primary() })
            .world(World { probes: vec![peer("pg3", 10)], ..World::default() })
            .expect(vec![Action::LeaderHousekeeping, Action::ClearFailover { version: 42 }], "no healthy members found"),
        case("leader: request from another leader name is cleared", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg9"), Some("pg2"), None)), primary())
            .expect(vec![Action::LeaderHousekeeping, Action::ClearFailover { version: 42 }], "leader name does not match: pg9 != pg1"),
        case("leader: scheduled in the future waits", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), Some("2024-01-01T00:05:00+00:00"))), primary())
            .expect(vec![Action::LeaderHousekeeping], "Awaiting switchover at 2024-01-01T00:05:00+00:00 (in 300 seconds)"),
        case("leader: scheduled within a loop waits then demotes", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), Some("2024-01-01T01:00:05+01:00"))), primary())
            .world(World { probes: vec![peer("pg2", 100)], ..World::default() })
            .expect(vec![Action::WaitUntil { epoch_ms: NOW_EPOCH_MS + 5_000 }, demote(DemoteMode::Graceful)], "switchover: demoting myself"),
        case("leader: stale scheduled request is removed", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), Some("2023-12-31T23:00:00+00:00"))), primary())
            .expect(vec![Action::LeaderHousekeeping, Action::ClearFailover { version: 42 }], "stale switchover request"),
        case("leader: paused scheduled request is removed", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), Some("2024-01-01T00:05:00+00:00"))), primary())
            .settings(|s| s.paused = true)
            .expect(vec![Action::LeaderHousekeeping, Action::ClearFailover { version: 42 }], "PAUSE: switchover: scheduled switchovers are not allowed in pause"),
        case("leader: paused switchover to a named candidate is allowed", "pg1",
                Some(with_failover(cluster(Some("pg1"), Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None)), primary())
            .settings(|s| s.paused = true)
            .world(World { probes: vec![peer("pg2", 100)], ..World::default() })
            .expect(vec![demote(DemoteMode::Graceful)], "PAUSE: switchover: demoting myself"),
        case("unlocked: the requested candidate takes over and clears the request", "pg3",
                Some(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg3"), None)), replica(90))
            .world(World { acquire: true, ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "I am the requested candidate"),
        case("unlocked: others defer to a healthy requested candidate", "pg2",
                Some(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg3"), None)), replica(100))
            .world(World { probes: vec![peer("pg3", 90), peer("pg1", 0)], ..World::default() })
            .expect(vec![], "pg3 is the requested failover candidate"),
        case("unlocked: dead requested candidate: the best other node takes over", "pg2",
                Some(with_failover(cluster(None, Some(SYSID), Some(100)), None, Some("pg3"), None)), replica(100))
            .world(World { acquire: true, probes: vec![PeerStatus { reachable: false, ..peer("pg3", 90) }], ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        case("unlocked: switchover race ignores the former leader and lag", "pg3",
                Some(with_failover(cluster(None, Some(SYSID), Some(10_000_000)), Some("pg1"), None, None)), replica(90))
            .world(World { acquire: true, probes: vec![PeerStatus { is_primary: true, ..peer("pg1", 0) }], ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        case("unlocked and paused: only the named candidate races", "pg2",
                Some(with_failover(cluster(None, Some(SYSID), Some(100)), None, Some("pg2"), None)), replica(100))
            .settings(|s| s.paused = true)
            .world(World { acquire: true, ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::Promote, Action::LeaderHousekeeping], "PAUSE: promoted self"),
        // Quorum commit: a switchover the leader did not carry out (it died first) names a
        // candidate that may lack commits a quorum acknowledged; it must win the votes.
        case("quorum: a requested candidate behind a voter does not take over", "pg2",
                Some(with_sync(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None), QUORUM_KEY)), replica(90))
            .settings(|s| s.sync.mode = crate::sync::SyncMode::Quorum)
            .world(World { acquire: true, probes: vec![peer("pg3", 100), PeerStatus { reachable: false, ..peer("pg1", 0) }], ..World::default() })
            .expect(vec![], "Wal position of pg3 is ahead of my wal position"),
        case("quorum: a requested candidate with the votes takes over", "pg2",
                Some(with_sync(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None), QUORUM_KEY)), replica(100))
            .settings(|s| s.sync.mode = crate::sync::SyncMode::Quorum)
            .world(World { acquire: true, probes: vec![peer("pg3", 90), PeerStatus { reachable: false, ..peer("pg1", 0) }], ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, names_before_promote("ANY 1 (pg1,pg3)"), Action::Promote, Action::LeaderHousekeeping], "I am the requested candidate"),
        case("quorum: a voter ahead of the requested candidate races instead of deferring", "pg3",
                Some(with_sync(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg2"), None), QUORUM_KEY)), replica(100))
            .settings(|s| s.sync.mode = crate::sync::SyncMode::Quorum)
            .world(World { acquire: true, probes: vec![peer("pg2", 90), PeerStatus { reachable: false, ..peer("pg1", 0) }], ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, names_before_promote("ANY 1 (pg1,pg2)"), Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        // --- PostgreSQL not running (R1–R6)
        case("lock holder crashed: restart as primary", "pg1", locked_pg1(), stopped(true, 1))
            .expect(vec![Action::StartPrimary], "starting primary after failure"),
        case("lock holder whose PostgreSQL failed to start gives up the lock", "pg1", locked_pg1(), stopped(true, 1))
            .memory(NodeMemory { start_failed: true, ..NodeMemory::default() })
            .expect(vec![Action::AbandonLeader], "removed leader key after trying and failing to start postgres"),
        case("primary_start_timeout 0: crashed primary fails over to a healthy replica", "pg1", locked_pg1(), stopped(true, 1))
            .settings(|s| s.primary_start_timeout = 0)
            .world(World { probes: vec![peer("pg2", 100), peer("pg3", 90)], ..World::default() })
            .expect(vec![demote(DemoteMode::Immediate)], "stopped PostgreSQL to fail over after a crash"),
        case("primary_start_timeout 0 but nobody can take over: restart", "pg1", locked_pg1(), stopped(true, 1))
            .settings(|s| s.primary_start_timeout = 0)
            .world(World { probes: vec![PeerStatus { nofailover: true, ..peer("pg2", 100) }, PeerStatus { reachable: false, ..peer("pg3", 100) }], ..World::default() })
            .expect(vec![Action::StartPrimary], "starting primary after failure"),
        case("lock holder replica stopped: start read-only", "pg1", locked_pg1(), stopped(false, 1))
            .expect(vec![start_replica(None)], "starting as readonly because i had the session lock"),
        case("stopped replica restarts following the leader", "pg2", locked_pg1(), stopped(false, 1))
            .memory(NodeMemory { was_running: true, ..NodeMemory::default() })
            .expect(vec![start_replica(Some("pg1"))], "restarting after failure"),
        case("old primary, diverged, rewinds", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| s.can_rewind = true)
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![Action::Rewind { source: "pg1".into() }, start_replica(Some("pg1"))], "running pg_rewind from pg1"),
        case("old primary, diverged, leader's post-promote checkpoint pending: waits", "pg2",
                Some(checkpoint_pending(cluster(Some("pg1"), Some(SYSID), Some(100)))), stopped(true, 1))
            .settings(|s| s.can_rewind = true)
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![], "Waiting for checkpoint on pg1 before rewind"),
        case("rewind failed against a healthy leader twice: tried again", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| s.can_rewind = true)
            .memory(NodeMemory { rewind_failures: crate::ha::REWIND_ATTEMPTS - 1, ..NodeMemory::default() })
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![Action::Rewind { source: "pg1".into() }, start_replica(Some("pg1"))], "running pg_rewind from pg1"),
        case("rewind failed against a healthy leader REWIND_ATTEMPTS times: failed for good", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| s.can_rewind = true)
            .memory(NodeMemory { rewind_failures: crate::ha::REWIND_ATTEMPTS, ..NodeMemory::default() })
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![start_replica(Some("pg1"))], "pg_rewind from pg1 failed; starting as a secondary anyway"),
        case("rewind failed, remove_data_directory_on_rewind_failure: rebuild", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| { s.can_rewind = true; s.remove_data_on_rewind_failure = true })
            .memory(NodeMemory { rewind_failed: true, ..NodeMemory::default() })
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(
                vec![Action::Warn { message: "remove_data_directory_on_rewind_failure is set. removing...".into() }, Action::RemoveDataDir],
                "reinitializing after a failed pg_rewind from pg1",
            ),
        case("rewind failed, remove_data_directory_on_diverged_timelines: rebuild too", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| { s.can_rewind = true; s.reinit_on_divergence = true })
            .memory(NodeMemory { rewind_failed: true, ..NodeMemory::default() })
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(
                vec![Action::Warn { message: "remove_data_directory_on_diverged_timelines is set. removing...".into() }, Action::RemoveDataDir],
                "reinitializing after a failed pg_rewind from pg1",
            ),
        case("rewind failed, nothing allows removal: start anyway, no new rewind", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| s.can_rewind = true)
            .memory(NodeMemory { rewind_failed: true, ..NodeMemory::default() })
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![start_replica(Some("pg1"))], "pg_rewind from pg1 failed; starting as a secondary anyway"),
        case("old primary, diverged, no rewind: reinit when allowed", "pg2", locked_pg1(), stopped(true, 1))
            .settings(|s| s.reinit_on_divergence = true)
            .world(World { divergence: Some(Divergence::Diverged), ..World::default() })
            .expect(vec![Action::RemoveDataDir], "reinitializing due to diverged timelines"),
        case("old primary, not diverged, just follows", "pg2", locked_pg1(), stopped(true, 1))
            .world(World { divergence: Some(Divergence::NotDiverged), ..World::default() })
            .expect(vec![start_replica(Some("pg1"))], "starting as a secondary"),
        case("stopped node in unlocked cluster starts read-only", "pg2", unlocked(), stopped(false, 1))
            .expect(vec![start_replica(None)], "starting as a secondary"),
        case("paused: stopped PostgreSQL is left alone", "pg2", locked_pg1(), stopped(false, 1))
            .settings(|s| s.paused = true)
            .expect(vec![], "PAUSE: postgres is not running"),
        case("paused: lock holder with stopped PostgreSQL releases", "pg1", locked_pg1(), stopped(true, 1))
            .settings(|s| s.paused = true)
            .expect(vec![Action::ReleaseLeader], "removed leader lock because postgres is not running"),
        // --- watchdog (P1, C1.7): `watchdog_failed` = required and not usable
        case("watchdog required but unusable: a replica does not race", "pg2", unlocked(), replica(100))
            .settings(|s| s.watchdog_failed = true)
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following a different leader because i am not the healthiest node (Watchdog device is not usable)"),
        case("watchdog required but unusable: lock holder replica gives the lock back", "pg1", locked_pg1(), replica(100))
            .settings(|s| s.watchdog_failed = true)
            .expect(vec![Action::ReleaseLeader], "Not promoting self because watchdog could not be activated"),
        case("watchdog required but unusable: the leader demotes", "pg1", locked_pg1(), primary())
            .settings(|s| s.watchdog_failed = true)
            .expect(vec![demote(DemoteMode::Immediate)], "Demoting self because watchdog could not be activated"),
        case("watchdog required but unusable: a primary that re-acquires demotes", "pg1", unlocked(), primary())
            .settings(|s| s.watchdog_failed = true)
            .world(World { acquire: true, ..World::default() })
            .expect(vec![demote(DemoteMode::Immediate)], "Demoting self because watchdog could not be activated"),
        case("watchdog is not armed in pause: the paused leader keeps its role", "pg1", locked_pg1(), primary())
            .settings(|s| { s.paused = true; s.watchdog_failed = true; })
            .expect(vec![Action::LeaderHousekeeping], "PAUSE: no action. I am (pg1), the leader with the lock"),
        case("a failed watchdog elsewhere does not matter: peers reporting it do not count", "pg3", unlocked(), replica(90))
            .world(World { acquire: true, probes: vec![PeerStatus { watchdog_failed: true, ..peer("pg2", 100) }], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        // --- primary_race_backoff (U1); run() decides at now_ms = 1_000
        case("race backoff: first unlocked observation postpones and starts the timer", "pg2", unlocked(), replica(100))
            .settings(|s| { s.primary_race_backoff = 6; s.loop_wait = 3; })
            .memory(NodeMemory { prev_wal_position: Some(100), ..NodeMemory::default() })
            .expect(vec![Action::PostponeRace { started_ms: 1_000, retry_in_ms: 6_000 }],
                "My (pg2) wal position moved since last heart beat loop, 6 seconds until leader race"),
        case("race backoff: WAL still moving after the first loop_wait postpones", "pg2", unlocked(), replica(150))
            .settings(|s| { s.primary_race_backoff = 6; s.loop_wait = 1; })
            .memory(NodeMemory { prev_wal_position: Some(100), race_backoff_started_ms: Some(0), ..NodeMemory::default() })
            .expect(vec![Action::PostponeRace { started_ms: 0, retry_in_ms: 5_000 }],
                "My (pg2) wal position moved since last heart beat loop, 5 seconds until leader race"),
        case("race backoff: WAL not moving after the first loop_wait races", "pg2", unlocked(), replica(100))
            .settings(|s| { s.primary_race_backoff = 10; s.loop_wait = 1; })
            .memory(NodeMemory { prev_wal_position: Some(100), race_backoff_started_ms: Some(0), ..NodeMemory::default() })
            .world(World { acquire: false, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following new leader after trying and failing to obtain lock"),
        case("race backoff: WAL moving but not streaming races", "pg2", unlocked(), LocalPg { streaming: false, ..replica(150) })
            .settings(|s| { s.primary_race_backoff = 10; s.loop_wait = 1; })
            .memory(NodeMemory { prev_wal_position: Some(100), race_backoff_started_ms: Some(0), ..NodeMemory::default() })
            .world(World { acquire: false, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![], "following new leader after trying and failing to obtain lock"),
        case("race backoff: expired, WAL still moving: race", "pg2", unlocked(), replica(150))
            .settings(|s| { s.primary_race_backoff = 1; s.loop_wait = 1; })
            .memory(NodeMemory { prev_wal_position: Some(100), race_backoff_started_ms: Some(0), ..NodeMemory::default() })
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        case("race backoff: within the first loop_wait postpones even if WAL stands still", "pg2", unlocked(), replica(100))
            .settings(|s| { s.primary_race_backoff = 10; s.loop_wait = 3; })
            .memory(NodeMemory { prev_wal_position: Some(100), race_backoff_started_ms: Some(0), ..NodeMemory::default() })
            .expect(vec![Action::PostponeRace { started_ms: 0, retry_in_ms: 9_000 }],
                "My (pg2) wal position moved since last heart beat loop, 9 seconds until leader race"),
        case("race backoff: off when no previous WAL position is known", "pg2", unlocked(), replica(100))
            .settings(|s| s.primary_race_backoff = 6)
            .world(World { acquire: true, probes: vec![peer("pg3", 90)], ..World::default() })
            .expect(vec![Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "promoted self"),
        case("race backoff: not in pause", "pg2", unlocked(), replica(100))
            .settings(|s| { s.primary_race_backoff = 6; s.paused = true; })
            .memory(NodeMemory { prev_wal_position: Some(100), ..NodeMemory::default() })
            .expect(vec![], "PAUSE: no action. I am (pg2), cluster is unlocked"),
        case("race backoff: not when a failover request names a candidate", "pg3",
                Some(with_failover(cluster(None, Some(SYSID), Some(100)), Some("pg1"), Some("pg3"), None)), replica(90))
            .settings(|s| s.primary_race_backoff = 6)
            .memory(NodeMemory { prev_wal_position: Some(80), ..NodeMemory::default() })
            .world(World { acquire: true, ..World::default() })
            .expect(vec![Action::ClearFailover { version: 42 }, Action::ActivateWatchdog, Action::Promote, Action::LeaderHousekeeping], "I am the requested candidate"),
    ]
    .into_iter()
    .chain(standby_cases())
    .chain(config_cases())
    .collect()
}

/// The remote site the standby-cluster cases follow.
fn remote() -> crate::standby::RemoteSource {
    crate::standby::RemoteSource {
        host: Some("10.0.0.9".into()),
        port: Some(5432),
        slot: Some("pm_1".into()),
        ..Default::default()
    }
}

fn standby_settings(s: &mut HaSettings) {
    s.standby_cluster = Some(crate::standby::StandbyCluster {
        source: remote(),
        create_replica_methods: vec!["basebackup".into()],
    });
}

/// A running standby that follows the remote site (as standby leader or not).
fn following_remote(standby_leader: bool) -> LocalPg {
    LocalPg {
        following: None,
        remote: Some(remote()),
        standby_leader,
        ..replica(100)
    }
}

fn follow_remote(standby_leader: bool) -> Action {
    Action::FollowRemote {
        source: remote(),
        standby_leader,
    }
}

/// Standby cluster (Patroni's `is_standby_cluster()` branches): the lock holder is a
/// standby leader following the remote site, nothing promotes, a primary is demoted.
fn standby_cases() -> Vec<Case> {
    let locked_pg1 = || Some(cluster(Some("pg1"), Some(SYSID), Some(100)));
    let unlocked = || Some(cluster(None, Some(SYSID), Some(100)));
    let behind = vec![peer("pg2", 50), peer("pg3", 50)];
    let archive_only = crate::standby::RemoteSource {
        restore_command: Some("cp /archive/%f %p".into()),
        ..Default::default()
    };
    vec![
        // --- bootstrap: the race winner builds the standby leader from the remote site
        case(
            "standby: race won bootstraps a standby leader",
            "pg1",
            Some(empty_cluster()),
            LocalPg::default(),
        )
        .settings(standby_settings)
        .world(World {
            initialize_race: true,
            ..World::default()
        })
        .expect(
            vec![Action::BootstrapStandbyLeader {
                source: remote(),
                create_replica_methods: vec!["basebackup".into()],
            }],
            "trying to bootstrap a new standby leader",
        ),
        // --- no leader anywhere: the standby cluster's own methods decide (B3)
        case(
            "standby: no leader, a no_leader method of standby_cluster builds the member",
            "pg2",
            Some(cluster(None, Some(SYSID), None)),
            LocalPg::default(),
        )
        .settings(|s| {
            standby_settings(s);
            if let Some(sc) = s.standby_cluster.as_mut() {
                sc.create_replica_methods = vec!["restore".into(), "basebackup".into()];
            }
            s.replica_method_sections = vec![method("restore", true)];
        })
        .expect(
            vec![clone_from(None, None, &["restore"], "(without leader)")],
            "trying to bootstrap (without leader)",
        ),
        case(
            "standby: no leader, the member's own no_leader method is not the standby cluster's",
            "pg2",
            Some(cluster(None, Some(SYSID), None)),
            LocalPg::default(),
        )
        .settings(|s| {
            standby_settings(s);
            s.replica_methods = vec![method("restore", true)];
            s.replica_method_sections = vec![method("restore", true)];
        })
        .expect(vec![], "waiting for standby_leader to bootstrap"),
        case(
            "standby: bootstrap in progress elsewhere",
            "pg2",
            Some(cluster(None, Some(""), None)),
            LocalPg::default(),
        )
        .settings(standby_settings)
        .expect(vec![], "waiting for standby_leader to bootstrap"),
        case(
            "standby: empty data dir clones from the standby leader",
            "pg3",
            locked_pg1(),
            LocalPg::default(),
        )
        .settings(standby_settings)
        .expect(
            vec![clone_from(
                Some("pg1"),
                Some("pg1"),
                &["basebackup"],
                "from leader 'pg1'",
            )],
            "trying to bootstrap from leader 'pg1'",
        ),
        // --- an existing data directory in a new scope follows the remote site first
        case(
            "standby: existing data dir, empty DCS: follow the remote",
            "pg1",
            Some(cluster(None, None, None)),
            stopped(true, 1),
        )
        .settings(standby_settings)
        .memory(NodeMemory {
            first_cycle: true,
            ..NodeMemory::default()
        })
        .expect(
            vec![
                Action::WriteInitialize {
                    sysid: SYSID.into(),
                },
                follow_remote(false),
            ],
            "trying to follow a remote member because standby cluster is unhealthy",
        ),
        case(
            "standby: stopped lock holder starts as standby leader",
            "pg1",
            locked_pg1(),
            stopped(false, 1),
        )
        .settings(standby_settings)
        .expect(
            vec![follow_remote(true)],
            "starting as a standby leader because i had the session lock",
        ),
        case(
            "standby: stopped lock holder that cannot start gives the lock up",
            "pg1",
            locked_pg1(),
            stopped(false, 1),
        )
        .settings(standby_settings)
        .memory(NodeMemory {
            start_failed: true,
            ..NodeMemory::default()
        })
        .expect(
            vec![Action::AbandonLeader],
            "removed leader key after trying and failing to start postgres",
        ),
        case(
            "standby: stopped replica follows the standby leader",
            "pg2",
            locked_pg1(),
            stopped(false, 1),
        )
        .settings(standby_settings)
        .expect(vec![start_replica(Some("pg1"))], "starting as a secondary"),
        // --- unlocked: the healthiest becomes the standby leader, the others follow the remote
        case(
            "standby: race won: standby leader, no promotion",
            "pg1",
            unlocked(),
            following_remote(false),
        )
        .settings(standby_settings)
        .world(World {
            acquire: true,
            probes: behind.clone(),
            ..World::default()
        })
        .expect(
            vec![follow_remote(true), Action::LeaderHousekeeping],
            "promoted self to a standby leader by acquiring session lock",
        ),
        case(
            "standby: race won by a replica of the old standby leader",
            "pg2",
            unlocked(),
            replica(100),
        )
        .settings(standby_settings)
        .world(World {
            acquire: true,
            probes: vec![peer("pg1", 90), peer("pg3", 50)],
            ..World::default()
        })
        .expect(
            vec![follow_remote(true), Action::LeaderHousekeeping],
            "promoted self to a standby leader by acquiring session lock",
        ),
        case(
            "standby: synchronous mode is ignored in the race",
            "pg2",
            Some(with_sync(
                cluster(None, Some(SYSID), Some(100)),
                r#"{"leader":"pg1","quorum":0,"sync_standby":"pg3"}"#,
            )),
            replica(100),
        )
        .settings(|s| {
            standby_settings(s);
            s.sync.mode = crate::sync::SyncMode::On;
            s.sync.strict = true;
        })
        .world(World {
            acquire: true,
            probes: vec![peer("pg1", 90), peer("pg3", 50)],
            ..World::default()
        })
        .expect(
            vec![follow_remote(true), Action::LeaderHousekeeping],
            "promoted self to a standby leader by acquiring session lock",
        ),
        case(
            "standby: not the healthiest: follow the remote while nobody leads",
            "pg3",
            unlocked(),
            replica(90),
        )
        .settings(standby_settings)
        .world(World {
            probes: vec![peer("pg1", 100), peer("pg2", 100)],
            ..World::default()
        })
        .expect(
            vec![follow_remote(false)],
            "following a different leader because i am not the healthiest node",
        ),
        case(
            "standby: not the healthiest and already following the remote",
            "pg3",
            unlocked(),
            LocalPg {
                wal_position: 90,
                ..following_remote(false)
            },
        )
        .settings(standby_settings)
        .world(World {
            probes: vec![peer("pg1", 100), peer("pg2", 100)],
            ..World::default()
        })
        .expect(
            vec![],
            "following a different leader because i am not the healthiest node",
        ),
        case(
            "standby: paused and unlocked: nothing is reconfigured",
            "pg3",
            unlocked(),
            replica(90),
        )
        .settings(|s| {
            standby_settings(s);
            s.paused = true;
        })
        .expect(vec![], "PAUSE: no action. I am (pg3), cluster is unlocked"),
        case(
            "standby: a primary that wins the race becomes the standby leader",
            "pg1",
            unlocked(),
            primary(),
        )
        .settings(standby_settings)
        .world(World {
            acquire: true,
            probes: behind.clone(),
            ..World::default()
        })
        .expect(
            vec![Action::DemoteToStandby { source: remote() }],
            "cannot be a real primary in standby cluster",
        ),
        // --- locked by me
        case(
            "standby: standby leader keeps following the remote",
            "pg1",
            locked_pg1(),
            following_remote(true),
        )
        .settings(standby_settings)
        .expect(
            vec![Action::LeaderHousekeeping],
            "no action. I am (pg1), the standby leader with the lock",
        ),
        case(
            "standby: lock holder not yet standby leader takes the role",
            "pg1",
            locked_pg1(),
            following_remote(false),
        )
        .settings(standby_settings)
        .expect(
            vec![follow_remote(true), Action::LeaderHousekeeping],
            "promoted self to a standby leader because i had the session lock",
        ),
        case(
            "standby: standby leader switched to archive recovery",
            "pg1",
            locked_pg1(),
            following_remote(true),
        )
        .settings(|s| {
            s.standby_cluster = Some(crate::standby::StandbyCluster {
                source: archive_only.clone(),
                create_replica_methods: vec![],
            })
        })
        .expect(
            vec![
                Action::FollowRemote {
                    source: archive_only.clone(),
                    standby_leader: true,
                },
                Action::LeaderHousekeeping,
            ],
            "no action. I am (pg1), the standby leader with the lock",
        ),
        case(
            "standby: demote-cluster: the primary becomes the standby leader",
            "pg1",
            locked_pg1(),
            primary(),
        )
        .settings(standby_settings)
        .expect(
            vec![Action::DemoteToStandby { source: remote() }],
            "cannot be a real primary in standby cluster",
        ),
        case(
            "standby: demote-cluster in pause: the primary keeps running",
            "pg1",
            locked_pg1(),
            primary(),
        )
        .settings(|s| {
            standby_settings(s);
            s.paused = true;
        })
        .expect(
            vec![Action::LeaderHousekeeping],
            "continue to run as primary without lock",
        ),
        case(
            "standby: paused standby leader keeps the lock",
            "pg1",
            locked_pg1(),
            following_remote(true),
        )
        .settings(|s| {
            standby_settings(s);
            s.paused = true;
        })
        .expect(
            vec![Action::LeaderHousekeeping],
            "PAUSE: no action. I am (pg1), the standby leader with the lock",
        ),
        case(
            "standby: switchover hands the standby leader role over",
            "pg1",
            Some(with_failover(
                cluster(Some("pg1"), Some(SYSID), Some(100)),
                Some("pg1"),
                None,
                None,
            )),
            LocalPg {
                standbys: primary().standbys,
                ..following_remote(true)
            },
        )
        .settings(standby_settings)
        .world(World {
            probes: vec![peer("pg2", 100), peer("pg3", 100)],
            ..World::default()
        })
        .expect(
            vec![demote(DemoteMode::Graceful)],
            "switchover: demoting myself",
        ),
        case(
            "standby: lost lock: nothing promotes",
            "pg1",
            locked_pg1(),
            following_remote(true),
        )
        .settings(standby_settings)
        .world(World {
            update: Some(LockUpdate::Lost),
            ..World::default()
        })
        .expect(
            vec![],
            "not promoting because failed to update leader lock in DCS",
        ),
        // --- promote-cluster: without the section the standby leader promotes
        case(
            "promote-cluster: the standby leader promotes",
            "pg1",
            locked_pg1(),
            following_remote(true),
        )
        .expect(
            vec![
                Action::ActivateWatchdog,
                Action::Promote,
                Action::LeaderHousekeeping,
            ],
            "promoted self to leader because I had the session lock",
        ),
        // --- locked by another member
        case(
            "standby: replica that followed the remote follows the new standby leader",
            "pg2",
            locked_pg1(),
            following_remote(false),
        )
        .settings(standby_settings)
        .expect(
            vec![Action::Follow {
                upstream: "pg1".into(),
            }],
            "no action. I am (pg2), a secondary, and following a standby leader (pg1)",
        ),
        case(
            "standby: former standby leader follows the new one",
            "pg2",
            locked_pg1(),
            following_remote(true),
        )
        .settings(standby_settings)
        .expect(
            vec![Action::Follow {
                upstream: "pg1".into(),
            }],
            "following a standby leader (pg1)",
        ),
        case(
            "standby: replica already following the standby leader",
            "pg2",
            locked_pg1(),
            replica(100),
        )
        .settings(standby_settings)
        .expect(
            vec![],
            "no action. I am (pg2), a secondary, and following a standby leader (pg1)",
        ),
        case(
            "standby: a primary without the lock stops",
            "pg2",
            locked_pg1(),
            primary(),
        )
        .settings(standby_settings)
        .expect(
            vec![demote(DemoteMode::ImmediateNoLock)],
            "cannot be a real primary in a standby cluster",
        ),
        case(
            "standby: leader key naming a vanished member",
            "pg2",
            Some(cluster(Some("pg9"), Some(SYSID), Some(100))),
            replica(100),
        )
        .settings(standby_settings)
        .expect(vec![], "continue following the old known standby leader"),
    ]
}

/// L4: the lock holder publishes its dynamic configuration when the DCS has none.
fn config_cases() -> Vec<Case> {
    let without_config = |leader: Option<&str>| {
        let mut c = cluster(leader, Some(SYSID), Some(100));
        c.config = None;
        Some(c)
    };
    vec![
        case(
            "no config key: the leader writes it",
            "pg1",
            without_config(Some("pg1")),
            primary(),
        )
        .expect(
            vec![
                Action::WriteConfig,
                Action::ActivateWatchdog,
                Action::LeaderHousekeeping,
            ],
            "no action. I am (pg1), the leader with the lock",
        ),
        case(
            "no config key: a replica leaves it to the leader",
            "pg2",
            without_config(Some("pg1")),
            replica(100),
        )
        .expect(vec![], "following a leader (pg1)"),
        case(
            "no config key: a new standby leader writes it",
            "pg1",
            without_config(Some("pg1")),
            following_remote(true),
        )
        .settings(standby_settings)
        .expect(
            vec![Action::WriteConfig, Action::LeaderHousekeeping],
            "the standby leader with the lock",
        ),
    ]
}

#[test]
fn decision_table() {
    let mut failures = Vec::new();
    for c in cases() {
        let (_, d) = run(
            c.me,
            c.cluster.as_ref(),
            &c.pg,
            &c.settings,
            &c.memory,
            &c.world,
        );
        if d.actions != c.want_actions || !d.reason.contains(c.want_reason) {
            failures.push(format!(
                "{}:\n  want {:?} / {:?}\n  got  {:?} / {:?}",
                c.name, c.want_actions, c.want_reason, d.actions, d.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn questions_are_asked_only_when_needed() {
    // A follower of a healthy leader asks nothing: no I/O beyond the cluster read.
    let c = cluster(Some("pg1"), Some(SYSID), Some(100));
    let (asked, _) = run(
        "pg2",
        Some(&c),
        &replica(100),
        &HaSettings::default(),
        &NodeMemory::default(),
        &World::default(),
    );
    assert!(asked.is_empty(), "{asked:?}");
    // The leader only renews its lock.
    let (asked, _) = run(
        "pg1",
        Some(&c),
        &primary(),
        &HaSettings::default(),
        &NodeMemory::default(),
        &World::default(),
    );
    assert_eq!(asked, vec![Question::UpdateLeader]);
    // A race probes the others (never itself) before trying to acquire.
    let u = cluster(None, Some(SYSID), Some(100));
    let w = World {
        acquire: true,
        probes: vec![peer("pg3", 90)],
        ..World::default()
    };
    let (asked, _) = run(
        "pg2",
        Some(&u),
        &replica(100),
        &HaSettings::default(),
        &NodeMemory::default(),
        &w,
    );
    assert_eq!(
        asked,
        vec![
            Question::ProbeMembers(vec!["pg1".into(), "pg3".into()]),
            Question::AcquireLeader
        ]
    );
}

#[test]
fn decide_is_deterministic() {
    for c in cases() {
        let a = run(
            c.me,
            c.cluster.as_ref(),
            &c.pg,
            &c.settings,
            &c.memory,
            &c.world,
        );
        let b = run(
            c.me,
            c.cluster.as_ref(),
            &c.pg,
            &c.settings,
            &c.memory,
            &c.world,
        );
        assert_eq!(a, b, "{}", c.name);
    }
}

#[test]
fn divergence_judged_as_patroni_does() {
    let hist: &[(u32, u64)] = &[(1, 0x3000148)];
    let end = |lsn, in_recovery, clean| LocalWalEnd {
        timeline: 1,
        lsn,
        in_recovery,
        clean_shutdown: clean,
    };
    // A former primary after a clean switchover: its shutdown checkpoint starts just
    // before the fork point (which is that record's end): no rewind.
    assert_eq!(
        judge_divergence(end(0x30000d8, false, true), 2, Some(hist)),
        Divergence::NotDiverged
    );
    // The same node restarted read-only: it replayed up to exactly the switch point.
    assert_eq!(
        judge_divergence(end(0x3000148, true, true), 2, Some(hist)),
        Divergence::NotDiverged
    );
    // A replica that replayed past the switch point, a crashed primary, a primary whose
    // checkpoint lies past the fork: diverged.
    assert_eq!(
        judge_divergence(end(0x3000150, true, true), 2, Some(hist)),
        Divergence::Diverged
    );
    assert_eq!(
        judge_divergence(end(0x30000d8, false, false), 2, Some(hist)),
        Divergence::Diverged
    );
    assert_eq!(
        judge_divergence(end(0x3000148, false, true), 2, Some(hist)),
        Divergence::Diverged
    );
    // Same timeline: nothing to compare; ahead of the leader: diverged; a history
    // that forks from a later timeline than mine: diverged; no history: unknown.
    assert_eq!(
        judge_divergence(end(0x9000000, false, false), 1, None),
        Divergence::NotDiverged
    );
    assert_eq!(
        judge_divergence(
            LocalWalEnd {
                timeline: 3,
                ..end(0, true, true)
            },
            2,
            None
        ),
        Divergence::Diverged
    );
    assert_eq!(
        judge_divergence(end(0x100, true, true), 3, Some(&[(2, 0x5000000)])),
        Divergence::Diverged
    );
    assert_eq!(
        judge_divergence(end(0x100, true, true), 2, None),
        Divergence::Unknown
    );
}

#[test]
fn api_switchover_targets_follow_the_synchronous_set() {
    let with_mode = |mode: serde_json::Value| {
        let mut c = with_sync(
            cluster(Some("pg1"), Some(SYSID), None),
            r#"{"leader":"pg1","quorum":0,"sync_standby":"pg2"}"#,
        );
        c.config = Some(crate::cluster::ConfigKey {
            value: serde_json::json!({ "synchronous_mode": mode }),
            version: 1,
        });
        c
    };
    let names = |r: Result<Vec<&crate::cluster::Member>, String>| {
        r.map(|v| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
    };
    let on = with_mode(serde_json::json!(true));
    assert_eq!(
        names(switchover_targets(&on, true, Some("pg1"), Some("pg3"))),
        Err("candidate name does not match with sync_standby".into())
    );
    assert_eq!(
        names(switchover_targets(&on, true, Some("pg1"), Some("pg2"))),
        Ok(vec!["pg2".to_string()])
    );
    // Without a candidate only the synchronous standbys count (not the leader).
    assert_eq!(
        names(switchover_targets(&on, true, Some("pg1"), None)),
        Ok(vec!["pg2".to_string()])
    );
    // A failover may go to an asynchronous replica; quorum mode leaves it to the race.
    assert_eq!(
        names(switchover_targets(&on, false, None, Some("pg3"))),
        Ok(vec!["pg3".to_string()])
    );
    let quorum = with_mode(serde_json::json!("quorum"));
    assert_eq!(
        names(switchover_targets(&quorum, true, Some("pg1"), None)),
        Ok(vec!["pg2".to_string(), "pg3".to_string()])
    );
    assert_eq!(
        names(switchover_targets(&on, true, Some("pg2"), None)),
        Err("leader name does not match".into())
    );
    let mut lonely = on.clone();
    lonely.sync = None;
    assert_eq!(
        names(switchover_targets(&lonely, true, Some("pg1"), None)),
        Err("switchover is not possible: can not find sync_standby".into())
    );
}

#[test]
fn fence_margin_scales_below_ttl_8_only() {
    for (ttl, margin) in [
        (1, 1_000),
        (3, 1_000),
        (4, 1_000),
        (5, 1_250),
        (6, 1_500),
        (7, 1_750),
        (8, 2_000),
        (20, 2_000),
        (30, 2_000),
        (u64::MAX, 2_000),
    ] {
        assert_eq!(fence_margin_ms(ttl), margin, "ttl {ttl}");
    }
}

#[test]
fn timing_must_leave_the_renewal_room_before_the_fence() {
    for ((ttl, loop_wait, retry), fits) in [
        // The shortest lease: 1 + 1 + 1 (slack) <= 4 - 1.
        ((4, 1, 1), true),
        ((4, 2, 1), false),
        ((4, 1, 2), false),
        // Nothing shorter fits: 1 + 1 + 1 > 3 - 1.
        ((3, 1, 1), false),
        ((2, 1, 1), false),
        ((5, 1, 1), true),
        ((5, 2, 1), false),
        ((6, 1, 2), true),
        ((6, 2, 2), false),
        ((7, 2, 2), true),
        // The earlier floor and Patroni's timings all fit.
        ((8, 2, 3), true),
        ((20, 2, 5), true),
        ((20, 10, 5), true),
        ((30, 10, 10), true),
        ((20, 10, 10), false),
    ] {
        assert_eq!(
            timing_fits_fence(ttl, loop_wait, retry),
            fits,
            "ttl {ttl}, loop_wait {loop_wait}, retry_timeout {retry}"
        );
    }
    // With Patroni's retry_timeout minimum (3 s) Patroni's own rule implies this one.
    for ttl in 8..=60 {
        for retry in 3..=30 {
            for loop_wait in 1..=30 {
                if loop_wait + 2 * retry <= ttl {
                    assert!(
                        timing_fits_fence(ttl, loop_wait, retry),
                        "{ttl} {loop_wait} {retry}"
                    );
                }
            }
        }
    }
}
