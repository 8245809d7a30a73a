//! A real single-member etcd (Debian `etcd-server`, v3 API) on loopback.

use crate::{free_port, wait_for, ProcessGuard, TestDir};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A running etcd member; killed by PID on drop.
pub struct Etcd {
    /// the process
    pub process: ProcessGuard,
    /// client port on 127.0.0.1
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    _dir: Option<TestDir>,
}

impl Etcd {
    /// Starts etcd in a fresh temp dir and waits until its client port answers.
    pub fn start() -> Etcd {
        let dir = TestDir::new("warden-etcd-");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("etcd.log");
        let mut e = Etcd::start_in(data_dir, log, free_port(), free_port());
        e._dir = Some(dir);
        e
    }

    fn start_in(data_dir: PathBuf, log: PathBuf, client_port: u16, peer_port: u16) -> Etcd {
        let process = spawn_etcd(&data_dir, &log, client_port, peer_port);
        let e = Etcd {
            process,
            client_port,
            peer_port,
            data_dir,
            log,
            _dir: None,
        };
        e.wait_ready();
        e
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<port>` as Patroni's `etcd3.host` wants it.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn wait_ready(&self) {
        let port = self.client_port;
        wait_for(
            "etcd client port",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }

    /// Stops etcd (SIGKILL) keeping its data; [`Etcd::restart`] brings it back.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn_etcd(&self.data_dir, &self.log, self.client_port, self.peer_port);
        self.wait_ready();
    }

    /// Freezes (SIGSTOP) / thaws (SIGCONT) etcd.
    pub fn freeze(&self, frozen: bool) {
        self.process.signal(if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        });
    }
}

fn spawn_etcd(
    data_dir: &std::path::Path,
    log: &std::path::Path,
    client: u16,
    peer: u16,
) -> ProcessGuard {
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg("warden-test")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--advertise-client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-cluster")
        .arg(format!("warden-test=http://127.0.0.1:{peer}"))
        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
        .env("ETCDCTL_API", "3");
    ProcessGuard::spawn("etcd", cmd, log)
}
