// Plain C++ types shared by the kernel launchers and their host callers (no CUDA headers needed
// beyond cuda_runtime_api.h, so .cc files compiled by the host compiler can include the launchers).
#ifndef GRIFFIN_KERNELS_TYPES_H_
#define GRIFFIN_KERNELS_TYPES_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace griffin::kernels {

// bf16 storage as seen from host code (the bits of a __nv_bfloat16).
using bf16_t = uint16_t;

// Round-to-nearest-even float32 -> bf16 bits on the host (NaN stays NaN).
inline bf16_t HostToBf16(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) return 0x7fc0;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<bf16_t>(bits >> 16);
}
inline float HostFromBf16(bf16_t b) {
  uint32_t bits = uint32_t{b} << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// The step's token layout, shared by every sequence-aware kernel. Tokens of all entries are
// flattened in entry order; entry e owns tokens [start, start + len) of slot `slot`, whose first
// token has position pos0. entries is [num_entries][4] = {start, len, slot, pos0}.
struct TokenLayout {
  const int32_t* tok_entry = nullptr;  // [num_tokens] entry index of each token
  const int32_t* entries = nullptr;    // [num_entries][4]
};

// Where the state of one layer lives inside the slot pool: slot s's bytes start at
// pool + s * slot_stride; `offset` is the layer's offset inside a slot.
struct StateRef {
  char* pool = nullptr;
  int64_t slot_stride = 0;
};

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_TYPES_H_
