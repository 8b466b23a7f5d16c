// The OpenAI HTTP client of griffin-bench: POST /v1/completions with stream=true and
// stream_options.include_usage, so it measures any OpenAI-compatible server the same way.
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/load_client.h"
#include "httplib.h"

namespace griffin::bench {

absl::StatusOr<std::unique_ptr<LoadClient>> MakeGrpcClient(const ClientOptions& options);

namespace {

double Since(std::chrono::steady_clock::time_point epoch) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch).count();
}

class HttpClient final : public LoadClient {
 public:
  explicit HttpClient(ClientOptions options) : options_(std::move(options)) {}

  absl::StatusOr<nlohmann::json> ServerInfo() override {
    httplib::Client client(options_.host, options_.port);
    client.set_connection_timeout(10);
    client.set_read_timeout(30);
    auto res = client.Get("/v1/models");
    if (!res) return absl::UnavailableError("the server does not answer GET /v1/models");
    if (res->status != 200) {
      return absl::UnavailableError(absl::StrCat("GET /v1/models answered HTTP ", res->status));
    }
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty()) {
      return absl::UnavailableError("GET /v1/models did not list a model");
    }
    if (options_.model.empty()) options_.model = j["data"][0].value("id", "");
    return j;
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) override {
    httplib::Client client(options_.host, options_.port);
    client.set_read_timeout(static_cast<time_t>(options_.timeout_s));
    nlohmann::json body = {{"prompt", text}, {"add_special_tokens", false}};
    auto res = client.Post("/tokenize", body.dump(), "application/json");
    if (!res || res->status != 200) return absl::UnavailableError("POST /tokenize failed");
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (j.is_discarded() || !j.contains("tokens") || !j["tokens"].is_array()) {
      return absl::UnavailableError("POST /tokenize answered no tokens");
    }
    return j["tokens"].get<std::vector<int32_t>>();
  }

  RequestOutcome Send(const WorkItem& item, std::chrono::steady_clock::time_point epoch) override {
    nlohmann::json body = {{"model", options_.model},
                           {"max_tokens", item.max_tokens},
                           {"temperature", options_.temperature},
                           {"stream", true},
                           {"stream_options", {{"include_usage", true}}},
                           {"ignore_eos", options_.ignore_eos}};
    if (!item.prompt_ids.empty()) {
      body["prompt"] = item.prompt_ids;
    } else {
      body["prompt"] = item.prompt_text;
    }
    if (!item.session_id.empty()) body["session_id"] = item.session_id;
    RequestOutcome o;
    o.prompt_tokens = static_cast<int>(item.prompt_ids.size());
    httplib::Client client(options_.host, options_.port);
    client.set_connection_timeout(10);
    client.set_read_timeout(static_cast<time_t>(options_.timeout_s));
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.set_header("Accept", "text/event-stream");
    SseParser parser;
    int chunks = 0, usage_tokens = -1;
    bool done = false;
    std::string error;
    std::string error_body;
    int http_status = 0;
    req.response_handler = [&](const httplib::Response& response) {
      http_status = response.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (http_status != 200) {
        error_body.append(data, n);
        return true;
      }
      parser.Feed(std::string_view(data, n), [&](const std::string& event) {
        if (event == "[DONE]") {
          done = true;
          return;
        }
        auto j = nlohmann::json::parse(event, nullptr, false);
        if (j.is_discarded()) {
          error = "bad_sse_json";
          return;
        }
        if (j.contains("error")) {
          error = "stream_error";
          return;
        }
        if (j.contains("session_id") && j["session_id"].is_string()) {
          o.session_id = j["session_id"].get<std::string>();
        }
        if (j.contains("usage") && j["usage"].is_object()) {
          usage_tokens = j["usage"].value("completion_tokens", -1);
          o.prompt_tokens = j["usage"].value("prompt_tokens", o.prompt_tokens);
        }
        // As vLLM's benchmark: every chunk with choices is a token arrival (the first one is
        // TTFT), whatever its text; servers skip chunks whose text is still held back.
        if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
          const auto& text = j["choices"][0]["text"];
          if (text.is_string()) o.output_text += text.get<std::string>();
          const double now = Since(epoch);
          if (chunks == 0) o.first_token_time = now;
          o.chunk_times.push_back(now);
          ++chunks;
        }
      });
      return true;
    };
    o.send_time = Since(epoch);
    httplib::Response res;
    httplib::Error transport = httplib::Error::Success;
    const bool sent = client.send(req, res, transport);
    o.end_time = Since(epoch);
    if (!sent) {
      o.status = absl::StrCat("transport_", httplib::to_string(transport));
    } else if (http_status != 200) {
      o.status = absl::StrCat("http_", http_status);
    } else if (!error.empty()) {
      o.status = error;
    } else if (!done) {
      o.status = "no_done_event";
    } else if (chunks == 0) {
      o.status = "no_chunks";
    } else {
      o.ok = true;
      o.status = "OK";
      o.output_tokens = usage_tokens >= 0 ? usage_tokens : chunks;
    }
    return o;
  }

 private:
  ClientOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LoadClient>> MakeClient(std::string_view protocol,
                                                       const ClientOptions& options) {
  if (protocol == "http") return std::unique_ptr<LoadClient>(new HttpClient(options));
  if (protocol == "grpc") return MakeGrpcClient(options);
  return absl::InvalidArgumentError("--protocol must be http or grpc");
}

}  // namespace griffin::bench
