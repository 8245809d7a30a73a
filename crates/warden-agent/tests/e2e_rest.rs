//! REST API end to end: health-check codes for GET/HEAD/OPTIONS on a real 3-node cluster
//! (with tags, in pause, with a dead replica), `/metrics` parsed by the real Python
//! `prometheus_client`, `wardenctl` output byte-for-byte against the real `patronictl`,
//! and Basic authentication of the REST API configured through the environment.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};

/// Starts node 0 first (so it is the leader), then the others; waits until every
/// replica streams. Returns the leader index (always 0).
async fn start_cluster_led_by_0(c: &mut TestCluster) -> usize {
    c.start_node(0);
    let l = wait_for_leader(c, Duration::from_secs(60)).await;
    assert_eq!(l, 0);
    for i in 1..c.nodes.len() {
        c.start_node(i);
    }
    for i in 1..c.nodes.len() {
        wait_streaming(c, i, Duration::from_secs(60)).await;
    }
    l
}

/// A raw HTTP exchange with node i's REST API: the full request text is sent as given,
/// the whole answer read until the server closes (HTTP/1.0). Returns
/// (status code, head (status line + headers), body, raw answer).
async fn api_raw(
    c: &TestCluster,
    i: usize,
    request: &str,
) -> Option<(u16, String, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{}", c.nodes[i].api_port);
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        s.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_string(), b.to_string()))
            .unwrap_or((text.clone(), String::new()));
        Some((code, head, body, text))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// `METHOD path` (HTTP/1.0, no body) on node i.
async fn api_method(
    c: &TestCluster,
    i: usize,
    method: &str,
    path: &str,
) -> Option<(u16, String, String, String)> {
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
        c.nodes[i].api_port
    );
    api_raw(c, i, &req).await
}

/// GET /patroni on node i as JSON.
async fn patroni_json(c: &TestCluster, i: usize) -> Option<Value> {
    let (code, body) = api_get(c, i, "/patroni").await?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

// ---------------------------------------------------------------------------------
// 1. health endpoints
// ---------------------------------------------------------------------------------

const HEALTH_PATHS: &[&str] = &[
    "/",
    "/primary",
    "/master",
    "/leader",
    "/read-write",
    "/replica",
    "/replica?lag=1MB",
    "/replica?tag_zone=a",
    "/replica?tag_zone=b",
    "/read-only",
    "/health",
    "/standby-leader",
    "/async",
    "/sync",
    "/liveness",
    "/readiness",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// the lock holder, no custom tags
    Leader,
    /// streaming replica tagged `noloadbalance: true`
    NoLoadBalance,
    /// streaming replica tagged `zone: a`
    ZoneA,
}

/// rest-api.md §3 for an idle, healthy, non-sync, non-standby cluster.
fn expected_code(kind: Kind, method: &str, path: &str) -> u16 {
    // HEAD/OPTIONS never reach the special GET probes: `/liveness` and `/readiness`
    // fall into the health table, match no rule, and give 503 (Patroni quirk, §3).
    if method != "GET" && (path == "/liveness" || path == "/readiness") {
        return 503;
    }
    match kind {
        Kind::Leader => match path {
            "/" | "/primary" | "/master" | "/leader" | "/read-write" | "/read-only" | "/health"
            | "/liveness" | "/readiness" => 200,
            // replica_code is 503 on a primary (also with lag/tag filters), not a
            // standby cluster, /async is replica_code, not listed in /sync.
            _ => 503,
        },
        // noloadbalance: replica_code 503, so /replica*, /read-only and /async too.
        Kind::NoLoadBalance => match path {
            "/health" | "/liveness" | "/readiness" => 200,
            _ => 503,
        },
        Kind::ZoneA => match path {
            "/replica"
            | "/replica?lag=1MB"
            | "/replica?tag_zone=a"
            | "/read-only"
            | "/health"
            | "/async"
            | "/liveness"
            | "/readiness" => 200,
            _ => 503,
        },
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "?",
    }
}

/// Checks every path × method on node i; returns descriptions of the code/body
/// mismatches, and separately of the answers that are not a bare status line where §1
/// requires one.
async fn health_mismatches(c: &TestCluster, i: usize, kind: Kind) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut not_bare = Vec::new();
    for path in HEALTH_PATHS {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let want = expected_code(kind, method, path);
            let Some((code, head, body, raw)) = api_method(c, i, method, path).await else {
                bad.push(format!("{} {method} {path}: no answer", c.nodes[i].name));
                continue;
            };
            if code != want {
                bad.push(format!(
                    "{} ({kind:?}) {method} {path}: got {code}, want {want}; body {body:.200}",
                    c.nodes[i].name
                ));
                continue;
            }
            let bare = method != "GET" || *path == "/liveness" || *path == "/readiness";
            if bare {
                // §1: exactly `HTTP/1.0 <code> <reason>\r\n\r\n` — no headers, no body.
                let want_raw = format!("HTTP/1.0 {code} {}\r\n\r\n", reason(code));
                if raw != want_raw {
                    not_bare.push(format!(
                        "{} {method} {path}: not a bare status line: {raw:?}",
                        c.nodes[i].name
                    ));
                }
            } else {
                let json_ok = serde_json::from_str::<Value>(&body)
                    .ok()
                    .is_some_and(|v| v.get("state").is_some() && v.get("role").is_some());
                let ctype_ok = head
                    .to_ascii_lowercase()
                    .contains("content-type: application/json");
                if !json_ok || !ctype_ok {
                    bad.push(format!(
                        "{} GET {path}: want a JSON status body (json {json_ok}, content-type {ctype_ok}): {head:?} {body:.200}",
                        c.nodes[i].name
                    ));
                }
            }
        }
    }
    (bad, not_bare)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_on_a_real_cluster() {
    let opts = vec![
        NodeOptions::default(),
        NodeOptions {
            tags: vec!["noloadbalance: true".into()],
            ..NodeOptions::default()
        },
        NodeOptions {
            tags: vec!["zone: a".into()],
            ..NodeOptions::default()
        },
    ];
    let mut c = TestCluster::new("healthtest", 3, &opts);
    start_cluster_led_by_0(&mut c).await;
    let kinds = [Kind::Leader, Kind::NoLoadBalance, Kind::ZoneA];

    // All codes as the spec says, once the cluster has settled (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let not_bare = loop {
        let mut bad = Vec::new();
        let mut not_bare = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let (b, nb) = health_mismatches(&c, i, *kind).await;
            bad.extend(b);
            not_bare.extend(nb);
        }
        if bad.is_empty() {
            break not_bare;
        }
        assert!(
            Instant::now() < deadline,
            "health-check codes differ from rest-api.md §3:\n{}",
            bad.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Pause: the leader is still the primary for load balancers.
    let (code, out, err) = wardenctl(&c, &["pause", "healthtest", "--wait"]);
    assert_eq!(code, 0, "pause: {out}{err}");
    for i in 0..3 {
        let st = patroni_json(&c, i).await;
        assert_eq!(
            st.as_ref().map(|v| v["pause"].clone()),
            Some(Value::Bool(true)),
            "/patroni on {} while paused: {st:?}",
            c.nodes[i].name
        );
    }
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = api_method(&c, 0, method, "/primary").await.map(|r| r.0);
        assert_eq!(r, Some(200), "{method} /primary on the leader while paused");
    }

    // SIGKILL the zone:a replica's postmaster: in pause the agent reports it stopped and
    // does not start it again, while staying alive itself.
    warden_testkit::kill_postmaster(&c.nodes[2].data_dir, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = api_get(&c, 2, "/health").await.map(|r| r.0);
        let replica = api_get(&c, 2, "/replica").await.map(|r| r.0);
        let head_replica = api_method(&c, 2, "HEAD", "/replica").await.map(|r| r.0);
        let state = patroni_json(&c, 2).await.map(|v| v["state"].clone());
        let liveness = api_get(&c, 2, "/liveness").await.map(|r| r.0);
        assert_eq!(liveness, Some(200), "/liveness must stay 200 while paused");
        if health == Some(503)
            && replica == Some(503)
            && head_replica == Some(503)
            && state.as_ref().is_some_and(|s| s != "running")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after killing pg2's postmaster in pause: /health {health:?}, /replica {replica:?}, \
             HEAD /replica {head_replica:?}, /patroni state {state:?}\n{}",
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Over the next HA loops (loop_wait 2 s): the state settles on `stopped`
    // (ha-loop.md L10 paused branch, as Patroni's `set_state(STOPPED)`), PostgreSQL is
    // not started again, and the probes keep their answers.
    let watch = Instant::now() + Duration::from_secs(6);
    let mut paused_state = None;
    while Instant::now() < watch {
        let state = patroni_json(&c, 2).await.map(|v| v["state"].clone());
        assert!(
            state
                .as_ref()
                .is_some_and(|s| s != "running" && s != "starting"),
            "PostgreSQL of pg2 was started while paused (state {state:?})\n{}",
            c.logs_tail(20)
        );
        assert!(
            warden_testkit::postmaster_pid(&c.nodes[2].data_dir).is_none_or(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            }),
            "a postmaster runs again in pg2's data dir while paused"
        );
        assert_eq!(api_get(&c, 2, "/liveness").await.map(|r| r.0), Some(200));
        assert_eq!(api_get(&c, 2, "/health").await.map(|r| r.0), Some(503));
        assert_eq!(api_get(&c, 2, "/replica").await.map(|r| r.0), Some(503));
        paused_state = state;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The leader was not affected.
    assert_eq!(api_get(&c, 0, "/primary").await.map(|r| r.0), Some(200));

    // Resume: automation comes back and restarts the replica.
    let (code, out, err) = wardenctl(&c, &["resume", "healthtest", "--wait"]);
    assert_eq!(code, 0, "resume: {out}{err}");
    let st = patroni_json(&c, 0).await;
    assert!(
        st.as_ref().is_some_and(|v| v.get("pause").is_none()),
        "pause still reported after resume: {st:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replica = api_get(&c, 2, "/replica").await.map(|r| r.0);
        if replica == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg2 is not a healthy replica again after resume: /replica {replica:?}\n{}",
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Checked last so that everything above is verified first.
    // In pause nobody restarts a dead PostgreSQL: its state is `stopped` (ha-loop.md L10).
    assert_eq!(
        paused_state,
        Some(Value::String("stopped".into())),
        "state of pg2 after its PostgreSQL died in pause"
    );
    // rest-api.md §1: HEAD/OPTIONS health checks and GET /liveness, /readiness answer
    // exactly `HTTP/1.0 <code> <reason>\r\n\r\n`.
    assert!(
        not_bare.is_empty(),
        "{} answers are not a bare status line (rest-api.md §1), e.g.:\n{}",
        not_bare.len(),
        not_bare
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------
// 2. /metrics through prometheus_client
// ---------------------------------------------------------------------------------

/// metrics.md §2 in output order: (name, TYPE, HELP).
const METRICS: &[(&str, &str, &str)] = &[
    ("patroni_version", "gauge", "Patroni semver without periods."),
    ("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise."),
    ("patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started."),
    ("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise."),
    ("patroni_xlog_location", "counter", "Current location of the Postgres transaction log, 0 if this node is not the leader."),
    ("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise."),
    ("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise."),
    ("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise."),
    ("patroni_quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 otherwise."),
    ("patroni_xlog_received_location", "counter", "Current location of the received Postgres transaction log, 0 if this node is not a replica."),
    ("patroni_xlog_replayed_location", "counter", "Current location of the replayed Postgres transaction log, 0 if this node is not a replica."),
    ("patroni_xlog_replayed_timestamp", "gauge", "Current timestamp of the replayed Postgres transaction log, 0 if null."),
    ("patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise."),
    ("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise."),
    ("patroni_postgres_in_archive_recovery", "gauge", "Value is 1 if Postgres is replicating from archive, 0 otherwise."),
    ("patroni_postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise."),
    ("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked."),
    ("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if inactive."),
    ("patroni_failsafe_mode_enabled", "gauge", "Value is 1 if failsafe_mode is enabled, 0 otherwise."),
    ("patroni_failsafe_member", "gauge", "Value is 1 if this node is a member of failsafe, 0 otherwise."),
    ("patroni_postgres_timeline", "gauge", "Postgres timeline of this node (if running), 0 otherwise."),
    ("patroni_dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully by Patroni."),
    ("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise."),
    ("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise."),
    ("patroni_postgres_state", "gauge", "Numeric representation of Postgres state."),
    ("patroni_failover_priority", "gauge", "Failover priority of this node."),
];

const PARSE_PY: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
out = []
for f in text_string_to_metric_families(text):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": float(s.value),
                             "timestamp": None if s.timestamp is None else str(s.timestamp)}
                            for s in f.samples]})
print(json.dumps(out))
"#;

/// One parsed family: (type, help, samples as (sample name, labels, value, timestamp)).
type Family = (
    String,
    String,
    Vec<(String, BTreeMap<String, String>, f64, Value)>,
);

/// Parses a /metrics body with the real prometheus_client; families in input order.
fn parse_with_prometheus_client(body: &str) -> Vec<(String, Family)> {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, body.as_bytes()).expect("write metrics");
    let (code, out, err) = run(Command::new("python3")
        .arg("-c")
        .arg(PARSE_PY)
        .arg(f.path()));
    assert_eq!(
        code, 0,
        "prometheus_client rejected the body: {err}\n{body}"
    );
    let v: Value = serde_json::from_str(&out).expect("parser output");
    v.as_array()
        .expect("list")
        .iter()
        .map(|fam| {
            let samples = fam["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect();
                    (
                        s["name"].as_str().unwrap().to_string(),
                        labels,
                        s["value"].as_f64().unwrap(),
                        s["timestamp"].clone(),
                    )
                })
                .collect();
            (
                fam["name"].as_str().unwrap().to_string(),
                (
                    fam["type"].as_str().unwrap().to_string(),
                    fam["help"].as_str().unwrap().to_string(),
                    samples,
                ),
            )
        })
        .collect()
}

/// Checks the families against metrics.md; returns name → value.
fn check_metrics(
    scope: &str,
    member: &str,
    body: &str,
    families: &[(String, Family)],
) -> BTreeMap<String, f64> {
    // Extra metrics are allowed only under another prefix (metrics.md: `warden_`).
    for (n, _) in families {
        assert!(
            n.starts_with("patroni_") || n.starts_with("warden_"),
            "{member}: unexpected metric family {n}"
        );
    }
    let families: Vec<&(String, Family)> = families
        .iter()
        .filter(|(n, _)| n.starts_with("patroni_"))
        .collect();
    let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    let want_order: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
    assert_eq!(
        names, want_order,
        "{member}: metric families (names/order) differ from metrics.md §2\n{body}"
    );
    let labels: BTreeMap<String, String> = [
        ("scope".to_string(), scope.to_string()),
        ("name".to_string(), member.to_string()),
    ]
    .into_iter()
    .collect();
    let mut values = BTreeMap::new();
    for ((name, ty, help), (_, (got_ty, got_help, samples))) in
        METRICS.iter().zip(families.iter().copied())
    {
        assert_eq!(got_ty, ty, "{member}: TYPE of {name}\n{body}");
        assert_eq!(got_help, help, "{member}: HELP of {name}\n{body}");
        assert_eq!(
            samples.len(),
            1,
            "{member}: {name} must have one sample\n{body}"
        );
        let (sname, slabels, value, ts) = &samples[0];
        // prometheus_client names counter samples `<name>_total`.
        let want_sname = if *ty == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        assert_eq!(sname, &want_sname, "{member}: sample name of {name}");
        assert_eq!(slabels, &labels, "{member}: labels of {name}\n{body}");
        assert!(ts.is_null(), "{member}: {name} must carry no timestamp");
        values.insert(name.to_string(), *value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_leader_and_replica_parse_with_prometheus_client() {
    let mut c = TestCluster::new("metricstest", 2, &[]);
    start_cluster_led_by_0(&mut c).await;
    exec(&c, 0, "CREATE TABLE m(id int); INSERT INTO m VALUES (1)")
        .await
        .expect("write");

    // Values come from a cached snapshot: poll (bounded) until it reflects the
    // streaming replica, then check everything on that body.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (leader_vals, replica_vals) = loop {
        let l = api_get(&c, 0, "/metrics").await;
        let r = api_get(&c, 1, "/metrics").await;
        let last = if let (Some((200, lb)), Some((200, rb))) = (&l, &r) {
            let lf = parse_with_prometheus_client(lb);
            let rf = parse_with_prometheus_client(rb);
            let lv = check_metrics("metricstest", "pg0", lb, &lf);
            let rv = check_metrics("metricstest", "pg1", rb, &rf);
            let settled = lv["patroni_primary"] == 1.0
                && rv["patroni_replica"] == 1.0
                && rv["patroni_postgres_streaming"] == 1.0
                && lv["patroni_xlog_location"] > 0.0
                && rv["patroni_xlog_replayed_timestamp"] > 0.0;
            if settled {
                break (lv, rv);
            }
            format!("----- leader -----\n{lb}\n----- replica -----\n{rb}")
        } else {
            format!("leader {l:?}\nreplica {r:?}")
        };
        assert!(
            Instant::now() < deadline,
            "metrics never reflected a healthy leader + streaming replica:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Content-Type text/plain.
    let (code, head, _, _) = api_method(&c, 0, "GET", "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );

    let lv = &leader_vals;
    let rv = &replica_vals;
    assert_eq!(lv["patroni_primary"], 1.0);
    assert_eq!(lv["patroni_replica"], 0.0);
    assert_eq!(rv["patroni_primary"], 0.0);
    assert_eq!(rv["patroni_replica"], 1.0);
    assert_eq!(rv["patroni_postgres_streaming"], 1.0);
    assert_eq!(rv["patroni_postgres_in_archive_recovery"], 0.0);
    for (who, v) in [("leader", lv), ("replica", rv)] {
        assert!(v["patroni_postgres_timeline"] >= 1.0, "{who}: timeline");
        assert_eq!(v["patroni_postgres_running"], 1.0, "{who}: running");
        assert_eq!(v["patroni_postgres_state"], 5.0, "{who}: state running = 5");
        assert!(
            (150000.0..160000.0).contains(&v["patroni_postgres_server_version"]),
            "{who}: server version {}",
            v["patroni_postgres_server_version"]
        );
        assert!(
            v["patroni_postmaster_start_time"] > 1.6e9,
            "{who}: start time"
        );
        assert!(v["patroni_dcs_last_seen"] > 1.6e9, "{who}: dcs_last_seen");
        assert_eq!(v["patroni_cluster_unlocked"], 0.0, "{who}: cluster locked");
        assert_eq!(v["patroni_is_paused"], 0.0, "{who}: not paused");
        assert_eq!(v["patroni_standby_leader"], 0.0, "{who}: standby_leader");
        assert_eq!(
            v["patroni_failover_priority"], 1.0,
            "{who}: default priority"
        );
        assert!(v["patroni_version"] >= 40000.0, "{who}: version");
    }
    assert!(lv["patroni_xlog_location"] > 0.0);
    assert_eq!(lv["patroni_xlog_received_location"], 0.0);
    assert_eq!(rv["patroni_xlog_location"], 0.0);
    assert!(rv["patroni_xlog_received_location"] > 0.0);
    assert!(rv["patroni_xlog_replayed_location"] > 0.0);
    // the replayed timestamp of the replica is the commit of the INSERT above
    assert!(rv["patroni_xlog_replayed_timestamp"] > 1.6e9);
}

// ---------------------------------------------------------------------------------
// 3. wardenctl vs patronictl
// ---------------------------------------------------------------------------------

/// Runs the same arguments through both CLIs until their stdout (and exit code) are
/// byte-identical (bounded: the leader republishes its optime every loop).
fn assert_same_output(c: &TestCluster, args: &[&str]) -> String {
    let mut last = None;
    for _ in 0..8 {
        let w = wardenctl(c, args);
        let p = patronictl(c, args);
        if w.0 == p.0 && w.1 == p.1 {
            assert_eq!(w.0, 0, "{args:?} failed: {}{}", w.1, w.2);
            return w.1;
        }
        last = Some((w, p));
        std::thread::sleep(Duration::from_millis(700));
    }
    let (w, p) = last.unwrap();
    panic!(
        "wardenctl {args:?} differs from patronictl:\n--- wardenctl (exit {}) ---\n{}{}\n--- patronictl (exit {}) ---\n{}{}",
        w.0, w.1, w.2, p.0, p.1, p.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wardenctl_matches_patronictl_on_a_real_cluster() {
    let mut c = TestCluster::new("ctltest", 3, &[]);
    start_cluster_led_by_0(&mut c).await;

    let list = assert_same_output(&c, &["list"]);
    assert!(list.contains("+ Cluster: ctltest ("), "{list}");
    for n in ["pg0", "pg1", "pg2"] {
        assert!(list.contains(n), "{list}");
    }
    let json = assert_same_output(&c, &["list", "-f", "json"]);
    let v: Value = serde_json::from_str(&json).expect("list -f json is JSON");
    assert_eq!(v.as_array().map(|a| a.len()), Some(3), "{json}");
    assert_eq!(v[0]["Role"], "Leader", "{json}");
    assert_same_output(&c, &["list", "-f", "tsv"]);
    assert_same_output(&c, &["list", "-f", "yaml"]);
    let ext = assert_same_output(&c, &["list", "-e"]);
    assert!(ext.contains("Pending restart"), "{ext}");
    assert_same_output(&c, &["topology"]);
    assert_same_output(&c, &["history"]);
    let cfg = assert_same_output(&c, &["show-config"]);
    assert!(cfg.contains("loop_wait: 2"), "{cfg}");

    // query: default tsv output, header + row. The database user is PGUSER for both
    // CLIs (libpq's default would be the OS user, root here, which has no role).
    let q = ["query", "ctltest", "-c", "SELECT 1 AS one"];
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .env("PGUSER", "postgres")
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(q));
    assert_eq!(code, 0, "wardenctl query: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["one", "1"], "wardenctl query output: {out:?}");
    let (pcode, pout, perr) = run(Command::new("patronictl")
        .env("PGUSER", "postgres")
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(q));
    assert_eq!(pcode, 0, "patronictl query: {pout}{perr}");
    assert_eq!(out, pout, "wardenctl query vs patronictl query");
    let pretty = |prog: &std::path::Path| {
        run(Command::new(prog)
            .env("PGUSER", "postgres")
            .arg("-c")
            .arg(&c.nodes[0].config)
            .args([
                "query",
                "ctltest",
                "--format",
                "pretty",
                "-c",
                "SELECT 1 AS one, 'x' AS two",
            ]))
    };
    let (wp, pp) = (
        pretty(&TestCluster::bin("wardenctl")),
        pretty(std::path::Path::new("patronictl")),
    );
    assert_eq!(wp.0, 0, "{wp:?}");
    assert_eq!(wp.1, pp.1, "query --format pretty: wardenctl vs patronictl");

    // dsn of the leader.
    let (code, out, err) = wardenctl(&c, &["dsn", "ctltest"]);
    assert_eq!(code, 0, "wardenctl dsn: {out}{err}");
    assert_eq!(
        out.trim_end(),
        format!("host=127.0.0.1 port={}", c.nodes[0].pg_port)
    );
    assert_eq!(
        out,
        patronictl(&c, &["dsn", "ctltest"]).1,
        "dsn vs patronictl"
    );

    // version: one line per member from its REST API.
    let (code, out, err) = wardenctl(&c, &["version", "ctltest"]);
    assert_eq!(code, 0, "wardenctl version: {out}{err}");
    for n in ["pg0", "pg1", "pg2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{n}: ")))
            .unwrap_or_else(|| panic!("no version line for {n}: {out}"));
        assert!(
            line.starts_with(&format!("{n}: Patroni 4.1.5 PostgreSQL 15.")),
            "{line}"
        );
    }
    let (_, pout, _) = patronictl(&c, &["version", "ctltest"]);
    let members_of = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("pg"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        members_of(&out),
        members_of(&pout),
        "version member lines: wardenctl\n{out}\npatronictl\n{pout}"
    );

    // Without PGUSER/-U, libpq (hence patronictl) connects as the OS user
    // (getpwuid(geteuid())), whatever $USER says.
    if nix::unistd::geteuid().is_root() {
        let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
            .env_remove("PGUSER")
            .env_remove("USER")
            .arg("-c")
            .arg(&c.nodes[0].config)
            .args(["query", "ctltest", "-c", "SELECT current_user"]));
        assert!(
            !out.lines().any(|l| l == "postgres"),
            "wardenctl query without PGUSER/USER connected as `postgres`, not as the OS \
             user `root` like libpq/patronictl (exit {code}): {out}{err}"
        );
    }
}

// ---------------------------------------------------------------------------------
// 4. REST authentication
// ---------------------------------------------------------------------------------

const API_USER: &str = "admin";
const API_PASS: &str = "s3cret";

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16
            | (*ch.get(1).unwrap_or(&0) as u32) << 8
            | *ch.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= ch.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn post_restart(c: &TestCluster, auth: Option<&str>) -> (u16, String, String) {
    let mut req = format!(
        "POST /restart HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n",
        c.nodes[0].api_port
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Basic {}\r\n", b64(a)));
    }
    req.push_str("\r\n");
    let (code, head, body, _) = api_raw(c, 0, &req).await.expect("POST /restart answered");
    (code, head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_authentication_end_to_end() {
    let opts = vec![NodeOptions {
        env: vec![
            ("PATRONI_RESTAPI_USERNAME".into(), API_USER.into()),
            ("PATRONI_RESTAPI_PASSWORD".into(), API_PASS.into()),
        ],
        ..NodeOptions::default()
    }];
    let mut c = TestCluster::new("authtest", 1, &opts);
    c.start_node(0);
    wait_for_leader(&c, Duration::from_secs(60)).await;
    let start0 = patroni_json(&c, 0).await.expect("/patroni")["postmaster_start_time"].clone();

    // No Authorization header.
    let (code, head, body) = post_restart(&c, None).await;
    assert_eq!(code, 401, "POST /restart without auth: {head}\n{body}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("WWW-Authenticate: Basic realm=\"Patroni\"")),
        "401 without WWW-Authenticate: {head}"
    );
    assert!(body.contains("no auth header received"), "{body}");
    // Wrong password, and wrong user.
    for bad in [format!("{API_USER}:wrong"), format!("nobody:{API_PASS}")] {
        let (code, head, body) = post_restart(&c, Some(&bad)).await;
        assert_eq!(code, 401, "POST /restart with {bad}: {head}\n{body}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("WWW-Authenticate: Basic realm=\"Patroni\"")),
            "{head}"
        );
        assert!(body.contains("not authenticated"), "{body}");
    }
    // GET endpoints are never authenticated.
    assert_eq!(api_get(&c, 0, "/patroni").await.map(|r| r.0), Some(200));
    assert_eq!(api_get(&c, 0, "/metrics").await.map(|r| r.0), Some(200));
    // Nothing was restarted by the rejected requests.
    assert_eq!(
        patroni_json(&c, 0).await.expect("/patroni")["postmaster_start_time"],
        start0
    );

    // wardenctl without credentials is refused…
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .env_remove("PATRONI_RESTAPI_USERNAME")
        .env_remove("PATRONI_RESTAPI_PASSWORD")
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["restart", "authtest", "pg0", "--force"]));
    assert!(
        out.contains("Failed: restart for member pg0, status code=401"),
        "wardenctl restart without credentials (exit {code}): {out}{err}"
    );
    // …and with them (from the environment, like the agent) it restarts.
    let (code, out, err) = run(Command::new(TestCluster::bin("wardenctl"))
        .env("PATRONI_RESTAPI_USERNAME", API_USER)
        .env("PATRONI_RESTAPI_PASSWORD", API_PASS)
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["restart", "authtest", "pg0", "--force"]));
    assert_eq!(code, 0, "wardenctl restart: {out}{err}");
    assert!(
        out.contains("Success: restart on member pg0"),
        "wardenctl restart: {out}{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let start1 = loop {
        let st = patroni_json(&c, 0).await;
        if let Some(st) = st.filter(|s| s["state"] == "running") {
            break st["postmaster_start_time"].clone();
        }
        assert!(Instant::now() < deadline, "pg0 not running after restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(
        start0, start1,
        "postmaster_start_time unchanged: no restart happened"
    );
    wait_for_leader(&c, Duration::from_secs(30)).await;

    // The real patronictl authenticates the same way.
    let (code, out, err) = run(Command::new("patronictl")
        .env("PATRONI_RESTAPI_USERNAME", API_USER)
        .env("PATRONI_RESTAPI_PASSWORD", API_PASS)
        .arg("-c")
        .arg(&c.nodes[0].config)
        .args(["restart", "authtest", "pg0", "--force"]));
    assert_eq!(code, 0, "patronictl restart: {out}{err}");
    assert!(
        out.contains("Success: restart on member pg0"),
        "patronictl restart: {out}{err}"
    );
    wait_for_leader(&c, Duration::from_secs(30)).await;

    // The password never leaks: agent log, status JSON, metrics, member key.
    let log = std::fs::read_to_string(&c.nodes[0].log).expect("agent log");
    assert!(
        !log.contains(API_PASS),
        "the REST password appears in the agent log"
    );
    for path in ["/patroni", "/metrics", "/cluster", "/config"] {
        let (code, body) = api_get(&c, 0, path).await.expect(path);
        assert_eq!(code, 200, "GET {path}");
        assert!(
            !body.contains(API_PASS),
            "the REST password appears in GET {path}: {body}"
        );
    }
    let m = c.etcd_get("members/pg0").unwrap_or_default();
    assert!(
        !m.contains(API_PASS),
        "the REST password appears in the member key: {m}"
    );
}

/// `warden_ha_cycles_total` of node i.
async fn ha_cycles(c: &TestCluster, i: usize) -> Option<u64> {
    let (_, body) = api_get(c, i, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with("warden_ha_cycles_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// A replica's `GET /patroni` reports WAL positions read between HA cycles (peers
/// judge switchover candidates by them): with loop_wait = 10 s, a write on the leader
/// shows up in the replica's `xlog.received_location` while its HA loop has not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_wal_positions_are_fresh_between_ha_cycles() {
    let mut c = TestCluster::new("freshtest", 2, &[]);
    let l = start_cluster_led_by_0(&mut c).await;
    let r = 1 - l;
    let (code, out, err) = wardenctl(
        &c,
        &[
            "edit-config",
            "freshtest",
            "--set",
            "loop_wait=10",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Both nodes run a cycle with the new loop_wait before we measure.
    let start = ha_cycles(&c, r).await.expect("replica metrics");
    warden_testkit::wait_for_async(
        "the replica to run two more HA cycles",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (ha_cycles(&c, r).await? >= start + 2).then_some(()) },
    )
    .await;
    exec(&c, l, "CREATE TABLE IF NOT EXISTS fresh(i int)")
        .await
        .expect("create");
    for attempt in 0..5 {
        let before = ha_cycles(&c, r).await.expect("replica metrics");
        exec(&c, l, "INSERT INTO fresh SELECT generate_series(1, 1000)")
            .await
            .expect("insert");
        let lsn: u64 = query_one(&c, l, "SELECT pg_current_wal_flush_lsn() - '0/0'")
            .await
            .and_then(|v| v.parse().ok())
            .expect("leader LSN");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut seen = None;
        while Instant::now() < deadline {
            let received = patroni_json(&c, r)
                .await
                .and_then(|v| v["xlog"]["received_location"].as_u64());
            if received.is_some_and(|x| x >= lsn) {
                seen = received;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = ha_cycles(&c, r).await.expect("replica metrics");
        assert!(
            seen.is_some(),
            "attempt {attempt}: replica /patroni never reached the leader's LSN {lsn}"
        );
        if after == before {
            return;
        }
        // An HA cycle ran meanwhile (e.g. woken by a DCS change): not a proof; again.
    }
    panic!("every attempt overlapped an HA cycle of the replica");
}

/// A flood of REST requests on the leader (64 kept-alive connections hammering
/// `/patroni` and `/primary`) does not hold up its HA loop: cycles keep coming at
/// loop_wait, the leader keeps its lock and the health check keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_flood_does_not_stall_the_ha_loop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = TestCluster::new("floodtest", 2, &[]);
    let l = start_cluster_led_by_0(&mut c).await;
    let addr = format!("127.0.0.1:{}", c.nodes[l].api_port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..64 {
        let (addr, stop, answered) = (addr.clone(), stop.clone(), answered.clone());
        flood.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/patroni" } else { "/primary" };
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if s.write_all(req.as_bytes()).await.is_err() {
                    return;
                }
                // One response per request: read until its body is complete.
                let mut got = Vec::new();
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|h| h.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let start = ha_cycles(&c, l).await.expect("leader metrics");
    let t0 = Instant::now();
    // loop_wait is 2 s: 4 cycles take about 8 s when the loop is not held up; allow 20.
    let cycles = warden_testkit::wait_for_async(
        "4 HA cycles of the leader under the flood",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || async { ha_cycles(&c, l).await.filter(|n| *n >= start + 4) },
    )
    .await;
    let code = api_get(&c, l, "/primary").await.map(|(code, _)| code);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let n = answered.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "flood: {n} requests answered in {:?}, {} HA cycles",
        t0.elapsed(),
        cycles - start
    );
    assert!(n > 1000, "the flood did not get going ({n} answers)");
    assert!(
        cycles >= start + 4,
        "HA cycles {start} -> {cycles} under flood"
    );
    assert_eq!(code, Some(200), "/primary on the leader under flood");
    assert_eq!(
        c.etcd_get("leader").as_deref(),
        Some(c.nodes[l].name.as_str())
    );
}
