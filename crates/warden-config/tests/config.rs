//! Loader, env overlay, validation and dynamic-config tests (pure, no processes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use warden_config::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn no_env() -> BTreeMap<String, String> {
    env(&[("HOME", "/home/pg")])
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

fn load_str(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "patroni.yml", text);
    load_with_env(Some(&p), &no_env())
}

fn minimal_text() -> String {
    std::fs::read_to_string(fixture("minimal.yml")).expect("fixture")
}

fn err_of(text: &str) -> String {
    match load_str(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn patroni_sample_postgres0_loads() {
    let c = load_with_env(Some(&fixture("postgres0.yml")), &no_env()).expect("postgres0.yml loads");
    assert_eq!(c.scope, "batman");
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.dcs_base_path(), "/service/batman");
    assert_eq!(c.name, "postgresql0");
    assert_eq!(c.restapi.listen, "127.0.0.1:8008");
    assert_eq!(c.restapi.connect_address, "127.0.0.1:8008");
    assert_eq!(
        c.restapi.listen_host_port(),
        Some(("127.0.0.1".to_string(), 8008))
    );
    assert_eq!(c.etcd3.hosts, vec!["127.0.0.1:2379"]);
    assert_eq!(c.etcd3.protocol, "http");
    let b = c.bootstrap.as_ref().expect("bootstrap");
    assert_eq!(b.dcs["ttl"], json!(30));
    assert_eq!(b.dcs["loop_wait"], json!(10));
    assert_eq!(b.dcs["retry_timeout"], json!(10));
    assert_eq!(b.dcs["maximum_lag_on_failover"], json!(1048576));
    assert_eq!(b.dcs["postgresql"]["use_pg_rewind"], json!(true));
    assert_eq!(
        b.dcs["postgresql"]["pg_hba"],
        json!([
            "host replication replicator 127.0.0.1/32 md5",
            "host all all 0.0.0.0/0 md5"
        ])
    );
    // `parameters:` with only comments below it is null
    assert_eq!(b.dcs["postgresql"]["parameters"], Value::Null);
    assert_eq!(b.initdb, vec!["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(b.method, "initdb");
    assert!(!b.users_present);
    let pg = &c.postgresql;
    assert_eq!(pg.listen, "127.0.0.1:5432");
    assert_eq!(
        pg.listen_addresses_port(),
        Some(("127.0.0.1".to_string(), 5432))
    );
    assert_eq!(pg.data_dir, PathBuf::from("data/postgresql0"));
    assert_eq!(pg.effective_config_dir(), Path::new("data/postgresql0"));
    assert_eq!(pg.pgpass, PathBuf::from("/tmp/pgpass0"));
    assert_eq!(pg.bin_dir, PathBuf::new());
    assert_eq!(pg.binary("pg_ctl"), PathBuf::from("pg_ctl"));
    assert_eq!(pg.database, "postgres");
    assert_eq!(pg.authentication.superuser.username, "postgres");
    assert_eq!(
        pg.authentication.superuser.password.as_deref(),
        Some("zalando")
    );
    assert_eq!(pg.authentication.replication.username, "replicator");
    assert_eq!(pg.authentication.rewind_user().username, "rewind_user");
    assert_eq!(pg.parameters["unix_socket_directories"], json!(".."));
    assert_eq!(pg.create_replica_methods, vec!["basebackup"]);
    assert_eq!(pg.pg_ctl_timeout, 60);
    assert!(pg.use_pg_rewind.is_none());
    assert!(!c.tags.nofailover && !c.tags.nosync && !c.tags.clonefrom);
    assert!(c.tags.to_member_tags().is_empty());
    assert_eq!(c.watchdog.mode, WatchdogMode::Automatic);
    assert_eq!(c.watchdog.device, PathBuf::from("/dev/watchdog"));
    assert_eq!(c.watchdog.safety_margin, 5);
    assert_eq!(c.log.level, "INFO");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.consumed_env_vars().is_empty());
}

#[test]
fn spec_minimal_example_loads() {
    let c = load_with_env(Some(&fixture("minimal.yml")), &no_env()).expect("minimal.yml loads");
    assert_eq!(c.namespace, "/service");
    assert_eq!(c.dcs_base_path(), "/service/batman");
    assert_eq!(
        c.etcd3.hosts,
        vec!["10.0.0.10:2379", "10.0.0.11:2379", "10.0.0.12:2379"]
    );
    let b = c.bootstrap.as_ref().expect("bootstrap");
    assert_eq!(b.initdb, vec!["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(b.pg_hba.len(), 2);
    assert_eq!(
        b.dcs["postgresql"]["parameters"]["max_connections"],
        json!(100)
    );
    assert_eq!(
        c.postgresql.bin_dir,
        PathBuf::from("/usr/lib/postgresql/16/bin")
    );
    assert_eq!(
        c.postgresql.binary("initdb"),
        PathBuf::from("/usr/lib/postgresql/16/bin/initdb")
    );
    assert_eq!(
        c.postgresql
            .authentication
            .rewind
            .as_ref()
            .map(|r| r.username.as_str()),
        Some("rewind_user")
    );
    assert_eq!(c.tags.raw_order.len(), 4);
    let (d, w) = DynamicConfig::from_value(&b.dcs);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (30, 10, 10));
    assert!(d.use_pg_rewind);
    assert!(d.use_slots);
}

#[test]
fn yaml_11_booleans_and_octal() {
    let v = parse_yaml_str(
        "a: on\nb: off\nc: yes\nd: no\ne: 'on'\nf: 0644\ng: ~\nh: \"0644\"\ni: True\nj: OFF\n",
        "test",
    )
    .expect("parses");
    assert_eq!(
        v,
        json!({"a": true, "b": false, "c": true, "d": false, "e": "on", "f": 420,
               "g": null, "h": "0644", "i": true, "j": false})
    );

    let mut text = minimal_text();
    text = text.replace(
        "    maximum_lag_on_failover: 1048576\n",
        "    maximum_lag_on_failover: 1048576\n    synchronous_mode: on\n    failsafe_mode: yes\n    check_timeline: no\n    pause: off\n",
    );
    let c = load_str(&text).expect("loads");
    let dcs = &c.bootstrap.expect("bootstrap").dcs;
    assert_eq!(dcs["synchronous_mode"], json!(true));
    assert_eq!(dcs["failsafe_mode"], json!(true));
    assert_eq!(dcs["check_timeline"], json!(false));
    assert_eq!(dcs["pause"], json!(false));
    // JSON written to the DCS carries real booleans
    let s = serde_json::to_string(dcs).expect("json");
    assert!(s.contains("\"synchronous_mode\":true"), "{s}");
    let (d, _) = DynamicConfig::from_value(dcs);
    assert_eq!(d.synchronous_mode, "on");
    assert!(d.failsafe_mode && !d.check_timeline && !d.pause);
}

#[test]
fn log_mode_octal() {
    let text = format!("{}log:\n  mode: 0644\n  level: debug\n", minimal_text());
    let c = load_str(&text).expect("loads");
    assert_eq!(c.log.mode, Some(0o644));
    assert_eq!(c.log.level, "DEBUG");
}

#[test]
fn env_overrides_file() {
    let e = env(&[
        ("HOME", "/home/pg"),
        ("PATRONI_NAME", "pg-env"),
        ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:9008"),
        ("PATRONI_ETCD3_HOSTS", "'127.0.0.1:2379','127.0.0.1:2380'"),
        ("PATRONI_SUPERUSER_USERNAME", "admin"),
        ("PATRONI_SUPERUSER_PASSWORD", "s3cret"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/data/pg"),
        ("PATRONI_RESTAPI_USERNAME", "api"),
        ("PATRONI_RESTAPI_PASSWORD", "apipw"),
        ("PATRONI_CTL_INSECURE", "yes"),
        ("PATRONI_LOGLEVEL", "warning"),
        ("PATRONI_ETCD3_USERNAME", "etcduser"),
        ("PATRONI_UNRELATED", "x"),
        ("OTHER", "y"),
    ]);
    let c = load_with_env(Some(&fixture("minimal.yml")), &e).expect("loads");
    assert_eq!(c.name, "pg-env");
    assert_eq!(c.restapi.listen, "0.0.0.0:9008");
    assert_eq!(c.etcd3.hosts, vec!["127.0.0.1:2379", "127.0.0.1:2380"]);
    assert_eq!(c.etcd3.username.as_deref(), Some("etcduser"));
    assert_eq!(c.postgresql.authentication.superuser.username, "admin");
    assert_eq!(
        c.postgresql.authentication.superuser.password.as_deref(),
        Some("s3cret")
    );
    // merged, not replaced: replication user still from the file
    assert_eq!(
        c.postgresql.authentication.replication.username,
        "replicator"
    );
    assert_eq!(c.postgresql.data_dir, PathBuf::from("/data/pg"));
    assert_eq!(
        c.restapi.authentication,
        Some(Auth {
            username: "api".into(),
            password: "apipw".into()
        })
    );
    assert_eq!(
        c.ctl_auth().map(|a| a.user_pass()),
        Some("api:apipw".into())
    );
    assert!(c.ctl.insecure);
    assert_eq!(c.log.level, "WARNING");
    let consumed = c.consumed_env_vars();
    for v in [
        "PATRONI_NAME",
        "PATRONI_RESTAPI_LISTEN",
        "PATRONI_ETCD3_HOSTS",
        "PATRONI_SUPERUSER_USERNAME",
        "PATRONI_SUPERUSER_PASSWORD",
        "PATRONI_POSTGRESQL_DATA_DIR",
        "PATRONI_LOGLEVEL",
        "PATRONI_ETCD3_USERNAME",
    ] {
        assert!(consumed.iter().any(|c| c == v), "{v} not in {consumed:?}");
    }
    assert!(!consumed
        .iter()
        .any(|c| c == "PATRONI_UNRELATED" || c == "OTHER"));

    // plain comma form
    let e = env(&[("PATRONI_ETCD3_HOSTS", "h1:2379,h2:2379")]);
    let c = load_with_env(Some(&fixture("minimal.yml")), &e).expect("loads");
    assert_eq!(c.etcd3.hosts, vec!["h1:2379", "h2:2379"]);
    // yaml list form
    let e = env(&[("PATRONI_ETCD3_HOSTS", "[h1:2379, h2]")]);
    let c = load_with_env(Some(&fixture("minimal.yml")), &e).expect("loads");
    assert_eq!(c.etcd3.hosts, vec!["h1:2379", "h2:2379"]);
}

#[test]
fn env_only_configuration() {
    let e = env(&[
        ("HOME", "/home/pg"),
        ("PATRONI_NAME", "n1"),
        ("PATRONI_SCOPE", "s1"),
        ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8008"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.0.0.1:8008"),
        ("PATRONI_ETCD3_HOST", "etcd:2379"),
        ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.0.0.1:5432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/data"),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_USERNAME", "rep"),
        ("PATRONI_REPLICATION_SSLMODE", "require"),
        ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, 127.0.0.1"),
        ("PATRONI_RESTAPI_HTTP_EXTRA_HEADERS", "'X-A': b"),
        ("PATRONI_LOG_FILE_NUM", "0x10"),
    ]);
    let c = load_with_env(None, &e).expect("env-only config loads");
    assert_eq!(c.name, "n1");
    assert_eq!(c.etcd3.hosts, vec!["etcd:2379"]);
    assert_eq!(
        c.postgresql.listen_addresses_port(),
        Some(("0.0.0.0".to_string(), 5432))
    );
    assert_eq!(c.postgresql.pgpass, PathBuf::from("/home/pg/pgpass"));
    assert_eq!(
        c.postgresql.authentication.replication.sslmode.as_deref(),
        Some("require")
    );
    assert_eq!(c.restapi.allowlist, vec!["10.0.0.0/8", "127.0.0.1"]);
    assert_eq!(
        c.restapi.http_extra_headers.get("X-A").map(String::as_str),
        Some("b")
    );
    assert_eq!(c.log.file_num, 16);
}

#[test]
fn patroni_configuration_is_exclusive() {
    let e = env(&[
        ("PATRONI_CONFIGURATION", minimal_text().as_str()),
        ("PATRONI_NAME", "ignored"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/ignored"),
    ]);
    let c = load_with_env(None, &e).expect("loads");
    assert_eq!(c.name, "pg1");
    assert_eq!(
        c.postgresql.data_dir,
        PathBuf::from("/var/lib/postgresql/16/main")
    );
    let consumed = c.consumed_env_vars();
    assert!(consumed.iter().any(|v| v == "PATRONI_CONFIGURATION"));
    assert!(consumed.iter().any(|v| v == "PATRONI_NAME"));

    // a file path wins over PATRONI_CONFIGURATION
    let e = env(&[("PATRONI_CONFIGURATION", "name: other\n")]);
    let c = load_with_env(Some(&fixture("minimal.yml")), &e).expect("loads");
    assert_eq!(c.name, "pg1");

    // bad YAML in the variable
    let e = env(&[("PATRONI_CONFIGURATION", "a: [1,\n")]);
    let err = load_with_env(None, &e).expect_err("bad yaml");
    assert!(
        err.to_string()
            .starts_with("PATRONI_CONFIGURATION: YAML syntax error"),
        "{err}"
    );
}

#[test]
fn directory_merge_in_name_order_with_null_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir, "00-base.yml", &minimal_text());
    write(
        &dir,
        "10-override.yaml",
        "name: pg2\ntags:\n  nosync: true\n  clonefrom: null\n",
    );
    write(&dir, "20-ignored.txt", "name: nope\n");
    write(
        &dir,
        "05-more.yml",
        "name: pg-mid\nrestapi:\n  listen: 0.0.0.0:8009\n",
    );
    let c = load_with_env(Some(dir.path()), &no_env()).expect("dir loads");
    assert_eq!(c.name, "pg2");
    assert_eq!(c.restapi.listen, "0.0.0.0:8009");
    assert_eq!(c.restapi.connect_address, "10.0.0.1:8008");
    assert!(c.tags.nosync);
    assert!(!c.tags.raw_order.contains_key("clonefrom"));
}

#[test]
fn error_malformed_yaml_has_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "bad.yml",
        "scope: x\nname: y\nrestapi:\n  listen: [a\n  b: c\n",
    );
    let e = load_with_env(Some(&p), &no_env()).expect_err("bad yaml");
    let s = e.to_string();
    assert!(
        s.starts_with(&format!(
            "config file {}: YAML syntax error at line",
            p.display()
        )),
        "{s}"
    );
    assert!(
        matches!(e, ConfigError::Yaml { line: Some(_), .. }),
        "{e:?}"
    );

    let e = err_of("scope: x\n name: y\n");
    assert!(e.contains("YAML syntax error at line 2"), "{e}");
}

#[test]
fn error_missing_keys() {
    let t = minimal_text();
    let cases = [
        (
            "  data_dir: /var/lib/postgresql/16/main\n",
            "postgresql.data_dir: missing required key",
        ),
        ("name: pg1\n", "name: missing required key"),
        ("scope: batman\n", "scope: missing required key"),
        (
            "  connect_address: 10.0.0.1:8008\n",
            "restapi.connect_address: missing required key",
        ),
        (
            "  connect_address: 10.0.0.1:5432\n",
            "postgresql.connect_address: missing required key",
        ),
        (
            "    superuser: {username: postgres, password: secret}\n",
            "postgresql.authentication.superuser.username: missing required key",
        ),
        (
            "    replication: {username: replicator, password: rep-pass}\n",
            "postgresql.authentication.replication.username: missing required key",
        ),
    ];
    for (remove, expected) in cases {
        assert!(t.contains(remove), "{remove}");
        let e = err_of(&t.replacen(remove, "", 1));
        assert_eq!(e, expected);
    }
    let no_etcd = t.replace(
        "etcd3:\n  hosts: 10.0.0.10:2379,10.0.0.11:2379,10.0.0.12:2379\n",
        "",
    );
    assert!(err_of(&no_etcd).contains("etcd3"));
    assert_eq!(err_of("etcd3: {host: a}\n"), "name: missing required key");
    assert!(matches!(load_str(""), Err(ConfigError::Empty)));
    assert!(matches!(
        load_str("# only a comment\n"),
        Err(ConfigError::Empty)
    ));
}

#[test]
fn error_wrong_types() {
    let t = minimal_text();
    let e = err_of(&t.replace("    ttl: 30\n", "    ttl: abc\n"));
    assert_eq!(e, "bootstrap.dcs.ttl: expected an integer, got 'abc'");
    let e = err_of(&t.replace("    loop_wait: 10\n", "    loop_wait: [1]\n"));
    assert_eq!(
        e,
        "bootstrap.dcs.loop_wait: expected an integer, got a list"
    );
    let e = err_of(&t.replace("tags: {nofailover: false,", "tags: {nofailover: maybe,"));
    assert_eq!(e, "tags.nofailover: expected a boolean, got 'maybe'");
    let i = t.find("postgresql:\n  listen").expect("pg section");
    let e = err_of(&format!("{}postgresql: 5\n", &t[..i]));
    assert_eq!(e, "postgresql: expected a mapping, got 5");
    let e = err_of(&t.replace("listen: 0.0.0.0:8008", "listen: abc"));
    assert_eq!(e, "restapi.listen: expected host:port, got 'abc'");
    let e = err_of(&t.replace("listen: 0.0.0.0:8008", "listen: 0.0.0.0:99999"));
    assert_eq!(e, "restapi.listen: expected host:port, got '0.0.0.0:99999'");
    let e = err_of(&format!("{t}watchdog:\n  safety_margin: x\n"));
    assert_eq!(e, "watchdog.safety_margin: expected an integer, got 'x'");
    let e = err_of(&t.replace("tags: {nofailover: false,", "tags: {failover_priority: -1,"));
    assert_eq!(e, "tags.failover_priority: must be >= 0, got -1");
    let e = err_of(&t.replace(
        "    superuser: {username: postgres, password: secret}",
        "    superuser: [postgres]",
    ));
    assert_eq!(
        e,
        "postgresql.authentication.superuser: expected a mapping, got a list"
    );
    let e = err_of(&t.replace(
        "      use_pg_rewind: true",
        "      use_pg_rewind: sometimes",
    ));
    assert_eq!(
        e,
        "bootstrap.dcs.postgresql.use_pg_rewind: expected a boolean, got 'sometimes'"
    );
}

#[test]
fn error_forbidden_initdb_option() {
    let t = minimal_text();
    let e = err_of(&t.replace(
        "initdb: [{encoding: UTF8}, data-checksums]",
        "initdb: [{encoding: UTF8}, nosync]",
    ));
    assert_eq!(
        e,
        "bootstrap.initdb: nosync option for initdb is not allowed"
    );
    let e = err_of(&t.replace(
        "initdb: [{encoding: UTF8}, data-checksums]",
        "initdb: {pgdata: /x}",
    ));
    assert_eq!(
        e,
        "bootstrap.initdb: pgdata option for initdb is not allowed"
    );
    // map form, quotes stripped, falsy values skipped
    let c = load_str(&t.replace(
        "initdb: [{encoding: UTF8}, data-checksums]",
        "initdb: {encoding: UTF8, locale: \"'en_US.UTF-8'\", data-checksums: true, nothing: ''}",
    ))
    .expect("loads");
    assert_eq!(
        c.bootstrap.expect("bootstrap").initdb,
        vec![
            "--encoding=UTF8",
            "--locale=en_US.UTF-8",
            "--data-checksums=true"
        ]
    );
}

#[test]
fn basebackup_options_rendered_forbidden_dropped() {
    // basebackup must sit under postgresql: place it right after pgpass
    let t = minimal_text().replace(
        "  pgpass: /tmp/pgpass0\n",
        "  pgpass: /tmp/pgpass0\n  basebackup:\n    - verbose\n    - max-rate: 100M\n    - pgdata: /x\n    - compress: server-gzip\n    - {compress: gzip}\n",
    );
    let c = load_str(&t).expect("loads");
    assert_eq!(
        c.postgresql.basebackup,
        vec!["--verbose", "--max-rate=100M", "--compress=server-gzip"]
    );
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("pgdata option for basebackup is not allowed")));
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("compress option for basebackup is not allowed")));
}

#[test]
fn unsupported_dcs_sections() {
    let t = minimal_text();
    for s in ["consul", "zookeeper", "kubernetes", "raft", "exhibitor"] {
        let e = err_of(&t.replace("etcd3:\n", &format!("{s}:\n")));
        assert_eq!(
            e,
            format!("unsupported DCS section '{s}': Warden supports etcd3 only")
        );
    }
    // consul next to etcd3 is also rejected
    let e = err_of(&format!("{t}consul:\n  host: 127.0.0.1:8500\n"));
    assert_eq!(
        e,
        "unsupported DCS section 'consul': Warden supports etcd3 only"
    );
    // ... but a kubernetes section created only by stray env vars next to etcd3 is a warning
    let e = env(&[("PATRONI_KUBERNETES_POD_IP", "10.1.1.1")]);
    let c = load_with_env(Some(&fixture("minimal.yml")), &e).expect("loads");
    assert!(c.warnings.iter().any(|w| w.contains("kubernetes")));
}

/// The minimal config with its `etcd3:` section replaced by `section` (YAML text).
fn minimal_with_dcs(section: &str) -> String {
    minimal_text().replace(
        "etcd3:\n  hosts: 10.0.0.10:2379,10.0.0.11:2379,10.0.0.12:2379\n",
        section,
    )
}

/// The `etcd3: {...}` an etcd v2 refusal suggests, loaded in place of the v2 section: the
/// hint must be valid YAML that reaches the same endpoints.
fn hosts_of_suggestion(err: &str) -> Vec<String> {
    let start = err.find("(etcd3: {").expect("a suggestion") + 1;
    let suggestion = &err[start..err.len() - 1];
    load_str(&minimal_with_dcs(&format!("{suggestion}\n")))
        .expect("the suggested section loads")
        .etcd3
        .hosts
}

#[test]
fn etcd_v2_section_is_refused_with_the_etcd3_equivalent() {
    // The user's own endpoint keys come back as the etcd3 section to write instead.
    let e = err_of(&minimal_with_dcs("etcd: {host: 127.0.0.1:2379}\n"));
    assert_eq!(
        e,
        "etcd: the etcd v2 API is not supported; use an `etcd3:` section with the same hosts \
         (etcd3: {host: 127.0.0.1:2379})"
    );
    assert_eq!(hosts_of_suggestion(&e), vec!["127.0.0.1:2379"]);
    // A comma-separated string is quoted so the hint is valid YAML; a list stays a list
    // (comma-joined), and the port is kept.
    let e = err_of(&minimal_with_dcs(
        "etcd:\n  hosts: a:2379,b:2379\n  port: 2380\n",
    ));
    assert!(
        e.ends_with("(etcd3: {hosts: 'a:2379,b:2379', port: 2380})"),
        "{e}"
    );
    assert_eq!(hosts_of_suggestion(&e), vec!["a:2379", "b:2379"]);
    let e = err_of(&minimal_with_dcs("etcd:\n  hosts: [a, '[::1]:2381']\n"));
    assert!(e.ends_with("(etcd3: {hosts: 'a,[::1]:2381'})"), "{e}");
    assert_eq!(hosts_of_suggestion(&e), vec!["a:2379", "[::1]:2381"]);
    // A password in a URL never reaches the message (it ends up in logs).
    let e = err_of(&minimal_with_dcs("etcd:\n  url: http://u:s3cret@e:2379\n"));
    assert!(
        e.ends_with("(etcd3: {url: http://u:***@e:2379})") && !e.contains("s3cret"),
        "{e}"
    );
    // Nothing to quote: still says what to do.
    let e = err_of(&minimal_with_dcs("etcd: {protocol: http}\n"));
    assert_eq!(
        e,
        "etcd: the etcd v2 API is not supported; use an `etcd3:` section with the same keys"
    );
    // Next to an etcd3 section (Patroni would use `etcd:`): refused, told to remove it.
    let e = err_of(&format!("{}etcd: {{host: e:2379}}\n", minimal_text()));
    assert_eq!(
        e,
        "etcd: the etcd v2 API is not supported; remove the `etcd:` section and keep the `etcd3:` one"
    );
}

#[test]
fn etcd_v2_env_variables_are_refused_with_the_etcd3_names() {
    let no_dcs = minimal_with_dcs("");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "patroni.yml", &no_dcs);
    let e = load_with_env(
        Some(&p),
        &env(&[
            ("HOME", "/home/pg"),
            ("PATRONI_ETCD_HOST", "127.0.0.1:2379"),
            ("PATRONI_ETCD_PASSWORD", "s3cret"),
        ]),
    )
    .expect_err("etcd v2 variables refused")
    .to_string();
    assert_eq!(
        e,
        "etcd: the etcd v2 API is not supported; use PATRONI_ETCD3_* variables with the same \
         values (PATRONI_ETCD3_HOST=127.0.0.1:2379)"
    );
    // Next to an etcd3 section in the file, stray v2 variables are only a warning.
    let c = load_with_env(
        Some(&fixture("minimal.yml")),
        &env(&[
            ("HOME", "/home/pg"),
            ("PATRONI_ETCD_HOST", "127.0.0.1:2379"),
        ]),
    )
    .expect("loads");
    assert!(
        c.warnings.iter().any(|w| w.contains("'etcd'")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn etcd_v2_section_is_one_validation_problem() {
    // --validate-config: one problem about `etcd`, not a second "etcd3 missing" one.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "patroni.yml",
        &minimal_with_dcs("etcd: {host: 127.0.0.1:2379}\n"),
    );
    let problems = validate_file_with_env(&p, &no_env());
    let dcs: Vec<String> = problems
        .iter()
        .filter(|p| p.path.starts_with("etcd"))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        dcs,
        vec![
            "etcd: the etcd v2 API is not supported; use an `etcd3:` section with the same \
              hosts (etcd3: {host: 127.0.0.1:2379})"
                .to_string()
        ],
        "{problems:?}"
    );
}

#[test]
fn unknown_sections_are_warnings() {
    let t = format!("{}foo:\n  bar: 1\nttl: 50\n", minimal_text());
    let c = load_str(&t).expect("loads");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("unknown section 'foo'")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("ttl: dynamic-only")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn legacy_shapes() {
    let t = concat!(
        "scope: s\nrestapi: {listen: ':8008', connect_address: 'h:8008'}\netcd3: {host: e}\n",
        "postgresql:\n  name: legacy\n  listen: '*:5432'\n  connect_address: h:5432\n  data_dir: /d\n",
        "  superuser: {username: su, password: p}\n  replication: {username: rep, password: r}\n"
    );
    let c = load_str(t).expect("legacy loads");
    assert_eq!(c.name, "legacy");
    assert_eq!(c.postgresql.authentication.superuser.username, "su");
    assert_eq!(c.postgresql.authentication.replication.username, "rep");
    assert_eq!(c.etcd3.hosts, vec!["e:2379"]);
}

#[test]
fn etcd3_endpoint_forms() {
    let base = minimal_text();
    let with = |etcd: &str| {
        let t = base.replace(
            "etcd3:\n  hosts: 10.0.0.10:2379,10.0.0.11:2379,10.0.0.12:2379\n",
            etcd,
        );
        load_str(&t)
    };
    let c = with("etcd3:\n  url: https://u:pw@etcd.example:2381\n").expect("url");
    assert_eq!(c.etcd3.hosts, vec!["etcd.example:2381"]);
    assert_eq!(c.etcd3.protocol, "https");
    assert_eq!(c.etcd3.username.as_deref(), Some("u"));
    assert_eq!(c.etcd3.password.as_deref(), Some("pw"));
    let c = with("etcd3:\n  hosts: [a, 'b:1', '[::1]:2']\n  port: 3000\n").expect("list");
    assert_eq!(c.etcd3.hosts, vec!["a:3000", "b:1", "[::1]:2"]);
    let c = with("etcd3:\n  proxy: http://p:2379\n").expect("proxy");
    assert!(c.etcd3.use_proxies);
    let c = with("etcd3:\n  srv: example.com\n").expect("srv");
    assert!(c.etcd3.hosts.is_empty());
    assert_eq!(c.etcd3.srv.as_deref(), Some("example.com"));
    let e = with("etcd3:\n  protocol: https\n").expect_err("no endpoints");
    assert!(e.to_string().starts_with("etcd3: no endpoints"), "{e}");
    let e = with("etcd3:\n  hosts: 'a:xx'\n").expect_err("bad port");
    assert_eq!(e.to_string(), "etcd3.hosts: expected host:port, got 'a:xx'");
}

#[test]
fn tags_member_filtering() {
    let t = minimal_text().replace(
        "tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}",
        "tags:\n  zone: a\n  nofailover: false\n  failover_priority: 3\n  clonefrom: true\n  noloadbalance: false\n  nosync: false\n  nostream: false\n  replicatefrom: pg2\n  rack: 7\n",
    );
    let c = load_str(&t).expect("loads");
    let tags = c.tags.to_member_tags();
    let keys: Vec<&str> = tags.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "zone",
            "nofailover",
            "failover_priority",
            "clonefrom",
            "replicatefrom",
            "rack"
        ]
    );
    assert_eq!(tags["nofailover"], json!(false));
    assert_eq!(
        c.tags.custom.keys().collect::<Vec<_>>(),
        vec!["zone", "rack"]
    );
    assert!(!c.tags.effective_nofailover());
    assert_eq!(c.tags.effective_failover_priority(), 3);

    let t2 = minimal_text().replace(
        "tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}",
        "tags: {nosync: false, sync_priority: 0, failover_priority: 0, nostream: yes}",
    );
    let c = load_str(&t2).expect("loads");
    let tags = c.tags.to_member_tags();
    assert_eq!(
        tags,
        serde_json::from_str::<serde_json::Map<String, Value>>(
            r#"{"nosync":false,"sync_priority":0,"failover_priority":0,"nostream":true}"#
        )
        .expect("json")
    );
    assert!(c.tags.effective_nofailover());
    assert!(!c.tags.effective_nosync()); // nosync given explicitly wins
    assert_eq!(c.tags.effective_failover_priority(), 0);
}

#[test]
fn dynamic_config_validation_rules() {
    // defaults
    let (d, w) = DynamicConfig::from_value(&json!({}));
    assert!(w.is_empty());
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (30, 10, 10));
    assert_eq!(d.maximum_lag_on_failover, 1048576);
    assert_eq!(d.primary_start_timeout, 300);
    assert_eq!(d.member_slots_ttl, 1800);
    assert_eq!(d.synchronous_mode, "off");
    assert!(d.use_slots && !d.use_pg_rewind && !d.pause);

    // rule 1: ttl 10 → 20; then rule 2 (1 + 2*10 > 20): loop_wait 1, retry (20-1)//2 = 9
    let (d, w) = DynamicConfig::from_value(&json!({"ttl": 10}));
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (20, 1, 9));
    assert!(
        w.iter()
            .any(|m| m.contains("ttl=10 can't be smaller than 20")),
        "{w:?}"
    );
    assert!(w.iter().any(|m| m.contains("Violated the rule")), "{w:?}");

    // rule 2: retry_timeout too big
    let (d, _) =
        DynamicConfig::from_value(&json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 20}));
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (30, 1, 14));

    // rule 3: loop_wait reduced
    let (d, w) =
        DynamicConfig::from_value(&json!({"ttl": 30, "loop_wait": 15, "retry_timeout": 10}));
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (30, 10, 10));
    assert_eq!(w.len(), 1, "{w:?}");

    // minimums for loop_wait / retry_timeout
    let (d, _) = DynamicConfig::from_value(&json!({"loop_wait": 0, "retry_timeout": 1}));
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (30, 1, 3));

    // junk values → defaults with warnings; aliases and strings
    let (d, w) = DynamicConfig::from_value(&json!({
        "ttl": "abc", "master_start_timeout": "120", "synchronous_mode": "quorum",
        "member_slots_ttl": "10min", "pause": true,
        "postgresql": {"use_slots": false, "parameters": {"max_connections": 200}, "pg_hba": ["local all all trust"]}
    }));
    assert_eq!(d.ttl, 30);
    assert!(w.iter().any(|m| m.starts_with("ttl:")), "{w:?}");
    assert_eq!(d.primary_start_timeout, 120);
    assert_eq!(d.synchronous_mode, "quorum");
    assert_eq!(d.member_slots_ttl, 600);
    assert!(d.pause && !d.use_slots);
    assert_eq!(d.parameters["max_connections"], json!(200));
    assert_eq!(d.pg_hba, Some(vec!["local all all trust".to_string()]));

    // huge values must not overflow
    let (d, _) = DynamicConfig::from_value(
        &json!({"ttl": i64::MAX, "retry_timeout": i64::MAX, "loop_wait": i64::MIN}),
    );
    assert!(d.loop_wait + 2 * d.retry_timeout <= d.ttl);
    let (_, w) = DynamicConfig::from_value(&json!([1, 2]));
    assert_eq!(w.len(), 1);
}

#[test]
fn effective_parameters_merge() {
    let (d, _) = DynamicConfig::from_value(&json!({"postgresql": {"parameters": {
        "max_connections": 200, "wal_log_hints": true, "shared_buffers": "1GB",
        "work_mem": "4MB", "port": 5433, "hot_standby": "on", "gone": "x"
    }}}));
    let t = minimal_text().replace(
        "  pgpass: /tmp/pgpass0\n",
        "  pgpass: /tmp/pgpass0\n  parameters:\n    max_connections: 50\n    shared_buffers: 2GB\n    unix_socket_directories: /tmp\n    checkpoint_timeout: 300\n    gone: null\n",
    );
    let c = load_str(&t).expect("loads");
    assert!(
        c.warnings.iter().any(|w| w.contains("max_connections")),
        "{:?}",
        c.warnings
    );
    let eff = effective_postgresql_parameters(&d, &c.postgresql);
    let expected: BTreeMap<String, String> = [
        ("max_connections", "200"),
        ("wal_log_hints", "on"),
        ("shared_buffers", "2GB"),
        ("work_mem", "4MB"),
        ("hot_standby", "on"),
        ("unix_socket_directories", "/tmp"),
        ("checkpoint_timeout", "300"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(eff, expected);
}

#[test]
fn validate_file_reports_all_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = minimal_text()
        .replace("    ttl: 30\n", "    ttl: 10\n")
        .replace("    loop_wait: 10\n", "    loop_wait: 0\n")
        .replace(
            "connect_address: 10.0.0.1:8008",
            "connect_address: 127.0.0.1:8008",
        )
        .replace("listen: 0.0.0.0:5432", "listen: 0.0.0.0:nope")
        .replace("  data_dir: /var/lib/postgresql/16/main\n", "")
        .replace("tags: {nofailover: false,", "tags: {nofailover: maybe,");
    let p = write(&dir, "bad.yml", &bad);
    let problems = validate_file_with_env(&p, &no_env());
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "bootstrap.dcs.ttl",
        "bootstrap.dcs.loop_wait",
        "restapi.connect_address",
        "postgresql.listen",
        "postgresql.data_dir",
        "tags.nofailover",
    ] {
        assert!(paths.contains(&expected), "{expected} not in {problems:#?}");
    }
    let ttl = problems
        .iter()
        .find(|p| p.path == "bootstrap.dcs.ttl")
        .expect("ttl");
    assert_eq!(ttl.message, "10 is below the minimum 20");
    assert_eq!(
        ttl.to_string(),
        "bootstrap.dcs.ttl: 10 is below the minimum 20"
    );
    // warden.min_ttl moves that minimum.
    let p = write(&dir, "short.yml", &format!("{bad}warden:\n  min_ttl: 8\n"));
    let problems = validate_file_with_env(&p, &no_env());
    assert!(
        problems.iter().all(|p| p.path != "bootstrap.dcs.ttl"),
        "{problems:#?}"
    );
    let p = write(&dir, "short.yml", &format!("{bad}warden:\n  min_ttl: 12\n"));
    let problems = validate_file_with_env(&p, &no_env());
    let ttl = problems
        .iter()
        .find(|p| p.path == "bootstrap.dcs.ttl")
        .expect("ttl");
    assert_eq!(ttl.message, "10 is below the minimum 12");
    // The shortest lease: ttl 4 with retry_timeout 1 validates under min_ttl 4 only
    // (Patroni's retry_timeout minimum of 3 holds from min_ttl 8 up).
    let shortest = minimal_text()
        .replace("    ttl: 30\n", "    ttl: 4\n")
        .replace("    loop_wait: 10\n", "    loop_wait: 1\n")
        .replace("    retry_timeout: 10\n", "    retry_timeout: 1\n");
    let timing = |min_ttl: u64| -> Vec<String> {
        let p = write(
            &dir,
            "shortest.yml",
            &format!("{shortest}warden:\n  min_ttl: {min_ttl}\n"),
        );
        validate_file_with_env(&p, &no_env())
            .into_iter()
            .filter(|p| p.path.starts_with("bootstrap.dcs."))
            .map(|p| p.to_string())
            .collect()
    };
    assert!(timing(4).is_empty(), "{:?}", timing(4));
    assert_eq!(
        timing(8),
        vec![
            "bootstrap.dcs.ttl: 4 is below the minimum 8".to_string(),
            "bootstrap.dcs.retry_timeout: 1 is below the minimum 3".to_string()
        ]
    );

    // a good config: only environment-dependent problems (binaries) may remain
    let good = minimal_text().replace(
        "/usr/lib/postgresql/16/bin",
        dir.path().to_str().expect("utf8"),
    );
    for b in [
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
        "postgres",
        "pg_isready",
    ] {
        write(&dir, b, "");
    }
    let p = write(&dir, "good.yml", &good);
    let problems = validate_file_with_env(&p, &no_env());
    assert!(problems.is_empty(), "{problems:#?}");

    // yaml error → a single problem naming the file
    let p = write(&dir, "broken.yml", "a: [\n");
    let problems = validate_file_with_env(&p, &no_env());
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].message.contains("YAML syntax error at line"),
        "{problems:?}"
    );

    // missing file
    let problems = validate_file_with_env(&dir.path().join("nope.yml"), &no_env());
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].message.starts_with("cannot read"),
        "{problems:?}"
    );
}

#[test]
fn watchdog_modes() {
    for (m, expected) in [
        ("off", WatchdogMode::Off),
        ("'off'", WatchdogMode::Off),
        ("disabled", WatchdogMode::Off),
        ("required", WatchdogMode::Required),
        ("require", WatchdogMode::Required),
        ("auto", WatchdogMode::Automatic),
        ("Automatic", WatchdogMode::Automatic),
        ("bogus", WatchdogMode::Off),
    ] {
        let c = load_str(&format!(
            "{}watchdog:\n  mode: {m}\n  safety_margin: -1\n",
            minimal_text()
        ))
        .expect("loads");
        assert_eq!(c.watchdog.mode, expected, "{m}");
        assert_eq!(c.watchdog.safety_margin, -1);
    }
}

#[test]
fn watchdog_drivers() {
    assert_eq!(
        load_str(&minimal_text()).expect("loads").watchdog.driver,
        WatchdogDriver::Linux
    );
    for (d, expected) in [
        ("default", WatchdogDriver::Linux),
        ("testing", WatchdogDriver::Testing),
        ("bsd", WatchdogDriver::Unsupported("bsd".into())),
    ] {
        let c = load_str(&format!(
            "{}watchdog:\n  mode: required\n  driver: {d}\n  device: /tmp/wd.fifo\n",
            minimal_text()
        ))
        .expect("loads");
        assert_eq!(c.watchdog.driver, expected, "{d}");
        assert_eq!(c.watchdog.device, PathBuf::from("/tmp/wd.fifo"));
    }
}

#[test]
fn util_parsers() {
    assert_eq!(parse_int("0644"), Some(420));
    assert_eq!(parse_int(" 10 "), Some(10));
    assert_eq!(parse_int("0x1f"), Some(31));
    assert_eq!(parse_int("1.6"), Some(2));
    assert_eq!(parse_int("10MB"), None);
    assert_eq!(parse_int(""), None);
    assert_eq!(parse_bool("YES"), Some(true));
    assert_eq!(parse_bool("0"), Some(false));
    assert_eq!(parse_bool("maybe"), None);
    assert_eq!(
        split_host_port("[::1]:5432", None),
        Some(("::1".into(), 5432))
    );
    assert_eq!(
        split_host_port("a,b:5432", None),
        Some(("a,b".into(), 5432))
    );
    assert_eq!(split_host_port("abc", None), None);
    assert_eq!(
        split_host_port("abc", Some(5432)),
        Some(("abc".into(), 5432))
    );
    assert_eq!(unquote("'a b'"), "a b");
    assert_eq!(unquote("a b"), "a b");
    assert_eq!(unquote("\"x"), "\"x");
    assert_eq!(parse_duration_secs(&json!("30min")), Some(1800));
    assert_eq!(parse_duration_secs(&json!(45)), Some(45));
    assert_eq!(parse_duration_secs(&json!("2h")), Some(7200));
    assert_eq!(parse_duration_secs(&json!("soon")), None);
}

/// Deterministic xorshift so the test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn no_panic_on_garbled_input() {
    let samples = [
        std::fs::read_to_string(fixture("postgres0.yml")).expect("fixture"),
        minimal_text(),
    ];
    let junk: &[&str] = &[
        ":", "-", "[", "]", "{", "}", "'", "\"", "\n", " ", "  ", "#", "&a", "*a", "!!int", "~",
        "on", "0644", "\t", "|", ">", "%", "@", ",", "\u{0}", "é", "<<: *a", "? ",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.yml");
    let mut cases = 0;
    for s in &samples {
        let chars: Vec<char> = s.chars().collect();
        // every truncation point (step 7 to keep it fast)
        for cut in (0..chars.len()).step_by(7) {
            let t: String = chars[..cut].iter().collect();
            std::fs::write(&path, &t).expect("write");
            let _ = load_with_env(Some(&path), &no_env());
            let _ = validate_file_with_env(&path, &no_env());
            cases += 1;
        }
        // random garbling
        for _ in 0..250 {
            let mut t = chars.clone();
            for _ in 0..(1 + rng.below(6)) {
                let pos = rng.below(t.len());
                match rng.below(3) {
                    0 => {
                        t.remove(pos.min(t.len().saturating_sub(1)));
                    }
                    1 => {
                        let j = junk[rng.below(junk.len())];
                        for (k, c) in j.chars().enumerate() {
                            t.insert((pos + k).min(t.len()), c);
                        }
                    }
                    _ => {
                        let n = t.len();
                        if n > 0 {
                            let other = rng.below(n);
                            t.swap(pos.min(n - 1), other.min(n - 1));
                        }
                    }
                }
            }
            let text: String = t.into_iter().collect();
            let _ = parse_yaml_str(&text, "fuzz");
            std::fs::write(&path, &text).expect("write");
            if let Ok(c) = load_with_env(Some(&path), &no_env()) {
                let _ = c.tags.to_member_tags();
                if let Some(b) = &c.bootstrap {
                    let (d, _) = DynamicConfig::from_value(&b.dcs);
                    let _ = effective_postgresql_parameters(&d, &c.postgresql);
                }
            }
            let e = env(&[("PATRONI_CONFIGURATION", text.as_str())]);
            let _ = load_with_env(None, &e);
            cases += 1;
        }
    }
    // garbled env values
    for v in [
        "", "[", "{", "'a", "-", "a: b: c", "[1, {]", "0x", "--", "\u{0}",
    ] {
        for k in [
            "PATRONI_ETCD3_HOSTS",
            "PATRONI_RESTAPI_ALLOWLIST",
            "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS",
            "PATRONI_LOG_MODE",
            "PATRONI_ETCD3_PORT",
            "PATRONI_KUBERNETES_LABELS",
            "PATRONI_CTL_INSECURE",
        ] {
            let _ = load_with_env(Some(&fixture("minimal.yml")), &env(&[(k, v)]));
        }
    }
    assert!(cases > 400);
}

#[test]
fn warden_min_ttl_lowers_the_ttl_floor_within_bounds() {
    // Default: Patroni's floor.
    let c = load_str(&minimal_text()).expect("loads");
    assert_eq!(c.warden.min_ttl, 20);

    let c = load_str(&format!("{}warden:\n  min_ttl: 8\n", minimal_text())).expect("loads");
    assert_eq!(c.warden.min_ttl, 8);
    assert!(
        c.warnings.iter().all(|w| !w.contains("warden")),
        "{:?}",
        c.warnings
    );

    // Out of range or not an integer: a load error naming the key.
    for bad in ["3", "21", "0"] {
        let e = err_of(&format!("{}warden:\n  min_ttl: {bad}\n", minimal_text()));
        assert!(
            e.contains("warden.min_ttl") && e.contains("between 4 and 20"),
            "{e}"
        );
    }
    let e = err_of(&format!("{}warden:\n  min_ttl: short\n", minimal_text()));
    assert!(e.contains("warden.min_ttl") && e.contains("integer"), "{e}");

    // Unknown keys in the section are named.
    let c = load_str(&format!("{}warden:\n  min_tll: 8\n", minimal_text())).expect("loads");
    assert!(
        c.warnings.iter().any(|w| w.contains("warden.min_tll")),
        "{:?}",
        c.warnings
    );

    // The dynamic config honours the floor it is given, and still applies rules 2 and 3.
    let (d, w) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 8, "loop_wait": 2, "retry_timeout": 3}),
        8,
    );
    assert_eq!(
        (d.ttl, d.loop_wait, d.retry_timeout, d.min_ttl),
        (8, 2, 3, 8)
    );
    assert!(w.is_empty(), "{w:?}");
    let (d, w) = DynamicConfig::from_value_with_min_ttl(&json!({"ttl": 5}), 8);
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (8, 1, 3));
    assert!(
        w.iter()
            .any(|m| m.contains("ttl=5 can't be smaller than 8")),
        "{w:?}"
    );
    // The shortest lease: ttl 4 takes retry_timeout 1 (Patroni's minimum of 3 applies
    // only from min_ttl 8) and loop_wait 1, without a warning.
    let c = load_str(&format!("{}warden:\n  min_ttl: 4\n", minimal_text())).expect("loads");
    assert_eq!(c.warden.min_ttl, 4);
    let (d, w) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 1}),
        4,
    );
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (4, 1, 1));
    assert!(w.is_empty(), "{w:?}");
    // With min_ttl 8 a retry_timeout of 1 is still raised to Patroni's 3.
    let (d, _) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 8, "loop_wait": 2, "retry_timeout": 1}),
        8,
    );
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (8, 2, 3));
    // Patroni's rule holds (2 + 2*1 <= 4) but the renewal would land on the fence
    // deadline (ttl 4 - margin 1 s): Warden's rule lowers loop_wait to 1.
    let (d, w) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 4, "loop_wait": 2, "retry_timeout": 1}),
        4,
    );
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (4, 1, 1));
    assert!(
        w.iter().any(|m| m.contains("Violated Warden's rule")
            && m.contains("Adjusting loop_wait to 1 and retry_timeout to 1")),
        "{w:?}"
    );
    // Unset timings at ttl 4: Patroni's rules shorten them (retry_timeout to (4-1)/2).
    let (d, _) = DynamicConfig::from_value_with_min_ttl(&json!({"ttl": 4}), 4);
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (4, 1, 1));
    // ttl 5, retry_timeout 2 (Patroni's rule holds: 1 + 4 <= 5): 1 + 2 + 1 > 5 - 1.25.
    let (d, w) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 5, "loop_wait": 1, "retry_timeout": 2}),
        4,
    );
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (5, 1, 1));
    assert!(!w.is_empty());
    // ttl 3 is raised to the floor.
    let (d, _) = DynamicConfig::from_value_with_min_ttl(
        &json!({"ttl": 3, "loop_wait": 1, "retry_timeout": 1}),
        4,
    );
    assert_eq!((d.ttl, d.loop_wait, d.retry_timeout), (4, 1, 1));
    // primary_race_backoff is implemented (ha-loop.md U1): no warning.
    let (d, w) = DynamicConfig::from_value(&json!({"primary_race_backoff": 10}));
    assert_eq!(d.primary_race_backoff, 10);
    assert!(
        !w.iter().any(|m| m.contains("primary_race_backoff")),
        "{w:?}"
    );
    // Settings Warden does not honour are named, not silently ignored.
    let (_, w) = DynamicConfig::from_value(&json!({
        "synchronous_mode": "quorum", "failsafe_mode": true,
        "standby_cluster": {"host": "10.0.0.9"}, "slots": {"s1": {"type": "physical"}}
    }));
    assert!(
        !w.iter().any(|m| m.contains("synchronous_mode")),
        "quorum commit is implemented: {w:?}"
    );
    assert!(
        !w.iter().any(|m| m.contains("slots")),
        "permanent slots are implemented: {w:?}"
    );
    assert!(
        !w.iter().any(|m| m.contains("standby_cluster")),
        "standby clusters are implemented: {w:?}"
    );
    // A standby_cluster value of the wrong type is named (and then ignored).
    let (_, w) = DynamicConfig::from_value(&json!({
        "standby_cluster": {"host": "h", "port": "fifty", "create_replica_methods": [1]}
    }));
    assert!(
        w.iter().any(|m| m.starts_with("standby_cluster.port: ")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.starts_with("standby_cluster.create_replica_methods: ")),
        "{w:?}"
    );
    let (_, w) = DynamicConfig::from_value(&json!({"standby_cluster": [1]}));
    assert!(
        w.iter()
            .any(|m| m.starts_with("standby_cluster: expected a mapping")),
        "{w:?}"
    );
    assert!(
        !w.iter().any(|m| m.contains("failsafe_mode")),
        "failsafe mode is implemented: {w:?}"
    );
    // Without the opt-in, Patroni's behaviour.
    let (d, _) = DynamicConfig::from_value(&json!({"ttl": 8, "loop_wait": 2, "retry_timeout": 3}));
    assert_eq!((d.ttl, d.min_ttl), (20, 20));
}

#[test]
fn yaml_booleans_are_exactly_pyyamls() {
    // Expected: `python3 -c "import yaml, json; print(json.dumps(yaml.safe_load(doc)))"`,
    // except the key `on`, which PyYAML makes the boolean key True (JSON: "true").
    let doc = r#"
a: [y, Y, n, N, yes, Yes, YES, yEs, no, No, NO, nO, on, On, ON, oN, off, Off, OFF, true, True, TRUE, false, False, FALSE, 'yes', "n", ~, 0644, 1_000]
y: 1
n: {on: x, 'off': y}
name: n
password: y
nested: [{k: n}, [Y, yes]]
"#;
    let expected: Value = serde_json::from_str(
        r#"{"a": ["y", "Y", "n", "N", true, true, true, "yEs", false, false, false, "nO", true, true, true, "oN", false, false, false, true, true, true, false, false, false, "yes", "n", null, 420, 1000], "y": 1, "n": {"on": "x", "off": "y"}, "name": "n", "password": "y", "nested": [{"k": "n"}, ["Y", true]]}"#,
    )
    .expect("json");
    assert_eq!(parse_yaml_str(doc, "test").expect("parses"), expected);

    // A member called `n` with a replication password `y` loads, as with Patroni.
    let text = minimal_text()
        .replace("name: pg1", "name: n")
        .replace("password: rep-pass", "password: y");
    assert!(text.contains("name: n\n") && text.contains("password: y}"));
    let c = load_str(&text).expect("loads");
    assert_eq!(c.name, "n");
}

/// `minimal.yml` with `extra` appended under `postgresql:` (indented two spaces).
fn with_postgresql(extra: &str) -> String {
    let t = minimal_text();
    let lines: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    t.replace(
        "  bin_dir: /usr/lib/postgresql/16/bin\n",
        &format!("  bin_dir: /usr/lib/postgresql/16/bin\n{lines}"),
    )
}

#[test]
fn replica_method_sections_are_kept_verbatim() {
    let c = load_str(&with_postgresql(
        "create_replica_methods: [wal_e, basebackup, bare]\n\
         wal_e:\n  command: patroni_wale_restore --x 'a b'\n  no_leader: '1'\n  keep_data: true\n  envdir: /etc/wal-e\n  threshold_megabytes: 10240\n",
    ))
    .expect("loads");
    let pg = &c.postgresql;
    assert_eq!(
        pg.create_replica_methods,
        vec!["wal_e", "basebackup", "bare"]
    );
    let sec = &pg.replica_method_sections["wal_e"];
    // Keys in file order, values as written (they become --key=value arguments).
    assert_eq!(
        sec.keys().collect::<Vec<_>>(),
        vec![
            "command",
            "no_leader",
            "keep_data",
            "envdir",
            "threshold_megabytes"
        ]
    );
    assert_eq!(sec["no_leader"], json!("1"));
    assert_eq!(sec["threshold_megabytes"], json!(10240));
    // A method without a section runs its name; basebackup has no section here.
    assert_eq!(pg.replica_method_sections.len(), 1);

    // The legacy key and a single string.
    let c = load_str(&with_postgresql(
        "create_replica_method: wal_g\nwal_g: {command: wal-g-restore, no_master: 1}\n",
    ))
    .expect("loads");
    assert_eq!(c.postgresql.create_replica_methods, vec!["wal_g"]);
    assert_eq!(
        c.postgresql.replica_method_sections["wal_g"]["no_master"],
        json!(1)
    );
}

#[test]
fn replica_method_errors_name_the_key() {
    let e = err_of(&with_postgresql("create_replica_methods: [m]\nm: [a]\n"));
    assert_eq!(e, "postgresql.m: expected a mapping, got a list");
    let e = err_of(&with_postgresql(
        "create_replica_methods: [m]\nm: {command: [a, b]}\n",
    ));
    assert_eq!(
        e,
        "postgresql.m.command: expected a command line string, got a list"
    );
    let e = err_of(&with_postgresql(
        "create_replica_methods: [m]\nm: {command: \"restore 'x\"}\n",
    ));
    assert!(e.starts_with("postgresql.m.command: "), "{e}");
    assert!(e.contains("unbalanced quotes"), "{e}");
}

#[test]
fn custom_bootstrap_section() {
    let t = minimal_text().replace(
        "  initdb: [{encoding: UTF8}, data-checksums]\n",
        "  method: backup_restore\n  backup_restore:\n    command: python3 /x/backup_restore.py --sourcedir=/x/basebackup\n    test-argument: test-value\n    keep_existing_recovery_conf: 'no'\n    recovery_conf:\n      recovery_target_action: promote\n      restore_command: cp /arch/%f %p\n",
    );
    let c = load_str(&t).expect("loads");
    let b = c.bootstrap.expect("bootstrap");
    assert_eq!(b.method, "backup_restore");
    let custom = b.custom.expect("custom bootstrap");
    assert_eq!(custom.name, "backup_restore");
    assert_eq!(custom.options["test-argument"], json!("test-value"));
    let rc = custom.recovery_conf.expect("recovery_conf");
    assert_eq!(rc["recovery_target_action"], json!("promote"));
    // Python truthiness, as Patroni: the string 'no' is set.
    assert!(custom.keep_existing_recovery_conf);

    let e = err_of(&minimal_text().replace(
        "  initdb: [{encoding: UTF8}, data-checksums]\n",
        "  method: restore\n  restore: {command: x, recovery_conf: [a]}\n",
    ));
    assert_eq!(
        e,
        "bootstrap.restore.recovery_conf: expected a mapping, got a list"
    );
    let e = err_of(&minimal_text().replace(
        "  initdb: [{encoding: UTF8}, data-checksums]\n",
        "  method: restore\n  restore: {keep_existing_recovery_conf: true}\n",
    ));
    assert_eq!(e, "bootstrap.restore.command: missing required key");
    let c = load_str(&minimal_text()).expect("loads");
    assert!(c.bootstrap.expect("bootstrap").custom.is_none());
}

#[test]
fn warden_pgbouncer_setting_loads_and_rejects_mistakes() {
    let c = load_str(&minimal_text()).expect("loads");
    assert_eq!(c.warden.pgbouncer, None);

    let text = format!(
        "{}warden:\n  pgbouncer:\n    admin:\n      - host=127.0.0.1 port=6432 user=adm password=s3cret dbname=pgbouncer\n    pause_timeout: 2.5\n    haproxy_stats: 'http://127.0.0.1:7000/stats;csv'\n    haproxy_backend: primary\n",
        minimal_text()
    );
    let c = load_str(&text).expect("loads");
    let p = c.warden.pgbouncer.clone().expect("pgbouncer");
    assert_eq!(p.admin.len(), 1);
    assert_eq!(p.pause_timeout_ms, 2500);
    assert_eq!(
        p.resume_timeout_ms,
        warden_config::DEFAULT_RESUME_TIMEOUT_MS
    );
    assert_eq!(p.haproxy_backend.as_deref(), Some("primary"));
    assert!(
        c.warnings.iter().all(|w| !w.contains("warden")),
        "{:?}",
        c.warnings
    );
    // The password never shows in Debug output (logs of the config).
    assert!(!format!("{p:?}").contains("s3cret"), "{p:?}");

    // One string is a list of one.
    let c = load_str(&format!(
        "{}warden:\n  pgbouncer:\n    admin: postgresql://adm@127.0.0.1:6432/pgbouncer\n",
        minimal_text()
    ))
    .expect("loads");
    assert_eq!(c.warden.pgbouncer.expect("pgbouncer").admin.len(), 1);

    for (yaml, needle) in [
        ("    pause_timeout: 5\n", "warden.pgbouncer.admin: missing"),
        ("    admin: []\n", "at least one"),
        (
            "    admin: [host=h password=s3cret dbname=app]\n",
            "warden.pgbouncer.admin[0]: 'host=h password=*** dbname=app' names database 'app'",
        ),
        ("    admin: [host=h dbname=pgbouncer]\n    pause_timeout: 0\n", "pause_timeout: must be"),
        ("    admin: [host=h dbname=pgbouncer]\n    pause_timeout: soon\n", "pause_timeout"),
        (
            "    admin: [host=h dbname=pgbouncer]\n    haproxy_stats: 'http://h/stats;csv'\n",
            "haproxy_backend: missing",
        ),
        (
            "    admin: [host=h dbname=pgbouncer]\n    haproxy_stats: h:7000\n    haproxy_backend: p\n",
            "expected an http:// URL",
        ),
    ] {
        let e = err_of(&format!("{}warden:\n  pgbouncer:\n{yaml}", minimal_text()));
        assert!(e.contains(needle), "{yaml}: {e}");
        assert!(!e.contains("s3cret") && !e.contains('\n'), "{e}");
    }
    let e = err_of(&format!("{}warden:\n  pgbouncer: yes\n", minimal_text()));
    assert!(e.contains("warden.pgbouncer"), "{e}");
}
