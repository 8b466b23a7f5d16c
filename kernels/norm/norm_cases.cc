// Cases for kernels/norm (rmsnorm.cuh) in the op registry.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/norm/norm_reference.h"
#include "kernels/norm/rmsnorm.cuh"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

void AddRmsNormCase(int d, int rows) {
  auto x = Random(size_t(rows) * d), delta = Random(size_t(rows) * d);
  auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
  Dev<float> dx(x), dd(delta), db(bias), dw(w);
  Dev<bf16_t> out(size_t(rows) * d);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), db.get(), dw.get(), nullptr, rows, d, 1e-6f,
                             out.get(), 0),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> sum(x.size()), ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) sum[i] = x[i] + (delta[i] + bias[i % d]);
  ref::RmsNorm(sum, w, 1e-6f, rows, absl::MakeSpan(ref));
  const auto got_x = dx.Get(x.size());
  const auto got = FromBf16(out.Get(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(got_x[i], sum[i]) << "residual i=" << i;
    ASSERT_NEAR(got[i], ref[i], std::abs(ref[i]) * 0.0040f + 1e-5f * std::sqrt(float(d))) << i;
  }
  // The gathering form (final norm of selected rows, no add): rows in reverse order.
  std::vector<int32_t> gather(rows);
  for (int r = 0; r < rows; ++r) gather[r] = rows - 1 - r;
  Dev<int32_t> dg(gather);
  Dev<bf16_t> out2(size_t(rows) * d);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), nullptr, nullptr, dw.get(), dg.get(), rows, d, 1e-6f,
                             out2.get(), 0),
            cudaSuccess);
  const auto got2 = FromBf16(out2.Get(x.size()));
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < d; ++i) {
      const float want = ref[size_t(rows - 1 - r) * d + i];
      ASSERT_NEAR(got2[size_t(r) * d + i], want,
                  std::abs(want) * 0.0040f + 1e-5f * std::sqrt(float(d)));
    }
  }
}

void EmbedCase(int vocab, int d, int n) {
  auto table = RoundBf16(Random(size_t(vocab) * d));
  std::vector<int32_t> tokens(n);
  for (int t = 0; t < n; ++t) tokens[t] = (t * 7919 + 3) % vocab;
  tokens[0] = vocab - 1;
  Dev<bf16_t> dt(ToBf16(table));
  Dev<int32_t> dtok(tokens);
  Dev<float> x(size_t(n) * d);
  const float scale = 50.5f;
  ASSERT_EQ(LaunchEmbed(dt.get(), dtok.get(), n, d, scale, x.get(), 0), cudaSuccess);
  const auto got = x.Get(size_t(n) * d);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < d; ++i) {
      ASSERT_EQ(got[size_t(t) * d + i], table[size_t(tokens[t]) * d + i] * scale) << t << " " << i;
    }
  }
}

std::vector<OpCase> MakeNormCases() {
  std::vector<OpCase> cases;
  // 4 and 2560..4096 take the float4 kernel; 4100 (too wide) and the odd widths the strided one.
  for (int d : {1, 4, 7, 255, 257, 2560, 4096, 4100}) {
    for (int rows : {1, 3, 33}) {
      cases.push_back({"rmsnorm", absl::StrCat("d", d, " rows", rows), "ref::RmsNorm",
                       "residual exact; output bf16 rounding 2^-8 relative + d * 2^-24", false,
                       [d, rows] { AddRmsNormCase(d, rows); }});
    }
  }
  for (int d : {8, 2560}) {
    cases.push_back({"embed", absl::StrCat("vocab1000 d", d, " n5"), "table row * scale",
                     "exact (bf16 times a bf16 scale in float32)", false,
                     [d] { EmbedCase(1000, d, 5); }});
  }
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeNormCases);

}  // namespace
}  // namespace griffin::kernels::testing
