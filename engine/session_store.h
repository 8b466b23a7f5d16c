// Saved conversations (issue 15): a session's whole past is one slot snapshot plus the token ids
// it covers, kept in host memory under an id the server hands out, so a later request sends only
// its new tokens and continues from the saved state instead of re-reading the history. With a
// directory, sessions are written to disk when evicted and at drain, and read back on demand, so a
// conversation survives a restart.
//
// Lifecycle: Create makes an empty session (the first request fills it). Acquire takes a session
// for one request (NOT_FOUND for an unknown or expired id, ABORTED while another request holds it,
// FAILED_PRECONDITION for a session saved by another model or state layout, DATA_LOSS for a
// corrupted or truncated file: nothing else is lost). Release stores the request's final state
// and frees it; Abandon frees it unchanged (the request failed), and removes it if it was never
// filled (the first request of a new session failed: a later use of its id is NOT_FOUND).
//
// Memory: at most `memory_bytes` of snapshots in memory; past that the least recently used idle
// session is written to the directory (or dropped without one). Sessions idle longer than `ttl`
// expire (and their files are removed).
//
// Owners: a session belongs to the owner that created it (the server passes the API key's tenant);
// Acquire with another owner is the same NOT_FOUND as an unknown id, so a tenant can neither use
// nor detect another's sessions. The owner is saved in the file, so it survives a restart.
//
// File format (little-endian): "GRFNSES2" | u64 model identity | u32 layout-description length |
// layout description | u32 owner length | owner | i64 position | u64 token count | tokens (i32) |
// u64 snapshot bytes | snapshot | u64 checksum of everything before it. A file of the first
// format ("GRFNSES1", no owner) is FAILED_PRECONDITION (a stale format).
//
// Thread-safe: every method takes the store's lock.
#ifndef GRIFFIN_ENGINE_SESSION_STORE_H_
#define GRIFFIN_ENGINE_SESSION_STORE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/host_snapshot.h"

namespace griffin::engine {

struct SessionState {
  // Everything the conversation holds: the tokens the state covers (prompt and outputs fed so
  // far), then at most one more: the last sampled token, not fed yet (EngineOutput::final_state),
  // which the next request feeds first.
  std::vector<int32_t> tokens;
  int64_t position = 0;  // tokens.size() or tokens.size() - 1 for a filled session; 0 for a new one
  // Backend::SnapshotSlot bytes, shared read-only with the requests that resume from them; null
  // for a new session.
  std::shared_ptr<const HostSnapshot> snapshot;
  int64_t snapshot_bytes() const { return snapshot != nullptr ? snapshot->size() : 0; }
};

struct SessionStoreOptions {
  absl::Duration ttl = absl::Hours(1);
  int64_t memory_bytes = int64_t{1} << 30;
  std::string dir;  // empty: sessions live in memory only
};

struct SessionStoreStats {
  int sessions = 0;  // in memory and on disk
  int64_t memory_bytes = 0;
  int64_t spilled = 0;  // written to the directory for room
  int64_t expired = 0;
};

class SessionStore {
 public:
  // `model_identity` and `layout_description` (StateLayout::description()) are written into every
  // file and checked on load. `now` is the clock (tests pass their own).
  SessionStore(const SessionStoreOptions& options, uint64_t model_identity,
               std::string layout_description, std::function<absl::Time()> now = absl::Now);

  // A new empty session; its id is 128 random bits in hex (unguessable: ids are capabilities).
  absl::StatusOr<std::string> Create(std::string owner = "");
  absl::StatusOr<SessionState> Acquire(const std::string& id, const std::string& owner = "");
  absl::Status Release(const std::string& id, SessionState state);
  void Abandon(const std::string& id);
  // Writes every idle in-memory session to the directory (drain); OK without a directory.
  absl::Status Flush();
  // Drops expired sessions (called by the others too).
  void Expire();
  SessionStoreStats stats() const;

  // Whether `id` is well formed (32 lowercase hex digits): checked before any lookup.
  static bool ValidId(const std::string& id);

 private:
  struct Session {
    std::string id;
    std::string owner;  // known once in memory (a session read back from disk: after ReadFile)
    SessionState state;
    bool in_memory = true;
    bool busy = false;
    absl::Time last_used;
    std::list<Session*>::iterator lru;  // in lru_ while in memory and idle
  };
  std::string PathOf(const std::string& id) const;
  absl::Status WriteFile(const Session& s) const;
  absl::StatusOr<SessionState> ReadFile(const std::string& id, std::string* owner) const;
  void ExpireLocked();
  void MakeRoomLocked(int64_t incoming);
  void EraseLocked(const std::string& id);

  const SessionStoreOptions options_;
  const uint64_t model_identity_;
  const std::string layout_;
  const std::function<absl::Time()> now_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_;
  std::list<Session*> lru_;  // idle in-memory sessions, most recent first
  int64_t memory_bytes_ = 0;
  SessionStoreStats stats_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_SESSION_STORE_H_
