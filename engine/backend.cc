#include "engine/backend.h"

#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace griffin::engine {

int64_t LogitsRows(absl::Span<const StepEntry> entries) {
  int64_t rows = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kLast) rows += 1;
    if (e.logits == LogitsRequest::kAll) rows += static_cast<int64_t>(e.tokens.size());
  }
  return rows;
}

absl::Status ValidateStepEntries(absl::Span<const StepEntry> entries, int num_slots,
                                 int vocab_size, absl::FunctionRef<int64_t(int)> next_position) {
  absl::flat_hash_set<int> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const StepEntry& e = entries[i];
    if (e.slot < 0 || e.slot >= num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": slot ", e.slot,
                                                     " out of range [0, ", num_slots, ")"));
    }
    if (!seen.insert(e.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": slot ", e.slot, " appears twice in one step"));
    }
    if (e.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": no tokens"));
    const int64_t expected = next_position(e.slot);
    if (e.position != 0 && e.position != expected) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                     " is not slot ", e.slot,
                                                     "'s next position ", expected));
    }
    // Kernels address positions as int32.
    if (e.position + static_cast<int64_t>(e.tokens.size()) > (int64_t{1} << 31) - 1) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position beyond 2^31"));
    }
    for (int32_t token : e.tokens) {
      if (token < 0 || token >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": token id ", token,
                                                       " out of range [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Backend::CopySlot(int from, int to) {
  if (from < 0 || from >= num_slots() || to < 0 || to >= num_slots()) {
    return absl::InvalidArgumentError("slot out of range");
  }
  if (from == to) return absl::OkStatus();
  const StateLayout* layout = state_layout();
  if (layout == nullptr) return absl::UnimplementedError("this backend cannot copy slots");
  std::vector<uint8_t> bytes(layout->slot_bytes());
  ASSIGN_OR_RETURN(const int64_t position, SnapshotSlot(from, absl::MakeSpan(bytes)));
  return RestoreSlot(to, bytes, position);
}

absl::StatusOr<int64_t> Backend::SnapshotSlot(int slot, absl::Span<uint8_t> out) {
  return absl::UnimplementedError("this backend cannot snapshot slots");
}

absl::Status Backend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                  int64_t next_position) {
  return absl::UnimplementedError("this backend cannot restore slots");
}

}  // namespace griffin::engine
