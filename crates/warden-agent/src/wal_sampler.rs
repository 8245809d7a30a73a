//! Keeps the WAL positions (and a replica's `replication_state`) the REST API serves
//! current between HA cycles.
//!
//! Peers judge a switchover candidate by the `xlog` of its `GET /patroni` (Patroni
//! reads it from PostgreSQL on every call). A snapshot from the last HA cycle can be
//! up to `loop_wait` old, long enough for a caught-up replica to look megabytes
//! behind. This task reads the positions every [`INTERVAL`] over one persistent
//! connection and patches them into the published snapshot, so requests never wait on
//! PostgreSQL and still see positions at most [`INTERVAL`] old.

use crate::supervisor::Fence;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use warden_api::StatusHandle;
use warden_core::status::Xlog;
use warden_pg::{WalMonitor, WalPositions};

/// How often the positions are read.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// The REST API's view of [`WalPositions`].
pub fn to_xlog(w: WalPositions) -> Option<Xlog> {
    Some(if w.in_recovery {
        Xlog::Replica {
            received_location: w.receive_lsn,
            replayed_location: w.replay_lsn,
            replayed_timestamp: w.replayed_timestamp,
            paused: w.replay_paused,
        }
    } else {
        Xlog::Primary {
            location: w.flush_lsn?,
        }
    })
}

/// Runs until `stop` turns true. Only reads while the last HA cycle found PostgreSQL
/// answering; drops the connection otherwise, and after any error.
pub async fn run(fence: Arc<Fence>, api: StatusHandle, mut stop: watch::Receiver<bool>) {
    let mut monitor: Option<WalMonitor> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !api.get().pg_answered {
            monitor = None;
            continue;
        }
        if monitor.as_ref().is_none_or(WalMonitor::is_closed) {
            monitor = match fence.postgres().wal_monitor().await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!("WAL sampler: cannot connect: {e}");
                    None
                }
            };
        }
        let Some(m) = &monitor else { continue };
        match m.read().await {
            Ok(w) => {
                let state = w.replication_state.clone();
                if let Some(x) = to_xlog(w) {
                    api.update_wal(x, state);
                }
            }
            Err(e) => {
                tracing::debug!("WAL sampler: {e}");
                monitor = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_to_xlog() {
        let replica = WalPositions {
            in_recovery: true,
            receive_lsn: Some(10),
            replay_lsn: Some(8),
            replay_paused: true,
            ..WalPositions::default()
        };
        assert_eq!(
            to_xlog(replica),
            Some(Xlog::Replica {
                received_location: Some(10),
                replayed_location: Some(8),
                replayed_timestamp: None,
                paused: true,
            })
        );
        let primary = WalPositions {
            flush_lsn: Some(42),
            ..WalPositions::default()
        };
        assert_eq!(to_xlog(primary), Some(Xlog::Primary { location: 42 }));
        assert_eq!(to_xlog(WalPositions::default()), None);
    }
}
