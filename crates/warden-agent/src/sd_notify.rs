//! systemd's service notifications (sd_notify(3)) without libsystemd: a datagram to the
//! unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//!
//! * `STATUS=` with a short note while waiting for etcd, then each HA cycle's one-line
//!   decision when it changes;
//! * `READY=1` once the first HA cycle has completed (`Type=notify` units count the
//!   agent as started from then on);
//! * `WATCHDOG=1` every half `WATCHDOG_USEC` while, and only while, the HA loop is
//!   healthy ([`warden_core::liveness`]), so that `WatchdogSec=` restarts a stuck loop;
//! * `STOPPING=1` when shutdown begins (SIGTERM/SIGINT).
//!
//! The HA loop is watched through the status it publishes after every cycle (the cycle
//! counter and the next scheduled start), so it needs no hook of its own: a loop that
//! stops publishing is, from here, a loop that stopped.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tracing::{debug, warn};
use warden_api::{monotonic_ms, StatusHandle};
use warden_core::liveness::{should_ping, WatchdogTimings};

/// How often the published status is looked at: the latency of `READY=1` and `STATUS=`,
/// and the resolution of the watchdog's judgement.
const POLL: Duration = Duration::from_millis(200);

/// The notification socket, if systemd gave one.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

/// What systemd asked for, read from the environment at start.
#[derive(Debug, Default)]
pub struct SystemdEnv {
    /// `NOTIFY_SOCKET`, when set and usable.
    pub notifier: Option<Notifier>,
    /// `WATCHDOG_USEC`, when set, non-zero and meant for this process (`WATCHDOG_PID`).
    pub watchdog: Option<WatchdogTimings>,
}

impl SystemdEnv {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes them from
    /// the environment (sd_notify's `unset_environment`): PostgreSQL, callbacks and the
    /// fence guard must not notify on the agent's behalf (`NotifyAccess=all` would let
    /// them). Call it before any other thread starts.
    pub fn take() -> SystemdEnv {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(k);
        }
        let notifier = socket.and_then(|s| match Notifier::open(&s.to_string_lossy()) {
            Ok(n) => Some(n),
            Err(e) => {
                // Logging is not set up yet.
                eprintln!("NOTIFY_SOCKET ignored: {e}");
                None
            }
        });
        let watchdog = watchdog_timings(usec.as_deref(), pid.as_deref(), std::process::id());
        SystemdEnv { notifier, watchdog }
    }
}

/// The watchdog's timings from `WATCHDOG_USEC` and `WATCHDOG_PID` as sd_watchdog_enabled(3)
/// reads them: none when unset, zero or unparsable, or when `WATCHDOG_PID` names another
/// process (the variables leaked from a parent).
fn watchdog_timings(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<WatchdogTimings> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    WatchdogTimings::from_usec(usec)
}

impl Notifier {
    /// A sender to `NOTIFY_SOCKET` = `path` (absolute) or `@name` (abstract namespace).
    pub fn open(spec: &str) -> std::io::Result<Notifier> {
        use std::io::{Error, ErrorKind};
        let addr = if let Some(name) = spec.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if spec.starts_with('/') {
            SocketAddr::from_pathname(spec)?
        } else {
            // systemd 256 also hands out vsock: addresses (for VMs); not supported here.
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{spec:?} is neither a path nor an abstract socket (@name)"),
            ));
        };
        let sock = UnixDatagram::unbound()?;
        // A full receive queue must not block the caller (the HA loop's runtime).
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Sends one notification (`KEY=value` lines); failures are logged, not fatal: the
    /// agent runs on without systemd's bookkeeping.
    pub fn notify(&self, msg: &str) {
        match self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(_) => debug!("sd_notify: {msg:?}"),
            Err(e) => warn!("sd_notify {msg:?} failed: {e}"),
        }
    }

    /// `STATUS=` with `text` on one line (a newline would start a new assignment).
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={}", one_line(text)));
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Follows the HA loop through `api`: `READY=1` after the first cycle, `STATUS=` on each
/// new decision, `WATCHDOG=1` while healthy; `STOPPING=1` once `stop` is set, then ends
/// (systemd does not watch a stopping service).
pub async fn run(
    notifier: Notifier,
    watchdog: Option<WatchdogTimings>,
    api: StatusHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = match watchdog {
        Some(t) => POLL.min(Duration::from_millis(t.ping_every_ms().max(1))),
        None => POLL,
    };
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen_cycles, mut completed_at, mut last_ping) = (0u64, None, None);
    let mut ready = false;
    let mut status = String::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                notifier.notify("STOPPING=1\nSTATUS=shutting down");
                return;
            }
        }
        let s = api.get();
        let now = monotonic_ms();
        if s.cycles != seen_cycles {
            seen_cycles = s.cycles;
            completed_at = Some(now);
        }
        if seen_cycles > 0 && (!ready || s.last_decision != status) {
            status.clone_from(&s.last_decision);
            let line = format!("STATUS={}", one_line(&status));
            if ready {
                notifier.notify(&line);
            } else {
                notifier.notify(&format!("READY=1\n{line}"));
                ready = true;
            }
        }
        if let Some(t) = watchdog {
            if should_ping(completed_at, s.next_cycle_due_ms, last_ping, now, t) {
                notifier.notify("WATCHDOG=1");
                last_ping = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_env() {
        let t = |u, p| watchdog_timings(u, p, 42).map(|t| t.interval_ms);
        assert_eq!(t(Some("2000000"), None), Some(2000));
        assert_eq!(t(Some("2000000"), Some("42")), Some(2000));
        assert_eq!(t(Some("2000000"), Some("41")), None);
        assert_eq!(t(Some("2000000"), Some("x")), None);
        assert_eq!(t(Some("0"), None), None);
        assert_eq!(t(Some("soon"), None), None);
        assert_eq!(t(None, Some("42")), None);
    }

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::open(path.to_str().unwrap())
            .unwrap()
            .status("a\nb");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=a b");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("warden-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier::open(&format!("@{name}"))
            .unwrap()
            .notify("READY=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        assert!(Notifier::open("vsock:2:1234").is_err());
    }
}
