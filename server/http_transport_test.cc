// The HTTP transport alone, with synthetic routes, over raw loopback sockets: limits (431, 413,
// 415), framing (chunked, gzip, HEAD, HTTP/1.0, 100-continue, keep-alive), API keys, CORS,
// timeouts, the connection cap, client disconnects seen on the request's own connection (SEC-4),
// async and streamed replies, and drain. The same cases run under ASan/UBSan and TSan in
// `make sanitize`. Deadlines in this file bound waits (a hang fails); none asserts a duration.
#include "server/http_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace griffin::server {
namespace {

using namespace std::chrono_literals;

// ---- A minimal client over a raw socket.

class Conn {
 public:
  // Connects to 127.0.0.1:port, from `source` (an address, and a port when non-zero).
  explicit Conn(int port, const char* source = nullptr, int source_port = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (source != nullptr) {
      setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in local{};
      local.sin_family = AF_INET;
      local.sin_port = htons(source_port);
      inet_pton(AF_INET, source, &local.sin_addr);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
        ADD_FAILURE() << "bind to the source address failed";
      }
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Conn() { Close(); }
  Conn(const Conn&) = delete;

  bool connected() const { return connected_; }
  int local_port() const {
    sockaddr_in a{};
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  // Resets instead of closing (an abrupt client exit).
  void Reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    Close();
  }
  bool Send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads whatever arrives within `wait`; "" with closed() when the server closed.
  std::string ReadSome(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(wait.count())) <= 0) return "";
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      closed_ = true;
      return "";
    }
    return std::string(buf, static_cast<size_t>(n));
  }
  // True when the server closes the connection within `wait` (data before the close is dropped).
  bool WaitClosed(std::chrono::milliseconds wait) {
    const auto until = std::chrono::steady_clock::now() + wait;
    while (!closed_ && std::chrono::steady_clock::now() < until) ReadSome(50ms);
    return closed_;
  }
  bool closed() const { return closed_; }

  struct Response {
    int status = -1;
    std::string head;  // status line and headers
    std::string body;  // de-chunked
    bool Has(const std::string& header_line) const {
      return head.find("\r\n" + header_line + "\r\n") != std::string::npos;
    }
  };
  // Reads one response (Content-Length, chunked, or to the close); status -1 on a close or a
  // 10 s silence.
  Response Read(bool head_request = false) {
    Response r;
    const auto until = std::chrono::steady_clock::now() + 10s;
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (std::chrono::steady_clock::now() > until || closed_) return r;
      in_ += ReadSome(100ms);
    }
    r.head = in_.substr(0, end + 2);
    in_.erase(0, end + 4);
    r.status = std::atoi(r.head.substr(9, 3).c_str());
    if (r.status == 100) return r;
    if (head_request || r.status == 204) return r;
    const size_t cl = r.head.find("Content-Length: ");
    if (cl != std::string::npos) {
      const size_t len = std::strtoul(r.head.c_str() + cl + 16, nullptr, 10);
      while (in_.size() < len && !closed_ && std::chrono::steady_clock::now() < until) {
        in_ += ReadSome(100ms);
      }
      r.body = in_.substr(0, len);
      in_.erase(0, std::min(len, in_.size()));
    } else if (r.Has("Transfer-Encoding: chunked")) {
      while (true) {
        size_t eol;
        while ((eol = in_.find("\r\n")) == std::string::npos) {
          if (closed_ || std::chrono::steady_clock::now() > until) return r;
          in_ += ReadSome(100ms);
        }
        const size_t size = std::strtoul(in_.substr(0, eol).c_str(), nullptr, 16);
        while (in_.size() < eol + 2 + size + 2) {
          if (closed_ || std::chrono::steady_clock::now() > until) return r;
          in_ += ReadSome(100ms);
        }
        r.body += in_.substr(eol + 2, size);
        in_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;
      }
    } else {
      while (!closed_ && std::chrono::steady_clock::now() < until) in_ += ReadSome(100ms);
      r.body = in_;
      in_.clear();
    }
    return r;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string in_;
};

std::string Post(const std::string& path, const std::string& body,
                 const std::string& extra = "Content-Type: application/json\r\n") {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: x\r\n", extra,
                      "Content-Length: ", body.size(), "\r\n\r\n", body);
}
std::string Get(const std::string& path, const std::string& extra = "") {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\n", extra, "\r\n");
}

std::string Gzip(const std::string& data) {
  z_stream zs{};
  deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// A gzip stream of `mib` MiB of zeros, compressed piece by piece (a bomb: about 1000:1).
std::string GzipZeros(int mib) {
  z_stream zs{};
  deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string zeros(1 << 20, '\0'), out;
  char buf[1 << 16];
  for (int i = 0; i < mib; ++i) {
    zs.next_in = reinterpret_cast<Bytef*>(zeros.data());
    zs.avail_in = static_cast<uInt>(zeros.size());
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof(buf);
      deflate(&zs, i + 1 == mib ? Z_FINISH : Z_NO_FLUSH);
      out.append(buf, sizeof(buf) - zs.avail_out);
    } while (zs.avail_out == 0);
  }
  deflateEnd(&zs);
  return out;
}

// ---- Replies the routes give.

// Waits until Release() (or the connection closes: then Cancel records it).
class HeldReply : public HttpAsyncReply {
 public:
  explicit HeldReply(std::string name) : name_(std::move(name)) {}
  void Poll(Output* out) override {
    if (!released_.load()) return;
    out->head = HttpResponse{.status = 200, .content_type = "text/plain", .body = name_};
    out->done = true;
  }
  void Cancel() override { cancelled_.store(true); }
  void Release(const HttpWaker& wake) {
    released_.store(true);
    wake();
  }
  std::atomic<bool> released_{false};
  std::atomic<bool> cancelled_{false};
  std::string name_;
};

// Streams `count` pieces, one per wake.
class StreamReply : public HttpAsyncReply {
 public:
  explicit StreamReply(int count) : count_(count) {}
  void Poll(Output* out) override {
    if (!started_) {
      started_ = true;
      out->head = HttpResponse{.status = 200, .content_type = "text/event-stream", .stream = true};
    }
    const int ready = ready_.load();
    for (; sent_ < ready && sent_ < count_; ++sent_)
      absl::StrAppend(&out->data, "data: ", sent_, "\n\n");
    out->done = sent_ == count_;
  }
  void Cancel() override { cancelled_.store(true); }
  std::atomic<int> ready_{0};
  std::atomic<bool> cancelled_{false};
  int count_;
  int sent_ = 0;
  bool started_ = false;
};

class HttpTransportTest : public ::testing::Test {
 protected:
  void Start(HttpTransportOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.threads <= 0) o.threads = 2;
    std::vector<HttpRoute> routes;
    routes.push_back(
        {.method = "GET", .path = "/health", .open = true, .handler = [](HttpRequest, HttpWaker) {
           return HttpReply{HttpResponse{.content_type = "text/plain", .body = "ok\n"}};
         }});
    routes.push_back({.method = "POST",
                      .path = "/echo",
                      .json_body = true,
                      .handler = [this](HttpRequest r, HttpWaker) {
                        bodies_seen_.fetch_add(1);
                        HttpResponse res{.content_type = "application/octet-stream"};
                        res.headers.emplace_back("X-Tenant", r.tenant.empty() ? "-" : r.tenant);
                        res.headers.emplace_back("X-Length", std::to_string(r.body.size()));
                        res.body = r.body.size() <= 4096 ? r.body : "";
                        return HttpReply{std::move(res)};
                      }});
    routes.push_back({.method = "GET",
                      .path = "/items/",
                      .prefix = true,
                      .open = true,
                      .handler = [](HttpRequest r, HttpWaker) {
                        return HttpReply{HttpResponse{.content_type = "text/plain",
                                                      .body = r.path + "?" + r.query}};
                      }});
    routes.push_back({.method = "POST",
                      .path = "/held",
                      .json_body = true,
                      .handler = [this](HttpRequest r, HttpWaker wake) {
                        auto reply = std::make_shared<HeldReply>(r.body);
                        std::lock_guard<std::mutex> lock(mu_);
                        held_.push_back({reply, std::move(wake)});
                        cv_.notify_all();
                        return HttpReply{{}, reply};
                      }});
    routes.push_back({.method = "GET",
                      .path = "/stream",
                      .open = true,
                      .handler = [this](HttpRequest, HttpWaker wake) {
                        auto reply = std::make_shared<StreamReply>(5);
                        std::lock_guard<std::mutex> lock(mu_);
                        streams_.push_back({reply, std::move(wake)});
                        cv_.notify_all();
                        return HttpReply{{}, reply};
                      }});
    transport_ = std::make_unique<HttpTransport>(std::move(o), std::move(routes));
    ASSERT_TRUE(transport_->Start().ok());
    port_ = transport_->port();
  }
  void TearDown() override {
    if (transport_) transport_->Stop(absl::ZeroDuration());
  }

  // Waits (bounded) for the n-th held request to reach its route.
  std::pair<std::shared_ptr<HeldReply>, HttpWaker> Held(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return held_.size() > n; });
    if (held_.size() <= n) return {};
    return held_[n];
  }
  std::pair<std::shared_ptr<StreamReply>, HttpWaker> Stream(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return streams_.size() > n; });
    if (streams_.size() <= n) return {};
    return streams_[n];
  }
  template <class F>
  static bool WaitFor(F f, std::chrono::milliseconds limit = 10s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!f()) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  std::unique_ptr<HttpTransport> transport_;
  int port_ = 0;
  std::atomic<int> bodies_seen_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::shared_ptr<HeldReply>, HttpWaker>> held_;
  std::vector<std::pair<std::shared_ptr<StreamReply>, HttpWaker>> streams_;
};

TEST_F(HttpTransportTest, KeepAliveServesManyRequestsOnOneConnection) {
  Start();
  Conn c(port_);
  for (int i = 0; i < 300; ++i) {  // no per-connection request cap
    ASSERT_TRUE(c.Send(Get("/health")));
    Conn::Response r = c.Read();
    ASSERT_EQ(r.status, 200) << i;
    ASSERT_EQ(r.body, "ok\n");
    ASSERT_FALSE(r.Has("Connection: close"));
  }
  // Pipelined: two requests in one write, two answers in order.
  ASSERT_TRUE(c.Send(Get("/items/a?x=1") + Get("/items/b")));
  EXPECT_EQ(c.Read().body, "/items/a?x=1");
  EXPECT_EQ(c.Read().body, "/items/b?");
}

TEST_F(HttpTransportTest, UnknownRoutesAndMethods) {
  Start();
  Conn c(port_);
  c.Send(Get("/nope"));
  EXPECT_EQ(c.Read().status, 404);
  c.Send(Get("/echo"));
  Conn::Response r = c.Read();
  EXPECT_EQ(r.status, 405);
  EXPECT_TRUE(r.Has("Allow: POST"));
  c.Send("BREW /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.Read().status, 405);
  c.Send(Get("/health"));  // the connection still serves
  EXPECT_EQ(c.Read().status, 200);
  Conn bad(port_);
  bad.Send("GET /health HTTP/1.2\r\n\r\n");
  const int status = bad.Read().status;
  EXPECT_TRUE(status == 400 || status == 505) << status;
  Conn worse(port_);
  worse.Send("GET /health HTTP/9.9\r\n\r\n");
  EXPECT_EQ(worse.Read().status, 400);
  Conn noise(port_);
  noise.Send("\x01\x02 garbage\r\n\r\n");
  EXPECT_EQ(noise.Read().status, 400);
}

TEST_F(HttpTransportTest, HeadAndHttp10) {
  Start();
  Conn c(port_);
  c.Send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
  Conn::Response r = c.Read(/*head_request=*/true);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("Content-Length: 3"));
  c.Send(Get("/health"));  // no body bytes were left behind by the HEAD answer
  EXPECT_EQ(c.Read().body, "ok\n");
  Conn old(port_);
  old.Send("GET /health HTTP/1.0\r\n\r\n");
  r = old.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.head.substr(0, 8), "HTTP/1.0");
  EXPECT_TRUE(old.WaitClosed(5s));  // 1.0 without keep-alive: closed after the answer
}

TEST_F(HttpTransportTest, HeaderBytesAndCountLimitsAre431) {  // SEC-2
  Start({.max_header_bytes = 4096, .max_header_count = 20});
  Conn big(port_);
  big.Send("GET /health HTTP/1.1\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n");
  EXPECT_EQ(big.Read().status, 431);
  Conn many(port_);
  std::string head = "GET /health HTTP/1.1\r\n";
  for (int i = 0; i < 25; ++i) absl::StrAppend(&head, "X-", i, ": v\r\n");
  many.Send(head + "\r\n");
  EXPECT_EQ(many.Read().status, 431);
  Conn ok(port_);
  ok.Send(Get("/health", "X-A: 1\r\nX-B: 2\r\n"));
  EXPECT_EQ(ok.Read().status, 200);
}

TEST_F(HttpTransportTest, ContentLengthOverTheLimitIs413BeforeTheBody) {  // SEC-2, LEN-4
  Start({.max_body_bytes = 1000});
  Conn c(port_);
  // Only the head is sent: the answer comes without the body.
  c.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 5000000\r\n\r\n");
  EXPECT_EQ(c.Read().status, 413);
  EXPECT_EQ(bodies_seen_.load(), 0);
  Conn at(port_);
  at.Send(Post("/echo", std::string(1000, 'x')));
  Conn::Response r = at.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("X-Length: 1000"));
}

TEST_F(HttpTransportTest, ChunkedBodyOverTheLimitIs413AsSoonAsItPasses) {  // SEC-2
  Start({.max_body_bytes = 64 << 10});
  Conn c(port_);
  c.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n");
  // 4 KiB chunks until the server answers: it must answer after the limit and long before the
  // client would have sent 4 MiB.
  Conn::Response r;
  size_t sent = 0;
  const std::string chunk = absl::StrCat(absl::Hex(4096), "\r\n", std::string(4096, 'y'), "\r\n");
  std::string got;
  while (sent < (4 << 20)) {
    if (!c.Send(chunk)) break;
    sent += 4096;
    got += c.ReadSome(1ms);
    if (!got.empty() || c.closed()) break;
  }
  if (got.empty()) got = c.ReadSome(5s);
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 413");
  EXPECT_GT(sent, size_t{64 << 10});
  EXPECT_LT(sent, size_t{4 << 20});
  EXPECT_EQ(bodies_seen_.load(), 0);
  // A declared chunk size over the limit is refused at its chunk header.
  Conn d(port_);
  d.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nab");
  EXPECT_EQ(d.Read().status, 413);
  // Within the limit, chunked works.
  Conn e(port_);
  e.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  Conn::Response ok = e.Read();
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "abcde");
}

TEST_F(HttpTransportTest, CompressedBodiesAreBoundedOrRefused) {  // SEC-2
  Start({.max_body_bytes = 1 << 20});
  Conn c(port_);
  c.Send(Post("/echo", Gzip("{\"a\": 1}"),
              "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"));
  Conn::Response r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"a\": 1}");
  // 1 GiB of zeros in about 1 MiB: inflated only up to the limit, then 413.
  const std::string bomb = GzipZeros(1024);
  ASSERT_LT(bomb.size(), size_t{1 << 20});
  c.Send(Post("/echo", bomb, "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"));
  EXPECT_EQ(c.Read().status, 413);
  Conn br(port_);
  br.Send(Post("/echo", "xx", "Content-Type: application/json\r\nContent-Encoding: br\r\n"));
  EXPECT_EQ(br.Read().status, 415);
  Conn te(port_);
  te.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  const int te_status = te.Read().status;
  EXPECT_TRUE(te_status == 415 || te_status == 400) << te_status;
  Conn corrupt(port_);
  corrupt.Send(
      Post("/echo", "not gzip", "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"));
  EXPECT_EQ(corrupt.Read().status, 400);
  EXPECT_EQ(bodies_seen_.load(), 1);
}

TEST_F(HttpTransportTest, JsonRoutesTakeOnlyApplicationJson) {  // SEC-8
  Start();
  for (const std::string& ct :
       {std::string("Content-Type: text/plain\r\n"),
        std::string("Content-Type: application/x-www-form-urlencoded\r\n"),
        std::string("Content-Type: multipart/form-data; boundary=x\r\n"), std::string("")}) {
    Conn c(port_);
    c.Send(Post("/echo", "{}", ct));
    EXPECT_EQ(c.Read().status, 415) << ct;
  }
  Conn ok(port_);
  ok.Send(Post("/echo", "{}", "Content-Type: Application/JSON; charset=utf-8\r\n"));
  EXPECT_EQ(ok.Read().status, 200);
  EXPECT_EQ(bodies_seen_.load(), 1);
}

TEST_F(HttpTransportTest, ApiKeysOnProtectedRoutesOnly) {  // SEC-6
  ApiKeys keys;
  const std::string file = ::testing::TempDir() + "/transport_keys";
  std::ofstream(file) << "alpha-key-0123456789 tenant-a\nbeta-key-0123456789\n";
  ASSERT_TRUE(keys.Load(file, "").ok());
  Start({.api_keys = &keys});
  Conn c(port_);
  c.Send(Post("/echo", "{}"));
  Conn::Response r = c.Read();
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(r.Has("WWW-Authenticate: Bearer"));
  EXPECT_NE(r.body.find("authentication_error"), std::string::npos);
  for (const std::string& auth : {std::string("Authorization: Bearer wrong\r\n"),
                                  std::string("Authorization: Basic YWxwaGE6\r\n"),
                                  std::string("Authorization: Bearer alpha-key-012345678\r\n"),
                                  std::string("Authorization: Bearer \r\n")}) {
    Conn w(port_);
    w.Send(Post("/echo", "{}", "Content-Type: application/json\r\n" + auth));
    EXPECT_EQ(w.Read().status, 401) << auth;
  }
  Conn a(port_);
  a.Send(Post("/echo", "{}",
              "Content-Type: application/json\r\nAuthorization: bearer alpha-key-0123456789\r\n"));
  r = a.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("X-Tenant: tenant-a"));
  a.Send(Post("/echo", "{}",
              "Content-Type: application/json\r\nAuthorization: Bearer beta-key-0123456789\r\n"));
  r = a.Read();
  EXPECT_TRUE(r.Has("X-Tenant: " + ApiKeys::FingerprintTenant("beta-key-0123456789")));
  Conn open(port_);
  open.Send(Get("/health"));
  EXPECT_EQ(open.Read().status, 200);
  // Revoked by a reload: refused from the next request on.
  std::ofstream(file) << "beta-key-0123456789\n";
  ASSERT_TRUE(keys.Reload().ok());
  a.Send(Post("/echo", "{}",
              "Content-Type: application/json\r\nAuthorization: Bearer alpha-key-0123456789\r\n"));
  EXPECT_EQ(a.Read().status, 401);
  EXPECT_EQ(bodies_seen_.load(), 2);
}

TEST_F(HttpTransportTest, CorsOffUnlessOriginsAreListed) {  // SEC-8
  Start();
  Conn c(port_);
  c.Send(Get("/health"));
  Conn::Response r = c.Read();
  EXPECT_EQ(r.head.find("Access-Control"), std::string::npos);
  c.Send(Post("/echo", "{}", "Content-Type: application/json\r\nOrigin: http://evil.example\r\n"));
  EXPECT_EQ(c.Read().status, 403);
  Conn pre(port_);
  pre.Send(
      "OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
      "Access-Control-Request-Method: POST\r\n\r\n");
  r = pre.Read();
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.head.find("Access-Control"), std::string::npos);
  EXPECT_EQ(bodies_seen_.load(), 0);
}

TEST_F(HttpTransportTest, CorsForListedOrigins) {
  Start({.allowed_origins = {"https://app.example"}, .exposed_headers = {"X-Session-Id"}});
  Conn pre(port_);
  pre.Send(
      "OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
      "Access-Control-Request-Method: POST\r\n"
      "Access-Control-Request-Headers: authorization, content-type\r\n\r\n");
  Conn::Response r = pre.Read();
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(r.Has("Access-Control-Allow-Origin: https://app.example"));
  EXPECT_TRUE(r.Has("Access-Control-Allow-Headers: authorization, content-type"));
  pre.Send(
      Post("/echo", "{}", "Content-Type: application/json\r\nOrigin: https://app.example\r\n"));
  r = pre.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("Access-Control-Allow-Origin: https://app.example"));
  EXPECT_TRUE(r.Has("Vary: Origin"));
  EXPECT_TRUE(r.Has("Access-Control-Expose-Headers: X-Session-Id"));
  Conn other(port_);
  other.Send(Get("/health", "Origin: https://app.example.evil\r\n"));
  EXPECT_EQ(other.Read().status, 403);
}

TEST_F(HttpTransportTest, RangeIsIgnored) {  // SEC-8
  Start();
  Conn c(port_);
  c.Send(Get("/health", "Range: bytes=0-0,0-0,0-0,0-0\r\n"));
  Conn::Response r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
}

TEST_F(HttpTransportTest, ExpectContinue) {
  Start();
  Conn c(port_);
  c.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(c.Read().status, 100);
  c.Send("{}");
  EXPECT_EQ(c.Read().status, 200);
  // Refused requests get their final answer instead of 100 (the body is never sent).
  Conn u(port_);
  u.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
      "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(u.Read().status, 415);
}

TEST_F(HttpTransportTest, HeaderDeadlineClosesATricklingClient) {  // SEC-1
  Start({.header_timeout = absl::Milliseconds(800), .idle_timeout = absl::Seconds(30)});
  Conn slow(port_);
  const std::string head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  bool closed = false;
  // One byte every 100 ms would take far longer than the deadline: the server closes first.
  for (int i = 0; i < 200 && !closed; ++i) {
    slow.Send(std::string(1, i < static_cast<int>(head.size()) ? head[i] : 'a'));
    closed = slow.WaitClosed(100ms);
  }
  EXPECT_TRUE(closed);
  EXPECT_GE(transport_->stats().header_timeouts.load(), 1);
  Conn ok(port_);
  ok.Send(Get("/health"));
  EXPECT_EQ(ok.Read().status, 200);
}

TEST_F(HttpTransportTest, IdleKeepAliveConnectionsAreClosed) {
  Start({.idle_timeout = absl::Milliseconds(500)});
  Conn c(port_);
  c.Send(Get("/health"));
  EXPECT_EQ(c.Read().status, 200);
  EXPECT_TRUE(c.WaitClosed(10s));
  Conn never(port_);  // connected, never sends a byte
  EXPECT_TRUE(never.WaitClosed(10s));
  EXPECT_GE(transport_->stats().idle_timeouts.load(), 2);
}

TEST_F(HttpTransportTest, ConnectionsOverTheCapAreRefusedAtAccept) {  // SEC-1
  Start({.max_connections = 8});
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(std::make_unique<Conn>(port_));
    held.back()->Send(Get("/health"));
    ASSERT_EQ(held.back()->Read().status, 200);
  }
  Conn extra(port_);
  EXPECT_TRUE(extra.WaitClosed(10s));
  EXPECT_GE(transport_->stats().refused.load(), 1);
  held.pop_back();  // one closes: a new connection is served again
  ASSERT_TRUE(WaitFor([&] { return transport_->stats().open.load() < 8; }));
  Conn again(port_);
  again.Send(Get("/health"));
  EXPECT_EQ(again.Read().status, 200);
}

TEST_F(HttpTransportTest, AsyncReplyAndDisconnectCancelsOnlyItsOwnRequest) {  // SEC-4
  Start();
  // Two clients on different addresses with the same source port.
  Conn a(port_, "127.0.0.2", 0);
  ASSERT_TRUE(a.connected());
  const int source_port = a.local_port();
  Conn b(port_, "127.0.0.3", source_port);
  ASSERT_TRUE(b.connected());
  ASSERT_EQ(b.local_port(), source_port);
  a.Send(Post("/held", "A"));
  auto [reply_a, wake_a] = Held(0);
  ASSERT_NE(reply_a, nullptr);
  b.Send(Post("/held", "B"));
  auto [reply_b, wake_b] = Held(1);
  ASSERT_NE(reply_b, nullptr);
  ASSERT_EQ(reply_a->name_, "A");
  a.Close();  // A goes away
  ASSERT_TRUE(WaitFor([&] { return reply_a->cancelled_.load(); }));
  EXPECT_FALSE(reply_b->cancelled_.load());
  reply_b->Release(wake_b);
  Conn::Response r = b.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "B");
  EXPECT_FALSE(reply_b->cancelled_.load());
  // A wake after the connection closed does nothing.
  reply_a->Release(wake_a);
}

TEST_F(HttpTransportTest, PipelinedRequestBehindAWaitingReply) {
  Start();
  Conn c(port_);
  // Both in one write: the first waits for the engine while the second's bytes are buffered.
  c.Send(Post("/held", "first") + Get("/health"));
  auto [reply, wake] = Held(0);
  ASSERT_NE(reply, nullptr);
  std::this_thread::sleep_for(200ms);  // nothing holds the connection but the reply itself
  EXPECT_FALSE(reply->cancelled_.load());
  reply->Release(wake);
  Conn::Response first = c.Read();
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, "first");
  EXPECT_EQ(c.Read().body, "ok\n");
}

TEST_F(HttpTransportTest, StreamedReplyIsChunkedAndAResetCancelsIt) {
  Start();
  Conn c(port_);
  c.Send(Get("/stream"));
  auto [s, wake] = Stream(0);
  ASSERT_NE(s, nullptr);
  for (int i = 1; i <= 5; ++i) {
    s->ready_.store(i);
    wake();
  }
  Conn::Response r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("Transfer-Encoding: chunked"));
  EXPECT_EQ(r.body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
  EXPECT_FALSE(s->cancelled_.load());
  Conn d(port_);
  d.Send(Get("/stream"));
  auto [s2, wake2] = Stream(1);
  ASSERT_NE(s2, nullptr);
  s2->ready_.store(1);
  wake2();
  std::string seen;
  for (int i = 0; i < 50 && seen.find("data: 0") == std::string::npos; ++i)
    seen += d.ReadSome(100ms);
  EXPECT_NE(seen.find("data: 0"), std::string::npos);
  d.Reset();
  ASSERT_TRUE(WaitFor([&] { return s2->cancelled_.load(); }));
}

TEST_F(HttpTransportTest, DrainClosesIdleConnectionsAndFinishesInFlightOnes) {  // SEC-5
  Start();
  Conn idle(port_);
  idle.Send(Get("/health"));
  ASSERT_EQ(idle.Read().status, 200);
  Conn trickle(port_);
  trickle.Send("GET /hea");  // mid-head
  Conn busy(port_);
  busy.Send(Post("/held", "X"));
  auto [reply, wake] = Held(0);
  ASSERT_NE(reply, nullptr);
  transport_->BeginDrain();
  EXPECT_TRUE(idle.WaitClosed(5s));
  EXPECT_TRUE(trickle.WaitClosed(5s));
  EXPECT_FALSE(reply->cancelled_.load());
  reply->Release(wake);
  Conn::Response r = busy.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.Has("Connection: close"));
  EXPECT_TRUE(busy.WaitClosed(5s));
  Conn late(port_);  // no longer accepted
  EXPECT_TRUE(!late.connected() || late.WaitClosed(5s));
}

TEST_F(HttpTransportTest, StopCancelsWhatIsStillRunning) {
  Start();
  Conn busy(port_);
  busy.Send(Post("/held", "X"));
  auto [reply, wake] = Held(0);
  ASSERT_NE(reply, nullptr);
  transport_->Stop(absl::Milliseconds(100));
  EXPECT_TRUE(reply->cancelled_.load());
  EXPECT_TRUE(busy.WaitClosed(5s));
  EXPECT_EQ(transport_->stats().open.load(), 0);
}

TEST_F(HttpTransportTest, ManyIdleConnectionsCostNoThreads) {  // SEC-1: a few threads serve all
  Start({.threads = 1});
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < 300; ++i) {
    conns.push_back(std::make_unique<Conn>(port_));
    conns.back()->Send("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");  // stuck mid-head
  }
  ASSERT_TRUE(WaitFor([&] { return transport_->stats().open.load() == 300; }));
  Conn probe(port_);
  probe.Send(Get("/health"));
  EXPECT_EQ(probe.Read().status, 200);  // served by the one I/O thread
}

}  // namespace
}  // namespace griffin::server
