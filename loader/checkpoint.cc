#include "loader/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <new>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "loader/json_util.h"
#include "nlohmann/json.hpp"

namespace griffin::loader {
namespace {

constexpr char kConfigName[] = "config.json";
constexpr char kSingleName[] = "model.safetensors";
constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kTokenizerName[] = "tokenizer.model";
constexpr size_t kMaxIndexBytes = 64u << 20;

enum class Kind { kMissing, kFile, kDir, kOther };

Kind Stat(const std::string& path, int* error = nullptr) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (error != nullptr) *error = errno;
    return Kind::kMissing;
  }
  if (S_ISREG(st.st_mode)) return Kind::kFile;
  if (S_ISDIR(st.st_mode)) return Kind::kDir;
  return Kind::kOther;
}

std::string Join(const std::string& dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A shard named by the index must be a plain file name in the model folder.
bool IsPlainFileName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (const char ch : name) {
    if (ch == '/' || ch == '\\' || ch == '\0') return false;
  }
  return IsValidUtf8(name);
}

// Parses model.safetensors.index.json into tensor → shard.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(kIndexName, ": no such file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxIndexBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(kIndexName, ": larger than ", kMaxIndexBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(kIndexName, ": cannot open"));
  std::string text(static_cast<size_t>(st.st_size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(kIndexName, ": not valid UTF-8"));
  }
  StrictJson parsed = ParseStrictJson(text);
  switch (parsed.error) {
    case StrictJson::Error::kNone:
      break;
    case StrictJson::Error::kDuplicateKey:
      return absl::InvalidArgumentError(
          absl::StrCat(kIndexName, ": duplicate key \"", SafeName(parsed.duplicate_key), "\""));
    default:
      return absl::InvalidArgumentError(absl::StrCat(kIndexName, ": not valid JSON"));
  }
  const nlohmann::json& root = parsed.value;
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(kIndexName, ": not a JSON object"));
  }
  const auto map_it = root.find("weight_map");
  if (map_it == root.end() || !map_it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kIndexName, ": missing or non-object \"weight_map\""));
  }
  std::map<std::string, std::string> weight_map;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(kIndexName, ": weight_map entry for tensor ",
                                                     SafeName(it.key()), " is not a string"));
    }
    const std::string& shard = it->get_ref<const std::string&>();
    if (!IsPlainFileName(shard)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kIndexName, ": the shard named for tensor ", SafeName(it.key()),
                       " is not a plain file name in the model folder"));
    }
    weight_map.emplace(it.key(), shard);
  }
  return weight_map;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  try {
    int err = 0;
    switch (Stat(dir, &err)) {
      case Kind::kDir:
        break;
      case Kind::kMissing:
        if (err == ENOENT || err == ENOTDIR) {
          return absl::NotFoundError("model folder not found");
        }
        return absl::Status(absl::ErrnoToStatusCode(err),
                            absl::StrCat("model folder: ", std::strerror(err)));
      default:
        return absl::InvalidArgumentError("model folder path is not a directory");
    }
    std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
    ckpt->dir_ = dir;
    ASSIGN_OR_RETURN(ckpt->config_, LoadModelConfig(Join(dir, kConfigName)));

    const std::string single = Join(dir, kSingleName);
    const std::string index = Join(dir, kIndexName);
    if (Stat(single) == Kind::kFile) {
      ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single));
      ckpt->files_.push_back(std::move(file));
    } else if (Stat(index) == Kind::kFile) {
      ASSIGN_OR_RETURN(const auto weight_map, ReadIndex(index));
      std::map<std::string, std::set<std::string>> by_shard;  // sorted: deterministic open order
      for (const auto& [tensor, shard] : weight_map) by_shard[shard].insert(tensor);
      // Open every shard first, so that a tensor held by two files is reported as such whatever
      // the order of the shards.
      for (const auto& [shard, listed] : by_shard) {
        const std::string shard_path = Join(dir, shard);
        if (Stat(shard_path) == Kind::kMissing) {
          return absl::NotFoundError(
              absl::StrCat("shard ", SafeName(shard), " named by ", kIndexName, " not found"));
        }
        ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(shard_path));
        ckpt->files_.push_back(std::move(file));
      }
      std::map<std::string_view, std::string_view> owner;  // tensor → shard that holds it
      size_t i = 0;
      for (const auto& [shard, listed] : by_shard) {
        for (const TensorView& t : ckpt->files_[i]->tensors()) {
          const auto [it, inserted] = owner.emplace(t.name, shard);
          if (!inserted) {
            return absl::InvalidArgumentError(absl::StrCat(
                "tensor ", SafeName(t.name), " is in two shards: ", SafeName(it->second), " and ",
                SafeName(shard)));
          }
        }
        ++i;
      }
      i = 0;
      for (const auto& [shard, listed] : by_shard) {
        const SafetensorsFile& file = *ckpt->files_[i++];
        for (const TensorView& t : file.tensors()) {
          if (listed.count(t.name) != 0) continue;
          const auto wm = weight_map.find(t.name);
          if (wm == weight_map.end()) {
            return absl::InvalidArgumentError(absl::StrCat("tensor ", SafeName(t.name),
                                                           " in shard ", SafeName(shard),
                                                           " is not listed in ", kIndexName));
          }
          return absl::InvalidArgumentError(
              absl::StrCat("tensor ", SafeName(t.name), " is in shard ", SafeName(shard), " but ",
                           kIndexName, " assigns it to ", SafeName(wm->second)));
        }
        for (const std::string& tensor : listed) {
          if (file.Find(tensor) == nullptr) {
            return absl::InvalidArgumentError(
                absl::StrCat(kIndexName, " lists tensor ", SafeName(tensor), " in shard ",
                             SafeName(shard), ", which does not hold it"));
          }
        }
      }
    } else {
      return absl::NotFoundError(
          absl::StrCat("model folder has neither ", kSingleName, " nor ", kIndexName));
    }

    const std::string tokenizer = Join(dir, kTokenizerName);
    if (Stat(tokenizer) == Kind::kFile) ckpt->tokenizer_path_ = tokenizer;
    return ckpt;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory opening the checkpoint");
  } catch (const std::exception&) {
    return absl::InternalError("unexpected error opening the checkpoint");
  }
}

const TensorView* Checkpoint::Find(std::string_view name) const {
  for (const auto& file : files_) {
    if (const TensorView* t = file->Find(name); t != nullptr) return t;
  }
  return nullptr;
}

std::vector<const TensorView*> Checkpoint::tensors() const {
  std::vector<const TensorView*> out;
  for (const auto& file : files_) {
    for (const TensorView& t : file->tensors()) out.push_back(&t);
  }
  return out;
}

absl::Status Checkpoint::Validate(absl::Span<const TensorSpec> expected) const {
  std::unordered_map<std::string_view, const TensorView*> present;
  for (const auto& file : files_) {
    for (const TensorView& t : file->tensors()) present.emplace(t.name, &t);
  }
  std::set<std::string_view> known;
  for (const TensorSpec& spec : expected) {
    known.insert(spec.name);
    const auto it = present.find(spec.name);
    if (it == present.end()) {
      if (spec.optional) continue;
      return absl::FailedPreconditionError(absl::StrCat("missing tensor ", SafeName(spec.name),
                                                        " (expected shape ",
                                                        ShapeString(spec.shape), ")"));
    }
    const TensorView& t = *it->second;
    if (t.shape != spec.shape) {
      return absl::FailedPreconditionError(absl::StrCat("tensor ", SafeName(spec.name),
                                                        " has shape ", ShapeString(t.shape),
                                                        ", expected ", ShapeString(spec.shape)));
    }
    if (!IsFloat(t.dtype)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor ", SafeName(spec.name), " has dtype ", std::string(DTypeName(t.dtype)),
          ", expected a float type (F32, BF16 or F16)"));
    }
  }
  for (const auto& file : files_) {
    for (const TensorView& t : file->tensors()) {
      if (known.count(t.name) == 0) {
        return absl::FailedPreconditionError(absl::StrCat("unexpected tensor ", SafeName(t.name)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace griffin::loader
