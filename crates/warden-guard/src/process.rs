//! Looking at and killing processes through `/proc` and `kill(2)`: what the fence guard
//! needs to stop a postmaster, shared with `warden-pg`.

use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `sig` to `pid`: `Ok(())`, or the `errno` (e.g. `ESRCH`: no such process).
pub fn send_signal(pid: i32, sig: i32) -> Result<(), i32> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match send_signal(pid, 0) {
        Ok(()) | Err(libc::EPERM) => {}
        Err(_) => return false,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(
                stat[i + 1..].trim_start().chars().next(),
                Some('Z') | Some('X')
            ),
            None => true,
        },
        // No /proc entry although kill() succeeded: a race with exit, or no procfs.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// The direct children of `pid` (from every `/proc/<pid>/stat`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        // after ") ": state ppid ...
        let mut it = stat[i + 1..].split_whitespace();
        let _state = it.next();
        if it.next().and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Waits up to `timeout` for `pid` to exit (a zombie counts as gone).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs a postmaster and every process it started, children first, and waits up
/// to `timeout` for them to be gone. SIGKILL also ends a stopped (frozen) process, and
/// a backend killed this way can never finish a commit it was in the middle of, which
/// an orderly (or even immediate) shutdown of a frozen instance cannot promise.
/// Returns whether everything is gone.
pub fn kill_instance(postmaster: i32, timeout: Duration) -> bool {
    let children = children_of(postmaster);
    for c in &children {
        let _ = send_signal(*c, libc::SIGKILL);
    }
    let _ = send_signal(postmaster, libc::SIGKILL);
    let deadline = Instant::now() + timeout;
    loop {
        let alive = std::iter::once(postmaster)
            .chain(children.iter().copied())
            .any(pid_alive);
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_alive() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(0));
        assert!(!pid_alive(i32::MAX));
        assert_eq!(send_signal(i32::MAX, 0), Err(libc::ESRCH));
    }

    #[test]
    fn kills_a_stopped_process_and_its_children() {
        // A "postmaster" with a child, both stopped (frozen): SIGKILL ends them.
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .spawn()
            .unwrap();
        let pid = parent.id() as i32;
        let started = Instant::now();
        while children_of(pid).is_empty() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let kids = children_of(pid);
        assert_eq!(kids.len(), 1, "{kids:?}");
        for p in kids.iter().chain([&pid]) {
            send_signal(*p, libc::SIGSTOP).unwrap();
        }
        // The zombie of our own child counts as gone once killed.
        assert!(kill_instance(pid, Duration::from_secs(5)));
        assert!(!pid_alive(kids[0]));
        let _ = parent.wait();
    }
}
