//! Issue 3: planned operations — switchover (wardenctl and the real patronictl),
//! scheduled switchover and flush, manual failover with the leader down, pause, rolling
//! restart, reinit, and rejected requests.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

const TTL: u64 = 20;

async fn healthy_cluster(c: &mut TestCluster) -> usize {
    c.start_all();
    let leader = wait_for_leader(c, Duration::from_secs(60)).await;
    for i in (0..c.nodes.len()).filter(|i| *i != leader) {
        wait_streaming(c, i, Duration::from_secs(60)).await;
    }
    leader
}

/// `wardenctl switchover --scheduled <now + secs>` from `leader` to `cand`; returns the
/// scheduled instant (whole seconds: that is what is sent).
fn schedule_switchover(
    c: &TestCluster,
    leader: &str,
    cand: &str,
    secs: i64,
) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now() + chrono::Duration::seconds(secs);
    let at = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let at_s = at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .replace('Z', "+00:00");
    let (code, out, err) = wardenctl(
        c,
        &[
            "switchover",
            &c.scope,
            "--leader",
            leader,
            "--candidate",
            cand,
            "--scheduled",
            &at_s,
            "--force",
        ],
    );
    assert_eq!(code, 0, "scheduled switchover: {out}{err}");
    at
}

/// Length of node i's agent log (to look only at what it logs from now on).
fn log_len(c: &TestCluster, i: usize) -> usize {
    std::fs::read(&c.nodes[i].log).map(|b| b.len()).unwrap_or(0)
}

/// After a clean switchover the old primary rejoins without pg_rewind: no line of its
/// log since byte `from` mentions pg_rewind.
fn assert_no_rewind_since(c: &TestCluster, i: usize, from: usize) {
    let log = std::fs::read(&c.nodes[i].log).unwrap_or_default();
    let since = String::from_utf8_lossy(log.get(from..).unwrap_or_default()).to_string();
    let rewinds: Vec<&str> = since.lines().filter(|l| l.contains("pg_rewind")).collect();
    assert!(
        rewinds.is_empty(),
        "{} (old primary of a clean switchover) ran pg_rewind: {rewinds:#?}\n{since}",
        c.nodes[i].name
    );
}

fn history_len(c: &TestCluster) -> usize {
    c.etcd_get("history")
        .and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok())
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_with_wardenctl_and_patronictl_then_scheduled_and_flush() {
    let mut c = TestCluster::new("swtest", 3, &[]);
    let l0 = healthy_cluster(&mut c).await;
    let n = |i: usize| c.nodes[i].name.clone();
    let cand = (l0 + 1) % 3;
    exec(
        &c,
        l0,
        "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("write");
    let monitor = WritableMonitor::start(dsns(&c));

    // 1. wardenctl switchover
    let h0 = history_len(&c);
    wait_caught_up(&c, l0).await;
    let l0_log = log_len(&c, l0);
    let (code, out, err) = wardenctl(
        &c,
        &[
            "switchover",
            "swtest",
            "--leader",
            &n(l0),
            "--candidate",
            &n(cand),
            "--force",
        ],
    );
    assert_eq!(code, 0, "wardenctl switchover: {out}{err}");
    assert!(
        out.contains(&format!("Successfully switched over to \"{}\"", n(cand))),
        "{out}"
    );
    wait_leader_is(&c, &n(cand), Duration::from_secs(10)).await;
    wait_streaming(&c, l0, Duration::from_secs(30)).await;
    assert_no_rewind_since(&c, l0, l0_log);
    assert_eq!(
        query_one(&c, cand, "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("100")
    );
    let upstream = query_one(&c, l0, "SELECT sender_port FROM pg_stat_wal_receiver").await;
    assert_eq!(
        upstream,
        Some(c.nodes[cand].pg_port.to_string()),
        "old leader streams from the new one"
    );
    warden_testkit::wait_for(
        "history to gain a line",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || (history_len(&c) > h0).then_some(()),
    );
    assert_eq!(
        c.etcd_get("failover").as_deref().unwrap_or("{}"),
        "{}",
        "request consumed"
    );

    // 2. the real patronictl, back to the first leader
    exec(&c, cand, "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .expect("write");
    wait_caught_up(&c, cand).await;
    let cand_log = log_len(&c, cand);
    let (code, out, err) = patronictl(
        &c,
        &[
            "switchover",
            "swtest",
            "--leader",
            &n(cand),
            "--candidate",
            &n(l0),
            "--force",
        ],
    );
    assert_eq!(code, 0, "patronictl switchover: {out}{err}");
    wait_leader_is(&c, &n(l0), Duration::from_secs(10)).await;
    wait_streaming(&c, cand, Duration::from_secs(30)).await;
    assert_no_rewind_since(&c, cand, cand_log);
    assert_eq!(
        query_one(&c, l0, "SELECT count(*) FROM t").await.as_deref(),
        Some("200")
    );

    // 3. scheduled switchover fires at its time, not before.
    wait_streaming(&c, cand, Duration::from_secs(30)).await;
    wait_caught_up(&c, l0).await;
    let l0_log = log_len(&c, l0);
    let at = schedule_switchover(&c, &n(l0), &n(cand), 8);
    assert!(c
        .etcd_get("failover")
        .is_some_and(|f| f.contains("scheduled_at")));
    while chrono::Utc::now() < at - chrono::Duration::seconds(1) {
        assert_eq!(
            c.leader().as_deref(),
            Some(n(l0).as_str()),
            "switched before the scheduled time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_leader_is(&c, &n(cand), Duration::from_secs(15)).await;
    assert!(chrono::Utc::now() >= at, "switched before its time");
    wait_streaming(&c, l0, Duration::from_secs(30)).await;
    assert_no_rewind_since(&c, l0, l0_log);

    // 4. a scheduled switchover can be cancelled with flush.
    schedule_switchover(&c, &n(cand), &n(l0), 6);
    let (code, out, err) = wardenctl(&c, &["flush", "swtest", "switchover", "--force"]);
    assert_eq!(code, 0, "flush: {out}{err}");
    assert!(out.contains("scheduled switchover deleted"), "{out}");
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        c.leader().as_deref(),
        Some(n(cand).as_str()),
        "a flushed switchover must not run"
    );

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_pause_restart_reinit_and_rejections() {
    let opts = vec![
        NodeOptions::default(),
        NodeOptions::default(),
        NodeOptions {
            tags: vec!["nofailover: true".into()],
            ..NodeOptions::default()
        },
    ];
    let mut c = TestCluster::new("opstest", 3, &opts);
    c.start_node(0);
    wait_for_leader(&c, Duration::from_secs(60)).await;
    c.start_node(1);
    c.start_node(2);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    wait_streaming(&c, 2, Duration::from_secs(60)).await;
    exec(&c, 0, "CREATE TABLE t(id int); INSERT INTO t VALUES (1)")
        .await
        .expect("write");

    // Rejected requests: Patroni's codes and texts, and the agent keeps running.
    let api = format!("127.0.0.1:{}", c.nodes[0].api_port);
    let body_of = |path: &str, body: &str| -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "--data-binary",
                body,
            ])
            .arg(format!("http://{api}{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (b, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.to_string(), b.to_string())
    };
    assert_eq!(body_of("/switchover", "{not json").0, "400");
    assert_eq!(
        body_of("/failover", r#"{"foo":"bar"}"#),
        (
            "400".into(),
            "Failover could be performed only to a specific candidate".into()
        )
    );
    assert_eq!(
        body_of("/switchover", r#"{"leader":"pg0","candidate":"pg0"}"#),
        (
            "400".into(),
            "Switchover target and source are the same".into()
        )
    );
    assert_eq!(
        body_of("/switchover", r#"{"leader":"pg0","candidate":"nobody"}"#),
        ("412".into(), "candidate does not exists".into())
    );
    assert_eq!(
        body_of("/failover", r#"{"candidate":"pg2"}"#),
        (
            "412".into(),
            "failover is not possible: no good candidates have been found".into()
        )
    );
    assert_eq!(body_of("/restart", r#"{"schedule":"not a date"}"#).0, "422");
    assert_eq!(
        body_of("/restart", r#"{"schedule":"2030-01-01T00:00:00"}"#).0,
        "400"
    );
    assert_eq!(body_of("/restart", r#"{"role":"boss"}"#).0, "400");
    assert_eq!(
        body_of("/reinitialize", r#"{"force":true}"#),
        ("503".into(), "I am the leader, can not reinitialize".into())
    );
    assert!(c.nodes[0].agent.as_mut().is_some_and(|a| a.is_running()));

    // Rolling restart: replicas first, then the primary.
    let start_time = |i: usize| {
        let c = &c;
        async move { query_one(c, i, "SELECT pg_postmaster_start_time()").await }
    };
    let before: Vec<_> = futures::future::join_all((0..3).map(start_time)).await;
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["restart", "opstest", "--role", "replica", "--force"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Success: restart on member pg1")
            && out.contains("Success: restart on member pg2"),
        "{out}"
    );
    let after: Vec<_> = futures::future::join_all((0..3).map(start_time)).await;
    assert_eq!(
        before[0], after[0],
        "the primary must not restart with --role replica"
    );
    assert_ne!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["restart", "opstest", "--role", "primary", "--force"]));
    assert_eq!(code, 0, "{out}{err}");
    let again: Vec<_> = futures::future::join_all((0..3).map(start_time)).await;
    assert_ne!(
        after[0], again[0],
        "the primary restarts with --role primary"
    );
    assert_eq!(
        c.leader().as_deref(),
        Some("pg0"),
        "a restart keeps the lock"
    );

    // Reinit rebuilds a replica whose data directory was damaged on purpose.
    let base = c.nodes[1].data_dir.join("base");
    std::fs::remove_dir_all(&base).expect("damage pg1");
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["reinit", "opstest", "pg1", "--force", "--wait"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Success: reinitialize for member pg1"),
        "{out}"
    );
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    wait_query(
        &c,
        1,
        "SELECT count(*) FROM t",
        "1",
        Duration::from_secs(30),
    )
    .await;

    // Pause: a dead primary PostgreSQL triggers no failover; resume restores automation.
    // Both replicas first stream and have everything: pg0's restart above cut pg2's
    // stream (it retries every 5 s), and a replica still behind pg1's fresh clone when
    // pg0 dies could never stream from pg1, which never had that WAL (PostgreSQL:
    // "requested WAL segment … has already been removed"; Patroni is stuck there too).
    for i in 1..3 {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    wait_caught_up(&c, 0).await;
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["pause", "opstest", "--wait"]));
    assert_eq!(code, 0, "pause: {out}{err}");
    let (_, list, _) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .arg("list"));
    assert!(list.contains("Maintenance mode: on"), "{list}");
    assert_eq!(
        api_get(&c, 1, "/patroni")
            .await
            .map(|r| r.1.contains("\"pause\":true")),
        Some(true)
    );
    warden_testkit::kill_postmaster(&c.nodes[0].data_dir, nix::sys::signal::Signal::SIGKILL);
    let watch = Instant::now() + Duration::from_secs(TTL + 5);
    while Instant::now() < watch {
        assert!(
            !is_writable(&c, 1).await,
            "pg1 promoted while paused\n{}",
            c.logs_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["resume", "opstest", "--wait"]));
    assert_eq!(code, 0, "resume: {out}{err}");
    let l = wait_for_leader(&c, Duration::from_secs(TTL + 15)).await;
    assert_ne!(l, 2, "the nofailover node must not lead");

    // Manual failover to a named replica with the leader's agent (and PostgreSQL) down.
    let other = if l == 0 { 1 } else { 0 };
    for i in (0..3).filter(|i| *i != l) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    c.kill_node(l);
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .arg("-c")
        .arg(&c.nodes[other].config)
        .args([
            "failover",
            "opstest",
            "--candidate",
            &c.nodes[other].name.clone(),
            "--force",
        ]));
    assert_eq!(code, 0, "failover: {out}{err}");
    wait_leader_is(
        &c,
        &c.nodes[other].name.clone(),
        Duration::from_secs(TTL + 15),
    )
    .await;
}
