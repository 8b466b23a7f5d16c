// One registry of kernel test cases, in the manner of llama.cpp's test-backend-ops: each kernel
// family lists its cases in <family>/<family>_cases.cc (shapes, what they are compared with, the
// tolerance rule) and registers the list with GRIFFIN_REGISTER_OP_CASES; kernels_test runs every
// registered case as one parameterized test. Adding a kernel variant means adding one case list.
#ifndef GRIFFIN_KERNELS_TESTING_OP_REGISTRY_H_
#define GRIFFIN_KERNELS_TESTING_OP_REGISTRY_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace griffin::kernels::testing {

struct OpCase {
  std::string op;         // kernel or kernel path, e.g. "attention.decode_mma"
  std::string shape;      // e.g. "H10 KV1 hd256 W64": with `op`, the test's name
  std::string reference;  // what the output is compared with, e.g. "ref::RmsNorm"
  std::string tolerance;  // the rule, in words (STYLE.md rule 16)
  // Large shapes that make compute-sanitizer runs take minutes: skipped when the environment sets
  // GRIFFIN_SANITIZER_RUN (bench/run_sanitizers.sh), which still runs every kernel on small shapes.
  bool heavy = false;
  // Runs the kernel on fresh random inputs (outputs poisoned first) and checks it with gtest
  // assertions. Called only where a CUDA device is visible.
  std::function<void()> run;
};

// gtest prints a case as its name, not its bytes.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.op << " " << c.shape; }

// Adds a family's cases; returns the number added (for the static registration below).
int RegisterOpCases(std::vector<OpCase> (*make_cases)());
// Every registered case, families in registration order (built on first use).
const std::vector<OpCase>& AllOpCases();

}  // namespace griffin::kernels::testing

#define GRIFFIN_OP_CASES_CONCAT_INNER_(a, b) a##b
#define GRIFFIN_OP_CASES_CONCAT_(a, b) GRIFFIN_OP_CASES_CONCAT_INNER_(a, b)
// At namespace scope in a *_cases.cc file: GRIFFIN_REGISTER_OP_CASES(MakeNormCases);
#define GRIFFIN_REGISTER_OP_CASES(make_cases)                                               \
  [[maybe_unused]] static const int GRIFFIN_OP_CASES_CONCAT_(griffin_op_cases_, __LINE__) = \
      ::griffin::kernels::testing::RegisterOpCases(make_cases)

#endif  // GRIFFIN_KERNELS_TESTING_OP_REGISTRY_H_
