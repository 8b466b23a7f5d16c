// base/cuda_arch.h: the device code a GPU runs and the host's dispatch agree on the Hopper-only
// path, whichever SASS or PTX of this build the GPU loads. Needs a GPU; skips without one.
// On an H200: the `cuda` preset runs sm_90a SASS with the Hopper path; `cuda-ptx80` JIT-compiles
// compute_80 PTX (printed: ptx 80, binary 90) without it.
#include <cuda_runtime.h>

#include <cstdio>

#include "base/cuda_arch.h"
#include "gtest/gtest.h"

namespace griffin {
namespace {

__global__ void ReportArchitecture(int* out) {
  out[0] = GRIFFIN_SM90A_DEVICE_CODE;
#ifdef __CUDA_ARCH__
  out[1] = __CUDA_ARCH__;
#endif
}

TEST(CudaArchTest, DeviceCodeAndHostDispatchAgree) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    GTEST_SKIP() << "no CUDA device: GPU test skipped";
  }
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  cudaFuncAttributes attributes{};
  ASSERT_EQ(cudaFuncGetAttributes(&attributes, ReportArchitecture), cudaSuccess)
      << "this build has no code this GPU can run (compute capability " << prop.major << "."
      << prop.minor << ")";
  int* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 2 * sizeof(int)), cudaSuccess);
  ReportArchitecture<<<1, 1>>>(device);
  int host[2] = {-1, -1};
  ASSERT_EQ(cudaMemcpy(host, device, sizeof(host), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(device);
  std::printf("%s (sm_%d%d): kernel from ptx %d, binary %d, __CUDA_ARCH__ %d, Hopper path %s\n",
              prop.name, prop.major, prop.minor, attributes.ptxVersion, attributes.binaryVersion,
              host[1], host[0] ? "on" : "off");
  EXPECT_EQ(host[0] == 1, HopperPathUsable(prop.major, prop.minor));
  EXPECT_LE(attributes.binaryVersion, prop.major * 10 + prop.minor);
}

}  // namespace
}  // namespace griffin
