//! Synchronous replication end to end (spec/ha-loop.md §10): the `sync` key and
//! `synchronous_standby_names` follow the cluster, no acknowledged commit is lost when
//! primaries die one after the other (crashed with their agent, or with the agent alone
//! killed or frozen), quorum commit survives losing the primary and a replica, and strict
//! mode makes commits wait for a standby.
//!
//! Short locks (`ttl: 8` with `warden: {min_ttl: 8}`) keep the failovers quick.

mod common;

use common::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster, SUPERUSER_PASSWORD};

/// Every node's options: short lock, synchronous mode on, commits that wait for the
/// synchronous standby (the harness default is `synchronous_commit: local`), plus `dcs`
/// (extra YAML lines under `bootstrap.dcs`, indented by 4).
fn sync_options(dcs: &[&str]) -> Vec<NodeOptions> {
    mode_options("true", 3, dcs)
}

/// As [`sync_options`] for `n` nodes and any `synchronous_mode`.
fn mode_options(mode: &str, n: usize, dcs: &[&str]) -> Vec<NodeOptions> {
    let mut extra = String::new();
    for l in dcs {
        extra.push_str(&format!("    {l}\n"));
    }
    let yaml = format!(
        "bootstrap:\n  dcs:\n    ttl: 8\n    loop_wait: 2\n    retry_timeout: 3\n    \
         synchronous_mode: {mode}\n{extra}    postgresql:\n      parameters:\n        \
         synchronous_commit: 'on'\nwarden:\n  min_ttl: 8\n"
    );
    vec![
        NodeOptions {
            yaml: vec![yaml],
            ..NodeOptions::default()
        };
        n
    ]
}

/// A member name as `synchronous_standby_names` spells it: the test's names (`pg-N`)
/// contain a hyphen, so PostgreSQL needs them double-quoted.
fn quoted(name: &str) -> String {
    assert!(name.contains('-'), "test member names are pg-N");
    format!("\"{name}\"")
}

/// Waits until GET `path` on node i answers `code`.
async fn wait_api_code(c: &TestCluster, i: usize, path: &str, code: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = api_get(c, i, path).await;
        if got.as_ref().is_some_and(|(g, _)| *g == code) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "GET {path} on {} answers {got:?}, want {code} after {timeout:?}\n{}",
                c.nodes[i].name,
                c.logs_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts all nodes and waits for a writable leader, streaming replicas and a `sync`
/// key naming the leader and one standby. Returns (leader, key).
async fn healthy_sync_cluster(c: &mut TestCluster) -> (usize, SyncKey) {
    c.start_all();
    let l = wait_for_leader(c, Duration::from_secs(90)).await;
    for i in (0..c.nodes.len()).filter(|i| *i != l) {
        wait_streaming(c, i, Duration::from_secs(60)).await;
    }
    let name = c.nodes[l].name.clone();
    let key = wait_sync_key(c, "naming one standby", Duration::from_secs(30), |k| {
        k.leader == name && k.standbys.len() == 1
    })
    .await;
    assert_eq!(
        query_one(c, l, "SHOW synchronous_commit").await.as_deref(),
        Some("on"),
        "commits must wait for the synchronous standby"
    );
    (l, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_key_and_standby_names_follow_the_cluster() {
    // Member names with a hyphen: synchronous_standby_names must quote them.
    let mut opts = sync_options(&[]);
    for (i, o) in opts.iter_mut().enumerate() {
        o.yaml.push(format!("name: pg-{i}"));
    }
    let mut c = TestCluster::new("synckey", 3, &opts);
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.name = format!("pg-{i}");
    }
    let started = Instant::now();
    let (l, key) = healthy_sync_cluster(&mut c).await;
    let leader = c.nodes[l].name.clone();
    let sync_name = key.standbys[0].clone();
    let s = c.index_of(&sync_name);
    let other = (0..3).find(|i| *i != l && *i != s).expect("a third node");
    let other_name = c.nodes[other].name.clone();
    eprintln!(
        "bootstrap: leader {leader}, sync standby {sync_name} after {:?}",
        started.elapsed()
    );
    // Patroni's exact format.
    assert_eq!(
        key.raw,
        format!(r#"{{"leader":"{leader}","quorum":0,"sync_standby":"{sync_name}"}}"#)
    );
    assert_eq!(key.quorum, 0);
    assert_eq!(
        query_one(&c, l, "SHOW synchronous_standby_names").await,
        Some(quoted(&sync_name)),
        "PostgreSQL must wait for exactly the standby the key names"
    );
    assert_eq!(
        query_one(&c, l, "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name) FROM pg_stat_replication").await,
        Some({
            let mut v = [format!("{sync_name}:sync"), format!("{other_name}:async")];
            v.sort();
            v.join(",")
        }),
    );
    // Health checks for load balancers.
    wait_api_code(&c, s, "/sync", 200, Duration::from_secs(10)).await;
    wait_api_code(&c, s, "/async", 503, Duration::from_secs(10)).await;
    wait_api_code(&c, other, "/async", 200, Duration::from_secs(10)).await;
    wait_api_code(&c, other, "/sync", 503, Duration::from_secs(10)).await;
    wait_api_code(&c, l, "/sync", 503, Duration::from_secs(10)).await;
    // wardenctl list shows the role.
    let (code, out, err) = wardenctl(&c, &["list"]);
    assert_eq!(code, 0, "wardenctl list: {out}{err}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{out}"))
            .to_string()
    };
    assert!(row(&sync_name).contains("| Sync Standby |"), "{out}");
    assert!(row(&other_name).contains("| Replica "), "{out}");
    assert!(row(&leader).contains("| Leader "), "{out}");

    // The sync standby's agent stops (SIGTERM) while a client commits: it first leaves
    // the synchronous set (Y11: `nosync` published, waits until the key no longer names
    // it), so commits never wait for a standby that is going away; the other replica
    // takes its place.
    exec(&c, l, "CREATE TABLE t(id serial primary key, value text)")
        .await
        .expect("create table");
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let finder = Finder {
        etcd: c.etcd.url(),
        scope: c.scope.clone(),
    };
    let writer = tokio::spawn(writer(finder, Arc::default(), acks.clone(), stop_rx));
    let count = || acks.lock().expect("acks").len();
    warden_testkit::wait_for_async(
        "the writer to commit",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async move { (count() >= 20).then_some(()) },
    )
    .await;
    let t0 = Instant::now();
    let st = c.stop_node(s, Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "agent exit: {st:?}");
    let stopped = t0.elapsed();
    let key_at_stop = sync_key(&c).expect("sync key");
    assert!(
        !key_at_stop.standbys.contains(&sync_name),
        "{sync_name} stopped while the sync key still named it: {key_at_stop:?}\n{}",
        c.failure_report()
    );
    let log = std::fs::read_to_string(&c.nodes[s].log).unwrap_or_default();
    assert!(
        log.contains("no longer a synchronous standby"),
        "the standby waited to leave the set:\n{log}"
    );
    wait_sync_key(
        &c,
        &format!("naming {other_name} only"),
        Duration::from_secs(30),
        |k| k.leader == leader && k.standbys == [other_name.clone()],
    )
    .await;
    let renamed = t0.elapsed();
    let n = count();
    warden_testkit::wait_for_async(
        "commits to go on after the sync standby stopped",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async move { (count() >= n + 20).then_some(()) },
    )
    .await;
    let _ = stop_tx.send(true);
    let (errors, timeouts) = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("writer stops")
        .expect("writer task");
    // The longest commit gap around the stop.
    let stall = {
        let acks = acks.lock().expect("acks");
        acks.windows(2)
            .filter(|w| w[1].at >= t0)
            .map(|w| w[1].at - w[0].at)
            .max()
            .unwrap_or_default()
    };
    eprintln!(
        "sync standby {sync_name} stopped in {stopped:?}; key names {other_name} {renamed:?} \
         after SIGTERM; longest commit gap {stall:?} ({errors} failed, {timeouts} abandoned)"
    );
    wait_query(
        &c,
        l,
        "SHOW synchronous_standby_names",
        &quoted(&other_name),
        Duration::from_secs(10),
    )
    .await;
    wait_api_code(&c, other, "/sync", 200, Duration::from_secs(10)).await;

    // Back again, then two synchronous standbys.
    c.start_node(s);
    wait_streaming(&c, s, Duration::from_secs(60)).await;
    let (code, out, err) = wardenctl(
        &c,
        &[
            "edit-config",
            "synckey",
            "-s",
            "synchronous_node_count=2",
            "--force",
        ],
    );
    assert_eq!(code, 0, "edit-config: {out}{err}");
    let t0 = Instant::now();
    let mut both = vec![sync_name.clone(), other_name.clone()];
    both.sort();
    let key = wait_sync_key(&c, "naming both", Duration::from_secs(30), |k| {
        k.leader == leader && k.standbys == both
    })
    .await;
    assert_eq!(
        key.raw,
        format!(
            r#"{{"leader":"{leader}","quorum":0,"sync_standby":"{}"}}"#,
            both.join(",")
        )
    );
    eprintln!(
        "synchronous_node_count=2: key names both after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        query_one(&c, l, "SHOW synchronous_standby_names").await,
        Some(format!("2 ({},{})", quoted(&both[0]), quoted(&both[1])))
    );
    wait_api_code(&c, s, "/sync", 200, Duration::from_secs(10)).await;
    wait_api_code(&c, other, "/sync", 200, Duration::from_secs(10)).await;

    // Synchronous mode off: the key goes, PostgreSQL stops waiting.
    let body = serde_json::json!({"synchronous_mode": false}).to_string();
    let r = api_request(&c, l, "PATCH", "/config", Some(&body)).await;
    assert!(
        r.as_ref().is_some_and(|(code, _)| *code == 200),
        "PATCH: {r:?}"
    );
    let t0 = Instant::now();
    warden_testkit::wait_for_async(
        "the sync key to disappear",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { c.etcd_get("sync").is_none().then_some(()) },
    )
    .await;
    wait_query(
        &c,
        l,
        "SHOW synchronous_standby_names",
        "",
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "synchronous_mode off: key gone, names cleared {:?} after PATCH",
        t0.elapsed()
    );
    wait_api_code(&c, s, "/async", 200, Duration::from_secs(10)).await;
    wait_api_code(&c, other, "/async", 200, Duration::from_secs(10)).await;
    eprintln!(
        "sync_key_and_standby_names_follow_the_cluster: {:?}",
        started.elapsed()
    );
}

/// One commit the writer saw succeed.
#[derive(Clone, Debug)]
struct Ack {
    id: i32,
    /// unique per commit (an id can be handed out again after a failover that lost
    /// the sequence's last WAL record)
    value: String,
    node: String,
    round: usize,
    at: Instant,
}

/// What the writer needs to find the primary by itself (the leader key, then the
/// member's `conn_url`).
#[derive(Clone)]
struct Finder {
    etcd: String,
    scope: String,
}

impl Finder {
    async fn get(&self, key: &str) -> Option<String> {
        let out = tokio::time::timeout(
            Duration::from_secs(4),
            tokio::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.etcd,
                    "--dial-timeout=2s",
                    "--command-timeout=3s",
                    "get",
                    "--print-value-only",
                    &format!("/service/{}/{key}", self.scope),
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    }

    /// (leader name, libpq DSN from its member key's conn_url).
    async fn primary(&self) -> Option<(String, String)> {
        let name = self.get("leader").await?;
        let member: Value =
            serde_json::from_str(&self.get(&format!("members/{name}")).await?).ok()?;
        let url = member["conn_url"].as_str()?;
        // postgres://host:port/dbname
        let hostport = url.split("://").nth(1)?.split('/').next()?;
        let (host, port) = hostport.rsplit_once(':')?;
        Some((
            name.clone(),
            format!("host={host} port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"),
        ))
    }
}

/// Inserts one row per transaction into whichever node is the primary until `stop`,
/// recording every commit that returned success.
async fn writer(
    finder: Finder,
    round: Arc<std::sync::atomic::AtomicUsize>,
    acks: Arc<Mutex<Vec<Ack>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, u64) {
    let mut errors = 0u64;
    let mut timeouts = 0u64;
    let mut conn: Option<(tokio_postgres::Client, String)> = None;
    let mut seq = 0u64;
    while !*stop.borrow() {
        if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            conn = None;
            if let Some((name, dsn)) = finder.primary().await {
                if let Ok(Ok((client, connection))) = tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio_postgres::connect(&dsn, tokio_postgres::NoTls),
                )
                .await
                {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    conn = Some((client, name));
                }
            }
            if conn.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        let (client, node) = conn.as_ref().expect("connected");
        seq += 1;
        let value = format!("v{seq}");
        // No statement_timeout: a cancelled wait for the synchronous standby would
        // report success for a commit that is only local. A hung commit is abandoned
        // (counted as not acknowledged) by dropping the connection.
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            client.query_one("INSERT INTO t(value) VALUES ($1) RETURNING id", &[&value]),
        )
        .await;
        match r {
            Ok(Ok(row)) => acks.lock().expect("acks").push(Ack {
                id: row.get(0),
                value,
                node: node.clone(),
                round: round.load(std::sync::atomic::Ordering::SeqCst),
                at: Instant::now(),
            }),
            Ok(Err(_)) => {
                errors += 1;
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                timeouts += 1;
                conn = None;
            }
        }
    }
    (errors, timeouts)
}

/// Stops here: waits for the writer (already told to stop), then checks that every
/// acknowledged commit is on the final primary and every replica, and that there were
/// never two writable nodes.
async fn verify_acknowledged(
    c: &TestCluster,
    final_leader: usize,
    acks: &Arc<Mutex<Vec<Ack>>>,
    writer: tokio::task::JoinHandle<(u64, u64)>,
    monitor: WritableMonitor,
    report: &[String],
    started: Instant,
) {
    let final_name = c.nodes[final_leader].name.clone();
    let (errors, timeouts) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("writer stops")
        .expect("writer task");
    let acks = acks.lock().expect("acks").clone();
    let client = connect(c, final_leader).await.expect("final primary");
    let rows = client
        .query("SELECT id, value FROM t", &[])
        .await
        .expect("read rows");
    let present: std::collections::HashSet<(i32, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let missing: Vec<&Ack> = acks
        .iter()
        .filter(|a| !present.contains(&(a.id, a.value.clone())))
        .collect();
    // The running replicas hold the same rows once caught up.
    wait_caught_up(c, final_leader).await;
    for i in (0..c.nodes.len()).filter(|i| *i != final_leader) {
        assert_eq!(
            query_one(c, i, "SELECT count(*) FROM t").await,
            Some(present.len().to_string()),
            "rows on {}",
            c.nodes[i].name
        );
    }
    let (max, events) = monitor.finish().await;
    for line in report {
        eprintln!("{line}");
    }
    eprintln!(
        "{} commits acknowledged, {} rows on the final primary {final_name}, {errors} failed \
         and {timeouts} abandoned commits; {:?} in all",
        acks.len(),
        present.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged commits are missing on {final_name}: {:?}",
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>()
    );
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}

/// Waits until the writer has 20 commits acknowledged by `node` since `since`.
async fn wait_commits_on(acks: &Arc<Mutex<Vec<Ack>>>, node: &str, since: Instant) {
    warden_testkit::wait_for_async(
        &format!("the writer to commit on {node}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            acks.lock()
                .expect("acks")
                .iter()
                .filter(|a| a.node == node && a.at >= since)
                .count()
                .ge(&20)
                .then_some(())
        },
    )
    .await
}

/// Waits for a commit acknowledged by a node other than `old` after `killed`: (that
/// node, how long after `killed`).
async fn first_commit_elsewhere(
    acks: &Arc<Mutex<Vec<Ack>>>,
    old: &str,
    killed: Instant,
    timeout: Duration,
) -> (String, Duration) {
    warden_testkit::wait_for_async(
        "a new primary to acknowledge a commit",
        timeout,
        Duration::from_millis(100),
        || async {
            acks.lock()
                .expect("acks")
                .iter()
                .find(|a| a.at > killed && a.node != old)
                .map(|a| (a.node.clone(), a.at - killed))
        },
    )
    .await
}

/// A writer committing on whichever node is the primary, and a monitor of writable nodes.
struct Load {
    monitor: WritableMonitor,
    round: Arc<std::sync::atomic::AtomicUsize>,
    acks: Arc<Mutex<Vec<Ack>>>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<(u64, u64)>,
}

impl Load {
    fn start(c: &TestCluster) -> Load {
        let monitor = WritableMonitor::start(dsns(c));
        let round = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let finder = Finder {
            etcd: c.etcd.url(),
            scope: c.scope.clone(),
        };
        let writer = tokio::spawn(writer(finder, round.clone(), acks.clone(), stop_rx));
        Load {
            monitor,
            round,
            acks,
            stop_tx,
            writer,
        }
    }
}

const ROUNDS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_commit_is_lost_across_primary_deaths() {
    let mut c = TestCluster::new("syncloss", 3, &sync_options(&[]));
    let started = Instant::now();
    let (l, _) = healthy_sync_cluster(&mut c).await;
    exec(&c, l, "CREATE TABLE t(id serial primary key, value text)")
        .await
        .expect("create table");
    wait_caught_up(&c, l).await;

    let Load {
        monitor,
        round,
        acks,
        stop_tx,
        writer,
    } = Load::start(&c);

    let mut report = Vec::new();
    for r in 1..=ROUNDS {
        round.store(r, std::sync::atomic::Ordering::SeqCst);
        let round_start = Instant::now();
        let l = wait_for_leader(&c, Duration::from_secs(30)).await;
        let old = c.nodes[l].name.clone();
        // The sync key names a standby of this leader, and the writer is committing on it.
        let key = wait_sync_key(&c, "naming a standby", Duration::from_secs(60), |k| {
            k.leader == old && !k.standbys.is_empty()
        })
        .await;
        wait_commits_on(&acks, &old, round_start).await;

        // Every other round the leader's WAL sender to the synchronous standby freezes
        // (SIGSTOP) for a second first: the leader then has WAL and commits the standby
        // never receives. In synchronous mode those commits wait and are never
        // acknowledged; with asynchronous commits they would be, and lost in the
        // failover. (The asynchronous replica still receives them: it is ahead of the
        // standby that must be promoted, and is rewound.)
        let stall = if r % 2 == 0 {
            let sql = format!(
                "SELECT pid FROM pg_stat_replication WHERE application_name = '{}'",
                key.standbys[0]
            );
            let cr = &c;
            let sql = &sql;
            let pid = warden_testkit::wait_for_async(
                "the WAL sender to the sync standby",
                Duration::from_secs(10),
                Duration::from_millis(100),
                || async move {
                    query_one(cr, l, sql)
                        .await
                        .and_then(|p| p.parse::<i32>().ok())
                },
            )
            .await;
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
            let frozen = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let during = acks
                .lock()
                .expect("acks")
                .iter()
                .filter(|a| a.at > frozen + Duration::from_millis(100))
                .count();
            Some(during)
        } else {
            None
        };

        // The fault, in turn: agent and postmaster (with its backends) SIGKILLed
        // together; the agent alone frozen (SIGSTOP) or killed, PostgreSQL left running
        // until the fence guard stops it.
        let fault = match r % 4 {
            3 => "froze the agent of",
            0 => "killed the agent of",
            _ => "killed",
        };
        let agent_pid = c.nodes[l]
            .agent
            .as_ref()
            .map(|a| nix::unistd::Pid::from_raw(a.pid() as i32))
            .expect("agent");
        let killed = Instant::now();
        match r % 4 {
            3 => nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGSTOP)
                .expect("SIGSTOP"),
            0 => {
                if let Some(mut a) = c.nodes[l].agent.take() {
                    a.kill();
                }
            }
            _ => c.kill_node(l),
        }
        // A new primary commits the writer's rows.
        let (new, first_commit) =
            first_commit_elsewhere(&acks, &old, killed, Duration::from_secs(60)).await;
        assert!(
            key.standbys.contains(&new),
            "round {r}: {new} took over but the sync key named {:?}",
            key.standbys
        );
        // The crashed node rejoins (rewound if it must be) and the new leader names a
        // synchronous standby again.
        let log = c.nodes[l].log.clone();
        let rewinds = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("pg_rewind from ")
                .count()
        };
        let rewinds_before = rewinds();
        let restarted = Instant::now();
        if r % 4 == 3 {
            // Thawed, the agent finds it lost the lock and rejoins.
            nix::sys::signal::kill(agent_pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        } else {
            c.start_node(l);
        }
        wait_streaming(&c, l, Duration::from_secs(90)).await;
        let rejoined = restarted.elapsed();
        let how = if rewinds() > rewinds_before {
            "rewound and streaming"
        } else {
            "streaming"
        };
        wait_sync_key(&c, "naming a standby", Duration::from_secs(60), |k| {
            k.leader == new && !k.standbys.is_empty()
        })
        .await;
        let resynced = restarted.elapsed();
        let acked = acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.round == r)
            .count();
        let line = format!(
            "round {r}: {}{fault} {old} (sync standby {:?}); {new} committed {:?} after the kill; \
             {old} {how} {rejoined:?} after restart, sync key complete after {resynced:?}; \
             {acked} commits acknowledged in the round ({:?})",
            stall.map_or(String::new(), |n| format!(
                "WAL sender to the sync standby frozen 1 s ({n} commits acknowledged meanwhile), "
            )),
            key.standbys,
            first_commit,
            round_start.elapsed()
        );
        eprintln!("{line}");
        report.push(line);
    }

    // A last batch on the final primary, then stop.
    round.store(ROUNDS + 1, std::sync::atomic::Ordering::SeqCst);
    let last = Instant::now();
    let final_leader = wait_for_leader(&c, Duration::from_secs(30)).await;
    let final_name = c.nodes[final_leader].name.clone();
    wait_commits_on(&acks, &final_name, last).await;
    let _ = stop_tx.send(true);
    verify_acknowledged(&c, final_leader, &acks, writer, monitor, &report, started).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_waits_for_a_standby() {
    let mut c = TestCluster::new(
        "syncstrict",
        3,
        &sync_options(&["synchronous_mode_strict: true"]),
    );
    let started = Instant::now();
    let (l, key) = healthy_sync_cluster(&mut c).await;
    exec(&c, l, "CREATE TABLE t(id int)").await.expect("create");
    let s = c.index_of(&key.standbys[0]);
    let other = (0..3).find(|i| *i != l && *i != s).expect("a third node");

    // Both replicas die.
    c.kill_node(s);
    c.kill_node(other);
    let client = connect(&c, l).await.expect("primary");
    let pending = tokio::spawn(async move {
        let r = client.batch_execute("INSERT INTO t VALUES (1)").await;
        (r.map_err(|e| format!("{e:?}")), Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !pending.is_finished(),
        "a commit returned with no standby in strict mode: {:?}",
        pending.await
    );
    assert_eq!(
        query_one(
            &c,
            l,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        )
        .await
        .as_deref(),
        Some("1"),
        "the commit waits for synchronous replication"
    );
    let k = sync_key(&c).expect("sync key");
    assert_eq!(k.leader, c.nodes[l].name, "{k:?}");

    // The replica that was not synchronous comes back: the commit completes.
    let restarted = Instant::now();
    c.start_node(other);
    let (r, done) = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the commit still waits 60 s after a replica restarted\n{}",
                c.failure_report()
            )
        })
        .expect("commit task");
    assert!(r.is_ok(), "commit: {r:?}");
    let other_name = c.nodes[other].name.clone();
    wait_sync_key(
        &c,
        &format!("naming {other_name}"),
        Duration::from_secs(30),
        |k| k.standbys == [other_name.clone()],
    )
    .await;
    eprintln!(
        "strict: commit completed {:?} after {} restarted; sync key now {:?}",
        done - restarted,
        c.nodes[other].name,
        sync_key(&c)
    );
    assert_eq!(
        query_one(&c, l, "SELECT count(*) FROM t").await.as_deref(),
        Some("1")
    );
    let log = std::fs::read_to_string(&c.nodes[l].log).unwrap_or_default();
    assert!(
        log.contains("synchronous_mode_strict is requested"),
        "the primary warns that commits are delayed"
    );
    eprintln!("strict_mode_waits_for_a_standby: {:?}", started.elapsed());
}

/// Quorum commit with three replicas and `synchronous_node_count: 2`
/// (`ANY 2 (a,b,c)`, quorum 1): every acknowledged commit is on two replicas, so losing
/// the primary together with a replica (the one furthest ahead) loses nothing, and the
/// two survivors can still elect a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_commit_survives_losing_the_primary_and_a_replica() {
    const QUORUM_ROUNDS: usize = 2;
    let mut c = TestCluster::new(
        "syncquorum",
        4,
        &mode_options("quorum", 4, &["synchronous_node_count: 2"]),
    );
    let started = Instant::now();
    c.start_all();
    let l = wait_for_leader(&c, Duration::from_secs(90)).await;
    for i in (0..4).filter(|i| *i != l) {
        wait_streaming(&c, i, Duration::from_secs(90)).await;
    }
    exec(&c, l, "CREATE TABLE t(id serial primary key, value text)")
        .await
        .expect("create table");
    let Load {
        monitor,
        round,
        acks,
        stop_tx,
        writer,
    } = Load::start(&c);
    let mut report = Vec::new();
    for r in 1..=QUORUM_ROUNDS {
        round.store(r, std::sync::atomic::Ordering::SeqCst);
        let round_start = Instant::now();
        let l = wait_for_leader(&c, Duration::from_secs(30)).await;
        let old = c.nodes[l].name.clone();
        let mut voters: Vec<String> = (0..4)
            .filter(|i| *i != l)
            .map(|i| c.nodes[i].name.clone())
            .collect();
        voters.sort();
        let key = wait_sync_key(&c, "3 voters, quorum 1", Duration::from_secs(60), |k| {
            k.leader == old && k.standbys == voters && k.quorum == 1
        })
        .await;
        // The harness's names (pgN) are plain identifiers: no quotes.
        let want = format!("ANY 2 ({})", voters.join(","));
        assert_eq!(
            query_one(&c, l, "SHOW synchronous_standby_names")
                .await
                .as_deref(),
            Some(want.as_str()),
            "{key:?}"
        );
        wait_commits_on(&acks, &old, round_start).await;
        // The replica with the most WAL dies with the primary.
        let ahead = query_one(
            &c,
            l,
            "SELECT application_name FROM pg_stat_replication ORDER BY flush_lsn DESC NULLS LAST LIMIT 1",
        )
        .await
        .expect("a streaming replica");
        let r2 = c.index_of(&ahead);
        let killed = Instant::now();
        c.kill_node(l);
        c.kill_node(r2);
        let (new, first_commit) =
            first_commit_elsewhere(&acks, &old, killed, Duration::from_secs(90)).await;
        let line = format!(
            "round {r}: killed {old} and {ahead} (most WAL); {new} committed {first_commit:?} after"
        );
        eprintln!("{line}");
        report.push(line);
        c.start_node(l);
        c.start_node(r2);
        wait_streaming(&c, l, Duration::from_secs(90)).await;
        wait_streaming(&c, r2, Duration::from_secs(90)).await;
    }
    round.store(QUORUM_ROUNDS + 1, std::sync::atomic::Ordering::SeqCst);
    let final_leader = wait_for_leader(&c, Duration::from_secs(30)).await;
    let final_name = c.nodes[final_leader].name.clone();
    let last = Instant::now();
    wait_commits_on(&acks, &final_name, last).await;
    let _ = stop_tx.send(true);
    verify_acknowledged(&c, final_leader, &acks, writer, monitor, &report, started).await;
}
