// Which attention kernel a launch takes (see attention.cuh): the tensor-core kernel for prefill and
// decode tiles, or the scalar kernel for every other case; the split combine after a split pass.
#include <algorithm>

#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {

using namespace attention_internal;  // NOLINT: this file only dispatches to them

int AttentionPrefillTileTokens(int H, int KV, int hd) {
  if (MmaEligible(H, KV, hd)) return std::max(1, kMmaRows / (H / KV));
  return AttentionMaxTileTokens(H, KV, hd);
}

const char* CanImplementAttention(int H, int KV, int hd, int rotary) {
  if (KV <= 0 || H % KV != 0) return "num_heads must be a multiple of num_kv_heads";
  if (rotary % 2 != 0 || rotary > hd) return "rotary dims must be even and at most head_dim";
  if (hd % 2 != 0) return "head_dim must be even";
  if (AttentionMaxTileTokens(H, KV, hd) == 0)
    return "attention head group too large for shared memory";
  return "";
}

cudaError_t PrepareAttentionKernels() {
  cudaError_t err = PrepareScalar();
  if (err == cudaSuccess) err = PrepareMma();
  return err;
}

cudaError_t LaunchAttention(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  const cudaError_t err = MmaEligible(p.H, p.KV, p.hd) && max_tile_tokens * (p.H / p.KV) <= kMmaRows
                              ? LaunchMma(p, max_tile_tokens, stream)
                              : LaunchScalar(p, max_tile_tokens, stream);
  if (err != cudaSuccess || p.splits == 1) return err;
  return LaunchAttentionCombine(p, stream);
}

}  // namespace griffin::kernels
