// See rglru.cuh for the math, layouts and the three kernels.
#include <cuda_fp16.h>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "kernels/rglru/rglru.cuh"
#include "kernels/step_layout.cuh"

namespace griffin::kernels {
namespace {

// Tokens per block of the fused decode kernel, at most 8 (the kernel is templated on it: at batch
// 1 the 8-token kernel ran 8x the gate arithmetic and code it needed, and a launch that runs once
// per step is fetched cold from the instruction cache: ncu's top stall, "no instruction", session
// 12). DefaultRgLruDecodeTokensPerBlock picks it for a batch.
constexpr int kMaxTokensPerBlock = 8;
constexpr int kLanes = 32;
constexpr int kSlices = 8;
constexpr int kGateThreads = kLanes * kSlices;
constexpr int kPreloadRows = 32;  // gate weight rows per thread held across the wait: B <= 256
constexpr int kStagedTaps = 4;    // conv taps the decode kernel's staged path takes (K <= 4)
constexpr int kScanLanes = 32;
constexpr int kScanChunks = 16;
constexpr int kScanUnroll = 8;

struct GateOut {
  float a_eff, xn;
};
__device__ __forceinline__ GateOut GateMath(float gx_sum, float ga_sum, float c, float softplus_a,
                                            bool reset) {
  const float gate_x = Sigmoid(gx_sum);
  const float gate_a = Sigmoid(ga_sum);
  const float log_a = -8.0f * gate_a * softplus_a;
  const float a = expf(log_a);
  const float a_sq = expf(2.0f * log_a);
  const float gated = c * gate_x;
  return {reset ? 0.0f : a, reset ? gated : __fmul_rn(gated, sqrtf(1.0f - a_sq))};
}

// Column `col` of token t's x|y row (x: [0, L), y: [L, 2L)), scaled as it is read when an FP8
// GEMM left the scales (every kernel here reads xy through this).
__device__ __forceinline__ float XY(const RgLruParams& p, int64_t t, int col) {
  return ApplyScales(p.xy[t * 2 * p.L + col], p.xy_scales, t, col);
}

__device__ __forceinline__ float ConvInput(const RgLruParams& p, const bf16* tail, int start, int k,
                                           int ch) {
  // Input at index k of the entry's run; k < 0 reaches into the tail ([K-1, L], oldest first).
  if (k >= 0) return RoundBf16(XY(p, start + k, ch) + p.bx[ch]);
  return ToF(tail[int64_t{p.K - 1 + k} * p.L + ch]);
}

// One channel's conv output from its input x and the K - 1 before it (prev[s]: s tokens before),
// in the reference's order (s = 0 first); every conv path calls this, so all give the same bits.
template <int kMaxK>
__device__ __forceinline__ float ConvSum(const float (&w)[kMaxK], float x,
                                         const float (&prev)[kMaxK], int K, float bias) {
  float acc = 0.0f;
  acc += w[0] * x;
#pragma unroll
  for (int s = 1; s < kMaxK; ++s) {
    if (s < K) acc += w[s] * prev[s];
  }
  return acc + bias;
}

// One channel of a decode step after the gates: the recurrence step and the gated output.
struct StepOut {
  float h;
  bf16 out;
};
__device__ __forceinline__ StepOut RecurrenceStep(float gx_sum, float ga_sum, float c,
                                                  float softplus_a, bool reset, float h_old,
                                                  float y) {
  const GateOut o = GateMath(gx_sum, ga_sum, c, softplus_a, reset);
  const float hv = __fadd_rn(__fmul_rn(o.a_eff, h_old), o.xn);
  return {hv, ToB(hv * GeluTanh(y))};
}

// Four consecutive columns of token t's x|y row (col % 4 == 0), scaled as XY scales one.
__device__ __forceinline__ float4 XY4(const RgLruParams& p, int64_t t, int col) {
  const float4 v = *reinterpret_cast<const float4*>(p.xy + t * 2 * p.L + col);
  return make_float4(
      ApplyScales(v.x, p.xy_scales, t, col), ApplyScales(v.y, p.xy_scales, t, col + 1),
      ApplyScales(v.z, p.xy_scales, t, col + 2), ApplyScales(v.w, p.xy_scales, t, col + 3));
}
__device__ __forceinline__ float Lane(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
// Four bf16 as one 8-byte word.
__device__ __forceinline__ uint2 Pack4(const bf16 (&b)[4]) {
  uint2 u;
  bf16* d = reinterpret_cast<bf16*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) d[i] = b[i];
  return u;
}

// The tail shift of a decode step (drop each slot's oldest conv input, append this token's) is
// done by the last of the gridDim.z blocks of (these tokens, head h) to have read the tails: each
// block counts itself in once its reads are done, and the one that completes the count writes.
// The fences make the readers' loads happen before the writer's stores (the threadfence
// reduction pattern of the CUDA samples). Tokens of a decode step belong to different slots,
// except the padding of a bucket, which all share the scratch slot, whose contents no one reads.
// Call with the whole block, after a barrier that follows the block's tail reads.
__device__ bool LastReaderOfTheTails(const RgLruParams& p, int h) {
  // No shared flag: at B = 512 the kernel's dynamic shared memory is the whole default 48 KB.
  bool last = false;
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned* counter = p.tail_counters + blockIdx.x * gridDim.y + h;
    last = atomicAdd(counter, 1u) == gridDim.z - 1;
    if (last) *counter = 0;  // for the next launch (the kernel's end orders it)
    __threadfence();
  }
  return __syncthreads_or(last);
}

// The shift itself, reading the tails again (the general path; kStaged shifts from registers).
__device__ void ShiftTails(const RgLruParams& p, int h, int t_first, int nt) {
  const int L = p.L, B = L / p.H, K = p.K;
  for (int idx = threadIdx.x; idx < nt * B; idx += blockDim.x) {
    const int tt = idx / B, ch = h * B + idx - tt * B;
    const int t = t_first + tt;
    bf16* tail = SlotRegion<bf16>(p.state, EntryOfToken(p.layout, t).slot, p.conv_offset);
    for (int r = 0; r + 1 < K - 1; ++r) tail[int64_t{r} * L + ch] = tail[int64_t{r + 1} * L + ch];
    if (K > 1) tail[int64_t{K - 2} * L + ch] = ToB(XY(p, t, ch) + p.bx[ch]);
  }
}

// Block = (kTok tokens, one gate head, 32 output channels of the head); 256 threads = 32 output
// lanes x 8 input slices. Every block recomputes the head's conv outputs (cheap: K taps per
// channel) so the gate mat-vec, the block's only real cost, is spread over H * B/32 blocks even
// at batch 1. Phase 3 (the gates and the recurrence) runs token tt on slice tt's warp: the tokens
// are different sequences, so the warps run them side by side where one warp looped over them
// (at batch 8 that serial loop made the kernel 0.24 ms of the step, twice batch 1's; ablation,
// PROFILE.md session 27).
//
// kStaged (B <= 256 and K <= kStagedTaps: the 2B and 9B shapes): everything that does not depend
// on the x|y projection is loaded before waiting for it: the gate weights, each token's entry,
// the slots' conv tails and recurrent states, the biases. After the wait only x|y is read, in one
// round of loads; the general path waited on about ten dependent rounds there (the entry, then
// the tail one tap at a time, then the state: 15.8 us a launch at batch 1 under ncu, 25x its
// floor, bench/PROFILE.md session 11), and the last block's tail shift writes from registers.
// Reading the tails and states early is safe: no other kernel of the step touches them (only
// this layer's launch, which shifts the tails after every block has read them), and the step
// layout is copied in before the step's first kernel.
template <bool kStaged, int kTok>
__global__ void __launch_bounds__(kGateThreads) RgLruGateKernel(RgLruParams p) {
  static_assert(kTok <= kSlices, "phase 3 runs one token per slice");
  extern __shared__ float smem[];
  const int L = p.L, H = p.H, B = L / H, K = p.K;
  float* c_smem = smem;             // [kTok][B], rounded to half
  float* c_full = smem + kTok * B;  // [kTok][B]
  float* red = c_full + kTok * B;   // [2][kSlices][kTok][kLanes]
  const int h = blockIdx.y;
  const int t_first = blockIdx.x * kTok;
  const int nt = min(kTok, p.n - t_first);
  const int lane = threadIdx.x % kLanes, slice = threadIdx.x / kLanes;
  const int j = blockIdx.z * kLanes + lane;
  const int ch_out = h * B + j;  // phase 3's channel (j < B)
  // Phase 3's token in the block (tt3 < nt). One token a block keeps it a constant: as slice, the
  // 1-token kernel took 271 us a step under ncu at batch 1, as a constant 244, and 183 before
  // phase 3 was spread (session 27; no longer a default, bench/NOTES.md).
  const int tt3 = kTok == 1 ? 0 : slice;
  const bool runs_phase3 = (kTok == 1 ? slice == 0 : tt3 < nt) && j < B;
  const bf16* wx = reinterpret_cast<const bf16*>(p.gx_w) + int64_t{h} * B * B + j;
  const bf16* wa = reinterpret_cast<const bf16*>(p.ga_w) + int64_t{h} * B * B + j;

  // The gate weights do not depend on the step: with programmatic dependent launch their loads
  // (the block's only DRAM traffic of size) overlap the x|y projection still running, and only
  // the conv inputs wait for it. Up to B = 256 they stay in registers (the 2B and 9B shapes).
  float wx_pre[kPreloadRows], wa_pre[kPreloadRows];
  const bool preloaded = B <= kSlices * kPreloadRows;
  if (preloaded) {
#pragma unroll
    for (int r = 0; r < kPreloadRows; ++r) {
      const int i = slice + r * kSlices;
      const bool in = j < B && i < B;
      wx_pre[r] = in ? ToF(wx[int64_t{i} * B]) : 0.0f;
      wa_pre[r] = in ? ToF(wa[int64_t{i} * B]) : 0.0f;
    }
  }
  // kStaged: phase 1's (token, channel) pairs of this thread are idx = threadIdx.x + u * 256;
  // their slots and older conv inputs, and phase 3's state and per-channel constants.
  constexpr int kPairs = kStaged ? kTok : 1;
  constexpr int kOld = kStaged ? kStagedTaps - 1 : 1;
  int pair_slot[kPairs];
  float pair_old[kPairs][kOld];  // [u][s - 1]: the input s tokens back (tail row K - 1 - s)
  float pair_x[kPairs];          // this token's conv input, for the tail shift
  float state_pre = 0.0f;
  bool reset_pre = false;
  int state_slot = 0;
  float gx_bias = 0.0f, ga_bias = 0.0f, y_bias = 0.0f, softplus_a = 0.0f;
  if constexpr (kStaged) {
#pragma unroll
    for (int u = 0; u < kPairs; ++u) {
      const int idx = threadIdx.x + u * kGateThreads;
      pair_slot[u] = 0;
      pair_x[u] = 0.0f;
#pragma unroll
      for (int s = 1; s <= kOld; ++s) pair_old[u][s - 1] = 0.0f;
      if (idx < nt * B) {
        const int tt = idx / B, ch = h * B + idx - tt * B;
        pair_slot[u] = EntryOfToken(p.layout, t_first + tt).slot;
        const bf16* tail = SlotRegion<const bf16>(p.state, pair_slot[u], p.conv_offset);
#pragma unroll
        for (int s = 1; s <= kOld; ++s) {
          if (s < K) pair_old[u][s - 1] = ToF(tail[int64_t{K - 1 - s} * L + ch]);
        }
      }
    }
    if (runs_phase3) {
      gx_bias = p.gx_b[ch_out];
      ga_bias = p.ga_b[ch_out];
      y_bias = p.by[ch_out];
      softplus_a = Softplus(p.a_param[ch_out]);
      const int t = t_first + tt3;
      const StepEntryRecord en = EntryOfToken(p.layout, t);
      state_slot = en.slot;
      reset_pre = TokenPosition(en, t) == 0;
      state_pre = SlotRegion<const float>(p.state, en.slot, p.lru_offset)[ch_out];
    }
  }
  AllowDependentLaunch();
  WaitForPriorGrids();

  // Phase 1: conv outputs of all the head's channels for the block's tokens.
  float y_pre = 0.0f;
  if constexpr (kStaged) {
    // Phase 3's y, in the same round of loads as the conv inputs.
    if (runs_phase3) y_pre = XY(p, t_first + tt3, L + ch_out);
#pragma unroll
    for (int u = 0; u < kPairs; ++u) {
      const int idx = threadIdx.x + u * kGateThreads;
      if (idx < nt * B) {
        const int tt = idx / B, i = idx - tt * B;
        const int ch = h * B + i;
        const float x = RoundBf16(XY(p, t_first + tt, ch) + p.bx[ch]);
        pair_x[u] = x;
        // The order of the general path (and of ConvKernel): this token's input first.
        float acc = 0.0f;
        acc += p.conv_w[ch * K + (K - 1)] * x;
#pragma unroll
        for (int s = 1; s <= kOld; ++s) {
          if (s < K) acc += p.conv_w[ch * K + (K - 1 - s)] * pair_old[u][s - 1];
        }
        c_full[tt * B + i] = acc + p.conv_b[ch];
        c_smem[tt * B + i] = __half2float(__float2half_rn(acc + p.conv_b[ch]));
      }
    }
  } else {
    for (int idx = threadIdx.x; idx < nt * B; idx += blockDim.x) {
      const int tt = idx / B, i = idx - tt * B;
      const int ch = h * B + i;
      const int t = t_first + tt;
      const StepEntryRecord en = EntryOfToken(p.layout, t);
      const int start = en.start;
      const bf16* tail = SlotRegion<const bf16>(p.state, en.slot, p.conv_offset);
      const int k = t - start;
      float acc = 0.0f;
      for (int s = 0; s < K; ++s) {
        acc += p.conv_w[ch * K + (K - 1 - s)] * ConvInput(p, tail, start, k - s, ch);
      }
      c_full[tt * B + i] = acc + p.conv_b[ch];
      c_smem[tt * B + i] = __half2float(__float2half_rn(acc + p.conv_b[ch]));
    }
  }
  __syncthreads();
  if (p.tail_counters != nullptr && LastReaderOfTheTails(p, h)) {
    if constexpr (kStaged) {  // the tails this thread read, shifted from its registers
#pragma unroll
      for (int u = 0; u < kPairs; ++u) {
        const int idx = threadIdx.x + u * kGateThreads;
        if (idx < nt * B) {
          const int tt = idx / B, ch = h * B + idx - tt * B;
          bf16* tail = SlotRegion<bf16>(p.state, pair_slot[u], p.conv_offset);
          // Rows are oldest first: the input s tokens back (row K - 1 - s) moves up to row
          // K - 2 - s, and the oldest (s = K - 1) drops out.
#pragma unroll
          for (int s = 1; s <= kOld; ++s) {
            if (s < K - 1) tail[int64_t{K - 2 - s} * L + ch] = ToB(pair_old[u][s - 1]);
          }
          if (K > 1) tail[int64_t{K - 2} * L + ch] = ToB(pair_x[u]);
        }
      }
    } else {
      ShiftTails(p, h, t_first, nt);
    }
  }

  // Phase 2: partial block-diagonal products over this thread's input slice (the same order of
  // additions whether the weights were preloaded or not).
  float gx[kTok], ga[kTok];
#pragma unroll
  for (int tt = 0; tt < kTok; ++tt) gx[tt] = ga[tt] = 0.0f;
  if (j < B && preloaded) {
#pragma unroll
    for (int r = 0; r < kPreloadRows; ++r) {
      const int i = slice + r * kSlices;
      if (i < B) {
#pragma unroll
        for (int tt = 0; tt < kTok; ++tt) {
          const float ci = c_smem[tt * B + i];
          gx[tt] += ci * wx_pre[r];
          ga[tt] += ci * wa_pre[r];
        }
      }
    }
  } else if (j < B) {
#pragma unroll 16
    for (int i = slice; i < B; i += kSlices) {
      const float vx = ToF(wx[int64_t{i} * B]);
      const float va = ToF(wa[int64_t{i} * B]);
#pragma unroll
      for (int tt = 0; tt < kTok; ++tt) {
        const float ci = c_smem[tt * B + i];
        gx[tt] += ci * vx;
        ga[tt] += ci * va;
      }
    }
  }
#pragma unroll
  for (int tt = 0; tt < kTok; ++tt) {
    red[((0 * kSlices + slice) * kTok + tt) * kLanes + lane] = gx[tt];
    red[((1 * kSlices + slice) * kTok + tt) * kLanes + lane] = ga[tt];
  }
  __syncthreads();
  if (!runs_phase3) return;

  // Phase 3 (token tt3 on slice tt3's warp): sum the slices in a fixed order, then the gates and
  // the recurrence.
  const int ch = ch_out;
  const int tt = tt3;
  const int t = t_first + tt;
  if constexpr (!kStaged) {
    gx_bias = p.gx_b[ch];
    ga_bias = p.ga_b[ch];
    y_bias = p.by[ch];
    softplus_a = Softplus(p.a_param[ch]);
  }
  float sx = 0.0f, sa = 0.0f;
  for (int sl = 0; sl < kSlices; ++sl) {
    sx += red[((0 * kSlices + sl) * kTok + tt) * kLanes + lane];
    sa += red[((1 * kSlices + sl) * kTok + tt) * kLanes + lane];
  }
  bool reset;
  float h_old, y;
  float* state;
  if constexpr (kStaged) {
    reset = reset_pre;
    state = SlotRegion<float>(p.state, state_slot, p.lru_offset);
    h_old = state_pre;
    y = y_pre;
  } else {
    const StepEntryRecord en = EntryOfToken(p.layout, t);
    reset = TokenPosition(en, t) == 0;
    state = SlotRegion<float>(p.state, en.slot, p.lru_offset);
    h_old = state[ch];
    y = XY(p, t, L + ch);
  }
  const GateOut g = GateMath(sx + gx_bias, sa + ga_bias, c_full[tt * B + j], softplus_a, reset);
  const float hv = __fadd_rn(__fmul_rn(g.a_eff, h_old), g.xn);
  state[ch] = hv;
  reinterpret_cast<bf16*>(p.out)[int64_t{t} * L + ch] = ToB(hv * GeluTanh(y + y_bias));
}

// Conv: c for every token and channel (reads the tails, writes nothing in the slots). A thread
// owns one channel over kRun consecutive tokens and slides the last K - 1 inputs through
// registers, so each input is read once (a prefill with one token per thread read each four times
// and ran at 3.7x its byte floor); the window restarts from the slot's tail at the first token of
// each entry. Decode (one token per entry) takes kRun = 1: its tokens are all different entries.
template <int kRun>
__global__ void ConvKernel(RgLruParams p) {
  constexpr int kMaxK = 8;  // CanImplementRgLru
  const int L = p.L, K = p.K;
  const int ch = blockIdx.y * blockDim.x + threadIdx.x;
  AllowDependentLaunch();
  if (ch >= L) return;
  float w[kMaxK];  // weights: loaded while the x|y projection may still run
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) w[s] = s < K ? p.conv_w[ch * K + (K - 1 - s)] : 0.0f;
  const float bias = p.conv_b[ch];
  WaitForPriorGrids();
  float prev[kMaxK];  // prev[s]: the input s tokens before the current one (s >= 1)
  const int t_first = blockIdx.x * kRun;
  const int t_end = min(p.n, t_first + kRun);
  // The run's own inputs first, all loads in flight at once (they depend on no entry): the loop
  // below waited on one load per token, plus the token's entry record, and ran at 2.2-4.4x its
  // byte floor (bench/PROFILE.md, session 8).
  // Straight-line loads (past the run's end, the last token again): loads under a per-token
  // branch, as XY's scale check and the bounds test made them, were issued one at a time, each
  // waited on before the next (1 x 2048: 737 us against 413 before the scales, PROFILE.md).
  float xs[kRun];
#pragma unroll
  for (int u = 0; u < kRun; ++u) xs[u] = p.xy[int64_t{min(t_first + u, t_end - 1)} * 2 * L + ch];
  const float x_bias = p.bx[ch];
#pragma unroll
  for (int u = 0; u < kRun; ++u) {  // (the row scales end with the pass too)
    xs[u] = RoundBf16(ApplyScales(xs[u], p.xy_scales, min(t_first + u, t_end - 1), ch) + x_bias);
  }
  StepEntryRecord en = EntryOfToken(p.layout, t_first);
#pragma unroll
  for (int u = 0; u < kRun; ++u) {
    const int t = t_first + u;
    if (t >= t_end) break;
    if (t >= en.start + en.len) en = EntryOfToken(p.layout, t);  // the next entry starts here
    const int k = t - en.start;
    if (u == 0 || k == 0) {
      const bf16* tail = SlotRegion<const bf16>(p.state, en.slot, p.conv_offset);
#pragma unroll
      for (int s = 1; s < kMaxK; ++s)
        prev[s] = s < K ? ConvInput(p, tail, en.start, k - s, ch) : 0.0f;
    }
    const float x = xs[u];
    const float c = ConvSum(w, x, prev, K, bias);
#pragma unroll
    for (int s = kMaxK - 1; s > 1; --s) prev[s] = prev[s - 1];
    prev[1] = x;
    p.c[int64_t{t} * L + ch] = c;
    reinterpret_cast<__half*>(p.c_half)[int64_t{t} * L + ch] = __float2half_rn(c);
  }
}

// The decode conv (one token per entry, so token t is entry t: entries are in token order) with
// the conv width a constant: the general ConvKernel<1> issued an instruction nearly every cycle
// on every scheduler (ncu at 1024 tokens: 0.75 issued warps per scheduler per cycle, 18% of the
// DRAM bandwidth, 34 us) on runtime-width loops, 64-bit index arithmetic and the run logic it
// does not need here. The entry and tail rows are loaded before waiting for the x|y projection
// (nothing in the step writes them before this kernel). ConvSum as every path: the same bits.
template <int kK>
__global__ void ConvDecodeKernel(RgLruParams p) {
  AllowDependentLaunch();
  const int L = p.L, t = blockIdx.x;
  const int ch = blockIdx.y * blockDim.x + threadIdx.x;
  if (ch >= L) return;
  float w[kK], prev[kK];
#pragma unroll
  for (int s = 0; s < kK; ++s) w[s] = p.conv_w[ch * kK + (kK - 1 - s)];
  const float bias = p.conv_b[ch], x_bias = p.bx[ch];
  const bf16* tail = SlotRegion<const bf16>(p.state, LoadEntry(p.layout, t).slot, p.conv_offset);
  prev[0] = 0.0f;
#pragma unroll
  for (int s = 1; s < kK; ++s) prev[s] = ToF(tail[(kK - 1 - s) * L + ch]);
  WaitForPriorGrids();
  const float x = RoundBf16(XY(p, t, ch) + x_bias);
  const float c = ConvSum(w, x, prev, kK, bias);
  p.c[int64_t{t} * L + ch] = c;
  reinterpret_cast<__half*>(p.c_half)[int64_t{t} * L + ch] = __float2half_rn(c);
}

// Decode only, after RgLruGateKernel (every block of a head reads the tails in it): drop the
// oldest conv input of each slot's tail and append this token's. Grid (tokens, channel blocks): one
// block per token waited on ten dependent load rounds per thread at L = 2560.
__global__ void TailShiftKernel(RgLruParams p) {
  AllowDependentLaunch();  // the next projection's GEMV may start streaming its weights
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const int slot = EntryOfToken(p.layout, t).slot;
  const int L = p.L, K = p.K;
  bf16* tail = reinterpret_cast<bf16*>(p.state.pool + slot * p.state.slot_stride + p.conv_offset);
  const int ch = blockIdx.y * blockDim.x + threadIdx.x;
  if (ch >= L) return;
  for (int r = 0; r + 1 < K - 1; ++r) tail[int64_t{r} * L + ch] = tail[int64_t{r + 1} * L + ch];
  if (K > 1) tail[int64_t{K - 2} * L + ch] = ToB(XY(p, t, ch) + p.bx[ch]);
}

// Decode with the gates from the batched GEMM (after ConvKernel and Gemm::RunBatched): per token
// and channel, the gate math, the recurrence step, the output and the tail shift. One token per
// entry, so each thread owns its channel's state and tail; the conv already read the tails.
__global__ void DecodeFinishKernel(RgLruParams p) {
  AllowDependentLaunch();  // the next projection's GEMV may start streaming its weights
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const StepEntryRecord en = EntryOfToken(p.layout, t);
  const bool reset = TokenPosition(en, t) == 0;
  const int L = p.L, B = L / p.H, K = p.K;
  const int ch = blockIdx.y * blockDim.x + threadIdx.x;
  if (ch >= L) return;
  char* base = p.state.pool + en.slot * p.state.slot_stride;
  float* state = reinterpret_cast<float*>(base + p.lru_offset);
  bf16* tail = reinterpret_cast<bf16*>(base + p.conv_offset);
  const int hh = ch / B, j = ch - hh * B;
  const float* g = p.gates + int64_t{t} * 2 * L + hh * 2 * B + j;
  const StepOut o =
      RecurrenceStep(g[0] + p.gx_b[ch], g[B] + p.ga_b[ch], p.c[int64_t{t} * L + ch],
                     Softplus(p.a_param[ch]), reset, state[ch], XY(p, t, L + ch) + p.by[ch]);
  state[ch] = o.h;
  reinterpret_cast<bf16*>(p.out)[int64_t{t} * L + ch] = o.out;
  for (int r = 0; r + 1 < K - 1; ++r) tail[int64_t{r} * L + ch] = tail[int64_t{r + 1} * L + ch];
  if (K > 1) tail[int64_t{K - 2} * L + ch] = ToB(XY(p, t, ch) + p.bx[ch]);
}

// DecodeFinishKernel four channels a thread (B % 4 == 0): every load and store 8 or 16 bytes, and
// what no kernel of the step writes before this one (the entry, the slot's state and tail rows,
// the parameters) loaded before waiting for the gate GEMM. One channel a thread ran at 1.8x its
// byte floor at batch 1024 and 2.3x at 256 (PROFILE.md, session 21).
__global__ void DecodeFinishKernel4(RgLruParams p) {
  constexpr int kMaxK = 8;
  AllowDependentLaunch();
  const int t = blockIdx.x;
  const int L = p.L, B = L / p.H, K = p.K;
  const int ch = 4 * (blockIdx.y * blockDim.x + threadIdx.x);
  if (ch >= L) return;
  const StepEntryRecord en = EntryOfToken(p.layout, t);
  const bool reset = TokenPosition(en, t) == 0;
  char* base = p.state.pool + en.slot * p.state.slot_stride;
  float4* state = reinterpret_cast<float4*>(base + p.lru_offset) + ch / 4;
  bf16* tail = reinterpret_cast<bf16*>(base + p.conv_offset);
  const float4 h_old = *state;
  uint2 kept[kMaxK];  // tail rows 1 .. K - 2, which move down one row
#pragma unroll
  for (int r = 1; r < kMaxK - 1; ++r) {
    if (r < K - 1) kept[r] = *reinterpret_cast<const uint2*>(tail + int64_t{r} * L + ch);
  }
  const float4 gx_b = __ldg(reinterpret_cast<const float4*>(p.gx_b + ch));
  const float4 ga_b = __ldg(reinterpret_cast<const float4*>(p.ga_b + ch));
  const float4 a_param = __ldg(reinterpret_cast<const float4*>(p.a_param + ch));
  const float4 bx = __ldg(reinterpret_cast<const float4*>(p.bx + ch));
  const float4 by = __ldg(reinterpret_cast<const float4*>(p.by + ch));
  WaitForPriorGrids();
  const int hh = ch / B, j = ch - hh * B;
  const float* g = p.gates + int64_t{t} * 2 * L + hh * 2 * B + j;
  const float4 gx = *reinterpret_cast<const float4*>(g);
  const float4 ga = *reinterpret_cast<const float4*>(g + B);
  const float4 c = *reinterpret_cast<const float4*>(p.c + int64_t{t} * L + ch);
  const float4 x = XY4(p, t, ch);
  const float4 y = XY4(p, t, L + ch);
  float h[4];
  bf16 out[4], shifted_in[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const StepOut o =
        RecurrenceStep(Lane(gx, i) + Lane(gx_b, i), Lane(ga, i) + Lane(ga_b, i), Lane(c, i),
                       Softplus(Lane(a_param, i)), reset, Lane(h_old, i), Lane(y, i) + Lane(by, i));
    h[i] = o.h;
    out[i] = o.out;
    shifted_in[i] = ToB(Lane(x, i) + Lane(bx, i));
  }
  *state = make_float4(h[0], h[1], h[2], h[3]);
  *reinterpret_cast<uint2*>(reinterpret_cast<bf16*>(p.out) + int64_t{t} * L + ch) = Pack4(out);
#pragma unroll
  for (int r = 1; r < kMaxK - 1; ++r) {
    if (r < K - 1) *reinterpret_cast<uint2*>(tail + int64_t{r - 1} * L + ch) = kept[r];
  }
  if (K > 1) *reinterpret_cast<uint2*>(tail + int64_t{K - 2} * L + ch) = Pack4(shifted_in);
}

// Chunked scan: block = (entry, 32 channels), threads = 32 channels x kScanChunks time chunks.
// Phase 1: each chunk scans from h = 0 and keeps the product of its a's; phase 2 (one warp) carries
// the slot's state across the chunks in order; phase 3 rescans each chunk from its carried-in state
// and writes the outputs. Same recurrence, float32 throughout; the carry is associated per chunk.
__global__ void __launch_bounds__(kScanLanes* kScanChunks) RgLruScanKernel(RgLruParams p) {
  __shared__ float s_h[kScanChunks][kScanLanes], s_a[kScanChunks][kScanLanes];
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int e = blockIdx.x;
  const int lane = threadIdx.x % kScanLanes, chunk = threadIdx.x / kScanLanes;
  const int ch = blockIdx.y * kScanLanes + lane;
  const int L = p.L, K = p.K, B = L / p.H;
  const StepEntryRecord en = LoadEntry(p.layout, e);
  const int start = en.start, len = en.len, slot = en.slot;
  const int per = (len + kScanChunks - 1) / kScanChunks;
  const int t_begin = start + min(len, chunk * per), t_end = start + min(len, (chunk + 1) * per);
  const bool live = ch < L;
  const int hh = live ? ch / B : 0, j = live ? ch - hh * B : 0;
  const float* gcol = p.gates + hh * 2 * B + j;
  float h = 0.0f, A = 1.0f;
  if (live) {
    for (int t0 = t_begin; t0 < t_end; t0 += kScanUnroll) {
      float a[kScanUnroll], xn[kScanUnroll];
#pragma unroll
      for (int u = 0; u < kScanUnroll; ++u) {  // straight-line loads, as in phase 3
        const int64_t t = min(t0 + u, t_end - 1);
        a[u] = gcol[t * 2 * L];
        xn[u] = gcol[t * 2 * L + B];
      }
#pragma unroll
      for (int u = 0; u < kScanUnroll; ++u) {  // steps past the chunk's end change nothing
        if (t0 + u >= t_end) {
          a[u] = 1.0f;
          xn[u] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kScanUnroll; ++u) {
        h = __fadd_rn(__fmul_rn(a[u], h), xn[u]);
        A = __fmul_rn(A, a[u]);
      }
    }
  }
  s_h[chunk][lane] = h;
  s_a[chunk][lane] = A;
  __syncthreads();
  char* base = p.state.pool + slot * p.state.slot_stride;
  float* state = reinterpret_cast<float*>(base + p.lru_offset);
  if (chunk == 0 && live) {
    float carry = state[ch];
    for (int c = 0; c < kScanChunks; ++c) {
      const float next = __fadd_rn(__fmul_rn(s_a[c][lane], carry), s_h[c][lane]);
      s_h[c][lane] = carry;  // carried-in state of chunk c
      carry = next;
    }
    state[ch] = carry;
  }
  __syncthreads();
  if (!live) return;
  h = s_h[chunk][lane];
  bf16* out = reinterpret_cast<bf16*>(p.out);
  const float y_bias = p.by[ch];
  for (int t0 = t_begin; t0 < t_end; t0 += kScanUnroll) {
    // Straight-line loads, as in ConvKernel (past the chunk's end, its last token again); the
    // scales, when there are any, after them.
    float a[kScanUnroll], xn[kScanUnroll], y[kScanUnroll];
#pragma unroll
    for (int u = 0; u < kScanUnroll; ++u) {
      const int64_t t = min(t0 + u, t_end - 1);
      a[u] = gcol[t * 2 * L];
      xn[u] = gcol[t * 2 * L + B];
      y[u] = p.xy[t * 2 * L + L + ch];
    }
#pragma unroll
    for (int u = 0; u < kScanUnroll; ++u) {
      const int t = t0 + u;
      if (t < t_end) {
        h = __fadd_rn(__fmul_rn(a[u], h), xn[u]);
        const float yv = ApplyScales(y[u], p.xy_scales, t, L + ch);
        out[int64_t{t} * L + ch] = ToB(h * GeluTanh(yv + y_bias));
      }
    }
  }
  if (chunk != 0) return;
  // New tail: the last K-1 inputs; in place, ascending rows read only rows not yet written.
  bf16* tail = reinterpret_cast<bf16*>(base + p.conv_offset);
  for (int r = 0; r < K - 1; ++r) {
    const int k = len - (K - 1) + r;
    const bf16 v = k >= 0 ? ToB(XY(p, start + k, ch) + p.bx[ch]) : tail[int64_t{r + len} * L + ch];
    tail[int64_t{r} * L + ch] = v;
  }
}

size_t GateSmem(int B, int tokens) {
  return (size_t(2) * tokens * B + 2 * kSlices * tokens * kLanes) * sizeof(float);
}

}  // namespace

const char* CanImplementRgLru(int L, int H, int K) {
  if (H <= 0 || L % H != 0) return "lru_width must be a multiple of num_heads";
  if (L / H > 1024) return "RG-LRU gate block wider than 1024";
  if (K < 1 || K > 8) return "conv1d_width must be in [1, 8]";
  return "";
}

namespace {

template <bool kStaged, int kTok>
cudaError_t LaunchGate(const RgLruParams& p, cudaStream_t stream) {
  const int B = p.L / p.H;
  const dim3 grid((p.n + kTok - 1) / kTok, p.H, (B + kLanes - 1) / kLanes);
  RgLruParams q = p;
  if (int64_t{grid.x} * grid.y > p.tail_counter_capacity) q.tail_counters = nullptr;
  const cudaError_t err = LaunchPdl(RgLruGateKernel<kStaged, kTok>, grid, dim3(kGateThreads),
                                    GateSmem(B, kTok), stream, q);
  if (err != cudaSuccess || q.tail_counters != nullptr) return err;
  return LaunchPdl(TailShiftKernel, dim3(p.n, (p.L + 255) / 256), dim3(256), 0, stream, p);
}

template <bool kStaged>
cudaError_t LaunchGateForBatch(const RgLruParams& p, cudaStream_t stream) {
  switch (p.tokens_per_block > 0 ? p.tokens_per_block : DefaultRgLruDecodeTokensPerBlock(p.n)) {
    case 1:
      return LaunchGate<kStaged, 1>(p, stream);
    case 2:
      return LaunchGate<kStaged, 2>(p, stream);
    case 4:
      return LaunchGate<kStaged, 4>(p, stream);
    case kMaxTokensPerBlock:
      return LaunchGate<kStaged, kMaxTokensPerBlock>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

// Measured (engine_bench, 2B, H200; bench/NOTES.md sessions 15 and 27): one block of n tokens
// keeps 80 blocks busy for n tokens of gate arithmetic; one token a block reads the head's gate
// weights n times. Session 15 (one warp ran phase 3's tokens in turn) chose 1, 2 and 4 a block
// at 1-2, 3-4 and 5-15 tokens. With phase 3 over the warps (session 27), 2 a block up to 4
// tokens and 4 from 5: batch 1 1.705 ms against 1.733, 2 1.716 / 1.725, 4 1.789 / 1.812, 8
// 1.851 / 1.898; 8 a block was slower at 4-8 tokens (+4%), 1 a block slower everywhere.
int DefaultRgLruDecodeTokensPerBlock(int n) { return n <= 4 ? 2 : 4; }

cudaError_t LaunchRgLruDecode(const RgLruParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  const int B = p.L / p.H;
  const bool staged = p.stage_before_wait && B <= kSlices * kPreloadRows && p.K <= kStagedTaps;
  return staged ? LaunchGateForBatch<true>(p, stream) : LaunchGateForBatch<false>(p, stream);
}

namespace {
bool Aligned16(const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; }
// Whether the four-channel decode finish applies (RgLruParams::vector_decode).
bool VectorDecode(const RgLruParams& p) {
  return p.vector_decode && p.L % 4 == 0 && (p.L / p.H) % 4 == 0 && Aligned16(p.xy) &&
         Aligned16(p.c) && Aligned16(p.bx) && Aligned16(p.by) && Aligned16(p.gates) &&
         Aligned16(p.gx_b) && Aligned16(p.ga_b) && Aligned16(p.a_param) && Aligned16(p.out) &&
         Aligned16(p.state.pool) && p.state.slot_stride % 16 == 0 && p.lru_offset % 16 == 0 &&
         p.conv_offset % 8 == 0;
}
constexpr int kVectorThreads = 128;
}  // namespace

cudaError_t LaunchRgLruDecodeFinish(const RgLruParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  if (VectorDecode(p)) {
    return LaunchPdl(DecodeFinishKernel4,
                     dim3(p.n, (p.L / 4 + kVectorThreads - 1) / kVectorThreads),
                     dim3(kVectorThreads), 0, stream, p);
  }
  return LaunchPdl(DecodeFinishKernel, dim3(p.n, (p.L + 255) / 256), dim3(256), 0, stream, p);
}

namespace {
__global__ void GateMathKernel(RgLruParams p) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const bool reset = TokenPosition(EntryOfToken(p.layout, t), t) == 0;
  const int L = p.L, B = L / p.H;
  for (int ch = blockIdx.y * blockDim.x + threadIdx.x; ch < L; ch += gridDim.y * blockDim.x) {
    const int hh = ch / B, j = ch - hh * B;
    float* g = p.gates + int64_t{t} * 2 * L + hh * 2 * B + j;
    const GateOut o = GateMath(g[0] + p.gx_b[ch], g[B] + p.ga_b[ch], p.c[int64_t{t} * L + ch],
                               Softplus(p.a_param[ch]), reset);
    g[0] = o.a_eff;
    g[B] = o.xn;
  }
}

// Four channels a thread, every load and store a float4: the scalar loop above ran at 1.65x its
// byte floor at 1 x 2048 (PROFILE.md, session 19), each thread holding one channel's six loads in
// flight at a time. The same GateMath per channel, so the same bits. Needs B % 4 == 0 and
// 16-byte aligned arrays (LaunchRgLruGateMath checks).
__global__ void GateMathKernel4(RgLruParams p) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const int L = p.L, B = L / p.H;
  const int ch = 4 * (blockIdx.y * blockDim.x + threadIdx.x);
  if (ch >= L) return;
  const bool reset = TokenPosition(EntryOfToken(p.layout, t), t) == 0;
  const int hh = ch / B, j = ch - hh * B;
  float* g = p.gates + int64_t{t} * 2 * L + hh * 2 * B + j;
  const float4 gx = *reinterpret_cast<const float4*>(g);
  const float4 ga = *reinterpret_cast<const float4*>(g + B);
  const float4 c = *reinterpret_cast<const float4*>(p.c + int64_t{t} * L + ch);
  const float4 bx = __ldg(reinterpret_cast<const float4*>(p.gx_b + ch));
  const float4 ba = __ldg(reinterpret_cast<const float4*>(p.ga_b + ch));
  const float4 ap = __ldg(reinterpret_cast<const float4*>(p.a_param + ch));
  const GateOut o0 = GateMath(gx.x + bx.x, ga.x + ba.x, c.x, Softplus(ap.x), reset);
  const GateOut o1 = GateMath(gx.y + bx.y, ga.y + ba.y, c.y, Softplus(ap.y), reset);
  const GateOut o2 = GateMath(gx.z + bx.z, ga.z + ba.z, c.z, Softplus(ap.z), reset);
  const GateOut o3 = GateMath(gx.w + bx.w, ga.w + ba.w, c.w, Softplus(ap.w), reset);
  *reinterpret_cast<float4*>(g) = make_float4(o0.a_eff, o1.a_eff, o2.a_eff, o3.a_eff);
  *reinterpret_cast<float4*>(g + B) = make_float4(o0.xn, o1.xn, o2.xn, o3.xn);
}

__global__ void PackGateKernel(const bf16* gx_w, const bf16* ga_w, int B, __half* out) {
  const int h = blockIdx.y, o = blockIdx.x;  // o in [0, 2B)
  const bf16* src = o < B ? gx_w : ga_w;
  const int oo = o < B ? o : o - B;
  for (int i = threadIdx.x; i < B; i += blockDim.x) {
    out[(int64_t{h} * 2 * B + o) * B + i] =
        __float2half_rn(ToF(src[(int64_t{h} * B + i) * B + oo]));
  }
}
}  // namespace

cudaError_t LaunchPackGateWeights(const bf16_t* gx_w, const bf16_t* ga_w, int H, int B,
                                  uint16_t* out, cudaStream_t stream) {
  PackGateKernel<<<dim3(2 * B, H), 256, 0, stream>>>(reinterpret_cast<const bf16*>(gx_w),
                                                     reinterpret_cast<const bf16*>(ga_w), B,
                                                     reinterpret_cast<__half*>(out));
  return cudaGetLastError();
}

cudaError_t LaunchRgLruGateMath(const RgLruParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (p.vector_gate_math && (p.L / p.H) % 4 == 0 && aligned(p.gates) && aligned(p.c) &&
      aligned(p.gx_b) && aligned(p.ga_b) && aligned(p.a_param)) {
    constexpr int kThreads = 128;
    return LaunchPdl(GateMathKernel4, dim3(p.n, (p.L / 4 + kThreads - 1) / kThreads),
                     dim3(kThreads), 0, stream, p);
  }
  return LaunchPdl(GateMathKernel, dim3(p.n, (p.L + 1023) / 1024), dim3(256), 0, stream, p);
}

cudaError_t LaunchRgLruConv(const RgLruParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  // One channel per thread: the tail loads are latency-bound (6.7x the byte floor at batch 256
  // with four channels per thread, bench/PROFILE.md; measured again in session 21 with the
  // entry and tails loaded before the wait: 12.5 against 11.2 us at 256 tokens, 35.0 against
  // 29.4 at 1024, bench/NOTES.md). Runs of 16 tokens when entries are longer
  // than a token on average (prefill).
  constexpr int kPrefillRun = 16;
  if (p.n >= 2 * p.num_entries) {
    return LaunchPdl(ConvKernel<kPrefillRun>,
                     dim3((p.n + kPrefillRun - 1) / kPrefillRun, (p.L + 255) / 256), dim3(256), 0,
                     stream, p);
  }
  if (p.specialized_decode_conv && p.K == 4 && p.n == p.num_entries) {
    return LaunchPdl(ConvDecodeKernel<4>, dim3(p.n, (p.L + 255) / 256), dim3(256), 0, stream, p);
  }
  return LaunchPdl(ConvKernel<1>, dim3(p.n, (p.L + 255) / 256), dim3(256), 0, stream, p);
}

cudaError_t LaunchRgLruScan(const RgLruParams& p, cudaStream_t stream) {
  if (p.num_entries <= 0) return cudaSuccess;
  dim3 grid(p.num_entries, (p.L + kScanLanes - 1) / kScanLanes);
  return LaunchPdl(RgLruScanKernel, grid, dim3(kScanLanes * kScanChunks), 0, stream, p);
}

}  // namespace griffin::kernels
