#!/usr/bin/env python3
"""bench/RESULTS.md's A/B table from bench/ab_decode.sh's log: one row per shape (a decode step's
"batch, position"; "prefill S x T", its time from the printed tok/s, which has more digits than
the ms column; "R restored + P", the first token after a restored prefix), one column per variant
in the order they first appear, each cell that variant's times in round order (ms), and with
--ratio BASE each variant's median over BASE's median.

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
PREFILL = re.compile(r"^\| prefill (?P<s>\d+) x (?P<t>\d+) \| [\d.]+ ms \((?P<tps>\d+) tok/s\)")
# A step launched eagerly beside its own graph (logs before session 29 kept it): no A/B figure.
EAGER = re.compile(r"^\| decode step, batch \d+, position \d+, launched eagerly \|")
RESTORED = re.compile(r"^\| time to first token, \d+ prompt, (?P<restored>\d+) restored \+ "
                      r"(?P<prefilled>\d+) prefilled \| (?P<ms>[\d.]+) ms")


def shape_and_ms(rest):
    """((kind, a, b), ms) for a figure's line, None for any other line. Kinds sort decode first."""
    if f := FIGURE.match(rest):
        return (0, int(f["position"]), int(f["batch"])), float(f["ms"])
    if f := PREFILL.match(rest):
        s, t = int(f["s"]), int(f["t"])
        return (1, s, t), s * t / int(f["tps"]) * 1e3
    if f := RESTORED.match(rest):
        return (2, int(f["restored"]), int(f["prefilled"])), float(f["ms"])
    return None


def label(shape):
    kind, a, b = shape
    return (f"{b}, {a}" if kind == 0 else f"prefill {a} x {b}" if kind == 1
            else f"{a} restored + {b}")


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
        if EAGER.match(rest):
            continue
        figure = shape_and_ms(rest)
        if figure is None:
            raise ValueError(f"line {number} holds no figure: {line!r}")
        shape, ms = figure
        figures.setdefault(m["name"], {}).setdefault(shape, []).append((int(m["round"]), ms))
    return figures, failures


def table(figures, ratio=None):
    names = list(figures)
    if ratio is not None and ratio not in figures:
        raise ValueError(f"--ratio {ratio}: no such variant (have {', '.join(names)})")
    shapes = sorted({s for v in figures.values() for s in v})
    head = ["shape (decode: batch, position)"] + names
    if ratio is not None:
        head += [f"{n} / {ratio}" for n in names if n != ratio]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for shape in shapes:
        cells = [label(shape)]
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
        sys.exit(f"ab_table.py: {a.log}: no figure")
    print(text)
    for line in failures:
        print(f"\n{line}" if line is failures[0] else line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
