#include "bench/serving_metrics.h"

#include "gtest/gtest.h"

namespace griffin::bench {
namespace {

TEST(ServingMetricsTest, PercentilesInterpolateLikeNumpy) {
  Distribution d = Summarize(std::vector<double>{4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_DOUBLE_EQ(d.p90, 3.7);  // numpy.percentile([1,2,3,4], 90)
  EXPECT_DOUBLE_EQ(d.p99, 3.97);
  EXPECT_EQ(d.count, 4);
  EXPECT_EQ(Summarize(std::vector<double>{}).count, 0);
}

TEST(ServingMetricsTest, VllmDefinitions) {
  RequestOutcome a{.ok = true,
                   .status = "OK",
                   .send_time = 0.0,
                   .first_token_time = 0.1,
                   .end_time = 1.1,
                   .chunk_times = {0.1, 0.35, 0.6, 0.85, 1.1},
                   .prompt_tokens = 10,
                   .output_tokens = 5};
  RequestOutcome b{.ok = true,
                   .status = "OK",
                   .send_time = 0.5,
                   .first_token_time = 0.8,
                   .end_time = 2.0,
                   .chunk_times = {0.8, 2.0},
                   .prompt_tokens = 20,
                   .output_tokens = 2};
  RequestOutcome failed{.ok = false, .status = "429", .send_time = 0.2, .end_time = 0.21};
  ServingSummary s = Summarize({a, b, failed}, ServiceLevel{.ttft_s = 0.2, .tpot_s = 0.5});
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.failures_by_status.at("429"), 1);
  EXPECT_DOUBLE_EQ(s.duration_s, 2.0);
  EXPECT_NEAR(s.ttft.mean, 0.2, 1e-12);                 // (0.1 + 0.3) / 2
  EXPECT_NEAR(s.tpot.median, (0.25 + 1.2) / 2, 1e-12);  // a: 1.0/4, b: 1.2/1
  EXPECT_EQ(s.itl.count, 5);                            // 4 gaps in a, 1 in b
  EXPECT_NEAR(s.itl.max, 1.2, 1e-12);
  EXPECT_NEAR(s.output_throughput, 7 / 2.0, 1e-12);
  EXPECT_NEAR(s.goodput, 1 / 2.0, 1e-12);  // only a meets TTFT ≤ 0.2 and TPOT ≤ 0.5
  const nlohmann::json j = ToJson(s);
  EXPECT_NEAR(j["ttft_ms"]["mean"].get<double>(), 200.0, 1e-9);
  EXPECT_NE(FormatTable(s).find("Failed requests:"), std::string::npos);
}

}  // namespace
}  // namespace griffin::bench
