#!/usr/bin/env bash
# Builds the static antemx binary (glibc, crt-static, LTO, stripped) and the
# release tarball target/dist/antemx-VERSION-x86_64-linux.tar.gz.
#
#   packaging/build.sh                 build, check, pack
#   SKIP_CARGO=1 packaging/build.sh    check and pack the binary already built
#
# Checks, each fatal: `file` says the binary is statically linked, ldd finds
# nothing to load, and the binary runs `check-config` inside an otherwise
# empty root directory (no libc, no loader, no /etc, no /proc), traced: it
# must not look for any NSS file (nsswitch.conf, libnss_*, /etc/hosts,
# /etc/passwd, ...), i.e. it runs on a machine without any of the build's
# libraries. packaging/test.sh runs a whole node that way too.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BIN=target/$TARGET/release/antemx
DIST=target/dist

die() { echo "build.sh: FAIL: $*" >&2; exit 1; }
say() { echo "build.sh: $*"; }

need_apt() { # need_apt COMMAND PACKAGE: installs PACKAGE when COMMAND is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    say "installing $2 (for $1)"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq "$2" >/dev/null
}
need_apt file file
need_apt strings binutils
need_apt unshare util-linux
need_apt strace strace

VERSION=$(awk -F'"' '/^\[/{p=($0=="[package]")} p&&/^version *=/{print $2; exit}' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml [package]"

if [ -z "${SKIP_CARGO:-}" ]; then
    say "cargo build --release --target $TARGET (static, LTO)"
    mkdir -p target
    start=$(date +%s)
    # The explicit --target keeps RUSTFLAGS off build scripts and proc-macros
    # (which must stay dynamic) and applies them to the antemx binary only.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --target "$TARGET" || die "cargo build failed"
    say "cargo build took $(( $(date +%s) - start ))s"
fi
[ -x "$BIN" ] || die "$BIN is missing: run without SKIP_CARGO"

# 1. Statically linked. file(1) says "static-pie linked" for a static PIE
#    (what rustc builds for crt-static on this target), "statically linked"
#    for a non-PIE static binary: both have no interpreter and no libraries.
kind=$(file -b "$BIN")
say "file: $kind"
case "$kind" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$BIN is not statically linked: $kind" ;;
esac
case "$kind" in *"not stripped"*) die "$BIN is not stripped" ;; esac
case "$kind" in *"interpreter"*) die "$BIN asks for a dynamic loader: $kind" ;; esac

# 2. ldd: no libraries to load. (ldd on a static PIE says "statically linked",
#    on a non-PIE static binary "not a dynamic executable".)
ldd_out=$(ldd "$BIN" 2>&1 || true)
say "ldd: $ldd_out"
case "$ldd_out" in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) die "ldd lists libraries: $ldd_out" ;;
esac

# 3. NSS. glibc's getaddrinfo is linked in (Rust std's ToSocketAddrs for
#    strings, used by ureq's default resolver): it would read
#    /etc/nsswitch.conf and dlopen libnss_* for a *host name*. antemx only
#    hands it IP literals, which std parses without calling it, so nothing
#    loads at run time; the traced runs below and in test.sh prove it.
if strings -a "$BIN" | grep -qE 'libnss_|nsswitch\.conf'; then
    say "note: NSS code is linked (getaddrinfo), not used at run time: see the traced empty-root run"
fi

# 4. Runs where nothing else is: a root directory holding only the binary and
#    a config file. chroot in a private mount namespace; env -i so nothing
#    leaks in through the environment.
if [ "$(id -u)" = 0 ]; then
    jail=$(mktemp -d)
    trap 'rm -rf "$jail"' EXIT
    cp "$BIN" "$jail/antemx"
    cat >"$jail/antemx.toml" <<'EOF'
[node]
hostname = "mx.example.com"
data_dir = "/data"

[[domain]]
name = "example.com"
deliver_to = "192.0.2.25:25"
EOF
    in_jail=(env -i "$(command -v unshare)" --mount --fork "$(command -v chroot)" "$jail")
    trace=$(mktemp)
    out=$(strace -f -qq -e trace=%file -o "$trace" "${in_jail[@]}" /antemx check-config --config /antemx.toml 2>&1) \
        || die "the binary does not run in an empty root: $out"
    say "empty root: $out"
    # File accesses of antemx itself (after chroot's execve of /antemx).
    nss=$(awk '/execve\("\/antemx"/{f=1} f' "$trace" \
        | grep -E 'nsswitch|libnss|/etc/(hosts|passwd|group|gai\.conf|host\.conf|services)|ld\.so|\.so[."]' || true)
    rm -f "$trace"
    [ -z "$nss" ] || die "antemx looked for NSS or shared-library files: $nss"
    out=$("${in_jail[@]}" /antemx --help 2>&1) || die "antemx --help fails in an empty root: $out"
    [ "$(find "$jail" -mindepth 1 | wc -l)" = 2 ] || die "the binary wrote files into the empty root"
    rm -rf "$jail"
    trap - EXIT
else
    say "not root: skipping the empty-root run"
fi

# The tarball: one top directory, the files an operator needs.
name=antemx-$VERSION-x86_64-linux
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/examples"
install -m 0755 "$BIN" "$stage/$name/antemx"
install -m 0644 systemd/antemx.service "$stage/$name/antemx.service"
install -m 0644 examples/antemx.toml examples/cluster.toml examples/onboarding.md "$stage/$name/examples/"
install -m 0644 packaging/antemx.toml "$stage/$name/antemx.toml"
install -m 0644 LICENSE README.md "$stage/$name/"
mkdir -p "$DIST"
tarball=$DIST/$name.tar.gz
# Reproducible: fixed owner, order and times (the last commit's, if any).
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C "$stage" -cf - "$name" | gzip -9n >"$tarball"
rm -rf "$stage"
trap - EXIT
say "$tarball ($(du -h "$tarball" | cut -f1)); binary $(du -h "$BIN" | cut -f1)"
tar -tzf "$tarball" | sed 's/^/build.sh:   /'
