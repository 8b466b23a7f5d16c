// The golden fixtures in tests/data/<name>/: a tiny checkpoint plus golden.safetensors with the
// DeepMind reference's float32 log-probabilities (tests/golden/make_golden.py wrote them).
#ifndef GRIFFIN_TESTS_GOLDEN_DATA_H_
#define GRIFFIN_TESTS_GOLDEN_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace griffin::golden {

struct GoldenSequence {
  std::vector<int32_t> tokens;  // [T]
  std::vector<float> logprobs;  // [T, V]: row t = log-distribution of the token after position t
};

// tests/data/<name>, under $GRIFFIN_SOURCE_DIR when set (the binaries run on another machine, the
// GPU host, where the compiled-in source path does not exist), else the compiled-in source dir.
std::string FixtureDir(const std::string& name);

// Every sequence k (tokens.k, logprobs.k) in `dir`/golden.safetensors, checked against `vocab`.
absl::StatusOr<std::vector<GoldenSequence>> LoadGolden(const std::string& dir, int vocab);

}  // namespace griffin::golden

#endif  // GRIFFIN_TESTS_GOLDEN_DATA_H_
