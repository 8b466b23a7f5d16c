// The merge after a split pass (flash-decoding): each key split wrote a partial (o, m, l); see
// attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

// Merges the splits' partial outputs: o = sum_s o_s e^(m_s - m) / sum_s l_s e^(m_s - m); a split
// that saw no key (m_s = -inf) contributes nothing. The first warp turns (m_s, l_s) into one
// weight per split and lists the splits of non-zero weight, in order (at batch 1 most of the 64 saw
// none: a split per 32-key tile of the whole window); each output dimension is then one weighted
// sum over that list, its loads issued eight at a time. Every value is loaded once and each step
// waits on one round of loads: the version before waited on three passes over (m_s, l_s) and on
// one load per split (7.2 us a launch at batch 1 under ncu, bench/NOTES.md session 12); the sums
// are the same, in the same order.
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
  constexpr int kPerLane = kMaxAttentionSplits / 32;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
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
    if (lane == 0) nonempty = listed;
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

}  // namespace
}  // namespace attention_internal

cudaError_t LaunchAttentionCombine(const AttentionParams& p, cudaStream_t stream) {
  if (p.splits < 1 || p.splits > kMaxAttentionSplits) return cudaErrorInvalidValue;
  const int threads = p.hd < 256 ? p.hd : 256;
  return LaunchPdl(attention_internal::CombineKernel, dim3(p.n, p.H), dim3(threads), 0, stream, p);
}

}  // namespace griffin::kernels
