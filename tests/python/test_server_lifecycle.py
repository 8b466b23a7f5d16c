"""Overload (OVL-1/2), client disconnects (CAN-2), drain on SIGTERM (CAN-6) and readiness (OPS-1),
each against its own small griffin-server."""

import json
import signal
import socket
import threading
import time

import grpc
import pytest
import requests

from server_harness import Server


@pytest.fixture()
def tiny():
    """One slot, a queue of two: easy to fill."""
    s = Server("--slots", 1, "--max_queue", 2, "--max_output_tokens", 10000000)
    yield s
    assert s.stop() == 0, s.logs()


LONG = {"prompt": [2, 5, 6], "max_tokens": 10000000, "ignore_eos": True}


def wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_queue_full_is_429_then_disconnects_free_everything(tiny):  # OVL-1, OVL-2, CAN-2
    running = requests.post(tiny.url + "/v1/completions", json={**LONG, "stream": True},
                            stream=True, timeout=60)
    it = running.iter_lines()
    next(it)  # the first chunk: the slot is held
    assert wait_for(lambda: tiny.gauge("griffin_state_slots_used") == 1)
    # Two queued non-streaming requests, from raw sockets we can drop later.
    queued = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", tiny.http_port), timeout=10)
        body = json.dumps(LONG).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        queued.append(s)
    assert wait_for(lambda: tiny.gauge("griffin_num_requests_waiting") == 2)
    r = requests.post(tiny.url + "/v1/completions", json=LONG, timeout=10)
    assert r.status_code == 429
    assert r.headers.get("Retry-After") == "1"
    # Disconnect everything: the queued ones (non-streaming) and the stream.
    for s in queued:
        s.close()
    running.close()
    tiny.wait_idle()
    m = tiny.metrics()
    assert any('reason="queue_full"' in k and v >= 1 for k, v in m.items())
    tiny.assert_healthy()


def test_grpc_queue_full_and_disconnect(tiny, pb):  # OVL-1 over gRPC, CAN-2
    pb2, pb2_grpc = pb
    # Four clients, one channel each. The running call starts first: calls that arrive together
    # race for the slot and the queue (the third may be the one turned away).
    channels = [grpc.insecure_channel(tiny.grpc_target) for _ in range(4)]
    stubs = [pb2_grpc.GenerationStub(c) for c in channels]

    def req():
        r = pb2.GenerateRequest()
        r.token_ids.ids.extend([2, 5, 6])
        r.stopping.max_tokens = 10000000
        r.stopping.ignore_eos = True
        return r

    calls = [stubs[0].Generate(req(), timeout=60)]
    next(calls[0])   # running: the slot is held
    calls += [stubs[i].Generate(req(), timeout=60) for i in (1, 2)]
    assert wait_for(lambda: tiny.gauge("griffin_num_requests_waiting") == 2)
    with pytest.raises(grpc.RpcError) as e:
        next(stubs[3].Generate(req(), timeout=10))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for c in channels:
        c.close()   # a client going away cancels its calls
    tiny.wait_idle()
    tiny.assert_healthy()


def test_nonstreaming_client_timeout_frees_slot(tiny):  # CAN-2 (unary HTTP)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(tiny.url + "/v1/completions", json=LONG, timeout=0.5)
    tiny.wait_idle()
    m = tiny.metrics()
    assert any('finished_reason="abort"' in k and v >= 1 for k, v in m.items())
    tiny.assert_healthy()


def test_drain_on_sigterm(pb):  # CAN-6, OPS-1
    s = Server("--slots", 2, "--max_output_tokens", 10000000, drain_timeout=120)
    try:
        assert requests.get(s.url + "/ready", timeout=5).status_code == 200
        # The in-flight request must outlast the checks after SIGTERM (a few seconds) and finish
        # well inside the test's bound: about 10 s of decoding at this build's measured speed
        # (20000 tokens take 3.5 s in a release build, about 100 s under ThreadSanitizer, which
        # once ran past pytest's 120 s), never more than 20000 tokens nor fewer than 2000.
        start = time.monotonic()
        warm = requests.post(s.url + "/v1/completions",
                             json={"prompt": [2, 5], "max_tokens": 200, "ignore_eos": True},
                             timeout=60)
        assert warm.status_code == 200
        per_token = (time.monotonic() - start) / 200
        tokens = max(2000, min(20000, int(10.0 / per_token)))
        result = {}

        def inflight():
            r = requests.post(s.url + "/v1/completions",
                              json={"prompt": [2, 5], "max_tokens": tokens, "ignore_eos": True},
                              timeout=120)
            result["status"] = r.status_code
            result["body"] = r.json()

        t = threading.Thread(target=inflight)
        t.start()
        assert wait_for(lambda: s.gauge("griffin_num_requests_running") == 1)
        s.proc.send_signal(signal.SIGTERM)

        def status(method, path, **kw):
            """The HTTP status, or None once the listener refuses connections (SEC-5: at SIGTERM
            the server stops accepting, as gRPC does, so a balancer retries elsewhere)."""
            try:
                return requests.request(method, s.url + path, timeout=10, **kw).status_code
            except requests.ConnectionError:
                return None

        assert wait_for(lambda: status("GET", "/ready") in (503, None), 10)
        assert status("POST", "/v1/completions", json={"prompt": "hi", "max_tokens": 2}) in (503, None)
        # gRPC stops taking calls (GOAWAY, listener closed) so a balancer can retry elsewhere: a
        # new call fails UNAVAILABLE. The shutdown starts on its own thread at SIGTERM; a call
        # that connects in the moment before it takes effect is served, as in-flight work is
        # (grpc_service.cc), and under ThreadSanitizer that moment was once long enough for this
        # test's call: wait for the listener to close first.
        def grpc_listening():
            try:
                socket.create_connection(("127.0.0.1", s.grpc_port), timeout=1).close()
                return True
            except OSError:
                return False

        assert wait_for(lambda: not grpc_listening(), 10)
        with grpc.insecure_channel(s.grpc_target) as ch:
            req = pb[0].GenerateRequest(text=b"hi")
            with pytest.raises(grpc.RpcError) as e:
                list(pb[1].GenerationStub(ch).Generate(req, timeout=10))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        t.join(120)
        assert result["status"] == 200, result
        assert result["body"]["usage"]["completion_tokens"] == tokens
        assert result["body"]["choices"][0]["finish_reason"] == "length"
        assert s.proc.wait(timeout=60) == 0
    finally:
        s.stop()


def test_drain_timeout_aborts_and_exits_zero():  # CAN-6 with a request longer than the timeout
    s = Server("--slots", 1, "--max_output_tokens", 100000000, drain_timeout=1)
    r = requests.post(s.url + "/v1/completions", json={**LONG, "stream": True}, stream=True, timeout=60)
    it = r.iter_lines()
    next(it)
    s.proc.send_signal(signal.SIGTERM)
    rest = b"\n".join(line for line in it)   # ends within the drain timeout
    assert b'"error"' in rest and rest.rstrip().endswith(b"data: [DONE]")
    assert s.proc.wait(timeout=60) == 0
    s.stop()


def test_json_logs_and_loopback_default():  # OPS-4 (bind loopback by default), structured logs
    s = Server("--slots", 1, "--log_format", "json")
    try:
        r = requests.post(s.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200
    finally:
        assert s.stop() == 0
    lines = [json.loads(l) for l in s.log_path.read_text().splitlines() if l.strip()]
    ready = [l for l in lines if isinstance(l["msg"], str) and l["msg"].startswith("ready")]
    assert ready and f"http=127.0.0.1:{s.http_port}" in ready[0]["msg"]
    requests_logged = [l["msg"] for l in lines if isinstance(l["msg"], dict)]
    assert len(requests_logged) == 1
    entry = requests_logged[0]
    assert entry["finish_reason"] in ("stop", "length") and entry["completion_tokens"] >= 1
    for key in ("queue_s", "prefill_s", "decode_s", "e2e_s", "prompt_tokens", "request_id"):
        assert key in entry


def test_request_and_queue_timeouts():  # CAN-3 over HTTP, OVL-2
    # The request timeout is well above the queue timeout, so the queued request below always
    # times out in the queue while the holder still runs.
    s = Server("--slots", 1, "--max_output_tokens", 100000000, "--request_timeout", 2,
               "--queue_timeout", 0.2)
    try:
        # Non-streaming past the request timeout: 504.
        r = requests.post(s.url + "/v1/completions", json=LONG, timeout=30)
        assert r.status_code == 504, r.text
        # Streaming: an error event, then [DONE].
        r = requests.post(s.url + "/v1/completions", json={**LONG, "stream": True}, stream=True, timeout=30)
        body = b"\n".join(l for l in r.iter_lines() if l)
        assert b'"code":504' in body and body.endswith(b"data: [DONE]")
        # Queue timeout: one request holds the slot (for 2 s), the next waits 0.2 s and gets 504.
        holder = requests.post(s.url + "/v1/completions", json={**LONG, "stream": True}, stream=True,
                               timeout=30)
        lines = holder.iter_lines()   # keep the generator: dropping it closes the connection
        next(lines)
        r = requests.post(s.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 504
        holder.close()
        s.wait_idle()
        s.assert_healthy()
    finally:
        assert s.stop() == 0, s.logs()


def test_cancelled_slot_starts_clean(tiny, pb):  # CAN-5
    pb2, pb2_grpc = pb
    body = {"prompt": [2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], "max_tokens": 24,
            "temperature": 0, "ignore_eos": True}
    fresh = requests.post(tiny.url + "/v1/completions", json={**body, "logprobs": 0}, timeout=30).json()
    # Dirty the only slot: a long different sequence, cancelled mid-stream.
    r = requests.post(tiny.url + "/v1/completions",
                      json={"prompt": [2, 7, 8, 9] * 10, "max_tokens": 1000000, "ignore_eos": True,
                            "stream": True}, stream=True, timeout=30)
    it = r.iter_lines()
    for _ in range(5):
        next(it)
    r.close()
    tiny.wait_idle()
    again = requests.post(tiny.url + "/v1/completions", json={**body, "logprobs": 0}, timeout=30).json()
    assert again["choices"][0]["text"] == fresh["choices"][0]["text"]
    assert again["choices"][0]["logprobs"]["token_logprobs"] == fresh["choices"][0]["logprobs"]["token_logprobs"]


def test_not_ready_until_loaded_and_warmed_up(pb):  # OPS-1, OPS-2
    """--debug_load_delay keeps the server listening but not loaded for a while: it is live and
    not ready over HTTP and gRPC health, then ready once the model is loaded and warmed up."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    s = Server("--slots", 1, "--debug_load_delay", 3, wait_ready=False)
    try:
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
        assert requests.get(s.url + "/ready", timeout=5).status_code == 503
        r = requests.post(s.url + "/v1/completions", json={"prompt": "hi"}, timeout=5)
        assert r.status_code == 503
        assert requests.get(s.url + "/v1/models", timeout=5).status_code == 503
        assert requests.get(s.url + "/metrics", timeout=5).status_code == 200
        with grpc.insecure_channel(s.grpc_target) as ch:
            for service in ("", "griffin.v1.Generation"):  # the server and the service by name
                h = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING, service
            assert requests.get(s.url + "/v1/models/x", timeout=5).status_code == 503
            with pytest.raises(grpc.RpcError) as e:
                pb[1].GenerationStub(ch).GetModelInfo(pb[0].GetModelInfoRequest(), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert wait_for(lambda: requests.get(s.url + "/ready", timeout=5).status_code == 200)
        with grpc.insecure_channel(s.grpc_target) as ch:
            for service in ("", "griffin.v1.Generation"):
                h = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert h.status == health_pb2.HealthCheckResponse.SERVING, service
        s.model = requests.get(s.url + "/v1/models", timeout=5).json()["data"][0]["id"]
        s.assert_healthy()
    finally:
        assert s.stop() == 0, s.logs()


def test_sticky_device_error_makes_the_server_unready_and_exit(pb):  # OPS-1
    """After a sticky device error (injected: every step from the 6th on fails, as after an illegal
    address on a GPU) the request in flight fails, new ones are refused, readiness drops, and the
    process exits non-zero so its supervisor restarts it; liveness stays up until then."""
    s = Server("--slots", 2, "--debug_fail_device_after_steps", 5)
    try:
        r = requests.post(s.url + "/v1/completions",
                          json={"prompt": "hello", "max_tokens": 50, "ignore_eos": True}, timeout=30)
        assert r.status_code >= 500, r.text
        deadline = time.time() + 30
        while s.proc.poll() is None and time.time() < deadline:
            try:
                assert requests.get(s.url + "/ready", timeout=2).status_code == 503
                late = requests.post(s.url + "/v1/completions", json={"prompt": "hi"}, timeout=5)
                assert late.status_code == 503, late.text
            except requests.ConnectionError:
                pass  # already gone
            time.sleep(0.05)
        assert s.proc.wait(timeout=5) == 1, s.logs()
        assert "stopped after a device failure" in s.logs()
    finally:
        if s.proc.poll() is None:
            s.stop()


def test_bad_model_is_a_startup_error(tmp_path):  # FAILED_PRECONDITION-class errors at load
    import subprocess
    from server_harness import server_binary, free_port
    out = subprocess.run([server_binary(), "--model", str(tmp_path), "--backend", "cpu",
                          "--http_port", str(free_port()), "--grpc_port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "startup failed" in out.stdout + out.stderr


@pytest.mark.parametrize("args,message", [
    (["--load_format", "dummy", "--backend", "cpu"], "random (dummy) weights need the CUDA backend"),
    (["--load_format", "pickle"], "--load_format: INVALID_ARGUMENT: must be safetensors or dummy"),
    (["--gpu_memory_utilization", "1.5"], "--gpu_memory_utilization: INVALID_ARGUMENT: must be in (0, 1]"),
    (["--gpu_memory_utilization", "0"], "--gpu_memory_utilization: INVALID_ARGUMENT: must be in (0, 1]"),
    (["--max_slots", "0"], "--max_slots must be >= 1"),
    (["--backend", "gpu"], "--backend: INVALID_ARGUMENT: backend must be cpu, cuda, simulated or auto"),
    (["--backend", "simulated", "--simulated_step_us", "1950,7.4"],
     "--simulated_step_us: INVALID_ARGUMENT: simulated step time must be BASE,PER_ROW,PER_PROMPT_TOKEN"),
    (["--backend", "simulated", "--simulated_step_us", "-1,0,0"], "each a number in [0, 1e9]"),
    (["--backend", "simulated", "--quantization", "fp8"],
     "the simulated backend holds no weights to quantize"),
])
def test_load_format_errors_are_clear(args, message):
    import subprocess
    from server_harness import FIXTURE, server_binary, free_port
    out = subprocess.run([server_binary(), "--model", str(FIXTURE), *args,
                          "--http_port", str(free_port()), "--grpc_port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert message in out.stdout + out.stderr


def test_simulated_backend_serves_without_weights():
    """--backend simulated (no GPU, no compute): the whole server path runs, requests end at
    max_tokens with the step time it was given, and the same prompt continues the same way."""
    s = Server("--backend", "simulated", "--simulated_step_us", "300,1,1", "--slots", 4,
               "--load_format", "dummy")
    try:
        body = {"model": s.model, "prompt": "The recurrent state", "max_tokens": 8,
                "temperature": 0}
        first = s.session.post(s.url + "/v1/completions", json=body, timeout=30)
        assert first.status_code == 200, first.text
        again = s.session.post(s.url + "/v1/completions", json=body, timeout=30).json()
        out = first.json()
        assert out["usage"]["completion_tokens"] == 8
        assert out["choices"][0]["finish_reason"] == "length"
        assert again["choices"][0]["text"] == out["choices"][0]["text"]
        metrics = s.session.get(s.url + "/metrics", timeout=5).text
        steps = [l for l in metrics.splitlines() if l.startswith("griffin_engine_steps_total")]
        backend = [l for l in metrics.splitlines()
                   if l.startswith("griffin_engine_backend_seconds_total")]
        # 2 requests of 8 tokens: at least 16 steps of at least 0.3 ms each on the "device".
        assert float(steps[0].split()[-1]) >= 16, steps
        assert float(backend[0].split()[-1]) >= 16 * 300e-6, backend
        # The threads a profile or bench/thread_cpu.py tells apart by name.
        from pathlib import Path
        names = {p.read_text().strip() for p in Path(f"/proc/{s.proc.pid}/task").glob("*/comm")}
        assert {"griffin-engine", "griffin-output", "griffin-http"} <= names, names
    finally:
        assert s.stop() == 0, s.logs()


def test_http_port_is_exclusive_and_backlog_is_large(tiny):
    """A second server cannot share a held HTTP port (no SO_REUSEPORT), and the listen backlog is
    far above cpp-httplib's built-in 5, so a burst of connections is not left to SYN retransmits."""
    import shutil
    import subprocess
    from server_harness import FIXTURE, server_binary, free_port
    out = subprocess.run([server_binary(), "--model", str(FIXTURE), "--backend", "cpu",
                          "--http_port", str(tiny.http_port), "--grpc_port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot bind" in out.stdout + out.stderr
    assert shutil.which("ss"), "ss is not installed (iproute2; deploy/install-deps.sh installs it)"
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{tiny.http_port}"], capture_output=True,
                             text=True, timeout=30).stdout
    backlog = int(listing.split()[2])  # Send-Q of a listening socket is its backlog
    assert backlog >= 128, listing
    tiny.assert_healthy()
