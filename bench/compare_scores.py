#!/usr/bin/env python3
"""Next-token quality of one `griffin-cli score` run against another (bench/RESULTS.md's FP8
figures on held-out text): cross-entropy of each over the positions that have a next token, the
relative difference, and top-1 agreement (the same argmax at a position), the way
golden::CompareNextTokens counts them for the fixed text.

    griffin-cli score --model models/demo --text "$(cat TEXT)" --numerics bf16 > base.json
    griffin-cli score --model models/demo --text "$(cat TEXT)" --quantization fp8 > fp8.json
    python3 bench/compare_scores.py base.json fp8.json
"""
import argparse
import json
import sys


def compare(base, other):
    a, b = base["positions"], other["positions"]
    if len(a) != len(b) or any(x["token"] != y["token"] for x, y in zip(a, b)):
        raise ValueError("the two runs scored different tokens")
    scored = [(x, y) for x, y in zip(a, b) if "logprob" in x]
    if not scored:
        raise ValueError("no position has a next token")
    n = len(scored)
    ce_base = -sum(x["logprob"] for x, _ in scored) / n
    ce_other = -sum(y["logprob"] for _, y in scored) / n
    agreed = sum(x["argmax"] == y["argmax"] for x, y in scored)
    return {"positions": n, "ce_base": ce_base, "ce_other": ce_other,
            "ce_relative": (ce_other - ce_base) / ce_base, "agreed": agreed}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="griffin-cli score JSON of the baseline")
    parser.add_argument("other", help="griffin-cli score JSON to compare with it")
    args = parser.parse_args(argv)
    with open(args.base) as f:
        base = json.load(f)
    with open(args.other) as f:
        other = json.load(f)
    try:
        q = compare(base, other)
    except ValueError as e:
        print(f"compare_scores: {e}", file=sys.stderr)
        return 1
    print(f"{q['positions']} positions: cross-entropy {q['ce_base']:.6f} -> {q['ce_other']:.6f} "
          f"nats/token ({100 * q['ce_relative']:+.3f}%); top-1 agreement {q['agreed']} / "
          f"{q['positions']} ({100 * q['agreed'] / q['positions']:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
