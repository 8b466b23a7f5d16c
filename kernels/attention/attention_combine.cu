// The merge after a split pass (flash-decoding): each key split wrote a partial (o, m, l); see
// attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

// One (token, head) row's split weights, by one warp (every lane calls it): o = sum_s o_s e^(m_s -
// m) / sum_s l_s e^(m_s - m); a split that saw no key (m_s = -inf) contributes nothing. Lists
// the splits of non-zero weight, in order, in weight[] and split_of[] (at batch 1 most of the 64
// saw none: a split per 32-key tile of the whole window) and returns how many (every lane).
__device__ __forceinline__ int ListSplitWeights(const AttentionParams& p, int64_t base, int lane,
                                                float* weight, int* split_of) {
  constexpr int kPerLane = kMaxAttentionSplits / 32;
  float m[kPerLane], l[kPerLane];
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int s = lane + 32 * u;
    m[u] = s < p.splits ? p.part_ml[2 * (base + s)] : -INFINITY;
    l[u] = s < p.splits ? p.part_ml[2 * (base + s) + 1] : 0.0f;
  }
  float mx = -INFINITY;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) mx = fmaxf(mx, m[u]);
  mx = WarpMax(mx);
  float denom = 0.0f;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    if (m[u] != -INFINITY) denom += l[u] * expf(m[u] - mx);
  }
  denom = WarpSum(denom);
  int listed = 0;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const float w = m[u] == -INFINITY ? 0.0f : expf(m[u] - mx) / denom;
    const unsigned ballot = __ballot_sync(0xffffffffu, w != 0.0f);
    if (w != 0.0f) {
      const int at = listed + __popc(ballot & ((1u << lane) - 1));
      weight[at] = w;
      split_of[at] = lane + 32 * u;
    }
    listed += __popc(ballot);
  }
  return listed;
}

// A block per (token, head) row: the first warp lists the weights; each output dimension is then
// one weighted sum over that list, its loads issued eight at a time. Every value is loaded once
// and each step waits on one round of loads: the version before waited on three passes over
// (m_s, l_s) and on one load per split (7.2 us a launch at batch 1 under ncu, bench/NOTES.md
// session 12); the sums are the same, in the same order.
// Decode step (p.decode_writes_ring): the block of the first head of each kv head's group then
// writes the token's key and value into the ring, every split that read it being done.
__global__ void CombineKernel(AttentionParams p) {
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ int split_of[kMaxAttentionSplits];
  __shared__ int nonempty;
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x, head = blockIdx.y;
  const int64_t base = (int64_t{t} * p.H + head) * p.splits;
  if (threadIdx.x < 32) {
    const int listed = ListSplitWeights(p, base, threadIdx.x, weight, split_of);
    if (threadIdx.x == 0) nonempty = listed;
  }
  __syncthreads();
  const int count = nonempty;
  const float* o = p.part_o + base * p.hd;
  for (int d = threadIdx.x; d < p.hd; d += blockDim.x) {
    float acc = 0.0f;
    int k = 0;
    for (; k + 8 <= count; k += 8) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = o[int64_t{split_of[k + u]} * p.hd + d];
#pragma unroll
      for (int u = 0; u < 8; ++u) acc += v[u] * weight[k + u];
    }
    for (; k < count; ++k) acc += o[int64_t{split_of[k]} * p.hd + d] * weight[k];
    reinterpret_cast<bf16*>(p.out)[int64_t{t} * p.H * p.hd + head * p.hd + d] = ToB(acc);
  }
  const int G = p.H / p.KV;
  if (p.decode_writes_ring && head % G == 0) {
    WriteRingRow(p, EntryOfToken(p.layout, t), t, head / G);
  }
}

// A warp per (token, head) row, kCombineWarps rows a block, kDims dimensions a lane (lane + 32 j):
// the same weights and the same sums in the same order as CombineKernel, so the same bits. A
// prefill pass's rows are many and its splits few (1 x 512 at 2B: 5,120 rows of 3 splits), where
// CombineKernel's block per row spent its time on the first warp's weights and the barrier after
// them, with one value in flight per thread for most of its threads: 18.5 us a launch under ncu
// for 21 MB (1.1 TB/s; bench/PROFILE.md, session 28). Decode steps that write the ring keep
// CombineKernel (its ring write takes the block).
constexpr int kCombineWarps = 4;
template <int kDims>
__global__ void __launch_bounds__(kCombineWarps * 32) CombineRowsKernel(AttentionParams p) {
  __shared__ float weight[kCombineWarps][kMaxAttentionSplits];
  __shared__ int split_of[kCombineWarps][kMaxAttentionSplits];
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t{blockIdx.x} * kCombineWarps + warp;  // token x H + head
  if (row >= int64_t{p.n} * p.H) return;  // the whole warp: nothing below waits on the block
  const int64_t base = row * p.splits;
  const int count = ListSplitWeights(p, base, lane, weight[warp], split_of[warp]);
  __syncwarp();
  const int hd = p.hd;
  const float* o = p.part_o + base * hd;
  // Dimensions past hd load the last one again (straight-line loads) and are not stored.
  int dim[kDims];
#pragma unroll
  for (int j = 0; j < kDims; ++j) dim[j] = min(lane + 32 * j, hd - 1);
  float acc[kDims];
#pragma unroll
  for (int j = 0; j < kDims; ++j) acc[j] = 0.0f;
  const float* w = weight[warp];
  const int* from = split_of[warp];
  int k = 0;
  for (; k + 8 <= count; k += 8) {
    float v[8][kDims];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const float* src = o + int64_t{from[k + u]} * hd;
#pragma unroll
      for (int j = 0; j < kDims; ++j) v[u][j] = src[dim[j]];
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) {
#pragma unroll
      for (int j = 0; j < kDims; ++j) acc[j] += v[u][j] * w[k + u];
    }
  }
  for (; k < count; ++k) {
    const float* src = o + int64_t{from[k]} * hd;
#pragma unroll
    for (int j = 0; j < kDims; ++j) acc[j] += src[dim[j]] * w[k];
  }
  bf16* out = reinterpret_cast<bf16*>(p.out) + row * hd;
#pragma unroll
  for (int j = 0; j < kDims; ++j) {
    if (lane + 32 * j < hd) out[lane + 32 * j] = ToB(acc[j]);
  }
}

}  // namespace
}  // namespace attention_internal

cudaError_t LaunchAttentionCombine(const AttentionParams& p, cudaStream_t stream) {
  if (p.splits < 1 || p.splits > kMaxAttentionSplits) return cudaErrorInvalidValue;
  using attention_internal::CombineRowsKernel;
  using attention_internal::kCombineWarps;
  if (p.warp_combine && !p.decode_writes_ring && p.hd <= 256) {
    const dim3 grid((int64_t{p.n} * p.H + kCombineWarps - 1) / kCombineWarps);
    const dim3 block(kCombineWarps * 32);
    return p.hd <= 32    ? LaunchPdl(CombineRowsKernel<1>, grid, block, 0, stream, p)
           : p.hd <= 64  ? LaunchPdl(CombineRowsKernel<2>, grid, block, 0, stream, p)
           : p.hd <= 128 ? LaunchPdl(CombineRowsKernel<4>, grid, block, 0, stream, p)
                         : LaunchPdl(CombineRowsKernel<8>, grid, block, 0, stream, p);
  }
  const int threads = p.hd < 256 ? p.hd : 256;
  return LaunchPdl(attention_internal::CombineKernel, dim3(p.n, p.H), dim3(threads), 0, stream, p);
}

}  // namespace griffin::kernels
