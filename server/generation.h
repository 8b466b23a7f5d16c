// One generation request on the front-end side, shared by the gRPC and HTTP front ends: submits a
// ValidatedRequest to the engine, receives its token ids on the engine's output thread, and turns
// them into events on the caller's thread: UTF-8-safe text (TXT-2), stop strings matched across
// token boundaries and never emitted (TXT-5), finish reasons, usage, timings, metrics and the one
// log line per request.
#ifndef GRIFFIN_SERVER_GENERATION_H_
#define GRIFFIN_SERVER_GENERATION_H_

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/engine_core.h"
#include "loader/tokenizer.h"
#include "server/auth.h"
#include "server/detokenizer.h"
#include "server/memory_release.h"
#include "server/metrics.h"
#include "server/sessions.h"
#include "server/validation.h"

namespace griffin::server {

class Generation;

// What every front-end thread shares. Fields are set once at startup, except the atomics.
struct ServerState {
  engine::EngineCore* engine = nullptr;
  const loader::Tokenizer* tokenizer = nullptr;  // null: the model serves token ids only
  Metrics* metrics = nullptr;
  const ApiKeys* api_keys = nullptr;         // null or empty: no authentication
  MemoryReleaser* memory = nullptr;          // null: large requests are not followed by a trim
  engine::SessionStore* sessions = nullptr;  // null: session_id is refused (FAILED_PRECONDITION)
  Limits limits;
  ModelLimits model;
  std::string model_name;
  std::string backend_name;
  std::string quantization = "none";  // --quantization
  int64_t weight_bytes = 0;           // in that format (DeviceWeightBytes)
  int64_t state_bytes_per_sequence = 0;
  int num_slots = 0;
  int max_queue = 0;
  int end_of_turn_id = -1;  // <end_of_turn>, a chat stop id, when the vocabulary has it
  int64_t created = 0;      // Unix seconds when the model was loaded (/v1/models `created`)
  bool json_logs = false;
  absl::Duration request_timeout = absl::InfiniteDuration();  // --request_timeout

  // Set once (release) after every field above is filled; handlers check it (acquire) before
  // touching engine, tokenizer or model fields. Until then the listeners answer "not ready".
  std::atomic<bool> loaded{false};
  std::atomic<bool> ready{false};  // weights loaded and warm-up step done, not draining
  std::atomic<bool> draining{false};
  std::atomic<bool> fatal{false};  // the engine stopped on a device failure (OPS-1)

  // Requests in flight by (owner, request id), for the gRPC Abort RPC and any call that names a
  // request (SEC-3). The owner is the API key's tenant ("" without keys): one tenant can neither
  // reach nor detect another's requests, whatever ids they use.
  std::mutex mu;
  absl::flat_hash_map<std::pair<std::string, std::string>, std::weak_ptr<Generation>> by_id;
  // `prefix` + 32 hex digits: 128 bits from the system's random source, so an id says nothing
  // about when it was made or about any other id.
  static std::string NewRequestId(const char* prefix);
};

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  struct Event {
    std::vector<int32_t> token_ids;               // new ids (all generated ids, stop ids included)
    std::string text;                             // new complete UTF-8 text
    std::vector<engine::TokenLogprobs> logprobs;  // one per id when asked for
    // Once, when asked for (prompt_logprobs): one per prompt token after the first.
    std::vector<engine::TokenLogprobs> prompt_logprobs;
    bool finished = false;
    // "stop" (eos or stop id), "length", "stop_string", "abort", "error".
    std::string finish_reason;
    absl::Status status;  // non-OK: CANCELLED, DEADLINE_EXCEEDED, ...
    std::string stop_string;
    int32_t stop_token_id = -1;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    engine::RequestTimings timings;
  };

  // Submits to the engine. RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE (stopping), with
  // nothing left behind. `notify` is called on the engine's output thread when new output is ready; it
  // must not block (it may call Poll). `api` names the front end in the log line. `owner` is the
  // caller's tenant: the request is registered under (owner, request_id), and a request id in
  // flight for the same owner is INVALID_ARGUMENT. The owner also namespaces the request's
  // prefix-cache entries (CacheNamespace). With `session`, the request continues that session
  // (SessionLease::Prepare) and ends its lease when it ends.
  static absl::StatusOr<std::shared_ptr<Generation>> Start(
      ServerState* state, engine::ValidatedRequest request, std::vector<std::string> stop_strings,
      std::string request_id, std::string owner, std::string api, std::function<void()> notify,
      std::unique_ptr<SessionLease> session = nullptr);

  // n > 1 choices of one prompt (requests[i] is choice i, with its own seed), prefilled once
  // (engine::EngineCore::SubmitGroup). Each choice is a Generation of its own under
  // request_ids[i]; `notify` is shared. On error nothing is left behind.
  static absl::StatusOr<std::vector<std::shared_ptr<Generation>>> StartGroup(
      ServerState* state, std::vector<engine::ValidatedRequest> requests,
      const std::vector<std::string>& stop_strings, std::vector<std::string> request_ids,
      const std::string& owner, const std::string& api, const std::function<void()>& notify);

  // Moves everything ready into one merged event; false when nothing is new. The event with
  // finished = true comes exactly once, after the engine freed the request's slot.
  bool Poll(Event* event);

  // Asks the engine to end the request (within one step). OK status: an orderly abort.
  void Cancel(absl::Status status);
  // Cancel, and the same for every choice Link tied to this one (the gRPC Abort of an n > 1 call).
  void CancelGroup(const absl::Status& status);
  // Ties the choices of one request together for CancelGroup (StartGroup does, before submitting).
  static void Link(const std::vector<std::shared_ptr<Generation>>& group);
  // After this returns, `notify` is never called again (the gRPC reactor calls it in OnDone).
  void ClearNotify();

  const std::string& request_id() const { return request_id_; }
  // The prompt's length in tokens (BOS included), known from the start.
  int64_t prompt_tokens() const { return prompt_tokens_; }
  const std::string& owner() const { return owner_; }
  bool finished() const { return final_returned_.load(); }
  // The session this request continues ("" for none): the id a client sends next time.
  const std::string& session_id() const { return session_id_; }

  // Accounts for the request here if no Poll returned its final event (the client went away).
  ~Generation();

 private:
  Generation() = default;
  // A Generation, neither registered under (owner, request_id) nor submitted.
  static absl::StatusOr<std::shared_ptr<Generation>> Make(ServerState* state,
                                                          const engine::ValidatedRequest& request,
                                                          std::vector<std::string> stop_strings,
                                                          std::string request_id, std::string owner,
                                                          std::string api,
                                                          std::function<void()> notify);
  absl::Status Register();  // INVALID_ARGUMENT when the id is in flight for the owner
  void Unregister();
  void OnOutput(engine::EngineOutput out);
  void AddText(const std::string& text, bool final, Event* event);
  void Finish(const engine::EngineOutput& out, Event* event);
  std::string Reason(const engine::EngineOutput& out) const;
  // Metrics, the log line and the id registry, once: when Poll returns the final event (so the
  // finish reason is the one the client sees, stop strings included), else in the destructor.
  void Account(const engine::EngineOutput& out, bool dying);

  ServerState* state_ = nullptr;
  std::string request_id_;
  std::string owner_;
  std::string api_;
  uint64_t engine_id_ = 0;
  int64_t prompt_tokens_ = 0;
  std::vector<std::string> stop_strings_;
  absl::Time start_;

  std::mutex mu_;
  std::deque<engine::EngineOutput> raw_;             // guarded by mu_
  std::unique_ptr<engine::EngineOutput> final_out_;  // guarded by mu_: the engine's last output
  std::atomic<bool> accounted_{false};
  absl::Time last_token_;                  // output thread only
  bool got_token_ = false;                 // output thread only
  std::unique_ptr<SessionLease> session_;  // output thread once submitted
  std::string session_id_;
  std::vector<int32_t> outputs_;                  // output thread only: every sampled id (sessions)
  std::vector<std::weak_ptr<Generation>> group_;  // set by Link before any CancelGroup

  std::mutex notify_mu_;
  std::function<void()> notify_;  // guarded by notify_mu_

  std::mutex poll_mu_;  // Poll's state below
  std::unique_ptr<IncrementalDetokenizer> detok_;
  std::string held_;
  std::atomic<bool> stopped_by_string_{false};
  std::string matched_stop_;
  std::atomic<bool> final_returned_{false};
};

// Prometheus label for a finish reason ("stop_string" counts as "stop").
std::string MetricReason(const std::string& finish_reason);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_GENERATION_H_
