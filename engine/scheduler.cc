#include "engine/scheduler.h"

#include <algorithm>

namespace griffin::engine {

BatchPlan PlanStep(absl::Span<const WaitingSeq> waiting, absl::Span<const RunningSeq> running,
                   const SchedulerBudget& budget) {
  BatchPlan plan;
  int64_t left = std::max<int64_t>(budget.token_budget, 1);
  const size_t max_batch = static_cast<size_t>(std::max(budget.max_batch, 1));
  auto room = [&] { return left > 0 && plan.entries.size() < max_batch; };

  for (const RunningSeq& seq : running) {
    if (!room()) break;
    if (seq.prefill_remaining > 0) continue;
    plan.entries.push_back({.id = seq.id, .num_tokens = 1});
    left -= 1;
  }
  // The prefill budget, where set, ends the prompt chunks before the token budget does.
  if (budget.prefill_budget >= 0) left = std::min(left, budget.prefill_budget);
  for (const RunningSeq& seq : running) {
    if (!room()) break;
    if (seq.prefill_remaining <= 0) continue;
    const int64_t n = std::min(seq.prefill_remaining, left);
    plan.entries.push_back({.id = seq.id, .num_tokens = n, .prefill = true});
    left -= n;
  }
  int free_slots = budget.free_slots;
  for (const WaitingSeq& seq : waiting) {
    if (!room() || free_slots <= 0 || seq.prompt_tokens <= 0) break;
    const int64_t n = std::min(seq.prompt_tokens, left);
    plan.entries.push_back({.id = seq.id, .num_tokens = n, .admitted = true, .prefill = true});
    left -= n;
    --free_slots;
    ++plan.num_admitted;
  }
  for (const PlanEntry& e : plan.entries) plan.total_tokens += e.num_tokens;
  return plan;
}

}  // namespace griffin::engine
