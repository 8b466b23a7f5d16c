// Host side of programmatic dependent launch (PDL, Hopper): every kernel of a step is launched
// with cudaLaunchAttributeProgrammaticStreamSerialization, so inside a CUDA graph each kernel is
// scheduled while its predecessor still runs and its blocks wait in WaitForPriorGrids()
// (common.cuh) instead of paying a full launch gap after the predecessor drains. At batch 1 a
// decode step is ~255 launches of a few microseconds each, so that gap is a large part of the
// step (bench/NOTES.md).
//
// The contract for a kernel launched through LaunchPdl: it calls WaitForPriorGrids() before it
// reads anything an earlier kernel of the stream writes and before it writes anything an earlier
// kernel reads, and it calls AllowDependentLaunch() once its own blocks may share the SMs with the
// next kernel's waiting blocks. Because every such kernel waits for its predecessor's completion,
// completion is transitive down the stream, but what runs before the wait may overlap any kernel
// since the pass's last copy or memset (each kernel lets the next in before its own wait). So
// before the wait a kernel reads only what no kernel of the pass writes: weights, the step
// metadata (copied in before the pass), and state that only this launch touches (the RG-LRU
// decode kernel's own layer's recurrent state and conv tails, rglru.cu).
#ifndef GRIFFIN_KERNELS_LAUNCH_CUH_
#define GRIFFIN_KERNELS_LAUNCH_CUH_

#include <cuda_runtime.h>

#include <utility>

namespace griffin::kernels {

// Whether this build's kernels carry the griddepcontrol instructions (sm_90 code): only then may
// a launch ask for PDL. A compute_80 PTX build JIT-compiled on a Hopper GPU has the attribute
// available but not the wait, so it is asked of the code, not the device. GRIFFIN_NO_PDL=1 in the
// environment turns PDL off (A/B runs, and a way out).
bool PdlLaunchable();

template <typename... Params, typename... Args>
cudaError_t LaunchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = PdlLaunchable() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LAUNCH_CUH_
