//! Byte-exact `list` rendering against patronictl.
//!
//! * `spec_*` fixtures are the examples of /work/shared/spec/ctl.md §2 copied verbatim
//!   (the tsv leader row with its 4 trailing tab-separated empty cells restored, see
//!   the note in the spec under that example).
//! * `*.ref` fixtures were produced by the real patronictl (Patroni 4.1.5, prettytable
//!   3.18, PyYAML) from the matching `*.case.json` with `gen_reference.py`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use warden_core::cluster::{Cluster, KeyValue};
use warden_ctl::render::{list_rows, render_list, Format, ListOptions};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/list")
}

struct Case {
    name: String,
    extended: bool,
    cluster: Cluster,
}

fn load(case: &str) -> Case {
    let raw = std::fs::read_to_string(dir().join(format!("{case}.case.json"))).unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    let kvs: Vec<KeyValue> = v["kvs"]
        .as_object()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, (k, v))| KeyValue {
            key: k.clone(),
            value: v.as_str().unwrap().to_string(),
            mod_revision: i as i64 + 1,
            lease: 0,
        })
        .collect();
    Case {
        name: v["name"].as_str().unwrap().to_string(),
        extended: v["extended"].as_bool().unwrap_or(false),
        cluster: Cluster::from_kvs(&kvs),
    }
}

fn render(case: &str, format: Format) -> String {
    let c = load(case);
    render_list(
        &c.name,
        &c.cluster,
        &ListOptions {
            extended: c.extended,
            format,
        },
    )
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

#[track_caller]
fn assert_text(got: &str, want: &str, what: &str) {
    if got != want {
        panic!("{what} differs\n--- want\n{want}\n--- got\n{got}\n--- want (debug)\n{want:?}\n--- got (debug)\n{got:?}");
    }
}

#[test]
fn spec_pretty_basic() {
    assert_text(
        &render("batman", Format::Pretty),
        &fixture("spec_batman.pretty"),
        "batman pretty",
    );
}

#[test]
fn spec_pretty_extended_columns_tags_and_scheduled_switchover() {
    assert_text(
        &render("batman_extended", Format::Pretty),
        &fixture("spec_batman_extended.pretty"),
        "extended pretty",
    );
}

#[test]
fn spec_pretty_uninitialized_paused() {
    assert_text(
        &render("demo", Format::Pretty),
        &fixture("spec_demo.pretty"),
        "demo pretty",
    );
}

#[test]
fn spec_tsv() {
    assert_text(
        &render("demo", Format::Tsv),
        &fixture("spec_demo.tsv"),
        "demo tsv",
    );
}

#[test]
fn spec_json() {
    // The tags keep the member key's order ({"nofailover": true, "foo": "bar"}).
    assert_text(
        &render("batman_two", Format::Json),
        &fixture("spec_batman_two.json"),
        "json",
    );
}

#[test]
fn spec_yaml_element() {
    let got = render("batman_two", Format::Yaml);
    let part = fixture("spec_batman_two.yaml.part");
    assert!(got.contains(&part), "yaml:\n{got}\nmissing:\n{part}");
    assert!(got.starts_with("- Cluster: batman\n  Host: 127.0.0.1:5432\n"));
    assert!(got.ends_with("nofailover: true\n\n"));
}

#[test]
fn all_cases_match_patronictl_reference() {
    let mut cases: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".case.json").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "{cases:?}");
    for case in &cases {
        for (fmt, f) in [
            ("pretty", Format::Pretty),
            ("tsv", Format::Tsv),
            ("json", Format::Json),
            ("yaml", Format::Yaml),
            ("topology", Format::Topology),
        ] {
            let want = fixture(&format!("{case}.{fmt}.ref"));
            assert_text(&render(case, f), &want, &format!("{case} {fmt}"));
        }
    }
}

#[test]
fn list_rows_are_machine_values() {
    let c = load("batman_extended");
    let rows = list_rows(&c.name, &c.cluster, false);
    assert_eq!(rows.len(), 3);
    let names: Vec<&str> = rows[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Cluster",
            "Member",
            "Host",
            "Role",
            "State",
            "TL",
            "Receive LSN",
            "Receive Lag",
            "Replay LSN",
            "Replay Lag",
            "Pending restart",
            "Pending restart reason",
            "Tags"
        ]
    );
    let get = |r: usize, k: &str| rows[r].iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get(0, "Receive LSN"), Value::from(""));
    assert_eq!(get(1, "Receive Lag"), Value::from(3));
    assert_eq!(get(1, "TL"), Value::from(5));
    assert_eq!(
        get(1, "Tags"),
        serde_json::json!({"nofailover": true, "foo": "bar"})
    );
    assert_eq!(get(2, "Receive LSN"), Value::from("unknown"));
    assert_eq!(get(2, "Replay Lag"), Value::from(""));
    assert_eq!(
        get(2, "Pending restart reason"),
        Value::from("max_connections: 100->101")
    );
    // -e adds every optional column
    let rows = list_rows(&c.name, &c.cluster, true);
    assert!(rows[0].iter().any(|(k, _)| k == "Scheduled restart"));
}
