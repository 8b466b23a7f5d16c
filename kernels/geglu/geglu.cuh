// GeGLU activation (SPEC.md §2.6), after the fused gate|up GEMM:
//   out[t, i] = bf16( gelu_tanh(gu[t, i] + b_gate[i]) * (gu[t, m + i] + b_up[i]) )
// Layouts: gu float32 [n, 2m] (gate columns first, then up), biases float32 [m], out bf16 [n, m].
// Float32 math, one bf16 rounding at the end (relative error 2^-8 plus tanhf's few ulp). Four
// outputs per thread from float4 loads when m % 4 == 0 and the rows are 16-byte aligned.
// `gu_scales` (optional): gu as an FP8 GEMM left it, unscaled; its scales are applied as each value
// is read (types.h InputScales: rows per token, cols per gate|up column), saving a pass over gu.
#ifndef GRIFFIN_KERNELS_GEGLU_GEGLU_CUH_
#define GRIFFIN_KERNELS_GEGLU_GEGLU_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

cudaError_t LaunchGeGlu(const float* gu, InputScales gu_scales, const float* b_gate,
                        const float* b_up, int n, int m, bf16_t* out, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_GEGLU_GEGLU_CUH_
