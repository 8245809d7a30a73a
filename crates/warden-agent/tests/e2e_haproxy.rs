//! HAProxy routing with Warden's health checks, as in the seed guide: a real HAProxy
//! (`/usr/sbin/haproxy`) checks every node's REST API (`OPTIONS /primary`,
//! `GET /primary`, `OPTIONS /replica`) and routes PostgreSQL connections to the node
//! that answers 200. Through the primary ports a client reaches the leader, through
//! the replica port a replica; after the leader is killed, the primary ports route
//! writes to the new leader within a bounded time.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{TestCluster, SUPERUSER_PASSWORD};
use warden_testkit::haproxy::{Haproxy, Section, HAPROXY};

/// HAProxy with the three check styles of the guides (1 s checks, down after 2 failures).
fn start_haproxy(c: &TestCluster) -> Haproxy {
    let timing = "inter 1s fall 2 rise 1";
    Haproxy::start(
        c,
        &[
            Section::new("primary", "OPTIONS /primary", timing),
            Section::new("primary_get", "GET /primary", timing),
            Section::new("replicas", "OPTIONS /replica", timing).balance("roundrobin"),
        ],
    )
}

/// What a connection through `port` reached: (`pg_is_in_recovery()`, `inet_server_port()`).
async fn probe(port: u16) -> Result<(bool, u16), String> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"
    );
    let fut = async {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client
            .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
            .await
            .map_err(|e| format!("query: {e}"))?;
        let port: i32 = row.get(1);
        Ok((row.get::<_, bool>(0), port as u16))
    };
    tokio::time::timeout(Duration::from_secs(4), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Writes through `port`; Ok(server port) when the write committed.
async fn write_through(port: u16, value: i32) -> Result<u16, String> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"
    );
    let fut = async {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS hap(v int); INSERT INTO hap VALUES ({value})"
            ))
            .await
            .map_err(|e| format!("write: {e:?}"))?;
        let row = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .map_err(|e| format!("query: {e}"))?;
        Ok(row.get::<_, i32>(0) as u16)
    };
    tokio::time::timeout(Duration::from_secs(4), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Polls `port` until it reaches the writable node listening on `want_port`; panics
/// on timeout, or at once if it ever routes to a node in recovery.
async fn wait_routes_to_primary(port: u16, want_port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(port).await {
            Ok((false, p)) if p == want_port => return,
            Ok((true, p)) => panic!("{what}: HAProxy routed to {p}, a node in recovery"),
            Ok((false, p)) => format!("reached writable node on port {p}"),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("{what}: no route to the leader (port {want_port}) within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_to_the_leader_and_follows_a_failover() {
    assert!(
        std::path::Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing: apt-get install haproxy"
    );
    let started = Instant::now();
    let mut c = TestCluster::new("haproxy", 3, &[]);
    c.start_all();
    let leader = wait_for_leader(&c, Duration::from_secs(60)).await;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &i in &replicas {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    let hap = start_haproxy(&c);
    // HAProxy starts every server UP; wait until the checks have marked the wrong
    // ones down (the health answers themselves are what is under test here).
    for &r in &replicas {
        hap.wait_down("primary", &c.nodes[r].name, Duration::from_secs(10))
            .await;
        hap.wait_down("primary_get", &c.nodes[r].name, Duration::from_secs(10))
            .await;
    }
    hap.wait_down("replicas", &c.nodes[leader].name, Duration::from_secs(10))
        .await;
    let leader_port = c.nodes[leader].pg_port;
    let replica_ports: Vec<u16> = replicas.iter().map(|&i| c.nodes[i].pg_port).collect();

    // Both primary sections route to the leader only.
    for (port, what) in [
        (hap.port("primary"), "OPTIONS /primary"),
        (hap.port("primary_get"), "GET /primary"),
    ] {
        wait_routes_to_primary(port, leader_port, what, Duration::from_secs(10)).await;
        for _ in 0..4 {
            let got = probe(port).await;
            assert_eq!(got, Ok((false, leader_port)), "{what}");
        }
    }
    let written = write_through(hap.port("primary"), 1).await;
    assert_eq!(written, Ok(leader_port));

    // The replica section balances over both replicas and never reaches the leader.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < replica_ports.len() {
        match probe(hap.port("replicas")).await {
            Ok((true, p)) => {
                assert!(replica_ports.contains(&p), "replica port {p} unknown");
                seen.insert(p);
            }
            Ok((false, p)) => panic!("/replica routed to the writable node on port {p}"),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "replica section reached only {seen:?} of {replica_ports:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill the leader (agent and postmaster); the primary ports must follow the new one.
    let killed_at = Instant::now();
    c.kill_node(leader);
    let new = wait_for_leader(&c, Duration::from_secs(45)).await;
    assert_ne!(new, leader);
    let elected_after = killed_at.elapsed();
    let new_port = c.nodes[new].pg_port;
    let elected = Instant::now();
    // inter 1s, rise 1: HAProxy sees /primary = 200 within about a second of the
    // agent publishing its new role; 10 s leaves room for a slow CI machine.
    wait_routes_to_primary(
        hap.port("primary"),
        new_port,
        "OPTIONS /primary after failover",
        Duration::from_secs(10),
    )
    .await;
    wait_routes_to_primary(
        hap.port("primary_get"),
        new_port,
        "GET /primary after failover",
        Duration::from_secs(10),
    )
    .await;
    let routed_after = elected.elapsed();
    let mut committed = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while committed.is_none() {
        match write_through(hap.port("primary"), 2).await {
            Ok(p) => committed = Some(p),
            Err(e) => assert!(
                Instant::now() < deadline,
                "write through HAProxy failed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, Some(new_port));
    assert_eq!(
        query_one(&c, new, "SELECT count(*) FROM hap")
            .await
            .as_deref(),
        Some("2"),
        "the row written through HAProxy before the failover must survive"
    );
    // HAProxy itself saw the old leader go down.
    let log = hap.log_text();
    assert!(
        log.contains(&format!("Server primary/{} is DOWN", c.nodes[leader].name)),
        "haproxy log does not show the old leader marked down"
    );
    eprintln!(
        "new leader elected {elected_after:?} after the kill; routed {routed_after:?} later; test took {:?}",
        started.elapsed()
    );
}
