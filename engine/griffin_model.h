// The Griffin-family architecture (RecurrentGemma, Griffin, Hawk) as data: the tensors a checkpoint
// must hold, the parameter count, and the size of one sequence's decode state. The forward pass
// itself is written top-down in CpuBackend::ForwardEntry (engine/cpu_backend.cc), the reference
// every other backend is tested against.
//
// Layer l (SPEC.md §2.2):  h = x + Temporal_l(RMSNorm(x));  x' = h + GeGLU_l(RMSNorm(h))
// where Temporal_l is an RG-LRU recurrent block or a local MQA attention block, per block_types.
#ifndef GRIFFIN_ENGINE_GRIFFIN_MODEL_H_
#define GRIFFIN_ENGINE_GRIFFIN_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "loader/checkpoint.h"
#include "loader/model_config.h"

namespace griffin::engine {

using loader::BlockType;
using loader::ModelConfig;

// The published shapes (SPEC.md §1.1): recurrentgemma-2b and -9b, pattern (R, R, A) cycled.
ModelConfig RecurrentGemma2B();
ModelConfig RecurrentGemma9B();

// Hugging Face tensor names of layer `layer` (SPEC.md §4.3), e.g. LayerTensorName(3, "mlp_block.up_proj.weight").
std::string LayerTensorName(int layer, const std::string& suffix);

// Every tensor of the model with its exact shape, in checkpoint naming. `lm_head.weight` is listed
// as optional (tied to the embedding when absent).
std::vector<loader::TensorSpec> GriffinTensorSpecs(const ModelConfig& config);

// Distinct parameters, counting a tied output projection once (2,682,862,080 for recurrentgemma-2b).
int64_t GriffinParameterCount(const ModelConfig& config);

// The embedding multiplier: bf16(sqrt(hidden_size)) as in the reference ("to match training";
// 50.5 for width 2560), or 1 when embeddings_scale_by_sqrt_dim is false.
float EmbeddingScale(const ModelConfig& config);

// Bytes of one sequence's decode state. It does not depend on the sequence's length.
struct StateSize {
  int64_t lru_bytes = 0;    // RG-LRU hidden state, float32, [recurrent layers, lru_width]
  int64_t conv_bytes = 0;   // conv tail, [recurrent layers, conv1d_width - 1, lru_width]
  int64_t kv_bytes = 0;     // K and V rings, [attention layers, 2, window, kv_heads, head_dim]
  int64_t total() const { return lru_bytes + conv_bytes + kv_bytes; }
};
// `activation_bytes`: bytes per element of the conv tail and KV ring (2 for bf16 on the GPU,
// 4 for the float32 CPU backend). The RG-LRU state is always float32 (SPEC.md §3).
StateSize ComputeStateSize(const ModelConfig& config, int activation_bytes);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_GRIFFIN_MODEL_H_
