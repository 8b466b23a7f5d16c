// Cases for kernels/logits in the op registry: greedy argmax and the sampler flag non-finite rows
// and agree with ref::ArgMax; top-k / top-p / min-p keep exactly the set a sort gives (vLLM's
// order, as engine/sampler.cc); draws follow the distribution and repeat per (seed, step).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/logits/logits.cuh"
#include "kernels/logits/logits_reference.h"
#include "kernels/testing/device_buffer.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

void ArgMaxAndSamplingFlagNonFinite(int V) {
  {
    const int rows = 4;
    auto logits = Random(size_t(rows) * V, 3.0f);
    logits[size_t(1) * V + V / 2] = NAN;      // row 1: NaN -> -1
    logits[size_t(2) * V + (V - 1)] = 1e30f;  // row 2: a clear winner
    if (V > 1) logits[size_t(3) * V + 0] = logits[size_t(3) * V + V - 1] = 1e30f;  // tie -> lowest
    Dev<float> d(logits);
    Dev<int32_t> tok(rows), scratch(size_t(rows) * kArgMaxParts * 3);
    ASSERT_EQ(LaunchArgMax(d.get(), rows, V, tok.get(), scratch.get(), 0), cudaSuccess);
    auto got = tok.Get(rows);
    EXPECT_EQ(got[0], ref::ArgMax(absl::MakeConstSpan(logits).subspan(0, V)));
    EXPECT_EQ(got[1], -1);
    EXPECT_EQ(got[2], V - 1);
    EXPECT_EQ(got[3], 0);

    // Sampling: top_k = 1 and min_p = 1 are the argmax; greedy is the argmax; NaN row flagged.
    std::vector<SampleRowParams> sp(rows);
    for (int r = 0; r < rows; ++r) {
      sp[r] = SampleRowParams{
          1.0f, r == 0 ? 1 : -1, 1.0f, r == 2 ? 1.0f : 0.0f, 1.0f, 7, 0, uint32_t(r), 0, 0, 0};
    }
    sp[3].temperature = 0.0f;
    std::vector<char> raw(sizeof(SampleRowParams) * rows);
    std::memcpy(raw.data(), sp.data(), raw.size());
    Dev<char> dsp(raw);
    Dev<int32_t> ctx(1);
    Dev<float> d2(logits);
    ASSERT_EQ(LaunchSample(d2.get(), rows, V, reinterpret_cast<SampleRowParams*>(dsp.get()),
                           ctx.get(), nullptr, tok.get(), 0),
              cudaSuccess);
    got = tok.Get(rows);
    EXPECT_EQ(got[0], ref::ArgMax(absl::MakeConstSpan(logits).subspan(0, V))) << V;
    EXPECT_EQ(got[1], -1);
    EXPECT_EQ(got[2], V - 1);
    EXPECT_EQ(got[3], 0);
  }
}

// Top-k, top-p and min-p keep exactly the set a sort gives (vLLM's order, as engine/sampler.cc), on
// 256k-wide rows (the float4 path) and an odd width (the scalar path): every draw lies in the set,
// the most likely kept token is drawn at its renormalised probability, and draws repeat per seed.
struct FilterCase {
  int V;
  float temperature;
  int top_k;
  float top_p;
  float min_p;
};
void SamplingKeepsTheSortedFilterSet(const FilterCase& c) {
  std::mt19937 rng(42);
  {
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
    for (int i = 0; i < n; ++i)
      z += p[i] = std::exp((double(row[order[i]]) - row[order[0]]) / c.temperature);
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
    for (int r = 0; r < rows; ++r)
      std::copy(row.begin(), row.end(), logits.begin() + size_t(r) * c.V);
    std::vector<SampleRowParams> sp(rows);
    for (int r = 0; r < rows; ++r) {
      sp[r] = SampleRowParams{c.temperature, c.top_k, c.top_p, c.min_p, 1.0f, 99, 0,
                              uint32_t(r),   0,       0,       0};
    }
    std::vector<char> raw(sizeof(SampleRowParams) * rows);
    std::memcpy(raw.data(), sp.data(), raw.size());
    Dev<char> dsp(raw);
    Dev<int32_t> ctx(1), tok(rows);
    std::vector<int32_t> first;
    for (int repeat = 0; repeat < 2; ++repeat) {
      Dev<float> d(logits);
      ASSERT_EQ(LaunchSample(d.get(), rows, c.V, reinterpret_cast<SampleRowParams*>(dsp.get()),
                             ctx.get(), nullptr, tok.get(), 0),
                cudaSuccess);
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

void SamplingFollowsTheDistribution() {
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
                         nullptr, tok.get(), 0),
            cudaSuccess);
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

// Prompt scoring against ref::ScoreRow: rows of a random spread, one with a tied pair at the top,
// one with -inf entries, a NaN row, and an unscored row (target -1) the kernel must leave alone.
void ScoreRowsCase(int V, int top_k) {
  const int rows = 5;
  auto logits = Random(size_t(rows) * V, 4.0f);
  if (V > 2) logits[size_t(1) * V + 1] = logits[size_t(1) * V + 2] = 40.0f;  // row 1: a tie
  for (int i = 0; i < V; i += 3) logits[size_t(2) * V + i] = -INFINITY;      // row 2: -inf entries
  logits[size_t(3) * V + V / 2] = NAN;                                       // row 3: NaN
  std::vector<int32_t> targets = {V - 1, V > 2 ? 2 : 0, 1 % V, 0, -1};
  Dev<float> d(logits);
  Dev<int32_t> dt(targets), rank(rows), ids(size_t(rows) * std::max(1, top_k));
  Dev<float> lp(rows), tlp(size_t(rows) * std::max(1, top_k));
  const std::vector<int32_t> sentinel(rows, -7);
  rank.Put(sentinel);
  ASSERT_EQ(LaunchScoreRows(d.get(), rows, V, dt.get(), top_k, lp.get(), rank.get(), ids.get(),
                            tlp.get(), 0),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got_lp = lp.Get(rows), got_tlp = tlp.Get(size_t(rows) * std::max(1, top_k));
  const auto got_rank = rank.Get(rows), got_ids = ids.Get(size_t(rows) * std::max(1, top_k));
  for (int r = 0; r < rows; ++r) {
    const auto row = absl::MakeConstSpan(logits).subspan(size_t(r) * V, V);
    if (targets[r] < 0) {
      EXPECT_EQ(got_rank[r], -7) << "an unscored row was written";
      continue;
    }
    std::vector<int32_t> want_ids(top_k);
    std::vector<float> want_tlp(top_k);
    const ref::RowScore want =
        ref::ScoreRow(row, targets[r], absl::MakeSpan(want_ids), absl::MakeSpan(want_tlp));
    if (r == 3 || std::isnan(want.logprob)) {  // the NaN row; at V 1 also the all -inf row
      EXPECT_TRUE(std::isnan(want.logprob));
      EXPECT_TRUE(std::isnan(got_lp[r])) << "row " << r << " V " << V;
      continue;
    }
    const float tol = 2e-5f + 1e-6f * std::abs(want.logprob);
    EXPECT_NEAR(got_lp[r], want.logprob, tol) << "row " << r << " V " << V;
    EXPECT_LE(std::abs(got_rank[r] - want.rank), 1) << "row " << r;
    for (int k = 0; k < top_k; ++k) {
      const size_t at = size_t(r) * top_k + k;
      EXPECT_EQ(got_ids[at], want_ids[k]) << "row " << r << " alternative " << k;
      EXPECT_NEAR(got_tlp[at], want_tlp[k], 2e-5f + 1e-6f * std::abs(want_tlp[k]))
          << "row " << r << " alternative " << k;
    }
  }
  // More alternatives than the device keeps is refused, not truncated.
  EXPECT_EQ(LaunchScoreRows(d.get(), rows, V, dt.get(), kMaxDeviceTopLogprobs + 1, lp.get(),
                            rank.get(), ids.get(), tlp.get(), 0),
            cudaErrorInvalidValue);
}

// logit_bias comes first, before the repetition penalty (OpenAI's and the host sampler's order):
// a +100 bias forces a token under greedy and under top-k 1 sampling, a -100 bias removes the
// argmax, and a biased id that is also penalised is penalised from its biased value.
void LogitBiasCase(int V) {
  const int rows = 4;
  auto logits = Random(size_t(rows) * V, 3.0f);
  auto row = [&](int r) { return absl::MakeConstSpan(logits).subspan(size_t(r) * V, V); };
  const int a1 = ref::ArgMax(row(1));
  std::vector<LogitBias> bias = {{7 % V, 100.0f}, {a1, -100.0f}, {11 % V, 100.0f}, {3 % V, 5.0f}};
  std::vector<SampleRowParams> sp(rows);
  for (int r = 0; r < rows; ++r) {
    sp[r] = SampleRowParams{0.0f, -1, 1.0f, 0.0f, 1.0f, 5, 0, uint32_t(r), 0, 0, 0, r, 1};
  }
  sp[2].temperature = 0.8f;
  sp[2].top_k = 1;
  sp[3].repetition_penalty = 2.0f;
  sp[3].context_len = 1;
  // Expected: the host's order applied to copies of the rows.
  std::vector<float> r1(row(1).begin(), row(1).end()), r3(row(3).begin(), row(3).end());
  r1[a1] -= 100.0f;
  float& v3 = r3[3 % V];
  v3 += 5.0f;
  v3 = v3 > 0.0f ? v3 / 2.0f : v3 * 2.0f;
  std::vector<char> raw(sizeof(SampleRowParams) * rows);
  std::memcpy(raw.data(), sp.data(), raw.size());
  std::vector<char> raw_bias(sizeof(LogitBias) * bias.size());
  std::memcpy(raw_bias.data(), bias.data(), raw_bias.size());
  Dev<char> dsp(raw), dbias(raw_bias);
  Dev<int32_t> ctx(std::vector<int32_t>{3 % V}), tok(rows);
  Dev<float> d(logits);
  ASSERT_EQ(LaunchSample(d.get(), rows, V, reinterpret_cast<SampleRowParams*>(dsp.get()), ctx.get(),
                         reinterpret_cast<LogitBias*>(dbias.get()), tok.get(), 0),
            cudaSuccess);
  const auto got = tok.Get(rows);
  EXPECT_EQ(got[0], 7 % V);
  if (V > 1) EXPECT_EQ(got[1], ref::ArgMax(r1)) << "a -100 bias on the argmax";
  EXPECT_EQ(got[2], 11 % V);
  EXPECT_EQ(got[3], ref::ArgMax(r3)) << "bias, then the penalty";
}

void SoftCapCase(int64_t count, float cap) {
  auto logits = Random(size_t(count), 40.0f);
  Dev<float> d(logits);
  ASSERT_EQ(LaunchSoftCap(d.get(), count, cap, 0), cudaSuccess);
  const auto got = d.Get(size_t(count));
  ref::SoftCap(absl::MakeSpan(logits), cap);
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_NEAR(got[i], logits[i], 4e-6f * std::max(1.0f, std::abs(logits[i]))) << i;
  }
}

// The fused greedy head == soft-cap then argmax: the same token, the same capped rows bit for bit.
void SoftCapArgMaxCase(int V, float cap) {
  const int rows = 3;
  auto logits = Random(size_t(rows) * V, 40.0f);
  logits[size_t(1) * V + V / 3] = NAN;  // row 1 flagged either way
  Dev<float> fused(logits), separate(logits);
  Dev<int32_t> tok_fused(rows), tok_separate(rows), scratch(size_t(rows) * kArgMaxParts * 3);
  ASSERT_EQ(LaunchSoftCapArgMax(fused.get(), rows, V, cap, tok_fused.get(), scratch.get(), 0),
            cudaSuccess);
  ASSERT_EQ(LaunchSoftCap(separate.get(), int64_t{rows} * V, cap, 0), cudaSuccess);
  ASSERT_EQ(LaunchArgMax(separate.get(), rows, V, tok_separate.get(), scratch.get(), 0),
            cudaSuccess);
  EXPECT_EQ(tok_fused.Get(rows), tok_separate.Get(rows));
  const auto a = fused.Get(logits.size()), b = separate.Get(logits.size());
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // The device flag: 1 writes as above, 0 leaves the rows as they were; the tokens never change.
  for (const int32_t write : {1, 0}) {
    Dev<float> flagged(logits);
    Dev<int32_t> flag(std::vector<int32_t>{write}), tok(rows);
    ASSERT_EQ(
        LaunchSoftCapArgMax(flagged.get(), rows, V, cap, tok.get(), scratch.get(), 0, flag.get()),
        cudaSuccess);
    EXPECT_EQ(tok.Get(rows), tok_separate.Get(rows)) << "write flag " << write;
    const auto c = flagged.Get(logits.size());
    const float* want = write == 1 ? b.data() : logits.data();
    ASSERT_EQ(0, std::memcmp(c.data(), want, c.size() * sizeof(float))) << "write flag " << write;
  }
}

// Values that differ before the cap but not after it: the tokens-only pass (flag 0) caps only the
// values near each warp round's raw maximum, and must still give the lowest index among equal
// capped values, not the raw argmax. Each row puts the raw maximum after a smaller raw value of the
// same capped value: far apart (other chunks), a float4 step of 256 apart (the same thread, a later
// load), in the same float4, a lower-index run of equal capped values around a smaller one, and
// two values where the cap saturates (other warps; the pass then caps every value of the round).
void SoftCapArgMaxTiesCase(int V) {
  const float cap = 30.0f;
  struct Tie {
    int first, then;
  };
  // Chunks hold at least 2052 elements for these V, so 8 and 1032 share chunk 0 and a thread.
  // The last row: far apart raw values where the cap saturates (both cap to 30 exactly).
  const std::vector<Tie> ties = {{V / 5, V - 7}, {8, 8 + 1024}, {16, 17}, {3, 5}, {100, 2000}};
  const int rows = static_cast<int>(ties.size());
  auto logits = Random(size_t(rows) * V, 3.0f);  // far below 90 at every V
  for (int r = 0; r < rows; ++r) {
    float* row = logits.data() + size_t(r) * V;
    // Near 90 adjacent floats cap to the same value (the cap's slope there is 0.01).
    row[ties[r].first] = r == 4 ? 500.0f : 90.0f;
    row[ties[r].then] = r == 4 ? 1000.0f : std::nextafter(90.0f, 100.0f);
    if (r == 3) row[4] = std::nextafter(90.0f, 0.0f);  // smaller raw, between them, same capped
  }
  Dev<int32_t> scratch(size_t(rows) * kArgMaxParts * 3), tok_separate(rows);
  Dev<float> separate(logits);
  ASSERT_EQ(LaunchSoftCap(separate.get(), int64_t{rows} * V, cap, 0), cudaSuccess);
  ASSERT_EQ(LaunchArgMax(separate.get(), rows, V, tok_separate.get(), scratch.get(), 0),
            cudaSuccess);
  const auto want = tok_separate.Get(rows);
  for (int r = 0; r < rows; ++r) {
    // The case means something only if the capped values tie where the raw ones do not.
    const int first = r == 3 ? 3 : ties[r].first;
    ASSERT_EQ(want[r], first) << "row " << r << ": the capped values do not tie";
    ASSERT_EQ(ref::ArgMax(absl::MakeConstSpan(logits).subspan(size_t(r) * V, V)), ties[r].then);
  }
  for (const int32_t write : {1, 0}) {
    Dev<float> flagged(logits);
    Dev<int32_t> flag(std::vector<int32_t>{write}), tok(rows);
    ASSERT_EQ(
        LaunchSoftCapArgMax(flagged.get(), rows, V, cap, tok.get(), scratch.get(), 0, flag.get()),
        cudaSuccess);
    EXPECT_EQ(tok.Get(rows), want) << "write flag " << write;
  }
}

// The premise of the tokens-only pass: from a float to any larger one the device's soft-cap falls
// back by at most kSoftCapInversionSlack * cap (tanhf is not monotone everywhere: session 22 found
// two backward steps, one a sign, for every cap tried).
void SoftCapMonotoneCase(float cap) {
  Dev<uint32_t> stats(3);
  ASSERT_EQ(LaunchCountSoftCapInversions(cap, stats.get(), 0), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got = stats.Get(3);
  float gap, at;
  std::memcpy(&gap, &got[1], 4);
  std::memcpy(&at, &got[2], 4);
  std::printf(
      "soft-cap %g: %u backward steps, the largest %g (%g of the slack), the first at |x| %g\n",
      cap, got[0], gap, gap / (kSoftCapInversionSlack * cap), at);
  // Between any x <= y the cap falls back by at most the sum of the steps between them.
  EXPECT_LE(float(got[0]) * gap, kSoftCapInversionSlack * cap) << "cap " << cap;
}

std::vector<OpCase> MakeLogitsCases() {
  std::vector<OpCase> cases;
  for (int64_t count : {1, 1023, 256000 * 3 + 5}) {
    for (float cap : {30.0f, 0.0f}) {
      cases.push_back({"softcap", absl::StrCat("n", count, " cap", cap), "ref::SoftCap",
                       "tanhf ulps: 4e-6 relative", false,
                       [count, cap] { SoftCapCase(count, cap); }});
    }
  }
  // 4099 and 33: the scalar loads; 4100 and 256000: float4 loads (V % 4 == 0).
  for (int V : {1, 33, 4099, 4100, 256000}) {
    for (float cap : {30.0f, 0.0f}) {
      cases.push_back({"softcap_argmax", absl::StrCat("V", V, " cap", cap, " rows3"),
                       "LaunchSoftCap then LaunchArgMax", "exact (tokens and capped rows)", false,
                       [V, cap] { SoftCapArgMaxCase(V, cap); }});
    }
  }
  for (int V : {4099, 4100, 256000}) {
    cases.push_back({"softcap_argmax", absl::StrCat("V", V, " capped ties"),
                     "LaunchSoftCap then LaunchArgMax", "exact (tokens)", false,
                     [V] { SoftCapArgMaxTiesCase(V); }});
  }
  for (float cap : {30.0f, 1.0f, 50.5f}) {
    // Heavy: four billion caps, no memory access worth sanitizing.
    cases.push_back({"softcap_monotone", absl::StrCat("cap", cap, " every float"),
                     "adjacent floats in order up to the slack",
                     "sum of backward steps <= kSoftCapInversionSlack * cap", true,
                     [cap] { SoftCapMonotoneCase(cap); }});
  }
  for (int V : {1, 33, 1023, 1025, 4100, 256000}) {
    cases.push_back({"argmax", absl::StrCat("V", V, " rows4"),
                     "ref::ArgMax; NaN row -> -1; ties -> lowest", "exact", false,
                     [V] { ArgMaxAndSamplingFlagNonFinite(V); }});
  }
  for (const FilterCase c :
       {FilterCase{256000, 0.8f, 50, 1.0f, 0.0f}, FilterCase{256000, 1.0f, -1, 0.9f, 0.0f},
        FilterCase{256000, 0.7f, 100, 0.8f, 0.05f}, FilterCase{4099, 1.2f, 40, 0.95f, 0.02f},
        FilterCase{4099, 1.0f, -1, 1.0f, 0.1f}}) {
    cases.push_back(
        {"sample.filter_set",
         absl::StrCat("V", c.V, " T", c.temperature, " k", c.top_k, " p", c.top_p, " minp",
                      c.min_p),
         "the kept set of a full sort (top-k ties kept, top-p prefix, min-p)",
         "every draw in the set; top token drawn at its renormalised probability +-0.05",
         c.V > 10000, [c] { SamplingKeepsTheSortedFilterSet(c); }});
  }
  for (int V : {1, 33, 1025, 256000}) {
    for (int top_k : {0, 1, 5, kMaxDeviceTopLogprobs}) {
      if (top_k > V) continue;
      cases.push_back({"score_rows", absl::StrCat("V", V, " k", top_k, " rows5"),
                       "ref::ScoreRow (log-softmax in double, rank, top list; NaN row -> NaN)",
                       "log-probabilities 2e-5 + 1e-6 relative; rank within 1; ids exact",
                       V > 10000 && top_k > 1, [V, top_k] { ScoreRowsCase(V, top_k); }});
    }
  }
  for (int V : {1, 1025, 256000}) {
    cases.push_back({"sample.logit_bias", absl::StrCat("V", V, " rows4"),
                     "the row biased (then penalised) on the host, ref::ArgMax", "exact", false,
                     [V] { LogitBiasCase(V); }});
  }
  cases.push_back({"sample.distribution", "V100 rows4000 p(.5 .3 .2)", "the stated probabilities",
                   "frequencies within 0.04", false, [] { SamplingFollowsTheDistribution(); }});
  return cases;
}
GRIFFIN_REGISTER_OP_CASES(MakeLogitsCases);

}  // namespace
}  // namespace griffin::kernels::testing
