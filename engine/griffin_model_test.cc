#include "engine/griffin_model.h"

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {


TEST(GriffinModelTest, ParameterCountsMatchThePublishedModels) {
  loader::ModelConfig c2 = RecurrentGemma2B();
  EXPECT_EQ(GriffinParameterCount(c2), 2682862080);

  loader::ModelConfig c9 = RecurrentGemma9B();
  EXPECT_EQ(GriffinParameterCount(c9), 8579977216);
}

TEST(GriffinModelTest, StateSizeOf2B) {
  const StateSize s = ComputeStateSize(RecurrentGemma2B(), 2);
  EXPECT_EQ(s.lru_bytes, 18 * 2560 * 4);
  EXPECT_EQ(s.conv_bytes, 18 * 3 * 2560 * 2);
  EXPECT_EQ(s.kv_bytes, 8 * 2 * 2048 * 256 * 2);
  EXPECT_NEAR(s.total() / double(1 << 20), 16.44, 0.01);
}

TEST(GriffinModelTest, EmbeddingScaleIsBf16Rounded) {
  loader::ModelConfig c = RecurrentGemma2B();
  EXPECT_EQ(EmbeddingScale(c), 50.5f);
  c.hidden_size = 4096;
  EXPECT_EQ(EmbeddingScale(c), 64.0f);
  c.hidden_size = 48;
  EXPECT_EQ(EmbeddingScale(c), 6.9375f);  // sqrt(48) = 6.928...
  c.embeddings_scale_by_sqrt_dim = false;
  EXPECT_EQ(EmbeddingScale(c), 1.0f);
}

TEST(GriffinModelTest, TensorSpecsFollowTheBlockPattern) {
  loader::ModelConfig c = RecurrentGemma2B();
  const auto specs = GriffinTensorSpecs(c);
  int recurrent_params = 0, attention_q = 0;
  for (const auto& s : specs) {
    if (s.name.find("rg_lru.recurrent_param") != std::string::npos) ++recurrent_params;
    if (s.name.find("q_proj") != std::string::npos) {
      ++attention_q;
      EXPECT_EQ(s.shape, (std::vector<int64_t>{2560, 2560}));
    }
    if (s.name == "model.layers.0.temporal_block.rg_lru.input_gate_weight") {
      EXPECT_EQ(s.shape, (std::vector<int64_t>{10, 256, 256}));
    }
    if (s.name == "model.layers.2.temporal_block.k_proj.weight") {
      EXPECT_EQ(s.shape, (std::vector<int64_t>{256, 2560}));
    }
  }
  EXPECT_EQ(recurrent_params, 18);
  EXPECT_EQ(attention_q, 8);
}

}  // namespace
}  // namespace griffin::engine
