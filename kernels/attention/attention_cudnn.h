// Prefill attention through cuDNN's fused flash attention (its frontend's SDPA graph), for passes
// in which every sequence starts at position 0: the same math as LaunchAttention (attention.cuh)
// over the q, k, v that LaunchRope wrote, each query seeing itself and the W keys before it, MQA
// through cuDNN's grouped heads. The ring is not read (there is nothing before position 0) and not
// written: LaunchRingWrite still runs after.
//
// Why a library here: measured on the H200 (bench/NOTES.md, session 18) on 2B's shapes, cuDNN 9.19
// ran 1 x 2048 in 95 us (227 TFLOP/s) and 16 x 2048 in 600 us (573 TFLOP/s) where our
// FlashAttention-2-style kernel (attention_mma.cu, mma.sync from cp.async tiles) takes 170 us
// at 1 x 2048. Ours stays for what this graph does not express: passes that continue a sequence
// (its earlier keys are in the per-slot ring), short passes (where cuDNN measured no faster), and
// decode. It runs fresh passes of 512 tokens and more by default
// (CudaBackendOptions::cudnn_attention_min_tokens) since session 31. Until then it was opt-in:
// compute-sanitizer 2025.3's racecheck reports a shared-memory race inside every fast cuDNN engine
// for this graph (a 16-byte value thread 0 writes late in the kernel, other warps read at the top
// of it), which 2026.4 does not, on the same cases, while both report a known race
// (bench/sanitizer_control.cu); the tool's release notes list its Hopper mbarrier false positives
// as fixed. Memcheck, initcheck and synccheck (given room for the kernel's barriers:
// --num-cuda-barriers) are clean, and 16 repeated runs give the same bits.
// GRIFFIN_CUDNN_ATTENTION_PLAN=i picks cuDNN's i-th engine, for such comparisons.
//
// Numerics: Q.K^T and P.V on the bf16 tensor cores with float32 accumulation and a float32 online
// softmax; P is rounded to bf16 (ours rounds it to half), so the tolerance against the float64
// reference is bf16's: 2^-8 max|v| on top of the output rounding (kernels_test, attention cases).
//
// cuDNN is loaded at run time (dlopen of libcudnn.so.9: GRIFFIN_CUDNN_LIBRARY if set, else the
// build's virtual environment's nvidia-cudnn-cu13, else the loader's search path), so a machine
// without it runs our kernel everywhere; Init says why. Graphs are built per bucket of (sequences,
// longest sequence), both rounded up to powers of two, with the actual lengths and offsets as
// device tensors (cuDNN's ragged layout and padding mask), and cached. Host-only code; not
// thread-safe (one engine thread); not for use inside CUDA graph capture.
#ifndef GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUDNN_H_
#define GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUDNN_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/types.h"

namespace griffin::kernels {

class CudnnAttention {
 public:
  CudnnAttention();
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Loads cuDNN, creates its handle, a workspace of `workspace_bytes` and room for the lengths and
  // offsets of up to `max_sequences` sequences. H query heads, KV kv heads of `hd` dims, window W
  // (a query sees W earlier keys), softmax scale `scale`. Empty string on success, else why cuDNN
  // cannot be used (the caller keeps its own kernel).
  std::string Init(int H, int KV, int hd, int W, float scale, int max_sequences,
                   size_t workspace_bytes);
  bool ready() const { return handle_ != nullptr; }
  // The cuDNN library's version (e.g. 91900), 0 before Init succeeded.
  int version() const { return version_; }

  // Sets the sequences of the next Run calls: `lengths` tokens each, packed back to back from
  // token 0, every one starting at position 0. Uploads their lengths and offsets on `stream` and
  // builds (first time) the graph of their bucket. Empty string on success, else why this pass
  // cannot take cuDNN (the caller runs its own kernel for it).
  std::string SetPass(const std::vector<int>& lengths, cudaStream_t stream);
  // out [n, H hd] = attention(q [n, H hd], k [n, KV hd], v [n, KV hd]), bf16, for the pass SetPass
  // described. Empty string on success.
  std::string Run(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out,
                  cudaStream_t stream);
  // The cuDNN engine the last graph built runs (its plan name), empty before one was.
  const std::string& plan_name() const { return plan_name_; }
  // Time SetPass spent building graphs so far, and how many buckets it tried.
  double build_seconds() const { return build_seconds_; }
  int graphs_built() const { return static_cast<int>(graphs_.size()); }

 private:
  struct Graph;
  std::string BuildGraph(int sequences, int max_len, Graph* graph);

  int H_ = 0, KV_ = 0, hd_ = 0, W_ = 0;
  float scale_ = 1.0f;
  int max_sequences_ = 0;
  int version_ = 0;
  void* handle_ = nullptr;     // cudnnHandle_t
  void* workspace_ = nullptr;  // device
  size_t workspace_bytes_ = 0;
  // Device int32: sequence lengths [max_sequences] then element offsets of Q/O and of K/V
  // [max_sequences + 1] each; `staging_` is their pinned host copy, `staged_` the event after
  // its last upload (the host waits on it before writing the staging again).
  int32_t* index_ = nullptr;
  int32_t* staging_ = nullptr;
  cudaEvent_t staged_ = nullptr;
  std::map<std::pair<int, int>, std::unique_ptr<Graph>> graphs_;
  Graph* current_ = nullptr;
  double build_seconds_ = 0;
  std::string plan_name_;
};

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_ATTENTION_ATTENTION_CUDNN_H_
