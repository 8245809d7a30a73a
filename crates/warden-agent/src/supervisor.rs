//! Process supervision in one place: the fence guard that stops a primary whose leader
//! lock is about to lapse, and user commands (post_bootstrap).
//!
//! The fence guard is a separate task from the HA loop: if the loop stalls (stuck
//! PostgreSQL query, slow disk, a bug), the guard still stops PostgreSQL before the lease
//! can expire in etcd, so another node can never be promoted while this one still
//! accepts writes. (A frozen *process* needs a kernel watchdog or an external guard; see
//! the README's roadmap.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::error;
use warden_api::monotonic_ms;
use warden_pg::{Postgres, StopMode};

/// How long before the lock's expiry the guard fences.
pub const FENCE_MARGIN_MS: u64 = 2_000;

/// State the HA loop shares with the fence guard.
pub struct Fence {
    leader_until_ms: AtomicU64,
    primary_running: AtomicBool,
    paused: AtomicBool,
    pg: Mutex<Postgres>,
}

impl Fence {
    /// A guard for `pg`; idle until the loop reports a running primary with a lock.
    pub fn new(pg: Postgres) -> Arc<Fence> {
        Arc::new(Fence {
            leader_until_ms: AtomicU64::new(0),
            primary_running: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            pg: Mutex::new(pg),
        })
    }

    /// The lock is held until this monotonic time (0 = not held).
    pub fn set_leader_until(&self, ms: u64) {
        self.leader_until_ms.store(ms, Ordering::SeqCst);
    }

    /// PostgreSQL is running as a primary.
    pub fn set_primary_running(&self, yes: bool) {
        self.primary_running.store(yes, Ordering::SeqCst);
    }

    /// Maintenance mode: never stop PostgreSQL on our own.
    pub fn set_paused(&self, yes: bool) {
        self.paused.store(yes, Ordering::SeqCst);
    }

    /// New PostgreSQL settings after a config change.
    pub fn set_postgres(&self, pg: Postgres) {
        if let Ok(mut g) = self.pg.lock() {
            *g = pg;
        }
    }

    /// Would the guard fence now?
    pub fn must_fence(&self, now_ms: u64) -> bool {
        let until = self.leader_until_ms.load(Ordering::SeqCst);
        self.primary_running.load(Ordering::SeqCst)
            && !self.paused.load(Ordering::SeqCst)
            && until > 0
            && now_ms + FENCE_MARGIN_MS >= until
    }

    /// Runs the guard until the process ends: checks every 200 ms.
    pub async fn guard(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !self.must_fence(monotonic_ms()) {
                continue;
            }
            error!("fencing: the leader lock was not renewed in time and may expire; stopping PostgreSQL so it cannot accept writes");
            let pg = match self.pg.lock() {
                Ok(g) => g.clone(),
                Err(_) => continue,
            };
            self.primary_running.store(false, Ordering::SeqCst);
            if let Err(e) = pg.stop(StopMode::Immediate, Duration::from_secs(5)).await {
                error!("fencing: could not stop PostgreSQL: {e}");
            }
        }
    }
}

/// Runs `bootstrap.post_bootstrap` with the superuser connection string as last argument
/// (password via the pgpass file in `PGPASSFILE`), as Patroni does. Non-zero exit fails
/// the bootstrap.
pub async fn run_post_bootstrap(cmd: &str, pg: &Postgres) -> anyhow::Result<()> {
    let s = pg.settings();
    let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    let Some((prog, args)) = words.split_first() else {
        return Ok(());
    };
    let dsn = format!(
        "dbname={} user={} host={} port={}",
        s.database, s.superuser.username, "127.0.0.1", s.port
    );
    let status = tokio::process::Command::new(prog)
        .args(args)
        .arg(&dsn)
        .env("PGPASSFILE", &s.pgpass)
        .env(
            "PGOPTIONS",
            "-c synchronous_commit=local -c statement_timeout=0",
        )
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap.post_bootstrap: cannot run '{cmd}': {e}"))?;
    if !status.success() {
        anyhow::bail!("bootstrap.post_bootstrap: '{cmd}' exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_only_a_running_unpaused_primary_near_expiry() {
        let f = Fence::new(Postgres::new(warden_pg::PgSettings::default()));
        assert!(!f.must_fence(10_000));
        f.set_leader_until(10_000);
        assert!(!f.must_fence(5_000), "primary not running");
        f.set_primary_running(true);
        assert!(!f.must_fence(5_000), "plenty of time left");
        assert!(f.must_fence(8_000), "within the margin");
        f.set_paused(true);
        assert!(!f.must_fence(9_000), "paused");
        f.set_paused(false);
        f.set_leader_until(0);
        assert!(!f.must_fence(9_000), "lock not held");
    }
}
