// The CPU references of the kernels (kernels/*/*_reference.h) against float64 formulas and their
// own invariants (chunked == whole, reset at position 0). They run everywhere (no GPU).
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/geglu/geglu_reference.h"
#include "kernels/linear/linear_reference.h"
#include "kernels/norm/norm_reference.h"
#include "kernels/rglru/rglru_reference.h"

namespace griffin::ref {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(ReferenceTest, RmsNormMatchesDoubleFormula) {
  for (int d : {1, 7, 64, 257}) {
    const int T = 3;
    auto x = Random(T * d, d), w = Random(d, d + 1, 0.1f);
    std::vector<float> out(T * d, NAN);
    RmsNorm(x, w, 1e-6f, T, absl::MakeSpan(out));
    for (int t = 0; t < T; ++t) {
      double ss = 0;
      for (int i = 0; i < d; ++i) ss += double(x[t * d + i]) * x[t * d + i];
      const double inv = 1.0 / std::sqrt(ss / d + 1e-6);
      for (int i = 0; i < d; ++i) {
        EXPECT_NEAR(out[t * d + i], x[t * d + i] * inv * (1.0 + w[i]), 1e-5) << d;
      }
    }
  }
}

TEST(ReferenceTest, LinearMatchesDoubleFormula) {
  const int T = 5, in = 33, out = 17;
  auto x = Random(T * in, 1), w = Random(out * in, 2), b = Random(out, 3);
  std::vector<float> y(T * out, NAN);
  Linear(x, w, b, T, in, out, absl::MakeSpan(y));
  for (int t = 0; t < T; ++t) {
    for (int o = 0; o < out; ++o) {
      double acc = b[o];
      for (int i = 0; i < in; ++i) acc += double(x[t * in + i]) * w[o * in + i];
      EXPECT_NEAR(y[t * out + o], acc, 1e-4);
    }
  }
}

TEST(ReferenceTest, GeluTanhKnownValues) {
  EXPECT_FLOAT_EQ(GeluTanh(0.0f), 0.0f);
  EXPECT_NEAR(GeluTanh(1.0f), 0.8411920, 1e-6);  // torch gelu(1, approximate="tanh")
  EXPECT_NEAR(GeluTanh(-1.0f), -0.1588080, 1e-6);
  EXPECT_NEAR(GeluTanh(3.0f), 2.9963627, 1e-6);
}

TEST(ReferenceTest, SoftplusMatchesTorchThreshold) {
  EXPECT_NEAR(Softplus(0.0f), std::log(2.0), 1e-7);
  EXPECT_FLOAT_EQ(Softplus(25.0f), 25.0f);
  EXPECT_NEAR(Softplus(-30.0f), std::exp(-30.0), 1e-18);
}

// The conv's tap order: w[ch, K-1] multiplies the current input, w[ch, 0] the oldest.
TEST(ReferenceTest, ConvTapOrderAndTail) {
  const int L = 1, K = 4, T = 5;
  std::vector<float> x = {1, 10, 100, 1000, 10000};
  std::vector<float> w = {4, 3, 2, 1};  // oldest .. current
  std::vector<float> b = {0.5f};
  std::vector<float> tail(3, 0.0f), out(T, NAN);
  Conv1dCausal(x, w, b, T, L, K, absl::MakeSpan(tail), absl::MakeSpan(out));
  EXPECT_FLOAT_EQ(out[0], 1 * 1 + 0.5f);
  EXPECT_FLOAT_EQ(out[1], 10 * 1 + 1 * 2 + 0.5f);
  EXPECT_FLOAT_EQ(out[3], 1000 * 1 + 100 * 2 + 10 * 3 + 1 * 4 + 0.5f);
  EXPECT_EQ(tail, (std::vector<float>{100, 1000, 10000}));
}

TEST(ReferenceTest, ConvInChunksEqualsWhole) {
  const int L = 6, K = 4, T = 11;
  auto x = Random(T * L, 5), w = Random(L * K, 6), b = Random(L, 7);
  std::vector<float> tail(size_t(K - 1) * L, 0.0f), whole(T * L);
  Conv1dCausal(x, w, b, T, L, K, absl::MakeSpan(tail), absl::MakeSpan(whole));
  for (int chunk : {1, 2, 3, 5}) {
    std::vector<float> tail2(size_t(K - 1) * L, 0.0f), pieces(T * L, NAN);
    for (int s = 0; s < T; s += chunk) {
      const int n = std::min(chunk, T - s);
      Conv1dCausal(absl::MakeConstSpan(x).subspan(s * L, n * L), w, b, n, L, K,
                   absl::MakeSpan(tail2), absl::MakeSpan(pieces).subspan(s * L, n * L));
    }
    EXPECT_EQ(pieces, whole) << "chunk " << chunk;
    EXPECT_EQ(tail2, tail) << "chunk " << chunk;
  }
}

struct LruInputs {
  int L = 8, H = 2, T = 9;
  std::vector<float> c, gx_w, gx_b, ga_w, ga_b, a_param;
  LruInputs() {
    const int B = L / H;
    c = Random(T * L, 11);
    gx_w = Random(H * B * B, 12, 0.3f);
    gx_b = Random(L, 13, 0.1f);
    ga_w = Random(H * B * B, 14, 0.3f);
    ga_b = Random(L, 15, 0.1f);
    a_param = Random(L, 16);
  }
};

TEST(ReferenceTest, RgLruMatchesDoubleFormula) {
  LruInputs in;
  const int B = in.L / in.H;
  std::vector<float> h(in.L, 0.0f), out(in.T * in.L, NAN);
  RgLru(in.c, in.gx_w, in.gx_b, in.ga_w, in.ga_b, in.a_param, in.T, in.L, in.H, 0,
        absl::MakeSpan(h), absl::MakeSpan(out));
  std::vector<double> ref_h(in.L, 0.0);
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (int t = 0; t < in.T; ++t) {
    for (int i = 0; i < in.L; ++i) {
      const int head = i / B, j = i % B;
      double gx = in.gx_b[i], ga = in.ga_b[i];
      for (int k = 0; k < B; ++k) {
        const double ck = in.c[t * in.L + head * B + k];
        gx += ck * in.gx_w[(head * B + k) * B + j];
        ga += ck * in.ga_w[(head * B + k) * B + j];
      }
      const double log_a = -8.0 * sigmoid(ga) * std::log1p(std::exp(double(in.a_param[i])));
      const double a = std::exp(log_a);
      const double mult = t == 0 ? 1.0 : std::sqrt(1.0 - std::exp(2 * log_a));
      ref_h[i] = (t == 0 ? 0.0 : a * ref_h[i]) + in.c[t * in.L + i] * sigmoid(gx) * mult;
      EXPECT_NEAR(out[t * in.L + i], ref_h[i], 1e-5) << t << "," << i;
    }
  }
}

// KER-2 (a): a scan in chunks (any size, state carried) equals the whole run, outputs and state.
TEST(ReferenceTest, RgLruInChunksEqualsWhole) {
  LruInputs in;
  std::vector<float> h(in.L, 0.0f), whole(in.T * in.L);
  RgLru(in.c, in.gx_w, in.gx_b, in.ga_w, in.ga_b, in.a_param, in.T, in.L, in.H, 0,
        absl::MakeSpan(h), absl::MakeSpan(whole));
  for (int chunk : {1, 2, 4}) {
    std::vector<float> h2(in.L, 0.0f), pieces(in.T * in.L, NAN);
    for (int s = 0; s < in.T; s += chunk) {
      const int n = std::min(chunk, in.T - s);
      RgLru(absl::MakeConstSpan(in.c).subspan(s * in.L, n * in.L), in.gx_w, in.gx_b, in.ga_w,
            in.ga_b, in.a_param, n, in.L, in.H, s, absl::MakeSpan(h2),
            absl::MakeSpan(pieces).subspan(s * in.L, n * in.L));
    }
    EXPECT_EQ(pieces, whole);
    EXPECT_EQ(h2, h);
  }
}

// Position 0 starts a document: whatever the carried state holds is ignored.
TEST(ReferenceTest, RgLruResetsAtPositionZero) {
  LruInputs in;
  std::vector<float> zero(in.L, 0.0f), garbage = Random(in.L, 99, 100.0f);
  std::vector<float> a(in.T * in.L), b(in.T * in.L);
  RgLru(in.c, in.gx_w, in.gx_b, in.ga_w, in.ga_b, in.a_param, in.T, in.L, in.H, 0,
        absl::MakeSpan(zero), absl::MakeSpan(a));
  RgLru(in.c, in.gx_w, in.gx_b, in.ga_w, in.ga_b, in.a_param, in.T, in.L, in.H, 0,
        absl::MakeSpan(garbage), absl::MakeSpan(b));
  EXPECT_EQ(a, b);
  // At a later position the carried state matters.
  std::vector<float> c(in.T * in.L), g2 = Random(in.L, 99, 100.0f);
  RgLru(in.c, in.gx_w, in.gx_b, in.ga_w, in.ga_b, in.a_param, in.T, in.L, in.H, 5,
        absl::MakeSpan(g2), absl::MakeSpan(c));
  EXPECT_NE(a, c);
}

TEST(ReferenceTest, RopeRotatesFirstHalfPairs) {
  const int heads = 2, hd = 8, rot = 4;
  auto x = Random(heads * hd, 21);
  auto y = x;
  ApplyRope(absl::MakeSpan(y), heads, hd, rot, 10000.0f, 0);
  EXPECT_EQ(x, y);  // position 0 is the identity
  ApplyRope(absl::MakeSpan(y), heads, hd, rot, 10000.0f, 7);
  for (int h = 0; h < heads; ++h) {
    const float* a = x.data() + h * hd;
    const float* b = y.data() + h * hd;
    for (int i = rot; i < hd; ++i) EXPECT_EQ(a[i], b[i]);  // pass-through half
    // Pair (0, 2) rotated by angle 7 * 1; pair (1, 3) by 7 / 10000^(2/4) = 0.07.
    for (int i = 0; i < rot / 2; ++i) {
      const double angle = 7.0 / std::pow(10000.0, 2.0 * i / rot);
      EXPECT_NEAR(b[i], a[i] * std::cos(angle) - a[i + 2] * std::sin(angle), 1e-5);
      EXPECT_NEAR(b[i + 2], a[i + 2] * std::cos(angle) + a[i] * std::sin(angle), 1e-5);
    }
  }
}

}  // namespace
}  // namespace griffin::ref
