// RoPE (splitting the fused q|k|v GEMM output) and the KV-ring write. See attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace {

// Block = (token, head of q|k|v); threads over head_dim.
__global__ void RopeKernel(AttentionParams p) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x, head = blockIdx.y;
  const int pos = TokenPosition(EntryOfToken(p.layout, t), t);
  const int hd = p.hd, H = p.H, KV = p.KV;
  const int width = (H + 2 * KV) * hd;
  const int half = p.rotary / 2;
  const float* hrow = p.qkv + int64_t{t} * width + head * hd;
  const int col0 = head * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float val = ApplyScales(hrow[d], p.qkv_scales, t, col0 + d);
    if (head < H + KV && d < p.rotary) {
      const int i = d < half ? d : d - half;
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.rotary);
      const float inv_frequency = 1.0f / powf(p.theta, exponent);
      const float angle = static_cast<float>(pos) * inv_frequency;
      const float sn = sinf(angle), cs = cosf(angle);
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
  const int threads = p.hd < 128 ? 32 * ((p.hd + 31) / 32) : 128;
  return LaunchPdl(RopeKernel, dim3(p.n, p.H + 2 * p.KV), dim3(threads), 0, stream, p);
}

cudaError_t LaunchRingWrite(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  return LaunchPdl(RingWriteKernel, dim3(p.n), dim3(256), 0, stream, p);
}

}  // namespace griffin::kernels
