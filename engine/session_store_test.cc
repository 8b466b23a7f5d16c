#include "engine/session_store.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

class SessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / absl::StrCat("griffin_sessions_", getpid()))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  SessionStoreOptions Options(int64_t memory_bytes, bool with_dir) {
    SessionStoreOptions o;
    o.ttl = absl::Minutes(10);
    o.memory_bytes = memory_bytes;
    if (with_dir) o.dir = dir_;
    return o;
  }
  std::unique_ptr<SessionStore> Store(int64_t memory_bytes, bool with_dir, uint64_t model = 7,
                                      std::string layout = "layout A") {
    return std::make_unique<SessionStore>(Options(memory_bytes, with_dir), model, layout,
                                          [this] { return now_; });
  }
  static SessionState State(int tokens, uint8_t fill) {
    SessionState s;
    for (int i = 0; i < tokens; ++i) s.tokens.push_back(100 + i);
    s.position = tokens;
    auto snapshot = std::make_shared<HostSnapshot>(1000);
    std::fill(snapshot->mutable_bytes().begin(), snapshot->mutable_bytes().end(), fill);
    s.snapshot = std::move(snapshot);
    return s;
  }

  std::string dir_;
  absl::Time now_ = absl::FromUnixSeconds(1'000'000);
};

TEST_F(SessionStoreTest, CreateAcquireReleaseContinue) {
  auto store = Store(1 << 20, false);
  auto id = store->Create();
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(SessionStore::ValidId(*id));
  auto first = store->Acquire(*id);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->position, 0);  // a new session starts empty
  // A second request on the same session while the first holds it: 409 / ABORTED.
  EXPECT_EQ(store->Acquire(*id).status().code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(store->Release(*id, State(5, 1)).ok());
  auto second = store->Acquire(*id);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->position, 5);
  EXPECT_EQ(*second->snapshot, *State(5, 1).snapshot);
  store->Abandon(*id);  // a failed request leaves the saved state as it was
  EXPECT_EQ(store->Acquire(*id)->position, 5);
}

TEST_F(SessionStoreTest, ANewSessionWhoseFirstRequestFailsIsGone) {
  auto store = Store(1 << 20, false);
  auto id = store->Create();
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(store->Acquire(*id).ok());
  EXPECT_EQ(store->stats().sessions, 1);
  store->Abandon(*id);  // the first request failed: nothing was ever saved
  EXPECT_EQ(store->stats().sessions, 0);
  EXPECT_EQ(store->Acquire(*id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionStoreTest, UnknownMalformedAndExpiredIdsAreNotFound) {
  auto store = Store(1 << 20, false);
  EXPECT_EQ(store->Acquire("0123456789abcdef0123456789abcdef").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Acquire("../../etc/passwd").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Acquire("").status().code(), absl::StatusCode::kNotFound);
  auto id = store->Create();
  ASSERT_TRUE(id.ok());
  now_ += absl::Minutes(11);
  EXPECT_EQ(store->Acquire(*id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->stats().expired, 1);
  EXPECT_EQ(store->stats().sessions, 0);
}

TEST_F(SessionStoreTest, IdsAreDistinctAndUnguessable) {
  auto store = Store(1 << 20, false);
  std::set<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.insert(*store->Create());
  EXPECT_EQ(ids.size(), 200u);
}

// Past the memory cap the least recently used idle session goes to disk and comes back on demand;
// without a directory it is dropped.
TEST_F(SessionStoreTest, SpillsToDiskAndReloads) {
  auto store = Store(2500, true);  // room for two 1000-byte snapshots
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(*store->Create());
    ASSERT_TRUE(store->Acquire(ids[i]).ok());
    ASSERT_TRUE(store->Release(ids[i], State(3 + i, uint8_t(i))).ok());
  }
  EXPECT_EQ(store->stats().spilled, 1);
  EXPECT_LE(store->stats().memory_bytes, 2500);
  auto back = store->Acquire(ids[0]);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->position, 3);
  EXPECT_EQ(*back->snapshot, *State(3, 0).snapshot);

  auto no_dir = Store(2500, false);
  std::vector<std::string> gone;
  for (int i = 0; i < 3; ++i) {
    gone.push_back(*no_dir->Create());
    ASSERT_TRUE(no_dir->Acquire(gone[i]).ok());
    ASSERT_TRUE(no_dir->Release(gone[i], State(3, 1)).ok());
  }
  EXPECT_EQ(no_dir->Acquire(gone[0]).status().code(), absl::StatusCode::kNotFound);
}

// Drain and restart: a new store over the same directory serves the saved conversation; a file
// from another model or layout, a corrupted one and a truncated one are refused with their own
// errors, and nothing else is lost.
TEST_F(SessionStoreTest, SurvivesARestartAndRefusesForeignOrDamagedFiles) {
  std::string a, b, c, d;
  {
    auto store = Store(1 << 20, true);
    for (std::string* id : {&a, &b, &c, &d}) {
      *id = *store->Create();
      ASSERT_TRUE(store->Acquire(*id).ok());
      ASSERT_TRUE(store->Release(*id, State(4, 9)).ok());
    }
    ASSERT_TRUE(store->Flush().ok());
  }
  auto path = [&](const std::string& id) { return dir_ + "/" + id + ".session"; };
  {  // corrupt one byte of b's snapshot, truncate c
    std::fstream f(path(b), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x42');
  }
  std::filesystem::resize_file(path(c), std::filesystem::file_size(path(c)) - 10);
  auto restarted = Store(1 << 20, true);
  auto got = restarted->Acquire(a);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->position, 4);
  EXPECT_EQ(restarted->Acquire(b).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(restarted->Acquire(c).status().code(), absl::StatusCode::kDataLoss);
  auto other_model = Store(1 << 20, true, /*model=*/8);
  EXPECT_EQ(other_model->Acquire(d).status().code(), absl::StatusCode::kFailedPrecondition);
  auto other_layout = Store(1 << 20, true, 7, "layout B");
  EXPECT_EQ(other_layout->Acquire(d).status().code(), absl::StatusCode::kFailedPrecondition);
  auto fine = Store(1 << 20, true);
  EXPECT_TRUE(fine->Acquire(d).ok());
}

TEST_F(SessionStoreTest, OwnersAreKeptApartAcrossARestart) {
  std::string id;
  {
    auto store = Store(1 << 20, true);
    id = *store->Create("tenant-a");
    // Another owner gets what an unknown id gets, whether the session is busy or idle.
    EXPECT_EQ(store->Acquire(id, "tenant-b").status().code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE(store->Acquire(id, "tenant-a").ok());
    EXPECT_EQ(store->Acquire(id, "tenant-b").status().code(), absl::StatusCode::kNotFound);
    SessionState pending = State(6, 3);
    pending.position = 5;  // the last sampled token is not fed yet
    ASSERT_TRUE(store->Release(id, pending).ok());
    EXPECT_EQ(store->Acquire(id).status().code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE(store->Flush().ok());
  }
  auto restarted = Store(1 << 20, true);
  EXPECT_EQ(restarted->Acquire(id, "tenant-b").status().code(), absl::StatusCode::kNotFound);
  auto back = restarted->Acquire(id, "tenant-a");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->position, 5);
  EXPECT_EQ(back->tokens.size(), 6u);
}

TEST_F(SessionStoreTest, AFileOfTheFirstFormatIsStale) {
  std::string id;
  {
    auto store = Store(1 << 20, true);
    id = *store->Create();
    ASSERT_TRUE(store->Acquire(id).ok());
    ASSERT_TRUE(store->Release(id, State(4, 9)).ok());
    ASSERT_TRUE(store->Flush().ok());
  }
  {
    std::fstream f(dir_ + "/" + id + ".session", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(7);
    f.put('1');
  }
  auto restarted = Store(1 << 20, true);
  EXPECT_EQ(restarted->Acquire(id).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace griffin::engine
