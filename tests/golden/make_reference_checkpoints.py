#!/usr/bin/env python3
"""Writes the golden fixtures' weights in the two formats the DeepMind reference ships its
checkpoints in, so `griffin_train.convert` is tested on the real layouts:

  <out>/<name>.pt          the PyTorch state dict of `recurrentgemma.torch.Griffin` (the Kaggle
                           "PyTorch" variant: `torch.load` gives {name: tensor}), bfloat16
  <out>/<name>_orbax/      an Orbax PyTree checkpoint of the Flax params of
                           `recurrentgemma.jax.Griffin` (the Kaggle "Flax" variant, read by the
                           reference's `recurrentgemma.jax.load_parameters`), bfloat16

The reference (github.com/google-deepmind/recurrentgemma at commit
2efa84dac0e68e63547a27a18fa943c98f1c312e) is not part of this repository: pass the folder that
holds its `recurrentgemma/` package. Needs torch, jax, flax and orbax-checkpoint.

    python3 tests/golden/make_reference_checkpoints.py --reference /tmp/rg_ref \
        --out tests/data/reference_checkpoints

The fixture weights (tests/data/<name>/model.safetensors, every value bf16-exact) are mapped to
the reference names with make_golden.hf_to_reference, loaded into the reference PyTorch model with
strict=True (so every name and shape is the reference's own), and saved from its state_dict(). The
Flax params come from that state dict through the reference's own converter
(`conversion.pytorch_state_dict_to_flax_params`); their tree is checked against the parameters
`recurrentgemma.jax.Griffin.init` creates, and the JAX model's log-probabilities on the golden
tokens are checked against the float32 golden (<= 1e-4), before Orbax writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402  pylint: disable=wrong-import-position

FIXTURES = ("griffin", "hawk")
JAX_TOL = 1e-4


def reference_config(common, cfg: dict):
  bt = {"recurrent": common.TemporalBlockType.RECURRENT,
        "attention": common.TemporalBlockType.ATTENTION}
  cycle = cfg["block_types"]
  return common.GriffinConfig(
      vocab_size=cfg["vocab_size"], width=cfg["hidden_size"],
      mlp_expanded_width=cfg["intermediate_size"] // 2,
      num_heads=cfg["num_attention_heads"], lru_width=cfg["lru_width"],
      block_types=tuple(bt[cycle[i % len(cycle)]] for i in range(cfg["num_hidden_layers"])),
      embeddings_scale_by_sqrt_dim=True,
      attention_window_size=cfg["attention_window_size"],
      logits_soft_cap=cfg["logits_soft_cap"],
      scan_type=common.ScanType.LINEAR_NATIVE)


def tree_shapes(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(tree_shapes(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = tuple(v.shape)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--reference", required=True, help="folder holding recurrentgemma/")
  p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data"))
  p.add_argument("--out", required=True)
  args = p.parse_args()

  sys.path.insert(0, os.path.abspath(args.reference))
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from recurrentgemma import common, conversion  # pylint: disable=import-outside-toplevel
  import recurrentgemma.jax as rg_jax  # pylint: disable=import-outside-toplevel
  import recurrentgemma.torch as rg_torch  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_default_matmul_precision", "highest")
  torch.manual_seed(0)
  os.makedirs(args.out, exist_ok=True)
  for name in FIXTURES:
    folder = os.path.join(args.data, name)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
      cfg = json.load(f)
    config = reference_config(common, cfg)

    # PyTorch: load into the reference model (strict), save its own state dict in bfloat16.
    sd = make_golden.hf_to_reference(load_file(os.path.join(folder, "model.safetensors")))
    model = rg_torch.Griffin(config, gradient_checkpointing=False, dtype=torch.float32)
    model.load_state_dict(sd, strict=True)
    torch_sd = {k: v.detach().to(torch.bfloat16).clone() for k, v in model.state_dict().items()}
    for k, v in torch_sd.items():  # bf16-exact fixture: nothing is rounded
      assert torch.equal(v.float(), sd[k].float()), k
    torch.save(torch_sd, os.path.join(args.out, f"{name}.pt"))

    # Flax: the reference's converter, checked against the JAX model's own parameter tree.
    # (Its bfloat16 branch calls Tensor.astype, which torch lacks: convert float32, then cast.)
    flax = conversion.pytorch_state_dict_to_flax_params(
        {f"params.{k}": v.float() for k, v in torch_sd.items()})
    flax = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), flax)
    jmodel = rg_jax.Griffin(config, gradient_checkpointing=False, dtype=jnp.float32,
                            param_dtype=jnp.float32)
    tokens = jnp.zeros((1, 4), jnp.int32)
    init = jmodel.init(jax.random.PRNGKey(0), tokens, jnp.arange(4)[None])
    assert tree_shapes(init["params"]) == tree_shapes(flax["params"]), "Flax tree mismatch"

    golden = load_file(os.path.join(folder, "golden.safetensors"))
    worst = 0.0
    params32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), flax["params"])
    for key in sorted(k for k in golden if k.startswith("tokens.")):
      toks = jnp.asarray(golden[key].numpy(), jnp.int32)[None]
      logits, _ = jmodel.apply({"params": params32}, toks, jnp.arange(toks.shape[1])[None])
      lp = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32), -1), np.float64)
      ref = golden["logprobs." + key.split(".", 1)[1]].double().numpy()
      worst = max(worst, float(np.abs(lp - ref).max()))
    assert worst <= JAX_TOL, f"{name}: JAX reference vs golden {worst:.2e}"

    orbax_dir = os.path.abspath(os.path.join(args.out, f"{name}_orbax"))
    shutil.rmtree(orbax_dir, ignore_errors=True)
    ocp.PyTreeCheckpointer().save(orbax_dir, flax["params"])
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(orbax_dir) for f in fs)
    print(f"{name}: {len(torch_sd)} tensors; JAX reference vs float32 golden max|dlp| "
          f"{worst:.2e}; {name}.pt {os.path.getsize(os.path.join(args.out, name + '.pt'))} B, "
          f"{name}_orbax/ {size} B (orbax-checkpoint, jax {jax.__version__})")


if __name__ == "__main__":
  main()
