//! EtcdDcs against a real etcd 3.4 (one per test, via warden-testkit).

use std::time::{Duration, Instant};
use warden_dcs::{cluster_prefix, Dcs, DcsError, DcsSettings, EtcdDcs};
use warden_testkit::etcd::Etcd;
use warden_testkit::free_port;

const PREFIX: &str = "/service/batman/";

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
}

fn settings(endpoints: Vec<String>, ttl: u64, retry: Duration) -> DcsSettings {
    DcsSettings {
        endpoints,
        prefix: cluster_prefix("service", "batman"),
        ttl,
        retry_timeout: retry,
        username: None,
        password: None,
    }
}

async fn dcs(etcd: &Etcd, ttl: u64) -> EtcdDcs {
    EtcdDcs::connect(settings(
        vec![etcd.host_port()],
        ttl,
        Duration::from_secs(3),
    ))
    .await
    .expect("connect")
}

async fn raw(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.url()], None)
        .await
        .expect("raw client")
}

/// (value, lease, mod_revision) of a key, read directly.
async fn raw_get(c: &mut etcd_client::Client, rel: &str) -> Option<(String, i64, i64)> {
    let r = c
        .get(format!("{PREFIX}{rel}"), None)
        .await
        .expect("raw get");
    r.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.lease(),
            kv.mod_revision(),
        )
    })
}

async fn wait_changed(rx: &mut tokio::sync::watch::Receiver<u64>, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, rx.changed()).await, Ok(Ok(())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_race_update_delete() {
    let etcd = Etcd::start();
    let mut rawc = raw(&etcd).await;
    let a = dcs(&etcd, 30).await;
    let b = dcs(&etcd, 30).await;
    let (ra, rb) = tokio::join!(
        a.attempt_to_acquire_leader("a"),
        b.attempt_to_acquire_leader("b")
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra ^ rb, "exactly one must win: a={ra} b={rb}");
    let (win, win_name, lose, lose_name) = if ra {
        (&a, "a", &b, "b")
    } else {
        (&b, "b", &a, "a")
    };

    let (value, lease, rev) = raw_get(&mut rawc, "leader").await.expect("leader key");
    assert_eq!(value, win_name);
    assert_eq!(Some(lease), win.last_lease_id());
    assert_ne!(win.last_lease_id(), lose.last_lease_id());

    assert!(win.update_leader(win_name).await.unwrap());
    // same lease: not rewritten
    assert_eq!(raw_get(&mut rawc, "leader").await.unwrap().2, rev);
    assert!(!lose.update_leader(lose_name).await.unwrap());
    assert!(!lose.attempt_to_acquire_leader(lose_name).await.unwrap());

    // the cluster view
    let c = lose.get_cluster().await.unwrap();
    let l = c.leader.expect("leader");
    assert_eq!(
        (l.name.as_str(), l.session, l.version),
        (win_name, lease, rev)
    );

    // ttl change: new lease, the lock is kept through the nested txn
    win.set_ttl(20);
    assert!(win.update_leader(win_name).await.unwrap());
    let new_lease = win.last_lease_id().unwrap();
    assert_ne!(new_lease, lease);
    let (value, lease2, _) = raw_get(&mut rawc, "leader").await.unwrap();
    assert_eq!((value.as_str(), lease2), (win_name, new_lease));

    assert!(!lose.delete_leader(lose_name).await.unwrap());
    assert!(raw_get(&mut rawc, "leader").await.is_some());
    assert!(win.delete_leader(win_name).await.unwrap());
    assert!(raw_get(&mut rawc, "leader").await.is_none());
    assert!(!win.delete_leader(win_name).await.unwrap());

    // take_leader: unconditional
    lose.take_leader(lose_name).await.unwrap();
    let (value, lease, _) = raw_get(&mut rawc, "leader").await.unwrap();
    assert_eq!(
        (value.as_str(), Some(lease)),
        (lose_name, lose.last_lease_id())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_wakes_the_other_node() {
    let etcd = Etcd::start();
    let a = dcs(&etcd, 5).await;
    let b = dcs(&etcd, 5).await;
    let mut rx = b.subscribe();
    assert!(a.attempt_to_acquire_leader("a").await.unwrap());
    // let the creation event (if b's watch saw it) arrive, then start counting
    tokio::time::sleep(Duration::from_millis(500)).await;
    rx.borrow_and_update();
    let dropped = Instant::now();
    drop(a); // no revoke, no more keepalives
    assert!(
        wait_changed(&mut rx, Duration::from_secs(15)).await,
        "no wake-up for the leader key expiry"
    );
    let took = dropped.elapsed();
    assert!(b.get_cluster().await.unwrap().leader.is_none());
    assert!(
        took >= Duration::from_secs(3),
        "expired too early: {took:?}"
    );
    assert!(b.attempt_to_acquire_leader("b").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoked_behind_our_back() {
    let etcd = Etcd::start();
    let mut rawc = raw(&etcd).await;
    let a = dcs(&etcd, 30).await;
    a.touch_member("a", r#"{"role":"replica"}"#).await.unwrap();
    assert!(a.attempt_to_acquire_leader("a").await.unwrap());
    let old = a.last_lease_id().unwrap();
    rawc.lease_revoke(old).await.unwrap();
    assert!(raw_get(&mut rawc, "leader").await.is_none());
    // the lease is fresh in our book: the put says "lease not found" -> regrant + retry
    a.touch_member("a", r#"{"role":"primary"}"#).await.unwrap();
    let new = a.last_lease_id().unwrap();
    assert_ne!(new, old);
    let (v, lease, _) = raw_get(&mut rawc, "members/a").await.unwrap();
    assert_eq!((v.as_str(), lease), (r#"{"role":"primary"}"#, new));
    // forced keepalive works on the new lease; the key is gone so the inner
    // create-only txn re-creates it
    assert!(a.update_leader("a").await.unwrap());
    assert_eq!(raw_get(&mut rawc, "leader").await.unwrap().1, new);
    // revoke the new lease, then acquire: keepalive finds it gone, grants another
    rawc.lease_revoke(new).await.unwrap();
    assert!(a.attempt_to_acquire_leader("a").await.unwrap());
    let third = a.last_lease_id().unwrap();
    assert!(third != new && third != old);
    a.revoke_lease().await.unwrap();
    assert_eq!(a.last_lease_id(), None);
    assert!(raw_get(&mut rawc, "leader").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_race_and_config_cas() {
    let etcd = Etcd::start();
    let mut rawc = raw(&etcd).await;
    let a = dcs(&etcd, 30).await;
    let b = dcs(&etcd, 30).await;
    assert!(a.race_initialize().await.unwrap());
    assert!(!b.race_initialize().await.unwrap());
    assert_eq!(raw_get(&mut rawc, "initialize").await.unwrap().0, "");
    a.set_initialize("7268616322854375442").await.unwrap();
    assert_eq!(
        b.get_cluster().await.unwrap().initialize.as_deref(),
        Some("7268616322854375442")
    );
    b.cancel_initialization().await.unwrap();
    assert!(raw_get(&mut rawc, "initialize").await.is_none());
    assert!(b.race_initialize().await.unwrap());

    // config CAS
    assert!(a.set_config(r#"{"ttl":30}"#, None).await.unwrap());
    let v = a.get_cluster().await.unwrap().config.unwrap().version;
    assert!(v > 0);
    assert!(!b.set_config(r#"{"ttl":20}"#, Some(v - 1)).await.unwrap());
    assert!(b.set_config(r#"{"ttl":20}"#, Some(v)).await.unwrap());
    assert!(!a.set_config(r#"{"ttl":10}"#, Some(v)).await.unwrap());
    let c = a.get_cluster().await.unwrap().config.unwrap();
    assert_eq!(c.value["ttl"], 20);
    // failover CAS, create-only with version 0
    assert!(a
        .set_failover(r#"{"leader":"a","member":"b"}"#, Some(0))
        .await
        .unwrap());
    assert!(!a.set_failover("{}", Some(0)).await.unwrap());
    let f = a.get_cluster().await.unwrap().failover.unwrap();
    assert_eq!(f.member.as_deref(), Some("b"));
    assert!(a.set_failover("{}", Some(f.version)).await.unwrap());
    assert!(a.get_cluster().await.unwrap().failover.is_none());
    // sync CAS returns the new revision, so a plan of writes can chain them
    let first = a
        .set_sync(r#"{"leader":"a","quorum":0,"sync_standby":null}"#, None)
        .await
        .unwrap()
        .expect("an unconditional write succeeds");
    assert_eq!(a.get_cluster().await.unwrap().sync.unwrap().version, first);
    let second = a
        .set_sync(
            r#"{"leader":"a","quorum":0,"sync_standby":"b"}"#,
            Some(first),
        )
        .await
        .unwrap()
        .expect("the compare on the returned revision succeeds");
    assert!(second > first);
    assert_eq!(
        b.set_sync(
            r#"{"leader":"b","quorum":0,"sync_standby":null}"#,
            Some(first)
        )
        .await
        .unwrap(),
        None,
        "a stale version is refused"
    );
    let sync = a.get_cluster().await.unwrap().sync.unwrap();
    assert_eq!(
        (sync.version, sync.sync_standby),
        (second, vec!["b".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_members_and_skips() {
    let etcd = Etcd::start();
    let mut rawc = raw(&etcd).await;
    let a = dcs(&etcd, 30).await;
    let data = r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.4"}"#;
    a.touch_member("pg1", data).await.unwrap();
    let (_, lease, rev) = raw_get(&mut rawc, "members/pg1").await.unwrap();
    assert_eq!(Some(lease), a.last_lease_id());
    // unchanged: not rewritten
    a.touch_member("pg1", data).await.unwrap();
    assert_eq!(raw_get(&mut rawc, "members/pg1").await.unwrap().2, rev);
    rawc.put(format!("{PREFIX}members/x"), "garbage{", None)
        .await
        .unwrap();
    rawc.put("/service/other/leader", "zz", None).await.unwrap();
    a.set_status(r#"{"optime":67395656}"#).await.unwrap();
    let status_rev = raw_get(&mut rawc, "status").await.unwrap().2;
    a.set_status(r#"{"optime":67395656}"#).await.unwrap();
    assert_eq!(raw_get(&mut rawc, "status").await.unwrap().2, status_rev);
    a.set_history("[]").await.unwrap();
    assert!(a.attempt_to_acquire_leader("pg1").await.unwrap());

    let c = a.get_cluster().await.unwrap();
    assert_eq!(c.members.len(), 2);
    assert_eq!(c.members[0].name, "pg1");
    assert_eq!(c.members[0].session, lease);
    assert_eq!(c.members[0].data.role.as_deref(), Some("primary"));
    assert_eq!(c.members[1].name, "x");
    assert_eq!(c.members[1].data, Default::default());
    assert_eq!(c.leader.unwrap().name, "pg1");
    assert_eq!(c.status.optime, Some(67395656));
    assert_eq!(c.history, Some(vec![]));

    // a deleted member key is re-written even though the data did not change
    rawc.delete(format!("{PREFIX}members/pg1"), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // the HA loop reads the cluster every cycle: that alone notices the missing key
        a.get_cluster().await.unwrap();
        a.touch_member("pg1", data).await.unwrap();
        if raw_get(&mut rawc, "members/pg1").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "member key never re-written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    a.delete_cluster().await.unwrap();
    assert_eq!(a.get_cluster().await.unwrap().members.len(), 0);
    assert!(raw_get(&mut rawc, "leader").await.is_none());
    // other cluster untouched
    assert_eq!(
        rawc.get("/service/other/leader", None)
            .await
            .unwrap()
            .kvs()
            .len(),
        1
    );
    // status cache was cleared by delete_cluster
    a.set_status(r#"{"optime":67395656}"#).await.unwrap();
    assert!(raw_get(&mut rawc, "status").await.is_some());
}

async fn exercise(d: &EtcdDcs, name: &str, bound: Duration) {
    macro_rules! timed {
        ($e:expr) => {{
            let t = Instant::now();
            let r = $e.await;
            assert!(
                t.elapsed() < bound,
                "{} took {:?}",
                stringify!($e),
                t.elapsed()
            );
            r.unwrap_or_else(|e| panic!("{} failed: {e}", stringify!($e)))
        }};
    }
    timed!(d.touch_member(name, "{}"));
    timed!(d.get_cluster());
    assert!(timed!(d.attempt_to_acquire_leader(name)));
    assert!(timed!(d.update_leader(name)));
    timed!(d.set_status("{}"));
    assert!(timed!(d.set_config("{}", None)));
    assert!(timed!(d.delete_leader(name)));
    timed!(d.get_cluster());
    timed!(d.delete_cluster());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_failover() {
    init_log();
    let etcd = Etcd::start();
    let retry = Duration::from_secs(3);
    let dead1 = format!("127.0.0.1:{}", free_port());
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let lists = [
        vec![dead1.clone(), etcd.host_port()],
        vec![etcd.url(), dead1.clone()],
        vec![dead1.clone(), dead2.clone(), etcd.host_port()],
        vec![dead1.clone(), etcd.host_port(), dead2.clone()],
    ];
    for (i, eps) in lists.into_iter().enumerate() {
        let d = EtcdDcs::connect(settings(eps.clone(), 30, retry))
            .await
            .expect("connect must not fail because of dead endpoints");
        for _ in 0..3 {
            exercise(&d, &format!("n{i}"), retry).await;
        }
        // the watch works through the live endpoint too
        let mut rx = d.subscribe();
        rx.borrow_and_update();
        let mut rawc = raw(&etcd).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        rawc.put(format!("{PREFIX}config"), format!("{{\"n\":{i}}}"), None)
            .await
            .unwrap();
        assert!(
            wait_changed(&mut rx, Duration::from_secs(10)).await,
            "no watch wake-up with endpoints {eps:?}"
        );
    }
    // no endpoint alive at all: Unavailable naming the endpoints
    let d = EtcdDcs::connect(settings(
        vec![dead1.clone(), dead2.clone()],
        30,
        Duration::from_secs(1),
    ))
    .await
    .unwrap();
    let t = Instant::now();
    match d.get_cluster().await {
        Err(DcsError::Unavailable(msg)) => {
            assert!(msg.contains(&dead1) && msg.contains(&dead2), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_then_back() {
    init_log();
    let mut etcd = Etcd::start();
    let retry = Duration::from_secs(2);
    let d = EtcdDcs::connect(settings(vec![etcd.host_port()], 30, retry))
        .await
        .unwrap();
    assert!(d.attempt_to_acquire_leader("a").await.unwrap());
    d.touch_member("a", "{}").await.unwrap();
    let mut rx = d.subscribe();
    // make sure the watch runs (and has seen a revision) before etcd goes away
    let mut rawc = raw(&etcd).await;
    let mut n = 0;
    loop {
        n += 1;
        rawc.put(format!("{PREFIX}config"), format!("{{\"n\":{n}}}"), None)
            .await
            .unwrap();
        if wait_changed(&mut rx, Duration::from_millis(500)).await {
            break;
        }
        assert!(n < 20, "watch never started");
    }

    etcd.stop();
    let bound = retry + Duration::from_secs(1);
    let t = Instant::now();
    let r = d.get_cluster().await;
    assert!(matches!(r, Err(DcsError::Unavailable(_))), "{r:?}");
    assert!(t.elapsed() <= bound, "get_cluster took {:?}", t.elapsed());
    let t = Instant::now();
    let r = d.update_leader("a").await;
    assert!(matches!(r, Err(DcsError::Unavailable(_))), "{r:?}");
    assert!(t.elapsed() <= bound, "update_leader took {:?}", t.elapsed());
    let t = Instant::now();
    let r = d.set_config("{}", Some(1)).await;
    assert!(matches!(r, Err(DcsError::Unavailable(_))), "{r:?}");
    assert!(t.elapsed() <= bound, "set_config took {:?}", t.elapsed());

    etcd.restart();
    let c = d.get_cluster().await.expect("get_cluster after restart");
    assert_eq!(c.leader.map(|l| l.name).as_deref(), Some("a"));
    assert!(d.update_leader("a").await.unwrap());

    rx.borrow_and_update();
    let mut rawc = raw(&etcd).await;
    rawc.put(format!("{PREFIX}config"), r#"{"ttl":31}"#, None)
        .await
        .unwrap();
    assert!(
        wait_changed(&mut rx, Duration::from_secs(10)).await,
        "watch did not resume after etcd restart"
    );
    rx.borrow_and_update();
    rawc.put(format!("{PREFIX}members/zz"), "{}", None)
        .await
        .unwrap();
    assert!(wait_changed(&mut rx, Duration::from_secs(5)).await);
    // a member rewrite does not wake
    rx.borrow_and_update();
    rawc.put(format!("{PREFIX}members/zz"), r#"{"a":1}"#, None)
        .await
        .unwrap();
    assert!(!wait_changed(&mut rx, Duration::from_millis(700)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_etcd_times_out() {
    let etcd = Etcd::start();
    let retry = Duration::from_secs(2);
    let d = EtcdDcs::connect(settings(vec![etcd.host_port()], 30, retry))
        .await
        .unwrap();
    assert!(d.attempt_to_acquire_leader("a").await.unwrap());
    etcd.freeze(true);
    let t = Instant::now();
    let r = d.update_leader("a").await;
    let took = t.elapsed();
    etcd.freeze(false);
    assert!(matches!(r, Err(DcsError::Unavailable(_))), "{r:?}");
    assert!(took <= retry + Duration::from_secs(1), "took {took:?}");
    if let Err(e) = r {
        // One endpoint, 2 s retry_timeout: a 1 s attempt, a pause, then one cut short by
        // the deadline.
        assert_eq!(
            assert_one_clean_line(&e),
            format!(
                "etcd {}: no answer within retry_timeout (2s)",
                etcd.host_port()
            )
        );
    }
    assert!(d.update_leader("a").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let etcd = Etcd::start();
    let mut rawc = raw(&etcd).await;
    rawc.user_add("root", "rootpw", None).await.unwrap();
    rawc.user_grant_role("root", "root").await.unwrap();
    rawc.auth_enable().await.unwrap();

    let mut s = settings(vec![etcd.host_port()], 30, Duration::from_secs(2));
    s.username = Some("root".into());
    s.password = Some("rootpw".into());
    let d = EtcdDcs::connect(s.clone()).await.unwrap();
    assert!(d.attempt_to_acquire_leader("a").await.unwrap());
    assert_eq!(d.get_cluster().await.unwrap().leader.unwrap().name, "a");

    s.password = Some("wrong".into());
    let bad = EtcdDcs::connect(s).await.unwrap();
    let r = bad.get_cluster().await;
    assert!(matches!(r, Err(DcsError::Other(_))), "{r:?}");
    if let Err(e) = r {
        let msg = assert_one_clean_line(&e);
        assert!(
            msg.starts_with(&format!("etcd {}: ", etcd.host_port()))
                && msg.contains("authentication failed")
                && !msg.contains("wrong"),
            "{msg}"
        );
    }
}

/// The `Display` of a DCS error as it reaches a log line: one line, no Debug dump of the
/// nested tonic/hyper errors.
fn assert_one_clean_line(e: &DcsError) -> String {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "more than one line: {msg}");
    for noise in [
        "tonic::",
        "Error(",
        "Os {",
        "kind:",
        "ConnectError",
        "code: '",
    ] {
        assert!(!msg.contains(noise), "debug noise {noise:?} in: {msg}");
    }
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_name_the_endpoint_in_one_line() {
    // Nothing listens on these loopback ports: every request is refused at once.
    let dead1 = format!("127.0.0.1:{}", free_port());
    let dead2 = format!("127.0.0.1:{}", free_port());
    let one = EtcdDcs::connect(settings(vec![dead1.clone()], 30, Duration::from_secs(1)))
        .await
        .unwrap();
    let e = one.get_cluster().await.expect_err("nothing listens there");
    assert!(matches!(e, DcsError::Unavailable(_)), "{e:?}");
    assert_eq!(
        assert_one_clean_line(&e),
        format!("etcd {dead1}: connection refused")
    );

    let two = EtcdDcs::connect(settings(
        vec![dead1.clone(), format!("http://{dead2}")],
        30,
        Duration::from_secs(1),
    ))
    .await
    .unwrap();
    let e = two
        .attempt_to_acquire_leader("a")
        .await
        .expect_err("nothing listens there");
    assert_eq!(
        assert_one_clean_line(&e),
        format!(
            "etcd: all endpoints failed ({dead1}: connection refused; \
             http://{dead2}: connection refused)"
        )
    );
}
