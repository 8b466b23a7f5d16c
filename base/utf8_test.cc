#include "base/utf8.h"

#include "gtest/gtest.h"

namespace griffin {
namespace {

TEST(Utf8Test, CompletePrefixHoldsBackSplitCharacters) {
  const std::string euro = "\xE2\x82\xAC";       // U+20AC, 3 bytes
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, 4 bytes
  EXPECT_EQ(CompleteUtf8Prefix("ab"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro.substr(0, 2)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro), 4u);
  EXPECT_EQ(CompleteUtf8Prefix(emoji.substr(0, 3)), 0u);
  // An invalid byte is complete (it will be replaced, never waited for).
  EXPECT_EQ(CompleteUtf8Prefix("a\xFF"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("\xE2\x28"), 2u);  // bad continuation
}

TEST(Utf8Test, SanitizeAndValidate) {
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_TRUE(IsValidUtf8(SanitizeUtf8("\xE2\x82\xF0\x9F")));
  EXPECT_TRUE(IsValidUtf8(std::string("nul\0inside", 10)));
}

TEST(Utf8Test, ReportsFirstBadOffset) {
  size_t offset = 0;
  EXPECT_FALSE(IsValidUtf8("ok\xC3\xA9\xFFtail", &offset));
  EXPECT_EQ(offset, 4u);
}

TEST(Utf8Test, SafeNameEscapesControlBytes) {
  EXPECT_EQ(SafeName("model.layers.0"), "model.layers.0");
  EXPECT_EQ(SafeName("a\nb\x01\\"), "a\\x0ab\\x01\\x5c");
  EXPECT_EQ(SafeName(std::string(300, 'x'), 10), std::string(10, 'x') + "...");
  EXPECT_EQ(SafeBaseName("/secret/dir/model.safetensors"), "model.safetensors");
}

}  // namespace
}  // namespace griffin
