// The clients griffin-bench drives: one request at a time per call, thread-safe (each call opens its
// own connection or stream), recording when every token-carrying chunk arrives.
#ifndef GRIFFIN_BENCH_LOAD_CLIENT_H_
#define GRIFFIN_BENCH_LOAD_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/serving_metrics.h"
#include "nlohmann/json.hpp"

namespace griffin::bench {

// One request of a workload: token ids (exact lengths) or text (datasets).
struct WorkItem {
  std::vector<int32_t> prompt_ids;
  std::string prompt_text;
  int max_tokens = 128;
  std::string session_id;  // griffin's session extension: "new", an id, or "" (none)
};

struct ClientOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model;  // OpenAI model name; empty: the server's first
  bool ignore_eos = false;
  double temperature = 0.0;
  double timeout_s = 600;
};

class LoadClient {
 public:
  virtual ~LoadClient() = default;
  // What the server says about itself (GetModelInfo over gRPC, /v1/models over HTTP); also checks
  // that the server answers before any load is sent.
  virtual absl::StatusOr<nlohmann::json> ServerInfo() = 0;
  // Sends one streaming request and waits for its end. Times are relative to `epoch`.
  virtual RequestOutcome Send(const WorkItem& item,
                              std::chrono::steady_clock::time_point epoch) = 0;
  // The ids of `text` without BOS (HTTP /tokenize, gRPC Tokenize): --multi_turn full rebuilds a
  // conversation from an output's text where the protocol returns no output ids (HTTP).
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) = 0;
};

// "http" (OpenAI /v1/completions with SSE) or "grpc" (griffin.v1.Generation/Generate).
absl::StatusOr<std::unique_ptr<LoadClient>> MakeClient(std::string_view protocol,
                                                       const ClientOptions& options);

// Exposed for tests: feeds SSE bytes, calls `on_event` with each complete "data:" payload.
class SseParser {
 public:
  template <typename F>
  void Feed(std::string_view bytes, F&& on_event) {
    buffer_.append(bytes);
    size_t end;
    while ((end = buffer_.find("\n\n")) != std::string::npos) {
      std::string event = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      std::string data;
      size_t pos = 0;
      while (pos <= event.size()) {
        size_t nl = event.find('\n', pos);
        if (nl == std::string::npos) nl = event.size();
        std::string_view line(event.data() + pos, nl - pos);
        if (line.substr(0, 5) == "data:") {
          line.remove_prefix(5);
          if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
          if (!data.empty()) data += '\n';
          data.append(line);
        }
        pos = nl + 1;
      }
      if (!data.empty()) on_event(data);
    }
  }

 private:
  std::string buffer_;
};

}  // namespace griffin::bench

#endif  // GRIFFIN_BENCH_LOAD_CLIENT_H_
