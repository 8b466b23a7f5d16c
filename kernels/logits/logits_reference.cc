#include "kernels/logits/logits_reference.h"

#include <cmath>
#include <limits>

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

}  // namespace griffin::ref
