//! PgBouncer around a planned switchover (`warden.pgbouncer`): the executor of
//! [`warden_core::pgbouncer`]. Before a graceful demotion the leader `PAUSE`s every
//! configured PgBouncer (bounded by `pause_timeout`); a watcher task then `RECONNECT`s
//! and `RESUME`s them once a new primary accepts writes (and HAProxy routes to it
//! only, when configured), at once when the switchover failed, and in any case when
//! `pause_timeout` + `resume_timeout` have passed. A member that was just promoted
//! `RESUME`s every PgBouncer under the same condition, for the one an old leader paused
//! and did not live to resume ([`PgBouncers::after_promotion`]).
//!
//! The admin console only speaks the simple query protocol: `simple_query` only. The
//! password comes from the connection string or a pgpass file and is never logged.

use super::Node;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use warden_config::{Config, PgBouncerSettings};
use warden_core::cluster::Cluster;
use warden_core::ha::DemoteMode;
use warden_core::pgbouncer::{
    after_pause, haproxy_servers, pause_limit_ms, promoted_ready, promoted_resume_verdict,
    resume_verdict, routes_only_to, AfterPause, PauseOutcome, ResumeReason, Verdict, Watch,
};
use warden_dcs::Dcs;
use warden_http::{RestClient, RestSettings};

/// How often the watcher looks at the members and HAProxy.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Bound on one REST probe / stats request / admin command.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `RESUME` is retried on a PgBouncer that does not answer.
const RESUME_RETRY_FOR: Duration = Duration::from_secs(30);

/// The configured PgBouncers and how to reach the members and HAProxy.
pub(super) struct PgBouncers {
    settings: PgBouncerSettings,
    /// For the members' REST APIs (their auth and TLS settings).
    rest: RestClient,
    /// For HAProxy's stats (no member credentials sent there).
    plain: RestClient,
    /// The task started by [`PgBouncers::after_promotion`], if any.
    promoted: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Running watchers: (tell it to resume now, the task).
    watchers: std::sync::Mutex<
        Vec<(
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

/// One PgBouncer admin console.
#[derive(Clone)]
struct Target {
    /// `host:port`, for logs (no credentials)
    label: String,
    config: tokio_postgres::Config,
}

/// Held while the demotion runs; dropping it (however the demotion ends) lets the
/// watcher look for the new primary.
pub(super) struct Handover {
    _demoting: tokio::sync::watch::Sender<()>,
}

impl PgBouncers {
    /// The setting of `cfg`, if any.
    pub(super) fn from_config(cfg: &Config, rest: &RestClient) -> Option<PgBouncers> {
        let settings = cfg.warden.pgbouncer.clone()?;
        let plain = match RestClient::new(&RestSettings::default(), "warden") {
            Ok(c) => c,
            Err(e) => {
                warn!("warden.pgbouncer: no HTTP client for HAProxy ({e}); the setting is ignored");
                return None;
            }
        };
        Some(PgBouncers {
            settings,
            rest: rest.clone(),
            plain,
            promoted: Default::default(),
            watchers: Default::default(),
        })
    }

    /// After a config reload: the new setting, keeping track of the watchers still
    /// running from before (so that a shutdown still resumes their PgBouncers).
    pub(super) fn reconfigure(
        old: Option<PgBouncers>,
        cfg: &Config,
        rest: &RestClient,
    ) -> Option<PgBouncers> {
        let new = PgBouncers::from_config(cfg, rest);
        let Some(old) = old else { return new };
        let running = old.watchers.into_inner().unwrap_or_default();
        let promoted = old.promoted.into_inner().unwrap_or_default();
        match new {
            Some(new) => {
                if let Ok(mut w) = new.watchers.lock() {
                    w.extend(running);
                }
                if let Ok(mut p) = new.promoted.lock() {
                    *p = promoted;
                }
                Some(new)
            }
            // Setting removed: the running watchers finish on their own; the
            // after-promotion task no longer has anything to look after.
            None => {
                if let Some(task) = promoted {
                    task.abort();
                }
                None
            }
        }
    }

    fn targets(&self) -> Vec<Result<Target, String>> {
        let masked = self.settings.describe_admin();
        self.settings
            .admin
            .iter()
            .zip(masked)
            .map(|(conninfo, masked)| self.target(conninfo, &masked))
            .collect()
    }

    fn target(&self, conninfo: &str, masked: &str) -> Result<Target, String> {
        // tokio-postgres' parse errors do not quote the string; still, name it masked.
        let mut config =
            tokio_postgres::Config::from_str(conninfo).map_err(|e| format!("'{masked}': {e}"))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            // libpq matches a socket directory as `localhost` in pgpass
            Some(tokio_postgres::config::Host::Unix(_)) | None => "localhost".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let label = format!("{host}:{port}");
        if config.get_password().is_none() {
            let user = config.get_user().unwrap_or("").to_string();
            if let Some(pw) = self.pgpass_password(&host, port, &user) {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(REQUEST_TIMEOUT);
        }
        config.application_name("warden");
        Ok(Target { label, config })
    }

    fn pgpass_password(&self, host: &str, port: u16, user: &str) -> Option<String> {
        let path = self
            .settings
            .passfile
            .clone()
            .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
        let text = std::fs::read_to_string(path).ok()?;
        warden_pg::pgpass_find(&text, host, port, "pgbouncer", user)
    }

    /// PAUSEs every PgBouncer (see the module doc). None when none is paused.
    async fn pause(
        &self,
        me: &str,
        cluster: &Cluster,
        lock_left_ms: Option<u64>,
    ) -> Option<Handover> {
        let started = Instant::now();
        let limit =
            Duration::from_millis(pause_limit_ms(self.settings.pause_timeout_ms, lock_left_ms));
        let targets = self.targets();
        let attempts = targets.iter().map(|t| async move {
            let t = t.as_ref().map_err(|e| PauseOutcome::Failed(e.clone()))?;
            match tokio::time::timeout(limit, admin(t, &["PAUSE"])).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(PauseOutcome::Failed(e)),
                Err(_) => Err(PauseOutcome::TimedOut),
            }
        });
        let outcomes: Vec<PauseOutcome> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.err().unwrap_or(PauseOutcome::Paused))
            .collect();
        let took = started.elapsed().as_secs_f64();
        let mut paused = Vec::new();
        for ((t, outcome), plan) in targets.iter().zip(&outcomes).zip(after_pause(&outcomes)) {
            let label = t.as_ref().map_or("?", |t| t.label.as_str());
            match (plan, outcome) {
                (AfterPause::KeepPaused, _) => {
                    if let Ok(t) = t {
                        paused.push(t.clone())
                    }
                }
                (AfterPause::ResumeNow, _) => {
                    warn!(
                        "PgBouncer {label}: PAUSE did not complete within {:.1} s (a long transaction?); resuming it and switching over without the pause",
                        limit.as_secs_f64()
                    );
                    if let Ok(t) = t {
                        if let Err(e) = admin(t, &["RESUME"]).await {
                            warn!("PgBouncer {label}: RESUME failed: {e}");
                        }
                    }
                }
                (AfterPause::Nothing, PauseOutcome::Failed(e)) => {
                    warn!("PgBouncer {label}: could not pause it ({e}); switching over without the pause for it")
                }
                (AfterPause::Nothing, _) => {}
            }
        }
        if paused.is_empty() {
            return None;
        }
        info!(
            "paused {} PgBouncer{} in {took:.2} s before the switchover",
            paused.len(),
            if paused.len() == 1 { "" } else { "s" }
        );
        let members: Vec<(String, String)> = cluster
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), primary_url(m.data.api_url.as_deref()?)?)))
            .collect();
        let (tx, rx) = tokio::sync::watch::channel(());
        let watcher = Watcher {
            me: me.to_string(),
            members,
            paused,
            started,
            limit_ms: self.settings.pause_timeout_ms + self.settings.resume_timeout_ms,
            haproxy: self
                .settings
                .haproxy_stats
                .clone()
                .zip(self.settings.haproxy_backend.clone()),
            rest: self.rest.clone(),
            plain: self.plain.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(watcher.run(rx, stop_rx));
        if let Ok(mut w) = self.watchers.lock() {
            w.retain(|(_, t)| !t.is_finished());
            w.push((stop_tx, task));
        }
        Some(Handover { _demoting: tx })
    }

    /// This member was just promoted: in the background, once HAProxy (when configured)
    /// routes to it only, `RESUME` every PgBouncer (see [`promoted_resume_verdict`]).
    /// Usually none is paused by then (a failover without a pause, or the old leader's
    /// watcher resumed them during the grace); one is when its old leader was killed
    /// while it held it paused, and nobody else would ever resume it. `RESUME` alone:
    /// `PAUSE` closed the server connections, new ones go to the new primary.
    fn after_promotion(&self, me: &str) {
        // A watcher of mine still runs (a switchover of mine failed and I am primary
        // again): the pause is mine and that watcher resumes it.
        if let Ok(mut w) = self.watchers.lock() {
            w.retain(|(_, t)| !t.is_finished());
            if !w.is_empty() {
                return;
            }
        }
        let targets: Vec<Target> = self
            .targets()
            .into_iter()
            .filter_map(|t| t.map_err(|e| warn!("warden.pgbouncer: {e}")).ok())
            .collect();
        if targets.is_empty() {
            return;
        }
        let me = me.to_string();
        let haproxy = self
            .settings
            .haproxy_stats
            .clone()
            .zip(self.settings.haproxy_backend.clone());
        let plain = self.plain.clone();
        let limit_ms = self.settings.pause_timeout_ms + self.settings.resume_timeout_ms;
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ready_since: Option<Instant> = None;
            let reason = loop {
                let routes = match &haproxy {
                    Some((url, backend)) => Some(haproxy_routes(&plain, url, backend, &me).await),
                    None => None,
                };
                let ready = promoted_ready(&me, &routes);
                ready_since = match (&ready, ready_since) {
                    (Ok(()), None) => Some(Instant::now()),
                    (Ok(()), since) => since,
                    (Err(_), _) => None,
                };
                let ready_for_ms = ready_since.map_or(0, |t| t.elapsed().as_millis() as u64);
                let elapsed_ms = started.elapsed().as_millis() as u64;
                match promoted_resume_verdict(&me, ready, ready_for_ms, elapsed_ms, limit_ms) {
                    Verdict::Resume(r) => break r,
                    Verdict::Wait(_) => tokio::time::sleep(WATCH_EVERY).await,
                }
            };
            let results = futures::future::join_all(
                targets
                    .iter()
                    .map(|t| async move { (t, admin(t, &["RESUME"]).await) }),
            )
            .await;
            let why = match reason {
                ResumeReason::Timeout(missing) => format!(" (gave up waiting: {missing})"),
                _ if haproxy.is_some() => " (HAProxy routes to it)".to_string(),
                _ => String::new(),
            };
            for (t, r) in results {
                match r {
                    Ok(()) => warn!(
                        "PgBouncer {}: it was paused (by a leader that did not resume it); resumed it now that {me} is the primary{why}",
                        t.label
                    ),
                    // Nobody left it paused: the usual case.
                    Err(e) if e.contains("not paused") => {}
                    Err(e) => warn!(
                        "PgBouncer {}: RESUME after the promotion failed: {e}",
                        t.label
                    ),
                }
            }
        });
        if let Ok(mut p) = self.promoted.lock() {
            if let Some(old) = p.replace(task) {
                old.abort();
            }
        }
    }

    /// This member demotes (any way): it is no longer the primary whose promotion
    /// [`PgBouncers::after_promotion`] waited on, and the `PAUSE` of its own switchover
    /// must not be taken for one left behind. Ends that task first.
    async fn end_after_promotion(&self) {
        let task = self.promoted.lock().ok().and_then(|mut p| p.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The agent stops: resume the PgBouncers a watcher still holds paused, now.
    async fn resume_now(&self) {
        let running = match self.watchers.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => return,
        };
        for (stop, task) in running {
            let _ = stop.send(true);
            // RESUME is retried for RESUME_RETRY_FOR at most.
            let _ = tokio::time::timeout(RESUME_RETRY_FOR + REQUEST_TIMEOUT, task).await;
        }
    }
}

/// Resumes the paused PgBouncers when [`resume_verdict`] says so.
struct Watcher {
    me: String,
    /// (member, its `GET /primary` URL)
    members: Vec<(String, String)>,
    paused: Vec<Target>,
    started: Instant,
    limit_ms: u64,
    /// (stats URL, backend)
    haproxy: Option<(String, String)>,
    rest: RestClient,
    plain: RestClient,
}

impl Watcher {
    async fn run(
        self,
        demoting: tokio::sync::watch::Receiver<()>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let reason = loop {
            let shutting_down = *stop.borrow();
            // The sender is dropped when the demotion ends (any way).
            let demoted = demoting.has_changed().is_err();
            let primaries = if demoted && !shutting_down {
                self.primaries().await
            } else {
                Vec::new()
            };
            let haproxy = match (&self.haproxy, primaries.as_slice()) {
                (Some((url, backend)), [p]) => {
                    Some(haproxy_routes(&self.plain, url, backend, p).await)
                }
                _ => None,
            };
            let verdict = resume_verdict(&Watch {
                me: &self.me,
                shutting_down,
                demoted,
                elapsed_ms: self.started.elapsed().as_millis() as u64,
                limit_ms: self.limit_ms,
                primaries: &primaries,
                haproxy,
            });
            match verdict {
                Verdict::Resume(r) => break r,
                Verdict::Wait(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH_EVERY) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        };
        let paused_for = self.started.elapsed().as_secs_f64();
        let n = self.paused.len();
        let what = format!("{n} PgBouncer{}", if n == 1 { "" } else { "s" });
        let resumed = self.resume_all().await;
        let failed = n - resumed;
        let tail = if failed > 0 {
            format!(" ({failed} did not answer RESUME: resume them by hand)")
        } else {
            String::new()
        };
        match reason {
            ResumeReason::NewPrimary(p) => info!(
                "resumed {what} after {paused_for:.2} s: new primary {p} accepts writes{}{tail}",
                if self.haproxy.is_some() {
                    " and HAProxy routes to it"
                } else {
                    ""
                }
            ),
            ResumeReason::StillPrimary => warn!(
                "resumed {what} after {paused_for:.2} s: the switchover failed, {} is still the primary{}{tail}",
                self.me,
                if self.haproxy.is_some() {
                    " and HAProxy routes to it"
                } else {
                    ""
                }
            ),
            ResumeReason::Shutdown => warn!(
                "resumed {what} after {paused_for:.2} s: the agent is shutting down before a new primary was seen{tail}"
            ),
            ResumeReason::Timeout(missing) => warn!(
                "resumed {what} after {paused_for:.2} s: gave up waiting for the new primary ({missing}){tail}"
            ),
        }
    }

    /// Members whose `GET /primary` answers 200 now, with a body that says `role:
    /// primary`, `state: running`. The body matters: a member publishes its status at
    /// the end of a cycle, so right after the demotion the old leader's REST API still
    /// has its lock (200) but says `state: stopping`; a new leader says `primary` only
    /// once its promotion has finished.
    async fn primaries(&self) -> Vec<String> {
        let probes = self.members.iter().map(|(name, url)| async move {
            let r = self
                .rest
                .request("GET", url, None, REQUEST_TIMEOUT)
                .await
                .ok()?;
            let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            (r.status == 200 && body["role"] == "primary" && body["state"] == "running")
                .then(|| name.clone())
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// `RECONNECT` + `RESUME` on every paused PgBouncer, retried for a while on the ones
    /// that fail; returns how many were resumed.
    async fn resume_all(&self) -> usize {
        let deadline = Instant::now() + RESUME_RETRY_FOR;
        let mut todo: Vec<&Target> = self.paused.iter().collect();
        let mut done = 0;
        loop {
            let results = futures::future::join_all(
                todo.iter()
                    .map(|t| async move { (*t, admin(t, &["RECONNECT", "RESUME"]).await) }),
            )
            .await;
            todo.clear();
            for (t, r) in results {
                match r {
                    Ok(()) => done += 1,
                    // Someone resumed it already: fine.
                    Err(e) if e.contains("not paused") => done += 1,
                    Err(e) => {
                        if Instant::now() >= deadline {
                            warn!("PgBouncer {}: RESUME failed: {e}", t.label);
                        } else {
                            todo.push(t);
                        }
                    }
                }
            }
            if todo.is_empty() || Instant::now() >= deadline {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Does HAProxy (its CSV stats at `url`) route `backend` to `primary` only?
async fn haproxy_routes(
    plain: &RestClient,
    url: &str,
    backend: &str,
    primary: &str,
) -> Result<bool, String> {
    let r = plain
        .request("GET", url, None, REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    if r.status != 200 {
        return Err(format!("stats: HTTP {}", r.status));
    }
    let servers = haproxy_servers(&r.text(), backend)?;
    routes_only_to(&servers, primary)
}

/// Runs `commands` one by one on a fresh admin connection (simple query protocol).
async fn admin(t: &Target, commands: &[&str]) -> Result<(), String> {
    let (client, conn) = t
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {}", db_error_text(&e)))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut result = Ok(());
    for c in commands {
        if let Err(e) = client.simple_query(c).await {
            result = Err(format!("{c}: {}", db_error_text(&e)));
            break;
        }
    }
    drop(client);
    let _ = conn.await;
    result
}

/// The server's message when there is one (tokio-postgres' own text is "db error").
fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// `http://host:port/patroni` → `http://host:port/primary`.
fn primary_url(api_url: &str) -> Option<String> {
    let scheme_end = api_url.find("://")? + 3;
    let path_start = api_url[scheme_end..]
        .find('/')
        .map_or(api_url.len(), |i| scheme_end + i);
    Some(format!("{}/primary", &api_url[..path_start]))
}

impl<D: Dcs> Node<D> {
    /// On shutdown: never leave a PgBouncer paused behind.
    pub(super) async fn resume_pgbouncers(&self) {
        if let Some(p) = &self.pgbouncer {
            p.resume_now().await;
        }
    }

    /// After this member's promotion: resume the PgBouncers an old leader may have left
    /// paused ([`PgBouncers::after_promotion`]).
    pub(super) fn resume_pgbouncers_left_paused(&self) {
        if let Some(p) = &self.pgbouncer {
            p.after_promotion(&self.cfg.name);
        }
    }

    /// Before a graceful demotion (switchover, manual failover): PAUSE the PgBouncers
    /// in front. Keep the result until the demotion has ended; dropping it starts the
    /// wait for the new primary, which resumes them.
    pub(super) async fn pause_pgbouncers(
        &self,
        mode: DemoteMode,
        cluster: &Cluster,
    ) -> Option<Handover> {
        let pgbouncer = self.pgbouncer.as_ref()?;
        pgbouncer.end_after_promotion().await;
        if mode != DemoteMode::Graceful {
            return None;
        }
        let lock_left_ms = self
            .memory
            .leader_until_ms
            .map(|until| until.saturating_sub(warden_api::monotonic_ms()));
        pgbouncer.pause(self.me(), cluster, lock_left_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_urls() {
        assert_eq!(
            primary_url("http://127.0.0.1:8008/patroni").as_deref(),
            Some("http://127.0.0.1:8008/primary")
        );
        assert_eq!(
            primary_url("https://h:1").as_deref(),
            Some("https://h:1/primary")
        );
        assert_eq!(primary_url("nonsense"), None);
    }
}
