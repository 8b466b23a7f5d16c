// engine_bench: the CUDA backend on recurrentgemma-2b and -9b shapes with random bf16 weights
// generated on the GPU (no checkpoint, no download). Prints every figure beside its floor
// (shared/PERF.md): decode step time at batch 1, 8, 64, 256, 1024 and positions 128 and 4096;
// prefill tokens/s for 1 x 2048 and 16 x 2048; time to first token for a 2048-token prompt; device
// bytes per live sequence and how many fit in 100 GiB.
//
//   engine_bench [--model=2b|9b|all] [--quick] [--reps=N]
//   engine_bench --serving=CONCURRENCY --input_len=N --output_len=N [--num_requests=N]
//                [--token_budget=N] [--max_batch=N] [--model=2b|9b]
//   engine_bench --profile=decode:BATCH:POSITION | prefill:SEQUENCES:TOKENS --trace_out=FILE
//
// --profile (bench/PROFILE.md, run under `ncu --profile-from-start off`, bench/profile_step.sh):
// writes to --trace_out one JSON line per kernel launch of one step (what it computes, the bytes it
// must move and the FLOPs it must do), then runs that step once more between cudaProfilerStart and
// cudaProfilerStop (a decode step as its CUDA graph replay), so ncu times exactly those kernels.
//
// --serving runs the engine alone (EngineCore: scheduler, chunked prefill, GPU sampling) closed
// loop at CONCURRENCY requests in flight, greedy with fixed lengths: the baseline griffin-bench's
// figures through the server are compared with (server overhead, bench/RESULTS.md).
//
// Timing: each figure is the median over N repetitions after 3 warm-ups, host wall-clock around
// Backend calls that end in a stream synchronisation (so it includes the host-side step
// preparation and the copy of the sampled tokens back, as a server would see it). Decode steps
// sample greedily on the GPU (StepSample), so no logits cross PCIe.
// Floors: bytes over 4.3 TB/s (measured device-to-device copy, PERF.md), FLOPs over 790 TFLOP/s
// (measured cuBLAS bf16), the larger of the two.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/backend_factory.h"
#include "engine/cuda_backend.h"
#include "engine/engine_core.h"
#include "engine/griffin_model.h"
#include "engine/state_layout.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "2b", "2b, 9b or all");
ABSL_FLAG(bool, quick, false, "decode batches 1, 64 and 256 only");
ABSL_FLAG(std::vector<std::string>, decode_batches, {},
          "decode batches to time, comma-separated (default: --quick's or the full list)");
ABSL_FLAG(bool, decode_only, false,
          "time the decode steps only (with --decode_batches and --ablate: quick A/B runs)");
ABSL_FLAG(int, reps, 20, "timed repetitions per figure (median); at least 3");
ABSL_FLAG(std::vector<std::string>, prefill_lengths, {"2048"},
          "one-prompt prefill figures (prefill 1 x T, time to first token) for these lengths, "
          "before 16 x 2048");
ABSL_FLAG(int, serving, 0, "run the engine alone closed loop at this concurrency (0: off)");
ABSL_FLAG(std::string, backend, "cuda",
          "--serving: cuda, or simulated (no GPU: each step sleeps for --simulated_step_us; "
          "griffin-server --backend simulated is its comparison)");
ABSL_FLAG(int64_t, prefix_cache_memory_mib, 0,
          "--serving: the prefix cache's device tier, as griffin-server's flag (its default: 64); "
          "with --prefix_cache_host_mib both 0 (the default here) the cache is off");
ABSL_FLAG(int64_t, prefix_cache_host_mib, 0,
          "--serving: the prefix cache's host tier, as griffin-server's flag (its default: 1024)");
ABSL_FLAG(bool, prefix_cache_sync_host_copies, false,
          "--serving: the prefix cache waits for each copy to its host tier where it is made, as "
          "before those copies ran beside the steps (A/B runs)");
ABSL_FLAG(std::string, simulated_step_us, "1950,7.4,8.5",
          "--backend simulated: BASE,PER_DECODE_ROW,PER_PROMPT_TOKEN microseconds a step");
ABSL_FLAG(int, input_len, 1024, "--serving: prompt tokens per request");
ABSL_FLAG(int, output_len, 128, "--serving: output tokens per request");
ABSL_FLAG(int, num_requests, 0, "--serving: requests (0: twice the concurrency)");
ABSL_FLAG(int64_t, token_budget, 512, "--serving: tokens per engine step");
ABSL_FLAG(int, max_batch, 256, "--serving: sequences per engine step");
ABSL_FLAG(double, step_time_target_ms, 0,
          "--serving: cap prompt tokens beside decodes to this predicted step time (0: off)");
ABSL_FLAG(std::string, profile, "",
          "decode:BATCH:POSITION or prefill:SEQUENCES:TOKENS: trace one step's launches to "
          "--trace_out and run it once under cudaProfilerStart/Stop (for ncu)");
ABSL_FLAG(std::string, trace_out, "", "--profile: where the launch trace goes (JSON lines)");
ABSL_FLAG(
    int, rglru_gate_gemm_min_batch, griffin::engine::CudaBackendOptions{}.rglru_gate_gemm_min_batch,
    "decode batches from this size run the RG-LRU gates as a tensor-core GEMM (compare paths)");
ABSL_FLAG(bool, fuse_decode_ring_write,
          griffin::engine::CudaBackendOptions{}.fuse_decode_ring_write,
          "a decode step's ring write inside the attention launch (compare paths)");
ABSL_FLAG(int, prefetch_gemm_max_rows, griffin::engine::CudaBackendOptions{}.prefetch_gemm_max_rows,
          "bf16 projections of up to this many rows on CUTLASS's GEMM with weight prefetch "
          "(0: cuBLASLt; compare paths)");
ABSL_FLAG(float, prefetch_gemm_overlap, griffin::engine::CudaBackendOptions{}.prefetch_gemm_overlap,
          "the prefetch GEMM's share of K tiles loaded before its successor may launch");
ABSL_FLAG(int, prefetch_gemm_rows_per_block,
          griffin::engine::CudaBackendOptions{}.prefetch_gemm_rows_per_block,
          "the prefetch GEMM's activation rows per block: 16, 32, 64, 128 or 0 (automatic)");
ABSL_FLAG(int, prefetch_gemm_split_k_parts,
          griffin::engine::CudaBackendOptions{}.prefetch_gemm_split_k_parts,
          "the prefetch GEMM's projections into the residual stream split over K into at most "
          "this many parts (1: no split)");
ABSL_FLAG(bool, prefetch_gemm_fp8, griffin::engine::CudaBackendOptions{}.prefetch_gemm_fp8,
          "FP8 W8A8 projections of up to --prefetch_gemm_max_rows rows on the prefetch GEMM");
ABSL_FLAG(bool, stage_rglru_decode, griffin::engine::CudaBackendOptions{}.stage_rglru_decode,
          "the fused RG-LRU decode kernel loads all but x|y before its wait (compare paths)");
ABSL_FLAG(int, rglru_decode_tokens_per_block,
          griffin::engine::CudaBackendOptions{}.rglru_decode_tokens_per_block,
          "tokens per block of the fused RG-LRU decode kernel: 1, 2, 4, 8, or 0 for the "
          "kernel's own choice (compare paths)");
ABSL_FLAG(bool, gemv_for_narrow_projections,
          griffin::engine::CudaBackendOptions{}.gemv_for_narrow_projections,
          "batch-1 projections under 8192 outputs on the split-K GEMV (false: cuBLASLt)");
ABSL_FLAG(int, gemm_geglu_min_rows, griffin::engine::CudaBackendOptions{}.gemm_geglu_min_rows,
          "passes of at least this many tokens run the up GEMM, then the gate GEMM with GeGLU in "
          "its epilogue (Hopper, CUTLASS); 0: the fused gate|up GEMM and the GeGLU pass");
ABSL_FLAG(int, split_k_max_rows, griffin::engine::CudaBackendOptions{}.split_k_max_rows,
          "passes of 2 to this many tokens split the projections into the residual stream over "
          "K (0: off)");
ABSL_FLAG(int, split_k_parts, griffin::engine::CudaBackendOptions{}.split_k_parts,
          "parts of those splits: 0 tuned per shape, n forced where K allows");
ABSL_FLAG(bool, gemm_tune_cold, griffin::engine::CudaBackendOptions{}.gemm_tune_cold,
          "the decode GEMMs' autotuning times each candidate after emptying the L2");
ABSL_FLAG(int, gemm_geglu_config, griffin::engine::CudaBackendOptions{}.gemm_geglu_config,
          "tile shape of that kernel (kernels::GemmGeGluConfig)");
ABSL_FLAG(bool, gemm_geglu_up_bf16, griffin::engine::CudaBackendOptions{}.gemm_geglu_up_bf16,
          "the up GEMM before the gate GEMM with GeGLU writes bf16, not float32 (compare paths)");
ABSL_FLAG(int, cudnn_attention_min_tokens,
          griffin::engine::CudaBackendOptions{}.cudnn_attention_min_tokens,
          "prefill passes of at least this many tokens, every sequence from position 0, run "
          "their attention through cuDNN where it loads; 0: the project's kernel always");
ABSL_FLAG(int, gemv_max_rows, griffin::engine::CudaBackendOptions{}.gemv_max_rows,
          "bf16 projections of up to this many rows (1-8) on the GEMV kernel, the rest cuBLASLt");
ABSL_FLAG(int, decode_attention_blocks_per_sm,
          griffin::engine::CudaBackendOptions{}.decode_attention_blocks_per_sm,
          "decode attention key splits: blocks wanted per SM");

ABSL_FLAG(std::string, quantization, "none",
          "none, or fp8: projections in FP8 E4M3 with a scale per output row (issue 14); the "
          "floors follow the bytes the weights take");
ABSL_FLAG(bool, fp8_activations, griffin::engine::CudaBackendOptions{}.fp8_activations,
          "--quantization fp8, passes of 2 or more tokens: W8A8 GEMMs (activations quantized "
          "per token); false: W8A16 throughout (the GEMV up to 8 tokens, weights expanded to "
          "bf16 above)");
ABSL_FLAG(bool, fuse_fp8_passes, griffin::engine::CudaBackendOptions{}.fuse_fp8_passes,
          "--quantization fp8, W8A8: activations quantized by the norm before them and output "
          "scales applied by the kernels that read them; false: a pass for each (compare paths)");
ABSL_FLAG(bool, prefill_attention_key_splits,
          griffin::engine::CudaBackendOptions{}.prefill_attention_key_splits,
          "short prefill passes split their attention keys over blocks (compare paths)");
ABSL_FLAG(int, norm_vectors_per_thread,
          griffin::engine::CudaBackendOptions{}.norm_vectors_per_thread,
          "residual add + RMSNorm: float4s a thread (0: the kernel's choice by rows, 1 or 2; "
          "compare paths)");
ABSL_FLAG(bool, prefill_attention_split_long_tiles,
          griffin::engine::CudaBackendOptions{}.prefill_attention_split_long_tiles,
          "prefill passes that fill the GPU unevenly cut their longest attention tiles in two "
          "key parts (compare paths)");

ABSL_FLAG(std::vector<std::string>, ablate, {},
          "kernel families left out of every pass, comma-separated (AddRmsNorm, GeGlu, Gemv, "
          "RgLruGate, Rope, Attention, RingWrite, ...): timing only, what they cost inside the "
          "graph replay; the outputs are garbage");

namespace griffin {
namespace {

using engine::CudaBackend;

// The kernel-path choices the flags override (the backend's defaults otherwise).
engine::CudaBackendOptions KernelPathOptions() {
  engine::CudaBackendOptions opt;
  opt.rglru_gate_gemm_min_batch = absl::GetFlag(FLAGS_rglru_gate_gemm_min_batch);
  opt.gemv_for_narrow_projections = absl::GetFlag(FLAGS_gemv_for_narrow_projections);
  opt.stage_rglru_decode = absl::GetFlag(FLAGS_stage_rglru_decode);
  opt.rglru_decode_tokens_per_block = absl::GetFlag(FLAGS_rglru_decode_tokens_per_block);
  opt.fuse_decode_ring_write = absl::GetFlag(FLAGS_fuse_decode_ring_write);
  opt.prefetch_gemm_max_rows = absl::GetFlag(FLAGS_prefetch_gemm_max_rows);
  opt.prefetch_gemm_overlap = absl::GetFlag(FLAGS_prefetch_gemm_overlap);
  opt.prefetch_gemm_rows_per_block = absl::GetFlag(FLAGS_prefetch_gemm_rows_per_block);
  opt.prefetch_gemm_split_k_parts = absl::GetFlag(FLAGS_prefetch_gemm_split_k_parts);
  opt.prefetch_gemm_fp8 = absl::GetFlag(FLAGS_prefetch_gemm_fp8);
  opt.decode_attention_blocks_per_sm = absl::GetFlag(FLAGS_decode_attention_blocks_per_sm);
  opt.prefill_attention_key_splits = absl::GetFlag(FLAGS_prefill_attention_key_splits);
  opt.gemm_geglu_up_bf16 = absl::GetFlag(FLAGS_gemm_geglu_up_bf16);
  opt.prefill_attention_split_long_tiles = absl::GetFlag(FLAGS_prefill_attention_split_long_tiles);
  opt.norm_vectors_per_thread = absl::GetFlag(FLAGS_norm_vectors_per_thread);
  opt.fp8_weights = *engine::ParseWeightQuantization(absl::GetFlag(FLAGS_quantization)) ==
                    engine::WeightQuantization::kFp8;  // checked in main
  opt.fp8_activations = absl::GetFlag(FLAGS_fp8_activations);
  opt.fuse_fp8_passes = absl::GetFlag(FLAGS_fuse_fp8_passes);
  opt.ablate_kernels = absl::GetFlag(FLAGS_ablate);
  opt.gemv_max_rows = absl::GetFlag(FLAGS_gemv_max_rows);
  opt.gemm_geglu_min_rows = absl::GetFlag(FLAGS_gemm_geglu_min_rows);
  opt.gemm_geglu_config = absl::GetFlag(FLAGS_gemm_geglu_config);
  opt.gemm_tune_cold = absl::GetFlag(FLAGS_gemm_tune_cold);
  opt.split_k_max_rows = absl::GetFlag(FLAGS_split_k_max_rows);
  opt.split_k_parts = absl::GetFlag(FLAGS_split_k_parts);
  opt.cudnn_attention_min_tokens = absl::GetFlag(FLAGS_cudnn_attention_min_tokens);
  return opt;
}
using engine::StepEntry;

constexpr double kBandwidth = 4.3e12;  // bytes/s, PERF.md
constexpr double kFlops = 790e12;      // bf16 FLOP/s, PERF.md

loader::ModelConfig Preset(const std::string& name) {
  return name == "9b" ? engine::RecurrentGemma9B() : engine::RecurrentGemma2B();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Model {
  loader::ModelConfig c;
  double weight_bytes;  // read once per step (tied head counted once)
  double params;        // distinct parameters
  double embed_params;
};

// FLOPs of one token through the body (no head), attending to `keys` keys.
double BodyFlops(const Model& m, double keys) {
  const auto& c = m.c;
  const double attn = 4.0 * c.num_heads * c.head_dim * keys * c.num_attention_layers();
  return 2.0 * (m.params - m.embed_params) + attn;
}
double HeadFlops(const Model& m) { return 2.0 * m.c.vocab_size * m.c.hidden_size; }
double KvReadBytes(const Model& m, int64_t pos) {
  const auto& c = m.c;
  const double keys = std::min<int64_t>(pos, c.attention_window) + 1;
  return c.num_attention_layers() * 2.0 * keys * c.num_kv_heads * c.head_dim * 2;
}

int Run(const std::string& name, bool quick, int reps) {
  Model m;
  m.c = Preset(name);
  m.params = double(engine::GriffinParameterCount(m.c));
  m.embed_params = double(m.c.vocab_size) * m.c.hidden_size;
  std::vector<int> batches =
      quick ? std::vector<int>{1, 64, 256} : std::vector<int>{1, 8, 64, 256, 1024};
  if (!absl::GetFlag(FLAGS_decode_batches).empty()) {
    batches.clear();
    for (const std::string& b : absl::GetFlag(FLAGS_decode_batches)) {
      int v = 0;
      if (!absl::SimpleAtoi(b, &v) || v < 1) {
        std::fprintf(stderr, "--decode_batches: '%s' is not a batch size\n", b.c_str());
        return 1;
      }
      batches.push_back(v);
    }
    std::sort(batches.begin(), batches.end());
  }
  const int max_batch = batches.back();
  engine::CudaBackendOptions opt = KernelPathOptions();
  opt.num_slots = std::max(max_batch, 16);
  opt.max_decode_batch = max_batch;
  opt.max_tokens_per_step = 16 * 2048;
  const auto t_create = std::chrono::steady_clock::now();
  auto backend_or = CudaBackend::CreateRandom(m.c, opt, 42);
  if (!backend_or.ok()) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), backend_or.status().ToString().c_str());
    return 1;
  }
  auto& backend = *backend_or;
  const double create_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_create).count();
  m.weight_bytes = double(backend->weight_bytes());
  const int64_t state = backend->state_bytes_per_sequence();
  const engine::StateSize exact_size = engine::StateLayout::ForCuda(m.c).size();
  const int64_t exact = exact_size.total();
  std::printf("\n## recurrentgemma-%s shapes (%.3f B params, %.2f GB %s weights on device)\n\n",
              name.c_str(), m.params / 1e9, m.weight_bytes / 1e9,
              !opt.fp8_weights      ? "bf16"
              : opt.fp8_activations ? "FP8-projection (W8A8 from 2 rows)"
                                    : "FP8-projection (W8A16, expanded above 8 rows)");
  std::printf("start-up (random weights, %d slots, graphs for decode buckets up to %d): %.1f s\n\n",
              opt.num_slots, max_batch, create_s);
  std::printf("| figure | measured | floor | measured / floor |\n| --- | --- | --- | --- |\n");

  std::vector<int32_t> tokens(size_t(16) * 2048);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919 + 13) % m.c.vocab_size);
  auto time_it = [&](auto&& fn, int n) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<double> t;
    for (int i = 0; i < n; ++i) {
      const auto a = std::chrono::steady_clock::now();
      fn();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    return Median(t);
  };
  int failures = 0;
  // One greedy decode step of slots 0..B-1 from `pos` on (each slot's next token is the one it
  // sampled), timed over n repetitions after the warm-ups; errors go to *status.
  auto time_decode = [&](int B, int64_t pos, int n, absl::Status* status) {
    for (int s = 0; s < B; ++s) (void)backend->SetNextPositionForBenchmark(s, pos);
    std::vector<int32_t> tok(B, 5);
    std::vector<engine::SampleRequest> req(B);
    for (auto& r : req) r.params.temperature = 0.0f;
    std::vector<StepEntry> entries(B);
    return time_it(
        [&]() {
          for (int s = 0; s < B; ++s) {
            entries[s] = StepEntry{.slot = s,
                                   .position = backend->NextPosition(s),
                                   .tokens = absl::MakeConstSpan(&tok[s], 1)};
            if (tok[s] < 0) tok[s] = 5;
          }
          status->Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
        },
        n);
  };

  // Decode.
  for (int64_t pos : {int64_t{128}, int64_t{4096}}) {
    for (int B : batches) {
      absl::Status status;
      const double t = time_decode(B, pos, B >= 256 ? std::max(5, reps / 2) : reps, &status);
      if (!status.ok()) {
        std::printf("| decode B=%d pos=%lld | error: %s | | |\n", B, (long long)pos,
                    std::string(status.message()).c_str());
        ++failures;
        continue;
      }
      const double bytes =
          m.weight_bytes + B * (KvReadBytes(m, pos) + 2.0 * double(state - exact_size.kv_bytes));
      const double flops =
          B * (BodyFlops(m, std::min<int64_t>(pos, m.c.attention_window) + 1) + HeadFlops(m));
      const double floor = std::max(bytes / kBandwidth, flops / kFlops);
      std::printf(
          "| decode step, batch %d, position %lld | %.3f ms (%.0f tok/s) | %.3f ms (%.0f tok/s) | "
          "%.2f |\n",
          B, (long long)pos, t * 1e3, B / t, floor * 1e3, B / floor, t / floor);
      std::fflush(stdout);
    }
  }

  if (absl::GetFlag(FLAGS_decode_only)) return failures;

  // Prefill and time to first token: one prompt of each --prefill_lengths, then 16 x 2048.
  std::vector<std::pair<int, int>> prefill_shapes;
  for (const std::string& v : absl::GetFlag(FLAGS_prefill_lengths)) {
    int T = 0;
    if (!absl::SimpleAtoi(v, &T) || T < 1 || T > 16 * 2048) {
      std::fprintf(stderr, "--prefill_lengths: '%s' is not a length of 1 to 32768\n", v.c_str());
      return failures + 1;
    }
    prefill_shapes.push_back({1, T});
  }
  prefill_shapes.push_back({16, 2048});
  for (const auto& [S, T] : prefill_shapes) {
    std::vector<StepEntry> entries(S);
    std::vector<engine::SampleRequest> req(S);
    for (auto& r : req) r.params.temperature = 0.0f;
    std::vector<int32_t> tok(S);
    absl::Status status;
    auto step = [&]() {
      for (int s = 0; s < S; ++s) {
        entries[s] = StepEntry{.slot = s,
                               .position = 0,
                               .tokens = absl::MakeConstSpan(tokens).subspan(size_t(s) * T, T)};
      }
      status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
    };
    const double t = time_it(step, S == 1 ? reps : std::max(3, reps / 4));
    if (!status.ok()) {
      std::printf("| prefill %dx%d | error: %s | | |\n", S, T,
                  std::string(status.message()).c_str());
      ++failures;
      continue;
    }
    const double avg_keys = 0.5 * (T + 1);
    const double flops = double(S) * T * BodyFlops(m, avg_keys) + S * HeadFlops(m);
    const double floor = std::max(flops / kFlops, m.weight_bytes / kBandwidth);
    std::printf("| prefill %d x %d | %.1f ms (%.0f tok/s) | %.1f ms (%.0f tok/s) | %.2f |\n", S, T,
                t * 1e3, S * T / t, floor * 1e3, S * T / floor, t / floor);
    if (S == 1) {
      std::printf("| time to first token, 1 x %d prompt | %.1f ms | %.1f ms | %.2f |\n", T, t * 1e3,
                  floor * 1e3, t / floor);
    }
    std::fflush(stdout);
  }

  // Prompt log-probabilities (echo, lm-eval's loglikelihood): every position of a 1 x 2048 prompt
  // scored against the next token with its 5 best alternatives, on the device (CudaBackend's
  // override) and through Backend's host path (rows of logits to the host, log-softmax in double).
  if (!quick) {
    const int T = 2048, top_k = 5;
    const auto prompt = absl::MakeConstSpan(tokens).subspan(0, T);
    const std::vector<StepEntry> entries = {StepEntry{
        .slot = 0, .position = 0, .tokens = prompt, .logits = engine::LogitsRequest::kLast}};
    const std::vector<engine::PromptLogprobsRequest> requests = {{.targets = prompt.subspan(1)}};
    std::vector<float> logits(m.c.vocab_size), lp(T - 1), top_lp(size_t(T - 1) * top_k);
    std::vector<int32_t> ranks(T - 1), top_ids(size_t(T - 1) * top_k);
    const engine::PromptLogprobsOutput out{absl::MakeSpan(lp), absl::MakeSpan(ranks),
                                           absl::MakeSpan(top_ids), absl::MakeSpan(top_lp)};
    absl::Status status;
    const double device = time_it(
        [&] {
          status.Update(backend->StepWithPromptLogprobs(entries, requests, top_k,
                                                        absl::MakeSpan(logits), out));
        },
        std::max(3, reps / 2));
    const auto a = std::chrono::steady_clock::now();
    status.Update(backend->engine::Backend::StepWithPromptLogprobs(entries, requests, top_k,
                                                                   absl::MakeSpan(logits), out));
    const double host = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    if (!status.ok()) {
      std::printf("| echo 1 x 2048 | error: %s | | |\n", std::string(status.message()).c_str());
      ++failures;
    } else {
      std::printf(
          "| prompt log-probabilities (echo), 1 x 2048, top 5, on the device | %.1f ms | host path "
          "(one run) %.1f ms | %.3f |\n",
          device * 1e3, host * 1e3, device / host);
    }
    std::fflush(stdout);
  }

  // State as an object (prefix cache, sessions): one slot to pageable host memory and back, a
  // device-to-device copy (n > 1 fan-out), and the first token of a 2048-token prompt whose first
  // 1984 tokens are restored from a snapshot (64 prefilled) against prefilling all 2048.
  {
    const int T = 2048, tail = 64;
    std::vector<StepEntry> entries(1);
    std::vector<engine::SampleRequest> req(1);
    req[0].params.temperature = 0.0f;
    std::vector<int32_t> tok(1);
    absl::Status status;
    entries[0] = StepEntry{
        .slot = 0, .position = 0, .tokens = absl::MakeConstSpan(tokens).subspan(0, T - tail)};
    status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
    std::vector<uint8_t> snapshot(state);
    int64_t covered = 0;
    const double snap = time_it(
        [&] {
          auto pos = backend->SnapshotSlot(0, absl::MakeSpan(snapshot));
          status.Update(pos.status());
          if (pos.ok()) covered = *pos;
        },
        reps);
    const double restore =
        time_it([&] { status.Update(backend->RestoreSlot(1, snapshot, covered)); }, reps);
    // The prefix cache's host tier lives in page-locked memory (Backend::AllocateSnapshotMemory).
    engine::Backend::SnapshotMemory pinned = backend->AllocateSnapshotMemory(state);
    const absl::Span<uint8_t> pinned_span(pinned.get(), static_cast<size_t>(state));
    const double snap_pinned =
        time_it([&] { status.Update(backend->SnapshotSlot(0, pinned_span).status()); }, reps);
    const double restore_pinned =
        time_it([&] { status.Update(backend->RestoreSlot(1, pinned_span, covered)); }, reps);
    const double copy = time_it([&] { status.Update(backend->CopySlot(0, 2)); }, reps);
    const double resumed_ttft = time_it(
        [&] {
          status.Update(backend->RestoreSlot(1, snapshot, covered));
          entries[0] = StepEntry{.slot = 1,
                                 .position = covered,
                                 .tokens = absl::MakeConstSpan(tokens).subspan(T - tail, tail)};
          status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
        },
        reps);
    const double full_ttft = time_it(
        [&] {
          entries[0] = StepEntry{
              .slot = 1, .position = 0, .tokens = absl::MakeConstSpan(tokens).subspan(0, T)};
          status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
        },
        reps);
    if (!status.ok()) {
      std::printf("| state snapshot/restore | error: %s | | |\n",
                  std::string(status.message()).c_str());
      ++failures;
    } else {
      const double pcie = 50e9;  // bytes/s one way, PCIe 5.0 x16 in practice
      std::printf(
          "| snapshot one slot to host memory (%.1f MiB, pageable) | %.2f ms | %.2f ms | %.2f |\n",
          state / 1048576.0, snap * 1e3, state / pcie * 1e3, snap / (state / pcie));
      std::printf("| restore one slot from host memory | %.2f ms | %.2f ms | %.2f |\n",
                  restore * 1e3, state / pcie * 1e3, restore / (state / pcie));
      std::printf(
          "| snapshot / restore one slot, page-locked host memory (prefix cache host tier) | %.2f "
          "/ %.2f ms | %.2f ms | %.2f |\n",
          snap_pinned * 1e3, restore_pinned * 1e3, state / pcie * 1e3,
          restore_pinned / (state / pcie));
      std::printf("| copy one slot on the device (n > 1 fan-out) | %.3f ms | %.3f ms | %.2f |\n",
                  copy * 1e3, 2.0 * state / kBandwidth * 1e3, copy / (2.0 * state / kBandwidth));
      std::printf(
          "| time to first token, 2048 prompt, 1984 restored + 64 prefilled | %.2f ms | full "
          "prefill %.2f ms | %.3f |\n",
          resumed_ttft * 1e3, full_ttft * 1e3, resumed_ttft / full_ttft);
    }
    std::fflush(stdout);
  }

  // Short passes, where the host's launch rate can matter more than the GPU (issue 15's TTFT after
  // a restored prefix): decode at batch 1 and 64 launched eagerly against its CUDA graph (the same
  // kernels: the difference is what ~280 launches cost the host), and prefill passes of 64-512
  // tokens continuing a 1984-token sequence whose state is already on the device (copied from a
  // prefilled slot before each pass: 0.02 ms).
  {
    absl::Status status;
    for (int B : {1, 64}) {
      if (B > max_batch) continue;  // --decode_batches below 64: no slots or graph for it
      const double graph = time_decode(B, 128, reps, &status);
      backend->set_use_cuda_graphs(false);
      const double eager = time_decode(B, 128, reps, &status);
      backend->set_use_cuda_graphs(true);
      std::printf(
          "| decode step, batch %d, position 128, launched eagerly | %.3f ms | its CUDA graph "
          "%.3f ms | %.2f |\n",
          B, eager * 1e3, graph * 1e3, eager / graph);
    }
    const int prefix = 1984;
    std::vector<StepEntry> entries(1);
    std::vector<engine::SampleRequest> req(1);
    req[0].params.temperature = 0.0f;
    std::vector<int32_t> tok(1);
    entries[0] = StepEntry{
        .slot = 0, .position = 0, .tokens = absl::MakeConstSpan(tokens).subspan(0, prefix)};
    status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
    for (int tail : {1, 16, 64, 128, 512}) {
      const double t = time_it(
          [&] {
            status.Update(backend->CopySlot(0, 1));
            entries[0] = StepEntry{.slot = 1,
                                   .position = prefix,
                                   .tokens = absl::MakeConstSpan(tokens).subspan(prefix, tail)};
            status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
          },
          reps);
      // The floor of the pass alone: every weight once, or its FLOPs over a full window of keys.
      const double flops =
          tail * BodyFlops(m, std::min<int>(prefix, m.c.attention_window)) + HeadFlops(m);
      const double floor = std::max(flops / kFlops, m.weight_bytes / kBandwidth);
      std::printf(
          "| first token after %d tokens already in the slot (device copy) + %d prefilled | %.2f "
          "ms | %.2f ms | %.2f |\n",
          prefix, tail, t * 1e3, floor * 1e3, t / floor);
    }
    // The same passes from position 0: their queries see only the pass's own keys.
    for (int tail : {64, 128, 512}) {
      const double t = time_it(
          [&] {
            entries[0] = StepEntry{
                .slot = 1, .position = 0, .tokens = absl::MakeConstSpan(tokens).subspan(0, tail)};
            status.Update(backend->StepSample(entries, req, absl::MakeSpan(tok)));
          },
          reps);
      const double flops = tail * BodyFlops(m, 0.5 * (tail + 1)) + HeadFlops(m);
      const double floor = std::max(flops / kFlops, m.weight_bytes / kBandwidth);
      std::printf(
          "| first token, %d-token prompt (prefill from position 0) | %.2f ms | %.2f ms | "
          "%.2f |\n",
          tail, t * 1e3, floor * 1e3, t / floor);
    }
    if (!status.ok()) {
      std::printf("| short passes | error: %s | | |\n", std::string(status.message()).c_str());
      ++failures;
    }
    std::fflush(stdout);
  }

  // Memory.
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::printf("| device bytes per live sequence | %lld B (%.2f MiB) | %lld B state | %.4f |\n",
              (long long)state, state / 1048576.0, (long long)exact, double(state) / exact);
  std::printf("| sequences in 100 GiB of state memory | %lld | %lld | %.4f |\n",
              (long long)(100 * gib / state), (long long)(100 * gib / exact),
              double(int64_t(100 * gib / state)) / double(int64_t(100 * gib / exact)));
  std::printf(
      "\nfixed device bytes (workspaces, logits buffer, scratch slot, cuBLASLt workspace): %.2f "
      "GB; weights %.2f GB\n",
      backend->fixed_device_bytes() / 1e9, m.weight_bytes / 1e9);
  std::printf("prefill attention: %s\n", backend->prefill_attention_library().c_str());
  return failures;
}

// One step, traced then profiled (see the file comment). `kind` is "decode" (a = batch,
// b = position) or "prefill" (a = sequences, b = tokens each).
int Profile(const std::string& name, const std::string& kind, int a, int b,
            const std::string& trace_out) {
  const loader::ModelConfig c = Preset(name);
  const bool decode = kind == "decode";
  engine::CudaBackendOptions opt = KernelPathOptions();
  opt.num_slots = std::max(a, 1);
  opt.max_decode_batch = decode ? a : 1;
  opt.max_tokens_per_step = decode ? std::max(a, 1) : a * b;
  auto backend_or = CudaBackend::CreateRandom(c, opt, 42);
  if (!backend_or.ok()) {
    std::fprintf(stderr, "%s\n", backend_or.status().ToString().c_str());
    return 1;
  }
  CudaBackend& backend = **backend_or;
  std::vector<int32_t> tokens(size_t(a) * (decode ? 1 : b));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919 + 13) % c.vocab_size);
  std::vector<engine::SampleRequest> req(a);
  for (auto& r : req) r.params.temperature = 0.0f;
  std::vector<int32_t> out(a);
  std::vector<StepEntry> entries(a);
  auto step = [&]() -> absl::Status {
    for (int s = 0; s < a; ++s) {
      if (decode) {
        (void)backend.SetNextPositionForBenchmark(s, b);
        entries[s] =
            StepEntry{.slot = s, .position = b, .tokens = absl::MakeConstSpan(&tokens[s], 1)};
      } else {
        entries[s] = StepEntry{.slot = s,
                               .position = 0,
                               .tokens = absl::MakeConstSpan(tokens).subspan(size_t(s) * b, b)};
      }
    }
    return backend.StepSample(entries, req, absl::MakeSpan(out));
  };
  std::vector<engine::LaunchRecord> trace;
  backend.set_launch_trace(&trace);
  absl::Status status = step();
  backend.set_launch_trace(nullptr);
  for (int i = 0; i < 3 && status.ok(); ++i) status = step();  // warm (graph replays for decode)
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::ofstream file(trace_out);
  for (const engine::LaunchRecord& r : trace) {
    file << nlohmann::json{{"op", r.op},
                           {"kernel", r.kernel},
                           {"bytes", r.bytes},
                           {"flops", r.flops}}
                .dump()
         << "\n";
  }
  if (!file) {
    std::fprintf(stderr, "cannot write %s\n", trace_out.c_str());
    return 1;
  }
  cudaDeviceSynchronize();
  cudaProfilerStart();
  status = step();
  cudaDeviceSynchronize();
  cudaProfilerStop();
  std::printf("profiled %s %s %d:%d: %zu launches traced to %s (%s)\n", name.c_str(), kind.c_str(),
              a, b, trace.size(), trace_out.c_str(),
              status.ok() ? "ok" : status.ToString().c_str());
  return status.ok() ? 0 : 1;
}

struct ServingArgs {
  engine::BackendKind backend = engine::BackendKind::kCuda;
  engine::SimulatedStepTime simulated_step_time;
  int concurrency = 0;
  int input_len = 1024, output_len = 128, num_requests = 0;
  int64_t token_budget = 512;
  int max_batch = 256;
  double step_time_target_ms = 0;
  int64_t prefix_cache_memory_mib = 0, prefix_cache_host_mib = 0;
  bool prefix_cache_sync_host_copies = false;
};

// Closed loop through EngineCore; prints output tokens/s and requests/s over the timed requests.
int RunServing(const std::string& name, const ServingArgs& a) {
  const loader::ModelConfig c = Preset(name);
  const int requests = a.num_requests > 0 ? a.num_requests : 2 * a.concurrency;
  const engine::CudaBackendOptions paths = KernelPathOptions();
  auto backend = engine::CreateBackendWithRandomWeights(
      c,
      {.kind = a.backend,
       .quantization =
           paths.fp8_weights ? engine::WeightQuantization::kFp8 : engine::WeightQuantization::kNone,
       .fp8_activations = paths.fp8_activations,
       .num_slots = a.concurrency,
       .max_batch = a.max_batch,
       .max_tokens_per_step = a.token_budget,
       .simulated_step_time = a.simulated_step_time},
      1);
  if (!backend.ok()) {
    std::printf("backend: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  // The server's prefix cache, sized as griffin-server sizes it (whole idle slots for the device
  // tier, snapshots for the host tier), so that its cost can be priced without the server.
  engine::PrefixCacheOptions cache;  // off
  if (const engine::StateLayout* layout = (*backend)->state_layout(); layout != nullptr) {
    cache =
        engine::PrefixCacheOptions::ForBudget(layout->slot_bytes(), a.concurrency,
                                              a.prefix_cache_memory_mib, a.prefix_cache_host_mib)
            .value_or(engine::PrefixCacheOptions{});
    cache.asynchronous_host_copies = !a.prefix_cache_sync_host_copies;
  }
  auto core = engine::EngineCore::Create(
      std::move(*backend),
      {.token_budget = a.token_budget,
       .max_batch = a.max_batch,
       .max_queue = requests,
       .step_time_target = absl::Microseconds(std::llround(a.step_time_target_ms * 1e3)),
       .prefix_cache = cache});
  if (!core.ok()) {
    std::printf("engine: %s\n", core.status().ToString().c_str());
    return 1;
  }
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0, failed = 0;
  int64_t output_tokens = 0;
  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> id(10, 499);
  auto submit = [&] {
    engine::ValidatedRequest r;
    r.prompt.resize(a.input_len);
    for (int32_t& t : r.prompt) t = id(rng);
    r.sampling.temperature = 0.0f;
    r.max_tokens = a.output_len;
    r.ignore_eos = true;
    auto submitted = (*core)->Submit(std::move(r), [&](engine::EngineOutput out) {
      std::lock_guard<std::mutex> lock(mu);
      output_tokens += static_cast<int64_t>(out.tokens.size());
      if (out.finished) {
        ++finished;
        failed += !out.status.ok();
        cv.notify_all();
      }
    });
    if (!submitted.ok()) std::printf("submit: %s\n", submitted.status().ToString().c_str());
  };
  const auto start = std::chrono::steady_clock::now();
  int sent = 0;
  for (; sent < std::min(a.concurrency, requests); ++sent) submit();
  {
    std::unique_lock<std::mutex> lock(mu);
    while (finished < requests) {
      cv.wait(lock);
      while (sent < requests && sent - finished < a.concurrency) {
        ++sent;
        lock.unlock();
        submit();
        lock.lock();
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "engine alone (%s%s%s), closed loop: concurrency %d, %d requests of %d in / %d out, "
      "token budget %lld, max batch %d: %.1f s, %.0f output tok/s, %.2f req/s, %d failed\n",
      name.c_str(), a.backend == engine::BackendKind::kSimulated ? ", simulated backend" : "",
      !paths.fp8_weights ? "" : (paths.fp8_activations ? ", FP8 W8A8" : ", FP8 W8A16"),
      a.concurrency, requests, a.input_len, a.output_len, static_cast<long long>(a.token_budget),
      a.max_batch, seconds, output_tokens / seconds, requests / seconds, failed);
  // The server's overhead over this loop (issue 13) is compared step by step: griffin-server's
  // /metrics exports the same split (griffin_engine_{steps,busy_seconds,backend_seconds}_total).
  const engine::EngineStats stats = (*core)->stats();
  const double steps = static_cast<double>(std::max<int64_t>(stats.steps, 1));
  std::printf(
      "engine thread: %lld steps, per step %.3f ms busy = %.3f ms forward pass + %.3f ms host; "
      "%lld steps' prompt tokens capped by the step time target\n",
      static_cast<long long>(stats.steps), absl::ToDoubleMilliseconds(stats.busy_time) / steps,
      absl::ToDoubleMilliseconds(stats.backend_time) / steps,
      absl::ToDoubleMilliseconds(stats.busy_time - stats.backend_time) / steps,
      static_cast<long long>(stats.prefill_capped_steps));
  if (cache.max_device_entries > 0 || cache.host_bytes > 0) {
    std::printf(
        "prefix cache: %d device entries, %lld MiB host, host copies %s: %lld insertions, "
        "%lld demotions, %lld hits\n",
        cache.max_device_entries, static_cast<long long>(a.prefix_cache_host_mib),
        cache.asynchronous_host_copies ? "asynchronous" : "synchronous",
        static_cast<long long>(stats.prefix_cache.insertions),
        static_cast<long long>(stats.prefix_cache.demotions),
        static_cast<long long>(stats.prefix_cache.hits));
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace griffin

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the CUDA backend on recurrentgemma-2b / 9b shapes with random weights: decode, prefill and "
      "memory figures beside their floors; --serving for the engine alone closed loop; --profile "
      "for one step's launch trace under ncu");
  absl::ParseCommandLine(argc, argv);
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model != "2b" && model != "9b" && model != "all") {
    std::fprintf(stderr, "--model must be 2b, 9b or all\n");
    return 2;
  }
  if (auto q = griffin::engine::ParseWeightQuantization(absl::GetFlag(FLAGS_quantization));
      !q.ok()) {
    std::fprintf(stderr, "--quantization: %s\n", std::string(q.status().message()).c_str());
    return 2;
  }
  griffin::ServingArgs serving;
  serving.concurrency = absl::GetFlag(FLAGS_serving);
  serving.input_len = absl::GetFlag(FLAGS_input_len);
  serving.output_len = absl::GetFlag(FLAGS_output_len);
  serving.num_requests = absl::GetFlag(FLAGS_num_requests);
  serving.token_budget = absl::GetFlag(FLAGS_token_budget);
  serving.max_batch = absl::GetFlag(FLAGS_max_batch);
  serving.step_time_target_ms = absl::GetFlag(FLAGS_step_time_target_ms);
  serving.prefix_cache_memory_mib = absl::GetFlag(FLAGS_prefix_cache_memory_mib);
  serving.prefix_cache_host_mib = absl::GetFlag(FLAGS_prefix_cache_host_mib);
  serving.prefix_cache_sync_host_copies = absl::GetFlag(FLAGS_prefix_cache_sync_host_copies);
  if (serving.prefix_cache_memory_mib < 0 || serving.prefix_cache_host_mib < 0) {
    std::fprintf(stderr, "--prefix_cache_memory_mib and --prefix_cache_host_mib must be >= 0\n");
    return 2;
  }
  if (auto b = griffin::engine::ParseBackendKind(absl::GetFlag(FLAGS_backend));
      !b.ok() || *b == griffin::engine::BackendKind::kCpu) {
    std::fprintf(stderr, "--backend must be cuda or simulated\n");
    return 2;
  } else {
    serving.backend = *b;
  }
  if (auto t = griffin::engine::ParseSimulatedStepTime(absl::GetFlag(FLAGS_simulated_step_us));
      !t.ok()) {
    std::fprintf(stderr, "--simulated_step_us: %s\n", std::string(t.status().message()).c_str());
    return 2;
  } else {
    serving.simulated_step_time = *t;
  }
  const bool simulated = serving.backend == griffin::engine::BackendKind::kSimulated;
  if (simulated && (serving.concurrency <= 0 || !absl::GetFlag(FLAGS_profile).empty())) {
    std::fprintf(stderr, "--backend simulated runs --serving only\n");
    return 2;
  }
  const std::string profile = absl::GetFlag(FLAGS_profile);
  std::string kind;
  int profile_a = 0, profile_b = 0;
  if (!profile.empty()) {
    const std::vector<std::string> parts = absl::StrSplit(profile, ':');
    if (parts.size() != 3 || (parts[0] != "decode" && parts[0] != "prefill") ||
        !absl::SimpleAtoi(parts[1], &profile_a) || !absl::SimpleAtoi(parts[2], &profile_b) ||
        profile_a < 1 || profile_b < (parts[0] == "decode" ? 0 : 1) ||
        absl::GetFlag(FLAGS_trace_out).empty() || model == "all") {
      std::fprintf(stderr,
                   "--profile takes decode:BATCH:POSITION or prefill:SEQUENCES:TOKENS, "
                   "with --trace_out and --model 2b or 9b\n");
      return 2;
    }
    kind = parts[0];
  }
  if (!simulated && !griffin::engine::CudaDeviceAvailable()) {
    std::printf("no CUDA device: engine_bench skipped\n");
    return 0;
  }
  if (!kind.empty()) {
    return griffin::Profile(model, kind, profile_a, profile_b, absl::GetFlag(FLAGS_trace_out));
  }
  if (serving.concurrency > 0) {
    if (serving.input_len < 1 || serving.output_len < 1 || serving.max_batch < 1 ||
        serving.token_budget < 1) {
      std::fprintf(stderr, "--input_len, --output_len, --max_batch, --token_budget must be >= 1\n");
      return 2;
    }
    return griffin::RunServing(model == "9b" ? "9b" : "2b", serving);
  }
  const bool quick = absl::GetFlag(FLAGS_quick);
  const int reps = std::max(3, absl::GetFlag(FLAGS_reps));
  int failures = 0;
  if (model == "2b" || model == "all") failures += griffin::Run("2b", quick, reps);
  if (model == "9b" || model == "all") failures += griffin::Run("9b", quick, reps);
  return failures == 0 ? 0 : 1;
}
