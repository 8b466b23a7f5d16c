// Shared by the CUTLASS kernels (gemm_geglu_sm90.cu, gemm_prefetch_sm90.cu): the device's
// properties they check, and RunCutlassGemm, which runs a CUTLASS 3 device GEMM
// (GemmUniversalAdapter) that needs no workspace, launched with programmatic dependent launch like
// every other kernel of a step (its kernel waits on the previous grid before it reads what that
// grid writes; CUTLASS_ENABLE_GDC_FOR_SM90 compiles the wait in). Only for files compiled with
// CUTLASS's headers.
#ifndef GRIFFIN_KERNELS_LINEAR_CUTLASS_RUN_CUH_
#define GRIFFIN_KERNELS_LINEAR_CUTLASS_RUN_CUH_

#include <cuda_runtime.h>

#include <mutex>

#include "cutlass/cutlass.h"

namespace griffin::kernels {

// A device's compute capability and SM count, queried once per device (the engine uses one)
// rather than on every launch decision. The kernels here run on compute capability 9.0 only
// (sm_90a SASS).
struct CutlassDeviceInfo {
  int major = 0, minor = 0, sm_count = 0;
  bool sm90() const { return major == 9 && minor == 0; }
  static const CutlassDeviceInfo& Of(int device) {
    static std::mutex mu;
    static CutlassDeviceInfo infos[64];
    static bool known[64] = {};
    static const CutlassDeviceInfo none;
    if (device < 0 || device >= 64) return none;
    std::lock_guard<std::mutex> lock(mu);
    if (!known[device]) {
      cudaDeviceGetAttribute(&infos[device].major, cudaDevAttrComputeCapabilityMajor, device);
      cudaDeviceGetAttribute(&infos[device].minor, cudaDevAttrComputeCapabilityMinor, device);
      cudaDeviceGetAttribute(&infos[device].sm_count, cudaDevAttrMultiProcessorCount, device);
      known[device] = true;
    }
    return infos[device];
  }
};

// cudaErrorInvalidValue when CUTLASS refuses the arguments or asks for a workspace; the launch's
// own error otherwise.
template <class Device>
cudaError_t RunCutlassGemm(const typename Device::Arguments& args, cudaStream_t stream) {
  Device gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  // The kernels here (a persistent scheduler without splits, example 63's non-persistent one)
  // need no workspace; one that did would need it allocated outside graph capture.
  if (Device::get_workspace_size(args) != 0) return cudaErrorInvalidValue;
  if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) {
    return cudaErrorInvalidValue;
  }
  const cutlass::Status status = gemm.run(stream, /*cuda_adapter=*/nullptr,
                                          /*launch_with_pdl=*/true);
  if (status != cutlass::Status::kSuccess) {
    const cudaError_t error = cudaGetLastError();
    return error != cudaSuccess ? error : cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_CUTLASS_RUN_CUH_
