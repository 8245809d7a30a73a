#!/usr/bin/env bash
# REST API benchmark: Warden vs Patroni on the endpoints load balancers and monitoring
# hit most (GET /primary, /replica, /patroni), with and without keep-alive.
#
# Starts, all on 127.0.0.1 in a temp dir: one etcd, a single-node Warden cluster (release
# build) and, when Patroni is available, a single-node Patroni cluster (other scope, other
# ports, same etcd). Runs `wrk` against each endpoint of each agent, prints a table and
# each agent's RSS after the load, then stops every process it started by PID.
#
# Knobs (environment): BENCH_DURATION (s, default 10), BENCH_THREADS (2),
# BENCH_CONNECTIONS (32), BENCH_BASE_PORT (26000), BENCH_SKIP_PATRONI=1,
# BENCH_SKIP_CEILING=1 (skip the HAProxy reference run), BENCH_WARDEN_BIN (an agent binary
# to use instead of building one, e.g. a build with symbols for perf),
# BENCH_AGENT_CPUS / BENCH_WRK_CPUS (taskset -c lists, e.g. 0 and 1), BENCH_HOLD=1
# (start the agents, print their PIDs and URLs, wait for Ctrl-C: for profiling),
# PATRONI_BIN (a `patroni` the postgres user can run; as root a venv is made in
# /opt/warden/patroni-venv if the one on PATH is not runnable by postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/deps.sh
ensure_deps

DURATION="${BENCH_DURATION:-10}"
THREADS="${BENCH_THREADS:-2}"
CONNS="${BENCH_CONNECTIONS:-32}"
BASE_PORT="${BENCH_BASE_PORT:-26000}"
ETCD_PORT=$((BASE_PORT + 79)); ETCD_PEER=$((BASE_PORT + 80))
W_PG=$((BASE_PORT + 32)); W_API=$((BASE_PORT + 8))
P_PG=$((BASE_PORT + 33)); P_API=$((BASE_PORT + 9))

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "wrk not found: sudo apt-get install -y wrk" >&2; exit 1
    fi
fi

if [ -n "${BENCH_WARDEN_BIN:-}" ]; then
    WARDEN="$BENCH_WARDEN_BIN"
else
    echo "Building release binaries..."
    scripts/build-release.sh --quiet
    WARDEN="$ROOT/target/release/warden"
fi

TMP=$(mktemp -d /tmp/warden-bench.XXXXXX)
chmod 755 "$TMP"
AS=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$TMP"
    # setpriv execs (no fork), so $! is the agent's own PID (for RSS and for kill).
    AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi

# --- Patroni (optional) ---------------------------------------------------------------
PATRONI=""
if [ -z "${BENCH_SKIP_PATRONI:-}" ]; then
    PATRONI=$(ensure_patroni_agent)
fi
if [ -n "$PATRONI" ] && ! "${AS[@]}" "$PATRONI" --version >/dev/null 2>&1; then
    echo "note: $PATRONI cannot be run by the PostgreSQL user; skipping Patroni" >&2
    PATRONI=""
fi

# Optional CPU pinning so the load generator does not steal the agent's CPU (each agent,
# with its PostgreSQL, on BENCH_AGENT_CPUS; wrk on BENCH_WRK_CPUS; taskset -c lists).
PIN_AGENT=(); PIN_WRK=()
[ -n "${BENCH_AGENT_CPUS:-}" ] && PIN_AGENT=(taskset -c "$BENCH_AGENT_CPUS")
[ -n "${BENCH_WRK_CPUS:-}" ] && PIN_WRK=(taskset -c "$BENCH_WRK_CPUS")

AGENT_PIDS=()
ETCD_PID=""
CEIL_PID=""
cleanup() {
    trap - EXIT INT TERM
    for pid in "${AGENT_PIDS[@]:-}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 100); do
        alive=0
        for pid in "${AGENT_PIDS[@]:-}"; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${AGENT_PIDS[@]:-}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
    for pidfile in "$TMP"/*/data/postmaster.pid; do
        [ -f "$pidfile" ] && kill -QUIT "$(head -1 "$pidfile")" 2>/dev/null || true
    done
    [ -n "$ETCD_PID" ] && kill -KILL "$ETCD_PID" 2>/dev/null || true
    [ -n "$CEIL_PID" ] && kill -KILL "$CEIL_PID" 2>/dev/null || true
    sleep 0.5
    rm -rf "$TMP"
}
# On a signal, clean up and end (a trap that only returned would resume the script).
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
disown "$ETCD_PID"
for _ in $(seq 1 100); do
    etcdctl --endpoints "127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

# write_config <dir> <scope> <name> <pg_port> <api_port>: the same YAML serves both agents.
write_config() {
    local dir=$1 scope=$2 name=$3 pg=$4 api=$5
    mkdir -p "$dir"
    cat >"$dir/config.yml" <<YAML
scope: $scope
namespace: /service/
name: $name
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$api
  connect_address: 127.0.0.1:$api
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      parameters:
        fsync: off
        shared_buffers: 16MB
        max_connections: 20
  initdb: [{encoding: UTF8}, no-sync]
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 scram-sha-256
  - host replication replicator 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $dir/data
  bin_dir: $PG_BIN_DIR
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres, password: bench}
    replication: {username: replicator, password: rep-bench}
  parameters:
    unix_socket_directories: '$dir'
YAML
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    return 0
}

# start_agent <dir> <program...>: sets LAST_PID to the agent's PID.
start_agent() {
    local dir=$1; shift
    (cd "$dir" && exec "${PIN_AGENT[@]}" "${AS[@]}" env HOME="$dir" "$@" "$dir/config.yml" >>"$dir/agent.log" 2>&1) &
    LAST_PID=$!
    disown "$LAST_PID"
    AGENT_PIDS+=("$LAST_PID")
}

wait_primary() {
    local name=$1 api=$2 dir=$3
    for _ in $(seq 1 180); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api/primary" || true)" = 200 ] && return 0
        sleep 0.5
    done
    echo "$name did not become primary within 90 s; log tail:" >&2
    tail -n 30 "$dir/agent.log" >&2
    exit 1
}

write_config "$TMP/warden" bench-warden warden0 "$W_PG" "$W_API"
start_agent "$TMP/warden" "$WARDEN"
W_PID=$LAST_PID
if [ -n "$PATRONI" ]; then
    write_config "$TMP/patroni" bench-patroni patroni0 "$P_PG" "$P_API"
    start_agent "$TMP/patroni" "$PATRONI"
    P_PID=$LAST_PID
fi
wait_primary Warden "$W_API" "$TMP/warden"
[ -n "$PATRONI" ] && wait_primary Patroni "$P_API" "$TMP/patroni"
sleep 2  # let both finish their first HA cycles

W_VER=$(curl -s "http://127.0.0.1:$W_API/patroni" | python3 -c 'import json,sys; print(json.load(sys.stdin)["patroni"]["version"])' 2>/dev/null || echo "?")
P_VER=""
[ -n "$PATRONI" ] && P_VER=$("$PATRONI" --version 2>/dev/null | awk '{print $2}')

if [ -n "${BENCH_HOLD:-}" ]; then
    # For profiling: keep the agents up until Ctrl-C / SIGTERM, then clean up as usual.
    echo "holding: Warden pid $W_PID at http://127.0.0.1:$W_API/${PATRONI:+, Patroni pid $P_PID at http://127.0.0.1:$P_API/}"
    while :; do sleep 1; done
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# The agent's own memory: anonymous pages (heap, stacks), not the mapped binary and libraries.
anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
W_RSS0=$(rss_kb "$W_PID"); W_ANON0=$(anon_kb "$W_PID"); P_RSS0=""; P_ANON0=""
[ -n "$PATRONI" ] && P_RSS0=$(rss_kb "$P_PID") && P_ANON0=$(anon_kb "$P_PID")

# run_wrk <url> <mode>: prints "req/s p99_ms non2xx socket_errors requests".
run_wrk() {
    local url=$1 mode=$2 out
    local hdr=()
    [ "$mode" = close ] && hdr=(-H 'Connection: close')
    out=$("${PIN_WRK[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency "${hdr[@]}" "$url" 2>&1)
    echo "$out" >>"$TMP/wrk.log"
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +99%/ { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
                   p99 = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v }
        /Non-2xx or 3xx responses:/ { non2xx = $5 }
        /Socket errors:/ { gsub(/,/, ""); err = sprintf("connect=%d,read=%d,write=%d,timeout=%d", $4, $6, $8, $10);
                           if ($4 + $6 + $8 + $10 == 0) err = "0" }
        /requests in/ { total = $1 }
        END { printf "%s %.2f %d %s %d\n", (rps == "" ? 0 : rps), p99, non2xx, (err == "" ? "0" : err), total }' <<<"$out"
}

echo
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency [-H 'Connection: close'] http://127.0.0.1:<api>/<endpoint>"
[ -n "${BENCH_AGENT_CPUS:-}${BENCH_WRK_CPUS:-}" ] && echo "pinned: agents on CPUs ${BENCH_AGENT_CPUS:-any}, wrk on CPUs ${BENCH_WRK_CPUS:-any}"
echo "Warden $W_VER (release build)${PATRONI:+ vs Patroni $P_VER}; $(nproc) CPUs; single-node clusters (each node is the leader)"
echo
fmt="%-9s %-10s %12s %10s %12s %10s %7s\n"
printf "$fmt" endpoint mode "Warden r/s" "W p99 ms" "Patroni r/s" "P p99 ms" ratio
printf "$fmt" --------- ---------- ------------ ---------- ------------ ---------- -------
NOTES=()
declare -A W_PRIMARY=() P_PRIMARY=()
for ep in primary replica patroni; do
    for mode in keepalive close; do
        read -r w_rps w_p99 w_non w_err w_n < <(run_wrk "http://127.0.0.1:$W_API/$ep" "$mode")
        p_rps="-"; p_p99="-"; ratio="-"
        if [ -n "$PATRONI" ]; then
            read -r p_rps p_p99 p_non p_err p_n < <(run_wrk "http://127.0.0.1:$P_API/$ep" "$mode")
            ratio=$(awk -v a="$w_rps" -v b="$p_rps" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }')
            [ "$p_err" != 0 ] && NOTES+=("Patroni /$ep $mode: $p_n requests, socket errors $p_err")
            [ "$p_non" != 0 ] && [ "$ep" != replica ] && NOTES+=("Patroni /$ep $mode: $p_non non-2xx")
        fi
        [ "$w_err" != 0 ] && NOTES+=("Warden /$ep $mode: $w_n requests, socket errors $w_err")
        [ "$w_non" != 0 ] && [ "$ep" != replica ] && NOTES+=("Warden /$ep $mode: $w_non non-2xx")
        printf "$fmt" "/$ep" "$mode" "$w_rps" "$w_p99" "$p_rps" "$p_p99" "$ratio"
        [ "$ep" = primary ] && W_PRIMARY[$mode]=$w_rps && P_PRIMARY[$mode]=$p_rps
    done
done
echo
echo "(/replica answers 503 on a leader: that is the probe HAProxy sends to the primary."
echo " wrk counts a 'read' socket error each time a server closes the connection after a"
echo " response, as HTTP/1.0 servers do; wrk then reconnects.)"
for n in "${NOTES[@]:-}"; do [ -n "$n" ] && echo "note: $n"; done

W_RSS1=$(rss_kb "$W_PID"); W_ANON1=$(anon_kb "$W_PID")

# --- The machine's ceiling --------------------------------------------------------------
# What the fastest server we have here does under the same wrk: HAProxy (C, one thread,
# no backend) answering Warden's own /primary body from a file. Its ratio to Patroni is
# the most any server could show on this machine; Warden's share of it says how much of
# the gap is Warden's code rather than the kernel and wrk.
if [ -z "${BENCH_SKIP_CEILING:-}" ] && command -v haproxy >/dev/null 2>&1; then
    C_PORT=$((BASE_PORT + 10))
    mkdir -p "$TMP/ceiling"
    curl -s "http://127.0.0.1:$W_API/primary" >"$TMP/ceiling/primary.json"
    cat >"$TMP/ceiling/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 1000
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 5s
frontend ceiling
    bind 127.0.0.1:$C_PORT
    http-request return status 200 content-type application/json file $TMP/ceiling/primary.json
CFG
    [ "$(id -u)" = 0 ] && chown -R postgres: "$TMP/ceiling"
    # -db: stay in the foreground, so $! is HAProxy's own PID.
    "${PIN_AGENT[@]}" "${AS[@]}" haproxy -db -f "$TMP/ceiling/haproxy.cfg" >"$TMP/ceiling/haproxy.log" 2>&1 &
    CEIL_PID=$!
    disown "$CEIL_PID"
    for _ in $(seq 1 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$C_PORT/primary" || true)" = 200 ] && break
        sleep 0.1
    done
    echo
    echo "Machine ceiling: $(haproxy -v | head -1 | awk '{print "HAProxy", $3}'), one thread, answering Warden's /primary body from a file:"
    for mode in keepalive close; do
        read -r c_rps c_p99 _ _ _ < <(run_wrk "http://127.0.0.1:$C_PORT/primary" "$mode")
        w_rps=${W_PRIMARY[$mode]}
        line=$(awk -v c="$c_rps" -v w="$w_rps" 'BEGIN { printf "Warden /primary = %.0f%% of it", (c > 0 ? 100 * w / c : 0) }')
        if [ -n "$PATRONI" ]; then
            line+=$(awk -v c="$c_rps" -v p="${P_PRIMARY[$mode]}" 'BEGIN { if (p > 0) printf "; ceiling / Patroni = %.1fx", c / p }')
        fi
        printf "  %-10s %12s r/s  p99 %6s ms   %s\n" "$mode" "$c_rps" "$c_p99" "$line"
    done
    kill -TERM "$CEIL_PID" 2>/dev/null || true
fi
echo
echo "Agent memory (the agent process; PostgreSQL not included). VmRSS, and in brackets"
echo "RssAnon: its own heap and stacks, without the mapped binary and shared libraries:"
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "  Warden:  before load $(mib "$W_RSS0") MiB ($(mib "$W_ANON0")), after load $(mib "$W_RSS1") MiB ($(mib "$W_ANON1")) (pid $W_PID)"
if [ -n "$PATRONI" ]; then
    P_RSS1=$(rss_kb "$P_PID"); P_ANON1=$(anon_kb "$P_PID")
    echo "  Patroni: before load $(mib "$P_RSS0") MiB ($(mib "$P_ANON0")), after load $(mib "$P_RSS1") MiB ($(mib "$P_ANON1")) (pid $P_PID)"
fi
