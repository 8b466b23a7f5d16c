"""griffin-bench against a real griffin-server on loopback (CPU backend, tiny model), over both
protocols: a short bounded run with zero failed requests and every metric present and finite."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest


def bench_binary():
    path = Path(os.environ.get("GRIFFIN_BIN", "")) / "griffin-bench"
    if not os.environ.get("GRIFFIN_BIN") or not path.exists():
        pytest.fail("GRIFFIN_BIN does not hold a built griffin-bench: build it and set GRIFFIN_BIN to "
                    "its bin/ folder (make test does both)", pytrace=False)
    return str(path)


def check_level(level, requests):
    assert level["failed"] == 0, level["failures_by_status"]
    assert level["completed"] == requests
    assert level["output_tokens"] == requests * 8  # --ignore_eos: exactly max_tokens each
    for key in ("duration_s", "request_throughput", "output_throughput", "total_token_throughput", "goodput"):
        assert math.isfinite(level[key]) and level[key] > 0, key
    for dist in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        for stat in ("mean", "median", "p90", "p99", "min", "max"):
            value = level[dist][stat]
            assert math.isfinite(value) and value >= 0, (dist, stat, value)
        assert level[dist]["count"] > 0, dist
    assert level["ttft_ms"]["median"] <= level["e2e_ms"]["median"]


@pytest.mark.parametrize("protocol,load", [
    ("http", ["--concurrency", "4"]),
    ("grpc", ["--request_rate", "40,inf"]),
])
def test_bounded_run(server, tmp_path, protocol, load):
    out = tmp_path / f"{protocol}.json"
    port = server.http_port if protocol == "http" else server.grpc_port
    cmd = [bench_binary(), "--protocol", protocol, "--port", str(port), "--num_requests", "24",
           "--input_len", "16", "--output_len", "8", "--ignore_eos", "--warmup_requests", "2",
           "--duration", "120", "--slo_ttft_ms", "10000", "--slo_tpot_ms", "10000",
           "--progress=false", "--result_json", str(out), *load]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TTFT" in proc.stdout and "Failed requests:" in proc.stdout
    result = json.loads(out.read_text())
    assert result["command"].startswith(cmd[0])
    assert result["host"] and result["time"] and result["server_info"]
    levels = result["levels"]
    assert len(levels) == (2 if protocol == "grpc" else 1)
    for level in levels:
        check_level(level, 24)
    server.wait_idle()


def test_failed_requests_are_counted_by_status(server, tmp_path):
    # Prompts longer than the server's --max_prompt_tokens (64) are rejected with HTTP 400.
    out = tmp_path / "rejected.json"
    proc = subprocess.run([bench_binary(), "--protocol", "http", "--port", str(server.http_port),
                           "--num_requests", "5", "--input_len", "100", "--output_len", "4",
                           "--warmup_requests", "0", "--progress=false", "--result_json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["failed"] == 5 and level["failures_by_status"] == {"http_400": 5}


@pytest.mark.parametrize("load", [["--request_rate", "20"], ["--concurrency", "3"]])
def test_duration_bounded_run(server, tmp_path, load):
    """--num_requests 0: the level sends until --duration, cycling through a pool of prompts sized
    to the rate (not a million of them), and waits for what it sent."""
    out = tmp_path / "timed.json"
    proc = subprocess.run([bench_binary(), "--protocol", "grpc", "--port", str(server.grpc_port),
                           "--num_requests", "0", "--duration", "2", "--input_len", "8",
                           "--output_len", "4", "--ignore_eos", "--warmup_requests", "0",
                           "--result_json", str(out), *load],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "s of 2 s sending" in proc.stderr  # the time-bounded progress line
    level = json.loads(out.read_text())["levels"][0]
    assert level["failed"] == 0 and level["completed"] >= 4, level
    assert level["output_tokens"] == 4 * level["completed"]
    server.wait_idle()


def test_unbounded_burst_is_refused(server):
    proc = subprocess.run([bench_binary(), "--protocol", "grpc", "--port", str(server.grpc_port),
                           "--num_requests", "0", "--duration", "2", "--request_rate", "inf"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "give --num_requests" in proc.stderr
