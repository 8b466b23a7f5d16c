// Small-batch GEMM ("GEMV") for decode: D[M, N] (float32) = A[M, K] (bf16) . W[N, K]^T (bf16,
// the checkpoint's [out, in] layout), for 1 <= M <= 8. Memory-bound: every weight byte is read
// once with 16-byte loads, all of a warp's loads for one output row issued before the first
// multiply; one warp per output row, lanes split K, float32 accumulation, warp-shuffle reduction
// (a fixed order, so results do not depend on the launch). A rows are re-read from L1/L2.
// Requires K % 8 == 0 and 16-byte aligned rows; LaunchGemv returns cudaErrorInvalidValue otherwise.
// Tolerance: float32 sums of exact bf16 products, K * 2^-24 * sum|a w| (as the GEMM test).
#ifndef GRIFFIN_KERNELS_LINEAR_GEMV_CUH_
#define GRIFFIN_KERNELS_LINEAR_GEMV_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

inline constexpr int kGemvMaxM = 8;
bool GemvSupported(int M, int K);
cudaError_t LaunchGemv(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_GEMV_CUH_
