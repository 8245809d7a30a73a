//! Table tests of the method choice and of the command lines, against what Patroni 4.1's
//! `create_replica` / `_custom_bootstrap` produce for the same sections.

use super::*;
use serde_json::json;

fn m(name: &str, section: Value) -> ReplicaMethod {
    let options = match section {
        Value::Object(o) => o,
        Value::Null => Map::new(),
        other => panic!("test section must be a mapping: {other}"),
    };
    ReplicaMethod::new(name, options)
}

fn names(v: &[ReplicaMethod]) -> Vec<&str> {
    v.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn method_choice() {
    let wal_g = m(
        "wal_g",
        json!({"command": "wal-g restore", "no_leader": "1"}),
    );
    let custom = m("custom", json!({"command": "restore.sh"}));
    let off = m("off", json!({"command": "x", "no_leader": false}));
    let zero = m("zero", json!({"command": "x", "no_leader": "0"}));
    let legacy = m("legacy", json!({"command": "x", "no_master": 1}));
    let bb = m("basebackup", json!({"no_leader": true}));
    struct Case {
        name: &'static str,
        configured: Vec<ReplicaMethod>,
        have_source: bool,
        from_leader: bool,
        want: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "nothing configured: basebackup",
            configured: vec![],
            have_source: true,
            from_leader: false,
            want: vec!["basebackup"],
        },
        Case {
            name: "configured order is kept",
            configured: vec![custom.clone(), m("basebackup", Value::Null), wal_g.clone()],
            have_source: true,
            from_leader: false,
            want: vec!["custom", "basebackup", "wal_g"],
        },
        Case {
            name: "reinit --from-leader: basebackup only",
            configured: vec![custom.clone(), wal_g.clone()],
            have_source: true,
            from_leader: true,
            want: vec!["basebackup"],
        },
        Case {
            name: "no source: only no_leader methods",
            configured: vec![custom.clone(), m("basebackup", Value::Null), wal_g.clone()],
            have_source: false,
            from_leader: false,
            want: vec!["wal_g"],
        },
        Case {
            name: "no source, nothing configured: nothing",
            configured: vec![],
            have_source: false,
            from_leader: false,
            want: vec![],
        },
        Case {
            name: "basebackup never works without a source, whatever its section says",
            configured: vec![bb.clone()],
            have_source: false,
            from_leader: false,
            want: vec![],
        },
        Case {
            name: "Python truthiness: '0' is set, false is not",
            configured: vec![off.clone(), zero.clone()],
            have_source: false,
            from_leader: false,
            want: vec!["zero"],
        },
        Case {
            name: "legacy no_master counts",
            configured: vec![legacy.clone()],
            have_source: false,
            from_leader: false,
            want: vec!["legacy"],
        },
    ];
    let mut failures = Vec::new();
    for c in cases {
        let got = methods_to_try(&c.configured, c.have_source, c.from_leader);
        if names(&got) != c.want {
            failures.push(format!(
                "{}: want {:?}, got {:?}",
                c.name,
                c.want,
                names(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert!(can_create_without_leader(&[custom.clone(), wal_g]));
    assert!(!can_create_without_leader(&[custom, off, bb]));
    assert!(!can_create_without_leader(&[]));
}

#[test]
fn replica_method_command_lines() {
    struct Case {
        name: &'static str,
        method: ReplicaMethod,
        want_command: &'static str,
        want_args: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "standard parameters after the section's keys",
            method: m(
                "wal_e",
                json!({"command": "patroni_wale_restore", "envdir": "/etc/env", "threshold_megabytes": 10240, "no_leader": 1}),
            ),
            want_command: "patroni_wale_restore",
            want_args: vec![
                "--envdir=/etc/env",
                "--threshold_megabytes=10240",
                "--no_leader=1",
                "--scope=batman",
                "--role=replica",
                "--datadir=/data/pg",
                "--connstring=dbname=postgres user=replicator host=10.0.0.1 port=5432",
            ],
        },
        Case {
            name: "no section: the method name is the command",
            method: m("restore_me", Value::Null),
            want_command: "restore_me",
            want_args: vec![
                "--scope=batman",
                "--role=replica",
                "--datadir=/data/pg",
                "--connstring=dbname=postgres user=replicator host=10.0.0.1 port=5432",
            ],
        },
        Case {
            name: "a key named like a standard parameter is overwritten in place",
            method: m(
                "x",
                json!({"role": "master", "command": "x.sh", "keep_data": true}),
            ),
            want_command: "x.sh",
            want_args: vec![
                "--role=replica",
                "--keep_data=True",
                "--scope=batman",
                "--datadir=/data/pg",
                "--connstring=dbname=postgres user=replicator host=10.0.0.1 port=5432",
            ],
        },
        Case {
            name: "no_params: no standard parameters, special keys dropped, others kept",
            method: m(
                "y",
                json!({"command": "y.sh --fast", "no_params": true, "no_leader": "1", "keep_data": true, "retries": 3, "flag": null}),
            ),
            want_command: "y.sh --fast",
            want_args: vec!["--retries=3", "--flag=None"],
        },
        Case {
            name: "no_params false is just another key",
            method: m("z", json!({"command": "z", "no_params": false})),
            want_command: "z",
            want_args: vec![
                "--no_params=False",
                "--scope=batman",
                "--role=replica",
                "--datadir=/data/pg",
                "--connstring=dbname=postgres user=replicator host=10.0.0.1 port=5432",
            ],
        },
        Case {
            name: "lists and mappings in Python's repr",
            method: m(
                "l",
                json!({"command": "l", "no_params": 1, "hosts": ["a", "b"], "opts": {"k": 1.5}}),
            ),
            want_command: "l",
            want_args: vec!["--hosts=['a', 'b']", "--opts={'k': 1.5}"],
        },
    ];
    let mut failures = Vec::new();
    for c in cases {
        let got = replica_method_command(
            &c.method,
            "batman",
            "/data/pg",
            "dbname=postgres user=replicator host=10.0.0.1 port=5432",
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        if got.command != c.want_command || got.args != c.want_args {
            failures.push(format!(
                "{}:\n  want {} {:?}\n  got  {} {:?}",
                c.name, c.want_command, c.want_args, got.command, got.args
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let bad = m("bad", json!({"command": ["a", "b"]}));
    let e = replica_method_command(&bad, "s", "/d", "").unwrap_err();
    assert_eq!(
        e.to_string(),
        "postgresql.bad.command: expected a command line string, got ['a', 'b']"
    );
}

#[test]
fn keep_data_rules() {
    assert!(m("a", json!({"keep_data": true})).keep_data());
    assert!(m("a", json!({"keep_data": true})).keep_data_after_failure());
    // Patroni pops keep_data with no_params before the cleanup looks at it.
    assert!(m("a", json!({"keep_data": true, "no_params": true})).keep_data());
    assert!(!m("a", json!({"keep_data": true, "no_params": true})).keep_data_after_failure());
    assert!(!m("a", json!({"keep_data": false})).keep_data());
    assert!(!m("a", Value::Null).keep_data());
}

#[test]
fn custom_bootstrap_command_lines() {
    let section = |v: Value| match v {
        Value::Object(o) => o,
        _ => unreachable!("mapping"),
    };
    // The acceptance suite's backup_restore section (plus the reserved keys).
    let s = section(json!({
        "command": "python3 /x/backup_restore.py --sourcedir=/x/data/basebackup --sleep 0",
        "test-argument": "test-value",
        "recovery_conf": {"recovery_target_action": "promote"},
        "keep_existing_recovery_conf": false,
        "scope": "ignored",
        "datadir": "ignored",
    }));
    let got = custom_bootstrap_command("backup_restore", &s, "batman2", "/data/pg2").unwrap();
    assert_eq!(
        got.command,
        "python3 /x/backup_restore.py --sourcedir=/x/data/basebackup --sleep 0"
    );
    assert_eq!(
        got.args,
        vec![
            "--scope=batman2",
            "--datadir=/data/pg2",
            "--test-argument=test-value"
        ]
    );

    let s =
        section(json!({"command": "restore", "no_params": "yes", "retries": 2, "verbose": true}));
    let got = custom_bootstrap_command("m", &s, "batman", "/d").unwrap();
    assert_eq!(got.args, vec!["--retries=2", "--verbose=True"]);

    let s = section(json!({"command": 5}));
    assert_eq!(
        custom_bootstrap_command("m", &s, "batman", "/d")
            .unwrap_err()
            .to_string(),
        "bootstrap.m.command: expected a command line string, got 5"
    );
}
