// Chooses and builds a Backend: the float32 CPU reference everywhere, the CUDA backend where this
// build has it and a GPU is present. The server and tools build backends only through here.
#ifndef GRIFFIN_ENGINE_BACKEND_FACTORY_H_
#define GRIFFIN_ENGINE_BACKEND_FACTORY_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/simulated_backend.h"
#include "loader/checkpoint.h"

namespace griffin::engine {

// kSimulated computes nothing (engine/simulated_backend.h): for measuring the server and the
// scheduler without a GPU.
enum class BackendKind { kCpu, kCuda, kSimulated };

// "cpu", "cuda", "simulated", or "auto" (cuda when CudaBackendAvailable(), else cpu; never
// simulated). INVALID_ARGUMENT otherwise.
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);
std::string_view BackendKindName(BackendKind kind);

// True when this binary was built with the CUDA backend and a CUDA device is visible.
bool CudaBackendAvailable();

// Device (or host, for the CPU backend) bytes one sequence's state takes on `kind`, including the
// backend's per-slot overhead: what a memory budget is divided by to get the slot count. The
// simulated backend counts what the CUDA backend would hold.
int64_t StateBytesPerSequence(BackendKind kind, const loader::ModelConfig& config);

// How the projections' weights are held (--quantization): as the checkpoint gives them, or FP8
// E4M3 with one scale per output row (issue 14). The CUDA backend quantizes at load and reads FP8
// in its kernels (CudaBackendOptions::fp8_weights); on the CPU backend FP8 is an emulation of the
// same numbers (BackendOptions::fp8_activations says which, slowly).
enum class WeightQuantization { kNone, kFp8 };

// "" or "none", "fp8". INVALID_ARGUMENT otherwise.
absl::StatusOr<WeightQuantization> ParseWeightQuantization(std::string_view name);
std::string_view WeightQuantizationName(WeightQuantization quantization);

// A model identity (ModelIdentity) that also covers the quantization: states computed with FP8
// weights are never restored into the unquantized model, or the other way round.
uint64_t QuantizedModelIdentity(uint64_t model_identity, WeightQuantization quantization);

struct BackendOptions {
  BackendKind kind = BackendKind::kCpu;
  WeightQuantization quantization = WeightQuantization::kNone;
  // FP8 on the CUDA backend: passes of two or more tokens quantize their activations per token
  // and run W8A8 GEMMs (faster, measured less accurate); off: W8A16 throughout
  // (CudaBackendOptions::fp8_activations). The CPU backend emulates W8A8 on every pass with it
  // (CpuNumerics::kEmulateFp8WeightsAndActivations), W8A16 without.
  bool fp8_activations = true;
  // ≥ 1; state for all of them is allocated up front. 0 (CUDA only): as many as
  // `device_memory_fraction` of the GPU's memory leaves after the weights and workspaces, at most
  // `max_slots` (engine/slot_budget.h); Backend::num_slots() says how many that was.
  int num_slots = 1;
  double device_memory_fraction = 0.9;
  int max_slots = 256;
  // The engine's step limits, which size the CUDA backend's workspaces and decode graphs.
  int max_batch = 256;
  int64_t max_tokens_per_step = 4096;
  // CUDA only: fresh prefill passes of at least this many tokens run their attention through
  // cuDNN (CudaBackendOptions::cudnn_attention_min_tokens); 0: the project's kernel always.
  int cudnn_attention_min_tokens = kDefaultCudnnAttentionMinTokens;
  // kSimulated only: how long its steps take.
  SimulatedStepTime simulated_step_time;
};

// FAILED_PRECONDITION when `kind` is not built in or cannot run this model (checked here, at load,
// never mid-request); the loader's and backend's errors otherwise.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const loader::Checkpoint& checkpoint,
                                                       const BackendOptions& options);

// Random bf16 weights generated on the device for `config` (vLLM's --load-format dummy): serving
// benchmarks of published shapes without their checkpoints. CUDA (and the simulated backend,
// which reads no weights anyway): FAILED_PRECONDITION for the CPU backend, which reads its
// weights from a checkpoint.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackendWithRandomWeights(
    const loader::ModelConfig& config, const BackendOptions& options, uint64_t seed);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_BACKEND_FACTORY_H_
