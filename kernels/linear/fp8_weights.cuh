// FP8 weights on the device (issue 14, --quantization fp8): a bf16 projection quantized at load to
// E4M3 bytes (the OCP e4m3fn encoding, base/numeric.h's FloatToFp8E4M3) with one float32 scale per
// output row, and the reverse expansion to bf16 that the GEMM path (batches above the GEMV's 8
// rows) multiplies with.
//
// Quantization is ref::QuantizeRowsFp8E4M3's, bit for bit: scale = max|w| / 448 (1 for an all-zero
// row), code = RoundToFp8E4M3(w / scale) (IEEE division, round to nearest even, saturating at 448).
// Loading on the device instead of the host keeps a 9B model's load at the speed of the copy.
// Expansion writes bf16(E4M3 value x scale), or, without scales, the E4M3 values exactly (the
// backend's path: the row scales then multiply the GEMM's float32 output, as in the GEMV).
#ifndef GRIFFIN_KERNELS_LINEAR_FP8_WEIGHTS_CUH_
#define GRIFFIN_KERNELS_LINEAR_FP8_WEIGHTS_CUH_

#include <cstdint>

#include "kernels/types.h"

namespace griffin::kernels {

// `w` [rows, cols] bf16 -> `codes` [rows, cols] E4M3 bytes and `scales` [rows]. cols % 16 == 0 and
// 16-byte aligned rows, else cudaErrorInvalidValue.
cudaError_t LaunchQuantizeRowsFp8E4M3(const bf16_t* w, int rows, int cols, uint8_t* codes,
                                      float* scales, cudaStream_t stream);

// `codes` [rows, cols] and `scales` [rows] -> `w` [rows, cols] bf16. Same requirements. With
// `scales` null the codes' own values (exact in bf16), for a GEMM whose output is scaled after.
cudaError_t LaunchExpandFp8E4M3(const uint8_t* codes, const float* scales, int rows, int cols,
                                bf16_t* w, cudaStream_t stream);

// d[m, n] *= row_scales[m] * col_scales[n] for d [M, N] float32 (row-major): the W8A8 GEMM's
// per-token and per-channel scales (Gemm::RunFp8). `row_scales` may be null (all 1).
cudaError_t LaunchScaleRowsAndColumns(float* d, const float* row_scales, const float* col_scales,
                                      int M, int N, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_FP8_WEIGHTS_CUH_
