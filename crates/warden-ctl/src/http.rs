//! A tiny HTTP/1.1 client for the members' REST APIs, sending what patronictl's
//! urllib3 pool sends: the JSON body (Python `json.dumps`) **without** a Content-Type
//! header, Basic auth from `ctl.authentication`/`restapi.authentication`, and a
//! `Patroni/<v> …` User-Agent.
//!
//! Plain `http://` goes over a tokio `TcpStream` (`Connection: close`, response read
//! to EOF, `Content-Length` and chunked bodies understood). `https://` is delegated to
//! the `curl` binary when it is installed (no TLS stack in the workspace).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to call the REST APIs (`ctl` / `restapi` settings of the configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestSettings {
    /// Basic auth `user:password`.
    pub auth: Option<String>,
    /// `-k/--insecure` or `ctl.insecure`: do not verify server certificates.
    pub insecure: bool,
    /// `ctl.cacert`, else `restapi.cafile`.
    pub cacert: Option<String>,
    /// `ctl.certfile` (client certificate).
    pub certfile: Option<String>,
    /// `ctl.keyfile`.
    pub keyfile: Option<String>,
    /// `ctl.keyfile_password`.
    pub keyfile_password: Option<String>,
}

/// A REST response: status code and raw body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// Body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What went wrong while talking to a member (connection refused, bad URL, timeout…).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// `Member.get_endpoint_url(endpoint)`: the member `api_url` with its path replaced by
/// `/<endpoint>` (query and fragment dropped); without an endpoint the `api_url` itself.
pub fn endpoint_url(api_url: &str, endpoint: Option<&str>) -> String {
    let Some(ep) = endpoint else {
        return api_url.to_string();
    };
    let (scheme, rest) = match api_url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, api_url),
    };
    let netloc = rest.split(['/', '?', '#']).next().unwrap_or("");
    let path = if ep.starts_with('/') {
        ep.to_string()
    } else {
        format!("/{ep}")
    };
    match scheme {
        Some(s) => format!("{s}://{netloc}{path}"),
        None => path,
    }
}

/// Standard base64 (with padding), for the Basic `Authorization` header.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The REST client.
#[derive(Clone, Debug)]
pub struct RestClient {
    settings: RestSettings,
    user_agent: String,
    connect_timeout: Duration,
    timeout: Duration,
}

/// A parsed `http://host:port/path` URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` as written (the Host header).
    netloc: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError(format!("No host specified in URL {url:?}")))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(HttpError(format!("Unsupported URL scheme {other:?}"))),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, path) = rest.split_at(split);
    let netloc_nouser = netloc.rsplit_once('@').map(|(_, h)| h).unwrap_or(netloc);
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = netloc_nouser.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| HttpError(format!("Invalid URL {url:?}")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| HttpError(format!("Invalid port in URL {url:?}")))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match netloc_nouser.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| HttpError(format!("Invalid port in URL {url:?}")))?,
            ),
            None => (netloc_nouser.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(HttpError(format!("No host specified in URL {url:?}")));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    Ok(Url {
        https,
        host,
        port,
        netloc: netloc_nouser.to_string(),
        path,
    })
}

impl RestClient {
    /// A client with patronictl's User-Agent.
    pub fn new(settings: RestSettings) -> RestClient {
        RestClient {
            settings,
            user_agent: format!(
                "Patroni/{} Rust wardenctl/{} Linux",
                warden_core::PATRONI_COMPAT_VERSION,
                env!("CARGO_PKG_VERSION")
            ),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &RestSettings {
        &self.settings
    }

    /// The raw request bytes for `method url` with an optional body (exposed for tests).
    pub fn build_request(&self, method: &str, url: &str, body: Option<&str>) -> Vec<u8> {
        match parse_url(url) {
            Ok(u) => self.build(method, &u, body),
            Err(_) => Vec::new(),
        }
    }

    fn build(&self, method: &str, u: &Url, body: Option<&str>) -> Vec<u8> {
        let method = method.to_ascii_uppercase();
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: identity\r\n",
            u.path, u.netloc
        );
        match body {
            Some(b) => req.push_str(&format!("Content-Length: {}\r\n", b.len())),
            None if matches!(method.as_str(), "POST" | "PUT" | "PATCH") => {
                req.push_str("Content-Length: 0\r\n")
            }
            None => {}
        }
        if let Some(auth) = &self.settings.auth {
            req.push_str(&format!(
                "authorization: Basic {}\r\n",
                base64(auth.as_bytes())
            ));
        }
        req.push_str(&format!(
            "user-agent: {}\r\nConnection: close\r\n\r\n",
            self.user_agent
        ));
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b.as_bytes());
        }
        bytes
    }

    /// Performs one request. `Err` = no HTTP response (connection refused, timeout…).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Result<Response, HttpError> {
        let u = parse_url(url)?;
        if u.https {
            return self.curl(method, url, body).await;
        }
        let req = self.build(method, &u, body);
        let fut = async {
            let addr = if u.host.contains(':') {
                format!("[{}]:{}", u.host, u.port)
            } else {
                format!("{}:{}", u.host, u.port)
            };
            let mut stream =
                tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&addr))
                    .await
                    .map_err(|_| HttpError(format!("Connection to {addr} timed out")))?
                    .map_err(|e| {
                        HttpError(format!("Failed to establish a connection to {addr}: {e}"))
                    })?;
            stream
                .write_all(&req)
                .await
                .map_err(|e| HttpError(format!("Failed to send the request to {addr}: {e}")))?;
            let mut raw = Vec::new();
            stream
                .read_to_end(&mut raw)
                .await
                .map_err(|e| HttpError(format!("Failed to read the response from {addr}: {e}")))?;
            parse_response(&raw)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| HttpError(format!("Read timed out ({url})")))?
    }

    /// HTTPS through the `curl` binary.
    async fn curl(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Result<Response, HttpError> {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.arg("-sS")
            .arg("--http1.1")
            .arg("-X")
            .arg(method.to_ascii_uppercase())
            .arg("-H")
            .arg("Content-Type:")
            .arg("-H")
            .arg("Expect:")
            .arg("-A")
            .arg(&self.user_agent)
            .arg("--connect-timeout")
            .arg(self.connect_timeout.as_secs().to_string())
            .arg("-m")
            .arg(self.timeout.as_secs().to_string())
            .arg("-o")
            .arg("-")
            .arg("-w")
            .arg("\n%{http_code}");
        let s = &self.settings;
        if s.insecure {
            cmd.arg("-k");
        }
        if let Some(ca) = &s.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(cert) = &s.certfile {
            cmd.arg("--cert").arg(cert);
            if let Some(key) = &s.keyfile {
                cmd.arg("--key").arg(key);
            }
            if let Some(pw) = &s.keyfile_password {
                cmd.arg("--pass").arg(pw);
            }
        }
        if let Some(auth) = &s.auth {
            cmd.arg("-H")
                .arg(format!("Authorization: Basic {}", base64(auth.as_bytes())));
        }
        if body.is_some() {
            cmd.arg("--data-binary").arg("@-");
        }
        cmd.arg("--").arg(url);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| HttpError(format!("HTTPS needs the curl binary: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(b) = body {
                stdin
                    .write_all(b.as_bytes())
                    .await
                    .map_err(|e| HttpError(format!("curl: {e}")))?;
            }
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| HttpError(format!("curl: {e}")))?;
        if !out.status.success() {
            return Err(HttpError(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let raw = out.stdout;
        let split = raw.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&raw[(split + 1).min(raw.len())..])
            .trim()
            .parse::<u16>()
            .map_err(|_| HttpError("curl: no HTTP status".into()))?;
        if code == 0 {
            return Err(HttpError("curl: no HTTP response".into()));
        }
        Ok(Response {
            status: code,
            body: raw[..split].to_vec(),
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete HTTP/1.x response (read until EOF).
pub fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let head_end =
        find(raw, b"\r\n\r\n").ok_or_else(|| HttpError("Incomplete HTTP response".into()))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| HttpError(format!("Bad HTTP status line {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                content_length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = content_length {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return Ok(out);
        };
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError("Bad chunked encoding".into()))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let n = size.min(data.len());
        out.extend_from_slice(&data[..n]);
        data = &data[n..];
        if data.starts_with(b"\r\n") {
            data = &data[2..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url("http://10.0.0.1:8008/patroni", Some("switchover")),
            "http://10.0.0.1:8008/switchover"
        );
        assert_eq!(
            endpoint_url("https://h:8008/patroni?x=1", Some("config")),
            "https://h:8008/config"
        );
        assert_eq!(
            endpoint_url("http://h:8008/patroni", None),
            "http://h:8008/patroni"
        );
    }

    #[test]
    fn b64() {
        assert_eq!(base64(b"username:password"), "dXNlcm5hbWU6cGFzc3dvcmQ=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn request_has_no_content_type() {
        let c = RestClient::new(RestSettings {
            auth: Some("u:p".into()),
            ..Default::default()
        });
        let req = c.build_request(
            "post",
            "http://127.0.0.1:8008/switchover",
            Some(r#"{"candidate": "b", "leader": "a"}"#),
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /switchover HTTP/1.1\r\nHost: 127.0.0.1:8008\r\n"));
        assert!(text.contains("Content-Length: 33\r\n"));
        assert!(text.contains("authorization: Basic dTpw\r\n"));
        assert!(!text.to_ascii_lowercase().contains("content-type"));
        assert!(text.ends_with("\r\n\r\n{\"candidate\": \"b\", \"leader\": \"a\"}"));
        let get = String::from_utf8(c.build_request("GET", "http://h:1/patroni", None)).unwrap();
        assert!(!get.contains("Content-Length"));
    }

    #[test]
    fn urls() {
        let u = parse_url("http://[::1]:8008/patroni").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8008, "/patroni")
        );
        let u = parse_url("http://h").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(parse_url("").is_err());
        assert!(parse_url("ftp://h/").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        let r = parse_response(b"HTTP/1.1 412 X\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.text().as_str()), (412, "abc"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "hello world");
        assert!(parse_response(b"garbage").is_err());
    }
}
