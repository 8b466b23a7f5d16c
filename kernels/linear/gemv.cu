// See gemv.cuh.
#include "kernels/common.cuh"
#include "kernels/linear/gemv.cuh"

namespace griffin::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 8;  // 16-byte vectors per lane in flight per step

__device__ __forceinline__ void Fma8(const uint4& w, const uint4& a, float& acc) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const float2 wf = __bfloat1622float2(w2[u]);
    const float2 af = __bfloat1622float2(a2[u]);
    acc = fmaf(wf.x, af.x, acc);
    acc = fmaf(wf.y, af.y, acc);
  }
}

template <int M>
__global__ void __launch_bounds__(kWarps * 32)
    GemvKernel(const bf16* a, const bf16* w, float* d, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (row >= N) return;
  const int vecs = K / 8;
  const uint4* wr = reinterpret_cast<const uint4*>(w + int64_t{row} * K);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  for (int v0 = lane; v0 < vecs; v0 += 32 * kChunk) {
    uint4 wv[kChunk];
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      const int v = v0 + c * 32;
      wv[c] = v < vecs ? __ldg(wr + v) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      const int v = v0 + c * 32;
      if (v < vecs) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const uint4 av = __ldg(reinterpret_cast<const uint4*>(a + int64_t{m} * K) + v);
          Fma8(wv[c], av, acc[m]);
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float s = WarpSum(acc[m]);
    if (lane == 0) d[int64_t{m} * N + row] = s;
  }
}

}  // namespace

bool GemvSupported(int M, int K) { return M >= 1 && M <= kGemvMaxM && K % 8 == 0; }

cudaError_t LaunchGemv(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       cudaStream_t stream) {
  if (!GemvSupported(M, K) ||
      (reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) % 16) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid((N + kWarps - 1) / kWarps);
  const bf16* A = reinterpret_cast<const bf16*>(a);
  const bf16* W = reinterpret_cast<const bf16*>(w);
  switch (M) {
    case 1:
      GemvKernel<1><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 2:
      GemvKernel<2><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 3:
      GemvKernel<3><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 4:
      GemvKernel<4><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 5:
      GemvKernel<5><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 6:
      GemvKernel<6><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    case 7:
      GemvKernel<7><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
    default:
      GemvKernel<8><<<grid, kWarps * 32, 0, stream>>>(A, W, d, N, K);
      break;
  }
  return cudaGetLastError();
}

}  // namespace griffin::kernels
