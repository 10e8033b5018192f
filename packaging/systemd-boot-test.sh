#!/bin/bash
# Runs INSIDE a container booted with systemd (packaging/test.sh starts it
# with systemd-nspawn on a throwaway overlay of this machine's root): the
# .deb and the unit under a real service manager. Type=notify readiness, the
# sandbox, port 25 as user antemx, reload, upgrade, stop, remove, purge.
# Writes one line per check to $OUT: "ok WHAT" or "FAIL WHAT", details
# indented below a failure.
set -u
OUT=/nsp/out/results
DEB=$1
CONF=/etc/antemx/antemx.toml
exec >/nsp/out/inside.log 2>&1
: >"$OUT"

ok() { echo "ok $*" >>"$OUT"; }
bad() { echo "FAIL $*" >>"$OUT"; }
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$what"; else bad "$what"; printf '%s\n' "$out" | sed 's/^/    /' >>"$OUT"; fi
}
prop() { systemctl show -p "$1" --value antemx.service; }
journal() { journalctl -u antemx.service --no-pager -o cat; }

# The image may carry an MTA of its own on port 25 (postfix, exim4).
for unit in postfix.service exim4.service sendmail.service opensmtpd.service; do
    systemctl stop "$unit" >/dev/null 2>&1 || true
done

check "systemd: dpkg -i" dpkg -i "$DEB"
check "systemd: installed disabled" bash -c '[ "$(systemctl is-enabled antemx.service)" = disabled ]'
check "systemd: installed stopped" bash -c '! systemctl is-active --quiet antemx.service'

# The shipped config, made real: a hostname and one customer domain whose
# server (127.0.0.1:2526) is down, so mail waits in the queue.
sed -i 's/^hostname = "mx.example.com"/hostname = "mx.boot.test"/' "$CONF"
printf '\n[[domain]]\nname = "boot.test"\ndeliver_to = "127.0.0.1:2526"\n' >>"$CONF"
check "systemd: the edited config passes check-config" antemx check-config --config "$CONF"

check "systemd: systemctl enable --now antemx" systemctl enable --now antemx.service
check "systemd: active (running) after READY=1 (Type=$(prop Type))" \
    bash -c '[ "$(systemctl show -p ActiveState --value antemx)/$(systemctl show -p SubState --value antemx)" = active/running ] || { systemctl status antemx --no-pager; journalctl -u antemx --no-pager -o cat; false; }'
pid=$(prop MainPID)
check "systemd: accepts mail on 0.0.0.0:25" python3 -c '
import smtplib
s = smtplib.SMTP("127.0.0.1", 25, timeout=10)
refused = s.sendmail("a@example.org", ["bob@boot.test"], b"Subject: boot\r\n\r\nhello\r\n")
assert not refused, refused
s.quit()'
check "systemd: process runs as antemx with CAP_NET_BIND_SERVICE only, no new privileges, seccomp" bash -c '
    s=/proc/$1/status
    grep -E "^(Uid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):" $s
    [ "$(awk "/^Uid:/{print \$2}" $s)" = "$(id -u antemx)" ] &&
    grep -qP "^CapEff:\t0000000000000400$" $s && grep -qP "^CapBnd:\t0000000000000400$" $s &&
    grep -qP "^NoNewPrivs:\t1$" $s && grep -qP "^Seccomp:\t2$" $s' _ "$pid"
check "systemd: the message waits in the queue (antemx queue list)" \
    bash -c 'o=$(antemx queue list 2>&1); echo "$o"; grep -q "bob@boot.test" <<<"$o"'
check "systemd: spool and database in /var/lib/antemx, owned by antemx" \
    bash -c '[ -n "$(ls /var/lib/antemx/spool)" ] && [ -z "$(find /var/lib/antemx ! -user antemx)" ]'

systemctl reload antemx.service
sleep 1
check "systemd: systemctl reload (SIGHUP) reloads" \
    bash -c '[ "$(systemctl show -p MainPID --value antemx)" = "$1" ] && journalctl -u antemx --no-pager -o cat | grep -q "config reloaded"' _ "$pid"
echo "bogus = 1" >>"$CONF"
systemctl reload antemx.service
sleep 1
check "systemd: a reload with a bad config keeps the node running" \
    bash -c 'systemctl is-active --quiet antemx && journalctl -u antemx --no-pager -o cat | grep -q "config not reloaded"'
sed -i '/^bogus = 1$/d' "$CONF"

check "systemd: dpkg -i over a running node (upgrade)" dpkg -i "$DEB"
check "systemd: the upgrade restarted the node on the new binary" \
    bash -c 'systemctl is-active --quiet antemx && [ "$(systemctl show -p MainPID --value antemx)" != "$1" ]' _ "$pid"
check "systemd: the queued message survived the restart" \
    bash -c 'antemx queue list 2>&1 | grep -q "bob@boot.test"'

check "systemd: systemctl stop" systemctl stop antemx.service
check "systemd: stopped cleanly (SIGTERM, exit 0)" \
    bash -c '[ "$(systemctl show -p Result --value antemx)" = success ] && [ "$(systemctl show -p ExecMainStatus --value antemx)" = 0 ]'
score=$(systemd-analyze security --no-pager antemx.service 2>&1 | sed -n 's/.*Overall exposure level for antemx.service: \([0-9.]*\).*/\1/p')
echo "score ${score:-?}" >>"$OUT"

systemctl start antemx.service
check "systemd: dpkg -r stops the running node" \
    bash -c 'dpkg -r antemx && ! systemctl is-active --quiet antemx && test -f /etc/antemx/antemx.toml'
check "systemd: dpkg -P leaves nothing" bash -c '
    dpkg -P antemx || exit 1
    for p in /etc/antemx /var/lib/antemx /usr/bin/antemx /lib/systemd/system/antemx.service \
        /etc/systemd/system/multi-user.target.wants/antemx.service; do
        [ ! -e "$p" ] && [ ! -L "$p" ] || { echo "left: $p"; exit 1; }
    done
    ! getent passwd antemx && ! getent group antemx'

journal >/nsp/out/journal.log 2>&1
echo "done" >>"$OUT"
