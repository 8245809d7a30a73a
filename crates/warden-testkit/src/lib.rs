//! Test harness shared by every crate's integration tests.
//!
//! Everything here starts *real* processes (etcd, PostgreSQL, Warden agents) on loopback,
//! on ports picked at run time, in temp dirs owned by the unprivileged user that runs
//! PostgreSQL. Every process is held by a [`ProcessGuard`] that kills it by PID on drop,
//! so a failing test never leaves anything behind.

pub mod cluster;
pub mod etcd;
pub mod haproxy;
pub mod pg;
pub mod pgbouncer;
pub mod proxy;
pub mod watchdog;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The certificate Patroni's acceptance harness makes, the way it makes it: `openssl req
/// -nodes -new -x509 -subj /CN=batman.patroni -addext subjectAltName=IP:127.0.0.1`. One
/// self-signed certificate (OpenSSL 3 marks it `CA:TRUE`) serves as server certificate,
/// client certificate and CA file at once. Writes `<dir>/<name>.crt` and
/// `<dir>/<name>.key` (mode 0600) and returns their paths; panics without `openssl`.
pub fn harness_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-nodes",
            "-new",
            "-x509",
            "-subj",
            "/CN=batman.patroni",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("the openssl binary is needed for this test");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
    (crt, key)
}

/// PostgreSQL 15 binaries on this machine kind (Debian 12).
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Returns the PostgreSQL binary dir: `$WARDEN_PG_BIN_DIR` or [`PG_BIN_DIR`].
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("WARDEN_PG_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PG_BIN_DIR))
}

/// A free TCP port on 127.0.0.1 (bound once, then released for the process to take).
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768–60999): a port from
/// that range could be taken by any outgoing connection (a walreceiver, an etcd client)
/// while a test has a node down, and the node could not listen again when restarted.
/// A per-process counter, starting at a pid-derived offset, keeps parallel tests apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20000;
    const HIGH: u16 = 32700;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        LOW + (std::process::id() % 127) as u16 * 100,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..(HIGH - LOW) {
        let mut p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p >= HIGH {
            NEXT.store(LOW, Ordering::SeqCst);
            p = LOW;
        }
        if p == 5432 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port found on 127.0.0.1 between {LOW} and {HIGH}");
}

/// The unprivileged user that runs PostgreSQL and the agents in tests.
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    /// uid to switch to (None = current user, when not root)
    pub uid: Option<u32>,
    /// gid to switch to
    pub gid: Option<u32>,
}

impl RunAs {
    /// When running as root: the `postgres` system user. Otherwise: the current user.
    pub fn detect() -> RunAs {
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect(
                    "running as root but there is no `postgres` system user; install postgresql-15",
                );
            RunAs {
                uid: Some(user.uid.as_raw()),
                gid: Some(user.gid.as_raw()),
            }
        } else {
            RunAs {
                uid: None,
                gid: None,
            }
        }
    }

    /// Applies the user switch to a command (no-op when not root).
    pub fn apply(&self, cmd: &mut Command) {
        if let Some(gid) = self.gid {
            cmd.gid(gid);
        }
        if let Some(uid) = self.uid {
            cmd.uid(uid);
        }
    }

    /// Gives `path` (recursively not needed: only freshly created dirs) to the user.
    pub fn chown(&self, path: &Path) {
        if let (Some(uid), Some(gid)) = (self.uid, self.gid) {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// A temp dir owned by the PostgreSQL user, removed on drop.
pub struct TestDir {
    dir: tempfile::TempDir,
    /// who owns it
    pub run_as: RunAs,
}

impl TestDir {
    /// Creates a fresh temp dir (mode 0755) owned by [`RunAs::detect`].
    pub fn new(prefix: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let run_as = RunAs::detect();
        run_as.chown(dir.path());
        TestDir { dir, run_as }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a sub directory owned by the PostgreSQL user (mode 0700 when `private`).
    pub fn subdir(&self, name: &str, private: bool) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("create subdir");
        let mode = if private { 0o700 } else { 0o755 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self.run_as.chown(&p);
        p
    }

    /// Writes a file readable by the PostgreSQL user.
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write file");
        self.run_as.chown(&p);
        p
    }
}

/// Owns a child process; kills it (SIGKILL, whole process group) by PID on drop.
pub struct ProcessGuard {
    child: Option<Child>,
    /// a short name for messages
    pub name: String,
}

impl ProcessGuard {
    /// Spawns `cmd` in its own process group with stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> ProcessGuard {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        ProcessGuard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal to the process (not its group).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child {
                if let Ok(Some(st)) = c.try_wait() {
                    return Some(st);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL the process group and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // The group only (agents start PostgreSQL in its own session, so a test that
            // wants PostgreSQL dead too kills it separately by its postmaster.pid).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the postmaster PID from `<data_dir>/postmaster.pid`, if any.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let s = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    s.lines().next()?.trim().parse().ok()
}

/// PIDs of the direct children of `pid` (from /proc).
pub fn child_pids(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| {
                    // pid (comm) state ppid ...: comm may contain spaces, so split after ')'.
                    let rest = st.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Kills the postmaster of `data_dir` (if running) with `sig`. For SIGKILL its children
/// are killed too: PostgreSQL backends are session leaders of their own, so a process
/// group kill does not reach them, and a stopped (SIGSTOP) backend would never notice
/// the postmaster's death.
pub fn kill_postmaster(data_dir: &Path, sig: nix::sys::signal::Signal) {
    if let Some(pid) = postmaster_pid(data_dir) {
        let p = nix::unistd::Pid::from_raw(pid);
        let children = if sig == nix::sys::signal::Signal::SIGKILL {
            child_pids(pid)
        } else {
            Vec::new()
        };
        let _ = nix::sys::signal::kill(p, sig);
        for c in children {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), sig);
        }
    }
}

/// Stops every PostgreSQL found under `dir` (immediate mode). Used on drop of clusters.
pub fn stop_all_postgres_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.join("postmaster.pid").exists() {
                kill_postmaster(&p, nix::sys::signal::Signal::SIGKILL);
            }
            stop_all_postgres_under(&p);
        }
    }
}

/// Polls `f` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Async variant of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Directory for the workspace's built binaries (`target/debug`), found from the test
/// executable's own location.
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test-bin> -> target/debug
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}
