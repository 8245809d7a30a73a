#!/usr/bin/env bash
# Starts a local Warden demo: a real etcd and three PostgreSQL 15 nodes, each under a
# `warden` agent, all on 127.0.0.1 in a temp dir. Prints the cluster and how to connect,
# then waits; Ctrl-C stops every process and removes the temp dir.
# WARDEN_DEMO_SECONDS=N stops it by itself after N seconds (used by CI).
set -euo pipefail
cd "$(dirname "$0")"
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
AS=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
PIDS=()

cleanup() {
    trap - EXIT INT TERM
    echo; echo "Stopping the demo..."
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 100); do
        alive=0
        for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
    # Agents leave PostgreSQL running only when they are killed: stop any postmaster left.
    for pidfile in "$TMP"/pg*/data/postmaster.pid; do
        [ -f "$pidfile" ] && kill -QUIT "$(head -1 "$pidfile")" 2>/dev/null || true
    done
    [ -n "${ETCD_PID:-}" ] && kill -KILL "$ETCD_PID" 2>/dev/null || true
    sleep 0.5
    rm -rf "$TMP"
    echo "Demo stopped and $TMP removed."
}
trap cleanup EXIT INT TERM

etcd --name demo --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "demo=http://127.0.0.1:$ETCD_PEER" >"$TMP/etcd.log" 2>&1 &
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
    (cd "$TMP/pg$i" && exec "${AS[@]}" env HOME="$TMP/pg$i" "$WARDEN" "$TMP/pg$i/warden.yml" >>"$TMP/pg$i/warden.log" 2>&1) &
    PIDS+=($!)
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
if [ -n "${WARDEN_DEMO_SECONDS:-}" ]; then
    sleep "$WARDEN_DEMO_SECONDS"
else
    while true; do sleep 3600; done
fi
