//! Issue 16: a planned switchover is invisible to clients behind PgBouncer → HAProxy
//! when `warden.pgbouncer` is set. A real 3-node cluster, Debian's HAProxy (`GET
//! /primary` checks, 500 ms apart, `fall 2 rise 1`, `on-marked-down
//! shutdown-sessions`) and PgBouncer (transaction pooling) in front; a client writes
//! one short transaction after another through PgBouncer during five `wardenctl
//! switchover`s and sees no failed transaction, only pauses (the longest is printed).
//! Then a switchover whose candidate dies while PgBouncer is being paused fails, and
//! PgBouncer is resumed all the same; and an agent stopped while it holds PgBouncer
//! paused resumes it before it exits. A second cluster: a leader killed while PgBouncer
//! is paused can not resume it, the member promoted after it does.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;
use warden_testkit::cluster::{TestCluster, SUPERUSER_PASSWORD};
use warden_testkit::haproxy::{Haproxy, Section};
use warden_testkit::pgbouncer::PgBouncer;

const SCOPE: &str = "pgbswitch";
const SWITCHOVERS: usize = 5;

/// What the writer saw.
#[derive(Default)]
struct Tally {
    committed: u64,
    failed: Vec<String>,
    last_commit: Option<Instant>,
    longest_gap: Duration,
}

/// A client through PgBouncer: `INSERT ... RETURNING` one after another (each its own
/// transaction, simple protocol as transaction pooling requires) until stopped.
fn start_writer(
    port: u16,
    tally: Arc<Mutex<Tally>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=5"
    );
    tokio::spawn(async move {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut n: u64 = 0;
        while !*stop.borrow() {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        client = Some(c);
                    }
                    Err(e) => {
                        tally.lock().unwrap().failed.push(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_ref() else { continue };
            n += 1;
            let sql = format!("INSERT INTO pgb(id) VALUES ({n}) RETURNING id");
            // Generous: a paused PgBouncer holds the transaction, it does not fail it.
            let r = tokio::time::timeout(Duration::from_secs(60), c.simple_query(&sql)).await;
            let now = Instant::now();
            let mut t = tally.lock().unwrap();
            match r {
                Ok(Ok(rows)) if rows.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))) => {
                    t.committed += 1;
                    if let Some(prev) = t.last_commit {
                        t.longest_gap = t.longest_gap.max(now - prev);
                    }
                    t.last_commit = Some(now);
                }
                Ok(Ok(_)) => t.failed.push(format!("{n}: no row returned")),
                Ok(Err(e)) => {
                    let text = e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string());
                    t.failed.push(format!("{n}: {text}"));
                    client = None;
                }
                Err(_) => {
                    t.failed.push(format!("{n}: no answer within 60 s"));
                    client = None;
                }
            }
        }
    })
}

/// `wardenctl switchover` from `from` to `to`, unconfirmed (`--force`).
fn switchover_command(c: &TestCluster, from: &str, to: &str) -> std::process::Command {
    ctl_command(
        c,
        TestCluster::bin("wardenctl"),
        &[
            "switchover",
            SCOPE,
            "--leader",
            from,
            "--candidate",
            to,
            "--force",
        ],
    )
}

fn log_count(c: &TestCluster, needle: &str) -> usize {
    c.nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .matches(needle)
                .count()
        })
        .sum()
}

/// Polls `f` every `every` until it is true (an async wait: the writer task keeps
/// running on the runtime meanwhile); panics after `timeout`.
async fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<()>,
) {
    let deadline = Instant::now() + timeout;
    while f().is_none() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

async fn pgbouncer_client(port: u16) -> tokio_postgres::Client {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=5"
    );
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .expect("connect through PgBouncer");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A 3-node cluster `scope` behind HAProxy (`GET /primary` checks) and PgBouncer, with
/// `warden.pgbouncer` in every node's YAML; not started.
fn cluster_behind_pgbouncer(scope: &str) -> (TestCluster, Haproxy, PgBouncer) {
    let c = TestCluster::new(scope, 3, &[]);
    let hap = Haproxy::start(
        &c,
        &[Section::new(
            "primary",
            "GET /primary",
            "inter 500ms fall 2 rise 1",
        )],
    );
    let pgb_dir = c.dir.subdir("pgbouncer", true);
    let pgb = PgBouncer::start(
        &pgb_dir,
        c.dir.run_as,
        hap.port("primary"),
        &[("postgres", SUPERUSER_PASSWORD)],
    );
    // The Warden-only setting, in every node's YAML.
    let setting = serde_json::json!({"warden": {"pgbouncer": {
        "admin": [pgb.admin_conninfo()],
        "passfile": pgb.passfile,
        "pause_timeout": 8,
        "resume_timeout": 20,
        "haproxy_stats": hap.stats_url(),
        "haproxy_backend": "primary",
    }}})
    .to_string();
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.config).expect("read config");
        let merged = warden_testkit::cluster::merge_yaml(&text, std::slice::from_ref(&setting));
        std::fs::write(&n.config, merged).expect("write config");
    }
    (c, hap, pgb)
}

/// Starts the cluster and waits until it has a writable leader, the replicas stream and
/// HAProxy routes to the leader only; then runs `table_sql` through PgBouncer. Returns
/// the leader.
async fn start_behind_pgbouncer(
    c: &mut TestCluster,
    hap: &Haproxy,
    pgb: &PgBouncer,
    table_sql: &str,
) -> usize {
    c.start_all();
    let leader = wait_for_leader(c, Duration::from_secs(60)).await;
    for i in (0..3).filter(|i| *i != leader) {
        wait_streaming(c, i, Duration::from_secs(60)).await;
        hap.wait_down("primary", &c.nodes[i].name, Duration::from_secs(10))
            .await;
    }
    let setup = pgbouncer_client(pgb.port).await;
    setup
        .simple_query(table_sql)
        .await
        .expect("create the table through PgBouncer");
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_switchovers_through_pgbouncer_fail_no_transaction() {
    let started = Instant::now();
    let (mut c, hap, pgb) = cluster_behind_pgbouncer(SCOPE);
    let mut leader = start_behind_pgbouncer(
        &mut c,
        &hap,
        &pgb,
        "CREATE TABLE pgb(id bigint PRIMARY KEY, at timestamptz DEFAULT now())",
    )
    .await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = start_writer(pgb.port, tally.clone(), stop_rx);
    let wait_commits = |more: u64| {
        let tally = tally.clone();
        async move {
            let base = tally.lock().unwrap().committed;
            let deadline = Instant::now() + Duration::from_secs(60);
            while tally.lock().unwrap().committed < base + more {
                assert!(Instant::now() < deadline, "the writer makes no progress");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_commits(20).await;

    for k in 0..SWITCHOVERS {
        // Alternate targets: the member after the current leader, round the ring.
        let cand = (leader + 1) % 3;
        wait_caught_up(&c, leader).await;
        let (from, to) = (c.nodes[leader].name.clone(), c.nodes[cand].name.clone());
        let mut cmd = switchover_command(&c, &from, &to);
        let (code, out, err) = tokio::task::spawn_blocking(move || run(&mut cmd))
            .await
            .expect("wardenctl");
        assert_eq!(code, 0, "switchover {k}: {out}{err}");
        wait_leader_is(&c, &c.nodes[cand].name, Duration::from_secs(30)).await;
        wait_streaming(&c, leader, Duration::from_secs(60)).await;
        leader = cand;
        // The resume is logged by the old leader once HAProxy routes to the new one.
        wait_until(
            "the PgBouncer resume",
            Duration::from_secs(40),
            Duration::from_millis(100),
            || (log_count(&c, "resumed 1 PgBouncer") > k).then_some(()),
        )
        .await;
        wait_commits(20).await;
        let t = tally.lock().unwrap();
        eprintln!(
            "switchover {} to {}: {} commits so far, {} failed, longest pause {:.2} s",
            k + 1,
            c.nodes[cand].name,
            t.committed,
            t.failed.len(),
            t.longest_gap.as_secs_f64()
        );
    }
    let _ = stop_tx.send(true);
    writer.await.expect("writer");
    let (committed, failed, longest) = {
        let t = tally.lock().unwrap();
        (t.committed, t.failed.clone(), t.longest_gap)
    };
    eprintln!(
        "PgBouncer switchovers: {SWITCHOVERS} switchovers, {committed} transactions committed, {} failed, longest pause {:.2} s",
        failed.len(),
        longest.as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} failed transactions: {failed:#?}\n{}",
        failed.len(),
        c.logs_tail(40)
    );
    assert_eq!(log_count(&c, "paused 1 PgBouncer in"), SWITCHOVERS);
    assert_eq!(
        log_count(&c, "accepts writes and HAProxy routes to it"),
        SWITCHOVERS,
        "every resume waited for the new primary and HAProxy\n{}",
        c.logs_tail(40)
    );
    // Every acknowledged commit is on the final primary.
    let rows = query_one(&c, leader, "SELECT count(*) FROM pgb").await;
    assert_eq!(
        rows,
        Some(committed.to_string()),
        "acknowledged commits lost"
    );

    // A switchover that fails after the pause: a client holds a transaction open, so
    // PAUSE waits; meanwhile both replicas die; then the transaction commits, the
    // leader demotes, nobody takes over. PgBouncer must be resumed regardless.
    let holder = pgbouncer_client(pgb.port).await;
    holder.simple_query("BEGIN").await.expect("BEGIN");
    holder
        .simple_query("INSERT INTO pgb(id) VALUES (-1)")
        .await
        .expect("insert in the open transaction");
    let pauses_before = pgb.log_text().matches("PAUSE command issued").count();
    let resumes_before = pgb.log_text().matches("RESUME command issued").count();
    let cand = (leader + 1) % 3;
    let mut cmd = switchover_command(&c, &c.nodes[leader].name, &c.nodes[cand].name);
    let ctl = tokio::task::spawn_blocking(move || run(&mut cmd));
    wait_until(
        "PgBouncer to get the PAUSE",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (pgb.log_text().matches("PAUSE command issued").count() > pauses_before).then_some(()),
    )
    .await;
    let paused_at = Instant::now();
    for i in (0..3).filter(|i| *i != leader) {
        c.kill_node(i);
    }
    holder.simple_query("COMMIT").await.expect("COMMIT");
    drop(holder);
    let _ = ctl.await;
    // pause_timeout 8 + resume_timeout 20 bound the pause; the old leader retaking
    // the lock ends it sooner.
    wait_until(
        "PgBouncer to be resumed after the failed switchover",
        Duration::from_secs(45),
        Duration::from_millis(100),
        || (pgb.log_text().matches("RESUME command issued").count() > resumes_before).then_some(()),
    )
    .await;
    let resumed_after = paused_at.elapsed();
    let line = std::fs::read_to_string(&c.nodes[leader].log)
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.contains("resumed 1 PgBouncer"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("the switchover failed") || line.contains("gave up waiting"),
        "the failed switchover's resume: {line}"
    );
    // Once the old leader is primary again, writes go through PgBouncer again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let client = pgbouncer_client(pgb.port).await;
        match client
            .simple_query("INSERT INTO pgb(id) VALUES (-2) RETURNING id")
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no write through PgBouncer after the failed switchover: {e:?}\n{}",
                c.logs_tail(40)
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "failed switchover: PgBouncer resumed {:.1} s after the PAUSE ({line})",
        resumed_after.as_secs_f64()
    );

    // An agent stopped (SIGTERM) while it holds PgBouncer paused resumes it before it
    // exits: with HAProxy gone the old leader waits for HAProxy's stats after a
    // switchover (up to pause_timeout + resume_timeout = 28 s); it is stopped then.
    for i in (0..3).filter(|i| *i != leader) {
        c.start_node(i);
    }
    for i in (0..3).filter(|i| *i != leader) {
        wait_streaming(&c, i, Duration::from_secs(90)).await;
    }
    wait_caught_up(&c, leader).await;
    drop(hap);
    let resumes_before = pgb.log_text().matches("RESUME command issued").count();
    let paused_before = log_count(&c, "paused 1 PgBouncer in");
    let cand = (leader + 1) % 3;
    let (code, out, err) = wardenctl(
        &c,
        &[
            "switchover",
            SCOPE,
            "--leader",
            &c.nodes[leader].name,
            "--candidate",
            &c.nodes[cand].name,
            "--force",
        ],
    );
    assert_eq!(code, 0, "switchover without HAProxy: {out}{err}");
    wait_leader_is(&c, &c.nodes[cand].name, Duration::from_secs(30)).await;
    assert_eq!(log_count(&c, "paused 1 PgBouncer in"), paused_before + 1);
    assert_eq!(
        pgb.log_text().matches("RESUME command issued").count(),
        resumes_before,
        "PgBouncer must stay paused while HAProxy's stats cannot be read"
    );
    let stop_at = Instant::now();
    c.stop_node(leader, Duration::from_secs(60));
    assert!(
        pgb.log_text().matches("RESUME command issued").count() > resumes_before,
        "the stopped agent left PgBouncer paused\n{}",
        c.logs_tail(30)
    );
    assert_eq!(
        log_count(
            &c,
            "the agent is shutting down before a new primary was seen"
        ),
        1
    );
    eprintln!(
        "stopped agent: PgBouncer resumed within {:.1} s of the SIGTERM; e2e_pgbouncer took {:.0} s",
        stop_at.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The old leader `PAUSE`s PgBouncer before a switchover and is killed before its
/// watcher `RESUME`s it (simulated: PAUSE by hand, then SIGKILL of the leader's agent and
/// PostgreSQL). Nobody else would ever resume it; the member promoted in the failover
/// does, once HAProxy routes to it only and the grace for a living old leader passed,
/// and clients write through PgBouncer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_left_by_a_killed_leader_is_resumed_by_the_new_primary() {
    let (mut c, hap, pgb) = cluster_behind_pgbouncer("pgborphan");
    let leader = start_behind_pgbouncer(&mut c, &hap, &pgb, "CREATE TABLE orphan(id int)").await;
    wait_caught_up(&c, leader).await;

    let admin_dsn = format!(
        "{} password={}",
        pgb.admin_conninfo(),
        warden_testkit::pgbouncer::ADMIN_PASSWORD
    );
    let (admin, conn) = tokio_postgres::connect(&admin_dsn, tokio_postgres::NoTls)
        .await
        .expect("PgBouncer admin console");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(Duration::from_secs(30), admin.simple_query("PAUSE"))
        .await
        .expect("PAUSE in time")
        .expect("PAUSE");
    drop(admin);
    let resumes_before = pgb.log_text().matches("RESUME command issued").count();
    c.kill_node(leader);

    // A write through PgBouncer succeeds again (each attempt bounded: a paused
    // PgBouncer holds the query).
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(120);
    loop {
        let attempt = async {
            let client = pgbouncer_client(pgb.port).await;
            client.simple_query("INSERT INTO orphan VALUES (1)").await
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(_)) => break,
            other => assert!(
                Instant::now() < deadline,
                "no write through PgBouncer after the failover: {other:?}\n{}",
                c.logs_tail(40)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        pgb.log_text().matches("RESUME command issued").count() > resumes_before,
        "PgBouncer was resumed"
    );
    let new_leader = wait_for_leader(&c, Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    let line = std::fs::read_to_string(&c.nodes[new_leader].log)
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.contains("resumed it now that"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(&format!(
            "now that {} is the primary",
            c.nodes[new_leader].name
        )) && line.contains("HAProxy routes to it"),
        "the new primary's resume: {line}"
    );
    eprintln!(
        "killed leader: writes through PgBouncer again {:.1} s after the kill ({line})",
        killed_at.elapsed().as_secs_f64()
    );
}
