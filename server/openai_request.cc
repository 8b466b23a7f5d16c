#include "server/openai_request.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace griffin::server {
namespace {

using json = nlohmann::json;

// Deeper nesting than any request of this API needs is refused before parsing: a body of
// brackets would otherwise cost a JSON node per byte (hundreds of bytes each).
constexpr int kMaxJsonDepth = 32;
bool NestsTooDeep(const std::string& text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<json> ParseJsonBody(const std::string& body) {
  if (NestsTooDeep(body)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body nests deeper than ", kMaxJsonDepth, " levels"));
  }
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  return parsed;
}

namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

// ---- JSON field readers: absent or null leaves the optional empty; a wrong type names the field.

absl::Status ReadDouble(const json& b, const char* key, std::optional<double>* out) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Invalid(key, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadInt(const json& b, const char* key, std::optional<int64_t>* out) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_unsigned()) {
    if (it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(key, "is out of range");
    }
    *out = static_cast<int64_t>(it->get<uint64_t>());
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) return Invalid(key, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadBool(const json& b, const char* key, bool* out) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Invalid(key, "must be a boolean");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadIdList(const json& v, const char* key, std::vector<int64_t>* out) {
  if (!v.is_array()) return Invalid(key, "must be an array of integers");
  for (const json& e : v) {
    if (e.is_number_unsigned()) {
      if (e.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        out->push_back(std::numeric_limits<int64_t>::max());  // out of range: validation rejects it
        continue;
      }
      out->push_back(static_cast<int64_t>(e.get<uint64_t>()));
    } else if (e.is_number_integer()) {
      out->push_back(e.get<int64_t>());
    } else {
      return Invalid(key, "must be an array of integers");
    }
  }
  return absl::OkStatus();
}

namespace {

#define RETURN_IF_ERROR_HTTP(expr) \
  do {                             \
    absl::Status s_ = (expr);      \
    if (!s_.ok()) return s_;       \
  } while (0)

// "prompt", or "prompt[i]" for the i-th prompt of a list (the index is ours, never client text).
std::string PromptField(size_t index, size_t count) {
  return count > 1 ? absl::StrCat("prompt[", index, "]") : "prompt";
}

// A logit_bias object: {"token id": bias, ...}. Keys are decimal integers (as OpenAI sends them).
absl::Status ReadLogitBias(const json& b, const Limits& limits, GenerateInput* in) {
  auto bias = b.find("logit_bias");
  if (bias == b.end() || bias->is_null()) return absl::OkStatus();
  if (!bias->is_object()) return Invalid("logit_bias", "must be an object of token id to bias");
  if (static_cast<int64_t>(bias->size()) > limits.max_logit_bias) {
    return Invalid("logit_bias", "holds too many entries");  // before reading any of them
  }
  for (const auto& [key, value] : bias->items()) {
    int64_t id = 0;
    if (key.empty() || key.size() > 18 || !absl::SimpleAtoi(key, &id)) {
      return Invalid("logit_bias", "keys must be token ids");
    }
    if (!value.is_number()) return Invalid("logit_bias", "values must be numbers");
    in->logit_bias.emplace_back(id, value.get<double>());
  }
  return absl::OkStatus();
}

// Fields both endpoints share.
absl::Status ReadCommon(const json& b, const ServerState& state, OpenAiRequest* r) {
  auto model = b.find("model");
  if (model != b.end() && !model->is_null()) {
    // VAL-9: the name is never used as a path; it must be the served model's name.
    if (!model->is_string() || model->get<std::string>() != state.model_name) {
      return absl::InvalidArgumentError("model must be the served model's name (see /v1/models)");
    }
  }
  GenerateInput& in = r->input;
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "temperature", &in.temperature));
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "top_p", &in.top_p));
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "min_p", &in.min_p));
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "repetition_penalty", &in.repetition_penalty));
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "presence_penalty", &in.presence_penalty));
  RETURN_IF_ERROR_HTTP(ReadDouble(b, "frequency_penalty", &in.frequency_penalty));
  RETURN_IF_ERROR_HTTP(ReadInt(b, "top_k", &in.top_k));
  RETURN_IF_ERROR_HTTP(ReadInt(b, "min_tokens", &in.min_tokens));
  RETURN_IF_ERROR_HTTP(ReadInt(b, "n", &in.n));
  std::optional<int64_t> seed;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "seed", &seed));
  if (seed) in.seed = static_cast<uint64_t>(*seed);
  RETURN_IF_ERROR_HTTP(ReadBool(b, "ignore_eos", &in.ignore_eos));
  RETURN_IF_ERROR_HTTP(ReadBool(b, "stream", &r->stream));
  auto so = b.find("stream_options");
  if (so != b.end() && !so->is_null()) {
    if (!so->is_object()) return Invalid("stream_options", "must be an object");
    RETURN_IF_ERROR_HTTP(ReadBool(*so, "include_usage", &r->include_usage));
    bool continuous = false;
    RETURN_IF_ERROR_HTTP(ReadBool(*so, "continuous_usage_stats", &continuous));
    r->continuous_usage = continuous && r->include_usage;  // vLLM: only with include_usage
  }
  RETURN_IF_ERROR_HTTP(ReadInt(b, "prompt_logprobs", &r->prompt_logprobs));
  auto stop = b.find("stop");
  if (stop != b.end() && !stop->is_null()) {
    if (stop->is_string()) {
      in.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > static_cast<size_t>(state.limits.max_stop_strings)) {
        return Invalid("stop", "holds too many strings");
      }
      for (const json& s : *stop) {
        if (!s.is_string()) return Invalid("stop", "must be a string or an array of strings");
        in.stop.push_back(s.get<std::string>());
      }
    } else {
      return Invalid("stop", "must be a string or an array of strings");
    }
  }
  auto stop_ids = b.find("stop_token_ids");
  if (stop_ids != b.end() && !stop_ids->is_null()) {
    RETURN_IF_ERROR_HTTP(ReadIdList(*stop_ids, "stop_token_ids", &in.stop_token_ids));
  }
  for (const char* key : {"cache_salt", "session_id"}) {
    auto it = b.find(key);
    if (it == b.end() || it->is_null()) continue;
    if (!it->is_string()) return Invalid(key, "must be a string");
    (std::string(key) == "cache_salt" ? in.cache_salt : in.session_id) = it->get<std::string>();
  }
  std::optional<int64_t> best_of;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "best_of", &best_of));
  if (best_of && *best_of != in.n.value_or(1)) return Invalid("best_of", "must equal n");
  RETURN_IF_ERROR_HTTP(ReadLogitBias(b, state.limits, &in));
  auto fmt = b.find("response_format");
  if (fmt != b.end() && !fmt->is_null()) {
    if (!fmt->is_object() || fmt->value("type", std::string("text")) != "text") {
      return Invalid("response_format", "supports only type text");  // VAL-6: no constraints
    }
  }
  for (const char* key : {"tools", "functions", "guided_json", "guided_regex", "guided_grammar"}) {
    auto it = b.find(key);
    if (it != b.end() && !it->is_null() && !it->empty()) return Invalid(key, "is not supported");
  }
  return absl::OkStatus();
}

// One prompt of a completions request: a string, or an array of token ids.
absl::Status ReadOnePrompt(const json& p, const std::string& field, GenerateInput* in) {
  if (p.is_string()) {
    in->text = p.get<std::string>();
    return absl::OkStatus();
  }
  if (!p.is_array()) return Invalid(field, "must be a string or an array of token ids");
  in->token_ids.emplace();
  return ReadIdList(p, field.c_str(), &*in->token_ids);
}

absl::Status ParseCompletion(const json& b, const ServerState& state, OpenAiRequest* r) {
  RETURN_IF_ERROR_HTTP(ReadCommon(b, state, r));
  GenerateInput& in = r->input;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "max_tokens", &in.max_tokens));
  RETURN_IF_ERROR_HTTP(ReadBool(b, "echo", &in.echo));
  auto suffix = b.find("suffix");
  if (suffix != b.end() && !suffix->is_null()) return Invalid("suffix", "is not supported");
  std::optional<int64_t> logprobs;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "logprobs", &logprobs));
  if (logprobs) {
    r->logprobs = true;
    in.top_logprobs = *logprobs;
    if (in.echo) r->echo_top = *logprobs;  // validated as top_logprobs
  }
  // The engine scores the prompt once, with as many alternatives as either use asks for.
  // (An out-of-range value of either is left for validation to name.)
  in.prompt_logprobs = r->prompt_logprobs;
  if (in.echo && logprobs && in.prompt_logprobs.value_or(0) >= 0) {
    in.prompt_logprobs = std::max(in.prompt_logprobs.value_or(0), *logprobs);
  }

  // The prompt: a string, an array of ids, or a list of either (OpenAI's batch form).
  auto prompt = b.find("prompt");
  if (prompt == b.end() || prompt->is_null()) return Invalid("prompt", "is required");
  std::vector<const json*> prompts;
  if (prompt->is_array() && !prompt->empty() &&
      (prompt->front().is_string() || prompt->front().is_array())) {
    if (static_cast<int64_t>(prompt->size()) > state.limits.max_prompts_per_request) {
      return Invalid("prompt", absl::StrCat("may hold at most ",
                                            state.limits.max_prompts_per_request, " prompts"));
    }
    const bool strings = prompt->front().is_string();
    for (const json& p : *prompt) {
      if (p.is_string() != strings || (!p.is_string() && !p.is_array())) {
        return Invalid("prompt", "must be a list of strings or a list of token id arrays");
      }
      prompts.push_back(&p);
    }
  } else if (prompt->is_string() || prompt->is_array()) {
    if (prompt->is_array() && prompt->empty()) return Invalid("prompt", "has no tokens");
    prompts.push_back(&*prompt);
  } else {
    return Invalid("prompt", "must be a string or an array of token ids");
  }
  if (prompts.size() > 1 && in.session_id) {
    return Invalid("prompt", "must be one prompt with session_id");
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateInput one = in;
    RETURN_IF_ERROR_HTTP(ReadOnePrompt(*prompts[i], PromptField(i, prompts.size()), &one));
    r->prompts.push_back(std::move(one));
  }
  return absl::OkStatus();
}

absl::Status ParseChat(const json& b, const ServerState& state, OpenAiRequest* r) {
  r->chat = true;
  RETURN_IF_ERROR_HTTP(ReadCommon(b, state, r));
  GenerateInput& in = r->input;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "max_tokens", &in.max_tokens));
  if (!in.max_tokens) RETURN_IF_ERROR_HTTP(ReadInt(b, "max_completion_tokens", &in.max_tokens));
  RETURN_IF_ERROR_HTTP(ReadBool(b, "logprobs", &r->logprobs));
  std::optional<int64_t> top;
  RETURN_IF_ERROR_HTTP(ReadInt(b, "top_logprobs", &top));
  if (top && !r->logprobs) return Invalid("top_logprobs", "needs logprobs: true");
  if (r->logprobs) in.top_logprobs = top.value_or(0);
  auto msgs = b.find("messages");
  if (msgs == b.end() || !msgs->is_array()) return Invalid("messages", "must be an array");
  if (state.tokenizer == nullptr) return Invalid("messages", "need a model with a tokenizer");
  std::vector<ChatMessage> messages;
  size_t total_bytes = 0;
  for (const json& m : *msgs) {
    if (!m.is_object()) return Invalid("messages", "must hold objects");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return Invalid("messages.role", "must be a string");
    ChatMessage cm;
    cm.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      cm.content = "";
    } else if (content->is_string()) {
      cm.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", std::string()) != "text" ||
            !part.contains("text") || !part["text"].is_string()) {
          return Invalid("messages.content", "supports only text parts");
        }
        cm.content += part["text"].get<std::string>();
      }
    } else {
      return Invalid("messages.content", "must be a string or an array of text parts");
    }
    total_bytes += cm.content.size();
    messages.push_back(std::move(cm));
  }
  // Before any tokenizing (LEN-1): the text of all messages together.
  if (static_cast<int64_t>(total_bytes) > state.limits.max_prompt_bytes) {
    return Invalid("messages", absl::StrCat("are longer than the limit of ",
                                            state.limits.max_prompt_bytes, " bytes"));
  }
  absl::StatusOr<std::vector<int64_t>> ids =
      ApplyGemmaChatTemplate(messages, *state.tokenizer, state.model.bos_id);
  if (!ids.ok()) return ids.status();
  in.token_ids = std::move(*ids);
  in.text_is_chat = true;
  if (state.end_of_turn_id >= 0) in.stop_token_ids.push_back(state.end_of_turn_id);
  in.prompt_logprobs = r->prompt_logprobs;
  r->prompts.push_back(in);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedOpenAiRequest> ParseOpenAiRequest(const std::string& body,
                                                       const ServerState& state, bool chat) {
  ParsedOpenAiRequest out;
  absl::StatusOr<json> parsed_body = ParseJsonBody(body);
  if (!parsed_body.ok()) return parsed_body.status();
  absl::Status parsed;
  try {  // the readers check types; this catches any nlohmann type error they did not foresee
    parsed = chat ? ParseChat(*parsed_body, state, &out.request)
                  : ParseCompletion(*parsed_body, state, &out.request);
  } catch (const json::exception&) {
    parsed = absl::InvalidArgumentError("the body has a field of the wrong type");
  }
  if (!parsed.ok()) return parsed;
  // Every prompt is validated before any starts: a bad one anywhere in a list rejects the whole
  // request with nothing queued.
  const std::vector<GenerateInput>& prompts = out.request.prompts;
  for (size_t p = 0; p < prompts.size(); ++p) {
    absl::StatusOr<ValidatedGenerate> v =
        ValidateGenerate(prompts[p], state.limits, state.model, state.tokenizer);
    if (!v.ok()) {
      // Name the prompt of a list that failed: "prompt[3] has ..." rather than "prompt has ...".
      const std::string message(v.status().message());
      return prompts.size() > 1 && message.rfind("prompt ", 0) == 0
                 ? absl::InvalidArgumentError(
                       absl::StrCat(PromptField(p, prompts.size()), message.substr(6)))
                 : v.status();
    }
    out.validated.push_back(std::move(*v));
  }
  if (out.validated.empty()) return Invalid("prompt", "is required");
  // The whole request against what the server could ever hold and return (a prompt list
  // multiplies both): a clear 400 rather than a 429 no retry can cure, or a gigantic response.
  const int64_t sequences = static_cast<int64_t>(out.validated.size()) * out.validated.front().n;
  if (sequences > state.limits.max_sequences) {
    return Invalid(
        "n", absl::StrCat("x the number of prompts must be at most ", state.limits.max_sequences,
                          ": the sequences this server can hold at once"));
  }
  int64_t entries = 0;
  for (const ValidatedGenerate& v : out.validated) {
    entries =
        std::min<int64_t>(entries + LogprobEntries(v), std::numeric_limits<int64_t>::max() / 2);
  }
  if (entries > state.limits.max_logprob_entries) {
    return Invalid("prompt",
                   absl::StrCat("list asks for more than ", state.limits.max_logprob_entries,
                                " log-probabilities in all"));
  }
  return out;
}

}  // namespace griffin::server
