# Version, git commit, build type and CUDA targets of this build, for `--version` and the server's
# start-up log (issue 18). The commit is read at every build, not only at configure time, into a
# generated source that is rewritten only when its content changes, so a new commit recompiles
# that one file and relinks the three programs that use it (griffin::program_info in base/).
set(GRIFFIN_BUILD_INFO_CC ${PROJECT_BINARY_DIR}/generated/build_info.cc)
if(GRIFFIN_HAVE_CUDA)
  set(_griffin_build_cuda "CUDA ${CUDAToolkit_VERSION} (${GRIFFIN_CUDA_TARGETS_SUMMARY})")
else()
  set(_griffin_build_cuda "")
endif()
if(CMAKE_BUILD_TYPE)
  set(_griffin_build_type ${CMAKE_BUILD_TYPE})
else()
  set(_griffin_build_type "$<CONFIG>")
endif()
add_custom_target(griffin_build_info_source
  COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DOUTPUT=${GRIFFIN_BUILD_INFO_CC}
          -DVERSION=${PROJECT_VERSION} -DBUILD_TYPE=${_griffin_build_type}
          "-DCUDA=${_griffin_build_cuda}" -P ${PROJECT_SOURCE_DIR}/cmake/write_build_info.cmake
  BYPRODUCTS ${GRIFFIN_BUILD_INFO_CC}
  COMMENT "Reading the git commit for --version"
  VERBATIM)
