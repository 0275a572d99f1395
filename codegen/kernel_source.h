#pragma once
// A finished kernel: the text NVRTC compiles and what the runtime needs to launch it. Every
// emitter returns one (emitCuda, emitTranspose, emitGemm).
#include <cstdint>
#include <string>

#include "codegen/kernel_abi.h"

namespace kiln::codegen {

struct KernelSource {
  std::string name;    // the __global__ function's name, "kiln_row_1a2b3c4d5e6f7a8b"
  std::string source;  // complete CUDA C++ for NVRTC
  KernelAbi abi;
  LaunchSpec launch;
  // The kernel uses approximate exp/division (all its float outputs are 16-bit; Note [Fast math
  // for 16-bit outputs] in runtime/kiln_math.cuh). The choice is in the source, so in the cache
  // key.
  bool fastMath = false;
  uint64_t hash = 0;  // of `source` (the name embeds it)
};

}  // namespace kiln::codegen
