#include "engine/engine_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/thread_name.h"
#include "engine/scheduler.h"

namespace griffin::engine {

struct EngineCore::Seq {
  uint64_t id = 0;
  ValidatedRequest req;
  uint64_t cache_ns = 0;  // prefix-cache namespace (model identity + cache_salt)
  std::shared_ptr<OutputCallback> callback;
  int slot = -1;
  int64_t base = 0;              // the slot's position before the prompt (a resumed state's)
  int64_t fed = 0;               // prompt and generated tokens fed to the slot so far
  int64_t restored_prefix = 0;   // prompt tokens the prefix cache restored instead of computing
  std::vector<int32_t> context;  // prompt + generated (repetition penalty)
  std::vector<int32_t> output;   // generated
  int32_t next_token = -1;       // sampled, not yet fed
  std::vector<TokenLogprobs> prompt_logprobs;  // scored so far (prompt_logprobs ≥ 0)
  RequestTimings timings;
  // n > 1: members of this leader's group waiting for its fork (engine thread only once queued).
  std::vector<std::unique_ptr<Seq>> followers;
  bool prefilling() const { return fed < static_cast<int64_t>(req.prompt.size()); }
  // A leader stops its prefill one token short of the prompt's end until it has forked.
  int64_t fork_at() const {
    return followers.empty() ? -1 : static_cast<int64_t>(req.prompt.size()) - 1;
  }
};

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "none";
}

absl::StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(std::unique_ptr<Backend> backend,
                                                               const EngineOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("no backend");
  if (options.token_budget < 1 || options.max_batch < 1 || options.max_queue < 0) {
    return absl::InvalidArgumentError("engine budgets must be positive");
  }
  // Warm-up (readiness, OPS-1): one real step through slot 0, then a clean slot.
  const int vocab = backend->config().vocab_size;
  std::vector<int32_t> bos = {std::clamp(backend->config().bos_token_id, 0, vocab - 1)};
  std::vector<float> logits(vocab);
  StepEntry entry{.slot = 0, .position = 0, .tokens = bos, .logits = LogitsRequest::kLast};
  absl::Status status = backend->Step({&entry, 1}, absl::MakeSpan(logits));
  if (!status.ok()) return status;
  status = backend->ResetSlot(0);
  if (!status.ok()) return status;
  std::unique_ptr<EngineCore> core(new EngineCore(std::move(backend), options));
  core->output_thread_ = std::thread([c = core.get()] { c->OutputLoop(); });
  core->thread_ = std::thread([c = core.get()] { c->Loop(); });
  return core;
}

EngineCore::EngineCore(std::unique_ptr<Backend> backend, const EngineOptions& options)
    : backend_(std::move(backend)),
      options_(options),
      vocab_(backend_->config().vocab_size),
      eos_id_(backend_->config().eos_token_id) {
  for (int s = backend_->num_slots() - 1; s >= 0; --s) free_slots_.push_back(s);
  const PrefixCacheOptions& pc = options_.prefix_cache;
  if (backend_->state_layout() != nullptr && (pc.max_device_entries > 0 || pc.host_bytes > 0)) {
    cache_ = std::make_unique<PrefixCache>(
        backend_.get(), pc, options_.model_identity,
        [this]() -> int {  // an idle slot, engine thread only
          if (free_slots_.empty()) return -1;
          const int slot = free_slots_.back();
          free_slots_.pop_back();
          return slot;
        },
        [this](int slot) { free_slots_.push_back(slot); });
  }
}

EngineCore::~EngineCore() { Stop(); }

absl::StatusOr<uint64_t> EngineCore::Submit(ValidatedRequest request, OutputCallback callback) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!fatal_.ok()) return fatal_;
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  if (static_cast<int>(waiting_.size()) + waiting_followers_.load() >= options_.max_queue) {
    return absl::ResourceExhaustedError("the request queue is full");
  }
  const int64_t tokens = static_cast<int64_t>(request.prompt.size());
  if (waiting_tokens_ + tokens > options_.max_queued_tokens && !waiting_.empty()) {
    return absl::ResourceExhaustedError("the request queue holds too many prompt tokens");
  }
  waiting_tokens_ += tokens;
  auto seq = std::make_unique<Seq>();
  seq->id = next_id_++;
  seq->req = std::move(request);
  seq->callback = std::make_shared<OutputCallback>(std::move(callback));
  seq->timings.arrival = absl::Now();
  const uint64_t id = seq->id;
  waiting_.push_back(std::move(seq));
  cv_.notify_one();
  return id;
}

absl::StatusOr<std::vector<uint64_t>> EngineCore::SubmitGroup(
    std::vector<ValidatedRequest> requests, std::vector<OutputCallback> callbacks) {
  if (requests.empty() || requests.size() != callbacks.size()) {
    return absl::InvalidArgumentError("one callback per request, at least one request");
  }
  for (const ValidatedRequest& r : requests) {
    if (r.prompt != requests.front().prompt) {
      return absl::InvalidArgumentError("a group's requests share one prompt");
    }
    // One state cannot continue into n choices and be kept as one.
    if (requests.size() > 1 && (r.resume != nullptr || r.keep_state)) {
      return absl::InvalidArgumentError("a group's requests cannot resume or keep a state");
    }
  }
  // Nothing to share (one member, or no token before the last): plain submissions.
  if (requests.size() == 1 || requests.front().prompt.size() < 2 ||
      requests.front().prompt_logprobs >= 0) {
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::StatusOr<uint64_t> id = Submit(std::move(requests[i]), std::move(callbacks[i]));
      if (!id.ok()) {
        for (uint64_t done : ids) Abort(done, absl::CancelledError("a group member was refused"));
        return id.status();
      }
      ids.push_back(*id);
    }
    return ids;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!fatal_.ok()) return fatal_;
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  const int members = static_cast<int>(requests.size());
  if (static_cast<int>(waiting_.size()) + waiting_followers_.load() + members >
      options_.max_queue) {
    return absl::ResourceExhaustedError("the request queue is full");
  }
  const int64_t tokens = static_cast<int64_t>(requests.front().prompt.size());
  if (waiting_tokens_ + tokens > options_.max_queued_tokens && !waiting_.empty()) {
    return absl::ResourceExhaustedError("the request queue holds too many prompt tokens");
  }
  waiting_tokens_ += tokens;
  std::vector<uint64_t> ids;
  std::unique_ptr<Seq> leader;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto seq = std::make_unique<Seq>();
    seq->id = next_id_++;
    seq->req = std::move(requests[i]);
    seq->callback = std::make_shared<OutputCallback>(std::move(callbacks[i]));
    seq->timings.arrival = absl::Now();
    ids.push_back(seq->id);
    if (leader == nullptr) {
      leader = std::move(seq);
    } else {
      leader->followers.push_back(std::move(seq));
    }
  }
  waiting_followers_.fetch_add(members - 1);
  waiting_.push_back(std::move(leader));
  cv_.notify_one();
  return ids;
}

void EngineCore::ForkFollowers(Seq& leader, absl::Time now) {
  std::vector<std::unique_ptr<Seq>> followers;
  followers.swap(leader.followers);
  waiting_followers_.fetch_sub(static_cast<int>(followers.size()));
  std::vector<std::unique_ptr<Seq>> unplaced;
  for (auto& f : followers) {
    const bool slot_free =
        !free_slots_.empty() || (cache_ != nullptr && cache_->device_slots_held() > 0);
    if (slot_free) {
      const int slot = TakeSlot();
      if (backend_->CopySlot(leader.slot, slot).ok()) {
        f->slot = slot;
        f->fed = leader.fed;
        f->cache_ns = leader.cache_ns;
        f->context = f->req.prompt;
        f->timings.scheduled = now;
        slots_used_.fetch_add(1);
        running_.push_back(std::move(f));
        continue;
      }
      free_slots_.push_back(slot);  // the copy failed: this member prefills alone
    }
    unplaced.push_back(std::move(f));
  }
  for (auto& f : unplaced) requeue_.push_back(std::move(f));
}

void EngineCore::ReleaseFollowers(Seq& leader) {
  if (leader.followers.empty()) return;
  waiting_followers_.fetch_sub(static_cast<int>(leader.followers.size()));
  for (auto& f : leader.followers) requeue_.push_back(std::move(f));
  leader.followers.clear();
}

void EngineCore::Abort(uint64_t id, absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  aborts_.emplace(id, std::move(status));
  cv_.notify_one();
}

void EngineCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable() && !output_thread_.joinable()) return;
    stop_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(output_mu_);
    output_stop_ = true;
    output_cv_.notify_all();
  }
  if (output_thread_.joinable()) output_thread_.join();
}

void EngineCore::Deliver(OutputBatch* batch) {
  if (batch->empty()) return;
  std::unique_lock<std::mutex> lock(output_mu_);
  output_cv_.wait(lock, [&] { return output_queue_.size() < kMaxPendingOutputSteps; });
  output_queue_.push_back(std::move(*batch));
  ++outputs_in_flight_;
  batch->clear();
  output_cv_.notify_all();
}

void EngineCore::FlushOutputs() {
  std::unique_lock<std::mutex> lock(output_mu_);
  output_cv_.wait(lock, [&] { return outputs_in_flight_ == 0; });
}

void EngineCore::OutputLoop() {
  SetCurrentThreadName("griffin-output");
  while (true) {
    OutputBatch batch;
    {
      std::unique_lock<std::mutex> lock(output_mu_);
      output_cv_.wait(lock, [&] { return output_stop_ || !output_queue_.empty(); });
      if (output_queue_.empty()) return;  // stopping, and everything is delivered
      batch = std::move(output_queue_.front());
      output_queue_.pop_front();
      output_cv_.notify_all();  // a step waiting for room
    }
    for (auto& [callback, out] : batch) (*callback)(std::move(out));
    std::lock_guard<std::mutex> lock(output_mu_);
    --outputs_in_flight_;
    output_cv_.notify_all();  // FlushOutputs
  }
}

EngineStats EngineCore::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.waiting = static_cast<int>(waiting_.size()) + waiting_followers_.load();
  }
  s.running = num_running_.load();
  s.slots_used = slots_used_.load();
  s.slots_total = backend_->num_slots();
  s.steps = steps_.load();
  s.prompt_tokens_computed = prompt_tokens_computed_.load();
  s.states_restored = states_restored_.load();
  s.restore_time = absl::Nanoseconds(restore_nanos_.load());
  s.busy_time = absl::Nanoseconds(busy_nanos_.load());
  s.backend_time = absl::Nanoseconds(backend_nanos_.load());
  s.prefill_capped_steps = prefill_capped_steps_.load();
  s.states_kept = states_kept_.load();
  std::lock_guard<std::mutex> lock(cache_stats_mu_);
  s.prefix_cache = cache_stats_;
  return s;
}

int EngineCore::TakeSlot() {
  if (free_slots_.empty() && cache_ != nullptr) return cache_->ReclaimSlot();
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

void EngineCore::RestorePrefix(Seq& seq) {
  if (cache_ == nullptr || seq.base > 0 || seq.req.resume != nullptr) return;
  // Prompt log-probabilities are computed in the prefill: a request asking for them runs it all.
  if (seq.req.prompt_logprobs >= 0) return;
  seq.cache_ns = cache_->Namespace(seq.req.cache_salt);
  // A group leader must still feed a chunk that ends at its fork point.
  absl::Span<const int32_t> prompt = seq.req.prompt;
  if (seq.fork_at() > 0) prompt = prompt.subspan(0, seq.fork_at());
  absl::StatusOr<int64_t> restored = cache_->RestoreLongest(seq.cache_ns, prompt, seq.slot);
  // A failed restore leaves the slot undefined; the first prefill entry (position 0) resets it.
  if (restored.ok()) seq.fed = seq.restored_prefix = *restored;
}

void EngineCore::CacheState(Seq& seq, absl::Span<const int32_t> covered) {
  if (cache_ == nullptr || seq.req.prompt_logprobs >= 0 || seq.req.resume != nullptr) return;
  if (backend_->NextPosition(seq.slot) != static_cast<int64_t>(covered.size())) return;
  // A failure here costs a future hit, never this request.
  (void)cache_->Insert(seq.cache_ns, covered, seq.slot);
}

absl::Status EngineCore::ResumeState(Seq& seq) {
  const SequenceState& state = *seq.req.resume;
  if (state.snapshot == nullptr) return absl::InvalidArgumentError("the saved state is empty");
  const absl::Time start = absl::Now();
  absl::Status status = backend_->RestoreSlot(seq.slot, state.snapshot->bytes(), state.position);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("the saved state could not be restored: ", status.message()));
  }
  seq.base = state.position;
  states_restored_.fetch_add(1);
  restore_nanos_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status EngineCore::KeepState(Seq& seq, EngineOutput* out) {
  if (!seq.req.keep_state) return absl::OkStatus();
  const StateLayout* layout = backend_->state_layout();
  if (layout == nullptr) return absl::UnimplementedError("this backend cannot save states");
  // The pool's free buffers are the states of turns whose sessions have moved on: at most a few
  // are kept pinned beyond those the sessions hold.
  constexpr int kFreeSnapshotBuffers = 4;
  if (snapshot_pool_ == nullptr) {
    snapshot_pool_ =
        SnapshotPool::Create(backend_.get(), layout->slot_bytes(), kFreeSnapshotBuffers);
  }
  std::shared_ptr<HostSnapshot> snapshot = snapshot_pool_->Take();
  absl::StatusOr<int64_t> position = backend_->SnapshotSlot(seq.slot, snapshot->mutable_bytes());
  if (!position.ok()) {
    return absl::InternalError(
        absl::StrCat("the sequence's state could not be saved: ", position.status().message()));
  }
  auto state = std::make_shared<SequenceState>();
  state->position = *position;
  state->snapshot = std::move(snapshot);
  out->final_state = std::move(state);
  states_kept_.fetch_add(1);
  return absl::OkStatus();
}

void EngineCore::FreeSlot(Seq& seq) {
  if (seq.slot < 0) return;
  // ResetSlot fails for an out-of-range slot (a programmer error) or on a device that has failed
  // for good, which the loop turns into a stop (OPS-1) after this step.
  if (!backend_->ResetSlot(seq.slot).ok() && backend_->healthy()) std::abort();
  free_slots_.push_back(seq.slot);
  seq.slot = -1;
  slots_used_.fetch_sub(1);
}

void EngineCore::FinishSeq(Seq& seq, FinishReason reason, absl::Status status, EngineOutput* out) {
  ReleaseFollowers(seq);
  FreeSlot(seq);
  seq.timings.finished = absl::Now();
  if (seq.timings.scheduled == absl::Time()) seq.timings.scheduled = seq.timings.finished;
  if (seq.timings.first_token == absl::Time()) seq.timings.first_token = seq.timings.finished;
  out->finished = true;
  out->reason = reason;
  out->status = std::move(status);
  out->prompt_tokens = static_cast<int64_t>(seq.req.prompt.size());
  out->completion_tokens = static_cast<int64_t>(seq.output.size());
  out->timings = seq.timings;
}

namespace {

TokenLogprobs ComputeLogprobs(absl::Span<const float> row, int32_t chosen, int top_n,
                              std::vector<float>* scratch) {
  scratch->resize(row.size());
  LogSoftmax(row, absl::MakeSpan(*scratch));
  TokenLogprobs lp;
  lp.id = chosen;
  lp.logprob = (*scratch)[chosen];
  if (top_n > 0) lp.top = TopK(*scratch, top_n);
  return lp;
}

}  // namespace

bool EngineCore::MasksStopIds(const Seq& seq) const {
  const ValidatedRequest& req = seq.req;
  return static_cast<int>(seq.output.size()) < req.min_tokens &&
         ((!req.ignore_eos && eos_id_ >= 0 && eos_id_ < vocab_) || !req.stop_token_ids.empty());
}

bool EngineCore::DeviceCanSample(const Seq& seq) const {
  const ValidatedRequest& req = seq.req;
  return req.top_logprobs < 0 && req.sampling.presence_penalty == 0.0f &&
         req.sampling.frequency_penalty == 0.0f &&
         req.sampling.logit_bias.size() <= static_cast<size_t>(kMaxDeviceLogitBias) &&
         !MasksStopIds(seq);
}

bool EngineCore::RunStep(OutputBatch* outputs, std::vector<std::unique_ptr<Seq>>* done) {
  const absl::Time now = absl::Now();
  auto finish = [&](std::unique_ptr<Seq> seq, FinishReason reason, absl::Status status) {
    EngineOutput out;
    FinishSeq(*seq, reason, std::move(status), &out);
    outputs->emplace_back(seq->callback, std::move(out));
    done->push_back(std::move(seq));
  };
  auto abort_reason = [](const absl::Status& s) {
    return s.ok() || s.code() == absl::StatusCode::kCancelled ||
                   s.code() == absl::StatusCode::kDeadlineExceeded ||
                   s.code() == absl::StatusCode::kUnavailable
               ? FinishReason::kAbort
               : FinishReason::kError;
  };

  // 1. Aborts and deadlines: running requests, then queued ones (under the lock), then group
  // members waiting for a fork. Every live sequence is in one of those places when its sweep
  // runs, so no abort is dropped: members handed back to requeue_ (by the last step's fork
  // without free slots, or by a leader ended in this sweep) join the queue before it is swept.
  absl::flat_hash_map<uint64_t, absl::Status> aborts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts.swap(aborts_);
  }
  for (auto it = running_.begin(); it != running_.end();) {
    auto found = aborts.find((*it)->id);
    if (found != aborts.end() || (*it)->req.deadline <= now) {
      absl::Status s = found != aborts.end()
                           ? found->second
                           : absl::DeadlineExceededError("the request's deadline passed");
      std::unique_ptr<Seq> seq = std::move(*it);
      it = running_.erase(it);
      finish(std::move(seq), abort_reason(s), s);  // hands its followers to requeue_
    } else {
      ++it;
    }
  }
  auto sweep_followers = [&](Seq& leader) {
    for (auto it = leader.followers.begin(); it != leader.followers.end();) {
      auto found = aborts.find((*it)->id);
      if (found == aborts.end() && (*it)->req.deadline > now) {
        ++it;
        continue;
      }
      const absl::Status s = found != aborts.end()
                                 ? found->second
                                 : absl::DeadlineExceededError("the request's deadline passed");
      std::unique_ptr<Seq> f = std::move(*it);
      it = leader.followers.erase(it);
      waiting_followers_.fetch_sub(1);
      finish(std::move(f), abort_reason(s), s);
    }
  };
  for (auto& seq : running_) sweep_followers(*seq);
  std::vector<WaitingSeq> waiting_view;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Ending a queued leader hands its followers back too, hence the loop.
    while (true) {
      // Members handed back go first.
      for (auto it = requeue_.rbegin(); it != requeue_.rend(); ++it) {
        waiting_tokens_ += static_cast<int64_t>((*it)->req.prompt.size());
        waiting_.push_front(std::move(*it));
      }
      requeue_.clear();
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        auto found = aborts.find((*it)->id);
        if (found != aborts.end()) {
          absl::Status s = found->second;
          aborts.erase(found);
          std::unique_ptr<Seq> seq = std::move(*it);
          it = waiting_.erase(it);
          waiting_tokens_ -= static_cast<int64_t>(seq->req.prompt.size());
          finish(std::move(seq), abort_reason(s), s);
        } else if ((*it)->req.deadline <= now ||
                   (*it)->timings.arrival + options_.queue_timeout <= now) {
          std::unique_ptr<Seq> seq = std::move(*it);
          it = waiting_.erase(it);
          waiting_tokens_ -= static_cast<int64_t>(seq->req.prompt.size());
          finish(std::move(seq), FinishReason::kAbort,
                 absl::DeadlineExceededError(
                     "the request waited past its deadline or the queue timeout"));
        } else {
          ++it;
        }
      }
      if (requeue_.empty()) break;
    }
    for (auto& seq : waiting_) sweep_followers(*seq);
  }

  // 2. Plan.
  std::vector<RunningSeq> running_view;
  running_view.reserve(running_.size());
  for (const auto& seq : running_) {
    running_view.push_back({seq->id, static_cast<int64_t>(seq->req.prompt.size()) - seq->fed});
  }
  // The step time target caps the prompt tokens of a step that carries decodes.
  int64_t prefill_budget = -1;
  if (options_.step_time_target > absl::ZeroDuration()) {
    int decode_rows = 0;
    for (const RunningSeq& r : running_view) decode_rows += r.prefill_remaining <= 0;
    decode_rows = std::min(decode_rows, options_.max_batch);
    if (decode_rows > 0) {
      const std::optional<int64_t> fits =
          cost_model_.PrefillTokensWithin(options_.step_time_target, decode_rows);
      if (fits.has_value()) prefill_budget = std::max(*fits, kMinPrefillTokensPerStep);
    }
  }
  BatchPlan plan;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int reclaimable = cache_ != nullptr ? cache_->device_slots_held() : 0;
    const int free_slots = static_cast<int>(free_slots_.size()) + reclaimable;
    const size_t n = std::min(waiting_.size(), static_cast<size_t>(free_slots));
    for (size_t i = 0; i < n; ++i) {
      waiting_view.push_back(
          {waiting_[i]->id, static_cast<int64_t>(waiting_[i]->req.prompt.size())});
    }
    plan = PlanStep(waiting_view, running_view,
                    {.free_slots = free_slots,
                     .token_budget = options_.token_budget,
                     .max_batch = options_.max_batch,
                     .prefill_budget = prefill_budget});
    if (prefill_budget >= 0) {  // did the target hold back prompt tokens the budget allowed?
      int64_t wanted = 0, planned = 0, decodes = 0;
      for (const RunningSeq& r : running_view) wanted += std::max<int64_t>(r.prefill_remaining, 0);
      for (const WaitingSeq& w : waiting_view) wanted += w.prompt_tokens;
      for (const PlanEntry& e : plan.entries) (e.prefill ? planned : decodes) += e.num_tokens;
      if (planned < std::min(wanted, options_.token_budget - decodes)) {
        prefill_capped_steps_.fetch_add(1);
      }
    }
    for (int i = 0; i < plan.num_admitted; ++i) {
      std::unique_ptr<Seq> seq = std::move(waiting_.front());
      waiting_.pop_front();
      waiting_tokens_ -= static_cast<int64_t>(seq->req.prompt.size());
      seq->slot = TakeSlot();
      slots_used_.fetch_add(1);
      seq->timings.scheduled = now;
      seq->context = seq->req.prompt;
      if (seq->req.resume != nullptr) {
        absl::Status resumed = ResumeState(*seq);
        if (!resumed.ok()) {  // this request alone; FinishSeq resets the slot
          finish(std::move(seq), FinishReason::kError, std::move(resumed));
          continue;
        }
      } else {
        RestorePrefix(*seq);
      }
      running_.push_back(std::move(seq));
    }
  }
  num_running_.store(static_cast<int>(running_.size()));
  if (plan.entries.empty()) return !outputs->empty();

  // 3. Step.
  absl::flat_hash_map<uint64_t, Seq*> by_id;
  for (auto& seq : running_) by_id[seq->id] = seq.get();
  std::vector<StepEntry> entries;
  std::vector<Seq*> entry_seq;
  // Prompt log-probabilities: the positions of a prefill chunk predict the prompt's next tokens;
  // the prompt's last position predicts the first generated token, sampled as usual.
  std::vector<PromptLogprobsRequest> scoring(plan.entries.size());
  int scoring_top_k = 0;
  bool any_scored = false;
  entries.reserve(plan.entries.size());
  for (const PlanEntry& pe : plan.entries) {
    auto planned = by_id.find(pe.id);
    if (planned == by_id.end()) continue;  // failed at admission (a state that did not restore)
    Seq* seq = planned->second;
    StepEntry e;
    e.slot = seq->slot;
    e.position = seq->base + seq->fed;
    if (pe.prefill) {
      const absl::Span<const int32_t> prompt = seq->req.prompt;
      const int64_t prompt_size = static_cast<int64_t>(prompt.size());
      // A restored prefix leaves fewer tokens than the plan counted. With the cache on, a chunk
      // that crosses a block boundary ends at the last one it crosses, so that boundary's state
      // can be cached (the prompt's longest block-aligned prefix too, at the cost of one more
      // short chunk). Not the last chunk of a prompt that continues a restored prefix (the next
      // turn of a conversation, a shared system prompt's followers): there the extra pass (a
      // full read of the weights, about 2 ms at 2B) would land on the request's time to first
      // token, for block states only a third request extending the same prefix could use; its
      // state at the end is cached when it finishes (bench/NOTES.md, session 8).
      int64_t take = std::min<int64_t>(pe.num_tokens, prompt_size - seq->fed);
      const bool finishes_continuation = seq->restored_prefix > 0 && seq->fed + take == prompt_size;
      if (cache_ != nullptr && seq->req.prompt_logprobs < 0 && seq->req.resume == nullptr &&
          !finishes_continuation) {
        const int64_t block = cache_->options().block_tokens;
        const int64_t boundary = (seq->fed + take) / block * block;
        if (boundary > seq->fed && boundary < seq->fed + take) take = boundary - seq->fed;
      }
      // A group leader stops one token short of the prompt's end, then forks (ForkFollowers).
      if (seq->fork_at() > seq->fed) take = std::min(take, seq->fork_at() - seq->fed);
      e.tokens = prompt.subspan(seq->fed, take);
      const bool last = seq->fed + take == prompt_size;
      e.logits = last && seq->req.max_tokens > 0 ? LogitsRequest::kLast : LogitsRequest::kNone;
      const int64_t scored = std::min<int64_t>(take, prompt_size - 1 - seq->fed);
      if (seq->req.prompt_logprobs >= 0 && scored > 0) {
        scoring[entries.size()].targets = prompt.subspan(seq->fed + 1, scored);
        scoring_top_k = std::max(scoring_top_k, seq->req.prompt_logprobs);
        any_scored = true;
      }
    } else {
      e.tokens = absl::MakeConstSpan(&seq->next_token, 1);
      e.logits = LogitsRequest::kLast;
    }
    entries.push_back(e);
    entry_seq.push_back(seq);
  }
  if (entries.empty()) return true;
  const int64_t rows = LogitsRows(entries);
  bool on_device = options_.device_sampling && backend_->samples_on_device() && !any_scored;
  for (size_t i = 0; i < entries.size() && on_device; ++i) {
    if (entries[i].logits != LogitsRequest::kNone) on_device = DeviceCanSample(*entry_seq[i]);
  }
  absl::Status status;
  absl::Time backend_start;  // set just before the call: what precedes it is host work
  if (on_device) {
    std::vector<SampleRequest> requests;
    requests.reserve(rows);
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].logits == LogitsRequest::kNone) continue;
      const Seq& seq = *entry_seq[i];
      requests.push_back({.params = seq.req.sampling,
                          .context = seq.context,
                          .step = static_cast<uint64_t>(seq.output.size())});
    }
    sampled_.resize(rows);
    backend_start = absl::Now();
    status = backend_->StepSample(entries, requests, absl::MakeSpan(sampled_));
  } else if (any_scored) {
    const int64_t scored_rows = PromptLogprobsRows(scoring);
    logits_.resize(static_cast<size_t>(rows) * vocab_);
    prompt_logprobs_.resize(scored_rows);
    prompt_ranks_.resize(scored_rows);
    prompt_top_ids_.resize(scored_rows * scoring_top_k);
    prompt_top_logprobs_.resize(scored_rows * scoring_top_k);
    backend_start = absl::Now();
    status =
        backend_->StepWithPromptLogprobs(entries, scoring, scoring_top_k, absl::MakeSpan(logits_),
                                         {.logprobs = absl::MakeSpan(prompt_logprobs_),
                                          .ranks = absl::MakeSpan(prompt_ranks_),
                                          .top_ids = absl::MakeSpan(prompt_top_ids_),
                                          .top_logprobs = absl::MakeSpan(prompt_top_logprobs_)});
  } else {
    logits_.resize(static_cast<size_t>(rows) * vocab_);
    backend_start = absl::Now();
    status = backend_->Step(entries, absl::MakeSpan(logits_));
  }
  const absl::Duration backend_time = absl::Now() - backend_start;
  backend_nanos_.fetch_add(absl::ToInt64Nanoseconds(backend_time));
  if (status.ok() && options_.step_time_target > absl::ZeroDuration()) {
    int decode_rows = 0;
    int64_t prompt_tokens = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entry_seq[i]->prefilling()) {
        prompt_tokens += static_cast<int64_t>(entries[i].tokens.size());
      } else {
        ++decode_rows;
      }
    }
    cost_model_.Observe(decode_rows, prompt_tokens, backend_time);
  }
  steps_.fetch_add(1);
  absl::flat_hash_map<uint64_t, std::pair<FinishReason, absl::Status>> ended;
  if (!status.ok()) {
    // The slots named in the step are undefined: fail those requests; FinishSeq resets the slots.
    for (Seq* seq : entry_seq) {
      ended[seq->id] = {FinishReason::kError, absl::InternalError("the engine step failed")};
    }
  } else {
    // 4. Update: sample, check stops, emit.
    const absl::Time sampled_at = absl::Now();
    int64_t row = 0, scored_row = 0;
    std::vector<float> masked, scratch;
    for (size_t i = 0; i < entries.size(); ++i) {
      Seq& seq = *entry_seq[i];
      const ValidatedRequest& req = seq.req;
      const bool was_prefill = seq.prefilling();
      seq.fed += static_cast<int64_t>(entries[i].tokens.size());
      if (seq.fed == seq.fork_at()) ForkFollowers(seq, sampled_at);
      if (was_prefill) {
        prompt_tokens_computed_.fetch_add(static_cast<int64_t>(entries[i].tokens.size()));
        // A prefill chunk ending on a block boundary: cache that state.
        if (cache_ != nullptr && seq.fed % cache_->options().block_tokens == 0) {
          CacheState(seq, absl::MakeConstSpan(req.prompt).subspan(0, seq.fed));
        }
      }
      bool poisoned = false;
      for (const int32_t target : scoring[i].targets) {
        TokenLogprobs lp{.id = target,
                         .logprob = prompt_logprobs_[scored_row],
                         .rank = prompt_ranks_[scored_row]};
        poisoned |= !std::isfinite(lp.logprob) && !(lp.logprob < 0.0f);  // NaN or +inf
        for (int k = 0; k < req.prompt_logprobs; ++k) {
          const int64_t at = scored_row * scoring_top_k + k;
          lp.top.emplace_back(prompt_top_ids_[at], prompt_top_logprobs_[at]);
        }
        seq.prompt_logprobs.push_back(std::move(lp));
        ++scored_row;
      }
      if (poisoned) {  // NUM-4: this request alone
        if (entries[i].logits != LogitsRequest::kNone) ++row;
        ended[seq.id] = {FinishReason::kError,
                         absl::InternalError("the model produced a non-finite logit")};
        continue;
      }
      if (entries[i].logits == LogitsRequest::kNone) {
        if (!seq.prefilling() && req.max_tokens == 0) {  // prefill only: done
          EngineOutput out;
          out.prompt_logprobs = std::move(seq.prompt_logprobs);
          absl::Status kept = KeepState(seq, &out);
          if (!kept.ok()) {
            ended[seq.id] = {FinishReason::kError, std::move(kept)};
            continue;
          }
          ended[seq.id] = {FinishReason::kLength, absl::OkStatus()};
          FinishSeq(seq, FinishReason::kLength, absl::OkStatus(), &out);
          outputs->emplace_back(seq.callback, std::move(out));
        }
        continue;
      }
      absl::Span<const float> logits;
      absl::StatusOr<int> token;
      if (on_device) {
        token = sampled_[row] >= 0 ? absl::StatusOr<int>(sampled_[row])
                                   : absl::InternalError("the model produced a non-finite logit");
      } else {
        logits = absl::MakeConstSpan(logits_.data() + row * vocab_, vocab_);
        absl::Span<const float> sample_from = logits;
        if (MasksStopIds(seq)) {
          masked.assign(logits.begin(), logits.end());
          const float ninf = -std::numeric_limits<float>::infinity();
          if (!req.ignore_eos && eos_id_ >= 0 && eos_id_ < vocab_) masked[eos_id_] = ninf;
          for (int32_t id : req.stop_token_ids) masked[id] = ninf;
          sample_from = masked;
        }
        token = SampleToken(sample_from, req.sampling, seq.context, seq.output.size(), seq.output);
      }
      ++row;
      if (!token.ok()) {
        ended[seq.id] = {FinishReason::kError, token.status()};  // NUM-4: this request alone
        continue;
      }
      const int32_t t = *token;
      if (seq.timings.first_token == absl::Time()) seq.timings.first_token = sampled_at;
      seq.output.push_back(t);
      seq.context.push_back(t);
      seq.next_token = t;
      EngineOutput out;
      out.tokens.push_back(t);
      if (seq.output.size() == 1) out.prompt_logprobs = std::move(seq.prompt_logprobs);
      if (req.top_logprobs >= 0) {
        out.logprobs.push_back(ComputeLogprobs(logits, t, req.top_logprobs, &scratch));
      }
      const bool stop_id = (!req.ignore_eos && t == eos_id_) ||
                           std::find(req.stop_token_ids.begin(), req.stop_token_ids.end(), t) !=
                               req.stop_token_ids.end();
      const bool length = static_cast<int>(seq.output.size()) >= req.max_tokens;
      if (stop_id || length) {
        const FinishReason reason = stop_id ? FinishReason::kStop : FinishReason::kLength;
        if (stop_id) out.stop_token_id = t;
        CacheState(seq, absl::MakeConstSpan(seq.context).subspan(0, seq.fed));
        absl::Status kept = KeepState(seq, &out);
        if (kept.ok()) {
          ended[seq.id] = {reason, absl::OkStatus()};
          FinishSeq(seq, reason, absl::OkStatus(), &out);
        } else {
          // The tokens go out now; the error ends the request below (its session is not updated).
          ended[seq.id] = {FinishReason::kError, std::move(kept)};
        }
      }
      outputs->emplace_back(seq.callback, std::move(out));
    }
  }
  if (!ended.empty()) {
    for (auto it = running_.begin(); it != running_.end();) {
      auto found = ended.find((*it)->id);
      if (found == ended.end()) {
        ++it;
        continue;
      }
      std::unique_ptr<Seq> seq = std::move(*it);
      it = running_.erase(it);
      if (found->second.first == FinishReason::kError) {
        finish(std::move(seq), FinishReason::kError, found->second.second);
      } else {
        done->push_back(std::move(seq));  // its final output is already queued
      }
    }
  }
  num_running_.store(static_cast<int>(running_.size()));
  if (cache_ != nullptr) {
    std::lock_guard<std::mutex> lock(cache_stats_mu_);
    cache_stats_ = cache_->stats();
  }
  return true;
}

void EngineCore::Loop() {
  SetCurrentThreadName("griffin-engine");
  OutputBatch outputs;
  std::vector<std::unique_ptr<Seq>> done;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || !waiting_.empty() || !aborts_.empty() || !running_.empty(); });
      if (stop_) break;
    }
    const absl::Time step_start = absl::Now();
    RunStep(&outputs, &done);
    // A sticky device error stops the engine before the step's failures are delivered, so no
    // client sees its request fail while the server still reads as ready.
    const bool device_failed = !backend_->healthy();
    if (device_failed) {
      const absl::Status status = absl::UnavailableError(
          "the device failed (sticky error); the server stops and must be restarted");
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        fatal_ = status;
      }
      if (options_.on_device_failure) options_.on_device_failure(status);
    }
    Deliver(&outputs);
    done.clear();
    busy_nanos_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - step_start));
    if (device_failed) break;
  }
  // Stopped: everything still queued or running ends UNAVAILABLE.
  std::deque<std::unique_ptr<Seq>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
    waiting_tokens_ = 0;
  }
  for (auto& seq : waiting) running_.push_back(std::move(seq));
  absl::Status fatal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fatal = fatal_;
  }
  const absl::Status ending =
      fatal.ok() ? absl::UnavailableError("the server is shutting down") : fatal;
  // Each output gets a Status of its own, not a copy of `ending`: a copy shares one reference-
  // counted rep, and this thread keeps `ending` (and `fatal`) past FlushOutputs, so it could drop
  // the last reference after the front end's threads dropped theirs in libabsl's uninstrumented
  // code, which ThreadSanitizer sees as an unsynchronised delete.
  auto own = [&ending] { return absl::Status(ending.code(), ending.message()); };
  for (auto& seq : running_) {
    EngineOutput out;
    FinishSeq(*seq, FinishReason::kAbort, own(), &out);  // hands group members to requeue_
    outputs.emplace_back(seq->callback, std::move(out));
  }
  running_.clear();
  while (!requeue_.empty()) {
    std::unique_ptr<Seq> seq = std::move(requeue_.back());
    requeue_.pop_back();
    EngineOutput out;
    FinishSeq(*seq, FinishReason::kAbort, own(), &out);
    outputs.emplace_back(seq->callback, std::move(out));
  }
  Deliver(&outputs);  // after every earlier step's outputs, as always
  num_running_.store(0);
  // Every request's last output is out before the server hears the engine stopped.
  FlushOutputs();
  if (!fatal.ok() && options_.on_fatal) options_.on_fatal(fatal);
}

}  // namespace griffin::engine
