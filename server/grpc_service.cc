#include "server/grpc_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/utf8.h"
#include "server/grpc_request.h"

namespace griffin::server {
namespace {

namespace pb = ::griffin::v1;

std::atomic<int64_t> g_created{0};
std::atomic<int64_t> g_destroyed{0};

// Requests whose text is at least this large are followed by a malloc_trim (SEC-9).
constexpr size_t kLargeRequestBytes = 256 << 10;

// The caller's tenant from its `authorization: Bearer KEY` metadata (SEC-6): "" when no keys are
// configured, nullopt when a key is required and this one is missing or not configured.
std::optional<std::string> CallerTenant(const ServerState& state,
                                        const grpc::CallbackServerContext* context) {
  if (state.api_keys == nullptr || !state.api_keys->enabled()) return std::string();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  const std::string_view value(it->second.data(), it->second.size());
  std::optional<std::string_view> token = ApiKeys::BearerToken(value);
  if (!token) return std::nullopt;
  return state.api_keys->Authenticate(*token);
}

const grpc::Status& Unauthenticated() {
  static const grpc::Status* status =
      new grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                       "a valid API key is required (metadata authorization: Bearer KEY)");
  return *status;
}

pb::FinishReason ToProto(const std::string& reason) {
  if (reason == "stop") return pb::FINISH_REASON_STOP;
  if (reason == "length") return pb::FINISH_REASON_LENGTH;
  if (reason == "stop_string") return pb::FINISH_REASON_STOP_STRING;
  if (reason == "abort") return pb::FINISH_REASON_ABORT;
  return pb::FINISH_REASON_UNSPECIFIED;
}

void AddLogprobs(const engine::TokenLogprobs& lp, pb::PositionLogprobs* p) {
  p->mutable_chosen()->set_token_id(lp.id);
  p->mutable_chosen()->set_logprob(lp.logprob);
  p->mutable_chosen()->set_rank(lp.rank);
  for (const auto& [id, logprob] : lp.top) {
    pb::TokenLogprob* t = p->add_top();
    t->set_token_id(id);
    t->set_logprob(logprob);
  }
}

class GenerateReactor final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
 public:
  GenerateReactor(ServerState* state, grpc::CallbackServerContext* context,
                  const pb::GenerateRequest* request)
      : state_(state), context_(context) {
    g_created.fetch_add(1);
    std::optional<std::string> tenant = CallerTenant(*state, context);
    if (!tenant) {
      state_->metrics->Rejected("unauthenticated");
      {
        std::lock_guard<std::mutex> lock(mu_);
        finished_ = true;
      }
      Finish(Unauthenticated());
      return;
    }
    tenant_ = std::move(*tenant);
    if (request->ByteSizeLong() >= kLargeRequestBytes) large_request_ = true;
    absl::Status status = StartGeneration(*request);
    if (!status.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        finished_ = true;
      }
      Finish(ToGrpcStatus(status));
    }
  }
  ~GenerateReactor() override { g_destroyed.fetch_add(1); }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!pending_.empty()) pending_.pop_front();
    if (!ok) {
      // The stream broke (client gone): the engine request ends through OnCancel or here.
      for (const auto& g : generations_) g->Cancel(absl::CancelledError("the client went away"));
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      }
      return;
    }
    MaybeWriteLocked();
  }

  void OnCancel() override {
    std::vector<std::shared_ptr<Generation>> gs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gs = generations_;
    }
    const bool past_deadline = context_->deadline() <= std::chrono::system_clock::now();
    for (const auto& g : gs) {
      g->Cancel(past_deadline ? absl::DeadlineExceededError("the deadline passed")
                              : absl::CancelledError("the client cancelled"));
    }
  }

  void OnDone() override {
    std::vector<std::shared_ptr<Generation>> gs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gs = generations_;
    }
    for (const auto& g : gs) {
      g->ClearNotify();  // no more calls into this reactor
      if (!g->finished()) g->Cancel(absl::CancelledError("the call ended"));
    }
    if (large_request_ && state_->memory != nullptr) state_->memory->NoteLargeRequest(0);
    delete this;
  }

 private:
  absl::Status StartGeneration(const pb::GenerateRequest& request) {
    // Only before the model is ready. While draining, the transport refuses new calls (the server
    // shuts gRPC down when the drain starts, and a balancer retries a refused call elsewhere); a
    // call that reached this handler in the moment before is served, as in-flight work is. Had it
    // been answered UNAVAILABLE here, no balancer could retry it.
    if (!state_->loaded.load() || (!state_->ready.load() && !state_->draining.load())) {
      state_->metrics->Rejected("unavailable");
      return absl::UnavailableError("the server is not accepting requests");
    }
    std::string id = request.request_id();
    if (id.empty()) {
      id = state_->NewRequestId("gen-");
    } else if (!IsValidRequestId(id)) {
      state_->metrics->Rejected("invalid");
      return absl::InvalidArgumentError("request_id must be 1 to 64 of [A-Za-z0-9._:-]");
    }
    request_id_ = id;
    absl::StatusOr<GenerateInput> in = GenerateInputFromProto(request);
    absl::StatusOr<ValidatedGenerate> v =
        in.ok() ? ValidateGenerate(*in, state_->limits, state_->model, state_->tokenizer)
                : absl::StatusOr<ValidatedGenerate>(in.status());
    if (!v.ok()) {
      state_->metrics->Rejected("invalid");
      return v.status();
    }
    const auto deadline = context_->deadline();
    v->request.deadline = absl::Now() + state_->request_timeout;
    if (deadline != std::chrono::system_clock::time_point::max()) {
      v->request.deadline = std::min(v->request.deadline, absl::FromChrono(deadline));
    }
    std::unique_ptr<SessionLease> lease;
    if (!v->session_id.empty()) {
      absl::StatusOr<std::unique_ptr<SessionLease>> opened =
          OpenSession(state_->sessions, v->session_id, tenant_);
      if (!opened.ok()) {
        state_->metrics->Rejected("invalid");
        return opened.status();
      }
      lease = std::move(*opened);
      ContinueSessionPrompt(*lease, /*chat=*/false, request.has_text(), state_->tokenizer,
                            state_->end_of_turn_id, &v->request.prompt);
      session_id_ = lease->id();
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto notify = [this] {
      std::lock_guard<std::mutex> inner(mu_);
      MaybeWriteLocked();
    };
    absl::Status started;
    if (v->n > 1) {
      // n choices of one prompt, prefilled once. Choice 0 is registered under the request id,
      // choice i under "id/i" ('/' is outside client ids, so no client id collides); Abort of
      // the request id ends them all.
      std::vector<engine::ValidatedRequest> requests;
      std::vector<std::string> ids;
      for (int i = 0; i < v->n; ++i) {
        requests.push_back(v->request);
        requests.back().sampling.seed += static_cast<uint64_t>(i);  // as HTTP's n
        ids.push_back(i == 0 ? id : absl::StrCat(id, "/", i));
      }
      absl::StatusOr<std::vector<std::shared_ptr<Generation>>> group = Generation::StartGroup(
          state_, std::move(requests), v->stop_strings, std::move(ids), tenant_, "grpc", notify);
      if (group.ok()) generations_ = std::move(*group);
      started = group.status();
    } else {
      absl::StatusOr<std::shared_ptr<Generation>> g =
          Generation::Start(state_, std::move(v->request), std::move(v->stop_strings), id, tenant_,
                            "grpc", notify, std::move(lease));
      if (g.ok()) generations_.push_back(*g);
      started = g.status();
    }
    if (!started.ok()) {
      state_->metrics->Rejected(started.code() == absl::StatusCode::kResourceExhausted
                                    ? "queue_full"
                                : started.code() == absl::StatusCode::kUnavailable ? "unavailable"
                                                                                   : "invalid");
      return started;
    }
    done_.assign(generations_.size(), false);
    return absl::OkStatus();
  }

  // Starts the next write, or finishes the call once the final message is written: after every
  // choice's `complete`, or after the first choice that failed (the others are cancelled).
  void MaybeWriteLocked() {
    if (writing_ || finished_ || generations_.empty()) return;
    if (pending_.empty()) {
      for (size_t i = 0; i < generations_.size(); ++i) PollChoiceLocked(i);
      if (!final_status_.has_value() &&
          std::all_of(done_.begin(), done_.end(), [](bool d) { return d; })) {
        final_status_ = grpc::Status::OK;
      }
    }
    if (!pending_.empty()) {
      writing_ = true;
      StartWrite(&pending_.front());
    } else if (final_status_.has_value() &&
               std::all_of(done_.begin(), done_.end(), [](bool d) { return d; })) {
      finished_ = true;
      Finish(*final_status_);
    }
  }

  pb::GenerateResponse& NewResponseLocked(size_t index) {
    pb::GenerateResponse& r = pending_.emplace_back();
    r.set_request_id(request_id_);
    r.set_session_id(session_id_);
    r.set_index(static_cast<int32_t>(index));
    return r;
  }

  void PollChoiceLocked(size_t index) {
    Generation::Event ev;
    while (!done_[index] && generations_[index]->Poll(&ev)) {
      if (final_status_.has_value() && !ev.finished) continue;  // a sibling failed: drop
      if (final_status_.has_value()) {
        done_[index] = true;
        break;
      }
      if (!ev.token_ids.empty() || !ev.text.empty() || !ev.prompt_logprobs.empty()) {
        pb::Chunk* chunk = NewResponseLocked(index).mutable_chunk();
        for (int32_t t : ev.token_ids) chunk->add_token_ids(t);
        chunk->set_text(ev.text);
        for (const engine::TokenLogprobs& lp : ev.prompt_logprobs) {
          AddLogprobs(lp, chunk->add_prompt_logprobs());
        }
        for (const engine::TokenLogprobs& lp : ev.logprobs) {
          AddLogprobs(lp, chunk->add_logprobs());
        }
      }
      if (!ev.finished) continue;
      done_[index] = true;
      if (ev.status.ok()) {
        pb::Complete* c = NewResponseLocked(index).mutable_complete();
        c->set_finish_reason(ToProto(ev.finish_reason));
        c->mutable_usage()->set_prompt_tokens(ev.prompt_tokens);
        c->mutable_usage()->set_completion_tokens(ev.completion_tokens);
        const auto& t = ev.timings;
        c->mutable_timings()->set_queue_seconds(absl::ToDoubleSeconds(t.scheduled - t.arrival));
        c->mutable_timings()->set_prefill_seconds(
            absl::ToDoubleSeconds(t.first_token - t.scheduled));
        c->mutable_timings()->set_decode_seconds(absl::ToDoubleSeconds(t.finished - t.first_token));
        c->set_stop_string(ev.stop_string);
        c->set_stop_token_id(ev.stop_token_id);
      } else {
        // The request failed after it started (INTERNAL, UNAVAILABLE at shutdown, ...): an
        // `error` message says so in-band, then the call ends with the same status (its
        // siblings are cancelled). A client that cancelled or whose deadline passed is not
        // listening: no message for it.
        const absl::StatusCode code = ev.status.code();
        if (code != absl::StatusCode::kCancelled && code != absl::StatusCode::kDeadlineExceeded) {
          pb::Error* e = NewResponseLocked(index).mutable_error();
          e->set_code(static_cast<int32_t>(code));
          e->set_message(std::string(ev.status.message()));
        }
        final_status_ = ToGrpcStatus(ev.status);
        for (size_t j = 0; j < generations_.size(); ++j) {
          if (!done_[j]) generations_[j]->Cancel(absl::CancelledError("a sibling failed"));
        }
      }
    }
  }

  ServerState* const state_;
  grpc::CallbackServerContext* const context_;
  std::string tenant_;  // the caller's (SEC-3: it owns the request)
  bool large_request_ = false;
  std::string request_id_;
  std::string session_id_;  // with a session: sent in every response
  std::mutex mu_;
  std::vector<std::shared_ptr<Generation>> generations_;  // guarded by mu_: one per choice
  std::vector<bool> done_;                    // guarded by mu_: the choice's final event came
  std::deque<pb::GenerateResponse> pending_;  // guarded by mu_; front() is being written
  bool writing_ = false;                      // guarded by mu_
  bool finished_ = false;                     // guarded by mu_
  std::optional<grpc::Status> final_status_;  // guarded by mu_
};

}  // namespace

int64_t GenerationService::reactors_created() { return g_created.load(); }
int64_t GenerationService::reactors_destroyed() { return g_destroyed.load(); }

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ServerWriteReactor<pb::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const pb::GenerateRequest* request) {
  return new GenerateReactor(state_, context, request);
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const pb::TokenizeRequest* request,
                                                      pb::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!CallerTenant(*state_, context)) {
    state_->metrics->Rejected("unauthenticated");
    reactor->Finish(Unauthenticated());
    return reactor;
  }
  if (!state_->loaded.load(std::memory_order_acquire)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is loading"));
    return reactor;
  }
  // Before any work on the text (LEN-1: tokenizing is the expensive part).
  if (static_cast<int64_t>(request->text().size()) > state_->limits.max_prompt_bytes) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrCat("text is longer than the limit of ",
                                              state_->limits.max_prompt_bytes, " bytes")));
    return reactor;
  }
  if (state_->tokenizer == nullptr) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer"));
    return reactor;
  }
  if (!IsValidUtf8(request->text())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text must be valid UTF-8"));
    return reactor;
  }
  absl::StatusOr<std::vector<int>> ids = state_->tokenizer->Encode(request->text());
  if (!ids.ok()) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text could not be tokenized"));
    return reactor;
  }
  if (request->add_bos()) response->add_token_ids(state_->model.bos_id);
  for (int id : *ids) response->add_token_ids(id);
  reactor->Finish(grpc::Status::OK);
  if (request->text().size() >= kLargeRequestBytes && state_->memory != nullptr) {
    state_->memory->NoteLargeRequest(request->text().size());
  }
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Abort(grpc::CallbackServerContext* context,
                                                   const pb::AbortRequest* request,
                                                   pb::AbortResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<std::string> tenant = CallerTenant(*state_, context);
  if (!tenant) {
    state_->metrics->Rejected("unauthenticated");
    reactor->Finish(Unauthenticated());
    return reactor;
  }
  // SEC-3: only the caller's own requests are reachable; any other id, whether it exists for
  // another tenant, has finished or never existed, gets the same NOT_FOUND.
  std::shared_ptr<Generation> g;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->by_id.find(std::make_pair(*tenant, request->request_id()));
    if (it != state_->by_id.end()) g = it->second.lock();
  }
  if (g == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such request in flight"));
    return reactor;
  }
  g->CancelGroup(absl::OkStatus());  // every choice of an n > 1 request
  response->set_found(true);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const pb::GetModelInfoRequest*,
                                                          pb::GetModelInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!CallerTenant(*state_, context)) {
    state_->metrics->Rejected("unauthenticated");
    reactor->Finish(Unauthenticated());
    return reactor;
  }
  if (!state_->loaded.load(std::memory_order_acquire)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is loading"));
    return reactor;
  }
  const loader::ModelConfig& c = state_->engine->backend().config();
  response->set_model_name(state_->model_name);
  response->set_backend(state_->backend_name);
  pb::ModelConfig* m = response->mutable_config();
  m->set_vocab_size(c.vocab_size);
  m->set_hidden_size(c.hidden_size);
  m->set_mlp_width(c.mlp_width);
  m->set_num_layers(c.num_layers);
  m->set_num_heads(c.num_heads);
  m->set_num_kv_heads(c.num_kv_heads);
  m->set_head_dim(c.head_dim);
  m->set_lru_width(c.lru_width);
  m->set_attention_window(c.attention_window);
  m->set_conv1d_width(c.conv1d_width);
  std::string pattern;
  for (loader::BlockType t : c.block_types)
    pattern += t == loader::BlockType::kRecurrent ? 'R' : 'A';
  m->set_block_pattern(pattern);
  m->set_bos_token_id(c.bos_token_id);
  m->set_eos_token_id(c.eos_token_id);
  response->set_state_bytes_per_sequence(state_->state_bytes_per_sequence);
  response->set_num_slots(state_->num_slots);
  response->set_max_prompt_tokens(state_->limits.max_prompt_tokens);
  response->set_max_output_tokens(state_->limits.max_output_tokens);
  response->set_max_queue(state_->max_queue);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace griffin::server
