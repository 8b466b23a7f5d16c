#include "engine/scheduler.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

TEST(SchedulerTest, EmptyGivesEmptyPlan) {
  BatchPlan plan = PlanStep({}, {}, {.free_slots = 4});
  EXPECT_TRUE(plan.entries.empty());
  EXPECT_EQ(plan.total_tokens, 0);
}

TEST(SchedulerTest, DecodesFirstThenPrefillChunksWithinBudget) {
  std::vector<RunningSeq> running = {{1, 0}, {2, 100}, {3, 0}};
  BatchPlan plan = PlanStep({}, running, {.free_slots = 0, .token_budget = 10});
  ASSERT_EQ(plan.entries.size(), 3u);
  EXPECT_EQ(plan.entries[0].id, 1u);
  EXPECT_EQ(plan.entries[0].num_tokens, 1);
  EXPECT_EQ(plan.entries[1].id, 3u);
  EXPECT_EQ(plan.entries[2].id, 2u);
  EXPECT_EQ(plan.entries[2].num_tokens, 8);  // the chunk takes what the decodes left
  EXPECT_TRUE(plan.entries[2].prefill);
  EXPECT_EQ(plan.total_tokens, 10);
}

TEST(SchedulerTest, LongPromptNeverStallsDecodes) {
  // A 10k-token prompt arrives while 3 streams decode: every step still carries all 3 decodes.
  std::vector<RunningSeq> running = {{1, 0}, {2, 0}, {3, 0}};
  std::vector<WaitingSeq> waiting = {{9, 10000}};
  int64_t remaining = 10000;
  bool admitted = false;
  int steps = 0;
  while (remaining > 0) {
    std::vector<RunningSeq> r = running;
    std::vector<WaitingSeq> w;
    if (admitted)
      r.push_back({9, remaining});
    else
      w = waiting;
    BatchPlan plan = PlanStep(w, r, {.free_slots = 1, .token_budget = 256});
    int decodes = 0;
    for (const PlanEntry& e : plan.entries) {
      if (!e.prefill) ++decodes;
      if (e.id == 9) {
        remaining -= e.num_tokens;
        admitted = true;
      }
    }
    EXPECT_EQ(decodes, 3);
    EXPECT_LE(plan.total_tokens, 256);
    ASSERT_LT(++steps, 100);
  }
  EXPECT_EQ(steps, (10000 + 252) / 253);
}

TEST(SchedulerTest, PrefillBudgetBoundsChunksAndAdmissionsTogether) {
  std::vector<RunningSeq> running = {{1, 0}, {2, 100}, {3, 0}};
  std::vector<WaitingSeq> waiting = {{7, 50}, {8, 50}};
  const SchedulerBudget budget{.free_slots = 2, .token_budget = 1000, .prefill_budget = 60};
  BatchPlan plan = PlanStep(waiting, running, budget);
  ASSERT_EQ(plan.entries.size(), 3u);  // both decodes, then 60 prompt tokens of sequence 2
  EXPECT_FALSE(plan.entries[0].prefill);
  EXPECT_FALSE(plan.entries[1].prefill);
  EXPECT_EQ(plan.entries[2].id, 2u);
  EXPECT_EQ(plan.entries[2].num_tokens, 60);
  EXPECT_EQ(plan.num_admitted, 0);
  // What the running prefill leaves goes to admissions; the token budget still applies.
  running[1].prefill_remaining = 20;
  plan = PlanStep(waiting, running, budget);
  ASSERT_EQ(plan.entries.size(), 4u);
  EXPECT_EQ(plan.entries[2].num_tokens, 20);
  EXPECT_EQ(plan.entries[3].id, 7u);
  EXPECT_EQ(plan.entries[3].num_tokens, 40);
  EXPECT_EQ(plan.total_tokens, 2 + 60);
  plan = PlanStep(waiting, running, {.free_slots = 2, .token_budget = 30, .prefill_budget = 60});
  EXPECT_EQ(plan.total_tokens, 30);
  // 0: decodes only; unset (< 0): the token budget alone, as before.
  plan = PlanStep(waiting, running, {.free_slots = 2, .token_budget = 1000, .prefill_budget = 0});
  EXPECT_EQ(plan.entries.size(), 2u);
  plan = PlanStep(waiting, running, {.free_slots = 2, .token_budget = 1000});
  EXPECT_EQ(plan.total_tokens, 2 + 20 + 50 + 50);
}

TEST(SchedulerTest, AdmissionIsFcfsAndBoundedBySlots) {
  std::vector<WaitingSeq> waiting = {{1, 5}, {2, 5}, {3, 5}};
  BatchPlan plan = PlanStep(waiting, {}, {.free_slots = 2, .token_budget = 100});
  ASSERT_EQ(plan.num_admitted, 2);
  EXPECT_EQ(plan.entries[0].id, 1u);
  EXPECT_EQ(plan.entries[1].id, 2u);
  EXPECT_TRUE(plan.entries[0].admitted);
}

TEST(SchedulerTest, NoSlotsNoAdmission) {
  std::vector<WaitingSeq> waiting = {{1, 5}};
  BatchPlan plan = PlanStep(waiting, {{7, 0}}, {.free_slots = 0, .token_budget = 100});
  ASSERT_EQ(plan.entries.size(), 1u);
  EXPECT_EQ(plan.entries[0].id, 7u);
  EXPECT_EQ(plan.num_admitted, 0);
}

TEST(SchedulerTest, BudgetExhaustedStopsAdmissionInOrder) {
  std::vector<WaitingSeq> waiting = {{1, 7}, {2, 1}};
  BatchPlan plan = PlanStep(waiting, {}, {.free_slots = 4, .token_budget = 7});
  ASSERT_EQ(plan.entries.size(), 1u);  // 2 does not overtake: the budget is spent on 1
  EXPECT_EQ(plan.entries[0].num_tokens, 7);
}

TEST(SchedulerTest, MaxBatchBoundsEntries) {
  std::vector<RunningSeq> running;
  for (uint64_t i = 0; i < 10; ++i) running.push_back({i, 0});
  BatchPlan plan =
      PlanStep({{99, 3}}, running, {.free_slots = 5, .token_budget = 100, .max_batch = 4});
  EXPECT_EQ(plan.entries.size(), 4u);
  EXPECT_EQ(plan.num_admitted, 0);
}

// Property: over random states the plan respects every budget, names each sequence at most once,
// never gives a prefill more than it has left, and admits a prefix of the queue.
TEST(SchedulerTest, RandomStatesRespectBudgets) {
  uint64_t x = 12345;
  auto rnd = [&](int n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((x >> 33) % n);
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<RunningSeq> running;
    std::vector<WaitingSeq> waiting;
    uint64_t id = 0;
    for (int i = rnd(8); i > 0; --i) running.push_back({id++, rnd(3) == 0 ? rnd(50) + 1 : 0});
    for (int i = rnd(8); i > 0; --i) waiting.push_back({id++, rnd(60) + 1});
    SchedulerBudget b{.free_slots = rnd(5), .token_budget = rnd(40) + 1, .max_batch = rnd(10) + 1};
    BatchPlan plan = PlanStep(waiting, running, b);
    EXPECT_LE(plan.total_tokens, b.token_budget);
    EXPECT_LE(static_cast<int>(plan.entries.size()), b.max_batch);
    EXPECT_LE(plan.num_admitted, b.free_slots);
    std::map<uint64_t, int> seen;
    int admitted_index = 0;
    for (const PlanEntry& e : plan.entries) {
      EXPECT_EQ(seen[e.id]++, 0);
      EXPECT_GE(e.num_tokens, 1);
      if (e.admitted) {
        EXPECT_EQ(e.id, waiting[admitted_index].id);
        EXPECT_LE(e.num_tokens, waiting[admitted_index].prompt_tokens);
        ++admitted_index;
      }
    }
    // Work-conserving: if budget and batch room are left, every decode is in the plan.
    if (plan.total_tokens < b.token_budget && static_cast<int>(plan.entries.size()) < b.max_batch) {
      for (const RunningSeq& r : running) EXPECT_EQ(seen.count(r.id), 1u);
    }
  }
}

}  // namespace
}  // namespace griffin::engine
