#include "engine/engine_core.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "base/status_macros.h"
#include "engine/backend_factory.h"
#include "engine/cpu_backend.h"
#include "engine/fault_injecting_backend.h"
#include "engine/forwarding_backend.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"

namespace griffin::engine {
namespace {

struct Collected {
  std::vector<int32_t> tokens;
  EngineOutput last;
};

class Collector {
 public:
  OutputCallback Callback() {
    return [this](EngineOutput out) {
      std::lock_guard<std::mutex> lock(mu_);
      result_.tokens.insert(result_.tokens.end(), out.tokens.begin(), out.tokens.end());
      if (out.finished) {
        result_.last = std::move(out);
        done_ = true;
      }
      cv_.notify_all();
    };
  }
  // Blocks until the request produced a token (it holds a slot and runs) or finished.
  void WaitForFirstToken() {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60),
                             [&] { return done_ || !result_.tokens.empty(); }));
    ASSERT_FALSE(done_) << "finished before its first token";
  }
  Collected Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(30), [&] { return done_; }))
        << "no final output in 30 s";
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Collected result_;
};

// Wraps a backend and checks, on every step the engine gives it, the limits EngineOptions set: at
// most token_budget tokens and max_batch entries per step, each slot at most once. Records the
// largest step seen, so a test can also show the limits were reached (not vacuously met).
class LimitCheckingBackend : public ForwardingBackend {
 public:
  LimitCheckingBackend(std::unique_ptr<Backend> inner, const EngineOptions& options)
      : ForwardingBackend(std::move(inner)),
        token_budget_(options.token_budget),
        max_batch_(options.max_batch) {}
  // Every other call (the slot-state ones too) is forwarded, so the wrapped engine keeps every
  // feature (the prefix cache).
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override {
    Check(entries);
    return ForwardingBackend::Step(entries, logits);
  }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override {
    Check(entries);
    return ForwardingBackend::StepSample(entries, requests, tokens);
  }
  absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                      absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                      absl::Span<float> logits,
                                      const PromptLogprobsOutput& out) override {
    Check(entries);
    return ForwardingBackend::StepWithPromptLogprobs(entries, requests, top_k, logits, out);
  }

  std::atomic<int64_t> max_tokens_seen{0};
  std::atomic<int> max_entries_seen{0};

 private:
  void Check(absl::Span<const StepEntry> entries) {
    int64_t tokens = 0;
    std::vector<int> slots;
    for (const StepEntry& e : entries) {
      tokens += static_cast<int64_t>(e.tokens.size());
      EXPECT_EQ(std::count(slots.begin(), slots.end(), e.slot), 0) << "slot " << e.slot << " twice";
      slots.push_back(e.slot);
    }
    EXPECT_LE(tokens, token_budget_) << "a step over the token budget";
    EXPECT_LE(static_cast<int>(entries.size()), max_batch_) << "a step over max_batch";
    max_tokens_seen.store(std::max(max_tokens_seen.load(), tokens));
    max_entries_seen.store(std::max(max_entries_seen.load(), static_cast<int>(entries.size())));
  }

  const int64_t token_budget_;
  const int max_batch_;
};

// An engine whose every step is checked against `options`' limits.
std::unique_ptr<EngineCore> MakeChecked(std::unique_ptr<Backend> backend,
                                        const EngineOptions& options,
                                        LimitCheckingBackend** checker = nullptr) {
  auto checked = std::make_unique<LimitCheckingBackend>(std::move(backend), options);
  if (checker != nullptr) *checker = checked.get();
  auto core = EngineCore::Create(std::move(checked), options);
  EXPECT_TRUE(core.ok()) << core.status();
  return core.ok() ? std::move(*core) : nullptr;
}

class EngineCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto checkpoint =
        loader::Checkpoint::Open(std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin");
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
  }
  std::unique_ptr<EngineCore> Make(int slots, EngineOptions options = {}) {
    auto backend = CreateBackend(*checkpoint_, {.kind = BackendKind::kCpu, .num_slots = slots});
    EXPECT_TRUE(backend.ok()) << backend.status();
    return MakeChecked(std::move(*backend), options);
  }
  static ValidatedRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
    ValidatedRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = 0.0f;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    return r;
  }
  std::unique_ptr<loader::Checkpoint> checkpoint_;
};

TEST_F(EngineCoreTest, GreedyAloneEqualsGreedyInBusyBatch) {  // NUM-1 at the engine level
  std::vector<int32_t> prompt = {2, 17, 33, 5, 90, 41, 7, 7, 12, 200, 3, 64};
  std::vector<int32_t> alone;
  {
    auto core = Make(1);
    Collector c;
    ASSERT_TRUE(core->Submit(Greedy(prompt, 20), c.Callback()).ok());
    Collected r = c.Wait();
    EXPECT_EQ(r.last.reason, FinishReason::kLength);
    EXPECT_EQ(r.last.completion_tokens, 20);
    alone = r.tokens;
  }
  // Budget 5: the prompt is chunked and shares steps with 7 other sequences.
  auto core = Make(8, {.token_budget = 5});
  std::vector<std::unique_ptr<Collector>> others;
  for (int i = 0; i < 7; ++i) {
    others.push_back(std::make_unique<Collector>());
    ValidatedRequest r = Greedy({2, static_cast<int32_t>(100 + i), 9, 9}, 30);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = i;
    ASSERT_TRUE(core->Submit(r, others.back()->Callback()).ok());
  }
  Collector c;
  ASSERT_TRUE(core->Submit(Greedy(prompt, 20), c.Callback()).ok());
  EXPECT_EQ(c.Wait().tokens, alone);
  for (auto& o : others) EXPECT_EQ(o->Wait().tokens.size(), 30u);
  EngineStats s = core->stats();
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  EXPECT_EQ(s.slots_used, 0);
}

TEST_F(EngineCoreTest, SameSeedSameTokens) {  // NUM-2
  auto core = Make(2);
  auto run = [&](uint64_t seed) {
    ValidatedRequest r = Greedy({2, 5, 6}, 16);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    Collector c;
    EXPECT_TRUE(core->Submit(r, c.Callback()).ok());
    return c.Wait().tokens;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST_F(EngineCoreTest, AbortFreesSlotAndQueueBound) {
  auto core = Make(1, {.max_queue = 2});
  Collector long_one;
  auto id = core->Submit(Greedy({2, 5}, 1000000), long_one.Callback());
  ASSERT_TRUE(id.ok());
  long_one.WaitForFirstToken();  // it holds the only slot; now fill the queue
  Collector q1, q2, q3;
  ASSERT_TRUE(core->Submit(Greedy({2, 5}, 3), q1.Callback()).ok());
  ASSERT_TRUE(core->Submit(Greedy({2, 5}, 3), q2.Callback()).ok());
  auto full = core->Submit(Greedy({2, 5}, 3), q3.Callback());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  core->Abort(*id, absl::CancelledError("client cancelled"));
  Collected r = long_one.Wait();
  EXPECT_EQ(r.last.reason, FinishReason::kAbort);
  EXPECT_EQ(r.last.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(q1.Wait().tokens.size(), 3u);
  EXPECT_EQ(q2.Wait().tokens.size(), 3u);
  EXPECT_EQ(core->stats().slots_used, 0);
}

TEST_F(EngineCoreTest, DeadlineAndStopTokenAndMinTokens) {
  auto core = Make(2);
  ValidatedRequest late = Greedy({2, 5}, 1000000);
  late.deadline = absl::Now() + absl::Milliseconds(50);
  Collector c;
  ASSERT_TRUE(core->Submit(late, c.Callback()).ok());
  EXPECT_EQ(c.Wait().last.status.code(), absl::StatusCode::kDeadlineExceeded);

  // Learn the first greedy token, then make it a stop id: generation stops at once.
  Collector first;
  ASSERT_TRUE(core->Submit(Greedy({2, 5, 6}, 4), first.Callback()).ok());
  std::vector<int32_t> tokens = first.Wait().tokens;
  ASSERT_EQ(tokens.size(), 4u);
  ValidatedRequest stop = Greedy({2, 5, 6}, 4);
  stop.stop_token_ids = {tokens[0]};
  Collector s;
  ASSERT_TRUE(core->Submit(stop, s.Callback()).ok());
  Collected sr = s.Wait();
  EXPECT_EQ(sr.last.reason, FinishReason::kStop);
  EXPECT_EQ(sr.last.stop_token_id, tokens[0]);
  EXPECT_EQ(sr.tokens.size(), 1u);
  // With min_tokens the stop id is masked until then.
  stop.min_tokens = 2;
  Collector m;
  ASSERT_TRUE(core->Submit(stop, m.Callback()).ok());
  Collected mr = m.Wait();
  EXPECT_GE(mr.tokens.size(), 2u);
  EXPECT_NE(mr.tokens[0], tokens[0]);
}

TEST_F(EngineCoreTest, LogprobsAreNormalised) {  // NUM-5
  auto core = Make(1);
  ValidatedRequest r = Greedy({2, 5, 6}, 3);
  r.top_logprobs = 5;
  std::vector<EngineOutput> outs;
  std::promise<void> done;
  ASSERT_TRUE(core->Submit(r,
                           [&](EngineOutput o) {
                             bool fin = o.finished;
                             outs.push_back(std::move(o));
                             if (fin) done.set_value();
                           })
                  .ok());
  done.get_future().wait();
  int n = 0;
  for (const EngineOutput& o : outs) {
    for (const TokenLogprobs& lp : o.logprobs) {
      ++n;
      EXPECT_LE(lp.logprob, 0.0f);
      ASSERT_EQ(lp.top.size(), 5u);
      EXPECT_EQ(lp.top[0].first, lp.id);  // greedy: the chosen one is the most likely
      for (size_t i = 1; i < lp.top.size(); ++i) EXPECT_LE(lp.top[i].second, lp.top[i - 1].second);
    }
  }
  EXPECT_EQ(n, 3);
}

// Every output of one request, in order.
std::vector<EngineOutput> RunToEnd(EngineCore& core, ValidatedRequest r) {
  std::vector<EngineOutput> outs;
  std::promise<void> done;
  EXPECT_TRUE(core.Submit(std::move(r),
                          [&](EngineOutput o) {
                            const bool fin = o.finished;
                            outs.push_back(std::move(o));
                            if (fin) done.set_value();
                          })
                  .ok());
  done.get_future().wait();
  return outs;
}

TEST_F(EngineCoreTest, PromptLogprobsEqualAWholePromptScoreWhateverTheChunking) {
  const std::vector<int32_t> prompt = {2, 17, 33, 5, 90, 41, 7, 7, 12, 200, 3, 64};
  // Reference: one kAll step over the whole prompt, as griffin-cli score does.
  auto backend = CpuBackend::Create(*checkpoint_, 1);
  ASSERT_TRUE(backend.ok());
  const int vocab = (*backend)->config().vocab_size;
  std::vector<float> logits(prompt.size() * vocab), lp(vocab);
  StepEntry e{.slot = 0, .position = 0, .tokens = prompt, .logits = LogitsRequest::kAll};
  ASSERT_TRUE((*backend)->Step({&e, 1}, absl::MakeSpan(logits)).ok());

  auto core = Make(4, {.token_budget = 5});  // chunks of at most 5 tokens, next to other work
  Collector noise;
  ValidatedRequest busy = Greedy({2, 100, 9, 9, 9, 9, 9}, 30);
  ASSERT_TRUE(core->Submit(busy, noise.Callback()).ok());
  ValidatedRequest r = Greedy(prompt, 2);
  r.prompt_logprobs = 3;
  std::vector<EngineOutput> outs = RunToEnd(*core, r);
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[1].prompt_logprobs.size(), 0u);  // delivered once, with the first token
  const std::vector<TokenLogprobs>& got = outs[0].prompt_logprobs;
  ASSERT_EQ(got.size(), prompt.size() - 1);
  for (size_t t = 0; t + 1 < prompt.size(); ++t) {
    LogSoftmax(absl::MakeConstSpan(logits).subspan(t * vocab, vocab), absl::MakeSpan(lp));
    EXPECT_EQ(got[t].id, prompt[t + 1]);
    EXPECT_NEAR(got[t].logprob, lp[prompt[t + 1]], 1e-4) << t;
    ASSERT_EQ(got[t].top.size(), 3u);
    EXPECT_EQ(got[t].top[0].first, ArgMax(absl::MakeConstSpan(logits).subspan(t * vocab, vocab)));
  }
  // The generated tokens are those of the same request without scoring.
  Collector plain;
  ASSERT_TRUE(core->Submit(Greedy(prompt, 2), plain.Callback()).ok());
  EXPECT_EQ(plain.Wait().tokens, (std::vector<int32_t>{outs[0].tokens[0], outs[1].tokens[0]}));
  EXPECT_EQ(noise.Wait().tokens.size(), 30u);

  // max_tokens 0: the prompt is scored, nothing is sampled, the request ends kLength.
  ValidatedRequest only = Greedy(prompt, 0);
  only.prompt_logprobs = 0;
  std::vector<EngineOutput> scored = RunToEnd(*core, only);
  ASSERT_EQ(scored.size(), 1u);
  EXPECT_TRUE(scored[0].finished);
  EXPECT_EQ(scored[0].reason, FinishReason::kLength);
  EXPECT_TRUE(scored[0].tokens.empty());
  EXPECT_EQ(scored[0].completion_tokens, 0);
  ASSERT_EQ(scored[0].prompt_logprobs.size(), prompt.size() - 1);
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_FLOAT_EQ(scored[0].prompt_logprobs[t].logprob, got[t].logprob);
    EXPECT_TRUE(scored[0].prompt_logprobs[t].top.empty());
  }
  EXPECT_EQ(core->stats().slots_used, 0);
}

TEST_F(EngineCoreTest, StopFinishesEverythingUnavailable) {
  auto core = Make(1);
  Collector a, b;
  ASSERT_TRUE(core->Submit(Greedy({2, 5}, 1000000), a.Callback()).ok());
  ASSERT_TRUE(core->Submit(Greedy({2, 5}, 1000000), b.Callback()).ok());
  core->Stop();
  EXPECT_EQ(a.Wait().last.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b.Wait().last.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(core->Submit(Greedy({2}, 1), a.Callback()).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace griffin::engine

namespace griffin::engine {
namespace {

// A backend without a model, for fault injection: the greedy next token is (last token + 1) mod
// 16; a prompt holding token 13 (fed from position 0) gives NaN logits; fail_next makes one step
// fail INTERNAL.
class FakeBackend : public Backend {
 public:
  explicit FakeBackend(int slots) : positions_(slots, 0) {
    config_.vocab_size = 16;
    config_.eos_token_id = 1;
    config_.bos_token_id = 2;
  }
  std::string_view name() const override { return "fake"; }
  const loader::ModelConfig& config() const override { return config_; }
  int num_slots() const override { return static_cast<int>(positions_.size()); }
  int64_t state_bytes_per_sequence() const override { return 8; }
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override {
    if (on_step) on_step();
    if (fail_next.exchange(false)) return absl::InternalError("injected device failure");
    int64_t tokens = 0;
    std::vector<int64_t> sizes;
    for (const StepEntry& e : entries) {
      tokens += static_cast<int64_t>(e.tokens.size());
      sizes.push_back(static_cast<int64_t>(e.tokens.size()));
    }
    {
      std::lock_guard<std::mutex> lock(log_mu);
      step_sizes.push_back(std::move(sizes));
    }
    // A device's forward pass: a fixed part and a part per token.
    absl::SleepFor(step_time + tokens * token_time);
    int64_t row = 0;
    for (const StepEntry& e : entries) {
      if (e.position != positions_[e.slot]) return absl::InvalidArgumentError("position");
      positions_[e.slot] += static_cast<int64_t>(e.tokens.size());
      if (e.logits == LogitsRequest::kNone) continue;
      const bool poison =
          e.position == 0 && std::find(e.tokens.begin(), e.tokens.end(), 13) != e.tokens.end();
      const size_t first = e.logits == LogitsRequest::kAll ? 0 : e.tokens.size() - 1;
      for (size_t t = first; t < e.tokens.size(); ++t, ++row) {
        for (int i = 0; i < 16; ++i) {
          const float d = static_cast<float>(i - (e.tokens[t] + 1) % 16);
          logits[row * 16 + i] = poison ? std::nanf("") : -d * d;
        }
      }
    }
    return absl::OkStatus();
  }
  absl::Status ResetSlot(int slot) override {
    positions_[slot] = 0;
    return absl::OkStatus();
  }
  int64_t NextPosition(int slot) const override { return positions_[slot]; }

  // Device sampling (when device_sampler): the greedy token of Step's logits after the request's
  // logit_bias (as the CUDA sampler), -1 for poisoned rows.
  bool samples_on_device() const override { return device_sampler; }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override {
    if (!device_sampler) return Backend::StepSample(entries, requests, tokens);
    device_steps.fetch_add(1);
    std::vector<float> logits(static_cast<size_t>(LogitsRows(entries)) * 16);
    RETURN_IF_ERROR(Step(entries, absl::MakeSpan(logits)));
    if (requests.size() != tokens.size() || tokens.size() * 16 != logits.size()) {
      return absl::InvalidArgumentError("one request and one token per row");
    }
    for (size_t r = 0; r < tokens.size(); ++r) {
      float* row = &logits[r * 16];
      for (const auto& [id, bias] : requests[r].params.logit_bias) {
        if (id >= 0 && id < 16) row[id] += bias;
      }
      tokens[r] =
          std::isnan(row[0]) ? -1 : static_cast<int32_t>(std::max_element(row, row + 16) - row);
    }
    return absl::OkStatus();
  }

  std::atomic<bool> fail_next{false};
  // Called first in every step, on the engine thread; set it before the first Submit.
  std::function<void()> on_step;
  absl::Duration step_time;
  absl::Duration token_time;
  std::mutex log_mu;
  std::vector<std::vector<int64_t>> step_sizes;  // each step's entries' token counts
  bool device_sampler = false;
  std::atomic<int> device_steps{0};

 private:
  loader::ModelConfig config_;
  std::vector<int64_t> positions_;
};

ValidatedRequest Req(std::vector<int32_t> prompt, int max_tokens) {
  ValidatedRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

TEST(EngineFaultTest, NanLogitsFailOneRequestAlone) {  // NUM-4
  auto core = MakeChecked(std::make_unique<FakeBackend>(4), {});
  Collector poisoned, normal;
  ASSERT_TRUE(core->Submit(Req({2, 13}, 5), poisoned.Callback()).ok());
  ASSERT_TRUE(core->Submit(Req({2, 3}, 5), normal.Callback()).ok());
  Collected p = poisoned.Wait();
  EXPECT_EQ(p.last.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(p.last.reason, FinishReason::kError);
  Collected n = normal.Wait();
  EXPECT_TRUE(n.last.status.ok());
  EXPECT_EQ(n.tokens, (std::vector<int32_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(core->stats().slots_used, 0);
}

// The engine thread's time split (EngineStats::busy_time, backend_time; the server's
// griffin_engine_*_seconds_total): every forward pass counts as backend time, all of it inside busy
// time, and idle waits count as neither.
TEST(EngineCoreStatsTest, BusyTimeHoldsTheForwardPassesAndNotTheIdleWaits) {
  auto backend = std::make_unique<FakeBackend>(4);
  backend->step_time = absl::Milliseconds(3);
  auto core = MakeChecked(std::move(backend), {});
  const EngineStats before = core->stats();
  Collector a;
  ASSERT_TRUE(core->Submit(Req({2, 3}, 6), a.Callback()).ok());
  ASSERT_TRUE(a.Wait().last.status.ok());
  absl::SleepFor(absl::Milliseconds(100));  // idle: neither clock moves
  const EngineStats s = core->stats();
  const int64_t steps = s.steps - before.steps;
  EXPECT_GE(steps, 6);
  EXPECT_GE(s.backend_time - before.backend_time, steps * absl::Milliseconds(3));
  EXPECT_GE(s.busy_time - before.busy_time, s.backend_time - before.backend_time);
  // The host's share (busy less the forward passes, whose sleeps a loaded machine stretches)
  // would hold the 100 ms idle wait if idle time counted.
  EXPECT_LT((s.busy_time - before.busy_time) - (s.backend_time - before.backend_time),
            absl::Milliseconds(100));
}

// EngineOptions::step_time_target: once the engine has measured what a prompt token costs, a
// step that carries decodes carries only the prompt tokens that fit the target. The fake device
// takes 2 ms a step and 20 us a token, so a 10 ms target leaves room for about 400 prompt tokens
// beside one decode, where the token budget alone would take the whole 1,500-token prompt at once.
TEST(EngineCoreStatsTest, StepTimeTargetCapsThePromptTokensBesideDecodes) {
  auto backend = std::make_unique<FakeBackend>(4);
  FakeBackend* fake = backend.get();
  backend->step_time = absl::Milliseconds(2);
  backend->token_time = absl::Microseconds(20);
  auto core = MakeChecked(std::move(backend),
                          {.token_budget = 2048, .step_time_target = absl::Milliseconds(10)});
  auto prompt = [](int n) {
    std::vector<int32_t> p(n, 3);
    p[0] = 2;
    return p;
  };
  // Prompts alone (nothing decodes, so nothing is capped): the engine learns their cost.
  for (int n : {200, 300, 400, 500, 600}) {
    Collector c;
    ASSERT_TRUE(core->Submit(Req(prompt(n), 2), c.Callback()).ok());
    ASSERT_TRUE(c.Wait().last.status.ok());
  }
  EXPECT_EQ(core->stats().prefill_capped_steps, 0);
  // One sequence decodes; a 1,500-token prompt arrives.
  Collector decoding, long_prompt;
  ASSERT_TRUE(core->Submit(Req({2, 3}, 300), decoding.Callback()).ok());
  decoding.WaitForFirstToken();
  size_t first_step;
  {
    std::lock_guard<std::mutex> lock(fake->log_mu);
    first_step = fake->step_sizes.size();
  }
  ASSERT_TRUE(core->Submit(Req(prompt(1500), 4), long_prompt.Callback()).ok());
  const Collected got = long_prompt.Wait();
  ASSERT_TRUE(got.last.status.ok());
  EXPECT_EQ(got.tokens.size(), 4u);
  int64_t largest_chunk = 0, prompt_fed = 0;
  {
    std::lock_guard<std::mutex> lock(fake->log_mu);
    for (size_t i = first_step; i < fake->step_sizes.size(); ++i) {
      for (int64_t n : fake->step_sizes[i]) {
        if (n > 1) {
          largest_chunk = std::max(largest_chunk, n);
          prompt_fed += n;
        }
      }
    }
  }
  EXPECT_GT(prompt_fed, 1400);  // the prompt went through in chunks
  EXPECT_GE(largest_chunk, kMinPrefillTokensPerStep);
  EXPECT_LE(largest_chunk, 440);  // about 400 fit; slow sleeps only make the cost look higher
  EXPECT_GT(core->stats().prefill_capped_steps, 0);
  ASSERT_TRUE(decoding.Wait().last.status.ok());
}

// Callbacks run on the output thread, not between two steps: while one request's callback is
// still running, the engine goes on stepping. With callbacks on the engine thread the steps
// count could not move until the callback returned.
TEST(EngineCoreOutputTest, StepsGoOnWhileACallbackRuns) {
  auto core = MakeChecked(std::make_unique<FakeBackend>(4), {});
  std::atomic<bool> stepped_meanwhile{false};
  std::atomic<bool> first{true};
  EngineCore* engine = core.get();
  Collector slow_done;
  OutputCallback record = slow_done.Callback();
  // The first output comes from the request's first step, base + 1. 30 tokens are fewer than the
  // steps the engine may run ahead of its output thread (kMaxPendingOutputSteps).
  const int64_t base = engine->stats().steps;
  auto slow = [&, record, base](EngineOutput out) {
    if (first.exchange(false)) {
      // A bound, not a timing: the engine takes these steps in microseconds; the loop only
      // keeps a broken build from hanging.
      for (int i = 0; i < 10000 && !stepped_meanwhile; ++i) {
        stepped_meanwhile = engine->stats().steps >= base + 4;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    record(std::move(out));
  };
  ASSERT_TRUE(core->Submit(Req({2, 3}, 30), slow).ok());
  Collected c = slow_done.Wait();
  EXPECT_TRUE(c.last.status.ok());
  EXPECT_EQ(c.tokens.size(), 30u);
  EXPECT_TRUE(stepped_meanwhile) << "the engine waited for a callback between two steps";
}

TEST(EngineDeviceSamplingTest, PlainRequestsSampleOnTheDeviceOthersOnTheHost) {
  for (bool enabled : {true, false}) {
    auto fake = std::make_unique<FakeBackend>(4);
    fake->device_sampler = true;
    FakeBackend* raw = fake.get();
    EngineOptions options;
    options.device_sampling = enabled;
    auto core = MakeChecked(std::move(fake), options);
    Collector plain, poisoned;
    ASSERT_TRUE(core->Submit(Req({2, 3}, 4), plain.Callback()).ok());
    ASSERT_TRUE(core->Submit(Req({2, 13}, 4), poisoned.Callback()).ok());
    Collected p = plain.Wait();
    EXPECT_TRUE(p.last.status.ok());
    EXPECT_EQ(p.tokens, (std::vector<int32_t>{4, 5, 6, 7}));
    EXPECT_EQ(poisoned.Wait().last.status.code(), absl::StatusCode::kInternal);  // NUM-4, alone
    EXPECT_EQ(raw->device_steps.load() > 0, enabled) << "device_sampling=" << enabled;

    // Log-probabilities need the logits on the host: such a step does not sample on the device.
    const int before = raw->device_steps.load();
    ValidatedRequest with_logprobs = Req({2, 5}, 3);
    with_logprobs.top_logprobs = 2;
    Collector lp;
    ASSERT_TRUE(core->Submit(std::move(with_logprobs), lp.Callback()).ok());
    Collected l = lp.Wait();
    EXPECT_TRUE(l.last.status.ok());
    EXPECT_EQ(l.tokens, (std::vector<int32_t>{6, 7, 8}));
    EXPECT_EQ(raw->device_steps.load(), before);
    EXPECT_EQ(core->stats().slots_used, 0);
  }
}

TEST(EngineDeviceSamplingTest, LogitBiasOnTheDevicePromptLogprobsOnTheHost) {
  auto fake = std::make_unique<FakeBackend>(2);
  fake->device_sampler = true;
  FakeBackend* raw = fake.get();
  auto core = MakeChecked(std::move(fake), {});
  // The device sampler applies logit_bias: a biased request stays on the device and the bias holds
  // (greedy would give 4, 5, 6; +100 on id 9 gives 9 every time).
  ValidatedRequest biased = Req({2, 3}, 3);
  biased.sampling.logit_bias = {{9, 100.0f}};
  Collector b;
  ASSERT_TRUE(core->Submit(std::move(biased), b.Callback()).ok());
  EXPECT_EQ(b.Wait().tokens, (std::vector<int32_t>{9, 9, 9}));
  EXPECT_EQ(raw->device_steps.load(), 3);
  // More entries than the device sampler takes: sampled on the host, the bias still holds.
  ValidatedRequest wide = Req({2, 3}, 2);
  for (int id = 0; id < 16; ++id)
    wide.sampling.logit_bias.emplace_back(id, id == 8 ? 100.0f : 0.0f);
  for (int id = 16; id <= kMaxDeviceLogitBias; ++id)
    wide.sampling.logit_bias.emplace_back(id, 0.0f);
  Collector w;
  ASSERT_TRUE(core->Submit(std::move(wide), w.Callback()).ok());
  EXPECT_EQ(w.Wait().tokens, (std::vector<int32_t>{8, 8}));
  EXPECT_EQ(raw->device_steps.load(), 3);
  // A scored prefill is a host step too; the decodes after it go back to the device.
  ValidatedRequest scored = Req({2, 3, 4, 9}, 2);
  scored.prompt_logprobs = 1;
  std::vector<EngineOutput> outs;
  std::promise<void> done;
  ASSERT_TRUE(core->Submit(std::move(scored),
                           [&](EngineOutput o) {
                             const bool fin = o.finished;
                             outs.push_back(std::move(o));
                             if (fin) done.set_value();
                           })
                  .ok());
  done.get_future().wait();
  ASSERT_FALSE(outs.empty());
  const std::vector<TokenLogprobs>& lps = outs.front().prompt_logprobs;
  ASSERT_EQ(lps.size(), 3u);  // for 3, 4 and 9: the first prompt token has none
  // The fake's distribution after token t peaks at t + 1: 3 after 2 and 4 after 3 are its top
  // choice, 9 after 4 is not (the top is 5).
  EXPECT_EQ(lps[0].id, 3);
  EXPECT_EQ(lps[0].rank, 1);
  // After 4 the logits are -(i - 5)^2: 5, 4, 6, 3, 7, 2 and 8 beat 9's -16 (1 ties it).
  EXPECT_EQ(lps[2].rank, 8);
  EXPECT_EQ(lps[0].top, (std::vector<std::pair<int32_t, float>>{{3, lps[0].logprob}}));
  EXPECT_EQ(lps[1].top[0].first, 4);
  EXPECT_EQ(lps[2].id, 9);
  EXPECT_EQ(lps[2].top[0].first, 5);
  EXPECT_LT(lps[2].logprob, lps[2].top[0].second);
  EXPECT_EQ(raw->device_steps.load(), 3 + 1);  // the biased request, then the second token only
  EXPECT_EQ(core->stats().slots_used, 0);
}

TEST(EngineFaultTest, NonFinitePromptLogprobsFailTheirRequestAlone) {  // NUM-4 for scoring
  auto fake = std::make_unique<FakeBackend>(2);
  auto core = MakeChecked(std::move(fake), {.token_budget = 3});
  ValidatedRequest poisoned = Req({2, 13, 4, 5, 6}, 0);  // prefill only, in two chunks
  poisoned.prompt_logprobs = 0;
  ValidatedRequest normal = Req({2, 3}, 3);
  Collector p, n;
  ASSERT_TRUE(core->Submit(std::move(poisoned), p.Callback()).ok());
  ASSERT_TRUE(core->Submit(std::move(normal), n.Callback()).ok());
  Collected pr = p.Wait();
  EXPECT_EQ(pr.last.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(pr.last.reason, FinishReason::kError);
  EXPECT_EQ(n.Wait().tokens, (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(core->stats().slots_used, 0);
}

TEST(EngineFaultTest, StickyDeviceErrorStopsTheEngineAndReportsOnce) {  // OPS-1
  // The warm-up step runs; every step after it fails as on a sticky device error.
  auto backend = std::make_unique<FaultInjectingBackend>(std::make_unique<FakeBackend>(2), 1);
  std::promise<absl::Status> fatal;
  std::atomic<int> fatal_calls{0};
  EngineOptions options;
  options.on_fatal = [&](const absl::Status& st) {
    if (fatal_calls.fetch_add(1) == 0) fatal.set_value(st);
  };
  auto core = MakeChecked(std::move(backend), options);
  // Three requests for two slots. The engine may stop before the later ones arrive: each is then
  // refused UNAVAILABLE at Submit, else it ends with an error through its callback.
  Collector collectors[3];
  bool submitted[3];
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<uint64_t> id = core->Submit(Req({2, 3 + i}, 50), collectors[i].Callback());
    submitted[i] = id.ok();
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable) << id.status();
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (!submitted[i]) continue;
    const Collected r = collectors[i].Wait();
    EXPECT_FALSE(r.last.status.ok());
    EXPECT_TRUE(r.last.finished);
  }
  auto reported = fatal.get_future();
  ASSERT_EQ(reported.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(reported.get().code(), absl::StatusCode::kUnavailable);
  // New requests are refused with the same status; stopping is clean and reports nothing more.
  Collector late;
  EXPECT_EQ(core->Submit(Req({2, 3}, 3), late.Callback()).status().code(),
            absl::StatusCode::kUnavailable);
  core->Stop();
  EXPECT_EQ(fatal_calls.load(), 1);
  EXPECT_EQ(core->stats().slots_used, 0);
}

// OPS-1's order: the server must read as not ready before any client hears its request failed,
// so on_device_failure runs before the failed step's outputs are delivered, and on_fatal only
// after every request's last output.
TEST(EngineFaultTest, DeviceFailureIsReportedBeforeTheFailedRequestsHearOfIt) {  // OPS-1
  auto backend = std::make_unique<FaultInjectingBackend>(std::make_unique<FakeBackend>(2), 1);
  std::atomic<bool> failure_reported{false}, fatal_reported{false};
  std::atomic<int> failure_calls{0};
  std::promise<void> fatal_done;
  EngineOptions options;
  options.on_device_failure = [&](const absl::Status& st) {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
    failure_calls.fetch_add(1);
    failure_reported.store(true);
  };
  options.on_fatal = [&](const absl::Status&) {
    fatal_reported.store(true);
    fatal_done.set_value();
  };
  auto core = MakeChecked(std::move(backend), options);
  std::promise<std::pair<bool, bool>> seen;  // (failure reported, fatal reported) at the error
  std::atomic<bool> once{false};
  auto id = core->Submit(Req({2, 3}, 50), [&](EngineOutput out) {
    if (!out.status.ok() && !once.exchange(true)) {
      seen.set_value({failure_reported.load(), fatal_reported.load()});
    }
  });
  ASSERT_TRUE(id.ok()) << id.status();
  auto at_error = seen.get_future();
  ASSERT_EQ(at_error.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const auto [failure_before, fatal_before] = at_error.get();
  EXPECT_TRUE(failure_before) << "the request heard of the failure before the server did";
  EXPECT_FALSE(fatal_before) << "on_fatal ran before the request's last output";
  ASSERT_EQ(fatal_done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  core->Stop();
  EXPECT_EQ(failure_calls.load(), 1);
}

TEST(EngineFaultTest, FailedStepFailsItsRequestsAndTheEngineGoesOn) {  // RST-4
  auto fake = std::make_unique<FakeBackend>(2);
  FakeBackend* raw = fake.get();
  auto core = MakeChecked(std::move(fake), {});
  raw->fail_next = true;
  Collector a;
  ASSERT_TRUE(core->Submit(Req({2, 3}, 3), a.Callback()).ok());
  EXPECT_EQ(a.Wait().last.status.code(), absl::StatusCode::kInternal);
  Collector b;  // the slot was reset: a new request starts from position 0 and is correct
  ASSERT_TRUE(core->Submit(Req({2, 3}, 3), b.Callback()).ok());
  Collected r = b.Wait();
  EXPECT_TRUE(r.last.status.ok());
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{4, 5, 6}));
}

TEST(EngineFaultTest, QueuedTokenLimitAndQueueTimeout) {  // OVL-1 (tokens), OVL-2
  auto core = MakeChecked(
      std::make_unique<FakeBackend>(1),
      {.max_queue = 100, .max_queued_tokens = 10, .queue_timeout = absl::Milliseconds(100)});
  Collector running;
  auto id = core->Submit(Req({2, 3}, 100000000), running.Callback());
  ASSERT_TRUE(id.ok());
  running.WaitForFirstToken();  // it holds the only slot
  Collector q1, q2;
  ASSERT_TRUE(core->Submit(Req(std::vector<int32_t>(8, 3), 2), q1.Callback()).ok());
  EXPECT_EQ(core->Submit(Req(std::vector<int32_t>(3, 3), 2), q2.Callback()).status().code(),
            absl::StatusCode::kResourceExhausted);
  // q1 cannot get the slot: it ends DEADLINE_EXCEEDED at the queue timeout, never waits forever.
  EXPECT_EQ(q1.Wait().last.status.code(), absl::StatusCode::kDeadlineExceeded);
  core->Abort(*id, absl::CancelledError("done"));
  running.Wait();
  EXPECT_EQ(core->stats().waiting, 0);
}

// The engine never gives the backend more than token_budget tokens or max_batch sequences in a step,
// whatever mix of long prompts, short prompts and decodes it holds, and every request still gets
// exactly its tokens. The limits are reached, so the per-step check above is not vacuous.
TEST(EngineLimitsTest, EveryStepRespectsTheTokenBudgetAndTheBatchLimit) {
  const EngineOptions options{.token_budget = 7, .max_batch = 3};
  LimitCheckingBackend* checker = nullptr;
  auto backend = std::make_unique<FakeBackend>(8);
  FakeBackend* fake = backend.get();
  auto core = MakeChecked(std::move(backend), options, &checker);
  ASSERT_NE(core, nullptr);
  // The first step waits until every request is queued: without it a fast engine could finish
  // each request before the next arrived (seen once on a loaded machine), and the limits would
  // never be reached.
  std::promise<void> all_submitted;
  std::shared_future<void> submitted = all_submitted.get_future().share();
  std::atomic<bool> first_step{true};
  fake->on_step = [submitted, &first_step] {
    if (first_step.exchange(false)) submitted.wait();
  };
  struct Release {  // also when an assertion below returns early: the engine must not stay held
    std::promise<void>& promise;
    bool done = false;
    void operator()() {
      if (!done) promise.set_value();
      done = true;
    }
    ~Release() { (*this)(); }
  } release{all_submitted};
  std::vector<std::unique_ptr<Collector>> collectors;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> prompt(1 + (i * 5) % 19, 3);
    prompt.back() = static_cast<int32_t>(4 + i % 9);  // never 13: no poisoned rows
    const int max_tokens = 3 + i % 4;
    std::vector<int32_t> want;
    for (int k = 1; k <= max_tokens; ++k) want.push_back((prompt.back() + k) % 16);
    expected.push_back(want);
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(core->Submit(Req(prompt, max_tokens), collectors.back()->Callback()).ok());
  }
  release();
  for (int i = 0; i < 12; ++i) {
    Collected r = collectors[i]->Wait();
    EXPECT_TRUE(r.last.status.ok()) << i;
    EXPECT_EQ(r.tokens, expected[i]) << i;
  }
  EXPECT_EQ(checker->max_tokens_seen.load(), 7);
  EXPECT_EQ(checker->max_entries_seen.load(), 3);
  EXPECT_EQ(core->stats().slots_used, 0);
}

}  // namespace
}  // namespace griffin::engine
