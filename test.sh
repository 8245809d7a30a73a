#!/usr/bin/env bash
# Runs Warden's whole test suite: unit tests, and end-to-end tests against a real etcd,
# real PostgreSQL 15 and the real patronictl. Installs what is missing when run as root.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
ensure_deps with-patroni
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The e2e tests start the built `warden`/`wardenctl` binaries, so build them first.
cargo build --workspace --bins --quiet
# Test binaries run one after another; inside one, at most two clusters run at once.
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"
