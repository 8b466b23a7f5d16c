"""Export a trained checkpoint to the Hugging Face RecurrentGemma layout (SPEC.md §4.3, §8.3).

    python -m griffin_train.export --ckpt runs/demo/ckpt.pt --out models/demo \
        --tokenizer train/data/tokenizer.model --dtype bfloat16

Writes config.json (with both `block_types` and `_block_types`, and the model's name as
`_name_or_path`, which griffin-server serves it under), model.safetensors (HF tensor names; the
tied lm_head is not stored; readable by every user, as the umask allows), generation_config.json
and tokenizer.model, and with it tokenizer.json + tokenizer_config.json (hf_tokenizer.py: what
AutoTokenizer loads, offline).
`load_hf_dir` reads such a folder back into a `GriffinLM`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from .config import BOS, EOS, PAD, ModelConfig
from .model import GriffinLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_model(model: GriffinLM, out_dir: str, tokenizer: str | None = None,
                 dtype: str = "float32", generation: dict | None = None,
                 name: str | None = None) -> None:
  os.makedirs(out_dir, exist_ok=True)
  sd = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous()
        for k, v in model.state_dict().items()}
  weights = os.path.join(out_dir, "model.safetensors")
  save_file(sd, weights, metadata={"format": "pt"})
  # safetensors writes 0600; the images serve models as uid 10001, and other users read them too.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(weights, 0o666 & ~umask)
  config = model.config.hf_config(dtype)
  if name:
    config["_name_or_path"] = name
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
  gen = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "do_sample": True,
         "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 128}
  gen.update(generation or {})
  with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump(gen, f, indent=2)
    f.write("\n")
  if tokenizer:
    shutil.copy(tokenizer, os.path.join(out_dir, "tokenizer.model"))
    try:
      from . import hf_tokenizer
      hf_tokenizer.write(out_dir)
    except ImportError as e:  # transformers is optional for training (extra "hf")
      print(f"export: tokenizer.json not written ({e}); run hf_tokenizer.py when it is installed")


def load_hf_dir(path: str, scan_backend: str = "parallel") -> GriffinLM:
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    cfg = ModelConfig.from_hf(json.load(f))
  model = GriffinLM(cfg, scan_backend)
  sd = {k: v.float() for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
  sd.pop("lm_head.weight", None)
  model.load_state_dict(sd, strict=True)
  return model


def load_checkpoint(path: str, scan_backend: str = "parallel"):
  ck = torch.load(path, map_location="cpu", weights_only=False)
  model = GriffinLM(ModelConfig.from_dict(ck["config"]), scan_backend)
  sd = ck["model"]
  sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in sd.items()}
  model.load_state_dict(sd)
  return model, ck


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--ckpt", required=True, help="checkpoint written by griffin_train.train")
  p.add_argument("--out", required=True)
  p.add_argument("--tokenizer", default=None, help="tokenizer.model (default: the run's)")
  p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
  p.add_argument("--name", default=None,
                 help="model name griffin-server serves (config.json _name_or_path); default: "
                      "the name of the run's folder")
  args = p.parse_args(argv)
  model, ck = load_checkpoint(args.ckpt)
  tok = args.tokenizer or ck.get("args", {}).get("tokenizer")
  if tok and not os.path.exists(tok):
    tok = None
  name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.ckpt)))
  export_model(model, args.out, tok, args.dtype, name=name)
  n = sum(v.numel() for v in model.state_dict().values())
  print(f"exported {n:,} parameters ({args.dtype}) to {args.out}")


if __name__ == "__main__":
  main()
