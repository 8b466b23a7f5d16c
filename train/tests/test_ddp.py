"""Two-process DistributedDataParallel on the CPU (gloo) through torchrun, a few steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from griffin_train.export import load_checkpoint

from helpers import write_tiny_corpus

TRAIN = Path(__file__).resolve().parents[1]


def test_two_process_ddp_gloo(tmp_path):
  data = write_tiny_corpus(str(tmp_path / "data"))
  out = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=str(TRAIN), OMP_NUM_THREADS="1")
  cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "griffin_train.train", "--data", data, "--out", str(out), "--arch", "griffin",
         "--width", "32", "--layers", "3", "--heads", "2", "--window", "8", "--seq_len", "16",
         "--batch_size", "4", "--grad_accum", "2", "--steps", "6", "--log_every", "2",
         "--eval_every", "3", "--eval_batches", "1", "--no_progress", "--threads", "1",
         "--device", "cpu"]
  res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["world"] == 2 and summary["steps"] == 6
  assert summary["tokens_seen"] == 6 * 2 * 4 * 16 * 2
  model, ck = load_checkpoint(str(out / "ckpt.pt"))
  assert ck["step"] == 6
  assert all(torch.isfinite(p).all() for p in model.parameters())
