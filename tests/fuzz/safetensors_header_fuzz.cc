// LDR-3: the safetensors header parser on arbitrary bytes. Every input is accepted with tensors
// that lie inside the file, or refused with INVALID_ARGUMENT / DATA_LOSS; no crash, no
// allocation sized by a claimed (untrusted) length (ASan's allocation limit catches one).
#include <cstdint>
#include <string>

#include "loader/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using griffin::loader::SafetensorsFile;
  auto file = SafetensorsFile::FromBuffer(std::string(reinterpret_cast<const char*>(data), size),
                                          "fuzz.safetensors");
  if (!file.ok()) {
    const absl::StatusCode code = file.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kDataLoss);
    return 0;
  }
  // Every accepted tensor's bytes are inside the file (ASan checks each read) and match its
  // shape and dtype.
  unsigned sum = 0;
  for (const auto& t : (*file)->tensors()) {
    FUZZ_CHECK(t.num_elements() >= 0);
    FUZZ_CHECK(t.nbytes ==
               static_cast<size_t>(t.num_elements()) * griffin::loader::DTypeSize(t.dtype));
    FUZZ_CHECK((*file)->Find(t.name) != nullptr);
    for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
  }
  volatile unsigned sink = sum;
  (void)sink;
  return 0;
}
