#include "engine/griffin_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"

namespace griffin::engine {

namespace {
ModelConfig WithGriffinPattern(ModelConfig c) {
  c.block_types.clear();
  for (int l = 0; l < c.num_layers; ++l) {
    c.block_types.push_back(l % 3 == 2 ? BlockType::kAttention : BlockType::kRecurrent);
  }
  return c;
}

// Shapes as functions of the config: d = width, m = GeGLU branch width, L = lru width,
// H = heads (also RG-LRU gate blocks of B = L / H), hd = head_dim, KV = kv heads, K = conv width.
std::vector<int64_t> Width(const ModelConfig& c) { return {c.hidden_size}; }
std::vector<int64_t> MlpIn(const ModelConfig& c) { return {c.mlp_width, c.hidden_size}; }
std::vector<int64_t> MlpBias(const ModelConfig& c) { return {c.mlp_width}; }
std::vector<int64_t> MlpOut(const ModelConfig& c) { return {c.hidden_size, c.mlp_width}; }
std::vector<int64_t> LruIn(const ModelConfig& c) { return {c.lru_width, c.hidden_size}; }
std::vector<int64_t> LruVector(const ModelConfig& c) { return {c.lru_width}; }
std::vector<int64_t> LruOut(const ModelConfig& c) { return {c.hidden_size, c.lru_width}; }
std::vector<int64_t> ConvTaps(const ModelConfig& c) { return {c.lru_width, 1, c.conv1d_width}; }
std::vector<int64_t> GateBlocks(const ModelConfig& c) {
  const int64_t block = c.lru_width / c.num_heads;
  return {c.num_heads, block, block};
}
std::vector<int64_t> GateBias(const ModelConfig& c) {
  return {c.num_heads, c.lru_width / c.num_heads};
}
std::vector<int64_t> QProj(const ModelConfig& c) {
  return {int64_t{c.num_heads} * c.head_dim, c.hidden_size};
}
std::vector<int64_t> KvProj(const ModelConfig& c) {
  return {int64_t{c.num_kv_heads} * c.head_dim, c.hidden_size};
}
std::vector<int64_t> OProj(const ModelConfig& c) {
  return {c.hidden_size, int64_t{c.num_heads} * c.head_dim};
}
std::vector<int64_t> Vocab(const ModelConfig& c) { return {c.vocab_size, c.hidden_size}; }

using K = TensorKind;
using F = DeviceFormat;
using S = LayerScope;
using T = LayerTensor;

// THE architecture. Checkpoint order (SPEC.md §4.3); random checkpoints are drawn in this order.
constexpr LayerTensorDef kLayerTensors[] = {
    {T::kTemporalNorm, "temporal_pre_norm.weight", S::kEveryLayer, K::kNormScale, Width,
     F::kFloat32, Fusion::kNone, 0},
    {T::kChannelNorm, "channel_pre_norm.weight", S::kEveryLayer, K::kNormScale, Width, F::kFloat32,
     Fusion::kNone, 0},
    {T::kGateProj, "mlp_block.gate_proj.weight", S::kEveryLayer, K::kMatrix, MlpIn, F::kBf16,
     Fusion::kGateUp, 0, true},
    {T::kGateBias, "mlp_block.gate_proj.bias", S::kEveryLayer, K::kBias, MlpBias, F::kFloat32,
     Fusion::kNone, 0},
    {T::kUpProj, "mlp_block.up_proj.weight", S::kEveryLayer, K::kMatrix, MlpIn, F::kBf16,
     Fusion::kGateUp, 1, true},
    {T::kUpBias, "mlp_block.up_proj.bias", S::kEveryLayer, K::kBias, MlpBias, F::kFloat32,
     Fusion::kNone, 0},
    {T::kDownProj, "mlp_block.down_proj.weight", S::kEveryLayer, K::kMatrix, MlpOut, F::kBf16,
     Fusion::kNone, 0, true},
    {T::kDownBias, "mlp_block.down_proj.bias", S::kEveryLayer, K::kBias, Width, F::kFloat32,
     Fusion::kNone, 0},
    {T::kLinearX, "temporal_block.linear_x.weight", S::kRecurrent, K::kMatrix, LruIn, F::kBf16,
     Fusion::kXY, 0, true},
    {T::kLinearXBias, "temporal_block.linear_x.bias", S::kRecurrent, K::kBias, LruVector,
     F::kFloat32, Fusion::kNone, 0},
    {T::kLinearY, "temporal_block.linear_y.weight", S::kRecurrent, K::kMatrix, LruIn, F::kBf16,
     Fusion::kXY, 1, true},
    {T::kLinearYBias, "temporal_block.linear_y.bias", S::kRecurrent, K::kBias, LruVector,
     F::kFloat32, Fusion::kNone, 0},
    {T::kLinearOut, "temporal_block.linear_out.weight", S::kRecurrent, K::kMatrix, LruOut, F::kBf16,
     Fusion::kNone, 0, true},
    {T::kLinearOutBias, "temporal_block.linear_out.bias", S::kRecurrent, K::kBias, Width,
     F::kFloat32, Fusion::kNone, 0},
    {T::kConvTaps, "temporal_block.conv_1d.weight", S::kRecurrent, K::kMatrix, ConvTaps,
     F::kFloat32, Fusion::kNone, 0},
    {T::kConvBias, "temporal_block.conv_1d.bias", S::kRecurrent, K::kBias, LruVector, F::kFloat32,
     Fusion::kNone, 0},
    {T::kLruParam, "temporal_block.rg_lru.recurrent_param", S::kRecurrent, K::kLruParam, LruVector,
     F::kFloat32, Fusion::kNone, 0},
    {T::kInputGate, "temporal_block.rg_lru.input_gate_weight", S::kRecurrent, K::kMatrix,
     GateBlocks, F::kBf16, Fusion::kNone, 0},
    {T::kInputGateBias, "temporal_block.rg_lru.input_gate_bias", S::kRecurrent, K::kBias, GateBias,
     F::kFloat32, Fusion::kNone, 0},
    {T::kRecurrentGate, "temporal_block.rg_lru.recurrent_gate_weight", S::kRecurrent, K::kMatrix,
     GateBlocks, F::kBf16, Fusion::kNone, 0},
    {T::kRecurrentGateBias, "temporal_block.rg_lru.recurrent_gate_bias", S::kRecurrent, K::kBias,
     GateBias, F::kFloat32, Fusion::kNone, 0},
    {T::kQProj, "temporal_block.q_proj.weight", S::kAttention, K::kMatrix, QProj, F::kBf16,
     Fusion::kQKV, 0, true},
    {T::kKProj, "temporal_block.k_proj.weight", S::kAttention, K::kMatrix, KvProj, F::kBf16,
     Fusion::kQKV, 1, true},
    {T::kVProj, "temporal_block.v_proj.weight", S::kAttention, K::kMatrix, KvProj, F::kBf16,
     Fusion::kQKV, 2, true},
    {T::kOProj, "temporal_block.o_proj.weight", S::kAttention, K::kMatrix, OProj, F::kBf16,
     Fusion::kNone, 0, true},
    {T::kOProjBias, "temporal_block.o_proj.bias", S::kAttention, K::kBias, Width, F::kFloat32,
     Fusion::kNone, 0},
};
static_assert(std::size(kLayerTensors) == kNumLayerTensors, "one row per LayerTensor");

constexpr ModelTensorDef kModelTensors[] = {
    {ModelTensor::kEmbedding, "model.embed_tokens.weight", K::kEmbedding, Vocab, F::kBf16, false},
    {ModelTensor::kLmHead, "lm_head.weight", K::kEmbedding, Vocab, F::kBf16, true},
    {ModelTensor::kFinalNorm, "model.final_norm.weight", K::kNormScale, Width, F::kFloat32, false},
};
static_assert(std::size(kModelTensors) == kNumModelTensors, "one row per ModelTensor");

// Def(id) indexes the tables by enum value.
constexpr bool TablesInEnumOrder() {
  for (int i = 0; i < kNumLayerTensors; ++i) {
    if (static_cast<int>(kLayerTensors[i].id) != i) return false;
  }
  for (int i = 0; i < kNumModelTensors; ++i) {
    if (static_cast<int>(kModelTensors[i].id) != i) return false;
  }
  return true;
}
static_assert(TablesInEnumOrder(), "table rows must follow the enum order");

}  // namespace

ModelConfig RecurrentGemma2B() {
  ModelConfig c;
  c.vocab_size = 256000;
  c.hidden_size = 2560;
  c.mlp_width = 7680;
  c.num_layers = 26;
  c.num_heads = 10;
  c.num_kv_heads = 1;
  c.head_dim = 256;
  c.lru_width = 2560;
  c.attention_window = 2048;
  return WithGriffinPattern(c);
}

ModelConfig RecurrentGemma9B() {
  ModelConfig c = RecurrentGemma2B();
  c.hidden_size = 4096;
  c.mlp_width = 12288;
  c.num_layers = 38;
  c.num_heads = 16;
  c.lru_width = 4096;
  return WithGriffinPattern(c);
}

absl::Span<const LayerTensorDef> LayerTensorDefs() { return kLayerTensors; }
absl::Span<const ModelTensorDef> ModelTensorDefs() { return kModelTensors; }

const LayerTensorDef& Def(LayerTensor id) { return kLayerTensors[static_cast<int>(id)]; }
const ModelTensorDef& Def(ModelTensor id) { return kModelTensors[static_cast<int>(id)]; }

bool LayerHas(const ModelConfig& config, int layer, const LayerTensorDef& def) {
  switch (def.scope) {
    case LayerScope::kEveryLayer:
      return true;
    case LayerScope::kRecurrent:
      return config.block_types[layer] == BlockType::kRecurrent;
    case LayerScope::kAttention:
      return config.block_types[layer] == BlockType::kAttention;
  }
  return false;
}

std::string TensorName(int layer, LayerTensor id) {
  return absl::StrCat("model.layers.", layer, ".", Def(id).suffix);
}

std::vector<LayerTensor> FusionMembers(Fusion group) {
  std::vector<LayerTensor> members;
  if (group == Fusion::kNone) return members;
  for (const LayerTensorDef& def : kLayerTensors) {
    if (def.fusion != group) continue;
    if (members.size() <= static_cast<size_t>(def.fusion_index)) {
      members.resize(def.fusion_index + 1, LayerTensor::kCount);
    }
    members[def.fusion_index] = def.id;
  }
  return members;
}

int64_t FusionRows(const ModelConfig& config, Fusion group) {
  int64_t rows = 0;
  for (LayerTensor member : FusionMembers(group)) rows += Def(member).shape(config)[0];
  return rows;
}

InitDistribution RandomInit(TensorKind kind, absl::Span<const int64_t> shape,
                            const ModelConfig& config) {
  switch (kind) {
    case TensorKind::kEmbedding:
      return {0.0f, 1.0f / std::sqrt(static_cast<float>(config.hidden_size))};
    case TensorKind::kMatrix:
      return {0.0f, 1.0f / std::sqrt(static_cast<float>(shape.back()))};
    case TensorKind::kNormScale:
      return {0.0f, 0.1f};
    case TensorKind::kBias:
      return {0.0f, 0.05f};
    case TensorKind::kLruParam:
      // softplus(-4.3 +- 0.5) at gate 1/2 puts a = exp(-4 softplus) near 0.95 (0.9..0.99).
      return {-4.3f, 0.5f};
  }
  return {};
}

std::vector<loader::TensorSpec> GriffinTensorSpecs(const ModelConfig& c) {
  std::vector<loader::TensorSpec> specs;
  for (const ModelTensorDef& def : kModelTensors) {
    specs.push_back({def.name, def.shape(c), def.optional});
  }
  for (int l = 0; l < c.num_layers; ++l) {
    for (const LayerTensorDef& def : kLayerTensors) {
      if (LayerHas(c, l, def)) specs.push_back({TensorName(l, def.id), def.shape(c)});
    }
  }
  return specs;
}

int64_t GriffinParameterCount(const ModelConfig& config) {
  int64_t total = 0;
  for (const loader::TensorSpec& spec : GriffinTensorSpecs(config)) {
    if (spec.optional) continue;  // a stored lm_head copy adds no distinct parameters
    int64_t n = 1;
    for (int64_t dim : spec.shape) n *= dim;
    total += n;
  }
  return total;
}

int64_t DeviceWeightBytes(const ModelConfig& config, bool fp8_projections) {
  auto elements = [&](ShapeFn shape) {
    int64_t n = 1;
    for (int64_t dim : shape(config)) n *= dim;
    return n;
  };
  auto bytes_per = [](DeviceFormat format) { return format == DeviceFormat::kBf16 ? 2 : 4; };
  int64_t total = 0;
  for (const ModelTensorDef& def : ModelTensorDefs()) {
    if (!def.optional) total += elements(def.shape) * bytes_per(def.device_format);
  }
  for (int l = 0; l < config.num_layers; ++l) {
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (!LayerHas(config, l, def)) continue;
      if (fp8_projections && def.fp8_weights) {
        total += elements(def.shape) + 4 * def.shape(config).front();  // codes + row scales
      } else {
        total += elements(def.shape) * bytes_per(def.device_format);
      }
    }
  }
  return total;
}

float EmbeddingScale(const ModelConfig& config) {
  if (!config.embeddings_scale_by_sqrt_dim) return 1.0f;
  return RoundToBf16(std::sqrt(static_cast<float>(config.hidden_size)));
}

namespace {
uint64_t Mix(uint64_t h, uint64_t v) {
  uint64_t x = h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t MixBytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = Mix(h, p[i]);
  return h;
}
uint64_t MixConfig(uint64_t h, const ModelConfig& c) {
  for (int64_t v :
       {int64_t{c.vocab_size}, int64_t{c.hidden_size}, int64_t{c.mlp_width}, int64_t{c.num_layers},
        int64_t{c.num_heads}, int64_t{c.num_kv_heads}, int64_t{c.head_dim}, int64_t{c.lru_width},
        int64_t{c.attention_window}, int64_t{c.conv1d_width}}) {
    h = Mix(h, static_cast<uint64_t>(v));
  }
  for (float f : {c.logits_soft_cap, c.partial_rotary_factor, c.rope_theta, c.rms_norm_eps}) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    h = Mix(h, bits);
  }
  h = Mix(h, c.embeddings_scale_by_sqrt_dim);
  for (BlockType t : c.block_types) h = Mix(h, static_cast<uint64_t>(t));
  return h;
}
}  // namespace

uint64_t ModelIdentity(const loader::Checkpoint& checkpoint) {
  uint64_t h = MixConfig(0x6d6f64656c2121ull, checkpoint.config());
  std::vector<const loader::TensorView*> tensors = checkpoint.tensors();
  std::sort(
      tensors.begin(), tensors.end(),
      [](const loader::TensorView* a, const loader::TensorView* b) { return a->name < b->name; });
  for (const loader::TensorView* t : tensors) {
    h = MixBytes(h, t->name.data(), t->name.size());
    h = Mix(h, static_cast<uint64_t>(t->dtype));
    for (int64_t d : t->shape) h = Mix(h, static_cast<uint64_t>(d));
    const size_t sample = std::min<size_t>(64, t->nbytes);
    for (int k = 0; k < 8 && t->nbytes > 0; ++k) {
      const size_t at = (t->nbytes - sample) * k / 7;
      h = MixBytes(h, t->data + at, sample);
    }
  }
  return h;
}

uint64_t ModelIdentity(const ModelConfig& config, uint64_t random_seed) {
  return Mix(MixConfig(0x72616e646f6d21ull, config), random_seed);
}

std::vector<int> BlockIndices(const ModelConfig& config) {
  std::vector<int> index;
  int recurrent = 0, attention = 0;
  for (BlockType type : config.block_types) {
    index.push_back(type == BlockType::kRecurrent ? recurrent++ : attention++);
  }
  return index;
}

}  // namespace griffin::engine
