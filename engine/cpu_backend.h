// The CPU backend: the model in plain float32, whatever the checkpoint's dtype. It is the readable
// reference the CUDA backend and every kernel are checked against, and it serves small models
// (the demo model, tests) on machines without a GPU.
#ifndef GRIFFIN_ENGINE_CPU_BACKEND_H_
#define GRIFFIN_ENGINE_CPU_BACKEND_H_

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

// Float32 copies of the weights, in checkpoint layout ([out, in] for linears).
struct CpuLayerWeights {
  BlockType type = BlockType::kRecurrent;
  std::vector<float> temporal_norm, channel_norm;
  std::vector<float> gate_w, gate_b, up_w, up_b, down_w, down_b;  // GeGLU MLP
  // Recurrent block.
  std::vector<float> x_w, x_b, y_w, y_b, out_w, out_b, conv_w, conv_b;
  std::vector<float> a_param, input_gate_w, input_gate_b, a_gate_w, a_gate_b;
  // Attention block.
  std::vector<float> q_w, k_w, v_w, o_w, o_b;
};

struct CpuWeights {
  std::vector<float> embedding;  // [vocab, d]
  std::vector<float> lm_head;    // [vocab, d]; empty when tied to the embedding
  std::vector<float> final_norm;
  std::vector<CpuLayerWeights> layers;
};

// What the CPU backend computes in.
enum class CpuNumerics {
  kFloat32,   // everything float32: the reference (SPEC.md §8.4)
  // float32, except that every matrix (weights of the linears, embedding, head) and every GEMM
  // input is rounded to bfloat16, as the CUDA backend's GEMMs see them. It predicts the error the
  // GPU's bf16 path cannot avoid, to tell kernel bugs from rounding (tests/golden_test.cc).
  kEmulateBf16Gemm,
};

// Validates the checkpoint against GriffinTensorSpecs (FAILED_PRECONDITION naming the tensor, LDR-2)
// and widens every tensor to float32 (rounding matrices to bf16 under kEmulateBf16Gemm).
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
  int num_slots() const override { return static_cast<int>(slots_.size()); }
  int64_t state_bytes_per_sequence() const override;
  absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) override;
  absl::Status ResetSlot(int slot) override;
  int64_t NextPosition(int slot) const override;

  void set_intermediate_observer(IntermediateObserver observer) { observer_ = std::move(observer); }

 private:
  struct SlotState {
    std::vector<float> lru;   // [recurrent layers, L]
    std::vector<float> conv;  // [recurrent layers, K-1, L]
    std::vector<float> keys;  // [attention layers, W, kv_heads, head_dim], post-RoPE
    std::vector<float> values;
    int64_t next_position = 0;
  };

  CpuBackend(const loader::ModelConfig& config, CpuWeights weights, int num_slots,
             CpuNumerics numerics);
  // cpu::Linear, with the input rounded to bf16 first under kEmulateBf16Gemm.
  void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
              int T, int in, int out, absl::Span<float> y) const;
  void ZeroSlot(SlotState& slot);
  // The forward pass of one sequence's run. Writes `rows` logits rows: the last position's, or
  // every position's when all_positions is set.
  void ForwardEntry(const StepEntry& entry, bool all_positions, float* logits);
  void AttentionBlock(const CpuLayerWeights& w, int attention_index, SlotState& slot,
                      int64_t position, int T, const std::vector<float>& normed,
                      std::vector<float>& out);
  void RecurrentBlock(const CpuLayerWeights& w, int recurrent_index, SlotState& slot,
                      int64_t position, int T, const std::vector<float>& normed,
                      std::vector<float>& out);
  void Observe(std::string_view name, const std::vector<float>& values, int T, int width) const;

  loader::ModelConfig config_;
  CpuWeights weights_;
  CpuNumerics numerics_;
  std::vector<int> layer_index_;  // per layer: its index among recurrent or attention layers
  std::vector<SlotState> slots_;
  IntermediateObserver observer_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CPU_BACKEND_H_
