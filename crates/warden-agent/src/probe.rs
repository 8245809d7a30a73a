//! Probing other members' REST API (`GET /patroni`), as Patroni does before a leader
//! race: 2 s timeout, no retry, all members in parallel, through the agent's one
//! [`RestClient`] (http and https).

use serde_json::Value;
use std::time::Duration;
use warden_core::cluster::truthy;
use warden_core::ha::PeerStatus;
use warden_http::RestClient;

/// Patroni's timeout for a member probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Probes members in parallel: (name, api base URL `scheme://host:port`), over http or
/// https as the member's `api_url` says.
pub async fn probe_members(rest: &RestClient, members: Vec<(String, String)>) -> Vec<PeerStatus> {
    let futs = members.into_iter().map(|(name, base)| async move {
        let url = format!("{base}/patroni");
        match rest.request("GET", &url, None, PROBE_TIMEOUT).await {
            Ok(r) => peer_from_status(&name, &r.text()),
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
