#include "engine/host_snapshot.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

// Snapshot buffers the backend below has handed out and not yet seen freed (SnapshotMemory's
// deleter is a plain function pointer, so the count is global).
std::atomic<int> g_live_buffers{0};

// A backend that only hands out snapshot memory, counting it.
class CountingBackend : public Backend {
 public:
  std::string_view name() const override { return "counting"; }
  const loader::ModelConfig& config() const override { return config_; }
  int num_slots() const override { return 1; }
  int64_t state_bytes_per_sequence() const override { return 0; }
  absl::Status Step(absl::Span<const StepEntry>, absl::Span<float>) override {
    return absl::OkStatus();
  }
  absl::Status ResetSlot(int) override { return absl::OkStatus(); }
  int64_t NextPosition(int) const override { return 0; }
  SnapshotMemory AllocateSnapshotMemory(int64_t bytes) override {
    ++allocated;
    g_live_buffers.fetch_add(1);
    return SnapshotMemory(new uint8_t[bytes], [](uint8_t* p) {
      g_live_buffers.fetch_sub(1);
      delete[] p;
    });
  }
  int allocated = 0;

 private:
  loader::ModelConfig config_;
};

TEST(SnapshotPoolTest, ABufferDroppedByItsLastHolderIsTakenAgain) {
  g_live_buffers = 0;
  CountingBackend backend;
  auto pool = SnapshotPool::Create(&backend, 64, 2);
  const uint8_t* first_bytes = nullptr;
  {
    std::shared_ptr<HostSnapshot> a = pool->Take();
    first_bytes = a->bytes().data();
    std::shared_ptr<const HostSnapshot> shared = a;  // a session and a request hold it
    a.reset();
    EXPECT_EQ(pool->free_buffers(), 0);  // still held
  }
  EXPECT_EQ(pool->free_buffers(), 1);
  auto again = pool->Take();
  EXPECT_EQ(again->bytes().data(), first_bytes);
  EXPECT_EQ(again->size(), 64);
  EXPECT_EQ(pool->allocations(), 1);
  EXPECT_EQ(backend.allocated, 1);
}

TEST(SnapshotPoolTest, KeepsAtMostMaxFreeAndFreesTheRest) {
  g_live_buffers = 0;
  CountingBackend backend;
  auto pool = SnapshotPool::Create(&backend, 32, 2);
  std::vector<std::shared_ptr<HostSnapshot>> held;
  for (int i = 0; i < 5; ++i) held.push_back(pool->Take());
  EXPECT_EQ(g_live_buffers.load(), 5);
  // Dropped on other threads, as the output thread and the front ends do.
  std::vector<std::thread> threads;
  for (auto& s : held) threads.emplace_back([s = std::move(s)]() mutable { s.reset(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(pool->free_buffers(), 2);
  EXPECT_EQ(g_live_buffers.load(), 2);
}

TEST(SnapshotPoolTest, SnapshotsOutliveThePool) {
  g_live_buffers = 0;
  CountingBackend backend;
  auto pool = SnapshotPool::Create(&backend, 16, 4);
  std::shared_ptr<HostSnapshot> kept = pool->Take();
  std::fill(kept->mutable_bytes().begin(), kept->mutable_bytes().end(), 7);
  pool.reset();
  EXPECT_EQ(kept->bytes()[15], 7);
  kept.reset();  // frees its own memory: no pool to return to
  EXPECT_EQ(g_live_buffers.load(), 0);
}

TEST(HostSnapshotTest, EqualityComparesBytes) {
  HostSnapshot a(8), b(8), c(9);
  EXPECT_TRUE(a == b);  // zeroed
  b.mutable_bytes()[3] = 1;
  EXPECT_FALSE(a == b);
  EXPECT_FALSE(a == c);
}

}  // namespace
}  // namespace griffin::engine
