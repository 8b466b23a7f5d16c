// The one file that includes sentencepiece_processor.h. It must not include any Abseil header
// (see sentencepiece_shim.h).
#include "loader/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <exception>

namespace griffin::loader {

SentencePieceShim::SentencePieceShim()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceShim::~SentencePieceShim() = default;

std::unique_ptr<SentencePieceShim> SentencePieceShim::Load(const std::string& path,
                                                           std::string* error) {
  try {
    std::unique_ptr<SentencePieceShim> shim(new SentencePieceShim());
    const sentencepiece::util::Status status = shim->sp_->Load(path);
    if (!status.ok()) {
      *error = "not a valid SentencePiece model";
      return nullptr;
    }
    if (shim->sp_->GetPieceSize() <= 0) {
      *error = "SentencePiece model has an empty vocabulary";
      return nullptr;
    }
    const int unk = shim->sp_->unk_id();
    if (unk >= 0 && unk < shim->sp_->GetPieceSize()) {
      shim->unk_surface_ = shim->sp_->DecodeIds(std::vector<int>{unk});
    }
    return shim;
  } catch (const std::exception&) {
    *error = "failed to load the SentencePiece model";
    return nullptr;
  }
}

bool SentencePieceShim::Encode(std::string_view text, std::vector<int>* ids,
                               std::string* error) const {
  try {
    const sentencepiece::util::Status status = sp_->Encode(text, ids);
    if (!status.ok()) {
      *error = "SentencePiece could not encode the text";
      return false;
    }
    return true;
  } catch (const std::exception&) {
    *error = "SentencePiece could not encode the text";
    return false;
  }
}

std::string SentencePieceShim::Decode(const std::vector<int>& ids) const {
  try {
    std::string text;
    if (!sp_->Decode(ids, &text).ok()) return std::string();
    return text;
  } catch (const std::exception&) {
    return std::string();
  }
}

int SentencePieceShim::piece_size() const { return sp_->GetPieceSize(); }
int SentencePieceShim::PieceToId(std::string_view piece) const { return sp_->PieceToId(piece); }
const std::string& SentencePieceShim::IdToPiece(int id) const { return sp_->IdToPiece(id); }
bool SentencePieceShim::IsControl(int id) const { return sp_->IsControl(id); }
bool SentencePieceShim::IsUnknown(int id) const { return sp_->IsUnknown(id); }
bool SentencePieceShim::IsByte(int id) const { return sp_->IsByte(id); }
int SentencePieceShim::unk_id() const { return sp_->unk_id(); }
int SentencePieceShim::bos_id() const { return sp_->bos_id(); }
int SentencePieceShim::eos_id() const { return sp_->eos_id(); }
int SentencePieceShim::pad_id() const { return sp_->pad_id(); }

}  // namespace griffin::loader
