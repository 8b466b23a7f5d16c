// Streaming detokenization on the fixture tokenizer (byte fallback on): every chunk is valid UTF-8,
// and the chunks concatenate to the text (TXT-2, FUZ-3).
#include "server/detokenizer.h"

#include <filesystem>
#include <random>

#include "base/utf8.h"
#include "gtest/gtest.h"
#include "loader/tokenizer.h"

namespace griffin::server {
namespace {

class DetokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path =
        std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin/tokenizer.model";
    auto tokenizer = loader::Tokenizer::Load(path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
  }
  std::unique_ptr<loader::Tokenizer> tokenizer_;
};

TEST_F(DetokenizerTest, MultiByteCharactersSplitAcrossTokensStreamIntact) {
  for (const std::string text :
       {"plain ASCII text", "naïve café", "日本語のテキスト",
        "emoji \xF0\x9F\x98\x80 and e\xCC\x81 (combining)", "tab\tand\nnewline"}) {
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok());
    IncrementalDetokenizer detokenizer(tokenizer_.get());
    std::string streamed;
    for (int id : *ids) {
      const std::string chunk = detokenizer.Add(id);
      EXPECT_TRUE(IsValidUtf8(chunk)) << text;
      streamed += chunk;
    }
    streamed += detokenizer.Finish();
    EXPECT_EQ(streamed, text);
    EXPECT_EQ(streamed, tokenizer_->Decode(*ids));
  }
}

TEST_F(DetokenizerTest, RandomIdStreamsAreAlwaysValidUtf8) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> id(0, tokenizer_->vocab_size() - 1);
  for (int trial = 0; trial < 200; ++trial) {
    IncrementalDetokenizer detokenizer(tokenizer_.get());
    std::string streamed, raw;
    for (int i = 0; i < 40; ++i) {
      const int t = id(rng);
      raw += tokenizer_->TokenBytes(t);
      const std::string chunk = detokenizer.Add(t);
      ASSERT_TRUE(IsValidUtf8(chunk));
      streamed += chunk;
    }
    const std::string tail = detokenizer.Finish();
    ASSERT_TRUE(IsValidUtf8(tail));
    streamed += tail;
    EXPECT_EQ(streamed, SanitizeUtf8(raw));  // streaming == all at once
  }
}

}  // namespace
}  // namespace griffin::server
