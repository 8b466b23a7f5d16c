// Cases for kernels/geglu in the op registry.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/geglu/geglu.cuh"
#include "kernels/geglu/geglu_reference.h"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

void GeGluCase(int m, int n) {
  auto gu = Random(size_t(n) * 2 * m, 2.0f), bg = Random(m, 0.1f), bu = Random(m, 0.1f);
  Dev<float> dgu(gu), dbg(bg), dbu(bu);
  Dev<bf16_t> out(size_t(n) * m);
  ASSERT_EQ(LaunchGeGlu(dgu.get(), dbg.get(), dbu.get(), n, m, out.get(), 0), cudaSuccess);
  const auto got = FromBf16(out.Get(size_t(n) * m));
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < m; ++i) {
      const float ref = ref::GeluTanh(gu[size_t(t) * 2 * m + i] + bg[i]) *
                        (gu[size_t(t) * 2 * m + m + i] + bu[i]);
      ASSERT_NEAR(got[size_t(t) * m + i], ref, std::abs(ref) * 0.0040f + 1e-6f) << t << " " << i;
    }
  }
}

std::vector<OpCase> MakeGeGluCases() {
  std::vector<OpCase> cases;
  for (int m : {1, 4, 31, 255, 257, 260, 7680}) {  // 4, 260, 7680: the float4 kernel
    for (int n : {1, 5}) {
      cases.push_back({"geglu", absl::StrCat("m", m, " n", n), "ref::GeluTanh(gate) * up",
                       "bf16 output rounding 2^-8 relative + tanhf ulps", false,
                       [m, n] { GeGluCase(m, n); }});
    }
  }
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeGeGluCases);

}  // namespace
}  // namespace griffin::kernels::testing
