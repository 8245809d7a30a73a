//! Replication slots (spec/postgres-management.md §7, Patroni's `postgresql/slots.py`
//! and the slot parts of `dcs/__init__.py`): which slots must exist on a node, which to
//! drop, which to advance to what, which logical slots to copy from the primary, what
//! the leader publishes in the `status` key and whether `hot_standby_feedback` must be
//! forced on. Pure: the executor reads `pg_replication_slots` and applies the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::cluster::{py_truthy, truthy, Cluster, Member};

/// Replication slot name for a member name (spec §7).
///
/// Lower-case; `-` and `.` become `_`; every other character outside `[a-z0-9_]` becomes
/// `u` followed by its Unicode code point as (at least) 4 decimal digits; the result is
/// cut to 63 characters.
pub fn slot_name_for_member(name: &str) -> String {
    let lowered = name.to_lowercase().replace(['-', '.'], "_");
    let mut out = String::with_capacity(lowered.len());
    for c in lowered.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else {
            let _ = write!(out, "u{:04}", c as u32);
        }
    }
    // Only ASCII remains, so byte and character positions agree.
    out.truncate(63);
    out
}

/// A permanent slot name PostgreSQL and Patroni accept: `^[a-z0-9_]{1,63}$`.
pub fn is_valid_slot_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// One entry of the dynamic `slots` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermanentSlot {
    /// A physical slot (`name: 0`, `name: {}` or `{type: physical}`).
    Physical {
        /// `cluster_type`: `primary` or `standby` restricts where the slot exists.
        cluster_type: Option<String>,
    },
    /// A logical slot (`{type: logical, database, plugin}`; `type` may be left out).
    Logical {
        /// database the slot decodes
        database: String,
        /// output plugin
        plugin: String,
    },
}

/// One `ignore_slots` matcher: a slot matches when every attribute given here equals
/// the slot's (an attribute left out matches anything).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IgnoreMatcher {
    /// `name`
    pub name: Option<Value>,
    /// `type` (`physical` / `logical`)
    pub slot_type: Option<Value>,
    /// `database`
    pub database: Option<Value>,
    /// `plugin`
    pub plugin: Option<Value>,
}

/// The slot settings of the dynamic configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotsConfig {
    /// `postgresql.use_slots`.
    pub use_slots: bool,
    /// `member_slots_ttl` (s); 0 turns member slot retention off.
    pub member_slots_ttl: u64,
    /// Valid permanent slots by name.
    pub permanent: BTreeMap<String, PermanentSlot>,
    /// `ignore_slots`.
    pub ignore: Vec<IgnoreMatcher>,
    /// Permanent slot entries that were rejected, in Patroni's wording.
    pub problems: Vec<String>,
}

impl Default for SlotsConfig {
    fn default() -> Self {
        SlotsConfig {
            use_slots: true,
            member_slots_ttl: 1800,
            permanent: BTreeMap::new(),
            ignore: Vec::new(),
            problems: Vec::new(),
        }
    }
}

fn non_empty_str(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl PermanentSlot {
    /// Reads one `slots` entry as Patroni does; `None` for a value it rejects ("Bad value").
    pub fn parse(value: &Value) -> Option<PermanentSlot> {
        if !py_truthy(value) {
            return Some(PermanentSlot::Physical { cluster_type: None });
        }
        let m = value.as_object()?;
        let database = non_empty_str(m, "database");
        let plugin = non_empty_str(m, "plugin");
        let ty = match m.get("type") {
            Some(t) => t.as_str()?.to_string(),
            None if database.is_some() && plugin.is_some() => "logical".to_string(),
            None => "physical".to_string(),
        };
        match ty.as_str() {
            "physical" => Some(PermanentSlot::Physical {
                cluster_type: m
                    .get("cluster_type")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }),
            "logical" => Some(PermanentSlot::Logical {
                database: database?,
                plugin: plugin?,
            }),
            _ => None,
        }
    }
}

impl IgnoreMatcher {
    /// Whether `slot` is protected by this matcher.
    pub fn matches(&self, slot: &ExistingSlot) -> bool {
        let name_ok = match &self.name {
            None | Some(Value::Null) => true,
            Some(n) => n.as_str() == Some(slot.name.as_str()),
        };
        // An attribute given as a falsy value matches anything, as in Patroni.
        let attr_ok = |want: &Option<Value>, have: Option<&str>| match want {
            Some(w) if py_truthy(w) => w.as_str().is_some() && w.as_str() == have,
            _ => true,
        };
        name_ok
            && attr_ok(&self.slot_type, Some(slot.slot_type.as_str()))
            && attr_ok(&self.database, slot.database.as_deref())
            && attr_ok(&self.plugin, slot.plugin.as_deref())
    }
}

impl SlotsConfig {
    /// Reads the slot settings from the dynamic configuration (`use_slots` and
    /// `member_slots_ttl` come already validated). The permanent slots are the first
    /// non-empty of `permanent_replication_slots`, `permanent_slots`, `slots`.
    pub fn from_dynamic(config: &Value, use_slots: bool, member_slots_ttl: u64) -> SlotsConfig {
        let mut out = SlotsConfig {
            use_slots,
            member_slots_ttl,
            ..SlotsConfig::default()
        };
        let section = ["permanent_replication_slots", "permanent_slots", "slots"]
            .iter()
            .filter_map(|k| config.get(*k))
            .find(|v| py_truthy(v));
        if let Some(section) = section {
            match section.as_object() {
                Some(slots) => {
                    for (name, value) in slots {
                        if !is_valid_slot_name(name) {
                            out.problems.push(format!(
                                "Invalid permanent replication slot name '{name}': slot name may only contain lower case letters, numbers, and the underscore chars"
                            ));
                            continue;
                        }
                        match PermanentSlot::parse(value) {
                            Some(s) => {
                                out.permanent.insert(name.clone(), s);
                            }
                            None => out.problems.push(format!(
                                "Bad value for slot '{name}' in permanent_slots: {value}"
                            )),
                        }
                    }
                }
                None => out
                    .problems
                    .push(format!("Bad value for permanent_slots: {section}")),
            }
        }
        // A standby cluster keeps only physical permanent slots, those not restricted to
        // primary clusters (Patroni's `permanent_physical_slots`); `cluster_type:
        // standby` ones apply on every node there.
        if crate::cluster::GlobalFlags::from_config(config).standby_cluster {
            out.permanent = std::mem::take(&mut out.permanent)
                .into_iter()
                .filter_map(|(name, slot)| match slot {
                    PermanentSlot::Physical { cluster_type }
                        if cluster_type.as_deref() != Some("primary") =>
                    {
                        Some((name, PermanentSlot::Physical { cluster_type: None }))
                    }
                    _ => None,
                })
                .collect();
        }
        if let Some(Value::Array(list)) = config.get("ignore_slots") {
            for m in list.iter().filter_map(Value::as_object) {
                out.ignore.push(IgnoreMatcher {
                    name: m.get("name").cloned(),
                    slot_type: m.get("type").cloned(),
                    database: m.get("database").cloned(),
                    plugin: m.get("plugin").cloned(),
                });
            }
        }
        out
    }

    fn is_ignored(&self, slot: &ExistingSlot) -> bool {
        self.ignore.iter().any(|m| m.matches(slot))
    }
}

/// A slot found in `pg_replication_slots` (temporary slots excluded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingSlot {
    /// slot name
    pub name: String,
    /// `physical` or `logical`
    pub slot_type: String,
    /// logical: output plugin
    pub plugin: Option<String>,
    /// logical: database
    pub database: Option<String>,
    /// a walsender or decoder uses it
    pub active: bool,
    /// physical: `xmin` (hot standby feedback), None when null
    pub xmin: Option<String>,
    /// physical: `restart_lsn`
    pub restart_lsn: Option<u64>,
    /// logical: `confirmed_flush_lsn`
    pub confirmed_flush_lsn: Option<u64>,
    /// `wal_status` (PostgreSQL 13+): `reserved`, `extended`, `unreserved`, `lost`
    pub wal_status: Option<String>,
    /// PostgreSQL 17: a failover slot (left to PostgreSQL's slot synchronisation)
    pub failover: bool,
}

impl ExistingSlot {
    fn is_physical(&self) -> bool {
        self.slot_type == "physical"
    }
}

/// A slot as a node wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DesiredSlot {
    /// Physical slot (member or permanent).
    Physical {
        /// Where the slot should be (advanced to when nobody streams from it).
        lsn: Option<u64>,
        /// A standby is expected to stream from it here (`None`: unknown, retained slot).
        expected_active: Option<bool>,
    },
    /// Permanent logical slot.
    Logical {
        /// database
        database: String,
        /// output plugin
        plugin: String,
        /// `confirmed_flush_lsn` the primary published
        lsn: Option<u64>,
    },
}

impl DesiredSlot {
    /// Patroni's `compare_slots`: same type and, for logical slots, same database and plugin.
    pub fn matches(&self, slot: &ExistingSlot) -> bool {
        match self {
            DesiredSlot::Physical { .. } => slot.slot_type == "physical",
            DesiredSlot::Logical {
                database, plugin, ..
            } => {
                slot.slot_type == "logical"
                    && slot.database.as_deref() == Some(database.as_str())
                    && slot.plugin.as_deref() == Some(plugin.as_str())
            }
        }
    }
}

/// The node's role for slot purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRole {
    /// Running read-write.
    Primary,
    /// Running in recovery.
    Replica,
}

/// The tags of the node whose slots are decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTags {
    /// `nofailover` (or `failover_priority: 0`)
    pub nofailover: bool,
    /// `nostream`
    pub nostream: bool,
    /// `replicatefrom`
    pub replicatefrom: Option<String>,
}

impl SlotTags {
    /// The tags a member publishes.
    pub fn of_member(m: &Member) -> SlotTags {
        SlotTags {
            nofailover: m.data.nofailover(),
            nostream: member_nostream(m),
            replicatefrom: member_replicatefrom(m),
        }
    }
}

fn member_nostream(m: &Member) -> bool {
    m.data.tags.get("nostream").is_some_and(truthy)
}

fn member_replicatefrom(m: &Member) -> Option<String> {
    m.data
        .tags
        .get("replicatefrom")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// An LSN published in `status.slots` (int, or a string of digits); 0 when unusable.
fn status_lsn(slots: &Map<String, Value>, name: &str) -> u64 {
    match slots.get(name) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Version tuple from a dotted version string (`4.1.4` → [4, 1, 4]).
fn version_tuple(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.trim().parse().ok()).collect()
}

/// The slot on the primary through which `name` (with `tags`) receives WAL: its own, or
/// that of the first node in its `replicatefrom` chain that streams from the primary.
/// `None` when the chain has a `nostream` node or loops.
pub fn slot_name_on_primary(cluster: &Cluster, name: &str, tags: &SlotTags) -> Option<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut name = name.to_string();
    let mut tags = tags.clone();
    loop {
        seen.insert(name.clone());
        if tags.nostream {
            return None;
        }
        let upstream = tags
            .replicatefrom
            .as_deref()
            .filter(|r| !r.is_empty() && *r != name)
            .and_then(|r| cluster.member(r));
        let Some(up) = upstream else {
            return Some(slot_name_for_member(&name));
        };
        if seen.contains(&up.name) {
            return None;
        }
        name = up.name.clone();
        tags = SlotTags::of_member(up);
    }
}

/// The slots a node needs and the configuration problems met on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// slot name → how it should be
    pub slots: BTreeMap<String, DesiredSlot>,
    /// errors Patroni logs (conflicting names)
    pub warnings: Vec<String>,
}

/// Patroni's `Cluster.get_replication_slots` for the node `name` with `tags` in `role`
/// (PostgreSQL 11+: slots can be advanced). A standby leader asks as
/// [`SlotRole::Primary`]: its replicas stream from it.
pub fn desired_slots(
    cluster: &Cluster,
    config: &SlotsConfig,
    name: &str,
    tags: &SlotTags,
    role: SlotRole,
) -> Desired {
    let mut out = Desired::default();
    if !config.use_slots {
        return out;
    }
    member_slots(cluster, config, name, tags, role, &mut out);
    permanent_slots(cluster, config, name, tags, role, &mut out);
    out
}

/// Physical slots for the other members (`_get_members_slots`).
fn member_slots(
    cluster: &Cluster,
    config: &SlotsConfig,
    name: &str,
    tags: &SlotTags,
    role: SlotRole,
    out: &mut Desired,
) {
    let leader = cluster.leader_name();
    // Who streams from this node: as leader everybody without a usable
    // `replicatefrom`; as replica only those naming this node (never the leader).
    let expected_active = |m: &Member| -> bool {
        let rf = member_replicatefrom(m);
        match role {
            SlotRole::Primary => match rf.as_deref() {
                None => true,
                Some(r) => r == name || cluster.member(r).is_none(),
            },
            SlotRole::Replica => rf.as_deref() == Some(name) && Some(m.name.as_str()) != leader,
        }
    };
    let members: Vec<&Member> = cluster
        .members
        .iter()
        .filter(|m| m.name != name && !member_nostream(m))
        .filter(|m| {
            if config.member_slots_ttl > 0 {
                // A node that cannot become leader only keeps slots of its cascade.
                !tags.nofailover || member_replicatefrom(m).as_deref() == Some(name)
            } else {
                expected_active(m)
            }
        })
        .collect();
    let leader_before_4 = cluster
        .leader_member()
        .and_then(|l| l.data.version.as_deref())
        .and_then(version_tuple)
        .is_some_and(|v| v < vec![4, 0, 0]);
    let mut conflicts: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for m in &members {
        let slot = slot_name_for_member(&m.name);
        let mut lsn = status_lsn(&cluster.status.slots, &slot);
        if member_replicatefrom(m).is_some() || leader_before_4 {
            // The slot on the leader does not move for a cascading member (nobody
            // streams from it there): its own position is the better guide.
            lsn = lsn.max(m.data.xlog_location.unwrap_or(0));
        }
        conflicts.entry(slot.clone()).or_default().push(&m.name);
        out.slots.insert(
            slot,
            DesiredSlot::Physical {
                lsn: (lsn > 0).then_some(lsn),
                expected_active: Some(expected_active(m)),
            },
        );
    }
    let own = slot_name_for_member(name);
    if !tags.nofailover {
        for slot in &cluster.status.retain_slots {
            if *slot != own && !out.slots.contains_key(slot) {
                out.slots.insert(
                    slot.clone(),
                    DesiredSlot::Physical {
                        lsn: None,
                        expected_active: None,
                    },
                );
            }
        }
    }
    let shared: Vec<String> = conflicts
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(slot, names)| format!("{} map to {slot}", names.join(", ")))
        .collect();
    if !shared.is_empty() {
        out.warnings.push(format!(
            "Following cluster members share a replication slot name: {}",
            shared.join("; ")
        ));
    }
}

/// Permanent slots for this node (`_get_permanent_slots` + `_merge_permanent_slots`).
fn permanent_slots(
    cluster: &Cluster,
    config: &SlotsConfig,
    name: &str,
    tags: &SlotTags,
    role: SlotRole,
    out: &mut Desired,
) {
    // A node that may never lead needs none; a node without its own feedback path to
    // the primary (nostream in its chain) gets no logical ones: they would be unsafe.
    if tags.nofailover {
        return;
    }
    let physical_only = slot_name_on_primary(cluster, name, tags).is_none();
    let own = slot_name_for_member(name);
    // Members replicating from someone: slot name → whether it cascades.
    let cascading: BTreeSet<String> = cluster
        .members
        .iter()
        .filter(|m| member_replicatefrom(m).is_some_and(|r| !r.is_empty()))
        .map(|m| slot_name_for_member(&m.name))
        .collect();
    let cascading_lsn: BTreeMap<String, u64> = cluster
        .members
        .iter()
        .filter(|m| member_replicatefrom(m).is_some_and(|r| !r.is_empty()))
        .map(|m| {
            (
                slot_name_for_member(&m.name),
                m.data.xlog_location.unwrap_or(0),
            )
        })
        .collect();
    for (slot, spec) in &config.permanent {
        match spec {
            PermanentSlot::Physical { cluster_type } => {
                // The physical set of a node without feedback honours cluster_type, as
                // Patroni's `permanent_physical_slots`; otherwise it does not.
                if physical_only && cluster_type.as_deref() == Some("standby") {
                    continue;
                }
                if *slot == own || out.slots.contains_key(slot) {
                    continue;
                }
                let lsn = status_lsn(&cluster.status.slots, slot)
                    .max(cascading_lsn.get(slot).copied().unwrap_or(0));
                out.slots.insert(
                    slot.clone(),
                    DesiredSlot::Physical {
                        lsn: (lsn > 0).then_some(lsn),
                        expected_active: Some(
                            !cascading.contains(slot) && role == SlotRole::Primary,
                        ),
                    },
                );
            }
            PermanentSlot::Logical { database, plugin } => {
                if physical_only {
                    continue;
                }
                if out.slots.contains_key(slot) {
                    out.warnings.push(format!(
                        "Permanent logical replication slot {{'{slot}': {{'type': 'logical', 'database': '{database}', 'plugin': '{plugin}'}}}} is conflicting with physical replication slot for cluster member"
                    ));
                    continue;
                }
                let lsn = status_lsn(&cluster.status.slots, slot);
                out.slots.insert(
                    slot.clone(),
                    DesiredSlot::Logical {
                        database: database.clone(),
                        plugin: plugin.clone(),
                        lsn: (lsn > 0).then_some(lsn),
                    },
                );
            }
        }
    }
}

/// Patroni's `should_enforce_hot_standby_feedback`: this node (or a node cascading
/// from it) keeps permanent logical slots, so the primary must not remove catalog rows
/// they still need.
pub fn should_enforce_hot_standby_feedback(
    cluster: &Cluster,
    config: &SlotsConfig,
    name: &str,
    tags: &SlotTags,
) -> bool {
    enforce_feedback(cluster, config, name, tags, 0)
}

fn enforce_feedback(
    cluster: &Cluster,
    config: &SlotsConfig,
    name: &str,
    tags: &SlotTags,
    depth: usize,
) -> bool {
    let has_logical = desired_slots(cluster, config, name, tags, SlotRole::Replica)
        .slots
        .values()
        .any(|s| matches!(s, DesiredSlot::Logical { .. }));
    if has_logical {
        return true;
    }
    // The depth bound only guards against a replicatefrom loop; the chain check below
    // already ends those.
    if !config.use_slots
        || depth > cluster.members.len()
        || slot_name_on_primary(cluster, name, tags).is_none()
    {
        return false;
    }
    let leader = cluster.leader_name();
    cluster
        .members
        .iter()
        .filter(|m| {
            member_replicatefrom(m).as_deref() == Some(name) && Some(m.name.as_str()) != leader
        })
        .any(|m| enforce_feedback(cluster, config, &m.name, &SlotTags::of_member(m), depth + 1))
}

/// Why a slot is dropped; [`SlotDrop::message`] words it as Patroni logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Neither member, permanent nor ignored.
    Unknown,
    /// Its WAL is gone (`wal_status = lost`): recreated afterwards.
    WalLost,
    /// Type, database or plugin differ from the configuration: recreated afterwards.
    AttributesChanged,
    /// A physical slot nobody should stream from holds an `xmin` that would never
    /// move again: recreated afterwards.
    StaleXmin(String),
    /// A physical slot without `restart_lsn` (made by someone else) cannot be advanced:
    /// recreated next cycle.
    NoRestartLsn,
}

/// One slot to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotDrop {
    /// slot name
    pub name: String,
    /// why
    pub reason: DropReason,
}

impl SlotDrop {
    /// The log line announcing the drop.
    pub fn message(&self) -> String {
        let n = &self.name;
        match &self.reason {
            DropReason::Unknown => format!("Trying to drop unknown replication slot '{n}'"),
            DropReason::WalLost => {
                format!("Trying to drop replication slot '{n}' with wal_status=lost")
            }
            DropReason::AttributesChanged => format!(
                "Trying to drop replication slot '{n}' because its type, database or plugin differ from the configuration"
            ),
            DropReason::StaleXmin(x) => {
                format!("Dropping physical replication slot {n} because of its xmin value {x}")
            }
            DropReason::NoRestartLsn => format!(
                "Dropping physical replication slot {n} because it has no restart_lsn. This slot was probably not created by Patroni, but by an external agent."
            ),
        }
    }
}

/// A logical slot to create, advance or copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalSlotOp {
    /// slot name
    pub name: String,
    /// database to connect to
    pub database: String,
    /// output plugin (creation)
    pub plugin: String,
    /// target position (advance)
    pub lsn: u64,
}

/// What to do with the slots of one node this cycle, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// Slots to drop (inactive ones only; PostgreSQL refuses the others).
    pub drop: Vec<SlotDrop>,
    /// Physical slots to create (`pg_create_physical_replication_slot(name, true)`).
    pub create_physical: Vec<String>,
    /// Physical slots to advance: (name, LSN).
    pub advance_physical: Vec<(String, u64)>,
    /// Primary: logical slots to create.
    pub create_logical: Vec<LogicalSlotOp>,
    /// Replica: logical slots to advance (`pg_replication_slot_advance` in their database).
    pub advance_logical: Vec<LogicalSlotOp>,
    /// Replica: logical slots to copy from the primary (needs a PostgreSQL restart).
    pub copy_logical: Vec<String>,
    /// Problems to log.
    pub warnings: Vec<String>,
}

/// Everything [`plan`] looks at.
#[derive(Clone, Debug)]
pub struct SlotsInput<'a> {
    /// my member name
    pub me: &'a str,
    /// my tags (local configuration)
    pub tags: &'a SlotTags,
    /// how PostgreSQL runs
    pub role: SlotRole,
    /// the cluster read this cycle
    pub cluster: &'a Cluster,
    /// slot settings
    pub config: &'a SlotsConfig,
    /// `pg_replication_slots` (not temporary)
    pub existing: &'a [ExistingSlot],
    /// replica: `pg_last_wal_replay_lsn()` (logical slots cannot pass it)
    pub replay_lsn: Option<u64>,
    /// cluster paused: nothing unknown is dropped
    pub paused: bool,
    /// `server_version_num`
    pub server_version: u32,
    /// replica: logical slots whose advance failed because their WAL is gone or they
    /// were invalidated: copy them again
    pub recopy: &'a BTreeSet<String>,
}

/// Patroni's `sync_replication_slots` as a plan.
pub fn plan(i: &SlotsInput<'_>) -> SlotPlan {
    let mut p = SlotPlan::default();
    if i.cluster.config.is_none() {
        return p;
    }
    let desired = desired_slots(i.cluster, i.config, i.me, i.tags, i.role);
    p.warnings = desired.warnings;
    let desired = desired.slots;
    let pg17 = i.server_version >= 170000;
    let mut present: BTreeMap<&str, &ExistingSlot> =
        i.existing.iter().map(|s| (s.name.as_str(), s)).collect();

    // Drop what should not be here (or whose WAL is lost).
    for s in i.existing {
        if pg17 && s.slot_type == "logical" && s.failover {
            continue;
        }
        let wanted = desired.contains_key(&s.name);
        let lost = wanted && s.wal_status.as_deref() == Some("lost");
        if wanted && !lost {
            continue;
        }
        if !i.paused && !i.config.is_ignored(s) {
            let reason = if lost {
                DropReason::WalLost
            } else {
                DropReason::Unknown
            };
            p.drop.push(SlotDrop {
                name: s.name.clone(),
                reason,
            });
            present.remove(s.name.as_str());
        }
    }
    for (name, want) in &desired {
        if present.get(name.as_str()).is_some_and(|s| !want.matches(s)) {
            p.drop.push(SlotDrop {
                name: name.clone(),
                reason: DropReason::AttributesChanged,
            });
            present.remove(name.as_str());
        }
    }

    // Physical slots: recreate stale ones, create missing ones, advance idle ones.
    let clean_inactive = i
        .cluster
        .leader_name()
        .is_some_and(|l| l != i.me || i.role == SlotRole::Primary);
    for (name, want) in &desired {
        let DesiredSlot::Physical {
            lsn,
            expected_active,
        } = want
        else {
            continue;
        };
        if let Some(s) = present.get(name.as_str()).filter(|s| s.is_physical()) {
            if let (true, Some(false), Some(x)) = (clean_inactive, expected_active, &s.xmin) {
                p.drop.push(SlotDrop {
                    name: name.clone(),
                    reason: DropReason::StaleXmin(x.clone()),
                });
                present.remove(name.as_str());
            }
        }
        let Some(s) = present.get(name.as_str()) else {
            p.create_physical.push(name.clone());
            continue;
        };
        if !s.is_physical() || *expected_active == Some(true) || s.xmin.is_some() {
            continue;
        }
        match s.restart_lsn {
            None => p.drop.push(SlotDrop {
                name: name.clone(),
                reason: DropReason::NoRestartLsn,
            }),
            Some(restart) => {
                if let Some(l) = lsn.filter(|l| *l > restart) {
                    p.advance_physical.push((name.clone(), l));
                }
            }
        }
    }

    // Logical slots: created on the primary; copied to and advanced on replicas.
    for (name, want) in &desired {
        let DesiredSlot::Logical {
            database,
            plugin,
            lsn,
        } = want
        else {
            continue;
        };
        let op = |lsn: u64| LogicalSlotOp {
            name: name.clone(),
            database: database.clone(),
            plugin: plugin.clone(),
            lsn,
        };
        let here = present.get(name.as_str());
        match i.role {
            SlotRole::Primary => {
                if here.is_none() {
                    p.create_logical.push(op(0));
                }
            }
            SlotRole::Replica => {
                if i.recopy.contains(name) {
                    p.copy_logical.push(name.clone());
                } else if let Some(s) = here {
                    // A replica's slot cannot move past what it has replayed.
                    let target = lsn.zip(i.replay_lsn).map(|(l, r)| l.min(r));
                    if let Some(t) = target.filter(|t| s.confirmed_flush_lsn.unwrap_or(0) < *t) {
                        p.advance_logical.push(op(t));
                    }
                } else if lsn.is_some() {
                    // Only slots the primary published feedback for are worth copying.
                    p.copy_logical.push(name.clone());
                }
            }
        }
    }
    p
}

/// Of the slots read from the primary for copying, those whose type, database and
/// plugin match what this replica wants; the others are named in the warnings.
pub fn slots_to_copy(
    wanted: &BTreeMap<String, DesiredSlot>,
    on_primary: &[ExistingSlot],
) -> (Vec<String>, Vec<String>) {
    let mut copy = Vec::new();
    let mut warnings = Vec::new();
    for s in on_primary {
        let Some(want) = wanted.get(&s.name) else {
            continue;
        };
        if want.matches(s) {
            copy.push(s.name.clone());
        } else {
            warnings.push(format!(
                "Will not copy the logical slot \"{}\" due to the configuration mismatch: configuration={want:?}, slot on the primary: type={} database={:?} plugin={:?}",
                s.name, s.slot_type, s.database, s.plugin
            ));
        }
    }
    (copy, warnings)
}

/// The `slots` the leader publishes in `status`: every slot it wants and has (physical:
/// `restart_lsn`, logical: `confirmed_flush_lsn`) plus its own member slot name at its
/// WAL position. With `member_slots_ttl: 0` only permanent slots are published.
pub fn published_slots(
    cluster: &Cluster,
    config: &SlotsConfig,
    me: &str,
    tags: &SlotTags,
    existing: &[ExistingSlot],
    wal_position: u64,
) -> BTreeMap<String, u64> {
    let desired = desired_slots(cluster, config, me, tags, SlotRole::Primary).slots;
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for s in existing {
        let Some(want) = desired.get(&s.name).filter(|w| w.matches(s)) else {
            continue;
        };
        let lsn = match want {
            DesiredSlot::Physical { .. } => s.restart_lsn,
            DesiredSlot::Logical { .. } => s.confirmed_flush_lsn,
        };
        if let Some(l) = lsn {
            out.insert(s.name.clone(), l);
        }
    }
    out.insert(slot_name_for_member(me), wal_position);
    if config.member_slots_ttl == 0 {
        let member_slots: BTreeSet<String> = cluster
            .members
            .iter()
            .map(|m| slot_name_for_member(&m.name))
            .collect();
        out.retain(
            |name, _| match (config.use_slots, config.permanent.get(name)) {
                (true, Some(PermanentSlot::Physical { .. })) => true,
                (true, Some(PermanentSlot::Logical { .. })) => !member_slots.contains(name),
                _ => false,
            },
        );
    }
    out
}

/// The leader's memory of member slots for `retain_slots`: slot name → when it was last
/// seen belonging to a member (ms, the caller's clock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetainedSlots {
    seen_ms: BTreeMap<String, u64>,
}

impl RetainedSlots {
    /// On becoming leader: the names in the `status` key count as seen now.
    pub fn taken_over(status_retain: &[String], now_ms: u64) -> RetainedSlots {
        RetainedSlots {
            seen_ms: status_retain.iter().map(|n| (n.clone(), now_ms)).collect(),
        }
    }

    /// Patroni's `_build_retain_slots`: remembers the published member slots (not the
    /// permanent physical ones), forgets names not seen for `member_slots_ttl`, and
    /// returns the sorted `retain_slots` and one log line per forgotten name.
    pub fn update(
        &mut self,
        cluster: &Cluster,
        config: &SlotsConfig,
        me: &str,
        published: &BTreeMap<String, u64>,
        now_ms: u64,
    ) -> (Vec<String>, Vec<String>) {
        if !published.is_empty() {
            let mut members: BTreeSet<String> = BTreeSet::new();
            // Patroni looks only at the last member here (its loop overwrites the
            // flag); the effect, my own name listed while my key is missing, is kept.
            let mut found_self = false;
            for m in &cluster.members {
                found_self = m.name == me;
                if !member_nostream(m) {
                    members.insert(slot_name_for_member(&m.name));
                }
            }
            if !found_self {
                members.insert(slot_name_for_member(me));
            }
            for name in published.keys() {
                let permanent_physical = config.permanent.get(name).is_some_and(|p| match p {
                    PermanentSlot::Physical { cluster_type } => {
                        cluster_type.as_deref() != Some("standby")
                    }
                    PermanentSlot::Logical { .. } => false,
                });
                if members.contains(name) && !permanent_physical {
                    self.seen_ms.insert(name.clone(), now_ms);
                }
            }
        }
        let ttl_ms = config.member_slots_ttl.saturating_mul(1000);
        let mut expired = Vec::new();
        self.seen_ms.retain(|name, seen| {
            let keep = seen.saturating_add(ttl_ms) > now_ms;
            if !keep {
                expired.push(format!(
                    "Replication slot '{name}' for absent cluster member is expired after {} sec.",
                    config.member_slots_ttl
                ));
            }
            keep
        });
        (self.seen_ms.keys().cloned().collect(), expired)
    }
}

/// Converts published positions into the `status.slots` JSON object.
pub fn slots_json(slots: &BTreeMap<String, u64>) -> Map<String, Value> {
    slots
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(*v)))
        .collect()
}

#[cfg(test)]
mod tests;
