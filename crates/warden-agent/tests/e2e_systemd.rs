//! Issue 16, systemd: a real agent (real etcd, real PostgreSQL) started as systemd starts
//! a `Type=notify` unit with `WatchdogSec=`: `NOTIFY_SOCKET` names a unix datagram socket
//! this test reads, `WATCHDOG_USEC` is set. The test sees `READY=1` with the cycle's
//! decision as `STATUS=`, `WATCHDOG=1` at least once per watchdog interval while the HA
//! loop runs, then stalls the loop for real — the agent's etcd connection blackholed,
//! with a `retry_timeout` longer than the stall, so one cycle hangs on its etcd call —
//! and sees no `WATCHDOG=1` for longer than the watchdog interval (systemd would restart
//! the agent), pings again once etcd answers, and `STOPPING=1` on SIGTERM. PostgreSQL,
//! started by the agent, does not inherit `NOTIFY_SOCKET`. A second test: no `READY=1`
//! while the agent waits for etcd (its `STATUS=` says so), an abstract socket, and a
//! `WATCHDOG_PID` of another process turning the pings off.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::proxy::Cut;

/// systemd's watchdog interval for the agent: it pings every half of it.
const WATCHDOG: Duration = Duration::from_secs(4);
/// Patroni's rule ttl >= loop_wait + 2 * retry_timeout holds; retry_timeout is longer
/// than the stall, so the stalled cycle's etcd call neither gives up nor errors before
/// the stall ends, and the lock outlives it (no demotion muddles the picture).
const TTL: u64 = 45;
const LOOP_WAIT: u64 = 1;
const RETRY_TIMEOUT: u64 = 20;
/// How long etcd is blackholed.
const STALL: Duration = Duration::from_secs(12);

/// Notifications received, with their arrival time.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Instant, String)>>>);

impl Received {
    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Arrival times of the datagrams that assign `KEY=value` (one of their lines).
    fn times_of(&self, assignment: &str) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == assignment))
            .map(|(t, _)| t)
            .collect()
    }

    fn dump(&self, since: Instant) -> String {
        self.all()
            .iter()
            .map(|(t, m)| {
                let at = t.saturating_duration_since(since).as_secs_f64();
                format!("{at:8.3}s {m:?}\n")
            })
            .collect()
    }
}

/// Reads datagrams from `sock` into a [`Received`] until `stop`.
fn listen(sock: UnixDatagram, stop: Arc<AtomicBool>) -> (Received, std::thread::JoinHandle<()>) {
    let got = Received::default();
    let out = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let h = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.0.lock().unwrap().push((Instant::now(), msg));
            }
        }
    });
    (got, h)
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_status_watchdog_and_stopping() {
    let yaml = format!(
        "bootstrap:\n  dcs:\n    ttl: {TTL}\n    loop_wait: {LOOP_WAIT}\n    retry_timeout: {RETRY_TIMEOUT}\n"
    );
    // The socket goes where the agent (the PostgreSQL user) can reach it: the cluster's
    // temp dir is that user's and traversable; the socket itself is chowned to it.
    let probe = warden_testkit::TestDir::new("warden-sd-");
    let sock_path = probe.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    probe.run_as.chown(&sock_path);
    let env = vec![
        (
            "NOTIFY_SOCKET".to_string(),
            sock_path.to_string_lossy().into_owned(),
        ),
        (
            "WATCHDOG_USEC".to_string(),
            (WATCHDOG.as_micros()).to_string(),
        ),
    ];
    let mut c = TestCluster::new_linked(
        "sdnotify",
        1,
        &[NodeOptions {
            yaml: vec![yaml],
            env,
            ..NodeOptions::default()
        }],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (got, reader) = listen(sock, stop.clone());
    let t_start = Instant::now();
    c.start_node(0);
    let log = || format!("{}\n{}", got.dump(t_start), c.logs_tail(40));

    // READY=1 after the first cycle, in one datagram with that cycle's decision.
    wait_until(
        "READY=1",
        Duration::from_secs(90),
        || !got.times_of("READY=1").is_empty(),
        log,
    );
    let ready = got
        .all()
        .into_iter()
        .find(|(_, m)| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    assert!(
        ready
            .1
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.len() > "STATUS=".len()),
        "READY=1 without the decision as STATUS=: {:?}",
        ready.1
    );
    assert_eq!(
        got.times_of("READY=1").len(),
        1,
        "READY=1 more than once\n{}",
        log()
    );

    // Leader, then the decisions of a leader's cycles as STATUS=.
    assert_eq!(wait_for_leader(&c, Duration::from_secs(90)).await, 0);
    wait_until(
        "STATUS= with the leader's decision",
        Duration::from_secs(30),
        || {
            got.all().iter().any(|(_, m)| {
                m.lines()
                    .any(|l| l.starts_with("STATUS=") && l.contains("the leader with the lock"))
            })
        },
        log,
    );

    // A live loop: pings keep coming, never a whole interval apart (systemd would kill
    // a healthy agent otherwise).
    let t_live = Instant::now();
    wait_until(
        "four WATCHDOG=1 in a row",
        Duration::from_secs(30),
        || {
            got.times_of("WATCHDOG=1")
                .iter()
                .filter(|t| **t > t_live)
                .count()
                >= 4
        },
        log,
    );
    let pings = got.times_of("WATCHDOG=1");
    let first_after_ready = pings
        .iter()
        .copied()
        .find(|t| *t >= ready.0)
        .expect("a ping");
    let live: Vec<Instant> = pings
        .iter()
        .copied()
        .filter(|t| *t >= first_after_ready)
        .collect();
    let max_gap = live
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        max_gap < WATCHDOG,
        "a live agent went {max_gap:?} without WATCHDOG=1 (interval {WATCHDOG:?})\n{}",
        log()
    );

    // PostgreSQL and other children do not inherit NOTIFY_SOCKET (sd_notify's
    // unset_environment): they must not speak for the agent.
    let pm = warden_testkit::postmaster_pid(&c.nodes[0].data_dir).expect("postmaster.pid");
    let environ = std::fs::read(format!("/proc/{pm}/environ")).expect("postmaster environ");
    for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
        assert!(
            !environ
                .split(|b| *b == 0)
                .any(|e| e.starts_with(var.as_bytes())),
            "the postmaster inherited {var}"
        );
    }

    // Stall the HA loop: etcd blackholed, the next cycle hangs on it.
    let t_cut = Instant::now();
    c.cut_etcd(0, Cut::Blackhole);
    tokio::time::sleep(STALL).await;
    let t_restore = Instant::now();
    c.restore_etcd(0);
    assert!(
        c.links[0].etcd.cut_connections() > 0,
        "the blackhole met no etcd traffic"
    );
    // The cycle running at the cut, or the next one (due within loop_wait), hangs; pings
    // stop half an interval after it was due (plus one status poll and a second of
    // slack). From then until etcd answers again: no WATCHDOG=1.
    let quiet_from = t_cut + Duration::from_secs(LOOP_WAIT) + WATCHDOG / 2 + Duration::from_secs(1);
    assert!(
        t_restore - quiet_from > WATCHDOG,
        "test timing: the stall must leave more than one interval of silence"
    );
    let during: Vec<Instant> = got
        .times_of("WATCHDOG=1")
        .into_iter()
        .filter(|t| *t >= quiet_from && *t <= t_restore)
        .collect();
    assert!(
        during.is_empty(),
        "WATCHDOG=1 while the HA loop was stalled on etcd ({} pings from {:?} after the cut)\n{}",
        during.len(),
        during[0] - t_cut,
        log()
    );
    // When the pings stopped, relative to the cut (the figure the report quotes).
    let last_before = got
        .times_of("WATCHDOG=1")
        .into_iter()
        .rfind(|t| *t < quiet_from)
        .expect("pings before the stall");
    // Pings resume once the stuck cycle completes.
    wait_until(
        "WATCHDOG=1 after etcd is back",
        Duration::from_secs(30),
        || got.times_of("WATCHDOG=1").iter().any(|t| *t > t_restore),
        log,
    );
    let first_after = got
        .times_of("WATCHDOG=1")
        .into_iter()
        .find(|t| *t > t_restore)
        .unwrap();
    eprintln!(
        "watchdog: last ping {:?} after the cut, silence {:?} (interval {WATCHDOG:?}), \
         first ping {:?} after etcd was restored",
        last_before.saturating_duration_since(t_cut),
        first_after - last_before,
        first_after - t_restore
    );
    assert!(first_after - last_before > WATCHDOG);

    // SIGTERM: STOPPING=1 at the start of the shutdown, no ping after it.
    let status = c.stop_node(0, Duration::from_secs(90));
    let log = || format!("{}\n{}", got.dump(t_start), c.logs_tail(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}\n{}",
        log()
    );
    // Sent when shutdown began, before PostgreSQL was stopped; the reader may lag.
    wait_until(
        "STOPPING=1",
        Duration::from_secs(5),
        || !got.times_of("STOPPING=1").is_empty(),
        log,
    );
    let stopping = got.times_of("STOPPING=1");
    assert_eq!(stopping.len(), 1, "STOPPING=1 once\n{}", log());
    assert!(
        got.times_of("WATCHDOG=1").iter().all(|t| *t < stopping[0]),
        "WATCHDOG=1 after STOPPING=1\n{}",
        log()
    );
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("reader thread");
}

/// Before the first HA cycle there is no `READY=1`: an agent waiting for etcd says so in
/// `STATUS=`. An abstract `NOTIFY_SOCKET` (`@name`) works, and a `WATCHDOG_PID` naming
/// another process (variables leaked from a parent) turns the pings off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_etcd_before_ready_abstract_socket_foreign_watchdog_pid() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("warden-e2e-sd-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).expect("abstract name");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    let env = vec![
        ("NOTIFY_SOCKET".to_string(), format!("@{name}")),
        (
            "WATCHDOG_USEC".to_string(),
            WATCHDOG.as_micros().to_string(),
        ),
        // pid 1 is not the agent
        ("WATCHDOG_PID".to_string(), "1".to_string()),
    ];
    let mut c = TestCluster::new_linked(
        "sdwait",
        1,
        &[NodeOptions {
            env,
            ..NodeOptions::default()
        }],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (got, reader) = listen(sock, stop.clone());
    let t_start = Instant::now();
    // etcd refuses the agent's connections: it waits before its first cycle.
    c.cut_etcd(0, Cut::Reset);
    c.start_node(0);
    let log = || format!("{}\n{}", got.dump(t_start), c.logs_tail(40));
    wait_until(
        "STATUS=waiting for etcd",
        Duration::from_secs(60),
        || {
            got.all()
                .iter()
                .any(|(_, m)| m.starts_with("STATUS=waiting for etcd"))
        },
        log,
    );
    assert!(
        got.times_of("READY=1").is_empty(),
        "READY=1 before any HA cycle\n{}",
        log()
    );
    c.restore_etcd(0);
    wait_until(
        "READY=1",
        Duration::from_secs(90),
        || !got.times_of("READY=1").is_empty(),
        log,
    );
    // Several watchdog intervals with a live loop, and the pid says the pings are not ours.
    assert_eq!(wait_for_leader(&c, Duration::from_secs(90)).await, 0);
    // A healthy agent would ping four times in this window.
    tokio::time::sleep(WATCHDOG * 2).await;
    assert!(
        got.times_of("WATCHDOG=1").is_empty(),
        "WATCHDOG=1 although WATCHDOG_PID names another process\n{}",
        log()
    );
    let status = c.stop_node(0, Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit: {status:?}"
    );
    let log = || format!("{}\n{}", got.dump(t_start), c.logs_tail(40));
    wait_until(
        "STOPPING=1",
        Duration::from_secs(5),
        || !got.times_of("STOPPING=1").is_empty(),
        log,
    );
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("reader thread");
}
