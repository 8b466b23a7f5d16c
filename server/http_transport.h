// HTTP/1.1 (and HTTPS) on Boost.Beast over Asio: the connections, their limits and timeouts, API
// keys, CORS and drain. The routes are transport-neutral functions (an HttpRequest in, an
// HttpReply out) registered as HttpRoute; this header names no Beast or Asio type, so only
// http_transport.cc compiles Beast.
//
// What a connection may cost is bounded (RELIABILITY.md SEC-1, SEC-2, SEC-4, SEC-5, SEC-8):
//  - A few I/O threads serve every connection; a connection that is idle, slow or streaming holds
//    memory (a few KiB), never a thread.
//  - At most `max_connections` open: the excess is closed at accept.
//  - Request line and headers: at most `max_header_bytes` and `max_header_count` fields (431),
//    complete within `header_timeout` of their first byte; a keep-alive connection waits at most
//    `idle_timeout` for the next request.
//  - Body: at most `max_body_bytes` whatever the framing (Content-Length, chunked; 413 as soon as
//    the limit is passed, before reading the rest), complete within `body_timeout`. gzip and
//    deflate bodies are inflated under the same limit (413); any other Content-Encoding or
//    Transfer-Encoding is 415. JSON routes take only Content-Type application/json (415).
//  - Writes: a client that takes no data for `idle_timeout` is closed and its request cancelled.
//  - A request whose client goes away is cancelled: each request's own connection is watched for
//    end-of-stream while the request runs.
//  - Range is ignored (a full 200). No CORS header unless `allowed_origins` lists the Origin; a
//    request that carries an Origin not listed is refused (403), which also stops DNS rebinding.
//  - Drain: BeginDrain stops accepting and closes every connection that is not serving a
//    request; Stop closes the rest.
#ifndef GRIFFIN_SERVER_HTTP_TRANSPORT_H_
#define GRIFFIN_SERVER_HTTP_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/auth.h"

namespace griffin::server {

// One request as a route sees it: the whole head and the whole (decoded, bounded) body.
struct HttpRequest {
  std::string method;  // "GET", "POST", ... (HEAD arrives as GET; the transport drops the body)
  std::string path;    // the target up to '?', not decoded
  std::string query;   // after '?', not decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case, in order
  std::string body;
  std::string tenant;  // the API key's tenant; "" when keys are off or the route is open
  // The first header named `lower_case_name`, or null.
  const std::string* Header(std::string_view lower_case_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  // The whole body; with `stream`, the first piece (the rest comes from HttpAsyncReply::Poll).
  std::string body;
  bool stream = false;  // the body is sent as it is produced (chunked), e.g. server-sent events
};

// A reply produced over time: a response that waits for the engine, or a stream of events.
// The transport calls Poll on the connection's executor (never two calls at once): once right
// after the route returns, then after each wake, and after each write completes.
class HttpAsyncReply {
 public:
  virtual ~HttpAsyncReply() = default;
  struct Output {
    // Set exactly once, on some Poll. A response without `stream` is whole: done must be true.
    std::optional<HttpResponse> head;
    std::string data;   // more body of a streamed response (after its head)
    bool done = false;  // nothing follows; Poll is not called again
  };
  virtual void Poll(Output* out) = 0;
  // The connection is closing before done (the client went away or stopped reading, or the
  // server stops): end the work. Called at most once, on the executor; no Poll afterwards. Must
  // not block.
  virtual void Cancel() = 0;
};

// Asks the transport to Poll soon. Thread-safe and non-blocking; callable from any thread, any
// number of times, also after the connection closed (then it does nothing).
using HttpWaker = std::function<void()>;

struct HttpReply {
  HttpResponse response;                  // the answer, when `async` is null
  std::shared_ptr<HttpAsyncReply> async;  // else: the answer comes from here
};

using HttpHandler = std::function<HttpReply(HttpRequest request, HttpWaker wake)>;

struct HttpRoute {
  std::string method;  // "GET" or "POST"
  std::string path;    // exact, or with `prefix` every path that starts with it
  bool prefix = false;
  bool open = false;       // answered without an API key (health, readiness, metrics)
  bool json_body = false;  // Content-Type must be application/json (else 415)
  HttpHandler handler;
};

struct HttpTransportOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see port())
  int threads = 2;  // I/O threads; routes run on them, so keep route work short
  int max_connections = 4096;
  size_t max_header_bytes = 16 << 10;  // request line + headers
  int max_header_count = 100;
  size_t max_body_bytes = 4 << 20;  // after decoding
  absl::Duration header_timeout = absl::Seconds(10);
  absl::Duration body_timeout = absl::Seconds(60);
  absl::Duration idle_timeout = absl::Seconds(75);
  // Origins (scheme://host[:port]) that browsers may call from; "*" allows any. Empty: none.
  std::vector<std::string> allowed_origins;
  // Response headers a page on an allowed origin may read (Access-Control-Expose-Headers).
  std::vector<std::string> exposed_headers;
  // HTTPS when both are set; with a client CA, clients must present a certificate it signed.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Authentication for routes that are not `open`; null or no keys: none.
  const ApiKeys* api_keys = nullptr;
  // Called (on an I/O thread) after a request whose body or response was large, so the caller
  // can return freed memory to the system.
  std::function<void(size_t bytes)> on_large_request;
};

// Counters for /metrics; read with relaxed loads.
struct HttpTransportStats {
  std::atomic<int64_t> open{0};  // connections open now
  std::atomic<int64_t> accepted{0};
  std::atomic<int64_t> refused{0};  // closed at accept: over max_connections
  std::atomic<int64_t> header_timeouts{0};
  std::atomic<int64_t> body_timeouts{0};
  std::atomic<int64_t> idle_timeouts{0};    // keep-alive waits and stalled writes
  std::atomic<int64_t> tls_failures{0};     // handshakes that failed
  std::atomic<int64_t> unauthenticated{0};  // 401s
};

class HttpTransport {
 public:
  HttpTransport(HttpTransportOptions options, std::vector<HttpRoute> routes);
  ~HttpTransport();  // Stop() if still running
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Loads the TLS files, binds and listens (SO_REUSEADDR, never SO_REUSEPORT; backlog SOMAXCONN),
  // and starts the I/O threads. UNAVAILABLE when the address is taken, INVALID_ARGUMENT naming the
  // flag for a TLS file that cannot be used.
  absl::Status Start();
  // Stops accepting and closes every connection that is not serving a request (idle, handshaking,
  // reading a head or a body). Connections serving one close once its response is written.
  void BeginDrain();
  // Gives responses in flight up to `grace` to finish writing, then closes every connection
  // (their replies are cancelled) and joins the I/O threads. Idempotent.
  void Stop(absl::Duration grace);

  int port() const;  // the bound port, after Start
  const HttpTransportStats& stats() const;

  class Impl;  // defined in http_transport.cc (its connections need it)

 private:
  std::unique_ptr<Impl> impl_;
};

// Loads the TLS files as Start would (INVALID_ARGUMENT naming the flag): lets the caller refuse
// bad files before it starts anything.
absl::Status CheckTlsFiles(const std::string& cert, const std::string& key,
                           const std::string& client_ca);

// An OpenAI-shaped error body: {"error": {"message", "type", "param": null, "code"}}.
HttpResponse HttpError(int status, std::string_view message);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_HTTP_TRANSPORT_H_
