#!/usr/bin/env python3
"""bench/PROFILE.md's per-kernel table for one step: joins engine_bench --profile's launch trace
(what each launch computes, the bytes it must move and FLOPs it must do, in launch order) with
ncu's per-kernel durations of the same step (graph nodes profiled one by one).

    python3 bench/profile_table.py TRACE.jsonl NCU.csv [--step_ms T] [--title TEXT]

Launches are grouped by what they compute across layers ("recurrent x|y projection" over the
18 recurrent layers). Per group: time, share of the kernel time, bytes, FLOPs, the group's own
floor (max(bytes / 4.3 TB/s, FLOPs / 790 TFLOP/s), shared/PERF.md) and time / floor. With
--step_ms (the step's measured time, a graph replay, from engine_bench) the difference between
it and the kernels' sum is reported as the gaps between kernels.
"""
import argparse
import csv
import json
import re
import sys

BANDWIDTH = 4.3e12
FLOPS = 790e12


def read_ncu(path):
    """Kernel rows in launch order: (name, seconds)."""
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own log lines first
    rows = list(csv.reader(lines))
    header = rows[0]
    name_col = header.index("Kernel Name")
    time_col = header.index("gpu__time_duration.sum")
    units = rows[1]
    scale = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3,
             "ms": 1e-3, "second": 1.0, "s": 1.0}[units[time_col]]
    out = []
    for r in rows[2:]:
        out.append((r[name_col], float(r[time_col].replace(",", "")) * scale))
    return out


LIBRARY = re.compile(r"nvjet|cublas|cutlass|xmma|splitKreduce|gemmSN|gemv2")


# Our kernels built from CUTLASS templates: their names are cutlass::device_kernel<...>, told
# apart by a type of ours among the template arguments.
OWN_CUTLASS = {"GemmGeGlu": "GeluTanhOp"}


# Trace kinds that are a library call running kernels of the library's own naming.
LIBRARY_KINDS = {"CudnnAttention"}


def own(name):
    """Our kernels (ncu abbreviates namespaces, so match what cuBLASLt's are called instead)."""
    return LIBRARY.search(name) is None or any(tag in name for tag in OWN_CUTLASS.values())


def is_kind(kind, name):
    """Whether kernel `name` is of the trace's kernel family `kind`."""
    tag = OWN_CUTLASS.get(kind)
    return tag in name if tag else kind in base(name)


def base(name):
    """The kernel's own name, without its parameter list (which names other types)."""
    return name.split("(")[0]


def join(trace, kernels):
    """Assigns each kernel row to a trace record (see the module docstring)."""
    times = [0.0] * len(trace)
    names = [[] for _ in trace]
    i = 0
    for n, rec in enumerate(trace):
        if rec["kernel"] == "gemm":
            start = i
            while i < len(kernels) and not own(kernels[i][0]):
                times[n] += kernels[i][1]
                names[n].append(kernels[i][0])
                i += 1
            if i == start:
                sys.exit(f"record {n} ({rec['op']}): expected a cuBLASLt kernel, got {kernels[i][0][:80] if i < len(kernels) else 'nothing'}")
            continue
        if rec["kernel"] in LIBRARY_KINDS:
            # A library's launch (cuDNN's attention): whatever kernels it ran, up to the next
            # record's own kernel.
            start = i
            nxt = trace[n + 1]["kernel"] if n + 1 < len(trace) else None
            while i < len(kernels) and not (nxt is not None and nxt not in LIBRARY_KINDS
                                            and nxt != "gemm" and own(kernels[i][0])
                                            and is_kind(nxt, kernels[i][0])):
                times[n] += kernels[i][1]
                names[n].append(kernels[i][0])
                i += 1
            if i == start:
                sys.exit(f"record {n} ({rec['op']}): expected a {rec['kernel']} kernel")
            continue
        if i >= len(kernels) or not own(kernels[i][0]) or not is_kind(rec["kernel"], kernels[i][0]):
            got = kernels[i][0][:100] if i < len(kernels) else "nothing"
            sys.exit(f"record {n} ({rec['op']}): expected a {rec['kernel']} kernel, got {got}")
        times[n] += kernels[i][1]
        names[n].append(kernels[i][0])
        i += 1
        next_kernel = trace[n + 1]["kernel"] if n + 1 < len(trace) else None
        while (i < len(kernels) and own(kernels[i][0]) and is_kind(rec["kernel"], kernels[i][0])
               and next_kernel != rec["kernel"]):
            times[n] += kernels[i][1]
            names[n].append(kernels[i][0])
            i += 1
    if i != len(kernels):
        sys.exit(f"{len(kernels) - i} profiled kernels left over after the trace")
    return times, names


def group_key(op):
    return re.sub(r"^layer \d+ ", "", op)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    p.add_argument("ncu_csv")
    p.add_argument("--step_ms", type=float, default=0.0)
    p.add_argument("--title", default="")
    a = p.parse_args()
    trace = [json.loads(l) for l in open(a.trace) if l.strip()]
    kernels = read_ncu(a.ncu_csv)
    times, names = join(trace, kernels)
    groups = {}
    for rec, t in zip(trace, times):
        g = groups.setdefault(group_key(rec["op"]), {"n": 0, "t": 0.0, "bytes": 0.0, "flops": 0.0})
        g["n"] += 1
        g["t"] += t
        g["bytes"] += rec["bytes"]
        g["flops"] += rec["flops"]
    total = sum(times)
    floor_total = 0.0
    if a.title:
        print(f"#### {a.title}\n")
    print("| launches | what | time (us) | share | bytes (MB) | GFLOP | floor (us) | time / floor |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, g in sorted(groups.items(), key=lambda kv: -kv[1]["t"]):
        floor = max(g["bytes"] / BANDWIDTH, g["flops"] / FLOPS)
        floor_total += floor
        ratio = f"{g['t'] / floor:.2f}" if floor > 0 else "-"
        label = key.replace("|", "\\|")
        print(f"| {g['n']} | {label} | {g['t'] * 1e6:.1f} | {g['t'] / total:.1%} | "
              f"{g['bytes'] / 1e6:.2f} | {g['flops'] / 1e9:.2f} | {floor * 1e6:.1f} | {ratio} |")
    print(f"| {len(trace)} | **all kernels** | **{total * 1e6:.1f}** | 100% | | | "
          f"{floor_total * 1e6:.1f} | {total / floor_total:.2f} |")
    if a.step_ms > 0:
        gaps = a.step_ms * 1e-3 - total
        print(f"\nmeasured step {a.step_ms:.3f} ms = kernels {total * 1e3:.3f} ms + gaps and host "
              f"work {gaps * 1e3:.3f} ms ({gaps / (a.step_ms * 1e-3):.1%}) over {len(kernels)} kernels")


if __name__ == "__main__":
    main()
