// GEMMs through cuBLASLt: every linear layer of the model, with the fused projections' weights
// concatenated at load ([x; y], [gate; up], [q; k; v] stacked along the output dimension).
//
//   D[M, N] (float32, row-major) = A[M, K] (bf16 activations, row-major) . W[N, K]^T (bf16 weights,
//   the checkpoint's [out, in] row-major layout)
// In cuBLAS's column-major terms this is the "TN" problem D^T = W^T' . A^T' with m = N, n = M, k = K.
// Compute type CUBLAS_COMPUTE_32F (float32 accumulation), no epilogue (biases are added by the
// consumer kernels). The algorithm for each (M, N, K) comes from cuBLASLt's heuristic once and is
// cached, so graph capture and replay reuse it. A fixed workspace is allocated at Init (no
// allocation on the request path). Host-only code; not thread-safe (one engine thread).
#ifndef GRIFFIN_KERNELS_LINEAR_GEMM_H_
#define GRIFFIN_KERNELS_LINEAR_GEMM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "kernels/types.h"

namespace griffin::kernels {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Creates the cuBLASLt handle and a workspace of `workspace_bytes`. Empty string on success.
  std::string Init(size_t workspace_bytes);
  // While set, the first Run of each new shape times up to 8 of the heuristic's candidate
  // algorithms on the call's own buffers (3 launches each, CUDA events) and keeps the fastest.
  // Only for shapes that repeat (decode buckets, set during start-up); never while capturing.
  // Turning it off frees what tuning held (the L2 flush buffer).
  void set_autotune(bool on);
  // With autotune: time each candidate after a read of twice the L2, so that it meets its weights
  // in HBM as it does in a decode step, rather than back to back from L2 (a warm winner lost to
  // the cold one by up to 8% in kernels_bench; decode batch 256 -0.13 to -0.19 ms: bench/NOTES.md
  // session 22).
  void set_tune_cold(bool on) { tune_cold_ = on; }
  // Empty string on success, else a fixed message with the cuBLAS status number.
  std::string Run(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K,
                  cudaStream_t stream);
  // The same product written as bf16, each float32 sum rounded once (cuBLASLt converts in its
  // epilogue): the MLP's up projection when the gate GEMM's epilogue reads it back
  // (gemm_geglu.cuh), half the bytes both ways.
  std::string RunBf16Out(const bf16_t* a, const bf16_t* w, bf16_t* d, int M, int N, int K,
                         cudaStream_t stream);
  // `batch` independent products D_b = A_b . W_b^T with explicit leading dimensions (elements,
  // row-major rows) and batch strides (elements): the RG-LRU block-diagonal gates of all heads in
  // one call (A_b = the head's conv columns, W_b = the head's [2B, B] gate weights).
  // `fp16`: A and W hold IEEE half instead of bf16 (the RG-LRU gates: 3 more mantissa bits for
  // the conv output, weights converted exactly from bf16).
  std::string RunBatched(const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* w,
                         int64_t stride_w, float* d, int64_t ldd, int64_t stride_d, int M, int N,
                         int K, int batch, bool fp16, cudaStream_t stream);
  // Split-K: the product as `parts` float32 partial products D_p = A[:, Kp:K(p+1)) .
  // W[:, Kp:K(p+1))^T over consecutive slices of K / parts columns, written one after another
  // ([parts][M][N]); the reader adds them up (LaunchAddRmsNorm's delta_parts). One strided-batched
  // cuBLASLt launch, no reduction pass: at decode batches of 64-512 rows the 2560-wide
  // projections make only 20-40 output tiles for 132 SMs, and each part adds as many (bench/
  // NOTES.md session 23; cuBLASLt's own split-K algorithms reduce in a pass of their own and
  // measured slower, session 22). SplitKAllowed(K, parts) must hold.
  std::string RunSplitK(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K, int parts,
                        cudaStream_t stream);
  // Slices of whole 16-byte vectors: K % parts == 0 and (K / parts) % 8 == 0.
  static bool SplitKAllowed(int K, int parts);
  // How many parts RunSplitK should take for this shape, at most `max_parts`. While autotuning,
  // the first call of a shape times every allowed split (each with its own tuned algorithm, on
  // the call's buffers: d must hold max_parts x M x N floats) and keeps the fastest, each part
  // beyond the first charged what its reader pays more (M x N floats at HBM speed and a load
  // round of 0.3 us). Afterwards the
  // kept choice; a shape never tuned takes 1 (no split).
  int ChooseSplitK(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K, int max_parts,
                   cudaStream_t stream);
  // W8A8 on the FP8 tensor cores (issue 14): A [M, K] and W [N, K] as E4M3 bytes, each row with
  // its float32 scale (`a_scales` [M], `w_scales` [N]), D[m, n] = a_scales[m] * w_scales[n] *
  // sum_k A[m, k] W[n, k] in float32 (the scales applied by a pass over D after the GEMM).
  // K % 16 == 0.
  std::string RunFp8(const uint8_t* a, const float* a_scales, const uint8_t* w,
                     const float* w_scales, float* d, int M, int N, int K, cudaStream_t stream);
  // The same GEMM leaving D unscaled, sum_k A[m, k] W[n, k]: the caller hands InputScales
  // {a_scales, w_scales} (types.h) to the kernel that reads D, which saves the pass over D
  // (read and written in float32: as many bytes as the GEMM's own output, twice).
  std::string RunFp8Unscaled(const uint8_t* a, const uint8_t* w, float* d, int M, int N, int K,
                             cudaStream_t stream);

 private:
  struct Plan;
  enum class Inputs { kBf16, kFp16, kFp8 };
  std::string GetPlan(int M, int N, int K, Inputs inputs, Plan** plan, bool bf16_out = false) {
    return GetPlan(M, N, K, K, K, N, 1, 0, 0, 0, inputs, plan, bf16_out);
  }
  std::string GetPlan(int M, int N, int K, int64_t lda, int64_t ldw, int64_t ldd, int batch,
                      int64_t stride_a, int64_t stride_w, int64_t stride_d, Inputs inputs,
                      Plan** plan, bool bf16_out = false);
  // Run and RunBf16Out: D (float32 or bf16) = A . W^T on bf16 inputs.
  std::string RunBf16Inputs(const bf16_t* a, const bf16_t* w, void* d, int M, int N, int K,
                            bool bf16_out, cudaStream_t stream);
  // Times the plan's candidates, keeps the fastest in plan->algo and its time in plan->best_ms.
  void Tune(Plan* plan, const void* a, const void* w, void* d, cudaStream_t stream);
  Plan* SplitKPlan(int M, int N, int K, int parts, std::string* err);
  // Reads flush_ (twice the L2) on `stream`; allocates it the first time.
  bool FlushL2(cudaStream_t stream);
  void FreeFlush();
  bool autotune_ = false;
  bool tune_cold_ = false;
  float* flush_ = nullptr;  // while autotuning cold: flush_rows_ rows of 1 MiB, zeros
  int32_t* flush_scratch_ = nullptr;
  int flush_rows_ = 0;

  void* handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                      Inputs, bool>,
           std::unique_ptr<Plan>>
      plans_;
  std::map<std::tuple<int, int, int, int>, int> split_k_choice_;  // (M, N, K, max_parts) -> parts
};

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_GEMM_H_
