// CPU reference for kernels/logits: the head's soft-cap and greedy selection. (The sampling
// kernel's reference is the filter set its test builds by sorting, and the engine's host sampler,
// engine/sampler.h, which draws from the same Philox stream.)
#ifndef GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_
#define GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_

#include "absl/types/span.h"

namespace griffin::ref {

// logits[i] = tanh(logits[i] / cap) * cap in place (SPEC.md §2.7); cap <= 0: unchanged.
void SoftCap(absl::Span<float> logits, float cap);

// Index of the largest value; the lowest index among ties; NaN never wins.
int ArgMax(absl::Span<const float> logits);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_LOGITS_LOGITS_REFERENCE_H_
