//! PgBouncer around a planned switchover: when to resume the PgBouncers the old leader
//! paused before it demoted, and what to do with a PgBouncer whose `PAUSE` did not
//! complete. Pure functions; the agent (`node/pgbouncer.rs`) talks to PgBouncer,
//! HAProxy and the members.
//!
//! The sequence: the leader `PAUSE`s every PgBouncer (clients' new transactions queue
//! in PgBouncer, running ones finish), demotes, then watches the members' `GET
//! /primary` (and HAProxy's stats when configured). It resumes (`RECONNECT`, `RESUME`)
//! as soon as [`resume_verdict`] says so: a new primary accepts writes (and HAProxy
//! routes to it only), the switchover failed (the old leader is primary again), or the
//! overall bound passed — PgBouncer is never left paused by an agent that runs. An old
//! leader that dies while PgBouncer is paused can not resume it: the member promoted
//! after it does, under the same condition held for a grace period
//! ([`promoted_resume_verdict`]).

/// What one `PAUSE` came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseOutcome {
    /// `PAUSE` returned: no server connection is in use, new transactions wait.
    Paused,
    /// `PAUSE` did not return within `pause_timeout` (a long transaction).
    TimedOut,
    /// No admin connection or an error (the text says which).
    Failed(String),
}

/// What to do with one PgBouncer after the pause attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPause {
    /// It is paused: keep it paused through the demotion, resume it afterwards.
    KeepPaused,
    /// Its `PAUSE` may still be pending: `RESUME` it now and switch over without
    /// the pause for its clients (a transaction that outlives `pause_timeout` is cut
    /// by the demotion either way; queueing everyone else behind it for longer is
    /// worse). The switchover goes on.
    ResumeNow,
    /// Unreachable or refused: nothing to undo (a `RESUME` is still tried, harmless).
    Nothing,
}

/// Per PgBouncer, what to do after the `PAUSE` attempts.
pub fn after_pause(outcomes: &[PauseOutcome]) -> Vec<AfterPause> {
    outcomes
        .iter()
        .map(|o| match o {
            PauseOutcome::Paused => AfterPause::KeepPaused,
            PauseOutcome::TimedOut => AfterPause::ResumeNow,
            PauseOutcome::Failed(_) => AfterPause::Nothing,
        })
        .collect()
}

/// How long to wait for `PAUSE`: `pause_timeout`, but at most half of what is left of
/// the leader lock (`lock_left_ms`, None = unknown). The HA loop waits for the `PAUSE`
/// and does not renew the lock meanwhile; the demotion after it must still end while
/// the lock is ours, or the fence guard would stop PostgreSQL hard.
pub fn pause_limit_ms(pause_timeout_ms: u64, lock_left_ms: Option<u64>) -> u64 {
    match lock_left_ms {
        Some(left) => pause_timeout_ms.min(left / 2),
        None => pause_timeout_ms,
    }
}

/// One HAProxy server's state in the CSV stats (`status` column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// server name (named like the member)
    pub name: String,
    /// `status`: `UP`, `DOWN`, `UP 1/2` (failing, still routed), `DOWN 1/2` (rising,
    /// not routed yet), `MAINT`, `no check`, ...
    pub status: String,
}

impl ServerState {
    /// Does HAProxy send new connections to this server? `UP` (also while going
    /// down, `UP 1/2`) and `no check` (never checked = always up) are routed.
    pub fn routed(&self) -> bool {
        let s = self.status.trim();
        s.starts_with("UP") || s.eq_ignore_ascii_case("no check")
    }
}

/// The servers of `backend` in HAProxy's CSV stats (`show stat` / `…/stats;csv`):
/// the rows whose `pxname` is `backend`, except the `FRONTEND`/`BACKEND` summaries.
/// Err when the text has no `# pxname,svname,…` header with a `status` column.
pub fn haproxy_servers(csv: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("no '# pxname,svname,...' header: not HAProxy CSV stats")?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (px, sv, st) = match (col("pxname"), col("svname"), col("status")) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err("the stats header lacks pxname, svname or status".into()),
    };
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.get(px) != Some(&backend) {
            continue;
        }
        let name = f.get(sv).copied().unwrap_or("");
        if name == "FRONTEND" || name == "BACKEND" {
            continue;
        }
        out.push(ServerState {
            name: name.to_string(),
            status: f.get(st).copied().unwrap_or("").to_string(),
        });
    }
    Ok(out)
}

/// Does HAProxy route `backend` to `primary` and to nothing else? Err when `primary`
/// is not one of the backend's servers (the servers must be named like the members).
pub fn routes_only_to(servers: &[ServerState], primary: &str) -> Result<bool, String> {
    let Some(p) = servers.iter().find(|s| s.name == primary) else {
        return Err(format!(
            "HAProxy's backend has no server named {primary} (name the servers like the members)"
        ));
    };
    Ok(p.routed() && servers.iter().all(|s| s.name == primary || !s.routed()))
}

/// What the resume watcher saw this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch<'a> {
    /// this member (the old leader)
    pub me: &'a str,
    /// The agent is shutting down: resume now (it would leave PgBouncer paused).
    pub shutting_down: bool,
    /// The demotion has ended (successfully or not). Before that nobody else can be
    /// the new primary yet; only the overall bound resumes.
    pub demoted: bool,
    /// since the `PAUSE` was sent
    pub elapsed_ms: u64,
    /// `pause_timeout` + `resume_timeout`: past it, resume whatever the state
    pub limit_ms: u64,
    /// members whose `GET /primary` answered 200 (leader lock, PostgreSQL accepting
    /// writes), in member order
    pub primaries: &'a [String],
    /// HAProxy (when configured) for the single primary (new, or me again): Ok(true) =
    /// routes to it only; Ok(false) = not yet; Err = unreadable (stats down, server
    /// unknown). None = not configured, or not asked (no single primary).
    pub haproxy: Option<Result<bool, String>>,
}

/// Why the PgBouncers are resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeReason {
    /// The new primary accepts writes (and HAProxy routes to it when configured).
    NewPrimary(String),
    /// The switchover failed: this member is (again) the primary.
    StillPrimary,
    /// Past the bound (the text says what was still missing).
    Timeout(String),
    /// The agent is shutting down.
    Shutdown,
}

/// The watcher's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the PgBouncers paused and look again (what is missing).
    Wait(String),
    /// Resume now.
    Resume(ResumeReason),
}

/// When to `RESUME` the paused PgBouncers (see the module doc).
pub fn resume_verdict(w: &Watch<'_>) -> Verdict {
    let timeout = |missing: String| {
        if w.elapsed_ms >= w.limit_ms {
            Verdict::Resume(ResumeReason::Timeout(missing))
        } else {
            Verdict::Wait(missing)
        }
    };
    if w.shutting_down {
        return Verdict::Resume(ResumeReason::Shutdown);
    }
    if !w.demoted {
        return timeout("the demotion has not ended".into());
    }
    match w.primaries {
        [] => timeout("no member accepts writes yet".into()),
        // The new primary, or me again (the switchover failed): either way HAProxy
        // must route to it only before clients get server connections again.
        [p] => match &w.haproxy {
            None | Some(Ok(true)) if p == w.me => Verdict::Resume(ResumeReason::StillPrimary),
            None | Some(Ok(true)) => Verdict::Resume(ResumeReason::NewPrimary(p.to_string())),
            Some(Ok(false)) => timeout(format!("HAProxy does not route to {p} only yet")),
            Some(Err(e)) => timeout(format!("HAProxy: {e}")),
        },
        many => timeout(format!(
            "{} members answer as primary ({})",
            many.len(),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// How long a newly promoted member leaves the PgBouncers to a living old leader's
/// watcher (which `RECONNECT`s and `RESUME`s them the moment HAProxy routes to the new
/// primary) before it sends `RESUME` itself.
pub const PROMOTED_RESUME_GRACE_MS: u64 = 5_000;

/// Whether, for a member just promoted, the PgBouncers may be resumed as far as HAProxy
/// goes (`haproxy`: its current view, None = not configured): Ok, or what is missing.
pub fn promoted_ready(me: &str, haproxy: &Option<Result<bool, String>>) -> Result<(), String> {
    match haproxy {
        None | Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => Err(format!("HAProxy does not route to {me} only yet")),
        Some(Err(e)) => Err(format!("HAProxy: {e}")),
    }
}

/// After this member was promoted (a failover, or the target of a switchover): when to
/// `RESUME` every PgBouncer, for one an old leader paused and did not live to resume
/// (killed, its node lost, between its `PAUSE` and its watcher's `RESUME`). The
/// condition is the old leader's own ([`resume_verdict`] with this member as the one
/// primary: [`promoted_ready`]), held for [`PROMOTED_RESUME_GRACE_MS`] so that a living
/// old leader resumes first; past `limit_ms` (`pause_timeout` + `resume_timeout`) plus
/// the grace, whatever HAProxy says. `ready_for_ms`: how long the condition has held
/// (0 when `ready` is Err). A PgBouncer nobody paused answers "not paused" and is left
/// alone.
pub fn promoted_resume_verdict(
    me: &str,
    ready: Result<(), String>,
    ready_for_ms: u64,
    elapsed_ms: u64,
    limit_ms: u64,
) -> Verdict {
    match ready {
        Ok(()) if ready_for_ms >= PROMOTED_RESUME_GRACE_MS => {
            Verdict::Resume(ResumeReason::NewPrimary(me.into()))
        }
        Ok(()) => Verdict::Wait("leaving a living old leader time to resume them".into()),
        Err(missing) if elapsed_ms >= limit_ms + PROMOTED_RESUME_GRACE_MS => {
            Verdict::Resume(ResumeReason::Timeout(missing))
        }
        Err(missing) => Verdict::Wait(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_pause_keeps_paused_resumes_timed_out() {
        assert_eq!(
            after_pause(&[
                PauseOutcome::Paused,
                PauseOutcome::TimedOut,
                PauseOutcome::Failed("refused".into())
            ]),
            vec![
                AfterPause::KeepPaused,
                AfterPause::ResumeNow,
                AfterPause::Nothing
            ]
        );
    }

    #[test]
    fn a_new_primary_resumes_once_haproxy_routes_to_it_for_the_grace() {
        const G: u64 = PROMOTED_RESUME_GRACE_MS;
        assert_eq!(
            promoted_ready("n1", &None),
            Ok(()),
            "no HAProxy to wait for"
        );
        assert_eq!(promoted_ready("n1", &Some(Ok(true))), Ok(()));
        let not_yet = promoted_ready("n1", &Some(Ok(false)));
        assert_eq!(not_yet, Err("HAProxy does not route to n1 only yet".into()));
        let v = |ready, ready_for, elapsed| {
            promoted_resume_verdict("n1", ready, ready_for, elapsed, 10_000)
        };
        let new_primary = Verdict::Resume(ResumeReason::NewPrimary("n1".into()));
        assert!(
            matches!(v(Ok(()), G - 1, 60_000), Verdict::Wait(_)),
            "grace first"
        );
        assert_eq!(v(Ok(()), G, G), new_primary);
        assert_eq!(
            v(not_yet.clone(), 0, 10_000 + G - 1),
            Verdict::Wait(not_yet.clone().unwrap_err())
        );
        assert_eq!(
            v(Err("HAProxy: stats: HTTP 503".into()), 0, 10_000 + G),
            Verdict::Resume(ResumeReason::Timeout("HAProxy: stats: HTTP 503".into()))
        );
        // The old leader's watcher resumes at once for the same view: it comes first.
        let primaries = ["n1".to_string()];
        let old = resume_verdict(&Watch {
            me: "n0",
            shutting_down: false,
            demoted: true,
            elapsed_ms: 0,
            limit_ms: 10_000,
            primaries: &primaries,
            haproxy: Some(Ok(true)),
        });
        assert_eq!(old, new_primary);
    }

    #[test]
    fn pause_limit_keeps_half_the_lock() {
        assert_eq!(pause_limit_ms(10_000, None), 10_000);
        assert_eq!(pause_limit_ms(10_000, Some(30_000)), 10_000);
        assert_eq!(pause_limit_ms(10_000, Some(12_000)), 6_000);
        assert_eq!(pause_limit_ms(10_000, Some(0)), 0);
    }

    const CSV: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
stats,FRONTEND,,,1,1,300,2,0,0,0,0,0,,,,,OPEN,\n\
primary,FRONTEND,,,0,1,300,5,0,0,0,0,0,,,,,OPEN,\n\
primary,pg0,0,0,0,1,100,3,0,0,,0,,0,0,0,0,DOWN,1\n\
primary,pg1,0,0,0,1,100,2,0,0,,0,,0,0,0,0,UP,1\n\
primary,pg2,0,0,0,0,100,0,0,0,,0,,0,0,0,0,DOWN 1/2,1\n\
primary,BACKEND,0,0,0,1,30,5,0,0,0,0,,0,0,0,0,UP,1\n\
replicas,pg0,0,0,0,1,100,3,0,0,,0,,0,0,0,0,UP,1\n";

    fn st(name: &str, status: &str) -> ServerState {
        ServerState {
            name: name.into(),
            status: status.into(),
        }
    }

    #[test]
    fn parses_the_backend_servers() {
        assert_eq!(
            haproxy_servers(CSV, "primary").unwrap(),
            vec![st("pg0", "DOWN"), st("pg1", "UP"), st("pg2", "DOWN 1/2")]
        );
        assert_eq!(haproxy_servers(CSV, "nope").unwrap(), vec![]);
        assert!(haproxy_servers("<html>", "primary").is_err());
        assert!(haproxy_servers("# a,b\n", "primary").is_err());
    }

    #[test]
    fn routing_table() {
        let s = |v: &[(&str, &str)]| v.iter().map(|(n, x)| st(n, x)).collect::<Vec<_>>();
        // (servers, primary, expected)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Result<bool, ()>);
        let cases: &[Case] = &[
            (
                &[("pg0", "DOWN"), ("pg1", "UP"), ("pg2", "DOWN")],
                "pg1",
                Ok(true),
            ),
            // rising, not routed yet
            (&[("pg0", "DOWN"), ("pg1", "DOWN 1/2")], "pg1", Ok(false)),
            // the old primary still routed while its checks fail
            (&[("pg0", "UP 1/2"), ("pg1", "UP")], "pg1", Ok(false)),
            (&[("pg0", "UP"), ("pg1", "UP")], "pg1", Ok(false)),
            (&[("pg0", "MAINT"), ("pg1", "no check")], "pg1", Ok(true)),
            (&[("pg0", "DOWN"), ("pg1", "UP")], "pg9", Err(())),
        ];
        for (servers, primary, want) in cases {
            let got = routes_only_to(&s(servers), primary).map_err(|_| ());
            assert_eq!(&got, want, "{servers:?} {primary}");
        }
    }

    #[test]
    fn resume_table() {
        let none: Vec<String> = vec![];
        let me = vec!["pg0".to_string()];
        let new = vec!["pg1".to_string()];
        let two = vec!["pg1".to_string(), "pg2".to_string()];
        let w = |demoted, elapsed_ms, primaries, haproxy| Watch {
            me: "pg0",
            shutting_down: false,
            demoted,
            elapsed_ms,
            limit_ms: 40_000,
            primaries,
            haproxy,
        };
        let resume = |r| Verdict::Resume(r);
        let new_primary = || resume(ResumeReason::NewPrimary("pg1".into()));
        let waits = |v: &Verdict| matches!(v, Verdict::Wait(_));
        let timed_out = |v: &Verdict| matches!(v, Verdict::Resume(ResumeReason::Timeout(_)));
        // shutting down: resume whatever the state
        let mut down = w(false, 0, &none, None);
        down.shutting_down = true;
        assert_eq!(resume_verdict(&down), resume(ResumeReason::Shutdown));
        // still demoting: wait, however things look, until the bound
        assert!(waits(&resume_verdict(&w(false, 100, &new, None))));
        assert!(timed_out(&resume_verdict(&w(false, 40_000, &none, None))));
        // the new primary accepts writes, no HAProxy configured
        assert_eq!(resume_verdict(&w(true, 100, &new, None)), new_primary());
        // HAProxy configured: only once it routes to the new primary only
        assert!(waits(&resume_verdict(&w(true, 100, &new, Some(Ok(false))))));
        assert_eq!(
            resume_verdict(&w(true, 100, &new, Some(Ok(true)))),
            new_primary()
        );
        assert!(waits(&resume_verdict(&w(
            true,
            100,
            &new,
            Some(Err("x".into()))
        ))));
        assert!(timed_out(&resume_verdict(&w(
            true,
            40_001,
            &new,
            Some(Ok(false))
        ))));
        // the switchover failed: I am primary again -> resume (once HAProxy routes to me)
        assert_eq!(
            resume_verdict(&w(true, 100, &me, None)),
            resume(ResumeReason::StillPrimary)
        );
        assert!(waits(&resume_verdict(&w(true, 100, &me, Some(Ok(false))))));
        assert_eq!(
            resume_verdict(&w(true, 100, &me, Some(Ok(true)))),
            resume(ResumeReason::StillPrimary)
        );
        // nobody yet: wait, then the bound
        assert!(waits(&resume_verdict(&w(true, 39_999, &none, None))));
        assert!(timed_out(&resume_verdict(&w(true, 40_000, &none, None))));
        // two members claim the primary role (a stale REST answer): wait
        assert!(waits(&resume_verdict(&w(true, 100, &two, None))));
        assert!(timed_out(&resume_verdict(&w(true, 50_000, &two, None))));
    }
}
