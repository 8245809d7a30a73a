#!/usr/bin/env bash
# Checks the release binaries' memory-related layout (CI, after scripts/build-release.sh):
# 1. the steady-state functions of the agent (crates/warden-agent/hot-symbols.txt) and
#    of the fence guard (guard-hot-symbols.txt), made by scripts/hot-symbols.py, exist in
#    the binaries: a list gone stale (a toolchain or dependency upgrade renames symbols)
#    silently costs ~2 MiB per node;
# 2. the linker placed them together (build.rs's --symbol-ordering-file took effect);
# 3. the fence guard is linked statically (scripts/build-release.sh): no shared library,
#    nothing of the agent's.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CHECK_BIN:-target/release/warden}  # CHECK_BIN: check another build
guard=${CHECK_GUARD_BIN:-target/release/warden-guard}
[ -x "$bin" ] && [ -x "$guard" ] || scripts/build-release.sh --locked --quiet
checks=0
fail() { echo "check-layout: FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; checks=$((checks + 1)); }

# check_order BINARY LIST: the listed functions exist and sit together.
check_order() {
    local binary=$1 list=$2 listed found span total
    read -r listed found span total < <(nm -S --defined-only "$binary" | python3 -c '
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
        fail "only $found of $listed functions of $list are in $binary: regenerate it (scripts/hot-symbols.py)"
    ok "$found of $listed steady-state functions found in $binary"
    [ $((span * 100)) -le $((total * 125)) ] ||
        fail "the steady-state functions of $binary are spread over $((span / 1024)) KiB for $((total / 1024)) KiB of code: symbol ordering not applied (build.rs)"
    ok "they sit together: $((span / 1024)) KiB span for $((total / 1024)) KiB of code"
}

check_order "$bin" crates/warden-agent/hot-symbols.txt
check_order "$guard" crates/warden-agent/guard-hot-symbols.txt

needed=$(readelf -d "$guard" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[ -z "$needed" ] || fail "$guard links shared libraries ($needed): build it with scripts/build-release.sh"
! readelf -lW "$guard" | grep -q INTERP || fail "$guard asks for a dynamic loader"
ok "$guard is linked statically"
echo "check-layout: $checks checks passed"
