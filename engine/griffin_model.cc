#include "engine/griffin_model.h"

#include <cmath>

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

std::string LayerTensorName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::vector<loader::TensorSpec> GriffinTensorSpecs(const ModelConfig& c) {
  const int64_t d = c.hidden_size, m = c.mlp_width, L = c.lru_width, H = c.num_heads;
  const int64_t block = L / H, hd = c.head_dim, q_width = H * hd, kv_width = c.num_kv_heads * hd;
  std::vector<loader::TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  specs.push_back({"lm_head.weight", {c.vocab_size, d}, /*optional=*/true});
  specs.push_back({"model.final_norm.weight", {d}});
  for (int l = 0; l < c.num_layers; ++l) {
    auto add = [&](const std::string& suffix, std::vector<int64_t> shape) {
      specs.push_back({LayerTensorName(l, suffix), std::move(shape)});
    };
    add("temporal_pre_norm.weight", {d});
    add("channel_pre_norm.weight", {d});
    add("mlp_block.gate_proj.weight", {m, d});
    add("mlp_block.gate_proj.bias", {m});
    add("mlp_block.up_proj.weight", {m, d});
    add("mlp_block.up_proj.bias", {m});
    add("mlp_block.down_proj.weight", {d, m});
    add("mlp_block.down_proj.bias", {d});
    if (c.block_types[l] == BlockType::kRecurrent) {
      add("temporal_block.linear_x.weight", {L, d});
      add("temporal_block.linear_x.bias", {L});
      add("temporal_block.linear_y.weight", {L, d});
      add("temporal_block.linear_y.bias", {L});
      add("temporal_block.linear_out.weight", {d, L});
      add("temporal_block.linear_out.bias", {d});
      add("temporal_block.conv_1d.weight", {L, 1, c.conv1d_width});
      add("temporal_block.conv_1d.bias", {L});
      add("temporal_block.rg_lru.recurrent_param", {L});
      add("temporal_block.rg_lru.input_gate_weight", {H, block, block});
      add("temporal_block.rg_lru.input_gate_bias", {H, block});
      add("temporal_block.rg_lru.recurrent_gate_weight", {H, block, block});
      add("temporal_block.rg_lru.recurrent_gate_bias", {H, block});
    } else {
      add("temporal_block.q_proj.weight", {q_width, d});
      add("temporal_block.k_proj.weight", {kv_width, d});
      add("temporal_block.v_proj.weight", {kv_width, d});
      add("temporal_block.o_proj.weight", {d, q_width});
      add("temporal_block.o_proj.bias", {d});
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

float EmbeddingScale(const ModelConfig& config) {
  if (!config.embeddings_scale_by_sqrt_dim) return 1.0f;
  return RoundToBf16(std::sqrt(static_cast<float>(config.hidden_size)));
}

StateSize ComputeStateSize(const ModelConfig& c, int activation_bytes) {
  StateSize s;
  const int64_t rec = c.num_recurrent_layers(), attn = c.num_attention_layers();
  s.lru_bytes = rec * c.lru_width * 4;
  s.conv_bytes = rec * (c.conv1d_width - 1) * int64_t{c.lru_width} * activation_bytes;
  s.kv_bytes = attn * 2 * int64_t{c.attention_window} * c.num_kv_heads * c.head_dim *
               activation_bytes;
  return s;
}

}  // namespace griffin::engine
