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


def computed(server):
    for key, value in server.metrics().items():
        if key.startswith("griffin_prompt_tokens_computed_total"):
            return value
    raise KeyError("griffin_prompt_tokens_computed_total")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_multi_turn_full_and_session(tmp_path, protocol):
    """--multi_turn T: TTFT per turn in the summary and the JSON; the same conversations sent in
    full and through sessions, and the issue's CPU ratio: with sessions the server computes each
    turn's new tokens only (+1 for the previous output's last token), in full the whole history
    (the cache is off, so nothing else saves work)."""
    from server_harness import Server
    s = Server("--slots", 4, "--noprefix_cache", "--max_prompt_tokens", 4096)
    try:
        port = s.http_port if protocol == "http" else s.grpc_port
        tokens = {}
        for mode in ("full", "session"):
            out = tmp_path / f"{mode}.json"
            before = computed(s)
            p = subprocess.run([bench_binary(), "--protocol", protocol, "--port", str(port),
                                "--multi_turn", "5", "--multi_turn_mode", mode, "--num_requests", "3",
                                "--concurrency", "2", "--input_len", "12", "--output_len", "8",
                                "--ignore_eos", "--warmup_requests", "0", "--progress=false",
                                "--result_json", str(out)], capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr + p.stdout
            tokens[mode] = computed(s) - before
            assert "TTFT p50" in p.stdout
            level = json.loads(out.read_text())["levels"][0]
            assert level["failed"] == 0 and level["completed"] == 15
            assert level["multi_turn_mode"] == mode
            assert [t["turn"] for t in level["ttft_by_turn"]] == [1, 2, 3, 4, 5]
            assert all(t["ttft_ms"]["count"] == 3 for t in level["ttft_by_turn"])
        # Per conversation: session 12 + 4 x (12 + 1); full 12 + 32 + 52 + 72 + 92 (history grows
        # by 8 outputs and 12 new tokens a turn; HTTP rebuilds outputs through /tokenize, which may
        # split text differently, so full is checked as a bound there).
        assert tokens["session"] == 3 * (12 + 4 * 13)
        if protocol == "grpc":
            assert tokens["full"] == 3 * (12 + 32 + 52 + 72 + 92)
        assert tokens["session"] / tokens["full"] < 0.4
    finally:
        assert s.stop() == 0, s.logs()


def test_shared_prefix_workload_hits_the_cache(tmp_path):
    """--shared_prefix_len N: every prompt starts with the same N tokens, so after the first the
    server restores N (rounded down to its cache block) instead of computing them."""
    from server_harness import Server
    s = Server("--slots", 2, "--prefix_cache_block", 16)
    try:
        before = computed(s)
        p = subprocess.run([bench_binary(), "--port", str(s.http_port), "--shared_prefix_len", "64",
                            "--input_len", "8", "--output_len", "2", "--num_requests", "6",
                            "--concurrency", "1", "--warmup_requests", "0", "--progress=false"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr + p.stdout
        # The first computes 72 tokens; the other five restore the 64-token prefix.
        assert computed(s) - before == 72 + 5 * 8
    finally:
        assert s.stop() == 0, s.logs()
