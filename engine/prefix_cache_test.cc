#include "engine/prefix_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/cpu_backend.h"
#include "engine/forwarding_backend.h"
#include "engine/random_checkpoint.h"
#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

using loader::BlockType;

class PrefixCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = TinyConfig({BlockType::kRecurrent, BlockType::kRecurrent, BlockType::kAttention}, 3,
                         /*window=*/6);
    dir_ = (std::filesystem::temp_directory_path() / absl::StrCat("griffin_prefix_", getpid()))
               .string();
    ASSERT_TRUE(WriteRandomCheckpoint(dir_, config_, 77).ok());
    auto checkpoint = loader::Checkpoint::Open(dir_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    auto backend = CpuBackend::Create(*checkpoint_, /*num_slots=*/8);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    for (int s = 7; s >= 3; --s) idle_.push_back(s);  // slots 0-2 are the "running" ones
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A cache over `backend` (default: backend_) that borrows from idle_.
  std::unique_ptr<PrefixCache> MakeCache(int device_entries, int host_entries,
                                         Backend* backend = nullptr) {
    if (backend == nullptr) backend = backend_.get();
    PrefixCacheOptions o;
    o.block_tokens = 4;
    o.max_device_entries = device_entries;
    o.host_bytes = host_entries * backend->state_layout()->slot_bytes();
    return std::make_unique<PrefixCache>(
        backend, o, /*model_identity=*/1234,
        [this]() -> int {
          if (idle_.empty()) return -1;
          const int s = idle_.back();
          idle_.pop_back();
          return s;
        },
        [this](int s) { idle_.push_back(s); });
  }

  std::vector<int32_t> Tokens(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> dist(3, config_.vocab_size - 1);
    std::vector<int32_t> t(n);
    for (auto& v : t) v = dist(rng);
    return t;
  }

  // Feeds tokens[from, to) into `slot` (from == 0 starts the sequence).
  void Feed(int slot, const std::vector<int32_t>& tokens, int from, int to) {
    StepEntry e{.slot = slot,
                .position = from,
                .tokens = absl::MakeConstSpan(tokens).subspan(from, to - from),
                .logits = LogitsRequest::kNone};
    ASSERT_TRUE(backend_->Step({&e, 1}, {}).ok());
  }
  // Logits after feeding tokens[from, to) into `slot`.
  std::vector<float> LastLogits(int slot, const std::vector<int32_t>& tokens, int from, int to) {
    std::vector<float> logits(config_.vocab_size, NAN);
    StepEntry e{.slot = slot,
                .position = from,
                .tokens = absl::MakeConstSpan(tokens).subspan(from, to - from)};
    EXPECT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits)).ok());
    return logits;
  }

  loader::ModelConfig config_;
  std::string dir_;
  std::unique_ptr<loader::Checkpoint> checkpoint_;
  std::unique_ptr<CpuBackend> backend_;
  std::vector<int> idle_;
};

// ST-1 / RST-1: a request whose prefix is cached, restored and prefilled from there, gets the
// logits of the same request prefilled from scratch (cached prefixes at every phase relative to
// the window of 6, from both tiers).
TEST_F(PrefixCacheTest, RestoredPrefixContinuesLikeAFreshPrefill) {
  for (int device : {1, 0}) {
    auto cache = MakeCache(device, /*host_entries=*/4);
    const uint64_t ns = cache->Namespace("");
    for (int prefix : {1, 5, 6, 7, 15}) {
      const auto tokens = Tokens(prefix + 5, prefix + 100 * device);
      Feed(0, tokens, 0, prefix);
      ASSERT_TRUE(cache->Insert(ns, absl::MakeConstSpan(tokens).subspan(0, prefix), 0).ok());
      const auto fresh = LastLogits(1, tokens, 0, prefix + 5);
      auto restored = cache->RestoreLongest(ns, tokens, 2);
      ASSERT_TRUE(restored.ok()) << restored.status();
      ASSERT_EQ(*restored, prefix) << "device " << device;
      const auto continued = LastLogits(2, tokens, prefix, prefix + 5);
      for (int v = 0; v < config_.vocab_size; ++v) {
        ASSERT_NEAR(continued[v], fresh[v], 1e-5) << "prefix " << prefix << " device " << device;
      }
    }
    EXPECT_EQ(cache->stats().hits, 5);
    EXPECT_EQ(cache->stats().hit_tokens, 1 + 5 + 6 + 7 + 15);
  }
}

TEST_F(PrefixCacheTest, LongestPrefixWinsAndAWholePromptLeavesOneTokenToFeed) {
  auto cache = MakeCache(2, 2);
  const uint64_t ns = cache->Namespace("");
  const auto tokens = Tokens(12, 1);
  Feed(0, tokens, 0, 4);
  ASSERT_TRUE(cache->Insert(ns, absl::MakeConstSpan(tokens).subspan(0, 4), 0).ok());
  Feed(0, tokens, 4, 8);
  ASSERT_TRUE(cache->Insert(ns, absl::MakeConstSpan(tokens).subspan(0, 8), 0).ok());
  auto got = cache->RestoreLongest(ns, tokens, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 8);
  EXPECT_EQ(backend_->NextPosition(1), 8);
  // A prompt that is exactly a cached prefix restores the shorter one (RST-2: the last token is
  // fed, not applied twice).
  got = cache->RestoreLongest(ns, absl::MakeConstSpan(tokens).subspan(0, 8), 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 4);
  // A different token inside the prefix: no hit past it.
  auto other = tokens;
  other[5] = other[5] == 3 ? 4 : 3;
  got = cache->RestoreLongest(ns, other, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 4);
}

// SEC-10: different salts (tenants) never share entries.
TEST_F(PrefixCacheTest, NamespacesAreSeparate) {
  auto cache = MakeCache(2, 2);
  const auto tokens = Tokens(10, 2);
  Feed(0, tokens, 0, 8);
  ASSERT_TRUE(
      cache->Insert(cache->Namespace("tenant-a"), absl::MakeConstSpan(tokens).subspan(0, 8), 0)
          .ok());
  EXPECT_NE(cache->Namespace("tenant-a"), cache->Namespace("tenant-b"));
  EXPECT_NE(cache->Namespace(""), cache->Namespace("tenant-a"));
  auto got = cache->RestoreLongest(cache->Namespace("tenant-b"), tokens, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 0);
  got = cache->RestoreLongest(cache->Namespace(""), tokens, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 0);
  got = cache->RestoreLongest(cache->Namespace("tenant-a"), tokens, 1);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 8);
}

// Device entries beyond the limit move to the host tier, least recently used first; the host
// tier drops its least recently used; ReclaimSlot hands a slot back and keeps the state on the
// host.
TEST_F(PrefixCacheTest, LruAcrossTiers) {
  auto cache = MakeCache(/*device=*/2, /*host=*/2);
  const uint64_t ns = cache->Namespace("");
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(Tokens(9, 10 + i));
    Feed(0, prompts[i], 0, 8);
    ASSERT_TRUE(cache->Insert(ns, absl::MakeConstSpan(prompts[i]).subspan(0, 8), 0).ok());
  }
  // 0 and 1 went to the device, were demoted by 2 and 3 (host: 0, 1), then 4 demoted 2, which
  // pushed 0 out of the host tier.
  PrefixCacheStats s = cache->stats();
  EXPECT_EQ(s.device_entries, 2);
  EXPECT_EQ(s.host_entries, 2);
  EXPECT_EQ(s.demotions, 3);
  EXPECT_EQ(s.evictions, 1);
  auto hit = [&](int i) {
    auto got = cache->RestoreLongest(ns, prompts[i], 1);
    EXPECT_TRUE(got.ok());
    return got.ok() ? *got : -1;
  };
  EXPECT_EQ(hit(0), 0);
  for (int i = 1; i < 5; ++i) EXPECT_EQ(hit(i), 8) << i;
  // Reclaiming both device slots keeps their states on the host (dropping the oldest there).
  const size_t idle_before = idle_.size();
  const int a = cache->ReclaimSlot(), b = cache->ReclaimSlot();
  EXPECT_GE(a, 3);
  EXPECT_GE(b, 3);
  EXPECT_EQ(cache->ReclaimSlot(), -1);
  EXPECT_EQ(cache->device_slots_held(), 0);
  EXPECT_EQ(idle_.size(), idle_before);  // the engine owns the reclaimed slots now
  EXPECT_EQ(cache->stats().host_entries, 2);
  // The two most recently used survive (3 and 4 were touched last by the loop above).
  EXPECT_EQ(hit(4), 8);
  EXPECT_EQ(hit(3), 8);
}

// A backend whose StartSnapshot copies land only when FinishSnapshot is called, and which notes
// every misuse: a started copy's buffer reused or read before it landed.
class DeferredCopyBackend : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;

  absl::StatusOr<SnapshotTicket> StartSnapshot(int slot, absl::Span<uint8_t> out) override {
    for (const Pending& p : pending_) {
      if (p.out.data() == out.data()) ++misuses;  // a block still being written, reused
    }
    Pending p{.id = ++last_id_, .out = out, .bytes = std::vector<uint8_t>(out.size())};
    ASSIGN_OR_RETURN(const int64_t position, inner().SnapshotSlot(slot, absl::MakeSpan(p.bytes)));
    std::fill(out.begin(), out.end(), 0xEE);  // what a restore reads before the copy lands
    pending_.push_back(std::move(p));
    return SnapshotTicket{.id = last_id_, .position = position};
  }
  absl::Status FinishSnapshot(uint64_t id) override {
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->id != id) continue;
      std::copy(it->bytes.begin(), it->bytes.end(), it->out.begin());
      pending_.erase(it);
      break;
    }
    return absl::OkStatus();
  }
  absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                           int64_t next_position) override {
    for (const Pending& p : pending_) {
      if (p.out.data() == snapshot.data()) ++misuses;  // read before its copy landed
    }
    return inner().RestoreSlot(slot, snapshot, next_position);
  }
  size_t copies_in_flight() const { return pending_.size(); }

  int misuses = 0;

 private:
  struct Pending {
    uint64_t id;
    absl::Span<uint8_t> out;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> pending_;
  uint64_t last_id_ = 0;
};

// Copies to the host tier run beside the steps: a demoted entry's slot is reused (here: refilled
// with another prompt) before its copy has landed, and a later hit still restores the demoted
// state, never the bytes of a copy in flight; blocks are reused, and the cache destroyed, only
// after their copies landed.
TEST_F(PrefixCacheTest, HostCopiesInFlightAreWaitedForBeforeUse) {
  auto deferred = std::make_unique<DeferredCopyBackend>(std::move(backend_));
  DeferredCopyBackend* backend = deferred.get();
  {
    auto cache = MakeCache(/*device=*/1, /*host=*/2, backend);
    const uint64_t ns = cache->Namespace("");
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::vector<float>> fresh;
    for (int i = 0; i < 4; ++i) {
      prompts.push_back(Tokens(12, 40 + i));
      StepEntry fill{.slot = 0,
                     .position = 0,
                     .tokens = absl::MakeConstSpan(prompts[i]).subspan(0, 8),
                     .logits = LogitsRequest::kNone};
      ASSERT_TRUE(backend->Step({&fill, 1}, {}).ok());
      // Each insertion demotes the previous device entry; with two host blocks the fourth drops
      // the first, whose block the third's copy may not reuse before that copy has landed.
      ASSERT_TRUE(cache->Insert(ns, absl::MakeConstSpan(prompts[i]).subspan(0, 8), 0).ok());
      fresh.emplace_back(config_.vocab_size, NAN);
      StepEntry rest{
          .slot = 1, .position = 0, .tokens = absl::MakeConstSpan(prompts[i]).subspan(0, 12)};
      ASSERT_TRUE(backend->Step({&rest, 1}, absl::MakeSpan(fresh[i])).ok());
    }
    EXPECT_EQ(cache->stats().demotions, 3);
    EXPECT_EQ(cache->stats().evictions, 1);
    EXPECT_GT(backend->copies_in_flight(), 0u);
    for (int i : {2, 1}) {  // host entries, their copies possibly still in flight
      auto got = cache->RestoreLongest(ns, prompts[i], 2);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(*got, 8) << i;
      std::vector<float> continued(config_.vocab_size, NAN);
      StepEntry e{
          .slot = 2, .position = 8, .tokens = absl::MakeConstSpan(prompts[i]).subspan(8, 4)};
      ASSERT_TRUE(backend->Step({&e, 1}, absl::MakeSpan(continued)).ok());
      for (int v = 0; v < config_.vocab_size; ++v) {
        ASSERT_NEAR(continued[v], fresh[i][v], 1e-5) << "prompt " << i;
      }
    }
    // A second pass of insertions recycles every host block.
    for (int i = 0; i < 4; ++i) {
      std::vector<int32_t> other = Tokens(8, 90 + i);
      StepEntry fill{.slot = 0,
                     .position = 0,
                     .tokens = absl::MakeConstSpan(other),
                     .logits = LogitsRequest::kNone};
      ASSERT_TRUE(backend->Step({&fill, 1}, {}).ok());
      ASSERT_TRUE(cache->Insert(ns, other, 0).ok());
    }
    EXPECT_GT(backend->copies_in_flight(), 0u);
  }
  EXPECT_EQ(backend->copies_in_flight(), 0u) << "the cache was destroyed with copies in flight";
  EXPECT_EQ(backend->misuses, 0);
}

TEST_F(PrefixCacheTest, NoRoomAnywhereCachesNothing) {
  auto cache = MakeCache(0, 0);
  const auto tokens = Tokens(6, 3);
  Feed(0, tokens, 0, 5);
  ASSERT_TRUE(
      cache->Insert(cache->Namespace(""), absl::MakeConstSpan(tokens).subspan(0, 5), 0).ok());
  EXPECT_EQ(cache->stats().insertions, 0);
  // A slot whose position does not match the prefix is refused.
  EXPECT_EQ(
      cache->Insert(cache->Namespace(""), absl::MakeConstSpan(tokens).subspan(0, 4), 0).code(),
      absl::StatusCode::kInvalidArgument);
}

// The server's and engine_bench's sizing of the tiers from their MiB budgets.
TEST(PrefixCacheOptionsTest, ForBudgetCountsWholeSlotsAndIsOffWithoutRoomForOne) {
  constexpr int64_t kSlot = 17 << 20;  // a 2B slot, rounded
  std::optional<PrefixCacheOptions> o = PrefixCacheOptions::ForBudget(kSlot, 256, 64, 1024, 128);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->max_device_entries, 3);  // 64 MiB holds three whole 17 MiB slots
  EXPECT_EQ(o->host_bytes, int64_t{1024} << 20);
  EXPECT_EQ(o->block_tokens, 128);
  // Never more device entries than slots: the tier borrows idle slots.
  EXPECT_EQ(PrefixCacheOptions::ForBudget(kSlot, 2, 1024, 0)->max_device_entries, 2);
  // Host tier alone, device tier alone, and neither holding one slot.
  EXPECT_EQ(PrefixCacheOptions::ForBudget(kSlot, 256, 0, 17)->max_device_entries, 0);
  EXPECT_TRUE(PrefixCacheOptions::ForBudget(kSlot, 256, 17, 0).has_value());
  EXPECT_FALSE(PrefixCacheOptions::ForBudget(kSlot, 256, 16, 16).has_value());
  EXPECT_FALSE(PrefixCacheOptions::ForBudget(kSlot, 256, 0, 0).has_value());
}

}  // namespace
}  // namespace griffin::engine
