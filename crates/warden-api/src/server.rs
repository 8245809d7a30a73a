//! The HTTP server: Patroni-style routing (first path segment selects a handler, anything
//! else on GET/HEAD/OPTIONS is a health check) over axum + hyper, with a connection cap,
//! a header read timeout and a request body limit.

use crate::access::{resolve_allowlist, BasicAuth, IpNet};
use crate::cluster_json::cluster_json;
use crate::health::{health_code, liveness_code, parse_query, readiness_code};
use crate::management::{Management, NoManagement};
use crate::tls::{load_server_config, TlsOptions, VerifyClient};
use crate::{monotonic_ms, StatusHandle};
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, SERVER};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Default `Server` header: what Python's `BaseHTTPRequestHandler` sends
/// (`restapi.server_tokens: original`).
pub const DEFAULT_SERVER_HEADER: &str = "BaseHTTP/0.6 Python/3.11.7";

/// Largest request body accepted (for the management POST/PUT/PATCH calls).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Largest request head (request line + headers) hyper buffers.
const MAX_HEAD: usize = 64 * 1024;

/// Server settings (the `restapi` section).
#[derive(Clone)]
pub struct ApiOptions {
    /// `Server` header value (see [`server_header_for_tokens`]).
    pub server_header: String,
    /// `restapi.http_extra_headers` (plus `https_extra_headers` with TLS), added to every
    /// full response. Invalid names/values are skipped with a warning.
    pub extra_headers: Vec<(String, String)>,
    /// Concurrent connections served; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send a complete request head within this time (also bounds idle
    /// keep-alive connections).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping connections.
    pub shutdown_grace: Duration,
    /// `restapi.authentication` (username, password) for the protected endpoints.
    /// Never logged (the `Debug` output redacts it).
    pub auth: Option<(String, String)>,
    /// `restapi.allowlist`: CIDRs, IPs or host names (resolved when the server starts).
    /// Non-empty = protected endpoints only for clients in these networks.
    pub allowlist: Vec<String>,
    /// `restapi.allowlist_include_members`: also allow the hosts of every member's
    /// `api_url` in the published cluster view.
    pub allowlist_include_members: bool,
    /// HTTPS settings; `None` = plain HTTP.
    pub tls: Option<TlsOptions>,
    /// What the management endpoints do.
    pub management: Arc<dyn Management>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("server_header", &self.server_header)
            .field("extra_headers", &self.extra_headers)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("allowlist", &self.allowlist)
            .field("allowlist_include_members", &self.allowlist_include_members)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            server_header: DEFAULT_SERVER_HEADER.to_string(),
            extra_headers: Vec::new(),
            max_connections: 256,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            auth: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            tls: None,
            management: Arc::new(NoManagement),
        }
    }
}

/// `restapi.server_tokens` → `Server` header: `original` (default or unknown value) →
/// Python's default, `productonly` → `Patroni`, `minimal` → `Patroni/<version>`
/// (case-insensitive).
pub fn server_header_for_tokens(tokens: Option<&str>, version: &str) -> String {
    match tokens.map(str::to_ascii_lowercase).as_deref() {
        Some("productonly") => "Patroni".to_string(),
        Some("minimal") => format!("Patroni/{version}"),
        Some("original") | None => DEFAULT_SERVER_HEADER.to_string(),
        Some(other) => {
            tracing::warn!(
                "restapi.server_tokens is set to \"{other}\"; valid values are original, productonly, minimal"
            );
            DEFAULT_SERVER_HEADER.to_string()
        }
    }
}

struct Headers {
    server: HeaderValue,
    extra: Vec<(HeaderName, HeaderValue)>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) status: StatusHandle,
    headers: Arc<Headers>,
    pub(crate) management: Arc<dyn Management>,
    pub(crate) auth: Option<BasicAuth>,
    /// `restapi.allowlist` was configured (even if nothing in it resolved: then nobody
    /// passes, rather than everybody as in Patroni).
    pub(crate) allowlist_set: bool,
    pub(crate) allowlist: Arc<Vec<IpNet>>,
    pub(crate) include_members: bool,
    /// `Some` when serving HTTPS.
    pub(crate) verify_client: Option<VerifyClient>,
    /// Bound on reading a request body.
    pub(crate) body_timeout: Duration,
}

/// Per-connection facts a request handler needs (in the request extensions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnFacts {
    /// The client presented a certificate that the TLS layer verified.
    pub(crate) client_cert: bool,
}

impl App {
    fn new(status: StatusHandle, opts: &ApiOptions, allowlist: Vec<IpNet>) -> App {
        let server = HeaderValue::from_str(&opts.server_header).unwrap_or_else(|_| {
            tracing::warn!("invalid Server header value; using the default");
            HeaderValue::from_static(DEFAULT_SERVER_HEADER)
        });
        let extra = opts
            .extra_headers
            .iter()
            .filter_map(|(k, v)| {
                match (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    (Ok(k), Ok(v)) => Some((k, v)),
                    _ => {
                        tracing::warn!("skipping invalid extra HTTP header {k:?}");
                        None
                    }
                }
            })
            .collect();
        App {
            status,
            headers: Arc::new(Headers { server, extra }),
            management: opts.management.clone(),
            auth: opts.auth.as_ref().map(|(u, p)| BasicAuth::new(u, p)),
            allowlist_set: !opts.allowlist.is_empty(),
            allowlist: Arc::new(allowlist),
            include_members: opts.allowlist_include_members,
            verify_client: opts.tls.as_ref().map(|t| t.verify_client),
            body_timeout: opts.header_read_timeout,
        }
    }

    /// A full response (`write_response`): Server, Content-Type, extra headers, body.
    pub(crate) fn full(&self, code: u16, content_type: &'static str, body: String) -> Response {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status(code);
        let h = r.headers_mut();
        h.insert(SERVER, self.headers.server.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (k, v) in &self.headers.extra {
            h.append(k.clone(), v.clone());
        }
        r
    }

    pub(crate) fn json(&self, code: u16, v: &Value) -> Response {
        self.full(code, "application/json", v.to_string())
    }

    /// Python's `send_error`: HTML page, `Connection: close`.
    pub(crate) fn error(&self, code: u16, message: Option<&str>) -> Response {
        let st = status(code);
        let reason = st.canonical_reason().unwrap_or("Error");
        let message = html_escape(message.unwrap_or(reason));
        let body = format!(
            "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        \
             <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        \
             <p>Error code: {code}</p>\n        <p>Message: {message}.</p>\n        \
             <p>Error code explanation: {code} - {reason}.</p>\n    </body>\n</html>\n"
        );
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = st;
        let h = r.headers_mut();
        h.insert(SERVER, self.headers.server.clone());
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=utf-8"),
        );
        r
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#x27;"),
            c => o.push(c),
        }
    }
    o
}

/// Status line only (Patroni writes `HTTP/1.0 <code> <reason>\r\n\r\n`; hyper still
/// adds `Content-Length` and `Date`).
fn bare(code: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status(code);
    r
}

/// Builds the API router. Every request goes through one fallback handler that routes by
/// method and first path segment (as Patroni's `do_<METHOD>_<segment>` lookup); add
/// endpoints there.
///
/// `restapi.allowlist` host names are resolved here (blocking DNS); [`serve_with`]
/// resolves them off the async threads.
pub fn router(status: StatusHandle, opts: &ApiOptions) -> Router {
    build_router(status, opts, resolve_allowlist(&opts.allowlist))
}

fn build_router(status: StatusHandle, opts: &ApiOptions, allowlist: Vec<IpNet>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(App::new(status, opts, allowlist))
}

/// The first path segment (`/cluster/x` → `cluster`, `/` → ``).
pub(crate) fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path();
    let query = parse_query(uri.query().unwrap_or(""));
    let now = monotonic_ms();
    let s = app.status.get();

    match method {
        Method::GET => match first_segment(path) {
            "patroni" => app.json(200, &s.to_json(now)),
            "liveness" => bare(liveness_code(&s, now)),
            "readiness" => bare(readiness_code(&query, &s, now)),
            "cluster" => match s.valid_cluster(now) {
                Some(c) => app.json(200, &cluster_json(c, &s.scope)),
                None => app.error(503, Some("DCS is not accessible")),
            },
            "history" => match s.valid_cluster(now) {
                Some(c) => {
                    let lines = c
                        .history
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|l| l.to_value())
                        .collect();
                    app.json(200, &Value::Array(lines))
                }
                None => app.error(503, Some("DCS is not accessible")),
            },
            "config" => match s
                .valid_cluster(now)
                .and_then(|c| c.config.as_ref())
                .filter(|k| k.version != 0)
            {
                Some(k) => app.json(200, &k.value),
                None => app.error(502, None),
            },
            // GET /metrics (metrics.md), rendered by crate::metrics.
            "metrics" => app.full(200, "text/plain", crate::metrics::render_metrics(&s, now)),
            "failsafe" => {
                let c = s.cluster.as_deref();
                match c.and_then(|c| c.failsafe.as_ref()) {
                    Some(f) if failsafe_mode(c) => app.json(200, &Value::Object(f.clone())),
                    _ => app.error(502, None),
                }
            }
            _ => {
                let code = health_code(path, &query, &s, now);
                app.json(code, &s.to_json(now))
            }
        },
        // No do_HEAD_<x>/do_OPTIONS_<x> handlers exist in Patroni: every path is a
        // health check (so HEAD /patroni is 503, a documented quirk).
        Method::HEAD | Method::OPTIONS => bare(health_code(path, &query, &s, now)),
        _ => crate::endpoints::handle_unsafe(&app, req).await,
    }
}

/// Python's answer for a method/path without a handler.
pub(crate) fn unsupported(app: &App, method: &Method) -> Response {
    app.error(
        501,
        Some(&format!("Unsupported method ('{}')", method.as_str())),
    )
}

pub(crate) fn failsafe_mode(c: Option<&warden_core::cluster::Cluster>) -> bool {
    c.and_then(|c| c.config.as_ref())
        .and_then(|k| k.value.get("failsafe_mode"))
        .is_some_and(warden_core::cluster::truthy)
}

/// Serves the API with default options until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    status: StatusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, status, ApiOptions::default(), shutdown).await
}

/// Serves the API until `shutdown` completes: stops accepting, lets in-flight requests
/// finish (up to [`ApiOptions::shutdown_grace`]), then drops the remaining connections.
/// Accept errors (e.g. out of file descriptors) are logged and retried, never fatal.
///
/// With [`ApiOptions::tls`] the server speaks HTTPS; a certificate/key/CA problem is
/// returned at once as an [`std::io::ErrorKind::InvalidInput`] error naming the file.
/// `restapi.allowlist` host names are resolved before the first accept.
pub async fn serve_with(
    listener: TcpListener,
    status: StatusHandle,
    opts: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match &opts.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(load_server_config(t)?)),
        None => None,
    };
    let entries = opts.allowlist.clone();
    let allowlist = tokio::task::spawn_blocking(move || resolve_allowlist(&entries))
        .await
        .unwrap_or_default();
    let app = build_router(status, &opts, allowlist);
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("REST API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let header_timeout = opts.header_read_timeout;
        let tls = tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let facts = ConnFacts { client_cert: false };
                    serve_connection(stream, peer, facts, app, header_timeout, stop).await
                }
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("REST API TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("REST API TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let facts = ConnFacts { client_cert };
                    serve_connection(stream, peer, facts, app, header_timeout, stop).await
                }
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.shutdown_grace, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    Ok(())
}

/// Serves HTTP/1 on one accepted (plain or TLS) connection until it closes or the
/// server stops.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    facts: ConnFacts,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        req.extensions_mut().insert(facts);
        inner.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .title_case_headers(true)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|v| *v).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("REST API connection from {peer}: {e}");
    }
}
