//! Process helpers: building tool commands, postmaster detection, signals.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::error::PgError;

// Shared with the fence guard, which must stop a postmaster without this crate.
pub use warden_guard::process::kill_instance;
pub(crate) use warden_guard::process::{children_of, pid_alive};

/// The agent's environment without what must not leak into PostgreSQL and its tools
/// (spec §3): `NOTIFY_SOCKET`, `PATRONI_*`, `KUBERNETES_*`; `PG_MALLOC_ARENA_MAX` is
/// renamed `MALLOC_ARENA_MAX`.
pub(crate) fn filtered_env() -> Vec<(OsString, OsString)> {
    let mut out = Vec::new();
    let mut arena = None;
    for (k, v) in std::env::vars_os() {
        let ks = k.to_string_lossy();
        if ks == "NOTIFY_SOCKET" || ks.starts_with("PATRONI_") || ks.starts_with("KUBERNETES_") {
            continue;
        }
        if ks == "PG_MALLOC_ARENA_MAX" {
            arena = Some(v);
            continue;
        }
        out.push((k, v));
    }
    if let Some(v) = arena {
        out.retain(|(k, _)| k != "MALLOC_ARENA_MAX");
        out.push(("MALLOC_ARENA_MAX".into(), v));
    }
    out
}

/// Human-readable command line for messages (`program arg arg`).
pub(crate) fn describe(program: &Path, args: &[OsString]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Last `max` characters of a tool's output, trimmed (error messages).
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_string();
    }
    let skip = s.chars().count() - max;
    format!("...{}", s.chars().skip(skip).collect::<String>())
}

/// Reads the PID (first line) of `<data_dir>/postmaster.pid`.
pub(crate) fn read_pid_file(data_dir: &Path) -> Option<i32> {
    let s = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    s.lines().next()?.trim().parse().ok()
}

/// Does live process `pid` look like the postmaster of `data_dir`? Its executable must
/// look like postgres and, when readable, its cwd must be the data dir.
pub(crate) fn looks_like_postmaster(pid: i32, data_dir: &Path) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).ok().map(|b| {
        let first = b.split(|c| *c == 0).next().unwrap_or_default().to_vec();
        String::from_utf8_lossy(&first).into_owned()
    });
    if comm.is_none() && argv0.is_none() {
        // no procfs: trust the pid file
        return true;
    }
    let exe_ok = comm
        .as_deref()
        .is_some_and(|c| c.trim().contains("postgres"))
        || argv0.as_deref().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().contains("postgres"))
        });
    if !exe_ok {
        return false;
    }
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        if let Ok(dd) = std::fs::canonicalize(data_dir) {
            return cwd == dd;
        }
    }
    true
}

/// Direct children of `pid` (from /proc).
/// Sends `sig` to `pid`; Ok(false) when it does not exist.
pub(crate) fn signal(pid: i32, sig: Signal) -> Result<bool, PgError> {
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(PgError::StopFailed(format!("kill -{sig} {pid}: {e}"))),
    }
}

/// SIGKILLs the postmaster and all its children (its process group when it leads one).
pub(crate) fn kill_all(pid: i32) {
    let children = children_of(pid);
    let p = Pid::from_raw(pid);
    if nix::unistd::getpgid(Some(p)).ok() == Some(p) {
        let _ = killpg(p, Signal::SIGKILL);
    }
    let _ = kill(p, Signal::SIGKILL);
    for c in children {
        let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
    }
}

/// Polls until `pid` is gone; true if it went away within `timeout`.
pub(crate) async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path of a binary: `bin_dir/name`, or just `name` (PATH lookup) when bin_dir is empty.
pub(crate) fn tool_path(bin_dir: &Path, name: &str) -> PathBuf {
    if bin_dir.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        bin_dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail(b"  abc \n", 10), "abc");
        assert_eq!(tail(b"0123456789", 4), "...6789");
    }

    #[test]
    fn own_pid_alive() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(0));
        assert!(!pid_alive(i32::MAX));
        assert!(!looks_like_postmaster(
            std::process::id() as i32,
            Path::new("/nonexistent")
        ));
    }
}
