#!/usr/bin/env bash
# CI check of the Debian package, without systemctl: builds it (packaging/build-deb.sh),
# installs it with dpkg -i, checks the files and their modes, the binaries, the sample
# configuration, the bash completion and the unit (systemd-analyze verify, when present),
# then removes and purges it and checks that nothing is left. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "check-deb.sh installs a package: run it as root" >&2
    exit 1
fi
if dpkg -s warden >/dev/null 2>&1; then
    echo "a warden package is installed already; not touching it" >&2
    exit 1
fi

checks=0
fail() {
    echo "check-deb: FAILED: $*" >&2
    exit 1
}
ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
deb=$(packaging/build-deb.sh)
[ "$deb" = "target/warden_${version}_$(dpkg --print-architecture).deb" ] || fail "unexpected package name $deb"
ok "built $deb ($(du -h "$deb" | cut -f1))"

# Whatever fails below, the package does not stay installed.
trap 'dpkg --purge warden >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
ok "dpkg -i"

[ "$(dpkg-query -W -f='${Status}' warden)" = "install ok installed" ] || fail "dpkg -s warden: not installed"
dpkg -s warden | grep -q "^Version: $version$" || fail "dpkg -s warden: version is not $version"
dpkg -s warden | grep -Eq '^Depends: .*libc6 \(>= [0-9.]+\)' || fail "dpkg -s warden: no libc6 dependency"
ok "dpkg -s warden: $(dpkg -s warden | grep '^Depends:')"

if id postgres >/dev/null 2>&1; then owner=postgres:postgres; else owner=root:root; fi
expect() { # path mode owner
    [ -e "$1" ] || fail "$1 missing"
    local got
    got=$(stat -c '%a %U:%G' "$1")
    [ "$got" = "$2 $3" ] || fail "$1: mode/owner $got, expected $2 $3"
    ok "$1 $got"
}
expect /usr/bin/warden 755 root:root
expect /usr/bin/wardenctl 755 root:root
expect /usr/bin/warden-guard 755 root:root
expect /lib/systemd/system/warden.service 644 root:root
if [ "$owner" = postgres:postgres ]; then
    expect /etc/warden 750 "$owner"
else
    expect /etc/warden 755 "$owner"
fi
expect /etc/warden/warden.yml 640 "$owner"
expect /usr/share/doc/warden/README.md 644 root:root
expect /usr/share/doc/warden/copyright 644 root:root
expect /usr/share/bash-completion/completions/wardenctl 644 root:root
grep -qx '/etc/warden/warden.yml' /var/lib/dpkg/info/warden.conffiles || fail "warden.yml is not a conffile"
ok "/etc/warden/warden.yml is a conffile"

out=$(warden --version) || fail "warden --version failed"
[ "$out" = "warden $version" ] || fail "warden --version: $out"
ok "warden --version: $out"
out=$(wardenctl --version) || fail "wardenctl --version failed"
[ "$out" = "wardenctl $version" ] || fail "wardenctl --version: $out"
ok "wardenctl --version: $out"
# The guard refuses to run unless started the way the agent starts it.
out=$(warden-guard 2>&1) && fail "warden-guard without arguments exited 0"
[[ "$out" == "usage: warden-guard --fence-guard"* ]] || fail "warden-guard without arguments: $out"
ok "warden-guard without arguments: usage, exit non-zero"
# As the user the unit runs the agent as: the file must be readable by it, too.
as_agent=()
[ "$owner" = postgres:postgres ] && as_agent=(runuser -u postgres --)
out=$("${as_agent[@]}" warden --validate-config /etc/warden/warden.yml) ||
    fail "warden --validate-config /etc/warden/warden.yml: $out"
ok "${as_agent[*]} warden --validate-config: $out"

# The installed bash completion completes subcommands.
words=$(bash -c '. /usr/share/bash-completion/completions/wardenctl
    COMP_WORDS=(wardenctl swi); COMP_CWORD=1; COMP_LINE="wardenctl swi"; COMP_POINT=${#COMP_LINE}
    _wardenctl wardenctl swi wardenctl; echo "${COMPREPLY[*]}"')
[ "$words" = switchover ] || fail "bash completion of 'wardenctl swi': '$words'"
ok "bash completion: wardenctl swi<TAB> -> $words"

if command -v systemd-analyze >/dev/null 2>&1; then
    # It reports a misspelt setting and carries on (exit 0): any output is a failure.
    out=$(systemd-analyze verify /lib/systemd/system/warden.service 2>&1) ||
        fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    ok "systemd-analyze verify warden.service: no complaint"
else
    echo "skip: systemd-analyze not installed, the unit is not verified"
fi

dpkg -r warden >/dev/null || fail "dpkg -r warden"
for f in /usr/bin/warden /usr/bin/wardenctl /usr/bin/warden-guard /lib/systemd/system/warden.service \
    /usr/share/doc/warden /usr/share/bash-completion/completions/wardenctl; do
    [ ! -e "$f" ] || fail "$f left after dpkg -r"
done
[ -f /etc/warden/warden.yml ] || fail "dpkg -r removed the conffile (only purge may)"
ok "dpkg -r: files gone, configuration kept"
dpkg --purge warden >/dev/null || fail "dpkg --purge warden"
[ ! -e /etc/warden ] || fail "/etc/warden left after purge"
! dpkg -s warden >/dev/null 2>&1 || fail "warden still known to dpkg after purge"
ok "dpkg --purge: /etc/warden gone, package unknown"
trap - EXIT
echo "check-deb: $checks checks passed"
