//! The shipped monitoring (packaging/prometheus/warden-alerts.yml and
//! packaging/grafana/warden-dashboard.json) against a real cluster: a leader and a
//! synchronous standby (so the synchronous-replication metrics have their interesting
//! values).
//!
//! 1. Every metric name a rule's `expr` or a dashboard query uses is in some agent's
//!    `GET /metrics` scrape: a rule or panel on a name Warden does not export fails here.
//! 2. A real Prometheus (Debian's `prometheus` package) scrapes the agents with the rules
//!    loaded: every rule evaluates without error, none is pending or firing on the healthy
//!    cluster, and every dashboard query returns data.
//! 3. Two rules on real trouble: a parameter change that needs a restart makes
//!    WardenPendingRestart pending for both members, and stopping the synchronous standby
//!    makes WardenSyncStandbyMissing pending (the rules' `for` keeps them from firing
//!    within the test; their unit tests cover firing).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::{free_port, ProcessGuard};

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(rel)
}

/// The `expr` of every rule in a Prometheus rule file.
fn rule_exprs(path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let mut out = Vec::new();
    for g in doc["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            out.push(r["expr"].as_str().expect("expr is a string").to_string());
        }
    }
    out
}

/// Every panel query (`expr`, also in nested rows) and template-variable query of a
/// Grafana dashboard: (queries, of which panel `expr`s).
fn dashboard_queries(path: &Path) -> (Vec<String>, usize) {
    fn walk(v: &Value, key: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if let (true, Some(s)) = (k == key, v.as_str()) {
                        out.push(s.to_string());
                    }
                    walk(v, key, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut exprs = Vec::new();
    walk(&doc["panels"], "expr", &mut exprs);
    let n = exprs.len();
    walk(&doc["templating"], "definition", &mut exprs);
    (exprs, n)
}

/// Identifiers starting with `patroni_` or `warden_` in PromQL text.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = promql;
    while let Some(start) = rest.find(|c: char| is_ident(c)) {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        if word.starts_with("patroni_") || word.starts_with("warden_") {
            out.insert(word.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Sample names (`name{…} value` lines) of a Prometheus text exposition.
fn exported_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The names in `used` that no scrape exports.
fn missing(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.difference(exported).cloned().collect()
}

/// The name checks themselves, without a cluster: they find the names in PromQL and
/// report one that is not exported.
#[test]
fn name_scan_finds_unexported_names() {
    let names = metric_names(
        "max by (scope) (patroni_xlog_location{scope=\"x\"}) - on (scope) group_right () \
         (patroni_xlog_received_location and on (scope, name) (patroni_replica == 1)) \
         > 16777216 or time() - warden_ha_last_cycle_timestamp_seconds",
    );
    let want: BTreeSet<String> = [
        "patroni_xlog_location",
        "patroni_xlog_received_location",
        "patroni_replica",
        "warden_ha_last_cycle_timestamp_seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
    let exported = exported_names(
        "# HELP patroni_replica x\n# TYPE patroni_replica gauge\n\
         patroni_replica{scope=\"a\",name=\"b\"} 1\npatroni_xlog_location{scope=\"a\"} 5\n\
         patroni_xlog_received_location 0\n",
    );
    assert_eq!(
        missing(&names, &exported),
        vec!["warden_ha_last_cycle_timestamp_seconds".to_string()]
    );
    // The shipped files are read and yield the names their rules and panels rely on.
    let rules: BTreeSet<String> = rule_exprs(&packaging("prometheus/warden-alerts.yml"))
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    for n in [
        "patroni_cluster_unlocked",
        "patroni_primary",
        "patroni_xlog_location",
        "patroni_sync_standby",
        "patroni_failsafe_mode_is_active",
        "patroni_pending_restart",
        "warden_synchronous_mode",
        "warden_ha_last_cycle_timestamp_seconds",
    ] {
        assert!(rules.contains(n), "{n} not found in the rules: {rules:?}");
    }
    let (queries, panels) = dashboard_queries(&packaging("grafana/warden-dashboard.json"));
    assert!(panels >= 11, "only {panels} panel queries found");
    assert!(queries
        .iter()
        .any(|q| q.contains("label_values(patroni_version")));
}

/// Options of both nodes: synchronous mode on, a short lock.
fn sync_options() -> Vec<NodeOptions> {
    let yaml = "bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 2\n    retry_timeout: 5\n    \
                synchronous_mode: true\n"
        .to_string();
    vec![
        NodeOptions {
            yaml: vec![yaml],
            ..NodeOptions::default()
        };
        2
    ]
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: (status, body); None if no answer in 5 s.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query on the Prometheus at `port`: the result vector (None on any error).
async fn prom_query(port: u16, q: &str) -> Option<Vec<Value>> {
    let (code, body) = http_get(port, &format!("/api/v1/query?query={}", urlencode(q))).await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    if code != 200 || v["status"] != "success" {
        return None;
    }
    match &v["data"]["result"] {
        Value::Array(a) => Some(a.clone()),
        // A scalar result (`time()`-only expressions): one value.
        other if !other.is_null() => Some(vec![other.clone()]),
        _ => None,
    }
}

/// Polls `check` every 500 ms until it returns Some, for at most `timeout`.
async fn wait_some<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(t) => return t,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("{what} not within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_use_exported_metrics_and_evaluate_on_a_real_cluster() {
    let prometheus = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        prometheus,
        "the `prometheus` binary is missing: apt-get install prometheus (./test.sh installs it)"
    );
    let rules_file = packaging("prometheus/warden-alerts.yml");
    let rule_queries = rule_exprs(&rules_file);
    let (dash_queries, _) = dashboard_queries(&packaging("grafana/warden-dashboard.json"));
    let used: BTreeSet<String> = rule_queries
        .iter()
        .chain(dash_queries.iter())
        .flat_map(|e| metric_names(e))
        .collect();

    let mut c = TestCluster::new("monitoring", 2, &sync_options());
    c.start_all();
    let l = wait_for_leader(&c, Duration::from_secs(90)).await;
    let r = 1 - l;
    wait_streaming(&c, r, Duration::from_secs(60)).await;
    let replica = c.nodes[r].name.clone();
    wait_sync_key(&c, "naming the replica", Duration::from_secs(30), |k| {
        k.standbys == [replica.clone()]
    })
    .await;

    // 1. Scrape both agents once the replica reports itself as the synchronous standby
    // (its view of the sync key lags the key by up to a cycle).
    let sync_line = format!("patroni_sync_standby{{scope=\"monitoring\",name=\"{replica}\"}} 1\n");
    let bodies = wait_some(
        "the replica's /metrics showing it sync",
        Duration::from_secs(30),
        || {
            let c = &c;
            let sync_line = &sync_line;
            async move {
                let mut bodies = Vec::new();
                for i in 0..c.nodes.len() {
                    match api_get(c, i, "/metrics").await {
                        Some((200, b)) => bodies.push(b),
                        other => return Err(format!("{}: {other:?}", c.nodes[i].name)),
                    }
                }
                if bodies[r].contains(sync_line.as_str()) {
                    Ok(bodies)
                } else {
                    Err(bodies[r].clone())
                }
            }
        },
    )
    .await;
    let exported: BTreeSet<String> = bodies.iter().flat_map(|b| exported_names(b)).collect();
    let absent = missing(&used, &exported);
    assert!(
        absent.is_empty(),
        "rules or dashboard panels use metrics no agent exports: {absent:?}\nexported: {exported:?}"
    );
    eprintln!(
        "{} metric names used by {} rules and {} dashboard queries, all exported",
        used.len(),
        rule_queries.len(),
        dash_queries.len()
    );

    // 2. A real Prometheus scraping both agents every second, with the rules loaded.
    let port = free_port();
    let dir = c.dir.subdir("prometheus", false);
    let targets: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("'127.0.0.1:{}'", n.api_port))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{}'\n\
         scrape_configs:\n  - job_name: warden\n    static_configs:\n      - targets: [{}]\n",
        rules_file.display(),
        targets.join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    let log = dir.join("prometheus.log");
    let _prom = ProcessGuard::spawn("prometheus", cmd, &log);
    let prom_log = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_some("both agents scraped", Duration::from_secs(60), || async {
        let up = prom_query(port, "up == 1").await.unwrap_or_default();
        let synced = prom_query(port, "patroni_sync_standby == 1")
            .await
            .unwrap_or_default();
        if up.len() == 2 && synced.len() == 1 {
            Ok(())
        } else {
            Err(format!("up: {up:?}, sync: {synced:?}\n{}", prom_log()))
        }
    })
    .await;

    // Every rule has been evaluated (a few times) without error.
    let evaluated_from = Instant::now();
    let rules = wait_some("all rules evaluated", Duration::from_secs(30), || async {
        let (code, body) = http_get(port, "/api/v1/rules").await.ok_or("no answer")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let all_ok = rules.len() == rule_queries.len()
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            });
        if code == 200 && all_ok && evaluated_from.elapsed() > Duration::from_secs(5) {
            Ok(rules)
        } else {
            Err(format!("{code}: {body}"))
        }
    })
    .await;
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(
            rule["state"], "inactive",
            "alert on a healthy cluster: {rule}"
        );
    }
    let alerts = prom_query(port, "ALERTS").await.expect("query ALERTS");
    assert!(alerts.is_empty(), "alerts on a healthy cluster: {alerts:?}");

    // Every dashboard panel query has data ($scope = this cluster).
    let leader = c.nodes[l].name.clone();
    for q in dash_queries
        .iter()
        .filter(|q| !q.starts_with("label_values"))
    {
        let q = q.replace("$scope", &c.scope);
        let res = prom_query(port, &q)
            .await
            .unwrap_or_else(|| panic!("query failed: {q}\n{}", prom_log()));
        assert!(!res.is_empty(), "no data for dashboard query {q}");
        if q.starts_with("patroni_primary{") && q.contains("== 1 or") {
            assert_eq!(res.len(), 1, "{q}: {res:?}");
            assert_eq!(res[0]["metric"]["name"], leader.as_str(), "{q}: {res:?}");
        }
    }

    // 3. A change that needs a restart: WardenPendingRestart for both members.
    let patch = r#"{"postgresql": {"parameters": {"max_connections": 31}}}"#;
    let res = api_request(&c, l, "PATCH", "/config", Some(patch)).await;
    assert!(
        res.as_ref().is_some_and(|(code, _)| *code == 200),
        "PATCH /config: {res:?}"
    );
    let all: BTreeSet<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    wait_alert(port, "WardenPendingRestart", &all, &prom_log).await;
    // The synchronous standby stops: WardenSyncStandbyMissing for the cluster.
    c.stop_node(r, Duration::from_secs(60));
    wait_alert(
        port,
        "WardenSyncStandbyMissing",
        &BTreeSet::new(),
        &prom_log,
    )
    .await;
    let alerts = prom_query(port, "ALERTS").await.expect("query ALERTS");
    for a in &alerts {
        assert!(
            ["WardenPendingRestart", "WardenSyncStandbyMissing"]
                .contains(&a["metric"]["alertname"].as_str().unwrap_or("")),
            "unexpected alert: {a}"
        );
    }
}

/// Waits until alert `name` is pending or firing in cluster `monitoring`, for exactly the
/// members `members` (for a per-cluster alert, pass none: one alert without `name`).
async fn wait_alert(port: u16, name: &str, members: &BTreeSet<String>, log: &dyn Fn() -> String) {
    let q = format!("ALERTS{{alertname=\"{name}\",scope=\"monitoring\"}}");
    wait_some(name, Duration::from_secs(60), || async {
        let res = prom_query(port, &q).await.unwrap_or_default();
        let got: BTreeSet<String> = res
            .iter()
            .filter_map(|a| a["metric"]["name"].as_str().map(str::to_string))
            .collect();
        let want_len = members.len().max(1);
        if res.len() == want_len && got == *members {
            Ok(())
        } else {
            Err(format!("{q}: {res:?}\n{}", log()))
        }
    })
    .await;
}
