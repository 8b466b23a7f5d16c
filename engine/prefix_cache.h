// An exact cache of sequence states keyed by their token prefix (DESIGN.md "State as a first-class
// object"). A Griffin-family sequence's whole past is its slot's fixed-size state, so a prefix is
// one snapshot, not a tree of KV blocks: a new request restores the longest cached prefix of its
// tokens into its slot and prefills only the rest.
//
// Keys: a salted rolling hash over the token ids of a prefix (any length), seeded by the model's
// identity and the request's namespace (cache_salt / tenant), so one namespace never sees another's
// entries. Every entry also keeps its tokens and namespace, and a lookup compares them: a hash
// collision can cost a miss, never a wrong state.
//
// Tiers: device entries live in idle state slots the engine lends (copying a slot is one
// device-to-device copy); host entries are snapshots in host memory. Both are LRU. When the
// engine needs a slot back, the least recently used device entry moves to the host tier (or is
// dropped when the host tier is full), so a full cache never refuses an admission.
//
// Exactness: a restored slot continues exactly like the sequence it was taken from
// (Backend::RestoreSlot / CopySlot). The caller never restores a whole prompt: at least one token
// is left to feed so the last token is never applied twice (RELIABILITY.md RST-2).
//
// Thread-compatible: the engine thread owns it.
#ifndef GRIFFIN_ENGINE_PREFIX_CACHE_H_
#define GRIFFIN_ENGINE_PREFIX_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/backend.h"

namespace griffin::engine {

struct PrefixCacheOptions {
  int64_t block_tokens = 256;  // prefill snapshots at multiples of this many tokens (>= 1)
  int max_device_entries = 0;  // idle slots the cache may hold at once (device tier)
  int64_t host_bytes = 0;      // host tier capacity (snapshots of state_layout()->slot_bytes())
  // Copies to the host tier run beside the next steps (Backend::StartSnapshot) and are waited for
  // only when the entry is restored or dropped. False: each waits where it is made (for A/B runs).
  bool asynchronous_host_copies = true;

  // The tiers for memory budgets in MiB, as griffin-server's --prefix_cache_memory_mib and
  // --prefix_cache_host_mib give them: the device tier in whole idle slots, at most `slots` (it
  // borrows slots rather than adding any); the host tier in bytes. nullopt when neither tier holds
  // one slot's state: the cache is then off.
  static std::optional<PrefixCacheOptions> ForBudget(int64_t slot_bytes, int slots,
                                                     int64_t device_mib, int64_t host_mib,
                                                     int64_t block_tokens = 256);
};

struct PrefixCacheStats {
  int64_t queries = 0;       // lookups
  int64_t query_tokens = 0;  // prompt tokens looked up
  int64_t hit_tokens = 0;    // tokens restored instead of computed
  int64_t hits = 0;
  int64_t insertions = 0;
  int64_t evictions = 0;        // entries dropped for room
  int64_t demotions = 0;        // device entries moved to the host tier
  int64_t host_restores = 0;    // hits restored from the host tier (the rest: device slot copies)
  absl::Duration restore_time;  // the hits' CopySlot / RestoreSlot calls, summed
  int device_entries = 0;
  int host_entries = 0;
  int64_t device_bytes = 0;
  int64_t host_bytes = 0;
};

class PrefixCache {
 public:
  // `backend` must outlive the cache and support snapshots (state_layout() != null).
  // `model_identity` distinguishes models (weights, dtype, layout) sharing a cache directory or
  // process; `borrow_slot` returns an idle slot the cache may keep (or -1 when none is idle) and
  // `return_slot` gives one back.
  PrefixCache(Backend* backend, const PrefixCacheOptions& options, uint64_t model_identity,
              std::function<int()> borrow_slot, std::function<void(int)> return_slot);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // The key namespace of a request: the model identity hashed with its cache_salt (empty: the
  // shared namespace).
  uint64_t Namespace(std::string_view cache_salt) const;

  // Restores into `slot` the longest cached prefix of `tokens` that is shorter than `tokens` and
  // returns its length; 0 on a miss (the slot is untouched). Errors: the backend's (the slot is
  // then undefined and must be reset).
  absl::StatusOr<int64_t> RestoreLongest(uint64_t ns, absl::Span<const int32_t> tokens, int slot);

  // Records `slot`'s state as the state after exactly `tokens` (its next position must equal
  // tokens.size()). Prefers the device tier (an idle slot, one device copy), else the host tier;
  // evicts least recently used entries for room. An equal entry is only touched. OK without
  // inserting when neither tier has room.
  absl::Status Insert(uint64_t ns, absl::Span<const int32_t> tokens, int slot);

  // Frees one device entry's slot for the engine (the LRU one, moved to the host tier when it has
  // room, else dropped). -1 when the cache holds no slot.
  int ReclaimSlot();
  int device_slots_held() const { return static_cast<int>(device_lru_.size()); }

  const PrefixCacheOptions& options() const { return options_; }
  PrefixCacheStats stats() const;

 private:
  struct Entry {
    uint64_t ns = 0;
    std::vector<int32_t> tokens;
    int slot = -1;        // device tier
    int host_block = -1;  // host tier: its block of host_memory_
    // Host tier: the copy into host_block that may still be running (Backend::StartSnapshot's
    // ticket id; 0 once it has been waited for).
    uint64_t host_copy = 0;
    std::list<Entry*>::iterator lru;
  };
  using Key = std::pair<uint64_t, int64_t>;  // (prefix hash, length)

  Entry* Find(uint64_t ns, uint64_t hash, absl::Span<const int32_t> prefix);
  void Touch(Entry* e);
  void Erase(Entry* e);
  // Moves the LRU device entry to the host tier (or drops it); returns its slot.
  int EvictDevice();
  // Makes room for one host snapshot; false when the host tier cannot hold any.
  bool MakeHostRoom();
  absl::Status ToHost(Entry* e);
  // Copies `slot` into a free host block (the caller made room) and makes `e` its host entry.
  absl::Status SnapshotToHost(int slot, Entry* e);
  // Waits for e's copy to the host to complete.
  absl::Status FinishHostCopy(Entry* e);
  absl::Span<uint8_t> HostBlock(int block) {
    return absl::MakeSpan(host_memory_.get() + int64_t{block} * snapshot_bytes_,
                          static_cast<size_t>(snapshot_bytes_));
  }

  Backend* backend_;
  PrefixCacheOptions options_;
  uint64_t model_identity_;
  int64_t snapshot_bytes_;
  std::function<int()> borrow_slot_;
  std::function<void(int)> return_slot_;
  absl::flat_hash_map<Key, std::vector<Entry*>> index_;  // entries per key (collisions kept apart)
  std::list<Entry*> device_lru_, host_lru_;              // most recent first
  // The host tier: host_bytes / snapshot bytes blocks allocated once by the backend (pinned on a
  // GPU, so a restore runs at the link's speed), and the blocks no entry holds.
  Backend::SnapshotMemory host_memory_{nullptr, [](uint8_t*) {}};
  std::vector<int> free_blocks_;
  PrefixCacheStats stats_;
};

// Hash of `prefix` in namespace `ns`: h_0 = ns, h_{i+1} = mix(h_i, token_i). Exposed for tests.
uint64_t PrefixHash(uint64_t ns, absl::Span<const int32_t> prefix);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_PREFIX_CACHE_H_
