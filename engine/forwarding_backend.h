// A Backend that forwards every call to another: the base for wrappers that change one or two
// calls (fault injection for the server's tests, hooks in the engine's tests) and must leave the
// rest (snapshots, slot copies, device sampling) exactly as the wrapped backend has them.
#ifndef GRIFFIN_ENGINE_FORWARDING_BACKEND_H_
#define GRIFFIN_ENGINE_FORWARDING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "engine/backend.h"

namespace griffin::engine {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  std::string_view name() const override { return inner_->name(); }
  const loader::ModelConfig& config() const override { return inner_->config(); }
  int num_slots() const override { return inner_->num_slots(); }
  int64_t state_bytes_per_sequence() const override { return inner_->state_bytes_per_sequence(); }
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override {
    return inner_->Step(entries, logits);
  }
  bool healthy() const override { return inner_->healthy(); }
  bool samples_on_device() const override { return inner_->samples_on_device(); }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override {
    return inner_->StepSample(entries, requests, tokens);
  }
  absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                      absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                      absl::Span<float> logits,
                                      const PromptLogprobsOutput& out) override {
    return inner_->StepWithPromptLogprobs(entries, requests, top_k, logits, out);
  }
  absl::Status ResetSlot(int slot) override { return inner_->ResetSlot(slot); }
  int64_t NextPosition(int slot) const override { return inner_->NextPosition(slot); }
  const StateLayout* state_layout() const override { return inner_->state_layout(); }
  absl::Status CopySlot(int from, int to) override { return inner_->CopySlot(from, to); }
  absl::StatusOr<int64_t> SnapshotSlot(int slot, absl::Span<uint8_t> out) override {
    return inner_->SnapshotSlot(slot, out);
  }
  absl::StatusOr<SnapshotTicket> StartSnapshot(int slot, absl::Span<uint8_t> out) override {
    return inner_->StartSnapshot(slot, out);
  }
  absl::Status FinishSnapshot(uint64_t id) override { return inner_->FinishSnapshot(id); }
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override {
    return inner_->RestoreSlot(slot, snapshot, next_position);
  }
  SnapshotMemory AllocateSnapshotMemory(int64_t bytes) override {
    return inner_->AllocateSnapshotMemory(bytes);
  }

 protected:
  Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_FORWARDING_BACKEND_H_
