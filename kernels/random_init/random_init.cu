// See random_init.cuh.
#include "kernels/common.cuh"
#include "kernels/random_init/random_init.cuh"

namespace griffin::kernels {
namespace {

__device__ __forceinline__ float HashUniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void FillKernel(T* out, int64_t n, uint64_t seed, float scale, float mean) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = HashUniform(seed, i) * scale + mean;
    if constexpr (sizeof(T) == 2) {
      out[i] = ToB(v);
    } else {
      out[i] = v;
    }
  }
}

constexpr float kSqrt3 = 1.7320508075688772f;  // uniform [-1, 1) has stddev 1/sqrt(3)

}  // namespace

cudaError_t LaunchFillRandomBf16(bf16_t* out, int64_t n, uint64_t seed, float stddev, float mean,
                                 cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FillKernel<bf16>
      <<<132 * 8, 256, 0, stream>>>(reinterpret_cast<bf16*>(out), n, seed, stddev * kSqrt3, mean);
  return cudaGetLastError();
}

cudaError_t LaunchFillRandomF32(float* out, int64_t n, uint64_t seed, float stddev, float mean,
                                cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FillKernel<float><<<132 * 8, 256, 0, stream>>>(out, n, seed, stddev * kSqrt3, mean);
  return cudaGetLastError();
}

}  // namespace griffin::kernels
