//! The agent's side of the management endpoints (rest-api.md §4): DCS writes for
//! switchover/failover and config, and commands to the HA loop for restart, reinit and
//! reload.

use crate::probe;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use warden_api::management::{
    FailsafeFuture, FailsafeOutcome, Management, MgmtFuture, MgmtResponse, RestartRequest,
    SwitchoverKind, SwitchoverRequest,
};
use warden_api::StatusHandle;
use warden_core::cluster::Cluster;
use warden_dcs::Dcs;
use warden_http::RestClient;

/// A request for the HA loop, answered between cycles.
pub enum Command {
    /// Run a cycle now (a DCS write the loop should react to).
    Wake,
    /// `POST /restart`.
    Restart {
        /// validated filters/schedule
        req: RestartRequest,
        /// the answer
        reply: oneshot::Sender<MgmtResponse>,
    },
    /// `DELETE /restart`.
    DeleteRestart {
        /// the answer
        reply: oneshot::Sender<MgmtResponse>,
    },
    /// `POST /reinitialize`.
    Reinit {
        /// cancel a running action (we have none running between cycles)
        force: bool,
        /// clone from the leader even if a clonefrom member exists
        from_leader: bool,
        /// the answer
        reply: oneshot::Sender<MgmtResponse>,
    },
    /// `POST /reload` / SIGHUP.
    Reload,
}

/// Runs another [`Management`]'s futures on the agent's main runtime: the REST API has
/// a thread and runtime of its own (so a flood of requests cannot delay the HA loop),
/// while DCS clients and the HA loop's channels live on the main runtime.
pub struct OnRuntime {
    inner: Arc<dyn Management>,
    main: tokio::runtime::Handle,
}

impl OnRuntime {
    /// Wraps `inner`; its futures are spawned on `main`.
    pub fn new(inner: Arc<dyn Management>, main: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(OnRuntime { inner, main })
    }

    fn run(&self, f: MgmtFuture) -> MgmtFuture {
        let task = self.main.spawn(f);
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                MgmtResponse::text(503, format!("management request failed: {e}"))
            })
        })
    }
}

impl Management for OnRuntime {
    fn switchover(&self, req: SwitchoverRequest) -> MgmtFuture {
        self.run(self.inner.switchover(req))
    }
    fn delete_switchover(&self) -> MgmtFuture {
        self.run(self.inner.delete_switchover())
    }
    fn restart(&self, req: RestartRequest) -> MgmtFuture {
        self.run(self.inner.restart(req))
    }
    fn delete_restart(&self) -> MgmtFuture {
        self.run(self.inner.delete_restart())
    }
    fn reinitialize(&self, force: bool, from_leader: bool) -> MgmtFuture {
        self.run(self.inner.reinitialize(force, from_leader))
    }
    fn reload(&self) -> MgmtFuture {
        self.run(self.inner.reload())
    }
    fn patch_config(&self, patch: Map<String, Value>) -> MgmtFuture {
        self.run(self.inner.patch_config(patch))
    }
    fn put_config(&self, config: Value) -> MgmtFuture {
        self.run(self.inner.put_config(config))
    }
    fn failsafe(&self, post: Map<String, Value>) -> FailsafeFuture {
        let task = self.main.spawn(self.inner.failsafe(post));
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| FailsafeOutcome::Refused(format!("failed: {e}")))
        })
    }
}

/// Implements [`Management`] for one node.
pub struct AgentManagement<D: Dcs + Clone + 'static> {
    dcs: D,
    commands: mpsc::Sender<Command>,
    status: StatusHandle,
    /// For probing candidates before accepting a switchover.
    rest: RestClient,
}

impl<D: Dcs + Clone + 'static> AgentManagement<D> {
    /// Wires the endpoints to the DCS and the HA loop.
    pub fn new(
        dcs: D,
        commands: mpsc::Sender<Command>,
        status: StatusHandle,
        rest: RestClient,
    ) -> Arc<Self> {
        Arc::new(AgentManagement {
            dcs,
            commands,
            status,
            rest,
        })
    }
}

async fn ask(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<MgmtResponse>) -> Command,
    what: &str,
) -> MgmtResponse {
    let (tx, rx) = oneshot::channel();
    if commands.send(make(tx)).await.is_err() {
        return MgmtResponse::text(503, format!("{what} failed: the HA loop is not running"));
    }
    // Restarts wait for PostgreSQL (pg_ctl_timeout); bound the wait generously.
    match tokio::time::timeout(Duration::from_secs(600), rx).await {
        Ok(Ok(r)) => r,
        _ => MgmtResponse::text(503, format!("{what} status unknown")),
    }
}

/// Compact JSON of a `failover` key as Patroni writes it.
pub fn failover_json(leader: Option<&str>, member: Option<&str>, at: Option<&str>) -> String {
    let mut m = Map::new();
    if let Some(l) = leader {
        m.insert("leader".into(), json!(l));
    }
    if let Some(c) = member {
        m.insert("member".into(), json!(c));
    }
    if let Some(a) = at {
        m.insert("scheduled_at".into(), json!(a));
    }
    Value::Object(m).to_string()
}

/// Step 7 of rest-api.md §4.2: can this request succeed? Err = 412 text.
async fn feasible(rest: &RestClient, c: &Cluster, req: &SwitchoverRequest) -> Result<(), String> {
    let action = match req.kind {
        SwitchoverKind::Switchover => "switchover",
        SwitchoverKind::Failover => "failover",
    };
    let candidates = warden_core::ha::switchover_targets(
        c,
        req.kind == SwitchoverKind::Switchover,
        req.leader.as_deref(),
        req.candidate.as_deref(),
    )?;
    let targets: Vec<(String, String)> = candidates
        .iter()
        .filter(|m| !m.data.nofailover())
        .filter_map(|m| Some((m.name.clone(), m.data.api_base()?)))
        .collect();
    let peers = probe::probe_members(rest, targets).await;
    if peers
        .iter()
        .any(|p| p.reachable && !p.nofailover && !p.watchdog_failed)
    {
        Ok(())
    } else {
        Err(format!(
            "{action} is not possible: no good candidates have been found"
        ))
    }
}

impl<D: Dcs + Clone + 'static> Management for AgentManagement<D> {
    fn switchover(&self, req: SwitchoverRequest) -> MgmtFuture {
        let dcs = self.dcs.clone();
        let commands = self.commands.clone();
        let loop_wait = self.status.get().loop_wait_secs();
        let rest = self.rest.clone();
        Box::pin(async move {
            let (word, done) = match req.kind {
                SwitchoverKind::Switchover => ("Switchover", "switched over"),
                SwitchoverKind::Failover => ("Failover", "failed over"),
            };
            let cluster = match dcs.get_cluster().await {
                Ok(c) => c,
                Err(e) => return MgmtResponse::text(503, format!("DCS is not accessible: {e}")),
            };
            if req.scheduled_at.is_none() {
                if let Err(why) = feasible(&rest, &cluster, &req).await {
                    return MgmtResponse::text(412, why);
                }
            }
            let old_leader = cluster.leader_name().map(str::to_string);
            let body = failover_json(
                req.leader.as_deref(),
                req.candidate.as_deref(),
                req.scheduled_at.as_deref(),
            );
            if dcs.set_failover(&body, None).await.is_err() {
                return MgmtResponse::text(503, "failed to write failover key into DCS");
            }
            let _ = commands.try_send(Command::Wake);
            if req.scheduled_at.is_some() {
                return MgmtResponse::text(202, format!("{word} scheduled"));
            }
            let secs = 2 * loop_wait.max(10);
            for _ in 0..secs {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Ok(c) = dcs.get_cluster().await else {
                    continue;
                };
                match c.leader_name() {
                    Some(new) if Some(new) != old_leader.as_deref() => {
                        return match &req.candidate {
                            Some(cand) if cand != new => MgmtResponse::text(
                                200,
                                format!("{} to \"{new}\" instead of \"{cand}\"", capitalize(done)),
                            ),
                            _ => {
                                MgmtResponse::text(200, format!("Successfully {done} to \"{new}\""))
                            }
                        };
                    }
                    _ => {
                        if c.failover.is_none() {
                            return MgmtResponse::text(503, format!("{word} failed"));
                        }
                    }
                }
            }
            MgmtResponse::text(
                503,
                format!("{word} status unknown after {secs} seconds; operation may still be in progress"),
            )
        })
    }

    fn delete_switchover(&self) -> MgmtFuture {
        let dcs = self.dcs.clone();
        Box::pin(async move {
            let cluster = match dcs.get_cluster().await {
                Ok(c) => c,
                Err(e) => return MgmtResponse::text(503, format!("DCS is not accessible: {e}")),
            };
            match cluster.failover.filter(|f| f.scheduled_at.is_some()) {
                None => MgmtResponse::text(404, "no switchover is scheduled"),
                Some(f) => match dcs.set_failover("{}", Some(f.version)).await {
                    Ok(true) => MgmtResponse::text(200, "scheduled switchover deleted"),
                    _ => MgmtResponse::text(409, "Conflict"),
                },
            }
        })
    }

    fn restart(&self, req: RestartRequest) -> MgmtFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            ask(
                &commands,
                |reply| Command::Restart { req, reply },
                "restart",
            )
            .await
        })
    }

    fn delete_restart(&self) -> MgmtFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            ask(
                &commands,
                |reply| Command::DeleteRestart { reply },
                "restart",
            )
            .await
        })
    }

    fn reinitialize(&self, force: bool, from_leader: bool) -> MgmtFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            ask(
                &commands,
                |reply| Command::Reinit {
                    force,
                    from_leader,
                    reply,
                },
                "reinitialize",
            )
            .await
        })
    }

    fn reload(&self) -> MgmtFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            if commands.send(Command::Reload).await.is_err() {
                return MgmtResponse::text(503, "reload failed: the HA loop is not running");
            }
            MgmtResponse::text(202, "reload scheduled")
        })
    }

    fn patch_config(&self, patch: Map<String, Value>) -> MgmtFuture {
        let dcs = self.dcs.clone();
        let commands = self.commands.clone();
        Box::pin(async move {
            let cluster = match dcs.get_cluster().await {
                Ok(c) => c,
                Err(e) => return MgmtResponse::text(503, format!("DCS is not accessible: {e}")),
            };
            let Some(cfg) = cluster.config.filter(|c| c.version > 0) else {
                return MgmtResponse::text(503, "the config key does not exist in the DCS");
            };
            let mut merged = cfg.value.as_object().cloned().unwrap_or_default();
            warden_config::patch_config(&mut merged, &patch);
            let merged = Value::Object(merged);
            match dcs.set_config(&merged.to_string(), Some(cfg.version)).await {
                Ok(true) => {
                    let _ = commands.try_send(Command::Wake);
                    MgmtResponse::json(200, merged)
                }
                Ok(false) => MgmtResponse::text(409, "Conflict"),
                Err(e) => MgmtResponse::text(503, format!("failed to write the config key: {e}")),
            }
        })
    }

    fn failsafe(&self, post: Map<String, Value>) -> FailsafeFuture {
        let status = self.status.clone();
        Box::pin(async move {
            let st = status.get();
            // A running primary must not be kept as one by another primary's failsafe.
            if st.pg_answered && matches!(st.xlog, Some(warden_core::status::Xlog::Primary { .. }))
            {
                return FailsafeOutcome::Refused("Running as a leader".into());
            }
            let Some(name) = post.get("name").and_then(Value::as_str) else {
                return FailsafeOutcome::Refused("the request names no leader".into());
            };
            status.note_failsafe_ping(name, post.get("slots").and_then(Value::as_object).cloned());
            let lsn = match st.xlog {
                Some(warden_core::status::Xlog::Replica {
                    received_location,
                    replayed_location,
                    ..
                }) => received_location.max(replayed_location),
                _ => None,
            };
            FailsafeOutcome::Accepted { lsn }
        })
    }

    fn put_config(&self, config: Value) -> MgmtFuture {
        let dcs = self.dcs.clone();
        let commands = self.commands.clone();
        Box::pin(async move {
            if let Ok(c) = dcs.get_cluster().await {
                if c.config.as_ref().is_some_and(|k| k.value == config) {
                    return MgmtResponse::json(200, config);
                }
            }
            match dcs.set_config(&config.to_string(), None).await {
                Ok(_) => {
                    let _ = commands.try_send(Command::Wake);
                    MgmtResponse::json(200, config)
                }
                Err(e) => MgmtResponse::text(502, format!("failed to write the config key: {e}")),
            }
        })
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_key_is_compact_and_sparse() {
        assert_eq!(
            failover_json(Some("pg1"), Some("pg2"), None),
            r#"{"leader":"pg1","member":"pg2"}"#
        );
        assert_eq!(
            failover_json(None, Some("pg2"), None),
            r#"{"member":"pg2"}"#
        );
        assert_eq!(capitalize("switched over"), "Switched over");
    }
}
