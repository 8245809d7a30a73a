//! A real HAProxy (`/usr/sbin/haproxy`, Debian's `haproxy` package) in front of a
//! [`TestCluster`]: one `listen` section per [`Section`], each with every node as a
//! server named like the member (PostgreSQL port, checked on the REST API port), plus
//! a CSV stats listener. Killed by PID on drop; its config and log are printed if the
//! test is failing.

use crate::cluster::TestCluster;
use crate::{free_port, ProcessGuard};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's HAProxy binary.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// One `listen` section.
#[derive(Clone, Debug)]
pub struct Section {
    /// section name (also the stats `pxname`)
    pub name: String,
    /// the check lines, e.g. `option httpchk OPTIONS /primary`
    pub check: Vec<String>,
    /// check timing on the `default-server` line, e.g. `inter 1s fall 2 rise 1`
    pub timing: String,
    /// `balance roundrobin` etc. (empty: HAProxy's default)
    pub balance: String,
}

impl Section {
    /// A section checking `check` (`OPTIONS /primary`, `GET /primary`, `OPTIONS /replica`
    /// ...: method and path) with `timing`; connections of a server marked down are
    /// cut (`on-marked-down shutdown-sessions`), as in the guides.
    pub fn new(name: &str, check: &str, timing: &str) -> Section {
        let (method, path) = check.split_once(' ').unwrap_or(("OPTIONS", check));
        let check = if method == "OPTIONS" {
            vec![format!("option httpchk OPTIONS {path}")]
        } else {
            vec![
                "option httpchk".to_string(),
                format!("http-check send meth {method} uri {path}"),
            ]
        };
        Section {
            name: name.to_string(),
            check,
            timing: timing.to_string(),
            balance: String::new(),
        }
    }

    /// The same with `balance <how>`.
    pub fn balance(mut self, how: &str) -> Section {
        self.balance = format!("balance {how}");
        self
    }
}

/// A running HAProxy.
pub struct Haproxy {
    /// (section name, port) in the order given
    pub ports: Vec<(String, u16)>,
    /// the CSV stats listener (`http://127.0.0.1:<port>/stats;csv`)
    pub stats_port: u16,
    /// the log file (HAProxy logs to stderr)
    pub log: PathBuf,
    /// the config file
    pub config: PathBuf,
    _guard: ProcessGuard,
}

impl Haproxy {
    /// Writes the config into the cluster's dir, checks it with `haproxy -c` and starts
    /// HAProxy in the foreground (`-db`, so the guard's PID is HAProxy's).
    pub fn start(c: &TestCluster, sections: &[Section]) -> Haproxy {
        assert!(
            std::path::Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: apt-get install haproxy"
        );
        let servers: String = c
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                    n.name, n.pg_port, n.api_port
                )
            })
            .collect();
        let stats_port = free_port();
        let mut ports = Vec::new();
        let mut config = format!(
            r#"global
    log stderr format raw local0 info
    maxconn 300

defaults
    mode tcp
    log global
    option tcplog
    retries 2
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s

listen stats
    mode http
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"#
        );
        for s in sections {
            let port = free_port();
            ports.push((s.name.clone(), port));
            config.push_str(&format!("\nlisten {}\n    bind 127.0.0.1:{port}\n", s.name));
            if !s.balance.is_empty() {
                config.push_str(&format!("    {}\n", s.balance));
            }
            for l in &s.check {
                config.push_str(&format!("    {l}\n"));
            }
            config.push_str(&format!(
                "    http-check expect status 200\n    default-server {} on-marked-down shutdown-sessions\n{servers}",
                s.timing
            ));
        }
        let path = c.dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).expect("write haproxy.cfg");
        let check = Command::new(HAPROXY)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejected its config:\n{}{}\n{config}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = c.dir.path().join("haproxy.log");
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-db").arg("-f").arg(&path);
        let guard = ProcessGuard::spawn("haproxy", cmd, &log);
        Haproxy {
            ports,
            stats_port,
            log,
            config: path,
            _guard: guard,
        }
    }

    /// The port of section `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no HAProxy section {name}"))
    }

    /// The CSV stats URL.
    pub fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/stats;csv", self.stats_port)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until HAProxy has logged `<section>/<server> is DOWN`.
    pub async fn wait_down(&self, section: &str, server: &str, timeout: Duration) {
        let needle = format!("Server {section}/{server} is DOWN");
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "HAProxy did not log `{needle}` within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- haproxy config ({}) -----\n{}",
                self.config.display(),
                std::fs::read_to_string(&self.config).unwrap_or_default()
            );
            eprintln!(
                "----- haproxy log ({}) -----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
