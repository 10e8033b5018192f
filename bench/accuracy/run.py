#!/usr/bin/env python3
"""Accuracy and speed of antemx's content filter, beside bogofilter, on the
corpora of ../shared/corpus (see its README). Driven by bench/accuracy.sh.

Steps:
  1. Unpack the archives into target/corpus (once), then write a stripped copy
     of every message into target/corpus-stripped (once): the mbox "From " line
     and the label-leaking headers the corpus README lists are removed. Both
     filters read exactly these files.
  2. On-line protocol on trec07p-first20k, delivery order: each message is
     scored, then trained on its true label. antemx does it in one process
     (`antemx train --online INDEX`); bogofilter with one call to score and
     one to train per message.
  3. Cross-era: the databases trained on all of trec07p-first20k by step 2
     score modern-4k, without further training (antemx scan --json;
     bogofilter -b).
  4. Figures: (1-ROCA)%, spam missed at 0.1% ham misclassified, ham sidelined
     and spam passed at the filters' own thresholds; filter time per message
     and messages per second per core.

Only the Python standard library is used.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

# Header names (lower case) removed before scoring: an earlier filter's
# verdict, or routing stamps that reveal the label (corpus README).
STRIP_PREFIXES = (
    "x-spam", "x-microsoft-antispam", "x-forefront-antispam",
    "x-ms-exchange-organization-scl", "x-virus", "x-barracuda",
    "x-proofpoint", "x-dspam", "x-bogosity", "x-amavis", "arc-",
)
STRIP_NAMES = ("received-spf", "authentication-results", "x-miltered", "x-uuid")


def strip_message(raw: bytes) -> bytes:
    """The message without its mbox From line and the listed headers."""
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        raw = raw[nl + 1:] if nl >= 0 else b""
    out = []
    pos = 0
    skipping = False
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line = raw[pos:end]
        if line in (b"\n", b"\r\n"):
            break  # end of the header block
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)  # continuation of a kept header
        else:
            name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
            skipping = name.startswith(STRIP_PREFIXES) or name in STRIP_NAMES
            if not skipping:
                out.append(line)
        pos = end
    return b"".join(out) + raw[pos:]


def unpack(corpus_dir, work):
    unpacked = os.path.join(work, "corpus")
    os.makedirs(unpacked, exist_ok=True)
    for archive, marker in (("trec07p-first20k.tar.xz", "trec07p"),
                            ("modern-4k.tar.xz", "phishing_pot")):
        if not os.path.isdir(os.path.join(unpacked, marker)):
            print(f"unpacking {archive}", file=sys.stderr)
            with tarfile.open(os.path.join(corpus_dir, archive)) as tar:
                tar.extractall(unpacked, filter="data")
    return unpacked


def prepare(corpus_dir, work):
    """Stripped copies and index files; returns (trec_index, modern_index)."""
    stripped = os.path.join(work, "corpus-stripped")
    trec_index = os.path.join(stripped, "trec07p", "index")
    modern_index = os.path.join(stripped, "modern", "index")
    done = os.path.join(stripped, ".done")
    if os.path.exists(done):
        return trec_index, modern_index
    unpacked = unpack(corpus_dir, work)
    shutil.rmtree(stripped, ignore_errors=True)
    print("writing stripped copies", file=sys.stderr)

    def copy(src, dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as f:
            raw = f.read()
        with open(dst, "wb") as f:
            f.write(strip_message(raw))

    lines = []
    with open(os.path.join(unpacked, "trec07p", "index")) as f:
        for line in f:
            label, path = line.split()
            copy(os.path.join(unpacked, "trec07p", path),
                 os.path.join(stripped, "trec07p", path))
            lines.append(f"{label} {path}\n")
    with open(trec_index, "w") as f:
        f.writelines(lines)

    lines = []
    for label, sub in (("spam", "phishing_pot/spam"), ("ham", "usrp-users-list/ham")):
        src_dir = os.path.join(unpacked, sub)
        for name in sorted(os.listdir(src_dir)):
            rel = f"{label}/{name}"
            copy(os.path.join(src_dir, name), os.path.join(stripped, "modern", rel))
            lines.append(f"{label} {rel}\n")
    with open(modern_index, "w") as f:
        f.writelines(lines)
    open(done, "w").close()
    return trec_index, modern_index


def read_index(index):
    base = os.path.dirname(index)
    with open(index) as f:
        return [(label, os.path.join(base, path)) for label, path in
                (line.split() for line in f if line.strip())]


# ---------------------------------------------------------------- figures

def auc(scored):
    """Area under the ROC curve: the probability that a random spam scores
    above a random ham, ties counted half (Mann-Whitney)."""
    items = sorted(scored, key=lambda x: x[0])
    n_spam = sum(1 for _, is_spam in items if is_spam)
    n_ham = len(items) - n_spam
    if n_spam == 0 or n_ham == 0:
        return float("nan")
    hams_below = 0.0  # ham strictly below the current score group
    wins = 0.0
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j][0] == items[i][0]:
            j += 1
        group_spam = sum(1 for k in range(i, j) if items[k][1])
        group_ham = (j - i) - group_spam
        wins += group_spam * (hams_below + 0.5 * group_ham)
        hams_below += group_ham
        i = j
    return wins / (n_spam * n_ham)


def spam_missed_at_ham_rate(scored, ham_rate=0.001):
    """Percentage of spam not caught when the threshold lets at most
    `ham_rate` of the ham through as spam: the threshold sits at the
    (k+1)-th highest ham score, k = floor(ham_rate * hams); spam must score
    strictly above it."""
    hams = sorted((s for s, is_spam in scored if not is_spam), reverse=True)
    spams = [s for s, is_spam in scored if is_spam]
    k = int(ham_rate * len(hams))
    threshold = hams[k] if k < len(hams) else float("-inf")
    missed = sum(1 for s in spams if s <= threshold)
    return 100.0 * missed / len(spams)


def summary(name, scored, ham_flagged, spam_passed):
    n_spam = sum(1 for _, s in scored if s)
    n_ham = len(scored) - n_spam
    return {
        "filter": name,
        "messages": len(scored),
        "spam": n_spam,
        "ham": n_ham,
        "1-ROCA%": 100.0 * (1.0 - auc(scored)),
        "spam missed % at 0.1% ham": spam_missed_at_ham_rate(scored),
        "ham flagged %": 100.0 * ham_flagged / n_ham,
        "spam passed %": 100.0 * spam_passed / n_spam,
    }


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- antemx

def antemx_config(data_dir, path):
    # Network checks cannot replay what these messages met when they were
    # sent (corpus README): DNS goes to a closed local port and fails at
    # once, so the figures measure the content filter.
    with open(path, "w") as f:
        f.write(f'[node]\nhostname = "bench.antemx.test"\ndata_dir = "{data_dir}"\n'
                '[dns]\nservers = ["127.0.0.1:9"]\ntimeout = "200ms"\n'
                '[filter]\nsideline_at = 5.0\nreject_at = 15.0\n')


def antemx_online(binary, config, index):
    cpu0, t0 = child_cpu(), time.time()
    proc = subprocess.run([binary, "train", "--online", index, "--config", config],
                          check=True, stdout=subprocess.PIPE)
    cpu, wall = child_cpu() - cpu0, time.time() - t0
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return records, cpu, wall


def antemx_scan(binary, config, files):
    cpu0, t0 = child_cpu(), time.time()
    proc = subprocess.run([binary, "scan", "--json", "--config", config] + files,
                          check=True, stdout=subprocess.PIPE)
    cpu, wall = child_cpu() - cpu0, time.time() - t0
    by_file = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        by_file[record["file"]] = record
    return [by_file[f] for f in files], cpu, wall


# ---------------------------------------------------------------- bogofilter

def bogofilter_score(db, path):
    proc = subprocess.run(["bogofilter", "-d", db, "-TT", "-I", path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    words = proc.stdout.split()
    if not words:
        # Before its first training bogofilter has no database and says
        # nothing: that is "don't know", which it otherwise writes as 0.52.
        if not os.path.exists(os.path.join(db, "wordlist.db")):
            return 0.52
        raise RuntimeError(f"bogofilter on {path}: {proc.stderr.decode(errors='replace')}")
    return float(words[-1])


def bogofilter_online(db, messages):
    scores = []
    cpu0, t0 = child_cpu(), time.time()
    for n, (label, path) in enumerate(messages):
        scores.append(bogofilter_score(db, path))
        subprocess.run(["bogofilter", "-d", db, "-s" if label == "spam" else "-n",
                        "-I", path], check=True)
        if n % 2000 == 1999:
            print(f"  bogofilter on-line: {n + 1}", file=sys.stderr)
    return scores, child_cpu() - cpu0, time.time() - t0


def bogofilter_bulk(db, paths):
    """Scores without training, one process (-b reads names from stdin)."""
    proc = subprocess.run(["bogofilter", "-d", db, "-b", "-TT"], input="\n".join(paths) + "\n",
                          stdout=subprocess.PIPE, text=True, check=False)
    scores = {}
    for line in proc.stdout.splitlines():
        path, score = line.rsplit(" ", 1)
        scores[path] = float(score)
    return [scores[p] for p in paths]


# ---------------------------------------------------------------- main

def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--antemx", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--limit", type=int, default=0,
                        help="use only the first N trec messages (quick runs)")
    parser.add_argument("--skip-bogofilter", action="store_true")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    trec_index, modern_index = prepare(args.corpus, args.work)
    trec = read_index(trec_index)
    modern = read_index(modern_index)
    tmp = tempfile.mkdtemp(prefix="antemx-accuracy-", dir=args.work)
    if args.limit:
        trec = trec[:args.limit]
        trec_index = os.path.join(tmp, "trec.index")
        with open(trec_index, "w") as f:
            f.writelines(f"{label} {path}\n" for label, path in trec)
    results = {}

    # antemx, on-line
    config = os.path.join(tmp, "antemx.toml")
    antemx_config(os.path.join(tmp, "antemx-data"), config)
    print(f"antemx on-line: {len(trec)} messages", file=sys.stderr)
    records, cpu, wall = antemx_online(args.antemx, config, trec_index)
    scored = [(r["score"], r["label"] == "spam") for r in records]
    ham_flagged = sum(1 for r in records if r["label"] == "ham" and r["verdict"] != "accept")
    spam_passed = sum(1 for r in records if r["label"] == "spam" and r["verdict"] == "accept")
    results["antemx online"] = summary("antemx", scored, ham_flagged, spam_passed)
    # Which rules the sidelined ham carried: what to look at first.
    flagged_rules = {}
    for r in records:
        if r["label"] == "ham" and r["verdict"] != "accept":
            for name, _ in r["rules"]:
                flagged_rules[name] = flagged_rules.get(name, 0) + 1
    results["antemx online: rules of the ham flagged"] = flagged_rules
    times = [r["filter_us"] for r in records]
    results["antemx online"]["process CPU s"] = cpu
    results["antemx online"]["wall s"] = wall
    results["antemx speed"] = {
        "filter us median": statistics.median(times),
        "filter us p99": percentile(times, 0.99),
        "filter us mean": statistics.fmean(times),
        "messages/s per core (on-line: score + learn, process CPU)": len(records) / cpu,
    }

    # antemx, cross-era (the database now holds every trec message)
    files = [path for _, path in modern]
    print(f"antemx cross-era: {len(files)} messages", file=sys.stderr)
    scans, cpu, wall = antemx_scan(args.antemx, config, files)
    scored = [(s["score"], label == "spam") for s, (label, _) in zip(scans, modern)]
    ham_flagged = sum(1 for s, (label, _) in zip(scans, modern)
                      if label == "ham" and s["verdict"] != "accept")
    spam_passed = sum(1 for s, (label, _) in zip(scans, modern)
                      if label == "spam" and s["verdict"] == "accept")
    results["antemx cross-era"] = summary("antemx", scored, ham_flagged, spam_passed)
    results["antemx speed"]["messages/s per core (scan, process CPU incl. start-up)"] = len(files) / cpu
    fired = {}
    for s, (label, _) in zip(scans, modern):
        for rule in s["rules"]:
            key = rule["name"]
            fired.setdefault(key, [0, 0])[0 if label == "spam" else 1] += 1
    results["antemx cross-era rules (spam, ham)"] = fired

    if not args.skip_bogofilter:
        db = os.path.join(tmp, "bogofilter")
        os.makedirs(db)
        print(f"bogofilter on-line: {len(trec)} messages", file=sys.stderr)
        scores, cpu, wall = bogofilter_online(db, trec)
        scored = [(s, label == "spam") for s, (label, _) in zip(scores, trec)]
        # bogofilter's own cutoffs: spam from 0.99, unsure from 0.45.
        ham_flagged = sum(1 for s, (l, _) in zip(scores, trec) if l == "ham" and s >= 0.99)
        spam_passed = sum(1 for s, (l, _) in zip(scores, trec) if l == "spam" and s < 0.99)
        results["bogofilter online"] = summary("bogofilter", scored, ham_flagged, spam_passed)
        results["bogofilter online"]["process CPU s (score + train, 2 processes each)"] = cpu
        print(f"bogofilter cross-era: {len(files)} messages", file=sys.stderr)
        scores = bogofilter_bulk(db, files)
        scored = [(s, label == "spam") for s, (label, _) in zip(scores, modern)]
        ham_flagged = sum(1 for s, (l, _) in zip(scores, modern) if l == "ham" and s >= 0.99)
        spam_passed = sum(1 for s, (l, _) in zip(scores, modern) if l == "spam" and s < 0.99)
        results["bogofilter cross-era"] = summary("bogofilter", scored, ham_flagged, spam_passed)

    shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
