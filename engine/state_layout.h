// The bytes of one sequence's decode state (a "slot"), the same for both backends up to the
// activation dtype and alignment: what admission control budgets with, what the kernels address,
// and what copying, snapshotting and restoring a slot move. Its size does not depend on the
// sequence's length (SPEC.md §3).
//
//   [RG-LRU state  float32 [L]]               x recurrent layers
//   [conv tail     act     [K-1, L]]          x recurrent layers  (oldest input first)
//   [key ring      act     [W, KV, head_dim]] x attention layers  (position p at row p mod W,
//   [value ring    act     [W, KV, head_dim]] x attention layers   keys post-RoPE)
//
// act is float32 on the CPU backend and bf16 on the CUDA backend. Each region starts on a multiple
// of `region_alignment` bytes, the slot's stride is a multiple of `slot_alignment` (for the 2B and 9B
// shapes both roundings add nothing). The slot's next position (its sequence's length so far) is
// kept beside the bytes by the backend and travels with them in snapshots.
#ifndef GRIFFIN_ENGINE_STATE_LAYOUT_H_
#define GRIFFIN_ENGINE_STATE_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "loader/model_config.h"

namespace griffin::engine {

// The state's bytes by kind, without alignment padding.
struct StateSize {
  int64_t lru_bytes = 0;   // RG-LRU hidden state, float32, [recurrent layers, lru_width]
  int64_t conv_bytes = 0;  // conv tails, [recurrent layers, conv1d_width - 1, lru_width]
  int64_t kv_bytes = 0;    // K and V rings, [attention layers, 2, window, kv_heads, head_dim]
  int64_t total() const { return lru_bytes + conv_bytes + kv_bytes; }
};

class StateLayout {
 public:
  enum class RegionKind { kLruState, kConvTail, kKeyRing, kValueRing };
  struct Region {
    RegionKind kind;
    int block_index;  // among the recurrent (LRU, conv) or attention (rings) layers
    int64_t offset;   // bytes from the slot's start
    int64_t bytes;
    int element_bytes;
  };

  // `activation_bytes`: 4 (float32) or 2 (bf16) for the conv tails and KV rings; the RG-LRU
  // state is always float32. Alignments are powers of two >= 1.
  static StateLayout Make(const loader::ModelConfig& config, int activation_bytes,
                          int64_t region_alignment, int64_t slot_alignment);
  // The float32 CPU backend's layout (no padding) and the CUDA backend's (bf16, 16-byte regions,
  // 256-byte slots).
  static StateLayout ForCpu(const loader::ModelConfig& config);
  static StateLayout ForCuda(const loader::ModelConfig& config);

  int64_t lru_offset(int recurrent_index) const { return lru_[recurrent_index]; }
  int64_t conv_offset(int recurrent_index) const { return conv_[recurrent_index]; }
  int64_t key_offset(int attention_index) const { return keys_[attention_index]; }
  int64_t value_offset(int attention_index) const { return values_[attention_index]; }

  // Bytes from one slot's start to the next's: what a slot costs.
  int64_t slot_bytes() const { return slot_bytes_; }
  int activation_bytes() const { return activation_bytes_; }
  const StateSize& size() const { return size_; }
  const std::vector<Region>& regions() const { return regions_; }

  // A short text naming the geometry ("lru 18x2560 f32, conv 18x3x2560 bf16, kv 8x2048x1x256
  // bf16, slot 17238016 B"): snapshots taken under one layout restore only under an equal one.
  const std::string& description() const { return description_; }
  bool operator==(const StateLayout& other) const { return description_ == other.description_; }

 private:
  StateLayout() = default;

  int activation_bytes_ = 0;
  std::vector<int64_t> lru_, conv_, keys_, values_;
  std::vector<Region> regions_;
  int64_t slot_bytes_ = 0;
  StateSize size_;
  std::string description_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_STATE_LAYOUT_H_
