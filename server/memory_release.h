// Returning the memory of large transient requests to the system (RELIABILITY.md SEC-9).
//
// glibc's malloc keeps freed memory in its arenas (one per thread that allocated), and after a
// large block is freed it raises its mmap threshold, so the next large blocks come from an arena
// too: a server that tokenizes a few 4 MB prompts on several threads keeps gigabytes it no longer
// uses. After a request that allocated a lot (a large body, text or response), the front ends
// call NoteLargeRequest; a background thread then calls malloc_trim(0) once things are quiet
// (100 ms after the last such request), which gives free arena pages back (MADV_DONTNEED).
// Cheap when nothing is large: one relaxed atomic store per large request.
#ifndef GRIFFIN_SERVER_MEMORY_RELEASE_H_
#define GRIFFIN_SERVER_MEMORY_RELEASE_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

namespace griffin::server {

class MemoryReleaser {
 public:
  MemoryReleaser();
  ~MemoryReleaser();  // stops the thread
  MemoryReleaser(const MemoryReleaser&) = delete;
  MemoryReleaser& operator=(const MemoryReleaser&) = delete;

  // Thread-safe. `bytes`: roughly what the request allocated (its body, text or response).
  void NoteLargeRequest(size_t bytes);

  int64_t trims() const { return trims_.load(); }  // malloc_trim calls so far (tests, metrics)

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::atomic<int64_t> trims_{0};
  std::thread thread_;
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_MEMORY_RELEASE_H_
