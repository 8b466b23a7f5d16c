# Which GPUs the CUDA build runs on, and whether Hopper-only kernel code is compiled (issue 18).
# Included by the root CMakeLists.txt before enable_language(CUDA).
#
#   GRIFFIN_CUDA_ARCHS   real architectures to compile SASS for. The default covers Ampere
#                        (80: A100, A30; 86: A10, A40, RTX 30xx, RTX A6000), Ada (89: L4, L40S,
#                        RTX 40xx, RTX 6000 Ada) and Hopper (90a: H100, H200, GH200).
#   GRIFFIN_CUDA_PTX     virtual architecture whose PTX is embedded as well, so GPUs without
#                        matching SASS (Blackwell, and anything newer) JIT-compile it at first load.
#                        80: everything the kernels use (mma.sync, bf16, cp.async) exists there.
#   GRIFFIN_CUDA_HOPPER  compile the Hopper-only path (wgmma, TMA, setmaxnreg: sm_90a features)
#                        into the sm_90a SASS. OFF builds the portable path for every target.
#
# Kernels tell the paths apart with GRIFFIN_SM90A_DEVICE_CODE from base/cuda_arch.h (true only in
# device code compiled for sm_90a with GRIFFIN_CUDA_HOPPER on) and dispatch on the host with
# griffin::HopperPathUsable(major, minor) from the same header. A kernel that has a Hopper-only
# body keeps a portable body for every other target; see kernels/README.md.
set(GRIFFIN_CUDA_ARCHS "80;86;89;90a" CACHE STRING
    "CUDA architectures to compile SASS for (e.g. 80;86;89;90a); empty for PTX only")
set(GRIFFIN_CUDA_PTX "80" CACHE STRING
    "virtual CUDA architecture to embed as PTX for JIT on newer GPUs (e.g. 80); empty for none")
option(GRIFFIN_CUDA_HOPPER "compile the Hopper-only kernel path (wgmma, TMA) into sm_90a code" ON)

# Sets CMAKE_CUDA_ARCHITECTURES (must run before enable_language(CUDA)) and
# GRIFFIN_CUDA_HOPPER_ENABLED (the Hopper path is compiled: requested and 90a is a target).
macro(griffin_cuda_architectures)
  set(_griffin_archs "")
  foreach(_arch IN LISTS GRIFFIN_CUDA_ARCHS)
    if(NOT _arch MATCHES "^[0-9]+[af]?$")
      message(FATAL_ERROR "GRIFFIN_CUDA_ARCHS: '${_arch}' is not an architecture like 80 or 90a")
    endif()
    list(APPEND _griffin_archs "${_arch}-real")
  endforeach()
  if(NOT GRIFFIN_CUDA_PTX STREQUAL "")
    if(NOT GRIFFIN_CUDA_PTX MATCHES "^[0-9]+$")
      message(FATAL_ERROR "GRIFFIN_CUDA_PTX: '${GRIFFIN_CUDA_PTX}' is not an architecture like 80")
    endif()
    list(APPEND _griffin_archs "${GRIFFIN_CUDA_PTX}-virtual")
  endif()
  if(NOT _griffin_archs)
    message(FATAL_ERROR "GRIFFIN_CUDA_ARCHS and GRIFFIN_CUDA_PTX are both empty: nothing would run")
  endif()
  set(CMAKE_CUDA_ARCHITECTURES "${_griffin_archs}")
  set(GRIFFIN_CUDA_HOPPER_ENABLED OFF)
  if(GRIFFIN_CUDA_HOPPER AND "90a" IN_LIST GRIFFIN_CUDA_ARCHS)
    set(GRIFFIN_CUDA_HOPPER_ENABLED ON)
  endif()
  # Human-readable summary for --version and the configure log.
  set(_griffin_parts "")
  if(GRIFFIN_CUDA_ARCHS)
    list(TRANSFORM GRIFFIN_CUDA_ARCHS PREPEND "sm_" OUTPUT_VARIABLE _griffin_sass)
    string(REPLACE ";" " " _griffin_sass "${_griffin_sass}")
    list(APPEND _griffin_parts "SASS ${_griffin_sass}")
  endif()
  if(NOT GRIFFIN_CUDA_PTX STREQUAL "")
    list(APPEND _griffin_parts "PTX compute_${GRIFFIN_CUDA_PTX}")
  endif()
  string(REPLACE ";" ", " GRIFFIN_CUDA_TARGETS_SUMMARY "${_griffin_parts}")
  if(GRIFFIN_CUDA_HOPPER_ENABLED)
    string(APPEND GRIFFIN_CUDA_TARGETS_SUMMARY ", Hopper path on")
  else()
    string(APPEND GRIFFIN_CUDA_TARGETS_SUMMARY ", Hopper path off")
  endif()
endmacro()
