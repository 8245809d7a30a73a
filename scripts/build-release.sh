#!/usr/bin/env bash
# Builds the release binaries as they ship (target/release): `cargo build --release --bins`,
# then the fence guard again, linked statically (`-C target-feature=+crt-static`).
#
# Why static: the guard runs beside every agent for the agent's whole life and does
# little (read a deadline file, poll, maybe signal a postmaster). Linked dynamically it
# keeps ~370 KiB of libc.so resident for the few libc functions its loop calls (the
# kernel maps code 64 KiB around each faulted page); static, those functions sit in its
# own small text, placed together by crates/warden-agent/guard-hot-symbols.txt
# (build.rs). Cargo has no per-binary rustflags, hence this second step; a plain
# `cargo build --release` gives a working, dynamically linked guard.
#
# Arguments are passed to both cargo calls (e.g. --locked --quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins "$@"
cargo rustc --release -p warden-agent --bin warden-guard "$@" -- -C target-feature=+crt-static
