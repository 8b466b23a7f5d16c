// The model's operations in plain float32, written for clarity: the CPU backend is built from them,
// and they are the readable definition the CUDA kernels are tested against. Shapes are row-major;
// `T` is the number of tokens in a run, weights use the checkpoint's [out, in] layout.
// All functions are pure (no state beyond their arguments) and thread-compatible.
#ifndef GRIFFIN_ENGINE_CPU_OPS_H_
#define GRIFFIN_ENGINE_CPU_OPS_H_

#include <cstdint>

#include "absl/types/span.h"

namespace griffin::engine::cpu {

// out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * (1 + weight); x, out: [T, d]. In place is allowed.
void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps, int T,
             absl::Span<float> out);

// y[t, o] = sum_i x[t, i] * w[o, i] + bias[o]; x: [T, in], w: [out, in], bias: [out] or empty.
void Linear(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
            int T, int in, int out, absl::Span<float> y);

// tanh approximation of GELU (jax.nn.gelu default, torch approximate="tanh").
float GeluTanh(float x);

// Causal depthwise convolution over channels [T, L] (SPEC.md §2.4 step 3):
//   c[t, ch] = bias[ch] + sum_k w[ch, k] * x[t - (K-1) + k, ch],   K = conv width,
// where w is the checkpoint's [L, 1, K] layout (w[ch, K-1] multiplies the current token) and inputs
// before the run come from `tail` ([K-1, L], oldest row first). On return `tail` holds the last
// K-1 inputs (pre-conv), continuing across calls.
void Conv1dCausal(absl::Span<const float> x, absl::Span<const float> w, absl::Span<const float> bias,
                  int T, int L, int K, absl::Span<float> tail, absl::Span<float> out);

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

// Rotary embedding on the first `rotary_dim` dims of each head of x ([heads, head_dim], one token),
// NeoX pairing (i with i + rotary_dim/2), frequencies theta^(-2i/rotary_dim), computed in float32
// as the reference does. In place.
void ApplyRope(absl::Span<float> x, int heads, int head_dim, int rotary_dim, float theta,
               int64_t position);

// torch-compatible softplus: log(1 + e^x), and x itself above 20.
float Softplus(float x);

}  // namespace griffin::engine::cpu

#endif  // GRIFFIN_ENGINE_CPU_OPS_H_
