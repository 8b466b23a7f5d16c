#!/usr/bin/env python3
"""Serving sweep against a running griffin-server, driving griffin-bench (issue 6's serving runs).

    python3 bench/serving_sweep.py --bench build/cuda/bin/griffin-bench --out results/serving \\
        --protocol grpc --port 50051 --workload 1024:128 --workload 2048:2048:4 --time_budget 240

For each workload IN:OUT[:SECONDS] (prompt tokens, output tokens, optional send window overriding
--duration), every request with --ignore_eos so it generates exactly OUT tokens:
  1. peak: a closed-loop run at --concurrency; peak rate = completed requests / its duration;
  2. sweep: one griffin-bench run of open-loop Poisson levels at --fractions of the peak rate;
  3. search: for each SLO (--slo TTFT_MS:TPOT_MS on the p99s, 0 = no limit), bisection between the
     highest passing and lowest failing rates measured so far, --max_search_runs runs per workload
     shared by the SLOs (a run for one SLO also places the other's bracket).
Writes DIR/<IN>x<OUT>_<protocol>_{peak,sweep,searchN}.json (griffin-bench --result_json, each
with a .log of its output), DIR/summary_<protocol>.md (tables, SLO rates and every command line;
rewritten after each run, so a sweep cut short still leaves one) and summary_<protocol>.json, and,
when matplotlib imports, DIR/curve_<IN>x<OUT>_<protocol>.{json,png,svg} via bench/plot.py.

Each griffin-bench run lasts its send window plus the time the last request sent needs to finish:
for long outputs (2048 tokens at ~10 ms a step is ~20 s) that tail, not the window, sets the cost.
"""

import argparse
import importlib.util
import json
import math
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Workload:
    input_len: int
    output_len: int
    duration: float  # send window per level, seconds (0 = bounded by request count only)

    @property
    def name(self):
        return f"{self.input_len}x{self.output_len}"

    @property
    def label(self):
        return f"{self.input_len}:{self.output_len}"


@dataclass
class Slo:
    ttft_ms: float  # p99 limits; 0 = none
    tpot_ms: float

    @property
    def label(self):
        parts = [f"TTFT p99 <= {self.ttft_ms:g} ms" if self.ttft_ms else "",
                 f"TPOT p99 <= {self.tpot_ms:g} ms" if self.tpot_ms else ""]
        return " and ".join(p for p in parts if p) or "none"

    def met(self, level):
        # A level with failures does not meet an SLO: the requests that failed were not served.
        if level["completed"] == 0 or level["failed"] > 0:
            return False
        return ((not self.ttft_ms or level["ttft_ms"]["p99"] <= self.ttft_ms)
                and (not self.tpot_ms or level["tpot_ms"]["p99"] <= self.tpot_ms))


@dataclass
class Run:
    """One griffin-bench invocation."""
    kind: str
    path: Path
    command: list
    wall_s: float = 0.0
    rc: int = 0
    data: dict = None


@dataclass
class Point:
    """One load level of a run."""
    run: Run
    level: dict
    rate: float  # requested Poisson rate; None for the closed-loop peak


@dataclass
class SearchResult:
    slo: Slo
    best: float = None       # highest rate that met it (None: none measured)
    failing: float = None    # lowest rate that missed it (None: all met)
    runs: int = 0
    note: str = ""


@dataclass
class WorkloadResult:
    workload: Workload
    runs: list = field(default_factory=list)
    points: list = field(default_factory=list)
    peak_rate: float = None
    searches: list = field(default_factory=list)
    error: str = ""


def parse_workload(text, default_duration):
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        in_len, out_len = int(parts[0]), int(parts[1])
        duration = float(parts[2]) if len(parts) == 3 else default_duration
        if in_len < 1 or out_len < 1 or duration < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workload {text!r}: expected IN:OUT or IN:OUT:SECONDS")
    return Workload(in_len, out_len, duration)


def parse_slo(text):
    try:
        ttft, tpot = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slo {text!r}: expected TTFT_MS:TPOT_MS (0 = no limit)")
    return Slo(ttft, tpot)


def fmt_rate(rate):
    # Rates go on griffin-bench's command line and come back as the level's request_rate;
    # 4 significant digits keep both readable and identical.
    return float(f"{rate:.4g}")


def open_loop_cap(rate, duration):
    """Requests to generate for a duration-bounded Poisson level: enough that the window, not the
    count, ends it (mean + 4 sigma), without griffin-bench's 10^6 default items when
    --num_requests is 0 (it materialises every prompt up front: 10^6 x 2048 ids is 8 GB)."""
    mean = rate * duration
    return int(math.ceil(mean + 4 * math.sqrt(mean) + 8))


class Sweep:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.results = []
        self.started = time.monotonic()
        self.server_info = None

    # -- running griffin-bench ------------------------------------------------------------------

    def base_command(self, wl, path, warmup):
        a = self.args
        cmd = [a.bench, f"--protocol={a.protocol}", f"--host={a.host}", f"--port={a.port}",
               f"--input_len={wl.input_len}", f"--output_len={wl.output_len}", "--ignore_eos",
               f"--temperature={a.temperature:g}", f"--seed={a.seed}", f"--warmup_requests={warmup}",
               f"--request_timeout={a.request_timeout:g}", "--progress=false",
               f"--result_json={path}"]
        if wl.duration > 0:
            cmd.append(f"--duration={wl.duration:g}")
        if a.model:
            cmd.append(f"--model={a.model}")
        return cmd + list(a.bench_arg)

    def run(self, wr, kind, load_args, warmup):
        wl = wr.workload
        path = self.out / f"{wl.name}_{self.args.protocol}_{kind}.json"
        cmd = self.base_command(wl, path, warmup) + load_args
        run = Run(kind, path, cmd)
        wr.runs.append(run)
        if self.args.dry_run:
            print(shlex.join(cmd))
            return run
        print(f"[{self.elapsed():6.0f} s] {wl.label} {kind}: {shlex.join(cmd)}", flush=True)
        path.unlink(missing_ok=True)
        start = time.monotonic()
        with open(path.with_suffix(".log"), "w") as log:
            log.write(shlex.join(cmd) + "\n")
            log.flush()
            run.rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        run.wall_s = time.monotonic() - start
        # griffin-bench exits 3 when some requests failed: still a measurement (the failures are
        # in the JSON and count against the SLOs); 1 or anything else means no result.
        if run.rc not in (0, 3) or not path.exists():
            raise RuntimeError(f"griffin-bench exited {run.rc} ({kind}); see {path.with_suffix('.log')}")
        run.data = json.loads(path.read_text())
        if self.server_info is None:
            self.server_info = run.data.get("server_info")
        for level in run.data["levels"]:
            print(f"    rate {level['request_rate']}: {level['completed']} ok, {level['failed']} failed, "
                  f"{level['output_throughput']:.0f} tok/s, TTFT p99 {level['ttft_ms']['p99']:.1f} ms, "
                  f"TPOT p99 {level['tpot_ms']['p99']:.2f} ms", flush=True)
        print(f"    ({run.wall_s:.0f} s)", flush=True)
        return run

    def elapsed(self):
        return time.monotonic() - self.started

    # -- the three phases -----------------------------------------------------------------------

    def measure_peak(self, wr):
        a, wl = self.args, wr.workload
        n = a.peak_num_requests or (16 * a.concurrency if wl.duration > 0 else 4 * a.concurrency)
        run = self.run(wr, "peak", [f"--concurrency={a.concurrency}", f"--num_requests={n}"],
                       a.warmup_requests)
        if a.dry_run:
            # Stand-in so the dry run can print the later commands' shape.
            wr.peak_rate = a.dry_run_peak
            return
        level = run.data["levels"][0]
        wr.points.append(Point(run, level, None))
        if level["completed"] == 0:
            raise RuntimeError("the closed-loop run completed no request")
        # Completed / (first send -> last completion): the drain after the window, with fewer
        # requests in flight, makes this a slight underestimate of the saturated rate.
        wr.peak_rate = level["request_throughput"]

    def run_rates(self, wr, kind, rates):
        a, wl = self.args, wr.workload
        rates = [fmt_rate(r) for r in rates]
        n = a.num_requests or open_loop_cap(max(rates), wl.duration)
        run = self.run(wr, kind, ["--request_rate=" + ",".join(f"{r:g}" for r in rates),
                                  f"--num_requests={n}"], 0)
        if a.dry_run:
            return
        # griffin-bench reports one level per rate, in the order given.
        for rate, level in zip(rates, run.data["levels"]):
            wr.points.append(Point(run, level, rate))

    def bracket(self, wr, slo):
        """(highest rate meeting the SLO below the lowest missing it, that lowest missing rate)."""
        open_loop = [p for p in wr.points if p.rate is not None]
        failing = [p.rate for p in open_loop if not slo.met(p.level)]
        hi = min(failing) if failing else None
        passing = [p.rate for p in open_loop if slo.met(p.level) and (hi is None or p.rate < hi)]
        return (max(passing) if passing else None), hi

    def settle(self, wr, search):
        """Places the search's bracket from every point so far; returns why it is over, or None."""
        search.best, search.failing = self.bracket(wr, search.slo)
        if search.failing is None:
            return "met at every measured rate; higher rates not tried"
        if search.failing - (search.best or 0.0) <= self.args.search_tolerance * search.failing:
            return f"bracket within {self.args.search_tolerance:.0%} of the rate"
        return None

    def search(self, wr):
        a = self.args
        wr.searches = [SearchResult(slo) for slo in a.slo]
        if a.dry_run:
            return
        runs, out_of_time = 0, False
        share = (self.results.index(wr) + 1) / len(a.workload)
        while runs < a.max_search_runs:
            pending = [s for s in wr.searches if self.settle(wr, s) is None]
            if not pending:
                break
            # Each workload gets its share of --time_budget, so the first cannot starve the next.
            # A search run is one level: estimate it by the slowest level so far.
            estimate = max(r.wall_s / len(r.data["levels"]) for r in wr.runs)
            if a.time_budget and self.elapsed() + estimate > a.time_budget * share:
                out_of_time = True
                break
            # The SLO with the fewest runs so far goes next, so each gets searched.
            s = min(pending, key=lambda s: s.runs)
            runs += 1
            s.runs += 1
            self.run_rates(wr, f"search{runs}", [((s.best or 0.0) + s.failing) / 2])
            self.write_summary()
        for s in wr.searches:
            s.note = self.settle(wr, s) or ("search stopped by --time_budget" if out_of_time else
                                            f"stopped after --max_search_runs={a.max_search_runs}")

    def sweep_workload(self, wl):
        wr = WorkloadResult(wl)
        self.results.append(wr)
        try:
            self.measure_peak(wr)
            self.write_summary()
            self.run_rates(wr, "sweep", [f * wr.peak_rate for f in self.args.fractions])
            self.write_summary()
            if self.args.dry_run:
                print(f"# then up to {self.args.max_search_runs} single-rate search runs "
                      f"(--request_rate=R) bisecting for {', '.join(s.label for s in self.args.slo)}")
            self.search(wr)
        except RuntimeError as e:
            wr.error = str(e)
            print(f"error: {wl.label}: {e}", file=sys.stderr)
        self.write_summary()
        return wr

    # -- output ---------------------------------------------------------------------------------

    def write_summary(self):
        if self.args.dry_run:
            return
        a = self.args
        md = [f"# Serving sweep: griffin-server over {a.protocol}", ""]
        info = self.server_info
        md += [f"- server: `{json.dumps(info, sort_keys=True)}`" if info else "- server: (no run finished)",
               f"- griffin-bench: `{a.bench}`, {a.host}:{a.port}; every request --ignore_eos, "
               f"temperature {a.temperature:g}, seed {a.seed}",
               f"- peak: closed loop at concurrency {a.concurrency}; sweep: Poisson at "
               f"{', '.join(f'{f:.0%}' for f in a.fractions)} of the peak rate",
               f"- sweep started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(time.time() - self.elapsed()))}, "
               f"{self.elapsed():.0f} s so far", ""]
        for wr in self.results:
            md += self.workload_markdown(wr)
        (self.out / f"summary_{a.protocol}.md").write_text("\n".join(md) + "\n")
        (self.out / f"summary_{a.protocol}.json").write_text(json.dumps(self.summary_json(), indent=2) + "\n")

    def workload_markdown(self, wr):
        wl, peak = wr.workload, wr.peak_rate
        md = [f"## {wl.label} ({wl.input_len} prompt tokens, {wl.output_len} output tokens, "
              f"send window {wl.duration:g} s per level)", ""]
        if wr.error:
            md += [f"**Stopped: {wr.error}**", ""]
        if peak:
            md += [f"Peak: {peak:.2f} req/s from the closed-loop run.", ""]
        md += ["| load | rate (req/s) | % of peak | completed | failed | output tok/s | TTFT p50 (ms) "
               "| TTFT p99 (ms) | TPOT p50 (ms) | TPOT p99 (ms) | ITL p99 (ms) | E2E p99 (ms) | run |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        ordered = sorted(wr.points, key=lambda p: (p.rate is not None, p.rate or 0))
        for p in ordered:
            lv = p.level
            failed = str(lv["failed"])
            if lv["failures_by_status"]:
                failed += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(lv["failures_by_status"].items())) + ")"
            if p.rate is None:
                load, rate, pct = f"closed loop, {self.args.concurrency} in flight", f"{lv['request_throughput']:.2f}", "100%"
            else:
                load, rate, pct = "Poisson", f"{p.rate:g}", f"{p.rate / peak:.0%}"
            md.append(f"| {load} | {rate} | {pct} | {lv['completed']} | {failed} | {lv['output_throughput']:.0f} "
                      f"| {lv['ttft_ms']['median']:.1f} | {lv['ttft_ms']['p99']:.1f} | {lv['tpot_ms']['median']:.2f} "
                      f"| {lv['tpot_ms']['p99']:.2f} | {lv['itl_ms']['p99']:.2f} | {lv['e2e_ms']['p99']:.0f} "
                      f"| {wr.runs.index(p.run) + 1} |")
        md.append("")
        if wr.searches:
            md += ["| SLO | highest rate meeting it (req/s) | % of peak | output tok/s there "
                   "| lowest rate missing it | search runs | note |",
                   "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
            for s in wr.searches:
                at = next((p for p in wr.points if p.rate is not None and p.rate == s.best), None)
                best = f"{s.best:g}" if s.best is not None else "none measured"
                pct = f"{s.best / peak:.0%}" if s.best is not None else "-"
                tok = f"{at.level['output_throughput']:.0f}" if at else "-"
                miss = f"{s.failing:g}" if s.failing is not None else "-"
                md.append(f"| {s.slo.label} | {best} | {pct} | {tok} | {miss} | {s.runs} | {s.note} |")
            md.append("")
        md += ["Runs (exact griffin-bench command lines):", ""]
        for i, r in enumerate(wr.runs, 1):
            md.append(f"{i}. `{r.path.name}` ({r.wall_s:.0f} s wall, exit {r.rc}): `{shlex.join(r.command)}`")
        md.append("")
        return md

    def summary_json(self):
        out = {"protocol": self.args.protocol, "server_info": self.server_info, "workloads": []}
        for wr in self.results:
            out["workloads"].append({
                "workload": wr.workload.label, "send_window_s": wr.workload.duration,
                "peak_request_rate": wr.peak_rate, "error": wr.error or None,
                "runs": [{"file": r.path.name, "kind": r.kind, "command": shlex.join(r.command),
                          "wall_s": round(r.wall_s, 2), "exit": r.rc} for r in wr.runs],
                "slo": [{"ttft_p99_ms": s.slo.ttft_ms or None, "tpot_p99_ms": s.slo.tpot_ms or None,
                         "highest_rate_met": s.best, "lowest_rate_missed": s.failing,
                         "note": s.note} for s in wr.searches]})
        return out

    def plot(self):
        """One curve per workload from its Poisson levels (the closed-loop point is another kind
        of load, so it stays off the curve)."""
        if self.args.dry_run or self.args.no_plot:
            return
        if importlib.util.find_spec("matplotlib") is None:
            print("matplotlib is not importable: no plots (the JSON files hold every point)")
            return
        for wr in self.results:
            levels = sorted((p.level for p in wr.points if p.rate is not None),
                            key=lambda lv: lv["request_rate"])
            if not levels:
                continue
            stem = self.out / f"curve_{wr.workload.name}_{self.args.protocol}"
            stem.with_suffix(".json").write_text(json.dumps({"levels": levels}, indent=2) + "\n")
            subprocess.call([sys.executable, str(HERE / "plot.py"), str(stem.with_suffix(".json")),
                             "--labels", f"{wr.workload.label} {self.args.protocol}", "--out", str(stem),
                             "--title", f"griffin-server {self.args.protocol}, {wr.workload.label}: "
                                        "latency vs throughput (Poisson arrivals)"])


def wait_ready(url, timeout_s):
    """Polls the server's /ready until 200: the listeners are up before the model loads."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} not ready after {timeout_s:g} s")
        time.sleep(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="build/cuda/bin/griffin-bench", help="griffin-bench binary")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocol", choices=["grpc", "http"], default="http")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="server port (default: 8000 for http, 50051 for grpc)")
    p.add_argument("--model", default="", help="model name for OpenAI requests (griffin-bench's --model)")
    p.add_argument("--workload", action="append", metavar="IN:OUT[:SECONDS]",
                   help="prompt:output tokens, optionally a send window overriding --duration; "
                        "repeatable (default: 1024:128 and 2048:2048:4, whose requests outlast any "
                        "window that fits the time)")
    p.add_argument("--duration", type=float, default=8.0,
                   help="seconds each level keeps sending; the run then waits for what is in flight "
                        "(0 = bounded by the request count only)")
    p.add_argument("--num_requests", type=int, default=0,
                   help="requests per Poisson level (0 = rate x window + 4 sigma, so the window ends it)")
    p.add_argument("--concurrency", type=int, default=256, help="requests in flight for the peak run")
    p.add_argument("--peak_num_requests", type=int, default=0,
                   help="requests for the peak run (0 = 16 x concurrency, the window ends it first)")
    p.add_argument("--fractions", default="0.25,0.5,0.75,1.0", help="Poisson rates as fractions of the peak")
    p.add_argument("--slo", type=parse_slo, action="append", metavar="TTFT_MS:TPOT_MS",
                   help="p99 limits to find the highest rate for, 0 = no limit; repeatable "
                        "(default: 450:40 and 0:10, shared/PERF.md)")
    p.add_argument("--max_search_runs", type=int, default=4, help="bisection runs per workload, all SLOs together")
    p.add_argument("--search_tolerance", type=float, default=0.05,
                   help="stop an SLO's bisection once its bracket is this fraction of the failing rate")
    p.add_argument("--time_budget", type=float, default=0,
                   help="seconds for the whole sweep; search runs that would overrun a workload's "
                        "share are skipped (0 = no limit)")
    p.add_argument("--warmup_requests", type=int, default=1,
                   help="griffin-bench warm-up requests (one at a time), for each workload's first run only")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request_timeout", type=float, default=600)
    p.add_argument("--bench_arg", action="append", default=[], metavar="FLAG",
                   help="extra griffin-bench flag, e.g. --bench_arg=--token_id_range=10:255000; repeatable")
    p.add_argument("--ready_url", help="wait until this URL answers 200 (e.g. http://127.0.0.1:8000/ready)")
    p.add_argument("--ready_timeout", type=float, default=600)
    p.add_argument("--no-plot", dest="no_plot", action="store_true")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--dry_run_peak", type=float, default=100.0,
                   help="peak rate the dry run assumes when printing the sweep's rates")
    args = p.parse_args(argv)

    if args.port is None:
        args.port = 8000 if args.protocol == "http" else 50051
    args.workload = [parse_workload(w, args.duration) for w in (args.workload or ["1024:128", "2048:2048:4"])]
    args.slo = args.slo or [Slo(450, 40), Slo(0, 10)]
    try:
        args.fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        p.error("--fractions: comma-separated numbers")
    if not args.fractions or min(args.fractions) <= 0:
        p.error("--fractions must be positive")
    if args.num_requests == 0 and any(w.duration == 0 for w in args.workload):
        p.error("a workload without a send window needs --num_requests")
    if not args.dry_run and not Path(args.bench).exists():
        p.error(f"--bench {args.bench}: no such file")

    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.ready_url and not args.dry_run:
        wait_ready(args.ready_url, args.ready_timeout)
    sweep = Sweep(args)
    for wl in args.workload:
        sweep.sweep_workload(wl)
    sweep.plot()
    if not args.dry_run:
        print(f"wrote {Path(args.out) / f'summary_{args.protocol}.md'} ({sweep.elapsed():.0f} s)")
    return 1 if any(wr.error for wr in sweep.results) else 0


if __name__ == "__main__":
    sys.exit(main())
