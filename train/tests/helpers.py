import json
import os

import numpy as np
import torch

from griffin_train.config import BOS, EOS, make_config
from griffin_train.model import GriffinLM


def tiny(arch="griffin", seed=0, **kw):
  args = dict(vocab_size=97, width=32, num_layers=3, num_heads=2, window=6)
  args.update(kw)
  c = make_config(arch, **args)
  m = GriffinLM(c, "parallel")
  m.reset_parameters(seed=seed)
  with torch.no_grad():  # non-zero norms and biases so that every parameter matters
    g = torch.Generator().manual_seed(seed + 1)
    for p in m.parameters():
      if p.dim() == 1 and p.abs().sum() == 0:
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
  return m


def write_tiny_corpus(folder, vocab=64, n_docs=300, seed=0):
  """Documents of arithmetic progressions (learnable): [bos] s, s+k, s+2k, ... [eos]."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  for split, n in (("train", n_docs), ("val", 40)):
    toks = []
    for _ in range(n):
      s, k, ln = rng.integers(4, vocab), rng.integers(1, 4), rng.integers(5, 30)
      toks += [BOS] + [4 + (s + k * i) % (vocab - 4) for i in range(ln)] + [EOS]
    np.asarray(toks, dtype=np.uint16).tofile(os.path.join(folder, f"{split}.bin"))
  with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as f:
    json.dump({"vocab_size": vocab}, f)
  return folder
