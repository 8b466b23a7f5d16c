// A gRPC GenerateRequest as the neutral GenerateInput that ValidateGenerate checks (the same
// checks as HTTP). Apart from the service so the libFuzzer target over gRPC request validation
// (tests/fuzz/grpc_request_fuzz.cc) needs no server.
#ifndef GRIFFIN_SERVER_GRPC_REQUEST_H_
#define GRIFFIN_SERVER_GRPC_REQUEST_H_

#include "absl/status/statusor.h"
#include "griffin/v1/generation.pb.h"
#include "server/validation.h"

namespace griffin::server {

// Copies the fields as sent (optional fields stay absent; out-of-range values are left for
// ValidateGenerate). INVALID_ARGUMENT when the `input` oneof is not set (VAL-8).
absl::StatusOr<GenerateInput> GenerateInputFromProto(const griffin::v1::GenerateRequest& request);

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_GRPC_REQUEST_H_
