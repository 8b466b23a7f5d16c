// Cases for kernels/norm (rmsnorm.cuh) in the op registry.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/norm/norm_reference.h"
#include "kernels/norm/rmsnorm.cuh"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

// scaled: delta is an FP8 GEMM's unscaled output and the kernel applies its scales as it reads;
// the residual and output must equal, bit for bit, the separate scaling pass + plain kernel's.
// vecs: LaunchAddRmsNorm's vectors_per_thread (2: two float4s a thread on the float4 path).
void AddRmsNormCase(int d, int rows, bool scaled = false, bool with_rows = true, int vecs = 0) {
  auto x = Random(size_t(rows) * d), delta = Random(size_t(rows) * d);
  auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
  ScalesOnDevice scales(rows, d, with_rows);
  std::vector<float> raw = delta;
  if (scaled) {
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < d; ++i) {
        float& v = raw[size_t(r) * d + i];
        v = scales.Unscale(v, r, i);
        delta[size_t(r) * d + i] = scales.Apply(v, r, i);
      }
    }
  }
  Dev<float> dx(x), dd(raw), db(bias), dw(w);
  Dev<bf16_t> out(size_t(rows) * d);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), scaled ? scales.get() : InputScales{}, db.get(),
                             dw.get(), nullptr, rows, d, 1e-6f, out.get(), 0, {}, 1, vecs),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> sum(x.size()), ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) sum[i] = x[i] + (delta[i] + bias[i % d]);
  ref::RmsNorm(sum, w, 1e-6f, rows, absl::MakeSpan(ref));
  const auto got_x = dx.Get(x.size());
  const auto got_bits = out.Get(x.size());
  const auto got = FromBf16(got_bits);
  for (size_t i = 0; i < x.size(); ++i) {
    if (scaled) {
      ASSERT_NEAR(got_x[i], sum[i], 1e-6f * (std::abs(x[i]) + std::abs(delta[i]) + 1.0f))
          << "residual i=" << i;
    } else {
      ASSERT_EQ(got_x[i], sum[i]) << "residual i=" << i;
    }
    ASSERT_NEAR(got[i], ref[i], std::abs(ref[i]) * 0.0040f + 1e-5f * std::sqrt(float(d))) << i;
  }
  if (scaled) {
    Dev<float> dx2(x);
    ASSERT_EQ(LaunchScaleRowsAndColumns(dd.get(), scales.get().rows, scales.get().cols, rows, d, 0),
              cudaSuccess);
    Dev<bf16_t> out2(size_t(rows) * d);
    ASSERT_EQ(LaunchAddRmsNorm(dx2.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr,
                               rows, d, 1e-6f, out2.get(), 0, {}, 1, vecs),
              cudaSuccess);
    ASSERT_EQ(dx2.Get(x.size()), got_x) << "residual: scales on reading differ from the pass";
    ASSERT_EQ(out2.Get(x.size()), got_bits) << "output: scales on reading differ from the pass";
    return;
  }
  // The gathering form (final norm of selected rows, no add): rows in reverse order.
  std::vector<int32_t> gather(rows);
  for (int r = 0; r < rows; ++r) gather[r] = rows - 1 - r;
  Dev<int32_t> dg(gather);
  Dev<bf16_t> out2(size_t(rows) * d);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), nullptr, InputScales{}, nullptr, dw.get(), dg.get(), rows, d,
                             1e-6f, out2.get(), 0, {}, 1, vecs),
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

// delta as a split GEMM's `parts` partial sums ([parts][rows][d]): the residual must be exactly
// x + (((p0 + p1) + ...) + bias), the output as rmsnorm's; and the launch refuses parts with the
// gathering form or without a delta.
void AddRmsNormPartsCase(int d, int rows, int parts, int vecs = 0) {
  auto x = Random(size_t(rows) * d), partials = Random(size_t(parts) * rows * d);
  auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
  Dev<float> dx(x), dd(partials), db(bias), dw(w);
  Dev<bf16_t> out(size_t(rows) * d);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr, rows,
                             d, 1e-6f, out.get(), 0, {}, parts, vecs),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> sum(x.size()), ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    float delta = partials[i];
    for (int p = 1; p < parts; ++p) delta += partials[p * x.size() + i];
    sum[i] = x[i] + (delta + bias[i % d]);
  }
  ref::RmsNorm(sum, w, 1e-6f, rows, absl::MakeSpan(ref));
  const auto got_x = dx.Get(x.size());
  const auto got = FromBf16(out.Get(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(got_x[i], sum[i]) << "residual i=" << i;
    ASSERT_NEAR(got[i], ref[i], std::abs(ref[i]) * 0.0040f + 1e-5f * std::sqrt(float(d))) << i;
  }
  Dev<int32_t> gather(std::vector<int32_t>(rows, 0));
  EXPECT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), InputScales{}, db.get(), dw.get(), gather.get(),
                             rows, d, 1e-6f, out.get(), 0, {}, parts),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchAddRmsNorm(dx.get(), nullptr, InputScales{}, db.get(), dw.get(), nullptr, rows, d,
                             1e-6f, out.get(), 0, {}, parts),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr, rows,
                             d, 1e-6f, out.get(), 0, {}, 0),
            cudaErrorInvalidValue);
}

// The output also as FP8 codes and row scales for the next W8A8 GEMM: bit for bit what
// LaunchQuantizeRowsFp8E4M3 makes of the bf16 output, which itself must not change. Widths the
// float4 kernel cannot quantize are refused.
void AddRmsNormQuantizedCase(int d, int rows, int vecs = 0) {
  auto x = Random(size_t(rows) * d), delta = Random(size_t(rows) * d);
  auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
  if (!AddRmsNormQuantizes(d)) {
    Dev<float> dx(x);
    Dev<bf16_t> out(size_t(rows) * d);
    Dev<uint8_t> codes(size_t(rows) * d);
    Dev<float> scales(rows);
    EXPECT_EQ(LaunchAddRmsNorm(dx.get(), nullptr, InputScales{}, nullptr, Dev<float>(w).get(),
                               nullptr, rows, d, 1e-6f, out.get(), 0, {codes.get(), scales.get()}),
              cudaErrorInvalidValue);
    return;
  }
  Dev<float> dx(x), dx2(x), dd(delta), db(bias), dw(w);
  Dev<bf16_t> out(size_t(rows) * d), out2(size_t(rows) * d);
  Dev<uint8_t> codes(size_t(rows) * d), codes2(size_t(rows) * d);
  Dev<float> scales(rows), scales2(rows);
  ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr, rows,
                             d, 1e-6f, out.get(), 0, {codes.get(), scales.get()}, 1, vecs),
            cudaSuccess);
  ASSERT_EQ(LaunchAddRmsNorm(dx2.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr, rows,
                             d, 1e-6f, out2.get(), 0, {}, 1, vecs),
            cudaSuccess);
  EXPECT_EQ(LaunchAddRmsNorm(dx2.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr, rows,
                             d, 1e-6f, out2.get(), 0, {}, 1, 3),
            cudaErrorInvalidValue);
  ASSERT_EQ(LaunchQuantizeRowsFp8E4M3(out2.get(), rows, d, codes2.get(), scales2.get(), 0),
            cudaSuccess);
  ASSERT_EQ(out.Get(size_t(rows) * d), out2.Get(size_t(rows) * d)) << "bf16 output changed";
  ASSERT_EQ(dx.Get(size_t(rows) * d), dx2.Get(size_t(rows) * d)) << "residual changed";
  ASSERT_EQ(scales.Get(rows), scales2.Get(rows)) << "row scales differ from the quantizer's";
  ASSERT_EQ(codes.Get(size_t(rows) * d), codes2.Get(size_t(rows) * d))
      << "codes differ from the quantizer's";
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

// vectors_per_thread 0, the launch's own choice: one float4 a thread while the rows' blocks are
// all resident at once, two beyond. Bit for bit the forced form's output at the wave's rows and
// one more, where the two forms differ (else the comparison could not tell them apart).
void AddRmsNormAutomaticCase(int d) {
  const int wave = AddRmsNormRowsPerWave(d);
  ASSERT_GT(wave, 0) << "d " << d << " takes the float4 kernel";
  for (const int rows : {wave, wave + 1}) {
    const auto x = Random(size_t(rows) * d), delta = Random(size_t(rows) * d);
    const auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
    std::vector<bf16_t> bits[3];
    for (int vecs = 0; vecs < 3; ++vecs) {
      Dev<float> dx(x), dd(delta), db(bias), dw(w);
      Dev<bf16_t> out(size_t(rows) * d);
      ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), InputScales{}, db.get(), dw.get(), nullptr,
                                 rows, d, 1e-6f, out.get(), 0, {}, 1, vecs),
                cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      bits[vecs] = out.Get(size_t(rows) * d);
    }
    ASSERT_NE(bits[1], bits[2]) << rows << " rows: one and two float4s a thread agree bit for bit";
    ASSERT_EQ(bits[0], bits[rows > wave ? 2 : 1]) << rows << " rows, a wave of " << wave;
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
  // Two float4s a thread (vectors_per_thread 2): 2564 has an odd count of vectors (the last
  // thread's second one past the row), 512 rows a prefill pass's; 7 takes the strided kernel.
  for (int d : {4, 7, 2560, 2564, 4096}) {
    for (int rows : {1, 33, 512}) {
      cases.push_back({"rmsnorm.two_vectors", absl::StrCat("d", d, " rows", rows), "ref::RmsNorm",
                       "as rmsnorm", false,
                       [d, rows] { AddRmsNormCase(d, rows, false, true, 2); }});
    }
  }
  cases.push_back({"rmsnorm.two_vectors", "d2560 rows3 scaled", "ref::RmsNorm of the scaled delta",
                   "as rmsnorm; bit-identical to the pass", false,
                   [] { AddRmsNormCase(2560, 3, true, true, 2); }});
  cases.push_back({"rmsnorm.two_vectors", "d2560 rows33 parts3", "ref::RmsNorm of the parts' sum",
                   "residual exact; output as rmsnorm", false,
                   [] { AddRmsNormPartsCase(2560, 33, 3, 2); }});
  cases.push_back({"rmsnorm.two_vectors", "d2560 rows33 quantized",
                   "LaunchQuantizeRowsFp8E4M3 of its own bf16 output", "bit-identical", false,
                   [] { AddRmsNormQuantizedCase(2560, 33, 2); }});
  for (int d : {2560, 4096}) {
    cases.push_back({"rmsnorm.vectors_automatic", absl::StrCat("d", d),
                     "the forced one- or two-vector launch", "bit-identical", false,
                     [d] { AddRmsNormAutomaticCase(d); }});
  }
  // The FP8 GEMM's scales applied on reading (2560: float4 kernel; 4100: strided).
  for (int d : {2560, 4100}) {
    for (bool with_rows : {true, false}) {
      cases.push_back({"rmsnorm.scaled_delta",
                       absl::StrCat("d", d, " rows3", with_rows ? "" : " cols only"),
                       "ref::RmsNorm of the scaled delta; the scaling pass + plain kernel",
                       "as rmsnorm; bit-identical to the pass", false,
                       [d, with_rows] { AddRmsNormCase(d, 3, true, with_rows); }});
    }
  }
  // A split GEMM's parts (2560: float4 kernel; 257: strided).
  for (int d : {2560, 257}) {
    for (int parts : {2, 5}) {
      cases.push_back({"rmsnorm.split_delta", absl::StrCat("d", d, " rows33 parts", parts),
                       "ref::RmsNorm of x + the parts' sum + bias",
                       "residual exact (the parts summed in order); output as rmsnorm", false,
                       [d, parts] { AddRmsNormPartsCase(d, 33, parts); }});
    }
  }
  // 2560 and 4096: quantized by the float4 kernel; 4100 and 2564 are refused.
  for (int d : {16, 2560, 4096, 2564, 4100}) {
    cases.push_back({"rmsnorm.fp8_output", absl::StrCat("d", d, " rows5"),
                     "LaunchQuantizeRowsFp8E4M3 of the bf16 output (itself unchanged)",
                     "bit-identical codes and scales", false,
                     [d] { AddRmsNormQuantizedCase(d, 5); }});
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
