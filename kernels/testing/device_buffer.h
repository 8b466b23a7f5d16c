// Test helpers shared by the kernel case lists: device buffers poisoned on allocation, random
// inputs, bf16/half rounding on the host, and a step's token layout built on the host.
#ifndef GRIFFIN_KERNELS_TESTING_DEVICE_BUFFER_H_
#define GRIFFIN_KERNELS_TESTING_DEVICE_BUFFER_H_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/types.h"

namespace griffin::kernels::testing {

// A device array poisoned with 0xff bytes (NaN for floats) so unwritten outputs show.
template <typename T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(std::max<size_t>(n, 1)) {
    EXPECT_EQ(cudaMalloc(&p_, n_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(p_, 0xff, n_ * sizeof(T)), cudaSuccess);
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { Put(h); }
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
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

// Fresh random inputs for every case (seeded per process; never zeros).
inline std::mt19937& Rng() {
  static std::mt19937 rng(std::random_device{}());
  return rng;
}
inline std::vector<float> Random(size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(Rng());
  return v;
}
// Scales an FP8 GEMM leaves for the kernel that reads its output (types.h InputScales), of about
// the size E4M3 scales take, per row (optional) and per column. Unscale(v, r, c) turns a value the
// consumer should see into the GEMM output that yields it.
struct ScalesOnDevice {
  ScalesOnDevice(int rows, int cols, bool with_rows)
      : row_values(with_rows ? Random(rows, 0.01f, 0.02f) : std::vector<float>{}),
        col_values(Random(cols, 0.004f, 0.006f)),
        row_buf(row_values),
        col_buf(col_values) {}
  InputScales get() { return {row_values.empty() ? nullptr : row_buf.get(), col_buf.get()}; }
  float Scale(int r, int c) const {
    return (row_values.empty() ? 1.0f : row_values[r]) * col_values[c];
  }
  float Unscale(float v, int r, int c) const { return v / Scale(r, c); }
  // in[r, c] as the consumer sees it (the device rounds the same product; the add after it may
  // differ by the host's contraction, so compare with a tolerance).
  float Apply(float v, int r, int c) const { return v * Scale(r, c); }
  std::vector<float> row_values, col_values;
  Dev<float> row_buf, col_buf;
};

inline std::vector<bf16_t> ToBf16(const std::vector<float>& v) {
  std::vector<bf16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = HostToBf16(v[i]);
  return o;
}
inline std::vector<float> FromBf16(const std::vector<bf16_t>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = HostFromBf16(v[i]);
  return o;
}
inline std::vector<float> RoundBf16(const std::vector<float>& v) { return FromBf16(ToBf16(v)); }
inline float RoundHalf(float v) { return __half2float(__float2half_rn(v)); }

// One step's token layout on the host (what engine/cuda_step_layout.cc packs for the backend).
struct HostLayout {
  std::vector<int32_t> tok_entry;
  std::vector<StepEntryRecord> entries;
  int n = 0;
  void Add(int len, int slot, int pos0) {
    entries.push_back({n, len, slot, pos0});
    for (int k = 0; k < len; ++k) tok_entry.push_back(static_cast<int32_t>(entries.size()) - 1);
    n += len;
  }
};

}  // namespace griffin::kernels::testing

#endif  // GRIFFIN_KERNELS_TESTING_DEVICE_BUFFER_H_
