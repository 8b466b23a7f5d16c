#include "server/sessions.h"

#include "absl/strings/str_cat.h"
#include "server/validation.h"
#include "spdlog/spdlog.h"

namespace griffin::server {

SessionLease::SessionLease(engine::SessionStore* store, std::string id, engine::SessionState state)
    : store_(store), id_(std::move(id)), state_(std::move(state)) {}

SessionLease::~SessionLease() {
  if (!done_) store_->Abandon(id_);
}

int32_t SessionLease::pending_token() const {
  if (state_.position + 1 != static_cast<int64_t>(state_.tokens.size())) return -1;
  return state_.tokens.back();
}

void SessionLease::Prepare(engine::ValidatedRequest* request) {
  request->keep_state = true;
  if (continues()) {
    const int32_t pending = pending_token();
    if (pending >= 0) request->prompt.insert(request->prompt.begin(), pending);
    auto resume = std::make_shared<engine::SequenceState>();
    resume->position = state_.position;
    resume->snapshot = state_.snapshot;  // shared, not copied: nothing writes it again
    request->resume = std::move(resume);
  }
  prompt_ = request->prompt;
}

void SessionLease::Finish(const engine::EngineOutput& last, const std::vector<int32_t>& outputs) {
  if (done_) return;
  done_ = true;
  const bool kept = last.final_state != nullptr && (last.reason == engine::FinishReason::kStop ||
                                                    last.reason == engine::FinishReason::kLength);
  if (!kept) {
    store_->Abandon(id_);
    return;
  }
  engine::SessionState next;
  next.tokens.assign(state_.tokens.begin(), state_.tokens.begin() + state_.position);
  next.tokens.insert(next.tokens.end(), prompt_.begin(), prompt_.end());
  next.tokens.insert(next.tokens.end(), outputs.begin(), outputs.end());
  next.position = last.final_state->position;
  const int64_t count = static_cast<int64_t>(next.tokens.size());
  if (next.position != count && next.position + 1 != count) {
    // Never keep a state that does not match its tokens: the next turn would continue wrongly.
    spdlog::error("session {}: the final state covers {} tokens, not {}: not kept", id_,
                  next.position, count);
    store_->Abandon(id_);
    return;
  }
  next.snapshot = std::move(last.final_state->snapshot);  // nothing else reads it: no copy
  if (absl::Status s = store_->Release(id_, std::move(next)); !s.ok()) {
    spdlog::error("session {}: {}", id_, s.ToString());
  }
}

void ContinueSessionPrompt(const SessionLease& lease, bool chat, bool starts_with_bos,
                           const loader::Tokenizer* tokenizer, int end_of_turn_id,
                           std::vector<int32_t>* prompt) {
  if (!lease.continues()) return;
  if (starts_with_bos && !prompt->empty()) prompt->erase(prompt->begin());
  if (!chat || tokenizer == nullptr) return;
  std::vector<int32_t> head;
  std::string text = "\n";
  if (end_of_turn_id < 0) {
    text = "<end_of_turn>\n";
  } else if (lease.pending_token() != end_of_turn_id) {
    head.push_back(end_of_turn_id);
  }
  absl::StatusOr<std::vector<int>> newline = tokenizer->EncodeLiteral(text);
  if (newline.ok()) head.insert(head.end(), newline->begin(), newline->end());
  prompt->insert(prompt->begin(), head.begin(), head.end());
}

absl::StatusOr<std::unique_ptr<SessionLease>> OpenSession(engine::SessionStore* store,
                                                          const std::string& session_id,
                                                          const std::string& owner) {
  if (store == nullptr) {
    return absl::FailedPreconditionError(
        "session_id: this server keeps no sessions (--session_memory_mib 0, or a backend without "
        "state snapshots)");
  }
  std::string id = session_id;
  if (id == kNewSession) {
    absl::StatusOr<std::string> created = store->Create(owner);
    if (!created.ok()) return created.status();
    id = *created;
  }
  absl::StatusOr<engine::SessionState> state = store->Acquire(id, owner);
  if (!state.ok()) {
    const absl::Status& s = state.status();
    return absl::Status(s.code(), absl::StrCat("session_id: ", s.message()));
  }
  return std::make_unique<SessionLease>(store, std::move(id), std::move(*state));
}

std::string CacheNamespace(const std::string& tenant, const std::string& cache_salt) {
  // Length-prefixed, so no (tenant, salt) pair spells another's.
  return absl::StrCat(tenant.size(), ":", tenant, "|", cache_salt);
}

}  // namespace griffin::server
