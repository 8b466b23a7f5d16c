// See geglu.cuh.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/geglu/geglu.cuh"

namespace griffin::kernels {
namespace {

__global__ void GeGluKernel(const float* gu, const float* b_gate, const float* b_up, int64_t n,
                            int m, bf16* out) {
  const int64_t total = n * m;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = idx / m;
    const int i = static_cast<int>(idx - t * m);
    const float g = gu[t * 2 * m + i] + b_gate[i];
    const float u = gu[t * 2 * m + m + i] + b_up[i];
    out[idx] = ToB(GeluTanh(g) * u);
  }
}

}  // namespace

cudaError_t LaunchGeGlu(const float* gu, const float* b_gate, const float* b_up, int n, int m,
                        bf16_t* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t total = int64_t{n} * m;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 132 * 16));
  GeGluKernel<<<blocks, threads, 0, stream>>>(gu, b_gate, b_up, n, m, reinterpret_cast<bf16*>(out));
  return cudaGetLastError();
}

}  // namespace griffin::kernels
