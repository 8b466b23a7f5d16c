// Shared device helpers for the kernels: bf16 conversion, the scalar nonlinearities exactly as the
// float32 CPU reference (engine/cpu_ops.cc) writes them, and block reductions. Device code only.
#ifndef GRIFFIN_KERNELS_COMMON_CUH_
#define GRIFFIN_KERNELS_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/types.h"

namespace griffin::kernels {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ToF(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16 ToB(float v) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ float RoundBf16(float v) { return ToF(ToB(v)); }

__device__ __forceinline__ float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float Softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// InputScales (types.h) applied to element [r, c] of a kernel's float32 input. __fmul_rn keeps the
// product from fusing into a later add, so the result is the one LaunchScaleRowsAndColumns's
// separate pass stores (that kernel calls this too).
__device__ __forceinline__ float ApplyScales(float v, const InputScales& s, int64_t r, int64_t c) {
  if (s.cols == nullptr) return v;
  return __fmul_rn(v, (s.rows != nullptr ? __ldg(s.rows + r) : 1.0f) * __ldg(s.cols + c));
}

// Programmatic dependent launch (Hopper, PTX ISA 7.8+): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start while the previous kernel in the
// stream still runs, and must call WaitForPriorGrids() before it touches memory that kernel
// writes (or reads); the previous kernel lets it start early by calling AllowDependentLaunch().
// Without the attribute both are no-ops, and they compile to nothing below sm_90, where
// PdlLaunchable() (host side, launch.cuh) keeps the attribute off.
__device__ __forceinline__ void WaitForPriorGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; `scratch` holds at least 32 floats. All threads get the result.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

// The block's largest value (exact: max does not depend on the order). `scratch` as BlockSum's.
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float largest = scratch[0];
  for (int w = 1; w < warps; ++w) largest = fmaxf(largest, scratch[w]);
  return largest;
}

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_COMMON_CUH_
