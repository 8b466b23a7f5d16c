// See gemm.h.
#include "kernels/linear/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/linear/fp8_weights.cuh"
#include "kernels/logits/logits.cuh"

namespace griffin::kernels {

struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo;
  std::vector<cublasLtMatmulAlgo_t> candidates;
  bool tuned = false;
  float best_ms = -1.0f;  // Tune's time of `algo` (a launch), once tuned
  // D = A . W^T with `algo` (Run, RunBatched, RunFp8 and Tune all launch through here).
  cublasStatus_t Matmul(void* handle, const cublasLtMatmulAlgo_t& with, const void* a_data,
                        const void* w_data, void* d_data, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(static_cast<cublasLtHandle_t>(handle), desc, &alpha, w_data, a, a_data, b,
                          &beta, d_data, d, d_data, d, &with, workspace, workspace_bytes, stream);
  }
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};

namespace {
std::string Fail(const char* what, int code) {
  return std::string(what) + " failed with status " + std::to_string(code);
}
constexpr int kFlushColumns = 262144;  // a row of the flush buffer: 1 MiB of floats
}  // namespace

Gemm::Gemm() = default;

void Gemm::set_autotune(bool on) {
  autotune_ = on;
  if (!on) FreeFlush();
}

void Gemm::FreeFlush() {
  if (flush_ != nullptr) cudaFree(flush_);
  if (flush_scratch_ != nullptr) cudaFree(flush_scratch_);
  flush_ = nullptr;
  flush_scratch_ = nullptr;
}

bool Gemm::FlushL2(cudaStream_t stream) {
  if (flush_ == nullptr) {
    int device = 0, l2 = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device) != cudaSuccess) {
      return false;
    }
    flush_rows_ = std::max(1, 2 * l2 / (4 * kFlushColumns));
    if (cudaMalloc(&flush_, size_t{4} * flush_rows_ * kFlushColumns) != cudaSuccess) {
      flush_ = nullptr;
      return false;
    }
    if (cudaMalloc(&flush_scratch_, size_t{4} * flush_rows_ * (kArgMaxParts * 3 + 1)) !=
        cudaSuccess) {
      flush_scratch_ = nullptr;
      FreeFlush();
      return false;
    }
    if (cudaMemsetAsync(flush_, 0, size_t{4} * flush_rows_ * kFlushColumns, stream) !=
        cudaSuccess) {
      FreeFlush();
      return false;
    }
  }
  // A read, not a memset: written lines would be written back during the timed launch. The
  // argmax's tokens land past its scratch.
  return LaunchArgMax(flush_, flush_rows_, kFlushColumns,
                      flush_scratch_ + static_cast<size_t>(flush_rows_) * kArgMaxParts * 3,
                      flush_scratch_, stream) == cudaSuccess;
}

Gemm::~Gemm() {
  set_autotune(false);
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

std::string Gemm::Init(size_t workspace_bytes) {
  cublasLtHandle_t h;
  cublasStatus_t st = cublasLtCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtCreate", st);
  handle_ = h;
  workspace_bytes_ = workspace_bytes;
  if (workspace_bytes > 0) {
    cudaError_t err = cudaMalloc(&workspace_, workspace_bytes);
    if (err != cudaSuccess) return Fail("cudaMalloc(gemm workspace)", err);
  }
  return "";
}

std::string Gemm::GetPlan(int M, int N, int K, int64_t lda, int64_t ldw, int64_t ldd, int batch,
                          int64_t stride_a, int64_t stride_w, int64_t stride_d, Inputs inputs,
                          Plan** out, bool bf16_out) {
  auto key = std::make_tuple(M, N, K, lda, ldw, ldd, stride_a, stride_w, stride_d, batch, inputs,
                             bf16_out);
  const cudaDataType_t in_type = inputs == Inputs::kFp16  ? CUDA_R_16F
                                 : inputs == Inputs::kFp8 ? CUDA_R_8F_E4M3
                                                          : CUDA_R_16BF;
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    *out = it->second.get();
    return "";
  }
  auto plan = std::make_unique<Plan>();
  cublasStatus_t st = cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmulDescCreate", st);
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                 sizeof(trans_a));
  cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                 sizeof(trans_b));
  // Column-major views: W is [K, N] (ld K) used transposed; A is [K, M] (ld K); D is [N, M] (ld N).
  st = cublasLtMatrixLayoutCreate(&plan->a, in_type, K, N, ldw);
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatrixLayoutCreate(&plan->b, in_type, K, M, lda);
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatrixLayoutCreate(&plan->d, bf16_out ? CUDA_R_16BF : CUDA_R_32F, N, M, ldd);
  }
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatrixLayoutCreate", st);
  if (batch > 1) {
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {plan->a, stride_w}, {plan->b, stride_a}, {plan->d, stride_d}};
    for (const auto& [layout, stride] : layouts) {
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                       sizeof(batch));
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                       sizeof(stride));
    }
  }
  cublasLtMatmulPreference_t pref;
  st = cublasLtMatmulPreferenceCreate(&pref);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmulPreferenceCreate", st);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes_, sizeof(workspace_bytes_));
  cublasLtMatmulHeuristicResult_t results[8];
  int found = 0;
  st = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), plan->desc, plan->a,
                                      plan->b, plan->d, plan->d, pref, autotune_ ? 8 : 1, results,
                                      &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmulAlgoGetHeuristic", st);
  if (found == 0) {
    return inputs == Inputs::kFp8 ? "cuBLASLt found no FP8 algorithm for a GEMM shape"
                                  : "cuBLASLt found no algorithm for a GEMM shape";
  }
  plan->algo = results[0].algo;
  for (int i = 0; i < found; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS) plan->candidates.push_back(results[i].algo);
  }
  plan->tuned = !autotune_ || plan->candidates.size() <= 1;
  *out = plan.get();
  plans_.emplace(key, std::move(plan));
  return "";
}

std::string Gemm::Run(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                      cudaStream_t stream) {
  return RunBf16Inputs(a, w, d, M, N, K, /*bf16_out=*/false, stream);
}

std::string Gemm::RunBf16Out(const bf16_t* a, const bf16_t* w, bf16_t* d, int M, int N, int K,
                             cudaStream_t stream) {
  return RunBf16Inputs(a, w, d, M, N, K, /*bf16_out=*/true, stream);
}

std::string Gemm::RunBf16Inputs(const bf16_t* a, const bf16_t* w, void* d, int M, int N, int K,
                                bool bf16_out, cudaStream_t stream) {
  if (M <= 0) return "";
  Plan* plan = nullptr;
  std::string err = GetPlan(M, N, K, Inputs::kBf16, &plan, bf16_out);
  if (!err.empty()) return err;
  if (!plan->tuned) Tune(plan, a, w, d, stream);
  const cublasStatus_t st =
      plan->Matmul(handle_, plan->algo, a, w, d, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return Fail(bf16_out ? "cublasLtMatmul(bf16 out)" : "cublasLtMatmul", st);
  }
  return "";
}

std::string Gemm::RunBatched(const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* w,
                             int64_t stride_w, float* d, int64_t ldd, int64_t stride_d, int M,
                             int N, int K, int batch, bool fp16, cudaStream_t stream) {
  if (M <= 0) return "";
  Plan* plan = nullptr;
  std::string err = GetPlan(M, N, K, lda, K, ldd, batch, stride_a, stride_w, stride_d,
                            fp16 ? Inputs::kFp16 : Inputs::kBf16, &plan);
  if (!err.empty()) return err;
  const cublasStatus_t st =
      plan->Matmul(handle_, plan->algo, a, w, d, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmul(batched)", st);
  return "";
}

bool Gemm::SplitKAllowed(int K, int parts) {
  return parts >= 1 && K % parts == 0 && (K / parts) % 8 == 0;
}

Gemm::Plan* Gemm::SplitKPlan(int M, int N, int K, int parts, std::string* err) {
  Plan* plan = nullptr;
  const int slice = K / parts;
  *err = parts == 1 ? GetPlan(M, N, K, Inputs::kBf16, &plan)
                    : GetPlan(M, N, slice, K, K, N, parts, slice, slice, int64_t{M} * N,
                              Inputs::kBf16, &plan);
  return err->empty() ? plan : nullptr;
}

std::string Gemm::RunSplitK(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                            int parts, cudaStream_t stream) {
  if (M <= 0) return "";
  if (!SplitKAllowed(K, parts)) return "GEMM split-K: K must split into slices of 8k columns";
  std::string err;
  Plan* plan = SplitKPlan(M, N, K, parts, &err);
  if (plan == nullptr) return err;
  if (!plan->tuned) Tune(plan, a, w, d, stream);
  const cublasStatus_t st =
      plan->Matmul(handle_, plan->algo, a, w, d, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmul(split-K)", st);
  return "";
}

int Gemm::ChooseSplitK(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                       int max_parts, cudaStream_t stream) {
  const auto key = std::make_tuple(M, N, K, max_parts);
  auto it = split_k_choice_.find(key);
  if (it != split_k_choice_.end()) return it->second;
  if (!autotune_ || M <= 0) return 1;
  // Each part beyond the first costs its reader M x N floats more, charged at HBM speed (4.3 TB/s,
  // shared/PERF.md), and a dependent load round: the residual add + norm measured +0.3 us a part
  // at 64 rows and +0.5-0.6 at 256 (kernels_bench, session 23), where the GEMM's own time is flat
  // from 2 to 8 parts within noise; without the round, the tuning took 5-8 parts at 64 rows and
  // the norms cost more than the split saved.
  const double ms_per_part = 0.3e-3 + 4.0 * M * N / 4.3e9;
  int best_parts = 1;
  double best = 1e30;
  for (int parts = 1; parts <= max_parts; ++parts) {
    if (!SplitKAllowed(K, parts)) continue;
    std::string err;
    Plan* plan = SplitKPlan(M, N, K, parts, &err);
    if (plan == nullptr) continue;
    if (plan->best_ms < 0.0f) Tune(plan, a, w, d, stream);
    if (plan->best_ms < 0.0f) continue;  // no candidate ran
    const double cost = plan->best_ms + ms_per_part * (parts - 1);
    if (cost < best) {
      best = cost;
      best_parts = parts;
    }
  }
  split_k_choice_.emplace(key, best_parts);
  return best_parts;
}

std::string Gemm::RunFp8Unscaled(const uint8_t* a, const uint8_t* w, float* d, int M, int N, int K,
                                 cudaStream_t stream) {
  if (M <= 0) return "";
  if (K % 16 != 0) return "GEMM FP8: K must be a multiple of 16";
  Plan* plan = nullptr;
  std::string err = GetPlan(M, N, K, Inputs::kFp8, &plan);
  if (!err.empty()) return err;
  if (!plan->tuned) Tune(plan, a, w, d, stream);
  const cublasStatus_t st =
      plan->Matmul(handle_, plan->algo, a, w, d, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS) return Fail("cublasLtMatmul(fp8)", st);
  return "";
}

std::string Gemm::RunFp8(const uint8_t* a, const float* a_scales, const uint8_t* w,
                         const float* w_scales, float* d, int M, int N, int K,
                         cudaStream_t stream) {
  if (M <= 0) return "";
  if (a_scales == nullptr || w_scales == nullptr) {
    return "GEMM FP8: both scale vectors must be given";
  }
  std::string err = RunFp8Unscaled(a, w, d, M, N, K, stream);
  if (!err.empty()) return err;
  // cuBLASLt's per-row scale vectors (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F) are refused on
  // sm_90 by CUDA 13.0's cuBLASLt (the heuristic returns CUBLAS_STATUS_INVALID_VALUE, measured
  // on the H200): the GEMM runs unscaled and one pass over D applies both scales (or, through
  // RunFp8Unscaled, the kernel that reads D).
  const cudaError_t scaled = LaunchScaleRowsAndColumns(d, a_scales, w_scales, M, N, stream);
  if (scaled != cudaSuccess) return Fail("LaunchScaleRowsAndColumns", scaled);
  return "";
}

void Gemm::Tune(Plan* plan, const void* a, const void* w, void* d, cudaStream_t stream) {
  plan->tuned = true;
  cudaEvent_t start, stop;
  if (cudaEventCreate(&start) != cudaSuccess) return;
  if (cudaEventCreate(&stop) != cudaSuccess) {
    cudaEventDestroy(start);
    return;
  }
  float best = 1e30f;
  for (const cublasLtMatmulAlgo_t& algo : plan->candidates) {
    float total = 0.0f;
    bool ok = true;
    for (int rep = 0; rep < 4 && ok; ++rep) {
      if (tune_cold_ && rep > 0) FlushL2(stream);  // without it (no memory), timed warm
      cudaEventRecord(start, stream);
      ok = plan->Matmul(handle_, algo, a, w, d, workspace_, workspace_bytes_, stream) ==
           CUBLAS_STATUS_SUCCESS;
      cudaEventRecord(stop, stream);
      float ms = 0.0f;
      ok = ok && cudaEventSynchronize(stop) == cudaSuccess &&
           cudaEventElapsedTime(&ms, start, stop) == cudaSuccess;
      if (rep > 0) total += ms;  // the first launch warms up
    }
    if (ok && total < best) {
      best = total;
      plan->algo = algo;
      plan->best_ms = total / 3;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

}  // namespace griffin::kernels
