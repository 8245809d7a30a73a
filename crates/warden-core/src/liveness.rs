//! Is the HA loop alive? The judgement behind systemd's watchdog (`WATCHDOG=1`).
//!
//! systemd restarts a unit with `WatchdogSec=` when no `WATCHDOG=1` arrives for
//! `WATCHDOG_USEC`. The agent pings every half of that, but only while the HA loop is
//! healthy, so that a loop stuck in one cycle (blocked on etcd or PostgreSQL) gets the
//! agent restarted, while a live loop, which sleeps `loop_wait` between cycles, does not.
//!
//! The loop is *due* at the later of its last completed cycle and the start it scheduled
//! for the next one (`loop_wait` after the last start, or earlier when woken). It is
//! healthy until `grace` after that instant. The grace is half the watchdog interval:
//! pings come every half interval, so the last ping of a stuck loop falls within the
//! half interval before `due + grace`, and systemd fires a full interval after it, i.e.
//! when the cycle has been overdue for between one and one and a half intervals. A cycle
//! overdue for less than a full interval never gets the agent restarted; one overdue for
//! more than one and a half intervals always does. With the guides' `WatchdogSec=120`
//! and Patroni's defaults (`loop_wait` 10, `retry_timeout` 10) a cycle that waits out a
//! whole etcd outage is far from either bound.

/// The watchdog's timings, from systemd's `WATCHDOG_USEC` (microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchdogTimings {
    /// How long systemd waits for a ping (ms).
    pub interval_ms: u64,
}

impl WatchdogTimings {
    /// From `WATCHDOG_USEC`; None for 0 (systemd's "off") or an interval under 2 ms,
    /// too short to be met.
    pub fn from_usec(usec: u64) -> Option<WatchdogTimings> {
        let interval_ms = usec / 1000;
        (interval_ms >= 2).then_some(WatchdogTimings { interval_ms })
    }

    /// How often a healthy agent pings: half the interval (sd_watchdog_enabled(3)
    /// recommends it).
    pub fn ping_every_ms(&self) -> u64 {
        self.interval_ms / 2
    }

    /// How long the HA loop may be overdue and still count as healthy: half the interval
    /// (see the module documentation).
    pub fn grace_ms(&self) -> u64 {
        self.interval_ms / 2
    }
}

/// Whether the HA loop is healthy at `now_ms`: its last cycle completed at
/// `last_completed_ms` and it scheduled the next start for `next_due_ms` (all on one
/// monotonic clock); `None` for `last_completed_ms` means no cycle has completed yet,
/// which is not healthy (the first cycle ends in `READY=1`, before which systemd does
/// not watch).
pub fn loop_healthy(
    last_completed_ms: Option<u64>,
    next_due_ms: u64,
    now_ms: u64,
    timings: WatchdogTimings,
) -> bool {
    let Some(done) = last_completed_ms else {
        return false;
    };
    now_ms <= done.max(next_due_ms).saturating_add(timings.grace_ms())
}

/// Whether to send `WATCHDOG=1` now: the loop is healthy and the last ping (if any) was
/// at least [`WatchdogTimings::ping_every_ms`] ago.
pub fn should_ping(
    last_completed_ms: Option<u64>,
    next_due_ms: u64,
    last_ping_ms: Option<u64>,
    now_ms: u64,
    timings: WatchdogTimings,
) -> bool {
    let ping_due = last_ping_ms.is_none_or(|p| now_ms.saturating_sub(p) >= timings.ping_every_ms());
    ping_due && loop_healthy(last_completed_ms, next_due_ms, now_ms, timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: WatchdogTimings = WatchdogTimings { interval_ms: 2000 };

    #[test]
    fn timings_from_usec() {
        assert_eq!(
            WatchdogTimings::from_usec(120_000_000),
            Some(WatchdogTimings {
                interval_ms: 120_000
            })
        );
        assert_eq!(WatchdogTimings::from_usec(0), None);
        assert_eq!(WatchdogTimings::from_usec(1_999), None);
        let t = WatchdogTimings::from_usec(2_000_000).unwrap();
        assert_eq!((t.ping_every_ms(), t.grace_ms()), (1000, 1000));
    }

    #[test]
    fn health_table() {
        // (last completed, next due, now, healthy)
        let cases: &[(Option<u64>, u64, u64, bool)] = &[
            // No cycle completed yet.
            (None, 0, 0, false),
            (None, 5_000, 100, false),
            // Sleeping between cycles (loop_wait 10 s): healthy until due + grace.
            (Some(10_000), 20_000, 12_000, true),
            (Some(10_000), 20_000, 20_000, true),
            (Some(10_000), 20_000, 21_000, true),
            (Some(10_000), 20_000, 21_001, false),
            // A cycle that has run 30 s past its start.
            (Some(10_000), 20_000, 50_000, false),
            // Rescheduled immediately (due already past at completion): the completion
            // counts.
            (Some(30_000), 20_000, 30_900, true),
            (Some(30_000), 20_000, 31_001, false),
            // Clock values near the end of u64 do not overflow.
            (Some(u64::MAX - 10), u64::MAX - 5, u64::MAX, true),
        ];
        for (i, &(done, due, now, want)) in cases.iter().enumerate() {
            assert_eq!(loop_healthy(done, due, now, T), want, "case {i}");
        }
    }

    #[test]
    fn ping_table() {
        /// (last completed, next due, last ping, now, ping?)
        type Case = (Option<u64>, u64, Option<u64>, u64, bool);
        let cases: &[Case] = &[
            // First ping as soon as the first cycle completed.
            (Some(1_000), 3_000, None, 1_000, true),
            (None, 0, None, 1_000, false),
            // Not again within half the interval.
            (Some(1_000), 3_000, Some(1_000), 1_999, false),
            (Some(1_000), 3_000, Some(1_000), 2_000, true),
            // Ping due, but the loop is stuck: none.
            (Some(1_000), 3_000, Some(3_000), 4_001, false),
            (Some(1_000), 3_000, Some(3_000), 60_000, false),
            // The stuck cycle completed: pings resume at once.
            (Some(60_000), 62_000, Some(3_000), 60_000, true),
        ];
        for (i, &(done, due, last, now, want)) in cases.iter().enumerate() {
            assert_eq!(should_ping(done, due, last, now, T), want, "case {i}");
        }
    }

    /// Whatever the moment a cycle gets stuck, systemd (restart when no ping for a whole
    /// interval) restarts the agent after the cycle has been overdue for at least one
    /// interval and at most one and a half, simulated in 10 ms steps of a 100 ms tick.
    #[test]
    fn stuck_cycle_is_restarted_between_one_and_one_and_a_half_intervals() {
        for stuck_at in (0..2_000).step_by(37) {
            let due = 10_000 + stuck_at;
            let (done, mut last_ping) = (Some(due - 1_000), Some(due - 1_000));
            let mut now = due - 1_000;
            let restart_at = loop {
                now += 100;
                if should_ping(done, due, last_ping, now, T) {
                    last_ping = Some(now);
                }
                let last = last_ping.unwrap();
                if now - last > T.interval_ms {
                    break now;
                }
            };
            let overdue = restart_at - due;
            assert!(
                overdue > T.interval_ms && overdue <= T.interval_ms * 3 / 2 + 100,
                "stuck at {stuck_at}: restarted {overdue} ms after the cycle was due"
            );
        }
    }
}
