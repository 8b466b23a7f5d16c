// The float32 CUDA-core attention kernel: any head size and group, prefill tiles or one-token
// decode tiles with key splits. The reference path the tensor-core kernels are compared with in
// spirit (same key ranges, same online softmax), and the one used where they do not apply
// (head_dim % 16 != 0, e.g. the demo model's 72). See attention.cuh.
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRows = 64;  // query rows (tokens x heads of a group) per block

// Shared memory: q and o rows (float32), a K and a V tile (bf16, rows padded by 2 elements),
// the tile's scores, and per row m, l and the correction factor.
__global__ void AttentionKernel(AttentionParams p) {
  extern __shared__ float smem[];
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int tile = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const QueryTile tile_rec = p.tiles[tile];
  const int t0 = tile_rec.first_token, nq = tile_rec.count;
  const int hd = p.hd, H = p.H, W = p.W;
  const int G = H / p.KV, R = nq * G;
  const int kstride = hd + 2, sstride = kKeyTile + 1;
  float* qs = smem;
  float* os = qs + R * hd;
  bf16* ks = reinterpret_cast<bf16*>(os + R * hd);
  bf16* vs = ks + kKeyTile * kstride;
  float* sc = reinterpret_cast<float*>(vs + kKeyTile * kstride);
  float* m = sc + R * sstride;
  float* l = m + R;
  float* corr = l + R;

  const StepEntryRecord en = EntryOfToken(p.layout, t0);
  const int qpos_first = TokenPosition(en, t0);
  const KeyRange keys = SplitKeyRange(TileKeys(tile_rec, qpos_first, W), p.splits, split, kKeyTile);
  const KvRows krows{reinterpret_cast<const bf16*>(p.k),
                     SlotRegion<const bf16>(p.state, en.slot, p.k_offset),
                     en,
                     p.KV,
                     hd,
                     W};
  const KvRows vrows{reinterpret_cast<const bf16*>(p.v),
                     SlotRegion<const bf16>(p.state, en.slot, p.v_offset),
                     en,
                     p.KV,
                     hd,
                     W};

  const bf16* q = reinterpret_cast<const bf16*>(p.q);
  for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx - r * hd;
    const int qi = r / G, g = r - qi * G;
    qs[idx] = ToF(q[int64_t{t0 + qi} * H * hd + (kvh * G + g) * hd + d]);
    os[idx] = 0.0f;
  }
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  __syncthreads();

  for (int kb = keys.lo; kb < keys.hi; kb += kKeyTile) {
    const int nk = min(kKeyTile, keys.hi - kb);
    if (hd % 8 == 0) {
      // 16-byte loads (the padded smem rows keep 4-byte alignment only, so store as 4 words).
      const int vec = hd / 8;
      for (int idx = threadIdx.x; idx < nk * vec; idx += blockDim.x) {
        const int j = idx / vec, c8 = idx - j * vec;
        const uint4 kv4 = *reinterpret_cast<const uint4*>(krows.Row(kb + j, kvh) + c8 * 8);
        const uint4 vv4 = *reinterpret_cast<const uint4*>(vrows.Row(kb + j, kvh) + c8 * 8);
        uint32_t* kd = reinterpret_cast<uint32_t*>(ks + j * kstride + c8 * 8);
        uint32_t* vd = reinterpret_cast<uint32_t*>(vs + j * kstride + c8 * 8);
        kd[0] = kv4.x;
        kd[1] = kv4.y;
        kd[2] = kv4.z;
        kd[3] = kv4.w;
        vd[0] = vv4.x;
        vd[1] = vv4.y;
        vd[2] = vv4.z;
        vd[3] = vv4.w;
      }
    } else {
      for (int idx = threadIdx.x; idx < nk * hd; idx += blockDim.x) {
        const int j = idx / hd, d = idx - j * hd;
        ks[j * kstride + d] = krows.Row(kb + j, kvh)[d];
        vs[j * kstride + d] = vrows.Row(kb + j, kvh)[d];
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * kKeyTile; idx += blockDim.x) {
      const int r = idx / kKeyTile, j = idx - r * kKeyTile;
      const int qp = qpos_first + r / G, kp = kb + j;
      float s = -INFINITY;
      if (j < nk && Visible(qp, kp, W)) {
        const float* qr = qs + r * hd;
        const bf16* kr = ks + j * kstride;
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
        int d = 0;
        for (; d + 4 <= hd; d += 4) {
          const float2 k01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d));
          const float2 k23 =
              __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d + 2));
          d0 += qr[d] * k01.x;
          d1 += qr[d + 1] * k01.y;
          d2 += qr[d + 2] * k23.x;
          d3 += qr[d + 3] * k23.y;
        }
        for (; d < hd; ++d) d0 += qr[d] * ToF(kr[d]);
        s = ((d0 + d1) + (d2 + d3)) * p.scale;
      }
      sc[r * sstride + j] = s;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      float* sr = sc + r * sstride;
      float mx = m[r];
      for (int j = 0; j < nk; ++j) mx = fmaxf(mx, sr[j]);
      float c = 1.0f, sum = 0.0f;
      if (mx == -INFINITY) {
        for (int j = 0; j < nk; ++j) sr[j] = 0.0f;
      } else {
        c = expf(m[r] - mx);  // 0 when m[r] is -inf
        for (int j = 0; j < nk; ++j) {
          const float e = expf(sr[j] - mx);
          sr[j] = e;
          sum += e;
        }
      }
      l[r] = l[r] * c + sum;
      m[r] = mx;
      corr[r] = c;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
      const int r = idx / hd, d = idx - r * hd;
      const float* sr = sc + r * sstride;
      float acc = os[idx] * corr[r];
      for (int j = 0; j < nk; ++j) acc += sr[j] * ToF(vs[j * kstride + d]);
      os[idx] = acc;
    }
    __syncthreads();
  }

  if (tile_rec.part >= 0) {  // a cut tile (splits == 1): partials, then the second part merges
    const int part = tile_rec.part, other = 1 - part;
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
      const int r = idx / hd, d = idx - r * hd;
      const int64_t row = CutTileRow(p, t0 + r / G, kvh * G + r % G, part);
      p.part_o[row * hd + d] = os[idx];
      if (d == 0) {
        p.part_ml[2 * row] = m[r];
        p.part_ml[2 * row + 1] = l[r];
      }
    }
    if (!SecondPartOfTile(CutTileTicket(p, t0, kvh))) return;
    for (int r = threadIdx.x; r < R; r += blockDim.x) {  // weights into corr (part 0), sc (part 1)
      const int64_t row = CutTileRow(p, t0 + r / G, kvh * G + r % G, other);
      const float mo = __ldcg(p.part_ml + 2 * row), lo = __ldcg(p.part_ml + 2 * row + 1);
      float s0, s1;
      PartWeights(part == 0 ? m[r] : mo, part == 0 ? mo : m[r], false, s0, s1);
      l[r] = part == 0 ? MergeParts(l[r], s0, lo, s1) : MergeParts(lo, s0, l[r], s1);
      corr[r] = s0;
      sc[r * sstride] = s1;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
      const int r = idx / hd, d = idx - r * hd;
      const float x = __ldcg(p.part_o + CutTileRow(p, t0 + r / G, kvh * G + r % G, other) * hd + d);
      os[idx] = part == 0 ? MergeParts(os[idx], corr[r], x, sc[r * sstride])
                          : MergeParts(x, corr[r], os[idx], sc[r * sstride]);
    }
  }
  for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx - r * hd;
    const int qi = r / G, g = r - qi * G;
    const int head = kvh * G + g;
    const int t = t0 + qi;
    if (p.splits == 1) {
      reinterpret_cast<bf16*>(p.out)[int64_t{t} * H * hd + head * hd + d] = ToB(os[idx] / l[r]);
    } else {
      const int64_t part = (int64_t{t} * H + head) * p.splits + split;
      p.part_o[part * hd + d] = os[idx];
      if (d == 0) {
        p.part_ml[2 * part] = m[r];
        p.part_ml[2 * part + 1] = l[r];
      }
    }
  }
}

}  // namespace

size_t ScalarSmemBytes(int rows, int hd) {
  const size_t kstride = hd + 2;
  return size_t(rows) * hd * 4 * 2            // q, o (float32)
         + 2 * kKeyTile * kstride * 2         // k, v tiles (bf16, padded rows)
         + size_t(rows) * (kKeyTile + 1) * 4  // scores
         + size_t(rows) * 3 * 4;              // m, l, correction
}

cudaError_t PrepareScalar() {
  return cudaFuncSetAttribute(AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(kMaxSmem));
}

cudaError_t LaunchScalar(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  const size_t smem = ScalarSmemBytes(max_tile_tokens * (p.H / p.KV), p.hd);
  return LaunchPdl(AttentionKernel, dim3(p.num_tiles, p.KV, p.splits), dim3(kThreads), smem, stream,
                   p);
}

}  // namespace attention_internal

int AttentionMaxTileTokens(int H, int KV, int hd) {
  using attention_internal::kMaxSmem;
  using attention_internal::ScalarSmemBytes;
  const int G = H / KV;
  int tokens = attention_internal::kMaxRows / G;
  while (tokens > 1 && ScalarSmemBytes(tokens * G, hd) > kMaxSmem) --tokens;
  if (tokens < 1) tokens = 1;
  if (ScalarSmemBytes(tokens * G, hd) > kMaxSmem) return 0;
  return tokens;
}

}  // namespace griffin::kernels
