#!/usr/bin/env python3
"""What loading a checkpoint costs griffin-server: seconds from exec to /ready, and host memory.

    python3 bench/load_bench.py SERVER_BINARY MODEL_DIR [--runs 2] [-- extra server flags]

Starts the server on loopback ports, samples /proc/PID/status every 5 ms until /ready answers
200, then stops it with SIGTERM. Reports per run: time to ready; peak VmHWM (all resident memory,
including the checkpoint's mmap'ed pages the process touched); and the largest RssAnon sampled
(anonymous memory only: what the loader itself allocates, such as a float32 copy of the model).
The file is read once before the first run so every run sees the same (warm) page cache.
Time to ready includes the backend's warm-up and CUDA graph capture, not only the weights.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid):
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0])
    except FileNotFoundError:
        pass
    return fields


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=0.2) as r:
            return r.status == 200
    except Exception:
        return False


def one_run(server, model, extra, timeout):
    http, grpc = free_port(), free_port()
    cmd = [server, "--model", model, "--http_port", str(http), "--grpc_port", str(grpc)] + extra
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon = 0
    last = {}
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}:\n{proc.stdout.read()}")
            last = status_kib(proc.pid) or last
            peak_anon = max(peak_anon, last.get("RssAnon", 0))
            if ready(http):
                break
            if time.monotonic() - start > timeout:
                raise SystemExit("server not ready in time")
            time.sleep(0.005)
        elapsed = time.monotonic() - start
        final = status_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    return {"seconds_to_ready": round(elapsed, 3),
            "peak_rss_gib": round(final.get("VmHWM", 0) / 2**20, 3),
            "peak_anon_gib": round(max(peak_anon, final.get("RssAnon", 0)) / 2**20, 3),
            "log_tail": out.strip().splitlines()[-3:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server")
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    for name in sorted(os.listdir(args.model)):
        if name.endswith(".safetensors"):
            with open(os.path.join(args.model, name), "rb") as f:
                while f.read(1 << 26):
                    pass
    runs = [one_run(args.server, args.model, args.extra, args.timeout) for _ in range(args.runs)]
    print(json.dumps({"server": args.server, "model": args.model, "runs": runs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
