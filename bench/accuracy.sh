#!/usr/bin/env bash
# bench/accuracy.sh: accuracy and speed of antemx's content filter beside
# bogofilter, on ../shared/corpus (see its README and BENCHMARKS.md).
#
#   bench/accuracy.sh                 # the whole run, about 10 minutes
#   LIMIT=3000 bench/accuracy.sh      # first 3000 trec messages only (quick)
#   BOGOFILTER=0 bench/accuracy.sh    # antemx alone
#
# Environment:
#   CORPUS=../shared/corpus   where the archives are
#   WORK=target               corpus/ (unpacked) and corpus-stripped/ go here,
#                             once; never into the repository's tracked files
#   BUILD=1                   0: do not run cargo build --release
#   ANTEMX_BIN=...            binary to measure (default target/release/antemx)
#   OUT=bench/results/accuracy.json   the figures as JSON ("" : nowhere)
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=${CORPUS:-../shared/corpus}
WORK=${WORK:-target}
LIMIT=${LIMIT:-0}
BOGOFILTER=${BOGOFILTER:-1}
OUT=${OUT-bench/results/accuracy.json}

if [ ! -f "$CORPUS/trec07p-first20k.tar.xz" ] || [ ! -f "$CORPUS/modern-4k.tar.xz" ]; then
    echo "accuracy.sh: the corpus is not in $CORPUS (set CORPUS=...)" >&2
    exit 2
fi
if [ "$BOGOFILTER" = 1 ] && ! command -v bogofilter >/dev/null; then
    echo "accuracy.sh: installing bogofilter (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq bogofilter >/dev/null
fi
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release --quiet
fi
ANTEMX_BIN=${ANTEMX_BIN:-target/release/antemx}

args=(--antemx "$(realpath "$ANTEMX_BIN")" --corpus "$CORPUS" --work "$(realpath "$WORK")" --limit "$LIMIT")
[ "$BOGOFILTER" = 1 ] || args+=(--skip-bogofilter)
[ -z "$OUT" ] || { mkdir -p "$(dirname "$OUT")"; args+=(--json-out "$OUT"); }
echo "bogofilter: $(bogofilter -V 2>/dev/null | head -1 || echo none); machine: $(nproc) cores, $(uname -m)" >&2
python3 bench/accuracy/run.py "${args[@]}"
