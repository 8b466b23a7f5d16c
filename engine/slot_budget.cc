#include "engine/slot_budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace griffin::engine {

absl::StatusOr<int> SlotsForDeviceMemory(const DeviceMemoryBudget& b) {
  if (!(b.fraction > 0.0 && b.fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the device memory fraction must be in (0, 1], got %g", b.fraction));
  }
  if (b.total_bytes <= 0 || b.free_bytes < 0 || b.free_bytes > b.total_bytes || b.slot_bytes <= 0 ||
      b.reserve_bytes < 0 || b.extra_slots < 0 || b.max_slots < 1) {
    return absl::InvalidArgumentError("device memory budget: sizes out of range");
  }
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const int64_t used = b.total_bytes - b.free_bytes;
  const int64_t allowed = static_cast<int64_t>(std::floor(b.fraction * b.total_bytes));
  const int64_t left = allowed - used - b.reserve_bytes;
  const int64_t fit = left > 0 ? left / b.slot_bytes - b.extra_slots : 0;
  if (fit < 1) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no sequence state fits: %.0f%% of the device's %.2f GiB is %.2f GiB, of which %.2f GiB is "
        "in use (weights, workspaces, other processes) and %.2f GiB kept for graphs; one "
        "sequence's state takes %.1f MiB. Raise --gpu_memory_utilization, use --quantization fp8, "
        "or lower --max_batch / --token_budget",
        100.0 * b.fraction, b.total_bytes / gib, allowed / gib, used / gib, b.reserve_bytes / gib,
        b.slot_bytes / (1024.0 * 1024.0)));
  }
  return static_cast<int>(std::min<int64_t>(fit, b.max_slots));
}

}  // namespace griffin::engine
