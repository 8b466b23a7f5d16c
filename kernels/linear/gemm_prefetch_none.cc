// gemm_prefetch.cuh for builds without the kernel: no sm_90a target, or no CUTLASS headers (with
// its example 63) (kernels/CMakeLists.txt says which at configure time). The backend keeps
// cuBLASLt for every GEMM.
#include "kernels/linear/gemm_prefetch.cuh"

namespace griffin::kernels {

bool PrefetchGemmSupported(int, int, int, int) { return false; }

cudaError_t LaunchPrefetchGemm(const bf16_t*, const bf16_t*, float*, int, int, int,
                               const PrefetchGemmParams&, cudaStream_t) {
  return cudaErrorNotSupported;
}

bool PrefetchGemmFp8Supported(int, int, int, int) { return false; }

cudaError_t LaunchPrefetchGemmFp8(const uint8_t*, const uint8_t*, float*, int, int, int,
                                  const PrefetchGemmParams&, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace griffin::kernels
