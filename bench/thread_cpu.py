#!/usr/bin/env python3
"""Where a process's CPU time goes, by thread name (griffin-server names its engine, output and
HTTP threads; gRPC names its own): a snapshot of every thread's user + system time, and the
difference between two snapshots per thread name, optionally per 1000 output tokens.

    python3 bench/thread_cpu.py snapshot PID > before.json
    ... load ...
    python3 bench/thread_cpu.py snapshot PID > after.json
    python3 bench/thread_cpu.py diff before.json after.json [--tokens N]

Linux only (/proc/PID/task/*/stat). Threads that ended between the snapshots are not counted.
"""

import argparse
import json
import os
import sys
from pathlib import Path


def snapshot(pid):
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        # comm is in parentheses and may hold spaces or parentheses itself: split at the last ')'.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
        threads[task.name] = {"name": name, "cpu_s": (utime + stime) / ticks}
    return threads


def diff(before, after, tokens):
    by_name = {}
    for tid, t in after.items():
        spent = t["cpu_s"] - before.get(tid, {"cpu_s": 0.0})["cpu_s"]
        entry = by_name.setdefault(t["name"], [0.0, 0])
        entry[0] += spent
        entry[1] += 1
    total = sum(v[0] for v in by_name.values())
    print(f"{'thread':<18}{'threads':>8}{'cpu s':>10}" + (f"{'ms/1k tok':>12}" if tokens else ""))
    for name, (spent, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
        if spent <= 0:
            continue
        line = f"{name:<18}{count:>8}{spent:>10.2f}"
        if tokens:
            line += f"{1e6 * spent / tokens:>12.1f}"
        print(line)
    line = f"{'total':<18}{'':>8}{total:>10.2f}"
    if tokens:
        line += f"{1e6 * total / tokens:>12.1f}"
    print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("pid", type=int)
    d = sub.add_parser("diff")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--tokens", type=int, default=0, help="output tokens the load produced")
    args = p.parse_args()
    if args.command == "snapshot":
        if not Path(f"/proc/{args.pid}/task").is_dir():
            sys.exit(f"no process {args.pid}")
        json.dump(snapshot(args.pid), sys.stdout)
    else:
        diff(json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text()),
             args.tokens)


if __name__ == "__main__":
    main()
