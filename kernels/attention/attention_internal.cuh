// Shared by the attention kernel files (not part of the launcher API): tile sizes, the
// tensor-core instruction wrappers, and each kernel's own launcher, which attention_launch.cu
// dispatches to.
#ifndef GRIFFIN_KERNELS_ATTENTION_ATTENTION_INTERNAL_CUH_
#define GRIFFIN_KERNELS_ATTENTION_ATTENTION_INTERNAL_CUH_

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention/attention.cuh"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "kernels/step_layout.cuh"

namespace griffin::kernels::attention_internal {

// Keys staged per shared-memory tile by the scalar kernel (and the unit of its key splits).
inline constexpr int kKeyTile = 32;
// Largest dynamic shared memory any attention kernel asks for.
inline constexpr size_t kMaxSmem = 200 * 1024;

// Scalar kernel (attention_scalar.cu).
size_t ScalarSmemBytes(int rows, int hd);
cudaError_t PrepareScalar();
cudaError_t LaunchScalar(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream);

// Prefill and decode tiles on the tensor cores (attention_mma.cu): G <= kMmaRows, head_dim one
// of 16, 32, 64, 128, 256; the block has 64 rows (tokens x G, 32-key tiles) or 128 (64-key
// tiles) as the tile needs. Writes split partials when p.splits > 1.
inline constexpr int kMmaRows = 128;
bool MmaEligible(int H, int KV, int hd);
cudaError_t PrepareMma();
// With p.decode_writes_ring and one split, each block writes its token's ring row at the end.
cudaError_t LaunchMma(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream);
AttentionPrefillBlock MmaBlockOf(int H, int KV, int hd, int max_tile_tokens);

// D += A.B on the tensor cores, m16n8k16, float32 accumulate; A row-major, B column-major, in the
// PTX fragment layout (per thread: rows g, g + 8 and columns 2 tig, 2 tig + 1 of each 8-wide part).
__device__ __forceinline__ void MmaBf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void MmaF16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ uint32_t Word(const void* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
__device__ __forceinline__ uint32_t Pack(__half lo, __half hi) {
  return uint32_t(__half_as_ushort(lo)) | (uint32_t(__half_as_ushort(hi)) << 16);
}
// Eight bf16 values (16 bytes) converted to IEEE half: V on the tensor cores' P.V is half (exact
// within half's normal range) so P keeps 11 bits.
__device__ __forceinline__ uint4 Bf16x8ToHalf(const uint4& v) {
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&v);
  uint4 out;
  uint32_t* w = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const float2 f = __bfloat1622float2(b[u]);
    w[u] = Pack(__float2half_rn(f.x), __float2half_rn(f.y));
  }
  return out;
}

// The two parts of a cut tile (QueryTile::part): each part's block writes its rows' partial (o, m,
// l), then SecondPartOfTile fences those writes and takes the tile's ticket; the block that takes
// it second resets it (zero for the next launch) and merges the other part's rows into its own
// (the threadfence-reduction pattern; the first part's writes were fenced before its ticket).
__device__ __forceinline__ bool SecondPartOfTile(unsigned* ticket) {
  __shared__ unsigned taken;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) taken = atomicAdd(ticket, 1u);
  __syncthreads();
  const bool second = taken != 0;
  if (second) {
    if (threadIdx.x == 0) *ticket = 0;
    __threadfence();
  }
  return second;
}
// A row's weights for its two parts' partials, maxima m0 and m1 (log2 domain when `log2`, else
// natural): m = max, s_i = e^(m_i - m), 0 for a part that saw no key of the row (m_i = -inf).
__device__ __forceinline__ void PartWeights(float m0, float m1, bool log2, float& s0, float& s1) {
  const float m = fmaxf(m0, m1);
  s0 = m0 == -INFINITY ? 0.0f : log2 ? exp2f(m0 - m) : expf(m0 - m);
  s1 = m1 == -INFINITY ? 0.0f : log2 ? exp2f(m1 - m) : expf(m1 - m);
}
// x0 s0 + x1 s1 in part order with no fused multiply-add: the same bits whichever part's block
// computes it.
__device__ __forceinline__ float MergeParts(float x0, float s0, float x1, float s1) {
  return __fadd_rn(__fmul_rn(x0, s0), __fmul_rn(x1, s1));
}
// Partial row of (step token t, head) for part `part` of a cut tile.
__device__ __forceinline__ int64_t CutTileRow(const AttentionParams& p, int t, int head, int part) {
  return (int64_t{t - p.partial_first_token} * p.H + head) * 2 + part;
}
__device__ __forceinline__ unsigned* CutTileTicket(const AttentionParams& p, int t0, int kvh) {
  return p.tile_counters + int64_t{t0 - p.partial_first_token} * p.KV + kvh;
}

// Writes token t's key and value of kv head g into its slot's ring (a decode step's token: one
// per entry), with the threads of the calling block.
__device__ __forceinline__ void WriteRingRow(const AttentionParams& p, const StepEntryRecord& en,
                                             int t, int g) {
  const int64_t row = int64_t{en.pos0 % p.W} * p.KV * p.hd + int64_t{g} * p.hd;
  bf16* ring_k = SlotRegion<bf16>(p.state, en.slot, p.k_offset) + row;
  bf16* ring_v = SlotRegion<bf16>(p.state, en.slot, p.v_offset) + row;
  const int64_t src = (int64_t{t} * p.KV + g) * p.hd;
  const bf16* k = reinterpret_cast<const bf16*>(p.k) + src;
  const bf16* v = reinterpret_cast<const bf16*>(p.v) + src;
  for (int i = threadIdx.x; i < p.hd; i += blockDim.x) {
    ring_k[i] = k[i];
    ring_v[i] = v[i];
  }
}

}  // namespace griffin::kernels::attention_internal

#endif  // GRIFFIN_KERNELS_ATTENTION_ATTENTION_INTERNAL_CUH_
