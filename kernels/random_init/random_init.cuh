// Device-side random weights for benchmarks (no checkpoint file): a counter-based hash of
// (seed, index) mapped to a uniform value in [-1, 1), scaled so the standard deviation is `stddev`,
// plus `mean`. Layout-agnostic: fills n contiguous elements.
#ifndef GRIFFIN_KERNELS_RANDOM_INIT_RANDOM_INIT_CUH_
#define GRIFFIN_KERNELS_RANDOM_INIT_RANDOM_INIT_CUH_

#include "kernels/types.h"

namespace griffin::kernels {

cudaError_t LaunchFillRandomBf16(bf16_t* out, int64_t n, uint64_t seed, float stddev, float mean,
                                 cudaStream_t stream);
cudaError_t LaunchFillRandomF32(float* out, int64_t n, uint64_t seed, float stddev, float mean,
                                cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_RANDOM_INIT_RANDOM_INIT_CUH_
