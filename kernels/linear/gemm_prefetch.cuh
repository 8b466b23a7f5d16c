// Decode-sized GEMMs whose weights start streaming before the kernel ahead of them has finished:
//
//   D[m, n] (float32, row-major) = A[m, k] (bf16 activations, row-major) . W[n, k]^T (bf16 weights)
//
// the same product as Gemm::Run. At decode batches of 2-256 rows a 13-39 MB projection takes 8-10
// us on cuBLASLt whatever its split (bench/NOTES.md session 23): each launch's ramp and a DRAM
// round trip that nothing overlaps, because a cuBLASLt kernel neither starts before its
// predecessor ends nor lets its successor start early. This kernel is CUTLASS's Hopper GEMM with
// weight prefetch (CUTLASS example 63, shipped with PyPI's nvidia-cutlass; its headers are used
// as they are): a non-persistent warp-specialized wgmma kernel, launched with programmatic
// dependent launch, whose weight-loading warp fills shared memory while the activations' warp
// waits in griddepcontrol.wait; it lets its own successor launch
// once `overlap_ratio` of its K tiles are loaded. Weights are the CUTLASS problem's A operand
// (64 output columns per block, one consumer warp group), the activations its B (16 to 128 rows
// per block).
#ifndef GRIFFIN_KERNELS_LINEAR_GEMM_PREFETCH_CUH_
#define GRIFFIN_KERNELS_LINEAR_GEMM_PREFETCH_CUH_

#include <cstdint>

#include "kernels/types.h"

namespace griffin::kernels {

struct PrefetchGemmParams {
  // Fraction of the K tiles loaded before the successor may launch; negative: no early launch.
  float overlap_ratio = 0.5f;
  // Activation rows per block: 16, 32, 64 or 128; 0 chooses the smallest that covers m, up to
  // 128.
  int rows_per_block = 0;
  // Split-K: the product as k_parts float32 partial products over consecutive slices of k / k_parts
  // columns, written one after another into d ([k_parts][m][n]), for a reader that adds them
  // (LaunchAddRmsNorm's delta_parts), as Gemm::RunSplitK. Each part is a batch of CUTLASS's
  // problem (grid z): a projection with few output columns (2560 at 2B: 40 blocks of 64) gets
  // k_parts times the blocks streaming its weights. Needs k % k_parts == 0 and (k / k_parts) % 8
  // == 0 (Gemm::SplitKAllowed).
  int k_parts = 1;
};
// Example 63's third warp, which pulls weights into L2 ahead of the mainloop (its
// `prefetch_ratio`), is always off here: slower in every decode shape measured (kernels_bench,
// bench/NOTES.md session 24), and compute-sanitizer's synccheck reports its named-barrier
// arrival (barrier 0 without the whole block) as divergent.

// Whether this build and device run the kernel for these sizes: sm_90 with the CUTLASS kernel
// compiled in, k % 8 == 0 and n % 4 == 0 (16-byte TMA rows). LaunchPrefetchGemm also needs a, w
// and d 16-byte aligned and a valid rows_per_block (cudaErrorInvalidValue otherwise).
bool PrefetchGemmSupported(int device, int m, int n, int k);
cudaError_t LaunchPrefetchGemm(const bf16_t* a, const bf16_t* w, float* d, int m, int n, int k,
                               const PrefetchGemmParams& params, cudaStream_t stream);

// W8A8 on the FP8 tensor cores, the same kernel with E4M3 operands (example 63's own case):
// D[m, n] = sum_k A[m, k] W[n, k] over the codes, unscaled, as Gemm::RunFp8Unscaled (the reader
// applies the row and column scales, types.h InputScales). k % 16 == 0; blocks of up to 64 rows
// (only those are compiled), so at most kPrefetchGemmFp8MaxRows rows with automatic blocks; no
// split over K (params.k_parts 1: nothing reads FP8 parts).
inline constexpr int kPrefetchGemmFp8MaxRows = 64;
bool PrefetchGemmFp8Supported(int device, int m, int n, int k);
cudaError_t LaunchPrefetchGemmFp8(const uint8_t* a, const uint8_t* w, float* d, int m, int n, int k,
                                  const PrefetchGemmParams& params, cudaStream_t stream);

}  // namespace griffin::kernels

#endif  // GRIFFIN_KERNELS_LINEAR_GEMM_PREFETCH_CUH_
