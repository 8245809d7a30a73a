//! Issue 13, network partitions: one agent cut off from etcd (and from its peers' REST
//! APIs) while every other agent still reaches etcd and each other. Each agent reaches
//! etcd through a proxy of its own and announces its REST API behind a proxy
//! ([`TestCluster::new_linked`]); PostgreSQL is not proxied, so replication goes on and
//! the test's writer and poller talk to every PostgreSQL directly.
//!
//! * failsafe on, the primary cut off from etcd and from both replicas: it gets no
//!   acknowledgement, stops taking writes, and a replica is promoted only afterwards;
//! * failsafe off, the primary cut off from etcd only: it keeps taking writes for most
//!   of its lock's lifetime (not demoted at the first failed etcd call), stops before a
//!   replica is promoted, and one is;
//! * failsafe on, the primary cut off from etcd only: as Patroni (`ha.py`:
//!   `check_failsafe_topology`, and `Failsafe.update_cluster` on the replicas), every
//!   replica acknowledges its `POST /failsafe`, so it stays the primary; the replicas
//!   see the leader key expire but follow the primary that pinged them, and nobody
//!   takes the lock. When etcd is back, the same primary takes the lock again.
//!
//! Throughout, a poller asks every node `pg_is_in_recovery()` every 100 ms: never two
//! writable nodes. A writer inserts numbered rows into whichever node takes them; no
//! acknowledged row may be missing on the final primary.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::proxy::Cut;

/// Patroni's rule ttl >= loop_wait + 2 * retry_timeout holds. A cluster read against a
/// blackholed etcd takes the whole retry_timeout, longer than loop_wait: a primary that
/// keeps its role without etcd must plan its clean demotion a retry_timeout ahead.
const TTL: u64 = 22;
const LOOP_WAIT: u64 = 2;
const RETRY_TIMEOUT: u64 = 5;

fn options(failsafe: bool) -> Vec<NodeOptions> {
    let yaml = format!(
        "bootstrap:\n  dcs:\n    ttl: {TTL}\n    loop_wait: {LOOP_WAIT}\n    \
         retry_timeout: {RETRY_TIMEOUT}\n    failsafe_mode: {failsafe}\n"
    );
    vec![
        NodeOptions {
            yaml: vec![yaml],
            ..NodeOptions::default()
        };
        3
    ]
}

/// A healthy linked cluster with a table `t`; returns the leader's index.
async fn healthy(c: &mut TestCluster, failsafe: bool) -> usize {
    c.start_all();
    let l = wait_for_leader(c, Duration::from_secs(90)).await;
    for i in (0..3).filter(|i| *i != l) {
        wait_streaming(c, i, Duration::from_secs(90)).await;
    }
    if failsafe {
        // Every member is in the failsafe key, with the api_url behind its proxy.
        let want: Vec<(String, String)> = (0..3)
            .map(|i| {
                (
                    c.nodes[i].name.clone(),
                    format!("http://{}/patroni", c.links[i].api.host_port()),
                )
            })
            .collect();
        warden_testkit::wait_for(
            "every member in the failsafe key",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let v: serde_json::Value = serde_json::from_str(&c.etcd_get("failsafe")?).ok()?;
                want.iter()
                    .all(|(n, u)| v.get(n).and_then(|x| x.as_str()) == Some(u.as_str()))
                    .then_some(())
            },
        );
    }
    exec(c, l, "CREATE TABLE t(id bigint PRIMARY KEY)")
        .await
        .expect("create");
    wait_caught_up(c, l).await;
    l
}

/// One acknowledged INSERT: its row id, the node, when the acknowledgement arrived.
#[derive(Clone, Debug)]
struct Ack {
    id: i64,
    node: usize,
    at: Instant,
}

/// Inserts numbered rows, one at a time (1 s timeout each), into the node that took the
/// last one, or else the first node (in order) that takes one: against a stopped or
/// read-only node an attempt fails at once, so the writer finds a new primary quickly.
struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(c: &TestCluster, first: usize) -> Writer {
        let dsns: Vec<String> = (0..c.nodes.len()).map(|i| c.dsn(i)).collect();
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let log = acks.clone();
        let task = tokio::spawn(async move {
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                dsns.iter().map(|_| None).collect();
            let mut current = first;
            let mut id: i64 = 0;
            while !*rx.borrow() {
                let order: Vec<usize> = std::iter::once(current)
                    .chain((0..dsns.len()).filter(|k| *k != current))
                    .collect();
                for k in order {
                    id += 1;
                    if try_insert(&mut clients[k], &dsns[k], id).await {
                        let at = Instant::now();
                        log.lock().unwrap().push(Ack { id, node: k, at });
                        current = k;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Writer { acks, stop, task }
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Waits until node `k` acknowledged `n` rows after `since`.
    async fn wait_acks_on(&self, c: &TestCluster, k: usize, since: Instant, n: usize, t: Duration) {
        let deadline = Instant::now() + t;
        while self
            .acks()
            .iter()
            .filter(|a| a.node == k && a.at > since)
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "{} took no {n} writes within {t:?}\n{}",
                c.nodes[k].name,
                c.logs_tail(25)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(self) -> Vec<Ack> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.acks.lock().unwrap().clone()
    }
}

/// One INSERT on a (re)used connection; false on any failure or after 1 s.
async fn try_insert(client: &mut Option<tokio_postgres::Client>, dsn: &str, id: i64) -> bool {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = match tokio::time::timeout(
            Duration::from_secs(1),
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
    let Some(cl) = client.as_ref() else {
        return false;
    };
    let sql = format!("INSERT INTO t VALUES ({id})");
    match tokio::time::timeout(Duration::from_secs(1), cl.batch_execute(&sql)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            // A hung session is of no further use.
            *client = None;
            false
        }
    }
}

/// One answer of the poller: node, when the question was sent, `pg_is_in_recovery()`
/// (None: no answer within 500 ms).
#[derive(Clone, Debug)]
struct Sample {
    node: usize,
    sent: Instant,
    in_recovery: Option<bool>,
}

/// Asks every node `pg_is_in_recovery()` every 100 ms (persistent connections, 500 ms
/// timeouts) and keeps every answer.
struct RolePoller {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Vec<Sample>, Vec<String>)>,
}

impl RolePoller {
    fn start(c: &TestCluster) -> RolePoller {
        let dsns: Vec<(String, String)> = dsns(c);
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut violations = Vec::new();
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                dsns.iter().map(|_| None).collect();
            // Bounded: 10 minutes of rounds at most.
            for _ in 0..6000 {
                if *rx.borrow() {
                    break;
                }
                let mut writable = Vec::new();
                for (k, (name, dsn)) in dsns.iter().enumerate() {
                    let sent = Instant::now();
                    let in_recovery = ask_recovery(&mut clients[k], dsn).await;
                    if in_recovery == Some(false) {
                        writable.push(name.clone());
                    }
                    samples.push(Sample {
                        node: k,
                        sent,
                        in_recovery,
                    });
                }
                if writable.len() > 1 {
                    violations.push(format!("writable at once: {writable:?}"));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = rx.changed() => {}
                }
            }
            (samples, violations)
        });
        RolePoller { stop, task }
    }

    async fn finish(self) -> (Vec<Sample>, Vec<String>) {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap_or_else(|_| (Vec::new(), vec!["the poller panicked".into()]))
    }
}

async fn ask_recovery(client: &mut Option<tokio_postgres::Client>, dsn: &str) -> Option<bool> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            tokio_postgres::connect(dsn, tokio_postgres::NoTls),
        )
        .await;
        *client = match r {
            Ok(Ok((cl, conn))) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Some(cl)
            }
            _ => None,
        };
    }
    let cl = client.as_ref()?;
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        cl.simple_query("SELECT pg_is_in_recovery()"),
    )
    .await;
    match r {
        Ok(Ok(rows)) => rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
            _ => None,
        }),
        Ok(Err(_)) => None,
        Err(_) => {
            *client = None;
            None
        }
    }
}

/// A moment before node `k`'s promotion: when the poller last asked it, and it was still
/// in recovery, before it first answered writable after `since`. Everything acknowledged
/// by then happened before the promotion.
fn still_in_recovery_at(samples: &[Sample], k: usize, since: Instant) -> Instant {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.node == k).collect();
    let first_writable = mine
        .iter()
        .position(|s| s.sent > since && s.in_recovery == Some(false))
        .unwrap_or_else(|| panic!("the poller never saw node {k} writable"));
    mine[..first_writable]
        .iter()
        .rev()
        .find(|s| s.in_recovery == Some(true))
        .map(|s| s.sent)
        .unwrap_or_else(|| panic!("the poller never saw node {k} in recovery before"))
}

/// Waits until a node other than `old` holds the lock and is writable.
async fn wait_new_leader(c: &TestCluster, old: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(i) = c.leader().map(|n| c.index_of(&n)) {
            if i != old && is_writable(c, i).await {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader within {timeout:?}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row acknowledged by any node is on node `k`.
async fn no_acknowledged_row_lost(c: &TestCluster, k: usize, acks: &[Ack]) {
    let client = connect(c, k).await.expect("connect to the primary");
    let rows = client.query("SELECT id FROM t", &[]).await.expect("read t");
    let have: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&Ack> = acks.iter().filter(|a| !have.contains(&a.id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged rows missing on {}: {lost:?}",
        c.nodes[k].name
    );
}

/// The agent log of node i from byte `from` on.
fn log_since(c: &TestCluster, i: usize, from: usize) -> String {
    let text = std::fs::read_to_string(&c.nodes[i].log).unwrap_or_default();
    text.get(from..).unwrap_or("").to_string()
}

/// Prints node i's log lines from byte `from` on that tell what it did about the cut
/// (evidence in the test output; repeated lines once).
fn print_decisions(c: &TestCluster, i: usize, from: usize) {
    let keys = [
        "DCS",
        "demot",
        "fencing",
        "failsafe",
        "Request failed",
        "Got response",
        "promot",
        "acquired",
        "Loop time",
    ];
    let mut last = String::new();
    for l in log_since(c, i, from).lines() {
        if keys.iter().any(|k| l.contains(k)) {
            let body = l.split_once(' ').map(|x| x.1).unwrap_or(l);
            let body = body.split_once(' ').map(|x| x.1).unwrap_or(body);
            if body != last {
                eprintln!("  {}: {l}", c.nodes[i].name);
                last = body.to_string();
            }
        }
    }
}

fn log_len(c: &TestCluster, i: usize) -> usize {
    std::fs::metadata(&c.nodes[i].log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// Failsafe on; the primary loses etcd and both replicas (REST both ways) at once.
async fn isolated_primary_stops_before_a_replica_is_promoted(scope: &str, how: Cut) {
    let mut c = TestCluster::new_linked(scope, 3, &options(true));
    let l = healthy(&mut c, true).await;
    let poller = RolePoller::start(&c);
    let writer = Writer::start(&c, l);
    let start = Instant::now();
    writer
        .wait_acks_on(&c, l, start, 5, Duration::from_secs(20))
        .await;
    let log_at_cut = log_len(&c, l);

    c.cut_etcd(l, how);
    c.cut_api(l, how);
    let cut = Instant::now();
    let new = wait_new_leader(&c, l, Duration::from_secs(4 * TTL)).await;
    assert!(
        !is_writable(&c, l).await,
        "{} is still writable after {} was promoted\n{}",
        c.nodes[l].name,
        c.nodes[new].name,
        c.logs_tail(20)
    );
    writer
        .wait_acks_on(&c, new, cut, 5, Duration::from_secs(30))
        .await;
    let acks = writer.acks();
    let last_old = acks
        .iter()
        .filter(|a| a.node == l)
        .map(|a| a.at)
        .max()
        .expect("writes on the old primary");
    let first_new = acks
        .iter()
        .filter(|a| a.node == new && a.at > cut)
        .map(|a| a.at)
        .min()
        .expect("writes on the new primary");

    // The cut met the isolated agent's traffic: its etcd calls and its POST /failsafe to
    // each replica. (The replicas' calls to it are cut too, but they make none: before
    // the leader race Warden probes the members with a key in etcd only, and the
    // isolated agent's expired with its lease; Patroni also probes the members of the
    // last locked cluster and of the `failsafe` key, spec C1.9.)
    assert!(
        c.links[l].etcd.cut_connections() > 0,
        "no etcd call was cut"
    );
    for k in (0..3).filter(|k| *k != l) {
        assert!(
            c.links[k].api.cut_connections() > 0,
            "no call from {} to {} was cut",
            c.nodes[l].name,
            c.nodes[k].name
        );
    }
    let log = log_since(&c, l, log_at_cut);
    assert!(
        log.contains("demoted self because DCS is not accessible and I was a leader"),
        "the isolated primary must demote for want of acknowledgements:\n{log}"
    );
    assert!(
        !log.contains("continue to run as a leader because failsafe mode"),
        "nobody could acknowledge the isolated primary:\n{log}"
    );
    assert!(
        !log.contains("fencing:"),
        "the primary demotes itself before the fence guard must stop it:\n{log}"
    );

    print_decisions(&c, l, log_at_cut);
    // Restore: the old primary rejoins as a replica of the new one.
    c.restore_etcd(l);
    c.restore_api();
    wait_streaming(&c, l, Duration::from_secs(120)).await;
    let acks = writer.finish().await;
    let (samples, violations) = poller.finish().await;
    assert!(violations.is_empty(), "two writable nodes: {violations:?}");
    let promoted_after = still_in_recovery_at(&samples, new, cut);
    assert!(
        last_old < promoted_after,
        "the old primary acknowledged a write {:?} after {} was seen in recovery for the \
         last time",
        last_old - promoted_after,
        c.nodes[new].name
    );
    assert!(
        acks.iter().all(|a| a.node != l || a.at < promoted_after),
        "no write on the old primary after the promotion"
    );
    no_acknowledged_row_lost(&c, new, &acks).await;
    eprintln!(
        "{how:?} cut, failsafe: last write on {} {:?} after the cut, {} still in recovery \
         {:?} after it, first write there {:?} after it (gap {:?}); connections cut: \
         etcd {}, to the replicas' REST {}, to its REST {}",
        c.nodes[l].name,
        last_old - cut,
        c.nodes[new].name,
        promoted_after - cut,
        first_new - cut,
        first_new - last_old,
        c.links[l].etcd.cut_connections(),
        (0..3)
            .filter(|k| *k != l)
            .map(|k| c.links[k].api.cut_connections())
            .sum::<u64>(),
        c.links[l].api.cut_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_primary_cut_off_from_etcd_and_replicas_blackhole() {
    isolated_primary_stops_before_a_replica_is_promoted("partbh", Cut::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_primary_cut_off_from_etcd_and_replicas_reset() {
    isolated_primary_stops_before_a_replica_is_promoted("partrst", Cut::Reset).await;
}

/// Failsafe off; the primary loses etcd only (blackhole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_off_from_etcd_keeps_writes_until_its_lock_could_expire() {
    let mut c = TestCluster::new_linked("partetcd", 3, &options(false));
    let l = healthy(&mut c, false).await;
    let poller = RolePoller::start(&c);
    let writer = Writer::start(&c, l);
    let start = Instant::now();
    writer
        .wait_acks_on(&c, l, start, 5, Duration::from_secs(20))
        .await;
    let log_at_cut = log_len(&c, l);

    c.cut_etcd(l, Cut::Blackhole);
    let cut = Instant::now();
    let new = wait_new_leader(&c, l, Duration::from_secs(4 * TTL)).await;
    assert!(
        !is_writable(&c, l).await,
        "{} is still writable after {} was promoted\n{}",
        c.nodes[l].name,
        c.nodes[new].name,
        c.logs_tail(20)
    );
    writer
        .wait_acks_on(&c, new, cut, 5, Duration::from_secs(30))
        .await;
    let acks = writer.acks();
    let last_old = acks
        .iter()
        .filter(|a| a.node == l)
        .map(|a| a.at)
        .max()
        .expect("writes on the old primary");
    let first_new = acks
        .iter()
        .filter(|a| a.node == new && a.at > cut)
        .map(|a| a.at)
        .min()
        .expect("writes on the new primary");
    assert!(
        c.links[l].etcd.cut_connections() > 0,
        "no etcd call was cut"
    );
    let log = log_since(&c, l, log_at_cut);
    assert!(
        log.contains("keeping the primary while the leader lock is still mine"),
        "the primary keeps its role while its lock is valid:\n{log}"
    );
    // A clean demotion (fast shutdown: the replicas get all WAL), not the fence guard's
    // immediate shutdown at the last moment.
    assert!(
        log.contains("demoted self because DCS is not accessible and I was a leader"),
        "the primary demotes itself before its lock could expire:\n{log}"
    );
    assert!(
        !log.contains("fencing:"),
        "the primary demotes itself before the fence guard must stop it:\n{log}"
    );

    // Most of the lock's lifetime: the lock was renewed at most a loop (plus a cycle)
    // before the cut, and the primary stops a fence margin and a loop before it could
    // expire; the first failed etcd call came within a loop and a retry_timeout.
    let kept = last_old - cut;
    assert!(
        kept >= Duration::from_secs(TTL / 2),
        "the primary stopped taking writes {kept:?} after the cut: before half the ttl"
    );
    assert!(
        kept < Duration::from_secs(TTL),
        "the primary took writes {kept:?} after the cut, longer than a ttl"
    );

    print_decisions(&c, l, log_at_cut);
    c.restore_etcd(l);
    wait_streaming(&c, l, Duration::from_secs(120)).await;
    let acks = writer.finish().await;
    let (samples, violations) = poller.finish().await;
    assert!(violations.is_empty(), "two writable nodes: {violations:?}");
    let promoted_after = still_in_recovery_at(&samples, new, cut);
    assert!(
        last_old < promoted_after,
        "the old primary acknowledged a write {:?} after {} was seen in recovery for the \
         last time",
        last_old - promoted_after,
        c.nodes[new].name
    );
    no_acknowledged_row_lost(&c, new, &acks).await;
    eprintln!(
        "etcd cut, no failsafe: writes on {} for {kept:?} after the cut, {} still in \
         recovery {:?} after it, write gap {:?}",
        c.nodes[l].name,
        c.nodes[new].name,
        promoted_after - cut,
        first_new - last_old
    );
}

/// Failsafe on; the primary loses etcd only: the replicas acknowledge it, it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_primary_cut_off_from_etcd_only_stays_primary() {
    let mut c = TestCluster::new_linked("partfsetcd", 3, &options(true));
    let l = healthy(&mut c, true).await;
    let postmasters: Vec<Option<i32>> = c
        .nodes
        .iter()
        .map(|n| warden_testkit::postmaster_pid(&n.data_dir))
        .collect();
    let poller = RolePoller::start(&c);
    let writer = Writer::start(&c, l);
    let start = Instant::now();
    writer
        .wait_acks_on(&c, l, start, 5, Duration::from_secs(20))
        .await;
    let logs_at_cut: Vec<usize> = (0..3).map(|i| log_len(&c, i)).collect();
    let leader_name = c.nodes[l].name.clone();

    c.cut_etcd(l, Cut::Blackhole);
    let cut = Instant::now();
    // The leader key expires with the lease nobody renews...
    warden_testkit::wait_for(
        "the leader key to expire",
        Duration::from_secs(2 * TTL),
        Duration::from_millis(250),
        || c.leader().is_none().then_some(()),
    );
    let expired = cut.elapsed();
    let logs_at_expiry: Vec<usize> = (0..3).map(|i| log_len(&c, i)).collect();
    // ...and for two more lock lifetimes nobody takes it, and the primary keeps going.
    let until = Instant::now() + Duration::from_secs(2 * TTL);
    while Instant::now() < until {
        assert_eq!(
            c.leader(),
            None,
            "nobody may take the lock while the primary runs on acknowledged\n{}",
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let acks = writer.acks();
    assert!(
        acks.iter().all(|a| a.node == l),
        "only the old primary takes writes"
    );
    let last = acks.iter().map(|a| a.at).max().expect("writes");
    assert!(
        Instant::now() - last < Duration::from_secs(3),
        "the primary still takes writes {:?} after the cut",
        last - cut
    );
    let (code, body) = api_get(&c, l, "/primary").await.expect("GET /primary");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("failsafe_mode_is_active"), "{body}");
    let log = log_since(&c, l, logs_at_cut[l]);
    assert!(
        log.contains(
            "continue to run as a leader because failsafe mode is enabled and all members are accessible"
        ),
        "{log}"
    );
    for k in (0..3).filter(|k| *k != l) {
        // Patroni's replicas put the primary that pinged them in place of the expired
        // leader key and follow it (`Failsafe.update_cluster`).
        let log = log_since(&c, k, logs_at_expiry[k]);
        assert!(
            log.contains(&format!("following a leader ({leader_name})")),
            "{} must follow the primary that pinged it:\n{log}",
            c.nodes[k].name
        );
        wait_streaming(&c, k, Duration::from_secs(5)).await;
    }

    // etcd back: the same primary takes the lock again; nothing was restarted.
    c.restore_etcd(l);
    wait_leader_is(&c, &leader_name, Duration::from_secs(3 * TTL)).await;
    writer
        .wait_acks_on(&c, l, Instant::now(), 5, Duration::from_secs(20))
        .await;
    let acks = writer.finish().await;
    let (_, violations) = poller.finish().await;
    assert!(violations.is_empty(), "two writable nodes: {violations:?}");
    let now: Vec<Option<i32>> = c
        .nodes
        .iter()
        .map(|n| warden_testkit::postmaster_pid(&n.data_dir))
        .collect();
    assert_eq!(now, postmasters, "no PostgreSQL was restarted");
    no_acknowledged_row_lost(&c, l, &acks).await;
    eprintln!(
        "etcd cut, failsafe: leader key expired {expired:?} after the cut; {} writes on {} \
         and no failover in {:?}",
        acks.len(),
        leader_name,
        cut.elapsed()
    );
}
