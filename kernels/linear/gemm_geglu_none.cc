// gemm_geglu.cuh for builds without the kernel: no sm_90a target, or no CUTLASS headers
// (kernels/CMakeLists.txt says which at configure time). The backend then keeps the fused
// gate|up GEMM and the GeGLU pass.
#include "kernels/linear/gemm_geglu.cuh"

namespace griffin::kernels {

bool GemmGeGluSupported(int, int, int, int) { return false; }

cudaError_t LaunchGemmGeGlu(const bf16_t*, const bf16_t*, const float*, const float*, const float*,
                            int, int, int, bf16_t*, cudaStream_t, GemmGeGluConfig) {
  return cudaErrorNotSupported;
}
cudaError_t LaunchGemmGeGlu(const bf16_t*, const bf16_t*, const float*, const bf16_t*, const float*,
                            int, int, int, bf16_t*, cudaStream_t, GemmGeGluConfig) {
  return cudaErrorNotSupported;
}

}  // namespace griffin::kernels
