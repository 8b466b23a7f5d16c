#include "engine/backend.h"

#include <algorithm>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/logits/logits_reference.h"

namespace griffin::engine {

int64_t LogitsRows(absl::Span<const StepEntry> entries) {
  int64_t rows = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kLast) rows += 1;
    if (e.logits == LogitsRequest::kAll) rows += static_cast<int64_t>(e.tokens.size());
  }
  return rows;
}

absl::Status ValidateStepEntries(absl::Span<const StepEntry> entries, int num_slots, int vocab_size,
                                 absl::FunctionRef<int64_t(int)> next_position) {
  absl::flat_hash_set<int> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const StepEntry& e = entries[i];
    if (e.slot < 0 || e.slot >= num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": slot ", e.slot, " out of range [0, ", num_slots, ")"));
    }
    if (!seen.insert(e.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": slot ", e.slot, " appears twice in one step"));
    }
    if (e.tokens.empty())
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": no tokens"));
    const int64_t expected = next_position(e.slot);
    if (e.position != 0 && e.position != expected) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                     " is not slot ", e.slot, "'s next position ",
                                                     expected));
    }
    // Kernels address positions as int32.
    if (e.position + static_cast<int64_t>(e.tokens.size()) > (int64_t{1} << 31) - 1) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position beyond 2^31"));
    }
    for (int32_t token : e.tokens) {
      if (token < 0 || token >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", i, ": token id ", token, " out of range [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSampleShapes(absl::Span<const StepEntry> entries, size_t requests,
                                  size_t tokens) {
  size_t rows = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kAll) {
      return absl::InvalidArgumentError("StepSample takes kLast or kNone entries only");
    }
    rows += e.logits == LogitsRequest::kLast;
  }
  if (requests != rows || tokens != rows) {
    return absl::InvalidArgumentError("one sampling request and one token per kLast entry");
  }
  return absl::OkStatus();
}

absl::Status ValidateSnapshotBuffer(int slot, int num_slots, int64_t slot_bytes,
                                    size_t buffer_bytes) {
  if (slot < 0 || slot >= num_slots) return absl::InvalidArgumentError("slot out of range");
  if (static_cast<int64_t>(buffer_bytes) != slot_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot buffer holds ", buffer_bytes, " bytes, a slot ", slot_bytes));
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

absl::StatusOr<Backend::SnapshotTicket> Backend::StartSnapshot(int slot, absl::Span<uint8_t> out) {
  ASSIGN_OR_RETURN(const int64_t position, SnapshotSlot(slot, out));
  return SnapshotTicket{.id = 0, .position = position};
}

absl::Status Backend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                  int64_t next_position) {
  return absl::UnimplementedError("this backend cannot restore slots");
}

Backend::SnapshotMemory Backend::AllocateSnapshotMemory(int64_t bytes) {
  return SnapshotMemory(new uint8_t[static_cast<size_t>(std::max<int64_t>(bytes, 1))],
                        [](uint8_t* p) { delete[] p; });
}

int64_t PromptLogprobsRows(absl::Span<const PromptLogprobsRequest> requests) {
  int64_t rows = 0;
  for (const PromptLogprobsRequest& r : requests) rows += static_cast<int64_t>(r.targets.size());
  return rows;
}

absl::Status ValidatePromptLogprobs(absl::Span<const StepEntry> entries,
                                    absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                    int vocab, size_t logits_size,
                                    const PromptLogprobsOutput& out) {
  if (requests.size() != entries.size()) {
    return absl::InvalidArgumentError("one prompt log-probability request per step entry");
  }
  if (top_k < 0 || top_k > vocab) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be in [0, ", vocab, "]"));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (requests[i].targets.size() > entries[i].tokens.size()) {
      return absl::InvalidArgumentError("an entry has more targets than tokens");
    }
    for (int32_t t : requests[i].targets) {
      if (t < 0 || t >= vocab) return absl::InvalidArgumentError("a target id is out of range");
    }
  }
  const int64_t scored = PromptLogprobsRows(requests);
  if (static_cast<int64_t>(out.logprobs.size()) != scored ||
      static_cast<int64_t>(out.ranks.size()) != scored ||
      static_cast<int64_t>(out.top_ids.size()) != scored * top_k ||
      static_cast<int64_t>(out.top_logprobs.size()) != scored * top_k) {
    return absl::InvalidArgumentError("the output spans must hold one row per target");
  }
  if (static_cast<int64_t>(logits_size) != LogitsRows(entries) * vocab) {
    return absl::InvalidArgumentError("logits must hold LogitsRows(entries) rows");
  }

  return absl::OkStatus();
}

absl::Status Backend::StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                             absl::Span<const PromptLogprobsRequest> requests,
                                             int top_k, absl::Span<float> logits,
                                             const PromptLogprobsOutput& out) {
  const int vocab = config().vocab_size;
  RETURN_IF_ERROR(ValidatePromptLogprobs(entries, requests, top_k, vocab, logits.size(), out));

  // Scored entries return every row; the rows the caller asked for are copied out of them.
  std::vector<StepEntry> all_rows(entries.begin(), entries.end());
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!requests[i].targets.empty()) all_rows[i].logits = LogitsRequest::kAll;
  }
  std::vector<float> rows(static_cast<size_t>(LogitsRows(all_rows)) * vocab);
  RETURN_IF_ERROR(Step(all_rows, absl::MakeSpan(rows)));

  int64_t src = 0, dst = 0, scored_row = 0;
  auto row = [&](int64_t r) {
    return absl::MakeConstSpan(rows).subspan(static_cast<size_t>(r) * vocab, vocab);
  };
  for (size_t i = 0; i < entries.size(); ++i) {
    const int64_t n = static_cast<int64_t>(entries[i].tokens.size());
    const int64_t produced = all_rows[i].logits == LogitsRequest::kAll    ? n
                             : all_rows[i].logits == LogitsRequest::kLast ? 1
                                                                          : 0;
    const absl::Span<const int32_t> targets = requests[i].targets;
    for (size_t j = 0; j < targets.size(); ++j, ++scored_row) {
      const ref::RowScore score =
          ref::ScoreRow(row(src + static_cast<int64_t>(j)), targets[j],
                        out.top_ids.subspan(scored_row * top_k, top_k),
                        out.top_logprobs.subspan(scored_row * top_k, top_k));
      out.logprobs[scored_row] = score.logprob;
      out.ranks[scored_row] = score.rank;
    }
    const int64_t wanted = entries[i].logits == LogitsRequest::kAll    ? n
                           : entries[i].logits == LogitsRequest::kLast ? 1
                                                                       : 0;
    for (int64_t k = produced - wanted; k < produced; ++k, ++dst) {
      std::copy_n(row(src + k).begin(), vocab, logits.begin() + dst * vocab);
    }
    src += produced;
  }
  return absl::OkStatus();
}

}  // namespace griffin::engine
