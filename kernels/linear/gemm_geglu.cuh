// The MLP's gate projection with GeGLU in its epilogue (SPEC.md §2.6), on Hopper's tensor cores
// through CUTLASS 3 (a TMA warp-specialized wgmma GEMM with an epilogue visitor tree):
//
//   out[t, i] = bf16( gelu_tanh(sum_k x[t, k] w_gate[i, k] + b_gate[i]) * (up[t, i] + b_up[i]) )
//
// x bf16 [n, k] row-major, w_gate bf16 [m, k] row-major (the gate rows of the fused [gate; up]
// matrix), up float32 or bf16 [n, m] (the up projection, unbiased, as the cuBLASLt GEMM wrote it),
// biases float32 [m], out bf16 [n, m]. Float32 math and one bf16 rounding (two with a bf16 up),
// as kernels/geglu does after the fused gate|up GEMM; only the gate sums' order differs (another
// GEMM algorithm).
//
// Why: with the fused gate|up GEMM, a prefill chunk writes 2m float32 columns per token that the
// GeGLU pass reads back (8 of the 10 bytes per output GeGLU moves). Splitting off the up GEMM and
// doing GeGLU in the gate GEMM's epilogue removes the pass and the gate half's round trip.
// cuBLASLt has no epilogue that multiplies by a second matrix; CUTLASS's visitor trees express it.
#ifndef GRIFFIN_KERNELS_LINEAR_GEMM_GEGLU_CUH_
#define GRIFFIN_KERNELS_LINEAR_GEMM_GEGLU_CUH_

#include <cstdint>
#include <initializer_list>

#include "kernels/types.h"

namespace griffin::kernels {

// Ping-pong 128 x 128 x 64 tiles (one warp group's epilogue beside the other's math); they
// differ in their clusters. Session 17: within 1-3% of each other in kernels_bench at 1024-8192
// rows; in engine_bench (five rounds over two calls) the 2 x 1 clusters gave prefill 16 x 2048
// 275.9-279.2 ms against 280.7-285.4 without clusters, 1 x 2048 the same (18.1-18.3 ms).
enum class GemmGeGluConfig {
  kPingpong128x128M2 = 0,  // 2 x 1 clusters (weight tiles multicast to two row blocks)
  kPingpong128x128 = 1,    // no cluster
  kPingpong128x128N2 = 2,  // 1 x 2 clusters (activation tiles multicast to two column blocks)
};
inline constexpr int kGemmGeGluConfigs = 3;
inline constexpr GemmGeGluConfig kGemmGeGluDefaultConfig = GemmGeGluConfig::kPingpong128x128M2;

// Whether this build has the kernel (an sm_90a build with CUTLASS) and the device runs it (compute
// capability 9.0), and the shape suits its TMA loads: k and m multiples of 8 (16-byte rows of
// bf16). Host only.
bool GemmGeGluSupported(int device, int n, int m, int k);

// Whether the launch's pointers suit its TMA loads and bias reads: every base 16-byte aligned.
inline bool GemmGeGluAligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Enqueues the kernel on `stream` with programmatic dependent launch. cudaErrorNotSupported when
// GemmGeGluSupported or GemmGeGluAligned is false; cudaErrorInvalidValue on a shape CUTLASS
// rejects.
cudaError_t LaunchGemmGeGlu(const bf16_t* x, const bf16_t* w_gate, const float* b_gate,
                            const float* up, const float* b_up, int n, int m, int k, bf16_t* out,
                            cudaStream_t stream, GemmGeGluConfig config = kGemmGeGluDefaultConfig);
// The same with the up projection in bf16 (Gemm::RunBf16Out): half the bytes the epilogue reads
// and the up GEMM writes, for one more rounding (up's, 2^-9 relative, before its bias).
cudaError_t LaunchGemmGeGlu(const bf16_t* x, const bf16_t* w_gate, const float* b_gate,
                            const bf16_t* up, const float* b_up, int n, int m, int k, bf16_t* out,
                            cudaStream_t stream, GemmGeGluConfig config = kGemmGeGluDefaultConfig);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_GEMM_GEGLU_CUH_
