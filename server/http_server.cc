#include "server/http_server.h"

#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/utf8.h"
#include "nlohmann/json.hpp"
#include "server/grpc_service.h"
#include "server/openai_request.h"
#include "spdlog/spdlog.h"

namespace griffin::server {
namespace {

using json = nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int HttpCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

const char* ErrorType(int http) {
  switch (http) {
    case 400:
      return "invalid_request_error";
    case 404:
      return "not_found_error";
    case 409:
      return "conflict_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return "server_error";
  }
}

HttpResponse ErrorResponse(const absl::Status& status) {
  const int http = HttpCode(status.code());
  HttpResponse res;
  res.status = http;
  if (http == 429) res.headers.emplace_back("Retry-After", "1");
  json j = {{"error",
             {{"message", std::string(status.message())},
              {"type", ErrorType(http)},
              {"param", nullptr},
              {"code", http}}}};
  res.body = Dump(j);
  return res;
}

HttpReply Reply(HttpResponse response) { return HttpReply{std::move(response), nullptr}; }
HttpReply Error(const absl::Status& status) { return Reply(ErrorResponse(status)); }
HttpReply Json(const json& body) {
  return Reply(HttpResponse{.content_type = "application/json", .body = Dump(body)});
}

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

// ---- Running one OpenAI request: n generations (per prompt) and what they produced.

struct Choice {
  std::shared_ptr<Generation> generation;
  int prompt_index = 0;             // which prompt of the request
  bool first_of_prompt = false;     // choice 0 of its prompt (usage counts its prompt once)
  std::string echo_text;            // echo: the prompt as text, sent before the output
  std::vector<int32_t> prompt_ids;  // the prompt's ids (echo logprobs, prompt_logprobs)
  std::vector<engine::TokenLogprobs> prompt_logprobs;  // from the engine, once
  std::string text;
  std::vector<engine::TokenLogprobs> logprobs;
  std::string finish_reason;
  absl::Status status;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t tokens_so_far = 0;  // streamed (continuous_usage_stats)
  bool done = false;
  bool sent_role = false;
  bool sent_prompt = false;  // stream: the echo / prompt log-probabilities went out
};

struct Run {
  ServerState* state = nullptr;
  OpenAiRequest request;
  std::string id;
  int64_t created = 0;
  std::vector<Choice> choices;
  std::string session_id;  // the session this request continues (issue 15), or ""

  bool AllDone() const {
    for (const Choice& c : choices) {
      if (!c.done) return false;
    }
    return true;
  }
  // Each unfinished generation ends within one engine step; nothing here waits for that.
  void CancelAll(const absl::Status& status) {
    for (Choice& c : choices) {
      if (!c.done && c.generation != nullptr) c.generation->Cancel(status);
    }
  }
  ~Run() { CancelAll(absl::CancelledError("the client went away")); }
};

std::string TokenText(const ServerState& state, int32_t id) {
  if (state.tokenizer == nullptr) return absl::StrCat("token_id:", id);
  return SanitizeUtf8(state.tokenizer->TokenBytes(id));
}

json TokenBytesJson(const ServerState& state, int32_t id) {
  json bytes = json::array();
  if (state.tokenizer != nullptr) {
    for (unsigned char c : state.tokenizer->TokenBytes(id)) bytes.push_back(static_cast<int>(c));
  }
  return bytes;
}

json ChatLogprobEntries(const ServerState& state, const std::vector<engine::TokenLogprobs>& lps) {
  json content = json::array();
  for (const auto& lp : lps) {
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) {
      top.push_back({{"token", TokenText(state, id)},
                     {"logprob", LogprobForJson(logprob)},
                     {"bytes", TokenBytesJson(state, id)}});
    }
    content.push_back({{"token", TokenText(state, lp.id)},
                       {"logprob", LogprobForJson(lp.logprob)},
                       {"bytes", TokenBytesJson(state, lp.id)},
                       {"top_logprobs", top}});
  }
  return content;
}

// The legacy completions `logprobs` object, built a token at a time (the echoed prompt first).
struct CompletionLogprobs {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();

  // `lp` null: the prompt's first token, which has no distribution (OpenAI's null entries).
  // `top` caps the alternatives listed.
  void Add(const ServerState& state, int32_t id, const engine::TokenLogprobs* lp, size_t top,
           int64_t* offset) {
    const std::string text = TokenText(state, id);
    tokens.push_back(text);
    text_offset.push_back(*offset);
    *offset += static_cast<int64_t>(text.size());
    if (lp == nullptr) {
      token_logprobs.push_back(nullptr);
      top_logprobs.push_back(nullptr);
      return;
    }
    token_logprobs.push_back(LogprobForJson(lp->logprob));
    json t = json::object();
    for (size_t k = 0; k < lp->top.size() && k < top; ++k) {
      t[TokenText(state, lp->top[k].first)] = LogprobForJson(lp->top[k].second);
    }
    top_logprobs.push_back(t);
  }
  // The echoed prompt: its first token, then one entry per scored position.
  void AddPrompt(const ServerState& state, const Choice& c, size_t top, int64_t* offset) {
    for (size_t i = 0; i < c.prompt_ids.size(); ++i) {
      const engine::TokenLogprobs* lp =
          i >= 1 && i - 1 < c.prompt_logprobs.size() ? &c.prompt_logprobs[i - 1] : nullptr;
      Add(state, c.prompt_ids[i], lp, top, offset);
    }
  }
  json ToJson() && {
    return {{"tokens", std::move(tokens)},
            {"token_logprobs", std::move(token_logprobs)},
            {"top_logprobs", std::move(top_logprobs)},
            {"text_offset", std::move(text_offset)}};
  }
};

// vLLM's prompt_logprobs: null for the first prompt token, then for each position a map from
// token id (as a string) to {logprob, rank, decoded_token}: the prompt token and the top `k`.
json PromptLogprobsJson(const ServerState& state, const Choice& c, int64_t k) {
  json out = json::array();
  for (size_t i = 0; i < c.prompt_ids.size(); ++i) {
    if (i == 0 || i - 1 >= c.prompt_logprobs.size()) {
      out.push_back(nullptr);
      continue;
    }
    const engine::TokenLogprobs& lp = c.prompt_logprobs[i - 1];
    json position = json::object();
    position[absl::StrCat(lp.id)] = {{"logprob", LogprobForJson(lp.logprob)},
                                     {"rank", lp.rank},
                                     {"decoded_token", TokenText(state, lp.id)}};
    for (size_t j = 0; j < lp.top.size() && static_cast<int64_t>(j) < k; ++j) {
      const auto& [id, logprob] = lp.top[j];
      const std::string key = absl::StrCat(id);
      if (position.contains(key)) continue;
      position[key] = {{"logprob", LogprobForJson(logprob)},
                       {"rank", static_cast<int64_t>(j) + 1},
                       {"decoded_token", TokenText(state, id)}};
    }
    out.push_back(std::move(position));
  }
  return out;
}

std::string OpenAiFinish(const std::string& reason) {
  if (reason == "stop_string") return "stop";
  return reason;
}

absl::StatusOr<std::shared_ptr<Run>> StartRun(ServerState* state, const HttpRequest& req,
                                              const HttpWaker& wake, bool chat) {
  if (state->draining.load() || !state->ready.load()) {
    state->metrics->Rejected("unavailable");
    return absl::UnavailableError("the server is not accepting requests");
  }
  absl::StatusOr<ParsedOpenAiRequest> parsed = ParseOpenAiRequest(req.body, *state, chat);
  if (!parsed.ok()) {
    state->metrics->Rejected("invalid");
    return parsed.status();
  }
  auto run = std::make_shared<Run>();
  run->state = state;
  run->request = std::move(parsed->request);
  const std::vector<ValidatedGenerate>& validated = parsed->validated;
  const std::vector<GenerateInput>& prompts = run->request.prompts;
  const int n = validated.front().n;
  run->id = state->NewRequestId(chat ? "chatcmpl-" : "cmpl-");
  run->created = absl::ToUnixSeconds(absl::Now());
  run->choices.resize(validated.size() * n);
  const char* api = chat ? "chat" : "completions";
  auto refuse = [&](size_t started, const absl::Status& status) {
    const absl::StatusCode code = status.code();
    state->metrics->Rejected(code == absl::StatusCode::kResourceExhausted ? "queue_full"
                             : code == absl::StatusCode::kUnavailable     ? "unavailable"
                                                                          : "invalid");
    run->choices.resize(started);
    run->CancelAll(absl::CancelledError("a sibling was rejected"));
    return status;
  };
  for (size_t p = 0; p < validated.size(); ++p) {
    std::vector<engine::ValidatedRequest> requests;
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      const size_t index = p * n + i;  // OpenAI's order: prompt-major
      Choice& c = run->choices[index];
      c.prompt_index = static_cast<int>(p);
      c.first_of_prompt = i == 0;
      c.prompt_ids = validated[p].request.prompt;
      if (prompts[p].echo) {
        if (prompts[p].text) {
          c.echo_text = *prompts[p].text;  // as the client sent it (valid UTF-8)
        } else if (state->tokenizer != nullptr) {
          std::vector<int> ids(c.prompt_ids.begin(), c.prompt_ids.end());
          c.echo_text = SanitizeUtf8(state->tokenizer->Decode(ids));
        }
      }
      engine::ValidatedRequest r = validated[p].request;
      r.deadline = absl::Now() + state->request_timeout;
      r.sampling.seed += static_cast<uint64_t>(i);  // n choices differ; the same seed repeats them
      requests.push_back(std::move(r));
      ids.push_back(run->choices.size() == 1 ? run->id : absl::StrCat(run->id, "-", index));
    }
    if (n > 1) {
      // The prompt is prefilled once and its state copied to the n choices' slots.
      absl::StatusOr<std::vector<std::shared_ptr<Generation>>> group =
          Generation::StartGroup(state, std::move(requests), validated[p].stop_strings,
                                 std::move(ids), req.tenant, api, wake);
      if (!group.ok()) return refuse(p * n, group.status());
      for (int i = 0; i < n; ++i) {
        Choice& c = run->choices[p * n + i];
        c.generation = (*group)[i];
        c.prompt_tokens = c.generation->prompt_tokens();
      }
      continue;
    }
    std::unique_ptr<SessionLease> lease;
    if (!validated[p].session_id.empty()) {  // one prompt, n = 1 (validation)
      absl::StatusOr<std::unique_ptr<SessionLease>> opened =
          OpenSession(state->sessions, validated[p].session_id, req.tenant);
      if (!opened.ok()) return refuse(p * n, opened.status());
      lease = std::move(*opened);
      ContinueSessionPrompt(*lease, chat, prompts[p].text.has_value() || prompts[p].text_is_chat,
                            state->tokenizer, state->end_of_turn_id, &requests[0].prompt);
      run->session_id = lease->id();
    }
    absl::StatusOr<std::shared_ptr<Generation>> g =
        Generation::Start(state, std::move(requests[0]), validated[p].stop_strings,
                          std::move(ids[0]), req.tenant, api, wake, std::move(lease));
    if (!g.ok()) return refuse(p * n, g.status());
    Choice& c = run->choices[p * n];
    c.generation = *g;
    c.prompt_tokens = c.generation->prompt_tokens();
  }
  return run;
}

// Applies one event to a choice.
void Apply(Choice& c, Generation::Event& ev) {
  c.text += ev.text;
  c.tokens_so_far += static_cast<int64_t>(ev.token_ids.size());
  for (auto& lp : ev.logprobs) c.logprobs.push_back(lp);
  if (!ev.prompt_logprobs.empty()) c.prompt_logprobs = ev.prompt_logprobs;
  if (ev.finished) {
    c.done = true;
    c.finish_reason = OpenAiFinish(ev.finish_reason);
    c.status = ev.status;
    c.prompt_tokens = ev.prompt_tokens;
    c.completion_tokens = ev.completion_tokens;
  }
}

json UsageJson(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

// Each prompt's tokens once (not once per choice), every choice's completion tokens.
json Usage(const Run& run) {
  int64_t prompt = 0, completion = 0;
  for (const Choice& c : run.choices) {
    if (c.first_of_prompt) prompt += c.prompt_tokens;
    completion += c.completion_tokens;
  }
  return UsageJson(prompt, completion);
}

// One OpenAI request after it started: the transport polls it when the engine has news (the
// generations' notify wakes the connection) and writes what it returns. Nothing here blocks or
// holds a thread while the request waits or streams.
class CompletionReply final : public HttpAsyncReply {
 public:
  CompletionReply(ServerState* state, std::shared_ptr<Run> run, bool chat)
      : state_(state), run_(std::move(run)), chat_(chat), offsets_(run_->choices.size(), 0) {}

  void Poll(Output* out) override {
    if (run_->request.stream) {
      PollStream(out);
    } else {
      PollWhole(out);
    }
  }

  // The connection closed first (the client went away, stopped reading, or the server stops).
  void Cancel() override { run_->CancelAll(absl::CancelledError("the client went away")); }

 private:
  // Non-streaming: one response once every choice has finished.
  void PollWhole(Output* out) {
    ServerState* state = state_;
    const bool chat = chat_;
    const OpenAiRequest& request = run_->request;
    Generation::Event ev;
    for (Choice& c : run_->choices) {
      while (!c.done && c.generation->Poll(&ev)) Apply(c, ev);
    }
    if (!run_->AllDone()) return;
    out->done = true;
    for (const Choice& c : run_->choices) {
      if (!c.status.ok()) {
        out->head = ErrorResponse(c.status);
        return;
      }
    }
    json choices = json::array();
    for (size_t i = 0; i < run_->choices.size(); ++i) {
      const Choice& c = run_->choices[i];
      json lp = nullptr;
      if (request.logprobs) {
        if (chat) {
          lp = json{{"content", ChatLogprobEntries(*state, c.logprobs)}};
        } else {
          CompletionLogprobs built;
          int64_t offset = 0;
          if (request.input.echo) built.AddPrompt(*state, c, request.echo_top, &offset);
          for (const auto& t : c.logprobs) built.Add(*state, t.id, &t, t.top.size(), &offset);
          lp = std::move(built).ToJson();
        }
      }
      if (chat) {
        choices.push_back({{"index", i},
                           {"message", {{"role", "assistant"}, {"content", c.text}}},
                           {"logprobs", lp},
                           {"finish_reason", c.finish_reason}});
      } else {
        json choice = {{"index", i},
                       {"text", c.echo_text + c.text},
                       {"logprobs", lp},
                       {"finish_reason", c.finish_reason}};
        if (request.prompt_logprobs) {
          choice["prompt_logprobs"] = PromptLogprobsJson(*state, c, *request.prompt_logprobs);
        }
        choices.push_back(std::move(choice));
      }
    }
    json body = {
        {"id", run_->id},           {"object", chat ? "chat.completion" : "text_completion"},
        {"created", run_->created}, {"model", state->model_name},
        {"choices", choices},       {"usage", Usage(*run_)}};
    if (chat && request.prompt_logprobs) {  // vLLM puts it beside the choices for chat
      body["prompt_logprobs"] =
          PromptLogprobsJson(*state, run_->choices[0], *request.prompt_logprobs);
    }
    if (!run_->session_id.empty()) body["session_id"] = run_->session_id;
    out->head = HttpResponse{.content_type = "application/json", .body = Dump(body)};
    if (!run_->session_id.empty())
      out->head->headers.emplace_back(kSessionIdHeader, run_->session_id);
  }

  // Server-sent events: a head at once, then every event as it comes, then data: [DONE].
  void PollStream(Output* out) {
    ServerState* state = state_;
    const bool chat = chat_;
    const OpenAiRequest& request = run_->request;
    if (!head_sent_) {
      head_sent_ = true;
      out->head = HttpResponse{.content_type = "text/event-stream", .stream = true};
      out->head->headers.emplace_back("Cache-Control", "no-cache");
      if (!run_->session_id.empty()) {
        out->head->headers.emplace_back(kSessionIdHeader, run_->session_id);
      }
    }
    auto send = [&](const json& j) { absl::StrAppend(&out->data, "data: ", Dump(j), "\n\n"); };
    auto chunk = [&](json choices) {
      json j{{"id", run_->id},
             {"object", chat ? "chat.completion.chunk" : "text_completion"},
             {"created", run_->created},
             {"model", state->model_name},
             {"choices", std::move(choices)}};
      if (!run_->session_id.empty()) j["session_id"] = run_->session_id;
      return j;
    };
    for (size_t i = 0; i < run_->choices.size(); ++i) {
      Choice& c = run_->choices[i];
      Generation::Event ev;
      while (!c.done && c.generation->Poll(&ev)) {
        Apply(c, ev);
        if (!c.status.ok()) {
          const int http = HttpCode(c.status.code());
          send({{"error",
                 {{"message", std::string(c.status.message())},
                  {"type", ErrorType(http)},
                  {"code", http}}}});
          run_->CancelAll(absl::CancelledError("a sibling failed"));
          out->data += "data: [DONE]\n\n";  // end the stream cleanly
          out->done = true;
          return;
        }
        // The prompt's part (echo text, its log-probabilities) goes out with the choice's
        // first event: the engine delivers the prompt's scores with the first token.
        const bool prompt_now = !c.sent_prompt;
        c.sent_prompt = true;
        const std::string text = prompt_now ? c.echo_text + ev.text : ev.text;
        json lp = nullptr;
        if (request.logprobs && chat && !ev.logprobs.empty()) {
          lp = json{{"content", ChatLogprobEntries(*state, ev.logprobs)}};
        } else if (request.logprobs && !chat &&
                   (!ev.logprobs.empty() || (prompt_now && request.input.echo))) {
          CompletionLogprobs built;
          if (prompt_now && request.input.echo) {
            built.AddPrompt(*state, c, request.echo_top, &offsets_[i]);
          }
          for (const auto& t : ev.logprobs) {
            built.Add(*state, t.id, &t, t.top.size(), &offsets_[i]);
          }
          lp = std::move(built).ToJson();
        }
        json finish = ev.finished ? json(OpenAiFinish(ev.finish_reason)) : json(nullptr);
        json choice;
        bool role_now = false;
        if (chat) {
          json delta = json::object();
          if (!c.sent_role) {
            delta["role"] = "assistant";
            c.sent_role = true;
            role_now = true;
          }
          if (!text.empty() || !ev.finished) delta["content"] = text;
          choice = {{"index", i}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", finish}};
        } else {
          choice = {{"index", i}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish}};
          if (prompt_now && request.prompt_logprobs) {
            choice["prompt_logprobs"] = PromptLogprobsJson(*state, c, *request.prompt_logprobs);
          }
        }
        if (text.empty() && !ev.finished && lp.is_null() && !role_now && !prompt_now) {
          continue;  // nothing to say yet (text held back)
        }
        json event = chunk(json::array({choice}));
        if (chat && prompt_now && request.prompt_logprobs) {
          event["prompt_logprobs"] = PromptLogprobsJson(*state, c, *request.prompt_logprobs);
        }
        if (request.continuous_usage) {  // vLLM: this choice's usage so far, every chunk
          event["usage"] = UsageJson(c.prompt_tokens, c.tokens_so_far);
        }
        send(event);
      }
    }
    if (run_->AllDone()) {
      if (request.include_usage) {
        json last = chunk(json::array());
        last["usage"] = Usage(*run_);
        send(last);
      }
      out->data += "data: [DONE]\n\n";
      out->done = true;
    }
  }

  ServerState* const state_;
  const std::shared_ptr<Run> run_;
  const bool chat_;
  std::vector<int64_t> offsets_;  // completions logprobs: text offset per choice
  bool head_sent_ = false;
};

HttpReply Respond(ServerState* state, const HttpRequest& req, const HttpWaker& wake, bool chat) {
  absl::StatusOr<std::shared_ptr<Run>> started = StartRun(state, req, wake, chat);
  if (!started.ok()) return Error(started.status());
  return HttpReply{{}, std::make_shared<CompletionReply>(state, std::move(*started), chat)};
}

}  // namespace

HttpServer::HttpServer(ServerState* state, HttpOptions options) : state_(state) {
  options.transport.api_keys = state->api_keys;
  std::vector<HttpRoute> routes = Routes(options.protect_metrics);
  transport_ = std::make_unique<HttpTransport>(std::move(options.transport), std::move(routes));
}

HttpServer::~HttpServer() { transport_->Stop(absl::ZeroDuration()); }

absl::Status HttpServer::Start() { return transport_->Start(); }
void HttpServer::BeginDrain() { transport_->BeginDrain(); }
void HttpServer::Stop(absl::Duration grace) { transport_->Stop(grace); }
int HttpServer::port() const { return transport_->port(); }
const HttpTransportStats& HttpServer::stats() const { return transport_->stats(); }

std::vector<HttpRoute> HttpServer::Routes(bool protect_metrics) {
  ServerState* st = state_;
  std::vector<HttpRoute> routes;
  routes.push_back({.method = "POST",
                    .path = "/v1/completions",
                    .json_body = true,
                    .handler = [st](HttpRequest req, HttpWaker wake) {
                      return Respond(st, req, wake, /*chat=*/false);
                    }});
  routes.push_back({.method = "POST",
                    .path = "/v1/chat/completions",
                    .json_body = true,
                    .handler = [st](HttpRequest req, HttpWaker wake) {
                      return Respond(st, req, wake, /*chat=*/true);
                    }});
  // max_model_len is the longest prompt accepted, the one figure /tokenize reports too: a client
  // that keeps prompt + max_tokens under it (vLLM's rule) is never refused for length, whereas the
  // sum of the two limits would invite prompts the server refuses. The state is fixed-size, so
  // memory puts no bound on the total length; generation adds up to --max_output_tokens.
  auto model_card = [st] {
    return json{{"id", st->model_name},
                {"object", "model"},
                {"created", st->created},
                {"owned_by", "griffin"},
                {"root", st->model_name},
                {"parent", nullptr},
                {"max_model_len", st->limits.max_prompt_tokens},
                // Extensions: the weights' format and size (issue 14).
                {"quantization", st->quantization},
                {"weight_bytes", st->weight_bytes}};
  };
  routes.push_back(
      {.method = "GET", .path = "/v1/models", .handler = [st, model_card](HttpRequest, HttpWaker) {
         if (!st->loaded.load(std::memory_order_acquire)) {
           return Error(absl::UnavailableError("the model is loading"));
         }
         return Json({{"object", "list"}, {"data", json::array({model_card()})}});
       }});
  routes.push_back({.method = "GET",
                    .path = "/v1/models/",
                    .prefix = true,
                    .handler = [st, model_card](HttpRequest req, HttpWaker) {
                      if (!st->loaded.load(std::memory_order_acquire)) {
                        return Error(absl::UnavailableError("the model is loading"));
                      }
                      const std::string id = req.path.substr(std::string("/v1/models/").size());
                      if (id != st->model_name) {
                        // OpenAI's shape for an unknown model; the id is not echoed (TXT-7).
                        return Reply(HttpResponse{
                            .status = 404,
                            .body = Dump({{"error",
                                           {{"message", "no model has this id (see /v1/models)"},
                                            {"type", "invalid_request_error"},
                                            {"param", "model"},
                                            {"code", "model_not_found"}}}})});
                      }
                      return Json(model_card());
                    }});
  routes.push_back(
      {.method = "POST",
       .path = "/tokenize",
       .json_body = true,
       .handler = [st](HttpRequest req, HttpWaker) {
         if (!st->loaded.load(std::memory_order_acquire)) {
           return Error(absl::UnavailableError("the model is loading"));
         }
         absl::StatusOr<json> body = ParseJsonBody(req.body);
         if (!body.ok() || !body->contains("prompt") || !(*body)["prompt"].is_string()) {
           return Error(absl::InvalidArgumentError("prompt must be a string"));
         }
         if (st->tokenizer == nullptr) {
           return Error(absl::FailedPreconditionError("this model has no tokenizer"));
         }
         bool add_special = true;
         if (absl::Status s = ReadBool(*body, "add_special_tokens", &add_special); !s.ok()) {
           return Error(s);
         }
         const std::string& prompt = (*body)["prompt"].get_ref<const std::string&>();
         // Before any work on the text (LEN-1): tokenizing is the expensive part.
         if (static_cast<int64_t>(prompt.size()) > st->limits.max_prompt_bytes) {
           return Error(Invalid("prompt", absl::StrCat("is longer than the limit of ",
                                                       st->limits.max_prompt_bytes, " bytes")));
         }
         absl::StatusOr<std::vector<int>> ids = st->tokenizer->Encode(prompt);
         if (!ids.ok()) {
           return Error(absl::InvalidArgumentError("prompt could not be tokenized"));
         }
         json tokens = json::array();
         if (add_special) tokens.push_back(st->model.bos_id);
         for (int id : *ids) tokens.push_back(id);
         return Json({{"tokens", tokens},
                      {"count", tokens.size()},
                      {"max_model_len", st->limits.max_prompt_tokens}});
       }});
  routes.push_back({.method = "POST",
                    .path = "/detokenize",
                    .json_body = true,
                    .handler = [st](HttpRequest req, HttpWaker) {
                      if (!st->loaded.load(std::memory_order_acquire)) {
                        return Error(absl::UnavailableError("the model is loading"));
                      }
                      absl::StatusOr<json> body = ParseJsonBody(req.body);
                      std::vector<int64_t> ids;
                      if (!body.ok() || !body->contains("tokens")) {
                        return Error(
                            absl::InvalidArgumentError("tokens must be an array of integers"));
                      }
                      if (absl::Status s = ReadIdList((*body)["tokens"], "tokens", &ids); !s.ok()) {
                        return Error(s);
                      }
                      if (st->tokenizer == nullptr) {
                        return Error(absl::FailedPreconditionError("this model has no tokenizer"));
                      }
                      const int vocab = std::min(st->model.vocab_size, st->tokenizer->vocab_size());
                      std::vector<int> v;
                      for (int64_t id : ids) {
                        if (id < 0 || id >= vocab) {
                          return Error(absl::InvalidArgumentError(
                              absl::StrCat("tokens holds an id outside [0, ", vocab, ")")));
                        }
                        v.push_back(static_cast<int>(id));
                      }
                      return Json({{"prompt", SanitizeUtf8(st->tokenizer->Decode(v))}});
                    }});
  routes.push_back(
      {.method = "GET", .path = "/health", .open = true, .handler = [](HttpRequest, HttpWaker) {
         return Reply(HttpResponse{.content_type = "text/plain", .body = "ok\n"});
       }});
  routes.push_back(
      {.method = "GET", .path = "/ready", .open = true, .handler = [st](HttpRequest, HttpWaker) {
         const bool ready = st->loaded.load() && st->ready.load() && !st->draining.load();
         return Reply(HttpResponse{
             .status = ready ? 200 : 503,
             .content_type = "text/plain",
             .body = ready ? "ready\n" : (st->draining.load() ? "draining\n" : "not ready\n")});
       }});
  routes.push_back({.method = "GET",
                    .path = "/metrics",
                    .open = !protect_metrics,
                    .handler = [this, st](HttpRequest, HttpWaker) {
                      st->metrics->SetCallObjects(GenerationService::reactors_created(),
                                                  GenerationService::reactors_destroyed());
                      st->metrics->SetHttpStats(transport_->stats());
                      HttpResponse res{.content_type = "text/plain; version=0.0.4"};
                      if (st->loaded.load(std::memory_order_acquire)) {
                        const engine::EngineStats stats = st->engine->stats();
                        if (st->sessions != nullptr) {
                          st->sessions->Expire();  // the gauges count live sessions only
                          const engine::SessionStoreStats sessions = st->sessions->stats();
                          res.body = st->metrics->Serialize(&stats, &sessions);
                        } else {
                          res.body = st->metrics->Serialize(&stats);
                        }
                      } else {
                        res.body = st->metrics->Serialize(nullptr);
                      }
                      return Reply(std::move(res));
                    }});
  return routes;
}

}  // namespace griffin::server
