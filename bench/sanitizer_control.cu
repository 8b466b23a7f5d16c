// The positive control of bench/run_sanitizers.sh's racecheck runs: a kernel with a known
// shared-memory race, and the same kernel with the barrier that removes it.
//   sanitizer_control race   warp 0 writes shared memory that warp 1 then reads, no barrier
//   sanitizer_control clean  the same with __syncthreads() between the write and the read
// Both exit 0 and print the values read; only the sanitizer tells them apart. A racecheck run
// that reports nothing is evidence only when the same tool, on the same machine and driver,
// reports this race: session 31 found that compute-sanitizer 2025.3 and 2026.4 disagree about
// cuDNN's and cuBLASLt's kernels (bench/NOTES.md), so "0 hazards" needs a tool shown to see one.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

namespace {

constexpr int kWarp = 32;

template <bool kBarrier>
__global__ void SharedHandOver(int* out) {
  __shared__ int cell[kWarp];
  if (threadIdx.x < kWarp) cell[threadIdx.x] = static_cast<int>(threadIdx.x) * 3 + 1;
  if constexpr (kBarrier) __syncthreads();
  if (threadIdx.x >= kWarp) out[threadIdx.x - kWarp] = cell[threadIdx.x - kWarp];
}

int Fail(const char* what, cudaError_t e) {
  std::fprintf(stderr, "sanitizer_control: %s: %s\n", what, cudaGetErrorString(e));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool race = argc == 2 && std::strcmp(argv[1], "race") == 0;
  if (argc != 2 || (!race && std::strcmp(argv[1], "clean") != 0)) {
    std::fprintf(stderr, "usage: sanitizer_control race|clean\n");
    return 2;
  }
  int* out = nullptr;
  if (cudaError_t e = cudaMalloc(&out, kWarp * sizeof(int)); e != cudaSuccess) {
    return Fail("cudaMalloc", e);
  }
  if (race) {
    SharedHandOver<false><<<1, 2 * kWarp>>>(out);
  } else {
    SharedHandOver<true><<<1, 2 * kWarp>>>(out);
  }
  int host[kWarp] = {};
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(host, out, sizeof(host), cudaMemcpyDeviceToHost);
  cudaFree(out);
  if (e != cudaSuccess) return Fail("kernel", e);
  int mismatched = 0;
  for (int i = 0; i < kWarp; ++i) mismatched += host[i] != i * 3 + 1;
  std::printf("sanitizer_control %s: %d of %d values as written\n", argv[1], kWarp - mismatched,
              kWarp);
  return 0;
}
