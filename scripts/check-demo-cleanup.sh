#!/usr/bin/env bash
# Checks that Ctrl-C on `./demo.sh 2>&1 | tee demo.log` stops and removes everything.
#
# The demo pipeline runs in a session of its own (setsid), like a shell's foreground job:
# once the cluster is up, SIGINT goes to its whole process group, as the terminal's
# Ctrl-C would, so tee dies too and demo.sh's output becomes a broken pipe. Then, within
# CHECK_DEMO_STOP_SECONDS (default 45), no process of the demo may remain (by PID: the
# pipeline, etcd, the agents, their fence guards, every PostgreSQL process), its temp dir
# must be gone, and the leader must have released its lock while etcd was still up.
# WARDEN_DEMO_BASE_PORT defaults to 26000 here, away from a demo someone runs by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
stop_bound=${CHECK_DEMO_STOP_SECONDS:-45}
up_bound=${CHECK_DEMO_UP_SECONDS:-300}

work=$(mktemp -d /tmp/warden-demo-check.XXXXXX)
out="$work/demo.out"
stop_log="$work/stop.log"
demo_sid=""
pids=()
demo_tmp=""

# Session id of PID (field 6 of /proc/PID/stat; the command name before it may contain
# spaces, so count from the closing parenthesis).
sid_of() {
    local stat
    stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "$4"
}

# Is PID a live process (not a zombie waiting to be reaped)?
alive() {
    local stat
    stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Every live process of the demo: its session (the pipeline and demo.sh's own children),
# processes whose command line names its temp dir (etcd, agents, fence guards, the
# postmasters), and their descendants (PostgreSQL's backends and auxiliary processes,
# which sit in sessions of their own). This script's own session is left out.
demo_pids() {
    local own p stat parent
    own=$(sid_of $$)
    local -A ppid=() members=()
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        stat=$(cat 2>/dev/null "/proc/$p/stat") || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        [ "$1" = Z ] || [ "$4" = "$own" ] && continue
        ppid[$p]=$2
        if [ "$4" = "$demo_sid" ] || {
            [ -n "$demo_tmp" ] && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" == *"$demo_tmp"* ]]
        }; then
            members[$p]=1
        fi
    done
    # Descendants, until nothing is added (a process tree is a few levels deep).
    local added=1
    while [ "$added" = 1 ]; do
        added=0
        for p in "${!ppid[@]}"; do
            parent=${ppid[$p]}
            if [ -z "${members[$p]:-}" ] && [ -n "${members[$parent]:-}" ]; then
                members[$p]=1
                added=1
            fi
        done
    done
    for p in "${!members[@]}"; do
        echo "$p"
    done
}

finish() {
    local rc=$? p
    trap - EXIT
    # After a failure, leave nothing behind either: the PIDs seen, then the temp dir.
    for p in "${pids[@]}" $(demo_pids 2>/dev/null); do
        alive "$p" && kill -KILL "$p" 2>/dev/null
    done
    [ -n "$demo_tmp" ] && rm -rf "$demo_tmp"
    rm -rf "$work"
    exit "$rc"
}
trap finish EXIT

fail() {
    echo "check-demo-cleanup: FAIL: $*" >&2
    echo "--- demo output ---" >&2
    tail -n 30 "$out" >&2 || true
    echo "--- clean-up messages ---" >&2
    cat "$stop_log" >&2 || true
    exit 1
}

# Built first so that the bounds below time the demo, not cargo.
cargo build --workspace --bins --quiet

# A background job of a script starts with SIGINT ignored, and bash cannot trap a signal
# ignored on entry: `env --default-signal` gives the pipeline the default, as a terminal's
# foreground job has. setsid execs without forking (a background job of a script is no
# group leader), so the session and process group id is $!.
# shellcheck disable=SC2016 # $1 is expanded by the inner bash
WARDEN_DEMO_BASE_PORT=${WARDEN_DEMO_BASE_PORT:-26000} WARDEN_DEMO_STOP_LOG="$stop_log" \
    env --default-signal=INT,QUIT setsid bash -c './demo.sh 2>&1 | tee "$1" >/dev/null' \
    check-demo "$out" </dev/null &
demo_sid=$!

t0=$SECONDS
until grep -q "Warden demo cluster 'demo' is up" "$out" 2>/dev/null; do
    alive "$demo_sid" || fail "demo.sh ended before the cluster was up"
    [ $((SECONDS - t0)) -lt "$up_bound" ] || fail "the cluster was not up within ${up_bound}s"
    sleep 0.5
done
demo_tmp=$(grep -o "data in /tmp/warden-demo\.[A-Za-z0-9]*" "$out" | head -n 1)
demo_tmp=${demo_tmp#data in }
[ -d "$demo_tmp" ] || fail "no temp dir found in the demo's output"
mapfile -t pids < <(demo_pids)
echo "check-demo-cleanup: cluster up in $((SECONDS - t0))s; ${#pids[@]} processes, $demo_tmp"
[ "${#pids[@]}" -ge 10 ] || fail "expected etcd, 3 agents and 3 PostgreSQL servers, found ${#pids[@]} processes"

# Ctrl-C: SIGINT to the whole foreground process group (bash, demo.sh, tee, sleep).
kill -INT -- "-$demo_sid"
t1=$SECONDS
while :; do
    left=()
    for p in "${pids[@]}" $(demo_pids); do
        alive "$p" && left+=("$p")
    done
    [ "${#left[@]}" = 0 ] && [ ! -e "$demo_tmp" ] && break
    if [ $((SECONDS - t1)) -ge "$stop_bound" ]; then
        for p in "${left[@]}"; do
            echo "left: $p $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" >&2
        done
        [ -e "$demo_tmp" ] && echo "left: $demo_tmp" >&2
        fail "${#left[@]} processes or the temp dir left ${stop_bound}s after Ctrl-C"
    fi
    sleep 0.2
done
took=$((SECONDS - t1))
wait "$demo_sid" 2>/dev/null || true
sed -n "/./s/^/check-demo-cleanup: demo.sh: /p" "$stop_log"
grep -q "^Stopping the demo (SIGINT)" "$stop_log" || fail "no 'Stopping the demo' message"
grep -q "released the leader lock" "$stop_log" ||
    fail "the leader did not release its lock (etcd stopped first?)"
grep -q "^Demo stopped and $demo_tmp removed" "$stop_log" || fail "no final message"
echo "check-demo-cleanup: OK: everything stopped and removed ${took}s after Ctrl-C"
