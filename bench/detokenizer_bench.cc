// The server's per-token text work (issue 13, the server's overhead): one generated id through the
// streaming detokenizer, on a tokenizer given by GRIFFIN_TOKENIZER (default: the demo model's
// 8k-piece one; bench/make_dummy_model.py writes a 256k-piece one of Gemma's size). Ids are drawn
// uniformly over the vocabulary, as random weights sample them, so a vocabulary larger than the
// caches shows what a lookup that misses costs.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "loader/tokenizer.h"
#include "server/detokenizer.h"

namespace griffin::server {
namespace {

std::string TokenizerPath() {
  const char* env = std::getenv("GRIFFIN_TOKENIZER");
  return env != nullptr ? env : std::string(GRIFFIN_SOURCE_DIR) + "/models/demo/tokenizer.model";
}

const loader::Tokenizer* SharedTokenizer() {
  static const loader::Tokenizer* tokenizer = [] {
    const std::string path = TokenizerPath();
    auto loaded = loader::Tokenizer::Load(path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), loaded.status().ToString().c_str());
      std::exit(2);
    }
    return loaded->release();
  }();
  return tokenizer;
}

void BM_DetokenizeOneToken(benchmark::State& state) {
  const loader::Tokenizer* tokenizer = SharedTokenizer();
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> id(0, tokenizer->vocab_size() - 1);
  std::vector<int> ids(1 << 16);
  for (int& i : ids) i = id(rng);
  IncrementalDetokenizer detokenizer(tokenizer);
  size_t n = 0, bytes = 0;
  for (auto _ : state) {
    const std::string text = detokenizer.Add(ids[n++ & (ids.size() - 1)]);
    bytes += text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["vocab"] = tokenizer->vocab_size();
  state.counters["bytes_per_token"] = static_cast<double>(bytes) / static_cast<double>(n);
}
BENCHMARK(BM_DetokenizeOneToken);

void BM_TokenizerLoad(benchmark::State& state) {
  const std::string path = TokenizerPath();
  for (auto _ : state) {
    auto loaded = loader::Tokenizer::Load(path);
    benchmark::DoNotOptimize(loaded.ok());
  }
}
BENCHMARK(BM_TokenizerLoad)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace griffin::server
