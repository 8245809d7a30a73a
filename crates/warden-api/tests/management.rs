//! The unsafe endpoints over real HTTP(S): access control, body rules, validation
//! messages, and what reaches the agent's `Management`.

mod common;

use common::*;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_api::management::{
    FailsafeFuture, FailsafeOutcome, Management, MgmtFuture, MgmtResponse, RestartRequest,
    SwitchoverKind, SwitchoverRequest,
};
use warden_api::{
    load_server_config, monotonic_ms, serve_with, ApiOptions, StatusHandle, TlsOptions,
    VerifyClient,
};

// ---------------------------------------------------------------------------------------
// A fake agent.

#[derive(Clone, Debug, PartialEq)]
enum Call {
    Switchover(SwitchoverRequest),
    DeleteSwitchover,
    Restart(RestartRequest),
    DeleteRestart,
    Reinitialize(bool, bool),
    Reload,
    Patch(Map<String, Value>),
    Put(Value),
    Failsafe(Map<String, Value>),
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn answer(r: MgmtResponse) -> MgmtFuture {
        Box::pin(async move { r })
    }
}

/// Texts the fake answers with (the property test accepts these).
const FAKE_TEXTS: &[&str] = &[
    "fake switchover",
    "fake delete switchover",
    "fake restart",
    "fake delete restart",
    "fake reinitialize",
    "reload scheduled",
    "shutdown scheduled",
    "OK",
    "Accepted",
];

impl Management for Fake {
    fn switchover(&self, req: SwitchoverRequest) -> MgmtFuture {
        self.record(Call::Switchover(req));
        Fake::answer(MgmtResponse::text(200, "fake switchover"))
    }
    fn delete_switchover(&self) -> MgmtFuture {
        self.record(Call::DeleteSwitchover);
        Fake::answer(MgmtResponse::text(200, "fake delete switchover"))
    }
    fn restart(&self, req: RestartRequest) -> MgmtFuture {
        self.record(Call::Restart(req));
        Fake::answer(MgmtResponse::text(202, "fake restart"))
    }
    fn delete_restart(&self) -> MgmtFuture {
        self.record(Call::DeleteRestart);
        Fake::answer(MgmtResponse::text(404, "fake delete restart"))
    }
    fn reinitialize(&self, force: bool, from_leader: bool) -> MgmtFuture {
        self.record(Call::Reinitialize(force, from_leader));
        Fake::answer(MgmtResponse::text(200, "fake reinitialize"))
    }
    fn reload(&self) -> MgmtFuture {
        self.record(Call::Reload);
        Fake::answer(MgmtResponse::text(202, "reload scheduled"))
    }
    fn patch_config(&self, patch: Map<String, Value>) -> MgmtFuture {
        self.record(Call::Patch(patch.clone()));
        Fake::answer(MgmtResponse::json(200, json!({"patched": patch})))
    }
    fn put_config(&self, config: Value) -> MgmtFuture {
        self.record(Call::Put(config.clone()));
        Fake::answer(MgmtResponse::json(200, config))
    }
    fn failsafe(&self, post: Map<String, Value>) -> FailsafeFuture {
        self.record(Call::Failsafe(post));
        Box::pin(async { FailsafeOutcome::Accepted { lsn: Some(1234) } })
    }
}

// ---------------------------------------------------------------------------------------
// Server and client helpers.

#[derive(Debug)]
struct Resp {
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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let pos = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..pos]);
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        code,
        headers,
        body: raw[pos + 4..].to_vec(),
    })
}

/// Writes `req` and reads until the server closes the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &[u8]) -> Vec<u8> {
    let _ = s.write_all(req).await;
    let _ = s.flush().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection");
    out
}

/// Builds a request with `Connection: close`; `body` adds a matching Content-Length.
fn build(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    if let Some(b) = body {
        r.push_str(b);
    }
    r.into_bytes()
}

async fn send_raw(addr: SocketAddr, req: &[u8]) -> Resp {
    let s = TcpStream::connect(addr).await.unwrap();
    let out = exchange(s, req).await;
    parse_response(&out).unwrap_or_else(|| panic!("no HTTP response: {out:?}"))
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Resp {
    send_raw(addr, &build(method, path, &[], body)).await
}

fn primary_status() -> StatusHandle {
    StatusHandle::new(primary(monotonic_ms()))
}

fn paused_status() -> StatusHandle {
    let mut s = primary(monotonic_ms());
    s.paused = true;
    StatusHandle::new(s)
}

async fn start_fake(status: StatusHandle) -> (Server, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let opts = ApiOptions {
        management: fake.clone(),
        ..ApiOptions::default()
    };
    (Server::start_with(status, opts).await, fake)
}

/// Asserts a plain-text answer (Patroni's `write_response`: `text/html`, raw body).
fn assert_text(r: &Resp, code: u16, text: &str) {
    assert_eq!((r.code, r.text().as_str()), (code, text));
    assert_eq!(r.header("content-type"), Some("text/html"));
}

// ---------------------------------------------------------------------------------------
// Switchover / failover.

#[tokio::test]
async fn switchover_and_failover_validation() {
    let status = primary_status();
    let (srv, fake) = start_fake(status.clone()).await;
    let a = srv.addr;

    // Step 1: body rules.
    for path in ["/switchover", "/failover"] {
        let r = send(a, "POST", path, None).await;
        assert_eq!(r.code, 411, "{path}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        for bad in ["", "not json", "[]", "{}", "\"x\"", "{\"a\":", "null"] {
            assert_eq!(
                send(a, "POST", path, Some(bad)).await.code,
                400,
                "{path} {bad:?}"
            );
        }
    }
    // Invalid UTF-8.
    let r = send_raw(
        a,
        b"POST /failover HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\xff\xfe{",
    )
    .await;
    assert_eq!(r.code, 400);

    let cases: &[(&str, Value, u16, &str)] = &[
        ("/failover", json!({"foo": "bar"}), 400, "Failover could be performed only to a specific candidate"),
        ("/failover", json!({"leader": "pg1"}), 400, "Failover could be performed only to a specific candidate"),
        ("/switchover", json!({"candidate": "pg2"}), 400, "Switchover could be performed only from a specific leader"),
        ("/failover", json!({"candidate": "pg2", "scheduled_at": "2030-01-01T00:00+00"}), 400, "Failover can't be scheduled"),
        ("/switchover", json!({"leader": "pg1", "candidate": "pg1"}), 400, "Switchover target and source are the same"),
        ("/failover", json!({"leader": "pg2", "candidate": "pg2"}), 400, "Switchover target and source are the same"),
        ("/switchover", json!({"leader": "pg1", "scheduled_at": "2030-01-01T10:00:00"}), 400, "Timezone information is mandatory for the scheduled switchover"),
        ("/switchover", json!({"leader": "pg1", "scheduled_at": "2001-01-01T10:00:00+00:00"}), 422, "Cannot schedule switchover in the past"),
        ("/switchover", json!({"leader": "pg1", "scheduled_at": "tomorrow-ish"}), 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        ("/switchover", json!({"leader": "pg1", "scheduled_at": 12}), 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
    ];
    for (path, body, code, text) in cases {
        let r = send(a, "POST", path, Some(&body.to_string())).await;
        assert_text(&r, *code, text);
    }
    assert!(
        fake.take().is_empty(),
        "rejected requests reached the agent"
    );

    // Good requests reach the agent, normalised.
    let r = send(
        a,
        "POST",
        "/switchover",
        Some(r#"{"leader": "pg1", "member": "pg2", "scheduled_at": "2030-01-01 10:00:00.123456+00:00"}"#),
    )
    .await;
    assert_text(&r, 200, "fake switchover");
    let r = send(a, "POST", "/failover", Some(r#"{"candidate": "pg3"}"#)).await;
    assert_text(&r, 200, "fake switchover");
    let r = send(
        a,
        "POST",
        "/failover",
        Some(r#"{"leader": "pg1", "candidate": "pg3"}"#),
    )
    .await;
    assert_eq!(r.code, 200);
    let r = send(
        a,
        "POST",
        "/switchover",
        Some(r#"{"leader": "pg1", "scheduled_at": "2030-09-24T12:00+00"}"#),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(
        fake.take(),
        vec![
            Call::Switchover(SwitchoverRequest {
                kind: SwitchoverKind::Switchover,
                leader: Some("pg1".into()),
                candidate: Some("pg2".into()),
                scheduled_at: Some("2030-01-01T10:00:00.123456+00:00".into()),
            }),
            Call::Switchover(SwitchoverRequest {
                kind: SwitchoverKind::Failover,
                leader: None,
                candidate: Some("pg3".into()),
                scheduled_at: None,
            }),
            Call::Switchover(SwitchoverRequest {
                kind: SwitchoverKind::Switchover,
                leader: Some("pg1".into()),
                candidate: Some("pg3".into()),
                scheduled_at: None,
            }),
            Call::Switchover(SwitchoverRequest {
                kind: SwitchoverKind::Switchover,
                leader: Some("pg1".into()),
                candidate: None,
                scheduled_at: Some("2030-09-24T12:00:00+00:00".into()),
            }),
        ]
    );

    // Paused cluster.
    let mut s = primary(monotonic_ms());
    s.paused = true;
    status.publish(s);
    let r = send(
        a,
        "POST",
        "/switchover",
        Some(r#"{"leader": "pg1", "candidate": "pg2", "scheduled_at": "2030-01-01T00:00+00"}"#),
    )
    .await;
    assert_text(&r, 400, "Can't schedule switchover in the paused state");
    let r = send(a, "POST", "/switchover", Some(r#"{"leader": "pg1"}"#)).await;
    assert_text(
        &r,
        400,
        "Switchover is possible only to a specific candidate in a paused state",
    );
    assert!(fake.take().is_empty());
    // With a candidate it is allowed in pause.
    let r = send(
        a,
        "POST",
        "/switchover",
        Some(r#"{"leader": "pg1", "candidate": "pg2"}"#),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(fake.take().len(), 1);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// Restart.

#[tokio::test]
async fn restart_validation() {
    let (srv, fake) = start_fake(primary_status()).await;
    let a = srv.addr;

    // Body optional: none, Content-Length 0, {} → no filters.
    assert_text(
        &send(a, "POST", "/restart", None).await,
        202,
        "fake restart",
    );
    assert_text(
        &send(a, "POST", "/restart", Some("")).await,
        202,
        "fake restart",
    );
    assert_text(
        &send(a, "POST", "/restart", Some("{}")).await,
        202,
        "fake restart",
    );
    assert_eq!(
        fake.take(),
        vec![Call::Restart(RestartRequest::default()); 3]
    );
    for bad in ["nope", "[]", "1", "{\"a\""] {
        assert_eq!(
            send(a, "POST", "/restart", Some(bad)).await.code,
            400,
            "{bad}"
        );
    }

    let cases: &[(Value, u16, &str)] = &[
        (json!({"role": "leader"}), 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        (json!({"role": 1}), 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        (json!({"postgres_version": "9.6"}), 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"),
        (json!({"postgres_version": "fifteen"}), 400, "Invalid PostgreSQL version: fifteen"),
        (json!({"postgres_version": "1.2.3.4"}), 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 1.2.3.4"),
        (json!({"timeout": 0}), 400, "Timeout should be a positive number of seconds"),
        (json!({"timeout": "-5s"}), 400, "Timeout should be a positive number of seconds"),
        (json!({"timeout": "soon"}), 400, "Timeout should be a positive number of seconds"),
        (json!({"timeout": true}), 400, "Timeout should be a positive number of seconds"),
        (json!({"bogus": 1}), 400, "Unknown filter for the scheduled restart: bogus"),
        (json!({"schedule": "2030-01-01T00:00:00"}), 400, "Timezone information is mandatory for the scheduled restart"),
        (json!({"schedule": "2001-01-01T00:00:00+00:00"}), 422, "Cannot schedule restart in the past"),
        (json!({"schedule": "whenever"}), 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
    ];
    for (body, code, text) in cases {
        let r = send(a, "POST", "/restart", Some(&body.to_string())).await;
        assert_text(&r, *code, text);
    }
    assert!(fake.take().is_empty());

    let r = send(
        a,
        "POST",
        "/restart",
        Some(r#"{"schedule": "2030-01-01T10:00:00+02:00", "role": "master", "postgres_version": "15.4", "timeout": "2min", "restart_pending": "True"}"#),
    )
    .await;
    assert_eq!(r.code, 202);
    let r = send(
        a,
        "POST",
        "/restart",
        Some(r#"{"restart_pending": "True"}"#),
    )
    .await;
    assert_eq!(r.code, 202);
    let r = send(
        a,
        "POST",
        "/restart",
        Some(r#"{"restart_pending": false, "role": "replica", "timeout": 30}"#),
    )
    .await;
    assert_eq!(r.code, 202);
    assert_eq!(
        fake.take(),
        vec![
            Call::Restart(RestartRequest {
                schedule: Some("2030-01-01T10:00:00+02:00".into()),
                role: Some("primary".into()),
                postgres_version: Some("15.4".into()),
                timeout: Some(120),
                restart_pending: Some(true),
            }),
            Call::Restart(RestartRequest {
                restart_pending: Some(true),
                ..RestartRequest::default()
            }),
            Call::Restart(RestartRequest {
                role: Some("replica".into()),
                timeout: Some(30),
                restart_pending: Some(false),
                ..RestartRequest::default()
            }),
        ]
    );
    srv.stop().await;

    // Paused: a schedule is refused with 500 before any other check.
    let (srv, fake) = start_fake(paused_status()).await;
    for body in [
        r#"{"schedule": "2030-01-01T10:00:00+00:00"}"#,
        r#"{"role": "bad", "schedule": "garbage"}"#,
    ] {
        let r = send(srv.addr, "POST", "/restart", Some(body)).await;
        assert_text(&r, 500, "Can't schedule restart in the paused state");
    }
    // An immediate restart is fine in pause.
    assert_eq!(
        send(srv.addr, "POST", "/restart", Some("{}")).await.code,
        202
    );
    assert_eq!(fake.take().len(), 1);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// The other endpoints.

#[tokio::test]
async fn other_endpoints_reach_the_agent() {
    let status = primary_status();
    let (srv, fake) = start_fake(status.clone()).await;
    let a = srv.addr;

    assert_text(
        &send(a, "DELETE", "/restart", None).await,
        404,
        "fake delete restart",
    );
    assert_text(
        &send(a, "DELETE", "/switchover", None).await,
        200,
        "fake delete switchover",
    );
    assert_text(
        &send(a, "POST", "/reload", None).await,
        202,
        "reload scheduled",
    );
    assert_text(
        &send(a, "POST", "/reinitialize", None).await,
        200,
        "fake reinitialize",
    );
    let r = send(
        a,
        "POST",
        "/reinitialize",
        Some(r#"{"force": true, "from_leader": "true"}"#),
    )
    .await;
    assert_eq!(r.code, 200);
    let r = send(a, "POST", "/reinitialize", Some(r#"{"force": "nope"}"#)).await;
    assert_eq!(r.code, 200);
    assert_eq!(
        send(a, "POST", "/reinitialize", Some("{bad")).await.code,
        400
    );
    assert_eq!(
        fake.take(),
        vec![
            Call::DeleteRestart,
            Call::DeleteSwitchover,
            Call::Reload,
            Call::Reinitialize(false, false),
            Call::Reinitialize(true, true),
            Call::Reinitialize(false, false),
        ]
    );

    // PATCH / PUT /config: a non-empty JSON object is required.
    for method in ["PATCH", "PUT"] {
        assert_eq!(send(a, method, "/config", None).await.code, 411, "{method}");
        for bad in ["[1]", "{}", "1", "x", ""] {
            assert_eq!(
                send(a, method, "/config", Some(bad)).await.code,
                400,
                "{method} {bad}"
            );
        }
    }
    let r = send(
        a,
        "PATCH",
        "/config",
        Some(r#"{"ttl": 20, "postgresql": {"parameters": {"x": null}}}"#),
    )
    .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["patched"]["ttl"], 20);
    let r = send(a, "PUT", "/config", Some(r#"{"ttl": 30}"#)).await;
    assert_eq!((r.code, r.json()), (200, json!({"ttl": 30})));
    let calls = fake.take();
    assert_eq!(calls.len(), 2);
    assert!(matches!(&calls[0], Call::Patch(p) if p["postgresql"]["parameters"]["x"].is_null()));
    assert_eq!(calls[1], Call::Put(json!({"ttl": 30})));

    // sigterm: accepted, nothing done.
    assert_text(
        &send(a, "POST", "/sigterm", None).await,
        202,
        "shutdown scheduled",
    );
    // mpp (unprotected) / citus: a JSON body is required, then OK.
    for path in ["/mpp", "/citus"] {
        assert_eq!(send(a, "POST", path, None).await.code, 411);
        assert_eq!(send(a, "POST", path, Some("{}")).await.code, 400);
        assert_text(
            &send(a, "POST", path, Some(r#"{"type": "before_demote"}"#)).await,
            200,
            "OK",
        );
    }

    // failsafe: 502 unless the published config has failsafe_mode.
    let post = r#"{"name": "pg1", "conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni", "slots": {}}"#;
    let r = send(a, "POST", "/failsafe", Some(post)).await;
    assert_eq!(r.code, 502);
    let mut s = primary(monotonic_ms());
    s.cluster = Some(Arc::new(cluster_with(json!({"failsafe_mode": true}), None)));
    status.publish(s.clone());
    assert_eq!(send(a, "POST", "/failsafe", None).await.code, 411);
    let r = send(a, "POST", "/failsafe", Some(post)).await;
    assert_text(&r, 200, "Accepted");
    assert_eq!(r.header("lsn"), Some("1234"));
    assert!(matches!(&fake.take()[..], [Call::Failsafe(p)] if p["name"] == "pg1"));

    // Unknown unsafe paths.
    for (m, p) in [
        ("POST", "/nothing"),
        ("PUT", "/reload"),
        ("DELETE", "/config"),
    ] {
        assert_eq!(send(a, m, p, Some("{}")).await.code, 501, "{m} {p}");
    }
    assert!(fake.take().is_empty());
    srv.stop().await;

    // The default Management refuses, and does not implement failsafe.
    let srv = Server::start_with(StatusHandle::new(s), ApiOptions::default()).await;
    assert_eq!(send(srv.addr, "POST", "/reload", None).await.code, 503);
    assert_eq!(
        send(srv.addr, "POST", "/failsafe", Some(post)).await.code,
        501
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// Access control.

const GOOD_AUTH: &str = "Basic dXNlcm5hbWU6cGFzc3dvcmQ="; // username:password

#[tokio::test]
async fn basic_auth() {
    let fake = Arc::new(Fake::default());
    let opts = ApiOptions {
        management: fake.clone(),
        auth: Some(("username".into(), "password".into())),
        ..ApiOptions::default()
    };
    assert!(!format!("{opts:?}").contains("password\""));
    let srv = Server::start_with(primary_status(), opts).await;
    let a = srv.addr;

    let r = send(a, "POST", "/reload", None).await;
    assert_text(&r, 401, "no auth header received");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Patroni\"")
    );
    for wrong in [
        "Basic dXNlcm5hbWU6d3Jvbmc=",
        "basic dXNlcm5hbWU6cGFzc3dvcmQ=",
        "Bearer x",
        "Basic",
        "",
    ] {
        let r = send_raw(
            a,
            &build("POST", "/reload", &[("Authorization", wrong)], None),
        )
        .await;
        assert_text(&r, 401, "not authenticated");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Patroni\"")
        );
        assert!(!r.text().contains("password") && !r.text().contains("dXNl"));
    }
    let r = send_raw(
        a,
        &build("POST", "/reload", &[("Authorization", GOOD_AUTH)], None),
    )
    .await;
    assert_text(&r, 202, "reload scheduled");
    // Auth comes before the body rules.
    let r = send(a, "POST", "/switchover", None).await;
    assert_eq!(r.code, 401);
    let r = send_raw(
        a,
        &build("POST", "/switchover", &[("Authorization", GOOD_AUTH)], None),
    )
    .await;
    assert_eq!(r.code, 411);
    // Every protected endpoint; mpp is not protected.
    for (m, p) in [
        ("POST", "/restart"),
        ("DELETE", "/restart"),
        ("DELETE", "/switchover"),
        ("POST", "/failover"),
        ("POST", "/reinitialize"),
        ("PATCH", "/config"),
        ("PUT", "/config"),
        ("POST", "/sigterm"),
        ("POST", "/failsafe"),
        ("POST", "/citus"),
    ] {
        assert_eq!(
            send(a, m, p, Some(r#"{"x": 1}"#)).await.code,
            401,
            "{m} {p}"
        );
    }
    assert_eq!(send(a, "POST", "/mpp", Some(r#"{"x": 1}"#)).await.code, 200);
    // GETs never need auth.
    for p in ["/patroni", "/config", "/cluster", "/primary", "/history"] {
        assert_eq!(send(a, "GET", p, None).await.code, 200, "{p}");
    }
    assert_eq!(fake.take(), vec![Call::Reload]);
    srv.stop().await;
}

#[tokio::test]
async fn allowlist() {
    async fn start(
        status: StatusHandle,
        allowlist: &[&str],
        members: bool,
        auth: bool,
    ) -> (Server, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let opts = ApiOptions {
            management: fake.clone(),
            allowlist: allowlist.iter().map(|s| s.to_string()).collect(),
            allowlist_include_members: members,
            auth: auth.then(|| ("username".into(), "password".into())),
            ..ApiOptions::default()
        };
        (Server::start_with(status, opts).await, fake)
    }

    // Not listed: 403 before anything else (auth, body rules); GETs unaffected.
    let (srv, fake) = start(primary_status(), &["10.0.0.0/8"], false, true).await;
    assert_text(
        &send(srv.addr, "POST", "/reload", None).await,
        403,
        "Access is denied",
    );
    assert_text(
        &send(srv.addr, "POST", "/switchover", None).await,
        403,
        "Access is denied",
    );
    assert_eq!(send(srv.addr, "GET", "/patroni", None).await.code, 200);
    assert_eq!(
        send(srv.addr, "POST", "/mpp", Some(r#"{"a": 1}"#))
            .await
            .code,
        200
    );
    assert!(fake.take().is_empty());
    srv.stop().await;

    for list in [
        &["127.0.0.1/32"][..],
        &["10.0.0.0/8", "127.0.0.1"],
        &["localhost"],
    ] {
        let (srv, fake) = start(primary_status(), list, false, false).await;
        assert_eq!(
            send(srv.addr, "POST", "/reload", None).await.code,
            202,
            "{list:?}"
        );
        assert_eq!(fake.take(), vec![Call::Reload]);
        srv.stop().await;
    }
    // Listed, then auth still applies.
    let (srv, _) = start(primary_status(), &["127.0.0.0/8"], false, true).await;
    assert_eq!(send(srv.addr, "POST", "/reload", None).await.code, 401);
    srv.stop().await;
    // Nothing in the list resolves: nobody passes (fail closed).
    let (srv, _) = start(primary_status(), &["not a network/99"], false, false).await;
    assert_eq!(send(srv.addr, "POST", "/reload", None).await.code, 403);
    srv.stop().await;

    // Members: the fixture's members are on 10.0.0.x → denied; with a member on
    // 127.0.0.1 → allowed.
    let status = primary_status();
    let (srv, fake) = start(status.clone(), &[], true, false).await;
    assert_text(
        &send(srv.addr, "POST", "/reload", None).await,
        403,
        "Access is denied",
    );
    // POST /failsafe skips the member allowlist (here: nothing else to check → 502).
    assert_eq!(
        send(srv.addr, "POST", "/failsafe", Some(r#"{"a": 1}"#))
            .await
            .code,
        502
    );
    let mut c = cluster();
    if let Some(m) = c.members.first_mut() {
        m.data.api_url = Some("http://127.0.0.1:8008/patroni".into());
    }
    let mut s = primary(monotonic_ms());
    s.cluster = Some(Arc::new(c));
    status.publish(s);
    assert_eq!(send(srv.addr, "POST", "/reload", None).await.code, 202);
    let mut c = cluster();
    if let Some(m) = c.members.first_mut() {
        m.data.api_url = Some("http://localhost:8008/patroni".into());
    }
    let mut s = primary(monotonic_ms());
    s.cluster = Some(Arc::new(c));
    status.publish(s);
    assert_eq!(send(srv.addr, "POST", "/reload", None).await.code, 202);
    assert_eq!(fake.take().len(), 2);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// TLS.

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "warden test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let mut client_params = CertificateParams::new(vec!["client".into()]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.pem", &ca_cert.pem());
    write("server.crt", &server_cert.pem());
    write("server.key", &server_key.serialize_pem());
    write(
        "combined.pem",
        &format!("{}{}", server_cert.pem(), server_key.serialize_pem()),
    );
    Pki {
        ca_pem: ca_cert.pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
        dir,
    }
}

fn tls_opts(pki: &Pki, verify: VerifyClient) -> TlsOptions {
    TlsOptions {
        certfile: pki.path("server.crt"),
        keyfile: Some(pki.path("server.key")),
        keyfile_password: None,
        cafile: Some(pki.path("ca.pem")),
        verify_client: verify,
    }
}

fn client_config(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(warden_api::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = if with_cert {
        b.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pki.client_cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.client_key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    } else {
        b.with_no_client_auth()
    };
    Arc::new(cfg)
}

/// One HTTPS exchange; None when the TLS session fails (handshake or alert).
async fn https(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, req: &[u8]) -> Option<Resp> {
    parse_response(&https_raw(addr, cfg, req).await?)
}

/// One HTTPS exchange, the raw bytes received until the server closed; None when the
/// handshake fails.
async fn https_raw(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    req: &[u8],
) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.ok()?;
    s.write_all(req).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection");
    Some(out)
}

#[tokio::test]
async fn https_and_client_certificates() {
    let pki = make_pki();
    let anon = client_config(&pki, false);
    let with_cert = client_config(&pki, true);
    let get = build("GET", "/patroni", &[], None);
    let reload = build("POST", "/reload", &[("Authorization", GOOD_AUTH)], None);

    for verify in [
        VerifyClient::None,
        VerifyClient::Optional,
        VerifyClient::Required,
    ] {
        let fake = Arc::new(Fake::default());
        let opts = ApiOptions {
            management: fake.clone(),
            auth: Some(("username".into(), "password".into())),
            tls: Some(tls_opts(&pki, verify)),
            ..ApiOptions::default()
        };
        let srv = Server::start_with(primary_status(), opts).await;
        let a = srv.addr;

        // Plain HTTP to an HTTPS port gets no HTTP answer.
        let plain = exchange(TcpStream::connect(a).await.unwrap(), &get).await;
        assert!(!plain.starts_with(b"HTTP/1.1 200"), "{verify:?}");

        // With a client certificate everything works in every mode.
        let r = https(a, with_cert.clone(), &get)
            .await
            .expect("TLS with cert");
        assert_eq!(r.code, 200, "{verify:?}");
        assert_eq!(r.json()["role"], "primary");
        let r = https(a, with_cert.clone(), &reload).await.unwrap();
        assert_eq!(r.code, 202, "{verify:?}");
        // Health checks over TLS get Patroni's bare status line too (never authenticated).
        let head = b"HEAD /primary HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let out = https_raw(a, with_cert.clone(), head).await.unwrap();
        assert_eq!(out, b"HTTP/1.0 200 OK\r\n\r\n", "{verify:?}");
        let options = b"OPTIONS /replica HTTP/1.0\r\n\r\n";
        let out = https_raw(a, with_cert.clone(), options).await.unwrap();
        assert_eq!(
            out, b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
            "{verify:?}"
        );
        if verify != VerifyClient::Required {
            let out = https_raw(a, anon.clone(), head).await.unwrap();
            assert_eq!(out, b"HTTP/1.0 200 OK\r\n\r\n", "{verify:?}");
            let liveness = b"GET /liveness HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let out = https_raw(a, anon.clone(), liveness).await.unwrap();
            assert_eq!(out, b"HTTP/1.0 200 OK\r\n\r\n", "{verify:?}");
        }

        // Without one:
        let r = https(a, anon.clone(), &get).await;
        let r2 = https(a, anon.clone(), &reload).await;
        match verify {
            VerifyClient::None => {
                assert_eq!(r.unwrap().code, 200);
                assert_eq!(r2.unwrap().code, 202);
            }
            VerifyClient::Optional => {
                assert_eq!(r.unwrap().code, 200);
                assert_text(&r2.unwrap(), 403, "client certificate required");
            }
            VerifyClient::Required => {
                assert!(r.is_none(), "GET without a client cert answered");
                assert!(r2.is_none(), "POST without a client cert answered");
            }
        }
        let reloads = fake.take().len();
        assert_eq!(
            reloads,
            if verify == VerifyClient::None { 2 } else { 1 },
            "{verify:?}"
        );
        srv.stop().await;
    }

    // Key inside the certificate file.
    let opts = ApiOptions {
        tls: Some(TlsOptions {
            certfile: pki.path("combined.pem"),
            keyfile: None,
            ..tls_opts(&pki, VerifyClient::None)
        }),
        ..ApiOptions::default()
    };
    let srv = Server::start_with(primary_status(), opts).await;
    assert_eq!(https(srv.addr, anon.clone(), &get).await.unwrap().code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn tls_configuration_errors_name_the_file() {
    let pki = make_pki();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = pki.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |o: TlsOptions| load_server_config(&o).unwrap_err().to_string();
    let base = tls_opts(&pki, VerifyClient::Required);

    let missing = pki.path("missing.crt");
    let e = err(TlsOptions {
        certfile: missing.clone(),
        ..base.clone()
    });
    assert!(
        e.contains("restapi.certfile") && e.contains(&*missing.to_string_lossy()),
        "{e}"
    );

    let garbage = write("garbage.crt", "hello");
    let e = err(TlsOptions {
        certfile: garbage,
        ..base.clone()
    });
    assert!(e.contains("restapi.certfile") && e.contains("no"), "{e}");

    let nokey = write("nokey.pem", &pki.ca_pem);
    let e = err(TlsOptions {
        keyfile: Some(nokey.clone()),
        ..base.clone()
    });
    assert!(
        e.contains("restapi.keyfile") && e.contains("no private key"),
        "{e}"
    );

    let enc = write(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let e = err(TlsOptions {
        keyfile: Some(enc.clone()),
        keyfile_password: Some("secret-pw".into()),
        ..base.clone()
    });
    assert!(
        e.contains("restapi.keyfile_password") && !e.contains("secret-pw"),
        "{e}"
    );
    assert!(!format!("{base:?}").contains("secret"));

    // Key not matching the certificate.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let wrong = write("wrong.key", &other);
    let e = err(TlsOptions {
        keyfile: Some(wrong),
        ..base.clone()
    });
    assert!(
        e.contains("restapi.certfile") || e.contains("restapi.keyfile"),
        "{e}"
    );

    let e = err(TlsOptions {
        cafile: Some(garbage_path(&pki)),
        ..base.clone()
    });
    assert!(e.contains("restapi.cafile"), "{e}");

    // serve_with refuses to start.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ApiOptions {
        tls: Some(TlsOptions {
            certfile: missing,
            ..base
        }),
        ..ApiOptions::default()
    };
    let r = serve_with(listener, primary_status(), opts, async {}).await;
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        "required".parse::<VerifyClient>(),
        Ok(VerifyClient::Required)
    );
    assert!("sometimes".parse::<VerifyClient>().is_err());
}

fn garbage_path(pki: &Pki) -> PathBuf {
    let p: &Path = pki.dir.path();
    let f = p.join("ca-garbage.pem");
    std::fs::write(&f, "not a certificate").unwrap();
    f
}

// ---------------------------------------------------------------------------------------
// Property-style: random requests never panic and never get a success the agent did
// not give.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64 >> rng.below(64)),
        3 => json!(rng.next() as f64 / 7.0),
        4 => json!(*rng.pick(&[
            "",
            "pg1",
            "pg2",
            "True",
            "false",
            "2030-01-01T00:00+00",
            "2001-01-01T00:00+00",
            "2030-01-01",
            "primary",
            "master",
            "replica",
            "15.4",
            "9.6",
            "5min",
            "-1",
            "0x1F",
            "\u{0}",
            "ü",
            "9999-12-31T23:59:59.999999+23:59"
        ])),
        5 => {
            let n = rng.below(20);
            json!((0..n)
                .map(|_| (b' ' + rng.below(95) as u8) as char)
                .collect::<String>())
        }
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(random_object(rng, depth + 1)),
    }
}

fn random_object(rng: &mut Rng, depth: u32) -> Map<String, Value> {
    let keys = [
        "leader",
        "candidate",
        "member",
        "scheduled_at",
        "schedule",
        "role",
        "postgres_version",
        "timeout",
        "restart_pending",
        "force",
        "from_leader",
        "ttl",
        "pause",
        "name",
        "x",
    ];
    (0..rng.below(5))
        .map(|_| (rng.pick(&keys).to_string(), random_value(rng, depth)))
        .collect()
}

#[tokio::test]
async fn random_requests_never_break_the_unsafe_endpoints() {
    for (paused, auth) in [(false, false), (true, true)] {
        let fake = Arc::new(Fake::default());
        let mut st = primary(monotonic_ms());
        st.paused = paused;
        if paused {
            st.cluster = Some(Arc::new(cluster_with(json!({"failsafe_mode": true}), None)));
        }
        let opts = ApiOptions {
            management: fake.clone(),
            auth: auth.then(|| ("username".into(), "password".into())),
            header_read_timeout: Duration::from_secs(3),
            ..ApiOptions::default()
        };
        let srv = Server::start_with(StatusHandle::new(st), opts).await;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(paused));
        let methods = ["POST", "PUT", "PATCH", "DELETE", "post", "FOO"];
        let paths = [
            "/switchover",
            "/failover",
            "/restart",
            "/reinitialize",
            "/reload",
            "/config",
            "/sigterm",
            "/failsafe",
            "/mpp",
            "/citus",
            "/",
            "/switchover/x?y=1",
            "/%ff",
            "/restart?schedule=now",
            "/nothing",
        ];
        for i in 0..300 {
            let method = *rng.pick(&methods);
            let path = *rng.pick(&paths);
            let body: Vec<u8> = match rng.below(6) {
                0 => Vec::new(),
                1 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
                2 => random_value(&mut rng, 0).to_string().into_bytes(),
                _ => Value::Object(random_object(&mut rng, 0))
                    .to_string()
                    .into_bytes(),
            };
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            match rng.below(4) {
                0 => {} // no Content-Length
                1 => head.push_str(&format!(
                    "Content-Length: {}\r\n",
                    rng.below(body.len() + 1)
                )),
                _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
            }
            if rng.below(3) == 0 {
                head.push_str(&format!(
                    "Authorization: {}\r\n",
                    rng.pick(&[GOOD_AUTH, "Basic x", "", "Digest y"])
                ));
            }
            if rng.below(4) == 0 {
                head.push_str(&format!(
                    "Content-Type: {}\r\n",
                    rng.pick(&["application/json", "text/plain", "\u{7f}"])
                ));
            }
            if rng.below(8) == 0 {
                head.push_str("X-Junk: \u{1}\u{2}\r\n");
            }
            head.push_str("\r\n");
            let mut req = head.into_bytes();
            req.extend_from_slice(&body);
            let out = exchange(TcpStream::connect(srv.addr).await.unwrap(), &req).await;
            let r = parse_response(&out).unwrap_or_else(|| {
                panic!("#{i}: no response to {:?}", String::from_utf8_lossy(&req))
            });
            let fake_answer = FAKE_TEXTS.contains(&r.text().as_str())
                || r.header("content-type") == Some("application/json");
            assert!(
                r.code >= 400 || fake_answer,
                "#{i}: {} {:?} for {:?}",
                r.code,
                r.text(),
                String::from_utf8_lossy(&req)
            );
        }
        // Still serving.
        assert_eq!(send(srv.addr, "GET", "/patroni", None).await.code, 200);
        srv.stop().await;
    }
}
