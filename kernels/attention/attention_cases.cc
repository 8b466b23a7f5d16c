// Cases for kernels/attention in the op registry: RoPE against ref::ApplyRope, attention on the
// same bf16 q/k/v and ring against a float64 softmax (every kernel path: tensor-core prefill
// tiles or the scalar kernel, and one-token decode tiles with key splits on the tensor cores or
// the scalar kernel), and the ring write.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention_cudnn.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

// Tolerance of a RoPE output against ref::ApplyRope: bf16 output rounding (2^-8 relative, with
// margin) plus the angle's float error times the pair it rotates. The kernel's powf, sinf and
// cosf may differ from the host's by an ulp or two, so the angle pos * inv_freq differs by up to
// about (pos + 1) * 2^-22 radians, which moves the output by that times |first| + |second|: where
// the rotation cancels, far more than the output's own rounding (1.07e-5 off an output of
// 1.75e-4 at position ~900, 2026-12-02). `in` is the head's row before RoPE, `d` the dimension.
float RopeTolerance(const float* in, int d, int rotary, int pos, float out) {
  float pair = 0.0f;
  if (d < rotary) {
    const int half = rotary / 2, i = d < half ? d : d - half;
    pair = std::abs(in[i]) + std::abs(in[i + half]);
  }
  return std::abs(out) * 0.0040f + 1e-5f + 4.0f * std::ldexp(float(pos + 1), -22) * pair;
}

// mode 0: prefill tiles of AttentionPrefillTileTokens; 1: one-token decode tiles, split;
// 2: prefill tiles of half that size (the tensor-core kernel's smaller block); 3: prefill tiles,
// split (a short pass after a long prefix: rows of one tile see different key ranges, so a split
// may hold no key of some rows); 4: a decode step (every entry one token), split.
// Mode 4 also runs with the ring written inside the attention launch (decode_writes_ring).
// 5: cuDNN's fused attention on fresh sequences (attention_cudnn.h): skipped where cuDNN does not
// load; a shape it refuses fails.
// Modes 1, 3 and 4 also run the split combine's block per row (warp_combine false) on the same
// partials: the same bits as its warp per row.
// 6: prefill tiles, every other one cut into two key parts (QueryTile::part) at a third of its
// keys (not on a key tile's edge), the records out of order, partials from the first cut token;
// launched 8 more times on the same tickets: the same bits each time (whichever part ends second
// merges) and every ticket back at zero.
void AttentionCase(int H, int KV, int hd, int W, int mode) {
  ASSERT_EQ(PrepareAttentionKernels(), cudaSuccess);
  const int rotary = hd / 2;
  ASSERT_STREQ(CanImplementAttention(H, KV, hd, rotary), "");
  const int G = H / KV;
  // Entries: fresh prefill, continuing prefill crossing the ring boundary, decode tokens at
  // positions below and beyond the window.
  HostLayout lay;
  struct E {
    int len, pos0;
  };
  // cuDNN's: every sequence from position 0, shorter and longer than the window, five of them
  // (its bucket of eight holds three empty ones).
  const std::vector<E> es =
      mode == 4   ? std::vector<E>{{1, 0}, {1, 3}, {1, 3 * W + 2}, {1, W}, {1, 2 * W + 1}}
      : mode == 5 ? std::vector<E>{{7, 0}, {W + 3, 0}, {1, 0}, {2 * W + 5, 0}, {W, 0}}
                  : std::vector<E>{{7, 0}, {W + 3, 2 * W + 1}, {1, 3}, {1, 3 * W + 2}, {1, W}};
  for (size_t e = 0; e < es.size(); ++e) lay.Add(es[e].len, int(e), es[e].pos0);
  const int n = lay.n, slots = int(es.size());
  const int64_t ring = int64_t{W} * KV * hd * 2;
  const int64_t slot_stride = 2 * ring;
  auto qkv = Random(size_t(n) * (H + 2 * KV) * hd);
  auto ring_vals = RoundBf16(Random(size_t(slots) * 2 * W * KV * hd));
  std::vector<char> pool(size_t(slots) * slot_stride);
  auto rb = ToBf16(ring_vals);
  std::memcpy(pool.data(), rb.data(), rb.size() * 2);

  {
    const int prefill_tile = AttentionPrefillTileTokens(H, KV, hd);
    const bool cut = mode == 6;
    const int tile = mode == 0 || mode == 3 || cut ? prefill_tile
                     : mode == 2                   ? std::max(1, prefill_tile / 2)
                                                   : 1;
    std::vector<QueryTile> tiles;
    int first_cut = n;
    for (size_t e = 0; e < es.size(); ++e) {
      for (int k = 0; k < es[e].len; k += tile) {
        const int count = std::min(tile, es[e].len - k), first = lay.entries[e].start + k;
        const int lo = std::max(0, es[e].pos0 + k - W), hi = es[e].pos0 + k + count;
        if (!cut || tiles.size() % 2 == 1 || hi - lo < 2) {
          tiles.push_back({first, count});
          continue;
        }
        const int split = lo + std::max(1, (hi - lo) / 3);
        tiles.push_back({first, count, 1, split});
        tiles.push_back({first, count, 0, split});
        first_cut = std::min(first_cut, first);
      }
    }
    if (cut) std::reverse(tiles.begin(), tiles.end());
    const int splits = mode == 1 || mode == 4 ? 3 : mode == 3 ? 4 : 1;
    const int partial_rows = cut ? 2 : splits;
    Dev<float> d_qkv(qkv), part_o(size_t(n) * H * partial_rows * hd),
        part_ml(size_t(n) * H * partial_rows * 2);
    Dev<unsigned> tickets(std::vector<unsigned>(size_t(n) * KV, 0u));
    Dev<bf16_t> dq(size_t(n) * H * hd), dk(size_t(n) * KV * hd), dv(size_t(n) * KV * hd),
        dout(size_t(n) * H * hd);
    Dev<int32_t> d_te(lay.tok_entry);
    Dev<StepEntryRecord> d_en(lay.entries);
    Dev<QueryTile> d_tiles(tiles);
    Dev<char> d_pool(pool);
    AttentionParams p;
    p.qkv = d_qkv.get();
    p.q = dq.get();
    p.k = dk.get();
    p.v = dv.get();
    p.layout = {d_te.get(), d_en.get()};
    p.tiles = d_tiles.get();
    p.num_tiles = int(tiles.size());
    p.state = {d_pool.get(), slot_stride};
    p.k_offset = 0;
    p.v_offset = ring;
    p.n = n;
    p.H = H;
    p.KV = KV;
    p.hd = hd;
    p.W = W;
    p.rotary = rotary;
    p.theta = 10000.0f;
    p.scale = 1.0f / std::sqrt(float(hd));
    p.splits = splits;
    p.split_tiles = cut;
    p.partial_first_token = cut ? first_cut : 0;
    p.tile_counters = tickets.get();
    p.part_o = part_o.get();
    p.part_ml = part_ml.get();
    p.out = dout.get();
    ASSERT_EQ(LaunchRope(p, 0), cudaSuccess);
    if (mode == 5) {
      CudnnAttention cudnn;
      if (const std::string why = cudnn.Init(H, KV, hd, W, p.scale, 8, 16 << 20); !why.empty()) {
        GTEST_SKIP() << "cuDNN attention: " << why;
      }
      std::vector<int> lengths;
      for (const E& e : es) lengths.push_back(e.len);
      ASSERT_EQ(cudnn.SetPass(lengths, 0), "") << "cuDNN " << cudnn.version();
      ASSERT_EQ(cudnn.Run(p.q, p.k, p.v, p.out, 0), "");
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      // The same bits on every run: its kernel schedules tiles through shared memory, where
      // racecheck reports a hazard (bench/NOTES.md, session 18); a real race would move tiles.
      const std::vector<bf16_t> first = dout.Get(size_t(n) * H * hd);
      Dev<bf16_t> again(size_t(n) * H * hd);
      for (int run = 0; run < 16; ++run) {
        ASSERT_EQ(cudnn.Run(p.q, p.k, p.v, again.get(), 0), "");
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        ASSERT_TRUE(again.Get(first.size()) == first) << "run " << run << " differs";
      }
    } else {
      ASSERT_EQ(LaunchAttention(p, tile, 0), cudaSuccess);
    }
    if (splits > 1) {  // the combine's warp per row against its block per row: the same bits
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      Dev<bf16_t> block_rows(size_t(n) * H * hd);
      AttentionParams pb = p;
      pb.warp_combine = false;
      pb.out = block_rows.get();
      ASSERT_EQ(LaunchAttentionCombine(pb, 0), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_TRUE(block_rows.Get(size_t(n) * H * hd) == dout.Get(size_t(n) * H * hd))
          << "the combine's warp per row and block per row differ";
    }
    if (cut) {
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::vector<bf16_t> first = dout.Get(size_t(n) * H * hd);
      Dev<bf16_t> again(size_t(n) * H * hd);
      AttentionParams p2 = p;
      p2.out = again.get();
      for (int run = 0; run < 8; ++run) {
        ASSERT_EQ(LaunchAttention(p2, tile, 0), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        ASSERT_TRUE(again.Get(first.size()) == first) << "run " << run << " differs";
      }
      const std::vector<unsigned> left = tickets.Get(size_t(n) * KV);
      ASSERT_EQ(std::count(left.begin(), left.end(), 0u), std::ptrdiff_t(left.size()))
          << "a cut tile's ticket was not reset";
    }
    ASSERT_EQ(LaunchRingWrite(p, 0), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto q = FromBf16(dq.Get(size_t(n) * H * hd));
    const auto k = FromBf16(dk.Get(size_t(n) * KV * hd));
    const auto v = FromBf16(dv.Get(size_t(n) * KV * hd));
    const auto out = FromBf16(dout.Get(size_t(n) * H * hd));
    const auto pool_after = d_pool.Get(pool.size());

    // A decode step with the ring written inside the attention launch (by the split combine, and
    // at one split by the attention kernel): the same ring and, at the same splits, the same
    // output bits as the separate ring write.
    if (mode == 4) {
      for (const int ring_splits : {splits, 1}) {
        Dev<char> d_pool2(pool);
        Dev<bf16_t> dout2(size_t(n) * H * hd);
        AttentionParams p2 = p;
        p2.state = {d_pool2.get(), slot_stride};
        p2.out = dout2.get();
        p2.splits = ring_splits;
        p2.decode_writes_ring = true;
        ASSERT_EQ(LaunchAttention(p2, tile, 0), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        ASSERT_EQ(d_pool2.Get(pool.size()), pool_after)
            << ring_splits << " splits: the ring written in the attention launch differs";
        const auto out2 = FromBf16(dout2.Get(size_t(n) * H * hd));
        for (size_t i = 0; i < out2.size(); ++i) {
          if (ring_splits == splits) {
            ASSERT_EQ(out2[i], out[i]) << "the ring write changed the output at " << i;
          } else {  // one split sums in another order: bf16 rounding apart
            ASSERT_NEAR(out2[i], out[i], 0.01f * std::abs(out[i]) + 0.01f) << "1 split, " << i;
          }
        }
      }
    }

    // RoPE against the CPU reference (then rounded to bf16).
    for (int t = 0; t < n; ++t) {
      const int e = lay.tok_entry[t];
      const int pos = lay.entries[e].pos0 + t - lay.entries[e].start;
      std::vector<float> row(qkv.begin() + size_t(t) * (H + 2 * KV) * hd,
                             qkv.begin() + size_t(t + 1) * (H + 2 * KV) * hd);
      ref::ApplyRope(absl::MakeSpan(row).subspan(0, size_t(H + KV) * hd), H + KV, hd, rotary,
                     10000.0f, pos);
      const float* in = qkv.data() + size_t(t) * (H + 2 * KV) * hd;
      for (int i = 0; i < H * hd; ++i) {
        ASSERT_NEAR(q[size_t(t) * H * hd + i], row[i],
                    RopeTolerance(in + (i / hd) * hd, i % hd, rotary, pos, row[i]))
            << "RoPE, token " << t << " element " << i;
      }
    }
    // Attention in float64 on the same bf16 q/k/v and ring.
    for (int t = 0; t < n; ++t) {
      const int e = lay.tok_entry[t];
      const int start = lay.entries[e].start, pos0 = lay.entries[e].pos0;
      const int qp = pos0 + t - start;
      for (int h = 0; h < H; ++h) {
        const int g = h / G;
        std::vector<double> s;
        std::vector<const float*> vrows;
        std::vector<float> ring_rows;
        for (int kp = std::max(0, qp - W); kp <= qp; ++kp) {
          const float *kr, *vr;
          if (kp >= pos0) {
            kr = &k[(size_t(start + kp - pos0) * KV + g) * hd];
            vr = &v[(size_t(start + kp - pos0) * KV + g) * hd];
          } else {
            const size_t base = size_t(e) * 2 * W * KV * hd;
            kr = &ring_vals[base + (size_t(kp % W) * KV + g) * hd];
            vr = &ring_vals[base + size_t(W) * KV * hd + (size_t(kp % W) * KV + g) * hd];
          }
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += double(q[(size_t(t) * H + h) * hd + d]) * kr[d];
          s.push_back(dot / std::sqrt(double(hd)));
          vrows.push_back(vr);
        }
        double mx = -1e300, sum = 0, vmax = 0;
        for (const float* vr : vrows)
          for (int d = 0; d < hd; ++d) vmax = std::max(vmax, double(std::abs(vr[d])));
        for (double x : s) mx = std::max(mx, x);
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int d = 0; d < hd; ++d) {
          double o = 0;
          for (size_t j = 0; j < s.size(); ++j) o += s[j] / sum * vrows[j][d];
          // bf16 output rounding, plus P rounded to half on the tensor-core path (2^-11 each,
          // weights summing to 1: at most 2^-11 max|v| per output), doubled; cuDNN rounds P to
          // bf16 (2^-9 each: 2^-8 max|v| doubled).
          ASSERT_NEAR(out[(size_t(t) * H + h) * hd + d], o,
                      std::abs(o) * 0.0045 + 2e-4 + vmax * (mode == 5 ? 4e-3 : 1e-3))
              << "mode " << mode << " token " << t << " head " << h << " d " << d;
        }
      }
    }
    // Ring: the last min(len, W) keys of each entry at pos mod W; other rows unchanged.
    for (size_t e = 0; e < es.size(); ++e) {
      for (int k2 = std::max(0, es[e].len - W); k2 < es[e].len; ++k2) {
        const int pos = es[e].pos0 + k2;
        std::vector<bf16_t> got(KV * hd);
        std::memcpy(got.data(), pool_after.data() + e * slot_stride + size_t(pos % W) * KV * hd * 2,
                    got.size() * 2);
        const int t = lay.entries[e].start + k2;
        for (int i = 0; i < KV * hd; ++i)
          ASSERT_EQ(HostFromBf16(got[i]), k[size_t(t) * KV * hd + i]);
      }
    }
  }
}

// RoPE reading an FP8 GEMM's unscaled q|k|v with its scales: q, k and v must equal, bit for bit,
// those of the separate scaling pass followed by plain RoPE, and match ref::ApplyRope. A long pass
// (a block per token) or a short one (a block per token and head).
void RopeScaledInputCase(int H, int KV, int hd, bool with_rows, bool long_pass) {
  const int rotary = hd / 2, width = (H + 2 * KV) * hd;
  HostLayout lay;
  lay.Add(3, 0, 0);
  lay.Add(1, 1, 700);
  if (long_pass) lay.Add(kRopeTokensForBlockPerToken, 2, 5000);
  const int n = lay.n;
  auto qkv = Random(size_t(n) * width);
  ScalesOnDevice scales(n, width, with_rows);
  std::vector<float> raw = qkv;
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < width; ++c) {
      float& v = raw[size_t(t) * width + c];
      v = scales.Unscale(v, t, c);
      qkv[size_t(t) * width + c] = scales.Apply(v, t, c);
    }
  }
  Dev<float> d_qkv(raw);
  Dev<int32_t> d_te(lay.tok_entry);
  Dev<StepEntryRecord> d_en(lay.entries);
  auto run = [&](InputScales sc, std::vector<bf16_t>* q, std::vector<bf16_t>* k,
                 std::vector<bf16_t>* v, bool vector_rope = true) {
    Dev<bf16_t> dq(size_t(n) * H * hd), dk(size_t(n) * KV * hd), dv(size_t(n) * KV * hd);
    AttentionParams p;
    p.qkv = d_qkv.get();
    p.qkv_scales = sc;
    p.q = dq.get();
    p.k = dk.get();
    p.v = dv.get();
    p.layout = {d_te.get(), d_en.get()};
    p.n = n;
    p.H = H;
    p.KV = KV;
    p.hd = hd;
    p.rotary = rotary;
    p.theta = 10000.0f;
    p.vector_rope = vector_rope;
    ASSERT_EQ(LaunchRope(p, 0), cudaSuccess);
    *q = dq.Get(size_t(n) * H * hd);
    *k = dk.Get(size_t(n) * KV * hd);
    *v = dv.Get(size_t(n) * KV * hd);
  };
  std::vector<bf16_t> q, k, v, q2, k2, v2;
  run(scales.get(), &q, &k, &v);
  for (int t = 0; t < n; ++t) {
    const int e = lay.tok_entry[t];
    const int pos = lay.entries[e].pos0 + t - lay.entries[e].start;
    std::vector<float> row(qkv.begin() + size_t(t) * width, qkv.begin() + size_t(t + 1) * width);
    ref::ApplyRope(absl::MakeSpan(row).subspan(0, size_t(H + KV) * hd), H + KV, hd, rotary,
                   10000.0f, pos);
    const auto qf = FromBf16(q), kf = FromBf16(k), vf = FromBf16(v);
    const float* in = qkv.data() + size_t(t) * width;
    for (int i = 0; i < H * hd; ++i) {
      ASSERT_NEAR(qf[size_t(t) * H * hd + i], row[i],
                  RopeTolerance(in + (i / hd) * hd, i % hd, rotary, pos, row[i]))
          << i;
    }
    for (int i = 0; i < KV * hd; ++i) {
      const float kr = row[size_t(H) * hd + i], vr = row[size_t(H + KV) * hd + i];
      ASSERT_NEAR(kf[size_t(t) * KV * hd + i], kr,
                  RopeTolerance(in + (H + i / hd) * hd, i % hd, rotary, pos, kr))
          << i;
      ASSERT_NEAR(vf[size_t(t) * KV * hd + i], vr, std::abs(vr) * 0.0040f + 1e-5f) << i;
    }
  }
  ASSERT_EQ(
      LaunchScaleRowsAndColumns(d_qkv.get(), scales.get().rows, scales.get().cols, n, width, 0),
      cudaSuccess);
  run(InputScales{}, &q2, &k2, &v2);
  ASSERT_EQ(q2, q) << "q: scales on reading differ from the pass";
  ASSERT_EQ(k2, k) << "k: scales on reading differ from the pass";
  ASSERT_EQ(v2, v) << "v: scales on reading differ from the pass";
  std::vector<bf16_t> q3, k3, v3;  // one element a thread (AttentionParams::vector_rope = false)
  run(InputScales{}, &q3, &k3, &v3, /*vector_rope=*/false);
  ASSERT_EQ(q3, q2) << "q: one element a thread differs from four";
  ASSERT_EQ(k3, k2) << "k: one element a thread differs from four";
  ASSERT_EQ(v3, v2) << "v: one element a thread differs from four";
}

std::vector<OpCase> MakeAttentionCases() {
  std::vector<OpCase> cases;
  struct Size {
    int H, KV, hd, W;
    bool heavy;
  };
  // The W=300 shapes give prefill tiles many key tiles, from the ring and from the run, with the
  // window's lower edge inside a tile; G = 16 fills the tensor-core kernel's 128 rows with 8
  // tokens, G = 10 leaves 8 padding rows.
  for (const Size s :
       {Size{4, 1, 16, 8, false}, Size{4, 2, 32, 5, false}, Size{10, 1, 256, 64, false},
        Size{3, 3, 20, 33, false}, Size{1, 1, 4, 1, false}, Size{4, 1, 72, 9, false},
        Size{10, 1, 256, 300, false}, Size{16, 1, 256, 300, true}, Size{8, 2, 64, 300, false}}) {
    // The head sizes the tensor-core kernel is compiled for (attention_mma.cu).
    const bool mma = s.hd >= 16 && s.hd <= 256 && (s.hd & (s.hd - 1)) == 0;
    for (int mode : {0, 1, 2, 3, 4, 5, 6}) {
      if ((mode == 2 || mode == 5) && !mma) continue;
      const char* path =
          mode == 0   ? (mma ? "attention.prefill_mma" : "attention.prefill_scalar")
          : mode == 2 ? "attention.prefill_mma_half_tile"
          : mode == 3 ? (mma ? "attention.prefill_mma_split" : "attention.prefill_scalar_split")
          : mode == 6
              ? (mma ? "attention.prefill_mma_cut_tiles" : "attention.prefill_scalar_cut_tiles")
          : mode == 4 ? (mma ? "attention.decode_step_mma" : "attention.decode_step_scalar")
          : mode == 5 ? "attention.prefill_cudnn"
                      : (mma ? "attention.decode_mma" : "attention.decode_scalar");
      cases.push_back({path, absl::StrCat("H", s.H, " KV", s.KV, " hd", s.hd, " W", s.W),
                       "float64 softmax on the same bf16 q/k/v; ref::ApplyRope; ring rows bitwise",
                       mode == 5 ? "bf16 output 2^-8 + 2^-9 max|v| (bf16 P), doubled"
                                 : "bf16 output 2^-8 + 2^-11 max|v| (half P on the tensor cores), "
                                   "doubled",
                       s.heavy, [s, mode] { AttentionCase(s.H, s.KV, s.hd, s.W, mode); }});
    }
  }
  for (bool long_pass : {false, true}) {
    for (bool with_rows : {true, false}) {
      cases.push_back(
          {"rope.scaled_input",
           absl::StrCat("H10 KV1 hd256", with_rows ? "" : " cols only",
                        long_pass ? " block per token" : ""),
           "ref::ApplyRope on the scaled q|k|v; the scaling pass + plain RoPE",
           "bf16 rounding 2^-8; bit-identical to the pass", false,
           [with_rows, long_pass] { RopeScaledInputCase(10, 1, 256, with_rows, long_pass); }});
    }
  }
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeAttentionCases);

}  // namespace
}  // namespace griffin::kernels::testing
