#include "engine/griffin_model.h"

#include "engine/state_layout.h"
#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

TEST(GriffinModelTest, ParameterCountsMatchThePublishedModels) {
  loader::ModelConfig c2 = RecurrentGemma2B();
  EXPECT_EQ(GriffinParameterCount(c2), 2682862080);

  loader::ModelConfig c9 = RecurrentGemma9B();
  EXPECT_EQ(GriffinParameterCount(c9), 8579977216);
}

// 2B: the ten projections hold 2,002,780,160 weights in 649,216 output rows; FP8 stores each in
// one byte instead of two and adds a 4-byte scale per row.
TEST(GriffinModelTest, DeviceWeightBytesOf2BInBf16AndFp8) {
  const loader::ModelConfig c = RecurrentGemma2B();
  const int64_t bf16 = DeviceWeightBytes(c, false), fp8 = DeviceWeightBytes(c, true);
  EXPECT_EQ(bf16 - fp8, int64_t{2002780160} - 4 * int64_t{649216});
  // Two bytes per parameter, plus two more for each of the ~1.1M float32 ones (norms, biases,
  // conv taps, a_param); the CUDA backend adds its 94 MB half copy of the RG-LRU gates.
  EXPECT_NEAR(bf16 / 1e9, 5.368, 0.001) << bf16;
  EXPECT_NEAR(fp8 / 1e9, 3.368, 0.001) << fp8;
}

TEST(GriffinModelTest, StateSizeOf2B) {
  const StateLayout layout = StateLayout::ForCuda(RecurrentGemma2B());
  const StateSize& s = layout.size();
  EXPECT_EQ(s.lru_bytes, 18 * 2560 * 4);
  EXPECT_EQ(s.conv_bytes, 18 * 3 * 2560 * 2);
  EXPECT_EQ(s.kv_bytes, 8 * 2 * 2048 * 256 * 2);
  EXPECT_NEAR(s.total() / double(1 << 20), 16.44, 0.01);
  // Alignment adds nothing for the published shapes: the slot is exactly the state.
  EXPECT_EQ(layout.slot_bytes(), s.total());
  EXPECT_EQ(StateLayout::ForCuda(RecurrentGemma9B()).slot_bytes(),
            StateLayout::ForCuda(RecurrentGemma9B()).size().total());
}

TEST(GriffinModelTest, StateLayoutRegionsTileTheSlot) {
  loader::ModelConfig c = RecurrentGemma2B();
  c.lru_width = 36;  // odd sizes: regions need padding
  c.num_heads = 4;
  c.attention_window = 5;
  c.head_dim = 6;
  for (const StateLayout& layout : {StateLayout::ForCpu(c), StateLayout::ForCuda(c)}) {
    int64_t end = 0;
    for (const StateLayout::Region& r : layout.regions()) {
      EXPECT_GE(r.offset, end) << layout.description();  // in order, no overlap
      if (layout.activation_bytes() == 2) {
        EXPECT_EQ(r.offset % 16, 0);
      }
      end = r.offset + r.bytes;
    }
    EXPECT_LE(end, layout.slot_bytes());
    EXPECT_EQ(layout.regions().size(),
              size_t(2 * c.num_recurrent_layers() + 2 * c.num_attention_layers()));
  }
  EXPECT_EQ(StateLayout::ForCpu(c).slot_bytes(), StateLayout::ForCpu(c).size().total());
  EXPECT_EQ(StateLayout::ForCuda(c).slot_bytes() % 256, 0);
  EXPECT_FALSE(StateLayout::ForCpu(c) == StateLayout::ForCuda(c));
}

TEST(GriffinModelTest, EveryTableTensorAppearsOnceInTheSpecs) {
  const loader::ModelConfig c = RecurrentGemma2B();
  const auto specs = GriffinTensorSpecs(c);
  int per_layer = 0;
  for (const LayerTensorDef& def : LayerTensorDefs()) {
    for (int l = 0; l < c.num_layers; ++l) per_layer += LayerHas(c, l, def);
  }
  EXPECT_EQ(specs.size(), ModelTensorDefs().size() + per_layer);
  // Fusion groups: members in order, widths add up.
  EXPECT_EQ(
      FusionMembers(Fusion::kQKV),
      (std::vector<LayerTensor>{LayerTensor::kQProj, LayerTensor::kKProj, LayerTensor::kVProj}));
  EXPECT_EQ(FusionRows(c, Fusion::kQKV), 2560 + 2 * 256);
  EXPECT_EQ(FusionRows(c, Fusion::kGateUp), 2 * 7680);
  EXPECT_EQ(TensorName(3, LayerTensor::kUpProj), "model.layers.3.mlp_block.up_proj.weight");
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

TEST(GriffinModelTest, ModelIdentityFollowsConfigAndWeights) {
  const std::string dir = std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/";
  auto griffin = loader::Checkpoint::Open(dir + "griffin");
  auto hawk = loader::Checkpoint::Open(dir + "hawk");
  ASSERT_TRUE(griffin.ok() && hawk.ok());
  const uint64_t a = ModelIdentity(**griffin);
  EXPECT_EQ(a, ModelIdentity(**loader::Checkpoint::Open(dir + "griffin")));  // stable
  EXPECT_NE(a, ModelIdentity(**hawk));
  const ModelConfig c = RecurrentGemma2B();
  EXPECT_EQ(ModelIdentity(c, 1), ModelIdentity(c, 1));
  EXPECT_NE(ModelIdentity(c, 1), ModelIdentity(c, 2));
  EXPECT_NE(ModelIdentity(c, 1), ModelIdentity(RecurrentGemma9B(), 1));
}

}  // namespace
}  // namespace griffin::engine
