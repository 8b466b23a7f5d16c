#include "kernels/geglu/geglu_reference.h"

#include <cmath>

namespace griffin::ref {

float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

void GeGlu(absl::Span<const float> gate, absl::Span<const float> up, absl::Span<float> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = GeluTanh(gate[i]) * up[i];
}

}  // namespace griffin::ref
