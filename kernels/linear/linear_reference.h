// CPU reference for kernels/linear (cuBLASLt GEMMs and the decode GEMV): a linear layer in the
// checkpoint's [out, in] weight layout, float32 accumulation in input order. Pure function.
#ifndef GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_
#define GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_

#include "absl/types/span.h"

namespace griffin::ref {

// y[t, o] = sum_i x[t, i] * w[o, i] + bias[o]; x: [T, in], w: [out, in], bias: [out] or empty.
void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
            int T, int in, int out, absl::Span<float> y);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_
