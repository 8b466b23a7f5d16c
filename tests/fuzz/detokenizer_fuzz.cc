// FUZ-3 / TXT-2: the streaming detokenizer over arbitrary token-id streams (two input bytes per
// id) on the fixture tokenizer, whose byte-fallback pieces split characters across tokens: every
// chunk is valid UTF-8, and the chunks equal the whole stream decoded at once.
#include <cstdint>
#include <memory>
#include <string>

#include "base/utf8.h"
#include "loader/tokenizer.h"
#include "server/detokenizer.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace griffin;
  static std::unique_ptr<loader::Tokenizer> tokenizer = [] {
    auto t = loader::Tokenizer::Load(GRIFFIN_SOURCE_DIR "/tests/data/griffin/tokenizer.model");
    FUZZ_CHECK(t.ok());
    return std::move(*t);
  }();
  server::IncrementalDetokenizer detokenizer(tokenizer.get());
  std::string streamed, raw;
  for (size_t i = 0; i + 1 < size; i += 2) {
    const int id = (data[i] | (data[i + 1] << 8)) % tokenizer->vocab_size();
    raw += tokenizer->TokenBytes(id);
    const std::string chunk = detokenizer.Add(id);
    FUZZ_CHECK(IsValidUtf8(chunk));
    streamed += chunk;
  }
  const std::string tail = detokenizer.Finish();
  FUZZ_CHECK(IsValidUtf8(tail));
  streamed += tail;
  FUZZ_CHECK(streamed == SanitizeUtf8(raw));
  return 0;
}
