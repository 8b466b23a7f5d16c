#include "server/detokenizer.h"

#include "base/utf8.h"

namespace griffin::server {
std::string IncrementalDetokenizer::Add(int id) {
  pending_ += tokenizer_->TokenBytesView(id);
  const size_t complete = CompleteUtf8Prefix(pending_);
  std::string out = SanitizeUtf8(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string IncrementalDetokenizer::Finish() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace griffin::server
