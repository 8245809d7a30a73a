//! A real PgBouncer (`/usr/sbin/pgbouncer`, Debian's `pgbouncer` package) on loopback,
//! run as the PostgreSQL user, in transaction pooling mode, authenticating clients with
//! SCRAM from an `auth_file`, with its database `postgres` pointing at one host:port
//! (HAProxy in the tests). Killed by PID on drop; its log is printed if the test fails.

use crate::{free_port, ProcessGuard, RunAs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's PgBouncer binary.
pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// The admin console user (`admin_users`).
pub const ADMIN_USER: &str = "wardenadmin";
/// Its password (in the `auth_file`; the agents get it through a pgpass file).
pub const ADMIN_PASSWORD: &str = "adm-pass";

/// A running PgBouncer.
pub struct PgBouncer {
    /// where clients connect
    pub port: u16,
    /// pgbouncer.ini
    pub config: PathBuf,
    /// its log (stderr)
    pub log: PathBuf,
    /// a pgpass file (mode 0600, owned by the PostgreSQL user) with the admin password
    pub passfile: PathBuf,
    guard: ProcessGuard,
}

impl PgBouncer {
    /// Starts PgBouncer in `dir` (owned by `run_as`) for database `postgres` at
    /// 127.0.0.1:`target_port`; `users` are (name, password) pairs clients and
    /// PgBouncer itself (to the server) authenticate with. Waits until it accepts
    /// connections.
    pub fn start(dir: &Path, run_as: RunAs, target_port: u16, users: &[(&str, &str)]) -> PgBouncer {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} is missing: apt-get install pgbouncer"
        );
        let port = free_port();
        let auth = dir.join("userlist.txt");
        let mut lines = String::new();
        for (u, p) in users.iter().chain([(ADMIN_USER, ADMIN_PASSWORD)].iter()) {
            lines.push_str(&format!("\"{u}\" \"{p}\"\n"));
        }
        write_private(&auth, &lines, run_as);
        let passfile = dir.join("pgbouncer.pgpass");
        write_private(
            &passfile,
            &format!("127.0.0.1:{port}:pgbouncer:{ADMIN_USER}:{ADMIN_PASSWORD}\n"),
            run_as,
        );
        let config = dir.join("pgbouncer.ini");
        let ini = format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={target_port} dbname=postgres\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {auth}\n\
             admin_users = {ADMIN_USER}\n\
             pool_mode = transaction\n\
             max_client_conn = 200\n\
             default_pool_size = 10\n\
             server_login_retry = 1\n\
             server_connect_timeout = 3\n\
             query_wait_timeout = 120\n\
             ignore_startup_parameters = extra_float_digits\n\
             pidfile = {pid}\n",
            auth = auth.display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        write_private(&config, &ini, run_as);
        let log = dir.join("pgbouncer.log");
        let mut cmd = Command::new(PGBOUNCER);
        cmd.arg(&config);
        run_as.apply(&mut cmd);
        let guard = ProcessGuard::spawn("pgbouncer", cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {port}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer {
            port,
            config,
            log,
            passfile,
            guard,
        }
    }

    /// The admin console connection string without the password (it is in
    /// [`PgBouncer::passfile`]).
    pub fn admin_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={ADMIN_USER} dbname=pgbouncer",
            self.port
        )
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn write_private(path: &Path, text: &str, run_as: RunAs) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    run_as.chown(path);
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- pgbouncer log ({}) -----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
