// config.json on arbitrary bytes: a ModelConfig whose sizes are positive and consistent, or
// INVALID_ARGUMENT naming the field; no crash.
#include <cstdint>
#include <string_view>

#include "loader/model_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = griffin::loader::ParseModelConfig(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    const absl::StatusCode code = config.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
               code == absl::StatusCode::kFailedPrecondition ||
               code == absl::StatusCode::kResourceExhausted);
    return 0;
  }
  FUZZ_CHECK(config->vocab_size > 0);
  FUZZ_CHECK(config->hidden_size > 0);
  FUZZ_CHECK(config->num_layers > 0);
  FUZZ_CHECK(static_cast<int64_t>(config->block_types.size()) == config->num_layers);
  return 0;
}
