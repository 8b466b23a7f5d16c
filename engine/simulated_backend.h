// A backend that computes nothing: each step blocks for the time a GPU would take (a linear cost
// model of the forward pass) and returns pseudo-random tokens. It exists to measure everything
// around the model on a machine without a GPU, where the CPU backend's own compute would drown
// it: the server's overhead over the engine alone (issue 13: griffin-server and engine_bench
// --serving, both with --backend simulated), the scheduler's token budgets and admission order,
// client tools. What it returns means nothing; it is never chosen by "auto".
//
// Tokens are a hash of the last id fed and its position (plus the seed and draw index when a
// request samples at temperature > 0), so the same prompt continues the same way in any slot and
// on every run, and they are never the model's pad, eos or bos ids: a request runs to max_tokens
// unless its own stop ids or strings end it. Step's logits rows are zero except 10.0 at that
// token, so host and device sampling agree for greedy requests.
//
// It keeps no state but each slot's next position. Its slots still have the CUDA backend's layout,
// and copying, saving and restoring one takes the time moving those bytes would (over the device's
// memory, or the host link), so the prefix cache and sessions cost what they would on the GPU; the
// saved bytes themselves are left as the caller's buffer had them (only the position matters).
#ifndef GRIFFIN_ENGINE_SIMULATED_BACKEND_H_
#define GRIFFIN_ENGINE_SIMULATED_BACKEND_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/backend.h"
#include "engine/state_layout.h"
#include "loader/model_config.h"

namespace griffin::engine {

// The forward pass's modelled time: base + per_row × decode rows + per_prompt_token × prompt
// tokens, where an entry of one token is a decode row and an entry of more is a prompt chunk
// (the shape engine/step_cost_model.h fits on real steps). The defaults are recurrentgemma-2b in
// bf16 on one H200 (bench/RESULTS.md, sessions 12-13): decode 1.95 ms at batch 1 and 3.84 ms at
// batch 256, prefill 16 x 2048 at 118K tok/s.
struct SimulatedStepTime {
  absl::Duration base = absl::Microseconds(1950);
  absl::Duration per_row = absl::Nanoseconds(7400);
  absl::Duration per_prompt_token = absl::Nanoseconds(8500);

  // Moving one slot's state: a copy within the device's memory (CopySlot), and a copy to or from
  // the host (SnapshotSlot, RestoreSlot; page-locked memory over the H200's link).
  double device_copy_bytes_per_s = 2e12;
  double host_link_bytes_per_s = 50e9;
  absl::Duration copy_latency = absl::Microseconds(5);

  absl::Duration For(int64_t decode_rows, int64_t prompt_tokens) const {
    return base + per_row * decode_rows + per_prompt_token * prompt_tokens;
  }
};

// "BASE,PER_ROW,PER_PROMPT_TOKEN" in microseconds (decimals allowed), each ≥ 0 and finite, e.g.
// "1950,7.4,8.5"; INVALID_ARGUMENT otherwise.
absl::StatusOr<SimulatedStepTime> ParseSimulatedStepTime(std::string_view text);

class SimulatedBackend final : public Backend {
 public:
  // INVALID_ARGUMENT for num_slots < 1 or a config without a vocabulary larger than its special ids.
  static absl::StatusOr<std::unique_ptr<SimulatedBackend>> Create(const loader::ModelConfig& config,
                                                                  int num_slots,
                                                                  const SimulatedStepTime& time);

  std::string_view name() const override { return "simulated"; }
  const loader::ModelConfig& config() const override { return config_; }
  int num_slots() const override { return static_cast<int>(next_position_.size()); }
  // What the CUDA backend's slot takes, so slot budgets come out as on the GPU simulated.
  int64_t state_bytes_per_sequence() const override;

  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  bool samples_on_device() const override { return true; }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override;
  absl::Status ResetSlot(int slot) override;
  int64_t NextPosition(int slot) const override;
  const StateLayout* state_layout() const override { return &layout_; }
  absl::Status CopySlot(int from, int to) override;
  absl::StatusOr<int64_t> SnapshotSlot(int slot, absl::Span<uint8_t> out) override;
  // As the CUDA backend's: a device copy into one of up to 16 staging buffers now, the host copy
  // in the background, one at a time as on one copy engine.
  absl::StatusOr<SnapshotTicket> StartSnapshot(int slot, absl::Span<uint8_t> out) override;
  absl::Status FinishSnapshot(uint64_t id) override;
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override;

  // The token a greedy request gets after `last_token` at `position` (Step's logits peak there).
  int32_t GreedyToken(int32_t last_token, int64_t position) const;

 private:
  SimulatedBackend(const loader::ModelConfig& config, int num_slots, const SimulatedStepTime& time);
  // The checks every step makes, then the modelled wait; advances the slots.
  absl::Status Advance(absl::Span<const StepEntry> entries);
  int32_t OrdinaryToken(uint64_t hash) const;
  // One slot's bytes at `bytes_per_s`, after the copy latency.
  std::chrono::nanoseconds TransferTime(double bytes_per_s) const;
  void Transfer(double bytes_per_s) const;
  static void WaitUntil(std::chrono::steady_clock::time_point end);

  // StartSnapshot's copies in flight: (id, when its host copy ends), at most 16, oldest first.
  struct PendingCopy {
    uint64_t id = 0;
    std::chrono::steady_clock::time_point done;
  };
  std::vector<PendingCopy> pending_copies_;
  uint64_t last_snapshot_id_ = 0;

  loader::ModelConfig config_;
  StateLayout layout_;
  SimulatedStepTime time_;
  std::vector<int64_t> next_position_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_SIMULATED_BACKEND_H_
