// See rmsnorm.cuh for the math, layouts and tolerance.
#include "kernels/common.cuh"
#include "kernels/launch.cuh"
#include "kernels/linear/fp8_codes.cuh"
#include "kernels/norm/rmsnorm.cuh"

namespace griffin::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void AddRmsNormKernel(float* x, const float* delta, InputScales sc, const float* bias,
                                 const float* w, const int32_t* gather, int d, float eps, bf16* out,
                                 int delta_parts, int64_t part_stride) {
  AllowDependentLaunch();  // the next projection's GEMV may start streaming its weights
  WaitForPriorGrids();
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int64_t in_row = gather != nullptr ? gather[r] : r;
  float* xr = x + in_row * d;
  float sum_sq = 0.0f;
  if (delta != nullptr && gather == nullptr) {
    const float* dr = delta + in_row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
      float sum = dr[i];
      for (int p = 1; p < delta_parts; ++p) sum += dr[p * part_stride + i];
      const float v =
          xr[i] + (ApplyScales(sum, sc, in_row, i) + (bias != nullptr ? bias[i] : 0.0f));
      xr[i] = v;
      sum_sq += v * v;
    }
  } else {
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum_sq += xr[i] * xr[i];
  }
  const float total = BlockSum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(total / d + eps);
  bf16* o = out + int64_t{r} * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = ToB(xr[i] * inv * (1.0f + w[i]));
}

// The same for rows that fit one block as float4s (d % 4 == 0, d <= 4096, 16-byte aligned
// vectors): every load of the row issued at once, one value per thread kept in registers between
// the reduction and the output. The strided kernel above waits on about ten dependent load rounds
// per thread at d = 2560, so at decode batches it costs ~11 us per row-launch for 30 KB
// (bench/PROFILE.md); this one is a single round.
__global__ void AddRmsNormVec4Kernel(float* x, const float* delta, InputScales sc,
                                     const float* bias, const float* w, const int32_t* gather,
                                     int d, float eps, bf16* out, Fp8Rows quantized,
                                     int delta_parts, int64_t part_stride) {
  AllowDependentLaunch();  // the next projection's GEMV may start streaming its weights
  WaitForPriorGrids();
  __shared__ float scratch[32];
  const int r = blockIdx.x, i = threadIdx.x;
  const int64_t in_row = gather != nullptr ? gather[r] : r;
  const bool live = 4 * i < d;
  float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f), wv = v;
  if (live) {
    float4* xr = reinterpret_cast<float4*>(x + in_row * d) + i;
    v = *xr;
    wv = reinterpret_cast<const float4*>(w)[i];
    if (delta != nullptr && gather == nullptr) {
      const float4* dr = reinterpret_cast<const float4*>(delta + in_row * d) + i;
      float4 dv = *dr;
      // A split GEMM's parts: at most a handful (Gemm::ChooseSplitK), loads issued together.
      for (int p = 1; p < delta_parts; ++p) {
        const float4 part = dr[p * part_stride / 4];
        dv.x += part.x;
        dv.y += part.y;
        dv.z += part.z;
        dv.w += part.w;
      }
      if (sc.any()) {
        dv = make_float4(
            ApplyScales(dv.x, sc, in_row, 4 * i), ApplyScales(dv.y, sc, in_row, 4 * i + 1),
            ApplyScales(dv.z, sc, in_row, 4 * i + 2), ApplyScales(dv.w, sc, in_row, 4 * i + 3));
      }
      const float4 bv = bias != nullptr ? reinterpret_cast<const float4*>(bias)[i]
                                        : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      v.x = v.x + (dv.x + bv.x);
      v.y = v.y + (dv.y + bv.y);
      v.z = v.z + (dv.z + bv.z);
      v.w = v.w + (dv.w + bv.w);
      *xr = v;
    }
  }
  const float total = BlockSum(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w, scratch);
  const float inv = 1.0f / sqrtf(total / d + eps);
  float2 o01 = make_float2(0.0f, 0.0f), o23 = o01;  // the bf16 outputs, as the quantizer reads them
  if (live) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x * inv * (1.0f + wv.x), v.y * inv * (1.0f + wv.y));
    __nv_bfloat162 hi = __floats2bfloat162_rn(v.z * inv * (1.0f + wv.z), v.w * inv * (1.0f + wv.w));
    uint2 packed;
    packed.x = *reinterpret_cast<uint32_t*>(&lo);
    packed.y = *reinterpret_cast<uint32_t*>(&hi);
    reinterpret_cast<uint2*>(out + int64_t{r} * d)[i] = packed;
    o01 = __bfloat1622float2(lo);
    o23 = __bfloat1622float2(hi);
  }
  if (quantized.codes == nullptr) return;  // the same for every thread of the launch
  const float largest = BlockMax(
      fmaxf(fmaxf(fabsf(o01.x), fabsf(o01.y)), fmaxf(fabsf(o23.x), fabsf(o23.y))), scratch);
  const float scale = Fp8RowScale(largest);
  if (threadIdx.x == 0) quantized.scales[r] = scale;
  if (live) {
    reinterpret_cast<uint32_t*>(quantized.codes + int64_t{r} * d)[i] =
        Fp8Codes4(o01.x, o01.y, o23.x, o23.y, scale);
  }
}

__global__ void EmbedKernel(const bf16* table, const int32_t* tokens, int d, float scale,
                            float* x) {
  AllowDependentLaunch();
  WaitForPriorGrids();
  const int t = blockIdx.x;
  const bf16* row = table + int64_t{tokens[t]} * d;
  float* xr = x + int64_t{t} * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) xr[i] = ToF(row[i]) * scale;
}

}  // namespace

// The float4 kernel quantizes: rows it takes, of whole 16-code vectors (the W8A8 GEMM's K).
bool AddRmsNormQuantizes(int d) { return d % 16 == 0 && d <= 4 * 1024; }

cudaError_t LaunchAddRmsNorm(float* x, const float* delta, InputScales delta_scales,
                             const float* bias, const float* w, const int32_t* gather, int rows,
                             int d, float eps, bf16_t* out, cudaStream_t stream, Fp8Rows quantized,
                             int delta_parts) {
  if (rows <= 0) return cudaSuccess;
  if (delta_parts < 1 || (delta_parts > 1 && (delta == nullptr || gather != nullptr))) {
    return cudaErrorInvalidValue;
  }
  const int64_t part_stride = int64_t{rows} * d;
  const uintptr_t aligned = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(delta) |
                            reinterpret_cast<uintptr_t>(bias) | reinterpret_cast<uintptr_t>(w) |
                            reinterpret_cast<uintptr_t>(quantized.codes);
  const bool vec4 =
      d % 4 == 0 && d <= 4 * 1024 && aligned % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
  if (quantized.codes != nullptr &&
      (!vec4 || !AddRmsNormQuantizes(d) || quantized.scales == nullptr || gather != nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (vec4) {
    const int threads = (d / 4 + 31) / 32 * 32;
    return LaunchPdl(AddRmsNormVec4Kernel, dim3(rows), dim3(threads), 0, stream, x, delta,
                     delta_scales, bias, w, gather, d, eps, reinterpret_cast<bf16*>(out), quantized,
                     delta_parts, part_stride);
  }
  return LaunchPdl(AddRmsNormKernel, dim3(rows), dim3(kThreads), 0, stream, x, delta, delta_scales,
                   bias, w, gather, d, eps, reinterpret_cast<bf16*>(out), delta_parts, part_stride);
}

cudaError_t LaunchEmbed(const bf16_t* table, const int32_t* tokens, int n, int d, float scale,
                        float* x, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  return LaunchPdl(EmbedKernel, dim3(n), dim3(kThreads), 0, stream,
                   reinterpret_cast<const bf16*>(table), tokens, d, scale, x);
}

}  // namespace griffin::kernels
