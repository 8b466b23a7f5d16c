#include "kernels/logits/logits_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace griffin::ref {

void SoftCap(absl::Span<float> logits, float cap) {
  if (cap <= 0.0f) return;
  for (float& v : logits) v = std::tanh(v / cap) * cap;
}

int ArgMax(absl::Span<const float> logits) {
  int best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (!found || logits[i] > best_value) {
      best = static_cast<int>(i);
      best_value = logits[i];
      found = true;
    }
  }
  return best;
}

RowScore ScoreRow(absl::Span<const float> logits, int32_t target, absl::Span<int32_t> top_ids,
                  absl::Span<float> top_logprobs) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (float v : logits) max_value = std::max<double>(max_value, v);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max_value);
  const double log_sum = max_value + std::log(sum);
  std::vector<float> log_probs(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    log_probs[i] = static_cast<float>(static_cast<double>(logits[i]) - log_sum);
  }
  RowScore score;
  score.logprob = log_probs[target];
  score.rank = 1 + static_cast<int32_t>(std::count_if(
                       log_probs.begin(), log_probs.end(),
                       [&](float v) { return v > score.logprob; }));
  const size_t k = std::min(top_ids.size(), log_probs.size());
  std::vector<int32_t> order(log_probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    const bool a_nan = std::isnan(log_probs[a]), b_nan = std::isnan(log_probs[b]);
    if (a_nan != b_nan) return b_nan;
    return log_probs[a] > log_probs[b] || (log_probs[a] == log_probs[b] && a < b);
  });
  for (size_t j = 0; j < k; ++j) {
    top_ids[j] = order[j];
    top_logprobs[j] = log_probs[order[j]];
  }
  return score;
}

}  // namespace griffin::ref
