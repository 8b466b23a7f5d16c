// CUDA backend parity (issue 4) on the golden fixtures tests/data/{griffin,hawk,attnfirst}, whose
// golden.safetensors hold log-probabilities from the DeepMind reference in float32, and on the
// trained bundled model (models/demo) over real text (tests/data/demo_parity/text.txt), whose
// golden.safetensors holds the DeepMind reference's float32 log-probabilities too (read through
// tests/golden_data, which also checks that our tokenizer gives the reference's ids):
//  - SPEC.md §8.4 bf16 path: mean |logprob - reference| <= 2e-2 for every sequence, and top-1
//    agreement >= 99% on the golden sequences (positions whose reference top-2 lie within 1e-2 left
//    out), for whole prefill, chunked prefill (1 = pure decode through the CUDA graphs, 3,
//    window + 1), eager decode and prefill-then-decode. Top-1 is counted over all sequences of all
//    cases together: a single sequence of 17-41 tokens cannot express 99% (one flip is 2.5-6%);
//  - the Backend contract: a step never changes slots not in it, a reset or reused slot starts from
//    zero state, INVALID_ARGUMENT changes nothing, a batch of mixed prompt lengths gives each
//    sequence the greedy tokens it gets alone (NUM-1), GPU greedy sampling == argmax of the logits;
//  - the engine samples on the GPU as it does on the host;
//  - FP8 weights (issue 14, CudaBackendOptions::fp8_weights): the GPU's FP8 paths against the CPU
//    backend's emulation of the same numerics (CpuNumerics::kEmulateFp8Weights for the W8A16
//    GEMV and expanded-to-bf16 GEMMs, kEmulateFp8WeightsAndActivations for the W8A8 GEMMs) within
//    §8.4's budget, and the demo model's quality beside bf16 (printed for bench/RESULTS.md).
// Without a CUDA device every test skips with "no CUDA device: GPU test skipped".
// The fixtures are found under $GRIFFIN_SOURCE_DIR when set (device runs), else the source tree.
#include "engine/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu_backend.h"
#include "engine/engine_core.h"
#include "engine/griffin_model.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "kernels/linear/gemm_geglu.cuh"
#include "kernels/linear/gemm_prefetch.cuh"
#include "kernels/linear/gemv.cuh"
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

using golden::Agreement;

Agreement Compare(const std::vector<float>& got, const std::vector<float>& ref, int V) {
  return golden::CompareLogProbs(got, ref, V);
}
// `got` ([T, V], every position) against the positions `g` holds references for.
Agreement CompareToGolden(const std::vector<float>& got, const GoldenSequence& g, int V) {
  return golden::CompareLogProbs(golden::SelectRows(got, g, V), g.logprobs, V);
}

std::vector<float> LogSoftmaxRows(const std::vector<float>& logits, int vocab) {
  std::vector<float> out(logits.size());
  for (size_t t = 0; t < logits.size() / vocab; ++t) {
    engine::LogSoftmax(absl::MakeConstSpan(logits).subspan(t * vocab, vocab),
                       absl::MakeSpan(out).subspan(t * vocab, vocab));
  }
  return out;
}

std::vector<float> StepLogProbs(engine::Backend& backend, const std::vector<int32_t>& tokens,
                                int chunk, int slot) {
  auto got = golden::StepLogProbs(backend, tokens, chunk, slot);
  EXPECT_TRUE(got.ok()) << got.status();
  return got.ok() ? std::move(*got) : std::vector<float>();
}

// The first half of `tokens` as one prefill, then one decode step per token (the sampler's flow).
std::vector<float> PrefillThenDecodeLogProbs(engine::Backend& backend,
                                             const std::vector<int32_t>& tokens, int slot) {
  const int T = tokens.size();
  const int V = backend.config().vocab_size;
  const int split = T / 2;
  std::vector<float> logits(size_t(T) * V);
  StepEntry pre{.slot = slot,
                .position = 0,
                .tokens = absl::MakeConstSpan(tokens).subspan(0, split),
                .logits = LogitsRequest::kAll};
  EXPECT_TRUE(backend.Step({&pre, 1}, absl::MakeSpan(logits).subspan(0, size_t(split) * V)).ok());
  for (int t = split; t < T; ++t) {
    StepEntry e{.slot = slot,
                .position = t,
                .tokens = absl::MakeConstSpan(tokens).subspan(t, 1),
                .logits = LogitsRequest::kLast};
    EXPECT_TRUE(backend.Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(t) * V, V)).ok());
  }
  return LogSoftmaxRows(logits, V);
}

bool SanitizerRun();

// A parity case: a checkpoint and its reference sequences, all the DeepMind reference's goldens.
// "demo" is the trained bundled model on real text: confident
// predictions, 565 positions, the case where top-1 agreement says most about the engine.
engine::CudaBackendOptions TestOptions() {
  engine::CudaBackendOptions opt;
  opt.num_slots = 8;
  opt.max_tokens_per_step = 64;  // small, so long prompts also run as several passes
  opt.max_decode_batch = 8;
  opt.autotune_gemms = !SanitizerRun();
  return opt;
}

// FP8 projections; W8A8 from two tokens a pass, or W8A16 throughout.
engine::CudaBackendOptions Fp8Options(bool w8a8) {
  engine::CudaBackendOptions opt = TestOptions();
  opt.fp8_weights = true;
  opt.fp8_activations = w8a8;
  return opt;
}

std::unique_ptr<CudaBackend> MakeBackend(const loader::Checkpoint& checkpoint,
                                         const engine::CudaBackendOptions& opt = TestOptions()) {
  auto backend = CudaBackend::Create(checkpoint, opt);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(*backend) : nullptr;
}

// Under compute-sanitizer (bench/run_sanitizers.sh sets GRIFFIN_SANITIZER_RUN) every kernel runs
// 10-100x slower, racecheck ~1000x: about a second per step of the demo model with several
// processes sharing the GPU, so a test's cost is its number of steps. Sequences are cut to 24
// tokens (GRIFFIN_SANITIZER_TOKENS: racecheck's run sets 16), two to three times the fixtures' 5-8-
// token windows, so the rings still wrap (the demo model's 256-token window does not at any cut),
// enough to run every path; the tests that repeat one path many times run it fewer times.
bool SanitizerRun() { return std::getenv("GRIFFIN_SANITIZER_RUN") != nullptr; }
size_t SanitizerTokens() {
  const char* v = std::getenv("GRIFFIN_SANITIZER_TOKENS");
  const int tokens = v != nullptr ? std::atoi(v) : 24;
  // Below 10 the 8-token windows would not wrap: the paths this cut is meant to keep.
  return static_cast<size_t>(std::max(tokens, 10));
}
absl::StatusOr<golden::ParityCase> LoadCase(const std::string& name) {
  auto c = golden::LoadParityCase(name);
  if (!c.ok() || !SanitizerRun()) return c;
  const int V = c->checkpoint->config().vocab_size;
  const size_t cut = SanitizerTokens();
  for (GoldenSequence& g : c->golden) {
    if (g.tokens.size() <= cut) continue;
    g.tokens.resize(cut);
    g.next_logprobs.resize(cut);
    size_t rows = 0;
    while (rows < g.positions.size() && g.positions[rows] < int(cut)) ++rows;
    g.positions.resize(rows);
    g.logprobs.resize(rows * V);
  }
  return c;
}

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    auto c = LoadCase(GetParam());
    ASSERT_TRUE(c.ok()) << c.status();
    checkpoint_ = std::move(c->checkpoint);
    golden_ = std::move(c->golden);
    backend_ = MakeBackend(*checkpoint_);
    ASSERT_NE(backend_, nullptr);
    vocab_ = checkpoint_->config().vocab_size;
    window_ = checkpoint_->config().attention_window;
  }

  std::vector<float> LogProbs(const std::vector<int32_t>& tokens, int chunk, int slot = 1) {
    return StepLogProbs(*backend_, tokens, chunk, slot);
  }
  std::vector<float> ToLogProbs(const std::vector<float>& logits) const {
    return LogSoftmaxRows(logits, vocab_);
  }
  // The per-sequence half of §8.4 (the mean); top-1 is asserted over all sequences together
  // (CudaParityTest.Top1AgreementOverAllGoldenSequences) and printed here.
  void ExpectWithinSpec(const std::vector<float>& got, const GoldenSequence& g, const char* what) {
    const Agreement a = CompareToGolden(got, g, vocab_);
    std::printf("%s %s T=%zu: mean |dlogprob| %.3g, max %.3g, top-1 %.4f over %d positions\n",
                GetParam().c_str(), what, g.tokens.size(), a.mean_abs, a.max_abs, a.top1,
                a.counted);
    EXPECT_LE(a.mean_abs, 2e-2) << GetParam() << " " << what;
  }

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

// The decode kernels the defaults leave to other batch sizes, at batch 1: the RG-LRU gates as the
// batched tensor-core GEMM with the elementwise finish (the default from 16 sequences up), and the
// narrow one-row projections on cuBLASLt instead of the split-K GEMV.
TEST_P(CudaGoldenTest, OtherDecodeKernelPathsMatchReference) {
  engine::CudaBackendOptions opt = TestOptions();
  opt.rglru_gate_gemm_min_batch = 1;
  opt.gemv_for_narrow_projections = false;
  std::unique_ptr<CudaBackend> other = MakeBackend(*checkpoint_, opt);
  ASSERT_NE(other, nullptr);
  for (const GoldenSequence& g : golden_) {
    const auto got = StepLogProbs(*other, g.tokens, 1, 1);
    ExpectWithinSpec(got, g, "decode-only, gate GEMM, cuBLASLt projections");
    const Agreement a = Compare(got, LogProbs(g.tokens, 1), vocab_);
    EXPECT_LE(a.mean_abs, 1e-2) << "vs the default decode kernels";
  }
}

TEST_P(CudaGoldenTest, PrefillThenDecodeEqualsDecodeOnly) {
  const GoldenSequence& g = golden_[0];
  const auto mixed = PrefillThenDecodeLogProbs(*backend_, g.tokens, 2);
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
    StepEntry e{.slot = 4,
                .position = s,
                .tokens = absl::MakeConstSpan(g.tokens).subspan(s, n),
                .logits = LogitsRequest::kAll};
    ASSERT_TRUE(
        backend_
            ->Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(s) * vocab_, size_t(n) * vocab_))
            .ok());
    StepEntry o{.slot = 5,
                .position = s,
                .tokens = absl::MakeConstSpan(other).subspan(s, n),
                .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&o, 1}, {}).ok());
    StepEntry d{.slot = 6,
                .position = s == 0 ? 0 : backend_->NextPosition(6),
                .tokens = absl::MakeConstSpan(other).subspan(s, 1),
                .logits = LogitsRequest::kNone};
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
  EXPECT_EQ(backend_->Step({&e, 1}, absl::MakeSpan(logits)).code(),
            absl::StatusCode::kInvalidArgument);
  StepEntry wrong_pos{
      .slot = 0, .position = pos + 1, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)};
  EXPECT_EQ(backend_->Step({&wrong_pos, 1}, absl::MakeSpan(logits)).code(),
            absl::StatusCode::kInvalidArgument);
  StepEntry twice[2] = {
      {.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)},
      {.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 1)}};
  std::vector<float> two(2 * vocab_);
  EXPECT_EQ(backend_->Step(twice, absl::MakeSpan(two)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->NextPosition(0), pos);
}

// KER-2 (c) on the GPU: a slot snapshotted to host memory and restored into another slot, and a
// slot copied on the device, continue with the original's greedy tokens (bitwise equal logits:
// each runs alone through the same decode graph).
TEST_P(CudaGoldenTest, RestoredAndCopiedSlotsContinueIdentically) {
  const GoldenSequence& g = golden_[0];
  const int prefix = std::max<int>(1, std::min<int>(g.tokens.size(), window_ + 2));
  const engine::StateLayout* layout = backend_->state_layout();
  ASSERT_NE(layout, nullptr);
  ASSERT_EQ(layout->slot_bytes(), backend_->state_bytes_per_sequence());
  StepEntry pre{.slot = 0,
                .position = 0,
                .tokens = absl::MakeConstSpan(g.tokens).subspan(0, prefix),
                .logits = LogitsRequest::kNone};
  ASSERT_TRUE(backend_->Step({&pre, 1}, {}).ok());
  std::vector<uint8_t> snapshot(layout->slot_bytes());
  auto position = backend_->SnapshotSlot(0, absl::MakeSpan(snapshot));
  ASSERT_TRUE(position.ok()) << position.status();
  ASSERT_EQ(*position, prefix);
  ASSERT_TRUE(backend_->CopySlot(0, 2).ok());
  // Slot 1 holds another sequence before the restore overwrites it.
  StepEntry dirty{.slot = 1,
                  .position = 0,
                  .tokens = absl::MakeConstSpan(g.tokens).subspan(0, 3),
                  .logits = LogitsRequest::kNone};
  ASSERT_TRUE(backend_->Step({&dirty, 1}, {}).ok());
  ASSERT_TRUE(backend_->RestoreSlot(1, snapshot, *position).ok());
  std::vector<int32_t> next(3, g.tokens[prefix - 1]);
  for (int step = 0; step < 8; ++step) {
    std::vector<float> logits[3];
    for (int slot : {0, 1, 2}) {
      logits[slot].assign(vocab_, NAN);
      StepEntry e{
          .slot = slot, .position = prefix + step, .tokens = absl::MakeConstSpan(&next[slot], 1)};
      ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits[slot])).ok());
      next[slot] = engine::ArgMax(logits[slot]);
    }
    EXPECT_EQ(next[1], next[0]) << "restored slot, step " << step;
    EXPECT_EQ(next[2], next[0]) << "copied slot, step " << step;
    EXPECT_EQ(logits[1], logits[0]) << "restored slot, step " << step;
    EXPECT_EQ(logits[2], logits[0]) << "copied slot, step " << step;
  }
  std::vector<uint8_t> short_buffer(layout->slot_bytes() - 1);
  EXPECT_EQ(backend_->RestoreSlot(1, short_buffer, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->SnapshotSlot(8, absl::MakeSpan(snapshot)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// StartSnapshot's bytes are the slot's state when it was called, even though the slot is reset
// and refilled with another sequence before the copy is waited for; 20 snapshots in a row (more
// than the 16 staging buffers, so some wait for a busy one) each hold their own state. A bad slot
// or size changes nothing.
TEST_P(CudaGoldenTest, StartedSnapshotsHoldTheStateTheyWereStartedOn) {
  const GoldenSequence& g = golden_[0];
  const engine::StateLayout* layout = backend_->state_layout();
  ASSERT_NE(layout, nullptr);
  const int64_t bytes = layout->slot_bytes();
  constexpr int kSnapshots = 20;
  std::vector<std::vector<uint8_t>> expected(kSnapshots, std::vector<uint8_t>(bytes));
  // Page-locked, as the prefix cache's host tier: the copies then run beside the steps (to
  // pageable memory the runtime waits for each).
  engine::Backend::SnapshotMemory memory = backend_->AllocateSnapshotMemory(kSnapshots * bytes);
  std::fill_n(memory.get(), kSnapshots * bytes, 0xAB);
  auto started = [&](int i) { return absl::MakeSpan(memory.get() + i * bytes, bytes); };
  std::vector<engine::Backend::SnapshotTicket> tickets;
  for (int i = 0; i < kSnapshots; ++i) {
    const int len = std::min<int>(g.tokens.size(), 1 + i % 7);
    StepEntry fill{.slot = 0,
                   .position = 0,
                   .tokens = absl::MakeConstSpan(g.tokens).subspan(0, len),
                   .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&fill, 1}, {}).ok());
    ASSERT_TRUE(backend_->SnapshotSlot(0, absl::MakeSpan(expected[i])).ok());
    auto ticket = backend_->StartSnapshot(0, started(i));
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    EXPECT_EQ(ticket->position, len);
    tickets.push_back(*ticket);
    ASSERT_TRUE(backend_->ResetSlot(0).ok());  // the slot moves on before the copy is waited for
  }
  for (int i = kSnapshots - 1; i >= 0; --i) {
    ASSERT_TRUE(backend_->FinishSnapshot(tickets[i].id).ok());
    ASSERT_TRUE(backend_->FinishSnapshot(tickets[i].id).ok());  // twice is fine
    EXPECT_TRUE(std::equal(expected[i].begin(), expected[i].end(), started(i).begin()))
        << "snapshot " << i;
  }
  std::vector<uint8_t> short_buffer(bytes - 1);
  EXPECT_EQ(backend_->StartSnapshot(0, absl::MakeSpan(short_buffer)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->StartSnapshot(8, started(0)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// NUM-1: prompts of mixed lengths prefilled in one step and decoded together give each sequence
// the greedy tokens it gets alone. GEMM rounding depends on the batch size, so a mismatch is
// accepted only at a near-tie of the alone run (top-2 within 2e-2); the sequences then diverge.
// Echo on the device (StepWithPromptLogprobs's override scores rows where they are computed)
// against Backend's host path on the same backend: every prompt position of one entry scored
// across several head chunks (max_decode_batch 8) and passes, next to an unscored entry; the last
// row of each handed back as Step would.
TEST_P(CudaGoldenTest, PromptLogprobsOnTheDeviceEqualTheHostPath) {
  const std::vector<int32_t>& prompt = golden_[0].tokens;
  const std::vector<int32_t> other(golden_.back().tokens.begin(),
                                   golden_.back().tokens.begin() + 5);
  const std::vector<int32_t> targets(prompt.begin() + 1, prompt.end());
  const int64_t T = static_cast<int64_t>(prompt.size());
  const std::vector<StepEntry> entries = {
      {.slot = 1, .position = 0, .tokens = prompt, .logits = LogitsRequest::kLast},
      {.slot = 2, .position = 0, .tokens = other, .logits = LogitsRequest::kLast}};
  const std::vector<engine::PromptLogprobsRequest> requests = {{.targets = targets}, {}};
  const size_t rows = targets.size();
  struct Result {
    std::vector<float> logits, logprobs, top_logprobs;
    std::vector<int32_t> ranks, top_ids;
  };
  for (int top_k : {0, 1, 5, 20, 24}) {  // 24: above the device's maximum, the host path
    auto run = [&](bool device) {
      Result r;
      r.logits.resize(2 * size_t(vocab_));
      r.logprobs.resize(rows);
      r.ranks.resize(rows);
      r.top_ids.resize(rows * top_k);
      r.top_logprobs.resize(rows * top_k);
      const engine::PromptLogprobsOutput out{absl::MakeSpan(r.logprobs), absl::MakeSpan(r.ranks),
                                             absl::MakeSpan(r.top_ids),
                                             absl::MakeSpan(r.top_logprobs)};
      const absl::Status st = device ? backend_->StepWithPromptLogprobs(
                                           entries, requests, top_k, absl::MakeSpan(r.logits), out)
                                     : backend_->engine::Backend::StepWithPromptLogprobs(
                                           entries, requests, top_k, absl::MakeSpan(r.logits), out);
      EXPECT_TRUE(st.ok()) << st;
      EXPECT_EQ(backend_->NextPosition(1), T);
      EXPECT_EQ(backend_->NextPosition(2), 5);
      return r;
    };
    const Result host = run(false), device = run(true);
    for (size_t i = 0; i < host.logits.size(); ++i) {
      ASSERT_NEAR(device.logits[i], host.logits[i], 1e-5f) << "logits " << i << " top_k " << top_k;
    }
    for (size_t j = 0; j < rows; ++j) {
      // float32 sums on the device, double on the host.
      ASSERT_NEAR(device.logprobs[j], host.logprobs[j], 2e-5f + 1e-6f * std::abs(host.logprobs[j]))
          << "position " << j << " top_k " << top_k;
      // Distinct logits that round to one float log-probability tie on the host only.
      ASSERT_LE(std::abs(device.ranks[j] - host.ranks[j]), 1) << "position " << j;
      for (int k = 0; k < top_k; ++k) {
        const size_t at = j * top_k + k;
        ASSERT_NEAR(device.top_logprobs[at], host.top_logprobs[at],
                    2e-5f + 1e-6f * std::abs(host.top_logprobs[at]))
            << "position " << j << " alternative " << k;
        if (device.top_ids[at] != host.top_ids[at]) {
          // Only neighbours whose log-probabilities the host rounded to one value may swap.
          const bool swapped = (k > 0 && host.top_ids[at - 1] == device.top_ids[at]) ||
                               (k + 1 < top_k && host.top_ids[at + 1] == device.top_ids[at]);
          EXPECT_TRUE(swapped) << "position " << j << " alternative " << k << ": ids "
                               << device.top_ids[at] << " vs " << host.top_ids[at];
        }
      }
    }
    // The target's rank agrees with where it sits in the top list.
    for (size_t j = 0; j < rows && top_k > 0; ++j) {
      for (int k = 0; k < top_k; ++k) {
        if (device.top_ids[j * top_k + k] == targets[j]) {
          EXPECT_LE(device.ranks[j], k + 1) << "position " << j;
        }
      }
    }
  }
  // Bad requests change nothing, as on the host path.
  std::vector<float> logits(2 * size_t(vocab_)), lp(rows), tl(rows);
  std::vector<int32_t> ranks(rows), ti(rows);
  const engine::PromptLogprobsOutput out{absl::MakeSpan(lp), absl::MakeSpan(ranks),
                                         absl::MakeSpan(ti), absl::MakeSpan(tl)};
  const std::vector<int32_t> bad_target = {vocab_};
  const std::vector<engine::PromptLogprobsRequest> bad = {{.targets = bad_target}, {}};
  EXPECT_EQ(backend_->StepWithPromptLogprobs(entries, bad, 1, absl::MakeSpan(logits), out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->NextPosition(1), T);
}

TEST_P(CudaGoldenTest, MixedBatchGreedyEqualsAlone) {
  const GoldenSequence& g = golden_[0];
  const int T = g.tokens.size();
  const std::vector<int> lengths = {1, 2, 5, std::min(17, T - 1), T};
  const int steps = SanitizerRun() ? 4 : 12;
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
    entries.push_back(
        {.slot = b, .position = 0, .tokens = absl::MakeConstSpan(g.tokens).subspan(0, lengths[b])});
  }
  std::vector<engine::SampleRequest> req(B);
  for (auto& r : req) r.params.temperature = 0.0f;
  std::vector<int32_t> tok(B);
  ASSERT_TRUE(backend_->StepSample(entries, req, absl::MakeSpan(tok)).ok());
  for (int s = 0; s < steps; ++s) {
    entries.clear();
    for (int b = 0; b < B; ++b) {
      together[b].push_back(tok[b]);
      entries.push_back({.slot = b,
                         .position = lengths[b] + s,
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

// The engine on the GPU: device sampling (the default) gives the greedy tokens host sampling
// gives, a seeded sampled request repeats itself, and a logprobs request (host path) still works.
TEST_P(CudaGoldenTest, EngineSamplesOnTheDeviceLikeOnTheHost) {
  auto run = [&](bool device_sampling, engine::ValidatedRequest request) {
    engine::CudaBackendOptions opt;
    opt.num_slots = 4;
    opt.max_decode_batch = 4;
    opt.autotune_gemms = !SanitizerRun();
    auto backend = CudaBackend::Create(*checkpoint_, opt);
    EXPECT_TRUE(backend.ok()) << backend.status();
    engine::EngineOptions options;
    options.device_sampling = device_sampling;
    auto core = engine::EngineCore::Create(std::move(*backend), options);
    EXPECT_TRUE(core.ok()) << core.status();
    auto tokens = std::make_shared<std::vector<int32_t>>();
    std::promise<absl::Status> done;
    EXPECT_TRUE((*core)
                    ->Submit(std::move(request),
                             [tokens, &done](engine::EngineOutput out) {
                               tokens->insert(tokens->end(), out.tokens.begin(), out.tokens.end());
                               if (out.finished) done.set_value(out.status);
                             })
                    .ok());
    EXPECT_TRUE(done.get_future().get().ok());
    return *tokens;
  };
  engine::ValidatedRequest greedy;
  greedy.prompt = golden_[0].tokens;
  greedy.sampling.temperature = 0.0f;
  // Nine engines each decode this many tokens; under a sanitizer a few show the same paths.
  const int max_tokens = SanitizerRun() ? 6 : 24;
  greedy.max_tokens = max_tokens;
  greedy.ignore_eos = true;
  const auto on_device = run(true, greedy);
  EXPECT_EQ(on_device.size(), size_t(max_tokens));
  // The host-sampling runs launch no kernel the device runs do not: under a sanitizer (where each
  // engine here costs minutes) only the device side runs.
  const bool compare_host = !SanitizerRun();
  if (compare_host) {
    EXPECT_EQ(on_device, run(false, greedy));
  }

  engine::ValidatedRequest sampled = greedy;
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.top_p = 0.9f;
  sampled.sampling.repetition_penalty = 1.2f;
  sampled.sampling.seed = 7;
  EXPECT_EQ(run(true, sampled), run(true, sampled));

  engine::ValidatedRequest with_logprobs = greedy;
  with_logprobs.top_logprobs = 3;
  EXPECT_EQ(run(true, with_logprobs), on_device);

  // What changes the logits before a greedy pick is applied on the device as on the host: the
  // repetition penalty, and a logit_bias that forces one token and bans the greedy path's first.
  engine::ValidatedRequest penalised = greedy;
  penalised.sampling.repetition_penalty = 3.0f;
  const auto penalised_on_device = run(true, penalised);
  if (compare_host) {
    EXPECT_EQ(penalised_on_device, run(false, penalised));
  }
  if (penalised_on_device == on_device)
    std::printf("%s: the penalty left greedy unchanged\n", GetParam().c_str());
  engine::ValidatedRequest biased = greedy;
  const int32_t boosted = on_device[1] != on_device[0] ? on_device[1] : (on_device[0] + 1) % vocab_;
  biased.sampling.logit_bias = {{on_device[0], -100.0f}, {boosted, 2.5f}};
  const auto biased_on_device = run(true, biased);
  EXPECT_NE(biased_on_device[0], on_device[0]);
  if (compare_host) {
    EXPECT_EQ(biased_on_device, run(false, biased));
  }
}

// Whole prefills in one pass with their attention through cuDNN (cudnn_attention_min_tokens 1,
// every golden sequence fresh), against the reference within §8.4's budget. Skipped where cuDNN
// does not load (a model without attention layers has nothing to run there).
TEST_P(CudaGoldenTest, CudnnPrefillAttentionMatchesReference) {
  engine::CudaBackendOptions opt = TestOptions();
  opt.max_tokens_per_step = 1024;
  opt.cudnn_attention_min_tokens = 1;
  auto backend = MakeBackend(*checkpoint_, opt);
  ASSERT_NE(backend, nullptr);
  const std::string library = backend->prefill_attention_library();
  if (library.rfind("cuDNN", 0) != 0) GTEST_SKIP() << library;
  for (const GoldenSequence& g : golden_) {
    ASSERT_LE(g.tokens.size(), size_t{1024});
    std::vector<engine::LaunchRecord> trace;
    backend->set_launch_trace(&trace);
    const std::vector<float> got = StepLogProbs(*backend, g.tokens, 0, 1);
    backend->set_launch_trace(nullptr);
    int cudnn_launches = 0;
    for (const engine::LaunchRecord& r : trace) cudnn_launches += r.kernel == "CudnnAttention";
    EXPECT_EQ(cudnn_launches, checkpoint_->config().num_attention_layers());
    ExpectWithinSpec(got, g, "cuDNN prefill");
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGoldenTest,
                         ::testing::Values("griffin", "hawk", "attnfirst", "demo"));

// §8.4's top-1 half over every golden sequence of every case, per path.
TEST(CudaParityTest, Top1AgreementOverAllGoldenSequences) {
  SKIP_WITHOUT_GPU();
  struct Tally {
    int counted = 0, agree = 0;
  };
  std::map<std::string, Tally> tally;
  for (const char* name : golden::kParityCases) {
    auto loaded = LoadCase(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const golden::ParityCase& c = *loaded;
    auto backend = MakeBackend(*c.checkpoint);
    ASSERT_NE(backend, nullptr);
    const int V = c.checkpoint->config().vocab_size;
    const int W = c.checkpoint->config().attention_window;
    // Under a sanitizer one sequence per case runs every path; the rest repeat them.
    const size_t sequences = SanitizerRun() ? 1 : c.golden.size();
    for (size_t i = 0; i < sequences; ++i) {
      const GoldenSequence& g = c.golden[i];
      auto add = [&](const std::string& path, const std::vector<float>& got) {
        const Agreement a = CompareToGolden(got, g, V);
        const int agree = a.agreed;
        if (agree != a.counted) {
          std::printf("%s T=%zu %s: top-1 %d/%d\n", name, g.tokens.size(), path.c_str(), agree,
                      a.counted);
        }
        tally[path].counted += a.counted;
        tally[path].agree += agree;
      };
      add("prefill", StepLogProbs(*backend, g.tokens, 0, 1));
      add("decode-only", StepLogProbs(*backend, g.tokens, 1, 1));
      add("chunked-3", StepLogProbs(*backend, g.tokens, 3, 1));
      add("chunked-window+1", StepLogProbs(*backend, g.tokens, W + 1, 1));
      backend->set_use_cuda_graphs(false);
      add("decode-eager", StepLogProbs(*backend, g.tokens, 1, 1));
      backend->set_use_cuda_graphs(true);
      add("prefill-then-decode", PrefillThenDecodeLogProbs(*backend, g.tokens, 1));
    }
  }
  for (const auto& [path, t] : tally) {
    const double top1 = double(t.agree) / t.counted;
    std::printf("all golden sequences, %s: top-1 %d/%d = %.4f\n", path.c_str(), t.agree, t.counted,
                top1);
    if (!SanitizerRun()) {
      EXPECT_GE(t.counted, 100) << path << ": too few positions for a 99% statistic";
    }
    EXPECT_GE(top1, 0.99) << path;
  }
}

// FP8 weights: each case's golden sequences through the GPU's FP8 paths: whole prefill in
// 64-token passes, 3-token chunks, decode through the graphs and eagerly.
//  - W8A16 (one-token passes in both modes; every pass with fp8_activations off: the GEMV, or
//    the weights expanded to bf16) against the CPU's W8A16 emulation within §8.4's budget
//    (mean |dlogprob| <= 2e-2), as the bf16 path is held to the bf16 emulation.
//  - W8A8 (passes of two or more tokens by default) cannot be held to its emulation so: rounding
//    an activation to E4M3's 3 mantissa bits turns a one-ulp bf16 difference between GPU and CPU
//    into a whole FP8 step about one time in 30, so GPU and emulation differ by about as much as
//    each differs from bf16 (measured: 0.07-0.14 on these cases). What must hold instead is that
//    the GPU's W8A8 is as far from the bf16 emulation as the CPU's W8A8 is: within 1.5x + 0.01
//    (a wrong scale or operand is several times further), and at least half as far (the
//    activations were quantized).
// And the FP8 path is not the bf16 one: the two must differ.
struct Fp8References {
  std::vector<float> bf16, w8a16, w8a8;  // the CPU emulations' log-probabilities
};

void ExpectW8A8LikeItsEmulation(const std::vector<float>& got, const Fp8References& want, int V,
                                const std::string& what) {
  const double gpu = Compare(got, want.bf16, V).mean_abs;
  const double cpu = Compare(want.w8a8, want.bf16, V).mean_abs;
  std::printf(
      "%s: mean |dlogprob| from the bf16 emulation: GPU W8A8 %.3g, CPU W8A8 emulation %.3g\n",
      what.c_str(), gpu, cpu);
  EXPECT_LE(gpu, 1.5 * cpu + 0.01) << what;
  EXPECT_GE(gpu, 0.5 * cpu) << what;
}

// num_slots 0: the slots come from the device memory left after the weights and workspaces
// (engine/slot_budget.h has the arithmetic's tests). Here: the cap holds, every slot it reports
// is usable and the next one is not, and a fraction smaller than what is already in use is a
// clear error. The count between the cap and the fraction moves with other processes on the
// GPU, so it is not asserted.
TEST(CudaSlotBudgetTest, SlotsFromDeviceMemory) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  for (const bool fp8 : {false, true}) {
    engine::CudaBackendOptions opt = TestOptions();
    opt.fp8_weights = fp8;
    opt.num_slots = 0;
    opt.device_memory_fraction = 0.9;
    opt.max_slots = 5;
    auto backend = MakeBackend(checkpoint, opt);
    ASSERT_NE(backend, nullptr);
    ASSERT_EQ(backend->num_slots(), 5) << "fp8 " << fp8;
    const std::vector<int32_t> prompt = {2, 10, 11, 12};
    for (int slot : {0, 4}) {
      std::vector<float> logits(backend->config().vocab_size);
      const StepEntry entry{
          .slot = slot, .position = 0, .tokens = prompt, .logits = LogitsRequest::kLast};
      ASSERT_TRUE(backend->Step({&entry, 1}, absl::MakeSpan(logits)).ok()) << slot;
      EXPECT_EQ(backend->NextPosition(slot), 4);
    }
    std::vector<float> logits(backend->config().vocab_size);
    const StepEntry beyond{
        .slot = 5, .position = 0, .tokens = prompt, .logits = LogitsRequest::kLast};
    EXPECT_EQ(backend->Step({&beyond, 1}, absl::MakeSpan(logits)).code(),
              absl::StatusCode::kInvalidArgument);
  }
  // One ten-thousandth of an H200 is 14 MB: less than the CUDA context alone holds.
  engine::CudaBackendOptions opt = TestOptions();
  opt.num_slots = 0;
  opt.device_memory_fraction = 1e-4;
  auto refused = CudaBackend::Create(checkpoint, opt);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("--gpu_memory_utilization"), std::string::npos)
      << refused.status();
}

class CudaFp8Test : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFp8Test, EveryPathMatchesTheCpuEmulation) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int V = checkpoint.config().vocab_size;
  auto bf16 = MakeBackend(checkpoint);
  ASSERT_NE(bf16, nullptr);
  std::unique_ptr<engine::CpuBackend> cpu[3];
  const engine::CpuNumerics numerics[3] = {engine::CpuNumerics::kEmulateBf16Gemm,
                                           engine::CpuNumerics::kEmulateFp8Weights,
                                           engine::CpuNumerics::kEmulateFp8WeightsAndActivations};
  for (int i = 0; i < 3; ++i) {
    auto created = engine::CpuBackend::Create(checkpoint, 1, numerics[i]);
    ASSERT_TRUE(created.ok()) << created.status();
    cpu[i] = std::move(*created);
  }
  for (const bool w8a8 : {true, false}) {
    auto fp8 = MakeBackend(checkpoint, Fp8Options(w8a8));
    ASSERT_NE(fp8, nullptr);
    const char* mode = w8a8 ? "W8A8 from 2 rows" : "W8A16 throughout";
    const size_t sequences = SanitizerRun() ? 1 : loaded->golden.size();
    for (size_t i = 0; i < sequences; ++i) {
      const std::vector<int32_t>& tokens = loaded->golden[i].tokens;
      Fp8References want;
      want.bf16 = StepLogProbs(*cpu[0], tokens, 0, 0);
      want.w8a16 = StepLogProbs(*cpu[1], tokens, 0, 0);
      want.w8a8 = StepLogProbs(*cpu[2], tokens, 0, 0);
      auto check = [&](const char* path, const std::vector<float>& got) {
        const std::string what =
            absl::StrCat(GetParam(), " FP8 (", mode, ") ", path, " T=", tokens.size());
        const bool one_token_passes = std::string(path).find("decode") != std::string::npos;
        if (w8a8 && !one_token_passes) return ExpectW8A8LikeItsEmulation(got, want, V, what);
        const Agreement a = Compare(got, want.w8a16, V);
        std::printf(
            "%s vs the CPU W8A16 emulation: mean |dlogprob| %.3g, max %.3g, top-1 %.4f "
            "over %d positions\n",
            what.c_str(), a.mean_abs, a.max_abs, a.top1, a.counted);
        EXPECT_LE(a.mean_abs, 2e-2) << what;
      };
      const std::vector<float> whole = StepLogProbs(*fp8, tokens, 0, 1);
      check("prefill", whole);
      check("decode-only", StepLogProbs(*fp8, tokens, 1, 1));
      check("chunked-3", StepLogProbs(*fp8, tokens, 3, 1));
      fp8->set_use_cuda_graphs(false);
      check("decode-eager", StepLogProbs(*fp8, tokens, 1, 1));
      fp8->set_use_cuda_graphs(true);
      const Agreement vs_bf16 = Compare(whole, StepLogProbs(*bf16, tokens, 0, 1), V);
      EXPECT_GT(vs_bf16.mean_abs, 0) << "the FP8 backend computed with bf16 weights";
    }
  }
}

// A decode batch of 12 (W8A8 GEMMs inside a decode graph; activations are quantized per token, so
// a row's result does not depend on the others): each sequence's decoded rows, after a prefill of
// its own length, as far from the CPU's bf16 emulation as the CPU's W8A8 emulation is (see above).
TEST(CudaFp8BatchTest, DecodeBatchIsW8A8LikeItsEmulation) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int V = checkpoint.config().vocab_size;
  constexpr int kBatch = 12;
  engine::CudaBackendOptions opt = Fp8Options(/*w8a8=*/true);
  opt.num_slots = kBatch;
  opt.max_decode_batch = 16;
  auto backend = MakeBackend(checkpoint, opt);
  ASSERT_NE(backend, nullptr);
  auto cpu_bf16 = engine::CpuBackend::Create(checkpoint, 1, engine::CpuNumerics::kEmulateBf16Gemm);
  auto cpu_w8a8 = engine::CpuBackend::Create(checkpoint, 1,
                                             engine::CpuNumerics::kEmulateFp8WeightsAndActivations);
  ASSERT_TRUE(cpu_bf16.ok()) << cpu_bf16.status();
  ASSERT_TRUE(cpu_w8a8.ok()) << cpu_w8a8.status();
  const std::vector<int32_t>& text = loaded->golden[0].tokens;
  const int steps = SanitizerRun() ? 2 : 6;
  // Sequence s starts at its own offset of the text and prefills 4 + s tokens.
  std::vector<std::vector<int32_t>> seqs(kBatch);
  for (int s = 0; s < kBatch; ++s) {
    const size_t first = size_t(s) * 7 % (text.size() - 40);
    seqs[s].assign(text.begin() + first, text.begin() + first + 4 + s + steps);
  }
  std::vector<std::vector<float>> batched(kBatch);
  for (int s = 0; s < kBatch; ++s) {
    const int n = 4 + s;
    std::vector<float> logits(V);
    StepEntry e{.slot = s,
                .position = 0,
                .tokens = absl::MakeConstSpan(seqs[s]).subspan(0, n),
                .logits = LogitsRequest::kLast};
    ASSERT_TRUE(backend->Step({&e, 1}, absl::MakeSpan(logits)).ok());
  }
  for (int t = 0; t < steps; ++t) {
    std::vector<StepEntry> entries;
    for (int s = 0; s < kBatch; ++s) {
      const int pos = 4 + s + t;
      entries.push_back({.slot = s,
                         .position = pos,
                         .tokens = absl::MakeConstSpan(seqs[s]).subspan(pos, 1),
                         .logits = LogitsRequest::kLast});
    }
    std::vector<float> logits(size_t(kBatch) * V);
    ASSERT_TRUE(backend->Step(entries, absl::MakeSpan(logits)).ok());
    for (int s = 0; s < kBatch; ++s) {
      batched[s].insert(batched[s].end(), logits.begin() + size_t(s) * V,
                        logits.begin() + size_t(s + 1) * V);
    }
  }
  Fp8References all;
  std::vector<float> got;
  for (int s = 0; s < kBatch; ++s) {
    const size_t rows = size_t(4 + s) * V;  // the prefilled positions are not compared
    const std::vector<float> bf16 = StepLogProbs(**cpu_bf16, seqs[s], 1, 0);
    const std::vector<float> w8a8 = StepLogProbs(**cpu_w8a8, seqs[s], 1, 0);
    all.bf16.insert(all.bf16.end(), bf16.begin() + rows, bf16.end());
    all.w8a8.insert(all.w8a8.end(), w8a8.begin() + rows, w8a8.end());
    const std::vector<float> mine = LogSoftmaxRows(batched[s], V);
    got.insert(got.end(), mine.begin(), mine.end());
  }
  ExpectW8A8LikeItsEmulation(got, all, V, absl::StrCat("FP8 decode batch of ", kBatch));
}

// Logits of one backend along a fixed path through the kernels: a whole prefill and a chunked
// one (3-token passes after a prefix: prefill key splits), three sequences of 8 + s tokens in
// slots 1..3, `steps` decode steps of all three (the batch-3 graph), then `steps` of slot 1 alone
// (the batch-1 graph). For tests that want two kernel paths to give the same bits.
std::vector<float> KernelPathLogits(const loader::Checkpoint& checkpoint,
                                    const engine::CudaBackendOptions& opt,
                                    const std::vector<int32_t>& text, int steps) {
  const int V = checkpoint.config().vocab_size;
  constexpr int kBatch = 3;
  auto backend = MakeBackend(checkpoint, opt);
  EXPECT_NE(backend, nullptr);
  if (backend == nullptr) return {};
  std::vector<float> got;
  for (const int chunk : {0, 3}) {
    const std::vector<float> lp = StepLogProbs(*backend, text, chunk, 0);
    got.insert(got.end(), lp.begin(), lp.end());
  }
  std::vector<float> row(size_t(kBatch) * V);
  for (int s = 0; s < kBatch; ++s) {
    StepEntry e{.slot = 1 + s,
                .position = 0,
                .tokens = absl::MakeConstSpan(text).subspan(s, 8 + s),
                .logits = LogitsRequest::kLast};
    EXPECT_TRUE(backend->Step({&e, 1}, absl::MakeSpan(row).subspan(0, V)).ok());
    got.insert(got.end(), row.begin(), row.begin() + V);
  }
  for (int t = 0; t < steps; ++t) {
    std::vector<StepEntry> entries;
    for (int s = 0; s < kBatch; ++s) {
      entries.push_back({.slot = 1 + s,
                         .position = 8 + s + t,
                         .tokens = absl::MakeConstSpan(text).subspan(8 + 2 * s + t, 1),
                         .logits = LogitsRequest::kLast});
    }
    EXPECT_TRUE(backend->Step(entries, absl::MakeSpan(row)).ok());
    got.insert(got.end(), row.begin(), row.end());
  }
  for (int t = 0; t < steps; ++t) {
    StepEntry e{.slot = 1,
                .position = 8 + steps + t,
                .tokens = absl::MakeConstSpan(text).subspan(8 + steps + t, 1),
                .logits = LogitsRequest::kLast};
    EXPECT_TRUE(backend->Step({&e, 1}, absl::MakeSpan(row).subspan(0, V)).ok());
    got.insert(got.end(), row.begin(), row.begin() + V);
  }
  return got;
}

// The log-probabilities of KernelPathLogits under `b` against those under `a`.
Agreement KernelPathAgreement(const loader::Checkpoint& checkpoint,
                              const engine::CudaBackendOptions& a,
                              const engine::CudaBackendOptions& b, const std::vector<int32_t>& text,
                              int steps) {
  const int V = checkpoint.config().vocab_size;
  const std::vector<float> lp_a = LogSoftmaxRows(KernelPathLogits(checkpoint, a, text, steps), V);
  const std::vector<float> lp_b = LogSoftmaxRows(KernelPathLogits(checkpoint, b, text, steps), V);
  EXPECT_EQ(lp_a.size(), lp_b.size());
  EXPECT_FALSE(lp_a.empty());
  if (lp_a.size() != lp_b.size() || lp_a.empty()) return Agreement{.mean_abs = 1e30};
  return Compare(lp_b, lp_a, V);
}

void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b, int V,
                    const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_FALSE(a.empty()) << what;
  size_t differing = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && differing++ == 0) first = i;
  }
  EXPECT_EQ(differing, 0u) << what << ": " << differing << " of " << a.size()
                           << " values differ, the first at row " << first / V << ": " << a[first]
                           << " vs " << b[first];
}

// The W8A8 GEMMs' two passes done inside their neighbours (CudaBackendOptions::fuse_fp8_passes:
// activations quantized by the norm before, output scales applied by GeGLU, RoPE and the residual
// add) must change no bit, for W8A8 and for W8A16's expanded GEMMs.
TEST(CudaFp8BatchTest, FusedPassesChangeNoBit) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int steps = SanitizerRun() ? 2 : 4;
  for (const bool w8a8 : {true, false}) {
    std::vector<float> logits[2];
    for (const bool fused : {false, true}) {
      engine::CudaBackendOptions opt = Fp8Options(w8a8);
      opt.fuse_fp8_passes = fused;
      // The W8A8 prefetch GEMM runs only with the fused passes and sums in another order than
      // cuBLASLt: both sides take cuBLASLt here (PrefetchGemmFp8MatchesCuBlasLt compares them).
      opt.prefetch_gemm_fp8 = false;
      logits[fused] = KernelPathLogits(checkpoint, opt, loaded->golden[0].tokens, steps);
    }
    ExpectSameBits(logits[0], logits[1], checkpoint.config().vocab_size,
                   w8a8 ? "W8A8, passes vs fused" : "W8A16 (expanded GEMMs), passes vs fused");
  }
}

// Session 12's launch changes change no bit either: a decode step's ring written inside the
// attention launch (fuse_decode_ring_write) and the RG-LRU decode kernel loading all but x|y
// before its wait (stage_rglru_decode), against the separate ring write and the unstaged kernel.
TEST(CudaBackendTest, FusedSideLaunchesChangeNoBit) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions separate = TestOptions();
  separate.autotune_gemms = false;  // both backends take the same cuBLASLt algorithms
  separate.fuse_decode_ring_write = false;
  separate.stage_rglru_decode = false;
  engine::CudaBackendOptions fused = separate;
  fused.fuse_decode_ring_write = true;
  fused.stage_rglru_decode = true;
  ExpectSameBits(KernelPathLogits(checkpoint, separate, loaded->golden[0].tokens, steps),
                 KernelPathLogits(checkpoint, fused, loaded->golden[0].tokens, steps),
                 checkpoint.config().vocab_size, "separate launches vs fused");
}

// The residual add + RMSNorm with two float4s a thread (norm_vectors_per_thread 2; the kernel's
// own choice for passes of more rows than one wave holds) against one: the same kernel path
// through prefill and the decode graphs, within half of §8.4's budget (the sum of squares in
// another order; one bf16 rounding apart at most); a third choice is refused.
TEST(CudaBackendTest, TwoVectorNormMatchesOneVector) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions one = TestOptions();
  one.norm_vectors_per_thread = 1;
  engine::CudaBackendOptions two = one;
  two.norm_vectors_per_thread = 2;
  EXPECT_LE(KernelPathAgreement(checkpoint, one, two, loaded->golden[0].tokens, steps).mean_abs,
            1e-2);
  engine::CudaBackendOptions bad = one;
  bad.norm_vectors_per_thread = 3;
  const auto refused = CudaBackend::Create(checkpoint, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("norm_vectors_per_thread"), std::string::npos);
}

// The GEMV kernel for decode batches of 2-8 bf16 rows (gemv_max_rows, a benchmark switch) against
// cuBLASLt's GEMMs there: the same kernel path through prefill and the batch-3 and batch-1 graphs,
// within half of §8.4's budget (float32 sums in another order).
TEST(CudaBackendTest, SmallBatchGemvMatchesCuBlasLt) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions gemm = TestOptions();
  gemm.prefetch_gemm_max_rows = 0;  // which takes these batches before both
  engine::CudaBackendOptions gemv = gemm;
  gemv.gemv_max_rows = kernels::kGemvMaxM;
  EXPECT_LE(KernelPathAgreement(checkpoint, gemm, gemv, loaded->golden[0].tokens, steps).mean_abs,
            1e-2);
  engine::CudaBackendOptions bad = gemm;
  bad.gemv_max_rows = kernels::kGemvMaxM + 1;
  const auto refused = CudaBackend::Create(checkpoint, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("gemv_max_rows"), std::string::npos);
}

// The launches of one decode step of three sequences (slots 1-3, 8 tokens of `text` prefilled
// each) under `opt`.
std::vector<engine::LaunchRecord> BatchThreeDecodeTrace(const loader::Checkpoint& checkpoint,
                                                        const engine::CudaBackendOptions& opt,
                                                        const std::vector<int32_t>& text) {
  const int V = checkpoint.config().vocab_size;
  auto backend = MakeBackend(checkpoint, opt);
  if (backend == nullptr) return {};
  std::vector<float> row(size_t(3) * V);
  for (int s = 0; s < 3; ++s) {
    StepEntry e{.slot = 1 + s,
                .position = 0,
                .tokens = absl::MakeConstSpan(text).subspan(s, 8),
                .logits = LogitsRequest::kLast};
    EXPECT_TRUE(backend->Step({&e, 1}, absl::MakeSpan(row).subspan(0, V)).ok());
  }
  std::vector<StepEntry> entries;
  for (int s = 0; s < 3; ++s) {
    entries.push_back({.slot = 1 + s,
                       .position = 8,
                       .tokens = absl::MakeConstSpan(text).subspan(8 + s, 1),
                       .logits = LogitsRequest::kLast});
  }
  std::vector<engine::LaunchRecord> trace;
  backend->set_launch_trace(&trace);
  EXPECT_TRUE(backend->Step(entries, absl::MakeSpan(row)).ok());
  backend->set_launch_trace(nullptr);
  return trace;
}

int CountOpsEndingWith(const std::vector<engine::LaunchRecord>& trace, absl::string_view suffix) {
  int n = 0;
  for (const engine::LaunchRecord& r : trace) n += absl::EndsWith(r.op, suffix);
  return n;
}

// Decode batches on CUTLASS's GEMM with weight prefetch (prefetch_gemm_max_rows) against
// cuBLASLt and the GEMV: the same kernel path through prefill and the batch-3 and batch-1 graphs,
// within half of §8.4's budget (float32 sums in another order; H200, session 24: mean 6.1e-5,
// max 0.034 whole; session 26: 6.1e-3 and 0.057 with the projections into the residual stream
// in 3 K parts, the figures of cuBLASLt's own 3-part split in SplitKProjectionsMatchWholeGemms).
// TestOptions' passes of 64 tokens in 3 parts fill 192 rows of the residual workspace, more than
// cuBLASLt's split needs (Init sizes it for both; CheckBlockOutFits). The launch trace of a
// batch-3 decode step names the prefetch GEMMs.
TEST(CudaBackendTest, PrefetchGemmMatchesCuBlasLt) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int steps = SanitizerRun() ? 2 : 4;
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  const loader::ModelConfig& c = checkpoint.config();
  if (!kernels::PrefetchGemmSupported(device, 3, c.hidden_size, c.hidden_size)) {
    GTEST_SKIP() << "this build or device has no prefetch GEMM (sm_90 with CUTLASS's example 63)";
  }
  engine::CudaBackendOptions cublas = TestOptions();
  cublas.prefetch_gemm_max_rows = 0;
  engine::CudaBackendOptions prefetch = cublas;
  prefetch.prefetch_gemm_max_rows = 256;  // every block size (16 to 128 rows)
  for (const int parts : {1, 3}) {
    engine::CudaBackendOptions opt = prefetch;
    opt.prefetch_gemm_split_k_parts = parts;
    const Agreement agreement =
        KernelPathAgreement(checkpoint, cublas, opt, loaded->golden[0].tokens, steps);
    std::printf(
        "prefetch GEMM (%d K parts into the residual stream) vs cuBLASLt: mean |dlogprob| "
        "%.3g, max %.3g\n",
        parts, agreement.mean_abs, agreement.max_abs);
    EXPECT_LE(agreement.mean_abs, 1e-2) << parts << " K parts";
    EXPECT_LE(agreement.max_abs, 0.2) << parts << " K parts";
  }
  if (!SanitizerRun()) {
    // Default split: each layer's projection into the residual stream in K parts (the demo's K
    // of 288 and 864 split into 3), the others whole.
    const std::vector<engine::LaunchRecord> trace =
        BatchThreeDecodeTrace(checkpoint, prefetch, loaded->golden[0].tokens);
    EXPECT_GE(CountOpsEndingWith(trace, "(prefetch GEMM)"), c.num_layers)
        << "every layer's x|y or q|k|v and gate|up projections";
    EXPECT_GE(CountOpsEndingWith(trace, "(prefetch GEMM, split-K)"), 2 * c.num_layers)
        << "every layer's output and down projections";
  }
  engine::CudaBackendOptions bad = cublas;
  bad.prefetch_gemm_max_rows = -1;
  const auto refused = CudaBackend::Create(checkpoint, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("prefetch_gemm"), std::string::npos);
}

// W8A8 decode batches (2 to prefetch_gemm_max_rows rows) on the prefetch GEMM with E4M3 operands
// (prefetch_gemm_fp8) as close to the bf16 path as cuBLASLt's FP8 GEMM is. Not against cuBLASLt's
// W8A8 directly: the prefetch GEMM sums in another order and accumulates without promotion
// (CUTLASS's "FastAccum"), and W8A8 re-quantizes every activation row to E4M3, so a last-bit
// difference in one layer flips 3-bit-mantissa codes in the next (session 25, H200: the two W8A8
// paths 0.077 apart in mean |dlogprob|, each ~0.087 from bf16 in CudaFp8BatchTest's batch of 12).
// The batch-3 trace names the FP8 prefetch GEMMs.
TEST(CudaFp8BatchTest, PrefetchGemmFp8MatchesCuBlasLt) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const loader::ModelConfig& c = checkpoint.config();
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!kernels::PrefetchGemmFp8Supported(device, 3, c.hidden_size, c.hidden_size)) {
    GTEST_SKIP() << "this build or device has no prefetch GEMM (sm_90 with CUTLASS's example 63)";
  }
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions cublas = Fp8Options(/*w8a8=*/true);
  cublas.prefetch_gemm_fp8 = false;
  engine::CudaBackendOptions prefetch = cublas;
  prefetch.prefetch_gemm_fp8 = true;
  const std::vector<int32_t>& text = loaded->golden[0].tokens;
  const Agreement cublas_from_bf16 =
      KernelPathAgreement(checkpoint, TestOptions(), cublas, text, steps);
  const Agreement prefetch_from_bf16 =
      KernelPathAgreement(checkpoint, TestOptions(), prefetch, text, steps);
  std::printf(
      "W8A8 from the bf16 path, mean |dlogprob| (max): prefetch GEMM %.3g (%.3g), cuBLASLt %.3g "
      "(%.3g)\n",
      prefetch_from_bf16.mean_abs, prefetch_from_bf16.max_abs, cublas_from_bf16.mean_abs,
      cublas_from_bf16.max_abs);
  EXPECT_LE(prefetch_from_bf16.mean_abs, 1.25 * cublas_from_bf16.mean_abs);
  if (!SanitizerRun()) {
    const std::vector<engine::LaunchRecord> trace =
        BatchThreeDecodeTrace(checkpoint, prefetch, loaded->golden[0].tokens);
    EXPECT_GE(CountOpsEndingWith(trace, "(prefetch GEMM)"), 2 * c.num_layers)
        << "every layer's projections, at least two each";
  }
}

// Fresh prefill passes with their attention through cuDNN's fused attention
// (cudnn_attention_min_tokens) against the project's kernel: the demo prompt in one pass (565
// tokens, past the model's 256-key window) and one pass packing the same text as four fresh
// prompts of different lengths (282, 1, 141, 141), within half of §8.4's budget (cuDNN rounds P
// to bf16 where ours rounds it to half, and sums in another order). The launch trace says which
// path ran. Skipped where cuDNN does not load.
TEST(CudaBackendTest, CudnnPrefillAttentionMatchesOwnKernel) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const loader::ModelConfig& c = checkpoint.config();
  const int V = c.vocab_size;
  engine::CudaBackendOptions own = TestOptions();
  own.max_tokens_per_step = 1024;  // the whole prompt in one pass
  own.cudnn_attention_min_tokens = 0;
  engine::CudaBackendOptions cudnn = own;
  cudnn.cudnn_attention_min_tokens = 1;
  const std::vector<int32_t>& text = loaded->golden[0].tokens;
  // Past the window (the whole prompt and the first packed one), except in sanitizer runs, which
  // cut the text to a few tokens.
  if (!SanitizerRun()) {
    ASSERT_GT(text.size(), size_t{2} * (c.attention_window + 1));
  }
  const int T = static_cast<int>(text.size());
  const int lengths[] = {T / 2, 1, T / 4, T - T / 2 - 1 - T / 4};
  std::vector<float> logprobs[2];
  for (const bool on : {false, true}) {
    auto backend = MakeBackend(checkpoint, on ? cudnn : own);
    ASSERT_NE(backend, nullptr);
    const std::string library = backend->prefill_attention_library();
    if (on && library.rfind("cuDNN", 0) != 0) GTEST_SKIP() << library;
    std::vector<engine::LaunchRecord> trace;
    backend->set_launch_trace(&trace);
    std::vector<float> got = StepLogProbs(*backend, text, 0, 0);
    std::vector<StepEntry> entries;
    int first = 0;
    for (int s = 0; s < 4; ++s) {
      entries.push_back({.slot = 1 + s,
                         .position = 0,
                         .tokens = absl::MakeConstSpan(text).subspan(first, lengths[s]),
                         .logits = LogitsRequest::kLast});
      first += lengths[s];
    }
    std::vector<float> rows(size_t(4) * V);
    ASSERT_TRUE(backend->Step(entries, absl::MakeSpan(rows)).ok());
    got.insert(got.end(), rows.begin(), rows.end());
    logprobs[on] = LogSoftmaxRows(got, V);
    int cudnn_launches = 0;
    for (const engine::LaunchRecord& r : trace) cudnn_launches += r.kernel == "CudnnAttention";
    // Both steps are one fresh pass each: every attention layer of both through cuDNN.
    EXPECT_EQ(cudnn_launches, on ? 2 * c.num_attention_layers() : 0) << library;
  }
  const Agreement agreement = Compare(logprobs[1], logprobs[0], V);
  std::printf("cuDNN prefill attention vs own kernel: mean |dlogprob| %.3g, max %.3g, top-1 %.4f\n",
              agreement.mean_abs, agreement.max_abs, agreement.top1);
  EXPECT_LE(agreement.mean_abs, 1e-2);
  engine::CudaBackendOptions bad = own;
  bad.cudnn_attention_min_tokens = -1;
  const auto refused = CudaBackend::Create(checkpoint, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("cudnn_attention_min_tokens"), std::string::npos);
}

// Prefill attention with the longest tiles cut in two key parts (prefill_attention_split_long_tiles)
// against whole tiles: 2B's attention shapes (10 heads of 256, one kv head, a 2048-key window) in
// a model of one recurrent and one attention block with random weights and a 1,024-word
// vocabulary, one 2,048-token prompt in one pass (171 tiles of 12 tokens: on an H200's 132 SMs the
// latest tiles are cut). Every position's log-probabilities close to whole tiles' (a cut tile's two
// parts are merged from their partials: another order of sums), within bounds set between what the
// built merge gives and what a broken one gives (below); the launch trace names
// the cut pass. Skipped where the pass is not cut (a GPU whose SMs hold the tiles evenly) and
// under compute-sanitizer (the kernel cases run the cut tiles there, far quicker).
TEST(CudaBackendTest, CutLongAttentionTilesMatchWholeTiles) {
  SKIP_WITHOUT_GPU();
  if (SanitizerRun()) GTEST_SKIP() << "2,048-token passes; attention.*cut_tiles cases instead";
  loader::ModelConfig c = engine::RecurrentGemma2B();
  c.vocab_size = 1024;
  c.num_layers = 2;
  c.block_types = {loader::BlockType::kRecurrent, loader::BlockType::kAttention};
  const int V = c.vocab_size, T = 2048;
  std::vector<int32_t> prompt(T);
  for (int t = 0; t < T; ++t) prompt[t] = (t * 7919 + 13) % V;
  engine::CudaBackendOptions whole = TestOptions();
  whole.max_tokens_per_step = T;
  whole.cudnn_attention_min_tokens = 0;  // the project's kernel, whose tiles this cuts
  whole.prefill_attention_split_long_tiles = false;
  engine::CudaBackendOptions cut = whole;
  cut.prefill_attention_split_long_tiles = true;
  std::vector<float> logprobs[2];
  for (const bool on : {false, true}) {
    auto backend = CudaBackend::CreateRandom(c, on ? cut : whole, 7);
    ASSERT_TRUE(backend.ok()) << backend.status();
    std::vector<engine::LaunchRecord> trace;
    (*backend)->set_launch_trace(&trace);
    logprobs[on] = StepLogProbs(**backend, prompt, 0, 0);
    int cut_layers = 0, combines = 0;
    for (const engine::LaunchRecord& r : trace) {
      cut_layers += r.op.find("long tiles cut") != std::string::npos;
      combines += r.kernel == "Combine";
    }
    if (on && cut_layers == 0) GTEST_SKIP() << "this GPU's pass of 2,048 tokens cuts no tile";
    EXPECT_EQ(cut_layers, on ? c.num_attention_layers() : 0);
    EXPECT_EQ(combines, 0);  // the parts merge inside the attention kernel
  }
  const Agreement agreement = Compare(logprobs[1], logprobs[0], V);
  std::printf("cut attention tiles vs whole: mean |dlogprob| %.3g, max %.3g, top-1 %.4f\n",
              agreement.mean_abs, agreement.max_abs, agreement.top1);
  // Session 20 (H200): 3.1e-4 mean and 8.9e-3 max as built; 2.7e-3 and 0.097 with the merge
  // broken (the second part's weight zero: a part's keys dropped) passed half of §8.4's budget
  // (1e-2), which random weights over 2,048 keys barely feel. Bounds ~3x from either.
  EXPECT_LE(agreement.mean_abs, 1e-3);
  EXPECT_LE(agreement.max_abs, 3e-2);
}

// The MLP as the up GEMM and the gate GEMM with GeGLU in its epilogue (gemm_geglu_min_rows; on
// by default for passes of 512 tokens and more) against the fused gate|up GEMM and the GeGLU
// pass, through every pass of the kernel path (min rows 1: the decode graphs too), within half of
// §8.4's budget: the same float32 math, the gate's sums in another order (and, with the up
// projection in bf16, one more rounding).
TEST(CudaBackendTest, GateGemmWithGeGluMatchesGeGluPass) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const loader::ModelConfig& c = checkpoint.config();
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!kernels::GemmGeGluSupported(device, 1, c.mlp_width, c.hidden_size)) {
    GTEST_SKIP() << "the gate GEMM with GeGLU needs an sm_90a build with CUTLASS on a compute "
                    "capability 9.0 GPU";
  }
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions pass = TestOptions();
  pass.gemm_geglu_min_rows = 0;
  engine::CudaBackendOptions fused = pass;
  fused.gemm_geglu_min_rows = 1;
  // The up projection handed over in float32 and in bf16 (gemm_geglu_up_bf16: one more rounding).
  for (const bool up_bf16 : {false, true}) {
    engine::CudaBackendOptions with_up = fused;
    with_up.gemm_geglu_up_bf16 = up_bf16;
    const Agreement agreement =
        KernelPathAgreement(checkpoint, pass, with_up, loaded->golden[0].tokens, steps);
    std::printf("gate GEMM + GeGLU (up in %s) vs GeGLU pass: mean |dlogprob| %.3g, max %.3g\n",
                up_bf16 ? "bf16" : "float32", agreement.mean_abs, agreement.max_abs);
    EXPECT_LE(agreement.mean_abs, 1e-2) << (up_bf16 ? "bf16 up" : "float32 up");
  }
  // The logits may be bit-identical (cuBLASLt's algorithm can sum in CUTLASS's order), so the
  // launch trace says which path ran: every layer's MLP through the new kernel, and no GeGLU pass.
  for (const bool on : {false, true}) {
    auto backend = MakeBackend(checkpoint, on ? fused : pass);
    ASSERT_NE(backend, nullptr);
    std::vector<engine::LaunchRecord> trace;
    backend->set_launch_trace(&trace);
    StepLogProbs(*backend, loaded->golden[0].tokens, 0, 0);
    int kernel = 0, geglu_pass = 0;
    for (const engine::LaunchRecord& r : trace) {
      kernel += r.kernel == "GemmGeGlu";
      geglu_pass += r.kernel == "GeGlu";
    }
    // Every layer of every pass (the text takes several passes of max_tokens_per_step).
    const int ran = on ? kernel : geglu_pass, other = on ? geglu_pass : kernel;
    EXPECT_GT(ran, 0) << (on ? "fused" : "pass");
    EXPECT_EQ(ran % c.num_layers, 0) << (on ? "fused" : "pass");
    EXPECT_EQ(other, 0) << (on ? "fused" : "pass");
  }
  for (const int config : {-1, kernels::kGemmGeGluConfigs}) {
    engine::CudaBackendOptions bad = pass;
    bad.gemm_geglu_config = config;
    const auto refused = CudaBackend::Create(checkpoint, bad);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("gemm_geglu_config"), std::string::npos);
  }
}

// The projections into the residual stream (the MLP's down projection, the recurrent and
// attention output projections) split over K into partial products that the next norm adds
// (split_k_parts forced; split_k_max_rows above the passes' 64 tokens, so prefill passes split
// too) against whole GEMMs, through every pass of the kernel path: the same float32 products,
// summed in another order, which flips some bf16 roundings of the normalised activations. Session
// 23 (H200): 5.9e-3 / 6.1e-3 mean and 0.065 / 0.057 max for 2 / 3 parts, as large as other
// reorderings of the same sums (the gate GEMM with GeGLU: 7.1e-3 and 0.067; cuDNN's attention:
// 5.8e-3 and 0.063); a build whose norm read only the first part (the others dropped) gave mean
// 1.54 / 2.03 and max 12.7 / 15.2.
TEST(CudaBackendTest, SplitKProjectionsMatchWholeGemms) {
  SKIP_WITHOUT_GPU();
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const loader::ModelConfig& c = checkpoint.config();
  const int steps = SanitizerRun() ? 2 : 4;
  engine::CudaBackendOptions whole = TestOptions();
  whole.split_k_max_rows = 0;
  // Passes of up to prefetch_gemm_max_rows rows take the prefetch GEMM and its own split
  // (PrefetchGemmMatchesCuBlasLt): cuBLASLt here.
  whole.prefetch_gemm_max_rows = 0;
  // Under the sanitizers one split (each backend captures its decode graphs: racecheck did not
  // finish this test with seven backends in 230 s) and no trace pass.
  const std::vector<int> splits = SanitizerRun() ? std::vector<int>{3} : std::vector<int>{2, 3};
  for (const int parts : splits) {
    engine::CudaBackendOptions split = whole;
    split.split_k_max_rows = 4096;
    split.split_k_parts = parts;
    const Agreement agreement =
        KernelPathAgreement(checkpoint, whole, split, loaded->golden[0].tokens, steps);
    std::printf("split-K in %d parts vs whole GEMMs: mean |dlogprob| %.3g, max %.3g\n", parts,
                agreement.mean_abs, agreement.max_abs);
    EXPECT_LE(agreement.mean_abs, 2e-2) << parts << " parts";
    EXPECT_LE(agreement.max_abs, 0.2) << parts << " parts";
  }
  // The launch trace says the split ran: in every layer, once into each residual add.
  for (const bool on : {false, true}) {
    if (SanitizerRun()) break;
    engine::CudaBackendOptions opt = whole;
    if (on) {
      opt.split_k_max_rows = 4096;
      opt.split_k_parts = 3;
    }
    auto backend = MakeBackend(checkpoint, opt);
    ASSERT_NE(backend, nullptr);
    std::vector<engine::LaunchRecord> trace;
    backend->set_launch_trace(&trace);
    StepLogProbs(*backend, loaded->golden[0].tokens, 0, 0);
    int split_gemms = 0;
    for (const engine::LaunchRecord& r : trace) {
      split_gemms += absl::EndsWith(r.op, "(split-K)");
    }
    if (on) {
      EXPECT_GT(split_gemms, 0);
      EXPECT_EQ(split_gemms % (2 * c.num_layers), 0);
    } else {
      EXPECT_EQ(split_gemms, 0);
    }
  }
  for (const auto& [max_rows, parts] :
       std::vector<std::pair<int, int>>{{-1, 0}, {512, -1}, {512, 9}}) {
    engine::CudaBackendOptions bad = whole;
    bad.split_k_max_rows = max_rows;
    bad.split_k_parts = parts;
    const auto refused = CudaBackend::Create(checkpoint, bad);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("split_k"), std::string::npos);
  }
}

// Issue 14's quality figures on the GPU: the demo model on the fixed text with FP8 weights
// against the bf16 GPU path (targets: cross-entropy within 1% relative, top-1 agreement >= 97%;
// the CPU emulation measured +0.214% and 96.99%). Bounds catch a broken FP8 path, not the targets;
// the figures are printed for bench/RESULTS.md.
TEST(CudaFp8QualityTest, DemoTextBesideBf16) {
  SKIP_WITHOUT_GPU();
  if (SanitizerRun()) GTEST_SKIP() << "a figure, not a kernel path the other FP8 tests miss";
  auto loaded = LoadCase("demo");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const loader::Checkpoint& checkpoint = *loaded->checkpoint;
  const int V = checkpoint.config().vocab_size;
  const std::vector<int32_t>& tokens = loaded->golden[0].tokens;
  auto bf16 = MakeBackend(checkpoint);
  ASSERT_NE(bf16, nullptr);
  const std::vector<float> a = StepLogProbs(*bf16, tokens, 0, 0);
  for (const bool w8a8 : {true, false}) {
    auto fp8 = MakeBackend(checkpoint, Fp8Options(w8a8));
    ASSERT_NE(fp8, nullptr);
    const std::vector<float> b = StepLogProbs(*fp8, tokens, 0, 0);
    ASSERT_EQ(a.size(), tokens.size() * V);
    ASSERT_EQ(b.size(), a.size());
    const golden::NextTokenQuality q = golden::CompareNextTokens(b, a, tokens, V);
    std::printf(
        "demo model, fixed text, GPU: cross-entropy bf16 %.6f, FP8 weights (%s) %.6f nats/token "
        "(%+.3f%%); top-1 agreement %d/%d; mean |dlogprob| of the next tokens %.4f\n",
        q.ce_ref, w8a8 ? "W8A8 prefill" : "W8A16 prefill", q.ce_got,
        100 * (q.ce_got - q.ce_ref) / q.ce_ref, q.agreed, q.positions, q.mean_abs);
    EXPECT_LE(q.relative_ce(), 0.01);
    EXPECT_GE(double(q.agreed) / q.positions, 0.95);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFp8Test,
                         ::testing::Values("griffin", "hawk", "attnfirst", "demo"));

}  // namespace
}  // namespace griffin
