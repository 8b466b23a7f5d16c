// CPU reference for kernels/geglu: the tanh-approximated GELU and the GeGLU gate (SPEC.md §2.6).
#ifndef GRIFFIN_KERNELS_GEGLU_GEGLU_REFERENCE_H_
#define GRIFFIN_KERNELS_GEGLU_GEGLU_REFERENCE_H_

#include "absl/types/span.h"

namespace griffin::ref {

// tanh approximation of GELU (jax.nn.gelu default, torch approximate="tanh").
float GeluTanh(float x);

// out[t, i] = gelu_tanh(gate[t, i]) * up[t, i]; all [T, m]. In place into `gate` is allowed.
void GeGlu(absl::Span<const float> gate, absl::Span<const float> up, absl::Span<float> out);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_GEGLU_GEGLU_REFERENCE_H_
