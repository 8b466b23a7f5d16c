#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "base/status_macros.h"
#include "engine/griffin_model.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/geglu/geglu_reference.h"
#include "kernels/linear/linear_reference.h"
#include "kernels/norm/norm_reference.h"
#include "kernels/rglru/rglru_reference.h"

namespace griffin::engine {
namespace {

// `device_format` (and `fp8`, a projection FP8 may hold): how the CUDA backend stores the tensor,
// which the emulations reproduce.
absl::StatusOr<std::vector<float>> Widen(const loader::Checkpoint& checkpoint,
                                         const std::string& name, DeviceFormat device_format,
                                         CpuNumerics numerics, bool fp8 = false) {
  const loader::TensorView* view = checkpoint.Find(name);
  if (view == nullptr) return absl::FailedPreconditionError(absl::StrCat("missing tensor ", name));
  std::vector<float> values(static_cast<size_t>(view->num_elements()));
  RETURN_IF_ERROR(loader::CopyToFloat32(*view, absl::MakeSpan(values)));
  if (numerics != CpuNumerics::kFloat32 && device_format == DeviceFormat::kBf16) {
    for (float& v : values) v = RoundToBf16(v);
  }
  if ((numerics == CpuNumerics::kEmulateFp8Weights ||
       numerics == CpuNumerics::kEmulateFp8WeightsAndActivations) &&
      fp8) {
    // [out, in]: the checkpoint's bf16 values, quantized per output row.
    const int out = static_cast<int>(view->shape.front());
    const int in = static_cast<int>(values.size() / std::max(1, out));
    std::vector<float> scales(out);
    ref::QuantizeRowsFp8E4M3(absl::MakeSpan(values), out, in, absl::MakeSpan(scales));
  }
  return values;
}

// Within a head of `head_dim`, scores use q·k · head_dim^-0.5 (exact 1/16 for 256), as the reference.
float AttentionScale(int head_dim) {
  return static_cast<float>(std::pow(static_cast<double>(head_dim), -0.5));
}

}  // namespace

const std::vector<float>& CpuWeights::output_projection() const {
  const std::vector<float>& lm_head = (*this)[ModelTensor::kLmHead];
  return lm_head.empty() ? (*this)[ModelTensor::kEmbedding] : lm_head;
}

absl::StatusOr<CpuWeights> LoadCpuWeights(const loader::Checkpoint& checkpoint,
                                          CpuNumerics numerics) {
  const loader::ModelConfig& c = checkpoint.config();
  RETURN_IF_ERROR(checkpoint.Validate(GriffinTensorSpecs(c)));
  CpuWeights w;
  for (const ModelTensorDef& def : ModelTensorDefs()) {
    if (def.optional && checkpoint.Find(def.name) == nullptr) continue;
    ASSIGN_OR_RETURN(w.tensors[static_cast<int>(def.id)],
                     Widen(checkpoint, def.name, def.device_format, numerics));
  }
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    CpuLayerWeights& lw = w.layers[l];
    lw.type = c.block_types[l];
    for (const LayerTensorDef& def : LayerTensorDefs()) {
      if (!LayerHas(c, l, def)) continue;
      ASSIGN_OR_RETURN(
          lw.tensors[static_cast<int>(def.id)],
          Widen(checkpoint, TensorName(l, def.id), def.device_format, numerics, def.fp8_weights));
    }
  }
  return w;
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const loader::Checkpoint& checkpoint,
                                                               int num_slots,
                                                               CpuNumerics numerics) {
  ASSIGN_OR_RETURN(CpuWeights weights, LoadCpuWeights(checkpoint, numerics));
  return Create(checkpoint.config(), std::move(weights), num_slots, numerics);
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const loader::ModelConfig& config,
                                                               CpuWeights weights, int num_slots,
                                                               CpuNumerics numerics) {
  if (num_slots < 1) return absl::InvalidArgumentError("num_slots must be at least 1");
  if (config.block_types.size() != static_cast<size_t>(config.num_layers) ||
      weights.layers.size() != static_cast<size_t>(config.num_layers)) {
    return absl::FailedPreconditionError("weights do not match the config's layer count");
  }
  return std::unique_ptr<CpuBackend>(
      new CpuBackend(config, std::move(weights), num_slots, numerics));
}

CpuBackend::CpuBackend(const loader::ModelConfig& config, CpuWeights weights, int num_slots,
                       CpuNumerics numerics)
    : config_(config),
      weights_(std::move(weights)),
      numerics_(numerics),
      layout_(StateLayout::ForCpu(config)),
      block_index_(BlockIndices(config)),
      pool_(static_cast<size_t>(num_slots) * layout_.slot_bytes() / sizeof(float), 0.0f),
      next_position_(num_slots, 0) {}

void CpuBackend::Linear(absl::Span<const float> x, absl::Span<const float> w,
                        absl::Span<const float> bias, int T, int in, int out, absl::Span<float> y,
                        bool projection) const {
  if (numerics_ == CpuNumerics::kFloat32) return ref::Linear(x, w, bias, T, in, out, y);
  std::vector<float> rounded(x.begin(), x.end());
  for (float& v : rounded) v = RoundToBf16(v);
  if (numerics_ == CpuNumerics::kEmulateFp8WeightsAndActivations && projection) {
    std::vector<float> scales(T);
    ref::QuantizeRowsFp8E4M3(absl::MakeSpan(rounded), T, in, absl::MakeSpan(scales));
  }
  ref::Linear(rounded, w, bias, T, in, out, y);
}

absl::Span<float> CpuBackend::Region(int slot, int64_t offset, int64_t floats) {
  return absl::MakeSpan(pool_).subspan(
      (static_cast<size_t>(slot) * layout_.slot_bytes() + offset) / sizeof(float), floats);
}

absl::Status CpuBackend::ResetSlot(int slot) {
  if (slot < 0 || slot >= num_slots()) return absl::InvalidArgumentError("slot out of range");
  std::fill_n(Region(slot, 0, layout_.slot_bytes() / sizeof(float)).data(),
              layout_.slot_bytes() / sizeof(float), 0.0f);
  next_position_[slot] = 0;
  return absl::OkStatus();
}

int64_t CpuBackend::NextPosition(int slot) const {
  return slot >= 0 && slot < num_slots() ? next_position_[slot] : -1;
}

absl::Status CpuBackend::CopySlot(int from, int to) {
  if (from < 0 || from >= num_slots() || to < 0 || to >= num_slots()) {
    return absl::InvalidArgumentError("slot out of range");
  }
  if (from == to) return absl::OkStatus();
  const int64_t floats = layout_.slot_bytes() / sizeof(float);
  std::copy_n(Region(from, 0, floats).data(), floats, Region(to, 0, floats).data());
  next_position_[to] = next_position_[from];
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CpuBackend::SnapshotSlot(int slot, absl::Span<uint8_t> out) {
  RETURN_IF_ERROR(ValidateSnapshotBuffer(slot, num_slots(), layout_.slot_bytes(), out.size()));
  std::memcpy(out.data(), Region(slot, 0, layout_.slot_bytes() / sizeof(float)).data(), out.size());
  return next_position_[slot];
}

absl::Status CpuBackend::RestoreSlot(int slot, absl::Span<const uint8_t> snapshot,
                                     int64_t next_position) {
  RETURN_IF_ERROR(ValidateSnapshotBuffer(slot, num_slots(), layout_.slot_bytes(), snapshot.size()));
  if (next_position < 0) return absl::InvalidArgumentError("negative position");
  std::memcpy(Region(slot, 0, layout_.slot_bytes() / sizeof(float)).data(), snapshot.data(),
              snapshot.size());
  next_position_[slot] = next_position;
  return absl::OkStatus();
}

absl::Status CpuBackend::Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) {
  // Everything is checked before any slot changes (the documented post-state of INVALID_ARGUMENT).
  RETURN_IF_ERROR(ValidateStepEntries(entries, num_slots(), config_.vocab_size,
                                      [this](int slot) { return next_position_[slot]; }));
  const int64_t rows = LogitsRows(entries);
  if (static_cast<int64_t>(logits.size()) != rows * config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("logits holds ", logits.size(),
                                                   " floats, the step returns ", rows, " rows of ",
                                                   config_.vocab_size));
  }
  float* out = logits.data();
  for (const StepEntry& e : entries) {
    if (e.position == 0) RETURN_IF_ERROR(ResetSlot(e.slot));
    const bool all = e.logits == LogitsRequest::kAll;
    ForwardEntry(e, all, e.logits == LogitsRequest::kNone ? nullptr : out);
    if (e.logits == LogitsRequest::kLast) out += config_.vocab_size;
    if (all) out += static_cast<int64_t>(e.tokens.size()) * config_.vocab_size;
  }
  return absl::OkStatus();
}

void CpuBackend::Observe(std::string_view name, const std::vector<float>& values, int T,
                         int width) const {
  if (observer_) observer_(name, values, T, width);
}

// The forward pass, top down (SPEC.md §2). Every intermediate is named for dumping.
void CpuBackend::ForwardEntry(const StepEntry& entry, bool all_positions, float* logits) {
  using T_ = LayerTensor;
  const loader::ModelConfig& c = config_;
  const int T = static_cast<int>(entry.tokens.size());
  const int d = c.hidden_size, m = c.mlp_width;
  const int64_t position = entry.position;

  // Embedding, scaled by bf16(sqrt(d)) (SPEC.md §2.1).
  std::vector<float> x(int64_t{T} * d);
  const float scale = EmbeddingScale(c);
  const std::vector<float>& embedding = weights_[ModelTensor::kEmbedding];
  for (int t = 0; t < T; ++t) {
    const float* row = embedding.data() + int64_t{entry.tokens[t]} * d;
    for (int i = 0; i < d; ++i) x[int64_t{t} * d + i] = row[i] * scale;
  }
  Observe("embedding", x, T, d);

  std::vector<float> normed(x.size()), temporal(x.size());
  std::vector<float> gate(int64_t{T} * m), up(int64_t{T} * m), mlp(x.size());
  for (int l = 0; l < c.num_layers; ++l) {
    const CpuLayerWeights& w = weights_.layers[l];
    const std::string prefix = absl::StrCat("layer.", l, ".");
    ref::RmsNorm(x, w[T_::kTemporalNorm], c.rms_norm_eps, T, absl::MakeSpan(normed));
    if (w.type == BlockType::kRecurrent) {
      RecurrentBlock(w, block_index_[l], entry.slot, position, T, normed, temporal);
    } else {
      AttentionBlock(w, block_index_[l], entry.slot, position, T, normed, temporal);
    }
    Observe(prefix + "temporal", temporal, T, d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += temporal[i];

    // GeGLU MLP: down(gelu_tanh(gate(x)) * up(x)) (SPEC.md §2.6).
    ref::RmsNorm(x, w[T_::kChannelNorm], c.rms_norm_eps, T, absl::MakeSpan(normed));
    Linear(normed, w[T_::kGateProj], w[T_::kGateBias], T, d, m, absl::MakeSpan(gate));
    Linear(normed, w[T_::kUpProj], w[T_::kUpBias], T, d, m, absl::MakeSpan(up));
    ref::GeGlu(gate, up, absl::MakeSpan(gate));
    Linear(gate, w[T_::kDownProj], w[T_::kDownBias], T, m, d, absl::MakeSpan(mlp));
    Observe(prefix + "mlp", mlp, T, d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += mlp[i];
    Observe(prefix + "residual", x, T, d);
  }
  next_position_[entry.slot] = position + T;
  if (logits == nullptr) return;

  // Head: final norm, tied (or stored) output projection, tanh soft-cap (SPEC.md §2.7).
  const int first = all_positions ? 0 : T - 1;
  const int rows = T - first;
  std::vector<float> final_normed(int64_t{rows} * d);
  ref::RmsNorm(absl::MakeConstSpan(x).subspan(int64_t{first} * d),
               weights_[ModelTensor::kFinalNorm], c.rms_norm_eps, rows,
               absl::MakeSpan(final_normed));
  Observe("final_norm", final_normed, rows, d);
  absl::Span<float> out(logits, int64_t{rows} * c.vocab_size);
  Linear(final_normed, weights_.output_projection(), {}, rows, d, c.vocab_size, out,
         /*projection=*/false);
  if (c.logits_soft_cap > 0.0f) {
    const float cap = c.logits_soft_cap;
    for (float& v : out) v = std::tanh(v / cap) * cap;
  }
}

void CpuBackend::RecurrentBlock(const CpuLayerWeights& w, int recurrent_index, int slot,
                                int64_t position, int T, const std::vector<float>& normed,
                                std::vector<float>& out) {
  using T_ = LayerTensor;
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, L = c.lru_width, K = c.conv1d_width;
  std::vector<float> y(int64_t{T} * L), xb(int64_t{T} * L), conv(int64_t{T} * L),
      lru(int64_t{T} * L);
  Linear(normed, w[T_::kLinearY], w[T_::kLinearYBias], T, d, L, absl::MakeSpan(y));
  for (float& v : y) v = ref::GeluTanh(v);
  Linear(normed, w[T_::kLinearX], w[T_::kLinearXBias], T, d, L, absl::MakeSpan(xb));
  absl::Span<float> tail = Region(slot, layout_.conv_offset(recurrent_index), int64_t{K - 1} * L);
  ref::Conv1dCausal(xb, w[T_::kConvTaps], w[T_::kConvBias], T, L, K, tail, absl::MakeSpan(conv));
  absl::Span<float> h = Region(slot, layout_.lru_offset(recurrent_index), L);
  ref::RgLru(conv, w[T_::kInputGate], w[T_::kInputGateBias], w[T_::kRecurrentGate],
             w[T_::kRecurrentGateBias], w[T_::kLruParam], T, L, c.num_heads, position, h,
             absl::MakeSpan(lru));
  const std::string prefix = absl::StrCat("recurrent.", recurrent_index, ".");
  Observe(prefix + "conv", conv, T, L);
  Observe(prefix + "rg_lru", lru, T, L);
  for (size_t i = 0; i < lru.size(); ++i) lru[i] *= y[i];
  Linear(lru, w[T_::kLinearOut], w[T_::kLinearOutBias], T, L, d, absl::MakeSpan(out));
}

// Local MQA/GQA attention (SPEC.md §2.5, §8.2): the query at position p sees the keys at positions
// max(0, p - W) .. p, from the slot's ring (earlier runs) and the run itself (ref::LocalAttention);
// the ring is written after every query was served (ref::WriteRing).
void CpuBackend::AttentionBlock(const CpuLayerWeights& w, int attention_index, int slot,
                                int64_t position, int T, const std::vector<float>& normed,
                                std::vector<float>& out) {
  using T_ = LayerTensor;
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  const int W = c.attention_window;
  const int q_width = H * hd, kv_width = KV * hd;
  std::vector<float> q(int64_t{T} * q_width), k(int64_t{T} * kv_width), v(int64_t{T} * kv_width);
  Linear(normed, w[T_::kQProj], {}, T, d, q_width, absl::MakeSpan(q));
  Linear(normed, w[T_::kKProj], {}, T, d, kv_width, absl::MakeSpan(k));
  Linear(normed, w[T_::kVProj], {}, T, d, kv_width, absl::MakeSpan(v));
  for (int t = 0; t < T; ++t) {
    ref::ApplyRope(absl::MakeSpan(q).subspan(int64_t{t} * q_width, q_width), H, hd, c.rotary_dim(),
                   c.rope_theta, position + t);
    ref::ApplyRope(absl::MakeSpan(k).subspan(int64_t{t} * kv_width, kv_width), KV, hd,
                   c.rotary_dim(), c.rope_theta, position + t);
  }
  const int64_t ring_floats = int64_t{W} * kv_width;
  absl::Span<float> ring_k = Region(slot, layout_.key_offset(attention_index), ring_floats);
  absl::Span<float> ring_v = Region(slot, layout_.value_offset(attention_index), ring_floats);
  std::vector<float> encoded(int64_t{T} * q_width);
  ref::LocalAttention<float>(q, k, v, ring_k, ring_v, T, H, KV, hd, W, position, AttentionScale(hd),
                             absl::MakeSpan(encoded));
  ref::WriteRing(k, v, T, kv_width, W, position, ring_k, ring_v);
  Observe(absl::StrCat("attention.", attention_index, ".encoded"), encoded, T, q_width);
  Linear(encoded, w[T_::kOProj], w[T_::kOProjBias], T, q_width, d, absl::MakeSpan(out));
}

}  // namespace griffin::engine
