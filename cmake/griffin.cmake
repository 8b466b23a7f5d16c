# One helper per kind of target, in the spirit of absl_cc_library: every C++ folder is one
# library `griffin_<folder>` declared with griffin_component(), its tests with griffin_test().

set(GRIFFIN_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
    -Werror=vla)  # SOAK-2: no variable-length arrays (stack size from request data)

# griffin_component(NAME SRCS a.cc b.cc DEPS x y): library griffin_NAME, alias griffin::NAME.
function(griffin_component NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(griffin_${NAME} STATIC ${ARG_SRCS})
  add_library(griffin::${NAME} ALIAS griffin_${NAME})
  target_include_directories(griffin_${NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(griffin_${NAME} PUBLIC ${ARG_DEPS})
  target_compile_options(griffin_${NAME} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${GRIFFIN_WARNINGS}>)
endfunction()

# griffin_test(NAME SRCS a_test.cc DEPS x y [LABELS l] [ONE_CTEST] [TIMEOUT s]): a GoogleTest
# binary registered with ctest, each test case as its own ctest test, or with ONE_CTEST the whole
# binary as one (hundreds of parameterized cases, each of which would pay the process and CUDA
# start-up). Every ctest test has a time bound, so a hang fails fast with its name. The default,
# 60 s, is ten times the slowest case on an idle 2-core machine (6 s, DemoModelTest; most take
# under 0.5 s) and leaves room for a loaded one. GPU test cases (LABELS gpu, run on the GPU host:
# CUDA context, graph capture, autotuning) get 300 s and whole binaries (ONE_CTEST) 600 s, not yet
# measured under ctest there (tests/README.md).
function(griffin_test NAME)
  if(NOT GRIFFIN_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "ONE_CTEST" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT AND ARG_ONE_CTEST)
    set(ARG_TIMEOUT 600)
  elseif(NOT ARG_TIMEOUT AND "gpu" IN_LIST ARG_LABELS)
    set(ARG_TIMEOUT 300)
  elseif(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 60)
  endif()
  add_executable(${NAME} ${ARG_SRCS})
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  target_compile_options(${NAME} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${GRIFFIN_WARNINGS}>)
  target_compile_definitions(${NAME} PRIVATE
      GRIFFIN_SOURCE_DIR="${PROJECT_SOURCE_DIR}" GRIFFIN_BINARY_DIR="${PROJECT_BINARY_DIR}")
  # (An empty LABELS value would vanish from the list and turn TIMEOUT into a label.)
  set(properties TIMEOUT ${ARG_TIMEOUT})
  if(ARG_LABELS)
    list(APPEND properties LABELS "${ARG_LABELS}")
  endif()
  if(ARG_ONE_CTEST)
    add_test(NAME ${NAME} COMMAND ${NAME})
    set_tests_properties(${NAME} PROPERTIES ${properties})
  else()
    gtest_discover_tests(${NAME} DISCOVERY_TIMEOUT 60 PROPERTIES ${properties})
  endif()
endfunction()
