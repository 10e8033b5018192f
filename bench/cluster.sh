#!/usr/bin/env bash
# The cluster's cost, on one machine: three antemx nodes on loopback.
#
#   bash bench/cluster.sh                # 5,000 sidelined messages, 200 releases
#   MSGS=1000 RELEASES=50 bash bench/cluster.sh
#
# For `copies` = 1, then 2 (the default), in the same run:
#   - smtp-source sends MSGS messages of 5 KB, 20 sessions, to mx1; every
#     one is sidelined (sideline_at = 1.0; smtp-source's HELO scores 1.0).
#     Reported: the acceptance rate (smtp-source's run), and how long until
#     every copy is placed (the nodes' antemx_sideline_messages summed).
#   - the cluster-wide listing through mx2's admin API (`sideline list`).
#   - RELEASES releases one after another through mx2's admin API: mx2 asks
#     the receiving node (mx1) to decide, which checks the other holders,
#     queues the message and tells the peers to drop their copies.
#     Reported: median and 95th percentile per release, and until smtp-sink
#     has every released message.
# Needs smtp-source and smtp-sink (Debian package postfix), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

MSGS=${MSGS:-5000}
RELEASES=${RELEASES:-200}
BASE_PORT=${BASE_PORT:-27100}
W=$(mktemp -d /tmp/antemx-cluster-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:.${2:-1}f}')"; }

for t in smtp-source smtp-sink; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || die "$t not found (apt-get install postfix)"
done
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
cargo build --release --quiet
BIN=$PWD/target/release/antemx

SINK_PORT=$BASE_PORT
smtp_port() { echo $((BASE_PORT + 10 + $1)); }
web_port() { echo $((BASE_PORT + 20 + $1)); }

start_sink() {
    local user=()
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    "$SMTP_SINK" -c "${user[@]}" -m 1000 "127.0.0.1:$SINK_PORT" 1024 >"$W/sink.out" 2>&1 &
    PIDS+=($!)
    sleep 0.3
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "smtp-sink did not start: $(cat "$W/sink.out")"
}

sink_count() { # messages smtp-sink has received so far (its "mesg=N" counter)
    local tail_text
    tail_text=$(tail -c 200 "$W/sink.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 || true)
    echo "${tail_text#mesg=}" | sed 's/^$/0/'
}

start_cluster() { # copies
    local copies=$1 i
    NODE_PIDS=()
    for i in 1 2 3; do
        mkdir -p "$W/mx$i"
        cat >"$W/mx$i/antemx.toml" <<EOF
[node]
hostname = "mx$i.bench.test"
data_dir = "$W/mx$i/data-$copies"
[smtp]
listen = ["127.0.0.1:$(smtp_port $i)"]
max_connections_per_ip = 500
[web]
listen = "127.0.0.1:$(web_port $i)"
[filter]
sideline_at = 1.0
reject_at = 50.0
[cluster]
nodes = { mx1 = "127.0.0.1:$(web_port 1)", mx2 = "127.0.0.1:$(web_port 2)", mx3 = "127.0.0.1:$(web_port 3)" }
secret = "bench-cluster-secret-0123456789"
copies = $copies
[[domain]]
name = "bench.test"
deliver_to = "127.0.0.1:$SINK_PORT"
tls = "none"
EOF
        RUST_LOG=warn "$BIN" serve --node "mx$i" --config "$W/mx$i/antemx.toml" >"$W/mx$i/log-$copies" 2>&1 &
        PIDS+=($!)
        NODE_PIDS+=($!)
    done
    for i in 1 2 3; do
        for _ in $(seq 100); do
            curl -sf -m 1 "http://127.0.0.1:$(web_port $i)/healthz" >/dev/null && break
            sleep 0.1
        done
    done
}

stop_cluster() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

copies_held() { # sum of the nodes' antemx_sideline_messages
    local i total=0 n
    for i in 1 2 3; do
        n=$(curl -sf -m 5 "http://127.0.0.1:$(web_port $i)/metrics" | awk '$1 == "antemx_sideline_messages" { print int($2) }')
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

cpu_ticks() { # user+system ticks of each node process: "mx1 mx2 mx3"
    local pid out=()
    for pid in "${NODE_PIDS[@]}"; do
        read -r -a f <"/proc/$pid/stat"
        out+=($((f[13] + f[14])))
    done
    echo "${out[*]}"
}

RESULTS=()
start_sink
for copies in 1 2; do
    log "copies = $copies: three nodes, $MSGS messages to mx1"
    start_cluster "$copies"
    ticks0=$(cpu_ticks)
    t0=$(now)
    "$SMTP_SOURCE" -s 20 -m "$MSGS" -l 5120 -f bench@sender.test -t user@bench.test "127.0.0.1:$(smtp_port 1)"
    t1=$(now)
    want=$((MSGS * copies))
    for _ in $(seq 1200); do
        [[ $(copies_held) -ge $want ]] && break
        sleep 0.1
    done
    t2=$(now)
    held=$(copies_held)
    [[ $held -ge $want ]] || die "only $held of $want copies placed"
    read -r -a before_ticks <<<"$ticks0"
    read -r -a after_ticks <<<"$(cpu_ticks)"
    per_node=()
    for i in 0 1 2; do
        per_node+=("$(calc "(${after_ticks[i]} - ${before_ticks[i]}) * 1000 / $(getconf CLK_TCK) / $MSGS" 2)")
    done
    cpu_ms=$(calc "(${per_node[0]} + ${per_node[1]} + ${per_node[2]})" 2)

    t3=$(now)
    curl -sf -m 120 "http://127.0.0.1:$(web_port 2)/admin/sideline" >"$W/list.json"
    t4=$(now)
    listed=$(python3 -c "import json; print(len(json.load(open('$W/list.json'))))")
    [[ $listed -eq $MSGS ]] || die "mx2 lists $listed of $MSGS"

    before=$(sink_count)
    python3 - "$W/list.json" "$RELEASES" "$(web_port 2)" >"$W/release-times" <<'EOF'
import json, sys, time, urllib.request
entries, count, port = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
for entry in entries[:count]:
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/sideline/{entry['id']}/release", method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200, answer.status
    print(f"{(time.monotonic() - started) * 1000:.3f}")
EOF
    t5=$(now)
    for _ in $(seq 600); do
        [[ $(($(sink_count) - before)) -ge $RELEASES ]] && break
        sleep 0.1
    done
    t6=$(now)
    delivered=$(($(sink_count) - before))
    [[ $delivered -eq $RELEASES ]] || die "smtp-sink got $delivered of $RELEASES released messages"
    for _ in $(seq 100); do
        [[ $(copies_held) -eq $(((MSGS - RELEASES) * copies)) ]] && break
        sleep 0.1
    done
    left=$(copies_held)
    stats=$(python3 -c "
import statistics
t = sorted(float(x) for x in open('$W/release-times'))
print(f'{statistics.median(t):.1f} {t[int(len(t) * 0.95) - 1]:.1f}')")
    RESULTS+=("copies=$copies: accept $(calc "$MSGS / ($t1 - $t0)") msg/s; all $want copies placed $(calc "$t2 - $t0") s after the first message ($(calc "$t2 - $t1" 2) s after the last 250); node CPU $cpu_ms ms per message (mx1 ${per_node[0]}, mx2 ${per_node[1]}, mx3 ${per_node[2]}); cluster-wide list of $MSGS on mx2 $(calc "($t4 - $t3) * 1000" 0) ms; $RELEASES releases through mx2: median ${stats% *} ms, p95 ${stats#* } ms each, all delivered $(calc "$t6 - $t3 - ($t4 - $t3)" 2) s after the first; copies left $left (expected $(((MSGS - RELEASES) * copies)))")
    log "${RESULTS[-1]}"
    stop_cluster
done

echo "antemx cluster benchmark, $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores, three nodes and smtp-source/smtp-sink on loopback"
printf '%s\n' "${RESULTS[@]}"
