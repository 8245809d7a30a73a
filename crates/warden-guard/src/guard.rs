//! The external fence guard's main loop.
//!
//! The agent publishes, in a state file beside the data directory, the moment (system
//! monotonic ms) until which its leader lock is certainly held, minus the fencing
//! margin; `0` means nothing to guard. The guard sleeps until that moment, or until the
//! file changes or the agent exits; past it, it stops the postmaster of the data
//! directory (immediate shutdown, SIGKILL of every process if that does not work), so
//! that a frozen or killed agent never leaves a primary that outlives its lease.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{kill_instance, send_signal, wait_gone};

/// The longest the guard sleeps without looking when it can be woken by changes
/// (inotify and pidfd work); a backstop only.
const MAX_SLEEP_MS: u64 = 10_000;
/// Its period when it cannot be woken (no inotify or pidfd): it polls.
const POLL_MS: u64 = 100;

/// CLOCK_MONOTONIC in ms: the same clock in every process of this machine.
pub fn system_monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Replaces `path` with `content` in one step (a reader sees the old or the new text,
/// and the guard's inotify watch sees a rename).
pub fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Files of the external guard for a data directory (outside it, so pg_basebackup and
/// pg_rewind never copy them): the deadline state file and the guard's pid file.
pub fn fence_files(data_dir: &Path) -> (PathBuf, PathBuf) {
    let base = data_dir
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    (
        PathBuf::from(format!("{base}.fence")),
        PathBuf::from(format!("{base}.fence.pid")),
    )
}

/// The guard's arguments, `--fence-guard DIR --parent-pid PID` exactly as the agent
/// passes them (the agent and `stop`/replace logic recognise a guard by `--fence-guard`
/// in its command line), else `None`.
pub fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<(PathBuf, i32)> {
    if args.next()? != "--fence-guard" {
        return None;
    }
    let dir = PathBuf::from(args.next()?);
    if args.next()? != "--parent-pid" {
        return None;
    }
    let pid = args.next()?.to_str()?.parse().ok()?;
    args.next().is_none().then_some((dir, pid))
}

/// Local time as Patroni's logs show it (`2024-01-31 12:00:00,123`).
pub fn asctime() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime and localtime_r write only the structs we pass.
    let tm = unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&ts.tv_sec, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ts.tv_nsec / 1_000_000
    )
}

/// What the guard sleeps on between looks: a change in the directory of its state and
/// pid files (inotify: the agent renews the deadline by renaming a new state file in)
/// and the agent's exit (a pidfd turns readable), else the next deadline. An idle guard
/// so wakes once per renewal instead of ten times a second, and fences at its deadline
/// to the millisecond. Without inotify or pidfd it polls every 100 ms.
struct GuardWait {
    inotify: Option<OwnedFd>,
    parent: ParentWatch,
}

enum ParentWatch {
    /// Readable once the agent has exited.
    Fd(OwnedFd),
    /// It has exited (the pidfd fired); nothing left to watch.
    Exited,
    /// No pidfd (kernel before 5.3): the guard must poll to notice the exit.
    Unsupported,
}

/// Takes ownership of a descriptor a system call returned, if it is one.
fn owned(fd: i64) -> Option<OwnedFd> {
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a descriptor the kernel just returned to us, owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl GuardWait {
    fn new(dir: &Path, parent: i32) -> GuardWait {
        // SAFETY: inotify_init1 takes flags and returns a descriptor or -1.
        let inotify =
            owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) } as i64)
                .filter(|fd| {
                    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                    else {
                        return false;
                    };
                    let mask = libc::IN_CLOSE_WRITE
                        | libc::IN_MOVED_TO
                        | libc::IN_MOVED_FROM
                        | libc::IN_DELETE
                        | libc::IN_DELETE_SELF
                        | libc::IN_MOVE_SELF;
                    // SAFETY: a valid inotify descriptor and a NUL-terminated path.
                    unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) >= 0 }
                });
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, parent, 0) };
        let parent = match owned(fd) {
            Some(fd) => ParentWatch::Fd(fd),
            // ESRCH: the agent is already gone.
            None if errno() == libc::ESRCH => ParentWatch::Exited,
            None => ParentWatch::Unsupported,
        };
        GuardWait { inotify, parent }
    }

    /// Sleeps until something the guard judges may have changed, or `max_ms` passed.
    fn wait(&mut self, max_ms: u64) {
        let cap = if self.inotify.is_none() || matches!(self.parent, ParentWatch::Unsupported) {
            POLL_MS
        } else {
            MAX_SLEEP_MS
        };
        let ms = max_ms.min(cap);
        let Some(ino) = &self.inotify else {
            std::thread::sleep(Duration::from_millis(ms));
            return;
        };
        let mut fds = vec![libc::pollfd {
            fd: ino.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let ParentWatch::Fd(p) = &self.parent {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = i32::try_from(ms).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            // EINTR or worse: never spin.
            std::thread::sleep(Duration::from_millis(ms.min(POLL_MS)));
            return;
        }
        if fds[0].revents != 0 {
            // Drain; which file changed does not matter, everything is read again.
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a buffer of the length we pass; non-blocking fd.
            while unsafe { libc::read(ino.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            self.parent = ParentWatch::Exited;
        }
    }
}

/// The guard's main loop (`warden-guard --fence-guard DATA_DIR --parent-pid PID`):
/// read the deadline; past it, stop the postmaster of `data_dir` (immediate shutdown)
/// and clear the deadline; else sleep until it, or until the state changes or the agent
/// exits. Exits when the agent is gone and nothing is left to guard, when a newer guard
/// replaced it, or when the state file disappears (data directory removed). `released`
/// runs once, after the set-up, before the first sleep (the binary releases its
/// start-up code there).
pub fn run(data_dir: &Path, parent: i32, released: impl FnOnce()) -> i32 {
    let (state, pid_file) = fence_files(data_dir);
    let me = std::process::id();
    // Set up before the first look, so no change after it can be missed.
    let mut waiter = GuardWait::new(state.parent().unwrap_or_else(|| Path::new("/")), parent);
    let owner = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    // The agent writes our pid right after starting us: until then the file may still
    // name the guard we replace, which is no sign that a newer one replaced us.
    let started = Instant::now();
    while owner() != Some(me) && started.elapsed() < Duration::from_secs(2) {
        waiter.wait(50);
    }
    released();
    loop {
        // A newer guard replaced us.
        if owner().is_some_and(|o| o != me) {
            return 0;
        }
        let Ok(text) = std::fs::read_to_string(&state) else {
            return 0;
        };
        let deadline: u64 = text.trim().parse().unwrap_or(0);
        let parent_alive = send_signal(parent, 0).is_ok();
        if deadline == 0 {
            if !parent_alive {
                return 0;
            }
            waiter.wait(u64::MAX);
            continue;
        }
        let now = system_monotonic_ms();
        if now < deadline {
            waiter.wait(deadline - now);
            continue;
        }
        // Only a primary must be stopped: a standby cannot accept writes anyway.
        if data_dir.join("standby.signal").exists() {
            let _ = write_atomically(&state, "0\n");
            continue;
        }
        let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("postgres") {
                eprintln!(
                    "{} CRITICAL: fence guard: the agent did not renew the leader lock in time; stopping PostgreSQL (pid {pid}) so that it cannot accept writes",
                    asctime()
                );
                let _ = send_signal(pid, libc::SIGQUIT);
                // A frozen instance (SIGSTOPped, hung storage) does not act on SIGQUIT
                // until it resumes, and a resumed backend could still finish a commit:
                // if it is not gone in two seconds, SIGKILL it and all its processes.
                if !wait_gone(pid, Duration::from_secs(2)) {
                    eprintln!(
                        "{} CRITICAL: fence guard: PostgreSQL (pid {pid}) did not stop; killing it and all its processes",
                        asctime()
                    );
                    kill_instance(pid, Duration::from_secs(5));
                }
            }
        }
        let _ = write_atomically(&state, "0\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        a.iter().map(Into::into).collect()
    }

    #[test]
    fn guard_arguments_are_recognised_only_in_the_agent_form() {
        assert_eq!(
            parse_args(args(&["--fence-guard", "/d", "--parent-pid", "42"]).into_iter()),
            Some((PathBuf::from("/d"), 42))
        );
        for other in [
            &["/etc/patroni.yml"][..],
            &["--fence-guard", "/d"],
            &["--fence-guard", "/d", "--parent-pid", "x"],
            &["--fence-guard", "/d", "--parent-pid", "42", "extra"],
            &["--parent-pid", "42", "--fence-guard", "/d"],
            &[],
        ] {
            assert_eq!(parse_args(args(other).into_iter()), None, "{other:?}");
        }
    }

    #[test]
    fn fence_files_sit_beside_the_data_directory() {
        assert_eq!(
            fence_files(Path::new("/var/lib/pg/data/")),
            (
                PathBuf::from("/var/lib/pg/data.fence"),
                PathBuf::from("/var/lib/pg/data.fence.pid")
            )
        );
    }

    #[test]
    fn asctime_has_patronis_shape() {
        let t = asctime();
        assert_eq!(t.len(), 23, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[19..20], ",");
    }

    /// The external guard's wait ends when a file in its directory is replaced (a
    /// renewal) and when the watched process exits, not at the end of its timeout.
    #[test]
    fn the_wait_wakes_on_a_renewal_and_on_the_agent_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = std::process::id() as i32;
        let mut w = GuardWait::new(dir.path(), me);
        assert!(w.inotify.is_some(), "inotify is available here");
        assert!(
            matches!(w.parent, ParentWatch::Fd(_)),
            "pidfd is available here"
        );
        let state = dir.path().join("data.fence");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            write_atomically(&state, "42\n").expect("write");
        });
        let t0 = std::time::Instant::now();
        w.wait(8_000);
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        writer.join().expect("writer");

        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("sleep");
        let mut w = GuardWait::new(dir.path(), child.id() as i32);
        let t0 = std::time::Instant::now();
        w.wait(8_000);
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        assert!(matches!(w.parent, ParentWatch::Exited));
        let _ = child.wait();
        // Nothing changes any more: the wait lasts its timeout (and does not spin).
        let t0 = std::time::Instant::now();
        w.wait(300);
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
    }
}
