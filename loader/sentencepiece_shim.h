// A thin, Abseil-free wrapper around sentencepiece::SentencePieceProcessor (private to loader/).
//
// Why it exists: Debian's sentencepiece_processor.h declares `namespace absl { using
// std::string_view; }`, which clashes with Abseil's own absl::string_view. The SentencePiece header
// is therefore included by exactly one file, sentencepiece_shim.cc, which includes no Abseil
// header; everything here uses std types only.
#ifndef GRIFFIN_LOADER_SENTENCEPIECE_SHIM_H_
#define GRIFFIN_LOADER_SENTENCEPIECE_SHIM_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace griffin::loader {

class SentencePieceShim {
 public:
  // Loads a model file. On failure returns nullptr and sets *error (a fixed message).
  static std::unique_ptr<SentencePieceShim> Load(const std::string& path, std::string* error);
  ~SentencePieceShim();

  // Returns false (and sets *error) if SentencePiece reports an error.
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  // Ids must already be in [0, piece_size()).
  std::string Decode(const std::vector<int>& ids) const;

  int piece_size() const;
  // SentencePiece's answer: the unk id for an unknown piece.
  int PieceToId(std::string_view piece) const;
  const std::string& IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;
  // Pieces the model matches anywhere in text, such as Gemma's <start_of_turn>.
  bool IsUserDefined(int id) const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;
  int pad_id() const;
  // What Decode() writes for the unknown piece (" \u2047 " by default).
  const std::string& unk_surface() const { return unk_surface_; }

 private:
  SentencePieceShim();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string unk_surface_;
  std::vector<bool> user_defined_;  // by id
};

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_SENTENCEPIECE_SHIM_H_
