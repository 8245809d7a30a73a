//! Shared helpers for warden-pg integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use warden_pg::{Credentials, PgSettings, Postgres, Upstream};
use warden_testkit::pg::{fast_initdb_options, run_as_ids, test_hba_lines, PgNodeDirs};

pub const SUPERUSER_PW: &str = "su pass'\\x";
pub const REPL_PW: &str = "rep:pa\\ss";
pub const REWIND_PW: &str = "rewind-pw";

/// Settings for a test node: loopback TCP, fsync off, own socket dir, run as postgres.
pub fn settings_for(node: &PgNodeDirs, scope: &str) -> PgSettings {
    let mut parameters = BTreeMap::new();
    parameters.insert("fsync".to_string(), "off".to_string());
    parameters.insert("synchronous_commit".to_string(), "off".to_string());
    parameters.insert("full_page_writes".to_string(), "on".to_string());
    parameters.insert(
        "unix_socket_directories".to_string(),
        node.socket_dir.display().to_string(),
    );
    parameters.insert("shared_buffers".to_string(), "16MB".to_string());
    parameters.insert("wal_keep_segments".to_string(), "8".to_string());
    parameters.insert("log_min_messages".to_string(), "info".to_string());
    PgSettings {
        name: node.name.clone(),
        scope: scope.to_string(),
        data_dir: node.data_dir.clone(),
        config_dir: node.data_dir.clone(),
        bin_dir: warden_testkit::pg_bin_dir(),
        listen_addresses: "127.0.0.1".to_string(),
        port: node.port,
        connect_host: "127.0.0.1".to_string(),
        pgpass: node.pgpass.clone(),
        superuser: Credentials::new("postgres", Some(SUPERUSER_PW)),
        replication: Credentials::new("replicator", Some(REPL_PW)),
        rewind: Some(Credentials::new("rewind_user", Some(REWIND_PW))),
        database: "postgres".to_string(),
        parameters,
        pg_hba: None,
        use_unix_socket: false,
        pg_ctl_timeout: Duration::from_secs(60),
        basebackup_options: vec!["--checkpoint=fast".to_string()],
        run_as: run_as_ids(),
        custom_bootstrap: None,
    }
}

/// initdb + bootstrap pg_hba + postgresql.conf + start + post_bootstrap.
pub async fn bootstrap_primary(pg: &Postgres) {
    pg.initdb(&fast_initdb_options()).await.expect("initdb");
    pg.append_pg_hba(&test_hba_lines()).expect("append pg_hba");
    pg.write_config(None, false).expect("write_config");
    pg.start().await.expect("start primary");
    pg.post_bootstrap().await.expect("post_bootstrap");
}

/// Upstream pointing at `pg`.
pub fn upstream_of(pg: &Postgres, slot: Option<&str>) -> Upstream {
    Upstream {
        host: "127.0.0.1".to_string(),
        port: pg.settings().port,
        slot: slot.map(str::to_string),
    }
}

/// Connects over TCP to 127.0.0.1:`port` with a password.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// First column of the first row of `sql` as text (None when no row / NULL / error).
pub async fn query_text(port: u16, sql: &str) -> Option<String> {
    let c = connect(port, "postgres", SUPERUSER_PW).await.ok()?;
    let msgs = c.simple_query(sql).await.ok()?;
    msgs.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}
