//! Access control for the protected endpoints (rest-api.md §2): allowlist networks,
//! member hosts, Basic auth.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// An IP network (`10.0.0.0/8`, or a single address as /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of a single address.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    /// Parses `addr/prefix` (host bits may be set, like Python's `ip_network(v, False)`)
    /// or a bare address.
    pub fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        match s.split_once('/') {
            None => s.parse::<IpAddr>().ok().map(IpNet::host),
            Some((a, p)) => {
                let addr: IpAddr = a.trim().parse().ok()?;
                let prefix: u8 = p.trim().parse().ok()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (prefix <= max).then_some(IpNet { addr, prefix })
            }
        }
    }

    /// Does the network contain `ip`? (IPv4-mapped IPv6 addresses count as IPv4.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Resolves `restapi.allowlist` entries: CIDRs are parsed, IPs and host names resolved
/// (blocking DNS: call at start-up). Bad entries are logged and skipped.
pub fn resolve_allowlist(entries: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for e in entries {
        let e = e.trim();
        if e.contains('/') {
            match IpNet::parse(e) {
                Some(n) => out.push(n),
                None => tracing::error!("Invalid value \"{e}\" in the allowlist"),
            }
        } else if let Some(n) = IpNet::parse(e) {
            out.push(n);
        } else {
            match (e, 8080).to_socket_addrs() {
                Ok(addrs) => {
                    let before = out.len();
                    out.extend(addrs.map(|a| IpNet::host(a.ip())));
                    if out.len() == before {
                        tracing::error!("Failed to resolve {e}: no addresses");
                    }
                }
                Err(err) => tracing::error!("Failed to resolve {e}: {err}"),
            }
        }
    }
    out.dedup();
    out
}

/// Host and port of an `api_url` (`http(s)://host[:port]/...`); IPv6 in brackets.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Addresses of the hosts of the given `api_url`s (IP literals directly, names through
/// DNS with a short timeout each; failures are logged and skipped).
pub async fn resolve_member_hosts<'a>(urls: impl Iterator<Item = &'a str>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for url in urls {
        let Some((host, port)) = url_host_port(url) else {
            tracing::debug!("Failed to parse url {url}");
            continue;
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(IpNet::host(ip));
            continue;
        }
        // `host` is a name here (IP literals were handled above), so no brackets needed.
        let target = format!("{host}:{port}");
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(target)).await {
            Ok(Ok(addrs)) => out.extend(addrs.map(|a: SocketAddr| IpNet::host(a.ip()))),
            Ok(Err(e)) => tracing::error!("Failed to resolve {host}: {e}"),
            Err(_) => tracing::error!("Failed to resolve {host}: timed out"),
        }
    }
    out
}

/// Standard base64 (with padding) of `data`.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The expected Basic credentials (`base64(user:password)`); never logged.
#[derive(Clone)]
pub struct BasicAuth {
    key: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

impl BasicAuth {
    /// From `restapi.authentication`.
    pub fn new(username: &str, password: &str) -> BasicAuth {
        BasicAuth {
            key: base64_encode(format!("{username}:{password}").as_bytes()),
        }
    }

    /// Patroni's `check_auth_header`: None = accepted, else the 401 reason.
    pub fn check(&self, header: Option<&[u8]>) -> Option<&'static str> {
        match header {
            None => Some("no auth header received"),
            Some(h) => match h.strip_prefix(b"Basic ") {
                Some(token) if constant_time_eq(token, self.key.as_bytes()) => None,
                _ => Some("not authenticated"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let h = IpNet::parse("10.0.0.5/24").unwrap(); // host bits allowed
        assert!(h.contains("10.0.0.200".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(IpNet::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(IpNet::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(IpNet::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
        assert!(!IpNet::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.2".parse().unwrap()));
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("nonsense/8"), None);
        let l = resolve_allowlist(&["localhost".into(), "bad/x".into(), "192.168.0.0/16".into()]);
        assert!(l.iter().any(|n| n.contains("127.0.0.1".parse().unwrap())));
        assert!(l.iter().any(|n| n.contains("192.168.3.4".parse().unwrap())));
    }

    #[test]
    fn urls() {
        assert_eq!(
            url_host_port("http://10.0.0.1:8008/patroni"),
            Some(("10.0.0.1".into(), 8008))
        );
        assert_eq!(
            url_host_port("https://db.example/patroni"),
            Some(("db.example".into(), 443))
        );
        assert_eq!(
            url_host_port("http://[::1]:8008/patroni"),
            Some(("::1".into(), 8008))
        );
        assert_eq!(url_host_port("nonsense"), None);
        assert_eq!(url_host_port("http://:80/"), None);
    }

    #[test]
    fn basic_auth() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(
            base64_encode(b"username:password"),
            "dXNlcm5hbWU6cGFzc3dvcmQ="
        );
        let a = BasicAuth::new("username", "password");
        assert_eq!(a.check(None), Some("no auth header received"));
        assert_eq!(a.check(Some(b"Basic dXNlcm5hbWU6cGFzc3dvcmQ=")), None);
        assert_eq!(
            a.check(Some(b"basic dXNlcm5hbWU6cGFzc3dvcmQ=")),
            Some("not authenticated")
        );
        assert_eq!(
            a.check(Some(b"Basic dXNlcm5hbWU6cGFzc3dvcmQ")),
            Some("not authenticated")
        );
        assert_eq!(a.check(Some(b"")), Some("not authenticated"));
        assert!(!format!("{a:?}").contains("dXNl"));
    }
}
