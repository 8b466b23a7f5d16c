#include "server/memory_release.h"

#include <malloc.h>

#include <chrono>

namespace griffin::server {

MemoryReleaser::MemoryReleaser() : thread_([this] { Loop(); }) {}

MemoryReleaser::~MemoryReleaser() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void MemoryReleaser::NoteLargeRequest(size_t bytes) {
  (void)bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();
}

void MemoryReleaser::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return pending_ || stopping_; });
    if (stopping_) return;
    // Quiet for 100 ms: the request's buffers (body, JSON, token vectors, response) are freed by
    // then, and a burst of large requests costs one trim, not one each (but at least one a
    // second while the burst lasts).
    const auto first = std::chrono::steady_clock::now();
    do {
      pending_ = false;
      cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return pending_ || stopping_; });
      if (stopping_) return;
    } while (pending_ && std::chrono::steady_clock::now() - first < std::chrono::seconds(1));
    pending_ = false;
    lock.unlock();
    malloc_trim(0);
    trims_.fetch_add(1);
    lock.lock();
  }
}

}  // namespace griffin::server
