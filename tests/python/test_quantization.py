"""--quantization fp8 (issue 14), the parts that run without a GPU: the CPU backend's emulation
through griffin-server and griffin-cli, the weights' size in /v1/models and `griffin-cli info`,
and the clear refusal of an unknown value. The CUDA backend's FP8 path is tested on the GPU
(engine/cuda_backend_test.cc, *Fp8*)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from server_harness import FIXTURE, ROOT, Server, server_binary

DEMO = ROOT / "models" / "demo"
TEXT = (ROOT / "tests" / "data" / "demo_parity" / "text.txt").read_text()[:400]


def cli():
    path = os.environ.get("GRIFFIN_CLI")
    if not path or not Path(path).exists():
        pytest.fail("GRIFFIN_CLI is not set to a built griffin-cli (make test sets it)", pytrace=False)
    return path


def cli_json(*args):
    out = subprocess.run([cli(), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def mean_logprob(quantization, *flags):
    scored = cli_json("score", "--model", str(DEMO), "--text", TEXT, "--quantization", quantization,
                      *flags)
    lps = [p["logprob"] for p in scored["positions"] if p.get("logprob") is not None]
    assert len(lps) > 50
    return sum(lps) / len(lps)


def test_cli_scores_with_fp8_weights_close_to_but_not_the_same_as_bf16():
    plain = mean_logprob("none")
    bf16 = mean_logprob("none", "--numerics", "bf16")
    w8a8 = mean_logprob("fp8")
    w8a16 = mean_logprob("fp8", "--fp8_activations=false")
    assert len({plain, bf16, w8a8, w8a16}) == 4  # four different sets of numbers
    for got in (bf16, w8a8, w8a16):  # the CPU emulation's measured +0.2%, with margin
        assert abs(got - plain) < 0.01 * abs(plain)


@pytest.mark.parametrize("flags,message", [
    (["--numerics", "fp16"], "--numerics must be float32 or bf16"),
    (["--quantization", "fp8", "--numerics", "bf16"], "--numerics applies without --quantization"),
])
def test_cli_refuses_numerics_it_cannot_emulate(flags, message):
    out = subprocess.run([cli(), "score", "--model", str(DEMO), "--ids", "2,3", *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


def test_info_reports_the_weight_bytes_of_both_formats():
    info = cli_json("info", "--model", str(DEMO), "--json")
    assert 0 < info["weight_bytes_fp8"] < info["weight_bytes_bf16"]


def test_server_serves_fp8_and_reports_it():
    info = cli_json("info", "--model", str(DEMO), "--json")
    fp8 = Server("--backend", "cpu", "--slots", 1, "--quantization", "fp8", model=DEMO)
    plain = None
    try:
        plain = Server("--backend", "cpu", "--slots", 1, model=DEMO)
        cards = {}
        for name, s in (("fp8", fp8), ("none", plain)):
            card = s.session.get(s.url + "/v1/models", timeout=10).json()["data"][0]
            cards[name] = card
        assert cards["fp8"]["quantization"] == "fp8"
        assert cards["fp8"]["weight_bytes"] == info["weight_bytes_fp8"]
        assert cards["none"]["quantization"] == "none"
        assert cards["none"]["weight_bytes"] == info["weight_bytes_bf16"]
        outputs = []
        for s in (fp8, plain):
            r = s.session.post(s.url + "/v1/completions", timeout=120, json={
                "model": s.model, "prompt": TEXT[:200], "max_tokens": 8, "temperature": 0,
                "logprobs": 0})
            assert r.status_code == 200, r.text
            outputs.append(r.json()["choices"][0]["logprobs"]["token_logprobs"])
        assert outputs[0] != outputs[1]  # the FP8 server computes with other weights
        assert "weights fp8" in fp8.logs()
    finally:
        rcs = (fp8.stop(), plain.stop() if plain is not None else 0)
        assert rcs == (0, 0)


def test_unsupported_quantization_fails_at_start_up():
    p = subprocess.run([server_binary(), "--model", str(FIXTURE), "--backend", "cpu",
                        "--http_port", "0", "--grpc_port", "0", "--quantization", "int4"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "quantization must be none or fp8" in p.stdout + p.stderr
