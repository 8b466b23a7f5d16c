#include "loader/model_config.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace griffin::loader {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

// google/recurrentgemma-2b config.json as quoted in SPEC.md §1.2.
constexpr char k2bConfig[] = R"({
  "_block_types": ["recurrent", "recurrent", "attention"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attention_window_size": 2048,
  "conv1d_width": 4,
  "embeddings_scale_by_sqrt_dim": true,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 2560,
  "intermediate_size": 15360,
  "logits_soft_cap": 30.0,
  "lru_width": 2560,
  "num_attention_heads": 10,
  "num_hidden_layers": 26,
  "num_key_value_heads": 1,
  "partial_rotary_factor": 0.5,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "vocab_size": 256000,
  "model_type": "recurrent_gemma",
  "torch_dtype": "bfloat16",
  "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
  "final_w_init_variance_scale": 0.07692307692307693,
  "w_init_variance_scale": 0.01,
  "architectures": ["RecurrentGemmaForCausalLM"],
  "transformers_version": "4.40.0.dev0"
})";

json Base() { return json::parse(k2bConfig); }

absl::StatusOr<ModelConfig> ParseJson(const json& j) { return ParseModelConfig(j.dump()); }

TEST(ModelConfigTest, RecurrentGemma2B) {
  auto c = ParseModelConfig(k2bConfig);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 256000);
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->mlp_width, 7680);
  EXPECT_EQ(c->num_layers, 26);
  EXPECT_EQ(c->num_heads, 10);
  EXPECT_EQ(c->num_kv_heads, 1);
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_EQ(c->lru_width, 2560);
  EXPECT_EQ(c->attention_window, 2048);
  EXPECT_EQ(c->conv1d_width, 4);
  EXPECT_FLOAT_EQ(c->logits_soft_cap, 30.0f);
  EXPECT_FLOAT_EQ(c->partial_rotary_factor, 0.5f);
  EXPECT_EQ(c->rotary_dim(), 128);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_TRUE(c->embeddings_scale_by_sqrt_dim);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->pad_token_id, 0);
  EXPECT_EQ(c->eos_token_id, 1);
  EXPECT_EQ(c->bos_token_id, 2);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  ASSERT_EQ(c->block_types.size(), 26u);
  EXPECT_EQ(c->num_attention_layers(), 8);
  EXPECT_EQ(c->num_recurrent_layers(), 18);
  for (int i = 0; i < 26; ++i) {
    EXPECT_EQ(c->block_types[i], i % 3 == 2 ? BlockType::kAttention : BlockType::kRecurrent) << i;
  }
}

TEST(ModelConfigTest, EmptyObjectTakesHuggingFaceClassDefaults) {
  auto c = ParseModelConfig("{}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 256000);
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->mlp_width, 3840);  // HF class default intermediate_size=7680, halved
  EXPECT_EQ(c->num_layers, 26);
  EXPECT_EQ(c->num_heads, 10);
  EXPECT_EQ(c->num_kv_heads, 10);  // HF: None → num_attention_heads
  EXPECT_EQ(c->head_dim, 256);     // hidden_size / num_attention_heads
  EXPECT_EQ(c->lru_width, 2560);   // None → hidden_size
  EXPECT_EQ(c->attention_window, 2048);
  EXPECT_FLOAT_EQ(c->logits_soft_cap, 30.0f);
  EXPECT_EQ(c->rotary_dim(), 128);
  EXPECT_EQ(c->num_attention_layers(), 8);
  EXPECT_EQ(c->eos_token_id, 1);
  EXPECT_TRUE(c->torch_dtype.empty());
}

TEST(ModelConfigTest, NullsTakeTheirDocumentedMeaning) {
  json j = Base();
  j["lru_width"] = nullptr;
  j["logits_soft_cap"] = nullptr;
  j["num_key_value_heads"] = nullptr;
  j["hidden_size"] = 1280;
  j["head_dim"] = nullptr;
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->lru_width, 1280);
  EXPECT_EQ(c->logits_soft_cap, 0.0f);
  EXPECT_EQ(c->num_kv_heads, 10);
  EXPECT_EQ(c->head_dim, 128);
}

TEST(ModelConfigTest, BlockTypesWithoutUnderscore) {
  json j = Base();
  j.erase("_block_types");
  j["block_types"] = {"attention", "recurrent"};
  j["num_hidden_layers"] = 5;
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->block_types, (std::vector<BlockType>{BlockType::kAttention, BlockType::kRecurrent,
                                                    BlockType::kAttention, BlockType::kRecurrent,
                                                    BlockType::kAttention}));
}

TEST(ModelConfigTest, BothBlockTypeKeysMustAgree) {
  json j = Base();
  j["block_types"] = j["_block_types"];
  EXPECT_TRUE(ParseJson(j).ok());
  j["block_types"] = {"recurrent", "attention"};
  auto c = ParseJson(j);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("block_types"));
}

TEST(ModelConfigTest, PatternLongerThanLayersIsTruncatedAndAllRecurrentWorks) {
  json j = Base();
  j["_block_types"] = {"recurrent", "recurrent", "attention"};
  j["num_hidden_layers"] = 2;
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->num_attention_layers(), 0);
  EXPECT_EQ(c->num_recurrent_layers(), 2);

  j["_block_types"] = {"recurrent"};
  j["num_hidden_layers"] = 7;
  c = ParseJson(j);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->num_recurrent_layers(), 7);
}

TEST(ModelConfigTest, LruWidthDifferentFromHidden) {
  json j = Base();  // GRIFFIN_PAPER_7B-like widths
  j["hidden_size"] = 4096;
  j["num_attention_heads"] = 16;
  j["lru_width"] = 5632;
  j["intermediate_size"] = 24576;
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->lru_width, 5632);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->mlp_width, 12288);
  EXPECT_EQ(c->head_dim, 256);
}

TEST(ModelConfigTest, EosListTakesFirstAndActivationSpellings) {
  json j = Base();
  j["eos_token_id"] = {1, 107};
  j["hidden_activation"] = "gelu_tanh";
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_id, 1);
  EXPECT_TRUE(c->tie_word_embeddings);
  j.erase("hidden_activation");
  EXPECT_TRUE(ParseJson(j).ok());
}

TEST(ModelConfigTest, IntegralFloatIsAcceptedAsInteger) {
  json j = Base();
  j["hidden_size"] = 2560.0;
  auto c = ParseJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 2560);
}

struct BadField {
  const char* name;
  const char* field;  // set on the 2B config
  json value;
  absl::StatusCode code;
  const char* mentioned;  // the field the message must name
};

class BadFieldTest : public ::testing::TestWithParam<BadField> {};

TEST_P(BadFieldTest, RejectedNamingTheField) {
  const BadField& b = GetParam();
  json j = Base();
  j[b.field] = b.value;
  auto c = ParseJson(j);
  ASSERT_FALSE(c.ok()) << b.name;
  EXPECT_EQ(c.status().code(), b.code) << c.status();
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(b.mentioned));
}

const auto kInvalid = absl::StatusCode::kInvalidArgument;
const auto kUnsupported = absl::StatusCode::kFailedPrecondition;

INSTANTIATE_TEST_SUITE_P(
    Fields, BadFieldTest,
    ::testing::Values(
        BadField{"VocabZero", "vocab_size", 0, kInvalid, "vocab_size"},
        BadField{"VocabNegative", "vocab_size", -5, kInvalid, "vocab_size"},
        BadField{"VocabHuge", "vocab_size", int64_t{1} << 40, kInvalid, "vocab_size"},
        BadField{"VocabUint64", "vocab_size", ~uint64_t{0}, kInvalid, "vocab_size"},
        BadField{"VocabString", "vocab_size", "256000", kInvalid, "vocab_size"},
        BadField{"VocabFraction", "vocab_size", 1.5, kInvalid, "vocab_size"},
        BadField{"HiddenZero", "hidden_size", 0, kInvalid, "hidden_size"},
        BadField{"HiddenHuge", "hidden_size", 1 << 21, kInvalid, "hidden_size"},
        BadField{"IntermediateOdd", "intermediate_size", 15361, kInvalid, "intermediate_size"},
        BadField{"IntermediateZero", "intermediate_size", 0, kInvalid, "intermediate_size"},
        BadField{"LayersZero", "num_hidden_layers", 0, kInvalid, "num_hidden_layers"},
        BadField{"LayersHuge", "num_hidden_layers", 5000, kInvalid, "num_hidden_layers"},
        BadField{"HeadsZero", "num_attention_heads", 0, kInvalid, "num_attention_heads"},
        BadField{"KvHeadsZero", "num_key_value_heads", 0, kInvalid, "num_key_value_heads"},
        BadField{"KvHeadsDoNotDivide", "num_key_value_heads", 3, kUnsupported,
                 "num_key_value_heads"},
        BadField{"HeadDimZero", "head_dim", 0, kInvalid, "head_dim"},
        BadField{"LruWidthNotDivisible", "lru_width", 2565, kUnsupported, "lru_width"},
        BadField{"LruWidthNegative", "lru_width", -1, kInvalid, "lru_width"},
        BadField{"WindowZero", "attention_window_size", 0, kInvalid, "attention_window_size"},
        BadField{"ConvZero", "conv1d_width", 0, kInvalid, "conv1d_width"},
        BadField{"SoftCapNegative", "logits_soft_cap", -1.0, kInvalid, "logits_soft_cap"},
        BadField{"SoftCapString", "logits_soft_cap", "30", kInvalid, "logits_soft_cap"},
        BadField{"RotaryZero", "partial_rotary_factor", 0.0, kInvalid, "partial_rotary_factor"},
        BadField{"RotaryAboveOne", "partial_rotary_factor", 1.5, kInvalid, "partial_rotary_factor"},
        BadField{"RotaryNotInteger", "partial_rotary_factor", 0.3, kInvalid,
                 "partial_rotary_factor"},
        BadField{"RotaryOdd", "partial_rotary_factor", 1.0 / 256.0, kInvalid,
                 "partial_rotary_factor"},
        BadField{"ThetaNegative", "rope_theta", -1.0, kInvalid, "rope_theta"},
        BadField{"EpsZero", "rms_norm_eps", 0.0, kInvalid, "rms_norm_eps"},
        BadField{"ScaleNotBool", "embeddings_scale_by_sqrt_dim", 1, kInvalid,
                 "embeddings_scale_by_sqrt_dim"},
        BadField{"TieNotBool", "tie_word_embeddings", "yes", kInvalid, "tie_word_embeddings"},
        BadField{"UntiedLmHead", "tie_word_embeddings", false, kUnsupported, "tie_word_embeddings"},
        BadField{"BosBeyondVocab", "bos_token_id", 256000, kInvalid, "bos_token_id"},
        BadField{"EosEmptyList", "eos_token_id", json::array(), kInvalid, "eos_token_id"},
        BadField{"PadNegative", "pad_token_id", -7, kInvalid, "pad_token_id"},
        BadField{"DtypeWeird", "torch_dtype", "bf16; rm -rf /", kInvalid, "torch_dtype"},
        BadField{"BlockTypesUnknown", "_block_types", json::array({"recurrent", "mlp"}), kInvalid,
                 "_block_types"},
        BadField{"BlockTypesEmpty", "_block_types", json::array(), kInvalid, "_block_types"},
        BadField{"BlockTypesString", "_block_types", "recurrent", kInvalid, "_block_types"},
        BadField{"ActivationRelu", "hidden_activation", "relu", kUnsupported, "hidden_activation"},
        BadField{"ActivationExactGelu", "hidden_activation", "gelu", kUnsupported,
                 "hidden_activation"},
        BadField{"ActivationNotString", "hidden_activation", 5, kInvalid, "hidden_activation"},
        BadField{"AttentionBias", "attention_bias", true, kUnsupported, "attention_bias"},
        BadField{"ModelType", "model_type", "llama", kUnsupported, "model_type"},
        BadField{"PreQuantizedFp8", "quantization_config",
                 json{{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}}, kUnsupported,
                 "--quantization fp8"},
        BadField{"PreQuantizedCompressedTensors", "quantization_config",
                 json{{"quant_method", "compressed-tensors"}, {"format", "float-quantized"}},
                 kUnsupported, "quantization_config"}),
    [](const ::testing::TestParamInfo<BadField>& info) { return std::string(info.param.name); });

TEST(ModelConfigTest, HeadsMustDivideHiddenWithoutHeadDim) {
  json j = Base();
  j.erase("head_dim");
  j["num_attention_heads"] = 7;
  j["lru_width"] = 2555;  // divisible by 7
  auto c = ParseJson(j);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("num_attention_heads"));
}

TEST(ModelConfigTest, MalformedDocuments) {
  EXPECT_EQ(ParseModelConfig("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("{").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("[1]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("{\"a\": \"\xff\"}").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto dup = ParseModelConfig(R"({"hidden_size": 2560, "hidden_size": 1})");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("hidden_size"));
}

TEST(ModelConfigTest, ErrorsDoNotEchoValues) {
  json j = Base();
  j["hidden_activation"] = "evil\n<script>";
  auto c = ParseJson(j);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), Not(HasSubstr("evil")));
  EXPECT_THAT(std::string(c.status().message()), Not(HasSubstr("<script>")));
}

TEST(ModelConfigTest, LoadMissingFile) {
  auto c = LoadModelConfig("/nonexistent/dir/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), Not(HasSubstr("/nonexistent")));
}

TEST(ModelConfigTest, BlockTypeNames) {
  EXPECT_EQ(BlockTypeName(BlockType::kRecurrent), "recurrent");
  EXPECT_EQ(BlockTypeName(BlockType::kAttention), "attention");
}

}  // namespace
}  // namespace griffin::loader
