"""Griffin / Hawk / MQA-Transformer in PyTorch with the reference numerics (SPEC.md §2).

Module and parameter names are the Hugging Face RecurrentGemma names (SPEC.md §4.3), so the
state dict *is* the exported checkpoint (export.py only drops nothing and casts).

Inputs are `tokens` [B, T] and `positions` [B, T] (position inside the document; 0 starts a
document). Packed documents: the RG-LRU state is reset (a = 0, multiplier 1) where position == 0,
conv taps never cross a document start, attention sees only its own document's tokens, at most
`window` of them before itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import scan as scan_lib
from .config import ModelConfig, embedding_scale

_MAX_SQRT_GRADIENT = 1000.0


class _SqrtBoundDerivative(torch.autograd.Function):
  """sqrt with its gradient clipped at 1000 (the reference's SqrtBoundDerivative)."""

  @staticmethod
  def forward(ctx, x):  # pylint: disable=arguments-differ
    ctx.save_for_backward(x)
    return torch.sqrt(x)

  @staticmethod
  def backward(ctx, g):  # pylint: disable=arguments-differ
    (x,) = ctx.saved_tensors
    clipped = torch.clamp(x, min=1.0 / (_MAX_SQRT_GRADIENT ** 2))
    return g / torch.sqrt(clipped) / 2.0


def gelu_tanh(x):
  return F.gelu(x, approximate="tanh")


def segment_ids(positions: torch.Tensor) -> torch.Tensor:
  """Document index of every token: cumsum of document starts (position == 0)."""
  return torch.cumsum((positions == 0).to(torch.int32), dim=1)


class RMSNorm(nn.Module):

  def __init__(self, d: int, eps: float):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.zeros(d))  # zero-centred: multiplier is 1 + weight

  def forward(self, x):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight.float())
    return y.to(x.dtype)


class MLPBlock(nn.Module):

  def __init__(self, c: ModelConfig):
    super().__init__()
    self.gate_proj = nn.Linear(c.width, c.mlp_width)   # gelu branch (reference ffw_up[0])
    self.up_proj = nn.Linear(c.width, c.mlp_width)     # linear branch (ffw_up[1])
    self.down_proj = nn.Linear(c.mlp_width, c.width)

  def forward(self, x):
    return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


class Conv1D(nn.Module):
  """Causal depthwise conv; weight [L, 1, K] with weight[:, 0, K-1] on the current token."""

  def __init__(self, L: int, K: int):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(L, 1, K))
    self.bias = nn.Parameter(torch.zeros(L))

  def forward(self, x, seg):
    B, T, L = x.shape
    w = self.weight[:, 0, :].to(x.dtype)
    K = w.shape[1]
    out = x * w[:, K - 1]
    for s in range(1, K):
      if s >= T:
        break
      shifted = F.pad(x[:, :-s], (0, 0, s, 0))
      same = F.pad((seg[:, s:] == seg[:, :-s]), (s, 0), value=False)  # seg[t] == seg[t-s]
      out = out + shifted * w[:, K - 1 - s] * same[..., None].to(x.dtype)
    return out + self.bias.to(x.dtype)


class RGLRU(nn.Module):

  def __init__(self, L: int, H: int, scan_backend: str = "auto"):
    super().__init__()
    self.H = H
    bw = L // H
    self.recurrent_param = nn.Parameter(torch.empty(L))
    self.input_gate_weight = nn.Parameter(torch.empty(H, bw, bw))   # [head, in, out]
    self.input_gate_bias = nn.Parameter(torch.zeros(H, bw))
    self.recurrent_gate_weight = nn.Parameter(torch.empty(H, bw, bw))
    self.recurrent_gate_bias = nn.Parameter(torch.zeros(H, bw))
    self.scan_backend = scan_backend

  def forward(self, c, positions):
    B, T, L = c.shape
    cb = c.reshape(B, T, self.H, L // self.H)
    gx = torch.einsum("bthi,hij->bthj", cb, self.input_gate_weight.to(c.dtype))
    ga = torch.einsum("bthi,hij->bthj", cb, self.recurrent_gate_weight.to(c.dtype))
    acc = torch.promote_types(c.dtype, torch.float32)  # float32 (float64 in tests)
    gx = (gx.to(acc) + self.input_gate_bias.to(acc)).reshape(B, T, L)
    ga = (ga.to(acc) + self.recurrent_gate_bias.to(acc)).reshape(B, T, L)
    log_a = -8.0 * torch.sigmoid(ga) * F.softplus(self.recurrent_param.to(acc))
    a = torch.exp(log_a)
    a_sq = torch.exp(2.0 * log_a)
    gated = c.to(acc) * torch.sigmoid(gx)
    reset = (positions == 0)[..., None]
    mult = torch.where(reset, torch.ones_like(a_sq), _SqrtBoundDerivative.apply(1.0 - a_sq))
    xn = gated * mult
    a_eff = torch.where(reset, torch.zeros_like(a), a)
    h = scan_lib.linear_scan(a_eff, xn, self.scan_backend)   # float32 state
    return h.to(c.dtype)


class RecurrentBlock(nn.Module):

  def __init__(self, c: ModelConfig, scan_backend: str):
    super().__init__()
    self.linear_y = nn.Linear(c.width, c.lru_width)
    self.linear_x = nn.Linear(c.width, c.lru_width)
    self.linear_out = nn.Linear(c.lru_width, c.width)
    self.conv_1d = Conv1D(c.lru_width, c.conv_width)
    self.rg_lru = RGLRU(c.lru_width, c.num_heads, scan_backend)

  def forward(self, x, positions, seg):
    y = gelu_tanh(self.linear_y(x))
    xb = self.linear_x(x)
    conv = self.conv_1d(xb, seg)
    h = self.rg_lru(conv, positions)
    return self.linear_out(h * y)


def apply_rope(x, positions, rotary_dim: int, theta: float):
  """x: [B, T, heads, hd]; NeoX rotate-half on the first rotary_dim dims (SPEC.md §2.5)."""
  half = rotary_dim // 2
  inv = 1.0 / theta ** (torch.arange(half, device=x.device, dtype=torch.float32) * 2 / rotary_dim)
  ang = positions.float()[..., None] * inv          # [B, T, half]
  sin = torch.sin(ang).to(x.dtype)[:, :, None, :]
  cos = torch.cos(ang).to(x.dtype)[:, :, None, :]
  first, second, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
  return torch.cat([first * cos - second * sin, second * cos + first * sin, rest], -1)


class LocalAttentionBlock(nn.Module):

  def __init__(self, c: ModelConfig):
    super().__init__()
    self.c = c
    H, KV, hd = c.num_heads, c.num_kv_heads, c.head_dim
    self.q_proj = nn.Linear(c.width, H * hd, bias=False)
    self.k_proj = nn.Linear(c.width, KV * hd, bias=False)
    self.v_proj = nn.Linear(c.width, KV * hd, bias=False)
    self.o_proj = nn.Linear(H * hd, c.width, bias=True)

  def forward(self, x, positions, seg, mask):
    c = self.c
    B, T, _ = x.shape
    H, KV, hd = c.num_heads, c.num_kv_heads, c.head_dim
    rot = int(hd * c.partial_rotary_factor)
    q = apply_rope(self.q_proj(x).view(B, T, H, hd), positions, rot, c.rope_theta)
    k = apply_rope(self.k_proj(x).view(B, T, KV, hd), positions, rot, c.rope_theta)
    v = self.v_proj(x).view(B, T, KV, hd)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if KV != H:
      k = k.repeat_interleave(H // KV, dim=1)
      v = v.repeat_interleave(H // KV, dim=1)
    if mask is None:  # one document per row, window covers the sequence: plain causal
      o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=hd ** -0.5)
    else:
      o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=hd ** -0.5)
    return self.o_proj(o.transpose(1, 2).reshape(B, T, H * hd))


class ResidualBlock(nn.Module):

  def __init__(self, c: ModelConfig, kind: str, scan_backend: str):
    super().__init__()
    self.kind = kind
    self.temporal_pre_norm = RMSNorm(c.width, c.rms_norm_eps)
    self.channel_pre_norm = RMSNorm(c.width, c.rms_norm_eps)
    if kind == "recurrent":
      self.temporal_block = RecurrentBlock(c, scan_backend)
    else:
      self.temporal_block = LocalAttentionBlock(c)
    self.mlp_block = MLPBlock(c)

  def forward(self, x, positions, seg, mask):
    h = self.temporal_pre_norm(x)
    if self.kind == "recurrent":
      t = self.temporal_block(h, positions, seg)
    else:
      t = self.temporal_block(h, positions, seg, mask)
    x = x + t
    return x + self.mlp_block(self.channel_pre_norm(x))


class Backbone(nn.Module):

  def __init__(self, c: ModelConfig, scan_backend: str):
    super().__init__()
    self.embed_tokens = nn.Embedding(c.vocab_size, c.width)
    self.layers = nn.ModuleList(ResidualBlock(c, t, scan_backend) for t in c.layer_types)
    self.final_norm = RMSNorm(c.width, c.rms_norm_eps)


class GriffinLM(nn.Module):

  def __init__(self, c: ModelConfig, scan_backend: str = "auto"):
    super().__init__()
    self.config = c
    self.model = Backbone(c, scan_backend)
    self.emb_scale = embedding_scale(c)
    self.reset_parameters()

  def set_scan_backend(self, name: str):
    for m in self.modules():
      if isinstance(m, RGLRU):
        m.scan_backend = name

  @torch.no_grad()
  def reset_parameters(self, seed: int | None = None):
    c = self.config
    g = torch.Generator().manual_seed(seed) if seed is not None else None

    def normal_(p, std):
      p.copy_(torch.randn(p.shape, generator=g) * std)

    final_scale = 2.0 / c.num_layers
    normal_(self.model.embed_tokens.weight, 1.0 / math.sqrt(c.width))
    for layer in self.model.layers:
      for name, p in layer.named_parameters():
        if p.dim() == 1 and "recurrent_param" not in name:
          p.zero_()
      tb = layer.temporal_block
      mlp = layer.mlp_block
      normal_(mlp.gate_proj.weight, 1.0 / math.sqrt(c.width))
      normal_(mlp.up_proj.weight, 1.0 / math.sqrt(c.width))
      normal_(mlp.down_proj.weight, math.sqrt(final_scale / c.mlp_width))
      if layer.kind == "recurrent":
        normal_(tb.linear_x.weight, 1.0 / math.sqrt(c.width))
        normal_(tb.linear_y.weight, 1.0 / math.sqrt(c.width))
        normal_(tb.linear_out.weight, math.sqrt(final_scale / c.lru_width))
        normal_(tb.conv_1d.weight, math.sqrt(1.0 / c.conv_width))
        bw = c.lru_width // c.num_heads
        normal_(tb.rg_lru.input_gate_weight, 1.0 / math.sqrt(bw))
        normal_(tb.rg_lru.recurrent_gate_weight, 1.0 / math.sqrt(bw))
        # a^c in [0.9, 0.999]^2 at gate 1: softplus(param) = -0.5 log(u), u ~ U[0.81, 0.998]
        u = torch.rand(c.lru_width, generator=g) * (0.999 ** 2 - 0.9 ** 2) + 0.9 ** 2
        sp = -0.5 * torch.log(u)
        tb.rg_lru.recurrent_param.copy_(torch.log(torch.expm1(sp)))
      else:
        normal_(tb.q_proj.weight, 1.0 / math.sqrt(c.width))
        normal_(tb.k_proj.weight, 1.0 / math.sqrt(c.width))
        normal_(tb.v_proj.weight, 1.0 / math.sqrt(c.width))
        normal_(tb.o_proj.weight, math.sqrt(final_scale / (c.num_heads * c.head_dim)))

  def attention_mask(self, positions: torch.Tensor, seg: torch.Tensor):
    """Boolean [B, 1, T, T]: key j visible to query i iff j <= i, i - j <= window, same document.
    None when plain causal attention is equivalent (no document start after t = 0 and the
    window covers the sequence)."""
    B, T = positions.shape
    if T <= self.config.window + 1 and bool((positions[:, 1:] != 0).all()):
      return None
    i = torch.arange(T, device=positions.device)
    band = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= self.config.window)
    same = seg[:, :, None] == seg[:, None, :]
    return (band[None] & same)[:, None]

  def hidden(self, tokens, positions):
    c = self.config
    x = self.model.embed_tokens(tokens) * self.emb_scale
    seg = segment_ids(positions)
    mask = self.attention_mask(positions, seg) if "attention" in c.layer_types else None
    for layer in self.model.layers:
      x = layer(x, positions, seg, mask)
    return self.model.final_norm(x)

  def logits(self, h):
    w = self.model.embed_tokens.weight
    logits = F.linear(h, w).float()
    cap = self.config.logits_soft_cap
    if cap and cap > 0:
      logits = torch.tanh(logits / cap) * cap
    return logits

  def forward(self, tokens, positions):
    """Soft-capped float32 logits [B, T, V]."""
    return self.logits(self.hidden(tokens, positions))

  def loss(self, tokens, positions, targets):
    """Mean cross-entropy over targets != -100."""
    logits = self(tokens, positions)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)


def positions_from_tokens(tokens: torch.Tensor, bos: int = 2, start: torch.Tensor | None = None):
  """Per-token position inside its document: resets to 0 at every BOS. Tokens before the first
  BOS of a row continue from `start` (default: treated as a document starting at t = 0)."""
  B, T = tokens.shape
  is_bos = tokens == bos
  idx = torch.arange(T, device=tokens.device).expand(B, T)
  last_bos = torch.where(is_bos, idx, torch.full_like(idx, -1))
  last_bos = torch.cummax(last_bos, dim=1).values
  pos = torch.where(last_bos >= 0, idx - last_bos, idx)
  if start is not None:
    pos = torch.where(last_bos >= 0, pos, pos + start[:, None])
  return pos
