#include "kernels/linear/linear_reference.h"

#include <cstdint>

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

}  // namespace griffin::ref
