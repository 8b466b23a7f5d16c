"""The clients people already use, unchanged, against griffin-server and the demo model:
lm-evaluation-harness (local-completions, loglikelihood and perplexity tasks from
tests/python/lm_eval_tasks, offline) equal to griffin-cli score within 1e-4; LangChain's
OpenAI.batch(); openai's models.retrieve; grpc health naming the service (and NOT_SERVING while
draining); a server reflection v1 listing."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
import requests

from server_harness import ROOT, Server

DEMO = ROOT / "models" / "demo"
TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def demo():
    if not (DEMO / "model.safetensors").exists():
        pytest.skip("models/demo is not present")
    s = Server("--slots", 4, "--max_prompt_tokens", 512, "--token_budget", 64, model=DEMO)
    yield s
    assert s.stop() == 0, s.logs()


def cli_score(ids):
    cli = os.environ.get("GRIFFIN_CLI")
    if not cli or not Path(cli).exists():
        pytest.skip("GRIFFIN_CLI is not set to a built griffin-cli (make test sets it)")
    out = subprocess.run([cli, "score", "--model", str(DEMO), "--ids", ",".join(map(str, ids))],
                         capture_output=True, text=True, check=True, timeout=120)
    return [p.get("logprob") for p in json.loads(out.stdout)["positions"]]


def test_lm_eval_loglikelihoods_equal_griffin_cli_score(demo, tmp_path):
    pytest.importorskip("lm_eval")
    out = tmp_path / "lm_eval"
    # batch_size 4: lm-eval sends lists of token-id prompts (echo, max_tokens 1, logprobs 1).
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
           f"base_url={demo.url}/v1/completions,model={demo.model},tokenizer={DEMO},"
           "tokenizer_backend=huggingface,max_length=512",
           "--batch_size", "4", "--tasks", "griffin_mc,griffin_ppl", "--include_path", str(TASKS),
           "--log_samples", "--output_path", str(out)]
    # The task files name their data files relative to the folder they live in.
    run = subprocess.run(cmd, cwd=TASKS, env={**os.environ, **OFFLINE}, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name.split("_2")[0].removeprefix("samples_")
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(samples.get("griffin_mc", [])) == 4 and len(samples.get("griffin_ppl", [])) == 3

    # The same token ids lm-eval sent, from its own encoder (HF tokenizer of the folder, no BOS).
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    lm = LocalCompletionsAPI(base_url=f"{demo.url}/v1/completions", model=demo.model,
                             tokenizer=str(DEMO), tokenizer_backend="huggingface", max_length=512)
    checked = 0
    for s in samples["griffin_mc"]:
        args = [s["arguments"][f"gen_args_{i}"] for i in range(len(s["doc"]["choices"]))]
        for a, resp in zip(args, s["resps"]):
            context, continuation = lm._encode_pair(a["arg_0"], a["arg_1"])
            ids = context + continuation
            logprobs = cli_score(ids)
            expected = sum(logprobs[len(context) - 1:len(ids) - 1])
            got, greedy = float(resp[0][0]), resp[0][1]
            assert abs(got - expected) <= 1e-4, (a, got, expected)
            assert greedy in ("True", "False", True, False)
            checked += 1
    for s in samples["griffin_ppl"]:
        # One rolling window (the texts are far shorter than max_length): BOS, then the text.
        ids = [lm.prefix_token_id] + lm.tok_encode(s["doc"]["text"])
        assert len(ids) < 511
        expected = sum(lp for lp in cli_score(ids) if lp is not None)
        got = float(s["resps"][0][0])
        assert abs(got - expected) <= 1e-4, (s["doc"]["text"], got, expected)
        checked += 1
    assert checked == 15
    demo.assert_healthy()


def test_langchain_batch_equals_one_by_one(demo):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.OpenAI(base_url=demo.url + "/v1", api_key="unused", model=demo.model,
                                  temperature=0, max_tokens=8, max_retries=0, timeout=60)
    prompts = ["And the LORD said unto", "In the beginning", "Blessed are the", "A daemon is"]
    batch = llm.batch(prompts)  # one /v1/completions request holding the four prompts
    assert len(batch) == 4 and all(isinstance(t, str) and t for t in batch)
    for prompt, text in zip(prompts, batch):
        r = requests.post(demo.url + "/v1/completions", timeout=60,
                          json={"model": demo.model, "prompt": prompt, "max_tokens": 8,
                                "temperature": 0}).json()
        assert r["choices"][0]["text"] == text, prompt


def test_openai_models_retrieve(demo):
    import openai
    client = openai.OpenAI(base_url=demo.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    listed = client.models.list().data[0]
    model = client.models.retrieve(demo.model)
    assert model.id == demo.model == listed.id
    assert model.created == listed.created > 1_700_000_000  # the load time, not 0
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    card = requests.get(f"{demo.url}/v1/models/{demo.model}", timeout=10).json()
    tok = requests.post(demo.url + "/tokenize", json={"prompt": "x"}, timeout=10).json()
    assert card["max_model_len"] == tok["max_model_len"] == 512  # one figure everywhere


def test_autotokenizer_from_the_folder_gives_the_servers_ids(demo):
    transformers = pytest.importorskip("transformers")
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    tok = transformers.AutoTokenizer.from_pretrained(str(DEMO))
    texts = ["And the LORD said unto Moses", "  two  spaces\tand a tab\n", "naïve 😀 日本",
             "<bos> in text stays text", "1234.5678", "x"]
    for text in texts:
        server = requests.post(demo.url + "/tokenize", json={"prompt": text}, timeout=10).json()
        assert tok(text).input_ids == server["tokens"], text           # BOS added, as for text
        bare = requests.post(demo.url + "/tokenize", timeout=10,
                             json={"prompt": text, "add_special_tokens": False}).json()
        assert tok(text, add_special_tokens=False).input_ids == bare["tokens"], text


# ---- gRPC: health by service name, reflection v1

def test_grpc_health_names_the_service(demo):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(demo.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "griffin.v1.Generation"):
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_health_not_serving_while_draining():
    """A Watch on each name, open before SIGTERM, sees NOT_SERVING as the drain starts."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    s = Server("--slots", 1, drain_timeout=10)
    seen = {"": [], "griffin.v1.Generation": []}
    streams = []
    try:
        ch = grpc.insecure_channel(s.grpc_target)
        stub = health_pb2_grpc.HealthStub(ch)

        def watch(service):
            call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
            streams.append(call)
            try:
                for r in call:
                    seen[service].append(r.status)
                    if r.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        return
            except grpc.RpcError:
                pass

        threads = [threading.Thread(target=watch, args=(name,)) for name in seen]
        for t in threads:
            t.start()
        # Both watches saw SERVING before the signal (bounded wait, no timing assertion).
        for _ in range(1000):
            if all(seen.values()):
                break
            threading.Event().wait(0.01)
        assert all(v[:1] == [health_pb2.HealthCheckResponse.SERVING] for v in seen.values()), seen
        s.proc.send_signal(15)
        for t in threads:
            t.join(30)
        for name, statuses in seen.items():
            assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, (name, statuses)
        ch.close()
    finally:
        assert s.stop() == 0, s.logs()


def test_reflection_v1_lists_and_describes(demo):
    """grpc.reflection.v1 on the wire, with the official messages (v1alpha's, which v1 shares
    field for field) over a raw stream call: a v1-only client gets answers, not UNIMPLEMENTED."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as rpb
    with grpc.insecure_channel(demo.grpc_target) as ch:
        call = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                                response_deserializer=rpb.ServerReflectionResponse.FromString)
        asks = [rpb.ServerReflectionRequest(list_services=""),
                rpb.ServerReflectionRequest(file_containing_symbol="griffin.v1.Generation"),
                rpb.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
        listed, described, missing = list(call(iter(asks), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert {"griffin.v1.Generation", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    generation = [f for f in files if f.name == "griffin/v1/generation.proto"]
    assert generation and generation[0].package == "griffin.v1"
    assert [s.name for s in generation[0].service] == ["Generation"]
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert described.original_request.file_containing_symbol == "griffin.v1.Generation"
