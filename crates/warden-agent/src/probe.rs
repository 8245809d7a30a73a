//! Probing other members' REST API (`GET /patroni`), as Patroni does before a leader
//! race: 2 s timeout, no retry, all members in parallel.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_core::cluster::truthy;
use warden_core::ha::PeerStatus;

/// Largest status body we accept from a peer.
const MAX_BODY: usize = 1 << 20;

/// Sends `GET <path>` over plain HTTP/1.0 to `base` (`http://host:port`) and returns the
/// status code and body. HTTP/1.0 keeps both Patroni's and Warden's servers from
/// answering chunked.
pub async fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let hostport = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported API URL {base} (only http:// is supported yet)"))?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(hostport)
            .await
            .map_err(|e| format!("connect {hostport}: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: Patroni/{} Warden\r\nAccept: application/json\r\n\r\n",
            warden_core::PATRONI_COMPAT_VERSION
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send to {hostport}: {e}"))?;
        let mut buf = Vec::new();
        s.take(MAX_BODY as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read from {hostport}: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("malformed HTTP response from {hostport}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed status line from {hostport}"))?;
        Ok((code, body.to_string()))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("timeout after {timeout:?} talking to {hostport}"))?
}

/// Interprets a peer's `GET /patroni` body as C2.6 does.
pub fn peer_from_status(name: &str, body: &str) -> PeerStatus {
    let unreachable = PeerStatus {
        name: name.to_string(),
        reachable: false,
        is_primary: false,
        wal_position: 0,
        nofailover: false,
        failover_priority: 1,
        watchdog_failed: false,
    };
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return unreachable;
    };
    let Some(xlog) = v.get("xlog").and_then(Value::as_object) else {
        return unreachable;
    };
    let role = v.get("role").and_then(Value::as_str).unwrap_or("");
    let is_primary = xlog.contains_key("location") || role == "primary" || role == "master";
    let lsn = |k: &str| xlog.get(k).and_then(Value::as_u64).unwrap_or(0);
    let wal_position = if is_primary {
        0
    } else {
        lsn("received_location").max(lsn("replayed_location"))
    };
    let tags = v.get("tags");
    let nofailover_tag = tags.and_then(|t| t.get("nofailover")).map(truthy);
    let failover_priority = tags
        .and_then(|t| t.get("failover_priority"))
        .and_then(|p| {
            p.as_i64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(1);
    let nofailover = nofailover_tag.unwrap_or(failover_priority <= 0);
    PeerStatus {
        name: name.to_string(),
        reachable: true,
        is_primary,
        wal_position,
        nofailover,
        failover_priority: if nofailover { 0 } else { failover_priority },
        watchdog_failed: v.get("watchdog_failed").map(truthy).unwrap_or(false),
    }
}

/// Probes members in parallel: (name, api base URL).
pub async fn probe_members(members: Vec<(String, String)>) -> Vec<PeerStatus> {
    let futs = members.into_iter().map(|(name, base)| async move {
        match http_get(&base, "/patroni", Duration::from_secs(2)).await {
            Ok((_, body)) => peer_from_status(&name, &body),
            Err(e) => {
                tracing::debug!("probe of {name} failed: {e}");
                peer_from_status(&name, "")
            }
        }
    });
    futures::future::join_all(futs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peer_status() {
        let p = peer_from_status(
            "pg2",
            r#"{"state":"running","role":"replica","xlog":{"received_location":10,"replayed_location":12},"tags":{"failover_priority":"3"}}"#,
        );
        assert!(p.reachable && !p.is_primary);
        assert_eq!(p.wal_position, 12);
        assert_eq!(p.failover_priority, 3);
        let p = peer_from_status("pg1", r#"{"role":"primary","xlog":{"location":99}}"#);
        assert!(p.is_primary);
        assert_eq!(p.wal_position, 0);
        let p = peer_from_status(
            "pg3",
            r#"{"role":"replica","xlog":{},"tags":{"nofailover":true}}"#,
        );
        assert!(p.nofailover);
        assert!(!peer_from_status("x", r#"{"role":"replica"}"#).reachable);
        assert!(!peer_from_status("x", "garbage").reachable);
    }
}
