#!/usr/bin/env bash
# Starts a local Warden demo: a real etcd and three PostgreSQL 15 nodes, each under a
# `warden` agent, all on 127.0.0.1 in a temp dir. Prints the cluster and how to connect,
# then waits; Ctrl-C stops every process and removes the temp dir.
# WARDEN_DEMO_SECONDS=N stops it by itself after N seconds (used by CI).
#
# Clean-up runs on every way out: normal exit, an error, Ctrl-C, SIGTERM, SIGHUP, and a
# reader that went away (`./demo.sh | head`, or `| tee` killed by the same Ctrl-C). etcd,
# the agents and PostgreSQL run in sessions of their own (setsid), so the terminal's
# Ctrl-C reaches only this script, which stops them by PID in order: the agents first
# (the leader releases its lock while etcd is still up), then any PostgreSQL left, then
# etcd. WARDEN_DEMO_STOP_LOG=FILE also appends the clean-up messages to FILE (for
# scripts/check-demo-cleanup.sh, whose tee is gone by then).
set -euo pipefail
cd "$(dirname "$0")"

TMP=""
ETCD_PID=""
WAIT_PID=""
AGENT_PIDS=()
SIGNAL=""

# One clean-up message. stdout/stderr may be a pipe whose reader died with the same
# Ctrl-C: a failed write is ignored (SIGPIPE is ignored during clean-up) and the message
# goes to the terminal instead, when there is one.
say() {
    printf '%s\n' "$*" >&2 2>/dev/null || printf '%s\n' "$*" 2>/dev/null >/dev/tty || true
    if [ -n "${WARDEN_DEMO_STOP_LOG:-}" ]; then
        printf '%s\n' "$*" 2>/dev/null >>"$WARDEN_DEMO_STOP_LOG" || true
    fi
}

# Is PID alive (not a zombie waiting to be reaped) and one of ours: a child of this script
# or a process whose command line names the temp dir? A PID may be reused by then.
is_ours() {
    local pid=$1 stat argv
    [ -n "$pid" ] || return 1
    read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
    # Fields after the command name (which may contain spaces): state ppid ...
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] || return 1
    stat=${stat#* }
    [ "${stat%% *}" = "$$" ] && return 0
    mapfile -d '' -t argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
    [[ "${argv[*]}" == *"$TMP/"* ]]
}

# PIDs of the processes whose command line starts with PREFIX and names the temp dir:
# what a killed agent or a stop in the middle of the start-up leaves behind.
find_pids() {
    local prefix=$1 p argv
    for p in /proc/[0-9]*; do
        mapfile -d '' -t argv 2>/dev/null <"$p/cmdline" || continue
        [[ "${argv[*]}" == "$prefix"* && "${argv[*]}" == *"$TMP/"* ]] && echo "${p#/proc/}"
    done
}

# stop_all "SIG/SECONDS ..." PID...: sends each signal in turn to the processes still
# running and waits up to SECONDS for them to end; SIGKILL last. A second Ctrl-C during
# clean-up (FAST=1) skips the waiting.
stop_all() {
    local steps=$1 step sig secs pid i left
    shift
    local pids=()
    for pid in "$@"; do
        [[ " ${pids[*]} " == *" $pid "* ]] || ! is_ours "$pid" || pids+=("$pid")
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    for step in $steps KILL/2; do
        sig=${step%/*}
        secs=${step#*/}
        for pid in "${pids[@]}"; do
            is_ours "$pid" || continue
            [ "$sig" = KILL ] && say "  pid $pid did not stop in time: SIGKILL"
            kill "-$sig" "$pid" 2>/dev/null
        done
        for ((i = 0; i < secs * 10; i++)); do
            left=0
            for pid in "${pids[@]}"; do
                is_ours "$pid" && left=1
            done
            [ "$left" = 0 ] && return 0
            [ "$FAST" = 1 ] && [ "$sig" != KILL ] && break
            sleep 0.1
        done
    done
}

FAST=0
cleanup() {
    local rc=$? pids found dir pid
    # Clean-up must finish: no errexit, no unset-variable aborts, writes to a dead pipe
    # fail instead of killing the script, and another Ctrl-C/SIGTERM only hurries it.
    set +eu
    trap '' PIPE
    trap 'FAST=1' INT TERM HUP
    trap - EXIT
    [ -n "$WAIT_PID" ] && kill "$WAIT_PID" 2>/dev/null
    if [ -z "$TMP" ]; then
        exit "$rc"
    fi
    # Ctrl-C also hit the reader of our pipe (tee, less): give it a moment to go away so
    # that the messages go to the terminal rather than into a pipe nobody reads any more.
    [ "$SIGNAL" = INT ] && sleep 0.2
    say ""
    say "Stopping the demo${SIGNAL:+ (SIG$SIGNAL)}..."
    # 1. The agents, while etcd is up: the leader stops PostgreSQL and releases its lock.
    # An agent started just before the signal may not be in AGENT_PIDS yet.
    mapfile -t found < <(find_pids "$WARDEN $TMP/")
    pids=("${AGENT_PIDS[@]}" "${found[@]}")
    if [ "${#pids[@]}" -gt 0 ]; then
        say "  stopping the agents (the leader releases its lock while etcd is up)"
        stop_all TERM/30 "${pids[@]}"
        # The agents' logs are about to go: keep the proof the lock was released.
        grep -h "released the leader lock" "$TMP"/pg*/warden.log 2>/dev/null |
            sed -E 's/^[0-9-]+ [0-9:,]+ [A-Z]+: /  /' | while IFS= read -r line; do say "$line"; done
    fi
    # 2. What a killed agent leaves running: fence guards and PostgreSQL tools, then
    # postmasters (fast shutdown, then immediate, which also ends their backends).
    pids=()
    for dir in "$TMP"/pg*; do
        pids+=("$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)")
    done
    mapfile -t found < <(find_pids "$PG_BIN_DIR/postgres -D $TMP/")
    pids+=("${found[@]}")
    local others=()
    mapfile -t found < <(find_pids "$WARDEN-guard --fence-guard"; find_pids "$WARDEN --fence-guard"; find_pids "$PG_BIN_DIR/")
    for pid in "${found[@]}"; do
        [[ " ${pids[*]} " == *" $pid "* ]] || others+=("$pid")
    done
    stop_all TERM/3 "${others[@]}"
    for pid in "${pids[@]}"; do
        if is_ours "$pid"; then
            say "  stopping PostgreSQL left behind"
            break
        fi
    done
    stop_all "INT/10 QUIT/3" "${pids[@]}"
    # 3. etcd last.
    if [ -n "$ETCD_PID" ]; then
        say "  stopping etcd"
        stop_all TERM/5 "$ETCD_PID"
    fi
    # Ignoring the signals, so that another Ctrl-C cannot cut the removal short.
    (trap '' INT TERM HUP && exec rm -rf -- "$TMP")
    if [ -e "$TMP" ]; then
        say "Demo stopped; could not remove $TMP completely."
    else
        say "Demo stopped and $TMP removed."
    fi
    exit "$rc"
}

# A signal ends the script through `exit`, which runs the EXIT trap (cleanup) once.
on_signal() {
    SIGNAL=$1
    exit "$2"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP
trap 'on_signal PIPE 141' PIPE

. scripts/deps.sh
ensure_deps
cargo build --workspace --bins --quiet
ROOT=$(pwd)
WARDEN="$ROOT/target/debug/warden"
WARDENCTL="$ROOT/target/debug/wardenctl"

BASE_PORT="${WARDEN_DEMO_BASE_PORT:-25000}"
ETCD_PORT=$((BASE_PORT + 79)); ETCD_PEER=$((BASE_PORT + 80))
TMP=$(mktemp -d /tmp/warden-demo.XXXXXX)
chmod 755 "$TMP"
# As root, PostgreSQL and the agents run as postgres. setpriv execs the agent itself (unlike
# runuser, which forks and SIGKILLs its child 2 s after forwarding a SIGTERM), so the PID
# we keep is the agent's and a leader has the time it needs to hand over.
AS=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$TMP"
    AS=(setpriv --reuid=postgres --regid=postgres --init-groups -- env USER=postgres LOGNAME=postgres)
fi

# setsid (no fork here: a background job of a script is no group leader, so $! is etcd's
# PID): the terminal's Ctrl-C must not reach etcd before the agents are stopped.
setsid etcd --name demo --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "demo=http://127.0.0.1:$ETCD_PEER" >"$TMP/etcd.log" 2>&1 </dev/null &
ETCD_PID=$!
disown "$ETCD_PID"

for i in 0 1 2; do
    dir="$TMP/pg$i"; mkdir -p "$dir"
    pg_port=$((BASE_PORT + 32 + i)); api_port=$((BASE_PORT + 8 + i))
    cat >"$dir/warden.yml" <<YAML
scope: demo
namespace: /service/
name: pg$i
restapi:
  listen: 127.0.0.1:$api_port
  connect_address: 127.0.0.1:$api_port
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
  initdb: [{encoding: UTF8}, data-checksums]
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 scram-sha-256
  - host replication replicator 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:$pg_port
  connect_address: 127.0.0.1:$pg_port
  data_dir: $dir/data
  bin_dir: $PG_BIN_DIR
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres, password: demo}
    replication: {username: replicator, password: rep-demo}
  parameters:
    unix_socket_directories: '$dir'
YAML
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
done

for _ in $(seq 1 100); do
    etcdctl --endpoints "127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
for i in 0 1 2; do
    (cd "$TMP/pg$i" && exec setsid "${AS[@]}" env HOME="$TMP/pg$i" "$WARDEN" "$TMP/pg$i/warden.yml" \
        >>"$TMP/pg$i/warden.log" 2>&1 </dev/null) &
    AGENT_PIDS+=($!)
    disown "$!"
done

echo "Waiting for the cluster (leader elected, two replicas streaming)..."
ok=0
for _ in $(seq 1 120); do
    out=$("$WARDENCTL" -c "$TMP/pg0/warden.yml" list -f tsv 2>/dev/null || true)
    if [ "$(grep -c $'\tLeader\trunning' <<<"$out")" = 1 ] && [ "$(grep -c $'\tReplica\tstreaming' <<<"$out")" = 2 ]; then ok=1; break; fi
    sleep 1
done
"$WARDENCTL" -c "$TMP/pg0/warden.yml" list || true
if [ "$ok" != 1 ]; then
    echo "The cluster did not come up in 120 s; agent logs:" >&2
    tail -n 20 "$TMP"/pg*/warden.log >&2
    exit 1
fi
cat <<TXT

Warden demo cluster 'demo' is up (data in $TMP).
  Connect to the leader:   psql "host=127.0.0.1 port=<leader port above> user=postgres password=demo"
  Cluster table:           $WARDENCTL -c $TMP/pg0/warden.yml list
  Same with patronictl:    patronictl -c $TMP/pg0/warden.yml list
  Health checks:           curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:$((BASE_PORT + 8))/primary
  Agent logs:              tail -f $TMP/pg*/warden.log
  Try a failover:          kill -9 the leader's warden + postgres, watch 'list'
Press Ctrl-C to stop everything and clean up.
TXT
# Wait in the background: bash runs a trap only after a foreground command ends, and
# `wait` returns at once when a signal arrives.
if [ -n "${WARDEN_DEMO_SECONDS:-}" ]; then
    sleep "$WARDEN_DEMO_SECONDS" &
    WAIT_PID=$!
    wait "$WAIT_PID"
else
    while true; do
        sleep 3600 &
        WAIT_PID=$!
        wait "$WAIT_PID"
    done
fi
