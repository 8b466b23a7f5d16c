// CUDA errors as absl::Status, for host code that calls the CUDA runtime (the CUDA backend and its
// tools). Header-only and included only where CUDA is built, so base/ itself needs no CUDA.
#ifndef GRIFFIN_BASE_CUDA_STATUS_H_
#define GRIFFIN_BASE_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace griffin {

// INTERNAL naming the call site and CUDA's own error text (never user data).
inline absl::Status CudaError(cudaError_t err, const char* file, int line) {
  return absl::InternalError(
      absl::StrCat("CUDA error at ", file, ":", line, ": ", std::string(cudaGetErrorString(err))));
}

}  // namespace griffin

// Returns INTERNAL from the enclosing function when `expr` (a cudaError_t) is not cudaSuccess.
#define CUDA_RETURN_IF_ERROR(expr)                                        \
  do {                                                                    \
    const cudaError_t griffin_cuda_err_ = (expr);                         \
    if (griffin_cuda_err_ != cudaSuccess) {                               \
      return ::griffin::CudaError(griffin_cuda_err_, __FILE__, __LINE__); \
    }                                                                     \
  } while (0)

// For launchers that report failure as a message (kernels::Gemm): empty means success.
#define CUDA_MESSAGE_RETURN_IF_ERROR(expr)                                  \
  do {                                                                      \
    const std::string griffin_message_ = (expr);                            \
    if (!griffin_message_.empty()) {                                        \
      return ::absl::InternalError(                                         \
          ::absl::StrCat(__FILE__, ":", __LINE__, ": ", griffin_message_)); \
    }                                                                       \
  } while (0)

#endif  // GRIFFIN_BASE_CUDA_STATUS_H_
