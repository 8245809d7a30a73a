//! Issue 2, acceptance 2 and 3: the leader dies (agent and postmaster SIGKILLed) or is
//! stopped gracefully (SIGTERM); a replica takes over in bounded time, never two
//! writable nodes at once, no replicated row lost; the old node rejoins as a replica.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::TestCluster;

const TTL: u64 = 20;
const LOOP_WAIT: u64 = 2;

/// Writes rows on the leader and waits until every replica has replayed them.
async fn write_and_replicate(c: &TestCluster, leader: usize, from: i32, to: i32) {
    exec(
        c,
        leader,
        &format!("CREATE TABLE IF NOT EXISTS t(id int primary key); INSERT INTO t SELECT generate_series({from}, {to})"),
    )
    .await
    .expect("insert on leader");
    wait_caught_up(c, leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_then_rejoins_with_rewind() {
    let mut c = TestCluster::new("killtest", 3, &[]);
    c.start_all();
    let old = wait_for_leader(&c, Duration::from_secs(60)).await;
    for i in (0..3).filter(|i| *i != old) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    write_and_replicate(&c, old, 1, 1000).await;

    let monitor = WritableMonitor::start(dsns(&c));
    let killed_at = Instant::now();
    c.kill_node(old);

    let new = wait_for_leader(&c, Duration::from_secs(TTL + LOOP_WAIT + 5 + 10)).await;
    let took = killed_at.elapsed();
    assert_ne!(new, old);
    assert!(
        took <= Duration::from_secs(TTL + LOOP_WAIT + 5),
        "failover took {took:?}, bound is ttl + loop_wait + 5 s"
    );
    assert_eq!(
        query_one(&c, new, "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("1000"),
        "replicated rows must survive the failover"
    );
    // The new leader keeps taking writes; the third node follows it.
    write_and_replicate(&c, new, 1001, 1100).await;

    // The dead node comes back: it must rejoin as a replica of the new leader. It was
    // killed as a primary, so it is rewound first.
    c.start_node(old);
    wait_streaming(&c, old, Duration::from_secs(60)).await;
    wait_query(
        &c,
        old,
        "SELECT count(*) FROM t",
        "1100",
        Duration::from_secs(30),
    )
    .await;
    let upstream = query_one(&c, old, "SELECT sender_port FROM pg_stat_wal_receiver").await;
    assert_eq!(
        upstream,
        Some(c.nodes[new].pg_port.to_string()),
        "old leader must stream from the new one"
    );
    let tl_new = query_one(&c, new, "SELECT timeline_id FROM pg_control_checkpoint()").await;
    let tl_old = query_one(&c, old, "SELECT received_tli FROM pg_stat_wal_receiver").await;
    assert_eq!(
        tl_old, tl_new,
        "rejoined node must be on the leader's timeline"
    );
    let log = std::fs::read_to_string(&c.nodes[old].log).unwrap_or_default();
    assert!(
        log.contains("timeline divergence check against"),
        "the rejoining node checks divergence"
    );

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    // History gained the timeline switch.
    let history = c.etcd_get("history").unwrap_or_default();
    assert!(history.contains(&c.nodes[new].name), "history: {history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_over_without_ttl_wait() {
    let mut c = TestCluster::new("stoptest", 3, &[]);
    c.start_all();
    let old = wait_for_leader(&c, Duration::from_secs(60)).await;
    for i in (0..3).filter(|i| *i != old) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    write_and_replicate(&c, old, 1, 500).await;

    let monitor = WritableMonitor::start(dsns(&c));
    let stopped_at = Instant::now();
    let status = c.stop_node(old, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent must exit 0 on SIGTERM: {status:?}"
    );
    // PostgreSQL was stopped cleanly and the leader key released by the old node.
    assert!(warden_testkit::postmaster_pid(&c.nodes[old].data_dir).is_none());

    let new = wait_for_leader(&c, Duration::from_secs(LOOP_WAIT + 5 + 10)).await;
    let took = stopped_at.elapsed();
    assert_ne!(new, old);
    assert!(
        took <= Duration::from_secs(LOOP_WAIT + 5),
        "switch after SIGTERM took {took:?}; bound is loop_wait + 5 s (no TTL wait)"
    );
    assert_eq!(
        query_one(&c, new, "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("500")
    );

    // Restarted, the old leader follows the new one (clean shutdown: no rewind needed).
    c.start_node(old);
    wait_streaming(&c, old, Duration::from_secs(60)).await;
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}
