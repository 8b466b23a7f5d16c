"""The fast RG-LRU scans equal the step-by-step recurrence (outputs and gradients)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from griffin_train import scan


def _inputs(B=2, T=67, L=24, seed=0):
  g = torch.Generator().manual_seed(seed)
  a = torch.rand(B, T, L, generator=g, dtype=torch.float64) * 0.3 + 0.7
  a[:, [t for t in (0, 13, 40) if t < T]] = 0.0   # document starts (resets)
  x = torch.randn(B, T, L, generator=g, dtype=torch.float64)
  dy = torch.randn(B, T, L, generator=g, dtype=torch.float64)
  return a, x, dy


@pytest.mark.parametrize("T", [1, 2, 5, 64, 67])
def test_parallel_scan_matches_loop_forward_and_gradients(T):
  a, x, dy = _inputs(T=T)
  outs = {}
  for name in ("loop", "parallel"):
    aa, xx = a.clone().requires_grad_(), x.clone().requires_grad_()
    y = scan.linear_scan(aa, xx, name)
    y.backward(dy)
    outs[name] = (y.detach(), aa.grad, xx.grad)
  for ref, got in zip(outs["loop"], outs["parallel"]):
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_parallel_scan_float32_close_to_float64():
  a, x, _ = _inputs(T=300)
  ref = scan.scan_loop(a, x)
  got = scan.scan_parallel(a.float(), x.float()).double()
  assert (got - ref).abs().max().item() < 1e-4


def test_reset_isolates_segments():
  a, x, _ = _inputs(T=50)
  y = scan.scan_parallel(a, x)
  # the segment starting at t=13 (a=0 there) is independent of what came before
  y2 = scan.scan_parallel(a[:, 13:40], x[:, 13:40])
  torch.testing.assert_close(y[:, 13:40], y2)


def test_triton_kernel_in_interpreter():
  """The Triton kernel (forward and backward) run by Triton's CPU interpreter. Skipped only when the
  interpreter cannot be imported (CPU-only torch comes without Triton); once it can, any failure of
  the kernel, a crash included, fails the test."""
  env = dict(os.environ, TRITON_INTERPRET="1",
             PYTHONPATH=str(Path(__file__).resolve().parents[1]))
  probe = subprocess.run([sys.executable, "-c", "import triton, triton.language, "
                          "triton.runtime.interpreter"], env=env, capture_output=True, text=True,
                         timeout=120)
  if probe.returncode != 0:
    pytest.skip("Triton interpreter cannot be imported: " + probe.stderr.strip()[-200:])
  code = ("import torch, json; torch.set_num_threads(1)\n"
          "from griffin_train import scan\n"
          "r = scan.check('cpu', B=2, T=70, L=40)['triton']\n"
          "print(json.dumps(r)); assert max(r.values()) < 1e-4, r\n")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
