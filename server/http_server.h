// The OpenAI-compatible HTTP front end: /v1/completions, /v1/chat/completions (SSE with
// `stream: true`), /v1/models, /tokenize, /detokenize, /health, /ready, /metrics.
//
// The routes are transport-neutral handlers (http_transport.h) served by HttpTransport (Beast
// over Asio): a request waiting for the engine or streaming events holds no thread; the engine's
// callback wakes its connection, which polls the request's generations and writes what is new.
#ifndef GRIFFIN_SERVER_HTTP_SERVER_H_
#define GRIFFIN_SERVER_HTTP_SERVER_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/generation.h"
#include "server/http_transport.h"

namespace griffin::server {

// The response header that carries the session id (also the body's `session_id`): a balancer can
// hash on it to keep a conversation on its replica (deploy/README.md); CORS replies expose it.
inline constexpr char kSessionIdHeader[] = "X-Session-Id";

struct HttpOptions {
  HttpTransportOptions transport;  // address, limits, timeouts, TLS, CORS (keys: state's)
  bool protect_metrics = false;    // /metrics needs an API key too (health and ready never do)
};

class HttpServer {
 public:
  HttpServer(ServerState* state, HttpOptions options);
  ~HttpServer();

  // Binds and starts serving (see HttpTransport::Start for the errors).
  absl::Status Start();
  // SIGTERM: stop accepting; close connections that are not serving a request.
  void BeginDrain();
  // After the engine stopped: up to `grace` for responses to finish writing, then close all.
  void Stop(absl::Duration grace);
  int port() const;
  const HttpTransportStats& stats() const;

 private:
  std::vector<HttpRoute> Routes(bool protect_metrics);

  ServerState* state_;
  std::unique_ptr<HttpTransport> transport_;
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_HTTP_SERVER_H_
