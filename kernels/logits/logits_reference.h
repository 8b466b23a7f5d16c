// CPU reference for kernels/logits: the head's soft-cap and greedy selection. (The sampling
// kernel's reference is the filter set its test builds by sorting, and the engine's host sampler,
// engine/sampler.h, which draws from the same Philox stream.)
#ifndef GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_
#define GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace griffin::ref {

// logits[i] = tanh(logits[i] / cap) * cap in place (SPEC.md §2.7); cap <= 0: unchanged.
void SoftCap(absl::Span<float> logits, float cap);

// Index of the largest value; the lowest index among ties; NaN never wins.
int ArgMax(absl::Span<const float> logits);

// log-softmax of `logits` into `out` (same size), computed in double. A NaN or +inf gives NaN.
void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out);

// The k largest values (k clamped to [0, size]), best first, ties to the lower index, NaN last.
std::vector<std::pair<int32_t, float>> TopK(absl::Span<const float> values, int k);

// One scored position of a prompt (echo, prompt log-probabilities): the log-softmax of `logits`
// (computed in double) at `target`, its rank (1 + the number of ids whose log-probability is
// higher) and the top_ids.size() most likely ids, best first, ties to the lower id, NaN last, with
// their log-probabilities in top_logprobs (same size). A row holding NaN or +inf gives NaN values.
struct RowScore {
  float logprob = 0.0f;
  int32_t rank = 0;
};
RowScore ScoreRow(absl::Span<const float> logits, int32_t target, absl::Span<int32_t> top_ids,
                  absl::Span<float> top_logprobs);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_
