#include "engine/session_store.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/hash.h"

namespace griffin::engine {

namespace {

constexpr char kMagic[8] = {'G', 'R', 'F', 'N', 'S', 'E', 'S', '2'};
constexpr char kStaleMagic[8] = {'G', 'R', 'F', 'N', 'S', 'E', 'S', '1'};  // before owners
// A file larger than this is not ours (a 9B slot is 25 MB; tokens are bounded by the context).
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 32;

// Integrity (not authenticity) of a file's bytes: 8 bytes at a time through a 64-bit mixer.
uint64_t Checksum(const std::string& bytes) {
  uint64_t h = Mix64(bytes.size());
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = Mix64(h ^ w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  return Mix64(h ^ tail);
}

template <typename T>
void Put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// Reads from a byte string with bounds checks; every failure is the same DATA_LOSS.
class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* v) {
    if (bytes_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool GetBytes(void* dst, uint64_t n) {
    if (bytes_.size() - pos_ < n) return false;
    std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& bytes_;
  size_t pos_ = 0;
};

}  // namespace

SessionStore::SessionStore(const SessionStoreOptions& options, uint64_t model_identity,
                           std::string layout_description, std::function<absl::Time()> now)
    : options_(options),
      model_identity_(model_identity),
      layout_(std::move(layout_description)),
      now_(std::move(now)) {}

bool SessionStore::ValidId(const std::string& id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string SessionStore::PathOf(const std::string& id) const {
  return absl::StrCat(options_.dir, "/", id, ".session");
}

absl::StatusOr<std::string> SessionStore::Create(std::string owner) {
  std::random_device random;
  std::string id;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 4; ++i) {  // 4 x 32 random bits
    const uint32_t v = random();
    for (int k = 0; k < 8; ++k) id += kHex[(v >> (4 * k)) & 15];
  }
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked();
  auto s = std::make_unique<Session>();
  s->id = id;
  s->owner = std::move(owner);
  s->last_used = now_();
  lru_.push_front(s.get());
  s->lru = lru_.begin();
  sessions_[id] = std::move(s);
  return id;
}

absl::StatusOr<SessionState> SessionStore::Acquire(const std::string& id,
                                                   const std::string& owner) {
  if (!ValidId(id)) return absl::NotFoundError("unknown session");
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked();
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    // Not in this process: a file from an earlier one (a restart), if any and not expired.
    if (options_.dir.empty()) return absl::NotFoundError("unknown or expired session");
    std::error_code ec;
    const auto written = std::filesystem::last_write_time(PathOf(id), ec);
    if (ec) return absl::NotFoundError("unknown or expired session");
    const auto age = std::filesystem::file_time_type::clock::now() - written;
    if (age > absl::ToChronoSeconds(options_.ttl)) {
      std::filesystem::remove(PathOf(id), ec);
      ++stats_.expired;
      return absl::NotFoundError("unknown or expired session");
    }
    auto s = std::make_unique<Session>();
    s->id = id;
    s->in_memory = false;
    s->last_used = now_();
    it = sessions_.emplace(id, std::move(s)).first;
  }
  Session& s = *it->second;
  // Another owner's session answers exactly as an unknown one, busy or not.
  if (s.in_memory && s.owner != owner) return absl::NotFoundError("unknown or expired session");
  if (s.busy) return absl::AbortedError("the session is in use by another request");
  if (!s.in_memory) {
    std::string file_owner;
    absl::StatusOr<SessionState> loaded = ReadFile(id, &file_owner);
    if (!loaded.ok()) {
      if (loaded.status().code() == absl::StatusCode::kNotFound) sessions_.erase(it);
      return loaded.status();
    }
    if (file_owner != owner) return absl::NotFoundError("unknown or expired session");
    s.owner = std::move(file_owner);
    MakeRoomLocked(loaded->snapshot_bytes());
    s.state = std::move(*loaded);
    s.in_memory = true;
    memory_bytes_ += s.state.snapshot_bytes();
  } else {
    lru_.erase(s.lru);
  }
  s.busy = true;
  s.last_used = now_();
  return s.state;
}

absl::Status SessionStore::Release(const std::string& id, SessionState state) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || !it->second->busy) {
    return absl::FailedPreconditionError("the session was not acquired");
  }
  Session& s = *it->second;
  memory_bytes_ -= s.state.snapshot_bytes();
  MakeRoomLocked(state.snapshot_bytes());
  s.state = std::move(state);
  memory_bytes_ += s.state.snapshot_bytes();
  s.busy = false;
  s.last_used = now_();
  lru_.push_front(&s);
  s.lru = lru_.begin();
  return absl::OkStatus();
}

void SessionStore::Abandon(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || !it->second->busy) return;
  Session& s = *it->second;
  if (s.in_memory && s.state.snapshot == nullptr) {
    // Created for this request and never filled: nothing to continue from, so it goes now rather
    // than holding an id (and a place in the count) until it expires.
    EraseLocked(id);
    return;
  }
  s.busy = false;
  s.last_used = now_();
  lru_.push_front(&s);
  s.lru = lru_.begin();
}

void SessionStore::MakeRoomLocked(int64_t incoming) {
  while (memory_bytes_ + incoming > options_.memory_bytes && !lru_.empty()) {
    Session* victim = lru_.back();
    lru_.pop_back();
    if (!options_.dir.empty() && WriteFile(*victim).ok()) {
      memory_bytes_ -= victim->state.snapshot_bytes();
      victim->state = SessionState{};
      victim->in_memory = false;
      ++stats_.spilled;
    } else {
      memory_bytes_ -= victim->state.snapshot_bytes();
      sessions_.erase(victim->id);  // no directory (or it failed): the session is gone
    }
  }
}

void SessionStore::EraseLocked(const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  if (s.in_memory) {
    if (!s.busy) lru_.erase(s.lru);
    memory_bytes_ -= s.state.snapshot_bytes();
  }
  if (!options_.dir.empty()) {
    std::error_code ec;
    std::filesystem::remove(PathOf(id), ec);
  }
  sessions_.erase(it);
}

void SessionStore::ExpireLocked() {
  const absl::Time now = now_();
  std::vector<std::string> expired;
  for (const auto& [id, s] : sessions_) {
    if (!s->busy && now - s->last_used > options_.ttl) expired.push_back(id);
  }
  for (const std::string& id : expired) {
    EraseLocked(id);
    ++stats_.expired;
  }
}

void SessionStore::Expire() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLocked();
}

absl::Status SessionStore::Flush() {
  if (options_.dir.empty()) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  for (Session* s : lru_) {
    if (s->in_memory) {
      absl::Status st = WriteFile(*s);
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status SessionStore::WriteFile(const Session& s) const {
  std::string bytes(kMagic, sizeof(kMagic));
  Put(bytes, model_identity_);
  Put(bytes, static_cast<uint32_t>(layout_.size()));
  bytes += layout_;
  Put(bytes, static_cast<uint32_t>(s.owner.size()));
  bytes += s.owner;
  Put(bytes, s.state.position);
  Put(bytes, static_cast<uint64_t>(s.state.tokens.size()));
  bytes.append(reinterpret_cast<const char*>(s.state.tokens.data()), s.state.tokens.size() * 4);
  const absl::Span<const uint8_t> snapshot =
      s.state.snapshot != nullptr ? s.state.snapshot->bytes() : absl::Span<const uint8_t>();
  Put(bytes, static_cast<uint64_t>(snapshot.size()));
  bytes.append(reinterpret_cast<const char*>(snapshot.data()), snapshot.size());
  Put(bytes, Checksum(bytes));
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  const std::string path = PathOf(s.id), tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) return absl::InternalError("cannot write a session file");
  }
  std::filesystem::rename(tmp, path, ec);  // whole or absent, never half written
  if (ec) return absl::InternalError("cannot write a session file");
  return absl::OkStatus();
}

absl::StatusOr<SessionState> SessionStore::ReadFile(const std::string& id,
                                                    std::string* owner) const {
  std::ifstream f(PathOf(id), std::ios::binary | std::ios::ate);
  if (!f) return absl::NotFoundError("unknown or expired session");
  const std::streamoff size = f.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > kMaxFileBytes) {
    return absl::DataLossError("the session file is damaged");
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  f.seekg(0);
  f.read(bytes.data(), size);
  if (!f) return absl::DataLossError("the session file is damaged");
  const absl::Status damaged = absl::DataLossError("the session file is damaged");
  if (bytes.size() >= sizeof(kMagic) &&
      std::memcmp(bytes.data(), kStaleMagic, sizeof(kStaleMagic)) == 0) {
    return absl::FailedPreconditionError("the session was saved by another model or format");
  }
  if (bytes.size() < sizeof(kMagic) + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return damaged;
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  const std::string body = bytes.substr(0, bytes.size() - 8);
  if (Checksum(body) != stored_sum) return damaged;
  Reader r(body);
  char magic[sizeof(kMagic)];
  uint64_t model = 0, count = 0, snapshot_bytes = 0;
  uint32_t layout_size = 0, owner_size = 0;
  SessionState state;
  if (!r.GetBytes(magic, sizeof(magic)) || !r.Get(&model) || !r.Get(&layout_size)) return damaged;
  std::string layout(layout_size, '\0');
  if (!r.GetBytes(layout.data(), layout_size)) return damaged;
  if (model != model_identity_ || layout != layout_) {
    return absl::FailedPreconditionError("the session was saved by another model or format");
  }
  if (!r.Get(&owner_size) || owner_size > body.size()) return damaged;
  owner->assign(owner_size, '\0');
  if (!r.GetBytes(owner->data(), owner_size)) return damaged;
  if (!r.Get(&state.position) || !r.Get(&count) || count > body.size() / 4) return damaged;
  state.tokens.resize(count);
  if (!r.GetBytes(state.tokens.data(), count * 4) || !r.Get(&snapshot_bytes) ||
      snapshot_bytes > body.size()) {
    return damaged;
  }
  if (snapshot_bytes > 0) {  // a file always holds one; an empty one stays null (never filled)
    auto snapshot = std::make_shared<HostSnapshot>(static_cast<int64_t>(snapshot_bytes));
    if (!r.GetBytes(snapshot->mutable_bytes().data(), snapshot_bytes)) return damaged;
    state.snapshot = std::move(snapshot);
  }
  if (r.pos() != body.size()) return damaged;
  // The state covers every token, or all but the last sampled one (not fed yet).
  const int64_t tokens = static_cast<int64_t>(state.tokens.size());
  if (state.position != tokens && state.position + 1 != tokens) return damaged;
  return state;
}

SessionStoreStats SessionStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SessionStoreStats s = stats_;
  s.sessions = static_cast<int>(sessions_.size());
  s.memory_bytes = memory_bytes_;
  return s;
}

}  // namespace griffin::engine
