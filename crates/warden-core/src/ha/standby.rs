//! The HA rules of a standby cluster (Patroni's `is_standby_cluster()` branches of
//! `recover`, `process_unhealthy_cluster`, `process_healthy_cluster` and `follow`).
//!
//! The lock holder is the *standby leader*: it runs PostgreSQL as a standby that follows
//! the remote site named by `standby_cluster`, publishes `status` like a leader and hands
//! its role over on a switchover; it never promotes. The other members follow it; while
//! nobody holds the lock they follow the remote site directly. A primary found in a
//! standby cluster is demoted: the lock holder keeps the lock and becomes the standby
//! leader (`demote-cluster`), any other primary stops.
//!
//! Rule numbers refer to spec/ha-loop.md; quoted reasons are Patroni's.

use super::{act, Action, DemoteMode, HaInput, LockUpdate, Question, Step};
use crate::cluster::Cluster;
use crate::standby::StandbyCluster;

/// B1 won in a standby cluster: build the standby leader from the remote site.
pub(super) fn bootstrap(sc: &StandbyCluster) -> Step {
    act(
        vec![Action::BootstrapStandbyLeader {
            source: sc.source.clone(),
            create_replica_methods: sc.create_replica_methods.clone(),
        }],
        "trying to bootstrap a new standby leader",
    )
}

/// The cycle of a node with a valid data directory in a standby cluster.
pub(super) fn decide(
    i: &HaInput<'_>,
    cluster: &Cluster,
    sc: &StandbyCluster,
    i_hold_lock: bool,
) -> Step {
    if !i.pg.running {
        not_running(i, cluster, sc, i_hold_lock)
    } else if cluster.is_unlocked() {
        unlocked(i, cluster, sc)
    } else if i_hold_lock {
        locked_by_me(i, cluster, sc)
    } else {
        locked_by_other(i, cluster)
    }
}

/// Reconfigure PostgreSQL to follow the remote site in this role, unless it already
/// does exactly that.
fn follow_remote_if_needed(
    i: &HaInput<'_>,
    sc: &StandbyCluster,
    standby_leader: bool,
) -> Vec<Action> {
    if i.pg.remote.as_ref() == Some(&sc.source) && i.pg.standby_leader == standby_leader {
        return vec![];
    }
    vec![Action::FollowRemote {
        source: sc.source.clone(),
        standby_leader,
    }]
}

/// R1–R6 in a standby cluster: the lock holder starts as the standby leader, a member of
/// an unlocked cluster follows the remote site (R5 never applies: nothing promotes).
fn not_running(i: &HaInput<'_>, cluster: &Cluster, sc: &StandbyCluster, i_hold_lock: bool) -> Step {
    // In pause nobody starts PostgreSQL; a member of a cluster someone else leads
    // follows that standby leader as any replica follows its leader.
    if i.settings.paused || !(i_hold_lock || cluster.is_unlocked()) {
        return super::pg_not_running(i, cluster, i_hold_lock);
    }
    if i_hold_lock {
        match i.answers.update {
            None => return Step::Ask(Question::UpdateLeader),
            Some(LockUpdate::DcsError) => return super::dcs_unreachable(i),
            Some(LockUpdate::Renewed) => {
                if i.memory.start_failed {
                    return act(
                        vec![Action::AbandonLeader],
                        "removed leader key after trying and failing to start postgres",
                    );
                }
                return act(
                    vec![Action::FollowRemote {
                        source: sc.source.clone(),
                        standby_leader: true,
                    }],
                    "starting as a standby leader because i had the session lock",
                );
            }
            // Someone else holds it now: start as a replica; the next cycle follows them.
            Some(LockUpdate::Lost) => {}
        }
    }
    act(
        vec![Action::FollowRemote {
            source: sc.source.clone(),
            standby_leader: false,
        }],
        "trying to follow a remote member because standby cluster is unhealthy",
    )
}

/// U1–U3 in a standby cluster: no race backoff (nobody writes here); the winner becomes
/// the standby leader instead of promoting; the others follow the remote site.
fn unlocked(i: &HaInput<'_>, cluster: &Cluster, sc: &StandbyCluster) -> Step {
    let healthy = match super::healthiest(i, cluster) {
        Ok(h) => h,
        Err(step) => return step,
    };
    let paused = i.settings.paused;
    if let Err(why) = healthy {
        let nofailover = i.settings.nofailover && !paused;
        if i.pg.is_primary && !paused {
            return act(
                vec![Action::Demote {
                    mode: DemoteMode::ImmediateNoLock,
                }],
                if nofailover {
                    "demoting self because I am not allowed to become primary".to_string()
                } else {
                    format!("demoting self because i am not the healthiest node ({why})")
                },
            );
        }
        let msg = if nofailover {
            "following a different leader because I am not allowed to promote".to_string()
        } else if paused {
            format!("no action. I am ({}), cluster is unlocked", i.me)
        } else {
            format!("following a different leader because i am not the healthiest node ({why})")
        };
        // Without a standby leader every member follows the remote site (not in pause,
        // where Patroni follows nobody new).
        let actions = if paused {
            vec![]
        } else {
            follow_remote_if_needed(i, sc, false)
        };
        return act(actions, msg);
    }
    let clear: Vec<Action> = cluster
        .failover
        .as_ref()
        .map(|f| Action::ClearFailover { version: f.version })
        .into_iter()
        .collect();
    match i.answers.acquire {
        None => Step::Ask(Question::AcquireLeader),
        Some(true) if i.pg.is_primary => {
            if paused {
                return act(clear, "continue to run as primary without lock");
            }
            act(
                [
                    clear,
                    vec![Action::DemoteToStandby {
                        source: sc.source.clone(),
                    }],
                ]
                .concat(),
                "cannot be a real primary in standby cluster",
            )
        }
        Some(true) => act(
            [
                clear,
                vec![
                    Action::FollowRemote {
                        source: sc.source.clone(),
                        standby_leader: true,
                    },
                    Action::LeaderHousekeeping,
                ],
            ]
            .concat(),
            "promoted self to a standby leader by acquiring session lock",
        ),
        Some(false) if i.pg.is_primary => act(
            vec![Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
            }],
            "demoted self after trying and failing to obtain lock",
        ),
        Some(false) => act(
            vec![],
            "following new leader after trying and failing to obtain lock",
        ),
    }
}

/// H1/H2 in a standby cluster: the lock holder keeps the lock in pause too, hands the
/// role over on a switchover, turns a primary into the standby leader and keeps its
/// recovery configuration pointed at the remote site.
fn locked_by_me(i: &HaInput<'_>, cluster: &Cluster, sc: &StandbyCluster) -> Step {
    let paused = i.settings.paused;
    match i.answers.update {
        None => return Step::Ask(Question::UpdateLeader),
        Some(LockUpdate::DcsError) => return super::dcs_unreachable(i),
        Some(LockUpdate::Lost) if i.pg.is_primary => {
            if paused {
                return act(
                    vec![],
                    "continue to run as primary after failing to update leader lock in DCS",
                );
            }
            return act(
                vec![Action::Demote {
                    mode: DemoteMode::ImmediateNoLock,
                }],
                "demoted self because failed to update leader lock in DCS",
            );
        }
        Some(LockUpdate::Lost) => {
            return act(
                vec![],
                "not promoting because failed to update leader lock in DCS",
            )
        }
        Some(LockUpdate::Renewed) => {}
    }
    // L15: Patroni leaves a request alone only for a paused standby leader.
    if !paused || i.pg.is_primary {
        if let Some(step) = super::leader_handles_request(i, cluster) {
            return step;
        }
    }
    if i.pg.is_primary {
        if paused {
            return act(
                vec![Action::LeaderHousekeeping],
                "continue to run as primary without lock",
            );
        }
        return act(
            vec![Action::DemoteToStandby {
                source: sc.source.clone(),
            }],
            "cannot be a real primary in standby cluster",
        );
    }
    let msg = if i.pg.standby_leader {
        format!(
            "no action. I am ({}), the standby leader with the lock",
            i.me
        )
    } else {
        "promoted self to a standby leader because i had the session lock".to_string()
    };
    let mut actions = follow_remote_if_needed(i, sc, true);
    actions.push(Action::LeaderHousekeeping);
    actions.extend(super::failsafe_key_update(i, cluster));
    act(actions, msg)
}

/// H3 in a standby cluster: follow the standby leader (or `replicatefrom`); a primary
/// here stops at once.
fn locked_by_other(i: &HaInput<'_>, cluster: &Cluster) -> Step {
    let leader = cluster.leader_name().unwrap_or_default();
    if i.pg.is_primary {
        if i.settings.paused {
            return act(vec![], "continue to run as primary without lock");
        }
        return act(
            vec![Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
            }],
            "cannot be a real primary in a standby cluster",
        );
    }
    // The leader key of a standby cluster may name a member that is gone (or never
    // published how to reach it): keep following whoever PostgreSQL follows now.
    let reachable = super::node_to_follow(i, cluster)
        .and_then(|n| cluster.member(&n))
        .is_some_and(|m| m.data.conn_url.is_some());
    if !reachable {
        return act(vec![], "continue following the old known standby leader");
    }
    let msg = format!(
        "no action. I am ({}), a secondary, and following a standby leader ({leader})",
        i.me
    );
    super::follow_leader(i, cluster, leader, msg)
}
