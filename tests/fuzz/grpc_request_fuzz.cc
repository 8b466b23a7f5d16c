// FUZ-1 for gRPC: arbitrary bytes as a serialized griffin.v1.GenerateRequest, through the
// conversion and validation the service uses. Bytes that are not a message are what gRPC itself
// refuses; a message is accepted as a ValidatedGenerate within the limits or refused
// INVALID_ARGUMENT with a valid UTF-8 message that holds none of the request's text.
#include <cstdint>
#include <memory>
#include <string>

#include "base/utf8.h"
#include "google/protobuf/stubs/logging.h"
#include "griffin/v1/generation.pb.h"
#include "loader/tokenizer.h"
#include "server/grpc_request.h"
#include "server/validation.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace griffin;

const loader::Tokenizer* FixtureTokenizer() {
  static std::unique_ptr<loader::Tokenizer> tokenizer = [] {
    auto t = loader::Tokenizer::Load(GRIFFIN_SOURCE_DIR "/tests/data/griffin/tokenizer.model");
    FUZZ_CHECK(t.ok());
    return std::move(*t);
  }();
  return tokenizer.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // protobuf logs every invalid UTF-8 string field it parses: quiet, the fuzzer makes millions.
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(
        [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
    return true;
  }();
  (void)quiet;
  griffin::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  server::Limits limits;
  limits.max_prompt_tokens = 64;
  limits.max_prompt_bytes = 4096;
  limits.max_output_tokens = 1000;
  limits.max_sequences = 40;
  limits.max_logprob_entries = 100000;
  const server::ModelLimits model{.vocab_size = 512, .bos_id = 2, .eos_id = 1, .pad_id = 0};
  absl::StatusOr<server::GenerateInput> in = server::GenerateInputFromProto(request);
  absl::StatusOr<server::ValidatedGenerate> v =
      in.ok() ? server::ValidateGenerate(*in, limits, model, FixtureTokenizer())
              : absl::StatusOr<server::ValidatedGenerate>(in.status());
  if (!v.ok()) {
    FUZZ_CHECK(v.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(v.status().message());
    FUZZ_CHECK(IsValidUtf8(message));
    FUZZ_CHECK(message.size() < 200);
    return 0;
  }
  const engine::ValidatedRequest& r = v->request;
  FUZZ_CHECK(!r.prompt.empty() &&
             static_cast<int64_t>(r.prompt.size()) <= limits.max_prompt_tokens);
  for (int32_t id : r.prompt) FUZZ_CHECK(id >= 0 && id < model.vocab_size);
  FUZZ_CHECK(r.max_tokens >= 0 && r.max_tokens <= limits.max_output_tokens);
  FUZZ_CHECK(r.min_tokens >= 0 && r.min_tokens <= r.max_tokens);
  FUZZ_CHECK(r.top_logprobs <= limits.max_top_logprobs &&
             r.prompt_logprobs <= limits.max_top_logprobs);
  for (const auto& [id, bias] : r.sampling.logit_bias) {
    FUZZ_CHECK(id >= 0 && id < model.vocab_size && bias >= -100 && bias <= 100);
  }
  FUZZ_CHECK(server::LogprobEntries(*v) <= limits.max_logprob_entries);
  return 0;
}
