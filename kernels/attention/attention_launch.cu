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

namespace {
bool UsesMma(const AttentionParams& p, int max_tile_tokens) {
  return MmaEligible(p.H, p.KV, p.hd) && max_tile_tokens * (p.H / p.KV) <= kMmaRows;
}
}  // namespace

AttentionPrefillBlock AttentionPrefillBlockOf(int H, int KV, int hd, int max_tile_tokens) {
  if (!MmaEligible(H, KV, hd) || max_tile_tokens * (H / KV) > kMmaRows) return {};
  return MmaBlockOf(H, KV, hd, max_tile_tokens);
}

AttentionSideLaunches AttentionSideLaunchesOf(const AttentionParams& p, int max_tile_tokens) {
  // A decode step's ring: the combine writes it after a split pass, the tensor-core kernel after
  // one split; only the scalar kernel with one split leaves it to LaunchRingWrite. (Cut tiles
  // merge inside the kernel: no combine.)
  const bool split = p.splits > 1;
  return {split, p.decode_writes_ring && !split && !UsesMma(p, max_tile_tokens)};
}

cudaError_t LaunchAttention(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  if (p.split_tiles && (p.splits != 1 || p.tile_counters == nullptr || p.decode_writes_ring)) {
    return cudaErrorInvalidValue;  // cut tiles: one split each, their tickets, prefill only
  }
  const AttentionSideLaunches side = AttentionSideLaunchesOf(p, max_tile_tokens);
  AttentionParams q = p;  // what the attention kernel itself does
  if (side.ring_write) q.decode_writes_ring = false;
  cudaError_t err = UsesMma(p, max_tile_tokens) ? LaunchMma(q, max_tile_tokens, stream)
                                                : LaunchScalar(q, max_tile_tokens, stream);
  if (err == cudaSuccess && side.combine) err = LaunchAttentionCombine(p, stream);
  if (err == cudaSuccess && side.ring_write) err = LaunchRingWrite(p, stream);
  return err;
}

}  // namespace griffin::kernels
