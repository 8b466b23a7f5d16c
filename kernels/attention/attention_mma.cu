// Local attention on the tensor cores, FlashAttention-2 style: prefill tiles and one-token decode
// tiles (with key splits) alike. See attention.cuh for the math and tolerance.
//
// Why by hand and not a library: the keys of a query tile come from two places (this run's K/V
// buffer and the slot's ring, kernels/step_layout.cuh), which neither cuDNN's SDPA nor
// FlashInfer's prefill take without first copying the window into a contiguous (or paged) cache
// every step; and with one kv head (MQA) the G query heads of a token fold into the M dimension
// of the same tile, which is what makes a 16-row MMA worth issuing for a single decode token.
//
// Block = one tile of query tokens x the G query heads of one kv head (x one key split): rows
// (token, head), padded to kWarps x 16; each warp owns 16 rows end to end (S, the online softmax
// and O stay in its registers; no barrier between a warp's S and its P.V). Keys come in tiles of
// kKeys through a two-stage cp.async pipeline: tile i + 1 is in flight while tile i is
// multiplied. Q.K^T is bf16 mma.sync m16n8k16 with float32 accumulate; P.V is half (P rounded to
// half, keeping 11 bits where bf16 has 8; V converted bf16 -> half in shared memory by the thread
// that loaded it, exact within half's normal range). Fragments come from shared memory through
// ldmatrix; rows are padded by 16 bytes so the eight rows of each 8x8 matrix fall in different
// banks. head_dim is a template parameter (16 to 256, powers of two): the copy loops and O's
// registers are sized at compile time (a runtime head_dim cost a third more instructions).
#include <type_traits>

#include "kernels/attention/attention_internal.cuh"

namespace griffin::kernels {
namespace attention_internal {
namespace {

constexpr int kStages = 2;

__device__ __forceinline__ uint32_t SmemAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, asynchronously; `bytes` 0 writes zeros without reading `src`.
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddress(dst)), "l"(src),
               "r"(bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}
__device__ __forceinline__ void LdMatrixX4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddress(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddress(p)));
}
__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  return Pack(__float2half_rn(lo), __float2half_rn(hi));
}

template <int kWarps, int kKeys, int kHd>
struct MmaLayout {
  static constexpr int kRows = kWarps * 16;
  static constexpr int kStride = kHd + 8;  // elements per row of Q, K and V
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t(kRows) * kStride * 2;
  static constexpr size_t kV = kK + size_t(kStages) * kKeys * kStride * 2;  // kStages tiles each
  static constexpr size_t kTotal = kV + size_t(kStages) * kKeys * kStride * 2;
};

template <int kWarps, int kKeys, int kHd>
__global__ void __launch_bounds__(kWarps * 32) AttentionMmaKernel(AttentionParams p) {
  using Layout = MmaLayout<kWarps, kKeys, kHd>;
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kThreads = kWarps * 32;
  constexpr int kSTiles = kKeys / 8;                        // S column tiles of 8 keys per warp
  constexpr int kOTiles = kHd / 8;                          // O column tiles of 8 dims per warp
  constexpr int kStride = Layout::kStride, kVec = kHd / 8;  // 16-byte chunks per row
  static_assert(kThreads % kVec == 0, "a thread copies one fixed column of chunks");
  constexpr int kRowsPerPass = kThreads / kVec;
  const int H = p.H, KV = p.KV, W = p.W, G = H / KV;
  bf16* qs = reinterpret_cast<bf16*>(smem + Layout::kQ);
  bf16* ks = reinterpret_cast<bf16*>(smem + Layout::kK);
  __half* vs = reinterpret_cast<__half*>(smem + Layout::kV);
  AllowDependentLaunch();
  WaitForPriorGrids();

  // Last tile first: in a prefill from position 0 the later tiles see the most keys, so the
  // longest blocks start in the first wave and the short ones fill in behind them.
  const QueryTile tile_rec = p.tiles[p.num_tiles - 1 - blockIdx.x];
  const int t0 = tile_rec.first_token, nq = tile_rec.count;
  const int kvh = blockIdx.y, split = blockIdx.z, R = nq * G;
  const StepEntryRecord en = EntryOfToken(p.layout, t0);
  const int qpos_first = TokenPosition(en, t0);
  const KeyRange tile_keys = TileKeys(tile_rec, qpos_first, W);
  const KeyRange keys =
      p.splits == 1 ? tile_keys : SplitKeyRange(tile_keys, p.splits, split, kKeys);
  const KvRows krows{reinterpret_cast<const bf16*>(p.k),
                     SlotRegion<const bf16>(p.state, en.slot, p.k_offset),
                     en,
                     KV,
                     kHd,
                     W};
  const KvRows vrows{reinterpret_cast<const bf16*>(p.v),
                     SlotRegion<const bf16>(p.state, en.slot, p.v_offset),
                     en,
                     KV,
                     kHd,
                     W};
  const int num_tiles = keys.hi > keys.lo ? (keys.hi - keys.lo + kKeys - 1) / kKeys : 0;

  // Q rows (token qi, head g) -> shared, zeros past R.
  const bf16* q = reinterpret_cast<const bf16*>(p.q);
  for (int idx = threadIdx.x; idx < Layout::kRows * kVec; idx += kThreads) {
    const int r = idx / kVec, c8 = idx % kVec;
    const int qi = r / G, g = r - qi * G;
    const bf16* src = r < R ? q + (int64_t{t0 + qi} * H + kvh * G + g) * kHd + c8 * 8 : q;
    CpAsync16(qs + r * kStride + c8 * 8, src, r < R ? 16 : 0);
  }
  // This thread copies chunk column c8 of rows first_row, first_row + kRowsPerPass, ...
  const int c8 = threadIdx.x % kVec, first_row = threadIdx.x / kVec;
  // Key tile `tile` -> stage `tile % kStages`; keys past hi are zeros (V too: 0 x garbage could
  // be NaN). One division per tile for the ring row; the rows step through it.
  auto load_tile = [&](int tile) {
    const int kb = keys.lo + tile * kKeys, stage = tile % kStages;
    bf16* kd = ks + stage * kKeys * kStride + c8 * 8;
    __half* vd = vs + stage * kKeys * kStride + c8 * 8;
    const int ring_first = kb % W;
#pragma unroll
    for (int j = first_row; j < kKeys; j += kRowsPerPass) {
      const int kp = kb + j;
      const bool ok = kp < keys.hi;
      int ring_row = ring_first + j;
      while (ring_row >= W) ring_row -= W;
      const bf16* ksrc = ok ? krows.Row(kp, kvh, ring_row) + c8 * 8 : krows.run;
      const bf16* vsrc = ok ? vrows.Row(kp, kvh, ring_row) + c8 * 8 : vrows.run;
      CpAsync16(kd + j * kStride, ksrc, ok ? 16 : 0);
      CpAsync16(vd + j * kStride, vsrc, ok ? 16 : 0);
    }
  };
  // The same chunks this thread loaded, bf16 -> half in place (its own cp.async writes are
  // visible to it after the wait; the barrier that follows publishes the result).
  auto convert_v = [&](int tile) {
    __half* vd = vs + (tile % kStages) * kKeys * kStride + c8 * 8;
#pragma unroll
    for (int j = first_row; j < kKeys; j += kRowsPerPass) {
      uint4* cell = reinterpret_cast<uint4*>(vd + j * kStride);
      *cell = Bf16x8ToHalf(*cell);
    }
  };
  load_tile(0);
  CpAsyncCommit();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g4 = lane / 4, tig = lane % 4;
  const int row0 = warp * 16;  // this warp's first row
  const bool warp_active = row0 < R;
  // Query positions of this thread's two rows (g4 and g4 + 8 of the warp's 16). Padding rows get
  // a position too; their output is never written.
  const int qp_a = qpos_first + (row0 + g4) / G, qp_b = qpos_first + (row0 + g4 + 8) / G;
  const int qp_warp_lo = qpos_first + row0 / G, qp_warp_hi = qpos_first + (row0 + 15) / G;
  const float scale_log2 = p.scale * 1.4426950408889634f;
  // ldmatrix row addresses of this lane: A (Q) rows 0-15 x dims 0-15; B (K) keys 0-15 x dims
  // 0-15 as two 8-key column tiles; V^T the same through .trans.
  const bf16* qa = qs + (row0 + (lane % 8) + 8 * ((lane / 8) % 2)) * kStride + 8 * (lane / 16);
  const int kb_lane = ((lane % 8) + 8 * (lane / 16)) * kStride + 8 * ((lane / 8) % 2);
  const int vb_lane = ((lane % 8) + 8 * ((lane / 8) % 2)) * kStride + 8 * (lane / 16);

  float o[kOTiles][4];
#pragma unroll
  for (int i = 0; i < kOTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // log2 domain max; row sums

  for (int tile = 0; tile < num_tiles; ++tile) {
    if (tile + 1 < num_tiles) load_tile(tile + 1);
    CpAsyncCommit();  // possibly empty: keeps the wait count below uniform
    CpAsyncWait<1>();
    convert_v(tile);
    __syncthreads();
    const int kb = keys.lo + tile * kKeys;
    const bf16* kt = ks + (tile % kStages) * kKeys * kStride + kb_lane;
    const __half* vt = vs + (tile % kStages) * kKeys * kStride + vb_lane;
    // Keys this warp's rows can see at all in this tile.
    if (warp_active && kb <= qp_warp_hi && kb + kKeys - 1 >= qp_warp_lo - W) {
      // S = Q K^T over head_dim in steps of 16.
      float s[kSTiles][4];
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int d0 = 0; d0 < kHd; d0 += 16) {
        uint32_t a[4];
        LdMatrixX4(a, qa + d0);
#pragma unroll
        for (int j2 = 0; j2 < kSTiles / 2; ++j2) {
          uint32_t b[4];
          LdMatrixX4(b, kt + j2 * 16 * kStride + d0);
          MmaBf16(s[2 * j2], a, b);
          MmaBf16(s[2 * j2 + 1], a, b + 2);
        }
      }
      // Scale into the log2 domain and mask: a key is seen by a row when it is in this pass's
      // range and within the row's causal window.
      const bool all_visible =
          kb + kKeys <= keys.hi && kb + kKeys - 1 <= qp_warp_lo && qp_warp_hi - kb <= W;
      float mx_a = m_a, mx_b = m_b;
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int kp = kb + j * 8 + 2 * tig + u;
          float va = s[j][u] * scale_log2, vb = s[j][2 + u] * scale_log2;
          if (!all_visible) {
            const bool in_range = kp < keys.hi;
            if (!(in_range && Visible(qp_a, kp, W))) va = -INFINITY;
            if (!(in_range && Visible(qp_b, kp, W))) vb = -INFINITY;
          }
          s[j][u] = va;
          s[j][2 + u] = vb;
          mx_a = fmaxf(mx_a, va);
          mx_b = fmaxf(mx_b, vb);
        }
      }
      // Row max over the quad that shares a row.
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
      // A row that has seen no key yet keeps max -inf; subtract 0 then so exp2 gives 0, not NaN.
      const float base_a = mx_a == -INFINITY ? 0.0f : mx_a;
      const float base_b = mx_b == -INFINITY ? 0.0f : mx_b;
      const float corr_a = exp2f(m_a - base_a), corr_b = exp2f(m_b - base_b);
      m_a = mx_a;
      m_b = mx_b;
      float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) {
        s[j][0] = exp2f(s[j][0] - base_a);
        s[j][1] = exp2f(s[j][1] - base_a);
        s[j][2] = exp2f(s[j][2] - base_b);
        s[j][3] = exp2f(s[j][3] - base_b);
        sum_a += s[j][0] + s[j][1];
        sum_b += s[j][2] + s[j][3];
      }
      l_a = l_a * corr_a + sum_a;  // this thread's share; the quad's shares are added at the end
      l_b = l_b * corr_b + sum_b;
      // Rescaling O costs as many instructions as the tile's MMAs; once the rows' maxima settle
      // (most tiles of a long prefill) no lane needs it.
      if (__any_sync(0xffffffffu, corr_a != 1.0f || corr_b != 1.0f)) {
#pragma unroll
        for (int i = 0; i < kOTiles; ++i) {
          o[i][0] *= corr_a;
          o[i][1] *= corr_a;
          o[i][2] *= corr_b;
          o[i][3] *= corr_b;
        }
      }
      // O += P V: P's accumulator layout is the A fragment's, 16 keys (two S tiles) per step.
#pragma unroll
      for (int k2 = 0; k2 < kKeys / 16; ++k2) {
        const uint32_t a[4] = {PackHalf2(s[2 * k2][0], s[2 * k2][1]),
                               PackHalf2(s[2 * k2][2], s[2 * k2][3]),
                               PackHalf2(s[2 * k2 + 1][0], s[2 * k2 + 1][1]),
                               PackHalf2(s[2 * k2 + 1][2], s[2 * k2 + 1][3])};
#pragma unroll
        for (int d2 = 0; d2 < kHd / 16; ++d2) {
          uint32_t b[4];
          LdMatrixX4Trans(b, vt + k2 * 16 * kStride + d2 * 16);
          MmaF16(o[2 * d2], a, b);
          MmaF16(o[2 * d2 + 1], a, b + 2);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is loaded again
  }

  const int ra = row0 + g4, rb = ra + 8;
  if (warp_active) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
  }
  // Unnormalised partial rows (o, m, l) at row indices idx_a / idx_b of the partials buffer;
  // m_scale takes m from the log2 domain of the softmax to what the reader expects.
  auto store_partials = [&](int64_t idx_a, int64_t idx_b, float m_scale) {
#pragma unroll
    for (int i = 0; i < kOTiles; ++i) {
      if (ra < R)
        *reinterpret_cast<float2*>(p.part_o + idx_a * kHd + i * 8 + 2 * tig) =
            make_float2(o[i][0], o[i][1]);
      if (rb < R)
        *reinterpret_cast<float2*>(p.part_o + idx_b * kHd + i * 8 + 2 * tig) =
            make_float2(o[i][2], o[i][3]);
    }
    if (tig == 0 && ra < R) {
      p.part_ml[2 * idx_a] = m_a * m_scale;
      p.part_ml[2 * idx_a + 1] = l_a;
    }
    if (tig == 0 && rb < R) {
      p.part_ml[2 * idx_b] = m_b * m_scale;
      p.part_ml[2 * idx_b + 1] = l_b;
    }
  };
  if (p.splits > 1 && warp_active) {  // the split combine reads m in natural log
    constexpr float kLn2 = 0.6931471805599453f;
    store_partials((int64_t{t0 + ra / G} * H + kvh * G + ra % G) * p.splits + split,
                   (int64_t{t0 + rb / G} * H + kvh * G + rb % G) * p.splits + split, kLn2);
  }
  if (tile_rec.part >= 0) {  // a cut tile (splits == 1): partials, then the second part merges
    const int part = tile_rec.part, other = 1 - part;
    const int64_t row_a = CutTileRow(p, t0 + ra / G, kvh * G + ra % G, 0);
    const int64_t row_b = CutTileRow(p, t0 + rb / G, kvh * G + rb % G, 0);
    // m stays in the log2 domain: only this kernel reads it
    if (warp_active) store_partials(row_a + part, row_b + part, 1.0f);
    if (!SecondPartOfTile(CutTileTicket(p, t0, kvh))) return;
    if (warp_active) {
      // Each thread reads back exactly the values its counterpart in the other block wrote.
      float s0a = 0, s1a = 0, s0b = 0, s1b = 0;
      if (ra < R) {
        const float mo = __ldcg(p.part_ml + 2 * (row_a + other));
        const float lo = __ldcg(p.part_ml + 2 * (row_a + other) + 1);
        PartWeights(part == 0 ? m_a : mo, part == 0 ? mo : m_a, true, s0a, s1a);
        l_a = part == 0 ? MergeParts(l_a, s0a, lo, s1a) : MergeParts(lo, s0a, l_a, s1a);
      }
      if (rb < R) {
        const float mo = __ldcg(p.part_ml + 2 * (row_b + other));
        const float lo = __ldcg(p.part_ml + 2 * (row_b + other) + 1);
        PartWeights(part == 0 ? m_b : mo, part == 0 ? mo : m_b, true, s0b, s1b);
        l_b = part == 0 ? MergeParts(l_b, s0b, lo, s1b) : MergeParts(lo, s0b, l_b, s1b);
      }
#pragma unroll
      for (int i = 0; i < kOTiles; ++i) {
        if (ra < R) {
          const float2 x = __ldcg(
              reinterpret_cast<const float2*>(p.part_o + (row_a + other) * kHd + i * 8 + 2 * tig));
          o[i][0] =
              part == 0 ? MergeParts(o[i][0], s0a, x.x, s1a) : MergeParts(x.x, s0a, o[i][0], s1a);
          o[i][1] =
              part == 0 ? MergeParts(o[i][1], s0a, x.y, s1a) : MergeParts(x.y, s0a, o[i][1], s1a);
        }
        if (rb < R) {
          const float2 x = __ldcg(
              reinterpret_cast<const float2*>(p.part_o + (row_b + other) * kHd + i * 8 + 2 * tig));
          o[i][2] =
              part == 0 ? MergeParts(o[i][2], s0b, x.x, s1b) : MergeParts(x.x, s0b, o[i][2], s1b);
          o[i][3] =
              part == 0 ? MergeParts(o[i][3], s0b, x.y, s1b) : MergeParts(x.y, s0b, o[i][3], s1b);
        }
      }
    }
  }
  if (p.splits == 1 && warp_active) {
    bf16* out = reinterpret_cast<bf16*>(p.out);
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
    bf16* out_a = out + (int64_t{t0 + ra / G} * H + kvh * G + ra % G) * kHd + 2 * tig;
    bf16* out_b = out + (int64_t{t0 + rb / G} * H + kvh * G + rb % G) * kHd + 2 * tig;
#pragma unroll
    for (int i = 0; i < kOTiles; ++i) {
      if (ra < R) {
        *reinterpret_cast<__nv_bfloat162*>(out_a + i * 8) =
            __floats2bfloat162_rn(o[i][0] * inv_a, o[i][1] * inv_a);
      }
      if (rb < R) {
        *reinterpret_cast<__nv_bfloat162*>(out_b + i * 8) =
            __floats2bfloat162_rn(o[i][2] * inv_b, o[i][3] * inv_b);
      }
    }
  }
  // One split: this block was the only reader of its (token, kv head)'s ring rows, and it is done
  // with them, so the decode step's new key and value can go in (split passes: the combine).
  if (p.decode_writes_ring && p.splits == 1)
    WriteRingRow(p, EntryOfToken(p.layout, t0), t0, kvh);  // reloaded: fewer live registers
}

// The variants a launch can take: rows per block follow the tile (tokens x G) it is given. The
// 128-row block takes 64-key tiles (eight independent S accumulators per warp; 198 KB of shared
// memory at head_dim 256, one block per SM); the 64-row block 32-key tiles (99 KB: two per SM).
constexpr int kSmallWarps = 4, kSmallKeys = 32, kLargeWarps = 8, kLargeKeys = 64;

// Calls f(std::integral_constant<int, hd>) for a head_dim the kernel is compiled for.
template <typename F>
bool WithHeadDim(int hd, F&& f) {
  switch (hd) {
    case 16:
      f(std::integral_constant<int, 16>());
      return true;
    case 32:
      f(std::integral_constant<int, 32>());
      return true;
    case 64:
      f(std::integral_constant<int, 64>());
      return true;
    case 128:
      f(std::integral_constant<int, 128>());
      return true;
    case 256:
      f(std::integral_constant<int, 256>());
      return true;
    default:
      return false;
  }
}

}  // namespace

bool MmaEligible(int H, int KV, int hd) {
  return H / KV <= kMmaRows && WithHeadDim(hd, [](auto) {});
}

cudaError_t PrepareMma() {
  cudaError_t err = cudaSuccess;
  for (int hd : {16, 32, 64, 128, 256}) {
    WithHeadDim(hd, [&](auto head_dim) {
      constexpr int kHd = decltype(head_dim)::value;
      using Small = MmaLayout<kSmallWarps, kSmallKeys, kHd>;
      using Large = MmaLayout<kLargeWarps, kLargeKeys, kHd>;
      static_assert(Large::kTotal <= kMaxSmem, "the 128-row block must fit");
      if (err == cudaSuccess)
        err = cudaFuncSetAttribute(AttentionMmaKernel<kSmallWarps, kSmallKeys, kHd>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(Small::kTotal));
      if (err == cudaSuccess)
        err = cudaFuncSetAttribute(AttentionMmaKernel<kLargeWarps, kLargeKeys, kHd>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(Large::kTotal));
    });
  }
  return err;
}

AttentionPrefillBlock MmaBlockOf(int H, int KV, int hd, int max_tile_tokens) {
  AttentionPrefillBlock block;
  const bool small = max_tile_tokens * (H / KV) <= kSmallWarps * 16;
  WithHeadDim(hd, [&](auto head_dim) {
    constexpr int kHd = decltype(head_dim)::value;
    int per_sm = 0;
    if (small) {
      block.key_tile = kSmallKeys;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &per_sm, AttentionMmaKernel<kSmallWarps, kSmallKeys, kHd>, kSmallWarps * 32,
          MmaLayout<kSmallWarps, kSmallKeys, kHd>::kTotal);
    } else {
      block.key_tile = kLargeKeys;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &per_sm, AttentionMmaKernel<kLargeWarps, kLargeKeys, kHd>, kLargeWarps * 32,
          MmaLayout<kLargeWarps, kLargeKeys, kHd>::kTotal);
    }
    block.blocks_per_sm = per_sm;
  });
  return block;
}

cudaError_t LaunchMma(const AttentionParams& p, int max_tile_tokens, cudaStream_t stream) {
  const dim3 grid(p.num_tiles, p.KV, p.splits);
  const bool small = max_tile_tokens * (p.H / p.KV) <= kSmallWarps * 16;
  cudaError_t err = cudaSuccess;
  const bool known = WithHeadDim(p.hd, [&](auto head_dim) {
    constexpr int kHd = decltype(head_dim)::value;
    err = small ? LaunchPdl(AttentionMmaKernel<kSmallWarps, kSmallKeys, kHd>, grid,
                            dim3(kSmallWarps * 32), MmaLayout<kSmallWarps, kSmallKeys, kHd>::kTotal,
                            stream, p)
                : LaunchPdl(AttentionMmaKernel<kLargeWarps, kLargeKeys, kHd>, grid,
                            dim3(kLargeWarps * 32), MmaLayout<kLargeWarps, kLargeKeys, kHd>::kTotal,
                            stream, p);
  });
  return known ? err : cudaErrorInvalidValue;
}

}  // namespace attention_internal
}  // namespace griffin::kernels
