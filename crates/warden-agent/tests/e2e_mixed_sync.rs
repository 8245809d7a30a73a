//! Issue 12: a mixed cluster in synchronous mode. Two Warden nodes and one real
//! Patroni 4.1 replica share one `sync` key: it stays consistent with what the primary's
//! PostgreSQL does through a switchover from Warden to Patroni (by the real patronictl)
//! and back (by wardenctl), acknowledged commits survive both, and `patronictl list`
//! and `wardenctl list` agree on the roles at every stable point.
//!
//! pg0 and pg1 run Warden, pg2 Patroni. pg1 carries `nosync: true`, so the synchronous
//! standby is always the one other node: pg2 under the Warden leader pg0, pg0 under the
//! Patroni leader pg2 (a switchover candidate must be the synchronous standby).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

/// Synchronous mode in the dynamic config, with commits that wait for the standby (the
/// harness default is `synchronous_commit: local`).
const SYNC_DCS: &str = "bootstrap:\n  dcs:\n    synchronous_mode: true\n    postgresql:\n      \
                        parameters:\n        synchronous_commit: 'on'\n";

/// One look at the cluster: the leader lock, the `sync` key and, when the lock holder is
/// a running primary, the standbys its `pg_stat_replication` shows streaming as `sync`.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    lock: Option<String>,
    key: Option<SyncKey>,
    /// None: the lock holder is not a primary (or does not answer).
    sync_names: Option<Vec<String>>,
}

/// Takes a [`Sample`]; None when the lock or the key changed while looking (the primary
/// was read between two readings of etcd, so a sample is one consistent instant).
async fn sample(c: &TestCluster) -> Option<Sample> {
    let lock = c.leader();
    let key = sync_key(c);
    let sync_names = match lock
        .as_ref()
        .and_then(|l| c.nodes.iter().position(|n| &n.name == l))
    {
        Some(i) => query_one(
            c,
            i,
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE coalesce(string_agg(\
             application_name, ',' ORDER BY application_name) FILTER (WHERE state = \
             'streaming' AND sync_state = 'sync'), '') END FROM pg_stat_replication",
        )
        .await
        .map(|s| {
            s.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        }),
        None => None,
    };
    (c.leader() == lock && sync_key(c) == key).then_some(Sample {
        lock,
        key,
        sync_names,
    })
}

/// Everything the samples showed, from the first stable point to the last.
#[derive(Default)]
struct Watch {
    samples: usize,
    inconclusive: usize,
    /// conclusive samples whose key still named another leader than the primary's
    transitional: usize,
    /// each distinct `sync` key value, in the order seen
    keys: Vec<String>,
    violations: Vec<String>,
}

impl Watch {
    /// Samples once and records what is wrong: no key; a primary holding the lock that
    /// the key names neither as leader nor as synchronous standby (it promoted without
    /// being synchronous); a key naming the primary as leader and a standby its
    /// PostgreSQL does not stream to synchronously.
    async fn look(&mut self, c: &TestCluster) -> Option<Sample> {
        self.samples += 1;
        let Some(s) = sample(c).await else {
            self.inconclusive += 1;
            return None;
        };
        let Some(key) = &s.key else {
            self.violations.push(format!("no sync key: {s:?}"));
            return Some(s);
        };
        if self.keys.last() != Some(&key.raw) {
            self.keys.push(key.raw.clone());
        }
        if let (Some(lock), Some(names)) = (&s.lock, &s.sync_names) {
            if key.leader != *lock {
                self.transitional += 1;
                if !key.standbys.contains(lock) {
                    self.violations
                        .push(format!("primary {lock} is not in the sync key: {s:?}"));
                }
            } else if let Some(bad) = key.standbys.iter().find(|n| !names.contains(n)) {
                self.violations.push(format!(
                    "the key names {bad} but the primary streams synchronously to {names:?}: {s:?}"
                ));
            }
        }
        Some(s)
    }

    /// Samples every 200 ms until `cmd` exits; returns (exit code, stdout, stderr).
    async fn during(
        &mut self,
        c: &TestCluster,
        cmd: std::process::Command,
    ) -> (i32, String, String) {
        let child = tokio::process::Command::from(cmd)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the CLI");
        let out = tokio::spawn(child.wait_with_output());
        let (t0, before) = (Instant::now(), self.samples);
        while !out.is_finished() {
            self.look(c).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = out.await.expect("CLI task").expect("CLI output");
        eprintln!(
            "{} samples while the CLI ran ({:?}), keys seen so far: {:?}",
            self.samples - before,
            t0.elapsed(),
            self.keys
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Commits rows on `from`, switches over to `to` with `program` (`patronictl` or
    /// `wardenctl`) while sampling, waits for the stable state with `from` as `to`'s
    /// synchronous standby and checks the key's layout, the commits on `to` and the
    /// lists. Returns the key.
    async fn switchover(
        &mut self,
        c: &TestCluster,
        program: std::path::PathBuf,
        from: usize,
        to: usize,
    ) -> SyncKey {
        let acked = commit_rows(c, from, 20).await;
        let (f, t) = (c.nodes[from].name.as_str(), c.nodes[to].name.as_str());
        let t0 = Instant::now();
        let args = ["switchover", "--leader", f, "--candidate", t, "--force"];
        let (code, out, err) = self.during(c, ctl_command(c, &program, &args)).await;
        assert_eq!(
            code,
            0,
            "{} switchover: {out}\n{err}\n{}",
            program.display(),
            c.failure_report()
        );
        let key = self.settle(c, to, from).await;
        eprintln!(
            "stable {:?} after {} switched over to {t}: {}",
            t0.elapsed(),
            program.display(),
            key.raw
        );
        assert_eq!(key.raw, patroni_layout(t, f));
        assert_eq!(
            query_one(c, to, "SELECT count(*) FROM t").await.as_deref(),
            Some(acked.as_str()),
            "commits acknowledged on {f} before the switchover are on {t}"
        );
        lists_agree(c, to, from);
        key
    }

    /// Samples until the cluster is stable with `leader` leading, `sync` its only
    /// synchronous standby (key, `synchronous_standby_names`, `pg_stat_replication`)
    /// and both other nodes streaming; returns the key.
    async fn settle(&mut self, c: &TestCluster, leader: usize, sync: usize) -> SyncKey {
        let (l, s) = (c.nodes[leader].name.clone(), c.nodes[sync].name.clone());
        let timeout = Duration::from_secs(120);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(smp) = self.look(c).await {
                let key_ok = smp
                    .key
                    .as_ref()
                    .is_some_and(|k| k.leader == l && k.standbys == [s.clone()]);
                if smp.lock.as_deref() == Some(l.as_str())
                    && key_ok
                    && smp.sync_names.as_deref() == Some(&[s.clone()][..])
                    && query_one(c, leader, "SHOW synchronous_standby_names")
                        .await
                        .as_deref()
                        == Some(s.as_str())
                    && (0..c.nodes.len()).filter(|i| *i != leader).all(|i| {
                        member(c, &c.nodes[i].name).is_some_and(|m| {
                            m["role"] == "replica" && m["replication_state"] == "streaming"
                        })
                    })
                {
                    return smp.key.expect("key");
                }
                last = Some(smp);
            }
            assert!(
                Instant::now() < deadline,
                "no stable state with leader {l} and sync standby {s} after {timeout:?}; \
                 last sample {last:?}\n{}",
                c.failure_report()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `list -f json` by `program` (see [`list_members`]).
fn list(c: &TestCluster, program: std::path::PathBuf) -> Vec<ListedMember> {
    let (code, out, err) = run(&mut ctl_command(c, &program, &["list", "-f", "json"]));
    assert_eq!(code, 0, "{} list: {out}{err}", program.display());
    list_members(&out)
}

/// Waits (bounded) until `patronictl list` and `wardenctl list` show the same members,
/// roles, states and timelines, then checks the roles: `leader` Leader, `sync` Sync
/// Standby, the other Replica, replicas streaming.
fn lists_agree(c: &TestCluster, leader: usize, sync: usize) {
    let (p, w) = warden_testkit::wait_for(
        "patronictl list and wardenctl list to agree",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || {
            let p = list(c, "patronictl".into());
            let w = list(c, TestCluster::bin("wardenctl"));
            (p == w).then_some((p, w))
        },
    );
    let roles: BTreeMap<&str, (&str, &str)> = p
        .iter()
        .map(|(m, r, s, _)| (m.as_str(), (r.as_str(), s.as_str())))
        .collect();
    let want: BTreeMap<&str, (&str, &str)> = (0..c.nodes.len())
        .map(|i| {
            let name = c.nodes[i].name.as_str();
            match i {
                _ if i == leader => (name, ("Leader", "running")),
                _ if i == sync => (name, ("Sync Standby", "streaming")),
                _ => (name, ("Replica", "streaming")),
            }
        })
        .collect();
    assert_eq!(roles, want, "patronictl: {p:?}\nwardenctl: {w:?}");
}

/// Commits `n` rows on node i one by one (each acknowledged only once the synchronous
/// standby has it); returns the table's row count.
async fn commit_rows(c: &TestCluster, i: usize, n: usize) -> String {
    for _ in 0..n {
        exec(c, i, "INSERT INTO t DEFAULT VALUES")
            .await
            .unwrap_or_else(|e| panic!("insert on {}: {e}", c.nodes[i].name));
    }
    query_one(c, i, "SELECT count(*) FROM t")
        .await
        .expect("count")
}

/// The key as Patroni serializes it (`json.dumps(..., separators=(',', ':'))`).
fn patroni_layout(leader: &str, standby: &str) -> String {
    format!(r#"{{"leader":"{leader}","quorum":0,"sync_standby":"{standby}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_keeps_one_sync_key_through_switchovers() {
    let Some(patroni) = patroni_agent() else {
        return;
    };
    let started = Instant::now();
    let mut opts = vec![
        NodeOptions {
            yaml: vec![SYNC_DCS.to_string()],
            ..NodeOptions::default()
        };
        3
    ];
    opts[1].tags.push("nosync: true".into());
    let mut c = TestCluster::new("mixsync", 3, &opts);
    let (w0, p2) = (0, 2);
    // pg0 bootstraps under Warden; then the other Warden node and the Patroni replica.
    c.start_node(w0);
    assert_eq!(wait_for_leader(&c, Duration::from_secs(60)).await, w0);
    c.start_node(1);
    c.start_patroni_node(p2, &patroni);
    for i in [1, p2] {
        wait_streaming(&c, i, Duration::from_secs(120)).await;
    }
    exec(&c, w0, "CREATE TABLE t(id serial primary key)")
        .await
        .expect("create table");
    let monitor = WritableMonitor::start(dsns(&c));
    let mut watch = Watch::default();

    // 1. Warden leads; the Patroni replica is its synchronous standby.
    let key = watch.settle(&c, w0, p2).await;
    assert_eq!(key.raw, patroni_layout("pg0", "pg2"), "written by Warden");
    lists_agree(&c, w0, p2);
    eprintln!(
        "stable under Warden after {:?}: {}",
        started.elapsed(),
        key.raw
    );

    // 2. The real patronictl switches over to the Patroni node; 3. wardenctl back to a
    // Warden node. Each leader's key names the other as its synchronous standby.
    watch.switchover(&c, "patronictl".into(), w0, p2).await;
    let key = watch
        .switchover(&c, TestCluster::bin("wardenctl"), p2, w0)
        .await;
    // Still the same key once the lists were read, and commits go on.
    commit_rows(&c, w0, 5).await;
    assert_eq!(watch.settle(&c, w0, p2).await, key);

    let (max, events) = monitor.finish().await;
    eprintln!(
        "{} samples ({} inconclusive, {} between the lock and the key moving); keys seen: {:?}; {:?} in all",
        watch.samples,
        watch.inconclusive,
        watch.transitional,
        watch.keys,
        started.elapsed()
    );
    assert!(
        watch.violations.is_empty(),
        "inconsistent sync key: {:#?}",
        watch.violations
    );
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}
