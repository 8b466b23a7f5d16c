// See attention.cuh for the math, layouts and work decomposition.
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>

#include "kernels/attention.cuh"
#include "kernels/common.cuh"

namespace griffin::kernels {
namespace {

constexpr int kKeyTile = 32;
constexpr int kThreads = 256;
constexpr int kMaxRows = 64;  // query rows (tokens x heads of a group) per block
constexpr size_t kMaxSmem = 200 * 1024;

struct Entry {
  int start, len, slot, pos0;
};
__device__ __forceinline__ Entry GetEntry(const TokenLayout& l, int e) {
  return {l.entries[4 * e], l.entries[4 * e + 1], l.entries[4 * e + 2], l.entries[4 * e + 3]};
}

__global__ void RopeKernel(AttentionParams p) {
  const int t = blockIdx.x, head = blockIdx.y;
  const Entry en = GetEntry(p.layout, p.layout.tok_entry[t]);
  const int pos = en.pos0 + (t - en.start);
  const int hd = p.hd, H = p.H, KV = p.KV;
  const int width = (H + 2 * KV) * hd;
  const int half = p.rotary / 2;
  const float* hrow = p.qkv + int64_t{t} * width + head * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float val = hrow[d];
    if (head < H + KV && d < p.rotary) {
      const int i = d < half ? d : d - half;
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(p.rotary);
      const float inv_frequency = 1.0f / powf(p.theta, exponent);
      const float angle = static_cast<float>(pos) * inv_frequency;
      const float sn = sinf(angle), cs = cosf(angle);
      const float first = hrow[i], second = hrow[i + half];
      val = d < half ? first * cs - second * sn : second * cs + first * sn;
    }
    if (head < H) {
      reinterpret_cast<bf16*>(p.q)[(int64_t{t} * H + head) * hd + d] = ToB(val);
    } else if (head < H + KV) {
      reinterpret_cast<bf16*>(p.k)[(int64_t{t} * KV + head - H) * hd + d] = ToB(val);
    } else {
      reinterpret_cast<bf16*>(p.v)[(int64_t{t} * KV + head - H - KV) * hd + d] = ToB(val);
    }
  }
}

size_t AttentionSmem(int rows, int hd) {
  const size_t kstride = hd + 2;
  return size_t(rows) * hd * 4 * 2                // q, o (float32)
         + 2 * kKeyTile * kstride * 2             // k, v tiles (bf16, padded rows)
         + size_t(rows) * (kKeyTile + 1) * 4      // scores
         + size_t(rows) * 3 * 4;                  // m, l, correction
}

__global__ void AttentionKernel(AttentionParams p) {
  extern __shared__ float smem[];
  const int tile = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int t0 = p.tiles[2 * tile], nq = p.tiles[2 * tile + 1];
  const int hd = p.hd, H = p.H, KV = p.KV, W = p.W;
  const int G = H / KV, R = nq * G;
  const int kstride = hd + 2, sstride = kKeyTile + 1;
  float* qs = smem;
  float* os = qs + R * hd;
  bf16* ks = reinterpret_cast<bf16*>(os + R * hd);
  bf16* vs = ks + kKeyTile * kstride;
  float* sc = reinterpret_cast<float*>(vs + kKeyTile * kstride);
  float* m = sc + R * sstride;
  float* l = m + R;
  float* corr = l + R;

  const Entry en = GetEntry(p.layout, p.layout.tok_entry[t0]);
  const int qpos_first = en.pos0 + (t0 - en.start);
  const int lo = max(0, qpos_first - W), hi = qpos_first + nq;  // keys [lo, hi)
  int per = (hi - lo + p.splits - 1) / p.splits;
  per = (per + kKeyTile - 1) / kKeyTile * kKeyTile;
  const int s_lo = lo + split * per, s_hi = min(hi, s_lo + per);

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
  const char* slot_base = p.state.pool + en.slot * p.state.slot_stride;
  const bf16* ring_k = reinterpret_cast<const bf16*>(slot_base + p.k_offset);
  const bf16* ring_v = reinterpret_cast<const bf16*>(slot_base + p.v_offset);
  const bf16* run_k = reinterpret_cast<const bf16*>(p.k);
  const bf16* run_v = reinterpret_cast<const bf16*>(p.v);
  __syncthreads();

  for (int kb = s_lo; kb < s_hi; kb += kKeyTile) {
    const int nk = min(kKeyTile, s_hi - kb);
    if (hd % 8 == 0) {
      // 16-byte loads (the padded smem rows keep 4-byte alignment only, so store as 4 words).
      const int vec = hd / 8;
      for (int idx = threadIdx.x; idx < nk * vec; idx += blockDim.x) {
        const int j = idx / vec, c8 = idx - j * vec;
        const int kp = kb + j;
        int64_t off;
        const bf16 *srck, *srcv;
        if (kp >= en.pos0) {
          off = (int64_t{en.start + kp - en.pos0} * KV + kvh) * hd + c8 * 8;
          srck = run_k;
          srcv = run_v;
        } else {
          off = (int64_t{kp % W} * KV + kvh) * hd + c8 * 8;
          srck = ring_k;
          srcv = ring_v;
        }
        const uint4 kv4 = *reinterpret_cast<const uint4*>(srck + off);
        const uint4 vv4 = *reinterpret_cast<const uint4*>(srcv + off);
        uint32_t* kd = reinterpret_cast<uint32_t*>(ks + j * kstride + c8 * 8);
        uint32_t* vd = reinterpret_cast<uint32_t*>(vs + j * kstride + c8 * 8);
        kd[0] = kv4.x; kd[1] = kv4.y; kd[2] = kv4.z; kd[3] = kv4.w;
        vd[0] = vv4.x; vd[1] = vv4.y; vd[2] = vv4.z; vd[3] = vv4.w;
      }
    } else {
    for (int idx = threadIdx.x; idx < nk * hd; idx += blockDim.x) {
      const int j = idx / hd, d = idx - j * hd;
      const int kp = kb + j;
      int64_t off;
      const bf16 *srck, *srcv;
      if (kp >= en.pos0) {
        off = (int64_t{en.start + kp - en.pos0} * KV + kvh) * hd + d;
        srck = run_k;
        srcv = run_v;
      } else {
        off = (int64_t{kp % W} * KV + kvh) * hd + d;
        srck = ring_k;
        srcv = ring_v;
      }
      ks[j * kstride + d] = srck[off];
      vs[j * kstride + d] = srcv[off];
    }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * kKeyTile; idx += blockDim.x) {
      const int r = idx / kKeyTile, j = idx - r * kKeyTile;
      const int qp = qpos_first + r / G, kp = kb + j;
      float s = -INFINITY;
      if (j < nk && kp <= qp && qp - kp <= W) {
        const float* qr = qs + r * hd;
        const bf16* kr = ks + j * kstride;
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
        int d = 0;
        for (; d + 4 <= hd; d += 4) {
          const float2 k01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d));
          const float2 k23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d + 2));
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

// ---- Decode on the tensor cores (one-token tiles, G = H / KV <= 16 query heads, hd % 16 == 0) ----
// The group's G query rows, padded to 16, against key tiles of kDecKeys: S = Q.K^T with
// mma.sync m16n8k16 (bf16 in, float32 accumulate), the online softmax in float32 (a warp per row),
// O += P.V with P and V in half (float32 accumulate), O in registers. Four warps: S's key columns
// and O's head-dim columns are split between them. Same key ranges, partial outputs and combine as
// the scalar kernel.
constexpr int kDecKeys = 32;  // 46 KB of shared memory at hd 256: 4 blocks per SM
constexpr int kDecWarps = 4;
constexpr int kDecMaxHd = 256;
constexpr int kDecOTiles = kDecMaxHd / 8 / kDecWarps;  // O column tiles of 8 per warp, at most

struct DecLayout {
  int qstride, kstride, sstride, pstride;  // elements per row
  size_t q, k, v, s, pr, ml, total;       // byte offsets
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

__device__ __forceinline__ void MmaBf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void MmaF16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ uint32_t Word(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint32_t Pack(__half lo, __half hi) {
  return uint32_t(__half_as_ushort(lo)) | (uint32_t(__half_as_ushort(hi)) << 16);
}

__global__ void __launch_bounds__(kDecWarps * 32) AttentionDecodeMmaKernel(AttentionParams p) {
  extern __shared__ __align__(16) char dsmem[];
  const int hd = p.hd, H = p.H, KV = p.KV, W = p.W, G = H / KV;
  const DecLayout L = MakeDecLayout(hd);
  bf16* qs = reinterpret_cast<bf16*>(dsmem + L.q);
  bf16* ks = reinterpret_cast<bf16*>(dsmem + L.k);
  __half* vs = reinterpret_cast<__half*>(dsmem + L.v);
  float* ss = reinterpret_cast<float*>(dsmem + L.s);
  __half* ps = reinterpret_cast<__half*>(dsmem + L.pr);
  float* m_s = reinterpret_cast<float*>(dsmem + L.ml);
  float* l_s = m_s + 16;
  float* corr_s = l_s + 16;

  const int t0 = p.tiles[2 * blockIdx.x], kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const Entry en = GetEntry(p.layout, p.layout.tok_entry[t0]);
  const int qp = en.pos0 + (t0 - en.start);
  const int lo = max(0, qp - W), hi = qp + 1;
  int per = (hi - lo + p.splits - 1) / p.splits;
  per = (per + kKeyTile - 1) / kKeyTile * kKeyTile;
  const int s_lo = lo + split * per, s_hi = min(hi, s_lo + per);

  const bf16* q = reinterpret_cast<const bf16*>(p.q) + int64_t{t0} * H * hd + int64_t{kvh} * G * hd;
  for (int idx = threadIdx.x; idx < 16 * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx - r * hd;
    qs[r * L.qstride + d] = r < G ? q[r * hd + d] : ToB(0.0f);
  }
  if (threadIdx.x < 16) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.0f;
  }
  const char* slot_base = p.state.pool + en.slot * p.state.slot_stride;
  const bf16* ring_k = reinterpret_cast<const bf16*>(slot_base + p.k_offset);
  const bf16* ring_v = reinterpret_cast<const bf16*>(slot_base + p.v_offset);
  const bf16* run_k = reinterpret_cast<const bf16*>(p.k);
  const bf16* run_v = reinterpret_cast<const bf16*>(p.v);

  const int o_tiles = hd / 8;
  float o[kDecOTiles][4];
#pragma unroll
  for (int i = 0; i < kDecOTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;

  for (int kb = s_lo; kb < s_hi; kb += kDecKeys) {
    const int nk = min(kDecKeys, s_hi - kb);
    __syncthreads();  // the previous tile's readers are done with ks / vs / ps
    const int vec = hd / 8;
#pragma unroll 4
    for (int idx = threadIdx.x; idx < kDecKeys * vec; idx += blockDim.x) {
      const int j = idx / vec, c8 = idx - j * vec;
      uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
      if (j < nk) {
        const int kp = kb + j;
        const bool run = kp >= en.pos0;
        const int64_t off = (int64_t{run ? en.start + kp - en.pos0 : kp % W} * KV + kvh) * hd + c8 * 8;
        kv4 = *reinterpret_cast<const uint4*>((run ? run_k : ring_k) + off);
        vv4 = *reinterpret_cast<const uint4*>((run ? run_v : ring_v) + off);
      }
      *reinterpret_cast<uint4*>(ks + j * L.kstride + c8 * 8) = kv4;
      const __nv_bfloat162* vb = reinterpret_cast<const __nv_bfloat162*>(&vv4);
      uint4 vh;
      uint32_t* vhw = reinterpret_cast<uint32_t*>(&vh);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float2 f = __bfloat1622float2(vb[u]);
        vhw[u] = Pack(__float2half_rn(f.x), __float2half_rn(f.y));
      }
      *reinterpret_cast<uint4*>(vs + j * L.kstride + c8 * 8) = vh;
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
        for (int u = 0; u < kPerLane; ++u) ps[r * L.pstride + lane + 32 * u] = __float2half_rn(0.0f);
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

bool DecodeMmaEligible(int H, int KV, int hd) {
  return hd % 16 == 0 && hd <= kDecMaxHd && H / KV <= 16;
}

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

__global__ void RingWriteKernel(AttentionParams p) {
  const int t = blockIdx.x;
  const Entry en = GetEntry(p.layout, p.layout.tok_entry[t]);
  const int k = t - en.start;
  if (k < en.len - p.W) return;
  const int pos = en.pos0 + k;
  char* slot_base = p.state.pool + en.slot * p.state.slot_stride;
  bf16* ring_k = reinterpret_cast<bf16*>(slot_base + p.k_offset);
  bf16* ring_v = reinterpret_cast<bf16*>(slot_base + p.v_offset);
  const int width = p.KV * p.hd;
  const int64_t dst = int64_t{pos % p.W} * width;
  const bf16* k_src = reinterpret_cast<const bf16*>(p.k) + int64_t{t} * width;
  const bf16* v_src = reinterpret_cast<const bf16*>(p.v) + int64_t{t} * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    ring_k[dst + i] = k_src[i];
    ring_v[dst + i] = v_src[i];
  }
}


// ---- Prefill tiles on the tensor cores (WMMA bf16 16x16x16, float32 accumulate) ----
// Block = one tile of query tokens x the heads of one kv group, padded to 64 rows; keys in tiles of
// 32 staged in shared memory (16-byte loads). S = Q K^T (bf16) and O += P V (half: P in [0, 1]
// keeps 11 bits instead of bf16's 8; V converts exactly within half's normal range) run as WMMA;
// the online softmax is float32 per row. Needs head_dim % 16 == 0.
namespace wmma = nvcuda::wmma;
constexpr int kTcRows = 64;
constexpr int kTcKeys = 32;
constexpr int kTcThreads = 256;

struct TcLayout {
  int qs, ss, ps, os;  // strides (elements) of Q/K/V (bf16), S (f32), P (bf16), O (f32)
  size_t q, k, v, s, pm, o, m, l, c, total;  // byte offsets
};
__host__ __device__ inline TcLayout MakeTcLayout(int hd) {
  TcLayout t;
  t.qs = hd + 8; t.ss = kTcKeys + 4; t.ps = kTcKeys + 8; t.os = hd + 4;
  t.q = 0;
  t.k = t.q + size_t(kTcRows) * t.qs * 2;
  t.v = t.k + size_t(kTcKeys) * t.qs * 2;
  t.s = t.v + size_t(kTcKeys) * t.qs * 2;
  t.pm = t.s + size_t(kTcRows) * t.ss * 4;
  t.o = t.pm + size_t(kTcRows) * t.ps * 2;
  t.m = t.o + size_t(kTcRows) * t.os * 4;
  t.l = t.m + kTcRows * 4;
  t.c = t.l + kTcRows * 4;
  t.total = t.c + kTcRows * 4;
  return t;
}

__global__ void __launch_bounds__(kTcThreads) AttentionTcKernel(AttentionParams p) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
  const int hd = p.hd, H = p.H, KV = p.KV, W = p.W;
  const TcLayout lay = MakeTcLayout(hd);
  bf16* qs = reinterpret_cast<bf16*>(tc_smem + lay.q);
  bf16* ks = reinterpret_cast<bf16*>(tc_smem + lay.k);
  __half* vs = reinterpret_cast<__half*>(tc_smem + lay.v);  // V staged as half (exact from bf16)
  float* ss = reinterpret_cast<float*>(tc_smem + lay.s);
  __half* ps = reinterpret_cast<__half*>(tc_smem + lay.pm);
  float* os = reinterpret_cast<float*>(tc_smem + lay.o);
  float* mrow = reinterpret_cast<float*>(tc_smem + lay.m);
  float* lrow = reinterpret_cast<float*>(tc_smem + lay.l);
  float* crow = reinterpret_cast<float*>(tc_smem + lay.c);

  const int tile = blockIdx.x, kvh = blockIdx.y;
  const int t0 = p.tiles[2 * tile], nq = p.tiles[2 * tile + 1];
  const int G = H / KV, R = nq * G;
  const Entry en = GetEntry(p.layout, p.layout.tok_entry[t0]);
  const int qpos_first = en.pos0 + (t0 - en.start);
  const int lo = max(0, qpos_first - W), hi = qpos_first + nq;
  const int warp = threadIdx.x / 32;
  const int vec = hd / 8;  // 16-byte vectors per row

  const bf16* q = reinterpret_cast<const bf16*>(p.q);
  for (int idx = threadIdx.x; idx < kTcRows * vec; idx += blockDim.x) {
    const int r = idx / vec, c8 = idx - r * vec;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < R) {
      const int qi = r / G, g = r - qi * G;
      val = *reinterpret_cast<const uint4*>(q + (int64_t{t0 + qi} * H + kvh * G + g) * hd + c8 * 8);
    }
    *reinterpret_cast<uint4*>(qs + r * lay.qs + c8 * 8) = val;
  }
  for (int idx = threadIdx.x; idx < kTcRows * hd; idx += blockDim.x) {
    os[(idx / hd) * lay.os + idx % hd] = 0.0f;
  }
  for (int r = threadIdx.x; r < kTcRows; r += blockDim.x) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  const char* slot_base = p.state.pool + en.slot * p.state.slot_stride;
  const bf16* ring_k = reinterpret_cast<const bf16*>(slot_base + p.k_offset);
  const bf16* ring_v = reinterpret_cast<const bf16*>(slot_base + p.v_offset);
  const bf16* run_k = reinterpret_cast<const bf16*>(p.k);
  const bf16* run_v = reinterpret_cast<const bf16*>(p.v);
  __syncthreads();

  for (int kb = lo; kb < hi; kb += kTcKeys) {
    const int nk = min(kTcKeys, hi - kb);
    for (int idx = threadIdx.x; idx < kTcKeys * vec; idx += blockDim.x) {
      const int j = idx / vec, c8 = idx - j * vec;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (j < nk) {
        const int kp = kb + j;
        int64_t off;
        const bf16 *srck, *srcv;
        if (kp >= en.pos0) {
          off = (int64_t{en.start + kp - en.pos0} * KV + kvh) * hd + c8 * 8;
          srck = run_k;
          srcv = run_v;
        } else {
          off = (int64_t{kp % W} * KV + kvh) * hd + c8 * 8;
          srck = ring_k;
          srcv = ring_v;
        }
        kval = *reinterpret_cast<const uint4*>(srck + off);
        vval = *reinterpret_cast<const uint4*>(srcv + off);
      }
      *reinterpret_cast<uint4*>(ks + j * lay.qs + c8 * 8) = kval;
      const __nv_bfloat162* vb = reinterpret_cast<const __nv_bfloat162*>(&vval);
      __half2 vh[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) vh[u] = __float22half2_rn(__bfloat1622float2(vb[u]));
      *reinterpret_cast<uint4*>(vs + j * lay.qs + c8 * 8) = *reinterpret_cast<const uint4*>(vh);
    }
    __syncthreads();
    {  // S = Q K^T: 4 x 2 output tiles of 16 x 16, one per warp.
      const int ti = warp / 2, tj = warp % 2;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int k = 0; k < hd; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
        wmma::load_matrix_sync(a, qs + ti * 16 * lay.qs + k, lay.qs);
        wmma::load_matrix_sync(b, ks + tj * 16 * lay.qs + k, lay.qs);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(ss + ti * 16 * lay.ss + tj * 16, acc, lay.ss, wmma::mem_row_major);
    }
    __syncthreads();
    for (int r = threadIdx.x; r < kTcRows; r += blockDim.x) {
      float* sr = ss + r * lay.ss;
      __half* pr = ps + r * lay.ps;
      if (r >= R) {
        for (int j = 0; j < kTcKeys; ++j) pr[j] = __float2half_rn(0.0f);
        crow[r] = 1.0f;
        continue;
      }
      const int qp = qpos_first + r / G;
      float mx = mrow[r];
      for (int j = 0; j < kTcKeys; ++j) {
        const int kp = kb + j;
        const bool ok = j < nk && kp <= qp && qp - kp <= W;
        sr[j] = ok ? sr[j] * p.scale : -INFINITY;
        mx = fmaxf(mx, sr[j]);
      }
      float c = 1.0f, sum = 0.0f;
      if (mx == -INFINITY) {
        for (int j = 0; j < kTcKeys; ++j) pr[j] = __float2half_rn(0.0f);
      } else {
        c = expf(mrow[r] - mx);
        for (int j = 0; j < kTcKeys; ++j) {
          const float e = expf(sr[j] - mx);
          sum += e;
          pr[j] = __float2half_rn(e);
        }
      }
      lrow[r] = lrow[r] * c + sum;
      mrow[r] = mx;
      crow[r] = c;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTcRows * hd; idx += blockDim.x) {
      const int r = idx / hd;
      os[r * lay.os + idx - r * hd] *= crow[r];
    }
    __syncthreads();
    {  // O += P V: 4 x hd/16 output tiles spread over the warps.
      const int col_tiles = hd / 16;
      for (int t = warp; t < 4 * col_tiles; t += kTcThreads / 32) {
        const int ti = t / col_tiles, tj = t - ti * col_tiles;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        float* optr = os + ti * 16 * lay.os + tj * 16;
        wmma::load_matrix_sync(acc, optr, lay.os, wmma::mem_row_major);
        for (int k = 0; k < kTcKeys; k += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
          wmma::load_matrix_sync(a, ps + ti * 16 * lay.ps + k, lay.ps);
          wmma::load_matrix_sync(b, vs + k * lay.qs + tj * 16, lay.qs);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(optr, acc, lay.os, wmma::mem_row_major);
      }
    }
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
    const int r = idx / hd, d = idx - r * hd;
    const int qi = r / G, g = r - qi * G;
    reinterpret_cast<bf16*>(p.out)[(int64_t{t0 + qi} * H + kvh * G + g) * hd + d] =
        ToB(os[r * lay.os + d] / lrow[r]);
  }
}

bool TcEligible(int H, int KV, int hd) {
  return hd % 16 == 0 && H / KV <= kTcRows && MakeTcLayout(hd).total <= kMaxSmem;
}

}  // namespace

int AttentionPrefillTileTokens(int H, int KV, int hd) {
  if (TcEligible(H, KV, hd)) return std::max(1, kTcRows / (H / KV));
  return AttentionMaxTileTokens(H, KV, hd);
}

int AttentionMaxTileTokens(int H, int KV, int hd) {
  const int G = H / KV;
  int tokens = kMaxRows / G;
  while (tokens > 1 && AttentionSmem(tokens * G, hd) > kMaxSmem) --tokens;
  if (tokens < 1) tokens = 1;
  if (AttentionSmem(tokens * G, hd) > kMaxSmem) return 0;
  return tokens;
}

const char* CanImplementAttention(int H, int KV, int hd, int rotary) {
  if (KV <= 0 || H % KV != 0) return "num_heads must be a multiple of num_kv_heads";
  if (rotary % 2 != 0 || rotary > hd) return "rotary dims must be even and at most head_dim";
  if (hd % 2 != 0) return "head_dim must be even";
  if (AttentionMaxTileTokens(H, KV, hd) == 0) return "attention head group too large for shared memory";
  return "";
}

cudaError_t PrepareAttentionKernels() {
  cudaError_t err = cudaFuncSetAttribute(AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kMaxSmem));
  if (err != cudaSuccess) return err;
  err = cudaFuncSetAttribute(AttentionDecodeMmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(MakeDecLayout(kDecMaxHd).total));
  if (err != cudaSuccess) return err;
  return cudaFuncSetAttribute(AttentionTcKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(kMaxSmem));
}

cudaError_t LaunchRope(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  RopeKernel<<<dim3(p.n, p.H + 2 * p.KV), p.hd < 128 ? 32 * ((p.hd + 31) / 32) : 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  if (p.num_tiles <= 0) return cudaSuccess;
  if (p.splits == 1 && max_tile_tokens > 1 && TcEligible(p.H, p.KV, p.hd) &&
      max_tile_tokens * (p.H / p.KV) <= kTcRows) {
    AttentionTcKernel<<<dim3(p.num_tiles, p.KV), kTcThreads, MakeTcLayout(p.hd).total, stream>>>(p);
    return cudaGetLastError();
  }
  dim3 grid(p.num_tiles, p.KV, p.splits);
  if (max_tile_tokens == 1 && DecodeMmaEligible(p.H, p.KV, p.hd)) {
    AttentionDecodeMmaKernel<<<grid, kDecWarps * 32, MakeDecLayout(p.hd).total, stream>>>(p);
  } else {
    const size_t smem = AttentionSmem(max_tile_tokens * (p.H / p.KV), p.hd);
    AttentionKernel<<<grid, kThreads, smem, stream>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  return LaunchAttentionCombine(p, stream);
}

cudaError_t LaunchAttentionCombine(const AttentionParams& p, cudaStream_t stream) {
  dim3 grid(p.n, p.H);
  CombineKernel<<<grid, p.hd < 256 ? p.hd : 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchRingWrite(const AttentionParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  RingWriteKernel<<<p.n, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace griffin::kernels
