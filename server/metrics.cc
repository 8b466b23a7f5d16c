#include "server/metrics.h"

#include <sstream>

#include "prometheus/text_serializer.h"

namespace griffin::server {
namespace {

// vLLM's buckets.
const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const prometheus::Histogram::BucketBoundaries kItlBuckets = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

// A counter that mirrors a running total kept elsewhere (the engine's stats): it moves up to it.
// The caller holds mirror_mu_ (two /metrics requests at once would both add the same delta).
void Mirror(prometheus::Counter* counter, double total) {
  const double delta = total - counter->Value();
  if (delta > 0) counter->Increment(delta);
}

}  // namespace

Metrics::Metrics(const std::string& model_name)
    : registry_(std::make_shared<prometheus::Registry>()), labels_{{"model_name", model_name}} {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto& r = *registry_;
  success_ = &BuildCounter()
                  .Name("griffin_request_success_total")
                  .Help("Finished requests by finish reason.")
                  .Register(r);
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    auto labels = labels_;
    labels["finished_reason"] = reason;
    success_->Add(labels);
  }
  rejected_ = &BuildCounter()
                   .Name("griffin_request_rejected_total")
                   .Help("Requests rejected before enqueue, by reason.")
                   .Register(r);
  for (const char* reason :
       {"invalid", "queue_full", "unavailable", "too_large", "unauthenticated"}) {
    auto labels = labels_;
    labels["reason"] = reason;
    rejected_->Add(labels);
  }
  ttft_ = &BuildHistogram()
               .Name("griffin_time_to_first_token_seconds")
               .Help("Time from arrival to the first generated token.")
               .Register(r)
               .Add(labels_, kTtftBuckets);
  itl_ = &BuildHistogram()
              .Name("griffin_inter_token_latency_seconds")
              .Help("Time between consecutive generated tokens.")
              .Register(r)
              .Add(labels_, kItlBuckets);
  e2e_ = &BuildHistogram()
              .Name("griffin_e2e_request_latency_seconds")
              .Help("Time from arrival to the end of a request.")
              .Register(r)
              .Add(labels_, kLatencyBuckets);
  queue_ = &BuildHistogram()
                .Name("griffin_request_queue_time_seconds")
                .Help("Time a request waited for a state slot.")
                .Register(r)
                .Add(labels_, kLatencyBuckets);
  prefill_ = &BuildHistogram()
                  .Name("griffin_request_prefill_time_seconds")
                  .Help("Time from admission to the first token.")
                  .Register(r)
                  .Add(labels_, kLatencyBuckets);
  decode_ = &BuildHistogram()
                 .Name("griffin_request_decode_time_seconds")
                 .Help("Time from the first token to the end.")
                 .Register(r)
                 .Add(labels_, kLatencyBuckets);
  prompt_tokens_ = &BuildCounter()
                        .Name("griffin_prompt_tokens_total")
                        .Help("Prompt tokens processed.")
                        .Register(r)
                        .Add(labels_);
  generation_tokens_ = &BuildCounter()
                            .Name("griffin_generation_tokens_total")
                            .Help("Tokens generated.")
                            .Register(r)
                            .Add(labels_);
  running_ = &BuildGauge()
                  .Name("griffin_num_requests_running")
                  .Help("Requests holding a state slot.")
                  .Register(r)
                  .Add(labels_);
  waiting_ = &BuildGauge()
                  .Name("griffin_num_requests_waiting")
                  .Help("Requests queued for a state slot.")
                  .Register(r)
                  .Add(labels_);
  slots_used_ = &BuildGauge()
                     .Name("griffin_state_slots_used")
                     .Help("State slots held by running requests.")
                     .Register(r)
                     .Add(labels_);
  slots_total_ = &BuildGauge()
                      .Name("griffin_state_slots_capacity")
                      .Help("State slots allocated.")
                      .Register(r)
                      .Add(labels_);
  state_bytes_ = &BuildGauge()
                      .Name("griffin_state_bytes_per_sequence")
                      .Help("Bytes of state one sequence holds (fixed).")
                      .Register(r)
                      .Add(labels_);
  calls_created_ = &BuildGauge()
                        .Name("griffin_grpc_generate_calls_started")
                        .Help("gRPC Generate handler objects created (CAN-4).")
                        .Register(r)
                        .Add(labels_);
  calls_destroyed_ = &BuildGauge()
                          .Name("griffin_grpc_generate_calls_freed")
                          .Help("gRPC Generate handler objects destroyed (CAN-4).")
                          .Register(r)
                          .Add(labels_);
  http_open_ = &BuildGauge()
                    .Name("griffin_http_connections")
                    .Help("HTTP connections open now.")
                    .Register(r)
                    .Add(labels_);
  http_accepted_ = &BuildCounter()
                        .Name("griffin_http_connections_accepted_total")
                        .Help("HTTP connections accepted.")
                        .Register(r)
                        .Add(labels_);
  http_refused_ = &BuildCounter()
                       .Name("griffin_http_connections_refused_total")
                       .Help("HTTP connections closed at accept: over --max_connections.")
                       .Register(r)
                       .Add(labels_);
  auto& timeouts = BuildCounter()
                       .Name("griffin_http_timeouts_total")
                       .Help(
                           "HTTP connections closed by a deadline, by phase (header: "
                           "--http_header_timeout, body: --http_body_timeout, idle: "
                           "--http_idle_timeout while idle or writing).")
                       .Register(r);
  auto phase = [&](const char* name) {
    auto labels = labels_;
    labels["phase"] = name;
    return &timeouts.Add(labels);
  };
  http_header_timeouts_ = phase("header");
  http_body_timeouts_ = phase("body");
  http_idle_timeouts_ = phase("idle");
  http_tls_failures_ = &BuildCounter()
                            .Name("griffin_http_tls_handshake_failures_total")
                            .Help(
                                "HTTPS handshakes that failed (plaintext, no client "
                                "certificate, bad certificate, timeout).")
                            .Register(r)
                            .Add(labels_);
  auto counter = [&](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Register(r).Add(labels_);
  };
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(r).Add(labels_);
  };
  cache_queries_ =
      counter("griffin_prefix_cache_queries_total",
              "Prompt tokens looked up in the prefix cache (vLLM: queries in tokens).");
  cache_hits_ = counter("griffin_prefix_cache_hits_total",
                        "Prompt tokens restored from the prefix cache instead of computed.");
  cache_hit_requests_ =
      counter("griffin_prefix_cache_hit_requests_total", "Lookups that restored a cached prefix.");
  cache_insertions_ =
      counter("griffin_prefix_cache_insertions_total", "States recorded in the prefix cache.");
  cache_evictions_ = counter("griffin_prefix_cache_evictions_total",
                             "Prefix-cache entries dropped for room (LRU).");
  cache_host_restores_ =
      counter("griffin_prefix_cache_host_restores_total",
              "Prefix cache hits restored from the host tier (the others copy a device slot).");
  cache_restore_seconds_ =
      counter("griffin_prefix_cache_restore_seconds_total",
              "Time spent copying or restoring cached prefixes into slots (per hit: divide by "
              "griffin_prefix_cache_hit_requests_total).");
  cache_demotions_ = counter("griffin_prefix_cache_demotions_total",
                             "Prefix-cache entries moved from the device tier to the host tier.");
  auto& cache_bytes = BuildGauge()
                          .Name("griffin_prefix_cache_bytes")
                          .Help("Snapshot bytes the prefix cache holds, per tier.")
                          .Register(r);
  cache_device_bytes_ =
      &cache_bytes.Add({{"model_name", labels_["model_name"]}, {"tier", "device"}});
  cache_host_bytes_ = &cache_bytes.Add({{"model_name", labels_["model_name"]}, {"tier", "host"}});
  auto& cache_entries = BuildGauge()
                            .Name("griffin_prefix_cache_entries")
                            .Help("States the prefix cache holds, per tier.")
                            .Register(r);
  cache_device_entries_ =
      &cache_entries.Add({{"model_name", labels_["model_name"]}, {"tier", "device"}});
  cache_host_entries_ =
      &cache_entries.Add({{"model_name", labels_["model_name"]}, {"tier", "host"}});
  prompt_tokens_computed_ =
      counter("griffin_prompt_tokens_computed_total",
              "Prompt tokens the engine prefilled: not those restored from the prefix cache or a "
              "session, nor those of n > 1 choices sharing one prefill.");
  restores_ =
      counter("griffin_state_restores_total", "Sequences resumed from a saved state (sessions).");
  engine_steps_ = counter("griffin_engine_steps_total", "Engine steps (forward passes) run.");
  engine_busy_seconds_ = counter(
      "griffin_engine_busy_seconds_total",
      "The engine thread's time in steps (not idle): planning, the forward pass, host sampling "
      "and stop checks, handing outputs on.");
  engine_backend_seconds_ = counter(
      "griffin_engine_backend_seconds_total",
      "The forward passes within griffin_engine_busy_seconds_total (on a GPU: launches and the "
      "wait for the device); the difference is the host's work per step.");
  engine_prefill_capped_ = counter(
      "griffin_engine_prefill_capped_steps_total",
      "Steps whose prompt tokens --step_time_target_ms held below what --token_budget allowed.");
  restore_seconds_ = counter("griffin_state_restore_seconds_total",
                             "Time spent restoring saved states into slots (sessions).");
  states_kept_ =
      counter("griffin_states_kept_total", "Final states returned for sessions to keep.");
  sessions_ = gauge("griffin_sessions", "Saved sessions, in memory and in --session_dir.");
  session_bytes_ = gauge("griffin_session_bytes", "Host memory the saved sessions' states take.");
  sessions_spilled_ = counter("griffin_sessions_spilled_total",
                              "Sessions written to --session_dir to make room in memory.");
  sessions_expired_ =
      counter("griffin_sessions_expired_total", "Sessions dropped after --session_ttl unused.");
}

namespace {
// Brings a counter up to a running total kept elsewhere.
void SyncCounter(prometheus::Counter* counter, int64_t total) {
  const double delta = static_cast<double>(total) - counter->Value();
  if (delta > 0) counter->Increment(delta);
}
}  // namespace

void Metrics::SetHttpStats(const HttpTransportStats& s) {
  std::lock_guard<std::mutex> lock(http_mu_);
  const int64_t unauthenticated = s.unauthenticated.load(std::memory_order_relaxed);
  if (unauthenticated > http_unauthenticated_) {
    auto labels = labels_;
    labels["reason"] = "unauthenticated";
    rejected_->Add(labels).Increment(static_cast<double>(unauthenticated - http_unauthenticated_));
    http_unauthenticated_ = unauthenticated;
  }
  http_open_->Set(static_cast<double>(s.open.load(std::memory_order_relaxed)));
  SyncCounter(http_accepted_, s.accepted.load(std::memory_order_relaxed));
  SyncCounter(http_refused_, s.refused.load(std::memory_order_relaxed));
  SyncCounter(http_header_timeouts_, s.header_timeouts.load(std::memory_order_relaxed));
  SyncCounter(http_body_timeouts_, s.body_timeouts.load(std::memory_order_relaxed));
  SyncCounter(http_idle_timeouts_, s.idle_timeouts.load(std::memory_order_relaxed));
  SyncCounter(http_tls_failures_, s.tls_failures.load(std::memory_order_relaxed));
}

void Metrics::SetModel(int64_t state_bytes_per_sequence, int slots_total) {
  slots_total_->Set(slots_total);
  state_bytes_->Set(static_cast<double>(state_bytes_per_sequence));
}

void Metrics::RequestFinished(const std::string& finished_reason, int64_t prompt_tokens,
                              int64_t completion_tokens, const engine::RequestTimings& t) {
  auto labels = labels_;
  labels["finished_reason"] = finished_reason;
  success_->Add(labels).Increment();
  prompt_tokens_->Increment(static_cast<double>(prompt_tokens));
  generation_tokens_->Increment(static_cast<double>(completion_tokens));
  e2e_->Observe(absl::ToDoubleSeconds(t.finished - t.arrival));
  queue_->Observe(absl::ToDoubleSeconds(t.scheduled - t.arrival));
  prefill_->Observe(absl::ToDoubleSeconds(t.first_token - t.scheduled));
  decode_->Observe(absl::ToDoubleSeconds(t.finished - t.first_token));
}

void Metrics::FirstToken(double seconds) { ttft_->Observe(seconds); }
void Metrics::InterToken(double seconds) { itl_->Observe(seconds); }

void Metrics::Rejected(const std::string& reason) {
  auto labels = labels_;
  labels["reason"] = reason;
  rejected_->Add(labels).Increment();
}

void Metrics::SetCallObjects(int64_t created, int64_t destroyed) {
  calls_created_->Set(static_cast<double>(created));
  calls_destroyed_->Set(static_cast<double>(destroyed));
}

std::string Metrics::Serialize(const engine::EngineStats* stats,
                               const engine::SessionStoreStats* sessions) {
  std::lock_guard<std::mutex> lock(mirror_mu_);
  if (stats != nullptr) {
    running_->Set(stats->running);
    waiting_->Set(stats->waiting);
    slots_used_->Set(stats->slots_used);
    slots_total_->Set(stats->slots_total);
    const engine::PrefixCacheStats& c = stats->prefix_cache;
    Mirror(cache_queries_, static_cast<double>(c.query_tokens));
    Mirror(cache_hits_, static_cast<double>(c.hit_tokens));
    Mirror(cache_hit_requests_, static_cast<double>(c.hits));
    Mirror(cache_insertions_, static_cast<double>(c.insertions));
    Mirror(cache_evictions_, static_cast<double>(c.evictions));
    Mirror(cache_demotions_, static_cast<double>(c.demotions));
    Mirror(cache_host_restores_, static_cast<double>(c.host_restores));
    Mirror(cache_restore_seconds_, absl::ToDoubleSeconds(c.restore_time));
    cache_device_bytes_->Set(static_cast<double>(c.device_bytes));
    cache_host_bytes_->Set(static_cast<double>(c.host_bytes));
    cache_device_entries_->Set(c.device_entries);
    cache_host_entries_->Set(c.host_entries);
    Mirror(prompt_tokens_computed_, static_cast<double>(stats->prompt_tokens_computed));
    Mirror(restores_, static_cast<double>(stats->states_restored));
    Mirror(restore_seconds_, absl::ToDoubleSeconds(stats->restore_time));
    Mirror(states_kept_, static_cast<double>(stats->states_kept));
    Mirror(engine_steps_, static_cast<double>(stats->steps));
    Mirror(engine_busy_seconds_, absl::ToDoubleSeconds(stats->busy_time));
    Mirror(engine_backend_seconds_, absl::ToDoubleSeconds(stats->backend_time));
    Mirror(engine_prefill_capped_, static_cast<double>(stats->prefill_capped_steps));
  }
  if (sessions != nullptr) {
    sessions_->Set(sessions->sessions);
    session_bytes_->Set(static_cast<double>(sessions->memory_bytes));
    Mirror(sessions_spilled_, static_cast<double>(sessions->spilled));
    Mirror(sessions_expired_, static_cast<double>(sessions->expired));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace griffin::server
