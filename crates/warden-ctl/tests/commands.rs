//! `wardenctl` commands against a real etcd and fake member REST APIs.
//!
//! Each test starts its own etcd, seeds the cluster keys through warden-dcs, runs the
//! `wardenctl` binary with a config file and checks stdout/stderr, the requests the
//! fake REST servers received, and the keys left in etcd.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden_dcs::{Dcs, DcsSettings, EtcdDcs};
use warden_testkit::etcd::Etcd;

// ---------------------------------------------------------------------------
// Fake REST server

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Canned = Arc<Mutex<HashMap<(String, String), (u16, String)>>>;

struct Fake {
    port: u16,
    reqs: Arc<Mutex<Vec<Req>>>,
    canned: Canned,
}

impl Fake {
    async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let canned: Canned = Arc::default();
        let (r2, c2) = (reqs.clone(), canned.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (reqs, canned) = (r2.clone(), c2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + 4 + len {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[head_end + 4..]).to_string();
                    let (method, path) = (first[0].to_string(), first[1].to_string());
                    let (status, resp) = canned
                        .lock()
                        .unwrap()
                        .get(&(method.clone(), path.clone()))
                        .cloned()
                        .unwrap_or((200, "OK".into()));
                    reqs.lock().unwrap().push(Req {
                        method,
                        path,
                        headers,
                        body,
                    });
                    let out = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}",
                        resp.len()
                    );
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Fake { port, reqs, canned }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/patroni", self.port)
    }

    fn respond(&self, method: &str, path: &str, status: u16, body: &str) {
        self.canned
            .lock()
            .unwrap()
            .insert((method.into(), path.into()), (status, body.into()));
    }

    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.reqs.lock().unwrap().clear();
    }
}

// ---------------------------------------------------------------------------
// Cluster fixture

struct Env {
    etcd: Etcd,
    _dir: tempfile::TempDir,
    config: PathBuf,
    dcs: EtcdDcs,
    a: Fake,
    b: Fake,
}

fn member_json(api_url: &str, port: u16, role: &str, extra: &str) -> String {
    format!(
        r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"{api_url}","state":"running","role":"{role}","version":"4.1.5","xlog_location":67108960,"timeline":1{extra}}}"#
    )
}

const CONFIG: &str = r#"{"ttl":30,"loop_wait":2,"retry_timeout":10,"postgresql":{"parameters":{"max_connections":100}}}"#;

impl Env {
    /// Cluster `batman`: leader `a`, replica `b` (with `b_extra` in its member JSON).
    async fn start(b_extra: &str) -> Env {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("patronictl.yaml");
        std::fs::write(
            &config,
            format!(
                "scope: batman\nnamespace: /service\netcd3:\n  hosts: {}\nrestapi:\n  authentication:\n    username: u\n    password: p\n",
                etcd.host_port()
            ),
        )
        .unwrap();
        let dcs = EtcdDcs::connect(DcsSettings::new(
            vec![etcd.host_port()],
            "/service",
            "batman",
        ))
        .await
        .unwrap();
        let (a, b) = (Fake::start().await, Fake::start().await);
        dcs.touch_member("a", &member_json(&a.api_url(), 5432, "primary", ""))
            .await
            .unwrap();
        dcs.touch_member("b", &member_json(&b.api_url(), 5433, "replica", b_extra))
            .await
            .unwrap();
        dcs.take_leader("a").await.unwrap();
        dcs.set_initialize("7277694203142172922").await.unwrap();
        dcs.set_config(CONFIG, None).await.unwrap();
        Env {
            etcd,
            _dir: dir,
            config,
            dcs,
            a,
            b,
        }
    }

    async fn run(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardenctl"));
        cmd.arg("-c")
            .arg(&self.config)
            .args(args)
            .env_remove("PATRONICTL_CONFIG_FILE")
            .env_remove("DCS_URL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("PATRONI_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let mut sin = child.stdin.take().unwrap();
        sin.write_all(stdin.as_bytes()).await.unwrap();
        drop(sin);
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("wardenctl timed out")
            .unwrap();
        let _ = &self.etcd;
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn is_ts_line(line: &str, rest: &str) -> bool {
    // `YYYY-MM-DD HH:MM:SS.fffff <rest>`
    line.len() == 25 + 1 + rest.len()
        && line.ends_with(rest)
        && line.as_bytes()[4] == b'-'
        && line.as_bytes()[10] == b' '
        && line.as_bytes()[19] == b'.'
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn switchover_and_failover() {
    let env = Env::start("").await;
    env.a.respond(
        "POST",
        "/switchover",
        200,
        r#"Successfully switched over to "b""#,
    );
    let (code, out, err) = env
        .run(
            &["switchover", "--leader", "a", "--candidate", "b", "--force"],
            "",
        )
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("Current cluster topology\n+ Cluster: batman (7277694203142172922) "),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| is_ts_line(l, r#"Successfully switched over to "b""#)),
        "{out}"
    );
    assert_eq!(out.matches("+ Cluster: batman").count(), 2, "{out}");
    let reqs = env.a.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/switchover")
    );
    assert_eq!(reqs[0].body, r#"{"candidate": "b", "leader": "a"}"#);
    assert_eq!(reqs[0].header("content-type"), None);
    assert_eq!(reqs[0].header("authorization"), Some("Basic dTpw"));
    assert!(env.b.requests().is_empty());

    // scheduled, with --primary alias and the default cluster name from `scope`
    env.a.clear();
    env.a
        .respond("POST", "/switchover", 202, "Switchover scheduled");
    let (code, out, _) = env
        .run(
            &[
                "switchover",
                "--primary",
                "a",
                "--candidate",
                "b",
                "--scheduled",
                "2030-01-02 03:04:05.123456+00:00",
                "--force",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| is_ts_line(l, "Switchover scheduled")),
        "{out}"
    );
    assert_eq!(
        env.a.requests()[0].body,
        r#"{"candidate": "b", "leader": "a", "scheduled_at": "2030-01-02T03:04:05.123456+00:00"}"#
    );

    // REST failure
    env.a
        .respond("POST", "/switchover", 412, "candidate does not exists");
    let (code, out, _) = env
        .run(&["switchover", "batman", "--candidate", "b", "--force"], "")
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("Switchover failed, details: 412, candidate does not exists\n"),
        "{out}"
    );

    // errors
    let (code, _, err) = env.run(&["failover", "batman", "--force"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error: Failover could be performed only to a specific candidate\n"
        )
    );
    let (code, _, err) = env
        .run(&["switchover", "batman", "--leader", "b", "--force"], "")
        .await;
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: Member b is not the leader of cluster batman\n")
    );
    let (code, _, err) = env
        .run(&["switchover", "batman", "--candidate", "a", "--force"], "")
        .await;
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error: Member a is already the leader of cluster batman\n"
        )
    );

    // interactive: prompts answered on stdin, "no" aborts
    let (code, out, err) = env.run(&["switchover", "batman"], "\nb\n\nn\n").await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "Primary [a]: Candidate ['b'] []: When should the switchover take place (e.g. "
        ),
        "{out}"
    );
    assert!(out.contains(" )  [now]: Are you sure you want to switchover cluster batman, demoting current leader a? [y/N]: "), "{out}");
    assert_eq!(err, "Error: Aborting switchover\n");

    // failover through REST
    env.a.clear();
    env.a.respond(
        "POST",
        "/failover",
        200,
        r#"Successfully failed over to "b""#,
    );
    let (code, out, _) = env
        .run(&["failover", "batman", "--candidate", "b", "--force"], "")
        .await;
    assert_eq!(code, 0);
    assert!(out
        .lines()
        .any(|l| is_ts_line(l, r#"Successfully failed over to "b""#)));
    assert_eq!(env.a.requests()[0].body, r#"{"candidate": "b"}"#);

    // connection refused: the failover key is written directly
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.dcs
        .touch_member(
            "a",
            &member_json(
                &format!("http://127.0.0.1:{dead}/patroni"),
                5432,
                "primary",
                "",
            ),
        )
        .await
        .unwrap();
    let (code, out, err) = env
        .run(&["switchover", "batman", "--candidate", "b", "--force"], "")
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| is_ts_line(
            l,
            "Could not switchover using Patroni api, falling back to DCS"
        )),
        "{out}"
    );
    let c = env.dcs.get_cluster().await.unwrap();
    let f = c.failover.expect("failover key");
    assert_eq!(
        (f.leader.as_deref(), f.member.as_deref()),
        (Some("a"), Some("b"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_wait_and_resume() {
    let env = Env::start("").await;
    env.a.respond("PATCH", "/config", 200, "{}");
    let dcs = &env.dcs;
    let a_url = env.a.api_url();
    let b_url = env.b.api_url();
    let run = env.run(&["pause", "batman", "--wait"], "");
    let update = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        dcs.touch_member(
            "a",
            &member_json(&a_url, 5432, "primary", r#","pause":true"#),
        )
        .await
        .unwrap();
        dcs.touch_member(
            "b",
            &member_json(&b_url, 5433, "replica", r#","pause":true"#),
        )
        .await
        .unwrap();
    };
    let ((code, out, err), ()) = tokio::join!(run, update);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "'pause' request sent, waiting until it is recognized by all nodes\nSuccess: cluster management is paused\n"
    );
    let reqs = env.a.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("PATCH", "/config")
    );
    assert_eq!(reqs[0].body, r#"{"pause": true}"#);
    assert_eq!(reqs[0].header("content-type"), None);
    assert!(env.b.requests().is_empty());

    let (code, _, err) = env.run(&["resume", "batman"], "").await;
    assert_eq!((code, err.as_str()), (1, "Error: Cluster is not paused\n"));

    // paused config: resume sends null; a failing leader falls through to the next member
    env.dcs
        .set_config(r#"{"ttl":30,"loop_wait":2,"pause":true}"#, None)
        .await
        .unwrap();
    env.a.clear();
    env.a.respond("PATCH", "/config", 503, "no config");
    let (code, out, _) = env.run(&["resume", "batman"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Failed: resume cluster management status code=503, (no config)\n"
    );
    assert_eq!(env.a.requests()[0].body, r#"{"pause": null}"#);
    let (code, _, err) = env.run(&["pause"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: Cluster is already paused\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_commands_and_remove() {
    let env = Env::start("").await;
    let (code, out, _) = env.run(&["show-config", "batman"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "loop_wait: 2\npostgresql:\n  parameters:\n    max_connections: 100\nretry_timeout: 10\nttl: 30\n\n"
    );

    let (code, out, err) = env
        .run(&["edit-config", "batman", "--set", "ttl=20", "--force"], "")
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "--- \n+++ \n@@ -3,4 +3,4 @@\n   parameters:\n     max_connections: 100\n retry_timeout: 10\n-ttl: 30\n+ttl: 20\nConfiguration changed\n"
    );
    let c = env.dcs.get_cluster().await.unwrap();
    assert_eq!(c.config.as_ref().unwrap().value["ttl"], 20);

    let (code, out, _) = env
        .run(
            &[
                "edit-config",
                "-p",
                "max_connections=101",
                "--force",
                "batman",
            ],
            "",
        )
        .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("\n-    max_connections: 100\n+    max_connections: 101\n"),
        "{out}"
    );
    let c = env.dcs.get_cluster().await.unwrap();
    assert_eq!(
        c.config.as_ref().unwrap().value["postgresql"]["parameters"]["max_connections"],
        101
    );

    let (code, out, _) = env
        .run(&["edit-config", "batman", "-s", "ttl=20"], "")
        .await;
    assert_eq!((code, out.as_str()), (0, "Not changed\n"));
    // interactive "no": nothing written
    let (code, out, _) = env
        .run(&["edit-config", "batman", "-s", "ttl=25"], "n\n")
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("+ttl: 25\nApply these changes? [y/N]: "),
        "{out}"
    );
    let c = env.dcs.get_cluster().await.unwrap();
    assert_eq!(c.config.as_ref().unwrap().value["ttl"], 20);
    // --apply from stdin without --force
    let (code, out, _) = env
        .run(&["edit-config", "batman", "--apply", "-"], "loop_wait: 5\n")
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("Use --force option to apply changes\n"),
        "{out}"
    );

    // remove: wrong name, then the three right answers
    let (code, _, err) = env.run(&["remove", "batman"], "robin\n").await;
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: Cluster names specified do not match\n")
    );
    let (code, out, err) = env
        .run(&["remove", "batman"], "batman\nYes I am aware\na\n")
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("Please confirm the cluster name to remove: You are about to remove all information in DCS for batman, please type: \"Yes I am aware\": This cluster currently is healthy. Please specify the leader name to continue: "), "{out}");
    let c = env.dcs.get_cluster().await.unwrap();
    assert!(
        c.members.is_empty() && c.config.is_none() && c.leader.is_none() && c.initialize.is_none()
    );

    let (code, _, err) = env.run(&["edit-config", "batman", "-s", "ttl=1"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error: The config key does not exist in the cluster batman\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn member_actions_history_dsn_version() {
    let env = Env::start(
        r#","pending_restart":true,"scheduled_restart":{"schedule":"2030-01-01T00:00:00+00:00"}"#,
    )
    .await;
    env.dcs
        .set_history(r#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00"],[2,25624344,"no recovery target specified","2019-09-24T09:22:33+02:00","pg1"]]"#)
        .await
        .unwrap();
    let (code, out, _) = env.run(&["history", "batman"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "+----+----------+------------------------------+---------------------------+------------+
| TL |      LSN | Reason                       | Timestamp                 | New Leader |
+----+----------+------------------------------+---------------------------+------------+
|  1 | 25623960 | no recovery target specified | 2019-09-23T16:57:57+02:00 |            |
|  2 | 25624344 | no recovery target specified | 2019-09-24T09:22:33+02:00 | pg1        |
+----+----------+------------------------------+---------------------------+------------+
"
    );
    let (_, out, _) = env.run(&["history", "-f", "json"], "").await;
    assert_eq!(
        out,
        r#"[{"TL": 1, "LSN": 25623960, "Reason": "no recovery target specified", "Timestamp": "2019-09-23T16:57:57+02:00", "New Leader": ""}, {"TL": 2, "LSN": 25624344, "Reason": "no recovery target specified", "Timestamp": "2019-09-24T09:22:33+02:00", "New Leader": "pg1"}]
"#
    );

    assert_eq!(env.run(&["dsn"], "").await.1, "host=127.0.0.1 port=5432\n");
    assert_eq!(
        env.run(&["dsn", "batman", "-r", "replica"], "").await.1,
        "host=127.0.0.1 port=5433\n"
    );
    assert_eq!(
        env.run(&["dsn", "batman", "-m", "b"], "").await.1,
        "host=127.0.0.1 port=5433\n"
    );
    let (code, _, err) = env
        .run(&["dsn", "batman", "-m", "b", "-r", "any"], "")
        .await;
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error: --role and --member are mutually exclusive options\n"
        )
    );

    // reinit
    let (code, out, _) = env.run(&["reinit", "batman", "b", "--force"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("Success: reinitialize for member b\n"),
        "{out}"
    );
    let r = env.b.requests();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("POST", "/reinitialize")
    );
    assert_eq!(r[0].body, r#"{"force": true, "from_leader": false}"#);
    let (code, _, err) = env.run(&["reinit", "batman", "a", "--force"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: No replica among provided members\n")
    );

    // restart --pending only hits b
    env.a.clear();
    env.b.clear();
    let (code, out, _) = env
        .run(&["restart", "batman", "--pending", "--force"], "")
        .await;
    assert_eq!(code, 0);
    assert!(out.ends_with("Success: restart on member b\n"), "{out}");
    assert!(env.a.requests().is_empty());
    let r = env.b.requests();
    assert_eq!(
        (r.len(), r[0].path.as_str(), r[0].body.as_str()),
        (1, "/restart", r#"{"restart_pending": true}"#)
    );

    // flush restart: b has a scheduled restart, a has none
    env.b.clear();
    let (code, out, _) = env
        .run(&["flush", "batman", "restart", "--force"], "")
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with(
            "No scheduled restart for member a\nSuccess: flush scheduled restart for member b\n"
        ),
        "{out}"
    );
    assert_eq!(env.b.requests()[0].method, "DELETE");

    // flush switchover
    let (_, out, _) = env.run(&["flush", "batman", "switchover"], "").await;
    assert_eq!(out, "No pending scheduled switchover\n");
    env.dcs
        .set_failover(
            r#"{"leader":"a","scheduled_at":"2030-01-01T00:00:00+00:00"}"#,
            None,
        )
        .await
        .unwrap();
    env.a.clear();
    env.a
        .respond("DELETE", "/switchover", 200, "scheduled switchover deleted");
    let (code, out, _) = env.run(&["flush", "batman", "switchover"], "").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "Success: scheduled switchover deleted\n")
    );
    let r = env.a.requests();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("DELETE", "/switchover")
    );

    // reload
    env.a.respond("POST", "/reload", 202, "reload scheduled");
    env.b.respond("POST", "/reload", 200, "");
    let (code, out, _) = env.run(&["reload", "batman", "--force"], "").await;
    assert_eq!(code, 0);
    assert!(out.ends_with("Reload request received for member a and will be processed within 2 seconds\nNo changes to apply on member b\n"), "{out}");

    // version
    env.a.respond("GET", "/patroni", 200, r#"{"state":"running","server_version":160002,"patroni":{"version":"4.1.5","scope":"batman"}}"#);
    env.b
        .respond("GET", "/patroni", 200, r#"{"patroni":{"version":"4.1.4"}}"#);
    let (code, out, _) = env.run(&["version", "batman"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "patronictl version 4.1.5\n\na: Patroni 4.1.5 PostgreSQL 16.2\nb: Patroni 4.1.4\n"
    );
}

/// `YYYY-MM-DD HH:MM:SS <rest>` (the demote/promote progress lines).
fn is_sec_line(line: &str, rest: &str) -> bool {
    line.len() == 19 + 1 + rest.len()
        && line.ends_with(rest)
        && line.as_bytes()[4] == b'-'
        && line.as_bytes()[10] == b' '
        && line.as_bytes()[13] == b':'
}

/// The body of the one `PATCH /config` fake `f` received.
fn patched_config(f: &Fake) -> String {
    let patches: Vec<Req> = f
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == "/config")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    patches[0].body.clone()
}

/// Waits until fake `a` received a `PATCH /config`, then stores `config` and makes
/// member `a` report `role` (what the agent does with the request).
async fn flip_leader_role_after_patch(env: &Env, config: &str, role: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env
        .a
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.path == "/config")
    {
        assert!(std::time::Instant::now() < deadline, "no PATCH /config");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the command print at least one progress line first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.dcs.set_config(config, None).await.unwrap();
    env.dcs
        .touch_member("a", &member_json(&env.a.api_url(), 5432, role, ""))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn demote_and_promote_cluster() {
    let env = Env::start("").await;
    // Nothing to demote to (patronictl's Python truthiness: "" and 0 are not given).
    for args in [
        &["demote-cluster", "--force"][..],
        &["demote-cluster", "--host", "", "--port", "0", "--force"],
        &["demote-cluster", "--primary-slot-name", "s", "--force"],
    ] {
        let (code, out, err) = env.run(args, "").await;
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(
            err,
            "Error: At least --host, --port or --restore-command should be specified\n"
        );
    }
    // Asked and declined: nothing is sent.
    let (code, out, err) = env
        .run(&["demote-cluster", "--host", "10.0.0.9"], "n\n")
        .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("Current cluster topology\n+ Cluster: batman (7277694203142172922) "),
        "{out}"
    );
    assert!(
        out.ends_with("Are you sure you want to demote batman cluster? [y/N]: "),
        "{out}"
    );
    assert_eq!(err, "Error: Aborted cluster demotion\n");
    assert!(env.a.requests().is_empty());

    // Demote: the section goes to the leader's PATCH /config, then the command waits
    // until the leader runs as standby leader.
    let demote = env.run(
        &[
            "demote-cluster",
            "batman",
            "--host",
            "10.0.0.9",
            "--port",
            "5433",
            "--primary-slot-name",
            "standby",
            "--force",
        ],
        "",
    );
    let standby = r#"{"ttl":30,"standby_cluster":{"host":"10.0.0.9","port":5433,"primary_slot_name":"standby"}}"#;
    let ((code, out, err), ()) = tokio::join!(
        demote,
        flip_leader_role_after_patch(&env, standby, "standby_leader")
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        patched_config(&env.a),
        r#"{"standby_cluster": {"host": "10.0.0.9", "port": 5433, "primary_slot_name": "standby"}}"#
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().any(|l| is_sec_line(
            l,
            "cluster is unlocked: False, leader role: primary, leader state: running"
        )),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| is_sec_line(l, "cluster is successfully demoted")),
        "{out}"
    );
    assert!(
        out.contains("| a      | 127.0.0.1:5432 | Standby Leader |"),
        "{out}"
    );
    let (code, _, err) = env
        .run(
            &["demote-cluster", "--restore-command", "cp x %p", "--force"],
            "",
        )
        .await;
    assert_eq!(code, 1);
    assert_eq!(err, "Error: Cluster is already in the required state\n");

    // Promote: a refused PATCH is reported as patronictl reports it.
    env.a.clear();
    env.a.respond("PATCH", "/config", 503, "not now");
    let (code, _, err) = env.run(&["promote-cluster", "--force"], "").await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: Failed to promote batman cluster: Failed to promote batman cluster: /config PATCH status code=503, (not now)\n"
    );
    env.a.clear();
    env.a.respond("PATCH", "/config", 200, "{}");
    let promote = env.run(&["promote-cluster", "batman", "--force"], "");
    let ((code, out, err), ()) = tokio::join!(
        promote,
        flip_leader_role_after_patch(&env, CONFIG, "primary")
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(patched_config(&env.a), r#"{"standby_cluster": null}"#);
    assert!(
        out.lines()
            .any(|l| is_sec_line(l, "cluster is successfully promoted")),
        "{out}"
    );
}
