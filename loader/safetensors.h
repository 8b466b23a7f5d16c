// Reading (and, for tools and tests, writing) the safetensors format:
//   [u64 little-endian N][N bytes of JSON header][data]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} relative to the
// start of the data section, plus an optional "__metadata__" object of string → string.
//
// Every size in the file is untrusted: it is checked against the file's real size before it is
// used, nothing is allocated in proportion to a size read from the file, and each malformed case
// (RELIABILITY.md LDR-1) returns a specific absl::Status that names the file and the tensor.
#ifndef GRIFFIN_LOADER_SAFETENSORS_H_
#define GRIFFIN_LOADER_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace griffin::loader {

enum class DType { kF32, kBF16, kF16, kI32, kI64 };

// Bytes per element, and the safetensors spelling ("F32", "BF16", ...).
size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
bool IsFloat(DType dtype);

// A tensor inside a mapped file. `data` points into the mapping and lives as long as the file object.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t num_elements() const;
};

// Largest header the reader accepts; real checkpoints use well under 1 MB.
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates the whole header. Errors: NOT_FOUND (no such file),
  // INVALID_ARGUMENT or DATA_LOSS with the file name and, where one is involved, the tensor name.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // Same validation over bytes held in memory (tests, fuzzing). `display_name` appears in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(std::string bytes,
                                                                     std::string display_name);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensors in file order (ascending data offset).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr if absent.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string path_;
  std::string owned_bytes_;  // FromBuffer
  void* mapping_ = nullptr;  // Open (mmap)
  size_t mapping_size_ = 0;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Widens a float tensor (F32, BF16, F16) to float32. INVALID_ARGUMENT for integer dtypes or when
// `out` has a different number of elements.
absl::Status CopyToFloat32(const TensorView& tensor, absl::Span<float> out);

// A tensor to write: raw little-endian bytes of `dtype` with `shape`.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Serialises tensors (in the given order) into safetensors bytes, or writes them to `path`.
absl::StatusOr<std::string> SerializeSafetensors(
    absl::Span<const TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata = {});
absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_SAFETENSORS_H_
