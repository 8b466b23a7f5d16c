// Prefill attention tiles on the tensor cores (WMMA bf16 16x16x16, float32 accumulate). See
// attention.cuh for the math and tolerance.
//
// Block = one tile of query tokens x the heads of one kv group, padded to 64 rows; keys in tiles of
// 32 staged in shared memory (16-byte loads). S = Q K^T (bf16) and O += P V (half: P in [0, 1]
// keeps 11 bits instead of bf16's 8; V converts exactly within half's normal range) run as WMMA;
// the online softmax is float32 per row. Needs head_dim % 16 == 0.
#include <mma.h>

#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

namespace wmma = nvcuda::wmma;
constexpr int kTcRows = kPrefillMmaRows;
constexpr int kTcKeys = 32;
constexpr int kTcThreads = 256;

struct TcLayout {
  int qs, ss, ps, os;  // strides (elements) of Q/K/V (bf16), S (f32), P (bf16), O (f32)
  size_t q, k, v, s, pm, o, m, l, c, total;  // byte offsets
};
__host__ __device__ inline TcLayout MakeTcLayout(int hd) {
  TcLayout t;
  t.qs = hd + 8;
  t.ss = kTcKeys + 4;
  t.ps = kTcKeys + 8;
  t.os = hd + 4;
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
  const int t0 = p.tiles[tile].first_token, nq = p.tiles[tile].count;
  const int G = H / KV, R = nq * G;
  const StepEntryRecord en = EntryOfToken(p.layout, t0);
  const int qpos_first = TokenPosition(en, t0);
  const KeyRange keys = KeysOfQueries(qpos_first, nq, W);
  const int lo = keys.lo, hi = keys.hi;
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
  const KvRows krows{reinterpret_cast<const bf16*>(p.k),
                     SlotRegion<const bf16>(p.state, en.slot, p.k_offset),
                     en,
                     KV,
                     hd,
                     W};
  const KvRows vrows{reinterpret_cast<const bf16*>(p.v),
                     SlotRegion<const bf16>(p.state, en.slot, p.v_offset),
                     en,
                     KV,
                     hd,
                     W};
  __syncthreads();

  for (int kb = lo; kb < hi; kb += kTcKeys) {
    const int nk = min(kTcKeys, hi - kb);
    for (int idx = threadIdx.x; idx < kTcKeys * vec; idx += blockDim.x) {
      const int j = idx / vec, c8 = idx - j * vec;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (j < nk) {
        kval = *reinterpret_cast<const uint4*>(krows.Row(kb + j, kvh) + c8 * 8);
        vval = *reinterpret_cast<const uint4*>(vrows.Row(kb + j, kvh) + c8 * 8);
      }
      *reinterpret_cast<uint4*>(ks + j * lay.qs + c8 * 8) = kval;
      *reinterpret_cast<uint4*>(vs + j * lay.qs + c8 * 8) = Bf16x8ToHalf(vval);
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
        const bool ok = j < nk && Visible(qp, kp, W);
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

}  // namespace

bool PrefillMmaEligible(int H, int KV, int hd) {
  return hd % 16 == 0 && H / KV <= kTcRows && MakeTcLayout(hd).total <= kMaxSmem;
}

cudaError_t PreparePrefillMma() {
  return cudaFuncSetAttribute(AttentionTcKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(kMaxSmem));
}

cudaError_t LaunchPrefillMma(const AttentionParams& p, cudaStream_t stream) {
  AttentionTcKernel<<<dim3(p.num_tiles, p.KV), kTcThreads, MakeTcLayout(p.hd).total, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace attention_internal
}  // namespace griffin::kernels
