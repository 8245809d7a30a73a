//! Failsafe mode (issue 13): with `failsafe_mode: true` an etcd outage (etcd stopped, or
//! frozen with SIGSTOP) leaves a 3-node cluster writable with no failover and no restart,
//! as long as every member acknowledges the primary over `POST /failsafe`; losing one
//! replica during the outage makes the primary stop taking writes before its lock could
//! have expired. Never two writable nodes.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

/// A short lock, but long enough for a failed DCS read (retry_timeout 3 s) after a
/// loop (2 s) and the members' acknowledgements (2 s) to fit before the fence margin.
const TTL: u64 = 12;

fn failsafe_options() -> Vec<NodeOptions> {
    let yaml = format!(
        "bootstrap:\n  dcs:\n    ttl: {TTL}\n    loop_wait: 2\n    retry_timeout: 3\n    \
         failsafe_mode: true\nwarden:\n  min_ttl: {TTL}\n"
    );
    vec![
        NodeOptions {
            yaml: vec![yaml],
            ..NodeOptions::default()
        };
        3
    ]
}

/// A healthy failsafe cluster: leader index, once every member is in the `failsafe` key.
async fn healthy_failsafe_cluster(c: &mut TestCluster) -> usize {
    c.start_all();
    let l = wait_for_leader(c, Duration::from_secs(90)).await;
    for i in (0..3).filter(|i| *i != l) {
        wait_streaming(c, i, Duration::from_secs(90)).await;
    }
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    warden_testkit::wait_for(
        "every member in the failsafe key",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let v: serde_json::Value = serde_json::from_str(&c.etcd_get("failsafe")?).ok()?;
            names
                .iter()
                .all(|n| {
                    v.get(n)
                        .and_then(|u| u.as_str())
                        .is_some_and(|u| u.ends_with("/patroni"))
                })
                .then_some(())
        },
    );
    exec(c, l, "CREATE TABLE t(id int)").await.expect("create");
    l
}

/// Postmaster pids of every node (a restart would change one).
fn postmasters(c: &TestCluster) -> Vec<Option<i32>> {
    c.nodes
        .iter()
        .map(|n| warden_testkit::postmaster_pid(&n.data_dir))
        .collect()
}

/// For `span`, the leader keeps taking writes and both replicas keep streaming from it.
async fn stays_writable(c: &TestCluster, l: usize, span: Duration) -> usize {
    let until = Instant::now() + span;
    let mut writes = 0;
    while Instant::now() < until {
        exec(c, l, "INSERT INTO t VALUES (1)")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the primary stopped taking writes during the outage: {e}\n{}",
                    c.logs_tail(20)
                )
            });
        writes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        query_one(
            c,
            l,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        )
        .await
        .as_deref(),
        Some("2"),
        "both replicas stream during the outage\n{}",
        c.logs_tail(20)
    );
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_the_cluster_writable_until_a_member_is_lost() {
    let mut c = TestCluster::new("failsafe", 3, &failsafe_options());
    let l = healthy_failsafe_cluster(&mut c).await;
    let before = postmasters(&c);
    let monitor = WritableMonitor::start(dsns(&c));

    // etcd stopped: longer than two lock lifetimes, still writable, nothing restarted.
    c.etcd.stop();
    let stopped = Instant::now();
    let writes = stays_writable(&c, l, Duration::from_secs(3 * TTL)).await;
    let (code, body) = api_get(&c, l, "/primary").await.expect("GET /primary");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("failsafe_mode_is_active"), "{body}");
    assert_eq!(postmasters(&c), before, "no PostgreSQL was restarted");
    let log = std::fs::read_to_string(&c.nodes[l].log).unwrap_or_default();
    assert!(
        log.contains("continue to run as a leader because failsafe mode is enabled and all members are accessible"),
        "{log}"
    );
    eprintln!(
        "etcd down {:?}: {writes} writes on {}, no restart",
        stopped.elapsed(),
        c.nodes[l].name
    );

    // A replica dies while etcd is down: the primary can no longer be sure nobody
    // else takes over, and stops taking writes before its lock could have expired.
    let r = (0..3).find(|i| *i != l).expect("a replica");
    c.kill_node(r);
    let killed = Instant::now();
    loop {
        if exec(&c, l, "INSERT INTO t VALUES (2)").await.is_err() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(TTL),
            "the primary still takes writes {:?} after losing a member during the outage\n{}",
            killed.elapsed(),
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let demoted = killed.elapsed();

    // etcd returns: one leader again, the killed node rejoins.
    c.etcd.restart();
    c.start_node(r);
    let new = wait_for_leader(&c, Duration::from_secs(6 * TTL)).await;
    for i in (0..3).filter(|i| *i != new) {
        wait_streaming(&c, i, Duration::from_secs(90)).await;
    }
    exec(&c, new, "INSERT INTO t VALUES (3)")
        .await
        .expect("write after recovery");
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    eprintln!("member lost during the outage: writes stopped {demoted:?} after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_etcd_keeps_the_cluster_writable() {
    let mut c = TestCluster::new("failsafefrz", 3, &failsafe_options());
    let l = healthy_failsafe_cluster(&mut c).await;
    let before = postmasters(&c);
    let monitor = WritableMonitor::start(dsns(&c));

    // etcd frozen: requests hang instead of being refused; the same must hold.
    c.etcd.freeze(true);
    let writes = stays_writable(&c, l, Duration::from_secs(3 * TTL)).await;
    assert_eq!(postmasters(&c), before, "no PostgreSQL was restarted");
    c.etcd.freeze(false);

    // After the thaw the cluster goes on with the same leader.
    let after = wait_for_leader(&c, Duration::from_secs(6 * TTL)).await;
    assert_eq!(after, l, "no failover");
    exec(&c, l, "INSERT INTO t VALUES (3)")
        .await
        .expect("write after the thaw");
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    eprintln!("etcd frozen: {writes} writes, same leader after the thaw");
}
