// CUDA backend parity (issue 4) on the golden fixtures tests/data/{griffin,hawk,attnfirst}, whose
// golden.safetensors hold log-probabilities from the DeepMind reference in float32:
//  - SPEC.md §8.4 bf16 path: mean |logprob - reference| <= 2e-2 and top-1 agreement >= 99% (positions
//    whose reference top-2 lie within 1e-2 left out), for whole prefill, chunked prefill (1 = pure
//    decode through the CUDA graphs, 3, window + 1) and prefill-then-decode;
//  - the Backend contract: a step never changes slots not in it, a reset or reused slot starts from
//    zero state, INVALID_ARGUMENT changes nothing, a batch of mixed prompt lengths gives each
//    sequence the greedy tokens it gets alone (NUM-1), GPU greedy sampling == argmax of the logits.
// Without a CUDA device every test skips with "no CUDA device: GPU test skipped".
// The fixtures are found under $GRIFFIN_SOURCE_DIR when set (device runs), else the source tree.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cuda_backend.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "tests/golden_data.h"

namespace griffin {
namespace {

using engine::CudaBackend;
using engine::LogitsRequest;
using engine::StepEntry;

#define SKIP_WITHOUT_GPU() \
  if (!engine::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped"

using golden::FixtureDir;
using golden::GoldenSequence;

struct Agreement {
  double mean_abs = 0, max_abs = 0, top1 = 1;
  int counted = 0;
};

// §8.4 metrics of `got` against `ref` ([T, V] log-probabilities).
Agreement Compare(const std::vector<float>& got, const std::vector<float>& ref, int V) {
  Agreement a;
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(double(got[i]) - ref[i]);
    sum += d;
    a.max_abs = std::max(a.max_abs, d);
  }
  a.mean_abs = sum / got.size();
  int agree = 0;
  const int T = got.size() / V;
  for (int t = 0; t < T; ++t) {
    const float* r = &ref[size_t(t) * V];
    const float* g = &got[size_t(t) * V];
    std::vector<float> sorted(r, r + V);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (V > 1 && sorted[0] - sorted[1] < 1e-2f) continue;  // near-tie
    ++a.counted;
    agree += std::max_element(g, g + V) - g == std::max_element(r, r + V) - r;
  }
  a.top1 = a.counted ? double(agree) / a.counted : 1.0;
  return a;
}

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    dir_ = FixtureDir(GetParam());
    auto checkpoint = loader::Checkpoint::Open(dir_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    engine::CudaBackendOptions opt;
    opt.num_slots = 8;
    opt.max_tokens_per_step = 64;  // small, so long prompts also run as several passes
    opt.max_decode_batch = 8;
    auto backend = CudaBackend::Create(*checkpoint_, opt);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    vocab_ = checkpoint_->config().vocab_size;
    window_ = checkpoint_->config().attention_window;
    auto loaded = golden::LoadGolden(dir_, vocab_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    golden_ = std::move(*loaded);
  }

  // Log-probabilities of every position, in chunks of `chunk` tokens (0: all at once) on `slot`.
  std::vector<float> LogProbs(const std::vector<int32_t>& tokens, int chunk, int slot = 1) {
    const int T = tokens.size();
    if (chunk == 0) chunk = T;
    std::vector<float> logits(size_t(T) * vocab_);
    for (int s = 0; s < T; s += chunk) {
      const int n = std::min(chunk, T - s);
      StepEntry e{.slot = slot, .position = s, .tokens = absl::MakeConstSpan(tokens).subspan(s, n),
                  .logits = LogitsRequest::kAll};
      absl::Status st = backend_->Step(
          {&e, 1}, absl::MakeSpan(logits).subspan(size_t(s) * vocab_, size_t(n) * vocab_));
      EXPECT_TRUE(st.ok()) << st;
    }
    return ToLogProbs(logits);
  }
  std::vector<float> ToLogProbs(const std::vector<float>& logits) const {
    std::vector<float> out(logits.size());
    for (size_t t = 0; t < logits.size() / vocab_; ++t) {
      engine::LogSoftmax(absl::MakeConstSpan(logits).subspan(t * vocab_, vocab_),
                         absl::MakeSpan(out).subspan(t * vocab_, vocab_));
    }
    return out;
  }
  void ExpectWithinSpec(const std::vector<float>& got, const GoldenSequence& g, const char* what) {
    const Agreement a = Compare(got, g.logprobs, vocab_);
    std::printf("%s %s T=%zu: mean |dlogprob| %.3g, max %.3g, top-1 %.4f over %d positions\n",
                GetParam().c_str(), what, g.tokens.size(), a.mean_abs, a.max_abs, a.top1,
                a.counted);
    EXPECT_LE(a.mean_abs, 2e-2) << GetParam() << " " << what;
    EXPECT_GE(a.top1, 0.99) << GetParam() << " " << what;
  }

  std::string dir_;
  std::unique_ptr<loader::Checkpoint> checkpoint_;
  std::unique_ptr<CudaBackend> backend_;
  int vocab_ = 0, window_ = 1;
  std::vector<GoldenSequence> golden_;
};

TEST_P(CudaGoldenTest, PrefillChunkedAndDecodeMatchReference) {
  for (const GoldenSequence& g : golden_) {
    const auto whole = LogProbs(g.tokens, 0);
    ExpectWithinSpec(whole, g, "prefill");
    for (int chunk : {1, 3, window_ + 1}) {
      const auto pieces = LogProbs(g.tokens, chunk);
      ExpectWithinSpec(pieces, g, chunk == 1 ? "decode-only" : "chunked");
      // Between paths (tensor-core prefill attention with P in half vs the float32 decode kernel,
      // GEMM batch sizes): half the §8.4 budget.
      const Agreement a = Compare(pieces, whole, vocab_);
      EXPECT_LE(a.mean_abs, 1e-2) << "chunk " << chunk << " vs whole";
    }
    // Prefill all but the last token, then decode it (the reference sampler's flow), per prefix.
    backend_->set_use_cuda_graphs(false);
    const auto eager = LogProbs(g.tokens, 1);
    backend_->set_use_cuda_graphs(true);
    ExpectWithinSpec(eager, g, "decode-eager");
  }
}

TEST_P(CudaGoldenTest, PrefillThenDecodeEqualsDecodeOnly) {
  const GoldenSequence& g = golden_[0];
  const int T = g.tokens.size();
  const int split = T / 2;
  std::vector<float> logits(size_t(T) * vocab_);
  StepEntry pre{.slot = 2, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, split),
                .logits = LogitsRequest::kAll};
  ASSERT_TRUE(backend_->Step({&pre, 1}, absl::MakeSpan(logits).subspan(0, size_t(split) * vocab_)).ok());
  for (int t = split; t < T; ++t) {
    StepEntry e{.slot = 2, .position = t, .tokens = absl::MakeConstSpan(g.tokens).subspan(t, 1),
                .logits = LogitsRequest::kLast};
    ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(t) * vocab_, vocab_)).ok());
  }
  const auto mixed = ToLogProbs(logits);
  const auto decode_only = LogProbs(g.tokens, 1, 3);
  const Agreement a = Compare(mixed, decode_only, vocab_);
  EXPECT_LE(a.mean_abs, 1e-2);
  EXPECT_GE(a.top1, 0.99);
  ExpectWithinSpec(mixed, g, "prefill-then-decode");
}

TEST_P(CudaGoldenTest, StepNeverTouchesOtherSlotsAndResetStartsClean) {
  const GoldenSequence& g = golden_[0];
  const int T = g.tokens.size();
  // Slot 4 alone: the reference run.
  const auto alone = LogProbs(g.tokens, 4, 4);
  ASSERT_TRUE(backend_->ResetSlot(4).ok());
  // Slot 4 again, interleaved with unrelated work on slots 5 and 6 (prefill and decode).
  std::vector<int32_t> other(T);
  for (int i = 0; i < T; ++i) other[i] = (g.tokens[T - 1 - i] * 7 + 3) % vocab_;
  std::vector<float> logits(size_t(T) * vocab_), scratch(size_t(T) * vocab_);
  for (int s = 0; s < T; s += 4) {
    const int n = std::min(4, T - s);
    StepEntry e{.slot = 4, .position = s, .tokens = absl::MakeConstSpan(g.tokens).subspan(s, n),
                .logits = LogitsRequest::kAll};
    ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(s) * vocab_, size_t(n) * vocab_)).ok());
    StepEntry o{.slot = 5, .position = s, .tokens = absl::MakeConstSpan(other).subspan(s, n),
                .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&o, 1}, {}).ok());
    StepEntry d{.slot = 6, .position = s == 0 ? 0 : backend_->NextPosition(6),
                .tokens = absl::MakeConstSpan(other).subspan(s, 1), .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&d, 1}, {}).ok());
  }
  EXPECT_EQ(ToLogProbs(logits), alone) << "other slots' steps changed slot 4";

  // A used slot restarted at position 0 (reset by Step) and one reset by ResetSlot both match a
  // fresh slot bitwise.
  const auto reused = LogProbs(g.tokens, 4, 5);
  EXPECT_EQ(reused, alone);
  ASSERT_TRUE(backend_->ResetSlot(6).ok());
  EXPECT_EQ(backend_->NextPosition(6), 0);
  EXPECT_EQ(LogProbs(g.tokens, 4, 6), alone);
}

TEST_P(CudaGoldenTest, InvalidArgumentChangesNothing) {
  const GoldenSequence& g = golden_[0];
  const auto before = LogProbs(g.tokens, 0, 0);
  const int64_t pos = backend_->NextPosition(0);
  std::vector<int32_t> bad = {1, vocab_};
  StepEntry e{.slot = 0, .position = pos, .tokens = bad, .logits = LogitsRequest::kLast};
  std::vector<float> logits(vocab_);
  EXPECT_EQ(backend_->Step({&e, 1}, absl::MakeSpan(logits)).code(), absl::StatusCode::kInvalidArgument);
  StepEntry wrong_pos{.slot = 0, .position = pos + 1, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)};
  EXPECT_EQ(backend_->Step({&wrong_pos, 1}, absl::MakeSpan(logits)).code(),
            absl::StatusCode::kInvalidArgument);
  StepEntry twice[2] = {{.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)},
                        {.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)}};
  std::vector<float> two(2 * vocab_);
  EXPECT_EQ(backend_->Step(twice, absl::MakeSpan(two)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->NextPosition(0), pos);
}

// NUM-1: prompts of mixed lengths prefilled in one step and decoded together give each sequence
// the greedy tokens it gets alone. GEMM rounding depends on the batch size, so a mismatch is
// accepted only at a near-tie of the alone run (top-2 within 2e-2); the sequences then diverge.
TEST_P(CudaGoldenTest, MixedBatchGreedyEqualsAlone) {
  const GoldenSequence& g = golden_[0];
  const std::vector<int> lengths = {1, 2, 5, 17, int(g.tokens.size())};
  const int steps = 12;
  const int B = lengths.size();
  auto greedy_alone = [&](int len, std::vector<std::vector<float>>* logit_rows) {
    std::vector<int32_t> out;
    std::vector<float> logits(vocab_);
    StepEntry e{.slot = 7, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, len)};
    EXPECT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits)).ok());
    for (int s = 0; s < steps; ++s) {
      logit_rows->push_back(logits);
      out.push_back(engine::ArgMax(logits));
      StepEntry d{.slot = 7, .position = len + s, .tokens = absl::MakeConstSpan(&out.back(), 1)};
      EXPECT_TRUE(backend_->Step({&d, 1}, absl::MakeSpan(logits)).ok());
    }
    return out;
  };
  // Together, through StepSample (GPU greedy).
  std::vector<std::vector<int32_t>> together(B);
  std::vector<StepEntry> entries;
  for (int b = 0; b < B; ++b) {
    entries.push_back({.slot = b, .position = 0,
                       .tokens = absl::MakeConstSpan(g.tokens).subspan(0, lengths[b])});
  }
  std::vector<engine::GpuSampleRequest> req(B);
  for (auto& r : req) r.params.temperature = 0.0f;
  std::vector<int32_t> tok(B);
  ASSERT_TRUE(backend_->StepSample(entries, req, absl::MakeSpan(tok)).ok());
  for (int s = 0; s < steps; ++s) {
    entries.clear();
    for (int b = 0; b < B; ++b) {
      together[b].push_back(tok[b]);
      entries.push_back({.slot = b, .position = lengths[b] + s,
                         .tokens = absl::MakeConstSpan(&together[b].back(), 1)});
    }
    ASSERT_TRUE(backend_->StepSample(entries, req, absl::MakeSpan(tok)).ok());
  }
  for (int b = 0; b < B; ++b) {
    std::vector<std::vector<float>> rows;
    const auto alone = greedy_alone(lengths[b], &rows);
    for (int s = 0; s < steps; ++s) {
      if (alone[s] == together[b][s]) continue;
      std::vector<float> sorted = rows[s];
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      EXPECT_LT(sorted[0] - sorted[1], 2e-2f) << "length " << lengths[b] << " step " << s;
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGoldenTest,
                         ::testing::Values("griffin", "hawk", "attnfirst"));

}  // namespace
}  // namespace griffin
