// How many state slots a device's memory holds once the weights and workspaces are in: what
// vLLM's --gpu-memory-utilization does for its KV blocks, here for fixed-size sequence states.
// Pure arithmetic, so that it is tested without a GPU; the CUDA backend feeds it cudaMemGetInfo.
#ifndef GRIFFIN_ENGINE_SLOT_BUDGET_H_
#define GRIFFIN_ENGINE_SLOT_BUDGET_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace griffin::engine {

struct DeviceMemoryBudget {
  // cudaMemGetInfo after the weights, workspaces and library handles are allocated: `free` is
  // what is left on the device, whoever holds the rest (another process counts against us too,
  // as in vLLM).
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
  // The share of the whole device this process may hold, in (0, 1].
  double fraction = 0.9;
  // Kept free for what is allocated after the slots: decode graphs, lazily loaded kernel modules.
  int64_t reserve_bytes = 0;
  // One slot's stride in the pool; the pool holds `slots + extra_slots` of them.
  int64_t slot_bytes = 0;
  int extra_slots = 0;
  int max_slots = 256;
};

// min(max_slots, what fits): fraction * total - (total - free) - reserve, in whole slots, less
// extra_slots. INVALID_ARGUMENT for a fraction outside (0, 1], non-positive sizes or max_slots;
// RESOURCE_EXHAUSTED, with the figures, when not one slot fits.
absl::StatusOr<int> SlotsForDeviceMemory(const DeviceMemoryBudget& budget);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_SLOT_BUDGET_H_
