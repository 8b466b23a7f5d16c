// The model's weights on one GPU, laid out from the model description (engine/griffin_model.h):
// every tensor in its DeviceFormat (matrices bf16, norm scales / biases / conv taps / a_param
// float32), the members of each fusion group concatenated along the output dimension so one GEMM
// computes them all ([x; y], [gate; up], [q; k; v]), plus one derived tensor per recurrent layer:
// both RG-LRU gate matrices packed as IEEE half [H, 2B, B] for the prefill's batched gate GEMM.
//
// Loading streams the checkpoint's mmap to the device tensor by tensor through a bounded pinned
// staging buffer, converting each chunk to its device format on the way (bf16 checkpoints copy
// straight; float32 / float16 ones are narrowed or widened per chunk): host memory stays near the
// staging buffer plus the mapped file, never the model widened to float32.
//
// Device-only (host code that calls the CUDA runtime); not thread-safe.
#ifndef GRIFFIN_ENGINE_CUDA_WEIGHTS_H_
#define GRIFFIN_ENGINE_CUDA_WEIGHTS_H_

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/griffin_model.h"
#include "kernels/types.h"
#include "loader/checkpoint.h"

namespace griffin::engine {

// cudaMalloc'ed blocks freed together; counts the bytes it holds. Allocation happens at load only.
class DeviceArena {
 public:
  DeviceArena() = default;
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // `bytes` rounded up to 256, zero-filled (so nothing the device reads is ever uninitialised,
  // and compute-sanitizer initcheck sees library kernels' outputs as initialised).
  absl::StatusOr<void*> Allocate(int64_t bytes);
  template <typename T>
  absl::StatusOr<T*> Allocate(int64_t count) {
    absl::StatusOr<void*> p = Allocate(count * static_cast<int64_t>(sizeof(T)));
    if (!p.ok()) return p.status();
    return static_cast<T*>(*p);
  }
  int64_t bytes() const { return bytes_; }

 private:
  std::vector<void*> blocks_;
  int64_t bytes_ = 0;
};

class DeviceWeights {
 public:
  // Validates `checkpoint` against the model description (FAILED_PRECONDITION naming the tensor,
  // LDR-2) and uploads it. `staging_bytes` bounds the pinned host buffer (two halves used in turn).
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Upload(const loader::Checkpoint& checkpoint,
                                                               cudaStream_t stream,
                                                               int64_t staging_bytes = 64 << 20);
  // Random weights for `config` drawn on the device from each tensor kind's RandomInit
  // (benchmarks, --load_format dummy).
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Random(const ModelConfig& config,
                                                               uint64_t seed, cudaStream_t stream);

  const kernels::bf16_t* embedding() const { return embedding_; }
  // lm_head.weight when the checkpoint stores one, else the tied embedding.
  const kernels::bf16_t* output_projection() const {
    return lm_head_ != nullptr ? lm_head_ : embedding_;
  }
  const float* final_norm() const { return final_norm_; }

  // A fusion group's concatenated matrix [FusionRows, in] (bf16).
  const kernels::bf16_t* fused(int layer, Fusion group) const {
    return static_cast<const kernels::bf16_t*>(
        layers_[layer].tensor[static_cast<int>(FusionMembers(group).front())]);
  }
  // A bf16 tensor (a matrix) or a float32 one (a vector), per its DeviceFormat.
  const kernels::bf16_t* bf16(int layer, LayerTensor id) const {
    return static_cast<const kernels::bf16_t*>(layers_[layer].tensor[static_cast<int>(id)]);
  }
  const float* f32(int layer, LayerTensor id) const {
    return static_cast<const float*>(layers_[layer].tensor[static_cast<int>(id)]);
  }
  // Recurrent layers: both gate matrices as IEEE half, [H][o < B: input gate, else a gate][B in].
  const uint16_t* packed_gates(int layer) const { return layers_[layer].packed_gates; }

  int64_t bytes() const { return arena_.bytes(); }

 private:
  struct Layer {
    std::array<void*, kNumLayerTensors> tensor{};  // null where the layer has no such tensor
    uint16_t* packed_gates = nullptr;
  };
  DeviceWeights() = default;
  // Allocates every tensor per the table (fusion members inside their group's allocation).
  absl::Status Allocate(const ModelConfig& config, bool with_lm_head);
  // Packs the RG-LRU gates of every recurrent layer (after the gates are on the device).
  absl::Status PackGates(cudaStream_t stream);

  ModelConfig config_;
  DeviceArena arena_;
  kernels::bf16_t* embedding_ = nullptr;
  kernels::bf16_t* lm_head_ = nullptr;
  float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CUDA_WEIGHTS_H_
