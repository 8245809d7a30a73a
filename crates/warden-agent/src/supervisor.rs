//! Process supervision in one place: the fence guard that stops a primary whose leader
//! lock is about to lapse, and user commands (post_bootstrap).
//!
//! Fencing has two layers, both stopping a primary before its lease can expire in etcd
//! (so another node can never be promoted while this one still accepts writes):
//! * the in-process guard, a task separate from the HA loop: it covers a loop that
//!   waits too long (a stuck PostgreSQL query or etcd call, a slow `pg_ctl`). It shares
//!   the loop's thread (a current-thread runtime), so a loop blocked inside a system
//!   call stalls it too: that case is the external guard's;
//! * the external guard, a small process of its own (the `warden-guard` binary, crate
//!   `warden-guard`; `warden --fence-guard` where that binary is missing): it covers
//!   an agent that is killed or frozen (SIGSTOP, swapped out). The agent publishes its
//!   lock deadline in a state file next to the data directory; when the deadline passes
//!   without renewal the guard stops the postmaster (immediate shutdown). An agent that
//!   restarts in time renews the deadline, so PostgreSQL survives agent restarts.
//!
//! Both layers stand down while this node's watchdog is armed (see
//! [`Fence::set_watchdog_armed`]): then the watchdog is the fence.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::error;
use warden_api::monotonic_ms;
use warden_guard::guard::write_atomically;
pub use warden_guard::guard::{fence_files, system_monotonic_ms};
use warden_pg::{Postgres, StopMode};

/// How long before the lock's expiry the guard fences (for a ttl of 8 s or more; the
/// HA loop sets `warden_core::ha::fence_margin_ms(ttl)` with [`Fence::set_margin`]).
pub use warden_core::ha::FENCE_MARGIN_MS;

/// The longest the in-process guard sleeps without looking (it is woken by every change
/// and at the moment it would fence, so this is only a backstop).
const GUARD_MAX_SLEEP_MS: u64 = 10_000;

/// State the HA loop shares with the fence guard.
pub struct Fence {
    leader_until_ms: AtomicU64,
    /// How long before `leader_until_ms` the guards fence.
    margin_ms: AtomicU64,
    primary_running: AtomicBool,
    paused: AtomicBool,
    /// The watchdog is open, kicked by the HA loop and fires before the lock expires.
    watchdog_armed: AtomicBool,
    pg: Mutex<Postgres>,
    /// State file shared with the external guard (None = no external guard).
    state_file: Option<PathBuf>,
    /// Wakes the in-process guard when anything [`Fence::must_fence`] reads changes, so
    /// that it sleeps until the moment it would fence instead of polling.
    changed: tokio::sync::Notify,
}

impl Fence {
    /// A guard for `pg`, idle until the loop reports a running primary with a lock, that
    /// also publishes its deadline for the external guard in `state_file`.
    pub fn with_state_file(pg: Postgres, state_file: Option<PathBuf>) -> Arc<Fence> {
        let f = Arc::new(Fence {
            leader_until_ms: AtomicU64::new(0),
            margin_ms: AtomicU64::new(FENCE_MARGIN_MS),
            primary_running: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            watchdog_armed: AtomicBool::new(false),
            pg: Mutex::new(pg),
            state_file,
            changed: tokio::sync::Notify::new(),
        });
        f.publish_deadline();
        f
    }

    /// The lock is held until this monotonic time (0 = not held).
    pub fn set_leader_until(&self, ms: u64) {
        self.leader_until_ms.store(ms, Ordering::SeqCst);
        self.publish_deadline();
        self.changed.notify_one();
    }

    /// The fence margin for the current ttl (`warden_core::ha::fence_margin_ms`).
    pub fn set_margin(&self, ms: u64) {
        if self.margin_ms.swap(ms, Ordering::SeqCst) != ms {
            self.publish_deadline();
            // The in-process guard sleeps until the moment it would fence: that moved.
            self.changed.notify_one();
        }
    }

    /// Writes the external guard's deadline (system monotonic ms; 0 = nothing to guard).
    fn publish_deadline(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let until = self.leader_until_ms.load(Ordering::SeqCst);
        let deadline = if until == 0 || self.stands_down() {
            0
        } else {
            let left = until.saturating_sub(monotonic_ms());
            (system_monotonic_ms() + left)
                .saturating_sub(self.margin_ms.load(Ordering::SeqCst))
                .max(1)
        };
        if let Err(e) = write_atomically(path, &format!("{deadline}\n")) {
            error!("cannot update the fence state file {}: {e}", path.display());
        }
    }

    /// PostgreSQL is running as a primary.
    pub fn set_primary_running(&self, yes: bool) {
        if self.primary_running.swap(yes, Ordering::SeqCst) != yes {
            self.changed.notify_one();
        }
    }

    /// Maintenance mode: never stop PostgreSQL on our own.
    pub fn set_paused(&self, yes: bool) {
        if self.paused.swap(yes, Ordering::SeqCst) != yes {
            self.publish_deadline();
            self.changed.notify_one();
        }
    }

    /// This node's watchdog is armed: open, kicked by the HA loop right after every lock
    /// renewal, with a timeout shorter than `ttl`.
    ///
    /// Then the watchdog is the fence, and both guards stand down. A frozen or stalled
    /// agent stops kicking it, so the device resets the machine before the lock can
    /// expire: nothing this node runs outlives its lease, which is what the guards
    /// ensure by stopping PostgreSQL. Stopping PostgreSQL first would only add an
    /// outage the operator chose the watchdog to handle (Patroni, and Patroni's
    /// acceptance suite, expect a frozen primary's PostgreSQL to keep running until the
    /// watchdog fires). Without an armed watchdog the guards work as before.
    pub fn set_watchdog_armed(&self, yes: bool) {
        if self.watchdog_armed.swap(yes, Ordering::SeqCst) != yes {
            self.publish_deadline();
            self.changed.notify_one();
        }
    }

    /// Paused (never stop PostgreSQL on our own) or the watchdog fences this node.
    fn stands_down(&self) -> bool {
        self.paused.load(Ordering::SeqCst) || self.watchdog_armed.load(Ordering::SeqCst)
    }

    /// New PostgreSQL settings after a config change.
    pub fn set_postgres(&self, pg: Postgres) {
        if let Ok(mut g) = self.pg.lock() {
            *g = pg;
        }
    }

    /// The PostgreSQL instance as currently configured (for read-only queries outside
    /// the HA loop, e.g. fresh WAL positions for the REST API).
    pub fn postgres(&self) -> Postgres {
        match self.pg.lock() {
            Ok(g) => g.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Would the guard fence now?
    pub fn must_fence(&self, now_ms: u64) -> bool {
        let until = self.leader_until_ms.load(Ordering::SeqCst);
        self.primary_running.load(Ordering::SeqCst)
            && !self.stands_down()
            && until > 0
            && now_ms + self.margin_ms.load(Ordering::SeqCst) >= until
    }

    /// How long from `now_ms` until [`Fence::must_fence`] turns true if nothing changes
    /// (`Some(0)`: it is true now), or `None` when only a change can make it true.
    pub fn fence_in_ms(&self, now_ms: u64) -> Option<u64> {
        let until = self.leader_until_ms.load(Ordering::SeqCst);
        if !self.primary_running.load(Ordering::SeqCst) || self.stands_down() || until == 0 {
            return None;
        }
        let margin = self.margin_ms.load(Ordering::SeqCst);
        Some(until.saturating_sub(margin).saturating_sub(now_ms))
    }

    /// Runs the guard until the process ends. It sleeps until the moment it would fence
    /// (the lock's expiry minus the margin) and is woken early by every change of the
    /// state it judges (a renewal moves the moment on): no periodic wake-ups on an idle
    /// node. Both clocks are the process's monotonic one; the sleep is still capped at
    /// [`GUARD_MAX_SLEEP_MS`] as a backstop.
    pub async fn guard(self: Arc<Self>) {
        loop {
            let wait = self
                .fence_in_ms(monotonic_ms())
                .unwrap_or(GUARD_MAX_SLEEP_MS)
                .min(GUARD_MAX_SLEEP_MS);
            if wait > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = self.changed.notified() => {}
                }
            }
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
                // A frozen instance ignores the immediate shutdown until it resumes.
                error!("fencing: could not stop PostgreSQL ({e}); killing it");
                if let Err(e) = pg.kill_instance().await {
                    error!("fencing: could not kill PostgreSQL: {e}");
                }
            }
        }
    }
}

/// Starts the external guard for `data_dir` (replacing one left by a previous agent),
/// in its own process group so that signals aimed at the agent do not reach it.
pub fn spawn_external_guard(data_dir: &Path) -> anyhow::Result<()> {
    let (_, pid_file) = fence_files(data_dir);
    if let Ok(old) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = old.trim().parse::<i32>() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("--fence-guard") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    // The small guard binary shipped beside the agent: a fraction of the agent's
    // resident memory. Without it the agent runs itself in guard mode (same loop).
    let agent = std::env::current_exe()?;
    let small = agent.with_file_name("warden-guard");
    let exe = if small.is_file() { small } else { agent };
    let child = std::process::Command::new(exe)
        .arg("--fence-guard")
        .arg(data_dir)
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    std::fs::write(&pid_file, format!("{}\n", child.id()))?;
    // The guard is reaped by nobody once we exit; while we live, reap it if it ends.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(())
}

/// Stops the external guard of `data_dir` when no postmaster runs from it (nothing left
/// to fence), and waits up to a second for it to go: an agent that exits after a failed
/// bootstrap leaves no process behind. With a postmaster still running the guard stays,
/// because it is what stops that primary if nobody renews the leader lock.
pub fn stop_external_guard_if_idle(data_dir: &Path) {
    if data_dir.join("postmaster.pid").exists() {
        return;
    }
    let (state, pid_file) = fence_files(data_dir);
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(pid) = pid else { return };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("--fence-guard") {
        return;
    }
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        // A zombie still answers kill(0); /proc/PID/cmdline is empty once it has exited.
        let gone = std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty());
        if gone {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(&state);
}

/// Runs `bootstrap.post_bootstrap` with the superuser connection string as last argument
/// (password via the pgpass file in `PGPASSFILE`, TLS options in the string), as Patroni
/// does. Non-zero exit fails the bootstrap.
pub async fn run_post_bootstrap(cmd: &str, pg: &Postgres) -> anyhow::Result<()> {
    let words = shell_split(cmd);
    match pg.run_post_bootstrap_script(&words).await {
        Ok(()) => Ok(()),
        Err(warden_pg::PgError::Spawn { source, .. }) => Err(anyhow::anyhow!(
            "bootstrap.post_bootstrap: cannot run '{cmd}': {source}"
        )),
        Err(warden_pg::PgError::Command { status, .. }) => Err(anyhow::anyhow!(
            "bootstrap.post_bootstrap: '{cmd}' exited with {status}"
        )),
        Err(e) => Err(anyhow::anyhow!("bootstrap.post_bootstrap: {e}")),
    }
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
        let f = Fence::with_state_file(Postgres::new(warden_pg::PgSettings::default()), None);
        assert!(!f.must_fence(10_000));
        f.set_leader_until(10_000);
        assert!(!f.must_fence(5_000), "primary not running");
        f.set_primary_running(true);
        assert!(!f.must_fence(5_000), "plenty of time left");
        assert!(f.must_fence(8_000), "within the margin");
        f.set_paused(true);
        assert!(!f.must_fence(9_000), "paused");
        f.set_paused(false);
        f.set_watchdog_armed(true);
        assert!(!f.must_fence(9_000), "the watchdog fences");
        f.set_watchdog_armed(false);
        assert!(
            f.must_fence(9_000),
            "watchdog closed: the guard fences again"
        );
        f.set_leader_until(0);
        assert!(!f.must_fence(9_000), "lock not held");
    }

    #[test]
    fn the_guard_sleeps_until_the_moment_it_would_fence() {
        let f = Fence::with_state_file(Postgres::new(warden_pg::PgSettings::default()), None);
        assert_eq!(f.fence_in_ms(0), None, "no lock");
        f.set_leader_until(10_000);
        assert_eq!(f.fence_in_ms(0), None, "primary not running");
        f.set_primary_running(true);
        let moment = 10_000 - FENCE_MARGIN_MS;
        assert_eq!(f.fence_in_ms(1_000), Some(moment - 1_000));
        assert!(!f.must_fence(moment - 1) && f.must_fence(moment));
        assert_eq!(f.fence_in_ms(moment), Some(0));
        assert_eq!(f.fence_in_ms(moment + 5), Some(0));
        // A shorter lease's smaller margin moves the moment later.
        f.set_margin(1_000);
        assert_eq!(f.fence_in_ms(1_000), Some(10_000 - 1_000 - 1_000));
        f.set_margin(FENCE_MARGIN_MS);
        f.set_paused(true);
        assert_eq!(f.fence_in_ms(1_000), None, "paused");
        f.set_paused(false);
        f.set_watchdog_armed(true);
        assert_eq!(f.fence_in_ms(1_000), None, "the watchdog fences");
    }

    /// The in-process guard, asleep until a far deadline, fences at once when a change
    /// brings the moment forward (the change wakes it).
    #[tokio::test]
    async fn a_change_wakes_the_sleeping_guard() {
        let f = Fence::with_state_file(Postgres::new(warden_pg::PgSettings::default()), None);
        f.set_leader_until(monotonic_ms() + 600_000);
        f.set_primary_running(true);
        let guard = tokio::spawn(f.clone().guard());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(f.primary_running.load(Ordering::SeqCst));
        // The lock now (nearly) expires: the guard must act long before its 10 s backstop.
        f.set_leader_until(monotonic_ms() + 1);
        let t0 = std::time::Instant::now();
        while f.primary_running.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the guard did not wake up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        guard.abort();
    }

    /// A fence publishing to a state file in a temp dir, and a reader of the deadline it
    /// published (the external guard's view).
    fn fence_with_state_file() -> (tempfile::TempDir, Arc<Fence>, impl Fn() -> u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("data.fence");
        let f = Fence::with_state_file(
            Postgres::new(warden_pg::PgSettings::default()),
            Some(state.clone()),
        );
        let deadline = move || -> u64 {
            std::fs::read_to_string(&state)
                .expect("state file")
                .trim()
                .parse()
                .expect("a number")
        };
        (dir, f, deadline)
    }

    #[test]
    fn the_margin_follows_the_ttl() {
        let (_dir, f, deadline) = fence_with_state_file();
        f.set_primary_running(true);
        f.set_margin(warden_core::ha::fence_margin_ms(4));
        f.set_leader_until(10_000);
        assert!(!f.must_fence(8_500), "a 4 s lease fences 1 s before expiry");
        assert!(f.must_fence(9_000));
        // The external guard's deadline moves with the margin.
        let until = monotonic_ms() + 30_000;
        f.set_leader_until(until);
        let short = deadline();
        f.set_margin(warden_core::ha::fence_margin_ms(20));
        let long = deadline();
        assert!((900..=1_100).contains(&(short - long)), "{short} - {long}");
    }

    #[test]
    fn external_guard_deadline_is_not_armed_while_the_watchdog_is() {
        let (_dir, f, deadline) = fence_with_state_file();
        f.set_leader_until(monotonic_ms() + 30_000);
        assert!(deadline() > 0);
        f.set_watchdog_armed(true);
        assert_eq!(deadline(), 0);
        f.set_leader_until(monotonic_ms() + 30_000);
        assert_eq!(deadline(), 0, "renewals keep it disarmed");
        f.set_watchdog_armed(false);
        assert!(deadline() > 0);
    }
}
