// RoPE (splitting the fused q|k|v GEMM output) and the KV-ring write. See attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace {

// Block = (token, `heads_per_block` heads of q|k|v); threads over the heads' elements. The
// angles depend on the position alone: the block computes each rotary pair's sine and cosine once
// into shared memory and every head of the token reuses them (with a block per head, powf, sinf
// and cosf ran once per head and element: 4x the kernel's byte floor at 1 x 2048, PROFILE.md).
// The position comes from the step layout, which is in place before the step's first kernel, so
// the table is built before waiting for the q|k|v projection.
__global__ void RopeKernel(AttentionParams p, int heads_per_block) {
  extern __shared__ float rope_table[];  // [half] sines, then [half] cosines
  AllowDependentLaunch();
  const int t = blockIdx.x;
  const int hd = p.hd, H = p.H, KV = p.KV;
  const int head0 = blockIdx.y * heads_per_block;
  const int heads = min(heads_per_block, H + 2 * KV - head0);
  const int half = p.rotary / 2;
  const bool rotates = head0 < H + KV;  // v heads only: no table
  if (rotates) {
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
  const int width = (H + 2 * KV) * hd;
  const float* qkv_row = p.qkv + int64_t{t} * width;
  for (int e = threadIdx.x; e < heads * hd; e += blockDim.x) {
    const int head = head0 + e / hd, d = e - (e / hd) * hd;
    const int col0 = head * hd;
    const float* hrow = qkv_row + col0;
    float val = ApplyScales(hrow[d], p.qkv_scales, t, col0 + d);
    if (head < H + KV && d < p.rotary) {
      const int i = d < half ? d : d - half;
      const float sn = rope_table[i], cs = rope_table[half + i];
      const float first = ApplyScales(hrow[i], p.qkv_scales, t, col0 + i);
      const float second = ApplyScales(hrow[i + half], p.qkv_scales, t, col0 + i + half);
      val = d < half ? first * cs - second * sn : second * cs + first * sn;
    }
    if (head < H) {
      reinterpret_cast<bf16*>(p.q)[(int64_t{t} * H + head) * hd + d] = ToB(val);
    } else if (head < H + KV) {
      reinterpret_cast<bf16*>(p.k)[(int64_t{t} * KV + head - H) * hd + d] = ToB(val);
    } else {
      reinterpret_cast<bf16*>(p.v)[(int64_t{t} * KV + head - H - KV) * hd + d] = ToB(val);
    }
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
  if (p.n < kRopeTokensForBlockPerToken) {
    const int threads = p.hd < 128 ? 32 * ((p.hd + 31) / 32) : 128;
    return LaunchPdl(RopeKernel, dim3(p.n, all_heads), dim3(threads), table_bytes, stream, p, 1);
  }
  return LaunchPdl(RopeKernel, dim3(p.n, 1), dim3(256), table_bytes, stream, p, all_heads);
}

cudaError_t LaunchRingWrite(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  return LaunchPdl(RingWriteKernel, dim3(p.n), dim3(256), 0, stream, p);
}

}  // namespace griffin::kernels
