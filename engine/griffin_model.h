// The Griffin-family architecture (RecurrentGemma, Griffin, Hawk) as data: one table of every
// tensor a checkpoint holds, from which the checkpoint specs, the CPU backend's loading, the CUDA
// backend's upload and fusion, and random (dummy) weights are all generated. Adding a tensor, or a
// second on-device format for a tensor, is one edit of the table in griffin_model.cc.
//
// The forward pass itself is written top-down in CpuBackend::ForwardEntry (engine/cpu_backend.cc),
// the reference every other backend is tested against:
// Layer l (SPEC.md §2.2):  h = x + Temporal_l(RMSNorm(x));  x' = h + GeGLU_l(RMSNorm(h))
// where Temporal_l is an RG-LRU recurrent block or a local MQA attention block, per block_types.
#ifndef GRIFFIN_ENGINE_GRIFFIN_MODEL_H_
#define GRIFFIN_ENGINE_GRIFFIN_MODEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "loader/checkpoint.h"
#include "loader/model_config.h"

namespace griffin::engine {

using loader::BlockType;
using loader::ModelConfig;

// The published shapes (SPEC.md §1.1): recurrentgemma-2b and -9b, pattern (R, R, A) cycled.
ModelConfig RecurrentGemma2B();
ModelConfig RecurrentGemma9B();

// Every tensor of one layer. Which of them a layer has depends on its block type (LayerScope).
enum class LayerTensor : int {
  kTemporalNorm,
  kChannelNorm,
  // GeGLU MLP (every layer).
  kGateProj,
  kGateBias,
  kUpProj,
  kUpBias,
  kDownProj,
  kDownBias,
  // Recurrent block.
  kLinearX,
  kLinearXBias,
  kLinearY,
  kLinearYBias,
  kLinearOut,
  kLinearOutBias,
  kConvTaps,
  kConvBias,
  kLruParam,
  kInputGate,
  kInputGateBias,
  kRecurrentGate,
  kRecurrentGateBias,
  // Local attention block.
  kQProj,
  kKProj,
  kVProj,
  kOProj,
  kOProjBias,
  kCount,
};
inline constexpr int kNumLayerTensors = static_cast<int>(LayerTensor::kCount);

// The tensors outside the layers.
enum class ModelTensor : int { kEmbedding, kLmHead, kFinalNorm, kCount };
inline constexpr int kNumModelTensors = static_cast<int>(ModelTensor::kCount);

enum class LayerScope { kEveryLayer, kRecurrent, kAttention };

// What a tensor is, which decides how random weights are drawn for it.
enum class TensorKind {
  kEmbedding,  // N(0, 1/width)
  kMatrix,  // a linear's [out, in] weight (or the block-diagonal gates, conv taps): N(0, 1/fan_in)
  kNormScale,  // zero-centred RMSNorm scale: N(0, 0.1^2)
  kBias,       // N(0, 0.05^2)
  kLruParam,   // RG-LRU a_param: a = exp(-8 softplus(a_param) / 2) spread over [0.9, 0.999]
};

// How the CUDA backend stores a tensor: matrices in bf16 (what the GEMMs read), everything small
// (norm scales, biases, conv taps, a_param: 0.1% of the bytes) in float32.
enum class DeviceFormat { kBf16, kFloat32 };

// Projections the CUDA backend concatenates along the output dimension so one GEMM computes them
// all (members in fusion_index order, the first at the group's start).
enum class Fusion { kNone, kGateUp, kXY, kQKV };

using ShapeFn = std::vector<int64_t> (*)(const ModelConfig&);

struct LayerTensorDef {
  LayerTensor id;
  const char* suffix;  // checkpoint name after "model.layers.<l>." (SPEC.md §4.3)
  LayerScope scope;
  TensorKind kind;
  ShapeFn shape;
  DeviceFormat device_format;
  Fusion fusion;
  int fusion_index;
  // A projection whose weights may be stored as FP8 E4M3 with one scale per output row
  // (--quantization fp8, issue 14); not the RG-LRU gate blocks, the conv taps or anything small.
  bool fp8_weights = false;
};

struct ModelTensorDef {
  ModelTensor id;
  const char* name;
  TensorKind kind;
  ShapeFn shape;
  DeviceFormat device_format;
  bool optional;  // lm_head.weight: absent when tied to the embedding
};

// The tables, in checkpoint order (the order random checkpoints are drawn in).
absl::Span<const LayerTensorDef> LayerTensorDefs();
absl::Span<const ModelTensorDef> ModelTensorDefs();
const LayerTensorDef& Def(LayerTensor id);
const ModelTensorDef& Def(ModelTensor id);

// Whether layer `layer` of `config` holds tensor `def`.
bool LayerHas(const ModelConfig& config, int layer, const LayerTensorDef& def);

// The checkpoint name of a layer tensor, e.g. "model.layers.3.mlp_block.up_proj.weight".
std::string TensorName(int layer, LayerTensor id);

// The members of a fusion group in order, and the group's output width (sum of the members' rows).
std::vector<LayerTensor> FusionMembers(Fusion group);
int64_t FusionRows(const ModelConfig& config, Fusion group);

// Random-weight distribution of a tensor of `kind` and `shape` (mean and standard deviation of the
// normal the CUDA backend draws from; the CPU checkpoint writer draws a_param exactly instead).
struct InitDistribution {
  float mean = 0.0f;
  float stddev = 0.0f;
};
InitDistribution RandomInit(TensorKind kind, absl::Span<const int64_t> shape,
                            const ModelConfig& config);

// Every tensor of the model with its exact shape, in checkpoint naming. `lm_head.weight` is listed
// as optional (tied to the embedding when absent).
std::vector<loader::TensorSpec> GriffinTensorSpecs(const ModelConfig& config);

// Distinct parameters, counting a tied output projection once (2,682,862,080 for recurrentgemma-2b).
int64_t GriffinParameterCount(const ModelConfig& config);

// Bytes of the weights in their on-device formats (DeviceFormat; a tied output projection once),
// with `fp8_projections` the projections (LayerTensorDef::fp8_weights) as FP8 bytes plus one
// float32 scale per output row: what --quantization fp8 stores. 5.37 GB bf16 for 2B shapes.
int64_t DeviceWeightBytes(const ModelConfig& config, bool fp8_projections);

// The embedding multiplier: bf16(sqrt(hidden_size)) as in the reference ("to match training";
// 50.5 for width 2560), or 1 when embeddings_scale_by_sqrt_dim is false.
float EmbeddingScale(const ModelConfig& config);

// Per layer, its index among the layers of its own block type (the state layout is indexed so).
std::vector<int> BlockIndices(const ModelConfig& config);

// A 64-bit fingerprint of a checkpoint: its config, every tensor's name, dtype and shape, and
// 64-byte samples at eight offsets of each tensor's data. Prefix-cache keys and saved sessions
// carry it, so a state is never restored into another model. Reads a few KB, not the weights.
uint64_t ModelIdentity(const loader::Checkpoint& checkpoint);
// The same for random (dummy) weights: the config and the seed.
uint64_t ModelIdentity(const ModelConfig& config, uint64_t random_seed);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_GRIFFIN_MODEL_H_
