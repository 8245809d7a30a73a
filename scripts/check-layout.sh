#!/usr/bin/env bash
# Checks the release binaries' memory-related layout (CI, after the release build):
# 1. the agent's steady-state functions (crates/warden-agent/hot-symbols.txt, made by
#    scripts/hot-symbols.py) exist in target/release/warden: a list gone stale (a
#    toolchain or dependency upgrade renames symbols) silently costs ~2 MiB per node;
# 2. the linker placed them together (build.rs's --symbol-ordering-file took effect);
# 3. the fence guard binary links libc only (no libm, nothing of the agent's).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CHECK_BIN:-target/release/warden}  # CHECK_BIN: check another build
guard=target/release/warden-guard
list=crates/warden-agent/hot-symbols.txt
[ -x "$bin" ] && [ -x "$guard" ] || cargo build --release --bins --locked --quiet
checks=0
fail() { echo "check-layout: FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; checks=$((checks + 1)); }

read -r listed found span total < <(nm -S --defined-only "$bin" | python3 -c '
import sys
want = {l.strip() for l in open(sys.argv[1]) if l.strip()}
seen = {}
for line in sys.stdin:
    f = line.split()
    if len(f) == 4 and f[3] in want:
        seen[f[3]] = (int(f[0], 16), int(f[1], 16))
lo = min((a for a, s in seen.values()), default=0)
hi = max((a + s for a, s in seen.values()), default=0)
print(len(want), len(seen), hi - lo, sum(s for a, s in seen.values()))
' "$list")
[ "$listed" -gt 0 ] || fail "$list is empty"
[ $((found * 100)) -ge $((listed * 95)) ] ||
    fail "only $found of $listed functions of $list are in $bin: regenerate it (scripts/hot-symbols.py)"
ok "$found of $listed steady-state functions found in $bin"
[ $((span * 100)) -le $((total * 125)) ] ||
    fail "the steady-state functions are spread over $((span / 1024)) KiB for $((total / 1024)) KiB of code: symbol ordering not applied (build.rs)"
ok "they sit together: $((span / 1024)) KiB span for $((total / 1024)) KiB of code"

needed=$(readelf -d "$guard" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
[ "$needed" = "libc.so.6 libgcc_s.so.1 " ] || fail "$guard links: $needed"
ok "$guard links only: $needed"
echo "check-layout: $checks checks passed"
