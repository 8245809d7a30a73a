//! A real Warden cluster for end-to-end tests: one etcd, N `warden` agents (the built
//! binary) each with its own PostgreSQL, all on loopback, run as the PostgreSQL user.
//!
//! Every process is stopped by PID when the [`TestCluster`] is dropped — agents first,
//! then every postmaster found under the temp dir — and the agents' logs are printed
//! if the test is failing.

use crate::etcd::Etcd;
use crate::proxy::{Cut, TcpProxy};
use crate::{
    free_port, kill_postmaster, stop_all_postgres_under, target_bin_dir, ProcessGuard, TestDir,
};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Superuser password used by test clusters.
pub const SUPERUSER_PASSWORD: &str = "zalando";
/// Replication password used by test clusters.
pub const REPLICATION_PASSWORD: &str = "rep-pass";

/// One node of a test cluster.
pub struct TestNode {
    /// member name
    pub name: String,
    /// PostgreSQL port
    pub pg_port: u16,
    /// REST API port
    pub api_port: u16,
    /// node directory (config, log, pgpass, socket)
    pub dir: PathBuf,
    /// PGDATA
    pub data_dir: PathBuf,
    /// the config file
    pub config: PathBuf,
    /// agent log file
    pub log: PathBuf,
    /// the running agent, if started
    pub agent: Option<ProcessGuard>,
    /// extra environment for the agent
    pub env: Vec<(String, String)>,
}

/// Per-node tweaks for [`TestCluster::start`].
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// extra YAML appended under `tags:` (e.g. `nofailover: true`)
    pub tags: Vec<String>,
    /// extra YAML lines appended under `postgresql:` (indented by the harness)
    pub postgresql: Vec<String>,
    /// environment variables for the agent
    pub env: Vec<(String, String)>,
    /// YAML documents deep-merged, in order, into the generated config (mappings merged
    /// key by key, anything else replaced), e.g. `"restapi: {certfile: /x.pem}"`
    pub yaml: Vec<String>,
}

/// The proxies that carry one node's traffic in a cluster made by
/// [`TestCluster::new_linked`], so that a test can partition that node.
pub struct NodeLinks {
    /// between the agent and etcd: the agent's only etcd endpoint
    pub etcd: TcpProxy,
    /// in front of the agent's REST API: its `restapi.connect_address`, so the member's
    /// `api_url` (the peers' probes, a primary's `POST /failsafe`) goes through it; the
    /// test's own requests use the real port
    pub api: TcpProxy,
}

/// etcd + N agents.
pub struct TestCluster {
    /// the scope (cluster name)
    pub scope: String,
    /// etcd
    pub etcd: Etcd,
    /// nodes by index
    pub nodes: Vec<TestNode>,
    /// temp dir holding everything (kept alive until drop)
    pub dir: TestDir,
    /// [`TestCluster::dsn`] connects through the node's unix socket (trust in the
    /// generated pg_hba) instead of TCP with the superuser password: for clusters whose
    /// pg_hba only admits TLS with client certificates on TCP
    pub dsn_via_socket: bool,
    /// per node, the proxies of [`TestCluster::new_linked`] (empty otherwise); declared
    /// last so they outlive the agents, which are stopped first on drop
    pub links: Vec<NodeLinks>,
}

impl TestCluster {
    /// Writes configs for `n` nodes (not started). `options[i]` tweaks node i.
    pub fn new(scope: &str, n: usize, options: &[NodeOptions]) -> TestCluster {
        Self::build(scope, n, options, false)
    }

    /// Like [`TestCluster::new`], but each agent reaches etcd through a proxy of its own
    /// and announces its REST API behind a proxy ([`NodeLinks`]), so that one node can be
    /// cut off from etcd and from its peers while the others still reach both.
    /// PostgreSQL (replication, the test's SQL) is not proxied.
    pub fn new_linked(scope: &str, n: usize, options: &[NodeOptions]) -> TestCluster {
        Self::build(scope, n, options, true)
    }

    fn build(scope: &str, n: usize, options: &[NodeOptions], linked: bool) -> TestCluster {
        let etcd = Etcd::start();
        let dir = TestDir::new("warden-cluster-");
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        for i in 0..n {
            let name = format!("pg{i}");
            let node_dir = dir.subdir(&name, false);
            let data_dir = node_dir.join("data");
            let pg_port = free_port();
            let api_port = free_port();
            let (etcd_hosts, api_connect) = if linked {
                let l = NodeLinks {
                    etcd: TcpProxy::start(etcd.client_port),
                    api: TcpProxy::start(api_port),
                };
                let ports = (l.etcd.host_port(), l.api.port());
                links.push(l);
                ports
            } else {
                (etcd.host_port(), api_port)
            };
            let opts = options.get(i).cloned().unwrap_or_default();
            let mut yaml = node_config(
                scope,
                &name,
                &etcd_hosts,
                &node_dir,
                &data_dir,
                pg_port,
                (api_port, api_connect),
                &opts,
            );
            if !opts.yaml.is_empty() {
                yaml = merge_yaml(&yaml, &opts.yaml);
            }
            let config = node_dir.join("warden.yml");
            std::fs::write(&config, yaml).expect("write config");
            dir.run_as.chown(&config);
            nodes.push(TestNode {
                name,
                pg_port,
                api_port,
                log: node_dir.join("warden.log"),
                dir: node_dir,
                data_dir,
                config,
                agent: None,
                env: opts.env.clone(),
            });
        }
        TestCluster {
            scope: scope.to_string(),
            etcd,
            nodes,
            dir,
            dsn_via_socket: false,
            links,
        }
    }

    fn links(&self, i: usize) -> &NodeLinks {
        self.links
            .get(i)
            .expect("node links exist only in a cluster made by TestCluster::new_linked")
    }

    /// Cuts node i's agent off from etcd (the other agents still reach it).
    pub fn cut_etcd(&self, i: usize, how: Cut) {
        self.links(i).etcd.cut(how);
    }

    /// Lets node i's agent reach etcd again.
    pub fn restore_etcd(&self, i: usize) {
        self.links(i).etcd.restore();
    }

    /// Cuts the REST traffic between node i's agent and every other agent, both ways
    /// (node i's calls to them, their calls to node i); the others still reach each
    /// other. Covers the agent processes running now.
    pub fn cut_api(&self, i: usize, how: Cut) {
        let pid = |k: usize| self.nodes[k].agent.as_ref().map(|a| a.pid());
        let others: Vec<u32> = (0..self.nodes.len())
            .filter(|k| *k != i)
            .filter_map(pid)
            .collect();
        self.links(i).api.cut_from(how, &others);
        if let Some(me) = pid(i) {
            for k in (0..self.nodes.len()).filter(|k| *k != i) {
                self.links(k).api.cut_from(how, &[me]);
            }
        }
    }

    /// Lets every agent reach every REST API again.
    pub fn restore_api(&self) {
        for l in &self.links {
            l.api.restore();
        }
    }

    /// Path of a workspace binary (`warden`, `wardenctl`).
    pub fn bin(name: &str) -> PathBuf {
        let p = target_bin_dir().join(name);
        assert!(
            p.exists(),
            "{} not built: run `cargo build --workspace` before the tests",
            p.display()
        );
        p
    }

    /// Starts node `i`'s agent (as the PostgreSQL user), appending to its log.
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(Self::bin("warden"));
        cmd.arg(&node.config).current_dir(&node.dir);
        cmd.env("HOME", &node.dir);
        for (k, v) in &node.env {
            cmd.env(k, v);
        }
        self.dir.run_as.apply(&mut cmd);
        node.agent = Some(ProcessGuard::spawn(&node.name, cmd, &node.log));
    }

    /// Starts node i under the real Patroni agent `patroni` with the same config file
    /// (mixed-cluster tests); `agent` then holds Patroni's process, so [`Self::stop_node`]
    /// and [`Self::kill_node`] work alike.
    pub fn start_patroni_node(&mut self, i: usize, patroni: &std::path::Path) {
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(patroni);
        cmd.arg(&node.config).current_dir(&node.dir);
        cmd.env("HOME", &node.dir);
        self.dir.run_as.apply(&mut cmd);
        node.agent = Some(ProcessGuard::spawn(&node.name, cmd, &node.log));
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
    }

    /// SIGKILL node i's agent and its PostgreSQL (whole postmaster process group).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            a.kill();
        }
        kill_postmaster(&self.nodes[i].data_dir, nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGTERM node i's agent and wait (bounded) for it to exit; returns its exit status.
    pub fn stop_node(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut a = self.nodes[i].agent.take()?;
        a.signal(nix::sys::signal::Signal::SIGTERM);
        let st = a.wait_exit(timeout);
        a.kill();
        st
    }

    /// Reads a key under the cluster prefix from etcd with `etcdctl` (None if absent).
    pub fn etcd_get(&self, key: &str) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.etcd.url(),
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "get",
                "--print-value-only",
                &format!("/service/{}/{key}", self.scope),
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let s = s.strip_suffix('\n').unwrap_or(&s).to_string();
        if s.is_empty() {
            // etcdctl prints nothing for a missing key; an empty value is "" too. (3.4's
            // etcdctl has no --count-only: the fields output says `"Count" : 0`.)
            let exists = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.etcd.url(),
                    "--dial-timeout=2s",
                    "--command-timeout=3s",
                    "get",
                    "--write-out=fields",
                    &format!("/service/{}/{key}", self.scope),
                ])
                .output()
                .ok()?;
            if !exists.status.success() {
                return None;
            }
            let text = String::from_utf8_lossy(&exists.stdout);
            if text.lines().any(|l| l.trim() == "\"Count\" : 0") {
                return None;
            }
        }
        Some(s)
    }

    /// Writes a raw value under the cluster prefix (for corrupting member data).
    pub fn etcd_put(&self, key: &str, value: &str) {
        let st = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.etcd.url(),
                "put",
                &format!("/service/{}/{key}", self.scope),
                value,
            ])
            .output()
            .expect("etcdctl put");
        assert!(st.status.success(), "etcdctl put failed: {st:?}");
    }

    /// Name of the current leader-lock holder.
    pub fn leader(&self) -> Option<String> {
        self.etcd_get("leader").filter(|s| !s.is_empty())
    }

    /// Index of the node with this name.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// libpq connection string for node i as the superuser (through the unix socket
    /// when [`TestCluster::dsn_via_socket`] is set).
    pub fn dsn(&self, i: usize) -> String {
        if self.dsn_via_socket {
            return format!(
                "host={} port={} user=postgres dbname=postgres connect_timeout=2",
                self.nodes[i].dir.display(),
                self.nodes[i].pg_port
            );
        }
        format!(
            "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2",
            self.nodes[i].pg_port
        )
    }

    /// The tail of every agent's log (for failure messages).
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("----- {} ({}) -----\n", n.name, n.log.display()));
            out.push_str(&tail_collapsed(&n.log, lines));
        }
        out
    }

    /// What a failing test prints: each agent's log tail with repeated messages collapsed
    /// (so the decisions before a long steady state stay visible), then each node's
    /// PostgreSQL log tail (`<data_dir>.postmaster.log`).
    pub fn failure_report(&self) -> String {
        let mut out = self.logs_tail(60);
        for n in &self.nodes {
            let mut p = n.data_dir.as_os_str().to_owned();
            p.push(".postmaster.log");
            let p = PathBuf::from(p);
            out.push_str(&format!(
                "----- {} postgres ({}) -----\n",
                n.name,
                p.display()
            ));
            out.push_str(&tail_collapsed(&p, 25));
        }
        out
    }
}

/// The last `lines` lines of a log, where a run of lines that differ only in their
/// leading timestamp counts once (`… repeated N times`).
fn tail_collapsed(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Agent lines start with "YYYY-MM-DD HH:MM:SS,mmm "; PostgreSQL's with a timestamp too.
    let body = |l: &str| -> String {
        let mut it = l.splitn(3, ' ');
        let (a, b, rest) = (it.next(), it.next(), it.next());
        match (a, b, rest) {
            (Some(d), Some(_), Some(rest)) if d.len() == 10 && d.as_bytes()[4] == b'-' => {
                rest.to_string()
            }
            _ => l.to_string(),
        }
    };
    let mut runs: Vec<(String, usize)> = Vec::new();
    for l in text.lines() {
        match runs.last_mut() {
            Some((last, n)) if body(last) == body(l) => {
                *n += 1;
                *last = l.to_string();
            }
            _ => runs.push((l.to_string(), 1)),
        }
    }
    let from = runs.len().saturating_sub(lines);
    let mut out = String::new();
    for (l, n) in &runs[from..] {
        out.push_str(l);
        if *n > 1 {
            out.push_str(&format!("   … repeated {n} times"));
        }
        out.push('\n');
    }
    out
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.failure_report());
        }
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                a.kill();
            }
            // The agent's external fence guard runs in a process group of its own.
            let pid_file = format!("{}.fence.pid", n.data_dir.display());
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        stop_all_postgres_under(self.dir.path());
    }
}

/// `base` with each YAML document of `docs` deep-merged into it (see [`NodeOptions::yaml`]).
pub fn merge_yaml(base: &str, docs: &[String]) -> String {
    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let parse = |text: &str| -> serde_json::Value {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("bad test YAML {text:?}: {e}"))
    };
    let mut doc = parse(base);
    for d in docs {
        merge(&mut doc, parse(d));
    }
    serde_saphyr::to_string(&doc).expect("serialize test config")
}

#[allow(clippy::too_many_arguments)]
fn node_config(
    scope: &str,
    name: &str,
    etcd_hosts: &str,
    node_dir: &std::path::Path,
    data_dir: &std::path::Path,
    pg_port: u16,
    (api_port, api_connect): (u16, u16),
    opts: &NodeOptions,
) -> String {
    let bin = crate::pg_bin_dir();
    let mut pg_extra = String::new();
    for l in &opts.postgresql {
        pg_extra.push_str(&format!("  {l}\n"));
    }
    let mut tag_lines = String::new();
    for t in &opts.tags {
        tag_lines.push_str(&format!("  {t}\n"));
    }
    if tag_lines.is_empty() {
        tag_lines.push_str("  nofailover: false\n");
    }
    format!(
        r#"scope: {scope}
namespace: /service/
name: {name}

restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_connect}

etcd3:
  hosts: {etcd_hosts}

bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        fsync: off
        synchronous_commit: local
        full_page_writes: on
        wal_writer_delay: 10ms
        shared_buffers: 16MB
        max_connections: 30
  initdb:
  - encoding: UTF8
  - data-checksums
  - no-sync
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 scram-sha-256
  - host replication replicator 127.0.0.1/32 scram-sha-256

postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data_dir}
  bin_dir: {bin}
  pgpass: {node_dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: {SUPERUSER_PASSWORD}
    replication:
      username: replicator
      password: {REPLICATION_PASSWORD}
    rewind:
      username: rewind_user
      password: rewind-pass
  parameters:
    unix_socket_directories: '{node_dir}'
  basebackup:
  - checkpoint: fast
{pg_extra}
tags:
{tag_lines}"#,
        data_dir = data_dir.display(),
        node_dir = node_dir.display(),
        bin = bin.display(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn merges_yaml_documents() {
        let merged = super::merge_yaml(
            "a: 1\nb:\n  c: x\n  d: [1, 2]\ng: 'on'\n",
            &["b: {d: [3], e: on}".to_string(), "f: z".to_string()],
        );
        let v: serde_json::Value = serde_saphyr::from_str(&merged).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": {"c": "x", "d": [3], "e": true}, "g": "on", "f": "z"})
        );
    }

    #[test]
    fn collapses_repeated_messages() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(
            &p,
            "2026-11-22 22:10:01,000 INFO: starting\n\
             2026-11-22 22:10:02,000 INFO: no action\n\
             2026-11-22 22:10:04,000 INFO: no action\n\
             2026-11-22 22:10:06,000 INFO: no action\n\
             plain line\n",
        )
        .unwrap();
        let t = super::tail_collapsed(&p, 2);
        assert_eq!(
            t,
            "2026-11-22 22:10:06,000 INFO: no action   … repeated 3 times\nplain line\n"
        );
    }
}
