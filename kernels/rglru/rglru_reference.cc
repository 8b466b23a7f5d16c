#include "kernels/rglru/rglru_reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace griffin::ref {

void Conv1dCausal(absl::Span<const float> x, absl::Span<const float> w,
                  absl::Span<const float> bias, int T, int L, int K, absl::Span<float> tail,
                  absl::Span<float> out) {
  const int history = K - 1;
  // The input at time index j (j < 0 reaches into the tail).
  auto input = [&](int j, int ch) -> float {
    if (j >= 0) return x[int64_t{j} * L + ch];
    return tail[int64_t{history + j} * L + ch];
  };
  for (int t = 0; t < T; ++t) {
    for (int ch = 0; ch < L; ++ch) {
      // Reference order: current tap first, oldest last, bias added at the end.
      float acc = 0.0f;
      for (int s = 0; s < K; ++s) acc += w[int64_t{ch} * K + (K - 1 - s)] * input(t - s, ch);
      out[int64_t{t} * L + ch] = acc + bias[ch];
    }
  }
  std::vector<float> new_tail(static_cast<size_t>(history) * L);
  for (int r = 0; r < history; ++r) {
    const int j = T - history + r;
    for (int ch = 0; ch < L; ++ch) new_tail[int64_t{r} * L + ch] = input(j, ch);
  }
  std::copy(new_tail.begin(), new_tail.end(), tail.begin());
}

float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

namespace {
// out[h*B + j] = sum_i c[h*B + i] * w[h, i, j] + b[h, j]
void BlockDiagonal(const float* c, absl::Span<const float> w, absl::Span<const float> b, int L,
                   int H, float* out) {
  const int B = L / H;
  for (int h = 0; h < H; ++h) {
    for (int j = 0; j < B; ++j) {
      float acc = 0.0f;
      for (int i = 0; i < B; ++i) acc += c[h * B + i] * w[(int64_t{h} * B + i) * B + j];
      out[h * B + j] = acc + b[int64_t{h} * B + j];
    }
  }
}
}  // namespace

void RgLru(absl::Span<const float> c, absl::Span<const float> gx_w, absl::Span<const float> gx_b,
           absl::Span<const float> ga_w, absl::Span<const float> ga_b,
           absl::Span<const float> a_param, int T, int L, int H, int64_t position,
           absl::Span<float> h, absl::Span<float> out) {
  std::vector<float> gate_x(L), gate_a(L);
  for (int t = 0; t < T; ++t) {
    const float* ct = c.data() + int64_t{t} * L;
    BlockDiagonal(ct, gx_w, gx_b, L, H, gate_x.data());
    BlockDiagonal(ct, ga_w, ga_b, L, H, gate_a.data());
    const bool reset = position + t == 0;
    for (int i = 0; i < L; ++i) {
      const float log_a = -8.0f * Sigmoid(gate_a[i]) * Softplus(a_param[i]);
      const float a = std::exp(log_a);
      const float a_sq = std::exp(2.0f * log_a);
      const float gated = ct[i] * Sigmoid(gate_x[i]);
      const float normalized = reset ? gated : gated * std::sqrt(1.0f - a_sq);
      h[i] = (reset ? 0.0f : a * h[i]) + normalized;
      out[int64_t{t} * L + i] = h[i];
    }
  }
}

}  // namespace griffin::ref
