#include "engine/cuda_decode_graphs.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "base/cuda_status.h"
#include "base/status_macros.h"

namespace griffin::engine {

DecodeGraphs::~DecodeGraphs() {
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
}

absl::Status DecodeGraphs::Capture(int max_batch, cudaStream_t stream,
                                   const std::function<absl::Status(int bucket)>& prepare,
                                   const std::function<absl::Status(int bucket)>& enqueue) {
  for (int b = 1;; b *= 2) {
    const int bucket = std::min(b, max_batch);
    RETURN_IF_ERROR(prepare(bucket));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    const absl::Status enqueued = enqueue(bucket);
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    RETURN_IF_ERROR(enqueued);
    CUDA_RETURN_IF_ERROR(ended);
    cudaGraphExec_t exec;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_RETURN_IF_ERROR(instantiated);
    graphs_[bucket] = exec;
    if (bucket == max_batch) break;
  }
  return absl::OkStatus();
}

int DecodeGraphs::BucketFor(int batch) const {
  auto it = graphs_.lower_bound(batch);
  return it == graphs_.end() ? 0 : it->first;
}

absl::Status DecodeGraphs::Launch(int bucket, cudaStream_t stream) const {
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graphs_.at(bucket), stream));
  return absl::OkStatus();
}

}  // namespace griffin::engine
