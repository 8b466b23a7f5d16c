// The one translation unit that compiles Boost.Beast and Asio (they are header-heavy: keeping
// them here keeps the rest of server/ quick to build). See http_transport.h for the contract.
//
// Each connection is a Session on its own strand. It moves through phases:
//   handshake (TLS only) → idle (waiting for a request's first byte) → header → body → serving
//   → idle (keep-alive) ... → closed
// with one timer whose deadline depends on the phase (header_timeout from the first byte of a
// head, body_timeout for a body, idle_timeout while idle and for each write). While serving, one
// read stays posted on the connection: it sees the client's end-of-stream (or reset) and cancels
// the request, whatever the request is waiting for. The response is written by this file (Beast
// parses requests; responses are simple enough to format here, which also keeps streaming,
// HEAD and HTTP/1.0 in one place).
#include "server/http_transport.h"

#include <zlib.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "base/thread_name.h"
#include "spdlog/spdlog.h"

namespace griffin::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// Debian's Abseil has its own string_view type (not std::string_view).
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Requests or responses at least this large ask the caller to release memory afterwards.
constexpr size_t kLargeRequestBytes = 256 << 10;
// After an error that leaves a request body unread, the rest is read and dropped for at most
// this long, so that a client still sending sees the error response rather than a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 64 << 20;

const char* Reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

const char* ErrorType(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return status < 500 ? "invalid_request_error" : "server_error";
  }
}

std::string JsonEscape(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      absl::StrAppend(&out, "\\u00", c < 0x10 ? "0" : "", absl::Hex(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// A header value may not break the head (routes never put client bytes in headers; this is the
// last line of defence).
bool SafeHeaderText(std::string_view s) {
  for (unsigned char c : s) {
    if (c == '\r' || c == '\n' || c == 0) return false;
  }
  return true;
}

absl::string_view MediaType(std::string_view content_type) {
  const size_t semi = content_type.find(';');
  return absl::StripAsciiWhitespace(Av(content_type.substr(0, semi)));
}

// gzip or zlib ("deflate" in HTTP) into at most `limit` bytes. RESOURCE_EXHAUSTED past the limit
// (the inflater stops there, whatever the body claims to expand to), INVALID_ARGUMENT if corrupt.
absl::Status Inflate(const std::string& in, size_t limit, std::string* out) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) return absl::InternalError("inflate");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  out->clear();
  char chunk[64 << 10];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk);
    zs.avail_out = sizeof(chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError("the request body is not valid gzip or deflate data");
    }
    const size_t produced = sizeof(chunk) - zs.avail_out;
    if (out->size() + produced > limit) {
      inflateEnd(&zs);
      out->clear();
      return absl::ResourceExhaustedError("the decoded request body is too large");
    }
    out->append(chunk, produced);
    if (rc == Z_OK && produced == 0 && zs.avail_in == 0) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError("the request body is not valid gzip or deflate data");
    }
  }
  const bool trailing = zs.avail_in != 0;
  inflateEnd(&zs);
  if (trailing) {
    return absl::InvalidArgumentError("the request body is not valid gzip or deflate data");
  }
  return absl::OkStatus();
}

// What the server does with each Content-Encoding.
enum class Coding { kIdentity, kInflate, kUnsupported };

Coding ParseContentEncoding(std::string_view header) {
  const absl::string_view value = absl::StripAsciiWhitespace(Av(header));
  if (value.empty() || absl::EqualsIgnoreCase(value, "identity")) return Coding::kIdentity;
  if (absl::EqualsIgnoreCase(value, "gzip") || absl::EqualsIgnoreCase(value, "x-gzip") ||
      absl::EqualsIgnoreCase(value, "deflate")) {
    return Coding::kInflate;
  }
  return Coding::kUnsupported;  // br, zstd, compress, a list of codings, anything unknown
}

// Access-Control-Request-Headers is echoed only when it is a plain list of header names.
bool IsTokenList(std::string_view value) {
  if (value.size() > 1024) return false;
  for (unsigned char c : value) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != ',' && c != ' ') return false;
  }
  return true;
}

}  // namespace

const std::string* HttpRequest::Header(std::string_view lower_case_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_case_name) return &value;
  }
  return nullptr;
}

HttpResponse HttpError(int status, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = absl::StrCat(R"({"error":{"message":")", JsonEscape(message), R"(","type":")",
                        ErrorType(status), R"(","param":null,"code":)", status, "}}");
  return r;
}

// ---- The server and its connections.

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Drain() = 0;      // posted: close unless serving a request
  virtual void ForceStop() = 0;  // posted: close now
};

class HttpTransport::Impl {
 public:
  Impl(HttpTransportOptions options, std::vector<HttpRoute> routes)
      : options_(std::move(options)),
        routes_(std::move(routes)),
        ioc_(std::max(1, options_.threads)),
        acceptor_(net::make_strand(ioc_)),
        accept_retry_(acceptor_.get_executor()) {}

  ~Impl() { Stop(absl::ZeroDuration()); }

  absl::Status Start();
  void BeginDrain();
  void Stop(absl::Duration grace);

  const HttpTransportOptions& options() const { return options_; }
  const std::vector<HttpRoute>& routes() const { return routes_; }
  HttpTransportStats& stats() { return stats_; }
  bool draining() const { return draining_.load(); }
  int port() const { return port_; }

  void Register(SessionBase* s, std::weak_ptr<SessionBase> w) {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_[s] = std::move(w);
  }
  void Unregister(SessionBase* s) {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_.erase(s);
  }
  void SetServing(int delta) { serving_.fetch_add(delta); }

 private:
  void Accept();
  void OnAccept(error_code ec, tcp::socket socket);
  void ForEachSession(void (SessionBase::*action)());

  const HttpTransportOptions options_;
  const std::vector<HttpRoute> routes_;
  HttpTransportStats stats_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<int> serving_{0};
  int port_ = 0;
  std::mutex mu_;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions_;  // guarded by mu_
  std::optional<ssl::context> tls_;
  // Declared after everything a session touches: destroying the io_context destroys the sessions
  // its pending handlers still hold.
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  net::steady_timer accept_retry_;
  std::vector<std::thread> threads_;
};

namespace {

template <class Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  Session(HttpTransport::Impl* server, Stream stream)
      : server_(server),
        o_(server->options()),
        stream_(std::move(stream)),
        timer_(stream_.get_executor()),
        buffer_(o_.max_header_bytes + (64 << 10)) {
    server_->stats().open.fetch_add(1);
    server_->stats().accepted.fetch_add(1);
  }
  ~Session() override {
    if (serving_) server_->SetServing(-1);
    server_->Unregister(this);
    server_->stats().open.fetch_sub(1);
  }

  void Start() {
    server_->Register(this, this->weak_from_this());
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->phase_ = Phase::kHandshake;
        self->ArmTimer(self->o_.header_timeout);
        self->stream_.async_handshake(ssl::stream_base::server,
                                      [self](error_code ec) { self->OnHandshake(ec); });
      } else {
        self->ReadRequest();
      }
    });
  }

  void Drain() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->phase_ != Phase::kServing) self->Close();
    });
  }
  void ForceStop() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Close(); });
  }

 private:
  enum class Phase { kHandshake, kIdle, kHeader, kBody, kServing, kLinger, kClosed };

  tcp::socket& Socket() { return beast::get_lowest_layer(stream_); }

  // ---- Timer: one deadline at a time; a stale expiry (re-armed since) is ignored.
  void ArmTimer(absl::Duration d) {
    ++timer_seq_;
    timer_.expires_after(absl::ToChronoNanoseconds(d));
    timer_.async_wait([self = this->shared_from_this(), seq = timer_seq_](error_code ec) {
      if (ec || seq != self->timer_seq_ || self->phase_ == Phase::kClosed) return;
      self->OnTimeout();
    });
  }
  void CancelTimer() {
    ++timer_seq_;
    timer_.cancel();
  }
  void OnTimeout() {
    HttpTransportStats& st = server_->stats();
    switch (phase_) {
      case Phase::kHandshake:
      case Phase::kHeader:
        st.header_timeouts.fetch_add(1);
        break;
      case Phase::kBody:
        st.body_timeouts.fetch_add(1);
        break;
      case Phase::kIdle:
      case Phase::kServing:  // a write that made no progress
        st.idle_timeouts.fetch_add(1);
        break;
      default:
        break;
    }
    Close();
  }

  void OnHandshake(error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      server_->stats().tls_failures.fetch_add(1);
      Close();
      return;
    }
    ReadRequest();
  }

  // ---- Reading a request.
  void ReadRequest() {
    if (server_->draining()) {
      Close();
      return;
    }
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(o_.max_header_bytes));
    parser_->body_limit(o_.max_body_bytes);
    phase_ = Phase::kIdle;
    if (buffer_.size() > 0 && !read_pending_) {
      ReadHeader();
      return;
    }
    ArmTimer(o_.idle_timeout);
    if (!read_pending_) PostRead();  // else the read posted while serving is still waiting
  }

  // One read into the buffer: the first bytes of a request, or (while serving) the watch for
  // the client's end-of-stream.
  void PostRead() {
    read_pending_ = true;
    stream_.async_read_some(
        buffer_.prepare(4096),
        [self = this->shared_from_this()](error_code ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(error_code ec, size_t n) {
    read_pending_ = false;
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      Close();  // serving: the client went away, and Close cancels its request
      return;
    }
    buffer_.commit(n);
    if (phase_ == Phase::kIdle) {
      ReadHeader();
    } else if (phase_ == Phase::kLinger) {
      Discard();
    }
    // Serving: bytes of a pipelined next request stay in the buffer for later; the watch is not
    // posted again (the next read would have to be cancelled before parsing them).
  }

  void ReadHeader() {
    phase_ = Phase::kHeader;
    ArmTimer(o_.header_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        return Refuse(431, "the request head is too large");
      }
      if (ec == http::error::body_limit) return Refuse(413, "the request body is too large");
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::operation_aborted || ec == net::error::connection_reset) {
        return Close();
      }
      return Refuse(400, "the request is not valid HTTP/1.1");
    }
    CheckHead();
  }

  void CheckHead() {
    const auto& h = parser_->get();
    version_ = h.version();
    if (version_ != 10 && version_ != 11) {
      version_ = 11;
      return Refuse(505, "only HTTP/1.0 and HTTP/1.1 are served");
    }
    keep_alive_ = h.keep_alive();
    int fields = 0;
    for (auto it = h.begin(); it != h.end(); ++it) ++fields;
    if (fields > o_.max_header_count) return Refuse(431, "the request has too many header fields");

    request_ = HttpRequest();
    request_.method = std::string(h.method_string());
    head_request_ = request_.method == "HEAD";
    if (head_request_) request_.method = "GET";
    const std::string_view target = h.target();
    if (target.empty() || target[0] != '/') return Refuse(400, "the request target must be a path");
    const size_t q = target.find('?');
    request_.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request_.query = std::string(target.substr(q + 1));
    for (const auto& field : h) {
      const std::string_view name = field.name_string();
      const std::string_view value = field.value();
      request_.headers.emplace_back(absl::AsciiStrToLower(Av(name)),
                                    std::string(value.data(), value.size()));
    }

    // CORS and Origin: browsers attach Origin to every cross-origin request and to same-origin
    // POSTs, so refusing unlisted origins also refuses DNS-rebinding pages (same-origin to the
    // browser, but the Origin names the attacker's host).
    cors_.clear();
    if (const std::string* origin = request_.Header("origin")) {
      if (!OriginAllowed(*origin))
        return Refuse(403, "this Origin is not allowed (see --allowed_origins)");
      cors_.emplace_back("Access-Control-Allow-Origin", *origin);
      cors_.emplace_back("Vary", "Origin");
      if (!o_.exposed_headers.empty()) {
        cors_.emplace_back("Access-Control-Expose-Headers",
                           absl::StrJoin(o_.exposed_headers, ", "));
      }
      if (request_.method == "OPTIONS" && request_.Header("access-control-request-method")) {
        return Preflight();
      }
    }

    // The route.
    route_ = nullptr;
    std::string allow;
    for (const HttpRoute& r : server_->routes()) {
      const bool path_matches =
          r.prefix ? absl::StartsWith(request_.path, r.path) : request_.path == r.path;
      if (!path_matches) continue;
      if (r.method == request_.method) {
        route_ = &r;
        break;
      }
      if (!absl::StrContains(allow, r.method))
        absl::StrAppend(&allow, allow.empty() ? "" : ", ", r.method);
    }
    if (route_ == nullptr) {
      if (allow.empty()) return Refuse(404, "no such route");
      HttpResponse r = HttpError(405, "this route does not take this method");
      r.headers.emplace_back("Allow", allow);
      return RefuseWith(std::move(r));
    }

    // The key (SEC-6), before any of the body is read.
    if (!route_->open && o_.api_keys != nullptr && o_.api_keys->enabled()) {
      const std::string* auth = request_.Header("authorization");
      std::optional<std::string_view> token;
      if (auth != nullptr) token = ApiKeys::BearerToken(*auth);
      std::optional<std::string> tenant;
      if (token) tenant = o_.api_keys->Authenticate(*token);
      if (!tenant) {
        server_->stats().unauthenticated.fetch_add(1);
        HttpResponse r = HttpError(401, "a valid API key is required (Authorization: Bearer KEY)");
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return RefuseWith(std::move(r));
      }
      request_.tenant = std::move(*tenant);
    }

    // Framing and encoding (SEC-2).
    if (const std::string* te = request_.Header("transfer-encoding")) {
      if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(*te), "chunked")) {
        return Refuse(415, "Transfer-Encoding other than chunked is not supported");
      }
    }
    coding_ = Coding::kIdentity;
    if (const std::string* ce = request_.Header("content-encoding")) {
      coding_ = ParseContentEncoding(*ce);
      if (coding_ == Coding::kUnsupported) {
        return Refuse(415, "Content-Encoding must be identity, gzip or deflate");
      }
    }
    if (route_->json_body) {
      const std::string* ct = request_.Header("content-type");
      if (ct == nullptr || !absl::EqualsIgnoreCase(MediaType(*ct), "application/json")) {
        return Refuse(415, "Content-Type must be application/json");
      }
    }
    if (parser_->is_done()) return Dispatch();

    if (const std::string* expect = request_.Header("expect")) {
      if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(*expect), "100-continue")) {
        return Refuse(417, "the only expectation served is 100-continue");
      }
      if (version_ == 11) {
        // The client waits for this before it sends the body: every check above has passed.
        out_ = "HTTP/1.1 100 Continue\r\n\r\n";
        phase_ = Phase::kBody;
        ArmTimer(o_.idle_timeout);
        net::async_write(stream_, net::buffer(out_),
                         [self = this->shared_from_this()](error_code ec, size_t) {
                           if (self->phase_ == Phase::kClosed) return;
                           if (ec) return self->Close();
                           self->ReadBody();
                         });
        return;
      }
    }
    ReadBody();
  }

  bool OriginAllowed(const std::string& origin) const {
    for (const std::string& allowed : o_.allowed_origins) {
      if (allowed == "*" || allowed == origin) return true;
    }
    return false;
  }

  void Preflight() {
    HttpResponse r;
    r.status = 204;
    r.content_type.clear();
    r.headers = cors_;
    r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const std::string* asked = request_.Header("access-control-request-headers");
    r.headers.emplace_back("Access-Control-Allow-Headers", asked != nullptr && IsTokenList(*asked)
                                                               ? *asked
                                                               : "authorization, content-type");
    r.headers.emplace_back("Access-Control-Max-Age", "600");
    cors_.clear();  // already in the headers
    if (!parser_->is_done()) keep_alive_ = false;
    WriteWhole(std::move(r));
  }

  void ReadBody() {
    phase_ = Phase::kBody;
    ArmTimer(o_.body_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      if (ec == http::error::body_limit) return Refuse(413, "the request body is too large");
      if (ec == http::error::buffer_overflow) return Refuse(400, "a chunk header is too long");
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::operation_aborted || ec == net::error::connection_reset ||
          ec == http::error::partial_message) {
        return Close();
      }
      return Refuse(400, "the request body is not valid HTTP/1.1 framing");
    }
    Dispatch();
  }

  // ---- Serving.
  void Dispatch() {
    CancelTimer();
    std::string body = parser_->release().body();
    const size_t wire_bytes = body.size();
    if (coding_ == Coding::kInflate) {
      std::string decoded;
      absl::Status s = Inflate(body, o_.max_body_bytes, &decoded);
      if (!s.ok()) {
        NoteLarge(wire_bytes);
        return s.code() == absl::StatusCode::kResourceExhausted
                   ? WriteWhole(HttpError(413, "the decoded request body is too large"))
                   : WriteWhole(HttpError(400, std::string(s.message())));
      }
      body = std::move(decoded);
    }
    request_bytes_ = std::max(wire_bytes, body.size());
    request_.body = std::move(body);
    phase_ = Phase::kServing;
    if (!serving_) {
      serving_ = true;
      server_->SetServing(1);
    }
    // Watch the connection for the client going away while the request runs (SEC-4: the
    // request's own connection, not a guess from its ports).
    if (!read_pending_ && buffer_.size() == 0) PostRead();

    std::weak_ptr<Session> weak = this->shared_from_this();
    HttpWaker wake = [weak] {
      if (std::shared_ptr<Session> s = weak.lock()) s->Wake();
    };
    HttpReply reply;
    try {
      reply = route_->handler(std::move(request_), std::move(wake));
    } catch (const std::exception&) {
      reply = HttpReply{HttpError(500, "internal error"), nullptr};
    }
    if (reply.async == nullptr) return WriteWhole(std::move(reply.response));
    // While the reply waits for the engine, nothing else may hold this session (the watch is
    // not posted when pipelined bytes are waiting, and wakes hold it weakly): hold it here until
    // the reply ends (FinishRequest) or the connection closes (Close).
    self_ = this->shared_from_this();
    reply_ = std::move(reply.async);
    reply_done_ = false;
    head_sent_ = false;
    Pump();
  }

  void Wake() {
    if (wake_pending_.exchange(true)) return;
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->wake_pending_.store(false);
      self->Pump();
    });
  }

  // Takes what the reply has ready and writes it; one write at a time (the next Poll comes when
  // it completes, so a slow reader gets fewer, larger writes rather than a growing queue).
  void Pump() {
    if (phase_ != Phase::kServing || reply_ == nullptr || reply_done_ || writing_) return;
    HttpAsyncReply::Output out;
    try {
      reply_->Poll(&out);
    } catch (const std::exception&) {
      out = HttpAsyncReply::Output();
      if (!head_sent_) {
        out.head = HttpError(500, "internal error");
      }
      out.done = true;
    }
    std::string bytes;
    if (out.head) {
      if (!out.head->stream) {
        reply_done_ = true;
        reply_.reset();
        return WriteWhole(std::move(*out.head));
      }
      head_sent_ = true;
      chunked_ = version_ == 11;
      if (!chunked_) keep_alive_ = false;  // HTTP/1.0: the end of the stream is the close
      bytes = FormatHead(*out.head, std::nullopt);
      AppendBody(&bytes, out.head->body);
    }
    if (!head_sent_) {
      if (out.done) {  // a reply that ended without a head: a bug in the route
        reply_done_ = true;
        reply_.reset();
        return WriteWhole(HttpError(500, "internal error"));
      }
      return;
    }
    AppendBody(&bytes, out.data);
    if (out.done) {
      reply_done_ = true;
      if (chunked_) bytes += "0\r\n\r\n";
    }
    if (bytes.empty()) {
      if (reply_done_) FinishRequest();
      return;
    }
    response_bytes_ += bytes.size();
    Write(std::move(bytes));
  }

  void AppendBody(std::string* bytes, const std::string& data) {
    if (data.empty() || head_request_) return;
    if (chunked_) {
      absl::StrAppend(bytes, absl::Hex(data.size()), "\r\n", data, "\r\n");
    } else {
      bytes->append(data);
    }
  }

  std::string FormatHead(const HttpResponse& r, std::optional<size_t> content_length) {
    std::string head = absl::StrCat(version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ", r.status, " ",
                                    Reason(r.status), "\r\n");
    if (!r.content_type.empty()) absl::StrAppend(&head, "Content-Type: ", r.content_type, "\r\n");
    if (content_length) {
      if (r.status != 204) absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
    } else if (chunked_) {
      head += "Transfer-Encoding: chunked\r\n";
    }
    const bool keep = keep_alive_ && !server_->draining();
    if (version_ == 11 && !keep) head += "Connection: close\r\n";
    if (version_ == 10 && keep) head += "Connection: keep-alive\r\n";
    for (const auto& [name, value] : r.headers) {
      if (SafeHeaderText(name) && SafeHeaderText(value)) {
        absl::StrAppend(&head, name, ": ", value, "\r\n");
      }
    }
    for (const auto& [name, value] : cors_) absl::StrAppend(&head, name, ": ", value, "\r\n");
    head += "\r\n";
    return head;
  }

  void WriteWhole(HttpResponse r) {
    if (phase_ == Phase::kClosed) return;
    if (phase_ != Phase::kServing) {
      // An answer before the request was read through (an error, a preflight).
      phase_ = Phase::kServing;
      if (!serving_) {
        serving_ = true;
        server_->SetServing(1);
      }
    }
    chunked_ = false;
    std::string bytes = FormatHead(r, r.body.size());
    if (!head_request_) bytes += r.body;
    reply_done_ = true;
    response_bytes_ += bytes.size();
    Write(std::move(bytes));
  }

  void Write(std::string bytes) {
    out_ = std::move(bytes);
    writing_ = true;
    ArmTimer(o_.idle_timeout);  // a client that takes nothing for this long is gone
    net::async_write(
        stream_, net::buffer(out_),
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(error_code ec) {
    writing_ = false;
    if (phase_ == Phase::kClosed) return;
    CancelTimer();
    out_.clear();
    if (ec) return Close();
    if (reply_done_) return FinishRequest();
    Pump();
  }

  void FinishRequest() {
    reply_.reset();
    std::shared_ptr<Session> self = std::move(self_);  // released when this returns
    if (serving_) {
      serving_ = false;
      server_->SetServing(-1);
    }
    if (o_.on_large_request && std::max(request_bytes_, response_bytes_) >= kLargeRequestBytes) {
      o_.on_large_request(std::max(request_bytes_, response_bytes_));
    }
    request_bytes_ = 0;
    response_bytes_ = 0;
    head_request_ = false;
    cors_.clear();
    if (unread_body_) return Linger();
    if (!keep_alive_ || server_->draining()) return Close();
    ReadRequest();
  }

  void NoteLarge(size_t bytes) { request_bytes_ = std::max(request_bytes_, bytes); }

  // An error answered before the body was read: the connection closes after it.
  void Refuse(int status, std::string_view message) { RefuseWith(HttpError(status, message)); }
  void RefuseWith(HttpResponse r) {
    // Framing unknown (the head did not parse) or a body left unread: the connection cannot carry
    // another request.
    unread_body_ = !parser_.has_value() || !parser_->is_header_done() || !parser_->is_done();
    if (unread_body_) keep_alive_ = false;
    WriteWhole(std::move(r));
  }

  // Reads and drops what the client still sends, for a bounded time and size, then closes: a
  // client that writes its whole body before reading sees the error instead of a reset.
  void Linger() {
    unread_body_ = false;
    phase_ = Phase::kLinger;
    if constexpr (!kTls) {
      error_code ignored;
      Socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
    ++timer_seq_;
    timer_.expires_after(kLingerTime);
    timer_.async_wait([self = this->shared_from_this(), seq = timer_seq_](error_code ec) {
      if (!ec && seq == self->timer_seq_) self->Close();
    });
    if (!read_pending_) Discard();
  }
  void Discard() {
    if (phase_ != Phase::kLinger) return;
    read_pending_ = true;
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(16 << 10),
                            [self = this->shared_from_this()](error_code ec, size_t n) {
                              self->read_pending_ = false;
                              self->lingered_ += n;
                              if (ec || self->lingered_ > kLingerBytes) return self->Close();
                              self->Discard();
                            });
  }

  void Close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    std::shared_ptr<Session> self = std::move(self_);  // released when this returns
    CancelTimer();
    if (reply_ != nullptr) {
      std::shared_ptr<HttpAsyncReply> reply = std::move(reply_);
      if (!reply_done_) reply->Cancel();
    }
    if (serving_) {
      serving_ = false;
      server_->SetServing(-1);
    }
    error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }

  HttpTransport::Impl* const server_;
  const HttpTransportOptions& o_;
  Stream stream_;
  net::steady_timer timer_;
  uint64_t timer_seq_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Phase phase_ = Phase::kIdle;
  bool read_pending_ = false;
  bool writing_ = false;
  bool serving_ = false;
  bool keep_alive_ = false;
  bool head_request_ = false;
  bool unread_body_ = false;
  unsigned version_ = 11;
  Coding coding_ = Coding::kIdentity;
  const HttpRoute* route_ = nullptr;
  HttpRequest request_;
  std::vector<std::pair<std::string, std::string>> cors_;
  std::shared_ptr<HttpAsyncReply> reply_;
  std::shared_ptr<Session> self_;  // set while an async reply runs
  bool reply_done_ = false;
  bool head_sent_ = false;
  bool chunked_ = false;
  std::atomic<bool> wake_pending_{false};
  std::string out_;
  size_t request_bytes_ = 0;
  size_t response_bytes_ = 0;
  size_t lingered_ = 0;
};

}  // namespace

namespace {

// The server's TLS context from PEM files. Errors name the flag, never the file's content.
absl::Status LoadTls(const std::string& cert, const std::string& key, const std::string& client_ca,
                     ssl::context* c) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (!client_ca.empty() && cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
  }
  c->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                 ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                 ssl::context::single_dh_use);
  error_code ec;
  c->use_certificate_chain_file(cert, ec);
  if (ec)
    return absl::InvalidArgumentError("--tls_cert_file cannot be loaded (PEM certificate chain)");
  c->use_private_key_file(key, ssl::context::pem, ec);
  if (ec || SSL_CTX_check_private_key(c->native_handle()) != 1) {
    return absl::InvalidArgumentError(
        "--tls_key_file cannot be loaded or does not match --tls_cert_file");
  }
  if (!client_ca.empty()) {
    c->load_verify_file(client_ca, ec);
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca.c_str());
    if (ec || names == nullptr) {
      return absl::InvalidArgumentError("--tls_client_ca_file cannot be loaded (PEM)");
    }
    SSL_CTX_set_client_CA_list(c->native_handle(), names);
    c->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    static const unsigned char kContext[] = "griffin-http";
    SSL_CTX_set_session_id_context(c->native_handle(), kContext, sizeof(kContext) - 1);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTlsFiles(const std::string& cert, const std::string& key,
                           const std::string& client_ca) {
  ssl::context c(ssl::context::tls_server);
  return LoadTls(cert, key, client_ca, &c);
}

absl::Status HttpTransport::Impl::Start() {
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty() ||
      !options_.tls_client_ca_file.empty()) {
    tls_.emplace(ssl::context::tls_server);
    absl::Status loaded =
        LoadTls(options_.tls_cert_file, options_.tls_key_file, options_.tls_client_ca_file, &*tls_);
    if (!loaded.ok()) {
      tls_.reset();
      return loaded;
    }
  }

  error_code ec;
  tcp::endpoint endpoint;
  const net::ip::address address = net::ip::make_address(options_.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<unsigned short>(options_.port));
  } else {  // a name (localhost): its first address
    tcp::resolver resolver(ioc_);
    auto results = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec || results.empty()) return absl::InvalidArgumentError("--host cannot be resolved");
    endpoint = results.begin()->endpoint();
  }
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);  // not REUSEPORT
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot bind ", options_.host, ":", options_.port));
  }
  port_ = acceptor_.local_endpoint().port();
  Accept();
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    threads_.emplace_back([this] {
      SetCurrentThreadName("griffin-http");
      ioc_.run();
    });
  }
  return absl::OkStatus();
}

void HttpTransport::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpTransport::Impl::OnAccept(error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open() || draining_.load()) return;
  if (ec) {
    // Out of descriptors (EMFILE) and the like: try again shortly rather than spin.
    accept_retry_.expires_after(std::chrono::milliseconds(50));
    accept_retry_.async_wait([this](error_code e) {
      if (!e && acceptor_.is_open()) Accept();
    });
    return;
  }
  if (stats_.open.load() >= options_.max_connections) {
    stats_.refused.fetch_add(1);  // SEC-1: refused at accept
    error_code ignored;
    socket.close(ignored);
  } else {
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);  // server-sent events go out at once
    if (tls_) {
      std::make_shared<Session<ssl::stream<tcp::socket>>>(
          this, ssl::stream<tcp::socket>(std::move(socket), *tls_))
          ->Start();
    } else {
      std::make_shared<Session<tcp::socket>>(this, std::move(socket))->Start();
    }
  }
  Accept();
}

void HttpTransport::Impl::ForEachSession(void (SessionBase::*action)()) {
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [raw, weak] : sessions_) {
      if (std::shared_ptr<SessionBase> s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (const auto& s : live) (s.get()->*action)();
}

void HttpTransport::Impl::BeginDrain() {
  if (draining_.exchange(true)) return;
  net::post(acceptor_.get_executor(), [this] {
    error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
  });
  ForEachSession(&SessionBase::Drain);
}

void HttpTransport::Impl::Stop(absl::Duration grace) {
  if (stopped_.exchange(true)) return;
  if (threads_.empty()) return;  // never started
  BeginDrain();
  const absl::Time until = absl::Now() + grace;
  while (serving_.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ForEachSession(&SessionBase::ForceStop);
  // Let the closes run (bounded), then stop the threads; the io_context's destructor destroys
  // whatever handlers remain, and with them the sessions.
  const absl::Time closing = absl::Now() + absl::Milliseconds(200);
  while (stats_.open.load() > 0 && absl::Now() < closing) absl::SleepFor(absl::Milliseconds(2));
  ioc_.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  // Whatever did not close in time closes now, on this thread (the I/O threads are gone), so the
  // sessions, their replies and the requests those hold are released before Stop returns and
  // never after the caller has torn down what they point to (the engine).
  ioc_.restart();
  for (int round = 0; round < 3 && stats_.open.load() > 0; ++round) {
    ForEachSession(&SessionBase::ForceStop);
    ioc_.poll();
  }
  {
    error_code ignored;
    acceptor_.close(ignored);
  }
  ioc_.poll();
}

HttpTransport::HttpTransport(HttpTransportOptions options, std::vector<HttpRoute> routes)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(routes))) {}
HttpTransport::~HttpTransport() = default;
absl::Status HttpTransport::Start() { return impl_->Start(); }
void HttpTransport::BeginDrain() { impl_->BeginDrain(); }
void HttpTransport::Stop(absl::Duration grace) { impl_->Stop(grace); }
int HttpTransport::port() const { return impl_->port(); }
const HttpTransportStats& HttpTransport::stats() const { return impl_->stats(); }

}  // namespace griffin::server
