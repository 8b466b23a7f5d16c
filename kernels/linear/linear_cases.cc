// Cases for kernels/linear (cuBLASLt GEMM, decode GEMV) in the op registry. The reference is the
// float64 sum of the same bf16 products (ref::Linear is its float32 form).
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "kernels/linear/gemm.h"
#include "kernels/linear/gemv.cuh"
#include "kernels/linear/linear_reference.h"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

constexpr const char* kTolerance =
    "float32 accumulation: K * 2^-24 * sum|a w| / 8 + 2^-20 sum|a w| (naive-sum bound)";

void CheckProduct(const std::vector<float>& a, const std::vector<float>& w,
                  const std::vector<float>& got, int M, int N, int K) {
  for (int i = 0; i < M; ++i) {
    for (int o = 0; o < N; ++o) {
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        ref += double(a[size_t(i) * K + k]) * w[size_t(o) * K + k];
        mag += std::abs(double(a[size_t(i) * K + k]) * w[size_t(o) * K + k]);
      }
      ASSERT_NEAR(got[size_t(i) * N + o], ref, 1e-7 * K * mag / 8 + 1e-6 * mag + 1e-6)
          << M << "x" << N << "x" << K << " at " << i << "," << o;
    }
  }
}

void GemmCase(int M, int N, int K) {
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
  Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
  Dev<float> out(size_t(M) * N);
  ASSERT_EQ(gemm.Run(da.get(), dw.get(), out.get(), M, N, K, 0), "");
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
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeLinearCases);

}  // namespace
}  // namespace griffin::kernels::testing
