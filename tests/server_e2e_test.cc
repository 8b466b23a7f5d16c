// End-to-end tests of griffin-server from C++: a real server process on loopback with the tiny
// random-weight fixture, driven by the generated C++ gRPC client and by curl (SSE). Every call has
// a deadline and the whole binary an alarm, so a hang fails instead of blocking ctest.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "griffin/v1/generation.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

extern char** environ;

namespace {

namespace pb = ::griffin::v1;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A minimal HTTP/1.0 GET on loopback: {status, body}; status -1 when the connection fails.
std::pair<int, std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return {-1, ""};
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
  if (write(fd, req.data(), req.size()) < 0) {
    close(fd);
    return {-1, ""};
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(fd);
  if (out.size() < 12) return {-1, ""};
  const size_t body = out.find("\r\n\r\n");
  return {std::atoi(out.substr(9, 3).c_str()),
          body == std::string::npos ? "" : out.substr(body + 4)};
}

double Gauge(const std::string& metrics, const std::string& name) {
  const size_t at = metrics.find("\n" + name + "{");
  if (at == std::string::npos) return -1;
  const size_t space = metrics.find("} ", at);
  return std::atof(metrics.c_str() + space + 2);
}

class ServerE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    alarm(300);  // the whole binary: a hang becomes a failure
    http_port_ = FreePort();
    grpc_port_ = FreePort();
    const std::string model = std::string(GRIFFIN_SOURCE_DIR) + "/tests/data/griffin";
    std::vector<std::string> args = {GRIFFIN_SERVER,
                                     "--model",
                                     model,
                                     "--backend",
                                     "cpu",
                                     "--http_port",
                                     std::to_string(http_port_),
                                     "--grpc_port",
                                     std::to_string(grpc_port_),
                                     "--slots",
                                     "4",
                                     "--max_output_tokens",
                                     "10000000",
                                     "--drain_timeout",
                                     "10"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = "/tmp/griffin_server_e2e_" + std::to_string(http_port_) + ".log";
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int spawned = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);  // LSan (make sanitize) reports it otherwise
    ASSERT_EQ(spawned, 0);
    for (int i = 0; i < 600 && HttpGet(http_port_, "/ready").first != 200; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(HttpGet(http_port_, "/ready").first, 200);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port_),
                                   grpc::InsecureChannelCredentials());
  }
  static void TearDownTestSuite() {
    channel_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status));
      EXPECT_EQ(WEXITSTATUS(status), 0);  // CAN-6: drain exits 0
    }
  }
  static std::unique_ptr<grpc::ClientContext> Context(int seconds = 60) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return c;
  }
  static pb::GenerateRequest Request(int max_tokens) {
    pb::GenerateRequest r;
    for (int id : {2, 17, 33, 5}) r.mutable_token_ids()->add_ids(id);
    r.mutable_sampling()->set_temperature(0.0);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }
  void ExpectIdle() {
    for (int i = 0; i < 500; ++i) {
      const std::string m = HttpGet(http_port_, "/metrics").second;
      if (Gauge(m, "griffin_num_requests_running") == 0 &&
          Gauge(m, "griffin_num_requests_waiting") == 0 &&
          Gauge(m, "griffin_state_slots_used") == 0) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "the server did not return to idle";
  }

  static inline pid_t pid_ = 0;
  static inline int http_port_ = 0;
  static inline int grpc_port_ = 0;
  static inline std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ServerE2eTest, GenerateStreamsChunksThenComplete) {
  auto stub = pb::Generation::NewStub(channel_);
  auto ctx = Context();
  auto reader = stub->Generate(ctx.get(), Request(16));
  pb::GenerateResponse r;
  int tokens = 0;
  bool complete = false;
  while (reader->Read(&r)) {
    if (r.has_chunk()) tokens += r.chunk().token_ids_size();
    if (r.has_complete()) {
      complete = true;
      EXPECT_EQ(r.complete().finish_reason(), pb::FINISH_REASON_LENGTH);
      EXPECT_EQ(r.complete().usage().completion_tokens(), 16);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(complete);
  EXPECT_EQ(tokens, 16);
}

TEST_F(ServerE2eTest, InvalidArgumentNamesTheField) {
  auto stub = pb::Generation::NewStub(channel_);
  auto ctx = Context();
  pb::GenerateRequest req = Request(4);
  req.mutable_sampling()->set_top_p(2.0);
  auto reader = stub->Generate(ctx.get(), req);
  pb::GenerateResponse r;
  while (reader->Read(&r)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().rfind("top_p", 0), 0u) << s.error_message();
}

TEST_F(ServerE2eTest, CancelMidStreamFreesTheSlot) {  // CAN-1 / CAN-2 from C++
  auto stub = pb::Generation::NewStub(channel_);
  auto ctx = Context();
  auto reader = stub->Generate(ctx.get(), Request(10000000));
  pb::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r));
  ctx->TryCancel();
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectIdle();
}

TEST_F(ServerE2eTest, DeadlineExceeded) {  // CAN-3
  auto stub = pb::Generation::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  auto reader = stub->Generate(&ctx, Request(10000000));
  pb::GenerateResponse r;
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ExpectIdle();
}

TEST_F(ServerE2eTest, ModelInfoAndTokenize) {
  auto stub = pb::Generation::NewStub(channel_);
  pb::GetModelInfoResponse info;
  auto ctx = Context();
  ASSERT_TRUE(stub->GetModelInfo(ctx.get(), pb::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.num_slots(), 4);
  EXPECT_GT(info.state_bytes_per_sequence(), 0);
  pb::TokenizeRequest treq;
  treq.set_text("hello");
  pb::TokenizeResponse tres;
  auto ctx2 = Context();
  ASSERT_TRUE(stub->Tokenize(ctx2.get(), treq, &tres).ok());
  EXPECT_GT(tres.token_ids_size(), 0);
}

TEST_F(ServerE2eTest, CurlServerSentEvents) {
  const std::string cmd =
      "curl -sN --max-time 60 http://127.0.0.1:" + std::to_string(http_port_) +
      "/v1/completions -H 'Content-Type: application/json' -d "
      "'{\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"stream\":true,\"ignore_eos\":true}'";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0);
  EXPECT_EQ(out.rfind("data: ", 0), 0u);
  EXPECT_NE(out.find("\"finish_reason\":\"length\""), std::string::npos);
  EXPECT_NE(out.find("data: [DONE]\n\n"), std::string::npos);
  const std::string health = HttpGet(http_port_, "/health").second;
  EXPECT_EQ(health, "ok\n");
}

}  // namespace
