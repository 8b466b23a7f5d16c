// The OpenAI JSON bodies of /v1/completions and /v1/chat/completions, parsed and validated
// (VAL-*, TXT-*, LEN-1) into engine requests, without touching the network or the engine: the
// HTTP routes call ParseOpenAiRequest, and so does the libFuzzer target over it
// (tests/fuzz/openai_request_fuzz.cc). Error text names the field and holds no client bytes.
#ifndef GRIFFIN_SERVER_OPENAI_REQUEST_H_
#define GRIFFIN_SERVER_OPENAI_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/generation.h"
#include "server/validation.h"

namespace griffin::server {

// What an OpenAI request asked for, beyond the engine request of each prompt.
struct OpenAiRequest {
  GenerateInput input;                 // the fields every prompt shares
  std::vector<GenerateInput> prompts;  // one per prompt (a completions prompt list; chat: one)
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool continuous_usage = false;  // stream_options.continuous_usage_stats (with include_usage)
  bool logprobs = false;
  int64_t echo_top = 0;  // completions with echo and logprobs: alternatives per prompt position
  std::optional<int64_t> prompt_logprobs;  // vLLM's extension: alternatives per prompt position
};

struct ParsedOpenAiRequest {
  OpenAiRequest request;
  std::vector<ValidatedGenerate> validated;  // one per prompt, in order; n choices each
};

// Parses and validates a whole body: INVALID_ARGUMENT naming the field (a prompt of a list as
// prompt[i]), or FAILED_PRECONDITION; else every prompt validated, the sequences it needs within
// what the server can hold (Limits::max_sequences) and its log-probability fan-out within
// Limits::max_logprob_entries. Reads only the immutable fields of `state` (limits, model,
// tokenizer, names); safe on any thread once `state.loaded` is set.
absl::StatusOr<ParsedOpenAiRequest> ParseOpenAiRequest(const std::string& body,
                                                       const ServerState& state, bool chat);

// A JSON object body, refusing nesting deeper than any request of this API needs before parsing
// (a body of brackets would cost a JSON node per byte). INVALID_ARGUMENT otherwise.
absl::StatusOr<nlohmann::json> ParseJsonBody(const std::string& body);

// Field readers: absent or null leaves `out` unchanged; a wrong type is INVALID_ARGUMENT naming
// `key`.
absl::Status ReadBool(const nlohmann::json& body, const char* key, bool* out);
absl::Status ReadIdList(const nlohmann::json& value, const char* key, std::vector<int64_t>* out);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_OPENAI_REQUEST_H_
