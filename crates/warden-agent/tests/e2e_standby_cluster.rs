//! Issue 15 (part B): standby clusters, end to end on real etcd and PostgreSQL.
//!
//! A primary site (a Warden cluster of its own, archiving its WAL) and a standby site
//! (another scope, another etcd) whose `bootstrap.dcs.standby_cluster` points at it:
//! the standby leader is built from the primary site and streams from it (a permanent
//! slot there, the archive as fallback); its replica streams from the standby leader.
//! Then the primary site stops, `wardenctl promote-cluster` makes the standby site a
//! primary cluster holding every row committed on the primary site, and
//! `wardenctl demote-cluster` turns it back into a standby cluster.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::{wait_for_async, TestDir};

const WAIT: Duration = Duration::from_secs(90);

/// `archive_mode: on` with an `archive_command` copying into `dir` (never overwriting,
/// as PostgreSQL's documentation asks), as a bootstrap.dcs document.
fn archiving_into(dir: &Path) -> String {
    format!(
        "bootstrap: {{dcs: {{postgresql: {{parameters: {{archive_mode: 'on', archive_command: 'test ! -f {d}/%f && cp %p {d}/%f'}}}}}}}}",
        d = dir.display()
    )
}

/// A `restore_command` reading from `dir`.
fn restoring_from(dir: &Path) -> String {
    format!("cp {}/%f %p", dir.display())
}

/// Waits until the leader key of `c` names a member whose key says `role` and
/// `running`; returns that node's index.
async fn wait_leader_role(c: &TestCluster, role: &str) -> usize {
    wait_for_async(
        &format!("a running {role} holding the lock of {}", c.scope),
        WAIT,
        Duration::from_millis(250),
        || async {
            let name = c.leader()?;
            let m = member(c, &name)?;
            (m["role"] == role && m["state"] == "running").then(|| c.index_of(&name))
        },
    )
    .await
}

/// Waits until `pg_stat_replication` on node `upstream` shows `name` streaming.
async fn wait_streams_from(c: &TestCluster, upstream: usize, name: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{name}' AND state = 'streaming'"
    );
    wait_query(c, upstream, &sql, "1", WAIT).await;
}

/// `GET path` status code on node i (0 when it does not answer).
async fn code(c: &TestCluster, i: usize, path: &str) -> u16 {
    api_get(c, i, path).await.map_or(0, |(code, _)| code)
}

/// `GET /patroni` of node i as JSON (Null when it does not answer).
async fn patroni(c: &TestCluster, i: usize) -> Value {
    let body = api_get(c, i, "/patroni").await.map(|(_, b)| b);
    body.and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(Value::Null)
}

/// Commits `n` rows in `n` transactions on node i, then switches the WAL file so that
/// everything so far is archived too.
async fn commit_rows(c: &TestCluster, i: usize, n: usize, tag: &str) {
    for k in 0..n {
        exec(c, i, &format!("INSERT INTO t(v) VALUES ('{tag}-{k}')"))
            .await
            .unwrap_or_else(|e| panic!("insert on {}: {e}", c.nodes[i].name));
    }
    exec(c, i, "SELECT pg_switch_wal()")
        .await
        .unwrap_or_else(|e| panic!("pg_switch_wal: {e}"));
}

const ROWS: &str = "SELECT count(*) FROM t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_cluster_follows_then_promotes_then_demotes() {
    let archives = TestDir::new("warden-archives-");
    let main_archive = archives.subdir("main", false);
    let standby_archive = archives.subdir("standby", false);

    // --- the primary site: archives its WAL, keeps a permanent slot for the standby site
    let mut main = TestCluster::new(
        "main",
        1,
        &[NodeOptions {
            yaml: vec![
                archiving_into(&main_archive),
                "bootstrap: {dcs: {slots: {standby_site: {type: physical}}}}".into(),
            ],
            ..NodeOptions::default()
        }],
    );
    main.start_all();
    wait_for_leader(&main, WAIT).await;
    exec(&main, 0, "CREATE TABLE t(id serial PRIMARY KEY, v text)")
        .await
        .expect("create table");
    commit_rows(&main, 0, 20, "before").await;

    // --- the standby site: its own scope and etcd, following the primary site
    let standby_cluster = format!(
        "bootstrap: {{dcs: {{synchronous_mode: true, standby_cluster: {{host: 127.0.0.1, port: {}, primary_slot_name: standby_site, restore_command: '{}', create_replica_methods: [basebackup]}}}}}}",
        main.nodes[0].pg_port,
        restoring_from(&main_archive)
    );
    let opts = NodeOptions {
        yaml: vec![archiving_into(&standby_archive), standby_cluster],
        ..NodeOptions::default()
    };
    let mut sb = TestCluster::new("standby", 2, &[opts.clone(), opts]);
    sb.start_all();
    let leader = wait_leader_role(&sb, "standby_leader").await;
    let replica = 1 - leader;
    let (leader_name, replica_name) = (
        sb.nodes[leader].name.clone(),
        sb.nodes[replica].name.clone(),
    );
    // The standby leader streams from the primary site through its slot, the replica
    // from the standby leader; nothing on the standby site accepts writes.
    wait_query(
        &main,
        0,
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'standby_site' AND active",
        "1",
        WAIT,
    )
    .await;
    wait_streams_from(&sb, leader, &replica_name).await;
    for i in [leader, replica] {
        assert!(
            !is_writable(&sb, i).await,
            "{} accepts writes",
            sb.nodes[i].name
        );
    }
    // Synchronous mode in a standby cluster is ignored: no sync key.
    assert_eq!(sb.etcd_get("sync"), None);

    // Rows committed (and archived) on the primary site reach both standby nodes.
    commit_rows(&main, 0, 30, "streamed").await;
    let want = query_one(&main, 0, ROWS)
        .await
        .expect("count on the primary");
    assert_eq!(want, "50");
    for i in [leader, replica] {
        wait_query(&sb, i, ROWS, &want, WAIT).await;
    }

    // Role standby_leader everywhere it is published.
    assert_eq!(code(&sb, leader, "/standby_leader").await, 200);
    assert_eq!(code(&sb, leader, "/standby-leader").await, 200);
    assert_eq!(code(&sb, leader, "/primary").await, 503);
    assert_eq!(code(&sb, leader, "/leader").await, 200);
    assert_eq!(code(&sb, replica, "/replica").await, 200);
    assert_eq!(code(&sb, replica, "/standby_leader").await, 503);
    let st = patroni(&sb, leader).await;
    assert_eq!(st["role"], "standby_leader", "{st}");
    assert_eq!(st["replication_state"], "streaming", "{st}");
    let (_, list, err) = wardenctl(&sb, &["list", "standby"]);
    assert!(list.contains("Standby Leader"), "{list}{err}");
    let (_, metrics) = api_get(&sb, leader, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains(&format!(
            "patroni_standby_leader{{scope=\"standby\",name=\"{leader_name}\"}} 1"
        )),
        "{metrics}"
    );

    // patroni.dynamic.json in each data directory holds the standby configuration.
    for n in &sb.nodes {
        let text = std::fs::read_to_string(n.data_dir.join("patroni.dynamic.json"))
            .unwrap_or_else(|e| panic!("{}: patroni.dynamic.json: {e}", n.name));
        let v: Value = serde_json::from_str(&text).expect("dynamic json");
        assert_eq!(v["standby_cluster"]["primary_slot_name"], "standby_site");
    }

    // A standby leader whose agent restarts while the DCS has lost the config key takes
    // the config from patroni.dynamic.json (a value bootstrap.dcs does not have) and
    // publishes it again.
    let (status, _) = api_request(
        &sb,
        leader,
        "PATCH",
        "/config",
        Some(r#"{"max_timelines_history": 7}"#),
    )
    .await
    .expect("PATCH /config");
    assert_eq!(status, 200);
    wait_for_async(
        "patroni.dynamic.json to have the patched value",
        WAIT,
        Duration::from_millis(250),
        || async {
            let text =
                std::fs::read_to_string(sb.nodes[leader].data_dir.join("patroni.dynamic.json"))
                    .ok()?;
            text.contains("\"max_timelines_history\":7").then_some(())
        },
    )
    .await;
    if let Some(mut a) = sb.nodes[leader].agent.take() {
        a.kill();
    }
    let deleted = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &sb.etcd.url(),
            "del",
            "/service/standby/config",
        ])
        .output()
        .expect("etcdctl del");
    assert!(deleted.status.success());
    sb.start_node(leader);
    wait_for_async(
        "the config key published again",
        WAIT,
        Duration::from_millis(250),
        || async {
            let v: Value = serde_json::from_str(&sb.etcd_get("config")?).ok()?;
            (v["max_timelines_history"] == 7
                && v["standby_cluster"]["port"] == main.nodes[0].pg_port)
                .then_some(())
        },
    )
    .await;
    assert_eq!(wait_leader_role(&sb, "standby_leader").await, leader);

    // --- the primary site goes away; promote the standby site
    commit_rows(&main, 0, 10, "last").await;
    let want = query_one(&main, 0, ROWS).await.expect("count");
    assert_eq!(want, "60");
    wait_query(&sb, leader, ROWS, &want, WAIT).await;
    main.stop_node(0, Duration::from_secs(60));
    let (code_p, out, err) = wardenctl(&sb, &["promote-cluster", "standby", "--force"]);
    assert_eq!(code_p, 0, "promote-cluster: {out}{err}");
    assert!(out.contains("cluster is successfully promoted"), "{out}");
    let new_primary = wait_for_leader(&sb, WAIT).await;
    assert_eq!(
        new_primary, leader,
        "the standby leader is the one promoted"
    );
    assert_eq!(
        query_one(&sb, leader, ROWS).await.as_deref(),
        Some(want.as_str()),
        "every row committed on the primary site"
    );
    assert_eq!(wait_leader_role(&sb, "primary").await, leader);
    assert_eq!(code(&sb, leader, "/primary").await, 200);
    assert_eq!(code(&sb, leader, "/standby_leader").await, 503);
    // The replica follows the new primary.
    exec(&sb, leader, "INSERT INTO t(v) VALUES ('after promotion')")
        .await
        .expect("write on the promoted standby site");
    wait_query(&sb, replica, ROWS, "61", WAIT).await;
    wait_streams_from(&sb, leader, &replica_name).await;

    // --- and back: demote-cluster turns it into a standby cluster again (archive only)
    let restore = restoring_from(&main_archive);
    let (code_d, out, err) = wardenctl(
        &sb,
        &[
            "demote-cluster",
            "standby",
            "--restore-command",
            &restore,
            "--force",
        ],
    );
    assert_eq!(code_d, 0, "demote-cluster: {out}{err}");
    assert!(out.contains("cluster is successfully demoted"), "{out}");
    assert_eq!(wait_leader_role(&sb, "standby_leader").await, leader);
    assert!(!is_writable(&sb, leader).await);
    assert_eq!(code(&sb, leader, "/primary").await, 503);
    assert_eq!(code(&sb, leader, "/standby_leader").await, 200);
    wait_for_async(
        "archive recovery on the standby leader",
        WAIT,
        Duration::from_millis(250),
        || async {
            (patroni(&sb, leader).await["replication_state"] == "in archive recovery").then_some(())
        },
    )
    .await;
    // The WAL file with the shutdown checkpoint went to the standby site's archive.
    let log = std::fs::read_to_string(&sb.nodes[leader].log).unwrap_or_default();
    let archived = log
        .lines()
        .find_map(|l| {
            l.split("archived ")
                .nth(1)?
                .strip_suffix(", the WAL file with the shutdown checkpoint")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no shutdown checkpoint archived:\n{log}"));
    assert!(
        standby_archive.join(&archived).exists(),
        "{archived} not archived"
    );
    // Every row is still there, and the replica follows the standby leader again.
    assert_eq!(query_one(&sb, leader, ROWS).await.as_deref(), Some("61"));
    wait_streams_from(&sb, leader, &replica_name).await;
    wait_query(&sb, replica, ROWS, "61", WAIT).await;
    let replica_key = member(&sb, &replica_name).expect("replica member key");
    assert_eq!(replica_key["role"], "replica");
}
