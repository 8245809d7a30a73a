//! Quorum commit (`synchronous_mode: quorum`): the order in which
//! `synchronous_standby_names` (`ANY numsync (sync)`) and the `sync` key (`quorum` of
//! `voters`) change, as Patroni's `QuorumStateResolver` computes it.
//!
//! The invariant: any set of nodes that can acknowledge a commit overlaps any set of nodes
//! that can win the leader race, i.e. `|voters ∪ sync| ≤ quorum + numsync + 1` (the
//! leader counted in both). When a number grows the growing side is changed first; when
//! it shrinks, last. A failover makes the old leader a voter. Every step is checked
//! against the invariant, and the whole plan is refused (nothing changes) when a step
//! would break it. Transitions of the same kind in a row are merged, as nobody can
//! observe the state in between.
//!
//! Kept line by line close to Patroni's `patroni/quorum.py` so that mixed clusters agree;
//! the one difference is that name sets are ordered case-insensitively.

use std::fmt;

/// A change to make, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// `synchronous_standby_names = ANY num (names)`.
    Sync {
        /// standbys PostgreSQL waits for
        num: usize,
        /// the standbys listed
        names: Vec<String>,
    },
    /// The `sync` key: `leader`, `quorum`, `sync_standby` = voters.
    Quorum {
        /// leader field
        leader: String,
        /// quorum field
        quorum: u32,
        /// sync_standby field
        voters: Vec<String>,
    },
    /// Stop here and look again shortly: standbys just added to
    /// `synchronous_standby_names` still have to confirm.
    Restart,
}

/// The state the resolver starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumInput {
    /// `leader` of the `sync` key.
    pub leader: String,
    /// `quorum` of the `sync` key.
    pub quorum: u32,
    /// `sync_standby` of the `sync` key.
    pub voters: Vec<String>,
    /// `N` of `synchronous_standby_names` in effect.
    pub numsync: usize,
    /// Names in `synchronous_standby_names` in effect.
    pub sync: Vec<String>,
    /// How many listed standbys caught up since they were listed.
    pub numsync_confirmed: usize,
    /// Standbys streaming from me that may be listed.
    pub active: Vec<String>,
    /// `synchronous_node_count`.
    pub sync_wanted: usize,
    /// Me (differs from `leader` right after a failover).
    pub leader_wanted: String,
}

/// The plan, and a warning to log when the state read was inconsistent and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Transitions to apply in order (a failed `sync` key write stops the rest).
    pub transitions: Vec<Transition>,
    /// Patroni's warning text for a repaired state.
    pub warning: Option<String>,
}

/// A case-insensitive set of member names, kept sorted.
#[derive(Clone, Debug, Default)]
struct Names(Vec<String>);

impl Names {
    fn of<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Names {
        let mut v: Vec<String> = Vec::new();
        for s in items {
            let s = s.as_ref();
            if !v.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                v.push(s.to_string());
            }
        }
        v.sort_by(|a, b| {
            a.to_ascii_lowercase()
                .cmp(&b.to_ascii_lowercase())
                .then(a.cmp(b))
        });
        Names(v)
    }
    fn one(name: &str) -> Names {
        Names::of([name])
    }
    fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|x| x.eq_ignore_ascii_case(name))
    }
    fn len(&self) -> i64 {
        self.0.len() as i64
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn union(&self, o: &Names) -> Names {
        Names::of(self.0.iter().chain(o.0.iter()))
    }
    fn minus(&self, o: &Names) -> Names {
        Names::of(self.0.iter().filter(|x| !o.contains(x)))
    }
    fn and(&self, o: &Names) -> Names {
        Names::of(self.0.iter().filter(|x| o.contains(x)))
    }
    fn subset_of(&self, o: &Names) -> bool {
        self.0.iter().all(|x| o.contains(x))
    }
    fn proper_subset_of(&self, o: &Names) -> bool {
        self.subset_of(o) && self.len() < o.len()
    }
    /// The first `n` names in Python's `sorted()` order (optionally reversed).
    fn take_sorted(&self, n: i64, reverse: bool) -> Names {
        let mut v = self.0.clone();
        v.sort();
        if reverse {
            v.reverse();
        }
        v.truncate(usize::try_from(n.max(0)).unwrap_or(0));
        Names::of(v)
    }
}

impl PartialEq for Names {
    fn eq(&self, o: &Names) -> bool {
        self.len() == o.len() && self.subset_of(o)
    }
}

impl fmt::Display for Names {
    /// As Python prints a set: `{'a', 'b'}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|n| format!("'{n}'")).collect();
        write!(f, "{{{}}}", items.join(", "))
    }
}

/// Why a plan was refused.
type Step = Result<(), String>;

struct Resolver {
    leader: String,
    quorum: i64,
    voters: Names,
    numsync: i64,
    sync: Names,
    numsync_confirmed: i64,
    active: Names,
    sync_wanted: i64,
    leader_wanted: String,
    out: Vec<Transition>,
}

fn usize_of(n: i64) -> usize {
    usize::try_from(n.max(0)).unwrap_or(0)
}

impl Resolver {
    fn check_invariants(&self) -> Step {
        let voters = self.voters.union(&Names::one(&self.leader));
        let sync = self.sync.union(&Names::one(&self.leader_wanted));
        // `+ 1`: the leader is in both sets.
        let nodes = voters.union(&sync).len();
        if !self.voters.is_empty() && nodes > self.quorum + self.numsync + 1 {
            return Err(format!(
                "Quorum and sync not guaranteed to overlap: nodes {nodes} >= quorum {} + sync {} + 1",
                self.quorum, self.sync
            ));
        }
        // Between two writes one set may be a subset of the other, never more.
        if !(voters.subset_of(&sync) || sync.subset_of(&voters)) {
            return Err(format!(
                "Mismatched sets: voter only={} sync only={}",
                voters.minus(&sync),
                sync.minus(&voters)
            ));
        }
        Ok(())
    }

    fn quorum_update(
        &mut self,
        mut quorum: i64,
        mut voters: Names,
        leader: Option<&str>,
        adjust_quorum: bool,
    ) -> Step {
        if quorum < 0 {
            return Err(format!("Quorum {quorum} < 0 of ({voters})"));
        }
        if quorum > 0 && quorum >= voters.len() {
            return Err(format!("Quorum {quorum} >= N of ({voters})"));
        }
        let old_leader = self.leader.clone();
        if let Some(l) = leader {
            self.leader = l.to_string();
        } else if self.numsync_confirmed == 0 && self.voters.is_empty() {
            // Nobody is known to have caught up: keep the key empty.
            quorum = 0;
            voters = Names::default();
        } else if adjust_quorum {
            // Fewer confirmed standbys than PostgreSQL waits for: a larger quorum makes
            // sure the race still meets one that has every acknowledged commit.
            quorum += (self.numsync - self.numsync_confirmed).max(0);
        }
        if self.leader == old_leader && quorum == self.quorum && voters == self.voters {
            if !self.voters.is_empty() {
                return Ok(());
            }
            self.out.push(Transition::Restart);
        }
        self.quorum = quorum;
        self.voters = voters;
        self.check_invariants()?;
        self.out.push(Transition::Quorum {
            leader: self.leader.clone(),
            quorum: u32::try_from(self.quorum).unwrap_or(0),
            voters: self.voters.0.clone(),
        });
        Ok(())
    }

    fn sync_update(&mut self, numsync: i64, sync: Names) -> Step {
        if numsync < 0 {
            return Err(format!("Sync {numsync} < 0 of ({sync})"));
        }
        if numsync > sync.len() {
            return Err(format!("Sync {numsync} > N of ({sync})"));
        }
        self.numsync = numsync;
        self.sync = sync;
        self.check_invariants()?;
        self.out.push(Transition::Sync {
            num: usize_of(self.numsync),
            names: self.sync.0.clone(),
        });
        Ok(())
    }

    /// A plan interrupted last time left the two sets different: finish it.
    fn handle_non_steady_cases(&mut self) -> Step {
        if self.sync.proper_subset_of(&self.voters) {
            // Case 1: in the middle of changing voters; drop dead voters not synced to.
            let remove = self.voters.minus(&self.sync.union(&self.active));
            if !remove.is_empty() {
                let adjust = self.sync.minus(&self.active).is_empty();
                self.quorum_update(
                    self.voters.len() - remove.len() - self.numsync,
                    self.voters.minus(&remove),
                    None,
                    adjust,
                )?;
            }
            let add = self.voters.and(&self.active).minus(&self.sync);
            if !add.is_empty() {
                self.sync_update(self.numsync, self.sync.union(&add))?;
            }
        } else if self.voters.proper_subset_of(&self.sync) {
            // Case 2: in the middle of changing the replication factor.
            let remove = self.sync.minus(&self.active);
            let sync = self.sync.minus(&remove);
            // Keep at least one node common to both sets.
            if !remove.is_empty()
                && !sync.is_empty()
                && (self.voters.is_empty() || !sync.and(&self.voters).is_empty())
            {
                self.sync_update(self.numsync.min(self.sync.len() - remove.len()), sync)?;
            }
            let add = self.sync.minus(&self.voters).and(&self.active);
            if !add.is_empty() {
                let voters = self.voters.union(&add);
                self.quorum_update(voters.len() - self.numsync, voters, None, true)?;
            }
            let remove = self.sync.minus(&self.voters);
            if !remove.is_empty() {
                self.sync_update(
                    self.numsync.min(self.sync.len() - remove.len()),
                    self.sync.minus(&remove),
                )?;
            }
        }
        if self.voters != self.sync {
            return Err(format!(
                "voters {} and synchronous_standby_names {} still differ",
                self.voters, self.sync
            ));
        }
        let all = self.voters.union(&self.sync).len();
        let safety_margin = self.quorum + self.numsync.min(self.numsync_confirmed) - all;
        if safety_margin > 0 {
            // In the middle of changing the replication factor.
            if self.numsync > self.sync_wanted {
                let numsync = self.sync_wanted.max(self.voters.len() - self.quorum);
                self.sync_update(numsync, self.sync.clone())?;
            } else {
                let quorum = self.sync.len() - self.numsync;
                self.quorum_update(quorum, self.voters.clone(), None, true)?;
            }
        } else {
            let safety_margin = self.quorum + self.numsync - all;
            if self.numsync == self.sync_wanted
                && safety_margin > 0
                && self.numsync > self.numsync_confirmed
            {
                self.quorum_update(
                    self.sync.len() - self.numsync,
                    self.voters.clone(),
                    None,
                    true,
                )?;
            }
        }
        Ok(())
    }

    fn remove_gone_nodes(&mut self) -> Step {
        let mut to_remove = self.sync.minus(&self.active);
        if to_remove.is_empty() {
            return Ok(());
        }
        if self.sync == to_remove {
            self.quorum_update(0, Names::default(), None, false)?;
            return self.sync_update(0, Names::default());
        }
        let can_reduce_quorum_by = self.quorum;
        if can_reduce_quorum_by > 0 {
            // Reverse-sorted, as Patroni, so that mixed clusters pick the same nodes.
            let remove = to_remove.take_sorted(can_reduce_quorum_by, true);
            let sync = self.sync.minus(&remove);
            // Removing nodes from sync is the moment to raise numsync if asked for.
            let numsync = if self.sync_wanted > self.numsync {
                self.sync_wanted
            } else {
                self.numsync
            }
            .min(sync.len());
            self.sync_update(numsync, sync)?;
            let voters = self.voters.minus(&remove);
            to_remove = to_remove.and(&self.sync);
            let adjust = to_remove.is_empty();
            self.quorum_update(voters.len() - self.numsync, voters, None, adjust)?;
        }
        if !to_remove.is_empty() {
            if self.quorum != 0 {
                return Err(format!(
                    "quorum {} is not 0 while removing {to_remove}",
                    self.quorum
                ));
            }
            let numsync = self.numsync - to_remove.len();
            let sync = self.sync.minus(&to_remove);
            let voters = self.voters.minus(&to_remove);
            let sync_decrease = numsync - self.sync_wanted.min(sync.len());
            let quorum = if sync_decrease != 0 {
                sync_decrease.min(voters.len() - 1)
            } else {
                0
            };
            self.quorum_update(quorum, voters, None, false)?;
            self.sync_update(numsync, sync)?;
        }
        Ok(())
    }

    fn add_new_nodes(&mut self) -> Step {
        let mut to_add = self.active.minus(&self.sync);
        if to_add.is_empty() {
            return Ok(());
        }
        // First reach the requested replication factor.
        let sync_wanted = self.sync_wanted.min(self.sync.union(&to_add).len());
        let mut increase = sync_wanted - self.numsync;
        if increase > 0 {
            let add = if self.sync.is_empty() {
                // Only the leader so far: all may be added at once.
                to_add.clone()
            } else {
                let add = to_add.take_sorted(increase, false);
                increase = add.len();
                add
            };
            self.sync_update(self.numsync + increase, self.sync.union(&add))?;
            let voters = self.voters.union(&add);
            self.quorum_update(voters.len() - sync_wanted, voters, None, true)?;
            to_add = to_add.minus(&self.sync);
        }
        if !to_add.is_empty() {
            let voters = self.voters.union(&to_add);
            let adjust = sync_wanted > self.numsync_confirmed;
            self.quorum_update(voters.len() - sync_wanted, voters, None, adjust)?;
            self.sync_update(sync_wanted, self.sync.union(&to_add))?;
        }
        Ok(())
    }

    fn handle_replication_factor_change(&mut self) -> Step {
        let sync_increase = self.sync_wanted.min(self.sync.len()) - self.numsync;
        if sync_increase > 0 {
            self.sync_update(self.numsync + sync_increase, self.sync.clone())?;
            self.quorum_update(
                self.voters.len() - self.numsync,
                self.voters.clone(),
                None,
                true,
            )?;
        } else if sync_increase < 0 {
            if self.quorum - sync_increase < self.voters.len() {
                let adjust = self.sync_wanted > self.numsync_confirmed;
                self.quorum_update(
                    self.voters.len() - self.numsync - sync_increase,
                    self.voters.clone(),
                    None,
                    adjust,
                )?;
            }
            self.sync_update(self.numsync + sync_increase, self.sync.clone())?;
        }
        Ok(())
    }

    /// After a failover: the old leader becomes a voter. `Ok(true)` = stop here.
    fn handle_leader_change(&mut self) -> Result<bool, String> {
        if self.leader_wanted == self.leader {
            self.check_invariants()?;
            return Ok(false);
        }
        let voters = self
            .voters
            .minus(&Names::one(&self.leader_wanted))
            .union(&Names::one(&self.leader));
        if self.sync.is_empty() {
            let numsync = voters.len() - self.quorum;
            self.sync_update(numsync, voters.clone())?;
        }
        let me = self.leader_wanted.clone();
        self.quorum_update(self.quorum, voters, Some(&me), true)?;
        // Right after promotion nobody may be connected yet: give them a loop to
        // reconnect before removing them.
        Ok(self.sync.and(&self.active).is_empty())
    }

    fn generate(&mut self) -> Result<Option<String>, String> {
        let mut warning = None;
        match self.handle_leader_change() {
            Ok(true) => return Ok(None),
            Ok(false) => {}
            Err(e) => {
                let (sync, numsync) = (self.sync.clone(), self.numsync);
                warning = Some(e);
                self.quorum_update(sync.len() - numsync, sync, None, true)?;
            }
        }
        if !self.leader.eq(&self.leader_wanted) {
            return Err(format!(
                "the sync key names {} as leader, not {}",
                self.leader, self.leader_wanted
            ));
        }
        // After a restart or failover nothing is known to be confirmed: derive it from
        // the quorum.
        if self.numsync_confirmed == 0 && !self.sync.and(&self.active).is_empty() {
            self.numsync_confirmed = self
                .sync
                .and(&self.active)
                .len()
                .min(self.voters.len() - self.quorum);
        }
        self.handle_non_steady_cases()?;
        // Steady: move towards the wanted state.
        self.remove_gone_nodes()?;
        self.add_new_nodes()?;
        self.handle_replication_factor_change()?;
        Ok(warning)
    }
}

/// The transitions from `input` to the wanted state, or why none can be made safely
/// (then nothing is changed this cycle).
pub fn resolve(input: &QuorumInput) -> Result<Plan, String> {
    let sync = Names::of(&input.sync);
    let mut r = Resolver {
        leader: input.leader.clone(),
        quorum: i64::from(input.quorum),
        voters: Names::of(&input.voters),
        // numsync cannot exceed the number of names listed.
        numsync: (input.numsync as i64).min(sync.len()),
        sync,
        numsync_confirmed: input.numsync_confirmed as i64,
        active: Names::of(&input.active),
        sync_wanted: input.sync_wanted as i64,
        leader_wanted: input.leader_wanted.clone(),
        out: Vec::new(),
    };
    let warning = r.generate()?;
    // Merge runs of the same kind (the state between them is never observed); stop
    // after a restart.
    let mut transitions = Vec::new();
    let all = std::mem::take(&mut r.out);
    for (k, t) in all.iter().enumerate() {
        let next_same = all
            .get(k + 1)
            .is_some_and(|n| std::mem::discriminant(n) == std::mem::discriminant(t));
        if next_same {
            continue;
        }
        transitions.push(t.clone());
        if *t == Transition::Restart {
            break;
        }
    }
    Ok(Plan {
        transitions,
        warning,
    })
}

#[cfg(test)]
mod tests;
