//! Helpers shared by the end-to-end tests: SQL against the test cluster's nodes, and
//! waits on observable conditions (never on wall-clock speed).

#![allow(dead_code)]

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::TestCluster;

/// Connects to node i as the superuser (None if it does not answer).
pub async fn connect(c: &TestCluster, i: usize) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&c.dsn(i), tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

/// Runs one statement on node i; Err(text) on any failure.
pub async fn exec(c: &TestCluster, i: usize, sql: &str) -> Result<(), String> {
    let client = connect(c, i).await.ok_or("no connection")?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{e:?}"))
}

/// First column of the first row as text.
pub async fn query_one(c: &TestCluster, i: usize, sql: &str) -> Option<String> {
    let client = connect(c, i).await?;
    let rows = client.simple_query(sql).await.ok()?;
    rows.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// Is node i a running PostgreSQL that accepts writes (not in recovery)?
pub async fn is_writable(c: &TestCluster, i: usize) -> bool {
    query_one(c, i, "SELECT pg_is_in_recovery()")
        .await
        .as_deref()
        == Some("f")
}

/// Waits until exactly one node holds the leader key and is writable; returns its index.
pub async fn wait_for_leader(c: &TestCluster, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(name) = c.leader() {
            if let Some(i) = c.nodes.iter().position(|n| n.name == name) {
                if is_writable(c, i).await {
                    return i;
                }
            }
        }
        if Instant::now() > deadline {
            panic!("no writable leader within {timeout:?}\n{}", c.logs_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The member key of `name` as JSON (None if absent or not JSON).
pub fn member(c: &TestCluster, name: &str) -> Option<Value> {
    serde_json::from_str(&c.etcd_get(&format!("members/{name}"))?).ok()
}

/// Waits until node i is a streaming replica of the current leader (by its member key
/// and by `pg_stat_wal_receiver`).
pub async fn wait_streaming(c: &TestCluster, i: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let m = member(c, &c.nodes[i].name);
        let ok_key = m.as_ref().is_some_and(|m| {
            m["role"] == "replica"
                && m["replication_state"] == "streaming"
                && m["state"] == "running"
        });
        let ok_pg = query_one(c, i, "SELECT status FROM pg_stat_wal_receiver")
            .await
            .as_deref()
            == Some("streaming");
        if ok_key && ok_pg {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} is not streaming after {timeout:?} (member key: {m:?})\n{}",
                c.nodes[i].name,
                c.logs_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `sql` returns `want` on node i.
pub async fn wait_query(c: &TestCluster, i: usize, sql: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = query_one(c, i, sql).await;
        if got.as_deref() == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{sql} on {} returned {got:?}, want {want:?} after {timeout:?}\n{}",
                c.nodes[i].name,
                c.logs_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts writable nodes every 100 ms until stopped; the result is the largest count
/// seen at one instant. Used to prove there are never two primaries.
pub struct WritableMonitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl WritableMonitor {
    /// Starts polling the given DSNs.
    pub fn start(dsns: Vec<(String, String)>) -> WritableMonitor {
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut max = 0usize;
            let mut events = Vec::new();
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                dsns.iter().map(|_| None).collect();
            for _ in 0..6000 {
                if *rx.borrow() {
                    break;
                }
                let mut writable = Vec::new();
                for (k, (name, dsn)) in dsns.iter().enumerate() {
                    if clients[k].as_ref().is_none_or(|c| c.is_closed()) {
                        clients[k] = match tokio::time::timeout(
                            Duration::from_millis(500),
                            tokio_postgres::connect(dsn, tokio_postgres::NoTls),
                        )
                        .await
                        {
                            Ok(Ok((cl, conn))) => {
                                tokio::spawn(async move {
                                    let _ = conn.await;
                                });
                                Some(cl)
                            }
                            _ => None,
                        };
                    }
                    if let Some(cl) = &clients[k] {
                        let r = tokio::time::timeout(
                            Duration::from_millis(500),
                            cl.simple_query("SELECT pg_is_in_recovery()"),
                        )
                        .await;
                        if let Ok(Ok(rows)) = r {
                            let f = rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("f")));
                            if f {
                                writable.push(name.clone());
                            }
                        }
                    }
                }
                if writable.len() > max {
                    max = writable.len();
                }
                if writable.len() > 1 {
                    events.push(format!("writable at once: {writable:?}"));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = rx.changed() => {}
                }
            }
            (max, events)
        });
        WritableMonitor { stop, task }
    }

    /// Stops and returns (max simultaneous writable nodes, descriptions of violations).
    pub async fn finish(self) -> (usize, Vec<String>) {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap_or((99, vec!["monitor panicked".into()]))
    }
}

/// All DSNs of the cluster, named.
pub fn dsns(c: &TestCluster) -> Vec<(String, String)> {
    (0..c.nodes.len())
        .map(|i| (c.nodes[i].name.clone(), c.dsn(i)))
        .collect()
}

/// Runs a workspace binary (or any program) and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `METHOD path` (with a JSON body, if any) on node i's REST API over plain HTTP/1.0:
/// (status code, body); None when it does not answer within 5 s.
pub async fn api_request(
    c: &TestCluster,
    i: usize,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{}", c.nodes[i].api_port);
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// `GET path` on node i's REST API: (status code, body).
pub async fn api_get(c: &TestCluster, i: usize, path: &str) -> Option<(u16, String)> {
    api_request(c, i, "GET", path, None).await
}

/// Waits until `name` holds the lock and is writable.
pub async fn wait_leader_is(c: &TestCluster, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if c.leader().as_deref() == Some(name) && is_writable(c, c.index_of(name)).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not become the leader within {timeout:?}\n{}",
            c.logs_tail(25)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `PROGRAM -c <node 0's config> ARGS`, not started (for a CLI that must run while the
/// test polls: `tokio::process::Command::from` it).
pub fn ctl_command(
    c: &TestCluster,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-c").arg(&c.nodes[0].config).args(args);
    cmd
}

/// Runs `wardenctl -c <node 0's config> ARGS`: (exit code, stdout, stderr).
pub fn wardenctl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    run(&mut ctl_command(c, TestCluster::bin("wardenctl"), args))
}

/// Runs the real `patronictl -c <node 0's config> ARGS`: (exit code, stdout, stderr).
pub fn patronictl(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    run(&mut ctl_command(c, "patronictl", args))
}

/// One row of `patronictl list -f json` / `wardenctl list -f json`: (Member, Role, State, TL).
pub type ListedMember = (String, String, String, i64);

/// Parses `list -f json` output into rows, in the listed order.
pub fn list_members(out: &str) -> Vec<ListedMember> {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("bad json {e}: {out}"));
    v.as_array()
        .expect("list")
        .iter()
        .map(|m| {
            (
                m["Member"].as_str().unwrap_or("").to_string(),
                m["Role"].as_str().unwrap_or("").to_string(),
                m["State"].as_str().unwrap_or("").to_string(),
                m["TL"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The Patroni agent the PostgreSQL user can run (`WARDEN_TEST_PATRONI`, set by
/// `./test.sh`). Without it a mixed-cluster test is skipped, unless
/// `WARDEN_REQUIRE_PATRONI` is set.
pub fn patroni_agent() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("WARDEN_TEST_PATRONI").filter(|p| !p.is_empty());
    if p.is_none() {
        assert!(
            std::env::var_os("WARDEN_REQUIRE_PATRONI").is_none(),
            "WARDEN_REQUIRE_PATRONI is set but WARDEN_TEST_PATRONI names no Patroni agent"
        );
        eprintln!("skipped: set WARDEN_TEST_PATRONI to a `patroni` the PostgreSQL user can run");
    }
    p.map(std::path::PathBuf::from)
}

/// The `sync` key as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncKey {
    pub raw: String,
    pub leader: String,
    pub quorum: i64,
    /// `sync_standby` split on commas, sorted.
    pub standbys: Vec<String>,
}

pub fn sync_key(c: &TestCluster) -> Option<SyncKey> {
    let raw = c.etcd_get("sync")?;
    let v: Value = serde_json::from_str(&raw).ok()?;
    let mut standbys: Vec<String> = v["sync_standby"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    standbys.sort();
    Some(SyncKey {
        leader: v["leader"].as_str()?.to_string(),
        quorum: v["quorum"].as_i64().unwrap_or(-1),
        standbys,
        raw,
    })
}

/// Waits until the `sync` key satisfies `ok`; returns it.
pub async fn wait_sync_key(
    c: &TestCluster,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&SyncKey) -> bool,
) -> SyncKey {
    let deadline = Instant::now() + timeout;
    loop {
        let k = sync_key(c);
        if let Some(k) = k.as_ref().filter(|k| ok(k)) {
            return k.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "the sync key is not {what} after {timeout:?}: {k:?}\n{}",
                c.failure_report()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every running replica has replayed the leader's current WAL position
/// (a planned switchover refuses a candidate lagging beyond `maximum_lag_on_failover`,
/// and right after a pg_basebackup the leader's WAL switch leaves replicas up to one
/// segment behind for a moment).
pub async fn wait_caught_up(c: &TestCluster, leader: usize) {
    let lsn = query_one(c, leader, "SELECT pg_current_wal_lsn()")
        .await
        .expect("leader LSN");
    for i in 0..c.nodes.len() {
        if i != leader && c.nodes[i].agent.is_some() {
            wait_query(
                c,
                i,
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"),
                "t",
                Duration::from_secs(30),
            )
            .await;
        }
    }
}
