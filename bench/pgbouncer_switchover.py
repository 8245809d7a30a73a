#!/usr/bin/env python3
"""Planned switchovers behind PgBouncer -> HAProxy: failed client transactions and the
longest pause, for Warden with `warden.pgbouncer`, Warden without it, and Patroni.

For each of the three, in one run: a fresh 3-node cluster (the same YAML as
bench/switchover.py, whose helpers this script reuses) behind the same stack as the
guides: HAProxy (`option httpchk`, `GET /primary`, `inter 500ms fall 2 rise 1`,
`on-marked-down shutdown-sessions`) and one PgBouncer (transaction pooling) pointing at
HAProxy. A client commits `INSERT ... RETURNING` through PgBouncer every 20 ms (its own
transaction each, autocommit) while `wardenctl` / `patronictl switchover` moves the
leader N times (alternating candidates). Reports, per setup, the failed transactions
(any error, including a failed reconnect) and the longest pause (largest gap between two
successful commits). Every process is stopped by PID at exit.

Usage (as root or as a user that can run PostgreSQL; needs haproxy, pgbouncer, psycopg2):
    bench/pgbouncer_switchover.py [--switchovers 5] [--ttl 30] [--loop-wait 10]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import switchover as sw  # noqa: E402  (the shared helpers: etcd, clusters, processes)

HAPROXY = "/usr/sbin/haproxy"
PGBOUNCER = "/usr/sbin/pgbouncer"
ADMIN_USER, ADMIN_PASSWORD = "wardenadmin", "adm-bench"


class StackCluster(sw.Cluster):
    """A bench/switchover.py cluster under its own `label` (dir, scope) running `agent`
    (warden or patroni), with HAProxy and PgBouncer in front."""

    def __init__(self, label, agent, tmp, etcd_port, ttl, loop_wait):
        super().__init__(label, tmp, etcd_port, ttl, loop_wait)
        self.agent = agent
        self.dir = os.path.join(tmp, label)

    def start(self):
        binary = os.path.join(sw.ROOT, "target/release/warden") if self.agent == "warden" else sw.patroni_bin()
        for n in self.nodes:
            env = dict(os.environ, HOME=n["dir"])
            self.procs.append(sw.spawn(sw.as_pg_user(["env", f"HOME={n['dir']}", binary, n["cfg"]]),
                                       os.path.join(n["dir"], "agent.log"), cwd=n["dir"], env=env))

    def ctl(self, *args):
        binary = os.path.join(sw.ROOT, "target/release/wardenctl") if self.agent == "warden" else shutil.which("patronictl")
        return subprocess.run([binary, "-c", self.nodes[0]["cfg"], *args], capture_output=True, text=True, timeout=120)

    def start_stack(self):
        """HAProxy (as root is fine; it only proxies) and PgBouncer (as postgres)."""
        self.hap_port, self.stats_port, self.pgb_port = sw.free_port(), sw.free_port(), sw.free_port()
        servers = "".join(f"    server {n['name']} 127.0.0.1:{n['pg']} maxconn 100 check port {n['api']}\n"
                          for n in self.nodes)
        hap_cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(hap_cfg, "w") as fh:
            fh.write(f"""global
    maxconn 300
defaults
    mode tcp
    retries 2
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s
listen stats
    mode http
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats
listen primary
    bind 127.0.0.1:{self.hap_port}
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}""")
        self.procs.append(sw.spawn([HAPROXY, "-db", "-f", hap_cfg], os.path.join(self.dir, "haproxy.log")))
        users = os.path.join(self.dir, "userlist.txt")
        with open(users, "w") as fh:
            fh.write(f'"postgres" "bench"\n"{ADMIN_USER}" "{ADMIN_PASSWORD}"\n')
        self.passfile = os.path.join(self.dir, "pgbouncer.pgpass")
        with open(self.passfile, "w") as fh:
            fh.write(f"127.0.0.1:{self.pgb_port}:pgbouncer:{ADMIN_USER}:{ADMIN_PASSWORD}\n")
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(ini, "w") as fh:
            fh.write(f"""[databases]
postgres = host=127.0.0.1 port={self.hap_port} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.pgb_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {users}
admin_users = {ADMIN_USER}
pool_mode = transaction
default_pool_size = 10
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
pidfile = {os.path.join(self.dir, 'pgbouncer.pid')}
""")
        for f in (users, self.passfile, ini):
            os.chmod(f, 0o600)
            if os.geteuid() == 0:
                shutil.chown(f, "postgres", "postgres")
        self.procs.append(sw.spawn(sw.as_pg_user([PGBOUNCER, ini]), os.path.join(self.dir, "pgbouncer.log")))

    def add_pgbouncer_setting(self):
        """The Warden-only setting, appended to each node's YAML (Patroni ignores it)."""
        for n in self.nodes:
            with open(n["cfg"], "a") as fh:
                fh.write(f"""warden:
  pgbouncer:
    admin: ['host=127.0.0.1 port={self.pgb_port} user={ADMIN_USER} dbname=pgbouncer']
    passfile: {self.passfile}
    pause_timeout: 10
    resume_timeout: 30
    haproxy_stats: 'http://127.0.0.1:{self.stats_port}/stats;csv'
    haproxy_backend: primary
""")

    def pgb_dsn(self):
        return f"host=127.0.0.1 port={self.pgb_port} user=postgres password=bench dbname=postgres connect_timeout=2"


class Writer(sw.Writer):
    """Commits `INSERT ... RETURNING` every 20 ms through PgBouncer (the table exists
    already); records the time of each successful commit and each failure."""

    def prepare(self, conn):
        pass

    def write(self, cur, n):
        cur.execute(f"INSERT INTO bench_pgb(id) VALUES ({n}) RETURNING id")
        cur.fetchone()

    def window(self, since, until):
        pts = [x for x in self.ok if since <= x <= until]
        gap = max((b - a for a, b in zip(pts, pts[1:])), default=float("inf"))
        fails = [f for f in self.failed if since <= f[0] <= until]
        return gap, fails


def wait_writes(dsn, timeout=60):
    import psycopg2
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = psycopg2.connect(dsn)
            c.autocommit = True
            c.cursor().execute("CREATE TABLE IF NOT EXISTS bench_pgb(id bigint, at timestamptz DEFAULT now())")
            c.close()
            return
        except Exception:
            time.sleep(0.5)
    raise SystemExit("no write through PgBouncer -> HAProxy within 60 s")


def measure(cl, switchovers):
    m = cl.wait_healthy()
    wait_writes(cl.pgb_dsn())
    w = Writer(cl.pgb_dsn())
    w.start()
    time.sleep(2)
    t_start = time.monotonic()
    rounds = []
    for i in range(switchovers):
        m = cl.wait_healthy()
        time.sleep(2)
        leader = next(x["Member"] for x in m if x["Role"] == "Leader")
        names = [n["name"] for n in cl.nodes]
        cand = names[(names.index(leader) + 1) % len(names)]
        t0 = time.monotonic()
        r = cl.ctl("switchover", cl.scope, "--leader", leader, "--candidate", cand, "--force")
        took = time.monotonic() - t0
        if r.returncode != 0:
            cl.fail(f"{cl.kind} switchover failed: {r.stdout}{r.stderr}")
        time.sleep(6)
        gap, fails = w.window(t0 - 1, time.monotonic())
        print(f"{cl.kind:16} switchover {i + 1} {leader} -> {cand}: {len(fails)} failed, longest pause {gap:.2f} s"
              + (f" ({fails[0][1]})" if fails else ""), flush=True)
        rounds.append((gap, len(fails), took))
    w.stop.set()
    w.join(timeout=10)
    gap, fails = w.window(t_start, time.monotonic())
    return {"rounds": rounds, "failed": len(fails), "gap": gap, "commits": len(w.ok),
            "errors": sorted({f[1] for f in fails})}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--switchovers", type=int, default=5)
    ap.add_argument("--ttl", type=int, default=30)
    ap.add_argument("--loop-wait", type=int, default=10)
    ap.add_argument("--skip-patroni", action="store_true")
    args = ap.parse_args()
    for b in (HAPROXY, PGBOUNCER):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: apt-get install haproxy pgbouncer")
    tmp = sw.prepare()
    try:
        etcd_port = sw.start_etcd(tmp)
        setups = [("warden-pgbouncer", "warden", True), ("warden-plain", "warden", False)]
        if not args.skip_patroni and sw.patroni_bin():
            setups.append(("patroni", "patroni", False))
        results = {}
        for label, agent, setting in setups:
            cl = StackCluster(label, agent, tmp, etcd_port, args.ttl, args.loop_wait)
            cl.start_stack()
            if setting:
                cl.add_pgbouncer_setting()
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", "postgres:", cl.dir], check=True)
            cl.start()
            results[label] = measure(cl, args.switchovers)
            sw.stop_sessions(cl.procs)
        print()
        print(f"3-node clusters, ttl={args.ttl}, loop_wait={args.loop_wait}; client -> PgBouncer (transaction "
              f"pooling) -> HAProxy (GET /primary, inter 500ms fall 2 rise 1) -> primary; "
              f"{args.switchovers} switchovers each, one INSERT ... RETURNING every 20 ms")
        print(f"{'setup':18}{'commits':>9}{'failed tx':>11}{'longest pause (s)':>19}{'median pause (s)':>18}")
        for label, r in results.items():
            gaps = sorted(g for g, _, _ in r["rounds"])
            print(f"{label:18}{r['commits']:9}{r['failed']:11}{r['gap']:19.2f}{gaps[len(gaps) // 2]:18.2f}")
        for label, r in results.items():
            if r["errors"]:
                print(f"{label} errors seen: " + "; ".join(r["errors"][:4]))
    finally:
        sw.cleanup(tmp)


if __name__ == "__main__":
    main()
