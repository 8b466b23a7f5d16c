#!/usr/bin/env python3
"""Latency-throughput curves from griffin-bench JSON results (--result_json), as PNG and SVG.

    python3 bench/plot.py results/grpc.json results/http.json --out bench/serving_2b
writes bench/serving_2b.png and bench/serving_2b.svg: TTFT and TPOT (median and p99) against
output-token throughput, one line per file (one point per load level in the file).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_levels(path):
    data = json.loads(Path(path).read_text())
    levels = data.get("levels")
    if not isinstance(levels, list) or not levels:
        raise SystemExit(f"{path}: no 'levels' in this file (is it griffin-bench --result_json output?)")
    points = sorted(levels, key=lambda lv: lv["output_throughput"])
    return data, points


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="griffin-bench --result_json files")
    parser.add_argument("--labels", nargs="*", help="one legend label per file (default: file names)")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--title", default="griffin-server: latency vs throughput")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(p).stem for p in args.results]
    if len(labels) != len(args.results):
        raise SystemExit("--labels needs one label per results file")

    fig, (ax_ttft, ax_tpot) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path, label in zip(args.results, labels):
        _, points = load_levels(path)
        x = [p["output_throughput"] for p in points]
        for ax, key in ((ax_ttft, "ttft_ms"), (ax_tpot, "tpot_ms")):
            line, = ax.plot(x, [p[key]["median"] for p in points], marker="o", label=f"{label} median")
            ax.plot(x, [p[key]["p99"] for p in points], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{label} p99")
    for ax, name in ((ax_ttft, "TTFT (ms)"), (ax_tpot, "TPOT (ms)")):
        ax.set_xlabel("output throughput (tok/s)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
