"""Checkpoints written by the official `safetensors` library (F16, sharded with an index) load in
griffin-cli and give the same scores as the fixture they were converted from."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "hawk"
IDS = "2,17,33,5,90,41,7,7,12,200,3,64"


def cli():
    path = os.environ.get("GRIFFIN_CLI")
    if not path or not Path(path).exists():
        pytest.fail("GRIFFIN_CLI is not set to a built griffin-cli (make test sets it)", pytrace=False)
    return path


def score(model_dir):
    out = subprocess.run([cli(), "score", "--model", str(model_dir), "--ids", IDS],
                         capture_output=True, text=True, check=True)
    return [p.get("logprob") for p in json.loads(out.stdout)["positions"][:-1]]


def test_f16_checkpoint_from_official_writer(tmp_path):
    tensors = {k: v.astype(np.float16) for k, v in load_file(FIXTURE / "model.safetensors").items()}
    save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    reference, half = score(FIXTURE), score(tmp_path)
    diffs = [abs(a - b) for a, b in zip(reference, half)]
    assert max(diffs) < 0.05, diffs      # f16 weights: close to the f32 model
    assert max(diffs) > 0.0              # ... and really rounded


def test_sharded_checkpoint_scores_identically(tmp_path):
    tensors = load_file(FIXTURE / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file_name, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, tmp_path / file_name)
        weight_map.update({n: file_name for n in shard_names})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    assert score(tmp_path) == score(FIXTURE)


def test_missing_shard_is_a_clear_error(tmp_path):
    tensors = load_file(FIXTURE / "model.safetensors")
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[1:]}, tmp_path / "a.safetensors")
    weight_map = {n: "a.safetensors" for n in names[1:]}
    weight_map[names[0]] = "b.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    out = subprocess.run([cli(), "score", "--model", str(tmp_path), "--ids", IDS],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "b.safetensors" in out.stderr
