#include "server/generation.h"

#include <sys/random.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace griffin::server {

std::string ServerState::NewRequestId(const char* prefix) {
  unsigned char bytes[16];
  if (getrandom(bytes, sizeof(bytes), 0) != static_cast<ssize_t>(sizeof(bytes))) {
    static thread_local std::random_device device;  // getrandom is missing only on old kernels
    for (unsigned char& b : bytes) b = static_cast<unsigned char>(device());
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = prefix;
  for (unsigned char b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  return id;
}

std::string MetricReason(const std::string& r) { return r == "stop_string" ? "stop" : r; }

absl::StatusOr<std::shared_ptr<Generation>> Generation::Make(
    ServerState* state, const engine::ValidatedRequest& request,
    std::vector<std::string> stop_strings, std::string request_id, std::string owner,
    std::string api, std::function<void()> notify) {
  std::shared_ptr<Generation> g(new Generation());
  g->state_ = state;
  g->request_id_ = std::move(request_id);
  g->owner_ = std::move(owner);
  g->api_ = std::move(api);
  g->stop_strings_ = std::move(stop_strings);
  g->notify_ = std::move(notify);
  g->start_ = absl::Now();
  g->prompt_tokens_ = static_cast<int64_t>(request.prompt.size());
  if (state->tokenizer != nullptr) {
    g->detok_ = std::make_unique<IncrementalDetokenizer>(state->tokenizer);
  }
  return g;
}

absl::Status Generation::Register() {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto [it, inserted] = state_->by_id.try_emplace({owner_, request_id_}, weak_from_this());
  if (!inserted) return absl::InvalidArgumentError("request_id is already in flight");
  return absl::OkStatus();
}

void Generation::Unregister() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->by_id.erase(std::make_pair(owner_, request_id_));
}

absl::StatusOr<std::shared_ptr<Generation>> Generation::Start(
    ServerState* state, engine::ValidatedRequest request, std::vector<std::string> stop_strings,
    std::string request_id, std::string owner, std::string api, std::function<void()> notify,
    std::unique_ptr<SessionLease> session) {
  request.cache_salt = CacheNamespace(owner, request.cache_salt);
  if (session != nullptr) session->Prepare(&request);
  absl::StatusOr<std::shared_ptr<Generation>> made =
      Make(state, request, std::move(stop_strings), std::move(request_id), std::move(owner),
           std::move(api), std::move(notify));
  if (!made.ok()) return made.status();  // the lease's destructor abandons the session
  std::shared_ptr<Generation> g = *made;
  if (absl::Status registered = g->Register(); !registered.ok()) return registered;
  if (session != nullptr) g->session_id_ = session->id();
  g->session_ = std::move(session);  // before Submit: the engine thread may finish it at once
  absl::StatusOr<uint64_t> id = state->engine->Submit(
      std::move(request), [g](engine::EngineOutput out) { g->OnOutput(std::move(out)); });
  if (!id.ok()) {
    g->Unregister();
    g->session_.reset();  // abandoned: the request never ran
    return id.status();
  }
  g->engine_id_ = *id;
  return g;
}

absl::StatusOr<std::vector<std::shared_ptr<Generation>>> Generation::StartGroup(
    ServerState* state, std::vector<engine::ValidatedRequest> requests,
    const std::vector<std::string>& stop_strings, std::vector<std::string> request_ids,
    const std::string& owner, const std::string& api, const std::function<void()>& notify) {
  std::vector<std::shared_ptr<Generation>> group;
  std::vector<engine::OutputCallback> callbacks;
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].cache_salt = CacheNamespace(owner, requests[i].cache_salt);
    absl::StatusOr<std::shared_ptr<Generation>> g =
        Make(state, requests[i], stop_strings, std::move(request_ids[i]), owner, api, notify);
    if (!g.ok()) return g.status();
    group.push_back(*g);
    callbacks.push_back([g = *g](engine::EngineOutput out) { g->OnOutput(std::move(out)); });
  }
  Link(group);  // before any choice can be found by its id and aborted
  size_t registered = 0;
  auto unregister_all = [&] {
    for (size_t i = 0; i < registered; ++i) group[i]->Unregister();
  };
  for (; registered < group.size(); ++registered) {
    if (absl::Status s = group[registered]->Register(); !s.ok()) {
      unregister_all();
      return s;
    }
  }
  absl::StatusOr<std::vector<uint64_t>> ids =
      state->engine->SubmitGroup(std::move(requests), std::move(callbacks));
  if (!ids.ok()) {
    unregister_all();
    return ids.status();
  }
  for (size_t i = 0; i < group.size(); ++i) group[i]->engine_id_ = (*ids)[i];
  return group;
}

void Generation::OnOutput(engine::EngineOutput out) {
  if (session_ != nullptr) {
    outputs_.insert(outputs_.end(), out.tokens.begin(), out.tokens.end());
    if (out.finished) {
      session_->Finish(out, outputs_);  // the next turn can start as soon as this one ends
      session_.reset();
    }
  }
  if (!out.tokens.empty()) {
    const absl::Time now = absl::Now();
    if (!got_token_) {
      state_->metrics->FirstToken(absl::ToDoubleSeconds(now - start_));
    } else {
      state_->metrics->InterToken(absl::ToDoubleSeconds(now - last_token_));
    }
    got_token_ = true;
    last_token_ = now;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (out.finished) final_out_ = std::make_unique<engine::EngineOutput>(out);
    raw_.push_back(std::move(out));
  }
  std::lock_guard<std::mutex> lock(notify_mu_);
  if (notify_) notify_();
}

void Generation::ClearNotify() {
  std::lock_guard<std::mutex> lock(notify_mu_);
  notify_ = nullptr;
}

void Generation::Cancel(absl::Status status) {
  state_->engine->Abort(engine_id_, std::move(status));
}

void Generation::CancelGroup(const absl::Status& status) {
  if (group_.empty()) {
    Cancel(status);
    return;
  }
  for (const auto& weak : group_) {
    if (std::shared_ptr<Generation> g = weak.lock()) g->Cancel(status);
  }
}

void Generation::Link(const std::vector<std::shared_ptr<Generation>>& group) {
  for (const auto& g : group) g->group_.assign(group.begin(), group.end());
}

void Generation::AddText(const std::string& text, bool final, Event* event) {
  if (stopped_by_string_) return;
  held_ += text;
  if (!stop_strings_.empty()) {
    size_t best = std::string::npos;
    const std::string* which = nullptr;
    for (const std::string& s : stop_strings_) {
      const size_t p = held_.find(s);
      if (p != std::string::npos && (best == std::string::npos || p < best)) {
        best = p;
        which = &s;
      }
    }
    if (which != nullptr) {
      event->text += held_.substr(0, best);
      held_.clear();
      matched_stop_ = *which;
      stopped_by_string_.store(true);
      Cancel(
          absl::OkStatus());  // the engine frees the slot; its final output ends the event stream
      return;
    }
    if (!final) {
      // Hold back the longest tail that could begin a stop string.
      size_t keep = 0;
      for (const std::string& s : stop_strings_) {
        for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
          if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
            keep = k;
            break;
          }
        }
      }
      event->text += held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return;
    }
  }
  event->text += held_;
  held_.clear();
}

std::string Generation::Reason(const engine::EngineOutput& out) const {
  if (stopped_by_string_.load()) return "stop_string";
  switch (out.reason) {
    case engine::FinishReason::kStop:
      return "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kAbort:
      return "abort";
    default:
      return "error";
  }
}

void Generation::Finish(const engine::EngineOutput& out, Event* event) {
  if (detok_ != nullptr && !stopped_by_string_) AddText(detok_->Finish(), /*final=*/true, event);
  if (!stopped_by_string_) AddText("", /*final=*/true, event);
  event->finished = true;
  event->prompt_tokens = out.prompt_tokens;
  event->completion_tokens = out.completion_tokens;
  event->timings = out.timings;
  event->finish_reason = Reason(out);
  if (stopped_by_string_) {
    event->stop_string = matched_stop_;
    event->status = absl::OkStatus();
  } else {
    event->status = out.status;
    event->stop_token_id = out.stop_token_id;
  }
}

Generation::~Generation() {
  if (accounted_.load()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (final_out_ != nullptr) Account(*final_out_, /*dying=*/true);
}

void Generation::Account(const engine::EngineOutput& out, bool dying) {
  if (accounted_.exchange(true)) return;
  const std::string reason = Reason(out);
  const absl::Status& status = stopped_by_string_.load() ? absl::OkStatus() : out.status;
  state_->metrics->RequestFinished(MetricReason(reason), out.prompt_tokens, out.completion_tokens,
                                   out.timings);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->by_id.find(std::make_pair(owner_, request_id_));
    // In the destructor no weak_ptr to this locks any more: the expired entry is this one.
    if (it != state_->by_id.end() &&
        (dying ? it->second.expired() : it->second.lock().get() == this)) {
      state_->by_id.erase(it);
    }
  }
  const auto& t = out.timings;
  const double queue_s = absl::ToDoubleSeconds(t.scheduled - t.arrival);
  const double prefill_s = absl::ToDoubleSeconds(t.first_token - t.scheduled);
  const double decode_s = absl::ToDoubleSeconds(t.finished - t.first_token);
  const double e2e_s = absl::ToDoubleSeconds(t.finished - t.arrival);
  const std::string code = absl::StatusCodeToString(status.code());
  if (state_->json_logs) {
    nlohmann::json j = {{"event", "request"},
                        {"request_id", request_id_},
                        {"tenant", owner_},
                        {"api", api_},
                        {"finish_reason", reason},
                        {"status", code},
                        {"prompt_tokens", out.prompt_tokens},
                        {"completion_tokens", out.completion_tokens},
                        {"queue_s", queue_s},
                        {"prefill_s", prefill_s},
                        {"decode_s", decode_s},
                        {"e2e_s", e2e_s}};
    spdlog::info("{}", j.dump());
  } else {
    spdlog::info(
        "request id={} tenant={} api={} finish={} status={} prompt_tokens={} completion_tokens={} "
        "queue_s={:.6f} prefill_s={:.6f} decode_s={:.6f} e2e_s={:.6f}",
        request_id_, owner_.empty() ? "-" : owner_, api_, reason, code, out.prompt_tokens,
        out.completion_tokens, queue_s, prefill_s, decode_s, e2e_s);
  }
}

bool Generation::Poll(Event* event) {
  std::lock_guard<std::mutex> poll_lock(poll_mu_);
  *event = Event();
  if (final_returned_.load()) return false;
  std::deque<engine::EngineOutput> raw;
  {
    std::lock_guard<std::mutex> lock(mu_);
    raw.swap(raw_);
  }
  if (raw.empty()) return false;
  for (engine::EngineOutput& out : raw) {
    if (!out.prompt_logprobs.empty()) event->prompt_logprobs = std::move(out.prompt_logprobs);
    for (size_t i = 0; i < out.tokens.size(); ++i) {
      if (stopped_by_string_) break;
      const int32_t t = out.tokens[i];
      event->token_ids.push_back(t);
      if (i < out.logprobs.size()) event->logprobs.push_back(std::move(out.logprobs[i]));
      if (out.finished && t == out.stop_token_id) continue;  // a stop id's text is not emitted
      if (detok_ != nullptr) AddText(detok_->Add(t), /*final=*/false, event);
    }
    if (out.finished) {
      Finish(out, event);
      Account(out, /*dying=*/false);
      final_returned_.store(true);
      break;
    }
  }
  return true;
}

}  // namespace griffin::server
