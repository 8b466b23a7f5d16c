// Model folders: single file, sharded (LDR-1 at the folder level, VAL-9 path escapes) and LDR-2.
#include "loader/checkpoint.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace griffin::loader {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "/ckpt_test_XXXXXX";
    EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteText(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

constexpr char kTinyConfig[] = R"({
  "model_type": "recurrent_gemma", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 32,
  "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
  "lru_width": 8, "attention_window_size": 4, "conv1d_width": 4,
  "_block_types": ["recurrent", "recurrent", "attention"], "block_types": ["recurrent", "recurrent", "attention"]
})";

TensorToWrite F32(const std::string& name, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return {name, DType::kF32, std::move(shape), std::string(static_cast<size_t>(4 * n), '\0')};
}

TensorToWrite I32(const std::string& name, std::vector<int64_t> shape) {
  TensorToWrite t = F32(name, std::move(shape));
  t.dtype = DType::kI32;
  return t;
}

void WriteIndex(const TempDir& dir, const json& weight_map) {
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  WriteText(dir / "model.safetensors.index.json", index.dump(2));
}

TEST(CheckpointTest, SingleFileFolder) {
  TempDir dir;
  WriteText(dir / "config.json", kTinyConfig);
  ASSERT_TRUE(WriteSafetensors(
                  dir / "model.safetensors",
                  {F32("model.embed_tokens.weight", {16, 8}), F32("model.final_norm.weight", {8})})
                  .ok());
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->config().hidden_size, 8);
  EXPECT_EQ((*ckpt)->config().num_attention_layers(), 1);
  EXPECT_EQ((*ckpt)->dir(), dir.path());
  EXPECT_TRUE((*ckpt)->tokenizer_path().empty());
  EXPECT_EQ((*ckpt)->tensors().size(), 2u);
  ASSERT_NE((*ckpt)->Find("model.final_norm.weight"), nullptr);
  EXPECT_EQ((*ckpt)->Find("model.final_norm.weight")->shape, (std::vector<int64_t>{8}));
  EXPECT_EQ((*ckpt)->Find("lm_head.weight"), nullptr);

  WriteText(dir / "tokenizer.model", "not really a model");
  ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->tokenizer_path(), dir / "tokenizer.model");
}

TEST(CheckpointTest, MissingPieces) {
  TempDir dir;
  EXPECT_EQ(Checkpoint::Open(dir / "nope").status().code(), absl::StatusCode::kNotFound);
  // No config.json.
  EXPECT_EQ(Checkpoint::Open(dir.path()).status().code(), absl::StatusCode::kNotFound);
  // Config but no weights.
  WriteText(dir / "config.json", kTinyConfig);
  auto no_weights = Checkpoint::Open(dir.path());
  EXPECT_EQ(no_weights.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_weights.status().message()), HasSubstr("model.safetensors"));
  // A file, not a folder.
  EXPECT_EQ(Checkpoint::Open(dir / "config.json").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, BadConfigAndBadWeightsPropagate) {
  TempDir dir;
  WriteText(dir / "config.json", R"({"hidden_size": -1})");
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors", {F32("w", {2})}).ok());
  auto bad_config = Checkpoint::Open(dir.path());
  EXPECT_EQ(bad_config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_config.status().message()), HasSubstr("hidden_size"));

  WriteText(dir / "config.json", kTinyConfig);
  WriteText(dir / "model.safetensors", "short");
  EXPECT_EQ(Checkpoint::Open(dir.path()).status().code(), absl::StatusCode::kDataLoss);
}

class ShardedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_ / "config.json", kTinyConfig);
    ASSERT_TRUE(WriteSafetensors(dir_ / "model-00001-of-00002.safetensors",
                                 {F32("a", {2, 3}), F32("b", {4})})
                    .ok());
    ASSERT_TRUE(WriteSafetensors(dir_ / "model-00002-of-00002.safetensors", {F32("c", {5})}).ok());
  }
  json GoodMap() const {
    return {{"a", "model-00001-of-00002.safetensors"},
            {"b", "model-00001-of-00002.safetensors"},
            {"c", "model-00002-of-00002.safetensors"}};
  }
  TempDir dir_;
};

TEST_F(ShardedTest, Good) {
  WriteIndex(dir_, GoodMap());
  auto ckpt = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->tensors().size(), 3u);
  for (const char* name : {"a", "b", "c"}) EXPECT_NE((*ckpt)->Find(name), nullptr) << name;
  EXPECT_TRUE((*ckpt)->Validate({{"a", {2, 3}}, {"b", {4}}, {"c", {5}}}).ok());
}

TEST_F(ShardedTest, MissingShard) {
  json map = GoodMap();
  map["c"] = "model-00003-of-00002.safetensors";
  WriteIndex(dir_, map);
  auto ckpt = Checkpoint::Open(dir_.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("model-00003-of-00002"));
}

TEST_F(ShardedTest, TensorInTwoShards) {
  ASSERT_TRUE(
      WriteSafetensors(dir_ / "model-00002-of-00002.safetensors", {F32("a", {2, 3}), F32("c", {5})})
          .ok());
  WriteIndex(dir_, GoodMap());
  auto ckpt = Checkpoint::Open(dir_.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("tensor a is in two shards"));
}

TEST_F(ShardedTest, IndexNamesTensorTheShardLacks) {
  json map = GoodMap();
  map["d"] = "model-00002-of-00002.safetensors";
  WriteIndex(dir_, map);
  auto ckpt = Checkpoint::Open(dir_.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("tensor d"));
}

TEST_F(ShardedTest, ShardHoldsTensorTheIndexDoesNotList) {
  json map = GoodMap();
  map.erase("b");
  WriteIndex(dir_, map);
  auto ckpt = Checkpoint::Open(dir_.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("tensor b"));
}

TEST_F(ShardedTest, ShardHoldsTensorTheIndexAssignsElsewhere) {
  json map = GoodMap();
  map["b"] = "model-00002-of-00002.safetensors";
  WriteIndex(dir_, map);
  auto ckpt = Checkpoint::Open(dir_.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("tensor b"));
}

TEST_F(ShardedTest, ShardPathEscapesAreRejected) {
  for (const char* shard : {"../model-00002-of-00002.safetensors", "/etc/passwd",
                            "sub/model.safetensors", "..", ".", "", "a\\b"}) {
    json map = GoodMap();
    map["c"] = shard;
    WriteIndex(dir_, map);
    auto ckpt = Checkpoint::Open(dir_.path());
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument) << shard;
    EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("tensor c")) << shard;
    EXPECT_THAT(std::string(ckpt.status().message()), testing::Not(HasSubstr("passwd")));
  }
}

TEST_F(ShardedTest, MalformedIndex) {
  WriteText(dir_ / "model.safetensors.index.json", "{");
  EXPECT_EQ(Checkpoint::Open(dir_.path()).status().code(), absl::StatusCode::kInvalidArgument);
  WriteText(dir_ / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_EQ(Checkpoint::Open(dir_.path()).status().code(), absl::StatusCode::kInvalidArgument);
  WriteText(dir_ / "model.safetensors.index.json", R"({"weight_map": {"a": 1}})");
  EXPECT_EQ(Checkpoint::Open(dir_.path()).status().code(), absl::StatusCode::kInvalidArgument);
  WriteText(dir_ / "model.safetensors.index.json",
            R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                               "a": "model-00002-of-00002.safetensors"}})");
  auto dup = Checkpoint::Open(dir_.path());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("duplicate key \"a\""));
}

class ValidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_ / "config.json", kTinyConfig);
    ASSERT_TRUE(WriteSafetensors(dir_ / "model.safetensors",
                                 {F32("a", {2, 3}), F32("b", {4}), I32("ids", {3})})
                    .ok());
    auto ckpt = Checkpoint::Open(dir_.path());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ckpt_ = std::move(*ckpt);
  }
  TempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(ValidateTest, WrongDtypeNamesTensorAndDtype) {
  auto s = ckpt_->Validate({{"a", {2, 3}}, {"b", {4}}, {"ids", {3}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor ids has dtype I32"));
}

TEST_F(ValidateTest, MissingTensor) {
  auto s = ckpt_->Validate({{"a", {2, 3}}, {"b", {4}}, {"ids", {3}}, {"z", {7, 8}}});
  // ids is checked first (spec order) and fails on dtype; put z first to see "missing".
  s = ckpt_->Validate({{"z", {7, 8}}, {"a", {2, 3}}, {"b", {4}}, {"ids", {3}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "missing tensor z (expected shape [7, 8])");
}

TEST_F(ValidateTest, ExtraTensor) {
  auto s = ckpt_->Validate({{"a", {2, 3}}, {"b", {4}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "unexpected tensor ids");
}

TEST_F(ValidateTest, WrongShapeNamesBothShapes) {
  auto s = ckpt_->Validate({{"a", {3, 2}}, {"b", {4}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "tensor a has shape [2, 3], expected [3, 2]");
}

TEST_F(ValidateTest, OptionalTensors) {
  TempDir dir;
  WriteText(dir / "config.json", kTinyConfig);
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors", {F32("a", {2, 3})}).ok());
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok());
  // Absent optional tensor: fine.
  EXPECT_TRUE((*ckpt)->Validate({{"a", {2, 3}}, {"lm_head.weight", {16, 8}, true}}).ok());
  // Present optional tensor must still have its shape.
  auto s = (*ckpt)->Validate({{"a", {2, 3}, true}});
  EXPECT_TRUE(s.ok());
  s = (*ckpt)->Validate({{"a", {6}, true}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected [6]"));
}

// The golden fixture committed with the tests (tests/golden/make_golden.py); its absence is a failure.
TEST(CheckpointTest, OpensTheRepositoryTestModel) {
  const std::string dir = std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin";
  struct stat st;
  ASSERT_EQ(::stat((dir + "/config.json").c_str(), &st), 0) << "no " << dir << " (committed)";
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const ModelConfig& c = (*ckpt)->config();
  EXPECT_GT(c.num_layers, 0);
  EXPECT_EQ(static_cast<int>(c.block_types.size()), c.num_layers);
  const TensorView* embed = (*ckpt)->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{c.vocab_size, c.hidden_size}));
  for (const TensorView* t : (*ckpt)->tensors()) EXPECT_TRUE(IsFloat(t->dtype)) << t->name;
}

}  // namespace
}  // namespace griffin::loader
