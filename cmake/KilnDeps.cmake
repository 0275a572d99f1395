# Finds kiln's dependencies. LibTorch comes from the project's virtual environment (.venv, made by
# scripts/setup.sh) or from CMAKE_PREFIX_PATH (the GPU machine's PyTorch).
find_package(fmt REQUIRED)
find_package(TBB REQUIRED)
find_package(CUDAToolkit REQUIRED)
find_package(Threads REQUIRED)
# The GPU machine has no package access: gpu-env.sh unpacks the .deb staged by
# scripts/stage-device-extras.sh under /opt/tbb.
find_package(nlohmann_json 3 REQUIRED PATHS /opt/tbb/usr/share/cmake/nlohmann_json)

# Note [JSON stays private]
# nlohmann-json writes the JSON forms of stats(), explain() and profile() and kiln-warmup's
# summary. It is header-only and included from .cpp files only, never from an installed header, so
# a user of the installed package does not need it: targets link it through KILN_JSON, which the
# exported link interface drops (a static library's private deps are otherwise exported as
# $<LINK_ONLY:...> and would have to be found by kilnConfig.cmake).
set(KILN_JSON $<BUILD_INTERFACE:nlohmann_json::nlohmann_json>)

if(NOT Torch_DIR)
  set(_kiln_venv_python "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  if(EXISTS "${_kiln_venv_python}")
    execute_process(
      COMMAND "${_kiln_venv_python}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _kiln_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _kiln_torch_rc ERROR_QUIET)
    if(_kiln_torch_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_kiln_torch_prefix}")
    endif()
  endif()
endif()
# Torch's config otherwise probes the local GPU by compiling and running a CUDA program, which
# fails on machines without one. kiln compiles its kernels with NVRTC and builds no .cu files, so
# the list only satisfies that probe.
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
find_package(Torch REQUIRED)
if(NOT TARGET torch)
  message(FATAL_ERROR "kiln: LibTorch found but has no 'torch' target (Torch_DIR=${Torch_DIR})")
endif()
get_filename_component(KILN_TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)

# Note [Run paths]
# The torch wheel finds its CUDA libraries through RPATHs into site-packages/nvidia/*. Where a
# library is not installed there (we skip wheels that /usr/local/cuda already provides), it must be
# found in the toolkit's lib dir. Executables therefore carry the toolkit dir and the wheel's nvidia
# dirs in a transitive DT_RPATH (--disable-new-dtags), which the loader also uses for libraries that
# libtorch itself needs.
file(GLOB _kiln_nvidia_lib_dirs LIST_DIRECTORIES true "${KILN_TORCH_LIB_DIR}/../../nvidia/*/lib")
set(KILN_RUNTIME_DIRS ${KILN_TORCH_LIB_DIR} ${_kiln_nvidia_lib_dirs} ${CUDAToolkit_LIBRARY_DIR})
list(APPEND CMAKE_BUILD_RPATH ${KILN_RUNTIME_DIRS})

function(kiln_executable name)
  add_executable(${name} ${ARGN})
  target_compile_options(${name} PRIVATE ${KILN_WARNINGS})
  set_target_properties(${name} PROPERTIES CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON)
  target_link_options(${name} PRIVATE "-Wl,--disable-new-dtags")
  foreach(_dir ${KILN_RUNTIME_DIRS})
    target_link_options(${name} PRIVATE "-Wl,-rpath-link,${_dir}")
  endforeach()
endfunction()
