#!/usr/bin/env bash
# Shared by demo.sh and test.sh: make sure the system packages Warden needs are present.
# As root, install what is missing; otherwise print exactly what to install and fail.

PG_BIN_DIR="${WARDEN_PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"

warden_missing_packages() {
    local missing=()
    if [ "${1:-}" = with-patroni ]; then
        # Only the tests need these: HAProxy routing tests and REST calls from tests.
        command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
        # The pooler of the zero-error switchover test (e2e_pgbouncer).
        [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
        command -v curl >/dev/null 2>&1 || missing+=(curl)
        # The backup tool of the backup/restore tests (e2e_pgbackrest).
        command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)
        # Prometheus and promtool: the monitoring test (e2e_monitoring) and
        # scripts/check-monitoring.sh.
        command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    fi
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
    [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
    [ -x "$PG_BIN_DIR/postgres" ] || missing+=(postgresql-15)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    echo "${missing[@]}"
}

# ensure_deps [with-patroni]
ensure_deps() {
    local missing
    missing=$(warden_missing_packages "${1:-}")
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "Installing missing packages: $missing"
            apt-get update -qq
            # shellcheck disable=SC2086
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
        else
            echo "Missing packages: $missing" >&2
            echo "Install them with: sudo apt-get install -y $missing" >&2
            exit 1
        fi
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust (https://rustup.rs) first" >&2
        exit 1
    fi
    if [ "${1:-}" = with-patroni ] && { ! command -v patronictl >/dev/null 2>&1 ||
        ! python3 -c 'import prometheus_client, psycopg2' >/dev/null 2>&1; }; then
        # The real patronictl is the reference the compatibility tests compare against.
        if [ "$(id -u)" = 0 ] || [ -n "${VIRTUAL_ENV:-}" ]; then
            echo "Installing patroni[etcd3] (reference patronictl for compatibility tests)"
            python3 -m pip install -q 'patroni[etcd3]' psycopg2-binary prometheus-client >/dev/null 2>&1 ||
                python3 -m pip install -q --break-system-packages 'patroni[etcd3]' psycopg2-binary prometheus-client
        else
            echo "patronictl not found: install it with: pip install 'patroni[etcd3]' psycopg2-binary prometheus-client" >&2
            exit 1
        fi
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "Running as root but there is no 'postgres' user (PostgreSQL refuses to run as root)." >&2
        echo "Install postgresql-15 (it creates the user) or: useradd --system postgres" >&2
        exit 1
    fi
}

# ensure_patroni_agent: prints the path of a `patroni` (the agent, for the mixed-cluster
# test and the benchmarks) that the user running PostgreSQL can execute: $PATRONI_BIN if
# set, else the one on PATH. As root that user is postgres: a pip install under /root
# (pyenv) is not readable by it, so the same version goes into a venv under /opt once.
# Prints nothing when Patroni is not installed.
ensure_patroni_agent() {
    local p ver venv=/opt/warden/patroni-venv
    if [ -n "${PATRONI_BIN:-}" ]; then
        echo "$PATRONI_BIN"
        return 0
    fi
    p=$(command -v patroni 2>/dev/null) || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "$p"
        return 0
    fi
    if setpriv --reuid=postgres --regid=postgres --init-groups -- "$p" --version >/dev/null 2>&1; then
        echo "$p"
        return 0
    fi
    ver=$("$p" --version | awk '{print $2}')
    if ! setpriv --reuid=postgres --regid=postgres --init-groups -- "$venv/bin/patroni" --version 2>/dev/null | grep -q "$ver"; then
        echo "Installing patroni $ver into $venv (runnable by postgres)" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        if ! /usr/bin/python3 -m venv "$venv" >&2; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv"
            /usr/bin/python3 -m venv "$venv" >&2 || return 0
        fi
        "$venv/bin/pip" install -q "patroni[etcd3]==$ver" psycopg2-binary >&2
    fi
    echo "$venv/bin/patroni"
}

