// CPU reference for kernels/linear (cuBLASLt GEMMs and the decode GEMV): a linear layer in the
// checkpoint's [out, in] weight layout, float32 accumulation in input order. Pure function.
#ifndef GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_
#define GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_

#include "absl/types/span.h"

namespace griffin::ref {

// y[t, o] = sum_i x[t, i] * w[o, i] + bias[o]; x: [T, in], w: [out, in], bias: [out] or empty.
void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
            int T, int in, int out, absl::Span<float> y);

// FP8 weights (W8A16), as the CUDA backend will store them: each output row o of w [out, in] gets
// the scale s_o = max_i |w[o, i]| / 448 (1 for an all-zero row), and w[o, i] becomes
// RoundToFp8E4M3(w[o, i] / s_o) * s_o in place (the value the GEMM sees after its per-channel
// scale). Writes the scales to `scales` [out].
void QuantizeRowsFp8E4M3(absl::Span<float> w, int out, int in, absl::Span<float> scales);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_LINEAR_LINEAR_REFERENCE_H_
