"""Model semantics: packed documents reset recurrence, conv and attention; the fast scan's
gradients through the whole model equal the loop's; a tiny model learns; checkpoints resume."""

import json
import os

import numpy as np
import pytest
import torch

from griffin_train import train as train_mod
from griffin_train.config import BOS, match_params
from griffin_train.data import TokenStream
from griffin_train.model import positions_from_tokens

from helpers import tiny, write_tiny_corpus


@pytest.mark.parametrize("arch", ["griffin", "hawk", "mqa"])
def test_packed_documents_are_independent(arch):
  m = tiny(arch).double()
  g = torch.Generator().manual_seed(3)
  d1 = torch.randint(4, 97, (1, 11), generator=g)
  d2 = torch.randint(4, 97, (1, 14), generator=g)
  d1[0, 0] = d2[0, 0] = BOS
  packed = torch.cat([d1, d2], 1)
  pos = positions_from_tokens(packed)
  assert pos[0, 11].item() == 0 and pos[0, 24].item() == 13
  with torch.no_grad():
    full = m(packed, pos)
    alone = m(d2, positions_from_tokens(d2))
    first = m(d1, positions_from_tokens(d1))
  torch.testing.assert_close(full[:, 11:], alone, rtol=1e-9, atol=1e-9)
  torch.testing.assert_close(full[:, :11], first, rtol=1e-9, atol=1e-9)


def test_window_limits_attention():
  """Changing a token more than `window` positions back changes nothing in an attention-only
  model with one layer (the window is itself + 6 earlier tokens)."""
  m = tiny("mqa", num_layers=1).double()
  t = torch.randint(4, 97, (1, 20), generator=torch.Generator().manual_seed(0))
  t[0, 0] = BOS
  t2 = t.clone()
  t2[0, 3] = (t[0, 3] + 1 - 4) % 93 + 4
  pos = positions_from_tokens(t)
  with torch.no_grad():
    a, b = m(t, pos), m(t2, pos)
  diff = (a - b).abs().amax(-1)[0]
  assert diff[3:10].min() > 0          # positions 3..9 see token 3
  assert diff[10:].max() == 0          # position 10 sees 4..10 only


def test_fast_scan_gradients_through_model_equal_loop():
  m = tiny("griffin").double()
  t = torch.randint(4, 97, (2, 25), generator=torch.Generator().manual_seed(1))
  t[:, 0] = BOS
  t[1, 9] = BOS
  pos = positions_from_tokens(t)
  grads = {}
  for name in ("loop", "parallel"):
    m.set_scan_backend(name)
    m.zero_grad()
    loss = m.loss(t, pos, t.roll(-1, 1))
    loss.backward()
    grads[name] = (loss.item(), [p.grad.clone() for p in m.parameters()])
  assert abs(grads["loop"][0] - grads["parallel"][0]) < 1e-12
  for a, b in zip(grads["loop"][1], grads["parallel"][1]):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_token_stream_positions_continue_documents(tmp_path):
  toks = np.array([2, 10, 11, 12, 1, 2, 20, 21, 22, 23, 24, 1, 2, 30], dtype=np.uint16)
  toks.tofile(tmp_path / "x.bin")
  s = TokenStream(str(tmp_path / "x.bin"), seq_len=6)
  tokens, pos, targets = s.batch(2, starts=[2, 5])
  assert tokens[0].tolist() == [11, 12, 1, 2, 20, 21]
  assert pos[0].tolist() == [2, 3, 4, 0, 1, 2]        # mid-document start continues its position
  assert pos[1].tolist() == [0, 1, 2, 3, 4, 5]
  assert targets[0].tolist() == [12, 1, -100, 20, 21, 22]   # BOS after EOS is not scored


def test_match_params():
  g = tiny("griffin").config
  for arch in ("hawk", "mqa"):
    c = match_params(arch, g.num_params(), vocab_size=97, width=32, num_layers=3, num_heads=2)
    assert abs(c.num_params() - g.num_params()) / g.num_params() < 0.03


def _losses(out):
  with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as f:
    recs = [json.loads(l) for l in f]
  return recs


def test_tiny_model_learns_and_resumes(tmp_path):
  data = write_tiny_corpus(str(tmp_path / "data"))
  out = str(tmp_path / "run")
  common = ["--data", data, "--out", out, "--arch", "griffin", "--width", "32", "--layers", "3",
            "--heads", "2", "--window", "8", "--seq_len", "32", "--batch_size", "8",
            "--lr", "1e-2", "--warmup", "5", "--log_every", "5", "--eval_every", "20",
            "--eval_batches", "2", "--no_progress", "--threads", "1", "--seed", "1"]
  train_mod.main(common + ["--steps", "25", "--ckpt_every", "25"])
  recs = _losses(out)
  first = [r["loss"] for r in recs if "loss" in r][0]
  assert recs[-1]["steps"] == 25
  # resume: the same command with more steps continues from step 25
  s = train_mod.main(common + ["--steps", "45"])
  assert s["steps"] == 45
  recs = _losses(out)
  last = [r["loss"] for r in recs if "loss" in r][-1]
  starts = [r for r in recs if r.get("event") == "start"]
  assert len(starts) == 2
  assert last < first - 1.0, (first, last)
  assert s["final_val_loss"] < first - 1.0
