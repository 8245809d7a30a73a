#!/usr/bin/env python3
"""Failover and start-up benchmark: Warden vs Patroni on the same machine.

Starts a real etcd, then for each agent (Warden; Patroni when installed) a 3-node cluster
with the same configuration (bench/switchover.py's YAML), all on 127.0.0.1 in a temp dir:

* start-up: all three agents are started at once on empty data directories; reports the
  time from start to a writable leader and to each replica streaming (the replica's
  `GET /patroni` says `replication_state: streaming`);
* failover, per round: a client commits a row every 20 ms through a libpq multi-host
  connection (target_session_attrs=read-write); the leader's agent, every process of its
  PostgreSQL instance and everything else in its session get SIGKILL (a node crash); reports the time from the
  kill to the next successful commit on the new leader, then restarts the killed node and
  reports how long it takes to stream again (pg_rewind rejoin). The kill comes 3 s plus a
  random fraction of loop_wait after the writer starts (the same seeded draws for every
  cluster), so rounds sample the whole lease-renewal cycle: expect ttl - loop_wait .. ttl
  plus the promotion.

With --warden-ttl/--warden-loop-wait a second Warden cluster runs with other timing; a ttl
below Patroni's floor of 20 s is written with `warden: {min_ttl: <ttl>}` (Warden-only, safe
because every Warden primary is fenced before its lock can expire; the floor is ttl 4 with
loop_wait 1, and below 8 s the YAML gets retry_timeout 1). With
--patroni-ttl/--patroni-loop-wait a second Patroni cluster runs too (e.g. at its floor, 20).

Usage (as root or as a user that can run PostgreSQL):
    bench/failover.py [--rounds 3] [--ttl 30] [--loop-wait 10] [--warden-only]
                      [--warden-ttl 8 --warden-loop-wait 2] [--patroni-ttl 20 --patroni-loop-wait 2]
Every process is stopped by PID at exit.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import switchover as sw  # noqa: E402  (same directory: cluster setup, writer, cleanup)


def api_status(node):
    """GET /patroni of a node as a dict, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node['api']}/patroni", timeout=1) as r:
            return json.loads(r.read())
    except Exception:
        return None


def is_streaming(node):
    s = api_status(node)
    return bool(s) and s.get("role") == "replica" and s.get("replication_state") == "streaming"


def is_leader(node):
    s = api_status(node)
    return bool(s) and s.get("role") in ("primary", "master") and s.get("state") == "running"


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(step)
    return None


def children_of(pid):
    """PIDs whose parent is `pid` (from /proc)."""
    kids = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as fh:
                st = fh.read()
        except OSError:
            continue
        if int(st[st.rfind(")") + 2:].split()[1]) == pid:
            kids.append(int(e))
    return kids


def kill_node(cl, i):
    """SIGKILL the node's agent session and its whole PostgreSQL instance (a crash of the
    whole node). Patroni starts the postmaster in a session of its own, out of reach of
    the session kill, and the backends of a SIGKILLed postmaster only exit once they notice
    it is gone: so stop the postmaster (no new children), then SIGKILL it and every child
    together, as a crash would."""
    n = cl.nodes[i]
    pid_file = os.path.join(n["dir"], "data", "postmaster.pid")
    try:
        with open(pid_file) as fh:
            postmaster = int(fh.readline())
    except (OSError, ValueError):
        postmaster = None
    instance = []
    if postmaster:
        try:
            os.kill(postmaster, signal.SIGSTOP)
            instance = [postmaster] + children_of(postmaster)
        except ProcessLookupError:
            pass
    p = cl.procs[i]
    subprocess.run(["pkill", "-KILL", "-s", str(p.pid)], check=False)
    for pid in instance:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # The fence guard runs in a process group of its own, in the same session (pkill -s).
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def restart_node(cl, i, binary):
    n = cl.nodes[i]
    env = dict(os.environ, HOME=n["dir"])
    cl.procs[i] = sw.spawn(sw.as_pg_user(["env", f"HOME={n['dir']}", binary, n["cfg"]]),
                           os.path.join(n["dir"], "agent.log"), cwd=n["dir"], env=env)


def stop_cluster(cl):
    """Stops every agent session of the cluster, then any postmaster left behind."""
    sw.stop_sessions(cl.procs)
    for n in cl.nodes:
        try:
            with open(os.path.join(n["dir"], "data", "postmaster.pid")) as fh:
                os.kill(int(fh.readline()), signal.SIGQUIT)
        except (OSError, ValueError):
            pass


def start_up(cl):
    t0 = time.monotonic()
    cl.start()
    leader_at = wait_until(lambda: any(is_leader(n) for n in cl.nodes), 180)
    if leader_at is None:
        cl.fail(f"{cl.kind}: no running leader within 180 s")
    leader = next(i for i, n in enumerate(cl.nodes) if is_leader(n))
    streaming = []
    for i, n in enumerate(cl.nodes):
        if i == leader:
            continue
        at = wait_until(lambda n=n: is_streaming(n), 180)
        if at is None:
            cl.fail(f"{cl.kind}: {n['name']} not streaming within 180 s")
        streaming.append(at - t0)
    return leader_at - t0, sorted(streaming)


def one_failover(cl, binary, delay):
    m = cl.wait_healthy()
    leader_name = next(x["Member"] for x in m if x["Role"] == "Leader")
    li = next(i for i, n in enumerate(cl.nodes) if n["name"] == leader_name)
    w = sw.Writer(cl.dsn())
    w.start()
    # 3 s of writes, then a delay drawn per round: where the kill lands in the leader's
    # renewal cycle decides how much of the ttl is left, so both agents get the same draws.
    time.sleep(3 + delay)
    t_kill = time.monotonic()
    conn_at_kill = w.connections
    kill_node(cl, li)
    # Next commit after the kill on a connection opened after it (bounded: 180 s): a
    # backend of the old leader can still finish a commit while the kill is under way.
    deadline = t_kill + 180
    resumed = None
    while time.monotonic() < deadline:
        after = [t for t, c in zip(list(w.ok), list(w.ok_conn)) if t > t_kill and c > conn_at_kill]
        if after:
            resumed = after[0]
            break
        time.sleep(0.05)
    w.stop.set()
    w.join(timeout=5)
    if resumed is None:
        raise SystemExit(f"{cl.kind}: no writable leader within 180 s of the kill")
    # Bring the old leader back and time its rejoin.
    t_restart = time.monotonic()
    restart_node(cl, li, binary)
    back = wait_until(lambda: is_streaming(cl.nodes[li]), 180)
    rejoin = (back - t_restart) if back else float("inf")
    return resumed - t_kill, rejoin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ttl", type=int, default=30)
    ap.add_argument("--loop-wait", type=int, default=10)
    ap.add_argument("--warden-only", action="store_true", help="skip the Patroni cluster")
    ap.add_argument("--warden-ttl", type=int,
                    help="also run Warden with this ttl (>= 4; below 8 with retry_timeout 1)")
    ap.add_argument("--warden-loop-wait", type=int, default=2)
    ap.add_argument("--patroni-ttl", type=int, help="also run Patroni with this ttl (>= 20)")
    ap.add_argument("--patroni-loop-wait", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1, help="seed of the per-round kill delays")
    args = ap.parse_args()
    tmp = sw.prepare()
    try:
        etcd_port = sw.start_etcd(tmp)
        runs = [("warden", args.ttl, args.loop_wait)]
        if args.warden_ttl:
            runs.append(("warden", args.warden_ttl, args.warden_loop_wait))
        if not args.warden_only and sw.patroni_bin():
            runs.append(("patroni", args.ttl, args.loop_wait))
            if args.patroni_ttl:
                runs.append(("patroni", args.patroni_ttl, args.patroni_loop_wait))
        results = []
        for idx, (kind, ttl, loop_wait) in enumerate(runs):
            label = f"{kind} ttl={ttl} lw={loop_wait}"
            cl = sw.Cluster(kind, os.path.join(tmp, f"run{idx}"), etcd_port, ttl, loop_wait)
            cl.scope = f"bench-{kind}-{idx}"
            for n in cl.nodes:  # the scope is in the YAML too
                with open(n["cfg"]) as fh:
                    text = fh.read()
                text = text.replace(f"scope: bench-{kind}\n", f"scope: {cl.scope}\n", 1)
                if kind == "warden" and ttl < 20:
                    text += f"warden:\n  min_ttl: {ttl}\n"
                with open(n["cfg"], "w") as fh:
                    fh.write(text)
            binary = os.path.join(sw.ROOT, "target/release/warden") if kind == "warden" else sw.patroni_bin()
            leader_s, streaming = start_up(cl)
            print(f"{label:24} start-up: leader writable after {leader_s:.1f} s, replicas streaming after "
                  + ", ".join(f"{s:.1f}" for s in streaming) + " s", flush=True)
            rounds = []
            draws = random.Random(args.seed)
            for i in range(args.rounds):
                gap, rejoin = one_failover(cl, binary, draws.random() * loop_wait)
                print(f"{label:24} round {i + 1}: writes resumed {gap:.1f} s after the kill; "
                      f"old leader streaming {rejoin:.1f} s after its restart", flush=True)
                rounds.append((gap, rejoin))
            results.append((label, leader_s, streaming, rounds))
            stop_cluster(cl)
        print()
        print(f"3-node clusters, {args.rounds} crash failovers each (SIGKILL of the leader's agent and PostgreSQL), "
              f"writer commits every 20 ms")
        print(f"{'':24}{'leader (s)':>11}{'replicas (s)':>14}{'failover median/max (s)':>25}{'rejoin median (s)':>19}")
        for label, leader_s, streaming, rounds in results:
            gaps = [g for g, _ in rounds]
            rejoins = [r for _, r in rounds]
            print(f"{label:24}{leader_s:11.1f}{max(streaming):14.1f}"
                  f"{statistics.median(gaps):14.1f} / {max(gaps):<8.1f}{statistics.median(rejoins):19.1f}")
    finally:
        sw.cleanup(tmp)


if __name__ == "__main__":
    main()
