// See host_snapshot.h.
#include "engine/host_snapshot.h"

#include <algorithm>
#include <cstring>

namespace griffin::engine {

HostSnapshot::HostSnapshot(int64_t size)
    : memory_(new uint8_t[static_cast<size_t>(std::max<int64_t>(size, 1))](),
              [](uint8_t* p) { delete[] p; }),
      size_(size) {}

HostSnapshot::HostSnapshot(Backend::SnapshotMemory memory, int64_t size)
    : memory_(std::move(memory)), size_(size) {}

bool HostSnapshot::operator==(const HostSnapshot& other) const {
  return size_ == other.size_ &&
         std::memcmp(memory_.get(), other.memory_.get(), static_cast<size_t>(size_)) == 0;
}

std::shared_ptr<SnapshotPool> SnapshotPool::Create(Backend* backend, int64_t bytes, int max_free) {
  return std::shared_ptr<SnapshotPool>(new SnapshotPool(backend, bytes, max_free));
}

std::shared_ptr<HostSnapshot> SnapshotPool::Take() {
  Backend::SnapshotMemory memory(nullptr, [](uint8_t*) {});
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      memory = std::move(free_.back());
      free_.pop_back();
    } else {
      ++allocations_;
    }
  }
  if (memory == nullptr) memory = backend_->AllocateSnapshotMemory(bytes_);
  std::weak_ptr<SnapshotPool> pool = weak_from_this();
  return std::shared_ptr<HostSnapshot>(new HostSnapshot(std::move(memory), bytes_),
                                       [pool](HostSnapshot* s) {
                                         Backend::SnapshotMemory m = std::move(*s).Release();
                                         delete s;
                                         if (auto p = pool.lock()) p->Recycle(std::move(m));
                                       });
}

void SnapshotPool::Recycle(Backend::SnapshotMemory memory) {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(free_.size()) < max_free_) free_.push_back(std::move(memory));
  // Otherwise `memory` frees itself here.
}

int SnapshotPool::free_buffers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(free_.size());
}

int64_t SnapshotPool::allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocations_;
}

}  // namespace griffin::engine
