//! Rules about taking and keeping the leader role that depend on timers and the
//! watchdog: `primary_race_backoff` (U1) and watchdog activation (P1, C1.7).
//!
//! Kept apart from the main decision so that the executor-side state they read (the
//! backoff timer, the previous cycle's WAL position, the watchdog's health) stays in
//! one place; `decide` calls in at the points ha-loop.md names.

use super::{act, Action, DemoteMode, HaInput, Step};
use crate::cluster::Cluster;

/// U1: postpone the leader race while the old primary still seems to write, or `None` to
/// race now (Patroni's `process_unhealthy_cluster`).
///
/// Applies only when `primary_race_backoff` > 0, not paused, no failover request names a
/// candidate, and the WAL position of the previous cycle is known. The timer starts at
/// the first unlocked observation ([`NodeMemory::race_backoff_started_ms`], kept by the
/// executor, cleared whenever the cluster has a leader). The race is postponed while
/// (time is left, my WAL receiver streams and my WAL moved since the previous cycle), and
/// in any case during the first `loop_wait` of the backoff: the lock may have expired
/// right after the old primary's last renewal, so its WAL has had no chance to move yet.
///
/// [`NodeMemory::race_backoff_started_ms`]: super::NodeMemory::race_backoff_started_ms
pub(super) fn race_backoff(i: &HaInput<'_>, cluster: &Cluster) -> Option<Step> {
    let s = i.settings;
    let candidate_named = cluster
        .failover
        .as_ref()
        .is_some_and(|f| f.member.is_some());
    if s.primary_race_backoff == 0 || s.paused || candidate_named {
        return None;
    }
    let prev = i.memory.prev_wal_position?;
    let started = i.memory.race_backoff_started_ms.unwrap_or(i.now_ms);
    let backoff_ms = s.primary_race_backoff.saturating_mul(1000) as i64;
    let time_left_ms = started as i64 + backoff_ms - i.now_ms as i64;
    let wal_moved = i.pg.streaming && i.pg.wal_position > prev;
    let first_loop = time_left_ms > backoff_ms - s.loop_wait.saturating_mul(1000) as i64;
    if !((time_left_ms > 0 && wal_moved) || first_loop) {
        return None;
    }
    Some(act(
        vec![Action::PostponeRace {
            started_ms: started,
            retry_in_ms: u64::try_from(time_left_ms).unwrap_or(0),
        }],
        format!(
            "My ({}) wal position moved since last heart beat loop, {} seconds until leader race",
            i.me,
            python_round(time_left_ms as f64 / 1000.0)
        ),
    ))
}

/// Python's `'{:.0f}'.format(x)`: round half to even, `-0` for small negatives.
fn python_round(x: f64) -> String {
    let r = x.round_ties_even();
    if r == 0.0 && x.is_sign_negative() {
        "-0".to_string()
    } else {
        format!("{r:.0}")
    }
}

/// P1: arm the watchdog before leading (not in pause, where Patroni disables it).
pub(super) fn arm_watchdog(i: &HaInput<'_>) -> Vec<Action> {
    if i.settings.paused {
        vec![]
    } else {
        vec![Action::ActivateWatchdog]
    }
}

/// P1 failure: `watchdog.mode: required` and the watchdog is not usable (or could not be
/// activated), so this node must not lead: a primary demotes (releasing the lock), a
/// replica gives the lock back without promoting. `None` when leading is allowed.
pub(super) fn watchdog_forbids_leading(i: &HaInput<'_>) -> Option<Step> {
    if i.settings.paused || !i.settings.watchdog_failed {
        return None;
    }
    Some(if i.pg.is_primary {
        act(
            vec![Action::Demote {
                mode: DemoteMode::Immediate,
            }],
            "Demoting self because watchdog could not be activated",
        )
    } else {
        act(
            vec![Action::ReleaseLeader],
            "Not promoting self because watchdog could not be activated",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::python_round;

    #[test]
    fn rounds_like_python_format() {
        for (x, want) in [
            (6.0, "6"),
            (2.5, "2"),
            (3.5, "4"),
            (2.4999, "2"),
            (0.4, "0"),
            (-0.4, "-0"),
            (-1.6, "-2"),
        ] {
            assert_eq!(python_round(x), want, "{x}");
        }
    }
}
