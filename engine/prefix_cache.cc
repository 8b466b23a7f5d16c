#include "engine/prefix_cache.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <utility>

#include "base/hash.h"
#include "base/status_macros.h"

namespace griffin::engine {

std::optional<PrefixCacheOptions> PrefixCacheOptions::ForBudget(int64_t slot_bytes, int slots,
                                                                int64_t device_mib,
                                                                int64_t host_mib,
                                                                int64_t block_tokens) {
  PrefixCacheOptions o;
  o.block_tokens = block_tokens;
  o.max_device_entries = static_cast<int>(
      std::min<int64_t>(slots, (device_mib << 20) / std::max<int64_t>(slot_bytes, 1)));
  o.host_bytes = host_mib << 20;
  if (o.max_device_entries <= 0 && o.host_bytes < slot_bytes) return std::nullopt;
  return o;
}

namespace {
uint64_t Step(uint64_t h, int32_t token) {
  return Mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) * 0x100000001b3ull));
}
}  // namespace

uint64_t PrefixHash(uint64_t ns, absl::Span<const int32_t> prefix) {
  uint64_t h = ns;
  for (int32_t t : prefix) h = Step(h, t);
  return h;
}

PrefixCache::PrefixCache(Backend* backend, const PrefixCacheOptions& options,
                         uint64_t model_identity, std::function<int()> borrow_slot,
                         std::function<void(int)> return_slot)
    : backend_(backend),
      options_(options),
      model_identity_(model_identity),
      snapshot_bytes_(backend->state_layout() != nullptr ? backend->state_layout()->slot_bytes()
                                                         : 0),
      borrow_slot_(std::move(borrow_slot)),
      return_slot_(std::move(return_slot)) {
  options_.block_tokens = std::max<int64_t>(options_.block_tokens, 1);
  if (snapshot_bytes_ == 0) {  // a backend without snapshots: a cache that never holds anything
    options_.max_device_entries = 0;
    options_.host_bytes = 0;
  }
  const int64_t blocks = snapshot_bytes_ > 0 ? options_.host_bytes / snapshot_bytes_ : 0;
  if (blocks > 0) {
    host_memory_ = backend_->AllocateSnapshotMemory(blocks * snapshot_bytes_);
    for (int64_t b = blocks - 1; b >= 0; --b) free_blocks_.push_back(static_cast<int>(b));
  }
}

PrefixCache::~PrefixCache() {
  for (Entry* e : device_lru_) {
    return_slot_(e->slot);
    delete e;
  }
  for (Entry* e : host_lru_) {
    FinishHostCopy(e).IgnoreError();  // the copy writes into host_memory_, freed after this
    delete e;
  }
}

uint64_t PrefixCache::Namespace(std::string_view cache_salt) const {
  uint64_t h = Mix64(model_identity_ ^ 0x6772696666696e21ull);  // "griffin!"
  h = Mix64(h ^ cache_salt.size());
  for (unsigned char c : cache_salt) h = Mix64(h ^ c);
  return h;
}

PrefixCache::Entry* PrefixCache::Find(uint64_t ns, uint64_t hash,
                                      absl::Span<const int32_t> prefix) {
  auto it = index_.find(Key{hash, static_cast<int64_t>(prefix.size())});
  if (it == index_.end()) return nullptr;
  for (Entry* e : it->second) {
    if (e->ns == ns && absl::MakeConstSpan(e->tokens) == prefix) return e;
  }
  return nullptr;
}

void PrefixCache::Touch(Entry* e) {
  std::list<Entry*>& lru = e->slot >= 0 ? device_lru_ : host_lru_;
  lru.splice(lru.begin(), lru, e->lru);
}

void PrefixCache::Erase(Entry* e) {
  (e->slot >= 0 ? device_lru_ : host_lru_).erase(e->lru);
  const Key key{PrefixHash(e->ns, e->tokens), static_cast<int64_t>(e->tokens.size())};
  auto it = index_.find(key);
  if (it != index_.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), e), v.end());
    if (v.empty()) index_.erase(it);
  }
  if (e->host_block >= 0) {
    // The block is reused at once: its copy must have landed. A failed copy leaves the backend
    // unhealthy, and every later call reports that.
    FinishHostCopy(e).IgnoreError();
    free_blocks_.push_back(e->host_block);
  }
  delete e;
}

bool PrefixCache::MakeHostRoom() {
  if (host_memory_ == nullptr) return false;
  while (free_blocks_.empty()) {
    if (host_lru_.empty()) return false;
    Erase(host_lru_.back());
    ++stats_.evictions;
  }
  return true;
}

absl::Status PrefixCache::SnapshotToHost(int slot, Entry* e) {
  const int block = free_blocks_.back();
  if (options_.asynchronous_host_copies) {
    ASSIGN_OR_RETURN(const Backend::SnapshotTicket ticket,
                     backend_->StartSnapshot(slot, HostBlock(block)));
    e->host_copy = ticket.id;
  } else {
    RETURN_IF_ERROR(backend_->SnapshotSlot(slot, HostBlock(block)).status());
  }
  free_blocks_.pop_back();
  e->host_block = block;
  host_lru_.push_front(e);
  e->lru = host_lru_.begin();
  return absl::OkStatus();
}

absl::Status PrefixCache::FinishHostCopy(Entry* e) {
  if (e->host_copy == 0) return absl::OkStatus();
  const uint64_t id = std::exchange(e->host_copy, 0);
  return backend_->FinishSnapshot(id);
}

absl::Status PrefixCache::ToHost(Entry* e) {
  const int slot = e->slot;
  device_lru_.erase(e->lru);
  e->slot = -1;
  if (absl::Status st = SnapshotToHost(slot, e); !st.ok()) {
    e->slot = slot;  // still a device entry: back where it was, for the caller to drop
    device_lru_.push_back(e);
    e->lru = std::prev(device_lru_.end());
    return st;
  }
  return absl::OkStatus();
}

int PrefixCache::EvictDevice() {
  if (device_lru_.empty()) return -1;
  Entry* e = device_lru_.back();
  const int slot = e->slot;
  if (MakeHostRoom() && ToHost(e).ok()) {
    ++stats_.demotions;
  } else {
    Erase(e);
    ++stats_.evictions;
  }
  return slot;
}

int PrefixCache::ReclaimSlot() { return EvictDevice(); }

absl::StatusOr<int64_t> PrefixCache::RestoreLongest(uint64_t ns, absl::Span<const int32_t> tokens,
                                                    int slot) {
  ++stats_.queries;
  stats_.query_tokens += static_cast<int64_t>(tokens.size());
  if (index_.empty() || tokens.size() < 2) return 0;
  // Hashes of every prefix, then the longest one present (leaving at least one token to feed).
  std::vector<uint64_t> hashes(tokens.size());
  uint64_t h = ns;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) hashes[i + 1] = h = Step(h, tokens[i]);
  for (size_t len = tokens.size() - 1; len >= 1; --len) {
    Entry* e = Find(ns, hashes[len], tokens.subspan(0, len));
    if (e == nullptr) continue;
    const absl::Time start = absl::Now();
    if (e->slot >= 0) {
      RETURN_IF_ERROR(backend_->CopySlot(e->slot, slot));
    } else {
      RETURN_IF_ERROR(FinishHostCopy(e));
      RETURN_IF_ERROR(
          backend_->RestoreSlot(slot, HostBlock(e->host_block), static_cast<int64_t>(len)));
      ++stats_.host_restores;
    }
    stats_.restore_time += absl::Now() - start;
    Touch(e);
    ++stats_.hits;
    stats_.hit_tokens += static_cast<int64_t>(len);
    return static_cast<int64_t>(len);
  }
  return 0;
}

absl::Status PrefixCache::Insert(uint64_t ns, absl::Span<const int32_t> tokens, int slot) {
  if (tokens.empty() || snapshot_bytes_ == 0) return absl::OkStatus();
  if (backend_->NextPosition(slot) != static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError("the slot's position does not match the prefix");
  }
  const uint64_t hash = PrefixHash(ns, tokens);
  if (Entry* e = Find(ns, hash, tokens); e != nullptr) {
    Touch(e);
    return absl::OkStatus();
  }
  auto entry = std::make_unique<Entry>();
  entry->ns = ns;
  entry->tokens.assign(tokens.begin(), tokens.end());
  // Device tier: an idle slot, or the least recently used device entry's (moved to the host).
  int target = -1;
  if (options_.max_device_entries > 0) {
    if (static_cast<int>(device_lru_.size()) < options_.max_device_entries) target = borrow_slot_();
    if (target < 0 && !device_lru_.empty() &&
        static_cast<int>(device_lru_.size()) >= options_.max_device_entries) {
      target = EvictDevice();
    }
  }
  if (target >= 0) {
    const absl::Status copied = backend_->CopySlot(slot, target);
    if (!copied.ok()) {
      return_slot_(target);
      return copied;
    }
    entry->slot = target;
    device_lru_.push_front(entry.get());
    entry->lru = device_lru_.begin();
  } else {
    if (!MakeHostRoom()) return absl::OkStatus();  // no tier can hold it
    RETURN_IF_ERROR(SnapshotToHost(slot, entry.get()));
  }
  index_[Key{hash, static_cast<int64_t>(tokens.size())}].push_back(entry.get());
  entry.release();
  ++stats_.insertions;
  return absl::OkStatus();
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.device_entries = static_cast<int>(device_lru_.size());
  s.host_entries = static_cast<int>(host_lru_.size());
  s.device_bytes = s.device_entries * snapshot_bytes_;
  s.host_bytes = s.host_entries * snapshot_bytes_;
  return s;
}

}  // namespace griffin::engine
