#!/usr/bin/env python3
"""Prefill attention from the field's libraries, on recurrentgemma-2b's shapes, to compare with
our kernel (kernels_bench --filter='attention prefill') in the same device call.

Issue 13 asks whether a library kernel (cuDNN's fused attention, FlashAttention) beats ours for
prefill. This times what PyTorch on the GPU machine reaches through each of its SDPA backends on
MQA with 10 query heads, one kv head, head size 256, causal; at 2048 tokens and the 2048-key
window, causal and the sliding window are the same mask. Compute-bound, so the L2 is not flushed.

    python3 bench/peers/attention_library_bench.py [--reps 50]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, KV, HD = 10, 1, 256


def time_ms(fn, reps):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"cudnn {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    for batch, tokens in ((1, 2048), (1, 512), (16, 2048)):
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(batch, H, tokens, HD, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(batch, KV, tokens, HD, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(batch, KV, tokens, HD, device="cuda", dtype=torch.bfloat16, generator=g)
        # The libraries that take no MQA read copies of the one kv head (bandwidth is not what
        # bounds this shape).
        k_rep, v_rep = k.expand(-1, H, -1, -1).contiguous(), v.expand(-1, H, -1, -1).contiguous()
        flops = 4.0 * batch * H * HD * tokens * (tokens + 1) / 2
        ref = None
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("flash", SDPBackend.FLASH_ATTENTION),
                              ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            for gqa in (True, False):
                kk, vv = (k, v) if gqa else (k_rep, v_rep)

                def run():
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(
                            q, kk, vv, is_causal=True, scale=1.0 / 16, enable_gqa=gqa)
                try:
                    out = run()
                    ms = time_ms(run, args.reps)
                except Exception as e:  # a backend that refuses the shape says why, once
                    print(f"{batch} x {tokens} {name:9s} {'mqa' if gqa else 'rep'}: "
                          f"refused ({str(e).splitlines()[0][:120]})")
                    continue
                if ref is None:
                    ref = out.float()
                err = (out.float() - ref).abs().max().item()
                print(f"{batch} x {tokens} {name:9s} {'mqa' if gqa else 'rep'}: {ms * 1000:8.1f} us "
                      f"{flops / ms / 1e9:6.1f} TFLOP/s  max|diff| vs first {err:.3g}")


if __name__ == "__main__":
    main()
