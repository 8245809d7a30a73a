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
    CARGO_INCREMENTAL=0 cargo build --release --bins --quiet
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
status=0
for ctl in ${WARDEN_CONFORMANCE_CTL:-patronictl wardenctl}; do
    echo "== Patroni acceptance suite, agent $AGENT, CLI $ctl: $features"
    env_ctl=()
    [ "$ctl" = wardenctl ] && env_ctl=(CTL_BIN="$CTL")
    set +e
    env AGENT_BIN="$AGENT" "${env_ctl[@]}" FEATURES="$features" CI_TIMEOUTS=1 TLS=1 \
        RESULTS_DIR="$OUT/$ctl" SUITE_TIMEOUT="${WARDEN_CONFORMANCE_TIMEOUT:-2400}" \
        "$SUITE_DIR/run.sh" >"$OUT/$ctl.log" 2>&1
    rc=$?
    set -e
    # run.sh's own summary (one line per feature, then "N passed, M failed").
    sed -n '/^feature  /,$p' "$OUT/$ctl.log" | grep -v '^run.sh: ' || tail -n 20 "$OUT/$ctl.log"
    if ! python3 scripts/conformance_check.py "$CLAIMED" "$OUT/$ctl/junit" "$features" "$rc"; then
        status=1
        echo "   logs: $OUT/$ctl.log and $OUT/$ctl/ (agent and PostgreSQL logs per feature)"
    fi
done
[ "$status" = 0 ] && rm -rf "$OUT"
exit "$status"
