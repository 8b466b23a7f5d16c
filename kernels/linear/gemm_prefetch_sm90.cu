// See gemm_prefetch.cuh. Compiled for sm_90a only, with CUTLASS's headers and its example 63's
// kernel layer and collective (kernels/CMakeLists.txt); builds without them compile
// gemm_prefetch_none.cc instead.
//
// Example 63 ships its builder for FP8 inputs only; the collective and the kernel are written for
// any TMA-loadable element, so the mainloop is spelt out here the way the builder would spell it,
// with bf16 operands (K-major both: the weights' [n, k] rows and the activations' [m, k] rows).

// The kernel's griddepcontrol instructions (wait, launch_dependents) are compiled in only with
// this.
#define CUTLASS_ENABLE_GDC_FOR_SM90 1

#include <cuda_runtime.h>

#include <cstdint>

#include "collective/builder.hpp"
#include "collective/dispatch_policy_extra.hpp"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "kernel/sm90_gemm_tma_warpspecialized_with_prefetch.hpp"
#include "kernels/linear/cutlass_run.cuh"
#include "kernels/linear/gemm_prefetch.cuh"

namespace griffin::kernels {
namespace {

using namespace cute;  // NOLINT: CUTLASS's shape vocabulary (Shape, _64, ...)

// kTokens: activation rows per block (CUTLASS's N tile: the wgmma's N). 64 output columns per
// block (one consumer warp group's wgmma rows), 128 bytes of K per stage (128-byte swizzled rows:
// 64 bf16 or 128 E4M3 elements). Element: bf16, or E4M3 for W8A8 (the output left unscaled).
template <int kTokens, class ElementT = cutlass::bfloat16_t>
struct PrefetchGemm {
  using Element = ElementT;
  using TileShape = Shape<_64, Int<kTokens>, Int<128 / int(sizeof(Element))>>;
  using ClusterShape = Shape<_1, _1, _1>;        // example 63 supports no larger cluster
  using LayoutW = cutlass::layout::RowMajor;     // CUTLASS A: [n, k], k contiguous
  using LayoutX = cutlass::layout::ColumnMajor;  // CUTLASS B: [k, m] with k contiguous
  using LayoutD = cutlass::layout::ColumnMajor;  // D^T [n, m] column-major = D [m, n] row-major
  using Schedule = cutlass::gemm::KernelTmaWarpSpecializedFP8FastAccumWithPrefetchAndSplitDMA;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, 4, float,
      LayoutD, 4, cutlass::epilogue::TmaWarpSpecialized>::CollectiveOp;

  static constexpr auto kMajorW = cute::GMMA::Major::K;
  static constexpr auto kMajorX = cute::GMMA::Major::K;
  using TiledMma = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, TileShape, kMajorW, kMajorX>(),
      Layout<Shape<_1, _1, _1>>{}));
  using SmemLayoutAtomW =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               kMajorW, Element, decltype(get<0>(TileShape{})), decltype(get<2>(TileShape{}))>());
  using SmemLayoutAtomX =
      decltype(cutlass::gemm::collective::detail::ss_smem_selector<
               kMajorX, Element, decltype(get<1>(TileShape{})), decltype(get<2>(TileShape{}))>());
  static constexpr int kStages =
      cutlass::gemm::collective::detail::compute_stage_count_or_override_prefetch<
          cutlass::gemm::collective::detail::sm90_smem_capacity_bytes, Element, Element, TileShape>(
          cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
              sizeof(typename Epilogue::SharedStorage))>{});
  using Mainloop = cutlass::gemm::collective::CollectiveMma<
      cutlass::gemm::MainloopSm90TmaGmmaWarpSpecializedWithPrefetch<kStages, ClusterShape,
                                                                    Schedule>,
      TileShape, Element, cutlass::gemm::TagToStrideA_t<LayoutW>, Element,
      cutlass::gemm::TagToStrideB_t<LayoutX>, TiledMma, cute::SM90_TMA_LOAD, SmemLayoutAtomW, void,
      cute::identity, cute::SM90_TMA_LOAD, SmemLayoutAtomX, void, cute::identity>;
  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t Run(const void* a, const void* w, float* d, int m, int n, int k,
                         const PrefetchGemmParams& params, cudaStream_t stream) {
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideC = typename Kernel::StrideC;
    using StrideD = typename Kernel::StrideD;
    // Split-K as a batch of k_parts problems over K slices: part p reads columns [p ks, (p + 1)
    // ks) of both operands (the batch stride is the slice's width, the row stride all of k) and
    // writes its own [m][n] block of d.
    const int parts = params.k_parts, ks = k / parts;
    typename Device::Arguments args;
    args.mode = parts == 1 ? cutlass::gemm::GemmUniversalMode::kGemm
                           : cutlass::gemm::GemmUniversalMode::kBatched;
    args.problem_shape = {n, m, ks, parts};
    args.mainloop.ptr_A = static_cast<const Element*>(w);
    args.mainloop.dA = cutlass::make_cute_packed_stride(StrideA{}, make_shape(n, k, 1));
    cute::get<2>(args.mainloop.dA) = ks;
    args.mainloop.ptr_B = static_cast<const Element*>(a);
    args.mainloop.dB = cutlass::make_cute_packed_stride(StrideB{}, make_shape(m, k, 1));
    cute::get<2>(args.mainloop.dB) = ks;
    args.mainloop.overlap_ratio = params.overlap_ratio;
    args.mainloop.prefetch_ratio = -1.0f;  // no L2 prefetch warp (gemm_prefetch.cuh says why)
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = cutlass::make_cute_packed_stride(StrideC{}, make_shape(n, m, parts));
    args.epilogue.ptr_D = d;
    args.epilogue.dD = cutlass::make_cute_packed_stride(StrideD{}, make_shape(n, m, parts));
    return RunCutlassGemm<Device>(args, stream);
  }
};

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The block size for m rows: the smallest of 16, 32, 64 that covers them, else 128.
int RowsPerBlock(const PrefetchGemmParams& params, int m) {
  return params.rows_per_block != 0 ? params.rows_per_block
         : m <= 16                  ? 16
         : m <= 32                  ? 32
         : m <= 64                  ? 64
                                    : 128;
}

}  // namespace

bool PrefetchGemmSupported(int device, int m, int n, int k) {
  return CutlassDeviceInfo::Of(device).sm90() && m >= 1 && n >= 4 && k >= 8 && k % 8 == 0 &&
         n % 4 == 0;
}

cudaError_t LaunchPrefetchGemm(const bf16_t* a, const bf16_t* w, float* d, int m, int n, int k,
                               const PrefetchGemmParams& params, cudaStream_t stream) {
  int device = 0;
  const int parts = params.k_parts;
  if (cudaGetDevice(&device) != cudaSuccess || !PrefetchGemmSupported(device, m, n, k) ||
      !Aligned16(a) || !Aligned16(w) || !Aligned16(d) || parts < 1 || k % parts != 0 ||
      (k / parts) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  switch (RowsPerBlock(params, m)) {
    case 16:
      return PrefetchGemm<16>::Run(a, w, d, m, n, k, params, stream);
    case 32:
      return PrefetchGemm<32>::Run(a, w, d, m, n, k, params, stream);
    case 64:
      return PrefetchGemm<64>::Run(a, w, d, m, n, k, params, stream);
    case 128:
      return PrefetchGemm<128>::Run(a, w, d, m, n, k, params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

bool PrefetchGemmFp8Supported(int device, int m, int n, int k) {
  return CutlassDeviceInfo::Of(device).sm90() && m >= 1 && n >= 4 && k >= 16 && k % 16 == 0 &&
         n % 4 == 0;
}

cudaError_t LaunchPrefetchGemmFp8(const uint8_t* a, const uint8_t* w, float* d, int m, int n, int k,
                                  const PrefetchGemmParams& params, cudaStream_t stream) {
  using E4M3 = cutlass::float_e4m3_t;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || !PrefetchGemmFp8Supported(device, m, n, k) ||
      !Aligned16(a) || !Aligned16(w) || !Aligned16(d) || params.k_parts != 1) {
    return cudaErrorInvalidValue;
  }
  switch (RowsPerBlock(params, m)) {
    case 16:
      return PrefetchGemm<16, E4M3>::Run(a, w, d, m, n, k, params, stream);
    case 32:
      return PrefetchGemm<32, E4M3>::Run(a, w, d, m, n, k, params, stream);
    case 64:
      return PrefetchGemm<64, E4M3>::Run(a, w, d, m, n, k, params, stream);
    default:
      return cudaErrorInvalidValue;  // 128-row blocks are not compiled for FP8
  }
}

}  // namespace griffin::kernels
