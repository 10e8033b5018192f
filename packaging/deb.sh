#!/usr/bin/env bash
# Builds target/dist/antemx_VERSION_amd64.deb with dpkg-deb from the static
# binary that packaging/build.sh made (run first; this runs it when the
# binary is missing). No cargo plugin, no debhelper: the maintainer scripts
# are in packaging/debian/.
#
#   /usr/bin/antemx                     the static binary
#   /lib/systemd/system/antemx.service  installed disabled and stopped
#   /etc/antemx/antemx.toml             conffile (packaging/antemx.toml)
#   /usr/share/doc/antemx/              README.md, copyright, changelog.gz,
#                                       examples/antemx.toml
# DEB_MAINTAINER="Name <address>" sets the Maintainer field.
# postinst creates the antemx system user and /var/lib/antemx (0750).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BIN=target/$TARGET/release/antemx
DIST=target/dist

die() { echo "deb.sh: FAIL: $*" >&2; exit 1; }
say() { echo "deb.sh: $*"; }

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (a Debian system is assumed)"
[ -x "$BIN" ] || packaging/build.sh
case "$(file -b "$BIN")" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$BIN is not statically linked; run packaging/build.sh" ;;
esac

VERSION=$(awk -F'"' '/^\[/{p=($0=="[package]")} p&&/^version *=/{print $2; exit}' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml [package]"
# Set DEB_MAINTAINER to a real "Name <address>" for a published package.
MAINTAINER=${DEB_MAINTAINER:-antemx maintainers <antemx@localhost>}
# A SemVer pre-release (1.0.0-rc.1) must sort before the release in dpkg: ~.
DEB_VERSION=${VERSION//-/\~}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/antemx
umask 022

install -D -m 0755 "$BIN" "$root/usr/bin/antemx"
install -D -m 0644 systemd/antemx.service "$root/lib/systemd/system/antemx.service"
install -D -m 0644 packaging/antemx.toml "$root/etc/antemx/antemx.toml"
doc=$root/usr/share/doc/antemx
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 -t "$doc/examples" examples/antemx.toml examples/cluster.toml examples/onboarding.md
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: antemx"
    echo
    echo "Files: *"
    echo "Copyright: the antemx authors"
    echo "License: MIT"
    sed -e 's/^$/./' -e 's/^/ /' LICENSE
} >"$doc/copyright"
date_rfc2822=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'antemx (%s) unstable; urgency=medium\n\n  * Release %s; see README.md.\n\n -- %s  %s\n' \
    "$DEB_VERSION" "$VERSION" "$MAINTAINER" "$date_rfc2822" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz" "$doc/copyright"

mkdir -p "$root/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: antemx
Version: $DEB_VERSION
Architecture: amd64
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: adduser | passwd
Section: mail
Priority: optional
Description: spam-filtering SMTP MX gateway
 antemx receives the mail of customer domains whose MX records point at it,
 judges it, forwards it to each customer's own server and keeps mail for a
 server that is down in a retry queue. One static binary; the service is
 installed disabled: edit /etc/antemx/antemx.toml, then
 systemctl enable --now antemx.
EOF
echo /etc/antemx/antemx.toml >"$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
    | grep -v '^etc/' | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$DIST"
deb=$DIST/antemx_${DEB_VERSION}_amd64.deb
# Reproducible file times: the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
rm -rf "$stage"
trap - EXIT
say "$deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Architecture\|Installed-Size\|Depends\):/deb.sh:   &/p'
dpkg-deb --contents "$deb" | awk '{print "deb.sh:   " $1, $2, $6}'
