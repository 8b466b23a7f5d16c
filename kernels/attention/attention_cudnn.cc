// See attention_cudnn.h.
#include "kernels/attention/attention_cudnn.h"

#include <cuda_runtime.h>
#include <cudnn_frontend.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <unordered_map>

// The frontend calls cuDNN through this handle (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING): the
// binaries do not link libcudnn, so they start and run without it.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace griffin::kernels {
namespace fe = cudnn_frontend;

namespace {

// Tensor uids of the graph's variant pack.
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kSeqLenQ,
  kSeqLenKv,
  kOffsetQo,
  kOffsetKv,
};

int RoundUpToPowerOfTwo(int x) {
  int p = 1;
  while (p < x) p *= 2;
  return p;
}

std::string CudaError(const char* what, cudaError_t err) {
  return std::string(what) + ": " + cudaGetErrorString(err);
}

// dlopen of libcudnn.so.9 where attention_cudnn.h says; empty string on success.
std::string LoadCudnn() {
  if (fe::cudnn_dlhandle != nullptr) return "";
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("GRIFFIN_CUDNN_LIBRARY"); env != nullptr && *env != '\0') {
    candidates.push_back(env);  // an explicit choice is the only one tried
  } else {
#ifdef GRIFFIN_CUDNN_BUILD_LIBRARY
    candidates.push_back(GRIFFIN_CUDNN_BUILD_LIBRARY);
#endif
    candidates.push_back("libcudnn.so.9");
  }
  std::string errors;
  for (const std::string& path : candidates) {
    if (void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL); handle != nullptr) {
      fe::cudnn_dlhandle = handle;
      return "";
    }
    const char* why = dlerror();
    errors += (errors.empty() ? "" : "; ") + std::string(why != nullptr ? why : path);
  }
  return "cuDNN not loadable (" + errors + ")";
}

}  // namespace

struct CudnnAttention::Graph {
  std::shared_ptr<fe::graph::Graph> graph;  // null when cuDNN refused the bucket
  std::string refusal;                      // then why (not rebuilt: a refusal is by shape)
  int sequences = 0, max_len = 0;
  int64_t plan = -1;  // which of the built plans runs; -1: the heuristic's first
};

CudnnAttention::CudnnAttention() = default;

CudnnAttention::~CudnnAttention() {
  graphs_.clear();
  if (handle_ != nullptr) fe::detail::destroy_handle(static_cast<cudnnHandle_t>(handle_));
  if (staged_ != nullptr) cudaEventDestroy(staged_);
  if (staging_ != nullptr) cudaFreeHost(staging_);
  if (index_ != nullptr) cudaFree(index_);
  if (workspace_ != nullptr) cudaFree(workspace_);
}

std::string CudnnAttention::Init(int H, int KV, int hd, int W, float scale, int max_sequences,
                                 size_t workspace_bytes) {
  if (handle_ != nullptr) return "already initialised";
  if (H <= 0 || KV <= 0 || H % KV != 0 || hd <= 0 || hd % 8 != 0 || hd > 256 || W <= 0 ||
      max_sequences <= 0) {
    return "shapes cuDNN's attention does not take";
  }
  H_ = H;
  KV_ = KV;
  hd_ = hd;
  W_ = W;
  scale_ = scale;
  max_sequences_ = max_sequences;
  if (std::string err = LoadCudnn(); !err.empty()) return err;
  try {
    // What a library lacks for this graph (a 9.x too old for the sliding window with ragged
    // prompts, say) the frontend's support check refuses per bucket, with its reason.
    version_ = static_cast<int>(fe::detail::get_backend_version());
    cudnnHandle_t handle = nullptr;
    if (fe::detail::create_handle(&handle) != CUDNN_STATUS_SUCCESS) {
      version_ = 0;
      return "cudnnCreate failed (no GPU, or a driver too old for this cuDNN)";
    }
    handle_ = handle;
  } catch (const std::exception& e) {
    version_ = 0;
    return std::string("cuDNN: ") + e.what();
  }
  workspace_bytes_ = workspace_bytes;
  if (workspace_bytes_ > 0) {
    if (cudaError_t err = cudaMalloc(&workspace_, workspace_bytes_); err != cudaSuccess) {
      return CudaError("cuDNN attention workspace", err);
    }
  }
  const size_t index_count = 3 * size_t(max_sequences) + 2;
  if (cudaError_t err = cudaMalloc(&index_, index_count * sizeof(int32_t)); err != cudaSuccess) {
    return CudaError("cuDNN attention index", err);
  }
  if (cudaError_t err = cudaMallocHost(&staging_, index_count * sizeof(int32_t));
      err != cudaSuccess) {
    return CudaError("cuDNN attention staging", err);
  }
  if (cudaError_t err = cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming);
      err != cudaSuccess) {
    return CudaError("cuDNN attention event", err);
  }
  return "";
}

std::string CudnnAttention::BuildGraph(int sequences, int max_len, Graph* out) {
  const int64_t b = sequences, h = H_, kv = KV_, s = max_len, d = hd_;
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto index = [&](const char* name, int64_t uid, int64_t rows) {
    return graph->tensor(fe::graph::Tensor_attributes()
                             .set_name(name)
                             .set_uid(uid)
                             .set_dim({rows, 1, 1, 1})
                             .set_stride({1, 1, 1, 1})
                             .set_data_type(fe::DataType_t::INT32));
  };
  auto offset_qo = index("offset_qo", kOffsetQo, b + 1);
  auto offset_kv = index("offset_kv", kOffsetKv, b + 1);
  auto seq_len_q = index("seq_len_q", kSeqLenQ, b);
  auto seq_len_kv = index("seq_len_kv", kSeqLenKv, b);
  // Token-major rows as the backend keeps them ([n, heads, hd]): dims (b, heads, s, d), a token's
  // heads side by side; each sequence starts at its ragged offset (elements).
  auto activations = [&](const char* name, int64_t uid, int64_t heads,
                         const std::shared_ptr<fe::graph::Tensor_attributes>& offsets) {
    auto t = graph->tensor(fe::graph::Tensor_attributes()
                               .set_name(name)
                               .set_uid(uid)
                               .set_dim({b, heads, s, d})
                               .set_stride({s * heads * d, d, heads * d, 1}));
    t->set_ragged_offset(offsets);
    return t;
  };
  auto q = activations("q", kQ, h, offset_qo);
  auto k = activations("k", kK, kv, offset_kv);
  auto v = activations("v", kV, kv, offset_kv);
  // Query i sees keys i - W .. i: the band's left bound counts keys back from the diagonal,
  // itself included (a key j is kept while i - j < left bound).
  auto options = fe::graph::SDPA_attributes()
                     .set_name("prefill_attention")
                     .set_generate_stats(false)
                     .set_attn_scale(scale_)
                     .set_causal_mask(true)
                     .set_diagonal_band_left_bound(W_ + 1)
                     .set_padding_mask(true)
                     .set_seq_len_q(seq_len_q)
                     .set_seq_len_kv(seq_len_kv);
  auto [o, stats] = graph->sdpa(q, k, v, options);
  (void)stats;
  o->set_output(true)
      .set_uid(kO)
      .set_dim({b, h, s, d})
      .set_stride({s * h * d, d, h * d, 1})
      .set_ragged_offset(offset_qo);
  auto handle = static_cast<cudnnHandle_t>(handle_);
  // GRIFFIN_CUDNN_ATTENTION_PLAN=i (diagnostics: comparing cuDNN's engines under the sanitizers
  // and in benchmarks) builds every plan the heuristics and the fallback list offer and runs the
  // i-th; unset, the heuristic's first choice.
  int64_t plan = -1;
  if (const char* env = std::getenv("GRIFFIN_CUDNN_ATTENTION_PLAN"); env != nullptr && *env) {
    plan = std::atoi(env);
  }
  const bool all = plan >= 0;
  // Each step only after the one before it succeeded.
  const std::vector<std::function<fe::error_t()>> steps = {
      [&] { return graph->validate(); },
      [&] { return graph->build_operation_graph(handle); },
      [&] {
        return all ? graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK})
                   : graph->create_execution_plans({fe::HeurMode_t::A});
      },
      [&] { return graph->check_support(handle); },
      [&] {
        return graph->build_plans(all ? fe::BuildPlanPolicy_t::ALL
                                      : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
      },
  };
  for (const auto& step : steps) {
    if (fe::error_t status = step(); status.is_bad()) {
      return "cuDNN attention graph: " + status.get_message();
    }
  }
  if (all && plan >= graph->get_execution_plan_count()) {
    return "cuDNN attention: plan " + std::to_string(plan) + " of " +
           std::to_string(graph->get_execution_plan_count()) + " built";
  }
  int64_t workspace = 0;
  if (fe::error_t status = all ? graph->get_workspace_size_plan_at_index(plan, workspace)
                               : graph->get_workspace_size(workspace);
      status.is_bad()) {
    return "cuDNN attention workspace size: " + status.get_message();
  }
  std::string name;
  if (fe::error_t status =
          all ? graph->get_plan_name_at_index(plan, name) : graph->get_plan_name(name);
      status.is_good()) {
    plan_name_ = name + (all ? " (plan " + std::to_string(plan) + " of " +
                                   std::to_string(graph->get_execution_plan_count()) + ")"
                             : "");
  }
  out->plan = plan;
  if (size_t(workspace) > workspace_bytes_) {
    return "cuDNN attention wants " + std::to_string(workspace) +
           " bytes of workspace, more than " + std::to_string(workspace_bytes_);
  }
  out->graph = std::move(graph);
  out->sequences = sequences;
  out->max_len = max_len;
  return "";
}

std::string CudnnAttention::SetPass(const std::vector<int>& lengths, cudaStream_t stream) {
  current_ = nullptr;
  if (handle_ == nullptr) return "cuDNN attention not initialised";
  const int sequences = static_cast<int>(lengths.size());
  if (sequences == 0 || sequences > max_sequences_) return "sequences outside the index's room";
  int longest = 0;
  int64_t tokens = 0;
  for (int len : lengths) {
    if (len <= 0) return "an empty sequence";
    longest = std::max(longest, len);
    tokens += len;
  }
  if (tokens * H_ * hd_ > INT32_MAX) return "a pass too long for 32-bit offsets";
  const std::pair<int, int> bucket{std::min(RoundUpToPowerOfTwo(sequences), max_sequences_),
                                   RoundUpToPowerOfTwo(longest)};
  auto it = graphs_.find(bucket);
  if (it == graphs_.end()) {
    auto graph = std::make_unique<Graph>();
    const auto start = std::chrono::steady_clock::now();
    std::string err;
    try {
      err = BuildGraph(bucket.first, bucket.second, graph.get());
    } catch (const std::exception& e) {
      err = std::string("cuDNN attention graph: ") + e.what();
    }
    build_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!err.empty()) graph = std::make_unique<Graph>(Graph{nullptr, err});
    it = graphs_.emplace(bucket, std::move(graph)).first;
  }
  if (it->second->graph == nullptr) return it->second->refusal;
  // Lengths, then Q/O offsets, then K/V offsets; the bucket's spare sequences are empty, placed
  // at the end of the packed tokens.
  const int b = bucket.first;
  if (cudaError_t err = cudaEventSynchronize(staged_); err != cudaSuccess) {
    return CudaError("cuDNN attention staging wait", err);
  }
  int32_t* seq_len = staging_;
  int32_t* offset_qo = staging_ + b;
  int32_t* offset_kv = offset_qo + b + 1;
  int64_t first = 0;
  for (int i = 0; i <= b; ++i) {
    if (i < b) seq_len[i] = i < sequences ? lengths[i] : 0;
    offset_qo[i] = static_cast<int32_t>(first * H_ * hd_);
    offset_kv[i] = static_cast<int32_t>(first * KV_ * hd_);
    if (i < sequences) first += lengths[i];
  }
  const size_t bytes = (3 * size_t(b) + 2) * sizeof(int32_t);
  if (cudaError_t err = cudaMemcpyAsync(index_, staging_, bytes, cudaMemcpyHostToDevice, stream);
      err != cudaSuccess) {
    return CudaError("cuDNN attention index upload", err);
  }
  if (cudaError_t err = cudaEventRecord(staged_, stream); err != cudaSuccess) {
    return CudaError("cuDNN attention staging event", err);
  }
  current_ = it->second.get();
  return "";
}

std::string CudnnAttention::Run(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out,
                                cudaStream_t stream) {
  if (current_ == nullptr) return "cuDNN attention: no pass set";
  const int b = current_->sequences;
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<bf16_t*>(q)}, {kK, const_cast<bf16_t*>(k)},
      {kV, const_cast<bf16_t*>(v)}, {kO, out},
      {kSeqLenQ, index_},           {kSeqLenKv, index_},
      {kOffsetQo, index_ + b},      {kOffsetKv, index_ + 2 * b + 1},
  };
  try {
    auto handle = static_cast<cudnnHandle_t>(handle_);
    if (fe::detail::set_stream(handle, stream) != CUDNN_STATUS_SUCCESS) {
      return "cudnnSetStream failed";
    }
    if (fe::error_t status =
            current_->plan >= 0
                ? current_->graph->execute_plan_at_index(handle, pack, workspace_, current_->plan)
                : current_->graph->execute(handle, pack, workspace_);
        status.is_bad()) {
      return "cuDNN attention: " + status.get_message();
    }
  } catch (const std::exception& e) {
    return std::string("cuDNN attention: ") + e.what();
  }
  return "";
}

}  // namespace griffin::kernels
