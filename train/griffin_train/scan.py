"""The RG-LRU linear recurrence h_t = a_t * h_{t-1} + x_t (float32), three ways.

* `scan_loop`: the step-by-step recurrence, the test reference (CPU, slow).
* `scan_parallel`: a log-depth (Hillis-Steele) parallel prefix scan in plain PyTorch; runs on
  any device, gradients through autograd. This is the CPU / fallback training path.
* `scan_triton`: a Triton kernel (tiles of BLOCK_T steps combined with `tl.associative_scan`,
  the state carried across tiles in registers) with a hand-written backward kernel (the same
  scan run backwards in time). GPU only; checked against `scan_parallel` by
  `python -m griffin_train.scan --check` (see train/README.md).

Resets (document starts) are expressed by a_t = 0, so every path handles packed documents.
The initial state is zero (each training sequence starts fresh).
"""

from __future__ import annotations

import os

import torch

try:  # Triton is optional (absent or CPU-only on CI machines).
  import triton
  import triton.language as tl
  HAVE_TRITON = True
except Exception:  # pylint: disable=broad-except
  HAVE_TRITON = False


def scan_loop(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  """a, x: [B, T, L] -> h: [B, T, L], h_{-1} = 0. Python loop over time (reference only)."""
  h = torch.zeros_like(x[:, 0])
  out = []
  for t in range(x.shape[1]):
    h = a[:, t] * h + x[:, t]
    out.append(h)
  return torch.stack(out, 1)


def scan_parallel(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  """Hillis-Steele inclusive scan with the combine (a1,x1),(a2,x2) -> (a1 a2, a2 x1 + x2).

  ceil(log2 T) elementwise passes; no loop over time steps."""
  T = x.shape[1]
  if T == 1:
    return x + 0.0 * a  # keeps a in the graph (zero gradient), as the loop does
  d = 1
  while d < T:
    x = torch.cat([x[:, :d], torch.addcmul(x[:, d:], a[:, d:], x[:, :-d])], 1)
    if 2 * d < T:
      a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], 1)
    d *= 2
  return x


if HAVE_TRITON:

  @triton.jit
  def _combine(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2

  @triton.jit
  def _scan_fwd_kernel(A, X, Y, T, L, BLOCK_T: tl.constexpr, BLOCK_L: tl.constexpr):
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cmask = cols < L
    rows = tl.arange(0, BLOCK_T)
    base = b.to(tl.int64) * T * L
    h = tl.zeros([BLOCK_L], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
      t = t0 + rows
      m = (t[:, None] < T) & cmask[None, :]
      off = base + t[:, None].to(tl.int64) * L + cols[None, :]
      a = tl.load(A + off, mask=m, other=1.0)
      x = tl.load(X + off, mask=m, other=0.0)
      ac, xc = tl.associative_scan((a, x), 0, _combine)
      hs = xc + ac * h[None, :]
      tl.store(Y + off, hs, mask=m)
      h = tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, hs, 0.0), axis=0)

  @triton.jit
  def _scan_bwd_kernel(A, Y, DY, DA, DX, T, L, BLOCK_T: tl.constexpr, BLOCK_L: tl.constexpr):
    # g_t = dy_t + a_{t+1} g_{t+1}; dx_t = g_t; da_t = g_t * h_{t-1}. Run in reversed time.
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cmask = cols < L
    rows = tl.arange(0, BLOCK_T)
    base = b.to(tl.int64) * T * L
    g = tl.zeros([BLOCK_L], dtype=tl.float32)
    for s0 in range(0, T, BLOCK_T):
      t = T - 1 - (s0 + rows)  # row 0 is the latest time step of the tile
      valid = t >= 0
      m = valid[:, None] & cmask[None, :]
      off = base + t[:, None].to(tl.int64) * L + cols[None, :]
      mn = ((t + 1) < T)[:, None] & m
      a_next = tl.load(A + off + L, mask=mn, other=0.0)
      a_next = tl.where(m, a_next, 1.0)
      dy = tl.load(DY + off, mask=m, other=0.0)
      ac, gc = tl.associative_scan((a_next, dy), 0, _combine)
      gs = gc + ac * g[None, :]
      mp = (t >= 1)[:, None] & m
      h_prev = tl.load(Y + off - L, mask=mp, other=0.0)
      tl.store(DX + off, gs, mask=m)
      tl.store(DA + off, gs * h_prev, mask=m)
      g = tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, gs, 0.0), axis=0)

  _BLOCK_T, _BLOCK_L = 32, 32

  class _TritonScan(torch.autograd.Function):

    @staticmethod
    def forward(ctx, a, x):  # pylint: disable=arguments-differ
      a = a.contiguous().float()
      x = x.contiguous().float()
      B, T, L = x.shape
      y = torch.empty_like(x)
      grid = (B, triton.cdiv(L, _BLOCK_L))
      _scan_fwd_kernel[grid](a, x, y, T, L, BLOCK_T=_BLOCK_T, BLOCK_L=_BLOCK_L, num_warps=2)
      ctx.save_for_backward(a, y)
      return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
      a, y = ctx.saved_tensors
      dy = dy.contiguous().float()
      B, T, L = y.shape
      da = torch.empty_like(a)
      dx = torch.empty_like(a)
      grid = (B, triton.cdiv(L, _BLOCK_L))
      _scan_bwd_kernel[grid](a, y, dy, da, dx, T, L, BLOCK_T=_BLOCK_T, BLOCK_L=_BLOCK_L,
                             num_warps=2)
      return da, dx


def scan_triton(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
  if not HAVE_TRITON:
    raise RuntimeError("triton is not installed")
  return _TritonScan.apply(a, x)


_BACKENDS = {"loop": scan_loop, "parallel": scan_parallel, "triton": scan_triton}


def resolve_backend(name: str, device: torch.device) -> str:
  if name != "auto":
    return name
  return "triton" if (HAVE_TRITON and device.type == "cuda") else "parallel"


def linear_scan(a: torch.Tensor, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
  return _BACKENDS[resolve_backend(backend, x.device)](a, x)


def check(device: str = "cuda", B: int = 3, T: int = 777, L: int = 200, seed: int = 0) -> dict:
  """Forward and gradient parity of the Triton scan against the parallel PyTorch scan (float64
  reference on the same inputs), with resets. Returns max abs errors."""
  g = torch.Generator().manual_seed(seed)
  a = torch.rand(B, T, L, generator=g) * 0.2 + 0.8
  a[torch.rand(B, T, 1, generator=g).expand(B, T, L) < 0.01] = 0.0  # document starts
  x = torch.randn(B, T, L, generator=g)
  dy = torch.randn(B, T, L, generator=g)
  res = {}
  a64, x64 = a.double().requires_grad_(), x.double().requires_grad_()
  y64 = scan_parallel(a64, x64)
  y64.backward(dy.double())
  for name in ("parallel", "triton"):
    if name == "triton" and (not HAVE_TRITON or (torch.device(device).type != "cuda"
                                                 and os.environ.get("TRITON_INTERPRET") != "1")):
      continue  # Triton needs a GPU, or its CPU interpreter (TRITON_INTERPRET=1)
    ad = a.to(device).clone().requires_grad_()
    xd = x.to(device).clone().requires_grad_()
    y = _BACKENDS[name](ad, xd)
    y.backward(dy.to(device))
    res[name] = {
        "y": (y.double().cpu() - y64).abs().max().item(),
        "da": (ad.grad.double().cpu() - a64.grad).abs().max().item(),
        "dx": (xd.grad.double().cpu() - x64.grad).abs().max().item(),
    }
  return res


def bench(B: int = 16, T: int = 2048, L: int = 1024) -> dict:
  """Median milliseconds of forward + backward for each backend on the GPU."""
  import triton.testing  # pylint: disable=import-outside-toplevel
  out = {}
  a = (torch.rand(B, T, L, device="cuda") * 0.2 + 0.8).requires_grad_()
  x = torch.randn(B, T, L, device="cuda").requires_grad_()
  dy = torch.randn(B, T, L, device="cuda")
  for name in ("parallel", "triton"):
    fn = _BACKENDS[name]
    def step(fn=fn):
      a.grad = x.grad = None
      fn(a, x).backward(dy)
    out[name] = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
  return out


if __name__ == "__main__":
  import argparse
  import json
  p = argparse.ArgumentParser(description="RG-LRU scan parity check")
  p.add_argument("--check", action="store_true")
  p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  args = p.parse_args()
  result = check(args.device)
  if args.device == "cuda":
    try:
      result["bench_ms_fwd_bwd_16x2048x1024"] = bench()
    except Exception as e:  # pylint: disable=broad-except
      result["bench_error"] = repr(e)[:300]
  print(json.dumps(result))
