// The batch planner: a pure function from (waiting queue, running sequences, budgets) to the plan
// of the next engine step, in the style of vLLM v1's scheduler. No model, no clock, no threads:
// engine_core.cc turns the plan into Backend::Step entries; scheduler_test.cc tests it alone.
//
// Policy, in order:
//  1. Every running sequence in decode gets its one token (oldest first), within the token budget
//     and max_batch.
//  2. Running sequences still in prefill get the next chunk of their prompt (oldest first): as
//     many tokens as the budget has left, so a long prompt is cut into chunks and never stalls
//     the decodes of step 1 (chunked prefill).
//  3. Waiting sequences are admitted strictly first-come-first-served while a state slot is free,
//     budget is left and the batch has room; each gets its first prefill chunk. When the head of
//     the queue cannot be admitted nobody behind it is (no overtaking).
// Steps 2 and 3 together carry at most prefill_budget prompt tokens when it is set.
#ifndef GRIFFIN_ENGINE_SCHEDULER_H_
#define GRIFFIN_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace griffin::engine {

struct WaitingSeq {
  uint64_t id = 0;
  int64_t prompt_tokens = 0;  // ≥ 1
};

struct RunningSeq {
  uint64_t id = 0;
  int64_t prefill_remaining = 0;  // prompt tokens not yet fed; 0 = in decode (feeds one token)
};

struct SchedulerBudget {
  int free_slots = 0;          // state slots not held by a running sequence
  int64_t token_budget = 512;  // tokens (prefill + decode) one step may carry; ≥ 1
  int max_batch = 64;          // sequences one step may carry; ≥ 1
  // Prompt tokens (chunks of running prefills and admissions together) one step may carry, within
  // token_budget; < 0: no limit but token_budget. The engine sets it from the step time target
  // while sequences decode (EngineOptions::step_time_target).
  int64_t prefill_budget = -1;
};

struct PlanEntry {
  uint64_t id = 0;
  int64_t num_tokens = 0;  // ≥ 1
  bool admitted = false;   // taken from the waiting queue in this step (gets a slot now)
  bool prefill = false;    // a prompt chunk (else one decode token)
};

struct BatchPlan {
  std::vector<PlanEntry> entries;  // decodes, then running prefills, then admissions
  int64_t total_tokens = 0;
  int num_admitted = 0;  // the first num_admitted waiting sequences, in queue order
};

// `waiting` is in arrival order; `running` in admission order. Pure and deterministic.
BatchPlan PlanStep(absl::Span<const WaitingSeq> waiting, absl::Span<const RunningSeq> running,
                   const SchedulerBudget& budget);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_SCHEDULER_H_
