#include "server/validation.h"

#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/utf8.h"

namespace griffin::server {
namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

bool IsBlank(const std::string& text) {
  for (unsigned char c : text) {
    if (!absl::ascii_isspace(c)) return false;
  }
  return true;
}

absl::Status CheckFiniteRange(const std::optional<double>& v, const char* field, double lo,
                              double hi, bool lo_open, bool hi_open) {
  if (!v) return absl::OkStatus();
  const double x = *v;
  if (!std::isfinite(x)) return Invalid(field, "must be a finite number");
  if ((lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi)) {
    return Invalid(
        field, absl::StrCat("must be in ", lo_open ? "(" : "[", lo, ", ", hi, hi_open ? ")" : "]"));
  }
  return absl::OkStatus();
}

// engine::SessionStore::ValidId's rule (32 lowercase hex digits), here so validation, which the
// fuzz targets build alone, needs no engine library.
bool IsSessionId(const std::string& id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool IsValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (unsigned char c : id) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != ':') return false;
  }
  return true;
}

absl::StatusOr<ValidatedGenerate> ValidateGenerate(const GenerateInput& in, const Limits& limits,
                                                   const ModelLimits& model,
                                                   const loader::Tokenizer* tokenizer) {
  ValidatedGenerate out;
  engine::ValidatedRequest& r = out.request;
  int vocab = model.vocab_size;
  if (tokenizer != nullptr) vocab = std::min(vocab, tokenizer->vocab_size());

  // Sampling fields (VAL-2). Defaults: OpenAI's (temperature 1, top_p 1).
  const double temperature = in.temperature.value_or(1.0);
  if (!std::isfinite(temperature) || temperature < 0.0) {
    return Invalid("temperature", "must be a finite number >= 0");
  }
  if (temperature > 1e6) return Invalid("temperature", "must be at most 1000000");
  if (auto s = CheckFiniteRange(in.top_p, "top_p", 0.0, 1.0, true, false); !s.ok()) return s;
  if (auto s = CheckFiniteRange(in.min_p, "min_p", 0.0, 1.0, false, false); !s.ok()) return s;
  if (in.repetition_penalty) {
    const double v = *in.repetition_penalty;
    if (!std::isfinite(v) || v <= 0.0 || v > 1e6) {
      return Invalid("repetition_penalty", "must be a finite number in (0, 1000000]");
    }
  }
  if (auto s = CheckFiniteRange(in.presence_penalty, "presence_penalty", -2.0, 2.0, false, false);
      !s.ok()) {
    return s;
  }
  if (auto s = CheckFiniteRange(in.frequency_penalty, "frequency_penalty", -2.0, 2.0, false, false);
      !s.ok()) {
    return s;
  }
  if (in.top_k && (*in.top_k < -1 || *in.top_k == 0)) {
    return Invalid("top_k", "must be -1 (off) or >= 1");
  }
  r.sampling.temperature = static_cast<float>(temperature);
  r.sampling.top_p = static_cast<float>(in.top_p.value_or(1.0));
  r.sampling.min_p = static_cast<float>(in.min_p.value_or(0.0));
  r.sampling.repetition_penalty = static_cast<float>(in.repetition_penalty.value_or(1.0));
  r.sampling.presence_penalty = static_cast<float>(in.presence_penalty.value_or(0.0));
  r.sampling.frequency_penalty = static_cast<float>(in.frequency_penalty.value_or(0.0));
  const int64_t top_k = in.top_k.value_or(-1);
  r.sampling.top_k = top_k >= vocab ? -1 : static_cast<int>(top_k);
  out.seeded = in.seed.has_value();
  if (in.seed) {
    r.sampling.seed = *in.seed;
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    r.sampling.seed = rng();
  }

  // Fan-out and lengths (VAL-4, VAL-7: every bound checked before any arithmetic).
  const int64_t n = in.n.value_or(1);
  if (n < 1 || n > limits.max_n)
    return Invalid("n", absl::StrCat("must be in [1, ", limits.max_n, "]"));
  if (n > limits.max_sequences) {
    return Invalid("n", absl::StrCat("must be at most ", limits.max_sequences,
                                     ": the sequences this server can hold at once"));
  }
  out.n = static_cast<int>(n);
  const int64_t max_tokens =
      in.max_tokens.value_or(std::min(limits.default_max_tokens, limits.max_output_tokens));
  // 0 generates nothing: only meaningful when the prompt itself comes back (echo) or is scored.
  const int64_t min_max_tokens = in.echo || in.prompt_logprobs.has_value() ? 0 : 1;
  if (max_tokens < min_max_tokens || max_tokens > limits.max_output_tokens) {
    return Invalid("max_tokens", absl::StrCat("must be in [", min_max_tokens, ", ",
                                              limits.max_output_tokens, "]"));
  }
  r.max_tokens = static_cast<int>(max_tokens);
  const int64_t min_tokens = in.min_tokens.value_or(0);
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return Invalid("min_tokens", "must be in [0, max_tokens]");
  }
  r.min_tokens = static_cast<int>(min_tokens);
  if (in.top_logprobs) {
    if (*in.top_logprobs < 0 || *in.top_logprobs > limits.max_top_logprobs) {
      return Invalid("top_logprobs", absl::StrCat("must be in [0, ", limits.max_top_logprobs, "]"));
    }
    r.top_logprobs = static_cast<int>(*in.top_logprobs);
  }
  if (in.prompt_logprobs) {
    if (*in.prompt_logprobs < 0 || *in.prompt_logprobs > limits.max_top_logprobs) {
      return Invalid("prompt_logprobs",
                     absl::StrCat("must be in [0, ", limits.max_top_logprobs, "]"));
    }
    r.prompt_logprobs = static_cast<int>(*in.prompt_logprobs);
  }
  if (static_cast<int64_t>(in.logit_bias.size()) > limits.max_logit_bias) {
    return Invalid("logit_bias",
                   absl::StrCat("may hold at most ", limits.max_logit_bias, " entries"));
  }
  for (const auto& [id, bias] : in.logit_bias) {
    if (id < 0 || id >= vocab) {
      return Invalid("logit_bias", absl::StrCat("holds a token id outside [0, ", vocab, ")"));
    }
    if (!std::isfinite(bias) || bias < -kMaxLogitBias || bias > kMaxLogitBias) {
      return Invalid("logit_bias",
                     absl::StrCat("values must be in [-", kMaxLogitBias, ", ", kMaxLogitBias, "]"));
    }
    for (const auto& [other, unused] : r.sampling.logit_bias) {
      if (other == id) return Invalid("logit_bias", "holds a token id twice");
    }
    r.sampling.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(bias));
  }
  if (static_cast<int64_t>(in.stop.size()) > limits.max_stop_strings) {
    return Invalid("stop", absl::StrCat("may hold at most ", limits.max_stop_strings, " strings"));
  }
  if (!in.stop.empty() && tokenizer == nullptr) {
    return Invalid("stop", "needs a model with a tokenizer");
  }
  for (const std::string& s : in.stop) {
    if (s.empty()) return Invalid("stop", "must not hold an empty string");
    if (static_cast<int64_t>(s.size()) > limits.max_stop_string_bytes) {
      return Invalid(
          "stop", absl::StrCat("strings may be at most ", limits.max_stop_string_bytes, " bytes"));
    }
    if (!IsValidUtf8(s)) return Invalid("stop", "must be valid UTF-8");
    out.stop_strings.push_back(s);
  }
  if (static_cast<int64_t>(in.stop_token_ids.size()) > limits.max_stop_token_ids) {
    return Invalid("stop_token_ids",
                   absl::StrCat("may hold at most ", limits.max_stop_token_ids, " ids"));
  }
  for (int64_t id : in.stop_token_ids) {
    if (id < 0 || id >= vocab) {
      return Invalid("stop_token_ids", absl::StrCat("holds an id outside [0, ", vocab, ")"));
    }
    r.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  r.ignore_eos = in.ignore_eos;
  if (in.cache_salt) {
    if (in.cache_salt->empty()) return Invalid("cache_salt", "must not be empty");
    if (static_cast<int64_t>(in.cache_salt->size()) > limits.max_cache_salt_bytes) {
      return Invalid("cache_salt",
                     absl::StrCat("may be at most ", limits.max_cache_salt_bytes, " bytes"));
    }
    r.cache_salt = *in.cache_salt;
  }
  if (in.session_id) {
    const std::string& id = *in.session_id;
    if (id != kNewSession && !IsSessionId(id)) {
      return Invalid("session_id", "must be \"new\" or a session id the server returned");
    }
    // One saved state continues as one sequence: the request's own outputs must be what is kept.
    if (n != 1) return Invalid("n", "must be 1 with session_id");
    if (in.echo) return Invalid("echo", "is not supported with session_id");
    if (in.prompt_logprobs) return Invalid("prompt_logprobs", "is not supported with session_id");
    // A stop string ends the request by an abort, which keeps no state: use stop_token_ids.
    if (!in.stop.empty()) {
      return Invalid("stop", "strings are not supported with session_id (use stop_token_ids)");
    }
    out.session_id = id;
  }

  // The prompt (VAL-1, VAL-5, TXT-1, LEN-1).
  if (in.text.has_value() == in.token_ids.has_value()) {
    return Invalid("prompt", "must be given as exactly one of text or token ids");
  }
  if (in.text) {
    const std::string& text = *in.text;
    if (!IsValidUtf8(text)) return Invalid("prompt", "must be valid UTF-8");
    if (IsBlank(text)) return Invalid("prompt", "is empty or only whitespace");
    if (tokenizer == nullptr)
      return Invalid("prompt", "must be token ids: this model has no tokenizer");
    // Bounds the work before tokenizing (--max_prompt_bytes).
    if (static_cast<int64_t>(text.size()) > limits.max_prompt_bytes) {
      return Invalid("prompt", absl::StrCat("is longer than the limit of ", limits.max_prompt_bytes,
                                            " bytes"));
    }
    absl::StatusOr<std::vector<int>> ids = tokenizer->Encode(text);
    if (!ids.ok()) return Invalid("prompt", "could not be tokenized");
    if (ids->empty()) return Invalid("prompt", "has no tokens");
    r.prompt.reserve(ids->size() + 1);
    r.prompt.push_back(model.bos_id);
    for (int id : *ids) r.prompt.push_back(id);
  } else {
    const std::vector<int64_t>& ids = *in.token_ids;
    if (ids.empty()) return Invalid("prompt", "has no tokens");
    if (static_cast<int64_t>(ids.size()) > limits.max_prompt_tokens) {
      return Invalid("prompt", absl::StrCat("has ", ids.size(), " tokens, more than the limit of ",
                                            limits.max_prompt_tokens));
    }
    bool all_special = true;
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab) {
        return Invalid("prompt", absl::StrCat("holds a token id outside [0, ", vocab, ")"));
      }
      if (id != model.bos_id && id != model.eos_id && id != model.pad_id) all_special = false;
    }
    // BOS alone is the start every sequence has: the model's unconditional distribution, a
    // legitimate prompt (unconditional samples). Other runs of pad/eos/bos are no text the model
    // was trained to continue (VAL-1).
    const bool bos_alone = ids.size() == 1 && ids[0] == model.bos_id;
    if (all_special && !bos_alone) return Invalid("prompt", "holds only special tokens");
    r.prompt.assign(ids.begin(), ids.end());
  }
  if (static_cast<int64_t>(r.prompt.size()) > limits.max_prompt_tokens) {
    return Invalid("prompt",
                   absl::StrCat("has ", r.prompt.size(), " tokens, more than the limit of ",
                                limits.max_prompt_tokens));
  }
  for (int32_t id : r.prompt) {
    if (id < 0 || id >= vocab) return Invalid("prompt", "holds a token id outside the vocabulary");
  }
  // Response fan-out (OVL: one request cannot ask for a response of gigabytes).
  if (LogprobEntries(out) > limits.max_logprob_entries) {
    return Invalid(
        in.top_logprobs ? "top_logprobs" : "prompt_logprobs",
        absl::StrCat("with n and the lengths asks for more than ", limits.max_logprob_entries,
                     " log-probabilities (n x tokens x (1 + alternatives))"));
  }
  return out;
}

int64_t LogprobEntries(const ValidatedGenerate& v) {
  const engine::ValidatedRequest& r = v.request;
  // In floating point, saturated: limits are flags, so no product of them is assumed to fit.
  long double per_choice = 0;
  if (r.top_logprobs >= 0)
    per_choice += static_cast<long double>(r.max_tokens) * (1 + r.top_logprobs);
  if (r.prompt_logprobs >= 0) {
    per_choice += static_cast<long double>(r.prompt.size()) * (1 + r.prompt_logprobs);
  }
  const long double total = per_choice * v.n;
  return total >= 9.2e18L ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(total);
}

absl::StatusOr<std::vector<int64_t>> ApplyGemmaChatTemplate(
    const std::vector<ChatMessage>& messages, const loader::Tokenizer& tokenizer, int bos_id) {
  if (messages.empty()) return Invalid("messages", "must not be empty");
  const int start = tokenizer.PieceToId("<start_of_turn>");
  const int end = tokenizer.PieceToId("<end_of_turn>");
  std::vector<int64_t> ids = {bos_id};
  auto append_text = [&](const std::string& text) -> absl::Status {
    if (text.empty()) return absl::OkStatus();
    // Message text cannot open or close turns: a <start_of_turn> typed in it stays text.
    absl::StatusOr<std::vector<int>> enc = tokenizer.EncodeLiteral(text);
    if (!enc.ok()) return Invalid("messages", "could not be tokenized");
    ids.insert(ids.end(), enc->begin(), enc->end());
    return absl::OkStatus();
  };
  auto append_marker = [&](int id, const char* literal) -> absl::Status {
    if (id >= 0) {
      ids.push_back(id);
      return absl::OkStatus();
    }
    return append_text(literal);
  };
  std::string system;
  bool any_text = false;
  for (const ChatMessage& m : messages) {
    if (!IsValidUtf8(m.content)) return Invalid("messages.content", "must be valid UTF-8");
    if (!IsBlank(m.content)) any_text = true;
    if (m.role == "system" || m.role == "developer") {
      system += m.content;
      system += "\n\n";
      continue;
    }
    std::string role;
    if (m.role == "user")
      role = "user";
    else if (m.role == "assistant")
      role = "model";
    else
      return Invalid("messages.role", "must be system, user or assistant");
    std::string body = role + "\n";
    if (role == "user" && !system.empty()) {
      body += system;
      system.clear();
    }
    body += m.content;
    if (auto s = append_marker(start, "<start_of_turn>"); !s.ok()) return s;
    if (auto s = append_text(body); !s.ok()) return s;
    if (auto s = append_marker(end, "<end_of_turn>"); !s.ok()) return s;
    if (auto s = append_text("\n"); !s.ok()) return s;
  }
  if (!any_text) return Invalid("messages", "hold no text");
  if (!system.empty()) {  // only a system message: render it as the user turn
    if (auto s = append_marker(start, "<start_of_turn>"); !s.ok()) return s;
    if (auto s = append_text("user\n" + system); !s.ok()) return s;
    if (auto s = append_marker(end, "<end_of_turn>"); !s.ok()) return s;
    if (auto s = append_text("\n"); !s.ok()) return s;
  }
  if (auto s = append_marker(start, "<start_of_turn>"); !s.ok()) return s;
  if (auto s = append_text("model\n"); !s.ok()) return s;
  return ids;
}

double LogprobForJson(float logprob) {
  constexpr double kFloor = -9999.0;
  return logprob > kFloor ? static_cast<double>(logprob) : kFloor;
}

}  // namespace griffin::server
