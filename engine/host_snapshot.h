// Saved slot states in host memory, shared instead of copied (issue 15's sessions).
//
// A session turn used to copy its 16.4 MiB (2B) snapshot twice on the request path (out of the
// session store, into the engine request) and to zero-fill a fresh one on the engine thread before
// SnapshotSlot wrote it: about 10 ms a turn (bench/RESULTS.md). A HostSnapshot is written once
// (by SnapshotSlot, or read from a session file) and then only read, so the store and every request
// resuming from it hold the same bytes through std::shared_ptr<const HostSnapshot>.
//
// SnapshotPool recycles page-locked buffers for the states the engine keeps (KeepState): pinning
// 16 MiB costs milliseconds, and a restore from page-locked memory runs at the link's speed
// (0.32 ms against about 1.1 ms pageable for one 2B slot).
#ifndef GRIFFIN_ENGINE_HOST_SNAPSHOT_H_
#define GRIFFIN_ENGINE_HOST_SNAPSHOT_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/types/span.h"
#include "engine/backend.h"

namespace griffin::engine {

class HostSnapshot {
 public:
  // `size` zeroed bytes of ordinary memory (a snapshot read back from a file, tests).
  explicit HostSnapshot(int64_t size);
  // Takes `memory` (at least `size` bytes), e.g. Backend::AllocateSnapshotMemory's.
  HostSnapshot(Backend::SnapshotMemory memory, int64_t size);
  HostSnapshot(const HostSnapshot&) = delete;
  HostSnapshot& operator=(const HostSnapshot&) = delete;

  int64_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return {memory_.get(), static_cast<size_t>(size_)}; }
  // Only while the snapshot is being written, before it is shared.
  absl::Span<uint8_t> mutable_bytes() { return {memory_.get(), static_cast<size_t>(size_)}; }
  bool operator==(const HostSnapshot& other) const;

  // Hands the memory back (the pool's recycling).
  Backend::SnapshotMemory Release() && { return std::move(memory_); }

 private:
  Backend::SnapshotMemory memory_;
  int64_t size_;
};

// Buffers of one size from Backend::AllocateSnapshotMemory, recycled: a snapshot taken from the
// pool returns its memory to the pool's free list when its last holder drops it (on whichever
// thread that is), and keeps at most `max_free` buffers there. Thread-safe. The pool may be
// destroyed before its snapshots: they then free their own memory.
class SnapshotPool : public std::enable_shared_from_this<SnapshotPool> {
 public:
  // `backend` must outlive every Take call (not the snapshots).
  static std::shared_ptr<SnapshotPool> Create(Backend* backend, int64_t bytes, int max_free);

  // A snapshot of `bytes` bytes to write before sharing: from the free list, else newly allocated.
  std::shared_ptr<HostSnapshot> Take();

  int64_t bytes() const { return bytes_; }
  int free_buffers() const;
  int64_t allocations() const;  // buffers the backend allocated (not taken from the free list)

 private:
  SnapshotPool(Backend* backend, int64_t bytes, int max_free)
      : backend_(backend), bytes_(bytes), max_free_(max_free) {}
  void Recycle(Backend::SnapshotMemory memory);

  Backend* backend_;
  const int64_t bytes_;
  const int max_free_;
  mutable std::mutex mu_;
  std::vector<Backend::SnapshotMemory> free_;
  int64_t allocations_ = 0;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_HOST_SNAPSHOT_H_
