#!/usr/bin/env python3
"""Switchover benchmark: the longest write gap a client sees, Warden vs Patroni.

Starts a real etcd, a 3-node Warden cluster and (when `patroni` is installed) a 3-node
Patroni cluster with the same configuration on other ports, all on 127.0.0.1 in a temp
dir. For each, a client commits one row every 20 ms through a libpq multi-host
connection (target_session_attrs=read-write, so it follows the leader) while
`wardenctl switchover` / `patronictl switchover` moves the leader. Reports the longest
gap between two successful commits, the command's run time, the agents' RSS, and the
ratios. Every process is stopped by PID at exit.

Usage (as root or as a user that can run PostgreSQL):
    bench/switchover.py [--rounds 3] [--ttl 30] [--loop-wait 10]
"""

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = os.environ.get("WARDEN_PG_BIN_DIR", "/usr/lib/postgresql/15/bin")
PROCS = []




@functools.lru_cache(maxsize=None)
def patroni_bin():
    """A `patroni` the postgres user can run ($PATRONI_BIN, else the one on PATH, copied
    into a venv under /opt when it lives under /root): scripts/deps.sh decides."""
    out = subprocess.run(["bash", "-c", ". scripts/deps.sh && ensure_patroni_agent"], cwd=ROOT,
                         capture_output=True, text=True)
    if out.stderr:
        print(out.stderr, end="", flush=True)
    return out.stdout.strip() or None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def spawn(cmd, log, cwd=None, env=None):
    f = open(log, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=f, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                         start_new_session=True)
    PROCS.append(p)
    return p


def stop_sessions(procs):
    """SIGTERM each process group (agents stop their PostgreSQL), SIGKILL what is left
    after 30 s in all."""
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cleanup(tmp):
    stop_sessions(PROCS)
    # Any postmaster left behind (an agent killed before it stopped PostgreSQL).
    for root, dirs, files in os.walk(tmp):
        if "postmaster.pid" in files:
            try:
                with open(os.path.join(root, "postmaster.pid")) as fh:
                    os.kill(int(fh.readline()), signal.SIGQUIT)
            except (OSError, ValueError):
                pass
    time.sleep(1)
    shutil.rmtree(tmp, ignore_errors=True)


def retry_timeout_for(ttl, loop_wait):
    """Patroni's minimum of 3 s; the Warden-only leases below 8 s need 1 s to fit
    (ttl 4: loop_wait 1 + retry_timeout 1 + 1 s <= ttl - the 1 s fence margin)."""
    return max(3, (ttl - loop_wait) // 2) if ttl >= 8 else 1


def node_yaml(scope, name, etcd_port, node_dir, pg_port, api_port, ttl, loop_wait):
    return f"""scope: {scope}
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout_for(ttl, loop_wait)}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 50
  initdb: [{{encoding: UTF8}}, data-checksums]
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 scram-sha-256
  - host replication replicator 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {node_dir}/data
  bin_dir: {PG_BIN}
  pgpass: {node_dir}/pgpass
  authentication:
    superuser: {{username: postgres, password: bench}}
    replication: {{username: replicator, password: rep-bench}}
  parameters:
    unix_socket_directories: '{node_dir}'
"""


class Cluster:
    def __init__(self, kind, tmp, etcd_port, ttl, loop_wait):
        self.kind = kind
        self.scope = f"bench-{kind}"
        self.nodes = []
        for i in range(3):
            d = os.path.join(tmp, kind, f"n{i}")
            os.makedirs(d)
            pg, api = free_port(), free_port()
            cfg = os.path.join(d, "config.yml")
            with open(cfg, "w") as fh:
                fh.write(node_yaml(self.scope, f"n{i}", etcd_port, d, pg, api, ttl, loop_wait))
            self.nodes.append({"name": f"n{i}", "dir": d, "pg": pg, "api": api, "cfg": cfg})
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", os.path.join(tmp, kind)], check=True)
        self.procs = []

    def start(self):
        binary = os.path.join(ROOT, "target/release/warden") if self.kind == "warden" else patroni_bin()
        for n in self.nodes:
            env = dict(os.environ, HOME=n["dir"])
            self.procs.append(spawn(as_pg_user(["env", f"HOME={n['dir']}", binary, n["cfg"]]),
                                    os.path.join(n["dir"], "agent.log"), cwd=n["dir"], env=env))

    def ctl(self, *args):
        binary = os.path.join(ROOT, "target/release/wardenctl") if self.kind == "warden" else shutil.which("patronictl")
        return subprocess.run([binary, "-c", self.nodes[0]["cfg"], *args], capture_output=True, text=True, timeout=120)

    def members(self):
        r = self.ctl("list", "-f", "json")
        try:
            return json.loads(r.stdout)
        except ValueError:
            return []

    def wait_healthy(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.members()
            if sum(1 for x in m if x.get("Role") == "Leader" and x.get("State") == "running") == 1 and \
                    sum(1 for x in m if x.get("Role") == "Replica" and x.get("State") == "streaming") == 2:
                return m
            time.sleep(1)
        self.fail(f"{self.kind} cluster not healthy after {timeout}s")

    def fail(self, why):
        """Prints the member list and each agent's log tail, then exits with `why`."""
        print(self.ctl("list").stdout, file=sys.stderr)
        for n in self.nodes:
            try:
                with open(os.path.join(n["dir"], "agent.log")) as fh:
                    tail = fh.readlines()[-25:]
                print(f"----- {n['name']} -----\n" + "".join(tail), file=sys.stderr)
            except OSError:
                pass
        raise SystemExit(why)

    def dsn(self):
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(n["pg"]) for n in self.nodes)
        return (f"host={hosts} port={ports} user=postgres password=bench dbname=postgres "
                f"target_session_attrs=read-write connect_timeout=1")

    def rss_kib(self):
        total = []
        for p in self.procs:
            try:
                # The agent is the child of runuser/env; take the largest RSS in its session.
                out = subprocess.run(["ps", "-o", "rss=,args=", "-s", str(p.pid)], capture_output=True, text=True).stdout
                vals = [int(l.split()[0]) for l in out.splitlines()
                        if l.strip() and ("warden" in l or "patroni" in l) and "postgres:" not in l]
                total.append(max(vals) if vals else 0)
            except (OSError, ValueError):
                total.append(0)
        return total


class Writer(threading.Thread):
    """Commits a row every 20 ms; records the time of each successful commit and each
    failure (time, first line of the error). Subclasses change what is written
    (`prepare` once per connection, `write` per commit)."""

    def __init__(self, dsn):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.ok = []
        # Per commit in `ok`: the number of the connection it was made on (1, 2, …), so
        # that a commit finishing on the old leader just after a kill is not taken for
        # one on the new leader.
        self.ok_conn = []
        self.connections = 0
        self.failed = []
        self.stop = threading.Event()

    def prepare(self, conn):
        conn.cursor().execute("CREATE TABLE IF NOT EXISTS bench_writes(t timestamptz)")

    def write(self, cur, n):
        cur.execute("INSERT INTO bench_writes VALUES (now())")

    def run(self):
        import psycopg2
        conn, n = None, 0
        while not self.stop.is_set():
            t = time.monotonic()
            n += 1
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn)
                    self.connections += 1
                    conn.autocommit = True
                    self.prepare(conn)
                self.write(conn.cursor(), n)
                self.ok_conn.append(self.connections)
                self.ok.append(time.monotonic())
            except Exception as e:
                text = str(e).strip()
                self.failed.append((time.monotonic(), text.splitlines()[0] if text else repr(e)))
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
            time.sleep(max(0.0, 0.02 - (time.monotonic() - t)))

    def max_gap(self, since, until):
        pts = [x for x in self.ok if since <= x <= until]
        if len(pts) < 2:
            return float("inf")
        return max(b - a for a, b in zip(pts, pts[1:]))


def prepare():
    """Checks psycopg2, builds the release binaries, makes the temp dir, and makes
    SIGTERM/SIGHUP (e.g. `kill`, a closed terminal) unwind through the caller's cleanup
    instead of leaving agents and PostgreSQL running."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise SystemExit("needs psycopg2: pip install psycopg2-binary")
    subprocess.run([os.path.join(ROOT, "scripts/build-release.sh"), "--quiet"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="warden-bench-")
    os.chmod(tmp, 0o755)
    return tmp


def start_etcd(tmp, name="etcd"):
    """One etcd on 127.0.0.1 with its data in `tmp`/`name`; returns its client port once healthy."""
    etcd_port, peer = free_port(), free_port()
    spawn(["etcd", "--name", "bench", "--data-dir", os.path.join(tmp, name),
           "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
           "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"bench=http://127.0.0.1:{peer}"], os.path.join(tmp, f"{name}.log"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", etcd_port), timeout=1).close()
            return etcd_port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("etcd did not start within 30 s")


def one_switchover(cl):
    m = cl.wait_healthy()
    leader = next(x["Member"] for x in m if x["Role"] == "Leader")
    cand = next(x["Member"] for x in m if x["Role"] == "Replica")
    w = Writer(cl.dsn())
    w.start()
    time.sleep(3)
    t0 = time.monotonic()
    r = cl.ctl("switchover", cl.scope, "--leader", leader, "--candidate", cand, "--force")
    took = time.monotonic() - t0
    time.sleep(5)
    w.stop.set()
    w.join(timeout=5)
    if r.returncode != 0:
        raise SystemExit(f"{cl.kind} switchover failed: {r.stdout}{r.stderr}")
    gap = w.max_gap(t0 - 1, t0 + took + 4)
    return gap, took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ttl", type=int, default=30)
    ap.add_argument("--loop-wait", type=int, default=10)
    ap.add_argument("--warden-only", action="store_true", help="skip the Patroni cluster")
    args = ap.parse_args()
    tmp = prepare()
    try:
        etcd_port = start_etcd(tmp)
        kinds = ["warden"] + (["patroni"] if not args.warden_only and patroni_bin() else [])
        results = {}
        for kind in kinds:
            cl = Cluster(kind, tmp, etcd_port, args.ttl, args.loop_wait)
            cl.start()
            cl.wait_healthy()
            time.sleep(2)
            rss = cl.rss_kib()
            rounds = []
            for i in range(args.rounds):
                gap, took = one_switchover(cl)
                print(f"{kind:8} round {i + 1}: write gap {gap:.3f} s, command {took:.2f} s", flush=True)
                rounds.append((gap, took))
            results[kind] = {"gaps": [g for g, _ in rounds], "took": [t for _, t in rounds], "rss": rss}
        print()
        print(f"3-node clusters, ttl={args.ttl}, loop_wait={args.loop_wait}, {args.rounds} switchovers each, "
              f"writer commits every 20 ms")
        print(f"{'':10}{'max gap (s)':>14}{'median gap (s)':>16}{'median cmd (s)':>16}{'agent RSS (MiB)':>18}")
        for kind, r in results.items():
            rss = ", ".join(f"{x / 1024:.1f}" for x in r["rss"])
            print(f"{kind:10}{max(r['gaps']):14.3f}{statistics.median(r['gaps']):16.3f}"
                  f"{statistics.median(r['took']):16.2f}{rss:>18}")
        if "patroni" in results:
            w, p = results["warden"], results["patroni"]
            print(f"ratio (Patroni / Warden): max gap {max(p['gaps']) / max(w['gaps']):.1f}x, "
                  f"median gap {statistics.median(p['gaps']) / statistics.median(w['gaps']):.1f}x, "
                  f"RSS {max(p['rss']) / max(1, max(w['rss'])):.1f}x")
    finally:
        cleanup(tmp)


if __name__ == "__main__":
    main()
