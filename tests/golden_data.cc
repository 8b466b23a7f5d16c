#include "tests/golden_data.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/sampler.h"
#include "loader/safetensors.h"
#include "loader/tokenizer.h"

namespace griffin::golden {

std::string SourcePath(const std::string& relative) {
  const char* env = std::getenv("GRIFFIN_SOURCE_DIR");
  return std::string(env != nullptr ? env : GRIFFIN_SOURCE_DIR) + "/" + relative;
}

std::string FixtureDir(const std::string& name) { return SourcePath("tests/data/" + name); }

absl::StatusOr<std::vector<GoldenSequence>> LoadGolden(const std::string& dir, int vocab) {
  ASSIGN_OR_RETURN(auto file, loader::SafetensorsFile::Open(dir + "/golden.safetensors"));
  std::vector<GoldenSequence> out;
  for (int k = 0;; ++k) {
    const loader::TensorView* tokens = file->Find(absl::StrCat("tokens.", k));
    const loader::TensorView* logprobs = file->Find(absl::StrCat("logprobs.", k));
    if (tokens == nullptr || logprobs == nullptr) break;
    const loader::TensorView* positions = file->Find(absl::StrCat("positions.", k));
    const loader::TensorView* next = file->Find(absl::StrCat("next_logprobs.", k));
    const int64_t T = tokens->shape.empty() ? 0 : tokens->shape[0];
    const int64_t R = positions != nullptr ? positions->num_elements() : T;
    if (tokens->dtype != loader::DType::kI32 || tokens->shape.size() != 1 ||
        logprobs->shape != std::vector<int64_t>{R, vocab} ||
        (positions != nullptr && positions->dtype != loader::DType::kI32) ||
        (positions != nullptr) != (next != nullptr) ||
        (next != nullptr && next->shape != std::vector<int64_t>{T})) {
      return absl::DataLossError(absl::StrCat("golden sequence ", k, " has unexpected shapes"));
    }
    GoldenSequence g;
    g.tokens.resize(T);
    std::memcpy(g.tokens.data(), tokens->data, tokens->nbytes);
    g.logprobs.resize(logprobs->num_elements());
    RETURN_IF_ERROR(loader::CopyToFloat32(*logprobs, absl::MakeSpan(g.logprobs)));
    g.positions.resize(R);
    g.next_logprobs.assign(T, 0.0f);
    if (positions != nullptr) {
      std::memcpy(g.positions.data(), positions->data, positions->nbytes);
      for (int64_t r = 0; r < R; ++r) {
        if (g.positions[r] < 0 || g.positions[r] >= T ||
            (r > 0 && g.positions[r] <= g.positions[r - 1])) {
          return absl::DataLossError(absl::StrCat("golden sequence ", k, ": bad positions"));
        }
      }
      RETURN_IF_ERROR(loader::CopyToFloat32(*next, absl::MakeSpan(g.next_logprobs)));
    } else {
      for (int64_t t = 0; t < T; ++t) g.positions[t] = static_cast<int32_t>(t);
      for (int64_t t = 0; t + 1 < T; ++t) {
        g.next_logprobs[t] = g.logprobs[t * vocab + g.tokens[t + 1]];
      }
    }
    out.push_back(std::move(g));
  }
  if (out.empty()) return absl::DataLossError("golden.safetensors holds no sequence");
  return out;
}

std::vector<float> SelectRows(absl::Span<const float> got, const GoldenSequence& g, int vocab) {
  std::vector<float> rows;
  rows.reserve(g.positions.size() * vocab);
  for (int32_t p : g.positions) {
    const auto row = got.subspan(size_t(p) * vocab, vocab);
    rows.insert(rows.end(), row.begin(), row.end());
  }
  return rows;
}

Agreement CompareLogProbs(absl::Span<const float> got, absl::Span<const float> ref, int vocab) {
  Agreement a;
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(double(got[i]) - ref[i]);
    sum += d;
    a.max_abs = std::max(a.max_abs, d);
  }
  a.mean_abs = got.empty() ? 0.0 : sum / got.size();
  std::vector<float> sorted(vocab);
  for (size_t t = 0; t < got.size() / vocab; ++t) {
    const float* r = &ref[t * vocab];
    const float* g = &got[t * vocab];
    std::copy(r, r + vocab, sorted.begin());
    std::partial_sort(sorted.begin(), sorted.begin() + std::min(2, vocab), sorted.end(),
                      std::greater<float>());
    if (vocab > 1 && sorted[0] - sorted[1] < 1e-2f) continue;  // near-tie: left out (§8.4)
    ++a.counted;
    a.agreed += std::max_element(g, g + vocab) - g == std::max_element(r, r + vocab) - r;
  }
  a.top1 = a.counted ? double(a.agreed) / a.counted : 1.0;
  return a;
}

NextTokenQuality CompareNextTokens(absl::Span<const float> got, absl::Span<const float> ref,
                                   absl::Span<const int32_t> tokens, int vocab) {
  NextTokenQuality q;
  const int T = static_cast<int>(tokens.size());
  q.positions = T;
  double nll_ref = 0, nll_got = 0, abs_diff = 0;
  for (int t = 0; t < T; ++t) {
    const float* r = &ref[size_t(t) * vocab];
    const float* g = &got[size_t(t) * vocab];
    q.agreed += std::max_element(r, r + vocab) - r == std::max_element(g, g + vocab) - g;
    if (t + 1 < T) {
      nll_ref -= r[tokens[t + 1]];
      nll_got -= g[tokens[t + 1]];
      abs_diff += std::abs(double(r[tokens[t + 1]]) - g[tokens[t + 1]]);
    }
  }
  if (T > 1) {
    q.ce_ref = nll_ref / (T - 1);
    q.ce_got = nll_got / (T - 1);
    q.mean_abs = abs_diff / (T - 1);
  }
  return q;
}

absl::StatusOr<std::vector<float>> StepLogProbs(engine::Backend& backend,
                                                absl::Span<const int32_t> tokens, int chunk,
                                                int slot) {
  const int T = tokens.size();
  const int V = backend.config().vocab_size;
  if (chunk == 0) chunk = T;
  std::vector<float> logits(size_t(T) * V), out(size_t(T) * V);
  for (int s = 0; s < T; s += chunk) {
    const int n = std::min(chunk, T - s);
    engine::StepEntry e{.slot = slot,
                        .position = s,
                        .tokens = tokens.subspan(s, n),
                        .logits = engine::LogitsRequest::kAll};
    RETURN_IF_ERROR(
        backend.Step({&e, 1}, absl::MakeSpan(logits).subspan(size_t(s) * V, size_t(n) * V)));
  }
  for (int t = 0; t < T; ++t) {
    engine::LogSoftmax(absl::MakeConstSpan(logits).subspan(size_t(t) * V, V),
                       absl::MakeSpan(out).subspan(size_t(t) * V, V));
  }
  return out;
}

std::string DemoModelDir() { return SourcePath("models/demo"); }

absl::StatusOr<GoldenSequence> DemoParitySequence(const loader::Checkpoint& demo) {
  static std::mutex mu;
  static std::optional<GoldenSequence>* cached = new std::optional<GoldenSequence>;
  std::lock_guard<std::mutex> lock(mu);
  if (cached->has_value()) return **cached;
  const std::string dir = SourcePath("tests/data/demo_parity");
  ASSIGN_OR_RETURN(std::vector<GoldenSequence> golden, LoadGolden(dir, demo.config().vocab_size));
  if (golden.size() != 1) {
    return absl::DataLossError("demo_parity/golden.safetensors must hold one sequence");
  }
  // The reference was fed python sentencepiece's ids of text.txt: ours must be the same ids, or
  // the comparison would be between two different inputs (a tokenizer regression shows here).
  ASSIGN_OR_RETURN(auto tokenizer, loader::Tokenizer::Load(demo.tokenizer_path()));
  const std::string path = dir + "/text.txt";
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer->Encode(text.str()));
  std::vector<int32_t> tokens = {demo.config().bos_token_id};
  tokens.insert(tokens.end(), ids.begin(), ids.end());
  if (tokens != golden[0].tokens) {
    return absl::DataLossError(absl::StrCat("the tokenizer encodes demo_parity/text.txt to ",
                                            tokens.size(), " ids that differ from the reference's ",
                                            golden[0].tokens.size(), " (golden.safetensors)"));
  }
  *cached = golden[0];
  return golden[0];
}

absl::StatusOr<ParityCase> LoadParityCase(const std::string& name) {
  const bool demo = name == "demo";
  const std::string dir = demo ? DemoModelDir() : FixtureDir(name);
  ParityCase c;
  ASSIGN_OR_RETURN(c.checkpoint, loader::Checkpoint::Open(dir));
  if (demo) {
    ASSIGN_OR_RETURN(GoldenSequence g, DemoParitySequence(*c.checkpoint));
    c.golden.push_back(std::move(g));
  } else {
    ASSIGN_OR_RETURN(c.golden, LoadGolden(dir, c.checkpoint->config().vocab_size));
  }
  return c;
}

}  // namespace griffin::golden
