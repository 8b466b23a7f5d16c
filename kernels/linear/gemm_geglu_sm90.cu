// See gemm_geglu.cuh. Compiled for sm_90a only, with CUTLASS's headers (kernels/CMakeLists.txt);
// builds without either compile gemm_geglu_none.cc instead.
//
// Written with CUTLASS rather than by hand: its TMA warp-specialized wgmma mainloop is what the
// GEMM needs to stay at the tensor cores' rate (cuBLASLt's kernel for the fused gate|up GEMM runs
// at 1.09x its FLOP floor, PROFILE.md), and its epilogue visitor tree composes the bias, GeGLU
// and the product with a second matrix, which no cuBLASLt epilogue offers.

// The kernel waits on the previous grid (griddepcontrol.wait) before its first load, so it may
// be launched with programmatic dependent launch like every other kernel of a step.
#define CUTLASS_ENABLE_GDC_FOR_SM90 1

#include <cuda_runtime.h>

#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "kernels/common.cuh"
#include "kernels/linear/cutlass_run.cuh"
#include "kernels/linear/gemm_geglu.cuh"

namespace griffin::kernels {
namespace {

using namespace cute;  // NOLINT: CUTLASS's shape vocabulary (Shape, _128, ...)
namespace fusion = cutlass::epilogue::fusion;

// gelu_tanh on an epilogue fragment, with the same device function as kernels/geglu (CUTLASS's
// GELU_taylor uses a different tanh, which would move the outputs by an ulp here and there).
template <class T>
struct GeluTanhOp {
  CUTLASS_DEVICE T operator()(T x) const { return GeluTanh(x); }
};
template <class T, int N>
struct GeluTanhOp<cutlass::Array<T, N>> {
  CUTLASS_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& x) const {
    cutlass::Array<T, N> y;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = GeluTanh(x[i]);
    return y;
  }
};

constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// UpT: the up projection's element, float (as the fused gate|up GEMM writes it) or bf16 (half
// the bytes: cuBLASLt rounds it once, Gemm::RunBf16Out).
template <class TileShape, class ClusterShape, class MainloopSchedule, class EpilogueSchedule,
          class UpT>
struct GeGluGemm {
  // The bias vectors, one value per output column, broadcast down the rows.
  using ColumnBias = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>>;
  // gelu(acc + b_gate)
  using Gate =
      fusion::Sm90EVT<fusion::Sm90Compute<GeluTanhOp, float, float, kRound>,
                      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, float, float, kRound>,
                                      fusion::Sm90AccFetch, ColumnBias>>;
  // up + b_up, up read as the epilogue's source matrix C (converted to float first)
  using Up = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, float, float, kRound>,
                             fusion::Sm90SrcFetch<UpT>, ColumnBias>;
  // bf16(gate * up)
  using Tree =
      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, cutlass::bfloat16_t, float, kRound>,
                      Gate, Up>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, UpT, cutlass::layout::RowMajor,
      16 / sizeof(UpT), cutlass::bfloat16_t, cutlass::layout::RowMajor, 8, EpilogueSchedule,
      Tree>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::bfloat16_t,
      cutlass::layout::RowMajor, 8, cutlass::bfloat16_t, cutlass::layout::ColumnMajor, 8, float,
      TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t Run(const bf16_t* x, const bf16_t* w_gate, const float* b_gate,
                         const void* up_data, const float* b_up, int n, int m, int k, bf16_t* out,
                         int device, int sm_count, cudaStream_t stream) {
    const auto* up = static_cast<const UpT*>(up_data);
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideC = typename Kernel::StrideC;
    using StrideD = typename Kernel::StrideD;
    const auto* a = reinterpret_cast<const cutlass::bfloat16_t*>(x);
    const auto* b = reinterpret_cast<const cutlass::bfloat16_t*>(w_gate);
    auto* d = reinterpret_cast<cutlass::bfloat16_t*>(out);

    typename Device::Arguments args;
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {n, m, k, 1};
    args.mainloop.ptr_A = a;
    args.mainloop.dA = cutlass::make_cute_packed_stride(StrideA{}, make_shape(n, k, 1));
    args.mainloop.ptr_B = b;
    args.mainloop.dB = cutlass::make_cute_packed_stride(StrideB{}, make_shape(m, k, 1));
    args.epilogue.ptr_C = up;
    args.epilogue.dC = cutlass::make_cute_packed_stride(StrideC{}, make_shape(n, m, 1));
    args.epilogue.ptr_D = d;
    args.epilogue.dD = cutlass::make_cute_packed_stride(StrideD{}, make_shape(n, m, 1));
    // Tree arguments, children first: {{{acc}, {b_gate}, {+}}, {gelu}}, {{C}, {b_up}, {+}}, {*}.
    args.epilogue.thread = {
        {{{}, {b_gate, 0.0f, {}}, {}}, {}},
        {{}, {b_up, 0.0f, {}}, {}},
        {},
    };
    args.hw_info.device_id = device;
    args.hw_info.sm_count = sm_count;

    return RunCutlassGemm<Device>(args, stream);
  }
};

using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingpongEpilogue = cutlass::epilogue::TmaWarpSpecialized;

// Ping-pong: each warp group owns a whole tile, so one group's epilogue (which reads the up
// projection's float32 tile) runs beside the other's math. Measured (kernels_bench, session 17,
// the up GEMM + this kernel at 2048 rows, against ping-pong 128 x 128): cooperative 128 x 256
// 1.32x and 256 x 128 1.11x the time (their epilogue stalls both groups), ping-pong 64 x 256
// 1.28x.
template <class UpT>
using Pingpong128x128 =
    GeGluGemm<Shape<_128, _128, _64>, Shape<_1, _1, _1>, Pingpong, PingpongEpilogue, UpT>;
template <class UpT>
using Pingpong128x128M2 =
    GeGluGemm<Shape<_128, _128, _64>, Shape<_2, _1, _1>, Pingpong, PingpongEpilogue, UpT>;
template <class UpT>
using Pingpong128x128N2 =
    GeGluGemm<Shape<_128, _128, _64>, Shape<_1, _2, _1>, Pingpong, PingpongEpilogue, UpT>;

}  // namespace

bool GemmGeGluSupported(int device, int n, int m, int k) {
  return CutlassDeviceInfo::Of(device).sm90() && n > 0 && m > 0 && k > 0 && m % 8 == 0 &&
         k % 8 == 0;
}

namespace {
template <class UpT>
cudaError_t LaunchWithUp(const bf16_t* x, const bf16_t* w_gate, const float* b_gate, const UpT* up,
                         const float* b_up, int n, int m, int k, bf16_t* out, cudaStream_t stream,
                         GemmGeGluConfig config) {
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (!GemmGeGluSupported(device, n, m, k) ||
      !GemmGeGluAligned({x, w_gate, b_gate, up, b_up, out})) {
    return cudaErrorNotSupported;
  }
  using Up = std::conditional_t<std::is_same_v<UpT, float>, float, cutlass::bfloat16_t>;
  const int sms = CutlassDeviceInfo::Of(device).sm_count;
  switch (config) {
    case GemmGeGluConfig::kPingpong128x128:
      return Pingpong128x128<Up>::Run(x, w_gate, b_gate, up, b_up, n, m, k, out, device, sms,
                                      stream);
    case GemmGeGluConfig::kPingpong128x128M2:
      return Pingpong128x128M2<Up>::Run(x, w_gate, b_gate, up, b_up, n, m, k, out, device, sms,
                                        stream);
    case GemmGeGluConfig::kPingpong128x128N2:
      return Pingpong128x128N2<Up>::Run(x, w_gate, b_gate, up, b_up, n, m, k, out, device, sms,
                                        stream);
  }
  return cudaErrorInvalidValue;
}
}  // namespace

cudaError_t LaunchGemmGeGlu(const bf16_t* x, const bf16_t* w_gate, const float* b_gate,
                            const float* up, const float* b_up, int n, int m, int k, bf16_t* out,
                            cudaStream_t stream, GemmGeGluConfig config) {
  return LaunchWithUp(x, w_gate, b_gate, up, b_up, n, m, k, out, stream, config);
}

cudaError_t LaunchGemmGeGlu(const bf16_t* x, const bf16_t* w_gate, const float* b_gate,
                            const bf16_t* up, const float* b_up, int n, int m, int k, bf16_t* out,
                            cudaStream_t stream, GemmGeGluConfig config) {
  return LaunchWithUp(x, w_gate, b_gate, up, b_up, n, m, k, out, stream, config);
}

}  // namespace griffin::kernels
