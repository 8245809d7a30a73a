//! Table tests: the transitions Patroni's resolver produces for the same states (the
//! cases of Patroni's own quorum tests), each also checked when interrupted after its
//! first transition — the next cycle must finish the plan.

use super::*;

/// Single-letter names: `"bcd"` = {b, c, d}.
fn set(s: &str) -> Vec<String> {
    s.chars().map(|c| c.to_string()).collect()
}

/// (kind, leader or "" for sync, num, names)
type Expect = (&'static str, &'static str, usize, &'static str);

#[allow(clippy::too_many_arguments)]
fn input(
    leader: &str,
    quorum: u32,
    voters: &str,
    numsync: usize,
    sync: &str,
    confirmed: usize,
    active: &str,
    wanted: usize,
    leader_wanted: &str,
) -> QuorumInput {
    QuorumInput {
        leader: leader.into(),
        quorum,
        voters: set(voters),
        numsync,
        sync: set(sync),
        numsync_confirmed: confirmed,
        active: set(active),
        sync_wanted: wanted,
        leader_wanted: leader_wanted.into(),
    }
}

fn same(a: &[String], b: &str) -> bool {
    Names::of(a) == Names::of(set(b))
}

fn check(i: QuorumInput, expected: &[Expect]) {
    let plan = resolve(&i).unwrap_or_else(|e| panic!("{i:?}: {e}"));
    assert_eq!(
        plan.transitions.len(),
        expected.len(),
        "{i:?}\n got {:?}\n want {expected:?}",
        plan.transitions
    );
    for (t, e) in plan.transitions.iter().zip(expected) {
        let ok = match t {
            Transition::Sync { num, names } => e.0 == "sync" && *num == e.2 && same(names, e.3),
            Transition::Quorum {
                leader,
                quorum,
                voters,
            } => {
                e.0 == "quorum"
                    && leader.eq_ignore_ascii_case(e.1)
                    && *quorum as usize == e.2
                    && same(voters, e.3)
            }
            Transition::Restart => e.0 == "restart",
        };
        assert!(ok, "{i:?}\n got {:?}\n want {expected:?}", plan.transitions);
    }
    // Interrupted after the first transition: the rest follows from the new state.
    let Some(first) = plan.transitions.first() else {
        return;
    };
    let mut next = i.clone();
    match first {
        Transition::Restart => return,
        Transition::Sync { num, names } => {
            next.numsync = *num;
            next.sync = names.clone();
        }
        Transition::Quorum {
            leader,
            quorum,
            voters,
        } => {
            if *leader != i.leader {
                return;
            }
            next.quorum = *quorum;
            next.voters = voters.clone();
        }
    }
    check(next, &expected[1..]);
}

#[test]
fn adding_the_first_standbys() {
    check(
        input("a", 0, "", 0, "", 0, "b", 2, "a"),
        &[("sync", "", 1, "b"), ("restart", "", 0, "")],
    );
    check(
        input("a", 0, "", 1, "b", 1, "b", 2, "a"),
        &[("quorum", "a", 0, "b")],
    );
    check(
        input("a", 0, "", 0, "", 0, "bcde", 2, "a"),
        &[("sync", "", 2, "bcde"), ("restart", "", 0, "")],
    );
    check(
        input("a", 0, "", 2, "bcde", 1, "bcde", 2, "a"),
        &[("quorum", "a", 3, "bcde")],
    );
}

#[test]
fn two_node_cluster() {
    check(input("a", 0, "b", 1, "b", 1, "b", 2, "a"), &[]);
    // add a node by raising the quorum (names compare case-insensitively)
    check(
        input("a", 0, "b", 1, "b", 1, "BC", 1, "a"),
        &[("quorum", "a", 1, "bc"), ("sync", "", 1, "bc")],
    );
    // add a node by raising numsync
    check(
        input("a", 0, "b", 1, "b", 1, "bc", 2, "a"),
        &[("sync", "", 2, "bc"), ("quorum", "a", 1, "bc")],
    );
    check(
        input("a", 1, "bc", 2, "bc", 2, "bc", 2, "a"),
        &[("quorum", "a", 0, "bc")],
    );
    check(
        input("a", 0, "b", 1, "b", 1, "BCdE", 2, "a"),
        &[
            ("sync", "", 2, "bc"),
            ("quorum", "a", 3, "bcde"),
            ("sync", "", 2, "bcde"),
        ],
    );
    check(
        input("a", 3, "bcde", 2, "bcde", 3, "bcde", 2, "a"),
        &[("quorum", "a", 2, "bcde")],
    );
    // the primary is alone
    check(
        input("a", 0, "b", 1, "b", 0, "", 1, "a"),
        &[("quorum", "a", 0, ""), ("sync", "", 0, "")],
    );
    // swap the synchronous standby
    check(
        input("a", 0, "b", 1, "b", 0, "c", 1, "a"),
        &[
            ("quorum", "a", 0, ""),
            ("sync", "", 1, "c"),
            ("restart", "", 0, ""),
        ],
    );
    check(
        input("a", 0, "", 1, "c", 1, "c", 1, "a"),
        &[("quorum", "a", 0, "c")],
    );
}

#[test]
fn interrupted_growth_to_three_synchronous_nodes() {
    check(
        input("a", 0, "b", 2, "bc", 1, "b", 2, "a"),
        &[("sync", "", 1, "b")],
    );
    check(
        input("a", 0, "b", 2, "bc", 1, "bc", 2, "a"),
        &[("quorum", "a", 1, "bc")],
    );
    check(
        input("a", 0, "b", 2, "bc", 1, "bcd", 2, "a"),
        &[("quorum", "a", 2, "bcd"), ("sync", "", 2, "bcd")],
    );
    check(
        input("a", 2, "bcd", 2, "bcd", 3, "bcd", 2, "a"),
        &[("quorum", "a", 1, "bcd")],
    );
    check(
        input("a", 0, "b", 2, "bc", 1, "bc", 1, "a"),
        &[("quorum", "a", 1, "bc"), ("sync", "", 1, "bc")],
    );
}

#[test]
fn interrupted_growth_with_replication_factor_two() {
    check(
        input("a", 1, "bc", 1, "b", 1, "b", 1, "a"),
        &[("quorum", "a", 0, "b")],
    );
    check(
        input("a", 1, "bc", 1, "b", 1, "bc", 1, "a"),
        &[("sync", "", 1, "bc")],
    );
    check(
        input("a", 1, "bc", 1, "b", 1, "bcd", 1, "a"),
        &[
            ("sync", "", 1, "bc"),
            ("quorum", "a", 2, "bcd"),
            ("sync", "", 1, "bcd"),
        ],
    );
    check(
        input("a", 1, "bc", 1, "b", 1, "bc", 2, "a"),
        &[("sync", "", 2, "bc")],
    );
    check(
        input("a", 1, "bc", 2, "bc", 2, "bc", 2, "a"),
        &[("quorum", "a", 0, "bc")],
    );
}

#[test]
fn five_nodes_shrinking_and_growing() {
    check(
        input("a", 2, "bcde", 2, "bcde", 2, "bc", 2, "a"),
        &[("sync", "", 2, "bc"), ("quorum", "a", 0, "bc")],
    );
    check(
        input("a", 2, "bcde", 2, "bcde", 3, "bcd", 2, "a"),
        &[("sync", "", 2, "bcd"), ("quorum", "a", 1, "bcd")],
    );
    check(
        input("a", 2, "bcde", 2, "bcde", 2, "bc", 1, "a"),
        &[
            ("sync", "", 2, "bc"),
            ("quorum", "a", 1, "bc"),
            ("sync", "", 1, "bc"),
        ],
    );
    check(
        input("a", 1, "bcde", 3, "bcde", 2, "bc", 1, "a"),
        &[
            ("sync", "", 3, "bcd"),
            ("quorum", "a", 1, "bc"),
            ("sync", "", 1, "bc"),
        ],
    );
    check(
        input("a", 2, "bcde", 2, "bcde", 2, "bcde", 3, "a"),
        &[("sync", "", 3, "bcde")],
    );
    check(
        input("a", 2, "bcde", 3, "bcde", 3, "bcde", 3, "a"),
        &[("quorum", "a", 1, "bcde")],
    );
    check(
        input("a", 2, "bcde", 2, "bcde", 2, "bcdef", 1, "a"),
        &[("quorum", "a", 4, "bcdef"), ("sync", "", 1, "bcdef")],
    );
    check(
        input("a", 2, "bcde", 2, "bcde", 2, "bcd", 3, "a"),
        &[("sync", "", 3, "bcd"), ("quorum", "a", 1, "bcd")],
    );
}

#[test]
fn nosync_node_removed_and_node_swapped() {
    check(
        input("a", 0, "bc", 2, "bc", 1, "b", 2, "a"),
        &[("quorum", "a", 0, "b"), ("sync", "", 1, "b")],
    );
    check(
        input("a", 0, "bc", 2, "bc", 1, "bd", 2, "a"),
        &[
            ("quorum", "a", 0, "b"),
            ("sync", "", 2, "bd"),
            ("quorum", "a", 1, "bd"),
        ],
    );
}

#[test]
fn promotion_makes_the_old_leader_a_voter() {
    check(
        input("a", 2, "bcd", 0, "", 0, "", 1, "c"),
        &[("sync", "", 1, "abd"), ("quorum", "c", 2, "abd")],
    );
    check(
        input("c", 2, "abd", 1, "abd", 0, "b", 1, "c"),
        &[("sync", "", 1, "b"), ("quorum", "c", 0, "b")],
    );
    check(
        input("c", 2, "abd", 1, "abd", 0, "", 1, "c"),
        &[("quorum", "c", 0, ""), ("sync", "", 0, "")],
    );
    // a node outside the voters promoted
    check(
        input("a", 1, "bc", 0, "", 0, "", 1, "d"),
        &[("sync", "", 2, "abc"), ("quorum", "d", 1, "abc")],
    );
    check(
        input("d", 1, "abc", 2, "abc", 0, "bc", 1, "d"),
        &[
            ("sync", "", 2, "bc"),
            ("quorum", "d", 1, "bc"),
            ("sync", "", 1, "bc"),
        ],
    );
    check(
        input("d", 1, "abc", 2, "abc", 0, "", 1, "d"),
        &[("quorum", "d", 0, ""), ("sync", "", 0, "")],
    );
    // promoted with empty synchronous_standby_names
    check(
        input("a", 1, "bc", 1, "", 0, "", 1, "c"),
        &[("sync", "", 1, "ab"), ("quorum", "c", 1, "ab")],
    );
    check(
        input("c", 1, "ab", 1, "ab", 0, "b", 1, "c"),
        &[("sync", "", 1, "b"), ("quorum", "c", 0, "b")],
    );
}

#[test]
fn unsafe_or_foreign_states_are_repaired_with_a_warning() {
    // quorum 0 with two voters and numsync 1: the sets may not overlap
    let plan = resolve(&input("a", 0, "bc", 1, "bc", 1, "bc", 1, "a")).expect("plan");
    assert!(plan
        .warning
        .as_deref()
        .is_some_and(|w| w.starts_with("Quorum and sync not guaranteed to overlap")));
    check(
        input("a", 0, "bc", 1, "bc", 1, "bc", 1, "a"),
        &[("quorum", "a", 1, "bc")],
    );
    // somebody else changed synchronous_standby_names
    let plan = resolve(&input("a", 1, "bc", 2, "bd", 1, "bd", 1, "a")).expect("plan");
    assert!(plan
        .warning
        .as_deref()
        .is_some_and(|w| w.starts_with("Mismatched sets")));
    check(
        input("a", 1, "bc", 2, "bd", 1, "bd", 1, "a"),
        &[("quorum", "a", 1, "bd"), ("sync", "", 1, "bd")],
    );
}

#[test]
fn high_numsync_with_low_quorum() {
    check(
        input("a", 2, "bcdef", 4, "bcdef", 3, "bcdef", 2, "a"),
        &[("quorum", "a", 3, "bcdef"), ("sync", "", 2, "bcdef")],
    );
}

#[test]
fn steps_that_break_the_bounds_are_refused() {
    let mut r = Resolver {
        leader: "a".into(),
        quorum: 1,
        voters: Names::of(set("bc")),
        numsync: 1,
        sync: Names::of(set("bc")),
        numsync_confirmed: 1,
        active: Names::of(set("bc")),
        sync_wanted: 1,
        leader_wanted: "a".into(),
        out: vec![],
    };
    assert!(r.quorum_update(-1, Names::default(), None, true).is_err());
    assert!(r.quorum_update(1, Names::default(), None, true).is_err());
    assert!(r.sync_update(-1, Names::default()).is_err());
    assert!(r.sync_update(1, Names::default()).is_err());
    assert!(r.out.is_empty());
}

#[test]
fn removing_nodes_while_lowering_numsync() {
    check(
        input("a", 1, "bcdef", 4, "bcdef", 2, "bcd", 2, "a"),
        &[
            ("sync", "", 4, "bcde"),
            ("quorum", "a", 1, "bcd"),
            ("sync", "", 2, "bcd"),
        ],
    );
    check(
        input("a", 1, "bcdef", 4, "bcde", 2, "bcdg", 2, "a"),
        &[
            ("quorum", "a", 1, "bcd"),
            ("sync", "", 3, "bcd"),
            ("quorum", "a", 2, "bcdg"),
            ("sync", "", 2, "bcdg"),
        ],
    );
    check(
        input("a", 1, "bcdef", 4, "bcde", 2, "bcdf", 2, "a"),
        &[
            ("sync", "", 4, "bcdf"),
            ("quorum", "a", 2, "bcdf"),
            ("sync", "", 2, "bcdf"),
        ],
    );
    check(
        input("a", 1, "bcdef", 4, "bcde", 2, "bcde", 2, "a"),
        &[("quorum", "a", 2, "bcde"), ("sync", "", 2, "bcde")],
    );
    check(
        input("a", 1, "bcdef", 4, "bcde", 2, "cd", 1, "a"),
        &[("quorum", "a", 1, "cd"), ("sync", "", 1, "cd")],
    );
}
