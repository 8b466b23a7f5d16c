// The engine step: the one contract every backend (CPU reference, CUDA) implements and the
// scheduler drives. A backend owns a fixed pool of state slots; each slot holds one sequence's
// whole decode state (RG-LRU state, conv tail, local-attention KV ring, next position), whose size
// does not depend on the sequence's length.
#ifndef GRIFFIN_ENGINE_BACKEND_H_
#define GRIFFIN_ENGINE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampler.h"
#include "engine/state_layout.h"
#include "loader/model_config.h"

namespace griffin::engine {

// Which logits a step entry returns.
enum class LogitsRequest {
  kNone,  // none (a prefill chunk that does not end the prompt)
  kLast,  // the distribution after the last token (decode, end of prefill)
  kAll,   // one row per token (scoring, prompt log-probabilities)
};

// One sequence's share of a step: a prefill chunk (many tokens) or a decode token (one).
struct StepEntry {
  int slot = 0;                      // state slot in [0, num_slots)
  int64_t position = 0;              // position of tokens[0]; must equal the slot's next position.
                                     // 0 starts a new sequence: the slot's state is reset first.
  absl::Span<const int32_t> tokens;  // at least one id in [0, vocab_size)
  LogitsRequest logits = LogitsRequest::kLast;
};

// Rows of logits a step over `entries` returns.
int64_t LogitsRows(absl::Span<const StepEntry> entries);

// The checks every backend makes before a step changes anything (Backend::Step's
// INVALID_ARGUMENT cases): slot in [0, num_slots) and not repeated, at least one token, token ids
// in [0, vocab_size), a position that is 0 or the slot's next position, and positions below 2^31.
absl::Status ValidateStepEntries(absl::Span<const StepEntry> entries, int num_slots, int vocab_size,
                                 absl::FunctionRef<int64_t(int)> next_position);

// StepSample's shape checks (INVALID_ARGUMENT): kLast or kNone entries only, and exactly one
// sampling request and one token per kLast entry.
absl::Status ValidateSampleShapes(absl::Span<const StepEntry> entries, size_t requests,
                                  size_t tokens);

// SnapshotSlot's and RestoreSlot's checks (INVALID_ARGUMENT): slot in [0, num_slots) and a buffer
// of exactly slot_bytes.
absl::Status ValidateSnapshotBuffer(int slot, int num_slots, int64_t slot_bytes,
                                    size_t buffer_bytes);

// One entry's share of Backend::StepWithPromptLogprobs: the ids its positions are scored against.
struct PromptLogprobsRequest {
  // targets[j] is scored under the distribution after the entry's tokens[j]; for a prompt chunk,
  // the prompt's next token. At most tokens.size() ids, each in [0, vocab_size). Empty: the entry
  // is not scored.
  absl::Span<const int32_t> targets;
};

// Rows StepWithPromptLogprobs scores: the sum of the requests' targets.
int64_t PromptLogprobsRows(absl::Span<const PromptLogprobsRequest> requests);

// Where StepWithPromptLogprobs writes: one row per scored position, entries in step order and
// positions in order within an entry (PromptLogprobsRows rows).
struct PromptLogprobsOutput {
  absl::Span<float> logprobs;   // [rows]: log-softmax of the soft-capped logits at the target
  absl::Span<int32_t> ranks;    // [rows]: 1 + the number of ids more likely than the target
  absl::Span<int32_t> top_ids;  // [rows × top_k]: the most likely ids, best first (ties: lower id)
  absl::Span<float> top_logprobs;  // [rows × top_k]: their log-softmax values
};

// StepWithPromptLogprobs's INVALID_ARGUMENT checks on everything but the entries themselves
// (ValidateStepEntries): one request per entry, targets within their entries and the vocabulary,
// top_k in [0, vocab], output spans of the right sizes, `logits_size` = LogitsRows(entries) rows.
absl::Status ValidatePromptLogprobs(absl::Span<const StepEntry> entries,
                                    absl::Span<const PromptLogprobsRequest> requests, int top_k,
                                    int vocab, size_t logits_size, const PromptLogprobsOutput& out);

// The CUDA backend's default for the fewest tokens of a fresh prefill pass whose attention runs
// through cuDNN (CudaBackendOptions::cudnn_attention_min_tokens, and BackendOptions' for the
// server, which builds without CUDA too): from 512 tokens it measured faster (bench/NOTES.md,
// session 31).
inline constexpr int kDefaultCudnnAttentionMinTokens = 512;

// One row's request to sample on the device (Backend::StepSample).
// The most logit_bias entries a request sampled on the device may carry (OpenAI allows 300);
// requests with more are sampled on the host.
inline constexpr int kMaxDeviceLogitBias = 1024;

struct SampleRequest {
  // No presence/frequency penalty (samples_on_device says so); at most kMaxDeviceLogitBias
  // logit_bias entries.
  SamplingParams params;
  absl::Span<const int32_t> context;  // ids the repetition penalty applies to
  uint64_t step = 0;                  // draw index of the request (Philox counter)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;
  virtual const loader::ModelConfig& config() const = 0;
  virtual int num_slots() const = 0;
  // Device bytes that one slot's state occupies (what admission control budgets with).
  virtual int64_t state_bytes_per_sequence() const = 0;

  // Advances every entry's slot by its tokens, as if each sequence ran alone: results do not depend
  // on the batch's composition or on how a prompt was cut into chunks.
  // `logits` receives rows of vocab_size floats (soft-capped, float32) in entry order: none, one or
  // tokens.size() per entry as its `logits` asks; it must hold exactly LogitsRows(entries) rows.
  //
  // Errors and the state left after each:
  //  - INVALID_ARGUMENT (slot out of range or repeated in the step, a position that is not the
  //    slot's next position, an empty token run, a token id out of range, a wrong logits size):
  //    checked before any work, so no slot changes.
  //  - INTERNAL (a device failure): the slots named in the step are undefined and must be reset;
  //    other slots are unchanged.
  // Not thread-safe: one engine thread calls it.
  virtual absl::Status Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) = 0;

  // False once the device failed for good (a sticky CUDA error): every later step fails too, so the
  // engine stops and the process must be restarted (RELIABILITY.md OPS-1). A failed step on a
  // healthy backend fails only that step's requests (RST-4).
  virtual bool healthy() const { return true; }

  // Lines for the server's startup log about choices made at creation (which library runs what,
  // and why not where an option asked for one). Empty by default.
  virtual std::vector<std::string> StartupNotes() const { return {}; }

  // Whether StepSample works: the backend samples next to the logits, so a step returns one id per
  // row instead of rows of vocab_size floats (on a GPU, 1 MB per row of a 256k vocabulary).
  virtual bool samples_on_device() const { return false; }
  // Like Step, but returns one sampled token per kLast entry (`requests` and `tokens` in entry
  // order; kAll entries are INVALID_ARGUMENT). A row whose logits hold NaN or +inf, or nothing
  // finite, gets token -1 (NUM-4: the engine fails that request alone). Draws follow the device's
  // own sampler: the same seed gives the same tokens on the same backend, not across backends.
  virtual absl::Status StepSample(absl::Span<const StepEntry> entries,
                                  absl::Span<const SampleRequest> requests,
                                  absl::Span<int32_t> tokens) {
    return absl::UnimplementedError("this backend samples on the host (Step + SampleToken)");
  }

  // Step, and for each entry whose request names targets, the log-probability of every target and
  // the top_k most likely ids at each of those positions, without handing their rows of vocab_size
  // logits to the caller: prompt log-probabilities (echo, prompt_logprobs) computed in the prefill
  // itself. `requests` holds one element per entry. `logits` receives exactly what Step would write
  // for `entries` (each entry's own `logits` field: none, last or all rows).
  //
  // The default runs Step with kAll on the scored entries and reduces their rows on the host
  // (log-softmax in double, then top_k): it holds rows × vocab_size floats for the scored
  // positions. A device backend overrides it so that only the top_k alternatives and one value per
  // position cross to the host.
  //
  // Errors and the state left after each: as Step. INVALID_ARGUMENT, checked before any work (no
  // slot changes), also for requests.size() != entries.size(), more targets than an entry's tokens,
  // a target out of range, top_k outside [0, vocab_size], or `out` spans whose sizes are not rows
  // (logprobs, ranks) and rows × top_k (top_ids, top_logprobs). Logits holding NaN give NaN log-probabilities (NaN sorts last in top_ids);
  // the caller decides what a non-finite value means (the engine fails that request, NUM-4).
  virtual absl::Status StepWithPromptLogprobs(absl::Span<const StepEntry> entries,
                                              absl::Span<const PromptLogprobsRequest> requests,
                                              int top_k, absl::Span<float> logits,
                                              const PromptLogprobsOutput& out);

  // Zeroes the slot's state and sets its next position to 0 (a freed slot starts clean).
  virtual absl::Status ResetSlot(int slot) = 0;

  // The position the slot's next token will have (its sequence's length so far).
  virtual int64_t NextPosition(int slot) const = 0;

  // ---- A slot's state as an object (DESIGN.md "State as a first-class object") ----
  // The layout of one slot's bytes, as SnapshotSlot writes them; null when the backend cannot
  // snapshot (then the three calls below are UNIMPLEMENTED).
  virtual const StateLayout* state_layout() const { return nullptr; }

  // Makes slot `to` an exact copy of slot `from` (state and next position), e.g. n > 1 choices
  // from one prefill. INVALID_ARGUMENT for a slot out of range (nothing changes); `from == to` is
  // a no-op. INTERNAL on a device failure (`to` is then undefined and must be reset).
  // The default goes through host memory (SnapshotSlot then RestoreSlot).
  virtual absl::Status CopySlot(int from, int to);

  // Copies the slot's whole state into `out` (exactly state_layout()->slot_bytes() bytes of host
  // memory; pinned memory makes the CUDA backend's copy faster) and returns its next position. The
  // slot is unchanged. INVALID_ARGUMENT for a bad slot or a wrong size.
  virtual absl::StatusOr<int64_t> SnapshotSlot(int slot, absl::Span<uint8_t> out);

  // SnapshotSlot without waiting for the copy to reach `out`, so that state can move to the host
  // while the device keeps computing (the prefix cache's demotions: one 2B slot is 17 MB, 0.34 ms
  // over the H200's link). The bytes are the slot's state at the time of the call even when the
  // slot is stepped, reset or overwritten right after it returns; `out` holds them only once
  // FinishSnapshot(ticket.id) has returned OK, and must stay allocated and unread until then.
  // Errors: SnapshotSlot's. The default copies before it returns (a ticket with id 0).
  struct SnapshotTicket {
    uint64_t id = 0;       // 0: the copy has completed
    int64_t position = 0;  // the slot's next position when the snapshot was taken
  };
  virtual absl::StatusOr<SnapshotTicket> StartSnapshot(int slot, absl::Span<uint8_t> out);
  // Waits until the copy StartSnapshot began has reached its buffer. OK at once for id 0 and for
  // a copy already waited for; INTERNAL when the copy failed (the backend is then unhealthy).
  virtual absl::Status FinishSnapshot(uint64_t id) { return absl::OkStatus(); }

  // Overwrites the slot with `snapshot` (bytes SnapshotSlot wrote on a backend whose
  // state_layout() is equal) and sets its next position: the slot then continues exactly as the
  // one the snapshot was taken from. INVALID_ARGUMENT (nothing changes) for a bad slot, a wrong
  // size or a negative position; INTERNAL on a device failure (the slot must then be reset).
  virtual absl::Status RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                   int64_t next_position);

  // Host memory for snapshots kept for a while (the prefix cache's host tier), freed by its own
  // deleter. The default is ordinary memory; a GPU backend returns page-locked memory, which
  // SnapshotSlot and RestoreSlot copy at the link's speed (one 2B slot: about 1 ms pageable,
  // 0.34 ms at 50 GB/s) and falls back to ordinary memory when the system refuses to pin more.
  using SnapshotMemory = std::unique_ptr<uint8_t[], void (*)(uint8_t*)>;
  virtual SnapshotMemory AllocateSnapshotMemory(int64_t bytes);
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_BACKEND_H_
