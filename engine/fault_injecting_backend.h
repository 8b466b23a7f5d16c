// Test support for the server: a Backend that forwards to another and, from its Nth step on, fails
// every step as a device with a sticky error does (INTERNAL, healthy() false). griffin-server's
// --debug_fail_device_after_steps wraps its backend in one so the end-to-end tests can check what
// a sticky CUDA error does to a running server (RELIABILITY.md OPS-1) without a GPU.
#ifndef GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_
#define GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "engine/forwarding_backend.h"

namespace griffin::engine {

class FaultInjectingBackend final : public ForwardingBackend {
 public:
  // Steps 0..healthy_steps-1 (the engine's warm-up counts) run on `inner`; later ones fail.
  FaultInjectingBackend(std::unique_ptr<Backend> inner, int64_t healthy_steps);

  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  bool healthy() const override { return !failed_; }
  absl::Status StepSample(absl::Span<const StepEntry> entries,
                          absl::Span<const SampleRequest> requests,
                          absl::Span<int32_t> tokens) override;
  absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                      absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                      absl::Span<float> logits,
                                      const PromptLogprobsOutput& out) override;
  // A failed device fails whatever writes a slot's state; snapshots only read one.
  absl::Status ResetSlot(int slot) override;
  absl::Status CopySlot(int from, int to) override;
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override;

 private:
  absl::Status CountStep();

  const int64_t healthy_steps_;
  int64_t steps_ = 0;
  bool failed_ = false;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_FAULT_INJECTING_BACKEND_H_
