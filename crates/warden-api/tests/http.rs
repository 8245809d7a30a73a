//! Real HTTP on 127.0.0.1 (ephemeral port), spoken with raw TCP sockets.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_api::{monotonic_ms, StatusHandle, DEFAULT_SERVER_HEADER};

#[derive(Debug)]
struct Resp {
    status_line: String,
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn parse_head(head: &[u8]) -> (String, u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status_line, code, headers)
}

/// Sends raw bytes on a fresh connection and reads until the server closes it.
async fn raw(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if req.is_empty() {
        s.shutdown().await.unwrap(); // connect, send nothing, hang up
    } else {
        s.write_all(req).await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection");
    out
}

fn split_response(raw: &[u8]) -> Resp {
    let pos = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    let (status_line, code, headers) = parse_head(&raw[..pos]);
    Resp {
        status_line,
        code,
        headers,
        body: raw[pos + 4..].to_vec(),
    }
}

/// One request with `Connection: close`.
async fn request(addr: SocketAddr, method: &str, target: &str) -> Resp {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    split_response(&raw(addr, req.as_bytes()).await)
}

/// Reads one response (Content-Length framed) from a kept-alive connection.
async fn read_one(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status_line, code, headers) = parse_head(&buf[..pos]);
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < pos + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[pos + 4..pos + 4 + len].to_vec();
            buf.drain(..pos + 4 + len);
            return Resp {
                status_line,
                code,
                headers,
                body,
            };
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn primary_now() -> StatusHandle {
    StatusHandle::new(primary(monotonic_ms()))
}

#[tokio::test]
async fn health_methods_on_primary_and_replica() {
    let status = primary_now();
    let srv = Server::start(status.clone()).await;
    let a = srv.addr;

    for (method, target, want) in [
        ("GET", "/primary", 200),
        ("HEAD", "/primary", 200),
        ("OPTIONS", "/primary", 200),
        ("GET", "/", 200),
        ("GET", "/replica", 503),
        ("HEAD", "/replica", 503),
        ("OPTIONS", "/replica", 503),
        ("GET", "/replica?lag=1MB", 503),
        ("GET", "/read-only", 200),
        ("GET", "/whatever", 503),
        ("HEAD", "/patroni", 503),
        ("OPTIONS", "/readiness", 503),
        ("HEAD", "/liveness", 503),
    ] {
        let r = request(a, method, target).await;
        assert_eq!(r.code, want, "{method} {target}: {}", r.status_line);
        if method == "GET" {
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("server"), Some(DEFAULT_SERVER_HEADER));
            assert!(r.header("date").is_some());
            assert_eq!(r.json()["role"], "primary", "{target}");
        } else {
            // Patroni's bare status line: no headers, no body.
            assert!(r.body.is_empty(), "{method} {target} has a body");
            assert!(r.headers.is_empty(), "{method} {target}: {:?}", r.headers);
            assert!(r.status_line.starts_with("HTTP/1.0 "), "{}", r.status_line);
        }
    }

    // The agent publishes a new snapshot: now a replica.
    status.publish(replica(monotonic_ms(), 0));
    assert_eq!(request(a, "GET", "/replica").await.code, 200);
    assert_eq!(request(a, "HEAD", "/replica").await.code, 200);
    assert_eq!(request(a, "OPTIONS", "/replica").await.code, 200);
    assert_eq!(request(a, "OPTIONS", "/primary").await.code, 503);
    assert_eq!(request(a, "GET", "/primary").await.code, 503);
    srv.stop().await;
}

#[tokio::test]
async fn patroni_liveness_readiness() {
    let srv = Server::start(primary_now()).await;
    let r = request(srv.addr, "GET", "/patroni").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["state"], "running");
    assert_eq!(v["role"], "primary");
    assert_eq!(v["xlog"]["location"], OPTIME);
    assert_eq!(v["patroni"]["scope"], "demo");
    assert_eq!(v["patroni"]["name"], "pg1");
    // First path segment routing: /patroni/anything is still /patroni.
    assert_eq!(request(srv.addr, "GET", "/patroni/x?y=1").await.code, 200);

    let r = request(srv.addr, "GET", "/liveness").await;
    assert_eq!(r.code, 200);
    assert!(r.body.is_empty());
    assert!(r.headers.is_empty());
    let r = request(srv.addr, "GET", "/readiness").await;
    assert_eq!(r.code, 200);
    assert!(r.body.is_empty());
    assert!(r.headers.is_empty());
    srv.stop().await;

    // Overdue HA loop on a primary → liveness 503.
    let mut s = primary(monotonic_ms());
    s.next_cycle_due_ms = 0;
    s.ttl = 0;
    let srv = Server::start(StatusHandle::new(s)).await;
    assert_eq!(request(srv.addr, "GET", "/liveness").await.code, 503);
    srv.stop().await;
}

#[tokio::test]
async fn cluster_history_config() {
    let status = primary_now();
    let srv = Server::start(status.clone()).await;
    let r = request(srv.addr, "GET", "/cluster").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["scope"], "demo");
    assert!(v.get("pause").is_none());
    let members = v["members"].as_array().unwrap();
    let names: Vec<_> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
    assert_eq!(
        members[0],
        json!({"name": "pg1", "role": "leader", "state": "running",
               "api_url": "http://10.0.0.1:8008/patroni", "host": "10.0.0.1", "port": 5432,
               "timeline": 5, "tags": {"clonefrom": true}})
    );
    assert_eq!(
        members[1],
        json!({"name": "pg2", "role": "replica", "state": "streaming",
               "api_url": "http://10.0.0.2:8008/patroni", "host": "10.0.0.2", "port": 5433,
               "timeline": 5,
               "receive_lag": 0, "receive_lsn": "0/4000060",
               "replay_lag": 0, "replay_lsn": "0/4000060",
               "lag": 0, "lsn": "0/4000060"})
    );
    assert_eq!(members[2]["role"], "replica");
    assert_eq!(members[2]["state"], "running");
    assert_eq!(members[2]["port"], 5432);
    assert_eq!(members[2]["lsn"], "0/4000000");
    assert_eq!(members[2]["lag"], 0x60);
    assert_eq!(members[2]["receive_lsn"], "unknown");
    assert_eq!(members[2]["receive_lag"], "unknown");
    assert_eq!(members[2]["replay_lag"], "unknown");

    let r = request(srv.addr, "GET", "/history").await;
    assert_eq!(r.code, 200);
    assert_eq!(
        r.json(),
        json!([[
            1,
            25623960,
            "no recovery target specified",
            "2019-09-23T16:57:57+02:00",
            "pg1"
        ]])
    );
    let r = request(srv.addr, "GET", "/config").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.json(), json!({"ttl": 30, "loop_wait": 10}));

    // Paused, sync mode, scheduled switchover.
    let mut c = cluster_with(
        json!({"pause": true, "synchronous_mode": true}),
        Some(r#"{"leader":"pg1","sync_standby":"pg3"}"#),
    );
    c.failover = Some(warden_core::cluster::FailoverRequest {
        leader: Some("pg1".into()),
        member: Some("pg2".into()),
        scheduled_at: Some("2030-01-01T00:00:00+00:00".into()),
        version: 1,
    });
    c.history = None;
    let mut s = primary(monotonic_ms());
    s.cluster = Some(Arc::new(c));
    s.paused = true;
    status.publish(s);
    let v = request(srv.addr, "GET", "/cluster").await.json();
    assert_eq!(v["pause"], true);
    assert_eq!(v["members"][2]["role"], "sync_standby");
    assert_eq!(
        v["scheduled_switchover"],
        json!({"at": "2030-01-01T00:00:00+00:00", "from": "pg1", "to": "pg2"})
    );
    assert_eq!(request(srv.addr, "GET", "/history").await.json(), json!([]));

    // DCS view expired: /cluster and /history 503, /config 502.
    let mut s = primary(monotonic_ms());
    s.cluster_valid_until_ms = Some(0);
    status.publish(s);
    assert_eq!(request(srv.addr, "GET", "/cluster").await.code, 503);
    assert_eq!(request(srv.addr, "GET", "/history").await.code, 503);
    let r = request(srv.addr, "GET", "/config").await;
    assert_eq!(r.code, 502);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    srv.stop().await;
}

#[tokio::test]
async fn methods_and_paths_without_a_handler_are_501() {
    let srv = Server::start(primary_now()).await;
    for (method, path) in [
        ("TRACE", "/switchover"),
        ("get", "/switchover"),
        ("PUT", "/switchover"),
        ("PATCH", "/switchover"),
        ("POST", "/nothing"),
        ("POST", "/"),
        ("DELETE", "/config"),
        ("PUT", "/restart"),
    ] {
        let r = request(srv.addr, method, path).await;
        assert_eq!(r.code, 501, "{method} {path}");
        assert!(String::from_utf8_lossy(&r.body).contains("Unsupported method"));
    }
    // A handler exists: the body rules apply (no Content-Length → 411), and the
    // default Management answers 503.
    assert_eq!(request(srv.addr, "POST", "/switchover").await.code, 411);
    let body = r#"{"leader":"pg1","candidate":"pg2"}"#;
    let req = format!(
        "POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        split_response(&raw(srv.addr, req.as_bytes()).await).code,
        503
    );
    srv.stop().await;
}

#[tokio::test]
async fn malformed_requests_do_not_break_the_server() {
    let srv = Server::start(primary_now()).await;
    let a = srv.addr;

    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02garbage\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /replica?lag=%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /replica?tag_%FF%FE=%C3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /replica?lag=99999999999999999999999999999999999999999999TB HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET http://example.com/primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"",
    ];
    for g in garbage {
        let out = raw(a, g).await;
        if !out.is_empty() {
            let head = String::from_utf8_lossy(&out);
            assert!(head.starts_with("HTTP/1."), "{head}");
        }
    }
    let r = split_response(
        &raw(
            a,
            b"GET /replica?lag=%ZZ HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(r.code, 503); // unparsable lag = no limit; still not a replica
    let r = split_response(
        &raw(
            a,
            b"GET http://example.com/primary HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(r.code, 200);

    // 100 KB path.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let out = raw(a, long.as_bytes()).await;
    if !out.is_empty() {
        let code = split_response(&out).code;
        assert!((400..500).contains(&code), "long path answered {code}");
    }
    // 100 KB of headers.
    let big = format!(
        "GET /primary HTTP/1.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    let _ = raw(a, big.as_bytes()).await;

    // A client that connects and says nothing must not block others.
    let _idle = TcpStream::connect(a).await.unwrap();

    // Still serving.
    assert_eq!(request(a, "GET", "/primary").await.code, 200);
    assert_eq!(request(a, "OPTIONS", "/primary").await.code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn keep_alive_and_connection_close() {
    let srv = Server::start(primary_now()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r1 = read_one(&mut s, &mut buf).await;
    assert_eq!(r1.code, 200);
    assert_eq!(r1.json()["role"], "primary");
    s.write_all(b"HEAD /replica HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r2 = read_one(&mut s, &mut buf).await;
    assert_eq!(r2.code, 503);
    // Pipelined requests on the same connection.
    s.write_all(
        b"GET /patroni HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS /primary HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_one(&mut s, &mut buf).await.code, 200);
    assert_eq!(read_one(&mut s, &mut buf).await.code, 200);
    // Then Connection: close ends it.
    s.write_all(b"GET /leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r3 = read_one(&mut s, &mut buf).await;
    assert_eq!(r3.code, 200);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("connection not closed")
        .unwrap();
    assert_eq!(n, 0);

    // HTTP/1.0 without keep-alive: closed after the response (what HAProxy and Patroni do).
    let out = raw(srv.addr, b"OPTIONS /primary HTTP/1.0\r\n\r\n").await;
    assert_eq!(out, b"HTTP/1.0 200 OK\r\n\r\n");
    srv.stop().await;
}

#[tokio::test]
async fn later_requests_on_a_kept_alive_connection_keep_working() {
    // Only the first request of a connection is looked at before hyper: after a GET, a
    // HEAD/OPTIONS on the same connection is hyper's (HTTP/1.1, Content-Length: 0) and
    // the connection stays usable.
    let srv = Server::start(primary_now()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..50 {
        s.write_all(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s, &mut buf).await;
        assert_eq!(r.code, 200);
        assert!(r.status_line.starts_with("HTTP/1.1 200"));
        assert_eq!(r.json()["role"], "primary");
    }
    s.write_all(b"HEAD /primary HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_one(&mut s, &mut buf).await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    s.write_all(b"GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_one(&mut s, &mut buf).await.code, 200);
    s.write_all(b"GET /patroni HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_one(&mut s, &mut buf).await.json()["role"], "primary");
    srv.stop().await;
}

const BARE_200: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n";
const BARE_503: &[u8] = b"HTTP/1.0 503 Service Unavailable\r\n\r\n";

#[tokio::test]
async fn bare_status_lines_are_exact() {
    let status = primary_now();
    let srv = Server::start(status.clone()).await;
    let a = srv.addr;

    // No `Connection: close`: the server closes after the bare line anyway, whatever the
    // HTTP version asked for.
    for (req, want) in [
        (&b"HEAD /primary HTTP/1.1\r\nHost: x\r\n\r\n"[..], BARE_200),
        (b"OPTIONS /replica HTTP/1.1\r\nHost: x\r\n\r\n", BARE_503),
        (b"GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n", BARE_200),
        (b"GET /readiness HTTP/1.1\r\nHost: x\r\n\r\n", BARE_200),
        (
            b"GET /readiness?lag=1MB&mode=write HTTP/1.0\r\n\r\n",
            BARE_200,
        ),
        (b"GET /liveness/x?y=1 HTTP/1.0\r\n\r\n", BARE_200),
        (b"HEAD / HTTP/1.0\r\n\r\n", BARE_200),
        (
            b"HEAD /replica?lag=1MB HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            BARE_503,
        ),
        (b"HEAD /liveness HTTP/1.1\r\nHost: x\r\n\r\n", BARE_503),
        (b"OPTIONS /patroni HTTP/1.1\r\nHost: x\r\n\r\n", BARE_503),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", BARE_503),
        (
            b"HEAD http://example.com/primary HTTP/1.1\r\nHost: x\r\n\r\n",
            BARE_200,
        ),
        // Bare LF line ends and leading empty lines (both accepted by hyper too).
        (b"\r\nHEAD /primary HTTP/1.1\nHost: x\n\n", BARE_200),
        // A body is ignored (Python reads none for these methods).
        (
            b"HEAD /primary HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            BARE_200,
        ),
    ] {
        let out = raw(a, req).await;
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(want),
            "{}",
            String::from_utf8_lossy(req)
        );
    }

    // Tag filter and replica answers follow the snapshot.
    status.publish(replica(monotonic_ms(), 0));
    assert_eq!(raw(a, b"HEAD /replica HTTP/1.0\r\n\r\n").await, BARE_200);
    assert_eq!(
        raw(a, b"OPTIONS /replica?tag_nope=x HTTP/1.0\r\n\r\n").await,
        BARE_503
    );
    assert_eq!(raw(a, b"OPTIONS /primary HTTP/1.0\r\n\r\n").await, BARE_503);

    // An overdue HA loop: liveness 503.
    let mut s = primary(monotonic_ms());
    s.next_cycle_due_ms = 0;
    s.ttl = 0;
    status.publish(s);
    assert_eq!(
        raw(a, b"GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n").await,
        BARE_503
    );
    srv.stop().await;
}

#[tokio::test]
async fn full_responses_are_unchanged() {
    let srv = Server::start(primary_now()).await;
    let out = raw(
        srv.addr,
        b"GET /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = split_response(&out);
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("server"), Some(DEFAULT_SERVER_HEADER));
    assert!(r.header("date").is_some());
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.json()["role"], "primary");
    // Lower-case methods are not HEAD/OPTIONS/GET: 501 as before.
    let r = split_response(&raw(srv.addr, b"head /primary HTTP/1.0\r\n\r\n").await);
    assert_eq!(r.code, 501);
    srv.stop().await;
}

#[tokio::test]
async fn a_head_sent_in_pieces_gets_the_bare_line() {
    let srv = Server::start(primary_now()).await;
    for pieces in [
        &[
            &b"HE"[..],
            b"AD /pri",
            b"mary HTTP/1.1\r\nHo",
            b"st: x\r",
            b"\n",
            b"\r",
            b"\n",
        ][..],
        &[b"OPTIONS /replica HTTP/1.1\r\n", b"Host: x\r\n\r", b"\n"],
        &[b"GET /liveness HTTP/1.1\r\nHost: x\r\n", b"\r\n"],
        &[b"\r\n", b"\r\n", b"HEAD /primary HTTP/1.0\r\n", b"\r\n"],
    ] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        for p in pieces {
            s.write_all(p).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server did not close the connection")
            .unwrap();
        let want = if pieces[0].starts_with(b"OPTIONS") {
            BARE_503
        } else {
            BARE_200
        };
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
    }

    // A GET in pieces still reaches hyper intact (with keep-alive).
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    for p in [
        &b"GET /pat"[..],
        b"roni HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"\r\n",
    ] {
        s.write_all(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = Vec::new();
    assert_eq!(read_one(&mut s, &mut buf).await.json()["role"], "primary");
    s.write_all(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_one(&mut s, &mut buf).await.code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn malformed_or_huge_heads_go_to_hyper() {
    let srv = Server::start(primary_now()).await;
    let a = srv.addr;
    // hyper's 400 for a bad framing or a broken header line, as for any other method.
    for req in [
        &b"HEAD /primary HTTP/1.1\r\nContent-Length: nope\r\n\r\n"[..],
        b"HEAD /primary HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"OPTIONS /primary HTTP/1.1\r\nBroken header\r\n\r\n",
        b"GET /liveness HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let out = raw(a, req).await;
        let head = String::from_utf8_lossy(&out);
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "{}: {head}",
            String::from_utf8_lossy(req)
        );
    }
    // Not HTTP/1.x: hyper decides (no bare line).
    let out = raw(a, b"HEAD /primary HTTP/2.0\r\n\r\n").await;
    assert!(!out.starts_with(b"HTTP/1.0 200"), "{out:?}");
    // A head cut short by EOF: hyper's answer, no bare line.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"HEAD /primary HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection");
    assert!(!out.starts_with(b"HTTP/1.0"), "{out:?}");

    // 100 KB heads: handled by hyper's error path, no panic, the server keeps serving.
    for req in [
        format!(
            "HEAD /primary HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(100 * 1024)
        ),
        format!("HEAD /{} HTTP/1.1\r\n\r\n", "a".repeat(100 * 1024)),
        format!(
            "HEAD /primary HTTP/1.1\r\nX-Big: {}",
            "b".repeat(100 * 1024)
        ),
        format!(
            "GET /liveness HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(100 * 1024)
        ),
    ] {
        let out = raw(a, req.as_bytes()).await;
        if !out.is_empty() {
            let code = split_response(&out).code;
            assert!((400..500).contains(&code), "huge head answered {code}");
        }
    }
    // More headers than hyper accepts.
    let many: String = (0..150).map(|i| format!("X-{i}: y\r\n")).collect();
    let out = raw(
        a,
        format!("HEAD /primary HTTP/1.1\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(!out.starts_with(b"HTTP/1.0"), "{out:?}");

    assert_eq!(raw(a, b"HEAD /primary HTTP/1.0\r\n\r\n").await, BARE_200);
    assert_eq!(request(a, "GET", "/primary").await.code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_a_connection_that_sent_nothing() {
    let srv = Server::start(primary_now()).await;
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    let mut half = TcpStream::connect(srv.addr).await.unwrap();
    half.write_all(b"HEAD /primary HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    srv.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited for idle clients"
    );
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut out))
        .await
        .expect("idle connection not closed");
    let _ = tokio::time::timeout(Duration::from_secs(5), half.read_to_end(&mut out))
        .await
        .expect("half-sent connection not closed");
}

#[tokio::test]
async fn shutdown_with_an_open_idle_connection() {
    let srv = Server::start(primary_now()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_one(&mut s, &mut buf).await.code, 200);
    let addr = srv.addr;
    srv.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn metrics_endpoint() {
    let srv = Server::start(primary_now()).await;
    let r = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(String::from_utf8_lossy(&r.body).contains("patroni_"));
    srv.stop().await;
}
