"""griffin-server over gRPC with Python grpcio: Generate/Tokenize/Abort/GetModelInfo, health,
validation (VAL-*, TXT-1, LEN-4), deadlines (CAN-3), NUM-1, NUM-2 and a burst of concurrent
requests with random cancellations (CAN-1), characters split across tokens (TXT-2)."""

import math
import random
import threading
import time

import grpc
import pytest
import sentencepiece as spm

from server_harness import FIXTURE


def gen_request(pb2, ids=None, text=None, max_tokens=8, temperature=0.0, seed=None, **kw):
    req = pb2.GenerateRequest(**kw)
    if text is not None:
        req.text = text
    else:
        req.token_ids.ids.extend(ids or [2, 17, 33, 5])
    req.sampling.temperature = temperature
    if seed is not None:
        req.sampling.seed = seed
    req.stopping.max_tokens = max_tokens
    req.stopping.ignore_eos = True
    return req


def collect(stub, req, timeout=60):
    ids, text, complete = [], b"", None
    for r in stub.Generate(req, timeout=timeout):
        kind = r.WhichOneof("output")
        if kind == "chunk":
            ids.extend(r.chunk.token_ids)
            text += r.chunk.text
        elif kind == "complete":
            complete = r.complete
    return ids, text, complete


def test_generate_streams_chunks_and_complete(stub, pb):
    pb2, _ = pb
    ids, text, complete = collect(stub, gen_request(pb2, max_tokens=12))
    assert len(ids) == 12
    assert complete.finish_reason == pb2.FINISH_REASON_LENGTH
    assert complete.usage.completion_tokens == 12 and complete.usage.prompt_tokens == 4
    assert complete.timings.queue_seconds >= 0 and complete.timings.decode_seconds >= 0
    text.decode("utf-8")
    ids2, _, c2 = collect(stub, gen_request(pb2, text=b"Once upon a time", max_tokens=5))
    assert len(ids2) == 5 and c2.usage.prompt_tokens > 1


def test_logprobs_and_stop_ids(stub, pb):  # NUM-5
    pb2, _ = pb
    req = gen_request(pb2, max_tokens=4, top_logprobs=3)
    lps = []
    for r in stub.Generate(req, timeout=60):
        if r.WhichOneof("output") == "chunk":
            lps.extend(r.chunk.logprobs)
    assert len(lps) == 4
    for p in lps:
        assert p.chosen.logprob <= 0 and len(p.top) == 3
        assert p.top[0].token_id == p.chosen.token_id
    first = lps[0].chosen.token_id
    req = gen_request(pb2, max_tokens=4)
    req.stopping.stop_token_ids.append(first)
    ids, _, c = collect(stub, req)
    assert ids == [first] and c.finish_reason == pb2.FINISH_REASON_STOP and c.stop_token_id == first


def test_tokenize_and_model_info(stub, pb):
    pb2, _ = pb
    r = stub.Tokenize(pb2.TokenizeRequest(text=b"hello world", add_bos=True), timeout=10)
    assert r.token_ids[0] == 2 and len(r.token_ids) > 1
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    assert info.config.vocab_size == 512 and info.num_slots == 8
    assert info.state_bytes_per_sequence > 0 and info.backend == "cpu"
    assert info.config.block_pattern.startswith("RRA")


def test_health_service(server):  # OPS-2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(server.grpc_target) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("edit,field", [
    (lambda r: setattr(r.sampling, "temperature", float("nan")), "temperature"),
    (lambda r: setattr(r.sampling, "temperature", float("inf")), "temperature"),
    (lambda r: setattr(r.sampling, "temperature", -1.0), "temperature"),
    (lambda r: setattr(r.sampling, "top_p", 0.0), "top_p"),
    (lambda r: setattr(r.sampling, "top_k", 0), "top_k"),
    (lambda r: setattr(r.sampling, "repetition_penalty", 0.0), "repetition_penalty"),
    (lambda r: setattr(r.sampling, "presence_penalty", 2.01), "presence_penalty"),
    (lambda r: setattr(r.stopping, "max_tokens", 0), "max_tokens"),
    (lambda r: setattr(r.stopping, "max_tokens", 2**62), "max_tokens"),
    (lambda r: setattr(r, "top_logprobs", 21), "top_logprobs"),
    (lambda r: r.stopping.stop_token_ids.append(512), "stop_token_ids"),
    (lambda r: r.stopping.stop_token_ids.append(-1), "stop_token_ids"),
    (lambda r: r.token_ids.ids.append(2**32 - 1), "prompt"),
    (lambda r: r.token_ids.ids.append(512), "prompt"),
    (lambda r: r.token_ids.ids.extend([7] * 64), "prompt"),
    (lambda r: setattr(r, "text", b"ab\xff"), "prompt"),           # TXT-1: bytes field
    (lambda r: setattr(r, "text", b"   "), "prompt"),              # VAL-1
    (lambda r: r.ClearField("token_ids"), "input"),                # VAL-8: empty oneof
    (lambda r: r.stopping.stop.append(b"\xc3"), "stop"),
    (lambda r: setattr(r, "request_id", "../x"), "request_id"),
])
def test_invalid_arguments(server, stub, pb, edit, field):
    pb2, _ = pb
    req = gen_request(pb2, max_tokens=4)
    edit(req)
    with pytest.raises(grpc.RpcError) as e:
        collect(stub, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(field), e.value.details()
    assert "\\x" not in e.value.details()


def test_unknown_method_and_message_too_large(server, stub, pb):  # VAL-8, LEN-4
    pb2, _ = pb
    with grpc.insecure_channel(server.grpc_target) as ch:
        call = ch.unary_unary("/griffin.v1.Generation/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    big = pb2.GenerateRequest(text=b"a" * (5 << 20))
    with pytest.raises(grpc.RpcError) as e:
        collect(stub, big)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    server.assert_healthy()


def test_deadline(server, stub, pb):  # CAN-3
    pb2, _ = pb
    with pytest.raises(grpc.RpcError) as e:
        collect(stub, gen_request(pb2, max_tokens=100000), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    server.wait_idle()
    server.assert_healthy()


def test_abort_rpc(server, stub, pb):
    pb2, _ = pb
    req = gen_request(pb2, max_tokens=100000, request_id="abort-me-1")
    stream = stub.Generate(req, timeout=60)
    first = next(stream)
    assert first.WhichOneof("output") == "chunk"
    assert stub.Abort(pb2.AbortRequest(request_id="abort-me-1"), timeout=10).found
    complete = None
    for r in stream:
        if r.WhichOneof("output") == "complete":
            complete = r.complete
    assert complete.finish_reason == pb2.FINISH_REASON_ABORT
    # Finished: NOT_FOUND, as for an id that never existed (SEC-3: no hint either way).
    for gone in ("abort-me-1", "never-was"):
        with pytest.raises(grpc.RpcError) as e:
            stub.Abort(pb2.AbortRequest(request_id=gone), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert e.value.details() == "no such request in flight"
    server.wait_idle()
    # The id is reusable once finished.
    ids, _, _ = collect(stub, gen_request(pb2, max_tokens=3, request_id="abort-me-1"))
    assert len(ids) == 3


def test_greedy_alone_equals_busy_batch(server, stub, pb):  # NUM-1
    pb2, _ = pb
    prompt = [2, 17, 33, 5, 90, 41, 7, 7, 12, 200, 3, 64, 99, 100, 101, 102, 103, 104, 105, 106]
    alone, _, _ = collect(stub, gen_request(pb2, ids=prompt, max_tokens=32))
    server.wait_idle()
    # Six sampled streams (with the measured one, seven of the eight slots) that are running before
    # the measured request starts and still running when it ends: the batch really was busy, its
    # 20-token prompt chunked (--token_budget 16) between their decodes.
    started = [threading.Event() for _ in range(6)]
    ended = [threading.Event() for _ in range(6)]
    calls, errors = [], []

    def noise(i):
        call = stub.Generate(gen_request(pb2, ids=[2, 50 + i, 7], max_tokens=100000,
                                         temperature=1.0, seed=i), timeout=120)
        calls.append(call)
        try:
            for _ in call:
                started[i].set()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(e)
        finally:
            started[i].set()
            ended[i].set()

    threads = [threading.Thread(target=noise, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for e in started:
        assert e.wait(60)
    assert not any(e.is_set() for e in ended), errors
    busy, _, _ = collect(stub, gen_request(pb2, ids=prompt, max_tokens=32))
    assert not any(e.is_set() for e in ended), "a neighbour ended before the measured request"
    for call in calls:
        call.cancel()
    for t in threads:
        t.join(60)
    assert not errors
    assert busy == alone
    server.wait_idle()


def test_same_seed_same_output(stub, pb):  # NUM-2
    pb2, _ = pb
    a, _, _ = collect(stub, gen_request(pb2, max_tokens=24, temperature=1.0, seed=1234))
    b, _, _ = collect(stub, gen_request(pb2, max_tokens=24, temperature=1.0, seed=1234))
    c, _, _ = collect(stub, gen_request(pb2, max_tokens=24, temperature=1.0, seed=1235))
    assert a == b
    assert a != c


def test_burst_with_random_cancellations(server, stub, pb):  # CAN-1, OPS-3
    pb2, _ = pb
    rng = random.Random(5)
    n = 100
    cancel = set(rng.sample(range(n), 10))
    results = [None] * n
    lock = threading.Lock()

    def run(i):
        # A cancelled call is far too long to finish first: it must end CANCELLED.
        max_tokens = 100000 if i in cancel else 20 + (i % 7) * 10
        req = gen_request(pb2, ids=[2, 5 + i % 300, 9], max_tokens=max_tokens,
                          temperature=1.0, seed=i, request_id=f"burst-{i}")
        call = stub.Generate(req, timeout=120)
        got = 0
        try:
            if i in cancel:
                # Cancel at a random point: before the first chunk (queued) or mid-stream.
                stop_after = rng.randint(0, 3)
                if stop_after == 0:
                    call.cancel()
                for r in call:
                    if r.WhichOneof("output") == "chunk":
                        got += len(r.chunk.token_ids)
                        if got >= stop_after:
                            call.cancel()
                with lock:
                    results[i] = ("finished", got, max_tokens)
            else:
                for r in call:
                    if r.WhichOneof("output") == "chunk":
                        got += len(r.chunk.token_ids)
                with lock:
                    results[i] = ("ok", got, max_tokens)
        except grpc.RpcError as e:
            with lock:
                results[i] = (e.code(), got, max_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (status, got, max_tokens) in enumerate(results):
        if i in cancel:
            assert status == grpc.StatusCode.CANCELLED, (i, status)
        else:
            assert status == "ok", (i, status)
            assert got == max_tokens, (i, got, max_tokens)
    server.wait_idle()
    # Request ids are reusable.
    ids, _, _ = collect(stub, gen_request(pb2, max_tokens=2, request_id="burst-0"))
    assert len(ids) == 2
    # CAN-4: every per-call object created was destroyed (bounded wait: OnDone runs after the
    # client saw the status).
    deadline = time.time() + 20
    while True:
        created = server.gauge("griffin_grpc_generate_calls_started")
        destroyed = server.gauge("griffin_grpc_generate_calls_freed")
        if created == destroyed or time.time() > deadline:
            break
        time.sleep(0.02)
    assert created == destroyed and created >= n


def test_server_reflection(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    with grpc.insecure_channel(server.grpc_target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert "griffin.v1.Generation" in services
        assert "grpc.health.v1.Health" in services
        desc = db.FindFileContainingSymbol("griffin.v1.Generation")
        assert desc.package == "griffin.v1"


def test_tiny_temperatures_and_top_p(server, stub, pb):  # VAL-3
    pb2, _ = pb
    greedy, _, _ = collect(stub, gen_request(pb2, max_tokens=16))
    for t in (1e-8, 1e-6):
        ids, _, _ = collect(stub, gen_request(pb2, max_tokens=16, temperature=t, seed=9))
        assert ids == greedy, t
    for t in (1e-4, 1e-3):
        ids, _, c = collect(stub, gen_request(pb2, max_tokens=16, temperature=t, seed=9))
        assert len(ids) == 16 and c.finish_reason == pb2.FINISH_REASON_LENGTH
    for p in (1e-8, 1e-4):
        req = gen_request(pb2, max_tokens=16, temperature=1.0, seed=9)
        req.sampling.top_p = p
        ids, _, _ = collect(stub, req)
        assert ids == greedy, p


def test_extreme_neighbour_leaves_others_unchanged(server, stub, pb):  # NUM-3
    pb2, _ = pb
    normal = gen_request(pb2, ids=[2, 60, 61, 62], max_tokens=24)
    alone, _, _ = collect(stub, normal)
    extreme = gen_request(pb2, ids=[2, 511, 510, 0], max_tokens=200, temperature=1.0, seed=3)
    extreme.sampling.repetition_penalty = 1e6
    extreme.sampling.presence_penalty = -2.0
    extreme.sampling.frequency_penalty = 2.0
    extreme.sampling.top_k = 1
    extreme.stopping.stop_token_ids.append(511)
    extreme.stopping.min_tokens = 200
    errors = []

    def run_extreme():
        try:
            collect(stub, extreme)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run_extreme) for _ in range(4)]
    for t in threads:
        t.start()
    busy, _, _ = collect(stub, normal)
    for t in threads:
        t.join(60)
    assert not errors
    assert busy == alone
    server.wait_idle()


def test_prompt_logprobs_and_logit_bias(stub, pb):  # issue 17 over gRPC
    pb2, _ = pb
    ids = [2, 17, 33, 5, 90, 41, 7, 7, 12, 200, 3, 64, 99, 100, 101, 102, 103, 104]  # > 1 chunk
    req = gen_request(pb2, ids=ids, max_tokens=2, prompt_logprobs=2)
    chunks = [r.chunk for r in stub.Generate(req, timeout=60) if r.WhichOneof("output") == "chunk"]
    plp = list(chunks[0].prompt_logprobs)
    assert len(plp) == len(ids) - 1 and all(not c.prompt_logprobs for c in chunks[1:])
    for i, p in enumerate(plp, start=1):
        assert p.chosen.token_id == ids[i] and p.chosen.logprob <= 0 and p.chosen.rank >= 1
        assert len(p.top) == 2 and p.top[0].logprob >= p.top[1].logprob
        if p.chosen.rank > 2:
            assert p.top[1].logprob >= p.chosen.logprob
    # Scoring only: max_tokens 0 is allowed with prompt_logprobs, and the values are the same.
    only = gen_request(pb2, ids=ids, max_tokens=0, prompt_logprobs=0)
    got, _, complete = [], None, None
    for r in stub.Generate(only, timeout=60):
        if r.WhichOneof("output") == "chunk":
            got.extend(r.chunk.prompt_logprobs)
            assert not r.chunk.token_ids
        else:
            complete = r.complete
    assert [p.chosen.logprob for p in got] == [p.chosen.logprob for p in plp]
    assert complete.finish_reason == pb2.FINISH_REASON_LENGTH and complete.usage.completion_tokens == 0
    with pytest.raises(grpc.RpcError) as e:  # without prompt_logprobs, max_tokens 0 is refused
        collect(stub, gen_request(pb2, ids=ids, max_tokens=0))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # logit_bias: +100 forces an id; -100 on the greedy first token moves it.
    greedy, _, _ = collect(stub, gen_request(pb2, max_tokens=4))
    forced = gen_request(pb2, max_tokens=4)
    forced.sampling.logit_bias[300] = 100.0
    assert collect(stub, forced)[0] == [300] * 4
    banned = gen_request(pb2, max_tokens=4)
    banned.sampling.logit_bias[greedy[0]] = -100.0
    assert collect(stub, banned)[0][0] != greedy[0]
    for bad in ({512: 1.0}, {-1: 1.0}, {5: 100.5}):
        req = gen_request(pb2, max_tokens=2)
        for k, v in bad.items():
            req.sampling.logit_bias[k] = v
        with pytest.raises(grpc.RpcError) as e:
            collect(stub, req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith("logit_bias")


def allowed_ids(top, kind, value):
    """The ids the sampler may draw at temperature 1 under one filter, from the position's top-20
    log-probabilities (sorted, best first); None when the top 20 cannot decide it, or when a
    probability lies within 1e-4 of the cut (float32 log-probabilities vs the sampler's doubles)."""
    ids = [t.token_id for t in top]
    probs = [math.exp(t.logprob) for t in top]
    if kind == "top_k":
        if value < len(probs) and abs(probs[value - 1] - probs[value]) < 1e-4:
            return None
        return set(ids[:value])
    if kind == "top_p":
        cumulative = 0.0
        for i, p in enumerate(probs):
            cumulative += p
            if abs(cumulative - value) < 1e-4:
                return None
            if cumulative >= value:
                return set(ids[:i + 1])
        return None
    threshold = value * probs[0]  # min_p
    keep = [i for i, p in enumerate(probs) if p >= threshold]
    if len(keep) == len(probs) or any(abs(p - threshold) < 1e-4 for p in probs):
        return None
    return set(ids[:len(keep)])


@pytest.mark.parametrize("kind,value", [("top_k", 3), ("top_p", 0.5), ("min_p", 0.3)])
def test_sampling_filters_restrict_the_support(stub, pb, kind, value):
    """Every token sampled under top-k, top-p or min-p lies in the set the filter allows, computed
    from the same position's log-probabilities; the filter must matter (much probability outside
    the set) and the draws must still be random within it (not always the most likely)."""
    pb2, _ = pb
    checked = off_top1 = 0
    outside_mass = 0.0
    for seed in range(16):
        req = gen_request(pb2, ids=[2, 40 + seed, 41, 42], max_tokens=16, temperature=1.0,
                          seed=seed, top_logprobs=20)
        setattr(req.sampling, kind, value)
        for r in stub.Generate(req, timeout=60):
            if r.WhichOneof("output") != "chunk":
                continue
            for lp in r.chunk.logprobs:
                allowed = allowed_ids(lp.top, kind, value)
                if allowed is None:
                    continue
                checked += 1
                assert lp.chosen.token_id in allowed, (kind, value, lp.chosen.token_id, allowed)
                off_top1 += lp.chosen.token_id != lp.top[0].token_id
                outside_mass += 1.0 - sum(math.exp(t.logprob) for t in lp.top
                                          if t.token_id in allowed)
    assert checked >= 100, f"only {checked} positions could be checked"
    # Without the filter, this much probability would have drawn tokens outside the set.
    assert outside_mass / checked > 0.2, outside_mass / checked
    assert off_top1 >= checked // 10, (off_top1, checked)


@pytest.mark.parametrize("char", ["é", "あ", "😀"])
def test_characters_split_across_tokens_stream_whole(server, stub, pb, char):  # TXT-2
    """A character whose bytes come as separate byte-fallback tokens streams intact: every chunk
    is valid UTF-8 and the chunks join to the server's decode of all the ids at once
    (/detokenize, the tokenizer's own decode). Comparing stream with unary cannot see a
    detokenizer that breaks characters: both go through it."""
    pb2, _ = pb
    sp = spm.SentencePieceProcessor(model_file=str(FIXTURE / "tokenizer.model"))
    byte_ids = {sp.piece_to_id(f"<0x{b:02X}>") for b in char.encode()}
    assert all(sp.is_byte(i) for i in byte_ids), byte_ids
    # logit_bias keeps sampling to the character's bytes; temperature 4 evens out the model's
    # preference among them (the bias, divided by 4, still keeps every other token out). The
    # output then holds such characters many times, among stray bytes that each become U+FFFD.
    req = gen_request(pb2, ids=[2, 17, 33, 5], max_tokens=400, temperature=4.0, seed=11)
    for i in byte_ids:
        req.sampling.logit_bias[i] = 100.0
    ids, text = [], b""
    for r in stub.Generate(req, timeout=60):
        if r.WhichOneof("output") == "chunk":
            r.chunk.text.decode("utf-8")  # raises on a chunk that is not valid UTF-8 alone
            ids.extend(r.chunk.token_ids)
            text += r.chunk.text
    assert len(ids) == 400 and set(ids) <= byte_ids, sorted(set(ids) - byte_ids)
    r = server.session.post(server.url + "/detokenize", json={"tokens": ids}, timeout=30)
    assert r.status_code == 200, r.text
    whole = r.json()["prompt"]
    assert text.decode("utf-8") == whole
    # Characters of several of those bytes (é; あ and neighbours such as ぁ; 😀 and neighbours
    # such as 🟀), each spread over as many tokens as it has bytes.
    split = [c for c in whole if c != "\ufffd" and len(c.encode()) > 1]
    print(f"{char!r}: {len(split)} characters of {len(char.encode())} bytes in {len(ids)} tokens")
    assert len(split) >= 3, f"the sample holds {len(split)} characters of {len(char.encode())} bytes"
