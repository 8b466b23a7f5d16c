// See gemv.cuh.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "kernels/linear/gemv.cuh"

namespace griffin::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kChunk = 8;  // 16-byte vectors per lane in flight per step

// The weight formats: how many weights a 16-byte vector holds, how a vector expands to float32
// (once per vector, however many activation rows it meets: at M = 8 the FP8 conversion was
// repeated per row and ate the halved bytes, bench/NOTES.md), and its products with one row of
// activations (vector v of a row covers elements [v * kPerVector, ...), summed in element order).
struct Bf16Weights {
  static constexpr int kPerVector = 8;
  __device__ static void Expand(const uint4& w, float (&f)[kPerVector]) {
    const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float2 wf = __bfloat1622float2(w2[u]);
      f[2 * u] = wf.x;
      f[2 * u + 1] = wf.y;
    }
  }
};
// W8A16: E4M3 bytes (lowest byte first), one float32 scale per row applied to the row's sum.
// E4M3 converts to half exactly (cvt.rn.f16x2.e4m3x2 on sm_89 and later), then to float.
struct Fp8Weights {
  static constexpr int kPerVector = 16;
  __device__ static void Expand(const uint4& w, float (&f)[kPerVector]) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const __nv_fp8x2_storage_t pair =
          static_cast<__nv_fp8x2_storage_t>(words[u / 2] >> (16 * (u % 2)));
      const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
      const float2 wf = __half22float2(*reinterpret_cast<const __half2*>(&raw));
      f[2 * u] = wf.x;
      f[2 * u + 1] = wf.y;
    }
  }
};

template <typename Format>
__device__ __forceinline__ void Dot(const float (&wf)[Format::kPerVector], const bf16* a_row, int v,
                                    float& acc) {
  const uint4* a = reinterpret_cast<const uint4*>(a_row) + v * (Format::kPerVector / 8);
#pragma unroll
  for (int q = 0; q < Format::kPerVector / 8; ++q) {
    const uint4 packed = __ldg(a + q);
    const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float2 af = __bfloat1622float2(a2[u]);
      acc = fmaf(wf[8 * q + 2 * u], af.x, acc);
      acc = fmaf(wf[8 * q + 2 * u + 1], af.y, acc);
    }
  }
}

// kSplit warps share one output row, each summing an interleaved quarter (half, ...) of K: the
// narrow matrices (2560 rows) give only 2560 warps otherwise, too few loads in flight and an uneven
// spread over the SMs (bench/NOTES.md). The partial sums meet in shared memory and are added in a
// fixed order, so results do not depend on the launch. `scales` (FP8 rows; null for bf16)
// multiply each row's sum.
template <typename Format, int M, int kSplit>
__global__ void __launch_bounds__(kWarps * 32)
    GemvKernel(const bf16* a, const void* w, const float* scales, float* d, int N, int K) {
  static_assert(kWarps % kSplit == 0, "a block holds whole rows");
  __shared__ float partial[kSplit > 1 ? kWarps * M : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % kSplit;
  const int row = blockIdx.x * (kWarps / kSplit) + warp / kSplit;
  const int vecs = K / Format::kPerVector;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  // The first chunk of weights is loaded before waiting for the previous kernel (launched with
  // programmatic dependent launch, the loads overlap that kernel's tail and this launch's ramp):
  // weights never depend on the step, only the activations A do.
  const uint4* wr = reinterpret_cast<const uint4*>(w) + int64_t{row < N ? row : 0} * vecs;
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
  const float scale = scales != nullptr && row < N ? __ldg(scales + row) : 1.0f;
  AllowDependentLaunch();
  WaitForPriorGrids();
  if (row < N) {
    for (; v0 < vecs; v0 += kStride * kChunk) {
#pragma unroll
      for (int c = 0; c < kChunk; ++c) {
        const int v = v0 + c * kStride;
        if (v < vecs) {
          float wf[Format::kPerVector];
          Format::Expand(wv[c], wf);
#pragma unroll
          for (int m = 0; m < M; ++m) Dot<Format>(wf, a + int64_t{m} * K, v, acc[m]);
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
      for (int m = 0; m < M; ++m) d[int64_t{m} * N + row] = acc[m] * scale;
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
        d[int64_t{m} * N + row] = s * scale;
      }
    }
  }
}

template <typename Format, int M, int kSplit>
cudaError_t LaunchSplit(const bf16* a, const void* w, const float* scales, float* d, int N, int K,
                        cudaStream_t stream) {
  constexpr int kRowsPerBlock = kWarps / kSplit;
  return LaunchPdl(GemvKernel<Format, M, kSplit>, dim3((N + kRowsPerBlock - 1) / kRowsPerBlock),
                   dim3(kWarps * 32), 0, stream, a, w, scales, d, N, K);
}

template <typename Format, int M>
cudaError_t LaunchRows(const bf16* a, const void* w, const float* scales, float* d, int N, int K,
                       int split, cudaStream_t stream) {
  switch (split) {
    case 1:
      return LaunchSplit<Format, M, 1>(a, w, scales, d, N, K, stream);
    case 2:
      return LaunchSplit<Format, M, 2>(a, w, scales, d, N, K, stream);
    case 4:
      return LaunchSplit<Format, M, 4>(a, w, scales, d, N, K, stream);
    default:
      return LaunchSplit<Format, M, 8>(a, w, scales, d, N, K, stream);
  }
}

template <typename Format>
cudaError_t LaunchFormat(const bf16_t* a, const void* w, const float* scales, float* d, int M,
                         int N, int K, int split, cudaStream_t stream) {
  if (split != 1 && split != 2 && split != 4 && split != 8) return cudaErrorInvalidValue;
  if (M < 1 || M > kGemvMaxM || K % Format::kPerVector != 0 ||
      (reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) % 16) {
    return cudaErrorInvalidValue;
  }
  if (N <= 0) return cudaSuccess;
  const bf16* A = reinterpret_cast<const bf16*>(a);
  cudaError_t err = cudaSuccess;
  switch (M) {
    case 1:
      err = LaunchRows<Format, 1>(A, w, scales, d, N, K, split, stream);
      break;
    case 2:
      err = LaunchRows<Format, 2>(A, w, scales, d, N, K, split, stream);
      break;
    case 3:
      err = LaunchRows<Format, 3>(A, w, scales, d, N, K, split, stream);
      break;
    case 4:
      err = LaunchRows<Format, 4>(A, w, scales, d, N, K, split, stream);
      break;
    case 5:
      err = LaunchRows<Format, 5>(A, w, scales, d, N, K, split, stream);
      break;
    case 6:
      err = LaunchRows<Format, 6>(A, w, scales, d, N, K, split, stream);
      break;
    case 7:
      err = LaunchRows<Format, 7>(A, w, scales, d, N, K, split, stream);
      break;
    default:
      err = LaunchRows<Format, 8>(A, w, scales, d, N, K, split, stream);
      break;
  }
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

// Warps per row for a row of `vecs` 16-byte vectors: measured on the H200 at the 2B projections
// (kernels_bench, bench/NOTES.md): one warp per row for the 256000-row head; otherwise 10K-30K
// warps in all (2 for 15360 and 5120 rows, 4 for 2560 and 3072); never fewer than two 16-byte
// loads per lane.
int SplitFor(int N, int vecs) {
  int split = 1;
  if (N < 65536) {
    split = 2;
    while (split < 4 && int64_t{N} * split < 10240) split *= 2;
  }
  while (split > 1 && vecs < 32 * split * 2) split /= 2;
  return split;
}

}  // namespace

bool GemvSupported(int M, int K) { return M >= 1 && M <= kGemvMaxM && K % 8 == 0; }
bool GemvFp8Supported(int M, int K) { return M >= 1 && M <= kGemvMaxM && K % 16 == 0; }

int GemvSplit(int N, int K) { return SplitFor(N, K / Bf16Weights::kPerVector); }
int GemvFp8Split(int N, int K) { return SplitFor(N, K / Fp8Weights::kPerVector); }

cudaError_t LaunchGemv(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       cudaStream_t stream) {
  return LaunchGemvWithSplit(a, w, d, M, N, K, GemvSplit(N, K), stream);
}

cudaError_t LaunchGemvWithSplit(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                                int split, cudaStream_t stream) {
  return LaunchFormat<Bf16Weights>(a, w, nullptr, d, M, N, K, split, stream);
}

cudaError_t LaunchGemvFp8(const bf16_t* a, const uint8_t* w, const float* scales, float* d, int M,
                          int N, int K, cudaStream_t stream) {
  return LaunchGemvFp8WithSplit(a, w, scales, d, M, N, K, GemvFp8Split(N, K), stream);
}

cudaError_t LaunchGemvFp8WithSplit(const bf16_t* a, const uint8_t* w, const float* scales, float* d,
                                   int M, int N, int K, int split, cudaStream_t stream) {
  if (scales == nullptr) return cudaErrorInvalidValue;
  return LaunchFormat<Fp8Weights>(a, w, scales, d, M, N, K, split, stream);
}

}  // namespace griffin::kernels
