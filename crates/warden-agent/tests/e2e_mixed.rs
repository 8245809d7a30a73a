//! The adoption path: a live 3-node cluster under the real Patroni agent becomes a Warden
//! cluster one node at a time, with switchovers between Patroni and Warden members on the
//! way (by the real patronictl, then by wardenctl) and the last Patroni leader handing
//! over on SIGTERM. Writes keep working, no committed row is lost, and there are never
//! two writable primaries.

mod common;

use common::*;
use std::time::Duration;
use warden_testkit::cluster::TestCluster;

async fn count_rows(c: &TestCluster, i: usize) -> Option<String> {
    query_one(c, i, "SELECT count(*) FROM t").await
}

/// Replaces node i's agent (Patroni stops PostgreSQL on SIGTERM) with Warden and waits
/// for it to stream from the leader again.
async fn replace_with_warden(c: &mut TestCluster, i: usize) {
    assert!(
        c.stop_node(i, Duration::from_secs(60)).is_some(),
        "Patroni on {} did not stop\n{}",
        c.nodes[i].name,
        c.failure_report()
    );
    c.start_node(i);
    wait_streaming(c, i, Duration::from_secs(90)).await;
}

/// A healthy 3-node cluster under Patroni with table `t`: (cluster, leader, replicas).
async fn patroni_cluster(
    scope: &str,
    patroni: &std::path::Path,
) -> (TestCluster, usize, Vec<usize>) {
    let mut c = TestCluster::new(scope, 3, &[]);
    for i in 0..3 {
        c.start_patroni_node(i, patroni);
    }
    let leader = wait_for_leader(&c, Duration::from_secs(90)).await;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &r in &replicas {
        wait_streaming(&c, r, Duration::from_secs(120)).await;
    }
    exec(&c, leader, "CREATE TABLE t(id int)")
        .await
        .expect("create");
    (c, leader, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_cluster_is_replaced_node_by_node() {
    let Some(patroni) = patroni_agent() else {
        return;
    };
    let (mut c, leader, replicas) = patroni_cluster("mixed", &patroni).await;
    exec(&c, leader, "INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let monitor = WritableMonitor::start(dsns(&c));

    // 1. Both Patroni replicas become Warden replicas of the Patroni leader.
    for (n, &r) in replicas.iter().enumerate() {
        replace_with_warden(&mut c, r).await;
        exec(&c, leader, &format!("INSERT INTO t VALUES ({})", n + 2))
            .await
            .expect("insert on the Patroni leader");
    }
    wait_caught_up(&c, leader).await;

    // 2. The real patronictl moves the leader from Patroni to a Warden member; the old
    // leader, still under Patroni, follows it.
    let candidate = replicas[0];
    let (code, out, err) = patronictl(
        &c,
        &[
            "switchover",
            "--leader",
            &c.nodes[leader].name,
            "--candidate",
            &c.nodes[candidate].name,
            "--force",
        ],
    );
    assert_eq!(
        code,
        0,
        "patronictl switchover: {out}\n{err}\n{}",
        c.failure_report()
    );
    let new_leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_eq!(
        new_leader,
        candidate,
        "the Warden candidate must lead\n{}",
        c.failure_report()
    );
    wait_streaming(&c, leader, Duration::from_secs(120)).await;
    exec(&c, new_leader, "INSERT INTO t VALUES (4)")
        .await
        .expect("insert on the Warden leader");

    // 3. wardenctl moves it back to the Patroni member; the Warden one follows.
    let (code, out, err) = wardenctl(
        &c,
        &[
            "switchover",
            "--leader",
            &c.nodes[candidate].name,
            "--candidate",
            &c.nodes[leader].name,
            "--force",
        ],
    );
    assert_eq!(
        code,
        0,
        "wardenctl switchover: {out}\n{err}\n{}",
        c.failure_report()
    );
    let back = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_eq!(
        back,
        leader,
        "the Patroni candidate must lead\n{}",
        c.failure_report()
    );
    wait_streaming(&c, candidate, Duration::from_secs(120)).await;
    exec(&c, leader, "INSERT INTO t VALUES (5)")
        .await
        .expect("insert on the Patroni leader");

    // 4. The last Patroni node, the leader, becomes Warden: Patroni hands the lock over on
    // SIGTERM, a Warden replica takes it, and the node rejoins under Warden.
    replace_with_warden(&mut c, leader).await;
    let last = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_ne!(last, leader);
    exec(&c, last, "INSERT INTO t VALUES (6)")
        .await
        .expect("insert");
    wait_caught_up(&c, last).await;
    for i in 0..3 {
        assert_eq!(
            count_rows(&c, i).await.as_deref(),
            Some("6"),
            "{} lost rows\n{}",
            c.nodes[i].name,
            c.failure_report()
        );
    }
    let (code, out, _) = wardenctl(&c, &["list", "-f", "json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let roles: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["Role"].as_str())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "Leader").count(), 1, "{out}");
    assert_eq!(
        roles.iter().filter(|r| **r == "Replica").count(),
        2,
        "{out}"
    );

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}

/// A crash in the middle of the migration: Patroni leader, one Patroni and one Warden
/// replica; the leader's node dies (agent and PostgreSQL, SIGKILL). Whichever replica
/// wins the race leads, the other follows it, and the crashed node comes back under
/// Warden and rejoins (rewound if it must be). No committed row is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_fails_over_after_a_leader_crash() {
    let Some(patroni) = patroni_agent() else {
        return;
    };
    let (mut c, leader, replicas) = patroni_cluster("mixedcrash", &patroni).await;
    replace_with_warden(&mut c, replicas[1]).await;
    exec(&c, leader, "INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    wait_caught_up(&c, leader).await;
    let monitor = WritableMonitor::start(dsns(&c));

    c.kill_node(leader);
    // ttl 20 (testkit) + loop_wait + promotion, with slack for a loaded machine.
    let new_leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_ne!(new_leader, leader);
    let other = replicas
        .iter()
        .copied()
        .find(|r| *r != new_leader)
        .expect("other");
    wait_streaming(&c, other, Duration::from_secs(120)).await;
    exec(&c, new_leader, "INSERT INTO t VALUES (2)")
        .await
        .expect("insert on the new leader");

    c.start_node(leader);
    wait_streaming(&c, leader, Duration::from_secs(120)).await;
    wait_caught_up(&c, new_leader).await;
    for i in 0..3 {
        assert_eq!(
            count_rows(&c, i).await.as_deref(),
            Some("2"),
            "{} lost rows\n{}",
            c.nodes[i].name,
            c.failure_report()
        );
    }
    eprintln!(
        "after the crash {} ({}) leads",
        c.nodes[new_leader].name,
        if new_leader == replicas[1] {
            "Warden"
        } else {
            "Patroni"
        }
    );
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}
