// Cases for kernels/geglu in the op registry.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/geglu/geglu.cuh"
#include "kernels/geglu/geglu_reference.h"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

// scaled: gu is an FP8 GEMM's unscaled output and the kernel applies its scales as it reads
// (with_rows: per-token scales too); the output must equal, bit for bit, that of the separate
// scaling pass followed by the plain kernel.
void GeGluCase(int m, int n, bool scaled = false, bool with_rows = true) {
  auto gu = Random(size_t(n) * 2 * m, 2.0f), bg = Random(m, 0.1f), bu = Random(m, 0.1f);
  ScalesOnDevice scales(n, 2 * m, with_rows);
  std::vector<float> raw = gu;
  if (scaled) {
    for (int t = 0; t < n; ++t) {
      for (int c = 0; c < 2 * m; ++c) {
        float& v = raw[size_t(t) * 2 * m + c];
        v = scales.Unscale(v, t, c);
        gu[size_t(t) * 2 * m + c] = scales.Apply(v, t, c);
      }
    }
  }
  Dev<float> dgu(raw), dbg(bg), dbu(bu);
  Dev<bf16_t> out(size_t(n) * m);
  ASSERT_EQ(LaunchGeGlu(dgu.get(), scaled ? scales.get() : InputScales{}, dbg.get(), dbu.get(), n,
                        m, out.get(), 0),
            cudaSuccess);
  const auto got_bits = out.Get(size_t(n) * m);
  const auto got = FromBf16(got_bits);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < m; ++i) {
      const float ref = ref::GeluTanh(gu[size_t(t) * 2 * m + i] + bg[i]) *
                        (gu[size_t(t) * 2 * m + m + i] + bu[i]);
      ASSERT_NEAR(got[size_t(t) * m + i], ref, std::abs(ref) * 0.0040f + 1e-6f) << t << " " << i;
    }
  }
  if (!scaled) return;
  ASSERT_EQ(LaunchScaleRowsAndColumns(dgu.get(), scales.get().rows, scales.get().cols, n, 2 * m, 0),
            cudaSuccess);
  Dev<bf16_t> out2(size_t(n) * m);
  ASSERT_EQ(LaunchGeGlu(dgu.get(), InputScales{}, dbg.get(), dbu.get(), n, m, out2.get(), 0),
            cudaSuccess);
  ASSERT_EQ(out2.Get(size_t(n) * m), got_bits) << "scales applied on reading differ from the pass";
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
  // The FP8 GEMM's scales applied on reading (7680: the model's width, float4 kernel; 257 strided).
  for (int m : {257, 7680}) {
    for (bool with_rows : {true, false}) {
      cases.push_back(
          {"geglu.scaled_input", absl::StrCat("m", m, " n5", with_rows ? "" : " cols only"),
           "ref::GeluTanh(gate) * up on the scaled input; the scaling pass + plain kernel",
           "as geglu; bit-identical to the pass", false,
           [m, with_rows] { GeGluCase(m, 5, true, with_rows); }});
    }
  }
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeGeGluCases);

}  // namespace
}  // namespace griffin::kernels::testing
