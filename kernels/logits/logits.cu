// See logits.cuh.
#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "kernels/logits/logits.cuh"

namespace griffin::kernels {
namespace {

constexpr int kRowThreads = 1024;

// Every soft-cap on the device is this expression, so the kernels that skip it for values that
// cannot win (ArgMaxPartialKernel's tokens-only path) and the exhaustive monotonicity check
// (LaunchCountSoftCapInversions) see the same bits as LaunchSoftCap.
__device__ __forceinline__ float Capped(float v, float cap) { return tanhf(v / cap) * cap; }

__global__ void SoftCapKernel(float* logits, int64_t count, float cap) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    logits[i] = Capped(logits[i], cap);
  }
}

// Calls f(i, v) for every element of a block's row. The row passes are latency-bound (one L2 load
// in flight per thread otherwise): with V % 4 == 0 and a 16-byte aligned row each thread loads
// four float4 before using any, sixteen elements in flight.
template <typename F>
__device__ __forceinline__ void ForRow(const float* row, int V, F&& f) {
  if ((V & 3) == 0 && (reinterpret_cast<uintptr_t>(row) & 15) == 0) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const int n4 = V >> 2, step = blockDim.x;
    int j = threadIdx.x;
    for (; j + 3 * step < n4; j += 4 * step) {
      const float4 q[4] = {row4[j], row4[j + step], row4[j + 2 * step], row4[j + 3 * step]};
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int i = 4 * (j + u * step);
        f(i, q[u].x);
        f(i + 1, q[u].y);
        f(i + 2, q[u].z);
        f(i + 3, q[u].w);
      }
    }
    for (; j < n4; j += step) {
      const float4 q = row4[j];
      f(4 * j, q.x);
      f(4 * j + 1, q.y);
      f(4 * j + 2, q.z);
      f(4 * j + 3, q.w);
    }
  } else {
    for (int i = threadIdx.x; i < V; i += blockDim.x) f(i, row[i]);
  }
}

struct Best {
  float v;
  int i;
};
__device__ __forceinline__ Best Better(Best a, Best b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

// Block-wide: best finite-or-(-inf) value; flags NaN / +inf / nothing finite. Returns the token or -1.
__device__ int RowArgMax(const float* row, int V, int* s_flag, Best* s_best) {
  Best best{-INFINITY, -1};
  bool bad = false, finite = false;
  ForRow(row, V, [&](int i, float v) {
    if (isnan(v) || v == INFINITY) {
      bad = true;
      return;
    }
    finite |= isfinite(v);
    best = Better(best, Best{v, i});
  });
  if (threadIdx.x == 0) *s_flag = 0;
  __syncthreads();
  if (bad) atomicOr(s_flag, 1);
  if (finite) atomicOr(s_flag, 2);
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = Better(best, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_best[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best b{-INFINITY, -1};
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) b = Better(b, s_best[w]);
    s_best[0] = b;
  }
  __syncthreads();
  const int flag = *s_flag;
  const int token = ((flag & 1) || !(flag & 2)) ? -1 : s_best[0].i;
  __syncthreads();
  return token;
}

// Stage 1: block (row, chunk) finds the best of its chunk and the chunk's flags
// (bit 0: NaN or +inf seen, bit 1: something finite seen).
// kSoftCap: the logits are soft-capped on the way (the values LaunchSoftCap writes), so a greedy
// head reads its rows once for both instead of twice; they are written back unless
// `write_capped` points at 0 (nobody reads the logits after the tokens: a greedy decode step
// then moves half the bytes; at batch 1024 the pass read and wrote 2 GB at 1.8x its floor).
// kVec4 (V and the chunk multiples of 4): float4 loads, four in flight per thread before any is
// used (one scalar load in flight per thread left the pass latency-bound). Every element still
// meets Better(), whose result does not depend on the order, so both paths give the same token.
// When nothing is written back the argmax skips what cannot win. Without the cap a thread keeps
// its running raw maximum (it meets its elements in increasing index order, so a later element
// wins only when strictly larger). With the cap and float4 loads, only values near each warp
// round's raw maximum are capped (below); that rests on the device's cap being monotone up to
// kSoftCapInversionSlack (tanhf is not quite: LaunchCountSoftCapInversions finds one backward
// step a sign, which the kernel test bounds). Elements of equal capped value keep the lowest index
// exactly as before. At 1024 rows of 256000 the tanhf and division on every element had made the
// pass 2.8x its read-only floor (bench/NOTES.md session 21).
template <bool kSoftCap, bool kVec4>
__global__ void ArgMaxPartialKernel(float* logits, int V, int chunk, float cap,
                                    const int32_t* write_capped, int32_t* scratch) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  __shared__ int s_flag;
  __shared__ Best s_best[32];
  const int row = blockIdx.x, part = blockIdx.y, parts = gridDim.y;
  float* r = logits + int64_t{row} * V;
  const int begin = part * chunk, end = min(V, begin + chunk);
  const bool write = kSoftCap && (write_capped == nullptr || *write_capped != 0);
  Best best{-INFINITY, -1};
  bool bad = false, finite = false;
  const auto visit = [&](int i, float v) {
    if (isnan(v) || v == INFINITY) {
      bad = true;
      return;
    }
    finite |= isfinite(v);
    best = Better(best, Best{v, i});
  };
  const auto capped = [cap](float v) { return kSoftCap ? Capped(v, cap) : v; };
  if (!write && (kVec4 || !kSoftCap)) {
    // NaN fails `v > raw_max`, +inf passes it but flags the row, -inf never passes: with nothing
    // flagged, something finite was seen exactly when a record was set.
    float raw_max = -INFINITY;
    const auto record = [&](int i, float v) {
      bad |= !(v < INFINITY);
      if (v > raw_max) {
        raw_max = v;
        const float c = capped(v);
        if (c > best.v) best = Best{c, i};
      }
    };
    if constexpr (kVec4 && kSoftCap) {
      // Per warp and load round: the raw maximum m over the warp's 1024 values (uniform after the
      // shuffles), then the cap only of values above a bound t under which nothing can cap to
      // capped(m) or above: t = m less 2^-12 of |m|, checked (capped(t) + the slack < capped(m):
      // every value <= t caps to at most capped(t) + the slack), so a value that caps above
      // capped(m) while raw below it is in the window and capped too. Where the cap saturates and
      // the check fails, every value is capped. (Capping a thread's running raw maxima instead
      // left most values capped: a thread meets ~16 values of a row, nearly every one some lane's
      // running maximum; 0.51 ms at 1024 rows against the plain argmax's 0.25.)
      const float4* r4 = reinterpret_cast<const float4*>(r);
      const int end4 = end >> 2, step = blockDim.x;
      // Eight float4 a lane a round (a 4096-value chunk in one round of 128 lanes): the two caps
      // of the window check are paid per round, and per value they were half the pass's work
      // with four (0.367 ms at 1024 rows; session 22).
      constexpr int kLoads = 8;
      for (int base = begin >> 2; base < end4; base += kLoads * step) {  // the same rounds a lane
        const int j = base + threadIdx.x;
        float v[4 * kLoads];
#pragma unroll
        for (int u = 0; u < kLoads; ++u) {
          float4 q = make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
          if (j + u * step < end4) q = r4[j + u * step];
          v[4 * u] = q.x;
          v[4 * u + 1] = q.y;
          v[4 * u + 2] = q.z;
          v[4 * u + 3] = q.w;
        }
        float m = -INFINITY;
#pragma unroll
        for (int e = 0; e < 4 * kLoads; ++e) {
          bad |= !(v[e] < INFINITY);
          m = fmaxf(m, v[e]);  // NaN is flagged above and skipped here
        }
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (!(m > -INFINITY && m < INFINITY)) continue;  // nothing finite, or +inf (flagged)
        const float t = m - fmaxf(fabsf(m) * 0x1p-12f, FLT_MIN);
        const bool window = Capped(t, cap) + kSoftCapInversionSlack * cap < Capped(m, cap);
#pragma unroll
        for (int e = 0; e < 4 * kLoads; ++e) {
          if (window ? v[e] > t : v[e] > -INFINITY) {  // NaN and the padding fail both
            best = Better(best, Best{Capped(v[e], cap), 4 * (j + (e >> 2) * step) + (e & 3)});
          }
        }
      }
    } else if constexpr (kVec4) {  // no cap: one comparison a value
      const float4* r4 = reinterpret_cast<const float4*>(r);
      const int end4 = end >> 2, step = blockDim.x;
      for (int j = (begin >> 2) + threadIdx.x; j < end4; j += 4 * step) {
        float4 q[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          if (j + u * step < end4) q[u] = r4[j + u * step];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int jj = j + u * step;
          if (jj >= end4) break;
          record(4 * jj, q[u].x);
          record(4 * jj + 1, q[u].y);
          record(4 * jj + 2, q[u].z);
          record(4 * jj + 3, q[u].w);
        }
      }
    } else {
      for (int i = begin + threadIdx.x; i < end; i += blockDim.x) record(i, r[i]);
    }
    finite = best.i >= 0;
  } else if constexpr (kVec4) {
    float4* r4 = reinterpret_cast<float4*>(r);
    const int end4 = end >> 2, step = blockDim.x;
    for (int j = (begin >> 2) + threadIdx.x; j < end4; j += 4 * step) {
      float4 q[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        if (j + u * step < end4) q[u] = r4[j + u * step];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int jj = j + u * step;
        if (jj >= end4) break;
        q[u] = make_float4(capped(q[u].x), capped(q[u].y), capped(q[u].z), capped(q[u].w));
        if (write) r4[jj] = q[u];
        visit(4 * jj, q[u].x);
        visit(4 * jj + 1, q[u].y);
        visit(4 * jj + 2, q[u].z);
        visit(4 * jj + 3, q[u].w);
      }
    }
  } else {
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const float v = capped(r[i]);
      if (write) r[i] = v;
      visit(i, v);
    }
  }
  if (threadIdx.x == 0) s_flag = 0;
  __syncthreads();
  if (bad) atomicOr(&s_flag, 1);
  if (finite) atomicOr(&s_flag, 2);
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = Better(best, other);
  }
  if ((threadIdx.x & 31) == 0) s_best[threadIdx.x >> 5] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best b{-INFINITY, -1};
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) b = Better(b, s_best[w]);
    int32_t* out = scratch + 3 * (int64_t{row} * parts + part);
    out[0] = __float_as_int(b.v);
    out[1] = b.i;
    out[2] = s_flag;
  }
}

// Pairs of adjacent floats (u, u + 1 as bit patterns, both signs) whose capped values are out of
// order; each thread walks a run of 64 and reuses the value it capped last. stats: [0] the count,
// [1] the largest backward step (float bits; non-negative floats order as their bits), [2] the
// smallest |x| of such a pair (float bits).
__global__ void CountSoftCapInversionsKernel(float cap, uint32_t* stats) {
  constexpr uint32_t kRun = 64, kInf = 0x7F800000u;
  const uint64_t first = (blockIdx.x * uint64_t{blockDim.x} + threadIdx.x) * kRun;
  if (first >= kInf) return;
  const uint32_t last = static_cast<uint32_t>(min(first + kRun, uint64_t{kInf}));
  float pos = Capped(__uint_as_float(static_cast<uint32_t>(first)), cap);
  float neg = Capped(-__uint_as_float(static_cast<uint32_t>(first)), cap);
  for (uint32_t u = static_cast<uint32_t>(first); u < last; ++u) {
    const float next = __uint_as_float(u + 1);  // the last is +inf: the cap's limit is in range
    const float pos_next = Capped(next, cap), neg_next = Capped(-next, cap);
    if (!(pos_next >= pos) || !(neg_next <= neg)) {
      const float gap = fmaxf(pos - pos_next, neg_next - neg);
      atomicAdd(&stats[0], 1u);
      atomicMax(&stats[1], __float_as_uint(gap));
      atomicMin(&stats[2], u);
    }
    pos = pos_next;
    neg = neg_next;
  }
}

// Stage 2: one warp per row merges the chunks (lowest index among equal values).
__global__ void ArgMaxFinalKernel(int parts, const int32_t* scratch, int32_t* tokens) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int row = blockIdx.x;
  Best best{-INFINITY, -1};
  int flag = 0;
  for (int p = threadIdx.x; p < parts; p += 32) {
    const int32_t* in = scratch + 3 * (int64_t{row} * parts + p);
    best = Better(best, Best{__int_as_float(in[0]), in[1]});
    flag |= in[2];
  }
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = Better(best, other);
    flag |= __shfl_xor_sync(0xffffffffu, flag, o);
  }
  if (threadIdx.x == 0) tokens[row] = ((flag & 1) || !(flag & 2)) ? -1 : best.i;
}

__device__ void Philox(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{0xD2511F53u} * ctr[0];
    const uint64_t p1 = uint64_t{0xCD9E8D57u} * ctr[2];
    const uint32_t c0 = static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ k0;
    const uint32_t c1 = static_cast<uint32_t>(p1);
    const uint32_t c2 = static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ k1;
    const uint32_t c3 = static_cast<uint32_t>(p0);
    ctr[0] = c0;
    ctr[1] = c1;
    ctr[2] = c2;
    ctr[3] = c3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

__global__ void SampleKernel(float* logits, int V, const SampleRowParams* params,
                             const int32_t* context, const LogitBias* bias, int32_t* tokens) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  __shared__ int s_flag;
  __shared__ Best s_best[32];
  __shared__ float scratch[32];
  __shared__ float s_prefix[kRowThreads];
  const SampleRowParams sp = params[blockIdx.x];
  float* row = logits + int64_t{blockIdx.x} * V;

  // logit_bias first (OpenAI, vLLM): distinct ids, so one thread per entry writes alone.
  if (sp.bias_len > 0) {
    for (int i = threadIdx.x; i < sp.bias_len; i += blockDim.x) {
      const LogitBias b = bias[sp.bias_start + i];
      if (b.id >= 0 && b.id < V) row[b.id] += b.bias;
    }
    __syncthreads();
  }
  // Repetition penalty: every thread reads its ids' values, then all write (duplicates write the
  // same value, so an id seen twice is penalised once).
  if (sp.repetition_penalty != 1.0f) {
    for (int base = 0; base < sp.context_len; base += blockDim.x) {
      const int i = base + threadIdx.x;
      int id = -1;
      float v = 0.0f;
      if (i < sp.context_len) {
        id = context[sp.context_start + i];
        if (id >= 0 && id < V) v = row[id];
      }
      __syncthreads();
      if (id >= 0 && id < V)
        row[id] = v > 0.0f ? v / sp.repetition_penalty : v * sp.repetition_penalty;
      __syncthreads();
    }
  }
  const int argmax = RowArgMax(row, V, &s_flag, s_best);
  if (argmax < 0 || sp.temperature < 1e-5f) {
    if (threadIdx.x == 0) tokens[blockIdx.x] = argmax;
    return;
  }
  const float top = row[argmax];
  const float inv_t = 1.0f / sp.temperature;
  auto prob = [&](float l) { return expf((l - top) * inv_t); };  // 1 at the top token

  // Top-k: the largest logit threshold keeping at least k tokens (bisection on the value).
  float tau = -INFINITY;
  if (sp.top_k > 0 && sp.top_k < V) {
    float lo, hi = top;  // count(>= hi) >= 1, count(>= min) = all finite
    float mn = FLT_MAX;
    ForRow(row, V, [&](int, float v) {
      if (isfinite(v)) mn = fminf(mn, v);
    });
    for (int o = 16; o > 0; o >>= 1) mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = mn;
    __syncthreads();
    mn = FLT_MAX;
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) mn = fminf(mn, scratch[w]);
    lo = mn;
    // Stops once exactly k tokens lie at or above lo: further halving keeps the same set.
    for (int it = 0; it < 40; ++it) {
      const float mid = 0.5f * (lo + hi);
      float c = 0.0f;
      ForRow(row, V, [&](int, float v) { c += v >= mid ? 1.0f : 0.0f; });
      const float count = BlockSum(c, scratch);
      if (count >= sp.top_k)
        lo = mid;
      else
        hi = mid;
      if (count == sp.top_k) break;
    }
    tau = lo;
  }
  // Top-p over the top-k set: the largest probability threshold whose mass reaches top_p.
  float theta = 0.0f;
  if (sp.top_p < 1.0f) {
    float z = 0.0f;
    ForRow(row, V, [&](int, float v) {
      if (v >= tau) z += prob(v);
    });
    const float total = BlockSum(z, scratch);
    // Invariant: mass(pr >= lo) reaches top_p, mass(pr >= hi) does not. Once at most one token lies
    // in [lo, hi) the kept set {pr >= lo} is final, so the search stops early.
    float lo = 0.0f, hi = 1.0f;
    float n_lo = static_cast<float>(V), n_hi = 0.0f;
    for (int it = 0; it < 32 && n_lo - n_hi > 1.0f; ++it) {
      const float mid = 0.5f * (lo + hi);
      float s = 0.0f, c = 0.0f;
      ForRow(row, V, [&](int, float v) {
        const float pr = prob(v);
        if (v >= tau && pr >= mid) {
          s += pr;
          c += 1.0f;
        }
      });
      const float mass = BlockSum(s, scratch);
      const float count = BlockSum(c, scratch);
      if (mass >= sp.top_p * total) {
        lo = mid;
        n_lo = count;
      } else {
        hi = mid;
        n_hi = count;
      }
    }
    theta = lo;
  }
  const float floor_p = fmaxf(theta, sp.min_p);
  // Draw: inclusive prefix over each thread's contiguous chunk, in index order.
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  const int begin = threadIdx.x * chunk, end = min(V, begin + chunk);
  float local = 0.0f;
  for (int i = begin; i < end; ++i) {
    const float pr = prob(row[i]);
    if (row[i] >= tau && pr >= floor_p) local += pr;
  }
  s_prefix[threadIdx.x] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    float run = 0.0f;
    for (int t = 0; t < blockDim.x; ++t) {
      const float v = s_prefix[t];
      s_prefix[t] = run;
      run += v;
    }
    uint32_t ctr[4] = {sp.step_lo, sp.step_hi, 0, 0};
    Philox(ctr, sp.seed_lo, sp.seed_hi);
    const float u = static_cast<float>(ctr[0] >> 8) * (1.0f / 16777216.0f);
    scratch[0] = u * run;
    s_flag = argmax;  // fallback
  }
  __syncthreads();
  const float target = scratch[0];
  const float my_start = s_prefix[threadIdx.x];
  if (local > 0.0f && target >= my_start && target < my_start + local) {
    float run = my_start;
    int pick = -1;
    for (int i = begin; i < end; ++i) {
      const float pr = prob(row[i]);
      if (row[i] >= tau && pr >= floor_p) {
        pick = i;
        run += pr;
        if (target < run) break;
      }
    }
    if (pick >= 0) s_flag = pick;
  }
  __syncthreads();
  if (threadIdx.x == 0) tokens[blockIdx.x] = s_flag;
}

// Block-wide Better() over every thread's candidate; all threads get the result. `s_best` holds
// 32 entries and is free again when this returns.
__device__ Best BlockBest(Best best, Best* s_best) {
  for (int o = 16; o > 0; o >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = Better(best, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) s_best[warp] = best;
  __syncthreads();
  Best b{-INFINITY, -1};
  for (int w = 0; w < (blockDim.x + 31) / 32; ++w) b = Better(b, s_best[w]);
  __syncthreads();
  return b;
}

// One block per row (see LaunchScoreRows). Passes over the row: the argmax (also the first of the
// top list and the log-softmax's shift), the exponential sum with the count of values above the
// target, then one pass per further top entry: the best value ranked after the previous one in
// (value descending, id ascending) order. top_k is small (kMaxDeviceTopLogprobs), so k passes over
// a row that sits in L2 cost less than keeping k candidates per thread in registers.
__global__ void ScoreRowsKernel(const float* logits, int V, const int32_t* targets, int top_k,
                                float* logprob, int32_t* rank, int32_t* top_ids,
                                float* top_logprobs) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  __shared__ int s_flag;
  __shared__ Best s_best[32];
  __shared__ float scratch[32];
  const int target = targets[blockIdx.x];
  if (target < 0 || target >= V) return;  // unscored row (the whole block leaves)
  const float* row = logits + int64_t{blockIdx.x} * V;
  int32_t* ids = top_ids + int64_t{blockIdx.x} * top_k;
  float* lps = top_logprobs + int64_t{blockIdx.x} * top_k;
  const int argmax = RowArgMax(row, V, &s_flag, s_best);
  if (argmax < 0) {
    // NaN, +inf or nothing finite: the log-softmax is NaN throughout (as the host's in double).
    if (threadIdx.x == 0) {
      logprob[blockIdx.x] = NAN;
      rank[blockIdx.x] = 1;
    }
    for (int j = threadIdx.x; j < top_k; j += blockDim.x) {
      ids[j] = j;
      lps[j] = NAN;
    }
    return;
  }
  const float top = row[argmax];
  const float target_value = row[target];
  float sum = 0.0f, above = 0.0f;
  ForRow(row, V, [&](int, float v) {
    sum += expf(v - top);
    above += v > target_value ? 1.0f : 0.0f;
  });
  const float total = BlockSum(sum, scratch);
  const float count = BlockSum(above, scratch);
  const float log_sum = top + logf(total);
  if (threadIdx.x == 0) {
    logprob[blockIdx.x] = target_value - log_sum;
    rank[blockIdx.x] = 1 + static_cast<int32_t>(count);
    if (top_k > 0) {
      ids[0] = argmax;
      lps[0] = top - log_sum;
    }
  }
  Best prev{top, argmax};
  for (int j = 1; j < top_k && j < V; ++j) {
    Best best{-INFINITY, -1};
    ForRow(row, V, [&](int i, float v) {
      if (v < prev.v || (v == prev.v && i > prev.i)) best = Better(best, Best{v, i});
    });
    prev = BlockBest(best, s_best);
    if (threadIdx.x == 0) {
      ids[j] = prev.i;
      lps[j] = prev.v - log_sum;
    }
  }
}

}  // namespace

cudaError_t LaunchSoftCap(float* logits, int64_t count, float cap, cudaStream_t stream) {
  if (count <= 0 || cap <= 0.0f) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((count + threads - 1) / threads, 132 * 32);
  return LaunchPdl(SoftCapKernel, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream,
                   logits, count, cap);
}

namespace {
cudaError_t ArgMaxStages(float* logits, int rows, int V, float cap, const int32_t* write_capped,
                         int32_t* tokens, int32_t* scratch, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const int parts = std::max(1, std::min(kArgMaxParts, (V + 4095) / 4096));
  const int chunk = ((V + parts - 1) / parts + 3) / 4 * 4;  // float4 boundaries (kVec4)
  const bool vec4 = V % 4 == 0 && chunk % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  const auto kernel =
      cap > 0.0f ? (vec4 ? ArgMaxPartialKernel<true, true> : ArgMaxPartialKernel<true, false>)
                 : (vec4 ? ArgMaxPartialKernel<false, true> : ArgMaxPartialKernel<false, false>);
  const cudaError_t err = LaunchPdl(kernel, dim3(rows, parts), dim3(128), 0, stream, logits, V,
                                    chunk, cap, write_capped, scratch);
  if (err != cudaSuccess) return err;
  return LaunchPdl(ArgMaxFinalKernel, dim3(rows), dim3(32), 0, stream, parts,
                   static_cast<const int32_t*>(scratch), tokens);
}
}  // namespace

cudaError_t LaunchArgMax(const float* logits, int rows, int V, int32_t* tokens, int32_t* scratch,
                         cudaStream_t stream) {
  // Without the cap the kernel only reads the rows.
  return ArgMaxStages(const_cast<float*>(logits), rows, V, 0.0f, nullptr, tokens, scratch, stream);
}

cudaError_t LaunchSoftCapArgMax(float* logits, int rows, int V, float cap, int32_t* tokens,
                                int32_t* scratch, cudaStream_t stream,
                                const int32_t* write_capped) {
  return ArgMaxStages(logits, rows, V, cap, write_capped, tokens, scratch, stream);
}

cudaError_t LaunchCountSoftCapInversions(float cap, uint32_t* stats, cudaStream_t stream) {
  if (cap <= 0.0f) return cudaErrorInvalidValue;
  const uint32_t init[3] = {0, 0, 0x7F800000u};
  cudaError_t err = cudaMemcpyAsync(stats, init, sizeof(init), cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return err;
  err = cudaStreamSynchronize(stream);  // `init` is on this stack
  if (err != cudaSuccess) return err;
  constexpr int kThreads = 256;
  constexpr uint64_t kPerBlock = uint64_t{kThreads} * 64;
  const auto blocks = static_cast<unsigned>((uint64_t{0x7F800000u} + kPerBlock - 1) / kPerBlock);
  CountSoftCapInversionsKernel<<<blocks, kThreads, 0, stream>>>(cap, stats);
  return cudaGetLastError();
}

cudaError_t LaunchSample(float* logits, int rows, int V, const SampleRowParams* params,
                         const int32_t* context, const LogitBias* bias, int32_t* tokens,
                         cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  return LaunchPdl(SampleKernel, dim3(rows), dim3(kRowThreads), 0, stream, logits, V, params,
                   context, bias, tokens);
}

cudaError_t LaunchScoreRows(const float* logits, int rows, int V, const int32_t* targets, int top_k,
                            float* logprob, int32_t* rank, int32_t* top_ids, float* top_logprobs,
                            cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (top_k < 0 || top_k > kMaxDeviceTopLogprobs) return cudaErrorInvalidValue;
  return LaunchPdl(ScoreRowsKernel, dim3(rows), dim3(kRowThreads), 0, stream, logits, V, targets,
                   top_k, logprob, rank, top_ids, top_logprobs);
}

}  // namespace griffin::kernels
