// The prefix-state cache inside the engine (issue 15): RST-1 (greedy output identical with the
// cache on and off, over shared prefixes and multi-turn conversations), RST-2 (a whole-prompt hit
// still feeds the last token), prompt tokens computed only once, SEC-10 (salts never share), and a
// cache holding slots never refusing an admission.
#include <condition_variable>
#include <mutex>
#include <vector>

#include "engine/backend_factory.h"
#include "engine/engine_core.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"

namespace griffin::engine {
namespace {

class Result {
 public:
  OutputCallback Callback() {
    return [this](EngineOutput out) {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.insert(tokens_.end(), out.tokens.begin(), out.tokens.end());
      if (out.finished) {
        status_ = out.status;
        done_ = true;
        cv_.notify_all();
      }
    };
  }
  std::vector<int32_t> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; }));
    EXPECT_TRUE(status_.ok()) << status_;
    return tokens_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::Status status_;
  std::vector<int32_t> tokens_;
};

class EnginePrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto checkpoint =
        loader::Checkpoint::Open(std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin");
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
  }
  // device_entries / host_entries = 0 / 0 turns the cache off.
  std::unique_ptr<EngineCore> Make(int slots, int device_entries, int host_entries,
                                   int64_t token_budget = 64) {
    auto backend = CreateBackend(*checkpoint_, {.kind = BackendKind::kCpu, .num_slots = slots});
    EXPECT_TRUE(backend.ok()) << backend.status();
    EngineOptions options;
    options.token_budget = token_budget;
    options.prefix_cache.block_tokens = 8;
    options.prefix_cache.max_device_entries = device_entries;
    options.prefix_cache.host_bytes =
        int64_t{host_entries} * (*backend)->state_layout()->slot_bytes();
    options.model_identity = 99;
    auto core = EngineCore::Create(std::move(*backend), options);
    EXPECT_TRUE(core.ok()) << core.status();
    return std::move(*core);
  }
  static ValidatedRequest Greedy(std::vector<int32_t> prompt, int max_tokens,
                                 std::string salt = "") {
    ValidatedRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = 0.0f;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.cache_salt = std::move(salt);
    return r;
  }
  static std::vector<int32_t> Run(EngineCore& core, ValidatedRequest request) {
    Result result;
    auto id = core.Submit(std::move(request), result.Callback());
    EXPECT_TRUE(id.ok()) << id.status();
    return result.Wait();
  }
  static std::vector<int32_t> Prompt(int n, int seed) {
    std::vector<int32_t> p = {2};
    for (int i = 1; i < n; ++i) p.push_back(3 + (i * 37 + seed * 11) % 90);
    return p;
  }
  std::unique_ptr<loader::Checkpoint> checkpoint_;
};

TEST_F(EnginePrefixCacheTest, SameOutputsWithTheCacheOnAndOffOverConversations) {
  auto off = Make(4, 0, 0);
  auto on = Make(4, 2, 4);
  // A shared system prompt, then a three-turn conversation: each turn's prompt is the previous
  // prompt + its output + new tokens (RST-1).
  const std::vector<int32_t> system = Prompt(21, 1);
  for (int user = 0; user < 2; ++user) {
    std::vector<int32_t> prompt = system;
    for (int turn = 0; turn < 3; ++turn) {
      const std::vector<int32_t> more = Prompt(5 + turn, 10 * user + turn);
      prompt.insert(prompt.end(), more.begin() + 1, more.end());
      const auto want = Run(*off, Greedy(prompt, 6));
      const auto got = Run(*on, Greedy(prompt, 6));
      ASSERT_EQ(got, want) << "user " << user << " turn " << turn;
      prompt.insert(prompt.end(), got.begin(), got.end());
    }
  }
  const EngineStats s = on->stats();
  EXPECT_GT(s.prefix_cache.hits, 0);
  EXPECT_GT(s.prefix_cache.hit_tokens, 0);
  EXPECT_LT(s.prompt_tokens_computed, off->stats().prompt_tokens_computed);
  EXPECT_EQ(off->stats().prefix_cache.queries, 0);
}

TEST_F(EnginePrefixCacheTest, ARepeatedPromptIsComputedOnceExceptItsLastToken) {
  auto on = Make(4, 2, 2);
  const std::vector<int32_t> prompt = Prompt(30, 3);
  const auto first = Run(*on, Greedy(prompt, 4));
  const int64_t computed = on->stats().prompt_tokens_computed;
  EXPECT_EQ(computed, 30);
  // The first request's final state covers its prompt and 3 fed outputs: the repeat restores the
  // longest cached prefix shorter than the prompt (block 24) and feeds the rest (RST-2).
  const auto second = Run(*on, Greedy(prompt, 4));
  EXPECT_EQ(second, first);
  EXPECT_EQ(on->stats().prompt_tokens_computed - computed, 30 - 24);
}

TEST_F(EnginePrefixCacheTest, SaltsNeverShare) {
  auto on = Make(4, 2, 2);
  const std::vector<int32_t> prompt = Prompt(30, 4);
  Run(*on, Greedy(prompt, 2, "tenant-a"));
  const int64_t before = on->stats().prompt_tokens_computed;
  Run(*on, Greedy(prompt, 2, "tenant-b"));
  EXPECT_EQ(on->stats().prompt_tokens_computed - before, 30);  // no hit across tenants
  Run(*on, Greedy(prompt, 2, "tenant-a"));
  EXPECT_LT(on->stats().prompt_tokens_computed - before, 60);  // a hit within one
}

// Two slots, the cache allowed to hold both while idle: every request still gets a slot (the
// cache gives them back), and outputs do not change.
TEST_F(EnginePrefixCacheTest, ACacheHoldingSlotsNeverRefusesAnAdmission) {
  auto on = Make(2, 2, 24);
  auto off = Make(2, 0, 0);
  std::vector<std::unique_ptr<Result>> results;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(Prompt(17 + i, i));
  for (int round = 0; round < 2; ++round) {
    results.clear();
    for (const auto& p : prompts) {
      results.push_back(std::make_unique<Result>());
      ASSERT_TRUE(on->Submit(Greedy(p, 3), results.back()->Callback()).ok());
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(results[i]->Wait(), Run(*off, Greedy(prompts[i], 3))) << i;
    }
  }
  const EngineStats s = on->stats();
  EXPECT_GT(s.prefix_cache.hits, 0);
  // The device tier was used (idle slots at the end of a round) and given back for admissions.
  EXPECT_GT(s.prefix_cache.demotions + s.prefix_cache.evictions, 0);
}

}  // namespace
}  // namespace griffin::engine
