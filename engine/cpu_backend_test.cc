#include "engine/cpu_backend.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "engine/random_checkpoint.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"

namespace griffin::engine {
namespace {

using loader::BlockType;
constexpr BlockType R = BlockType::kRecurrent;
constexpr BlockType A = BlockType::kAttention;

struct ModelCase {
  std::string name;
  std::vector<BlockType> pattern;
  int layers;
  int window;
  int lru_width;
  int kv_heads;
};

std::vector<ModelCase> Cases() {
  return {
      {"griffin", {R, R, A}, 4, 5, 40, 1},
      {"hawk", {R}, 2, 5, 24, 1},  // lru_width ≠ hidden_size
      {"attention_first", {A, R}, 3, 4, 32, 1},
      {"gqa", {A, R}, 2, 3, 32, 2},  // 4 query heads over 2 KV heads
  };
}

class CpuBackendTest : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    const ModelCase& mc = GetParam();
    config_ = TinyConfig(mc.pattern, mc.layers, mc.window);
    config_.lru_width = mc.lru_width;
    config_.num_kv_heads = mc.kv_heads;
    dir_ = (std::filesystem::temp_directory_path() /
            absl::StrCat("griffin_cpu_backend_test_", mc.name, "_", getpid()))
               .string();
    ASSERT_TRUE(WriteRandomCheckpoint(dir_, config_, 1234).ok());
    auto checkpoint = loader::Checkpoint::Open(dir_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    auto backend = CpuBackend::Create(*checkpoint_, /*num_slots=*/4);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<int32_t> RandomTokens(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> dist(3, config_.vocab_size - 1);
    std::vector<int32_t> tokens(n);
    for (auto& t : tokens) t = dist(rng);
    tokens[0] = config_.bos_token_id;
    return tokens;
  }

  // Logits for every position, feeding `tokens` into `slot` in chunks of `chunk` (0 = at once).
  std::vector<float> RunAll(const std::vector<int32_t>& tokens, int chunk, int slot = 0) {
    const int T = tokens.size(), V = config_.vocab_size;
    if (chunk == 0) chunk = T;
    std::vector<float> logits(size_t(T) * V, NAN);
    for (int s = 0; s < T; s += chunk) {
      const int n = std::min(chunk, T - s);
      StepEntry e{.slot = slot,
                  .position = s,
                  .tokens = absl::MakeConstSpan(tokens).subspan(s, n),
                  .logits = LogitsRequest::kAll};
      absl::Status st =
          backend_->Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(s) * V, size_t(n) * V));
      EXPECT_TRUE(st.ok()) << st;
    }
    return logits;
  }

  static float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
  }

  loader::ModelConfig config_;
  std::string dir_;
  std::unique_ptr<loader::Checkpoint> checkpoint_;
  std::unique_ptr<CpuBackend> backend_;
};

// Prefill at once, in chunks (1, 3, window+1) and token by token give the same logits, over
// sequences several windows long (ring wraparound, LEN-5: window-1, window, window+1, 2·window+3).
TEST_P(CpuBackendTest, PrefillChunkedAndDecodeAgree) {
  const int W = config_.attention_window;
  for (int T : {W - 1, W, W + 1, 2 * W + 3, 4 * W + 1}) {
    auto tokens = RandomTokens(T, T);
    const auto whole = RunAll(tokens, 0);
    for (float v : whole) ASSERT_TRUE(std::isfinite(v));
    for (int chunk : {1, 3, W + 1}) {
      const auto pieces = RunAll(tokens, chunk);
      EXPECT_LE(MaxDiff(whole, pieces), 1e-5) << "T=" << T << " chunk=" << chunk;
    }
  }
}

// kAll rows equal the kLast row of each prefix.
TEST_P(CpuBackendTest, AllRowsMatchLastRowOfPrefixes) {
  auto tokens = RandomTokens(9, 3);
  const int V = config_.vocab_size;
  const auto all = RunAll(tokens, 0);
  for (int n : {1, 4, 9}) {
    std::vector<float> last(V);
    StepEntry e{.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(tokens).subspan(0, n)};
    ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(last)).ok());
    std::vector<float> row(all.begin() + size_t(n - 1) * V, all.begin() + size_t(n) * V);
    EXPECT_LE(MaxDiff(row, last), 1e-5);
  }
}

// A batch of mixed prefill and decode entries gives each sequence exactly what it gets alone, and
// a step never touches slots that are not in it (NUM-1, KER-2 b).
TEST_P(CpuBackendTest, BatchEqualsAloneAndOtherSlotsUntouched) {
  const int V = config_.vocab_size;
  auto a = RandomTokens(7, 10), b = RandomTokens(12, 11), c = RandomTokens(3, 12);
  const auto alone_a = RunAll(a, 0, 0), alone_b = RunAll(b, 0, 0), alone_c = RunAll(c, 0, 0);
  // Slot 3 holds a sequence that must not move while others step.
  auto d = RandomTokens(5, 13);
  RunAll(d, 0, 3);
  const int64_t d_next = backend_->NextPosition(3);

  // Step 1: prefill a[0..6) and b[0..8), decode-start c[0].
  std::vector<float> out(3 * V);
  std::vector<StepEntry> step1 = {
      {.slot = 0, .position = 0, .tokens = absl::MakeConstSpan(a).subspan(0, 6)},
      {.slot = 1, .position = 0, .tokens = absl::MakeConstSpan(b).subspan(0, 8)},
      {.slot = 2, .position = 0, .tokens = absl::MakeConstSpan(c).subspan(0, 1)}};
  ASSERT_TRUE(backend_->Step(step1, absl::MakeSpan(out)).ok());
  auto row = [&](const std::vector<float>& v, int i) {
    return std::vector<float>(v.begin() + size_t(i) * V, v.begin() + size_t(i + 1) * V);
  };
  EXPECT_LE(MaxDiff(row(out, 0), row(alone_a, 5)), 1e-5);
  EXPECT_LE(MaxDiff(row(out, 1), row(alone_b, 7)), 1e-5);
  EXPECT_LE(MaxDiff(row(out, 2), row(alone_c, 0)), 1e-5);

  // Step 2: decode a[6], prefill b[8..12), decode c[1..2] as a chunk.
  std::vector<StepEntry> step2 = {
      {.slot = 0, .position = 6, .tokens = absl::MakeConstSpan(a).subspan(6, 1)},
      {.slot = 1, .position = 8, .tokens = absl::MakeConstSpan(b).subspan(8, 4)},
      {.slot = 2, .position = 1, .tokens = absl::MakeConstSpan(c).subspan(1, 2)}};
  ASSERT_TRUE(backend_->Step(step2, absl::MakeSpan(out)).ok());
  EXPECT_LE(MaxDiff(row(out, 0), row(alone_a, 6)), 1e-5);
  EXPECT_LE(MaxDiff(row(out, 1), row(alone_b, 11)), 1e-5);
  EXPECT_LE(MaxDiff(row(out, 2), row(alone_c, 2)), 1e-5);

  // Slot 3 continues exactly as if nothing else had run.
  EXPECT_EQ(backend_->NextPosition(3), d_next);
  auto d_more = d;
  d_more.push_back(17);
  const auto reference = RunAll(d_more, 0, 0);
  std::vector<float> cont(V);
  StepEntry e{.slot = 3, .position = d_next, .tokens = absl::MakeConstSpan(d_more).subspan(5, 1)};
  ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(cont)).ok());
  EXPECT_LE(MaxDiff(cont, row(reference, 5)), 1e-5);
}

// A reset (or reused) slot starts from zero state: CAN-5.
TEST_P(CpuBackendTest, ResetSlotStartsClean) {
  auto first = RandomTokens(11, 20), second = RandomTokens(6, 21);
  const auto fresh = RunAll(second, 0, 2);
  RunAll(first, 0, 1);
  ASSERT_TRUE(backend_->ResetSlot(1).ok());
  EXPECT_EQ(backend_->NextPosition(1), 0);
  EXPECT_EQ(RunAll(second, 0, 1), fresh);
  // Position 0 on a used slot also starts over without an explicit reset.
  RunAll(first, 0, 1);
  EXPECT_EQ(RunAll(second, 0, 1), fresh);
}

// Invalid steps are rejected before any slot changes.
TEST_P(CpuBackendTest, InvalidStepsLeaveStateUntouched) {
  const int V = config_.vocab_size;
  auto tokens = RandomTokens(6, 30);
  RunAll(std::vector<int32_t>(tokens.begin(), tokens.begin() + 4), 0, 0);
  std::vector<float> out(2 * V);
  const int32_t bad_token[] = {V};
  const int32_t neg_token[] = {-1};
  const int32_t good[] = {5};
  std::vector<std::vector<StepEntry>> bad_steps = {
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 4, .position = 0, .tokens = good}},
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 0, .position = 5, .tokens = good}},
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 1, .position = 3, .tokens = good}},
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 1, .position = 0, .tokens = bad_token}},
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 1, .position = 0, .tokens = neg_token}},
      {{.slot = 0, .position = 4, .tokens = good}, {.slot = 1, .position = 0, .tokens = {}}},
      {{.slot = 0, .position = 3, .tokens = good}},
  };
  for (size_t i = 0; i < bad_steps.size(); ++i) {
    absl::Span<float> logits = absl::MakeSpan(out).subspan(0, bad_steps[i].size() * V);
    absl::Status st = backend_->Step(bad_steps[i], logits);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(backend_->NextPosition(0), 4) << i;
  }
  // Wrong logits size.
  StepEntry e{.slot = 0, .position = 4, .tokens = good};
  EXPECT_EQ(backend_->Step({&e, 1}, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->NextPosition(0), 4);
  // The sequence continues exactly as if the bad steps never happened.
  const auto reference = RunAll(tokens, 0, 3);
  std::vector<float> cont(V);
  StepEntry next{.slot = 0, .position = 4, .tokens = absl::MakeConstSpan(tokens).subspan(4, 1)};
  ASSERT_TRUE(backend_->Step({&next, 1}, absl::MakeSpan(cont)).ok());
  EXPECT_EQ(cont, std::vector<float>(reference.begin() + 4 * V, reference.begin() + 5 * V));
}

TEST_P(CpuBackendTest, LogitsAreSoftCapped) {
  auto tokens = RandomTokens(5, 40);
  for (float v : RunAll(tokens, 0)) {
    EXPECT_LE(std::abs(v), config_.logits_soft_cap);
  }
}

// KER-2 (c): a slot snapshotted (to host bytes, or copied to another slot) at any point relative to
// the attention window and then restored continues bit-identically to the original.
TEST_P(CpuBackendTest, RestoredAndCopiedSlotsContinueBitIdentically) {
  const int W = config_.attention_window, V = config_.vocab_size;
  const StateLayout* layout = backend_->state_layout();
  ASSERT_NE(layout, nullptr);
  ASSERT_EQ(layout->slot_bytes(), backend_->state_bytes_per_sequence());
  for (int prefix : {1, W - 1, W, W + 1, 2 * W + 3}) {
    const auto tokens = RandomTokens(prefix + 7, prefix);
    ASSERT_TRUE(backend_->ResetSlot(0).ok());
    StepEntry pre{.slot = 0,
                  .position = 0,
                  .tokens = absl::MakeConstSpan(tokens).subspan(0, prefix),
                  .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&pre, 1}, {}).ok());
    std::vector<uint8_t> snapshot(layout->slot_bytes());
    auto position = backend_->SnapshotSlot(0, absl::MakeSpan(snapshot));
    ASSERT_TRUE(position.ok()) << position.status();
    EXPECT_EQ(*position, prefix);
    ASSERT_TRUE(backend_->CopySlot(0, 2).ok());
    // Garbage in slot 1 first: the restore must overwrite every byte.
    const auto junk = RandomTokens(W + 2, 99);
    StepEntry dirty{.slot = 1, .position = 0, .tokens = junk, .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&dirty, 1}, {}).ok());
    ASSERT_TRUE(backend_->RestoreSlot(1, snapshot, *position).ok());
    EXPECT_EQ(backend_->NextPosition(1), prefix);
    EXPECT_EQ(backend_->NextPosition(2), prefix);
    // The continuation, one decode token at a time, on the original, the restored and the copy.
    for (int t = prefix; t < prefix + 7; ++t) {
      std::vector<float> got[3];
      for (int slot : {0, 1, 2}) {
        got[slot].assign(V, NAN);
        StepEntry e{
            .slot = slot, .position = t, .tokens = absl::MakeConstSpan(tokens).subspan(t, 1)};
        ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(got[slot])).ok());
      }
      EXPECT_EQ(0, std::memcmp(got[0].data(), got[1].data(), V * sizeof(float)))
          << "restored slot diverged at position " << t << " (prefix " << prefix << ")";
      EXPECT_EQ(0, std::memcmp(got[0].data(), got[2].data(), V * sizeof(float)))
          << "copied slot diverged at position " << t << " (prefix " << prefix << ")";
    }
  }
}

TEST_P(CpuBackendTest, SnapshotAndRestoreRejectBadArguments) {
  const int64_t bytes = backend_->state_layout()->slot_bytes();
  std::vector<uint8_t> ok(bytes), short_buffer(bytes - 1);
  EXPECT_EQ(backend_->SnapshotSlot(4, absl::MakeSpan(ok)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->SnapshotSlot(0, absl::MakeSpan(short_buffer)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->RestoreSlot(0, short_buffer, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->RestoreSlot(-1, ok, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->RestoreSlot(0, ok, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->CopySlot(0, 4).code(), absl::StatusCode::kInvalidArgument);
  // A rejected restore changed nothing.
  EXPECT_EQ(backend_->NextPosition(0), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, CpuBackendTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(CpuBackendLoadTest, Bf16CheckpointWidensExactly) {
  loader::ModelConfig config = TinyConfig({R, R, A}, 3, 4);
  const std::string dir =
      (std::filesystem::temp_directory_path() / absl::StrCat("griffin_bf16_", getpid())).string();
  ASSERT_TRUE(WriteRandomCheckpoint(dir, config, 7, loader::DType::kBF16).ok());
  auto checkpoint = loader::Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto weights = LoadCpuWeights(**checkpoint);
  ASSERT_TRUE(weights.ok()) << weights.status();
  // Every widened value is a bf16 value.
  for (float v : (*weights)[ModelTensor::kEmbedding]) EXPECT_EQ(v, RoundToBf16(v));
  std::filesystem::remove_all(dir);
}

TEST(CpuBackendLoadTest, MissingTensorFailsAtLoad) {
  loader::ModelConfig config = TinyConfig({R, A}, 2, 4);
  const std::string dir =
      (std::filesystem::temp_directory_path() / absl::StrCat("griffin_missing_", getpid()))
          .string();
  ASSERT_TRUE(WriteRandomCheckpoint(dir, config, 7).ok());
  // Claim one more layer than the file holds.
  loader::ModelConfig bigger = TinyConfig({R, A}, 3, 4);
  {
    std::ofstream f(dir + "/config.json");
    f << ConfigJson(bigger);
  }
  auto checkpoint = loader::Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto backend = CpuBackend::Create(**checkpoint, 1);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(backend.status().message().find("model.layers.2."), std::string::npos)
      << backend.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace griffin::engine
