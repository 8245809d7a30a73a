//! Table tests of the slot decisions, modelled on Patroni's suite topologies
//! (features/permanent_slots, nostream_node, ignored_slots).

use super::*;
use crate::cluster::{KeyValue, Status};
use serde_json::json;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.to_string(),
        mod_revision: 1,
        lease: 1,
    }
}

/// A cluster: leader name, members as (name, tags JSON, xlog_location), status JSON,
/// dynamic config JSON.
fn cluster(leader: &str, members: &[(&str, &str, u64)], status: &str, config: Value) -> Cluster {
    let mut kvs = vec![
        kv("leader", leader),
        kv("status", status),
        kv("config", &config.to_string()),
    ];
    for (name, tags, xlog) in members {
        kvs.push(kv(
            &format!("members/{name}"),
            &format!(
                r#"{{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"replica","version":"4.1.4","xlog_location":{xlog},"tags":{tags}}}"#
            ),
        ));
    }
    Cluster::from_kvs(&kvs)
}

fn config(c: &Cluster) -> SlotsConfig {
    SlotsConfig::from_dynamic(&c.config_value(), true, 1800)
}

fn tags_of(c: &Cluster, name: &str) -> SlotTags {
    c.member(name).map(SlotTags::of_member).unwrap_or_default()
}

fn names(d: &Desired) -> Vec<&str> {
    d.slots.keys().map(String::as_str).collect()
}

fn logical() -> Value {
    json!({"type": "logical", "database": "postgres", "plugin": "test_decoding"})
}

/// permanent_slots.feature: 0 leads, 2 is nofailover, 3 replicates from 2.
fn permanent_topology() -> Cluster {
    cluster(
        "postgres-0",
        &[
            ("postgres-0", "{}", 500),
            ("postgres-1", "{}", 400),
            ("postgres-2", r#"{"nofailover":true}"#, 400),
            ("postgres-3", r#"{"replicatefrom":"postgres-2"}"#, 350),
        ],
        r#"{"optime":500,"slots":{"postgres_0":500,"postgres_1":400,"postgres_3":300,"test_physical":450,"test_logical":420}}"#,
        json!({"slots": {"test_physical": 0, "postgres_3": 0, "test_logical": logical()}}),
    )
}

fn desired_on(c: &Cluster, name: &str, role: SlotRole) -> Desired {
    desired_slots(c, &config(c), name, &tags_of(c, name), role)
}

#[test]
fn member_slot_names_follow_patroni() {
    assert_eq!(slot_name_for_member("pg1"), "pg1");
    assert_eq!(slot_name_for_member("Node-1.example"), "node_1_example");
    assert_eq!(slot_name_for_member("a@b"), "au0064b");
    assert_eq!(slot_name_for_member("a b"), "au0032b");
    assert_eq!(slot_name_for_member("é"), "u0233");
    assert_eq!(slot_name_for_member("x😀"), "xu128512");
    let long = "a".repeat(70);
    assert_eq!(slot_name_for_member(&long).len(), 63);
    let n = format!("{}é", "a".repeat(61));
    assert_eq!(slot_name_for_member(&n), format!("{}u0", "a".repeat(61)));
    assert!(is_valid_slot_name("test_physical"));
    for bad in ["", "Upper", "with-dash", &"a".repeat(64)] {
        assert!(!is_valid_slot_name(bad), "{bad}");
    }
}

#[test]
fn permanent_slot_config_accepts_patroni_shorthands() {
    let cfg = SlotsConfig::from_dynamic(
        &json!({"slots": {
            "zero": 0, "null": null, "empty": {}, "phys": {"type": "physical"},
            "implicit_logical": {"database": "db", "plugin": "pgoutput"},
            "db_only": {"database": "db"},
            "half_logical": {"type": "logical", "database": "db"},
            "one": 1, "Bad-Name": 0, "odd_type": {"type": "other"}
        }}),
        true,
        1800,
    );
    let phys = PermanentSlot::Physical { cluster_type: None };
    for n in ["zero", "null", "empty", "phys", "db_only"] {
        assert_eq!(cfg.permanent.get(n), Some(&phys), "{n}");
    }
    assert_eq!(
        cfg.permanent.get("implicit_logical"),
        Some(&PermanentSlot::Logical {
            database: "db".into(),
            plugin: "pgoutput".into()
        })
    );
    for n in ["half_logical", "one", "Bad-Name", "odd_type"] {
        assert!(!cfg.permanent.contains_key(n), "{n}");
        assert!(
            cfg.problems.iter().any(|p| p.contains(n)),
            "{n}: {:?}",
            cfg.problems
        );
    }
    // The first non-empty section wins, as global_config.permanent_slots reads it.
    let cfg = SlotsConfig::from_dynamic(
        &json!({"permanent_slots": {}, "slots": {"b": 0}, "permanent_replication_slots": {"a": 0}}),
        true,
        0,
    );
    assert_eq!(cfg.permanent.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn which_slots_each_node_of_the_permanent_slots_feature_keeps() {
    let c = permanent_topology();
    let table: &[(&str, SlotRole, &[&str])] = &[
        (
            "postgres-0",
            SlotRole::Primary,
            &[
                "postgres_1",
                "postgres_2",
                "postgres_3",
                "test_logical",
                "test_physical",
            ],
        ),
        (
            "postgres-1",
            SlotRole::Replica,
            &[
                "postgres_0",
                "postgres_2",
                "postgres_3",
                "test_logical",
                "test_physical",
            ],
        ),
        // nofailover: only the slot of the member cascading from it, no permanent ones
        ("postgres-2", SlotRole::Replica, &["postgres_3"]),
        (
            "postgres-3",
            SlotRole::Replica,
            &[
                "postgres_0",
                "postgres_1",
                "postgres_2",
                "test_logical",
                "test_physical",
            ],
        ),
    ];
    for (node, role, want) in table {
        assert_eq!(names(&desired_on(&c, node, *role)), *want, "{node}");
    }
    let p0 = desired_on(&c, "postgres-0", SlotRole::Primary).slots;
    // postgres_3 is a member slot that cascades elsewhere: not streamed here, advanced
    // to the member's own position (350 > the published 300).
    assert_eq!(
        p0["postgres_3"],
        DesiredSlot::Physical {
            lsn: Some(350),
            expected_active: Some(false)
        }
    );
    assert_eq!(
        p0["postgres_1"],
        DesiredSlot::Physical {
            lsn: Some(400),
            expected_active: Some(true)
        }
    );
    assert_eq!(
        p0["test_physical"],
        DesiredSlot::Physical {
            lsn: Some(450),
            expected_active: Some(true)
        }
    );
    let p2 = desired_on(&c, "postgres-2", SlotRole::Replica).slots;
    assert_eq!(
        p2["postgres_3"],
        DesiredSlot::Physical {
            lsn: Some(350),
            expected_active: Some(true)
        }
    );
    let p1 = desired_on(&c, "postgres-1", SlotRole::Replica).slots;
    assert_eq!(
        p1["test_physical"],
        DesiredSlot::Physical {
            lsn: Some(450),
            expected_active: Some(false)
        }
    );
    assert_eq!(
        p1["test_logical"],
        DesiredSlot::Logical {
            database: "postgres".into(),
            plugin: "test_decoding".into(),
            lsn: Some(420)
        }
    );
}

#[test]
fn nostream_members_get_no_slot_and_no_logical_slots() {
    let c = cluster(
        "postgres-0",
        &[
            ("postgres-0", "{}", 500),
            ("postgres-1", r#"{"nostream":true}"#, 400),
            ("postgres-2", r#"{"replicatefrom":"postgres-1"}"#, 400),
        ],
        r#"{"optime":500,"slots":{"test_logical":420}}"#,
        json!({"slots": {"test_logical": logical(), "keep_me": 0}}),
    );
    let table: &[(&str, SlotRole, &[&str])] = &[
        (
            "postgres-0",
            SlotRole::Primary,
            &["keep_me", "postgres_2", "test_logical"],
        ),
        (
            "postgres-1",
            SlotRole::Replica,
            &["keep_me", "postgres_0", "postgres_2"],
        ),
        ("postgres-2", SlotRole::Replica, &["keep_me", "postgres_0"]),
    ];
    for (node, role, want) in table {
        assert_eq!(names(&desired_on(&c, node, *role)), *want, "{node}");
    }
    let cfg = config(&c);
    assert_eq!(
        slot_name_on_primary(&c, "postgres-2", &tags_of(&c, "postgres-2")),
        None
    );
    for (node, enforce) in [
        ("postgres-0", true),
        ("postgres-1", false),
        ("postgres-2", false),
    ] {
        assert_eq!(
            should_enforce_hot_standby_feedback(&c, &cfg, node, &tags_of(&c, node)),
            enforce,
            "{node}"
        );
    }
}

#[test]
fn hot_standby_feedback_is_forced_on_a_cascade_source_of_a_logical_replica() {
    // postgres-2 may not fail over (no slots of its own) but postgres-3 behind it keeps
    // a logical slot: postgres-2 must pass the feedback on.
    let c = permanent_topology();
    let cfg = config(&c);
    for node in ["postgres-1", "postgres-2", "postgres-3"] {
        assert!(
            should_enforce_hot_standby_feedback(&c, &cfg, node, &tags_of(&c, node)),
            "{node}"
        );
    }
    let no_logical = cluster(
        "postgres-0",
        &[("postgres-0", "{}", 1), ("postgres-1", "{}", 1)],
        "{}",
        json!({"slots": {"p": 0}}),
    );
    let cfg = config(&no_logical);
    assert!(!should_enforce_hot_standby_feedback(
        &no_logical,
        &cfg,
        "postgres-1",
        &SlotTags::default()
    ));
}

#[test]
fn replicatefrom_loops_end() {
    let c = cluster(
        "a",
        &[
            ("a", "{}", 1),
            ("b", r#"{"replicatefrom":"c"}"#, 1),
            ("c", r#"{"replicatefrom":"b"}"#, 1),
        ],
        "{}",
        json!({"slots": {"l": logical()}}),
    );
    assert_eq!(slot_name_on_primary(&c, "b", &tags_of(&c, "b")), None);
    assert_eq!(
        slot_name_on_primary(&c, "a", &tags_of(&c, "a")),
        Some("a".into())
    );
    let cfg = config(&c);
    assert!(!should_enforce_hot_standby_feedback(
        &c,
        &cfg,
        "b",
        &tags_of(&c, "b")
    ));
}

#[test]
fn without_member_slot_retention_only_streaming_members_get_slots() {
    let c = permanent_topology();
    let mut cfg = config(&c);
    cfg.member_slots_ttl = 0;
    let d = |node: &str, role| desired_slots(&c, &cfg, node, &tags_of(&c, node), role);
    // on the leader: not postgres_3 as a member slot (it cascades), but it is permanent
    assert_eq!(
        names(&d("postgres-0", SlotRole::Primary)),
        [
            "postgres_1",
            "postgres_2",
            "postgres_3",
            "test_logical",
            "test_physical"
        ]
    );
    assert_eq!(
        d("postgres-0", SlotRole::Primary).slots["postgres_3"],
        DesiredSlot::Physical {
            lsn: Some(350),
            expected_active: Some(false)
        }
    );
    assert_eq!(names(&d("postgres-2", SlotRole::Replica)), ["postgres_3"]);
    assert_eq!(
        names(&d("postgres-1", SlotRole::Replica)),
        ["postgres_3", "test_logical", "test_physical"]
    );
}

#[test]
fn retained_slots_and_leader_versions() {
    let c = cluster(
        "pg-a",
        &[("pg-a", "{}", 10), ("pg-b", "{}", 900)],
        r#"{"optime":10,"slots":{"pg_b":5},"retain_slots":["pg_a","pg_b","pg_gone"]}"#,
        json!({}),
    );
    let d = desired_on(&c, "pg-b", SlotRole::Replica).slots;
    assert_eq!(d.keys().collect::<Vec<_>>(), ["pg_a", "pg_gone"]);
    assert_eq!(
        d["pg_gone"],
        DesiredSlot::Physical {
            lsn: None,
            expected_active: None
        }
    );
    // A leader older than Patroni 4 does not publish member positions in status:
    // the member's own position counts.
    let mut old = c.clone();
    old.members[0].data.version = Some("3.3.2".into());
    let d = desired_on(&old, "pg-a", SlotRole::Primary).slots;
    assert_eq!(
        d["pg_b"],
        DesiredSlot::Physical {
            lsn: Some(900),
            expected_active: Some(true)
        }
    );
    let d = desired_on(&c, "pg-a", SlotRole::Primary).slots;
    assert_eq!(
        d["pg_b"],
        DesiredSlot::Physical {
            lsn: Some(5),
            expected_active: Some(true)
        }
    );
    // Two members sharing a slot name are reported.
    let clash = cluster(
        "a-1",
        &[("a-1", "{}", 1), ("b.1", "{}", 1), ("b-1", "{}", 1)],
        "{}",
        json!({}),
    );
    let d = desired_on(&clash, "a-1", SlotRole::Primary);
    assert_eq!(
        d.warnings,
        ["Following cluster members share a replication slot name: b-1, b.1 map to b_1"]
    );
}

fn physical(name: &str, restart: Option<u64>, xmin: Option<&str>) -> ExistingSlot {
    ExistingSlot {
        name: name.into(),
        slot_type: "physical".into(),
        restart_lsn: restart,
        xmin: xmin.map(str::to_string),
        wal_status: Some("reserved".into()),
        ..ExistingSlot::default()
    }
}

fn logical_slot(name: &str, db: &str, plugin: &str, confirmed: u64) -> ExistingSlot {
    ExistingSlot {
        name: name.into(),
        slot_type: "logical".into(),
        database: Some(db.into()),
        plugin: Some(plugin.into()),
        confirmed_flush_lsn: Some(confirmed),
        wal_status: Some("reserved".into()),
        ..ExistingSlot::default()
    }
}

struct Case<'a> {
    me: &'a str,
    role: SlotRole,
    existing: Vec<ExistingSlot>,
    replay: Option<u64>,
    paused: bool,
    recopy: &'a [&'a str],
}

fn run(c: &Cluster, case: Case<'_>) -> SlotPlan {
    let cfg = config(c);
    let tags = tags_of(c, case.me);
    let recopy: BTreeSet<String> = case.recopy.iter().map(|s| s.to_string()).collect();
    plan(&SlotsInput {
        me: case.me,
        tags: &tags,
        role: case.role,
        cluster: c,
        config: &cfg,
        existing: &case.existing,
        replay_lsn: case.replay,
        paused: case.paused,
        server_version: 150004,
        recopy: &recopy,
    })
}

fn drops(p: &SlotPlan) -> Vec<(&str, &DropReason)> {
    p.drop
        .iter()
        .map(|d| (d.name.as_str(), &d.reason))
        .collect()
}

#[test]
fn primary_creates_missing_slots_and_advances_only_idle_ones() {
    let c = permanent_topology();
    let p = run(
        &c,
        Case {
            me: "postgres-0",
            role: SlotRole::Primary,
            existing: vec![
                physical("postgres_1", Some(100), Some("777")),
                physical("postgres_3", Some(100), None),
                physical("test_physical", Some(100), None),
            ],
            replay: None,
            paused: false,
            recopy: &[],
        },
    );
    assert!(p.drop.is_empty(), "{p:?}");
    assert_eq!(p.create_physical, ["postgres_2"]);
    // test_physical is expected to be streamed from: never advanced by us
    assert_eq!(p.advance_physical, [("postgres_3".to_string(), 350)]);
    assert_eq!(
        p.create_logical,
        [LogicalSlotOp {
            name: "test_logical".into(),
            database: "postgres".into(),
            plugin: "test_decoding".into(),
            lsn: 0
        }]
    );
    assert!(p.advance_logical.is_empty() && p.copy_logical.is_empty());
}

#[test]
fn replica_copies_advances_and_cleans_up() {
    let c = permanent_topology();
    let base = vec![
        physical("postgres_0", Some(100), None),
        // was the leader's slot for this node's old replica: holds an xmin nobody moves
        physical("postgres_2", Some(100), Some("735")),
        physical("postgres_3", None, None),
        logical_slot("test_logical", "postgres", "test_decoding", 400),
        logical_slot("dummy_slot", "postgres", "test_decoding", 1),
    ];
    let p = run(
        &c,
        Case {
            me: "postgres-1",
            role: SlotRole::Replica,
            existing: base.clone(),
            replay: Some(410),
            paused: false,
            recopy: &[],
        },
    );
    assert_eq!(
        drops(&p),
        [
            ("dummy_slot", &DropReason::Unknown),
            ("postgres_2", &DropReason::StaleXmin("735".into())),
            ("postgres_3", &DropReason::NoRestartLsn),
        ]
    );
    assert_eq!(p.create_physical, ["postgres_2", "test_physical"]);
    assert_eq!(p.advance_physical, [("postgres_0".to_string(), 500)]);
    // capped at the replay position
    assert_eq!(p.advance_logical.len(), 1);
    assert_eq!(
        (p.advance_logical[0].name.as_str(), p.advance_logical[0].lsn),
        ("test_logical", 410)
    );
    assert!(p.create_logical.is_empty() && p.copy_logical.is_empty());

    // Missing logical slot with published feedback: copied; one whose advance failed
    // for lack of WAL: copied again instead of advanced.
    let mut without = base.clone();
    without.retain(|s| s.name != "test_logical");
    let p = run(
        &c,
        Case {
            me: "postgres-1",
            role: SlotRole::Replica,
            existing: without,
            replay: Some(410),
            paused: false,
            recopy: &[],
        },
    );
    assert_eq!(p.copy_logical, ["test_logical"]);
    let p = run(
        &c,
        Case {
            me: "postgres-1",
            role: SlotRole::Replica,
            existing: base.clone(),
            replay: Some(410),
            paused: false,
            recopy: &["test_logical"],
        },
    );
    assert_eq!(p.copy_logical, ["test_logical"]);
    assert!(p.advance_logical.is_empty());

    // In pause unknown slots stay.
    let p = run(
        &c,
        Case {
            me: "postgres-1",
            role: SlotRole::Replica,
            existing: base,
            replay: Some(410),
            paused: true,
            recopy: &[],
        },
    );
    assert!(!p.drop.iter().any(|d| d.name == "dummy_slot"), "{p:?}");
}

#[test]
fn lost_or_changed_slots_are_recreated() {
    let mut c = permanent_topology();
    let mut lost = physical("test_physical", Some(1), None);
    lost.wal_status = Some("lost".into());
    let p = run(
        &c,
        Case {
            me: "postgres-0",
            role: SlotRole::Primary,
            existing: vec![
                lost,
                logical_slot("test_logical", "postgres", "pgoutput", 5),
                physical("postgres_1", Some(1), None),
                physical("postgres_2", Some(1), None),
                physical("postgres_3", Some(1), None),
            ],
            replay: None,
            paused: false,
            recopy: &[],
        },
    );
    assert_eq!(
        drops(&p),
        [
            ("test_physical", &DropReason::WalLost),
            ("test_logical", &DropReason::AttributesChanged),
        ]
    );
    assert_eq!(p.create_physical, ["test_physical"]);
    assert_eq!(p.create_logical.len(), 1);
    // Without a config key Patroni does not touch slots at all.
    c.config = None;
    let p = run(
        &c,
        Case {
            me: "postgres-0",
            role: SlotRole::Primary,
            existing: vec![physical("stray", Some(1), None)],
            replay: None,
            paused: false,
            recopy: &[],
        },
    );
    assert_eq!(p, SlotPlan::default());
}

#[test]
fn ignore_slots_matchers_protect_hand_made_slots() {
    let c = cluster(
        "postgres-1",
        &[("postgres-0", "{}", 1), ("postgres-1", "{}", 1)],
        "{}",
        json!({"ignore_slots": [
            {"name": "unmanaged_slot_0", "database": "postgres", "plugin": "test_decoding", "type": "logical"},
            {"name": "unmanaged_slot_1", "database": "postgres", "plugin": "test_decoding"},
            {"name": "unmanaged_slot_2", "database": "postgres"},
            {"name": "unmanaged_slot_3"},
            {"type": "physical", "database": ""},
            {"plugin": "wal2json"}
        ]}),
    );
    let mut existing: Vec<ExistingSlot> = (0..4)
        .map(|n| {
            logical_slot(
                &format!("unmanaged_slot_{n}"),
                "postgres",
                "test_decoding",
                1,
            )
        })
        .collect();
    existing.push(logical_slot("dummy_slot", "postgres", "test_decoding", 1));
    existing.push(logical_slot(
        "unmanaged_slot_2_elsewhere",
        "other",
        "test_decoding",
        1,
    ));
    existing.push(logical_slot("any_wal2json", "other", "wal2json", 1));
    existing.push(physical("hand_made_physical", Some(1), None));
    existing.push(physical("postgres_0", Some(1), None));
    for (me, role) in [
        ("postgres-1", SlotRole::Primary),
        ("postgres-0", SlotRole::Replica),
    ] {
        let mut ex = existing.clone();
        if me == "postgres-0" {
            ex.retain(|s| s.name != "postgres_0");
            ex.push(physical("postgres_1", Some(1), None));
        }
        let p = run(
            &c,
            Case {
                me,
                role,
                existing: ex,
                replay: Some(1),
                paused: false,
                recopy: &[],
            },
        );
        assert_eq!(
            drops(&p),
            [
                ("dummy_slot", &DropReason::Unknown),
                ("unmanaged_slot_2_elsewhere", &DropReason::Unknown)
            ],
            "{me}"
        );
    }
}

#[test]
fn postgres_17_failover_slots_are_left_alone() {
    let c = permanent_topology();
    let mut s = logical_slot("test17", "postgres", "test_decoding", 1);
    s.failover = true;
    let cfg = config(&c);
    let tags = tags_of(&c, "postgres-1");
    let recopy = BTreeSet::new();
    let input = |v| SlotsInput {
        me: "postgres-1",
        tags: &tags,
        role: SlotRole::Replica,
        cluster: &c,
        config: &cfg,
        existing: std::slice::from_ref(&s),
        replay_lsn: Some(1),
        paused: false,
        server_version: v,
        recopy: &recopy,
    };
    assert!(plan(&input(170002)).drop.is_empty());
    assert_eq!(plan(&input(160004)).drop.len(), 1);
}

#[test]
fn published_slots_and_retention() {
    let c = permanent_topology();
    let cfg = config(&c);
    let existing = vec![
        physical("postgres_1", Some(400), Some("9")),
        physical("postgres_2", Some(380), None),
        physical("postgres_3", Some(300), None),
        physical("test_physical", Some(450), None),
        physical("not_wanted", Some(1), None),
        logical_slot("test_logical", "postgres", "test_decoding", 420),
    ];
    let me = tags_of(&c, "postgres-0");
    let published = published_slots(&c, &cfg, "postgres-0", &me, &existing, 510);
    assert_eq!(
        published,
        BTreeMap::from([
            ("postgres_0".to_string(), 510),
            ("postgres_1".to_string(), 400),
            ("postgres_2".to_string(), 380),
            ("postgres_3".to_string(), 300),
            ("test_logical".to_string(), 420),
            ("test_physical".to_string(), 450),
        ])
    );
    assert_eq!(
        Value::Object(slots_json(&published)).to_string(),
        r#"{"postgres_0":510,"postgres_1":400,"postgres_2":380,"postgres_3":300,"test_logical":420,"test_physical":450}"#
    );

    let mut kept = RetainedSlots::default();
    let (retain, expired) = kept.update(&c, &cfg, "postgres-0", &published, 1_000);
    // postgres_3 is also a permanent physical slot: not a retained member slot
    assert_eq!(retain, ["postgres_0", "postgres_1", "postgres_2"]);
    assert!(expired.is_empty());
    // postgres-2 leaves: its name stays for member_slots_ttl, then goes.
    let mut gone = c.clone();
    gone.members.retain(|m| m.name != "postgres-2");
    let mut later = published.clone();
    later.remove("postgres_2");
    let (retain, _) = kept.update(&gone, &cfg, "postgres-0", &later, 1_000 + 1_799_000);
    assert_eq!(retain, ["postgres_0", "postgres_1", "postgres_2"]);
    let (retain, expired) = kept.update(&gone, &cfg, "postgres-0", &later, 1_000 + 1_800_000);
    assert_eq!(retain, ["postgres_0", "postgres_1"]);
    assert_eq!(
        expired,
        ["Replication slot 'postgres_2' for absent cluster member is expired after 1800 sec."]
    );
    // A new leader starts from what the status key says.
    let mut fresh = RetainedSlots::taken_over(&["postgres_9".to_string()], 5);
    let (retain, _) = fresh.update(&gone, &cfg, "postgres-1", &BTreeMap::new(), 6);
    assert_eq!(retain, ["postgres_9"]);

    // member_slots_ttl 0: only permanent slots, a logical one not named like a member.
    let mut cfg0 = cfg.clone();
    cfg0.member_slots_ttl = 0;
    cfg0.permanent.insert(
        "postgres_1".into(),
        PermanentSlot::Logical {
            database: "postgres".into(),
            plugin: "test_decoding".into(),
        },
    );
    let published = published_slots(&c, &cfg0, "postgres-0", &me, &existing, 510);
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        ["postgres_3", "test_logical", "test_physical"]
    );
    let (retain, _) = RetainedSlots::default().update(&c, &cfg0, "postgres-0", &published, 1);
    assert!(retain.is_empty());
}

#[test]
fn copy_only_slots_matching_the_configuration() {
    let c = permanent_topology();
    let wanted = desired_on(&c, "postgres-1", SlotRole::Replica).slots;
    let (copy, warnings) = slots_to_copy(
        &wanted,
        &[
            logical_slot("test_logical", "postgres", "test_decoding", 1),
            logical_slot("postgres_0", "postgres", "test_decoding", 1),
            logical_slot("unrelated", "postgres", "test_decoding", 1),
        ],
    );
    assert_eq!(copy, ["test_logical"]);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("postgres_0"), "{warnings:?}");
}

#[test]
fn status_key_values_stored_as_json_strings_are_read() {
    let st = Status::parse(r#"{"optime":5,"slots":"{\"a\":3}","retain_slots":"[\"a\",\"b\"]"}"#);
    assert_eq!(status_lsn(&st.slots, "a"), 3);
    assert_eq!(st.retain_slots, ["a", "b"]);
    let st = Status::parse(r#"{"optime":5,"slots":[1],"retain_slots":"nonsense"}"#);
    assert!(st.slots.is_empty() && st.retain_slots.is_empty());
}

/// standby_cluster.feature: the standby leader (postgres-1) of `batman1` keeps a slot for
/// its replica and the physical permanent slots meant for standby clusters; the logical
/// slot of the source cluster (`test_logical`, still on its disk) is not kept.
#[test]
fn a_standby_cluster_keeps_only_physical_permanent_slots() {
    let c = cluster(
        "postgres-1",
        &[("postgres-1", "{}", 500), ("postgres-2", "{}", 400)],
        r#"{"optime":500}"#,
        json!({
            "standby_cluster": {"host": "localhost", "port": 5362, "primary_slot_name": "pm_1"},
            "slots": {
                "test_logical": logical(), "pm_1": {"type": "physical"},
                "only_primary": {"type": "physical", "cluster_type": "primary"},
                "only_standby": {"type": "physical", "cluster_type": "standby"}
            }
        }),
    );
    let d = desired_on(&c, "postgres-1", SlotRole::Primary);
    assert_eq!(names(&d), vec!["only_standby", "pm_1", "postgres_2"]);
    let existing = vec![ExistingSlot {
        name: "test_logical".into(),
        slot_type: "logical".into(),
        plugin: Some("test_decoding".into()),
        database: Some("postgres".into()),
        ..ExistingSlot::default()
    }];
    let p = plan(&SlotsInput {
        me: "postgres-1",
        tags: &tags_of(&c, "postgres-1"),
        role: SlotRole::Primary,
        cluster: &c,
        config: &config(&c),
        existing: &existing,
        replay_lsn: Some(500),
        paused: false,
        server_version: 150004,
        recopy: &BTreeSet::new(),
    });
    assert_eq!(
        p.drop.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        vec!["test_logical"]
    );
    assert!(p.create_logical.is_empty() && p.copy_logical.is_empty());
    // Its replica keeps the physical permanent slots too (it may become standby leader).
    let d = desired_on(&c, "postgres-2", SlotRole::Replica);
    assert_eq!(names(&d), vec!["only_standby", "pm_1", "postgres_1"]);
}
