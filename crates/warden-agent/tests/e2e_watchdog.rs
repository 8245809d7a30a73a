//! The watchdog with Patroni's `testing` driver: the device is a FIFO the test reads
//! (`Ctimeout=<n>\n`, `1` keepalive, `V` magic close), as Patroni's acceptance harness
//! does. The leader arms and kicks it, pause disarms it, resume re-arms it, a frozen
//! agent stops kicking it (and, the watchdog being the fence, the fence guard leaves
//! PostgreSQL running), and `required` without a usable device never leads.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::{NodeOptions, TestCluster};
use warden_testkit::watchdog::{FifoWatchdog, WatchdogEvent};
use warden_testkit::TestDir;

/// ttl 20 (the test cluster's) − safety_margin 5.
const TIMEOUT: i64 = 15;
const TTL: u64 = 20;

fn watchdog_yaml(device: &std::path::Path) -> NodeOptions {
    NodeOptions {
        yaml: vec![format!(
            "watchdog: {{mode: required, driver: testing, device: '{}'}}",
            device.display()
        )],
        ..NodeOptions::default()
    }
}

fn ends_with_close(e: &[WatchdogEvent]) -> bool {
    e.ends_with(&[WatchdogEvent::MagicClose, WatchdogEvent::Closed])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kicks_the_watchdog_pause_closes_it_and_a_frozen_agent_stops_kicking() {
    let fifo_dir = TestDir::new("warden-wd-");
    let monitor = FifoWatchdog::create(&fifo_dir.path().join("wd0.fifo"), &fifo_dir.run_as);
    let mut c = TestCluster::new(
        "watchdog",
        2,
        &[watchdog_yaml(&monitor.path), NodeOptions::default()],
    );
    c.start_node(0);
    assert_eq!(wait_for_leader(&c, Duration::from_secs(60)).await, 0);

    // Armed with ttl − safety_margin and kicked at every lock renewal (loop_wait 2).
    assert!(
        monitor.wait_for(Duration::from_secs(20), |e| {
            e.first() == Some(&WatchdogEvent::Timeout(TIMEOUT))
                && e.iter().filter(|x| **x == WatchdogEvent::Ping).count() >= 3
        }),
        "{:?}\n{}",
        monitor.kinds(),
        c.logs_tail(20)
    );
    let (_, body) = api_get(&c, 0, "/patroni").await.expect("GET /patroni");
    assert!(!body.contains("watchdog_failed"), "{body}");
    let (_, metrics) = api_get(&c, 0, "/metrics").await.expect("GET /metrics");
    assert!(
        metrics.contains("warden_watchdog_active{scope=\"watchdog\",name=\"pg0\"} 1"),
        "{metrics}"
    );

    // Pause: magic close, no more keepalives.
    let (code, _) = api_request(&c, 0, "PATCH", "/config", Some(r#"{"pause": true}"#))
        .await
        .expect("PATCH pause");
    assert_eq!(code, 200);
    assert!(
        monitor.wait_for(Duration::from_secs(10), ends_with_close),
        "{:?}",
        monitor.kinds()
    );
    let pings = monitor.pings();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(monitor.pings(), pings, "kicked while paused");

    // Resume: armed and kicked again.
    let (code, _) = api_request(&c, 0, "PATCH", "/config", Some(r#"{"pause": false}"#))
        .await
        .expect("PATCH resume");
    assert_eq!(code, 200);
    assert!(
        monitor.wait_for(Duration::from_secs(20), |e| {
            let n = e.len();
            n > 2 && e[n - 1] == WatchdogEvent::Ping && e.contains(&WatchdogEvent::Timeout(TIMEOUT))
        }),
        "{:?}",
        monitor.kinds()
    );

    // A replica, then freeze the leader's agent (its PostgreSQL keeps running).
    c.start_node(1);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    exec(&c, 0, "CREATE TABLE t(id int)").await.expect("create");
    let agent = c.nodes[0].agent.as_ref().map(|a| a.pid()).expect("agent");
    let pid = nix::unistd::Pid::from_raw(agent as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let frozen = Instant::now();
    let pings = monitor.pings();

    // The replica takes over once the lock expires.
    wait_leader_is(&c, "pg1", Duration::from_secs(TTL + 30)).await;
    // No keepalive since the freeze, for longer than the timeout: a real device fires.
    assert_eq!(monitor.pings(), pings, "a frozen agent kicked the watchdog");
    let silent = monitor
        .last_ping()
        .map_or(frozen.elapsed(), |t| t.elapsed());
    assert!(
        silent > Duration::from_secs(TIMEOUT as u64),
        "only {silent:?} without keepalive"
    );
    // The watchdog was the fence: the guard did not stop the frozen leader's PostgreSQL
    // (with a real device the machine would have been reset by now).
    exec(&c, 0, "INSERT INTO t VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("frozen leader's PostgreSQL was stopped: {e}"));

    // Thawed, the agent finds the lock gone, demotes (magic close) and rejoins.
    let closes = monitor
        .kinds()
        .iter()
        .filter(|e| **e == WatchdogEvent::MagicClose)
        .count();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    assert!(
        monitor.wait_for(Duration::from_secs(30), |e| {
            e.iter()
                .filter(|x| **x == WatchdogEvent::MagicClose)
                .count()
                > closes
        }),
        "{:?}\n{}",
        monitor.kinds(),
        c.logs_tail(20)
    );
    wait_streaming(&c, 0, Duration::from_secs(90)).await;
    assert_eq!(c.leader().as_deref(), Some("pg1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_without_a_usable_device_never_takes_the_lock() {
    let missing = std::path::Path::new("/nonexistent/warden-watchdog");
    let mut c = TestCluster::new(
        "watchdog-req",
        2,
        &[NodeOptions::default(), watchdog_yaml(missing)],
    );
    c.start_node(0);
    assert_eq!(wait_for_leader(&c, Duration::from_secs(60)).await, 0);
    c.start_node(1);
    wait_streaming(&c, 1, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = api_get(&c, 1, "/patroni").await.map(|(_, b)| b);
        if body
            .as_deref()
            .is_some_and(|b| b.contains("\"watchdog_failed\":true"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no watchdog_failed: {body:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The leader leaves cleanly (lock released): pg1 is the only candidate, and must not
    // take the lock.
    c.stop_node(0, Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(2 * TTL);
    while Instant::now() < until {
        assert_ne!(
            c.leader().as_deref(),
            Some("pg1"),
            "pg1 took the lock without its required watchdog\n{}",
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        query_one(&c, 1, "SELECT pg_is_in_recovery()")
            .await
            .as_deref(),
        Some("t")
    );
    let log = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log.contains("Watchdog device is not usable"),
        "{}",
        c.logs_tail(20)
    );
}
