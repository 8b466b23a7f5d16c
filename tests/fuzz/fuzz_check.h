// What a fuzz target asserts: a violated property aborts (libFuzzer then keeps the input as a
// crasher), in every build type.
#ifndef GRIFFIN_TESTS_FUZZ_FUZZ_CHECK_H_
#define GRIFFIN_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#endif  // GRIFFIN_TESTS_FUZZ_FUZZ_CHECK_H_
