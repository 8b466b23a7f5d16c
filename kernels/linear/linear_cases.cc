// Cases for kernels/linear (cuBLASLt GEMM, decode GEMV) in the op registry. The reference is the
// float64 sum of the same bf16 products (ref::Linear is its float32 form).
#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "kernels/geglu/geglu_reference.h"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/linear/gemm.h"
#include "kernels/linear/gemm_geglu.cuh"
#include "kernels/linear/gemm_prefetch.cuh"
#include "kernels/linear/gemv.cuh"
#include "kernels/linear/linear_reference.h"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

constexpr const char* kTolerance =
    "float32 accumulation: K * 2^-24 * sum|a w| / 8 + 2^-20 sum|a w| (naive-sum bound)";

// `got` against the float64 product within the naive-sum bound plus `relative` x sum|a w| (the
// inputs' own rounding: 1e-6 for bf16 inputs given exactly, more where the kernel quantizes
// them) plus `output_relative` x |product| (the output's own rounding, where it is not float32).
// Returns the worst |error| / sum|a w| seen.
double CheckProduct(const std::vector<float>& a, const std::vector<float>& w,
                    const std::vector<float>& got, int M, int N, int K, double relative = 1e-6,
                    double output_relative = 0) {
  double worst = 0;
  for (int i = 0; i < M; ++i) {
    for (int o = 0; o < N; ++o) {
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        ref += double(a[size_t(i) * K + k]) * w[size_t(o) * K + k];
        mag += std::abs(double(a[size_t(i) * K + k]) * w[size_t(o) * K + k]);
      }
      worst = std::max(worst, std::abs(got[size_t(i) * N + o] - ref) / (mag + 1e-30));
      EXPECT_NEAR(got[size_t(i) * N + o], ref,
                  1e-7 * K * mag / 8 + relative * mag + output_relative * std::abs(ref) + 1e-6)
          << M << "x" << N << "x" << K << " at " << i << "," << o;
      if (::testing::Test::HasFailure()) return worst;
    }
  }
  return worst;
}

// bf16_out: Gemm::RunBf16Out, whose output is rounded once more (bf16: 2^-9 relative, with
// margin).
void GemmCase(int M, int N, int K, bool bf16_out = false) {
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  if (bf16_out) {
    Dev<bf16_t> out(size_t(M) * N);
    ASSERT_EQ(gemm.RunBf16Out(da.get(), dw.get(), out.get(), M, N, K, 0), "");
    CheckProduct(a, w, FromBf16(out.Get(size_t(M) * N)), M, N, K, 1e-6, 0.0040);
    return;
  }
  Dev<float> out(size_t(M) * N);
  ASSERT_EQ(gemm.Run(da.get(), dw.get(), out.get(), M, N, K, 0), "");
  CheckProduct(a, w, out.Get(size_t(M) * N), M, N, K);
}

// A tuned product (Gemm::set_autotune): whichever candidate the timing keeps, timed back to back
// or after an L2 flush (set_tune_cold), computes the CPU's product.
void GemmTunedCase(int M, int N, int K, bool cold) {
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  gemm.set_autotune(true);
  gemm.set_tune_cold(cold);
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  Dev<float> out(size_t(M) * N);
  ASSERT_EQ(gemm.Run(da.get(), dw.get(), out.get(), M, N, K, 0), "");
  gemm.set_autotune(false);
  CheckProduct(a, w, out.Get(size_t(M) * N), M, N, K);
}

// split 0: the split LaunchGemv picks.
void GemvCase(int M, int N, int K, int split = 0) {
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  Dev<float> out(size_t(M) * N);
  ASSERT_EQ(split == 0 ? LaunchGemv(da.get(), dw.get(), out.get(), M, N, K, 0)
                       : LaunchGemvWithSplit(da.get(), dw.get(), out.get(), M, N, K, split, 0),
            cudaSuccess);
  CheckProduct(a, w, out.Get(size_t(M) * N), M, N, K);
}

// W8A16: weights quantized per row as the backend will (ref::QuantizeRowsFp8E4M3), their E4M3
// bytes and scales on the device; the reference is the float64 sum over the dequantized weights
// (each E4M3 value times its row's scale), the kernel's float32 sum of exact products scaled once.
void GemvFp8Case(int M, int N, int K, int split = 0) {
  auto a = RoundBf16(Random(size_t(M) * K));
  auto w = Random(size_t(N) * K, 0.05f);
  if (N > 1) std::fill(w.begin(), w.begin() + K, 0.0f);  // an all-zero row: scale 1
  std::vector<float> scales(N);
  ref::QuantizeRowsFp8E4M3(absl::MakeSpan(w), N, K, absl::MakeSpan(scales));
  std::vector<uint8_t> bytes(size_t(N) * K);
  for (int o = 0; o < N; ++o) {
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(o) * K + k;
      bytes[i] = FloatToFp8E4M3(w[i] / scales[o]);
      ASSERT_EQ(Fp8E4M3ToFloat(bytes[i]) * scales[o], w[i]) << "row " << o << " k " << k;
    }
  }
  Dev<bf16_t> da(ToBf16(a));
  Dev<uint8_t> dw(bytes);
  Dev<float> ds(scales), out(size_t(M) * N);
  ASSERT_EQ(split == 0 ? LaunchGemvFp8(da.get(), dw.get(), ds.get(), out.get(), M, N, K, 0)
                       : LaunchGemvFp8WithSplit(da.get(), dw.get(), ds.get(), out.get(), M, N, K,
                                                split, 0),
            cudaSuccess);
  CheckProduct(a, w, out.Get(size_t(M) * N), M, N, K);
}

// The load-time quantization against ref::QuantizeRowsFp8E4M3, bit for bit (codes and scales), on
// bf16 rows with an all-zero row, a row whose largest value is a bf16 subnormal-scale value, and
// values that land on E4M3 ties; then the expansion the GEMM path multiplies with.
void QuantizeFp8Case(int rows, int cols) {
  auto w = RoundBf16(Random(size_t(rows) * cols, 0.05f));
  if (rows > 1) std::fill(w.begin(), w.begin() + cols, 0.0f);
  if (rows > 2) {
    for (int k = 0; k < cols; ++k) w[size_t(2) * cols + k] = RoundBf16({1e-30f * (k % 7 - 3)})[0];
  }
  if (rows > 3) {  // exact E4M3 midpoints once scaled: 448 * (odd / 32) at the row's largest
    for (int k = 0; k < cols; ++k)
      w[size_t(3) * cols + k] = (k == 0 ? 448.0f : (2 * (k % 16) + 1) / 32.0f);
  }
  std::vector<float> want = w, scales(rows);
  ref::QuantizeRowsFp8E4M3(absl::MakeSpan(want), rows, cols, absl::MakeSpan(scales));
  Dev<bf16_t> dw(ToBf16(w));
  Dev<uint8_t> codes(size_t(rows) * cols);
  Dev<float> dscales(rows);
  ASSERT_EQ(LaunchQuantizeRowsFp8E4M3(dw.get(), rows, cols, codes.get(), dscales.get(), 0),
            cudaSuccess);
  const std::vector<uint8_t> got = codes.Get(size_t(rows) * cols);
  const std::vector<float> got_scales = dscales.Get(rows);
  for (int o = 0; o < rows; ++o) {
    ASSERT_EQ(got_scales[o], scales[o]) << "row " << o;
    for (int k = 0; k < cols; ++k) {
      const size_t i = size_t(o) * cols + k;
      ASSERT_EQ(int(got[i]), int(FloatToFp8E4M3(w[i] / scales[o]))) << "row " << o << " k " << k;
    }
  }
  Dev<bf16_t> expanded(size_t(rows) * cols);
  ASSERT_EQ(LaunchExpandFp8E4M3(codes.get(), dscales.get(), rows, cols, expanded.get(), 0),
            cudaSuccess);
  const std::vector<bf16_t> back = expanded.Get(size_t(rows) * cols);
  for (size_t i = 0; i < back.size(); ++i) {
    ASSERT_EQ(back[i], HostToBf16(want[i])) << "element " << i;
  }
  // Unscaled: the codes' values exactly; then the column scaling of a product's output.
  ASSERT_EQ(LaunchExpandFp8E4M3(codes.get(), nullptr, rows, cols, expanded.get(), 0), cudaSuccess);
  const std::vector<bf16_t> exact = expanded.Get(size_t(rows) * cols);
  for (size_t i = 0; i < exact.size(); ++i) {
    ASSERT_EQ(HostFromBf16(exact[i]), Fp8E4M3ToFloat(got[i])) << "element " << i;
  }
  const int M = 3;
  std::vector<float> product(size_t(M) * rows);
  for (size_t i = 0; i < product.size(); ++i) product[i] = float(i % 13) - 6.0f;
  Dev<float> dproduct(product);
  ASSERT_EQ(LaunchScaleRowsAndColumns(dproduct.get(), nullptr, dscales.get(), M, rows, 0),
            cudaSuccess);
  const std::vector<float> scaled = dproduct.Get(product.size());
  for (int m = 0; m < M; ++m) {
    for (int o = 0; o < rows; ++o) {
      const size_t i = size_t(m) * rows + o;
      ASSERT_EQ(scaled[i], product[i] * scales[o]) << m << "," << o;
    }
  }
}

// The operands of a W8A8 product (activations [M, K], weights [N, K]), both quantized per row on
// the device as the backend does (weights at load, activations per pass: the same kernel), and
// their host copies replaced by the dequantized rows (ref::QuantizeRowsFp8E4M3) that the float64
// reference multiplies.
struct Fp8Operands {
  Fp8Operands(int M, int N, int K)
      : a(RoundBf16(Random(size_t(M) * K))),
        w(RoundBf16(Random(size_t(N) * K, 0.05f))),
        a8(size_t(M) * K),
        w8(size_t(N) * K),
        a_scales(M),
        w_scales(N) {}
  std::vector<float> a, w;
  Dev<uint8_t> a8, w8;
  Dev<float> a_scales, w_scales;
};

void QuantizeFp8Operands(int M, int N, int K, Fp8Operands& ops) {
  Dev<bf16_t> da(ToBf16(ops.a)), dw(ToBf16(ops.w));
  ASSERT_EQ(LaunchQuantizeRowsFp8E4M3(da.get(), M, K, ops.a8.get(), ops.a_scales.get(), 0),
            cudaSuccess);
  ASSERT_EQ(LaunchQuantizeRowsFp8E4M3(dw.get(), N, K, ops.w8.get(), ops.w_scales.get(), 0),
            cudaSuccess);
  // Complete before any GEMM launches: the prefetch GEMM loads its weights before it waits on the
  // grid ahead of it (the engine's weights never change after loading). Without this wait its
  // case failed once under memcheck (session 29, call 2: one sum 1% off).
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> as(M), ws(N);
  ref::QuantizeRowsFp8E4M3(absl::MakeSpan(ops.a), M, K, absl::MakeSpan(as));
  ref::QuantizeRowsFp8E4M3(absl::MakeSpan(ops.w), N, K, absl::MakeSpan(ws));
}

// W8A8 through cuBLASLt (Gemm::RunFp8), the reference the float64 sum over the dequantized rows.
// The tensor cores' FP8 products are exact; the tolerance allows float32 accumulation in any
// order plus the limited-precision partial sums of Hopper's FP8 MMA that cuBLASLt promotes to
// float32.
void GemmFp8Case(int M, int N, int K) {
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  Fp8Operands ops(M, N, K);
  ASSERT_NO_FATAL_FAILURE(QuantizeFp8Operands(M, N, K, ops));
  Dev<float> out(size_t(M) * N);
  ASSERT_EQ(gemm.RunFp8(ops.a8.get(), ops.a_scales.get(), ops.w8.get(), ops.w_scales.get(),
                        out.get(), M, N, K, 0),
            "");
  const double worst = CheckProduct(ops.a, ops.w, out.Get(size_t(M) * N), M, N, K, 5e-4);
  std::printf("gemm_fp8 %dx%dx%d: worst |error| / sum|a w| %.3g\n", M, N, K, worst);
}

// The gate GEMM with GeGLU in its epilogue against the float64 gate sums put through
// ref::GeluTanh, times the float32 up input plus its bias. The gate's float32 accumulation error
// (CheckProduct's bound) passes through gelu (slope below 1.13) and the product with |up|; then
// the bf16 rounding of the output (2^-8 relative, as the GeGLU pass).
// up_bf16: the up projection handed over in bf16 (the reference then reads the same rounded
// values).
void GemmGeGluCase(int n, int m, int k, GemmGeGluConfig config, bool up_bf16) {
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!GemmGeGluSupported(device, n, m, k)) {
    GTEST_SKIP() << "needs an sm_90a build with CUTLASS on a compute capability 9.0 GPU";
  }
  EXPECT_EQ(LaunchGemmGeGlu(nullptr, nullptr, nullptr, static_cast<const float*>(nullptr), nullptr,
                            n, 12, k, nullptr, 0, config),
            cudaErrorNotSupported)
      << "m = 12: rows of 24 bytes, which the TMA loads cannot take";
  auto x = RoundBf16(Random(size_t(n) * k)), w = RoundBf16(Random(size_t(m) * k, 0.05f));
  auto up = Random(size_t(n) * m, 2.0f), bg = Random(m, 0.1f), bu = Random(m, 0.1f);
  if (up_bf16) up = RoundBf16(up);
  Dev<bf16_t> dx(ToBf16(x)), dw(ToBf16(w)), dup_bf16(ToBf16(up));
  Dev<float> dup(up), dbg(bg), dbu(bu);
  Dev<bf16_t> out(size_t(n) * m);
  ASSERT_EQ(up_bf16 ? LaunchGemmGeGlu(dx.get(), dw.get(), dbg.get(), dup_bf16.get(), dbu.get(), n,
                                      m, k, out.get(), 0, config)
                    : LaunchGemmGeGlu(dx.get(), dw.get(), dbg.get(), dup.get(), dbu.get(), n, m, k,
                                      out.get(), 0, config),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got = FromBf16(out.Get(size_t(n) * m));
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < m; ++i) {
      double gate = 0, mag = 0;
      for (int j = 0; j < k; ++j) {
        gate += double(x[size_t(t) * k + j]) * w[size_t(i) * k + j];
        mag += std::abs(double(x[size_t(t) * k + j]) * w[size_t(i) * k + j]);
      }
      const double u = double(up[size_t(t) * m + i]) + bu[i];
      const double ref = double(ref::GeluTanh(float(gate + bg[i]))) * u;
      const double gate_error = 1e-7 * k * mag / 8 + 1e-6 * mag + 1e-6;
      ASSERT_NEAR(got[size_t(t) * m + i], ref,
                  1.13 * gate_error * std::abs(u) + std::abs(ref) * 0.0040 + 1e-6)
          << n << "x" << m << "x" << k << " at " << t << "," << i;
    }
  }
}

// Split-K (Gemm::RunSplitK): the parts summed in order compute the product; with `max_parts`
// the split comes from ChooseSplitK's timing (autotune on) and must be one RunSplitK takes. A
// split that does not cut K into 8-column slices is refused.
void GemmSplitKCase(int M, int N, int K, int parts, int max_parts = 0) {
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  Dev<float> out(size_t(std::max(parts, max_parts)) * M * N);
  if (max_parts > 0) {
    EXPECT_EQ(gemm.ChooseSplitK(da.get(), dw.get(), out.get(), M, N, K, max_parts, 0), 1)
        << "a shape never tuned splits";
    Gemm tuned;
    ASSERT_EQ(tuned.Init(32 << 20), "");
    tuned.set_autotune(true);
    tuned.set_tune_cold(true);
    parts = tuned.ChooseSplitK(da.get(), dw.get(), out.get(), M, N, K, max_parts, 0);
    tuned.set_autotune(false);
    ASSERT_GE(parts, 1);
    ASSERT_LE(parts, max_parts);
    ASSERT_TRUE(Gemm::SplitKAllowed(K, parts)) << parts;
    EXPECT_EQ(tuned.ChooseSplitK(da.get(), dw.get(), out.get(), M, N, K, max_parts, 0), parts)
        << "the choice is kept";
    ASSERT_EQ(tuned.RunSplitK(da.get(), dw.get(), out.get(), M, N, K, parts, 0), "");
  } else {
    ASSERT_EQ(gemm.RunSplitK(da.get(), dw.get(), out.get(), M, N, K, parts, 0), "");
  }
  const auto partials = out.Get(size_t(parts) * M * N);
  std::vector<float> sum(partials.begin(), partials.begin() + size_t(M) * N);
  for (int p = 1; p < parts; ++p) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += partials[size_t(p) * M * N + i];
  }
  CheckProduct(a, w, sum, M, N, K);
  EXPECT_FALSE(Gemm::SplitKAllowed(K, 0));
  EXPECT_FALSE(Gemm::SplitKAllowed(K, 7 * K));
  EXPECT_NE(gemm.RunSplitK(da.get(), dw.get(), out.get(), M, N, K, 7 * K, 0), "");
}

// The decode GEMM with weight prefetch (gemm_prefetch.cuh): the product Gemm::Run computes, with
// the launch's early-start settings; one guard row past m stays NaN (the TMA store clips there).
// With k_parts, the parts summed in order (as the norm adds them) against the whole product.
void GemmPrefetchCase(int M, int N, int K, PrefetchGemmParams params) {
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!PrefetchGemmSupported(device, M, N, K)) {
    GTEST_SKIP() << "this build or device has no prefetch GEMM (sm_90 with CUTLASS's example 63)";
  }
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  const size_t rows = size_t(M) * params.k_parts;
  Dev<float> out(std::vector<float>((rows + 1) * N, std::nanf("")));
  ASSERT_EQ(LaunchPrefetchGemm(da.get(), dw.get(), out.get(), M, N, K, params, 0), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = out.Get((rows + 1) * N);
  for (int o = 0; o < N; ++o) {
    ASSERT_TRUE(std::isnan(got[rows * N + o])) << "written past row " << rows << " at " << o;
  }
  std::vector<float> sum(got.begin(), got.begin() + size_t(M) * N);
  for (int p = 1; p < params.k_parts; ++p) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += got[size_t(p) * M * N + i];
  }
  CheckProduct(a, w, sum, M, N, K);
}

// The prefetch GEMM on E4M3 codes (LaunchPrefetchGemmFp8): the unscaled sums, scaled here by the
// rows' scales, against the float64 product of the dequantized operands (as GemmFp8Case).
void GemmPrefetchFp8Case(int M, int N, int K, int rows) {
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!PrefetchGemmFp8Supported(device, M, N, K)) {
    GTEST_SKIP() << "this build or device has no prefetch GEMM (sm_90 with CUTLASS's example 63)";
  }
  Fp8Operands ops(M, N, K);
  ASSERT_NO_FATAL_FAILURE(QuantizeFp8Operands(M, N, K, ops));
  Dev<float> out(size_t(M) * N);
  // No split over K on E4M3 operands: refused before anything runs.
  ASSERT_EQ(
      LaunchPrefetchGemmFp8(ops.a8.get(), ops.w8.get(), out.get(), M, N, K, {0.5f, rows, 2}, 0),
      cudaErrorInvalidValue);
  ASSERT_EQ(LaunchPrefetchGemmFp8(ops.a8.get(), ops.w8.get(), out.get(), M, N, K, {0.5f, rows}, 0),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> device_as = ops.a_scales.Get(M), device_ws = ops.w_scales.Get(N);
  std::vector<float> got = out.Get(size_t(M) * N);
  for (int i = 0; i < M; ++i) {
    for (int o = 0; o < N; ++o) got[size_t(i) * N + o] *= device_as[i] * device_ws[o];
  }
  const double worst = CheckProduct(ops.a, ops.w, got, M, N, K, 5e-4);
  std::printf("gemm_prefetch_fp8 %dx%dx%d: worst |error| / sum|a w| %.3g\n", M, N, K, worst);
}

std::vector<OpCase> MakeLinearCases() {
  std::vector<OpCase> cases;
  for (int M : {1, 7, 63, 65, 300}) {
    for (int N : {1, 48, 255, 257}) {
      for (int K : {16, 63, 2560}) {
        cases.push_back({"gemm", absl::StrCat(M, "x", N, "x", K), "float64 sum of bf16 products",
                         kTolerance, M * N * K > 20'000'000, [=] { GemmCase(M, N, K); }});
      }
    }
  }
  for (const auto& [M, N, K] :
       std::vector<std::tuple<int, int, int>>{{1, 8, 16}, {65, 264, 2560}, {300, 520, 72}}) {
    cases.push_back({"gemm_bf16_out", absl::StrCat(M, "x", N, "x", K),
                     "float64 sum of bf16 products", "float32 bound + bf16 rounding 2^-8 relative",
                     false, [=] { GemmCase(M, N, K, /*bf16_out=*/true); }});
  }
  // Heavy: tuning runs every cuBLASLt candidate, and under racecheck some report hazards inside
  // the library (22,016 in session 22, none in our kernels); sanitizer runs keep the heuristic's
  // first algorithm, as the backend does with autotuning off.
  for (bool cold : {false, true}) {
    cases.push_back({"gemm", absl::StrCat("96x1024x4096 tuned", cold ? " cold" : " warm"),
                     "float64 sum of bf16 products", kTolerance, true,
                     [=] { GemmTunedCase(96, 1024, 4096, cold); }});
  }
  // The decode projections into the residual stream (2560 = 320 x 8, 7680 = 960 x 8), and
  // demo-sized slices of 72 and 96 columns.
  for (const auto& [M, N, K, parts] : std::vector<std::tuple<int, int, int, int>>{
           {64, 257, 2560, 5}, {256, 264, 7680, 3}, {33, 288, 288, 4}, {3, 288, 864, 9}}) {
    cases.push_back({"gemm_split_k", absl::StrCat(M, "x", N, "x", K, " parts", parts),
                     "float64 sum of bf16 products", kTolerance, false,
                     [=] { GemmSplitKCase(M, N, K, parts); }});
  }
  // Heavy as the tuned cases above.
  cases.push_back({"gemm_split_k", "256x2560x2560 tuned up to 8 parts",
                   "float64 sum of bf16 products", kTolerance, true,
                   [] { GemmSplitKCase(256, 2560, 2560, 1, 8); }});
  for (int M = 1; M <= kGemvMaxM; ++M) {
    for (int N : {1, 7, 300}) {
      for (int K : {8, 248, 264, 2560, 7680}) {
        cases.push_back({"gemv", absl::StrCat(M, "x", N, "x", K), "float64 sum of bf16 products",
                         kTolerance, K >= 2560 && N >= 300, [=] { GemvCase(M, N, K); }});
      }
    }
  }
  // Every row split at the decode projections' shapes (and the split LaunchGemv picks).
  for (const auto& [N, K] : std::vector<std::pair<int, int>>{
           {2560, 2560}, {2560, 7680}, {3072, 2560}, {5120, 2560}, {15360, 2560}, {300, 264}}) {
    for (int split : {1, 2, 4, 8}) {
      cases.push_back({"gemv", absl::StrCat("1x", N, "x", K, " split", split),
                       "float64 sum of bf16 products", kTolerance, int64_t{N} * K > 8'000'000,
                       [=] { GemvCase(1, N, K, split); }});
    }
  }
  for (int split : {1, 2, 4, 8}) {
    cases.push_back({"gemv", absl::StrCat("3x300x2560 split", split),
                     "float64 sum of bf16 products", kTolerance, false,
                     [=] { GemvCase(3, 300, 2560, split); }});
  }
  constexpr const char* kFp8Reference = "float64 sum over the dequantized FP8 rows (E4M3 x scale)";
  for (int M = 1; M <= kGemvMaxM; ++M) {
    for (int N : {1, 7, 300}) {
      for (int K : {16, 272, 2560, 7680}) {
        cases.push_back({"gemv_fp8", absl::StrCat(M, "x", N, "x", K), kFp8Reference, kTolerance,
                         K >= 2560 && N >= 300, [=] { GemvFp8Case(M, N, K); }});
      }
    }
  }
  for (const auto& [N, K] :
       std::vector<std::pair<int, int>>{{2560, 2560}, {2560, 7680}, {15360, 2560}, {300, 272}}) {
    for (int split : {1, 2, 4, 8}) {
      cases.push_back({"gemv_fp8", absl::StrCat("1x", N, "x", K, " split", split), kFp8Reference,
                       kTolerance, int64_t{N} * K > 8'000'000,
                       [=] { GemvFp8Case(1, N, K, split); }});
    }
  }
  for (const auto& [rows, cols] : std::vector<std::pair<int, int>>{
           {1, 16}, {4, 16}, {7, 272}, {300, 2560}, {2560, 7680}, {15360, 2560}}) {
    cases.push_back({"fp8_quantize", absl::StrCat(rows, "x", cols),
                     "ref::QuantizeRowsFp8E4M3 (codes and scales) and bf16(E4M3 x scale)",
                     "bit-exact", int64_t{rows} * cols > 8'000'000,
                     [=] { QuantizeFp8Case(rows, cols); }});
  }
  for (int M : {1, 9, 64, 300}) {
    for (int N : {16, 48, 304}) {
      for (int K : {16, 272, 2560}) {
        cases.push_back({"gemm_fp8", absl::StrCat(M, "x", N, "x", K),
                         "float64 sum over the dequantized FP8 rows of both operands",
                         "float32 accumulation bound + 5e-4 sum|a w| (FP8 MMA partial sums)",
                         M * N * K > 20'000'000, [=] { GemmFp8Case(M, N, K); }});
      }
    }
  }
  // Tails in every dimension (n and m off the 128 x 128 tiles, k off the 64-wide
  // k-tile), one row, and the model's MLP at a chunk of 130 tokens; each compiled tile shape.
  for (const auto& [n, m, k] : std::vector<std::tuple<int, int, int>>{
           {1, 8, 64}, {5, 264, 40}, {130, 520, 2560}, {300, 264, 72}, {130, 7680, 2560}}) {
    for (int config = 0; config < kGemmGeGluConfigs; ++config) {
      for (const bool up_bf16 : {false, true}) {
        cases.push_back({up_bf16 ? "gemm_geglu_up_bf16" : "gemm_geglu",
                         absl::StrCat(n, "x", m, "x", k, " config", config),
                         "ref::GeluTanh(float64 gate sum + b_gate) * (up + b_up)",
                         "gate sum's float32 bound x 1.13 |up| + bf16 rounding 2^-8 relative",
                         int64_t{n} * m * k > 20'000'000, [=] {
                           GemmGeGluCase(n, m, k, static_cast<GemmGeGluConfig>(config), up_bf16);
                         }});
      }
    }
  }
  // Each block size with rows past its tile, n and k off the 64-wide tiles, and 2B's decode
  // projections (x|y at 64 rows, down at 256); early start as the backend launches it, and none.
  for (const auto& [M, N, K, rows] :
       std::vector<std::tuple<int, int, int, int>>{{1, 64, 64, 0},
                                                   {3, 260, 72, 16},
                                                   {20, 260, 72, 16},
                                                   {33, 300, 136, 32},
                                                   {65, 300, 2560, 64},
                                                   {130, 264, 7680, 128},
                                                   {64, 5120, 2560, 0},
                                                   {256, 2560, 7680, 0}}) {
    for (const float overlap : {0.5f, -1.0f}) {
      const PrefetchGemmParams params{overlap, rows, 1};
      cases.push_back({"gemm_prefetch",
                       absl::StrCat(M, "x", N, "x", K, " rows ", rows, " overlap ", overlap),
                       "float64 sum of bf16 products", kTolerance, int64_t{M} * N * K > 200'000'000,
                       [=] { GemmPrefetchCase(M, N, K, params); }});
    }
  }
  // Split over K: 2 and 3 parts of 2B's output projection at 1 and 64 rows, down's at 8.
  for (const auto& [M, N, K, parts] : std::vector<std::tuple<int, int, int, int>>{
           {1, 2560, 2560, 2}, {64, 2560, 2560, 2}, {8, 2560, 7680, 3}, {3, 264, 144, 2}}) {
    const PrefetchGemmParams params{0.5f, 0, parts};
    cases.push_back({"gemm_prefetch_split_k", absl::StrCat(M, "x", N, "x", K, " parts ", parts),
                     "float64 sum of bf16 products (parts summed in order)", kTolerance, false,
                     [=] { GemmPrefetchCase(M, N, K, params); }});
  }
  for (const auto& [M, N, K, rows] : std::vector<std::tuple<int, int, int, int>>{
           {2, 2560, 2560, 0}, {20, 264, 144, 32}, {64, 2560, 7680, 0}, {3, 300, 16, 16}}) {
    cases.push_back({"gemm_prefetch_fp8", absl::StrCat(M, "x", N, "x", K, " rows ", rows),
                     kFp8Reference, kTolerance, false,
                     [=] { GemmPrefetchFp8Case(M, N, K, rows); }});
  }
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeLinearCases);

}  // namespace
}  // namespace griffin::kernels::testing
