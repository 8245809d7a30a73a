//! Two real PostgreSQL 15 nodes: basebackup + streaming with a slot, promote, then
//! pg_rewind of the diverged old primary and re-follow.

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_pg::{slot_name_for_member, PgStatus, Postgres, StopMode};
use warden_testkit::pg::PgTestDir;
use warden_testkit::wait_for_async;

async fn wait_streaming(pg: &Postgres, what: &str) -> PgStatus {
    wait_for_async(
        what,
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            match pg.query_status().await {
                Ok(st) if st.replication_state.as_deref() == Some("streaming") => Some(st),
                _ => None,
            }
        },
    )
    .await
}

async fn wait_value(port: u16, sql: &str, want: &str) {
    wait_for_async(
        &format!("{sql} = {want} on port {port}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (query_text(port, sql).await.as_deref() == Some(want)).then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_promote_rewind() {
    let t0 = Instant::now();
    let dir = PgTestDir::new("warden-pg-repl");
    let n1 = dir.node("node-1");
    let n2 = dir.node("node-2");
    let pg1 = Postgres::new(settings_for(&n1, "batman"));
    let pg2 = Postgres::new(settings_for(&n2, "batman"));
    let slot1 = slot_name_for_member("node-1");
    let slot2 = slot_name_for_member("node-2");
    assert_eq!(slot2, "node_2");

    // ---- primary
    bootstrap_primary(&pg1).await;
    pg1.execute("CREATE TABLE t(id int primary key, v text); INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    pg1.slot_session(None)
        .await
        .unwrap()
        .create_physical_slot(&slot2)
        .await
        .expect("slot on primary");

    // ---- replica: basebackup + standby config
    pg2.basebackup(&upstream_of(&pg1, None))
        .await
        .expect("basebackup");
    let pgpass = std::fs::read_to_string(&n2.pgpass).unwrap();
    assert_eq!(
        pgpass,
        format!("127.0.0.1:{}:*:replicator:rep\\:pa\\\\ss\n", n1.port)
    );
    pg2.write_config(Some(&upstream_of(&pg1, Some(&slot2))), true)
        .expect("write standby config");
    assert!(n2.data_dir.join("standby.signal").exists());
    let conf = std::fs::read_to_string(n2.data_dir.join("postgresql.conf")).unwrap();
    let expected_ci = format!(
        "primary_conninfo = 'dbname=postgres user=replicator passfile={} host=127.0.0.1 port={} sslmode=prefer \
         application_name=node-2 gssencmode=prefer channel_binding=prefer'\nprimary_slot_name = 'node_2'\n\
         recovery_target = ''\nrecovery_target_lsn = ''\nrecovery_target_name = ''\nrecovery_target_time = ''\n\
         recovery_target_timeline = 'latest'\nrecovery_target_xid = ''\n",
        n2.pgpass.display(),
        n1.port
    );
    assert!(
        conf.contains(&format!("\n# recovery.conf\n{expected_ci}")),
        "{conf}"
    );
    assert!(conf.contains(&format!("port = '{}'", n2.port)));
    pg2.start().await.expect("start replica");
    let st2 = wait_streaming(&pg2, "replica streaming").await;
    assert!(st2.in_recovery);
    assert_eq!(st2.timeline, Some(1));
    assert!(st2.receive_lsn.is_some() && st2.replay_lsn.is_some());
    assert_eq!(
        st2.primary_conninfo_host_port,
        Some(("127.0.0.1".to_string(), n1.port))
    );
    eprintln!("replica streaming after {:?}", t0.elapsed());

    // primary sees the walsender on the slot
    let st1 = wait_for_async(
        "walsender on primary",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let st = pg1.query_status().await.ok()?;
            let active = st.slots.iter().any(|s| s.name == "node_2" && s.active);
            (active
                && st
                    .replication
                    .iter()
                    .any(|r| r.state.as_deref() == Some("streaming")))
            .then_some(st)
        },
    )
    .await;
    let row = &st1.replication[0];
    assert_eq!(row.application_name.as_deref(), Some("node-2"));
    assert_eq!(row.usename.as_deref(), Some("replicator"));
    assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.sync_state.as_deref(), Some("async"));
    let json = serde_json::to_value(row).unwrap();
    assert!(json.get("sync_priority").is_some());

    // data flows
    pg1.execute("INSERT INTO t VALUES (2, 'two')")
        .await
        .unwrap();
    wait_value(n2.port, "SELECT v FROM t WHERE id = 2", "two").await;
    // a second write_config on a running replica is harmless and reloadable
    pg2.write_config(Some(&upstream_of(&pg1, Some(&slot2))), true)
        .unwrap();
    pg2.reload().await.expect("reload replica");

    // the lean WAL query agrees with the full status query on a replica
    let w2 = pg2
        .wal_monitor()
        .await
        .expect("monitor on replica")
        .read()
        .await
        .expect("WAL positions on replica");
    let st2 = pg2.query_status().await.unwrap();
    assert!(w2.in_recovery && w2.flush_lsn.is_none());
    assert!(w2.receive_lsn.is_some() && w2.replay_lsn.is_some());
    assert!(st2.replay_lsn >= w2.replay_lsn, "{st2:?} vs {w2:?}");

    // a replica is no rewind source
    let err = pg1
        .ensure_rewind_source(&upstream_of(&pg2, None))
        .await
        .expect_err("a replica is no rewind source");
    assert!(err.to_string().contains("still in recovery"), "{err}");

    // ---- promote node-2
    pg2.promote().await.expect("promote");
    let st2 = pg2.query_status().await.unwrap();
    assert!(!st2.in_recovery);
    assert_eq!(st2.timeline, Some(2));
    assert_eq!(st2.replication_state, None);
    // Right after promotion pg_control may still name timeline 1: the rewind-source
    // check requests the checkpoint itself and returns once it names timeline 2.
    pg1.ensure_rewind_source(&upstream_of(&pg2, None))
        .await
        .expect("freshly promoted node becomes a rewind source");
    assert_eq!(
        query_text(n2.port, "SELECT timeline_id FROM pg_control_checkpoint()")
            .await
            .as_deref(),
        Some("2")
    );
    pg2.slot_session(None)
        .await
        .unwrap()
        .create_physical_slot(&slot1)
        .await
        .expect("slot on new primary");
    pg2.execute("INSERT INTO t VALUES (3, 'three')")
        .await
        .unwrap();

    // ---- diverge node-1 (still primary on timeline 1), then crash it (immediate stop):
    // rewind has to run single-user crash recovery first.
    pg1.execute("INSERT INTO t VALUES (100, 'divergent')")
        .await
        .unwrap();
    pg1.stop(StopMode::Immediate, Duration::from_secs(30))
        .await
        .expect("crash old primary");
    let cd1 = pg1.controldata().await.unwrap();
    assert_eq!(cd1.state(), Some("in production"));
    assert_eq!(cd1.timeline(), Some(1));

    // history of the new timeline, read from node-2
    let hist = pg2
        .timeline_history(&upstream_of(&pg2, None), 2)
        .await
        .expect("history");
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].0, 1);

    // ---- rewind node-1 from node-2 and follow it
    assert!(pg1.can_rewind(true));
    let t_rw = Instant::now();
    pg1.rewind(&upstream_of(&pg2, None))
        .await
        .expect("pg_rewind");
    eprintln!("pg_rewind (with crash recovery) took {:?}", t_rw.elapsed());
    let pgpass = std::fs::read_to_string(&n1.pgpass).unwrap();
    assert!(pgpass.contains(":rewind_user:rewind-pw"), "{pgpass}");
    pg1.write_config(Some(&upstream_of(&pg2, Some(&slot1))), true)
        .unwrap();
    pg1.start().await.expect("start rewound node as replica");
    let st1 = wait_streaming(&pg1, "rewound node streaming").await;
    assert_eq!(st1.timeline, Some(2));
    assert_eq!(
        st1.primary_conninfo_host_port,
        Some(("127.0.0.1".to_string(), n2.port))
    );
    wait_value(n1.port, "SELECT v FROM t WHERE id = 3", "three").await;
    pg2.execute("INSERT INTO t VALUES (4, 'four')")
        .await
        .unwrap();
    wait_value(n1.port, "SELECT v FROM t WHERE id = 4", "four").await;
    assert_eq!(
        query_text(n1.port, "SELECT count(*) FROM t WHERE id = 100")
            .await
            .as_deref(),
        Some("0"),
        "divergent row must be gone after rewind"
    );
    let st2 = pg2.query_status().await.unwrap();
    assert!(st2.slots.iter().any(|s| s.name == "node_1" && s.active));

    // ---- second failover: promote node-1 (timeline 3), diverge node-2, clean fast stop,
    // rewind node-2 from node-1 (no crash recovery needed) and follow.
    pg1.promote().await.expect("promote node-1");
    pg1.checkpoint().await.unwrap();
    assert_eq!(pg1.query_status().await.unwrap().timeline, Some(3));
    pg1.slot_session(None)
        .await
        .unwrap()
        .create_physical_slot(&slot2)
        .await
        .unwrap();
    pg1.execute("INSERT INTO t VALUES (5, 'five')")
        .await
        .unwrap();
    pg2.execute("INSERT INTO t VALUES (200, 'divergent')")
        .await
        .unwrap();
    pg2.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .expect("stop node-2");
    let cd2 = pg2.controldata().await.unwrap();
    assert_eq!(cd2.state(), Some("shut down"));
    assert_eq!(cd2.timeline(), Some(2));
    let hist = pg1
        .timeline_history(&upstream_of(&pg1, None), 3)
        .await
        .expect("history 3");
    assert_eq!(hist.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2]);
    assert!(
        cd2.checkpoint_lsn().unwrap() > hist[1].1,
        "node-2 went past the switch point"
    );
    pg2.rewind(&upstream_of(&pg1, None))
        .await
        .expect("second pg_rewind");
    pg2.write_config(Some(&upstream_of(&pg1, Some(&slot2))), true)
        .unwrap();
    pg2.start().await.expect("start node-2 as replica");
    let st2 = wait_streaming(&pg2, "node-2 streaming from node-1").await;
    assert_eq!(st2.timeline, Some(3));
    wait_value(n2.port, "SELECT v FROM t WHERE id = 5", "five").await;
    assert_eq!(
        query_text(n2.port, "SELECT count(*) FROM t WHERE id = 200")
            .await
            .as_deref(),
        Some("0")
    );

    pg1.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    pg2.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("replication test took {:?}", t0.elapsed());
}
