// Decode attention on the tensor cores: one-token tiles, G = H / KV <= 16 query heads per kv head,
// head_dim % 16 == 0 and <= 256. See attention.cuh for the math and tolerance.
//
// Block = (query token, kv head, key split). The group's G query rows, padded to 16, against key
// tiles of kDecKeys: S = Q.K^T with mma.sync m16n8k16 (bf16 in, float32 accumulate), the online
// softmax in float32 (a warp per row), O += P.V with P and V in half (float32 accumulate), O in
// registers. Four warps: S's key columns and O's head-dim columns are split between them. Each
// split writes a partial (o, m, l) and CombineKernel merges them (flash-decoding).
#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

constexpr int kDecKeys = 32;  // 46 KB of shared memory at hd 256: 4 blocks per SM
constexpr int kDecWarps = 4;
constexpr int kDecMaxHd = 256;
constexpr int kDecOTiles = kDecMaxHd / 8 / kDecWarps;  // O column tiles of 8 per warp, at most

struct DecLayout {
  int qstride, kstride, sstride, pstride;  // elements per row
  size_t q, k, v, s, pr, ml, total;        // byte offsets
};
__host__ __device__ inline DecLayout MakeDecLayout(int hd) {
  DecLayout L;
  L.qstride = hd + 8;  // 16-byte aligned rows, fragment loads free of bank conflicts
  L.kstride = hd + 8;
  L.sstride = kDecKeys + 4;
  L.pstride = kDecKeys + 8;
  L.q = 0;
  L.k = L.q + size_t(16) * L.qstride * 2;
  L.v = L.k + size_t(kDecKeys) * L.kstride * 2;
  L.s = L.v + size_t(kDecKeys) * L.kstride * 2;
  L.pr = L.s + size_t(16) * L.sstride * 4;
  L.ml = L.pr + size_t(16) * L.pstride * 2;
  L.total = L.ml + 3 * 16 * 4;
  return L;
}

__global__ void __launch_bounds__(kDecWarps * 32) AttentionDecodeMmaKernel(AttentionParams p) {
  extern __shared__ __align__(16) char dsmem[];
  const int hd = p.hd, H = p.H, W = p.W, G = H / p.KV;
  const DecLayout L = MakeDecLayout(hd);
  bf16* qs = reinterpret_cast<bf16*>(dsmem + L.q);
  bf16* ks = reinterpret_cast<bf16*>(dsmem + L.k);
  __half* vs = reinterpret_cast<__half*>(dsmem + L.v);
  float* ss = reinterpret_cast<float*>(dsmem + L.s);
  __half* ps = reinterpret_cast<__half*>(dsmem + L.pr);
  float* m_s = reinterpret_cast<float*>(dsmem + L.ml);
  float* l_s = m_s + 16;
  float* corr_s = l_s + 16;

  const int t0 = p.tiles[blockIdx.x].first_token, kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const StepEntryRecord en = EntryOfToken(p.layout, t0);
  const KeyRange keys =
      SplitKeyRange(KeysOfQueries(TokenPosition(en, t0), 1, W), p.splits, split, kKeyTile);
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

  const bf16* q = reinterpret_cast<const bf16*>(p.q) + int64_t{t0} * H * hd + int64_t{kvh} * G * hd;
  for (int idx = threadIdx.x; idx < 16 * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx - r * hd;
    qs[r * L.qstride + d] = r < G ? q[r * hd + d] : ToB(0.0f);
  }
  if (threadIdx.x < 16) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.0f;
  }

  const int o_tiles = hd / 8;
  float o[kDecOTiles][4];
#pragma unroll
  for (int i = 0; i < kDecOTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;

  for (int kb = keys.lo; kb < keys.hi; kb += kDecKeys) {
    const int nk = min(kDecKeys, keys.hi - kb);
    __syncthreads();  // the previous tile's readers are done with ks / vs / ps
    const int vec = hd / 8;
#pragma unroll 4
    for (int idx = threadIdx.x; idx < kDecKeys * vec; idx += blockDim.x) {
      const int j = idx / vec, c8 = idx - j * vec;
      uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
      if (j < nk) {
        kv4 = *reinterpret_cast<const uint4*>(krows.Row(kb + j, kvh) + c8 * 8);
        vv4 = *reinterpret_cast<const uint4*>(vrows.Row(kb + j, kvh) + c8 * 8);
      }
      *reinterpret_cast<uint4*>(ks + j * L.kstride + c8 * 8) = kv4;
      *reinterpret_cast<uint4*>(vs + j * L.kstride + c8 * 8) = Bf16x8ToHalf(vv4);
    }
    __syncthreads();

    // S = Q.K^T: this warp's column tiles of 8 keys.
    constexpr int kColTiles = kDecKeys / 8 / kDecWarps;
#pragma unroll
    for (int ct = 0; ct < kColTiles; ++ct) {
      const int n0 = (warp * kColTiles + ct) * 8;
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int kk = 0; kk < hd; kk += 16) {
        const uint32_t a[4] = {Word(qs + g * L.qstride + kk + tig * 2),
                               Word(qs + (g + 8) * L.qstride + kk + tig * 2),
                               Word(qs + g * L.qstride + kk + 8 + tig * 2),
                               Word(qs + (g + 8) * L.qstride + kk + 8 + tig * 2)};
        const uint32_t b[2] = {Word(ks + (n0 + g) * L.kstride + kk + tig * 2),
                               Word(ks + (n0 + g) * L.kstride + kk + 8 + tig * 2)};
        MmaBf16(c, a, b);
      }
      const int key = n0 + tig * 2;
      ss[g * L.sstride + key] = key < nk ? c[0] * p.scale : -INFINITY;
      ss[g * L.sstride + key + 1] = key + 1 < nk ? c[1] * p.scale : -INFINITY;
      ss[(g + 8) * L.sstride + key] = key < nk ? c[2] * p.scale : -INFINITY;
      ss[(g + 8) * L.sstride + key + 1] = key + 1 < nk ? c[3] * p.scale : -INFINITY;
    }
    __syncthreads();

    // Online softmax, a warp per row (rows >= G are padding: P = 0).
    constexpr int kPerLane = kDecKeys / 32;
    for (int r = warp; r < 16; r += kDecWarps) {
      float sv[kPerLane];
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) sv[u] = ss[r * L.sstride + lane + 32 * u];
      if (r >= G) {
#pragma unroll
        for (int u = 0; u < kPerLane; ++u)
          ps[r * L.pstride + lane + 32 * u] = __float2half_rn(0.0f);
        continue;
      }
      const float m_old = m_s[r];
      float mx = m_old;
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) mx = fmaxf(mx, sv[u]);
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      float c = 1.0f, sum = 0.0f;
      if (mx != -INFINITY) c = expf(m_old - mx);  // 0 when m_old is -inf
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const float e = mx != -INFINITY ? expf(sv[u] - mx) : 0.0f;
        ps[r * L.pstride + lane + 32 * u] = __float2half_rn(e);
        sum += e;
      }
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      // Every lane read m_s[r] above; lane 0 overwrites it. The shuffles keep the warp together
      // but order no memory: without this barrier the write races the other lanes' reads
      // (compute-sanitizer racecheck, KER-5).
      __syncwarp();
      if (lane == 0) {
        l_s[r] = l_s[r] * c + sum;
        m_s[r] = mx;
        corr_s[r] = c;
      }
    }
    __syncthreads();

    // O = O * corr + P.V over this warp's head-dim column tiles.
    const float c_lo = g < G ? corr_s[g] : 1.0f, c_hi = g + 8 < G ? corr_s[g + 8] : 1.0f;
#pragma unroll
    for (int i = 0; i < kDecOTiles; ++i) {
      const int nt = warp + i * kDecWarps;
      if (nt >= o_tiles) break;
      o[i][0] *= c_lo;
      o[i][1] *= c_lo;
      o[i][2] *= c_hi;
      o[i][3] *= c_hi;
      const int n0 = nt * 8;
#pragma unroll
      for (int kk = 0; kk < kDecKeys; kk += 16) {
        const uint32_t a[4] = {Word(ps + g * L.pstride + kk + tig * 2),
                               Word(ps + (g + 8) * L.pstride + kk + tig * 2),
                               Word(ps + g * L.pstride + kk + 8 + tig * 2),
                               Word(ps + (g + 8) * L.pstride + kk + 8 + tig * 2)};
        const __half* vcol = vs + n0 + g;
        const uint32_t b[2] = {
            Pack(vcol[(kk + tig * 2) * L.kstride], vcol[(kk + tig * 2 + 1) * L.kstride]),
            Pack(vcol[(kk + tig * 2 + 8) * L.kstride], vcol[(kk + tig * 2 + 9) * L.kstride])};
        MmaF16(o[i], a, b);
      }
    }
  }
  __syncthreads();

  // Out: rows g and g + 8 of this thread's fragments, columns n0 + 2 tig (+1).
#pragma unroll
  for (int i = 0; i < kDecOTiles; ++i) {
    const int nt = warp + i * kDecWarps;
    if (nt >= o_tiles) break;
    const int d = nt * 8 + tig * 2;
#pragma unroll
    for (int half_row = 0; half_row < 2; ++half_row) {
      const int r = g + 8 * half_row;
      if (r >= G) continue;
      const int head = kvh * G + r;
      const float v0 = o[i][2 * half_row], v1 = o[i][2 * half_row + 1];
      if (p.splits == 1) {
        bf16* out = reinterpret_cast<bf16*>(p.out) + int64_t{t0} * H * hd + int64_t{head} * hd + d;
        out[0] = ToB(v0 / l_s[r]);
        out[1] = ToB(v1 / l_s[r]);
      } else {
        const int64_t part = (int64_t{t0} * H + head) * p.splits + split;
        p.part_o[part * hd + d] = v0;
        p.part_o[part * hd + d + 1] = v1;
      }
    }
  }
  if (p.splits > 1 && threadIdx.x < G) {
    const int64_t part = (int64_t{t0} * H + kvh * G + threadIdx.x) * p.splits + split;
    p.part_ml[2 * part] = m_s[threadIdx.x];
    p.part_ml[2 * part + 1] = l_s[threadIdx.x];
  }
}

// Merges the splits' partial outputs: o = sum_s o_s e^(m_s - m) / sum_s l_s e^(m_s - m); a split
// that saw no key (m_s = -inf) contributes nothing.
__global__ void CombineKernel(AttentionParams p) {
  const int t = blockIdx.x, head = blockIdx.y;
  const int64_t base = (int64_t{t} * p.H + head) * p.splits;
  float mx = -INFINITY;
  for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, p.part_ml[2 * (base + s)]);
  float denom = 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    const float ms = p.part_ml[2 * (base + s)];
    if (ms != -INFINITY) denom += p.part_ml[2 * (base + s) + 1] * expf(ms - mx);
  }
  for (int d = threadIdx.x; d < p.hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float ms = p.part_ml[2 * (base + s)];
      if (ms != -INFINITY) acc += p.part_o[(base + s) * p.hd + d] * expf(ms - mx);
    }
    reinterpret_cast<bf16*>(p.out)[int64_t{t} * p.H * p.hd + head * p.hd + d] = ToB(acc / denom);
  }
}

}  // namespace

bool DecodeMmaEligible(int H, int KV, int hd) {
  return hd % 16 == 0 && hd <= kDecMaxHd && H / KV <= 16;
}

cudaError_t PrepareDecodeMma() {
  return cudaFuncSetAttribute(AttentionDecodeMmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(MakeDecLayout(kDecMaxHd).total));
}

cudaError_t LaunchDecodeMma(const AttentionParams& p, cudaStream_t stream) {
  AttentionDecodeMmaKernel<<<dim3(p.num_tiles, p.KV, p.splits), kDecWarps * 32,
                             MakeDecLayout(p.hd).total, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace attention_internal

cudaError_t LaunchAttentionCombine(const AttentionParams& p, cudaStream_t stream) {
  const int threads = p.hd < 256 ? p.hd : 256;
  attention_internal::CombineKernel<<<dim3(p.n, p.H), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace griffin::kernels
