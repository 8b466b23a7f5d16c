#include "engine/cuda_weights.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/cuda_status.h"
#include "base/status_macros.h"
#include "kernels/linear/fp8_weights.cuh"
#include "kernels/random_init/random_init.cuh"
#include "kernels/rglru/rglru.cuh"

namespace griffin::engine {

namespace {

constexpr int64_t kAlign = 256;
int64_t AlignUp(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t DeviceBytes(DeviceFormat format, int64_t elements) {
  return elements * (format == DeviceFormat::kBf16 ? 2 : 4);
}

// A load-time device buffer (the bf16 matrix an FP8 projection is quantized from).
class DeviceScratch {
 public:
  ~DeviceScratch() {
    if (p_ != nullptr) cudaFree(p_);
  }
  absl::StatusOr<kernels::bf16_t*> Get(int64_t elements) {
    if (p_ == nullptr) CUDA_RETURN_IF_ERROR(cudaMalloc(&p_, elements * 2));
    return static_cast<kernels::bf16_t*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// The largest projection that loads as FP8, in elements (what DeviceScratch must hold).
int64_t LargestFp8Member(const ModelConfig& c) {
  int64_t largest = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (def.fp8_weights && LayerHas(c, l, def))
        largest = std::max(largest, Elements(def.shape(c)));
    }
  }
  return largest;
}

// Pinned host memory in two halves used in turn: while one half's copy to the device runs, the
// next chunk is converted into the other.
class Stager {
 public:
  ~Stager() {
    for (cudaEvent_t& e : done_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (host_ != nullptr) cudaFreeHost(host_);
  }
  absl::Status Init(int64_t bytes) {
    half_bytes_ = std::max<int64_t>(bytes / 2, 1 << 20) / 16 * 16;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&host_, 2 * half_bytes_));
    for (cudaEvent_t& e : done_)
      CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return absl::OkStatus();
  }

  // Copies `view` to `dst` in `format`, chunk by chunk.
  absl::Status Copy(const loader::TensorView& view, DeviceFormat format, void* dst,
                    cudaStream_t stream) {
    const int64_t elements = view.num_elements();
    const int64_t dst_size = format == DeviceFormat::kBf16 ? 2 : 4;
    const int64_t src_size = static_cast<int64_t>(loader::DTypeSize(view.dtype));
    const int64_t per_chunk = half_bytes_ / std::max<int64_t>(4, dst_size);
    std::vector<float> wide;
    for (int64_t first = 0; first < elements; first += per_chunk) {
      const int64_t count = std::min(per_chunk, elements - first);
      uint8_t* buffer = static_cast<uint8_t*>(host_) + current_ * half_bytes_;
      CUDA_RETURN_IF_ERROR(cudaEventSynchronize(done_[current_]));  // its last copy is done
      const uint8_t* src = view.data + first * src_size;
      const bool same = (format == DeviceFormat::kBf16 && view.dtype == loader::DType::kBF16) ||
                        (format == DeviceFormat::kFloat32 && view.dtype == loader::DType::kF32);
      if (same) {
        std::memcpy(buffer, src, count * dst_size);
      } else {
        // Through float32: widening is exact; bf16 narrowing rounds to nearest even, as the
        // float32 CPU reference's bf16 emulation does.
        loader::TensorView chunk{
            view.name, view.dtype, {count}, src, static_cast<size_t>(count * src_size)};
        wide.resize(count);
        RETURN_IF_ERROR(loader::CopyToFloat32(chunk, absl::MakeSpan(wide)));
        if (format == DeviceFormat::kFloat32) {
          std::memcpy(buffer, wide.data(), count * 4);
        } else {
          auto* out = reinterpret_cast<kernels::bf16_t*>(buffer);
          for (int64_t i = 0; i < count; ++i) out[i] = kernels::HostToBf16(wide[i]);
        }
      }
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + first * dst_size, buffer,
                                           count * dst_size, cudaMemcpyHostToDevice, stream));
      CUDA_RETURN_IF_ERROR(cudaEventRecord(done_[current_], stream));
      current_ ^= 1;
    }
    return absl::OkStatus();
  }

 private:
  void* host_ = nullptr;
  int64_t half_bytes_ = 0;
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int current_ = 0;
};

}  // namespace

DeviceArena::~DeviceArena() {
  for (void* p : blocks_) cudaFree(p);
}

absl::StatusOr<void*> DeviceArena::Allocate(int64_t bytes) {
  const int64_t size = AlignUp(std::max<int64_t>(bytes, 1));
  void* p = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&p, size));
  blocks_.push_back(p);
  bytes_ += size;
  CUDA_RETURN_IF_ERROR(cudaMemset(p, 0, size));
  return p;
}

absl::Status DeviceWeights::Allocate(const ModelConfig& c, bool with_lm_head,
                                     bool fp8_projections) {
  config_ = c;
  fp8_projections_ = fp8_projections;
  auto model_tensor = [&](ModelTensor id, auto** out) -> absl::Status {
    const ModelTensorDef& def = Def(id);
    ASSIGN_OR_RETURN(void* p,
                     arena_.Allocate(DeviceBytes(def.device_format, Elements(def.shape(c)))));
    *out = static_cast<std::remove_pointer_t<decltype(out)>>(p);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(model_tensor(ModelTensor::kEmbedding, &embedding_));
  if (with_lm_head) RETURN_IF_ERROR(model_tensor(ModelTensor::kLmHead, &lm_head_));
  RETURN_IF_ERROR(model_tensor(ModelTensor::kFinalNorm, &final_norm_));

  // FP8 codes take a byte per weight; their row scales sit in a second allocation per group.
  auto bytes_of = [&](const LayerTensorDef& def) {
    const int64_t elements = Elements(def.shape(c));
    return Fp8(def) ? elements : DeviceBytes(def.device_format, elements);
  };
  auto rows_of = [&](const LayerTensorDef& def) { return def.shape(c).front(); };
  layers_.assign(c.num_layers, Layer{});
  for (int l = 0; l < c.num_layers; ++l) {
    Layer& layer = layers_[l];
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (!LayerHas(c, l, def) || layer.tensor[static_cast<int>(def.id)] != nullptr) continue;
      std::vector<LayerTensor> members = {def.id};
      if (def.fusion != Fusion::kNone) members = FusionMembers(def.fusion);  // the whole group
      int64_t group_bytes = 0, group_rows = 0, group_elements = 0;
      for (LayerTensor m : members) {
        group_bytes += bytes_of(Def(m));
        group_rows += rows_of(Def(m));
        group_elements += Elements(Def(m).shape(c));
      }
      ASSIGN_OR_RETURN(void* group, arena_.Allocate(group_bytes));
      float* group_scales = nullptr;
      if (Fp8(def)) {
        ASSIGN_OR_RETURN(group_scales, arena_.Allocate<float>(group_rows));
        largest_projection_elements_ = std::max(largest_projection_elements_, group_elements);
      }
      int64_t offset = 0, row = 0;
      for (LayerTensor m : members) {
        layer.tensor[static_cast<int>(m)] = static_cast<uint8_t*>(group) + offset;
        if (group_scales != nullptr) layer.scales[static_cast<int>(m)] = group_scales + row;
        offset += bytes_of(Def(m));
        row += rows_of(Def(m));
      }
    }
    if (c.block_types[l] == BlockType::kRecurrent) {
      const int64_t block = c.lru_width / c.num_heads;
      ASSIGN_OR_RETURN(layer.packed_gates,
                       arena_.Allocate<uint16_t>(int64_t{2} * c.num_heads * block * block));
    }
  }
  return absl::OkStatus();
}

absl::Status DeviceWeights::PackGates(cudaStream_t stream) {
  const int block = config_.lru_width / config_.num_heads;
  for (int l = 0; l < config_.num_layers; ++l) {
    if (config_.block_types[l] != BlockType::kRecurrent) continue;
    CUDA_RETURN_IF_ERROR(kernels::LaunchPackGateWeights(
        bf16(l, LayerTensor::kInputGate), bf16(l, LayerTensor::kRecurrentGate), config_.num_heads,
        block, layers_[l].packed_gates, stream));
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckFp8Shapes(const ModelConfig& c) {
  for (const LayerTensorDef& def : LayerTensorDefs()) {
    if (!def.fp8_weights) continue;
    for (int l = 0; l < c.num_layers; ++l) {
      if (!LayerHas(c, l, def)) continue;
      if (def.shape(c).back() % 16 != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--quantization fp8 needs every projection's input width to be a multiple of 16; ",
            TensorName(l, def.id), " has ", def.shape(c).back()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::Upload(
    const loader::Checkpoint& checkpoint, cudaStream_t stream, bool fp8_projections,
    int64_t staging_bytes) {
  const ModelConfig& c = checkpoint.config();
  RETURN_IF_ERROR(checkpoint.Validate(GriffinTensorSpecs(c)));
  if (fp8_projections) RETURN_IF_ERROR(CheckFp8Shapes(c));
  std::unique_ptr<DeviceWeights> w(new DeviceWeights());
  const bool with_lm_head = checkpoint.Find(Def(ModelTensor::kLmHead).name) != nullptr;
  RETURN_IF_ERROR(w->Allocate(c, with_lm_head, fp8_projections));
  DeviceScratch scratch;
  const int64_t scratch_elements = fp8_projections ? LargestFp8Member(c) : 0;
  Stager stager;
  RETURN_IF_ERROR(stager.Init(staging_bytes));
  auto copy = [&](const std::string& name, DeviceFormat format, void* dst) -> absl::Status {
    const loader::TensorView* view = checkpoint.Find(name);
    if (view == nullptr)
      return absl::FailedPreconditionError(absl::StrCat("missing tensor ", name));
    return stager.Copy(*view, format, dst, stream);
  };
  RETURN_IF_ERROR(copy(Def(ModelTensor::kEmbedding).name, DeviceFormat::kBf16, w->embedding_));
  if (with_lm_head) {
    RETURN_IF_ERROR(copy(Def(ModelTensor::kLmHead).name, DeviceFormat::kBf16, w->lm_head_));
  }
  RETURN_IF_ERROR(copy(Def(ModelTensor::kFinalNorm).name, DeviceFormat::kFloat32, w->final_norm_));
  for (int l = 0; l < c.num_layers; ++l) {
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (!LayerHas(c, l, def)) continue;
      void* dst = w->layers_[l].tensor[static_cast<int>(def.id)];
      if (!w->Fp8(def)) {
        RETURN_IF_ERROR(copy(TensorName(l, def.id), def.device_format, dst));
        continue;
      }
      // bf16 into the scratch, then quantized into place (stream order keeps the scratch's next
      // copy behind this kernel).
      ASSIGN_OR_RETURN(kernels::bf16_t * bf16, scratch.Get(scratch_elements));
      RETURN_IF_ERROR(copy(TensorName(l, def.id), DeviceFormat::kBf16, bf16));
      const std::vector<int64_t> shape = def.shape(c);
      CUDA_RETURN_IF_ERROR(kernels::LaunchQuantizeRowsFp8E4M3(
          bf16, static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<uint8_t*>(dst),
          w->layers_[l].scales[static_cast<int>(def.id)], stream));
    }
  }
  RETURN_IF_ERROR(w->PackGates(stream));
  // The stager's pinned buffer and the scratch are freed on return: every use must be done.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return w;
}

absl::StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::Random(const ModelConfig& c,
                                                                     uint64_t seed,
                                                                     cudaStream_t stream,
                                                                     bool fp8_projections) {
  if (fp8_projections) RETURN_IF_ERROR(CheckFp8Shapes(c));
  std::unique_ptr<DeviceWeights> w(new DeviceWeights());
  RETURN_IF_ERROR(w->Allocate(c, /*with_lm_head=*/false, fp8_projections));
  DeviceScratch scratch;
  const int64_t scratch_elements = fp8_projections ? LargestFp8Member(c) : 0;
  uint64_t stream_id = seed * 1000003;
  auto fill = [&](TensorKind kind, const std::vector<int64_t>& shape, DeviceFormat format,
                  void* dst) -> absl::Status {
    const InitDistribution init = RandomInit(kind, shape, c);
    const int64_t n = Elements(shape);
    if (format == DeviceFormat::kBf16) {
      CUDA_RETURN_IF_ERROR(kernels::LaunchFillRandomBf16(
          static_cast<kernels::bf16_t*>(dst), n, ++stream_id, init.stddev, init.mean, stream));
    } else {
      CUDA_RETURN_IF_ERROR(kernels::LaunchFillRandomF32(static_cast<float*>(dst), n, ++stream_id,
                                                        init.stddev, init.mean, stream));
    }
    return absl::OkStatus();
  };
  for (const ModelTensorDef& def : ModelTensorDefs()) {
    if (def.optional) continue;
    void* dst = def.id == ModelTensor::kEmbedding ? static_cast<void*>(w->embedding_)
                                                  : static_cast<void*>(w->final_norm_);
    RETURN_IF_ERROR(fill(def.kind, def.shape(c), def.device_format, dst));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (!LayerHas(c, l, def)) continue;
      void* dst = w->layers_[l].tensor[static_cast<int>(def.id)];
      if (!w->Fp8(def)) {
        RETURN_IF_ERROR(fill(def.kind, def.shape(c), def.device_format, dst));
        continue;
      }
      ASSIGN_OR_RETURN(kernels::bf16_t * bf16, scratch.Get(scratch_elements));
      const std::vector<int64_t> shape = def.shape(c);
      RETURN_IF_ERROR(fill(def.kind, shape, DeviceFormat::kBf16, bf16));
      CUDA_RETURN_IF_ERROR(kernels::LaunchQuantizeRowsFp8E4M3(
          bf16, static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<uint8_t*>(dst),
          w->layers_[l].scales[static_cast<int>(def.id)], stream));
    }
  }
  RETURN_IF_ERROR(w->PackGates(stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return w;
}

}  // namespace griffin::engine
