// Kernel parity: every case of the op registry (op_registry.h; the lists live beside each kernel
// in kernels/<family>/<family>_cases.cc) against its CPU reference (kernels/<family>/*_reference.h)
// or a float64 loop, on fresh random inputs with outputs poisoned before each run.
// Without a CUDA device every case skips with "no CUDA device: GPU test skipped".
#include <cuda_runtime.h>

#include <cctype>
#include <cstdlib>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {

bool HaveDevice() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

class KernelOpTest : public ::testing::TestWithParam<OpCase> {};

TEST_P(KernelOpTest, MatchesReference) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device: GPU test skipped";
  const OpCase& c = GetParam();
  if (c.heavy && std::getenv("GRIFFIN_SANITIZER_RUN") != nullptr) {
    GTEST_SKIP() << "large shape skipped under compute-sanitizer (GRIFFIN_SANITIZER_RUN)";
  }
  SCOPED_TRACE(c.op + " " + c.shape + " vs " + c.reference + "; tolerance: " + c.tolerance);
  c.run();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
}

std::string CaseName(const ::testing::TestParamInfo<OpCase>& info) {
  std::string name = info.param.op + "_" + info.param.shape;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Ops, KernelOpTest, ::testing::ValuesIn(AllOpCases()), CaseName);

// The registry is not empty and names are unique (gtest would reject duplicates, but say which).
TEST(OpRegistryTest, EveryFamilyRegisteredCasesWithUniqueNames) {
  std::set<std::string> names, ops;
  for (const OpCase& c : AllOpCases()) {
    EXPECT_TRUE(names.insert(c.op + "_" + c.shape).second)
        << "duplicate case " << c.op << " " << c.shape;
    EXPECT_FALSE(c.reference.empty()) << c.op;
    EXPECT_FALSE(c.tolerance.empty()) << c.op;
    ops.insert(c.op.substr(0, c.op.find('.')));
  }
  for (const char* family :
       {"rmsnorm", "embed", "geglu", "gemm", "gemv", "rglru", "attention", "argmax", "sample"}) {
    EXPECT_TRUE(ops.count(family)) << "no cases registered for " << family;
  }
}

}  // namespace
}  // namespace griffin::kernels::testing
