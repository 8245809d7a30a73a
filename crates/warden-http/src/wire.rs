//! The HTTP/1.1 wire format as patronictl's urllib3 pool speaks it: URL parsing, the
//! request bytes, and a response parser that understands `Content-Length`, chunked
//! and read-to-EOF bodies. Pure functions, no I/O.

use crate::HttpError;

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

/// A parsed `http[s]://host:port/path` URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` as written, without any `user:password@` (the Host header, and
    /// what error messages show: never the credentials of a URL).
    pub(crate) netloc: String,
    pub(crate) path: String,
}

impl Url {
    /// `scheme://netloc/path` without credentials, for messages.
    pub(crate) fn display(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.netloc, self.path)
    }

    /// `host:port` for `TcpStream::connect` (IPv6 literals in brackets).
    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn parse_url(url: &str) -> Result<Url, HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::Url("No host specified in URL".into()))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(HttpError::Url(format!("Unsupported URL scheme {other:?}"))),
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, path) = rest.split_at(split);
    let netloc_nouser = netloc.rsplit_once('@').map(|(_, h)| h).unwrap_or(netloc);
    // Messages quote the URL without its credentials.
    let shown = format!("{scheme}://{netloc_nouser}{path}");
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = netloc_nouser.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| HttpError::Url(format!("Invalid URL {shown:?}")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| HttpError::Url(format!("Invalid port in URL {shown:?}")))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match netloc_nouser.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| HttpError::Url(format!("Invalid port in URL {shown:?}")))?,
            ),
            None => (netloc_nouser.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(HttpError::Url(format!(
            "No host specified in URL {shown:?}"
        )));
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

/// The request bytes: what urllib3 sends for patronictl — the body (already JSON text)
/// **without** a Content-Type header, `Content-Length: 0` for body-less POST/PUT/PATCH,
/// lower-case `authorization`/`user-agent` as `urllib3.make_headers` writes them, and
/// `Connection: close` since every request uses its own connection.
pub(crate) fn build_request(
    method: &str,
    u: &Url,
    body: Option<&str>,
    auth_header: Option<&str>,
    user_agent: &str,
) -> Vec<u8> {
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
    if let Some(auth) = auth_header {
        req.push_str(&format!("authorization: {auth}\r\n"));
    }
    req.push_str(&format!(
        "user-agent: {user_agent}\r\nConnection: close\r\n\r\n"
    ));
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b.as_bytes());
    }
    bytes
}

/// A REST response: status code, headers and raw body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Header fields in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// Body bytes (dechunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the body of a response is delimited.
enum Framing {
    /// No body (HEAD, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Eof,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    /// Offset of the body in the raw bytes.
    body_start: usize,
}

/// Parses the status line and headers once `\r\n\r\n` has arrived; `Ok(None)` while
/// the head is still incomplete.
fn parse_head(raw: &[u8], head_only: bool) -> Result<Option<Head>, HttpError> {
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| HttpError::Protocol(format!("Bad HTTP status line {status_line:?}")))?;
    let mut headers = Vec::new();
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
            headers.push((k.to_string(), v.to_string()));
        }
    }
    let framing = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Eof
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        body_start: head_end + 4,
    }))
}

/// Whether `raw` holds a whole response, so reading can stop before the server closes
/// (a server that keeps the connection open, or a TLS server that closes without
/// `close_notify`, must not cost a timeout or an error).
pub(crate) fn response_complete(raw: &[u8], head_only: bool) -> bool {
    let Ok(head) = parse_head(raw, head_only) else {
        // Malformed: stop reading, the parser reports it.
        return true;
    };
    let Some(head) = head else {
        return false;
    };
    let body = &raw[head.body_start..];
    match head.framing {
        Framing::None => true,
        Framing::Length(n) => body.len() >= n,
        Framing::Chunked => chunked_complete(body),
        Framing::Eof => false,
    }
}

/// Parses a complete HTTP/1.x response (read until EOF or until complete).
pub fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    parse_response_to(raw, false)
}

/// [`parse_response`] for the answer to a HEAD request (`head_only`: no body).
pub(crate) fn parse_response_to(raw: &[u8], head_only: bool) -> Result<Response, HttpError> {
    let head = parse_head(raw, head_only)?
        .ok_or_else(|| HttpError::Protocol("Incomplete HTTP response".into()))?;
    let rest = &raw[head.body_start..];
    let body = match head.framing {
        Framing::None => Vec::new(),
        Framing::Chunked => dechunk(rest)?,
        Framing::Length(n) => rest[..n.min(rest.len())].to_vec(),
        Framing::Eof => rest.to_vec(),
    };
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body,
    })
}

fn chunk_size(line: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(line);
    usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16).ok()
}

/// Whether a chunked body has reached its last chunk and the end of the trailers.
fn chunked_complete(mut data: &[u8]) -> bool {
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return false;
        };
        let Some(size) = chunk_size(&data[..eol]) else {
            // Malformed: stop reading, dechunk reports it.
            return true;
        };
        data = &data[eol + 2..];
        if size == 0 {
            // Trailer fields up to an empty line.
            loop {
                let Some(eol) = find(data, b"\r\n") else {
                    return false;
                };
                if eol == 0 {
                    return true;
                }
                data = &data[eol + 2..];
            }
        }
        match size.checked_add(2) {
            Some(n) if data.len() >= n => data = &data[n..],
            _ => return false,
        }
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return Ok(out);
        };
        let size = chunk_size(&data[..eol])
            .ok_or_else(|| HttpError::Protocol("Bad chunked encoding".into()))?;
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
    fn urls() {
        let u = parse_url("http://[::1]:8008/patroni").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8008, "/patroni")
        );
        assert_eq!(u.addr(), "[::1]:8008");
        let u = parse_url("http://h").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = parse_url("https://h/x").unwrap();
        assert_eq!((u.https, u.port), (true, 443));
        assert!(parse_url("").is_err());
        assert!(parse_url("ftp://h/").is_err());
    }

    #[test]
    fn url_credentials_stay_out_of_messages_and_headers() {
        let u = parse_url("http://user:secret@h:1/patroni").unwrap();
        assert_eq!(u.netloc, "h:1");
        assert_eq!(u.display(), "http://h:1/patroni");
        let e = parse_url("http://user:secret@h:x/")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(r.header("server"), Some("x"));
        let r = parse_response(b"HTTP/1.1 412 X\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.text().as_str()), (412, "abc"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "hello world");
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        // HEAD: Content-Length describes the GET body, none follows.
        let r = parse_response_to(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert!(r.body.is_empty());
    }

    #[test]
    fn completeness() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for n in 0..full.len() {
            assert!(!response_complete(&full[..n], false), "{n}");
        }
        assert!(response_complete(full, false));
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        for n in 0..chunked.len() {
            assert!(!response_complete(&chunked[..n], false), "{n}");
        }
        assert!(response_complete(chunked, false));
        // Read-to-EOF bodies (Patroni's bare health-check answers) are never complete.
        assert!(!response_complete(b"HTTP/1.0 200 OK\r\n\r\n", false));
        assert!(response_complete(b"HTTP/1.0 200 OK\r\n\r\n", true));
        assert!(response_complete(b"HTTP/1.1 204 No Content\r\n\r\n", false));
        assert!(response_complete(b"nonsense\r\n\r\n", false));
    }

    #[test]
    fn request_bytes() {
        let u = parse_url("http://127.0.0.1:8008/switchover").unwrap();
        let req = build_request(
            "post",
            &u,
            Some(r#"{"candidate": "b", "leader": "a"}"#),
            Some("Basic dTpw"),
            "UA",
        );
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /switchover HTTP/1.1\r\nHost: 127.0.0.1:8008\r\n"));
        assert!(text.contains("Content-Length: 33\r\n"));
        assert!(text.contains("authorization: Basic dTpw\r\n"));
        assert!(text.contains("user-agent: UA\r\nConnection: close\r\n"));
        assert!(!text.to_ascii_lowercase().contains("content-type"));
        assert!(text.ends_with("\r\n\r\n{\"candidate\": \"b\", \"leader\": \"a\"}"));
        let u = parse_url("http://h:1/patroni").unwrap();
        let get = String::from_utf8(build_request("GET", &u, None, None, "UA")).unwrap();
        assert!(!get.contains("Content-Length") && !get.contains("authorization"));
        let post = String::from_utf8(build_request("POST", &u, None, None, "UA")).unwrap();
        assert!(post.contains("Content-Length: 0\r\n"));
    }
}
