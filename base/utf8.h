// UTF-8 handling for untrusted bytes: validation (prompts, headers), streaming boundaries
// (detokenization, RELIABILITY.md TXT-2), and safe rendering of names in error messages (TXT-7).
#ifndef GRIFFIN_BASE_UTF8_H_
#define GRIFFIN_BASE_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace griffin {

// True if `text` is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..DFFF),
// nothing above U+10FFFF. NUL bytes are allowed. On failure `*bad_offset` (if non-null) receives
// the byte offset of the first invalid sequence.
bool IsValidUtf8(std::string_view text, size_t* bad_offset = nullptr);

// Length of the longest prefix of `bytes` that ends on a character boundary, treating invalid
// sequences as complete (they are replaced, never waited for): only a valid but unfinished
// multi-byte character at the end is held back.
size_t CompleteUtf8Prefix(std::string_view bytes);

// Replaces every invalid byte sequence with U+FFFD.
std::string SanitizeUtf8(std::string_view bytes);

// Renders a name read from a file or request for an error message: printable ASCII is kept, every
// other byte becomes \xNN, and the result is cut to about `max_len` characters ("..." appended).
// Never returns raw control bytes, so a hostile name cannot forge log lines.
std::string SafeName(std::string_view name, size_t max_len = 160);

// The last component of a path ("a/b/c.safetensors" → "c.safetensors"), rendered with SafeName.
std::string SafeBaseName(std::string_view path);

}  // namespace griffin

#endif  // GRIFFIN_BASE_UTF8_H_
