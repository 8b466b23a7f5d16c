// The CPU backend: the model in plain float32, whatever the checkpoint's dtype. It is the readable
// reference the CUDA backend and every kernel are checked against, and it serves small models
// (the demo model, tests) on machines without a GPU.
#ifndef GRIFFIN_ENGINE_CPU_BACKEND_H_
#define GRIFFIN_ENGINE_CPU_BACKEND_H_

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/griffin_model.h"
#include "loader/checkpoint.h"

namespace griffin::engine {

// Float32 copies of the weights in checkpoint layout ([out, in] for linears), indexed by the
// model description's tensor ids (engine/griffin_model.h); a tensor the layer does not have is empty.
struct CpuLayerWeights {
  BlockType type = BlockType::kRecurrent;
  std::array<std::vector<float>, kNumLayerTensors> tensors;
  const std::vector<float>& operator[](LayerTensor id) const {
    return tensors[static_cast<int>(id)];
  }
};

struct CpuWeights {
  std::array<std::vector<float>, kNumModelTensors> tensors;  // lm_head empty when tied
  std::vector<CpuLayerWeights> layers;
  const std::vector<float>& operator[](ModelTensor id) const {
    return tensors[static_cast<int>(id)];
  }
  // The output projection: lm_head.weight when stored, else the (tied) embedding.
  const std::vector<float>& output_projection() const;
};

// What the CPU backend computes in.
enum class CpuNumerics {
  kFloat32,  // everything float32: the reference (SPEC.md §8.4)
  // float32, except that every matrix (weights of the linears, embedding, head) and every GEMM
  // input is rounded to bfloat16, as the CUDA backend's GEMMs see them. It predicts the error the
  // GPU's bf16 path cannot avoid, to tell kernel bugs from rounding (tests/golden_test.cc).
  kEmulateBf16Gemm,
  // kEmulateBf16Gemm, and the projections' weights (LayerTensorDef::fp8_weights) quantized to FP8
  // E4M3 with one float32 scale per output row, as --quantization fp8 will store them on the GPU
  // (W8A16: activations stay bf16). The quality floor of the FP8 path (issue 14).
  kEmulateFp8Weights,
  // kEmulateFp8Weights, and each projection's input rows quantized to FP8 E4M3 per token (scale
  // max|row| / 448) before the product: W8A8, what the CUDA backend computes for passes of two or
  // more tokens (CudaBackendOptions::fp8_activations). Its passes of one token are W8A16.
  kEmulateFp8WeightsAndActivations,
};

// Validates the checkpoint against GriffinTensorSpecs (FAILED_PRECONDITION naming the tensor, LDR-2)
// and widens every tensor to float32 (rounding those the CUDA backend stores in bf16 under
// kEmulateBf16Gemm and kEmulateFp8Weights, and quantizing the projections under the latter).
absl::StatusOr<CpuWeights> LoadCpuWeights(const loader::Checkpoint& checkpoint,
                                          CpuNumerics numerics = CpuNumerics::kFloat32);

// Called with every named intermediate of a forward pass ("layer.3.rg_lru", "final_norm", ...;
// [T, width] row-major), for dumping and diffing against train/ (KER-3). Debug only: slow.
using IntermediateObserver =
    std::function<void(std::string_view name, absl::Span<const float> values, int T, int width)>;

class CpuBackend final : public Backend {
 public:
  // `num_slots` ≥ 1 sequences' state is allocated up front.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(
      const loader::Checkpoint& checkpoint, int num_slots,
      CpuNumerics numerics = CpuNumerics::kFloat32);
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(
      const loader::ModelConfig& config, CpuWeights weights, int num_slots,
      CpuNumerics numerics = CpuNumerics::kFloat32);

  std::string_view name() const override { return "cpu"; }
  const loader::ModelConfig& config() const override { return config_; }
  int num_slots() const override { return static_cast<int>(next_position_.size()); }
  int64_t state_bytes_per_sequence() const override { return layout_.slot_bytes(); }
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  absl::Status ResetSlot(int slot) override;
  int64_t NextPosition(int slot) const override;
  const StateLayout* state_layout() const override { return &layout_; }
  absl::Status CopySlot(int from, int to) override;
  absl::StatusOr<int64_t> SnapshotSlot(int slot, absl::Span<uint8_t> out) override;
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override;

  void set_intermediate_observer(IntermediateObserver observer) { observer_ = std::move(observer); }

 private:
  CpuBackend(const loader::ModelConfig& config, CpuWeights weights, int num_slots,
             CpuNumerics numerics);
  // ref::Linear, with the input rounded to bf16 first under the emulations, and quantized per
  // row to FP8 under kEmulateFp8WeightsAndActivations when `w` is a projection (not the head).
  void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
              int T, int in, int out, absl::Span<float> y, bool projection = true) const;
  // A region of slot `slot`'s state (offset and float count from layout_).
  absl::Span<float> Region(int slot, int64_t offset, int64_t floats);
  // The forward pass of one sequence's run. Writes `rows` logits rows: the last position's, or
  // every position's when all_positions is set.
  void ForwardEntry(const StepEntry& entry, bool all_positions, float* logits);
  void AttentionBlock(const CpuLayerWeights& w, int attention_index, int slot, int64_t position,
                      int T, const std::vector<float>& normed, std::vector<float>& out);
  void RecurrentBlock(const CpuLayerWeights& w, int recurrent_index, int slot, int64_t position,
                      int T, const std::vector<float>& normed, std::vector<float>& out);
  void Observe(std::string_view name, const std::vector<float>& values, int T, int width) const;

  loader::ModelConfig config_;
  CpuWeights weights_;
  CpuNumerics numerics_;
  StateLayout layout_;
  std::vector<int> block_index_;  // per layer: its index among recurrent or attention layers
  std::vector<float> pool_;       // num_slots x layout_.slot_bytes() / 4 floats
  std::vector<int64_t> next_position_;
  IntermediateObserver observer_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CPU_BACKEND_H_
