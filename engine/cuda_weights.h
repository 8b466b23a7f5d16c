// The model's weights on one GPU, laid out from the model description (engine/griffin_model.h):
// every tensor in its DeviceFormat (matrices bf16, norm scales / biases / conv taps / a_param
// float32), the members of each fusion group concatenated along the output dimension so one GEMM
// computes them all ([x; y], [gate; up], [q; k; v]), plus one derived tensor per recurrent layer:
// both RG-LRU gate matrices packed as IEEE half [H, 2B, B] for the prefill's batched gate GEMM.
//
// With FP8 projections (--quantization fp8, issue 14) each projection (LayerTensorDef::fp8_weights)
// is held as E4M3 bytes plus one float32 scale per output row instead of bf16, quantized on the
// device as it loads (kernels/linear/fp8_weights.cuh; the CPU backend's emulation quantizes the
// same way), fusion groups concatenated likewise (codes back to back, scales back to back).
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

// A projection's weights as the linear layers read them: bf16 [rows, in], or FP8 E4M3 codes
// [rows, in] with `scales` [rows] (the value of code c in row r is E4M3(c) * scales[r]).
struct ProjectionWeights {
  const void* data = nullptr;
  const float* scales = nullptr;  // set when the weights are FP8
  bool fp8() const { return scales != nullptr; }
  const kernels::bf16_t* bf16() const { return static_cast<const kernels::bf16_t*>(data); }
  const uint8_t* codes() const { return static_cast<const uint8_t*>(data); }
};

class DeviceWeights {
 public:
  // Validates `checkpoint` against the model description (FAILED_PRECONDITION naming the tensor,
  // LDR-2) and uploads it. `staging_bytes` bounds the pinned host buffer (two halves used in turn).
  // `fp8_projections`: the projections in FP8 (INVALID_ARGUMENT when a projection's input width
  // is not a multiple of 16, which the FP8 kernels need).
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Upload(const loader::Checkpoint& checkpoint,
                                                               cudaStream_t stream,
                                                               bool fp8_projections = false,
                                                               int64_t staging_bytes = 64 << 20);
  // Random weights for `config` drawn on the device from each tensor kind's RandomInit
  // (benchmarks, --load_format dummy); with `fp8_projections` drawn in bf16 and quantized.
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Random(const ModelConfig& config,
                                                               uint64_t seed, cudaStream_t stream,
                                                               bool fp8_projections = false);

  const kernels::bf16_t* embedding() const { return embedding_; }
  // lm_head.weight when the checkpoint stores one, else the tied embedding.
  const kernels::bf16_t* output_projection() const {
    return lm_head_ != nullptr ? lm_head_ : embedding_;
  }
  const float* final_norm() const { return final_norm_; }

  // A fusion group's concatenated matrix [FusionRows, in].
  ProjectionWeights fused(int layer, Fusion group) const {
    return projection(layer, FusionMembers(group).front());
  }
  // A projection (LayerTensorDef::fp8_weights) alone.
  ProjectionWeights projection(int layer, LayerTensor id) const {
    return {layers_[layer].tensor[static_cast<int>(id)],
            layers_[layer].scales[static_cast<int>(id)]};
  }
  bool fp8_projections() const { return fp8_projections_; }
  // Elements of the largest projection matrix (a fusion group counts whole): the bf16 scratch the
  // backend expands FP8 weights into for GEMMs above the GEMV's batch.
  int64_t largest_projection_elements() const { return largest_projection_elements_; }
  // A bf16 tensor that is never FP8 (RG-LRU gate blocks; any matrix without fp8_weights, or every
  // matrix when the projections are bf16) or a float32 one (a vector), per its DeviceFormat.
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
    std::array<void*, kNumLayerTensors> tensor{};   // null where the layer has no such tensor
    std::array<float*, kNumLayerTensors> scales{};  // FP8 projections' row scales
    uint16_t* packed_gates = nullptr;
  };
  DeviceWeights() = default;
  // Allocates every tensor per the table (fusion members inside their group's allocation).
  absl::Status Allocate(const ModelConfig& config, bool with_lm_head, bool fp8_projections);
  bool Fp8(const LayerTensorDef& def) const { return fp8_projections_ && def.fp8_weights; }
  // Packs the RG-LRU gates of every recurrent layer (after the gates are on the device).
  absl::Status PackGates(cudaStream_t stream);

  ModelConfig config_;
  bool fp8_projections_ = false;
  int64_t largest_projection_elements_ = 0;
  DeviceArena arena_;
  kernels::bf16_t* embedding_ = nullptr;
  kernels::bf16_t* lm_head_ = nullptr;
  float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CUDA_WEIGHTS_H_
