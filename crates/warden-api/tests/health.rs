//! Table-driven tests of the pure health-check decisions (rest-api.md §3).

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use warden_api::{health_code, liveness_code, parse_lag, parse_query, readiness_code};
use warden_core::status::NodeStatus;

const NOW: u64 = 1_000_000;

fn code(s: &NodeStatus, target: &str) -> u16 {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    health_code(path, &parse_query(q), s, NOW)
}

fn check(name: &str, s: &NodeStatus, table: &[(&str, u16)]) {
    let mut failures = Vec::new();
    for (target, want) in table {
        let got = code(s, target);
        if got != *want {
            failures.push(format!("{name}: {target} -> {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn primary_holding_the_lock() {
    let s = primary(NOW);
    check(
        "primary",
        &s,
        &[
            ("/", 200),
            ("/primary", 200),
            ("/master", 200),
            ("/read-write", 200),
            ("/leader", 200),
            ("/standby-leader", 503),
            ("/standby_leader", 503),
            ("/replica", 503),
            ("/replica?lag=1MB", 503),
            ("/read-only", 200),
            ("/read-only?tag_dc=x", 503),
            ("/health", 200),
            ("/sync", 503),
            ("/synchronous", 503),
            ("/async", 503),
            ("/asynchronous", 503),
            ("/read-only-sync", 200),
            ("/read-only-synchronous", 200),
            ("/read-only-quorum", 200),
            ("/quorum", 503),
            ("/foo", 503),
            ("/liveness", 503),
            ("/patroni", 503),
            // tags are ignored on the leader rules
            ("/primary?tag_nothing=x", 200),
            ("/leader?tag_nothing=x", 200),
        ],
    );
}

#[test]
fn streaming_replica() {
    let mut s = replica(NOW, 0);
    s.tags = tags(json!({"dc": "east", "clonefrom": true, "ratio": 1.5, "nosync": false, "n": 3}));
    check(
        "replica",
        &s,
        &[
            ("/", 503),
            ("/primary", 503),
            ("/leader", 503),
            ("/standby_leader", 503),
            ("/replica", 200),
            ("/replica?lag=1MB", 200),
            ("/replica?lag=0", 200),
            ("/replica?replication_state=streaming", 200),
            ("/replica?replication_state=in+archive+recovery", 503),
            ("/replica?replication_state=in%20archive%20recovery", 503),
            ("/read-only", 200),
            ("/health", 200),
            ("/async", 200),
            ("/asynchronous", 200),
            ("/sync", 503),
            ("/read-only-sync", 503),
            ("/quorum", 503),
            // tag filters
            ("/replica?tag_dc=east", 200),
            ("/replica?tag_dc=west", 503),
            ("/replica?tag_rack=1", 503),
            ("/replica?tag_clonefrom=true", 200),
            ("/replica?tag_clonefrom=True", 503),
            ("/replica?tag_ratio=1.5", 200),
            ("/replica?tag_nosync=false", 200),
            ("/replica?tag_n=3", 200),
            ("/replica?tag_dc=east&tag_clonefrom=true", 200),
            ("/replica?tag_dc=east&tag_clonefrom=false", 503),
            ("/replica?tag_dc=", 200), // blank values are dropped like parse_qs
            ("/replica?tag_dc=east&tag_dc=west", 200), // first value wins
            ("/health?tag_dc=west", 503),
            ("/read-only?tag_dc=west", 503),
            ("/async?tag_dc=west", 503),
        ],
    );
}

#[test]
fn lagging_replica() {
    let s = replica(NOW, 2 * MB);
    check(
        "lagging",
        &s,
        &[
            ("/replica", 200),
            ("/replica?lag=1MB", 503),
            ("/replica?lag=1048576", 503),
            ("/replica?lag=2MB", 200),
            ("/replica?lag=3MB", 200),
            ("/replica?lag=1GB", 200),
            ("/replica?lag=2048kB", 200),
            ("/replica?lag=2047kB", 503),
            ("/read-only?lag=1MB", 503),
            ("/async?lag=1MB", 503),
            // unparsable lag = no limit
            ("/replica?lag=abc", 200),
            ("/replica?lag=1XB", 200),
            ("/replica?lag=%ZZ", 200),
            ("/replica?lag=", 200),
        ],
    );
}

#[test]
fn noloadbalance_replica() {
    let mut s = replica(NOW, 0);
    s.tags = tags(json!({"noloadbalance": true}));
    check(
        "noloadbalance",
        &s,
        &[
            ("/replica", 503),
            ("/read-only", 503),
            ("/async", 503),
            ("/health", 200),
        ],
    );
}

#[test]
fn lock_expired() {
    let mut s = primary(NOW);
    s.leader_until_ms = Some(NOW - 1);
    check(
        "expired lock",
        &s,
        &[
            ("/", 503),
            ("/primary", 503),
            ("/leader", 503),
            ("/read-write", 503),
            ("/read-only", 503),
            ("/replica", 503),
            ("/health", 200),
        ],
    );
    // Exactly at the deadline the lock is gone.
    s.leader_until_ms = Some(NOW);
    assert_eq!(code(&s, "/primary"), 503);
}

#[test]
fn postgres_stopped() {
    let mut s = replica(NOW, 0);
    s.state = "stopped".into();
    check(
        "stopped",
        &s,
        &[
            ("/replica", 503),
            ("/health", 503),
            ("/read-only", 503),
            ("/async", 503),
        ],
    );
}

#[test]
fn dcs_view_expired() {
    // Not paused, view stale, lock lapsed: everything 503 except /health; the DCS-only
    // rules are skipped.
    let mut s = primary(NOW);
    s.cluster_valid_until_ms = Some(NOW - 1);
    s.leader_until_ms = Some(NOW - 1);
    check(
        "dcs expired",
        &s,
        &[
            ("/primary", 503),
            ("/leader", 503),
            ("/health", 200),
            ("/read-only-sync", 503),
        ],
    );

    // Paused with the DCS unavailable: answered from the role alone.
    s.paused = true;
    check(
        "dcs expired + paused primary",
        &s,
        &[
            ("/", 200),
            ("/primary", 200),
            ("/leader", 200),
            ("/standby_leader", 503),
            ("/read-only", 200),
        ],
    );
    let mut r = replica(NOW, 0);
    r.cluster_valid_until_ms = Some(NOW - 1);
    r.paused = true;
    check(
        "dcs expired + paused replica",
        &r,
        &[
            ("/primary", 503),
            ("/leader", 503),
            ("/replica", 200),
            ("/async", 503),
        ],
    );
    r.role = "standby_leader".into();
    check(
        "dcs expired + paused standby leader",
        &r,
        &[
            ("/standby_leader", 200),
            ("/leader", 200),
            ("/primary", 503),
        ],
    );

    // No cluster view at all.
    let mut n = replica(NOW, 0);
    n.cluster = None;
    n.cluster_valid_until_ms = None;
    check(
        "no view",
        &n,
        &[("/replica", 200), ("/sync", 503), ("/async", 503)],
    );
}

#[test]
fn standby_cluster_leader() {
    let c = cluster_with(
        json!({"standby_cluster": {"host": "10.1.0.1", "port": 5432}}),
        None,
    );
    let mut s = primary(NOW);
    s.role = "standby_leader".into();
    s.cluster = Some(Arc::new(c.clone()));
    check(
        "standby leader",
        &s,
        &[
            ("/standby_leader", 200),
            ("/standby-leader", 200),
            ("/leader", 200),
            ("/primary", 503),
            ("/", 503),
            ("/replica", 503),
            ("/read-only", 200),
        ],
    );
    // Lock holder still reporting role replica (pg_is_in_recovery) counts too.
    s.role = "replica".into();
    check(
        "standby leader as replica",
        &s,
        &[("/standby_leader", 200), ("/replica", 503)],
    );
    // An empty standby_cluster section is not a standby cluster.
    let mut p = primary(NOW);
    p.cluster = Some(Arc::new(cluster_with(json!({"standby_cluster": {}}), None)));
    check(
        "empty standby_cluster",
        &p,
        &[("/primary", 200), ("/standby_leader", 503)],
    );
}

#[test]
fn standby_leader_matches_before_leader() {
    // "/standby_leader" contains "leader": rule 1 must win over rule 2.
    let s = primary(NOW);
    assert_eq!(code(&s, "/leader"), 200);
    assert_eq!(code(&s, "/standby_leader"), 503);
    assert_eq!(code(&s, "/standby-leader"), 503);
    // Substring matching: any path containing the keyword.
    assert_eq!(code(&s, "/my-primary-check"), 200);
    assert_eq!(code(&s, "/x/leader/y"), 200);
    // Case-sensitive.
    assert_eq!(code(&s, "/PRIMARY"), 503);
}

#[test]
fn synchronous_and_quorum_modes() {
    let sync = cluster_with(
        json!({"synchronous_mode": true}),
        Some(r#"{"leader":"pg1","sync_standby":"pg2"}"#),
    );
    let mut pg2 = replica(NOW, 0);
    pg2.cluster = Some(Arc::new(sync.clone()));
    check(
        "sync standby",
        &pg2,
        &[
            ("/sync", 200),
            ("/synchronous", 200),
            ("/read-only-sync", 200),
            ("/read-only-synchronous", 200),
            ("/async", 503),
            ("/quorum", 503),
            ("/read-only-quorum", 503),
            ("/sync?tag_x=y", 503),
            ("/sync/", 503), // exact paths only
        ],
    );
    let mut pg3 = replica(NOW, 0);
    pg3.name = "pg3".into();
    pg3.cluster = Some(Arc::new(sync));
    check(
        "async standby",
        &pg3,
        &[("/sync", 503), ("/read-only-sync", 503), ("/async", 200)],
    );

    // Sync key present but synchronous_mode off: nobody is a sync standby.
    let mut off = replica(NOW, 0);
    off.cluster = Some(Arc::new(cluster_with(
        json!({}),
        Some(r#"{"leader":"pg1","sync_standby":"pg2"}"#),
    )));
    check("sync off", &off, &[("/sync", 503), ("/async", 200)]);

    let quorum = cluster_with(
        json!({"synchronous_mode": "quorum"}),
        Some(r#"{"leader":"pg1","quorum":1,"sync_standby":"pg2,pg3"}"#),
    );
    let mut q = replica(NOW, 0);
    q.cluster = Some(Arc::new(quorum));
    check(
        "quorum standby",
        &q,
        &[
            ("/quorum", 200),
            ("/read-only-quorum", 200),
            ("/sync", 503),
            ("/read-only-sync", 503),
            ("/async", 503),
        ],
    );
}

#[test]
fn liveness() {
    let mut s = primary(NOW);
    s.next_cycle_due_ms = NOW - 29_000;
    assert_eq!(liveness_code(&s, NOW), 200);
    s.next_cycle_due_ms = NOW - 30_000;
    assert_eq!(liveness_code(&s, NOW), 503, "primary: ttl");
    s.paused = true;
    assert_eq!(liveness_code(&s, NOW), 200, "paused");
    let mut r = replica(NOW, 0);
    r.next_cycle_due_ms = NOW - 59_000;
    assert_eq!(liveness_code(&r, NOW), 200, "replica: 2*ttl");
    r.next_cycle_due_ms = NOW - 60_000;
    assert_eq!(liveness_code(&r, NOW), 503);
    // A stopped primary gets the replica threshold.
    let mut p = primary(NOW);
    p.state = "stopped".into();
    p.next_cycle_due_ms = NOW - 45_000;
    assert_eq!(liveness_code(&p, NOW), 200);
}

#[test]
fn readiness() {
    let q = |s: &str| parse_query(s);
    assert_eq!(readiness_code(&q(""), &primary(NOW), NOW), 200);
    // maximum_lag_on_failover = 1 MB by default in the fixture.
    assert_eq!(readiness_code(&q(""), &replica(NOW, MB), NOW), 200);
    assert_eq!(readiness_code(&q(""), &replica(NOW, MB + 1), NOW), 503);
    assert_eq!(
        readiness_code(&q("lag=2MB"), &replica(NOW, MB + 1), NOW),
        200
    );
    assert_eq!(
        readiness_code(&q("lag=bogus"), &replica(NOW, MB + 1), NOW),
        503
    );
    // mode=write uses the received location.
    let mut r = replica(NOW, 2 * MB);
    if let Some(warden_core::status::Xlog::Replica {
        received_location, ..
    }) = &mut r.xlog
    {
        *received_location = Some(OPTIME);
    }
    assert_eq!(readiness_code(&q(""), &r, NOW), 503);
    assert_eq!(readiness_code(&q("mode=write"), &r, NOW), 200);
    assert_eq!(readiness_code(&q("mode=apply"), &r, NOW), 503);
    // Not streaming, not running, no DCS view.
    let mut r = replica(NOW, 0);
    r.replication_state = Some("in archive recovery".into());
    assert_eq!(readiness_code(&q(""), &r, NOW), 503);
    let mut r = replica(NOW, 0);
    r.state = "starting".into();
    assert_eq!(readiness_code(&q(""), &r, NOW), 503);
    let mut r = replica(NOW, 0);
    r.cluster_valid_until_ms = Some(NOW - 1);
    assert_eq!(readiness_code(&q(""), &r, NOW), 503);
}

#[test]
fn lag_units() {
    for (s, want) in [
        ("1024", Some(1024)),
        ("16kB", Some(16384)),
        ("16 kB", Some(16384)),
        ("1MB", Some(1 << 20)),
        ("1GB", Some(1 << 30)),
        ("2TB", Some(2u64 << 40)),
        ("7B", Some(7)),
        (" 5 ", Some(5)),
        ("1.5MB", Some(1572864)),
        (".5kB", Some(512)),
        ("1e3", Some(1000)),
        ("0x10", Some(16)),
        ("010", Some(8)), // Python strtol: leading 0 is octal
        ("0", Some(0)),
        ("1kb", None),
        ("1 XB", None),
        ("abc", None),
        ("", None),
        ("-1", None),
        ("08", None),
        ("0kB", None), // quirk of Patroni's strtol, kept
        ("99999999999999999999999999999999999999999TB", None),
    ] {
        assert_eq!(parse_lag(s), want, "{s:?}");
    }
}

#[test]
fn query_parsing() {
    let q = parse_query("lag=1MB&tag_a=x+y&tag_b=%41%zz&&novalue&blank=&tag_c=%FF");
    assert_eq!(
        q,
        vec![
            ("lag".to_string(), "1MB".to_string()),
            ("tag_a".to_string(), "x y".to_string()),
            ("tag_b".to_string(), "A%zz".to_string()),
            ("tag_c".to_string(), "\u{fffd}".to_string()),
        ]
    );
    assert!(parse_query("").is_empty());
}
