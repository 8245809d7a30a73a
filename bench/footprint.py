#!/usr/bin/env python3
"""Idle footprint benchmark: what a 3-node Warden cluster and a 3-node Patroni cluster cost
per node while nothing happens, side by side on the same machine in one run.

Starts on 127.0.0.1, in a temp dir, one etcd per cluster (so every request an etcd sees
belongs to one cluster), a 3-node Warden cluster and a 3-node Patroni cluster with the same
YAML (bench/switchover.py's, ttl/loop_wait/retry_timeout 30/10/10 unless a knob says
otherwise), waits until both have a running leader and two streaming replicas, lets them
settle, then watches both over the same idle window and reports per node:

* CPU seconds per minute of the agent's processes (Warden: the agent and its fence guard;
  Patroni: its process), from /proc/<pid>/stat utime+stime deltas, plus cutime+cstime
  (the commands they ran and reaped, e.g. pg_controldata);
* CPU of the PostgreSQL backends the agent keeps busy: the live client backends
  (pg_stat_activity, all but this script's own connection), plus the CPU of backends that
  exited during the window (the postmaster's cutime+cstime delta: with autovacuum off, the
  only children that come and go are client connections, e.g. one per HA cycle);
  and PostgreSQL's whole CPU (postmaster, every child, exited children) for context;
* VmRSS, RssAnon and PSS (smaps_rollup) of every agent process at the end of the window;
* statements per minute the agent sends to PostgreSQL and connections per minute it
  opens, counted in PostgreSQL's own log: both clusters run with `log_statement = all`
  and `log_connections = on` into a log file per node (logging_collector), and the
  script counts the `statement:` / `execute` and `connection authorized` lines written
  during the window, except those of its own connection. Not pg_stat_statements: Warden
  sets `pg_stat_statements.track=none` on its monitoring connections (so they do not
  fill users' statistics) and would be undercounted. Not pg_stat_database.xact_commit:
  a backend whose transactions touch no table (Patroni's status query calls only
  functions) does not flush those counters while it stays connected;
* gRPC messages per minute received by the cluster's etcd (etcd's /metrics
  `grpc_server_msg_received_total` delta: one per unary call, one per message on a watch
  or lease keep-alive stream; Patroni's HTTP/JSON calls pass etcd's gRPC gateway and count
  the same way), divided by 3 for the per-node figure.

Then the means per node, Warden vs Patroni, and the ratios. Nothing touches the clusters
during the window (no REST or CLI calls): only /proc, one SQL query per node per sample
and etcd's /metrics.

Usage (as root or as a user that can run PostgreSQL):
    bench/footprint.py
Knobs (environment): BENCH_MINUTES (idle window, default 3), BENCH_SETTLE (seconds between
healthy and the window, default 30), BENCH_SAMPLE (seconds between samples, default 5),
BENCH_TTL / BENCH_LOOP_WAIT / BENCH_RETRY_TIMEOUT (30 / 10 / 10), BENCH_SKIP_PATRONI=1,
BENCH_WARDEN_BIN (a given agent binary), BENCH_AUTOVACUUM=on, BENCH_PG_PARAMS (extra
PostgreSQL parameters for both clusters, e.g. `log_connections=on,log_min_messages=info`),
BENCH_HOLD=1 (keep the clusters up after the report until Ctrl-C, for strace/perf), PATRONI_BIN.
Every process is stopped by PID at exit (also on Ctrl-C).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import switchover as sw  # noqa: E402  (same directory: cluster setup, etcd, cleanup)

MINUTES = float(os.environ.get("BENCH_MINUTES", "3"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "30"))
SAMPLE = float(os.environ.get("BENCH_SAMPLE", "5"))
TTL = int(os.environ.get("BENCH_TTL", "30"))
LOOP_WAIT = int(os.environ.get("BENCH_LOOP_WAIT", "10"))
RETRY_TIMEOUT = int(os.environ.get("BENCH_RETRY_TIMEOUT", "10"))
SKIP_PATRONI = os.environ.get("BENCH_SKIP_PATRONI") == "1"
WARDEN_BIN = os.environ.get("BENCH_WARDEN_BIN") or os.path.join(sw.ROOT, "target/release/warden")
AUTOVACUUM = os.environ.get("BENCH_AUTOVACUUM", "off")
PG_PARAMS = os.environ.get("BENCH_PG_PARAMS", "")
HOLD = os.environ.get("BENCH_HOLD") == "1"
TICK = os.sysconf("SC_CLK_TCK")
GUARDS = []  # fence-guard PIDs: their own process group, so stopped one by one at exit
OBSERVER = "footprint-observer"


# ------------------------------------------------------------------ /proc helpers

def stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            s = fh.read()
    except OSError:
        return None
    return s[s.rfind(")") + 2:].split()


def cpu_ticks(pid):
    """utime + stime of a process (all its threads, live and exited), in clock ticks."""
    f = stat_fields(pid)
    return int(f[11]) + int(f[12]) if f else None


def children_ticks(pid):
    """cutime + cstime: CPU of the children the process has waited for."""
    f = stat_fields(pid)
    return int(f[13]) + int(f[14]) if f else None


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def status_kib(pid, keys=("VmRSS", "RssAnon", "RssFile", "Threads")):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def agent_pids(session):
    """The agent's processes: everything in its session that is not PostgreSQL (the agent,
    Warden's fence guard; Patroni and any helper it runs)."""
    out = []
    for pid in all_pids():
        f = stat_fields(pid)
        if f and int(f[3]) == session and exe_name(pid) not in ("postgres", ""):
            out.append(pid)
    return out


def pg_children(postmaster):
    out = []
    for pid in all_pids():
        f = stat_fields(pid)
        if f and int(f[1]) == postmaster:
            out.append(pid)
    return out


def postmaster_pid(node):
    try:
        with open(os.path.join(node["dir"], "data", "postmaster.pid")) as fh:
            return int(fh.readline())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ clusters

def make_cluster(kind, tmp, etcd_port):
    cl = sw.Cluster(kind, tmp, etcd_port, TTL, LOOP_WAIT)
    for n in cl.nodes:
        with open(n["cfg"]) as fh:
            text = fh.read()
        text = text.replace(f"    retry_timeout: {max(3, (TTL - LOOP_WAIT) // 2)}\n",
                            f"    retry_timeout: {RETRY_TIMEOUT}\n", 1)
        # autovacuum off (default): its workers would be the other children that come and
        # go, blurring which exited-backend CPU is the agent's. An idle cluster has
        # nothing to vacuum either way.
        text = text.replace("    unix_socket_directories:",
                            f"    autovacuum: '{AUTOVACUUM}'\n    unix_socket_directories:", 1)
        # The statement log the queries per minute are counted in (see the docstring).
        logging = {"logging_collector": "on", "log_directory": os.path.join(n["dir"], "pglog"),
                   "log_filename": "postgresql.log", "log_statement": "all", "log_connections": "on",
                   "log_line_prefix": "%m [%p] "}
        for k, v in logging.items():
            text = text.replace("    unix_socket_directories:", f"    {k}: '{v}'\n    unix_socket_directories:", 1)
        for p in filter(None, (x.strip() for x in PG_PARAMS.split(","))):
            k, _, v = p.partition("=")
            text = text.replace("    unix_socket_directories:", f"    {k.strip()}: '{v.strip()}'\n"
                                "    unix_socket_directories:", 1)
        if kind == "warden" and TTL < 20:
            text += f"warden:\n  min_ttl: {TTL}\n"
        with open(n["cfg"], "w") as fh:
            fh.write(text)
    return cl


def start_cluster(cl):
    """Starts the agents; as root through setpriv, so the recorded PID is the agent's own
    and its session holds exactly the agent's processes and PostgreSQL."""
    binary = WARDEN_BIN if cl.kind == "warden" else sw.patroni_bin()
    for n in cl.nodes:
        cmd = ["env", f"HOME={n['dir']}", binary, n["cfg"]]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + cmd
        cl.procs.append(sw.spawn(cmd, os.path.join(n["dir"], "agent.log"), cwd=n["dir"]))


def connect_observer(node):
    import psycopg2
    conn = psycopg2.connect(host=node["dir"], port=node["pg"], user="postgres", dbname="postgres",
                            application_name=OBSERVER)
    conn.autocommit = True
    return conn


# One statement per sample: the agent's backends.
SAMPLE_SQL = """SELECT coalesce(json_agg(pid), '[]') FROM pg_stat_activity
                WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"""


def log_size(node):
    try:
        return os.path.getsize(os.path.join(node["dir"], "pglog", "postgresql.log"))
    except OSError:
        return 0


def count_log(node, start, end, skip_pid):
    """Statements and connections logged between byte offsets `start` and `end`, except
    those of backend `skip_pid` (this script's)."""
    stmts = conns = 0
    try:
        with open(os.path.join(node["dir"], "pglog", "postgresql.log"), "rb") as fh:
            fh.seek(start)
            data = fh.read(max(0, end - start)).decode(errors="replace")
    except OSError:
        return 0, 0
    skip = f"[{skip_pid}] "
    for line in data.splitlines():
        if skip in line:
            continue
        if "LOG:  statement: " in line or "LOG:  execute " in line:
            stmts += 1
        elif "LOG:  connection authorized: " in line:
            conns += 1
    return stmts, conns


def etcd_msgs(port):
    """grpc_server_msg_received_total per method, from etcd's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_msg_received_total{"):
            labels, value = line.rsplit(" ", 1)
            method = labels.split('grpc_method="', 1)[1].split('"', 1)[0]
            out[method] = out.get(method, 0) + float(value)
    return out


class Watch:
    """Per-node counters over the idle window."""

    def __init__(self, cl, etcd_port):
        self.cl = cl
        self.etcd_port = etcd_port
        self.nodes = []
        for n in cl.nodes:
            conn = connect_observer(n)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                (observer_pid,) = cur.fetchone()
            self.nodes.append({"node": n, "session": cl.procs[cl.nodes.index(n)].pid,
                               "conn": conn, "observer_pid": observer_pid, "agent": {}, "backends": {},
                               "pg": {}, "first": None, "last": None, "samples": 0})
        self.etcd_first = self.etcd_last = None

    def sample(self):
        for w in self.nodes:
            n = w["node"]
            for pid in agent_pids(w["session"]):
                # Its own CPU and that of the commands it ran and reaped (pg_controldata,
                # pg_isready, callbacks): work done for the agent all the same.
                t = cpu_ticks(pid)
                c = children_ticks(pid)
                t = None if t is None or c is None else t + c
                if t is not None:
                    w["agent"].setdefault(pid, [t, t])[1] = t
            pm = postmaster_pid(n)
            with w["conn"].cursor() as cur:
                cur.execute(SAMPLE_SQL)
                (backends,) = cur.fetchone()
            w["samples"] += 1
            for pid in backends:
                t = cpu_ticks(pid)
                if t is not None:
                    w["backends"].setdefault(pid, [t, t])[1] = t
            for pid in [pm] + pg_children(pm):
                t = cpu_ticks(pid)
                if t is not None:
                    w["pg"].setdefault(pid, [t, t])[1] = t
            counters = {"log": log_size(n), "exited": children_ticks(pm) or 0, "t": time.monotonic()}
            if w["first"] is None:
                w["first"] = counters
            w["last"] = counters
        m = etcd_msgs(self.etcd_port)
        if self.etcd_first is None:
            self.etcd_first = m
        self.etcd_last = m

    @staticmethod
    def delta(d, first_pids):
        """CPU ticks over the window: last - first for processes there at the start, the
        whole value for processes that started during the window."""
        return sum(last - (first if pid in first_pids else 0) for pid, (first, last) in d.items())

    def report(self, first_pids):
        rows = []
        for i, w in enumerate(self.nodes):
            minutes = (w["last"]["t"] - w["first"]["t"]) / 60
            fp = first_pids[i]
            agent = {pid: v for pid, v in w["agent"].items()}
            guard_pids = {pid for pid in agent if "--fence-guard" in cmdline(pid)}
            mem = {pid: status_kib(pid) for pid in agent}
            row = {
                "name": w["node"]["name"],
                "agent": self.delta({p: v for p, v in agent.items() if p not in guard_pids}, fp["agent"])
                / TICK / minutes,
                "guard": self.delta({p: v for p, v in agent.items() if p in guard_pids}, fp["agent"])
                / TICK / minutes if guard_pids else None,
                "backends": self.delta(w["backends"], fp["backends"]) / TICK / minutes,
                "exited": (w["last"]["exited"] - w["first"]["exited"]) / TICK / minutes,
                "pg_total": (self.delta(w["pg"], fp["pg"]) + w["last"]["exited"] - w["first"]["exited"])
                / TICK / minutes,
                "rss": sum(m.get("VmRSS", 0) for m in mem.values()) / 1024,
                "anon": sum(m.get("RssAnon", 0) for m in mem.values()) / 1024,
                "pss": sum(m.get("Pss", 0) for m in mem.values()) / 1024,
                "threads": sum(m.get("Threads", 0) for m in mem.values()),
                "procs": len([p for p in agent if mem[p]]),
                "minutes": minutes,
            }
            stmts, conns = count_log(w["node"], w["first"]["log"], w["last"]["log"], w["observer_pid"])
            row["xacts"], row["conns"] = stmts / minutes, conns / minutes
            rows.append(row)
        minutes = rows[0]["minutes"]
        etcd = {k: self.etcd_last.get(k, 0) - self.etcd_first.get(k, 0) for k in self.etcd_last}
        etcd_per_node = sum(etcd.values()) / minutes / len(self.nodes)
        for r in rows:
            r["etcd"] = etcd_per_node
        return rows, {k: v / minutes for k, v in etcd.items() if v}


def first_pids_of(watch):
    return [{"agent": set(w["agent"]), "backends": set(w["backends"]), "pg": set(w["pg"])}
            for w in watch.nodes]


def roles(cl):
    return {x["Member"]: x["Role"].lower() for x in cl.members()}


# ------------------------------------------------------------------ output

COLS = [("agent", "agent", "{:7.3f}"), ("guard", "guard", "{:7.3f}"), ("backends", "backends", "{:8.3f}"),
        ("exited", "exited", "{:7.3f}"), ("pg_total", "PG all", "{:7.3f}"), ("rss", "RSS", "{:6.1f}"),
        ("anon", "anon", "{:5.1f}"), ("pss", "PSS", "{:5.1f}"), ("procs", "proc", "{:4d}"),
        ("threads", "thr", "{:4d}"), ("xacts", "stmt/min", "{:8.1f}"), ("conns", "conn/min", "{:8.1f}"),
        ("etcd", "etcd/min", "{:8.1f}")]


def fmt(col, v):
    if v is None:
        return "-"
    return col[2].format(v)


def print_table(results):
    print()
    print(f"Idle footprint per node over {MINUTES:g} min (3-node clusters, ttl {TTL}, loop_wait {LOOP_WAIT}, "
          f"retry_timeout {RETRY_TIMEOUT}, autovacuum {AUTOVACUUM})")
    print("CPU in CPU-seconds per minute: agent, fence guard, the agent's live PostgreSQL backends, backends that "
          "exited\nin the window, all of PostgreSQL. Memory in MiB, summed over the agent's processes (proc) "
          "with their threads (thr).\nstmt/min: SQL statements the agent ran; conn/min: connections "
          "it opened; etcd/min: gRPC messages\nto the cluster's etcd / 3.")
    head = f"{'':20}" + "".join(f"{h:>{max(len(h), len(f.format(0)))+1}}" for _, h, f in COLS)
    print(head)
    for kind, (rows, _) in results.items():
        for r in rows:
            label = f"{kind} {r['name']} {r['role'][:7]}"
            print(f"{label:20}" + "".join(f"{fmt(c, r[c[0]]):>{max(len(c[1]), len(c[2].format(0)))+1}}"
                                          for c in COLS))
    means = {}
    for kind, (rows, _) in results.items():
        m = {}
        for key, _, _ in COLS:
            vals = [r[key] for r in rows if r[key] is not None]
            m[key] = sum(vals) / len(vals) if vals else None
        m["agent_all"] = m["agent"] + (m["guard"] or 0)
        m["cpu_all"] = m["agent_all"] + m["backends"] + m["exited"]
        means[kind] = m
    print()
    summary = [("agent processes CPU s/min", "agent_all", "{:.3f}"),
               ("+ agent's backends CPU s/min", "cpu_all", "{:.3f}"),
               ("PostgreSQL all CPU s/min", "pg_total", "{:.3f}"),
               ("RSS of agent processes MiB", "rss", "{:.1f}"),
               ("RssAnon MiB", "anon", "{:.1f}"),
               ("PSS MiB", "pss", "{:.1f}"),
               ("statements / min", "xacts", "{:.1f}"),
               ("connections / min", "conns", "{:.1f}"),
               ("etcd messages / min", "etcd", "{:.1f}")]
    kinds = list(means)
    print(f"{'mean per node':30}" + "".join(f"{k:>10}" for k in kinds)
          + (f"{'Patroni/Warden':>16}" if len(kinds) == 2 else ""))
    for label, key, f in summary:
        line = f"{label:30}" + "".join(f"{f.format(means[k][key]):>10}" for k in kinds)
        if len(kinds) == 2:
            w, p = means["warden"][key], means["patroni"][key]
            line += f"{(f'{p / w:.1f}x' if w else 'inf' if p else '-'):>16}"
        print(line)
    print()
    for kind, (_, etcd) in results.items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(etcd.items(), key=lambda x: -x[1]))
        print(f"etcd messages / min, {kind} cluster (all 3 nodes): {parts}")


def main():
    tmp = sw.prepare()
    results = {}
    try:
        kinds = ["warden"] + ([] if SKIP_PATRONI or not sw.patroni_bin() else ["patroni"])
        clusters = {}
        for kind in kinds:
            etcd_port = sw.start_etcd(tmp, f"etcd-{kind}")
            cl = make_cluster(kind, tmp, etcd_port)
            start_cluster(cl)
            clusters[kind] = (cl, etcd_port)
        for kind, (cl, _) in clusters.items():
            cl.wait_healthy()
            for n in cl.nodes:
                if kind == "warden":
                    try:
                        with open(os.path.join(n["dir"], "data.fence.pid")) as fh:
                            GUARDS.append(int(fh.read().strip()))
                    except (OSError, ValueError):
                        pass
        print(f"both clusters healthy; settling {SETTLE:g} s, then {MINUTES:g} min idle", flush=True)
        time.sleep(SETTLE)
        before = {kind: roles(cl) for kind, (cl, _) in clusters.items()}
        watches = {kind: Watch(cl, port) for kind, (cl, port) in clusters.items()}
        for w in watches.values():
            w.sample()
        first = {kind: first_pids_of(w) for kind, w in watches.items()}
        end = time.monotonic() + MINUTES * 60
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(SAMPLE, left))
            for w in watches.values():
                w.sample()
        for kind, w in watches.items():
            rows, etcd = w.report(first[kind])
            for r in rows:
                r["role"] = before[kind].get(r["name"], "?")
            results[kind] = (rows, etcd)
            after = roles(w.cl)
            if after != before[kind]:
                print(f"WARNING: {kind} roles changed during the window: {before[kind]} -> {after}")
            for n in w.nodes:
                n["conn"].close()
        print_table(results)
        if HOLD:
            print(f"BENCH_HOLD=1: clusters still up in {tmp}; Ctrl-C (or SIGTERM to {os.getpid()}) stops them",
                  flush=True)
            while True:
                time.sleep(3600)
    finally:
        # Agents first (each stops its PostgreSQL), then any fence guard still there (its
        # own process group, so stop_sessions does not reach it).
        sw.cleanup(tmp)
        for pid in GUARDS:
            try:
                if "--fence-guard" in cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
