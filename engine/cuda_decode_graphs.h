// CUDA graphs of the decode step, one per batch bucket (1, 2, 4, ... max): a pure-decode step of
// E entries replays the smallest bucket >= E, its tail padded with a scratch slot. Replaying one
// graph instead of launching ~230 kernels one by one removes the host launch gaps (PERF.md).
#ifndef GRIFFIN_ENGINE_CUDA_DECODE_GRAPHS_H_
#define GRIFFIN_ENGINE_CUDA_DECODE_GRAPHS_H_

#include <cuda_runtime_api.h>

#include <functional>
#include <map>

#include "absl/status/status.h"

namespace griffin::engine {

class DecodeGraphs {
 public:
  DecodeGraphs() = default;
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // For each bucket up to `max_batch`: `prepare(bucket)` (uploads the bucket's metadata and warms
  // up: module loading, GEMM algorithm choice, run outside capture), then `enqueue(bucket)` is
  // captured on `stream` and instantiated.
  absl::Status Capture(int max_batch, cudaStream_t stream,
                       const std::function<absl::Status(int bucket)>& prepare,
                       const std::function<absl::Status(int bucket)>& enqueue);

  bool empty() const { return graphs_.empty(); }
  // The smallest bucket holding `batch` entries; 0 when none does.
  int BucketFor(int batch) const;
  absl::Status Launch(int bucket, cudaStream_t stream) const;

 private:
  std::map<int, cudaGraphExec_t> graphs_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CUDA_DECODE_GRAPHS_H_
