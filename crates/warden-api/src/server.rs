//! The HTTP server: Patroni-style routing (first path segment selects a handler, anything
//! else on GET/HEAD/OPTIONS is a health check) over hyper, with a connection cap, a
//! header read timeout and a request body limit.
//!
//! No router framework: every request goes to [`dispatch`], which routes by method and
//! first path segment as Patroni does. (axum did the same through one fallback handler;
//! its per-request layers — a boxed service clone, routing, extension maps — showed up
//! in profiles of keep-alive health checks, bench/README.md.)
//!
//! The first request head on every connection is read here before hyper sees the
//! connection: a HEAD/OPTIONS health check or a GET `/liveness` / `/readiness` is answered
//! with Patroni's bare `HTTP/1.0 <code> <reason>\r\n\r\n` (no headers) and the connection
//! is closed, which hyper can not produce (rest-api.md §1). Everything else is handed to
//! hyper together with the bytes already read ([`Rewind`]).

use crate::access::{resolve_allowlist, BasicAuth, IpNet};
use crate::cluster_json::cluster_json;
use crate::health::{health_code, liveness_code, parse_query, readiness_code};
use crate::management::{Management, NoManagement};
use crate::tls::{load_server_config, TlsOptions, VerifyClient};
use crate::{monotonic_ms, StatusHandle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use warden_core::status::{NodeStatus, TimeFacts};

/// Every answer: a complete body (nothing in Patroni's API streams).
pub(crate) type Response = hyper::Response<Full<Bytes>>;

/// A request as hyper hands it over.
pub(crate) type Request = hyper::Request<Incoming>;

/// Default `Server` header: what Python's `BaseHTTPRequestHandler` sends
/// (`restapi.server_tokens: original`).
pub const DEFAULT_SERVER_HEADER: &str = "BaseHTTP/0.6 Python/3.11.7";

/// Largest request body accepted (for the management POST/PUT/PATCH calls).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Largest request head (request line + headers) hyper buffers, and the most read
/// before handing a first request to hyper.
const MAX_HEAD: usize = 64 * 1024;

/// Headers parsed in a first request head (hyper's default limit).
const MAX_HEADERS: usize = 100;

/// Longest request target hyper accepts.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

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
    /// The last `GET /patroni`-style body served: load balancers poll the same snapshot
    /// many times a second, and building the JSON was the largest part of a health
    /// check's user-space work (bench/README.md).
    status_body: Arc<std::sync::Mutex<Option<StatusBody>>>,
}

/// A serialized [`NodeStatus::to_json_with`] and what it was made from.
struct StatusBody {
    /// Held so the pointer can not be reused by a later snapshot.
    snapshot: Arc<NodeStatus>,
    facts: TimeFacts,
    body: Bytes,
}

/// Per-connection facts a request handler needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnFacts {
    /// The client's address.
    pub(crate) peer: SocketAddr,
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
            status_body: Arc::default(),
        }
    }

    /// The `GET /patroni` body of snapshot `s` at `now_ms`, serialized once per snapshot
    /// and [`TimeFacts`].
    fn status_json(&self, s: &Arc<NodeStatus>, now_ms: u64) -> Bytes {
        let facts = s.time_facts(now_ms);
        let mut cache = self.status_body.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            if Arc::ptr_eq(&c.snapshot, s) && c.facts == facts {
                return c.body.clone();
            }
        }
        let body = Bytes::from(s.to_json_with(facts).to_string());
        *cache = Some(StatusBody {
            snapshot: s.clone(),
            facts,
            body: body.clone(),
        });
        body
    }

    /// A full response (`write_response`): Server, Content-Type, extra headers, body.
    pub(crate) fn full(
        &self,
        code: u16,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response {
        let mut r = Response::new(Full::new(body.into()));
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
        let mut r = Response::new(Full::new(Bytes::from(body)));
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

/// Status line only, for requests that did not come first on their connection: the first
/// request of a connection gets the exact bare line from
/// [`serve_connection`]; here hyper still adds `Content-Length`, `Date` and answers
/// `HTTP/1.1` to 1.1 requests. Patroni closes after every request, so only clients that
/// keep a connection alive on their own see this.
fn bare(code: u16) -> Response {
    let mut r = Response::new(Full::default());
    *r.status_mut() = status(code);
    // hyper leaves Content-Length out of a HEAD answer with an empty body (it could not
    // know the GET body's length); these bodies are empty for every method.
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// The answer to a request that gets a bare status line, or `None` for every other
/// request. HEAD/OPTIONS are always health checks; GET only for the first path segments
/// `liveness` and `readiness`. Shared by the first-request interception in
/// [`serve_connection`] and by [`dispatch`], so both route alike.
fn bare_code(method: &str, path: &str, query: &str, status: &StatusHandle) -> Option<u16> {
    enum Probe {
        Health,
        Liveness,
        Readiness,
    }
    let probe = match method {
        "HEAD" | "OPTIONS" => Probe::Health,
        "GET" => match first_segment(path) {
            "liveness" => Probe::Liveness,
            "readiness" => Probe::Readiness,
            _ => return None,
        },
        _ => return None,
    };
    let s = status.get();
    let now = monotonic_ms();
    Some(match probe {
        Probe::Health => health_code(path, &parse_query(query), &s, now),
        Probe::Liveness => liveness_code(&s, now),
        Probe::Readiness => readiness_code(&parse_query(query), &s, now),
    })
}

/// What to do with the bytes read so far of a connection's first request.
#[derive(Debug, PartialEq, Eq)]
enum FirstHead {
    /// The head is not complete yet.
    Partial,
    /// Answer with a bare status line and close.
    Bare(u16),
    /// Hand the connection to hyper (a routed request, or one hyper must judge: a
    /// malformed or oversized head, a request with a body framing hyper would check).
    Hyper,
}

/// Judges the first request head in `buf` with hyper's parser (httparse) and limits.
fn classify_head(buf: &[u8], status: &StatusHandle) -> FirstHead {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return FirstHead::Partial,
        Err(_) => return FirstHead::Hyper,
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return FirstHead::Hyper;
    };
    if len > MAX_HEAD || target.len() > MAX_URI_LEN {
        return FirstHead::Hyper;
    }
    // hyper rejects some body framings (400): leave every Transfer-Encoding, and any
    // Content-Length that is not one plain number, to it. Otherwise a body is ignored,
    // as Python does for these methods.
    let mut content_length: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return FirstHead::Hyper;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let plain = !h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit);
            if !plain || content_length.is_some_and(|prev| prev != h.value) {
                return FirstHead::Hyper;
            }
            content_length = Some(h.value);
        }
    }
    // The same URI parsing hyper applies, so the path and query match `dispatch`'s.
    let Ok(uri) = target.parse::<hyper::Uri>() else {
        return FirstHead::Hyper;
    };
    match bare_code(method, uri.path(), uri.query().unwrap_or(""), status) {
        Some(code) => FirstHead::Bare(code),
        None => FirstHead::Hyper,
    }
}

/// Whether `new` (the freshly read bytes plus the 3 before them) holds an empty line,
/// i.e. a head may have ended (httparse accepts `\r\n` and bare `\n` line ends).
fn may_end_head(new: &[u8]) -> bool {
    new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
}

/// Outcome of reading a connection's first request head.
enum FirstRead {
    Bare(u16),
    /// Serve with hyper; these bytes were read already.
    Hyper(Vec<u8>),
    /// Timed out, read error, or the server is stopping: drop the connection (what hyper
    /// does on a header timeout or a graceful shutdown before a request).
    Close,
}

/// Reads until the first request head is complete (or malformed, or [`MAX_HEAD`] bytes,
/// or EOF), by `deadline`.
async fn read_first_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    status: &StatusHandle,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> FirstRead {
    let mut buf = Vec::with_capacity(4096);
    let stopping = stop.wait_for(|v| *v);
    tokio::pin!(stopping);
    loop {
        let start = buf.len().saturating_sub(3);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8192);
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => r,
            _ = &mut stopping => return FirstRead::Close,
        };
        match read {
            Err(_) => return FirstRead::Close,
            Ok(Err(_)) => return FirstRead::Close,
            // EOF: hyper answers a partial head (or closes quietly after nothing).
            Ok(Ok(0)) => return FirstRead::Hyper(buf),
            Ok(Ok(_)) => {}
        }
        if may_end_head(&buf[start..]) {
            match classify_head(&buf, status) {
                FirstHead::Partial => {}
                FirstHead::Bare(code) => return FirstRead::Bare(code),
                FirstHead::Hyper => return FirstRead::Hyper(buf),
            }
        }
        if buf.len() >= MAX_HEAD {
            return FirstRead::Hyper(buf);
        }
    }
}

/// Patroni's bare answer: `HTTP/1.0 <code> <reason>\r\n\r\n`, reason as Python's
/// `http.HTTPStatus` phrase.
fn bare_status_line(code: u16) -> String {
    let reason = status(code).canonical_reason().unwrap_or("");
    format!("HTTP/1.0 {code} {reason}\r\n\r\n")
}

/// A stream that first yields bytes already read from it.
struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(pre: Vec<u8>, inner: S) -> Self {
        Rewind { pre, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.pre.len() {
            let n = (this.pre.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.pre[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.pre.len() {
                this.pre = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The first path segment (`/cluster/x` → `cluster`, `/` → ``).
pub(crate) fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// Answers one request (routed by method and first path segment, as Patroni's
/// `do_<METHOD>_<segment>` lookup; add endpoints here).
async fn dispatch(app: &App, conn: ConnFacts, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path();
    let raw_query = uri.query().unwrap_or("");
    // HEAD/OPTIONS (every path: no do_HEAD_<x>/do_OPTIONS_<x> handlers exist in Patroni,
    // so HEAD /patroni is 503, a documented quirk) and GET /liveness, /readiness.
    if let Some(code) = bare_code(method.as_str(), path, raw_query, &app.status) {
        return bare(code);
    }
    let query = parse_query(raw_query);
    // GET /patroni is what peers compare WAL positions with before a leader race and a
    // switchover: it gets positions read for this request; everything else (health
    // checks, hammered by load balancers) answers from the snapshot.
    let s = if method == Method::GET && first_segment(path) == "patroni" {
        app.status.fresh().await
    } else {
        app.status.get()
    };
    let now = monotonic_ms();

    match method {
        Method::GET => match first_segment(path) {
            "patroni" => app.full(200, "application/json", app.status_json(&s, now)),
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
                app.full(code, "application/json", app.status_json(&s, now))
            }
        },
        _ => crate::endpoints::handle_unsafe(app, conn, req).await,
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
    let app = Arc::new(App::new(status.clone(), &opts, allowlist));
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
        let conn = ConnCtx {
            peer,
            app: app.clone(),
            status: status.clone(),
            header_timeout: opts.header_read_timeout,
            stop: stop_rx.clone(),
        };
        let tls = tls.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let facts = ConnFacts {
                        peer,
                        client_cert: false,
                    };
                    serve_connection(stream, facts, conn).await
                }
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(conn.header_timeout, acceptor.accept(stream)).await;
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
                    serve_connection(stream, ConnFacts { peer, client_cert }, conn).await
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

/// What serving one connection needs besides the stream.
struct ConnCtx {
    peer: SocketAddr,
    app: Arc<App>,
    status: StatusHandle,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
}

/// Serves HTTP/1 on one accepted (plain or TLS) connection until it closes or the
/// server stops.
///
/// The first request head is read here (at most [`MAX_HEAD`] bytes, within the header
/// timeout): a bare-line request (see [`bare_code`]) is answered with exactly
/// `HTTP/1.0 <code> <reason>\r\n\r\n` and the connection is closed, as Patroni does.
/// Anything else goes to hyper with the bytes already read, unchanged. Later requests on
/// a kept-alive connection all go through hyper (a HEAD there gets hyper's headers, see
/// [`bare`]).
async fn serve_connection<S>(mut stream: S, facts: ConnFacts, ctx: ConnCtx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnCtx {
        peer,
        app,
        status,
        header_timeout,
        mut stop,
    } = ctx;
    let deadline = tokio::time::Instant::now() + header_timeout;
    let pre = match read_first_head(&mut stream, &status, deadline, &mut stop).await {
        FirstRead::Hyper(pre) => pre,
        FirstRead::Close => return,
        FirstRead::Bare(code) => {
            let line = bare_status_line(code);
            let write = async {
                stream.write_all(line.as_bytes()).await?;
                stream.flush().await?;
                stream.shutdown().await
            };
            match tokio::time::timeout(header_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("REST API connection from {peer}: {e}"),
                Err(_) => tracing::debug!("REST API connection from {peer}: write timed out"),
            }
            return;
        }
    };

    let svc = hyper::service::service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(dispatch(&app, facts, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .title_case_headers(true)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(Rewind::new(pre, stream)), svc);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_first_heads() {
        let status = StatusHandle::default(); // no role: every health check is 503
        let c = |h: &[u8]| classify_head(h, &status);
        assert_eq!(
            c(b"HEAD /primary HTTP/1.1\r\nHost: x\r\n"),
            FirstHead::Partial
        );
        assert_eq!(c(b"HEAD /primary HTTP/1.1\r\n\r\n"), FirstHead::Bare(503));
        assert_eq!(c(b"OPTIONS /x HTTP/1.0\r\n\r\n"), FirstHead::Bare(503));
        let live = c(b"GET /liveness HTTP/1.0\r\n\r\n");
        assert_eq!(
            live,
            FirstHead::Bare(liveness_code(&status.get(), monotonic_ms()))
        );
        assert!(matches!(
            c(b"GET /readiness?lag=1 HTTP/1.0\r\n\r\n"),
            FirstHead::Bare(_)
        ));
        assert_eq!(c(b"GET /primary HTTP/1.1\r\n\r\n"), FirstHead::Hyper);
        assert_eq!(c(b"POST /liveness HTTP/1.1\r\n\r\n"), FirstHead::Hyper);
        assert_eq!(c(b"head /primary HTTP/1.1\r\n\r\n"), FirstHead::Hyper);
        assert_eq!(c(b"HEAD /primary HTTP/2.0\r\n\r\n"), FirstHead::Hyper);
        assert_eq!(c(b"HEAD /\xff HTTP/1.1\r\n\r\n"), FirstHead::Hyper);
        let te = b"HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(c(te), FirstHead::Hyper);
        let cl = b"HEAD / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(c(cl), FirstHead::Bare(503));
        let cl = b"HEAD / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(c(cl), FirstHead::Hyper);
    }

    /// The cached status body is the one `to_json` gives for the snapshot and the time
    /// of asking: a new snapshot, or a cluster view that expired meanwhile, is seen.
    #[test]
    fn status_body_follows_the_snapshot_and_the_clock() {
        use warden_core::cluster::{Cluster, Leader};
        let status = StatusHandle::default();
        let app = App::new(status.clone(), &ApiOptions::default(), Vec::new());
        let cluster = Cluster {
            leader: Some(Leader {
                name: "n0".into(),
                version: 1,
                session: 1,
            }),
            ..Cluster::default()
        };
        status.publish(NodeStatus {
            name: "n0".into(),
            role: "primary".into(),
            cluster: Some(Arc::new(cluster)),
            cluster_valid_until_ms: Some(1000),
            ..NodeStatus::default()
        });
        let s = status.get();
        let body = |now| String::from_utf8(app.status_json(&s, now).to_vec()).unwrap();
        for now in [10, 20, 999, 1000, 5000, 10] {
            assert_eq!(body(now), s.to_json(now).to_string(), "at {now} ms");
        }
        assert!(!body(999).contains("cluster_unlocked"));
        assert!(
            body(1000).contains("\"cluster_unlocked\":true"),
            "the view expired"
        );
        status.publish(NodeStatus {
            name: "n0".into(),
            role: "replica".into(),
            ..NodeStatus::default()
        });
        let s2 = status.get();
        let fresh = String::from_utf8(app.status_json(&s2, 10).to_vec()).unwrap();
        assert!(fresh.contains("\"role\":\"replica\""), "{fresh}");
    }

    #[test]
    fn head_end_detection() {
        assert!(may_end_head(b"x\r\n\r\n"));
        assert!(may_end_head(b"x\n\n"));
        assert!(may_end_head(b"\n\r\n"));
        assert!(!may_end_head(b"x\r\ny\r\n\r"));
    }

    #[test]
    fn bare_lines() {
        assert_eq!(bare_status_line(200), "HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            bare_status_line(503),
            "HTTP/1.0 503 Service Unavailable\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn rewind_yields_the_read_bytes_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut s = Rewind::new(b"hello".to_vec(), server);
        let mut small = [0u8; 3];
        assert_eq!(s.read(&mut small).await.unwrap(), 3);
        assert_eq!(&small, b"hel");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");
    }
}
