#!/usr/bin/env bash
# rpm/build.sh OUTDIR [--suse] [--prebuilt DIR] [--glibc-2.28] [--release N] [--without-yara]
#
# Builds the binary RPMs from this tree on any machine with rpmbuild (Debian included: the
# distribution macros come from rpm/macros.fallback or rpm/macros.suse-fallback there).
#   --suse          the SUSE branch of the spec (suse_version 1600)
#   --prebuilt DIR  package bulwarkd, bulwarkctl, bulwark-sendmail and bulwark-console from DIR instead of
#                   building them inside rpmbuild from vendored crates (one release build can
#                   then serve several packages)
#   --glibc-2.28    build the binaries with `cargo zigbuild` against glibc 2.28, so they run on
#                   RHEL 8 and SLES 15 too (needs `pip install ziglang cargo-zigbuild`)
#   --release N     the package release number (default 1)
#   --without-yara  build inside rpmbuild without the YARA feature (the spec's `--without yara`):
#                   yara-x is most of a clean release build, and CI's short mode proves the
#                   offline vendored build without it
set -euo pipefail
usage() { echo "usage: $0 OUTDIR [--suse] [--prebuilt DIR] [--glibc-2.28] [--release N] [--without-yara]" >&2; exit 64; }
[ $# -ge 1 ] || usage
out=$(realpath -m "$1"); shift
repo=$(cd "$(dirname "$0")/.." && pwd)
suse="" prebuilt="" glibc228="" release="" without_yara=""
while [ $# -gt 0 ]; do
    case "$1" in
        --suse) suse=1 ;;
        --prebuilt) [ $# -ge 2 ] || usage; prebuilt=$(realpath "$2"); shift ;;
        --glibc-2.28) glibc228=1 ;;
        --release) [ $# -ge 2 ] || usage; release="$2"; shift ;;
        --without-yara) without_yara=1 ;;
        *) usage ;;
    esac
    shift
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
top="$work/rpmbuild"
mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS} "$out"

if [ -n "$glibc228" ]; then
    (cd "$repo" && cargo zigbuild --release --bins --features bulwark-mta/yara \
        --target x86_64-unknown-linux-gnu.2.28)
    prebuilt="$repo/target/x86_64-unknown-linux-gnu/release"
fi

# Source0: the tracked (and new, not ignored) files of the tree.
# Outside a git checkout (an exported tree): everything but build output.
if git -C "$repo" rev-parse --show-toplevel 2>/dev/null | grep -qx "$repo"; then
    (cd "$repo" && git ls-files --cached --others --exclude-standard -z)
else
    (cd "$repo" && find . -path ./target -prune -o -type f -printf '%P\0')
fi | tar -C "$repo" --null -T - --transform "s,^,bulwark-$version/," -czf "$top/SOURCES/bulwark-$version.tar.gz"
# Source1: the vendored crates, so rpmbuild needs no network. Empty with --prebuilt.
mkdir -p "$work/vendor"
if [ -z "$prebuilt" ]; then
    (cd "$repo" && cargo vendor --locked --versioned-dirs "$work/vendor" >/dev/null)
fi
tar -C "$work" -czf "$top/SOURCES/bulwark-$version-vendor.tar.gz" vendor
cp "$repo/packaging/bulwark.sysusers" "$repo/packaging/bulwark-console.sysusers" "$top/SOURCES/"
cp "$repo/rpm/bulwark.spec" "$top/SPECS/"

args=(-bb --define "_topdir $top")
if ! rpm --eval '%{?_unitdir}' | grep -q .; then
    # No distribution macros (Debian): load the fallback, skip BuildRequires (empty rpmdb).
    if [ -n "$suse" ]; then
        args+=(--load "$repo/rpm/macros.suse-fallback")
    else
        args+=(--load "$repo/rpm/macros.fallback")
    fi
    args+=(--nodeps)
fi
# No selinux-policy macros (Debian): the bulwark-selinux scriptlets use the fallback.
if ! rpm --eval '%{?selinux_modules_install:yes}' | grep -q yes; then
    args+=(--load "$repo/rpm/macros.selinux-fallback")
fi
[ -n "$suse" ] && args+=(--define "suse_version 1600" --define "dist .suse")
[ -n "$prebuilt" ] && args+=(--define "prebuilt $prebuilt")
[ -n "$release" ] && args+=(--define "rel $release")
[ -n "$without_yara" ] && args+=(--without yara)
rpmbuild "${args[@]}" "$top/SPECS/bulwark.spec"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls "$out"/*.rpm
