// Token sampling on the CPU: repetition penalty → temperature → top-k → top-p → min-p → draw, in
// vLLM's order. Randomness comes from Philox4x32-10 keyed by the request's seed and counted by the
// request's step, so the same seed gives the same tokens whatever the batch or the machine
// (the CUDA sampler uses the same generator).
#ifndef GRIFFIN_ENGINE_SAMPLER_H_
#define GRIFFIN_ENGINE_SAMPLER_H_

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace griffin::engine {

// Temperatures below this are greedy (argmax): dividing logits by less overflows float32 for no
// visible change in the distribution.
inline constexpr float kGreedyTemperature = 1e-5f;

// Already validated by the server (RELIABILITY.md VAL-2); the sampler assumes valid values.
struct SamplingParams {
  float temperature = 1.0f;         // ≥ 0; 0 (or < kGreedyTemperature) is greedy
  int top_k = -1;                   // ≤ 0: off; else keep the k most likely tokens
  float top_p = 1.0f;               // (0, 1]: keep the smallest set with this much probability
  float min_p = 0.0f;               // [0, 1]: drop tokens below min_p × the top probability
  float repetition_penalty = 1.0f;  // > 0; 1 = off. Logits of seen tokens: l > 0 ? l / r : l · r
  uint64_t seed = 0;
  // OpenAI-style penalties on the generated tokens only (`output` of SampleToken), applied after
  // the repetition penalty: l -= presence · [count > 0] + frequency · count. 0 = off; [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // OpenAI's logit_bias: (id, bias) pairs added to the logits before every other step, ids distinct
  // and in [0, vocab), biases finite in [-100, 100]. Only the host sampler applies them: the engine
  // samples a request that has any on the host (EngineCore::DeviceCanSample).
  std::vector<std::pair<int32_t, float>> logit_bias;

  bool greedy() const { return temperature < kGreedyTemperature; }
};

// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator cuRAND also implements.
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Uniform in [0, 1) for draw `step` of the stream `seed`.
float UniformForStep(uint64_t seed, uint64_t step);

// Index of the largest value; the lowest index among ties; NaN never wins.
int ArgMax(absl::Span<const float> logits);

// log_softmax of `logits` into `out` (same size), computed stably in double (ref::LogSoftmax).
void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out);

// The min(k, size) largest values as (index, value), largest first; ties go to the lower index and
// NaN sorts after every number (ref::TopK). What log-probability responses list as the top alternatives.
std::vector<std::pair<int32_t, float>> TopK(absl::Span<const float> values, int k);

// Samples one token from `logits` ([vocab], soft-capped model output) for draw `step` of a request:
// logit bias → repetition penalty → presence/frequency penalties → temperature → top-k → top-p →
// min-p → draw. `context` holds the prompt and generated ids the repetition penalty applies to; `output` the
// generated ids alone, which the presence and frequency penalties apply to.
// INTERNAL if the logits hold NaN or +inf, or nothing is finite (NUM-4: the request fails alone).
absl::StatusOr<int> SampleToken(absl::Span<const float> logits, const SamplingParams& params,
                                absl::Span<const int32_t> context, uint64_t step,
                                absl::Span<const int32_t> output = {});

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_SAMPLER_H_
