//! A 3-node cluster configured as Patroni's acceptance harness configures TLS: one
//! self-signed certificate (`openssl req -nodes -new -x509 -subj /CN=batman.patroni
//! -addext subjectAltName=IP:127.0.0.1`) used as server, client and CA certificate by the
//! REST API (`verify_client: required`, Basic auth), by `ctl` (`PATRONI_CTL_*`, insecure)
//! and by PostgreSQL (`ssl: on`, `hostssl … md5 clientcert=verify-ca`, every
//! `postgresql.authentication` user with `sslmode: verify-ca` and the certificate).
//!
//! Replicas are cloned and stream over TLS, `wardenctl` talks HTTPS with the client
//! certificate (and fails cleanly without it), a switchover needs the agents' HTTPS peer
//! probes, a killed leader is replaced and, having diverged, rejoins through pg_rewind
//! over TLS. No password ever shows on a command line or in a log.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::TestDir;

const TTL: u64 = 20;
const LOOP_WAIT: u64 = 2;
const REST_USER: &str = "batman-api";

/// Passwords unique to this run, so that a hit in another process's command line (a
/// Patroni acceptance run on the same machine uses `zalando`, `rep-pass`…) is ours.
struct Secrets {
    superuser: String,
    replication: String,
    rewind: String,
    rest: String,
}

impl Secrets {
    fn new() -> Secrets {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!("{:x}{:x}", nanos, std::process::id());
        Secrets {
            superuser: format!("su{token}"),
            replication: format!("repl{token}"),
            rewind: format!("rw{token}"),
            rest: format!("rest{token}"),
        }
    }

    fn all(&self) -> Vec<String> {
        vec![
            self.superuser.clone(),
            self.replication.clone(),
            self.rewind.clone(),
            self.rest.clone(),
        ]
    }
}

struct Certs {
    cert: PathBuf,
    key: PathBuf,
}

/// The harness' certificate, owned by the PostgreSQL user (key 0600).
fn make_cert(dir: &TestDir) -> Certs {
    let d = dir.subdir("certs", true);
    let (cert, key) = warden_testkit::harness_cert(&d, "patroni");
    for f in [&cert, &key] {
        dir.run_as.chown(f);
    }
    Certs { cert, key }
}

/// The harness' TLS configuration of one node (merged into the testkit's config).
fn tls_yaml(c: &Certs, s: &Secrets) -> String {
    let cert = c.cert.display();
    let key = c.key.display();
    let psql = warden_testkit::pg_bin_dir().join("psql");
    let user = |name: &str, password: &str| {
        format!(
            "    {name}:\n      password: {password}\n      sslmode: verify-ca\n      \
             sslrootcert: {cert}\n      sslcert: {cert}\n      sslkey: {key}\n"
        )
    };
    let hba = "  - local all all trust\n  - local replication all trust\n  \
               - hostssl replication replicator all md5 clientcert=verify-ca\n  \
               - hostssl all all all md5 clientcert=verify-ca\n";
    format!(
        "restapi:\n  certfile: {cert}\n  keyfile: {key}\n  cafile: {cert}\n  \
         verify_client: required\n  authentication:\n    username: {REST_USER}\n    \
         password: {rest}\n\
         bootstrap:\n  post_bootstrap: {psql} -w -c \"SELECT 1\"\n  initdb:\n  \
         - encoding: UTF8\n  - data-checksums\n  - no-sync\n  - auth: md5\n  \
         - auth-host: md5\n  pg_hba:\n{hba_b}\
         postgresql:\n  authentication:\n{su}{repl}{rw}  parameters:\n    ssl: 'on'\n    \
         ssl_cert_file: {cert}\n    ssl_key_file: {key}\n    ssl_ca_file: {cert}\n    \
         log_statement: all\n  pg_hba:\n{hba_p}",
        rest = s.rest,
        psql = psql.display(),
        hba_b = hba,
        hba_p = hba,
        su = user("superuser", &s.superuser),
        repl = user("replication", &s.replication),
        rw = user("rewind", &s.rewind),
    )
}

/// `PATRONI_CTL_*` as the harness exports them (to agents and to wardenctl).
fn ctl_env(c: &Certs) -> Vec<(String, String)> {
    vec![
        ("PATRONI_CTL_INSECURE".into(), "on".into()),
        ("PATRONI_CTL_CERTFILE".into(), c.cert.display().to_string()),
        ("PATRONI_CTL_KEYFILE".into(), c.key.display().to_string()),
    ]
}

fn wardenctl_env(
    c: &TestCluster,
    env: &[(String, String)],
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(TestCluster::bin("wardenctl"));
    cmd.arg("-c").arg(&c.nodes[0].config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Every process on the machine whose command line holds one of `secrets`.
fn cmdlines_with(secrets: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return hits;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        for s in secrets {
            if line.contains(s.as_str()) {
                hits.push(format!("pid {pid}: {line}"));
            }
        }
    }
    hits
}

/// Scans every process's command line for the secrets every 50 ms until finished, so
/// that short-lived children (pg_basebackup, pg_rewind, psql, initdb) are seen too.
struct CmdlineWatch {
    stop: Arc<AtomicBool>,
    scans: Arc<AtomicUsize>,
    hits: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CmdlineWatch {
    fn start(secrets: Vec<String>) -> CmdlineWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let scans = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (st, sc, h) = (stop.clone(), scans.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let found = cmdlines_with(&secrets);
                if !found.is_empty() {
                    h.lock().unwrap().extend(found);
                }
                sc.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        CmdlineWatch {
            stop,
            scans,
            hits,
            thread: Some(thread),
        }
    }

    /// Stops the watch: (number of scans, every hit).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let hits = self.hits.lock().unwrap().clone();
        (self.scans.load(Ordering::SeqCst), hits)
    }
}

impl Drop for CmdlineWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Asserts that no process's command line holds a secret right now.
fn assert_no_secret_in_cmdlines(secrets: &[String], when: &str) {
    let hits = cmdlines_with(secrets);
    assert!(
        hits.is_empty(),
        "{when}: passwords on command lines: {hits:#?}"
    );
}

/// Every log file under `dir` (agent logs, `<data_dir>.postmaster.log`, PostgreSQL's
/// `log/` directories), recursively.
fn log_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            log_files(&p, out);
        } else if ft.is_file() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_log_dir = p
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "log" || n == "pg_log");
            if name.ends_with(".log") || name.ends_with(".csv") || in_log_dir {
                out.push(p);
            }
        }
    }
}

/// `leader`'s walsenders as seen in pg_stat_replication, with TLS facts:
/// `(application_name, ssl, client_dn, usename)`.
async fn tls_replication(c: &TestCluster, leader: usize) -> Vec<(String, String, String, String)> {
    let Some(client) = connect(c, leader).await else {
        return Vec::new();
    };
    let Ok(rows) = client
        .simple_query(
            "SELECT r.application_name, s.ssl::text, coalesce(s.client_dn, ''), r.usename \
             FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid \
             WHERE r.state = 'streaming' ORDER BY 1",
        )
        .await
    else {
        return Vec::new();
    };
    rows.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0)?.to_string(),
                r.get(1)?.to_string(),
                r.get(2)?.to_string(),
                r.get(3)?.to_string(),
            )),
            _ => None,
        })
        .collect()
}

/// Waits until both other nodes stream from `leader` over TLS with the client certificate.
async fn wait_tls_streaming(c: &TestCluster, leader: usize) {
    let mut want: Vec<(String, String, String, String)> = (0..c.nodes.len())
        .filter(|i| *i != leader)
        .map(|i| {
            (
                c.nodes[i].name.clone(),
                "true".into(),
                "/CN=batman.patroni".into(),
                "replicator".into(),
            )
        })
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = tls_replication(c, leader).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replication on {} over TLS: got {got:?}, want {want:?}\n{}",
            c.nodes[leader].name,
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn log_text(c: &TestCluster, i: usize) -> String {
    std::fs::read_to_string(&c.nodes[i].log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_tls_cluster_replicates_switches_over_fails_over_and_rewinds() {
    let t0 = Instant::now();
    let secrets = Secrets::new();
    let certs_dir = TestDir::new("warden-tls-certs-");
    let certs = make_cert(&certs_dir);
    let opts = NodeOptions {
        yaml: vec![tls_yaml(&certs, &secrets)],
        env: ctl_env(&certs),
        ..NodeOptions::default()
    };
    let mut c = TestCluster::new("batman", 3, &[opts.clone(), opts.clone(), opts]);
    // TCP takes only TLS with the client certificate: the test's SQL goes through the
    // unix socket (`local all all trust`, as the harness has it).
    c.dsn_via_socket = true;
    let watch = CmdlineWatch::start(secrets.all());
    c.start_all();

    // ---- one leader, two replicas cloned and streaming over TLS
    let l0 = wait_for_leader(&c, Duration::from_secs(90)).await;
    for i in (0..3).filter(|i| *i != l0) {
        wait_streaming(&c, i, Duration::from_secs(90)).await;
        assert!(!is_writable(&c, i).await, "replica {i} must be read-only");
    }
    wait_tls_streaming(&c, l0).await;
    eprintln!("[{:?}] cluster up, replicas stream over TLS", t0.elapsed());
    // The scan itself works: it sees the agents (their config path is on their command line).
    let config = c.nodes[0].config.display().to_string();
    assert!(
        !cmdlines_with(std::slice::from_ref(&config)).is_empty(),
        "the /proc scan does not see the agent running {config}"
    );
    assert_no_secret_in_cmdlines(&secrets.all(), "after bootstrap and cloning");
    for n in &c.nodes {
        let m = member(&c, &n.name).expect("member key");
        assert_eq!(
            m["api_url"],
            format!("https://127.0.0.1:{}/patroni", n.api_port),
            "{m}"
        );
    }
    // The agent's own connection is TLS too (TCP admits nothing else): it keeps working.
    exec(
        &c,
        l0,
        "CREATE TABLE tls_t(id int primary key); INSERT INTO tls_t SELECT generate_series(1, 100)",
    )
    .await
    .expect("write on the leader");
    for i in (0..3).filter(|i| *i != l0) {
        wait_query(
            &c,
            i,
            "SELECT count(*) FROM tls_t",
            "100",
            Duration::from_secs(30),
        )
        .await;
    }

    let monitor = WritableMonitor::start(dsns(&c));

    // ---- wardenctl over HTTPS with the client certificate
    let env = ctl_env(&certs);
    let (code, out, err) = wardenctl_env(&c, &env, &["list", "-f", "json"]);
    assert_eq!(code, 0, "wardenctl list: {out}{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let roles: Vec<(String, String)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            (
                m["Role"].as_str().unwrap_or("").to_string(),
                m["State"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(roles.len(), 3, "{out}");
    assert_eq!(
        roles
            .iter()
            .filter(|r| r.0 == "Replica" && r.1 == "streaming")
            .count(),
        2,
        "{out}"
    );
    // `list` reads etcd only (as patronictl's does); `reload` calls every member's REST
    // API, so it is what needs (and proves) the client certificate.
    let (code, out, err) = wardenctl_env(&c, &env, &["reload", "batman", "--force"]);
    assert_eq!(
        code, 0,
        "wardenctl reload with the client certificate: {out}{err}"
    );
    for n in &c.nodes {
        assert!(
            out.contains(&format!("Reload request received for member {}", n.name)),
            "{out}{err}"
        );
    }
    let no_cert = vec![("PATRONI_CTL_INSECURE".to_string(), "on".to_string())];
    let (code, out, err) = wardenctl_env(&c, &no_cert, &["reload", "batman", "--force"]);
    assert_ne!(
        code, 0,
        "reload without a client certificate must fail: {out}{err}"
    );
    let err_lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        err_lines.len(),
        1,
        "one clear line on stderr without the client certificate: {err:?} (stdout {out:?})"
    );
    eprintln!(
        "[{:?}] wardenctl without the client certificate: {}",
        t0.elapsed(),
        err_lines[0]
    );
    assert_no_secret_in_cmdlines(&secrets.all(), "after wardenctl");

    // ---- switchover to a named replica (the leader probes it over HTTPS)
    let cand = (l0 + 1) % 3;
    wait_caught_up(&c, l0).await;
    let old_log_len = log_text(&c, l0).len();
    let (code, out, err) = wardenctl_env(
        &c,
        &env,
        &[
            "switchover",
            "batman",
            "--leader",
            &c.nodes[l0].name.clone(),
            "--candidate",
            &c.nodes[cand].name.clone(),
            "--force",
        ],
    );
    assert_eq!(code, 0, "wardenctl switchover: {out}{err}");
    assert!(
        out.contains(&format!(
            "Successfully switched over to \"{}\"",
            c.nodes[cand].name
        )),
        "{out}{err}"
    );
    wait_leader_is(&c, &c.nodes[cand].name.clone(), Duration::from_secs(30)).await;
    wait_streaming(&c, l0, Duration::from_secs(60)).await;
    wait_tls_streaming(&c, cand).await;
    let after: String = log_text(&c, l0).chars().skip(old_log_len).collect();
    let rewinds: Vec<&str> = after.lines().filter(|l| l.contains("pg_rewind")).collect();
    assert!(
        rewinds.is_empty(),
        "a clean switchover must not rewind the old primary: {rewinds:#?}"
    );
    eprintln!("[{:?}] switchover done", t0.elapsed());
    assert_no_secret_in_cmdlines(&secrets.all(), "after the switchover");

    // ---- the leader dies with WAL the replicas never got: failover, then pg_rewind
    let l1 = cand;
    exec(&c, l1, "INSERT INTO tls_t SELECT generate_series(101, 200)")
        .await
        .expect("write on the new leader");
    wait_caught_up(&c, l1).await;
    // Freeze the leader's walsenders so that the next commit stays on the leader alone
    // (synchronous_commit is local): the leader's timeline then diverges from the one
    // its successor starts.
    let walsenders: Vec<i32> = {
        let client = connect(&c, l1).await.expect("connect to the leader");
        client
            .simple_query("SELECT pid FROM pg_stat_replication")
            .await
            .expect("walsenders")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .collect()
    };
    assert_eq!(walsenders.len(), 2, "two walsenders on the leader");
    for pid in &walsenders {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP walsender");
    }
    exec(
        &c,
        l1,
        "INSERT INTO tls_t SELECT generate_series(1001, 1010)",
    )
    .await
    .expect("write only the leader has");
    let killed_at = Instant::now();
    // SIGKILL reaches stopped processes: the walsenders die with the postmaster.
    c.kill_node(l1);
    for pid in &walsenders {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let l2 = wait_for_leader(&c, Duration::from_secs(TTL + LOOP_WAIT + 30)).await;
    assert_ne!(l2, l1);
    eprintln!(
        "[{:?}] failover to {} after {:?}",
        t0.elapsed(),
        c.nodes[l2].name,
        killed_at.elapsed()
    );
    assert_eq!(
        query_one(&c, l2, "SELECT count(*) FROM tls_t")
            .await
            .as_deref(),
        Some("200"),
        "replicated rows survive; the unreplicated ones are not there"
    );
    exec(&c, l2, "INSERT INTO tls_t SELECT generate_series(201, 300)")
        .await
        .expect("write on the newest leader");

    // The killed node comes back: it diverged, so it is rewound (over TLS, as the rewind
    // user with the client certificate) and follows the new leader.
    let log_len = log_text(&c, l1).len();
    c.start_node(l1);
    wait_streaming(&c, l1, Duration::from_secs(90)).await;
    wait_query(
        &c,
        l1,
        "SELECT count(*) FROM tls_t",
        "300",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        query_one(&c, l1, "SELECT count(*) FROM tls_t WHERE id > 1000")
            .await
            .as_deref(),
        Some("0"),
        "the rewind removed what only the dead leader had"
    );
    let rejoin: String = log_text(&c, l1).chars().skip(log_len).collect();
    assert!(
        rejoin.contains(&format!("running pg_rewind from {}", c.nodes[l2].name)),
        "the diverged node must be rewound:\n{rejoin}"
    );
    assert!(
        rejoin.contains(&format!("pg_rewind from {} finished", c.nodes[l2].name)),
        "pg_rewind must succeed:\n{rejoin}"
    );
    wait_tls_streaming(&c, l2).await;
    eprintln!("[{:?}] old leader rewound and streaming", t0.elapsed());
    assert_no_secret_in_cmdlines(&secrets.all(), "after the rejoin");

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    let (scans, hits) = watch.finish();
    assert!(scans > 10, "the command line watch ran ({scans} scans)");
    assert!(
        hits.is_empty(),
        "passwords on command lines during the test: {hits:#?}"
    );

    // ---- no password in any agent or PostgreSQL log
    let mut logs = Vec::new();
    log_files(c.dir.path(), &mut logs);
    for n in &c.nodes {
        assert!(
            logs.contains(&n.log),
            "{} missing from {logs:?}",
            n.log.display()
        );
    }
    assert!(
        logs.iter()
            .any(|p| p.to_string_lossy().ends_with(".postmaster.log")),
        "no PostgreSQL log found: {logs:?}"
    );
    for p in &logs {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string();
        for s in secrets.all() {
            assert!(
                !text.contains(&s),
                "a password is in {}: {:?}",
                p.display(),
                text.lines().filter(|l| l.contains(&s)).collect::<Vec<_>>()
            );
        }
    }
    eprintln!(
        "[{:?}] done ({} logs, {scans} command line scans)",
        t0.elapsed(),
        logs.len()
    );
}
