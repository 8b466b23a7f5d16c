// The prefix-state cache inside the engine (issue 15): RST-1 (greedy output identical with the
// cache on and off, over shared prefixes and multi-turn conversations), RST-2 (a whole-prompt hit
// still feeds the last token), prompt tokens computed only once, SEC-10 (salts never share), and a
// cache holding slots never refusing an admission.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <vector>

#include "engine/backend_factory.h"
#include "engine/engine_core.h"
#include "engine/forwarding_backend.h"
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

// Calls a hook from inside a step or a slot copy, on the engine thread: lets a test act at one
// exact point of the engine's loop (an abort that lands while a fork is under way).
class HookedBackend final : public ForwardingBackend {
 public:
  HookedBackend(std::unique_ptr<Backend> inner, std::function<void()> on_step,
                std::function<void()> on_copy)
      : ForwardingBackend(std::move(inner)),
        on_step_(std::move(on_step)),
        on_copy_(std::move(on_copy)) {}
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override {
    if (on_step_) on_step_();
    return ForwardingBackend::Step(entries, logits);
  }
  absl::Status CopySlot(int from, int to) override {
    if (on_copy_) on_copy_();
    return ForwardingBackend::CopySlot(from, to);
  }

 private:
  std::function<void()> on_step_, on_copy_;
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
                                   int64_t token_budget = 64,
                                   std::function<void()> on_step = nullptr,
                                   std::function<void()> on_copy = nullptr) {
    auto backend = CreateBackend(*checkpoint_, {.kind = BackendKind::kCpu, .num_slots = slots});
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (on_step || on_copy) {
      *backend = std::make_unique<HookedBackend>(std::move(*backend), std::move(on_step),
                                                 std::move(on_copy));
    }
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

// A conversation's next turn restores the previous turn's end state and prefills its new tokens in
// one pass even across a block boundary (no extra pass on its time to first token); a prompt that
// restored nothing still ends a chunk at its last block boundary, so shared prefixes get cached.
TEST_F(EnginePrefixCacheTest, AContinuationPrefillsItsNewTokensInOnePass) {
  auto on = Make(4, 2, 4);
  std::vector<int32_t> prompt = Prompt(30, 5);
  const int64_t steps_before = on->stats().steps;
  const auto first = Run(*on, Greedy(prompt, 4));
  // 30 tokens cut at block 24: two prefill steps, then three decode steps.
  EXPECT_EQ(on->stats().steps - steps_before, 2 + 3);
  // The next turn: 34 tokens (its end state covers 33: the last output is not fed) + 12 new.
  prompt.insert(prompt.end(), first.begin(), first.end());
  const std::vector<int32_t> more = Prompt(13, 6);
  prompt.insert(prompt.end(), more.begin() + 1, more.end());
  const int64_t steps_mid = on->stats().steps, hit_tokens = on->stats().prefix_cache.hit_tokens;
  const auto second = Run(*on, Greedy(prompt, 4));
  EXPECT_EQ(on->stats().prefix_cache.hit_tokens - hit_tokens, 33);
  // Tokens 33..45 cross block 40 in one prefill step, then three decode steps.
  EXPECT_EQ(on->stats().steps - steps_mid, 1 + 3);
  auto off = Make(4, 0, 0);
  EXPECT_EQ(second, Run(*off, Greedy(prompt, 4)));
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

namespace griffin::engine {
namespace {

class EngineGroupTest : public EnginePrefixCacheTest {};

// n > 1 from one prefill: the prompt's tokens but the last are computed once, every member
// samples on its own (seeded) and gets the tokens it gets when submitted alone.
TEST_F(EngineGroupTest, MembersShareTheirPrefillAndSampleAlone) {
  for (int cache_entries : {0, 2}) {
    auto group_engine = Make(8, cache_entries, cache_entries);
    auto alone_engine = Make(8, 0, 0);
    const std::vector<int32_t> prompt = Prompt(40, 7);
    const int n = 4;
    std::vector<ValidatedRequest> requests;
    std::vector<std::unique_ptr<Result>> results;
    std::vector<OutputCallback> callbacks;
    for (int i = 0; i < n; ++i) {
      ValidatedRequest r = Greedy(prompt, 5);
      r.sampling.temperature = 1.0f;
      r.sampling.seed = 100 + i;
      requests.push_back(r);
      results.push_back(std::make_unique<Result>());
      callbacks.push_back(results.back()->Callback());
    }
    auto ids = group_engine->SubmitGroup(requests, std::move(callbacks));
    ASSERT_TRUE(ids.ok()) << ids.status();
    ASSERT_EQ(ids->size(), size_t(n));
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(results[i]->Wait(), Run(*alone_engine, requests[i])) << "member " << i;
    }
    // 39 tokens once, then the last token once per member.
    EXPECT_EQ(group_engine->stats().prompt_tokens_computed, 39 + n) << cache_entries;
    EXPECT_EQ(alone_engine->stats().prompt_tokens_computed, 40 * n);
  }
}

// Two slots for four members: the two that find no slot at the fork queue first and prefill
// alone; everyone still gets their tokens. An aborted member ends alone.
TEST_F(EngineGroupTest, MembersWithoutASlotPrefillAloneAndAbortsEndOneMember) {
  auto engine = Make(2, 0, 0);
  auto alone_engine = Make(2, 0, 0);
  const std::vector<int32_t> prompt = Prompt(20, 8);
  std::vector<ValidatedRequest> requests;
  std::vector<std::unique_ptr<Result>> results;
  std::vector<OutputCallback> callbacks;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(Greedy(prompt, 4));
    results.push_back(std::make_unique<Result>());
    callbacks.push_back(results.back()->Callback());
  }
  auto ids = engine->SubmitGroup(requests, std::move(callbacks));
  ASSERT_TRUE(ids.ok());
  const auto want = Run(*alone_engine, requests[0]);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(results[i]->Wait(), want) << i;
  EXPECT_GT(engine->stats().prompt_tokens_computed, 19 + 4);  // two prefilled alone
  EXPECT_EQ(engine->stats().waiting, 0);
  // A member aborted before its fork ends alone, CANCELLED; the others finish.
  std::vector<ValidatedRequest> three(3, Greedy(prompt, 4));
  three[2].max_tokens = 5000;  // cannot finish before the abort lands, however loaded the machine
  std::mutex mu;
  std::condition_variable cv;
  std::vector<absl::Status> ended(3);
  int finished = 0;
  std::vector<OutputCallback> cbs;
  for (int i = 0; i < 3; ++i) {
    cbs.push_back([&, i](EngineOutput out) {
      if (!out.finished) return;
      std::lock_guard<std::mutex> lock(mu);
      ended[i] = out.status;
      ++finished;
      cv.notify_all();
    });
  }
  auto group = engine->SubmitGroup(three, std::move(cbs));
  ASSERT_TRUE(group.ok());
  engine->Abort((*group)[2], absl::CancelledError("client went away"));
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return finished == 3; }));
  }
  EXPECT_TRUE(ended[0].ok());
  EXPECT_TRUE(ended[1].ok());
  EXPECT_EQ(ended[2].code(), absl::StatusCode::kCancelled);
  // Mismatched prompts are refused.
  std::vector<ValidatedRequest> mixed = {Greedy(prompt, 2), Greedy(Prompt(9, 1), 2)};
  std::vector<OutputCallback> two(2, [](EngineOutput) {});
  EXPECT_EQ(engine->SubmitGroup(mixed, two).status().code(), absl::StatusCode::kInvalidArgument);
}

// How each member of a group ended; WaitAll gives up after 60 s.
struct Ending {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<absl::Status> status;
  int finished = 0;
  explicit Ending(int n) : status(n) {}
  std::vector<OutputCallback> Callbacks() {
    std::vector<OutputCallback> cbs;
    for (size_t i = 0; i < status.size(); ++i) {
      cbs.push_back([this, i](EngineOutput out) {
        if (!out.finished) return;
        std::lock_guard<std::mutex> lock(mu);
        status[i] = out.status;
        ++finished;
        cv.notify_all();
      });
    }
    return cbs;
  }
  bool WaitAll() {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(60),
                       [&] { return finished == static_cast<int>(status.size()); });
  }
};

// A member that finds no slot at its leader's fork waits to be requeued; an abort that lands
// during that fork step must still end it (it once matched nothing and was dropped, and the
// member ran all its tokens). The abort is sent from inside the fork's slot copy, so it lands
// at exactly that point however the threads are scheduled.
TEST_F(EngineGroupTest, AnAbortDuringTheForkEndsAMemberThatFoundNoSlot) {
  std::promise<uint64_t> member_id;
  std::shared_future<uint64_t> member = member_id.get_future().share();
  EngineCore* engine_ptr = nullptr;
  std::atomic<int> copies{0};
  auto engine = Make(2, 0, 0, 64, nullptr, [&] {
    if (copies.fetch_add(1) == 0) {
      engine_ptr->Abort(member.get(), absl::CancelledError("client went away"));
    }
  });
  engine_ptr = engine.get();
  std::vector<ValidatedRequest> three(3, Greedy(Prompt(20, 8), 4));
  three[2].max_tokens = 400;
  Ending ending(3);
  auto group = engine->SubmitGroup(three, ending.Callbacks());
  ASSERT_TRUE(group.ok());
  member_id.set_value((*group)[2]);
  ASSERT_TRUE(ending.WaitAll());
  EXPECT_EQ(copies.load(), 1);  // one slot free at the fork: member 2 was handed back
  EXPECT_TRUE(ending.status[0].ok()) << ending.status[0];
  EXPECT_TRUE(ending.status[1].ok()) << ending.status[1];
  EXPECT_EQ(ending.status[2].code(), absl::StatusCode::kCancelled) << ending.status[2];
}

// Aborting a leader before its fork hands its members back to the queue; a member aborted in the
// same sweep must end too, and the other prefills alone and finishes.
TEST_F(EngineGroupTest, AbortingALeaderAndAMemberTogetherEndsBoth) {
  std::promise<std::vector<uint64_t>> ids_promise;
  std::shared_future<std::vector<uint64_t>> ids = ids_promise.get_future().share();
  EngineCore* engine_ptr = nullptr;
  std::atomic<bool> armed{false};
  // A budget of 8 tokens: the 20-token prompt prefills over three steps, and the aborts land in
  // the first, while the leader still holds its members.
  auto engine = Make(4, 0, 0, 8, [&] {
    if (armed.exchange(false)) {
      engine_ptr->Abort(ids.get()[0], absl::CancelledError("client went away"));
      engine_ptr->Abort(ids.get()[2], absl::CancelledError("client went away"));
    }
  });
  engine_ptr = engine.get();
  std::vector<ValidatedRequest> three(3, Greedy(Prompt(20, 8), 4));
  three[0].max_tokens = three[2].max_tokens = 400;
  Ending ending(3);
  armed = true;
  auto group = engine->SubmitGroup(three, ending.Callbacks());
  ASSERT_TRUE(group.ok());
  ids_promise.set_value(*group);
  ASSERT_TRUE(ending.WaitAll());
  EXPECT_EQ(ending.status[0].code(), absl::StatusCode::kCancelled) << ending.status[0];
  EXPECT_TRUE(ending.status[1].ok()) << ending.status[1];
  EXPECT_EQ(ending.status[2].code(), absl::StatusCode::kCancelled) << ending.status[2];
}

}  // namespace
}  // namespace griffin::engine
