// RoPE (splitting the fused q|k|v GEMM output) and the KV-ring write. See attention.cuh.
#include <algorithm>

#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace {

// A rotary pair (x_i, x_{i+half}) turned by the angle: (x_i cos - x_{i+half} sin, x_{i+half} cos
// + x_i sin), each rounding spelled out so that both paths below give the same bits.
__device__ __forceinline__ float2 Rotate(float first, float second, float sn, float cs) {
  return make_float2(__fmaf_rn(first, cs, -__fmul_rn(second, sn)),
                     __fmaf_rn(second, cs, __fmul_rn(first, sn)));
}

__device__ __forceinline__ bf16* RopeOutputRow(const AttentionParams& p, int t, int head) {
  const int H = p.H, KV = p.KV;
  return head < H        ? reinterpret_cast<bf16*>(p.q) + (int64_t{t} * H + head) * p.hd
         : head < H + KV ? reinterpret_cast<bf16*>(p.k) + (int64_t{t} * KV + head - H) * p.hd
                         : reinterpret_cast<bf16*>(p.v) + (int64_t{t} * KV + head - H - KV) * p.hd;
}

// One element a thread: element d of a rotating head loads its pair's two values.
__device__ __forceinline__ void RopeElements(const AttentionParams& p, int t, int head0, int heads,
                                             const float* rope_table) {
  const int hd = p.hd, half = p.rotary / 2;
  const float* qkv_row = p.qkv + int64_t{t} * (p.H + 2 * p.KV) * hd;
  for (int e = threadIdx.x; e < heads * hd; e += blockDim.x) {
    const int head = head0 + e / hd, d = e - (e / hd) * hd;
    const int col0 = head * hd;
    const float* hrow = qkv_row + col0;
    float val = ApplyScales(hrow[d], p.qkv_scales, t, col0 + d);
    if (head < p.H + p.KV && d < p.rotary) {
      const int i = d < half ? d : d - half;
      const float sn = rope_table[i], cs = rope_table[half + i];
      const float first = ApplyScales(hrow[i], p.qkv_scales, t, col0 + i);
      const float second = ApplyScales(hrow[i + half], p.qkv_scales, t, col0 + i + half);
      const float2 turned = Rotate(first, second, sn, cs);
      val = d < half ? turned.x : turned.y;
    }
    RopeOutputRow(p, t, head)[d] = ToB(val);
  }
}

__device__ __forceinline__ void StoreBf16x4(bf16* dst, float a, float b, float c, float d) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = packed;
}

__device__ __forceinline__ float4 ScaledQuad(const float* row, const InputScales& scales, int64_t t,
                                             int col) {
  float4 v = *reinterpret_cast<const float4*>(row + col);
  v.x = ApplyScales(v.x, scales, t, col);
  v.y = ApplyScales(v.y, scales, t, col + 1);
  v.z = ApplyScales(v.z, scales, t, col + 2);
  v.w = ApplyScales(v.w, scales, t, col + 3);
  return v;
}

// Four elements a thread: float4 loads of the projection, 8-byte bf16 stores. A rotating head's
// first rotary half takes its quads with their partners in the second half (8 outputs a thread;
// the second half's own slots idle), the rest of the head plain quads. One element a thread
// loads each rotated element three times, as floats, and stores bf16 two bytes at a time: 3.4x
// its byte floor at 1 x 2048 (PROFILE.md, session 19), 1.5x this way (session 20). Same math per
// element. Needs hd % 4 == 0 and rotary % 8 == 0 (LaunchRope checks).
__device__ __forceinline__ void RopeQuads(const AttentionParams& p, int t, int head0, int heads,
                                          const float* rope_table) {
  const int hd = p.hd, half = p.rotary / 2, quads = hd / 4;
  const float* qkv_row = p.qkv + int64_t{t} * (p.H + 2 * p.KV) * hd;
  for (int e = threadIdx.x; e < heads * quads; e += blockDim.x) {
    const int head = head0 + e / quads, d = 4 * (e - (e / quads) * quads);
    const bool rotating = head < p.H + p.KV;
    if (rotating && d >= half && d < p.rotary) continue;  // done with its partner below
    bf16* out = RopeOutputRow(p, t, head);
    const int col0 = head * hd;
    const float4 first = ScaledQuad(qkv_row, p.qkv_scales, t, col0 + d);
    if (!rotating || d >= p.rotary) {
      StoreBf16x4(out + d, first.x, first.y, first.z, first.w);
      continue;
    }
    const float4 second = ScaledQuad(qkv_row, p.qkv_scales, t, col0 + d + half);
    const float4 sn = *reinterpret_cast<const float4*>(rope_table + d);
    const float4 cs = *reinterpret_cast<const float4*>(rope_table + half + d);
    const float2 r0 = Rotate(first.x, second.x, sn.x, cs.x);
    const float2 r1 = Rotate(first.y, second.y, sn.y, cs.y);
    const float2 r2 = Rotate(first.z, second.z, sn.z, cs.z);
    const float2 r3 = Rotate(first.w, second.w, sn.w, cs.w);
    StoreBf16x4(out + d, r0.x, r1.x, r2.x, r3.x);
    StoreBf16x4(out + d + half, r0.y, r1.y, r2.y, r3.y);
  }
}

// Block = (token, `heads_per_block` heads of q|k|v); threads over the heads' elements, one or four
// (kQuads) at a time. The angles depend on the position alone: the block computes each rotary
// pair's sine and cosine once into shared memory and every head of the token reuses them (with a
// block per head, powf, sinf and cosf ran once per head and element: 4x the kernel's byte floor at
// 1 x 2048, PROFILE.md). The position comes from the step layout, which is in place before the
// step's first kernel, so the table is built before waiting for the q|k|v projection.
template <bool kQuads>
__global__ void RopeKernel(AttentionParams p, int heads_per_block) {
  extern __shared__ float rope_table[];  // [half] sines, then [half] cosines
  AllowDependentLaunch();
  const int t = blockIdx.x;
  const int head0 = blockIdx.y * heads_per_block;
  const int heads = min(heads_per_block, p.H + 2 * p.KV - head0);
  const int half = p.rotary / 2;
  if (head0 < p.H + p.KV) {  // v heads only: no table
    const int pos = TokenPosition(EntryOfToken(p.layout, t), t);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.rotary);
      const float inv_frequency = 1.0f / powf(p.theta, exponent);
      const float angle = static_cast<float>(pos) * inv_frequency;
      rope_table[i] = sinf(angle);
      rope_table[half + i] = cosf(angle);
    }
    __syncthreads();
  }
  WaitForPriorGrids();
  if constexpr (kQuads) {
    RopeQuads(p, t, head0, heads, rope_table);
  } else {
    RopeElements(p, t, head0, heads, rope_table);
  }
}

// Block = token: the last min(len, W) tokens of each entry go to ring row pos mod W.
__global__ void RingWriteKernel(AttentionParams p) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const StepEntryRecord en = EntryOfToken(p.layout, t);
  const int k = t - en.start;
  if (k < en.len - p.W) return;
  const int pos = en.pos0 + k;
  bf16* ring_k = SlotRegion<bf16>(p.state, en.slot, p.k_offset);
  bf16* ring_v = SlotRegion<bf16>(p.state, en.slot, p.v_offset);
  const int width = p.KV * p.hd;
  const int64_t dst = int64_t{pos % p.W} * width;
  const bf16* k_src = reinterpret_cast<const bf16*>(p.k) + int64_t{t} * width;
  const bf16* v_src = reinterpret_cast<const bf16*>(p.v) + int64_t{t} * width;
  // 16 bytes a thread where the rows allow it (2B: 256 elements, 32 threads); two bytes at a time
  // the kernel ran at 6.7x its byte floor (PROFILE.md, session 19).
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (width % 8 == 0 && aligned(ring_k + dst) && aligned(ring_v + dst) && aligned(k_src) &&
      aligned(v_src)) {
    for (int i = threadIdx.x; i < width / 8; i += blockDim.x) {
      reinterpret_cast<uint4*>(ring_k + dst)[i] = reinterpret_cast<const uint4*>(k_src)[i];
      reinterpret_cast<uint4*>(ring_v + dst)[i] = reinterpret_cast<const uint4*>(v_src)[i];
    }
    return;
  }
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    ring_k[dst + i] = k_src[i];
    ring_v[dst + i] = v_src[i];
  }
}

}  // namespace

cudaError_t LaunchRope(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  const int all_heads = p.H + 2 * p.KV;
  const size_t table_bytes = size_t(p.rotary / 2) * 2 * sizeof(float);
  // A block per token and head while that leaves the GPU short of blocks (decode batches: 12 per
  // token at 2B), else a block per token for all its heads, which builds the table once.
  const auto aligned = [](const void* q, int bytes) {
    return reinterpret_cast<uintptr_t>(q) % bytes == 0;
  };
  const bool quads = p.vector_rope && p.hd % 4 == 0 && p.rotary % 8 == 0 && aligned(p.qkv, 16) &&
                     aligned(p.q, 8) && aligned(p.k, 8) && aligned(p.v, 8);
  const auto kernel = quads ? RopeKernel<true> : RopeKernel<false>;
  if (p.n < kRopeTokensForBlockPerToken) {
    const int lanes = quads ? p.hd / 4 : p.hd;
    const int threads = lanes < 128 ? 32 * ((lanes + 31) / 32) : 128;
    return LaunchPdl(kernel, dim3(p.n, all_heads), dim3(threads), table_bytes, stream, p, 1);
  }
  return LaunchPdl(kernel, dim3(p.n, 1), dim3(256), table_bytes, stream, p, all_heads);
}

cudaError_t LaunchRingWrite(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  const int width = p.KV * p.hd;
  const int threads = width % 8 == 0 ? std::clamp((width / 8 + 31) / 32 * 32, 32, 256) : 256;
  return LaunchPdl(RingWriteKernel, dim3(p.n), dim3(threads), 0, stream, p);
}

}  // namespace griffin::kernels
