// The OpenAI-compatible HTTP front end on cpp-httplib: /v1/completions, /v1/chat/completions
// (SSE with `stream: true`), /v1/models, /tokenize, /detokenize, /health, /ready, /metrics.
// Each connection is served on a worker thread; an SSE stream (and a queued non-streaming
// request) holds its worker until it ends, so the pool is sized by the caller for the slots plus
// the queue, never httplib's default 8.
#ifndef GRIFFIN_SERVER_HTTP_SERVER_H_
#define GRIFFIN_SERVER_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "server/generation.h"

namespace httplib {
class Server;
}

namespace griffin::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  int threads = 64;
  size_t max_body_bytes = 4 << 20;
};

class HttpServer {
 public:
  HttpServer(ServerState* state, const HttpOptions& options);
  ~HttpServer();
  // Binds; false (and a log line) if the address is taken.
  bool Bind();
  // Serves until Stop(); blocks.
  void Listen();
  void Stop();

 private:
  ServerState* state_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_HTTP_SERVER_H_
