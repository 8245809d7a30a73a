#!/usr/bin/env bash
# Runs Patroni's own acceptance suite (../shared/conformance, bundled with its runner) against
# Warden for what `conformance/claimed` lists: TLS on as in production, CI_TIMEOUTS=1, once
# with the real patronictl and once with wardenctl as the CLI. Exit 1 when a claimed
# scenario failed, with the failing scenarios and where their logs are.
#
#   scripts/conformance.sh                 # as CI runs it
#   WARDEN_CONFORMANCE_CTL=wardenctl scripts/conformance.sh   # only one CLI (patronictl|wardenctl)
#   WARDEN_CONFORMANCE_FEATURES="recovery" scripts/conformance.sh   # other features, nothing claimed
#   WARDEN_AGENT_BIN=target/debug/warden scripts/conformance.sh     # another build
#
# Run as root it installs what the suite needs (etcd, openssl, python3-venv) and runs the
# suite as the postgres user; otherwise it says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/deps.sh
ensure_deps

SUITE_DIR=${WARDEN_CONFORMANCE_DIR:-$ROOT/../shared/conformance}
[ -x "$SUITE_DIR/run.sh" ] || { echo "conformance: no runner at $SUITE_DIR/run.sh (set WARDEN_CONFORMANCE_DIR)" >&2; exit 2; }

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "Installing missing packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "Missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

AGENT=${WARDEN_AGENT_BIN:-target/release/warden}
CTL=${WARDEN_CTL_BIN:-target/release/wardenctl}
if [ -z "${WARDEN_AGENT_BIN:-}" ]; then
    CARGO_INCREMENTAL=0 scripts/build-release.sh --quiet
fi

# The claimed list: features to run, and the scenarios that must pass.
CLAIMED="$ROOT/conformance/claimed"
if [ -n "${WARDEN_CONFORMANCE_FEATURES:-}" ]; then
    features=${WARDEN_CONFORMANCE_FEATURES//,/ }
    CLAIMED=/dev/null
else
    features=$(sed -e 's/#.*//' -e 's/:.*//' -e 's/[[:space:]]//g' "$CLAIMED" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
fi
[ -n "${features// /}" ] || { echo "conformance: nothing to run" >&2; exit 2; }

OUT=$(mktemp -d /tmp/warden-conformance.XXXXXX)
chmod 755 "$OUT"
ctls=${WARDEN_CONFORMANCE_CTL:-patronictl wardenctl}

# One run of the suite with one CLI; `$1` is the CLI, the rest a command prefix (e.g. a
# network namespace) it runs under.
run_suite() {
    local ctl=$1; shift
    local env_ctl=()
    [ "$ctl" = wardenctl ] && env_ctl=(CTL_BIN="$CTL")
    local rc=0
    "$@" env AGENT_BIN="$AGENT" "${env_ctl[@]}" FEATURES="$features" CI_TIMEOUTS=1 TLS=1 \
        RESULTS_DIR="$OUT/$ctl" SUITE_TIMEOUT="${WARDEN_CONFORMANCE_TIMEOUT:-2400}" \
        "$SUITE_DIR/run.sh" >"$OUT/$ctl.log" 2>&1 || rc=$?
    echo "$rc" >"$OUT/$ctl.rc"
}

# The suite uses fixed ports, so two runs cannot share a network stack. With
# WARDEN_CONFORMANCE_PARALLEL=1 (as root) the runs for the two CLIs go side by side, the
# second in a network namespace of its own (its own loopback): they mostly wait on
# timeouts, so this nearly halves the suite's wall time (CI: 29.5 min instead of 36.5). Not
# the default: on this 2-core machine the doubled load once made a replica miss a leader
# race that the suite expects it to join (priority_failover). The second starts once the
# first has its Python venv (created on first use, needs the package index, which the
# namespace cannot reach).
netns=""
if [ "$(id -u)" = 0 ] && [ "${WARDEN_CONFORMANCE_PARALLEL:-0}" = 1 ] && [ "$(echo $ctls | wc -w)" = 2 ] \
    && command -v ip >/dev/null 2>&1; then
    netns=warden-conformance-$$
    if ip netns add "$netns" 2>/dev/null && ip netns exec "$netns" ip link set lo up; then
        trap 'ip netns del "$netns" 2>/dev/null || true' EXIT
    else
        ip netns del "$netns" 2>/dev/null || true
        netns=""
    fi
fi

status=0
if [ -n "$netns" ]; then
    set -- $ctls
    echo "== Patroni acceptance suite, agent $AGENT, CLIs $1 and $2 side by side (the second in network namespace $netns): $features"
    run_suite "$1" &
    first=$!
    # Bounded wait for the first run to get past its venv set-up (or to end).
    for _ in $(seq 1 600); do
        grep -q '^run.sh: running ' "$OUT/$1.log" 2>/dev/null && break
        kill -0 "$first" 2>/dev/null || break
        sleep 1
    done
    run_suite "$2" ip netns exec "$netns" &
    second=$!
    wait "$first" "$second" || true
else
    for ctl in $ctls; do
        echo "== Patroni acceptance suite, agent $AGENT, CLI $ctl: $features"
        run_suite "$ctl"
    done
fi

for ctl in $ctls; do
    rc=$(cat "$OUT/$ctl.rc" 2>/dev/null || echo 1)
    echo "-- CLI $ctl"
    # run.sh's own summary (one line per feature, then "N passed, M failed").
    sed -n '/^feature  /,$p' "$OUT/$ctl.log" | grep -v '^run.sh: ' || tail -n 20 "$OUT/$ctl.log"
    if ! python3 scripts/conformance_check.py "$CLAIMED" "$OUT/$ctl/junit" "$features" "$rc"; then
        status=1
        echo "   logs: $OUT/$ctl.log and $OUT/$ctl/ (agent and PostgreSQL logs per feature)"
    fi
done
[ "$status" = 0 ] && rm -rf "$OUT"
exit "$status"
