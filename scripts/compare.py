#!/usr/bin/env python3
"""Runs a SwiftAI benchmark and its PyTorch counterpart alternately and prints medians side by side.

Usage: compare.py ROUNDS 'SWIFTAI COMMAND' 'PYTORCH COMMAND'
Both commands print JSON lines (swiftai bench contract). Figures are matched on every key except the
measured ones (gflops, ms, images_per_s, framework, memory_format) and reported as medians over rounds.
"""
import json, shlex, statistics, subprocess, sys

MEASURED = {"gflops", "ms", "images_per_s", "framework", "memory_format", "accuracy", "valid_loss",
            "train_images_per_s", "threads", "epochs", "maxrss_mb"}

def run(cmd):
    """The command's JSON lines, each extended with the process's peak RSS (MB, from /usr/bin/time)."""
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + shlex.split(cmd), capture_output=True, text=True, check=True)
    rss = [int(l.split()[1]) / 1024 for l in p.stderr.splitlines() if l.startswith("MAXRSS ")]
    rows = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            if rss: row["maxrss_mb"] = rss[-1]
            rows.append(row)
    return rows

def key(row):
    return json.dumps({k: v for k, v in row.items() if k not in MEASURED}, sort_keys=True)

def main():
    rounds, ours, theirs = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    a, b = {}, {}
    for _ in range(rounds):
        for store, cmd in ((a, ours), (b, theirs)):
            for row in run(cmd):
                for m in ("gflops", "ms", "images_per_s", "train_images_per_s", "accuracy", "maxrss_mb"):
                    if m in row:
                        store.setdefault((key(row), m), []).append(row[m])
    for (k, m), vals in a.items():
        other = b.get((k, m), [])
        mo = statistics.median(vals)
        mt = statistics.median(other) if other else float("nan")
        digits = 4 if m == "accuracy" else 1
        print(json.dumps({"figure": json.loads(k), "metric": m, "swiftai": round(mo, digits), "pytorch": round(mt, digits),
                          "ratio": round(mo / mt, 2) if other else None, "rounds": len(vals)}))

if __name__ == "__main__":
    main()
