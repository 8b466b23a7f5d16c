#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/numeric.h"
#include "base/status_macros.h"
#include "engine/cpu_ops.h"
#include "engine/griffin_model.h"

namespace griffin::engine {
namespace {

absl::StatusOr<std::vector<float>> Widen(const loader::Checkpoint& checkpoint,
                                         const std::string& name, CpuNumerics numerics) {
  const loader::TensorView* view = checkpoint.Find(name);
  if (view == nullptr) return absl::FailedPreconditionError(absl::StrCat("missing tensor ", name));
  std::vector<float> values(static_cast<size_t>(view->num_elements()));
  RETURN_IF_ERROR(loader::CopyToFloat32(*view, absl::MakeSpan(values)));
  if (numerics == CpuNumerics::kEmulateBf16Gemm && view->shape.size() >= 2) {
    for (float& v : values) v = RoundToBf16(v);  // matrices are bf16 on the GPU; vectors float32
  }
  return values;
}

// Within a head of `head_dim`, scores use q·k · head_dim^-0.5 (exact 1/16 for 256), as the reference.
float AttentionScale(int head_dim) {
  return static_cast<float>(std::pow(static_cast<double>(head_dim), -0.5));
}

}  // namespace

int64_t LogitsRows(absl::Span<const StepEntry> entries) {
  int64_t rows = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kLast) rows += 1;
    if (e.logits == LogitsRequest::kAll) rows += static_cast<int64_t>(e.tokens.size());
  }
  return rows;
}

absl::StatusOr<CpuWeights> LoadCpuWeights(const loader::Checkpoint& checkpoint,
                                          CpuNumerics numerics) {
  const loader::ModelConfig& c = checkpoint.config();
  RETURN_IF_ERROR(checkpoint.Validate(GriffinTensorSpecs(c)));
  CpuWeights w;
  ASSIGN_OR_RETURN(w.embedding, Widen(checkpoint, "model.embed_tokens.weight", numerics));
  if (checkpoint.Find("lm_head.weight") != nullptr) {
    ASSIGN_OR_RETURN(w.lm_head, Widen(checkpoint, "lm_head.weight", numerics));
  }
  ASSIGN_OR_RETURN(w.final_norm, Widen(checkpoint, "model.final_norm.weight", numerics));
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    CpuLayerWeights& lw = w.layers[l];
    lw.type = c.block_types[l];
    auto get = [&](const std::string& suffix, std::vector<float>& dst) -> absl::Status {
      ASSIGN_OR_RETURN(dst, Widen(checkpoint, LayerTensorName(l, suffix), numerics));
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(get("temporal_pre_norm.weight", lw.temporal_norm));
    RETURN_IF_ERROR(get("channel_pre_norm.weight", lw.channel_norm));
    RETURN_IF_ERROR(get("mlp_block.gate_proj.weight", lw.gate_w));
    RETURN_IF_ERROR(get("mlp_block.gate_proj.bias", lw.gate_b));
    RETURN_IF_ERROR(get("mlp_block.up_proj.weight", lw.up_w));
    RETURN_IF_ERROR(get("mlp_block.up_proj.bias", lw.up_b));
    RETURN_IF_ERROR(get("mlp_block.down_proj.weight", lw.down_w));
    RETURN_IF_ERROR(get("mlp_block.down_proj.bias", lw.down_b));
    if (lw.type == BlockType::kRecurrent) {
      RETURN_IF_ERROR(get("temporal_block.linear_x.weight", lw.x_w));
      RETURN_IF_ERROR(get("temporal_block.linear_x.bias", lw.x_b));
      RETURN_IF_ERROR(get("temporal_block.linear_y.weight", lw.y_w));
      RETURN_IF_ERROR(get("temporal_block.linear_y.bias", lw.y_b));
      RETURN_IF_ERROR(get("temporal_block.linear_out.weight", lw.out_w));
      RETURN_IF_ERROR(get("temporal_block.linear_out.bias", lw.out_b));
      RETURN_IF_ERROR(get("temporal_block.conv_1d.weight", lw.conv_w));
      RETURN_IF_ERROR(get("temporal_block.conv_1d.bias", lw.conv_b));
      RETURN_IF_ERROR(get("temporal_block.rg_lru.recurrent_param", lw.a_param));
      RETURN_IF_ERROR(get("temporal_block.rg_lru.input_gate_weight", lw.input_gate_w));
      RETURN_IF_ERROR(get("temporal_block.rg_lru.input_gate_bias", lw.input_gate_b));
      RETURN_IF_ERROR(get("temporal_block.rg_lru.recurrent_gate_weight", lw.a_gate_w));
      RETURN_IF_ERROR(get("temporal_block.rg_lru.recurrent_gate_bias", lw.a_gate_b));
    } else {
      RETURN_IF_ERROR(get("temporal_block.q_proj.weight", lw.q_w));
      RETURN_IF_ERROR(get("temporal_block.k_proj.weight", lw.k_w));
      RETURN_IF_ERROR(get("temporal_block.v_proj.weight", lw.v_w));
      RETURN_IF_ERROR(get("temporal_block.o_proj.weight", lw.o_w));
      RETURN_IF_ERROR(get("temporal_block.o_proj.bias", lw.o_b));
    }
  }
  return w;
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(
    const loader::Checkpoint& checkpoint, int num_slots, CpuNumerics numerics) {
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
    : config_(config), weights_(std::move(weights)), numerics_(numerics), slots_(num_slots) {
  int recurrent = 0, attention = 0;
  for (BlockType type : config_.block_types) {
    layer_index_.push_back(type == BlockType::kRecurrent ? recurrent++ : attention++);
  }
  const int64_t L = config_.lru_width, K = config_.conv1d_width;
  for (SlotState& slot : slots_) {
    slot.lru.assign(recurrent * L, 0.0f);
    slot.conv.assign(recurrent * (K - 1) * L, 0.0f);
    const int64_t ring = int64_t{attention} * config_.attention_window * config_.num_kv_heads *
                         config_.head_dim;
    slot.keys.assign(ring, 0.0f);
    slot.values.assign(ring, 0.0f);
  }
}

void CpuBackend::Linear(absl::Span<const float> x, absl::Span<const float> w,
                        absl::Span<const float> bias, int T, int in, int out,
                        absl::Span<float> y) const {
  if (numerics_ == CpuNumerics::kFloat32) return cpu::Linear(x, w, bias, T, in, out, y);
  std::vector<float> rounded(x.begin(), x.end());
  for (float& v : rounded) v = RoundToBf16(v);
  cpu::Linear(rounded, w, bias, T, in, out, y);
}

int64_t CpuBackend::state_bytes_per_sequence() const {
  return ComputeStateSize(config_, sizeof(float)).total();
}

void CpuBackend::ZeroSlot(SlotState& slot) {
  std::fill(slot.lru.begin(), slot.lru.end(), 0.0f);
  std::fill(slot.conv.begin(), slot.conv.end(), 0.0f);
  std::fill(slot.keys.begin(), slot.keys.end(), 0.0f);
  std::fill(slot.values.begin(), slot.values.end(), 0.0f);
  slot.next_position = 0;
}

absl::Status CpuBackend::ResetSlot(int slot) {
  if (slot < 0 || slot >= num_slots()) return absl::InvalidArgumentError("slot out of range");
  ZeroSlot(slots_[slot]);
  return absl::OkStatus();
}

int64_t CpuBackend::NextPosition(int slot) const {
  return slot >= 0 && slot < num_slots() ? slots_[slot].next_position : -1;
}

absl::Status CpuBackend::Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) {
  // Everything is checked before any slot changes (the documented post-state of INVALID_ARGUMENT).
  absl::flat_hash_set<int> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const StepEntry& e = entries[i];
    if (e.slot < 0 || e.slot >= num_slots()) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": slot ", e.slot,
                                                     " out of range [0, ", num_slots(), ")"));
    }
    if (!seen.insert(e.slot).second) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": slot ", e.slot,
                                                     " appears twice in one step"));
    }
    if (e.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": no tokens"));
    }
    const int64_t expected = slots_[e.slot].next_position;
    if (e.position != 0 && e.position != expected) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                     " is not slot ", e.slot,
                                                     "'s next position ", expected));
    }
    for (int32_t token : e.tokens) {
      if (token < 0 || token >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": token id ", token,
                                                       " out of range [0, ", config_.vocab_size,
                                                       ")"));
      }
    }
  }
  const int64_t rows = LogitsRows(entries);
  if (static_cast<int64_t>(logits.size()) != rows * config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("logits holds ", logits.size(),
                                                   " floats, the step returns ", rows, " rows of ",
                                                   config_.vocab_size));
  }
  float* out = logits.data();
  for (const StepEntry& e : entries) {
    if (e.position == 0) ZeroSlot(slots_[e.slot]);
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
  const loader::ModelConfig& c = config_;
  const int T = static_cast<int>(entry.tokens.size());
  const int d = c.hidden_size, m = c.mlp_width;
  SlotState& slot = slots_[entry.slot];
  const int64_t position = entry.position;

  // Embedding, scaled by bf16(sqrt(d)) (SPEC.md §2.1).
  std::vector<float> x(int64_t{T} * d);
  const float scale = EmbeddingScale(c);
  for (int t = 0; t < T; ++t) {
    const float* row = weights_.embedding.data() + int64_t{entry.tokens[t]} * d;
    for (int i = 0; i < d; ++i) x[int64_t{t} * d + i] = row[i] * scale;
  }
  Observe("embedding", x, T, d);

  std::vector<float> normed(x.size()), temporal(x.size());
  std::vector<float> gate(int64_t{T} * m), up(int64_t{T} * m), mlp(x.size());
  for (int l = 0; l < c.num_layers; ++l) {
    const CpuLayerWeights& w = weights_.layers[l];
    const std::string prefix = absl::StrCat("layer.", l, ".");
    cpu::RmsNorm(x, w.temporal_norm, c.rms_norm_eps, T, absl::MakeSpan(normed));
    if (w.type == BlockType::kRecurrent) {
      RecurrentBlock(w, layer_index_[l], slot, position, T, normed, temporal);
    } else {
      AttentionBlock(w, layer_index_[l], slot, position, T, normed, temporal);
    }
    Observe(prefix + "temporal", temporal, T, d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += temporal[i];

    // GeGLU MLP: down(gelu_tanh(gate(x)) * up(x)) (SPEC.md §2.6).
    cpu::RmsNorm(x, w.channel_norm, c.rms_norm_eps, T, absl::MakeSpan(normed));
    Linear(normed, w.gate_w, w.gate_b, T, d, m, absl::MakeSpan(gate));
    Linear(normed, w.up_w, w.up_b, T, d, m, absl::MakeSpan(up));
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = cpu::GeluTanh(gate[i]) * up[i];
    Linear(gate, w.down_w, w.down_b, T, m, d, absl::MakeSpan(mlp));
    Observe(prefix + "mlp", mlp, T, d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += mlp[i];
    Observe(prefix + "residual", x, T, d);
  }
  slot.next_position = position + T;
  if (logits == nullptr) return;

  // Head: final norm, tied (or stored) output projection, tanh soft-cap (SPEC.md §2.7).
  const int first = all_positions ? 0 : T - 1;
  const int rows = T - first;
  std::vector<float> final_normed(int64_t{rows} * d);
  cpu::RmsNorm(absl::MakeConstSpan(x).subspan(int64_t{first} * d), weights_.final_norm,
               c.rms_norm_eps, rows, absl::MakeSpan(final_normed));
  Observe("final_norm", final_normed, rows, d);
  const std::vector<float>& head = weights_.lm_head.empty() ? weights_.embedding : weights_.lm_head;
  absl::Span<float> out(logits, int64_t{rows} * c.vocab_size);
  Linear(final_normed, head, {}, rows, d, c.vocab_size, out);
  if (c.logits_soft_cap > 0.0f) {
    const float cap = c.logits_soft_cap;
    for (float& v : out) v = std::tanh(v / cap) * cap;
  }
}

void CpuBackend::RecurrentBlock(const CpuLayerWeights& w, int recurrent_index, SlotState& slot,
                                int64_t position, int T, const std::vector<float>& normed,
                                std::vector<float>& out) {
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, L = c.lru_width, K = c.conv1d_width;
  std::vector<float> y(int64_t{T} * L), xb(int64_t{T} * L), conv(int64_t{T} * L),
      lru(int64_t{T} * L);
  Linear(normed, w.y_w, w.y_b, T, d, L, absl::MakeSpan(y));
  for (float& v : y) v = cpu::GeluTanh(v);
  Linear(normed, w.x_w, w.x_b, T, d, L, absl::MakeSpan(xb));
  absl::Span<float> tail =
      absl::MakeSpan(slot.conv).subspan(int64_t{recurrent_index} * (K - 1) * L, int64_t{K - 1} * L);
  cpu::Conv1dCausal(xb, w.conv_w, w.conv_b, T, L, K, tail, absl::MakeSpan(conv));
  absl::Span<float> h = absl::MakeSpan(slot.lru).subspan(int64_t{recurrent_index} * L, L);
  cpu::RgLru(conv, w.input_gate_w, w.input_gate_b, w.a_gate_w, w.a_gate_b, w.a_param, T, L,
             c.num_heads, position, h, absl::MakeSpan(lru));
  const std::string prefix = absl::StrCat("recurrent.", recurrent_index, ".");
  Observe(prefix + "conv", conv, T, L);
  Observe(prefix + "rg_lru", lru, T, L);
  for (size_t i = 0; i < lru.size(); ++i) lru[i] *= y[i];
  Linear(lru, w.out_w, w.out_b, T, L, d, absl::MakeSpan(out));
}

// Local MQA/GQA attention (SPEC.md §2.5, §8.2): the query at position p sees the keys at positions
// max(0, p - W) .. p. Keys of earlier runs come from the slot's ring (slot j mod W holds position j),
// keys of this run from the run itself; the ring is written only after every query has been served,
// so a run longer than the window never reads a key it has already overwritten.
void CpuBackend::AttentionBlock(const CpuLayerWeights& w, int attention_index, SlotState& slot,
                                int64_t position, int T, const std::vector<float>& normed,
                                std::vector<float>& out) {
  const loader::ModelConfig& c = config_;
  const int d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  const int W = c.attention_window;
  const int q_width = H * hd, kv_width = KV * hd, group = H / KV;
  std::vector<float> q(int64_t{T} * q_width), k(int64_t{T} * kv_width), v(int64_t{T} * kv_width);
  Linear(normed, w.q_w, {}, T, d, q_width, absl::MakeSpan(q));
  Linear(normed, w.k_w, {}, T, d, kv_width, absl::MakeSpan(k));
  Linear(normed, w.v_w, {}, T, d, kv_width, absl::MakeSpan(v));
  for (int t = 0; t < T; ++t) {
    cpu::ApplyRope(absl::MakeSpan(q).subspan(int64_t{t} * q_width, q_width), H, hd, c.rotary_dim(),
                   c.rope_theta, position + t);
    cpu::ApplyRope(absl::MakeSpan(k).subspan(int64_t{t} * kv_width, kv_width), KV, hd,
                   c.rotary_dim(), c.rope_theta, position + t);
  }
  const int64_t ring_stride = int64_t{W} * kv_width;
  float* ring_k = slot.keys.data() + attention_index * ring_stride;
  float* ring_v = slot.values.data() + attention_index * ring_stride;
  auto key_at = [&](int64_t pos, const std::vector<float>& run, float* ring) -> const float* {
    if (pos >= position) return run.data() + (pos - position) * kv_width;
    return ring + (pos % W) * kv_width;
  };

  const float scale = AttentionScale(hd);
  std::vector<float> encoded(int64_t{T} * q_width);
  std::vector<float> scores(W + 1);
  for (int t = 0; t < T; ++t) {
    const int64_t qpos = position + t;
    const int64_t first = std::max<int64_t>(0, qpos - W);
    const int n = static_cast<int>(qpos - first + 1);
    for (int h = 0; h < H; ++h) {
      const float* qh = q.data() + int64_t{t} * q_width + int64_t{h} * hd;
      const int g = h / group;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < n; ++j) {
        const float* kh = key_at(first + j, k, ring_k) + int64_t{g} * hd;
        float dot = 0.0f;
        for (int i = 0; i < hd; ++i) dot += qh[i] * kh[i];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* dst = encoded.data() + int64_t{t} * q_width + int64_t{h} * hd;
      std::fill(dst, dst + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const float p = scores[j] / sum;
        const float* vh = key_at(first + j, v, ring_v) + int64_t{g} * hd;
        for (int i = 0; i < hd; ++i) dst[i] += p * vh[i];
      }
    }
  }
  // Only the last W keys of the run can still be seen by later queries.
  for (int t = std::max(0, T - W); t < T; ++t) {
    const int64_t slot_index = (position + t) % W;
    std::copy_n(k.data() + int64_t{t} * kv_width, kv_width, ring_k + slot_index * kv_width);
    std::copy_n(v.data() + int64_t{t} * kv_width, kv_width, ring_v + slot_index * kv_width);
  }
  Observe(absl::StrCat("attention.", attention_index, ".encoded"), encoded, T, q_width);
  Linear(encoded, w.o_w, w.o_b, T, q_width, d, absl::MakeSpan(out));
}

}  // namespace griffin::engine
