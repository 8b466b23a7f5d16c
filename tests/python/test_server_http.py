"""griffin-server over HTTP: the official openai client, raw requests and curl (SSE), validation
(VAL-*, TXT-*, LEN-1), stop strings (TXT-5), streaming vs unary (TXT-4), logprobs (NUM-5),
metrics (OPS-3) and R-SHARED-1 after each negative test."""

import json
import math
import subprocess

import openai
import pytest
import requests


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(server, path, body, **kw):
    return requests.post(server.url + path, json=body, timeout=60, **kw)


def sse_events(response):
    """Parses an SSE body; every data line must be valid UTF-8 on its own (TXT-2)."""
    events = []
    for raw in response.iter_lines():
        if not raw:
            continue
        line = raw.decode("utf-8")  # strict: raises on invalid UTF-8
        assert line.startswith("data: "), line
        events.append(line[len("data: "):])
    return events


# ---- OpenAI client: completions and chat, streaming and not

def test_openai_completions(server):
    c = client(server)
    r = c.completions.create(model=server.model, prompt="Once upon a time", max_tokens=16,
                             temperature=0, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    # The client's parsed text is the server's (the same greedy request over raw HTTP), and it is
    # the text of the 16 generated tokens that the logprobs list.
    raw = post(server, "/v1/completions", {"model": server.model, "prompt": "Once upon a time",
                                           "max_tokens": 16, "temperature": 0, "ignore_eos": True,
                                           "logprobs": 0}).json()["choices"][0]
    assert r.choices[0].text == raw["text"] and raw["text"]
    if "\ufffd" not in "".join(raw["logprobs"]["tokens"]):
        assert "".join(raw["logprobs"]["tokens"]) == raw["text"]
    assert r.usage.completion_tokens == 16
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16


def test_openai_completions_stream_equals_unary(server):  # TXT-4
    c = client(server)
    kw = dict(model=server.model, prompt="The licence", max_tokens=40, temperature=0.9, seed=11)
    unary = c.completions.create(**kw)
    chunks = list(c.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert text == unary.choices[0].text
    assert finish == [unary.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_openai_chat(server):
    c = client(server)
    r = c.chat.completions.create(model=server.model, max_tokens=12, temperature=0,
                                  messages=[{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi there"}])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12
    # The content is the text of the generated tokens (logprobs list them), no more, no less.
    raw = post(server, "/v1/chat/completions", {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        "max_tokens": 12, "temperature": 0, "logprobs": True}).json()["choices"][0]
    assert r.choices[0].message.content == raw["message"]["content"]
    tokens = [e["token"] for e in raw["logprobs"]["content"]]
    assert len(tokens) == r.usage.completion_tokens - (r.choices[0].finish_reason == "stop")
    if "\ufffd" not in "".join(tokens):
        assert "".join(tokens) == r.choices[0].message.content


def test_openai_chat_stream(server):
    c = client(server)
    kw = dict(model=server.model, max_tokens=20, temperature=0,
              messages=[{"role": "user", "content": "Tell me a story"}])
    unary = c.chat.completions.create(**kw)
    stream = c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == unary.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_models_tokenize_detokenize(server):
    models = requests.get(server.url + "/v1/models", timeout=5).json()
    assert models["object"] == "list" and models["data"][0]["id"] == server.model
    tok = post(server, "/tokenize", {"prompt": "hello world"}).json()
    assert tok["tokens"][0] == 2 and tok["count"] == len(tok["tokens"])
    detok = post(server, "/detokenize", {"tokens": tok["tokens"][1:]}).json()
    assert detok["prompt"] == "hello world"
    for bad in ([-1], [512], [2**31 - 1], [2**32 - 1], ["x"]):  # VAL-5
        r = post(server, "/detokenize", {"tokens": bad})
        assert r.status_code == 400, bad
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_n_choices_and_limit(server):  # VAL-4 for n
    r = post(server, "/v1/completions", {"prompt": "abc", "n": 8, "max_tokens": 5, "seed": 3,
                                         "ignore_eos": True})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert sorted(c["index"] for c in choices) == list(range(8))
    assert r.json()["usage"]["completion_tokens"] == 40
    r = post(server, "/v1/completions", {"prompt": "abc", "n": 9, "max_tokens": 5})
    assert r.status_code == 400 and "n " in r.json()["error"]["message"]
    server.assert_healthy()


def test_logprobs(server):  # NUM-5
    r = post(server, "/v1/completions", {"prompt": "abc", "max_tokens": 6, "logprobs": 3,
                                         "temperature": 0, "ignore_eos": True}).json()
    lp = r["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == 6
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert value <= 0
        assert 1 <= len(top) <= 3   # distinct token strings; byte pieces may share "\ufffd"
        assert all(v <= 0 for v in top.values())
        # Greedy: the chosen token is the most likely one, listed with the same log-probability.
        assert token in top and top[token] == pytest.approx(value, abs=1e-6), (token, value, top)
        assert value == pytest.approx(max(top.values()), abs=1e-6)
    chat = post(server, "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "logprobs": True,
                 "top_logprobs": 5, "temperature": 0}).json()
    for entry in chat["choices"][0]["logprobs"]["content"]:
        assert entry["logprob"] <= 0 and 0 <= math.exp(entry["logprob"]) <= 1
        assert len(entry["top_logprobs"]) == 5
        # Greedy: the chosen token heads its top list, with the same log-probability.
        assert entry["top_logprobs"][0]["token"] == entry["token"], entry
        assert entry["top_logprobs"][0]["logprob"] == pytest.approx(entry["logprob"], abs=1e-6)
    r = post(server, "/v1/completions", {"prompt": "abc", "logprobs": 21})
    assert r.status_code == 400


def test_curl_sse(server):
    out = subprocess.run(
        ["curl", "-sN", "--max-time", "60", server.url + "/v1/completions", "-H",
         "Content-Type: application/json", "-d",
         json.dumps({"model": server.model, "prompt": "Once", "max_tokens": 10, "stream": True,
                     "stream_options": {"include_usage": True}, "ignore_eos": True})],
        capture_output=True, check=True, timeout=90)
    lines = [l for l in out.stdout.decode("utf-8").split("\n\n") if l.strip()]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(l[len("data: "):]) for l in lines[:-1]]
    assert events[-1]["usage"]["completion_tokens"] == 10
    assert events[-2]["choices"][0]["finish_reason"] == "length"


# ---- Validation: every bad field is a 400 naming it, and the server stays healthy (R-SHARED-1)

BAD_FIELDS = [
    ("temperature", -0.5), ("temperature", "hot"), ("top_p", 0), ("top_p", 1.5),
    ("top_k", 0), ("top_k", -2), ("min_p", 1.5), ("min_p", -0.1),
    ("repetition_penalty", 0), ("presence_penalty", 2.5), ("frequency_penalty", -3),
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 2**63 - 1), ("max_tokens", 2**64 - 1),
    ("max_tokens", 100001), ("n", 0), ("min_tokens", -1), ("stop", ["x"] * 17),
    ("stop", [""]), ("stop", ["a" * 257]), ("stop", 5), ("stop_token_ids", [-1]),
    ("stop_token_ids", [512]), ("stop_token_ids", [2**32 - 1]), ("logit_bias", {"5": 101}),
    ("logit_bias", {"512": 1}), ("logit_bias", {"-1": 1}), ("logit_bias", {"x": 1}),
    ("logit_bias", {"5": "a"}), ("logit_bias", [5]), ("logit_bias", {str(i): 1 for i in range(301)}),
    ("prompt_logprobs", 21), ("prompt_logprobs", -1), ("echo", "yes"),
    ("best_of", 3), ("model", "../../etc/passwd"), ("model", ""),
    ("model", "/abs/path"), ("response_format", {"type": "json_schema"}), ("seed", "x"),
    ("stream", "yes"),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_bad_field_is_400_naming_it(server, field, value):  # VAL-2, VAL-4, VAL-5, VAL-6, VAL-7, VAL-9
    body = {"model": server.model, "prompt": "hello", "max_tokens": 4, field: value}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 400, (field, value, r.text)
    message = r.json()["error"]["message"]
    assert message.startswith(field), message
    assert "passwd" not in message   # TXT-7: no user bytes echoed


def test_non_finite_numbers_are_400(server):  # VAL-2: NaN / inf in JSON (Python's json writes them)
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = '{"prompt": "hi", "temperature": %s}' % token
        r = requests.post(server.url + "/v1/completions", data=raw, timeout=30,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (token, r.text)
    server.assert_healthy()


def test_bad_prompts(server):  # VAL-1, VAL-5, TXT-1, LEN-1
    cases = [{"prompt": ""}, {"prompt": "   \n\t "}, {"prompt": []}, {"prompt": [2, 1, 0]},
             {"prompt": [2, -1]}, {"prompt": [2, 512]}, {"prompt": [2, 513]},
             {"prompt": [2**31 - 1]}, {"prompt": [2**32 - 1]}, {"prompt": 17}, {},
             {"prompt": [7] * 65}]
    for body in cases:
        r = post(server, "/v1/completions", {**body, "max_tokens": 2})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["message"].startswith("prompt"), r.text
    for n in (63, 64):  # at and below the limit
        r = post(server, "/v1/completions", {"prompt": [7] * n, "max_tokens": 2})
        assert r.status_code == 200, r.text
    # Invalid UTF-8 in the body: a clean 400 (TXT-1).
    r = requests.post(server.url + "/v1/completions", data=b'{"prompt": "ab\xff\xfe"}', timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = requests.post(server.url + "/v1/completions", data=b"{not json", timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    # Without Content-Type: application/json the JSON routes answer 415 (SEC-8).
    r = requests.post(server.url + "/v1/completions", data=b"{not json", timeout=30)
    assert r.status_code == 415
    # Chat: unknown role, no text.
    for msgs in ([{"role": "robot", "content": "x"}], [{"role": "user", "content": "  "}], []):
        r = post(server, "/v1/chat/completions", {"messages": msgs})
        assert r.status_code == 400, msgs
    assert requests.get(server.url + "/nope", timeout=5).status_code == 404
    server.assert_healthy()


def test_special_characters_round_trip(server):  # TXT-3
    text = "a\x00b \U0001F600 c\r\nd\te"
    # Stop strings made of special characters are accepted and honoured: the output is the greedy
    # output cut before the first of them (found in the greedy text itself, so one must match).
    body = {"prompt": text, "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    greedy = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    special = sorted({ch for ch in greedy if not ch.isalnum()} | {"\U0001F600", "\x00"})
    stops = [s for s in special if s in greedy][:2] + ["\U0001F600", "\x00"]
    assert stops[0] in greedy, greedy
    r = post(server, "/v1/completions", {**body, "stop": stops})
    assert r.status_code == 200, r.text
    cut = min(greedy.index(s) for s in stops if s in greedy)
    assert r.json()["choices"][0]["text"] == greedy[:cut], (greedy, stops)
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    tok = post(server, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()["tokens"]
    assert post(server, "/detokenize", {"tokens": tok}).json()["prompt"] == text


# ---- Stop strings (TXT-5)

def greedy_with_tokens(server, prompt, n=60):
    r = post(server, "/v1/completions", {"prompt": prompt, "max_tokens": n, "temperature": 0,
                                         "logprobs": 0, "ignore_eos": True}).json()
    return r["choices"][0]["text"], r["choices"][0]["logprobs"]["tokens"]


def test_stop_string_spanning_tokens(server):
    found = None
    for prompt in ("Once upon a time", "The licence", "hello world", "abc", "zebra"):
        text, tokens = greedy_with_tokens(server, prompt)
        for k in range(len(tokens) - 1):
            a, b = tokens[k], tokens[k + 1]
            if a and b and a.isascii() and b.isascii() and a[-1].isalnum() and b[0].isalnum():
                found = (prompt, text, a[-1] + b[0])
                break
        if found:
            break
    assert found, "no ASCII token boundary in the greedy outputs"
    prompt, text, stop = found
    expected = text[:text.index(stop)]
    body = {"prompt": prompt, "max_tokens": 60, "temperature": 0, "ignore_eos": True, "stop": [stop]}
    r = post(server, "/v1/completions", body).json()
    assert r["choices"][0]["text"] == expected
    assert r["choices"][0]["finish_reason"] == "stop"
    streamed = requests.post(server.url + "/v1/completions", json={**body, "stream": True},
                             stream=True, timeout=60)
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # A stop string that is a prefix of the output: nothing is emitted.
    if len(text) >= 2:
        r = post(server, "/v1/completions", {**body, "stop": [text[:2]]}).json()
        assert r["choices"][0]["text"] == "" and r["choices"][0]["finish_reason"] == "stop"
    server.wait_idle()


def test_streamed_chunks_are_valid_utf8_and_match_unary(server):  # TXT-2, TXT-4, FUZ-3 (small)
    for seed in range(8):
        body = {"prompt": [2, 10 + seed, 300 + seed], "max_tokens": 48, "temperature": 1.0,
                "seed": seed, "ignore_eos": True}
        unary = post(server, "/v1/completions", body).json()["choices"][0]
        r = requests.post(server.url + "/v1/completions", json={**body, "stream": True},
                          stream=True, timeout=60)
        events = sse_events(r)
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        assert text == unary["text"]
        text.encode("utf-8")


# ---- Metrics (OPS-3)

def test_metrics_names_and_idle(server):
    server.wait_idle()
    m = server.metrics()
    names = {k.split("{")[0] for k in m}
    for name in ["griffin_time_to_first_token_seconds_bucket", "griffin_inter_token_latency_seconds_bucket",
                 "griffin_e2e_request_latency_seconds_bucket", "griffin_request_queue_time_seconds_bucket",
                 "griffin_num_requests_running", "griffin_num_requests_waiting",
                 "griffin_prompt_tokens_total", "griffin_generation_tokens_total",
                 "griffin_request_success_total", "griffin_request_rejected_total",
                 "griffin_state_slots_used", "griffin_state_slots_capacity",
                 "griffin_state_bytes_per_sequence"]:
        assert name in names, name
    # OpenMetrics parsers read a name ending in _created as a counter's creation time and drop it.
    assert not [n for n in names if n.endswith("_created")], names
    assert server.gauge("griffin_state_slots_capacity") == 8
    assert server.gauge("griffin_state_bytes_per_sequence") > 0
    assert any(k.startswith("griffin_request_success_total") and 'finished_reason="length"' in k
               and v > 0 for k, v in m.items())
    assert any(k.startswith("griffin_request_rejected_total") and 'reason="invalid"' in k
               for k in m)


def test_body_too_large_is_413(server):  # LEN-4 over HTTP
    r = requests.post(server.url + "/v1/completions", data=b"x" * (5 << 20), timeout=60,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    server.assert_healthy()


def test_streaming_n_choices(server):
    r = requests.post(server.url + "/v1/chat/completions", stream=True, timeout=60,
                      json={"messages": [{"role": "user", "content": "Hi"}], "n": 3, "max_tokens": 6,
                            "seed": 1, "stream": True, "ignore_eos": True,
                            "stream_options": {"include_usage": True}})
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    finished = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"]
                for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]}
    assert finished == {0: "length", 1: "length", 2: "length"}
    assert chunks[-1]["usage"]["completion_tokens"] == 18


def test_wrongly_typed_nested_fields_are_400(server):  # R-SHARED-1 on odd shapes
    bodies = [
        {"prompt": "hi", "response_format": {"type": 5}},
        {"messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {"messages": [{"role": 5, "content": "x"}]},
        {"messages": "x"},
        {"messages": [5]},
        {"prompt": [[1, 2], [3]]},
        {"prompt": [2, "x"]},
        {"prompt": "hi", "stream_options": 5},
        {"prompt": "hi", "stop": [5]},
    ]
    for body in bodies:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        r = post(server, path, body)
        assert r.status_code == 400, (body, r.status_code, r.text)
    server.assert_healthy()


def test_prompt_lengths_around_the_limit(server):  # LEN-1, LEN-2: one limit, checked before enqueue
    import random
    rng = random.Random(7)
    for _ in range(40):
        n = rng.randint(60, 68)
        ids = [2] + [rng.randint(3, 511) for _ in range(n - 1)]
        r = post(server, "/v1/completions", {"prompt": ids, "max_tokens": 2, "ignore_eos": True})
        if n <= 64:
            assert r.status_code == 200, (n, r.text)
            assert r.json()["usage"]["prompt_tokens"] == n
        else:
            assert r.status_code == 400 and "64" in r.json()["error"]["message"], (n, r.text)
    server.assert_healthy()


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rejected_fan_out_allocates_nothing(server):  # VAL-4: max+1 is rejected before allocation
    over_limit = [
        {"prompt": "x", "n": 9, "max_tokens": 4},                        # --max_n is 8
        {"prompt": "x", "logprobs": 21, "max_tokens": 4},                # --max_top_logprobs is 20
        {"prompt": "x", "stop": ["s"] * 1000, "max_tokens": 4},           # far past the stop limit
        {"prompt": "x", "max_tokens": 100001},                           # --max_output_tokens 100000
        {"prompt": "x", "logit_bias": {str(i): 1 for i in range(301)}},  # --max_logit_bias 300
        {"prompt": [[2, 5]] * 65, "max_tokens": 1},                      # --max_prompts_per_request
        {"prompt": "x", "prompt_logprobs": 21},                          # --max_top_logprobs
    ]
    def burst():
        for _ in range(50):
            for body in over_limit:
                r = requests.post(server.url + "/v1/completions", json={"model": server.model, **body}, timeout=30)
                assert r.status_code == 400, r.text
    for _ in range(3):
        burst()  # malloc arenas of the HTTP worker threads and the connection pools reach steady state
    before = rss_kib(server.proc.pid)
    for _ in range(8):
        burst()
    growth = rss_kib(server.proc.pid) - before
    # 1600 rejected requests: anything kept per request (10 KiB or more) would add 16 MiB; the
    # allocator's own noise (arenas, thread caches) stays well under half of that.
    assert growth < 8 * 1024, f"RSS grew by {growth} KiB over 1600 rejected requests"
    server.assert_healthy()


# ---- Echo, prompt log-probabilities, prompt lists, logit_bias (issue 17)

def score(server, ids):
    """Prompt log-probabilities by the server's own scoring: max_tokens 0 with echo."""
    r = post(server, "/v1/completions", {"prompt": ids, "max_tokens": 0, "echo": True,
                                         "logprobs": 2})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_echo_shapes_prompt_logprobs_as_openai(server):
    ids = [2, 17, 33, 5, 90, 41, 7]
    only = score(server, ids)
    lp = only["logprobs"]
    assert only["finish_reason"] == "length"
    assert len(lp["tokens"]) == len(ids) == len(lp["token_logprobs"]) == len(lp["text_offset"])
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v <= 0 for v in lp["token_logprobs"][1:])
    assert all(1 <= len(t) <= 2 for t in lp["top_logprobs"][1:])
    assert only["text"] == post(server, "/detokenize", {"tokens": ids}).json()["prompt"]
    # With generation: the prompt's entries, then the generated tokens'; the prompt's values are
    # the same however the request is batched or chunked (token budget 16 here).
    gen = post(server, "/v1/completions", {"prompt": ids, "max_tokens": 3, "echo": True,
                                           "logprobs": 2, "temperature": 0,
                                           "ignore_eos": True}).json()["choices"][0]
    assert gen["logprobs"]["token_logprobs"][:len(ids)] == lp["token_logprobs"]
    assert len(gen["logprobs"]["tokens"]) == len(ids) + 3
    plain = post(server, "/v1/completions", {"prompt": ids, "max_tokens": 3, "temperature": 0,
                                             "ignore_eos": True}).json()["choices"][0]
    assert gen["text"] == only["text"] + plain["text"]
    # Without logprobs, echo returns the text only; a text prompt is echoed as sent.
    r = post(server, "/v1/completions", {"prompt": "hello world", "max_tokens": 2, "echo": True,
                                         "temperature": 0, "ignore_eos": True}).json()
    assert r["choices"][0]["text"].startswith("hello world") and r["choices"][0]["logprobs"] is None
    assert post(server, "/v1/completions", {"prompt": ids, "max_tokens": 0}).status_code == 400
    server.assert_healthy()


def test_prompt_logprobs_vllm_shape_and_long_prompts_score_in_chunks(server):
    ids = [2] + [(7 * i) % 500 + 3 for i in range(60)]  # 61 tokens, 4 chunks of the 16 budget
    r = post(server, "/v1/completions", {"prompt": ids, "max_tokens": 1, "prompt_logprobs": 3,
                                         "temperature": 0}).json()["choices"][0]
    plp = r["prompt_logprobs"]
    assert len(plp) == len(ids) and plp[0] is None
    echo = score(server, ids)["logprobs"]["token_logprobs"]
    for i, position in enumerate(plp[1:], start=1):
        entry = position[str(ids[i])]
        assert entry["logprob"] == echo[i] and entry["rank"] >= 1
        ranks = sorted(v["rank"] for k, v in position.items() if k != str(ids[i]))
        assert ranks[:3] == [1, 2, 3][:len(ranks)]
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 2, "prompt_logprobs": 0}).json()
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"]
    server.assert_healthy()


def test_prompt_lists_order_usage_and_stream(server):
    prompts = [[2, 17, 33], [2, 90, 41, 7], [2, 200]]
    body = {"prompt": prompts, "n": 2, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    r = post(server, "/v1/completions", body).json()
    assert [c["index"] for c in r["choices"]] == list(range(6))
    for p, ids in enumerate(prompts):  # choice index = prompt index * n + i
        alone = post(server, "/v1/completions", {**body, "prompt": ids, "n": 1}).json()
        for i in range(2):
            assert r["choices"][p * 2 + i]["text"] == alone["choices"][0]["text"], (p, i)
    assert r["usage"]["prompt_tokens"] == 9 and r["usage"]["completion_tokens"] == 24
    texts = post(server, "/v1/completions", {**body, "prompt": ["abc", "hello world"], "n": 1}).json()
    assert len(texts["choices"]) == 2
    # Streamed: the same texts per index, and per-chunk usage with continuous_usage_stats.
    events = sse_events(requests.post(server.url + "/v1/completions", stream=True, timeout=60,
                                      json={**body, "stream": True, "stream_options": {
                                          "include_usage": True, "continuous_usage_stats": True}}))
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = {}
    for c in chunks[:-1]:
        choice = c["choices"][0]
        streamed[choice["index"]] = streamed.get(choice["index"], "") + choice["text"]
        assert c["usage"]["prompt_tokens"] == len(prompts[choice["index"] // 2])
        assert 1 <= c["usage"]["completion_tokens"] <= 4
    assert streamed == {c["index"]: c["text"] for c in r["choices"]}
    assert chunks[-1]["usage"] == r["usage"] and chunks[-1]["choices"] == []
    # Limits hold per prompt, and the list itself is bounded (--max_prompts_per_request 64).
    bad = post(server, "/v1/completions", {"prompt": [[2, 5], [2, 512]], "max_tokens": 2})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("prompt[1]")
    assert post(server, "/v1/completions", {"prompt": ["a", [2, 5]]}).status_code == 400
    many = post(server, "/v1/completions", {"prompt": [[2, 5]] * 65, "max_tokens": 1})
    assert many.status_code == 400 and "64" in many.json()["error"]["message"]
    assert post(server, "/v1/completions", {"prompt": [[2, 5]] * 64, "max_tokens": 1}).status_code == 200
    server.assert_healthy()


def test_logit_bias_forces_a_token(server):  # exact ids: test_server_grpc.py
    base = {"prompt": [2, 17, 33], "max_tokens": 5, "temperature": 0, "ignore_eos": True,
            "logprobs": 1}
    plain = post(server, "/v1/completions", base).json()["choices"][0]["logprobs"]
    forced = post(server, "/v1/completions", {**base, "logit_bias": {"300": 100}})
    assert forced.status_code == 200, forced.text
    lp = forced.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == [post(server, "/detokenize", {"tokens": [300]}).json()["prompt"]] * 5
    assert lp["tokens"] != plain["tokens"]
    # The logprobs reported are the model's own, before the bias (as vLLM reports them).
    assert all(v < -0.01 for v in lp["token_logprobs"])
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": 3, "logit_bias": {"300": 100},
                                                 "temperature": 0, "ignore_eos": True})
    assert chat.status_code == 200, chat.text
    server.assert_healthy()


def test_bos_alone_is_a_prompt(server):
    r = post(server, "/v1/completions", {"prompt": [2], "max_tokens": 3, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    for ids in ([1], [0, 0], [2, 2], [2, 1, 0]):
        assert post(server, "/v1/completions", {"prompt": ids}).status_code == 400, ids
