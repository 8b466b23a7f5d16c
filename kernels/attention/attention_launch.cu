// Which attention kernel a launch takes (see attention.cuh): tensor-core prefill tiles, tensor-core
// decode tiles, or the scalar kernel for every other case; the split combine after a split decode.
#include <algorithm>

#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {

using namespace attention_internal;  // NOLINT: this file only dispatches to them

int AttentionPrefillTileTokens(int H, int KV, int hd) {
  if (PrefillMmaEligible(H, KV, hd)) return std::max(1, kPrefillMmaRows / (H / KV));
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
  if (err == cudaSuccess) err = PrepareDecodeMma();
  if (err == cudaSuccess) err = PreparePrefillMma();
  return err;
}

cudaError_t LaunchAttention(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  if (p.splits == 1 && max_tile_tokens > 1 && PrefillMmaEligible(p.H, p.KV, p.hd) &&
      max_tile_tokens * (p.H / p.KV) <= kPrefillMmaRows) {
    return LaunchPrefillMma(p, stream);
  }
  const cudaError_t err = max_tile_tokens == 1 && DecodeMmaEligible(p.H, p.KV, p.hd)
                              ? LaunchDecodeMma(p, stream)
                              : LaunchScalar(p, max_tile_tokens, stream);
  if (err != cudaSuccess || p.splits == 1) return err;
  return LaunchAttentionCombine(p, stream);
}

}  // namespace griffin::kernels
