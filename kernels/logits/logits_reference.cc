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

void LogSoftmax(absl::Span<const float> logits, absl::Span<float> out) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (float v : logits) max_value = std::max<double>(max_value, v);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max_value);
  const double log_sum = max_value + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(logits[i]) - log_sum);
  }
}

std::vector<std::pair<int32_t, float>> TopK(absl::Span<const float> values, int k) {
  const int n = std::clamp(k, 0, static_cast<int>(values.size()));
  std::vector<int32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    const bool a_nan = std::isnan(values[a]), b_nan = std::isnan(values[b]);
    if (a_nan != b_nan) return b_nan;
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::vector<std::pair<int32_t, float>> top;
  top.reserve(n);
  for (int i = 0; i < n; ++i) top.emplace_back(order[i], values[order[i]]);
  return top;
}

RowScore ScoreRow(absl::Span<const float> logits, int32_t target, absl::Span<int32_t> top_ids,
                  absl::Span<float> top_logprobs) {
  std::vector<float> log_probs(logits.size());
  LogSoftmax(logits, absl::MakeSpan(log_probs));
  RowScore score;
  score.logprob = log_probs[target];
  score.rank = 1 + static_cast<int32_t>(std::count_if(log_probs.begin(), log_probs.end(),
                                                      [&](float v) { return v > score.logprob; }));
  const auto top = TopK(log_probs, static_cast<int>(top_ids.size()));
  for (size_t j = 0; j < top.size(); ++j) {
    top_ids[j] = top[j].first;
    top_logprobs[j] = top[j].second;
  }
  return score;
}

}  // namespace griffin::ref
