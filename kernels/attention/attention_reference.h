// CPU reference for kernels/attention: RoPE, local multi-query attention over a key ring, and the
// ring write (SPEC.md §2.5, §3, §8.2). The float instantiation is what the CPU backend computes;
// the kernel tests use the double one on the same (bf16-rounded) inputs.
#ifndef GRIFFIN_KERNELS_ATTENTION_ATTENTION_REFERENCE_H_
#define GRIFFIN_KERNELS_ATTENTION_ATTENTION_REFERENCE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace griffin::ref {

// Rotary embedding on the first `rotary_dim` dims of each head of x ([heads, head_dim], one token),
// NeoX pairing (i with i + rotary_dim/2), frequencies theta^(-2i/rotary_dim), computed in float32
// as the reference does. In place.
void ApplyRope(absl::Span<float> x, int heads, int head_dim, int rotary_dim, float theta,
               int64_t position);

// Local attention of a run of T query tokens whose first has position `position`: the query at
// position p of head h (kv head g = h / (H / KV)) sees the keys at positions max(0, p - W) .. p;
// keys of this run come from k / v ([T, KV * head_dim], post-RoPE), earlier ones from the ring
// (ring_k / ring_v [W, KV * head_dim], position j at row j mod W). scores = q.k * scale,
// softmax in Real, out [T, H * head_dim] = sum_j softmax_j v_j. q: [T, H * head_dim], post-RoPE.
template <typename Real>
void LocalAttention(absl::Span<const float> q, absl::Span<const float> k, absl::Span<const float> v,
                    absl::Span<const float> ring_k, absl::Span<const float> ring_v, int T, int H,
                    int KV, int head_dim, int W, int64_t position, Real scale,
                    absl::Span<Real> out);

// After the run's attention: its last min(T, W) keys and values into ring rows (position mod W).
// Written only after every query was served, so a run longer than the window never reads a key
// it has already overwritten.
void WriteRing(absl::Span<const float> k, absl::Span<const float> v, int T, int kv_width, int W,
               int64_t position, absl::Span<float> ring_k, absl::Span<float> ring_v);

}  // namespace griffin::ref

#endif  // GRIFFIN_KERNELS_ATTENTION_ATTENTION_REFERENCE_H_
