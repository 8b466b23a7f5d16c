#include "engine/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "base/status_macros.h"
#include "engine/griffin_model.h"
#include "nlohmann/json.hpp"

namespace griffin::engine {

loader::ModelConfig TinyConfig(std::vector<loader::BlockType> pattern, int num_layers, int window) {
  loader::ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.mlp_width = 48;
  c.num_layers = num_layers;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.lru_width = 40;
  c.attention_window = window;
  c.torch_dtype = "float32";
  for (int l = 0; l < num_layers; ++l) c.block_types.push_back(pattern[l % pattern.size()]);
  return c;
}

std::string ConfigJson(const loader::ModelConfig& c) {
  // The pattern is written out in full (a cycle of length num_layers).
  nlohmann::json types = nlohmann::json::array();
  for (loader::BlockType t : c.block_types) types.push_back(std::string(loader::BlockTypeName(t)));
  nlohmann::json j = {
      {"architectures", {"RecurrentGemmaForCausalLM"}},
      {"model_type", "recurrent_gemma"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", 2 * c.mlp_width},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"lru_width", c.lru_width},
      {"attention_window_size", c.attention_window},
      {"conv1d_width", c.conv1d_width},
      {"logits_soft_cap", c.logits_soft_cap},
      {"partial_rotary_factor", c.partial_rotary_factor},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"embeddings_scale_by_sqrt_dim", c.embeddings_scale_by_sqrt_dim},
      {"hidden_activation", "gelu_pytorch_tanh"},
      {"attention_bias", false},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"pad_token_id", c.pad_token_id},
      {"eos_token_id", c.eos_token_id},
      {"bos_token_id", c.bos_token_id},
      {"torch_dtype", c.torch_dtype.empty() ? "float32" : c.torch_dtype},
      {"block_types", types},
      {"_block_types", types},
  };
  return j.dump(2);
}

absl::Status WriteRandomCheckpoint(const std::string& dir, const loader::ModelConfig& config,
                                   uint64_t seed, loader::DType dtype) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir));
  std::mt19937_64 rng(seed);
  std::vector<loader::TensorToWrite> tensors;
  // Draws one tensor per the model description's init for its kind, in checkpoint order.
  auto add = [&](const std::string& name, TensorKind kind,
                 std::vector<int64_t> shape) -> absl::Status {
    int64_t n = 1;
    for (int64_t dim : shape) n *= dim;
    std::vector<float> values(n);
    if (kind == TensorKind::kLruParam) {
      // Exactly the paper's init rather than RandomInit's normal: a spread over [0.9, 0.999] at
      // gate 1/2, i.e. softplus(a_param) = -ln(a) / 4.
      std::uniform_real_distribution<double> dist(0.9, 0.999);
      for (float& v : values) {
        const double sp = -std::log(dist(rng)) / 4.0;
        v = static_cast<float>(std::log(std::expm1(sp)));
      }
    } else {
      const InitDistribution init = RandomInit(kind, shape, config);
      std::normal_distribution<float> dist(init.mean, init.stddev);
      for (float& v : values) v = dist(rng);
    }
    loader::TensorToWrite t{.name = name, .dtype = dtype, .shape = std::move(shape)};
    if (dtype == loader::DType::kF32) {
      t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    } else if (dtype == loader::DType::kBF16) {
      t.bytes.resize(values.size() * 2);
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t b = FloatToBf16(values[i]);
        std::memcpy(&t.bytes[i * 2], &b, 2);
      }
    } else {
      return absl::InvalidArgumentError("WriteRandomCheckpoint writes F32 or BF16");
    }
    tensors.push_back(std::move(t));
    return absl::OkStatus();
  };
  for (const ModelTensorDef& def : ModelTensorDefs()) {
    if (!def.optional) RETURN_IF_ERROR(add(def.name, def.kind, def.shape(config)));
  }
  for (int l = 0; l < config.num_layers; ++l) {
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (LayerHas(config, l, def))
        RETURN_IF_ERROR(add(TensorName(l, def.id), def.kind, def.shape(config)));
    }
  }
  RETURN_IF_ERROR(loader::WriteSafetensors(dir + "/model.safetensors", tensors));
  std::ofstream config_file(dir + "/config.json");
  config_file << ConfigJson(config);
  if (!config_file) return absl::InternalError(absl::StrCat("cannot write ", dir, "/config.json"));
  return absl::OkStatus();
}

}  // namespace griffin::engine
