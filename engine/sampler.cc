#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "kernels/logits/logits_reference.h"

namespace griffin::engine {

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kMul0} * ctr[0];
    const uint64_t p1 = uint64_t{kMul1} * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

float UniformForStep(uint64_t seed, uint64_t step) {
  const auto r = Philox4x32({static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0, 0},
                            {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return static_cast<float>(r[0] >> 8) * (1.0f / 16777216.0f);  // 24 bits: exact in float
}

int ArgMax(absl::Span<const float> logits) { return ref::ArgMax(logits); }

void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out) {
  ref::LogSoftmax(logits, out);
}

std::vector<std::pair<int32_t, float>> TopK(absl::Span<const float> values, int k) {
  return ref::TopK(values, k);
}

absl::StatusOr<int> SampleToken(absl::Span<const float> logits, const SamplingParams& params,
                                absl::Span<const int32_t> context, uint64_t step,
                                absl::Span<const int32_t> output) {
  const int vocab = static_cast<int>(logits.size());
  bool any_finite = false;
  for (float v : logits) {
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity()) {
      return absl::InternalError("the model produced a non-finite logit");
    }
    any_finite |= std::isfinite(v);
  }
  if (!any_finite) return absl::InternalError("every logit is -inf");

  std::vector<float> work(logits.begin(), logits.end());
  // OpenAI and vLLM add the bias to the model's logits before any penalty (a -100 bias bans a token
  // for practical purposes; the ids were validated by the server).
  for (const auto& [id, bias] : params.logit_bias) {
    if (id >= 0 && id < vocab) work[id] += bias;
  }
  if (params.repetition_penalty != 1.0f) {
    absl::flat_hash_set<int32_t> seen(context.begin(), context.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& l = work[id];
      l = l > 0.0f ? l / params.repetition_penalty : l * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    absl::flat_hash_map<int32_t, int> counts;
    for (int32_t id : output) ++counts[id];
    for (const auto& [id, count] : counts) {
      if (id < 0 || id >= vocab || !std::isfinite(work[id])) continue;
      work[id] -= params.presence_penalty + params.frequency_penalty * static_cast<float>(count);
    }
  }
  if (params.greedy()) return ArgMax(work);

  // Probabilities at this temperature, sorted by decreasing probability.
  double max_value = -std::numeric_limits<double>::infinity();
  for (float v : work) max_value = std::max<double>(max_value, v);
  std::vector<double> prob(vocab);
  for (int i = 0; i < vocab; ++i) {
    prob[i] = std::exp((static_cast<double>(work[i]) - max_value) / params.temperature);
  }
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });

  int keep = vocab;
  if (params.top_k > 0) keep = std::min(keep, params.top_k);
  double total = 0.0;
  for (int i = 0; i < keep; ++i) total += prob[order[i]];
  if (params.top_p < 1.0f) {
    double cumulative = 0.0;
    for (int i = 0; i < keep; ++i) {
      cumulative += prob[order[i]] / total;
      if (cumulative >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    const double threshold = params.min_p * prob[order[0]];
    int kept = 1;
    while (kept < keep && prob[order[kept]] >= threshold) ++kept;
    keep = kept;
  }
  total = 0.0;
  for (int i = 0; i < keep; ++i) total += prob[order[i]];

  const double target = static_cast<double>(UniformForStep(params.seed, step)) * total;
  double cumulative = 0.0;
  for (int i = 0; i < keep; ++i) {
    cumulative += prob[order[i]];
    if (target < cumulative) return order[i];
  }
  return order[keep - 1];
}

}  // namespace griffin::engine
