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

// One entry of a step as the kernels see it: entry e owns the step's tokens [start, start + len)
// (tokens of all entries are flattened in entry order), which belong to state slot `slot`; the
// first has position pos0. Written on the host by engine/cuda_step_layout.cc (the one packer),
// read on the device through kernels/step_layout.cuh.
struct alignas(16) StepEntryRecord {
  int32_t start;
  int32_t len;
  int32_t slot;
  int32_t pos0;
};
static_assert(sizeof(StepEntryRecord) == 16, "the device reads entries as 16-byte records");
// Arrays of records handed to kernels must start on 16 bytes (engine/cuda_step_layout.cc places
// them so; cudaMalloc'ed arrays are).

// A tile of consecutive query tokens of one entry (the attention kernels' work unit). A tile may
// be cut into two parts by key position (part 0: its keys before key_split, part 1: the rest), each
// a record of its own: a block per part, both writing partial results that the split combine
// merges (a prefill pass whose latest tiles would otherwise bound it; engine/attention_tile_plan.h).
struct alignas(16) QueryTile {
  int32_t first_token;
  int32_t count;
  int32_t part = -1;  // -1: the tile's whole key range
  int32_t key_split = 0;
};
static_assert(sizeof(QueryTile) == 16, "the device reads tiles as 16-byte records");

// The step's token layout, shared by every sequence-aware kernel.
struct TokenLayout {
  const int32_t* tok_entry = nullptr;        // [num_tokens] entry index of each token
  const StepEntryRecord* entries = nullptr;  // [num_entries]
};

// Where the state of one layer lives inside the slot pool: slot s's bytes start at
// pool + s * slot_stride; `offset` is the layer's offset inside a slot.
struct StateRef {
  char* pool = nullptr;
  int64_t slot_stride = 0;
};

// Scales a kernel applies to a float32 input [rows, cols] as it reads it, instead of a pass over
// that input: v = in[r, c] * (rows[r] * cols[c]), with rows == nullptr meaning 1. They are an FP8
// GEMM's per-token activation scales and per-output-row weight scales (Gemm::RunFp8Unscaled);
// the arithmetic is LaunchScaleRowsAndColumns's, so deferring the scales to the consumer changes
// no bit. cols == nullptr: the input is already scaled.
struct InputScales {
  const float* rows = nullptr;
  const float* cols = nullptr;
  constexpr bool any() const { return cols != nullptr; }
};

// Rows as FP8 E4M3 codes with one float32 scale per row (a W8A8 GEMM's activations), when a kernel
// writes them beside its bf16 output: codes [rows, cols], scales [rows].
struct Fp8Rows {
  uint8_t* codes = nullptr;
  float* scales = nullptr;
};

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_TYPES_H_
