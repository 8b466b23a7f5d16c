// Test support for the server: a Backend that forwards to another and, from its Nth step on, fails
// every step as a device with a sticky error does (INTERNAL, healthy() false). griffin-server's
// --debug_fail_device_after_steps wraps its backend in one so the end-to-end tests can check what
// a sticky CUDA error does to a running server (RELIABILITY.md OPS-1) without a GPU.
#ifndef GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_
#define GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "engine/backend.h"

namespace griffin::engine {

class FaultInjectingBackend final : public Backend {
 public:
  // Steps 0..healthy_steps-1 (the engine's warm-up counts) run on `inner`; later ones fail.
  FaultInjectingBackend(std::unique_ptr<Backend> inner, int64_t healthy_steps);

  std::string_view name() const override { return inner_->name(); }
  const loader::ModelConfig& config() const override { return inner_->config(); }
  int num_slots() const override { return inner_->num_slots(); }
  int64_t state_bytes_per_sequence() const override { return inner_->state_bytes_per_sequence(); }
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  bool healthy() const override { return !failed_; }
  bool samples_on_device() const override { return inner_->samples_on_device(); }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override;
  absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                      absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                      absl::Span<float> logits,
                                      const PromptLogprobsOutput& out) override;
  absl::Status ResetSlot(int slot) override;
  int64_t NextPosition(int slot) const override { return inner_->NextPosition(slot); }

 private:
  absl::Status CountStep();

  std::unique_ptr<Backend> inner_;
  const int64_t healthy_steps_;
  int64_t steps_ = 0;
  bool failed_ = false;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_
