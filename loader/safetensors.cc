#include "loader/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/numeric.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "loader/json_util.h"
#include "nlohmann/json.hpp"

namespace griffin::loader {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

using nlohmann::json;

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// "<file>: tensor \"<name>\": <what>".
std::string TensorPrefix(absl::string_view file, std::string_view tensor) {
  return absl::StrCat(file, ": tensor \"", SafeName(tensor), "\": ");
}

// Reads a JSON integer that must be non-negative and fit in int64. Sets *error on failure.
std::optional<uint64_t> NonNegativeInt(const json& value, const char** error) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      *error = "is too large";
      return std::nullopt;
    }
    return v;
  }
  if (value.is_number_integer()) {  // signed storage: nlohmann only uses it for negatives
    const int64_t v = value.get<int64_t>();
    if (v < 0) {
      *error = "is negative";
      return std::nullopt;
    }
    return static_cast<uint64_t>(v);
  }
  *error = "is not an integer";
  return std::nullopt;
}

struct Entry {
  TensorView view;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Validates one header entry (everything that does not depend on the other tensors).
absl::Status ParseEntry(absl::string_view file, const std::string& name, const json& entry,
                        uint64_t data_size, Entry* out) {
  const std::string prefix = TensorPrefix(file, name);
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "header entry is not a JSON object"));
  }
  // dtype
  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "missing or non-string \"dtype\""));
  }
  const std::optional<DType> dtype = ParseDType(dtype_it->get_ref<const std::string&>());
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "unsupported dtype (expected F32, BF16, F16, I32 or I64)"));
  }
  // shape
  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "missing or non-array \"shape\""));
  }
  std::vector<int64_t> shape;
  shape.reserve(shape_it->size());  // bounded by the header's real size
  uint64_t num_elements = 1;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const char* error = nullptr;
    const std::optional<uint64_t> dim = NonNegativeInt((*shape_it)[i], &error);
    if (!dim.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, "shape dimension ", i, " ", error));
    }
    shape.push_back(static_cast<int64_t>(*dim));
    // Running product, as the reference reader does (a leading 0 keeps it at 0).
    const std::optional<uint64_t> product = CheckedMul(num_elements, *dim);
    if (!product.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "the element count of its shape overflows at dimension ", i));
    }
    num_elements = *product;
  }
  // data_offsets
  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "missing \"data_offsets\" or not an array of two integers"));
  }
  const char* error = nullptr;
  const std::optional<uint64_t> begin = NonNegativeInt((*offsets_it)[0], &error);
  if (!begin.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "data_offsets begin ", error));
  }
  const std::optional<uint64_t> end = NonNegativeInt((*offsets_it)[1], &error);
  if (!end.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "data_offsets end ", error));
  }
  if (*begin > *end) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "data_offsets begin ", *begin, " is after end ", *end));
  }
  if (*end > data_size) {
    return absl::DataLossError(absl::StrCat(prefix, "data_offsets end ", *end,
                                            " is beyond the data section (", data_size,
                                            " bytes); the file is truncated or corrupt"));
  }
  const std::optional<uint64_t> nbytes = CheckedMul(num_elements, DTypeSize(*dtype));
  if (!nbytes.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "the byte size of shape ", ShapeString(shape), " overflows"));
  }
  if (*nbytes != *end - *begin) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "shape ", ShapeString(shape), " of ", std::string(DTypeName(*dtype)),
                     " needs ", *nbytes, " bytes but data_offsets span ", *end - *begin));
  }
  out->view.name = name;
  out->view.dtype = *dtype;
  out->view.shape = std::move(shape);
  out->view.nbytes = static_cast<size_t>(*nbytes);
  out->begin = *begin;
  out->end = *end;
  return absl::OkStatus();
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

bool IsFloat(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const std::string file = SafeBaseName(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(file, ": no such file"));
    }
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::DataLossError(
        absl::StrCat(file, ": file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps its own reference
  if (mapping == MAP_FAILED) {
    return absl::Status(absl::ErrnoToStatusCode(map_err),
                        absl::StrCat(file, ": mmap failed: ", std::strerror(map_err)));
  }
  std::unique_ptr<SafetensorsFile> result(new SafetensorsFile());
  result->path_ = path;
  result->mapping_ = mapping;
  result->mapping_size_ = size;
  result->bytes_ = static_cast<const uint8_t*>(mapping);
  result->size_ = size;
  RETURN_IF_ERROR(result->Parse());  // the destructor unmaps on error
  return result;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(
    std::string bytes, std::string display_name) {
  std::unique_ptr<SafetensorsFile> result(new SafetensorsFile());
  result->path_ = std::move(display_name);
  result->owned_bytes_ = std::move(bytes);
  result->bytes_ = reinterpret_cast<const uint8_t*>(result->owned_bytes_.data());
  result->size_ = result->owned_bytes_.size();
  RETURN_IF_ERROR(result->Parse());
  return result;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  for (const TensorView& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::Status SafetensorsFile::Parse() {
  const std::string file = SafeBaseName(path_);
  try {
    if (size_ < 8) {
      return absl::DataLossError(
          absl::StrCat(file, ": file is ", size_, " bytes, shorter than the 8-byte header length"));
    }
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes_, sizeof(header_len));  // little-endian (static_assert above)
    if (header_len > kMaxHeaderBytes) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": header length ", header_len,
                                                     " exceeds the limit of ", kMaxHeaderBytes,
                                                     " bytes"));
    }
    if (header_len > size_ - 8) {
      return absl::DataLossError(absl::StrCat(file, ": header length ", header_len, " exceeds the ",
                                              size_ - 8, " bytes after the length field"));
    }
    const std::string_view header(reinterpret_cast<const char*>(bytes_ + 8), header_len);
    size_t bad = 0;
    if (!IsValidUtf8(header, &bad)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": header is not valid UTF-8 (at header byte ", bad, ")"));
    }
    StrictJson parsed = ParseStrictJson(header);
    switch (parsed.error) {
      case StrictJson::Error::kNone:
        break;
      case StrictJson::Error::kSyntax:
        return absl::InvalidArgumentError(absl::StrCat(file, ": header is not valid JSON"));
      case StrictJson::Error::kTooDeep:
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": header JSON is nested more than ", kMaxJsonDepth, " levels"));
      case StrictJson::Error::kDuplicateKey:
        if (parsed.duplicate_depth == 1) {
          return absl::InvalidArgumentError(absl::StrCat(file, ": duplicate tensor name \"",
                                                         SafeName(parsed.duplicate_key), "\""));
        }
        return absl::InvalidArgumentError(absl::StrCat(TensorPrefix(file, parsed.duplicate_owner),
                                                       "duplicate key \"",
                                                       SafeName(parsed.duplicate_key), "\""));
    }
    const json& root = parsed.value;
    if (!root.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": header is not a JSON object"));
    }
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = size_ - data_start;

    std::vector<Entry> entries;
    entries.reserve(root.size());  // bounded by the header's real size
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string& name = it.key();
      if (name == "__metadata__") {
        if (!it->is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(file, ": __metadata__ is not a JSON object"));
        }
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) {
            return absl::InvalidArgumentError(absl::StrCat(
                file, ": __metadata__ value for \"", SafeName(m.key()), "\" is not a string"));
          }
          metadata_.emplace(m.key(), m->get<std::string>());
        }
        continue;
      }
      Entry entry;
      RETURN_IF_ERROR(ParseEntry(file, name, *it, data_size, &entry));
      entries.push_back(std::move(entry));
    }

    // File order; at equal begin the empty tensor first, so [4,4) then [4,8) is contiguous.
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      if (a.begin != b.begin) return a.begin < b.begin;
      if (a.end != b.end) return a.end < b.end;
      return a.view.name < b.view.name;
    });
    uint64_t expected = 0;
    const Entry* previous = nullptr;
    for (const Entry& e : entries) {
      if (e.begin < expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            TensorPrefix(file, e.view.name), "bytes [", e.begin, ", ", e.end, ") overlap tensor \"",
            SafeName(previous->view.name), "\" at [", previous->begin, ", ", previous->end, ")"));
      }
      if (e.begin > expected) {
        return absl::InvalidArgumentError(
            absl::StrCat(TensorPrefix(file, e.view.name), "starts at byte ", e.begin,
                         ", leaving a gap of ", e.begin - expected, " bytes before it"));
      }
      expected = e.end;
      previous = &e;
    }
    if (expected != data_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": the data section has ", data_size - expected,
                       " bytes after the last tensor", previous == nullptr ? "" : " \"",
                       previous == nullptr ? "" : SafeName(previous->view.name),
                       previous == nullptr ? "" : "\"", " (tensors must cover it exactly)"));
    }
    tensors_.reserve(entries.size());
    for (Entry& e : entries) {
      e.view.data = bytes_ + data_start + e.begin;
      tensors_.push_back(std::move(e.view));
    }
    return absl::OkStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(file, ": out of memory parsing the header"));
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": malformed header"));
  }
}

absl::Status CopyToFloat32(const TensorView& tensor, absl::Span<float> out) {
  if (!IsFloat(tensor.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", SafeName(tensor.name), " has dtype ",
                                                   std::string(DTypeName(tensor.dtype)),
                                                   ", not a float type"));
  }
  const int64_t n = tensor.num_elements();
  if (n < 0 || static_cast<uint64_t>(n) != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", SafeName(tensor.name), " has ", n,
                                                   " elements but the output holds ", out.size()));
  }
  const std::optional<uint64_t> nbytes =
      CheckedMul(static_cast<uint64_t>(n), DTypeSize(tensor.dtype));
  if (!nbytes.has_value() || *nbytes != tensor.nbytes || (n > 0 && tensor.data == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", SafeName(tensor.name), " has inconsistent byte size"));
  }
  const uint8_t* src = tensor.data;
  switch (tensor.dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out.data(), src, tensor.nbytes);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        out[i] = Bf16ToFloat(bits);
      }
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        out[i] = HalfToFloat(bits);
      }
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeSafetensors(
    absl::Span<const TensorToWrite> tensors, const std::map<std::string, std::string>& metadata) {
  try {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
      nlohmann::ordered_json meta = nlohmann::ordered_json::object();
      for (const auto& [key, value] : metadata) {
        if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
          return absl::InvalidArgumentError(
              absl::StrCat("metadata entry \"", SafeName(key), "\" is not valid UTF-8"));
        }
        meta[key] = value;
      }
      header["__metadata__"] = std::move(meta);
    }
    std::set<std::string_view> names;
    uint64_t offset = 0;
    for (const TensorToWrite& t : tensors) {
      const std::string name = SafeName(t.name);
      if (t.name.empty() || t.name == "__metadata__" || !IsValidUtf8(t.name)) {
        return absl::InvalidArgumentError(absl::StrCat("invalid tensor name \"", name, "\""));
      }
      if (!names.insert(t.name).second) {
        return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name \"", name, "\""));
      }
      uint64_t count = 1;
      for (const int64_t d : t.shape) {
        if (d < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor ", name, ": negative dimension in shape ", ShapeString(t.shape)));
        }
        const std::optional<uint64_t> p = CheckedMul(count, static_cast<uint64_t>(d));
        if (!p.has_value()) {
          return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": shape overflows"));
        }
        count = *p;
      }
      const std::optional<uint64_t> nbytes = CheckedMul(count, DTypeSize(t.dtype));
      if (!nbytes.has_value() || *nbytes != t.bytes.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", name, ": shape ", ShapeString(t.shape), " of ",
            std::string(DTypeName(t.dtype)), " does not match its ", t.bytes.size(), " bytes"));
      }
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = std::string(DTypeName(t.dtype));
      entry["shape"] = t.shape;
      entry["data_offsets"] = {offset, offset + *nbytes};
      header[t.name] = std::move(entry);
      offset += *nbytes;
    }
    std::string header_text = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
    header_text.append((8 - header_text.size() % 8) % 8, ' ');
    std::string out;
    out.reserve(8 + header_text.size() + offset);
    const uint64_t header_len = header_text.size();
    out.append(reinterpret_cast<const char*>(&header_len), sizeof(header_len));
    out += header_text;
    for (const TensorToWrite& t : tensors) out += t.bytes;
    return out;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory serialising safetensors");
  } catch (const std::exception&) {
    return absl::InternalError("failed to serialise the safetensors header");
  }
}

absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  ASSIGN_OR_RETURN(const std::string bytes, SerializeSafetensors(tensors, metadata));
  const std::string file = SafeBaseName(path);
  // Write a sibling temporary file, then rename, so readers never see a half-written file.
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": cannot create: ", std::strerror(err)));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::Status(absl::ErrnoToStatusCode(err),
                          absl::StrCat(file, ": write failed: ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": close failed: ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(file, ": rename failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace griffin::loader
