// The CUDA backend: the forward pass (EnqueueForward) follows CpuBackend::ForwardEntry layer by
// layer; every kernel it launches is in kernels/ with its math in the header comment.
#include "engine/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/cuda_status.h"
#include "base/status_macros.h"
#include "engine/cuda_decode_graphs.h"
#include "engine/cuda_step_layout.h"
#include "engine/cuda_weights.h"
#include "engine/griffin_model.h"
#include "engine/slot_budget.h"
#include "engine/state_layout.h"
#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention_cudnn.h"
#include "kernels/geglu/geglu.cuh"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/linear/gemm.h"
#include "kernels/linear/gemm_geglu.cuh"
#include "kernels/linear/gemm_prefetch.cuh"
#include "kernels/linear/gemv.cuh"
#include "kernels/logits/logits.cuh"
#include "kernels/norm/rmsnorm.cuh"
#include "kernels/rglru/rglru.cuh"

namespace griffin::engine {

// A launch of the forward pass, left out when the family the Trace just before it named is
// ablated (CudaBackendOptions::ablate_kernels: timing only).
#define ENQUEUE(expr)                          \
  do {                                         \
    if (!ablated_) CUDA_RETURN_IF_ERROR(expr); \
  } while (0)
#define ENQUEUE_GEMM(expr)                             \
  do {                                                 \
    if (!ablated_) CUDA_MESSAGE_RETURN_IF_ERROR(expr); \
  } while (0)

namespace {

using kernels::bf16_t;
using T_ = LayerTensor;

constexpr int kMaxKeySplits = kernels::kMaxAttentionSplits;
// The softmax scale of q.k (SPEC.md: head_dim^-1/2), for both attention paths.
float AttentionScale(int head_dim) {
  return static_cast<float>(std::pow(static_cast<double>(head_dim), -0.5));
}
constexpr size_t kGemmWorkspaceBytes = 64 << 20;
// cuDNN's attention graphs at 2B's and 9B's shapes asked for none (session 18); a graph that wants
// more than this is refused and its passes run our kernel.
constexpr size_t kCudnnAttentionWorkspaceBytes = 16 << 20;
constexpr int kSampleContextCapacity = 1 << 22;  // token ids of all rows' repetition contexts
// Left free when slots are sized from device memory: what the device allocates after the pool
// (decode graphs' executables, kernel modules loaded lazily at their first launch, cuBLASLt's
// per-shape state). Not measured on its own; 1 GiB is 0.7% of an H200 and covers them by a wide
// margin (a whole step's module set is tens of MB).
constexpr int64_t kSlotBudgetReserveBytes = int64_t{1} << 30;

}  // namespace

bool CudaDeviceAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

absl::Status CudaCanImplement(const loader::ModelConfig& c) {
  auto fail = [](const char* why) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA backend: ", std::string(why)));
  };
  if (c.hidden_size <= 0 || c.vocab_size <= 0 || c.num_layers <= 0) return fail("empty model");
  if (c.num_recurrent_layers() > 0) {
    const char* why = kernels::CanImplementRgLru(c.lru_width, c.num_heads, c.conv1d_width);
    if (*why) return fail(why);
  }
  if (c.num_attention_layers() > 0) {
    const char* why =
        kernels::CanImplementAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.rotary_dim());
    if (*why) return fail(why);
    if (c.attention_window <= 0) return fail("attention window must be positive");
  }
  return absl::OkStatus();
}

// Activation buffers for forward passes of up to `tokens` tokens, and the head's and sampler's
// buffers for `rows` rows. Sized once; reused by every pass.
struct Workspace {
  float* residual = nullptr;    // [n, d] float32 residual stream
  float* block_out = nullptr;   // [n, d] a block's output before its bias (the next norm adds both)
  bf16_t* normed = nullptr;     // [n, d] RMSNorm output, the next GEMM's input
  float* projection = nullptr;  // [n, widest fused projection]: x|y, gate|up or q|k|v
  bf16_t* activation = nullptr;       // [n, widest block activation]: the block's output GEMM input
  float* conv_out = nullptr;          // [n, L] recurrent prefill: conv output
  uint16_t* conv_out_half = nullptr;  // [n, L] the same as IEEE half (the gate GEMM's input)
  float* gates = nullptr;             // [n, 2L] gate sums, then a_eff and xn
  unsigned* tail_counters = nullptr;  // [ceil(n / 8) * H] zeros between launches: RgLruParams
  int tail_counter_capacity = 0;
  bf16_t *q = nullptr, *k = nullptr, *v = nullptr;  // attention: this pass's q, k, v
  float* split_o = nullptr;    // [split tokens, H, splits, hd] decode partial outputs
  float* split_ml = nullptr;   // [split tokens, H, splits, 2] their max and sum
  // Tickets of cut prefill tiles (AttentionParams::tile_counters): one per token of the partials'
  // span and kv head, zero between launches.
  unsigned* tile_counters = nullptr;
  bf16_t* head_in = nullptr;   // [rows, d] final norm of the rows the head computes
  float* logits = nullptr;     // [rows, V]
  int32_t* sampled = nullptr;  // [rows] argmax / sampled token per row
  int32_t* argmax_scratch = nullptr;
  kernels::SampleRowParams* sample_params = nullptr;  // [rows]
  int32_t* sample_context = nullptr;                  // [kSampleContextCapacity]
  kernels::LogitBias* sample_bias = nullptr;          // [rows × kMaxDeviceLogitBias]
  int32_t* score_targets = nullptr;                   // [rows] prompt scoring: target id or -1
  float* score_logprobs = nullptr;                    // [rows]
  int32_t* score_ranks = nullptr;                     // [rows]
  int32_t* score_top_ids = nullptr;                   // [rows × kMaxDeviceTopLogprobs]
  float* score_top_logprobs = nullptr;                // [rows × kMaxDeviceTopLogprobs]
  bf16_t* expanded_weights = nullptr;   // FP8 weights: the largest projection, expanded to bf16
  uint8_t* activation_codes = nullptr;  // FP8 W8A8: [n, widest projection input] E4M3
  float* activation_scales = nullptr;   // [n] their per-token scales
};

// What a StepWithPromptLogprobs step does with each row it produces, in step-row order, and where
// the device's results for that row land before they are gathered into the caller's spans.
struct PromptScoring {
  int top_k = 0;
  std::vector<int32_t> target;    // the id the row is scored against, or -1
  std::vector<int64_t> host_row;  // the caller's logits row it is copied to, or -1
  std::vector<float> logprobs;    // [rows]
  std::vector<int32_t> ranks;     // [rows]
  std::vector<int32_t> top_ids;   // [rows × top_k]
  std::vector<float> top_logprobs;
};

class CudaBackend::Impl {
 public:
  ~Impl();
  absl::Status Init(const loader::ModelConfig& config, const CudaBackendOptions& options);
  absl::Status Upload(const loader::Checkpoint& checkpoint);
  absl::Status RandomWeights(uint64_t seed);
  // FP8 projections, passes the W8A16 GEMV does not take: the activations' FP8 codes and scales
  // (W8A8), or the bf16 scratch the weights expand into (W8A16 above the GEMV's batch).
  absl::Status AllocateFp8Workspace();
  // The slot pool, after everything else (its size may come from the memory left).
  absl::Status AllocateSlots();
  absl::Status CaptureGraphs();
  absl::Status Validate(absl::Span<const StepEntry> entries) const {
    return ValidateStepEntries(entries, options_.num_slots, config_.vocab_size,
                               [this](int slot) { return next_position_[slot]; });
  }
  absl::Status Run(absl::Span<const StepEntry> entries, float* logits_out,
                   absl::Span<const SampleRequest> requests, int32_t* tokens_out);
  absl::Status Fail(absl::Status st) {
    healthy_ = false;
    return st;
  }
  absl::Status SyncOrFail() {
    const cudaError_t err = cudaStreamSynchronize(stream_);
    if (err != cudaSuccess) return Fail(CudaError(err, __FILE__, __LINE__));
    return absl::OkStatus();
  }
  char* SlotBytes(int slot) const { return pool_ + layout_.slot_bytes() * slot; }

  loader::ModelConfig config_;
  CudaBackendOptions options_;
  StateLayout layout_ = StateLayout::ForCuda(loader::ModelConfig{});
  std::vector<int> block_index_;
  int max_tokens_ = 0;    // per pass (>= max_decode_batch)
  int max_rows_ = 0;      // logits rows per head pass
  int prefill_tile_ = 1;  // attention prefill tile (query tokens)
  int split_tokens_ = 0;  // decode attention blocks wanted: SMs x decode_attention_blocks_per_sm
  int sms_ = 0;
  kernels::AttentionPrefillBlock prefill_block_;  // the tensor-core kernel's, or {0, 0}
  int64_t max_split_partials_ = 0;  // (token, head, split) rows ws_.split_o holds
  bool healthy_ = true;
  bool use_graphs_ = true;
  std::vector<LaunchRecord>* trace_ = nullptr;
  bool ablated_ = false;  // the launch Trace last named is left out (ENQUEUE)

  cudaStream_t stream_ = nullptr;
  int device_ = 0;  // the device current when Init ran (the engine's)
  // StartSnapshot's copies to the host: the slot is first copied within the device into a staging
  // buffer on stream_ (~10 us for a 2B slot), then to the host on copy_stream_ while stream_ goes
  // on computing. A staging buffer is busy until its event has completed. They are allocated as
  // snapshots need them, up to kMaxSnapshotStagings: requests that end together demote prefix
  // cache entries in bursts (tens in one step at 256 streams), and with two buffers the third
  // demotion of a burst waited for the first's host copy (0.34 ms at 2B): 0.9 ms of host time a
  // step at 1024 / 128, c256, where 16 left none (simulated, bench/NOTES.md session 15).
  struct SnapshotStaging {
    char* bytes = nullptr;
    cudaEvent_t copied = nullptr;
    uint64_t id = 0;  // the snapshot it last carried; 0 once its copy is known to be complete
  };
  static constexpr int kMaxSnapshotStagings = 16;
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t staged_ = nullptr;  // stream_ reached the end of the latest staging copy
  std::vector<SnapshotStaging> stagings_;
  bool stagings_full_ = false;  // no more can be allocated (the cap, or the device's memory)
  uint64_t last_snapshot_id_ = 0;
  // A staging buffer free for the next snapshot: one whose copy has completed, else a new one,
  // else the oldest once its copy completes. Null when none can be had (no memory for even one).
  absl::StatusOr<SnapshotStaging*> FreeStaging();
  absl::Status WaitStaging(SnapshotStaging& staging);
  kernels::Gemm gemm_;
  // Fresh prefill passes' attention (CudaBackendOptions::cudnn_attention_min_tokens); when not
  // ready(), cudnn_attention_status_ says why.
  kernels::CudnnAttention cudnn_attention_;
  std::string cudnn_attention_status_;
  bool cudnn_pass_ = false;  // the pass being enqueued runs its attention through cuDNN
  DeviceArena arena_;  // workspace, pool (weights have their own)
  std::unique_ptr<DeviceWeights> weights_;
  char* pool_ = nullptr;  // num_slots + 1 (the scratch slot pads decode buckets) slots
  std::vector<int64_t> next_position_;
  Workspace ws_;
  // Scales of block_out's contents the next residual add applies (an FP8 GEMM left it unscaled:
  // Linear's `deferred`); empty otherwise.
  kernels::InputScales block_out_scales_;
  // How many partial products block_out holds ([parts][n][d]: LinearToBlockOut's split-K GEMM),
  // which the next residual add sums.
  int block_out_parts_ = 1;
  int64_t block_out_rows_ = 0;  // ws_.block_out's capacity: parts x rows of every split it takes
  StepMetadata meta_;
  kernels::SampleRowParams* sample_params_host_ = nullptr;  // pinned [rows]
  int32_t* sample_context_host_ = nullptr;                  // pinned [kSampleContextCapacity]
  kernels::LogitBias* sample_bias_host_ = nullptr;          // pinned [rows × kMaxDeviceLogitBias]
  DecodeGraphs graphs_;
  PromptScoring* scoring_ = nullptr;  // set for the duration of a StepWithPromptLogprobs

 private:
  // Key splits for a decode pass of n tokens: at most split_tokens_ blocks (one wave of the decode
  // kernel), at most one per 32-key tile of the window.
  int KeySplits(int n) const {
    const int blocks = n * config_.num_kv_heads;
    if (blocks >= split_tokens_) return 1;
    const int want =
        split_tokens_ / blocks;  // rounded down: one wave, not a second, part-empty one
    const int most = (config_.attention_window + 1 + 31) / 32;
    return std::max(1, std::min({kMaxKeySplits, want, most}));
  }
  // Key splits for the prefill pass packed in meta_: as many as fill one wave of split_tokens_
  // blocks, each split keeping at least kMinPrefillSplitKeys keys of the longest tile's range
  // (the rest wait on the combine, which reads every split's partial rows back).
  int PrefillKeySplits() const {
    constexpr int kMinPrefillSplitKeys = 128;
    if (!options_.prefill_attention_key_splits) return 1;
    const int blocks = meta_.num_tiles() * config_.num_kv_heads;
    if (blocks == 0 || blocks >= split_tokens_) return 1;
    int max_keys = 0;  // keys the last tile of an entry sees: its window and its own tokens
    for (const kernels::StepEntryRecord& e : meta_.host_entries()) {
      const int64_t last = e.pos0 + e.len - 1;
      max_keys = std::max<int>(max_keys, std::min<int64_t>(last, config_.attention_window) + 1);
    }
    const int splits =
        std::min({kMaxKeySplits, split_tokens_ / blocks, max_keys / kMinPrefillSplitKeys});
    // The partials buffer holds max_split_partials_ (token, head, split) rows.
    const int fit =
        static_cast<int>(max_split_partials_ / (int64_t{meta_.num_tokens()} * config_.num_heads));
    return std::max(1, std::min(splits, fit));
  }
  // Cuts the longest attention tiles of the prefill pass packed in meta_ where that shortens it
  // (prefill_attention_split_long_tiles): only for the tensor-core kernel, only where the keys
  // are not split evenly instead, within the partials buffer.
  void SplitLongTiles() {
    if (!options_.prefill_attention_split_long_tiles || prefill_block_.blocks_per_sm == 0 ||
        PrefillKeySplits() > 1) {
      return;
    }
    TilePartPolicy policy;
    policy.window = config_.attention_window;
    policy.key_tile = prefill_block_.key_tile;
    policy.slots = sms_ * prefill_block_.blocks_per_sm;
    policy.kv_heads = config_.num_kv_heads;
    policy.max_split_span = static_cast<int>(max_split_partials_ / (2 * config_.num_heads));
    meta_.SplitLongTiles(policy);
  }
  // Whether the prefill pass packed in meta_ (n tokens) takes cuDNN's attention: long enough, every
  // sequence from position 0 (no keys in the ring), and a graph for its shape (built on first use
  // of a bucket; one that cuDNN refuses stays refused). Uploads the pass's lengths if so.
  bool SelectCudnnAttention(int n) {
    if (!cudnn_attention_.ready() || options_.cudnn_attention_min_tokens == 0 ||
        n < options_.cudnn_attention_min_tokens) {
      return false;
    }
    std::vector<int> lengths;
    for (const kernels::StepEntryRecord& e : meta_.host_entries()) {
      if (e.pos0 != 0) return false;
      lengths.push_back(e.len);
    }
    return cudnn_attention_.SetPass(lengths, stream_).empty();
  }
  // Every launch of a forward pass is named here first: for the profile's launch trace, and to
  // leave it out when its family is ablated (the ENQUEUE macros read ablated_).
  void Trace(std::string op, const char* kernel, double bytes, double flops) {
    ablated_ = Ablated(kernel);
    if (trace_ != nullptr && !ablated_) trace_->push_back({std::move(op), kernel, bytes, flops});
  }
  bool Ablated(std::string_view kernel) const {
    for (const std::string& k : options_.ablate_kernels) {
      if (k == kernel) return true;
    }
    return false;
  }
  // Every linear layer: at one row, the GEMV kernel (measured faster than cuBLASLt there: 2.76 vs
  // 2.43 TB/s on 15360x2560, 4.41 vs 4.10 on the 256000x2560 head; the narrow matrices split each
  // row over several warps, bench/NOTES.md; at M = 8 it re-reads A and loses), cuBLASLt otherwise.
  // FP8 weights: one row in the W8A16 GEMV (half the bytes); two or more W8A8 on the FP8 tensor
  // cores, the activations quantized per token by the weights' own kernel (kernels_bench: 20.7 us
  // for gate|up at 8 rows where the GEMV, L1-bound re-reading A, takes 61.6). With
  // fp8_activations off (W8A16 throughout): the GEMV up to 8 rows, above that the matrix expanded
  // to bf16 into a scratch buffer for cuBLASLt (slow: bench/NOTES.md).
  // `deferred` (optional): where the caller reads d through kernels that take InputScales
  // (types.h). An FP8 GEMM on the tensor cores then leaves d unscaled and hands its scales there
  // instead of a pass over d (CudaBackendOptions::fuse_fp8_passes); otherwise they are set empty.
  // `a_quantized`: the kernel that wrote `a` also wrote its FP8 codes and row scales into
  // ws_.activation_codes / activation_scales (QuantizesInputOf said so).
  absl::Status Linear(const std::string& op, const bf16_t* a, ProjectionWeights w, float* d, int M,
                      int N, int K, kernels::InputScales* deferred = nullptr,
                      bool a_quantized = false) {
    if (deferred != nullptr) *deferred = {};
    const bool defer = deferred != nullptr && options_.fuse_fp8_passes;
    if (w.fp8()) {
      if (kernels::GemvFp8Supported(M, K) && (M == 1 || !options_.fp8_activations)) {
        Trace(op, "Gemv", 1.0 * N * K + 4.0 * N + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
        ENQUEUE(kernels::LaunchGemvFp8(a, w.codes(), w.scales, d, M, N, K, stream_));
        return absl::OkStatus();
      }
      if (options_.fp8_activations) {
        if (!a_quantized) {
          Trace(op + " (activations to FP8)", "QuantizeRows", 3.0 * M * K + 4.0 * M, 0);
          ENQUEUE(kernels::LaunchQuantizeRowsFp8E4M3(a, M, K, ws_.activation_codes,
                                                     ws_.activation_scales, stream_));
        }
        // The prefetch GEMM on E4M3 codes leaves d unscaled, so only where the reader scales.
        const bool prefetch = defer && options_.prefetch_gemm_fp8 &&
                              M <= options_.prefetch_gemm_max_rows &&
                              M <= kernels::kPrefetchGemmFp8MaxRows &&
                              N <= CudaBackendOptions::kPrefetchGemmMaxColumns &&
                              kernels::PrefetchGemmFp8Supported(device_, M, N, K);
        Trace(op + (prefetch ? " (prefetch GEMM)" : ""), "gemm",
              1.0 * N * K + 1.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
        if (prefetch) {
          ENQUEUE(kernels::LaunchPrefetchGemmFp8(
              ws_.activation_codes, w.codes(), d, M, N, K,
              {options_.prefetch_gemm_overlap, options_.prefetch_gemm_rows_per_block}, stream_));
          *deferred = {ws_.activation_scales, w.scales};
          return absl::OkStatus();
        }
        if (defer) {
          ENQUEUE_GEMM(gemm_.RunFp8Unscaled(ws_.activation_codes, w.codes(), d, M, N, K, stream_));
          *deferred = {ws_.activation_scales, w.scales};
          return absl::OkStatus();
        }
        Trace(op + " (row and column scales)", "ScaleRowsAndColumns", 8.0 * M * N + 4.0 * (M + N),
              0);
        ENQUEUE_GEMM(gemm_.RunFp8(ws_.activation_codes, ws_.activation_scales, w.codes(), w.scales,
                                  d, M, N, K, stream_));
        return absl::OkStatus();
      }
      // The codes expand exactly and the row scales multiply the output, as in the GEMV (a bf16
      // rounding of code x scale moved the fixtures' log-probabilities 0.002-0.005 more).
      Trace(op + " (FP8 expanded to bf16)", "Expand", 3.0 * N * K, 0);
      ENQUEUE(
          kernels::LaunchExpandFp8E4M3(w.codes(), nullptr, N, K, ws_.expanded_weights, stream_));
      Trace(op, "gemm", 2.0 * N * K + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
      ENQUEUE_GEMM(gemm_.Run(a, ws_.expanded_weights, d, M, N, K, stream_));
      if (defer) {
        *deferred = {nullptr, w.scales};
        return absl::OkStatus();
      }
      Trace(op + " (row scales)", "ScaleRowsAndColumns", 8.0 * M * N + 4.0 * N, 0);
      ENQUEUE(kernels::LaunchScaleRowsAndColumns(d, nullptr, w.scales, M, N, stream_));
      return absl::OkStatus();
    }
    // The prefetch GEMM is CUTLASS's: "gemm", the library's kernel names, for the profile's join.
    const bool prefetch = PrefetchGemmTakes(w, M, N, K);
    const bool gemv = !prefetch && M <= options_.gemv_max_rows && kernels::GemvSupported(M, K) &&
                      (M > 1 || N >= 8192 || options_.gemv_for_narrow_projections);
    Trace(op + (prefetch ? " (prefetch GEMM)" : ""), gemv ? "Gemv" : "gemm",
          2.0 * N * K + 2.0 * M * K + 4.0 * M * N, 2.0 * M * N * K);
    if (gemv) {
      ENQUEUE(kernels::LaunchGemv(a, w.bf16(), d, M, N, K, stream_));
      return absl::OkStatus();
    }
    if (prefetch) {
      ENQUEUE(kernels::LaunchPrefetchGemm(
          a, w.bf16(), d, M, N, K,
          {options_.prefetch_gemm_overlap, options_.prefetch_gemm_rows_per_block}, stream_));
      return absl::OkStatus();
    }
    ENQUEUE_GEMM(gemm_.Run(a, w.bf16(), d, M, N, K, stream_));
    return absl::OkStatus();
  }
  // Whether Linear runs these bf16 weights on the GEMM with weight prefetch for M rows
  // (CudaBackendOptions::prefetch_gemm_max_rows).
  bool PrefetchGemmTakes(ProjectionWeights w, int M, int N, int K) const {
    return !w.fp8() && M <= options_.prefetch_gemm_max_rows &&
           N <= CudaBackendOptions::kPrefetchGemmMaxColumns &&
           kernels::PrefetchGemmSupported(device_, M, N, K);
  }
  // The most parts, at most prefetch_gemm_split_k_parts, that K splits into on the prefetch GEMM
  // (2B's down projection 3, its output projections 2: 2560 is no multiple of 3); 1: none.
  int PrefetchGemmSplitKParts(int K) const {
    for (int parts = options_.prefetch_gemm_split_k_parts; parts > 1; --parts) {
      if (kernels::Gemm::SplitKAllowed(K, parts)) return parts;
    }
    return 1;
  }
  // Init sizes ws_.block_out for every split LinearToBlockOut takes; a split past it would write
  // over the workspaces after it (one arena: no sanitizer sees that), so it is an error instead.
  absl::Status CheckBlockOutFits(int M, int parts) const {
    if (int64_t{M} * parts <= block_out_rows_) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("split-K of ", M, " rows into ", parts,
                                            " parts exceeds the residual workspace's ",
                                            block_out_rows_, " rows"));
  }
  // A projection of M rows into ws_.block_out (width d), which the next AddRmsNorm adds to the
  // residual stream: as Linear, or at decode-sized passes split over K into block_out_parts_
  // partial products that the norm sums (CudaBackendOptions::split_k_max_rows, split_k_parts).
  absl::Status LinearToBlockOut(const std::string& op, const bf16_t* a, ProjectionWeights w, int M,
                                int K) {
    const int d = config_.hidden_size;
    block_out_parts_ = 1;
    int parts = 1;
    const bool gemv = M <= options_.gemv_max_rows;
    if (!w.fp8() && !gemv && M <= options_.split_k_max_rows && !PrefetchGemmTakes(w, M, d, K)) {
      parts =
          options_.split_k_parts == 0
              ? gemm_.ChooseSplitK(a, w.bf16(), ws_.block_out, M, d, K,
                                   CudaBackendOptions::kTunedSplitKParts, stream_)
              : (kernels::Gemm::SplitKAllowed(K, options_.split_k_parts) ? options_.split_k_parts
                                                                         : 1);
    }
    const int prefetch_parts = PrefetchGemmSplitKParts(K);
    if (prefetch_parts > 1 && PrefetchGemmTakes(w, M, d, K)) {
      RETURN_IF_ERROR(CheckBlockOutFits(M, prefetch_parts));
      block_out_scales_ = {};
      Trace(op + " (prefetch GEMM, split-K)", "gemm",
            2.0 * d * K + 2.0 * M * K + 4.0 * M * d * prefetch_parts, 2.0 * M * d * K);
      ENQUEUE(kernels::LaunchPrefetchGemm(
          a, w.bf16(), ws_.block_out, M, d, K,
          {options_.prefetch_gemm_overlap, options_.prefetch_gemm_rows_per_block, prefetch_parts},
          stream_));
      block_out_parts_ = prefetch_parts;
      return absl::OkStatus();
    }
    if (parts <= 1) return Linear(op, a, w, ws_.block_out, M, d, K, &block_out_scales_);
    RETURN_IF_ERROR(CheckBlockOutFits(M, parts));
    block_out_scales_ = {};
    Trace(op + " (split-K)", "gemm", 2.0 * d * K + 2.0 * M * K + 4.0 * M * d * parts,
          2.0 * M * d * K);
    ENQUEUE_GEMM(gemm_.RunSplitK(a, w.bf16(), ws_.block_out, M, d, K, parts, stream_));
    block_out_parts_ = parts;
    return absl::OkStatus();
  }
  // Whether layer l's MLP runs the up GEMM and then the gate GEMM with GeGLU in its epilogue
  // (CudaBackendOptions::gemm_geglu_min_rows) for a pass of n tokens.
  bool GateGemmTakesGeGlu(ProjectionWeights gate_up, int l, int n) const {
    const int d = config_.hidden_size, m = config_.mlp_width;
    if (gate_up.fp8() || options_.gemm_geglu_min_rows == 0 || n < options_.gemm_geglu_min_rows) {
      return false;
    }
    return kernels::GemmGeGluSupported(device_, n, m, d) &&
           kernels::GemmGeGluAligned({gate_up.data, ws_.normed, ws_.projection, ws_.activation,
                                      weights_->f32(l, T_::kGateBias),
                                      weights_->f32(l, T_::kUpBias)});
  }
  // Whether Linear runs these weights on the FP8 tensor cores (W8A8) for M rows of width K.
  bool RunsW8A8(ProjectionWeights w, int M, int K) const {
    return w.fp8() && options_.fp8_activations && !(M == 1 && kernels::GemvFp8Supported(M, K));
  }
  // Whether the norm before `next` (a projection of M rows reading ws_.normed) writes the FP8
  // codes the W8A8 GEMM reads, instead of a quantization pass.
  bool QuantizesInputOf(ProjectionWeights next, int M) const {
    const int d = config_.hidden_size;
    return options_.fuse_fp8_passes && RunsW8A8(next, M, d) && kernels::AddRmsNormQuantizes(d);
  }
  // The residual stream += block_out (its pending bias and FP8 scales applied), then normalised;
  // with `quantize`, the normalised rows also as FP8 codes for the next W8A8 GEMM.
  absl::Status AddRmsNorm(const std::string& op, bool add_block_out, const float* bias,
                          const float* weight, int n, bool quantize = false) {
    const int d = config_.hidden_size;
    const int parts = add_block_out ? block_out_parts_ : 1;
    Trace(
        op + (quantize ? " (+ FP8 codes)" : ""), "AddRmsNorm",
        double(n) * d * (add_block_out ? 10 + 4 * parts : 6) + (quantize ? double(n) * (d + 4) : 0),
        0);
    ENQUEUE(kernels::LaunchAddRmsNorm(
        ws_.residual, add_block_out ? ws_.block_out : nullptr,
        add_block_out ? block_out_scales_ : kernels::InputScales{}, bias, weight, nullptr, n, d,
        config_.rms_norm_eps, ws_.normed, stream_,
        quantize ? kernels::Fp8Rows{ws_.activation_codes, ws_.activation_scales}
                 : kernels::Fp8Rows{},
        parts, options_.norm_vectors_per_thread));
    return absl::OkStatus();
  }
  absl::Status EnqueueForward(int n, bool decode_only);
  // `input_quantized`: the norm before wrote ws_.normed's FP8 codes (QuantizesInputOf).
  absl::Status RecurrentBlock(int layer, int n, bool decode_only, bool input_quantized);
  absl::Status AttentionBlock(int layer, int n, bool decode_only, bool input_quantized);
  // Head over `nrows` rows of the residual stream listed at metadata rows [row0, row0 + nrows).
  absl::Status EnqueueHead(int row0, int nrows, bool argmax);
  // Sampling parameters of step rows [row0, row0 + n) to the device.
  absl::Status UploadSampling(absl::Span<const SampleRequest> requests, int row0, int n);
  // Whether a step wants only greedy tokens from the head: nothing reads its logits afterwards
  // (no sampling, no prompt scores, no copy to the host), so the greedy head may leave them
  // uncapped (StepMetadata::SetLogitsReadAfterHead).
  bool GreedyTokensOnly(bool all_greedy, const int32_t* tokens_out) const {
    return all_greedy && tokens_out != nullptr && scoring_ == nullptr;
  }
  // After a head over step rows [row0, row0 + n): sample (if asked) and copy results out.
  absl::Status Consume(absl::Span<const SampleRequest> requests, bool all_greedy, int row0, int n,
                       bool argmax_done, float* logits_out, int32_t* tokens_out);
  // Consume for a StepWithPromptLogprobs step: scores the rows that have targets, copies out the
  // rows the caller asked for.
  absl::Status ConsumeScored(int row0, int n, float* logits_out);
  absl::Status RunDecodeGraph(absl::Span<const StepEntry> entries,
                              absl::Span<const SampleRequest> requests, bool all_greedy,
                              float* logits_out, int32_t* tokens_out);
  absl::Status RunPasses(absl::Span<const StepEntry> entries,
                         absl::Span<const SampleRequest> requests, bool all_greedy,
                         float* logits_out, int32_t* tokens_out);
  // Packs a pure-decode bucket (real entries first, the scratch slot after) into the metadata.
  void PackDecodeBucket(absl::Span<const StepEntry> entries, int bucket);
};

CudaBackend::Impl::~Impl() {
  if (sample_params_host_ != nullptr) cudaFreeHost(sample_params_host_);
  if (sample_context_host_ != nullptr) cudaFreeHost(sample_context_host_);
  if (sample_bias_host_ != nullptr) cudaFreeHost(sample_bias_host_);
  if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  for (SnapshotStaging& staging : stagings_) {
    cudaEventDestroy(staging.copied);
    cudaFree(staging.bytes);
  }
  if (staged_ != nullptr) cudaEventDestroy(staged_);
  if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

// Allocated on first use, not at start-up: only the prefix cache's demotions need them, and the
// slot pool was sized from the memory left; when no more fit, snapshots wait for a busy one (or,
// with none at all, stay synchronous) rather than failing.
absl::StatusOr<CudaBackend::Impl::SnapshotStaging*> CudaBackend::Impl::FreeStaging() {
  if (copy_stream_ == nullptr) {
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
    stagings_.reserve(kMaxSnapshotStagings);  // FreeStaging's pointers stay valid
  }
  SnapshotStaging* oldest = nullptr;
  for (SnapshotStaging& s : stagings_) {
    if (s.id != 0) {
      const cudaError_t err = cudaEventQuery(s.copied);
      if (err == cudaErrorNotReady) {
        if (oldest == nullptr || s.id < oldest->id) oldest = &s;
        continue;
      }
      if (err != cudaSuccess) return CudaError(err, __FILE__, __LINE__);
      s.id = 0;
    }
    return &s;
  }
  if (!stagings_full_ && static_cast<int>(stagings_.size()) < kMaxSnapshotStagings) {
    SnapshotStaging s;
    if (cudaMalloc(&s.bytes, layout_.slot_bytes()) == cudaSuccess) {
      if (cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming) != cudaSuccess) {
        cudaFree(s.bytes);
        return CudaError(cudaGetLastError(), __FILE__, __LINE__);
      }
      stagings_.push_back(s);
      return &stagings_.back();
    }
    cudaGetLastError();  // out of memory is not sticky
  }
  stagings_full_ = true;
  if (oldest == nullptr) return nullptr;
  RETURN_IF_ERROR(WaitStaging(*oldest));
  return oldest;
}

absl::Status CudaBackend::Impl::WaitStaging(SnapshotStaging& staging) {
  if (staging.id == 0) return absl::OkStatus();
  const cudaError_t err = cudaEventSynchronize(staging.copied);
  if (err != cudaSuccess) return Fail(CudaError(err, __FILE__, __LINE__));
  staging.id = 0;
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Init(const loader::ModelConfig& config,
                                     const CudaBackendOptions& options) {
  config_ = config;
  options_ = options;
  use_graphs_ = options.use_cuda_graphs;
  if (options_.num_slots < 0) {
    return absl::InvalidArgumentError("num_slots must be at least 1 (or 0: from device memory)");
  }
  for (const std::string& k : options_.ablate_kernels) {
    if (std::find(std::begin(kAblatableKernels), std::end(kAblatableKernels), k) ==
        std::end(kAblatableKernels)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ablate_kernels: unknown kernel family '", k,
                       "' (one of: ", absl::StrJoin(kAblatableKernels, ", "), ")"));
    }
  }
  if (options_.gemv_max_rows < 1 || options_.gemv_max_rows > kernels::kGemvMaxM) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemv_max_rows must be 1 to ", kernels::kGemvMaxM));
  }
  if (const int t = options_.rglru_decode_tokens_per_block;
      t != 0 && t != 1 && t != 2 && t != 4 && t != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("rglru_decode_tokens_per_block must be 0 (automatic), 1, 2, 4 or 8; got ", t));
  }
  if (options_.norm_vectors_per_thread < 0 || options_.norm_vectors_per_thread > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("norm_vectors_per_thread must be 0 (the kernel's), 1 or 2; got ",
                     options_.norm_vectors_per_thread));
  }
  if (options_.gemm_geglu_min_rows < 0 || options_.gemm_geglu_config < 0 ||
      options_.gemm_geglu_config >= kernels::kGemmGeGluConfigs) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm_geglu_min_rows must be >= 0 and gemm_geglu_config 0 to ",
                     kernels::kGemmGeGluConfigs - 1));
  }
  if (options_.split_k_max_rows < 0 || options_.split_k_parts < 0 ||
      options_.split_k_parts > CudaBackendOptions::kMaxSplitKParts) {
    return absl::InvalidArgumentError(
        absl::StrCat("split_k_max_rows must be >= 0 (0: off) and split_k_parts 0 (tuned) to ",
                     CudaBackendOptions::kMaxSplitKParts));
  }
  const int rows_per_block = options_.prefetch_gemm_rows_per_block;
  if (options_.prefetch_gemm_split_k_parts < 1 ||
      options_.prefetch_gemm_split_k_parts > CudaBackendOptions::kMaxSplitKParts) {
    return absl::InvalidArgumentError(absl::StrCat("prefetch_gemm_split_k_parts must be 1 to ",
                                                   CudaBackendOptions::kMaxSplitKParts));
  }
  if (options_.prefetch_gemm_max_rows < 0 || options_.prefetch_gemm_overlap > 1.0f ||
      (rows_per_block != 0 && rows_per_block != 16 && rows_per_block != 32 &&
       rows_per_block != 64 && rows_per_block != 128) ||
      (options_.prefetch_gemm_fp8 && options_.fp8_weights && rows_per_block == 128)) {
    return absl::InvalidArgumentError(
        "prefetch_gemm_max_rows must be >= 0 (0: off), prefetch_gemm_overlap at most 1 "
        "(negative: no early launch), prefetch_gemm_rows_per_block 0 (automatic), 16, 32, 64 or "
        "128 (not 128 for FP8 weights on it)");
  }
  if (options_.cudnn_attention_min_tokens < 0) {
    return absl::InvalidArgumentError("cudnn_attention_min_tokens must be >= 0 (0: off)");
  }
  if (options_.max_tokens_per_step < 1 || options_.max_decode_batch < 1) {
    return absl::InvalidArgumentError("max_tokens_per_step and max_decode_batch must be positive");
  }
  if (!CudaDeviceAvailable()) return absl::FailedPreconditionError("no CUDA device is visible");
  RETURN_IF_ERROR(CudaCanImplement(config_));
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, L = c.lru_width, m = c.mlp_width, H = c.num_heads;
  const int KV = c.num_kv_heads, hd = c.head_dim;
  const bool recurrent = c.num_recurrent_layers() > 0, attention = c.num_attention_layers() > 0;
  layout_ = StateLayout::ForCuda(c);
  block_index_ = BlockIndices(c);
  max_tokens_ = std::max(options_.max_tokens_per_step, options_.max_decode_batch);
  max_rows_ = options_.max_decode_batch;
  prefill_tile_ = attention ? kernels::AttentionPrefillTileTokens(H, KV, hd) : 1;

  CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  int sms = 0;
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  if (options_.decode_attention_blocks_per_sm < 1) {
    return absl::InvalidArgumentError("decode_attention_blocks_per_sm must be at least 1");
  }
  split_tokens_ = options_.decode_attention_blocks_per_sm * sms;
  sms_ = sms;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device_));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (attention) {
    CUDA_RETURN_IF_ERROR(kernels::PrepareAttentionKernels());
    prefill_block_ = kernels::AttentionPrefillBlockOf(H, KV, hd, prefill_tile_);
  }
  CUDA_MESSAGE_RETURN_IF_ERROR(gemm_.Init(kGemmWorkspaceBytes));
  gemm_.set_tune_cold(options_.gemm_tune_cold);
  if (!attention) {
    cudnn_attention_status_ = "no attention layers";
  } else if (options_.cudnn_attention_min_tokens == 0) {
    cudnn_attention_status_ = "off (cudnn_attention_min_tokens 0)";
  } else {
    // A pass holds at most max_tokens_ sequences (one token each at the least).
    cudnn_attention_status_ =
        cudnn_attention_.Init(H, KV, hd, c.attention_window, AttentionScale(hd), max_tokens_,
                              kCudnnAttentionWorkspaceBytes);
  }

  const int64_t N = max_tokens_;
  const int64_t projection_width =
      std::max({FusionRows(c, Fusion::kGateUp), recurrent ? FusionRows(c, Fusion::kXY) : 0,
                attention ? FusionRows(c, Fusion::kQKV) : 0});
  const int64_t activation_width =
      std::max({int64_t{m}, recurrent ? int64_t{L} : 0, attention ? int64_t{H} * hd : 0});
  ASSIGN_OR_RETURN(ws_.residual, arena_.Allocate<float>(N * d));
  // A decode pass's split-K parts (LinearToBlockOut: cuBLASLt's up to split_k_max_rows rows, the
  // prefetch GEMM's up to prefetch_gemm_max_rows) as well as a whole pass's rows.
  const int64_t max_parts =
      options_.split_k_parts > 0 ? options_.split_k_parts : CudaBackendOptions::kTunedSplitKParts;
  block_out_rows_ =
      std::max<int64_t>({N, max_parts * std::min<int64_t>(N, options_.split_k_max_rows),
                         options_.prefetch_gemm_split_k_parts *
                             std::min<int64_t>(N, options_.prefetch_gemm_max_rows)});
  ASSIGN_OR_RETURN(ws_.block_out, arena_.Allocate<float>(block_out_rows_ * d));
  ASSIGN_OR_RETURN(ws_.normed, arena_.Allocate<bf16_t>(N * d));
  ASSIGN_OR_RETURN(ws_.projection, arena_.Allocate<float>(N * projection_width));
  ASSIGN_OR_RETURN(ws_.activation, arena_.Allocate<bf16_t>(N * activation_width));
  if (recurrent) {
    ASSIGN_OR_RETURN(ws_.conv_out, arena_.Allocate<float>(N * L));
    ASSIGN_OR_RETURN(ws_.conv_out_half, arena_.Allocate<uint16_t>(N * L));
    ASSIGN_OR_RETURN(ws_.gates, arena_.Allocate<float>(N * 2 * L));
    // One per (block of tokens, head) of the fused decode kernel, whose batches stay below
    // rglru_gate_gemm_min_batch: enough for blocks of one token there, of eight beyond.
    ws_.tail_counter_capacity = static_cast<int>(
        std::max<int64_t>((N + 7) / 8, std::min<int64_t>(N, options_.rglru_gate_gemm_min_batch)) *
        H);
    ASSIGN_OR_RETURN(ws_.tail_counters, arena_.Allocate<unsigned>(ws_.tail_counter_capacity));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ws_.tail_counters, 0,
                                         sizeof(unsigned) * ws_.tail_counter_capacity, stream_));
  }
  if (attention) {
    ASSIGN_OR_RETURN(ws_.q, arena_.Allocate<bf16_t>(N * H * hd));
    ASSIGN_OR_RETURN(ws_.k, arena_.Allocate<bf16_t>(N * KV * hd));
    ASSIGN_OR_RETURN(ws_.v, arena_.Allocate<bf16_t>(N * KV * hd));
    // Partial results of the largest split pass's (token, head, split) triples: a decode pass, or
    // a prefill pass of fewer tiles than a wave (tiles x splits <= split_tokens_ / KV, each tile
    // at most prefill_tile_ tokens).
    int64_t partials = 0;
    for (int n = 1; n <= options_.max_decode_batch; ++n) {
      partials = std::max(partials, int64_t{n} * H * KeySplits(n));
    }
    if (options_.prefill_attention_key_splits) {
      partials = std::max(partials, int64_t{H} * prefill_tile_ * (split_tokens_ / KV));
    }
    max_split_partials_ = partials;
    ASSIGN_OR_RETURN(ws_.split_o, arena_.Allocate<float>(partials * hd));
    ASSIGN_OR_RETURN(ws_.split_ml, arena_.Allocate<float>(partials * 2));
    const int64_t tickets = partials / (2 * H) * KV;  // a cut tile's tokens span partials / 2H
    ASSIGN_OR_RETURN(ws_.tile_counters, arena_.Allocate<unsigned>(std::max<int64_t>(tickets, 1)));
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        ws_.tile_counters, 0, sizeof(unsigned) * std::max<int64_t>(tickets, 1), stream_));
  }
  const int64_t rows = max_rows_;
  ASSIGN_OR_RETURN(ws_.head_in, arena_.Allocate<bf16_t>(rows * d));
  ASSIGN_OR_RETURN(ws_.logits, arena_.Allocate<float>(rows * c.vocab_size));
  ASSIGN_OR_RETURN(ws_.sampled, arena_.Allocate<int32_t>(rows));
  ASSIGN_OR_RETURN(ws_.argmax_scratch, arena_.Allocate<int32_t>(rows * kernels::kArgMaxParts * 3));
  ASSIGN_OR_RETURN(ws_.sample_params, arena_.Allocate<kernels::SampleRowParams>(rows));
  ASSIGN_OR_RETURN(ws_.sample_context, arena_.Allocate<int32_t>(kSampleContextCapacity));
  ASSIGN_OR_RETURN(ws_.sample_bias,
                   arena_.Allocate<kernels::LogitBias>(rows * kMaxDeviceLogitBias));
  ASSIGN_OR_RETURN(ws_.score_targets, arena_.Allocate<int32_t>(rows));
  ASSIGN_OR_RETURN(ws_.score_logprobs, arena_.Allocate<float>(rows));
  ASSIGN_OR_RETURN(ws_.score_ranks, arena_.Allocate<int32_t>(rows));
  ASSIGN_OR_RETURN(ws_.score_top_ids,
                   arena_.Allocate<int32_t>(rows * kernels::kMaxDeviceTopLogprobs));
  ASSIGN_OR_RETURN(ws_.score_top_logprobs,
                   arena_.Allocate<float>(rows * kernels::kMaxDeviceTopLogprobs));
  RETURN_IF_ERROR(meta_.Init(max_tokens_));
  CUDA_RETURN_IF_ERROR(
      cudaMallocHost(&sample_params_host_, rows * sizeof(kernels::SampleRowParams)));
  CUDA_RETURN_IF_ERROR(
      cudaMallocHost(&sample_context_host_, int64_t{kSampleContextCapacity} * sizeof(int32_t)));
  CUDA_RETURN_IF_ERROR(
      cudaMallocHost(&sample_bias_host_, rows * kMaxDeviceLogitBias * sizeof(kernels::LogitBias)));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Upload(const loader::Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(weights_, DeviceWeights::Upload(checkpoint, stream_, options_.fp8_weights));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::RandomWeights(uint64_t seed) {
  ASSIGN_OR_RETURN(weights_, DeviceWeights::Random(config_, seed, stream_, options_.fp8_weights));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::AllocateSlots() {
  if (options_.num_slots == 0) {
    // What every allocation so far (weights, workspaces, cuBLASLt's) left is measured, not
    // estimated: the same arithmetic then holds for bf16 and FP8 weights, and FP8's smaller
    // weights become slots.
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    ASSIGN_OR_RETURN(options_.num_slots,
                     SlotsForDeviceMemory({.free_bytes = static_cast<int64_t>(free_bytes),
                                           .total_bytes = static_cast<int64_t>(total_bytes),
                                           .fraction = options_.device_memory_fraction,
                                           .reserve_bytes = kSlotBudgetReserveBytes,
                                           .slot_bytes = layout_.slot_bytes(),
                                           .extra_slots = 1,
                                           .max_slots = options_.max_slots}));
  }
  // One slot more than the engine sees: the scratch slot that pads decode buckets.
  ASSIGN_OR_RETURN(void* pool, arena_.Allocate(layout_.slot_bytes() * (options_.num_slots + 1)));
  pool_ = static_cast<char*>(pool);
  next_position_.assign(options_.num_slots, 0);
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::AllocateFp8Workspace() {
  if (!weights_->fp8_projections()) return absl::OkStatus();
  if (options_.fp8_activations) {
    const loader::ModelConfig& c = config_;
    const int64_t widest_input =
        std::max({int64_t{c.hidden_size}, int64_t{c.mlp_width}, int64_t{c.lru_width},
                  int64_t{c.num_heads} * c.head_dim});
    ASSIGN_OR_RETURN(ws_.activation_codes, arena_.Allocate<uint8_t>(max_tokens_ * widest_input));
    ASSIGN_OR_RETURN(ws_.activation_scales, arena_.Allocate<float>(max_tokens_));
    return absl::OkStatus();
  }
  if (max_tokens_ <= kernels::kGemvMaxM) return absl::OkStatus();
  ASSIGN_OR_RETURN(ws_.expanded_weights,
                   arena_.Allocate<bf16_t>(weights_->largest_projection_elements()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::RecurrentBlock(int l, int n, bool decode_only,
                                               bool input_quantized) {
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, L = c.lru_width, H = c.num_heads, B = L / H, K = c.conv1d_width;
  const int r = block_index_[l];
  const DeviceWeights& w = *weights_;
  const std::string at = absl::StrCat("layer ", l, " recurrent ");
  kernels::RgLruParams p;
  RETURN_IF_ERROR(Linear(at + "x|y projection", ws_.normed, w.fused(l, Fusion::kXY), ws_.projection,
                         n, 2 * L, d, &p.xy_scales, input_quantized));
  p.xy = ws_.projection;
  p.bx = w.f32(l, T_::kLinearXBias);
  p.by = w.f32(l, T_::kLinearYBias);
  p.conv_w = w.f32(l, T_::kConvTaps);
  p.conv_b = w.f32(l, T_::kConvBias);
  p.gx_w = w.bf16(l, T_::kInputGate);
  p.gx_b = w.f32(l, T_::kInputGateBias);
  p.ga_w = w.bf16(l, T_::kRecurrentGate);
  p.ga_b = w.f32(l, T_::kRecurrentGateBias);
  p.a_param = w.f32(l, T_::kLruParam);
  p.layout = meta_.layout();
  p.state = {pool_, layout_.slot_bytes()};
  p.lru_offset = layout_.lru_offset(r);
  p.conv_offset = layout_.conv_offset(r);
  p.n = n;
  p.num_entries = meta_.num_entries();
  p.L = L;
  p.H = H;
  p.K = K;
  p.out = ws_.activation;
  p.c = ws_.conv_out;
  p.c_half = ws_.conv_out_half;
  p.gates = ws_.gates;
  p.tail_counters = ws_.tail_counters;
  p.tail_counter_capacity = ws_.tail_counter_capacity;
  p.stage_before_wait = options_.stage_rglru_decode;
  p.tokens_per_block = options_.rglru_decode_tokens_per_block;
  const double state_bytes = double(n) * (2.0 * L * 4 + 2.0 * (K - 1) * L * 2);
  const bool fused_decode = decode_only && n < options_.rglru_gate_gemm_min_batch;
  if (fused_decode) {
    Trace(at + "RG-LRU decode (conv, gates, scan, tail shift)", "RgLruGate",
          double(n) * (2 * L * 4 + L * 2) + 2.0 * H * B * B * 2 + state_bytes, 4.0 * n * L * B);
    ENQUEUE(kernels::LaunchRgLruDecode(p, stream_));
    return LinearToBlockOut(at + "output projection", ws_.activation,
                            w.projection(l, T_::kLinearOut), n, L);
  }
  Trace(at + "conv", "Conv", double(n) * (L * 4 + L * 4 + L * 2), 2.0 * n * L * K);
  ENQUEUE(kernels::LaunchRgLruConv(p, stream_));
  Trace(at + "gate GEMM (batched, half)", "gemm",
        double(n) * L * 2 + 2.0 * H * B * 2 * B * 2 + double(n) * 2 * L * 4, 4.0 * n * L * B);
  ENQUEUE_GEMM(gemm_.RunBatched(ws_.conv_out_half, L, B, w.packed_gates(l), int64_t{2} * B * B,
                                ws_.gates, 2 * L, 2 * B, n, 2 * B, B, H, /*fp16=*/true, stream_));
  if (decode_only) {
    Trace(at + "RG-LRU decode finish (gates, step, tail)", "DecodeFinish",
          double(n) * (2 * L * 4 + L * 4 + 2 * L * 4 + L * 2) + state_bytes, 0);
    ENQUEUE(kernels::LaunchRgLruDecodeFinish(p, stream_));
  } else {
    Trace(at + "gate math", "GateMath", double(n) * (2 * L * 4 * 2 + L * 4), 0);
    ENQUEUE(kernels::LaunchRgLruGateMath(p, stream_));
    Trace(at + "scan", "Scan", double(n) * (2 * L * 4 + L * 4 + L * 2) + state_bytes, 2.0 * n * L);
    ENQUEUE(kernels::LaunchRgLruScan(p, stream_));
  }
  return LinearToBlockOut(at + "output projection", ws_.activation, w.projection(l, T_::kLinearOut),
                          n, L);
}

absl::Status CudaBackend::Impl::AttentionBlock(int l, int n, bool decode_only,
                                               bool input_quantized) {
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  const int W = c.attention_window;
  const int a = block_index_[l];
  const DeviceWeights& w = *weights_;
  const std::string at = absl::StrCat("layer ", l, " attention ");
  kernels::AttentionParams p;
  RETURN_IF_ERROR(Linear(at + "q|k|v projection", ws_.normed, w.fused(l, Fusion::kQKV),
                         ws_.projection, n, (H + 2 * KV) * hd, d, &p.qkv_scales, input_quantized));
  p.qkv = ws_.projection;
  p.q = ws_.q;
  p.k = ws_.k;
  p.v = ws_.v;
  p.layout = meta_.layout();
  p.tiles = meta_.tiles();
  p.num_tiles = meta_.num_tiles();
  p.state = {pool_, layout_.slot_bytes()};
  p.k_offset = layout_.key_offset(a);
  p.v_offset = layout_.value_offset(a);
  p.n = n;
  p.H = H;
  p.KV = KV;
  p.hd = hd;
  p.W = W;
  p.rotary = c.rotary_dim();
  p.theta = c.rope_theta;
  p.scale = AttentionScale(hd);
  p.split_tiles = !decode_only && meta_.split_tiles();
  p.splits = decode_only ? KeySplits(n) : p.split_tiles ? 1 : PrefillKeySplits();
  p.partial_first_token = p.split_tiles ? meta_.split_first_token() : 0;
  p.tile_counters = ws_.tile_counters;
  p.part_o = ws_.split_o;
  p.part_ml = ws_.split_ml;
  p.out = ws_.activation;
  p.decode_writes_ring = decode_only && options_.fuse_decode_ring_write;
  Trace(at + "RoPE", "Rope", double(n) * (H + 2 * KV) * hd * (4 + 2), 0);
  ENQUEUE(kernels::LaunchRope(p, stream_));
  // A fresh prefill pass may run cuDNN's kernel instead (SelectCudnnAttention): the same math and
  // bytes, no side launches (its pass writes the ring below, as every prefill pass does).
  const char* family = cudnn_pass_ ? "CudnnAttention" : "Attention";
  const bool attention_ablated = Ablated(family);
  const int max_tile_tokens = decode_only ? 1 : prefill_tile_;
  const kernels::AttentionSideLaunches side =
      cudnn_pass_ ? kernels::AttentionSideLaunches{}
                  : kernels::AttentionSideLaunchesOf(p, max_tile_tokens);
  const double ring_bytes = double(std::min(n, W)) * KV * hd * 2 * 2 * 2;
  if (trace_ != nullptr && !attention_ablated) {
    // Each query at position p reads keys max(0, p - W) .. p: K and V rows once per kv head for
    // the whole group (the kernels share them across the group's query heads).
    double keys = 0;
    for (const kernels::StepEntryRecord& e : meta_.host_entries()) {
      for (int k = 0; k < e.len; ++k) keys += std::min(e.pos0 + k, W) + 1;
    }
    // Bytes that must move: decode, each token's own keys (every sequence has its own ring);
    // prefill, q, k, v and the output once, plus the ring rows before each entry's run.
    double kv_rows = keys;
    if (!decode_only) {
      kv_rows = n;
      for (const kernels::StepEntryRecord& e : meta_.host_entries()) kv_rows += std::min(e.pos0, W);
    }
    // A decode step's ring write happens inside the attention launch unless a side launch does it.
    const double ring_in_kernel = p.decode_writes_ring && !side.ring_write ? ring_bytes : 0;
    Trace(at + (decode_only     ? "decode attention"
                : cudnn_pass_   ? "prefill attention (cuDNN)"
                : p.split_tiles ? "prefill attention, long tiles cut"
                                : "prefill attention"),
          family, kv_rows * KV * hd * 2 * 2 + double(n) * H * hd * 2 * 2 + ring_in_kernel,
          4.0 * keys * H * hd);
    if (side.combine) {
      Trace(at + "split combine", "Combine", double(n) * H * p.splits * (hd + 2) * 4, 0);
    }
    if (side.ring_write) Trace(at + "ring write", "RingWrite", ring_bytes, 0);
  }
  if (!attention_ablated && cudnn_pass_) {
    CUDA_MESSAGE_RETURN_IF_ERROR(cudnn_attention_.Run(p.q, p.k, p.v, p.out, stream_));
  } else if (!attention_ablated) {  // with its side launches
    CUDA_RETURN_IF_ERROR(kernels::LaunchAttention(p, max_tile_tokens, stream_));
  }
  if (!p.decode_writes_ring) {
    Trace(at + "ring write", "RingWrite", ring_bytes, 0);
    ENQUEUE(kernels::LaunchRingWrite(p, stream_));
  }
  return LinearToBlockOut(at + "output projection", ws_.activation, w.projection(l, T_::kOProj), n,
                          H * hd);
}

absl::Status CudaBackend::Impl::EnqueueForward(int n, bool decode_only) {
  cudnn_pass_ = !decode_only && SelectCudnnAttention(n);
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, m = c.mlp_width;
  const DeviceWeights& w = *weights_;
  Trace("embedding", "Embed", double(n) * d * (2 + 4), 0);
  ENQUEUE(kernels::LaunchEmbed(w.embedding(), meta_.tokens(), n, d, EmbeddingScale(c), ws_.residual,
                               stream_));
  const float* pending_bias = nullptr;  // the bias of block_out, added by the next norm
  bool have_block_out = false;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string at = absl::StrCat("layer ", l, " ");
    const bool recurrent = c.block_types[l] == BlockType::kRecurrent;
    const bool quantize_temporal =
        QuantizesInputOf(w.fused(l, recurrent ? Fusion::kXY : Fusion::kQKV), n);
    RETURN_IF_ERROR(AddRmsNorm(at + "residual add + temporal norm", have_block_out, pending_bias,
                               w.f32(l, T_::kTemporalNorm), n, quantize_temporal));
    if (recurrent) {
      RETURN_IF_ERROR(RecurrentBlock(l, n, decode_only, quantize_temporal));
      pending_bias = w.f32(l, T_::kLinearOutBias);
    } else {
      RETURN_IF_ERROR(AttentionBlock(l, n, decode_only, quantize_temporal));
      pending_bias = w.f32(l, T_::kOProjBias);
    }
    const bool quantize_channel = QuantizesInputOf(w.fused(l, Fusion::kGateUp), n);
    RETURN_IF_ERROR(AddRmsNorm(at + "residual add + channel norm", true, pending_bias,
                               w.f32(l, T_::kChannelNorm), n, quantize_channel));
    const ProjectionWeights gate_up = w.fused(l, Fusion::kGateUp);
    if (GateGemmTakesGeGlu(gate_up, l, n)) {
      // Rows [0, m) of the fused matrix are the gate's, [m, 2m) the up projection's.
      const bf16_t* gate_w = gate_up.bf16();
      const bf16_t* up_w = gate_w + int64_t{m} * d;
      const auto config = static_cast<kernels::GemmGeGluConfig>(options_.gemm_geglu_config);
      if (options_.gemm_geglu_up_bf16) {
        bf16_t* up = reinterpret_cast<bf16_t*>(ws_.projection);
        Trace(at + "mlp up projection (bf16 out)", "gemm",
              2.0 * m * d + 2.0 * n * d + 2.0 * double(n) * m, 2.0 * n * m * d);
        ENQUEUE_GEMM(gemm_.RunBf16Out(ws_.normed, up_w, up, n, m, d, stream_));
        Trace(at + "mlp gate projection + GeGLU", "GemmGeGlu",
              2.0 * m * d + 2.0 * n * d + double(n) * m * (2 + 2), 2.0 * n * m * d);
        ENQUEUE(kernels::LaunchGemmGeGlu(ws_.normed, gate_w, w.f32(l, T_::kGateBias), up,
                                         w.f32(l, T_::kUpBias), n, m, d, ws_.activation, stream_,
                                         config));
      } else {
        RETURN_IF_ERROR(Linear(at + "mlp up projection", ws_.normed,
                               ProjectionWeights{up_w, nullptr}, ws_.projection, n, m, d));
        Trace(at + "mlp gate projection + GeGLU", "GemmGeGlu",
              2.0 * m * d + 2.0 * n * d + double(n) * m * (4 + 2), 2.0 * n * m * d);
        ENQUEUE(kernels::LaunchGemmGeGlu(ws_.normed, gate_w, w.f32(l, T_::kGateBias),
                                         ws_.projection, w.f32(l, T_::kUpBias), n, m, d,
                                         ws_.activation, stream_, config));
      }
    } else {
      kernels::InputScales gate_up_scales;
      RETURN_IF_ERROR(Linear(at + "mlp gate|up projection", ws_.normed, gate_up, ws_.projection, n,
                             2 * m, d, &gate_up_scales, quantize_channel));
      Trace(at + "GeGLU", "GeGlu", double(n) * m * (2 * 4 + 2), 0);
      ENQUEUE(kernels::LaunchGeGlu(ws_.projection, gate_up_scales, w.f32(l, T_::kGateBias),
                                   w.f32(l, T_::kUpBias), n, m, ws_.activation, stream_));
    }
    RETURN_IF_ERROR(LinearToBlockOut(at + "mlp down projection", ws_.activation,
                                     w.projection(l, T_::kDownProj), n, m));
    pending_bias = w.f32(l, T_::kDownBias);
    have_block_out = true;
  }
  // Last residual add; the head normalises only the rows it needs.
  return AddRmsNorm("final residual add", true, pending_bias, w.final_norm(), n);
}

absl::Status CudaBackend::Impl::EnqueueHead(int row0, int nrows, bool argmax) {
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, V = c.vocab_size;
  Trace("head: final norm of the logit rows", "AddRmsNorm", double(nrows) * d * 6, 0);
  ENQUEUE(kernels::LaunchAddRmsNorm(ws_.residual, nullptr, kernels::InputScales{}, nullptr,
                                    weights_->final_norm(), meta_.rows() + row0, nrows, d,
                                    c.rms_norm_eps, ws_.head_in, stream_, {}, 1,
                                    options_.norm_vectors_per_thread));
  RETURN_IF_ERROR(Linear("head: output projection", ws_.head_in,
                         ProjectionWeights{weights_->output_projection(), nullptr}, ws_.logits,
                         nrows, V, d));
  if (argmax) {
    Trace("head: soft-cap + greedy argmax", "ArgMax",
          double(nrows) * V * (meta_.logits_read_after_head() ? 8 : 4), 0);
    ENQUEUE(kernels::LaunchSoftCapArgMax(ws_.logits, nrows, V, c.logits_soft_cap, ws_.sampled,
                                         ws_.argmax_scratch, stream_, meta_.write_capped_logits()));
    return absl::OkStatus();
  }
  Trace("head: soft-cap", "SoftCap", double(nrows) * V * 8, 0);
  ENQUEUE(kernels::LaunchSoftCap(ws_.logits, int64_t{nrows} * V, c.logits_soft_cap, stream_));
  return absl::OkStatus();
}

void CudaBackend::Impl::PackDecodeBucket(absl::Span<const StepEntry> entries, int bucket) {
  const int scratch = options_.num_slots;
  const int32_t pad_token = 0;
  meta_.Begin(bucket);
  for (int i = 0; i < bucket; ++i) {
    const bool real = i < static_cast<int>(entries.size());
    if (real) {
      meta_.AddPiece(entries[i].slot, entries[i].position, entries[i].tokens, 1);
    } else {
      meta_.AddPiece(scratch, 1, absl::MakeConstSpan(&pad_token, 1), 1);
    }
    meta_.AddRow(i);
  }
}

absl::Status CudaBackend::Impl::CaptureGraphs() {
  if (!use_graphs_) return absl::OkStatus();
  struct AutotuneOff {
    kernels::Gemm& gemm;
    ~AutotuneOff() { gemm.set_autotune(false); }
  } autotune_off{gemm_};
  auto prepare = [&](int bucket) -> absl::Status {
    PackDecodeBucket({}, bucket);
    RETURN_IF_ERROR(meta_.Upload(stream_));
    // Warm-up run outside capture: loads modules and times the GEMM algorithms of the bucket.
    gemm_.set_autotune(options_.autotune_gemms);
    RETURN_IF_ERROR(EnqueueForward(bucket, true));
    RETURN_IF_ERROR(EnqueueHead(0, bucket, true));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    gemm_.set_autotune(false);
    return absl::OkStatus();
  };
  auto enqueue = [&](int bucket) -> absl::Status {
    RETURN_IF_ERROR(EnqueueForward(bucket, true));
    return EnqueueHead(0, bucket, true);
  };
  RETURN_IF_ERROR(graphs_.Capture(options_.max_decode_batch, stream_, prepare, enqueue));
  // The warm-ups wrote the scratch slot: start it clean.
  CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(SlotBytes(options_.num_slots), 0, layout_.slot_bytes(), stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::UploadSampling(absl::Span<const SampleRequest> requests, int row0,
                                               int n) {
  int context = 0, bias = 0;  // rows x kMaxDeviceLogitBias entries fit by construction
  for (int i = 0; i < n; ++i) {
    const SampleRequest& r = requests[row0 + i];
    kernels::SampleRowParams& s = sample_params_host_[i];
    s.temperature = r.params.temperature;
    s.top_k = r.params.top_k;
    s.top_p = r.params.top_p;
    s.min_p = r.params.min_p;
    s.repetition_penalty = r.params.repetition_penalty;
    s.seed_lo = static_cast<uint32_t>(r.params.seed);
    s.seed_hi = static_cast<uint32_t>(r.params.seed >> 32);
    s.step_lo = static_cast<uint32_t>(r.step);
    s.step_hi = static_cast<uint32_t>(r.step >> 32);
    s.context_start = context;
    const int len = r.params.repetition_penalty != 1.0f ? static_cast<int>(r.context.size()) : 0;
    if (context + len > kSampleContextCapacity) {
      return absl::ResourceExhaustedError("sampling contexts exceed the GPU context buffer");
    }
    std::memcpy(sample_context_host_ + context, r.context.data(), size_t(len) * 4);
    s.context_len = len;
    context += len;
    s.bias_start = bias;
    s.bias_len = static_cast<int>(r.params.logit_bias.size());
    for (const auto& [id, value] : r.params.logit_bias) sample_bias_host_[bias++] = {id, value};
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws_.sample_params, sample_params_host_,
                                       n * sizeof(kernels::SampleRowParams), cudaMemcpyHostToDevice,
                                       stream_));
  if (context > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws_.sample_context, sample_context_host_,
                                         size_t(context) * 4, cudaMemcpyHostToDevice, stream_));
  }
  if (bias > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws_.sample_bias, sample_bias_host_,
                                         size_t(bias) * sizeof(kernels::LogitBias),
                                         cudaMemcpyHostToDevice, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Consume(absl::Span<const SampleRequest> requests, bool all_greedy,
                                        int row0, int n, bool argmax_done, float* logits_out,
                                        int32_t* tokens_out) {
  if (scoring_ != nullptr) return ConsumeScored(row0, n, logits_out);
  const int V = config_.vocab_size;
  if (tokens_out != nullptr) {
    if (!all_greedy) {
      RETURN_IF_ERROR(UploadSampling(requests, row0, n));
      Trace("head: sampling", "Sample", double(n) * V * 4, 0);
      CUDA_RETURN_IF_ERROR(kernels::LaunchSample(ws_.logits, n, V, ws_.sample_params,
                                                 ws_.sample_context, ws_.sample_bias, ws_.sampled,
                                                 stream_));
    } else if (!argmax_done) {
      Trace("head: greedy argmax", "ArgMax", double(n) * V * 4, 0);
      CUDA_RETURN_IF_ERROR(
          kernels::LaunchArgMax(ws_.logits, n, V, ws_.sampled, ws_.argmax_scratch, stream_));
    }
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens_out + row0, ws_.sampled, size_t(n) * 4,
                                         cudaMemcpyDeviceToHost, stream_));
  } else {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits_out + int64_t{row0} * V, ws_.logits,
                                         size_t(n) * V * 4, cudaMemcpyDeviceToHost, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::ConsumeScored(int row0, int n, float* logits_out) {
  const int V = config_.vocab_size;
  PromptScoring& s = *scoring_;
  const int k = s.top_k;
  // Pageable copies: the host waits for each, so the vectors can be reused by the next chunk.
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws_.score_targets, s.target.data() + row0, size_t(n) * 4,
                                       cudaMemcpyHostToDevice, stream_));
  Trace("head: prompt log-probabilities", "ScoreRows", double(n) * V * 4 * (1 + std::max(1, k)), 0);
  CUDA_RETURN_IF_ERROR(kernels::LaunchScoreRows(
      ws_.logits, n, V, ws_.score_targets, k, ws_.score_logprobs, ws_.score_ranks,
      ws_.score_top_ids, ws_.score_top_logprobs, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.logprobs.data() + row0, ws_.score_logprobs, size_t(n) * 4,
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.ranks.data() + row0, ws_.score_ranks, size_t(n) * 4,
                                       cudaMemcpyDeviceToHost, stream_));
  if (k > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.top_ids.data() + int64_t{row0} * k, ws_.score_top_ids,
                                         size_t(n) * k * 4, cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.top_logprobs.data() + int64_t{row0} * k,
                                         ws_.score_top_logprobs, size_t(n) * k * 4,
                                         cudaMemcpyDeviceToHost, stream_));
  }
  for (int r = 0; r < n; ++r) {
    const int64_t dst = s.host_row[row0 + r];
    if (dst < 0) continue;
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits_out + dst * V, ws_.logits + int64_t{r} * V,
                                         size_t(V) * 4, cudaMemcpyDeviceToHost, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::RunDecodeGraph(absl::Span<const StepEntry> entries,
                                               absl::Span<const SampleRequest> requests,
                                               bool all_greedy, float* logits_out,
                                               int32_t* tokens_out) {
  const int E = static_cast<int>(entries.size());
  const int bucket = graphs_.BucketFor(E);
  PackDecodeBucket(entries, bucket);
  meta_.SetLogitsReadAfterHead(!GreedyTokensOnly(all_greedy, tokens_out));
  RETURN_IF_ERROR(meta_.Upload(stream_));
  RETURN_IF_ERROR(graphs_.Launch(bucket, stream_));
  // Rows of the graph are entries; copy out those that asked for logits.
  bool all_rows = true;
  for (const StepEntry& e : entries) all_rows &= e.logits != LogitsRequest::kNone;
  if (all_rows) return Consume(requests, all_greedy, 0, E, true, logits_out, tokens_out);
  // Compact the asked rows with a gather head (rare: decode tokens without logits).
  meta_.ClearRows();
  for (int i = 0; i < E; ++i) {
    if (entries[i].logits != LogitsRequest::kNone) meta_.AddRow(i);
  }
  const int rows = meta_.num_rows();
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(meta_.UploadRows(stream_));
  const bool argmax = tokens_out != nullptr && all_greedy;  // fused with the soft-cap
  RETURN_IF_ERROR(EnqueueHead(0, rows, argmax));
  return Consume(requests, all_greedy, 0, rows, argmax, logits_out, tokens_out);
}

absl::Status CudaBackend::Impl::RunPasses(absl::Span<const StepEntry> entries,
                                          absl::Span<const SampleRequest> requests, bool all_greedy,
                                          float* logits_out, int32_t* tokens_out) {
  // Passes of at most max_tokens_ tokens; an entry may be cut between passes.
  size_t next_entry = 0;
  int offset = 0;     // tokens of entries[next_entry] already done
  int rows_done = 0;  // step rows consumed so far
  while (next_entry < entries.size()) {
    meta_.Begin();
    int n = 0;
    bool pure_decode = true;
    while (next_entry < entries.size() && n < max_tokens_) {
      const StepEntry& e = entries[next_entry];
      const int len = static_cast<int>(e.tokens.size());
      const int take = std::min(len - offset, max_tokens_ - n);
      const bool last_piece = offset + take == len;
      const int start = n;
      meta_.AddPiece(e.slot, e.position + offset, e.tokens.subspan(offset, take), prefill_tile_);
      pure_decode &= take == 1;
      for (int k = 0; k < take; ++k) {
        if (e.logits == LogitsRequest::kAll ||
            (last_piece && e.logits == LogitsRequest::kLast && k == take - 1)) {
          meta_.AddRow(start + k);
        }
      }
      n += take;
      if (last_piece) {
        ++next_entry;
        offset = 0;
      } else {
        offset += take;
      }
    }
    // A pass of one-token pieces runs the split-key decode kernels.
    if (pure_decode) {
      meta_.UseOneTokenTiles();
    } else if (config_.num_attention_layers() > 0) {
      SplitLongTiles();
    }
    meta_.SetLogitsReadAfterHead(!GreedyTokensOnly(all_greedy, tokens_out));
    RETURN_IF_ERROR(meta_.Upload(stream_));
    RETURN_IF_ERROR(EnqueueForward(n, pure_decode));
    const int rows = meta_.num_rows();
    const bool argmax = tokens_out != nullptr && all_greedy;  // fused with the soft-cap
    for (int r0 = 0; r0 < rows; r0 += max_rows_) {
      const int nr = std::min(max_rows_, rows - r0);
      RETURN_IF_ERROR(EnqueueHead(r0, nr, argmax));
      RETURN_IF_ERROR(
          Consume(requests, all_greedy, rows_done + r0, nr, argmax, logits_out, tokens_out));
      // The logits buffer is reused by the next chunk of rows: wait for the copy out.
      if (r0 + nr < rows) CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    }
    rows_done += rows;
    // The pinned metadata is rewritten by the next pass.
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Run(absl::Span<const StepEntry> entries, float* logits_out,
                                    absl::Span<const SampleRequest> requests, int32_t* tokens_out) {
  // Plain argmax only where nothing changes the logits first: a greedy row with a repetition
  // penalty or a logit bias goes through the sampling kernel (temperature 0 is its argmax).
  bool all_greedy = true;
  for (const SampleRequest& r : requests) {
    all_greedy &=
        r.params.greedy() && r.params.repetition_penalty == 1.0f && r.params.logit_bias.empty();
  }
  // Resets first (stream order puts them before the forward).
  for (const StepEntry& e : entries) {
    if (e.position == 0) {
      CUDA_RETURN_IF_ERROR(cudaMemsetAsync(SlotBytes(e.slot), 0, layout_.slot_bytes(), stream_));
    }
  }
  bool decode_only = static_cast<int>(entries.size()) <= options_.max_decode_batch;
  for (const StepEntry& e : entries) decode_only &= e.tokens.size() == 1;
  if (decode_only && use_graphs_ && !graphs_.empty() && trace_ == nullptr && scoring_ == nullptr) {
    RETURN_IF_ERROR(RunDecodeGraph(entries, requests, all_greedy, logits_out, tokens_out));
  } else {
    RETURN_IF_ERROR(RunPasses(entries, requests, all_greedy, logits_out, tokens_out));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  for (const StepEntry& e : entries) {
    next_position_[e.slot] = e.position + static_cast<int64_t>(e.tokens.size());
  }
  return absl::OkStatus();
}

// ---- CudaBackend ----

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const loader::Checkpoint& checkpoint, const CudaBackendOptions& options) {
  RETURN_IF_ERROR(CudaCanImplement(checkpoint.config()));
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Init(checkpoint.config(), options));
  RETURN_IF_ERROR(impl->Upload(checkpoint));
  RETURN_IF_ERROR(impl->AllocateFp8Workspace());
  RETURN_IF_ERROR(impl->AllocateSlots());
  RETURN_IF_ERROR(impl->CaptureGraphs());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::CreateRandom(
    const loader::ModelConfig& config, const CudaBackendOptions& options, uint64_t seed) {
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Init(config, options));
  RETURN_IF_ERROR(impl->RandomWeights(seed));
  RETURN_IF_ERROR(impl->AllocateFp8Workspace());
  RETURN_IF_ERROR(impl->AllocateSlots());
  RETURN_IF_ERROR(impl->CaptureGraphs());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

const loader::ModelConfig& CudaBackend::config() const { return impl_->config_; }
int CudaBackend::num_slots() const { return impl_->options_.num_slots; }
int64_t CudaBackend::state_bytes_per_sequence() const { return impl_->layout_.slot_bytes(); }
const StateLayout* CudaBackend::state_layout() const { return &impl_->layout_; }
int64_t CudaBackend::fixed_device_bytes() const {
  return impl_->arena_.bytes() - impl_->layout_.slot_bytes() * impl_->options_.num_slots +
         static_cast<int64_t>(kGemmWorkspaceBytes) +
         (impl_->cudnn_attention_.ready() ? int64_t{kCudnnAttentionWorkspaceBytes} : 0);
}
std::string CudaBackend::prefill_attention_library() const {
  const Impl& impl = *impl_;
  if (!impl.cudnn_attention_.ready())
    return "own kernel (cuDNN: " + impl.cudnn_attention_status_ + ")";
  const kernels::CudnnAttention& cudnn = impl.cudnn_attention_;
  return absl::StrCat("cuDNN ", cudnn.version(), " (fresh passes of at least ",
                      impl.options_.cudnn_attention_min_tokens, " tokens",
                      cudnn.plan_name().empty() ? "" : "; engine ", cudnn.plan_name(), "; ",
                      cudnn.graphs_built(), " graphs built in ",
                      absl::StrFormat("%.3f", cudnn.build_seconds()), " s), own kernel otherwise");
}
int64_t CudaBackend::weight_bytes() const { return impl_->weights_->bytes(); }
void CudaBackend::set_use_cuda_graphs(bool use) { impl_->use_graphs_ = use; }
void CudaBackend::set_launch_trace(std::vector<LaunchRecord>* trace) { impl_->trace_ = trace; }
bool CudaBackend::healthy() const { return impl_->healthy_; }

absl::Status CudaBackend::Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) {
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  RETURN_IF_ERROR(impl_->Validate(entries));
  const int64_t rows = LogitsRows(entries);
  const int V = impl_->config_.vocab_size;
  if (static_cast<int64_t>(logits.size()) != rows * V) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits holds ", logits.size(), " floats, the step returns ", rows, " rows of ", V));
  }
  absl::Status st = impl_->Run(entries, logits.data(), {}, nullptr);
  if (!st.ok() && st.code() == absl::StatusCode::kInternal) return impl_->Fail(st);
  return st;
}

absl::Status CudaBackend::StepSample(absl::Span<const StepEntry> entries,
                                     absl::Span<const SampleRequest> requests,
                                     absl::Span<int32_t> tokens) {
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  RETURN_IF_ERROR(impl_->Validate(entries));
  RETURN_IF_ERROR(ValidateSampleShapes(entries, requests.size(), tokens.size()));
  for (const SampleRequest& r : requests) {
    if (r.params.presence_penalty != 0.0f || r.params.frequency_penalty != 0.0f) {
      return absl::InvalidArgumentError("the GPU sampler has no presence/frequency penalty");
    }
    if (r.params.logit_bias.size() > static_cast<size_t>(kMaxDeviceLogitBias)) {
      return absl::InvalidArgumentError(absl::StrCat("the GPU sampler takes at most ",
                                                     kMaxDeviceLogitBias, " logit_bias entries"));
    }
  }
  absl::Status st = impl_->Run(entries, nullptr, requests, tokens.data());
  if (!st.ok() && st.code() == absl::StatusCode::kInternal) return impl_->Fail(st);
  return st;
}

absl::Status CudaBackend::StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                                 absl::Span<const PromptLogprobsRequest> requests,
                                                 int top_k, absl::Span<float> logits,
                                                 const PromptLogprobsOutput& out) {
  if (top_k > kernels::kMaxDeviceTopLogprobs) {
    return Backend::StepWithPromptLogprobs(entries, requests, top_k, logits, out);
  }
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  RETURN_IF_ERROR(impl_->Validate(entries));
  RETURN_IF_ERROR(ValidatePromptLogprobs(entries, requests, top_k, impl_->config_.vocab_size,
                                         logits.size(), out));

  // Scored entries produce every row on the device; each row is scored, copied out, or both.
  std::vector<StepEntry> all_rows(entries.begin(), entries.end());
  PromptScoring scoring;
  scoring.top_k = top_k;
  int64_t host_row = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const absl::Span<const int32_t> targets = requests[i].targets;
    if (!targets.empty()) all_rows[i].logits = LogitsRequest::kAll;
    const int64_t produced = LogitsRows(absl::MakeConstSpan(&all_rows[i], 1));
    const int64_t wanted = LogitsRows(entries.subspan(i, 1));
    for (int64_t k = 0; k < produced; ++k) {
      scoring.target.push_back(k < static_cast<int64_t>(targets.size()) ? targets[k] : -1);
      scoring.host_row.push_back(k >= produced - wanted ? host_row++ : -1);
    }
  }
  const size_t rows = scoring.target.size();
  scoring.logprobs.resize(rows);
  scoring.ranks.resize(rows);
  scoring.top_ids.resize(rows * top_k);
  scoring.top_logprobs.resize(rows * top_k);

  impl_->scoring_ = &scoring;
  absl::Status st = impl_->Run(all_rows, logits.data(), {}, nullptr);
  impl_->scoring_ = nullptr;
  if (!st.ok()) return st.code() == absl::StatusCode::kInternal ? impl_->Fail(st) : st;

  size_t scored = 0;
  for (size_t r = 0; r < rows; ++r) {
    if (scoring.target[r] < 0) continue;
    out.logprobs[scored] = scoring.logprobs[r];
    out.ranks[scored] = scoring.ranks[r];
    std::copy_n(scoring.top_ids.begin() + r * top_k, top_k, out.top_ids.begin() + scored * top_k);
    std::copy_n(scoring.top_logprobs.begin() + r * top_k, top_k,
                out.top_logprobs.begin() + scored * top_k);
    ++scored;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ResetSlot(int slot) {
  if (slot < 0 || slot >= num_slots()) return absl::InvalidArgumentError("slot out of range");
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  const cudaError_t err =
      cudaMemsetAsync(impl_->SlotBytes(slot), 0, impl_->layout_.slot_bytes(), impl_->stream_);
  if (err != cudaSuccess) return impl_->Fail(CudaError(err, __FILE__, __LINE__));
  RETURN_IF_ERROR(impl_->SyncOrFail());
  impl_->next_position_[slot] = 0;
  return absl::OkStatus();
}

int64_t CudaBackend::NextPosition(int slot) const {
  return slot >= 0 && slot < num_slots() ? impl_->next_position_[slot] : -1;
}

absl::Status CudaBackend::CopySlot(int from, int to) {
  if (from < 0 || from >= num_slots() || to < 0 || to >= num_slots()) {
    return absl::InvalidArgumentError("slot out of range");
  }
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  if (from == to) return absl::OkStatus();
  const cudaError_t err =
      cudaMemcpyAsync(impl_->SlotBytes(to), impl_->SlotBytes(from), impl_->layout_.slot_bytes(),
                      cudaMemcpyDeviceToDevice, impl_->stream_);
  if (err != cudaSuccess) return impl_->Fail(CudaError(err, __FILE__, __LINE__));
  RETURN_IF_ERROR(impl_->SyncOrFail());
  impl_->next_position_[to] = impl_->next_position_[from];
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CudaBackend::SnapshotSlot(int slot, absl::Span<uint8_t> out) {
  RETURN_IF_ERROR(
      ValidateSnapshotBuffer(slot, num_slots(), impl_->layout_.slot_bytes(), out.size()));
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  const cudaError_t err = cudaMemcpyAsync(out.data(), impl_->SlotBytes(slot), out.size(),
                                          cudaMemcpyDeviceToHost, impl_->stream_);
  if (err != cudaSuccess) return impl_->Fail(CudaError(err, __FILE__, __LINE__));
  RETURN_IF_ERROR(impl_->SyncOrFail());
  return impl_->next_position_[slot];
}

absl::StatusOr<Backend::SnapshotTicket> CudaBackend::StartSnapshot(int slot,
                                                                   absl::Span<uint8_t> out) {
  RETURN_IF_ERROR(
      ValidateSnapshotBuffer(slot, num_slots(), impl_->layout_.slot_bytes(), out.size()));
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  Impl& im = *impl_;
  absl::StatusOr<Impl::SnapshotStaging*> free = im.FreeStaging();
  if (!free.ok()) return im.Fail(free.status());
  if (*free == nullptr) {  // not even one staging buffer fits: copy in place
    ASSIGN_OR_RETURN(const int64_t position, SnapshotSlot(slot, out));
    return SnapshotTicket{.id = 0, .position = position};
  }
  Impl::SnapshotStaging* staging = *free;
  cudaError_t err = cudaMemcpyAsync(staging->bytes, im.SlotBytes(slot), out.size(),
                                    cudaMemcpyDeviceToDevice, im.stream_);
  if (err == cudaSuccess) err = cudaEventRecord(im.staged_, im.stream_);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(im.copy_stream_, im.staged_, 0);
  if (err == cudaSuccess) {
    err = cudaMemcpyAsync(out.data(), staging->bytes, out.size(), cudaMemcpyDeviceToHost,
                          im.copy_stream_);
  }
  if (err == cudaSuccess) err = cudaEventRecord(staging->copied, im.copy_stream_);
  if (err != cudaSuccess) return im.Fail(CudaError(err, __FILE__, __LINE__));
  staging->id = ++im.last_snapshot_id_;
  return SnapshotTicket{.id = staging->id, .position = im.next_position_[slot]};
}

absl::Status CudaBackend::FinishSnapshot(uint64_t id) {
  for (Impl::SnapshotStaging& s : impl_->stagings_) {
    if (s.id == id && id != 0) return impl_->WaitStaging(s);
  }
  // Already waited for (its staging buffer was reused only after its copy completed), unless a
  // device error came first.
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  return absl::OkStatus();
}

Backend::SnapshotMemory CudaBackend::AllocateSnapshotMemory(int64_t bytes) {
  void* p = nullptr;
  if (cudaMallocHost(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1))) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it and use pageable memory
    return Backend::AllocateSnapshotMemory(bytes);
  }
  return SnapshotMemory(static_cast<uint8_t*>(p), [](uint8_t* q) { cudaFreeHost(q); });
}

absl::Status CudaBackend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                      int64_t next_position) {
  RETURN_IF_ERROR(
      ValidateSnapshotBuffer(slot, num_slots(), impl_->layout_.slot_bytes(), snapshot.size()));
  if (next_position < 0 || next_position > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError("position out of range");
  }
  if (!impl_->healthy_)
    return absl::InternalError("CUDA backend is unhealthy after a device error");
  const cudaError_t err = cudaMemcpyAsync(impl_->SlotBytes(slot), snapshot.data(), snapshot.size(),
                                          cudaMemcpyHostToDevice, impl_->stream_);
  if (err != cudaSuccess) return impl_->Fail(CudaError(err, __FILE__, __LINE__));
  RETURN_IF_ERROR(impl_->SyncOrFail());
  impl_->next_position_[slot] = next_position;
  return absl::OkStatus();
}

absl::Status CudaBackend::SetNextPositionForBenchmark(int slot, int64_t position) {
  if (slot < 0 || slot >= num_slots() || position < 0) {
    return absl::InvalidArgumentError("slot or position out of range");
  }
  impl_->next_position_[slot] = position;
  return absl::OkStatus();
}

}  // namespace griffin::engine
