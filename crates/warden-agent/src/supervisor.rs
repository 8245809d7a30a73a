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

/// Splits a command line like a POSIX shell would (quotes and backslashes), no shell.
pub fn shell_split(cmd: &str) -> Vec<String> {
    warden_config::shell_split(cmd)
        .unwrap_or_else(|| cmd.split_whitespace().map(str::to_string).collect())
}

/// Runs user callbacks (`on_start`, `on_stop`, `on_restart`, `on_role_change`, and
/// `on_reload` in its own slot) as Patroni does: `<cmd…> <action> <role> <scope>`, in
/// the background, one at a time per slot — a new callback kills a still-running
/// previous one (and its children). A failing or hanging callback never blocks the HA
/// loop.
pub struct Callbacks {
    commands: std::collections::BTreeMap<String, String>,
    scope: String,
    main_slot: Mutex<Option<u32>>,
    reload_slot: Mutex<Option<u32>>,
}

impl Callbacks {
    /// From `postgresql.callbacks`.
    pub fn new(commands: std::collections::BTreeMap<String, String>, scope: &str) -> Callbacks {
        Callbacks {
            commands,
            scope: scope.to_string(),
            main_slot: Mutex::new(None),
            reload_slot: Mutex::new(None),
        }
    }

    /// Replaces the configured commands (after a reload).
    pub fn set_commands(&mut self, commands: std::collections::BTreeMap<String, String>) {
        self.commands = commands;
    }

    /// Fires `action` (e.g. `on_role_change`) with the node's `role` after the event.
    pub fn fire(&self, action: &str, role: &str) {
        let Some(cmd) = self.commands.get(action) else {
            return;
        };
        let mut words = shell_split(cmd);
        if words.is_empty() {
            return;
        }
        let prog = words.remove(0);
        let slot = if action == "on_reload" {
            &self.reload_slot
        } else {
            &self.main_slot
        };
        let Ok(mut running) = slot.lock() else {
            return;
        };
        if let Some(pid) = running.take() {
            // Kill the previous callback's whole process group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut c = tokio::process::Command::new(&prog);
        c.args(&words)
            .arg(action)
            .arg(role)
            .arg(&self.scope)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        match c.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                *running = pid;
                tracing::info!(
                    "calling {action} callback: {cmd} {action} {role} {}",
                    self.scope
                );
                let what = format!("{action} callback");
                tokio::spawn(async move {
                    match child.wait().await {
                        Ok(st) if !st.success() => tracing::warn!("{what} exited with {st}"),
                        Err(e) => tracing::warn!("{what}: {e}"),
                        _ => {}
                    }
                });
            }
            Err(e) => error!("cannot run {action} callback '{cmd}': {e}"),
        }
    }
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
