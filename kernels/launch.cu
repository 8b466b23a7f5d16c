// See launch.cuh.
#include <cstdlib>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace griffin::kernels {
namespace {

// Compiled with the same flags as every kernel: its PTX version is theirs.
__global__ void PdlProbeKernel() { WaitForPriorGrids(); }

}  // namespace

bool PdlLaunchable() {
  static const bool launchable = [] {
    if (std::getenv("GRIFFIN_NO_PDL") != nullptr) return false;
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, PdlProbeKernel) == cudaSuccess && attr.ptxVersion >= 90;
  }();
  return launchable;
}

}  // namespace griffin::kernels
