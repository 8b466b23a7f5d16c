#include "engine/backend_factory.h"

#include "base/status_macros.h"
#include "engine/cpu_backend.h"
#include "engine/griffin_model.h"

namespace griffin::engine {

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  if (name == "auto") return CudaBackendAvailable() ? BackendKind::kCuda : BackendKind::kCpu;
  return absl::InvalidArgumentError("backend must be cpu, cuda or auto");
}

std::string_view BackendKindName(BackendKind kind) {
  return kind == BackendKind::kCuda ? "cuda" : "cpu";
}

bool CudaBackendAvailable() { return false; }

int64_t StateBytesPerSequence(BackendKind kind, const loader::ModelConfig& config) {
  return ComputeStateSize(config, kind == BackendKind::kCuda ? 2 : 4).total();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const loader::Checkpoint& checkpoint,
                                                       const BackendOptions& options) {
  if (options.num_slots < 1) return absl::InvalidArgumentError("num_slots must be at least 1");
  switch (options.kind) {
    case BackendKind::kCpu: {
      ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend,
                       CpuBackend::Create(checkpoint, options.num_slots));
      return std::unique_ptr<Backend>(std::move(backend));
    }
    case BackendKind::kCuda:
      return absl::FailedPreconditionError("this build has no CUDA backend");
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

}  // namespace griffin::engine
