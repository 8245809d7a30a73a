//! A FIFO standing in for a watchdog device, read the way Patroni's acceptance harness
//! reads it (`WatchdogMonitor` in `features/environment.py`): the agent's `testing`
//! driver writes `Ctimeout=<n>\n` to set the timeout, `1` as keepalive and `V` (magic
//! close) before closing.
//!
//! The read end is held open (non-blocking) for the monitor's whole life, so the agent
//! can open and close the device any number of times; every byte is recorded with the
//! time it arrived.

use crate::RunAs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the agent did to the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchdogEvent {
    /// `Ctimeout=<n>\n`
    Timeout(i64),
    /// `1`
    Ping,
    /// `V`
    MagicClose,
    /// The writer closed the device (end of a session with data in it).
    Closed,
    /// Anything else.
    Unknown(String),
}

/// The monitor: a FIFO at `path` plus a thread recording what is written to it.
pub struct FifoWatchdog {
    /// the FIFO (use as `watchdog.device`)
    pub path: PathBuf,
    events: Arc<Mutex<Vec<(Instant, WatchdogEvent)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoWatchdog {
    /// Creates the FIFO (owned by `run_as`, so an agent running as that user can open
    /// it) and starts recording.
    pub fn create(path: &Path, run_as: &RunAs) -> FifoWatchdog {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
        run_as.chown(path);
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open {} for reading: {e}", path.display()));
        let events: Arc<Mutex<Vec<(Instant, WatchdogEvent)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut in_session = false;
            let mut buf = [0u8; 256];
            while !st.load(Ordering::SeqCst) {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        // No writer: either none yet or the last one closed.
                        if std::mem::take(&mut in_session) {
                            push(&ev, WatchdogEvent::Closed);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(n) => {
                        in_session = true;
                        pending.extend_from_slice(&buf[..n]);
                        parse(&mut pending, &ev);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        FifoWatchdog {
            path: path.to_path_buf(),
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything recorded so far, with arrival times.
    pub fn events(&self) -> Vec<(Instant, WatchdogEvent)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The events without times.
    pub fn kinds(&self) -> Vec<WatchdogEvent> {
        self.events().into_iter().map(|(_, e)| e).collect()
    }

    /// Number of keepalives so far.
    pub fn pings(&self) -> usize {
        self.kinds()
            .iter()
            .filter(|e| **e == WatchdogEvent::Ping)
            .count()
    }

    /// The last timeout set, if any.
    pub fn timeout(&self) -> Option<i64> {
        self.kinds().iter().rev().find_map(|e| match e {
            WatchdogEvent::Timeout(t) => Some(*t),
            _ => None,
        })
    }

    /// Time of the last keepalive.
    pub fn last_ping(&self) -> Option<Instant> {
        self.events()
            .iter()
            .rev()
            .find(|(_, e)| *e == WatchdogEvent::Ping)
            .map(|(t, _)| *t)
    }

    /// Waits (bounded) until `cond` holds for the events recorded so far.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&[WatchdogEvent]) -> bool) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if cond(&self.kinds()) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn push(ev: &Mutex<Vec<(Instant, WatchdogEvent)>>, e: WatchdogEvent) {
    if let Ok(mut v) = ev.lock() {
        v.push((Instant::now(), e));
    }
}

/// Consumes complete commands from `pending` (a `C…` command may arrive in pieces).
fn parse(pending: &mut Vec<u8>, ev: &Mutex<Vec<(Instant, WatchdogEvent)>>) {
    loop {
        let Some(&first) = pending.first() else {
            return;
        };
        let (event, used) = match first {
            b'1' => (WatchdogEvent::Ping, 1),
            b'V' => (WatchdogEvent::MagicClose, 1),
            b'C' => {
                let Some(nl) = pending.iter().position(|b| *b == b'\n') else {
                    return;
                };
                let cmd = String::from_utf8_lossy(&pending[1..nl]).into_owned();
                let e = cmd
                    .strip_prefix("timeout=")
                    .and_then(|t| t.parse().ok())
                    .map_or(WatchdogEvent::Unknown(cmd.clone()), WatchdogEvent::Timeout);
                (e, nl + 1)
            }
            other => (WatchdogEvent::Unknown((other as char).to_string()), 1),
        };
        pending.drain(..used);
        push(ev, event);
    }
}

impl Drop for FifoWatchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
