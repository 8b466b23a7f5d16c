// Prometheus metrics with vLLM's stems under `griffin:` (DESIGN.md), plus the state-slot gauges.
// Thread-safe: observations come from front-end and engine threads, Serialize from the HTTP
// /metrics handler. Every series carries the label model_name.
#ifndef GRIFFIN_SERVER_METRICS_H_
#define GRIFFIN_SERVER_METRICS_H_

#include <memory>
#include <mutex>
#include <string>

#include "engine/engine_core.h"
#include "engine/session_store.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/http_transport.h"

namespace griffin::server {

class Metrics {
 public:
  explicit Metrics(const std::string& model_name);
  // Once the model is loaded.
  void SetModel(int64_t state_bytes_per_sequence, int slots_total);

  // Request ended: finished_reason is "stop", "length", "abort" or "error".
  void RequestFinished(const std::string& finished_reason, int64_t prompt_tokens,
                       int64_t completion_tokens, const engine::RequestTimings& timings);
  void FirstToken(double seconds_since_arrival);
  void InterToken(double seconds);
  // reason: "invalid", "queue_full", "unavailable", "too_large", "unauthenticated".
  void Rejected(const std::string& reason);

  // Per-call objects of the gRPC Generate handler, created and destroyed so far (CAN-4).
  void SetCallObjects(int64_t created, int64_t destroyed);
  // The HTTP transport's connection counters (SEC-1): open now, accepted, refused at accept,
  // closed by each deadline, failed TLS handshakes.
  void SetHttpStats(const HttpTransportStats& stats);

  // Sets the gauges (and the engine's own counters: prefix cache, restores) from `stats` (null
  // before the model is loaded) and `sessions` (null: the server keeps none) and returns the text
  // format.
  std::string Serialize(const engine::EngineStats* stats,
                        const engine::SessionStoreStats* sessions = nullptr);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Labels labels_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_;
  prometheus::Histogram* prefill_;
  prometheus::Histogram* decode_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* slots_used_;
  prometheus::Gauge* slots_total_;
  prometheus::Gauge* state_bytes_;
  prometheus::Gauge* calls_created_;
  prometheus::Gauge* calls_destroyed_;
  prometheus::Gauge* http_open_;
  prometheus::Counter* http_accepted_;
  prometheus::Counter* http_refused_;
  prometheus::Counter* http_header_timeouts_;
  prometheus::Counter* http_body_timeouts_;
  prometheus::Counter* http_idle_timeouts_;
  prometheus::Counter* http_tls_failures_;
  // Issue 15: the prefix cache (vLLM's names: queries and hits count tokens), prompt tokens the
  // engine computed (a cached or shared prefix is not), session resumes and saved sessions.
  prometheus::Counter* cache_queries_;
  prometheus::Counter* cache_hits_;
  prometheus::Counter* cache_hit_requests_;
  prometheus::Counter* cache_host_restores_;
  prometheus::Counter* cache_restore_seconds_;
  prometheus::Counter* cache_insertions_;
  prometheus::Counter* cache_evictions_;
  prometheus::Counter* cache_demotions_;
  prometheus::Gauge* cache_device_bytes_;
  prometheus::Gauge* cache_host_bytes_;
  prometheus::Gauge* cache_device_entries_;
  prometheus::Gauge* cache_host_entries_;
  prometheus::Counter* prompt_tokens_computed_;
  prometheus::Counter* restores_;
  prometheus::Counter* restore_seconds_;
  prometheus::Counter* engine_steps_;
  prometheus::Counter* engine_busy_seconds_;
  prometheus::Counter* engine_backend_seconds_;
  prometheus::Counter* engine_prefill_capped_;
  prometheus::Counter* states_kept_;
  prometheus::Gauge* sessions_;
  prometheus::Gauge* session_bytes_;
  prometheus::Counter* sessions_spilled_;
  prometheus::Counter* sessions_expired_;
  std::mutex mirror_mu_;  // Serialize: mirrored counters move once per increase, whatever thread
  std::mutex http_mu_;    // SetHttpStats runs on any /metrics request
  int64_t http_unauthenticated_ = 0;  // guarded by http_mu_: 401s already counted
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_METRICS_H_
