// kernels_bench: micro-benchmark of every CUDA kernel at recurrentgemma-2b shapes, with the bytes
// each must move and the achieved bandwidth (against 4.3 TB/s, PERF.md) or FLOP rate (790 TFLOP/s).
// Median of --reps timed launches (CUDA events) after 5 warm-ups, inputs random (never zeros).
//   kernels_bench [--reps=50] [--filter=SUBSTRING]
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "kernels/attention/attention.cuh"
#include "kernels/geglu/geglu.cuh"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/linear/gemm.h"
#include "kernels/linear/gemm_geglu.cuh"
#include "kernels/linear/gemm_prefetch.cuh"
#include "kernels/linear/gemv.cuh"
#include "kernels/logits/logits.cuh"
#include "kernels/norm/rmsnorm.cuh"
#include "kernels/random_init/random_init.cuh"
#include "kernels/rglru/rglru.cuh"

ABSL_FLAG(int, reps, 50, "timed launches per kernel (median)");
ABSL_FLAG(std::string, filter, "", "only the rows whose name contains this text");
ABSL_FLAG(bool, flush_l2, true,
          "read 256 MB between timed launches, so that inputs come from HBM as in a step");

namespace griffin::kernels {
namespace {

#define CHECK_CUDA(x)                                                                \
  do {                                                                               \
    cudaError_t e = (x);                                                             \
    if (e != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

std::vector<void*> g_allocs;
template <typename T>
T* Buf(int64_t n, float sd = 1.0f, float mean = 0.0f) {
  void* p;
  CHECK_CUDA(cudaMalloc(&p, std::max<int64_t>(n, 1) * sizeof(T)));
  g_allocs.push_back(p);
  static uint64_t seed = 1;
  if constexpr (sizeof(T) == 2)
    CHECK_CUDA(LaunchFillRandomBf16(reinterpret_cast<bf16_t*>(p), n, ++seed, sd, mean, 0));
  else if constexpr (std::is_same_v<T, float>)
    CHECK_CUDA(LaunchFillRandomF32(reinterpret_cast<float*>(p), n, ++seed, sd, mean, 0));
  return static_cast<T*>(p);
}

double TimeMs(const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  // Reading more than the L2 holds between repetitions evicts the kernel's inputs: a decode step
  // streams each weight matrix once, so a 13 MB projection timed back to back from L2 (50 MB)
  // would read faster than it ever does in the step. Read, not written (a memset would leave
  // dirty lines whose write-back the timed kernel pays for): the argmax over 256 MB of floats.
  static float* flush = nullptr;
  static int32_t* flush_out = nullptr;
  static int32_t* flush_scratch = nullptr;
  constexpr int kFlushRows = 256, kFlushCols = 262144;
  if (absl::GetFlag(FLAGS_flush_l2) && flush == nullptr) {
    CHECK_CUDA(cudaMalloc(&flush, size_t{4} * kFlushRows * kFlushCols));
    CHECK_CUDA(cudaMemset(flush, 0, size_t{4} * kFlushRows * kFlushCols));
    CHECK_CUDA(cudaMalloc(&flush_out, 4 * kFlushRows));
    CHECK_CUDA(cudaMalloc(&flush_scratch, size_t{4} * kFlushRows * kArgMaxParts * 3));
  }
  for (int i = 0; i < 5; ++i) fn();
  std::vector<float> t;
  const int reps = std::max(1, absl::GetFlag(FLAGS_reps));
  for (int i = 0; i < reps; ++i) {
    if (absl::GetFlag(FLAGS_flush_l2)) {
      CHECK_CUDA(LaunchArgMax(flush, kFlushRows, kFlushCols, flush_out, flush_scratch, 0));
    }
    CHECK_CUDA(cudaEventRecord(a));
    fn();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK_CUDA(cudaGetLastError());
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Report(const char* name, double ms, double bytes, double flops) {
  const double bw_floor = bytes / 4.3e12 * 1e3, fl_floor = flops / 790e12 * 1e3;
  std::printf("| %s | %.4f ms | %.1f GB/s | %.1f TFLOP/s | %.4f ms | %.2f |\n", name, ms,
              bytes / ms / 1e6, flops / ms / 1e9, std::max(bw_floor, fl_floor),
              ms / std::max(bw_floor, fl_floor));
}

// Times `fn` and reports it, unless --filter leaves it out.
void Bench(const char* name, const std::function<void()>& fn, double bytes, double flops) {
  const std::string filter = absl::GetFlag(FLAGS_filter);
  if (!filter.empty() && std::string(name).find(filter) == std::string::npos) return;
  Report(name, TimeMs(fn), bytes, flops);
}

int Main() {
  const int d = 2560, m = 7680, L = 2560, H = 10, hd = 256, W = 2048, V = 256000;
  char name[160];
  std::printf(
      "| kernel | median | bandwidth | FLOP rate | floor | time / floor |\n| --- | --- | --- | --- "
      "| --- | --- |\n");
  for (int rows : {1, 256, 4096}) {
    float* x = Buf<float>(int64_t(rows) * d);
    float* delta = Buf<float>(int64_t(rows) * d);
    float* bias = Buf<float>(d, 0.1f);
    float* w = Buf<float>(d, 0.1f);
    bf16_t* out = Buf<bf16_t>(int64_t(rows) * d);
    std::snprintf(name, sizeof name, "add+rmsnorm %d x %d", rows, d);
    Bench(
        name,
        [&] {
          CHECK_CUDA(LaunchAddRmsNorm(x, delta, {}, bias, w, nullptr, rows, d, 1e-6f, out, 0));
        },
        rows * double(d) * (4 * 3 + 2), 0);
  }
  for (int n : {1, 256, 4096}) {
    float* gu = Buf<float>(int64_t(n) * 2 * m);
    float* b = Buf<float>(m, 0.1f);
    bf16_t* out = Buf<bf16_t>(int64_t(n) * m);
    std::snprintf(name, sizeof name, "geglu %d x %d", n, m);
    Bench(
        name, [&] { CHECK_CUDA(LaunchGeGlu(gu, {}, b, b, n, m, out, 0)); }, n * double(m) * 10, 0);
  }
  Gemm gemm;
  if (!gemm.Init(64 << 20).empty()) return 1;
  for (int M : {1, 64, 256, 2048}) {
    const int N = 2 * m, K = d;
    bf16_t* a = Buf<bf16_t>(int64_t(M) * K);
    bf16_t* wt = Buf<bf16_t>(int64_t(N) * K, 0.02f);
    float* out = Buf<float>(int64_t(M) * N);
    std::snprintf(name, sizeof name, "cuBLASLt gemm %d x %d x %d (gate|up)", M, N, K);
    Bench(
        name, [&] { (void)gemm.Run(a, wt, out, M, N, K, 0); },
        2.0 * N * K + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
  }
  // The MLP's first half two ways: the fused gate|up GEMM and the GeGLU pass (what the backend
  // runs below gemm_geglu_min_rows), and the up GEMM + the gate GEMM with GeGLU in its epilogue
  // (each compiled tile shape). Bytes: the least either must move (weights, x, the bf16 output).
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  for (int M : {256, 512, 1024, 2048, 4096, 8192}) {
    const int N = 2 * m, K = d;
    bf16_t* a = Buf<bf16_t>(int64_t(M) * K);
    bf16_t* wt = Buf<bf16_t>(int64_t(N) * K, 0.02f);
    float* gu = Buf<float>(int64_t(M) * N);
    float* b = Buf<float>(m, 0.1f);
    bf16_t* out = Buf<bf16_t>(int64_t(M) * m);
    const double bytes = 2.0 * N * K + 2.0 * M * K + 2.0 * M * m, flops = 2.0 * M * N * K;
    std::snprintf(name, sizeof name, "mlp gate|up %d x %d x %d: cuBLASLt gemm + geglu pass", M, N,
                  K);
    Bench(
        name,
        [&] {
          (void)gemm.Run(a, wt, gu, M, N, K, 0);
          CHECK_CUDA(LaunchGeGlu(gu, {}, b, b, M, m, out, 0));
        },
        bytes, flops);
    if (!GemmGeGluSupported(device, M, m, K)) continue;
    for (int config = 0; config < kGemmGeGluConfigs; ++config) {
      std::snprintf(name, sizeof name,
                    "mlp gate|up %d x %d x %d: cuBLASLt up gemm + gate gemm with geglu, config %d",
                    M, N, K, config);
      Bench(
          name,
          [&] {
            (void)gemm.Run(a, wt + int64_t(m) * K, gu, M, m, K, 0);
            CHECK_CUDA(LaunchGemmGeGlu(a, wt, b, gu, b, M, m, K, out, 0,
                                       static_cast<GemmGeGluConfig>(config)));
          },
          bytes, flops);
      std::snprintf(name, sizeof name, "gate gemm with geglu %d x %d x %d, config %d", M, m, K,
                    config);
      Bench(
          name,
          [&] {
            CHECK_CUDA(LaunchGemmGeGlu(a, wt, b, gu, b, M, m, K, out, 0,
                                       static_cast<GemmGeGluConfig>(config)));
          },
          2.0 * m * K + 2.0 * M * K + 6.0 * M * m, 2.0 * M * m * K);
    }
    std::snprintf(name, sizeof name, "cuBLASLt gemm %d x %d x %d (up)", M, m, K);
    Bench(
        name, [&] { (void)gemm.Run(a, wt + int64_t(m) * K, gu, M, m, K, 0); },
        2.0 * m * K + 2.0 * M * K + 4.0 * M * m, 2.0 * M * m * K);
  }
  for (int M : {1, 8}) {
    const int N = 2 * m, K = d;
    bf16_t* a = Buf<bf16_t>(int64_t(M) * K);
    bf16_t* wt = Buf<bf16_t>(int64_t(N) * K, 0.02f);
    float* out = Buf<float>(int64_t(M) * N);
    std::snprintf(name, sizeof name, "gemv %d x %d x %d (gate|up)", M, N, K);
    Bench(
        name, [&] { CHECK_CUDA(LaunchGemv(a, wt, out, M, N, K, 0)); },
        2.0 * N * K + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
  }
  // Each decode projection at batch 1 with every row split (LaunchGemv picks GemvSplit's).
  const std::pair<const char*, std::pair<int, int>> projections[] = {
      {"gate|up", {2 * m, d}},      {"down", {d, m}}, {"x|y", {2 * L, d}},
      {"q|k|v", {(H + 2) * hd, d}}, {"out", {d, L}},  {"head", {V, d}}};
  for (const auto& [what, shape] : projections) {
    const auto [N, K] = shape;
    bf16_t* a = Buf<bf16_t>(K);
    bf16_t* wt = Buf<bf16_t>(int64_t(N) * K, 0.02f);
    float* out = Buf<float>(N);
    for (int split : {1, 2, 4, 8}) {
      std::snprintf(name, sizeof name, "gemv 1 x %d x %d (%s) split %d%s", N, K, what, split,
                    split == GemvSplit(N, K) ? " (chosen)" : "");
      Bench(
          name, [&] { CHECK_CUDA(LaunchGemvWithSplit(a, wt, out, 1, N, K, split, 0)); },
          2.0 * N * K + 2.0 * K + 4.0 * N, 2.0 * N * K);
    }
  }
  // The same projections with FP8 E4M3 weights and a scale per row (W8A16, issue 14): half the
  // weight bytes. Every weight is the same finite E4M3 value: the time is the bytes streamed.
  for (const auto& [what, shape] : projections) {
    const auto [N, K] = shape;
    for (int M : {1, 8}) {
      bf16_t* a = Buf<bf16_t>(int64_t(M) * K);
      uint8_t* wt = Buf<uint8_t>(int64_t(N) * K);
      CHECK_CUDA(cudaMemset(wt, 0x3c, size_t(N) * K));  // 1.5
      float* scales = Buf<float>(N, 0.01f);
      float* out = Buf<float>(int64_t(M) * N);
      std::snprintf(name, sizeof name, "gemv fp8 %d x %d x %d (%s), split %d", M, N, K, what,
                    GemvFp8Split(N, K));
      Bench(
          name, [&] { CHECK_CUDA(LaunchGemvFp8(a, wt, scales, out, M, N, K, 0)); },
          double(N) * K + 4.0 * N + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
    }
  }
  // Which cuBLASLt algorithm a decode GEMM should run: Gemm::Tune times its heuristic's first 8
  // back to back, the weights warm in L2 after the first launch, while a step reads them from
  // HBM. Here the heuristic's candidates (it returns 8), each timed warm and cold: the heuristic's
  // first choice, the warm winner and the cold winner, all timed cold; then split-K variants of
  // them, timed cold.
  for (int M : {64, 256, 1024}) {
    for (const auto& [what, shape] : projections) {
      const auto [N, K] = shape;
      if (N > 65536) continue;
      std::snprintf(name, sizeof name, "cuBLASLt candidates %d x %d x %d (%s)", M, N, K, what);
      const std::string filter = absl::GetFlag(FLAGS_filter);
      if (!filter.empty() && std::string(name).find(filter) == std::string::npos) continue;
      bf16_t* a = Buf<bf16_t>(int64_t(M) * K, 0.5f);
      bf16_t* wb = Buf<bf16_t>(int64_t(N) * K, 0.02f);
      float* out = Buf<float>(int64_t(M) * N);
      const size_t ws_bytes = 32 << 20;
      void* ws = Buf<char>(ws_bytes);
      cublasLtHandle_t lt;
      cublasLtCreate(&lt);
      cublasLtMatmulDesc_t desc;
      cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
      cublasLtMatrixLayout_t la, lb, ld;
      cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, N, K);
      cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, M, K);
      cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, N, M, N);
      cublasLtMatmulPreference_t pref;
      cublasLtMatmulPreferenceCreate(&pref);
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &ws_bytes, sizeof ws_bytes);
      cublasLtMatmulHeuristicResult_t results[32];
      int found = 0;
      cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 32, results, &found);
      const float one = 1.0f, zero = 0.0f;
      auto run = [&](const cublasLtMatmulAlgo_t& algo) {
        return cublasLtMatmul(lt, desc, &one, wb, la, a, lb, &zero, out, ld, out, ld, &algo, ws,
                              ws_bytes, 0) == CUBLAS_STATUS_SUCCESS;
      };
      int first = -1, warm_best = -1, cold_best = -1;
      double first_ms = 0, warm_ms = 1e30, cold_ms = 1e30;
      for (int i = 0; i < found; ++i) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS || !run(results[i].algo)) continue;
        CHECK_CUDA(cudaDeviceSynchronize());
        // Warm: three launches back to back after one, as Gemm::Tune times them.
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        run(results[i].algo);
        cudaEventRecord(e0);
        for (int r = 0; r < 3; ++r) run(results[i].algo);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float warm = 0;
        cudaEventElapsedTime(&warm, e0, e1);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        const double cold = TimeMs([&] { run(results[i].algo); });
        if (first < 0) {
          first = i;
          first_ms = cold;
        }
        if (warm / 3 < warm_ms) {
          warm_ms = warm / 3;
          warm_best = i;
        }
        if (cold < cold_ms) {
          cold_ms = cold;
          cold_best = i;
        }
      }
      if (first < 0) {
        std::printf("| %s | no algorithm |\n", name);
        continue;
      }
      // Split-K variants of every candidate that supports it: at M = 256 the narrow projections
      // (N = 2560) make 20-40 output tiles for 132 SMs, so most SMs stream no weights. Measured
      // slower than the unsplit winner in every shape at M = 64-1024 (session 22), so Gemm's
      // tuning does not offer them.
      double split_ms = 1e30;
      char split_label[96] = "none";
      int variants = 0;
      for (int i = 0; i < found; ++i) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
        int32_t splitk_support = 0;
        uint32_t schemes = 0;
        size_t written = 0;
        cublasLtMatmulAlgoCapGetAttribute(&results[i].algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT,
                                          &splitk_support, sizeof splitk_support, &written);
        cublasLtMatmulAlgoCapGetAttribute(&results[i].algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK,
                                          &schemes, sizeof schemes, &written);
        if (splitk_support == 0) continue;
        for (const int32_t split : {2, 3, 4, 6, 8}) {
          if (K / split < 256) continue;
          for (const uint32_t scheme : {uint32_t{CUBLASLT_REDUCTION_SCHEME_INPLACE},
                                        uint32_t{CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}}) {
            if ((schemes & scheme) == 0) continue;
            cublasLtMatmulAlgo_t algo = results[i].algo;
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split,
                                                 sizeof split);
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                 &scheme, sizeof scheme);
            cublasLtMatmulHeuristicResult_t check;
            if (cublasLtMatmulAlgoCheck(lt, desc, la, lb, ld, ld, &algo, &check) !=
                    CUBLAS_STATUS_SUCCESS ||
                check.workspaceSize > ws_bytes || !run(algo)) {
              continue;
            }
            CHECK_CUDA(cudaDeviceSynchronize());
            ++variants;
            const double cold = TimeMs([&] { run(algo); });
            if (cold < split_ms) {
              split_ms = cold;
              std::snprintf(split_label, sizeof split_label, "#%d split %d %s", i, split,
                            scheme == CUBLASLT_REDUCTION_SCHEME_INPLACE ? "in place" : "float32");
            }
          }
        }
      }
      const double bytes = 2.0 * N * K + 2.0 * M * K + 4.0 * M * N, flops = 2.0 * M * N * K;
      char row[240];
      std::snprintf(row, sizeof row, "%s: heuristic's first (of %d)", name, found);
      Report(row, first_ms, bytes, flops);
      std::snprintf(row, sizeof row, "%s: warm winner #%d, timed cold", name, warm_best);
      Report(row, TimeMs([&] { run(results[warm_best].algo); }), bytes, flops);
      std::snprintf(row, sizeof row, "%s: cold winner #%d", name, cold_best);
      Report(row, cold_ms, bytes, flops);
      std::snprintf(row, sizeof row, "%s: split-K cold winner %s (of %d variants)", name,
                    split_label, variants);
      if (variants > 0) Report(row, split_ms, bytes, flops);
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(ld);
      cublasLtMatmulDescDestroy(desc);
      cublasLtDestroy(lt);
    }
  }
  // Split-K as strided-batched parts (Gemm::RunSplitK), each split's algorithm tuned cold as the
  // backend tunes it, for the projections the next norm adds to the residual stream (down, the
  // output projections); then the norm reading the parts, and which split ChooseSplitK keeps.
  // The projections that feed other kernels (x|y, q|k|v, gate|up) are there to say what a split
  // would give them; their readers do not sum parts.
  for (int M : {64, 128, 256, 512, 1024}) {
    for (const auto& [what, N, K] : {std::tuple<const char*, int, int>{"down", d, m},
                                     std::tuple<const char*, int, int>{"out", d, L},
                                     std::tuple<const char*, int, int>{"x|y", 2 * L, d},
                                     std::tuple<const char*, int, int>{"q|k|v", (H + 2) * hd, d},
                                     std::tuple<const char*, int, int>{"gate|up", 2 * m, d}}) {
      std::snprintf(name, sizeof name, "split-K %d x %d x %d (%s)", M, N, K, what);
      const std::string filter = absl::GetFlag(FLAGS_filter);
      if (!filter.empty() && std::string(name).find(filter) == std::string::npos) continue;
      bf16_t* a = Buf<bf16_t>(int64_t(M) * K, 0.5f);
      bf16_t* wb = Buf<bf16_t>(int64_t(N) * K, 0.02f);
      float* parts_out = Buf<float>(8 * int64_t(M) * N);
      Gemm split;
      if (!split.Init(64 << 20).empty()) return 1;
      split.set_autotune(true);
      split.set_tune_cold(true);
      for (int parts = 1; parts <= 8; ++parts) {
        if (!Gemm::SplitKAllowed(K, parts)) continue;
        if (!split.RunSplitK(a, wb, parts_out, M, N, K, parts, 0).empty()) continue;  // tunes
        std::snprintf(name, sizeof name, "split-K %d x %d x %d (%s), %d parts", M, N, K, what,
                      parts);
        Report(name, TimeMs([&] { (void)split.RunSplitK(a, wb, parts_out, M, N, K, parts, 0); }),
               2.0 * N * K + 2.0 * M * K + 4.0 * M * N * parts, 2.0 * M * N * K);
        if (N != d) continue;  // only the residual stream's projections have the norm as reader
        float* x = Buf<float>(int64_t(M) * N);
        float* bias = Buf<float>(N, 0.1f);
        bf16_t* normed = Buf<bf16_t>(int64_t(M) * N);
        std::snprintf(name, sizeof name, "  add+rmsnorm %d x %d reading %d parts", M, N, parts);
        Report(name, TimeMs([&] {
                 CHECK_CUDA(LaunchAddRmsNorm(x, parts_out, {}, bias, bias, nullptr, M, N, 1e-6f,
                                             normed, 0, {}, parts));
               }),
               M * double(N) * (4 * 2 + 4 * parts + 2), 0);
      }
      Gemm chooser;
      if (!chooser.Init(64 << 20).empty()) return 1;
      chooser.set_autotune(true);
      chooser.set_tune_cold(true);
      std::printf("| split-K %d x %d x %d (%s): ChooseSplitK keeps %d of up to 8 |\n", M, N, K,
                  what, chooser.ChooseSplitK(a, wb, parts_out, M, N, K, 8, 0));
    }
  }
  // CUTLASS's GEMM with weight prefetch (gemm_prefetch.cuh) beside cuBLASLt (tuned cold, as the
  // backend tunes) at decode batches, each timed back to back: the prefetch GEMM's launches start
  // early and overlap the one before, cuBLASLt's wait for it (a decode step's neighbours differ;
  // engine_bench --prefetch_gemm_max_rows measures that).
  int bench_device = 0;
  CHECK_CUDA(cudaGetDevice(&bench_device));
  for (int M : {1, 8, 16, 32, 64, 128, 256}) {
    for (const auto& [what, N, K] : {std::tuple<const char*, int, int>{"down", d, m},
                                     std::tuple<const char*, int, int>{"out", d, L},
                                     std::tuple<const char*, int, int>{"x|y", 2 * L, d},
                                     std::tuple<const char*, int, int>{"q|k|v", (H + 2) * hd, d},
                                     std::tuple<const char*, int, int>{"gate|up", 2 * m, d}}) {
      std::snprintf(name, sizeof name, "prefetch GEMM %d x %d x %d (%s)", M, N, K, what);
      const std::string filter = absl::GetFlag(FLAGS_filter);
      if (!filter.empty() && std::string(name).find(filter) == std::string::npos) continue;
      if (!PrefetchGemmSupported(bench_device, M, N, K)) continue;
      bf16_t* a = Buf<bf16_t>(int64_t(M) * K, 0.5f);
      bf16_t* wb = Buf<bf16_t>(int64_t(N) * K, 0.02f);
      float* out = Buf<float>(int64_t(M) * N);
      const double bytes = 2.0 * N * K + 2.0 * M * K + 4.0 * M * N, flops = 2.0 * M * N * K;
      for (const int rows : {16, 32, 64, 128}) {
        // Blocks of 16 rows for 256 are no contender, nor blocks of 128 for 8.
        if (rows < M / 4 || rows > std::max(16, 2 * M)) continue;
        const PrefetchGemmParams params{0.5f, rows, 1};
        std::snprintf(name, sizeof name, "prefetch GEMM %d x %d x %d (%s), %d rows a block", M, N,
                      K, what, rows);
        Report(name,
               TimeMs([&] { CHECK_CUDA(LaunchPrefetchGemm(a, wb, out, M, N, K, params, 0)); }),
               bytes, flops);
      }
      if (N == d) {  // the residual stream's projections: split over K, for the norm to sum
        float* parts_out = Buf<float>(4 * int64_t(M) * N);
        for (const int parts : {2, 3, 4}) {
          if (!Gemm::SplitKAllowed(K, parts)) continue;
          const PrefetchGemmParams params{0.5f, 0, parts};
          std::snprintf(name, sizeof name, "prefetch GEMM %d x %d x %d (%s), %d K parts", M, N, K,
                        what, parts);
          Report(name, TimeMs([&] {
                   CHECK_CUDA(LaunchPrefetchGemm(a, wb, parts_out, M, N, K, params, 0));
                 }),
                 bytes + 4.0 * M * N * (parts - 1), flops);
        }
      }
      Gemm tuned;
      if (!tuned.Init(64 << 20).empty()) return 1;
      tuned.set_autotune(true);
      tuned.set_tune_cold(true);
      if (!tuned.Run(a, wb, out, M, N, K, 0).empty()) continue;  // tunes
      std::snprintf(name, sizeof name, "prefetch GEMM %d x %d x %d (%s): cuBLASLt", M, N, K, what);
      Report(name, TimeMs([&] { (void)tuned.Run(a, wb, out, M, N, K, 0); }), bytes, flops);
    }
  }
  // W8A8 on the FP8 tensor cores (cuBLASLt, per-row scales on both operands) beside bf16
  // cuBLASLt, for the batches above the GEMV's; the activations' quantization is its own row.
  for (const auto& [what, shape] : projections) {
    const auto [N, K] = shape;
    if (N > 65536) continue;
    for (int M : {8, 64, 256, 2048}) {
      bf16_t* a = Buf<bf16_t>(int64_t(M) * K, 0.5f);
      uint8_t* a8 = Buf<uint8_t>(int64_t(M) * K);
      float* a_scales = Buf<float>(M, 0.01f);
      bf16_t* wb = Buf<bf16_t>(int64_t(N) * K, 0.02f);
      uint8_t* wt = Buf<uint8_t>(int64_t(N) * K);
      CHECK_CUDA(cudaMemset(wt, 0x3c, size_t(N) * K));  // 1.5
      float* scales = Buf<float>(N, 0.01f);
      float* out = Buf<float>(int64_t(M) * N);
      std::snprintf(name, sizeof name, "cuBLASLt gemm bf16 %d x %d x %d (%s)", M, N, K, what);
      Bench(
          name, [&] { (void)gemm.Run(a, wb, out, M, N, K, 0); },
          2.0 * N * K + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
      std::snprintf(name, sizeof name, "cuBLASLt gemm fp8 %d x %d x %d (%s)", M, N, K, what);
      std::string err;
      Bench(
          name, [&] { err = gemm.RunFp8(a8, a_scales, wt, scales, out, M, N, K, 0); },
          double(N) * K + double(M) * K + 4.0 * (M + N) + 4.0 * M * N, 2.0 * M * N * K);
      if (!err.empty()) std::printf("  (%s)\n", err.c_str());
      std::snprintf(name, sizeof name, "quantize activations fp8 %d x %d", M, K);
      Bench(
          name, [&] { CHECK_CUDA(LaunchQuantizeRowsFp8E4M3(a, M, K, a8, a_scales, 0)); },
          3.0 * M * K + 4.0 * M, 0);
    }
  }
  {
    const int M = 1, N = 256000, K = d;
    bf16_t* a = Buf<bf16_t>(int64_t(M) * K);
    bf16_t* wt = Buf<bf16_t>(int64_t(N) * K, 0.02f);
    float* out = Buf<float>(int64_t(M) * N);
    Bench(
        "gemv 1 x 256000 x 2560 (tied head)",
        [&] { CHECK_CUDA(LaunchGemv(a, wt, out, M, N, K, 0)); }, 2.0 * N * K + 4.0 * N,
        2.0 * N * K);
    Bench(
        "cuBLASLt gemm 1 x 256000 x 2560 (tied head)",
        [&] { (void)gemm.Run(a, wt, out, M, N, K, 0); }, 2.0 * N * K + 4.0 * N, 2.0 * N * K);
  }
  // RG-LRU decode, one token per slot: the fused kernel (batch 1 and 256) and the tensor-core
  // path's conv and finish kernel (batch 64-1024; the finish four channels a thread and one).
  for (int n : {1, 64, 256, 1024}) {
    const int K = 4;
    const int64_t stride = int64_t(L) * 4 + int64_t(K - 1) * L * 2;
    RgLruParams p;
    p.xy = Buf<float>(int64_t(n) * 2 * L);
    p.bx = Buf<float>(L, 0.1f);
    p.by = Buf<float>(L, 0.1f);
    p.conv_w = Buf<float>(int64_t(L) * K, 0.5f);
    p.conv_b = Buf<float>(L, 0.1f);
    p.gx_w = Buf<bf16_t>(int64_t(H) * 256 * 256, 0.06f);
    p.ga_w = Buf<bf16_t>(int64_t(H) * 256 * 256, 0.06f);
    p.gx_b = Buf<float>(L, 0.1f);
    p.ga_b = Buf<float>(L, 0.1f);
    p.a_param = Buf<float>(L, 0.5f, -4.0f);
    std::vector<int32_t> te(n);
    std::vector<StepEntryRecord> en(n);
    for (int i = 0; i < n; ++i) {
      te[i] = i;
      en[i] = {i, 1, i, 100};
    }
    int32_t* dte = Buf<int32_t>(n);
    auto* den = reinterpret_cast<StepEntryRecord*>(Buf<int32_t>(4 * n));
    CHECK_CUDA(cudaMemcpy(dte, te.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(den, en.data(), 16 * n, cudaMemcpyHostToDevice));
    char* pool = reinterpret_cast<char*>(Buf<float>(stride * n / 4 + 1));
    CHECK_CUDA(cudaMemset(pool, 0, stride * n));
    p.layout = {dte, den};
    p.state = {pool, stride};
    p.lru_offset = 0;
    p.conv_offset = int64_t(L) * 4;
    p.n = n;
    p.num_entries = n;
    p.L = L;
    p.H = H;
    p.K = K;
    p.out = Buf<bf16_t>(int64_t(n) * L);
    p.c = Buf<float>(int64_t(n) * L);
    p.c_half = reinterpret_cast<uint16_t*>(Buf<bf16_t>(int64_t(n) * L));
    p.gates = Buf<float>(int64_t(n) * 2 * L);
    if (n == 1 || n == 256) {
      std::snprintf(name, sizeof name, "rg-lru decode (fused) + tail shift, %d tokens", n);
      Bench(
          name, [&] { CHECK_CUDA(LaunchRgLruDecode(p, 0)); },
          2.0 * H * 256 * 256 * 2 + n * double(L) * (8 + 2 + 8 + 12), n * double(L) * 4 * 256);
    }
    if (n == 1) continue;
    for (const bool specialized : {true, false}) {
      p.specialized_decode_conv = specialized;
      std::snprintf(name, sizeof name, "rg-lru decode conv, %d tokens, %s", n,
                    specialized ? "width-4 kernel" : "general kernel");
      Bench(
          name, [&] { CHECK_CUDA(LaunchRgLruConv(p, 0)); },
          n * double(L) * (4 + 2 * (K - 1) + 4 + 2), 0);
    }
    p.specialized_decode_conv = true;
    for (const bool vector : {true, false}) {
      p.vector_decode = vector;
      const char* how = vector ? "four channels a thread" : "one channel a thread";
      std::snprintf(name, sizeof name, "rg-lru decode finish, %d tokens, %s", n, how);
      Bench(
          name, [&] { CHECK_CUDA(LaunchRgLruDecodeFinish(p, 0)); },
          n * double(L) * (8 + 4 + 8 + 8 + 2 + 2 * (K - 2) * 2 + 2), 0);
    }
  }
  for (int seqs : {1, 16}) {
    const int T = 2048, n = seqs * T, K = 4;
    const int64_t stride = int64_t(L) * 4 + int64_t(K - 1) * L * 2;
    RgLruParams p;
    p.xy = Buf<float>(int64_t(n) * 2 * L);
    p.bx = Buf<float>(L, 0.1f);
    p.by = Buf<float>(L, 0.1f);
    p.conv_w = Buf<float>(int64_t(L) * K, 0.5f);
    p.conv_b = Buf<float>(L, 0.1f);
    p.gx_w = Buf<bf16_t>(int64_t(H) * 256 * 256, 0.06f);
    p.ga_w = Buf<bf16_t>(int64_t(H) * 256 * 256, 0.06f);
    p.gx_b = Buf<float>(L, 0.1f);
    p.ga_b = Buf<float>(L, 0.1f);
    p.a_param = Buf<float>(L, 0.5f, -4.0f);
    std::vector<int32_t> te(n);
    std::vector<StepEntryRecord> en(seqs);
    for (int i = 0; i < n; ++i) te[i] = i / T;
    for (int s = 0; s < seqs; ++s) en[s] = {s * T, T, s, 0};
    int32_t* dte = Buf<int32_t>(n);
    auto* den = reinterpret_cast<StepEntryRecord*>(Buf<int32_t>(4 * seqs));
    CHECK_CUDA(cudaMemcpy(dte, te.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(den, en.data(), 16 * seqs, cudaMemcpyHostToDevice));
    char* pool = reinterpret_cast<char*>(Buf<float>(stride * seqs / 4 + 1));
    CHECK_CUDA(cudaMemset(pool, 0, stride * seqs));
    p.layout = {dte, den};
    p.state = {pool, stride};
    p.lru_offset = 0;
    p.conv_offset = int64_t(L) * 4;
    p.n = n;
    p.num_entries = seqs;
    p.L = L;
    p.H = H;
    p.K = K;
    p.out = Buf<bf16_t>(int64_t(n) * L);
    p.c = Buf<float>(int64_t(n) * L);
    p.c_half = reinterpret_cast<uint16_t*>(Buf<bf16_t>(int64_t(n) * L));
    float* gates = Buf<float>(int64_t(n) * 2 * L);
    p.gates = gates;
    uint16_t* packed = reinterpret_cast<uint16_t*>(Buf<bf16_t>(int64_t(2) * H * 256 * 256));
    CHECK_CUDA(LaunchPackGateWeights(p.gx_w, p.ga_w, H, 256, packed, 0));
    std::snprintf(name, sizeof name, "rg-lru prefill conv, %d x %d", seqs, T);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRgLruConv(p, 0)); }, n * double(L) * (4 + 4 + 2), 0);
    std::snprintf(name, sizeof name, "rg-lru prefill gates (batched cuBLASLt), %d x %d", seqs, T);
    Bench(
        name,
        [&] {
          (void)gemm.RunBatched(p.c_half, L, 256, packed, 2 * 256 * 256, gates, 2 * L, 512, n, 512,
                                256, H, true, 0);
        },
        n * double(L) * (2 + 8), n * double(L) * 4 * 256);
    std::snprintf(name, sizeof name, "rg-lru prefill gate math, %d x %d", seqs, T);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRgLruGateMath(p, 0)); }, n * double(L) * (8 + 4 + 8), 0);
    p.vector_gate_math = false;
    std::snprintf(name, sizeof name, "rg-lru prefill gate math, %d x %d, one channel a thread",
                  seqs, T);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRgLruGateMath(p, 0)); }, n * double(L) * (8 + 4 + 8), 0);
    p.vector_gate_math = true;
    std::snprintf(name, sizeof name, "rg-lru prefill scan, %d x %d", seqs, T);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRgLruScan(p, 0)); }, n * double(L) * (8 + 4 + 4 + 2), 0);
  }
  // Attention: decode at position 4096 (full window), prefill 1 x 2048 from position 0.
  CHECK_CUDA(PrepareAttentionKernels());
  for (int mode = 0; mode < 5; ++mode) {
    const int n = mode == 0 ? 1 : mode == 1 ? 64 : mode == 2 ? 256 : mode == 3 ? 1024 : 2048;
    const bool prefill = mode == 4;
    const int seqs = prefill ? 1 : n;
    const int64_t ring = int64_t(W) * hd * 2, stride = 2 * ring;
    AttentionParams p;
    p.qkv = Buf<float>(int64_t(n) * (H + 2) * hd);
    p.q = Buf<bf16_t>(int64_t(n) * H * hd);
    p.k = Buf<bf16_t>(int64_t(n) * hd);
    p.v = Buf<bf16_t>(int64_t(n) * hd);
    std::vector<int32_t> te(n);
    std::vector<StepEntryRecord> en(seqs);
    std::vector<QueryTile> tiles;
    const int tile = prefill ? AttentionPrefillTileTokens(H, 1, hd) : 1;
    for (int i = 0; i < n; ++i) te[i] = prefill ? 0 : i;
    for (int s = 0; s < seqs; ++s)
      en[s] = {prefill ? 0 : s, prefill ? n : 1, s, prefill ? 0 : 4096};
    for (int t = 0; t < n; t += tile) tiles.push_back({t, std::min(tile, n - t)});
    int32_t* dte = Buf<int32_t>(n);
    auto* den = reinterpret_cast<StepEntryRecord*>(Buf<int32_t>(4 * seqs));
    auto* dti = reinterpret_cast<QueryTile*>(Buf<int32_t>(2 * tiles.size()));
    CHECK_CUDA(cudaMemcpy(dte, te.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(den, en.data(), 16 * seqs, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dti, tiles.data(), tiles.size() * 8, cudaMemcpyHostToDevice));
    p.layout = {dte, den};
    p.tiles = dti;
    p.num_tiles = int(tiles.size());
    p.state = {reinterpret_cast<char*>(Buf<bf16_t>(stride * seqs / 2)), stride};
    p.k_offset = 0;
    p.v_offset = ring;
    p.n = n;
    p.H = H;
    p.KV = 1;
    p.hd = hd;
    p.W = W;
    p.rotary = hd / 2;
    p.scale = 1.0f / 16;
    const int splits = prefill ? 1 : std::max(1, std::min({64, (264 + n - 1) / n, (W + 32) / 32}));
    p.splits = n >= 264 ? 1 : splits;
    p.part_o = Buf<float>(int64_t(n) * H * 64 * hd);
    p.part_ml = Buf<float>(int64_t(n) * H * 64 * 2);
    p.out = Buf<bf16_t>(int64_t(n) * H * hd);
    CHECK_CUDA(LaunchRope(p, 0));
    const double keys = prefill ? 0.5 * (n + 1) : W + 1;
    const double bytes =
        prefill ? 3.0 * n * hd * 2 * 2 + n * double(H) * hd * 4 : n * keys * hd * 2 * 2;
    const double flops = 4.0 * n * H * hd * keys;
    std::snprintf(name, sizeof name, "attention %s, %d tokens, %.0f keys each, %d splits",
                  prefill ? "prefill" : "decode", n, keys, p.splits);
    Bench(
        name, [&] { CHECK_CUDA(LaunchAttention(p, tile, 0)); }, bytes, flops);
    if (prefill && tile > 1) {  // the tensor-core kernel's smaller block (half the tile)
      const int half = tile / 2;
      std::vector<QueryTile> half_tiles;
      for (int t = 0; t < n; t += half) half_tiles.push_back({t, std::min(half, n - t)});
      auto* dhalf = reinterpret_cast<QueryTile*>(Buf<int32_t>(2 * half_tiles.size()));
      CHECK_CUDA(
          cudaMemcpy(dhalf, half_tiles.data(), half_tiles.size() * 8, cudaMemcpyHostToDevice));
      AttentionParams ph = p;
      ph.tiles = dhalf;
      ph.num_tiles = int(half_tiles.size());
      std::snprintf(name, sizeof name, "  same, tiles of %d tokens (not %d)", half, tile);
      Bench(
          name, [&] { CHECK_CUDA(LaunchAttention(ph, half, 0)); }, bytes, flops);
    }
    if (!prefill) {  // how many key splits a decode batch wants (the backend's Splits heuristic)
      const int chosen = p.splits;
      for (int alt : {1, 2, 4, 8, 16, 32}) {
        if (alt == chosen || alt > (W + 32) / 32) continue;
        p.splits = alt;
        std::snprintf(name, sizeof name, "  same, %d splits", alt);
        Bench(
            name, [&] { CHECK_CUDA(LaunchAttention(p, tile, 0)); }, bytes, flops);
      }
      p.splits = chosen;
    }
    std::snprintf(name, sizeof name, "rope, %d tokens", n);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRope(p, 0)); }, n * double(H + 2) * hd * 6, 0);
    p.vector_rope = false;
    std::snprintf(name, sizeof name, "rope, %d tokens, one element a thread", n);
    Bench(
        name, [&] { CHECK_CUDA(LaunchRope(p, 0)); }, n * double(H + 2) * hd * 6, 0);
  }
  for (int rows : {1, 64, 256, 1024}) {
    float* logits = Buf<float>(int64_t(rows) * V, 3.0f);
    int32_t* tok = Buf<int32_t>(rows);
    int32_t* scratch = Buf<int32_t>(int64_t(rows) * kArgMaxParts * 3);
    int32_t* write_flag = Buf<int32_t>(1);
    for (const int32_t write : {1, 0}) {
      CHECK_CUDA(cudaMemcpy(write_flag, &write, 4, cudaMemcpyHostToDevice));
      std::snprintf(name, sizeof name, "soft-cap + argmax %d x %d, %s", rows, V,
                    write ? "capped rows written back" : "tokens only");
      Bench(
          name,
          [&] {
            CHECK_CUDA(LaunchSoftCapArgMax(logits, rows, V, 30.0f, tok, scratch, 0, write_flag));
          },
          rows * double(V) * (write ? 8 : 4), 0);
    }
    std::snprintf(name, sizeof name, "soft-cap %d x %d", rows, V);
    Bench(
        name, [&] { CHECK_CUDA(LaunchSoftCap(logits, int64_t(rows) * V, 30.0f, 0)); },
        rows * double(V) * 8, 0);
    std::snprintf(name, sizeof name, "argmax (greedy) %d x %d", rows, V);
    Bench(
        name, [&] { CHECK_CUDA(LaunchArgMax(logits, rows, V, tok, scratch, 0)); },
        rows * double(V) * 4, 0);
    std::vector<SampleRowParams> sp(rows,
                                    SampleRowParams{0.8f, 50, 0.9f, 0.05f, 1.1f, 1, 0, 3, 0, 0, 0});
    SampleRowParams* dsp =
        reinterpret_cast<SampleRowParams*>(Buf<char>(sizeof(SampleRowParams) * rows));
    CHECK_CUDA(cudaMemcpy(dsp, sp.data(), sizeof(SampleRowParams) * rows, cudaMemcpyHostToDevice));
    std::snprintf(name, sizeof name, "sample (T 0.8, top-k 50, top-p 0.9, min-p 0.05) %d x %d",
                  rows, V);
    Bench(
        name, [&] { CHECK_CUDA(LaunchSample(logits, rows, V, dsp, tok, nullptr, tok, 0)); },
        rows * double(V) * 4, 0);
  }
  for (void* p : g_allocs) cudaFree(p);
  return 0;
}

}  // namespace
}  // namespace griffin::kernels

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "every CUDA kernel alone at recurrentgemma-2b shapes, beside its floor");
  absl::ParseCommandLine(argc, argv);
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: kernels_bench skipped\n");
    return 0;
  }
  return griffin::kernels::Main();
}
