//! Issue 15: Warden with a real backup tool, pgBackRest (Debian's `pgbackrest`), and a
//! local repository, configured the way the guides configure Patroni:
//!
//! * the primary archives WAL with `archive-push` and is backed up with `backup`;
//! * with the primary down (no leader), a new node builds itself from the repository
//!   through `create_replica_methods: [pgbackrest, basebackup]` (`no_leader`), replays the
//!   archive and has every archived row; the old primary rejoins afterwards;
//! * a new cluster is restored from the repository to a point in time through a custom
//!   bootstrap method (`pgbackrest restore --type=time`, `keep_existing_recovery_conf`),
//!   promoted at the target, with the rows committed before the target and none after.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{merge_yaml, NodeOptions, TestCluster};

const STANZA: &str = "warden";

/// pgBackRest or skip-with-reason: the tests need the real tool (test.sh installs it as
/// root; otherwise it says what to install).
fn pgbackrest() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v pgbackrest"])
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "pgbackrest not found: install it with `apt-get install -y pgbackrest` (test.sh does as root)"
    );
    PathBuf::from(p)
}

/// Writes node i's `pgbackrest.conf` (repository `repo`, the node's own data dir, port
/// and socket) and returns its path.
fn write_pgbackrest_conf(c: &TestCluster, i: usize, repo: &Path) -> PathBuf {
    let n = &c.nodes[i];
    let lock = n.dir.join("pgbackrest-lock");
    let text = format!(
        "[global]\nrepo1-path={repo}\nrepo1-retention-full=2\nlock-path={lock}\n\
         log-level-console=warn\nlog-level-file=off\nstart-fast=y\n\n\
         [{STANZA}]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
        repo = repo.display(),
        lock = lock.display(),
        data = n.data_dir.display(),
        port = n.pg_port,
        sock = n.dir.display(),
    );
    let p = n.dir.join("pgbackrest.conf");
    std::fs::write(&p, text).expect("write pgbackrest.conf");
    c.dir.run_as.chown(&p);
    p
}

/// Merges YAML into node i's config file (after [`TestCluster::new`] wrote it, because
/// the pgBackRest paths are only known then).
fn add_yaml(c: &TestCluster, i: usize, yaml: &str) {
    let n = &c.nodes[i];
    let base = std::fs::read_to_string(&n.config).expect("read config");
    std::fs::write(&n.config, merge_yaml(&base, &[yaml.to_string()])).expect("write config");
}

/// Runs pgBackRest as the PostgreSQL user with node i's config; panics with its output
/// (and the cluster's logs) when it fails.
fn run_pgbackrest(c: &TestCluster, conf: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(pgbackrest());
    cmd.arg(format!("--config={}", conf.display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args)
        .current_dir(c.dir.path());
    c.dir.run_as.apply(&mut cmd);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(
        code,
        0,
        "pgbackrest {args:?} failed: {out}{err}\n{}",
        c.failure_report()
    );
    out
}

/// The YAML that makes node i archive into the repository and restore from it.
fn archive_yaml(conf: &Path) -> String {
    let pgbr = pgbackrest();
    format!(
        "postgresql:\n  parameters:\n    archive_mode: 'on'\n    \
         archive_command: '{pgbr} --config={conf} --stanza={STANZA} archive-push \"%p\"'\n    \
         restore_command: '{pgbr} --config={conf} --stanza={STANZA} archive-get %f \"%p\"'\n",
        pgbr = pgbr.display(),
        conf = conf.display(),
    )
}

/// Options shared by every node: a short lease, so the test does not wait for long.
fn options(n: usize) -> Vec<NodeOptions> {
    vec![
        NodeOptions {
            yaml: vec![
                "bootstrap:\n  dcs:\n    ttl: 8\n    loop_wait: 2\n    retry_timeout: 3\nwarden:\n  min_ttl: 8\n"
                    .to_string(),
            ],
            ..NodeOptions::default()
        };
        n
    ]
}

async fn count(c: &TestCluster, i: usize, filter: &str) -> Option<String> {
    query_one(c, i, &format!("SELECT count(*) FROM t WHERE {filter}")).await
}

/// Waits (bounded) until `cond` holds, panicking with `what` and the cluster's logs.
async fn wait_until<F, Fut>(c: &TestCluster, what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > deadline {
            panic!(
                "{what} not reached after {timeout:?}\n{}",
                c.failure_report()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_from_the_repository_without_leader_and_point_in_time_restore() {
    let mut c = TestCluster::new("pgbr", 2, &options(2));
    let repo = c.dir.subdir("repo", true);
    let conf0 = write_pgbackrest_conf(&c, 0, &repo);
    let conf1 = write_pgbackrest_conf(&c, 1, &repo);
    add_yaml(&c, 0, &archive_yaml(&conf0));
    // Node 1 builds itself from the repository, also without a leader, and falls back
    // to pg_basebackup; `no_params` because pgBackRest takes its own options.
    add_yaml(&c, 1, &archive_yaml(&conf1));
    add_yaml(
        &c,
        1,
        &format!(
            "postgresql:\n  create_replica_methods: [pgbackrest, basebackup]\n  pgbackrest:\n    \
             command: '{pgbr} --config={conf} --stanza={STANZA} --delta --type=standby restore'\n    \
             keep_data: true\n    no_params: true\n    no_leader: true\n",
            pgbr = pgbackrest().display(),
            conf = conf1.display(),
        ),
    );

    c.start_node(0);
    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    assert_eq!(leader, 0);
    run_pgbackrest(&c, &conf0, &["stanza-create"]);
    run_pgbackrest(&c, &conf0, &["check"]);
    run_pgbackrest(&c, &conf0, &["--type=full", "backup"]);

    // Rows 1..100 before the recovery target, 101..200 after it.
    exec(
        &c,
        0,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("first rows");
    // The target: the next whole second after the first batch, in UTC (pgBackRest
    // compares it with the backup's stop time and wants no fractional seconds).
    let target = query_one(
        &c,
        0,
        "SELECT to_char(date_trunc('second', now() AT TIME ZONE 'UTC') + interval '1 second', \
         'YYYY-MM-DD HH24:MI:SS') || '+00'",
    )
    .await
    .expect("target time");
    // Keep the second batch clearly after the target.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    exec(&c, 0, "INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .expect("second rows");
    // `check` switches WAL and waits until the segment is in the repository.
    run_pgbackrest(&c, &conf0, &["check"]);

    // The primary goes away: the cluster has no leader.
    c.stop_node(0, Duration::from_secs(60))
        .expect("primary's agent exits on SIGTERM");
    wait_until(
        &c,
        "leader key released",
        Duration::from_secs(30),
        || async { c.leader().is_none() },
    )
    .await;

    // Node 1 restores from the repository without a leader and replays the archive.
    c.start_node(1);
    wait_until(
        &c,
        "node 1 restored with all 200 archived rows",
        Duration::from_secs(120),
        || async { count(&c, 1, "true").await.as_deref() == Some("200") },
    )
    .await;
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log1.contains("replica has been created using pgbackrest"),
        "node 1 was not built by the pgbackrest method\n{}",
        c.failure_report()
    );

    // The old primary comes back: one leader, the other streams from it, nothing lost.
    c.start_node(0);
    let leader = wait_for_leader(&c, Duration::from_secs(90)).await;
    wait_streaming(&c, 1 - leader, Duration::from_secs(90)).await;
    exec(&c, leader, "INSERT INTO t VALUES (201)")
        .await
        .expect("write after rejoin");
    wait_query(
        &c,
        1 - leader,
        "SELECT count(*) FROM t",
        "201",
        Duration::from_secs(30),
    )
    .await;

    // A new cluster restored from the same repository to the target time.
    let mut p = TestCluster::new("pgbr-pitr", 1, &options(1));
    let conf_p = write_pgbackrest_conf(&p, 0, &repo);
    add_yaml(
        &p,
        0,
        &format!(
            "bootstrap:\n  method: pitr\n  pitr:\n    \
             command: '{pgbr} --config={conf} --stanza={STANZA} --type=time \"--target={target}\" --target-action=promote restore'\n    \
             no_params: true\n    keep_existing_recovery_conf: true\n",
            pgbr = pgbackrest().display(),
            conf = conf_p.display(),
        ),
    );
    p.start_node(0);
    let l = wait_for_leader(&p, Duration::from_secs(120)).await;
    assert_eq!(count(&p, l, "id <= 100").await.as_deref(), Some("100"));
    assert_eq!(
        count(&p, l, "id > 100").await.as_deref(),
        Some("0"),
        "rows committed after the recovery target {target} were restored"
    );
    // The restored cluster is a working primary with the users of its own YAML.
    exec(&p, l, "INSERT INTO t VALUES (1000)")
        .await
        .expect("write on the restored cluster");
    let ctl = wardenctl(&p, &["list", "pgbr-pitr"]);
    assert_eq!(ctl.0, 0, "wardenctl list: {}{}", ctl.1, ctl.2);
}
