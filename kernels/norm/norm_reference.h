// CPU reference for kernels/norm (RMSNorm; the embedding lookup is a plain copy): the float32
// definition the CPU backend computes with and the kernels are tested against. Pure functions.
#ifndef GRIFFIN_KERNELS_NORM_NORM_REFERENCE_H_
#define GRIFFIN_KERNELS_NORM_NORM_REFERENCE_H_

#include "absl/types/span.h"

namespace griffin::ref {

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * (1 + weight); x, out: [T, d] row-major, weight [d]
// (zero-centred, SPEC.md §2.3). In place is allowed.
void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps, int T,
             absl::Span<float> out);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_NORM_NORM_REFERENCE_H_
