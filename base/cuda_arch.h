// Compile-time and run-time architecture checks for CUDA code with a Hopper-only path.
//
// The CUDA build carries SASS for several architectures plus PTX (cmake/cuda_arch.cmake). Today
// every kernel uses only instructions that exist from sm_80 on (mma.sync, cp.async, bf16). A
// kernel that gains a Hopper-only body (wgmma, TMA, setmaxnreg: the "a" features of sm_90a) keeps
// its portable body and selects between them in two places:
//
//   device code:  #if GRIFFIN_SM90A_DEVICE_CODE   ... wgmma/TMA body ...
//                 #else                            ... portable body ...
//                 #endif
//   host launch:  if (griffin::HopperPathUsable(prop.major, prop.minor)) launch the Hopper
//                 variant (tile shapes, shared memory, TMA descriptors) else the portable one.
//
// GRIFFIN_SM90A_DEVICE_CODE is 1 only while nvcc compiles device code for sm_90a (it defines
// __CUDA_ARCH_FEAT_SM90_ALL there, and not for compute_80 PTX or sm_80/86/89 SASS) and the
// build enables the Hopper path (CMake option GRIFFIN_CUDA_HOPPER, which defines
// GRIFFIN_CUDA_HOPPER=1 when 90a is among GRIFFIN_CUDA_ARCHS). A GPU of compute capability 9.0 runs
// the sm_90a SASS when the build has it; a build without it (the `cuda-ptx80` preset) JIT-compiles
// the compute_80 PTX there, so the host must then not pick the Hopper variant:
// HopperPathUsable() is false whenever the Hopper path was not compiled.
#ifndef GRIFFIN_BASE_CUDA_ARCH_H_
#define GRIFFIN_BASE_CUDA_ARCH_H_

#ifndef GRIFFIN_CUDA_HOPPER
#define GRIFFIN_CUDA_HOPPER 0
#endif

#if GRIFFIN_CUDA_HOPPER && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GRIFFIN_SM90A_DEVICE_CODE 1
#else
#define GRIFFIN_SM90A_DEVICE_CODE 0
#endif

namespace griffin {

// Whether this build compiled the Hopper-only path (sm_90a SASS with GRIFFIN_CUDA_HOPPER).
inline constexpr bool kHopperPathCompiled = GRIFFIN_CUDA_HOPPER != 0;

// Whether a device of this compute capability runs the Hopper-only path of this build: only
// compute capability 9.0 (sm_90a code runs on no other GPU, not even later ones).
constexpr bool HopperPathUsable(int major, int minor) {
  return kHopperPathCompiled && major == 9 && minor == 0;
}

}  // namespace griffin

#endif  // GRIFFIN_BASE_CUDA_ARCH_H_
