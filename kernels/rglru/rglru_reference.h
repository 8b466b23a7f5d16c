// CPU reference for kernels/rglru: the recurrent block's causal conv and the RG-LRU (SPEC.md §2.4),
// in float32 as the CPU backend computes them. Pure functions apart from the carried state they
// update in place (the conv tail, the hidden state).
#ifndef GRIFFIN_KERNELS_RGLRU_RGLRU_REFERENCE_H_
#define GRIFFIN_KERNELS_RGLRU_RGLRU_REFERENCE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace griffin::ref {

// Causal depthwise convolution over channels [T, L] (SPEC.md §2.4 step 3):
//   c[t, ch] = bias[ch] + sum_k w[ch, k] * x[t - (K-1) + k, ch],   K = conv width,
// where w is the checkpoint's [L, 1, K] layout (w[ch, K-1] multiplies the current token) and inputs
// before the run come from `tail` ([K-1, L], oldest row first). On return `tail` holds the last
// K-1 inputs (pre-conv), continuing across calls.
void Conv1dCausal(absl::Span<const float> x, absl::Span<const float> w,
                  absl::Span<const float> bias, int T, int L, int K, absl::Span<float> tail,
                  absl::Span<float> out);

// RG-LRU (SPEC.md §2.4 step 4) over a run of T tokens whose first token has position `position`:
//   gate_x = σ(BlockDiag(c; gx_w, gx_b)),  gate_a = σ(BlockDiag(c; ga_w, ga_b))
//   log_a = -8 · gate_a · softplus(a_param),  a = exp(log_a),  a² = exp(2 · log_a)
//   x̂ = c · gate_x · (pos == 0 ? 1 : sqrt(1 - a²)),  h = (pos == 0 ? 0 : a) · h + x̂,  out = h
// c, out: [T, L]; gate weights [H, L/H, L/H] stored [head, in, out], biases [H, L/H]; h: [L], the
// carried state, updated in place.
void RgLru(absl::Span<const float> c, absl::Span<const float> gx_w, absl::Span<const float> gx_b,
           absl::Span<const float> ga_w, absl::Span<const float> ga_b,
           absl::Span<const float> a_param, int T, int L, int H, int64_t position,
           absl::Span<float> h, absl::Span<float> out);

// torch-compatible softplus: log(1 + e^x), and x itself above 20.
float Softplus(float x);
float Sigmoid(float x);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_RGLRU_RGLRU_REFERENCE_H_
