//! The cluster as stored in the DCS, in Patroni's key layout (spec/dcs.md).
//!
//! Parsing is lenient like Patroni's readers: a value of the wrong shape becomes the
//! empty value of its key (and is reported in [`Cluster::warnings`]), never an error.

use serde_json::{Map, Value};

/// One key under the cluster prefix, as the DCS returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Key relative to the cluster prefix, e.g. `leader` or `members/pg1`.
    pub key: String,
    /// Raw value (UTF-8; invalid bytes replaced).
    pub value: String,
    /// etcd `mod_revision`: the object's *version* for compare-and-set writes.
    pub mod_revision: i64,
    /// Lease attached to the key (0 = none).
    pub lease: i64,
}

/// The leader lock: who holds it and with which lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Member name holding the lock.
    pub name: String,
    /// mod_revision of the `leader` key.
    pub version: i64,
    /// Lease (session) the key is attached to.
    pub session: i64,
}

/// A `members/<name>` key.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Member name (last path component of the key).
    pub name: String,
    /// mod_revision of the key.
    pub version: i64,
    /// Lease the key is attached to.
    pub session: i64,
    /// Parsed content.
    pub data: MemberData,
}

/// The JSON a node publishes in its member key (spec/dcs.md §3.2).
///
/// Fields are kept in the order Patroni writes them; unknown fields read from other
/// agents are preserved in `extra` so nothing is lost when re-serialising.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberData {
    /// `postgres://host:port/db`
    pub conn_url: Option<String>,
    /// `http://host:port/patroni`
    pub api_url: Option<String>,
    /// PostgreSQL state (`running`, `stopped`, `creating replica`, …).
    pub state: Option<String>,
    /// Role (`primary`, `replica`, …); `master` from old Patroni is read as `primary`.
    pub role: Option<String>,
    /// Agent version (Patroni-compatible dotted version).
    pub version: Option<String>,
    /// Published tags (already filtered as Patroni does).
    pub tags: Map<String, Value>,
    /// A restart is needed to apply config.
    pub pending_restart: bool,
    /// WAL position (primary: flush LSN; replica: max(receive, replay)).
    pub xlog_location: Option<u64>,
    /// Replica replay LSN.
    pub replay_lsn: Option<u64>,
    /// Replica receive LSN.
    pub receive_lsn: Option<u64>,
    /// `streaming` / `in archive recovery`.
    pub replication_state: Option<String>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// Cluster is paused (lets `pause --wait` see each node noticed).
    pub pause: bool,
    /// Fields we do not model, kept verbatim.
    pub extra: Map<String, Value>,
}

fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn json_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Python truthiness of a JSON value (`0`, `""`, `{}`, `[]`, `null`, `false` are false):
/// how Patroni tests a configuration value with a bare `if value`.
pub fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Patroni's boolean reading of a tag or flag value (`true`, `on`, `yes`, `1`, …).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
        Value::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "on" | "yes" | "1" | "y" | "t"
        ),
        _ => false,
    }
}

impl MemberData {
    /// Parses a member value leniently. Legacy `postgres://…?application_name=<api_url>`
    /// values are understood; anything unparsable gives empty data.
    pub fn parse(raw: &str) -> MemberData {
        let raw = raw.trim();
        if raw.starts_with("postgres") {
            let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
            let api_url = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("application_name="))
                .map(str::to_string);
            return MemberData {
                conn_url: Some(base.to_string()),
                api_url,
                ..MemberData::default()
            };
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => MemberData::from_map(map),
            _ => MemberData::default(),
        }
    }

    /// Builds from a JSON object; wrong-typed fields are ignored.
    pub fn from_map(map: Map<String, Value>) -> MemberData {
        let mut d = MemberData::default();
        for (k, v) in map {
            match k.as_str() {
                "conn_url" => d.conn_url = json_string(&v),
                "api_url" => d.api_url = json_string(&v),
                "state" => d.state = json_string(&v),
                "role" => {
                    d.role =
                        json_string(&v).map(|r| if r == "master" { "primary".into() } else { r })
                }
                "version" => d.version = json_string(&v),
                "tags" => {
                    if let Value::Object(t) = v {
                        d.tags = t
                    }
                }
                "pending_restart" => d.pending_restart = truthy(&v),
                "xlog_location" => d.xlog_location = json_u64(&v),
                "replay_lsn" => d.replay_lsn = json_u64(&v),
                "receive_lsn" => d.receive_lsn = json_u64(&v),
                "replication_state" => d.replication_state = json_string(&v),
                "timeline" => d.timeline = json_u64(&v).and_then(|t| u32::try_from(t).ok()),
                "pause" => d.pause = truthy(&v),
                _ => {
                    d.extra.insert(k, v);
                }
            }
        }
        d
    }

    /// Serialises as compact JSON in Patroni's field order.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        let put_s = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        };
        put_s(&mut m, "conn_url", &self.conn_url);
        put_s(&mut m, "api_url", &self.api_url);
        put_s(&mut m, "state", &self.state);
        put_s(&mut m, "role", &self.role);
        put_s(&mut m, "version", &self.version);
        for k in ["proxy_url", "checkpoint_after_promote"] {
            if let Some(v) = self.extra.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        if !self.tags.is_empty() {
            m.insert("tags".into(), Value::Object(self.tags.clone()));
        }
        if self.pending_restart {
            m.insert("pending_restart".into(), Value::Bool(true));
            if let Some(v) = self.extra.get("pending_restart_reason") {
                m.insert("pending_restart_reason".into(), v.clone());
            }
        }
        let put_n = |m: &mut Map<String, Value>, k: &str, v: Option<u64>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v));
            }
        };
        put_n(&mut m, "xlog_location", self.xlog_location);
        put_n(&mut m, "replay_lsn", self.replay_lsn);
        put_n(&mut m, "receive_lsn", self.receive_lsn);
        if let Some(s) = &self.replication_state {
            m.insert("replication_state".into(), Value::String(s.clone()));
        }
        put_n(&mut m, "timeline", self.timeline.map(u64::from));
        for (k, v) in &self.extra {
            if !m.contains_key(k) && k != "pending_restart_reason" {
                m.insert(k.clone(), v.clone());
            }
        }
        if self.pause {
            m.insert("pause".into(), Value::Bool(true));
        }
        Value::Object(m).to_string()
    }

    /// `nofailover` as Patroni evaluates it: the tag, or `failover_priority` ≤ 0.
    pub fn nofailover(&self) -> bool {
        if let Some(v) = self.tags.get("nofailover") {
            return truthy(v);
        }
        self.failover_priority() <= 0
    }

    /// `failover_priority` tag (default 1; `nofailover: true` means 0).
    pub fn failover_priority(&self) -> i64 {
        if self.tags.get("nofailover").map(truthy).unwrap_or(false) {
            return 0;
        }
        self.tags
            .get("failover_priority")
            .and_then(|v| json_u64(v).map(|n| n as i64))
            .unwrap_or(1)
    }

    /// The `clonefrom` tag.
    pub fn clonefrom(&self) -> bool {
        self.tags.get("clonefrom").map(truthy).unwrap_or(false)
    }

    /// Host and port from `conn_url` (port defaults to 5432).
    pub fn conn_host_port(&self) -> Option<(String, u16)> {
        parse_conn_url(self.conn_url.as_deref()?)
    }

    /// Base URL (scheme://host:port) of the member's REST API.
    pub fn api_base(&self) -> Option<String> {
        api_base_of(self.api_url.as_deref()?)
    }
}

/// Base URL (scheme://host:port) of a REST `api_url` (e.g. from the `failsafe` key).
pub fn api_base_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let hostport = rest.split('/').next()?;
    Some(format!("{scheme}://{hostport}"))
}

/// Parses `postgres://[user[:pw]@]host[:port][/db]` into host and port (5432 default).
pub fn parse_conn_url(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next()?;
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(5432);
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None if !hostport.is_empty() => Some((hostport.to_string(), 5432)),
        None => None,
    }
}

/// The `status` key: the leader's last known WAL position and slot positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// Leader WAL position ("last leader operation").
    pub optime: Option<u64>,
    /// Slot name → LSN.
    pub slots: Map<String, Value>,
    /// Member slot names to retain.
    pub retain_slots: Vec<String>,
}

impl Status {
    /// Parses `status` (JSON object, or a legacy bare integer).
    pub fn parse(raw: &str) -> Status {
        match serde_json::from_str::<Value>(raw.trim()) {
            Ok(Value::Object(m)) => {
                let slots = match m.get("slots") {
                    Some(Value::Object(s)) => s.clone(),
                    Some(Value::String(s)) => match serde_json::from_str(s) {
                        Ok(Value::Object(s)) => s,
                        _ => Map::new(),
                    },
                    _ => Map::new(),
                };
                let names = |a: &[Value]| a.iter().filter_map(json_string).collect();
                let retain_slots = match m.get("retain_slots") {
                    Some(Value::Array(a)) => names(a),
                    // Patroni also reads a JSON list stored as a string.
                    Some(Value::String(s)) => match serde_json::from_str(s) {
                        Ok(Value::Array(a)) => names(&a),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                Status {
                    optime: m.get("optime").and_then(json_u64),
                    slots,
                    retain_slots,
                }
            }
            Ok(v) => Status {
                optime: json_u64(&v),
                ..Status::default()
            },
            Err(_) => Status::default(),
        }
    }

    /// Compact JSON as the leader writes it.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        if let Some(o) = self.optime {
            m.insert("optime".into(), Value::from(o));
        }
        if !self.slots.is_empty() {
            m.insert("slots".into(), Value::Object(self.slots.clone()));
        }
        if !self.retain_slots.is_empty() {
            m.insert(
                "retain_slots".into(),
                Value::Array(
                    self.retain_slots
                        .iter()
                        .cloned()
                        .map(Value::String)
                        .collect(),
                ),
            );
        }
        Value::Object(m).to_string()
    }
}

/// A pending switchover/failover request (the `failover` key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverRequest {
    /// Switchover from this leader (absent = failover).
    pub leader: Option<String>,
    /// Candidate.
    pub member: Option<String>,
    /// ISO 8601 time for a scheduled switchover.
    pub scheduled_at: Option<String>,
    /// mod_revision of the key.
    pub version: i64,
}

impl FailoverRequest {
    /// Parses the key; `None` when it holds no request (`{}` or garbage).
    pub fn parse(raw: &str, version: i64) -> Option<FailoverRequest> {
        let raw = raw.trim();
        let req = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => FailoverRequest {
                leader: m
                    .get("leader")
                    .and_then(json_string)
                    .filter(|s| !s.is_empty()),
                member: m
                    .get("member")
                    .and_then(json_string)
                    .filter(|s| !s.is_empty()),
                scheduled_at: m.get("scheduled_at").and_then(json_string),
                version,
            },
            _ => {
                // legacy "leader:candidate"
                let (l, m) = raw.split_once(':')?;
                FailoverRequest {
                    leader: Some(l.to_string()).filter(|s| !s.is_empty()),
                    member: Some(m.to_string()).filter(|s| !s.is_empty()),
                    scheduled_at: None,
                    version,
                }
            }
        };
        (req.leader.is_some() || req.member.is_some()).then_some(req)
    }
}

/// The `sync` key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Primary that owns the synchronous standby list.
    pub leader: Option<String>,
    /// Synchronous standbys.
    pub sync_standby: Vec<String>,
    /// Quorum (quorum mode only).
    pub quorum: u32,
    /// mod_revision.
    pub version: i64,
}

impl SyncState {
    /// Parses the key; `None` when empty/invalid or without a leader.
    pub fn parse(raw: &str, version: i64) -> Option<SyncState> {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(raw.trim()) else {
            return None;
        };
        let leader = m
            .get("leader")
            .and_then(json_string)
            .filter(|s| !s.is_empty())?;
        let sync_standby = m
            .get("sync_standby")
            .and_then(json_string)
            .map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(SyncState {
            quorum: m.get("quorum").and_then(json_u64).unwrap_or(0) as u32,
            leader: Some(leader),
            sync_standby,
            version,
        })
    }

    /// Is `name` the sync leader or a listed standby (case-insensitive)?
    pub fn matches(&self, name: &str) -> bool {
        self.leader
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(name))
            || self
                .sync_standby
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
    }
}

/// One line of the `history` key: `[parent_timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryLine {
    /// The timeline that ended.
    pub timeline: u32,
    /// Where it ended (bytes).
    pub lsn: u64,
    /// Reason text from the `.history` file.
    pub reason: String,
    /// Promotion time (ISO 8601), if known.
    pub timestamp: Option<String>,
    /// New leader, if known.
    pub new_leader: Option<String>,
}

impl HistoryLine {
    /// As the JSON array Patroni writes.
    pub fn to_value(&self) -> Value {
        let mut a = vec![
            Value::from(self.timeline),
            Value::from(self.lsn),
            Value::String(self.reason.clone()),
        ];
        if let Some(t) = &self.timestamp {
            a.push(Value::String(t.clone()));
            if let Some(l) = &self.new_leader {
                a.push(Value::String(l.clone()));
            }
        }
        Value::Array(a)
    }
}

/// Parses the `history` key; garbage gives an empty list.
pub fn parse_history(raw: &str) -> Vec<HistoryLine> {
    let Ok(Value::Array(lines)) = serde_json::from_str::<Value>(raw.trim()) else {
        return Vec::new();
    };
    lines
        .iter()
        .filter_map(|l| {
            let a = l.as_array()?;
            Some(HistoryLine {
                timeline: a.first().and_then(json_u64)? as u32,
                lsn: a.get(1).and_then(json_u64)?,
                reason: a.get(2).and_then(json_string).unwrap_or_default(),
                timestamp: a.get(3).and_then(json_string),
                new_leader: a.get(4).and_then(json_string),
            })
        })
        .collect()
}

/// The dynamic configuration key with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigKey {
    /// The stored JSON object (as stored: defaults are applied by readers).
    pub value: Value,
    /// mod_revision (0 when the stored value was not valid JSON).
    pub version: i64,
}

/// Everything under `/<namespace>/<scope>/`, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cluster {
    /// `initialize`: sysid, `""` while bootstrapping, `None` if absent.
    pub initialize: Option<String>,
    /// `config`.
    pub config: Option<ConfigKey>,
    /// `leader`.
    pub leader: Option<Leader>,
    /// `members/*`, sorted by name.
    pub members: Vec<Member>,
    /// `status` (or legacy `optime/leader`).
    pub status: Status,
    /// `failover`.
    pub failover: Option<FailoverRequest>,
    /// `sync`.
    pub sync: Option<SyncState>,
    /// `history` (`None` = key absent).
    pub history: Option<Vec<HistoryLine>>,
    /// `failsafe` (`None` = absent/invalid).
    pub failsafe: Option<Map<String, Value>>,
    /// What was wrong with values that were read leniently (for logging).
    pub warnings: Vec<String>,
}

impl Cluster {
    /// Builds the cluster from the keys under the prefix (keys relative to it).
    pub fn from_kvs(kvs: &[KeyValue]) -> Cluster {
        let mut c = Cluster::default();
        let mut legacy_optime = None;
        for kv in kvs {
            let key = kv.key.trim_start_matches('/');
            match key {
                "initialize" => c.initialize = Some(kv.value.clone()),
                "config" => {
                    c.config = Some(match serde_json::from_str::<Value>(&kv.value) {
                        Ok(v @ Value::Object(_)) => ConfigKey {
                            value: v,
                            version: kv.mod_revision,
                        },
                        _ => {
                            c.warnings
                                .push("config key does not hold a JSON object".into());
                            ConfigKey {
                                value: Value::Object(Map::new()),
                                version: 0,
                            }
                        }
                    })
                }
                "leader" => {
                    let name = kv.value.trim();
                    if !name.is_empty() {
                        c.leader = Some(Leader {
                            name: name.to_string(),
                            version: kv.mod_revision,
                            session: kv.lease,
                        });
                    }
                }
                "status" => c.status = Status::parse(&kv.value),
                "optime/leader" => legacy_optime = kv.value.trim().parse::<u64>().ok(),
                "failover" => c.failover = FailoverRequest::parse(&kv.value, kv.mod_revision),
                "sync" => c.sync = SyncState::parse(&kv.value, kv.mod_revision),
                "history" => c.history = Some(parse_history(&kv.value)),
                "failsafe" => {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&kv.value) {
                        c.failsafe = Some(m);
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix("members/") {
                        if name.is_empty() || name.contains('/') {
                            continue;
                        }
                        let data = MemberData::parse(&kv.value);
                        if data == MemberData::default() && !kv.value.trim().is_empty() {
                            c.warnings.push(format!(
                                "member key members/{name} holds unparsable data; treating it as empty"
                            ));
                        }
                        c.members.push(Member {
                            name: name.to_string(),
                            version: kv.mod_revision,
                            session: kv.lease,
                            data,
                        });
                    }
                }
            }
        }
        if c.status.optime.is_none() {
            c.status.optime = legacy_optime;
        }
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// No leader key.
    pub fn is_unlocked(&self) -> bool {
        self.leader.is_none()
    }

    /// Name of the lock holder.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }

    /// Member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader's member entry, if the leader has one.
    pub fn leader_member(&self) -> Option<&Member> {
        self.leader_name().and_then(|n| self.member(n))
    }

    /// `initialize` holds a valid system identifier (≥ 10 digits).
    pub fn initialized_sysid(&self) -> Option<&str> {
        self.initialize.as_deref().filter(|s| is_valid_sysid(s))
    }

    /// Cluster timeline derived from `history`: absent → 0, `[]` → 1, else last + 1.
    pub fn timeline(&self) -> u32 {
        match &self.history {
            None => 0,
            Some(h) => h.last().map(|l| l.timeline + 1).unwrap_or(1),
        }
    }

    /// Dynamic config value (empty object if absent).
    pub fn config_value(&self) -> Value {
        self.config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_else(|| Value::Object(Map::new()))
    }

    /// `pause: true` in the dynamic config.
    pub fn is_paused(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.value.get("pause"))
            .map(truthy)
            .unwrap_or(false)
    }
}

/// Flags of the dynamic ("global") configuration that the API needs, read the way
/// Patroni's `global_config` reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalFlags {
    /// A valid `standby_cluster` section (with `host`, `port` or `restore_command`).
    pub standby_cluster: bool,
    /// `synchronous_mode` is on (true or `quorum`) and this is not a standby cluster.
    pub synchronous_mode: bool,
    /// `synchronous_mode: quorum`.
    pub quorum_commit_mode: bool,
    /// `pause: true`.
    pub paused: bool,
}

fn json_truthy_py(v: Option<&Value>) -> bool {
    // Python truthiness of a JSON value (used for `standby_cluster` fields).
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

impl GlobalFlags {
    /// Flags from a dynamic configuration object.
    pub fn from_config(cfg: &Value) -> GlobalFlags {
        let standby_cluster = match cfg.get("standby_cluster") {
            Some(Value::Object(sc)) => {
                json_truthy_py(sc.get("host"))
                    || json_truthy_py(sc.get("port"))
                    || json_truthy_py(sc.get("restore_command"))
            }
            _ => false,
        };
        let mode = cfg.get("synchronous_mode");
        let quorum_commit_mode = matches!(mode, Some(Value::String(s)) if s == "quorum");
        let sync_on = mode.is_some_and(truthy) || quorum_commit_mode;
        GlobalFlags {
            standby_cluster,
            synchronous_mode: sync_on && !standby_cluster,
            quorum_commit_mode,
            paused: cfg.get("pause").is_some_and(truthy),
        }
    }

    /// Flags from a cluster view (all off without one or without a config key).
    pub fn from_cluster(c: Option<&Cluster>) -> GlobalFlags {
        match c.and_then(|c| c.config.as_ref()) {
            Some(k) => GlobalFlags::from_config(&k.value),
            None => GlobalFlags::default(),
        }
    }
}

/// A system identifier is valid when it has at least 10 characters, all digits.
pub fn is_valid_sysid(s: &str) -> bool {
    s.len() >= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: 7,
            lease: 0,
        }
    }

    #[test]
    fn parses_patroni_keys() {
        let c = Cluster::from_kvs(&[
            kv("initialize", "7268616322854375442"),
            kv("leader", "pg1"),
            kv(
                "members/pg1",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"master","version":"4.1.4","tags":{"clonefrom":true},"xlog_location":67395656,"timeline":1}"#,
            ),
            kv(
                "members/pg2",
                r#"{"conn_url":"postgres://10.0.0.2:5433/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":"67419744","replay_lsn":67419744,"receive_lsn":67419744,"replication_state":"streaming","timeline":1}"#,
            ),
            kv("status", r#"{"optime":67395656,"slots":{"pg2":67390000}}"#),
            kv(
                "history",
                r#"[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","pg1"]]"#,
            ),
            kv("failover", "{}"),
            kv(
                "sync",
                r#"{"leader":"pg1","quorum":0,"sync_standby":"pg2"}"#,
            ),
        ]);
        assert_eq!(c.initialized_sysid(), Some("7268616322854375442"));
        assert_eq!(c.leader_name(), Some("pg1"));
        assert_eq!(c.members.len(), 2);
        let pg1 = &c.member("pg1").unwrap().data;
        assert_eq!(pg1.role.as_deref(), Some("primary"));
        assert!(pg1.clonefrom());
        let pg2 = &c.member("pg2").unwrap().data;
        assert_eq!(pg2.xlog_location, Some(67419744));
        assert_eq!(pg2.conn_host_port(), Some(("10.0.0.2".into(), 5433)));
        assert_eq!(pg2.api_base().as_deref(), Some("http://10.0.0.2:8008"));
        assert_eq!(c.status.optime, Some(67395656));
        assert_eq!(c.timeline(), 2);
        assert!(c.failover.is_none());
        assert!(c.sync.as_ref().unwrap().matches("PG2"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn garbage_is_lenient() {
        let c = Cluster::from_kvs(&[
            kv("members/bad", "\u{0}garbage{"),
            kv("members/arr", "[1,2]"),
            kv("status", "nonsense"),
            kv("history", "{}"),
            kv("config", "not json"),
            kv("failover", "x"),
            kv("sync", "[]"),
            kv("leader", ""),
            kv("members/a/b", "{}"),
        ]);
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.members[0].data, MemberData::default());
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.is_unlocked());
        assert_eq!(c.status, Status::default());
        assert_eq!(c.history, Some(vec![]));
        assert_eq!(c.timeline(), 1);
        assert_eq!(c.config.as_ref().unwrap().version, 0);
        assert!(c.failover.is_none() && c.sync.is_none());
    }

    #[test]
    fn legacy_formats() {
        let m =
            MemberData::parse("postgres://u:p@h:5433/db?application_name=http://h:8008/patroni");
        assert_eq!(m.api_url.as_deref(), Some("http://h:8008/patroni"));
        assert_eq!(m.conn_host_port(), Some(("h".into(), 5433)));
        let f = FailoverRequest::parse("a:b", 3).unwrap();
        assert_eq!(
            (f.leader.as_deref(), f.member.as_deref()),
            (Some("a"), Some("b"))
        );
        let c = Cluster::from_kvs(&[kv("optime/leader", "123"), kv("status", "456")]);
        assert_eq!(c.status.optime, Some(456));
        let c = Cluster::from_kvs(&[kv("optime/leader", "123")]);
        assert_eq!(c.status.optime, Some(123));
    }

    #[test]
    fn member_json_round_trip_keeps_order_and_unknown_fields() {
        let raw = r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"4.1.5","proxy_url":"postgres://x/postgres","tags":{"nofailover":true},"xlog_location":5,"replay_lsn":5,"receive_lsn":5,"replication_state":"streaming","timeline":2,"custom":1}"#;
        let m = MemberData::parse(raw);
        assert_eq!(m.to_json(), raw);
        assert!(m.nofailover());
        assert_eq!(m.failover_priority(), 0);
    }

    #[test]
    fn failover_priority_and_ipv6() {
        let m = MemberData::parse(r#"{"tags":{"failover_priority":"0"}}"#);
        assert!(m.nofailover());
        let m = MemberData::parse(r#"{"tags":{"failover_priority":2}}"#);
        assert_eq!(m.failover_priority(), 2);
        assert!(!m.nofailover());
        assert_eq!(
            parse_conn_url("postgres://[::1]:6000/postgres"),
            Some(("::1".into(), 6000))
        );
        assert_eq!(
            parse_conn_url("postgres://host/postgres"),
            Some(("host".into(), 5432))
        );
        assert_eq!(parse_conn_url("http://x"), None);
    }
}
