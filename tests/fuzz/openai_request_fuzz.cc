// FUZ-1 for HTTP: an OpenAI request body (the first byte picks chat or completions) through
// parsing and validation. Every input is either accepted whole, each prompt a ValidatedGenerate
// within the limits, or refused INVALID_ARGUMENT / FAILED_PRECONDITION with a message that is
// valid UTF-8 and holds none of the input's text.
#include <cstdint>
#include <memory>
#include <string>

#include "base/utf8.h"
#include "loader/tokenizer.h"
#include "server/openai_request.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace griffin;

const server::ServerState& State() {
  static server::ServerState* state = [] {
    auto* s = new server::ServerState();
    static std::unique_ptr<loader::Tokenizer> tokenizer = [] {
      auto t = loader::Tokenizer::Load(GRIFFIN_SOURCE_DIR "/tests/data/griffin/tokenizer.model");
      FUZZ_CHECK(t.ok());
      return std::move(*t);
    }();
    s->tokenizer = tokenizer.get();
    s->model_name = "griffin";
    s->model = {.vocab_size = 512, .bos_id = 2, .eos_id = 1, .pad_id = 0};
    s->limits.max_prompt_tokens = 64;
    s->limits.max_prompt_bytes = 4096;
    s->limits.max_output_tokens = 1000;
    s->limits.max_sequences = 40;
    s->limits.max_logprob_entries = 100000;
    s->end_of_turn_id = tokenizer->PieceToId("<end_of_turn>");
    return s;
  }();
  return *state;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  const server::ServerState& state = State();
  absl::StatusOr<server::ParsedOpenAiRequest> parsed =
      server::ParseOpenAiRequest(body, state, chat);
  if (!parsed.ok()) {
    const absl::StatusCode code = parsed.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
               code == absl::StatusCode::kFailedPrecondition);
    const std::string message(parsed.status().message());
    FUZZ_CHECK(IsValidUtf8(message));
    FUZZ_CHECK(message.size() < 200);  // fixed text and numbers, never a copy of the input
    return 0;
  }
  const server::Limits& limits = state.limits;
  FUZZ_CHECK(!parsed->validated.empty());
  int64_t sequences = 0;
  for (const server::ValidatedGenerate& v : parsed->validated) {
    const engine::ValidatedRequest& r = v.request;
    FUZZ_CHECK(v.n >= 1 && v.n <= limits.max_n);
    sequences += v.n;
    FUZZ_CHECK(!r.prompt.empty());
    FUZZ_CHECK(static_cast<int64_t>(r.prompt.size()) <= limits.max_prompt_tokens);
    for (int32_t id : r.prompt) FUZZ_CHECK(id >= 0 && id < state.model.vocab_size);
    FUZZ_CHECK(r.max_tokens >= 0 && r.max_tokens <= limits.max_output_tokens);
    FUZZ_CHECK(r.min_tokens >= 0 && r.min_tokens <= r.max_tokens);
    FUZZ_CHECK(r.top_logprobs <= limits.max_top_logprobs);
    FUZZ_CHECK(r.sampling.temperature >= 0);
    FUZZ_CHECK(r.sampling.top_p > 0 && r.sampling.top_p <= 1);
    for (int32_t id : r.stop_token_ids) FUZZ_CHECK(id >= 0 && id < state.model.vocab_size);
    for (const std::string& s : v.stop_strings) FUZZ_CHECK(!s.empty() && IsValidUtf8(s));
    FUZZ_CHECK(server::LogprobEntries(v) <= limits.max_logprob_entries);
  }
  FUZZ_CHECK(sequences <= limits.max_sequences);
  return 0;
}
