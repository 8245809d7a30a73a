//! Issue 15 (replica creation methods and custom bootstrap), on real etcd and
//! PostgreSQL:
//!
//! * a custom method that fails falls back to `basebackup`, and gets Patroni's
//!   arguments with the replication password only in `PGPASSFILE`;
//! * with the leader down, a node builds itself with a `no_leader` method (a copy of an
//!   earlier pg_basebackup) and starts as a replica; in failsafe mode it is not in the
//!   `failsafe` key, so it never promotes itself; the old leader comes back and it
//!   streams from it;
//! * a new cluster is bootstrapped by a custom method from a base backup plus a WAL
//!   archive (`recovery_conf`, recovery_target_action promote), and the users of its
//!   own YAML work afterwards (the restored roles are altered);
//! * a slow method (longer than ttl) keeps the member key and the REST API alive.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster, REPLICATION_PASSWORD, SUPERUSER_PASSWORD};

/// An executable shell script in the cluster's temp dir (readable by the agents' user).
fn script(c: &TestCluster, name: &str, body: &str) -> PathBuf {
    let p = c.dir.write_file(name, &format!("#!/bin/sh\n{body}"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    p
}

/// Shell lines that write each argument (one per line) and `PGPASSFILE` to `out`.
fn record_args(out: &Path) -> String {
    format!(
        "for a in \"$@\"; do echo \"$a\"; done > {out}\necho \"PGPASSFILE=$PGPASSFILE\" >> {out}\n",
        out = out.display()
    )
}

/// Shell lines that set `$datadir` and `$src` from `--datadir=…` / `--src=…`.
const PARSE_ARGS: &str = "for a in \"$@\"; do case \"$a\" in --datadir=*) datadir=\"${a#--datadir=}\";; --src=*) src=\"${a#--src=}\";; esac; done\n";

fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn log_of(c: &TestCluster, i: usize) -> String {
    std::fs::read_to_string(&c.nodes[i].log).unwrap_or_default()
}

/// Waits until node i's log contains `needle` at least `times` times.
async fn wait_log(c: &TestCluster, i: usize, needle: &str, times: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while log_of(c, i).matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "{} did not log {needle:?} {times} time(s) within {timeout:?}\n{}",
            c.nodes[i].name,
            c.logs_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A key of another scope in the test cluster's etcd.
fn etcd_get_scope(c: &TestCluster, scope: &str, key: &str) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &c.etcd.url(),
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "--print-value-only",
            &format!("/service/{scope}/{key}"),
        ])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `pg_basebackup` of node i into `dest` as the PostgreSQL user (the replication
/// password through the environment of this test process only).
fn take_basebackup(c: &TestCluster, i: usize, dest: &Path, wal: &str) {
    let mut cmd = Command::new(warden_testkit::pg_bin_dir().join("pg_basebackup"));
    cmd.arg("-D")
        .arg(dest)
        .args([
            "-X",
            wal,
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-U",
            "replicator",
        ])
        .arg("-p")
        .arg(c.nodes[i].pg_port.to_string())
        .env("PGPASSWORD", REPLICATION_PASSWORD);
    c.dir.run_as.apply(&mut cmd);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "pg_basebackup failed: {out}{err}");
}

/// Connects to node i over TCP as `user` with `password` (None if refused).
async fn connect_as(
    c: &TestCluster,
    i: usize,
    user: &str,
    password: &str,
) -> Option<tokio_postgres::Client> {
    let dsn = format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=postgres connect_timeout=3",
        c.nodes[i].pg_port
    );
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_custom_method_falls_back_to_basebackup() {
    let mut c = TestCluster::new("fallback", 2, &[]);
    let args_file = c.dir.path().join("broken.args");
    let broken = script(
        &c,
        "broken.sh",
        &format!("{}exit 3\n", record_args(&args_file)),
    );
    let opts = NodeOptions {
        yaml: vec![format!(
            "postgresql:\n  create_replica_methods: [broken, basebackup]\n  broken:\n    command: {} --flag\n    foo: bar\n",
            broken.display()
        )],
        ..NodeOptions::default()
    };
    let yaml = warden_testkit::cluster::merge_yaml(
        &std::fs::read_to_string(&c.nodes[1].config).expect("config"),
        &opts.yaml,
    );
    std::fs::write(&c.nodes[1].config, yaml).expect("write config");

    c.start_node(0);
    wait_leader_is(&c, "pg0", Duration::from_secs(60)).await;
    c.start_node(1);
    wait_streaming(&c, 1, Duration::from_secs(90)).await;

    let log = log_of(&c, 1);
    assert!(
        log.contains(&format!(
            "Error creating replica using method broken: {} --flag exited with code=3",
            broken.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("replica has been created using basebackup"),
        "{log}"
    );
    assert!(log.contains("bootstrapped from leader 'pg0'"), "{log}");

    // Patroni's arguments: the command's own words, the section's keys, then the
    // standard ones; the connection string has no password, PGPASSFILE has it.
    let got = lines_of(&args_file);
    let dd = c.nodes[1].data_dir.display().to_string();
    assert_eq!(got[0], "--flag", "{got:?}");
    assert_eq!(got[1], "--foo=bar", "{got:?}");
    assert_eq!(got[2], "--scope=fallback", "{got:?}");
    assert_eq!(got[3], "--role=replica", "{got:?}");
    assert_eq!(got[4], format!("--datadir={dd}"), "{got:?}");
    let conn = got[5].strip_prefix("--connstring=").expect("connstring");
    assert!(conn.contains("user=replicator"), "{conn}");
    assert!(conn.contains("host=127.0.0.1"), "{conn}");
    assert!(
        conn.contains(&format!("port={}", c.nodes[0].pg_port)),
        "{conn}"
    );
    let passfile = got[6].strip_prefix("PGPASSFILE=").expect("PGPASSFILE line");
    assert_eq!(
        passfile,
        c.nodes[1].dir.join("pgpass").display().to_string()
    );
    assert!(
        !got.iter().any(|a| a.contains(REPLICATION_PASSWORD)),
        "no password on the command line: {got:?}"
    );
    assert!(
        !log.contains(REPLICATION_PASSWORD) && !log.contains(SUPERUSER_PASSWORD),
        "no password in the log"
    );

    // And it replicates.
    exec(&c, 0, "CREATE TABLE fb(x int); INSERT INTO fb VALUES (1)")
        .await
        .expect("write");
    wait_query(
        &c,
        1,
        "SELECT count(*) FROM fb",
        "1",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_method_builds_a_replica_that_failsafe_keeps_from_promoting() {
    let mut c = TestCluster::new("noleader", 2, &[]);
    let backup = c.dir.path().join("backup");
    let args_file = c.dir.path().join("restore.args");
    let restore = script(
        &c,
        "restore.sh",
        &format!(
            "{}{PARSE_ARGS}mkdir -p \"$datadir\" && chmod 700 \"$datadir\" && cp -a \"$src/.\" \"$datadir/\"\n",
            record_args(&args_file)
        ),
    );
    for i in 0..2 {
        let mut docs = vec!["bootstrap:\n  dcs:\n    failsafe_mode: true\n".to_string()];
        if i == 1 {
            docs.push(format!(
                "postgresql:\n  create_replica_methods: [from_backup]\n  from_backup:\n    command: {} --src={}\n    no_leader: '1'\n",
                restore.display(),
                backup.display()
            ));
        }
        let yaml = warden_testkit::cluster::merge_yaml(
            &std::fs::read_to_string(&c.nodes[i].config).expect("config"),
            &docs,
        );
        std::fs::write(&c.nodes[i].config, yaml).expect("write config");
    }

    c.start_node(0);
    wait_leader_is(&c, "pg0", Duration::from_secs(60)).await;
    warden_testkit::wait_for(
        "pg0 in the failsafe key",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || c.etcd_get("failsafe").filter(|f| f.contains("pg0")),
    );
    exec(&c, 0, "CREATE TABLE nl(x int); INSERT INTO nl VALUES (1)")
        .await
        .expect("write");
    take_basebackup(&c, 0, &backup, "stream");
    let status = c.stop_node(0, Duration::from_secs(60));
    assert!(status.is_some(), "pg0 stopped");
    assert_eq!(c.leader(), None, "the leader key was released");

    // The leader is gone: pg1 builds itself from the backup and starts as a replica.
    c.start_node(1);
    wait_log(
        &c,
        1,
        "bootstrapped (without leader)",
        1,
        Duration::from_secs(90),
    )
    .await;
    let log = log_of(&c, 1);
    assert!(
        log.contains("trying to bootstrap (without leader)"),
        "{log}"
    );
    assert!(
        log.contains("replica has been created using from_backup"),
        "{log}"
    );
    let got = lines_of(&args_file);
    assert!(got.contains(&"--no_leader=1".to_string()), "{got:?}");
    assert!(got.contains(&"--scope=noleader".to_string()), "{got:?}");
    assert!(
        got.contains(&"--connstring=".to_string()),
        "no source: {got:?}"
    );
    wait_query(
        &c,
        1,
        "SELECT count(*) FROM nl",
        "1",
        Duration::from_secs(60),
    )
    .await;

    // It is not in the failsafe key, so it never takes over: several decisions say so
    // while it stays a read-only replica and nobody holds the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !is_writable(&c, 1).await,
            "pg1 must not be promoted\n{}",
            c.logs_tail(30)
        );
        assert_eq!(c.leader(), None, "nobody may take the lock");
        if log_of(&c, 1)
            .matches("I am not in the failsafe topology")
            .count()
            >= 3
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no decision seen\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = member(&c, "pg1").expect("member key");
    assert_eq!(m["role"], "replica", "{m}");
    assert_eq!(m["state"], "running", "{m}");

    // The old leader comes back, leads again, and the rebuilt node streams from it.
    c.start_node(0);
    wait_leader_is(&c, "pg0", Duration::from_secs(90)).await;
    wait_streaming(&c, 1, Duration::from_secs(90)).await;
    exec(&c, 0, "INSERT INTO nl VALUES (2)")
        .await
        .expect("write");
    wait_query(
        &c,
        1,
        "SELECT count(*) FROM nl",
        "2",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_bootstrap_from_backup_and_wal_archive() {
    // Nodes: 0 = the source cluster `src`; 1 = the new cluster `restored`, bootstrapped
    // from node 0's backup and archive; 2 = a replica of `restored` (proves the
    // replication user's new password).
    let mut c = TestCluster::new("restored", 3, &[]);
    let archive = c.dir.subdir("archive", false);
    let backup = c.dir.path().join("backup");
    let args_file = c.dir.path().join("bootstrap.args");
    let restore = script(
        &c,
        "restore.sh",
        &format!(
            "{}{PARSE_ARGS}mkdir -p \"$datadir\" && chmod 700 \"$datadir\" && cp -a \"$src/.\" \"$datadir/\"\n",
            record_args(&args_file)
        ),
    );
    // Only SCRAM on TCP, so that the passwords matter.
    let hba = "  pg_hba:\n  - local all all trust\n  - local replication all trust\n  - host all all 127.0.0.1/32 scram-sha-256\n  - host replication replicator 127.0.0.1/32 scram-sha-256\n";
    let new_passwords = "  authentication:\n    superuser: {password: restored-pass}\n    replication: {password: rep-restored}\n";
    let docs: Vec<Vec<String>> = vec![
        vec![
            "scope: src\n".into(),
            format!(
                "postgresql:\n  parameters:\n    archive_mode: 'on'\n    archive_command: 'cp %p {}/%f'\n{hba}",
                archive.display()
            ),
        ],
        vec![format!(
            "bootstrap:\n  method: restore\n  restore:\n    command: {} --src={}\n    extra-key: value\n    recovery_conf:\n      restore_command: 'cp {}/%f %p'\n      recovery_target_action: promote\n      recovery_target_timeline: latest\npostgresql:\n{new_passwords}{hba}",
            restore.display(),
            backup.display(),
            archive.display()
        )],
        vec![format!("postgresql:\n{new_passwords}{hba}")],
    ];
    for (i, d) in docs.iter().enumerate() {
        let yaml = warden_testkit::cluster::merge_yaml(
            &std::fs::read_to_string(&c.nodes[i].config).expect("config"),
            d,
        );
        std::fs::write(&c.nodes[i].config, yaml).expect("write config");
    }
    c.dsn_via_socket = true;

    // The source cluster, its data, a base backup without WAL, more data afterwards
    // that only the archive has.
    c.start_node(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The leader key comes after post_bootstrap: the replication user exists then.
    while etcd_get_scope(&c, "src", "leader").as_deref() != Some("pg0") || !is_writable(&c, 0).await
    {
        assert!(
            Instant::now() < deadline,
            "src did not start\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let src_sysid = query_one(&c, 0, "SELECT system_identifier FROM pg_control_system()")
        .await
        .expect("sysid");
    exec(
        &c,
        0,
        "CREATE TABLE before_backup(x int); INSERT INTO before_backup VALUES (1)",
    )
    .await
    .expect("write");
    take_basebackup(&c, 0, &backup, "none");
    exec(
        &c,
        0,
        "CREATE TABLE after_backup(x int); INSERT INTO after_backup VALUES (2)",
    )
    .await
    .expect("write");
    let segment = query_one(&c, 0, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .expect("segment");
    exec(&c, 0, "SELECT pg_switch_wal()").await.expect("switch");
    wait_query(
        &c,
        0,
        &format!("SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(30),
    )
    .await;
    c.stop_node(0, Duration::from_secs(60))
        .expect("src stopped");

    // The new cluster: bootstrapped by the custom method, recovered from the archive,
    // promoted, leader of `restored`.
    c.start_node(1);
    wait_leader_is(&c, "pg1", Duration::from_secs(120)).await;
    let log = log_of(&c, 1);
    assert!(log.contains("Running custom bootstrap script:"), "{log}");
    assert!(log.contains("initialized a new cluster"), "{log}");
    let got = lines_of(&args_file);
    assert_eq!(
        &got[..4],
        &[
            format!("--src={}", backup.display()),
            "--scope=restored".to_string(),
            format!("--datadir={}", c.nodes[1].data_dir.display()),
            "--extra-key=value".to_string(),
        ],
        "{got:?}"
    );
    assert!(
        !got.iter().any(|a| a.starts_with("--recovery_conf")),
        "{got:?}"
    );
    assert_eq!(
        c.etcd_get("initialize").as_deref(),
        Some(src_sysid.as_str())
    );
    assert_eq!(
        etcd_get_scope(&c, "src", "initialize").as_deref(),
        Some(src_sysid.as_str())
    );
    for (t, v) in [("before_backup", "1"), ("after_backup", "2")] {
        wait_query(
            &c,
            1,
            &format!("SELECT max(x) FROM {t}"),
            v,
            Duration::from_secs(10),
        )
        .await;
    }
    // Recovery ended with a promotion onto a new timeline.
    let tl = query_one(&c, 1, "SELECT timeline_id FROM pg_control_checkpoint()")
        .await
        .expect("timeline");
    assert_ne!(tl, "1", "the restore promoted onto a new timeline");

    // The users of its own YAML: the superuser's password is the new one (the old one
    // no longer works), and the configured pg_hba (no trust on TCP) is back.
    let client = connect_as(&c, 1, "postgres", "restored-pass")
        .await
        .unwrap_or_else(|| panic!("the new superuser password works\n{}", c.logs_tail(30)));
    let trust_on_tcp = client
        .query_one(
            "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust' AND type = 'host'",
            &[],
        )
        .await
        .expect("pg_hba_file_rules");
    assert_eq!(trust_on_tcp.get::<_, i64>(0), 0, "no trust left on TCP");
    assert!(
        connect_as(&c, 1, "postgres", SUPERUSER_PASSWORD)
            .await
            .is_none(),
        "the source's superuser password must not work any more"
    );
    assert!(!std::path::Path::new(&c.nodes[1].data_dir)
        .join("recovery.signal")
        .exists());

    // The replication user's new password: a replica of the new cluster clones and streams.
    c.start_node(2);
    wait_streaming(&c, 2, Duration::from_secs(90)).await;
    exec(&c, 1, "INSERT INTO after_backup VALUES (3)")
        .await
        .expect("write");
    wait_query(
        &c,
        2,
        "SELECT max(x) FROM after_backup",
        "3",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_method_keeps_the_member_key_and_the_rest_api_alive() {
    let mut c = TestCluster::new("slow", 2, &[]);
    let started = c.dir.path().join("slow.started");
    let finished = c.dir.path().join("slow.finished");
    // Longer than the ttl (20 s): a loop blocked on it would let the member key expire.
    let slow = script(
        &c,
        "slow.sh",
        &format!(
            "touch {s}\nsleep 30\ntouch {f}\nexit 1\n",
            s = started.display(),
            f = finished.display()
        ),
    );
    let yaml = warden_testkit::cluster::merge_yaml(
        &std::fs::read_to_string(&c.nodes[1].config).expect("config"),
        &[format!(
            "postgresql:\n  create_replica_methods: [slow, basebackup]\n  slow:\n    command: {}\n",
            slow.display()
        )],
    );
    std::fs::write(&c.nodes[1].config, yaml).expect("write config");

    c.start_node(0);
    wait_leader_is(&c, "pg0", Duration::from_secs(60)).await;
    c.start_node(1);
    warden_testkit::wait_for(
        "the slow method to start",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || started.exists().then_some(()),
    );
    // While it runs: the member key is there saying `creating replica`, and the REST
    // API answers the same.
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !finished.exists() {
        let m = member(&c, "pg1").unwrap_or_else(|| {
            panic!(
                "pg1's member key vanished during the slow method\n{}",
                c.logs_tail(30)
            )
        });
        assert_eq!(m["state"], "creating replica", "{m}");
        let (code, body) = api_get(&c, 1, "/patroni")
            .await
            .unwrap_or_else(|| panic!("the REST API did not answer\n{}", c.logs_tail(30)));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["state"], "creating replica", "{code} {body}");
        polls += 1;
        assert!(Instant::now() < deadline, "the slow method never finished");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(polls > 0, "the method was watched while it ran");
    let log = log_of(&c, 1);
    assert!(
        log.contains("bootstrap from leader 'pg0' in progress"),
        "{log}"
    );
    // Then the fallback builds it.
    wait_streaming(&c, 1, Duration::from_secs(90)).await;
    assert!(log_of(&c, 1).contains("replica has been created using basebackup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_custom_bootstrap_gives_initialize_back_and_exits() {
    let mut c = TestCluster::new("cbfail", 2, &[]);
    let failing = script(
        &c,
        "restore_fails.sh",
        &format!(
            "{PARSE_ARGS}mkdir -p \"$datadir\" && echo partial > \"$datadir/partial\"\necho \"no backup here\" >&2\nexit 2\n"
        ),
    );
    let yaml = warden_testkit::cluster::merge_yaml(
        &std::fs::read_to_string(&c.nodes[0].config).expect("config"),
        &[format!(
            "bootstrap:\n  method: restore\n  restore:\n    command: {}\n",
            failing.display()
        )],
    );
    std::fs::write(&c.nodes[0].config, yaml).expect("write config");
    c.start_node(0);
    let status = c.nodes[0]
        .agent
        .as_mut()
        .expect("agent started")
        .wait_exit(Duration::from_secs(90));
    let log = log_of(&c, 0);
    let status = status.unwrap_or_else(|| panic!("the agent did not exit\n{log}"));
    assert!(!status.success(), "exit non-zero: {status:?}\n{log}");
    assert!(log.contains("Running custom bootstrap script:"), "{log}");
    assert!(
        log.contains(&format!(
            "custom bootstrap script {} exited with code=2",
            failing.display()
        )),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("CRITICAL") && l.contains("Failed to bootstrap cluster"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(c.etcd_get("initialize"), None, "initialize given back");
    assert_eq!(c.etcd_get("leader"), None, "no leader key");
    assert!(
        !c.nodes[0].data_dir.exists(),
        "the data directory was moved aside"
    );

    // Another node bootstraps the cluster with initdb.
    c.start_node(1);
    wait_leader_is(&c, "pg1", Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rewind_rebuilds_the_node_when_allowed() {
    let mut c = TestCluster::new("rewindfail", 2, &[]);
    // pg0's binaries: the real ones, but a pg_rewind that fails (its --help still works,
    // so rewinding looks possible).
    let real = warden_testkit::pg_bin_dir();
    let bin = c.dir.subdir("fakebin", false);
    for e in std::fs::read_dir(&real).expect("pg bin dir").flatten() {
        if e.file_name() != "pg_rewind" {
            std::os::unix::fs::symlink(e.path(), bin.join(e.file_name())).expect("symlink");
        }
    }
    let fake = c.dir.write_file(
        "fakebin/pg_rewind",
        &format!(
            "#!/bin/sh\ncase \"$1\" in --help|--version) exec {}/pg_rewind \"$1\";; esac\necho 'pg_rewind: error: simulated failure' >&2\nexit 1\n",
            real.display()
        ),
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let yaml = warden_testkit::cluster::merge_yaml(
        &std::fs::read_to_string(&c.nodes[0].config).expect("config"),
        &[format!(
            "postgresql:\n  bin_dir: {}\n  remove_data_directory_on_rewind_failure: true\n",
            bin.display()
        )],
    );
    std::fs::write(&c.nodes[0].config, yaml).expect("write config");

    c.start_node(0);
    wait_leader_is(&c, "pg0", Duration::from_secs(60)).await;
    c.start_node(1);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    exec(&c, 0, "CREATE TABLE rw(x int); INSERT INTO rw VALUES (1)")
        .await
        .expect("write");
    wait_query(
        &c,
        1,
        "SELECT count(*) FROM rw",
        "1",
        Duration::from_secs(30),
    )
    .await;

    // pg1 goes away, pg0 takes a write only it has, then dies; pg1 comes back alone,
    // takes over and moves to a new timeline: pg0 has diverged.
    c.kill_node(1);
    exec(&c, 0, "INSERT INTO rw VALUES (2)")
        .await
        .expect("write");
    c.kill_node(0);
    c.start_node(1);
    wait_leader_is(&c, "pg1", Duration::from_secs(120)).await;
    warden_testkit::wait_for(
        "pg1 to publish its new timeline",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || member(&c, "pg1").filter(|m| m["timeline"] == 2),
    );
    exec(&c, 1, "INSERT INTO rw VALUES (3)")
        .await
        .expect("write");

    // pg0 comes back diverged; its pg_rewind keeps failing against a healthy leader, so
    // its data directory is removed and it is built again from the leader.
    c.start_node(0);
    wait_log(
        &c,
        0,
        "remove_data_directory_on_rewind_failure is set. removing...",
        1,
        Duration::from_secs(120),
    )
    .await;
    wait_streaming(&c, 0, Duration::from_secs(120)).await;
    wait_query(
        &c,
        0,
        "SELECT string_agg(x::text, ',' ORDER BY x) FROM rw",
        "1,3",
        Duration::from_secs(30),
    )
    .await;
    let log = log_of(&c, 0);
    assert!(
        log.contains("Failed to rewind from healthy primary: pg1"),
        "{log}"
    );
    assert!(
        log.contains("trying to bootstrap from leader 'pg1'"),
        "{log}"
    );
    // The rewind is tried REWIND_ATTEMPTS times in all (a first failure may be
    // transient), then not again: the node is rebuilt instead.
    assert_eq!(
        log.matches("Failed to rewind from healthy primary").count(),
        warden_core::ha::REWIND_ATTEMPTS as usize,
        "{log}"
    );
}
