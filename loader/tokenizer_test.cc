// Tokenizer tests. The model-dependent ones use tests/data/griffin/tokenizer.model (committed: its
// absence is a failure), or the file named by $GRIFFIN_TEST_TOKENIZER, for which the checks that
// only hold for the repository's model (its golden ids, its special pieces) are skipped.
#include "loader/tokenizer.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <fstream>
#include <sstream>
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

bool OtherModel() {
  const char* env = std::getenv("GRIFFIN_TEST_TOKENIZER");
  return env != nullptr && *env != '\0';
}

std::string ModelPath() {
  if (const char* env = std::getenv("GRIFFIN_TEST_TOKENIZER"); env != nullptr && *env != '\0') {
    return env;
  }
  return std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin/tokenizer.model";
}

class TokenizerModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = ModelPath();
    ASSERT_EQ(::access(path.c_str(), R_OK), 0)
        << "no tokenizer model at " << path << " (tests/data/griffin is committed)";
    auto tok = Tokenizer::Load(path);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  auto tok = Tokenizer::Load("/nonexistent/secret/tokenizer.model");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("tokenizer.model"));
  EXPECT_THAT(std::string(tok.status().message()), Not(HasSubstr("/nonexistent/secret")));
}

TEST(TokenizerLoadTest, GarbageFileIsInvalidArgument) {
  std::string path = ::testing::TempDir() + "/garbage_tokenizer_XXXXXX";
  const int fd = ::mkstemp(path.data());
  ASSERT_GE(fd, 0);
  const std::string junk = "this is not a sentencepiece protobuf \xff\xfe\x00\x01";
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  auto tok = Tokenizer::Load(path);
  ::unlink(path.c_str());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, DirectoryIsInvalidArgument) {
  EXPECT_EQ(Tokenizer::Load(::testing::TempDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TokenizerModelTest, RoundTrips) {
  for (const std::string text :
       {"Hello world", "The quick brown fox jumps over the lazy dog.", "  leading spaces",
        "tabs\tand\nnewlines\r\n", "CJK 日本語のテキスト", "emoji 😀🚀 and é combining e\u0301",
        "numbers 1234567890", "a"}) {
    auto ids = tok_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_FALSE(ids->empty()) << text;
    for (const int id : *ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok_->vocab_size());
    }
    EXPECT_EQ(tok_->Decode(*ids), text);
  }
}

TEST_F(TokenizerModelTest, EncodeHasNoBosAndEmptyTextGivesNoIds) {
  auto ids = tok_->Encode("");
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());
  ids = tok_->Encode("hello");
  ASSERT_TRUE(ids.ok());
  ASSERT_FALSE(ids->empty());
  if (tok_->bos_id() >= 0) {
    EXPECT_NE(ids->front(), tok_->bos_id());
  }
}

TEST_F(TokenizerModelTest, InvalidUtf8IsRejected) {
  for (const std::string& bad : {std::string("abc\xff"), std::string("\xc0\x80"),
                                 std::string("\xed\xa0\x80"), std::string("\xe2\x82")}) {
    auto ids = tok_->Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // NUL is valid UTF-8.
  EXPECT_TRUE(tok_->Encode(std::string("a\0b", 3)).ok());
}

TEST_F(TokenizerModelTest, DecodeSkipsOutOfRangeIds) {
  auto ids = tok_->Encode("Hello world");
  ASSERT_TRUE(ids.ok());
  std::vector<int> noisy = {-1, INT_MIN};
  noisy.insert(noisy.end(), ids->begin(), ids->end());
  noisy.push_back(tok_->vocab_size());
  noisy.push_back(INT_MAX);
  EXPECT_EQ(tok_->Decode(noisy), "Hello world");
}

TEST_F(TokenizerModelTest, TokenBytesConcatenateToTheText) {
  for (const std::string text : {"Hello world, again", "日本語 text 😀", "x\ny"}) {
    auto ids = tok_->Encode(text);
    ASSERT_TRUE(ids.ok());
    std::string joined;
    for (const int id : *ids) joined += tok_->TokenBytes(id);
    // Decode strips the dummy-prefix space that a model with add_dummy_prefix adds.
    EXPECT_TRUE(joined == text || joined == " " + text) << "[" << joined << "]";
  }
  EXPECT_EQ(tok_->TokenBytes(-1), "");
  EXPECT_EQ(tok_->TokenBytes(tok_->vocab_size()), "");
  if (tok_->bos_id() >= 0) {
    EXPECT_EQ(tok_->TokenBytes(tok_->bos_id()), "");
  }
  if (tok_->eos_id() >= 0) {
    EXPECT_EQ(tok_->TokenBytes(tok_->eos_id()), "");
  }
}

TEST_F(TokenizerModelTest, ByteFallbackPiecesGiveSingleBytes) {
  const int id = tok_->PieceToId("<0x41>");
  if (id < 0 && OtherModel()) GTEST_SKIP() << "GRIFFIN_TEST_TOKENIZER has no byte-fallback pieces";
  ASSERT_GE(id, 0);
  EXPECT_EQ(tok_->TokenBytes(id), "A");
  const int high = tok_->PieceToId("<0xE6>");
  ASSERT_GE(high, 0);
  EXPECT_EQ(tok_->TokenBytes(high), "\xE6");
}

TEST_F(TokenizerModelTest, PieceToId) {
  EXPECT_EQ(tok_->PieceToId("\x01"
                            "definitely not a piece"
                            "\x02"),
            -1);
  if (tok_->eos_id() >= 0) {
    EXPECT_GE(tok_->vocab_size(), tok_->eos_id());
  }
  EXPECT_GT(tok_->vocab_size(), 0);
}

// Encode matches a user-defined piece written in text (the special id); EncodeLiteral keeps it
// text, and both decode to the same string. Plain text encodes the same either way.
TEST_F(TokenizerModelTest, EncodeLiteralKeepsSpecialPiecesText) {
  const int start = tok_->PieceToId("<start_of_turn>");
  if (start < 0 && OtherModel()) GTEST_SKIP() << "GRIFFIN_TEST_TOKENIZER has no <start_of_turn>";
  ASSERT_GE(start, 0);
  for (const std::string text : {"<start_of_turn>", "a<start_of_turn>b<end_of_turn>\nc",
                                 "<<start_of_turn>start_of_turn>>", "<start_of_turn"}) {
    auto special = tok_->Encode(text);
    auto literal = tok_->EncodeLiteral(text);
    ASSERT_TRUE(special.ok() && literal.ok()) << text;
    EXPECT_EQ(std::count(literal->begin(), literal->end(), start), 0) << text;
    EXPECT_EQ(tok_->Decode(*literal), tok_->Decode(*special)) << text;
  }
  EXPECT_EQ(*tok_->Encode("<start_of_turn>"), std::vector<int>{start});
  for (const char* plain : {"Hello world", "naïve café", ""}) {
    EXPECT_EQ(*tok_->EncodeLiteral(plain), *tok_->Encode(plain)) << plain;
  }
  EXPECT_EQ(tok_->EncodeLiteral("\xff").status().code(), absl::StatusCode::kInvalidArgument);
}

// tests/data/griffin/tokenizer_golden.json: ids from Python sentencepiece for the same model file.
TEST_F(TokenizerModelTest, MatchesPythonSentencePieceGolden) {
  if (OtherModel()) GTEST_SKIP() << "the golden is for the repository's model";
  std::ifstream in(std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin/tokenizer_golden.json");
  ASSERT_TRUE(in) << "no tests/data/griffin/tokenizer_golden.json (committed)";
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json golden = nlohmann::json::parse(text.str(), nullptr, false);
  ASSERT_FALSE(golden.is_discarded());
  EXPECT_EQ(golden.value("vocab_size", 0), tok_->vocab_size());
  ASSERT_TRUE(golden.contains("probes"));
  int checked = 0;
  for (const auto& probe : golden["probes"]) {
    const std::string input = probe["text"].get<std::string>();
    const std::vector<int> want = probe["ids"].get<std::vector<int>>();
    auto ids = tok_->Encode(input);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, want) << input;
    EXPECT_EQ(tok_->Decode(want), input);
    std::string joined;
    for (const int id : want) joined += tok_->TokenBytes(id);
    EXPECT_EQ(joined, input) << "TokenBytes concatenation";
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_F(TokenizerModelTest, GemmaSpecialIds) {
  if (OtherModel()) GTEST_SKIP() << "checks the repository's model";
  EXPECT_EQ(tok_->pad_id(), 0);
  EXPECT_EQ(tok_->eos_id(), 1);
  EXPECT_EQ(tok_->bos_id(), 2);
  EXPECT_EQ(tok_->PieceToId("<unk>"), 3);
  EXPECT_EQ(tok_->PieceToId("<start_of_turn>"), 4);
  EXPECT_EQ(tok_->PieceToId("<end_of_turn>"), 5);
  EXPECT_EQ(tok_->TokenBytes(3), tok_->Decode(std::vector<int>{3}));  // unk surface, as Decode
}

}  // namespace
}  // namespace griffin::loader
