#include "engine/backend_factory.h"

#include <algorithm>

#include "base/status_macros.h"
#include "engine/cpu_backend.h"
#include "engine/griffin_model.h"
#include "engine/state_layout.h"
#if defined(GRIFFIN_HAVE_CUDA)
#include "engine/cuda_backend.h"
#endif

namespace griffin::engine {

#if defined(GRIFFIN_HAVE_CUDA)
namespace {

// The engine's limits size the CUDA backend's decode graphs and activation workspace.
CudaBackendOptions ToCudaOptions(const BackendOptions& options) {
  CudaBackendOptions cuda;
  cuda.num_slots = options.num_slots;
  cuda.device_memory_fraction = options.device_memory_fraction;
  cuda.max_slots = options.max_slots;
  cuda.max_decode_batch = options.max_batch;
  cuda.max_tokens_per_step =
      static_cast<int>(std::max<int64_t>(options.max_tokens_per_step, options.max_batch));
  cuda.fp8_weights = options.quantization == WeightQuantization::kFp8;
  cuda.fp8_activations = options.fp8_activations;
  cuda.cudnn_attention_min_tokens = options.cudnn_attention_min_tokens;
  return cuda;
}

}  // namespace
#endif

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  if (name == "simulated") return BackendKind::kSimulated;
  if (name == "auto") return CudaBackendAvailable() ? BackendKind::kCuda : BackendKind::kCpu;
  return absl::InvalidArgumentError("backend must be cpu, cuda, simulated or auto");
}

absl::StatusOr<WeightQuantization> ParseWeightQuantization(std::string_view name) {
  if (name.empty() || name == "none") return WeightQuantization::kNone;
  if (name == "fp8") return WeightQuantization::kFp8;
  return absl::InvalidArgumentError("quantization must be none or fp8");
}

std::string_view WeightQuantizationName(WeightQuantization quantization) {
  return quantization == WeightQuantization::kFp8 ? "fp8" : "none";
}

uint64_t QuantizedModelIdentity(uint64_t model_identity, WeightQuantization quantization) {
  if (quantization == WeightQuantization::kNone) return model_identity;
  // Any fixed odd multiplier mixes all bits; the constant is the 64-bit golden ratio.
  return (model_identity ^ 0x46503845u /* "FP8E" */) * 0x9e3779b97f4a7c15ull;
}

std::string_view BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu:
      return "cpu";
    case BackendKind::kCuda:
      return "cuda";
    case BackendKind::kSimulated:
      return "simulated";
  }
  return "unknown";
}

bool CudaBackendAvailable() {
#if defined(GRIFFIN_HAVE_CUDA)
  return CudaDeviceAvailable();
#else
  return false;
#endif
}

int64_t StateBytesPerSequence(BackendKind kind, const loader::ModelConfig& config) {
  // The slot's stride in the backend's pool: no other per-slot overhead.
  return (kind == BackendKind::kCpu ? StateLayout::ForCpu(config) : StateLayout::ForCuda(config))
      .slot_bytes();
}

namespace {

absl::Status CheckSlotOptions(const BackendOptions& options) {
  if (options.num_slots < 0) return absl::InvalidArgumentError("num_slots must be at least 1");
  if (options.num_slots == 0 && options.kind != BackendKind::kCuda) {
    return absl::InvalidArgumentError(
        "slots from device memory (num_slots 0) need the CUDA backend; give the CPU and simulated "
        "backends a slot count");
  }
  if (options.num_slots == 0 && options.max_slots < 1) {
    return absl::InvalidArgumentError("max_slots must be at least 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateSimulated(const loader::ModelConfig& config,
                                                         const BackendOptions& options) {
  if (options.quantization != WeightQuantization::kNone) {
    return absl::InvalidArgumentError(
        "the simulated backend holds no weights to quantize: model an FP8 GPU through its step "
        "time instead");
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<SimulatedBackend> backend,
      SimulatedBackend::Create(config, options.num_slots, options.simulated_step_time));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const loader::Checkpoint& checkpoint,
                                                       const BackendOptions& options) {
  RETURN_IF_ERROR(CheckSlotOptions(options));
  switch (options.kind) {
    case BackendKind::kSimulated:
      return CreateSimulated(checkpoint.config(), options);
    case BackendKind::kCpu: {
      // FP8 is emulated; with fp8_activations W8A8 on every pass (the GPU's prefill and decode
      // batches; its batch-1 decode is W8A16).
      const CpuNumerics numerics =
          options.quantization != WeightQuantization::kFp8 ? CpuNumerics::kFloat32
          : options.fp8_activations ? CpuNumerics::kEmulateFp8WeightsAndActivations
                                    : CpuNumerics::kEmulateFp8Weights;
      ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend,
                       CpuBackend::Create(checkpoint, options.num_slots, numerics));
      return std::unique_ptr<Backend>(std::move(backend));
    }
    case BackendKind::kCuda: {
#if defined(GRIFFIN_HAVE_CUDA)
      if (!CudaDeviceAvailable()) return absl::FailedPreconditionError("no CUDA device is visible");
      ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                       CudaBackend::Create(checkpoint, ToCudaOptions(options)));
      return std::unique_ptr<Backend>(std::move(backend));
#else
      return absl::FailedPreconditionError("this build has no CUDA backend");
#endif
    }
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackendWithRandomWeights(
    const loader::ModelConfig& config, const BackendOptions& options, uint64_t seed) {
  RETURN_IF_ERROR(CheckSlotOptions(options));
  if (options.kind == BackendKind::kSimulated) return CreateSimulated(config, options);
  if (options.kind != BackendKind::kCuda) {
    return absl::FailedPreconditionError(
        "random (dummy) weights need the CUDA backend; the CPU backend reads a checkpoint");
  }
#if defined(GRIFFIN_HAVE_CUDA)
  if (!CudaDeviceAvailable()) return absl::FailedPreconditionError("no CUDA device is visible");
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                   CudaBackend::CreateRandom(config, ToCudaOptions(options), seed));
  return std::unique_ptr<Backend>(std::move(backend));
#else
  return absl::FailedPreconditionError("this build has no CUDA backend");
#endif
}

}  // namespace griffin::engine
