// The engine thread: owns the Backend and every sequence's state, runs schedule → step → update in
// a loop (vLLM v1's EngineCore), and streams sampled token ids back through per-request callbacks.
//
// Threads: Submit, Abort and stats() may be called from any thread. Everything else runs on the
// one engine thread, except the OutputCallbacks: the engine thread hands each step's outputs to
// one output thread, which calls them in step order while the next step runs on the device. The
// server's per-token work (detokenization, stop strings, response serialisation, stream writes)
// then no longer sits between two steps, where it cost the server 10-19% of the engine's
// throughput at 256 streams (bench/NOTES.md). Neither thread holds the queue lock while a callback
// runs (so a callback may call Abort). Callbacks must not block: a step waits when the output
// thread falls kMaxPendingOutputSteps steps behind.
//
// Requests arrive already validated (server/validation.h builds ValidatedRequest); the engine
// trusts them (STYLE.md rule 11) and only CHECKs programmer invariants.
#ifndef GRIFFIN_ENGINE_ENGINE_CORE_H_
#define GRIFFIN_ENGINE_ENGINE_CORE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/backend.h"
#include "engine/host_snapshot.h"
#include "engine/prefix_cache.h"
#include "engine/sampler.h"
#include "engine/step_cost_model.h"

namespace griffin::engine {

// A sequence's saved state (sessions, issue 15): the slot's bytes (Backend::SnapshotSlot) after
// `position` tokens, shared read-only with the session store (no copy per turn).
struct SequenceState {
  int64_t position = 0;
  std::shared_ptr<const HostSnapshot> snapshot;
};

// Everything the engine needs about one request, checked by the server before enqueue.
struct ValidatedRequest {
  std::vector<int32_t> prompt;  // ≥ 1 ids, each in [0, vocab_size)
  SamplingParams sampling;      // VAL-2 ranges
  // ≥ 0. 0: prefill only (scoring with prompt_logprobs, or an echo): the request ends kLength once
  // its prompt is fed, and no token is sampled.
  int max_tokens = 16;
  int min_tokens = 0;                   // [0, max_tokens]: eos and stop ids are masked until then
  std::vector<int32_t> stop_token_ids;  // ids in [0, vocab_size)
  bool ignore_eos = false;
  int top_logprobs = -1;  // -1: no logprobs; ≥ 0: chosen token + this many others
  // -1: none; ≥ 0: the log-probability of every prompt token after the first under the model, and
  // this many alternatives at each position, computed during the prefill
  // (Backend::StepWithPromptLogprobs) and delivered once, in EngineOutput::prompt_logprobs.
  int prompt_logprobs = -1;
  // Prefix-state cache namespace (vLLM's cache_salt): requests with different salts never share
  // cached states, so one tenant cannot learn another's prompts from timing (SEC-10).
  std::string cache_salt;
  // Continue a saved sequence: its slot is restored from `resume` and the prompt is fed from
  // position resume->position on (the prompt holds only the new tokens). Such a request neither
  // reads nor fills the prefix cache (its keys start at position 0). Null: a fresh sequence.
  std::shared_ptr<const SequenceState> resume;
  // Return the state after every fed token in EngineOutput::final_state when the request ends
  // kStop or kLength (a session keeps it). The last sampled token is not fed yet: the state's
  // position is prompt + output - 1 past its start (prompt alone when max_tokens is 0).
  bool keep_state = false;
  absl::Time deadline = absl::InfiniteFuture();
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };

struct TokenLogprobs {
  int32_t id = 0;
  float logprob = 0.0f;  // log-softmax of the model's logits (≤ 0)
  int32_t rank = 0;      // prompt tokens: 1 + the number of more likely ids; 0 (unknown) otherwise
  std::vector<std::pair<int32_t, float>> top;  // the most likely ids, best first
};

struct RequestTimings {
  absl::Time arrival;      // Submit
  absl::Time scheduled;    // admitted into a slot (end of queueing)
  absl::Time first_token;  // first sampled token (end of prefill)
  absl::Time finished;
};

// One callback's worth: the tokens one step produced for a request, and/or its end.
struct EngineOutput {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;  // one per token when top_logprobs ≥ 0
  // When prompt_logprobs ≥ 0, in the output that ends the prefill (with the first token, or with
  // the finish when max_tokens is 0), and only there: one per prompt token after the first, in
  // order (the first token has no preceding distribution).
  std::vector<TokenLogprobs> prompt_logprobs;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  int32_t stop_token_id = -1;  // the id that ended it, for kStop
  // OK unless the request ended without finishing: CANCELLED / DEADLINE_EXCEEDED / UNAVAILABLE
  // (engine stopped) / INTERNAL (numeric failure in this request alone, NUM-4). Set with
  // reason kAbort (or kError for INTERNAL).
  absl::Status status;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  RequestTimings timings;
  // keep_state: the sequence's state at its end (with finished, reasons kStop and kLength only).
  std::shared_ptr<SequenceState> final_state;
};

using OutputCallback = std::function<void(EngineOutput)>;

// The fewest prompt tokens a step carries under EngineOptions::step_time_target while prompts
// wait: a target the decodes alone exceed slows prefill down, never stops it.
inline constexpr int64_t kMinPrefillTokensPerStep = 64;

struct EngineOptions {
  int64_t token_budget = 512;  // tokens per step (decodes + prefill chunks), ≥ 1
  int max_batch = 256;         // sequences per step, ≥ 1
  int max_queue = 256;         // waiting requests before Submit answers RESOURCE_EXHAUSTED
  int64_t max_queued_tokens = int64_t{1} << 40;  // prompt tokens waiting, same answer (OVL-1)
  // A request still waiting for a slot this long ends DEADLINE_EXCEEDED (OVL-2).
  absl::Duration queue_timeout = absl::InfiniteDuration();
  // Sample on the device when the backend can (Backend::samples_on_device) and a step's rows ask
  // nothing only the host sampler does (log-probabilities, min_tokens masks, presence/frequency
  // penalties, logit_bias); such a step copies logits to the host and samples there. A step that
  // scores prompt tokens (prompt_logprobs) samples on the host too.
  bool device_sampling = true;
  // While sequences decode, each step's prompt tokens are capped so that the step is predicted to
  // take at most this long (StepCostModel, learned from the steps' measured forward passes): a
  // bound on the decodes' time per output token while prompts prefill, the same target on any
  // model or GPU, where token_budget alone is right for one of them. At least
  // kMinPrefillTokensPerStep prompt tokens still run each step, so prefill always progresses.
  // Zero: token_budget alone.
  absl::Duration step_time_target = absl::ZeroDuration();
  // The prefix-state cache (engine/prefix_cache.h): off when both tiers are empty or the backend
  // cannot snapshot slots. `model_identity` keys it to the weights (see ModelIdentity).
  PrefixCacheOptions prefix_cache;
  uint64_t model_identity = 0;
  // Called once, on the engine thread, the moment the backend stops being healthy (a sticky
  // device error), before the failed step's outputs go out: the engine already refuses new
  // requests, and the server drops readiness here, so a client that sees its request fail finds
  // the server not ready (OPS-1).
  std::function<void(const absl::Status&)> on_device_failure;
  // Called once, on the engine thread, after that: the engine has stopped and every request's
  // last output (UNAVAILABLE) is out; the process should exit so its supervisor restarts it.
  std::function<void(const absl::Status&)> on_fatal;
};

struct EngineStats {
  int waiting = 0;
  int running = 0;
  int slots_used = 0;  // slots holding running sequences (not idle slots the cache borrowed)
  int slots_total = 0;
  int64_t steps = 0;
  int64_t prompt_tokens_computed = 0;  // prompt tokens prefilled (not restored from the cache)
  PrefixCacheStats prefix_cache;
  int64_t states_restored = 0;  // resumed sequences (ValidatedRequest::resume)
  absl::Duration restore_time;  // their RestoreSlot calls, summed
  int64_t states_kept = 0;      // final states returned (keep_state)
  // Where the engine thread's time goes (issue 13: the server's overhead over the engine alone).
  // busy: its steps end to end (plan, the backend, sampling and stop checks on the host, handing
  // outputs to the output thread), not its idle waits; backend: the forward passes within them
  // (Backend::Step, StepSample, StepWithPromptLogprobs: a GPU step's launches and its wait for the
  // device; slot copies, restores and resets count as host work). busy - backend is what the host
  // adds to each step.
  absl::Duration busy_time;
  absl::Duration backend_time;
  // Steps whose prompt tokens the step time target cut below what token_budget allowed.
  int64_t prefill_capped_steps = 0;
};

class EngineCore {
 public:
  // Runs one warm-up step (a BOS token through slot 0, then a reset) and starts the engine thread.
  // The warm-up's error if it fails.
  static absl::StatusOr<std::unique_ptr<EngineCore>> Create(std::unique_ptr<Backend> backend,
                                                            const EngineOptions& options);
  ~EngineCore();  // Stop()

  // Queues a request; `callback` receives its outputs on the output thread, the last one with
  // finished = true (exactly once, whatever happens). Returns the engine's id for Abort.
  // RESOURCE_EXHAUSTED when the queue holds max_queue requests (nothing is allocated, OVL-1);
  // (also when the queued prompt tokens would pass max_queued_tokens); UNAVAILABLE after Stop.
  // On error the callback is never called.
  absl::StatusOr<uint64_t> Submit(ValidatedRequest request, OutputCallback callback);

  // n > 1 choices of one prompt, prefilled once: the first request prefills all but the prompt's
  // last token; its state is then copied to every other request's slot and each feeds the last
  // token itself, so each samples its first token from its own logits row (its own seed) and the
  // prompt's other tokens are computed once. A member that finds no slot free at that moment
  // queues at the front and prefills alone. All requests must have the same prompt
  // (INVALID_ARGUMENT otherwise); queue limits count every member. Returns the ids in order;
  // each callback is called as Submit's.
  absl::StatusOr<std::vector<uint64_t>> SubmitGroup(std::vector<ValidatedRequest> requests,
                                                    std::vector<OutputCallback> callbacks);

  // Ends the request within one step: it leaves the queue or its slot (reset and freed), and its
  // callback gets finished with `status` (OK means an orderly abort: reason kAbort, status OK).
  // A no-op for an unknown or finished id.
  void Abort(uint64_t id, absl::Status status);

  // Finishes every request with UNAVAILABLE, joins the engine thread, then the output thread once
  // it has delivered everything. Idempotent. Not from a callback.
  void Stop();

  EngineStats stats() const;
  const Backend& backend() const { return *backend_; }

 private:
  struct Seq;
  EngineCore(std::unique_ptr<Backend> backend, const EngineOptions& options);
  // A step's outputs, each with its request's callback (shared: a sequence may end and be freed
  // on the engine thread while its last outputs still wait for the output thread).
  using OutputBatch = std::vector<std::pair<std::shared_ptr<OutputCallback>, EngineOutput>>;
  static constexpr size_t kMaxPendingOutputSteps = 64;
  void Loop();
  void OutputLoop();
  // Engine thread: queues a batch for the output thread (waits while it is kMaxPendingOutputSteps
  // behind).
  void Deliver(OutputBatch* batch);
  // Waits until the output thread has called back everything delivered so far.
  void FlushOutputs();
  // One schedule → step → update round; false when there was nothing to do.
  bool RunStep(OutputBatch* outputs, std::vector<std::unique_ptr<Seq>>* done);
  void FinishSeq(Seq& seq, FinishReason reason, absl::Status status, EngineOutput* out);
  // Whether the next token must not be a stop id yet (min_tokens).
  bool MasksStopIds(const Seq& seq) const;
  // Whether the device sampler can draw the sequence's next token (see device_sampling).
  bool DeviceCanSample(const Seq& seq) const;
  void FreeSlot(Seq& seq);
  // A slot for an admitted sequence: a free one, else one the prefix cache gives back.
  int TakeSlot();
  // n > 1: copies a group leader's state (its prompt but the last token fed) to its followers.
  void ForkFollowers(Seq& leader, absl::Time now);
  // A leader that ends before its fork hands its followers back to the queue's front.
  void ReleaseFollowers(Seq& leader);
  // Prefix cache: restores the longest cached prefix of an admitted sequence's prompt into its
  // slot; records the state at a block boundary of its prefill and at its end.
  void RestorePrefix(Seq& seq);
  void CacheState(Seq& seq, absl::Span<const int32_t> covered);
  // Sessions: restores a resumed sequence's saved state into its slot; snapshots a finished
  // sequence's state into its last output (an error of the request when that fails).
  absl::Status ResumeState(Seq& seq);
  absl::Status KeepState(Seq& seq, EngineOutput* out);

  std::unique_ptr<Backend> backend_;
  const EngineOptions options_;
  const int vocab_;
  const int32_t eos_id_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                   // guarded by mu_
  absl::Status fatal_;                                  // guarded by mu_; set with stop_
  uint64_t next_id_ = 1;                                // guarded by mu_
  std::deque<std::unique_ptr<Seq>> waiting_;            // guarded by mu_
  int64_t waiting_tokens_ = 0;                          // guarded by mu_: prompt tokens in waiting_
  absl::flat_hash_map<uint64_t, absl::Status> aborts_;  // guarded by mu_

  // Engine thread only.
  std::vector<std::unique_ptr<Seq>> running_;
  std::vector<int> free_slots_;
  std::vector<float> logits_;
  std::vector<int32_t> sampled_;        // device-sampled token per row
  std::unique_ptr<PrefixCache> cache_;  // null when off
  // Page-locked buffers for the states KeepState snapshots (null until the first).
  std::shared_ptr<SnapshotPool> snapshot_pool_;
  std::atomic<int64_t> prompt_tokens_computed_{0};
  std::atomic<int64_t> states_restored_{0};
  std::atomic<int64_t> restore_nanos_{0};
  std::atomic<int64_t> states_kept_{0};
  mutable std::mutex cache_stats_mu_;
  PrefixCacheStats cache_stats_;        // guarded by cache_stats_mu_: a copy for stats()
  std::vector<float> prompt_logprobs_;  // StepWithPromptLogprobs output, one per scored row
  std::vector<int32_t> prompt_ranks_;
  std::vector<int32_t> prompt_top_ids_;  // ... and its top ids and values, top_k per row
  std::vector<float> prompt_top_logprobs_;

  std::atomic<int> num_running_{0};
  std::atomic<int> waiting_followers_{0};  // group members waiting for their leader's fork
  // Group members going back to the queue's front (engine thread; spliced in under mu_ before
  // the next plan, so no path that already holds mu_ takes it again).
  std::vector<std::unique_ptr<Seq>> requeue_;
  std::atomic<int> slots_used_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> prefill_capped_steps_{0};
  StepCostModel cost_model_;            // engine thread only; fed only when step_time_target is set
  std::atomic<int64_t> busy_nanos_{0};  // EngineStats::busy_time
  std::atomic<int64_t> backend_nanos_{0};  // EngineStats::backend_time
  std::thread thread_;

  std::mutex output_mu_;
  std::condition_variable output_cv_;
  std::deque<OutputBatch> output_queue_;  // guarded by output_mu_
  size_t outputs_in_flight_ = 0;          // guarded by output_mu_: batches queued or being called
  bool output_stop_ = false;              // guarded by output_mu_: drain, then leave
  std::thread output_thread_;
};

const char* FinishReasonName(FinishReason reason);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_ENGINE_CORE_H_
