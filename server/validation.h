// Validation of every client-controlled field before anything reaches the engine
// (RELIABILITY.md VAL-1..9, TXT-1, TXT-7, LEN-1/2). Both front ends (gRPC and HTTP) fill a
// GenerateInput with the raw values they parsed and get back either a ValidatedGenerate, which
// the engine trusts, or INVALID_ARGUMENT whose message names the field and holds only fixed text
// and numbers (never the client's bytes).
#ifndef GRIFFIN_SERVER_VALIDATION_H_
#define GRIFFIN_SERVER_VALIDATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine_core.h"
#include "loader/tokenizer.h"

namespace griffin::server {

// Server policy. One value each, read by validation and by the engine's configuration (LEN-2).
struct Limits {
  int64_t max_prompt_tokens = 8192;
  int64_t max_output_tokens = 4096;
  int64_t default_max_tokens = 256;
  int64_t max_n = 8;
  int64_t max_top_logprobs = 20;
  // Text longer than this (a prompt, the messages of a chat, /tokenize and gRPC Tokenize input)
  // is refused before it is tokenized: tokenizing is the expensive part of a bad request.
  int64_t max_prompt_bytes = 8192 * 64;
  // What the server could ever hold at once (slots + queue): a request needing more sequences
  // (n, or prompts x n) is INVALID_ARGUMENT rather than a RESOURCE_EXHAUSTED no retry can cure.
  int64_t max_sequences = int64_t{1} << 30;
  // Response fan-out: n x (max_tokens + scored prompt positions) x (1 + alternatives) log-
  // probability entries at most, so one request cannot ask for a response of gigabytes.
  int64_t max_logprob_entries = int64_t{1} << 20;
  int64_t max_stop_strings = 16;
  int64_t max_stop_string_bytes = 256;
  int64_t max_stop_token_ids = 64;
  int64_t max_logit_bias = 300;          // logit_bias entries per request (each is sampler work)
  int64_t max_prompts_per_request = 64;  // prompts in one /v1/completions list
  int64_t max_cache_salt_bytes = 256;    // cache_salt length (it is hashed, never stored whole)
};

// A logit bias must lie in this range (OpenAI's): ±100 bans or forces a token in practice.
inline constexpr double kMaxLogitBias = 100.0;

// What the model accepts.
struct ModelLimits {
  int vocab_size = 0;  // token ids in [0, vocab_size); the tokenizer's vocabulary if smaller
  int bos_id = 2;
  int eos_id = 1;
  int pad_id = 0;
};

// Raw request values as parsed (wide integer types so out-of-range values reach the checks).
struct GenerateInput {
  std::optional<std::string> text;                // UTF-8 prompt, BOS prepended
  std::optional<std::vector<int64_t>> token_ids;  // prompt ids, used as given
  bool text_is_chat = false;  // token_ids come from the chat template (server-built)
  std::optional<double> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int64_t> top_k, max_tokens, min_tokens, top_logprobs, n;
  // Log-probabilities of the prompt's tokens and this many alternatives (engine prompt_logprobs).
  std::optional<int64_t> prompt_logprobs;
  // The front end returns the prompt with the output (OpenAI's echo): max_tokens may then be 0.
  bool echo = false;
  std::vector<std::pair<int64_t, double>> logit_bias;  // (token id, bias) as the client sent them
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  // Prefix-cache namespace (vLLM's cache_salt): requests with different salts never share cached
  // states. Absent: the tenant's shared namespace.
  std::optional<std::string> cache_salt;
  // Continue a saved conversation (issue 15): "new" opens one, else a session id the server
  // handed out. The prompt then holds only the new tokens.
  std::optional<std::string> session_id;
};

struct ValidatedGenerate {
  engine::ValidatedRequest request;
  std::vector<std::string> stop_strings;
  int n = 1;
  bool seeded = false;     // the client gave a seed (else the server drew one)
  std::string session_id;  // empty: none; "new", or a well-formed session id (kNewSession)
};

// The session_id value that asks the server to open a new session.
inline constexpr char kNewSession[] = "new";

// INVALID_ARGUMENT naming the field. `tokenizer` may be null (then text prompts and stop strings
// are INVALID_ARGUMENT: the model serves token ids only).
absl::StatusOr<ValidatedGenerate> ValidateGenerate(const GenerateInput& input, const Limits& limits,
                                                   const ModelLimits& model,
                                                   const loader::Tokenizer* tokenizer);

// The log-probability entries a validated request will return: n x (max_tokens x (1 +
// top_logprobs) + prompt length x (1 + prompt_logprobs)), each term when asked for.
int64_t LogprobEntries(const ValidatedGenerate& v);

// A client-chosen request id: 1..64 of [A-Za-z0-9._:-].
bool IsValidRequestId(const std::string& id);

// The Gemma chat template for -it models, as token ids:
//   BOS <start_of_turn>user\n{msg}<end_of_turn>\n ... <start_of_turn>model\n
// Roles: "user", "assistant" (rendered "model"), "system" (prepended to the first user turn).
// INVALID_ARGUMENT naming the field for an unknown role, invalid UTF-8 or all-empty content.
// Message text is encoded with Tokenizer::EncodeLiteral: turn markers typed in a message stay
// text, so a message cannot inject a turn (raw /v1/completions prompts keep them special).
struct ChatMessage {
  std::string role;
  std::string content;
};
absl::StatusOr<std::vector<int64_t>> ApplyGemmaChatTemplate(
    const std::vector<ChatMessage>& messages, const loader::Tokenizer& tokenizer, int bos_id);

// A log-probability as a JSON number for the OpenAI API (RELIABILITY.md TXT-6): -inf (a token the
// model rules out) becomes vLLM's floor -9999.0, since JSON has no infinities and clients expect a
// number. NaN should never reach here (a non-finite logit fails its request INTERNAL in the
// sampler, NUM-4); if it did, it would get the floor too, never an invalid token in the JSON.
double LogprobForJson(float logprob);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_VALIDATION_H_
