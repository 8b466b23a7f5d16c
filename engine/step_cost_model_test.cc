#include "engine/step_cost_model.h"

#include <random>

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

// A GPU-like cost: 4 ms of weights, 10 us a decode row, 8 us a prompt token.
absl::Duration Cost(int rows, int64_t tokens) {
  return absl::Microseconds(4000 + 10 * rows + 8 * tokens);
}

TEST(StepCostModelTest, LearnsTheCostAndAnswersHowMuchPrefillFits) {
  StepCostModel model;
  EXPECT_FALSE(model.PrefillTokensWithin(absl::Milliseconds(20), 100).has_value());
  std::mt19937 rng(1);
  for (int i = 0; i < 40; ++i) {
    const int rows = 50 + static_cast<int>(rng() % 200);
    const int64_t tokens = i % 3 == 0 ? 0 : static_cast<int64_t>(rng() % 4000);
    model.Observe(rows, tokens, Cost(rows, tokens));
  }
  ASSERT_TRUE(model.coefficients().has_value());
  EXPECT_NEAR(model.coefficients()->base, 4e-3, 1e-6);
  EXPECT_NEAR(model.coefficients()->per_row, 10e-6, 1e-8);
  EXPECT_NEAR(model.coefficients()->per_token, 8e-6, 1e-9);
  // 20 ms with 100 decodes: (20000 - 4000 - 1000) / 8 = 1875 tokens.
  const auto fits = model.PrefillTokensWithin(absl::Milliseconds(20), 100);
  ASSERT_TRUE(fits.has_value());
  EXPECT_NEAR(static_cast<double>(*fits), 1875.0, 1.0);
  // Decodes alone over the target: no prefill fits.
  EXPECT_EQ(*model.PrefillTokensWithin(absl::Milliseconds(5), 200), 0);
}

TEST(StepCostModelTest, NeedsStepsWithPrefillAndKeepsItsFitThroughDecodeOnlySteps) {
  StepCostModel model;
  for (int i = 0; i < 100; ++i) model.Observe(64, 0, Cost(64, 0));
  EXPECT_FALSE(model.coefficients().has_value());  // decode-only steps say nothing of prefill
  for (int i = 0; i < StepCostModel::kMinInformative; ++i) {
    model.Observe(64, 1000 + 100 * i, Cost(64, 1000 + 100 * i));
  }
  ASSERT_TRUE(model.coefficients().has_value());
  EXPECT_NEAR(model.coefficients()->per_token, 8e-6, 1e-8);
  // A long run of decode-only steps pushes every prefill step out of the window.
  for (int i = 0; i < 2 * StepCostModel::kWindow; ++i) model.Observe(64, 0, Cost(64, 0));
  ASSERT_TRUE(model.coefficients().has_value());
  EXPECT_NEAR(model.coefficients()->per_token, 8e-6, 1e-8);
}

TEST(StepCostModelTest, FollowsACostThatChanges) {
  StepCostModel model;
  for (int i = 0; i < 64; ++i) model.Observe(32, 500 + 50 * (i % 7), Cost(32, 500 + 50 * (i % 7)));
  // Prompt tokens become twice as dear (say, longer contexts): within one window the fit follows.
  for (int i = 0; i < 64; ++i) {
    const int64_t t = 500 + 50 * (i % 7);
    model.Observe(32, t, Cost(32, t) + absl::Microseconds(8 * t));
  }
  EXPECT_NEAR(model.coefficients()->per_token, 16e-6, 1e-8);
}

}  // namespace
}  // namespace griffin::engine
