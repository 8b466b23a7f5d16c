// The head's element-wise tail and greedy sampling on the GPU (SPEC.md §2.7, RELIABILITY NUM-4).
//
// LaunchSoftCap: logits[i] = tanh(logits[i] / cap) * cap in place (float32 [rows, V]); cap <= 0: no-op.
// LaunchArgMax: per row of float32 [rows, V], the index of the largest value, lowest index among
//   ties, written to tokens[r]; a row holding NaN or +inf (or nothing finite) gets -1 instead: the
//   request is flagged, nothing asserts on the device. Two stages: (row, chunk of 4096) blocks,
//   then one warp per row; `scratch` holds rows * kArgMaxParts * 3 int32.
// LaunchSample: per row, vLLM's order: repetition penalty over the row's context ids, temperature,
//   top-k, top-p, min-p, then one draw from Philox4x32-10 keyed by (seed, step) as engine/sampler.cc.
//   Top-k and top-p are found without sorting: a bisection on the threshold (at most 40 / 32 passes
//   over the row, each a block reduction; each stops once the kept set can no longer change), the
//   passes reading four float4 per thread at a time. temperature < 1e-5 is greedy. NaN/+inf rows
//   give -1.
#ifndef GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_
#define GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

cudaError_t LaunchSoftCap(float* logits, int64_t count, float cap, cudaStream_t stream);
inline constexpr int kArgMaxParts = 64;
cudaError_t LaunchArgMax(const float* logits, int rows, int V, int32_t* tokens, int32_t* scratch,
                         cudaStream_t stream);

// Per-row sampling parameters (device array of rows).
struct SampleRowParams {
  float temperature;
  int top_k;
  float top_p;
  float min_p;
  float repetition_penalty;
  uint32_t seed_lo, seed_hi;
  uint32_t step_lo, step_hi;
  int context_start;  // into the context id array
  int context_len;
};

// `logits` is modified (penalty and temperature applied in place).
cudaError_t LaunchSample(float* logits, int rows, int V, const SampleRowParams* params,
                         const int32_t* context, int32_t* tokens, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_
