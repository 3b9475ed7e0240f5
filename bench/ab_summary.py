#!/usr/bin/env python3
"""Summarises a bench/h200-ab.sh log: for each quant and arm, the median over rounds of vision,
prefill, time to first token (ms), decode tok/s and peak MiB, and each bench-ops row per arm.

    python3 bench/ab_summary.py LOG
"""
import re
import statistics
import sys
from collections import defaultdict

FIGURES = [
    ("vision", r"^vision \+ aligner\s+([\d.]+) ms"),
    ("prefill", r"^prefill \(\d+ tokens\)\s+([\d.]+) ms"),
    ("ttft", r"^time to first token\s+([\d.]+) ms"),
    ("decode", r"^decode \(\d+ tokens\)\s+([\d.]+) tok/s"),
    ("peak", r"^GPU memory peak\s+([\d.]+) MiB"),
]


def label(arm):
    """'binary|settings' as 'binary settings' (a table cell cannot hold '|')."""
    return arm.replace("|", " ").strip()


def main(path):
    bench = defaultdict(lambda: defaultdict(list))  # (quant, arm) -> figure -> values
    ops = defaultdict(dict)  # row name -> arm -> ms
    step = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"^=== (.*) \(\d\d:\d\d:\d\d\)$", line)
        if m:
            step = m.group(1)
            continue
        if step is None:
            continue
        b = re.match(r"bench --quant (\S+) \((.*), round \d+\)$", step)
        if b:
            for name, pat in FIGURES:
                f = re.match(pat, line)
                if f:
                    bench[(b.group(1), b.group(2))][name].append(float(f.group(1)))
        o = re.match(r"bench-ops --only \S+ \((.*)\)$", step)
        if o and line.startswith("|"):
            # | name | ms | GFLOP/s | GB/s | spread |, where a name may hold '|' (gate|up).
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 5 and re.match(r"^[\d.]+$", cells[-4]):
                ops["|".join(cells[:-4]).replace("|", "/")][o.group(1)] = cells[-4]
    if bench:
        print("| quant | arm | " + " | ".join(n for n, _ in FIGURES) + " |")
        print("|---|---|" + "---|" * len(FIGURES))
        for (q, arm), figs in sorted(bench.items()):
            cells = []
            for name, _ in FIGURES:
                v = figs.get(name, [])
                cells.append(f"{statistics.median(v):.2f} ({len(v)})" if v else "-")
            print(f"| {q} | {label(arm)} | " + " | ".join(cells) + " |")
    if ops:
        arms = sorted({a for row in ops.values() for a in row})
        print()
        print("| op (ms) | " + " | ".join(label(a) for a in arms) + " |")
        print("|---|" + "---|" * len(arms))
        for name, row in ops.items():
            print(f"| {name} | " + " | ".join(row.get(a, "-") for a in arms) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
