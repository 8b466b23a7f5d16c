// The griffin.v1.Generation gRPC service on the callback API (STYLE.md rule 21): one write in
// flight per stream, the next started from OnWriteDone; OnCancel is the one place that aborts the
// engine request; OnDone the one place that frees per-call state.
#ifndef GRIFFIN_SERVER_GRPC_SERVICE_H_
#define GRIFFIN_SERVER_GRPC_SERVICE_H_

#include "griffin/v1/generation.grpc.pb.h"
#include "server/generation.h"

namespace griffin::server {

class GenerationService final : public griffin::v1::Generation::CallbackService {
 public:
  explicit GenerationService(ServerState* state) : state_(state) {}

  grpc::ServerWriteReactor<griffin::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const griffin::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const griffin::v1::TokenizeRequest* request,
                                     griffin::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const griffin::v1::AbortRequest* request,
                                  griffin::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const griffin::v1::GetModelInfoRequest* request,
                                         griffin::v1::GetModelInfoResponse* response) override;

  // Generate reactors created and destroyed so far (CAN-4).
  static int64_t reactors_created();
  static int64_t reactors_destroyed();

 private:
  ServerState* state_;
};

// absl → gRPC status (same code, same fixed message).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_GRPC_SERVICE_H_
