#include "server/reflection_v1.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"

namespace griffin::server {
namespace {

namespace rpb = ::grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

class ReflectionV1Service final : public rpb::ServerReflection::Service {
 public:
  // `services` is the server's own list (filled as services register, the health service when
  // the server starts); it outlives every call.
  void set_services(const std::vector<std::string>* services) { services_ = services; }

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<rpb::ServerReflectionResponse, rpb::ServerReflectionRequest>* stream)
      override {
    rpb::ServerReflectionRequest request;
    while (stream->Read(&request)) {
      rpb::ServerReflectionResponse response;
      grpc::Status status = Answer(request, &response);
      if (!status.ok()) {
        response.clear_message_response();
        rpb::ErrorResponse* error = response.mutable_error_response();
        error->set_error_code(status.error_code());
        error->set_error_message(status.error_message());
      }
      response.set_valid_host(request.host());
      *response.mutable_original_request() = request;
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

 private:
  grpc::Status Answer(const rpb::ServerReflectionRequest& request,
                      rpb::ServerReflectionResponse* response) const {
    const DescriptorPool* pool = DescriptorPool::generated_pool();
    switch (request.message_request_case()) {
      case rpb::ServerReflectionRequest::kListServices:
        if (services_ != nullptr) {
          for (const std::string& name : *services_) {
            response->mutable_list_services_response()->add_service()->set_name(name);
          }
        }
        return grpc::Status::OK;
      case rpb::ServerReflectionRequest::kFileByFilename:
        return AddFile(pool->FindFileByName(request.file_by_filename()), response);
      case rpb::ServerReflectionRequest::kFileContainingSymbol:
        return AddFile(pool->FindFileContainingSymbol(request.file_containing_symbol()), response);
      case rpb::ServerReflectionRequest::kFileContainingExtension: {
        const auto& ext = request.file_containing_extension();
        const google::protobuf::Descriptor* type =
            pool->FindMessageTypeByName(ext.containing_type());
        if (type == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "type not found");
        const google::protobuf::FieldDescriptor* field =
            pool->FindExtensionByNumber(type, ext.extension_number());
        if (field == nullptr) {
          return grpc::Status(grpc::StatusCode::NOT_FOUND, "extension not found");
        }
        return AddFile(field->file(), response);
      }
      case rpb::ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const std::string& name = request.all_extension_numbers_of_type();
        const google::protobuf::Descriptor* type = pool->FindMessageTypeByName(name);
        if (type == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "type not found");
        std::vector<const google::protobuf::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        rpb::ExtensionNumberResponse* out = response->mutable_all_extension_numbers_response();
        out->set_base_type_name(name);
        for (const auto* field : extensions) out->add_extension_number(field->number());
        return grpc::Status::OK;
      }
      default:
        return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown reflection request");
    }
  }

  // The file and, once each, every file it depends on (a client needs them to build the pool).
  static grpc::Status AddFile(const FileDescriptor* file, rpb::ServerReflectionResponse* response) {
    if (file == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "not found");
    absl::flat_hash_set<std::string> seen;
    std::vector<const FileDescriptor*> pending = {file};
    while (!pending.empty()) {
      const FileDescriptor* f = pending.back();
      pending.pop_back();
      if (!seen.insert(f->name()).second) continue;
      google::protobuf::FileDescriptorProto proto;
      f->CopyTo(&proto);
      proto.SerializeToString(
          response->mutable_file_descriptor_response()->add_file_descriptor_proto());
      for (int i = 0; i < f->dependency_count(); ++i) pending.push_back(f->dependency(i));
    }
    return grpc::Status::OK;
  }

  const std::vector<std::string>* services_ = nullptr;
};

class ReflectionV1Plugin final : public grpc::ServerBuilderPlugin {
 public:
  std::string name() override { return "griffin_reflection_v1"; }
  void InitServer(grpc::ServerInitializer* si) override {
    si->RegisterService(service_);
    service_->set_services(si->GetServiceList());
  }
  void Finish(grpc::ServerInitializer*) override {}
  void ChangeArguments(const std::string&, void*) override {}
  bool has_sync_methods() const override { return true; }

 private:
  std::shared_ptr<ReflectionV1Service> service_ = std::make_shared<ReflectionV1Service>();
};

class ReflectionV1Option final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ReflectionV1Plugin>());
  }
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> MakeReflectionV1Option() {
  return std::make_unique<ReflectionV1Option>();
}

}  // namespace griffin::server
