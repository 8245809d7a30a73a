//! Issue 2, acceptance 4 and 5: etcd stopped under a running cluster (the primary stops
//! taking writes before its lock can expire; the cluster recovers by itself when etcd
//! returns), and candidates that must not race (nofailover, lag beyond
//! maximum_lag_on_failover).

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

const TTL: u64 = 20;
const LOOP_WAIT: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_fences_primary_and_cluster_recovers() {
    let mut c = TestCluster::new("outage", 3, &[]);
    c.start_all();
    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    for i in (0..3).filter(|i| *i != leader) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    exec(&c, leader, "CREATE TABLE t(id int)")
        .await
        .expect("create");
    // Let a full loop pass so the last lock update is recent and known to be before the stop.
    tokio::time::sleep(Duration::from_secs(LOOP_WAIT + 1)).await;

    let monitor = WritableMonitor::start(dsns(&c));
    c.etcd.stop();
    let stopped = Instant::now();
    // The last successful lock update happened before the stop, so the lock can expire
    // no earlier than stop + ttl: writes must end before that (the primary keeps taking
    // them until the fence margin, then the guard stops it).
    let deadline = Duration::from_secs(TTL - 1);
    loop {
        if exec(&c, leader, "INSERT INTO t VALUES (1)").await.is_err() {
            break;
        }
        assert!(
            stopped.elapsed() < deadline,
            "primary still accepted writes {:?} after etcd stopped\n{}",
            stopped.elapsed(),
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced_after = stopped.elapsed();
    // And it stays that way while etcd is down (no node may become writable).
    tokio::time::sleep(Duration::from_secs(TTL)).await;
    for i in 0..3 {
        assert!(
            !is_writable(&c, i).await,
            "{} writable while etcd is down",
            c.nodes[i].name
        );
    }

    c.etcd.restart();
    let new = wait_for_leader(&c, Duration::from_secs(TTL * 3)).await;
    for i in (0..3).filter(|i| *i != new) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    exec(&c, new, "INSERT INTO t VALUES (2)")
        .await
        .expect("write after recovery");
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    eprintln!("primary stopped accepting writes {fenced_after:?} after etcd was stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nofailover_and_lagging_replicas_do_not_race() {
    // pg0 bootstraps (nofailover nodes never do); pg1 is nofailover; pg2 will lag.
    let opts = vec![
        NodeOptions::default(),
        NodeOptions {
            tags: vec!["nofailover: true".into()],
            ..NodeOptions::default()
        },
        NodeOptions::default(),
    ];
    let mut c = TestCluster::new("norace", 3, &opts);
    c.start_node(0);
    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_eq!(leader, 0);
    c.start_node(1);
    c.start_node(2);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    wait_streaming(&c, 2, Duration::from_secs(60)).await;

    // Make pg2 lag: freeze its WAL receiver, then write well over 1 MB of WAL.
    let pid: i32 = query_one(&c, 2, "SELECT pid FROM pg_stat_wal_receiver")
        .await
        .and_then(|p| p.parse().ok())
        .expect("wal receiver pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP walreceiver");
    exec(
        &c,
        0,
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g",
    )
    .await
    .expect("write");
    // Wait until the leader published an optime well ahead of pg2's position.
    let lag_ok = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let optime = c
                .etcd_get("status")
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["optime"].as_u64())
                .unwrap_or(0);
            let pg2 = member(&c, "pg2")
                .and_then(|m| m["xlog_location"].as_u64())
                .unwrap_or(0);
            if optime > pg2 + 2 * 1024 * 1024 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(lag_ok, "could not build up lag on pg2\n{}", c.logs_tail(10));

    c.kill_node(0);
    // The dead leader's key expires with its lease...
    warden_testkit::wait_for(
        "the leader key to expire",
        Duration::from_secs(TTL + 10),
        Duration::from_millis(250),
        || c.leader().is_none().then_some(()),
    );
    // ...and then, for several loops, nobody may take it.
    let watch_until = Instant::now() + Duration::from_secs(5 * LOOP_WAIT + 5);
    while Instant::now() < watch_until {
        assert_eq!(
            c.leader(),
            None,
            "no node may take the lock\n{}",
            c.logs_tail(10)
        );
        assert!(!is_writable(&c, 1).await && !is_writable(&c, 2).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log1.contains("following a different leader because I am not allowed to promote"),
        "pg1 must say why it does not race"
    );
    let log2 = std::fs::read_to_string(&c.nodes[2].log).unwrap_or_default();
    assert!(
        log2.contains("My wal position exceeds maximum replication lag"),
        "pg2 must say why it does not race"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    );
}
