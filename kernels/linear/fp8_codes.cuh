// Device helpers for FP8 E4M3 codes with one float32 scale per row, shared by the kernels that
// quantize (fp8_weights.cu's rows, the residual add + norm's output for the next W8A8 GEMM), so
// every producer gives the codes ref::QuantizeRowsFp8E4M3 gives, bit for bit:
// scale = max|v| / 448 (1 for an all-zero row), code = RoundToFp8E4M3(v / scale), IEEE division
// whatever the build's -prec-div, round to nearest even, saturating at 448. Device code only.
#ifndef GRIFFIN_KERNELS_LINEAR_FP8_CODES_CUH_
#define GRIFFIN_KERNELS_LINEAR_FP8_CODES_CUH_

#include <cuda_fp8.h>

#include <cstdint>

namespace griffin::kernels {

inline constexpr float kE4M3Max = 448.0f;  // base/numeric.h's kFp8E4M3Max

__device__ __forceinline__ float Fp8RowScale(float largest_magnitude) {
  return largest_magnitude > 0.0f ? __fdiv_rn(largest_magnitude, kE4M3Max) : 1.0f;
}

// Four values' codes packed little-endian (the first value in the lowest byte).
__device__ __forceinline__ uint32_t Fp8Codes4(float a, float b, float c, float d, float scale) {
  const uint32_t qa = __nv_cvt_float_to_fp8(__fdiv_rn(a, scale), __NV_SATFINITE, __NV_E4M3);
  const uint32_t qb = __nv_cvt_float_to_fp8(__fdiv_rn(b, scale), __NV_SATFINITE, __NV_E4M3);
  const uint32_t qc = __nv_cvt_float_to_fp8(__fdiv_rn(c, scale), __NV_SATFINITE, __NV_E4M3);
  const uint32_t qd = __nv_cvt_float_to_fp8(__fdiv_rn(d, scale), __NV_SATFINITE, __NV_E4M3);
  return qa | (qb << 8) | (qc << 16) | (qd << 24);
}

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_FP8_CODES_CUH_
