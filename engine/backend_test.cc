// Backend::StepWithPromptLogprobs, the default (host) implementation, on the CPU backend: equal to
// log-softmax over Step's kAll rows, whatever the chunking and the batch, with the caller's own
// logits rows unchanged, and invalid requests refused before any state changes.
#include "engine/backend.h"

#include <algorithm>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"

namespace griffin::engine {
namespace {

class PromptLogprobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto checkpoint =
        loader::Checkpoint::Open(std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin");
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    checkpoint_ = std::move(*checkpoint);
    auto backend = CpuBackend::Create(*checkpoint_, /*num_slots=*/3);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    vocab_ = backend_->config().vocab_size;
  }

  // The reference: every row of a whole-prompt kAll step, as log-probabilities.
  std::vector<std::vector<float>> ReferenceRows(const std::vector<int32_t>& prompt) {
    std::vector<float> logits(prompt.size() * vocab_);
    StepEntry e{.slot = 2, .position = 0, .tokens = prompt, .logits = LogitsRequest::kAll};
    EXPECT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(logits)).ok());
    EXPECT_TRUE(backend_->ResetSlot(2).ok());
    std::vector<std::vector<float>> rows(prompt.size(), std::vector<float>(vocab_));
    for (size_t t = 0; t < prompt.size(); ++t) {
      LogSoftmax(absl::MakeConstSpan(logits).subspan(t * vocab_, vocab_), absl::MakeSpan(rows[t]));
    }
    return rows;
  }

  std::unique_ptr<loader::Checkpoint> checkpoint_;
  std::unique_ptr<CpuBackend> backend_;
  int vocab_ = 0;
};

TEST_F(PromptLogprobsTest, EqualsLogSoftmaxOfEveryRowInChunksAndNextToAnotherEntry) {
  const std::vector<int32_t> prompt = {2, 17, 33, 5, 90, 41, 7, 7, 12, 200};
  const std::vector<std::vector<float>> reference = ReferenceRows(prompt);
  // The plain last-row logits the other entry gets from Step alone.
  const std::vector<int32_t> other = {2, 60, 61};
  std::vector<float> other_alone(vocab_);
  {
    StepEntry e{.slot = 1, .position = 0, .tokens = other, .logits = LogitsRequest::kLast};
    ASSERT_TRUE(backend_->Step({&e, 1}, absl::MakeSpan(other_alone)).ok());
    ASSERT_TRUE(backend_->ResetSlot(1).ok());
  }

  constexpr int kTop = 4;
  // Chunks of 4, 4 and 2 tokens; the last chunk also asks for its last row (the next token's
  // distribution), as the engine does at the end of a prefill.
  std::vector<float> scored_logprobs;
  std::vector<int32_t> scored_ids, scored_ranks;
  std::vector<float> scored_top;
  std::vector<float> last_row(vocab_);
  for (int start : {0, 4, 8}) {
    const int n = std::min<int>(4, static_cast<int>(prompt.size()) - start);
    const bool last = start + n == static_cast<int>(prompt.size());
    const int targets = last ? n - 1 : n;
    std::vector<StepEntry> entries = {
        {.slot = 0,
         .position = start,
         .tokens = absl::MakeConstSpan(prompt).subspan(start, n),
         .logits = last ? LogitsRequest::kLast : LogitsRequest::kNone}};
    std::vector<PromptLogprobsRequest> requests = {
        {.targets = absl::MakeConstSpan(prompt).subspan(start + 1, targets)}};
    if (start == 0) {  // an unscored entry in the same step keeps its own row
      entries.push_back(
          {.slot = 1, .position = 0, .tokens = other, .logits = LogitsRequest::kLast});
      requests.push_back({});
    }
    std::vector<float> logits(LogitsRows(entries) * vocab_);
    std::vector<float> lp(targets), top_lp(targets * kTop);
    std::vector<int32_t> ranks(targets), top_ids(targets * kTop);
    ASSERT_TRUE(backend_
                    ->StepWithPromptLogprobs(entries, requests, kTop, absl::MakeSpan(logits),
                                             {.logprobs = absl::MakeSpan(lp),
                                              .ranks = absl::MakeSpan(ranks),
                                              .top_ids = absl::MakeSpan(top_ids),
                                              .top_logprobs = absl::MakeSpan(top_lp)})
                    .ok());
    if (start == 0) {
      ASSERT_EQ(logits.size(), static_cast<size_t>(vocab_));
      for (int v = 0; v < vocab_; ++v) ASSERT_FLOAT_EQ(logits[v], other_alone[v]) << v;
    }
    if (last) std::copy(logits.end() - vocab_, logits.end(), last_row.begin());
    scored_logprobs.insert(scored_logprobs.end(), lp.begin(), lp.end());
    scored_ranks.insert(scored_ranks.end(), ranks.begin(), ranks.end());
    scored_ids.insert(scored_ids.end(), top_ids.begin(), top_ids.end());
    scored_top.insert(scored_top.end(), top_lp.begin(), top_lp.end());
  }
  ASSERT_EQ(scored_logprobs.size(), prompt.size() - 1);
  for (size_t t = 0; t + 1 < prompt.size(); ++t) {
    const float target = reference[t][prompt[t + 1]];
    EXPECT_NEAR(scored_logprobs[t], target, 1e-5) << t;
    EXPECT_EQ(scored_ranks[t], 1 + std::count_if(reference[t].begin(), reference[t].end(),
                                                 [&](float v) { return v > target; }))
        << t;
    const auto top = TopK(reference[t], kTop);
    for (int k = 0; k < kTop; ++k) {
      EXPECT_EQ(scored_ids[t * kTop + k], top[k].first) << t << " " << k;
      EXPECT_NEAR(scored_top[t * kTop + k], top[k].second, 1e-5);
    }
  }
  // The last row is the distribution after the whole prompt.
  std::vector<float> last_lp(vocab_);
  LogSoftmax(last_row, absl::MakeSpan(last_lp));
  for (int v = 0; v < vocab_; ++v) EXPECT_NEAR(last_lp[v], reference.back()[v], 1e-5);
}

TEST_F(PromptLogprobsTest, InvalidRequestsChangeNothing) {
  const std::vector<int32_t> prompt = {2, 17, 33};
  const std::vector<int32_t> too_many = {17, 33, 5, 6};
  const std::vector<int32_t> out_of_range = {17, vocab_};
  const std::vector<int32_t> good = {17, 33};
  StepEntry e{.slot = 0, .position = 0, .tokens = prompt, .logits = LogitsRequest::kNone};
  std::vector<float> lp(2), top_lp(2);
  std::vector<int32_t> ranks(2), top_ids(2);
  const PromptLogprobsOutput out{.logprobs = absl::MakeSpan(lp),
                                 .ranks = absl::MakeSpan(ranks),
                                 .top_ids = absl::MakeSpan(top_ids),
                                 .top_logprobs = absl::MakeSpan(top_lp)};
  auto run = [&](std::vector<PromptLogprobsRequest> requests, int top_k,
                 const PromptLogprobsOutput& o) {
    return backend_->StepWithPromptLogprobs({&e, 1}, requests, top_k, {}, o).code();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(run({}, 1, out), kInvalid);                           // no request for the entry
  EXPECT_EQ(run({{.targets = too_many}}, 1, out), kInvalid);      // more targets than tokens
  EXPECT_EQ(run({{.targets = out_of_range}}, 1, out), kInvalid);  // id == vocab
  EXPECT_EQ(run({{.targets = good}}, -1, out), kInvalid);         // top_k < 0
  EXPECT_EQ(run({{.targets = good}}, 2, out), kInvalid);          // top spans too small for k=2
  EXPECT_EQ(run({{.targets = good}}, 1,
                {.logprobs = absl::MakeSpan(lp).subspan(0, 1),
                 .ranks = absl::MakeSpan(ranks).subspan(0, 1),
                 .top_ids = absl::MakeSpan(top_ids).subspan(0, 1),
                 .top_logprobs = absl::MakeSpan(top_lp).subspan(0, 1)}),
            kInvalid);  // one row short
  EXPECT_EQ(backend_->NextPosition(0), 0);
  EXPECT_EQ(run({{.targets = good}}, 1, out), absl::StatusCode::kOk);
  EXPECT_EQ(backend_->NextPosition(0), 3);
  EXPECT_EQ(top_ids.size(), 2u);
}

}  // namespace
}  // namespace griffin::engine
