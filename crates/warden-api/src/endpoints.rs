//! The unsafe (POST/PUT/PATCH/DELETE) endpoints: access checks (rest-api.md §2), body
//! rules (§1), request validation (§4, §4.1, §4.2 steps 1–6), then the agent's
//! [`Management`](crate::management::Management).

use crate::access::resolve_member_hosts;
use crate::management::{FailsafeOutcome, MgmtBody, MgmtResponse, SwitchoverKind};
use crate::server::{
    failsafe_mode, first_segment, unsupported, App, ConnFacts, Request, Response, BODY_LIMIT,
};
use crate::tls::VerifyClient;
use crate::validate::{parse_bool_flag, validate_restart, validate_switchover};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Switchover,
    Failover,
    Restart,
    DeleteRestart,
    DeleteSwitchover,
    Reinitialize,
    Reload,
    PatchConfig,
    PutConfig,
    Sigterm,
    Failsafe,
    Citus,
    Mpp,
}

/// How an endpoint is protected.
enum Guard {
    /// All §2 checks; `members` = the member hosts count for the allowlist.
    Protected { members: bool },
    /// `POST /mpp` (a Patroni quirk).
    Open,
}

impl Endpoint {
    fn lookup(method: &str, segment: &str) -> Option<Endpoint> {
        use Endpoint::*;
        Some(match (method, segment) {
            ("POST", "switchover") => Switchover,
            ("POST", "failover") => Failover,
            ("POST", "restart") => Restart,
            ("DELETE", "restart") => DeleteRestart,
            ("DELETE", "switchover") => DeleteSwitchover,
            ("POST", "reinitialize") => Reinitialize,
            ("POST", "reload") => Reload,
            ("PATCH", "config") => PatchConfig,
            ("PUT", "config") => PutConfig,
            ("POST", "sigterm") => Sigterm,
            ("POST", "failsafe") => Failsafe,
            ("POST", "citus") => Citus,
            ("POST", "mpp") => Mpp,
            _ => return None,
        })
    }

    fn guard(self) -> Guard {
        match self {
            Endpoint::Mpp => Guard::Open,
            Endpoint::Failsafe => Guard::Protected { members: false },
            _ => Guard::Protected { members: true },
        }
    }
}

/// Entry point for every method other than GET/HEAD/OPTIONS.
pub(crate) async fn handle_unsafe(app: &App, conn: ConnFacts, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(ep) = Endpoint::lookup(parts.method.as_str(), first_segment(parts.uri.path())) else {
        return unsupported(app, &parts.method);
    };
    if let Guard::Protected { members } = ep.guard() {
        if let Some(denied) = check_access(app, conn, &parts, members).await {
            return denied;
        }
    }
    let s = app.status.get();
    let m = &app.management;
    match ep {
        Endpoint::Switchover | Endpoint::Failover => {
            let body = match read_json(app, &parts, body, false).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let (kind, action) = if ep == Endpoint::Switchover {
                (SwitchoverKind::Switchover, "switchover")
            } else {
                (SwitchoverKind::Failover, "failover")
            };
            tracing::info!(
                "received {action} request with leader={} candidate={} scheduled_at={}",
                show(body.get("leader")),
                show(body.get("candidate").or_else(|| body.get("member"))),
                show(body.get("scheduled_at")),
            );
            match validate_switchover(&body, kind, s.paused, chrono::Utc::now()) {
                Ok(req) => mgmt(app, m.switchover(req).await),
                Err((code, msg)) => text(app, code, msg),
            }
        }
        Endpoint::Restart => {
            let body = match read_json(app, &parts, body, true).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if !body.is_empty() {
                let shown = serde_json::Value::Object(body.clone());
                tracing::debug!("received restart request: {shown}");
            }
            match validate_restart(&body, s.paused, chrono::Utc::now()) {
                Ok(req) => mgmt(app, m.restart(req).await),
                Err((code, msg)) => text(app, code, msg),
            }
        }
        Endpoint::DeleteRestart => mgmt(app, m.delete_restart().await),
        Endpoint::DeleteSwitchover => mgmt(app, m.delete_switchover().await),
        Endpoint::Reinitialize => {
            let body = match read_json(app, &parts, body, true).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let force = parse_bool_flag(body.get("force"));
            let from_leader = parse_bool_flag(body.get("from_leader"));
            mgmt(app, m.reinitialize(force, from_leader).await)
        }
        Endpoint::Reload => mgmt(app, m.reload().await),
        Endpoint::PatchConfig => match read_json(app, &parts, body, false).await {
            Ok(patch) => mgmt(app, m.patch_config(patch).await),
            Err(r) => r,
        },
        Endpoint::PutConfig => match read_json(app, &parts, body, false).await {
            Ok(config) => mgmt(app, m.put_config(Value::Object(config)).await),
            Err(r) => r,
        },
        // Patroni acts on this only in Windows test builds.
        Endpoint::Sigterm => text(app, 202, "shutdown scheduled"),
        Endpoint::Failsafe => {
            if !failsafe_mode(s.cluster.as_deref()) {
                return app.error(502, None);
            }
            let post = match read_json(app, &parts, body, false).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match m.failsafe(post).await {
                FailsafeOutcome::Accepted { lsn } => {
                    let mut r = text(app, 200, "Accepted");
                    if let Some(lsn) = lsn {
                        r.headers_mut().insert("lsn", HeaderValue::from(lsn));
                    }
                    r
                }
                FailsafeOutcome::Refused(reason) => text(app, 500, reason),
                FailsafeOutcome::Unsupported => app.error(501, Some("failsafe is not supported")),
            }
        }
        // Without Citus there is nothing to do with the event (Patroni also answers OK).
        Endpoint::Citus | Endpoint::Mpp => match read_json(app, &parts, body, false).await {
            Ok(_) => text(app, 200, "OK"),
            Err(r) => r,
        },
    }
}

/// A request value for the log line (Python's `%s`: None for absent).
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `write_response(code, body)`: `text/html`.
fn text(app: &App, code: u16, body: impl Into<String>) -> Response {
    app.full(code, "text/html", body.into())
}

fn mgmt(app: &App, r: MgmtResponse) -> Response {
    match r.body {
        MgmtBody::Text(t) => text(app, r.code, t),
        MgmtBody::Json(v) => app.json(r.code, &v),
    }
}

/// rest-api.md §2, in order: allowlist (403), client certificate (403), Basic auth (401).
async fn check_access(
    app: &App,
    conn: ConnFacts,
    parts: &Parts,
    members: bool,
) -> Option<Response> {
    let members = members && app.include_members;
    if app.allowlist_set || members {
        let ip = conn.peer.ip();
        let mut allowed = app.allowlist.iter().any(|n| n.contains(ip));
        if !allowed && members {
            let s = app.status.get();
            if let Some(c) = s.cluster.as_deref() {
                let urls = c.members.iter().filter_map(|m| m.data.api_url.as_deref());
                allowed = resolve_member_hosts(urls)
                    .await
                    .iter()
                    .any(|n| n.contains(ip));
            }
        }
        if !allowed {
            return Some(text(app, 403, "Access is denied"));
        }
    }
    if matches!(
        app.verify_client,
        Some(VerifyClient::Optional | VerifyClient::Required)
    ) && !conn.client_cert
    {
        return Some(text(app, 403, "client certificate required"));
    }
    if let Some(auth) = &app.auth {
        let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if let Some(reason) = auth.check(header) {
            let mut r = text(app, 401, reason);
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Patroni\""),
            );
            return Some(r);
        }
    }
    None
}

/// Patroni's `_read_json_content`: the body is read using `Content-Length`.
/// * no `Content-Length`: 411, or `{}` when the body is optional;
/// * `Content-Length: 0` with an optional body: `{}`;
/// * otherwise the body must be a JSON object, non-empty unless optional, else 400.
async fn read_json(
    app: &App,
    parts: &Parts,
    body: Incoming,
    optional: bool,
) -> Result<Map<String, Value>, Response> {
    let Some(len) = parts.headers.get(CONTENT_LENGTH) else {
        return if optional {
            Ok(Map::new())
        } else {
            Err(app.error(411, None))
        };
    };
    let len: Option<u64> = len.to_str().ok().and_then(|v| v.trim().parse().ok());
    let Some(len) = len else {
        return Err(app.error(400, None));
    };
    if len == 0 && optional {
        return Ok(Map::new());
    }
    if len > BODY_LIMIT as u64 {
        return Err(app.error(413, None));
    }
    let limited = http_body_util::Limited::new(body, BODY_LIMIT).collect();
    let bytes = match tokio::time::timeout(app.body_timeout, limited).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            tracing::debug!("Bad request: reading the body failed: {e}");
            return Err(app.error(400, None));
        }
        Err(_) => {
            tracing::debug!("Bad request: body not received in time");
            return Err(app.error(400, None));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) if optional || !m.is_empty() => Ok(m),
        Ok(_) => {
            tracing::debug!("Bad request: not a non-empty JSON object");
            Err(app.error(400, None))
        }
        Err(e) => {
            tracing::debug!("Bad request: {e}");
            Err(app.error(400, None))
        }
    }
}
