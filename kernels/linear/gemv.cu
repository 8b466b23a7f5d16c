// See gemv.cuh.
#include "kernels/common.cuh"
#include "kernels/launch.cuh"
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

// kSplit warps share one output row, each summing an interleaved quarter (half, ...) of K: the
// narrow matrices (2560 rows) give only 2560 warps otherwise, too few loads in flight and an uneven
// spread over the SMs (bench/NOTES.md). The partial sums meet in shared memory and are added in a
// fixed order, so results do not depend on the launch.
template <int M, int kSplit>
__global__ void __launch_bounds__(kWarps * 32)
    GemvKernel(const bf16* a, const bf16* w, float* d, int N, int K) {
  static_assert(kWarps % kSplit == 0, "a block holds whole rows");
  __shared__ float partial[kSplit > 1 ? kWarps * M : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % kSplit;
  const int row = blockIdx.x * (kWarps / kSplit) + warp / kSplit;
  const int vecs = K / 8;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  // The first chunk of weights is loaded before waiting for the previous kernel (launched with
  // programmatic dependent launch, the loads overlap that kernel's tail and this launch's ramp):
  // weights never depend on the step, only the activations A do.
  const uint4* wr = reinterpret_cast<const uint4*>(w + int64_t{row < N ? row : 0} * K);
  constexpr int kStride = 32 * kSplit;  // vectors between a lane's consecutive loads
  uint4 wv[kChunk];
  int v0 = part * 32 + lane;
  auto load_chunk = [&](int first) {
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      const int v = first + c * kStride;
      wv[c] = row < N && v < vecs ? __ldg(wr + v) : make_uint4(0, 0, 0, 0);
    }
  };
  load_chunk(v0);
  AllowDependentLaunch();
  WaitForPriorGrids();
  if (row < N) {
    for (; v0 < vecs; v0 += kStride * kChunk) {
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int v = v0 + c * kStride;
        if (v < vecs) {
#pragma unroll
          for (int m = 0; m < M; ++m) {
            const uint4 av = __ldg(reinterpret_cast<const uint4*>(a + int64_t{m} * K) + v);
            Fma8(wv[c], av, acc[m]);
          }
        }
      }
      if (v0 + kStride * kChunk < vecs) load_chunk(v0 + kStride * kChunk);
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = WarpSum(acc[m]);
  if constexpr (kSplit == 1) {
    if (lane == 0 && row < N) {
#pragma unroll
      for (int m = 0; m < M; ++m) d[int64_t{m} * N + row] = acc[m];
    }
  } else {
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) partial[warp * M + m] = acc[m];
    }
    __syncthreads();
    if (lane == 0 && part == 0 && row < N) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float s = 0.0f;
        for (int q = 0; q < kSplit; ++q) s += partial[(warp + q) * M + m];
        d[int64_t{m} * N + row] = s;
      }
    }
  }
}

template <int M, int kSplit>
cudaError_t LaunchSplit(const bf16* a, const bf16* w, float* d, int N, int K, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kWarps / kSplit;
  return LaunchPdl(GemvKernel<M, kSplit>, dim3((N + kRowsPerBlock - 1) / kRowsPerBlock),
                   dim3(kWarps * 32), 0, stream, a, w, d, N, K);
}

template <int M>
cudaError_t LaunchRows(const bf16* a, const bf16* w, float* d, int N, int K, int split,
                       cudaStream_t stream) {
  switch (split) {
    case 1:
      return LaunchSplit<M, 1>(a, w, d, N, K, stream);
    case 2:
      return LaunchSplit<M, 2>(a, w, d, N, K, stream);
    case 4:
      return LaunchSplit<M, 4>(a, w, d, N, K, stream);
    default:
      return LaunchSplit<M, 8>(a, w, d, N, K, stream);
  }
}

}  // namespace

bool GemvSupported(int M, int K) { return M >= 1 && M <= kGemvMaxM && K % 8 == 0; }

int GemvSplit(int N, int K) {
  // Measured on the H200 at the 2B projections (kernels_bench, bench/NOTES.md): one warp per row
  // for the 256000-row head; otherwise 10K-30K warps in all (2 for 15360 and 5120 rows, 4 for
  // 2560 and 3072); never fewer than two 16-byte loads per lane.
  int split = 1;
  if (N < 65536) {
    split = 2;
    while (split < 4 && int64_t{N} * split < 10240) split *= 2;
  }
  while (split > 1 && K / 8 < 32 * split * 2) split /= 2;
  return split;
}

cudaError_t LaunchGemv(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       cudaStream_t stream) {
  return LaunchGemvWithSplit(a, w, d, M, N, K, GemvSplit(N, K), stream);
}

cudaError_t LaunchGemvWithSplit(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                                int split, cudaStream_t stream) {
  if (split != 1 && split != 2 && split != 4 && split != 8) return cudaErrorInvalidValue;
  if (!GemvSupported(M, K) ||
      (reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) % 16) {
    return cudaErrorInvalidValue;
  }
  if (N <= 0) return cudaSuccess;
  const bf16* A = reinterpret_cast<const bf16*>(a);
  const bf16* W = reinterpret_cast<const bf16*>(w);
  cudaError_t err = cudaSuccess;
  switch (M) {
    case 1:
      err = LaunchRows<1>(A, W, d, N, K, split, stream);
      break;
    case 2:
      err = LaunchRows<2>(A, W, d, N, K, split, stream);
      break;
    case 3:
      err = LaunchRows<3>(A, W, d, N, K, split, stream);
      break;
    case 4:
      err = LaunchRows<4>(A, W, d, N, K, split, stream);
      break;
    case 5:
      err = LaunchRows<5>(A, W, d, N, K, split, stream);
      break;
    case 6:
      err = LaunchRows<6>(A, W, d, N, K, split, stream);
      break;
    case 7:
      err = LaunchRows<7>(A, W, d, N, K, split, stream);
      break;
    default:
      err = LaunchRows<8>(A, W, d, N, K, split, stream);
      break;
  }
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace griffin::kernels
