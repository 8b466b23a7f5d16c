// The CPU backend's decode step and prefill throughput on a small random model. The CPU backend is
// the readable reference, not a fast path: these figures exist to notice regressions in it, and to
// size CPU-backend test servers.
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "engine/cpu_backend.h"
#include "engine/random_checkpoint.h"
#include "loader/checkpoint.h"

namespace griffin::engine {
namespace {

std::unique_ptr<CpuBackend> MakeBackend(int hidden, int layers) {
  using loader::BlockType;
  loader::ModelConfig c =
      TinyConfig({BlockType::kRecurrent, BlockType::kRecurrent, BlockType::kAttention}, layers, 64);
  c.hidden_size = hidden;
  c.lru_width = hidden;
  c.mlp_width = 3 * hidden;
  c.head_dim = hidden / c.num_heads;
  c.vocab_size = 4096;
  const std::string dir =
      (std::filesystem::temp_directory_path() / absl::StrCat("griffin_bench_", getpid())).string();
  if (!WriteRandomCheckpoint(dir, c, 1).ok()) return nullptr;
  auto checkpoint = loader::Checkpoint::Open(dir);
  auto backend = CpuBackend::Create(**checkpoint, 1);
  std::filesystem::remove_all(dir);
  return std::move(*backend);
}

void BM_CpuDecodeStep(benchmark::State& state) {
  auto backend = MakeBackend(state.range(0), 6);
  std::vector<float> logits(backend->config().vocab_size);
  const int32_t token[] = {5};
  StepEntry e{.slot = 0, .position = 0, .tokens = token};
  for (auto _ : state) {
    if (!backend->Step({&e, 1}, absl::MakeSpan(logits)).ok()) state.SkipWithError("step failed");
    e.position = backend->NextPosition(0);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CpuDecodeStep)->Arg(128)->Arg(256);

void BM_CpuPrefill(benchmark::State& state) {
  auto backend = MakeBackend(128, 6);
  std::vector<int32_t> tokens(state.range(0), 7);
  std::vector<float> logits(backend->config().vocab_size);
  for (auto _ : state) {
    StepEntry e{.slot = 0, .position = 0, .tokens = tokens};
    if (!backend->Step({&e, 1}, absl::MakeSpan(logits)).ok()) state.SkipWithError("step failed");
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_CpuPrefill)->Arg(64)->Arg(256);

}  // namespace
}  // namespace griffin::engine
