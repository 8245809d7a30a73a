//! Issue 14: a permanent logical slot survives a failover. A `test_decoding` consumer
//! reads changes through the slot on the primary; the replica holds a copy of the slot
//! advanced to the position the consumer confirmed; the primary is killed, and on the
//! new primary the consumer gets exactly the changes it had not confirmed: none lost,
//! none repeated.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

const SLOT: &str = "cdc";

/// Short lock, logical WAL and one permanent logical slot.
fn options(n: usize) -> Vec<NodeOptions> {
    let yaml = format!(
        "bootstrap:\n  dcs:\n    ttl: 8\n    loop_wait: 2\n    retry_timeout: 3\n    \
         slots:\n      {SLOT}:\n        type: logical\n        database: postgres\n        \
         plugin: test_decoding\n      keep_wal: 0\n    postgresql:\n      parameters:\n        \
         wal_level: logical\nwarden:\n  min_ttl: 8\n"
    );
    vec![
        NodeOptions {
            yaml: vec![yaml],
            ..NodeOptions::default()
        };
        n
    ]
}

/// Consumes every pending change of the slot on node i and returns the ids inserted
/// into `t`, in order (`pg_logical_slot_get_changes` confirms what it returns).
async fn consume(c: &TestCluster, i: usize) -> Vec<i64> {
    let client = connect(c, i).await.expect("connect to consume");
    let rows = client
        .query(
            &format!("SELECT data FROM pg_logical_slot_get_changes('{SLOT}', NULL, NULL)"),
            &[],
        )
        .await
        .expect("pg_logical_slot_get_changes");
    rows.iter()
        .filter_map(|r| {
            let data: String = r.get(0);
            // "table public.t: INSERT: id[integer]:42"
            data.strip_prefix("table public.t: INSERT: id[integer]:")
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Waits until `sql` on node i returns a row whose text is "t".
async fn wait_true(c: &TestCluster, i: usize, sql: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if query_one(c, i, sql).await.as_deref() == Some("t") {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what} on {} not true after {timeout:?}\n{}",
                c.nodes[i].name,
                c.failure_report()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_slot_consumer_continues_on_the_new_primary() {
    let mut c = TestCluster::new("slottest", 2, &options(2));
    c.start_all();
    let old = wait_for_leader(&c, Duration::from_secs(60)).await;
    let new = 1 - old;
    wait_streaming(&c, new, Duration::from_secs(60)).await;

    // The leader creates the permanent slots (the physical one too).
    wait_true(
        &c,
        old,
        &format!(
            "SELECT count(*) = 2 FROM pg_replication_slots WHERE (slot_name, slot_type, plugin) \
             IN (('{SLOT}', 'logical', 'test_decoding')) OR (slot_name, slot_type) = ('keep_wal', 'physical')"
        ),
        "permanent slots on the primary",
        Duration::from_secs(60),
    )
    .await;

    // The replica copies the slot from the primary (a restart of its PostgreSQL) before
    // the consumer moves it, so that what follows exercises advancing the copy.
    wait_true(
        &c,
        new,
        &format!("SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        "logical slot copied to the replica",
        Duration::from_secs(90),
    )
    .await;
    wait_streaming(&c, new, Duration::from_secs(60)).await;

    exec(
        &c,
        old,
        "CREATE TABLE t(id int primary key); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("first rows");
    let first = consume(&c, old).await;
    assert_eq!(first, (1..=100).collect::<Vec<_>>(), "first batch");
    let confirmed = query_one(
        &c,
        old,
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
    )
    .await
    .expect("confirmed_flush_lsn on the primary");

    // The replica advances its copy to where the consumer confirmed.
    wait_true(
        &c,
        new,
        &format!(
            "SELECT confirmed_flush_lsn >= '{confirmed}' FROM pg_replication_slots \
             WHERE slot_name = '{SLOT}' AND slot_type = 'logical' AND plugin = 'test_decoding'"
        ),
        "copied logical slot advanced on the replica",
        Duration::from_secs(60),
    )
    .await;
    wait_query(
        &c,
        new,
        "SHOW hot_standby_feedback",
        "on",
        Duration::from_secs(30),
    )
    .await;
    wait_true(
        &c,
        new,
        "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'keep_wal' AND slot_type = 'physical'",
        "permanent physical slot on the replica",
        Duration::from_secs(30),
    )
    .await;

    // Changes the consumer has not read yet, replicated, then the primary dies.
    exec(&c, old, "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .expect("second rows");
    wait_caught_up(&c, old).await;
    c.kill_node(old);

    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_eq!(leader, new, "the replica takes over");
    let second = consume(&c, new).await;
    assert_eq!(
        second,
        (101..=200).collect::<Vec<_>>(),
        "after the failover the consumer gets exactly what it had not confirmed"
    );

    // The slot keeps working on the new primary.
    exec(&c, new, "INSERT INTO t SELECT generate_series(201, 210)")
        .await
        .expect("rows on the new primary");
    assert_eq!(consume(&c, new).await, (201..=210).collect::<Vec<_>>());

    // The new leader publishes the slot position and its own in the status key.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&c.etcd_get("status").unwrap_or_default()).unwrap_or_default();
        let slots = &status["slots"];
        if slots.get(SLOT).is_some()
            && slots.get("keep_wal").is_some()
            && slots.get(c.nodes[new].name.replace('-', "_")).is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status key lacks the slots: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
