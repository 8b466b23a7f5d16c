#include "engine/simulated_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/hash.h"
#include "base/status_macros.h"
#include "engine/state_layout.h"

namespace griffin::engine {
namespace {

// The first id that is none of the special ids the sampler or the server treat specially.
int32_t FirstOrdinaryId(const loader::ModelConfig& config) {
  return std::max({config.pad_token_id, config.eos_token_id, config.bos_token_id}) + 1;
}

}  // namespace

absl::StatusOr<SimulatedStepTime> ParseSimulatedStepTime(std::string_view text_in) {
  // Debian's Abseil has its own string_view, distinct from std::string_view.
  const absl::string_view text(text_in.data(), text_in.size());
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  double us[3];
  bool ok = parts.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) {
    ok = absl::SimpleAtod(parts[i], &us[i]) && std::isfinite(us[i]) && us[i] >= 0 &&
         us[i] <= 1e9;  // more than a quarter of an hour a step is a typo
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "simulated step time must be BASE,PER_ROW,PER_PROMPT_TOKEN in microseconds, each a "
        "number in [0, 1e9] (e.g. 1950,7.4,8.5); got \"",
        text.substr(0, 64), "\""));
  }
  auto micros = [](double v) { return absl::Nanoseconds(std::llround(v * 1e3)); };
  return SimulatedStepTime{micros(us[0]), micros(us[1]), micros(us[2])};
}

absl::StatusOr<std::unique_ptr<SimulatedBackend>> SimulatedBackend::Create(
    const loader::ModelConfig& config, int num_slots, const SimulatedStepTime& time) {
  if (num_slots < 1) return absl::InvalidArgumentError("num_slots must be at least 1");
  if (config.pad_token_id < 0 || config.eos_token_id < 0 || config.bos_token_id < 0 ||
      FirstOrdinaryId(config) >= config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the simulated backend needs a vocabulary with ids beyond pad, eos and bos; "
                     "vocab_size is ",
                     config.vocab_size));
  }
  return std::unique_ptr<SimulatedBackend>(new SimulatedBackend(config, num_slots, time));
}

SimulatedBackend::SimulatedBackend(const loader::ModelConfig& config, int num_slots,
                                   const SimulatedStepTime& time)
    : config_(config),
      layout_(StateLayout::ForCuda(config)),
      time_(time),
      next_position_(num_slots, 0) {}

int64_t SimulatedBackend::state_bytes_per_sequence() const { return layout_.slot_bytes(); }

std::chrono::nanoseconds SimulatedBackend::TransferTime(double bytes_per_s) const {
  const double seconds = static_cast<double>(layout_.slot_bytes()) / bytes_per_s;
  return absl::ToChronoNanoseconds(time_.copy_latency +
                                   absl::Nanoseconds(std::llround(seconds * 1e9)));
}

void SimulatedBackend::WaitUntil(std::chrono::steady_clock::time_point end) {
  const auto now = std::chrono::steady_clock::now();
  if (end <= now) return;
  // A short copy is waited for by spinning, as the CUDA runtime waits for one: a sleep of a few
  // microseconds wakes tens of microseconds late, which would price a device-to-device slot copy
  // at several times its cost.
  if (end - now < std::chrono::microseconds(200)) {
    while (std::chrono::steady_clock::now() < end) {
    }
  } else {
    std::this_thread::sleep_until(end);
  }
}

void SimulatedBackend::Transfer(double bytes_per_s) const {
  WaitUntil(std::chrono::steady_clock::now() + TransferTime(bytes_per_s));
}

absl::Status SimulatedBackend::CopySlot(int from, int to) {
  if (from < 0 || from >= num_slots() || to < 0 || to >= num_slots()) {
    return absl::InvalidArgumentError("slot out of range");
  }
  if (from == to) return absl::OkStatus();
  Transfer(time_.device_copy_bytes_per_s);
  next_position_[to] = next_position_[from];
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SimulatedBackend::SnapshotSlot(int slot, absl::Span<uint8_t> out) {
  RETURN_IF_ERROR(ValidateSnapshotBuffer(slot, num_slots(), layout_.slot_bytes(), out.size()));
  // The bytes are not written: a GPU's copy engine would fill them without the host's CPU, and
  // writing megabytes here would charge the host for work it does not do.
  Transfer(time_.host_link_bytes_per_s);
  return next_position_[slot];
}

absl::StatusOr<Backend::SnapshotTicket> SimulatedBackend::StartSnapshot(int slot,
                                                                        absl::Span<uint8_t> out) {
  RETURN_IF_ERROR(ValidateSnapshotBuffer(slot, num_slots(), layout_.slot_bytes(), out.size()));
  constexpr size_t kStagings = 16;  // the CUDA backend's kMaxSnapshotStagings
  const auto now = std::chrono::steady_clock::now();
  while (!pending_copies_.empty() && pending_copies_.front().done <= now) {
    pending_copies_.erase(pending_copies_.begin());  // complete: their buffers are free again
  }
  if (pending_copies_.size() == kStagings) {  // every staging buffer busy: wait for the oldest
    WaitUntil(pending_copies_.front().done);
    pending_copies_.erase(pending_copies_.begin());
  }
  Transfer(time_.device_copy_bytes_per_s);  // into the staging buffer, on the step stream
  const auto start = pending_copies_.empty()
                         ? std::chrono::steady_clock::now()
                         : std::max(std::chrono::steady_clock::now(), pending_copies_.back().done);
  pending_copies_.push_back(
      {++last_snapshot_id_, start + TransferTime(time_.host_link_bytes_per_s)});
  return SnapshotTicket{.id = last_snapshot_id_, .position = next_position_[slot]};
}

absl::Status SimulatedBackend::FinishSnapshot(uint64_t id) {
  for (auto it = pending_copies_.begin(); it != pending_copies_.end(); ++it) {
    if (it->id == id) {
      WaitUntil(it->done);
      pending_copies_.erase(it);
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status SimulatedBackend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                           int64_t next_position) {
  RETURN_IF_ERROR(ValidateSnapshotBuffer(slot, num_slots(), layout_.slot_bytes(), snapshot.size()));
  if (next_position < 0 || next_position > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError("position out of range");  // as the CUDA backend's
  }
  Transfer(time_.host_link_bytes_per_s);
  next_position_[slot] = next_position;
  return absl::OkStatus();
}

int32_t SimulatedBackend::OrdinaryToken(uint64_t hash) const {
  const int32_t first = FirstOrdinaryId(config_);
  return first + static_cast<int32_t>(hash % static_cast<uint64_t>(config_.vocab_size - first));
}

int32_t SimulatedBackend::GreedyToken(int32_t last_token, int64_t position) const {
  return OrdinaryToken(Mix64(static_cast<uint64_t>(position) * 0x100000001b3ull ^
                             static_cast<uint32_t>(last_token)));
}

absl::Status SimulatedBackend::Advance(absl::Span<const StepEntry> entries) {
  RETURN_IF_ERROR(ValidateStepEntries(entries, num_slots(), config_.vocab_size,
                                      [this](int slot) { return next_position_[slot]; }));
  int64_t rows = 0, prompt_tokens = 0;
  for (const StepEntry& e : entries) {
    if (e.tokens.size() == 1) {
      ++rows;
    } else {
      prompt_tokens += static_cast<int64_t>(e.tokens.size());
    }
  }
  // Sleeping, not spinning: the host work around the step should have the machine's cores, as it
  // has them while a GPU computes (the CUDA backend's engine thread waits in the driver).
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(time_.For(rows, prompt_tokens)));
  for (const StepEntry& e : entries) {
    next_position_[e.slot] = e.position + static_cast<int64_t>(e.tokens.size());
  }
  return absl::OkStatus();
}

absl::Status SimulatedBackend::Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) {
  const int64_t vocab = config_.vocab_size;
  if (static_cast<int64_t>(logits.size()) != LogitsRows(entries) * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logits hold ", logits.size(), " floats, not ",
                                                   LogitsRows(entries), " rows of ", vocab));
  }
  RETURN_IF_ERROR(Advance(entries));
  std::fill(logits.begin(), logits.end(), 0.0f);
  int64_t row = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kNone) continue;
    const size_t first = e.logits == LogitsRequest::kAll ? 0 : e.tokens.size() - 1;
    for (size_t j = first; j < e.tokens.size(); ++j, ++row) {
      logits[row * vocab + GreedyToken(e.tokens[j], e.position + static_cast<int64_t>(j))] = 10.0f;
    }
  }
  return absl::OkStatus();
}

absl::Status SimulatedBackend::StepSample(absl::Span<const StepEntry> entries,
                                          absl::Span<const SampleRequest> requests,
                                          absl::Span<int32_t> tokens) {
  RETURN_IF_ERROR(ValidateSampleShapes(entries, requests.size(), tokens.size()));
  RETURN_IF_ERROR(Advance(entries));
  size_t row = 0;
  for (const StepEntry& e : entries) {
    if (e.logits != LogitsRequest::kLast) continue;
    const SampleRequest& r = requests[row];
    const int64_t position = e.position + static_cast<int64_t>(e.tokens.size()) - 1;
    tokens[row++] =
        r.params.greedy()
            ? GreedyToken(e.tokens.back(), position)
            : OrdinaryToken(Mix64(r.params.seed ^ Mix64(r.step ^ (uint64_t{0x5eed} << 48))));
  }
  return absl::OkStatus();
}

absl::Status SimulatedBackend::ResetSlot(int slot) {
  if (slot < 0 || slot >= num_slots()) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " out of range [0, ", num_slots(), ")"));
  }
  next_position_[slot] = 0;
  return absl::OkStatus();
}

int64_t SimulatedBackend::NextPosition(int slot) const {
  return slot >= 0 && slot < num_slots() ? next_position_[slot] : -1;
}

}  // namespace griffin::engine
