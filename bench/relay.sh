#!/usr/bin/env bash
# bench/relay.sh: end-to-end relay benchmark of antemx against Postfix, on
# loopback only (127.0.0.1). See BENCHMARKS.md for what the numbers mean.
#
#   smtp-source --(SMTP, N msgs, S sessions)--> antemx | Postfix --(SMTP)--> smtp-sink
#
# Measured per (system, message size): wall time from the start of smtp-source
# until smtp-sink has received all N messages, the relay's CPU time, and its
# peak memory. Then, for antemx only: RSS with IDLE_CONNS idle SMTP
# connections, and the size of data_dir before and after N_DISK messages went
# through (queue empty again).
#
# Everything is optional through environment variables:
#   MSGS=20000          messages per throughput run
#   SESSIONS=20         concurrent smtp-source sessions
#   SIZES="5120 51200"  message body sizes (smtp-source -l); "" skips the
#   SYSTEMS="antemx postfix"  throughput runs; add "antemx-base" to run the
#                       BASE_COMMIT build too (the cost of a change, e.g.
#                       the filter: BASE_COMMIT=5763f8d, the last commit
#                       before messages were judged)
#   BASE_COMMIT=...     commit built (git archive) into target/bench-base
#   REUSE=0             1: smtp-source -d (many messages per connection);
#                       0: one message per connection, like most MX traffic
#   N_DISK=100000       messages for the disk-usage run (0 skips it)
#   IDLE_CONNS=1000     idle connections for the memory run (0 skips it)
#   IDLE_HOLD=5         seconds the idle connections are held
#   STALL_SECS=60       a run with no progress for this long is a failure
#   RUN_TIMEOUT=1200    hard limit in seconds for one run
#   BASE_PORT=39100     ports BASE_PORT..BASE_PORT+3 on 127.0.0.1
#   BUILD=1             0: do not run cargo build
#   BUILD_FROM=worktree worktree: cargo build --release in the repo;
#                       HEAD: build the last commit (git archive) into
#                       target/bench-head, unaffected by uncommitted edits
#   ANTEMX_BIN=...      binary to benchmark (default: the one built above)
#   ANTEMX_LOG=warn     RUST_LOG for antemx
#   POSTFIX_LOG=file    file: Postfix logs to a file through postlogd (its
#                       normal per-message logging); none: logs are dropped
#   BENCH_TMP=/var/tmp  where the temporary directory goes (a real disk, so
#                       that fsync costs what it costs)
#   WAIT_QUIET=300      before each run, wait up to this many seconds for the
#                       machine to be quiet (under 15% CPU busy over 2 s);
#                       other work on the machine skews every number here
#   KEEP=0              1: keep the temporary directory (logs, spools)
#   OUT=bench/results/last.txt  where the results table is also written ("" : nowhere)
#   DIAG_GDB=1          on a stall, save `gdb thread apply all bt` of antemx
#                       when gdb is installed (SYMBOLS=1 builds antemx with
#                       symbols, without changing Cargo.toml, so that the
#                       backtraces name functions)
#
# Quick check:  MSGS=2000 N_DISK=2000 IDLE_CONNS=200 bench/relay.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MSGS=${MSGS:-20000}
SESSIONS=${SESSIONS:-20}
SIZES=${SIZES-"5120 51200"}
SYSTEMS=${SYSTEMS-"antemx postfix"}
BASE_COMMIT=${BASE_COMMIT:-}
REUSE=${REUSE:-0}
N_DISK=${N_DISK:-100000}
IDLE_CONNS=${IDLE_CONNS:-1000}
IDLE_HOLD=${IDLE_HOLD:-5}
STALL_SECS=${STALL_SECS:-60}
RUN_TIMEOUT=${RUN_TIMEOUT:-1200}
BASE_PORT=${BASE_PORT:-39100}
BUILD=${BUILD:-1}
BUILD_FROM=${BUILD_FROM:-worktree}
ANTEMX_LOG=${ANTEMX_LOG:-warn}
POSTFIX_LOG=${POSTFIX_LOG:-file}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
KEEP=${KEEP:-0}
WAIT_QUIET=${WAIT_QUIET:-300}
OUT=${OUT-bench/results/last.txt}
DIAG_GDB=${DIAG_GDB:-1}
POLL=0.2

SINK_PORT=$BASE_PORT
A_SMTP=$((BASE_PORT + 1))
A_WEB=$((BASE_PORT + 2))
P_SMTP=$((BASE_PORT + 3))
FROM=sender@example.org
TO=user@bench.test

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
PIDS=()             # processes this script started (killed on exit)
POSTFIX_DIRS=()     # Postfix instances this script started
W=""

cleanup() {
    local rc=$? pid dir
    trap - EXIT INT TERM
    for dir in "${POSTFIX_DIRS[@]}"; do
        postfix_stop "$dir" >/dev/null 2>&1 || true
    done
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $W && -d $W ]]; then
        if [[ $KEEP == 1 || $rc != 0 ]]; then
            log "temporary files kept in $W"
        else
            rm -rf "$W"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- helpers
# float arithmetic
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

listening() { [[ -n $(ss -ltnH "sport = :$1" 2>/dev/null) ]]; }

wait_listening() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        listening "$1" && return 0
        sleep 0.1
    done
    return 1
}

require_free() {
    local port
    for port in "$@"; do
        listening "$port" && die "port $port on 127.0.0.1 is already in use (set BASE_PORT)"
    done
    return 0
}

# utime+stime+cutime+cstime of a process, in clock ticks ("" if gone)
proc_ticks() {
    local s
    read -r s 2>/dev/null <"/proc/$1/stat" || return 0
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13} + ${14} + ${15}))
}

proc_status_kb() { # pid field
    local key value _
    while read -r key value _; do
        if [[ $key == "$2:" ]]; then echo "$value"; return 0; fi
    done 2>/dev/null <"/proc/$1/status"
    echo 0
}

proc_pss_kb() {
    local key value _
    while read -r key value _; do
        if [[ $key == "Pss:" ]]; then echo "$value"; return 0; fi
    done 2>/dev/null <"/proc/$1/smaps_rollup"
    echo 0
}

# last value of a counter that smtp-sink -c (mesg=N) or smtp-source -c (N)
# writes separated by carriage returns
last_counter() { # file [prefix]
    local tail_text last
    tail_text=$(tail -c 96 "$1" 2>/dev/null || true)
    tail_text=${tail_text//$'\n'/$'\r'}
    last=${tail_text%$'\r'}
    last=${last##*$'\r'}
    if [[ -n ${2:-} ]]; then
        [[ $last =~ $2=([0-9]+) ]] && { echo "${BASH_REMATCH[1]}"; return 0; }
    else
        [[ $last =~ ^([0-9]+) ]] && { echo "${BASH_REMATCH[1]}"; return 0; }
    fi
    echo 0
}

CLK_TCK=$(getconf CLK_TCK)

# machine-wide CPU, all cores: "busy total process_time irq_time steal"
# (process_time: user+nice+system, what processes are charged; irq_time:
# interrupts and softirqs, e.g. loopback TCP, which no process is charged)
cpu_sample() {
    local _ u n sy id io irq sirq st
    read -r _ u n sy id io irq sirq st _ </proc/stat
    echo "$((u + n + sy + irq + sirq + st)) $((u + n + sy + id + io + irq + sirq + st)) $((u + n + sy)) $((irq + sirq)) $st"
}

# waits until the machine is idle (other work would skew the run); returns
# the busy percentage seen last
wait_quiet() {
    local a b pct=100 start=$SECONDS warned=""
    while :; do
        read -r -a a <<<"$(cpu_sample)"
        sleep 2
        read -r -a b <<<"$(cpu_sample)"
        pct=$(((b[0] - a[0]) * 100 / (b[1] - a[1] > 0 ? b[1] - a[1] : 1)))
        ((pct < 15)) && break
        if ((SECONDS - start >= WAIT_QUIET)); then
            log "machine still ${pct}% busy after ${WAIT_QUIET}s of waiting; running anyway (numbers are skewed)"
            break
        fi
        [[ -n $warned ]] || { log "machine ${pct}% busy with other work; waiting up to ${WAIT_QUIET}s for it to settle"; warned=1; }
    done
    QUIET_PCT=$pct
}

# ---------------------------------------------------------------- step 1: tools
install_postfix() {
    if command -v postfix >/dev/null 2>&1 && [[ -x /usr/sbin/smtp-source || -x $(command -v smtp-source 2>/dev/null || echo /nonexistent) ]]; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "postfix is not installed and this is not root: apt-get install postfix"
    log "installing postfix (for smtp-source, smtp-sink and the comparison relay)"
    export DEBIAN_FRONTEND=noninteractive
    # debconf: no system mail configuration
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
    if ! apt-get install -y postfix >"$W/apt.log" 2>&1; then
        apt-get update >>"$W/apt.log" 2>&1 || true
        apt-get install -y postfix >>"$W/apt.log" 2>&1 || { tail -20 "$W/apt.log" >&2; die "apt-get install postfix failed"; }
    fi
}

find_tools() {
    local t
    for t in smtp-source smtp-sink postfix postconf; do
        if ! command -v "$t" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$t ]]; then
            die "$t not found"
        fi
    done
    SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
    SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
    POSTFIX=$(command -v postfix || echo /usr/sbin/postfix)
    POSTCONF=$(command -v postconf || echo /usr/sbin/postconf)
    command -v python3 >/dev/null || die "python3 is needed for the idle-connection test"
    command -v curl >/dev/null || die "curl is needed"
}

# The system-wide Postfix instance is not used; if the package install (or
# anything else) left it running it would compete for the 2 cores.
stop_system_postfix() {
    if "$POSTFIX" status >/dev/null 2>&1; then
        log "stopping the system Postfix instance (it is not part of the benchmark)"
        "$POSTFIX" stop >/dev/null 2>&1 || true
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop postfix >/dev/null 2>&1 || true
    fi
    return 0
}

# ---------------------------------------------------------------- step 2: build
build_antemx() {
    local head
    head=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    if [[ -n ${ANTEMX_BIN:-} ]]; then
        [[ -x $ANTEMX_BIN ]] || die "ANTEMX_BIN=$ANTEMX_BIN is not executable"
        ANTEMX_ORIGIN="given by ANTEMX_BIN; repo HEAD is $head"
        return 0
    fi
    ANTEMX_ORIGIN="commit $head"
    if [[ $BUILD_FROM == worktree && -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        ANTEMX_ORIGIN+=" plus uncommitted changes in src/"
    fi
    if [[ ${SYMBOLS:-0} == 1 ]]; then
        # symbols for gdb backtraces of a stuck antemx; same optimisation
        export CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
    fi
    case $BUILD_FROM in
    worktree)
        ANTEMX_BIN=$ROOT/target/release/antemx
        if [[ $BUILD == 1 ]]; then
            log "cargo build --release"
            cargo build --release >"$W/build.log" 2>&1 || { tail -30 "$W/build.log" >&2; die "cargo build --release failed"; }
        fi
        ;;
    HEAD)
        local src=$W/src-head
        mkdir -p "$src"
        git -C "$ROOT" archive HEAD | tar -x -C "$src"
        ANTEMX_BIN=$ROOT/target/bench-head/release/antemx
        log "cargo build --release of HEAD ($(git -C "$ROOT" rev-parse --short HEAD))"
        (cd "$src" && cargo build --release --target-dir "$ROOT/target/bench-head") >"$W/build.log" 2>&1 ||
            { tail -30 "$W/build.log" >&2; die "cargo build --release (HEAD) failed"; }
        ;;
    *) die "BUILD_FROM must be worktree or HEAD" ;;
    esac
    [[ -x $ANTEMX_BIN ]] || die "$ANTEMX_BIN missing"
    if [[ " $SYSTEMS " == *" antemx-base "* ]]; then
        [[ -n $BASE_COMMIT ]] || die "SYSTEMS has antemx-base: set BASE_COMMIT"
        local src=$W/src-base
        mkdir -p "$src"
        git -C "$ROOT" archive "$BASE_COMMIT" | tar -x -C "$src"
        BASE_BIN=$ROOT/target/bench-base/release/antemx
        log "cargo build --release of $BASE_COMMIT (antemx-base)"
        (cd "$src" && cargo build --release --target-dir "$ROOT/target/bench-base") >"$W/build-base.log" 2>&1 ||
            { tail -30 "$W/build-base.log" >&2; die "cargo build --release ($BASE_COMMIT) failed"; }
    fi
}

# ---------------------------------------------------------------- sink
SINK_PID=""
start_sink() { # output file
    require_free "$SINK_PORT"
    local user=()
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    # -c: running counters on stdout; -m: up to 1000 simultaneous sessions
    "$SMTP_SINK" -c "${user[@]}" -m 1000 "127.0.0.1:$SINK_PORT" 1024 >"$1" 2>"$1.err" &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_listening "$SINK_PORT" 10 || die "smtp-sink did not start: $(cat "$1.err")"
}

stop_sink() {
    [[ -n $SINK_PID ]] || return 0
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    forget_pid "$SINK_PID"
    SINK_PID=""
}

# ---------------------------------------------------------------- antemx
ANTEMX_PID=""
ANTEMX_DATA=""
ANTEMX_NOTE=""

write_antemx_config() { # dir
    cat >"$1/antemx.toml" <<EOF
# written by bench/relay.sh
[node]
hostname = "mx.bench.test"
data_dir = "$1/data"

[smtp]
listen = ["127.0.0.1:$A_SMTP"]
max_connections = 5000
max_connections_per_ip = 2000   # the idle-connection test opens 1000 from 127.0.0.1

[web]
listen = "127.0.0.1:$A_WEB"

[[domain]]
name = "bench.test"
deliver_to = "127.0.0.1:$SINK_PORT"
tls = "none"
EOF
}

start_antemx() { # dir [binary]
    local dir=$1 binary=${2:-$ANTEMX_BIN}
    require_free "$A_SMTP" "$A_WEB"
    mkdir -p "$dir"
    write_antemx_config "$dir"
    ANTEMX_DATA=$dir/data
    RUST_LOG=$ANTEMX_LOG "$binary" serve --config "$dir/antemx.toml" >"$dir/antemx.log" 2>&1 &
    ANTEMX_PID=$!
    PIDS+=("$ANTEMX_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf -m 2 "http://127.0.0.1:$A_WEB/healthz" >/dev/null 2>&1 && listening "$A_SMTP" && return 0
        kill -0 "$ANTEMX_PID" 2>/dev/null || { cat "$dir/antemx.log" >&2; die "antemx exited at start"; }
        sleep 0.1
    done
    cat "$dir/antemx.log" >&2
    die "antemx did not become ready in 10 s"
}

antemx_queue_len() { # prints the number of queued jobs, or "?" when the API does not answer
    local body
    body=$(curl -sf -m 5 "http://127.0.0.1:$A_WEB/admin/queue" 2>/dev/null) || { echo "?"; return 0; }
    grep -c '"id"' <<<"$body" || true
}

stop_antemx() {
    [[ -n $ANTEMX_PID ]] || return 0
    local i
    ANTEMX_NOTE=""
    kill -TERM "$ANTEMX_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$ANTEMX_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$ANTEMX_PID" 2>/dev/null; then
        ANTEMX_NOTE="antemx did not exit within 10 s of SIGTERM; killed"
        log "$ANTEMX_NOTE"
        kill -KILL "$ANTEMX_PID" 2>/dev/null || true
    fi
    wait "$ANTEMX_PID" 2>/dev/null || true
    forget_pid "$ANTEMX_PID"
    ANTEMX_PID=""
}

antemx_diagnose() { # dir: what a stuck antemx is doing
    local out=$1/stall-diagnosis.txt t
    {
        echo "== threads (name state wchan)"
        for t in /proc/"$ANTEMX_PID"/task/*; do
            echo "$(cat "$t/comm" 2>/dev/null) $(awk '{print $3}' "$t/stat" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)"
        done | sort | uniq -c
        echo "== queue length (admin API): $(antemx_queue_len)"
        echo "== spool files: $(find "$ANTEMX_DATA/spool" -type f 2>/dev/null | wc -l)"
        echo "== tcp connections to antemx (state count): $(ss -tanH "sport = :$A_SMTP" 2>/dev/null | awk '$1 != "LISTEN" {print $1}' | sort | uniq -c | tr '\n' ' ')"
        echo "== tcp connections antemx -> sink (state count): $(ss -tanH "dport = :$SINK_PORT" 2>/dev/null | awk '{print $1}' | sort | uniq -c | tr '\n' ' ')"
        echo "== antemx log, last lines:"
        tail -n 20 "$1/antemx.log"
    } >"$out" 2>&1
    if [[ $DIAG_GDB == 1 ]] && command -v gdb >/dev/null 2>&1; then
        timeout 120 gdb -p "$ANTEMX_PID" -batch -ex "thread apply all bt 30" >"$1/stall-gdb.txt" 2>&1 || true
    fi
    log "stall diagnosis in $out"
    sed 's/^/    /' "$out" >&2
}

# ---------------------------------------------------------------- Postfix
postfix_master_pid() { # instance dir
    local p=""
    read -r p 2>/dev/null <"$1/spool/pid/master.pid" || true
    p=${p//[[:space:]]/}
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null && echo "$p"
    return 0
}

postfix_setup() { # instance dir
    local pd=$1 logline
    mkdir -p "$pd/etc" "$pd/spool" "$pd/data"
    chmod 755 "$pd" "$pd/etc" "$pd/spool"
    chown postfix "$pd/data" 2>/dev/null || true
    if [[ $POSTFIX_LOG == file ]]; then
        logline="maillog_file = $pd/maillog
maillog_file_prefixes = $pd"
    else
        logline="# logs go to syslog; without a syslog daemon they are dropped"
    fi
    cat >"$pd/etc/main.cf" <<EOF
# written by bench/relay.sh: a relay for bench.test only, loopback only
compatibility_level = 3.6
queue_directory = $pd/spool
data_directory = $pd/data
command_directory = /usr/sbin
daemon_directory = $("$POSTCONF" -dh daemon_directory)
shlib_directory = $("$POSTCONF" -dh shlib_directory)
meta_directory = $("$POSTCONF" -dh meta_directory)
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydomain = bench.invalid
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# relay, never local delivery
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relay_domains = bench.test
relay_recipient_maps =
transport_maps = inline:{ bench.test=smtp:[127.0.0.1]:$SINK_PORT }
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# no DNS anywhere
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
$logline
EOF
    cat >"$pd/etc/master.cf" <<EOF
# written by bench/relay.sh; nothing chrooted
127.0.0.1:$P_SMTP inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

postfix_start() { # instance dir
    local pd=$1
    require_free "$P_SMTP"
    postfix_setup "$pd"
    "$POSTFIX" -c "$pd/etc" check >"$pd/check.log" 2>&1 || true
    "$POSTFIX" -c "$pd/etc" start >"$pd/start.log" 2>&1 || { cat "$pd/start.log" "$pd/check.log" >&2; die "postfix -c $pd/etc start failed"; }
    POSTFIX_DIRS+=("$pd")
    wait_listening "$P_SMTP" 20 || { cat "$pd/start.log" >&2; die "Postfix does not listen on $P_SMTP"; }
    [[ -n $(postfix_master_pid "$pd") ]] || die "no Postfix master pid"
}

postfix_stop() { # instance dir
    local pd=$1 master i c keep=() d
    master=$(postfix_master_pid "$pd")
    "$POSTFIX" -c "$pd/etc" stop >/dev/null 2>&1 || true
    if [[ -n $master ]]; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$master" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$master" 2>/dev/null; then
            for c in $(pgrep -P "$master" || true); do kill -KILL "$c" 2>/dev/null || true; done
            kill -KILL "$master" 2>/dev/null || true
        fi
    fi
    for d in "${POSTFIX_DIRS[@]}"; do [[ $d == "$pd" ]] || keep+=("$d"); done
    POSTFIX_DIRS=("${keep[@]}")
}

postfix_queue_len() { # instance dir: message files in the queue
    find "$1/spool/incoming" "$1/spool/active" "$1/spool/deferred" "$1/spool/maildrop" "$1/spool/hold" \
        -type f 2>/dev/null | wc -l
}

# CPU ticks of a Postfix instance: the master (its cutime/cstime include
# every daemon it has reaped) plus the daemons still running.
postfix_ticks() {
    local master total c t
    master=$(postfix_master_pid "$1")
    [[ -n $master ]] || { echo 0; return 0; }
    total=$(proc_ticks "$master")
    total=${total:-0}
    for c in $(pgrep -P "$master" || true); do
        t=$(proc_ticks "$c")
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# memory of a Postfix instance now: "sum_of_RSS_kB sum_of_PSS_kB processes"
postfix_mem() {
    local master rss=0 pss=0 n=0 p
    master=$(postfix_master_pid "$1")
    [[ -n $master ]] || { echo "0 0 0"; return 0; }
    for p in "$master" $(pgrep -P "$master" || true); do
        rss=$((rss + $(proc_status_kb "$p" VmRSS)))
        pss=$((pss + $(proc_pss_kb "$p")))
        n=$((n + 1))
    done
    echo "$rss $pss $n"
}

# ---------------------------------------------------------------- one run
# Sets: R_STATUS R_SECS R_RATE R_CPU_MS R_MEM_MB R_DELIVERED R_ACCEPTED R_DETAIL
run_load() { # system size msgs rundir
    local system=$1 size=$2 msgs=$3 dir=$4
    local sink_out=$dir/sink.out src_out=$dir/source.out
    local ticks0 ticks1 t0 t1 tnow last_change delivered=0 accepted=0 prev="" src_pid src_rc=0 src_done=""
    local mem_peak_rss=0 mem_peak_pss=0 mem_procs=0 next_mem=0 disk_peak=0 next_disk=0
    local port detail=""
    mkdir -p "$dir"
    R_STATUS=ok R_SECS=- R_RATE=- R_CPU_MS=- R_MEM_MB=- R_DELIVERED=0 R_ACCEPTED=0 R_DETAIL=""
    # The previous run's dirty pages (queue files, logs) are written back
    # now, not during this run's fsyncs.
    local synced=$EPOCHREALTIME
    sync
    log "sync before $system $size: $(calc "$EPOCHREALTIME - $synced" 2)s"
    wait_quiet
    local quiet_before=$QUIET_PCT cpu0 cpu1

    start_sink "$sink_out"
    case $system in
    antemx | antemx-base)
        start_antemx "$dir" "$([[ $system == antemx ]] && echo "$ANTEMX_BIN" || echo "$BASE_BIN")"
        port=$A_SMTP
        ticks0=$(proc_ticks "$ANTEMX_PID")
        ;;
    postfix)
        postfix_start "$dir/postfix"
        port=$P_SMTP
        ticks0=$(postfix_ticks "$dir/postfix")
        ;;
    esac
    [[ -n ${DISK_BEFORE_KB+x} && $system == antemx ]] && DISK_BEFORE_KB=$(du -sk "$ANTEMX_DATA" | cut -f1)

    local opts=(-c -s "$SESSIONS" -m "$msgs" -l "$size" -f "$FROM" -t "$TO" -M client.bench.test)
    [[ $REUSE == 1 ]] && opts+=(-d)
    log "$system: $msgs messages of $size bytes, $SESSIONS sessions$([[ $REUSE == 1 ]] && echo ", -d")"
    sink_ticks0=$(proc_ticks "$SINK_PID")
    read -r -a cpu0 <<<"$(cpu_sample)"
    t0=${EPOCHREALTIME/./}
    "$SMTP_SOURCE" "${opts[@]}" "127.0.0.1:$port" >"$src_out" 2>"$dir/source.err" &
    src_pid=$!
    PIDS+=("$src_pid")
    last_change=$t0
    local stall_us=$((STALL_SECS * 1000000)) timeout_us=$((RUN_TIMEOUT * 1000000)) m d t src_ticks=0 sink_ticks0 sink_ticks1

    # times in microseconds, integer arithmetic: the loop forks little
    while :; do
        sleep "$POLL"
        tnow=${EPOCHREALTIME/./}
        delivered=$(last_counter "$sink_out" mesg)
        accepted=$(last_counter "$src_out")
        [[ -z $src_done ]] && { t=$(proc_ticks "$src_pid"); [[ -n $t ]] && src_ticks=$t; }
        if [[ "$delivered/$accepted" != "$prev" ]]; then
            prev="$delivered/$accepted"
            last_change=$tnow
        fi
        if ((delivered >= msgs)); then
            t1=$tnow
            read -r -a cpu1 <<<"$(cpu_sample)"
            break
        fi
        if [[ -z $src_done ]] && ! kill -0 "$src_pid" 2>/dev/null; then
            src_done=$tnow
            wait "$src_pid" 2>/dev/null || src_rc=$?
            if [[ $src_rc != 0 ]]; then
                R_STATUS=SOURCE_FAILED
                detail="smtp-source exit $src_rc: $(tail -c 300 "$dir/source.err" | tr '\n' ' '); "
                t1=$tnow
                break
            fi
        fi
        if [[ $system == antemx* ]] && ! kill -0 "$ANTEMX_PID" 2>/dev/null; then
            R_STATUS=CRASHED
            detail="antemx exited during the run; "
            t1=$tnow
            break
        fi
        if ((tnow - last_change > stall_us)); then
            R_STATUS=STALLED
            detail="no progress for ${STALL_SECS}s; "
            t1=$last_change
            break
        fi
        if ((tnow - t0 > timeout_us)); then
            R_STATUS=TIMEOUT
            detail="not done after ${RUN_TIMEOUT}s; "
            t1=$tnow
            break
        fi
        # memory of Postfix every second (antemx: VmHWM at the end)
        if [[ $system == postfix ]] && ((tnow >= next_mem)); then
            next_mem=$((tnow + 1000000))
            read -r -a m <<<"$(postfix_mem "$dir/postfix")"
            ((m[0] > mem_peak_rss)) && mem_peak_rss=${m[0]}
            ((m[1] > mem_peak_pss)) && mem_peak_pss=${m[1]}
            ((m[2] > mem_procs)) && mem_procs=${m[2]}
        fi
        # data_dir size every 5 seconds during the disk run
        if [[ -n ${DISK_BEFORE_KB+x} && $system == antemx ]] && ((tnow >= next_disk)); then
            next_disk=$((tnow + 5000000))
            d=$(du -sk "$ANTEMX_DATA" 2>/dev/null | cut -f1) || true # du fails on files deleted under it
            ((${d:-0} > disk_peak)) && disk_peak=$d
            DISK_CURVE+="$delivered:${d:-?} "
            [[ -z ${DISK_WARM_KB:-} ]] && ((delivered >= msgs / 10)) && DISK_WARM_KB=$d DISK_WARM_AT=$delivered
        fi
    done

    [[ ${#cpu1[@]} == 2 ]] || read -r -a cpu1 <<<"$(cpu_sample)"
    sink_ticks1=$(proc_ticks "$SINK_PID")
    # a stuck antemx: look at it before anything is torn down
    [[ $system == antemx* && ($R_STATUS == STALLED || $R_STATUS == TIMEOUT) ]] && antemx_diagnose "$dir"

    # smtp-source
    if [[ $R_STATUS == ok ]]; then
        local i
        for ((i = 0; i < 100; i++)); do kill -0 "$src_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [[ -z $src_done ]]; then
        if kill -0 "$src_pid" 2>/dev/null; then
            kill -TERM "$src_pid" 2>/dev/null || true
            [[ $R_STATUS == ok ]] && detail+="smtp-source still running 10 s after the sink had everything; "
        fi
        wait "$src_pid" 2>/dev/null || src_rc=$?
        [[ $src_rc != 0 && $R_STATUS == ok ]] && detail+="smtp-source exit $src_rc: $(tail -c 300 "$dir/source.err" | tr '\n' ' '); "
    fi
    forget_pid "$src_pid"
    accepted=$(last_counter "$src_out")

    # queue must be empty once the sink has everything (up to 30 s)
    local q="?" i
    if [[ $R_STATUS == ok ]]; then
        for ((i = 0; i < 150; i++)); do
            if [[ $system == antemx* ]]; then q=$(antemx_queue_len); else q=$(postfix_queue_len "$dir/postfix"); fi
            [[ $q == 0 ]] && break
            sleep 0.2
        done
        [[ $q == 0 ]] || { R_STATUS=QUEUE_NOT_EMPTY; detail+="queue still holds $q after the sink got all; "; }
    fi
    sleep 0.5
    delivered=$(last_counter "$sink_out" mesg)
    ((delivered > msgs)) && detail+="DUPLICATES: sink received $delivered for $msgs sent; "

    # CPU and memory
    case $system in
    antemx | antemx-base)
        ticks1=$(proc_ticks "$ANTEMX_PID")
        [[ -n $ticks1 ]] || ticks1=$ticks0
        R_MEM_MB=$(calc "$(proc_status_kb "$ANTEMX_PID" VmHWM) / 1024" 1)
        if [[ -n ${DISK_BEFORE_KB+x} ]]; then
            DISK_AFTER_KB=$(du -sk "$ANTEMX_DATA" | cut -f1)
            DISK_PEAK_KB=$disk_peak
            DISK_SPOOL_FILES=$(find "$ANTEMX_DATA/spool" -type f | wc -l)
            DISK_LISTING=$(cd "$ANTEMX_DATA" && du -ak . | sort -k2)
        fi
        stop_antemx
        [[ -n $ANTEMX_NOTE ]] && detail+="$ANTEMX_NOTE; "
        ;;
    postfix)
        ticks1=$(postfix_ticks "$dir/postfix")
        read -r -a m <<<"$(postfix_mem "$dir/postfix")"
        ((m[0] > mem_peak_rss)) && mem_peak_rss=${m[0]}
        ((m[1] > mem_peak_pss)) && mem_peak_pss=${m[1]}
        R_MEM_MB=$(calc "$mem_peak_pss / 1024" 1)
        detail+="Postfix memory: peak sum of PSS $(calc "$mem_peak_pss / 1024" 1) MB (sum of RSS $(calc "$mem_peak_rss / 1024" 1) MB, counting shared pages once per process), up to $mem_procs processes (sampled every 1 s); "
        postfix_stop "$dir/postfix"
        ;;
    esac
    stop_sink

    R_DELIVERED=$delivered
    R_ACCEPTED=$accepted
    local secs
    secs=$(calc "($t1 - $t0) / 1000000" 3)
    R_SECS=$(calc "$secs" 1)
    if [[ $R_STATUS == ok ]]; then
        R_RATE=$(calc "$msgs / $secs" 1)
        R_CPU_MS=$(calc "($ticks1 - $ticks0) * 1000 / $CLK_TCK / $msgs" 3)
    else
        R_RATE="($(calc "$delivered / ($secs + 0.001)" 1))"
        ((delivered > 0)) && R_CPU_MS="($(calc "($ticks1 - $ticks0) * 1000 / $CLK_TCK / $delivered" 3))"
        detail+="$delivered delivered, $accepted accepted by the relay (smtp-source count); "
    fi
    local busy_total=$((cpu1[0] - cpu0[0])) all_total=$((cpu1[1] - cpu0[1])) relay=$((ticks1 - ticks0))
    ((all_total > 0)) || all_total=1
    R_BUSY=$((busy_total * 100 / all_total))
    local load=$((src_ticks + ${sink_ticks1:-0} - ${sink_ticks0:-0}))
    local proc_total=$((cpu1[2] - cpu0[2])) irq_total=$((cpu1[3] - cpu0[3])) steal=$((cpu1[4] - cpu0[4]))
    R_OTHER=$(((proc_total - relay - load + steal) * 100 / all_total))
    ((R_OTHER < 0)) && R_OTHER=0
    detail+="machine CPU during the run (% of all $(nproc) cores): ${R_BUSY}% busy = relay $((relay * 100 / all_total))% + smtp-source and smtp-sink $((load * 100 / all_total))% + kernel irq/softirq (loopback TCP) $((irq_total * 100 / all_total))% + other processes and steal ~${R_OTHER}%; idle before start: $((100 - quiet_before))%; "
    R_DETAIL=$detail
    log "$system $size: $R_STATUS, ${R_SECS}s, $R_RATE msg/s, CPU $R_CPU_MS ms/msg, mem $R_MEM_MB MB${detail:+ -- $detail}"
}

# ---------------------------------------------------------------- idle connections
idle_test() {
    local dir=$W/idle n=$IDLE_CONNS before during hwm res
    mkdir -p "$dir"
    wait_quiet
    start_sink "$dir/sink.out"
    start_antemx "$dir"
    sleep 1
    before=$(proc_status_kb "$ANTEMX_PID" VmRSS)
    log "antemx: $n idle connections held ${IDLE_HOLD}s"
    python3 - "$A_SMTP" "$n" "$IDLE_HOLD" "$dir/ready" >"$dir/idle.out" 2>&1 <<'PY' &
import socket, sys, time
port, n, hold, ready = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.time() + 120          # bounded whatever happens
socks, refused, other, banners = [], 0, {}, 0
for _ in range(n):
    if time.time() > deadline:
        break
    try:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    except OSError:
        refused += 1
for s in socks:
    if time.time() > deadline:
        break
    try:
        line = s.recv(512)
    except OSError:
        line = b"(no banner)"
    if line.startswith(b"220"):
        banners += 1
    else:
        key = line[:40].decode("latin-1", "replace").strip()
        other[key] = other.get(key, 0) + 1
with open(ready, "w") as f:
    f.write(f"opened={len(socks)} banners={banners} refused={refused} other={other}\n")
time.sleep(hold)
for s in socks:
    s.close()
print(f"opened={len(socks)} banners={banners} refused={refused} other={other}")
PY
    local py=$! i
    PIDS+=("$py")
    for ((i = 0; i < 1300; i++)); do
        [[ -s $dir/ready ]] && break
        kill -0 "$py" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    during=$(proc_status_kb "$ANTEMX_PID" VmRSS)
    local est
    est=$(ss -tnH state established "sport = :$A_SMTP" | wc -l)
    wait "$py" || true
    forget_pid "$py"
    hwm=$(proc_status_kb "$ANTEMX_PID" VmHWM)
    ((during > hwm)) && hwm=$during # VmHWM lags VmRSS by the kernel's batched counters
    res=$(cat "$dir/ready" 2>/dev/null || echo "python test failed: $(cat "$dir/idle.out")")
    stop_antemx
    stop_sink
    IDLE_RESULT="$n idle connections: $res; established while held: $est; antemx RSS before $(calc "$before / 1024" 1) MB, while held $(calc "$during / 1024" 1) MB, peak (VmHWM) $(calc "$hwm / 1024" 1) MB${ANTEMX_NOTE:+; $ANTEMX_NOTE}"
    IDLE_HWM_MB=$(calc "$hwm / 1024" 1)
    log "$IDLE_RESULT"
}

# ---------------------------------------------------------------- main
main() {
    mkdir -p "$BENCH_TMP"
    W=$(mktemp -d "$BENCH_TMP/antemx-bench.XXXXXX")
    chmod 755 "$W" # Postfix daemons (user postfix) must reach their queue below it

    install_postfix
    find_tools
    stop_system_postfix
    build_antemx

    # 20 sessions, 1000 idle sockets, and sockets to the sink
    ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
    require_free "$SINK_PORT" "$A_SMTP" "$A_WEB" "$P_SMTP"
    local sys
    for sys in $SYSTEMS; do
        [[ $sys == antemx || $sys == antemx-base || $sys == postfix ]] || die "SYSTEMS: unknown system $sys"
    done

    local header rows=() size system idx
    local started=$EPOCHREALTIME
    declare -A rate
    for size in $SIZES; do
        for system in $SYSTEMS; do
            run_load "$system" "$size" "$MSGS" "$W/$system-$size"
            rows+=("$(printf '%-11s %7s %7s %8s %9s %10s %9s %6s  %s' "$system" "$size" "$MSGS" "$R_SECS" "$R_RATE" "$R_CPU_MS" "$R_MEM_MB" "$R_OTHER" "$R_STATUS")")
            [[ $R_STATUS == ok ]] && rate[$system-$size]=$R_RATE
            [[ -n $R_DETAIL ]] && rows+=("         ^ $R_DETAIL")
        done
    done

    IDLE_RESULT="skipped (IDLE_CONNS=0)"
    if ((IDLE_CONNS > 0)); then idle_test; fi

    DISK_RESULT="skipped (N_DISK=0)"
    if ((N_DISK > 0)); then
        DISK_BEFORE_KB=0
        DISK_CURVE=""
        DISK_WARM_KB=""
        run_load antemx 5120 "$N_DISK" "$W/disk"
        local ratio
        ratio=$(calc "$DISK_AFTER_KB / ($DISK_BEFORE_KB > 0 ? $DISK_BEFORE_KB : 1)" 2)
        local warm_ratio=n/a
        [[ -n $DISK_WARM_KB ]] && warm_ratio=$(calc "$DISK_AFTER_KB / $DISK_WARM_KB" 2)
        DISK_RESULT="$N_DISK x 5 KB through antemx: $R_STATUS in ${R_SECS}s ($R_RATE msg/s, CPU $R_CPU_MS ms/msg, peak RSS $R_MEM_MB MB); data_dir before $DISK_BEFORE_KB kB, peak during run ${DISK_PEAK_KB} kB (sampled every 5 s), after $DISK_AFTER_KB kB, spool files left $DISK_SPOOL_FILES; after/before = ${ratio}x; after/warm = ${warm_ratio}x (warm = first sample past 10% of the run: ${DISK_WARM_KB:-?} kB after ${DISK_WARM_AT:-?} messages)${R_DETAIL:+; $R_DETAIL}
      data_dir kB by messages delivered (every 5 s, delivered:kB): $DISK_CURVE"
        log "$DISK_RESULT"
        unset DISK_BEFORE_KB
    fi

    # ------------------------------------------------------------ report
    local report
    report=$(
        echo "antemx relay benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(df -T "$W" | awk 'NR==2 {print $2}') disk"
        echo "antemx: $ANTEMX_BIN ($ANTEMX_ORIGIN), RUST_LOG=$ANTEMX_LOG"
        [[ -n ${BASE_BIN:-} ]] && echo "antemx-base: $BASE_BIN (commit $BASE_COMMIT)"
        echo "postfix: $("$POSTCONF" -dh mail_version), logging: $POSTFIX_LOG"
        echo "load: smtp-source -s $SESSIONS -m $MSGS$([[ $REUSE == 1 ]] && echo " -d") -l SIZE; sink: smtp-sink on 127.0.0.1"
        echo
        printf '%-11s %7s %7s %8s %9s %10s %9s %6s  %s\n' system size msgs seconds "msg/s" "CPU ms/msg" "peak MB" "other%" status
        printf '%s\n' "${rows[@]}"
        echo
        for size in $SIZES; do
            [[ " $SYSTEMS " == *" antemx "* && " $SYSTEMS " == *" postfix "* ]] || break
            if [[ -n ${rate[antemx-$size]:-} && -n ${rate[postfix-$size]:-} ]]; then
                echo "ratio antemx/Postfix msg/s at $size bytes: $(calc "${rate[antemx-$size]} / ${rate[postfix-$size]}" 2)x"
            else
                echo "ratio antemx/Postfix msg/s at $size bytes: n/a (a run did not complete)"
            fi
        done
        for size in $SIZES; do
            if [[ -n ${rate[antemx-$size]:-} && -n ${rate[antemx-base-$size]:-} ]]; then
                echo "ratio antemx/antemx-base msg/s at $size bytes: $(calc "${rate[antemx-$size]} / ${rate[antemx-base-$size]}" 2)x"
            fi
        done
        echo "idle: $IDLE_RESULT"
        echo "disk: $DISK_RESULT"
        echo "total benchmark time: $(calc "$EPOCHREALTIME - $started" 0) s"
        echo "peak MB: antemx = VmHWM (peak RSS) of its process; Postfix = highest sampled sum of PSS over master and all daemons (shared pages divided among the processes sharing them)"
        echo "other%: CPU used during the run by everything but the relay, smtp-source, smtp-sink and irq/softirq, in % of all cores: kernel block-I/O workers (the relays' fsyncs), this sandbox's agent, other work; ~10-15% on a quiet machine, more means the run was skewed"
        echo "rates in (parentheses) are partial: delivered so far / time until the run stopped making progress"
    )
    echo "$report"
    if [[ -n $OUT ]]; then
        mkdir -p "$(dirname "$OUT")"
        echo "$report" >"$OUT"
        [[ -n ${DISK_LISTING:-} ]] && printf '\ndata_dir after the disk run (du -ak, kB):\n%s\n' "$DISK_LISTING" >>"$OUT"
        log "results written to $OUT"
    fi
}

if (($# > 0)); then
    echo "usage: [VAR=value ...] $0   (settings are environment variables, see the top of this file)" >&2
    exit 2
fi
main
