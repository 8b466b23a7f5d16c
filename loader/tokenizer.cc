#include "loader/tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "loader/sentencepiece_shim.h"

namespace griffin::loader {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

absl::Status CheckUtf8(std::string_view text) {
  size_t bad = 0;
  if (!IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 (at byte ", bad, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<SentencePieceShim> shim) : shim_(std::move(shim)) {
  for (int id = 0; id < shim_->piece_size(); ++id) {
    if (shim_->IsUserDefined(id) && !shim_->IdToPiece(id).empty()) {
      user_defined_.push_back(shim_->IdToPiece(id));
    }
  }
  std::stable_sort(user_defined_.begin(), user_defined_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& piece : user_defined_)
    first_bytes_[static_cast<unsigned char>(piece[0])] = true;
  // Every id's bytes once, in one buffer: the detokenizer asks for one per generated token, and
  // each answer from SentencePiece's model walks four protobuf lookups scattered over a 256k-piece
  // vocabulary (a cache miss each; about 6% of griffin-server's CPU at 256 streams, bench/NOTES.md
  // session 14). The table is a few MB and takes tens of milliseconds at load.
  token_bytes_end_.reserve(static_cast<size_t>(shim_->piece_size()));
  for (int id = 0; id < shim_->piece_size(); ++id) {
    token_bytes_ += ComputeTokenBytes(id);
    token_bytes_end_.push_back(static_cast<uint32_t>(token_bytes_.size()));
  }
}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  const std::string file = SafeBaseName(path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(file, ": no such file"));
    }
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a regular file"));
  }
  std::string error;
  std::unique_ptr<SentencePieceShim> shim = SentencePieceShim::Load(path, &error);
  if (shim == nullptr) return absl::InvalidArgumentError(absl::StrCat(file, ": ", error));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(shim)));
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(std::string_view text) const {
  RETURN_IF_ERROR(CheckUtf8(text));
  std::vector<int> ids;
  std::string error;
  if (!shim_->Encode(text, &ids, &error)) return absl::InternalError(error);
  return ids;
}

absl::StatusOr<std::vector<int>> Tokenizer::EncodeLiteral(std::string_view text) const {
  if (user_defined_.empty()) return Encode(text);
  RETURN_IF_ERROR(CheckUtf8(text));
  std::vector<int> ids;
  std::string error;
  auto encode = [&](std::string_view part) {
    if (part.empty()) return true;
    std::vector<int> more;
    if (!shim_->Encode(part, &more, &error)) return false;
    ids.insert(ids.end(), more.begin(), more.end());
    return true;
  };
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t i = 0; i < text.size(); ++i) {
    if (!first_bytes_[static_cast<unsigned char>(text[i])]) continue;
    for (const std::string& piece : user_defined_) {
      if (text.compare(i, piece.size(), piece) != 0) continue;
      // Split the piece after its first character: what follows is scanned again as text.
      size_t first = 1;
      while (first < piece.size() && (static_cast<unsigned char>(piece[first]) & 0xC0) == 0x80) {
        ++first;
      }
      if (!encode(text.substr(segment, i - segment)) || !encode(text.substr(i, first))) {
        return absl::InternalError(error);
      }
      segment = i + first;
      i = segment - 1;
      break;
    }
  }
  if (!encode(text.substr(segment))) return absl::InternalError(error);
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int> ids) const {
  const int n = shim_->piece_size();
  std::vector<int> kept;
  kept.reserve(ids.size());
  for (const int id : ids) {
    if (id >= 0 && id < n) kept.push_back(id);
  }
  return shim_->Decode(kept);
}

std::string_view Tokenizer::TokenBytesView(int id) const {
  if (id < 0 || id >= static_cast<int>(token_bytes_end_.size())) return {};
  const uint32_t begin = id == 0 ? 0 : token_bytes_end_[id - 1];
  return std::string_view(token_bytes_).substr(begin, token_bytes_end_[id] - begin);
}

std::string Tokenizer::TokenBytes(int id) const { return std::string(TokenBytesView(id)); }

std::string Tokenizer::ComputeTokenBytes(int id) const {
  if (id < 0 || id >= shim_->piece_size()) return std::string();
  if (shim_->IsControl(id)) return std::string();
  if (shim_->IsUnknown(id)) return shim_->unk_surface();  // what Decode() writes for it
  const std::string& piece = shim_->IdToPiece(id);
  if (shim_->IsByte(id)) {
    // "<0xNN>"
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>') {
      const int hi = HexDigit(piece[3]);
      const int lo = HexDigit(piece[4]);
      if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
    }
    return std::string();
  }
  std::string out;
  out.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t next = piece.find(kSpaceSymbol, pos);
    if (next == std::string::npos) {
      out.append(piece, pos, std::string::npos);
      break;
    }
    out.append(piece, pos, next - pos);
    out.push_back(' ');
    pos = next + kSpaceSymbol.size();
  }
  return out;
}

int Tokenizer::vocab_size() const { return shim_->piece_size(); }

int Tokenizer::PieceToId(std::string_view piece) const {
  const int id = shim_->PieceToId(piece);
  if (id < 0 || id >= shim_->piece_size()) return -1;
  if (shim_->IdToPiece(id) != piece) return -1;  // SentencePiece answers unk for unknown pieces
  return id;
}

int Tokenizer::bos_id() const { return shim_->bos_id(); }
int Tokenizer::eos_id() const { return shim_->eos_id(); }
int Tokenizer::pad_id() const { return shim_->pad_id(); }

}  // namespace griffin::loader
