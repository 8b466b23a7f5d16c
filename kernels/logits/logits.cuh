// The head's element-wise tail and greedy sampling on the GPU (SPEC.md §2.7, RELIABILITY NUM-4).
//
// LaunchSoftCap: logits[i] = tanh(logits[i] / cap) * cap in place (float32 [rows, V]); cap <= 0: no-op.
// LaunchArgMax: per row of float32 [rows, V], the index of the largest value, lowest index among
//   ties, written to tokens[r]; a row holding NaN or +inf (or nothing finite) gets -1 instead: the
//   request is flagged, nothing asserts on the device. Two stages: (row, chunk of 4096) blocks,
//   then one warp per row; `scratch` holds rows * kArgMaxParts * 3 int32.
// LaunchSoftCapArgMax: LaunchSoftCap then LaunchArgMax over the rows, in one pass over them (the
//   capped values written back are LaunchSoftCap's, bit for bit); cap <= 0: LaunchArgMax.
//   `write_capped` (device, may be null: write): when it holds 0 the capped values are not
//   written back and the rows keep the uncapped logits; the tokens are the same. A flag in device
//   memory rather than an argument so that one CUDA graph serves steps that need the logits
//   afterwards (sampling, log-probabilities) and steps that need only the greedy tokens.
//   Without the write the pass caps only values near each warp's raw maximum, which gives the
//   same tokens as long as the device's soft-cap never steps back by more than
//   kSoftCapInversionSlack * cap between a float and a larger one:
// LaunchCountSoftCapInversions (a test's check of that premise): over the pairs of adjacent
//   floats x < y, both signs, whose capped values come out in the wrong order (cap > 0), writes
//   stats[0] their count, stats[1] the largest backward step and stats[2] the smallest |x| (both
//   as float bits).
// LaunchSample: per row, vLLM's order: repetition penalty over the row's context ids, temperature,
//   top-k, top-p, min-p, then one draw from Philox4x32-10 keyed by (seed, step) as engine/sampler.cc.
//   Top-k and top-p are found without sorting: a bisection on the threshold (at most 40 / 32 passes
//   over the row, each a block reduction; each stops once the kept set can no longer change), the
//   passes reading four float4 per thread at a time. temperature < 1e-5 is greedy. NaN/+inf rows
//   give -1.
// LaunchScoreRows: prompt log-probabilities without copying rows to the host. For each row r whose
//   targets[r] is in [0, V) (others are skipped): logprob[r] = log-softmax of the row at the target,
//   rank[r] = 1 + the number of values above the target's, and the top_k most likely ids (ties: lower
//   id) with their log-softmax values at top_ids / top_logprobs [r * top_k, (r + 1) * top_k).
//   As ref::ScoreRow, in float32 (the reference sums in double). A row holding NaN or +inf, or
//   nothing finite, gets NaN values (ids 0..top_k-1, rank 1). top_k in [0, kMaxDeviceTopLogprobs].
#ifndef GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_
#define GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

cudaError_t LaunchSoftCap(float* logits, int64_t count, float cap, cudaStream_t stream);
inline constexpr int kArgMaxParts = 64;
cudaError_t LaunchArgMax(const float* logits, int rows, int V, int32_t* tokens, int32_t* scratch,
                         cudaStream_t stream);
cudaError_t LaunchSoftCapArgMax(float* logits, int rows, int V, float cap, int32_t* tokens,
                                int32_t* scratch, cudaStream_t stream,
                                const int32_t* write_capped = nullptr);
inline constexpr float kSoftCapInversionSlack = 0x1p-20f;
cudaError_t LaunchCountSoftCapInversions(float cap, uint32_t* stats, cudaStream_t stream);

// One logit_bias entry: `bias` added to the row's logit of `id` before anything else (OpenAI).
struct LogitBias {
  int32_t id;
  float bias;
};

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
  int bias_start = 0;  // into the logit-bias array; a row's ids are distinct
  int bias_len = 0;
};

// `logits` is modified (bias, penalty and temperature applied in place). `bias` may be null when
// no row has bias entries.
cudaError_t LaunchSample(float* logits, int rows, int V, const SampleRowParams* params,
                         const int32_t* context, const LogitBias* bias, int32_t* tokens,
                         cudaStream_t stream);

// The most alternatives per position LaunchScoreRows returns (OpenAI's top_logprobs maximum).
inline constexpr int kMaxDeviceTopLogprobs = 20;
cudaError_t LaunchScoreRows(const float* logits, int rows, int V, const int32_t* targets, int top_k,
                            float* logprob, int32_t* rank, int32_t* top_ids, float* top_logprobs,
                            cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LOGITS_LOGITS_CUH_
