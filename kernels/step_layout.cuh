// Device-side reading of a step's layout (kernels/types.h), shared by every sequence-aware kernel,
// so each writes the addressing once: which entry and position a token has, where a slot's state
// lives, where key/value position p of an entry is (this run's buffer or the slot's ring), and
// which key range a query tile (or one split of it) reads.
#ifndef GRIFFIN_KERNELS_STEP_LAYOUT_CUH_
#define GRIFFIN_KERNELS_STEP_LAYOUT_CUH_

#include "kernels/common.cuh"
#include "kernels/types.h"

namespace griffin::kernels {

__device__ __forceinline__ StepEntryRecord LoadEntry(const TokenLayout& layout, int e) {
  const int4 v = *reinterpret_cast<const int4*>(layout.entries + e);
  return {v.x, v.y, v.z, v.w};
}
__device__ __forceinline__ StepEntryRecord EntryOfToken(const TokenLayout& layout, int t) {
  return LoadEntry(layout, layout.tok_entry[t]);
}
// Position of step token t, which belongs to `entry`.
__device__ __forceinline__ int TokenPosition(const StepEntryRecord& entry, int t) {
  return entry.pos0 + (t - entry.start);
}

// A slot's state region at `offset` bytes (engine::StateLayout's offsets).
template <typename T>
__device__ __forceinline__ T* SlotRegion(const StateRef& state, int slot, int64_t offset) {
  return reinterpret_cast<T*>(state.pool + slot * state.slot_stride + offset);
}

// Keys (or values) of one entry for one attention layer: position p >= pos0 is row
// (start + p - pos0) of this step's run buffer ([n, KV, hd]); an earlier one is ring row p mod W
// of the slot ([W, KV, hd]), which the step has not written yet (the ring write comes last).
struct KvRows {
  const bf16* run;
  const bf16* ring;
  StepEntryRecord entry;
  int kv_heads, head_dim, window;

  // Element offset of (position p, kv head g, dim 0) and whether it is in the run buffer.
  __device__ __forceinline__ const bf16* Row(int p, int g) const {
    return Row(p, g, p >= entry.pos0 ? 0 : p % window);
  }
  // The same, for a caller that steps through consecutive keys and keeps ring_row = p mod W
  // itself (a division per key costs more than the copy it addresses).
  __device__ __forceinline__ const bf16* Row(int p, int g, int ring_row) const {
    const bool in_run = p >= entry.pos0;
    const int64_t row = in_run ? entry.start + p - entry.pos0 : ring_row;
    return (in_run ? run : ring) + (row * kv_heads + g) * head_dim;
  }
};

// Keys [lo, hi) that query positions [q_first, q_first + count) of a local window W read
// (itself plus W earlier each), cut into `splits` parts of whole `tile`-key tiles; part `split`'s
// share (possibly empty: lo >= hi).
struct KeyRange {
  int lo, hi;
};
__device__ __forceinline__ KeyRange KeysOfQueries(int q_first, int count, int window) {
  return {max(0, q_first - window), q_first + count};
}
__device__ __forceinline__ KeyRange SplitKeyRange(KeyRange all, int splits, int split, int tile) {
  int per = (all.hi - all.lo + splits - 1) / splits;
  per = (per + tile - 1) / tile * tile;
  const int lo = all.lo + split * per;
  return {lo, min(all.hi, lo + per)};
}
// The keys a tile record's block reads: the queries' range, or one part of it (QueryTile::part).
__device__ __forceinline__ KeyRange TileKeys(const QueryTile& tile, int q_first, int window) {
  const KeyRange all = KeysOfQueries(q_first, tile.count, window);
  if (tile.part < 0) return all;
  return tile.part == 0 ? KeyRange{all.lo, min(all.hi, tile.key_split)}
                        : KeyRange{max(all.lo, tile.key_split), all.hi};
}
// Whether query position qp sees key position kp (causal, within the window).
__device__ __forceinline__ bool Visible(int qp, int kp, int window) {
  return kp <= qp && qp - kp <= window;
}

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_STEP_LAYOUT_CUH_
