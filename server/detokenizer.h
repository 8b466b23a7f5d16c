// Streaming detokenization that only ever emits complete UTF-8 (RELIABILITY.md TXT-2): a character
// whose bytes span several tokens (byte-fallback pieces) is held back until its last byte arrives;
// Finish() flushes whatever is left, replacing an incomplete tail with U+FFFD.
#ifndef GRIFFIN_SERVER_DETOKENIZER_H_
#define GRIFFIN_SERVER_DETOKENIZER_H_

#include <string>
#include <string_view>

#include "loader/tokenizer.h"

namespace griffin::server {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const loader::Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // Adds one generated id; returns the text that became complete (possibly empty).
  std::string Add(int id);
  // Returns the held-back tail (sanitised); call once at the end of the stream.
  std::string Finish();

 private:
  const loader::Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_DETOKENIZER_H_
