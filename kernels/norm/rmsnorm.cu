// See rmsnorm.cuh for the math, layouts and tolerance.
#include <mutex>
#include <vector>

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
// vectors): every load of the row issued at once, kVecs float4s a thread (i, i + blockDim, ...)
// kept in registers between the reduction and the output. The strided kernel above waits on about
// ten dependent load rounds per thread at d = 2560, so at decode batches it costs ~11 us per
// row-launch for 30 KB (bench/PROFILE.md); this one is a single round.
// kVecs 2 halves the threads of a row's block, so twice the rows' blocks fit an SM at once: at
// 512 rows of 2560 (a 512-token prefill pass) one float4 a thread is 640-thread blocks, 3 an SM,
// 1.3 waves on 132 SMs; two are 320-thread blocks, 6 an SM, one wave (bench/NOTES.md, session 28).
template <int kVecs>
__global__ void AddRmsNormVec4Kernel(float* x, const float* delta, InputScales sc,
                                     const float* bias, const float* w, const int32_t* gather,
                                     int d, float eps, bf16* out, Fp8Rows quantized,
                                     int delta_parts, int64_t part_stride) {
  AllowDependentLaunch();  // the next projection's GEMV may start streaming its weights
  WaitForPriorGrids();
  __shared__ float scratch[32];
  const int r = blockIdx.x;
  const int64_t in_row = gather != nullptr ? gather[r] : r;
  const bool add = delta != nullptr && gather == nullptr;
  float4* xr = reinterpret_cast<float4*>(x + in_row * d);
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  // Every load of the thread's vectors first (x's writes below would otherwise hold a later
  // vector's loads behind them: the compiler cannot tell the addresses apart).
  float4 v[kVecs], wv[kVecs], dv[kVecs];
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = wv[j] = dv[j] = zero;
    if (4 * i >= d) continue;
    v[j] = xr[i];
    wv[j] = reinterpret_cast<const float4*>(w)[i];
    if (add) {
      const float4* dr = reinterpret_cast<const float4*>(delta + in_row * d) + i;
      dv[j] = *dr;
      // A split GEMM's parts: at most a handful (Gemm::ChooseSplitK), loads issued together.
      for (int p = 1; p < delta_parts; ++p) {
        const float4 part = dr[p * part_stride / 4];
        dv[j].x += part.x;
        dv[j].y += part.y;
        dv[j].z += part.z;
        dv[j].w += part.w;
      }
    }
  }
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (add && 4 * i < d) {
      float4 e = dv[j];
      if (sc.any()) {
        e = make_float4(
            ApplyScales(e.x, sc, in_row, 4 * i), ApplyScales(e.y, sc, in_row, 4 * i + 1),
            ApplyScales(e.z, sc, in_row, 4 * i + 2), ApplyScales(e.w, sc, in_row, 4 * i + 3));
      }
      const float4 bv = bias != nullptr ? reinterpret_cast<const float4*>(bias)[i] : zero;
      v[j].x = v[j].x + (e.x + bv.x);
      v[j].y = v[j].y + (e.y + bv.y);
      v[j].z = v[j].z + (e.z + bv.z);
      v[j].w = v[j].w + (e.w + bv.w);
      xr[i] = v[j];
    }
    const float sq = v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    sum_sq = j == 0 ? sq : sum_sq + sq;  // one vector: the sum as before, bit for bit
  }
  const float total = BlockSum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(total / d + eps);
  // The bf16 outputs, as the quantizer reads them.
  float2 o01[kVecs], o23[kVecs];
  float largest = 0.0f;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    o01[j] = o23[j] = make_float2(0.0f, 0.0f);
    if (4 * i < d) {
      const __nv_bfloat162 lo =
          __floats2bfloat162_rn(v[j].x * inv * (1.0f + wv[j].x), v[j].y * inv * (1.0f + wv[j].y));
      const __nv_bfloat162 hi =
          __floats2bfloat162_rn(v[j].z * inv * (1.0f + wv[j].z), v[j].w * inv * (1.0f + wv[j].w));
      uint2 packed;
      packed.x = *reinterpret_cast<const uint32_t*>(&lo);
      packed.y = *reinterpret_cast<const uint32_t*>(&hi);
      reinterpret_cast<uint2*>(out + int64_t{r} * d)[i] = packed;
      o01[j] = __bfloat1622float2(lo);
      o23[j] = __bfloat1622float2(hi);
    }
    const float m =
        fmaxf(fmaxf(fabsf(o01[j].x), fabsf(o01[j].y)), fmaxf(fabsf(o23[j].x), fabsf(o23[j].y)));
    largest = j == 0 ? m : fmaxf(largest, m);
  }
  if (quantized.codes == nullptr) return;  // the same for every thread of the launch
  const float scale = Fp8RowScale(BlockMax(largest, scratch));
  if (threadIdx.x == 0) quantized.scales[r] = scale;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (4 * i < d) {
      reinterpret_cast<uint32_t*>(quantized.codes + int64_t{r} * d)[i] =
          Fp8Codes4(o01[j].x, o01[j].y, o23[j].x, o23[j].y, scale);
    }
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

int OneVectorThreads(int d) { return (d / 4 + 31) / 32 * 32; }

}  // namespace

int AddRmsNormRowsPerWave(int d) {
  if (d % 4 != 0 || d > 4 * 1024) return 0;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  // Per (device, width): the occupancy query costs microseconds, and a prefill pass launches
  // about fifty norms.
  struct Known {
    int device, d, rows;
  };
  static std::mutex mu;
  static std::vector<Known> known;
  const std::lock_guard<std::mutex> lock(mu);
  for (const Known& k : known) {
    if (k.device == device && k.d == d) return k.rows;
  }
  int sms = 0, blocks = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, AddRmsNormVec4Kernel<1>,
                                                    OneVectorThreads(d), 0) != cudaSuccess) {
    return 0;
  }
  known.push_back({device, d, sms * blocks});
  return sms * blocks;
}

// The float4 kernel quantizes: rows it takes, of whole 16-code vectors (the W8A8 GEMM's K).
bool AddRmsNormQuantizes(int d) { return d % 16 == 0 && d <= 4 * 1024; }

cudaError_t LaunchAddRmsNorm(float* x, const float* delta, InputScales delta_scales,
                             const float* bias, const float* w, const int32_t* gather, int rows,
                             int d, float eps, bf16_t* out, cudaStream_t stream, Fp8Rows quantized,
                             int delta_parts, int vectors_per_thread) {
  if (rows <= 0) return cudaSuccess;
  if (vectors_per_thread < 0 || vectors_per_thread > 2) return cudaErrorInvalidValue;
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
  // Two float4s a thread only where the rows' one-vector blocks would not all be resident at
  // once (measured, bench/NOTES.md session 29: two are 1% faster at 512 and 32,768 rows of 2560,
  // 1% slower at 256 and 3-4% slower at 1-8, where halving a row's threads only lengthens it).
  if (vec4 && vectors_per_thread == 0) {
    const int one_wave = AddRmsNormRowsPerWave(d);
    vectors_per_thread = one_wave > 0 && rows > one_wave ? 2 : 1;
  }
  if (vec4 && vectors_per_thread == 2) {
    const int threads = ((d / 4 + 1) / 2 + 31) / 32 * 32;
    return LaunchPdl(AddRmsNormVec4Kernel<2>, dim3(rows), dim3(threads), 0, stream, x, delta,
                     delta_scales, bias, w, gather, d, eps, reinterpret_cast<bf16*>(out), quantized,
                     delta_parts, part_stride);
  }
  if (vec4) {
    return LaunchPdl(AddRmsNormVec4Kernel<1>, dim3(rows), dim3(OneVectorThreads(d)), 0, stream, x,
                     delta, delta_scales, bias, w, gather, d, eps, reinterpret_cast<bf16*>(out),
                     quantized, delta_parts, part_stride);
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
