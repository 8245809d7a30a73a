//! The HTTP(S) client Warden uses to call members' REST APIs: `wardenctl`'s requests
//! and the agent's peer probes, in process (no `curl`, so no credential on a command
//! line).
//!
//! It sends what Patroni's `PatroniRequest` (urllib3) sends: HTTP/1.1 with one connection
//! per request (`Connection: close`), the body as given (JSON text) **without** a
//! Content-Type header, Basic auth from `ctl.authentication` or else
//! `restapi.authentication`, and a `Patroni/<version> …` User-Agent. `https://` URLs
//! use rustls with Patroni's certificate rules (see [`tls`]).

pub mod tls;
mod wire;

pub use tls::{client_cert_verifier, crypto_provider, ClientTls, TlsFileError};
pub use wire::{base64, endpoint_url, parse_response, Response};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a request got no HTTP response. Messages name the host, never credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used (scheme, host, port).
    #[error("{0}")]
    Url(String),
    /// A certificate, key or CA file cannot be used.
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    /// TCP connection refused, unreachable, or not established in time.
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed (certificate rejected by either side, protocol…).
    #[error("{0}")]
    Tls(String),
    /// Sending the request or reading the response failed.
    #[error("{0}")]
    Io(String),
    /// No complete response within the request's timeout.
    #[error("{0}")]
    Timeout(String),
    /// The peer's answer is not HTTP/1.x, or is larger than allowed.
    #[error("{0}")]
    Protocol(String),
}

/// How to call the REST APIs: Basic auth and TLS (the `ctl` / `restapi` settings).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RestSettings {
    /// Basic auth `user:password` (`ctl.authentication`, else `restapi.authentication`).
    pub auth: Option<String>,
    /// Certificates and verification.
    pub tls: ClientTls,
}

impl fmt::Debug for RestSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestSettings")
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// The REST client: settings and certificates loaded once, cheap to clone.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
    max_response: usize,
}

struct Inner {
    /// `Basic <base64>`, computed once.
    auth_header: Option<String>,
    user_agent: String,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field(
                "auth",
                &self.inner.auth_header.as_ref().map(|_| "<redacted>"),
            )
            .field("user_agent", &self.inner.user_agent)
            .finish_non_exhaustive()
    }
}

/// Default bound on connecting (urllib3's pool has none; a dead host must not hold
/// `wardenctl` for the whole request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default largest response accepted.
const MAX_RESPONSE: usize = 64 << 20;

impl RestClient {
    /// A client sending `user_agent`; reads the certificate, key and CA files now, so a
    /// problem with them is reported here, naming the option and the file.
    pub fn new(settings: &RestSettings, user_agent: impl Into<String>) -> Result<Self, HttpError> {
        let config = tls::client_config(&settings.tls)?;
        Ok(RestClient {
            inner: Arc::new(Inner {
                auth_header: settings
                    .auth
                    .as_ref()
                    .map(|a| format!("Basic {}", base64(a.as_bytes()))),
                user_agent: user_agent.into(),
                tls: tokio_rustls::TlsConnector::from(config),
                connect_timeout: CONNECT_TIMEOUT,
            }),
            max_response: MAX_RESPONSE,
        })
    }

    /// The same client with another bound on the response size (a peer probe does not
    /// need megabytes from a member).
    pub fn with_max_response(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// The raw request bytes for `method url` with an optional body (for tests).
    pub fn build_request(&self, method: &str, url: &str, body: Option<&str>) -> Vec<u8> {
        match wire::parse_url(url) {
            Ok(u) => self.build(method, &u, body),
            Err(_) => Vec::new(),
        }
    }

    fn build(&self, method: &str, u: &wire::Url, body: Option<&str>) -> Vec<u8> {
        wire::build_request(
            method,
            u,
            body,
            self.inner.auth_header.as_deref(),
            &self.inner.user_agent,
        )
    }

    /// Performs one request on its own connection, all of it (connect, TLS handshake,
    /// exchange) within `timeout`. `Ok` = an HTTP response of any status; `Err` = none.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let u = wire::parse_url(url)?;
        let req = self.build(method, &u, body);
        let head_only = method.eq_ignore_ascii_case("HEAD");
        let shown = u.display();
        let fut = async {
            let addr = u.addr();
            let connect = tokio::net::TcpStream::connect(&addr);
            let tcp = tokio::time::timeout(self.inner.connect_timeout.min(timeout), connect)
                .await
                .map_err(|_| HttpError::Connect(format!("Connection to {addr} timed out")))?
                .map_err(|e| {
                    HttpError::Connect(format!("Failed to establish a connection to {addr}: {e}"))
                })?;
            let _ = tcp.set_nodelay(true);
            if !u.https {
                return exchange(tcp, &req, head_only, self.max_response, &addr).await;
            }
            let name = rustls::pki_types::ServerName::try_from(u.host.as_str())
                .map_err(|e| HttpError::Url(format!("Invalid host in URL {shown:?}: {e}")))?
                .to_owned();
            let tls =
                self.inner.tls.connect(name, tcp).await.map_err(|e| {
                    HttpError::Tls(format!("TLS handshake with {addr} failed: {e}"))
                })?;
            exchange(tls, &req, head_only, self.max_response, &addr).await
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout(format!("Read timed out ({shown})")))?
    }
}

/// Writes the request and reads until the response is complete or the peer closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
    head_only: bool,
    max: usize,
    addr: &str,
) -> Result<Response, HttpError> {
    s.write_all(req)
        .await
        .map_err(|e| HttpError::Io(format!("Failed to send the request to {addr}: {e}")))?;
    s.flush()
        .await
        .map_err(|e| HttpError::Io(format!("Failed to send the request to {addr}: {e}")))?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > max {
                    return Err(HttpError::Protocol(format!(
                        "Response from {addr} larger than {max} bytes"
                    )));
                }
                if wire::response_complete(&raw, head_only) {
                    break;
                }
            }
            // A TLS peer that closes without close_notify (Python's ssl does) ends a
            // read-to-EOF body like a plain close; a truncated head still fails to parse.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => {
                return Err(HttpError::Io(format!(
                    "Failed to read the response from {addr}: {e}"
                )))
            }
        }
    }
    wire::parse_response_to(&raw, head_only)
}
