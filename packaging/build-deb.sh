#!/usr/bin/env bash
# Builds target/warden_<version>_<arch>.deb (amd64 here) from this checkout, without
# debhelper: the release binaries `warden` and `wardenctl`, the systemd unit, a commented
# sample /etc/warden/warden.yml (a conffile; the agent's own --generate-sample-config,
# checked with --validate-config), the README and copyright, and shell completions.
# Usage: packaging/build-deb.sh    (prints the path of the package it built)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "no version in Cargo.toml [workspace.package]" >&2; exit 1; }
arch=$(dpkg --print-architecture)
deb="target/warden_${version}_${arch}.deb"

scripts/build-release.sh --locked --quiet
bin=target/release

root=$(mktemp -d "${TMPDIR:-/tmp}/warden-deb.XXXXXX")
shlib=$(mktemp -d "${TMPDIR:-/tmp}/warden-shlibdeps.XXXXXX")
trap 'rm -rf "$root" "$shlib"' EXIT
chmod 0755 "$root"

install -D -m 0755 "$bin/warden" "$root/usr/bin/warden"
install -D -m 0755 "$bin/wardenctl" "$root/usr/bin/wardenctl"
# The fence guard the agent starts beside itself (found next to /usr/bin/warden).
install -D -m 0755 "$bin/warden-guard" "$root/usr/bin/warden-guard"
install -D -m 0644 packaging/warden.service "$root/lib/systemd/system/warden.service"
# Passwords go into this file: readable by root (and, after postinst, the postgres user) only.
install -d -m 0755 "$root/etc/warden"
"$bin/warden" --generate-sample-config >"$root/etc/warden/warden.yml"
chmod 0640 "$root/etc/warden/warden.yml"
"$bin/warden" --validate-config "$root/etc/warden/warden.yml" >/dev/null
install -D -m 0644 README.md "$root/usr/share/doc/warden/README.md"
install -D -m 0644 packaging/copyright "$root/usr/share/doc/warden/copyright"
install -d -m 0755 "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bin/wardenctl" completion bash >"$root/usr/share/bash-completion/completions/wardenctl"
"$bin/wardenctl" completion zsh >"$root/usr/share/zsh/vendor-completions/_wardenctl"
"$bin/wardenctl" completion fish >"$root/usr/share/fish/vendor_completions.d/wardenctl.fish"
chmod 0644 "$root"/usr/share/*/*completion*/*

# Depends: the packages of the shared libraries the binaries link, from dpkg-shlibdeps
# (dpkg-dev) when it is there; else each NEEDED library's package (dpkg -S), libc6 with
# the highest GLIBC_x.y symbol version the binaries use.
bins=("$root/usr/bin/warden" "$root/usr/bin/wardenctl" "$root/usr/bin/warden-guard")
depends=""
if command -v dpkg-shlibdeps >/dev/null 2>&1 && [ -z "${WARDEN_DEB_NO_SHLIBDEPS:-}" ]; then
    mkdir -p "$shlib/debian"
    printf 'Source: warden\n\nPackage: warden\nArchitecture: any\n' >"$shlib/debian/control"
    depends=$(cd "$shlib" && dpkg-shlibdeps -O "${bins[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
if [ -z "$depends" ]; then
    glibc=$(objdump -T "${bins[@]}" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    pkgs=()
    for lib in $(objdump -p "${bins[@]}" | awk '$1 == "NEEDED" { print $2 }' | sort -u); do
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
        path=$(readlink -f "${path:?$lib not found by ldconfig}")
        pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null || dpkg -S "${path#/usr}")
        pkgs+=("${pkg%%:*}")
    done
    for pkg in $(printf '%s\n' "${pkgs[@]}" | sort -u); do
        if [ "$pkg" = libc6 ]; then
            pkg="libc6 (>= ${glibc:?no GLIBC symbol versions found})"
        fi
        depends="${depends:+$depends, }$pkg"
    done
fi

install -d -m 0755 "$root/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: warden
Version: $version
Architecture: $arch
Maintainer: Warden maintainers <maintainers@users.noreply.b-seed-91710567.example>
Installed-Size: $installed_size
Depends: $depends
Recommends: postgresql-15 | postgresql
Suggests: pgbouncer, haproxy, etcd-client
Section: database
Priority: optional
Description: high availability for PostgreSQL, a drop-in replacement for Patroni
 Warden keeps a PostgreSQL cluster's primary and replicas in their roles using
 etcd, reads Patroni's patroni.yml, serves Patroni's REST API and can replace
 Patroni node by node. wardenctl is a patronictl-compatible command line.
 .
 The systemd unit (warden.service) runs /usr/bin/warden /etc/warden/warden.yml as
 the postgres user; it is neither enabled nor started on installation.
EOF
echo /etc/warden/warden.yml >"$root/DEBIAN/conffiles"
install -m 0755 packaging/postinst "$root/DEBIAN/postinst"
install -m 0755 packaging/postrm "$root/DEBIAN/postrm"
# md5sums of everything but the conffiles (dpkg tracks those itself).
(cd "$root" && find usr lib -type f -printf '%p\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
