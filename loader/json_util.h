// Strict JSON parsing for untrusted files (private to loader/). nlohmann::json silently keeps the
// last of two equal keys; this parser reports the duplicate instead, bounds the nesting depth, and
// never throws.
#ifndef GRIFFIN_LOADER_JSON_UTIL_H_
#define GRIFFIN_LOADER_JSON_UTIL_H_

#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace griffin::loader {

struct StrictJson {
  enum class Error { kNone, kSyntax, kDuplicateKey, kTooDeep };
  Error error = Error::kNone;
  nlohmann::json value;         // valid when error == kNone
  std::string duplicate_key;    // kDuplicateKey: the repeated key (raw: render with SafeName)
  int duplicate_depth = 0;      // 1 = a key of the top-level object
  std::string duplicate_owner;  // the key under which the object holding the duplicate sits
};

inline constexpr int kMaxJsonDepth = 64;

// Parses `text`. Only one of `error`/`value` is meaningful. No exception escapes.
StrictJson ParseStrictJson(std::string_view text);

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_JSON_UTIL_H_
