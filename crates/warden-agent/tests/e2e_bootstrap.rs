//! Issue 2, acceptance 1: three agents started together elect one leader, the others
//! clone and stream, data replicates, `initialize` holds the sysid, member keys are
//! Patroni's, and the real `patronictl list` agrees with `wardenctl list`.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use warden_testkit::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrap_replicate_and_list() {
    let mut c = TestCluster::new("batman", 3, &[]);
    c.start_all();

    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &r in &replicas {
        wait_streaming(&c, r, Duration::from_secs(60)).await;
        assert!(!is_writable(&c, r).await, "replica {r} must be read-only");
    }
    // Exactly one primary among the member keys.
    let primaries: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| member(&c, &n.name).is_some_and(|m| m["role"] == "primary"))
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(primaries, vec![c.nodes[leader].name.clone()]);

    // Data written on the leader reaches both replicas.
    exec(&c, leader, "CREATE TABLE acceptance(id int primary key); INSERT INTO acceptance SELECT generate_series(1, 100)")
        .await
        .expect("write on leader");
    for &r in &replicas {
        wait_query(
            &c,
            r,
            "SELECT count(*) FROM acceptance",
            "100",
            Duration::from_secs(30),
        )
        .await;
    }

    // `initialize` holds the system identifier of the cluster.
    let sysid = query_one(
        &c,
        leader,
        "SELECT system_identifier FROM pg_control_system()",
    )
    .await
    .expect("sysid");
    assert_eq!(c.etcd_get("initialize").as_deref(), Some(sysid.as_str()));
    // The leader key is the plain member name.
    assert_eq!(c.leader().as_deref(), Some(c.nodes[leader].name.as_str()));

    // Member keys carry the fields Patroni writes, with Patroni's types.
    for n in &c.nodes {
        let m = member(&c, &n.name).expect("member key");
        assert_eq!(
            m["conn_url"],
            format!("postgres://127.0.0.1:{}/postgres", n.pg_port)
        );
        assert_eq!(
            m["api_url"],
            format!("http://127.0.0.1:{}/patroni", n.api_port)
        );
        assert_eq!(m["state"], "running");
        assert!(
            m["version"].as_str().is_some_and(|v| v.starts_with("4.")),
            "{m}"
        );
        assert!(m["xlog_location"].is_u64(), "{m}");
        assert!(m["timeline"].is_u64(), "{m}");
    }
    // A slot per replica exists on the leader.
    let slots = query_one(&c, leader, "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE active")
        .await
        .unwrap_or_default();
    let want: Vec<String> = replicas.iter().map(|r| c.nodes[*r].name.clone()).collect();
    assert_eq!(slots, want.join(","), "active slots on the leader");

    // REST health checks.
    assert_eq!(
        api_get(&c, leader, "/primary").await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        api_get(&c, leader, "/replica").await.map(|r| r.0),
        Some(503)
    );
    for &r in &replicas {
        assert_eq!(api_get(&c, r, "/replica").await.map(|r| r.0), Some(200));
        assert_eq!(api_get(&c, r, "/primary").await.map(|r| r.0), Some(503));
    }

    // The real patronictl and wardenctl agree on members, roles, state and timeline
    // (both replicas already published `streaming`: see wait_streaming above).
    let cfg = &c.nodes[0].config;
    let (code, patroni_out, err) = run(Command::new("patronictl")
        .arg("-c")
        .arg(cfg)
        .args(["list", "-f", "json"]));
    assert_eq!(code, 0, "patronictl list failed: {err}");
    let (code, warden_out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(cfg)
        .args(["list", "-f", "json"]));
    assert_eq!(code, 0, "wardenctl list failed: {err}");
    let p = list_members(&patroni_out);
    assert_eq!(p.len(), 3, "{patroni_out}");
    assert_eq!(
        p,
        list_members(&warden_out),
        "patronictl: {patroni_out}\nwardenctl: {warden_out}"
    );
    assert!(
        p.iter().any(|m| m.1 == "Leader" && m.2 == "running"),
        "{patroni_out}"
    );
    assert_eq!(
        p.iter()
            .filter(|m| m.1 == "Replica" && m.2 == "streaming")
            .count(),
        2,
        "{patroni_out}"
    );

    // The pretty table has patronictl's title with the system identifier.
    let (code, pretty, _) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(cfg)
        .arg("list"));
    assert_eq!(code, 0);
    assert!(
        pretty.starts_with(&format!("+ Cluster: batman ({sysid}) ")),
        "{pretty}"
    );

    // Garbage in a member key is skipped with a warning: nothing breaks.
    c.etcd_put("members/garbage", "{not json");
    let leader_log = c.nodes[leader].log.clone();
    warden_testkit::wait_for(
        "the garbage warning",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            std::fs::read_to_string(&leader_log)
                .ok()
                .filter(|l| l.contains("members/garbage holds unparsable data"))
        },
    );
    assert_eq!(c.leader().as_deref(), Some(c.nodes[leader].name.as_str()));
    assert!(is_writable(&c, leader).await);
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(cfg)
        .args(["list", "-f", "json"]));
    assert_eq!(code, 0, "wardenctl list with a garbage member: {err}");
    assert!(out.contains("\"garbage\""), "{out}");
    let log = std::fs::read_to_string(&c.nodes[leader].log).unwrap_or_default();
    assert!(
        log.contains("members/garbage holds unparsable data"),
        "warning expected in the log"
    );
    assert!(!log.contains("panicked"), "an agent panicked");
}
