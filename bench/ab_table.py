#!/usr/bin/env python3
"""bench/RESULTS.md's A/B table from bench/ab_decode.sh's log: one row per decode shape (batch,
position), one column per variant in the order they first appear, each cell the step times of
that variant's rounds in round order (ms), and with --ratio BASE each variant's median over
BASE's median.

    python3 bench/ab_table.py LOG [--ratio BASE]

Failed runs are listed after the table; the exit status is 1 when the log holds one, or holds no
figure at all.
"""
import argparse
import re
import statistics
import sys

LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.+-]+) r(?P<round>\d+): (?P<rest>.*)$")
FIGURE = re.compile(
    r"^\| decode step, batch (?P<batch>\d+), position (?P<position>\d+) \| (?P<ms>[\d.]+) ms")


def read(lines):
    """(figures, failures): figures[name][(batch, position)] = [(round, ms)], failures = [line]."""
    figures, failures = {}, []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = LINE.match(line)
        if not m:
            raise ValueError(f"line {number} is not 'NAME rR: ...': {line!r}")
        rest = m["rest"]
        if rest.startswith("failed"):
            failures.append(line)
            figures.setdefault(m["name"], {})
            continue
        f = FIGURE.match(rest)
        if not f:
            raise ValueError(f"line {number} holds no decode figure: {line!r}")
        shape = (int(f["batch"]), int(f["position"]))
        figures.setdefault(m["name"], {}).setdefault(shape, []).append(
            (int(m["round"]), float(f["ms"])))
    return figures, failures


def table(figures, ratio=None):
    names = list(figures)
    if ratio is not None and ratio not in figures:
        raise ValueError(f"--ratio {ratio}: no such variant (have {', '.join(names)})")
    shapes = sorted({s for v in figures.values() for s in v}, key=lambda s: (s[1], s[0]))
    head = ["batch, position"] + names
    if ratio is not None:
        head += [f"{n} / {ratio}" for n in names if n != ratio]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for shape in shapes:
        cells = [f"{shape[0]}, {shape[1]}"]
        medians = {}
        for n in names:
            runs = sorted(figures[n].get(shape, []))
            cells.append(", ".join(f"{ms:.3f}" for _, ms in runs) or "-")
            if runs:
                medians[n] = statistics.median(ms for _, ms in runs)
        if ratio is not None:
            for n in names:
                if n == ratio:
                    continue
                ok = n in medians and ratio in medians
                cells.append(f"{medians[n] / medians[ratio]:.3f}" if ok else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--ratio", metavar="BASE", help="each variant's median over this one's")
    a = ap.parse_args()
    with open(a.log) as f:
        try:
            figures, failures = read(f)
            text = table(figures, a.ratio)
        except ValueError as e:
            sys.exit(f"ab_table.py: {a.log}: {e}")
    if not any(figures.values()):
        sys.exit(f"ab_table.py: {a.log}: no decode figure")
    print(text)
    for line in failures:
        print(f"\n{line}" if line is failures[0] else line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
