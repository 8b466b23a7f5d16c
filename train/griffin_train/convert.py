"""Convert a checkpoint of the DeepMind reference implementation to the folder griffin-server serves.

    python -m griffin_train.convert SRC --out DIR [--tokenizer tokenizer.model] [--dtype bfloat16]

SRC is either of the two formats google-deepmind/recurrentgemma ships its checkpoints in (Kaggle,
models/google/recurrentgemma, variations "PyTorch" and "Flax"):

  * a PyTorch state dict file (the "PyTorch" variation's 2b.pt, ...; `torch.load` gives
    {"embedder.input_embedding": tensor, "blocks.0.channel_pre_norm.scale": ..., ...}), read with
    weights_only=True and memory-mapped;
  * an Orbax checkpoint folder of Flax params (the "Flax" variation's 2b/, ...; the tree
    {"embedder": {"input_embedding"}, "blocks.0": {...}, ...}, with or without a top-level
    "params"). Reading it needs orbax-checkpoint and jax (`pip install orbax-checkpoint`).

The folder written (SPEC.md section 4.3 / 8.3; the layout of the Hugging Face repositories):
config.json (Hugging Face RecurrentGemma config, both `block_types` keys), model.safetensors or
shards of --max_shard_size with model.safetensors.index.json (Hugging Face tensor names; the tied
lm_head is not stored), generation_config.json, and with --tokenizer tokenizer.model plus the
tokenizer.json / tokenizer_config.json that clients' AutoTokenizer reads (hf_tokenizer.py).

Everything is inferred from the tensor shapes except three hyper-parameters no weight holds; their
defaults are those of every published RecurrentGemma (2B, 9B and the -it models):
--attention_window_size 2048, --logits_soft_cap 30, embeddings scaled by sqrt(width).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil

import torch
from safetensors.torch import save_file

from .config import BOS, EOS, PAD, ModelConfig

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class ConversionError(ValueError):
  """The source is not a reference checkpoint this converter understands; the message says why."""


# ---- reading the two reference formats ----------------------------------------------------------
def load_torch_state_dict(path: str) -> dict[str, torch.Tensor]:
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(f"{path}: not a PyTorch state dict torch.load can read "
                          f"({type(e).__name__})") from e
  if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
    raise ConversionError(f"{path}: holds no {{name: tensor}} state dict")
  # Some conversions keep the Flax "params." prefix.
  return {k.removeprefix("params."): v for k, v in sd.items()}


def load_orbax_params(path: str) -> dict:
  try:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError(
        f"{path} is an Orbax checkpoint (the Flax variation); reading it needs orbax-checkpoint "
        f"and jax, which are not installed ({e.name}): pip install orbax-checkpoint") from e
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    # orbax-checkpoint >= 0.11 wraps the tree (StepMetadata.item_metadata.tree); older ones
    # (the reference's era) return it directly.
    metadata = checkpointer.metadata(os.path.abspath(path))
    item = getattr(metadata, "item_metadata", metadata)
    tree = getattr(item, "tree", item)
    restore_args = _tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    params = checkpointer.restore(os.path.abspath(path), restore_args=restore_args)
  except ConversionError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(f"{path}: Orbax could not restore it ({type(e).__name__}: "
                          f"{str(e)[:200]})") from e
  return params


def _tree_map(fn, tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _tree_map(fn, v) for k, v in dict(tree).items()}
  return fn(tree)


def flax_params_to_reference(params) -> dict[str, torch.Tensor]:
  """Flattens Flax params to the reference PyTorch names: keys joined with ".", Dense `kernel`
  ([in, out]) becomes `weight` ([out, in]); einsum weights `w`, biases, scales keep their layout
  (what the reference's conversion.flax_params_to_pytorch_state_dict does)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  params = dict(params)
  if set(params) == {"params"}:
    params = dict(params["params"])
  out = {}

  def walk(tree, prefix):
    for k, v in dict(tree).items():
      name = f"{prefix}{k}"
      if isinstance(v, dict) or hasattr(v, "items"):
        walk(v, name + ".")
        continue
      a = np.asarray(v)
      if a.dtype.name == "bfloat16":  # ml_dtypes' numpy bfloat16: exact via float32
        t = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
      else:
        t = torch.from_numpy(np.ascontiguousarray(a))
      if k == "kernel":
        if t.dim() != 2:
          raise ConversionError(f"{name}: a Dense kernel of {t.dim()} dimensions")
        name, t = name[: -len("kernel")] + "weight", t.T
      out[name] = t

  walk(params, "")
  return out


def read_reference_checkpoint(src: str) -> dict[str, torch.Tensor]:
  if os.path.isdir(src):
    if not any(os.path.exists(os.path.join(src, f))
               for f in ("_METADATA", "_CHECKPOINT_METADATA", "checkpoint", "manifest.ocdbt")):
      raise ConversionError(f"{src}: a folder, but not an Orbax checkpoint (no _METADATA)")
    return flax_params_to_reference(load_orbax_params(src))
  if not os.path.exists(src):
    raise ConversionError(f"{src}: no such file or folder")
  return load_torch_state_dict(src)


# ---- reference names -> Hugging Face names (SPEC.md section 4.2 -> 4.3) ---------------------------
_RECURRENT = {
    "conv_1d.b": "conv_1d.bias",
    "rg_lru.a_param": "rg_lru.recurrent_param",
    "rg_lru.input_gate.w": "rg_lru.input_gate_weight",
    "rg_lru.input_gate.b": "rg_lru.input_gate_bias",
    "rg_lru.a_gate.w": "rg_lru.recurrent_gate_weight",
    "rg_lru.a_gate.b": "rg_lru.recurrent_gate_bias",
}
_ATTENTION = {
    "proj_q.weight": "q_proj.weight",
    "proj_k.weight": "k_proj.weight",
    "proj_v.weight": "v_proj.weight",
    "proj_final.weight": "o_proj.weight",
    "proj_final.bias": "o_proj.bias",
}


def reference_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
  hf = {}

  def put(name, tensor):
    if name in hf:
      raise ConversionError(f"two source tensors map to {name}")
    hf[name] = tensor

  for name, t in sd.items():
    if name == "embedder.input_embedding":
      put("model.embed_tokens.weight", t)
      continue
    if name == "final_norm.scale":
      put("model.final_norm.weight", t)
      continue
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if not m:
      raise ConversionError(f"unexpected tensor {name} (not a RecurrentGemma reference name)")
    p, rest = f"model.layers.{int(m.group(1))}.", m.group(2)
    if rest in ("temporal_pre_norm.scale", "channel_pre_norm.scale"):
      put(p + rest.replace(".scale", ".weight"), t)
    elif rest == "mlp_block.ffw_up.w":  # [2, d, m]; [0] is the GELU branch
      put(p + "mlp_block.gate_proj.weight", t[0].T)
      put(p + "mlp_block.up_proj.weight", t[1].T)
    elif rest == "mlp_block.ffw_up.b":  # [2, 1, 1, m]
      put(p + "mlp_block.gate_proj.bias", t.reshape(2, -1)[0])
      put(p + "mlp_block.up_proj.bias", t.reshape(2, -1)[1])
    elif rest in ("mlp_block.ffw_down.weight", "mlp_block.ffw_down.bias"):
      put(p + rest.replace("ffw_down", "down_proj"), t)
    elif rest.startswith("recurrent_block."):
      sub = rest[len("recurrent_block."):]
      q = p + "temporal_block."
      if sub in ("linear_x.weight", "linear_x.bias", "linear_y.weight", "linear_y.bias",
                 "linear_out.weight", "linear_out.bias"):
        put(q + sub, t)
      elif sub == "conv_1d.w":  # [K, L] -> [L, 1, K]: weight[c, 0, k] = w[k, c]
        put(q + "conv_1d.weight", t.T.unsqueeze(1))
      elif sub in _RECURRENT:
        put(q + _RECURRENT[sub], t)
      else:
        raise ConversionError(f"unexpected tensor {name}")
    elif rest.startswith("attention_block."):
      sub = rest[len("attention_block."):]
      if sub not in _ATTENTION:
        raise ConversionError(f"unexpected tensor {name}")
      put(p + "temporal_block." + _ATTENTION[sub], t)
    else:
      raise ConversionError(f"unexpected tensor {name}")
  return hf


# ---- the config -----------------------------------------------------------------------------------
def _shape(sd, name):
  if name not in sd:
    raise ConversionError(f"missing tensor {name}")
  return tuple(sd[name].shape)


def _cycle(types: list[str]) -> tuple[str, ...]:
  """The shortest pattern whose repetition gives `types` (R,R,A,R,R,A,... -> R,R,A)."""
  for n in range(1, len(types) + 1):
    if all(types[i] == types[i % n] for i in range(len(types))):
      return tuple(types[:n])
  return tuple(types)


def infer_config(sd: dict[str, torch.Tensor], window: int, soft_cap: float,
                 scale_embeddings: bool) -> ModelConfig:
  """The model's shape from the reference state dict (as the reference's
  GriffinConfig.from_torch_params), each tensor's shape checked against it."""
  vocab, width = _shape(sd, "embedder.input_embedding")
  layers = 0
  while f"blocks.{layers}.channel_pre_norm.scale" in sd:
    layers += 1
  if layers == 0:
    raise ConversionError("no blocks.0.*: not a RecurrentGemma reference checkpoint")
  two, _, mlp = _shape(sd, "blocks.0.mlp_block.ffw_up.w")
  types, gate_heads, attn_heads, lru_width, conv = [], set(), set(), None, None
  for i in range(layers):
    if f"blocks.{i}.recurrent_block.rg_lru.a_gate.w" in sd:
      types.append("recurrent")
      h, bw, bw2 = _shape(sd, f"blocks.{i}.recurrent_block.rg_lru.a_gate.w")
      gate_heads.add(h)
      lru_width = h * bw
      conv = _shape(sd, f"blocks.{i}.recurrent_block.conv_1d.w")[0]
    elif f"blocks.{i}.attention_block.proj_k.weight" in sd:
      types.append("attention")
      kv_dim = _shape(sd, f"blocks.{i}.attention_block.proj_k.weight")[0]
      if width % kv_dim:
        raise ConversionError(f"blocks.{i}.attention_block.proj_k.weight: head size {kv_dim} "
                              f"does not divide the width {width}")
      attn_heads.add(width // kv_dim)
    else:
      raise ConversionError(f"blocks.{i} is neither a recurrent nor an attention block")
  heads = gate_heads | attn_heads
  if len(heads) != 1:
    raise ConversionError(f"the RG-LRU gate blocks and the attention heads disagree on the head "
                          f"count ({sorted(heads)}); the engine needs one num_heads")
  config = ModelConfig(
      vocab_size=vocab, width=width, num_layers=layers, num_heads=heads.pop(),
      lru_width=lru_width or width, mlp_width=mlp, window=window,
      block_types=_cycle(types), num_kv_heads=1, conv_width=conv or 4,
      logits_soft_cap=soft_cap, embeddings_scale_by_sqrt_dim=scale_embeddings)
  if two != 2:
    raise ConversionError(f"blocks.0.mlp_block.ffw_up.w has {two} branches, not 2")
  _check_shapes(sd, config)
  return config


def _check_shapes(sd, c: ModelConfig) -> None:
  d, L, m, H, K, hd = c.width, c.lru_width, c.mlp_width, c.num_heads, c.conv_width, c.head_dim
  want = {"embedder.input_embedding": (c.vocab_size, d), "final_norm.scale": (d,)}
  for i, t in enumerate(c.layer_types):
    b = f"blocks.{i}."
    want.update({b + "temporal_pre_norm.scale": (d,), b + "channel_pre_norm.scale": (d,),
                 b + "mlp_block.ffw_up.w": (2, d, m), b + "mlp_block.ffw_up.b": (2, 1, 1, m),
                 b + "mlp_block.ffw_down.weight": (d, m), b + "mlp_block.ffw_down.bias": (d,)})
    if t == "recurrent":
      r = b + "recurrent_block."
      want.update({r + "linear_x.weight": (L, d), r + "linear_x.bias": (L,),
                   r + "linear_y.weight": (L, d), r + "linear_y.bias": (L,),
                   r + "linear_out.weight": (d, L), r + "linear_out.bias": (d,),
                   r + "conv_1d.w": (K, L), r + "conv_1d.b": (L,), r + "rg_lru.a_param": (L,)})
      for g in ("input_gate", "a_gate"):
        want[r + f"rg_lru.{g}.w"] = (H, L // H, L // H)
        want[r + f"rg_lru.{g}.b"] = (H, L // H)
    else:
      a = b + "attention_block."
      want.update({a + "proj_q.weight": (H * hd, d), a + "proj_k.weight": (hd, d),
                   a + "proj_v.weight": (hd, d), a + "proj_final.weight": (d, H * hd),
                   a + "proj_final.bias": (d,)})
  for name, shape in want.items():
    got = _shape(sd, name)
    # The reference stores the MLP biases [2, 1, 1, m]; some conversions squeeze them to [2, m].
    if name.endswith("ffw_up.b") and got == (2, m):
      continue
    if got != shape:
      raise ConversionError(f"{name} has shape {list(got)}, expected {list(shape)}")
  extra = sorted(set(sd) - set(want))
  if extra:
    raise ConversionError(f"unexpected tensor {extra[0]} ({len(extra)} in all)")


# ---- writing ----------------------------------------------------------------------------------------
def _readable(path: str) -> None:
  """safetensors writes 0600; model files are read by other users (the images' uid 10001)."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def write_safetensors(tensors: dict[str, torch.Tensor], out_dir: str, max_shard_bytes: int) -> list[str]:
  """model.safetensors, or model-0000i-of-0000n.safetensors plus model.safetensors.index.json
  when the tensors exceed max_shard_bytes. Returns the files written."""
  names = sorted(tensors)
  total = sum(tensors[n].numel() * tensors[n].element_size() for n in names)
  shards, current, size = [], [], 0
  for n in names:
    nbytes = tensors[n].numel() * tensors[n].element_size()
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(n)
    size += nbytes
  shards.append(current)
  meta = {"format": "pt"}
  if len(shards) == 1:
    path = os.path.join(out_dir, "model.safetensors")
    save_file({n: tensors[n] for n in names}, path, metadata=meta)
    _readable(path)
    return ["model.safetensors"]
  files, weight_map = [], {}
  for i, shard in enumerate(shards):
    file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file({n: tensors[n] for n in shard}, os.path.join(out_dir, file), metadata=meta)
    _readable(os.path.join(out_dir, file))
    weight_map.update({n: file for n in shard})
    files.append(file)
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    f.write("\n")
  return files + ["model.safetensors.index.json"]


def parse_size(text: str) -> int:
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
  if not m:
    raise argparse.ArgumentTypeError(f"not a size: {text} (e.g. 5GB, 500MB)")
  unit = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9,
          "GB": 10**9}[m.group(2)]
  return int(float(m.group(1)) * unit)


def convert(src: str, out_dir: str, tokenizer: str | None = None, dtype: str | None = "bfloat16",
            window: int = 2048, soft_cap: float = 30.0, scale_embeddings: bool = True,
            name: str | None = None, max_shard_bytes: int = 5 * 10**9) -> ModelConfig:
  sd = read_reference_checkpoint(src)
  config = infer_config(sd, window, soft_cap, scale_embeddings)
  source_dtypes = {v.dtype for v in sd.values()}
  if dtype is None:  # keep: one dtype in the source
    if len(source_dtypes) != 1:
      raise ConversionError(f"the source mixes dtypes {sorted(map(str, source_dtypes))}: pass --dtype")
    target = source_dtypes.pop()
  else:
    target = DTYPES[dtype]
  hf = {k: v.to(target).contiguous() for k, v in reference_to_hf(sd).items()}
  if tokenizer is not None and not os.path.isfile(tokenizer):
    raise ConversionError(f"--tokenizer {tokenizer}: no such file")
  os.makedirs(out_dir, exist_ok=True)
  write_safetensors(hf, out_dir, max_shard_bytes)
  dtype_name = {v: k for k, v in DTYPES.items()}[target]
  hf_config = config.hf_config(dtype_name)
  if name:
    hf_config["_name_or_path"] = name
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
    f.write("\n")
  with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump({"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}, f, indent=2)
    f.write("\n")
  if tokenizer is not None:
    shutil.copyfile(tokenizer, os.path.join(out_dir, "tokenizer.model"))
    _readable(os.path.join(out_dir, "tokenizer.model"))
    try:  # tokenizer.json + tokenizer_config.json, for clients' AutoTokenizer (as export writes)
      from . import hf_tokenizer  # pylint: disable=import-outside-toplevel
      hf_tokenizer.write(out_dir)
    except ImportError as e:
      print(f"convert: tokenizer.json not written ({e}); run hf_tokenizer.py when it is installed")
  return config


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m griffin_train.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("src", help="reference checkpoint: a PyTorch state dict file (.pt) or an Orbax "
                             "checkpoint folder of Flax params")
  p.add_argument("--out", required=True, help="model folder to write")
  p.add_argument("--tokenizer", help="tokenizer.model to copy in (the Kaggle archive has one)")
  p.add_argument("--dtype", default="bfloat16", choices=[*sorted(DTYPES), "keep"],
                 help="dtype of the written weights (default bfloat16; keep: the source's)")
  p.add_argument("--attention_window_size", type=int, default=2048,
                 help="local attention window (not in the weights; 2048 for RecurrentGemma)")
  p.add_argument("--logits_soft_cap", type=float, default=30.0,
                 help="tanh soft cap of the logits (not in the weights; 30 for RecurrentGemma; 0 = none)")
  p.add_argument("--no_embedding_scale", action="store_true",
                 help="do not scale embeddings by sqrt(width) (RecurrentGemma does)")
  p.add_argument("--name", help="model name recorded as _name_or_path in config.json; "
                                "griffin-server serves it under this name")
  p.add_argument("--max_shard_size", type=parse_size, default=5 * 10**9,
                 help="largest safetensors file before sharding (default 5GB)")
  args = p.parse_args(argv)
  try:
    config = convert(args.src, args.out, args.tokenizer,
                     None if args.dtype == "keep" else args.dtype, args.attention_window_size,
                     args.logits_soft_cap, not args.no_embedding_scale, args.name,
                     args.max_shard_size)
  except ConversionError as e:
    p.exit(1, f"convert: {e}\n")
  pattern = "".join("R" if t == "recurrent" else "A" for t in config.layer_types)
  print(f"converted {config.num_params():,} parameters ({config.num_layers} layers {pattern}, "
        f"width {config.width}, vocab {config.vocab_size}) to {args.out}")


if __name__ == "__main__":
  main()
