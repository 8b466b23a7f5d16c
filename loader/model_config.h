// The hyper-parameters of a Griffin-family model, parsed from a Hugging Face RecurrentGemma
// config.json (SPEC.md §1.2 and §8.3).
#ifndef GRIFFIN_LOADER_MODEL_CONFIG_H_
#define GRIFFIN_LOADER_MODEL_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace griffin::loader {

enum class BlockType { kRecurrent, kAttention };

struct ModelConfig {
  std::string model_type = "recurrent_gemma";
  int vocab_size = 256000;
  int hidden_size = 2560;  // d
  int mlp_width = 7680;    // per GeGLU branch = HF intermediate_size / 2
  int num_layers = 26;
  int num_heads = 10;  // attention heads and RG-LRU gate blocks
  int num_kv_heads = 1;
  int head_dim = 256;
  int lru_width = 2560;         // L, may differ from hidden_size
  int attention_window = 2048;  // a query sees itself and this many earlier tokens
  int conv1d_width = 4;
  float logits_soft_cap = 30.0f;  // 0 = no cap
  float partial_rotary_factor = 0.5f;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-6f;
  bool embeddings_scale_by_sqrt_dim = true;
  bool tie_word_embeddings = true;
  int pad_token_id = 0;
  int eos_token_id = 1;
  int bos_token_id = 2;
  std::string torch_dtype;  // informational ("float32", "bfloat16", ...)
  // One entry per layer: the configured pattern cycled over num_layers.
  std::vector<BlockType> block_types;

  int rotary_dim() const;  // head_dim * partial_rotary_factor
  int num_recurrent_layers() const;
  int num_attention_layers() const;
};

// Parses config.json text. INVALID_ARGUMENT naming the field for a missing, mistyped or
// out-of-range value; FAILED_PRECONDITION for a valid value the engine cannot run (an activation
// other than tanh-GELU, attention biases, heads that do not divide the widths).
// Fields absent from the file take the Hugging Face class defaults (SPEC.md §1.2).
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text);

// Reads and parses `path` (a config.json file).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

std::string_view BlockTypeName(BlockType type);

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_MODEL_CONFIG_H_
