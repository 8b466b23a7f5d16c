// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection), answered from the process's
// generated descriptor pool, as the v1alpha service in Debian's gRPC 1.51 does (that release
// ships only v1alpha). Clients that speak v1 (grpcurl, grpcui, Postman, newer grpcio-reflection)
// would otherwise get UNIMPLEMENTED. Added to a server with
//   builder.SetOption(MakeReflectionV1Option());
// which lists the same services the server registers (the health service included).
#ifndef GRIFFIN_SERVER_REFLECTION_V1_H_
#define GRIFFIN_SERVER_REFLECTION_V1_H_

#include <memory>

#include "grpcpp/impl/server_builder_option.h"

namespace griffin::server {

std::unique_ptr<grpc::ServerBuilderOption> MakeReflectionV1Option();

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_REFLECTION_V1_H_
