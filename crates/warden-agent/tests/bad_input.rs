//! Issue 2, acceptance 6: bad inputs give a clear error (or are skipped with a warning),
//! never a panic, and nothing is deleted. (Garbage in a member key is covered in
//! e2e_bootstrap against a running cluster.)

mod common;

use common::run;
use std::process::Command;
use std::time::Duration;
use warden_testkit::cluster::TestCluster;
use warden_testkit::{free_port, ProcessGuard, TestDir};

fn warden() -> Command {
    Command::new(TestCluster::bin("warden"))
}

#[test]
fn malformed_yaml_names_the_problem() {
    let dir = TestDir::new("warden-bad-");
    let cfg = dir.write_file(
        "bad.yml",
        "scope: x\nname: [unclosed\nrestapi:\n  listen: 1\n",
    );
    let (code, _out, err) = run(warden().arg(&cfg));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CRITICAL"), "{err}");
    assert!(
        err.to_lowercase().contains("line"),
        "error must point at the line: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_and_wrong_keys_are_named() {
    let dir = TestDir::new("warden-bad-");
    let cfg = dir.write_file(
        "missing.yml",
        "scope: x\nname: node0\nrestapi:\n  listen: 127.0.0.1:8008\n  connect_address: 127.0.0.1:8008\netcd3:\n  host: 127.0.0.1:2379\npostgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  authentication:\n    superuser: {username: postgres}\n    replication: {username: rep}\n",
    );
    let (code, _o, err) = run(warden().arg(&cfg));
    assert_eq!(code, 1);
    assert!(err.contains("postgresql.data_dir"), "{err}");

    let cfg = dir.write_file(
        "consul.yml",
        "scope: x\nname: node0\nconsul:\n  host: 127.0.0.1:8500\n",
    );
    let (code, _o, err) = run(warden().arg(&cfg));
    assert_eq!(code, 1);
    assert!(err.contains("consul"), "{err}");

    let (code, _o, err) = run(warden().arg(dir.path().join("does-not-exist.yml")));
    assert_eq!(code, 1);
    assert!(err.contains("does-not-exist.yml"), "{err}");
}

fn minimal_config(dir: &TestDir, data_dir: &std::path::Path, etcd_port: u16) -> std::path::PathBuf {
    let api = free_port();
    let pg = free_port();
    dir.write_file(
        "warden.yml",
        &format!(
            "scope: bad\nname: n0\nrestapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\netcd3:\n  host: 127.0.0.1:{etcd_port}\nbootstrap:\n  dcs: {{ttl: 20, loop_wait: 2, retry_timeout: 5}}\npostgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {}\n  bin_dir: {}\n  pgpass: {}/pgpass\n  authentication:\n    superuser: {{username: postgres, password: x}}\n    replication: {{username: replicator, password: rep}}\n",
            data_dir.display(),
            warden_testkit::pg_bin_dir().display(),
            dir.path().display()
        ),
    )
}

#[test]
fn data_dir_owned_by_someone_else_is_refused_untouched() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root to create a directory owned by another user; skipped");
        return;
    }
    let dir = TestDir::new("warden-owner-");
    // A data dir owned by root while the agent runs as the postgres user.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("precious"), "keep me").expect("write marker");
    let cfg = minimal_config(&dir, &data, free_port());
    let mut cmd = warden();
    cmd.arg(&cfg);
    dir.run_as.apply(&mut cmd);
    let (code, _o, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("postgresql.data_dir") && err.contains("owned by uid 0"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("precious"))
            .ok()
            .as_deref(),
        Some("keep me")
    );
}

#[test]
fn unreachable_etcd_at_start_waits_with_a_clear_error() {
    let dir = TestDir::new("warden-noetcd-");
    let data = dir.path().join("data");
    let etcd_port = free_port(); // nothing listens there
    let cfg = minimal_config(&dir, &data, etcd_port);
    let log = dir.path().join("agent.log");
    let mut cmd = warden();
    cmd.arg(&cfg);
    dir.run_as.apply(&mut cmd);
    let mut agent = ProcessGuard::spawn("warden", cmd, &log);
    let text = warden_testkit::wait_for(
        "the etcd error in the log",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.contains("waiting for etcd").then_some(t)
        },
    );
    // One line naming the endpoint and the cause, not a nested Debug dump of tonic's errors.
    assert!(
        text.contains(&format!(
            "ERROR: waiting for etcd: etcd 127.0.0.1:{etcd_port}: connection refused\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("tonic::") && !text.contains("Error("),
        "{text}"
    );
    assert!(agent.is_running(), "the agent keeps retrying: {text}");
    assert!(
        !data.exists(),
        "nothing may be created before the DCS answers"
    );
    assert!(!text.contains("panicked"), "{text}");
    // SIGTERM while waiting ends it cleanly.
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let st = agent.wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

#[test]
fn version_flag() {
    let (code, out, _) = run(warden().arg("--version"));
    assert_eq!(code, 0);
    assert!(out.starts_with("warden "), "{out}");
}

/// Starts the agent on the minimal config edited by `edit`: it must exit 1 naming
/// `expected`, before creating anything. Returns the edited config file.
fn refused_at_start(
    prefix: &str,
    edit: impl Fn(&str) -> String,
    expected: &str,
) -> (TestDir, std::path::PathBuf) {
    let dir = TestDir::new(prefix);
    let data = dir.path().join("data");
    let cfg = minimal_config(&dir, &data, free_port());
    let text = std::fs::read_to_string(&cfg).expect("read");
    let bad = edit(&text);
    assert_ne!(bad, text);
    let cfg = dir.write_file("refused.yml", &bad);
    let mut cmd = warden();
    cmd.arg(&cfg);
    dir.run_as.apply(&mut cmd);
    let (code, _o, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(expected), "{err}");
    assert!(!data.exists(), "nothing may be created");
    (dir, cfg)
}

#[test]
fn unsafe_timing_is_refused_at_start_with_the_rule() {
    refused_at_start(
        "warden-timing-",
        |t| {
            t.replace(
                "{ttl: 20, loop_wait: 2, retry_timeout: 5}",
                "{ttl: 20, loop_wait: 10, retry_timeout: 10}",
            )
        },
        "loop_wait (10) + 2*retry_timeout (10) must not exceed ttl (20)",
    );
}

#[test]
fn standby_cluster_with_a_bad_port_is_refused_at_start() {
    refused_at_start(
        "warden-standby-",
        |t| {
            t.replace(
                "{ttl: 20, loop_wait: 2, retry_timeout: 5}",
                "{ttl: 20, loop_wait: 2, retry_timeout: 5, standby_cluster: {host: 10.0.0.9, port: fifty}}",
            )
        },
        "bootstrap.dcs.standby_cluster.port",
    );
}

#[test]
fn required_watchdog_without_a_driver_is_refused_at_start() {
    // As Patroni: `required` where no watchdog implementation exists exits at start.
    let (_dir, cfg) = refused_at_start(
        "warden-watchdog-",
        |t| format!("{t}\nwatchdog:\n  mode: required\n  driver: bsd\n"),
        "Configuration requires a watchdog, but watchdog is not supported on this platform.",
    );
    let (code, out, err) = run(warden().arg("--validate-config").arg(&cfg));
    assert_ne!(code, 0);
    assert!(
        out.contains("watchdog.driver: 'bsd' is not a watchdog driver"),
        "{out}{err}"
    );
}

#[test]
fn required_watchdog_with_a_driver_validates() {
    let dir = TestDir::new("warden-watchdog-ok-");
    let data = dir.path().join("data");
    let cfg = minimal_config(&dir, &data, free_port());
    let text = std::fs::read_to_string(&cfg).expect("read");
    let cfg = dir.write_file(
        "watchdog.yml",
        &format!(
            "{text}\nwatchdog:\n  mode: required\n  driver: testing\n  device: /tmp/wd.fifo\n"
        ),
    );
    // Other problems of the minimal config (loopback addresses) may be listed.
    let (_code, out, err) = run(warden().arg("--validate-config").arg(&cfg));
    assert!(!out.contains("watchdog"), "{out}{err}");
}

#[test]
fn sample_config_generates_and_loads() {
    let (code, out, err) = run(warden().arg("--generate-sample-config"));
    assert_eq!(code, 0, "{err}");
    let dir = TestDir::new("warden-sample-");
    let f = dir.write_file("sample.yml", &out);
    let (code, vout, verr) = run(warden().arg("--validate-config").arg(&f));
    // The sample points at a data dir and binaries of a production host: only those
    // filesystem checks may fail here.
    assert!(code == 0 || !vout.contains("bootstrap.dcs"), "{vout}{verr}");
    assert!(
        out.contains("scope: batman") && out.contains("etcd3:"),
        "{out}"
    );
}
