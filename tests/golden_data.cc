#include "tests/golden_data.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "loader/safetensors.h"

namespace griffin::golden {

std::string FixtureDir(const std::string& name) {
  const char* env = std::getenv("GRIFFIN_SOURCE_DIR");
  return std::string(env != nullptr ? env : GRIFFIN_SOURCE_DIR) + "/tests/data/" + name;
}

absl::StatusOr<std::vector<GoldenSequence>> LoadGolden(const std::string& dir, int vocab) {
  ASSIGN_OR_RETURN(auto file, loader::SafetensorsFile::Open(dir + "/golden.safetensors"));
  std::vector<GoldenSequence> out;
  for (int k = 0;; ++k) {
    const loader::TensorView* tokens = file->Find(absl::StrCat("tokens.", k));
    const loader::TensorView* logprobs = file->Find(absl::StrCat("logprobs.", k));
    if (tokens == nullptr || logprobs == nullptr) break;
    if (tokens->dtype != loader::DType::kI32 || tokens->shape.size() != 1 ||
        logprobs->shape != std::vector<int64_t>{tokens->shape[0], vocab}) {
      return absl::DataLossError(absl::StrCat("golden sequence ", k, " has unexpected shapes"));
    }
    GoldenSequence g;
    g.tokens.resize(tokens->num_elements());
    std::memcpy(g.tokens.data(), tokens->data, tokens->nbytes);
    g.logprobs.resize(logprobs->num_elements());
    RETURN_IF_ERROR(loader::CopyToFloat32(*logprobs, absl::MakeSpan(g.logprobs)));
    out.push_back(std::move(g));
  }
  if (out.empty()) return absl::DataLossError("golden.safetensors holds no sequence");
  return out;
}

}  // namespace griffin::golden
