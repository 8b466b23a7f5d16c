// griffin-bench: a load generator for griffin-server (gRPC or the OpenAI HTTP API) and any
// OpenAI-compatible server, reporting vLLM-defined latency and throughput metrics.
//
//   griffin-bench --protocol http --port 8000 --num_requests 200 --request_rate 4,8,inf
//       --input_len 1024 --output_len 128 --ignore_eos --result_json out.json
//   griffin-bench --protocol http --concurrency 16 --duration 60 --input_len_range 128:2048
//
// Open loop: Poisson arrivals at each --request_rate (req/s; inf = all at once). Closed loop:
// --concurrency workers each send their next request when the last one ends.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/program_info.h"
#include "bench/load_client.h"
#include "bench/serving_metrics.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, protocol, "http", "http (OpenAI /v1/completions, streaming) or grpc");
ABSL_FLAG(std::string, host, "127.0.0.1", "server address");
ABSL_FLAG(int, port, 8000, "server port");
ABSL_FLAG(std::string, model, "",
          "model name sent in OpenAI requests (default: the first of /v1/models)");
ABSL_FLAG(std::string, request_rate, "inf",
          "comma-separated request rates in req/s for open-loop Poisson arrivals; inf = no pacing");
ABSL_FLAG(int, concurrency, 0,
          "closed loop with this many requests in flight (overrides request_rate)");
ABSL_FLAG(int, num_requests, 100, "requests per rate (0 = until --duration)");
ABSL_FLAG(double, duration, 0, "stop sending after this many seconds (0 = no limit)");
ABSL_FLAG(int, warmup_requests, 2, "requests sent one by one before timing, excluded from results");
ABSL_FLAG(int, input_len, 128, "prompt tokens (fixed)");
ABSL_FLAG(std::string, input_len_range, "", "prompt tokens uniform in LO:HI (overrides input_len)");
ABSL_FLAG(int, output_len, 128, "max_tokens per request (fixed)");
ABSL_FLAG(std::string, output_len_range, "", "max_tokens uniform in LO:HI (overrides output_len)");
ABSL_FLAG(std::string, dataset, "", "JSONL file of {\"prompt\": text[, \"max_tokens\": n]} lines");
ABSL_FLAG(std::string, token_id_range, "10:500", "random prompt token ids are drawn from LO:HI");
ABSL_FLAG(bool, ignore_eos, false, "generate exactly max_tokens (no stop at end-of-sequence)");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature sent with each request");
ABSL_FLAG(double, slo_ttft_ms, 0, "goodput: TTFT limit in ms (0 = none)");
ABSL_FLAG(double, slo_tpot_ms, 0, "goodput: TPOT limit in ms (0 = none)");
ABSL_FLAG(double, request_timeout, 600, "seconds before a request counts as failed");
ABSL_FLAG(uint64_t, seed, 0, "workload seed");
ABSL_FLAG(std::string, result_json, "",
          "write the results (with command, server info, host, time) here");
ABSL_FLAG(bool, progress, true, "show a progress bar on stderr");
ABSL_FLAG(int, shared_prefix_len, 0,
          "every random prompt starts with the same N random tokens (a shared system prompt), then "
          "its own --input_len tokens: exercises the server's prefix cache");
ABSL_FLAG(int, multi_turn, 0,
          "T > 0: --num_requests conversations of T turns each (--concurrency of them at a time, "
          "default 1); turn 1 sends --shared_prefix_len + --input_len tokens, every later turn a "
          "new message of --input_len tokens after the previous prompt and its output; reports "
          "TTFT per turn");
ABSL_FLAG(
    std::string, multi_turn_mode, "full",
    "full: every turn sends the whole conversation so far; session: turn 1 opens a session "
    "(session_id \"new\") and later turns send only the new message with its id (griffin's "
    "extension). full over HTTP rebuilds the previous output's ids with /tokenize (its text)");

namespace griffin::bench {
namespace {

absl::StatusOr<std::pair<int, int>> ParseRange(const std::string& text, const char* flag) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  std::pair<int, int> r;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &r.first) ||
      !absl::SimpleAtoi(parts[1], &r.second) || r.first < 1 || r.second < r.first) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be LO:HI with 1 <= LO <= HI"));
  }
  return r;
}

absl::StatusOr<std::vector<double>> ParseRates(const std::string& text) {
  std::vector<double> rates;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    if (part == "inf") {
      rates.push_back(std::numeric_limits<double>::infinity());
      continue;
    }
    double r;
    if (!absl::SimpleAtod(part, &r) || !(r > 0) || !std::isfinite(r)) {
      return absl::InvalidArgumentError("--request_rate values must be positive numbers or inf");
    }
    rates.push_back(r);
  }
  if (rates.empty()) return absl::InvalidArgumentError("--request_rate is empty");
  return rates;
}

absl::StatusOr<std::vector<WorkItem>> MakeWorkload(int count) {
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::vector<WorkItem> items;
  const std::string dataset = absl::GetFlag(FLAGS_dataset);
  std::pair<int, int> out_range{absl::GetFlag(FLAGS_output_len), absl::GetFlag(FLAGS_output_len)};
  if (!absl::GetFlag(FLAGS_output_len_range).empty()) {
    auto r = ParseRange(absl::GetFlag(FLAGS_output_len_range), "output_len_range");
    if (!r.ok()) return r.status();
    out_range = *r;
  }
  if (out_range.first < 1) return absl::InvalidArgumentError("--output_len must be positive");
  auto draw = [&](std::pair<int, int> r) {
    return std::uniform_int_distribution<int>(r.first, r.second)(rng);
  };
  if (!dataset.empty()) {
    std::ifstream in(dataset);
    if (!in) return absl::NotFoundError("--dataset: cannot open the file");
    std::vector<WorkItem> pool;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--dataset line ", pool.size() + 1, " is not {\"prompt\": string, ...}"));
      }
      WorkItem w;
      w.prompt_text = j["prompt"].get<std::string>();
      w.max_tokens = j.contains("max_tokens") && j["max_tokens"].is_number_integer()
                         ? j["max_tokens"].get<int>()
                         : draw(out_range);
      pool.push_back(std::move(w));
    }
    if (pool.empty()) return absl::InvalidArgumentError("--dataset holds no prompts");
    for (int i = 0; i < count; ++i) items.push_back(pool[i % pool.size()]);
    return items;
  }
  std::pair<int, int> in_range{absl::GetFlag(FLAGS_input_len), absl::GetFlag(FLAGS_input_len)};
  if (!absl::GetFlag(FLAGS_input_len_range).empty()) {
    auto r = ParseRange(absl::GetFlag(FLAGS_input_len_range), "input_len_range");
    if (!r.ok()) return r.status();
    in_range = *r;
  }
  if (in_range.first < 1) return absl::InvalidArgumentError("--input_len must be positive");
  auto ids = ParseRange(absl::GetFlag(FLAGS_token_id_range), "token_id_range");
  if (!ids.ok()) return ids.status();
  const int shared_len = absl::GetFlag(FLAGS_shared_prefix_len);
  if (shared_len < 0) return absl::InvalidArgumentError("--shared_prefix_len must be >= 0");
  // Drawn from its own seed: the warm-up workload and every level share the same prefix.
  std::mt19937_64 prefix_rng(absl::GetFlag(FLAGS_seed) ^ 0x5eed5eed5eedull);
  std::vector<int32_t> shared(shared_len);
  for (int32_t& id : shared) {
    id = std::uniform_int_distribution<int>(ids->first, ids->second)(prefix_rng);
  }
  for (int i = 0; i < count; ++i) {
    WorkItem w;
    w.prompt_ids = shared;
    w.prompt_ids.resize(shared.size() + draw(in_range));
    for (size_t k = shared.size(); k < w.prompt_ids.size(); ++k) w.prompt_ids[k] = draw(*ids);
    w.max_tokens = draw(out_range);
    items.push_back(std::move(w));
  }
  return items;
}

class Progress {
 public:
  // `total` 0: bounded by time, not by a count (shows the count and the elapsed seconds).
  Progress(int total, double duration_s, bool enabled)
      : total_(total),
        duration_s_(duration_s),
        enabled_(enabled),
        start_(std::chrono::steady_clock::now()) {}
  void Tick() {
    const int done = ++done_;
    if (!enabled_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (total_ == 0) {
      const double t =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::fprintf(stderr, "\r%d done, %.0f s of %.0f s sending", done, t, duration_s_);
      return;
    }
    const int width = 40;
    const int filled = done * width / total_;
    std::fprintf(stderr, "\r[%s%s] %d/%d", std::string(filled, '#').c_str(),
                 std::string(width - std::min(filled, width), ' ').c_str(), done, total_);
    if (done == total_) std::fprintf(stderr, "\n");
  }
  ~Progress() {
    if (enabled_ && total_ == 0 && done_ > 0) std::fprintf(stderr, "\n");
  }

 private:
  int total_;
  double duration_s_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<int> done_{0};
  std::mutex mu_;
};

// Runs one load level of at most `limit` requests (0: until `duration_s`), cycling through
// `items`; returns every sent request's outcome (times relative to the level's start).
std::vector<RequestOutcome> RunLevel(LoadClient& client, const std::vector<WorkItem>& items,
                                     size_t limit, double rate, int concurrency, double duration_s,
                                     uint64_t seed) {
  std::vector<RequestOutcome> outcomes;
  std::mutex outcomes_mu;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto expired = [&] { return duration_s > 0 && elapsed() >= duration_s; };
  auto more = [&](size_t i) { return (limit == 0 || i < limit) && !expired(); };
  Progress progress(static_cast<int>(limit), duration_s, absl::GetFlag(FLAGS_progress));
  auto run_one = [&](size_t i) {
    RequestOutcome o = client.Send(items[i % items.size()], start);
    {
      std::lock_guard<std::mutex> lock(outcomes_mu);
      outcomes.push_back(std::move(o));
    }
    progress.Tick();
  };
  if (concurrency > 0) {
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < concurrency; ++w) {
      workers.emplace_back([&] {
        for (size_t i = next++; more(i); i = next++) run_one(i);
      });
    }
    for (auto& t : workers) t.join();
  } else {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
    std::vector<std::thread> inflight;
    double next_send = 0;
    for (size_t i = 0; more(i); ++i) {
      if (!std::isinf(rate)) {
        next_send += gap(rng);
        const double wait = next_send - elapsed();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        if (expired()) break;
      }
      inflight.emplace_back(run_one, i);
    }
    for (auto& t : inflight) t.join();
  }
  return outcomes;
}

// --multi_turn: `conversations` conversations of `turns` turns, `concurrency` at a time; each
// conversation's turn k + 1 starts when its turn k ended. Outcomes carry their turn index.
absl::StatusOr<std::vector<RequestOutcome>> RunConversations(LoadClient& client,
                                                             const std::vector<WorkItem>& firsts,
                                                             int turns, bool session_mode,
                                                             int concurrency, uint64_t seed) {
  auto ids = ParseRange(absl::GetFlag(FLAGS_token_id_range), "token_id_range");
  if (!ids.ok()) return ids.status();
  std::vector<RequestOutcome> outcomes;
  std::mutex mu;
  absl::Status failure;
  const auto start = std::chrono::steady_clock::now();
  Progress progress(static_cast<int>(firsts.size()) * turns, 0, absl::GetFlag(FLAGS_progress));
  std::atomic<size_t> next{0};
  auto converse = [&](size_t c) {
    std::mt19937_64 rng(seed + c);
    std::vector<int32_t> history;  // full mode: the conversation so far
    std::string session;
    WorkItem item = firsts[c];
    const size_t message_len = firsts[c].prompt_ids.size() - absl::GetFlag(FLAGS_shared_prefix_len);
    if (session_mode) item.session_id = "new";
    for (int t = 1; t <= turns; ++t) {
      if (t > 1) {
        std::vector<int32_t> message(std::max<size_t>(message_len, 1));
        for (int32_t& id : message) {
          id = std::uniform_int_distribution<int>(ids->first, ids->second)(rng);
        }
        if (session_mode) {
          item.prompt_ids = message;
          item.session_id = session;
        } else {
          item.prompt_ids = history;
          item.prompt_ids.insert(item.prompt_ids.end(), message.begin(), message.end());
        }
      }
      RequestOutcome o = client.Send(item, start);
      o.turn = t;
      const bool ok = o.ok;
      std::vector<int32_t> output = o.output_ids;
      if (ok && !session_mode && output.empty()) {
        absl::StatusOr<std::vector<int32_t>> tokens = client.Tokenize(o.output_text);
        if (!tokens.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          failure = tokens.status();
        } else {
          output = *tokens;
        }
      }
      if (ok && session_mode && o.session_id.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        failure = absl::FailedPreconditionError(
            "--multi_turn_mode session: the server returned no session_id (not griffin-server?)");
      }
      session = o.session_id;
      {
        std::lock_guard<std::mutex> lock(mu);
        outcomes.push_back(std::move(o));
      }
      progress.Tick();
      if (!ok) return;  // a failed turn ends its conversation
      history = item.prompt_ids;
      history.insert(history.end(), output.begin(), output.end());
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < std::max(concurrency, 1); ++w) {
    workers.emplace_back([&] {
      for (size_t c = next++; c < firsts.size(); c = next++) converse(c);
    });
  }
  for (auto& t : workers) t.join();
  if (!failure.ok()) return failure;
  return outcomes;
}

std::string Hostname() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

int Main(int argc, char** argv) {
  ParseProgramFlags(argc, argv, "griffin-bench", "bench/griffin_bench.cc",
                    "load-tests griffin-server or any OpenAI-compatible server.\n\n"
                    "  griffin-bench [--protocol http|grpc] [--port 8000] [flags]");
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "griffin-bench: %s\n", s.ToString().c_str());
    return 1;
  };
  auto rates = ParseRates(absl::GetFlag(FLAGS_request_rate));
  if (!rates.ok()) return fail(rates.status());
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  if (concurrency < 0) return fail(absl::InvalidArgumentError("--concurrency must be >= 0"));
  int num_requests = absl::GetFlag(FLAGS_num_requests);
  const double duration = absl::GetFlag(FLAGS_duration);
  if (num_requests < 0 || duration < 0) {
    return fail(absl::InvalidArgumentError("--num_requests and --duration must be >= 0"));
  }
  if (num_requests == 0 && duration == 0) {
    return fail(absl::InvalidArgumentError("give --num_requests or --duration"));
  }
  if (num_requests == 0 && concurrency == 0 && rates.ok()) {
    for (double rate : *rates) {
      if (std::isinf(rate)) {
        return fail(absl::InvalidArgumentError(
            "--request_rate inf sends every request at once: give --num_requests"));
      }
    }
  }

  ClientOptions options{.host = absl::GetFlag(FLAGS_host),
                        .port = absl::GetFlag(FLAGS_port),
                        .model = absl::GetFlag(FLAGS_model),
                        .ignore_eos = absl::GetFlag(FLAGS_ignore_eos),
                        .temperature = absl::GetFlag(FLAGS_temperature),
                        .timeout_s = absl::GetFlag(FLAGS_request_timeout)};
  auto client = MakeClient(absl::GetFlag(FLAGS_protocol), options);
  if (!client.ok()) return fail(client.status());
  auto info = (*client)->ServerInfo();
  if (!info.ok()) return fail(info.status());

  const int warmup = absl::GetFlag(FLAGS_warmup_requests);
  auto warmup_items = MakeWorkload(std::max(warmup, 0));
  if (!warmup_items.ok()) return fail(warmup_items.status());
  for (const WorkItem& w : *warmup_items) {
    RequestOutcome o = (*client)->Send(w, std::chrono::steady_clock::now());
    if (!o.ok)
      return fail(absl::UnavailableError(absl::StrCat("warm-up request failed: ", o.status)));
  }

  const ServiceLevel slo{.ttft_s = absl::GetFlag(FLAGS_slo_ttft_ms) / 1e3,
                         .tpot_s = absl::GetFlag(FLAGS_slo_tpot_ms) / 1e3};
  nlohmann::json levels = nlohmann::json::array();
  int total_failed = 0;
  const int turns = absl::GetFlag(FLAGS_multi_turn);
  if (turns > 0) {
    const std::string mode = absl::GetFlag(FLAGS_multi_turn_mode);
    if (mode != "full" && mode != "session") {
      return fail(absl::InvalidArgumentError("--multi_turn_mode must be full or session"));
    }
    if (num_requests < 1 || !absl::GetFlag(FLAGS_dataset).empty()) {
      return fail(absl::InvalidArgumentError(
          "--multi_turn needs --num_requests conversations and random prompts (no --dataset)"));
    }
    auto firsts = MakeWorkload(num_requests);
    if (!firsts.ok()) return fail(firsts.status());
    auto outcomes = RunConversations(**client, *firsts, turns, mode == "session", concurrency,
                                     absl::GetFlag(FLAGS_seed) + 1);
    if (!outcomes.ok()) return fail(outcomes.status());
    const ServingSummary summary = Summarize(*outcomes, slo);
    total_failed += summary.failed;
    const nlohmann::json by_turn = TtftByTurn(*outcomes);
    std::printf("============ %d conversations x %d turns (%s) ============\n", num_requests, turns,
                mode.c_str());
    std::printf("%s", FormatTable(summary).c_str());
    std::printf("%s", FormatTtftByTurn(by_turn).c_str());
    nlohmann::json level = ToJson(summary);
    level["multi_turn"] = turns;
    level["multi_turn_mode"] = mode;
    level["concurrency"] = std::max(concurrency, 1);
    level["ttft_by_turn"] = by_turn;
    levels.push_back(std::move(level));
  }
  const std::vector<double> level_rates =
      concurrency > 0 ? std::vector<double>{std::numeric_limits<double>::infinity()} : *rates;
  for (double rate : turns > 0 ? std::vector<double>{} : level_rates) {
    // Bounded by time (--num_requests 0): a pool of distinct prompts the level cycles through,
    // sized to what the rate sends in --duration (mean + 6 sigma), at most 4096 (no need to hold a
    // million 2048-token prompts in memory).
    int pool = num_requests;
    if (pool == 0) {
      const double expected = std::isinf(rate) ? 4096.0 : rate * duration;
      pool = static_cast<int>(
          std::min(4096.0, std::ceil(expected + 6.0 * std::sqrt(expected) + 16.0)));
    }
    auto items = MakeWorkload(pool);
    if (!items.ok()) return fail(items.status());
    const std::vector<RequestOutcome> outcomes =
        RunLevel(**client, *items, static_cast<size_t>(num_requests), rate, concurrency, duration,
                 absl::GetFlag(FLAGS_seed) + 1);
    const ServingSummary summary = Summarize(outcomes, slo);
    total_failed += summary.failed;
    std::printf("============ %s ============\n",
                concurrency > 0    ? absl::StrCat("concurrency ", concurrency).c_str()
                : std::isinf(rate) ? "request rate inf"
                                   : absl::StrCat("request rate ", rate, " req/s").c_str());
    std::printf("%s", FormatTable(summary).c_str());
    nlohmann::json level = ToJson(summary);
    level["request_rate"] = std::isinf(rate) ? nlohmann::json("inf") : nlohmann::json(rate);
    level["concurrency"] = concurrency;
    levels.push_back(std::move(level));
  }

  const std::string path = absl::GetFlag(FLAGS_result_json);
  if (!path.empty()) {
    std::vector<std::string> args(argv, argv + argc);
    nlohmann::json out = {
        {"command", absl::StrJoin(args, " ")},
        {"griffin_bench_version", VersionString("griffin-bench")},
        {"host", Hostname()},
        {"time", absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())},
        {"protocol", absl::GetFlag(FLAGS_protocol)},
        {"server_info", *info},
        {"slo",
         {{"ttft_ms", absl::GetFlag(FLAGS_slo_ttft_ms)},
          {"tpot_ms", absl::GetFlag(FLAGS_slo_tpot_ms)}}},
        {"levels", levels}};
    std::ofstream f(path);
    f << out.dump(2) << "\n";
    if (!f) return fail(absl::InternalError("cannot write --result_json"));
  }
  return total_failed == 0 ? 0 : 3;
}

}  // namespace
}  // namespace griffin::bench

int main(int argc, char** argv) { return griffin::bench::Main(argc, argv); }
