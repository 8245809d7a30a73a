//! etcd v3 implementation of [`Dcs`].
//!
//! etcd-client spreads requests round-robin over its endpoints and never fails over, and
//! connecting to a dead endpoint "succeeds". So this module keeps one single-endpoint
//! [`Client`] per configured endpoint (connected lazily, dropped and re-created after a
//! transport failure) and does the fail-over itself: every call starts on the last good
//! endpoint and rotates to the next one on a transient error, until `retry_timeout`.

use crate::{event_wakes, normalize_prefix, Change, Dcs, DcsError, DcsSettings, WriteCache};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use warden_core::cluster::{Cluster, KeyValue};

/// Timeout of a TCP connect to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two rounds over all endpoints when every one failed fast.
const ROUND_PAUSE: Duration = Duration::from_millis(250);
/// Pause before the watch is re-established after a failure.
const WATCH_BACKOFF: Duration = Duration::from_secs(1);

/// The etcd v3 DCS. Cheap to clone (clones share the connection pool, the lease and the
/// watch task); the watch task stops when the last clone is dropped.
#[derive(Clone)]
pub struct EtcdDcs {
    inner: Arc<Inner>,
    _watch: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct LeaseState {
    id: Option<i64>,
    /// TTL the lease was granted with.
    ttl: u64,
    last_refresh: Instant,
}

struct Inner {
    endpoints: Vec<String>,
    prefix: String,
    retry_timeout: Duration,
    options: ConnectOptions,
    clients: Mutex<Vec<Option<Client>>>,
    preferred: AtomicUsize,
    ttl: AtomicU64,
    lease: tokio::sync::Mutex<LeaseState>,
    /// Mirror of `lease.id` readable without the async lock (0 = none).
    lease_id: AtomicI64,
    cache: Mutex<WriteCache>,
    wake: tokio::sync::watch::Sender<u64>,
    /// Highest revision returned by `get_cluster` (0 = none): where a watch without a
    /// revision of its own starts, so every change after the last cluster read wakes.
    read_rev: AtomicI64,
}

/// How an etcd error is handled.
enum Fail {
    /// Try another endpoint.
    Transient,
    /// The lease we used does not exist (any more).
    LeaseGone,
    /// Give up at once.
    Fatal,
}

fn classify(e: &etcd_client::Error) -> Fail {
    use etcd_client::Error as E;
    if e.to_string().contains("lease not found") {
        return Fail::LeaseGone;
    }
    match e {
        // Cancelled, Unknown, DeadlineExceeded, ResourceExhausted, FailedPrecondition,
        // Aborted, Internal, Unavailable, Unauthenticated (invalid/expired auth token:
        // a fresh client authenticates again).
        E::GRpcStatus(s) => match s.code() as i32 {
            1 | 2 | 4 | 8 | 9 | 10 | 13 | 14 | 16 => Fail::Transient,
            _ => Fail::Fatal,
        },
        E::TransportError(_)
        | E::IoError(_)
        | E::WatchError(_)
        | E::LeaseKeepAliveError(_)
        | E::EndpointError(_)
        | E::Internal(_) => Fail::Transient,
        _ => Fail::Fatal,
    }
}

/// Why a request to one endpoint failed, as one short line (`connection refused`,
/// `authentication failed, invalid user ID or password`).
///
/// etcd-client's own `Display` is not usable in a log line: for a gRPC status it prints
/// tonic's `Status`, which appends its source with `{:?}`, i.e. a nested dump like
/// `tonic::transport::Error(Transport, ConnectError("tcp connect error", ..., Os { .. }))`.
/// The innermost error of the `source()` chain is what the operator can act on.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    use std::error::Error as _;
    let text = match e {
        E::GRpcStatus(s) => match s.source() {
            Some(src) => innermost(src),
            None => status_text(s.message(), s.code().description()),
        },
        E::TransportError(t) => match t.source() {
            Some(src) => innermost(src),
            None => t.to_string(),
        },
        E::IoError(io) => io_text(io),
        other => other.to_string(),
    };
    one_line(&text)
}

/// The last non-empty message of the `source()` chain starting at `e`; an I/O error ends
/// the walk (its own source, if any, is already part of its message).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut best = String::new();
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            return io_text(io);
        }
        let text = cur.to_string();
        if !text.trim().is_empty() {
            best = text;
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return best,
        }
    }
}

/// `Connection refused (os error 111)` → `connection refused`: the errno adds nothing for
/// the operator and the capital reads oddly after `etcd host:port: `.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    };
    lower_first(&text)
}

/// etcd's message of a gRPC status without its `etcdserver: ` tag, or the description of
/// the status code when there is no message.
fn status_text(message: &str, code: &str) -> String {
    let msg = message.trim();
    let msg = msg.strip_prefix("etcdserver: ").unwrap_or(msg);
    if msg.is_empty() {
        lower_first(code)
    } else {
        msg.to_string()
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        // Only when the second letter is lower case: keeps acronyms like `TLS` intact.
        Some(f) if c.clone().next().is_some_and(char::is_lowercase) => {
            f.to_lowercase().chain(c).collect()
        }
        _ => s.to_string(),
    }
}

/// Log lines are one line each: newlines a server or library put in a message become `; `.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `10s`, `1.5s`, `250ms`: how a timeout reads in an error message (`{:?}` of a
/// `Duration` prints `1.666666666s` for a third of `retry_timeout`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let tenths = (d.as_millis() + 50) / 100;
        match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            t => format!("{}.{t}s", tenths / 10),
        }
    }
}

/// The error of a call that no endpoint answered: one endpoint reads
/// `etcd 127.0.0.1:2379: connection refused`, several
/// `etcd: all endpoints failed (a:2379: connection refused; b:2379: request timed out after 5s)`.
/// `failures[i]` is the last error of `endpoints[i]`, `None` when the deadline passed
/// before it could be tried.
pub(crate) fn unavailable_message(
    endpoints: &[String],
    failures: &[Option<String>],
    retry_timeout: Duration,
) -> String {
    let not_tried = format!(
        "not tried: retry_timeout ({}) used up",
        fmt_duration(retry_timeout)
    );
    let parts: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let why = failures.get(i).and_then(|f| f.as_deref());
            format!("{ep}: {}", why.unwrap_or(&not_tried))
        })
        .collect();
    match parts.as_slice() {
        [one] => format!("etcd {one}"),
        _ => format!("etcd: all endpoints failed ({})", parts.join("; ")),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EtcdDcs {
    /// Creates the DCS and starts its watch task (needs a tokio runtime). Does not fail
    /// because endpoints are down: nothing is contacted until the first call.
    pub async fn connect(settings: DcsSettings) -> Result<EtcdDcs, DcsError> {
        let endpoints: Vec<String> = settings
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(DcsError::Other("etcd: no endpoints configured".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // HTTP/2 pings while a stream (the watch) is open: detects a frozen peer.
            // etcd refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let Some(user) = &settings.username {
            options = options
                .with_user(user.clone(), settings.password.clone().unwrap_or_default())
                .with_auto_token_refresh(true);
        }
        let (wake, _) = tokio::sync::watch::channel(0u64);
        let n = endpoints.len();
        let inner = Arc::new(Inner {
            endpoints,
            prefix: normalize_prefix(&settings.prefix),
            retry_timeout: settings.retry_timeout.max(Duration::from_millis(100)),
            options,
            clients: Mutex::new(vec![None; n]),
            preferred: AtomicUsize::new(0),
            ttl: AtomicU64::new(settings.ttl.max(1)),
            lease: tokio::sync::Mutex::new(LeaseState {
                id: None,
                ttl: 0,
                last_refresh: Instant::now(),
            }),
            lease_id: AtomicI64::new(0),
            cache: Mutex::new(WriteCache::default()),
            wake,
            read_rev: AtomicI64::new(0),
        });
        let task = tokio::spawn(watch_loop(inner.clone()));
        Ok(EtcdDcs {
            inner,
            _watch: Arc::new(AbortOnDrop(task.abort_handle())),
        })
    }

    /// The lease currently held (granted and not known to be lost), if any.
    pub fn last_lease_id(&self) -> Option<i64> {
        match self.inner.lease_id.load(Ordering::SeqCst) {
            0 => None,
            id => Some(id),
        }
    }

    /// The normalised key prefix (ends with `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
    fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout
    }

    async fn client(&self, idx: usize) -> Result<Client, etcd_client::Error> {
        if let Some(c) = lock(&self.clients).get(idx).and_then(|c| c.clone()) {
            return Ok(c);
        }
        let ep = &self.endpoints[idx];
        debug!(endpoint = %ep, "connecting to etcd");
        let c = Client::connect([ep.as_str()], Some(self.options.clone())).await?;
        if let Some(slot) = lock(&self.clients).get_mut(idx) {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    fn drop_client(&self, idx: usize) {
        if let Some(slot) = lock(&self.clients).get_mut(idx) {
            *slot = None;
        }
    }

    fn attempt_timeout(&self) -> Duration {
        let n = self.endpoints.len().max(2) as u32;
        (self.retry_timeout / n).max(Duration::from_secs(1))
    }

    /// Runs `f` against one endpoint after the other until it succeeds, fails for a non
    /// transient reason, or `deadline` passes. "lease not found" gives
    /// [`DcsError::LeaseLost`].
    async fn call<T, F, Fut>(&self, what: &str, deadline: Instant, mut f: F) -> Result<T, DcsError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.len();
        let per_attempt = self.attempt_timeout();
        let mut idx = self.preferred.load(Ordering::Relaxed) % n;
        // The last error of each endpoint, for a message that names all of them.
        let mut failures: Vec<Option<String>> = vec![None; n];
        loop {
            for _ in 0..n {
                let now = Instant::now();
                if now >= deadline {
                    return Err(self.unavailable(what, &failures));
                }
                let budget = per_attempt.min(deadline - now);
                let ep = &self.endpoints[idx];
                let attempt = async {
                    let c = self.client(idx).await?;
                    f(c).await
                };
                match tokio::time::timeout(budget, attempt).await {
                    Ok(Ok(v)) => {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Ok(Err(e)) => match classify(&e) {
                        Fail::Transient => {
                            let msg = describe(&e);
                            debug!("etcd {what} failed on {ep}: {msg}; trying the next endpoint");
                            failures[idx] = Some(msg);
                            self.drop_client(idx);
                        }
                        Fail::LeaseGone => {
                            self.preferred.store(idx, Ordering::Relaxed);
                            return Err(DcsError::LeaseLost);
                        }
                        Fail::Fatal => {
                            let msg = format!("etcd {ep}: {}", describe(&e));
                            warn!("{what}: {msg}");
                            return Err(DcsError::Other(msg));
                        }
                    },
                    Err(_) => {
                        // An attempt cut short by the call's deadline: its own length (e.g.
                        // 730ms) would only puzzle the reader; the bound that was hit is
                        // retry_timeout.
                        let msg = if budget < per_attempt {
                            format!(
                                "no answer within retry_timeout ({})",
                                fmt_duration(self.retry_timeout)
                            )
                        } else {
                            format!("request timed out after {}", fmt_duration(budget))
                        };
                        debug!("etcd {what} on {ep}: {msg}");
                        failures[idx] = Some(msg);
                        self.drop_client(idx);
                    }
                }
                idx = (idx + 1) % n;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unavailable(what, &failures));
            }
            tokio::time::sleep(ROUND_PAUSE.min(deadline - now)).await;
        }
    }

    fn unavailable(&self, what: &str, failures: &[Option<String>]) -> DcsError {
        let msg = unavailable_message(&self.endpoints, failures, self.retry_timeout);
        warn!("{what}: {msg}");
        DcsError::Unavailable(msg)
    }

    // ---- leases ----

    async fn grant(&self, ttl: u64, deadline: Instant) -> Result<i64, DcsError> {
        let resp = self
            .call("lease grant", deadline, |mut c| async move {
                c.lease_grant(ttl as i64, None).await
            })
            .await?;
        info!(lease = resp.id(), ttl = resp.ttl(), "granted etcd lease");
        Ok(resp.id())
    }

    /// Single keepalive request/response. `Err(LeaseLost)` when the lease is gone.
    async fn keepalive(&self, id: i64, deadline: Instant) -> Result<(), DcsError> {
        self.call("lease keepalive", deadline, |mut c| async move {
            // etcd-client reads the first response and maps TTL <= 0 to "lease not found".
            let (_keeper, _stream) = c.lease_keep_alive(id).await?;
            Ok(())
        })
        .await
    }

    /// Our lease, granting one if missing (or after a TTL change) and refreshing it when
    /// `force` or when the last refresh is older than ttl/3.
    async fn lease_for(&self, deadline: Instant, force: bool) -> Result<i64, DcsError> {
        let mut st = self.lease.lock().await;
        let ttl = self.ttl.load(Ordering::SeqCst);
        if st.id.is_some() && st.ttl != ttl {
            info!(old = st.ttl, new = ttl, "ttl changed: dropping the lease");
            st.id = None;
            self.lease_id.store(0, Ordering::SeqCst);
        }
        if let Some(id) = st.id {
            let stale = st.last_refresh.elapsed() >= Duration::from_secs(ttl) / 3;
            if !force && !stale {
                return Ok(id);
            }
            let started = Instant::now();
            match self.keepalive(id, deadline).await {
                Ok(()) => {
                    st.last_refresh = started;
                    return Ok(id);
                }
                Err(DcsError::LeaseLost) => {
                    warn!(lease = id, "etcd lease expired; granting a new one");
                    st.id = None;
                    self.lease_id.store(0, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
        let started = Instant::now();
        let id = self.grant(ttl, deadline).await?;
        st.id = Some(id);
        st.ttl = ttl;
        st.last_refresh = started;
        self.lease_id.store(id, Ordering::SeqCst);
        Ok(id)
    }

    async fn forget_lease(&self, id: i64) {
        let mut st = self.lease.lock().await;
        if st.id == Some(id) {
            st.id = None;
            self.lease_id.store(0, Ordering::SeqCst);
        }
    }

    /// Runs `op` with our lease; on "lease not found" grants a new lease and retries once.
    async fn with_lease<T, F, Fut>(
        &self,
        deadline: Instant,
        force: bool,
        mut op: F,
    ) -> Result<T, DcsError>
    where
        F: FnMut(i64) -> Fut,
        Fut: Future<Output = Result<T, DcsError>>,
    {
        let id = self.lease_for(deadline, force).await?;
        match op(id).await {
            Err(DcsError::LeaseLost) => {
                warn!(
                    lease = id,
                    "etcd says our lease does not exist; granting a new one"
                );
                self.forget_lease(id).await;
                let id = self.lease_for(deadline, false).await?;
                op(id).await
            }
            r => r,
        }
    }

    // ---- KV helpers ----

    async fn put(
        &self,
        rel: &str,
        value: &str,
        lease: Option<i64>,
        deadline: Instant,
    ) -> Result<(), DcsError> {
        let key = self.key(rel);
        self.call("put", deadline, |mut c| {
            let (k, v) = (key.clone(), value.to_string());
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            async move { c.put(k, v, opts).await }
        })
        .await
        .map(|_| ())
    }

    async fn txn(
        &self,
        what: &str,
        txn: Txn,
        deadline: Instant,
    ) -> Result<etcd_client::TxnResponse, DcsError> {
        self.call(what, deadline, |mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        })
        .await
    }

    async fn cas_put(
        &self,
        rel: &str,
        value: &str,
        version: Option<i64>,
    ) -> Result<bool, DcsError> {
        self.cas_put_revision(rel, value, version)
            .await
            .map(|r| r.is_some())
    }

    /// As [`Self::cas_put`], returning the key's new mod_revision when written (the
    /// revision of the transaction that wrote it).
    async fn cas_put_revision(
        &self,
        rel: &str,
        value: &str,
        version: Option<i64>,
    ) -> Result<Option<i64>, DcsError> {
        let deadline = self.deadline();
        let key = self.key(rel);
        let txn = match version {
            None => Txn::new().and_then([TxnOp::put(key, value, None)]),
            Some(v) => Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, v)])
                .and_then([TxnOp::put(key, value, None)]),
        };
        let resp = self.txn("compare-and-set", txn, deadline).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    async fn delete(&self, rel: &str, deadline: Instant) -> Result<(), DcsError> {
        let key = self.key(rel);
        self.call("delete", deadline, |mut c| {
            let k = key.clone();
            async move { c.delete(k, None).await }
        })
        .await
        .map(|_| ())
    }

    fn bump(&self) {
        self.wake.send_modify(|c| *c = c.wrapping_add(1));
    }
}

impl Dcs for EtcdDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let inner = &*self.inner;
        let prefix = inner.prefix.clone();
        let resp = inner
            .call("get_cluster", inner.deadline(), |mut c| {
                let p = prefix.clone();
                async move {
                    c.get(p, Some(GetOptions::new().with_prefix().with_serializable()))
                        .await
                }
            })
            .await?;
        let kvs: Vec<KeyValue> = resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                KeyValue {
                    key: key
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&key)
                        .to_string(),
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                }
            })
            .collect();
        lock(&inner.cache).reconcile(&kvs);
        if let Some(h) = resp.header() {
            inner.read_rev.fetch_max(h.revision(), Ordering::SeqCst);
        }
        Ok(Cluster::from_kvs(&kvs))
    }

    async fn touch_member(&self, name: &str, data_json: &str) -> Result<(), DcsError> {
        let inner = &*self.inner;
        let rel = format!("members/{name}");
        inner
            .with_lease(inner.deadline(), false, |id| {
                let rel = &rel;
                async move {
                    let cached = Some((name.to_string(), data_json.to_string(), id));
                    if lock(&inner.cache).member == cached {
                        return Ok(());
                    }
                    inner
                        .put(rel, data_json, Some(id), inner.deadline())
                        .await?;
                    lock(&inner.cache).member = cached;
                    Ok(())
                }
            })
            .await
    }

    async fn attempt_to_acquire_leader(&self, name: &str) -> Result<bool, DcsError> {
        let inner = &*self.inner;
        let deadline = inner.deadline();
        let key = inner.key("leader");
        let won = inner
            .with_lease(deadline, true, |id| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        name,
                        Some(PutOptions::new().with_lease(id)),
                    )]);
                async move {
                    Ok(inner
                        .txn("acquire leader", txn, deadline)
                        .await?
                        .succeeded())
                }
            })
            .await?;
        if won {
            info!(member = name, "acquired the leader lock");
        }
        Ok(won)
    }

    async fn update_leader(&self, name: &str) -> Result<bool, DcsError> {
        let inner = &*self.inner;
        let deadline = inner.deadline();
        let key = inner.key("leader");
        inner
            .with_lease(deadline, true, |id| {
                let key = key.clone();
                async move {
                    let k = key.clone();
                    let current = inner
                        .call("get leader", deadline, |mut c| {
                            let k = k.clone();
                            async move { c.get(k, None).await }
                        })
                        .await?;
                    if let Some(kv) = current.kvs().first() {
                        if kv.lease() == id && kv.value() == name.as_bytes() {
                            return Ok(true);
                        }
                    }
                    let put =
                        || TxnOp::put(key.clone(), name, Some(PutOptions::new().with_lease(id)));
                    let create_only = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([put()]);
                    let txn = Txn::new()
                        .when([Compare::value(key.clone(), CompareOp::Equal, name)])
                        .and_then([put()])
                        .or_else([TxnOp::txn(create_only)]);
                    let resp = inner.txn("update leader", txn, deadline).await?;
                    if resp.succeeded() {
                        return Ok(true);
                    }
                    let inner_ok = resp
                        .op_responses()
                        .into_iter()
                        .any(|r| matches!(r, TxnOpResponse::Txn(t) if t.succeeded()));
                    if inner_ok {
                        info!(member = name, "leader key was gone; re-created it");
                    }
                    Ok(inner_ok)
                }
            })
            .await
    }

    async fn take_leader(&self, name: &str) -> Result<(), DcsError> {
        let inner = &*self.inner;
        let deadline = inner.deadline();
        inner
            .with_lease(deadline, true, |id| {
                inner.put("leader", name, Some(id), deadline)
            })
            .await
    }

    async fn delete_leader(&self, name: &str) -> Result<bool, DcsError> {
        let inner = &*self.inner;
        let key = inner.key("leader");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::delete(key, None)]);
        let ok = inner
            .txn("delete leader", txn, inner.deadline())
            .await?
            .succeeded();
        if ok {
            info!(member = name, "released the leader lock");
        }
        Ok(ok)
    }

    async fn race_initialize(&self) -> Result<bool, DcsError> {
        let inner = &*self.inner;
        let key = inner.key("initialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "", None)]);
        Ok(inner
            .txn("race initialize", txn, inner.deadline())
            .await?
            .succeeded())
    }

    async fn set_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        self.inner
            .put("initialize", sysid, None, self.inner.deadline())
            .await
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        self.inner.delete("initialize", self.inner.deadline()).await
    }

    async fn set_config(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        self.inner.cas_put("config", json, version).await
    }

    async fn set_failover(&self, json: &str, version: Option<i64>) -> Result<bool, DcsError> {
        self.inner.cas_put("failover", json, version).await
    }

    async fn set_sync(&self, json: &str, version: Option<i64>) -> Result<Option<i64>, DcsError> {
        self.inner.cas_put_revision("sync", json, version).await
    }

    async fn delete_sync(&self, version: i64) -> Result<bool, DcsError> {
        let inner = &*self.inner;
        let key = inner.key("sync");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                version,
            )])
            .and_then([TxnOp::delete(key, None)]);
        Ok(inner
            .txn("delete sync", txn, inner.deadline())
            .await?
            .succeeded())
    }

    async fn set_status(&self, json: &str) -> Result<(), DcsError> {
        let inner = &*self.inner;
        if lock(&inner.cache).status.as_deref() == Some(json) {
            return Ok(());
        }
        inner.put("status", json, None, inner.deadline()).await?;
        lock(&inner.cache).status = Some(json.to_string());
        Ok(())
    }

    async fn set_history(&self, json: &str) -> Result<(), DcsError> {
        let inner = &*self.inner;
        if lock(&inner.cache).history.as_deref() == Some(json) {
            return Ok(());
        }
        inner.put("history", json, None, inner.deadline()).await?;
        lock(&inner.cache).history = Some(json.to_string());
        Ok(())
    }

    async fn set_failsafe(&self, json: &str) -> Result<(), DcsError> {
        let inner = &*self.inner;
        inner.put("failsafe", json, None, inner.deadline()).await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let inner = &*self.inner;
        let prefix = inner.prefix.clone();
        inner
            .call("delete cluster", inner.deadline(), |mut c| {
                let p = prefix.clone();
                async move { c.delete(p, Some(DeleteOptions::new().with_prefix())).await }
            })
            .await?;
        *lock(&inner.cache) = WriteCache::default();
        Ok(())
    }

    async fn revoke_lease(&self) -> Result<(), DcsError> {
        let inner = &*self.inner;
        let mut st = inner.lease.lock().await;
        if let Some(id) = st.id {
            let r = inner
                .call("lease revoke", inner.deadline(), |mut c| async move {
                    c.lease_revoke(id).await
                })
                .await;
            match r {
                Ok(_) | Err(DcsError::LeaseLost) => info!(lease = id, "revoked etcd lease"),
                Err(e) => return Err(e),
            }
            st.id = None;
            inner.lease_id.store(0, Ordering::SeqCst);
        }
        lock(&inner.cache).member = None;
        Ok(())
    }

    fn set_ttl(&self, ttl: u64) {
        let old = self.inner.ttl.swap(ttl.max(1), Ordering::SeqCst);
        if old != ttl {
            debug!(old, new = ttl, "ttl changed");
        }
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }
}

// ---- watch task ----

async fn watch_loop(inner: Arc<Inner>) {
    // Revision up to which we have seen every event under the prefix.
    let mut last_rev: Option<i64> = None;
    let n = inner.endpoints.len();
    loop {
        // One round: the preferred (last good) endpoint first, then the others; back off
        // only after the whole round failed or an established stream broke.
        let first = inner.preferred.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let idx = (first + k) % n;
            let mut established = false;
            match watch_endpoint(&inner, idx, &mut last_rev, &mut established).await {
                Ok(()) => debug!(endpoint = %inner.endpoints[idx], "etcd watch stream ended"),
                Err(e) => {
                    debug!("etcd watch on {}: {e}", inner.endpoints[idx]);
                    inner.drop_client(idx);
                }
            }
            if established {
                break;
            }
        }
        tokio::time::sleep(WATCH_BACKOFF).await;
    }
}

async fn watch_endpoint(
    inner: &Inner,
    idx: usize,
    last_rev: &mut Option<i64>,
    established: &mut bool,
) -> Result<(), String> {
    let budget = inner.attempt_timeout();
    let mut client = tokio::time::timeout(budget, inner.client(idx))
        .await
        .map_err(|_| format!("connect timed out after {}", fmt_duration(budget)))?
        .map_err(|e| describe(&e))?;
    let mut opts = WatchOptions::new().with_prefix().with_prev_key();
    let read_rev = inner.read_rev.load(Ordering::SeqCst);
    let from = match *last_rev {
        Some(rev) => Some(rev + 1),
        None if read_rev > 0 => Some(read_rev + 1),
        None => None,
    };
    if let Some(rev) = from {
        opts = opts.with_start_revision(rev);
    }
    let mut stream = tokio::time::timeout(budget, client.watch(inner.prefix.clone(), Some(opts)))
        .await
        .map_err(|_| format!("watch request timed out after {}", fmt_duration(budget)))?
        .map_err(|e| describe(&e))?;
    *established = true;
    debug!(endpoint = %inner.endpoints[idx], ?from, "etcd watch established");
    loop {
        let Some(resp) = stream.message().await.map_err(|e| describe(&e))? else {
            return Ok(());
        };
        if resp.created() && last_rev.is_none() {
            *last_rev = match from {
                Some(rev) => Some(rev - 1),
                None => resp.header().map(|h| h.revision()),
            };
        }
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                // Events were compacted away: start over from now and wake the HA loop
                // since something may have changed unseen.
                warn!(
                    compact_revision = resp.compact_revision(),
                    "etcd watch fell behind compaction"
                );
                *last_rev = None;
                inner.read_rev.store(0, Ordering::SeqCst);
                *lock(&inner.cache) = WriteCache::default();
                inner.bump();
            }
            return Err(format!("watch canceled: {}", resp.cancel_reason()));
        }
        let mut wake = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let Some(rel) = key.strip_prefix(inner.prefix.as_str()) else {
                continue;
            };
            let value = String::from_utf8_lossy(kv.value());
            let prev = ev
                .prev_kv()
                .map(|p| String::from_utf8_lossy(p.value()).into_owned());
            let change = match ev.event_type() {
                EventType::Delete => Change::Deleted,
                EventType::Put if kv.version() == 1 => Change::Created,
                EventType::Put => Change::Updated {
                    prev: prev.as_deref(),
                    new: &value,
                },
            };
            let new_value = match change {
                Change::Deleted => None,
                _ => Some(value.as_ref()),
            };
            lock(&inner.cache).invalidate(rel, new_value);
            if event_wakes(rel, change) {
                debug!(key = rel, ?change, "watch: wake-up");
                wake = true;
            }
            *last_rev = Some(last_rev.unwrap_or(0).max(kv.mod_revision()));
        }
        if wake {
            inner.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(10) / 3), "3.3s");
        assert_eq!(fmt_duration(Duration::from_millis(1999)), "2s");
    }

    #[test]
    fn unavailable_names_every_endpoint_with_its_error() {
        let one = vec!["127.0.0.1:2379".to_string()];
        assert_eq!(
            unavailable_message(
                &one,
                &[Some("connection refused".into())],
                Duration::from_secs(10)
            ),
            "etcd 127.0.0.1:2379: connection refused"
        );
        let three = vec!["a:2379".to_string(), "b:2379".into(), "c:2379".into()];
        assert_eq!(
            unavailable_message(
                &three,
                &[
                    Some("connection refused".into()),
                    Some("request timed out after 3.3s".into()),
                    None
                ],
                Duration::from_secs(10)
            ),
            "etcd: all endpoints failed (a:2379: connection refused; b:2379: request timed out \
             after 3.3s; c:2379: not tried: retry_timeout (10s) used up)"
        );
    }

    #[test]
    fn io_and_status_texts_are_short() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_text(&refused), "connection refused");
        let os = std::io::Error::from_raw_os_error(111);
        assert!(!io_text(&os).contains("os error"), "{}", io_text(&os));
        assert_eq!(
            status_text(
                "etcdserver: requested lease not found",
                "Some requested entity was not found"
            ),
            "requested lease not found"
        );
        assert_eq!(
            status_text("", "The service is currently unavailable"),
            "the service is currently unavailable"
        );
        assert_eq!(lower_first("TLS handshake failed"), "TLS handshake failed");
        assert_eq!(one_line("a\nb\r\n c"), "a; b; c");
    }

    #[test]
    fn describe_walks_to_the_innermost_cause() {
        // The gRPC-status case (a status whose source is a transport error wrapping the
        // I/O error) needs a real connection: tests/etcd.rs covers it.
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = etcd_client::Error::IoError(io);
        assert_eq!(describe(&status), "connection refused");
        let args = etcd_client::Error::InvalidArgs("bad\nkey".into());
        assert_eq!(describe(&args), "invalid arguments: bad; key");
    }
}
