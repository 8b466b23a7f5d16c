// See fp8_weights.cuh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/common.cuh"
#include "kernels/linear/fp8_codes.cuh"
#include "kernels/linear/fp8_weights.cuh"

namespace griffin::kernels {
namespace {

constexpr int kQuantizeThreads = 256;

// One block per row: the row's largest magnitude, then every code. Rows are at most a few
// thousand elements (one block reads its row twice, the second time from L1/L2).
__global__ void __launch_bounds__(kQuantizeThreads)
    QuantizeRowsKernel(const bf16* w, int cols, uint8_t* codes, float* scales) {
  __shared__ float warp_max[kQuantizeThreads / 32];
  const int64_t base = int64_t{blockIdx.x} * cols;
  const uint4* row = reinterpret_cast<const uint4*>(w + base);
  const int vecs = cols / 8;
  float largest = 0.0f;
  for (int v = threadIdx.x; v < vecs; v += kQuantizeThreads) {
    const uint4 packed = __ldg(row + v);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float2 f = __bfloat1622float2(pairs[u]);
      largest = fmaxf(largest, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = largest;
  __syncthreads();
  largest = 0.0f;
#pragma unroll
  for (int i = 0; i < kQuantizeThreads / 32; ++i) largest = fmaxf(largest, warp_max[i]);
  const float scale = Fp8RowScale(largest);
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  uint2* out = reinterpret_cast<uint2*>(codes + base);
  for (int v = threadIdx.x; v < vecs; v += kQuantizeThreads) {
    const uint4 packed = __ldg(row + v);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
    float f[8];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float2 pair = __bfloat1622float2(pairs[u]);
      f[2 * u] = pair.x;
      f[2 * u + 1] = pair.y;
    }
    out[v] = make_uint2(Fp8Codes4(f[0], f[1], f[2], f[3], scale),
                        Fp8Codes4(f[4], f[5], f[6], f[7], scale));
  }
}

// One thread per 16 codes of a row.
__global__ void ExpandKernel(const uint8_t* codes, const float* scales, int cols, int64_t vecs,
                             bf16* w) {
  const int64_t v = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (v >= vecs) return;
  const int row = static_cast<int>(v * 16 / cols);
  const float scale = scales != nullptr ? __ldg(scales + row) : 1.0f;
  const uint4 packed = __ldg(reinterpret_cast<const uint4*>(codes) + v);
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
  __nv_bfloat162 out[8];
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const __nv_fp8x2_storage_t pair =
        static_cast<__nv_fp8x2_storage_t>(words[u / 2] >> (16 * (u % 2)));
    const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&raw));
    out[u] = __floats2bfloat162_rn(f.x * scale, f.y * scale);
  }
  uint4* dst = reinterpret_cast<uint4*>(w) + 2 * v;
  dst[0] = *reinterpret_cast<const uint4*>(&out[0]);
  dst[1] = *reinterpret_cast<const uint4*>(&out[4]);
}

__global__ void ScaleRowsAndColumnsKernel(float* d, const float* row_scales,
                                          const float* col_scales, int N, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t m = i / N;
  const int n = static_cast<int>(i - m * N);
  d[i] = ApplyScales(d[i], InputScales{row_scales, col_scales}, m, n);
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

cudaError_t LaunchQuantizeRowsFp8E4M3(const bf16_t* w, int rows, int cols, uint8_t* codes,
                                      float* scales, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || cols % 16 != 0 || !Aligned(w) || !Aligned(codes) ||
      scales == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  QuantizeRowsKernel<<<rows, kQuantizeThreads, 0, stream>>>(reinterpret_cast<const bf16*>(w), cols,
                                                            codes, scales);
  return cudaGetLastError();
}

cudaError_t LaunchExpandFp8E4M3(const uint8_t* codes, const float* scales, int rows, int cols,
                                bf16_t* w, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || cols % 16 != 0 || !Aligned(w) || !Aligned(codes)) {
    return cudaErrorInvalidValue;
  }
  const int64_t vecs = int64_t{rows} * cols / 16;
  if (vecs == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  ExpandKernel<<<static_cast<unsigned>((vecs + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      codes, scales, cols, vecs, reinterpret_cast<bf16*>(w));
  return cudaGetLastError();
}

cudaError_t LaunchScaleRowsAndColumns(float* d, const float* row_scales, const float* col_scales,
                                      int M, int N, cudaStream_t stream) {
  if (M < 0 || N < 0 || col_scales == nullptr) return cudaErrorInvalidValue;
  const int64_t total = int64_t{M} * N;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  ScaleRowsAndColumnsKernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0,
                              stream>>>(d, row_scales, col_scales, N, total);
  return cudaGetLastError();
}

}  // namespace griffin::kernels
