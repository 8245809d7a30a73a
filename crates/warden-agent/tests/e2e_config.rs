//! Issue 4: configuration the Patroni way — edit-config applies by reload or marks a
//! pending restart, pg_hba through PATCH /config, the real patronictl edit-config and
//! show-config, callbacks, validation and environment overrides.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use warden_testkit::cluster::{NodeOptions, TestCluster};

fn ctl(bin: &str, c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let program = if bin == "wardenctl" {
        TestCluster::bin("wardenctl")
    } else {
        bin.into()
    };
    run(Command::new(program)
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(args))
}

async fn wait_all(c: &TestCluster, sql: &str, want: &str) {
    for i in 0..c.nodes.len() {
        wait_query(c, i, sql, want, Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_config_reload_pending_restart_hba_and_patronictl() {
    let mut c = TestCluster::new("cfgtest", 3, &[]);
    c.start_all();
    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    for i in (0..3).filter(|i| *i != leader) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    let started: Vec<Option<String>> = futures::future::join_all(
        (0..3).map(|i| query_one(&c, i, "SELECT pg_postmaster_start_time()")),
    )
    .await;

    // work_mem: applied by reload, no restart.
    let (code, out, err) = ctl(
        "wardenctl",
        &c,
        &["edit-config", "cfgtest", "--pg", "work_mem=8MB", "--force"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+    work_mem: 8MB"), "diff expected: {out}");
    wait_all(&c, "SHOW work_mem", "8MB").await;
    let now: Vec<Option<String>> = futures::future::join_all(
        (0..3).map(|i| query_one(&c, i, "SELECT pg_postmaster_start_time()")),
    )
    .await;
    assert_eq!(
        started, now,
        "a reloadable parameter must not restart PostgreSQL"
    );

    // max_connections: every node shows a pending restart, `restart --pending` clears it.
    let (code, out, err) = ctl(
        "wardenctl",
        &c,
        &[
            "edit-config",
            "cfgtest",
            "--pg",
            "max_connections=42",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for n in &c.nodes {
        warden_testkit::wait_for(
            &format!("pending restart on {}", n.name),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                member(&c, &n.name)
                    .filter(|m| m["pending_restart"] == true)
                    .map(|_| ())
            },
        );
    }
    let (code, list, _) = ctl("wardenctl", &c, &["list"]);
    assert_eq!(code, 0);
    assert!(
        list.contains("Pending restart") && list.contains("max_connections: 30->42"),
        "{list}"
    );
    assert!(api_get(&c, leader, "/patroni")
        .await
        .is_some_and(|r| r.1.contains("pending_restart")));
    let (code, out, err) = ctl(
        "wardenctl",
        &c,
        &["restart", "cfgtest", "--pending", "--force"],
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_all(&c, "SHOW max_connections", "42").await;
    for n in &c.nodes {
        warden_testkit::wait_for(
            &format!("pending restart cleared on {}", n.name),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                member(&c, &n.name)
                    .filter(|m| m.get("pending_restart").is_none())
                    .map(|_| ())
            },
        );
    }

    // A local change on one node (file + SIGHUP): only that node becomes pending, and
    // `restart --pending` restarts only it.
    let cfg1 = std::fs::read_to_string(&c.nodes[1].config).expect("read config");
    let edited = cfg1.replacen(
        "\n  parameters:\n",
        "\n  parameters:\n    shared_buffers: 24MB\n",
        1,
    );
    assert_ne!(cfg1, edited);
    std::fs::write(&c.nodes[1].config, edited).expect("write config");
    c.nodes[1]
        .agent
        .as_ref()
        .expect("agent")
        .signal(nix::sys::signal::Signal::SIGHUP);
    warden_testkit::wait_for(
        "pending restart on pg1 only",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let p = |n: &str| member(&c, n).is_some_and(|m| m["pending_restart"] == true);
            (p("pg1") && !p("pg0") && !p("pg2")).then_some(())
        },
    );
    let before: Vec<Option<String>> = futures::future::join_all(
        (0..3).map(|i| query_one(&c, i, "SELECT pg_postmaster_start_time()")),
    )
    .await;
    let (code, out, err) = ctl(
        "wardenctl",
        &c,
        &["restart", "cfgtest", "--pending", "--force"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let after: Vec<Option<String>> = futures::future::join_all(
        (0..3).map(|i| query_one(&c, i, "SELECT pg_postmaster_start_time()")),
    )
    .await;
    assert_eq!(before[0], after[0], "pg0 was not pending");
    assert_ne!(before[1], after[1], "pg1 was pending");
    assert_eq!(before[2], after[2], "pg2 was not pending");
    wait_query(
        &c,
        1,
        "SHOW shared_buffers",
        "24MB",
        Duration::from_secs(30),
    )
    .await;

    // pg_hba through PATCH /config reaches every node's pg_hba.conf and is effective.
    let line = "host all hba_probe 127.0.0.1/32 reject";
    let body = serde_json::json!({"postgresql": {"pg_hba": [
        "local all all trust",
        line,
        "host all all 127.0.0.1/32 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]}});
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "PATCH",
            "--data-binary",
            &body.to_string(),
        ])
        .arg(format!(
            "http://127.0.0.1:{}/config",
            c.nodes[leader].api_port
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.ends_with("\n200"), "PATCH /config: {text}");
    for n in &c.nodes {
        warden_testkit::wait_for(
            &format!("pg_hba on {}", n.name),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                std::fs::read_to_string(n.data_dir.join("pg_hba.conf"))
                    .ok()
                    .filter(|t| t.contains(line))
                    .map(|_| ())
            },
        );
    }
    wait_all(
        &c,
        "SELECT count(*) FROM pg_hba_file_rules WHERE 'hba_probe' = ANY(user_name)",
        "1",
    )
    .await;

    // The real patronictl edits the same DCS key; both CLIs show the same config.
    let (code, out, err) = ctl(
        "patronictl",
        &c,
        &["edit-config", "cfgtest", "--set", "loop_wait=3", "--force"],
    );
    assert_eq!(code, 0, "patronictl edit-config: {out}{err}");
    assert!(out.contains("+loop_wait: 3"), "{out}");
    let (code, p_show, err) = ctl("patronictl", &c, &["show-config", "cfgtest"]);
    assert_eq!(code, 0, "{err}");
    let (code, w_show, err) = ctl("wardenctl", &c, &["show-config", "cfgtest"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p_show, w_show, "show-config must match");
    assert!(
        w_show.contains("loop_wait: 3") && w_show.contains("max_connections: 42"),
        "{w_show}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&c.etcd_get("config").unwrap_or_default()).expect("config JSON");
    assert_eq!(cfg["loop_wait"], 3);
    assert_eq!(cfg["postgresql"]["parameters"]["work_mem"], "8MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_change_callbacks_and_a_hanging_callback() {
    // pg0's callback hangs forever after logging; the others just log.
    let dir = warden_testkit::TestDir::new("warden-cb-");
    let logger = dir.write_file(
        "callback.sh",
        "#!/bin/sh\necho \"$1 $2 $3\" >> \"$(dirname \"$0\")/$(basename \"$PWD\")_cb.log\"\n",
    );
    let hanger = dir.write_file(
        "hang.sh",
        "#!/bin/sh\necho \"$1 $2 $3\" >> \"$(dirname \"$0\")/$(basename \"$PWD\")_cb.log\"\necho $$ >> \"$(dirname \"$0\")/hang.pids\"\nexec sleep 1000\n",
    );
    for f in [&logger, &hanger] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cb = |script: &std::path::Path| NodeOptions {
        postgresql: vec![
            "callbacks:".into(),
            format!("  on_role_change: {}", script.display()),
            format!("  on_start: {}", script.display()),
        ],
        ..NodeOptions::default()
    };
    // Whatever happens, the hanging callbacks are stopped by their PIDs at the end.
    struct KillHangers(std::path::PathBuf);
    impl Drop for KillHangers {
        fn drop(&mut self) {
            for pid in std::fs::read_to_string(&self.0).unwrap_or_default().lines() {
                if let Ok(p) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    let _hangers = KillHangers(dir.path().join("hang.pids"));
    let mut c = TestCluster::new("cbtest", 3, &[cb(&hanger), cb(&logger), cb(&logger)]);
    c.start_node(0);
    wait_for_leader(&c, Duration::from_secs(60)).await;
    c.start_node(1);
    c.start_node(2);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    wait_streaming(&c, 2, Duration::from_secs(60)).await;
    let cb_log = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}_cb.log"))).unwrap_or_default()
    };
    assert!(
        cb_log("pg1").contains("on_start replica cbtest"),
        "{}",
        cb_log("pg1")
    );

    // Failover: the new leader logs on_role_change primary.
    c.kill_node(0);
    let new = wait_for_leader(&c, Duration::from_secs(40)).await;
    let name = c.nodes[new].name.clone();
    warden_testkit::wait_for(
        "on_role_change primary",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            cb_log(&name)
                .contains("on_role_change primary cbtest")
                .then_some(())
        },
    );
    // The old leader comes back as a replica: on_role_change replica... its callback
    // hangs forever, which must not stall the HA loop (it keeps streaming and answering).
    c.start_node(0);
    wait_streaming(&c, 0, Duration::from_secs(60)).await;
    // A switchover back to pg0 works although its previous callback still hangs.
    wait_caught_up(&c, new).await;
    let (code, out, err) = ctl(
        "wardenctl",
        &c,
        &[
            "switchover",
            "cbtest",
            "--leader",
            &name,
            "--candidate",
            "pg0",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    warden_testkit::wait_for(
        "pg0 leads again",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || (c.leader().as_deref() == Some("pg0")).then_some(()),
    );
    warden_testkit::wait_for(
        "on_role_change replica on the demoted node",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            cb_log(&name)
                .contains("on_role_change replica cbtest")
                .then_some(())
        },
    );
    warden_testkit::wait_for(
        "pg0 on_role_change primary",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            cb_log("pg0")
                .contains("on_role_change primary cbtest")
                .then_some(())
        },
    );
}

#[test]
fn validate_config_accepts_good_files_and_names_bad_keys() {
    let dir = warden_testkit::TestDir::new("warden-validate-");
    let data = dir.subdir("data", true);
    let good = format!(
        r#"scope: batman
namespace: /service/
name: postgresql0
restapi:
  listen: 127.0.0.1:8008
  connect_address: 10.0.0.1:8008
etcd3:
  hosts: 127.0.0.1:2379
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      pg_hba:
      - host replication replicator 127.0.0.1/32 md5
      - host all all 0.0.0.0/0 md5
      parameters:
        wal_level: hot_standby
        hot_standby: "on"
        max_connections: 100
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 10.0.0.1:5432
  data_dir: {data}
  bin_dir: {bin}
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: '..'
tags:
  noloadbalance: false
  clonefrom: false
  nosync: false
  nostream: false
"#,
        data = data.display(),
        bin = warden_testkit::pg_bin_dir().display()
    );
    // Like `patroni --validate-config`, loopback connect addresses are refused (peers
    // could not reach them), so the sample publishes a private address.
    let f = dir.write_file("good.yml", &good);
    let (code, out, err) = run(Command::new(TestCluster::bin("warden"))
        .arg("--validate-config")
        .arg(&f));
    assert_eq!(code, 0, "a Patroni sample config must validate: {out}{err}");

    let cases = [
        (
            "wrong type",
            good.replace("    ttl: 30", "    ttl: thirty"),
            "bootstrap.dcs.ttl",
        ),
        (
            "unknown DCS section",
            good.replace(
                "etcd3:\n  hosts: 127.0.0.1:2379",
                "consul:\n  host: 127.0.0.1:8500",
            ),
            "consul",
        ),
        (
            "unsafe timing",
            good.replace("    ttl: 30", "    ttl: 10"),
            "ttl",
        ),
        (
            "loopback connect address",
            good.replace(
                "connect_address: 10.0.0.1:8008",
                "connect_address: 127.0.0.1:8008",
            ),
            "restapi.connect_address",
        ),
    ];
    for (what, text, key) in cases {
        let f = dir.write_file("bad.yml", &text);
        let (code, out, err) = run(Command::new(TestCluster::bin("warden"))
            .arg("--validate-config")
            .arg(&f));
        assert_ne!(code, 0, "{what} must fail validation: {out}{err}");
        assert!(
            out.contains(key) || err.contains(key),
            "{what}: message must name {key}: {out}{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_file() {
    let api_port = warden_testkit::free_port();
    let opts = vec![NodeOptions {
        env: vec![
            ("PATRONI_NAME".into(), "renamed".into()),
            (
                "PATRONI_RESTAPI_LISTEN".into(),
                format!("127.0.0.1:{api_port}"),
            ),
            (
                "PATRONI_RESTAPI_CONNECT_ADDRESS".into(),
                format!("127.0.0.1:{api_port}"),
            ),
            (
                "PATRONI_SUPERUSER_PASSWORD".into(),
                warden_testkit::cluster::SUPERUSER_PASSWORD.into(),
            ),
        ],
        ..NodeOptions::default()
    }];
    let mut c = TestCluster::new("envtest", 1, &opts);
    c.start_node(0);
    warden_testkit::wait_for(
        "leader 'renamed'",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || (c.leader().as_deref() == Some("renamed")).then_some(()),
    );
    let m = member(&c, "renamed").expect("member key under the env name");
    assert_eq!(m["api_url"], format!("http://127.0.0.1:{api_port}/patroni"));
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{api_port}/patroni")])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"name\":\"renamed\""));
}
