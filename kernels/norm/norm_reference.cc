#include "kernels/norm/norm_reference.h"

#include <cmath>
#include <cstdint>

namespace griffin::ref {

void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps, int T,
             absl::Span<float> out) {
  const int d = static_cast<int>(weight.size());
  for (int t = 0; t < T; ++t) {
    const float* row = x.data() + int64_t{t} * d;
    float sum_sq = 0.0f;
    for (int i = 0; i < d; ++i) sum_sq += row[i] * row[i];
    const float inv = 1.0f / std::sqrt(sum_sq / d + eps);
    float* dst = out.data() + int64_t{t} * d;
    for (int i = 0; i < d; ++i) dst[i] = row[i] * inv * (1.0f + weight[i]);
  }
}

}  // namespace griffin::ref
