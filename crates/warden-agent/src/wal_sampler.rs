//! Reads the WAL positions (and a replica's `replication_state`) the REST API serves
//! when a reader asks for them.
//!
//! Peers judge a leader-race or switchover candidate by the `xlog` of its `GET
//! /patroni` (Patroni reads it from PostgreSQL on every call). A snapshot from the last
//! HA cycle can be up to `loop_wait` old, long enough for a caught-up replica to look
//! behind and lose a race it should win. So `GET /patroni` asks this task for a sample
//! that starts after the request ([`warden_api::StatusHandle::fresh`]); it reads over
//! one persistent connection and patches the snapshot. Nothing is read while nobody
//! asks: an idle node sends PostgreSQL no queries between HA cycles.

use crate::supervisor::Fence;
use std::sync::Arc;
use tokio::sync::watch;
use warden_api::StatusHandle;
use warden_core::status::Xlog;
use warden_pg::{WalMonitor, WalPositions};

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

/// Runs until `stop` turns true, sampling whenever a reader asks. Only reads while the
/// last HA cycle found PostgreSQL answering; drops the connection after any error.
pub async fn run(fence: Arc<Fence>, api: StatusHandle, mut stop: watch::Receiver<bool>) {
    let mut monitor: Option<WalMonitor> = None;
    loop {
        let ticket = tokio::select! {
            t = api.wal_wanted() => t,
            _ = stop.wait_for(|s| *s) => return,
        };
        if api.get().pg_answered {
            if monitor.as_ref().is_none_or(WalMonitor::is_closed) {
                monitor = match fence.postgres().wal_monitor().await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::debug!("WAL sampler: cannot connect: {e}");
                        None
                    }
                };
            }
            if let Some(m) = &monitor {
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
        } else {
            monitor = None;
        }
        api.sampled(ticket);
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
