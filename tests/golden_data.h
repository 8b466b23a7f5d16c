// The golden fixtures in tests/data/<name>/: a tiny checkpoint plus golden.safetensors with the
// DeepMind reference's float32 log-probabilities (tests/golden/make_golden.py wrote them).
#ifndef GRIFFIN_TESTS_GOLDEN_DATA_H_
#define GRIFFIN_TESTS_GOLDEN_DATA_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "loader/checkpoint.h"

namespace griffin::golden {

struct GoldenSequence {
  std::vector<int32_t> tokens;  // [T]
  // [R, V]: row r = log-distribution of the token after position positions[r] (every position for
  // the fixtures; every 4th for the demo text, which keeps the file small enough to travel).
  std::vector<float> logprobs;
  std::vector<int32_t> positions;    // [R], increasing
  std::vector<float> next_logprobs;  // [T]: at t, the log-probability of tokens[t + 1] (0 at T-1)
};

// The rows of `got` ([T, V], every position) that `g` holds references for ([R, V]).
std::vector<float> SelectRows(absl::Span<const float> got, const GoldenSequence& g, int vocab);

// tests/data/<name>, under $GRIFFIN_SOURCE_DIR when set (the binaries run on another machine, the
// GPU host, where the compiled-in source path does not exist), else the compiled-in source dir.
std::string FixtureDir(const std::string& name);
// `relative` (e.g. "models/demo") under the same source root.
std::string SourcePath(const std::string& relative);

// Every sequence k in `dir`/golden.safetensors (tokens.k, logprobs.k, and for a subset of rows
// positions.k and next_logprobs.k), checked against `vocab`.
absl::StatusOr<std::vector<GoldenSequence>> LoadGolden(const std::string& dir, int vocab);

// SPEC.md §8.4's metrics of `got` against `ref` ([T, V] log-probabilities): mean and max absolute
// difference, and top-1 agreement over the positions whose reference top-2 are at least 1e-2 apart.
struct Agreement {
  double mean_abs = 0, max_abs = 0, top1 = 1;
  int counted = 0, agreed = 0;
};
Agreement CompareLogProbs(absl::Span<const float> got, absl::Span<const float> ref, int vocab);

// Issue 14's quality figures of `got` beside `ref` (both [T, V] log-probabilities of `tokens`'
// positions): each one's cross-entropy on the next tokens, top-1 agreement at every position (no
// near-tie exclusion: the bf16 path is the reference, not the DeepMind one), and the mean
// |dlogprob| of the next tokens.
struct NextTokenQuality {
  double ce_ref = 0, ce_got = 0, mean_abs = 0;
  int agreed = 0, positions = 0;
  double relative_ce() const { return std::abs(ce_got - ce_ref) / ce_ref; }
};
NextTokenQuality CompareNextTokens(absl::Span<const float> got, absl::Span<const float> ref,
                                   absl::Span<const int32_t> tokens, int vocab);

// Log-probabilities of every position of `tokens` on `backend`'s `slot`, fed in chunks of `chunk`
// tokens (0: all at once).
absl::StatusOr<std::vector<float>> StepLogProbs(engine::Backend& backend,
                                                absl::Span<const int32_t> tokens, int chunk,
                                                int slot);

// The trained bundled model (models/demo) on real text (tests/data/demo_parity/text.txt, 565
// tokens with BOS), with the DeepMind reference's float32 log-probabilities
// (tests/data/demo_parity/golden.safetensors, written by tests/golden/make_golden.py): confident
// predictions over enough positions for a top-1 rate to mean something. DataLoss when our tokenizer
// does not give the reference's ids. Cached per process.
std::string DemoModelDir();
absl::StatusOr<GoldenSequence> DemoParitySequence(const loader::Checkpoint& demo);

// A parity case: "griffin", "hawk" or "attnfirst" (tests/data/<name> with the DeepMind
// reference's goldens) or "demo" (models/demo with DemoParitySequence, also the reference's).
struct ParityCase {
  std::unique_ptr<loader::Checkpoint> checkpoint;
  std::vector<GoldenSequence> golden;
};
absl::StatusOr<ParityCase> LoadParityCase(const std::string& name);
inline constexpr const char* kParityCases[] = {"griffin", "hawk", "attnfirst", "demo"};

}  // namespace griffin::golden

#endif  // GRIFFIN_TESTS_GOLDEN_DATA_H_
