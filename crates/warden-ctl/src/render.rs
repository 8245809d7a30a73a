//! Rendering of `list` / `topology` exactly as patronictl 4.1.4 prints them
//! (`patroni/ctl.py` `output_members` + `print_output`, `patroni/utils.py` `cluster_as_json`).
//!
//! Pure: no I/O, no clocks.

use serde_json::{Map, Value};
use warden_core::cluster::{parse_conn_url, Cluster, Member};
use warden_core::lsn::format_lsn;

use crate::pyfmt::{json_dumps, py_parse_bool, py_str, py_truthy, yaml_dump};

/// Output format of `list` (`-f`), plus `topology`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PrettyTable with the cluster title in the top border, plus the footer.
    Pretty,
    /// Tab-separated values with a header row.
    Tsv,
    /// One line of JSON (Python `json.dumps`).
    Json,
    /// YAML (PyYAML `safe_dump`, keys sorted, block style). Also `yml`.
    Yaml,
    /// `topology`: pretty table with members ordered as a replication tree.
    Topology,
}

impl Format {
    /// Parses a `-f` value (`pretty`, `tsv`, `json`, `yaml`, `yml`, `topology`).
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "pretty" => Format::Pretty,
            "tsv" => Format::Tsv,
            "json" => Format::Json,
            "yaml" | "yml" => Format::Yaml,
            "topology" => Format::Topology,
            _ => return None,
        })
    }

    fn is_table(self) -> bool {
        matches!(self, Format::Pretty | Format::Topology)
    }
}

/// Options of `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOptions {
    /// `-e/--extended`: always show the optional columns.
    pub extended: bool,
    /// Output format.
    pub format: Format,
}

/// A member as `cluster_as_json` describes it (only what `list` uses).
#[derive(Clone, Debug)]
struct MemberInfo {
    name: String,
    role: String,
    state: String,
    host: Option<String>,
    port: Option<u16>,
    timeline: Option<u32>,
    pending_restart: bool,
    pending_restart_reason: Option<Value>,
    scheduled_restart: Option<Value>,
    tags: Option<Map<String, Value>>,
    /// `(lsn, lag)` for receive, replay and plain (`xlog_location`); `None` for the leader.
    /// An unpublished LSN is `("unknown", None)`.
    positions: Option<[(String, Option<u64>); 3]>,
}

/// Cluster-level information for the footer.
struct ClusterInfo {
    members: Vec<MemberInfo>,
    pause: bool,
    /// `(at, from, to)`.
    scheduled_switchover: Option<(String, Option<String>, Option<String>)>,
}

fn config_get<'a>(c: &'a Cluster, key: &str) -> Option<&'a Value> {
    c.config.as_ref().and_then(|k| k.value.get(key))
}

fn is_standby_cluster(c: &Cluster) -> bool {
    match config_get(c, "standby_cluster") {
        Some(Value::Object(m)) => ["host", "port", "restore_command"]
            .iter()
            .any(|k| m.get(*k).is_some_and(py_truthy)),
        _ => false,
    }
}

fn host_port(m: &Member) -> (Option<String>, Option<u16>) {
    // `conn_kwargs` in member data wins over `conn_url` (Patroni's Member.conn_kwargs()).
    if let Some(Value::Object(kw)) = m.data.extra.get("conn_kwargs") {
        if !kw.is_empty() {
            let host = kw.get("host").filter(|h| py_truthy(h)).map(py_str);
            let port = kw
                .get("port")
                .filter(|p| py_truthy(p))
                .and_then(|p| py_str(p).trim().parse().ok());
            return match host {
                Some(h) => (Some(h), port),
                None => (None, None),
            };
        }
    }
    match m.data.conn_url.as_deref().and_then(parse_conn_url) {
        Some((h, p)) if !h.is_empty() => {
            // urlparse().hostname lower-cases; a port of 0 means "default".
            (Some(h.to_lowercase()), Some(if p == 0 { 5432 } else { p }))
        }
        _ => (None, None),
    }
}

/// `cluster_as_json` (patroni/utils.py).
fn cluster_info(c: &Cluster) -> ClusterInfo {
    let leader = c.leader_name();
    let standby = is_standby_cluster(c);
    let sync_value = config_get(c, "synchronous_mode");
    let quorum = sync_value.is_some_and(|v| py_str(v).to_lowercase() == "quorum");
    let sync_mode = (sync_value.is_some_and(py_parse_bool) || quorum) && !standby;
    let sync_role = if quorum {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let cluster_lsn = c.status.optime.unwrap_or(0);

    let mut members: Vec<MemberInfo> = c
        .members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if standby {
                    "standby_leader"
                } else {
                    "leader"
                }
            } else if sync_mode
                && c.sync.as_ref().is_some_and(|s| {
                    s.sync_standby
                        .iter()
                        .any(|x| x.to_lowercase() == m.name.to_lowercase())
                })
            {
                sync_role
            } else {
                "replica"
            };
            let d = &m.data;
            let replication_state = if role != "leader" {
                d.replication_state.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let state = if replication_state.is_empty() {
                d.state.clone().unwrap_or_default()
            } else {
                replication_state
            };
            let (host, port) = host_port(m);
            let positions = (!is_leader).then(|| {
                [d.receive_lsn, d.replay_lsn, d.xlog_location].map(|lsn| match lsn {
                    None | Some(0) => ("unknown".to_string(), None),
                    Some(lsn) => (format_lsn(lsn), Some(cluster_lsn.saturating_sub(lsn))),
                })
            });
            MemberInfo {
                name: m.name.clone(),
                role: role.to_string(),
                state,
                host,
                port,
                timeline: d.timeline,
                pending_restart: d.pending_restart,
                pending_restart_reason: d.extra.get("pending_restart_reason").cloned(),
                scheduled_restart: d.extra.get("scheduled_restart").cloned(),
                tags: (!d.tags.is_empty()).then(|| d.tags.clone()),
                positions,
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));

    let scheduled_switchover = c.failover.as_ref().and_then(|f| {
        let at = f.scheduled_at.as_deref().filter(|s| !s.is_empty())?;
        Some((py_isoformat(at), f.leader.clone(), f.member.clone()))
    });
    ClusterInfo {
        members,
        pause: config_get(c, "pause").is_some_and(py_parse_bool),
        scheduled_switchover,
    }
}

/// `datetime.isoformat()` of what `dateutil.parser.parse` reads from an ISO 8601 string.
/// Anything that is not recognisably ISO 8601 is returned unchanged.
fn py_isoformat(s: &str) -> String {
    fn parse(s: &str) -> Option<String> {
        let b = s.trim().as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let p = b.get(r)?;
            if p.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(p).ok()?.parse().ok()
            } else {
                None
            }
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || mo == 0
            || mo > 12
            || d == 0
            || d > 31
        {
            return None;
        }
        let mut i = 10;
        let (mut hh, mut mm, mut ss, mut us) = (0, 0, 0, None::<u32>);
        if i < b.len() && matches!(b[i], b'T' | b't' | b' ') {
            hh = num(i + 1..i + 3)?;
            if b.get(i + 3) != Some(&b':') {
                return None;
            }
            mm = num(i + 4..i + 6)?;
            i += 6;
            if b.get(i) == Some(&b':') {
                ss = num(i + 1..i + 3)?;
                i += 3;
                if matches!(b.get(i), Some(b'.') | Some(b',')) {
                    let start = i + 1;
                    i = start;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i == start {
                        return None;
                    }
                    let mut frac: String = std::str::from_utf8(&b[start..i])
                        .ok()?
                        .chars()
                        .take(6)
                        .collect();
                    while frac.len() < 6 {
                        frac.push('0');
                    }
                    us = Some(frac.parse().ok()?);
                }
            }
        }
        if hh > 23 || mm > 59 || ss > 59 {
            return None;
        }
        let tz = match &b[i..] {
            [] => String::new(),
            [b'Z'] | [b'z'] => "+00:00".into(),
            [sign @ (b'+' | b'-'), rest @ ..] => {
                let digits: Vec<u8> = rest.iter().copied().filter(|c| *c != b':').collect();
                if !digits.iter().all(u8::is_ascii_digit) || !matches!(digits.len(), 2 | 4) {
                    return None;
                }
                let oh = &digits[..2];
                let om: &[u8] = if digits.len() == 4 {
                    &digits[2..]
                } else {
                    b"00"
                };
                format!(
                    "{}{}:{}",
                    *sign as char,
                    std::str::from_utf8(oh).ok()?,
                    std::str::from_utf8(om).ok()?
                )
            }
            _ => return None,
        };
        let frac = us
            .filter(|u| *u != 0)
            .map(|u| format!(".{u:06}"))
            .unwrap_or_default();
        Some(format!(
            "{y:04}-{mo:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}{tz}"
        ))
    }
    parse(s).unwrap_or_else(|| s.to_string())
}

/// `topology_sort` + `generate_topology` (patroni/ctl.py): members as a replication tree,
/// names prefixed with `+ ` (two more leading spaces per level below the first).
fn topology_sort(members: Vec<MemberInfo>) -> Vec<MemberInfo> {
    let leader = members.iter().find(|m| m.role.ends_with("leader")).cloned();
    let replicas: Vec<String> = members
        .iter()
        .filter(|m| !m.role.ends_with("leader"))
        .map(|m| m.name.clone())
        .collect();
    let mut children: Vec<(Option<String>, Vec<MemberInfo>)> = Vec::new();
    let leader_name = leader.as_ref().map(|l| l.name.clone());
    for m in members.iter().filter(|m| !m.role.ends_with("leader")) {
        let parent = m
            .tags
            .as_ref()
            .and_then(|t| t.get("replicatefrom"))
            .filter(|p| py_truthy(p))
            .and_then(|p| p.as_str())
            .filter(|p| *p != m.name && replicas.iter().any(|r| r == p))
            .map(str::to_string)
            .or_else(|| leader_name.clone());
        match children.iter_mut().find(|(p, _)| *p == parent) {
            Some((_, v)) => v.push(m.clone()),
            None => children.push((parent, vec![m.clone()])),
        }
    }
    fn walk(
        level: usize,
        key: Option<String>,
        member: Option<MemberInfo>,
        children: &[(Option<String>, Vec<MemberInfo>)],
        out: &mut Vec<MemberInfo>,
    ) {
        if let Some(mut m) = member {
            if level > 0 {
                m.name = format!("{}+ {}", " ".repeat((level - 1) * 2), m.name);
            }
            if !m.name.is_empty() {
                out.push(m);
            }
        }
        if let Some((_, kids)) = children.iter().find(|(p, _)| *p == key) {
            for k in kids {
                walk(
                    level + 1,
                    Some(k.name.clone()),
                    Some(k.clone()),
                    children,
                    out,
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(0, leader_name, leader, &children, &mut out);
    out
}

/// Title-cases like Python's `str.title()` (after `_` → space).
fn role_title(role: &str) -> String {
    let mut out = String::new();
    let mut prev_letter = false;
    for c in role.replace('_', " ").chars() {
        if c.is_alphabetic() {
            if prev_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = false;
        }
    }
    out
}

/// Columns + rows exactly as `output_members` builds them before `print_output`.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    title: String,
    info: ClusterInfo,
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn build(cluster_name: &str, c: &Cluster, extended: bool, format: Format) -> Table {
    let info = cluster_info(c);
    let initialize = match c.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(x) => x,
    };
    let mut columns: Vec<String> = [
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Receive LSN",
        "Receive Lag",
        "Replay LSN",
        "Replay Lag",
    ]
    .map(String::from)
    .to_vec();
    let all: Vec<&MemberInfo> = info.members.iter().filter(|m| m.host.is_some()).collect();
    let present = [
        all.iter().any(|m| m.pending_restart),
        all.iter()
            .any(|m| m.pending_restart_reason.as_ref().is_some_and(py_truthy)),
        all.iter()
            .any(|m| m.scheduled_restart.as_ref().is_some_and(py_truthy)),
        all.iter().any(|m| m.tags.is_some()),
    ];
    let optional = [
        "Pending restart",
        "Pending restart reason",
        "Scheduled restart",
        "Tags",
    ];
    for (name, p) in optional.iter().zip(present) {
        if extended || p {
            columns.push(name.to_string());
        }
    }
    let append_port = all.iter().any(|m| m.port.is_some_and(|p| p != 5432)) || {
        let mut hosts: Vec<&str> = all.iter().filter_map(|m| m.host.as_deref()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.len() < all.len()
    };
    let hide_long = format.is_table();

    let members = if format == Format::Topology {
        topology_sort(info.members.clone())
    } else {
        info.members.clone()
    };
    let rows = members
        .iter()
        .map(|m| {
            let reason = match &m.pending_restart_reason {
                Some(Value::Object(r)) => r
                    .iter()
                    .map(|(k, v)| {
                        let get = |f: &str| v.get(f).map(py_str).unwrap_or_default();
                        let full = format!("{k}: {}->{}", get("old_value"), get("new_value"));
                        if hide_long && full.chars().count() > 50 {
                            format!("{k}: [hidden - too long]")
                        } else {
                            full
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            let (mut recv, mut replay) = (
                (s(""), s("")), // (lsn, lag)
                (s(""), s("")),
            );
            if let Some([r, p, x]) = &m.positions {
                let cell = |(lsn, lag): &(String, Option<u64>)| {
                    (
                        s(lsn.clone()),
                        match lag {
                            Some(l) => {
                                Value::from((*l as f64 / 1024.0 / 1024.0).round_ties_even() as i64)
                            }
                            None => s(""),
                        },
                    )
                };
                recv = cell(r);
                replay = cell(p);
                // old lsn/lag implementation compatibility
                if r.0 == "unknown" && p.0 == "unknown" && x.0 != "unknown" {
                    if m.state == "streaming" {
                        recv = cell(x);
                    } else {
                        replay = cell(x);
                    }
                }
            }
            let mut host = m.host.clone().unwrap_or_default();
            if append_port && !host.is_empty() {
                if let Some(p) = m.port {
                    host = format!("{host}:{p}");
                }
            }
            let scheduled = match &m.scheduled_restart {
                None => s(""),
                Some(sr) => {
                    let mut v = sr.get("schedule").map(py_str).unwrap_or_default();
                    if let Some(pv) = sr.get("postgres_version") {
                        v.push_str(&format!(" if version < {}", py_str(pv)));
                    }
                    s(v)
                }
            };
            columns
                .iter()
                .map(|col| match col.as_str() {
                    "Cluster" => s(cluster_name),
                    "Member" => s(m.name.clone()),
                    "Host" => s(host.clone()),
                    "Role" => s(role_title(&m.role)),
                    "State" => s(m.state.clone()),
                    "TL" => m.timeline.map(Value::from).unwrap_or_else(|| s("")),
                    "Receive LSN" => recv.0.clone(),
                    "Receive Lag" => recv.1.clone(),
                    "Replay LSN" => replay.0.clone(),
                    "Replay Lag" => replay.1.clone(),
                    "Pending restart" => s(if m.pending_restart { "*" } else { "" }),
                    "Pending restart reason" => s(reason.clone()),
                    "Scheduled restart" => scheduled.clone(),
                    "Tags" => m.tags.clone().map(Value::Object).unwrap_or_else(|| s("")),
                    _ => s(""),
                })
                .collect()
        })
        .collect();
    Table {
        columns,
        rows,
        title: format!(" Cluster: {cluster_name} ({initialize}) "),
        info,
    }
}

/// Rows of `list` for one cluster (spec ctl.md §2.1), each an ordered list of
/// (column name, cell value). Values are strings, numbers (`TL`, lags) or an object
/// (`Tags`); empty cells are `""`. Column names are the machine ones (`Cluster` first,
/// `Receive Lag`/`Replay Lag`); pending-restart reasons are not shortened.
pub fn list_rows(cluster_name: &str, c: &Cluster, extended: bool) -> Vec<Vec<(String, Value)>> {
    let t = build(cluster_name, c, extended, Format::Json);
    t.rows
        .into_iter()
        .map(|r| t.columns.iter().cloned().zip(r).collect())
        .collect()
}

/// The full text patronictl prints for `list` (or `topology`) of one cluster in the
/// given format, including the trailing newline(s).
pub fn render_list(cluster_name: &str, c: &Cluster, opts: &ListOptions) -> String {
    let mut t = build(cluster_name, c, opts.extended, opts.format);
    match opts.format {
        Format::Json | Format::Yaml => {
            let elements: Vec<Value> = t
                .rows
                .into_iter()
                .map(|r| {
                    Value::Object(
                        t.columns
                            .iter()
                            .cloned()
                            .zip(r)
                            .filter(|(_, v)| !py_str(v).is_empty())
                            .collect(),
                    )
                })
                .collect();
            let v = Value::Array(elements);
            if opts.format == Format::Json {
                json_dumps(&v) + "\n"
            } else {
                yaml_dump(&v, false) + "\n"
            }
        }
        Format::Tsv | Format::Pretty | Format::Topology => {
            if let Some(i) = t.columns.iter().position(|c| c == "Tags") {
                for row in &mut t.rows {
                    if py_truthy(&row[i]) {
                        let flow = opts.format != Format::Pretty;
                        row[i] = s(yaml_dump(&row[i], flow).trim().to_string());
                    }
                }
            }
            if opts.format == Format::Tsv {
                let mut out = String::new();
                out.push_str(&t.columns.join("\t"));
                out.push('\n');
                for r in &t.rows {
                    out.push_str(&r.iter().map(py_str).collect::<Vec<_>>().join("\t"));
                    out.push('\n');
                }
                return out;
            }
            let mut columns: Vec<String> = t.columns[1..].to_vec();
            for c in columns.iter_mut() {
                if c == "Receive Lag" || c == "Replay Lag" {
                    *c = "Lag".into();
                }
            }
            let rows: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|r| r[1..].iter().map(py_str).collect())
                .collect();
            let right: Vec<bool> = columns
                .iter()
                .map(|c| {
                    matches!(
                        c.as_str(),
                        "Group" | "Receive LSN" | "Replay LSN" | "Lag" | "TL"
                    )
                })
                .collect();
            let hrule_all = t.rows.iter().any(|r| {
                r[1..]
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains('\n')))
            });
            let mut out = pretty_table(&t.title, &columns, &right, &rows, hrule_all);
            out.push('\n');
            let mut service = Vec::new();
            if t.info.pause {
                service.push("Maintenance mode: on".to_string());
            }
            if let Some((at, from, to)) = &t.info.scheduled_switchover {
                let mut line = format!("Switchover scheduled at: {at}");
                for (label, v) in [("from", from), ("to", to)] {
                    if let Some(v) = v {
                        line.push_str(&format!("\n{label:>24}: {v}"));
                    }
                }
                service.push(line);
            }
            if !service.is_empty() {
                out.push(' ');
                out.push_str(&service.join("\n "));
                out.push('\n');
            }
            out
        }
    }
}

/// Display width of a string as prettytable computes it (wcwidth: East Asian wide
/// characters count 2, combining marks 0). An approximation of `wcwidth` for common ranges.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let u = c as u32;
            if matches!(u, 0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F) {
                0
            } else if matches!(u,
                0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
                | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
                | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F
                | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD)
            {
                2
            } else {
                1
            }
        })
        .sum()
}

fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(display_width(text)));
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

/// A prettytable 3.x table (default style, 1-space padding) whose top border is
/// overwritten from its 2nd character by `title` (`PatronictlPrettyTable`). No trailing newline.
pub fn pretty_table(
    title: &str,
    columns: &[String],
    right: &[bool],
    rows: &[Vec<String>],
    hrule_all: bool,
) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| display_width(c)).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            for line in cell.split('\n') {
                widths[i] = widths[i].max(display_width(line));
            }
        }
    }
    let hrule = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line_of = |cells: &[String]| -> String {
        let height = cells
            .iter()
            .map(|c| c.split('\n').count())
            .max()
            .unwrap_or(1);
        (0..height)
            .map(|l| {
                let mut out = String::from("|");
                for (i, cell) in cells.iter().enumerate() {
                    let text = cell.split('\n').nth(l).unwrap_or("");
                    out.push(' ');
                    out.push_str(&pad(text, widths[i], right[i]));
                    out.push_str(" |");
                }
                out
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let top: Vec<char> = hrule.chars().collect();
    let header: Vec<char> = title.chars().take(top.len().saturating_sub(2)).collect();
    let mut top_line: String = top[..1].iter().collect();
    top_line.extend(header.iter());
    top_line.extend(top[(1 + header.len()).min(top.len())..].iter());

    let mut lines = vec![top_line, line_of(columns), hrule.clone()];
    for (i, r) in rows.iter().enumerate() {
        lines.push(line_of(r));
        if hrule_all && i + 1 < rows.len() {
            lines.push(hrule.clone());
        }
    }
    lines.push(hrule);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat() {
        for (i, o) in [
            ("2023-09-13T18:00:00-03:00", "2023-09-13T18:00:00-03:00"),
            (
                "2016-01-14T10:09:57.1394Z",
                "2016-01-14T10:09:57.139400+00:00",
            ),
            ("2023-09-13T18:00+0200", "2023-09-13T18:00:00+02:00"),
            ("2023-09-13", "2023-09-13T00:00:00"),
            ("garbage", "garbage"),
        ] {
            assert_eq!(py_isoformat(i), o);
        }
    }

    #[test]
    fn titles() {
        assert_eq!(role_title("standby_leader"), "Standby Leader");
        assert_eq!(role_title("sync_standby"), "Sync Standby");
    }
}
