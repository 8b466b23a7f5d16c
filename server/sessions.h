// Sessions on the server side (issue 15): a request naming a `session_id` continues a saved
// conversation. The front ends (HTTP and gRPC) validate the request as usual, then OpenSession
// takes the session for the request (engine::SessionStore::Acquire, owned by the caller's tenant)
// and rewrites the engine request: its prompt becomes the session's unfed last token + the new
// tokens, `resume` the saved state, `keep_state` on. The Generation that runs the request ends the
// lease on the engine's output thread when the engine reports the end: Release with the new state on
// kStop/kLength, Abandon otherwise (abort, error, cancel: the saved state stays as it was).
#ifndef GRIFFIN_SERVER_SESSIONS_H_
#define GRIFFIN_SERVER_SESSIONS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine_core.h"
#include "engine/session_store.h"
#include "loader/tokenizer.h"

namespace griffin::server {

// One request's hold on a session, from Acquire until Finish (or its destructor, which abandons).
class SessionLease {
 public:
  SessionLease(engine::SessionStore* store, std::string id, engine::SessionState state);
  ~SessionLease();  // Abandon unless Finish ran
  SessionLease(const SessionLease&) = delete;
  SessionLease& operator=(const SessionLease&) = delete;

  const std::string& id() const { return id_; }
  // Whether the session holds a saved state (false for a new one: its first request prefills all).
  bool continues() const { return state_.position > 0; }
  // The saved token the state has not fed yet (the last sampled one), or -1.
  int32_t pending_token() const;

  // Sets `request` up to continue the session: for a session with a saved state, the prompt
  // (the new tokens only) is prefixed with the pending token and `resume` set; keep_state always.
  void Prepare(engine::ValidatedRequest* request);
  // On the engine's output thread with the request's last output; `outputs` are every sampled token.
  // Keeps the final state when the request ended kStop or kLength with one, else abandons.
  void Finish(const engine::EngineOutput& last, const std::vector<int32_t>& outputs);

 private:
  engine::SessionStore* store_;
  std::string id_;
  engine::SessionState state_;
  std::vector<int32_t> prompt_;  // what Prepare left in the request's prompt
  bool done_ = false;
};

// Turns a validated prompt of new tokens into the continuation of `lease`'s conversation (before
// Generation::Start, which prepends the pending token). A session with a saved state: the BOS that
// a text prompt or a chat rendering starts with goes (`starts_with_bos`); a chat turn first closes
// the previous model turn when it did not end with <end_of_turn> (`end_of_turn_id`, -1 when the
// vocabulary lacks it: the marker as text), then gets the newline the template puts after every
// turn. A new session keeps the prompt as it is.
void ContinueSessionPrompt(const SessionLease& lease, bool chat, bool starts_with_bos,
                           const loader::Tokenizer* tokenizer, int end_of_turn_id,
                           std::vector<int32_t>* prompt);

// Takes the session `session_id` ("new" creates one first) for `owner`: NOT_FOUND for an unknown,
// expired or another tenant's id; ABORTED while another request holds it; FAILED_PRECONDITION for
// a session saved by another model or format, or when the server keeps no sessions; DATA_LOSS for
// a damaged session file. The messages hold no client bytes.
absl::StatusOr<std::unique_ptr<SessionLease>> OpenSession(engine::SessionStore* store,
                                                          const std::string& session_id,
                                                          const std::string& owner);

// The prefix-cache namespace of a request: the tenant (API key owner) and the request's
// cache_salt together, so two tenants never share an entry even when they send equal salts.
std::string CacheNamespace(const std::string& tenant, const std::string& cache_salt);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_SESSIONS_H_
