"""Model configuration, presets and the Hugging Face config.json mapping."""

from __future__ import annotations

import dataclasses
import json
import math

PAD, EOS, BOS, UNK = 0, 1, 2, 3


@dataclasses.dataclass
class ModelConfig:
  vocab_size: int = 8192
  width: int = 256
  num_layers: int = 6
  num_heads: int = 4             # attention heads and RG-LRU gate blocks
  lru_width: int | None = None   # default: width
  mlp_width: int | None = None   # per GeGLU branch; default 3 * width
  window: int = 512              # a query sees itself and `window` earlier tokens
  block_types: tuple = ("recurrent", "recurrent", "attention")  # cycled over the layers
  num_kv_heads: int = 1
  conv_width: int = 4
  logits_soft_cap: float = 30.0
  rope_theta: float = 10000.0
  partial_rotary_factor: float = 0.5
  rms_norm_eps: float = 1e-6
  embeddings_scale_by_sqrt_dim: bool = True

  def __post_init__(self):
    self.block_types = tuple(self.block_types)
    if self.lru_width is None:
      self.lru_width = self.width
    if self.mlp_width is None:
      self.mlp_width = 3 * self.width
    assert self.width % self.num_heads == 0, "width must be a multiple of num_heads"
    assert self.lru_width % self.num_heads == 0, "lru_width must be a multiple of num_heads"
    assert self.num_heads % self.num_kv_heads == 0

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def layer_types(self) -> list[str]:
    return [self.block_types[i % len(self.block_types)] for i in range(self.num_layers)]

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["block_types"] = list(self.block_types)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  # ---- parameter count and FLOPs ------------------------------------------------------------
  def num_params(self) -> int:
    d, m, L, H, K = self.width, self.mlp_width, self.lru_width, self.num_heads, self.conv_width
    hd, kv = self.head_dim, self.num_kv_heads
    n = self.vocab_size * d + d  # tied embedding + final norm
    for t in self.layer_types:
      n += 2 * d + 2 * (d * m + m) + (m * d + d)
      if t == "recurrent":
        n += 2 * (d * L + L) + (L * d + d) + (K * L + L) + L + 2 * (H * (L // H) ** 2 + L)
      else:
        n += d * H * hd + 2 * d * kv * hd + H * hd * d + d
    return n

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul weights, incl. the tied output projection) plus
    attention scores and values (12 x layers x H*hd x mean visible keys), as in PaLM's MFU."""
    d, m, L, H = self.width, self.mlp_width, self.lru_width, self.num_heads
    hd, kv = self.head_dim, self.num_kv_heads
    w = self.vocab_size * d
    att = 0.0
    w_vis = min(self.window + 1, seq_len)
    # mean number of visible keys per query over a sequence of seq_len
    mean_keys = (w_vis * (w_vis + 1) / 2 + (seq_len - w_vis) * w_vis) / seq_len
    for t in self.layer_types:
      w += 3 * d * m
      if t == "recurrent":
        w += 3 * d * L + 2 * H * (L // H) ** 2
      else:
        w += 2 * d * H * hd + 2 * d * kv * hd
        att += 12 * H * hd * mean_keys  # QK and PV, forward + backward, visible keys only
    return 6.0 * w + att

  # ---- Hugging Face config.json ---------------------------------------------------------------
  def hf_config(self, torch_dtype: str = "float32") -> dict:
    return {
        "architectures": ["RecurrentGemmaForCausalLM"],
        "model_type": "recurrent_gemma",
        "hidden_size": self.width,
        "intermediate_size": 2 * self.mlp_width,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "lru_width": self.lru_width,
        "vocab_size": self.vocab_size,
        "attention_window_size": self.window,
        "conv1d_width": self.conv_width,
        "logits_soft_cap": self.logits_soft_cap,
        "partial_rotary_factor": self.partial_rotary_factor,
        "rope_theta": self.rope_theta,
        "rms_norm_eps": self.rms_norm_eps,
        "embeddings_scale_by_sqrt_dim": self.embeddings_scale_by_sqrt_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "block_types": list(self.block_types),
        "_block_types": list(self.block_types),
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        "bos_token_id": BOS,
        "tie_word_embeddings": True,
        "torch_dtype": torch_dtype,
    }

  @classmethod
  def from_hf(cls, c: dict) -> "ModelConfig":
    return cls(vocab_size=c["vocab_size"], width=c["hidden_size"],
               num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
               lru_width=c.get("lru_width") or c["hidden_size"],
               mlp_width=c["intermediate_size"] // 2, window=c["attention_window_size"],
               block_types=tuple(c.get("_block_types") or c["block_types"]),
               num_kv_heads=c.get("num_key_value_heads") or 1,
               conv_width=c.get("conv1d_width", 4),
               logits_soft_cap=c.get("logits_soft_cap") or 0.0,
               rope_theta=c.get("rope_theta", 10000.0),
               partial_rotary_factor=c.get("partial_rotary_factor", 0.5),
               rms_norm_eps=c.get("rms_norm_eps", 1e-6),
               embeddings_scale_by_sqrt_dim=c.get("embeddings_scale_by_sqrt_dim", True))


ARCHS = {
    "griffin": ("recurrent", "recurrent", "attention"),
    "hawk": ("recurrent",),
    "mqa": ("attention",),
}


def make_config(arch: str, **kw) -> ModelConfig:
  kw = {k: v for k, v in kw.items() if v is not None}
  return ModelConfig(block_types=ARCHS[arch], **kw)


def match_params(arch: str, target: int, **kw) -> ModelConfig:
  """The config of `arch` whose MLP width (a multiple of 32, or of width/8 for small widths) brings the parameter count closest
  to `target` (the paper compares models at equal parameters by changing the MLP)."""
  best = None
  base = make_config(arch, **kw)
  step = max(8, min(32, base.width // 8))
  for m in range(step, 16 * base.width + 1, step):
    c = dataclasses.replace(base, mlp_width=m)
    err = abs(c.num_params() - target)
    if best is None or err < best[0]:
      best = (err, c)
  return best[1]


def dumps(d: dict) -> str:
  return json.dumps(d, indent=2) + "\n"


def bf16_round(x: float) -> float:
  """Round a float to the nearest bfloat16 (ties to even), as torch does."""
  import torch  # pylint: disable=import-outside-toplevel
  return float(torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).float())


def embedding_scale(c: ModelConfig) -> float:
  return bf16_round(math.sqrt(c.width)) if c.embeddings_scale_by_sqrt_dim else 1.0
