//! Safety beyond Patroni: an agent that is frozen (SIGSTOP) or killed (SIGKILL, with
//! PostgreSQL left running) must not leave two writable primaries. Its external fence
//! guard stops PostgreSQL before the leader lock can expire in etcd; an agent restarted
//! in time keeps PostgreSQL running and its lock.

mod common;

use common::*;
use std::time::{Duration, Instant};
use warden_testkit::cluster::TestCluster;

const TTL: u64 = 20;

async fn healthy(c: &mut TestCluster) -> usize {
    c.start_all();
    let l = wait_for_leader(c, Duration::from_secs(60)).await;
    for i in (0..c.nodes.len()).filter(|i| *i != l) {
        wait_streaming(c, i, Duration::from_secs(60)).await;
    }
    exec(c, l, "CREATE TABLE t(id int)").await.expect("create");
    // A full loop after the last write: the last renewal is recent and before the fault.
    tokio::time::sleep(Duration::from_secs(3)).await;
    l
}

/// Writes on node `i` must stop before `fault + ttl - margin/2` (1 s for a ttl of 8 s or
/// more, 0.5 s at the 4 s floor): the guards fence `margin` before the last renewal +
/// ttl, the last renewal happened before the fault, and half the margin is left for
/// the guard's poll, PostgreSQL's stop and this probe. The lock itself cannot expire
/// in etcd before the last renewal + ttl.
async fn writes_stop_before_expiry(
    c: &TestCluster,
    i: usize,
    fault: Instant,
    ttl: u64,
) -> Duration {
    let bound = Duration::from_millis(ttl * 1000 - warden_core::ha::fence_margin_ms(ttl) / 2);
    loop {
        if exec(c, i, "INSERT INTO t VALUES (1)").await.is_err() {
            return fault.elapsed();
        }
        assert!(
            fault.elapsed() < bound,
            "{} still accepts writes {:?} after its agent stopped\n{}",
            c.nodes[i].name,
            fault.elapsed(),
            c.logs_tail(15)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Freezes the leader's agent (SIGSTOP; PostgreSQL keeps running): its PostgreSQL must
/// stop taking writes before the lock can expire, another node must take over, and the
/// thawed agent must rejoin as a replica. Returns the new leader.
async fn frozen_leader_is_fenced_and_replaced(c: &TestCluster, l: usize, ttl: u64) -> usize {
    let agent_pid = c.nodes[l].agent.as_ref().map(|a| a.pid()).expect("agent");
    let pid = nix::unistd::Pid::from_raw(agent_pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let frozen = Instant::now();
    let fenced = writes_stop_before_expiry(c, l, frozen, ttl).await;
    let new = wait_for_leader(c, Duration::from_secs(ttl + 20)).await;
    assert_ne!(new, l);
    // Thawed, the old agent finds it lost the lock and rejoins as a replica.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    wait_streaming(c, l, Duration::from_secs(90)).await;
    eprintln!("ttl {ttl}, frozen agent: PostgreSQL fenced {fenced:?} after the freeze");
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_or_killed_agent_never_leaves_two_primaries() {
    let c = TestCluster::new("fence", 3, &[]);
    frozen_or_killed_agent_at(c, TTL).await;
}

/// The same at the shortest lease `warden.min_ttl` allows (ttl 4, loop_wait 1,
/// retry_timeout 1: fence margin 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_or_killed_agent_never_leaves_two_primaries_at_the_shortest_lease() {
    let c = TestCluster::new("fence4", 3, &[]);
    shorten_lease(&c, SHORTEST_TTL, 1, 1);
    frozen_or_killed_agent_at(c, SHORTEST_TTL).await;
}

/// Frozen leader agent, then killed leader agent (PostgreSQL left running each time):
/// fenced before the `ttl` lock can expire, replaced, never two writable primaries.
async fn frozen_or_killed_agent_at(mut c: TestCluster, ttl: u64) {
    let l = healthy(&mut c).await;
    let monitor = WritableMonitor::start(dsns(&c));

    // 1. Frozen agent: PostgreSQL keeps running, the agent cannot renew the lock.
    let new = frozen_leader_is_fenced_and_replaced(&c, l, ttl).await;

    // 2. Killed agent, PostgreSQL left running: fenced too.
    for i in (0..3).filter(|i| *i != new) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let postmaster = warden_testkit::postmaster_pid(&c.nodes[new].data_dir).expect("postmaster");
    // What fences a killed agent's primary is the small guard binary beside the agent.
    let guard_pid_file = format!("{}.fence.pid", c.nodes[new].data_dir.display());
    let guard: i32 = std::fs::read_to_string(&guard_pid_file)
        .expect("the guard's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let guard_exe = std::fs::read_link(format!("/proc/{guard}/exe")).expect("the guard runs");
    assert_eq!(
        guard_exe.file_name().and_then(|n| n.to_str()),
        Some("warden-guard"),
        "{guard_exe:?}"
    );
    if let Some(mut a) = c.nodes[new].agent.take() {
        a.kill();
    }
    let killed = Instant::now();
    let fenced = writes_stop_before_expiry(&c, new, killed, ttl).await;
    warden_testkit::wait_for(
        "the fenced postmaster to exit",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(postmaster), None)
                .is_err()
                .then_some(())
        },
    );
    let third = wait_for_leader(&c, Duration::from_secs(ttl + 20)).await;
    assert_ne!(third, new);
    eprintln!("ttl {ttl}, killed agent: PostgreSQL fenced {fenced:?} after the kill");

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_a_quick_agent_restart() {
    let mut c = TestCluster::new("restart", 3, &[]);
    let l = healthy(&mut c).await;
    let postmaster = warden_testkit::postmaster_pid(&c.nodes[l].data_dir).expect("postmaster");
    if let Some(mut a) = c.nodes[l].agent.take() {
        a.kill();
    }
    c.start_node(l);
    // The restarted agent renews its own lock; PostgreSQL never stops.
    let until = Instant::now() + Duration::from_secs(TTL + 5);
    while Instant::now() < until {
        assert_eq!(
            c.leader().as_deref(),
            Some(c.nodes[l].name.as_str()),
            "the lock must stay\n{}",
            c.logs_tail(10)
        );
        assert!(
            is_writable(&c, l).await,
            "PostgreSQL must keep running\n{}",
            c.logs_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        warden_testkit::postmaster_pid(&c.nodes[l].data_dir),
        Some(postmaster)
    );
}

/// Warden-only `warden.min_ttl`: with the fence guard, a lock shorter than Patroni's 20 s
/// floor is safe, and failover is correspondingly faster.
const SHORT_TTL: u64 = 8;

/// The shortest lease (`warden_config::MIN_TTL_FLOOR`), with loop_wait 1 and
/// retry_timeout 1.
const SHORTEST_TTL: u64 = warden_config::MIN_TTL_FLOOR;

/// Rewrites every node's `bootstrap.dcs` timing to `ttl`/`loop_wait`/`retry_timeout`
/// and sets `warden.min_ttl` to `ttl` (before the nodes start).
fn shorten_lease(c: &TestCluster, ttl: u64, loop_wait: u64, retry_timeout: u64) {
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.config).expect("read config");
        let timing = "    ttl: 20\n    loop_wait: 2\n    retry_timeout: 5\n";
        assert!(text.contains(timing), "harness timing changed");
        let text = text.replace(
            timing,
            &format!(
                "    ttl: {ttl}\n    loop_wait: {loop_wait}\n    retry_timeout: {retry_timeout}\n"
            ),
        );
        std::fs::write(&n.config, format!("{text}\nwarden:\n  min_ttl: {ttl}\n"))
            .expect("write config");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttl_fails_over_within_it_and_still_fences() {
    let c = TestCluster::new("shortttl", 3, &[]);
    shorten_lease(&c, SHORT_TTL, 2, 3);
    // At Patroni's 20 s floor the lease alone would outlast this bound (the last
    // renewal is at most loop_wait = 2 s before the kill).
    short_lease_fails_over_within_it_and_still_fences(c, SHORT_TTL, Duration::from_secs(16)).await;
}

/// The same at the shortest lease (ttl 4, loop_wait 1, retry_timeout 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortest_ttl_fails_over_within_it_and_still_fences() {
    let c = TestCluster::new("shortest", 3, &[]);
    shorten_lease(&c, SHORTEST_TTL, 1, 1);
    short_lease_fails_over_within_it_and_still_fences(
        c,
        SHORTEST_TTL,
        Duration::from_secs(3 * SHORTEST_TTL),
    )
    .await;
}

/// A frozen leader agent is fenced and replaced, then a crashed leader node (agent and
/// PostgreSQL SIGKILLed) is replaced within `bound`; never two writable primaries.
async fn short_lease_fails_over_within_it_and_still_fences(
    mut c: TestCluster,
    ttl: u64,
    bound: Duration,
) {
    let l = healthy(&mut c).await;
    let monitor = WritableMonitor::start(dsns(&c));

    // 1. Frozen leader agent: fenced before its short lock can expire, then replaced.
    let new = frozen_leader_is_fenced_and_replaced(&c, l, ttl).await;

    // 2. Crash of the leader node (agent and PostgreSQL, SIGKILL): a replica takes
    // over once the short lease runs out.
    for i in (0..3).filter(|i| *i != new) {
        wait_streaming(&c, i, Duration::from_secs(60)).await;
    }
    wait_caught_up(&c, new).await;
    let postmaster = warden_testkit::postmaster_pid(&c.nodes[new].data_dir).expect("postmaster");
    if let Some(mut a) = c.nodes[new].agent.take() {
        a.kill();
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(postmaster),
        nix::sys::signal::Signal::SIGKILL,
    );
    let crashed = Instant::now();
    loop {
        let holder = c
            .leader()
            .and_then(|name| c.nodes.iter().position(|n| n.name == name));
        if holder.is_some_and(|i| i != new) {
            break;
        }
        assert!(
            crashed.elapsed() < bound,
            "no replica took the lock within {bound:?} of the crash\n{}",
            c.failure_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = crashed.elapsed();
    let third = wait_for_leader(&c, Duration::from_secs(20)).await;
    assert_ne!(third, new);
    eprintln!(
        "ttl {ttl}, crashed leader: {} holds the lock {took:?} after the crash",
        c.nodes[third].name
    );

    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
}

/// Every process of node i's PostgreSQL instance: the postmaster and its children.
fn instance_pids(c: &TestCluster, i: usize) -> Vec<i32> {
    let postmaster = warden_testkit::postmaster_pid(&c.nodes[i].data_dir).expect("postmaster");
    let mut pids = vec![postmaster];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 1..].to_string();
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), sig);
    }
}

/// A frozen PostgreSQL on the leader (postmaster and every backend SIGSTOPped, as with
/// hung storage; the agent itself runs on): a replica takes over within
/// ttl + loop_wait + 10 s, and the old instance never acknowledges a write afterwards,
/// also once its processes are resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_leader_postgres_is_replaced_and_never_resumes() {
    let mut c = TestCluster::new("pgfrozen", 3, &[]);
    let l = healthy(&mut c).await;
    let monitor = WritableMonitor::start(dsns(&c));
    let pids = instance_pids(&c, l);
    signal_all(&pids, nix::sys::signal::Signal::SIGSTOP);
    let frozen = Instant::now();
    let new = wait_for_leader_other_than(&c, l, Duration::from_secs(TTL + 2 + 10)).await;
    let took = frozen.elapsed();
    warden_testkit::wait_for_async(
        "the new leader to take writes",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { is_writable(&c, new).await.then_some(()) },
    )
    .await;
    // The frozen instance was killed, not merely asked to stop: resuming it wakes nothing.
    signal_all(&pids, nix::sys::signal::Signal::SIGCONT);
    let alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), None).is_ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        })
        .collect();
    assert!(
        alive.is_empty(),
        "processes of the frozen instance still alive: {alive:?}"
    );
    // The old node comes back as a replica of the new leader.
    wait_streaming(&c, l, Duration::from_secs(90)).await;
    assert!(
        exec(&c, l, "INSERT INTO t VALUES (9)").await.is_err(),
        "the old leader accepted a write after the failover"
    );
    let (max, events) = monitor.finish().await;
    assert!(max <= 1, "two writable nodes at once: {events:?}");
    eprintln!(
        "frozen PostgreSQL on {}: {} leads {took:?} after the freeze",
        c.nodes[l].name, c.nodes[new].name
    );
    let log = std::fs::read_to_string(&c.nodes[l].log).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("not answer") || l.contains("fenc") || l.contains("killed"))
    {
        eprintln!("  {line}");
    }
}

/// Waits until a node other than `old` holds the leader key; returns its index.
async fn wait_for_leader_other_than(c: &TestCluster, old: usize, timeout: Duration) -> usize {
    warden_testkit::wait_for_async(
        "another node to take the leader key",
        timeout,
        Duration::from_millis(200),
        || async {
            let name = c.leader()?;
            c.nodes
                .iter()
                .position(|n| n.name == name)
                .filter(|i| *i != old)
        },
    )
    .await
}
