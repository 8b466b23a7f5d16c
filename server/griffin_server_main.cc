// griffin-server: gRPC (griffin.v1.Generation, grpc.health.v1, reflection) and OpenAI-compatible
// HTTP over the continuous-batching engine. See server/README.md for flags and examples.
//
// Lifecycle: load → warm-up step → ready. SIGTERM or SIGINT drains: readiness goes false, both
// listeners stop accepting, idle HTTP connections close, in-flight requests finish within
// --drain_timeout (then they end UNAVAILABLE), and the process exits 0 within drain_timeout + 1 s
// whatever the clients do. SIGHUP reloads --api_key_file. Startup errors exit 1.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "base/program_info.h"
#include "base/utf8.h"
#include "engine/backend_factory.h"
#include "engine/engine_core.h"
#include "engine/fault_injecting_backend.h"
#include "engine/griffin_model.h"
#include "engine/session_store.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "loader/checkpoint.h"
#include "loader/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/generation.h"
#include "server/grpc_service.h"
#include "server/http_server.h"
#include "server/memory_release.h"
#include "server/metrics.h"
#include "server/reflection_v1.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model, "",
          "model folder (Hugging Face RecurrentGemma layout); default: models/demo if it exists, "
          "else the random-weight test fixture tests/data/griffin");
ABSL_FLAG(std::string, model_name, "", "name clients use in `model`; default: the folder's name");
ABSL_FLAG(std::string, backend, "auto",
          "cpu, cuda, or auto (cuda when a GPU is present); or simulated: computes nothing, each "
          "step sleeps for --simulated_step_us and returns pseudo-random tokens (for measuring "
          "the server and the scheduler without a GPU; engine/simulated_backend.h)");
ABSL_FLAG(std::string, simulated_step_us, "1950,7.4,8.5",
          "--backend simulated: a step's time as BASE,PER_DECODE_ROW,PER_PROMPT_TOKEN "
          "microseconds (the default: recurrentgemma-2b in bf16 on one H200)");
ABSL_FLAG(std::string, quantization, "none",
          "none, or fp8: projection weights in FP8 E4M3 with one scale per output row, "
          "quantized at load (the CUDA backend reads FP8 in its kernels; the CPU backend "
          "emulates the same numbers, slowly)");
ABSL_FLAG(bool, fp8_activations, true,
          "--quantization fp8: passes of two or more tokens (prefill, decode batches) quantize "
          "their activations to FP8 per token and run W8A8 GEMMs on the FP8 tensor cores (the CPU "
          "backend emulates W8A8 on every pass); false keeps activations in bf16 (W8A16: closer "
          "to bf16, slower on the GPU above 8 tokens a pass; bench/RESULTS.md)");
ABSL_FLAG(int, cudnn_attention_min_tokens,
          griffin::engine::BackendOptions{}.cudnn_attention_min_tokens,
          "CUDA backend: fresh prefill passes (every prompt from position 0) of at least this many "
          "tokens run their attention through cuDNN's fused attention where cuDNN loads at run "
          "time (0: the project's kernel always; from 512 tokens it measured faster: "
          "bench/RESULTS.md, session 31)");
ABSL_FLAG(
    std::string, load_format, "safetensors",
    "safetensors (the model folder's weights) or dummy (random bf16 weights made on the GPU "
    "for config.json's shapes, as vLLM's --load-format dummy: benchmarks without a checkpoint)");
ABSL_FLAG(bool, device_sampling, true,
          "sample on the GPU when the backend can and a request needs no host-only feature "
          "(logprobs, min_tokens, presence/frequency penalty)");
ABSL_FLAG(std::string, host, "127.0.0.1", "bind address for both ports (loopback by default)");
ABSL_FLAG(int, http_port, 8000, "HTTP port (OpenAI API, health, metrics)");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port");
ABSL_FLAG(int, slots, 0,
          "state slots (concurrent sequences); 0: from --state_memory_mib, else on the GPU from "
          "--gpu_memory_utilization");
ABSL_FLAG(int64_t, state_memory_mib, 0,
          "fixed memory budget for sequence state when --slots=0; 0: 4096 MiB on the CPU, "
          "--gpu_memory_utilization on the GPU");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "share of the GPU's memory this process may hold when the slots come from it (--slots=0 "
          "and --state_memory_mib=0): the slots get what the weights and workspaces leave, so "
          "--quantization fp8's smaller weights become more slots");
ABSL_FLAG(int, max_slots, 256, "upper bound on slots derived from a memory budget");
ABSL_FLAG(int64_t, token_budget, 0,
          "tokens per engine step (decodes + prefill chunks); 0: 4096 on the GPU, 512 on the CPU");
ABSL_FLAG(int, max_batch, 256, "sequences per engine step");
ABSL_FLAG(double, step_time_target_ms, 0,
          "while sequences decode, cap each step's prompt tokens so the step is predicted to take "
          "at most this long (the cost of a prompt token is learned from the steps' measured "
          "times): a bound on time per output token while prompts prefill; 0: --token_budget "
          "alone");
ABSL_FLAG(int, max_queue, 256, "queued requests before RESOURCE_EXHAUSTED / 429");
ABSL_FLAG(int64_t, max_queued_prompt_tokens, int64_t{1} << 22,
          "prompt tokens waiting for a slot before RESOURCE_EXHAUSTED / 429");
ABSL_FLAG(double, queue_timeout, 0.0,
          "seconds a request may wait for a slot before DEADLINE_EXCEEDED / 504; 0 = no limit");
ABSL_FLAG(double, request_timeout, 0.0,
          "seconds a request may take in all (HTTP and gRPC; a shorter gRPC deadline wins); 0 = no "
          "limit");
ABSL_FLAG(int64_t, max_prompt_tokens, 8192,
          "longest prompt accepted (policy: state is fixed-size)");
ABSL_FLAG(int64_t, max_output_tokens, 4096, "largest max_tokens accepted");
ABSL_FLAG(int64_t, default_max_tokens, 256, "max_tokens when a request does not say");
ABSL_FLAG(int64_t, max_n, 8, "largest n (choices per HTTP request)");
ABSL_FLAG(int64_t, max_top_logprobs, 20,
          "largest top_logprobs / logprobs / prompt_logprobs (alternatives per position)");
ABSL_FLAG(int64_t, max_logit_bias, 300, "most logit_bias entries in one request");
ABSL_FLAG(int64_t, max_prompts_per_request, 64,
          "most prompts in one /v1/completions prompt list (each gets n choices)");
ABSL_FLAG(double, drain_timeout, 30.0, "seconds in-flight requests get to finish after SIGTERM");
ABSL_FLAG(int, http_threads, 0,
          "HTTP I/O threads (every connection is served by them; none is held by a connection); "
          "0: the number of CPUs, between 2 and 8");
ABSL_FLAG(int, max_message_bytes, 4 << 20,
          "largest gRPC message / HTTP request body accepted (a compressed body: after decoding)");
ABSL_FLAG(int64_t, max_prompt_bytes, 0,
          "longest text accepted before tokenizing (prompt, chat messages, /tokenize, gRPC "
          "Tokenize); 0: 64 x --max_prompt_tokens");
ABSL_FLAG(int64_t, max_logprob_entries, int64_t{1} << 20,
          "most log-probabilities one request may ask for: n x max_tokens x (1 + top_logprobs)");
ABSL_FLAG(int, max_connections, 4096, "HTTP connections open at once; more are closed at accept");
ABSL_FLAG(double, http_header_timeout, 10.0,
          "seconds a request's line and headers may take from their first byte");
ABSL_FLAG(double, http_body_timeout, 60.0, "seconds a request body may take to arrive");
ABSL_FLAG(double, http_idle_timeout, 75.0,
          "seconds an idle keep-alive connection stays open, and a client may take no response "
          "data before it is closed (its request cancelled)");
ABSL_FLAG(int, http_max_header_bytes, 16 << 10, "largest HTTP request line + headers (431 above)");
ABSL_FLAG(int, http_max_header_fields, 100, "most HTTP header fields in a request (431 above)");
ABSL_FLAG(std::string, allowed_origins, "",
          "comma-separated origins (scheme://host[:port], or *) browsers may call from (CORS); "
          "empty: none, and requests carrying another Origin are refused 403");
ABSL_FLAG(std::string, api_key_file, "",
          "file of API keys, one per line, optionally followed by a tenant name; reloaded on "
          "SIGHUP. GRIFFIN_API_KEY adds one key. With any key, every call needs one (HTTP: "
          "Authorization: Bearer KEY; gRPC: authorization metadata) except health, ready and "
          "metrics");
ABSL_FLAG(bool, protect_metrics, false, "require an API key for /metrics too");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: both ports serve TLS only (with --tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: clients must present a certificate they signed (mutual TLS)");
ABSL_FLAG(double, debug_load_delay, 0.0,
          "test hook: seconds to wait, listening but not ready, before loading the model");
ABSL_FLAG(int64_t, debug_fail_device_after_steps, -1,
          "test hook: from this engine step on (the warm-up is step 0), every step fails as on a "
          "sticky device error; -1 = off");
ABSL_FLAG(std::string, log_format, "text", "text or json");
ABSL_FLAG(
    bool, prefix_cache, true,
    "exact prefix-state cache: a request restores the longest cached prefix of its tokens and "
    "prefills only the rest. On by default when memory allows: the backend can snapshot "
    "slots and --prefix_cache_memory_mib or --prefix_cache_host_mib holds at least one "
    "state; --noprefix_cache turns it off");
ABSL_FLAG(int64_t, prefix_cache_memory_mib, 64,
          "device tier of the prefix cache: the most state memory (in whole slots: memory / state "
          "bytes per sequence, at most --slots) it may hold in idle slots. It takes no memory of "
          "its own and never lowers concurrency: a request that finds no free slot takes a cached "
          "one back (its entry moves to the host tier), so a full cache never fails an admission");
ABSL_FLAG(int64_t, prefix_cache_host_mib, 1024,
          "host tier of the prefix cache: snapshots in host memory (LRU across both tiers); a "
          "request restores from it with one copy");
ABSL_FLAG(int64_t, prefix_cache_block, 256,
          "the cache snapshots a prompt every this many tokens while it is prefilled (and at the "
          "end of every finished sequence)");
ABSL_FLAG(double, session_ttl, 3600.0,
          "seconds a session (session_id) may stay unused before it expires (memory and file)");
ABSL_FLAG(int64_t, session_memory_mib, 1024,
          "host memory for saved sessions; past it the least recently used idle one goes to "
          "--session_dir (or is dropped without one). 0: no sessions (session_id is refused)");
ABSL_FLAG(std::string, session_dir, "",
          "directory for session files: written when a session is evicted from memory and at "
          "drain (SIGTERM), read back on demand, so conversations survive a restart; empty: "
          "sessions live in memory only");

namespace griffin {
namespace {

bool IsModelDir(const std::string& dir) {
  struct stat st;
  return stat((dir + "/config.json").c_str(), &st) == 0;
}

std::string DefaultModel() {
  for (const std::string& dir :
       {std::string("models/demo"), std::string(GRIFFIN_SOURCE_DIR "/models/demo"),
        std::string("tests/data/griffin"), std::string(GRIFFIN_SOURCE_DIR "/tests/data/griffin")}) {
    if (IsModelDir(dir)) return dir;
  }
  return "models/demo";
}

std::string BaseName(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

// A model id such as "google/recurrentgemma-2b" or "griffin-demo": one or two components of
// [A-Za-z0-9._-], not starting with '.', so a local path a converter recorded is never served.
bool IsModelId(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  int slashes = 0;
  bool component_start = true;
  for (char c : name) {
    if (c == '/') {
      if (component_start || ++slashes > 1) return false;
      component_start = true;
      continue;
    }
    if (component_start && c == '.') return false;
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
    component_start = false;
  }
  return !component_start;
}

// The name clients put in `model` when --model_name is not given: config.json's `_name_or_path`
// when it is a model id (Hugging Face configs and griffin_train.export write it), else the folder's
// name.
std::string DefaultModelName(const std::string& model_dir) {
  std::ifstream in(model_dir + "/config.json");
  if (in) {
    nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (config.is_object()) {
      auto it = config.find("_name_or_path");
      if (it != config.end() && it->is_string() && IsModelId(it->get<std::string>())) {
        return it->get<std::string>();
      }
    }
  }
  return BaseName(model_dir);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

bool g_json_logs = false;
void Log(spdlog::level::level_enum level, const std::string& message) {
  spdlog::log(level, "{}", g_json_logs ? nlohmann::json(message).dump() : message);
}

// Files clients depend on that a model folder may lack (the weights and config.json are checked
// by the loader, which fails without them).
void WarnAboutMissingFiles(const std::string& model_dir, const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) return;
  const std::string dir = SafeName(model_dir);
  if (FileExists(model_dir + "/tokenizer.json")) {
    Log(spdlog::level::warn,
        absl::StrCat(dir,
                     " has tokenizer.json but no tokenizer.model (the SentencePiece model "
                     "griffin reads): copy tokenizer.model from the model's repository, or "
                     "clients must send token ids"));
  } else {
    Log(spdlog::level::warn,
        absl::StrCat(dir,
                     " has no tokenizer.model: clients must send prompts as token ids; text "
                     "prompts, stop strings and /v1/chat/completions are refused (400)"));
  }
}

int Run() {
  g_json_logs = absl::GetFlag(FLAGS_log_format) == "json";
  if (g_json_logs) {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":%v})",
                        spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
  }
  if (absl::GetFlag(FLAGS_log_format) != "text" && !g_json_logs) {
    Log(spdlog::level::err, "--log_format must be text or json");
    return 1;
  }
  std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) model_dir = DefaultModel();

  Log(spdlog::level::info, VersionString("griffin-server"));
  const std::string model_name = absl::GetFlag(FLAGS_model_name).empty()
                                     ? DefaultModelName(model_dir)
                                     : absl::GetFlag(FLAGS_model_name);
  const int max_queue = absl::GetFlag(FLAGS_max_queue);

  // Both listeners start first, so /health answers and /ready (and gRPC health) say "not ready"
  // while the weights load and the warm-up step runs (OPS-1).
  server::ServerState state;
  state.model_name = model_name;
  state.max_queue = max_queue;
  state.json_logs = g_json_logs;
  if (absl::GetFlag(FLAGS_request_timeout) > 0) {
    state.request_timeout = absl::Seconds(absl::GetFlag(FLAGS_request_timeout));
  }
  state.limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  state.limits.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  state.limits.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  state.limits.max_n = absl::GetFlag(FLAGS_max_n);
  state.limits.max_top_logprobs = absl::GetFlag(FLAGS_max_top_logprobs);
  state.limits.max_logit_bias = absl::GetFlag(FLAGS_max_logit_bias);
  state.limits.max_prompts_per_request = absl::GetFlag(FLAGS_max_prompts_per_request);
  if (state.limits.max_logit_bias < 0 || state.limits.max_prompts_per_request < 1) {
    Log(spdlog::level::err, "--max_logit_bias must be >= 0 and --max_prompts_per_request >= 1");
    return 1;
  }
  const int64_t prefix_block = absl::GetFlag(FLAGS_prefix_cache_block);
  const int64_t prefix_device_mib = absl::GetFlag(FLAGS_prefix_cache_memory_mib);
  const int64_t prefix_host_mib = absl::GetFlag(FLAGS_prefix_cache_host_mib);
  const int64_t session_mib = absl::GetFlag(FLAGS_session_memory_mib);
  const double session_ttl = absl::GetFlag(FLAGS_session_ttl);
  const std::string session_dir = absl::GetFlag(FLAGS_session_dir);
  if (prefix_block < 1) {
    Log(spdlog::level::err, "--prefix_cache_block must be >= 1 (tokens)");
    return 1;
  }
  if (prefix_device_mib < 0 || prefix_host_mib < 0 || session_mib < 0 ||
      prefix_device_mib > (int64_t{1} << 30) || prefix_host_mib > (int64_t{1} << 30) ||
      session_mib > (int64_t{1} << 30)) {
    Log(spdlog::level::err,
        "--prefix_cache_memory_mib, --prefix_cache_host_mib and --session_memory_mib must be in "
        "[0, 2^30]");
    return 1;
  }
  if (!(session_ttl > 0) || session_ttl > 1e9) {
    Log(spdlog::level::err, "--session_ttl must be in (0, 1e9] seconds");
    return 1;
  }
  if (!session_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(session_dir, ec);
    const std::string probe = session_dir + "/.griffin-write-test";
    std::ofstream(probe) << "ok";
    const bool writable = FileExists(probe);
    std::filesystem::remove(probe, ec);
    if (!writable) {
      Log(spdlog::level::err,
          absl::StrCat("--session_dir ", SafeName(session_dir), " is not a writable directory"));
      return 1;
    }
  }
  server::Metrics metrics(model_name);
  state.metrics = &metrics;

  state.limits.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes) > 0
                                      ? absl::GetFlag(FLAGS_max_prompt_bytes)
                                      : state.limits.max_prompt_tokens * 64;
  state.limits.max_logprob_entries = absl::GetFlag(FLAGS_max_logprob_entries);

  // API keys (SEC-6): never logged; only their count and tenants' count.
  server::ApiKeys api_keys;
  {
    const char* env_key = std::getenv("GRIFFIN_API_KEY");
    absl::Status loaded =
        api_keys.Load(absl::GetFlag(FLAGS_api_key_file), env_key != nullptr ? env_key : "");
    if (!loaded.ok()) {
      Log(spdlog::level::err, absl::StrCat("startup failed: API keys: ", loaded.ToString()));
      return 1;
    }
    if (api_keys.enabled()) {
      Log(spdlog::level::info, absl::StrCat("api keys: ", api_keys.size(), " loaded"));
    }
  }
  state.api_keys = &api_keys;
  server::MemoryReleaser memory;
  state.memory = &memory;

  // TLS (SEC-7): the same certificate on both ports.
  const std::string tls_cert = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string tls_key = absl::GetFlag(FLAGS_tls_key_file);
  const std::string tls_ca = absl::GetFlag(FLAGS_tls_client_ca_file);
  std::shared_ptr<grpc::ServerCredentials> grpc_credentials = grpc::InsecureServerCredentials();
  if (!tls_cert.empty() || !tls_key.empty() || !tls_ca.empty()) {
    if (absl::Status usable = server::CheckTlsFiles(tls_cert, tls_key, tls_ca); !usable.ok()) {
      Log(spdlog::level::err, absl::StrCat("startup failed: ", usable.message()));
      return 1;
    }
    // Names the flag, never the file's content.
    auto read = [](const std::string& path, const char* flag, std::string* out) {
      std::ifstream in(path, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      *out = text.str();
      if (in.is_open() && !out->empty()) return true;
      Log(spdlog::level::err, absl::StrCat("startup failed: ", flag, " cannot be read"));
      return false;
    };
    grpc::SslServerCredentialsOptions ssl(
        tls_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                       : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!read(tls_cert, "--tls_cert_file", &pair.cert_chain) ||
        !read(tls_key, "--tls_key_file", &pair.private_key) ||
        (!tls_ca.empty() && !read(tls_ca, "--tls_client_ca_file", &ssl.pem_root_certs))) {
      return 1;
    }
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    grpc_credentials = grpc::SslServerCredentials(ssl);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  server::GenerationService service(&state);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_grpc_port)),
      grpc_credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  builder.RegisterService(&service);
  builder.SetOption(server::MakeReflectionV1Option());  // v1alpha comes from gRPC's own plugin
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || grpc_port == 0) {
    Log(spdlog::level::err, absl::StrCat("startup failed: cannot listen on gRPC port ",
                                         absl::GetFlag(FLAGS_grpc_port)));
    return 1;
  }
  // Health answers for the whole server ("") and for the service by name (what a probe or a
  // balancer configured with the service name asks); SetServingStatus(bool) then moves both.
  grpc::HealthCheckServiceInterface* health = grpc_server->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(griffin::v1::Generation::service_full_name(), false);
    health->SetServingStatus(false);
  }

  int http_threads = absl::GetFlag(FLAGS_http_threads);
  if (http_threads <= 0) {
    http_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 2, 8);
  }
  int max_connections = absl::GetFlag(FLAGS_max_connections);
  {
    // Each connection is a descriptor: raise the soft limit to the hard one, and keep the cap
    // below it with room for the model files, gRPC and the engine.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
      getrlimit(RLIMIT_NOFILE, &files);
      const rlim_t room = 512;
      if (files.rlim_cur != RLIM_INFINITY &&
          static_cast<rlim_t>(max_connections) + room > files.rlim_cur) {
        max_connections = static_cast<int>(files.rlim_cur > room ? files.rlim_cur - room : 64);
        Log(spdlog::level::warn,
            absl::StrCat("--max_connections lowered to ", max_connections,
                         " to fit the open-file limit (ulimit -n ", files.rlim_cur, ")"));
      }
    }
  }
  std::vector<std::string> origins;
  for (absl::string_view origin :
       absl::StrSplit(absl::GetFlag(FLAGS_allowed_origins), ',', absl::SkipWhitespace())) {
    origins.emplace_back(absl::StripAsciiWhitespace(origin));
  }
  server::HttpOptions http_options;
  server::HttpTransportOptions& t = http_options.transport;
  t.host = absl::GetFlag(FLAGS_host);
  t.port = absl::GetFlag(FLAGS_http_port);
  t.threads = http_threads;
  t.max_connections = max_connections;
  t.max_header_bytes =
      static_cast<size_t>(std::max(1024, absl::GetFlag(FLAGS_http_max_header_bytes)));
  t.max_header_count = std::max(8, absl::GetFlag(FLAGS_http_max_header_fields));
  t.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_message_bytes));
  t.header_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_header_timeout));
  t.body_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_body_timeout));
  t.idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_idle_timeout));
  t.allowed_origins = std::move(origins);
  t.exposed_headers = {server::kSessionIdHeader};
  t.tls_cert_file = tls_cert;
  t.tls_key_file = tls_key;
  t.tls_client_ca_file = tls_ca;
  t.api_keys = &api_keys;
  t.on_large_request = [&memory](size_t bytes) { memory.NoteLargeRequest(bytes); };
  http_options.protect_metrics = absl::GetFlag(FLAGS_protect_metrics);
  server::HttpServer http(&state, std::move(http_options));
  if (absl::Status started = http.Start(); !started.ok()) {
    grpc_server->Shutdown();
    Log(spdlog::level::err, absl::StrCat("startup failed: HTTP port ",
                                         absl::GetFlag(FLAGS_http_port), ": ", started.message()));
    return 1;
  }
  auto fail = [&](const std::string& what, const absl::Status& s) {
    Log(spdlog::level::err, absl::StrCat("startup failed: ", what, ": ", s.ToString()));
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    http.Stop(absl::ZeroDuration());
    return 1;
  };

  // Load, build the backend, warm up.
  if (absl::GetFlag(FLAGS_debug_load_delay) > 0) {
    absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_debug_load_delay)));
  }
  absl::StatusOr<engine::BackendKind> kind = engine::ParseBackendKind(absl::GetFlag(FLAGS_backend));
  if (!kind.ok()) return fail("--backend", kind.status());
  absl::StatusOr<engine::WeightQuantization> quantization =
      engine::ParseWeightQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) return fail("--quantization", quantization.status());
  // The GPU default is measured (bench/RESULTS.md session 7, H200, 2B shapes, 256 streams of
  // 1024 in / 128 out): 1024 / 2048 / 4096 / 8192 tokens gave the engine 8.9K / 9.5K / 10.4K /
  // 11.0K output tok/s, and at 4096 the server's TPOT p99 stayed at 25 ms (target 40 ms). On the
  // CPU a step of 4096 prompt tokens would stall every running decode for seconds.
  int64_t token_budget = absl::GetFlag(FLAGS_token_budget);
  if (token_budget < 0) {
    return fail("--token_budget", absl::InvalidArgumentError("must be positive (0: the default)"));
  }
  if (token_budget == 0) token_budget = *kind == engine::BackendKind::kCpu ? 512 : 4096;
  engine::SimulatedStepTime simulated_step_time;
  if (*kind == engine::BackendKind::kSimulated) {
    absl::StatusOr<engine::SimulatedStepTime> parsed =
        engine::ParseSimulatedStepTime(absl::GetFlag(FLAGS_simulated_step_us));
    if (!parsed.ok()) return fail("--simulated_step_us", parsed.status());
    simulated_step_time = *parsed;
  }
  const double step_time_target_ms = absl::GetFlag(FLAGS_step_time_target_ms);
  if (!(step_time_target_ms >= 0 && step_time_target_ms <= 1e6)) {
    return fail("--step_time_target_ms",
                absl::InvalidArgumentError("must be in [0, 1e6] milliseconds (0: off)"));
  }
  const double gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(gpu_memory_utilization > 0 && gpu_memory_utilization <= 1)) {
    return fail("--gpu_memory_utilization", absl::InvalidArgumentError("must be in (0, 1]"));
  }
  if (absl::GetFlag(FLAGS_max_slots) < 1 || absl::GetFlag(FLAGS_state_memory_mib) < 0) {
    return fail("--max_slots / --state_memory_mib",
                absl::InvalidArgumentError("--max_slots must be >= 1, --state_memory_mib >= 0"));
  }
  const std::string load_format = absl::GetFlag(FLAGS_load_format);
  if (load_format != "safetensors" && load_format != "dummy") {
    return fail("--load_format", absl::InvalidArgumentError("must be safetensors or dummy"));
  }
  // Every load error names the folder (an operator's path from the command line, rendered
  // printable): "startup failed: loading models/x: NOT_FOUND: ...".
  const std::string loading = absl::StrCat("loading ", SafeName(model_dir));
  const absl::Time load_start = absl::Now();
  std::unique_ptr<loader::Checkpoint> checkpoint;
  loader::ModelConfig config;
  std::string tokenizer_path;
  if (load_format == "dummy") {
    absl::StatusOr<loader::ModelConfig> parsed =
        loader::LoadModelConfig(absl::StrCat(model_dir, "/config.json"));
    if (!parsed.ok()) return fail(loading, parsed.status());
    config = *parsed;
    const std::string candidate = absl::StrCat(model_dir, "/tokenizer.model");
    if (std::ifstream(candidate).good()) tokenizer_path = candidate;
    Log(spdlog::level::info,
        absl::StrCat(loading, ": config.json only, random weights (--load_format dummy)"));
  } else {
    absl::StatusOr<std::unique_ptr<loader::Checkpoint>> opened =
        loader::Checkpoint::Open(model_dir);
    if (!opened.ok()) return fail(loading, opened.status());
    checkpoint = std::move(*opened);
    config = checkpoint->config();
    tokenizer_path = checkpoint->tokenizer_path();
    const std::vector<const loader::TensorView*> tensors = checkpoint->tensors();
    size_t bytes = 0;
    for (const loader::TensorView* t : tensors) bytes += t->nbytes;
    const double gb = static_cast<double>(bytes) / 1e9;
    Log(spdlog::level::info,
        gb >= 0.1 ? absl::StrFormat("%s: %d tensors, %.2f GB", loading, tensors.size(), gb)
                  : absl::StrFormat("%s: %d tensors, %.4f GB", loading, tensors.size(), gb));
  }
  WarnAboutMissingFiles(model_dir, tokenizer_path);
  std::unique_ptr<loader::Tokenizer> tokenizer;
  if (!tokenizer_path.empty()) {
    absl::StatusOr<std::unique_ptr<loader::Tokenizer>> t = loader::Tokenizer::Load(tokenizer_path);
    if (!t.ok()) return fail(absl::StrCat(loading, ": tokenizer.model"), t.status());
    if ((*t)->vocab_size() > config.vocab_size) {
      return fail(absl::StrCat(loading, ": tokenizer.model"),
                  absl::FailedPreconditionError(absl::StrCat(
                      "the tokenizer has ", (*t)->vocab_size(),
                      " pieces, more than the model's vocab_size ", config.vocab_size)));
    }
    tokenizer = std::move(*t);
    if (tokenizer->PieceToId("<start_of_turn>") < 0 || tokenizer->PieceToId("<end_of_turn>") < 0) {
      Log(spdlog::level::info,
          absl::StrCat(loading,
                       ": the tokenizer has no <start_of_turn>/<end_of_turn> pieces (not "
                       "an instruction-tuned Gemma tokenizer): /v1/chat/completions "
                       "writes the turn markers as plain text"));
    }
  }
  const int64_t state_bytes = engine::StateBytesPerSequence(*kind, config);
  // Slots: --slots, else a fixed --state_memory_mib, else (GPU) what --gpu_memory_utilization of
  // the device leaves after the weights and workspaces (the backend measures it: slots = 0), else
  // (CPU) 4096 MiB.
  int slots = absl::GetFlag(FLAGS_slots);
  const bool slots_from_device_memory = slots <= 0 && absl::GetFlag(FLAGS_state_memory_mib) == 0 &&
                                        *kind == engine::BackendKind::kCuda;
  if (slots <= 0 && !slots_from_device_memory) {
    const int64_t mib = absl::GetFlag(FLAGS_state_memory_mib);
    const int64_t budget = (mib > 0 ? mib : 4096) << 20;
    slots = static_cast<int>(std::min<int64_t>(absl::GetFlag(FLAGS_max_slots),
                                               budget / std::max<int64_t>(state_bytes, 1)));
    if (slots < 1) {
      return fail("--state_memory_mib",
                  absl::FailedPreconditionError("the memory budget holds no sequence state"));
    }
  }
  const engine::BackendOptions backend_options{
      .kind = *kind,
      .quantization = *quantization,
      .fp8_activations = absl::GetFlag(FLAGS_fp8_activations),
      .num_slots = slots_from_device_memory ? 0 : slots,
      .device_memory_fraction = gpu_memory_utilization,
      .max_slots = absl::GetFlag(FLAGS_max_slots),
      .max_batch = absl::GetFlag(FLAGS_max_batch),
      .max_tokens_per_step = token_budget,
      .cudnn_attention_min_tokens = absl::GetFlag(FLAGS_cudnn_attention_min_tokens),
      .simulated_step_time = simulated_step_time};
  absl::StatusOr<std::unique_ptr<engine::Backend>> backend =
      checkpoint != nullptr
          ? engine::CreateBackend(*checkpoint, backend_options)
          : engine::CreateBackendWithRandomWeights(config, backend_options, /*seed=*/0);
  if (!backend.ok()) return fail(absl::StrCat(loading, ": backend"), backend.status());
  const std::string backend_name((*backend)->name());
  slots = (*backend)->num_slots();
  for (const std::string& note : (*backend)->StartupNotes()) Log(spdlog::level::info, note);
  if (slots_from_device_memory) {
    Log(spdlog::level::info,
        absl::StrFormat("slots: %d from --gpu_memory_utilization %.2f (%.1f MiB each, at most "
                        "--max_slots %d)",
                        slots, gpu_memory_utilization, state_bytes / 1048576.0,
                        absl::GetFlag(FLAGS_max_slots)));
  }
  // The prefix cache's device tier: idle slots it may hold (see --prefix_cache_memory_mib).
  // Not extra slots: the engine admits a sequence into any slot, so extra ones would raise
  // concurrency past --slots; it takes a cached slot back at admission instead.
  const bool cache_wanted = absl::GetFlag(FLAGS_prefix_cache);
  // Cached prefixes and sessions are keyed to the weights: never restored into another model.
  const uint64_t model_identity = engine::QuantizedModelIdentity(
      checkpoint != nullptr ? engine::ModelIdentity(*checkpoint)
                            : engine::ModelIdentity(config, /*random_seed=*/0),
      *quantization);
  const engine::StateLayout* layout = (*backend)->state_layout();
  engine::EngineOptions engine_options;
  const std::optional<engine::PrefixCacheOptions> cache =
      layout != nullptr && cache_wanted
          ? engine::PrefixCacheOptions::ForBudget(layout->slot_bytes(), slots, prefix_device_mib,
                                                  prefix_host_mib, prefix_block)
          : std::nullopt;
  const bool cache_on = cache.has_value();
  if (cache_on) {
    engine_options.prefix_cache = *cache;
    engine_options.model_identity = model_identity;
  }
  std::unique_ptr<engine::SessionStore> sessions;
  if (layout != nullptr && session_mib > 0) {
    engine::SessionStoreOptions so;
    so.ttl = absl::Seconds(session_ttl);
    so.memory_bytes = session_mib << 20;
    so.dir = session_dir;
    sessions = std::make_unique<engine::SessionStore>(so, model_identity, layout->description());
  }
  Log(spdlog::level::info,
      absl::StrCat(
          "prefix cache: ",
          cache_on
              ? absl::StrCat("on (", cache->max_device_entries, " device entries, ",
                             prefix_host_mib, " MiB host, blocks of ", prefix_block, " tokens)")
              : (layout == nullptr ? "off (the backend cannot snapshot slots)"
                 : cache_wanted    ? "off (no memory for it)"
                                   : "off (--noprefix_cache)"),
          "; sessions: ",
          sessions != nullptr
              ? absl::StrCat("on (", session_mib, " MiB, ttl ", session_ttl, " s",
                             session_dir.empty() ? ", memory only" : ", with a directory", ")")
              : "off"));
  if (const int64_t after = absl::GetFlag(FLAGS_debug_fail_device_after_steps); after >= 0) {
    *backend = std::make_unique<engine::FaultInjectingBackend>(std::move(*backend), after);
  }
  engine_options.token_budget = token_budget;
  engine_options.max_batch = absl::GetFlag(FLAGS_max_batch);
  engine_options.step_time_target = absl::Microseconds(std::llround(step_time_target_ms * 1e3));
  engine_options.max_queue = max_queue;
  engine_options.max_queued_tokens = absl::GetFlag(FLAGS_max_queued_prompt_tokens);
  engine_options.queue_timeout = absl::GetFlag(FLAGS_queue_timeout) > 0
                                     ? absl::Seconds(absl::GetFlag(FLAGS_queue_timeout))
                                     : absl::InfiniteDuration();
  engine_options.device_sampling = absl::GetFlag(FLAGS_device_sampling);
  // OPS-1: not ready the moment the device fails (before the failed requests hear of it), then,
  // once every request's last output is out, exit non-zero for a restart.
  engine_options.on_device_failure = [&](const absl::Status&) {
    state.fatal.store(true);
    state.ready.store(false);
    if (health != nullptr) health->SetServingStatus(false);
  };
  engine_options.on_fatal = [&](const absl::Status& status) {  // readiness already dropped above
    Log(spdlog::level::critical, absl::StrCat("engine stopped: ", status.ToString()));
    kill(getpid(), SIGTERM);
  };
  absl::StatusOr<std::unique_ptr<engine::EngineCore>> engine =
      engine::EngineCore::Create(std::move(*backend), engine_options);
  if (!engine.ok()) return fail(absl::StrCat(loading, ": engine warm-up"), engine.status());
  const int64_t weight_bytes =
      engine::DeviceWeightBytes(config, *quantization == engine::WeightQuantization::kFp8);
  Log(spdlog::level::info,
      absl::StrFormat(
          "loaded %s in %.2f s (backend %s, %d slots, weights %s: %d bytes on a GPU)",
          SafeName(model_dir), absl::ToDoubleSeconds(absl::Now() - load_start), backend_name, slots,
          *quantization == engine::WeightQuantization::kFp8 ? "fp8" : "bf16", weight_bytes));

  state.engine = engine->get();
  state.sessions = sessions.get();
  state.tokenizer = tokenizer.get();
  state.backend_name = backend_name;
  state.quantization = std::string(engine::WeightQuantizationName(*quantization));
  state.weight_bytes = weight_bytes;
  state.state_bytes_per_sequence = state_bytes;
  state.num_slots = slots;
  state.limits.max_sequences = static_cast<int64_t>(slots) + max_queue;
  state.model = {.vocab_size = config.vocab_size,
                 .bos_id = config.bos_token_id,
                 .eos_id = config.eos_token_id,
                 .pad_id = config.pad_token_id};
  if (tokenizer != nullptr) state.end_of_turn_id = tokenizer->PieceToId("<end_of_turn>");
  metrics.SetModel(state_bytes, slots);
  state.created = absl::ToUnixSeconds(absl::Now());
  state.loaded.store(true, std::memory_order_release);  // publishes every field above
  state.ready.store(true);
  if (health != nullptr) health->SetServingStatus(true);
  Log(spdlog::level::info,
      absl::StrCat("ready: model=", SafeName(state.model_name), " backend=", backend_name,
                   " slots=", slots, " state_bytes_per_sequence=", state_bytes,
                   " http=", absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_http_port),
                   " grpc=", absl::GetFlag(FLAGS_host), ":", grpc_port));

  // Wait for SIGTERM / SIGINT (blocked in every thread; taken here); SIGHUP reloads the keys.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    if (absl::GetFlag(FLAGS_api_key_file).empty()) {
      Log(spdlog::level::info, "SIGHUP: no --api_key_file to reload");
      continue;
    }
    absl::Status reloaded = api_keys.Reload();
    Log(reloaded.ok() ? spdlog::level::info : spdlog::level::err,
        reloaded.ok() ? absl::StrCat("api keys: reloaded, ", api_keys.size(), " keys")
                      : absl::StrCat("api keys: reload failed (", reloaded.ToString(),
                                     "); the previous ", api_keys.size(), " keys stay"));
  }

  // Drain (CAN-6, SEC-5).
  state.draining.store(true);
  state.ready.store(false);
  if (health != nullptr) health->SetServingStatus(false);
  http.BeginDrain();
  Log(spdlog::level::info,
      absl::StrCat(state.fatal.load() ? "stopping" : "draining", ": signal ", sig));
  const absl::Time drain_end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_timeout));
  // gRPC stops taking calls now (GOAWAY, then the listener closes) rather than answering them
  // UNAVAILABLE: a load balancer can only retry a call elsewhere when the transport refused it.
  // Calls in flight run on until they finish or the drain ends.
  std::thread grpc_shutdown([&] { grpc_server->Shutdown(absl::ToChronoTime(drain_end)); });
  while (absl::Now() < drain_end) {
    engine::EngineStats s = state.engine->stats();
    bool ids_empty;
    {
      std::lock_guard<std::mutex> lock(state.mu);
      ids_empty = state.by_id.empty();
    }
    if (s.waiting == 0 && s.running == 0 && ids_empty) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  const engine::EngineStats left = state.engine->stats();
  if (left.waiting + left.running > 0) {
    Log(spdlog::level::warn,
        absl::StrCat("drain timeout: aborting ", left.waiting + left.running, " requests"));
  }
  state.engine->Stop();  // anything left ends UNAVAILABLE
  // Every session is idle now (the engine ended their requests): write them out, so a restarted
  // server continues them from --session_dir.
  if (sessions != nullptr && !session_dir.empty()) {
    absl::Status flushed = sessions->Flush();
    const engine::SessionStoreStats ss = sessions->stats();
    Log(flushed.ok() ? spdlog::level::info : spdlog::level::err,
        flushed.ok() ? absl::StrCat("sessions: ", ss.sessions, " saved in --session_dir")
                     : absl::StrCat("sessions: saving failed: ", flushed.ToString()));
  }
  // The last events (an error event and [DONE], or a 503) get a moment to reach clients that
  // read; a client that does not read is closed then.
  http.Stop(absl::Milliseconds(500));
  grpc_shutdown.join();
  grpc_server->Wait();
  const bool fatal = state.fatal.load();
  Log(fatal ? spdlog::level::err : spdlog::level::info,
      fatal ? "stopped after a device failure: exit 1 so the supervisor restarts the server"
            : "stopped");
  return fatal ? 1 : 0;
}

}  // namespace
}  // namespace griffin

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so only sigwait in Run() takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  griffin::ParseProgramFlags(
      argc, argv, "griffin-server", "server/griffin_server_main.cc",
      "serves a Griffin, Hawk or RecurrentGemma model over gRPC and the OpenAI HTTP API.\n\n"
      "  griffin-server [--model DIR] [--backend auto|cpu|cuda] [--http_port 8000] [flags]");
  return griffin::Run();
}
