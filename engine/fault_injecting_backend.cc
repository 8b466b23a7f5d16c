#include "engine/fault_injecting_backend.h"

#include <utility>

namespace griffin::engine {

FaultInjectingBackend::FaultInjectingBackend(std::unique_ptr<Backend> inner, int64_t healthy_steps)
    : ForwardingBackend(std::move(inner)), healthy_steps_(healthy_steps) {}

absl::Status FaultInjectingBackend::CountStep() {
  if (failed_ || steps_++ >= healthy_steps_) {
    failed_ = true;
    return absl::InternalError("injected sticky device error (--debug_fail_device_after_steps)");
  }
  return absl::OkStatus();
}

absl::Status FaultInjectingBackend::Step(absl::Span<const StepEntry> entries,
                                         absl::Span<float> logits) {
  if (absl::Status st = CountStep(); !st.ok()) return st;
  return inner().Step(entries, logits);
}

absl::Status FaultInjectingBackend::StepSample(absl::Span<const StepEntry> entries,
                                               absl::Span<const SampleRequest> requests,
                                               absl::Span<int32_t> tokens) {
  if (absl::Status st = CountStep(); !st.ok()) return st;
  return inner().StepSample(entries, requests, tokens);
}

absl::Status FaultInjectingBackend::StepWithPromptLogprobs(
    absl::Span<const StepEntry> entries, absl::Span<const PromptLogprobsRequest> requests,
    int top_k, absl::Span<float> logits, const PromptLogprobsOutput& out) {
  if (absl::Status st = CountStep(); !st.ok()) return st;
  return inner().StepWithPromptLogprobs(entries, requests, top_k, logits, out);
}

absl::Status FaultInjectingBackend::ResetSlot(int slot) {
  if (failed_) return absl::InternalError("injected sticky device error");
  return inner().ResetSlot(slot);
}

absl::Status FaultInjectingBackend::CopySlot(int from, int to) {
  if (failed_) return absl::InternalError("injected sticky device error");
  return inner().CopySlot(from, to);
}

absl::Status FaultInjectingBackend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                                int64_t next_position) {
  if (failed_) return absl::InternalError("injected sticky device error");
  return inner().RestoreSlot(slot, snapshot, next_position);
}

}  // namespace griffin::engine
