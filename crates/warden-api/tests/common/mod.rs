//! Shared fixtures: a 3-member cluster (pg1 leader, pg2 and pg3 replicas).
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::sync::Arc;
use warden_core::cluster::{Cluster, KeyValue};
use warden_core::status::{NodeStatus, Xlog};

/// Leader WAL position published in `/status`.
pub const OPTIME: u64 = 0x0400_0060;
pub const MB: u64 = 1024 * 1024;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        mod_revision: 7,
        lease: 0,
    }
}

/// The cluster view with the given dynamic config and optional `sync` key.
pub fn cluster_with(config: Value, sync: Option<&str>) -> Cluster {
    let mut kvs = vec![
        kv("initialize", "7268616322854375442"),
        kv("config", &config.to_string()),
        kv("leader", "pg1"),
        kv(
            "members/pg3",
            r#"{"conn_url":"postgres://10.0.0.3/postgres","api_url":"http://10.0.0.3:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":67108864,"timeline":5}"#,
        ),
        kv(
            "members/pg1",
            r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.4","tags":{"clonefrom":true},"xlog_location":67108960,"timeline":5}"#,
        ),
        kv(
            "members/pg2",
            r#"{"conn_url":"postgres://10.0.0.2:5433/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":67108960,"replay_lsn":67108960,"receive_lsn":67108960,"replication_state":"streaming","timeline":5}"#,
        ),
        kv("status", &format!(r#"{{"optime":{OPTIME}}}"#)),
        kv(
            "history",
            r#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","pg1"]]"#,
        ),
    ];
    if let Some(s) = sync {
        kvs.push(kv("sync", s));
    }
    Cluster::from_kvs(&kvs)
}

pub fn cluster() -> Cluster {
    cluster_with(json!({"ttl": 30, "loop_wait": 10}), None)
}

pub fn tags(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// pg1, the primary holding the lock, with a DCS view valid until `now + 10 s`.
pub fn primary(now: u64) -> NodeStatus {
    NodeStatus {
        name: "pg1".into(),
        scope: "demo".into(),
        state: "running".into(),
        role: "primary".into(),
        pg_answered: true,
        server_version: Some(150004),
        xlog: Some(Xlog::Primary { location: OPTIME }),
        timeline: Some(5),
        leader_until_ms: Some(now + 10_000),
        dcs_last_seen: 1_700_000_000,
        cluster_valid_until_ms: Some(now + 10_000),
        cluster: Some(Arc::new(cluster())),
        maximum_lag_on_failover: MB,
        ttl: 30,
        next_cycle_due_ms: now + 10_000,
        version: "4.1.5".into(),
        ..NodeStatus::default()
    }
}

/// pg2, a streaming replica `behind` bytes behind the leader's optime.
pub fn replica(now: u64, behind: u64) -> NodeStatus {
    NodeStatus {
        name: "pg2".into(),
        role: "replica".into(),
        xlog: Some(Xlog::Replica {
            received_location: Some(OPTIME - behind),
            replayed_location: Some(OPTIME - behind),
            replayed_timestamp: None,
            paused: false,
        }),
        replication_state: Some("streaming".into()),
        leader_until_ms: None,
        ..primary(now)
    }
}

/// A real API server on 127.0.0.1 (ephemeral port), stopped (and awaited) by `stop`.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// With default options (no auth, no TLS, no management).
    pub async fn start(status: warden_api::StatusHandle) -> Server {
        Server::start_with(status, warden_api::ApiOptions::default()).await
    }

    /// With the given options.
    pub async fn start_with(
        status: warden_api::StatusHandle,
        opts: warden_api::ApiOptions,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(warden_api::serve_with(listener, status, opts, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Signals shutdown and waits (bounded) for the server task to end cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}
