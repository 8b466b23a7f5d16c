"""OPS-3 by value: for each protocol, requests of known usage (finished by length, by a stop id and by
a stop string, rejected as invalid and as queue-full, cancelled while queued, and a slot holder
aborted through the Abort RPC) must move every counter and every histogram count of /metrics by
exactly the expected amount, and the gauges must return to idle. Names alone prove nothing: a
deleted increment keeps the name."""

import json
import socket
import time

import grpc
import pytest
import requests

from server_harness import Server

PROMPT = [2, 17, 33, 5]
REASONS = ("stop", "length", "abort", "error")
REJECTS = ("invalid", "queue_full", "unavailable", "too_large")
HISTOGRAMS = ("time_to_first_token", "inter_token_latency", "e2e_request_latency",
              "request_queue_time", "request_prefill_time", "request_decode_time")


@pytest.fixture(scope="module")
def one_slot():
    """One slot and a queue of two: a held slot makes requests wait, a third is turned away."""
    s = Server("--slots", 1, "--max_queue", 2, "--max_output_tokens", 10000000)
    yield s
    assert s.stop() == 0, s.logs()


def series(metrics, name, **labels):
    """The value of the one series `name` whose labels include `labels`."""
    found = [v for k, v in metrics.items() if k.split("{")[0] == name
             and all(f'{key}="{value}"' in k for key, value in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def snapshot(server):
    m = server.metrics()
    snap = {f"success.{r}": series(m, "griffin_request_success_total", finished_reason=r) for r in REASONS}
    snap.update({f"rejected.{r}": series(m, "griffin_request_rejected_total", reason=r) for r in REJECTS})
    snap["prompt_tokens"] = series(m, "griffin_prompt_tokens_total")
    snap["generation_tokens"] = series(m, "griffin_generation_tokens_total")
    for h in HISTOGRAMS:
        snap[h] = series(m, f"griffin_{h}_seconds_count")
        snap[h + ".sum"] = series(m, f"griffin_{h}_seconds_sum")
    return snap


def delta(before, after):
    return {k: after[k] - before[k] for k in before}


def wait_for(predicate, what, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---- the protocol-specific requests: each returns (prompt_tokens, completion_tokens, reason, text)

def http_generate(server, stop_ids=(), stop=None, max_tokens=6):
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    if stop_ids:
        body["stop_token_ids"] = list(stop_ids)
    if stop:
        body["stop"] = [stop]
    r = requests.post(server.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    return j["usage"]["prompt_tokens"], j["usage"]["completion_tokens"], j["choices"][0]["finish_reason"], j["choices"][0]["text"]


def grpc_request(pb2, ids=PROMPT, max_tokens=6, request_id=None):
    req = pb2.GenerateRequest()
    req.token_ids.ids.extend(ids)
    req.sampling.temperature = 0.0
    req.stopping.max_tokens = max_tokens
    req.stopping.ignore_eos = True
    if request_id:
        req.request_id = request_id
    return req


def grpc_generate(stub, pb2, stop_ids=(), stop=None, max_tokens=6):
    req = grpc_request(pb2, max_tokens=max_tokens)
    req.stopping.stop_token_ids.extend(stop_ids)
    if stop:
        req.stopping.stop.append(stop.encode())
    text, complete = b"", None
    for r in stub.Generate(req, timeout=60):
        if r.WhichOneof("output") == "chunk":
            text += r.chunk.text
        else:
            complete = r.complete
    reason = {pb2.FINISH_REASON_LENGTH: "length", pb2.FINISH_REASON_STOP: "stop",
              pb2.FINISH_REASON_STOP_STRING: "stop_string"}.get(
        complete.finish_reason, str(complete.finish_reason))
    return complete.usage.prompt_tokens, complete.usage.completion_tokens, reason, text.decode()


def http_queue(server):
    """A non-streaming request on a raw socket; closing the socket cancels it."""
    s = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 5, "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s.close


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_counter_moves_by_exactly_the_usage(one_slot, pb, protocol):
    pb2, pb2_grpc = pb
    server = one_slot
    channel = grpc.insecure_channel(server.grpc_target)
    stub = pb2_grpc.GenerationStub(channel)
    server.wait_idle()
    before = snapshot(server)
    generate = (lambda **kw: http_generate(server, **kw)) if protocol == "http" else \
        (lambda **kw: grpc_generate(stub, pb2, **kw))

    # Finished by length, by a stop id (the first greedy token), by a stop string (the first
    # character of the greedy text: a match in the first token that has text).
    p1, c1, r1, text = generate()
    assert (p1, c1, r1) == (4, 6, "length")
    assert text, "the greedy continuation of the fixed prompt has text"
    first_id = stub_first_token(stub, pb2)  # a gRPC probe: one more length request, 1 token
    p2, c2, r2, _ = generate(stop_ids=[first_id])
    assert (p2, c2, r2) == (4, 1, "stop")
    p3, c3, r3, t3 = generate(stop=text[0])
    assert r3 in ("stop", "stop_string") and c3 >= 1 and text[0] not in t3, (r3, c3, t3)

    # Rejected: an invalid field.
    if protocol == "http":
        bad = requests.post(server.url + "/v1/completions", json={"prompt": PROMPT, "temperature": -1},
                            timeout=30)
        assert bad.status_code == 400
    else:
        req = grpc_request(pb2)
        req.sampling.temperature = -1.0
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(req, timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A holder takes the only slot (over gRPC, so its usage comes back when it is aborted), two
    # requests queue, a third is turned away, the two are cancelled while queued (no token), and
    # the holder is aborted through the Abort RPC.
    holder_id = f"holder-{protocol}"
    holder = stub.Generate(grpc_request(pb2, ids=[2, 5, 6], max_tokens=10000000,
                                        request_id=holder_id), timeout=120)
    assert next(holder).WhichOneof("output") == "chunk"
    if protocol == "http":
        cancels = [http_queue(server) for _ in range(2)]
    else:
        calls = [stub.Generate(grpc_request(pb2, max_tokens=5), timeout=60) for _ in range(2)]
        cancels = [c.cancel for c in calls]
    wait_for(lambda: server.gauge("griffin_num_requests_waiting") == 2, "two queued requests")
    if protocol == "http":
        full = requests.post(server.url + "/v1/completions", json={"prompt": PROMPT}, timeout=30)
        assert full.status_code == 429
    else:
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(grpc_request(pb2), timeout=30))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for cancel in cancels:
        cancel()
    wait_for(lambda: server.gauge("griffin_num_requests_waiting") == 0, "the queue to empty")
    assert stub.Abort(pb2.AbortRequest(request_id=holder_id), timeout=10).found
    complete = [r.complete for r in holder if r.WhichOneof("output") == "complete"][0]
    assert complete.finish_reason == pb2.FINISH_REASON_ABORT
    k = complete.usage.completion_tokens
    assert complete.usage.prompt_tokens == 3 and k >= 1

    server.wait_idle()
    # Seven finished requests: length, probe, stop id, stop string, two cancelled, the holder.
    # Wait for all seven whatever their reasons, so a wrong reason shows in the comparison below
    # at once rather than as a wait that never ends.
    wait_for(lambda: delta(before, snapshot(server))["e2e_request_latency"] == 7,
             "seven finished requests counted")
    d = delta(before, snapshot(server))
    expected = {
        "success.length": 2,
        "success.stop": 2,  # a stop string counts as "stop"
        "success.abort": 3,
        "success.error": 0,
        "rejected.invalid": 1,
        "rejected.queue_full": 1,
        "rejected.unavailable": 0,
        "rejected.too_large": 0,
        "prompt_tokens": 4 * 6 + 3,
        "generation_tokens": 6 + 1 + 1 + c3 + 0 + 0 + k,
        "time_to_first_token": 5,  # every request that produced a token
        "inter_token_latency": 5 + 0 + 0 + (c3 - 1) + (k - 1),
    }
    for h in HISTOGRAMS[2:]:
        expected[h] = 7  # every finished request
    got = {key: d[key] for key in expected}
    assert got == expected
    for h in HISTOGRAMS:
        assert d[h + ".sum"] >= 0, h
    assert d["e2e_request_latency.sum"] > 0
    m = server.metrics()
    assert series(m, "griffin_state_slots_capacity") == 1
    for gauge in ("griffin_num_requests_running", "griffin_num_requests_waiting", "griffin_state_slots_used"):
        assert series(m, gauge) == 0, gauge
    # CAN-4: every gRPC call object was destroyed (OnDone runs after the client saw the status).
    wait_for(lambda: server.gauge("griffin_grpc_generate_calls_started")
             == server.gauge("griffin_grpc_generate_calls_freed"), "gRPC call objects freed")
    channel.close()


def stub_first_token(stub, pb2):
    """The first greedy token of PROMPT (a gRPC probe: counts as one more length request)."""
    ids = []
    for r in stub.Generate(grpc_request(pb2, max_tokens=1), timeout=60):
        if r.WhichOneof("output") == "chunk":
            ids.extend(r.chunk.token_ids)
    assert len(ids) == 1
    return ids[0]


def test_engine_time_split_moves_with_the_steps(one_slot):
    """griffin_engine_{steps,busy_seconds,backend_seconds}_total (issue 13's overhead split): a
    request's steps add to the step count, both clocks advance, the forward passes stay within
    the busy time, and an idle server's clocks stand still."""
    server = one_slot
    server.wait_idle()
    names = ("griffin_engine_steps_total", "griffin_engine_busy_seconds_total",
             "griffin_engine_backend_seconds_total")
    before = [series(server.metrics(), n) for n in names]
    r = requests.post(server.url + "/v1/completions", timeout=60, json={
        "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    server.wait_idle()
    after = [series(server.metrics(), n) for n in names]
    steps, busy, backend = (a - b for a, b in zip(after, before))
    assert steps >= 8  # one prefill step (its last token samples the first) and 7 decodes
    assert 0 < backend <= busy
    time.sleep(0.3)
    assert [series(server.metrics(), n) for n in names] == after


def test_step_time_target_caps_prompt_tokens_beside_decodes():
    """--step_time_target_ms: once the engine has seen what prompt tokens cost, a prompt that
    arrives while another request decodes is fed in capped chunks, and
    griffin_engine_prefill_capped_steps_total counts the steps it held back. A 1 ms target is
    below what this machine's decode step alone takes, so every chunk beside the decode is the
    64-token minimum; without the flag the 400-token prompt goes in one step."""
    s = Server("--slots", 2, "--step_time_target_ms", 1)
    try:
        def prompt(n, start):
            return [2] + [3 + (start + i) % 200 for i in range(n - 1)]
        for n in (120, 160, 200, 240, 280):  # prompts alone: what their tokens cost
            r = requests.post(s.url + "/v1/completions", timeout=60, json={
                "prompt": prompt(n, n), "max_tokens": 1, "temperature": 0})
            assert r.status_code == 200, r.text
        assert series(s.metrics(), "griffin_engine_prefill_capped_steps_total") == 0
        with requests.post(s.url + "/v1/completions", timeout=120, stream=True, json={
                "prompt": PROMPT, "max_tokens": 400, "temperature": 0, "ignore_eos": True,
                "stream": True}) as decoding:
            lines = decoding.iter_lines()
            assert next(line for line in lines if line.startswith(b"data:"))  # it decodes now
            r = requests.post(s.url + "/v1/completions", timeout=120, json={
                "prompt": prompt(400, 7), "max_tokens": 2, "temperature": 0})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["prompt_tokens"] == 400
            for _ in lines:
                pass
        assert series(s.metrics(), "griffin_engine_prefill_capped_steps_total") >= 4
    finally:
        assert s.stop() == 0, s.logs()


@pytest.mark.parametrize("value", ["-1", "nan", "2e6"])
def test_step_time_target_out_of_range_is_refused(value):
    import subprocess
    from server_harness import FIXTURE, server_binary, free_port
    out = subprocess.run([server_binary(), "--model", str(FIXTURE), "--step_time_target_ms", value,
                          "--http_port", str(free_port()), "--grpc_port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "--step_time_target_ms: INVALID_ARGUMENT" in out.stdout + out.stderr
