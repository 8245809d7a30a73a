//! Synchronous replication decisions (spec/ha-loop.md §10, `synchronous_mode: on`).
//!
//! Pure: from the `sync` key, the members, the primary's `pg_stat_replication` rows and
//! the current `synchronous_standby_names` to the next step, which is at most one `sync`
//! key write (a compare-and-set on the version read this cycle) or one change of
//! `synchronous_standby_names`. One step per cycle keeps Patroni's ordering rule without
//! waiting inside a cycle: a standby is added to PostgreSQL first and to the `sync` key
//! only once PostgreSQL reports it synchronous; it is removed from the key first and from
//! PostgreSQL after. The `sync` key therefore never names a node that might miss an
//! acknowledged commit, and only nodes it names may be promoted.
//!
//! Quorum commit (`synchronous_mode: quorum`) is not decided here yet.

use crate::cluster::{truthy, Cluster, SyncState};

pub mod quorum;

/// Placeholder standby name that makes commits wait when no real standby is available
/// (`synchronous_mode_strict`).
pub const STRICT_PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// Patroni's warning when strict mode has nobody to wait for.
pub const STRICT_NO_STANDBY_WARNING: &str = "No active replication connections from Patroni members and synchronous_mode_strict is requested. Commits will be delayed.";

/// `synchronous_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous replication.
    #[default]
    Off,
    /// Classic synchronous replication (`synchronous_standby_names = N (a,b)`).
    On,
    /// Quorum commit (`ANY N (…)`).
    Quorum,
}

impl SyncMode {
    /// Reads the dynamic-config value (`on`/`true`, `quorum`, anything else = off).
    pub fn parse(v: &str) -> SyncMode {
        match v.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => SyncMode::On,
            "quorum" => SyncMode::Quorum,
            _ => SyncMode::Off,
        }
    }
}

/// Synchronous replication settings (dynamic config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// `synchronous_mode` (off inside a standby cluster).
    pub mode: SyncMode,
    /// `synchronous_mode_strict`.
    pub strict: bool,
    /// `synchronous_node_count` (≥ 1).
    pub node_count: usize,
    /// `maximum_lag_on_syncnode` (bytes; ≤ 0 = no limit).
    pub maximum_lag_on_syncnode: i64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            mode: SyncMode::Off,
            strict: false,
            node_count: 1,
            maximum_lag_on_syncnode: -1,
        }
    }
}

/// One walsender (`pg_stat_replication` row) on the primary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyConn {
    /// `application_name` (the standby's member name).
    pub application_name: String,
    /// `async`, `potential`, `sync`, `quorum`.
    pub sync_state: String,
    /// `write_lsn`.
    pub write_lsn: Option<u64>,
    /// `flush_lsn`.
    pub flush_lsn: Option<u64>,
    /// `replay_lsn`.
    pub replay_lsn: Option<u64>,
}

/// A parsed `synchronous_standby_names`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyNames {
    /// Names (unquoted), in the order written.
    pub names: Vec<String>,
    /// The number of synchronous standbys asked for.
    pub num: usize,
    /// `ANY` (quorum) syntax.
    pub quorum: bool,
}

impl StandbyNames {
    /// Parses PostgreSQL's forms: `a`, `"a"`, `a, b`, `N (a,b)`, `FIRST N (…)`, `ANY N (…)`.
    pub fn parse(value: &str) -> StandbyNames {
        let mut rest = value.trim();
        if rest.is_empty() {
            return StandbyNames::default();
        }
        let mut quorum = false;
        let lower = rest.to_ascii_lowercase();
        for (kw, q) in [("any ", true), ("first ", false)] {
            if lower.starts_with(kw) {
                quorum = q;
                rest = rest[kw.len()..].trim_start();
                break;
            }
        }
        let mut num = None;
        if let Some(open) = rest.find('(') {
            if rest.trim_end().ends_with(')') {
                num = rest[..open].trim().parse::<usize>().ok();
                rest = rest[open + 1..rest.trim_end().len() - 1].trim();
            }
        }
        let names: Vec<String> = split_names(rest);
        StandbyNames {
            num: num.unwrap_or(if quorum { 1 } else { 1.min(names.len()) }),
            names,
            quorum,
        }
    }

    /// The value as Patroni writes it (`ANY N (…)` for the quorum syntax), for
    /// comparing with the value wanted.
    pub fn render(&self) -> String {
        if self.quorum {
            format_quorum_standby_names(&self.names, self.num)
        } else {
            format_standby_names(&self.names, self.num)
        }
    }

    /// Does it list `name` (case-insensitively)?
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

fn split_names(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() && !quoted => {}
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|n| !n.is_empty()).collect()
}

/// Quotes a standby name as Patroni does: bare when it is a plain identifier (and not
/// the keyword `first` or `any`), else in double quotes.
pub fn quote_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !name.eq_ignore_ascii_case("first")
        && !name.eq_ignore_ascii_case("any");
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Renders `synchronous_standby_names` (Y3): sorted names; one name alone, several as
/// `N (a,b)` (no `FIRST`); no names with `num ≥ 1` → the strict placeholder; no names
/// and `num = 0` → empty.
pub fn format_standby_names(names: &[String], num: usize) -> String {
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    if sorted.is_empty() {
        return if num >= 1 {
            STRICT_PLACEHOLDER.to_string()
        } else {
            String::new()
        };
    }
    if sorted.len() == 1 {
        return quote_name(&sorted[0]);
    }
    let list: Vec<String> = sorted.iter().map(|n| quote_name(n)).collect();
    format!("{} ({})", num.max(1), list.join(","))
}

/// Renders `synchronous_standby_names` for quorum commit: `ANY num (a,b)` with the
/// names sorted and quoted, even for one name; no names with `num ≥ 1` → `ANY num` of the
/// strict placeholder; no names and `num = 0` → empty.
pub fn format_quorum_standby_names(names: &[String], num: usize) -> String {
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    if sorted.is_empty() {
        return if num >= 1 {
            format!("ANY {num} ({STRICT_PLACEHOLDER})")
        } else {
            String::new()
        };
    }
    let list: Vec<String> = sorted.iter().map(|n| quote_name(n)).collect();
    format!("ANY {num} ({})", list.join(","))
}

/// A `sync` key value to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncKeyWrite {
    /// `leader`.
    pub leader: String,
    /// `sync_standby` (sorted when written).
    pub standbys: Vec<String>,
    /// `quorum`.
    pub quorum: u32,
    /// Compare-and-set on this version (`None`: the key did not exist).
    pub version: Option<i64>,
    /// Compare against the version the previous `sync` write of this cycle produced
    /// instead (a plan of several writes, each a compare-and-set on the one before).
    pub chained: bool,
}

impl SyncKeyWrite {
    /// The key's value as Patroni writes it: `leader`, `quorum`, `sync_standby` (names
    /// sorted and joined by `,`, or null), in that order.
    pub fn to_json(&self) -> String {
        let mut standbys = self.standbys.clone();
        standbys.sort_by_key(|n| n.to_ascii_lowercase());
        serde_json::json!({
            "leader": self.leader,
            "quorum": self.quorum,
            "sync_standby": (!standbys.is_empty()).then(|| standbys.join(",")),
        })
        .to_string()
    }
}

/// The next synchronous-replication step for a primary holding the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncStep {
    /// Write the `sync` key (CAS); the message is logged when it succeeds.
    WriteKey(SyncKeyWrite, String),
    /// Delete the `sync` key (CAS on this version).
    DeleteKey(i64),
    /// Set `synchronous_standby_names` (None: give it back to the configuration); the
    /// message is logged.
    SetNames(Option<String>, String),
    /// Look again shortly (standbys just listed have to confirm) instead of after a
    /// whole loop.
    Recheck,
}

/// What the primary's sync decision needs.
#[derive(Clone, Debug)]
pub struct PrimarySync<'a> {
    /// My member name.
    pub me: &'a str,
    /// The cluster as read this cycle.
    pub cluster: &'a Cluster,
    /// Settings.
    pub settings: &'a SyncSettings,
    /// My walsenders.
    pub standbys: &'a [StandbyConn],
    /// `synchronous_commit` in effect (picks the LSN column).
    pub synchronous_commit: &'a str,
    /// `synchronous_standby_names` in effect.
    pub current: &'a StandbyNames,
    /// `synchronous_standby_names` is one this agent set (not the user's own).
    pub names_are_mine: bool,
    /// My WAL flush position.
    pub primary_lsn: u64,
    /// My WAL position when I last changed `synchronous_standby_names`.
    pub names_changed_at_lsn: Option<u64>,
}

/// A standby that may be synchronous, with the numbers it is ranked by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Member name (as the member key spells it).
    pub name: String,
    /// `sync_state` reported by PostgreSQL.
    pub sync_state: String,
    /// The position that counts for `synchronous_commit`.
    pub lsn: u64,
    /// `sync_priority` tag (default 1).
    pub priority: i64,
    /// `nofailover`.
    pub nofailover: bool,
}

fn sync_state_rank(s: &str) -> u8 {
    match s {
        "sync" => 3,
        "quorum" => 2,
        "potential" => 1,
        _ => 0,
    }
}

/// Whether a member asks never to be synchronous: `nosync`, else `sync_priority ≤ 0`.
pub fn member_nosync(tags: &serde_json::Map<String, serde_json::Value>) -> bool {
    if let Some(v) = tags.get("nosync") {
        return truthy(v);
    }
    sync_priority(tags) <= 0
}

fn sync_priority(tags: &serde_json::Map<String, serde_json::Value>) -> i64 {
    tags.get("sync_priority")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .unwrap_or(1)
}

/// Y1: the standbys that may be synchronous, best first.
pub fn eligible(i: &PrimarySync<'_>) -> Vec<Candidate> {
    let column = match i.synchronous_commit {
        "remote_apply" => |c: &StandbyConn| c.replay_lsn,
        "remote_write" => |c: &StandbyConn| c.write_lsn,
        _ => |c: &StandbyConn| c.flush_lsn,
    };
    let running = |name: &str| {
        i.cluster
            .members
            .iter()
            .any(|m| m.name == name && m.data.state.as_deref() == Some("running"))
    };
    let mut out: Vec<Candidate> = Vec::new();
    for conn in i.standbys {
        let Some(lsn) = column(conn) else { continue };
        let Some(m) = i
            .cluster
            .members
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(&conn.application_name))
        else {
            continue;
        };
        if m.name.eq_ignore_ascii_case(i.me)
            || m.data.state.as_deref() != Some("running")
            || member_nosync(&m.data.tags)
            || out.iter().any(|c| c.name == m.name)
        {
            continue;
        }
        // A node that should cascade from another running member is not mine to wait for.
        let cascades = m
            .data
            .tags
            .get("replicatefrom")
            .and_then(|v| v.as_str())
            .is_some_and(|up| !up.eq_ignore_ascii_case(i.me) && running(up));
        if cascades {
            continue;
        }
        out.push(Candidate {
            name: m.name.clone(),
            sync_state: conn.sync_state.clone(),
            lsn,
            priority: sync_priority(&m.data.tags),
            nofailover: m.data.nofailover(),
        });
    }
    out.sort_by(|a, b| {
        (b.priority, sync_state_rank(&b.sync_state), b.lsn).cmp(&(
            a.priority,
            sync_state_rank(&a.sync_state),
            a.lsn,
        ))
    });
    out.sort_by_key(|c| c.nofailover);
    let max_lag = i.settings.maximum_lag_on_syncnode;
    if max_lag > 0 && !out.is_empty() {
        let reference = if out.len() == 1 {
            i.primary_lsn
        } else {
            out.iter().map(|c| c.lsn).max().unwrap_or(0)
        };
        out.retain(|c| reference.saturating_sub(c.lsn) <= max_lag as u64);
    }
    out
}

/// A list as Python prints it (`['a', 'b']`), as Patroni's log lines show it.
fn py_list(names: &[String]) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(", "))
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.eq_ignore_ascii_case(x)))
}

fn subset(a: &[String], b: &[String]) -> bool {
    a.iter()
        .all(|x| b.iter().any(|y| y.eq_ignore_ascii_case(x)))
}

/// Y4/Y6/Y10: the next steps for a primary holding the lock (in order; a failed key
/// write stops the rest), with a warning to log when strict mode has nobody to wait for.
/// Empty: nothing to change.
pub fn primary_step(i: &PrimarySync<'_>) -> (Vec<SyncStep>, Option<String>) {
    if i.settings.mode == SyncMode::Quorum {
        return quorum_steps(i);
    }
    let (first, warning) = primary_first_step(i);
    let warning = warning.map(str::to_string);
    let mut steps: Vec<SyncStep> = first.into_iter().collect();
    // Shrinking the key is followed at once by the standby names (same cycle, after the
    // key: the removed standby no longer holds up commits for a whole loop).
    if let Some(SyncStep::WriteKey(w, _)) = steps.first() {
        if w.version.is_some() && w.leader == i.me {
            let voters: Vec<String> = i
                .cluster
                .sync
                .as_ref()
                .map(|s| s.sync_standby.clone())
                .unwrap_or_default();
            if w.standbys.len() < voters.len() {
                let mut shrunk = i.cluster.clone();
                if let Some(s) = shrunk.sync.as_mut() {
                    s.sync_standby = w.standbys.clone();
                }
                let next = PrimarySync {
                    cluster: &shrunk,
                    ..i.clone()
                };
                if let (Some(step @ SyncStep::SetNames(..)), _) = primary_first_step(&next) {
                    steps.push(step);
                }
            }
        }
    }
    (steps, warning)
}

fn primary_first_step(i: &PrimarySync<'_>) -> (Option<SyncStep>, Option<&'static str>) {
    let sync = i.cluster.sync.as_ref();
    if i.settings.mode == SyncMode::Off {
        // Y10: give the guarantee back in the safe order: key first, then PostgreSQL.
        if let Some(s) = sync {
            if s.leader.as_deref() == Some(i.me) {
                return (Some(SyncStep::DeleteKey(s.version)), None);
            }
        }
        if i.names_are_mine {
            return (
                Some(SyncStep::SetNames(
                    None,
                    "synchronous replication is off: synchronous_standby_names back to the configuration".into(),
                )),
                None,
            );
        }
        return (None, None);
    }
    // Y4.1/2: the key must name me as the leader before anything else.
    let Some(sync) = sync.filter(|s| s.leader.as_deref() == Some(i.me)) else {
        return (
            Some(SyncStep::WriteKey(
                SyncKeyWrite {
                    leader: i.me.to_string(),
                    standbys: vec![],
                    quorum: 0,
                    version: i.cluster.sync.as_ref().map(|s| s.version),
                    chained: false,
                },
                "Enabled synchronous replication".into(),
            )),
            None,
        );
    };
    let voters: Vec<String> = sync.sync_standby.clone();
    let candidates = eligible(i);
    let active: Vec<String> = candidates
        .iter()
        .take(i.settings.node_count.max(1))
        .map(|c| c.name.clone())
        .collect();
    let ready = |c: &Candidate| {
        c.sync_state == "sync"
            && i.current.contains(&c.name)
            && (voters.iter().any(|v| v.eq_ignore_ascii_case(&c.name))
                || c.lsn >= i.names_changed_at_lsn.unwrap_or(0))
    };
    let confirmed: Vec<String> = candidates
        .iter()
        .filter(|c| active.contains(&c.name) && ready(c))
        .map(|c| c.name.clone())
        .collect();
    let write = |standbys: Vec<String>, msg: String| {
        Some(SyncStep::WriteKey(
            SyncKeyWrite {
                leader: i.me.to_string(),
                standbys,
                quorum: 0,
                version: Some(sync.version),
                chained: false,
            },
            msg,
        ))
    };
    // Y6: strict mode with fewer standbys than it needs keeps waiting for the ones in
    // the key (or for anyone, through the placeholder).
    let min_sync = usize::from(i.settings.strict);
    // Rendered with its own syntax: an `ANY` value left by quorum mode is rewritten.
    let current = i.current.render();
    if active.len() < min_sync {
        let want = format_standby_names(&voters, voters.len().max(min_sync));
        if want == current && i.names_are_mine {
            return (None, Some(STRICT_NO_STANDBY_WARNING));
        }
        return (
            Some(SyncStep::SetNames(
                Some(want),
                format!(
                    "Assigning synchronous standby status to {}",
                    py_list(&voters)
                ),
            )),
            Some(STRICT_NO_STANDBY_WARNING),
        );
    }
    // Y4.3/6: shrink the key first when a voter is no longer a confirmed sync standby.
    if !subset(&voters, &confirmed) {
        let keep: Vec<String> = voters
            .iter()
            .filter(|v| confirmed.iter().any(|c| c.eq_ignore_ascii_case(v)))
            .cloned()
            .collect();
        return (
            write(
                keep.clone(),
                format!(
                    "Updating synchronous privilege temporarily from {} to {}",
                    py_list(&voters),
                    py_list(&keep)
                ),
            ),
            None,
        );
    }
    // Y4.7: PostgreSQL waits for the active set.
    let want = format_standby_names(&active, active.len());
    if want != current || (!i.names_are_mine && !active.is_empty()) {
        return (
            Some(SyncStep::SetNames(
                Some(want),
                format!(
                    "Assigning synchronous standby status to {}",
                    py_list(&active)
                ),
            )),
            None,
        );
    }
    // Y4.9: then the key names those PostgreSQL confirms.
    if !confirmed.is_empty() && !same_set(&confirmed, &voters) {
        return (
            write(
                confirmed.clone(),
                format!(
                    "Synchronous standby status assigned to {}",
                    py_list(&confirmed)
                ),
            ),
            None,
        );
    }
    (None, None)
}

/// Quorum commit on a primary holding the lock (Patroni's
/// `_process_quorum_replication`): the `sync` key must name a leader; strict mode with
/// nobody streaming keeps waiting for the voters; otherwise [`quorum::resolve`] plans
/// the changes, applied in order, each key write a compare-and-set on the one before.
fn quorum_steps(i: &PrimarySync<'_>) -> (Vec<SyncStep>, Option<String>) {
    let mut steps = Vec::new();
    let read_version = i.cluster.sync.as_ref().map(|s| s.version);
    let mut chained = false;
    let (leader, quorum, voters) = match i.cluster.sync.as_ref() {
        Some(s) => (
            s.leader.clone().unwrap_or_else(|| i.me.to_string()),
            s.quorum,
            s.sync_standby.clone(),
        ),
        None => {
            steps.push(SyncStep::WriteKey(
                SyncKeyWrite {
                    leader: i.me.to_string(),
                    standbys: vec![],
                    quorum: 0,
                    version: read_version,
                    chained: false,
                },
                "Enabled synchronous replication".into(),
            ));
            chained = true;
            (i.me.to_string(), 0, vec![])
        }
    };
    let node_count = i.settings.node_count.max(1);
    // nofailover standbys only while too few others stream: a quorum of nodes that may
    // not promote would only reduce availability.
    let mut active: Vec<Candidate> = Vec::new();
    for c in eligible(i) {
        if !c.nofailover || active.len() < node_count {
            active.push(c);
        }
    }
    let changed_at = i.names_changed_at_lsn.unwrap_or(0);
    let confirmed = active
        .iter()
        .filter(|c| c.sync_state == "quorum" && i.current.contains(&c.name) && c.lsn >= changed_at)
        .count();
    let active: Vec<String> = active.into_iter().map(|c| c.name).collect();
    let mut current = i.current.clone();
    if current.names.iter().any(|n| n == "*") {
        current.names = vec![STRICT_PLACEHOLDER.to_string()];
    }
    if leader.eq_ignore_ascii_case(i.me) {
        let min_sync = usize::from(i.settings.strict);
        if active.len() < min_sync {
            let numsync = min_sync.max(voters.len().saturating_sub(quorum as usize));
            let want = format_quorum_standby_names(&voters, numsync);
            let mut kept = String::new();
            if want != current.render() || !i.names_are_mine {
                steps.push(SyncStep::SetNames(
                    Some(want.clone()),
                    assigning_message(&want),
                ));
            } else if !voters.is_empty() {
                kept =
                    format!("Continue using old value of synchronous_standby_names=\"{want}\". ");
            }
            return (
                steps,
                Some(format!(
                    "No active replication connections from Patroni members and synchronous_mode_strict is requested. {kept}Commits will be delayed."
                )),
            );
        }
        if min_sync == 0
            && active.is_empty()
            && voters.is_empty()
            && !(current.names.is_empty() && current.num == 0)
        {
            steps.push(SyncStep::SetNames(
                Some(String::new()),
                "Assigning synchronous_standby_names to ''".into(),
            ));
            current = StandbyNames::default();
        }
    }
    let plan = quorum::resolve(&quorum::QuorumInput {
        leader,
        quorum,
        voters,
        numsync: current.num,
        sync: current.names.clone(),
        numsync_confirmed: confirmed,
        active,
        sync_wanted: node_count,
        leader_wanted: i.me.to_string(),
    });
    let plan = match plan {
        Ok(p) => p,
        // Nothing is changed rather than something unsafe.
        Err(e) => return (steps, Some(format!("quorum commit: {e}; nothing changed"))),
    };
    let planned = !plan.transitions.is_empty();
    for t in plan.transitions {
        steps.push(match t {
            quorum::Transition::Quorum {
                leader,
                quorum,
                voters,
            } => {
                let mut sorted = voters.clone();
                sorted.sort();
                let message = format!(
                    "Setting leader to {leader}, quorum to {quorum} of ({})",
                    sorted.join(", ")
                );
                let write = SyncKeyWrite {
                    leader,
                    standbys: voters,
                    quorum,
                    version: read_version,
                    chained,
                };
                chained = true;
                SyncStep::WriteKey(write, message)
            }
            quorum::Transition::Sync { num, names } => {
                let want = format_quorum_standby_names(&names, num);
                SyncStep::SetNames(Some(want.clone()), assigning_message(&want))
            }
            quorum::Transition::Restart => SyncStep::Recheck,
        });
    }
    if !planned && (!current.quorum || !i.names_are_mine) {
        // FIRST → ANY (e.g. just switched from `on`), and a value PostgreSQL got from
        // elsewhere becomes ours to manage.
        let want = format_quorum_standby_names(&current.names, current.num);
        if want != i.current.render() || !i.names_are_mine {
            steps.push(SyncStep::SetNames(
                Some(want.clone()),
                assigning_message(&want),
            ));
        }
    }
    (steps, plan.warning)
}

fn assigning_message(value: &str) -> String {
    if value.is_empty() {
        "Assigning synchronous_standby_names to ''".to_string()
    } else {
        format!("Assigning synchronous_standby_names to {value}")
    }
}

/// What a replica does right before it promotes in synchronous mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrePromote {
    /// The `sync` key to claim first (a failed compare stops the promotion).
    pub write: Option<SyncKeyWrite>,
    /// `synchronous_standby_names` to start with.
    pub names: String,
}

/// Y5: what a replica does right before it promotes. `synchronous_mode: on`: claim the
/// `sync` key; strict: keep waiting for the old synchronous set, its leader included
/// (minus me), so commits keep waiting for nodes that may hold acknowledged ones; else
/// nobody. Quorum: the key is left to the plan after promotion; PostgreSQL starts
/// waiting for enough of the old leader and voters that the new commits overlap every
/// quorum that could elect someone else.
pub fn pre_promote(me: &str, cluster: &Cluster, settings: &SyncSettings) -> Option<PrePromote> {
    match settings.mode {
        SyncMode::Off => None,
        SyncMode::Quorum => Some(quorum_pre_promote(me, cluster, settings)),
        SyncMode::On => Some(classic_pre_promote(me, cluster, settings)),
    }
}

fn quorum_pre_promote(me: &str, cluster: &Cluster, settings: &SyncSettings) -> PrePromote {
    let sync = cluster.sync.as_ref();
    let quorum = sync.map_or(0, |s| i64::from(s.quorum));
    let mut members: Vec<String> = sync
        .map(|s| {
            s.leader
                .iter()
                .chain(s.sync_standby.iter())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    // -1: the members include the former leader.
    let mut numsync = members.len() as i64 - quorum - 1;
    if members.iter().any(|m| m.eq_ignore_ascii_case(me)) {
        members.retain(|m| !m.eq_ignore_ascii_case(me));
    } else {
        // Promoted from outside the voters (manual failover, or it won the votes).
        numsync += 1;
    }
    let numsync = usize::try_from(numsync.max(i64::from(settings.strict))).unwrap_or(0);
    // `ANY 0 (…)` is not valid in PostgreSQL: nobody to wait for.
    let names = if numsync == 0 {
        String::new()
    } else {
        format_quorum_standby_names(&members, numsync)
    };
    PrePromote { write: None, names }
}

fn classic_pre_promote(me: &str, cluster: &Cluster, settings: &SyncSettings) -> PrePromote {
    let old: Option<&SyncState> = cluster.sync.as_ref();
    let standbys: Vec<String> = if settings.strict {
        // The old sync set includes its leader: the former primary may hold commits that
        // only its synchronous standbys acknowledged, and it must catch up before new
        // commits are acknowledged.
        old.map(|s| {
            s.leader
                .iter()
                .chain(s.sync_standby.iter())
                .filter(|n| !n.eq_ignore_ascii_case(me))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
    } else {
        vec![]
    };
    // As the strict rule on a running primary (Y6): wait for all of them.
    let names = format_standby_names(&standbys, standbys.len().max(usize::from(settings.strict)));
    PrePromote {
        write: Some(SyncKeyWrite {
            leader: me.to_string(),
            standbys,
            quorum: 0,
            version: old.map(|s| s.version),
            chained: false,
        }),
        names,
    }
}

/// Switchover in synchronous mode (`on` or `quorum`, once the `sync` key exists): only
/// to the key's leader or standbys.
pub fn switchover_allowed(name: &str, cluster: &Cluster, settings: &SyncSettings) -> bool {
    if settings.mode == SyncMode::Off {
        return true;
    }
    cluster.sync.as_ref().is_none_or(|s| s.matches(name))
}

/// C1.9: in active synchronous mode (`on`) only the `sync` key's leader and standbys may
/// take over.
pub fn may_promote(me: &str, cluster: &Cluster, settings: &SyncSettings) -> bool {
    if settings.mode != SyncMode::On {
        return true;
    }
    match &cluster.sync {
        Some(s) => s.matches(me),
        None => true,
    }
}

#[cfg(test)]
mod tests;
