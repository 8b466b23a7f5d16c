// Scalar number formats shared by the loader (stored dtypes), the CPU backend and the tests:
// bfloat16 and IEEE half conversions, and overflow-checked size arithmetic for untrusted sizes.
#ifndef GRIFFIN_BASE_NUMERIC_H_
#define GRIFFIN_BASE_NUMERIC_H_

#include <cstdint>
#include <cstring>
#include <optional>

namespace griffin {

// bfloat16 is the top half of a float32; widening is exact.
inline float Bf16ToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Rounds to nearest, ties to even (what PyTorch, JAX and CUDA's __float2bfloat16 do); NaN stays NaN.
uint16_t FloatToBf16(float f);

// Rounds `f` to the nearest bfloat16 value and returns it as a float.
inline float RoundToBf16(float f) { return Bf16ToFloat(FloatToBf16(f)); }

// Rounds `f` to the nearest FP8 E4M3 value (the OCP "e4m3fn" format NVIDIA's FP8 GEMMs read: 3
// mantissa bits, exponent bias 7, subnormals down to 2^-9, no infinities) and returns it as a float;
// ties to even, magnitudes beyond the largest finite value 448 saturate to +-448 (what scaled
// quantization wants), NaN stays NaN.
float RoundToFp8E4M3(float f);
inline constexpr float kFp8E4M3Max = 448.0f;
// The same rounding, as the E4M3 byte (sign, 4 exponent bits, 3 mantissa bits); NaN is 0x7f.
uint8_t FloatToFp8E4M3(float f);
// E4M3 byte -> float, exact (0x7f and 0xff are NaN).
float Fp8E4M3ToFloat(uint8_t bits);

// IEEE 754 binary16 → float32, exact (subnormals, infinities and NaN included).
float HalfToFloat(uint16_t bits);

// Checked arithmetic for sizes read from files or requests: nullopt on overflow.
std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b);
std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b);

}  // namespace griffin

#endif  // GRIFFIN_BASE_NUMERIC_H_
