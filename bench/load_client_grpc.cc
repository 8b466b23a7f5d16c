// The gRPC client of griffin-bench: griffin.v1.Generation/Generate over one shared channel.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "bench/load_client.h"
#include "griffin/v1/generation.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace griffin::bench {
namespace {

double Since(std::chrono::steady_clock::time_point epoch) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch).count();
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return absl::StrCat("grpc_", static_cast<int>(code));
  }
}

class GrpcClient final : public LoadClient {
 public:
  explicit GrpcClient(ClientOptions options) : options_(std::move(options)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    // Several channels so one HTTP/2 connection's stream limit does not cap the load.
    for (int i = 0; i < 4; ++i) {
      args.SetInt("grpc.channel_id", i);  // distinct args → distinct subchannels
      channels_.push_back(grpc::CreateCustomChannel(absl::StrCat(options_.host, ":", options_.port),
                                                    grpc::InsecureChannelCredentials(), args));
      stubs_.push_back(griffin::v1::Generation::NewStub(channels_.back()));
    }
  }

  absl::StatusOr<nlohmann::json> ServerInfo() override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    griffin::v1::GetModelInfoRequest request;
    griffin::v1::GetModelInfoResponse response;
    grpc::Status status = stubs_[0]->GetModelInfo(&context, request, &response);
    if (!status.ok()) {
      return absl::UnavailableError(
          absl::StrCat("GetModelInfo failed: ", CodeName(status.error_code())));
    }
    const auto& c = response.config();
    return nlohmann::json{{"model_name", response.model_name()},
                          {"backend", response.backend()},
                          {"state_bytes_per_sequence", response.state_bytes_per_sequence()},
                          {"num_slots", response.num_slots()},
                          {"max_prompt_tokens", response.max_prompt_tokens()},
                          {"max_output_tokens", response.max_output_tokens()},
                          {"config",
                           {{"vocab_size", c.vocab_size()},
                            {"hidden_size", c.hidden_size()},
                            {"num_layers", c.num_layers()},
                            {"block_pattern", c.block_pattern()},
                            {"attention_window", c.attention_window()}}}};
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    griffin::v1::TokenizeRequest request;
    request.set_text(text);
    griffin::v1::TokenizeResponse response;
    grpc::Status status = stubs_[0]->Tokenize(&context, request, &response);
    if (!status.ok()) return absl::UnavailableError("Tokenize failed");
    return std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end());
  }

  RequestOutcome Send(const WorkItem& item, std::chrono::steady_clock::time_point epoch) override {
    griffin::v1::GenerateRequest request;
    if (!item.prompt_ids.empty()) {
      for (int32_t id : item.prompt_ids) request.mutable_token_ids()->add_ids(id);
    } else {
      request.set_text(item.prompt_text);
    }
    request.mutable_sampling()->set_temperature(options_.temperature);
    request.mutable_stopping()->set_max_tokens(item.max_tokens);
    request.mutable_stopping()->set_ignore_eos(options_.ignore_eos);
    if (!item.session_id.empty()) request.set_session_id(item.session_id);

    RequestOutcome o;
    o.prompt_tokens = static_cast<int>(item.prompt_ids.size());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1e3)));
    const size_t pick = next_stub_++ % stubs_.size();
    o.send_time = Since(epoch);
    std::unique_ptr<grpc::ClientReader<griffin::v1::GenerateResponse>> reader =
        stubs_[pick]->Generate(&context, request);
    griffin::v1::GenerateResponse response;
    int tokens = 0;
    bool complete = false;
    std::string error;
    while (reader->Read(&response)) {
      if (!response.session_id().empty()) o.session_id = response.session_id();
      if (response.has_chunk()) {
        const int n = response.chunk().token_ids_size();
        for (int64_t id : response.chunk().token_ids())
          o.output_ids.push_back(static_cast<int32_t>(id));
        if (n > 0) {
          const double now = Since(epoch);
          if (tokens == 0) o.first_token_time = now;
          o.chunk_times.push_back(now);
          tokens += n;
        }
      } else if (response.has_complete()) {
        complete = true;
        o.output_tokens = static_cast<int>(response.complete().usage().completion_tokens());
        o.prompt_tokens = static_cast<int>(response.complete().usage().prompt_tokens());
      } else if (response.has_error()) {
        error = absl::StrCat("error_", response.error().code());
      }
    }
    grpc::Status status = reader->Finish();
    o.end_time = Since(epoch);
    if (!status.ok()) {
      o.status = CodeName(status.error_code());
    } else if (!error.empty()) {
      o.status = error;
    } else if (!complete) {
      o.status = "no_complete_message";
    } else if (tokens == 0) {
      o.status = "no_tokens";
    } else {
      o.ok = true;
      o.status = "OK";
    }
    return o;
  }

 private:
  ClientOptions options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<griffin::v1::Generation::Stub>> stubs_;
  std::atomic<size_t> next_stub_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<LoadClient>> MakeGrpcClient(const ClientOptions& options) {
  return std::unique_ptr<LoadClient>(new GrpcClient(options));
}

}  // namespace griffin::bench
