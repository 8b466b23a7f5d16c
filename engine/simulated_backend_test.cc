#include "engine/simulated_backend.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <vector>

#include "engine/backend_factory.h"
#include "engine/engine_core.h"
#include "engine/griffin_model.h"
#include "engine/sampler.h"
#include "engine/state_layout.h"
#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

// Fast steps: the tests check behaviour, and one (Timing) the lower bound a step keeps.
constexpr SimulatedStepTime kFast{absl::Microseconds(50), absl::Nanoseconds(100),
                                  absl::Nanoseconds(100)};

std::unique_ptr<SimulatedBackend> Make(int slots, const SimulatedStepTime& time = kFast) {
  auto backend = SimulatedBackend::Create(RecurrentGemma2B(), slots, time);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return std::move(*backend);
}

TEST(SimulatedStepTimeTest, ParsesMicrosecondsAndRejectsTheRest) {
  absl::StatusOr<SimulatedStepTime> t = ParseSimulatedStepTime("1950,7.4,8.5");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->base, absl::Microseconds(1950));
  EXPECT_EQ(t->per_row, absl::Nanoseconds(7400));
  EXPECT_EQ(t->per_prompt_token, absl::Nanoseconds(8500));
  EXPECT_EQ(t->For(2, 10), absl::Microseconds(1950) + absl::Nanoseconds(2 * 7400 + 10 * 8500));
  EXPECT_TRUE(ParseSimulatedStepTime("0,0,0").ok());
  for (const char* bad :
       {"", "1,2", "1,2,3,4", "1,x,3", "-1,2,3", "nan,1,1", "inf,1,1", "1e10,1,1", "1,,3"}) {
    absl::StatusOr<SimulatedStepTime> parsed = ParseSimulatedStepTime(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SimulatedBackendTest, CreateRejectsWhatItCannotServe) {
  EXPECT_EQ(SimulatedBackend::Create(RecurrentGemma2B(), 0, kFast).status().code(),
            absl::StatusCode::kInvalidArgument);
  loader::ModelConfig tiny = RecurrentGemma2B();
  tiny.vocab_size = 3;  // only pad, eos and bos
  EXPECT_EQ(SimulatedBackend::Create(tiny, 1, kFast).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Through the factory: by name, never by "auto", and not with quantized weights it does not hold.
  EXPECT_EQ(*ParseBackendKind("simulated"), BackendKind::kSimulated);
  EXPECT_NE(*ParseBackendKind("auto"), BackendKind::kSimulated);
  EXPECT_EQ(BackendKindName(BackendKind::kSimulated), "simulated");
  BackendOptions options{.kind = BackendKind::kSimulated, .num_slots = 2};
  absl::StatusOr<std::unique_ptr<Backend>> made =
      CreateBackendWithRandomWeights(RecurrentGemma2B(), options, 0);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)->name(), "simulated");
  EXPECT_EQ((*made)->state_bytes_per_sequence(),
            StateBytesPerSequence(BackendKind::kCuda, RecurrentGemma2B()));
  options.quantization = WeightQuantization::kFp8;
  EXPECT_EQ(CreateBackendWithRandomWeights(RecurrentGemma2B(), options, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimulatedBackendTest, InvalidStepsChangeNothing) {
  auto backend = Make(2);
  const std::vector<int32_t> prompt = {5, 6, 7};
  std::vector<float> logits(RecurrentGemma2B().vocab_size);
  ASSERT_TRUE(
      backend->Step({{.slot = 0, .position = 0, .tokens = prompt}}, absl::MakeSpan(logits)).ok());
  const std::vector<int32_t> one = {9}, bad_id = {256000};
  const std::vector<std::vector<StepEntry>> invalid = {
      {{.slot = 2, .position = 0, .tokens = one}},     // slot out of range
      {{.slot = 0, .position = 2, .tokens = one}},     // not the next position
      {{.slot = 1, .position = 0, .tokens = bad_id}},  // id out of range
      {{.slot = 1, .position = 0, .tokens = {}}},      // no tokens
      {{.slot = 0, .position = 3, .tokens = one}, {.slot = 0, .position = 3, .tokens = one}},
  };
  for (const std::vector<StepEntry>& step : invalid) {
    std::vector<float> rows(LogitsRows(step) * RecurrentGemma2B().vocab_size);
    EXPECT_EQ(backend->Step(step, absl::MakeSpan(rows)).code(), absl::StatusCode::kInvalidArgument);
  }
  // A wrong logits size, and StepSample's own checks.
  std::vector<float> short_logits(10);
  EXPECT_EQ(backend->Step({{.slot = 0, .position = 3, .tokens = one}}, absl::MakeSpan(short_logits))
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<SampleRequest> requests(1);
  std::vector<int32_t> tokens(1);
  EXPECT_EQ(
      backend
          ->StepSample({{.slot = 0, .position = 3, .tokens = one, .logits = LogitsRequest::kAll}},
                       requests, absl::MakeSpan(tokens))
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->StepSample({{.slot = 0, .position = 3, .tokens = one}}, {}, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->NextPosition(0), 3);
  EXPECT_EQ(backend->NextPosition(1), 0);
  EXPECT_EQ(backend->ResetSlot(2).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(backend->ResetSlot(0).ok());
  EXPECT_EQ(backend->NextPosition(0), 0);
}

TEST(SimulatedBackendTest, SlotsCopySaveAndRestoreTheirPositionsInTheirTime) {
  SimulatedStepTime time = kFast;
  time.host_link_bytes_per_s = 10e9;  // a 2B slot (17 MB) in about 1.7 ms
  auto backend = Make(3, time);
  ASSERT_NE(backend->state_layout(), nullptr);
  const int64_t bytes = backend->state_layout()->slot_bytes();
  EXPECT_EQ(bytes, StateLayout::ForCuda(RecurrentGemma2B()).slot_bytes());
  const std::vector<int32_t> prompt = {5, 6, 7, 8};
  std::vector<SampleRequest> requests(1);
  std::vector<int32_t> tokens(1);
  ASSERT_TRUE(backend
                  ->StepSample({{.slot = 0, .position = 0, .tokens = prompt}}, requests,
                               absl::MakeSpan(tokens))
                  .ok());
  ASSERT_TRUE(backend->CopySlot(0, 1).ok());
  EXPECT_EQ(backend->NextPosition(1), 4);
  std::vector<uint8_t> saved(bytes);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<int64_t> position = backend->SnapshotSlot(0, absl::MakeSpan(saved));
  EXPECT_GE(absl::FromChrono(std::chrono::steady_clock::now() - start),
            absl::Nanoseconds(static_cast<int64_t>(1e9 * bytes / 10e9)));
  ASSERT_TRUE(position.ok()) << position.status();
  EXPECT_EQ(*position, 4);
  ASSERT_TRUE(backend->RestoreSlot(2, saved, 4).ok());
  EXPECT_EQ(backend->NextPosition(2), 4);
  // Wrong sizes, slots and positions change nothing.
  std::vector<uint8_t> short_buffer(bytes - 1);
  EXPECT_EQ(backend->SnapshotSlot(0, absl::MakeSpan(short_buffer)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->RestoreSlot(1, short_buffer, 9).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->RestoreSlot(1, saved, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->RestoreSlot(3, saved, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->CopySlot(0, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->NextPosition(1), 4);
  // The continuation of a copied slot is the original's.
  const std::vector<int32_t> next = {tokens[0]};
  std::vector<int32_t> a(1), b(1);
  ASSERT_TRUE(
      backend->StepSample({{.slot = 0, .position = 4, .tokens = next}}, requests, absl::MakeSpan(a))
          .ok());
  ASSERT_TRUE(
      backend->StepSample({{.slot = 2, .position = 4, .tokens = next}}, requests, absl::MakeSpan(b))
          .ok());
  EXPECT_EQ(a[0], b[0]);
}

// StartSnapshot costs the host only the device copy into a staging buffer; the host copy's time
// is paid by whoever waits for it, one copy at a time (one copy engine), and a snapshot that finds
// all 16 staging buffers busy waits for the oldest.
TEST(SimulatedBackendTest, StartedSnapshotsCostTheirWaiterTheHostCopy) {
  SimulatedStepTime time = kFast;
  time.host_link_bytes_per_s = 20e9;  // a 2B slot (17 MB) in about 0.86 ms
  auto backend = Make(2, time);
  const int64_t bytes = backend->state_layout()->slot_bytes();
  const absl::Duration host_copy = absl::Nanoseconds(static_cast<int64_t>(1e9 * bytes / 20e9));
  const std::vector<int32_t> prompt = {5, 6, 7};
  std::vector<SampleRequest> requests(1);
  std::vector<int32_t> tokens(1);
  ASSERT_TRUE(backend
                  ->StepSample({{.slot = 1, .position = 0, .tokens = prompt}}, requests,
                               absl::MakeSpan(tokens))
                  .ok());
  constexpr int kStagings = 16;
  std::vector<std::vector<uint8_t>> out(kStagings + 1, std::vector<uint8_t>(bytes));
  std::set<uint64_t> ids;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kStagings; ++i) {
    absl::StatusOr<Backend::SnapshotTicket> t = backend->StartSnapshot(1, absl::MakeSpan(out[i]));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->position, 3);
    EXPECT_NE(t->id, 0u);
    ids.insert(t->id);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kStagings));
  // One more finds every staging buffer busy: it waits for the first host copy.
  absl::StatusOr<Backend::SnapshotTicket> last =
      backend->StartSnapshot(1, absl::MakeSpan(out[kStagings]));
  ASSERT_TRUE(last.ok());
  EXPECT_GE(absl::FromChrono(std::chrono::steady_clock::now() - start), host_copy);
  // Its copy queues behind the others: waiting for it takes them all.
  ASSERT_TRUE(backend->FinishSnapshot(last->id).ok());
  EXPECT_GE(absl::FromChrono(std::chrono::steady_clock::now() - start),
            (kStagings + 1) * host_copy);
  for (uint64_t id : ids) EXPECT_TRUE(backend->FinishSnapshot(id).ok());
  EXPECT_TRUE(backend->FinishSnapshot(last->id).ok());  // twice is fine
  std::vector<uint8_t> short_buffer(bytes - 1);
  EXPECT_EQ(backend->StartSnapshot(1, absl::MakeSpan(short_buffer)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->StartSnapshot(2, absl::MakeSpan(out[0])).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimulatedBackendTest, GreedyTokensDependOnTheSequenceAloneAndAgreeAcrossPaths) {
  auto backend = Make(3);
  const loader::ModelConfig& c = backend->config();
  const std::vector<int32_t> prompt = {2, 100, 200, 300};
  // Slot 0 on the host path (every row of the prompt), slot 2 on the device path.
  std::vector<float> logits(prompt.size() * c.vocab_size);
  ASSERT_TRUE(
      backend
          ->Step({{.slot = 0, .position = 0, .tokens = prompt, .logits = LogitsRequest::kAll}},
                 absl::MakeSpan(logits))
          .ok());
  std::vector<SampleRequest> greedy(1);
  greedy[0].params.temperature = 0.0f;
  std::vector<int32_t> sampled(1);
  ASSERT_TRUE(backend
                  ->StepSample({{.slot = 2, .position = 0, .tokens = prompt}}, greedy,
                               absl::MakeSpan(sampled))
                  .ok());
  const int32_t last_row_argmax =
      ArgMax(absl::MakeConstSpan(logits).subspan((prompt.size() - 1) * c.vocab_size, c.vocab_size));
  EXPECT_EQ(sampled[0], last_row_argmax);
  EXPECT_EQ(sampled[0], backend->GreedyToken(prompt.back(), prompt.size() - 1));
  EXPECT_EQ(backend->NextPosition(0), 4);
  EXPECT_EQ(backend->NextPosition(2), 4);
  // Over many positions: never a special id, and not a constant.
  std::set<int32_t> seen;
  for (int64_t p = 0; p < 2000; ++p) {
    const int32_t t = backend->GreedyToken(static_cast<int32_t>(p % 50), p);
    ASSERT_GE(t, 3);
    ASSERT_LT(t, c.vocab_size);
    ASSERT_NE(t, c.eos_token_id);
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 1900u);
  // Sampling at a temperature follows the seed and the draw index.
  std::vector<SampleRequest> hot(1);
  hot[0].params.temperature = 1.0f;
  hot[0].params.seed = 7;
  std::set<int32_t> drawn;
  for (int step = 0; step < 20; ++step) {
    hot[0].step = step;
    const std::vector<int32_t> one = {sampled[0]};
    ASSERT_TRUE(backend
                    ->StepSample({{.slot = 2, .position = 4 + step, .tokens = one}}, hot,
                                 absl::MakeSpan(sampled))
                    .ok());
    drawn.insert(sampled[0]);
  }
  EXPECT_GT(drawn.size(), 15u);
}

TEST(SimulatedBackendTest, AStepTakesAtLeastItsModelledTime) {
  const SimulatedStepTime time{absl::Milliseconds(2), absl::Microseconds(100),
                               absl::Microseconds(10)};
  auto backend = Make(4, time);
  const std::vector<int32_t> prompt(300, 42), one = {42};
  std::vector<SampleRequest> requests(3);
  std::vector<int32_t> tokens(3);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(backend
                  ->StepSample({{.slot = 0, .position = 0, .tokens = prompt},
                                {.slot = 1, .position = 0, .tokens = one},
                                {.slot = 2, .position = 0, .tokens = one}},
                               requests, absl::MakeSpan(tokens))
                  .ok());
  const absl::Duration took = absl::FromChrono(std::chrono::steady_clock::now() - start);
  // 2 ms + 2 rows x 0.1 ms + 300 prompt tokens x 10 us = 5.2 ms; sleeping never ends early.
  EXPECT_GE(took, absl::Microseconds(5200));
}

TEST(SimulatedBackendTest, ServesTheEngine) {
  auto backend = Make(4);
  const SimulatedBackend* raw = backend.get();
  auto core = EngineCore::Create(std::move(backend), {.token_budget = 64, .max_batch = 4});
  ASSERT_TRUE(core.ok()) << core.status();
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> out;
  bool done = false;
  EngineOutput last;
  ValidatedRequest r;
  r.prompt = {2, 17, 18, 19, 20};
  r.sampling.temperature = 0.0f;
  r.max_tokens = 12;
  ASSERT_TRUE((*core)
                  ->Submit(std::move(r),
                           [&](EngineOutput o) {
                             std::lock_guard<std::mutex> lock(mu);
                             out.insert(out.end(), o.tokens.begin(), o.tokens.end());
                             if (o.finished) {
                               done = true;
                               last = std::move(o);
                             }
                             cv.notify_all();
                           })
                  .ok());
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return done; }));
  EXPECT_TRUE(last.status.ok()) << last.status;
  EXPECT_EQ(last.reason, FinishReason::kLength);
  // Each token follows from the one before it at its position: the engine fed them in order.
  ASSERT_EQ(out.size(), 12u);
  int32_t previous = 20;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i], raw->GreedyToken(previous, 4 + static_cast<int64_t>(i))) << i;
    previous = out[i];
  }
}

}  // namespace
}  // namespace griffin::engine
