// Small-batch GEMM ("GEMV") for decode: D[M, N] (float32) = A[M, K] (bf16) . W[N, K]^T (bf16,
// the checkpoint's [out, in] layout), for 1 <= M <= 8. Memory-bound: every weight byte is read
// once with 16-byte loads, all of a warp's loads for one output row issued before the first
// multiply; GemvSplit(N, K) warps per output row (1 for wide matrices, 2 or 4 for the narrow ones),
// lanes split K, float32 accumulation, warp-shuffle then shared-memory reduction (a fixed order, so
// results do not depend on the launch). A rows are re-read from L1/L2. On Hopper builds it is
// launched with programmatic dependent launch: each warp loads its first weight chunk while the
// previous kernel finishes (kernels before a GEMV call AllowDependentLaunch()), then waits for it
// before reading A (GRIFFIN_NO_PDL=1 in the environment turns that off, for comparisons).
// Requires K % 8 == 0 and 16-byte aligned rows; LaunchGemv returns cudaErrorInvalidValue otherwise.
// Tolerance: float32 sums of exact bf16 products, K * 2^-24 * sum|a w| (as the GEMM test).
//
// W8A16 (issue 14's FP8 weights; the backend's one-token passes): the same kernel reading FP8 E4M3
// weights (the OCP e4m3fn bytes, base/numeric.h's FloatToFp8E4M3) with one float32 scale per
// output row, D[m, n] = scale[n] * sum_k A[m, k] * W[n, k]: half the bytes per weight, converted
// to float in registers (exact: every E4M3 value is a half). Requires K % 16 == 0. The row
// quantization (scale = max|w| / 448) is ref::QuantizeRowsFp8E4M3's.
#ifndef GRIFFIN_KERNELS_LINEAR_GEMV_CUH_
#define GRIFFIN_KERNELS_LINEAR_GEMV_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

inline constexpr int kGemvMaxM = 8;
bool GemvSupported(int M, int K);
// Warps that share one output row (1, 2, 4 or 8), as LaunchGemv chooses it.
int GemvSplit(int N, int K);
cudaError_t LaunchGemv(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       cudaStream_t stream);
// The same with the split given (1, 2, 4 or 8): the tests and kernels_bench try each.
cudaError_t LaunchGemvWithSplit(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                                int split, cudaStream_t stream);

bool GemvFp8Supported(int M, int K);
int GemvFp8Split(int N, int K);
// `w`: [N, K] E4M3 bytes, `scales`: [N] (non-null).
cudaError_t LaunchGemvFp8(const bf16_t* a, const uint8_t* w, const float* scales, float* d, int M,
                          int N, int K, cudaStream_t stream);
cudaError_t LaunchGemvFp8WithSplit(const bf16_t* a, const uint8_t* w, const float* scales, float* d,
                                   int M, int N, int K, int split, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_GEMV_CUH_
