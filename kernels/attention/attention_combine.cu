// The merge after a split pass (flash-decoding): each key split wrote a partial (o, m, l); see
// attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

// Merges the splits' partial outputs: o = sum_s o_s e^(m_s - m) / sum_s l_s e^(m_s - m); a split
// that saw no key (m_s = -inf) contributes nothing. The first warp turns (m_s, l_s) into one
// weight per split (shared memory), so each output dimension is one weighted sum that skips the
// empty splits (at batch 1 most of the 64 are: a split per 32-key tile of the whole window).
__global__ void CombineKernel(AttentionParams p) {
  __shared__ float weight[kMaxAttentionSplits];
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x, head = blockIdx.y;
  const int64_t base = (int64_t{t} * p.H + head) * p.splits;
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < p.splits; s += 32) mx = fmaxf(mx, p.part_ml[2 * (base + s)]);
    mx = WarpMax(mx);
    float denom = 0.0f;
    for (int s = threadIdx.x; s < p.splits; s += 32) {
      const float ms = p.part_ml[2 * (base + s)];
      if (ms != -INFINITY) denom += p.part_ml[2 * (base + s) + 1] * expf(ms - mx);
    }
    denom = WarpSum(denom);
    for (int s = threadIdx.x; s < p.splits; s += 32) {
      const float ms = p.part_ml[2 * (base + s)];
      weight[s] = ms == -INFINITY ? 0.0f : expf(ms - mx) / denom;
    }
  }
  __syncthreads();
  for (int d = threadIdx.x; d < p.hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      if (weight[s] != 0.0f) acc += p.part_o[(base + s) * p.hd + d] * weight[s];
    }
    reinterpret_cast<bf16*>(p.out)[int64_t{t} * p.H * p.hd + head * p.hd + d] = ToB(acc);
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
