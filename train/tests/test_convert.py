"""griffin_train.convert on checkpoints in the DeepMind reference's own formats
(tests/data/reference_checkpoints: a PyTorch state dict saved from recurrentgemma.torch.Griffin
and an Orbax checkpoint of recurrentgemma.jax.Griffin's Flax params, both made by
tests/golden/make_reference_checkpoints.py from the golden fixtures' weights): the converted folder
scores in griffin-cli within the golden tolerance of the reference's float32 log-probabilities."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from griffin_train import convert

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
REFERENCE = DATA / "reference_checkpoints"
GOLDEN_TOL = 1e-4  # the CPU engine against the float32 reference (SPEC.md section 8.4)
FIXTURES = {"griffin": 8, "hawk": 8}  # attention_window_size of each fixture


def golden_max_error(cli, model_dir, fixture):
  """Largest |griffin-cli logprob - reference logprob| over the fixture's golden sequences, for
  every next token and every position's argmax."""
  golden = load_file(DATA / fixture / "golden.safetensors")
  worst = 0.0
  for key in sorted(k for k in golden if k.startswith("tokens.")):
    tokens = golden[key].tolist()
    ref = golden["logprobs." + key.split(".", 1)[1]].double()
    out = subprocess.run([cli, "score", "--model", str(model_dir), "--ids",
                          ",".join(map(str, tokens))], capture_output=True, text=True,
                         check=True, timeout=120)
    for p in json.loads(out.stdout)["positions"]:
      t = p["position"]
      worst = max(worst, abs(p["argmax_logprob"] - ref[t].max().item()))
      if "next_token" in p:
        worst = max(worst, abs(p["logprob"] - ref[t, p["next_token"]].item()))
  return worst


def run_convert(*args):
  return subprocess.run([sys.executable, "-m", "griffin_train.convert", *map(str, args)],
                        capture_output=True, text=True, timeout=300,
                        cwd=ROOT / "train", env={**os.environ, "PYTHONPATH": str(ROOT / "train")})


@pytest.mark.parametrize("fmt", ["pt", "orbax"])
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_converted_reference_checkpoint_scores_like_the_reference(fixture, fmt, tmp_path,
                                                                   griffin_cli):
  src = REFERENCE / (f"{fixture}.pt" if fmt == "pt" else f"{fixture}_orbax")
  out = tmp_path / "model"
  args = [src, "--out", out, "--attention_window_size", FIXTURES[fixture]]
  if (DATA / fixture / "tokenizer.model").exists():
    args += ["--tokenizer", DATA / fixture / "tokenizer.model"]
  r = run_convert(*args)
  assert r.returncode == 0, r.stderr
  assert "converted" in r.stdout
  # The shapes, block pattern and hyper-parameters came out as the fixture's own config.
  want = json.loads((DATA / fixture / "config.json").read_text())
  got = json.loads((out / "config.json").read_text())
  for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "lru_width", "vocab_size", "block_types",
              "_block_types", "attention_window_size", "logits_soft_cap", "conv1d_width"):
    assert got[key] == want[key], key
  assert got["torch_dtype"] == "bfloat16"
  if "--tokenizer" in args:  # clients' tokenizer files, as the export writes them
    assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
  assert load_file(out / "model.safetensors")["model.embed_tokens.weight"].dtype == torch.bfloat16
  assert golden_max_error(griffin_cli, out, fixture) <= GOLDEN_TOL


def test_float32_conversion_is_the_fixture_itself(tmp_path):
  """The fixture's model.safetensors was written from the reference state dict by make_golden.py
  (float32, bf16-exact values): converting the reference's own file at float32 gives it back."""
  convert.convert(str(REFERENCE / "griffin.pt"), str(tmp_path), dtype="float32", window=8)
  want = load_file(DATA / "griffin" / "model.safetensors")
  got = load_file(tmp_path / "model.safetensors")
  assert sorted(got) == sorted(want)
  for name, tensor in want.items():
    assert torch.equal(got[name], tensor), name


def test_sharded_output_loads_and_scores_the_same(tmp_path, griffin_cli):
  single, sharded = tmp_path / "single", tmp_path / "sharded"
  convert.convert(str(REFERENCE / "griffin.pt"), str(single), window=8)
  convert.convert(str(REFERENCE / "griffin.pt"), str(sharded), window=8,
                  max_shard_bytes=100_000)
  index = json.loads((sharded / "model.safetensors.index.json").read_text())
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and not (sharded / "model.safetensors").exists()
  assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
  ids = "2,17,33,5,90,41,7,7,12,200,3,64"
  outs = [subprocess.run([griffin_cli, "score", "--model", str(d), "--ids", ids],
                         capture_output=True, text=True, check=True).stdout
          for d in (single, sharded)]
  assert outs[0] == outs[1]


@pytest.mark.parametrize("max_shard_bytes", [10**9, 50_000])
def test_written_files_are_readable_by_other_users(max_shard_bytes, tmp_path):
  old = os.umask(0o022)
  try:
    convert.convert(str(REFERENCE / "hawk.pt"), str(tmp_path), window=8,
                    max_shard_bytes=max_shard_bytes)
  finally:
    os.umask(old)
  assert any(f.suffix == ".safetensors" for f in tmp_path.iterdir())
  for f in tmp_path.iterdir():
    assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_name_is_recorded_for_the_server(tmp_path):
  convert.convert(str(REFERENCE / "hawk.pt"), str(tmp_path), window=8,
                  name="google/recurrentgemma-2b-it")
  assert json.loads((tmp_path / "config.json").read_text())["_name_or_path"] == \
      "google/recurrentgemma-2b-it"


def test_damaged_checkpoints_are_clear_errors(tmp_path):
  sd = torch.load(REFERENCE / "griffin.pt", weights_only=True)
  bad = dict(sd)
  bad["blocks.1.recurrent_block.linear_x.weight"] = torch.zeros(3, 3)
  torch.save(bad, tmp_path / "shape.pt")
  r = run_convert(tmp_path / "shape.pt", "--out", tmp_path / "o1")
  assert r.returncode == 1
  assert "blocks.1.recurrent_block.linear_x.weight has shape [3, 3], expected [64, 64]" in r.stderr

  missing = {k: v for k, v in sd.items() if k != "blocks.2.attention_block.proj_final.bias"}
  torch.save(missing, tmp_path / "missing.pt")
  r = run_convert(tmp_path / "missing.pt", "--out", tmp_path / "o2")
  assert r.returncode == 1 and "missing tensor blocks.2.attention_block.proj_final.bias" in r.stderr

  (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
  r = run_convert(tmp_path / "junk.pt", "--out", tmp_path / "o3")
  assert r.returncode == 1 and "not a PyTorch state dict" in r.stderr

  r = run_convert(tmp_path, "--out", tmp_path / "o4")
  assert r.returncode == 1 and "not an Orbax checkpoint" in r.stderr
  assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_orbax_without_orbax_installed_says_what_to_install(tmp_path, monkeypatch):
  src = tmp_path / "ckpt"
  shutil.copytree(REFERENCE / "griffin_orbax", src)
  monkeypatch.setitem(sys.modules, "orbax", None)  # import orbax.checkpoint -> ImportError
  monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
  with pytest.raises(convert.ConversionError, match="pip install orbax-checkpoint"):
    convert.convert(str(src), str(tmp_path / "out"), window=8)
