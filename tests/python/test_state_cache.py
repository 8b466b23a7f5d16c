"""Issue 15 end to end: the prefix-state cache, n > 1 from one prefill, and sessions, through both
protocols, on the CPU backend. Exactness is checked against a server that computes everything
(greedy tokens identical, log-probabilities within 1e-5); the cache and the shared prefill are
checked by the VALUES of their metrics (issue 19's rule), and the CPU experiments of the issue are
ratios of token counts, never times."""

import json
import subprocess
import time

import grpc
import pytest

from server_harness import FIXTURE, ROOT, Server, server_binary

DEMO = ROOT / "models" / "demo"
BLOCK = 8  # --prefix_cache_block of these servers: boundaries are cheap to reach on the fixture
TOL = 1e-5


def series(server, name, **labels):
    found = [v for k, v in server.metrics().items() if k.split("{")[0] == name
             and all(f'{key}="{value}"' in k for key, value in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def complete(server, prompt, max_tokens=6, expect=200, **kw):
    """/v1/completions, greedy, with log-probabilities; the whole JSON body (or the error's)."""
    body = {"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "logprobs": 0, **kw}
    r = server.session.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == expect, r.text
    return r


def text_and_logprobs(r):
    choice = r.json()["choices"][0]
    return choice["text"], choice["logprobs"]["token_logprobs"]


def assert_same(a, b):
    (text_a, lp_a), (text_b, lp_b) = a, b
    assert text_a == text_b
    assert len(lp_a) == len(lp_b)
    for x, y in zip(lp_a, lp_b):
        assert abs(x - y) <= TOL, (lp_a, lp_b)


def gen(pb2, ids, max_tokens=6, **kw):
    req = pb2.GenerateRequest(**kw)
    req.token_ids.ids.extend(ids)
    req.sampling.temperature = 0
    req.stopping.max_tokens = max_tokens
    req.stopping.ignore_eos = True
    req.top_logprobs = 0
    return req


def collect(stub, req):
    """(token ids, logprobs, session id) of one Generate call."""
    ids, lps, session = [], [], ""
    for r in stub.Generate(req, timeout=120):
        session = r.session_id or session
        if r.WhichOneof("output") == "chunk":
            ids.extend(r.chunk.token_ids)
            lps.extend(p.chosen.logprob for p in r.chunk.logprobs)
    return ids, lps, session


def prompt(n, start=3):
    """n token ids of the fixture's vocabulary (512), BOS first."""
    return [2] + [(start + 7 * i) % 500 + 3 for i in range(n - 1)]


@pytest.fixture(scope="module")
def cold():
    s = Server("--slots", 8, "--noprefix_cache", "--max_output_tokens", 100000)  # n = 8 fits at once
    yield s
    assert s.stop() == 0, s.logs()


@pytest.fixture(scope="module")
def cached():
    s = Server("--slots", 4, "--prefix_cache_block", BLOCK)
    yield s
    assert s.stop() == 0, s.logs()


# ---- the prefix cache


def test_a_prefix_hit_equals_a_cold_prefill_over_http(cold, cached):
    shared = prompt(40)
    tail_a, tail_b = [11, 12, 13], [21, 22, 23, 24, 25]
    complete(cached, shared + tail_a)  # fills the cache at every block boundary
    hits = series(cached, "griffin_prefix_cache_hits_total")
    queries = series(cached, "griffin_prefix_cache_queries_total")
    warm = text_and_logprobs(complete(cached, shared + tail_b))
    # The longest cached prefix of the 45 tokens: the 40-token boundary of the shared part.
    assert series(cached, "griffin_prefix_cache_hits_total") - hits == 40
    assert series(cached, "griffin_prefix_cache_queries_total") - queries == 45
    assert_same(warm, text_and_logprobs(complete(cold, shared + tail_b)))
    assert series(cold, "griffin_prefix_cache_queries_total") == 0  # --noprefix_cache


def test_a_prefix_hit_equals_a_cold_prefill_over_grpc(cold, cached, pb):
    pb2, pb2_grpc = pb
    shared = prompt(33, start=5)  # 32 is a boundary: the hit stops there, mid-window of 8
    with grpc.insecure_channel(cached.grpc_target) as a, grpc.insecure_channel(cold.grpc_target) as b:
        warm_stub, cold_stub = pb2_grpc.GenerationStub(a), pb2_grpc.GenerationStub(b)
        collect(warm_stub, gen(pb2, shared + [9]))
        hits = series(cached, "griffin_prefix_cache_hits_total")
        ids, lps, _ = collect(warm_stub, gen(pb2, shared + [40, 41]))
        assert series(cached, "griffin_prefix_cache_hits_total") - hits == 32
        cold_ids, cold_lps, _ = collect(cold_stub, gen(pb2, shared + [40, 41]))
    assert ids == cold_ids
    assert all(abs(x - y) <= TOL for x, y in zip(lps, cold_lps)) and len(lps) == len(cold_lps)


def test_different_salts_never_hit(cached, pb):
    base = prompt(26, start=11)
    complete(cached, base + [7], cache_salt="tenant-one")
    hits = series(cached, "griffin_prefix_cache_hits_total")
    complete(cached, base + [8], cache_salt="tenant-two")  # same tokens, another namespace
    complete(cached, base + [8])  # and the unsalted namespace
    assert series(cached, "griffin_prefix_cache_hits_total") == hits
    complete(cached, base + [9], cache_salt="tenant-one")  # the salt that filled it does hit
    assert series(cached, "griffin_prefix_cache_hits_total") - hits == 24
    pb2, pb2_grpc = pb
    with grpc.insecure_channel(cached.grpc_target) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        hits = series(cached, "griffin_prefix_cache_hits_total")
        collect(stub, gen(pb2, base + [10], cache_salt="tenant-three"))
        assert series(cached, "griffin_prefix_cache_hits_total") == hits
        collect(stub, gen(pb2, base + [10], cache_salt="tenant-one"))
        assert series(cached, "griffin_prefix_cache_hits_total") - hits == 24
        with pytest.raises(grpc.RpcError) as e:
            collect(stub, gen(pb2, base, cache_salt="x" * 257))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cache_salt" in e.value.details()
    r = complete(cached, base, cache_salt="", expect=400)
    assert "cache_salt" in r.json()["error"]["message"]
    r = complete(cached, base, cache_salt=5, expect=400)
    assert "cache_salt" in r.json()["error"]["message"]


def test_tenants_never_share_entries_even_with_equal_salts(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("alpha-key-0123456789abcdef tenant-a\nbeta-key-0123456789abcdef tenant-b\n")
    s = Server("--slots", 2, "--prefix_cache_block", BLOCK, "--api_key_file", keys,
               api_key="alpha-key-0123456789abcdef")
    try:
        base = prompt(26, start=13)
        complete(s, base + [5], cache_salt="same")
        hits = series(s, "griffin_prefix_cache_hits_total")
        s.session.headers["Authorization"] = "Bearer beta-key-0123456789abcdef"
        complete(s, base + [6], cache_salt="same")
        complete(s, base + [6])
        assert series(s, "griffin_prefix_cache_hits_total") == hits
        s.session.headers["Authorization"] = "Bearer alpha-key-0123456789abcdef"
        complete(s, base + [6], cache_salt="same")
        assert series(s, "griffin_prefix_cache_hits_total") - hits == 24
    finally:
        assert s.stop() == 0, s.logs()


@pytest.mark.skipif(not (DEMO / "config.json").exists(), reason="the demo model is not bundled")
def test_eviction_and_tier_moves_under_memory_pressure_stay_exact():
    """The demo model's state is ~0.5 MiB: 1 MiB per tier holds about two entries, so ten prompts
    move entries from the device tier to the host tier and evict from the host tier, and what is
    still cached restores exactly."""
    small = Server("--slots", 3, "--prefix_cache_block", 16, "--prefix_cache_memory_mib", 1,
                   "--prefix_cache_host_mib", 1, model=DEMO)
    cold = None
    try:
        cold = Server("--slots", 1, "--noprefix_cache", model=DEMO)
        prompts = [[2] + [(37 * k + 11 * i) % 8000 + 100 for i in range(32)] for k in range(10)]
        for p in prompts:
            complete(small, p, max_tokens=2)
        assert series(small, "griffin_prefix_cache_demotions_total") > 0
        assert series(small, "griffin_prefix_cache_evictions_total") > 0
        device = series(small, "griffin_prefix_cache_bytes", tier="device")
        host = series(small, "griffin_prefix_cache_bytes", tier="host")
        state = series(small, "griffin_state_bytes_per_sequence")
        assert 0 < host <= 1 << 20 and device <= 2 * state  # within the caps given
        hits = series(small, "griffin_prefix_cache_hits_total")
        spent = series(small, "griffin_prefix_cache_restore_seconds_total")
        last = prompts[-1][:32] + [4321, 4322]  # the newest entry is still cached: a hit
        warm = text_and_logprobs(complete(small, last, max_tokens=4))
        assert series(small, "griffin_prefix_cache_hits_total") - hits == 32
        spent_on_hit = series(small, "griffin_prefix_cache_restore_seconds_total")
        assert spent_on_hit > spent  # the hit's restore is timed
        assert_same(warm, text_and_logprobs(complete(cold, last, max_tokens=4)))
        first = prompts[0][:32] + [4321]  # long evicted: computed again, still right
        hits = series(small, "griffin_prefix_cache_hits_total")
        assert_same(text_and_logprobs(complete(small, first, max_tokens=4)),
                    text_and_logprobs(complete(cold, first, max_tokens=4)))
        assert series(small, "griffin_prefix_cache_hits_total") == hits
        assert series(small, "griffin_prefix_cache_restore_seconds_total") == spent_on_hit
    finally:
        rcs = (small.stop(), cold.stop() if cold is not None else 0)  # both stop, whatever failed
        assert rcs == (0, 0), small.logs() + (cold.logs() if cold is not None else "")


def test_a_full_cache_never_fails_an_admission():
    """Two slots: after a few requests the cache holds idle slots; two long requests at once must
    both run at once (the engine takes cached slots back at admission instead of making one wait
    for the other's 100000 tokens)."""
    s = Server("--slots", 2, "--prefix_cache_block", BLOCK, "--max_output_tokens", 100000)
    streams = []
    try:
        for k in range(4):
            complete(s, prompt(20, start=40 + k), max_tokens=2)
        assert series(s, "griffin_prefix_cache_entries", tier="device") >= 1
        demotions = series(s, "griffin_prefix_cache_demotions_total")
        for k in range(2):
            r = s.session.post(s.url + "/v1/completions", stream=True, timeout=120, json={
                "model": s.model, "prompt": prompt(20, start=90 + k), "max_tokens": 100000,
                "temperature": 0, "ignore_eos": True, "stream": True})
            assert r.status_code == 200, r.text
            streams.append(r)
        deadline = time.time() + 60
        while s.gauge("griffin_state_slots_used") < 2:
            assert time.time() < deadline, "the second request was never admitted"
            time.sleep(0.02)
        for r in streams:
            r.close()
        s.wait_idle()
        # Taken back from the cache (the engine copies its cache stats once per step: read them
        # after the requests ended, not the moment the second was admitted).
        assert series(s, "griffin_prefix_cache_demotions_total") > demotions
    finally:
        for r in streams:
            r.close()
        assert s.stop() == 0, s.logs()


# ---- n > 1 from one prefill, and the CPU ratio experiments of the issue


def test_n_choices_compute_the_prompt_once(cold, pb):
    p = prompt(48, start=17)
    before = series(cold, "griffin_prompt_tokens_computed_total")
    r = cold.session.post(cold.url + "/v1/completions", timeout=120, json={
        "model": cold.model, "prompt": p, "max_tokens": 4, "n": 8, "temperature": 1.0, "seed": 3,
        "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == list(range(8))
    assert body["usage"]["prompt_tokens"] == 48 and body["usage"]["completion_tokens"] == 32
    computed = series(cold, "griffin_prompt_tokens_computed_total") - before
    # Once for all but the last token, which each choice feeds to sample from its own row.
    assert computed == 47 + 8
    assert computed / (8 * 48) < 0.15  # the ratio the issue asks about: n = 8 without sharing is 1
    # The same seed gives the same n choices; different choices differ (their own seeds).
    again = cold.session.post(cold.url + "/v1/completions", timeout=120, json={
        "model": cold.model, "prompt": p, "max_tokens": 4, "n": 8, "temperature": 1.0, "seed": 3,
        "ignore_eos": True}).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]
    assert len({c["text"] for c in body["choices"]}) > 1


def test_n_choices_stream_and_their_first_choice_equals_n_1(cold):
    p = prompt(30, start=23)
    one = cold.session.post(cold.url + "/v1/completions", timeout=120, json={
        "model": cold.model, "prompt": p, "max_tokens": 5, "seed": 9, "ignore_eos": True}).json()
    texts = {}
    with cold.session.post(cold.url + "/v1/completions", stream=True, timeout=120, json={
            "model": cold.model, "prompt": p, "max_tokens": 5, "n": 3, "seed": 9, "stream": True,
            "ignore_eos": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                for c in json.loads(line[6:])["choices"]:
                    texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    assert sorted(texts) == [0, 1, 2]
    assert texts[0] == one["choices"][0]["text"]  # choice 0 has the request's own seed


def test_n_choices_over_grpc(cold, pb):
    pb2, pb2_grpc = pb
    p = prompt(40, start=19)
    with grpc.insecure_channel(cold.grpc_target) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        before = series(cold, "griffin_prompt_tokens_computed_total")
        req = gen(pb2, p, max_tokens=5, n=4)
        req.sampling.temperature = 1.0
        req.sampling.seed = 7
        ids, completes = {}, {}
        for r in stub.Generate(req, timeout=60):
            kind = r.WhichOneof("output")
            if kind == "chunk":
                ids.setdefault(r.index, []).extend(r.chunk.token_ids)
            elif kind == "complete":
                completes[r.index] = r.complete
        assert sorted(completes) == [0, 1, 2, 3] and sorted(ids) == [0, 1, 2, 3]
        assert all(len(v) == 5 for v in ids.values())
        assert all(c.usage.prompt_tokens == 40 for c in completes.values())
        assert series(cold, "griffin_prompt_tokens_computed_total") - before == 39 + 4
        one = gen(pb2, p, max_tokens=5)
        one.sampling.temperature = 1.0
        one.sampling.seed = 7
        assert collect(stub, one)[0] == ids[0]  # choice 0 has the request's own seed
        assert len({tuple(v) for v in ids.values()}) > 1
        # Abort by the request id ends every choice.
        long = gen(pb2, p, max_tokens=100000, n=3, request_id="group-abort")
        stream = stub.Generate(long, timeout=120)
        first = next(stream)
        assert first.request_id == "group-abort"
        assert stub.Abort(pb2.AbortRequest(request_id="group-abort"), timeout=10).found
        reasons = {r.index: r.complete.finish_reason for r in stream
                   if r.WhichOneof("output") == "complete"}
        assert reasons == {i: pb2.FINISH_REASON_ABORT for i in range(3)}
        with pytest.raises(grpc.RpcError) as e:
            collect(stub, gen(pb2, p, n=2, session_id="new"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "n must be 1" in e.value.details()
    cold.wait_idle()


def test_shared_prefix_ratio_with_and_without_the_cache(cold, cached):
    """The issue's first experiment at CPU scale: requests sharing a 64-token prefix compute a
    small fraction of their prompt tokens with the cache, all of them without it."""
    shared = prompt(64, start=29)
    computed = {}
    for name, s in (("with", cached), ("without", cold)):
        before = series(s, "griffin_prompt_tokens_computed_total")
        for k in range(4):
            complete(s, shared + [100 + k, 200 + k], max_tokens=1)
        computed[name] = series(s, "griffin_prompt_tokens_computed_total") - before
    assert computed["without"] == 4 * 66
    assert computed["with"] == 66 + 3 * 2  # the first fills the cache, the rest restore 64
    assert computed["with"] / computed["without"] < 0.3


# ---- sessions


@pytest.fixture(scope="module")
def sessions():
    s = Server("--slots", 3, "--max_output_tokens", 100000)
    yield s
    assert s.stop() == 0, s.logs()


def turn(server, tokens, session_id, max_tokens=5, expect=200, **kw):
    return complete(server, tokens, max_tokens=max_tokens, expect=expect, session_id=session_id, **kw)


def test_a_session_equals_the_conversation_sent_in_full(sessions, cold, pb):
    pb2, pb2_grpc = pb
    p1, p2, p3 = prompt(12, start=31), [40, 41, 42], [50, 51]
    r1 = turn(sessions, p1, "new")
    sid = r1.json()["session_id"]
    assert r1.headers["X-Session-Id"] == sid and len(sid) == 32
    r2 = turn(sessions, p2, sid)
    assert r2.json()["session_id"] == sid
    # prompt_tokens: the new tokens and the unfed last token of turn 1.
    assert r2.json()["usage"]["prompt_tokens"] == len(p2) + 1
    r3 = turn(sessions, p3, sid)
    # The same conversation in full on a server without any cache: greedy outputs as token ids
    # come from gRPC, whose chunks carry them.
    with grpc.insecure_channel(cold.grpc_target) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        out1, _, _ = collect(stub, gen(pb2, p1, max_tokens=5))
        assert_same(text_and_logprobs(r1), text_and_logprobs(complete(cold, p1, max_tokens=5)))
        out2, _, _ = collect(stub, gen(pb2, p1 + out1 + p2, max_tokens=5))
    assert_same(text_and_logprobs(r2), text_and_logprobs(complete(cold, p1 + out1 + p2, max_tokens=5)))
    assert_same(text_and_logprobs(r3),
                text_and_logprobs(complete(cold, p1 + out1 + p2 + out2 + p3, max_tokens=5)))
    assert series(sessions, "griffin_state_restores_total") >= 2
    assert series(sessions, "griffin_sessions") >= 1
    assert series(sessions, "griffin_session_bytes") > 0


def test_a_grpc_session_equals_the_conversation_sent_in_full(sessions, cold, pb):
    pb2, pb2_grpc = pb
    p1, p2 = prompt(9, start=37), [60, 61, 62, 63]
    with grpc.insecure_channel(sessions.grpc_target) as a, grpc.insecure_channel(cold.grpc_target) as b:
        stub, cold_stub = pb2_grpc.GenerationStub(a), pb2_grpc.GenerationStub(b)
        restores = series(sessions, "griffin_state_restores_total")
        out1, lp1, sid = collect(stub, gen(pb2, p1, session_id="new"))
        assert len(sid) == 32
        out2, lp2, sid2 = collect(stub, gen(pb2, p2, session_id=sid))
        assert sid2 == sid
        assert series(sessions, "griffin_state_restores_total") - restores == 1
        full, full_lp, _ = collect(cold_stub, gen(pb2, p1 + out1 + p2))
        assert out2 == full
        assert all(abs(x - y) <= TOL for x, y in zip(lp2, full_lp)) and len(lp2) == len(full_lp)
        # The two protocols share sessions: HTTP continues the gRPC conversation.
        r = turn(sessions, [70], sid)
        assert r.json()["session_id"] == sid
        for bad, code in (("0" * 32, grpc.StatusCode.NOT_FOUND),
                          ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as e:
                collect(stub, gen(pb2, p2, session_id=bad))
            assert e.value.code() == code and "session_id" in e.value.details()


def test_session_errors(sessions):
    p = prompt(6, start=41)
    r = turn(sessions, p, "0123456789abcdef0123456789abcdef", expect=404)
    assert "session" in r.json()["error"]["message"]
    r = turn(sessions, p, "../../etc/passwd", expect=400)
    assert "session_id" in r.json()["error"]["message"] and "etc" not in r.text
    sid = turn(sessions, p, "new").json()["session_id"]
    for extra, field in (({"n": 2}, "n"), ({"echo": True}, "echo"),
                         ({"prompt_logprobs": 1}, "prompt_logprobs"), ({"stop": ["x"]}, "stop")):
        r = turn(sessions, [5], sid, expect=400, **extra)
        assert r.json()["error"]["message"].startswith(field), r.text
    r = sessions.session.post(sessions.url + "/v1/completions", timeout=30, json={
        "model": sessions.model, "prompt": [[5], [6]], "session_id": sid, "max_tokens": 2})
    assert r.status_code == 400 and "one prompt" in r.text
    r = turn(sessions, [5], 12, expect=400)
    assert "session_id" in r.json()["error"]["message"]


def test_a_session_in_use_is_409_and_a_cancelled_turn_leaves_it_as_it_was(sessions, cold, pb):
    p1 = prompt(10, start=43)
    first = turn(sessions, p1, "new")
    sid = first.json()["session_id"]
    long_turn = sessions.session.post(sessions.url + "/v1/completions", stream=True, timeout=120,
                                      json={"model": sessions.model, "prompt": [77],
                                            "session_id": sid, "max_tokens": 100000,
                                            "ignore_eos": True, "stream": True})
    assert long_turn.status_code == 200
    lines = long_turn.iter_lines()  # kept: a dropped generator would close the stream
    assert next(lines).startswith(b"data: {")  # it is running
    r = turn(sessions, [78], sid, expect=409)
    assert "in use" in r.json()["error"]["message"]
    long_turn.close()  # the client goes away: the turn is cancelled and the session abandoned
    deadline = time.time() + 30
    while True:
        r = sessions.session.post(sessions.url + "/v1/completions", timeout=60, json={
            "model": sessions.model, "prompt": [78], "session_id": sid, "max_tokens": 5,
            "temperature": 0, "ignore_eos": True, "logprobs": 0})
        if r.status_code != 409 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    # It continued from turn 1's state, as if the cancelled turn never happened.
    out1 = complete_ids(cold, p1)
    assert_same(text_and_logprobs(r), text_and_logprobs(complete(cold, p1 + out1 + [78], max_tokens=5)))


def complete_ids(server, tokens, max_tokens=5):
    """Greedy output ids of `tokens` through gRPC (the HTTP API returns text)."""
    from griffin.v1 import generation_pb2 as pb2, generation_pb2_grpc as pb2_grpc
    with grpc.insecure_channel(server.grpc_target) as ch:
        ids, _, _ = collect(pb2_grpc.GenerationStub(ch), gen(pb2, tokens, max_tokens=max_tokens))
    return ids


def test_sessions_expire_after_their_ttl(pb):
    s = Server("--slots", 1, "--session_ttl", 1)
    try:
        sid = turn(s, prompt(5), "new").json()["session_id"]
        assert series(s, "griffin_sessions") == 1
        time.sleep(2.5)  # well past the TTL of 1 s
        r = turn(s, [9], sid, expect=404)
        assert "expired" in r.json()["error"]["message"]
        assert series(s, "griffin_sessions") == 0
        assert series(s, "griffin_sessions_expired_total") == 1
    finally:
        assert s.stop() == 0, s.logs()


def test_sessions_survive_a_restart_and_a_damaged_file_loses_nothing_else(tmp_path, cold, pb):
    d = tmp_path / "sessions"
    p = {k: prompt(8, start=50 + i) for i, k in enumerate("abc")}
    s = Server("--slots", 2, "--session_dir", d)
    try:
        sids = {k: turn(s, p[k], "new").json()["session_id"] for k in "abc"}
    finally:
        assert s.stop() == 0, s.logs()  # SIGTERM: the drain writes every session out
    assert "sessions: 3 saved" in s.logs()
    files = {k: d / f"{sids[k]}.session" for k in "abc"}
    assert all(f.exists() for f in files.values())
    data = bytearray(files["b"].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the snapshot
    files["b"].write_bytes(bytes(data))
    files["c"].write_bytes(files["c"].read_bytes()[:-20])  # truncated
    s = Server("--slots", 2, "--session_dir", d)
    try:
        for k in "bc":
            r = turn(s, [9], sids[k], expect=500)
            assert "damaged" in r.json()["error"]["message"]
        r = turn(s, [9], sids["a"])  # continues from the saved state, read back on demand
        out = complete_ids(cold, p["a"])
        assert_same(text_and_logprobs(r), text_and_logprobs(complete(cold, p["a"] + out + [9], max_tokens=5)))
        assert turn(s, [10], sids["a"]).status_code == 200
        s.assert_healthy()
    finally:
        assert s.stop() == 0, s.logs()
    # A file another model saved is refused as such, not as damage.
    other = DEMO if (DEMO / "config.json").exists() else None
    if other is not None:
        s = Server("--slots", 1, "--session_dir", d, model=other)
        try:
            r = turn(s, [9], sids["a"], expect=400)
            assert "another model" in r.json()["error"]["message"]
        finally:
            assert s.stop() == 0, s.logs()


@pytest.mark.skipif(not (DEMO / "config.json").exists(), reason="the demo model is not bundled")
@pytest.mark.parametrize("with_dir", [True, False])
def test_sessions_past_the_memory_cap_spill_to_disk_or_are_dropped(tmp_path, with_dir):
    """The demo model's state is ~0.5 MiB: --session_memory_mib 1 holds two sessions. Four open
    sessions push the two least recently used out: to --session_dir (counted, and read back when
    named) or, without one, dropped (404)."""
    args = ["--slots", 1, "--session_memory_mib", 1]
    if with_dir:
        args += ["--session_dir", tmp_path / "sessions"]
    s = Server(*args, model=DEMO)
    try:
        sids = [turn(s, [2, 100 + k, 200 + k], "new", max_tokens=2).json()["session_id"] for k in range(4)]
        assert series(s, "griffin_session_bytes") <= 1 << 20
        if with_dir:
            assert series(s, "griffin_sessions_spilled_total") == 2
            assert series(s, "griffin_sessions") == 4
            assert all((tmp_path / "sessions" / f"{sid}.session").exists() for sid in sids[:2])
            restores = series(s, "griffin_state_restores_total")
            assert turn(s, [300], sids[0], max_tokens=2).json()["session_id"] == sids[0]
            assert series(s, "griffin_state_restores_total") - restores == 1
        else:
            assert series(s, "griffin_sessions_spilled_total") == 0
            assert series(s, "griffin_sessions") == 2
            turn(s, [300], sids[0], max_tokens=2, expect=404)
            assert turn(s, [300], sids[3], max_tokens=2).status_code == 200
    finally:
        assert s.stop() == 0, s.logs()


def test_another_tenants_session_is_404(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("alpha-key-0123456789abcdef tenant-a\nbeta-key-0123456789abcdef tenant-b\n")
    s = Server("--slots", 2, "--api_key_file", keys, api_key="alpha-key-0123456789abcdef")
    try:
        sid = turn(s, prompt(6), "new").json()["session_id"]
        s.session.headers["Authorization"] = "Bearer beta-key-0123456789abcdef"
        r = turn(s, [9], sid, expect=404)
        assert r.json()["error"]["message"] == turn(s, [9], "f" * 32, expect=404).json()["error"]["message"]
        s.session.headers["Authorization"] = "Bearer alpha-key-0123456789abcdef"
        assert turn(s, [9], sid).json()["session_id"] == sid
    finally:
        assert s.stop() == 0, s.logs()


def test_chat_sessions_send_only_the_new_messages(sessions):
    def chat(messages, session_id, max_tokens=4, **kw):
        r = sessions.session.post(sessions.url + "/v1/chat/completions", timeout=60, json={
            "model": sessions.model, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0, "session_id": session_id, **kw})
        assert r.status_code == 200, r.text
        return r

    first = chat([{"role": "user", "content": "Hello there"}], "new")
    sid = first.json()["session_id"]
    assert first.headers["X-Session-Id"] == sid
    second = chat([{"role": "user", "content": "And again"}], sid)
    assert second.json()["session_id"] == sid
    # Turn 2 feeds only its own turn (no BOS, no history): fewer prompt tokens than the full chat.
    full = sessions.session.post(sessions.url + "/v1/chat/completions", timeout=60, json={
        "model": sessions.model, "max_tokens": 4, "temperature": 0, "messages": [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And again"}]}).json()
    assert second.json()["usage"]["prompt_tokens"] < full["usage"]["prompt_tokens"]
    chunks = sessions.session.post(sessions.url + "/v1/chat/completions", stream=True, timeout=60, json={
        "model": sessions.model, "messages": [{"role": "user", "content": "Third"}], "max_tokens": 3,
        "session_id": sid, "stream": True})
    assert chunks.headers["X-Session-Id"] == sid
    assert all(b'"session_id":"' + sid.encode() in line
               for line in chunks.iter_lines() if line.startswith(b"data: {"))


@pytest.mark.parametrize("turn1_ends", ["length", "end_of_turn"])
def test_a_chat_session_equals_the_template_rendered_in_full(sessions, pb, turn1_ends):
    """Turn 2 of a chat session sends only its message; the server must feed exactly what the
    Gemma template gives for the whole conversation (the previous turn closed with <end_of_turn>
    when it ended by length, then the newline, no BOS): compared with that conversation built
    as token ids and sent whole to /v1/completions."""
    pb2, pb2_grpc = pb
    url = sessions.url

    def ids(text):
        r = sessions.session.post(url + "/tokenize", json={"prompt": text, "add_special_tokens": False},
                                  timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["tokens"]

    sot, eot = ids("<start_of_turn>"), ids("<end_of_turn>")
    assert len(sot) == 1 and len(eot) == 1, "the fixture tokenizer has Gemma's turn markers"
    nl = ids("\n")
    first = sot + ids("user\nHello there") + eot + nl + sot + ids("model\n")
    t1 = [2] + first
    # Turn 1 ends by length, or with <end_of_turn> (a logit bias makes it the first token).
    bias = {str(eot[0]): 100} if turn1_ends == "end_of_turn" else {}
    chat = lambda messages, sid, extra={}: sessions.session.post(url + "/v1/chat/completions", timeout=60, json={
        "model": sessions.model, "messages": messages, "max_tokens": 4, "temperature": 0,
        "ignore_eos": True, "logprobs": True, "session_id": sid, **extra})
    r1 = chat([{"role": "user", "content": "Hello there"}], "new", {"logit_bias": bias})
    assert r1.status_code == 200, r1.text
    assert r1.json()["choices"][0]["finish_reason"] == ("stop" if bias else "length")
    assert r1.json()["usage"]["prompt_tokens"] == len(t1)
    sid = r1.json()["session_id"]
    with grpc.insecure_channel(sessions.grpc_target) as ch:
        req = gen(pb2, t1, max_tokens=4)
        req.stopping.stop_token_ids.append(eot[0])
        for token, value in bias.items():
            req.sampling.logit_bias[int(token)] = value
        out1, _, _ = collect(pb2_grpc.GenerationStub(ch), req)
    assert (out1 == eot) == bool(bias)
    closing = [] if out1[-1] == eot[0] else eot  # ended by length: the turn is closed first
    second = sot + ids("user\nAnd again") + eot + nl + sot + ids("model\n")
    full = t1 + out1 + closing + nl + second
    r2 = chat([{"role": "user", "content": "And again"}], sid)
    assert r2.status_code == 200, r2.text
    assert r2.json()["usage"]["prompt_tokens"] == len(full) - len(t1) - len(out1) + 1
    whole = sessions.session.post(url + "/v1/completions", timeout=60, json={
        "model": sessions.model, "prompt": full, "max_tokens": 4, "temperature": 0,
        "ignore_eos": True, "logprobs": 0, "stop_token_ids": eot}).json()["choices"][0]
    content = r2.json()["choices"][0]
    assert content["message"]["content"] == whole["text"]
    got = [e["logprob"] for e in content["logprobs"]["content"]]
    assert len(got) == len(whole["logprobs"]["token_logprobs"])
    assert all(abs(a - b) <= TOL for a, b in zip(got, whole["logprobs"]["token_logprobs"]))


def test_a_new_session_whose_first_request_fails_is_gone():
    """The first request of a "new" session is cancelled: nothing was saved, so the session goes
    at once (not at its TTL) and its id is then unknown."""
    s = Server("--slots", 1, "--max_output_tokens", 100000)
    try:
        r = s.session.post(s.url + "/v1/completions", stream=True, timeout=60, json={
            "model": s.model, "prompt": prompt(5), "max_tokens": 100000, "temperature": 0,
            "ignore_eos": True, "stream": True, "session_id": "new"})
        assert r.status_code == 200, r.text
        sid = r.headers["X-Session-Id"]
        # Kept referenced: a dropped line iterator closes the stream and hands its connection back.
        lines = r.iter_lines()
        next(lines)  # generating
        assert s.gauge("griffin_sessions") == 1
        r.close()  # the client goes away: the request is cancelled
        s.wait_idle()
        deadline = time.time() + 20
        while s.gauge("griffin_sessions") != 0:
            assert time.time() < deadline, "the never-filled session is still held"
            time.sleep(0.05)
        gone = turn(s, [3, 4], sid, expect=404)
        assert "unknown or expired session" in gone.json()["error"]["message"]
    finally:
        assert s.stop() == 0, s.logs()


def test_sessions_off_is_a_clear_400():
    s = Server("--slots", 1, "--session_memory_mib", 0)
    try:
        r = turn(s, prompt(5), "new", expect=400)
        assert "keeps no sessions" in r.json()["error"]["message"]
    finally:
        assert s.stop() == 0, s.logs()


@pytest.mark.parametrize("flag,value,message", [
    ("--prefix_cache_block", "0", "--prefix_cache_block"),
    ("--prefix_cache_memory_mib", "-1", "--prefix_cache_memory_mib"),
    ("--session_ttl", "0", "--session_ttl"),
    ("--session_dir", "/proc/griffin-no", "--session_dir"),
])
def test_bad_flags_fail_at_start_up(flag, value, message):
    p = subprocess.run([server_binary(), "--model", str(FIXTURE), "--backend", "cpu", "--http_port", "0",
                        "--grpc_port", "0", flag, value], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert message in p.stdout + p.stderr
