// The one file that includes sentencepiece_processor.h. It must not include any Abseil header
// (see sentencepiece_shim.h).
#include "loader/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

#include <cstdint>
#include <exception>

namespace griffin::loader {
namespace {

// Reads a protobuf varint at *pos; false at the end of the data or on a malformed varint.
bool ReadVarint(const std::string& data, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < data.size(); shift += 7) {
    const unsigned char byte = static_cast<unsigned char>(data[(*pos)++]);
    *value |= uint64_t{byte & 0x7Fu} << shift;
    if ((byte & 0x80u) == 0) return true;
  }
  return false;
}

// Skips a field of wire type `wire`; false if it does not fit.
bool SkipField(const std::string& data, size_t* pos, uint64_t wire, size_t end) {
  uint64_t n = 0;
  switch (wire) {
    case 0:
      return ReadVarint(data, pos, &n) && *pos <= end;
    case 1:
      n = 8;
      break;
    case 2:
      if (!ReadVarint(data, pos, &n)) return false;
      break;
    case 5:
      n = 4;
      break;
    default:
      return false;
  }
  if (n > end - *pos) return false;
  *pos += n;
  return true;
}

// The type of every piece, from the serialized ModelProto (field 1: repeated SentencePiece, whose
// field 3 is the type; USER_DEFINED = 4). Debian's SentencePiece 0.1.97 has no IsUserDefined, and
// its generated proto header would bring a second protobuf into this binary.
std::vector<bool> UserDefinedPieces(const std::string& proto, int piece_size) {
  std::vector<bool> out;
  size_t pos = 0;
  while (pos < proto.size()) {
    uint64_t tag = 0;
    if (!ReadVarint(proto, &pos, &tag)) break;
    if ((tag >> 3) != 1 || (tag & 7) != 2) {
      if (!SkipField(proto, &pos, tag & 7, proto.size())) break;
      continue;
    }
    uint64_t len = 0;
    if (!ReadVarint(proto, &pos, &len) || len > proto.size() - pos) break;
    const size_t end = pos + len;
    uint64_t type = 1;  // NORMAL when absent
    while (pos < end) {
      uint64_t field = 0;
      if (!ReadVarint(proto, &pos, &field)) break;
      if ((field >> 3) == 3 && (field & 7) == 0) {
        if (!ReadVarint(proto, &pos, &type)) break;
      } else if (!SkipField(proto, &pos, field & 7, end)) {
        break;
      }
    }
    pos = end;
    out.push_back(type == 4);
  }
  if (static_cast<int>(out.size()) != piece_size) return {};  // not understood: none special
  return out;
}

}  // namespace

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
    shim->user_defined_ =
        UserDefinedPieces(shim->sp_->serialized_model_proto(), shim->sp_->GetPieceSize());
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
bool SentencePieceShim::IsUserDefined(int id) const {
  return id >= 0 && id < static_cast<int>(user_defined_.size()) && user_defined_[id];
}
int SentencePieceShim::unk_id() const { return sp_->unk_id(); }
int SentencePieceShim::bos_id() const { return sp_->bos_id(); }
int SentencePieceShim::eos_id() const { return sp_->eos_id(); }
int SentencePieceShim::pad_id() const { return sp_->pad_id(); }

}  // namespace griffin::loader
