#include "kernels/attention/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace griffin::ref {

void ApplyRope(absl::Span<float> x, int heads, int head_dim, int rotary_dim, float theta,
               int64_t position) {
  const int half = rotary_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    const float inv_frequency = 1.0f / std::pow(theta, exponent);
    const float angle = static_cast<float>(position) * inv_frequency;
    const float sin = std::sin(angle), cos = std::cos(angle);
    for (int hd = 0; hd < heads; ++hd) {
      float* head = x.data() + int64_t{hd} * head_dim;
      const float first = head[i], second = head[i + half];
      head[i] = first * cos - second * sin;
      head[i + half] = second * cos + first * sin;
    }
  }
}

template <typename Real>
void LocalAttention(absl::Span<const float> q, absl::Span<const float> k, absl::Span<const float> v,
                    absl::Span<const float> ring_k, absl::Span<const float> ring_v, int T, int H,
                    int KV, int head_dim, int W, int64_t position, Real scale,
                    absl::Span<Real> out) {
  const int hd = head_dim, q_width = H * hd, kv_width = KV * hd, group = H / KV;
  auto key_at = [&](int64_t pos, absl::Span<const float> run,
                    absl::Span<const float> ring) -> const float* {
    if (pos >= position) return run.data() + (pos - position) * kv_width;
    return ring.data() + (pos % W) * kv_width;
  };
  std::vector<Real> scores(W + 1);
  for (int t = 0; t < T; ++t) {
    const int64_t qpos = position + t;
    const int64_t first = std::max<int64_t>(0, qpos - W);
    const int n = static_cast<int>(qpos - first + 1);
    for (int h = 0; h < H; ++h) {
      const float* qh = q.data() + int64_t{t} * q_width + int64_t{h} * hd;
      const int g = h / group;
      Real max_score = -std::numeric_limits<Real>::infinity();
      for (int j = 0; j < n; ++j) {
        const float* kh = key_at(first + j, k, ring_k) + int64_t{g} * hd;
        Real dot = 0;
        for (int i = 0; i < hd; ++i) dot += static_cast<Real>(qh[i]) * kh[i];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      Real sum = 0;
      for (int j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      Real* dst = out.data() + int64_t{t} * q_width + int64_t{h} * hd;
      std::fill(dst, dst + hd, Real{0});
      for (int j = 0; j < n; ++j) {
        const Real p = scores[j] / sum;
        const float* vh = key_at(first + j, v, ring_v) + int64_t{g} * hd;
        for (int i = 0; i < hd; ++i) dst[i] += p * vh[i];
      }
    }
  }
}

template void LocalAttention<float>(absl::Span<const float>, absl::Span<const float>,
                                    absl::Span<const float>, absl::Span<const float>,
                                    absl::Span<const float>, int, int, int, int, int, int64_t,
                                    float, absl::Span<float>);
template void LocalAttention<double>(absl::Span<const float>, absl::Span<const float>,
                                     absl::Span<const float>, absl::Span<const float>,
                                     absl::Span<const float>, int, int, int, int, int, int64_t,
                                     double, absl::Span<double>);

void WriteRing(absl::Span<const float> k, absl::Span<const float> v, int T, int kv_width, int W,
               int64_t position, absl::Span<float> ring_k, absl::Span<float> ring_v) {
  for (int t = std::max(0, T - W); t < T; ++t) {
    const int64_t row = (position + t) % W;
    std::copy_n(k.data() + int64_t{t} * kv_width, kv_width, ring_k.data() + row * kv_width);
    std::copy_n(v.data() + int64_t{t} * kv_width, kv_width, ring_v.data() + row * kv_width);
  }
}

}  // namespace griffin::ref
