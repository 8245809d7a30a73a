//! A bootstrap whose `post_bootstrap` script fails: the agent gives `initialize` back,
//! stops PostgreSQL, moves the data directory aside (`<data_dir>_<YYYY-mm-dd-HH-MM-SS>`),
//! logs CRITICAL "Failed to bootstrap cluster" and exits non-zero, as Patroni does. The
//! failed attempt does not block the cluster: another node then bootstraps it.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::TestDir;

/// Siblings of `data_dir` named `<data_dir>_YYYY-mm-dd-HH-MM-SS`.
fn moved_aside(data_dir: &Path) -> Vec<PathBuf> {
    let parent = data_dir.parent().expect("data dir parent");
    let base = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("data dir name");
    let prefix = format!("{base}_");
    let mut out = Vec::new();
    for e in std::fs::read_dir(parent).expect("read node dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(stamp) = name.strip_prefix(&prefix) else {
            continue;
        };
        // YYYY-mm-dd-HH-MM-SS
        let shape_ok = stamp.len() == 19
            && stamp.char_indices().all(|(i, ch)| match i {
                4 | 7 | 10 | 13 | 16 => ch == '-',
                _ => ch.is_ascii_digit(),
            });
        if shape_ok && e.path().is_dir() {
            out.push(e.path());
        }
    }
    out
}

/// PIDs of processes whose working directory or command line is in `dir` (a postmaster
/// runs in its data directory and names it with `-D`).
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cwd.starts_with(&needle) || cmdline.contains(&needle) {
            out.push(format!("pid {pid} (cwd {cwd}): {cmdline}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_post_bootstrap_moves_data_aside_and_exits_then_another_node_bootstraps() {
    let t0 = Instant::now();
    let scripts = TestDir::new("warden-bsfail-");
    let script = scripts.write_file(
        "post_bootstrap.sh",
        "#!/bin/sh\necho \"post_bootstrap called with $*\" >&2\nexit 1\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let failing = NodeOptions {
        yaml: vec![format!(
            "bootstrap:\n  post_bootstrap: {}\n",
            script.display()
        )],
        ..NodeOptions::default()
    };
    let mut c = TestCluster::new("bsfail", 2, &[failing, NodeOptions::default()]);
    let data_dir = c.nodes[0].data_dir.clone();

    // ---- the failing node exits non-zero in bounded time
    c.start_node(0);
    let status = c.nodes[0]
        .agent
        .as_mut()
        .expect("agent started")
        .wait_exit(Duration::from_secs(90));
    let took = t0.elapsed();
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the agent did not exit within 90 s after the failed bootstrap\n{log}")
    });
    assert!(
        !status.success(),
        "the agent must exit non-zero: {status:?}\n{log}"
    );
    eprintln!("[{took:?}] agent exited with {status:?}");
    assert!(
        log.contains("post_bootstrap called with"),
        "the script ran:\n{log}"
    );
    let critical: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CRITICAL") && l.contains("Failed to bootstrap cluster"))
        .collect();
    assert_eq!(
        critical.len(),
        1,
        "one CRITICAL 'Failed to bootstrap cluster' line:\n{log}"
    );
    eprintln!("{}", critical[0]);

    // ---- nothing of the attempt is left in etcd
    assert_eq!(c.etcd_get("initialize"), None, "initialize must be removed");
    assert_eq!(c.etcd_get("leader"), None, "no leader key");

    // ---- PostgreSQL is stopped and the data directory was moved aside
    assert!(
        !data_dir.exists(),
        "{} must have been moved aside",
        data_dir.display()
    );
    let aside = moved_aside(&data_dir);
    assert_eq!(
        aside.len(),
        1,
        "one sibling named {}_<YYYY-mm-dd-HH-MM-SS>: {aside:?}",
        data_dir.display()
    );
    assert!(
        aside[0].join("PG_VERSION").exists(),
        "the moved directory holds the initdb'd cluster"
    );
    assert!(
        !aside[0].join("postmaster.pid").exists(),
        "PostgreSQL was stopped before the move"
    );
    let left = processes_in(&data_dir);
    assert!(
        left.is_empty(),
        "processes still running from the failed node's data dir: {left:#?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", c.nodes[0].pg_port)).is_err(),
        "something still listens on the failed node's PostgreSQL port"
    );

    // ---- the cluster is not blocked: a node with a good config bootstraps it
    c.start_node(1);
    let leader = wait_for_leader(&c, Duration::from_secs(90)).await;
    assert_eq!(leader, 1, "the second node bootstraps and leads");
    let sysid = query_one(&c, 1, "SELECT system_identifier FROM pg_control_system()")
        .await
        .expect("sysid");
    assert_eq!(c.etcd_get("initialize").as_deref(), Some(sysid.as_str()));
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log1.contains("initialized a new cluster"),
        "the second node ran the bootstrap itself:\n{log1}"
    );
    eprintln!("[{:?}] second node leads", t0.elapsed());
}
