//! In-memory [`Dcs`] with etcd semantics (revisions, leases, create-only and
//! compare-and-set transactions) and a manually advanced clock, for unit tests and
//! simulations of the HA logic.
//!
//! Several agents share one [`MemoryStore`]; each agent is a [`MemoryDcs`] with its own
//! lease. Leases expire only when the clock is moved with [`MemoryStore::advance`].

use crate::{event_wakes, normalize_prefix, Change, Dcs, DcsError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use warden_core::cluster::{Cluster, KeyValue};

#[derive(Clone, Debug)]
struct MemKv {
    value: String,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
}

#[derive(Clone, Copy, Debug)]
struct MemLease {
    ttl: u64,
    expires: u64,
}

#[derive(Debug)]
struct Store {
    kvs: BTreeMap<String, MemKv>,
    revision: i64,
    leases: HashMap<i64, MemLease>,
    next_lease: i64,
    now: u64,
    available: bool,
    prefixes: Vec<String>,
}

/// The shared in-memory key space (one "etcd cluster"). Cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    store: Arc<Mutex<Store>>,
    wake: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store at clock 0, available.
    pub fn new() -> MemoryStore {
        MemoryStore {
            store: Arc::new(Mutex::new(Store {
                kvs: BTreeMap::new(),
                revision: 1,
                leases: HashMap::new(),
                next_lease: 0x1000,
                now: 0,
                available: true,
                prefixes: Vec::new(),
            })),
            wake: Arc::new(tokio::sync::watch::channel(0u64).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock forward by `secs`; leases not refreshed within their TTL expire
    /// and their keys are deleted.
    pub fn advance(&self, secs: u64) {
        let mut s = self.lock();
        s.now += secs;
        let now = s.now;
        let expired: Vec<i64> = s
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.drop_lease(&mut s, id);
        }
    }

    /// Current clock value (seconds since creation).
    pub fn now(&self) -> u64 {
        self.lock().now
    }

    /// Makes every operation fail with [`DcsError::Unavailable`] (false) or work again.
    pub fn set_available(&self, available: bool) {
        self.lock().available = available;
    }

    /// Raw put of a full key without lease (e.g. to write garbage in tests).
    pub fn put_raw(&self, key: &str, value: &str) {
        let mut s = self.lock();
        self.put_locked(&mut s, key, value, 0);
    }

    /// Raw read of a full key: (value, mod_revision, lease).
    pub fn get_raw(&self, key: &str) -> Option<(String, i64, i64)> {
        self.lock()
            .kvs
            .get(key)
            .map(|kv| (kv.value.clone(), kv.mod_revision, kv.lease))
    }

    /// Whether lease `id` currently exists.
    pub fn lease_alive(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    fn drop_lease(&self, s: &mut Store, id: i64) {
        s.leases.remove(&id);
        let keys: Vec<String> = s
            .kvs
            .iter()
            .filter(|(_, kv)| kv.lease == id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete_locked(s, &k);
        }
    }

    fn notify(&self, s: &Store, key: &str, change: Change<'_>) {
        let wakes = s.prefixes.iter().any(|p| {
            key.strip_prefix(p.as_str())
                .is_some_and(|rel| event_wakes(rel, change))
        });
        if wakes {
            self.wake.send_modify(|c| *c = c.wrapping_add(1));
        }
    }

    fn put_locked(&self, s: &mut Store, key: &str, value: &str, lease: i64) {
        s.revision += 1;
        let rev = s.revision;
        let prev = s.kvs.get(key).cloned();
        let create_revision = prev.as_ref().map(|p| p.create_revision).unwrap_or(rev);
        s.kvs.insert(
            key.to_string(),
            MemKv {
                value: value.to_string(),
                create_revision,
                mod_revision: rev,
                lease,
            },
        );
        let change = match &prev {
            None => Change::Created,
            Some(p) => Change::Updated {
                prev: Some(p.value.as_str()),
                new: value,
            },
        };
        self.notify(s, key, change);
    }

    fn delete_locked(&self, s: &mut Store, key: &str) -> bool {
        if s.kvs.remove(key).is_some() {
            s.revision += 1;
            self.notify(s, key, Change::Deleted);
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Agent {
    lease: Option<i64>,
    last_refresh: u64,
    ttl: u64,
}

/// One agent's view of a [`MemoryStore`]: its own lease, the cluster prefix. Cheap to
/// clone (clones share the lease).
#[derive(Clone)]
pub struct MemoryDcs {
    store: MemoryStore,
    prefix: String,
    agent: Arc<Mutex<Agent>>,
}

type Guards<'a> = (MutexGuard<'a, Store>, MutexGuard<'a, Agent>);

impl MemoryDcs {
    /// An agent working on `prefix` (normalised like [`crate::cluster_prefix`]) in `store`
    /// with lease TTL `ttl` seconds.
    pub fn new(store: &MemoryStore, prefix: &str, ttl: u64) -> MemoryDcs {
        let prefix = normalize_prefix(prefix);
        {
            let mut s = store.lock();
            if !s.prefixes.contains(&prefix) {
                s.prefixes.push(prefix.clone());
            }
        }
        MemoryDcs {
            store: store.clone(),
            prefix,
            agent: Arc::new(Mutex::new(Agent {
                ttl: ttl.max(1),
                ..Agent::default()
            })),
        }
    }

    /// A fresh store with one agent on `/service/memory/`.
    pub fn standalone(ttl: u64) -> MemoryDcs {
        MemoryDcs::new(&MemoryStore::new(), "/service/memory/", ttl)
    }

    /// The shared store.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Moves the shared clock forward (see [`MemoryStore::advance`]).
    pub fn advance(&self, secs: u64) {
        self.store.advance(secs)
    }

    /// The lease currently held, if any (it may have expired in the store meanwhile).
    pub fn last_lease_id(&self) -> Option<i64> {
        self.agent.lock().unwrap_or_else(|p| p.into_inner()).lease
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }

    fn guards(&self) -> Result<Guards<'_>, DcsError> {
        let s = self.store.lock();
        if !s.available {
            return Err(DcsError::Unavailable(
                "memory DCS is marked unavailable".into(),
            ));
        }
        let a = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        Ok((s, a))
    }

    /// Our lease (granted if missing or after a TTL change; refreshed when `force` or
    /// older than ttl/3).
    fn lease(s: &mut Store, a: &mut Agent, force: bool) -> i64 {
        if let Some(id) = a.lease {
            let alive = s.leases.get(&id).copied();
            match alive {
                Some(l) if l.ttl == a.ttl => {
                    if force || s.now.saturating_sub(a.last_refresh) >= a.ttl / 3 {
                        let now = s.now;
                        if let Some(l) = s.leases.get_mut(&id) {
                            l.expires = now + l.ttl;
                        }
                        a.last_refresh = now;
                    }
                    return id;
                }
                _ => a.lease = None,
            }
        }
        s.next_lease += 1;
        let id = s.next_lease;
        let expires = s.now + a.ttl;
        s.leases.insert(
            id,
            MemLease {
                ttl: a.ttl,
                expires,
            },
        );
        a.lease = Some(id);
        a.last_refresh = s.now;
        id
    }

    fn cas_put(&self, rel: &str, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put_revision(rel, json, version)
            .map(|r| r.is_some())
    }

    /// As [`Self::cas_put`], returning the new mod_revision when written.
    fn cas_put_revision(
        &self,
        rel: &str,
        json: &str,
        version: Option<i64>,
    ) -> Result<Option<i64>, DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key(rel);
        if let Some(v) = version {
            let current = s.kvs.get(&key).map(|kv| kv.mod_revision).unwrap_or(0);
            if current != v {
                return Ok(None);
            }
        }
        self.store.put_locked(&mut s, &key, json, 0);
        Ok(Some(s.revision))
    }

    fn put_if_changed(&self, rel: &str, json: &str) -> Result<(), DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key(rel);
        if s.kvs.get(&key).is_some_and(|kv| kv.value == json) {
            return Ok(());
        }
        self.store.put_locked(&mut s, &key, json, 0);
        Ok(())
    }
}

impl Dcs for MemoryDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let (s, _a) = self.guards()?;
        let kvs: Vec<KeyValue> = s
            .kvs
            .range(self.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&self.prefix))
            .map(|(k, kv)| KeyValue {
                key: k[self.prefix.len()..].to_string(),
                value: kv.value.clone(),
                mod_revision: kv.mod_revision,
                lease: kv.lease,
            })
            .collect();
        Ok(Cluster::from_kvs(&kvs))
    }

    async fn touch_member(&self, name: &str, data_json: &str) -> Result<(), DcsError> {
        let (mut s, mut a) = self.guards()?;
        let id = Self::lease(&mut s, &mut a, false);
        let key = self.key(&format!("members/{name}"));
        if s.kvs
            .get(&key)
            .is_some_and(|kv| kv.value == data_json && kv.lease == id)
        {
            return Ok(());
        }
        self.store.put_locked(&mut s, &key, data_json, id);
        Ok(())
    }

    async fn attempt_to_acquire_leader(&self, name: &str) -> Result<bool, DcsError> {
        let (mut s, mut a) = self.guards()?;
        let id = Self::lease(&mut s, &mut a, true);
        let key = self.key("leader");
        if s.kvs.contains_key(&key) {
            return Ok(false);
        }
        self.store.put_locked(&mut s, &key, name, id);
        Ok(true)
    }

    async fn update_leader(&self, name: &str) -> Result<bool, DcsError> {
        let (mut s, mut a) = self.guards()?;
        let id = Self::lease(&mut s, &mut a, true);
        let key = self.key("leader");
        match s.kvs.get(&key) {
            Some(kv) if kv.value == name && kv.lease == id => Ok(true),
            Some(kv) if kv.value != name => Ok(false),
            _ => {
                self.store.put_locked(&mut s, &key, name, id);
                Ok(true)
            }
        }
    }

    async fn take_leader(&self, name: &str) -> Result<(), DcsError> {
        let (mut s, mut a) = self.guards()?;
        let id = Self::lease(&mut s, &mut a, true);
        let key = self.key("leader");
        self.store.put_locked(&mut s, &key, name, id);
        Ok(())
    }

    async fn delete_leader(&self, name: &str) -> Result<bool, DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key("leader");
        if s.kvs.get(&key).is_some_and(|kv| kv.value == name) {
            Ok(self.store.delete_locked(&mut s, &key))
        } else {
            Ok(false)
        }
    }

    async fn race_initialize(&self) -> Result<bool, DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key("initialize");
        if s.kvs.contains_key(&key) {
            return Ok(false);
        }
        self.store.put_locked(&mut s, &key, "", 0);
        Ok(true)
    }

    async fn set_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        self.cas_put("initialize", sysid, None).map(|_| ())
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key("initialize");
        self.store.delete_locked(&mut s, &key);
        Ok(())
    }

    async fn set_config(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put("config", json, version)
    }

    async fn set_failover(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        self.cas_put("failover", json, version)
    }

    async fn set_sync(&self, json: &str, version: Option<i64>) -> Result<Option<i64>, DcsError> {
        self.cas_put_revision("sync", json, version)
    }

    async fn delete_sync(&self, version: i64) -> Result<bool, DcsError> {
        let (mut s, _a) = self.guards()?;
        let key = self.key("sync");
        if s.kvs.get(&key).is_some_and(|kv| kv.mod_revision == version) {
            Ok(self.store.delete_locked(&mut s, &key))
        } else {
            Ok(false)
        }
    }

    async fn set_status(&self, json: &str) -> Result<(), DcsError> {
        self.put_if_changed("status", json)
    }

    async fn set_history(&self, json: &str) -> Result<(), DcsError> {
        self.put_if_changed("history", json)
    }

    async fn set_failsafe(&self, json: &str) -> Result<(), DcsError> {
        self.put_if_changed("failsafe", json)
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let (mut s, _a) = self.guards()?;
        let keys: Vec<String> = s
            .kvs
            .keys()
            .filter(|k| k.starts_with(&self.prefix))
            .cloned()
            .collect();
        for k in keys {
            self.store.delete_locked(&mut s, &k);
        }
        Ok(())
    }

    async fn revoke_lease(&self) -> Result<(), DcsError> {
        let (mut s, mut a) = self.guards()?;
        if let Some(id) = a.lease.take() {
            self.store.drop_lease(&mut s, id);
        }
        Ok(())
    }

    fn set_ttl(&self, ttl: u64) {
        self.agent.lock().unwrap_or_else(|p| p.into_inner()).ttl = ttl.max(1);
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.wake.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn acquire_update_and_expiry() {
        block(async {
            let store = MemoryStore::new();
            let a = MemoryDcs::new(&store, "/service/batman", 30);
            let b = MemoryDcs::new(&store, "/service/batman/", 30);
            let mut rx = b.subscribe();
            let start = *rx.borrow_and_update();

            assert!(a.attempt_to_acquire_leader("a").await.unwrap());
            assert!(!b.attempt_to_acquire_leader("b").await.unwrap());
            assert!(rx.has_changed().unwrap());
            assert!(a.update_leader("a").await.unwrap());
            assert!(!b.update_leader("b").await.unwrap());
            assert!(!b.delete_leader("b").await.unwrap());

            let c = a.get_cluster().await.unwrap();
            let leader = c.leader.expect("leader");
            assert_eq!(leader.name, "a");
            assert_eq!(Some(leader.session), a.last_lease_id());

            // a keeps updating: survives well past ttl
            for _ in 0..5 {
                a.advance(10);
                b.touch_member("b", "{}").await.unwrap();
                assert!(a.update_leader("a").await.unwrap());
            }
            // a stops: lock expires after ttl
            let seen = *rx.borrow_and_update();
            a.advance(29);
            assert!(b.get_cluster().await.unwrap().leader.is_some());
            a.advance(1);
            assert!(b.get_cluster().await.unwrap().leader.is_none());
            assert_ne!(*rx.borrow_and_update(), seen);
            assert!(b.attempt_to_acquire_leader("b").await.unwrap());
            // a's lease is gone: update_leader grants a new one but b holds the lock
            assert!(!a.update_leader("a").await.unwrap());
            assert!(start != *rx.borrow());
            assert!(b.delete_leader("b").await.unwrap());
        });
    }

    #[test]
    fn ttl_change_keeps_lock() {
        block(async {
            let a = MemoryDcs::standalone(30);
            assert!(a.attempt_to_acquire_leader("a").await.unwrap());
            let old = a.last_lease_id().unwrap();
            a.set_ttl(20);
            assert!(a.update_leader("a").await.unwrap());
            let new = a.last_lease_id().unwrap();
            assert_ne!(old, new);
            let c = a.get_cluster().await.unwrap();
            assert_eq!(c.leader.unwrap().session, new);
            // not refreshed: the new lease (ttl 20) expires first
            a.advance(20);
            assert!(a.get_cluster().await.unwrap().leader.is_none());
        });
    }

    #[test]
    fn ttl_change_then_refresh_keeps_lock() {
        block(async {
            let a = MemoryDcs::standalone(30);
            assert!(a.attempt_to_acquire_leader("a").await.unwrap());
            a.set_ttl(20);
            assert!(a.update_leader("a").await.unwrap());
            for _ in 0..2 {
                a.advance(10);
                assert!(a.update_leader("a").await.unwrap());
            }
            // the old lease (ttl 30) expired at t=30; the lock lives on the new one
            a.advance(15);
            assert!(a.store().now() >= 35);
            let c = a.get_cluster().await.unwrap();
            assert_eq!(c.leader.map(|l| l.name).as_deref(), Some("a"));
        });
    }

    #[test]
    fn initialize_config_members_unavailable() {
        block(async {
            let a = MemoryDcs::standalone(30);
            assert!(a.race_initialize().await.unwrap());
            assert!(!a.race_initialize().await.unwrap());
            a.set_initialize("7268616322854375442").await.unwrap();
            assert_eq!(
                a.get_cluster().await.unwrap().initialize.as_deref(),
                Some("7268616322854375442")
            );
            a.cancel_initialization().await.unwrap();
            assert!(a.get_cluster().await.unwrap().initialize.is_none());

            assert!(a.set_config(r#"{"ttl":30}"#, None).await.unwrap());
            let v = a.get_cluster().await.unwrap().config.unwrap().version;
            assert!(!a.set_config(r#"{"ttl":20}"#, Some(v + 100)).await.unwrap());
            assert!(a.set_config(r#"{"ttl":20}"#, Some(v)).await.unwrap());

            a.touch_member("m1", r#"{"role":"replica"}"#).await.unwrap();
            a.store().put_raw("/service/memory/members/x", "garbage{");
            let c = a.get_cluster().await.unwrap();
            assert_eq!(c.members.len(), 2);
            assert_eq!(c.members[0].session, a.last_lease_id().unwrap());
            assert_eq!(c.members[1].name, "x");

            a.store().set_available(false);
            assert!(matches!(
                a.get_cluster().await,
                Err(DcsError::Unavailable(_))
            ));
            a.store().set_available(true);
            a.revoke_lease().await.unwrap();
            let c = a.get_cluster().await.unwrap();
            assert_eq!(c.members.len(), 1);
            a.delete_cluster().await.unwrap();
            assert_eq!(a.get_cluster().await.unwrap(), Cluster::default());
        });
    }
}
