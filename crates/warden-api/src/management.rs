//! The management side of the REST API (POST/PUT/PATCH/DELETE), as a contract between
//! the HTTP layer and the agent.
//!
//! The HTTP layer parses and validates what it can without cluster knowledge (body
//! presence and shape, schedule syntax, filter values, the pause rules it can read from
//! the published status) and answers those errors itself with Patroni's codes and texts.
//! Everything that needs the DCS, peers or the HA loop is delegated to the agent through
//! [`Management`].

use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;

/// A boxed future returned by [`Management`] methods.
pub type MgmtFuture = Pin<Box<dyn Future<Output = MgmtResponse> + Send + 'static>>;

/// The body of a management answer.
#[derive(Clone, Debug, PartialEq)]
pub enum MgmtBody {
    /// Plain text (sent as `text/html`, like Patroni's `write_response`).
    Text(String),
    /// JSON (`application/json`).
    Json(Value),
}

/// A management answer: status code and body.
#[derive(Clone, Debug, PartialEq)]
pub struct MgmtResponse {
    /// HTTP status code.
    pub code: u16,
    /// Body.
    pub body: MgmtBody,
}

impl MgmtResponse {
    /// A text answer.
    pub fn text(code: u16, body: impl Into<String>) -> MgmtResponse {
        MgmtResponse {
            code,
            body: MgmtBody::Text(body.into()),
        }
    }

    /// A JSON answer.
    pub fn json(code: u16, body: Value) -> MgmtResponse {
        MgmtResponse {
            code,
            body: MgmtBody::Json(body),
        }
    }
}

/// Switchover (planned, from a named leader) or failover (to a named candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchoverKind {
    /// `POST /switchover`, or `POST /failover` with a `leader`.
    Switchover,
    /// `POST /failover` without a `leader`.
    Failover,
}

/// A validated `POST /switchover` or `POST /failover` (rest-api.md §4.2 steps 1–6 passed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// What the caller asked for (after step 5).
    pub kind: SwitchoverKind,
    /// Current leader named by the caller.
    pub leader: Option<String>,
    /// Candidate (`candidate`, or legacy `member`).
    pub candidate: Option<String>,
    /// `scheduled_at`, normalised to ISO 8601 with offset (Python `isoformat()`).
    pub scheduled_at: Option<String>,
}

/// A validated `POST /restart` body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartRequest {
    /// `schedule`, normalised ISO 8601 with offset; None = now.
    pub schedule: Option<String>,
    /// `role` filter: `primary`, `standby_leader` or `replica` (`master` read as primary).
    pub role: Option<String>,
    /// `postgres_version` filter as given (`X.Y` or `X.Y.Z`, already validated).
    pub postgres_version: Option<String>,
    /// `timeout` in seconds (> 0).
    pub timeout: Option<u64>,
    /// `restart_pending` filter (key present ⇒ Some).
    pub restart_pending: Option<bool>,
}

/// The agent's answer to `POST /failsafe` (rest-api.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailsafeOutcome {
    /// 200 `Accepted`, with header `lsn: <int>` when this node's WAL position is known.
    Accepted {
        /// This node's last received/replayed WAL position.
        lsn: Option<u64>,
    },
    /// 500 with the reason (e.g. `Running as a leader`).
    Refused(String),
    /// Not implemented by this agent: 501.
    Unsupported,
}

/// A boxed future returned by [`Management::failsafe`].
pub type FailsafeFuture = Pin<Box<dyn Future<Output = FailsafeOutcome> + Send + 'static>>;

/// What the agent does for the management endpoints. Each method answers with
/// Patroni's status code and text (rest-api.md §4).
pub trait Management: Send + Sync + 'static {
    /// `POST /switchover`, `POST /failover`: feasibility (step 7), write the `failover`
    /// key, wake the HA loop, then 202 (scheduled) or poll for the outcome (step 9).
    fn switchover(&self, req: SwitchoverRequest) -> MgmtFuture;
    /// `DELETE /switchover`.
    fn delete_switchover(&self) -> MgmtFuture;
    /// `POST /restart` (immediate or scheduled).
    fn restart(&self, req: RestartRequest) -> MgmtFuture;
    /// `DELETE /restart`.
    fn delete_restart(&self) -> MgmtFuture;
    /// `POST /reinitialize`.
    fn reinitialize(&self, force: bool, from_leader: bool) -> MgmtFuture;
    /// `POST /reload`: 202 `reload scheduled`.
    fn reload(&self) -> MgmtFuture;
    /// `PATCH /config`: merge into the stored config (CAS), 200 + the full result.
    fn patch_config(&self, patch: Map<String, Value>) -> MgmtFuture;
    /// `PUT /config`: replace the stored config, 200 + echo.
    fn put_config(&self, config: Value) -> MgmtFuture;
    /// `POST /failsafe` from the primary (`{name, conn_url, api_url, slots}`), called only
    /// when the published config has `failsafe_mode: true` and after access checks.
    /// Default: [`FailsafeOutcome::Unsupported`] (501).
    fn failsafe(&self, _post: Map<String, Value>) -> FailsafeFuture {
        Box::pin(async { FailsafeOutcome::Unsupported })
    }
}

/// A [`Management`] that refuses everything with 503 (used before the agent is ready,
/// and by tests of the read-only API).
pub struct NoManagement;

impl NoManagement {
    fn refuse() -> MgmtFuture {
        Box::pin(async { MgmtResponse::text(503, "management is not available") })
    }
}

impl Management for NoManagement {
    fn switchover(&self, _: SwitchoverRequest) -> MgmtFuture {
        Self::refuse()
    }
    fn delete_switchover(&self) -> MgmtFuture {
        Self::refuse()
    }
    fn restart(&self, _: RestartRequest) -> MgmtFuture {
        Self::refuse()
    }
    fn delete_restart(&self) -> MgmtFuture {
        Self::refuse()
    }
    fn reinitialize(&self, _: bool, _: bool) -> MgmtFuture {
        Self::refuse()
    }
    fn reload(&self) -> MgmtFuture {
        Self::refuse()
    }
    fn patch_config(&self, _: Map<String, Value>) -> MgmtFuture {
        Self::refuse()
    }
    fn put_config(&self, _: Value) -> MgmtFuture {
        Self::refuse()
    }
}
