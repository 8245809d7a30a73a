//! Warden's REST API, compatible with Patroni's (spec/rest-api.md).
//!
//! The agent publishes a [`NodeStatus`] snapshot after each HA cycle through a
//! [`StatusHandle`]; the API answers health checks and monitoring calls from that
//! snapshot alone (never from PostgreSQL or the DCS), so a stuck database or DCS can
//! not stall a load balancer's probe.
//!
//! * [`health_code`], [`liveness_code`], [`readiness_code`]: pure decisions (§3).
//! * [`cluster_json`]: the `GET /cluster` body (§6).
//! * [`serve`] / [`serve_with`]: the HTTP(S) server (hyper 1, rustls with the ring
//!   provider for HTTPS).
//! * The unsafe endpoints (§2 access checks, §4 validation) call the agent through
//!   [`management::Management`] ([`ApiOptions::management`]).

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;
use warden_core::status::{NodeStatus, Xlog};

mod access;
mod cluster_json;
mod endpoints;
mod health;
pub mod management;
pub mod metrics;
mod server;
mod tls;
mod validate;

pub use access::IpNet;
pub use cluster_json::cluster_json;
pub use health::{
    health_code, liveness_code, parse_lag, parse_query, readiness_code, sync_flags, unquote_plus,
    GlobalFlags,
};
pub use server::{
    serve, serve_with, server_header_for_tokens, ApiOptions, BODY_LIMIT, DEFAULT_SERVER_HEADER,
};
pub use tls::{crypto_provider, load_server_config, TlsConfigError, TlsOptions, VerifyClient};
pub use validate::{parse_schedule, parse_seconds, validate_restart, validate_switchover};

/// Monotonic milliseconds since the first call in this process (a static [`Instant`]).
/// The agent uses the same clock for the `*_ms` fields of [`NodeStatus`].
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Monotonic microseconds since the first call, plus one (so 0 never names a real time).
fn monotonic_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// How long a look at the postmaster's pid file is trusted: a "running" snapshot turns
/// "stopped" at most this long after the file went (10 ms, far below any load
/// balancer's check interval).
pub const PID_FILE_RECHECK_US: u64 = 10_000;

/// A primary's `POST /failsafe`: who, its slots, when (monotonic ms).
#[derive(Clone, Debug)]
struct FailsafePing {
    leader: String,
    slots: Option<serde_json::Map<String, serde_json::Value>>,
    at_ms: u64,
}

/// Shared handle to the latest published status: the agent publishes, the API reads.
/// Cheap to clone; readers get an `Arc` and never block the publisher for long.
#[derive(Clone, Debug)]
pub struct StatusHandle {
    inner: Arc<RwLock<Arc<NodeStatus>>>,
    live: Arc<Liveness>,
    /// The last `POST /failsafe` a primary sent me.
    failsafe_ping: Arc<std::sync::Mutex<Option<FailsafePing>>>,
}

/// What lets a reader see past the last HA cycle: the postmaster's pid file, and a WAL
/// sampler that reads positions when a reader asks for them.
#[derive(Debug, Default)]
struct Liveness {
    /// `<data_dir>/postmaster.pid`. PostgreSQL removes it when it exits, so a snapshot
    /// that says "running" is contradicted at once after a crash or an external
    /// `pg_ctl stop` (Patroni queries PostgreSQL per request and sees the same).
    pid_file: OnceLock<std::path::PathBuf>,
    /// When the pid file was last looked at (µs on [`monotonic_us`]; 0 = never) and
    /// whether it was gone then: one `statx` per [`PID_FILE_RECHECK_US`], not one per
    /// request (it was an eighth of a keep-alive health check's cost).
    pid_checked_us: std::sync::atomic::AtomicU64,
    pid_gone: std::sync::atomic::AtomicBool,
    /// Tickets handed to readers wanting fresh WAL positions.
    requested: std::sync::atomic::AtomicU64,
    /// The highest ticket a finished sample covers (the sample started after it).
    covered: tokio::sync::watch::Sender<u64>,
    /// Wakes the sampler.
    wake: tokio::sync::Notify,
}

/// How long a reader waits for fresh WAL positions before answering from the snapshot.
pub const FRESH_WAL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

impl StatusHandle {
    /// A handle holding `initial`.
    pub fn new(initial: NodeStatus) -> Self {
        StatusHandle {
            inner: Arc::new(RwLock::new(Arc::new(initial))),
            live: Arc::default(),
            failsafe_ping: Arc::default(),
        }
    }

    /// Notes that primary `leader` announced itself (and its slots) over
    /// `POST /failsafe` just now.
    pub fn note_failsafe_ping(
        &self,
        leader: &str,
        slots: Option<serde_json::Map<String, serde_json::Value>>,
    ) {
        let mut g = self.failsafe_ping.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(FailsafePing {
            leader: leader.to_string(),
            slots,
            at_ms: monotonic_ms(),
        });
    }

    /// The primary that announced itself over `POST /failsafe` within `ttl_ms`, with
    /// the slot positions it sent.
    #[allow(clippy::type_complexity)]
    pub fn failsafe_ping(
        &self,
        ttl_ms: u64,
    ) -> Option<(String, Option<serde_json::Map<String, serde_json::Value>>)> {
        let g = self.failsafe_ping.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|p| monotonic_ms() < p.at_ms.saturating_add(ttl_ms))
            .map(|p| (p.leader.clone(), p.slots.clone()))
    }

    /// The primary that announced itself over `POST /failsafe` within `ttl_ms`.
    pub fn failsafe_leader(&self, ttl_ms: u64) -> Option<String> {
        self.failsafe_ping(ttl_ms).map(|(leader, _)| leader)
    }

    /// Replaces the snapshot.
    pub fn publish(&self, s: NodeStatus) {
        let s = Arc::new(s);
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *g = s;
        // A new snapshot gets a new look at the pid file (the cycle may have just
        // started PostgreSQL).
        self.live
            .pid_checked_us
            .store(0, std::sync::atomic::Ordering::Release);
    }

    /// Replaces the snapshot's WAL positions and replication state with fresher ones
    /// read between HA cycles, if PostgreSQL answered the last cycle and is still in the
    /// role the snapshot shows (primary vs replica); a role change waits for the next
    /// cycle. Returns whether the snapshot changed.
    pub fn update_wal(&self, fresh: Xlog, replication_state: Option<String>) -> bool {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let same_role = matches!(
            (&g.xlog, &fresh),
            (Some(Xlog::Primary { .. }), Xlog::Primary { .. })
                | (Some(Xlog::Replica { .. }), Xlog::Replica { .. })
        );
        if !g.pg_answered
            || !same_role
            || (g.xlog.as_ref() == Some(&fresh) && g.replication_state == replication_state)
        {
            return false;
        }
        let mut s = NodeStatus::clone(&g);
        s.xlog = Some(fresh);
        s.replication_state = replication_state;
        *g = Arc::new(s);
        true
    }

    /// Names the postmaster's pid file, after which [`StatusHandle::get`] reports a
    /// "running" snapshot as "stopped" as soon as the file is gone.
    pub fn watch_postmaster(&self, pid_file: std::path::PathBuf) {
        let _ = self.live.pid_file.set(pid_file);
    }

    /// The current snapshot (state corrected when the postmaster has gone since).
    pub fn get(&self) -> Arc<NodeStatus> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner()).clone();
        match self.live.pid_file.get() {
            Some(pid) if s.state == "running" && self.live.pid_file_gone(pid) => {
                let mut dead = NodeStatus::clone(&s);
                dead.state = "stopped".into();
                dead.pg_answered = false;
                Arc::new(dead)
            }
            _ => s,
        }
    }

    /// The snapshot with WAL positions read after this call (as Patroni's `GET
    /// /patroni` reads them per request): asks the sampler and waits for a sample that
    /// started after the request, at most [`FRESH_WAL_TIMEOUT`]; concurrent readers share
    /// one sample. Without a running PostgreSQL, or a sampler, it is [`StatusHandle::get`].
    pub async fn fresh(&self) -> Arc<NodeStatus> {
        use std::sync::atomic::Ordering;
        if !self.get().pg_answered {
            return self.get();
        }
        let ticket = self.live.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.live.covered.subscribe();
        self.live.wake.notify_one();
        let _ = tokio::time::timeout(FRESH_WAL_TIMEOUT, covered.wait_for(|c| *c >= ticket)).await;
        self.get()
    }

    /// For the sampler: waits until a reader asks for fresh positions, then returns the
    /// ticket a sample started now covers (pass it to [`StatusHandle::sampled`]).
    pub async fn wal_wanted(&self) -> u64 {
        use std::sync::atomic::Ordering;
        loop {
            let wanted = self.live.requested.load(Ordering::SeqCst);
            if wanted > *self.live.covered.borrow() {
                return wanted;
            }
            self.live.wake.notified().await;
        }
    }

    /// For the sampler: a sample covering `ticket` is in the snapshot (or failed).
    pub fn sampled(&self, ticket: u64) {
        self.live.covered.send_if_modified(|c| {
            if ticket > *c {
                *c = ticket;
                true
            } else {
                false
            }
        });
    }
}

impl Liveness {
    /// Whether `pid_file` is gone, looked at again when the last look is older than
    /// [`PID_FILE_RECHECK_US`].
    fn pid_file_gone(&self, pid_file: &std::path::Path) -> bool {
        use std::sync::atomic::Ordering;
        let now = monotonic_us();
        let last = self.pid_checked_us.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < PID_FILE_RECHECK_US {
            return self.pid_gone.load(Ordering::Acquire);
        }
        let gone = !pid_file.exists();
        self.pid_gone.store(gone, Ordering::Release);
        self.pid_checked_us.store(now, Ordering::Release);
        gone
    }
}

impl Default for StatusHandle {
    fn default() -> Self {
        StatusHandle::new(NodeStatus::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_at(lsn: u64) -> Xlog {
        Xlog::Replica {
            received_location: Some(lsn),
            replayed_location: Some(lsn),
            replayed_timestamp: None,
            paused: false,
        }
    }

    /// A "running" snapshot turns "stopped" once the postmaster's pid file is gone (seen
    /// within [`PID_FILE_RECHECK_US`]), and a newly published snapshot is looked at anew.
    #[test]
    fn a_gone_pid_file_shows_as_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("postmaster.pid");
        std::fs::write(&pid, "1\n").unwrap();
        let running = || NodeStatus {
            state: "running".into(),
            pg_answered: true,
            ..NodeStatus::default()
        };
        let h = StatusHandle::new(running());
        h.watch_postmaster(pid.clone());
        assert_eq!(h.get().state, "running");
        std::fs::remove_file(&pid).unwrap();
        let start = Instant::now();
        while h.get().state == "running" && start.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let s = h.get();
        assert_eq!((s.state.as_str(), s.pg_answered), ("stopped", false));
        assert!(
            start.elapsed().as_micros() < 1_000_000,
            "seen within the recheck time"
        );
        // PostgreSQL started again and the next cycle published it: no stale "gone".
        std::fs::write(&pid, "2\n").unwrap();
        h.publish(running());
        assert_eq!(h.get().state, "running");
    }

    #[test]
    fn update_wal_keeps_the_snapshot_role() {
        let h = StatusHandle::new(NodeStatus {
            pg_answered: true,
            role: "replica".into(),
            xlog: Some(replica_at(100)),
            ..NodeStatus::default()
        });
        assert!(h.update_wal(replica_at(200), None));
        assert_eq!(h.get().xlog, Some(replica_at(200)));
        assert!(!h.update_wal(replica_at(200), None), "no change");
        assert!(h.update_wal(replica_at(200), Some("streaming".into())));
        assert_eq!(h.get().replication_state.as_deref(), Some("streaming"));
        // promoted since the last cycle: the next cycle publishes the new shape
        assert!(!h.update_wal(Xlog::Primary { location: 300 }, None));
        assert_eq!(h.get().xlog, Some(replica_at(200)));
        // PostgreSQL did not answer the last cycle: nothing to refresh
        h.publish(NodeStatus {
            pg_answered: false,
            xlog: None,
            ..NodeStatus::default()
        });
        assert!(!h.update_wal(replica_at(300), None));
        assert_eq!(h.get().xlog, None);
        h.publish(NodeStatus {
            pg_answered: true,
            role: "primary".into(),
            xlog: Some(Xlog::Primary { location: 5 }),
            ..NodeStatus::default()
        });
        assert!(h.update_wal(Xlog::Primary { location: 9 }, None));
        assert_eq!(h.get().xlog, Some(Xlog::Primary { location: 9 }));
    }
}
