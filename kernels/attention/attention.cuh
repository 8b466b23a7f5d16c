// Local multi-query attention over a per-slot KV ring (SPEC.md §2.5, §3, §8.2).
//
// LaunchRope: qkv float32 [n, (H + 2 KV) hd] (the fused q|k|v GEMM) -> q bf16 [n, H hd],
//   k bf16 [n, KV hd] with RoPE on the first `rotary` dims of every q and k head (NeoX pairing i with
//   i + rotary/2, inv_freq = 1 / theta^(2i / rotary), angle = pos * inv_freq, all float32, as the
//   CPU reference), v bf16 [n, KV hd]. Keys are rounded to bf16 here, so a key read back from the
//   ring and a key of the current run are the same number (chunked == whole prefill).
//   qkv_scales (optional): qkv is an FP8 GEMM's unscaled output, scaled as it is read (types.h).
//
// LaunchAttention: for query token t at position p in head h (kv head g = h / (H / KV)):
//   keys j with p - W <= pos_j <= p (itself plus W earlier ones, the reference's W+1 keys);
//   a key of this run comes from k/v, an earlier one from the slot's ring at pos_j mod W.
//   s_j = (q . k_j) * scale (float32), o = sum_j softmax(s)_j v_j (float32 online softmax), out bf16.
//   Work unit: a tile of consecutive query tokens of one entry (QueryTile) x one kv head; the
//   block holds every query head of the group for every token of the tile (K/V read once per
//   group), keys in tiles of 32 or 64 staged in shared memory.
//   Decode (one-token tiles) may split the key range over `splits` blocks (flash-decoding): each
//   writes a partial (m, l, o) and LaunchAttentionCombine merges them. A prefill pass may instead
//   cut its longest tiles into two key parts, a record each (QueryTile::part, split_tiles): both
//   parts' blocks write their partials, and the one that ends second merges the other's into its
//   own and writes the output (no combine launch; the sums are the same bits whichever ends
//   first).
//   Accumulation float32; the ring is read before the step writes it.
//   With head_dim one of 16, 32, 64, 128, 256 and at most 128 query heads per kv head, prefill
//   and decode tiles both run on the tensor cores (one FlashAttention-2-style kernel, mma.sync
//   m16n8k16, float32 accumulate: Q.K^T in bf16, P.V in half with P rounded to half and V
//   converted to half, exact within half's normal range; K/V tiles double-buffered through
//   cp.async); other head sizes run the scalar float32 kernel.
//   Tolerance (kernels_test): bf16 output rounding (2^-8 relative) plus, on the tensor-core path,
//   2^-11 max|v| from the half P, against a float64 reference on the same bf16 q/k/v.
//
// LaunchRingWrite: after attention, writes the last min(len, W) keys/values of every entry into
//   the ring slot pos mod W. In a decode step LaunchAttention can do it (decode_writes_ring):
//   each entry's ring rows of a kv head are read only by that (token, kv head)'s blocks, so the
//   kernel that runs after them all (the combine, or the only block) writes them.
//
// Files: rope_ring.cu (RoPE, ring write), attention_scalar.cu (the float32 CUDA-core kernel: any
// head size, the reference path), attention_mma.cu (prefill and decode tiles on the tensor cores),
// attention_combine.cu (the merge of key splits), attention_launch.cu (which kernel a launch
// takes). Addressing: kernels/step_layout.cuh. CPU reference: attention_reference.h; cases:
// attention_cases.cc.
#ifndef GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUH_
#define GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

struct AttentionParams {
  const float* qkv = nullptr;  // rope input
  InputScales qkv_scales;      // of qkv, when an FP8 GEMM left them to RoPE
  bf16_t* q = nullptr;         // [n, H hd]
  bf16_t* k = nullptr;         // [n, KV hd]
  bf16_t* v = nullptr;         // [n, KV hd]
  TokenLayout layout;
  const QueryTile* tiles = nullptr;  // [num_tiles]
  int num_tiles = 0;
  StateRef state;
  int64_t k_offset = 0;  // bytes inside a slot: bf16 [W, KV, hd]
  int64_t v_offset = 0;
  int n = 0, H = 0, KV = 1, hd = 0, W = 0, rotary = 0;
  float theta = 10000.0f;
  float scale = 1.0f;
  int splits = 1;  // key splits per tile (grid z); each writes a partial
  // Some tile records are parts of a tile (QueryTile::part; only with splits == 1): each (token,
  // head) of a cut tile has two partial rows, one per part, from partial_first_token on (the
  // buffer holds only the span of the cut tiles), and tile_counters one ticket per (cut tile's
  // first token - partial_first_token, kv head), zero between launches (the part that ends
  // second resets it).
  bool split_tiles = false;
  int partial_first_token = 0;
  unsigned* tile_counters = nullptr;
  float* part_o = nullptr;   // [n, H, splits, hd]; cut tiles [n - partial_first_token, H, 2, hd]
  float* part_ml = nullptr;  // [n, H, splits, 2]; cut tiles [n - partial_first_token, H, 2, 2]
  bf16_t* out = nullptr;     // [n, H hd]
  // A decode step (every entry one token): the ring write happens in the launches before it, in
  // place of LaunchRingWrite: the split combine (block of head g G writes kv head g's row) or,
  // with one split, the attention kernel's block itself; each reads nothing of the ring after.
  bool decode_writes_ring = false;
  // LaunchRope: four elements a thread (float4 loads, 8-byte stores) where hd % 4 == 0, rotary %
  // 8 == 0 and the arrays are aligned; false keeps one element a thread. Bit-identical (the
  // rope.scaled_input cases compare them).
  bool vector_rope = true;
  // LaunchAttentionCombine: a warp per (token, head) row where it can (no ring write, hd <= 256);
  // false keeps a block per row. Bit-identical (the attention cases compare them).
  bool warp_combine = true;
};

// Most key splits a launch may ask for (the combine keeps one weight per split on chip).
inline constexpr int kMaxAttentionSplits = 64;

// Largest tile (in query tokens) the scalar attention kernel takes for these sizes; 0 if none fits.
int AttentionMaxTileTokens(int H, int KV, int hd);
// Tile for prefill: 128 / (H / KV) tokens on the tensor-core kernel when it takes these sizes,
// else the scalar kernel's. LaunchAttention uses the tensor cores whenever it can (a tile of up to
// 64 rows gets the kernel's smaller block).
int AttentionPrefillTileTokens(int H, int KV, int hd);
const char* CanImplementAttention(int H, int KV, int hd, int rotary);
// The tensor-core kernel's block for prefill tiles of up to max_tile_tokens tokens: keys it
// stages per step and blocks an SM holds at once; {0, 0} where these sizes take the scalar
// kernel. After PrepareAttentionKernels.
struct AttentionPrefillBlock {
  int key_tile = 0, blocks_per_sm = 0;
};
AttentionPrefillBlock AttentionPrefillBlockOf(int H, int KV, int hd, int max_tile_tokens);

// Raises the attention kernel's shared-memory limit; call once per process before launching
// (and before any graph capture).
cudaError_t PrepareAttentionKernels();
cudaError_t LaunchRope(const AttentionParams& p, cudaStream_t stream);
// LaunchRope's passes of at least this many tokens run a block per token (its sines and cosines
// computed once for all heads), shorter ones a block per token and head (decode batches: enough
// blocks to spread over the GPU).
inline constexpr int kRopeTokensForBlockPerToken = 128;
cudaError_t LaunchAttention(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream);
// The launches LaunchAttention makes after the attention kernel for these parameters: the split
// combine (splits > 1) and the ring write (decode_writes_ring, which neither the kernel nor the
// combine does: the scalar kernel with one split), in that order. For launch traces.
struct AttentionSideLaunches {
  bool combine = false, ring_write = false;
};
AttentionSideLaunches AttentionSideLaunchesOf(const AttentionParams& p, int max_tile_tokens);
cudaError_t LaunchAttentionCombine(const AttentionParams& p, cudaStream_t stream);
cudaError_t LaunchRingWrite(const AttentionParams& p, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUH_
