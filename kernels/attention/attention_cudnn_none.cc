// CudnnAttention in a build without cuDNN's headers (kernels/CMakeLists.txt): Init says so and
// the backend runs its own attention kernel for every pass.
#include "kernels/attention/attention_cudnn.h"

namespace griffin::kernels {

struct CudnnAttention::Graph {};

CudnnAttention::CudnnAttention() = default;
CudnnAttention::~CudnnAttention() = default;

std::string CudnnAttention::Init(int, int, int, int, float, int, size_t) {
  return "built without cuDNN's headers (deploy/install-deps.sh installs them into .venv)";
}
std::string CudnnAttention::SetPass(const std::vector<int>&, cudaStream_t) {
  return "built without cuDNN";
}
std::string CudnnAttention::Run(const bf16_t*, const bf16_t*, const bf16_t*, bf16_t*,
                                cudaStream_t) {
  return "built without cuDNN";
}
std::string CudnnAttention::BuildGraph(int, int, Graph*) { return "built without cuDNN"; }

}  // namespace griffin::kernels
