// The CUDA backend: the engine's Backend on one NVIDIA GPU (Hopper build: sm_90a + compute_90 PTX).
//
// Numerics (SPEC.md §8.4): weight matrices in bf16 (fp16/fp32 checkpoints converted at load; norm
// scales, biases, conv taps and a_param kept in float32, 0.1% of the bytes), GEMMs through cuBLASLt
// with float32 accumulation, a float32 residual stream, bf16 GEMM inputs, float32 RG-LRU state,
// float32 softmax, float32 logits. Conv tail and KV ring in bf16 (the reference's activation dtype).
//
// What it is made of (one file each): DeviceWeights (engine/cuda_weights.h: the model
// description's tensors on the device, streamed from the checkpoint), StepMetadata
// (engine/cuda_step_layout.h: the pass metadata every kernel reads), DecodeGraphs
// (engine/cuda_decode_graphs.h), the state pool laid out by StateLayout::ForCuda, and the forward
// pass in cuda_backend.cc, which follows CpuBackend::ForwardEntry layer by layer.
//
// Memory: every slot's state lives in one device pool allocated at creation:
// state_bytes_per_sequence() = StateLayout::ForCuda(config).slot_bytes() (for the 2B and 9B shapes
// exactly the state), plus one scratch slot that pads decode batches to their graph bucket.
// Weights, activation workspace (sized by max_tokens_per_step), logits buffer (max_decode_batch
// rows) and the cuBLASLt workspace are fixed costs reported by fixed_device_bytes(). No device
// allocation happens on the request path.
//
// Execution: Step() validates everything first (INVALID_ARGUMENT leaves every slot unchanged),
// resets slots whose entry starts at position 0, then runs the step as one or more forward passes of
// at most max_tokens_per_step tokens (an entry may be cut between passes: chunked prefill gives the
// same state). A step of single-token entries (pure decode) of at most max_decode_batch entries is
// one CUDA-graph replay of the bucket (1, 2, 4, ... max_decode_batch) it fits, padded with the
// scratch slot. Any CUDA error is INTERNAL, the slots in the step are undefined and the backend is
// marked unhealthy: every later call returns INTERNAL (the process should exit, STYLE.md rule 12).
// Not thread-safe: one engine thread owns it.
#ifndef GRIFFIN_ENGINE_CUDA_BACKEND_H_
#define GRIFFIN_ENGINE_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/sampler.h"
#include "loader/checkpoint.h"
#include "loader/model_config.h"

namespace griffin::engine {

struct CudaBackendOptions {
  // State slots, allocated up front after the weights and workspaces. 0: as many as
  // `device_memory_fraction` of the device's memory leaves for them (engine/slot_budget.h,
  // vLLM's --gpu-memory-utilization), at most `max_slots`; num_slots() then says how many.
  int num_slots = 1;
  double device_memory_fraction = 0.9;
  int max_slots = 256;
  int max_tokens_per_step = 4096;  // tokens per forward pass (activation workspace size)
  int max_decode_batch = 256;      // largest decode graph bucket; logits rows per head pass
  bool use_cuda_graphs = true;
  // Time up to 8 cuBLASLt algorithms per decode GEMM shape while capturing the graphs (off: the
  // heuristic's first choice; compute-sanitizer runs, where each launch costs milliseconds).
  bool autotune_gemms = true;
  // That tuning times each candidate with its weights out of L2, as a decode step meets them
  // (kernels::Gemm::set_tune_cold; decode batch 256 -0.13 to -0.19 ms, session 22).
  bool gemm_tune_cold = true;
  // Decode batches of at least this many tokens run the RG-LRU gates as one batched tensor-core
  // GEMM (conv, GEMM, an elementwise finish) instead of the fused CUDA-core kernel, which is right
  // at batch 1-8 and 22x its floor at 64-256 (bench/PROFILE.md, bench/NOTES.md). Decode graphs
  // exist for power-of-two batches (and max_decode_batch), so with max_decode_batch >= 16 a
  // batch of 9-15 runs the 16 graph and this path; the threshold matters only for a
  // max_decode_batch of 9-15, where the fused kernel at 12-15 (2.46-2.49 ms) loses to this path
  // at 16 (2.24-2.28; sessions 15-16). Not moved: this path at 12-15 tokens was not measured.
  int rglru_gate_gemm_min_batch = 16;
  // Below that batch, the fused RG-LRU decode kernel loads everything but the x|y projection's
  // output before waiting for it (kernels::RgLruParams::stage_before_wait; bit-identical). Off
  // only to compare in benchmarks.
  bool stage_rglru_decode = true;
  // Tokens each block of that kernel takes: 1, 2, 4 or 8; 0 lets the kernel choose
  // (kernels::DefaultRgLruDecodeTokensPerBlock). Bit-identical; for comparing in benchmarks.
  int rglru_decode_tokens_per_block = 0;
  // One-row (batch 1) projections narrower than 8192 outputs run the split-K GEMV kernel instead
  // of cuBLASLt (wide ones always do). Off only to compare the two in benchmarks.
  bool gemv_for_narrow_projections = true;
  // bf16 projections of up to this many rows (1-8) that the prefetch GEMM below does not take
  // (the head; every projection with prefetch_gemm_max_rows 0 or without that kernel) run the
  // GEMV kernel, the rest cuBLASLt. The
  // GEMV re-reads each activation row from L1 per weight vector (at 8 rows 2.6x its one-row
  // time in isolation, where cuBLASLt at 8 rows streams like the GEMV at one), but it takes part
  // in programmatic dependent launch and cuBLASLt's kernels do not: this is the switch that
  // measures what that is worth at batch 2-8 (bench/NOTES.md, session 13).
  int gemv_max_rows = 1;
  // Passes of 2 to this many tokens (decode batches) run the projections whose output the next
  // norm adds to the residual stream (the MLP's down projection, the recurrent and attention
  // output projections) as split-K GEMMs whose partial products that norm adds up
  // (kernels::Gemm::RunSplitK): 2560 outputs make only 20-40 of cuBLASLt's output tiles at these
  // batches for 132 SMs. bf16 weights on cuBLASLt only (not the GEMV, not FP8); 0 turns it off.
  int split_k_max_rows = 512;
  // Parts per split: 0 lets the decode GEMMs' tuning choose 1 or kTunedSplitKParts per shape
  // (kernels::Gemm::ChooseSplitK; without autotune_gemms nothing splits, and passes outside the
  // decode graphs split only where a decode bucket of their size chose to); n forces n parts (up to
  // kMaxSplitKParts) wherever K splits into n slices of whole 16-byte vectors
  // (kernels::Gemm::SplitKAllowed), for tests and benchmarks. Measured (kernels_bench, session 23,
  // 64-256 rows): the GEMMs take as long in 8 parts as in 2 while each part costs the norm a load
  // round, and the tuning's single cold launches cannot tell 2 from 5 parts apart, so it chooses
  // between none and two.
  int split_k_parts = 0;
  // bf16 projections of at most this many rows (decode batches, batch 1 included) run CUTLASS's
  // GEMM with weight prefetch (kernels/linear/gemm_prefetch.cuh) instead of the GEMV or cuBLASLt:
  // it starts while the kernel before it runs and loads its weights meanwhile, where a cuBLASLt
  // launch waits for its predecessor to end. The head (more than kPrefetchGemmMaxColumns outputs)
  // keeps the GEMV or cuBLASLt. Measured (bench/NOTES.md sessions 24-26): batch 1-64 -0.15 to
  // -0.25 ms a step; batch 128 slower than cuBLASLt whole (+0.14 ms) but faster with the split
  // below (2.51 against 2.62-2.64 ms, session 26); batch 256 slower either way (+0.1 to +0.6 ms),
  // hence 128. 0: off; where the build has none (no sm_90a, no CUTLASS example 63), the GEMV and
  // cuBLASLt as before.
  int prefetch_gemm_max_rows = 128;
  static constexpr int kPrefetchGemmMaxColumns = 32768;
  // The share of its K tiles loaded before the kernel after it may launch (negative: none), and
  // its activation rows per block (0: the kernel's choice) (kernels::PrefetchGemmParams).
  float prefetch_gemm_overlap = 0.5f;
  int prefetch_gemm_rows_per_block = 0;
  // The projections into the residual stream (down, the output projections) on the prefetch GEMM
  // split over K into at most this many parts that the next norm adds (kernels::
  // PrefetchGemmParams::k_parts): 2560 outputs are 40 blocks of 64 columns, each streaming up to
  // 1 MB of weights. Each projection takes the most parts up to this that its K splits into
  // slices of whole 16-byte vectors (kernels::Gemm::SplitKAllowed); 1: no split. Measured
  // (2B, bench/NOTES.md sessions 25-26): at most 3 (down in 3, the output projections in 2)
  // against none, session 26: batch 1 1.80-1.93 against 1.93-2.16 ms, 8 1.96-2.01 against
  // 2.01-2.10, 64 2.13 against 2.19-2.22; at most 2 and 4 in between or worse (session 25). 9B
  // batch 64 +0.04 ms (its 4096 outputs are 64 blocks already), batch 1 -0.03.
  int prefetch_gemm_split_k_parts = 3;
  // FP8 weights with fp8_activations and fuse_fp8_passes: the W8A8 projections of up to
  // prefetch_gemm_max_rows rows (at most kernels::kPrefetchGemmFp8MaxRows; above the W8A16 GEMV's
  // one row) on the same kernel with E4M3 operands, the output left unscaled for its reader
  // (kernels::LaunchPrefetchGemmFp8). Measured (session 26, two rounds): batch 2 1.60-1.61
  // against 1.83-1.88 ms, 8 1.82-1.83 against 1.97-2.00, 64 1.93-1.95 against 2.08-2.11.
  bool prefetch_gemm_fp8 = true;
  static constexpr int kTunedSplitKParts = 2;
  static constexpr int kMaxSplitKParts = 8;
  // Passes of at least this many tokens (prefill chunks) run the MLP's gate|up projection as two
  // GEMMs: up through cuBLASLt, then gate with GeGLU in its epilogue (kernels/linear/
  // gemm_geglu.cuh: CUTLASS on Hopper), which saves the GeGLU pass and half of the float32
  // gate|up round trip. bf16 weights only, and only where GemmGeGluSupported (an sm_90a build
  // with CUTLASS, on a compute capability 9.0 GPU); 0 turns it off. Measured (session 17,
  // against the fused cuBLASLt GEMM + the pass): kernels_bench 5-7% faster at 1024-4096 rows,
  // even at 512, slower at 256 and below (decode batches), where cuBLASLt's one GEMM streams the
  // weights better than two; engine_bench prefill 1 x 2048 -0.4 to -0.6 ms, 16 x 2048 -1.5 to
  // -2%. With the up GEMM writing bf16 (session 20) the first token of a 512-token prompt gains
  // too: 5.16-5.24 ms at 512 against 5.33-5.37 at 1024 (session 23), hence 512.
  int gemm_geglu_min_rows = 512;
  // Which of the kernel's compiled tile shapes (kernels::GemmGeGluConfig; 0 is the default
  // kGemmGeGluDefaultConfig); for benchmarks.
  int gemm_geglu_config = 0;
  // The up GEMM before it writes bf16 instead of float32 (one more rounding, 2^-9 relative,
  // inside SPEC.md §8.4's bf16 activations): half the bytes it writes and the gate GEMM's epilogue
  // reads, 63 MB a layer at 2048 tokens each way.
  bool gemm_geglu_up_bf16 = true;
  // Prefill passes of at least this many tokens in which every sequence starts at position 0 run
  // their attention through cuDNN's fused flash attention (kernels/attention/attention_cudnn.h)
  // instead of the project's kernel, where cuDNN loads (its version and why not: the backend's
  // prefill_attention_library()); 0 turns it off. 512 by default (kDefaultCudnnAttentionMinTokens,
  // engine/backend.h): measured faster from 512 tokens (session 31, bench/NOTES.md: 1 x 512
  // -0.7%, 1 x 1024 -3.0%, 1 x 2048 -3.3%, 16 x 2048 -3.0%). It was off until then because
  // compute-sanitizer 2025.3's racecheck reported hazards in cuDNN's kernel; 2026.4 analyses the
  // same cases and reports none, while both report the known race of bench/sanitizer_control.cu
  // (session 31).
  int cudnn_attention_min_tokens = kDefaultCudnnAttentionMinTokens;
  // Decode attention splits each sequence's keys over blocks (flash-decoding) until the pass has
  // up to this many blocks per SM: the tensor-core kernel's decode block fits 2 per SM (99 KB of
  // shared memory, 242 registers a thread at head_dim 256), and one full wave measured best
  // (bench/NOTES.md, session 6: 2, 4, 8).
  int decode_attention_blocks_per_sm = 2;
  // Prefill passes whose tiles are too few to fill the GPU once (a short pass continuing a long
  // sequence: 64 tokens after a restored prefix are 11 tiles, each walking a 2048-key window)
  // split their keys the same way. Off only to compare in benchmarks.
  bool prefill_attention_key_splits = true;
  // Prefill passes whose tiles fill the GPU unevenly (one prompt of 1,800-2,300 tokens at 2B:
  // the latest tiles see the most keys and bound the pass) cut their longest tiles in two key
  // parts, launched longest first (engine/attention_tile_plan.h). Off only to compare.
  bool prefill_attention_split_long_tiles = true;
  // The residual add + RMSNorm's float4 kernel: 1 float4 a thread (a row's block of d / 4
  // threads), 2 (d / 8 threads, twice the blocks an SM holds), 0 the kernel's choice by the
  // pass's rows (kernels::LaunchAddRmsNorm). 1 and 2 only to compare in benchmarks.
  int norm_vectors_per_thread = 0;
  // A decode step's ring write happens in the attention launch (the split combine, or the attention
  // kernel itself with one split) instead of its own launch: one launch fewer per attention layer,
  // bit-identical. Off only to compare in benchmarks.
  bool fuse_decode_ring_write = true;
  // --quantization fp8 (issue 14): the projections held as FP8 E4M3 with one float32 scale per
  // output row, quantized at load (engine/cuda_weights.h). One-token passes read them in the W8A16
  // GEMV; larger ones, with `fp8_activations`, quantize their activations per token and run W8A8
  // GEMMs on the FP8 tensor cores (cuBLASLt; CpuNumerics::kEmulateFp8WeightsAndActivations is
  // their reference). Without it, W8A16 throughout: the GEMV up to 8 tokens, then each matrix
  // expanded to bf16 in a scratch buffer for a bf16 GEMM (slower: bench/NOTES.md).
  bool fp8_weights = false;
  bool fp8_activations = true;
  // The two passes each W8A8 GEMM needs happen inside its neighbours: the residual add + norm
  // before the x|y, q|k|v and gate|up projections writes its output's FP8 codes and row scales
  // too (no quantization pass), and the GEMMs leave their output unscaled for the kernels that
  // read it (the RG-LRU kernels, GeGLU, RoPE, the residual add) to apply the scales (no pass over
  // the float32 output: as many bytes as the GEMM writes, twice). The inputs of the down and
  // output projections keep their quantization passes (NOTES.md session 11: GeGLU writing the
  // codes gained nothing). Bit-identical either way; false only to compare (tests, engine_bench).
  bool fuse_fp8_passes = true;
  // Kernel families left out of every forward pass, by LaunchRecord::kernel name ("AddRmsNorm",
  // "GeGlu", "Gemv", "Attention" with its split combine, ...; kAblatableKernels): for timing
  // only (engine_bench --ablate). A graph replay without them says what they cost in the step,
  // overlap with their neighbours included, which ncu's one-by-one replay cannot. The outputs are
  // garbage.
  std::vector<std::string> ablate_kernels;
};

// The names CudaBackendOptions::ablate_kernels takes.
inline constexpr const char* kAblatableKernels[] = {
    "Embed",   "AddRmsNorm",    "Gemv",      "gemm",         "QuantizeRows", "ScaleRowsAndColumns",
    "Expand",  "RgLruGate",     "Conv",      "DecodeFinish", "GateMath",     "Scan",
    "Rope",    "Attention",     "RingWrite", "GeGlu",        "GemmGeGlu",    "ArgMax",
    "SoftCap", "CudnnAttention"};

// True when a CUDA device is visible (cudaGetDeviceCount succeeds with at least one device).
bool CudaDeviceAvailable();

// FAILED_PRECONDITION naming the limit when the kernels cannot run `config` (checked at load).
absl::Status CudaCanImplement(const loader::ModelConfig& config);

// One kernel launch of a forward pass, for profiles (bench/PROFILE.md): what it computes, which
// kernel family runs it ("gemm" for cuBLASLt, whose kernel names vary), and the bytes it must move
// and FLOPs it must do at the least (each input read once, each output written once).
struct LaunchRecord {
  std::string op;      // e.g. "layer 3 mlp gate|up projection"
  std::string kernel;  // "gemm" (cuBLASLt), or text in the kernel's name: "AddRmsNorm", "Attention"
  double bytes = 0;
  double flops = 0;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const loader::Checkpoint& checkpoint,
                                                             const CudaBackendOptions& options);
  // Random bf16 weights generated on the GPU (benchmarks; no checkpoint file).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> CreateRandom(
      const loader::ModelConfig& config, const CudaBackendOptions& options, uint64_t seed);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  const loader::ModelConfig& config() const override;
  int num_slots() const override;
  int64_t state_bytes_per_sequence() const override;
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  absl::Status ResetSlot(int slot) override;
  int64_t NextPosition(int slot) const override;

  bool healthy() const override;
  // Greedy rows are an argmax inside the decode graph; the others one sampling kernel per step.
  bool samples_on_device() const override { return true; }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override;

  // Prompt positions scored on the device (kernels::LaunchScoreRows): one value, one rank and the
  // top_k alternatives per position cross to the host instead of a row of vocab_size floats (1 MB
  // at 256k). top_k above kernels::kMaxDeviceTopLogprobs takes Backend's host path.
  absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                      absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                      absl::Span<float> logits,
                                      const PromptLogprobsOutput& out) override;

  // Which kernel runs the attention of fresh prefill passes: "cuDNN <version> (passes of at least
  // N tokens)", or the project's kernel and why cuDNN is not used.
  std::string prefill_attention_library() const;
  std::vector<std::string> StartupNotes() const override {
    return {"prefill attention: " + prefill_attention_library()};
  }

  const StateLayout* state_layout() const override;
  // Device to device within the pool (no host round trip).
  absl::Status CopySlot(int from, int to) override;
  absl::StatusOr<int64_t> SnapshotSlot(int slot, absl::Span<uint8_t> out) override;
  // Within the device into a staging buffer on the step stream, then to the host on a copy
  // stream that runs beside the next steps (synchronous when the staging buffers do not fit).
  absl::StatusOr<SnapshotTicket> StartSnapshot(int slot, absl::Span<uint8_t> out) override;
  absl::Status FinishSnapshot(uint64_t id) override;
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override;
  // Page-locked (cudaMallocHost); ordinary memory when pinning fails.
  SnapshotMemory AllocateSnapshotMemory(int64_t bytes) override;

  // Device bytes not proportional to the slot count (weights, workspaces, graphs' buffers).
  int64_t fixed_device_bytes() const;
  int64_t weight_bytes() const;
  // Benchmarks only: moves a slot to `position` without running its prefix (state left as is).
  absl::Status SetNextPositionForBenchmark(int slot, int64_t position);
  // Tests: run decode steps eagerly instead of replaying graphs.
  void set_use_cuda_graphs(bool use);
  // Profiles: while set, every launch a forward pass enqueues is appended to `trace` (eager
  // steps; a graph replay records nothing). Null turns it off.
  void set_launch_trace(std::vector<LaunchRecord>* trace);

 private:
  class Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CUDA_BACKEND_H_
