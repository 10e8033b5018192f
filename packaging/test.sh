#!/usr/bin/env bash
# CI test of the packaging (run by .ci/run, as root, on a throwaway machine):
# builds the static binary, the tarball and the .deb, checks the binary runs
# with no library at all, verifies the systemd unit, then installs, upgrades,
# removes and purges the .deb on this machine with dpkg.
#
# Ends with `packaging: N passed, M failed`; exits non-zero on any failure.
# Re-runnable: a leftover antemx package is purged first.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export LC_ALL=C

T0=$(date +%s)
PASS=0
FAIL=0
FAILED=()
SKIP=0
PIDS=()
TMP=$(mktemp -d)

finish() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$TMP"
    [ "$rc" != 0 ] && [ "$FAIL" = 0 ] && FAIL=1 # an abort counts
    echo "packaging: total time $(( $(date +%s) - T0 ))s"
    if [ "$FAIL" != 0 ]; then
        for f in "${FAILED[@]}"; do echo "packaging: FAILED: $f"; done
    fi
    if [ "${SKIP:-0}" != 0 ]; then echo "packaging: $PASS passed, $FAIL failed, $SKIP skipped"
    else echo "packaging: $PASS passed, $FAIL failed"; fi
    [ "$FAIL" = 0 ] || exit 1
}
trap finish EXIT

ok() { PASS=$((PASS + 1)); echo "packaging: ok   $*"; }
bad() { FAIL=$((FAIL + 1)); FAILED+=("$*"); echo "packaging: FAIL $*" >&2; }
# check DESCRIPTION COMMAND...: runs COMMAND, counts it, shows its output on failure.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else bad "$what"; printf '%s\n' "$out" | sed 's/^/    /' >&2; fi
}
# fatal MESSAGE: a step the rest depends on failed.
fatal() { bad "$*"; echo "packaging: cannot go on" >&2; exit 1; }

[ "$(id -u)" = 0 ] || { echo "packaging/test.sh needs root (dpkg -i, chroot, useradd)" >&2; exit 1; }

# --- tools -----------------------------------------------------------------
missing=()
for pair in file:file systemd-analyze:systemd adduser:adduser useradd:passwd \
    strings:binutils unshare:util-linux setpriv:util-linux strace:strace pgrep:procps python3:python3 dpkg-deb:dpkg; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "packaging: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || fatal "apt-get install ${missing[*]}"
fi

# --- a leftover install ----------------------------------------------------
if dpkg-query -W -f='${Status}' antemx 2>/dev/null | grep -qv 'not-installed'; then
    echo "packaging: purging a leftover antemx package"
    dpkg -P antemx >/dev/null 2>&1 || fatal "dpkg -P of the leftover antemx package"
fi
if getent passwd antemx >/dev/null; then
    echo "packaging: removing a leftover antemx user (a test machine is assumed)"
    userdel antemx 2>/dev/null || true
fi
getent group antemx >/dev/null && groupdel antemx 2>/dev/null
rm -rf /var/lib/antemx /etc/antemx

# --- build -------------------------------------------------------------------
VERSION=$(awk -F'"' '/^\[/{p=($0=="[package]")} p&&/^version *=/{print $2; exit}' Cargo.toml)
DEB_VERSION=${VERSION//-/\~}
BIN=target/x86_64-unknown-linux-gnu/release/antemx
TARBALL=target/dist/antemx-$VERSION-x86_64-linux.tar.gz
DEB=target/dist/antemx_${DEB_VERSION}_amd64.deb
rm -f "$TARBALL" "$DEB"

t=$(date +%s)
if packaging/build.sh; then ok "build.sh: static release build and tarball ($(( $(date +%s) - t ))s)"
else fatal "packaging/build.sh"; fi
t=$(date +%s)
if packaging/deb.sh; then ok "deb.sh: $DEB ($(( $(date +%s) - t ))s)"
else fatal "packaging/deb.sh"; fi

# --- the binary ------------------------------------------------------------
kind=$(file -b "$BIN")
check "file(1): statically linked ($kind)" \
    bash -c 'case "$1" in *"statically linked"*|*"static-pie linked"*) ! grep -q interpreter <<<"$1";; *) false;; esac' _ "$kind"
check "ldd: no dynamic libraries" bash -c 'o=$(ldd "$1" 2>&1); echo "$o"; grep -qE "statically linked|not a dynamic executable" <<<"$o"' _ "$BIN"

tarlist=$(tar -tzf "$TARBALL" 2>&1)
check "tarball holds the binary, unit, configs, LICENSE, README" bash -c '
    for f in antemx antemx.service antemx.toml examples/antemx.toml examples/cluster.toml examples/onboarding.md LICENSE README.md; do
        grep -qx "antemx-$1-x86_64-linux/$f" <<<"$2" || { echo "missing $f in:"; echo "$2"; exit 1; }
    done' _ "$VERSION" "$tarlist"
mkdir -p "$TMP/untar"
tar -xzf "$TARBALL" -C "$TMP/untar"
check "tarball binary is the built binary" cmp "$TMP/untar/antemx-$VERSION-x86_64-linux/antemx" "$BIN"

# An empty root: just the binary and a config. No libc, no loader, no /etc,
# no /proc, no /dev: a machine with none of the build's libraries.
JAIL=$TMP/jail
mkdir -p "$JAIL"
cp "$BIN" "$JAIL/antemx"
cp packaging/antemx.toml "$JAIL/antemx.toml"
IN_JAIL=(env -i "$(command -v unshare)" --mount --fork "$(command -v chroot)" "$JAIL")
check "empty root: check-config of the packaged config" "${IN_JAIL[@]}" /antemx check-config --config /antemx.toml
printf '[node]\nhostname = "x"\nbogus = 1\n' >"$JAIL/bad.toml"
check "empty root: check-config rejects a bad config" bash -c '! "$@" /antemx check-config --config /bad.toml' _ "${IN_JAIL[@]}"

# serve in the empty root: listens on loopback, says READY=1 to a
# NOTIFY_SOCKET (abstract, so it crosses the chroot), stops on SIGTERM with 0.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP_PORT=$(port)
WEB_PORT=$(port)
cat >"$JAIL/serve.toml" <<EOF
[node]
hostname = "mx.jail.test"
data_dir = "/data"
[smtp]
listen = ["127.0.0.1:$SMTP_PORT"]
[web]
listen = "127.0.0.1:$WEB_PORT"
[dns]
servers = ["127.0.0.1:53"]
[[domain]]
name = "jail.test"
deliver_to = "127.0.0.1:9"
EOF
NOTIFY_NAME=antemx-packaging-test-$$
python3 - "$NOTIFY_NAME" >"$TMP/notify.out" 2>&1 <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + sys.argv[1])
s.settimeout(60)
try:
    print(s.recv(4096).decode(), flush=True)
except socket.timeout:
    print("TIMEOUT", flush=True)
EOF
PIDS+=("$!")
NOTIFY_PID=$!
sleep 0.5
# Traced: every file antemx opens, to show it never looks for NSS.
strace -f -qq -e trace=%file -o "$TMP/serve.trace" \
    env -i NOTIFY_SOCKET="@$NOTIFY_NAME" "$(command -v unshare)" --mount --fork "$(command -v chroot)" "$JAIL" \
    /antemx serve --config /serve.toml >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait "$NOTIFY_PID" 2>/dev/null
notified=$(cat "$TMP/notify.out")
check "empty root: serve sends READY=1 to NOTIFY_SOCKET (got: ${notified:-nothing})" grep -qx 'READY=1' "$TMP/notify.out"
check "empty root: serve answers SMTP with a 220 banner" python3 -c '
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
code, msg = s.ehlo("packaging.test")
assert code == 250, (code, msg)
code, msg = s.mail("a@example.org"); assert code == 250, (code, msg)
code, msg = s.rcpt("bob@jail.test"); assert code == 250, (code, msg)
code, msg = s.data(b"Subject: packaging\r\n\r\nhello\r\n"); assert code == 250, (code, msg)
s.quit()' "$SMTP_PORT"
check "empty root: antemx queue list talks to the node (admin API)" \
    bash -c 'o=$("${@:2}" /antemx queue list --config /serve.toml 2>&1); echo "$o"; grep -q "bob@jail.test" <<<"$o"' _ x "${IN_JAIL[@]}"
# strace runs antemx: signal antemx itself, not strace.
ANTEMX_PID=$(pgrep -f -n '^/antemx serve --config /serve.toml$' || true)
[ -n "$ANTEMX_PID" ] && kill -TERM "$ANTEMX_PID" 2>/dev/null
rc=0
for _ in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
wait "$SERVE_PID" 2>/dev/null || rc=$?
check "empty root: serve stops on SIGTERM with exit 0 (exit $rc)" test "$rc" = 0
check "empty root: the accepted message is in the spool" bash -c 'ls "$1"/data/spool | grep -q .' _ "$JAIL"
# Only antemx's own accesses (after chroot's execve of /antemx).
nss=$(awk '/execve\("\/antemx"/{f=1} f' "$TMP/serve.trace" \
    | grep -E 'nsswitch|libnss|/etc/(hosts|passwd|group|gai\.conf|host\.conf|services)|ld\.so|\.so[."]' || true)
check "empty root: serve, SMTP and SIGTERM never look for NSS or a shared library" \
    bash -c '[ -z "$1" ] || { echo "$1"; false; }' _ "$nss"
if [ "$rc" != 0 ] || ! grep -qx 'READY=1' "$TMP/notify.out"; then sed 's/^/    serve: /' "$TMP/serve.log" >&2; fi

# --- the systemd unit ------------------------------------------------------
# verify needs the unit's commands and the targets it names; it exits 0 on
# unknown keys and bad values, so any output at all is a failure.
VROOT=$TMP/vroot
mkdir -p "$VROOT/usr/bin" "$VROOT/bin" "$VROOT/lib/systemd/system"
cp "$BIN" "$VROOT/usr/bin/antemx"
cp /bin/kill "$VROOT/bin/kill"
cp -a /lib/systemd/system/*.target "$VROOT/lib/systemd/system/"
cp systemd/antemx.service "$VROOT/lib/systemd/system/antemx.service"
verify_quiet() { local out; out=$(systemd-analyze verify "$@" 2>&1) && [ -z "$out" ] || { echo "$out"; return 1; }; }
check "systemd-analyze verify systemd/antemx.service" verify_quiet --root="$VROOT" /lib/systemd/system/antemx.service
lacks=()
for key in "Type=notify" "User=antemx" "Group=antemx" "Restart=on-failure" \
    "ExecStartPre=/usr/bin/antemx check-config --config /etc/antemx/antemx.toml" \
    "ExecStart=/usr/bin/antemx serve --config /etc/antemx/antemx.toml" \
    "ExecReload=/bin/kill -HUP \$MAINPID" "AmbientCapabilities=CAP_NET_BIND_SERVICE" \
    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" "ProtectSystem=strict" "NoNewPrivileges=yes" \
    "ReadWritePaths=/var/lib/antemx"; do
    grep -qxF "$key" systemd/antemx.service || lacks+=("$key")
done
check "the unit has the required settings" bash -c '[ $# = 0 ] || { printf "missing: %s\n" "$@"; false; }' _ "${lacks[@]}"
security=$(systemd-analyze security --offline=true --no-pager systemd/antemx.service 2>&1)
score=$(sed -n 's/.*Overall exposure level for antemx.service: \([0-9.]*\).*/\1/p' <<<"$security")
# 10 is fully exposed, 0 fully locked; the unit scores 1.4 at the time of
# writing: fail on a regression past 2.0.
check "systemd-analyze security: exposure ${score:-?} (at most 2.0)" \
    bash -c '[ -n "$1" ] && awk -v s="$1" "BEGIN{exit !(s <= 2.0)}"' _ "$score"

# --- the .deb: install -------------------------------------------------------
check "dpkg-deb: conffile listed" bash -c 'dpkg-deb -I "$1" conffiles | grep -qx /etc/antemx/antemx.toml' _ "$DEB"
check "dpkg-deb: files owned by root" bash -c '! dpkg-deb -c "$1" | awk "{print \$2}" | grep -v "^root/root$"' _ "$DEB"
if ! dpkg -i "$DEB" >"$TMP/install.log" 2>&1; then
    cat "$TMP/install.log" >&2
    fatal "dpkg -i $DEB"
fi
ok "dpkg -i"
check "postinst says the service is left disabled" grep -q "disabled and stopped" "$TMP/install.log"
check "/usr/bin/antemx runs" /usr/bin/antemx --help
check "antemx check-config on the shipped /etc/antemx/antemx.toml" \
    /usr/bin/antemx check-config --config /etc/antemx/antemx.toml
check "user antemx exists, a system user with no login shell" bash -c '
    IFS=: read -r _ _ uid gid _ home shell < <(getent passwd antemx) || exit 1
    echo "uid=$uid home=$home shell=$shell"
    [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/antemx ] && [ "$shell" = /usr/sbin/nologin ] &&
    [ "$(getent group antemx | cut -d: -f3)" = "$gid" ]'
check "/var/lib/antemx is antemx:antemx 0750" bash -c '[ "$(stat -c %U:%G:%a /var/lib/antemx)" = antemx:antemx:750 ] || stat -c %U:%G:%a /var/lib/antemx'
check "the unit is installed" test -f /lib/systemd/system/antemx.service
check "systemd-analyze verify of the installed unit" verify_quiet /lib/systemd/system/antemx.service
check "the service is not enabled" bash -c '
    ! ls /etc/systemd/system/*.wants/antemx.service 2>/dev/null &&
    [ "$(systemctl is-enabled antemx.service 2>/dev/null)" != enabled ]'
if [ -d /run/systemd/system ]; then
    check "the service is not running" bash -c '! systemctl is-active --quiet antemx.service'
fi
check "the antemx user can read the config (ExecStartPre runs as antemx)" \
    setpriv --reuid=antemx --regid=antemx --clear-groups \
    /usr/bin/antemx check-config --config /etc/antemx/antemx.toml

# As the unit runs it: user antemx, only CAP_NET_BIND_SERVICE, no new
# privileges; binds port 25 (on loopback here) and writes /var/lib/antemx.
if ! (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then
    WEB_PORT=$(port)
    sed -e 's/^listen = \["0.0.0.0:25"\]/listen = ["127.0.0.1:25"]/' \
        -e "s/^listen = \"127.0.0.1:8443\"/listen = \"127.0.0.1:$WEB_PORT\"/" \
        /etc/antemx/antemx.toml >"$TMP/port25.toml"
    chmod 0644 "$TMP/port25.toml"
    chmod 0755 "$TMP"
    setpriv --reuid=antemx --regid=antemx --clear-groups --inh-caps=-all,+net_bind_service \
        --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service --no-new-privs \
        /usr/bin/antemx serve --config "$TMP/port25.toml" >"$TMP/port25.log" 2>&1 &
    P25=$!
    PIDS+=("$P25")
    up=no
    for _ in $(seq 100); do
        if python3 -c 'import smtplib; smtplib.SMTP("127.0.0.1", 25, timeout=2).quit()' 2>/dev/null; then up=yes; break; fi
        kill -0 "$P25" 2>/dev/null || break
        sleep 0.1
    done
    check "as the unit runs it (user antemx, CAP_NET_BIND_SERVICE only): listens on port 25" test "$up" = yes
    kill -TERM "$P25" 2>/dev/null
    rc=0
    wait "$P25" 2>/dev/null || rc=$?
    check "... stops on SIGTERM with exit 0 (exit $rc)" test "$rc" = 0
    check "... its database is in /var/lib/antemx, owned by antemx" \
        bash -c '[ -d /var/lib/antemx/db ] && [ -z "$(find /var/lib/antemx ! -user antemx)" ]'
    [ "$up" = yes ] && [ "$rc" = 0 ] || sed 's/^/    serve: /' "$TMP/port25.log" >&2
else
    echo "packaging: port 25 is taken on this machine: skipping the port-25 run"
fi

# --- upgrade (same version again): the edited conffile is kept ---------------
echo "# edited by the operator" >>/etc/antemx/antemx.toml
if dpkg -i --force-confold "$DEB" >"$TMP/upgrade.log" 2>&1; then ok "dpkg -i again (upgrade path)"
else bad "dpkg -i again (upgrade path)"; cat "$TMP/upgrade.log" >&2; fi
check "upgrade keeps the edited conffile" grep -qx "# edited by the operator" /etc/antemx/antemx.toml
check "upgrade leaves the service disabled" bash -c '! ls /etc/systemd/system/*.wants/antemx.service 2>/dev/null'

# --- remove: the binary goes, the conffile, data and user stay ------------------
if dpkg -r antemx >"$TMP/remove.log" 2>&1; then ok "dpkg -r antemx"
else bad "dpkg -r antemx"; cat "$TMP/remove.log" >&2; fi
check "after remove: /usr/bin/antemx is gone" test ! -e /usr/bin/antemx
check "after remove: the unit file is gone" test ! -e /lib/systemd/system/antemx.service
check "after remove: the conffile is kept" test -f /etc/antemx/antemx.toml
check "after remove: the package is in config-files state" \
    bash -c '[ "$(dpkg-query -W -f="\${Status}" antemx)" = "deinstall ok config-files" ]'
check "after remove: /var/lib/antemx and the user are kept" bash -c 'test -d /var/lib/antemx && getent passwd antemx'

# --- purge: nothing left ---------------------------------------------------------
if dpkg -P antemx >"$TMP/purge.log" 2>&1; then ok "dpkg -P antemx"
else bad "dpkg -P antemx"; cat "$TMP/purge.log" >&2; fi
for path in /usr/bin/antemx /etc/antemx /var/lib/antemx /lib/systemd/system/antemx.service \
    /usr/share/doc/antemx; do
    check "after purge: $path is gone" test ! -e "$path"
done
check "after purge: user antemx is gone" bash -c '! getent passwd antemx'
check "after purge: group antemx is gone" bash -c '! getent group antemx'
check "after purge: dpkg knows no antemx" bash -c '! dpkg-query -W -f="\${Status}" antemx 2>/dev/null | grep -qv not-installed'

# --- under a real systemd ----------------------------------------------------
# This machine's PID 1 may not be systemd (CI's is not), so boot one: a
# container (systemd-nspawn, private network: loopback only) on a throwaway
# overlay of this root, that runs packaging/systemd-boot-test.sh and powers
# off. Skipped, not failed, where the kernel or sandbox cannot boot it.
boot_test() {
    local dir=$TMP/boot
    mkdir -p "$dir/nsp/out" "$dir/ovl"
    cp packaging/systemd-boot-test.sh "$dir/nsp/"
    cat >"$dir/nsp/antemx-boot-test.service" <<UNIT
[Unit]
Description=antemx packaging test under systemd
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=150
ExecStart=/bin/bash /nsp/systemd-boot-test.sh /dist/$(basename "$DEB")
ExecStopPost=/bin/systemctl poweroff --no-block
UNIT
    cat >"$dir/run" <<RUN
set -e
mount -t tmpfs tmpfs /run                       # nspawn wants a tmpfs /run
mount -t tmpfs -o size=2G tmpfs "$dir/ovl"
mkdir -p "$dir/ovl/up" "$dir/ovl/work" "$dir/ovl/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$dir/ovl/up",workdir="$dir/ovl/work" "$dir/ovl/root"
tr -d - </proc/sys/kernel/random/uuid >"$dir/ovl/root/etc/machine-id"
exec systemd-nspawn --quiet --keep-unit --register=no --link-journal=no --private-network \\
    -M antemx-boot-test -D "$dir/ovl/root" --bind="$dir/nsp:/nsp" --bind-ro="$(pwd)/target/dist:/dist" \\
    --bind-ro="$dir/nsp/antemx-boot-test.service:/etc/systemd/system/antemx-boot-test.service" \\
    --boot -- systemd.wants=antemx-boot-test.service
RUN
    local t
    t=$(date +%s)
    timeout -k 10 240 unshare --mount --propagation private bash "$dir/run" >"$dir/boot.log" 2>&1 </dev/null
    echo "packaging: container boot and test took $(( $(date +%s) - t ))s"
    local results=$dir/nsp/out/results
    if [ ! -e "$dir/nsp/out/inside.log" ]; then
        SKIP=$((SKIP + 1))
        echo "packaging: skip systemd boot test: the container did not run it here; last lines:"
        tail -5 "$dir/boot.log" | sed 's/^/    /'
        return
    fi
    local line
    while IFS= read -r line; do
        case "$line" in
            "ok "*) ok "${line#ok }" ;;
            "FAIL "*) bad "${line#FAIL }" ;;
            "score "*) echo "packaging: systemd-analyze security under a running systemd: ${line#score }" ;;
            "done") ;;
            *) echo "$line" >&2 ;;
        esac
    done <"$results"
    grep -qx "done" "$results" || {
        bad "systemd boot test did not finish"
        tail -20 "$dir/nsp/out/inside.log" "$dir/boot.log" >&2
    }
    [ "$FAIL" = 0 ] || sed 's/^/    journal: /' "$dir/nsp/out/journal.log" >&2 2>/dev/null
}
if [ "${PACKAGING_BOOT_TEST:-1}" = 0 ]; then
    SKIP=$((SKIP + 1))
    echo "packaging: skip systemd boot test (PACKAGING_BOOT_TEST=0)"
else
    if ! command -v systemd-nspawn >/dev/null; then
        echo "packaging: installing systemd-container (systemd-nspawn)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd-container >/dev/null; } \
            || bad "apt-get install systemd-container"
    fi
    command -v systemd-nspawn >/dev/null && boot_test
fi
