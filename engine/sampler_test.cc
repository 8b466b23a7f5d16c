#include "engine/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
TEST(PhiloxTest, KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
}

TEST(SamplerTest, GreedyPicksArgmaxAndLowestTie) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  SamplingParams greedy{.temperature = 0.0f};
  EXPECT_EQ(*SampleToken(logits, greedy, {}, 0), 1);
  // Tiny temperatures are greedy too (VAL-3).
  for (float t : {1e-8f, 1e-6f}) {
    SamplingParams p{.temperature = t, .seed = 5};
    EXPECT_EQ(*SampleToken(logits, p, {}, 3), 1);
  }
}

TEST(SamplerTest, TinyButValidValuesStayFinite) {
  std::vector<float> logits = {0.0f, 1.0f, 3.0f, 2.9f};
  for (float t : {1e-4f, 1e-3f}) {
    SamplingParams p{.temperature = t, .seed = 1};
    EXPECT_EQ(*SampleToken(logits, p, {}, 0), 2);  // 0.1 apart at T=1e-3 is e^100 odds
  }
  for (float top_p : {1e-8f, 1e-4f}) {
    SamplingParams p{.temperature = 1.0f, .top_p = top_p, .seed = 1};
    for (int step = 0; step < 20; ++step) EXPECT_EQ(*SampleToken(logits, p, {}, step), 2);
  }
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedsDiffer) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  auto draw = [&](uint64_t seed) {
    std::vector<int> out;
    SamplingParams p{.temperature = 1.0f, .seed = seed};
    for (int step = 0; step < 32; ++step) out.push_back(*SampleToken(logits, p, {}, step));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), -100.0f};
  SamplingParams p{.temperature = 1.0f, .seed = 9};
  std::map<int, int> counts;
  const int n = 30000;
  for (int step = 0; step < n; ++step) counts[*SampleToken(logits, p, {}, step)]++;
  EXPECT_NEAR(counts[0] / double(n), 1.0 / 6, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 2.0 / 6, 0.01);
  EXPECT_NEAR(counts[2] / double(n), 3.0 / 6, 0.01);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplerTest, TopKTopPMinPRestrictTheSupport) {
  std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  auto support = [&](SamplingParams p) {
    std::map<int, int> seen;
    for (int step = 0; step < 2000; ++step) seen[*SampleToken(logits, p, {}, step)]++;
    return seen.size();
  };
  EXPECT_EQ(support({.temperature = 1.0f, .seed = 1}), 4u);
  EXPECT_EQ(support({.temperature = 1.0f, .top_k = 2, .seed = 1}), 2u);
  EXPECT_EQ(support({.temperature = 1.0f, .top_k = 1, .seed = 1}), 1u);
  EXPECT_EQ(support({.temperature = 1.0f, .top_p = 0.65f, .seed = 1}), 2u);  // 0.4 + 0.3 ≥ 0.65
  EXPECT_EQ(support({.temperature = 1.0f, .top_p = 0.75f, .seed = 1}), 3u);
  EXPECT_EQ(support({.temperature = 1.0f, .min_p = 0.6f, .seed = 1}), 2u);  // ≥ 0.24
  EXPECT_EQ(support({.temperature = 1.0f, .min_p = 1.0f, .seed = 1}), 1u);
}

TEST(SamplerTest, RepetitionPenaltyDemotesSeenTokens) {
  std::vector<float> logits = {2.0f, 1.9f, -1.0f, -1.2f};
  const int32_t seen[] = {0, 2};
  SamplingParams p{.temperature = 0.0f, .repetition_penalty = 1.5f};
  EXPECT_EQ(*SampleToken(logits, p, seen, 0), 1);  // 2.0/1.5 < 1.9
  std::vector<float> negative = {-1.0f, -1.2f};
  const int32_t seen0[] = {0};
  EXPECT_EQ(*SampleToken(negative, p, seen0, 0), 1);  // -1.5 < -1.2
}

TEST(SamplerTest, NonFiniteLogitsFailTheRequest) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  SamplingParams p{.temperature = 1.0f};
  EXPECT_EQ(SampleToken(std::vector<float>{0.0f, nan}, p, {}, 0).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SampleToken(std::vector<float>{inf, 0.0f}, p, {}, 0).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SampleToken(std::vector<float>{-inf, -inf}, p, {}, 0).status().code(),
            absl::StatusCode::kInternal);
  // A masked (-inf) token is fine and never drawn.
  for (int step = 0; step < 100; ++step) {
    EXPECT_EQ(*SampleToken(std::vector<float>{-inf, 0.0f}, p, {}, step), 1);
  }
}

TEST(SamplerTest, LogSoftmaxNormalises) {
  std::vector<float> logits = {1.0f, 2.0f, 3.0f, -30.0f}, out(4);
  LogSoftmax(logits, absl::MakeSpan(out));
  double sum = 0;
  for (float v : out) {
    EXPECT_LE(v, 0.0f);
    sum += std::exp(double(v));
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_NEAR(out[2] - out[1], 1.0, 1e-6);
}

}  // namespace
}  // namespace griffin::engine

namespace griffin::engine {
namespace {

TEST(SamplerPenaltyTest, PresenceAndFrequencyApplyToOutputOnly) {
  std::vector<float> logits = {1.0f, 1.5f, 0.0f};
  SamplingParams greedy{.temperature = 0.0f};
  std::vector<int32_t> output = {1};
  EXPECT_EQ(*SampleToken(logits, greedy, output, 0, output), 1);  // penalties off
  greedy.presence_penalty = 1.0f;
  EXPECT_EQ(*SampleToken(logits, greedy, output, 0, output), 0);  // 1.5 - 1 < 1
  EXPECT_EQ(*SampleToken(logits, greedy, output, 0, {}), 1);      // prompt-only ids: no penalty
  SamplingParams freq{.temperature = 0.0f};
  freq.frequency_penalty = 0.3f;
  std::vector<int32_t> once = {1}, twice = {1, 1};
  EXPECT_EQ(*SampleToken(logits, freq, once, 0, once), 1);    // 1.2 > 1
  EXPECT_EQ(*SampleToken(logits, freq, twice, 0, twice), 0);  // 0.9 < 1
  freq.frequency_penalty = -2.0f;                             // negative favours repeats
  std::vector<int32_t> zero = {2};
  EXPECT_EQ(*SampleToken(logits, freq, zero, 0, zero), 2);
}

}  // namespace
}  // namespace griffin::engine

namespace griffin::engine {
namespace {

TEST(TopKTest, LargestFirstTiesToTheLowerIndexNanLast) {
  const float nan = std::nanf("");
  std::vector<float> v = {1.0f, nan, 3.0f, 1.0f, -2.0f};
  EXPECT_EQ(TopK(v, 3), (std::vector<std::pair<int32_t, float>>{{2, 3.0f}, {0, 1.0f}, {3, 1.0f}}));
  EXPECT_EQ(TopK(v, 0).size(), 0u);
  const auto all = TopK(v, 99);  // k past the size: every value, NaN last
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[3].first, 4);
  EXPECT_EQ(all[4].first, 1);
}

TEST(SamplerTest, LogitBiasComesBeforeThePenaltiesAndCanBanOrForce) {
  std::vector<float> logits = {0.0f, 2.0f, 1.0f, 1.5f};
  SamplingParams greedy{.temperature = 0.0f};
  EXPECT_EQ(*SampleToken(logits, greedy, {}, 0), 1);
  greedy.logit_bias = {{1, -100.0f}};  // banned in practice
  EXPECT_EQ(*SampleToken(logits, greedy, {}, 0), 3);
  greedy.logit_bias = {{0, 100.0f}};  // forced
  for (int step = 0; step < 5; ++step) EXPECT_EQ(*SampleToken(logits, greedy, {}, step), 0);
  // Sampled, a +100 bias wins every draw too.
  SamplingParams hot{.temperature = 1.0f, .seed = 3, .logit_bias = {{2, 100.0f}}};
  for (int step = 0; step < 20; ++step) EXPECT_EQ(*SampleToken(logits, hot, {}, step), 2);
  // The repetition penalty acts on the biased logit: token 2 biased to 4.0 and seen, penalty 2:
  // 4.0 / 2 = 2.0 ties token 1's 2.0 and loses on the index; without the bias first it would be
  // 1.0 / 2 + 3.0 = 3.5 and win.
  SamplingParams order{.temperature = 0.0f, .repetition_penalty = 2.0f, .logit_bias = {{2, 3.0f}}};
  const std::vector<int32_t> seen = {2};
  EXPECT_EQ(*SampleToken(logits, order, seen, 0), 1);
}

}  // namespace
}  // namespace griffin::engine
