// Residual add + RMSNorm, fused (SPEC.md §2.2, §2.3), and the embedding lookup.
//
// AddRmsNorm, per row t of [rows, d]:
//   if delta:  x[t] += delta[t] + bias            (float32 residual stream, written back)
//   out[t] = bf16( x[t] * rsqrt(mean(x[t]^2) + eps) * (1 + w) )
// With `gather` set, output row r normalises input row gather[r] and no add happens (the final norm
// of only the rows whose logits are wanted).
// `delta_scales` (optional): delta is an FP8 GEMM's unscaled output; its scales (types.h
// InputScales) are applied as it is read, delta[t] * scales + bias, instead of a pass over delta.
// `quantized` (optional, only where AddRmsNormQuantizes(d)): the output rows also as E4M3 codes and
// row scales, bit for bit what LaunchQuantizeRowsFp8E4M3 makes of `out` (the next W8A8 GEMM's
// input without a pass of its own; kernels/linear/fp8_codes.cuh).
// `delta_parts` (>= 1): delta holds that many partial sums one after another ([parts][rows][d], a
// split-K GEMM's output: Gemm::RunSplitK), added up in order (((p0 + p1) + p2) ...) before the bias.
// Layouts: x, delta float32 [rows, d] row-major; bias, w float32 [d]; out bf16 [rows, d].
// Accumulation: float32 (block reduction of squares). One block per row: d / 4 threads holding a
// float4 each when d % 4 == 0, d <= 4096 and the float rows are 16-byte aligned (the model's
// widths), else 256 threads striding the row. `vectors_per_thread` 2: d / 8 threads holding two
// float4s each on the float4 path (another order of the sum of squares), 1: one; 0 (automatic):
// two where `rows` exceeds AddRmsNormRowsPerWave(d), else one; others are refused.
// Tolerance: float32 rounding of the sum of squares, then one bf16 rounding of the output
// (relative 2^-8), so |out - ref| <= 2^-8 |ref| + d * 2^-24 * |ref|.
//
// Embed: x[t] = float(table[token[t]]) * scale; table bf16 [vocab, d], x float32 [n, d].
#ifndef GRIFFIN_KERNELS_NORM_RMSNORM_CUH_
#define GRIFFIN_KERNELS_NORM_RMSNORM_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

bool AddRmsNormQuantizes(int d);
// Rows of width d whose float4 kernel's one-vector blocks the current device holds at once (0
// where d takes the strided kernel or the device cannot be queried).
int AddRmsNormRowsPerWave(int d);

cudaError_t LaunchAddRmsNorm(float* x, const float* delta, InputScales delta_scales,
                             const float* bias, const float* w, const int32_t* gather, int rows,
                             int d, float eps, bf16_t* out, cudaStream_t stream,
                             Fp8Rows quantized = {}, int delta_parts = 1,
                             int vectors_per_thread = 0);

cudaError_t LaunchEmbed(const bf16_t* table, const int32_t* tokens, int n, int d, float scale,
                        float* x, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_NORM_RMSNORM_CUH_
