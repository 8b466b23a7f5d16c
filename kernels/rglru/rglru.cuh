// The recurrent (RG-LRU) temporal block after the fused x|y GEMM (SPEC.md §2.4, §3).
//
// Per token t of slot s at position p, channel ch (L channels in H gate blocks of B = L/H):
//   xin_t  = bf16(xy[t, ch] + bx[ch])                          (conv input, kept in bf16 like the tail)
//   c      = sum_{k<K} conv_w[ch, K-1-k] * xin_{t-k} + conv_b[ch]   (xin before the run: slot's tail)
//   gx, ga = BlockDiag(half(c); W[h, i, j] [head, in, out] bf16, b float32)
//   log_a  = -8 sigmoid(ga) softplus(a_param);  a = exp(log_a);  a^2 = exp(2 log_a)
//   xn     = c sigmoid(gx) (p == 0 ? 1 : sqrt(1 - a^2));   a_eff = (p == 0 ? 0 : a)
//   h      = a_eff * h + xn      (float32 state, multiply and add rounded separately: no FMA)
//   out_t  = bf16(h * gelu_tanh(xy[t, L + ch] + by[ch]))
// The tail (bf16 [K-1, L], oldest first) ends holding the last K-1 conv inputs.
//
// Kernels:
//  - LaunchRgLruDecode: every entry has exactly one token. One kernel does the conv step with the
//    slot's tail, both block-diagonal gates, the recurrence and the gelu(y) multiply, and updates the
//    state in place; grid (ceil(tokens / T), H, B / 32) with T the smallest of 1, 2, 4, 8 covering
//    the batch (up to 8), 256 threads = 32 output channels x 8 input slices, so a block shares each
//    gate weight it reads across T tokens and batch 1 still spreads over H * B / 32 blocks. Every
//    block of a head reads the head's whole tail, so only the last block of the head to finish
//    reading (a counter per (tokens, head): p.tail_counters) shifts it; without counters a
//    second, tiny kernel does, launched right after (one launch more per recurrent layer: 18 of a
//    2B decode step's ~230). Its gate mat-vec runs on CUDA cores: right at batch 1-8, 22x its
//    floor at batch 64-256. For B <= 256 and K <= 4 all it reads but x|y is loaded before it
//    waits for the x|y projection (p.stage_before_wait).
//  - Decode on the tensor cores (larger batches; the backend's threshold): LaunchRgLruConv, the
//    prefill path's batched gate GEMM, then LaunchRgLruDecodeFinish: per (token, channel) the
//    gate math, the recurrence step, gelu(y) and the tail shift in one elementwise kernel.
//  - Prefill, four steps: LaunchRgLruConv writes c (float32 and half) for any runs, reading the
//    tails; the caller runs both gates of all heads as one strided-batched cuBLASLt GEMM
//    (Gemm::RunBatched, half weights packed [H, 2B out, B in] by LaunchPackGateWeights);
//    LaunchRgLruGateMath turns the gate sums into a_eff and xn in place; LaunchRgLruScan then, per
//    (entry, 32 channels), scans the entry's tokens chunked over time (16 chunks scanned in parallel
//    from zero, the slot's state carried across the chunks in order, then each chunk rescanned from
//    its carried-in state; loads of 8 steps issued before their use), and writes out, the final
//    state and the new tail. Chunked prefill carries state through the slot, so runs cut anywhere
//    give the same state (up to the GEMMs' batch-dependent rounding and the chunk association).
// Accumulation: float32 everywhere; both paths feed the gates c rounded to IEEE half (bf16 gate
// weights convert to half exactly; half keeps 3 more mantissa bits than the reference's bf16) and
// share the gate arithmetic, so decode and prefill differ only by the gate sums' order (cuBLAS vs
// the fused kernel's fixed order). Between the GEMM and the scan, LaunchRgLruGateMath applies the
// gate nonlinearities in parallel over tokens and channels, so the sequential scan does one
// multiply-add per step.
// xy_scales (optional): xy is an FP8 GEMM's unscaled output; every kernel applies the scales as it
// reads xy (types.h InputScales), bit for bit the values the separate pass would have stored.
// Limits (CanImplementRgLru): B <= 1024, K <= 8.
#ifndef GRIFFIN_KERNELS_RGLRU_RGLRU_CUH_
#define GRIFFIN_KERNELS_RGLRU_RGLRU_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

struct RgLruParams {
  const float* xy = nullptr;       // [n, 2L] GEMM output, biases not yet added
  InputScales xy_scales;           // of xy, when an FP8 GEMM left them to these kernels (types.h)
  const float* bx = nullptr;       // [L]
  const float* by = nullptr;       // [L]
  const float* conv_w = nullptr;   // [L, K]
  const float* conv_b = nullptr;   // [L]
  const bf16_t* gx_w = nullptr;    // [H, B, B]
  const float* gx_b = nullptr;     // [H, B]
  const bf16_t* ga_w = nullptr;    // [H, B, B]
  const float* ga_b = nullptr;     // [H, B]
  const float* a_param = nullptr;  // [L]
  TokenLayout layout;
  StateRef state;
  int64_t lru_offset = 0;   // bytes inside a slot: float32 [L]
  int64_t conv_offset = 0;  // bytes inside a slot: bf16 [K-1, L]
  int n = 0, num_entries = 0, L = 0, H = 0, K = 4;
  bf16_t* out = nullptr;  // [n, L]
  // LaunchRgLruDecode: zeroed counters, one per (block of tokens, head): ceil(n / tokens per
  // block) * H of them (tail_counter_capacity; fewer, and a second kernel shifts the tails).
  // With them the tail shift happens inside the gate kernel (the last block of each (tokens,
  // head) to finish reading the tails shifts them, and sets its counter back to zero); without,
  // a second kernel does it.
  unsigned* tail_counters = nullptr;
  int tail_counter_capacity = 0;
  // LaunchRgLruDecode with B <= 256 and K <= 4: everything but x|y (entries, tails, states,
  // biases) is loaded before waiting for the x|y projection. false takes the general path, which
  // loads them after it; the two are bit-identical (the kernel test compares them).
  bool stage_before_wait = true;
  // LaunchRgLruDecode: tokens a block takes, 1, 2, 4 or 8 (every block also reads the head's
  // whole gate weights, so more tokens a block means fewer reads but longer blocks); 0: the
  // default, DefaultRgLruDecodeTokensPerBlock(n). Bit-identical whatever the choice.
  int tokens_per_block = 0;
  // Prefill only.
  float* c = nullptr;          // [n, L] conv output (float32)
  uint16_t* c_half = nullptr;  // [n, L] conv output as IEEE half, the gate GEMM's input
  float* gates = nullptr;      // [n, 2L]: per head h, columns h*2B .. h*2B+B input gate,
                               // then B recurrence-gate columns (the batched GEMM's output);
                               // LaunchRgLruGateMath overwrites them with a_eff and xn
  // LaunchRgLruGateMath: four channels a thread with float4 loads where B % 4 == 0 and the
  // arrays are 16-byte aligned; false keeps one channel a thread. Bit-identical (the kernel test
  // compares them).
  bool vector_gate_math = true;
  // LaunchRgLruDecodeFinish: four channels a thread, 8- and 16-byte loads, the entry, tails and
  // states loaded before waiting for the gate GEMM, where B % 4 == 0 and the arrays are 16-byte
  // aligned; false keeps one channel a thread. Bit-identical (the kernel test compares them).
  bool vector_decode = true;
  // LaunchRgLruConv with one token per entry and K = 4: a kernel for exactly that (the conv width
  // a constant, the entry and tails loaded before the wait); false keeps the general kernel.
  // Bit-identical (the kernel test compares them).
  bool specialized_decode_conv = true;
};

// Empty string when the sizes are supported, else the reason.
const char* CanImplementRgLru(int L, int H, int K);

// Packs the gate weights for the prefill GEMM: out[h][o][i] = o < B ? gx_w[h][i][o] : ga_w[h][i][o-B]
// converted to IEEE half ([H, 2B, B]); done once at load.
cudaError_t LaunchPackGateWeights(const bf16_t* gx_w, const bf16_t* ga_w, int H, int B,
                                  uint16_t* out, cudaStream_t stream);

cudaError_t LaunchRgLruDecode(const RgLruParams& p, cudaStream_t stream);
// The tokens per block LaunchRgLruDecode takes for n tokens when the params leave it at 0.
int DefaultRgLruDecodeTokensPerBlock(int n);
// One token per entry; after LaunchRgLruConv and the batched gate GEMM into p.gates.
cudaError_t LaunchRgLruDecodeFinish(const RgLruParams& p, cudaStream_t stream);
cudaError_t LaunchRgLruConv(const RgLruParams& p, cudaStream_t stream);
cudaError_t LaunchRgLruGateMath(const RgLruParams& p, cudaStream_t stream);
cudaError_t LaunchRgLruScan(const RgLruParams& p, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_RGLRU_RGLRU_CUH_
