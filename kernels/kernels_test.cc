// Kernel parity: every kernel against the float32 CPU reference (engine/cpu_ops) or a float64
// scalar loop, on fresh random inputs, with outputs poisoned (NaN bit patterns) before each run and
// sizes {1, odd, tile-1, tile+1, large}. Tolerance (STYLE.md rule 16): the bf16 output rounding
// (relative 2^-8) plus float32 arithmetic over the reduction length, stated per test.
// Without a CUDA device every test skips with "no CUDA device: GPU test skipped".
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cpu_ops.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "kernels/attention.cuh"
#include "kernels/geglu.cuh"
#include "kernels/gemm.h"
#include "kernels/gemv.cuh"
#include "kernels/logits.cuh"
#include "kernels/rglru.cuh"
#include "kernels/rmsnorm.cuh"

namespace griffin::kernels {
namespace {

bool HaveDevice() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
#define SKIP_WITHOUT_GPU() \
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device: GPU test skipped"

template <typename T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(std::max<size_t>(n, 1)) {
    EXPECT_EQ(cudaMalloc(&p_, n_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p_, 0xff, n_ * sizeof(T)), cudaSuccess);  // poison: NaN patterns
  }
  Dev(const std::vector<T>& h) : Dev(h.size()) { Put(h); }
  ~Dev() { cudaFree(p_); }
  void Put(const std::vector<T>& h) {
    ASSERT_EQ(cudaMemcpy(p_, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> Get(size_t n) const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  T* get() { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t n_;
};

std::mt19937& Rng() {
  static std::mt19937 rng(std::random_device{}());
  return rng;
}
std::vector<float> Random(size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(Rng());
  return v;
}
std::vector<bf16_t> ToBf16(const std::vector<float>& v) {
  std::vector<bf16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = HostToBf16(v[i]);
  return o;
}
std::vector<float> FromBf16(const std::vector<bf16_t>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = HostFromBf16(v[i]);
  return o;
}
std::vector<float> RoundBf16(const std::vector<float>& v) { return FromBf16(ToBf16(v)); }
float RoundHalf(float v) { return __half2float(__float2half_rn(v)); }

TEST(KernelsTest, AddRmsNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int d : {1, 7, 255, 257, 2560}) {
    for (int rows : {1, 3, 33}) {
      auto x = Random(size_t(rows) * d), delta = Random(size_t(rows) * d);
      auto bias = Random(d, 0.1f), w = Random(d, 0.2f);
      Dev<float> dx(x), dd(delta), db(bias), dw(w);
      Dev<bf16_t> out(size_t(rows) * d);
      ASSERT_EQ(LaunchAddRmsNorm(dx.get(), dd.get(), db.get(), dw.get(), nullptr, rows, d, 1e-6f,
                                 out.get(), 0), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<float> sum(x.size()), ref(x.size());
      for (size_t i = 0; i < x.size(); ++i) sum[i] = x[i] + (delta[i] + bias[i % d]);
      engine::cpu::RmsNorm(sum, w, 1e-6f, rows, absl::MakeSpan(ref));
      const auto got_x = dx.Get(x.size());
      const auto got = FromBf16(out.Get(x.size()));
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_EQ(got_x[i], sum[i]) << "d=" << d << " i=" << i;
        ASSERT_NEAR(got[i], ref[i], std::abs(ref[i]) * 0.0040f + 1e-5f * std::sqrt(float(d)))
            << "d=" << d << " rows=" << rows << " i=" << i;
      }
    }
  }
}

TEST(KernelsTest, GeGluMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int m : {1, 31, 255, 257, 7680}) {
    for (int n : {1, 5}) {
      auto gu = Random(size_t(n) * 2 * m, 2.0f), bg = Random(m, 0.1f), bu = Random(m, 0.1f);
      Dev<float> dgu(gu), dbg(bg), dbu(bu);
      Dev<bf16_t> out(size_t(n) * m);
      ASSERT_EQ(LaunchGeGlu(dgu.get(), dbg.get(), dbu.get(), n, m, out.get(), 0), cudaSuccess);
      const auto got = FromBf16(out.Get(size_t(n) * m));
      for (int t = 0; t < n; ++t) {
        for (int i = 0; i < m; ++i) {
          const float ref = engine::cpu::GeluTanh(gu[size_t(t) * 2 * m + i] + bg[i]) *
                            (gu[size_t(t) * 2 * m + m + i] + bu[i]);
          ASSERT_NEAR(got[size_t(t) * m + i], ref, std::abs(ref) * 0.0040f + 1e-6f) << m;
        }
      }
    }
  }
}

TEST(KernelsTest, GemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Gemm gemm;
  ASSERT_EQ(gemm.Init(32 << 20), "");
  for (int M : {1, 7, 63, 65, 300}) {
    for (int N : {1, 48, 255, 257}) {
      for (int K : {16, 63, 2560}) {
        auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
        Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
        Dev<float> out(size_t(M) * N);
        ASSERT_EQ(gemm.Run(da.get(), dw.get(), out.get(), M, N, K, 0), "");
        const auto got = out.Get(size_t(M) * N);
        for (int i = 0; i < M; ++i) {
          for (int o = 0; o < N; ++o) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
              ref += double(a[size_t(i) * K + k]) * w[size_t(o) * K + k];
              mag += std::abs(double(a[size_t(i) * K + k]) * w[size_t(o) * K + k]);
            }
            // float32 accumulation: K * 2^-24 * sum |a w| is the naive-sum bound.
            ASSERT_NEAR(got[size_t(i) * N + o], ref, 1e-7 * K * mag / 8 + 1e-6 * mag + 1e-6)
                << M << "x" << N << "x" << K;
          }
        }
      }
    }
  }
}

TEST(KernelsTest, GemvMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int M = 1; M <= kGemvMaxM; ++M) {
    for (int N : {1, 7, 300}) {
      for (int K : {8, 248, 264, 2560, 7680}) {
        auto a = RoundBf16(Random(size_t(M) * K)), w = RoundBf16(Random(size_t(N) * K));
        Dev<bf16_t> da(ToBf16(a)), dw(ToBf16(w));
        Dev<float> out(size_t(M) * N);
        ASSERT_EQ(LaunchGemv(da.get(), dw.get(), out.get(), M, N, K, 0), cudaSuccess);
        const auto got = out.Get(size_t(M) * N);
        for (int i = 0; i < M; ++i) {
          for (int o = 0; o < N; ++o) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
              ref += double(a[size_t(i) * K + k]) * w[size_t(o) * K + k];
              mag += std::abs(double(a[size_t(i) * K + k]) * w[size_t(o) * K + k]);
            }
            ASSERT_NEAR(got[size_t(i) * N + o], ref, 1e-7 * K * mag / 8 + 1e-6 * mag + 1e-6)
                << M << "x" << N << "x" << K;
          }
        }
      }
    }
  }
}

// One step's token layout on the host.
struct Layout {
  std::vector<int32_t> tok_entry, entries;  // entries: start, len, slot, pos0
  int n = 0;
  void Add(int len, int slot, int pos0) {
    entries.insert(entries.end(), {n, len, slot, pos0});
    for (int k = 0; k < len; ++k) tok_entry.push_back(int(entries.size() / 4) - 1);
    n += len;
  }
};

struct RgLruCase {
  int L, H, K;
};

class RgLruTest : public ::testing::TestWithParam<RgLruCase> {};

TEST_P(RgLruTest, PrefillMatchesCpuDecodeMatchesPrefillChunkedMatchesWhole) {
  SKIP_WITHOUT_GPU();
  const auto [L, H, K] = GetParam();
  const int B = L / H;
  ASSERT_STREQ(CanImplementRgLru(L, H, K), "");
  // Weights (bf16-exact where the kernel stores bf16).
  auto conv_w = Random(size_t(L) * K, 0.5f), conv_b = Random(L, 0.1f);
  auto gx_w = RoundBf16(Random(size_t(H) * B * B, 1.0f / std::sqrt(float(B))));
  auto ga_w = RoundBf16(Random(size_t(H) * B * B, 1.0f / std::sqrt(float(B))));
  auto gx_b = Random(L, 0.1f), ga_b = Random(L, 0.1f), a_param = Random(L, 0.5f, -4.0f);
  auto bx = Random(L, 0.1f), by = Random(L, 0.1f);
  Dev<float> d_conv_w(conv_w), d_conv_b(conv_b), d_gx_b(gx_b), d_ga_b(ga_b), d_ap(a_param),
      d_bx(bx), d_by(by);
  Dev<bf16_t> d_gx_w(ToBf16(gx_w)), d_ga_w(ToBf16(ga_w));

  // Three slots: a fresh sequence (pos 0, 1 token... odd), a continuing one, a long one.
  Layout lay;
  const int lens[] = {1, 5, 37};
  const int pos0[] = {0, 9, 130};
  for (int e = 0; e < 3; ++e) lay.Add(lens[e], e, pos0[e]);
  const int n = lay.n, slots = 3;
  const int64_t slot_stride = (int64_t{L} * 4 + int64_t{K - 1} * L * 2 + 255) / 256 * 256;
  // Random state (zero for the pos-0 slot, as Step's reset leaves it).
  std::vector<float> h0 = Random(size_t(slots) * L);
  std::vector<float> tail0 = RoundBf16(Random(size_t(slots) * (K - 1) * L));
  for (int i = 0; i < L; ++i) h0[i] = 0;
  for (int i = 0; i < (K - 1) * L; ++i) tail0[i] = 0;
  std::vector<char> pool_host(size_t(slots) * slot_stride);
  for (int s = 0; s < slots; ++s) {
    std::memcpy(pool_host.data() + s * slot_stride, h0.data() + size_t(s) * L, size_t(L) * 4);
    auto tb = ToBf16(std::vector<float>(tail0.begin() + size_t(s) * (K - 1) * L,
                                        tail0.begin() + size_t(s + 1) * (K - 1) * L));
    std::memcpy(pool_host.data() + s * slot_stride + L * 4, tb.data(), tb.size() * 2);
  }
  auto xy = Random(size_t(n) * 2 * L);

  Dev<uint16_t> d_packed(size_t(2) * H * B * B);
  ASSERT_EQ(LaunchPackGateWeights(d_gx_w.get(), d_ga_w.get(), H, B, d_packed.get(), 0), cudaSuccess);
  Gemm gemm;
  ASSERT_EQ(gemm.Init(16 << 20), "");
  auto run = [&](bool decode, const Layout& l, const std::vector<float>& xy_in,
                 std::vector<char>& pool_io, std::vector<float>& out) {
    Dev<float> d_xy(xy_in), d_c(size_t(l.n) * L), d_gates(size_t(l.n) * 2 * L);
    Dev<uint16_t> d_cb(size_t(l.n) * L);
    Dev<int32_t> d_te(l.tok_entry), d_en(l.entries);
    Dev<char> d_pool(pool_io);
    Dev<bf16_t> d_out(size_t(l.n) * L);
    RgLruParams p;
    p.xy = d_xy.get(); p.bx = d_bx.get(); p.by = d_by.get();
    p.conv_w = d_conv_w.get(); p.conv_b = d_conv_b.get();
    p.gx_w = d_gx_w.get(); p.gx_b = d_gx_b.get(); p.ga_w = d_ga_w.get(); p.ga_b = d_ga_b.get();
    p.a_param = d_ap.get();
    p.layout = {d_te.get(), d_en.get()};
    p.state = {d_pool.get(), slot_stride};
    p.lru_offset = 0;
    p.conv_offset = int64_t{L} * 4;
    p.n = l.n; p.num_entries = int(l.entries.size() / 4); p.L = L; p.H = H; p.K = K;
    p.out = d_out.get();
    p.c = d_c.get(); p.c_half = d_cb.get(); p.gates = d_gates.get();
    if (decode) {
      ASSERT_EQ(LaunchRgLruDecode(p, 0), cudaSuccess);
    } else {
      ASSERT_EQ(LaunchRgLruConv(p, 0), cudaSuccess);
      ASSERT_EQ(gemm.RunBatched(d_cb.get(), L, B, d_packed.get(), int64_t{2} * B * B,
                                d_gates.get(), 2 * L, 2 * B, l.n, 2 * B, B, H, true, 0), "");
      ASSERT_EQ(LaunchRgLruGateMath(p, 0), cudaSuccess);
      ASSERT_EQ(LaunchRgLruScan(p, 0), cudaSuccess);
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    out = FromBf16(d_out.Get(size_t(l.n) * L));
    pool_io = d_pool.Get(pool_io.size());
  };

  std::vector<char> pool_prefill = pool_host;
  std::vector<float> out;
  run(false, lay, xy, pool_prefill, out);

  // CPU reference per entry, on the same bf16-rounded conv inputs.
  for (int e = 0; e < 3; ++e) {
    const int start = lay.entries[4 * e], len = lens[e];
    std::vector<float> xin(size_t(len) * L), conv(size_t(len) * L), lru(size_t(len) * L);
    for (int t = 0; t < len; ++t) {
      for (int ch = 0; ch < L; ++ch) {
        xin[size_t(t) * L + ch] = HostFromBf16(HostToBf16(xy[size_t(start + t) * 2 * L + ch] + bx[ch]));
      }
    }
    std::vector<float> tail(tail0.begin() + size_t(e) * (K - 1) * L,
                            tail0.begin() + size_t(e + 1) * (K - 1) * L);
    std::vector<float> h(h0.begin() + size_t(e) * L, h0.begin() + size_t(e + 1) * L);
    engine::cpu::Conv1dCausal(xin, conv_w, conv_b, len, L, K, absl::MakeSpan(tail),
                              absl::MakeSpan(conv));
    // cpu::RgLru with the gates fed half(c), as both GPU paths do.
    for (int t = 0; t < len; ++t) {
      const float* ct = &conv[size_t(t) * L];
      for (int hh = 0; hh < H; ++hh) {
        for (int j = 0; j < B; ++j) {
          double sx = 0, sa = 0;
          for (int i = 0; i < B; ++i) {
            const float ci = RoundHalf(ct[hh * B + i]);
            sx += double(ci) * gx_w[(size_t(hh) * B + i) * B + j];
            sa += double(ci) * ga_w[(size_t(hh) * B + i) * B + j];
          }
          const int ch = hh * B + j;
          const float gate_x = 1.0f / (1.0f + std::exp(-(float(sx) + gx_b[ch])));
          const float gate_a = 1.0f / (1.0f + std::exp(-(float(sa) + ga_b[ch])));
          const float log_a = -8.0f * gate_a * engine::cpu::Softplus(a_param[ch]);
          const float a = std::exp(log_a), a_sq = std::exp(2.0f * log_a);
          const bool reset = pos0[e] + t == 0;
          const float xn = reset ? ct[ch] * gate_x : ct[ch] * gate_x * std::sqrt(1.0f - a_sq);
          h[ch] = (reset ? 0.0f : a * h[ch]) + xn;
          lru[size_t(t) * L + ch] = h[ch];
        }
      }
    }
    for (int t = 0; t < len; ++t) {
      for (int ch = 0; ch < L; ++ch) {
        const float ref = lru[size_t(t) * L + ch] *
                          engine::cpu::GeluTanh(xy[size_t(start + t) * 2 * L + L + ch] + by[ch]);
        ASSERT_NEAR(out[size_t(start + t) * L + ch], ref, std::abs(ref) * 0.0045f + 2e-5f)
            << "L=" << L << " entry " << e << " t=" << t << " ch=" << ch;
      }
    }
    std::vector<float> got_h(L);
    std::memcpy(got_h.data(), pool_prefill.data() + e * slot_stride, size_t(L) * 4);
    for (int ch = 0; ch < L; ++ch) ASSERT_NEAR(got_h[ch], h[ch], 1e-4f * (1 + std::abs(h[ch])));
    std::vector<bf16_t> got_tail((K - 1) * L);
    std::memcpy(got_tail.data(), pool_prefill.data() + e * slot_stride + L * 4, got_tail.size() * 2);
    for (int i = 0; i < (K - 1) * L; ++i) ASSERT_EQ(HostFromBf16(got_tail[i]), tail[i]) << i;
  }

  // Decode kernel == prefill path, one token per slot: equal up to the gate sums' order (bf16
  // output rounding), tails bitwise.
  Layout one;
  for (int e = 0; e < 3; ++e) one.Add(1, e, pos0[e]);
  auto xy1 = Random(size_t(3) * 2 * L);
  std::vector<char> pa = pool_host, pb = pool_host;
  std::vector<float> oa, ob;
  run(false, one, xy1, pa, oa);
  run(true, one, xy1, pb, ob);
  ASSERT_EQ(oa.size(), ob.size());
  for (size_t i = 0; i < oa.size(); ++i) ASSERT_NEAR(oa[i], ob[i], std::abs(oa[i]) * 0.008f + 1e-5f) << i;
  for (int e = 0; e < 3; ++e) {
    const size_t tail_at = e * slot_stride + size_t(L) * 4;
    ASSERT_EQ(0, std::memcmp(pa.data() + tail_at, pb.data() + tail_at, size_t(K - 1) * L * 2));
    std::vector<float> ha(L), hb(L);
    std::memcpy(ha.data(), pa.data() + e * slot_stride, size_t(L) * 4);
    std::memcpy(hb.data(), pb.data() + e * slot_stride, size_t(L) * 4);
    for (int ch = 0; ch < L; ++ch) ASSERT_NEAR(ha[ch], hb[ch], 1e-4f * (1 + std::abs(ha[ch])));
  }

  // Chunked scan == whole scan (entry 2 cut in two runs), outputs and final state.
  Layout whole, first, second;
  whole.Add(37, 0, 0);
  first.Add(20, 0, 0);
  second.Add(17, 0, 20);
  auto xyw = Random(size_t(37) * 2 * L);
  std::vector<float> xy_first(xyw.begin(), xyw.begin() + size_t(20) * 2 * L);
  std::vector<float> xy_second(xyw.begin() + size_t(20) * 2 * L, xyw.end());
  std::vector<char> pw(pool_host.begin(), pool_host.begin() + slot_stride), pc = pw;
  std::vector<float> ow, o1, o2;
  run(false, whole, xyw, pw, ow);
  run(false, first, xy_first, pc, o1);
  run(false, second, xy_second, pc, o2);
  o1.insert(o1.end(), o2.begin(), o2.end());
  ASSERT_EQ(ow.size(), o1.size());
  for (size_t i = 0; i < ow.size(); ++i) ASSERT_NEAR(ow[i], o1[i], std::abs(ow[i]) * 0.008f + 1e-5f) << i;
  ASSERT_EQ(0, std::memcmp(pw.data() + size_t(L) * 4, pc.data() + size_t(L) * 4, size_t(K - 1) * L * 2));
}

INSTANTIATE_TEST_SUITE_P(Sizes, RgLruTest,
                         ::testing::Values(RgLruCase{64, 4, 4}, RgLruCase{48, 3, 4},
                                           RgLruCase{33 * 3, 3, 4}, RgLruCase{2560, 10, 4},
                                           RgLruCase{24, 1, 2}));

struct AttnCase {
  int H, KV, hd, W;
};
class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, MatchesFloat64Reference) {
  SKIP_WITHOUT_GPU();
  ASSERT_EQ(PrepareAttentionKernels(), cudaSuccess);
  const auto [H, KV, hd, W] = GetParam();
  const int rotary = hd / 2;
  ASSERT_STREQ(CanImplementAttention(H, KV, hd, rotary), "");
  const int G = H / KV;
  // Entries: fresh prefill, continuing prefill crossing the ring boundary, decode tokens at
  // positions below and beyond the window.
  Layout lay;
  struct E { int len, pos0; };
  const std::vector<E> es = {{7, 0}, {W + 3, 2 * W + 1}, {1, 3}, {1, 3 * W + 2}, {1, W}};
  for (size_t e = 0; e < es.size(); ++e) lay.Add(es[e].len, int(e), es[e].pos0);
  const int n = lay.n, slots = int(es.size());
  const int64_t ring = int64_t{W} * KV * hd * 2;
  const int64_t slot_stride = 2 * ring;
  auto qkv = Random(size_t(n) * (H + 2 * KV) * hd);
  auto ring_vals = RoundBf16(Random(size_t(slots) * 2 * W * KV * hd));
  std::vector<char> pool(size_t(slots) * slot_stride);
  auto rb = ToBf16(ring_vals);
  std::memcpy(pool.data(), rb.data(), rb.size() * 2);

  for (int mode = 0; mode < 2; ++mode) {  // 0: prefill tiles; 1: decode-style one-token tiles, split
    const int tile = mode == 0 ? AttentionPrefillTileTokens(H, KV, hd) : 1;
    std::vector<int32_t> tiles;
    for (size_t e = 0; e < es.size(); ++e) {
      for (int k = 0; k < es[e].len; k += tile) {
        tiles.push_back(lay.entries[4 * e] + k);
        tiles.push_back(std::min(tile, es[e].len - k));
      }
    }
    const int splits = mode == 0 ? 1 : 3;
    Dev<float> d_qkv(qkv), part_o(size_t(n) * H * splits * hd), part_ml(size_t(n) * H * splits * 2);
    Dev<bf16_t> dq(size_t(n) * H * hd), dk(size_t(n) * KV * hd), dv(size_t(n) * KV * hd),
        dout(size_t(n) * H * hd);
    Dev<int32_t> d_te(lay.tok_entry), d_en(lay.entries), d_tiles(tiles);
    Dev<char> d_pool(pool);
    AttentionParams p;
    p.qkv = d_qkv.get(); p.q = dq.get(); p.k = dk.get(); p.v = dv.get();
    p.layout = {d_te.get(), d_en.get()};
    p.tiles = d_tiles.get();
    p.num_tiles = int(tiles.size() / 2);
    p.state = {d_pool.get(), slot_stride};
    p.k_offset = 0; p.v_offset = ring;
    p.n = n; p.H = H; p.KV = KV; p.hd = hd; p.W = W; p.rotary = rotary;
    p.theta = 10000.0f; p.scale = 1.0f / std::sqrt(float(hd));
    p.splits = splits; p.part_o = part_o.get(); p.part_ml = part_ml.get(); p.out = dout.get();
    ASSERT_EQ(LaunchRope(p, 0), cudaSuccess);
    ASSERT_EQ(LaunchAttention(p, tile, 0), cudaSuccess);
    ASSERT_EQ(LaunchRingWrite(p, 0), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto q = FromBf16(dq.Get(size_t(n) * H * hd));
    const auto k = FromBf16(dk.Get(size_t(n) * KV * hd));
    const auto v = FromBf16(dv.Get(size_t(n) * KV * hd));
    const auto out = FromBf16(dout.Get(size_t(n) * H * hd));
    const auto pool_after = d_pool.Get(pool.size());

    // RoPE against the CPU reference (then rounded to bf16).
    for (int t = 0; t < n; ++t) {
      const int e = lay.tok_entry[t];
      const int pos = lay.entries[4 * e + 3] + t - lay.entries[4 * e];
      std::vector<float> row(qkv.begin() + size_t(t) * (H + 2 * KV) * hd,
                             qkv.begin() + size_t(t + 1) * (H + 2 * KV) * hd);
      engine::cpu::ApplyRope(absl::MakeSpan(row).subspan(0, size_t(H + KV) * hd), H + KV, hd,
                             rotary, 10000.0f, pos);
      for (int i = 0; i < H * hd; ++i) {
        ASSERT_NEAR(q[size_t(t) * H * hd + i], row[i], std::abs(row[i]) * 0.0040f + 1e-5f);
      }
    }
    // Attention in float64 on the same bf16 q/k/v and ring.
    for (int t = 0; t < n; ++t) {
      const int e = lay.tok_entry[t];
      const int start = lay.entries[4 * e], pos0 = lay.entries[4 * e + 3];
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
        for (const float* vr : vrows) for (int d = 0; d < hd; ++d) vmax = std::max(vmax, double(std::abs(vr[d])));
        for (double x : s) mx = std::max(mx, x);
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int d = 0; d < hd; ++d) {
          double o = 0;
          for (size_t j = 0; j < s.size(); ++j) o += s[j] / sum * vrows[j][d];
          // bf16 output rounding, plus P rounded to half on the tensor-core path (2^-11 each,
          // weights summing to 1: at most 2^-11 max|v| per output), doubled.
          ASSERT_NEAR(out[(size_t(t) * H + h) * hd + d], o, std::abs(o) * 0.0045 + 2e-4 + vmax * 1e-3)
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
        const int t = lay.entries[4 * e] + k2;
        for (int i = 0; i < KV * hd; ++i) ASSERT_EQ(HostFromBf16(got[i]), k[size_t(t) * KV * hd + i]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, AttentionTest,
                         ::testing::Values(AttnCase{4, 1, 16, 8}, AttnCase{4, 2, 32, 5},
                                           AttnCase{10, 1, 256, 64}, AttnCase{3, 3, 20, 33},
                                           AttnCase{1, 1, 4, 1}));

TEST(KernelsTest, ArgMaxAndSamplingFlagNonFinite) {
  SKIP_WITHOUT_GPU();
  for (int V : {1, 33, 1023, 1025, 256000}) {
    const int rows = 4;
    auto logits = Random(size_t(rows) * V, 3.0f);
    logits[size_t(1) * V + V / 2] = NAN;                       // row 1: NaN -> -1
    logits[size_t(2) * V + (V - 1)] = 1e30f;                   // row 2: a clear winner
    if (V > 1) logits[size_t(3) * V + 0] = logits[size_t(3) * V + V - 1] = 1e30f;  // tie -> lowest
    Dev<float> d(logits);
    Dev<int32_t> tok(rows), scratch(size_t(rows) * kArgMaxParts * 3);
    ASSERT_EQ(LaunchArgMax(d.get(), rows, V, tok.get(), scratch.get(), 0), cudaSuccess);
    auto got = tok.Get(rows);
    EXPECT_EQ(got[0], engine::ArgMax(absl::MakeConstSpan(logits).subspan(0, V)));
    EXPECT_EQ(got[1], -1);
    EXPECT_EQ(got[2], V - 1);
    EXPECT_EQ(got[3], 0);

    // Sampling: top_k = 1 and min_p = 1 are the argmax; greedy is the argmax; NaN row flagged.
    std::vector<SampleRowParams> sp(rows);
    for (int r = 0; r < rows; ++r) {
      sp[r] = SampleRowParams{1.0f, r == 0 ? 1 : -1, 1.0f, r == 2 ? 1.0f : 0.0f, 1.0f, 7, 0,
                              uint32_t(r), 0, 0, 0};
    }
    sp[3].temperature = 0.0f;
    std::vector<char> raw(sizeof(SampleRowParams) * rows);
    std::memcpy(raw.data(), sp.data(), raw.size());
    Dev<char> dsp(raw);
    Dev<int32_t> ctx(1);
    Dev<float> d2(logits);
    ASSERT_EQ(LaunchSample(d2.get(), rows, V, reinterpret_cast<SampleRowParams*>(dsp.get()),
                           ctx.get(), tok.get(), 0), cudaSuccess);
    got = tok.Get(rows);
    EXPECT_EQ(got[0], engine::ArgMax(absl::MakeConstSpan(logits).subspan(0, V))) << V;
    EXPECT_EQ(got[1], -1);
    EXPECT_EQ(got[2], V - 1);
    EXPECT_EQ(got[3], 0);
  }
}

// Top-k, top-p and min-p keep exactly the set a sort gives (vLLM's order, as engine/sampler.cc), on
// 256k-wide rows (the float4 path) and an odd width (the scalar path): every draw lies in the set,
// the most likely kept token is drawn at its renormalised probability, and draws repeat per seed.
TEST(KernelsTest, SamplingKeepsTheSortedFilterSet) {
  SKIP_WITHOUT_GPU();
  struct Case { int V; float temperature; int top_k; float top_p; float min_p; };
  const Case cases[] = {{256000, 0.8f, 50, 1.0f, 0.0f}, {256000, 1.0f, -1, 0.9f, 0.0f},
                        {256000, 0.7f, 100, 0.8f, 0.05f}, {4099, 1.2f, 40, 0.95f, 0.02f},
                        {4099, 1.0f, -1, 1.0f, 0.1f}};
  std::mt19937 rng(42);
  for (const Case& c : cases) {
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> row(c.V);
    for (float& v : row) v = normal(rng);
    // Reference set: sort by logit, cut at k (ties kept), softmax at the temperature, smallest
    // prefix reaching top_p, then p >= min_p * p_max.
    std::vector<int> order(c.V);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
    int n = c.V;
    if (c.top_k > 0 && c.top_k < c.V) {
      n = c.top_k;
      while (n < c.V && row[order[n]] == row[order[c.top_k - 1]]) ++n;
    }
    std::vector<double> p(n);
    double z = 0;
    for (int i = 0; i < n; ++i) z += p[i] = std::exp((double(row[order[i]]) - row[order[0]]) / c.temperature);
    int keep = n;
    if (c.top_p < 1.0f) {
      double cum = 0;
      for (keep = 0; keep < n && cum < c.top_p * z;) cum += p[keep++];
    }
    std::set<int> kept;
    double kept_z = 0;
    for (int i = 0; i < keep; ++i) {
      if (p[i] >= c.min_p * p[0]) {
        kept.insert(order[i]);
        kept_z += p[i];
      }
    }
    const int rows = 1000;
    std::vector<float> logits(size_t(rows) * c.V);
    for (int r = 0; r < rows; ++r) std::copy(row.begin(), row.end(), logits.begin() + size_t(r) * c.V);
    std::vector<SampleRowParams> sp(rows);
    for (int r = 0; r < rows; ++r) {
      sp[r] = SampleRowParams{c.temperature, c.top_k, c.top_p, c.min_p, 1.0f, 99, 0, uint32_t(r), 0, 0, 0};
    }
    std::vector<char> raw(sizeof(SampleRowParams) * rows);
    std::memcpy(raw.data(), sp.data(), raw.size());
    Dev<char> dsp(raw);
    Dev<int32_t> ctx(1), tok(rows);
    std::vector<int32_t> first;
    for (int repeat = 0; repeat < 2; ++repeat) {
      Dev<float> d(logits);
      ASSERT_EQ(LaunchSample(d.get(), rows, c.V, reinterpret_cast<SampleRowParams*>(dsp.get()),
                             ctx.get(), tok.get(), 0), cudaSuccess);
      auto got = tok.Get(rows);
      if (repeat == 0) {
        first = got;
        continue;
      }
      EXPECT_EQ(got, first) << "same seed and step, different draw (V=" << c.V << ")";
    }
    int top_hits = 0;
    for (int t : first) {
      EXPECT_TRUE(kept.count(t)) << "token " << t << " outside the kept set of " << kept.size()
                                 << " (V=" << c.V << ", top_k " << c.top_k << ", top_p " << c.top_p
                                 << ", min_p " << c.min_p << ")";
      top_hits += t == order[0];
    }
    EXPECT_NEAR(top_hits / double(rows), p[0] / kept_z, 0.05)
        << "V=" << c.V << " kept " << kept.size();
  }
}

TEST(KernelsTest, SamplingFollowsTheDistribution) {
  SKIP_WITHOUT_GPU();
  // Three tokens with probabilities 0.5, 0.3, 0.2 (plus -inf elsewhere); 4000 draws.
  const int V = 100, rows = 4000;
  std::vector<float> logits(size_t(rows) * V, -INFINITY);
  std::vector<SampleRowParams> sp(rows);
  for (int r = 0; r < rows; ++r) {
    logits[size_t(r) * V + 10] = std::log(0.5f);
    logits[size_t(r) * V + 20] = std::log(0.3f);
    logits[size_t(r) * V + 30] = std::log(0.2f);
    sp[r] = SampleRowParams{1.0f, -1, 1.0f, 0.0f, 1.0f, 1234, 0, uint32_t(r), 0, 0, 0};
  }
  std::vector<char> raw(sizeof(SampleRowParams) * rows);
  std::memcpy(raw.data(), sp.data(), raw.size());
  Dev<char> dsp(raw);
  Dev<float> d(logits);
  Dev<int32_t> ctx(1), tok(rows);
  ASSERT_EQ(LaunchSample(d.get(), rows, V, reinterpret_cast<SampleRowParams*>(dsp.get()), ctx.get(),
                         tok.get(), 0), cudaSuccess);
  auto got = tok.Get(rows);
  int c10 = 0, c20 = 0, c30 = 0;
  for (int t : got) {
    c10 += t == 10;
    c20 += t == 20;
    c30 += t == 30;
  }
  EXPECT_EQ(c10 + c20 + c30, rows);
  EXPECT_NEAR(c10 / double(rows), 0.5, 0.04);
  EXPECT_NEAR(c20 / double(rows), 0.3, 0.04);
  EXPECT_NEAR(c30 / double(rows), 0.2, 0.04);
}

}  // namespace
}  // namespace griffin::kernels
