#!/usr/bin/env python3
"""Generates the tiny Griffin / Hawk golden fixtures under tests/data/.

The oracle is the OFFICIAL DeepMind reference PyTorch implementation
(github.com/google-deepmind/recurrentgemma, commit
2efa84dac0e68e63547a27a18fa943c98f1c312e), run in float32. The reference code
is NOT part of this repository: pass the folder that contains its
`recurrentgemma/` package with --reference.

    python3 tests/golden/make_golden.py --reference /tmp/rg_ref --out tests/data

For every fixture this writes, in the Hugging Face RecurrentGemma layout:
  <out>/<name>/config.json
  <out>/<name>/model.safetensors       (float32 holding bf16-exact values, HF tensor
                                        names, tied lm_head)
  <out>/<name>/golden.safetensors      (tokens.k I32 [T], logprobs.k F32 [T, V])
and for the griffin fixture also tokenizer.model (SentencePiece, byte fallback)
plus tokenizer_golden.json (text -> ids produced by the python sentencepiece).

Checks performed (the first four are fatal):
  * the HF shapes match SPEC.md section 4.3, and the written model.safetensors maps back
    (inverse name mapping) to exactly the reference state dict;
  * the reference's sampler-style path (prefill of the first n tokens with
    cache=None, then one-token decode steps with the cache) equals its one-shot
    forward, for several n (1..4, window-1..window+1, 2*window+1, T/2, T-1):
    <= 1e-5 in log-probability on a float64 copy of the reference, <= 5e-5 on
    the float32 one (its rounding floor here is ~1-2e-5);
  * the float32 golden is within 5e-5 of the float64 copy (so an engine test
    at 1e-4 is meaningful);
  * sensitivity (printed): the golden moves by O(1) if the soft cap is dropped
    or the window is one key shorter;
  * optional second opinion, never fatal: transformers' RecurrentGemmaForCausalLM
    loaded from the written folder, on positions t < window (all positions for
    attention-free fixtures), and at all positions against the reference run
    with window-1 (HF's window convention). Skipped if transformers is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import types
import zlib

import numpy as np
import torch
from safetensors.torch import load_file, save_file

REFERENCE_COMMIT = "2efa84dac0e68e63547a27a18fa943c98f1c312e"
BOS, EOS, PAD, UNK = 2, 1, 0, 3
# Reference decode path vs its one-shot forward. 1e-5 holds for the float64 twin;
# the float32 run itself has a rounding floor of ~1-2e-5 on these fixtures
# (different GEMM shapes for T tokens vs 1 token), hence the looser fp32 bound.
DECODE_TOL = 1e-5
DECODE_TOL_FP32 = 5e-5
# The fp32 golden must stay this close to the float64 twin (engine tests use 1e-4).
FP32_NOISE_TOL = 5e-5


# --------------------------------------------------------------------------------------
# Fixture definitions
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Fixture:
  name: str
  seed: int
  block_types: tuple[str, ...]  # the cycle pattern, HF spelling
  num_hidden_layers: int
  hidden_size: int
  num_attention_heads: int
  lru_width: int
  intermediate_size: int  # HF convention: 2 x per-branch MLP width
  vocab_size: int
  attention_window_size: int
  seq_lens: tuple[int, ...]
  tokenizer: bool = False
  num_key_value_heads: int = 1
  conv1d_width: int = 4
  logits_soft_cap: float = 30.0
  partial_rotary_factor: float = 0.5
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def layer_types(self) -> list[str]:
    return [self.block_types[i % len(self.block_types)]
            for i in range(self.num_hidden_layers)]


FIXTURES = (
    # R,R,A,R. vocab 512 (not 256): a SentencePiece model with byte_fallback
    # needs 4 special + 256 byte pieces + the characters of the training text,
    # so 256 is impossible; the model vocab must equal the tokenizer's.
    Fixture(name="griffin", seed=1001,
            block_types=("recurrent", "recurrent", "attention"),
            num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
            lru_width=64, intermediate_size=192, vocab_size=512,
            attention_window_size=8, seq_lens=(41, 29), tokenizer=True),
    # All recurrent; lru_width (64) != hidden_size (48); gate blocks 64/4 = 16;
    # sqrt(48) is not a bf16 number (6.928 -> 6.9375).
    Fixture(name="hawk", seed=2002, block_types=("recurrent",),
            num_hidden_layers=3, hidden_size=48, num_attention_heads=4,
            lru_width=64, intermediate_size=128, vocab_size=256,
            attention_window_size=8, seq_lens=(40, 17)),
    # A,R,A: attention first, head_dim 32, window 5.
    Fixture(name="attnfirst", seed=3003, block_types=("attention", "recurrent"),
            num_hidden_layers=3, hidden_size=64, num_attention_heads=2,
            lru_width=64, intermediate_size=128, vocab_size=256,
            attention_window_size=5, seq_lens=(23, 17)),
)


# --------------------------------------------------------------------------------------
# Reference import (without its JAX half)
# --------------------------------------------------------------------------------------
def import_reference(path: str):
  """Imports recurrentgemma.torch from `path` without running the package's
  top-level __init__ (which imports the JAX implementation)."""
  pkg_dir = os.path.join(os.path.abspath(path), "recurrentgemma")
  if not os.path.isfile(os.path.join(pkg_dir, "torch", "griffin.py")):
    sys.exit(f"--reference {path}: no recurrentgemma/torch/griffin.py there")
  sys.path.insert(0, os.path.abspath(path))
  stub = types.ModuleType("recurrentgemma")
  stub.__path__ = [pkg_dir]
  sys.modules["recurrentgemma"] = stub
  import recurrentgemma.torch as rg  # pylint: disable=import-outside-toplevel
  from recurrentgemma import common  # pylint: disable=import-outside-toplevel
  return rg, common


# --------------------------------------------------------------------------------------
# Random weights (numpy RandomState: stream is stable across numpy versions)
# --------------------------------------------------------------------------------------
def _rng(seed: int, name: str) -> np.random.RandomState:
  return np.random.RandomState((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32)


def random_reference_params(fx: Fixture, shapes: dict[str, tuple[int, ...]]):
  """Random float32 values for every reference parameter, keyed by name.

  Scales are chosen so every code path matters: non-zero biases and norm
  scales, a conv that mixes neighbours noticeably, RG-LRU decay rates from
  fast to slow, sharp-ish attention, and logits of a few units (so the
  log-probabilities are far from uniform, and the tanh soft cap is not a no-op,
  without saturating).
  """
  d = fx.hidden_size
  out = {}
  for name, shape in sorted(shapes.items()):
    r = _rng(fx.seed, name)
    leaf = name.rsplit(".", 1)[-1]

    def normal(std, shape=shape, r=r):
      return r.normal(0.0, std, size=shape)

    if name == "embedder.input_embedding":
      # Tied table: with a larger scale the final state stays aligned with the
      # input token's own embedding and every position predicts "repeat".
      v = normal(2.0 / math.sqrt(d))
    elif leaf == "scale":  # RMSNorm, zero-centred
      v = normal(0.2)
    elif ".rg_lru.a_param" in name:
      # Same parametrisation as the reference init (radius r on a ring),
      # wider ring: a = r ** (8 * sigmoid(gate)) spans fast to slow decay.
      u = r.uniform(0.6**2, 0.999**2, size=shape)
      log_r = 0.5 * np.log(u)
      v = np.log(np.exp(-log_r) - 1.0)
    elif ".rg_lru." in name and leaf == "w":  # [H, in, out]
      v = normal(1.0 / math.sqrt(shape[1]))
    elif ".rg_lru." in name and leaf == "b":
      v = normal(0.3)
    elif ".conv_1d.w" in name:
      v = normal(0.4)
    elif ".conv_1d.b" in name:
      v = normal(0.1)
    elif ".mlp_block.ffw_up.w" in name:  # [2, d, m]
      v = normal(1.0 / math.sqrt(shape[1]))
    elif ".mlp_block.ffw_up.b" in name:
      v = normal(0.1)
    elif name.endswith(".proj_q.weight") or name.endswith(".proj_k.weight"):
      v = normal(2.0 / math.sqrt(shape[1]))
    elif name.endswith((".linear_out.weight", ".proj_final.weight",
                        ".ffw_down.weight")):
      # Block outputs larger than the embedding, so the residual stream (and
      # the prediction) depends on the context, not only on the current token.
      v = normal(3.0 / math.sqrt(shape[1]))
    elif leaf == "weight":  # nn.Linear [out, in]
      v = normal(1.0 / math.sqrt(shape[1]))
    elif leaf == "bias":
      v = normal(0.1)
    else:
      raise ValueError(f"no init rule for {name} {shape}")
    # Every value bf16-representable, as in the bf16 checkpoints we serve: the GPU path then runs
    # the same model as the float32 reference, and SPEC.md §8.4 measures the engine's bf16
    # arithmetic, not the loss of rounding a float32 checkpoint (which alone costs an ideal bf16
    # engine ~0.005 mean |dlogprob| and a top-1 flip on these fixtures).
    out[name] = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(shape)).to(
        torch.bfloat16).to(torch.float32)
  return out


# --------------------------------------------------------------------------------------
# Reference <-> HF tensor names (SPEC.md §4.2 / §4.3)
# --------------------------------------------------------------------------------------
def reference_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
  hf = {}

  def put(k, v):
    assert k not in hf, k
    hf[k] = v.detach().to(torch.float32).contiguous().clone()

  for name, t in sd.items():
    if name == "embedder.input_embedding":
      put("model.embed_tokens.weight", t)
      continue
    if name == "final_norm.scale":
      put("model.final_norm.weight", t)
      continue
    parts = name.split(".")
    assert parts[0] == "blocks", name
    i = int(parts[1])
    rest = ".".join(parts[2:])
    p = f"model.layers.{i}."
    if rest in ("temporal_pre_norm.scale", "channel_pre_norm.scale"):
      put(p + rest.replace(".scale", ".weight"), t)
    elif rest == "mlp_block.ffw_up.w":  # [2, d, m], [0] = gelu branch
      put(p + "mlp_block.gate_proj.weight", t[0].T)
      put(p + "mlp_block.up_proj.weight", t[1].T)
    elif rest == "mlp_block.ffw_up.b":  # [2, 1, 1, m]
      put(p + "mlp_block.gate_proj.bias", t[0, 0, 0])
      put(p + "mlp_block.up_proj.bias", t[1, 0, 0])
    elif rest.startswith("mlp_block.ffw_down."):
      put(p + rest.replace("ffw_down", "down_proj"), t)
    elif rest.startswith("recurrent_block."):
      sub = rest[len("recurrent_block."):]
      q = p + "temporal_block."
      if sub.split(".")[0] in ("linear_x", "linear_y", "linear_out"):
        put(q + sub, t)
      elif sub == "conv_1d.w":  # [K, L] -> [L, 1, K], weight[c,0,k] = w[k,c]
        put(q + "conv_1d.weight", t.T.unsqueeze(1))
      elif sub == "conv_1d.b":
        put(q + "conv_1d.bias", t)
      elif sub == "rg_lru.a_param":
        put(q + "rg_lru.recurrent_param", t)
      elif sub == "rg_lru.input_gate.w":
        put(q + "rg_lru.input_gate_weight", t)
      elif sub == "rg_lru.input_gate.b":
        put(q + "rg_lru.input_gate_bias", t)
      elif sub == "rg_lru.a_gate.w":
        put(q + "rg_lru.recurrent_gate_weight", t)
      elif sub == "rg_lru.a_gate.b":
        put(q + "rg_lru.recurrent_gate_bias", t)
      else:
        raise KeyError(name)
    elif rest.startswith("attention_block."):
      sub = rest[len("attention_block."):]
      q = p + "temporal_block."
      m = {"proj_q.weight": "q_proj.weight", "proj_k.weight": "k_proj.weight",
           "proj_v.weight": "v_proj.weight", "proj_final.weight": "o_proj.weight",
           "proj_final.bias": "o_proj.bias"}
      put(q + m[sub], t)
    else:
      raise KeyError(name)
  return hf


def hf_to_reference(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
  """Inverse of reference_to_hf (used to verify the written file)."""
  sd = {}
  gate, up = {}, {}
  for k, t in hf.items():
    if k == "model.embed_tokens.weight":
      sd["embedder.input_embedding"] = t
      continue
    if k == "model.final_norm.weight":
      sd["final_norm.scale"] = t
      continue
    parts = k.split(".")
    i, rest = int(parts[2]), ".".join(parts[3:])
    p = f"blocks.{i}."
    if rest.endswith("_pre_norm.weight"):
      sd[p + rest.replace(".weight", ".scale")] = t
    elif rest.startswith("mlp_block.gate_proj."):
      gate.setdefault(i, {})[parts[-1]] = t
    elif rest.startswith("mlp_block.up_proj."):
      up.setdefault(i, {})[parts[-1]] = t
    elif rest.startswith("mlp_block.down_proj."):
      sd[p + "mlp_block.ffw_down." + parts[-1]] = t
    elif rest.startswith("temporal_block."):
      sub = rest[len("temporal_block."):]
      rec = {"conv_1d.bias": "conv_1d.b", "rg_lru.recurrent_param": "rg_lru.a_param",
             "rg_lru.input_gate_weight": "rg_lru.input_gate.w",
             "rg_lru.input_gate_bias": "rg_lru.input_gate.b",
             "rg_lru.recurrent_gate_weight": "rg_lru.a_gate.w",
             "rg_lru.recurrent_gate_bias": "rg_lru.a_gate.b"}
      att = {"q_proj.weight": "proj_q.weight", "k_proj.weight": "proj_k.weight",
             "v_proj.weight": "proj_v.weight", "o_proj.weight": "proj_final.weight",
             "o_proj.bias": "proj_final.bias"}
      if sub == "conv_1d.weight":
        sd[p + "recurrent_block.conv_1d.w"] = t[:, 0, :].T
      elif sub in rec:
        sd[p + "recurrent_block." + rec[sub]] = t
      elif sub.split(".")[0] in ("linear_x", "linear_y", "linear_out"):
        sd[p + "recurrent_block." + sub] = t
      elif sub in att:
        sd[p + "attention_block." + att[sub]] = t
      else:
        raise KeyError(k)
    else:
      raise KeyError(k)
  for i in gate:
    sd[f"blocks.{i}.mlp_block.ffw_up.w"] = torch.stack([gate[i]["weight"].T, up[i]["weight"].T])
    sd[f"blocks.{i}.mlp_block.ffw_up.b"] = torch.stack(
        [gate[i]["bias"], up[i]["bias"]])[:, None, None, :]
  return sd


def expected_hf_shapes(fx: Fixture) -> dict[str, tuple[int, ...]]:
  """Shapes per SPEC.md §4.3, written independently of the conversion."""
  d, L, H, V = fx.hidden_size, fx.lru_width, fx.num_attention_heads, fx.vocab_size
  m, hd, K = fx.intermediate_size // 2, fx.head_dim, fx.conv1d_width
  s = {"model.embed_tokens.weight": (V, d), "model.final_norm.weight": (d,)}
  for i, bt in enumerate(fx.layer_types):
    p = f"model.layers.{i}."
    s[p + "temporal_pre_norm.weight"] = (d,)
    s[p + "channel_pre_norm.weight"] = (d,)
    for n in ("gate_proj", "up_proj"):
      s[p + f"mlp_block.{n}.weight"] = (m, d)
      s[p + f"mlp_block.{n}.bias"] = (m,)
    s[p + "mlp_block.down_proj.weight"] = (d, m)
    s[p + "mlp_block.down_proj.bias"] = (d,)
    q = p + "temporal_block."
    if bt == "recurrent":
      for n in ("linear_x", "linear_y"):
        s[q + n + ".weight"] = (L, d)
        s[q + n + ".bias"] = (L,)
      s[q + "linear_out.weight"] = (d, L)
      s[q + "linear_out.bias"] = (d,)
      s[q + "conv_1d.weight"] = (L, 1, K)
      s[q + "conv_1d.bias"] = (L,)
      s[q + "rg_lru.recurrent_param"] = (L,)
      for n in ("input_gate", "recurrent_gate"):
        s[q + f"rg_lru.{n}_weight"] = (H, L // H, L // H)
        s[q + f"rg_lru.{n}_bias"] = (H, L // H)
    else:
      s[q + "q_proj.weight"] = (H * hd, d)
      s[q + "k_proj.weight"] = (fx.num_key_value_heads * hd, d)
      s[q + "v_proj.weight"] = (fx.num_key_value_heads * hd, d)
      s[q + "o_proj.weight"] = (d, H * hd)
      s[q + "o_proj.bias"] = (d,)
  return s


def hf_config(fx: Fixture) -> dict:
  return {
      "architectures": ["RecurrentGemmaForCausalLM"],
      "model_type": "recurrent_gemma",
      "hidden_size": fx.hidden_size,
      "intermediate_size": fx.intermediate_size,
      "num_hidden_layers": fx.num_hidden_layers,
      "num_attention_heads": fx.num_attention_heads,
      "num_key_value_heads": fx.num_key_value_heads,
      "head_dim": fx.head_dim,
      "lru_width": fx.lru_width,
      "vocab_size": fx.vocab_size,
      "attention_window_size": fx.attention_window_size,
      "conv1d_width": fx.conv1d_width,
      "logits_soft_cap": fx.logits_soft_cap,
      "partial_rotary_factor": fx.partial_rotary_factor,
      "rope_theta": fx.rope_theta,
      "rms_norm_eps": fx.rms_norm_eps,
      "embeddings_scale_by_sqrt_dim": True,
      "hidden_activation": "gelu_pytorch_tanh",
      "attention_bias": False,
      "attention_dropout": 0.0,
      "block_types": list(fx.block_types),
      "_block_types": list(fx.block_types),
      "pad_token_id": PAD,
      "eos_token_id": EOS,
      "bos_token_id": BOS,
      "tie_word_embeddings": True,
      "torch_dtype": "float32",
  }


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
TOKENIZER_TEXTS = ("/usr/share/common-licenses/Apache-2.0",
                   "/usr/share/common-licenses/GPL-3")
TOKENIZER_PROBES = (
    "Hello world",
    "The Licensor grants You a perpetual, worldwide, royalty-free license.",
    "  leading spaces,  double  spaces and a trailing space ",
    "line one\nline two\n\ttabbed",
    "Numbers: 2048, 3.14159 and 1e-6.",
    "naïve café — “quotes” ½ ß",
    "日本語のテキスト and emoji 🦀🚀",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "",
    "a",
)


def train_tokenizer(vocab_size: int, out_dir: str) -> dict:
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel

  lines, digests = [], {}
  for path in TOKENIZER_TEXTS:
    with open(path, "rb") as f:
      data = f.read()
    digests[path] = hashlib.sha256(data).hexdigest()
    lines.extend(l for l in data.decode("utf-8").splitlines() if l.strip())
  buf = io.BytesIO()
  # Gemma-like settings: BPE, byte fallback, no normalisation, no dummy prefix,
  # whitespace kept, digits split, two user-defined chat markers.
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=buf,
      vocab_size=vocab_size, model_type="bpe",
      pad_id=PAD, eos_id=EOS, bos_id=BOS, unk_id=UNK,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
      user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
      byte_fallback=True, character_coverage=1.0,
      normalization_rule_name="identity", add_dummy_prefix=False,
      remove_extra_whitespaces=False, split_digits=True,
      allow_whitespace_only_pieces=True, split_by_whitespace=True,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      max_sentence_length=100000, minloglevel=2)
  model_bytes = buf.getvalue()
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
    f.write(model_bytes)

  sp = spm.SentencePieceProcessor(model_proto=model_bytes)
  assert sp.get_piece_size() == vocab_size, sp.get_piece_size()
  assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (PAD, EOS, BOS, UNK)
  probes = []
  for text in TOKENIZER_PROBES:
    ids = sp.encode(text, out_type=int)
    assert sp.decode(ids) == text, (text, sp.decode(ids))
    assert UNK not in ids, text
    probes.append({"text": text, "ids": ids,
                   "pieces": [sp.id_to_piece(i) for i in ids]})
  golden = {
      "comment": "python sentencepiece encode(text) of tokenizer.model; no BOS added. "
                 "decode(ids) == text for every entry.",
      "sentencepiece_version": spm.__version__,
      "training_text_sha256": digests,
      "vocab_size": vocab_size,
      "probes": probes,
  }
  with open(os.path.join(out_dir, "tokenizer_golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f, ensure_ascii=False, indent=1)
    f.write("\n")
  return golden


# --------------------------------------------------------------------------------------
# Running the reference
# --------------------------------------------------------------------------------------
def ref_forward(model, tokens: torch.Tensor, start: int = 0, cache=None):
  """tokens: [T] int. Returns (logits [T, V] float32, cache)."""
  t = tokens.shape[0]
  toks = tokens[None].to(torch.int32)
  pos = torch.arange(start, start + t, dtype=torch.int32)[None]
  logits, new_cache = model(toks, pos, cache=cache, return_logits=True,
                            return_cache=True)
  return logits[0], new_cache


def sampler_style_logprobs(model, tokens: torch.Tensor, n_prefill: int) -> torch.Tensor:
  """Prefill tokens[:n] with cache=None, then decode tokens[n:] one at a time."""
  rows = []
  logits, cache = ref_forward(model, tokens[:n_prefill])
  rows.append(logits)
  for t in range(n_prefill, tokens.shape[0]):
    logits, cache = ref_forward(model, tokens[t:t + 1], start=t, cache=cache)
    rows.append(logits)
  return torch.log_softmax(torch.cat(rows, 0).double(), -1)


def hf_check(folder: str, fx: Fixture, seqs, golden_lp, narrow_lp=None) -> str:
  """Second opinion from transformers' RecurrentGemmaForCausalLM (never fatal).

  Compared on positions t < window, where every query sees its whole past
  under both window conventions (reference: self + window previous keys; HF:
  self + window-1). All positions for attention-free fixtures. The full-length
  difference is also reported: for attention fixtures it is expected to be
  large (HF's narrower window), and HF is also compared at all positions with
  the reference run with attention_window_size - 1 (`narrow_lp`).
  """
  try:
    import transformers  # pylint: disable=import-outside-toplevel
    from transformers import RecurrentGemmaForCausalLM  # pylint: disable=import-outside-toplevel
  except Exception as e:  # pylint: disable=broad-except
    return f"HF skipped (transformers not importable: {type(e).__name__})"
  try:
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = RecurrentGemmaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    has_attn = "attention" in fx.block_types
    n = fx.attention_window_size if has_attn else None
    inside = full = narrow = 0.0
    with torch.no_grad():
      for j, (toks, lp) in enumerate(zip(seqs, golden_lp)):
        t = toks.shape[0]
        out = model(input_ids=toks[None].long(), position_ids=torch.arange(t)[None],
                    use_cache=False)
        d = (torch.log_softmax(out.logits[0].double(), -1) - lp.double()).abs()
        inside = max(inside, d[:n].max().item())
        full = max(full, d.max().item())
        if narrow_lp is not None:
          hf_lp = torch.log_softmax(out.logits[0].double(), -1)
          narrow = max(narrow, (hf_lp - narrow_lp[j].double()).abs().max().item())
    where = f"t<{n}" if has_attn else "all t"
    extra = (f", all t {full:.2e}; HF vs reference(window-1) all t {narrow:.2e}"
             if has_attn else "")
    return f"HF transformers {transformers.__version__} max|dlp| {where} {inside:.2e}{extra}"
  except Exception as e:  # pylint: disable=broad-except
    return f"HF failed to run ({type(e).__name__}: {str(e)[:160]})"


def prefill_points(t: int, w: int) -> list[int]:
  pts = {1, 2, 3, 4, w - 1, w, w + 1, 2 * w + 1, t // 2, t - 1}
  return sorted(p for p in pts if 1 <= p <= t - 1)


def build_reference(rg, common, fx: Fixture, **overrides):
  bt_map = {"recurrent": common.TemporalBlockType.RECURRENT,
            "attention": common.TemporalBlockType.ATTENTION}
  kw = dict(
      vocab_size=fx.vocab_size, width=fx.hidden_size,
      mlp_expanded_width=fx.intermediate_size // 2,
      num_heads=fx.num_attention_heads,
      block_types=tuple(bt_map[b] for b in fx.layer_types),
      embeddings_scale_by_sqrt_dim=True,
      attention_window_size=fx.attention_window_size,
      logits_soft_cap=fx.logits_soft_cap, lru_width=fx.lru_width,
      scan_type=common.ScanType.LINEAR_NATIVE)
  kw.update(overrides)
  model = rg.Griffin(common.GriffinConfig(**kw), gradient_checkpointing=False,
                     dtype=torch.float32)
  model.eval()
  return model


def sensitivity(rg, common, fx: Fixture, params, seqs, golden_lp) -> str:
  """How far the golden is from near-miss variants (so a test at 1e-4 can
  tell them apart). Not saved."""
  variants = {"no softcap": dict(logits_soft_cap=0.0)}
  if "attention" in fx.block_types:
    variants["window-1"] = dict(attention_window_size=fx.attention_window_size - 1)
  notes, lps = [], {}
  with torch.no_grad():
    for label, ov in variants.items():
      m = build_reference(rg, common, fx, **ov)
      m.load_state_dict(params, strict=True)
      worst = 0.0
      lps[label] = []
      for toks, lp in zip(seqs, golden_lp):
        other = torch.log_softmax(ref_forward(m, toks)[0], -1)
        lps[label].append(other)
        worst = max(worst, (other - lp).abs().max().item())
      notes.append(f"{label} {worst:.2f}")
  return "sensitivity max|dlp|: " + ", ".join(notes), lps


def make_fixture(rg, common, fx: Fixture, out_root: str, run_hf: bool) -> str:
  folder = os.path.join(out_root, fx.name)
  os.makedirs(folder, exist_ok=True)
  torch.manual_seed(fx.seed)  # only the throw-away reference init uses it

  # Tokenizer first (griffin only): the model vocab must equal its size.
  tok_note = ""
  if fx.tokenizer:
    g = train_tokenizer(fx.vocab_size, folder)
    tok_note = f", tokenizer {g['vocab_size']} pieces"

  model = build_reference(rg, common, fx)
  shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
  params = random_reference_params(fx, shapes)
  model.load_state_dict(params, strict=True)

  # ---- HF checkpoint ----
  hf_sd = reference_to_hf(model.state_dict())
  exp = expected_hf_shapes(fx)
  assert set(hf_sd) == set(exp), sorted(set(hf_sd) ^ set(exp))
  for k, s in exp.items():
    assert tuple(hf_sd[k].shape) == s, (k, tuple(hf_sd[k].shape), s)
  save_file(hf_sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  os.chmod(os.path.join(folder, "model.safetensors"), 0o644)
  with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config(fx), f, indent=2)
    f.write("\n")
  back = hf_to_reference(load_file(os.path.join(folder, "model.safetensors")))
  ref_sd = model.state_dict()
  assert set(back) == set(ref_sd)
  for k in ref_sd:
    assert torch.equal(back[k], ref_sd[k]), k

  # ---- golden sequences ----
  rs = np.random.RandomState(fx.seed + 7)
  seqs, golden_lp, golden = [], [], {}
  # float64 twin of the reference (same values). NB: the reference hard-codes
  # float32 for the attention softmax and the RG-LRU scan accumulator, so this
  # is "float64 except those", still ~10x closer to exact than the fp32 run.
  model64 = build_reference(rg, common, fx).double()
  model64.load_state_dict({k: v.double() for k, v in params.items()}, strict=True)

  worst_dec32 = worst_dec64 = worst_64 = 0.0
  with torch.no_grad():
    for k, t in enumerate(fx.seq_lens):
      if "attention" in fx.block_types:  # hawk's window is unused
        assert t >= 3 * fx.attention_window_size and t % fx.attention_window_size, (fx.name, t)
      ids = rs.randint(3, fx.vocab_size, size=t).astype(np.int32)
      ids[0] = BOS
      toks = torch.from_numpy(ids)
      logits, _ = ref_forward(model, toks)
      lp = torch.log_softmax(logits, -1)  # float32, as saved
      assert torch.isfinite(lp).all()
      seqs.append(toks)
      golden_lp.append(lp)
      golden[f"tokens.{k}"] = toks.clone()
      golden[f"logprobs.{k}"] = lp.to(torch.float32).contiguous()

      lp32 = torch.log_softmax(logits.double(), -1)
      lp64 = torch.log_softmax(ref_forward(model64, toks)[0], -1)
      worst_64 = max(worst_64, (lp32 - lp64).abs().max().item())
      for n in prefill_points(t, fx.attention_window_size):
        d32 = (sampler_style_logprobs(model, toks, n) - lp32).abs().max().item()
        d64 = (sampler_style_logprobs(model64, toks, n) - lp64).abs().max().item()
        worst_dec32, worst_dec64 = max(worst_dec32, d32), max(worst_dec64, d64)
        if d64 > DECODE_TOL or d32 > DECODE_TOL_FP32:
          raise AssertionError(f"{fx.name} seq {k}: decode path differs from forward "
                               f"by {d64:.3e} (float64) / {d32:.3e} (float32), prefill {n}")
  if worst_64 > FP32_NOISE_TOL:
    raise AssertionError(f"{fx.name}: fp32 golden is {worst_64:.2e} from the fp64 run; "
                         "too ill-conditioned for a 1e-4 engine test")
  save_file(golden, os.path.join(folder, "golden.safetensors"),
            # One key only: safetensors writes metadata keys in hash order, and
            # the files must be byte-reproducible.
            metadata={"description": "logprobs.k[t] = log_softmax(softcapped logits) after "
                                     "tokens.k[0..t]; google-deepmind/recurrentgemma torch "
                                     f"reference @ {REFERENCE_COMMIT}, float32 forward"})
  os.chmod(os.path.join(folder, "golden.safetensors"), 0o644)

  # ---- summary statistics ----
  all_lp = torch.cat(golden_lp, 0).double()
  p = all_lp.exp()
  ent = -(p * all_lp).sum(-1) / math.log(fx.vocab_size)
  top1 = p.max(-1).values
  sens, variant_lps = sensitivity(rg, common, fx, params, seqs, golden_lp)
  hf_note = (hf_check(folder, fx, seqs, golden_lp, variant_lps.get("window-1"))
             if run_hf else "HF not run (--no-hf)")
  return (f"{fx.name}: layers {''.join(b[0].upper() for b in fx.layer_types)}, V={fx.vocab_size}, "
          f"T={list(fx.seq_lens)}, logprob range [{all_lp.min().item():.2f}, "
          f"{all_lp.max().item():.3f}] (max|lp| {all_lp.abs().max().item():.2f}), "
          f"entropy/lnV mean {ent.mean().item():.2f} [{ent.min().item():.2f},{ent.max().item():.2f}], "
          f"top1 p mean {top1.mean().item():.2f} max {top1.max().item():.2f}; "
          f"decode-vs-forward max {worst_dec32:.2e} (fp32) {worst_dec64:.2e} (fp64); "
          f"golden fp32-vs-fp64 {worst_64:.2e}; {hf_note}; {sens}{tok_note}")


# --------------------------------------------------------------------------------------
# The bundled demo model on real text (tests/data/demo_parity/)
# --------------------------------------------------------------------------------------
DEMO_MODEL = os.path.join("models", "demo")
DEMO_TEXT = os.path.join("tests", "data", "demo_parity", "text.txt")
DEMO_ROW_STRIDE = 4


def make_demo_golden(rg, common, root: str, out_dir: str) -> str:
  """The reference's float32 log-probabilities of the trained bundled model (models/demo, bf16
  weights widened exactly to float32) on tests/data/demo_parity/text.txt, BOS + the python
  sentencepiece ids of the text: what KER-4, the bf16-emulation check and the GPU parity tests
  compare the engine with. Also measures how far float32 itself is from a float64 twin, which
  bounds the tolerance an engine test can ask for."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel

  model_dir = os.path.join(root, DEMO_MODEL)
  with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
    cfg = json.load(f)
  pattern = cfg.get("_block_types") or cfg["block_types"]
  layers = [pattern[i % len(pattern)] for i in range(cfg["num_hidden_layers"])]
  bt_map = {"recurrent": common.TemporalBlockType.RECURRENT,
            "attention": common.TemporalBlockType.ATTENTION}
  config = common.GriffinConfig(
      vocab_size=cfg["vocab_size"], width=cfg["hidden_size"],
      mlp_expanded_width=cfg["intermediate_size"] // 2, num_heads=cfg["num_attention_heads"],
      block_types=tuple(bt_map[b] for b in layers), embeddings_scale_by_sqrt_dim=True,
      attention_window_size=cfg["attention_window_size"],
      logits_soft_cap=cfg["logits_soft_cap"], lru_width=cfg["lru_width"],
      scan_type=common.ScanType.LINEAR_NATIVE)
  hf = {k: v.to(torch.float32) for k, v in load_file(os.path.join(model_dir,
                                                                   "model.safetensors")).items()}
  params = hf_to_reference(hf)
  model = rg.Griffin(config, gradient_checkpointing=False, dtype=torch.float32)
  model.load_state_dict(params, strict=True)
  model.eval()
  model64 = rg.Griffin(config, gradient_checkpointing=False, dtype=torch.float32).double()
  model64.load_state_dict({k: v.double() for k, v in params.items()}, strict=True)
  model64.eval()

  sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
  with open(os.path.join(root, DEMO_TEXT), encoding="utf-8") as f:
    text = f.read()
  ids = [cfg["bos_token_id"]] + sp.encode(text, out_type=int)
  toks = torch.tensor(ids, dtype=torch.int32)
  with torch.no_grad():
    lp = torch.log_softmax(ref_forward(model, toks)[0], -1)
    lp64 = torch.log_softmax(ref_forward(model64, toks)[0], -1)
    # The reference's own decode path agrees with its forward (prefill half, decode the rest).
    half = sampler_style_logprobs(model, toks, len(ids) // 2)
  assert torch.isfinite(lp).all()
  targets = toks[1:].long()
  nll = -lp[:-1].double().gather(1, targets[:, None])[:, 0]
  nll64 = -lp64[:-1].gather(1, targets[:, None])[:, 0]
  ce, ce64 = nll.mean().item(), nll64.mean().item()
  noise = (lp.double() - lp64).abs()
  decode = (half - lp.double()).abs().max().item()
  if noise.max().item() > 1e-3 or decode > 1e-3:
    raise AssertionError(f"demo: float32 reference too noisy (fp64 {noise.max().item():.2e}, "
                         f"decode {decode:.2e})")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "golden.safetensors")
  # Every DEMO_ROW_STRIDE-th position's full row (the GPU metric averages over the vocabulary)
  # and every position's next-token log-probability (KER-4): 4.7 MB instead of 18.5, so the
  # repository plus a bundle of GPU binaries still fits the device tool's 64 MiB.
  positions = torch.arange(0, len(ids), DEMO_ROW_STRIDE, dtype=torch.int32)
  next_lp = torch.zeros(len(ids), dtype=torch.float32)
  next_lp[:-1] = lp[:-1].gather(1, targets[:, None])[:, 0].to(torch.float32)
  save_file({"tokens.0": toks.clone(),
             "logprobs.0": lp[positions.long()].to(torch.float32).contiguous(),
             "positions.0": positions, "next_logprobs.0": next_lp}, path,
            metadata={"description": "logprobs.0[r] = log_softmax(softcapped logits) after "
                                     "tokens.0[0..positions.0[r]] of models/demo on text.txt "
                                     "(BOS + python sentencepiece ids); next_logprobs.0[t] = that "
                                     "row's value at tokens.0[t+1], every t; "
                                     "google-deepmind/recurrentgemma torch "
                                     f"reference @ {REFERENCE_COMMIT}, float32 forward"})
  os.chmod(path, 0o644)
  return (f"demo: T={len(ids)}, V={cfg['vocab_size']}, cross-entropy {ce:.6f} nats/token "
          f"(float64 twin {ce64:.6f}, |d| {abs(ce - ce64):.2e}); fp32-vs-fp64 max|dlp| "
          f"{noise.max().item():.2e} mean {noise.mean().item():.2e}; max|dlp| on the predicted "
          f"tokens {(nll - nll64).abs().max().item():.2e}; decode-vs-forward {decode:.2e}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--reference", required=True,
                  help="folder holding the reference's recurrentgemma/ package "
                       f"(google-deepmind/recurrentgemma @ {REFERENCE_COMMIT})")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "..", "data"),
                  help="output root (default: tests/data next to this script)")
  ap.add_argument("--only", nargs="*",
                  help="fixture names to (re)generate: griffin, hawk, attnfirst, demo")
  ap.add_argument("--no-hf", action="store_true", help="skip the optional HF check")
  args = ap.parse_args()

  torch.set_num_threads(1)  # deterministic float32 reductions
  torch.use_deterministic_algorithms(True)
  rg, common = import_reference(args.reference)
  summaries = []
  for fx in FIXTURES:
    if args.only and fx.name not in args.only:
      continue
    summaries.append(make_fixture(rg, common, fx, os.path.abspath(args.out), not args.no_hf))
  if not args.only or "demo" in args.only:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    summaries.append(make_demo_golden(rg, common, root,
                                      os.path.join(os.path.abspath(args.out), "demo_parity")))
  print()
  for s in summaries:
    print(s)


if __name__ == "__main__":
  main()
