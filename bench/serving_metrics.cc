#include "bench/serving_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_format.h"

namespace griffin::bench {

Distribution Summarize(std::vector<double> values) {
  Distribution d;
  d.count = static_cast<int>(values.size());
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  auto percentile = [&](double q) {
    const double rank = q * (values.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(rank));
    const size_t hi = std::min(lo + 1, values.size() - 1);
    return values[lo] + (values[hi] - values[lo]) * (rank - lo);
  };
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  d.median = percentile(0.5);
  d.p90 = percentile(0.9);
  d.p99 = percentile(0.99);
  d.min = values.front();
  d.max = values.back();
  return d;
}

ServingSummary Summarize(const std::vector<RequestOutcome>& outcomes, const ServiceLevel& slo) {
  ServingSummary s;
  std::vector<double> ttft, tpot, itl, e2e;
  double first_send = std::numeric_limits<double>::infinity(), last_end = 0;
  int good = 0;
  for (const RequestOutcome& o : outcomes) {
    first_send = std::min(first_send, o.send_time);
    last_end = std::max(last_end, o.end_time);
    if (!o.ok) {
      ++s.failed;
      ++s.failures_by_status[o.status];
      continue;
    }
    ++s.completed;
    s.prompt_tokens += o.prompt_tokens;
    s.output_tokens += o.output_tokens;
    const double request_ttft = o.first_token_time - o.send_time;
    const double request_e2e = o.end_time - o.send_time;
    ttft.push_back(request_ttft);
    e2e.push_back(request_e2e);
    double request_tpot = 0;
    if (o.output_tokens > 1) {
      request_tpot = (request_e2e - request_ttft) / (o.output_tokens - 1);
      tpot.push_back(request_tpot);
    }
    for (size_t i = 1; i < o.chunk_times.size(); ++i) {
      itl.push_back(o.chunk_times[i] - o.chunk_times[i - 1]);
    }
    const bool ttft_ok = slo.ttft_s <= 0 || request_ttft <= slo.ttft_s;
    const bool tpot_ok = slo.tpot_s <= 0 || request_tpot <= slo.tpot_s;
    if (ttft_ok && tpot_ok) ++good;
  }
  s.duration_s = outcomes.empty() ? 0 : std::max(0.0, last_end - first_send);
  if (s.duration_s > 0) {
    s.request_throughput = s.completed / s.duration_s;
    s.output_throughput = s.output_tokens / s.duration_s;
    s.total_token_throughput = (s.prompt_tokens + s.output_tokens) / s.duration_s;
    s.goodput = good / s.duration_s;
  }
  s.ttft = Summarize(std::move(ttft));
  s.tpot = Summarize(std::move(tpot));
  s.itl = Summarize(std::move(itl));
  s.e2e = Summarize(std::move(e2e));
  return s;
}

namespace {
nlohmann::json DistributionMs(const Distribution& d) {
  return {{"mean", d.mean * 1e3}, {"median", d.median * 1e3}, {"p90", d.p90 * 1e3},
          {"p99", d.p99 * 1e3},   {"min", d.min * 1e3},       {"max", d.max * 1e3},
          {"count", d.count}};
}
}  // namespace

nlohmann::json ToJson(const ServingSummary& s) {
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"failures_by_status", s.failures_by_status},
          {"duration_s", s.duration_s},
          {"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"request_throughput", s.request_throughput},
          {"output_throughput", s.output_throughput},
          {"total_token_throughput", s.total_token_throughput},
          {"goodput", s.goodput},
          {"ttft_ms", DistributionMs(s.ttft)},
          {"tpot_ms", DistributionMs(s.tpot)},
          {"itl_ms", DistributionMs(s.itl)},
          {"e2e_ms", DistributionMs(s.e2e)}};
}

std::string FormatTable(const ServingSummary& s) {
  std::string out;
  absl::StrAppendFormat(&out, "%-34s %d\n", "Successful requests:", s.completed);
  absl::StrAppendFormat(&out, "%-34s %d\n", "Failed requests:", s.failed);
  for (const auto& [status, n] : s.failures_by_status) {
    absl::StrAppendFormat(&out, "  %-32s %d\n", status + ":", n);
  }
  absl::StrAppendFormat(&out, "%-34s %.2f\n", "Benchmark duration (s):", s.duration_s);
  absl::StrAppendFormat(&out, "%-34s %d\n", "Total input tokens:", s.prompt_tokens);
  absl::StrAppendFormat(&out, "%-34s %d\n", "Total generated tokens:", s.output_tokens);
  absl::StrAppendFormat(&out, "%-34s %.2f\n", "Request throughput (req/s):", s.request_throughput);
  absl::StrAppendFormat(&out, "%-34s %.2f\n",
                        "Output token throughput (tok/s):", s.output_throughput);
  absl::StrAppendFormat(&out, "%-34s %.2f\n",
                        "Total token throughput (tok/s):", s.total_token_throughput);
  absl::StrAppendFormat(&out, "%-34s %.2f\n", "Goodput (req/s):", s.goodput);
  auto rows = [&](const char* name, const Distribution& d) {
    absl::StrAppendFormat(&out, "%-8s ms: mean %9.2f  median %9.2f  p90 %9.2f  p99 %9.2f\n", name,
                          d.mean * 1e3, d.median * 1e3, d.p90 * 1e3, d.p99 * 1e3);
  };
  rows("TTFT", s.ttft);
  rows("TPOT", s.tpot);
  rows("ITL", s.itl);
  rows("E2E", s.e2e);
  return out;
}

nlohmann::json TtftByTurn(const std::vector<RequestOutcome>& outcomes) {
  std::map<int, std::vector<double>> ttft;
  for (const RequestOutcome& o : outcomes) {
    if (o.ok && o.turn > 0) ttft[o.turn].push_back(o.first_token_time - o.send_time);
  }
  nlohmann::json out = nlohmann::json::array();
  for (auto& [turn, values] : ttft) {
    out.push_back({{"turn", turn}, {"ttft_ms", DistributionMs(Summarize(std::move(values)))}});
  }
  return out;
}

std::string FormatTtftByTurn(const nlohmann::json& by_turn) {
  std::string out = absl::StrFormat("%-6s %10s %10s %10s %6s\n", "turn", "TTFT p50", "TTFT p99",
                                    "mean (ms)", "n");
  for (const auto& t : by_turn) {
    const auto& d = t["ttft_ms"];
    out += absl::StrFormat("%-6d %10.2f %10.2f %10.2f %6d\n", t["turn"].get<int>(),
                           d["median"].get<double>(), d["p99"].get<double>(),
                           d["mean"].get<double>(), d["count"].get<int>());
  }
  return out;
}

}  // namespace griffin::bench
