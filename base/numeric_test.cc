#include "base/numeric.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace griffin {
namespace {

TEST(Bf16Test, RoundsToNearestEven) {
  // sqrt(2560) = 50.596... rounds to 50.5 in bf16 (SPEC.md §2.1); sqrt(4096) is exact.
  EXPECT_EQ(RoundToBf16(std::sqrt(2560.0f)), 50.5f);
  EXPECT_EQ(RoundToBf16(64.0f), 64.0f);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(RoundToBf16(1.0f + 1.0f / 256), 1.0f);
  EXPECT_EQ(RoundToBf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(RoundToBf16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(RoundToBf16(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc000), -2.0f);
}

TEST(HalfTest, DecodesAllClasses) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
}

TEST(CheckedTest, DetectsOverflow) {
  EXPECT_EQ(CheckedMul(1ull << 32, 1ull << 31), 1ull << 63);
  EXPECT_FALSE(CheckedMul(1ull << 32, 1ull << 32).has_value());
  EXPECT_FALSE(CheckedAdd(~0ull, 1).has_value());
  EXPECT_EQ(CheckedAdd(2, 3), 5u);
}

// The byte form: every one of the 254 non-NaN codes decodes to a value that encodes back to
// itself, in order of magnitude; encoding rounds as RoundToFp8E4M3 does.
TEST(Fp8E4M3Test, BytesRoundTripAndEncodeTheRoundedValue) {
  float previous = -1.0f;
  for (int code = 0; code < 0x7f; ++code) {
    const float v = Fp8E4M3ToFloat(static_cast<uint8_t>(code));
    EXPECT_EQ(FloatToFp8E4M3(v), code) << code;
    EXPECT_EQ(FloatToFp8E4M3(-v), code == 0 ? 0x80 : code | 0x80) << code;
    EXPECT_EQ(Fp8E4M3ToFloat(static_cast<uint8_t>(code | 0x80)), -v) << code;
    EXPECT_GT(v, previous) << code;  // codes 0..0x7e ascend
    previous = v;
  }
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
  EXPECT_EQ(FloatToFp8E4M3(std::nanf("")), 0x7f);
  for (float x : {0.3f, -2.6f, 1.0625f, 500.0f, -1e30f, 0.001f, 3e-3f, 17.3f}) {
    EXPECT_EQ(Fp8E4M3ToFloat(FloatToFp8E4M3(x)), RoundToFp8E4M3(x)) << x;
  }
}

TEST(Fp8E4M3Test, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(RoundToFp8E4M3(0.0f), 0.0f);
  EXPECT_EQ(RoundToFp8E4M3(1.0f), 1.0f);
  EXPECT_EQ(RoundToFp8E4M3(0.3f), 0.3125f);   // spacing 2^-5 in [0.25, 0.5)
  EXPECT_EQ(RoundToFp8E4M3(1.0625f), 1.0f);   // a tie: to the even mantissa
  EXPECT_EQ(RoundToFp8E4M3(1.1875f), 1.25f);  // a tie the other way
  EXPECT_EQ(RoundToFp8E4M3(-2.6f), -2.5f);
  EXPECT_EQ(RoundToFp8E4M3(432.0f), 448.0f);  // between 416 and 448: even
  EXPECT_EQ(RoundToFp8E4M3(500.0f), 448.0f);  // saturates (no infinities in e4m3fn)
  EXPECT_EQ(RoundToFp8E4M3(-1e30f), -448.0f);
  EXPECT_EQ(RoundToFp8E4M3(0.001f), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(RoundToFp8E4M3(0.0009f), 0.0f);
  EXPECT_EQ(RoundToFp8E4M3(3 * std::ldexp(1.0f, -10)), std::ldexp(1.0f, -8));  // subnormal tie
  EXPECT_TRUE(std::isnan(RoundToFp8E4M3(std::nanf(""))));
  // Every finite positive value is a fixed point, and the midpoint between neighbours goes to the
  // one with the even mantissa.
  std::vector<float> values;
  for (int m = 1; m < 8; ++m) values.push_back(std::ldexp(static_cast<float>(m), -9));  // subnormal
  for (int e = -6; e <= 8; ++e) {
    for (int m = 0; m < 8; ++m) {
      if (e == 8 && m == 7) continue;  // 0x7F / 0xFF are NaN: the largest finite is 1.75 x 2^8
      values.push_back(std::ldexp(1.0f + m / 8.0f, e));
    }
  }
  ASSERT_EQ(values.size(), 126u);
  ASSERT_EQ(values.back(), 448.0f);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(RoundToFp8E4M3(values[i]), values[i]) << values[i];
    if (i + 1 < values.size()) {
      const float mid = (values[i] + values[i + 1]) / 2;
      EXPECT_TRUE(RoundToFp8E4M3(mid) == values[i] || RoundToFp8E4M3(mid) == values[i + 1]) << mid;
    }
  }
}

}  // namespace
}  // namespace griffin
