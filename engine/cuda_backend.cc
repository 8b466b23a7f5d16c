// The CUDA backend. The forward pass (EnqueueForward) follows CpuBackend::ForwardEntry layer by
// layer; every kernel it launches is in kernels/ with its math in the header comment.
#include "engine/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/cpu_backend.h"
#include "engine/griffin_model.h"
#include "kernels/attention.cuh"
#include "kernels/geglu.cuh"
#include "kernels/gemm.h"
#include "kernels/gemv.cuh"
#include "kernels/logits.cuh"
#include "kernels/random_init.cuh"
#include "kernels/rglru.cuh"
#include "kernels/rmsnorm.cuh"

namespace griffin::engine {
namespace {

using kernels::bf16_t;

absl::Status CudaError(cudaError_t err, const char* file, int line) {
  return absl::InternalError(absl::StrCat("CUDA error at ", file, ":", line, ": ",
                                          std::string(cudaGetErrorString(err))));
}

#define CUDA_RETURN(expr)                                              \
  do {                                                                 \
    const cudaError_t griffin_cuda_err_ = (expr);                      \
    if (griffin_cuda_err_ != cudaSuccess) {                            \
      return CudaError(griffin_cuda_err_, __FILE__, __LINE__);         \
    }                                                                  \
  } while (0)

#define GEMM_RETURN(expr)                                                              \
  do {                                                                                 \
    const std::string griffin_gemm_err_ = (expr);                                      \
    if (!griffin_gemm_err_.empty()) {                                                  \
      return absl::InternalError(absl::StrCat(__FILE__, ":", __LINE__, ": ", griffin_gemm_err_)); \
    }                                                                                  \
  } while (0)

constexpr int64_t kAlign = 256;
int64_t AlignUp(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
constexpr int kNumSms = 132;
constexpr int kMaxSplits = 64;
constexpr int kSplitTokens = 2 * kNumSms;  // decode batches below this split attention keys
constexpr size_t kGemmWorkspace = 64 << 20;

struct LayerWeights {
  BlockType type = BlockType::kRecurrent;
  float *temporal_norm = nullptr, *channel_norm = nullptr;
  bf16_t *w_gu = nullptr, *w_down = nullptr;
  float *gate_b = nullptr, *up_b = nullptr, *down_b = nullptr;
  // Recurrent.
  bf16_t *w_xy = nullptr, *w_out = nullptr, *gx_w = nullptr, *ga_w = nullptr;
  uint16_t* gates_t = nullptr;  // [H, 2B, B] half: both gates transposed, the prefill GEMM's
  float *bx = nullptr, *by = nullptr, *out_b = nullptr, *conv_w = nullptr, *conv_b = nullptr;
  float *gx_b = nullptr, *ga_b = nullptr, *a_param = nullptr;
  // Attention.
  bf16_t *w_qkv = nullptr, *w_o = nullptr;
  float* o_b = nullptr;
};

}  // namespace

bool CudaDeviceAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

absl::Status CudaCanImplement(const loader::ModelConfig& c) {
  auto fail = [](const char* why) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA backend: ", std::string(why)));
  };
  if (c.hidden_size <= 0 || c.vocab_size <= 0 || c.num_layers <= 0) return fail("empty model");
  if (c.num_recurrent_layers() > 0) {
    const char* why = kernels::CanImplementRgLru(c.lru_width, c.num_heads, c.conv1d_width);
    if (*why) return fail(why);
  }
  if (c.num_attention_layers() > 0) {
    const char* why =
        kernels::CanImplementAttention(c.num_heads, c.num_kv_heads, c.head_dim, c.rotary_dim());
    if (*why) return fail(why);
    if (c.attention_window <= 0) return fail("attention window must be positive");
  }
  return absl::OkStatus();
}

namespace {
// State layout inside a slot: lru f32 [R][L] | conv bf16 [R][K-1][L] | K bf16 [A][W][KV][hd] | V,
// each region on 16 bytes, the slot on 256 (both no-ops for the 2B and 9B shapes).
struct SlotLayout {
  std::vector<int64_t> lru_off, conv_off, k_off, v_off;
  int64_t stride = 0;
};
SlotLayout ComputeSlotLayout(const loader::ModelConfig& c) {
  SlotLayout s;
  auto a16 = [](int64_t v) { return (v + 15) / 16 * 16; };
  const int R = c.num_recurrent_layers(), A = c.num_attention_layers();
  const int64_t L = c.lru_width;
  int64_t off = 0;
  for (int r = 0; r < R; ++r) { s.lru_off.push_back(off); off = a16(off + L * 4); }
  for (int r = 0; r < R; ++r) { s.conv_off.push_back(off); off = a16(off + int64_t{c.conv1d_width - 1} * L * 2); }
  const int64_t ring = int64_t{c.attention_window} * c.num_kv_heads * c.head_dim * 2;
  for (int i = 0; i < A; ++i) { s.k_off.push_back(off); off = a16(off + ring); }
  for (int i = 0; i < A; ++i) { s.v_off.push_back(off); off = a16(off + ring); }
  s.stride = AlignUp(off);
  return s;
}
}  // namespace

int64_t CudaStateBytesPerSlot(const loader::ModelConfig& config) {
  return ComputeSlotLayout(config).stride;
}

int CudaSlotsForBudget(const loader::ModelConfig& config, int64_t budget_bytes) {
  return static_cast<int>(budget_bytes / CudaStateBytesPerSlot(config));
}

struct CudaBackend::Impl {
  loader::ModelConfig c;
  CudaBackendOptions opt;
  int d = 0, L = 0, m = 0, H = 0, KV = 1, hd = 0, W = 1, K = 4, V = 0;
  int num_rec = 0, num_attn = 0;
  std::vector<int> layer_index;
  int max_tokens = 0;   // per pass (>= max_decode_batch)
  int max_rows = 0;     // logits rows per head pass
  int tile_tokens = 1;  // attention prefill tile

  cudaStream_t stream = nullptr;
  kernels::Gemm gemm;
  std::vector<void*> allocations;
  int64_t weight_bytes = 0, fixed_bytes = 0;
  bool healthy = true;
  bool use_graphs = true;

  // Weights.
  bf16_t* embedding = nullptr;
  bf16_t* lm_head = nullptr;  // null: tied
  float* final_norm = nullptr;
  std::vector<LayerWeights> layers;

  // State pool: num_slots + 1 (scratch) slots.
  char* pool = nullptr;
  int64_t slot_stride = 0;
  std::vector<int64_t> lru_off, conv_off, k_off, v_off;
  std::vector<int64_t> next_position;

  // Workspace.
  float *x = nullptr, *delta = nullptr, *big = nullptr, *conv = nullptr, *gates = nullptr;
  uint16_t* conv_half = nullptr;
  bf16_t *normed = nullptr, *act = nullptr, *q = nullptr, *krun = nullptr, *vrun = nullptr;
  float *part_o = nullptr, *part_ml = nullptr;
  bf16_t* head_in = nullptr;
  float* logits = nullptr;
  int32_t* tokens_out = nullptr;
  int32_t* argmax_scratch = nullptr;
  kernels::SampleRowParams* sample_params = nullptr;
  int32_t* context_dev = nullptr;
  int context_capacity = 1 << 22;

  // Step metadata: one int32 region, pinned on the host and mirrored on the device.
  int32_t *meta_host = nullptr, *meta_dev = nullptr;
  int64_t meta_ints = 0;
  int64_t off_tokens = 0, off_tok_entry = 0, off_entries = 0, off_tiles = 0, off_rows = 0;
  kernels::SampleRowParams* sample_host = nullptr;
  int32_t* context_host = nullptr;
  int32_t* tokens_host = nullptr;

  std::map<int, cudaGraphExec_t> graphs;  // decode bucket -> graph

  ~Impl() {
    for (auto& [b, g] : graphs) cudaGraphExecDestroy(g);
    if (meta_host) cudaFreeHost(meta_host);
    if (sample_host) cudaFreeHost(sample_host);
    if (context_host) cudaFreeHost(context_host);
    if (tokens_host) cudaFreeHost(tokens_host);
    for (void* p : allocations) cudaFree(p);
    if (stream) cudaStreamDestroy(stream);
  }

  template <typename T>
  absl::Status Alloc(T** out, int64_t count, bool is_weight) {
    void* p = nullptr;
    const int64_t bytes = AlignUp(std::max<int64_t>(count, 1) * int64_t(sizeof(T)));
    CUDA_RETURN(cudaMalloc(&p, bytes));
    allocations.push_back(p);
    (is_weight ? weight_bytes : fixed_bytes) += bytes;
    *out = static_cast<T*>(p);
    return absl::OkStatus();
  }

  absl::Status Init(const loader::ModelConfig& config, const CudaBackendOptions& options);
  absl::Status UploadWeights(const CpuWeights& w);
  absl::Status RandomWeights(uint64_t seed);
  absl::Status CaptureGraphs();

  int Splits(int n) const {
    if (n * KV >= kSplitTokens) return 1;
    const int want = (kSplitTokens + n * KV - 1) / (n * KV);
    const int most = (W + 1 + 31) / 32;
    return std::max(1, std::min({kMaxSplits, want, most}));
  }
  kernels::TokenLayout Layout() const {
    return {meta_dev + off_tok_entry, meta_dev + off_entries};
  }
  absl::Status EnqueueForward(int n, int num_entries, int num_tiles, bool decode_only);
  // Every linear layer: the GEMV kernel for one row against a wide weight (measured faster than
  // cuBLASLt there: 2.76 vs 2.43 TB/s on 15360x2560, 4.41 vs 4.10 on the 256000x2560 head; at
  // M = 8 it re-reads A and loses, bench/NOTES.md), cuBLASLt otherwise.
  absl::Status Linear(const bf16_t* a, const bf16_t* w, float* d, int M, int N, int K) {
    if (M == 1 && N >= 8192 && kernels::GemvSupported(M, K)) {
      CUDA_RETURN(kernels::LaunchGemv(a, w, d, M, N, K, stream));
      return absl::OkStatus();
    }
    GEMM_RETURN(gemm.Run(a, w, d, M, N, K, stream));
    return absl::OkStatus();
  }
  // Head over `nrows` rows of the x buffer listed at meta rows [row0, row0 + nrows).
  absl::Status EnqueueHead(int row0, int nrows, bool argmax);
  absl::Status Validate(absl::Span<const StepEntry> entries) const;
  absl::Status Run(absl::Span<const StepEntry> entries, float* logits_out,
                   absl::Span<const SampleRequest> requests, int32_t* tokens_out_host);
  absl::Status Fail(absl::Status st) {
    healthy = false;
    return st;
  }
};

absl::Status CudaBackend::Impl::Init(const loader::ModelConfig& config,
                                     const CudaBackendOptions& options) {
  c = config;
  opt = options;
  use_graphs = options.use_cuda_graphs;
  if (opt.num_slots < 1) return absl::InvalidArgumentError("num_slots must be at least 1");
  if (opt.max_tokens_per_step < 1 || opt.max_decode_batch < 1) {
    return absl::InvalidArgumentError("max_tokens_per_step and max_decode_batch must be positive");
  }
  if (!CudaDeviceAvailable()) return absl::FailedPreconditionError("no CUDA device is visible");
  RETURN_IF_ERROR(CudaCanImplement(c));
  d = c.hidden_size; L = c.lru_width; m = c.mlp_width; H = c.num_heads; KV = c.num_kv_heads;
  hd = c.head_dim; W = c.attention_window; K = c.conv1d_width; V = c.vocab_size;
  for (BlockType t : c.block_types) layer_index.push_back(t == BlockType::kRecurrent ? num_rec++ : num_attn++);
  max_tokens = std::max(opt.max_tokens_per_step, opt.max_decode_batch);
  max_rows = opt.max_decode_batch;
  tile_tokens = num_attn > 0 ? kernels::AttentionPrefillTileTokens(H, KV, hd) : 1;

  CUDA_RETURN(cudaSetDevice(0));
  CUDA_RETURN(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  if (num_attn > 0) CUDA_RETURN(kernels::PrepareAttentionKernels());
  GEMM_RETURN(gemm.Init(kGemmWorkspace));
  fixed_bytes += kGemmWorkspace;

  const SlotLayout layout = ComputeSlotLayout(c);
  lru_off = layout.lru_off;
  conv_off = layout.conv_off;
  k_off = layout.k_off;
  v_off = layout.v_off;
  slot_stride = layout.stride;
  const int64_t pool_bytes = slot_stride * (opt.num_slots + 1);
  CUDA_RETURN(cudaMalloc(&pool, pool_bytes));
  allocations.push_back(pool);
  fixed_bytes += slot_stride;  // the scratch slot
  CUDA_RETURN(cudaMemset(pool, 0, pool_bytes));
  next_position.assign(opt.num_slots, 0);

  const int64_t N = max_tokens;
  const int64_t big_width = std::max({int64_t{2} * m, num_rec ? int64_t{2} * L : 0,
                                      num_attn ? int64_t{H + 2 * KV} * hd : 0});
  const int64_t act_width = std::max({int64_t{m}, num_rec ? int64_t{L} : 0,
                                      num_attn ? int64_t{H} * hd : 0});
  RETURN_IF_ERROR(Alloc(&x, N * d, false));
  RETURN_IF_ERROR(Alloc(&delta, N * d, false));
  RETURN_IF_ERROR(Alloc(&normed, N * d, false));
  RETURN_IF_ERROR(Alloc(&big, N * big_width, false));
  RETURN_IF_ERROR(Alloc(&act, N * act_width, false));
  if (num_rec > 0) {
    RETURN_IF_ERROR(Alloc(&conv, N * L, false));
    RETURN_IF_ERROR(Alloc(&conv_half, N * L, false));
    RETURN_IF_ERROR(Alloc(&gates, N * 2 * L, false));
  }
  if (num_attn > 0) {
    RETURN_IF_ERROR(Alloc(&q, N * H * hd, false));
    RETURN_IF_ERROR(Alloc(&krun, N * KV * hd, false));
    RETURN_IF_ERROR(Alloc(&vrun, N * KV * hd, false));
    RETURN_IF_ERROR(Alloc(&part_o, int64_t{kSplitTokens} * H * kMaxSplits * hd, false));
    RETURN_IF_ERROR(Alloc(&part_ml, int64_t{kSplitTokens} * H * kMaxSplits * 2, false));
  }
  RETURN_IF_ERROR(Alloc(&head_in, int64_t{max_rows} * d, false));
  RETURN_IF_ERROR(Alloc(&logits, int64_t{max_rows} * V, false));
  RETURN_IF_ERROR(Alloc(&tokens_out, max_rows, false));
  RETURN_IF_ERROR(Alloc(&argmax_scratch, int64_t{max_rows} * kernels::kArgMaxParts * 3, false));
  RETURN_IF_ERROR(Alloc(&sample_params, max_rows, false));
  RETURN_IF_ERROR(Alloc(&context_dev, context_capacity, false));

  off_tokens = 0;
  off_tok_entry = off_tokens + N;
  off_entries = off_tok_entry + N;
  off_tiles = off_entries + 4 * N;
  off_rows = off_tiles + 2 * N;
  meta_ints = off_rows + N;
  RETURN_IF_ERROR(Alloc(&meta_dev, meta_ints, false));
  CUDA_RETURN(cudaMallocHost(&meta_host, meta_ints * sizeof(int32_t)));
  CUDA_RETURN(cudaMallocHost(&sample_host, max_rows * sizeof(kernels::SampleRowParams)));
  CUDA_RETURN(cudaMallocHost(&context_host, int64_t{context_capacity} * sizeof(int32_t)));
  CUDA_RETURN(cudaMallocHost(&tokens_host, max_rows * sizeof(int32_t)));
  return absl::OkStatus();
}

namespace {
// Concatenates float32 host tensors and uploads them as bf16.
absl::Status UploadBf16(std::initializer_list<const std::vector<float>*> parts, bf16_t* dst) {
  std::vector<bf16_t> host;
  for (const auto* p : parts) {
    for (float v : *p) host.push_back(kernels::HostToBf16(v));
  }
  CUDA_RETURN(cudaMemcpy(dst, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}
absl::Status UploadF32(const std::vector<float>& src, float* dst) {
  CUDA_RETURN(cudaMemcpy(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}
}  // namespace

// Allocates every weight; `fill` then either uploads or randomises.
#define ALLOC_W(ptr, count) RETURN_IF_ERROR(Alloc(&(ptr), (count), true))

absl::Status CudaBackend::Impl::UploadWeights(const CpuWeights& w) {
  const int B = num_rec ? L / H : 0;
  ALLOC_W(embedding, int64_t{V} * d);
  RETURN_IF_ERROR(UploadBf16({&w.embedding}, embedding));
  if (!w.lm_head.empty()) {
    ALLOC_W(lm_head, int64_t{V} * d);
    RETURN_IF_ERROR(UploadBf16({&w.lm_head}, lm_head));
  }
  ALLOC_W(final_norm, d);
  RETURN_IF_ERROR(UploadF32(w.final_norm, final_norm));
  layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const CpuLayerWeights& s = w.layers[l];
    LayerWeights& t = layers[l];
    t.type = s.type;
    ALLOC_W(t.temporal_norm, d); RETURN_IF_ERROR(UploadF32(s.temporal_norm, t.temporal_norm));
    ALLOC_W(t.channel_norm, d); RETURN_IF_ERROR(UploadF32(s.channel_norm, t.channel_norm));
    ALLOC_W(t.w_gu, int64_t{2} * m * d); RETURN_IF_ERROR(UploadBf16({&s.gate_w, &s.up_w}, t.w_gu));
    ALLOC_W(t.gate_b, m); RETURN_IF_ERROR(UploadF32(s.gate_b, t.gate_b));
    ALLOC_W(t.up_b, m); RETURN_IF_ERROR(UploadF32(s.up_b, t.up_b));
    ALLOC_W(t.w_down, int64_t{d} * m); RETURN_IF_ERROR(UploadBf16({&s.down_w}, t.w_down));
    ALLOC_W(t.down_b, d); RETURN_IF_ERROR(UploadF32(s.down_b, t.down_b));
    if (s.type == BlockType::kRecurrent) {
      ALLOC_W(t.w_xy, int64_t{2} * L * d); RETURN_IF_ERROR(UploadBf16({&s.x_w, &s.y_w}, t.w_xy));
      ALLOC_W(t.bx, L); RETURN_IF_ERROR(UploadF32(s.x_b, t.bx));
      ALLOC_W(t.by, L); RETURN_IF_ERROR(UploadF32(s.y_b, t.by));
      ALLOC_W(t.w_out, int64_t{d} * L); RETURN_IF_ERROR(UploadBf16({&s.out_w}, t.w_out));
      ALLOC_W(t.out_b, d); RETURN_IF_ERROR(UploadF32(s.out_b, t.out_b));
      ALLOC_W(t.conv_w, int64_t{L} * K); RETURN_IF_ERROR(UploadF32(s.conv_w, t.conv_w));
      ALLOC_W(t.conv_b, L); RETURN_IF_ERROR(UploadF32(s.conv_b, t.conv_b));
      ALLOC_W(t.gx_w, int64_t{H} * B * B); RETURN_IF_ERROR(UploadBf16({&s.input_gate_w}, t.gx_w));
      ALLOC_W(t.gx_b, L); RETURN_IF_ERROR(UploadF32(s.input_gate_b, t.gx_b));
      ALLOC_W(t.ga_w, int64_t{H} * B * B); RETURN_IF_ERROR(UploadBf16({&s.a_gate_w}, t.ga_w));
      ALLOC_W(t.ga_b, L); RETURN_IF_ERROR(UploadF32(s.a_gate_b, t.ga_b));
      ALLOC_W(t.a_param, L); RETURN_IF_ERROR(UploadF32(s.a_param, t.a_param));
      ALLOC_W(t.gates_t, int64_t{2} * H * B * B);
      CUDA_RETURN(kernels::LaunchPackGateWeights(t.gx_w, t.ga_w, H, B, t.gates_t, stream));
    } else {
      const int64_t qkv = int64_t{H + 2 * KV} * hd;
      ALLOC_W(t.w_qkv, qkv * d); RETURN_IF_ERROR(UploadBf16({&s.q_w, &s.k_w, &s.v_w}, t.w_qkv));
      ALLOC_W(t.w_o, int64_t{d} * H * hd); RETURN_IF_ERROR(UploadBf16({&s.o_w}, t.w_o));
      ALLOC_W(t.o_b, d); RETURN_IF_ERROR(UploadF32(s.o_b, t.o_b));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::RandomWeights(uint64_t seed) {
  const int B = num_rec ? L / H : 0;
  uint64_t k = seed * 1000003;
  auto rb = [&](bf16_t** p, int64_t n, float stddev) -> absl::Status {
    RETURN_IF_ERROR(Alloc(p, n, true));
    CUDA_RETURN(kernels::LaunchFillRandomBf16(*p, n, ++k, stddev, 0.0f, stream));
    return absl::OkStatus();
  };
  auto rf = [&](float** p, int64_t n, float stddev, float mean) -> absl::Status {
    RETURN_IF_ERROR(Alloc(p, n, true));
    CUDA_RETURN(kernels::LaunchFillRandomF32(*p, n, ++k, stddev, mean, stream));
    return absl::OkStatus();
  };
  const float sd = 1.0f / std::sqrt(float(d));
  RETURN_IF_ERROR(rb(&embedding, int64_t{V} * d, sd));
  RETURN_IF_ERROR(rf(&final_norm, d, 0.1f, 0.0f));
  layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& t = layers[l];
    t.type = c.block_types[l];
    RETURN_IF_ERROR(rf(&t.temporal_norm, d, 0.1f, 0.0f));
    RETURN_IF_ERROR(rf(&t.channel_norm, d, 0.1f, 0.0f));
    RETURN_IF_ERROR(rb(&t.w_gu, int64_t{2} * m * d, sd));
    RETURN_IF_ERROR(rf(&t.gate_b, m, 0.02f, 0.0f));
    RETURN_IF_ERROR(rf(&t.up_b, m, 0.02f, 0.0f));
    RETURN_IF_ERROR(rb(&t.w_down, int64_t{d} * m, 1.0f / std::sqrt(float(m))));
    RETURN_IF_ERROR(rf(&t.down_b, d, 0.02f, 0.0f));
    if (t.type == BlockType::kRecurrent) {
      RETURN_IF_ERROR(rb(&t.w_xy, int64_t{2} * L * d, sd));
      RETURN_IF_ERROR(rf(&t.bx, L, 0.02f, 0.0f));
      RETURN_IF_ERROR(rf(&t.by, L, 0.02f, 0.0f));
      RETURN_IF_ERROR(rb(&t.w_out, int64_t{d} * L, 1.0f / std::sqrt(float(L))));
      RETURN_IF_ERROR(rf(&t.out_b, d, 0.02f, 0.0f));
      RETURN_IF_ERROR(rf(&t.conv_w, int64_t{L} * K, 0.5f, 0.0f));
      RETURN_IF_ERROR(rf(&t.conv_b, L, 0.02f, 0.0f));
      RETURN_IF_ERROR(rb(&t.gx_w, int64_t{H} * B * B, 1.0f / std::sqrt(float(B))));
      RETURN_IF_ERROR(rf(&t.gx_b, L, 0.02f, 0.0f));
      RETURN_IF_ERROR(rb(&t.ga_w, int64_t{H} * B * B, 1.0f / std::sqrt(float(B))));
      RETURN_IF_ERROR(rf(&t.ga_b, L, 0.02f, 0.0f));
      RETURN_IF_ERROR(rf(&t.a_param, L, 0.5f, -4.3f));  // a = exp(-8 σ(g) softplus) ≈ 0.9..0.999
      RETURN_IF_ERROR(Alloc(&t.gates_t, int64_t{2} * H * B * B, true));
      CUDA_RETURN(kernels::LaunchPackGateWeights(t.gx_w, t.ga_w, H, B, t.gates_t, stream));
    } else {
      RETURN_IF_ERROR(rb(&t.w_qkv, int64_t{H + 2 * KV} * hd * d, sd));
      RETURN_IF_ERROR(rb(&t.w_o, int64_t{d} * H * hd, 1.0f / std::sqrt(float(H * hd))));
      RETURN_IF_ERROR(rf(&t.o_b, d, 0.02f, 0.0f));
    }
  }
  CUDA_RETURN(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::EnqueueForward(int n, int num_entries, int num_tiles,
                                               bool decode_only) {
  const float eps = c.rms_norm_eps;
  const int32_t* tokens = meta_dev + off_tokens;
  CUDA_RETURN(kernels::LaunchEmbed(embedding, tokens, n, d, EmbeddingScale(c), x, stream));
  const float* prev_bias = nullptr;
  bool have_delta = false;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers[l];
    CUDA_RETURN(kernels::LaunchAddRmsNorm(x, have_delta ? delta : nullptr, prev_bias,
                                          w.temporal_norm, nullptr, n, d, eps, normed, stream));
    if (w.type == BlockType::kRecurrent) {
      const int r = layer_index[l];
      RETURN_IF_ERROR(Linear(normed, w.w_xy, big, n, 2 * L, d));
      kernels::RgLruParams p;
      p.xy = big; p.bx = w.bx; p.by = w.by; p.conv_w = w.conv_w; p.conv_b = w.conv_b;
      p.gx_w = w.gx_w; p.gx_b = w.gx_b; p.ga_w = w.ga_w; p.ga_b = w.ga_b; p.a_param = w.a_param;
      p.layout = Layout();
      p.state = {pool, slot_stride};
      p.lru_offset = lru_off[r];
      p.conv_offset = conv_off[r];
      p.n = n; p.num_entries = num_entries; p.L = L; p.H = H; p.K = K;
      p.out = act;
      p.c = conv; p.c_half = conv_half; p.gates = gates;
      if (decode_only) {
        CUDA_RETURN(kernels::LaunchRgLruDecode(p, stream));
      } else {
        const int B = L / H;
        CUDA_RETURN(kernels::LaunchRgLruConv(p, stream));
        GEMM_RETURN(gemm.RunBatched(conv_half, L, B, w.gates_t, int64_t{2} * B * B, gates, 2 * L,
                                    2 * B, n, 2 * B, B, H, /*fp16=*/true, stream));
        CUDA_RETURN(kernels::LaunchRgLruGateMath(p, stream));
        CUDA_RETURN(kernels::LaunchRgLruScan(p, stream));
      }
      RETURN_IF_ERROR(Linear(act, w.w_out, delta, n, d, L));
      prev_bias = w.out_b;
    } else {
      const int ai = layer_index[l];
      RETURN_IF_ERROR(Linear(normed, w.w_qkv, big, n, (H + 2 * KV) * hd, d));
      kernels::AttentionParams p;
      p.qkv = big; p.q = q; p.k = krun; p.v = vrun;
      p.layout = Layout();
      p.tiles = meta_dev + off_tiles;
      p.num_tiles = num_tiles;
      p.state = {pool, slot_stride};
      p.k_offset = k_off[ai];
      p.v_offset = v_off[ai];
      p.n = n; p.H = H; p.KV = KV; p.hd = hd; p.W = W; p.rotary = c.rotary_dim();
      p.theta = c.rope_theta;
      p.scale = static_cast<float>(std::pow(static_cast<double>(hd), -0.5));
      p.splits = decode_only ? Splits(n) : 1;
      p.part_o = part_o; p.part_ml = part_ml; p.out = act;
      CUDA_RETURN(kernels::LaunchRope(p, stream));
      CUDA_RETURN(kernels::LaunchAttention(p, decode_only ? 1 : tile_tokens, stream));
      CUDA_RETURN(kernels::LaunchRingWrite(p, stream));
      RETURN_IF_ERROR(Linear(act, w.w_o, delta, n, d, H * hd));
      prev_bias = w.o_b;
    }
    CUDA_RETURN(kernels::LaunchAddRmsNorm(x, delta, prev_bias, w.channel_norm, nullptr, n, d, eps,
                                          normed, stream));
    RETURN_IF_ERROR(Linear(normed, w.w_gu, big, n, 2 * m, d));
    CUDA_RETURN(kernels::LaunchGeGlu(big, w.gate_b, w.up_b, n, m, act, stream));
    RETURN_IF_ERROR(Linear(act, w.w_down, delta, n, d, m));
    prev_bias = w.down_b;
    have_delta = true;
  }
  // Last residual add; the head normalises only the rows it needs.
  CUDA_RETURN(kernels::LaunchAddRmsNorm(x, delta, prev_bias, final_norm, nullptr, n, d, eps, normed,
                                        stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::EnqueueHead(int row0, int nrows, bool argmax) {
  CUDA_RETURN(kernels::LaunchAddRmsNorm(x, nullptr, nullptr, final_norm, meta_dev + off_rows + row0,
                                        nrows, d, c.rms_norm_eps, head_in, stream));
  RETURN_IF_ERROR(Linear(head_in, lm_head != nullptr ? lm_head : embedding, logits, nrows, V, d));
  CUDA_RETURN(kernels::LaunchSoftCap(logits, int64_t{nrows} * V, c.logits_soft_cap, stream));
  if (argmax) CUDA_RETURN(kernels::LaunchArgMax(logits, nrows, V, tokens_out, argmax_scratch, stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::CaptureGraphs() {
  if (!use_graphs) return absl::OkStatus();
  const int scratch = opt.num_slots;
  struct AutotuneOff {
    kernels::Gemm& g;
    ~AutotuneOff() { g.set_autotune(false); }
  } autotune_off{gemm};
  for (int b = 1;; b *= 2) {
    const int bucket = std::min(b, opt.max_decode_batch);
    for (int i = 0; i < bucket; ++i) {
      meta_host[off_tokens + i] = 0;
      meta_host[off_tok_entry + i] = i;
      meta_host[off_entries + 4 * i] = i;
      meta_host[off_entries + 4 * i + 1] = 1;
      meta_host[off_entries + 4 * i + 2] = scratch;
      meta_host[off_entries + 4 * i + 3] = 1;
      meta_host[off_tiles + 2 * i] = i;
      meta_host[off_tiles + 2 * i + 1] = 1;
      meta_host[off_rows + i] = i;
    }
    CUDA_RETURN(cudaMemcpyAsync(meta_dev, meta_host, meta_ints * 4, cudaMemcpyHostToDevice, stream));
    // Warm-up run (loads modules, times the GEMM algorithms of the bucket's shapes), then capture.
    gemm.set_autotune(true);
    RETURN_IF_ERROR(EnqueueForward(bucket, bucket, bucket, true));
    RETURN_IF_ERROR(EnqueueHead(0, bucket, true));
    CUDA_RETURN(cudaStreamSynchronize(stream));
    gemm.set_autotune(false);
    cudaGraph_t graph;
    CUDA_RETURN(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    absl::Status st = EnqueueForward(bucket, bucket, bucket, true);
    if (st.ok()) st = EnqueueHead(0, bucket, true);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    RETURN_IF_ERROR(st);
    CUDA_RETURN(end);
    cudaGraphExec_t exec;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_RETURN(inst);
    graphs[bucket] = exec;
    if (bucket == opt.max_decode_batch) break;
  }
  CUDA_RETURN(cudaMemsetAsync(pool + slot_stride * scratch, 0, slot_stride, stream));
  CUDA_RETURN(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Validate(absl::Span<const StepEntry> entries) const {
  absl::flat_hash_set<int> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const StepEntry& e = entries[i];
    if (e.slot < 0 || e.slot >= opt.num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": slot ", e.slot,
                                                     " out of range [0, ", opt.num_slots, ")"));
    }
    if (!seen.insert(e.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": slot ", e.slot, " appears twice in one step"));
    }
    if (e.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": no tokens"));
    const int64_t expected = next_position[e.slot];
    if (e.position != 0 && e.position != expected) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                     " is not slot ", e.slot,
                                                     "'s next position ", expected));
    }
    if (e.position + static_cast<int64_t>(e.tokens.size()) > (int64_t{1} << 31) - 1) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position beyond 2^31"));
    }
    for (int32_t token : e.tokens) {
      if (token < 0 || token >= V) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": token id ", token,
                                                       " out of range [0, ", V, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Run(absl::Span<const StepEntry> entries, float* logits_host,
                                    absl::Span<const SampleRequest> requests,
                                    int32_t* tokens_host_out) {
  const bool sampling = tokens_host_out != nullptr;
  bool all_greedy = true;
  for (const SampleRequest& r : requests) all_greedy &= r.params.greedy();

  // Resets first (stream order puts them before the forward).
  for (const StepEntry& e : entries) {
    if (e.position == 0) {
      CUDA_RETURN(cudaMemsetAsync(pool + slot_stride * e.slot, 0, slot_stride, stream));
    }
  }

  // Uploads per-row sampling parameters for rows [row0, row0 + n) of the step; returns via rows.
  auto upload_sampling = [&](int row0, int n) -> absl::Status {
    int ctx = 0;
    for (int i = 0; i < n; ++i) {
      const SampleRequest& r = requests[row0 + i];
      kernels::SampleRowParams& s = sample_host[i];
      s.temperature = r.params.temperature;
      s.top_k = r.params.top_k;
      s.top_p = r.params.top_p;
      s.min_p = r.params.min_p;
      s.repetition_penalty = r.params.repetition_penalty;
      s.seed_lo = static_cast<uint32_t>(r.params.seed);
      s.seed_hi = static_cast<uint32_t>(r.params.seed >> 32);
      s.step_lo = static_cast<uint32_t>(r.step);
      s.step_hi = static_cast<uint32_t>(r.step >> 32);
      s.context_start = ctx;
      const int len = r.params.repetition_penalty != 1.0f ? static_cast<int>(r.context.size()) : 0;
      if (ctx + len > context_capacity) {
        return absl::ResourceExhaustedError("sampling contexts exceed the GPU context buffer");
      }
      std::memcpy(context_host + ctx, r.context.data(), size_t(len) * 4);
      s.context_len = len;
      ctx += len;
    }
    CUDA_RETURN(cudaMemcpyAsync(sample_params, sample_host, n * sizeof(kernels::SampleRowParams),
                                cudaMemcpyHostToDevice, stream));
    if (ctx > 0) {
      CUDA_RETURN(cudaMemcpyAsync(context_dev, context_host, size_t(ctx) * 4,
                                  cudaMemcpyHostToDevice, stream));
    }
    return absl::OkStatus();
  };
  // After a head over rows [row0, row0+n) of the step: sample (if asked) and copy results out.
  auto consume = [&](int row0, int n, bool argmax_done) -> absl::Status {
    if (sampling) {
      if (!all_greedy) {
        RETURN_IF_ERROR(upload_sampling(row0, n));
        CUDA_RETURN(kernels::LaunchSample(logits, n, V, sample_params, context_dev, tokens_out,
                                          stream));
      } else if (!argmax_done) {
        CUDA_RETURN(kernels::LaunchArgMax(logits, n, V, tokens_out, argmax_scratch, stream));
      }
      CUDA_RETURN(cudaMemcpyAsync(tokens_host_out + row0, tokens_out, size_t(n) * 4,
                                  cudaMemcpyDeviceToHost, stream));
    } else {
      CUDA_RETURN(cudaMemcpyAsync(logits_host + int64_t{row0} * V, logits, size_t(n) * V * 4,
                                  cudaMemcpyDeviceToHost, stream));
    }
    return absl::OkStatus();
  };

  const int E = static_cast<int>(entries.size());
  bool decode_only = E <= opt.max_decode_batch;
  for (const StepEntry& e : entries) decode_only &= e.tokens.size() == 1;

  if (decode_only && use_graphs && !graphs.empty()) {
    const int bucket = graphs.lower_bound(E)->first;
    const int scratch = opt.num_slots;
    for (int i = 0; i < bucket; ++i) {
      const bool real = i < E;
      meta_host[off_tokens + i] = real ? entries[i].tokens[0] : 0;
      meta_host[off_tok_entry + i] = i;
      meta_host[off_entries + 4 * i] = i;
      meta_host[off_entries + 4 * i + 1] = 1;
      meta_host[off_entries + 4 * i + 2] = real ? entries[i].slot : scratch;
      meta_host[off_entries + 4 * i + 3] = real ? static_cast<int32_t>(entries[i].position) : 1;
      meta_host[off_tiles + 2 * i] = i;
      meta_host[off_tiles + 2 * i + 1] = 1;
      meta_host[off_rows + i] = i;
    }
    CUDA_RETURN(cudaMemcpyAsync(meta_dev, meta_host, meta_ints * 4, cudaMemcpyHostToDevice, stream));
    CUDA_RETURN(cudaGraphLaunch(graphs[bucket], stream));
    // Rows of the graph are entries; copy out those that asked for logits.
    bool all_rows = true;
    for (const StepEntry& e : entries) all_rows &= e.logits != LogitsRequest::kNone;
    if (all_rows) {
      RETURN_IF_ERROR(consume(0, E, true));
    } else {
      // Compact the asked rows with a gather head (rare: decode tokens without logits).
      int rows = 0;
      for (int i = 0; i < E; ++i) {
        if (entries[i].logits != LogitsRequest::kNone) meta_host[off_rows + rows++] = i;
      }
      if (rows > 0) {
        CUDA_RETURN(cudaMemcpyAsync(meta_dev + off_rows, meta_host + off_rows, rows * 4,
                                    cudaMemcpyHostToDevice, stream));
        RETURN_IF_ERROR(EnqueueHead(0, rows, false));
        RETURN_IF_ERROR(consume(0, rows, false));
      }
    }
  } else {
    // Passes of at most max_tokens tokens; entries may be cut between passes.
    struct Piece { int entry, offset, count; bool rows_all, row_last; };
    size_t ei = 0;
    int eoff = 0;
    int row_base = 0;  // step rows done so far
    while (ei < entries.size()) {
      std::vector<Piece> pieces;
      int n = 0;
      while (ei < entries.size() && n < max_tokens) {
        const StepEntry& e = entries[ei];
        const int len = static_cast<int>(e.tokens.size());
        const int take = std::min(len - eoff, max_tokens - n);
        const bool last_piece = eoff + take == len;
        pieces.push_back({static_cast<int>(ei), eoff, take, e.logits == LogitsRequest::kAll,
                          last_piece && e.logits == LogitsRequest::kLast});
        n += take;
        if (last_piece) { ++ei; eoff = 0; } else { eoff += take; }
      }
      int t = 0, tiles = 0, rows = 0;
      for (size_t pi = 0; pi < pieces.size(); ++pi) {
        const Piece& p = pieces[pi];
        const StepEntry& e = entries[p.entry];
        const int start = t;
        meta_host[off_entries + 4 * pi] = start;
        meta_host[off_entries + 4 * pi + 1] = p.count;
        meta_host[off_entries + 4 * pi + 2] = e.slot;
        meta_host[off_entries + 4 * pi + 3] = static_cast<int32_t>(e.position + p.offset);
        for (int k = 0; k < p.count; ++k, ++t) {
          meta_host[off_tokens + t] = e.tokens[p.offset + k];
          meta_host[off_tok_entry + t] = static_cast<int32_t>(pi);
          if (p.rows_all || (p.row_last && k == p.count - 1)) meta_host[off_rows + rows++] = t;
        }
        for (int k = 0; k < p.count; k += tile_tokens) {
          meta_host[off_tiles + 2 * tiles] = start + k;
          meta_host[off_tiles + 2 * tiles + 1] = std::min(tile_tokens, p.count - k);
          ++tiles;
        }
      }
      // A pure-decode pass uses one-token tiles (the split decode kernel).
      const bool pass_decode = static_cast<int>(pieces.size()) == n;
      if (pass_decode) {
        tiles = n;
        for (int i = 0; i < n; ++i) {
          meta_host[off_tiles + 2 * i] = i;
          meta_host[off_tiles + 2 * i + 1] = 1;
        }
      }
      CUDA_RETURN(cudaMemcpyAsync(meta_dev, meta_host, meta_ints * 4, cudaMemcpyHostToDevice,
                                  stream));
      RETURN_IF_ERROR(EnqueueForward(n, static_cast<int>(pieces.size()), tiles, pass_decode));
      for (int r0 = 0; r0 < rows; r0 += max_rows) {
        const int nr = std::min(max_rows, rows - r0);
        RETURN_IF_ERROR(EnqueueHead(r0, nr, false));
        RETURN_IF_ERROR(consume(row_base + r0, nr, false));
        // The logits buffer is reused by the next chunk: wait for the copy out.
        if (r0 + nr < rows) CUDA_RETURN(cudaStreamSynchronize(stream));
      }
      row_base += rows;
      // The pinned metadata is rewritten by the next pass.
      CUDA_RETURN(cudaStreamSynchronize(stream));
    }
  }
  CUDA_RETURN(cudaStreamSynchronize(stream));
  CUDA_RETURN(cudaGetLastError());
  for (const StepEntry& e : entries) {
    next_position[e.slot] = e.position + static_cast<int64_t>(e.tokens.size());
  }
  return absl::OkStatus();
}

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const loader::Checkpoint& checkpoint, const CudaBackendOptions& options) {
  RETURN_IF_ERROR(CudaCanImplement(checkpoint.config()));
  ASSIGN_OR_RETURN(CpuWeights weights, LoadCpuWeights(checkpoint));
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Init(checkpoint.config(), options));
  RETURN_IF_ERROR(impl->UploadWeights(weights));
  RETURN_IF_ERROR(impl->CaptureGraphs());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::CreateRandom(
    const loader::ModelConfig& config, const CudaBackendOptions& options, uint64_t seed) {
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(impl->Init(config, options));
  RETURN_IF_ERROR(impl->RandomWeights(seed));
  RETURN_IF_ERROR(impl->CaptureGraphs());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

const loader::ModelConfig& CudaBackend::config() const { return impl_->c; }
int CudaBackend::num_slots() const { return impl_->opt.num_slots; }
int64_t CudaBackend::state_bytes_per_sequence() const { return impl_->slot_stride; }
int64_t CudaBackend::fixed_device_bytes() const { return impl_->fixed_bytes; }
int64_t CudaBackend::weight_bytes() const { return impl_->weight_bytes; }
void CudaBackend::set_use_cuda_graphs(bool use) { impl_->use_graphs = use; }
bool CudaBackend::healthy() const { return impl_->healthy; }

absl::Status CudaBackend::Step(absl::Span<const StepEntry> entries, absl::Span<float> logits) {
  if (!impl_->healthy) return absl::InternalError("CUDA backend is unhealthy after a device error");
  RETURN_IF_ERROR(impl_->Validate(entries));
  const int64_t rows = LogitsRows(entries);
  if (static_cast<int64_t>(logits.size()) != rows * impl_->V) {
    return absl::InvalidArgumentError(absl::StrCat("logits holds ", logits.size(),
                                                   " floats, the step returns ", rows,
                                                   " rows of ", impl_->V));
  }
  absl::Status st = impl_->Run(entries, logits.data(), {}, nullptr);
  if (!st.ok() && st.code() == absl::StatusCode::kInternal) return impl_->Fail(st);
  return st;
}

absl::Status CudaBackend::StepSample(absl::Span<const StepEntry> entries,
                                     absl::Span<const SampleRequest> requests,
                                     absl::Span<int32_t> tokens) {
  if (!impl_->healthy) return absl::InternalError("CUDA backend is unhealthy after a device error");
  RETURN_IF_ERROR(impl_->Validate(entries));
  size_t rows = 0;
  for (const StepEntry& e : entries) {
    if (e.logits == LogitsRequest::kAll) {
      return absl::InvalidArgumentError("StepSample takes kLast or kNone entries only");
    }
    rows += e.logits == LogitsRequest::kLast;
  }
  if (requests.size() != rows || tokens.size() != rows) {
    return absl::InvalidArgumentError("one sampling request and one token per kLast entry");
  }
  for (const SampleRequest& r : requests) {
    if (r.params.presence_penalty != 0.0f || r.params.frequency_penalty != 0.0f) {
      return absl::InvalidArgumentError("the GPU sampler has no presence/frequency penalty");
    }
  }
  absl::Status st = impl_->Run(entries, nullptr, requests, tokens.data());
  if (!st.ok() && st.code() == absl::StatusCode::kInternal) return impl_->Fail(st);
  return st;
}

absl::Status CudaBackend::ResetSlot(int slot) {
  if (slot < 0 || slot >= impl_->opt.num_slots) return absl::InvalidArgumentError("slot out of range");
  if (!impl_->healthy) return absl::InternalError("CUDA backend is unhealthy after a device error");
  const cudaError_t err = cudaMemsetAsync(impl_->pool + impl_->slot_stride * slot, 0,
                                          impl_->slot_stride, impl_->stream);
  const cudaError_t sync = err == cudaSuccess ? cudaStreamSynchronize(impl_->stream) : err;
  if (sync != cudaSuccess) return impl_->Fail(CudaError(sync, __FILE__, __LINE__));
  impl_->next_position[slot] = 0;
  return absl::OkStatus();
}

int64_t CudaBackend::NextPosition(int slot) const {
  return slot >= 0 && slot < impl_->opt.num_slots ? impl_->next_position[slot] : -1;
}

absl::Status CudaBackend::SetNextPositionForBenchmark(int slot, int64_t position) {
  if (slot < 0 || slot >= impl_->opt.num_slots || position < 0) {
    return absl::InvalidArgumentError("slot or position out of range");
  }
  impl_->next_position[slot] = position;
  return absl::OkStatus();
}

}  // namespace griffin::engine
