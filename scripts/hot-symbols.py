#!/usr/bin/env python3
"""Lists the functions of the agent binary that its steady state runs, for the linker's
symbol ordering (crates/warden-agent/hot-symbols.txt, used by its build.rs).

Why: most of an idle agent's resident memory is its own code, and the kernel maps code
64 KiB at a time around each page it faults in ("fault-around"). Spread over the whole
4 MiB of text, the few hundred functions an HA cycle and a health check run keep ~3 MiB
resident. Placed together by the linker (lld --symbol-ordering-file), they keep a
fraction of that; what runs once (start-up, a bootstrap) is released after use
(warden_guard::memory).

How: one uprobe per function of the binary (tracefs, as root), enabled while the caller
runs the workload; the functions with at least one hit are the steady set.

    scripts/hot-symbols.py start BINARY       # place and enable the probes, before the
                                              # agents start (enabling on a running
                                              # process costs ~60 ms per probe)
    ... start the agents (e.g. bench/footprint.py with BENCH_HOLD=1), wait until steady ...
    scripts/hot-symbols.py mark > /tmp/a      # hit counts so far (start-up)
    ... the steady workload: idle HA cycles, health checks, metrics scrapes ...
    scripts/hot-symbols.py mark > /tmp/b
    scripts/hot-symbols.py clear              # after stopping the agents
    scripts/hot-symbols.py list BINARY /tmp/a /tmp/b > crates/warden-agent/hot-symbols.txt

The fence guard's list (crates/warden-agent/guard-hot-symbols.txt) is made the same way
from its static build (scripts/build-release.sh) with `start target/release/warden-guard`
and an idle cluster between the marks; add `warden_guard::guard::run` by hand: it is
entered once and loops, so no probe fires on it between the marks (its mangled name:
`nm target/release/warden-guard | grep warden_guard5guard3run17h`). Copy both binaries
elsewhere first (e.g. /tmp) and start the agents from there with BENCH_WARDEN_BIN: a
rebuild while probing writes a new file the probes do not see.

The binary must keep its symbol table (the release profile strips only debug info).
Regenerate the list after a toolchain or dependency upgrade: symbol names carry hashes
that then change, and unknown names are ignored by the linker (the layout degrades to
the default, nothing breaks).
"""

import os
import subprocess
import sys

TRACE = "/sys/kernel/tracing"
GROUP = "warden_hot"


def functions(binary):
    """(name, file offset) of every sized function symbol of `binary`."""
    segs = []
    for line in subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            segs.append((int(f[2], 16), int(f[5], 16), int(f[1], 16)))  # vaddr, memsz, offset
    out = []
    nm = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    for line in nm.splitlines():
        f = line.split()
        if len(f) != 4 or f[2] not in ("t", "T", "W", "w"):
            continue
        addr, size, name = int(f[0], 16), int(f[1], 16), f[3]
        if size == 0:
            continue
        for vaddr, memsz, off in segs:
            if vaddr <= addr < vaddr + memsz:
                out.append((name, addr - vaddr + off))
                break
    if not out:
        sys.exit(f"{binary}: no function symbols (stripped?)")
    return out


def events(lines):
    """Appends probe definitions to uprobe_events, one write each (tracefs cannot seek,
    so not Python's append mode)."""
    fd = os.open(f"{TRACE}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        for line in lines:
            os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def clear():
    """Disables and removes every probe of our group (left by an earlier run)."""
    with open(f"{TRACE}/uprobe_events") as fh:
        names = [line.split()[0].split("/", 1)[1] for line in fh if line.startswith(f"p:{GROUP}/")]
    if names:
        # One write for the group (per probe it takes ~60 ms each).
        with open(f"{TRACE}/events/{GROUP}/enable", "w") as fh:
            fh.write("0\n")
    events([f"-:{GROUP}/{name}" for name in names])


def start(binary):
    binary = os.path.realpath(binary)
    funcs = functions(binary)
    clear()
    events([f"p:{GROUP}/f{i} {binary}:0x{off:x}" for i, (_, off) in enumerate(funcs)])
    # One by one: a function whose first instruction uprobes cannot step over
    # (ENOTSUPP) would make enabling the whole group fail.
    enabled = 0
    for i in range(len(funcs)):
        try:
            with open(f"{TRACE}/events/{GROUP}/f{i}/enable", "w") as fh:
                fh.write("1\n")
            enabled += 1
        except OSError:
            pass
    print(f"{enabled} of {len(funcs)} probes enabled on {binary}", file=sys.stderr)


def counts():
    """Hit count of every probe of our group, by function index."""
    hits = {}
    with open(f"{TRACE}/uprobe_profile") as fh:
        for line in fh:
            f = line.split()
            if len(f) == 3 and f[1].startswith("f") and f[1][1:].isdigit():
                hits[int(f[1][1:])] = int(f[2])
    return hits


def mark():
    for i, n in sorted(counts().items()):
        print(i, n)


def read_mark(path):
    with open(path) as fh:
        return {int(a): int(b) for a, b in (line.split() for line in fh if line.strip())}


def steady(binary, first, second):
    """The functions hit between two marks (start-up and shutdown excluded)."""
    funcs = functions(os.path.realpath(binary))
    a, b = read_mark(first), read_mark(second)
    hot = [funcs[i][0] for i in sorted(b) if b[i] > a.get(i, 0) and i < len(funcs)]
    print(f"{len(hot)} of {len(funcs)} functions ran between the marks", file=sys.stderr)
    print("\n".join(hot))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "start" and len(sys.argv) == 3:
        start(sys.argv[2])
    elif cmd == "mark" and len(sys.argv) == 2:
        mark()
    elif cmd == "list" and len(sys.argv) == 5:
        steady(*sys.argv[2:])
    elif cmd == "clear" and len(sys.argv) == 2:
        clear()
    else:
        sys.exit(__doc__)
