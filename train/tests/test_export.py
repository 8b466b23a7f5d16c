"""Export round trip: the Hugging Face layout written by griffin_train.export loads in griffin-cli
(float32 CPU engine) and in transformers, and reproduces the PyTorch model's log-probabilities."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from griffin_train import export, train as train_mod
from griffin_train.model import positions_from_tokens

from helpers import tiny, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[2]
IDS = [2, 17, 33, 5, 90, 41, 7, 7, 12, 60, 3, 64, 2, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 11]


def cli_logprobs(cli, model_dir, ids, *extra):
  out = subprocess.run([cli, "score", "--model", str(model_dir), "--ids", ",".join(map(str, ids)),
                        *extra], capture_output=True, text=True, check=True, timeout=120)
  pos = json.loads(out.stdout)["positions"]
  return [p["logprob"] for p in pos[:len(ids) - 1]]


def torch_logprobs(model, ids):
  t = torch.tensor([ids])
  with torch.no_grad():
    lp = torch.log_softmax(model.double()(t, torch.arange(len(ids))[None]), -1)[0]
  model.float()
  return [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]


CASES = {
    "griffin": dict(arch="griffin"),
    "hawk_lru_ne_width": dict(arch="hawk", lru_width=48, num_heads=4),
    "mqa": dict(arch="mqa"),
    "griffin_gqa_attn_heavy": dict(arch="griffin", num_heads=4, num_kv_heads=2, num_layers=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_griffin_cli_reproduces_pytorch_float32(case, tmp_path, griffin_cli):
  kw = dict(CASES[case])
  m = tiny(**kw)
  export.export_model(m, tmp_path, dtype="float32")
  cfg = json.loads((tmp_path / "config.json").read_text())
  assert cfg["block_types"] == cfg["_block_types"]
  assert (tmp_path / "generation_config.json").exists()
  ids = IDS  # no BOS in the middle: griffin-cli positions run 0..T-1 (one document)
  ref = torch_logprobs(m, ids)
  for extra in ((), ("--decode",)):
    got = cli_logprobs(griffin_cli, tmp_path, ids, *extra)
    diff = max(abs(a - b) for a, b in zip(ref, got))
    assert diff <= 1e-4, (case, extra, diff)


def test_bf16_export_matches_widened_weights(tmp_path, griffin_cli):
  m = tiny("griffin")
  export.export_model(m, tmp_path, dtype="bfloat16")
  back = export.load_hf_dir(str(tmp_path))          # bf16 weights widened to float32
  ref = torch_logprobs(back, IDS)
  got = cli_logprobs(griffin_cli, tmp_path, IDS)
  assert max(abs(a - b) for a, b in zip(ref, got)) <= 1e-4


def test_export_cli_from_training_checkpoint(tmp_path, griffin_cli):
  data = write_tiny_corpus(str(tmp_path / "data"))
  out = tmp_path / "run"
  train_mod.main(["--data", data, "--out", str(out), "--arch", "griffin", "--width", "32",
                  "--layers", "3", "--heads", "2", "--window", "8", "--seq_len", "16",
                  "--batch_size", "2", "--steps", "3", "--eval_every", "0", "--eval_batches", "1",
                  "--no_progress", "--threads", "1"])
  export.main(["--ckpt", str(out / "ckpt.pt"), "--out", str(tmp_path / "hf")])
  model, _ = export.load_checkpoint(str(out / "ckpt.pt"))
  ids = [2] + [5 + i % 50 for i in range(20)]
  ref = torch_logprobs(model, ids)
  got = cli_logprobs(griffin_cli, tmp_path / "hf", ids)
  assert max(abs(a - b) for a, b in zip(ref, got)) <= 1e-4


def test_transformers_matches_inside_window(tmp_path):
  import transformers  # deploy/requirements-test.txt
  transformers.logging.set_verbosity_error()
  m = tiny("griffin", window=10)
  export.export_model(m, tmp_path, dtype="float32")
  try:
    hf = transformers.RecurrentGemmaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  except TypeError:  # transformers < 4.56 spells it torch_dtype
    hf = transformers.RecurrentGemmaForCausalLM.from_pretrained(str(tmp_path),
                                                                torch_dtype=torch.float32)
  hf.eval()
  ids = IDS[:10]   # HF attends to window-1 earlier tokens: compare where both see everything
  t = torch.tensor([ids])
  with torch.no_grad():
    ours = torch.log_softmax(m(t, torch.arange(len(ids))[None]).double(), -1)
    theirs = torch.log_softmax(hf(input_ids=t, position_ids=torch.arange(len(ids))[None],
                                  use_cache=False).logits.double(), -1)
  assert (ours - theirs).abs().max().item() < 1e-4


DEMO = ROOT / "models" / "demo"


def test_demo_model_loads_and_matches(griffin_cli):
  assert (DEMO / "model.safetensors").exists(), "models/demo (committed) is missing"
  m = export.load_hf_dir(str(DEMO))
  ids = [2, 1596, 278, 4000, 100, 7, 8000, 42, 900, 31]
  ids = [i % m.config.vocab_size for i in ids]
  ref = torch_logprobs(m, ids)
  got = cli_logprobs(griffin_cli, DEMO, ids)
  assert max(abs(a - b) for a, b in zip(ref, got)) <= 1e-4


def test_demo_model_in_transformers():
  import transformers  # deploy/requirements-test.txt
  transformers.logging.set_verbosity_error()
  assert (DEMO / "model.safetensors").exists(), "models/demo (committed) is missing"
  m = export.load_hf_dir(str(DEMO))
  try:
    hf = transformers.RecurrentGemmaForCausalLM.from_pretrained(str(DEMO), dtype=torch.float32)
  except TypeError:
    hf = transformers.RecurrentGemmaForCausalLM.from_pretrained(str(DEMO),
                                                                torch_dtype=torch.float32)
  hf.eval()
  ids = [2] + [(37 * i + 11) % 8000 + 4 for i in range(40)]   # 41 < window
  t = torch.tensor([ids])
  with torch.no_grad():
    ours = torch.log_softmax(m(t, torch.arange(len(ids))[None]).double(), -1)
    theirs = torch.log_softmax(hf(input_ids=t, position_ids=torch.arange(len(ids))[None],
                                  use_cache=False).logits.double(), -1)
  assert (ours - theirs).abs().max().item() < 1e-4


def test_export_writes_a_tokenizer_autotokenizer_loads_offline(tmp_path, monkeypatch):
  """tokenizer.json + tokenizer_config.json next to tokenizer.model: AutoTokenizer gives
  SentencePiece's ids, with BOS first by default (as griffin-server feeds a text prompt)."""
  transformers = pytest.importorskip("transformers")
  import sentencepiece as spm
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  m = tiny("griffin")
  spm_path = ROOT / "tests" / "data" / "griffin" / "tokenizer.model"
  export.export_model(m, tmp_path, tokenizer=str(spm_path), dtype="float32")
  assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  sp = spm.SentencePieceProcessor(model_file=str(spm_path))
  for text in ["Once upon a time", "  two  spaces\tand a tab\n", "naïve 😀", "<bos> stays text"]:
    assert tok(text).input_ids == [2] + sp.encode(text), text
    assert tok(text, add_special_tokens=False).input_ids == sp.encode(text), text
