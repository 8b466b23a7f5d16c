#include "kernels/linear/linear_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "base/numeric.h"

namespace griffin::ref {

void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
            int T, int in, int out, absl::Span<float> y) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x.data() + int64_t{t} * in;
    float* yr = y.data() + int64_t{t} * out;
    for (int o = 0; o < out; ++o) {
      const float* wr = w.data() + int64_t{o} * in;
      float acc = 0.0f;
      for (int i = 0; i < in; ++i) acc += xr[i] * wr[i];
      yr[o] = bias.empty() ? acc : acc + bias[o];
    }
  }
}

void QuantizeRowsFp8E4M3(absl::Span<float> w, int out, int in, absl::Span<float> scales) {
  for (int o = 0; o < out; ++o) {
    float* row = w.data() + int64_t{o} * in;
    float largest = 0.0f;
    for (int i = 0; i < in; ++i) largest = std::max(largest, std::fabs(row[i]));
    const float scale = largest > 0.0f ? largest / kFp8E4M3Max : 1.0f;
    scales[o] = scale;
    for (int i = 0; i < in; ++i) row[i] = RoundToFp8E4M3(row[i] / scale) * scale;
  }
}

}  // namespace griffin::ref
