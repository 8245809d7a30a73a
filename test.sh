#!/usr/bin/env bash
# Runs Warden's whole test suite: unit tests, and end-to-end tests against a real etcd,
# real PostgreSQL 15 and the real patronictl. Installs what is missing when run as root.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
ensure_deps with-patroni
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The Prometheus-parser test must not skip itself when this script installed the parser.
export WARDEN_REQUIRE_PROM_PARSER=1
# The real Patroni agent, for the node-by-node replacement test (which must not skip here).
WARDEN_TEST_PATRONI=$(ensure_patroni_agent)
export WARDEN_TEST_PATRONI WARDEN_REQUIRE_PATRONI=1
# The e2e tests start the built `warden`/`wardenctl` binaries, so build them first.
cargo build --workspace --bins --quiet
# Test binaries run one after another; inside one, at most two clusters run at once.
log=$(mktemp /tmp/warden-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee "$log" || status=$?
# One summary line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
