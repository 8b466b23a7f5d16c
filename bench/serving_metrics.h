// Serving metrics with vLLM's definitions (shared/PERF.md "How to measure"):
//   TTFT = send → first streamed token; TPOT = (E2E − TTFT) / (output tokens − 1) per request;
//   ITL  = every gap between streamed chunks, pooled over requests; E2E = send → last byte.
// Pure functions over recorded request outcomes, so they are unit-tested without a server.
#ifndef GRIFFIN_BENCH_SERVING_METRICS_H_
#define GRIFFIN_BENCH_SERVING_METRICS_H_

#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace griffin::bench {

// What one request did, as the client saw it. Times are seconds since the run's start.
struct RequestOutcome {
  bool ok = false;
  std::string status;  // "OK", or the gRPC code / HTTP status of the failure
  double send_time = 0;
  double first_token_time = 0;  // arrival of the first chunk carrying a token
  double end_time = 0;
  std::vector<double> chunk_times;  // arrival of every token-carrying chunk (first included)
  int prompt_tokens = 0;
  int output_tokens = 0;
  // --multi_turn: what the next turn needs (output ids where the protocol sends them (gRPC), else
  // its text) and the turn's index (1-based; 0 outside multi-turn runs).
  std::vector<int32_t> output_ids;
  std::string output_text;
  std::string session_id;
  int turn = 0;
};

struct Distribution {
  double mean = 0, median = 0, p90 = 0, p99 = 0, min = 0, max = 0;
  int count = 0;
};

// Percentiles by linear interpolation between order statistics (numpy's default).
Distribution Summarize(std::vector<double> values);

struct ServiceLevel {
  double ttft_s = 0;  // ≤ 0: no limit
  double tpot_s = 0;
};

struct ServingSummary {
  int completed = 0, failed = 0;
  std::map<std::string, int> failures_by_status;
  double duration_s = 0;  // first send → last completion
  int64_t prompt_tokens = 0, output_tokens = 0;
  double request_throughput = 0;  // completed requests / s
  double output_throughput = 0;   // output tokens / s
  double total_token_throughput = 0;
  double goodput = 0;                 // requests / s meeting the SLO
  Distribution ttft, tpot, itl, e2e;  // seconds
};

ServingSummary Summarize(const std::vector<RequestOutcome>& outcomes, const ServiceLevel& slo);

// {"ttft_ms": {"mean": ..}, ...}: every distribution in milliseconds, throughputs, counts.
nlohmann::json ToJson(const ServingSummary& summary);

// TTFT per turn index of a --multi_turn run: {"turn": t, "ttft_ms": {...}} for t = 1.., over the
// completed requests of that turn.
nlohmann::json TtftByTurn(const std::vector<RequestOutcome>& outcomes);
std::string FormatTtftByTurn(const nlohmann::json& by_turn);

// A fixed-width table for stdout.
std::string FormatTable(const ServingSummary& summary);

}  // namespace griffin::bench

#endif  // GRIFFIN_BENCH_SERVING_METRICS_H_
