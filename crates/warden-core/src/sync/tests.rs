//! Table tests of the synchronous-replication decisions.

use super::*;
use crate::cluster::{Cluster, KeyValue};

fn member(name: &str, tags: &str) -> KeyValue {
    KeyValue {
        key: format!("members/{name}"),
        value: format!(
            r#"{{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","tags":{{{tags}}}}}"#
        ),
        mod_revision: 1,
        lease: 1,
    }
}

fn cluster(sync: Option<&str>, extra_tags: &[(&str, &str)]) -> Cluster {
    let tag = |n: &str| {
        extra_tags
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, t)| *t)
            .unwrap_or("")
    };
    let mut kvs = vec![
        member("pg1", ""),
        member("pg2", tag("pg2")),
        member("pg3", tag("pg3")),
    ];
    if let Some(s) = sync {
        kvs.push(KeyValue {
            key: "sync".into(),
            value: s.into(),
            mod_revision: 7,
            lease: 0,
        });
    }
    Cluster::from_kvs(&kvs)
}

fn conn(name: &str, state: &str, lsn: u64) -> StandbyConn {
    StandbyConn {
        application_name: name.into(),
        sync_state: state.into(),
        write_lsn: Some(lsn),
        flush_lsn: Some(lsn),
        replay_lsn: Some(lsn),
    }
}

fn on(strict: bool, count: usize) -> SyncSettings {
    SyncSettings {
        mode: SyncMode::On,
        strict,
        node_count: count,
        maximum_lag_on_syncnode: -1,
    }
}

fn step(
    c: &Cluster,
    s: &SyncSettings,
    standbys: &[StandbyConn],
    current: &str,
    mine: bool,
) -> (Option<SyncStep>, Option<String>) {
    let (steps, warning) = steps(c, s, standbys, current, mine);
    (steps.into_iter().next(), warning)
}

fn steps(
    c: &Cluster,
    s: &SyncSettings,
    standbys: &[StandbyConn],
    current: &str,
    mine: bool,
) -> (Vec<SyncStep>, Option<String>) {
    let names = StandbyNames::parse(current);
    primary_step(&PrimarySync {
        me: "pg1",
        cluster: c,
        settings: s,
        standbys,
        synchronous_commit: "on",
        current: &names,
        names_are_mine: mine,
        primary_lsn: 100,
        names_changed_at_lsn: Some(50),
    })
}

fn write(standbys: &[&str], version: Option<i64>) -> SyncKeyWrite {
    SyncKeyWrite {
        leader: "pg1".into(),
        standbys: standbys.iter().map(|s| s.to_string()).collect(),
        quorum: 0,
        version,
        chained: false,
    }
}

#[test]
fn standby_names_format_and_parse() {
    assert_eq!(format_standby_names(&[], 0), "");
    assert_eq!(format_standby_names(&[], 1), STRICT_PLACEHOLDER);
    assert_eq!(
        format_standby_names(&["postgres-1".into()], 1),
        "\"postgres-1\""
    );
    assert_eq!(format_standby_names(&["pg2".into()], 1), "pg2");
    assert_eq!(
        format_standby_names(&["postgres-2".into(), "postgres-1".into()], 2),
        "2 (\"postgres-1\",\"postgres-2\")"
    );
    assert_eq!(quote_name("any"), "\"any\"");
    let p = StandbyNames::parse("2 (\"postgres-1\",\"postgres-2\")");
    assert_eq!(p.names, vec!["postgres-1", "postgres-2"]);
    assert_eq!(p.num, 2);
    let p = StandbyNames::parse("ANY 1 (a, \"b c\")");
    assert!(p.quorum);
    assert_eq!(p.names, vec!["a", "b c"]);
    assert_eq!(
        StandbyNames::parse("\"postgres-1\"").names,
        vec!["postgres-1"]
    );
    assert_eq!(StandbyNames::parse("").names, Vec::<String>::new());
}

#[test]
fn enabling_writes_the_key_first() {
    let c = cluster(None, &[]);
    let (s, _) = step(&c, &on(false, 1), &[], "", false);
    assert_eq!(
        s,
        Some(SyncStep::WriteKey(
            write(&[], None),
            "Enabled synchronous replication".into()
        ))
    );
    // A key left by another leader is taken over (CAS on its version).
    let c = cluster(
        Some(r#"{"leader":"pg9","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let (s, _) = step(&c, &on(false, 1), &[], "", false);
    assert!(matches!(s, Some(SyncStep::WriteKey(w, _)) if w == write(&[], Some(7))));
}

#[test]
fn standby_added_to_postgres_first_then_to_the_key() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let s = on(false, 1);
    // pg2 streams asynchronously: PostgreSQL is told first.
    let (st, _) = step(&c, &s, &[conn("pg2", "async", 90)], "", true);
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v == "pg2"));
    // PostgreSQL reports it synchronous (past the point the names changed): the key follows.
    let (st, _) = step(&c, &s, &[conn("pg2", "sync", 90)], "pg2", true);
    assert!(matches!(st, Some(SyncStep::WriteKey(w, _)) if w == write(&["pg2"], Some(7))));
    // Reported sync but not yet past the change point: not confirmed yet.
    let (st, _) = step(&c, &s, &[conn("pg2", "sync", 10)], "pg2", true);
    assert_eq!(st, None);
}

#[test]
fn standby_removed_from_the_key_first_then_from_postgres() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let s = on(false, 1);
    // pg2 disconnected, pg3 streams: the key drops pg2 before PostgreSQL stops waiting
    // (both in one cycle, the key first).
    let (st, _) = steps(&c, &s, &[conn("pg3", "async", 95)], "pg2", true);
    assert_eq!(st.len(), 2, "{st:?}");
    assert!(matches!(&st[0], SyncStep::WriteKey(w, _) if *w == write(&[], Some(7))));
    assert!(matches!(&st[1], SyncStep::SetNames(Some(v), _) if v == "pg3"));
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let (st, _) = step(&c, &s, &[conn("pg3", "async", 95)], "pg2", true);
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v == "pg3"));
}

#[test]
fn steady_state_does_nothing() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let (st, w) = step(
        &c,
        &on(false, 1),
        &[conn("pg2", "sync", 99), conn("pg3", "potential", 99)],
        "pg2",
        true,
    );
    assert_eq!((st, w), (None, None));
}

#[test]
fn multi_sync_and_tags() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let (st, _) = step(
        &c,
        &on(false, 2),
        &[conn("pg2", "async", 90), conn("pg3", "async", 80)],
        "",
        true,
    );
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v == "2 (pg2,pg3)"));
    // nosync / sync_priority 0 members are never chosen; higher sync_priority wins.
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[
            ("pg2", r#""nosync":true"#),
            ("pg3", r#""sync_priority":"2""#),
        ],
    );
    let (st, _) = step(
        &c,
        &on(false, 1),
        &[conn("pg2", "async", 99), conn("pg3", "async", 10)],
        "",
        true,
    );
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v == "pg3"));
}

#[test]
fn strict_mode_waits_for_the_old_standbys() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let (st, w) = step(&c, &on(true, 1), &[], "", true);
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v == STRICT_PLACEHOLDER));
    assert_eq!(w.as_deref(), Some(STRICT_NO_STANDBY_WARNING));
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let (st, w) = step(&c, &on(true, 1), &[], "pg2", true);
    assert_eq!((st, w.as_deref()), (None, Some(STRICT_NO_STANDBY_WARNING)));
    // Not strict: nobody to wait for, the names are cleared (after the key dropped pg2).
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let (st, _) = step(&c, &on(false, 1), &[], STRICT_PLACEHOLDER, true);
    assert!(matches!(st, Some(SyncStep::SetNames(Some(ref v), _)) if v.is_empty()));
}

#[test]
fn switching_off_deletes_the_key_then_restores_the_names() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let off = SyncSettings::default();
    assert_eq!(
        step(&c, &off, &[], "pg2", true).0,
        Some(SyncStep::DeleteKey(7))
    );
    let c = cluster(None, &[]);
    assert!(matches!(
        step(&c, &off, &[], "pg2", true).0,
        Some(SyncStep::SetNames(None, _))
    ));
    assert_eq!(step(&c, &off, &[], "", false).0, None);
}

#[test]
fn only_the_sync_set_may_promote() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    assert!(may_promote("pg2", &c, &on(false, 1)));
    assert!(may_promote("pg1", &c, &on(false, 1)));
    assert!(!may_promote("pg3", &c, &on(false, 1)));
    assert!(may_promote("pg3", &c, &SyncSettings::default()));
    // Pre-promote: strict keeps waiting for the old set minus me; non-strict for nobody.
    let (w, names) = {
        let p = pre_promote("pg2", &c, &on(true, 1)).unwrap();
        (p.write.unwrap(), p.names)
    };
    assert_eq!(w.standbys, vec!["pg1".to_string()]);
    assert_eq!(names, "pg1");
    let lone = cluster(
        Some(r#"{"leader":"pg2","sync_standby":null,"quorum":0}"#),
        &[],
    );
    let (w, names) = {
        let p = pre_promote("pg2", &lone, &on(true, 1)).unwrap();
        (p.write.unwrap(), p.names)
    };
    assert!(w.standbys.is_empty());
    assert_eq!(names, STRICT_PLACEHOLDER);
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2,pg3","quorum":0}"#),
        &[],
    );
    let (w, names) = {
        let p = pre_promote("pg2", &c, &on(true, 1)).unwrap();
        (p.write.unwrap(), p.names)
    };
    assert_eq!(w.standbys, vec!["pg1".to_string(), "pg3".to_string()]);
    assert_eq!(w.version, Some(7));
    assert_eq!(names, "2 (pg1,pg3)");
    let (w, names) = {
        let p = pre_promote("pg2", &c, &on(false, 1)).unwrap();
        (p.write.unwrap(), p.names)
    };
    assert!(w.standbys.is_empty());
    assert_eq!(names, "");
}

#[test]
fn sync_key_is_written_as_patroni_writes_it() {
    let w = SyncKeyWrite {
        leader: "pg1".into(),
        standbys: vec!["pg3".into(), "pg2".into()],
        quorum: 0,
        version: None,
        chained: false,
    };
    assert_eq!(
        w.to_json(),
        r#"{"leader":"pg1","quorum":0,"sync_standby":"pg2,pg3"}"#
    );
    let none = SyncKeyWrite {
        standbys: vec![],
        ..w
    };
    assert_eq!(
        none.to_json(),
        r#"{"leader":"pg1","quorum":0,"sync_standby":null}"#
    );
}

#[test]
fn a_sync_standby_leaves_the_set_before_it_stops() {
    let c = cluster(
        Some(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#),
        &[],
    );
    let quorum = SyncSettings {
        mode: SyncMode::Quorum,
        ..on(false, 1)
    };
    assert!(must_leave_before_stop("pg2", &c, &on(false, 1), false));
    assert!(must_leave_before_stop("PG2", &c, &quorum, false));
    // not named, already nosync, or synchronous mode off: nothing to wait for
    assert!(!must_leave_before_stop("pg3", &c, &on(false, 1), false));
    assert!(!must_leave_before_stop("pg2", &c, &on(false, 1), true));
    assert!(!must_leave_before_stop(
        "pg2",
        &c,
        &SyncSettings::default(),
        false
    ));
}
