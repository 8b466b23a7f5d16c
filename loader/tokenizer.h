// Text ↔ token ids through SentencePiece (the Gemma tokenizer.model format).
#ifndef GRIFFIN_LOADER_TOKENIZER_H_
#define GRIFFIN_LOADER_TOKENIZER_H_

#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace griffin::loader {

class SentencePieceShim;

// Thread-safe after construction (all methods are const and SentencePiece's are re-entrant).
class Tokenizer {
 public:
  // Loads a SentencePiece model file. NOT_FOUND or INVALID_ARGUMENT (the path is not echoed in
  // user-facing text beyond the file name).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  ~Tokenizer();

  // Encodes UTF-8 text into ids, without BOS. INVALID_ARGUMENT if `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int>> Encode(std::string_view text) const;

  // Like Encode, but a user-defined special piece written in the text (Gemma's <start_of_turn>,
  // <end_of_turn>, ...) stays text: its first character is encoded apart from the rest, so the
  // special id never appears and decoding gives the text back. For content a server wraps in a
  // template (chat messages), so a message cannot open or close turns.
  absl::StatusOr<std::vector<int>> EncodeLiteral(std::string_view text) const;

  // Decodes ids as SentencePiece does (leading dummy-prefix space removed, control ids dropped).
  // Ids outside [0, vocab_size) are skipped.
  std::string Decode(absl::Span<const int> ids) const;

  // The raw bytes one id contributes in the middle of a text: '▁' becomes ' ', a byte-fallback piece
  // <0xNN> becomes that single byte (so a multi-byte character may span several ids), control
  // and unknown-range ids give "". Concatenating TokenBytes of a continuation gives its text.
  std::string TokenBytes(int id) const;
  // The same bytes without a copy: valid as long as the tokenizer.
  std::string_view TokenBytesView(int id) const;

  int vocab_size() const;
  // -1 if the piece is not in the vocabulary.
  int PieceToId(std::string_view piece) const;
  int bos_id() const;
  int eos_id() const;
  int pad_id() const;

 private:
  explicit Tokenizer(std::unique_ptr<SentencePieceShim> shim);
  std::string ComputeTokenBytes(int id) const;
  std::unique_ptr<SentencePieceShim> shim_;
  // TokenBytes of every id, concatenated; id's end offset at [id], its start at [id - 1] (0 for
  // id 0).
  std::string token_bytes_;
  std::vector<uint32_t> token_bytes_end_;
  std::vector<std::string> user_defined_;  // longest first
  std::bitset<256> first_bytes_;           // bytes a user-defined piece starts with
};

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_TOKENIZER_H_
