#include "loader/model_config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "loader/json_util.h"
#include "nlohmann/json.hpp"

namespace griffin::loader {
namespace {

using nlohmann::json;

// Upper bounds that keep every derived size (widths × vocab, window × head_dim × layers, ...)
// far from overflowing int64, and reject obviously corrupt configs before anything is allocated.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxWindow = int64_t{1} << 24;
constexpr int64_t kMaxConvWidth = 256;
constexpr size_t kMaxBlockPattern = 1024;
constexpr size_t kMaxConfigBytes = 16u << 20;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, " ", what));
}

absl::Status Unsupported(absl::string_view field, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat("config.json: ", field, " ", what));
}

// A present, non-null field or nullptr.
const json* Field(const json& root, const char* name) {
  const auto it = root.find(name);
  if (it == root.end() || it->is_null()) return nullptr;
  return &*it;
}

// Integer field in [min, max]; `fallback` when absent or null.
absl::StatusOr<int64_t> GetInt(const json& root, const char* name, int64_t fallback, int64_t min,
                               int64_t max) {
  const json* v = Field(root, name);
  if (v == nullptr) return fallback;
  int64_t value;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) {
      return Invalid(name, absl::StrCat("must be at most ", max));
    }
    value = static_cast<int64_t>(u);
  } else if (v->is_number_integer()) {
    value = v->get<int64_t>();
  } else if (v->is_number_float()) {
    // Some writers emit 2560.0; accept an exactly integral float.
    const double d = v->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || d < -9.0e15 || d > 9.0e15) {
      return Invalid(name, "must be an integer");
    }
    value = static_cast<int64_t>(d);
  } else {
    return Invalid(name, "must be an integer");
  }
  if (value < min || value > max) {
    return Invalid(name, absl::StrCat("must be in [", min, ", ", max, "], got ", value));
  }
  return value;
}

absl::StatusOr<double> GetFloat(const json& root, const char* name, double fallback) {
  const json* v = Field(root, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) return Invalid(name, "must be a number");
  const double d = v->get<double>();
  if (!std::isfinite(d)) return Invalid(name, "must be finite");
  return d;
}

absl::StatusOr<bool> GetBool(const json& root, const char* name, bool fallback) {
  const json* v = Field(root, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return Invalid(name, "must be true or false");
  return v->get<bool>();
}

// A token id: an integer, or a list whose first element is used (HF allows eos lists); null → -1.
absl::StatusOr<int64_t> GetTokenId(const json& root, const char* name, int64_t fallback) {
  const auto it = root.find(name);
  if (it == root.end()) return fallback;
  if (it->is_null()) return -1;
  const json* v = &*it;
  if (v->is_array()) {
    if (v->empty()) return Invalid(name, "must not be an empty list");
    v = &(*v)[0];
  }
  if (!v->is_number_integer()) return Invalid(name, "must be an integer token id");
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u >= static_cast<uint64_t>(kMaxVocab)) return Invalid(name, "is out of range");
    return static_cast<int64_t>(u);
  }
  const int64_t id = v->get<int64_t>();
  if (id < -1) return Invalid(name, "is out of range");
  return id;
}

// Reads `_block_types` / `block_types`: absent → nullopt.
absl::StatusOr<std::optional<std::vector<BlockType>>> GetBlockPattern(const json& root,
                                                                      const char* name) {
  const json* v = Field(root, name);
  if (v == nullptr) return std::optional<std::vector<BlockType>>();
  if (!v->is_array()) return Invalid(name, "must be a list of \"recurrent\" / \"attention\"");
  if (v->empty()) return Invalid(name, "must not be empty");
  if (v->size() > kMaxBlockPattern) {
    return Invalid(name, absl::StrCat("must have at most ", kMaxBlockPattern, " entries"));
  }
  std::vector<BlockType> pattern;
  pattern.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    if (e.is_string() && e.get_ref<const std::string&>() == "recurrent") {
      pattern.push_back(BlockType::kRecurrent);
    } else if (e.is_string() && e.get_ref<const std::string&>() == "attention") {
      pattern.push_back(BlockType::kAttention);
    } else {
      return Invalid(name, absl::StrCat("entry ", i, " must be \"recurrent\" or \"attention\""));
    }
  }
  return std::optional<std::vector<BlockType>>(std::move(pattern));
}

absl::StatusOr<ModelConfig> Parse(const json& root) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig c;

  if (const json* v = Field(root, "model_type"); v != nullptr) {
    if (!v->is_string()) return Invalid("model_type", "must be a string");
    if (v->get_ref<const std::string&>() != "recurrent_gemma") {
      return Unsupported("model_type", "is not \"recurrent_gemma\"");
    }
  }
  // A checkpoint published already quantized (Hugging Face's quantization_config: fp8,
  // compressed-tensors, ...) stores codes and scales in layouts this loader does not read; say so
  // before its tensors fail one by one on their dtype. --quantization fp8 quantizes a bf16, float16
  // or float32 checkpoint at load instead (issue 14).
  if (Field(root, "quantization_config") != nullptr) {
    return Unsupported("quantization_config",
                       "is set: pre-quantized checkpoints are not loaded; serve the bf16 (or "
                       "float) checkpoint with --quantization fp8 to hold its projections in FP8");
  }
  // Unsupported variants first: they are about the architecture, not the numbers.
  if (const json* v = Field(root, "hidden_activation"); v != nullptr) {
    if (!v->is_string()) return Invalid("hidden_activation", "must be a string");
    const std::string& act = v->get_ref<const std::string&>();
    if (act != "gelu_pytorch_tanh" && act != "gelu_tanh") {
      return Unsupported("hidden_activation",
                         "is not supported (only \"gelu_pytorch_tanh\" / \"gelu_tanh\")");
    }
  }
  ASSIGN_OR_RETURN(const bool attention_bias, GetBool(root, "attention_bias", false));
  if (attention_bias) return Unsupported("attention_bias", "= true is not supported");

  ASSIGN_OR_RETURN(const int64_t vocab, GetInt(root, "vocab_size", 256000, 1, kMaxVocab));
  ASSIGN_OR_RETURN(const int64_t hidden, GetInt(root, "hidden_size", 2560, 1, kMaxWidth));
  ASSIGN_OR_RETURN(const int64_t intermediate,
                   GetInt(root, "intermediate_size", 7680, 1, 2 * kMaxWidth));
  if (intermediate % 2 != 0) {
    return Invalid("intermediate_size", "must be even (it is twice the GeGLU branch width)");
  }
  ASSIGN_OR_RETURN(const int64_t layers, GetInt(root, "num_hidden_layers", 26, 1, kMaxLayers));
  ASSIGN_OR_RETURN(const int64_t heads, GetInt(root, "num_attention_heads", 10, 1, kMaxHeads));
  ASSIGN_OR_RETURN(const int64_t kv_heads,
                   GetInt(root, "num_key_value_heads", heads, 1, kMaxHeads));
  const bool has_head_dim = Field(root, "head_dim") != nullptr;
  if (!has_head_dim && hidden % heads != 0) {
    return Unsupported("num_attention_heads",
                       "does not divide hidden_size (and head_dim is unset)");
  }
  ASSIGN_OR_RETURN(const int64_t head_dim,
                   GetInt(root, "head_dim", hidden / heads, 1, kMaxHeadDim));
  ASSIGN_OR_RETURN(const int64_t lru_width, GetInt(root, "lru_width", hidden, 1, kMaxWidth));
  ASSIGN_OR_RETURN(const int64_t window,
                   GetInt(root, "attention_window_size", 2048, 1, kMaxWindow));
  ASSIGN_OR_RETURN(const int64_t conv_width, GetInt(root, "conv1d_width", 4, 1, kMaxConvWidth));

  // logits_soft_cap: null → no cap (0).
  double soft_cap = 30.0;
  if (const auto it = root.find("logits_soft_cap"); it != root.end()) {
    if (it->is_null()) {
      soft_cap = 0.0;
    } else {
      ASSIGN_OR_RETURN(soft_cap, GetFloat(root, "logits_soft_cap", 30.0));
      if (soft_cap < 0.0 || soft_cap > 1e6) {
        return Invalid("logits_soft_cap", "must be in [0, 1e6] (0 or null = no cap)");
      }
    }
  }
  ASSIGN_OR_RETURN(const double rotary, GetFloat(root, "partial_rotary_factor", 0.5));
  if (!(rotary > 0.0 && rotary <= 1.0)) {
    return Invalid("partial_rotary_factor", "must be in (0, 1]");
  }
  ASSIGN_OR_RETURN(const double theta, GetFloat(root, "rope_theta", 10000.0));
  if (!(theta > 0.0 && theta <= 1e12)) return Invalid("rope_theta", "must be in (0, 1e12]");
  ASSIGN_OR_RETURN(const double eps, GetFloat(root, "rms_norm_eps", 1e-6));
  if (!(eps > 0.0 && eps < 1.0)) return Invalid("rms_norm_eps", "must be in (0, 1)");
  ASSIGN_OR_RETURN(const bool scale_by_sqrt, GetBool(root, "embeddings_scale_by_sqrt_dim", true));
  ASSIGN_OR_RETURN(const bool tie, GetBool(root, "tie_word_embeddings", true));
  // Every backend computes the logits with the embedding matrix (as every published
  // RecurrentGemma checkpoint does); a separate lm_head would be silently ignored, so it is refused.
  if (!tie)
    return Unsupported("tie_word_embeddings", "false (a separate lm_head) is not supported");
  ASSIGN_OR_RETURN(const int64_t pad, GetTokenId(root, "pad_token_id", 0));
  ASSIGN_OR_RETURN(const int64_t eos, GetTokenId(root, "eos_token_id", 1));
  ASSIGN_OR_RETURN(const int64_t bos, GetTokenId(root, "bos_token_id", 2));
  for (const auto& [name, id] : {std::pair<const char*, int64_t>{"pad_token_id", pad},
                                 {"eos_token_id", eos},
                                 {"bos_token_id", bos}}) {
    if (id >= vocab) return Invalid(name, "must be below vocab_size");
  }

  if (const json* v = Field(root, "torch_dtype"); v != nullptr) {
    if (!v->is_string()) return Invalid("torch_dtype", "must be a string");
    const std::string& s = v->get_ref<const std::string&>();
    bool ok = !s.empty() && s.size() <= 32;
    for (const char ch : s) {
      ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_');
    }
    if (!ok) return Invalid("torch_dtype", "must be a dtype name such as \"bfloat16\"");
    c.torch_dtype = s;
  }

  ASSIGN_OR_RETURN(auto underscored, GetBlockPattern(root, "_block_types"));
  ASSIGN_OR_RETURN(auto plain, GetBlockPattern(root, "block_types"));
  if (underscored.has_value() && plain.has_value() && *underscored != *plain) {
    return Invalid("block_types", "disagrees with _block_types");
  }
  std::vector<BlockType> pattern =
      underscored.has_value() ? std::move(*underscored)
      : plain.has_value()     ? std::move(*plain)
                              : std::vector<BlockType>{BlockType::kRecurrent, BlockType::kRecurrent,
                                                       BlockType::kAttention};

  // Structural checks.
  if (lru_width % heads != 0) {
    return Unsupported("lru_width", "is not divisible by num_attention_heads");
  }
  if (heads % kv_heads != 0) {
    return Unsupported("num_key_value_heads", "does not divide num_attention_heads");
  }
  const double rotary_dim = static_cast<double>(head_dim) * rotary;
  const double rounded = std::round(rotary_dim);
  if (std::fabs(rotary_dim - rounded) > 1e-6 || static_cast<int64_t>(rounded) % 2 != 0 ||
      rounded < 2 || rounded > static_cast<double>(head_dim)) {
    return Invalid("partial_rotary_factor", "times head_dim must be an even integer >= 2");
  }

  c.vocab_size = static_cast<int>(vocab);
  c.hidden_size = static_cast<int>(hidden);
  c.mlp_width = static_cast<int>(intermediate / 2);
  c.num_layers = static_cast<int>(layers);
  c.num_heads = static_cast<int>(heads);
  c.num_kv_heads = static_cast<int>(kv_heads);
  c.head_dim = static_cast<int>(head_dim);
  c.lru_width = static_cast<int>(lru_width);
  c.attention_window = static_cast<int>(window);
  c.conv1d_width = static_cast<int>(conv_width);
  c.logits_soft_cap = static_cast<float>(soft_cap);
  c.partial_rotary_factor = static_cast<float>(rotary);
  c.rope_theta = static_cast<float>(theta);
  c.rms_norm_eps = static_cast<float>(eps);
  c.embeddings_scale_by_sqrt_dim = scale_by_sqrt;
  c.tie_word_embeddings = tie;
  c.pad_token_id = static_cast<int>(pad);
  c.eos_token_id = static_cast<int>(eos);
  c.bos_token_id = static_cast<int>(bos);
  c.block_types.resize(static_cast<size_t>(layers));
  for (size_t i = 0; i < c.block_types.size(); ++i) c.block_types[i] = pattern[i % pattern.size()];
  return c;
}

}  // namespace

int ModelConfig::rotary_dim() const {
  return static_cast<int>(std::lround(static_cast<double>(head_dim) * partial_rotary_factor));
}

int ModelConfig::num_recurrent_layers() const {
  int n = 0;
  for (const BlockType t : block_types) n += t == BlockType::kRecurrent ? 1 : 0;
  return n;
}

int ModelConfig::num_attention_layers() const {
  int n = 0;
  for (const BlockType t : block_types) n += t == BlockType::kAttention ? 1 : 0;
  return n;
}

std::string_view BlockTypeName(BlockType type) {
  switch (type) {
    case BlockType::kRecurrent:
      return "recurrent";
    case BlockType::kAttention:
      return "attention";
  }
  return "?";
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text) {
  try {
    if (!IsValidUtf8(json_text)) {
      return absl::InvalidArgumentError("config.json: not valid UTF-8");
    }
    StrictJson parsed = ParseStrictJson(json_text);
    switch (parsed.error) {
      case StrictJson::Error::kNone:
        break;
      case StrictJson::Error::kSyntax:
        return absl::InvalidArgumentError("config.json: not valid JSON");
      case StrictJson::Error::kTooDeep:
        return absl::InvalidArgumentError("config.json: JSON nested too deeply");
      case StrictJson::Error::kDuplicateKey:
        return absl::InvalidArgumentError(
            absl::StrCat("config.json: duplicate key \"", SafeName(parsed.duplicate_key), "\""));
    }
    return Parse(parsed.value);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("config.json: out of memory");
  } catch (const std::exception&) {
    return absl::InvalidArgumentError("config.json: malformed");
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  const std::string file = SafeBaseName(path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(file, ": no such file"));
    }
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": larger than ", kMaxConfigBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(file, ": cannot open"));
  std::string text;
  text.resize(static_cast<size_t>(st.st_size));
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(text));
  return config;
}

}  // namespace griffin::loader
