// See rmsnorm.cuh for the math, layouts and tolerance.
#include "kernels/common.cuh"
#include "kernels/norm/rmsnorm.cuh"

namespace griffin::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void AddRmsNormKernel(float* x, const float* delta, const float* bias, const float* w,
                                 const int32_t* gather, int d, float eps, bf16* out) {
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int64_t in_row = gather != nullptr ? gather[r] : r;
  float* xr = x + in_row * d;
  float sum_sq = 0.0f;
  if (delta != nullptr && gather == nullptr) {
    const float* dr = delta + in_row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
      const float v = xr[i] + (dr[i] + (bias != nullptr ? bias[i] : 0.0f));
      xr[i] = v;
      sum_sq += v * v;
    }
  } else {
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum_sq += xr[i] * xr[i];
  }
  const float total = BlockSum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(total / d + eps);
  bf16* o = out + int64_t{r} * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = ToB(xr[i] * inv * (1.0f + w[i]));
}

__global__ void EmbedKernel(const bf16* table, const int32_t* tokens, int d, float scale,
                            float* x) {
  const int t = blockIdx.x;
  const bf16* row = table + int64_t{tokens[t]} * d;
  float* xr = x + int64_t{t} * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) xr[i] = ToF(row[i]) * scale;
}

}  // namespace

cudaError_t LaunchAddRmsNorm(float* x, const float* delta, const float* bias, const float* w,
                             const int32_t* gather, int rows, int d, float eps, bf16_t* out,
                             cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  AddRmsNormKernel<<<rows, kThreads, 0, stream>>>(x, delta, bias, w, gather, d, eps,
                                                  reinterpret_cast<bf16*>(out));
  return cudaGetLastError();
}

cudaError_t LaunchEmbed(const bf16_t* table, const int32_t* tokens, int n, int d, float scale,
                        float* x, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  EmbedKernel<<<n, kThreads, 0, stream>>>(reinterpret_cast<const bf16*>(table), tokens, d, scale,
                                          x);
  return cudaGetLastError();
}

}  // namespace griffin::kernels
