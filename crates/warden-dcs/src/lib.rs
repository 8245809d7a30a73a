//! The DCS layer of Warden: Patroni's etcd v3 key layout and leader-lock semantics
//! (spec/dcs.md), behind the [`Dcs`] trait.
//!
//! Two implementations:
//! * [`EtcdDcs`]: real etcd v3 over gRPC, one client per endpoint with fail-over between
//!   endpoints, every call bounded by `retry_timeout`, plus a background watch task that
//!   bumps a wake-up counter ([`Dcs::subscribe`]).
//! * [`MemoryDcs`]: an in-memory store with the same semantics, leases expiring on a
//!   manually advanced clock, for unit tests and simulations of the HA logic.
//!
//! [`AnyDcs`] wraps either one so callers can pick at run time without trait objects
//! (the trait uses `impl Future` returns and is therefore not object safe).

#![warn(missing_docs)]

use std::future::Future;
use std::time::Duration;

pub use warden_core::cluster::{Cluster, KeyValue};

mod etcd;
mod memory;

pub use etcd::EtcdDcs;
pub use memory::{MemoryDcs, MemoryStore};

/// Errors of every DCS operation.
///
/// `Display` is one line naming the etcd endpoint(s) and the innermost cause, e.g.
/// `etcd 127.0.0.1:2379: connection refused` or `etcd: all endpoints failed (a:2379:
/// connection refused; b:2379: request timed out after 5s)`, because it goes straight
/// into the agent's log lines and REST answers; the operation is named by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcsError {
    /// Every endpoint failed for a transient reason or the retry deadline passed; the
    /// message names each endpoint with its last error.
    #[error("{0}")]
    Unavailable(String),
    /// Our lease vanished and could not be replaced within the operation.
    #[error("etcd: our lease expired or was revoked")]
    LeaseLost,
    /// Any other (non transient) error, e.g. a permission problem or a bad argument;
    /// the message names the endpoint that gave it.
    #[error("{0}")]
    Other(String),
}

/// How to reach the DCS and which cluster to work on.
#[derive(Clone)]
pub struct DcsSettings {
    /// etcd endpoints: `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Key prefix of the cluster, e.g. `/service/batman/` (see [`cluster_prefix`]).
    /// A missing trailing `/` is added.
    pub prefix: String,
    /// Lease TTL in seconds (the `ttl` of the dynamic configuration).
    pub ttl: u64,
    /// Upper bound of every DCS call, retries included.
    pub retry_timeout: Duration,
    /// etcd user for authentication (with `password`).
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<String>,
}

impl DcsSettings {
    /// Settings for `/<namespace>/<scope>/` with Patroni's defaults (`ttl` 30 s,
    /// `retry_timeout` 10 s) and no authentication.
    pub fn new(endpoints: Vec<String>, namespace: &str, scope: &str) -> DcsSettings {
        DcsSettings {
            endpoints,
            prefix: cluster_prefix(namespace, scope),
            ttl: 30,
            retry_timeout: Duration::from_secs(10),
            username: None,
            password: None,
        }
    }
}

impl std::fmt::Debug for DcsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcsSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("retry_timeout", &self.retry_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The key prefix of a cluster: `'/' + namespace + '/' + scope + '/'` with every run of
/// `/` collapsed to one (spec/dcs.md §1). `cluster_prefix("/service/", "batman")` is
/// `/service/batman/`.
pub fn cluster_prefix(namespace: &str, scope: &str) -> String {
    normalize_prefix(&format!("/{namespace}/{scope}/"))
}

/// Collapses runs of `/` and makes sure the prefix starts and ends with `/`.
pub(crate) fn normalize_prefix(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 2);
    out.push('/');
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The DCS operations the HA loop, the REST API and the CLI need.
///
/// Every method is bounded by the configured `retry_timeout`. Methods returning
/// `Ok(false)` lost a compare-and-set (not an error).
pub trait Dcs: Send + Sync {
    /// Reads the whole cluster prefix (fresh, serializable read) and parses it.
    fn get_cluster(&self) -> impl Future<Output = Result<Cluster, DcsError>> + Send;

    /// Writes `members/<name>` with our lease (granted if missing, refreshed when the last
    /// refresh is older than `ttl/3`). Skipped when the data and the lease did not change
    /// since our last write.
    fn touch_member(
        &self,
        name: &str,
        data_json: &str,
    ) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Create-only transaction on `leader` with our lease, after a forced keepalive.
    /// `Ok(false)` when somebody else holds the lock.
    fn attempt_to_acquire_leader(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Renews the lock: forced keepalive; when the key already carries our lease and our
    /// name nothing is rewritten, otherwise the nested transaction of spec §4.
    /// `Ok(false)` when somebody else holds the lock.
    fn update_leader(&self, name: &str) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Unconditional put of `leader` with our lease (right after a bootstrap).
    fn take_leader(&self, name: &str) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Deletes `leader` if its value is `name`; `Ok(false)` when it was not ours.
    fn delete_leader(&self, name: &str) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Create-only write of `initialize = ""`; `Ok(true)` if we won the bootstrap race.
    fn race_initialize(&self) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Plain put of `initialize = <sysid>`.
    fn set_initialize(&self, sysid: &str) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Deletes `initialize`.
    fn cancel_initialization(&self) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Writes `config`; with `Some(version)` only if its mod_revision equals `version`.
    fn set_config(
        &self,
        json: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Writes `sync`; with `Some(version)` only if its mod_revision equals `version`.
    /// Returns the key's new mod_revision (`None`: the compare failed), so that a plan of
    /// several writes can compare each against the one before.
    fn set_sync(
        &self,
        json: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<Option<i64>, DcsError>> + Send;

    /// Deletes `sync` if its mod_revision equals `version`.
    fn delete_sync(&self, version: i64) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Writes `failover`; with `Some(version)` only if its mod_revision equals `version`.
    fn set_failover(
        &self,
        json: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<bool, DcsError>> + Send;

    /// Plain put of `status`, skipped when unchanged since our last write.
    fn set_status(&self, json: &str) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Plain put of `history`, skipped when unchanged since our last write.
    fn set_history(&self, json: &str) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Plain put of `failsafe` (the leader's failsafe topology; the caller writes it
    /// only when it changed).
    fn set_failsafe(&self, json: &str) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Deletes every key under the prefix (`patronictl remove`).
    fn delete_cluster(&self) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Revokes our lease (its keys vanish at once); a new one is granted on next use.
    fn revoke_lease(&self) -> impl Future<Output = Result<(), DcsError>> + Send;

    /// Sets a new TTL: the current lease is dropped (not revoked) and a new one with the
    /// new TTL is granted on next use. The leader keeps the lock through `update_leader`.
    fn set_ttl(&self, ttl: u64);

    /// A counter bumped whenever something the HA loop should react to changed (leader
    /// created/deleted/renamed, config, failover, initialize, member added/removed).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Either DCS implementation, chosen at run time; implements [`Dcs`] by delegation.
#[derive(Clone)]
pub enum AnyDcs {
    /// Real etcd v3.
    Etcd(EtcdDcs),
    /// In-memory store.
    Memory(MemoryDcs),
}

impl AnyDcs {
    /// The lease currently held by this agent, if any.
    pub fn last_lease_id(&self) -> Option<i64> {
        match self {
            AnyDcs::Etcd(d) => d.last_lease_id(),
            AnyDcs::Memory(d) => d.last_lease_id(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDcs::Etcd($d) => $e,
            AnyDcs::Memory($d) => $e,
        }
    };
}

impl Dcs for AnyDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        delegate!(self, d => d.get_cluster().await)
    }
    async fn touch_member(&self, name: &str, data_json: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.touch_member(name, data_json).await)
    }
    async fn attempt_to_acquire_leader(&self, name: &str) -> Result<bool, DcsError> {
        delegate!(self, d => d.attempt_to_acquire_leader(name).await)
    }
    async fn update_leader(&self, name: &str) -> Result<bool, DcsError> {
        delegate!(self, d => d.update_leader(name).await)
    }
    async fn take_leader(&self, name: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.take_leader(name).await)
    }
    async fn delete_leader(&self, name: &str) -> Result<bool, DcsError> {
        delegate!(self, d => d.delete_leader(name).await)
    }
    async fn race_initialize(&self) -> Result<bool, DcsError> {
        delegate!(self, d => d.race_initialize().await)
    }
    async fn set_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.set_initialize(sysid).await)
    }
    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        delegate!(self, d => d.cancel_initialization().await)
    }
    async fn set_config(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        delegate!(self, d => d.set_config(json, version).await)
    }
    async fn set_failover(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        delegate!(self, d => d.set_failover(json, version).await)
    }
    async fn set_sync(&self, json: &str, version: Option<i64>) -> Result<Option<i64>, DcsError> {
        delegate!(self, d => d.set_sync(json, version).await)
    }
    async fn delete_sync(&self, version: i64) -> Result<bool, DcsError> {
        delegate!(self, d => d.delete_sync(version).await)
    }
    async fn set_status(&self, json: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.set_status(json).await)
    }
    async fn set_history(&self, json: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.set_history(json).await)
    }
    async fn set_failsafe(&self, json: &str) -> Result<(), DcsError> {
        delegate!(self, d => d.set_failsafe(json).await)
    }
    async fn delete_cluster(&self) -> Result<(), DcsError> {
        delegate!(self, d => d.delete_cluster().await)
    }
    async fn revoke_lease(&self) -> Result<(), DcsError> {
        delegate!(self, d => d.revoke_lease().await)
    }
    fn set_ttl(&self, ttl: u64) {
        delegate!(self, d => d.set_ttl(ttl))
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        delegate!(self, d => d.subscribe())
    }
}

/// What happened to one key under the prefix (input of [`event_wakes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// Key created (it did not exist before).
    Created,
    /// Key rewritten; `prev` = the old value when known.
    Updated { prev: Option<&'a str>, new: &'a str },
    /// Key deleted (explicitly or by lease expiry).
    Deleted,
}

/// Does a change of `rel_key` (relative to the prefix) wake the HA loop?
pub(crate) fn event_wakes(rel_key: &str, change: Change<'_>) -> bool {
    match rel_key {
        "leader" | "config" | "failover" | "initialize" => match change {
            Change::Created | Change::Deleted => true,
            Change::Updated { prev, new } => prev != Some(new),
        },
        _ => match rel_key.strip_prefix("members/") {
            Some(name) if !name.is_empty() && !name.contains('/') => match change {
                Change::Created | Change::Deleted => true,
                // Not every WAL position update, but a member that changes its tags
                // (e.g. a synchronous standby leaving the set before it stops) or its
                // state (e.g. running again) is worth a look now.
                Change::Updated {
                    prev: Some(prev),
                    new,
                } => {
                    let fields = |raw: &str| {
                        serde_json::from_str::<serde_json::Value>(raw)
                            .ok()
                            .map(|v| (v.get("tags").cloned(), v.get("state").cloned()))
                    };
                    fields(prev) != fields(new)
                }
                Change::Updated { prev: None, .. } => false,
            },
            _ => false,
        },
    }
}

/// Write-skip caches shared by both implementations.
#[derive(Default, Debug)]
pub(crate) struct WriteCache {
    /// (member name, data, lease) of our last member write.
    pub member: Option<(String, String, i64)>,
    /// Our last `status` write.
    pub status: Option<String>,
    /// Our last `history` write.
    pub history: Option<String>,
}

impl WriteCache {
    /// Forgets cached writes a change by somebody else made stale.
    pub fn invalidate(&mut self, rel_key: &str, new_value: Option<&str>) {
        let stale = |cached: &Option<String>| cached.as_deref() != new_value;
        match rel_key {
            "status" if stale(&self.status) => self.status = None,
            "history" if stale(&self.history) => self.history = None,
            _ => {
                if let Some(name) = rel_key.strip_prefix("members/") {
                    if let Some((n, data, _)) = &self.member {
                        if n == name && Some(data.as_str()) != new_value {
                            self.member = None;
                        }
                    }
                }
            }
        }
    }
}

impl WriteCache {
    /// Forgets cached writes that a fresh read of the cluster (`kvs`, keys relative to
    /// the prefix) shows to be missing or different, so the next write goes through even
    /// when the watch missed the change.
    pub fn reconcile(&mut self, kvs: &[KeyValue]) {
        let find = |rel: &str| kvs.iter().find(|kv| kv.key == rel);
        if let Some((name, data, lease)) = &self.member {
            let ok = find(&format!("members/{name}"))
                .is_some_and(|kv| &kv.value == data && kv.lease == *lease);
            if !ok {
                self.member = None;
            }
        }
        if let Some(v) = &self.status {
            if find("status").is_none_or(|kv| &kv.value != v) {
                self.status = None;
            }
        }
        if let Some(v) = &self.history {
            if find("history").is_none_or(|kv| &kv.value != v) {
                self.history = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(cluster_prefix("service", "batman"), "/service/batman/");
        assert_eq!(cluster_prefix("/service/", "batman"), "/service/batman/");
        assert_eq!(cluster_prefix("//a//b/", "/c/"), "/a/b/c/");
        assert_eq!(normalize_prefix("service/x"), "/service/x/");
    }

    #[test]
    fn wakes() {
        assert!(event_wakes("leader", Change::Created));
        assert!(event_wakes("leader", Change::Deleted));
        assert!(!event_wakes(
            "leader",
            Change::Updated {
                prev: Some("a"),
                new: "a"
            }
        ));
        assert!(event_wakes(
            "leader",
            Change::Updated {
                prev: Some("a"),
                new: "b"
            }
        ));
        assert!(event_wakes(
            "config",
            Change::Updated {
                prev: None,
                new: "{}"
            }
        ));
        assert!(event_wakes("members/a", Change::Created));
        assert!(event_wakes("members/a", Change::Deleted));
        assert!(!event_wakes(
            "members/a",
            Change::Updated {
                prev: Some("1"),
                new: "2"
            }
        ));
        let running = r#"{"state":"running","tags":{},"xlog_location":1}"#;
        assert!(!event_wakes(
            "members/a",
            Change::Updated {
                prev: Some(running),
                new: r#"{"state":"running","tags":{},"xlog_location":2}"#
            }
        ));
        assert!(event_wakes(
            "members/a",
            Change::Updated {
                prev: Some(running),
                new: r#"{"state":"running","tags":{"nosync":true},"xlog_location":2}"#
            }
        ));
        assert!(event_wakes(
            "members/a",
            Change::Updated {
                prev: Some(running),
                new: r#"{"state":"stopping","tags":{},"xlog_location":2}"#
            }
        ));
        assert!(!event_wakes("members/a/b", Change::Created));
        assert!(!event_wakes("status", Change::Created));
        assert!(!event_wakes("history", Change::Deleted));
    }

    #[test]
    fn debug_redacts_password() {
        let mut s = DcsSettings::new(vec!["127.0.0.1:2379".into()], "service", "b");
        s.password = Some("secret".into());
        assert!(!format!("{s:?}").contains("secret"));
    }
}
